//! The agent end to end, as root, with real traffic between network namespaces the tests
//! create: reload (good, bad, under traffic), kill -9 and adoption, metrics scraped by a real
//! Prometheus server, promtool, the audit log under a flood, the failsafe.
use std::{
    process::{Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use conduit_tests::{Netns, VethPair, agent::Agent, poll, require_root, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_conduit");

/// Clients may ping the gateway and reach tcp/8080 on it when `tcp` is true.
fn policy(ping: bool, tcp: bool, extra_defaults: &str) -> String {
    let mut rules = Vec::new();
    if ping {
        rules.push("      - { proto: icmp, icmp_types: [echo-request] }");
    }
    if tcp {
        rules.push("      - { proto: tcp, ports: [8080] }");
    }
    let conduits = if rules.is_empty() {
        "conduits: []\n".to_string()
    } else {
        format!(
            "conduits:\n  - name: clients-to-gw\n    from: clients\n    to: gateway\n    rules:\n{}\n",
            rules.join("\n")
        )
    };
    format!(
        "version: 1\nsite: agent-test\ndefaults:\n  log: deny\n  failsafe:\n    - {{ proto: tcp, ports: [22] }}\n{extra_defaults}zones:\n  - name: clients\n    security_level: 1\n    assets: [{{ name: client, ip: 10.202.0.1 }}]\n  - name: gateway\n    security_level: 2\n    assets: [{{ name: gw, ip: 10.202.0.2 }}]\n{conduits}"
    )
}

struct Net {
    client: Netns,
    gw: Netns,
    veth: VethPair,
}

impl Net {
    /// `conduit run` with `policy` on the gateway's end of the veth pair.
    fn agent(&self, policy: &str, args: &[&str]) -> Agent {
        Agent::start(BIN.as_ref(), &self.gw, &[&self.veth.b], policy, args)
    }
}

fn net() -> Net {
    let client = Netns::new("cdtac");
    let gw = Netns::new("cdtag");
    let veth = VethPair::new(&client, "10.202.0.1/24", &gw, "10.202.0.2/24");
    Net { client, gw, veth }
}

fn ping(n: &Net, count: u32) -> bool {
    n.client
        .command("ping")
        .args([
            "-c",
            &count.to_string(),
            "-i",
            "0.02",
            "-W",
            "1",
            "10.202.0.2",
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Whether a TCP connection from the client to the gateway's `port` succeeds (a listener is
/// started for it).
fn tcp_connects(n: &Net, port: u16) -> bool {
    n.client.tcp_connects(&n.gw, "10.202.0.2", port)
}

fn write_policy(a: &Agent, text: &str) {
    // As an editor or Ansible does: a new file renamed over the old one.
    let tmp = a.policy.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &a.policy).unwrap();
}

/// Writes a policy with an error on line 4 over the live one and waits for the failed reload.
fn write_broken_policy(a: &Agent, n: &Net) {
    write_policy(
        a,
        "version: 1\nsite: x\nzones:\n  - name: Bad\n    security_level: 9\nconduits: []\n",
    );
    wait_for("the failed reload", || {
        a.metric(&n.gw, "conduit_policy_reloads_total{result=\"failure\"}") == Some(1.0)
    });
}

#[test]
fn bad_policy_is_refused_and_the_live_one_stays() {
    require_root();
    let n = net();
    let a = n.agent(&policy(true, false, ""), &[]);
    assert!(ping(&n, 3), "ping is allowed");
    let generation = a.metric(&n.gw, "conduit_policy_generation").unwrap();
    write_broken_policy(&a, &n);
    let log = a.log_text();
    assert!(
        log.contains(":4:") && log.contains("security_level"),
        "errors with line numbers in the log:\n{log}"
    );
    assert_eq!(a.get(&n.gw, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(
        a.metric(&n.gw, "conduit_policy_generation"),
        Some(generation)
    );
    assert!(ping(&n, 3), "the old policy still allows ping");
    // A good policy that denies ping.
    write_policy(&a, &policy(false, true, ""));
    wait_for("the good reload", || {
        a.metric(&n.gw, "conduit_policy_generation") == Some(generation + 1.0)
    });
    assert!(!ping(&n, 2), "the new policy denies ping");
    assert!(tcp_connects(&n, 8080), "the new policy allows tcp/8080");
}

#[test]
fn kill_9_keeps_enforcing_and_a_new_agent_adopts() {
    require_root();
    let n = net();
    let mut a = n.agent(&policy(true, false, ""), &[]);
    assert!(ping(&n, 4));
    let before = a
        .metric(&n.gw, "conduit_packets_total{conduit=\"clients-to-gw\"}")
        .unwrap();
    assert!(before >= 4.0);
    let generation = a.metric(&n.gw, "conduit_policy_generation").unwrap();
    a.signal(libc::SIGKILL);
    a.wait();
    // Still enforced by the pinned program: allowed stays allowed, denied stays denied.
    assert!(ping(&n, 3), "allowed traffic keeps flowing");
    assert!(!tcp_connects(&n, 8080), "denied traffic stays denied");
    assert!(a.pin_dir.join("links").join(&n.veth.b).exists());
    // A new agent adopts the pins: counters continue.
    a.spawn();
    a.wait_healthy(&n.gw);
    let after = a
        .metric(&n.gw, "conduit_packets_total{conduit=\"clients-to-gw\"}")
        .unwrap();
    assert!(
        after >= before + 3.0,
        "counters continue: {before} then {after}"
    );
    assert_eq!(
        a.metric(&n.gw, "conduit_policy_generation"),
        Some(generation + 1.0)
    );
    let out = Command::new(BIN)
        .args(["status", "--pin-dir"])
        .arg(&a.pin_dir)
        .arg("--state-dir")
        .arg(&a.state_dir)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains(&n.veth.b) && status.contains("clients-to-gw"),
        "{status}"
    );
    // SIGTERM detaches cleanly.
    a.signal(libc::SIGTERM);
    assert_eq!(a.wait(), Some(0));
    assert!(!a.pin_dir.exists(), "pins removed on SIGTERM");
    // Detached: the policy no longer applies, so TCP that it denied goes through again.
    assert!(
        tcp_connects(&n, 8080),
        "nothing is enforced after a clean exit"
    );
}

#[test]
fn failsafe_port_passes_under_a_policy_that_allows_nothing() {
    require_root();
    let n = net();
    let _a = n.agent(&policy(false, false, ""), &[]);
    assert!(
        tcp_connects(&n, 22),
        "ssh to the gateway's own address passes"
    );
    assert!(!tcp_connects(&n, 23), "other ports do not");
    assert!(!ping(&n, 1));
}

/// An address added to the gateway while the agent runs is in the failsafe at once (the
/// agent follows netlink's address notifications; its 5 s check is only a backstop).
#[test]
fn the_failsafe_follows_a_new_address_at_once() {
    require_root();
    let n = net();
    let _a = n.agent(&policy(false, false, ""), &[]);
    assert!(
        !n.client.tcp_connects(&n.gw, "10.202.0.3", 22),
        "no such address yet"
    );
    n.gw.exec_ok(&["ip", "addr", "add", "10.202.0.3/24", "dev", &n.veth.b]);
    let t = Instant::now();
    let followed = poll(Duration::from_secs(2), Duration::from_millis(50), || {
        n.client.tcp_connects(&n.gw, "10.202.0.3", 22)
    });
    assert!(
        followed.is_some(),
        "ssh to the new address was still dropped {:?} after it was added",
        t.elapsed()
    );
    assert!(
        !n.client.tcp_connects(&n.gw, "10.202.0.3", 23),
        "other ports of the new address are not in the failsafe"
    );
}

#[test]
fn audit_log_has_one_line_per_denied_flow_under_a_flood() {
    require_root();
    let n = net();
    let a = n.agent(&policy(false, false, ""), &[]);
    let before = a
        .metric(&n.gw, "conduit_audit_events_suppressed_total")
        .unwrap_or(0.0);
    // 100 echo requests of one flow (one ICMP identifier), all denied.
    let _ = n
        .client
        .command("ping")
        .args(["-c", "100", "-i", "0.005", "-W", "1", "10.202.0.2"])
        .stdout(Stdio::null())
        .status();
    wait_for("the audit line", || {
        std::fs::read_to_string(&a.audit_log).is_ok_and(|t| t.contains("\"icmp\""))
    });
    sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(&a.audit_log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["proto"] == "icmp")
        .collect();
    assert_eq!(lines.len(), 1, "one line for the flow:\n{text}");
    let l = &lines[0];
    for field in [
        "ts",
        "verdict",
        "reason",
        "conduit",
        "src_zone",
        "dst_zone",
        "src_ip",
        "dst_ip",
        "proto",
        "sport",
        "dport",
        "interface",
    ] {
        assert!(l.get(field).is_some(), "field {field} missing: {l}");
    }
    assert_eq!(l["verdict"], "deny");
    assert_eq!(l["reason"], "no_conduit");
    assert_eq!(l["src_zone"], "clients");
    assert_eq!(l["dst_zone"], "gateway");
    assert_eq!(l["src_ip"], "10.202.0.1");
    assert_eq!(l["interface"], n.veth.b.as_str());
    let suppressed = a
        .metric(&n.gw, "conduit_audit_events_suppressed_total")
        .unwrap()
        - before;
    let lost = a
        .metric(
            &n.gw,
            "conduit_audit_events_lost_total{reason=\"ring_full\"}",
        )
        .unwrap()
        + a.metric(
            &n.gw,
            "conduit_audit_events_lost_total{reason=\"write_error\"}",
        )
        .unwrap();
    let dropped = a.metric(&n.gw, "conduit_dropped_packets_total{src_zone=\"clients\",dst_zone=\"gateway\",reason=\"no_conduit\"}").unwrap();
    assert_eq!(dropped, 100.0);
    // Every denied frame (of this flow, or of the IPv6 chatter of the new interfaces) is a line
    // of the log or counted as suppressed: none is lost.
    let denied = a
        .metric(&n.gw, "conduit_frames_total{verdict=\"deny\"}")
        .unwrap();
    // Audit events only: the agent's own `policy` line (a policy went live) is none.
    let all_lines = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v.get("event").is_none())
        })
        .count() as f64;
    assert_eq!(lost, 0.0);
    assert_eq!(
        suppressed + all_lines,
        denied,
        "suppressed {suppressed} + lines {all_lines} = denied {denied}"
    );
    assert!(suppressed >= 99.0);
}

#[test]
fn prometheus_scrapes_the_agent_and_promtool_accepts_it() {
    require_root();
    let n = net();
    let a = n.agent(&policy(true, false, ""), &[]);
    assert!(ping(&n, 5));
    let (_, body) = a.get(&n.gw, "/metrics").unwrap();
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    use std::io::Write as _;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus server in the gateway's namespace scrapes the agent.
    let dir = a.policy.parent().unwrap().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let web = a.port + 1;
    std::fs::write(dir.join("prometheus.yml"), format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: conduit\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n", a.port)).unwrap();
    let mut prom =
        n.gw.command("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package)");
    let mut value = None;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) && value.is_none() {
        sleep(Duration::from_millis(500));
        let q = "/api/v1/query?query=conduit_packets_total%7Bconduit%3D%22clients-to-gw%22%7D";
        if let Some((200, body)) = conduit_tests::agent::http_get(&n.gw, web, q) {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            value = v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok());
        }
    }
    conduit_tests::signal(prom.id(), libc::SIGTERM);
    let _ = prom.wait();
    assert_eq!(
        value,
        Some(5.0),
        "Prometheus' answer for the conduit's packets"
    );
}

#[test]
fn reloads_under_traffic_and_a_connection_flood_lose_nothing_and_counters_only_grow() {
    require_root();
    let n = net();
    // Reload by SIGHUP only (the file watcher would add its own reloads).
    let mut a = n.agent(&policy(true, true, ""), &["--debounce-ms", "3600000"]);
    // tcp/8080 on the gateway: allowed by the odd policies only. A listener of the test's
    // own, in the gateway namespace, accepting and closing.
    let listener = conduit_tests::in_netns(&n.gw, || {
        std::net::TcpListener::bind("10.202.0.2:8080").expect("listen on tcp/8080")
    });
    std::thread::spawn(move || {
        for c in listener.incoming() {
            drop(c);
        }
    });
    let target: std::net::SocketAddr = "10.202.0.2:8080".parse().unwrap();
    let g0 = a.metric(&n.gw, "conduit_policy_generation").unwrap();
    // The flow both policies allow: ping every 5 ms for the whole test.
    let flood = n
        .client
        .command("ping")
        .args(["-c", "100000", "-i", "0.005", "-W", "1", "10.202.0.2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The soak (issue 19): a connection flood on the metrics port for the whole storm, from
    // inside the gateway's namespace to its loopback: 100 connections held, every other one a
    // slow client with half a request head, the oldest replaced by a new one every 2 ms.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let metrics_addr: std::net::SocketAddr = ([127, 0, 0, 1], a.port).into();
    let (wrong, last, flood_connections) = std::thread::scope(|scope| {
        let churn = scope.spawn(|| {
            conduit_tests::in_netns(&n.gw, || {
                let mut held = std::collections::VecDeque::new();
                let mut made = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if held.len() >= 100 {
                        held.pop_front();
                    }
                    if let Ok(mut c) = std::net::TcpStream::connect_timeout(
                        &metrics_addr,
                        Duration::from_millis(50),
                    ) {
                        if made % 2 == 1 {
                            use std::io::Write as _;
                            let _ = c.write_all(b"GET /metrics HTTP/1.1\r\nHost: soak\r\n");
                        }
                        held.push_back(c);
                        made += 1;
                    }
                    sleep(Duration::from_millis(2));
                }
                made
            })
        });
        let mut last = 0.0;
        let mut wrong = Vec::new();
        for i in 0..200 {
            let allows_tcp = i % 2 == 1;
            // The generation before this reload. Another trigger (the agent re-reads the file
            // when the host's addresses change) may add a reload of the same file: what counts
            // is that a generation newer than this one, loaded from the new file, is live.
            let before = a.metric(&n.gw, "conduit_policy_generation").unwrap();
            std::fs::write(&a.policy, policy(true, allows_tcp, "")).unwrap();
            a.signal(libc::SIGHUP);
            let t = Instant::now();
            let want = loop {
                let g = a
                    .metric(&n.gw, "conduit_policy_generation")
                    .unwrap_or(before);
                if g > before {
                    break g;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "reload {i} did not happen"
                );
                sleep(Duration::from_millis(5));
            };
            // The flow only one policy allows, attempted under the generation now in force: a
            // new connection each time (a denied SYN is dropped, so the attempt times out).
            let connected = conduit_tests::in_netns(&n.client, || {
                std::net::TcpStream::connect_timeout(&target, Duration::from_millis(300)).is_ok()
            });
            if connected != allows_tcp {
                wrong.push(format!(
                    "generation {want}: tcp/8080 {} but the policy {} it",
                    if connected { "connected" } else { "failed" },
                    if allows_tcp { "allows" } else { "denies" }
                ));
            }
            let v = a
                .metric(&n.gw, "conduit_packets_total{conduit=\"clients-to-gw\"}")
                .unwrap();
            assert!(v >= last, "counter went backwards: {last} then {v}");
            last = v;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (wrong, last, churn.join().unwrap())
    });
    let _ = last;
    eprintln!("soak: {flood_connections} connections to the metrics port during 200 reloads");
    assert!(
        flood_connections >= 1000,
        "the connection flood ran alongside: {flood_connections} connections"
    );
    assert!(
        wrong.is_empty(),
        "judged wrongly for the generation in force: {wrong:#?}"
    );
    // Every generation is accounted for: the 200 SIGHUPs, plus the reloads the agent made on
    // its own because this namespace's addresses changed (IPv6 link-local addresses appear
    // after duplicate address detection; the failsafe follows them).
    let own = a.log_text().matches("host addresses changed").count();
    assert_eq!(
        a.metric(&n.gw, "conduit_policy_generation"),
        Some(g0 + 200.0 + own as f64),
        "{}",
        a.log_text()
    );
    conduit_tests::signal(flood.id(), libc::SIGINT);
    let out = flood.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains(" 0% packet loss"),
        "ping during 200 reloads: {summary}"
    );
    assert_eq!(
        a.metric(&n.gw, "conduit_policy_reloads_total{result=\"failure\"}"),
        Some(0.0)
    );
    a.signal(libc::SIGTERM);
    assert_eq!(a.wait(), Some(0));
}

#[test]
fn json_logs_for_log_collectors() {
    require_root();
    let n = net();
    let a = n.agent(&policy(true, false, ""), &["--log-format", "json"]);
    write_broken_policy(&a, &n);
    let log = a.log_text();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 3, "{log}");
    for l in &lines {
        assert!(l["level"].is_string() && l["timestamp"].is_string(), "{l}");
    }
    // The rejected policy's errors, with their line numbers, are in the JSON lines.
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "ERROR" && l.to_string().contains(":4:")),
        "{log}"
    );
}

