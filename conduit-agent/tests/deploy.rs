//! The deployment artefacts under `deploy/`: the systemd unit passes `systemd-analyze verify`
//! and starts the agent the way the README says (least privilege, `--keep-on-exit`), the
//! Prometheus alert rules pass `promtool check rules` and their unit tests, the Grafana
//! dashboard is well formed and its PromQL parses, and every metric and label that the rules
//! and the dashboard name is exported by a real agent (root, in network namespaces this test
//! creates).
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use conduit_tests::{Netns, VethPair, agent::Agent, require_root, unique_name};

const BIN: &str = env!("CARGO_BIN_EXE_conduit");

/// Labels that Prometheus adds to every series of a scrape target.
const TARGET_LABELS: [&str; 3] = ["job", "instance", "__name__"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// A directory of this test under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Self {
        let d = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a command; returns (success, stdout and stderr).
fn output(c: &mut Command) -> (bool, String) {
    let out = c.output().unwrap_or_else(|e| panic!("running {c:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// systemd

/// The value of `Key=` in a unit (the last one wins, as in systemd; none: empty).
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .next_back()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// `systemd-analyze verify` on `unit` installed as conduit.service in `dir`; returns its exit
/// status and the output lines about conduit.service (systemd may also talk about unrelated
/// units of the machine it runs on).
fn verify_unit(dir: &Path, unit: &str) -> (bool, Vec<String>) {
    let path = dir.join("conduit.service");
    std::fs::write(&path, unit).unwrap();
    // Documentation=man:conduit(1) is checked with `man`: the page the package ships.
    let (ok, text) = output(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .env("MANPATH", dir.join("man")),
    );
    let complaints = text
        .lines()
        .filter(|l| l.contains("conduit.service"))
        .map(str::to_owned)
        .collect();
    (ok, complaints)
}

#[test]
fn systemd_unit_verifies_and_runs_the_agent_with_least_privilege() {
    let unit = read("deploy/systemd/conduit.service");
    let default = read("deploy/systemd/conduit.default");

    // What the unit must say, whatever else it says.
    let exec = unit_value(&unit, "ExecStart");
    assert!(
        exec.starts_with("/usr/bin/conduit run --policy /etc/conduit/policy.yaml"),
        "ExecStart runs the packaged binary on the packaged policy: {exec}"
    );
    assert!(
        exec.contains("--keep-on-exit"),
        "a restart (upgrade) keeps enforcing: the next start adopts the pinned program: {exec}"
    );
    assert!(
        exec.contains("$CONDUIT_ARGS") && !exec.contains("${CONDUIT_ARGS}"),
        "$CONDUIT_ARGS unbraced, so that systemd splits it into words: {exec}"
    );
    for l in unit.lines() {
        let l = l.trim();
        assert!(
            !(l.starts_with("ExecStop") && l.contains("detach")),
            "stopping the unit must not detach (upgrades keep enforcing): {l}"
        );
    }
    assert_eq!(
        unit_value(&unit, "EnvironmentFile"),
        "-/etc/default/conduit"
    );
    assert_eq!(
        unit_value(&unit, "ExecReload"),
        "/bin/kill -HUP $MAINPID",
        "reload is SIGHUP"
    );
    assert_eq!(unit_value(&unit, "Restart"), "on-failure");
    let caps = |key: &str| -> BTreeSet<String> {
        unit_value(&unit, key)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let least: BTreeSet<String> = [
        "CAP_BPF",
        "CAP_NET_ADMIN",
        "CAP_PERFMON",
        "CAP_SYS_RESOURCE",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(caps("CapabilityBoundingSet"), least, "least privilege");
    assert_eq!(caps("AmbientCapabilities"), least);
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("RuntimeDirectory", "conduit"),
        ("LogsDirectory", "conduit"),
        ("SystemCallArchitectures", "native"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
    ] {
        assert_eq!(unit_value(&unit, key), value, "{key}");
    }
    assert!(
        unit_value(&unit, "ReadWritePaths")
            .split_whitespace()
            .any(|p| p == "/sys/fs/bpf"),
        "the agent pins under /sys/fs/bpf"
    );
    let families = caps("RestrictAddressFamilies");
    for f in ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"] {
        assert!(families.contains(f), "RestrictAddressFamilies lacks {f}");
    }
    // What would hide the bpffs, the interfaces or the host's addresses from the agent.
    for (key, forbidden) in [
        ("PrivateNetwork", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("PrivateDevices", "yes"),
        ("PrivateUsers", "yes"),
    ] {
        assert_ne!(unit_value(&unit, key), forbidden, "{key}={forbidden}");
    }

    // Every option of ExecStart and of CONDUIT_ARGS is one that `conduit run` takes.
    let args = default
        .lines()
        .find_map(|l| l.trim().strip_prefix("CONDUIT_ARGS="))
        .expect("conduit.default sets CONDUIT_ARGS")
        .trim_matches('"')
        .to_owned();
    assert!(
        args.contains("--iface "),
        "interfaces come from CONDUIT_ARGS"
    );
    let (ok, help) = output(Command::new(BIN).args(["run", "--help"]));
    assert!(ok, "{help}");
    for word in exec.split_whitespace().chain(args.split_whitespace()) {
        if let Some(flag) = word.strip_prefix("--") {
            let flag = flag.split('=').next().unwrap();
            assert!(
                help.contains(&format!("--{flag} ")) || help.contains(&format!("--{flag}\n")),
                "`conduit run` has no --{flag}:\n{help}"
            );
        }
    }

    // systemd-analyze verify wants the ExecStart binary to exist: a copy of the unit that runs
    // the binary under test, and the man page the package ships.
    let dir = TempDir::new("cdtunit");
    let bin = dir.0.join("conduit");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::create_dir_all(dir.0.join("man/man1")).unwrap();
    let page = Command::new(BIN).arg("man").output().unwrap();
    assert!(page.status.success());
    std::fs::write(dir.0.join("man/man1/conduit.1"), page.stdout).unwrap();
    let copy = unit.replace("/usr/bin/conduit", bin.to_str().unwrap());
    let (ok, complaints) = verify_unit(&dir.0, &copy);
    assert!(
        ok && complaints.is_empty(),
        "systemd-analyze verify conduit.service: {complaints:#?}"
    );
    // The check can fail: a misspelt key is reported.
    let (_, complaints) = verify_unit(&dir.0, &copy.replace("NoNewPrivileges=", "NoNewPrivilege="));
    assert!(
        complaints.iter().any(|l| l.contains("NoNewPrivilege")),
        "systemd-analyze did not report a misspelt key: {complaints:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// YAML and JSON of the artefacts

/// A YAML document as JSON (scalars as strings), to walk it with serde_json.
fn yaml(text: &str) -> serde_json::Value {
    fn conv(n: &marked_yaml::Node) -> serde_json::Value {
        match n {
            marked_yaml::Node::Scalar(s) => serde_json::Value::String(s.as_str().to_owned()),
            marked_yaml::Node::Sequence(s) => s.iter().map(conv).collect(),
            marked_yaml::Node::Mapping(m) => m
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), conv(v)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }
    conv(&marked_yaml::parse_yaml(0, text).expect("valid YAML"))
}

fn items(v: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    v.as_array().into_iter().flatten()
}

/// A PromQL expression of the rules or the dashboard, with the labels that its consumer
/// (annotation templates, legends, label_values) reads from its result.
struct Expr {
    origin: String,
    promql: String,
    reads: Vec<String>,
}

/// `{{ x }}` and `{{x}}` in a legend; `$labels.x` in an annotation template.
fn template_labels(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for part in text.split("$labels.").skip(1) {
        out.push(ident(part));
    }
    for part in text.split("{{").skip(1) {
        let inner = part.split("}}").next().unwrap_or_default().trim();
        if !inner.is_empty() && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push(inner.to_owned());
        }
    }
    out.retain(|l| !l.is_empty());
    out
}

fn alert_rules() -> serde_json::Value {
    yaml(&read("deploy/prometheus/conduit-alerts.yml"))
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("deploy/grafana/conduit-dashboard.json")).expect("valid JSON")
}

/// Every panel, those inside rows included.
fn panels(d: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for p in items(&d["panels"]) {
        out.push(p);
        out.extend(items(&p["panels"]));
    }
    out
}

fn rule_exprs() -> Vec<Expr> {
    let mut out = Vec::new();
    for g in items(&alert_rules()["groups"]) {
        for r in items(&g["rules"]) {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap();
            let mut reads = Vec::new();
            for (_, v) in r["annotations"].as_object().into_iter().flatten() {
                reads.extend(template_labels(v.as_str().unwrap()));
            }
            out.push(Expr {
                origin: format!("alert {name}"),
                promql: r["expr"].as_str().unwrap().to_owned(),
                reads,
            });
        }
    }
    out
}

fn dashboard_exprs() -> Vec<Expr> {
    let d = dashboard();
    let mut out = Vec::new();
    for p in panels(&d) {
        for t in items(&p["targets"]) {
            out.push(Expr {
                origin: format!("panel {:?}", p["title"].as_str().unwrap_or_default()),
                promql: t["expr"].as_str().unwrap().to_owned(),
                reads: template_labels(t["legendFormat"].as_str().unwrap_or_default()),
            });
        }
    }
    for v in items(&d["templating"]["list"]) {
        if v["type"] != "query" {
            continue;
        }
        let q = v["definition"].as_str().unwrap();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable query {q}: only label_values(METRIC, LABEL)"));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        out.push(Expr {
            origin: format!("variable {}", v["name"]),
            promql: selector.trim().to_owned(),
            reads: vec![label.trim().to_owned()],
        });
    }
    out
}

/// A label matcher: label, operator (`=`, `!=`, `=~`, `!~`), value.
type Matcher = (String, String, String);

/// What an expression uses: selectors (metric name and matchers `(label, op, value)`) and the
/// labels of its grouping clauses (`by`, `without`, `on`, `ignoring`, `group_left`, ...).
#[derive(Default, Debug)]
struct Uses {
    selectors: Vec<(String, Vec<Matcher>)>,
    grouping: Vec<String>,
}

/// A small PromQL scanner: enough for selectors and grouping clauses, skipping strings, range
/// and subquery brackets and numbers (durations).
fn scan(promql: &str) -> Uses {
    let s: Vec<char> = promql.chars().collect();
    let mut u = Uses::default();
    let mut i = 0;
    let is_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_ws = |mut i: usize| {
        while i < s.len() && s[i].is_whitespace() {
            i += 1;
        }
        i
    };
    // Reads a quoted string starting at s[i]; returns (content, index after it).
    let string = |mut i: usize| -> (String, usize) {
        let q = s[i];
        let mut v = String::new();
        i += 1;
        while i < s.len() && s[i] != q {
            if s[i] == '\\' && q != '`' {
                i += 1;
            }
            v.push(s[i]);
            i += 1;
        }
        (v, i + 1)
    };
    // Matchers from s[i] == '{' to the closing brace; returns them and the index after it.
    let matchers = |mut i: usize| -> (Vec<Matcher>, usize) {
        let mut out = Vec::new();
        i += 1;
        loop {
            i = skip_ws(i);
            if i >= s.len() || s[i] == '}' {
                return (out, i + 1);
            }
            if s[i] == ',' {
                i += 1;
                continue;
            }
            let start = i;
            while i < s.len() && is_ident(s[i]) {
                i += 1;
            }
            let label: String = s[start..i].iter().collect();
            i = skip_ws(i);
            let start = i;
            while i < s.len() && "=!~".contains(s[i]) {
                i += 1;
            }
            let op: String = s[start..i].iter().collect();
            i = skip_ws(i);
            assert!(
                i < s.len() && "\"'`".contains(s[i]),
                "{promql}: cannot read the matcher of {label}"
            );
            let (value, next) = string(i);
            i = next;
            out.push((label, op, value));
        }
    };
    while i < s.len() {
        let c = s[i];
        if "\"'`".contains(c) {
            i = string(i).1;
        } else if c == '[' {
            while i < s.len() && s[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_digit() || (c == '.' && s.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '.') {
                i += 1;
            }
        } else if c == '{' {
            let (m, next) = matchers(i);
            u.selectors.push((String::new(), m));
            i = next;
        } else if is_start(c) {
            let start = i;
            while i < s.len() && is_ident(s[i]) {
                i += 1;
            }
            let word: String = s[start..i].iter().collect();
            let j = skip_ws(i);
            let next = s.get(j).copied();
            let grouping = [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ];
            // Operator keywords besides the grouping ones above.
            let keyword = [
                "and",
                "or",
                "unless",
                "offset",
                "bool",
                "inf",
                "nan",
                "atan2",
                // Aggregation operators, whose `by (...)` may come before the parenthesis.
                "sum",
                "min",
                "max",
                "avg",
                "group",
                "stddev",
                "stdvar",
                "count",
                "count_values",
                "bottomk",
                "topk",
                "quantile",
            ];
            if grouping.contains(&word.as_str()) && next == Some('(') {
                let end = (j..s.len()).find(|&k| s[k] == ')').unwrap();
                let list: String = s[j + 1..end].iter().collect();
                u.grouping.extend(
                    list.split(',')
                        .map(|l| l.trim().to_owned())
                        .filter(|l| !l.is_empty()),
                );
                i = end + 1;
            } else if next == Some('(')
                || [&grouping[..], &keyword[..]]
                    .concat()
                    .contains(&word.to_lowercase().as_str())
            {
                // A function call or an operator keyword.
            } else if next == Some('{') {
                let (m, after) = matchers(j);
                u.selectors.push((word, m));
                i = after;
            } else {
                u.selectors.push((word, Vec::new()));
            }
        } else {
            i += 1;
        }
    }
    u
}

#[test]
fn the_scanner_reads_selectors_and_grouping_labels() {
    let u = scan(
        r#"sum by (job, instance) (increase(conduit_packets_total{conduit="a b",instance=~"$i"}[1h] offset 15m)) > 0 and on (job) up == 1"#,
    );
    assert_eq!(u.grouping, ["job", "instance", "job"]);
    let names: Vec<&str> = u.selectors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["conduit_packets_total", "up"]);
    assert_eq!(
        u.selectors[0].1,
        [
            ("conduit".into(), "=".into(), "a b".into()),
            ("instance".into(), "=~".into(), "$i".into())
        ]
    );
    let u = scan(r#"count(x{a!="1"} == 0) or vector(0)"#);
    assert_eq!(u.selectors[0].0, "x");
    assert!(u.grouping.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Prometheus rules and the Grafana dashboard

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = root().join("deploy/prometheus");
    let (ok, text) = output(
        Command::new("promtool")
            .args(["check", "rules", "conduit-alerts.yml"])
            .current_dir(&dir),
    );
    assert!(ok, "promtool check rules:\n{text}");
    let (ok, text) = output(
        Command::new("promtool")
            .args(["test", "rules", "conduit-alerts.test.yml"])
            .current_dir(&dir),
    );
    assert!(
        ok && text.contains("SUCCESS"),
        "promtool test rules:\n{text}"
    );

    // Every alert is tested firing (and not firing) at least once, and has what Alertmanager
    // routes and shows on.
    let tests = yaml(&read("deploy/prometheus/conduit-alerts.test.yml"));
    let cases: Vec<&serde_json::Value> = items(&tests["tests"])
        .flat_map(|t| items(&t["alert_rule_test"]))
        .collect();
    let mut names = BTreeSet::new();
    let rules = alert_rules();
    for g in items(&rules["groups"]) {
        for r in items(&g["rules"]) {
            let Some(name) = r["alert"].as_str() else {
                continue;
            };
            assert!(names.insert(name), "alert {name} defined twice");
            let severity = r["labels"]["severity"].as_str().unwrap_or_default();
            assert!(
                ["critical", "warning", "info"].contains(&severity),
                "{name}: severity {severity:?}"
            );
            for a in ["summary", "description"] {
                assert!(
                    r["annotations"][a].as_str().is_some_and(|s| !s.is_empty()),
                    "{name}: no {a}"
                );
            }
            let of_it = || cases.iter().filter(|c| c["alertname"] == name);
            assert!(
                of_it().any(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty())),
                "no test where {name} fires"
            );
            assert!(
                of_it().any(|c| c["exp_alerts"].as_array().is_none_or(|a| a.is_empty())),
                "no test where {name} stays silent"
            );
        }
    }
    assert!(names.len() >= 6, "alerts: {names:?}");
}

#[test]
fn dashboard_is_well_formed_and_its_promql_parses() {
    let d = dashboard();
    assert_eq!(d["schemaVersion"], 39);
    assert!(
        items(&d["__inputs"])
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "a DS_PROMETHEUS input for import"
    );
    let vars: BTreeMap<&str, &serde_json::Value> = items(&d["templating"]["list"])
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    assert_eq!(vars["DS_PROMETHEUS"]["type"], "datasource");
    assert_eq!(vars["DS_PROMETHEUS"]["query"], "prometheus");
    assert_eq!(
        vars["site"]["definition"],
        "label_values(conduit_policy_info, site)"
    );
    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(
            p["id"].as_u64().is_some_and(|id| ids.insert(id)),
            "{title}: id"
        );
        for k in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][k].is_u64(), "{title}: gridPos.{k}");
        }
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            assert!(
                !items(&p["targets"]).collect::<Vec<_>>().is_empty(),
                "{title}: no query"
            );
            for t in items(&p["targets"]) {
                assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            }
        }
    }
    // What the brief asks the dashboard to show.
    let all: String = dashboard_exprs().iter().map(|e| e.promql.clone()).collect();
    for m in [
        "conduit_packets_total",
        "conduit_bytes_total",
        "conduit_dropped_packets_total",
        "conduit_would_drop_packets_total",
        "conduit_policy_reloads_total",
        "conduit_policy_generation",
        "conduit_policy_info",
        "conduit_interface_attached",
        "conduit_audit_events_written_total",
        "conduit_audit_events_suppressed_total",
        "conduit_audit_events_lost_total",
    ] {
        assert!(all.contains(m), "the dashboard does not show {m}");
    }

    // Every query parses: as recording rules, with Grafana's variables given values.
    let dir = TempDir::new("cdtdash");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, e) in dashboard_exprs().iter().enumerate() {
        let q = e
            .promql
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1h")
            .replace("$site", ".*")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query_{n}\n        expr: {}\n",
            serde_json::Value::String(q)
        ));
    }
    let file = dir.0.join("dashboard-rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let (ok, text) = output(
        Command::new("promtool")
            .arg("check")
            .arg("rules")
            .arg(&file),
    );
    assert!(ok, "the dashboard's queries:\n{text}\n{rules}");
}

