//! SPEC §7 with a real agent, as root, between network namespaces the tests create: a signed
//! policy goes live and is named in the metrics, `status`, the audit log and the change log;
//! an unsigned policy at first start stops the agent like an invalid one; tampered, unknown-key
//! and wrong-namespace reloads are refused and counted while the live policy keeps enforcing;
//! the change log's chain verifies, an edited line is named, a torn last line (a crash during
//! an append) is reported and the agent goes on after it.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use conduit_tests::{
    Netns, VethPair,
    agent::{Agent, find_label},
    require_root,
};

const BIN: &str = env!("CARGO_BIN_EXE_conduit");
const NS: &str = "conduit-policy";

/// Clients may ping the gateway, and reach tcp/8080 on it when `tcp` is true.
fn policy(tcp: bool) -> String {
    let tcp = if tcp {
        "\n      - { proto: tcp, ports: [8080] }"
    } else {
        ""
    };
    format!(
        "version: 1\nsite: integrity-test\ndefaults:\n  log: deny\n  failsafe:\n    - {{ proto: tcp, ports: [22] }}\nzones:\n  - name: clients\n    security_level: 1\n    assets: [{{ name: client, ip: 10.207.0.1 }}]\n  - name: gateway\n    security_level: 2\n    assets: [{{ name: gw, ip: 10.207.0.2 }}]\nconduits:\n  - name: clients-to-gw\n    from: clients\n    to: gateway\n    rules:\n      - {{ proto: icmp, icmp_types: [echo-request] }}{tcp}\n"
    )
}

struct Net {
    client: Netns,
    gw: Netns,
    veth: VethPair,
}

fn net() -> Net {
    let client = Netns::new("cdtic");
    let gw = Netns::new("cdtig");
    let veth = VethPair::new(&client, "10.207.0.1/24", &gw, "10.207.0.2/24");
    Net { client, gw, veth }
}