/// Makes a FIFO at `path` (in place of the file there: made aside, then renamed over it).
fn fifo_over(path: &std::path::Path) {
    let fifo = path.with_extension("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo");
    std::fs::rename(&fifo, path).unwrap();
}

/// If the test fails, opens the FIFO at the path for writing (and closes it) for a while, so
/// that an agent blocked opening it wakes up and can be stopped by SIGTERM.
struct UnblockOnFailure(std::path::PathBuf);

impl Drop for UnblockOnFailure {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt as _;
        if !std::thread::panicking() {
            return;
        }
        for _ in 0..60 {
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.0);
            sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn a_fifo_as_the_policy_file_is_refused_and_the_agent_keeps_serving() {
    require_root();
    let n = net();
    let a = n.agent(&policy(true, false, ""), &[]);
    // Declared after the agent: dropped first.
    let _unblock = UnblockOnFailure(a.policy.clone());
    assert!(ping(&n, 2), "ping is allowed");
    let generation = a.metric(&n.gw, "conduit_policy_generation").unwrap();
    // Nobody ever writes to the FIFO: opening it for reading would block the agent for good.
    fifo_over(&a.policy);
    wait_for("the failed reload after the file changed", || {
        a.metric(&n.gw, "conduit_policy_reloads_total{result=\"failure\"}") == Some(1.0)
    });
    a.signal(libc::SIGHUP);
    wait_for("the failed reload on SIGHUP", || {
        a.metric(&n.gw, "conduit_policy_reloads_total{result=\"failure\"}") == Some(2.0)
    });
    assert_eq!(a.get(&n.gw, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(a.get(&n.gw, "/metrics").map(|r| r.0), Some(200));
    assert_eq!(
        a.metric(&n.gw, "conduit_policy_generation"),
        Some(generation),
        "the live policy stays"
    );
    assert!(ping(&n, 2), "the old policy still allows ping");
    let log = a.log_text();
    assert!(
        log.contains("not a regular file"),
        "the log says why:\n{log}"
    );
}

/// `conduit run` with `a`'s policy, interface, pin and state directories, its own metrics
/// port: its exit status and standard error, or `None` (and it is stopped, by PID) if it was
/// still running after 5 s.
fn second_agent(n: &Net, a: &Agent) -> (Option<i32>, String) {
    let mut c = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", n.gw.name))
        .arg("--")
        .arg(BIN)
        .arg("run")
        .arg("--policy")
        .arg(&a.policy)
        .args(["--iface", &n.veth.b])
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{}", a.port + 1))
        .arg("--pin-dir")
        .arg(&a.pin_dir)
        .arg("--state-dir")
        .arg(&a.state_dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = conduit_tests::exited_within(&mut c, Duration::from_secs(5));
    if !exited {
        conduit_tests::signal(c.id(), libc::SIGTERM);
    }
    let out = c.wait_with_output().unwrap();
    let code = if exited { out.status.code() } else { None };
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_second_agent_on_the_same_pins_refuses_to_start() {
    require_root();
    let n = net();
    let mut a = n.agent(&policy(true, false, ""), &[]);
    assert!(!tcp_connects(&n, 8080), "the policy denies tcp/8080");
    for _ in 0..2 {
        let (code, log) = second_agent(&n, &a);
        assert_eq!(code, Some(2), "the second agent refuses to start:\n{log}");
        let pid = a.pid().to_string();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&pid)).collect();
        assert!(
            lines.len() == 1 && lines[0].contains("another conduit agent"),
            "one line names the running agent's PID {pid}:\n{log}"
        );
        // Nor does `conduit detach` pull the pins from under it.
        let d = Command::new(BIN)
            .arg("detach")
            .arg("--pin-dir")
            .arg(&a.pin_dir)
            .arg("--state-dir")
            .arg(&a.state_dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&d.stderr);
        assert_eq!(
            d.status.code(),
            Some(2),
            "detach under a running agent: {err}"
        );
        assert!(
            err.contains(&pid),
            "detach names the running agent's PID {pid}: {err}"
        );
        // The first agent is untouched: attached, healthy, enforcing, named in the state file.
        assert!(a.pin_dir.join("links").join(&n.veth.b).exists());
        assert_eq!(a.get(&n.gw, "/healthz").map(|r| r.0), Some(200));
        assert!(ping(&n, 2), "allowed traffic flows");
        assert!(!tcp_connects(&n, 8080), "denied traffic stays denied");
        let state = conduit_agent::agent::state::read(&a.state_dir).unwrap();
        assert_eq!(state.pid, a.pid() as u32);
        // kill -9 leaves no stale lock: a new agent starts (and is protected in turn).
        a.signal(libc::SIGKILL);
        a.wait();
        a.spawn();
        a.wait_healthy(&n.gw);
    }
}

/// Polls `f` every 100 ms for at most `limit`; whether it became true.
fn within(limit: Duration, f: impl FnMut() -> bool) -> bool {
    poll(limit, Duration::from_millis(100), f).is_some()
}

/// Issue 19, item 8: a flood of held connections on the metrics port (far more than the
/// agent's descriptor limit) must not make it spin on `accept`, starve reloads or the audit
/// log of descriptors, or keep `/metrics` from answering once the held connections time out.
#[test]
fn a_connection_flood_on_the_metrics_port_leaves_the_agent_working() {
    require_root();
    let n = net();
    // Soft descriptor limit 128, hard 256: the agent raises its soft limit to the hard one
    // and caps its HTTP connections well below it.
    let a = Agent::start_with_nofile(
        BIN.as_ref(),
        &n.gw,
        &[&n.veth.b],
        &policy(true, false, ""),
        &["--debounce-ms", "3600000"],
        (128, 256),
    );
    let nofile = a.nofile();
    let g0 = a.metric(&n.gw, "conduit_policy_generation").unwrap();
    let generation = |a: &Agent| a.state().and_then(|s| s["generation"].as_f64());
    assert_eq!(generation(&a), Some(g0));
    const FLOOD: usize = 600;
    let cpu0 = a.cpu_time();
    let t0 = Instant::now();
    // The flood, from inside the gateway's namespace to its loopback: connections held open,
    // every other one with half a request head (a slow client). Bounded in count and time.
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], a.port).into();
    let (held, attempts) = conduit_tests::in_netns(&n.gw, || {
        let (mut held, mut attempts) = (Vec::new(), 0);
        while held.len() < FLOOD && t0.elapsed() < Duration::from_secs(5) {
            attempts += 1;
            if let Ok(mut s) =
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(50))
            {
                if held.len() % 2 == 1 {
                    use std::io::Write as _;
                    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: flood\r\n");
                }
                held.push(s);
            }
        }
        (held, attempts)
    });
    let flooded = t0.elapsed();
    // During the flood: a reload (it opens the policy file, writes the state file) and an
    // audit event (a denied connection to tcp/8080).
    a.signal(libc::SIGHUP);
    let reloaded = within(Duration::from_secs(10), || generation(&a) > Some(g0));
    let _ = n
        .client
        .command("nc")
        .args(["-z", "-w", "1", "10.202.0.2", "8080"])
        .status();
    let audited = within(Duration::from_secs(10), || {
        std::fs::read_to_string(&a.audit_log).is_ok_and(|t| t.contains("\"dport\":8080"))
    });
    // A new client: answered once the held connections time out (or at once, under the cap).
    let answered = within(Duration::from_secs(25).saturating_sub(t0.elapsed()), || {
        a.get(&n.gw, "/metrics")
            .is_some_and(|(s, b)| s == 200 && b.contains("conduit_policy_generation"))
    });
    let answered_after = t0.elapsed();
    // Every held connection was closed by the agent (refused over the cap, or timed out).
    let still_open = || {
        held.iter()
            .filter(|s| {
                use std::io::Read as _;
                s.set_nonblocking(true).unwrap();
                let mut b = [0u8; 64];
                matches!((&**s).read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            })
            .count()
    };
    let mut open = still_open();
    within(Duration::from_secs(5), || {
        open = still_open();
        open == 0
    });
    let wall = t0.elapsed();
    let cpu = a.cpu_time() - cpu0;
    let warnings = a.log_text().lines().filter(|l| l.contains("WARN")).count();
    eprintln!(
        "nofile {nofile:?}; {} connections held of {attempts} attempts in {flooded:?}; \
         reload during the flood: {reloaded}; audit line: {audited}; new client answered: \
         {answered} after {answered_after:?}; still open at the end: {open}; agent CPU {cpu:?} \
         in {wall:?}; {warnings} warnings in its log",
        held.len()
    );
    assert_eq!(
        nofile.0, nofile.1,
        "the agent raised its soft descriptor limit"
    );
    assert!(
        held.len() >= 2 * 256,
        "the flood opened far more connections than the descriptor limit"
    );
    assert!(reloaded, "a SIGHUP reload during the flood went live");
    assert!(audited, "the audit log was written during the flood");
    assert!(answered, "/metrics answered a new client within 25 s");
    assert_eq!(open, 0, "held connections were closed by the agent");
    assert!(
        cpu < wall / 10,
        "the agent used {cpu:?} of CPU in {wall:?}: it must not spin on accept"
    );
    assert!(warnings < 10, "{}", a.log_text());
}

/// Issue 19, item 9: an audit log on a full disk. Events whose line cannot be written are
/// counted (`conduit_audit_events_lost_total{reason="write_error"}`), the agent warns about it
/// a few times (not once per event), and no line is ever left half-written.
#[test]
fn audit_log_on_a_full_disk_keeps_whole_lines_and_counts_what_it_lost() {
    require_root();
    // Declared before the agent, so it is unmounted after the agent exits.
    let disk = conduit_tests::tmpfs::Tmpfs::new("64k");
    let log = disk.dir.join("audit.jsonl");
    let n = net();
    let a = n.agent(
        &policy(false, false, ""),
        &["--audit-log", log.to_str().unwrap()],
    );
    let write_error = |a: &Agent| {
        a.metric(
            &n.gw,
            "conduit_audit_events_lost_total{reason=\"write_error\"}",
        )
    };
    // Many distinct denied flows (one UDP datagram to each of 4,000 ports: the per-flow rate
    // limit holds none back), in bursts, until well past the 64 KiB of the disk.
    let target: std::net::SocketAddr = "10.202.0.2:9".parse().unwrap();
    conduit_tests::in_netns(&n.client, || {
        let s = std::net::UdpSocket::bind("10.202.0.1:0").unwrap();
        for i in 0..4000u16 {
            let mut to = target;
            to.set_port(10_000 + i);
            let _ = s.send_to(b"x", to);
            if i % 100 == 99 {
                sleep(Duration::from_millis(20));
            }
        }
    });
    let counted = within(Duration::from_secs(15), || write_error(&a) > Some(0.0));
    sleep(Duration::from_millis(500));
    let text = std::fs::read_to_string(&log).unwrap();
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
        .collect();
    let warnings: Vec<String> = a
        .log_text()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("audit"))
        .map(str::to_owned)
        .collect();
    let ring_full = a.metric(
        &n.gw,
        "conduit_audit_events_lost_total{reason=\"ring_full\"}",
    );
    let written = a.metric(&n.gw, "conduit_audit_events_written_total");
    eprintln!(
        "audit log: {} bytes, {} lines, {} that do not parse, ends with a newline: {}; \
         written {written:?}, lost: write_error {:?}, ring_full {ring_full:?}; {} warnings \
         about the audit log",
        text.len(),
        text.lines().count(),
        bad.len(),
        text.ends_with('\n'),
        write_error(&a),
        warnings.len()
    );
    assert!(text.len() > 32 * 1024, "the disk was filled");
    assert!(
        bad.is_empty(),
        "lines that are not JSON: {:?}",
        &bad[..bad.len().min(3)]
    );
    assert!(text.is_empty() || text.ends_with('\n'), "a cut last line");
    assert!(
        counted,
        "conduit_audit_events_lost_total{{reason=\"write_error\"}} counts the lost events"
    );
    assert!(
        ring_full.is_some(),
        "the ring buffer's losses keep their own label"
    );
    for w in warnings.iter().take(3) {
        eprintln!("  {w}");
    }
    assert!(
        warnings.len() <= 3,
        "{} warnings, e.g. {:?}",
        warnings.len(),
        &warnings[..warnings.len().min(3)]
    );
}

