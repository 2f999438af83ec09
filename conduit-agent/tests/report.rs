//! `conduit report` (SPEC §6): golden JSON of the example policies, the SVG parsed as XML
//! with every zone, asset and conduit in it, no overlapping boxes or labels (from the layout's
//! own coordinates, also for a generated 30-zone, 100-conduit policy), the HTML in a real
//! headless Chromium without any network request, bad input, and (as root) the evidence of a
//! live agent and of two agents scraped by one real Prometheus server.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use conduit_agent::report::{self, Options, Source, diagram, layout::Rect};
use conduit_tests::{Netns, VethPair, agent::Agent, poll, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_conduit");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where test artifacts go (screenshots): under target/, kept after the test.
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let dir = target.join("report-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(conduit_tests::unique_name(tag));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `conduit report ARGS` from the repository root, at a fixed time (SOURCE_DATE_EPOCH).
fn report_cmd(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("report")
        .args(args)
        .current_dir(root())
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "conduit report failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn examples() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join("policies"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    v.sort();
    assert!(v.len() >= 3, "the example policies: {v:?}");
    v
}

/// A site of `zones` zones over Purdue levels 0..4 (some without a level, some in monitor
/// mode) and `conduits` conduits, some between several zones, bidirectional, to `unknown` or
/// within one zone. Deterministic.
fn generated_policy(zones: usize, conduits: usize) -> String {
    let mut y = String::from("version: 1\nsite: generated\ndefaults:\n  log: deny\nzones:\n");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for z in 0..zones {
        let _ = write!(
            y,
            "  - name: zone-{z:02}\n    security_level: {}\n",
            1 + z % 4
        );
        if z % 7 != 6 {
            let _ = writeln!(y, "    purdue_level: {}", z % 5);
        }
        if z % 9 == 4 {
            y.push_str("    mode: monitor\n");
        }
        y.push_str("    assets:\n");
        for a in 0..(1 + z % 4) {
            let _ = writeln!(
                y,
                "      - {{ name: host-{z:02}-{a}, ip: 10.{z}.0.{}, mac: \"02:00:00:{z:02x}:00:{a:02x}\" }}",
                a + 1
            );
        }
        if z % 5 == 0 {
            let _ = writeln!(y, "      - {{ name: lan-{z:02}, cidr: 10.{z}.1.0/24 }}");
        }
    }
    y.push_str("conduits:\n");
    for c in 0..conduits {
        let f = rnd(zones);
        let t = match c % 17 {
            0 => "unknown".to_owned(),
            1 => format!("zone-{f:02}"),
            2 => format!("[zone-{:02}, zone-{:02}]", rnd(zones), (f + 1) % zones),
            _ => format!("zone-{:02}", (f + 1 + rnd(zones - 1)) % zones),
        };
        let _ = write!(y, "  - name: c{c:03}\n    from: zone-{f:02}\n    to: {t}\n");
        if c % 11 == 3 {
            y.push_str("    bidirectional: true\n");
        }
        y.push_str("    rules:\n");
        match c % 4 {
            0 => y.push_str("      - { proto: tcp, ports: [502], modbus: { functions: [read] } }\n"),
            1 => y.push_str("      - { proto: tcp, ports: [443, \"20000-20010\"] }\n"),
            2 => y.push_str("      - { proto: icmp, icmp_types: [echo-request] }\n      - { proto: udp, ports: [161] }\n"),
            _ => y.push_str("      - { proto: udp, ports: [47808] }\n"),
        }
    }
    y
}

fn write_generated(dir: &Path) -> PathBuf {
    let p = dir.join("generated-30.yaml");
    std::fs::write(&p, generated_policy(30, 100)).unwrap();
    let out = Command::new(BIN)
        .args(["check", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the generated policy is valid: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    p
}

fn policy_only(path: &Path) -> report::model::Report {
    report::build(&Options {
        policy: path.to_owned(),
        source: Source::None,
        audit_logs: Vec::new(),
        meta: None,
    })
    .unwrap()
}

#[test]
fn golden_json_of_the_example_policies() {
    let bless = std::env::var_os("CONDUIT_BLESS").is_some();
    let golden = root().join("conduit-agent/tests/golden/report");
    std::fs::create_dir_all(&golden).unwrap();
    for name in examples() {
        let path = format!("policies/{name}");
        let got = ok(&report_cmd(&[&path, "--policy-only", "--format", "json"]));
        let v: serde_json::Value = serde_json::from_str(&got).unwrap();
        // SPEC §6's shape.
        assert!(v["policy"]["sha256"].as_str().unwrap().len() == 64);
        assert!(v["policy"]["site"].is_string());
        for c in v["conduits"].as_array().unwrap() {
            for k in ["name", "from", "to", "packets"] {
                assert!(c.get(k).is_some(), "{name}: conduit without {k}: {c}");
            }
            assert!(c["packets"].is_null(), "no counters without evidence");
        }
        assert!(v["matrix"].is_array() && v["findings"].is_array());
        let file = golden.join(name.replace(".yaml", ".json"));
        if bless {
            std::fs::write(&file, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; CONDUIT_BLESS=1 writes it after a review",
                file.display()
            )
        });
        assert!(
            got == want,
            "{name}: the report's JSON differs from {} (CONDUIT_BLESS=1 rewrites it after a review):\n{}",
            file.display(),
            first_difference(&want, &got)
        );
    }
}

fn first_difference(a: &str, b: &str) -> String {
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!("line {}:\n- {x}\n+ {y}", i + 1);
        }
    }
    format!("lengths {} and {}", a.lines().count(), b.lines().count())
}

/// The SVG parses as XML, and every zone (with every asset) and every conduit of the policy
/// is in it.
fn check_svg(svg: &str, r: &report::model::Report) {
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("not XML: {e}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let zone = |name: &str| {
        doc.descendants()
            .find(|n| n.attribute("data-zone") == Some(name))
            .unwrap_or_else(|| panic!("zone {name} is not in the SVG"))
    };
    zone("unknown");
    for z in &r.zones {
        let g = zone(&z.name);
        let title = g
            .children()
            .find(|n| n.has_tag_name("title"))
            .and_then(|t| t.text())
            .unwrap_or_default();
        let shown: Vec<&str> = g
            .descendants()
            .filter_map(|n| n.attribute("data-asset"))
            .collect();
        for (i, a) in z.assets.iter().enumerate() {
            assert!(
                title.contains(&format!("{} {}", a.name, a.address)),
                "asset {} of zone {} is not in its title",
                a.name,
                z.name
            );
            if i < diagram::MAX_ASSET_LINES {
                assert!(
                    shown.contains(&a.name.as_str()),
                    "asset {} not drawn",
                    a.name
                );
            }
        }
    }
    for c in &r.conduits {
        let edges = doc
            .descendants()
            .filter(|n| n.attribute("data-conduit") == Some(c.name.as_str()))
            .count();
        assert_eq!(
            edges,
            c.from.len() * c.to.len(),
            "arrows of conduit {}",
            c.name
        );
    }
}

#[test]
fn svg_is_xml_with_every_zone_asset_and_conduit() {
    let dir = tmpdir("cdtrs");
    let mut paths: Vec<PathBuf> = examples()
        .iter()
        .map(|n| root().join("policies").join(n))
        .collect();
    paths.push(write_generated(&dir));
    for p in &paths {
        let svg = ok(&report_cmd(&[
            p.to_str().unwrap(),
            "--policy-only",
            "--format",
            "svg",
        ]));
        check_svg(&svg, &policy_only(p));
        // xmllint (libxml2-utils, installed by bootstrap) agrees.
        let f = dir.join("d.svg");
        std::fs::write(&f, &svg).unwrap();
        let lint = Command::new("xmllint")
            .args(["--noout", f.to_str().unwrap()])
            .output()
            .expect("xmllint (libxml2-utils)");
        assert!(
            lint.status.success(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&lint.stderr)
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn no_two_boxes_or_labels_overlap_and_no_arrow_crosses_a_box() {
    let dir = tmpdir("cdtro");
    let mut paths: Vec<PathBuf> = examples()
        .iter()
        .map(|n| root().join("policies").join(n))
        .collect();
    paths.push(write_generated(&dir));
    for p in &paths {
        let r = policy_only(p);
        let d = diagram::lay_out(&r);
        let o = &d.out;
        let mut rects: Vec<(String, Rect)> = Vec::new();
        for (i, b) in o.boxes.iter().enumerate() {
            rects.push((format!("zone {}", d.boxes[i].name), *b));
        }
        for (i, e) in o.edges.iter().enumerate() {
            rects.push((format!("label of {}", d.edge_conduit[i].name), e.label));
        }
        for (i, t) in o.row_titles.iter().enumerate() {
            rects.push((format!("row title {}", d.titles[i]), *t));
            // The title's text fits its box.
            assert!(
                d.titles[i].chars().count() as f64 * report::layout::CHAR_W <= t.w,
                "{}",
                d.titles[i]
            );
        }
        for (name, r) in &rects {
            assert!(
                r.x >= 0.0 && r.y >= 0.0 && r.right() <= o.width && r.bottom() <= o.height,
                "{}: {name} is outside the drawing: {r:?}",
                p.display()
            );
        }
        for i in 0..rects.len() {
            for j in i + 1..rects.len() {
                assert!(
                    !rects[i].1.overlaps(&rects[j].1),
                    "{}: {} {:?} overlaps {} {:?}",
                    p.display(),
                    rects[i].0,
                    rects[i].1,
                    rects[j].0,
                    rects[j].1
                );
            }
        }
        for (i, e) in o.edges.iter().enumerate() {
            assert!(e.points.len() >= 2);
            for w in e.points.windows(2) {
                assert!(
                    w[0].0 == w[1].0 || w[0].1 == w[1].1,
                    "segments are axis-parallel"
                );
                for (k, b) in o.boxes.iter().enumerate() {
                    assert!(
                        !b.crossed_by(w[0], w[1]),
                        "{}: the arrow of {} crosses zone {}: {w:?} {b:?}",
                        p.display(),
                        d.edge_conduit[i].name,
                        d.boxes[k].name
                    );
                }
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

const META: &str = "owner: Plant engineering (J. Doe)\nzones:\n  control:\n    owner: Automation team\n    physical_boundary: Cabinet C2, building 4\n    safety_designation: not safety-related\n  safety:\n    safety_designation: SIS, SIL 2\nconduits:\n  hmi-to-plc: { owner: Automation team, physical_boundary: Switch S3 port 4 to gateway eth1 }\napprovals:\n  - { name: J. Doe, role: Asset owner, date: 2026-11-20 }\n";

#[test]
fn meta_fills_what_it_names_and_leaves_the_rest_open() {
    let dir = tmpdir("cdtrm");
    let meta = dir.join("meta.yaml");
    std::fs::write(&meta, META).unwrap();
    let got = ok(&report_cmd(&[
        "policies/purdue-plant.yaml",
        "--policy-only",
        "--meta",
        meta.to_str().unwrap(),
        "--format",
        "json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&got).unwrap();
    let zone = |n: &str| {
        v["zones"]
            .as_array()
            .unwrap()
            .iter()
            .find(|z| z["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(zone("control")["owner"], "Automation team");
    assert_eq!(zone("safety")["safety_designation"], "SIS, SIL 2");
    assert!(zone("safety")["owner"].is_null(), "never invented");
    assert!(zone("dmz")["physical_boundary"].is_null());
    assert_eq!(v["meta"]["approvals"][0]["name"], "J. Doe");
    assert!(v["meta"]["open_items"].as_u64().unwrap() > 0);
    let html = ok(&report_cmd(&[
        "policies/purdue-plant.yaml",
        "--policy-only",
        "--meta",
        meta.to_str().unwrap(),
        "--format",
        "html",
    ]));
    assert!(
        html.contains("Cabinet C2, building 4")
            && html.contains(r#"<span class="open">open</span>"#)
    );
    // A name the policy does not have is an error (exit 1), not an ignored line.
    std::fs::write(&meta, "zones:\n  contrl: { owner: x }\n").unwrap();
    let out = report_cmd(&[
        "policies/purdue-plant.yaml",
        "--policy-only",
        "--meta",
        meta.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("zone \"contrl\" is not in the policy"));
    std::fs::write(&meta, "zones:\n  control: { ownr: x }\n").unwrap();
    let out = report_cmd(&[
        "policies/purdue-plant.yaml",
        "--policy-only",
        "--meta",
        meta.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "unknown keys are errors");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn markdown_carries_the_diagram_as_mermaid() {
    let md = ok(&report_cmd(&[
        "policies/purdue-plant.yaml",
        "--policy-only",
        "--format",
        "md",
    ]));
    assert!(md.contains("```mermaid\nflowchart TB\n"));
    let r = policy_only(&root().join("policies/purdue-plant.yaml"));
    for c in &r.conduits {
        assert!(
            md.contains(&format!("|\"{}: ", c.name)),
            "conduit {}",
            c.name
        );
    }
    for z in &r.zones {
        assert!(
            md.contains(&format!("| **{}** |", z.name)),
            "zone {}",
            z.name
        );
    }
}

/// Every attribute or CSS that could make a browser fetch something.
fn fetching_references(html: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let lower = html.to_ascii_lowercase();
    for pat in [
        "<script", "src=", "href=", "@import", "<link", "<iframe", "<object", "<embed", "srcset",
    ] {
        if lower.contains(pat) {
            bad.push(pat.to_owned());
        }
    }
    // url(...) only to the document's own ids (the SVG's arrowhead marker).
    for (i, _) in lower.match_indices("url(") {
        if !lower[i + 4..].starts_with('#') {
            bad.push(lower[i..(i + 40).min(lower.len())].to_owned());
        }
    }
    // The only absolute URL is the SVG namespace name, which is never fetched.
    let without_ns = lower.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for pat in ["http://", "https://", "//"] {
        if let Some(i) = without_ns.find(pat) {
            bad.push(without_ns[i.saturating_sub(20)..(i + 40).min(without_ns.len())].to_owned());
        }
    }
    bad
}

/// Runs Chromium headless on `file`: a screenshot to `png`, the network log to `netlog`, the
/// DOM after rendering returned. The flags keep Chromium from its own background connections.
fn chromium(file: &Path, png: &Path, netlog: &Path, size: &str) -> String {
    let profile = tmpdir("cdtrc");
    let base = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--no-pings",
        "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate",
        "--hide-scrollbars",
    ];
    let url = format!("file://{}", file.display());
    let shot = Command::new("/usr/bin/chromium")
        .args(base)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--log-net-log={}", netlog.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={size}"))
        .arg(&url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("/usr/bin/chromium (Debian package chromium, installed by xtask/bootstrap.sh)");
    assert!(
        shot.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let dom = Command::new("/usr/bin/chromium")
        .args(base)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(&url)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    String::from_utf8_lossy(&dom.stdout).into_owned()
}

/// The URLs that the page itself requested, from a Chromium net log: the requests whose
/// network isolation key is the page's (`file://`). Chromium's own background requests (its
/// component updater, account checks), which flags do not all silence and which this
/// machine's closed network refuses anyway, carry the browser's keys, not the page's.
fn page_requests(netlog: &str) -> Vec<String> {
    let t = netlog.trim_end().trim_end_matches(',');
    // Chromium ends the file only when it exits cleanly; an unfinished one lacks `]}`.
    let v: serde_json::Value = serde_json::from_str(t)
        .or_else(|_| serde_json::from_str(&format!("{t}]}}")))
        .expect("the net log is JSON");
    let start_job = v["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
        .as_u64()
        .expect("the net log names URL_REQUEST_START_JOB");
    let mut urls = Vec::new();
    for e in v["events"].as_array().into_iter().flatten() {
        let p = &e["params"];
        if e["type"].as_u64() == Some(start_job)
            && p["network_isolation_key"]
                .as_str()
                .is_some_and(|k| k.starts_with("file://"))
        {
            urls.push(p["url"].as_str().unwrap_or_default().to_owned());
        }
    }
    urls
}

#[test]
fn the_net_log_check_sees_a_page_that_fetches() {
    // The check below must be able to fail: a page with an image from elsewhere (a
    // documentation address that nothing answers) is caught.
    let dir = tmpdir("cdtrk");
    let page = dir.join("canary.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><img src=\"http://192.0.2.1/canary.png\">canary</body></html>",
    )
    .unwrap();
    let netlog = dir.join("netlog.json");
    chromium(&page, &dir.join("canary.png"), &netlog, "400,300");
    let urls = page_requests(&std::fs::read_to_string(&netlog).unwrap());
    assert_eq!(urls, ["http://192.0.2.1/canary.png"]);
    assert!(!fetching_references(&std::fs::read_to_string(&page).unwrap()).is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn html_renders_in_headless_chromium_and_fetches_nothing() {
    let dir = tmpdir("cdtrh");
    let meta = dir.join("meta.yaml");
    std::fs::write(&meta, META).unwrap();
    let html_path = dir.join("purdue-plant.html");
    let out = report_cmd(&[
        "policies/purdue-plant.yaml",
        "--policy-only",
        "--meta",
        meta.to_str().unwrap(),
        "--format",
        "html",
        "-o",
        html_path.to_str().unwrap(),
    ]);
    ok(&out);
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert_eq!(fetching_references(&html), Vec::<String>::new());
    let png = artifacts().join("purdue-plant-report.png");
    let _ = std::fs::remove_file(&png);
    let netlog = dir.join("netlog.json");
    let dom = chromium(&html_path, &png, &netlog, "1400,2600");
    assert!(
        dom.contains("Zone register") && dom.contains("data-zone=\"control\""),
        "the DOM after rendering:\n{}",
        &dom[..dom.len().min(2000)]
    );
    let png_bytes = std::fs::read(&png).expect("the screenshot");
    assert!(
        png_bytes.starts_with(b"\x89PNG") && png_bytes.len() > 20_000,
        "a real screenshot"
    );
    let urls = page_requests(&std::fs::read_to_string(&netlog).unwrap());
    let foreign: Vec<&String> = urls.iter().filter(|u| !u.starts_with("file://")).collect();
    assert!(foreign.is_empty(), "the page requested: {foreign:?}");
    eprintln!("screenshot: {}", png.display());
    // Printable: Chromium's own print to PDF starts each of the six parts (identity,
    // findings, drawing, zone register, conduit register, traffic) on a page of its own.
    let pdf = artifacts().join("purdue-plant-report.pdf");
    let profile = tmpdir("cdtrp");
    let printed = Command::new("/usr/bin/chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-pdf-header-footer",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg(format!("file://{}", html_path.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(printed.success());
    let bytes = std::fs::read(&pdf).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let pages = text
        .match_indices("/Type /Page")
        .filter(|(i, _)| !text[i + 11..].starts_with('s'))
        .count()
        + text
            .match_indices("/Type/Page")
            .filter(|(i, _)| !text[i + 10..].starts_with('s'))
            .count();
    assert!(pages >= 6, "{pages} page(s) in {}", pdf.display());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_says_what_is_wrong_with_the_exit_codes_of_spec_2() {
    let dir = tmpdir("cdtrb");
    let code = |out: &Output| out.status.code();
    let err = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();
    // Unreachable Prometheus: the operation failed.
    let out = report_cmd(&[
        "policies/minimal.yaml",
        "--prometheus",
        "http://127.0.0.1:9",
        "--format",
        "json",
    ]);
    assert_eq!(code(&out), Some(2), "{}", err(&out));
    assert!(
        err(&out).contains("Prometheus at http://127.0.0.1:9: cannot query it"),
        "{}",
        err(&out)
    );
    assert!(out.stdout.is_empty(), "no report on failure");
    // A window that is no duration, an https URL: the input is rejected.
    let out = report_cmd(&[
        "policies/minimal.yaml",
        "--prometheus",
        "http://127.0.0.1:9",
        "--window",
        "30 days",
        "--format",
        "json",
    ]);
    assert_eq!(code(&out), Some(1), "{}", err(&out));
    assert!(err(&out).contains("--window 30 days: not a duration"));
    // No agent in the state directory named.
    let out = report_cmd(&[
        "policies/minimal.yaml",
        "--state-dir",
        dir.join("none").to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code(&out), Some(2), "{}", err(&out));
    assert!(
        err(&out).contains("no agent evidence in") && err(&out).contains("no state file"),
        "{}",
        err(&out)
    );
    // An invalid policy.
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "version: 1\nsite: x\nzones:\n  - name: Bad\n    security_level: 9\nconduits: []\n",
    )
    .unwrap();
    let out = report_cmd(&[bad.to_str().unwrap(), "--policy-only", "--format", "json"]);
    assert_eq!(code(&out), Some(1), "{}", err(&out));
    assert!(err(&out).contains("the policy is invalid"), "{}", err(&out));
    // -o into a directory that does not exist: nothing written, exit 2.
    let target = dir.join("missing/report.html");
    let out = report_cmd(&[
        "policies/minimal.yaml",
        "--policy-only",
        "--format",
        "html",
        "-o",
        target.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), Some(2), "{}", err(&out));
    // -o: the whole file, no temporary left beside it.
    let target = dir.join("report.json");
    ok(&report_cmd(&[
        "policies/minimal.yaml",
        "--policy-only",
        "--format",
        "json",
        "-o",
        target.to_str().unwrap(),
    ]));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&target).unwrap()).unwrap();
    assert_eq!(v["policy"]["site"], "minimal-example");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Live evidence (root): a real agent, real traffic, a real Prometheus server.

/// Clients may ping the gateway; everything else (tcp/8080) is dropped as `no_conduit`.
fn live_policy(extra_client: &str) -> String {
    format!(
        "version: 1\nsite: report-test\ndefaults:\n  log: deny\nzones:\n  - name: clients\n    security_level: 1\n    purdue_level: 3\n    assets: [{{ name: client, ip: 10.205.0.1 }}{extra_client}]\n  - name: gateway\n    security_level: 2\n    purdue_level: 2\n    assets: [{{ name: gw, ip: 10.205.0.2 }}, {{ name: gw2, ip: 10.206.0.2 }}]\nconduits:\n  - name: ping-gw\n    from: clients\n    to: gateway\n    rules:\n      - {{ proto: icmp, icmp_types: [echo-request] }}\n  - name: unused\n    from: gateway\n    to: clients\n    rules:\n      - {{ proto: tcp, ports: [22] }}\n"
    )
}

fn ping(ns: &Netns, to: &str, count: u32) {
    let ok = ns
        .command("ping")
        .args(["-c", &count.to_string(), "-i", "0.05", "-W", "1", to])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "ping {to}");
}

fn tcp_refused(ns: &Netns, to: &str) {
    let _ = ns
        .command("nc")
        .args(["-z", "-w", "1", to, "8080"])
        .status()
        .unwrap();
}

#[test]
fn live_agent_evidence_matches_its_metrics_and_says_when_the_policy_differs() {
    require_root();
    let client = Netns::new("cdtrc");
    let gw = Netns::new("cdtrg");
    let veth = VethPair::new(&client, "10.205.0.1/24", &gw, "10.205.0.2/24");
    let policy = live_policy("");
    let mut a = Agent::start(BIN.as_ref(), &gw, &[&veth.b], &policy, &[]);
    ping(&client, "10.205.0.2", 4);
    tcp_refused(&client, "10.205.0.2");
    let packets = a
        .metric(&gw, "conduit_packets_total{conduit=\"ping-gw\"}")
        .unwrap();
    let dropped = a
        .metric(&gw, "conduit_dropped_packets_total{src_zone=\"clients\",dst_zone=\"gateway\",reason=\"no_conduit\"}")
        .unwrap();
    assert!(
        packets >= 4.0 && dropped >= 1.0,
        "traffic counted: {packets} {dropped}"
    );
    let state = a.state_dir.to_str().unwrap().to_owned();
    let file = a.policy.to_str().unwrap().to_owned();
    let audit = a.audit_log.to_str().unwrap().to_owned();
    let out = report_cmd(&[
        &file,
        "--state-dir",
        &state,
        "--audit-log",
        &audit,
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["evidence"]["source"], "agent");
    let live = &v["policy"]["live"][0];
    assert_eq!(live["matches"], true, "{live}");
    assert_eq!(live["agent_running"], true);
    let conduit = |n: &str| {
        v["conduits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(
        conduit("ping-gw")["packets"].as_f64(),
        Some(packets),
        "the report says what the metrics say"
    );
    assert_eq!(conduit("unused")["packets"], 0);
    let row = v["matrix"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["src_zone"] == "clients" && m["dst_zone"] == "gateway")
        .unwrap()
        .clone();
    assert_eq!(
        row["dropped"]["no_conduit"].as_f64(),
        Some(dropped),
        "{row}"
    );
    assert_eq!(row["allowed"].as_f64(), Some(packets));
    let kinds: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"unused_conduit"), "{kinds:?}");
    assert!(!kinds.contains(&"policy_mismatch"));
    assert!(
        v["evidence"]["audit_logs"][0]["verdicts"]["deny"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{}",
        v["evidence"]["audit_logs"]
    );
    // The HTML of a live report renders, with the counts in it.
    let html = ok(&report_cmd(&[
        &file,
        "--state-dir",
        &state,
        "--format",
        "html",
    ]));
    assert!(html.contains("runs this file"));
    // A file that is not what runs: the report says so (and on stderr), it does not fail.
    let other = a.policy.with_file_name("other.yaml");
    std::fs::write(
        &other,
        policy.replace("site: report-test", "site: report-test # edited"),
    )
    .unwrap();
    let out = report_cmd(&[
        other.to_str().unwrap(),
        "--state-dir",
        &state,
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["policy"]["live"][0]["matches"], false);
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "policy_mismatch" && f["severity"] == "high")
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("runs another policy"));
    // The agent killed: the pins (and enforcement) stay, the report says the agent is down.
    a.signal(libc::SIGKILL);
    a.wait();
    let v: serde_json::Value = serde_json::from_str(&ok(&report_cmd(&[
        &file,
        "--state-dir",
        &state,
        "--format",
        "json",
    ])))
    .unwrap();
    assert_eq!(v["policy"]["live"][0]["agent_running"], false);
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "agent_not_running")
    );
    let after = v["conduits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ping-gw")
        .unwrap();
    assert_eq!(
        after["packets"].as_f64(),
        Some(packets),
        "the pinned counters stay"
    );
}

/// A Prometheus server started by the test in `ns`, stopped (by its PID) on drop.
struct Prometheus {
    child: std::process::Child,
    port: u16,
}

impl Prometheus {
    fn start(ns: &Netns, dir: &Path, targets: &[u16], port: u16) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let list: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: conduit\n    static_configs:\n      - targets: [{}]\n", list.join(", ")),
        )
        .unwrap();
        let child = ns
            .command("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package)");
        Self { child, port }
    }

    fn query(&self, ns: &Netns, q: &str) -> Vec<serde_json::Value> {
        let enc: String = q
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        conduit_tests::agent::http_get(ns, self.port, &format!("/api/v1/query?query={enc}"))
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        conduit_tests::signal(self.child.id(), libc::SIGTERM);
        let _ = self.child.wait();
    }
}

/// `conduit report` inside `ns` (where Prometheus listens on loopback).
fn report_in(ns: &Netns, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", ns.name))
        .arg("--")
        .arg(BIN)
        .arg("report")
        .args(args)
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .unwrap()
}

#[test]
fn two_gateways_scraped_by_one_prometheus_are_summed_and_broken_down() {
    require_root();
    // One gateway namespace with two agents (two gateways of one site), each on its own port
    // to its own client.
    let gw = Netns::new("cdtrg");
    let c1 = Netns::new("cdtr1");
    let c2 = Netns::new("cdtr2");
    let v1 = VethPair::new(&c1, "10.205.0.1/24", &gw, "10.205.0.2/24");
    let v2 = VethPair::new(&c2, "10.206.0.1/24", &gw, "10.206.0.2/24");
    let policy = live_policy(", { name: client2, ip: 10.206.0.1 }");
    let base = 21_000 + (std::process::id() % 10_000) as u16;
    let a1 = Agent::start_on_port(BIN.as_ref(), &gw, &[&v1.b], &policy, &[], base);
    let a2 = Agent::start_on_port(BIN.as_ref(), &gw, &[&v2.b], &policy, &[], base + 1);
    let dir = tmpdir("cdtrp");
    let prom = Prometheus::start(&gw, &dir, &[base, base + 1], base + 2);
    // An empty window first: a site no gateway runs.
    let scraped = poll(Duration::from_secs(60), Duration::from_millis(500), || {
        prom.query(&gw, "up").len() >= 2
    });
    assert!(scraped.is_some(), "Prometheus scrapes both agents");
    let url = format!("http://127.0.0.1:{}", prom.port);
    let other_site = a1.policy.with_file_name("other-site.yaml");
    std::fs::write(
        &other_site,
        policy.replace("site: report-test", "site: elsewhere"),
    )
    .unwrap();
    let out = report_in(
        &gw,
        &[
            other_site.to_str().unwrap(),
            "--prometheus",
            &url,
            "--window",
            "1h",
            "--format",
            "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert!(v["conduits"][0]["packets"].is_null(), "no data is not zero");
    assert!(
        v["evidence"]["notes"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap()
            .contains("no gateway of this site reported")),
        "{}",
        v["evidence"]
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning"),
        "said on stderr too"
    );
    // Traffic: 3 pings through gateway 1, 5 through gateway 2, a refused tcp on each.
    ping(&c1, "10.205.0.2", 3);
    ping(&c2, "10.206.0.2", 5);
    tcp_refused(&c1, "10.205.0.2");
    tcp_refused(&c2, "10.206.0.2");
    let p1 = a1
        .metric(&gw, "conduit_packets_total{conduit=\"ping-gw\"}")
        .unwrap();
    let p2 = a2
        .metric(&gw, "conduit_packets_total{conduit=\"ping-gw\"}")
        .unwrap();
    let d1 = a1.metric(&gw, "conduit_dropped_packets_total{src_zone=\"clients\",dst_zone=\"gateway\",reason=\"no_conduit\"}").unwrap();
    let d2 = a2.metric(&gw, "conduit_dropped_packets_total{src_zone=\"clients\",dst_zone=\"gateway\",reason=\"no_conduit\"}").unwrap();
    // Until Prometheus has the final values of both, and some history (increase()
    // extrapolates by at most half a scrape interval: with 20 s of samples, rounding gives
    // the exact counts).
    let t = Instant::now();
    loop {
        let sum = |q: &str| {
            prom.query(&gw, q)
                .first()
                .and_then(|s| s["value"][1].as_str())
                .and_then(|s| s.parse::<f64>().ok())
        };
        let have = (
            sum("sum(conduit_packets_total{conduit=\"ping-gw\"})"),
            // The refused connections' series only: the clients' own link-local chatter
            // (IPv6 multicast listener reports as their interfaces come up) is dropped as
            // unknown-to-unknown, at times the test does not choose.
            sum(
                "sum(conduit_dropped_packets_total{src_zone=\"clients\",dst_zone=\"gateway\",reason=\"no_conduit\"})",
            ),
        );
        if have == (Some(p1 + p2), Some(d1 + d2)) && t.elapsed() > Duration::from_secs(20) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "Prometheus has the counts: {have:?}, the agents: {p1} + {p2}, {d1} + {d2}; drops: {:?}",
            prom.query(&gw, "conduit_dropped_packets_total")
        );
        sleep(Duration::from_millis(500));
    }
    let file = a1.policy.to_str().unwrap().to_owned();
    let out = report_in(
        &gw,
        &[
            &file,
            "--prometheus",
            &url,
            "--window",
            "1h",
            "--format",
            "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    let gws: Vec<String> = v["evidence"]["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        gws,
        [
            format!("127.0.0.1:{base}"),
            format!("127.0.0.1:{}", base + 1)
        ]
    );
    let c = v["conduits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ping-gw")
        .unwrap()
        .clone();
    assert_eq!(
        c["packets"].as_f64(),
        Some(p1 + p2),
        "summed over both gateways: {c}"
    );
    assert_eq!(c["per_gateway"][&gws[0]].as_f64(), Some(p1), "{c}");
    assert_eq!(c["per_gateway"][&gws[1]].as_f64(), Some(p2), "{c}");
    // What Prometheus holds, for the messages below.
    let held: Vec<String> = [
        "count_over_time(up[1h])",
        "count_over_time(conduit_dropped_packets_total[1h])",
        "conduit_dropped_packets_total",
        "increase(conduit_dropped_packets_total[1h])",
    ]
    .iter()
    .map(|q| format!("{q}: {:?}", prom.query(&gw, q)))
    .collect();
    let row = v["matrix"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["src_zone"] == "clients" && m["dst_zone"] == "gateway")
        .unwrap()
        .clone();
    assert_eq!(
        row["dropped"]["no_conduit"].as_f64(),
        Some(d1 + d2),
        "{row}\n{held:#?}"
    );
    assert_eq!(
        row["dropped_per_gateway"][&gws[0]].as_f64(),
        Some(d1),
        "{row}"
    );
    assert_eq!(
        row["dropped_per_gateway"][&gws[1]].as_f64(),
        Some(d2),
        "{row}"
    );
    assert!(
        v["policy"]["live"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["matches"] == true),
        "{}",
        v["policy"]["live"]
    );
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "unused_conduit" && f["subject"] == "unused")
    );
    drop(prom);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The issue's figure: the report of a 100,000-asset policy (the benchmarks' generator: 100
/// zones, 1,000 conduits) in every format. Prints the times, asserts no bound: tests run a
/// debug build on a shared machine, where a bound would measure the neighbours (the README
/// gives the release figure).
#[test]
fn a_100k_asset_policy_is_reported_in_every_format() {
    let dir = tmpdir("cdtrk");
    let p = dir.join("100k.yaml");
    std::fs::write(&p, conduit_tests::policygen::policy_text(100_000, 1_000, 1)).unwrap();
    for format in ["json", "html", "svg", "md"] {
        let out = dir.join(format!("r.{format}"));
        let t = Instant::now();
        ok(&report_cmd(&[
            p.to_str().unwrap(),
            "--policy-only",
            "--format",
            format,
            "-o",
            out.to_str().unwrap(),
        ]));
        let took = t.elapsed();
        eprintln!(
            "100k assets, {format}: {:.2} s, {} bytes",
            took.as_secs_f64(),
            std::fs::metadata(&out).unwrap().len()
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every warning of `conduit check` is a finding, against the zone or conduit it is about.
#[test]
fn lint_warnings_are_findings_against_their_zone_or_conduit() {
    let dir = tmpdir("cdtrl");
    let p = write_generated(&dir);
    let check = Command::new(BIN)
        .args(["check", p.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    let check: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    let warnings = check["warnings"].as_array().unwrap();
    assert!(
        warnings.len() > 10,
        "the generated policy has lint warnings"
    );
    let v: serde_json::Value = serde_json::from_str(&ok(&report_cmd(&[
        p.to_str().unwrap(),
        "--policy-only",
        "--format",
        "json",
    ])))
    .unwrap();
    let lint: Vec<&serde_json::Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "lint")
        .collect();
    assert_eq!(lint.len(), warnings.len());
    for w in warnings {
        let line = w["line"].as_u64().unwrap();
        let f = lint
            .iter()
            .find(|f| {
                f["message"]
                    .as_str()
                    .unwrap()
                    .starts_with(w["message"].as_str().unwrap())
            })
            .unwrap_or_else(|| panic!("no finding for {w}"));
        let subject = f["subject"].as_str().unwrap_or_else(|| panic!("{f}"));
        let owner = v["zones"]
            .as_array()
            .unwrap()
            .iter()
            .chain(v["conduits"].as_array().unwrap())
            .find(|x| x["name"] == subject)
            .unwrap();
        assert!(
            owner["lint"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["line"].as_u64() == Some(line)),
            "{subject} lists the warning of line {line}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
