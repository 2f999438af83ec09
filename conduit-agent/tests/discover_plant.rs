//! Discover on a real plant (issue #14), as root: the namespace plant (routed), real traffic
//! captured by tcpdump on every gateway port (pymodbus polling, Modbus programming, an S7-like
//! TCP exchange, NTP-like UDP, ping, a port scan), `conduit discover` over the capture, the
//! draft refused by the agent while `review: pending`, then reviewed and enforced by a real
//! agent: production traffic passes, the scan is dropped; and `conduit replay` of the capture
//! through the enforced draft: every frame of an answered flow allowed, every scan frame denied.
use std::{collections::BTreeSet, path::PathBuf, process::Command};

use conduit_tests::{
    agent::Agent,
    capture::{PcapWriter, replay_json, run_json, tshark_fields},
    plant::{Metrics, Mode, PYTHON, Plant, Role},
    require_root, unique_name,
};

const BIN: &str = env!("CARGO_BIN_EXE_conduit");

/// One Modbus request with function `f` (90: Schneider UMAS, programming) over a raw socket;
/// prints what came back (a pymodbus server answers an exception: answered all the same).
const RAW_MODBUS_PY: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], 502), timeout=2)
s.sendall(bytes([0, 1, 0, 0, 0, 2, 1, int(sys.argv[2])]))
print(s.recv(256).hex())
s.close()
"#;

fn raw_modbus(plant: &Plant, from: Role, to: &str, f: u8) -> bool {
    let out = plant.run(from, &[PYTHON, "-c", RAW_MODBUS_PY, to, &f.to_string()]);
    out.status.success() && !out.stdout.is_empty()
}

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The lines of a draft's section (`zones:` or `conduits:`) without its comments (the
/// evidence, whose counts differ between sources), up to the next top-level key.
fn policy_lines(draft: &str, section: &str) -> Vec<String> {
    let start = draft
        .find(&format!("\n{section}"))
        .unwrap_or_else(|| panic!("no {section} in\n{draft}"));
    draft[start + 1..]
        .lines()
        .enumerate()
        .take_while(|(i, l)| *i == 0 || !l.starts_with(|c: char| c.is_ascii_alphabetic()))
        .map(|(_, l)| l.split(" #").next().unwrap_or("").trim_end().to_owned())
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect()
}

fn dropped(m: &Metrics) -> f64 {
    m.sum("conduit_dropped_packets_total", &[("reason", "no_conduit")])
}