fn ping(n: &Net) -> bool {
    n.client
        .command("ping")
        .args(["-c", "2", "-i", "0.05", "-W", "1", "10.207.0.2"])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn tcp_connects(n: &Net, port: u16) -> bool {
    n.client.tcp_connects(&n.gw, "10.207.0.2", port)
}

fn wait_for(what: &str, a: &Agent, f: impl FnMut() -> bool) {
    let ms = Duration::from_millis;
    if conduit_tests::poll(ms(15_000), ms(100), f).is_none() {
        panic!(
            "timed out waiting for {what}; the agent's log:\n{}",
            a.log_text()
        );
    }
}

/// A directory of the test's own, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(conduit_tests::unique_name(tag));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Keys `ops` (in the allowed-signers file) and `stranger` (not in it); the file's path.
fn keys(dir: &Path) -> PathBuf {
    for name in ["ops", "stranger"] {
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(dir.join(name))
            .status()
            .unwrap()
            .success();
        assert!(ok, "ssh-keygen");
    }
    let public = std::fs::read_to_string(dir.join("ops.pub")).unwrap();
    let allowed = dir.join("allowed_signers");
    std::fs::write(&allowed, format!("ops@plant.example {public}")).unwrap();
    allowed
}

/// The signature `ssh-keygen -Y sign -f KEY -n NAMESPACE` makes of `text` (from stdin).
fn signature_of(dir: &Path, key: &str, namespace: &str, text: &str) -> Vec<u8> {
    let msg = dir.join("to-sign");
    std::fs::write(&msg, text).unwrap();
    let out = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", namespace, "-f"])
        .arg(dir.join(key))
        .stdin(std::fs::File::open(&msg).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn sig_path(a: &Agent) -> PathBuf {
    PathBuf::from(format!("{}.sig", a.policy.display()))
}

/// As an editor or Ansible writes a file: a new file renamed over the old one.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn conduit(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The sha256 of the live policy (the label of `conduit_policy_info`). Not the generation:
/// the agent applies the same policy again when the host's addresses change (the failsafe
/// follows them), as a new namespace's IPv6 link-local address does about a second after
/// its link comes up.
fn live_sha256(a: &Agent, n: &Net) -> Option<String> {
    let (_, body) = a.get(&n.gw, "/metrics")?;
    find_label(&body, "conduit_policy_info", "sha256")
}

fn failures(a: &Agent, n: &Net) -> f64 {
    a.metric(&n.gw, "conduit_policy_reloads_total{result=\"failure\"}")
        .unwrap_or(-1.0)
}

#[test]
fn only_signed_policies_go_live_and_refused_reloads_keep_the_live_one() {
    require_root();
    let n = net();
    let dir = Dir::new("cdtis");
    let allowed = keys(&dir.0);
    let allowed_s = allowed.to_str().unwrap();
    let first = policy(false);

    // At first start, an unsigned policy stops the agent as an invalid one does: exit 1,
    // nothing attached.
    let mut a = Agent::launch(
        BIN.as_ref(),
        &n.gw,
        &[&n.veth.b],
        &first,
        &["--allowed-signers", allowed_s],
    );
    assert_eq!(a.wait(), Some(1), "{}", a.log_text());
    assert!(
        a.log_text().contains("signature: unsigned"),
        "{}",
        a.log_text()
    );
    assert!(ping(&n), "nothing is attached");

    // Signed: it goes live, and the signer is named everywhere.
    std::fs::write(sig_path(&a), signature_of(&dir.0, "ops", NS, &first)).unwrap();
    a.spawn();
    a.wait_healthy(&n.gw);
    assert!(ping(&n), "the policy allows ping");
    assert!(!tcp_connects(&n, 8080), "the policy denies tcp/8080");
    let (_, body) = a.get(&n.gw, "/metrics").unwrap();
    let signer = find_label(&body, "conduit_policy_info", "signer").unwrap();
    assert!(signer.starts_with("ops@plant.example SHA256:"), "{signer}");
    let (code, status, _) = conduit(&[
        "status",
        "--pin-dir",
        a.pin_dir.to_str().unwrap(),
        "--state-dir",
        a.state_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(
        status.contains("signer:     ops@plant.example SHA256:"),
        "{status}"
    );
    let live = live_sha256(&a, &n).unwrap();
    assert_eq!(
        live,
        conduit_agent::policy::load::sha256_hex(first.as_bytes())
    );

    // Tampered: the policy changes (it would allow tcp/8080), its signature does not.
    let second = policy(true);
    replace(&a.policy, second.as_bytes());
    wait_for("the tampered policy refused", &a, || {
        failures(&a, &n) >= 1.0
    });
    assert!(
        a.log_text()
            .contains("signature: the signature does not match the policy")
    );
    // An unknown key, then the right key for the wrong namespace.
    replace(
        &sig_path(&a),
        &signature_of(&dir.0, "stranger", NS, &second),
    );
    wait_for("the unknown key refused", &a, || failures(&a, &n) >= 2.0);
    assert!(
        a.log_text()
            .contains("which is not in the allowed signers file")
    );
    replace(&sig_path(&a), &signature_of(&dir.0, "ops", "file", &second));
    wait_for("the wrong namespace refused", &a, || {
        failures(&a, &n) >= 3.0
    });
    assert!(a.log_text().contains("signed for the namespace \"file\""));
    // A SIGHUP reload is judged the same way.
    a.signal(libc::SIGHUP);
    wait_for("the SIGHUP reload refused", &a, || failures(&a, &n) >= 4.0);
    // Through all of it the first policy stayed live and enforcing.
    assert_eq!(live_sha256(&a, &n), Some(live.clone()));
    assert_eq!(a.get(&n.gw, "/healthz").map(|r| r.0), Some(200));
    assert!(ping(&n), "the live policy still allows ping");
    assert!(
        !tcp_connects(&n, 8080),
        "the refused policy's tcp/8080 is not open"
    );

    // Signed properly: it goes live.
    replace(&sig_path(&a), &signature_of(&dir.0, "ops", NS, &second));
    let second_sha256 = conduit_agent::policy::load::sha256_hex(second.as_bytes());
    wait_for("the signed policy live", &a, || {
        live_sha256(&a, &n).as_ref() == Some(&second_sha256)
    });
    assert!(tcp_connects(&n, 8080), "the new policy allows tcp/8080");

    // The change log (by default in the state directory): two entries, both signed, the second
    // naming the conduit that changed (the first policy applied again when the host's
    // addresses changed is no new entry); its chain verifies.
    let log = a.state_dir.join("changelog.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["kind"], "policy");
    assert_eq!(lines[0]["signer"]["principal"], "ops@plant.example");
    assert_eq!(
        lines[0]["changes"]["zones"]["added"],
        serde_json::json!(["clients", "gateway"])
    );
    assert_eq!(
        lines[1]["changes"]["conduits"]["changed"],
        serde_json::json!(["clients-to-gw"])
    );
    assert_eq!(
        lines[1]["generation"].as_f64(),
        a.metric(&n.gw, "conduit_policy_generation")
    );
    let (code, out, err) = conduit(&["changelog", "verify", log.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("intact: 2 entries"), "{out}");
    let (code, out, _) = conduit(&["changelog", "show", log.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("signed by ops@plant.example SHA256:"), "{out}");
    assert!(out.contains("conduits ~clients-to-gw"), "{out}");
    assert!(out.contains("chain: intact (2 entries)"), "{out}");
    // The audit log has a policy line for every generation (an address change's too), with
    // the signer: the first policy, then the second.
    let audit = std::fs::read_to_string(&a.audit_log).unwrap();
    let policy_lines: Vec<serde_json::Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "policy")
        .collect();
    let mut policies: Vec<&str> = policy_lines
        .iter()
        .map(|v| v["sha256"].as_str().unwrap())
        .collect();
    policies.dedup();
    assert_eq!(policies, [live.as_str(), second_sha256.as_str()], "{audit}");
    assert!(
        policy_lines
            .iter()
            .all(|v| v["signer"]["principal"] == "ops@plant.example"),
        "{audit}"
    );
}

#[test]
fn the_change_log_survives_a_torn_line_and_names_an_edited_one() {
    require_root();
    let n = net();
    let dir = Dir::new("cdtic");
    let log = dir.0.join("changes").join("changelog.jsonl");
    let log_s = log.to_str().unwrap().to_owned();
    let mut a = Agent::start(
        BIN.as_ref(),
        &n.gw,
        &[&n.veth.b],
        &policy(false),
        &["--change-log", &log_s],
    );
    replace(&a.policy, policy(true).as_bytes());
    wait_for("the reload", &a, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 2)
    });
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["signer"], serde_json::Value::Null, "unsigned");
    assert_eq!(first["prev"], "0".repeat(64));
    // The agent stops; a crash had cut an append short (no newline, not JSON).
    a.signal(libc::SIGTERM);
    assert_eq!(a.wait(), Some(0));
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, b"{\"kind\":\"policy\",\"ts\":\"2026-").unwrap();
    drop(f);
    let (code, out, err) = conduit(&["changelog", "verify", &log_s]);
    assert_eq!(
        code, 0,
        "a torn last line is a crash, not a forgery: {out}{err}"
    );
    assert!(err.contains("line 3: torn"), "{err}");

    // The agent starts again: it reports the torn line, and goes on after it.
    a.spawn();
    a.wait_healthy(&n.gw);
    let agent_log = a.log_text();
    assert!(
        agent_log.contains("the change log's last line (line 3) is torn"),
        "{agent_log}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let fourth: serde_json::Value = serde_json::from_str(lines[3]).unwrap();
    assert_eq!(fourth["torn"]["line"], 3);
    assert_eq!(
        fourth["changes"],
        serde_json::json!({"zones": {"added": [], "removed": [], "changed": []}, "conduits": {"added": [], "removed": [], "changed": []}, "defaults": false}),
        "the same policy as the last entry: nothing changed"
    );
    let (code, out, err) = conduit(&["changelog", "verify", &log_s]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("intact: 3 entries"), "{out}");
    assert!(
        err.contains("line 3: torn") && err.contains("recorded by the line after it"),
        "{err}"
    );
    let (_, json, _) = conduit(&["changelog", "verify", &log_s, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["torn"],
        serde_json::json!([{"line": 3, "recorded": true}])
    );

    // One byte of the first entry changed: verify names the line where the chain breaks.
    let edited = text.replacen(
        "\"site\":\"integrity-test\"",
        "\"site\":\"integrity-tesT\"",
        1,
    );
    assert_ne!(edited, text);
    std::fs::write(&log, edited).unwrap();
    let (code, out, _) = conduit(&["changelog", "verify", &log_s]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("{log_s}:2: error:")) && out.contains("sha256 of line 1"),
        "{out}"
    );
    let (_, json, _) = conduit(&["changelog", "verify", &log_s, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (v["intact"].clone(), v["error"]["line"].clone()),
        (serde_json::json!(false), serde_json::json!(2))
    );
}
