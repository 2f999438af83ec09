//! End-to-end plant scenarios (issue #6), as root: a Purdue plant of network namespaces around
//! a gateway that runs the real agent, once routed (one subnet per zone) and once as a bridge
//! ("bump in the wire", the agent on the bridge ports). The same story in both modes: allowed
//! TCP, UDP, ICMP and a real Modbus/TCP exchange (pymodbus); denied flows and a port scan; a
//! MAC spoof and ARP poisoning with scapy; and after each step, the metrics' deltas and the
//! audit lines that must match what was sent.
use std::{
    thread::sleep,
    time::{Duration, Instant},
};

use conduit_tests::{
    agent::Agent,
    plant::{Metrics, Mode, Plant, Role},
    require_root,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_conduit");

const DROPPED: &str = "conduit_dropped_packets_total";
const PACKETS: &str = "conduit_packets_total";

#[test]
fn plant_routed() {
    scenario(Mode::Routed);
}

#[test]
fn plant_bridge() {
    scenario(Mode::Bridge);
}

struct Run<'a> {
    plant: &'a Plant,
    agent: &'a Agent,
}

impl Run<'_> {
    fn metrics(&self) -> Metrics {
        let (status, body) = self
            .agent
            .get(&self.plant.gw, "/metrics")
            .expect("GET /metrics");
        assert_eq!(status, 200);
        Metrics::parse(&body)
    }

    /// Every audit event of the audit log so far (the agent's own `"event": "policy"` lines,
    /// one per policy that went live, left out).
    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.agent.audit_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l}: {e}")))
            .filter(|v: &Value| v.get("event").is_none())
            .collect()
    }

    /// Waits (up to 5 s) for an audit line with every field of `want`.
    fn expect_audit(&self, want: &[(&str, Value)]) -> Value {
        let t = Instant::now();
        loop {
            if let Some(l) = self
                .audit()
                .into_iter()
                .find(|l| want.iter().all(|(k, v)| &l[*k] == v))
            {
                return l;
            }
            if t.elapsed() > Duration::from_secs(5) {
                let all: Vec<String> = self.audit().iter().map(Value::to_string).collect();
                panic!(
                    "no audit line with {want:?}; the log:\n{}\nthe agent's log:\n{}",
                    all.join("\n"),
                    self.agent.log_text()
                );
            }
            sleep(Duration::from_millis(100));
        }
    }
}

fn dropped(m: &Metrics, src: &str, dst: &str, reason: &str) -> f64 {
    m.sum(
        DROPPED,
        &[("src_zone", src), ("dst_zone", dst), ("reason", reason)],
    )
}

fn packets(m: &Metrics, conduit: &str) -> f64 {
    m.sum(PACKETS, &[("conduit", conduit)])
}

