//! `conduit discover`: the command line (clap lives here only).
use std::{path::PathBuf, process::ExitCode};

use super::Format;
use crate::discover::{DiscoverError, Options, Outcome, emit::flow_text};
use crate::exit::Exit;

#[derive(clap::Args, Debug)]
pub struct DiscoverArgs {
    /// A capture (pcap or pcapng; Ethernet, Linux cooked or raw IP), read as a stream: any
    /// size. Repeat for several.
    #[arg(long = "pcap", value_name = "FILE")]
    pub pcaps: Vec<PathBuf>,
    /// An audit log written by `conduit run --audit-log` with `log: all`. Repeat for several.
    #[arg(long = "audit-log", value_name = "FILE")]
    pub audit_logs: Vec<PathBuf>,
    /// A learn dir written by `conduit run --learn-dir DIR`. Repeat for several gateways:
    /// their records merge.
    #[arg(long = "learned", value_name = "DIR")]
    pub learned: Vec<PathBuf>,
    /// Zones to use: a YAML list of {name, cidr, security_level, purdue_level}. Hosts outside
    /// them get a zone per /24 (IPv4) or /64 (IPv6).
    #[arg(long, value_name = "SEED.yaml")]
    pub seed: Option<PathBuf>,
    /// A policy to compare with: which observed flows it would deny, which of its conduits no
    /// flow used.
    #[arg(long, value_name = "POLICY")]
    pub base: Option<PathBuf>,
    /// Write the draft here (whole or not at all). Without it, text format prints the draft
    /// on standard output and the summary on standard error.
    #[arg(short = 'o', long = "output", value_name = "DRAFT.yaml")]
    pub output: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

fn json(o: &Outcome) -> serde_json::Value {
    let flows = &o.observations.flows;
    let answered = flows.values().filter(|s| s.is_answered()).count();
    let mut v = serde_json::json!({
        "hosts": o.draft.hosts.len(),
        "zones": o.draft.zones.len(),
        "conduits": o.draft.conduits.len(),
        "flows": {"seen": flows.len(), "answered": answered, "unanswered": flows.len() - answered},
        "draft_allows": o.proof.allows,
        "draft_denies": o.proof.denies,
        "modbus_requests": {"seen": o.proof.modbus_seen, "draft_allows": o.proof.modbus_allowed},
    });
    if let Some(b) = &o.base {
        v["base"] = serde_json::json!({
            "would_deny": b.would_deny,
            "unused_conduits": b.unused_conduits,
        });
    }
    v
}

fn summary(o: &Outcome) -> Vec<String> {
    let flows = &o.observations.flows;
    let answered = flows.values().filter(|s| s.is_answered()).count();
    let mut out = vec![
        format!(
            "discovered {} host(s), {} zone(s), {} conduit(s)",
            o.draft.hosts.len(),
            o.draft.zones.len(),
            o.draft.conduits.len()
        ),
        format!(
            "flows: {} seen, {answered} answered, {} never answered",
            flows.len(),
            flows.len() - answered
        ),
        format!(
            "proof (the datapath's verdict function on the draft): {} allowed, {} denied",
            o.proof.allows, o.proof.denies
        ),
    ];
    if o.proof.modbus_seen > 0 {
        out.push(format!(
            "Modbus requests: {} (client, server, unit, function) seen, {} allowed by the draft",
            o.proof.modbus_seen, o.proof.modbus_allowed
        ));
    }
    if let Some(b) = &o.base {
        out.push(format!(
            "base policy: would deny {} answered flow(s){}",
            b.would_deny.len(),
            if b.would_deny.is_empty() {
                ""
            } else {
                " (what to add):"
            }
        ));
        for d in &b.would_deny {
            let k = crate::discover::observe::FlowKey {
                client: d.client.parse().expect("an address we printed"),
                server: d.server.parse().expect("an address we printed"),
                proto: d.proto,
                port: d.port,
            };
            out.push(format!(
                "  {}: {} ({}), {} -> {}",
                flow_text(&k),
                d.verdict,
                d.reason,
                d.src_zone,
                d.dst_zone
            ));
        }
        out.push(format!(
            "base policy: {} conduit(s) no observed flow used{}",
            b.unused_conduits.len(),
            if b.unused_conduits.is_empty() {
                String::new()
            } else {
                format!(": {}", b.unused_conduits.join(", "))
            }
        ));
    }
    out
}

pub fn main(a: DiscoverArgs) -> ExitCode {
    let opts = Options {
        pcaps: a.pcaps,
        audit_logs: a.audit_logs,
        learned: a.learned,
        seed: a.seed,
        base: a.base,
    };
    let outcome = match crate::discover::run(&opts) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return e.exit_code().into();
        }
    };
    if let Some(path) = &a.output
        && let Err(e) = crate::discover::write_atomically(path, &outcome.yaml)
    {
        let e = DiscoverError::Failed(format!("{}: cannot write the draft: {e}", path.display()));
        eprintln!("{e}");
        return e.exit_code().into();
    }
    match a.format {
        Format::Json => println!("{}", json(&outcome)),
        Format::Text => {
            if a.output.is_none() {
                print!("{}", outcome.yaml);
            }
            for l in summary(&outcome) {
                eprintln!("{l}");
            }
            if let Some(p) = &a.output {
                eprintln!(
                    "draft written to {} (review it: every zone and conduit is `review: pending`)",
                    p.display()
                );
            }
        }
    }
    Exit::Ok.into()
}
