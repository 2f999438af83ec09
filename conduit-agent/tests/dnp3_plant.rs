//! DNP3 inspection (SPEC §9, issue 18) with real traffic, as root: the real agent on the
//! plant harness (routed), a real DNP3 outstation (opendnp3, through the `yadnp3` binding that
//! `./xtask/bootstrap.sh` installs) on PLC 1 and a real master on the HMI. Through a
//! conduit with `dnp3: { functions: [read, unsolicited], outstations: [10] }` the master's
//! integrity polls get their answers; its write, direct operate, select-before-operate and
//! cold restart get none, are counted per conduit and reason, and are logged with the
//! protocol, the function code and the outstation. The HMI's traffic, captured as it
//! leaves the HMI, is then replayed: every request tshark's DNP3 dissector decodes gets the
//! verdict its function code calls for, and `conduit explain --dnp3-function` agrees with
//! `conduit replay` frame by frame.
use conduit_tests::{
    agent::Agent,
    capture::{PcapWriter, explain_agrees, replay_json, tshark_fields},
    peers::{Peer, assert_results},
    plant::{Plant, Role},
    require_root, wait_for,
};

const BIN: &str = env!("CARGO_BIN_EXE_conduit");
const PORT: u16 = 20000;
const OUTSTATION: &str = "10";

#[test]
fn a_read_only_dnp3_conduit_passes_polls_and_stops_commands() {
    require_root();
    let plant = Plant::new(conduit_tests::plant::Mode::Routed);
    let mut policy = plant.policy_yaml();
    policy.push_str(
        "  - name: scada-dnp3
    from: supervisory
    to: control
    sources: [hmi-1]
    destinations: [plc-1]
    log: deny
    rules:
      - { proto: tcp, ports: [20000], dnp3: { functions: [read, unsolicited], outstations: [10] } }
",
    );
    let a = Agent::start(BIN.as_ref(), &plant.gw, &plant.ports(), &policy, &[]);
    let plc1 = plant.ip(Role::Plc1).to_owned();
    let peer = Peer::new("dnp3");
    let _outstation = peer.serve(
        &plant,
        Role::Plc1,
        "outstation.py",
        &["0.0.0.0", &PORT.to_string(), OUTSTATION],
        PORT,
    );
    let master = |reqs: &[&str]| -> serde_json::Value {
        let port = PORT.to_string();
        let mut args = vec![plc1.as_str(), port.as_str(), OUTSTATION, "1"];
        args.extend_from_slice(reqs);
        peer.client(&plant, Role::Hmi, "master.py", &args)
    };
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("hmi.pcap");
    let hmi = plant.host(Role::Hmi);
    let dump = PcapWriter::start(&hmi.ns, &hmi.dev, &pcap, "tcp port 20000");
    // Each request in a session of its own: a dropped segment stalls its TCP session (TCP
    // sends it again and it is dropped again, as any data dropped mid-stream).
    for (req, want) in [
        ("read", "ok"),
        ("operate", "no_answer"),
        ("cold_restart", "no_answer"),
        ("write", "no_answer"),
        ("select_operate", "no_answer"),
        ("read", "ok"),
    ] {
        assert_results(&master(&[req]), &[req], want, &a.audit_log);
    }

    dump.stop();
    replay_agrees_with_tshark_and_explain(&a, &pcap);

    // Counted per conduit and reason (the master may send a dropped request more than once).
    let dropped = |reason: &str| {
        a.metric(
            &plant.gw,
            &format!(
                "conduit_inspection_dropped_packets_total{{conduit=\"scada-dnp3\",reason=\"{reason}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    assert!(
        dropped("dnp3_function") >= 4.0,
        "{}",
        dropped("dnp3_function")
    );
    // Logged with the protocol, the function and the outstation.
    let mut seen = std::collections::BTreeSet::new();
    wait_for("the audit lines of the dropped requests", || {
        for line in std::fs::read_to_string(&a.audit_log)
            .unwrap_or_default()
            .lines()
        {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v["reason"] == "dnp3_function" {
                assert_eq!(v["conduit"], "scada-dnp3", "{v}");
                assert_eq!(v["protocol"], "dnp3", "{v}");
                assert_eq!(v["outstation"], 10, "{v}");
                assert_eq!(v["dport"], PORT, "{v}");
                seen.insert(v["function"].as_u64().unwrap());
            }
        }
        // Write (2), select (3), direct operate (5), cold restart (13); operate (4) never
        // goes out, its select got no answer.
        [2, 3, 5, 13].iter().all(|f| seen.contains(f))
    });
    drop(a);
}

/// `conduit replay` of the HMI's capture: requests tshark decodes get the verdict their
/// function code calls for, the same as `conduit explain` gives.
fn replay_agrees_with_tshark_and_explain(a: &Agent, pcap: &std::path::Path) {
    let replay = replay_json(BIN, &a.policy, pcap);
    let frames = replay["frames"].as_array().unwrap();
    let fields = [
        "frame.number",
        "ip.src",
        "ip.dst",
        "tcp.dstport",
        "tcp.len",
        "dnp3.dst",
        "dnp3.al.func",
        "tcp.analysis.retransmission",
    ];
    let decoded = tshark_fields(pcap, &fields);
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    for line in decoded.lines() {
        let f: Vec<&str> = line.split(',').collect();
        let n: usize = f[0].parse().unwrap();
        let v = &frames[n - 1];
        let (src, dst, dport, len, outstation, function, resent) =
            (f[1], f[2], f[3], f[4], f[5], f[6], f[7]);
        if dport != "20000" {
            // The outstation's answers, as the HMI receives them: routed, from the gateway's
            // MAC, which the policy does not bind to PLC 1. The gateway judged them above.
            continue;
        }
        if len == "0" {
            continue;
        }
        if function.is_empty() {
            // A retransmission of a dropped request: tshark does not dissect it again (the
            // first copy was checked below). It must be dropped again, never passed.
            assert!(
                !resent.is_empty(),
                "frame {n} ({line}): a request tshark did not decode"
            );
            assert_eq!(v["verdict"], "deny", "frame {n} ({line}): {v}");
            continue;
        }
        let code: u8 = function.parse().unwrap();
        let expected = if [0, 1, 20, 21, 22].contains(&code) {
            "conduit"
        } else {
            "dnp3_function"
        };
        assert_eq!(v["reason"], expected, "frame {n} ({line}): {v}");
        *seen.entry(format!("{expected} {code}")).or_default() += 1;
        explain_agrees(
            BIN,
            &a.policy,
            v,
            (src, dst, dport),
            &["--dnp3-function", function, "--dnp3-outstation", outstation],
            &format!("frame {n} ({line})"),
        );
    }
    // Reads allowed; write (2), select (3), direct operate (5), cold restart (13) dropped.
    let why = format!("{seen:?}\ntshark:\n{decoded}");
    for key in [
        "conduit 1",
        "dnp3_function 2",
        "dnp3_function 3",
        "dnp3_function 5",
        "dnp3_function 13",
    ] {
        assert!(seen.contains_key(key), "{key}: {why}");
    }
}
