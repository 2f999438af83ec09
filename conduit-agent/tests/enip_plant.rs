//! EtherNet/IP (CIP) inspection (SPEC §9, issue 18) with real traffic, as root: the real agent
//! on the plant harness (routed), a real CIP server (cpppo's Logix simulator) on PLC 1 and a
//! real client (pycomm3) on the HMI, both installed by `./xtask/bootstrap.sh`. Through a
//! conduit with `enip: { services: [read, connection] }` tag reads (connected and not) and
//! attribute reads, wrapped in Unconnected_Send too, get their answers; tag writes and the
//! Identity object's Reset get none, and are counted and logged with the protocol and the
//! service.
use conduit_tests::{
    agent::Agent,
    capture::{PcapWriter, explain_agrees, replay_json, tshark_all_fields},
    peers::{Peer, assert_results},
    plant::{Plant, Role},
    require_root, wait_for,
};

const BIN: &str = env!("CARGO_BIN_EXE_conduit");
const PORT: u16 = 44818;

/// `conduit replay` of the HMI's capture, frame by frame against tshark's enip and cip
/// dissectors and `conduit explain`: session commands pass; a CIP request passes when every
/// request it carries for execution (the one inside an Unconnected_Send or a Multiple Service
/// Packet) is allowed by `[read, connection]`, and is dropped (`enip_service`) otherwise;
/// a retransmission of a dropped request is dropped again.
fn replay_agrees_with_tshark_and_explain(a: &Agent, pcap: &std::path::Path) {
    use conduit_common::inspect::enip;
    let replay = replay_json(BIN, &a.policy, pcap);
    let frames = replay["frames"].as_array().unwrap();
    // Every occurrence of the CIP fields (an Unconnected_Send has two services and two
    // classes), joined by '/'.
    let fields = [
        "frame.number",
        "ip.src",
        "ip.dst",
        "tcp.dstport",
        "tcp.len",
        "enip.command",
        "cip.sc",
        "cip.class",
        "tcp.analysis.retransmission",
    ];
    let decoded = tshark_all_fields(pcap, &fields);
    let hex = |s: &str| u8::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    // tshark writes the aggregator as '/' or, escaped, as '\'.
    let list = |s: &str| -> Vec<u8> {
        s.split(['/', '\\'])
            .filter(|x| !x.is_empty())
            .map(hex)
            .collect()
    };
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    for line in decoded.lines() {
        let f: Vec<&str> = line.split(';').collect();
        let n: usize = f[0].parse().unwrap();
        let v = &frames[n - 1];
        let (src, dst, dport, len, command, resent) = (f[1], f[2], f[3], f[4], f[5], f[8]);
        if dport != "44818" || len == "0" {
            // The server's answers, as the HMI receives them: routed, from the gateway's
            // MAC, which the policy does not bind to PLC 1. The gateway judged them above.
            continue;
        }
        let what = format!("frame {n} ({line})");
        if command.is_empty() {
            // A retransmission of a dropped request, which tshark does not dissect again.
            assert!(
                !resent.is_empty(),
                "{what}: a request tshark did not decode"
            );
            assert_eq!(v["verdict"], "deny", "{what}: {v}");
            continue;
        }
        let command = u16::from_str_radix(command.trim_start_matches("0x"), 16).unwrap();
        if command != enip::SEND_RR_DATA && command != enip::SEND_UNIT_DATA {
            assert_eq!(v["reason"], "conduit", "{what}: {v}");
            *seen.entry(format!("command {command:#x}")).or_default() += 1;
            continue;
        }
        let (services, classes) = (list(f[6]), list(f[7]));
        // The request that is executed: the one an Unconnected_Send carries, else the first.
        let wrapped = services.len() == 2
            && services[0] == enip::UNCONNECTED_SEND
            && classes.first() == Some(&enip::CONNECTION_MANAGER_CLASS);
        let i = usize::from(wrapped);
        assert!(services.len() == i + 1, "{what}: one request expected");
        let cm = classes.get(i) == Some(&enip::CONNECTION_MANAGER_CLASS);
        let code = enip::code(services[i], cm);
        let allowed = enip::READ.contains(&code) || enip::CONNECTION.contains(&code);
        let expected = if allowed { "conduit" } else { "enip_service" };
        assert_eq!(v["reason"], expected, "{what}: {v}");
        *seen.entry(format!("{expected} {code:#04x}")).or_default() += 1;
        let service = format!("{:#04x}", services[i]);
        let mut request = vec!["--enip-service", service.as_str()];
        if cm {
            request.push("--enip-connection-manager");
        }
        explain_agrees(BIN, &a.policy, v, (src, dst, dport), &request, &what);
    }
    // Sessions, Large_Forward_Open and Forward_Close to the Connection Manager, Read Tag,
    // Get_Attribute_Single (alone and inside an Unconnected_Send) pass; Write Tag and Reset
    // are dropped.
    let why = format!("{seen:?}\ntshark:\n{decoded}");
    for key in [
        "command 0x65",
        "command 0x63",
        "conduit 0xdb",
        "conduit 0xce",
        "conduit 0x4c",
        "conduit 0x0e",
        "enip_service 0x4d",
        "enip_service 0x05",
    ] {
        assert!(seen.contains_key(key), "{key}: {why}");
    }
}

