//! On-demand conduits (SPEC §8, issue 17) with the real agent on the plant harness (routed),
//! as root: a vendor's path from the office network to PLC 1 is closed until `conduit grant`
//! opens it; the grant is checked (unknown conduit, not on demand, above `max`, malformed
//! durations: exit 1, nothing opens), recorded (change log, audit log, `status`, metrics),
//! survives the agent's `kill -9` and restart, is carried over by a reload, ends on time by
//! itself, and `conduit revoke` closes it, through the agent or, with no agent, from the pins.
use std::{
    path::Path,
    process::{Command, Output},
    thread::sleep,
    time::Duration,
};

use conduit_tests::{
    agent::Agent,
    plant::{Plant, Role},
    require_root, wait_for,
};

const BIN: &str = env!("CARGO_BIN_EXE_conduit");
const VNC: u16 = 5900;

fn policy(plant: &Plant, vendor: bool) -> String {
    let mut y = plant.policy_yaml();
    if vendor {
        y.push_str(
            "  - name: vendor-access
    from: enterprise
    to: control
    destinations: [plc-1]
    on_demand: { max: 1h }
    rules:
      - { proto: tcp, ports: [5900] }
",
        );
    }
    y
}

/// `conduit ARGS --pin-dir .. --state-dir ..` against the agent's directories.
fn conduit(a: &Agent, args: &[&str], sudo_user: Option<&str>) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .arg("--pin-dir")
        .arg(&a.pin_dir)
        .arg("--state-dir")
        .arg(&a.state_dir)
        .env_remove("SUDO_USER");
    if let Some(u) = sudo_user {
        c.env("SUDO_USER", u);
    }
    c.output().expect("run conduit")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn lines_of(path: &Path, key: &str, value: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v[key] == value)
        .collect()
}

