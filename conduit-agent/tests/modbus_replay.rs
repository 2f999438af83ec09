//! `conduit replay` of a real Modbus/TCP capture (a pymodbus client and server in network
//! namespaces, captured with tcpdump) against a read-only conduit: for every request that
//! tshark's Modbus dissector decodes, the verdict follows from tshark's function code and
//! unit ID, and `conduit explain --modbus-function` agrees with replay frame by frame.
use std::{collections::BTreeMap, path::Path, process::Stdio, thread::sleep, time::Duration};

use conduit_common::inspect::modbus::READ;
use conduit_tests::{
    Netns, VethPair,
    capture::{PcapWriter, explain_agrees, replay_json, tshark_fields},
    require_root, unique_name,
};

const BIN: &str = env!("CARGO_BIN_EXE_conduit");

const POLICY: &str = r#"
version: 1
site: modbus-replay
zones:
  - name: supervisory
    security_level: 2
    assets: [{ name: hmi, ip: 10.204.0.1 }]
  - name: control
    security_level: 3
    assets: [{ name: plc, ip: 10.204.0.2, mac: "02:00:00:00:02:04" }]
conduits:
  - name: hmi-reads-plc
    from: supervisory
    to: control
    rules:
      - proto: tcp
        ports: [502]
        modbus: { functions: [read], unit_ids: [1] }
"#;

fn modbus_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/modbus")
}

#[test]
fn replay_of_real_modbus_traffic_agrees_with_tshark_and_explain() {
    require_root();
    let client = Netns::new("cdtmc");
    let server = Netns::new("cdtms");
    let veth = VethPair::new(&client, "10.204.0.1/24", &server, "10.204.0.2/24");
    // The PLC's MAC is bound in the policy.
    server.exec_ok(&[
        "ip",
        "link",
        "set",
        "dev",
        &veth.b,
        "address",
        "02:00:00:00:02:04",
    ]);
    let dir = std::env::temp_dir().join(unique_name("cdtmr"));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("modbus.pcap");
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();

    let dump = PcapWriter::start(&server, &veth.b, &pcap, "tcp port 502");
    let mut srv = server
        .command("/usr/bin/python3")
        .arg(modbus_dir().join("server.py"))
        .arg("10.204.0.2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pymodbus server");
    server.wait_listening("tcp", 502);
    sleep(Duration::from_millis(500));
    // No program attached: every request reaches the server and is answered, so the
    // capture holds what a read-only conduit must let through and what it must drop.
    for (unit, codes) in [("1", "3 1 2 4 6 16 5 15"), ("2", "3")] {
        let mut args = vec![
            modbus_dir().join("client.py").display().to_string(),
            "10.204.0.2".into(),
            unit.into(),
        ];
        args.extend(codes.split(' ').map(str::to_owned));
        let out = client
            .command("/usr/bin/python3")
            .args(&args)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "client: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        for (code, result) in v["results"].as_object().unwrap() {
            assert_eq!(
                result, "ok",
                "unfiltered request {code} to unit {unit}: {v}"
            );
        }
    }
    dump.stop();
    conduit_tests::signal(srv.id(), libc::SIGINT);
    let _ = srv.wait();

    let replay = replay_json(BIN, &policy, &pcap);
    let frames = replay["frames"].as_array().unwrap();
    let decoded = tshark_fields(
        &pcap,
        &[
            "frame.number",
            "ip.src",
            "ip.dst",
            "tcp.srcport",
            "tcp.dstport",
            "tcp.len",
            "mbtcp.unit_id",
            "modbus.func_code",
        ],
    );
    let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
    for line in decoded.lines() {
        let f: Vec<&str> = line.split(',').collect();
        let n: usize = f[0].parse().unwrap();
        let v = &frames[n - 1];
        assert_eq!(v["frame"].as_u64(), Some(n as u64));
        let (src, dst, dport, len, unit, fc) = (f[1], f[2], f[4], f[5], f[6], f[7]);
        if f[3] == "502" {
            // The server's answers are replies, never inspected.
            assert_eq!(v["reason"], "reply", "frame {n} ({line}): {v}");
            *seen.entry("reply").or_default() += 1;
            continue;
        }
        if fc.is_empty() {
            // Handshake, ACKs, FIN: no payload, nothing to inspect.
            assert_eq!(
                len, "0",
                "frame {n} ({line}) has payload tshark did not decode"
            );
            assert_eq!(v["verdict"], "allow", "frame {n} ({line}): {v}");
            continue;
        }
        let (unit, fc): (u8, u8) = (unit.parse().unwrap(), fc.parse().unwrap());
        let expected = if unit != 1 {
            "modbus_unit"
        } else if READ.contains(&fc) {
            "conduit"
        } else {
            "modbus_function"
        };
        assert_eq!(v["reason"], expected, "frame {n} ({line}): {v}");
        *seen.entry(expected).or_default() += 1;
        let (fc, unit) = (fc.to_string(), unit.to_string());
        explain_agrees(
            BIN,
            &policy,
            v,
            (src, dst, dport),
            &["--modbus-function", &fc, "--modbus-unit", &unit],
            &format!("frame {n} ({line})"),
        );
    }
    // 4 reads and 4 writes to unit 1, one read to unit 2 (and their answers).
    let why = format!("{seen:?}\ntshark:\n{decoded}");
    assert_eq!(seen.get("conduit"), Some(&4), "{why}");
    assert_eq!(seen.get("modbus_function"), Some(&4), "{why}");
    assert_eq!(seen.get("modbus_unit"), Some(&1), "{why}");
    assert!(seen.get("reply").copied().unwrap_or(0) >= 9, "{why}");
    std::fs::remove_dir_all(&dir).ok();
}
