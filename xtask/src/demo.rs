//! The demo: build the agent, create two network namespaces joined by a veth pair, run
//! `conduit run` on the server's port and show it judging real traffic, then remove
//! everything it created.
use std::{
    process::{Child, Command, Stdio},
    thread::sleep,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, workspace_root};

struct Cleanup {
    netns: Vec<String>,
    agent: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            // SAFETY: kill on the PID of a child this process started and has not reaped.
            unsafe { libc_kill(agent.id() as i32, 15) };
            let _ = agent.wait();
        }
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| args.join(" "))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn run() -> Result<()> {
    cargo(&["build", "--release", "--package", "conduit-agent"])?;
    let conduit = workspace_root().join("target/release/conduit");
    let tag = std::process::id() % 100_000;
    let (ns_c, ns_s) = (
        format!("cdt-demo-client-{tag}"),
        format!("cdt-demo-server-{tag}"),
    );
    let (if_c, if_s) = (format!("cdtdc{tag}"), format!("cdtds{tag}"));
    let mut guard = Cleanup {
        netns: vec![],
        agent: None,
    };
    for ns in [&ns_c, &ns_s] {
        sh(&["ip", "netns", "add", ns])?;
        guard.netns.push(ns.clone());
    }
    sh(&[
        "ip", "link", "add", &if_c, "netns", &ns_c, "type", "veth", "peer", "name", &if_s, "netns",
        &ns_s,
    ])?;
    for (ns, dev, addr) in [
        (&ns_c, &if_c, "10.250.0.1/24"),
        (&ns_s, &if_s, "10.250.0.2/24"),
    ] {
        sh(&["ip", "-n", ns, "addr", "add", addr, "dev", dev])?;
        sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
    }
    println!("== namespaces {ns_c} (10.250.0.1) and {ns_s} (10.250.0.2), veth {if_c} <-> {if_s}");
    println!("== starting `conduit run --iface {if_s}` inside {ns_s}");
    let agent = Command::new("ip")
        .args(["netns", "exec", &ns_s])
        .arg(&conduit)
        .args(["run", "--iface", &if_s, "--report-every", "1"])
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting conduit")?;
    guard.agent = Some(agent);
    sleep(Duration::from_millis(700));
    println!("== 10 pings from the client to the server, judged by the XDP program");
    let out = sh(&[
        "ip",
        "netns",
        "exec",
        &ns_c,
        "ping",
        "-c",
        "10",
        "-i",
        "0.1",
        "-W",
        "1",
        "10.250.0.2",
    ])?;
    println!(
        "{}",
        out.lines()
            .rev()
            .take(2)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    sleep(Duration::from_millis(1200));
    println!("== stopping the agent and removing the namespaces");
    drop(guard);
    println!("== demo done (the plant demo with a real policy comes with the plant-scenario work)");
    Ok(())
}
