//! `conduit status`: what is attached where, which policy is live, and the counters.
use std::process::ExitCode;

use super::{Format, PinArgs};
use crate::{
    agent::{self, links, state},
    exit::Exit,
};

pub fn main(p: &PinArgs, format: Format) -> ExitCode {
    let pinned = links::pinned_ifaces(&p.pin_dir);
    let st = state::read(&p.state_dir).ok();
    let running = st
        .as_ref()
        .is_some_and(|s| std::path::Path::new(&format!("/proc/{}", s.pid)).exists());
    // Missing: interfaces that were deleted. The running agent says which; without one, a
    // pinned link whose device is gone (defunct) says it.
    let mut missing: Vec<String> = pinned
        .iter()
        .filter(|i| links::pinned_ifindex(&p.pin_dir, i).is_ok_and(|x| x == Some(0)))
        .cloned()
        .collect();
    for i in st.iter().filter(|_| running).flat_map(|s| &s.interfaces) {
        if i.missing && !missing.contains(&i.name) {
            missing.push(i.name.clone());
        }
    }
    missing.sort();
    let ifaces: Vec<String> = pinned
        .iter()
        .filter(|i| !missing.contains(i))
        .cloned()
        .collect();
    let dp = if pinned.is_empty() {
        None
    } else {
        crate::datapath::Datapath::open_pins(&p.pin_dir).ok()
    };
    let active = dp.as_ref().and_then(|d| d.active().ok());
    let stats = dp
        .as_ref()
        .and_then(|d| d.conduit_stats().ok())
        .unwrap_or_default();
    let totals = dp.as_ref().and_then(|d| d.totals().ok());
    // Open grants: what the kernel holds for the live slot, with the state's who and why.
    let kernel_grants = dp.as_ref().and_then(|d| d.grants().ok());
    let boot_now = crate::policy::compile::boot_now_s();
    let grants: Vec<(String, &agent::grants::GrantRecord, u32)> = st
        .iter()
        .flat_map(|s| {
            s.grants.iter().filter_map(|(c, g)| {
                let id = s.conduit_id(c)?;
                let in_kernel = match (&kernel_grants, active) {
                    (Some(k), Some(a)) => k
                        .get(&conduit_common::ConduitKey {
                            slot: a.slot,
                            conduit: id,
                        })
                        .is_some_and(|k| k.until == g.until_boot),
                    _ => false,
                };
                let left = g.left(boot_now);
                (in_kernel && left > 0).then(|| (c.clone(), g, left))
            })
        })
        .collect();
    let on_demand: Vec<String> = st
        .iter()
        .flat_map(|s| s.on_demand.keys().cloned())
        .collect();
    let name = |id: &u32| {
        st.as_ref()
            .and_then(|s| s.conduits.get(id).cloned())
            .unwrap_or_else(|| format!("conduit-{id}"))
    };
    match format {
        Format::Json => {
            let v = serde_json::json!({
                "attached": ifaces,
                "missing": missing,
                "agent_running": running,
                "agent_pid": st.as_ref().map(|s| s.pid),
                "policy": st.as_ref().map(|s| serde_json::json!({"path": s.policy_path, "sha256": s.sha256, "site": s.site, "signer": s.signer})),
                "generation": active.map(|a| a.generation),
                "conduits": stats.iter().map(|(id, c)| (name(id), serde_json::json!({"packets": c.packets, "bytes": c.bytes}))).collect::<serde_json::Map<_, _>>(),
                "on_demand": on_demand,
                "grants": grants.iter().map(|(c, g, left)| serde_json::json!({"conduit": c, "seconds_left": left, "until": g.until, "user": g.user, "sudo_user": g.sudo_user, "reason": g.reason, "granted_at": g.granted_at})).collect::<Vec<_>>(),
                "frames": totals.map(|t| t.iter().map(|(v, c)| (v.as_str().to_owned(), serde_json::json!(c.packets))).collect::<serde_json::Map<_, _>>()),
            });
            println!("{v}");
        }
        Format::Text => {
            if ifaces.is_empty() {
                println!(
                    "not attached (no pinned links under {})",
                    p.pin_dir.display()
                );
            } else {
                println!("attached:   {}", ifaces.join(", "));
            }
            if !missing.is_empty() {
                println!(
                    "missing:    {} (deleted: not enforced there until it returns; {})",
                    missing.join(", "),
                    if running {
                        "the agent re-attaches the program then"
                    } else {
                        "start the agent to re-attach"
                    }
                );
            }
            match &st {
                Some(s) => {
                    println!(
                        "agent:      pid {} ({})",
                        s.pid,
                        if running {
                            "running"
                        } else {
                            "not running: the pinned program keeps enforcing"
                        }
                    );
                    println!(
                        "policy:     {} (site {}, sha256 {})",
                        s.policy_path.display(),
                        s.site,
                        s.sha256
                    );
                    match &s.signer {
                        Some(signer) => println!("signer:     {signer}"),
                        None => println!("signer:     none (unsigned)"),
                    }
                }
                None => println!(
                    "policy:     unknown (no state file in {})",
                    p.state_dir.display()
                ),
            }
            if let Some(a) = active {
                println!("generation: {}", a.generation);
            }
            for c in &on_demand {
                match grants.iter().find(|(n, _, _)| n == c) {
                    Some((_, g, left)) => println!(
                        "grant:      {c}: open, {} left (until {}), by {}{}",
                        crate::policy::addr::human_duration(u64::from(*left)),
                        g.until,
                        g.by(),
                        g.reason
                            .as_ref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    ),
                    None => println!("on demand:  {c}: closed (conduit grant {c} --for DURATION)"),
                }
            }
            if let Some(t) = totals {
                let parts: Vec<String> = t
                    .iter()
                    .map(|(v, c)| format!("{} {}", v.as_str(), c.packets))
                    .collect();
                println!("frames:     {}", parts.join(", "));
            }
            for (id, c) in &stats {
                println!(
                    "conduit {:<24} {:>12} packets {:>14} bytes",
                    name(id),
                    c.packets,
                    c.bytes
                );
            }
        }
    }
    // As `systemctl status` does for a unit that is not active: scripts and monitoring can
    // tell "not enforcing" from the exit status alone.
    if ifaces.is_empty() {
        Exit::NotAttached.into()
    } else {
        Exit::Ok.into()
    }
}
