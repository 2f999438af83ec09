//! SPEC §2 for `conduit check` and `conduit explain`: exit statuses (0 success, 1 input
//! rejected, 2 operation failed), the text and JSON formats, on the example policies and on
//! small policies written to a temporary directory.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicUsize, Ordering},
};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_conduit");

fn policies() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../policies")
        .canonicalize()
        .unwrap()
}

fn purdue() -> String {
    policies()
        .join("purdue-plant.yaml")
        .to_str()
        .unwrap()
        .to_owned()
}

/// A directory of its own under the system temp dir, removed on drop (also when a test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "conduit-cli-test-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes `name` in the directory and returns its full path.
    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_in(dir: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args);
    if let Some(d) = dir {
        c.current_dir(d);
    }
    c.output().unwrap()
}

fn run(args: &[&str]) -> Output {
    run_in(None, args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn code(o: &Output, want: i32) {
    assert_eq!(
        o.status.code(),
        Some(want),
        "exit status\n--- stdout:\n{}\n--- stderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// stdout as exactly one JSON value.
#[track_caller]
fn json(o: &Output) -> Value {
    let s = stdout(o);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}):\n{s}"))
}

/// A small valid policy: zones a (10.0.1.x, fd00:1::x) and b (10.0.2.x, fd00:2::x), b in
/// monitor mode when `monitor`, a conduit a -> b for tcp 443 and ping (v4 and v6).
fn small(monitor: bool) -> String {
    format!(
        "version: 1
site: cli
zones:
  - name: a
    security_level: 2
    assets:
      - {{ name: a1, ip: 10.0.1.1, mac: \"02:00:00:00:01:01\" }}
      - {{ name: a6, ip: \"fd00:1::1\" }}
  - name: b
    security_level: 2{}
    assets:
      - {{ name: b1, ip: 10.0.2.1 }}
      - {{ name: b6, ip: \"fd00:2::1\" }}
conduits:
  - name: a-to-b
    from: a
    to: b
    rules:
      - {{ proto: tcp, ports: [443] }}
      - {{ proto: icmp, icmp_types: [echo-request] }}
      - {{ proto: icmpv6, icmp_types: [echo-request] }}
",
        if monitor { "\n    mode: monitor" } else { "" }
    )
}

/// A policy with three independent errors, on lines 5, 7 and 12.
const THREE_ERRORS: &str = "version: 1
site: cli
zones:
  - name: a
    security_level: 9
    assets:
      - { name: a1, ip: 10.0.1.x }
conduits:
  - name: x
    from: a
    to: a
    prots: [1]
    rules:
      - { proto: tcp, ports: [1] }
";

/// Valid, with one lint warning ([L2] on line 7: an SL 3 asset without `mac`).
const ONE_WARNING: &str = "version: 1
site: cli
zones:
  - name: a
    security_level: 3
    assets:
      - { name: a1, ip: 10.0.1.1 }
conduits: []
";

// ---------------------------------------------------------------------------------------------
// check

#[test]
fn check_valid_policy_exits_0_with_no_diagnostics() {
    let o = run(&["check", &purdue()]);
    code(&o, 0);
    assert_eq!(stdout(&o), "", "no diagnostic lines");
    assert!(
        stderr(&o).contains("valid"),
        "summary on stderr: {}",
        stderr(&o)
    );
}

#[test]
fn check_text_errors_one_per_line_with_the_path_as_given() {
    let t = TempDir::new();
    t.write("bad.yaml", THREE_ERRORS);
    // A relative path, as typed.
    let o = run_in(Some(&t.0), &["check", "bad.yaml"]);
    code(&o, 1);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "all errors, not just the first:\n{out}");
    let mut got_lines = Vec::new();
    for l in &lines {
        // bad.yaml:LINE:COL: error: MESSAGE
        let rest = l.strip_prefix("bad.yaml:").unwrap_or_else(|| panic!("{l}"));
        let mut parts = rest.splitn(3, ':');
        let line: usize = parts.next().unwrap().parse().unwrap();
        let col: usize = parts.next().unwrap().parse().unwrap();
        let tail = parts.next().unwrap();
        assert!(col >= 1, "{l}");
        let msg = tail
            .strip_prefix(" error: ")
            .unwrap_or_else(|| panic!("{l}"));
        assert!(!msg.is_empty(), "{l}");
        got_lines.push(line);
    }
    assert_eq!(got_lines, vec![5, 7, 12], "{out}");
    assert!(lines[2].contains("unknown key `prots`"), "{out}");
    let err = stderr(&o);
    assert!(err.contains("3 error"), "summary on stderr: {err}");
}

#[test]
fn check_text_errors_with_an_absolute_path() {
    let t = TempDir::new();
    let p = t.write("bad.yaml", THREE_ERRORS);
    let o = run(&["check", &p]);
    code(&o, 1);
    for l in stdout(&o).lines() {
        assert!(l.starts_with(&format!("{p}:")), "{l}");
    }
    assert_eq!(stdout(&o).lines().count(), 3);
}

#[test]
fn check_warnings_are_printed_and_pass_without_strict() {
    let t = TempDir::new();
    t.write("warn.yaml", ONE_WARNING);
    let o = run_in(Some(&t.0), &["check", "warn.yaml"]);
    code(&o, 0);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(
        lines[0].starts_with("warn.yaml:7:") && lines[0].contains(": warning: [L2]"),
        "{out}"
    );
}

#[test]
fn check_strict_makes_warnings_fail() {
    let t = TempDir::new();
    t.write("warn.yaml", ONE_WARNING);
    let o = run_in(Some(&t.0), &["check", "warn.yaml", "--strict"]);
    code(&o, 1);
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("warning: [L2]"), "{out}");
    // --strict before the path works too.
    let o = run_in(Some(&t.0), &["check", "--strict", "warn.yaml"]);
    code(&o, 1);
}

#[test]
fn check_strict_passes_on_the_example_policies() {
    for name in ["purdue-plant.yaml", "water-utility.yaml", "minimal.yaml"] {
        let p = policies().join(name);
        let o = run(&["check", p.to_str().unwrap(), "--strict"]);
        code(&o, 0);
        let o = run(&["check", p.to_str().unwrap(), "--strict", "--format", "json"]);
        code(&o, 0);
        assert_eq!(json(&o)["valid"], Value::Bool(true));
    }
}

#[test]
fn check_json_valid_policy() {
    let o = run(&["check", &purdue(), "--format", "json"]);
    code(&o, 0);
    let v = json(&o);
    assert_eq!(v["valid"], Value::Bool(true), "{v}");
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
}

#[test]
fn check_json_invalid_policy_lists_every_error_with_line_column_message() {
    let t = TempDir::new();
    let p = t.write("bad.yaml", THREE_ERRORS);
    let o = run(&["check", &p, "--format", "json"]);
    code(&o, 1);
    let v = json(&o);
    assert_eq!(v["valid"], Value::Bool(false), "{v}");
    let errors = v["errors"].as_array().expect("errors is a list");
    assert_eq!(errors.len(), 3, "{v}");
    let lines: Vec<u64> = errors.iter().map(|e| e["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, vec![5, 7, 12], "{v}");
    for e in errors {
        assert!(e["column"].as_u64().unwrap() >= 1, "{e}");
        assert!(!e["message"].as_str().unwrap().is_empty(), "{e}");
    }
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("security_level"),
        "{v}"
    );
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
    // The same diagnostics as the text format.
    let text = stdout(&run(&["check", &p]));
    for (e, l) in errors.iter().zip(text.lines()) {
        assert_eq!(
            l,
            format!(
                "{p}:{}:{}: error: {}",
                e["line"],
                e["column"],
                e["message"].as_str().unwrap()
            )
        );
    }
}

#[test]
fn check_json_warnings_and_strict() {
    let t = TempDir::new();
    let p = t.write("warn.yaml", ONE_WARNING);
    let o = run(&["check", &p, "--format", "json"]);
    code(&o, 0);
    let v = json(&o);
    assert_eq!(v["valid"], Value::Bool(true), "{v}");
    let w = v["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1, "{v}");
    assert_eq!(w[0]["line"], 7, "{v}");
    assert!(w[0]["message"].as_str().unwrap().starts_with("[L2]"), "{v}");
    let o = run(&["check", &p, "--format", "json", "--strict"]);
    code(&o, 1);
    let v = json(&o);
    assert_eq!(v["valid"], Value::Bool(false), "{v}");
    assert_eq!(v["warnings"].as_array().unwrap().len(), 1, "{v}");
}

#[test]
fn check_nonexistent_file_exits_2() {
    let t = TempDir::new();
    let missing = t.0.join("no-such-policy.yaml");
    let missing = missing.to_str().unwrap();
    let o = run(&["check", missing]);
    code(&o, 2);
    assert_eq!(stdout(&o), "");
    assert!(stderr(&o).contains("no-such-policy.yaml"), "{}", stderr(&o));
    let o = run(&["check", missing, "--format", "json"]);
    code(&o, 2);
}

/// Runs the binary with `args` and an address-space limit of `max_memory` bytes, killing it
/// (by its PID) if it has not exited after 10 s: `None` then.
fn run_bounded(args: &[&str], max_memory: u64) -> Option<Output> {
    use std::os::unix::process::CommandExt as _;
    let mut c = Command::new(BIN);
    c.args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: between fork and exec, setrlimit only changes this process's own limit; it
    // allocates nothing and takes no lock.
    unsafe {
        c.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: max_memory,
                rlim_max: max_memory,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = c.spawn().unwrap();
    if conduit_tests::exited_within(&mut child, std::time::Duration::from_secs(10)) {
        return Some(child.wait_with_output().unwrap());
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// `conduit check` on `path` in text and JSON: it returns (within 10 s, in 1 GiB of address
/// space), exits 1 and says that the path is not a regular file.
#[track_caller]
fn check_refuses_not_regular(path: &str) {
    let o = run_bounded(&["check", path], 1 << 30)
        .unwrap_or_else(|| panic!("`conduit check {path}` did not return within 10 s"));
    code(&o, 1);
    assert!(
        stdout(&o).contains(": error: ") && stdout(&o).contains("not a regular file"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let o = run_bounded(&["check", path, "--format", "json"], 1 << 30)
        .unwrap_or_else(|| panic!("`conduit check {path} --format json` did not return"));
    code(&o, 1);
    let v = json(&o);
    assert_eq!(v["valid"], Value::Bool(false), "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not a regular file")),
        "{v}"
    );
}

#[test]
fn check_refuses_a_directory_as_not_a_regular_file() {
    let t = TempDir::new();
    std::fs::create_dir(t.0.join("dir.yaml")).unwrap();
    check_refuses_not_regular(t.0.join("dir.yaml").to_str().unwrap());
}

#[test]
fn check_on_a_fifo_returns_at_once_and_refuses_it() {
    // Opening a FIFO for reading blocks until a writer comes: nobody ever writes to this one.
    let t = TempDir::new();
    let fifo = t.0.join("policy.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo");
    check_refuses_not_regular(fifo.to_str().unwrap());
}

#[test]
fn check_on_dev_zero_refuses_it_without_reading() {
    // An endless device: read to the end, it would take all memory.
    check_refuses_not_regular("/dev/zero");
}

#[test]
fn check_refuses_a_file_over_the_size_limit_without_reading_it() {
    use conduit_agent::policy::validate::MAX_POLICY_BYTES;
    // A sparse file one byte over the limit: no disk space, but reading it would take the
    // whole limit in memory, which the address-space cap of 128 MiB does not allow.
    let t = TempDir::new();
    let p = t.0.join("huge.yaml");
    std::fs::File::create(&p)
        .unwrap()
        .set_len(MAX_POLICY_BYTES as u64 + 1)
        .unwrap();
    let o = run_bounded(&["check", p.to_str().unwrap()], 128 << 20)
        .expect("`conduit check` on a huge file did not return within 10 s");
    code(&o, 1);
    let want = format!("larger than {} MiB", MAX_POLICY_BYTES >> 20);
    assert!(
        stdout(&o).contains(": error: ") && stdout(&o).contains(&want),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}

#[test]
fn check_empty_and_binary_files_are_rejected_with_1() {
    let t = TempDir::new();
    for (name, bytes) in [
        ("empty.yaml", b"".to_vec()),
        ("comments.yaml", b"# nothing here\n\n".to_vec()),
        ("binary.yaml", b"version: 1\nsite: \xff\xfe\n".to_vec()),
        ("list.yaml", b"- a\n- b\n".to_vec()),
        ("syntax.yaml", b"version: 1\nsite: [unclosed\n".to_vec()),
    ] {
        let p = t.write(name, bytes);
        let o = run(&["check", &p]);
        code(&o, 1);
        let out = stdout(&o);
        assert!(
            out.lines().count() >= 1 && out.lines().all(|l| l.contains(": error: ")),
            "{name}: {out}"
        );
    }
}

#[test]
fn check_bad_arguments_exit_1() {
    let o = run(&["check", &purdue(), "--format", "xml"]);
    code(&o, 1);
    let o = run(&["check"]);
    code(&o, 1);
    let o = run(&["check", &purdue(), "--no-such-flag"]);
    code(&o, 1);
}

// ---------------------------------------------------------------------------------------------
// explain on policies/purdue-plant.yaml

fn explain(policy: &str, args: &[&str]) -> Output {
    let mut a = vec!["explain", policy];
    a.extend_from_slice(args);
    run(&a)
}

/// `explain ... --format json`, which must succeed.
fn explain_json(policy: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend_from_slice(&["--format", "json"]);
    let o = explain(policy, &a);
    code(&o, 0);
    json(&o)
}

#[track_caller]
fn verdict(v: &Value, verdict: &str, reason: &str, conduit: Option<&str>) {
    assert_eq!(v["verdict"], verdict, "{v}");
    assert_eq!(v["reason"], reason, "{v}");
    match conduit {
        Some(c) => assert_eq!(v["conduit"], c, "{v}"),
        None => assert!(v["conduit"].is_null(), "{v}"),
    }
}

/// The `key: value` lines of the text format.
fn text_fields(o: &Output) -> Vec<(String, String)> {
    stdout(o)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn field(o: &Output, key: &str) -> String {
    text_fields(o)
        .into_iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no `{key}:` line in:\n{}", stdout(o)))
        .1
}

#[test]
fn explain_allowed_through_a_conduit_json() {
    let v = explain_json(
        &purdue(),
        &[
            "--src",
            "10.3.0.20",
            "--dst",
            "10.2.0.10",
            "--proto",
            "tcp",
            "--dport",
            "502",
        ],
    );
    verdict(&v, "allow", "conduit", Some("hmi-to-plc"));
    assert_eq!(v["src_zone"], "supervisory", "{v}");
    assert_eq!(v["dst_zone"], "control", "{v}");
    assert_eq!(v["src_asset"], "hmi-1", "{v}");
    assert_eq!(v["dst_asset"], "plc-1", "{v}");
}

#[test]
fn explain_allowed_through_a_conduit_text() {
    let o = explain(
        &purdue(),
        &[
            "--src",
            "10.3.0.30",
            "--dst",
            "10.2.0.11",
            "--proto",
            "tcp",
            "--dport",
            "20010",
            "--sport",
            "50123",
            // The vendor's tool ports are on demand: judged as granted.
            "--grant",
            "vendor-tools",
        ],
    );
    code(&o, 0);
    assert_eq!(field(&o, "verdict"), "allow");
    assert_eq!(field(&o, "reason"), "conduit");
    assert_eq!(field(&o, "conduit"), "vendor-tools");
    // Text is the default format.
    assert!(serde_json::from_str::<Value>(&stdout(&o)).is_err());
}

#[test]
fn explain_port_ranges_and_narrowing_of_the_example() {
    let p = purdue();
    let j = |src: &str, dst: &str, port: &str| {
        explain_json(
            &p,
            &[
                "--src", src, "--dst", dst, "--proto", "tcp", "--dport", port,
            ],
        )
    };
    // The vendor's tool ports: on demand, closed until granted.
    verdict(
        &j("10.3.0.30", "10.2.0.11", "20001"),
        "deny",
        "not_granted",
        Some("vendor-tools"),
    );
    verdict(
        &j("10.3.0.30", "10.2.0.11", "20011"),
        "deny",
        "no_conduit",
        None,
    );
    // hmi-to-plc is narrowed to hmi-1: the engineering workstation gets no Modbus.
    verdict(
        &j("10.3.0.30", "10.2.0.10", "502"),
        "deny",
        "no_conduit",
        None,
    );
    // office-to-historian is narrowed to office-lan: the ERP server (inside it) is excluded.
    let v = j("10.4.1.1", "10.5.0.10", "443");
    verdict(&v, "allow", "conduit", Some("office-to-historian"));
    assert_eq!(v["src_asset"], "office-lan", "{v}");
    let v = j("10.4.0.10", "10.5.0.10", "443");
    verdict(&v, "deny", "no_conduit", None);
    assert_eq!(v["src_asset"], "erp", "{v}");
    // The only way into the SIS.
    verdict(
        &j("10.3.0.30", "10.1.0.10", "502"),
        "allow",
        "conduit",
        Some("eng-ws-to-sis"),
    );
    verdict(
        &j("10.3.0.20", "10.1.0.10", "502"),
        "deny",
        "no_conduit",
        None,
    );
}

#[test]
fn explain_icmp_type_by_name_and_number() {
    let p = purdue();
    let base = [
        "--src",
        "10.3.0.20",
        "--dst",
        "10.2.0.10",
        "--proto",
        "icmp",
    ];
    for t in ["echo-request", "8"] {
        let mut a = base.to_vec();
        a.extend_from_slice(&["--icmp-type", t]);
        verdict(
            &explain_json(&p, &a),
            "allow",
            "conduit",
            Some("hmi-to-plc"),
        );
    }
    let mut a = base.to_vec();
    a.extend_from_slice(&["--icmp-type", "timestamp-request"]);
    verdict(&explain_json(&p, &a), "deny", "no_conduit", None);
}

#[test]
fn explain_intra_zone() {
    let v = explain_json(
        &purdue(),
        &[
            "--src",
            "10.3.0.20",
            "--dst",
            "10.3.0.30",
            "--proto",
            "tcp",
            "--dport",
            "3389",
        ],
    );
    verdict(&v, "allow", "intra_zone", None);
    assert_eq!(v["src_zone"], "supervisory", "{v}");
    assert_eq!(v["dst_zone"], "supervisory", "{v}");
    let o = explain(
        &purdue(),
        &[
            "--src",
            "10.3.0.20",
            "--dst",
            "10.3.0.30",
            "--proto",
            "tcp",
            "--dport",
            "3389",
        ],
    );
    code(&o, 0);
    assert_eq!(field(&o, "reason"), "intra_zone");
    assert_eq!(field(&o, "conduit"), "-");
}

#[test]
fn explain_unknown_source_zone() {
    let v = explain_json(
        &purdue(),
        &[
            "--src",
            "192.0.2.50",
            "--dst",
            "10.2.0.10",
            "--proto",
            "tcp",
            "--dport",
            "502",
        ],
    );
    verdict(&v, "deny", "no_conduit", None);
    assert_eq!(v["src_zone"], "unknown", "{v}");
    assert!(v["src_asset"].is_null(), "{v}");
    assert_eq!(v["dst_zone"], "control", "{v}");
    assert_eq!(v["dst_asset"], "plc-1", "{v}");
}

#[test]
fn explain_spoofed_source_mac() {
    let p = purdue();
    let hmi = [
        "--src",
        "10.3.0.20",
        "--dst",
        "10.2.0.10",
        "--proto",
        "tcp",
        "--dport",
        "502",
    ];
    // The engineering workstation's MAC with the HMI's address.
    let mut a = hmi.to_vec();
    a.extend_from_slice(&["--src-mac", "02:00:00:03:00:30"]);
    verdict(&explain_json(&p, &a), "deny", "spoofed", None);
    // Any other MAC.
    let mut a = hmi.to_vec();
    a.extend_from_slice(&["--src-mac", "02:aa:bb:cc:dd:ee"]);
    let o = explain(&p, &a);
    code(&o, 0);
    assert_eq!(field(&o, "verdict"), "deny");
    assert_eq!(field(&o, "reason"), "spoofed");
    // The right MAC, given explicitly.
    let mut a = hmi.to_vec();
    a.extend_from_slice(&["--src-mac", "02:00:00:03:00:20"]);
    verdict(
        &explain_json(&p, &a),
        "allow",
        "conduit",
        Some("hmi-to-plc"),
    );
    // The HMI's MAC from an address that is not the HMI's.
    let v = explain_json(
        &p,
        &[
            "--src",
            "10.3.0.99",
            "--dst",
            "10.2.0.10",
            "--proto",
            "tcp",
            "--dport",
            "502",
            "--src-mac",
            "02:00:00:03:00:20",
        ],
    );
    verdict(&v, "deny", "spoofed", None);
}

#[test]
fn explain_without_src_mac_assumes_the_bound_mac() {
    // hmi-1 is MAC-bound; without --src-mac the answer is about the policy, not spoofing.
    let v = explain_json(
        &purdue(),
        &[
            "--src",
            "10.3.0.20",
            "--dst",
            "10.2.0.11",
            "--proto",
            "tcp",
            "--dport",
            "502",
        ],
    );
    verdict(&v, "allow", "conduit", Some("hmi-to-plc"));
}

#[test]
fn explain_denied_no_conduit() {
    let p = purdue();
    // Wrong port.
    let v = explain_json(
        &p,
        &[
            "--src",
            "10.3.0.20",
            "--dst",
            "10.2.0.10",
            "--proto",
            "tcp",
            "--dport",
            "80",
        ],
    );
    verdict(&v, "deny", "no_conduit", None);
    // The PLC may not open a connection to the HMI (replies are not new flows).
    let v = explain_json(
        &p,
        &[
            "--src",
            "10.2.0.10",
            "--dst",
            "10.3.0.20",
            "--proto",
            "tcp",
            "--sport",
            "502",
            "--dport",
            "50000",
        ],
    );
    verdict(&v, "deny", "no_conduit", None);
    // Enterprise never reaches supervisory directly.
    let o = explain(
        &p,
        &[
            "--src",
            "10.4.1.1",
            "--dst",
            "10.3.0.20",
            "--proto",
            "tcp",
            "--dport",
            "4840",
        ],
    );
    code(&o, 0);
    assert_eq!(field(&o, "verdict"), "deny");
    assert_eq!(field(&o, "reason"), "no_conduit");
    assert_eq!(field(&o, "conduit"), "-");
}

// ---------------------------------------------------------------------------------------------
// explain on small policies

#[test]
fn explain_would_deny_in_monitor_mode() {
    let t = TempDir::new();
    let p = t.write("monitor.yaml", small(true));
    let args = [
        "--src", "10.0.1.1", "--dst", "10.0.2.1", "--proto", "tcp", "--dport", "80",
    ];
    verdict(&explain_json(&p, &args), "would_deny", "no_conduit", None);
    let o = explain(&p, &args);
    code(&o, 0);
    assert_eq!(field(&o, "verdict"), "would_deny");
    // Allowed traffic stays allowed.
    let v = explain_json(
        &p,
        &[
            "--src", "10.0.1.1", "--dst", "10.0.2.1", "--proto", "tcp", "--dport", "443",
        ],
    );
    verdict(&v, "allow", "conduit", Some("a-to-b"));
    // The mode is the destination's: b -> a is enforced.
    let v = explain_json(
        &p,
        &[
            "--src", "10.0.2.1", "--dst", "10.0.1.1", "--proto", "tcp", "--dport", "443",
        ],
    );
    verdict(&v, "deny", "no_conduit", None);
    // Without `mode: monitor`, the same packet is denied.
    let p = t.write("enforce.yaml", small(false));
    verdict(&explain_json(&p, &args), "deny", "no_conduit", None);
}

#[test]
fn explain_ipv6() {
    let t = TempDir::new();
    let p = t.write("v6.yaml", small(false));
    let v = explain_json(
        &p,
        &[
            "--src",
            "fd00:1::1",
            "--dst",
            "fd00:2::1",
            "--proto",
            "tcp",
            "--dport",
            "443",
        ],
    );
    verdict(&v, "allow", "conduit", Some("a-to-b"));
    assert_eq!(v["src_zone"], "a", "{v}");
    assert_eq!(v["dst_zone"], "b", "{v}");
    assert_eq!(v["src_asset"], "a6", "{v}");
    assert_eq!(v["dst_asset"], "b6", "{v}");
    let v = explain_json(
        &p,
        &[
            "--src",
            "fd00:1::1",
            "--dst",
            "fd00:2::1",
            "--proto",
            "tcp",
            "--dport",
            "22",
        ],
    );
    verdict(&v, "deny", "no_conduit", None);
    let v = explain_json(
        &p,
        &[
            "--src",
            "fd00:1::1",
            "--dst",
            "fd00:2::1",
            "--proto",
            "icmpv6",
            "--icmp-type",
            "echo-request",
        ],
    );
    verdict(&v, "allow", "conduit", Some("a-to-b"));
    // An IPv6 address that is no asset's.
    let v = explain_json(
        &p,
        &[
            "--src",
            "2001:db8::1",
            "--dst",
            "fd00:2::1",
            "--proto",
            "tcp",
            "--dport",
            "443",
        ],
    );
    verdict(&v, "deny", "no_conduit", None);
    assert_eq!(v["src_zone"], "unknown", "{v}");
}

#[test]
fn explain_bad_arguments_exit_1() {
    let p = purdue();
    let cases: &[&[&str]] = &[
        // Mixed families.
        &[
            "--src",
            "10.3.0.20",
            "--dst",
            "fd00::1",
            "--proto",
            "tcp",
            "--dport",
            "502",
        ],
        &[
            "--src",
            "fd00::1",
            "--dst",
            "10.2.0.10",
            "--proto",
            "tcp",
            "--dport",
            "502",
        ],
        // tcp and udp need --dport.
        &["--src", "10.3.0.20", "--dst", "10.2.0.10", "--proto", "tcp"],
        &["--src", "10.3.0.20", "--dst", "10.2.0.10", "--proto", "udp"],
        // Unknown protocol names and numbers.
        &[
            "--src",
            "10.3.0.20",
            "--dst",
            "10.2.0.10",
            "--proto",
            "tcpp",
            "--dport",
            "502",
        ],
        &["--src", "10.3.0.20", "--dst", "10.2.0.10", "--proto", "256"],
        &["--src", "10.3.0.20", "--dst", "10.2.0.10", "--proto", "any"],
        // Bad values.
        &[
            "--src",
            "10.3.0.300",
            "--dst",
            "10.2.0.10",
            "--proto",
            "tcp",
            "--dport",
            "502",
        ],
        &[
            "--src",
            "10.3.0.20",
            "--dst",
            "10.2.0.10",
            "--proto",
            "tcp",
            "--dport",
            "70000",
        ],
        &[
            "--src",
            "10.3.0.20",
            "--dst",
            "10.2.0.10",
            "--proto",
            "tcp",
            "--dport",
            "502",
            "--src-mac",
            "zz:zz",
        ],
        &[
            "--src",
            "10.3.0.20",
            "--dst",
            "10.2.0.10",
            "--proto",
            "icmp",
            "--icmp-type",
            "echo-requestt",
        ],
        &[
            "--src",
            "10.3.0.20",
            "--dst",
            "10.2.0.10",
            "--proto",
            "icmp",
            "--icmp-type",
            "256",
        ],
        // icmp goes with IPv4, icmpv6 with IPv6.
        &[
            "--src",
            "10.3.0.20",
            "--dst",
            "10.2.0.10",
            "--proto",
            "icmpv6",
            "--icmp-type",
            "echo-request",
        ],
        // Missing required arguments.
        &["--dst", "10.2.0.10", "--proto", "tcp", "--dport", "502"],
        &["--src", "10.3.0.20", "--proto", "tcp", "--dport", "502"],
        &["--src", "10.3.0.20", "--dst", "10.2.0.10", "--dport", "502"],
        // Unknown format.
        &[
            "--src",
            "10.3.0.20",
            "--dst",
            "10.2.0.10",
            "--proto",
            "tcp",
            "--dport",
            "502",
            "--format",
            "yaml",
        ],
    ];
    for args in cases {
        let o = explain(&p, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), "", "{args:?}: no verdict on bad arguments");
        assert!(!stderr(&o).is_empty(), "{args:?}: says why");
    }
}

#[test]
fn explain_invalid_policy_exits_1_and_unreadable_exits_2() {
    let t = TempDir::new();
    let p = t.write("bad.yaml", THREE_ERRORS);
    let args = [
        "--src", "10.0.1.1", "--dst", "10.0.1.2", "--proto", "tcp", "--dport", "1",
    ];
    let o = explain(&p, &args);
    code(&o, 1);
    assert_eq!(stdout(&o), "");
    let o = explain(t.0.join("missing.yaml").to_str().unwrap(), &args);
    code(&o, 2);
    assert_eq!(stdout(&o), "");
    // A policy with warnings only is fine to explain.
    let p = t.write("warn.yaml", ONE_WARNING);
    let o = explain(
        &p,
        &[
            "--src", "10.0.1.1", "--dst", "10.0.1.1", "--proto", "udp", "--dport", "1",
        ],
    );
    code(&o, 0);
}

#[test]
fn completions_and_man_page_come_from_the_clap_definitions() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_conduit"))
            .args(args)
            .output()
            .unwrap()
    };
    for (shell, marker) in [
        ("bash", "_conduit()"),
        ("zsh", "#compdef conduit"),
        ("fish", "complete -c conduit"),
    ] {
        let out = run(&["completions", shell]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(marker) && text.contains("explain"),
            "{shell}: {text}"
        );
    }
    let man = run(&["man"]);
    assert!(man.status.success());
    let text = String::from_utf8_lossy(&man.stdout);
    assert!(
        text.contains(".TH conduit 1") && text.contains("check"),
        "{text}"
    );
    assert_eq!(
        run(&["completions", "tcsh"]).status.code(),
        Some(1),
        "an unknown shell is bad input"
    );
}

/// `conduit status` with nothing attached says so and exits 3 (as `systemctl status` does for
/// an inactive unit), so that scripts can tell "not enforcing" from the status alone.
#[test]
fn status_exits_3_when_nothing_is_attached() {
    let dir = std::env::temp_dir().join(format!("cdt-status-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let o = run(&["status", "--pin-dir", d, "--state-dir", d]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stdout(&o).contains("not attached"), "{}", stdout(&o));
}

/// `explain` names the rule that allowed a flow and its line, in text and JSON; a denial
/// names none.
#[test]
fn explain_names_the_rule_and_its_line() {
    let d = TempDir::new();
    let p = d.write("p.yaml", small(false));
    let v = explain_json(
        &p,
        &[
            "--src", "10.0.1.1", "--dst", "10.0.2.1", "--proto", "tcp", "--dport", "443",
        ],
    );
    assert_eq!(v["rule"]["index"], 1, "{v}");
    assert_eq!(v["rule"]["line"], 19, "{v}");
    let v = explain_json(
        &p,
        &[
            "--src",
            "10.0.1.1",
            "--dst",
            "10.0.2.1",
            "--proto",
            "icmp",
            "--icmp-type",
            "8",
        ],
    );
    assert_eq!(
        (v["rule"]["index"].clone(), v["rule"]["line"].clone()),
        (2.into(), 20.into()),
        "{v}"
    );
    let v = explain_json(
        &p,
        &[
            "--src", "10.0.1.1", "--dst", "10.0.2.1", "--proto", "tcp", "--dport", "22",
        ],
    );
    assert!(v["rule"].is_null(), "{v}");
    let o = explain(
        &p,
        &[
            "--src", "10.0.1.1", "--dst", "10.0.2.1", "--proto", "tcp", "--dport", "443",
        ],
    );
    assert!(
        stdout(&o).contains(&format!("rule:        1 of the conduit, {p}:19:")),
        "{}",
        stdout(&o)
    );
}

/// SPEC §8: a conduit's `expires`. `check` warns [L10] about a conduit that has ended;
/// `explain` judges now (expired) or at another instant (`--at`), in text and JSON.
#[test]
fn expires_is_linted_and_explain_judges_at_an_instant() {
    let d = TempDir::new();
    let p = d.write(
        "expires.yaml",
        "version: 1\nsite: s\nzones:\n  - { name: a, security_level: 1, assets: [{ name: h1, ip: 10.0.0.1 }] }\n  - { name: b, security_level: 2, assets: [{ name: h2, ip: 10.0.1.1 }] }\nconduits:\n  - name: vendor\n    from: a\n    to: b\n    expires: 2024-06-01T20:00:00+02:00\n    rules: [{ proto: tcp, ports: [22] }]\n",
    );
    let o = run(&["check", &p]);
    code(&o, 0);
    let out = stdout(&o) + &stderr(&o);
    assert!(
        out.contains(&format!(
            "{p}:10:14: warning: [L10] conduit \"vendor\" ended at 2024-06-01T18:00:00.000000Z"
        )),
        "{out}"
    );
    code(&run(&["check", "--strict", &p]), 1);
    let ask = |at: Option<&str>| {
        let mut args = vec![
            "explain", &p, "--src", "10.0.0.1", "--dst", "10.0.1.1", "--proto", "tcp", "--dport",
            "22", "--format", "json",
        ];
        if let Some(at) = at {
            args.extend(["--at", at]);
        }
        let o = run(&args);
        code(&o, 0);
        let v = json(&o);
        (v["verdict"].clone(), v["reason"].clone())
    };
    assert_eq!(ask(None), ("deny".into(), "expired".into()));
    assert_eq!(
        ask(Some("2024-06-01T17:59:59Z")),
        ("allow".into(), "conduit".into())
    );
    assert_eq!(
        ask(Some("2024-06-01T18:00:00Z")),
        ("deny".into(), "expired".into()),
        "the end is the first instant that allows nothing"
    );
    let o = run(&[
        "explain", &p, "--src", "10.0.0.1", "--dst", "10.0.1.1", "--proto", "tcp", "--dport", "22",
        "--at", "soon",
    ]);
    code(&o, 1);
    assert!(
        stderr(&o).contains("not an RFC 3339 time"),
        "{}",
        stderr(&o)
    );
}

/// SPEC §8: an on-demand conduit. `explain` judges it closed (`not_granted`, with the way to
/// open it), and as granted with `--grant`; `--grant` of an unknown conduit or of one that is
/// not on demand is refused (exit 1).
#[test]
fn explain_judges_on_demand_conduits_closed_unless_granted() {
    let d = TempDir::new();
    let p = d.write(
        "on-demand.yaml",
        "version: 1\nsite: s\nzones:\n  - { name: a, security_level: 1, assets: [{ name: h1, ip: 10.0.0.1 }] }\n  - { name: b, security_level: 2, assets: [{ name: h2, ip: 10.0.1.1 }] }\nconduits:\n  - name: vendor\n    from: a\n    to: b\n    on_demand: { max: 4h }\n    rules: [{ proto: tcp, ports: [22] }]\n  - name: web\n    from: a\n    to: b\n    rules: [{ proto: tcp, ports: [443] }]\n",
    );
    code(&run(&["check", "--strict", &p]), 0);
    let ask = |port: &str, grant: Option<&str>| {
        let mut args = vec![
            "explain", &p, "--src", "10.0.0.1", "--dst", "10.0.1.1", "--proto", "tcp", "--dport",
            port,
        ];
        if let Some(g) = grant {
            args.extend(["--grant", g]);
        }
        run(&args)
    };
    let o = ask("22", None);
    code(&o, 0);
    assert!(
        stdout(&o).contains("not_granted") && stdout(&o).contains("--grant CONDUIT"),
        "{}",
        stdout(&o)
    );
    let o = ask("22", Some("vendor"));
    code(&o, 0);
    assert!(stdout(&o).contains("allow"), "{}", stdout(&o));
    let o = ask("443", Some("web"));
    code(&o, 1);
    assert!(stderr(&o).contains("not on demand"), "{}", stderr(&o));
    let o = ask("22", Some("nobody"));
    code(&o, 1);
    assert!(
        stderr(&o).contains("no conduit \"nobody\""),
        "{}",
        stderr(&o)
    );
}
