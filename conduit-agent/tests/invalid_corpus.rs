//! The corpus of invalid policies (`tests/invalid/`): each is rejected by `conduit check` with
//! exit status 1, an error on the expected line that names the offending token, and no panic.
//! Plus the files the corpus cannot hold: empty, binary garbage, and 50 MB.
use std::{path::Path, process::Command, time::Instant};

fn check(path: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_conduit"))
        .arg("check")
        .arg(path)
        .output()
        .expect("run conduit check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_invalid_policy_gets_a_clear_error_on_its_line() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 60, "the corpus has {} files", files.len());
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let first = text.lines().next().unwrap_or_default();
        let spec = first
            .strip_prefix("# expect:")
            .unwrap_or_else(|| panic!("{}: no `# expect:` line", f.display()));
        let (line, substring) = spec.trim().split_once(':').unwrap_or((spec.trim(), ""));
        let line: usize = line.trim().parse().unwrap();
        let substring = substring.trim().to_lowercase();
        let (code, stdout, stderr) = check(f);
        let name = f.file_name().unwrap().to_string_lossy();
        if code != 1 {
            failures.push(format!("{name}: exit {code}, want 1\n{stdout}{stderr}"));
            continue;
        }
        if stderr.contains("panicked") {
            failures.push(format!("{name}: panicked: {stderr}"));
            continue;
        }
        let shown = f.display().to_string();
        let hit = stdout.lines().any(|l| {
            let Some(rest) = l.strip_prefix(&format!("{shown}:")) else {
                return false;
            };
            let mut parts = rest.splitn(3, ':');
            let l_no: usize = parts.next().and_then(|x| x.parse().ok()).unwrap_or(0);
            let _col = parts.next();
            let msg = parts.next().unwrap_or_default().to_lowercase();
            l_no == line && msg.starts_with(" error: ") && msg.contains(&substring)
        });
        if !hit {
            failures.push(format!(
                "{name}: no error at line {line} containing {substring:?}; got:\n{stdout}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} files:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

fn temp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("conduit-corpus-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

fn rejected_at_line_1(path: &Path, fragment: &str) {
    let (code, stdout, stderr) = check(path);
    std::fs::remove_file(path).ok();
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stdout.contains(": error: ") && stdout.contains(fragment),
        "{stdout}"
    );
}

#[test]
fn empty_file() {
    rejected_at_line_1(&temp("empty.yaml", b""), "empty");
    rejected_at_line_1(&temp("comments.yaml", b"# only a comment\n\n"), "empty");
}

#[test]
fn binary_garbage() {
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    rejected_at_line_1(&temp("garbage.bin", &garbage), "not UTF-8");
    rejected_at_line_1(&temp("nul.yaml", b"version: 1\nsite: \0x\n"), "NUL");
}

#[test]
fn fifty_megabyte_file() {
    // 50 MB of assets in one zone, with one error at the very end.
    let mut y = String::from(
        "version: 1\nsite: big\nzones:\n  - name: z\n    security_level: 1\n    assets:\n",
    );
    let mut i = 0u32;
    while y.len() < 50 << 20 {
        y += &format!(
            "      - {{ name: a{i}, ip: 10.{}.{}.{} }}\n",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        );
        i += 1;
    }
    let bad_line = y.lines().count() + 1;
    y += "      - { name: bad, ip: 10.0.0.300 }\nconduits: []\n";
    let p = temp("big.yaml", y.as_bytes());
    let t = Instant::now();
    let (code, stdout, stderr) = check(&p);
    std::fs::remove_file(&p).ok();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stdout.contains(&format!(":{bad_line}:")) && stdout.contains("10.0.0.300"),
        "{stdout}"
    );
    eprintln!("50 MB policy checked in {:?}", t.elapsed());
}
