//! `conduit replay` on real captures: traffic between namespaces captured with tcpdump (pcap)
//! and tshark (pcapng) at once, decoded by tshark (the reference decoder), replayed through the
//! kernel program, and every first packet of a flow compared with `conduit explain` for the
//! same packet.
use std::{
    collections::HashSet,
    path::Path,
    process::{Command, Stdio},
    thread::sleep,
    time::Duration,
};

use conduit_tests::{
    Netns, VethPair,
    capture::{PcapWriter, replay_json, run_json, tshark_fields},
    require_root,
};

const BIN: &str = env!("CARGO_BIN_EXE_conduit");

const POLICY: &str = r#"
version: 1
site: replay
zones:
  - name: clients
    security_level: 1
    assets: [{ name: client, ip: 10.203.0.1 }]
  - name: servers
    security_level: 2
    assets: [{ name: server, ip: 10.203.0.2 }]
conduits:
  - name: web
    from: clients
    to: servers
    rules:
      - { proto: tcp, ports: [8080] }
      - { proto: udp, ports: [5000] }
  - name: ping
    from: clients
    to: servers
    rules: [{ proto: icmp, icmp_types: [echo-request] }]
"#;

#[test]
fn replay_of_a_real_capture_agrees_with_explain_and_tshark() {
    require_root();
    let client = Netns::new("cdtrc");
    let server = Netns::new("cdtrs");
    let veth = VethPair::new(&client, "10.203.0.1/24", &server, "10.203.0.2/24");
    let dir = std::env::temp_dir().join(conduit_tests::unique_name("cdtrp"));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("capture.pcap");
    let pcapng = dir.join("capture.pcapng");
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();

    // Capture on the server's side while real traffic flows (no policy attached: everything
    // reaches the server, so the capture holds allowed and denied flows alike).
    let dump = PcapWriter::start(&server, &veth.b, &pcap, "not ip6");
    let dump_ng = PcapWriter::start_pcapng(&server, &veth.b, &pcapng, "not ip6");
    let mut listeners = Vec::new();
    for port in ["8080", "9090"] {
        listeners.push(
            server
                .command("nc")
                .args(["-l", "-k", "-p", port])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    listeners.push(
        server
            .command("nc")
            .args(["-u", "-l", "-k", "-p", "5000"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for (proto, port) in [("tcp", 8080), ("tcp", 9090), ("udp", 5000)] {
        server.wait_listening(proto, port);
    }
    client.exec_ok(&["ping", "-c", "3", "-i", "0.1", "10.203.0.2"]);
    for port in ["8080", "9090"] {
        let _ = client
            .command("nc")
            .args(["-z", "-w", "1", "10.203.0.2", port])
            .status();
    }
    let _ = client
        .command("sh")
        .args([
            "-c",
            "echo hello | nc -u -w 1 10.203.0.2 5000; echo x | nc -u -w 1 10.203.0.2 5001",
        ])
        .status();
    sleep(Duration::from_millis(500));
    for mut l in listeners {
        conduit_tests::signal(l.id(), libc::SIGTERM);
        let _ = l.wait();
    }
    dump.stop();
    dump_ng.stop();

    let magic = |p: &Path| std::fs::read(p).unwrap()[..4].to_vec();
    assert_eq!(
        magic(&pcap),
        0xa1b2_c3d4u32.to_le_bytes(),
        "tcpdump writes pcap"
    );
    assert_eq!(
        magic(&pcapng),
        [0x0a, 0x0d, 0x0d, 0x0a],
        "tshark writes pcapng"
    );
    for capture in [&pcap, &pcapng] {
        agrees_with_explain_and_tshark(&policy, capture);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The replay of `pcap` has a verdict for every frame tshark decodes, and on every first
/// packet of a flow the verdict `explain` gives.
fn agrees_with_explain_and_tshark(policy: &Path, pcap: &Path) {
    let replay = replay_json(BIN, policy, pcap);
    let frames = replay["frames"].as_array().unwrap();
    assert!(
        frames.len() >= 15,
        "the capture has {} frames",
        frames.len()
    );
    let summary = &replay["summary"];
    assert_eq!(
        summary["allow"].as_u64().unwrap()
            + summary["deny"].as_u64().unwrap()
            + summary["would_deny"].as_u64().unwrap(),
        frames.len() as u64
    );

    // tshark decodes the same capture.
    let decoded = tshark_fields(
        pcap,
        &[
            "frame.number",
            "ip.src",
            "ip.dst",
            "ip.proto",
            "tcp.srcport",
            "tcp.dstport",
            "tcp.flags.syn",
            "tcp.flags.ack",
            "udp.srcport",
            "udp.dstport",
            "icmp.type",
        ],
    );
    assert_eq!(
        decoded.lines().count(),
        frames.len(),
        "{}: tshark and replay count the same frames",
        pcap.display()
    );
    let mut compared = 0;
    let mut seen_udp = HashSet::new();
    let mut replies = 0;
    let mut verdicts = std::collections::BTreeMap::new();
    for line in decoded.lines() {
        let f: Vec<&str> = line.split(',').collect();
        let n: usize = f[0].parse().unwrap();
        let verdict = &frames[n - 1];
        assert_eq!(verdict["frame"].as_u64(), Some(n as u64));
        if f[1].is_empty() {
            continue; // ARP
        }
        let (src, dst, proto) = (f[1], f[2], f[3]);
        let mut args: Vec<String> = vec!["--src".into(), src.into(), "--dst".into(), dst.into()];
        let first = match proto {
            "6" => {
                args.extend([
                    "--proto".into(),
                    "tcp".into(),
                    "--dport".into(),
                    f[5].into(),
                ]);
                f[6] == "1" && f[7] == "0"
            }
            "17" => {
                args.extend([
                    "--proto".into(),
                    "udp".into(),
                    "--dport".into(),
                    f[9].into(),
                ]);
                seen_udp.insert((src.to_owned(), f[8].to_owned(), f[9].to_owned()))
            }
            "1" => {
                args.extend([
                    "--proto".into(),
                    "icmp".into(),
                    "--icmp-type".into(),
                    f[10].into(),
                ]);
                f[10] == "8"
            }
            _ => false,
        };
        if verdict["reason"] == "reply" {
            replies += 1;
        }
        if !first {
            continue;
        }
        let explain = run_json(
            Command::new(BIN)
                .arg("explain")
                .arg(policy)
                .args(&args)
                .args(["--format", "json"]),
        );
        for k in ["verdict", "reason", "conduit"] {
            assert_eq!(
                verdict[k], explain[k],
                "frame {n} ({line}): {k}: replay {verdict} vs explain {explain}"
            );
        }
        compared += 1;
        *verdicts
            .entry(explain["verdict"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert!(compared >= 6, "only {compared} first packets compared");
    assert!(
        verdicts.get("allow").copied().unwrap_or(0) >= 4
            && verdicts.get("deny").copied().unwrap_or(0) >= 1,
        "{verdicts:?}"
    );
    assert!(
        replies >= 3,
        "replies of allowed flows pass as replies ({replies})"
    );
}

/// A capture that turns out truncated part way: the verdicts before the damage stand, then
/// one line names the file and the frame, exit 1; in JSON the document is whole, with the
/// error in place of the summary.
#[test]
fn a_capture_truncated_part_way_stops_there_and_says_where() {
    require_root();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/captures");
    let good = std::fs::read(root.join("corpus.pcap")).unwrap();
    let dir = std::env::temp_dir().join(conduit_tests::unique_name("cdtrt"));
    std::fs::create_dir_all(&dir).unwrap();
    let cut = dir.join("cut.pcap");
    std::fs::write(&cut, &good[..good.len() / 2]).unwrap();
    let policy = root.join("corpus.yaml");
    for format in ["text", "json"] {
        let o = Command::new(BIN)
            .arg("replay")
            .arg(&policy)
            .arg(&cut)
            .args(["--format", format])
            .output()
            .unwrap();
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert_eq!(o.status.code(), Some(1), "{format}: {err}");
        assert!(
            err.contains("cut.pcap") && err.contains("frame"),
            "{format}: the error names the file and the frame: {err}"
        );
        if format == "json" {
            let v: serde_json::Value = serde_json::from_str(&out)
                .unwrap_or_else(|e| panic!("one JSON document ({e}): {out}"));
            assert!(v["frames"].as_array().is_some_and(|f| !f.is_empty()), "{v}");
            assert!(v["summary"].is_null(), "{v}");
            assert!(
                v["error"].as_str().is_some_and(|e| e.contains("frame")),
                "{v}"
            );
        } else {
            assert!(out.lines().count() > 1 && !out.contains("frames:"), "{out}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