#[test]
fn discover_a_plant_review_and_enforce_the_draft() {
    require_root();
    let dir = Dir(std::env::temp_dir().join(unique_name("cdisc")));
    std::fs::create_dir_all(&dir.0).unwrap();
    let d = &dir.0;
    let plant = Plant::new(Mode::Routed);
    let ip = |r| plant.ip(r).to_owned();
    let (plc1, plc2, hmi, historian, outsider) = (
        ip(Role::Plc1),
        ip(Role::Plc2),
        ip(Role::Hmi),
        ip(Role::Historian),
        ip(Role::Outsider),
    );

    // ---- 1. Learn and capture the plant at work ------------------------------------------
    // An agent in monitor mode with nothing but `policies/learn.yaml` learns (`--learn-dir`)
    // while tcpdump captures, so the two sources see the same traffic. Two runs into two learn
    // dirs (two gateways' worth), and a third into the first again (a restart continues it).
    let learn_policy = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/learn.yaml"
    ))
    .unwrap();
    let (learn_a, learn_b) = (d.join("learn-a"), d.join("learn-b"));
    let learner = |dir: &std::path::Path| {
        let dir = dir.to_str().unwrap();
        let extra = ["--learn-dir", dir, "--learn-interval", "1"];
        Agent::start(
            BIN.as_ref(),
            &plant.gw,
            &plant.ports(),
            &learn_policy,
            &extra,
        )
    };
    let s1 = plant
        .serve(Role::Plc1, &[502], &[102], &[123], &[11, 22, 33])
        .ready();
    let s2 = plant.serve(Role::Plc2, &[502], &[], &[], &[44]).ready();
    // On every gateway port, what its host sent (so every frame carries its sender's MAC),
    // merged in time order afterwards: the gateway sees both directions of every flow.
    let mut files = Vec::new();
    let mut writers = Vec::new();
    for h in &plant.hosts {
        let f = d.join(format!("{}.pcap", h.port));
        writers.push(PcapWriter::start(
            &plant.gw,
            &h.port,
            &f,
            &format!("ether src {}", h.mac),
        ));
        files.push(f);
    }
    let agent = learner(&learn_a);
    for _ in 0..2 {
        assert_eq!(
            plant.modbus_read(Role::Hmi, &plc1, 502, 3),
            Ok(vec![11, 22, 33])
        );
    }
    assert!(
        raw_modbus(&plant, Role::EngWs, &plc1, 90),
        "programming request answered"
    );
    assert_eq!(
        plant.tcp_connects(Role::EngWs, &plc1, &[102]),
        [true],
        "S7-like exchange"
    );
    assert!(
        plant.udp_exchange(Role::Hmi, &plc1, 123, "time?").is_some(),
        "NTP-like UDP"
    );
    // The scan: refused ports of PLC 1.
    let scanned = [21u16, 22, 23, 80, 8080];
    assert!(
        plant
            .tcp_connects(Role::Outsider, &plc1, &scanned)
            .iter()
            .all(|ok| !ok)
    );
    // The agent drains every second: /metrics counts the records, and nothing was dropped.
    let ms = std::time::Duration::from_millis;
    let counted = conduit_tests::poll(ms(10_000), ms(200), || {
        agent
            .metric(&plant.gw, "conduit_learn_records")
            .unwrap_or(0.0)
            >= 6.0
    });
    assert!(counted.is_some(), "{}", agent.log_text());
    for store in ["kernel", "disk"] {
        let m = format!("conduit_learn_dropped_total{{store=\"{store}\"}}");
        assert_eq!(agent.metric(&plant.gw, &m), Some(0.0), "{m}");
    }
    drop(agent);
    let agent = learner(&learn_b);
    assert_eq!(plant.modbus_read(Role::Hmi, &plc2, 502, 1), Ok(vec![44]));
    assert!(plant.ping(Role::Office, &historian, 2));
    // The HMI trying S7 on PLC 2, where nothing listens: refused.
    assert_eq!(plant.tcp_connects(Role::Hmi, &plc2, &[102]), [false]);
    drop(agent);
    let polls = |dir: &std::path::Path| {
        let text = std::fs::read_to_string(dir.join("learned.jsonl")).unwrap();
        let needle =
            format!("\"client\":\"{hmi}\",\"server\":\"{plc1}\",\"proto\":6,\"port\":502,");
        let line = text
            .lines()
            .find(|l| l.contains(&needle))
            .unwrap_or_else(|| panic!("{text}"));
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["flows"].as_u64().unwrap()
    };
    assert_eq!(polls(&learn_a), 2);
    let agent = learner(&learn_a);
    assert_eq!(
        plant.modbus_read(Role::Hmi, &plc1, 502, 3),
        Ok(vec![11, 22, 33])
    );
    drop(agent);
    assert_eq!(
        polls(&learn_a),
        3,
        "the restarted agent continued the learn dir"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(writers);
    drop((s1, s2));
    let merged = d.join("plant.pcap");
    let out = Command::new("mergecap")
        .arg("-F")
        .arg("pcap")
        .arg("-w")
        .arg(&merged)
        .args(&files)
        .output()
        .expect("mergecap");
    assert!(
        out.status.success(),
        "mergecap: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // ---- 2. Discover -----------------------------------------------------------------------
    let draft = d.join("draft.yaml");
    let j = run_json(
        Command::new(BIN)
            .arg("discover")
            .arg("--pcap")
            .arg(&merged)
            .arg("-o")
            .arg(&draft)
            .args(["--format", "json"]),
    );
    let text = std::fs::read_to_string(&draft).unwrap();
    // HMI→PLC1 502, HMI→PLC2 502, ENG→PLC1 502 and 102, HMI→PLC1 udp/123, office→historian ping.
    assert_eq!(j["flows"]["answered"], 6, "{j}\n{text}");
    assert!(j["flows"]["unanswered"].as_u64().unwrap() >= 6, "{j}");
    assert_eq!(j["draft_allows"], j["flows"]["answered"]);
    assert_eq!(j["draft_denies"], j["flows"]["unanswered"]);
    assert!(text.contains("-programming"), "{text}");
    assert!(
        text.contains("modbus: { functions: [programming], unit_ids: [1] }"),
        "{text}"
    );
    assert!(text.contains("modbus: { functions: [read]"), "{text}");
    for h in [Role::Hmi, Role::EngWs, Role::Plc1, Role::Plc2] {
        let host = plant.host(h);
        assert!(
            text.contains(&format!("ip: {}, mac: \"{}\" }}", host.ip, host.mac)),
            "{h:?} bound to its MAC:\n{text}"
        );
    }
    // The same capture, the same draft, byte for byte.
    let again = d.join("again.yaml");
    run_json(
        Command::new(BIN)
            .arg("discover")
            .arg("--pcap")
            .arg(&merged)
            .arg("-o")
            .arg(&again)
            .args(["--format", "json"]),
    );
    assert_eq!(std::fs::read(&again).unwrap(), text.as_bytes());

    // ---- 2b. The same plant from the agents' learn dirs: the same conduits and bindings ----
    let learned = d.join("learned.yaml");
    let jl = run_json(
        Command::new(BIN)
            .arg("discover")
            .arg("--learned")
            .arg(&learn_a)
            .arg("--learned")
            .arg(&learn_b)
            .arg("-o")
            .arg(&learned)
            .args(["--format", "json"]),
    );
    let ltext = std::fs::read_to_string(&learned).unwrap();
    for k in [
        "hosts",
        "zones",
        "conduits",
        "flows",
        "draft_allows",
        "draft_denies",
    ] {
        assert_eq!(jl[k], j[k], "{k}: learn dirs {jl}, capture {j}\n{ltext}");
    }
    assert_eq!(
        policy_lines(&ltext, "conduits:"),
        policy_lines(&text, "conduits:"),
        "the conduits from the learn dirs and from the capture\n{ltext}\n{text}"
    );
    assert_eq!(
        policy_lines(&ltext, "zones:"),
        policy_lines(&text, "zones:"),
        "the zones and assets (MAC bindings) from the learn dirs and from the capture"
    );

    // ---- 3. The agent refuses to enforce what nobody reviewed ------------------------------
    let pending = text.replace("  mode: monitor\n", "  mode: enforce\n");
    let mut refused = Agent::launch(BIN.as_ref(), &plant.gw, &plant.ports(), &pending, &[]);
    assert_eq!(refused.wait(), Some(1), "{}", refused.log_text());
    let log = refused.log_text();
    assert!(
        log.contains("is still `review: pending` and would be enforced"),
        "{log}"
    );
    drop(refused);

    // ---- 4. Reviewed and enforced -----------------------------------------------------------
    let enforced = pending.replace("review: pending", "review: done");
    let agent = Agent::start(BIN.as_ref(), &plant.gw, &plant.ports(), &enforced, &[]);
    // Services again, plus listeners the scan would now find open without the policy.
    let _s1 = plant
        .serve(
            Role::Plc1,
            &[502],
            &[102, 21, 23, 8080],
            &[123],
            &[11, 22, 33],
        )
        .ready();
    let _s2 = plant.serve(Role::Plc2, &[502], &[102], &[], &[44]).ready();
    assert_eq!(
        plant.modbus_read(Role::Hmi, &plc1, 502, 3),
        Ok(vec![11, 22, 33])
    );
    assert_eq!(plant.modbus_read(Role::Hmi, &plc2, 502, 1), Ok(vec![44]));
    assert!(
        raw_modbus(&plant, Role::EngWs, &plc1, 90),
        "programming still works for the workstation"
    );
    assert_eq!(plant.tcp_connects(Role::EngWs, &plc1, &[102]), [true]);
    assert!(plant.udp_exchange(Role::Hmi, &plc1, 123, "time?").is_some());
    assert!(plant.ping(Role::Office, &historian, 2));
    let before = dropped(&Metrics::parse(
        &agent.get(&plant.gw, "/metrics").unwrap().1,
    ));
    // The scan, now against open ports: dropped.
    assert!(
        plant
            .tcp_connects(Role::Outsider, &plc1, &[21, 23, 8080])
            .iter()
            .all(|ok| !ok)
    );
    assert_eq!(
        plant.tcp_connects(Role::Hmi, &plc2, &[102]),
        [false],
        "never seen answered"
    );
    assert_eq!(
        plant.tcp_connects(Role::Hmi, &plc1, &[102]),
        [false],
        "only the workstation opened 102"
    );
    // The workstation may program, not read (it never read); the HMI may read, not program.
    assert!(plant.modbus_read(Role::EngWs, &plc1, 502, 1).is_err());
    assert!(!raw_modbus(&plant, Role::Hmi, &plc1, 90));
    let after = dropped(&Metrics::parse(
        &agent.get(&plant.gw, "/metrics").unwrap().1,
    ));
    assert!(after - before >= 5.0, "drops counted: {before} -> {after}");
    drop(agent);

    // ---- 5. Replay the capture through the enforced draft -----------------------------------
    let enforced_path = d.join("enforced.yaml");
    std::fs::write(&enforced_path, &enforced).unwrap();
    let replay = replay_json(BIN, &enforced_path, &merged);
    let frames = replay["frames"].as_array().unwrap();
    let fields = tshark_fields(&merged, &["ip.src", "ip.dst", "tcp.srcport", "tcp.dstport"]);
    let scan_ports: BTreeSet<String> = scanned.iter().map(u16::to_string).collect();
    let (mut answered, mut scan) = (0, 0);
    for (i, line) in fields.lines().enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        if f[0].is_empty() {
            continue; // ARP
        }
        let v = &frames[i];
        assert_eq!(v["frame"], i + 1);
        let is_scan = f[0] == outsider
            || f[1] == outsider
            || ((f[0] == hmi && f[1] == plc2 || f[0] == plc2 && f[1] == hmi)
                && (f[2] == "102" || f[3] == "102"));
        if is_scan {
            scan += 1;
            assert_eq!(v["verdict"], "deny", "scan frame {}: {line}: {v}", i + 1);
            if f[0] == outsider {
                assert!(scan_ports.contains(f[3]), "{line}");
            }
        } else {
            answered += 1;
            assert_eq!(
                v["verdict"],
                "allow",
                "frame {} of an answered flow: {line}: {v}",
                i + 1
            );
        }
    }
    assert!(
        answered >= 40 && scan >= 12,
        "answered {answered}, scan {scan}"
    );
}