fn scenario(mode: Mode) {
    require_root();
    let started = Instant::now();
    let plant = Plant::new(mode);
    let yaml = plant.policy_yaml();
    // Dropped before the plant: the agent detaches while its interfaces still exist.
    let agent = Agent::start(BIN.as_ref(), &plant.gw, &plant.ports(), &yaml, &[]);
    let r = Run {
        plant: &plant,
        agent: &agent,
    };
    let ip = |role| plant.ip(role).to_owned();
    let (plc1, plc2, hmi, engws, office, historian, outsider) = (
        ip(Role::Plc1),
        ip(Role::Plc2),
        ip(Role::Hmi),
        ip(Role::EngWs),
        ip(Role::Office),
        ip(Role::Historian),
        ip(Role::Outsider),
    );
    let port_of = |role| Value::from(plant.host(role).port.as_str());

    // The agent is attached to every gateway port (the bridge ports in bridge mode).
    let m = r.metrics();
    for port in plant.ports() {
        assert_eq!(
            m.sum("conduit_interface_attached", &[("interface", port)]),
            1.0,
            "attached to {port}"
        );
    }
    assert_eq!(m.sum("conduit_policy_generation", &[]), 1.0);

    // The plant's services.
    let plc1_regs = [1234, 5678, 42];
    let plc2_regs = [7, 8, 9];
    let s1 = plant.serve(Role::Plc1, &[502, 5020], &[102, 44818], &[161], &plc1_regs);
    let s2 = plant.serve(Role::Plc2, &[502], &[], &[], &plc2_regs);
    let s3 = plant.serve(Role::Historian, &[], &[443], &[], &[]);
    let (_s1, _s2, _s3) = (s1.ready(), s2.ready(), s3.ready());

    // ---- 1. Allowed flows: TCP, UDP and ICMP through their conduits. -----------------------
    let before = r.metrics();
    assert_eq!(
        plant.tcp_connects(Role::Hmi, &plc1, &[502]),
        [true],
        "hmi → plc-1 tcp/502 (conduit hmi-to-plc)"
    );
    assert!(plant.ping(Role::Hmi, &plc1, 3), "hmi → plc-1 ping");
    assert!(plant.ping(Role::Hmi, &plc2, 3), "hmi → plc-2 ping");
    assert_eq!(
        plant
            .udp_exchange(Role::Hmi, &plc1, 161, "get sysName")
            .as_deref(),
        Some("echo:get sysName"),
        "hmi ⇄ plc-1 udp/161: the request passes and so does the reply"
    );
    assert_eq!(
        plant.tcp_connects(Role::EngWs, &plc1, &[102, 44818]),
        [true, true],
        "eng-ws → plc-1 tcp/102 and tcp/44818 (conduit engineering)"
    );
    assert_eq!(
        plant.tcp_connects(Role::Office, &historian, &[443]),
        [true],
        "office → historian tcp/443 (conduit office-to-historian)"
    );
    assert!(
        plant.ping(Role::Office, &historian, 3),
        "office → historian ping"
    );
    let after = r.metrics();
    let d = |c: &str| packets(&after, c) - packets(&before, c);
    // 6 echo requests and their 6 replies at least, plus TCP and UDP.
    assert!(d("hmi-to-plc") >= 14.0, "hmi-to-plc: {}", d("hmi-to-plc"));
    assert!(d("engineering") >= 6.0, "engineering: {}", d("engineering"));
    assert!(
        d("office-to-historian") >= 9.0,
        "office-to-historian: {}",
        d("office-to-historian")
    );
    assert_eq!(
        d("historian-collect"),
        0.0,
        "nothing used historian-collect"
    );
    // Neither the flows nor their replies lost a frame.
    let drops = after.sum(DROPPED, &[]) - before.sum(DROPPED, &[]);
    assert_eq!(drops, 0.0, "no drop while only allowed traffic flows");
    // `log: all` on hmi-to-plc: the allowed flow is in the audit log too.
    r.expect_audit(&[
        ("verdict", "allow".into()),
        ("reason", "conduit".into()),
        ("conduit", "hmi-to-plc".into()),
        ("src_ip", hmi.as_str().into()),
        ("dst_ip", plc1.as_str().into()),
        ("proto", "udp".into()),
        ("dport", 161.into()),
        ("src_zone", "supervisory".into()),
        ("dst_zone", "control".into()),
        ("interface", port_of(Role::Hmi)),
    ]);

    // ---- 2. Modbus/TCP: pymodbus client on the HMI, server on the PLCs. -----------------------
    let before = r.metrics();
    assert_eq!(
        plant.modbus_read(Role::Hmi, &plc1, 502, 3),
        Ok(plc1_regs.to_vec()),
        "the HMI reads plc-1's holding registers"
    );
    assert_eq!(
        plant.modbus_read(Role::Hmi, &plc2, 502, 3),
        Ok(plc2_regs.to_vec()),
        "the HMI reads plc-2's holding registers"
    );
    // hmi-to-plc is read-only (`modbus: { functions: [read] }`): writes from the same HMI,
    // write single register (6) and write multiple registers (16), are dropped in the
    // datapath, counted against the conduit and logged; reads in the same session pass.
    let modbus_drops = |m: &Metrics| {
        m.sum(
            "conduit_inspection_dropped_packets_total",
            &[("conduit", "hmi-to-plc"), ("reason", "modbus_function")],
        )
    };
    let client = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/modbus/client.py");
    let out = plant.run(
        Role::Hmi,
        &[
            "/usr/bin/python3",
            client.to_str().unwrap(),
            &plc1,
            "1",
            "3",
            "6",
            "16",
            "3",
        ],
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "modbus client ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        v["results"]["3"], "ok",
        "reads pass the read-only conduit: {v}"
    );
    for code in ["6", "16"] {
        assert_eq!(
            v["results"][code], "no_answer",
            "write {code} is dropped: {v}"
        );
    }
    let after_writes = r.metrics();
    let delta = modbus_drops(&after_writes) - modbus_drops(&before);
    assert!(delta >= 2.0, "modbus_function drops on hmi-to-plc: {delta}");
    assert_eq!(
        dropped(&after_writes, "supervisory", "control", "modbus_function")
            - dropped(&before, "supervisory", "control", "modbus_function"),
        delta,
        "the zone-pair counter agrees with the conduit's"
    );
    r.expect_audit(&[
        ("reason", "modbus_function".into()),
        ("verdict", "deny".into()),
        ("conduit", "hmi-to-plc".into()),
        ("dport", 502.into()),
        ("src_zone", "supervisory".into()),
        ("dst_zone", "control".into()),
    ]);
    // The same client, where no conduit allows it (tried at once, each waits its timeout).
    let (to_5020, from_office, from_engws) = std::thread::scope(|s| {
        let a = s.spawn(|| plant.modbus_read(Role::Hmi, &plc1, 5020, 3));
        let b = s.spawn(|| plant.modbus_read(Role::Office, &plc1, 502, 3));
        let c = s.spawn(|| plant.modbus_read(Role::EngWs, &plc2, 502, 3));
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    assert!(
        to_5020.is_err(),
        "hmi → plc-1 tcp/5020 (a Modbus server, but no conduit): {to_5020:?}"
    );
    assert!(
        from_office.is_err(),
        "office → plc-1 tcp/502 (enterprise has no conduit to control): {from_office:?}"
    );
    assert!(
        from_engws.is_err(),
        "eng-ws → plc-2 tcp/502 (hmi-to-plc is for the HMI only): {from_engws:?}"
    );
    let after = r.metrics();
    assert!(packets(&after, "hmi-to-plc") > packets(&before, "hmi-to-plc"));
    for (src, n) in [("supervisory", 2.0), ("enterprise", 1.0)] {
        let delta = dropped(&after, src, "control", "no_conduit")
            - dropped(&before, src, "control", "no_conduit");
        assert!(delta >= n, "{src} → control no_conduit: {delta}");
    }
    r.expect_audit(&[
        ("verdict", "allow".into()),
        ("conduit", "hmi-to-plc".into()),
        ("src_ip", hmi.as_str().into()),
        ("dst_ip", plc2.as_str().into()),
        ("proto", "tcp".into()),
        ("dport", 502.into()),
    ]);
    for (src, dport, src_zone, iface) in [
        (&hmi, 5020, "supervisory", Role::Hmi),
        (&office, 502, "enterprise", Role::Office),
        (&engws, 502, "supervisory", Role::EngWs),
    ] {
        r.expect_audit(&[
            ("verdict", "deny".into()),
            ("reason", "no_conduit".into()),
            ("conduit", Value::Null),
            ("src_ip", src.as_str().into()),
            ("dport", dport.into()),
            ("proto", "tcp".into()),
            ("src_zone", src_zone.into()),
            ("dst_zone", "control".into()),
            ("interface", port_of(iface)),
        ]);
    }

    // ---- 3. Denied flows: enterprise to a PLC, a port scan, intra-zone, UDP. ----------------
    let before = r.metrics();
    let scan: [u16; 10] = [21, 22, 23, 80, 102, 443, 502, 5020, 8080, 44818];
    let (office_tcp, office_ping, scanned, udp, intra) = std::thread::scope(|s| {
        let a = s.spawn(|| plant.tcp_connects(Role::Office, &plc1, &[502, 102]));
        let b = s.spawn(|| plant.ping(Role::Office, &plc1, 2));
        let c = s.spawn(|| plant.tcp_connects(Role::Outsider, &plc1, &scan));
        let d = s.spawn(|| plant.udp_exchange(Role::EngWs, &plc1, 161, "get"));
        let e = s.spawn(|| plant.ping(Role::Plc2, &plc1, 2));
        (
            a.join().unwrap(),
            b.join().unwrap(),
            c.join().unwrap(),
            d.join().unwrap(),
            e.join().unwrap(),
        )
    });
    assert_eq!(
        office_tcp,
        [false, false],
        "office → plc-1 tcp/502, tcp/102"
    );
    assert!(!office_ping, "office → plc-1 ping");
    assert_eq!(scanned, [false; 10], "outsider → plc-1: {scan:?}");
    assert_eq!(udp, None, "eng-ws → plc-1 udp/161");
    assert!(!intra, "plc-2 → plc-1 ping (control: intra_zone deny)");
    let after = r.metrics();
    for (src, dst, n) in [
        // Two SYNs and two echo requests at least.
        ("enterprise", "control", 4.0),
        // One SYN per scanned port at least.
        ("unknown", "control", scan.len() as f64),
        ("supervisory", "control", 1.0),
        ("control", "control", 2.0),
    ] {
        let delta =
            dropped(&after, src, dst, "no_conduit") - dropped(&before, src, dst, "no_conduit");
        assert!(delta >= n, "{src} → {dst} no_conduit: {delta}, want ≥ {n}");
    }
    for p in scan {
        r.expect_audit(&[
            ("verdict", "deny".into()),
            ("reason", "no_conduit".into()),
            ("src_zone", "unknown".into()),
            ("dst_zone", "control".into()),
            ("src_ip", outsider.as_str().into()),
            ("dst_ip", plc1.as_str().into()),
            ("proto", "tcp".into()),
            ("dport", p.into()),
            ("interface", port_of(Role::Outsider)),
        ]);
    }
    r.expect_audit(&[
        ("verdict", "deny".into()),
        ("reason", "no_conduit".into()),
        ("src_zone", "control".into()),
        ("dst_zone", "control".into()),
        ("src_ip", plc2.as_str().into()),
        ("proto", "icmp".into()),
    ]);
    r.expect_audit(&[
        ("verdict", "deny".into()),
        ("src_ip", engws.as_str().into()),
        ("proto", "udp".into()),
        ("dport", 161.into()),
    ]);

    // ---- 4. MAC spoofing: a compromised engineering workstation forges the HMI. ------------
    let before = r.metrics();
    let cap = plant.capture(
        Role::Plc1,
        "tcp dst port 502 and (src port 40502 or src port 40503 or src port 40504)",
    );
    let engws_h = plant.host(Role::EngWs);
    let hmi_h = plant.host(Role::Hmi);
    let next_hop = plant.next_hop_mac(Role::EngWs, Role::Plc1);
    plant.scapy_send(
        Role::EngWs,
        &format!(
            "[Ether(src='{engws_mac}', dst='{next_hop}')/IP(src='{hmi}', dst='{plc1}')/TCP(sport=40502, dport=502, flags='S'),
              Ether(src='{hmi_mac}', dst='{next_hop}')/IP(src='{engws}', dst='{plc1}')/TCP(sport=40503, dport=502, flags='S')]",
            engws_mac = engws_h.mac,
            hmi_mac = hmi_h.mac,
        ),
        3,
    );
    // The real HMI, same kind of SYN: what the capture would have seen.
    assert_eq!(
        plant
            .run(
                Role::Hmi,
                &["nc", "-z", "-w", "1", "-p", "40504", &plc1, "502"]
            )
            .status
            .code(),
        Some(0)
    );
    let seen = cap.stop();
    let from_port = |p: &str| {
        seen.iter()
            .filter(|l| l.contains(&format!(".{p} >")))
            .count()
    };
    assert!(from_port("40504") >= 1, "the capture works: {seen:?}");
    assert_eq!(
        (from_port("40502"), from_port("40503")),
        (0, 0),
        "no forged frame reached plc-1: {seen:?}"
    );
    let after = r.metrics();
    let delta = dropped(&after, "supervisory", "control", "spoofed")
        - dropped(&before, "supervisory", "control", "spoofed");
    assert!(delta >= 6.0, "spoofed drops: {delta}, want ≥ 6");
    for src in [&hmi, &engws] {
        r.expect_audit(&[
            ("verdict", "deny".into()),
            ("reason", "spoofed".into()),
            ("src_zone", "supervisory".into()),
            ("dst_zone", "control".into()),
            ("src_ip", src.as_str().into()),
            ("dst_ip", plc1.as_str().into()),
            ("dport", 502.into()),
            ("interface", port_of(Role::EngWs)),
        ]);
    }

    // ---- 4b. A forged source from the wrong side: a compromised PLC 2 sends "office LAN to
    // office" frames (an enterprise address, from a MAC no asset binds). Judged by address alone,
    // that is enterprise-to-enterprise traffic, allowed within the zone and forwarded into
    // the office network. The routed gateway knows from its routing table that the office
    // LAN is not behind the control bridge; the transparent bridge knows from the zones'
    // `interfaces`. --------------------------------------------------------------------------
    let before = r.metrics();
    let forged = plant.unused_ip(Role::Office);
    let cap = plant.capture(Role::Office, "udp port 9999 or icmp");
    // From a MAC that no asset binds (PLC 2's own is bound to its address: the binding
    // would catch it).
    plant.scapy_send(
        Role::Plc2,
        &format!(
            "Ether(src='02:00:00:99:99:98', dst='{next_hop}')/IP(src='{forged}', dst='{office}')/UDP(sport=9999, dport=9999)/Raw(b'x')",
            next_hop = plant.next_hop_mac(Role::Plc2, Role::Office),
        ),
        3,
    );
    // The capture sees what reaches the office: the historian's echo replies do.
    assert!(
        plant.ping(Role::Office, &historian, 1),
        "office → historian ping"
    );
    let seen = cap.stop();
    assert!(
        seen.iter().any(|l| l.contains("echo reply")),
        "the capture works: {seen:?}"
    );
    assert!(
        !seen.iter().any(|l| l.contains(".9999 >")),
        "a forged enterprise frame reached the office: {seen:?}"
    );
    let after = r.metrics();
    let delta = dropped(&after, "enterprise", "enterprise", "spoofed")
        - dropped(&before, "enterprise", "enterprise", "spoofed");
    assert!(delta >= 3.0, "spoofed drops: {delta}, want ≥ 3");
    r.expect_audit(&[
        ("verdict", "deny".into()),
        ("reason", "spoofed".into()),
        ("src_zone", "enterprise".into()),
        ("dst_zone", "enterprise".into()),
        ("src_ip", forged.as_str().into()),
        ("interface", port_of(Role::Plc2)),
    ]);

    // ---- 5. ARP poisoning: a compromised PLC 2 claims PLC 1's address. ----------------------
    // The neighbour that talks to PLC 1 at layer 2: the gateway (routed) or the HMI (bridge).
    let (victim, victim_ip, victim_mac) = plant.arp_neighbour(Role::Plc1, Role::Hmi);
    let plc1_mac = plant.host(Role::Plc1).mac.clone();
    let plc2_mac = plant.host(Role::Plc2).mac.clone();
    assert!(
        Plant::neigh(victim, &plc1).contains(&plc1_mac),
        "the victim knows plc-1: {}",
        Plant::neigh(victim, &plc1)
    );
    let unused = plant.unused_ip(Role::Plc2);
    // A MAC that no asset is bound to (a bound MAC claiming any other address is arp_spoof).
    let stranger = "02:00:00:99:99:99";
    let before = r.metrics();
    plant.scapy_send(
        Role::Plc2,
        &format!(
            "[Ether(src='{plc2_mac}', dst='ff:ff:ff:ff:ff:ff')/ARP(op=1, psrc='{plc1}', hwsrc='{plc2_mac}', pdst='{victim_ip}'),
              Ether(src='{plc2_mac}', dst='{victim_mac}')/ARP(op=2, psrc='{plc1}', hwsrc='{plc2_mac}', pdst='{victim_ip}', hwdst='{victim_mac}'),
              Ether(src='{plc2_mac}', dst='ff:ff:ff:ff:ff:ff')/ARP(op=2, psrc='{plc1}', hwsrc='{plc2_mac}', pdst='{plc1}', hwdst='ff:ff:ff:ff:ff:ff'),
              Ether(src='{stranger}', dst='ff:ff:ff:ff:ff:ff')/ARP(op=1, psrc='{unused}', hwsrc='{stranger}', pdst='{victim_ip}')]"
        ),
        3,
    );
    sleep(Duration::from_millis(300));
    // The same kind of frame for an address nobody binds, from a MAC nobody binds, passes and
    // is learnt: the forgeries would have been too.
    let control = Plant::neigh(victim, &unused);
    assert!(
        control.contains(stranger),
        "an ARP request for an unbound address reaches the victim: {control:?}"
    );
    let entry = Plant::neigh(victim, &plc1);
    assert!(
        !entry.contains(&plc2_mac),
        "the victim's ARP cache was poisoned: {entry}"
    );
    assert!(entry.contains(&plc1_mac), "plc-1's entry: {entry}");
    let after = r.metrics();
    let sum = |m: &Metrics| m.sum(DROPPED, &[("src_zone", "control"), ("reason", "arp_spoof")]);
    let delta = sum(&after) - sum(&before);
    assert!(delta >= 9.0, "arp_spoof drops: {delta}, want ≥ 9");
    r.expect_audit(&[
        ("verdict", "deny".into()),
        ("reason", "arp_spoof".into()),
        ("proto", "arp".into()),
        ("sport", Value::Null),
        ("dport", Value::Null),
        ("src_zone", "control".into()),
        ("src_ip", plc1.as_str().into()),
        ("dst_ip", victim_ip.as_str().into()),
        ("interface", port_of(Role::Plc2)),
    ]);
    // The plant still works after the attacks.
    assert_eq!(
        plant.modbus_read(Role::Hmi, &plc1, 502, 3),
        Ok(plc1_regs.to_vec()),
        "the HMI still reads plc-1"
    );

    // The audit log is the plant's traffic only: every line is IPv4 and names a known zone
    // (no stray IPv6 chatter), and every denial was counted.
    let lines = r.audit();
    for l in &lines {
        assert!(
            l["interface"].is_string() && !l["src_ip"].as_str().unwrap_or(":").contains(':'),
            "{l}"
        );
    }
    let m = r.metrics();
    assert_eq!(m.sum("conduit_audit_events_lost_total", &[]), 0.0);
    let mut attach_modes: Vec<&str> = m
        .samples
        .iter()
        .filter(|(n, _, _)| n == "conduit_interface_attached")
        .flat_map(|(_, labels, _)| labels.iter().filter(|(k, _)| k == "mode"))
        .map(|(_, v)| v.as_str())
        .collect();
    attach_modes.dedup();
    // ---- 6. The audit report (SPEC §6) of this plant, from the agent's pinned counters and
    // its audit log: it says what the metrics say, conduit by conduit and for the attacks.
    let out = std::process::Command::new(BIN)
        .arg("report")
        .arg(&agent.policy)
        .arg("--state-dir")
        .arg(&agent.state_dir)
        .arg("--audit-log")
        .arg(&agent.audit_log)
        .args(["--format", "json"])
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "conduit report: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["policy"]["live"][0]["matches"], true, "{}", v["policy"]);
    let m = r.metrics();
    for c in v["conduits"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        assert_eq!(
            c["packets"].as_f64(),
            Some(packets(&m, name)),
            "report vs metrics, conduit {name}"
        );
    }
    // The attacks, over every zone pair (the ARP victim's zone depends on the mode).
    for reason in ["spoofed", "arp_spoof"] {
        let got: f64 = v["matrix"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x["dropped"][reason].as_f64())
            .sum();
        let want = m.sum(DROPPED, &[("reason", reason)]);
        assert!(want > 0.0, "the plant saw {reason} drops");
        assert_eq!(got, want, "report vs metrics, {reason}");
    }
    // The zone register says how each zone is tied to where it is (anti-spoofing).
    let control = v["zones"]
        .as_array()
        .unwrap()
        .iter()
        .find(|z| z["name"] == "control")
        .unwrap();
    let want_ifaces: Vec<Value> = match mode {
        Mode::Routed => vec![],
        Mode::Bridge => {
            let mut ports = vec![
                plant.host(Role::Plc1).port.clone(),
                plant.host(Role::Plc2).port.clone(),
            ];
            ports.sort();
            ports.into_iter().map(Value::from).collect()
        }
    };
    assert_eq!(control["interfaces"], Value::from(want_ifaces), "{control}");
    assert_eq!(control["reverse_path"], "strict");
    let kinds: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["kind"].as_str())
        .collect();
    for k in ["spoofing", "unknown_traffic", "unused_conduit"] {
        assert!(kinds.contains(&k), "finding {k} missing: {kinds:?}");
    }

    eprintln!(
        "{mode:?}: XDP {attach_modes:?} on {} ports, {} audit lines, {} frames dropped, in {:.1} s",
        plant.ports().len(),
        lines.len(),
        m.sum(DROPPED, &[]),
        started.elapsed().as_secs_f64()
    );
    drop(agent);
}
