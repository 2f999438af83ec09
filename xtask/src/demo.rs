//! The demo: a Purdue-model plant made of network namespaces around a gateway namespace that
//! runs the agent with `policies/purdue-plant.yaml`; a short story of allowed and blocked
//! flows, attacks, and a monitor-to-enforce rollout; metrics and audit lines; then everything
//! it created is removed (also on failure or Ctrl-C of the story).
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::workspace_root;

/// A host of the plant: namespace suffix, zone bridge, IP/prefix, MAC.
struct Host {
    name: &'static str,
    bridge: &'static str,
    ip: &'static str,
    mac: &'static str,
}

/// The zones' subnets on the gateway (one bridge each, the gateway routes between them).
const BRIDGES: &[(&str, &str)] = &[
    ("br-ent", "10.4.0.1/16"),
    ("br-dmz", "10.5.0.1/16"),
    ("br-sup", "10.3.0.1/16"),
    ("br-ctl", "10.2.0.1/16"),
    ("br-out", "192.168.66.1/24"),
];

const HOSTS: &[Host] = &[
    Host {
        name: "office",
        bridge: "br-ent",
        ip: "10.4.0.50/16",
        mac: "02:00:00:04:00:50",
    },
    Host {
        name: "historian",
        bridge: "br-dmz",
        ip: "10.5.0.10/16",
        mac: "02:00:00:05:00:10",
    },
    Host {
        name: "hmi",
        bridge: "br-sup",
        ip: "10.3.0.20/16",
        mac: "02:00:00:03:00:20",
    },
    Host {
        name: "engws",
        bridge: "br-sup",
        ip: "10.3.0.30/16",
        mac: "02:00:00:03:00:30",
    },
    Host {
        name: "plc1",
        bridge: "br-ctl",
        ip: "10.2.0.10/16",
        mac: "02:00:00:02:00:10",
    },
    Host {
        name: "plc2",
        bridge: "br-ctl",
        ip: "10.2.0.11/16",
        mac: "02:00:00:02:00:11",
    },
    Host {
        name: "outsider",
        bridge: "br-out",
        ip: "192.168.66.6/24",
        mac: "02:00:00:66:00:06",
    },
];

struct Plant {
    tag: u32,
    namespaces: Vec<String>,
    children: Vec<Child>,
    /// The agent's pin directories (the learning agent's, then the enforcing one's).
    pin_dirs: Vec<PathBuf>,
    tmp: PathBuf,
}

impl Plant {
    fn ns(&self, host: &str) -> String {
        format!("cdt-demo-{}-{host}", self.tag)
    }
}