#[test]
fn on_demand_access_opens_ends_and_is_recorded() {
    require_root();
    let plant = Plant::new(conduit_tests::plant::Mode::Routed);
    let mut a = Agent::start(
        BIN.as_ref(),
        &plant.gw,
        &plant.ports(),
        &policy(&plant, true),
        &[],
    );
    let plc1 = plant.ip(Role::Plc1).to_owned();
    let _vnc = plant.serve(Role::Plc1, &[], &[VNC], &[], &[]).ready();
    let opens = || plant.tcp_connects(Role::Office, &plc1, &[VNC])[0];
    let change_log = a.state_dir.join("changelog.jsonl");
    let active = |a: &Agent| a.metric(&plant.gw, "conduit_grant_active{conduit=\"vendor-access\"}");

    // Closed until granted.
    assert!(!opens(), "an on-demand conduit is closed without a grant");
    assert_eq!(active(&a), Some(0.0));
    let st = conduit(&a, &["status"], None);
    assert!(
        text(&st).contains("on demand:  vendor-access: closed"),
        "{}",
        text(&st)
    );

    // Bad requests: exit 1, a clear reason, nothing opens.
    for (args, says) in [
        (
            vec!["grant", "no-such-conduit", "--for", "1h"],
            "not in the live policy",
        ),
        (vec!["grant", "hmi-to-plc", "--for", "1h"], "not on demand"),
        (
            vec!["grant", "vendor-access", "--for", "2h"],
            "on_demand.max is 1h",
        ),
        (
            vec!["grant", "vendor-access", "--for", "soon"],
            "not a duration",
        ),
        (
            vec!["grant", "vendor-access", "--for", "0s"],
            "longer than zero",
        ),
        (
            vec!["grant", "vendor-access", "--for", "-5m"],
            "longer than zero",
        ),
        (vec!["revoke", "no-such-conduit"], "not in the live policy"),
        (vec!["revoke", "hmi-to-plc"], "not on demand"),
    ] {
        let o = conduit(&a, &args, None);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
    }
    let o = conduit(
        &a,
        &["grant", "vendor-access", "--for", "1h", "--reason", "a\nb"],
        None,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!opens(), "a refused grant opens nothing");
    // Revoking a closed conduit changes nothing.
    let o = conduit(&a, &["revoke", "vendor-access"], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("no open grant"), "{}", text(&o));

    // ---- A grant opens it, and is recorded. ------------------------------------------------
    let o = conduit(
        &a,
        &[
            "grant",
            "vendor-access",
            "--for",
            "1h",
            "--reason",
            "CHG-4711 drive tuning",
        ],
        Some("alice"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("open for 1h"), "{}", text(&o));
    assert!(opens(), "granted: the vendor reaches PLC 1");
    assert!(
        !plant.tcp_connects(Role::Office, plant.ip(Role::Plc2), &[VNC])[0],
        "the grant opens the conduit's destinations only"
    );
    assert_eq!(active(&a), Some(1.0));
    let left = a
        .metric(
            &plant.gw,
            "conduit_grant_remaining_seconds{conduit=\"vendor-access\"}",
        )
        .unwrap();
    assert!((3500.0..=3600.0).contains(&left), "{left}");
    let st = text(&conduit(&a, &["status"], None));
    assert!(
        st.contains("grant:      vendor-access: open, 59m")
            && st.contains("by root (sudo for alice): CHG-4711 drive tuning"),
        "{st}"
    );
    let js: serde_json::Value =
        serde_json::from_slice(&conduit(&a, &["status", "--format", "json"], None).stdout).unwrap();
    assert_eq!(js["grants"][0]["conduit"], "vendor-access");
    assert_eq!(js["grants"][0]["sudo_user"], "alice");
    let grants = lines_of(&change_log, "kind", "grant");
    assert_eq!(grants.len(), 1, "one grant line in the change log");
    assert_eq!(grants[0]["conduit"], "vendor-access");
    assert_eq!(grants[0]["seconds"], 3600);
    assert_eq!(grants[0]["user"], "root");
    assert_eq!(grants[0]["sudo_user"], "alice");
    assert_eq!(grants[0]["reason"], "CHG-4711 drive tuning");
    let audit = lines_of(&a.audit_log, "event", "grant");
    assert_eq!(audit.len(), 1, "one grant line in the audit log");
    assert_eq!(audit[0]["reason"], "CHG-4711 drive tuning");

    // ---- The agent dies (kill -9) and comes back: the grant holds throughout. --------------
    a.signal(libc::SIGKILL);
    a.wait();
    assert!(
        opens(),
        "with the agent dead, the pinned datapath keeps the grant"
    );
    a.spawn();
    a.wait_healthy(&plant.gw);
    assert!(opens(), "the restarted agent keeps the grant");
    assert_eq!(active(&a), Some(1.0), "{}", a.log_text());
    assert!(text(&conduit(&a, &["status"], None)).contains("vendor-access: open"));

    // ---- A reload keeps it; one without the conduit ends it (recorded). --------------------
    let generation = |a: &Agent| a.metric(&plant.gw, "conduit_policy_generation").unwrap();
    let g0 = generation(&a);
    let mut y = policy(&plant, true);
    y = y.replace(
        "- { proto: tcp, ports: [443] }",
        "- { proto: tcp, ports: [443, 8443] }",
    );
    std::fs::write(&a.policy, &y).unwrap();
    a.signal(libc::SIGHUP);
    wait_for("the reload", || generation(&a) > g0);
    assert!(
        opens(),
        "a reload keeps the grant of a conduit that is still on demand"
    );
    assert_eq!(active(&a), Some(1.0));

    // ---- Revoke through the agent: closed at once, recorded. -------------------------------
    let o = conduit(
        &a,
        &["revoke", "vendor-access", "--reason", "work done"],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("revoked"), "{}", text(&o));
    assert!(!opens(), "revoked: closed");
    assert_eq!(active(&a), Some(0.0));
    let revokes = lines_of(&change_log, "kind", "revoke");
    assert_eq!(revokes.len(), 1);
    assert_eq!(revokes[0]["reason"], "work done");
    assert_eq!(lines_of(&a.audit_log, "event", "revoke").len(), 1);

    // ---- A short grant ends on time by itself. ---------------------------------------------
    let o = conduit(&a, &["grant", "vendor-access", "--for", "3s"], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(opens());
    sleep(Duration::from_millis(3200));
    assert!(!opens(), "the grant ended: closed");
    wait_for("the grant_ended audit line", || {
        !lines_of(&a.audit_log, "event", "grant_ended").is_empty()
    });
    assert_eq!(active(&a), Some(0.0));

    // ---- With no agent: a grant is refused (exit 2), a revoke works from the pins. ---------
    let o = conduit(&a, &["grant", "vendor-access", "--for", "1h"], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(opens());
    a.signal(libc::SIGKILL);
    a.wait();
    let o = conduit(&a, &["grant", "vendor-access", "--for", "30m"], None);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no agent answers"), "{}", text(&o));
    // The state file lost its record of the grant (only the kernel holds it): closing it is
    // still a revocation, and recorded.
    let state = a.state_dir.join("state.json");
    let mut st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    st["grants"] = serde_json::json!({});
    std::fs::write(&state, st.to_string()).unwrap();
    let o = conduit(
        &a,
        &["revoke", "vendor-access", "--reason", "agent down"],
        Some("bob"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("no agent runs"), "{}", text(&o));
    assert!(!opens(), "revoked from the pins: closed with no agent");
    let revokes = lines_of(&change_log, "kind", "revoke");
    assert_eq!(revokes.len(), 2, "the offline revoke is in the change log");
    assert_eq!(revokes[1]["sudo_user"], "bob");
    a.spawn();
    a.wait_healthy(&plant.gw);
    assert!(!opens());
    assert_eq!(active(&a), Some(0.0));

    // ---- A reload that drops the conduit ends its grant, recorded as the agent's. ----------
    let o = conduit(&a, &["grant", "vendor-access", "--for", "10m"], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let g1 = generation(&a);
    std::fs::write(&a.policy, policy(&plant, false)).unwrap();
    a.signal(libc::SIGHUP);
    wait_for("the reload", || generation(&a) > g1);
    assert!(!opens());
    let revokes = lines_of(&change_log, "kind", "revoke");
    assert_eq!(revokes.len(), 3, "{revokes:?}");
    assert_eq!(revokes[2]["user"], "conduit");

    // The whole change log still verifies, and reads as people expect.
    let o = Command::new(BIN)
        .args(["changelog", "verify"])
        .arg(&change_log)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = Command::new(BIN)
        .args(["changelog", "show"])
        .arg(&change_log)
        .output()
        .unwrap();
    let shown = text(&o);
    assert!(
        shown.contains("grant   vendor-access  for 1h")
            && shown.contains("by root (sudo for alice)")
            && shown.contains("reason: CHG-4711 drive tuning")
            && shown.contains("revoke  vendor-access"),
        "{shown}"
    );
}