#[test]
fn a_read_only_enip_conduit_passes_reads_and_stops_writes() {
    require_root();
    let plant = Plant::new(conduit_tests::plant::Mode::Routed);
    let mut policy = plant.policy_yaml();
    // The plant's `engineering` conduit already allows 44818 from the engineering
    // workstation; this one is the HMI's, read-only.
    policy.push_str(
        "  - name: hmi-reads-tags
    from: supervisory
    to: control
    sources: [hmi-1]
    destinations: [plc-1]
    log: deny
    rules:
      - { proto: tcp, ports: [44818], enip: { services: [read, connection] } }
",
    );
    let a = Agent::start(BIN.as_ref(), &plant.gw, &plant.ports(), &policy, &[]);
    let plc1 = plant.ip(Role::Plc1).to_owned();
    let peer = Peer::new("enip");
    let port = PORT.to_string();
    let _server = peer.serve(&plant, Role::Plc1, "server.py", &["0.0.0.0", &port], PORT);
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("hmi.pcap");
    let hmi = plant.host(Role::Hmi);
    let dump = PcapWriter::start(&hmi.ns, &hmi.dev, &pcap, "tcp port 44818");
    // Each request that may be dropped in a session of its own: a dropped segment stalls its
    // TCP session (TCP sends it again and it is dropped again).
    for (reqs, want) in [
        (
            &[
                "list_identity",
                "read",
                "read_unconnected",
                "get_attr",
                "unconnected_send",
            ][..],
            "ok",
        ),
        (&["write"][..], "no_answer"),
        (&["reset"][..], "no_answer"),
        (&["read"][..], "ok"),
    ] {
        let mut args = vec![plc1.as_str(), port.as_str()];
        args.extend_from_slice(reqs);
        let got = peer.client(&plant, Role::Hmi, "client.py", &args);
        assert_results(&got, reqs, want, &a.audit_log);
    }
    dump.stop();
    replay_agrees_with_tshark_and_explain(&a, &pcap);

    let dropped = a
        .metric(
            &plant.gw,
            "conduit_inspection_dropped_packets_total{conduit=\"hmi-reads-tags\",reason=\"enip_service\"}",
        )
        .unwrap_or(0.0);
    assert!(dropped >= 2.0, "{dropped}");
    let mut seen = std::collections::BTreeSet::new();
    wait_for("the audit lines of the dropped requests", || {
        for line in std::fs::read_to_string(&a.audit_log)
            .unwrap_or_default()
            .lines()
        {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v["reason"] == "enip_service" {
                assert_eq!(v["conduit"], "hmi-reads-tags", "{v}");
                assert_eq!(v["protocol"], "enip", "{v}");
                seen.insert(v["service"].as_u64().unwrap());
            }
        }
        // Write Tag (0x4D) and Reset (0x05).
        seen.contains(&0x4D) && seen.contains(&0x05)
    });
    drop(a);
}
