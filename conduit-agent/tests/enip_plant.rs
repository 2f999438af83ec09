//! EtherNet/IP (CIP) inspection (SPEC §9, issue 18) with real traffic, as root: the real agent
//! on the plant harness (routed), a real CIP server (cpppo's Logix simulator) on PLC 1 and a
//! real client (pycomm3) on the HMI, both installed by `./xtask/bootstrap.sh`. Through a
//! conduit with `enip: { services: [read, connection] }` tag reads (connected and not) and
//! attribute reads, wrapped in Unconnected_Send too, get their answers; tag writes and the
//! Identity object's Reset get none, and are counted and logged with the protocol and the
//! service.
use std::{path::PathBuf, process::Stdio};

use conduit_tests::{
    agent::Agent,
    plant::{Plant, Role},
    require_root, wait_for,
};

const BIN: &str = env!("CARGO_BIN_EXE_conduit");
const PORT: u16 = 44818;

/// The virtualenv with cpppo and pycomm3 (`tests/enip/install.sh`, run by the bootstrap).
fn python() -> PathBuf {
    let py = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/peers/enip/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run ./xtask/bootstrap.sh (it installs the EtherNet/IP test peers)",
        py.display()
    );
    py
}

fn script(name: &str) -> String {
    format!("{}/../tests/enip/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A process of the test's, ended (by its PID) when the test ends, passed or failed.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_read_only_enip_conduit_passes_reads_and_stops_writes() {
    require_root();
    let py = python();
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
    let _server = Kill(
        plant
            .ns(Role::Plc1)
            .command(py.to_str().unwrap())
            .args([&script("server.py"), "0.0.0.0", &PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the CIP server"),
    );
    wait_for("the CIP server listens", || {
        let out = plant.run(Role::Plc1, &["ss", "-ltnH", "sport", "=", ":44818"]);
        !out.stdout.is_empty()
    });
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
        let mut argv = vec![
            py.to_str().unwrap().to_owned(),
            script("client.py"),
            plc1.clone(),
            PORT.to_string(),
        ];
        argv.extend(reqs.iter().map(|s| (*s).to_owned()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = plant.run(Role::Hmi, &argv);
        let text = String::from_utf8_lossy(&out.stdout);
        let got: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "client.py: {e}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(got["connected"], true, "{got}");
        for req in reqs {
            assert_eq!(
                got["results"][req],
                want,
                "{req}: {got}\naudit log:\n{}",
                std::fs::read_to_string(&a.audit_log).unwrap_or_default()
            );
        }
    }
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