/// Issue 19, item 10: a reload parses and compiles off the agent's runtime thread, so
/// `/metrics` keeps answering while a large policy (100k assets) is read and compiled.
#[test]
fn metrics_answer_while_a_large_policy_reloads() {
    require_root();
    let n = net();
    let a = n.agent(
        &policy(true, false, ""),
        &["--debounce-ms", "3600000", "--log-format", "json"],
    );
    let mut assets = 100_000;
    loop {
        let g0 = a.metric(&n.gw, "conduit_policy_generation").unwrap();
        let reloads = a.log_text().matches("policy reloaded").count();
        std::fs::write(
            &a.policy,
            conduit_tests::policygen::policy_text_at(assets, 100, 7, 0),
        )
        .unwrap();
        a.signal(libc::SIGHUP);
        let t = Instant::now();
        // Scrape every 20 ms until the new generation is live.
        let mut latencies = Vec::new();
        loop {
            let s = Instant::now();
            let r = a.get(&n.gw, "/metrics");
            latencies.push(s.elapsed());
            let g = r.and_then(|(_, b)| {
                conduit_tests::agent::find_sample(&b, "conduit_policy_generation")
            });
            if g > Some(g0) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "the reload did not go live: {}",
                a.log_text()
            );
            sleep(Duration::from_millis(20));
        }
        let live = t.elapsed();
        assert!(within(Duration::from_secs(5), || {
            a.log_text().matches("policy reloaded").count() > reloads
        }));
        // The agent's own measure of the reload (read, parse, compile, apply).
        let log = a.log_text();
        let line: serde_json::Value = log
            .lines()
            .filter(|l| l.contains("policy reloaded"))
            .nth(reloads)
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap();
        let reload_ms = line["elapsed_ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("no elapsed_ms in {line}"));
        let reload = Duration::from_millis(reload_ms);
        let worst = *latencies.iter().max().unwrap();
        let mut sorted = latencies.clone();
        sorted.sort();
        eprintln!(
            "{assets} assets: reload {reload:?} (agent's log), SIGHUP → live {live:?}; {} \
             scrapes every 20 ms meanwhile: median {:?}, worst {worst:?}",
            latencies.len(),
            sorted[sorted.len() / 2]
        );
        if reload < Duration::from_millis(200) && assets < 1_000_000 {
            // Too fast a machine to show anything: a larger policy.
            assets *= 4;
            continue;
        }
        assert!(
            worst < reload / 4,
            "a scrape waited {worst:?} during a reload of {reload:?}"
        );
        break;
    }
}

