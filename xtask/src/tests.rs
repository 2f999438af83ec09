//! The test binaries of `cargo xtask test`, two at a time.
//!
//! `cargo test` runs a workspace's test binaries one after the other, and much of this suite's
//! time is spent waiting: agents starting and reloading, namespaces, qemu-less kernel work,
//! Prometheus scrapes. Two binaries at once (each still running its own tests on several
//! threads) shorten the run on the two-core CI machine. Every test already
//! creates uniquely named namespaces, interfaces, pins and ports (they run concurrently within
//! a binary), so binaries can share the machine as well. `CONDUIT_TEST_LANES=1` runs them one
//! at a time.
use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

struct Binary {
    /// `package/target` (`conduit-agent/agent`, `conduit-tests/lib`).
    name: String,
    exe: PathBuf,
    /// The package's directory: `cargo test` runs a test binary there.
    dir: PathBuf,
    package: String,
}

/// Test binaries that take longest go first, so that the two lanes end together.
const LONGEST_FIRST: &[&str] = &[
    "conduit-agent/agent",
    "conduit-tests/differential",
    "conduit-tests/bypass",
    "conduit-agent/deploy",
    "conduit-agent/invalid_corpus",
    "conduit-agent/apply",
    "conduit-agent/plant",
];

pub fn run(root: &Path) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("[xtask] cargo {}", crate::TEST_BUILD.join(" "));
    let out = Command::new(&cargo)
        .args(crate::TEST_BUILD)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(exe), Some(target), Some(manifest)) = (
            v["executable"].as_str(),
            v["target"]["name"].as_str(),
            v["manifest_path"].as_str(),
        ) else {
            continue;
        };
        if !v["profile"]["test"].as_bool().unwrap_or(false) {
            continue;
        }
        let dir = Path::new(manifest)
            .parent()
            .context("a manifest path without a directory")?
            .to_owned();
        let package = package_name(Path::new(manifest))?;
        bins.push(Binary {
            name: format!("{package}/{target}"),
            exe: PathBuf::from(exe),
            dir,
            package,
        });
    }
    every_test_file_built(root, &bins)?;
    let rank = |b: &Binary| {
        LONGEST_FIRST
            .iter()
            .position(|n| *n == b.name)
            .unwrap_or(LONGEST_FIRST.len())
    };
    bins.sort_by_key(|b| (rank(b), b.name.clone()));
    let lanes: usize = std::env::var("CONDUIT_TEST_LANES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .max(1);
    let logs = root.join("target/xtask-test");
    std::fs::create_dir_all(&logs)?;
    let queue = Mutex::new(bins.into_iter().collect::<VecDeque<_>>());
    let failed = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..lanes {
            s.spawn(|| {
                loop {
                    let Some(b) = queue.lock().unwrap().pop_front() else {
                        return;
                    };
                    let ok = run_one(&b, &logs, &cargo);
                    if !ok {
                        failed.lock().unwrap().push(b.name);
                    }
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap();
    eprintln!(
        "[xtask] test binaries: {} lane(s), {:.0} s",
        lanes,
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        bail!(
            "test binaries failed: {} (logs in {})",
            failed.join(", "),
            logs.display()
        )
    }
}

/// The `name` of a package's manifest.
fn package_name(manifest: &Path) -> Result<String> {
    let text = std::fs::read_to_string(manifest)?;
    text.lines()
        .find_map(|l| {
            let v = l.trim().strip_prefix("name")?.trim().strip_prefix('=')?;
            Some(v.trim().trim_matches('"').to_owned())
        })
        .with_context(|| format!("no package name in {}", manifest.display()))
}

/// Runs one test binary as `cargo test` would (in its package's directory, with cargo's
/// variables), its output into a log file that is printed whole when it fails.
fn run_one(b: &Binary, logs: &Path, cargo: &str) -> bool {
    let log = logs.join(format!("{}.log", b.name.replace('/', "-")));
    let t = Instant::now();
    let status = std::fs::File::create(&log).and_then(|f| {
        let e = f.try_clone()?;
        Command::new(&b.exe)
            .current_dir(&b.dir)
            .env("CARGO", cargo)
            .env("CARGO_MANIFEST_DIR", &b.dir)
            .env("CARGO_PKG_NAME", &b.package)
            .stdout(f)
            .stderr(e)
            .status()
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let summary = text
        .lines()
        .rev()
        .find(|l| l.starts_with("test result:"))
        .unwrap_or("")
        .to_owned();
    let ok = matches!(&status, Ok(s) if s.success());
    if ok {
        eprintln!(
            "[xtask] {}: {} ({:.0} s)",
            b.name,
            summary,
            t.elapsed().as_secs_f64()
        );
    } else {
        eprintln!(
            "[xtask] {}: FAILED ({:.0} s), its output:\n{text}",
            b.name,
            t.elapsed().as_secs_f64()
        );
        if let Err(e) = &status {
            eprintln!("[xtask] {}: could not run it: {e}", b.name);
        }
    }
    ok
}

/// Every integration test file of the workspace has its binary among `bins`: a test target
/// left out (a required feature not turned on, a package not built) fails the run instead of
/// passing it unseen.
fn every_test_file_built(root: &Path, bins: &[Binary]) -> Result<()> {
    let mut missing = Vec::new();
    for (package, dir) in [
        ("conduit-agent", "conduit-agent/tests"),
        ("conduit-tests", "tests/tests"),
    ] {
        for e in std::fs::read_dir(root.join(dir)).with_context(|| format!("listing {dir}"))? {
            let path = e?.path();
            if path.extension().is_some_and(|x| x == "rs")
                && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            {
                let name = format!("{package}/{stem}");
                if !bins.iter().any(|b| b.name == name) {
                    missing.push(name);
                }
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "these test files were not built, so they would not run: {}",
            missing.join(", ")
        );
    }
    Ok(())
}