// ---------------------------------------------------------------------------------------------
// Against a real agent

/// Metric name -> label name -> values seen, from a text exposition; counter families also
/// under their name as `# TYPE` gives it.
fn exposition(body: &str) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for l in body.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().unwrap();
            out.entry(name.to_owned()).or_default();
            continue;
        }
        if l.starts_with('#') || l.trim().is_empty() {
            continue;
        }
        let sample = l.rsplit_once(' ').map(|(s, _)| s).unwrap_or(l);
        let (name, labels) = match sample.split_once('{') {
            Some((n, rest)) => (n, format!("{{{rest}")),
            None => (sample, String::new()),
        };
        let entry = out.entry(name.to_owned()).or_default();
        if !labels.is_empty() {
            for (k, _, v) in scan(&format!("x{labels}")).selectors.remove(0).1 {
                entry.entry(k).or_default().insert(v);
            }
        }
    }
    out
}

fn policy() -> String {
    "version: 1\nsite: deploy-test\ndefaults:\n  log: deny\n  failsafe:\n    - { proto: tcp, ports: [22] }\nzones:\n  - name: clients\n    security_level: 1\n    assets: [{ name: client, ip: 10.203.0.1 }]\n  - name: gateway\n    security_level: 2\n    assets: [{ name: gw, ip: 10.203.0.2 }]\n  - name: monitored\n    security_level: 2\n    mode: monitor\n    assets: [{ name: observed, ip: 10.203.0.3 }]\nconduits:\n  - name: clients-to-gw\n    from: clients\n    to: gateway\n    rules:\n      - { proto: icmp, icmp_types: [echo-request] }\n  - name: clients-web\n    from: clients\n    to: gateway\n    on_demand: { max: 1h }\n    rules:\n      - { proto: tcp, ports: [8080] }\n  - name: clients-to-observed\n    from: clients\n    to: monitored\n    on_demand: { max: 1h }\n    rules:\n      - { proto: tcp, ports: [8080] }\n".to_owned()
}