const CLIENT_ADDR: &str = "10.202.0.1/24";
const GW_ADDR: &str = "10.202.0.2/24";

/// Polls `f` every 20 ms for at most `limit`; returns how long it took.
fn wait_within(what: &str, limit: Duration, f: impl FnMut() -> bool) -> Duration {
    poll(limit, Duration::from_millis(20), f)
        .unwrap_or_else(|| panic!("{what}: not within {limit:?}"))
}

/// `conduit_interface_attached` for the gateway's end of the pair, whatever its mode label.
fn attached_metric(a: &Agent, n: &Net) -> Option<f64> {
    let (_, body) = a.get(&n.gw, "/metrics")?;
    let want = format!("interface=\"{}\"", n.veth.b);
    body.lines()
        .find(|l| l.starts_with("conduit_interface_attached{") && l.contains(&want))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

/// Whether `ip -d link show` lists an XDP program on the gateway's end (false while the
/// interface does not exist).
fn xdp_attached(n: &Net) -> bool {
    let out =
        n.gw.command("ip")
            .args(["-d", "link", "show", "dev", &n.veth.b])
            .output()
            .unwrap();
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

fn healthz(a: &Agent, n: &Net) -> Option<u16> {
    a.get(&n.gw, "/healthz").map(|r| r.0)
}

fn status_text(a: &Agent) -> String {
    let out = Command::new(BIN)
        .args(["status", "--pin-dir"])
        .arg(&a.pin_dir)
        .arg("--state-dir")
        .arg(&a.state_dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Issue 19 item 2: an enforced interface deleted and created again (a replugged USB NIC, a
/// VLAN interface recreated by networkd, a container's veth) is reported missing meanwhile
/// (/healthz 503, `conduit_interface_attached` 0, `conduit status`), its defunct link is
/// unpinned, and the program is attached to the new interface within a second, whether the
/// running agent created the link itself or adopted it from an agent killed with -9.
#[test]
fn an_interface_deleted_and_recreated_is_reported_missing_and_reattached() {
    require_root();
    let n = net();
    let mut a = n.agent(&policy(true, false, ""), &[]);
    assert!(xdp_attached(&n));
    assert_eq!(attached_metric(&a, &n), Some(1.0));
    let pin = a.pin_dir.join("links").join(&n.veth.b);
    for round in ["its own link", "an adopted link"] {
        if round == "an adopted link" {
            a.signal(libc::SIGKILL);
            a.wait();
            a.spawn();
            a.wait_healthy(&n.gw);
            assert!(xdp_attached(&n));
        }
        assert!(!tcp_connects(&n, 8080), "{round}: tcp/8080 is denied");

        n.veth.delete(&n.client);
        let unhealthy = wait_within("/healthz 503", Duration::from_secs(2), || {
            healthz(&a, &n) == Some(503)
        });
        let zero = wait_within(
            "conduit_interface_attached 0",
            Duration::from_secs(2),
            || attached_metric(&a, &n) == Some(0.0),
        );
        let status = status_text(&a);
        assert!(
            status
                .lines()
                .any(|l| l.starts_with("missing:") && l.contains(&n.veth.b)),
            "{round}: status names the missing interface:\n{status}"
        );
        wait_within("the defunct link unpinned", Duration::from_secs(2), || {
            !pin.exists()
        });

        // The device comes back under the same name (a new ifindex, a new MAC): the program
        // must be on it within a second of its creation, before it is even addressed and up.
        let t = Instant::now();
        n.veth.add_link(&n.client, &n.gw);
        let created = t.elapsed();
        let attached = wait_within(
            "the program on the re-created interface",
            Duration::from_secs(1),
            || xdp_attached(&n),
        );
        n.veth.configure(&n.client, CLIENT_ADDR, &n.gw, GW_ADDR);
        let healthy = wait_within("/healthz 200", Duration::from_secs(2), || {
            healthz(&a, &n) == Some(200)
        });
        assert_eq!(attached_metric(&a, &n), Some(1.0));
        assert!(pin.exists(), "{round}: the new link is pinned");
        eprintln!(
            "{round}: deleted -> 503 in {unhealthy:?}, metric 0 {zero:?} later; \
             created in {created:?}, program attached {attached:?} after that, 200 {healthy:?} after configuring"
        );
        // Enforced again, with the live policy.
        assert!(
            ping(&n, 3),
            "{round}: ping is allowed on the re-created interface"
        );
        assert!(
            !tcp_connects(&n, 8080),
            "{round}: tcp/8080 is denied on the re-created interface"
        );
        assert!(!status_text(&a).contains("missing:"));
    }
    let log = a.log_text();
    assert!(
        log.contains("WARN") && log.contains("interface is gone"),
        "{log}"
    );
    assert!(log.contains("re-attached"), "{log}");
    a.signal(libc::SIGTERM);
    assert_eq!(a.wait(), Some(0));
    assert!(!xdp_attached(&n), "SIGTERM still detaches");
}

/// Issue 19 item 2, on restart: an interface deleted and created again while no agent ran
/// leaves a pinned link to a device that is gone; the next agent replaces it instead of
/// failing, after an exit with --keep-on-exit and after kill -9.
#[test]
fn a_restart_replaces_the_stale_pinned_link_of_a_recreated_interface() {
    require_root();
    let n = net();
    let mut a = n.agent(&policy(true, false, ""), &["--keep-on-exit"]);
    let pin = a.pin_dir.join("links").join(&n.veth.b);
    for (how, sig) in [
        ("--keep-on-exit", libc::SIGTERM),
        ("kill -9", libc::SIGKILL),
    ] {
        a.signal(sig);
        a.wait();
        assert!(pin.exists(), "{how}: the link stays pinned");
        assert!(xdp_attached(&n), "{how}: the program stays attached");
        n.veth.delete(&n.client);
        n.veth.create(&n.client, CLIENT_ADDR, &n.gw, GW_ADDR);
        assert!(
            !xdp_attached(&n),
            "{how}: the re-created interface has no program until an agent attaches it"
        );
        a.spawn();
        let t = Instant::now();
        loop {
            if let Some(status) = a.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "{how}: the new agent exited ({status}) instead of replacing the stale link:\n{}",
                    a.log_text()
                );
            }
            if healthz(&a, &n) == Some(200) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{how}: the new agent did not become healthy:\n{}",
                a.log_text()
            );
            sleep(Duration::from_millis(50));
        }
        eprintln!("{how}: the new agent was healthy after {:?}", t.elapsed());
        assert!(
            xdp_attached(&n),
            "{how}: the program is on the new interface"
        );
        assert!(pin.exists(), "{how}: the new link is pinned");
        assert_eq!(attached_metric(&a, &n), Some(1.0));
        assert!(ping(&n, 3), "{how}: ping is allowed");
        assert!(!tcp_connects(&n, 8080), "{how}: tcp/8080 is denied");
    }
    assert!(
        a.log_text().contains("stale pinned link"),
        "{}",
        a.log_text()
    );
}

/// Issue 14: a learn dir written by another version of the learn format is refused before
/// anything is attached (exit 1, the file named); a good one is continued, and the agent
/// writes what it learned on exit.
#[test]
fn a_learn_dir_of_another_format_is_refused_before_attaching() {
    require_root();
    let n = net();
    let dir = std::env::temp_dir().join(conduit_tests::unique_name("cdtln"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("learned.jsonl");
    std::fs::write(&file, "{\"conduit_learn\":99}\n").unwrap();
    let learn = dir.to_str().unwrap();
    let mut a = Agent::launch(
        BIN.as_ref(),
        &n.gw,
        &[&n.veth.b],
        &policy(true, false, ""),
        &["--learn-dir", learn],
    );
    assert_eq!(a.wait(), Some(1), "{}", a.log_text());
    let log = a.log_text();
    assert!(
        log.contains(&format!("{}: written in learn format 99", file.display())),
        "{log}"
    );
    assert!(
        !a.pin_dir.join("links").join(&n.veth.b).exists(),
        "nothing attached"
    );
    drop(a);
    // A fresh learn dir: the agent learns the client's pings and writes them on exit.
    std::fs::remove_file(&file).unwrap();
    let a = n.agent(&policy(true, false, ""), &["--learn-dir", learn]);
    assert!(ping(&n, 2));
    drop(a);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("{\"conduit_learn\":1,") && text.contains("\"proto\":1,\"port\":8,"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