impl Drop for Plant {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            crate::signal(c, rustix::process::Signal::TERM);
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        for pin_dir in &self.pin_dirs {
            let _ = Command::new(workspace_root().join("target/release/conduit"))
                .args(["detach", "--pin-dir"])
                .arg(pin_dir)
                .arg("--state-dir")
                .arg(self.tmp.join("state"))
                .stdout(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
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

/// Runs a command in a host's namespace; true on success. (Only the agent runs under
/// `nsenter --net`: it needs the host's /sys/fs/bpf, which `ip netns exec` hides.)
fn ok_in(ns: &str, args: &[&str]) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn out_in(ns: &str, args: &[&str]) -> String {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn spawn_in(ns: &str, args: &[&str]) -> Result<Child> {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| args.join(" "))
}

fn step(text: &str) {
    println!("\n\x1b[1m▶ {text}\x1b[0m");
}

fn outcome(expected_ok: bool, ok: bool, what: &str) -> Result<()> {
    let shown = if ok {
        "\x1b[32mpassed\x1b[0m"
    } else {
        "\x1b[31mblocked\x1b[0m"
    };
    println!("  {what}: {shown}");
    if ok != expected_ok {
        bail!(
            "unexpected: {what} should have been {}",
            if expected_ok { "allowed" } else { "blocked" }
        );
    }
    Ok(())
}

fn tcp(p: &Plant, from: &str, ip: &str, port: &str) -> bool {
    ok_in(&p.ns(from), &["nc", "-z", "-w", "1", ip, port])
}

/// The packets dropped for `reason` so far, over every zone pair (from /metrics).
fn dropped(p: &Plant, reason: &str) -> f64 {
    let label = format!("reason=\"{reason}\"");
    metrics(p)
        .lines()
        .filter(|l| l.starts_with("conduit_dropped_packets_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn metrics(p: &Plant) -> String {
    out_in(
        &p.ns("gw"),
        &["curl", "-s", "-m", "2", "http://127.0.0.1:9642/metrics"],
    )
}

pub fn run() -> Result<()> {
    let conduit = crate::release_binary()?;
    let policy_src = workspace_root().join("policies/purdue-plant.yaml");
    let tag = std::process::id() % 100_000;
    let tmp = std::env::temp_dir().join(format!("conduit-demo-{tag}"));
    std::fs::create_dir_all(&tmp)?;
    let mut p = Plant {
        tag,
        namespaces: Vec::new(),
        children: Vec::new(),
        pin_dirs: Vec::new(),
        tmp: tmp.clone(),
    };
    build_plant(&mut p)?;
    let ifaces: Vec<String> = HOSTS.iter().map(|h| port_name(tag, h.name)).collect();
    discover(&mut p, &conduit, &ifaces)?;

    let policy = tmp.join("policy.yaml");
    std::fs::copy(&policy_src, &policy)?;
    step(
        "the gateway runs `conduit run --policy policies/purdue-plant.yaml` on its 7 plant-facing ports",
    );
    let audit = tmp.join("audit.jsonl").to_string_lossy().into_owned();
    let state = tmp.join("state").to_string_lossy().into_owned();
    let agent = start_agent(&mut p, &conduit, &policy, &ifaces, &["--audit-log", &audit])?;
    p.children.push(agent);
    wait_healthy(&p)?;
    println!("  agent healthy; policy: 5 zones, 9 assets, 8 conduits; everything else is denied");

    // Servers on the plant hosts.
    for (host, port) in [
        ("plc1", "502"),
        ("plc1", "102"),
        ("plc1", "20001"),
        ("plc2", "502"),
        ("historian", "443"),
    ] {
        let c = spawn_in(&p.ns(host), &["nc", "-l", "-k", "-p", port])?;
        p.children.push(c);
    }
    sleep(Duration::from_millis(300));

    step("operations: the HMI talks Modbus/TCP to the PLCs (conduit hmi-to-plc)");
    outcome(
        true,
        tcp(&p, "hmi", "10.2.0.10", "502"),
        "hmi → plc-1 tcp/502",
    )?;
    outcome(
        true,
        ok_in(
            &p.ns("hmi"),
            &["ping", "-c", "2", "-i", "0.2", "-W", "1", "10.2.0.11"],
        ),
        "hmi → plc-2 ping",
    )?;
    outcome(
        false,
        tcp(&p, "hmi", "10.2.0.10", "102"),
        "hmi → plc-1 tcp/102 (S7: only the engineering workstation)",
    )?;
    outcome(
        true,
        tcp(&p, "engws", "10.2.0.10", "102"),
        "eng-ws → plc-1 tcp/102 (conduit engineering)",
    )?;

    step("IT: the office reaches the historian in the DMZ, never the PLCs");
    outcome(
        true,
        tcp(&p, "office", "10.5.0.10", "443"),
        "office → historian tcp/443",
    )?;
    outcome(
        false,
        tcp(&p, "office", "10.2.0.10", "502"),
        "office → plc-1 tcp/502",
    )?;

    step("an outsider (no zone) scans plc-1");
    let scanned: Vec<&str> = ["21", "22", "23", "80", "102", "443", "502", "44818"]
        .into_iter()
        .filter(|port| tcp(&p, "outsider", "10.2.0.10", port))
        .collect();
    outcome(false, !scanned.is_empty(), "outsider → plc-1, 8 ports")?;

    step("a compromised engineering workstation forges the HMI's address (MAC/IP binding)");
    let script = "from scapy.all import *\nconf.verb=0\nsendp(Ether(src='02:00:00:03:00:30',dst='ff:ff:ff:ff:ff:ff')/IP(src='10.3.0.20',dst='10.2.0.10')/TCP(dport=502,flags='S'),iface=IFACE,count=3)\n";
    let iface = format!("h-{}", "engws");
    let forged = script.replace("IFACE", &format!("'{iface}'"));
    let before = dropped(&p, "spoofed");
    ok_in(&p.ns("engws"), &["/usr/bin/python3", "-c", &forged]);
    sleep(Duration::from_millis(300));
    let caught = dropped(&p, "spoofed") - before;
    outcome(
        false,
        caught < 3.0,
        &format!("3 frames as the HMI from the workstation's MAC ({caught} dropped as spoofed)"),
    )?;
    step("... and poisons the gateway's ARP cache: 'the HMI is at my MAC'");
    let arp = format!(
        "from scapy.all import *\nconf.verb=0\nsendp(Ether(src='02:00:00:03:00:30',dst='ff:ff:ff:ff:ff:ff')/ARP(op=2,psrc='10.3.0.20',hwsrc='02:00:00:03:00:30',pdst='10.3.0.1'),iface='{iface}',count=3)\n"
    );
    ok_in(&p.ns("engws"), &["/usr/bin/python3", "-c", &arp]);
    sleep(Duration::from_millis(300));
    let neigh = out_in(&p.ns("gw"), &["ip", "neigh", "show", "10.3.0.20"]);
    let poisoned = neigh.contains("02:00:00:03:00:30");
    println!("  gateway's ARP entry for the HMI: {}", neigh.trim());
    outcome(false, poisoned, "ARP poisoning")?;

    step(
        "temporary access: the vendor's tool ports open only while granted (conduit vendor-tools, on demand)",
    );
    outcome(
        false,
        tcp(&p, "engws", "10.2.0.10", "20001"),
        "eng-ws → plc-1 tcp/20001 (no grant)",
    )?;
    let pin_dir = p.pin_dirs.last().context("the agent's pin dir")?.clone();
    let admin = |args: &[&str]| -> Result<String> {
        let o = Command::new(&conduit)
            .args(args)
            .arg("--pin-dir")
            .arg(&pin_dir)
            .args(["--state-dir", &state])
            .output()?;
        let out =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        // `status` exits 0 while attached; grant and revoke 0 when done.
        if !o.status.success() {
            bail!("conduit {} failed: {out}", args.join(" "));
        }
        Ok(out)
    };
    println!("  $ conduit grant vendor-tools --for 4h --reason \"CHG-1234 firmware update\"");
    let said = admin(&[
        "grant",
        "vendor-tools",
        "--for",
        "4h",
        "--reason",
        "CHG-1234 firmware update",
    ])?;
    println!("  {}", said.trim());
    outcome(
        true,
        tcp(&p, "engws", "10.2.0.10", "20001"),
        "granted: eng-ws → plc-1 tcp/20001",
    )?;
    for l in admin(&["status"])?
        .lines()
        .filter(|l| l.starts_with("grant:"))
    {
        println!("  $ conduit status | grep grant:\n  {l}");
    }
    println!("  $ conduit revoke vendor-tools");
    println!("  {}", admin(&["revoke", "vendor-tools"])?.trim());
    outcome(
        false,
        tcp(&p, "engws", "10.2.0.10", "20001"),
        "revoked: eng-ws → plc-1 tcp/20001",
    )?;

    step("rollout: put the control zone in monitor mode (reload by SIGHUP), observe, then enforce");
    let text = std::fs::read_to_string(&policy_src)?;
    let monitored = text.replacen(
        "  - name: control\n",
        "  - name: control\n    mode: monitor\n",
        1,
    );
    std::fs::write(tmp.join("policy.new"), &monitored)?;
    std::fs::rename(tmp.join("policy.new"), &policy)?;
    signal_agent(&p, rustix::process::Signal::HUP)?;
    sleep(Duration::from_millis(1200));
    outcome(
        true,
        tcp(&p, "office", "10.2.0.10", "502"),
        "monitor: office → plc-1 tcp/502 (passes, counted as would-drop)",
    )?;
    std::fs::copy(&policy_src, tmp.join("policy.new"))?;
    std::fs::rename(tmp.join("policy.new"), &policy)?;
    signal_agent(&p, rustix::process::Signal::HUP)?;
    sleep(Duration::from_millis(1200));
    outcome(
        false,
        tcp(&p, "office", "10.2.0.10", "502"),
        "enforce: office → plc-1 tcp/502",
    )?;

    step("metrics (GET /metrics on the gateway)");
    let m = metrics(&p);
    for l in m.lines().filter(|l| !l.starts_with('#')) {
        if l.starts_with("conduit_packets_total")
            || l.starts_with("conduit_dropped")
            || l.starts_with("conduit_would_drop")
            || l.starts_with("conduit_policy_generation")
            || l.starts_with("conduit_policy_reloads")
        {
            println!("  {l}");
        }
    }
    for want in [
        "reason=\"spoofed\"",
        "reason=\"arp_spoof\"",
        "conduit_would_drop_packets_total",
        "conduit=\"hmi-to-plc\"",
    ] {
        if !m.contains(want) {
            bail!("the metrics lack {want}");
        }
    }
    step("audit log (first lines)");
    let audit_text = std::fs::read_to_string(&audit).unwrap_or_default();
    // The plant's own traffic, not the IPv6 chatter of the new interfaces (denied too).
    let plant_lines = audit_text.lines().filter(|l| {
        !(l.contains("\"src_zone\":\"unknown\"") && l.contains("\"dst_zone\":\"unknown\""))
    });
    for l in plant_lines.take(8) {
        println!("  {l}");
    }
    println!("  ({} lines in all)", audit_text.lines().count());

    step("audit evidence: `conduit report` of the plant, from the agent's counters and audit log");
    let out_dir = workspace_root().join("target/demo");
    std::fs::create_dir_all(&out_dir)?;
    let html = out_dir.join("purdue-plant-report.html");
    let status = Command::new(&conduit)
        .arg("report")
        .arg(&policy)
        .args([
            "--state-dir",
            &state,
            "--audit-log",
            &audit,
            "--format",
            "html",
            "-o",
        ])
        .arg(&html)
        .status()?;
    if !status.success() {
        bail!("conduit report failed ({status})");
    }
    println!(
        "  the report of the demo plant (one self-contained HTML file, printable): {}",
        html.display()
    );

    step("teardown: stopping the agent (it detaches), deleting the namespaces");
    drop(p);
    println!("\ndemo done: nothing left behind");
    Ok(())
}

/// Starts `conduit run --policy POLICY` on the gateway's ports, with a pin directory of its own
/// (removed when the plant goes) and `extra` arguments.
fn start_agent(
    p: &mut Plant,
    conduit: &std::path::Path,
    policy: &std::path::Path,
    ifaces: &[String],
    extra: &[&str],
) -> Result<Child> {
    let pin_dir = PathBuf::from(format!(
        "/sys/fs/bpf/conduit-demo-{}-{}",
        p.tag,
        p.pin_dirs.len()
    ));
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/var/run/netns/{}", p.ns("gw")))
        .arg("--")
        .arg(conduit)
        .arg("run")
        .arg("--policy")
        .arg(policy);
    for i in ifaces {
        cmd.args(["--iface", i]);
    }
    cmd.arg("--pin-dir")
        .arg(&pin_dir)
        .arg("--state-dir")
        .arg(p.tmp.join("state"))
        .args(extra);
    p.pin_dirs.push(pin_dir);
    let log = std::fs::File::create(p.tmp.join("agent.log"))?;
    Ok(cmd.stdout(Stdio::null()).stderr(log).spawn()?)
}

/// The discover step: an agent in monitor mode learns the plant at work, then `conduit
/// discover --learned` drafts its policy.
fn discover(p: &mut Plant, conduit: &std::path::Path, ifaces: &[String]) -> Result<()> {
    step(
        "discover: an agent in monitor mode learns the plant (policies/learn.yaml, --learn-dir); `conduit discover --learned` drafts its policy",
    );
    let learn_dir = p.tmp.join("learn");
    let learn = learn_dir.to_string_lossy().into_owned();
    let policy = workspace_root().join("policies/learn.yaml");
    let mut agent = start_agent(p, conduit, &policy, ifaces, &["--learn-dir", &learn])?;
    let healthy = wait_healthy(p);
    let mut servers = Vec::new();
    let traffic = healthy.and_then(|()| {
        for (host, port) in [("plc1", "502"), ("plc2", "502"), ("historian", "443")] {
            servers.push(spawn_in(&p.ns(host), &["nc", "-l", "-k", "-p", port])?);
        }
        sleep(Duration::from_millis(300));
        let mut answered = 0;
        for (from, to, port) in [
            ("hmi", "10.2.0.10", "502"),
            ("hmi", "10.2.0.11", "502"),
            ("engws", "10.2.0.10", "502"),
            ("office", "10.5.0.10", "443"),
        ] {
            answered += usize::from(tcp(p, from, to, port));
        }
        let ping = ["ping", "-c", "2", "-i", "0.2", "-W", "1", "10.2.0.11"];
        answered += usize::from(ok_in(&p.ns("hmi"), &ping));
        let scan = ["21", "22", "80", "102"]
            .into_iter()
            .filter(|port| tcp(p, "outsider", "10.2.0.10", port))
            .count();
        println!(
            "  traffic: {answered} answered exchanges (hmi, eng-ws → plcs, office → historian, ping), a scan of 4 ports ({scan} open)"
        );
        Ok(())
    });
    // Stopping the agent writes what it learned (it also does every --learn-interval).
    crate::signal(&agent, rustix::process::Signal::TERM);
    let _ = agent.wait();
    for mut s in servers {
        crate::signal(&s, rustix::process::Signal::TERM);
        let _ = s.wait();
    }
    traffic?;
    let draft = p.tmp.join("draft.yaml");
    let out = Command::new(conduit)
        .args(["discover", "--learned", &learn, "-o"])
        .arg(&draft)
        .output()?;
    if !out.status.success() {
        bail!(
            "conduit discover failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        println!("  {line}");
    }
    let text = std::fs::read_to_string(&draft)?;
    let conduits: Vec<&str> = text
        .split_once("\nconduits:")
        .map(|(_, c)| c)
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.strip_prefix("  - name: "))
        .collect();
    println!(
        "  the draft ({} lines, every zone and conduit `review: pending`, mode monitor): {}",
        text.lines().count(),
        conduits.join(", ")
    );
    println!("  a person reviews it; this demo goes on with the reviewed policy of this plant");
    Ok(())
}

fn signal_agent(p: &Plant, sig: rustix::process::Signal) -> Result<()> {
    // nsenter execs conduit: the child's PID is the agent's.
    let agent = p.children.first().context("no agent")?;
    crate::signal(agent, sig);
    Ok(())
}

fn wait_healthy(p: &Plant) -> Result<()> {
    for _ in 0..100 {
        if out_in(
            &p.ns("gw"),
            &["curl", "-s", "-m", "1", "http://127.0.0.1:9642/healthz"],
        )
        .contains("ok")
        {
            return Ok(());
        }
        sleep(Duration::from_millis(100));
    }
    bail!(
        "the agent did not become healthy: {}",
        std::fs::read_to_string(p.tmp.join("agent.log")).unwrap_or_default()
    )
}

/// The gateway-side veth of a host.
fn port_name(tag: u32, host: &str) -> String {
    let n = format!("g{tag}{host}");
    n.chars().take(15).collect()
}

fn build_plant(p: &mut Plant) -> Result<()> {
    let gw = p.ns("gw");
    sh(&["ip", "netns", "add", &gw])?;
    p.namespaces.push(gw.clone());
    sh(&["ip", "-n", &gw, "link", "set", "lo", "up"])?;
    sh(&[
        "ip",
        "netns",
        "exec",
        &gw,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ])?;
    for (br, addr) in BRIDGES {
        sh(&["ip", "-n", &gw, "link", "add", br, "type", "bridge"])?;
        sh(&["ip", "-n", &gw, "addr", "add", addr, "dev", br])?;
        sh(&["ip", "-n", &gw, "link", "set", br, "up"])?;
    }
    for h in HOSTS {
        let ns = p.ns(h.name);
        sh(&["ip", "netns", "add", &ns])?;
        p.namespaces.push(ns.clone());
        let port = port_name(p.tag, h.name);
        let dev = format!("h-{}", h.name);
        sh(&[
            "ip", "link", "add", &dev, "netns", &ns, "type", "veth", "peer", "name", &port,
            "netns", &gw,
        ])?;
        sh(&["ip", "-n", &ns, "link", "set", &dev, "address", h.mac])?;
        sh(&["ip", "-n", &ns, "addr", "add", h.ip, "dev", &dev])?;
        sh(&["ip", "-n", &ns, "link", "set", &dev, "up"])?;
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        let gw_ip = BRIDGES
            .iter()
            .find(|(b, _)| *b == h.bridge)
            .map(|(_, a)| a.split('/').next().unwrap())
            .unwrap();
        sh(&["ip", "-n", &ns, "route", "add", "default", "via", gw_ip])?;
        sh(&["ip", "-n", &gw, "link", "set", &port, "master", h.bridge])?;
        sh(&["ip", "-n", &gw, "link", "set", &port, "up"])?;
    }
    println!(
        "plant: gateway + {} hosts (enterprise, DMZ, supervisory, control, outsider) in namespaces cdt-demo-{}-*",
        HOSTS.len(),
        p.tag
    );
    let _ = Path::new("/");
    Ok(())
}

/// What the demo must leave as it found it.
fn footprint() -> Result<(String, String, usize)> {
    let netns = sh(&["ip", "netns", "list"])?;
    let pins = sh(&["ls", "/sys/fs/bpf"])?;
    let procs = std::fs::read_dir("/proc")?
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "conduit")
        })
        .count();
    Ok((netns, pins, procs))
}

/// Runs the demo twice and checks that namespaces, bpffs pins and conduit processes are back
/// to what they were before. Prints a summary line that CI reads.
pub fn twice() -> Result<()> {
    let before = footprint()?;
    let mut passed = 0;
    let mut failed = 0;
    for round in 1..=2 {
        let ran = run()
            .map_err(|e| eprintln!("demo round {round}: {e:#}"))
            .is_ok();
        let after = footprint()?;
        if after != before {
            eprintln!(
                "demo round {round}: namespaces, bpffs pins or conduit processes differ from before \
                 (something else running on this machine also counts):\n  before: {before:?}\n  after:  {after:?}"
            );
        }
        let ok = ran && after == before;
        if ok { passed += 1 } else { failed += 1 }
    }
    println!("demo: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!("the demo failed or left something behind");
    }
    Ok(())
}