#[test]
fn every_metric_and_label_of_the_rules_and_dashboard_is_exported_by_the_agent() {
    require_root();
    let client = Netns::new("cdtdc");
    let gw = Netns::new("cdtdg");
    let veth = VethPair::new(&client, "10.203.0.1/24", &gw, "10.203.0.2/24");
    // The monitored zone's asset is a second address of the gateway: traffic to it crosses the
    // gateway's interface, where the program judges it.
    gw.exec_ok(&["ip", "addr", "add", "10.203.0.3/24", "dev", &veth.b]);
    let a = Agent::start(BIN.as_ref(), &gw, &[&veth.b], &policy(), &[]);

    // Some families appear only once they have samples: an allowed ping (per-conduit
    // counters), a denied connection (drops), a ping into the monitor-mode zone (would-drops),
    // connections through on-demand conduits without a grant (a conduit's own drops and
    // would-drops).
    let quiet = |c: &mut Command| {
        let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
    };
    let ping = |dst: &str| {
        quiet(
            client
                .command("ping")
                .args(["-c", "3", "-i", "0.05", "-W", "1", dst]),
        )
    };
    ping("10.203.0.2");
    for (dst, port) in [
        ("10.203.0.2", "8081"),
        ("10.203.0.2", "8080"),
        ("10.203.0.3", "8080"),
    ] {
        quiet(client.command("nc").args(["-z", "-w", "1", dst, port]));
    }
    ping("10.203.0.3");
    let wanted = [
        "conduit_packets_total{conduit=\"clients-to-gw\"}",
        "conduit_dropped_packets_total{src_zone=\"clients\",dst_zone=\"gateway\",reason=\"no_conduit\"}",
        "conduit_would_drop_packets_total{src_zone=\"clients\",dst_zone=\"monitored\",reason=\"no_conduit\"}",
        "conduit_inspection_dropped_packets_total{conduit=\"clients-web\",reason=\"not_granted\"}",
        "conduit_inspection_would_drop_packets_total{conduit=\"clients-to-observed\",reason=\"not_granted\"}",
    ];
    let t = Instant::now();
    let body = loop {
        let (status, body) = a.get(&gw, "/metrics").expect("scrape /metrics");
        assert_eq!(status, 200);
        let have = |w: &str| conduit_tests::agent::find_sample(&body, w).is_some_and(|v| v > 0.0);
        if wanted.iter().all(|w| have(w)) {
            break body;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the traffic did not show in the metrics ({:?} missing):\n{body}\nagent log:\n{}",
            wanted.iter().filter(|w| !have(w)).collect::<Vec<_>>(),
            a.log_text()
        );
        sleep(Duration::from_millis(200));
    };
    let exported = exposition(&body);

    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for e in rule_exprs().into_iter().chain(dashboard_exprs()) {
        let u = scan(&e.promql);
        let metrics: Vec<&str> = u
            .selectors
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| n.starts_with("conduit_"))
            .collect();
        let labels_of = |m: &str| -> Option<&BTreeMap<String, BTreeSet<String>>> {
            exported.get(m).or_else(|| {
                // A counter as OpenMetrics names its family (without _total).
                m.strip_suffix("_total").and_then(|f| exported.get(f))
            })
        };
        for (name, matchers) in &u.selectors {
            if !name.starts_with("conduit_") {
                continue;
            }
            seen.insert(name.clone());
            let Some(labels) = labels_of(name) else {
                problems.push(format!("{}: {name} is not exported", e.origin));
                continue;
            };
            for (label, op, value) in matchers {
                if TARGET_LABELS.contains(&label.as_str()) {
                    continue;
                }
                match labels.get(label) {
                    None => problems.push(format!(
                        "{}: {name} has no label {label} (it has {:?})",
                        e.origin,
                        labels.keys().collect::<Vec<_>>()
                    )),
                    Some(values) if op == "=" && !values.contains(value) => problems.push(format!(
                        "{}: {name}{{{label}=\"{value}\"}} is never exported (values: {values:?})",
                        e.origin
                    )),
                    Some(_) => {}
                }
            }
        }
        // Labels read from the result or grouped on: on one of the expression's metrics.
        for label in u.grouping.iter().chain(&e.reads) {
            let known = TARGET_LABELS.contains(&label.as_str())
                || metrics
                    .iter()
                    .any(|m| labels_of(m).is_some_and(|l| l.contains_key(label)));
            if !known {
                problems.push(format!(
                    "{}: label {label} is on none of {metrics:?}",
                    e.origin
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\nthe exposition:\n{body}",
        problems.join("\n")
    );
    // The comparison did look at the metrics (the scanner found them).
    for m in [
        "conduit_packets_total",
        "conduit_dropped_packets_total",
        "conduit_would_drop_packets_total",
        "conduit_policy_info",
        "conduit_interface_attached",
        "conduit_audit_events_lost_total",
    ] {
        assert!(seen.contains(m), "{m} not found in the rules or dashboard");
    }
}
