//! How long a large site's policy takes to read and to compile, and how much memory it takes.
//!
//!     cargo bench -p conduit-agent --bench compile
//!     CONDUIT_BENCH_QUICK=1 cargo bench -p conduit-agent --bench compile   # 1k and 100k only
//!
//! Policies are generated in memory as YAML text (what a user's file would be, by
//! `conduit_tests::policygen`): 100 zones, N `ip` assets spread over them (every 10th
//! MAC-bound) plus one `cidr` asset per zone, and 10,000 conduits between random pairs of
//! zones with 1 to 3 rules each (single ports, port ranges, ICMP types). Each size runs 3 times; the table shows the medians. Peak RSS is the
//! process's VmHWM, reset before each size where the kernel allows it (`/proc/self/clear_refs`).
//!
//! The goal: compiling 100k assets and 10k conduits takes at most 1 s.
use std::{hint::black_box, time::Instant};

use conduit_agent::policy::{compile::compile, validate::validate_str};
use conduit_tests::{
    median,
    policygen::{ZONES, policy_text},
};

const CONDUITS: usize = 10_000;
const RUNS: usize = 3;
const GOAL_MS: f64 = 1000.0;

/// A field of /proc/self/status in KiB.
fn status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0); false where that is not allowed.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

struct Row {
    assets: usize,
    conduits: usize,
    yaml_mib: f64,
    validate_ms: f64,
    compile_ms: f64,
    total_ms: f64,
    id_exact: usize,
    entries: usize,
    peak_mib: f64,
}

fn run(assets: usize) -> Row {
    let reset = reset_peak_rss();
    let text = policy_text(assets, CONDUITS, 0x5eed_0000 + assets as u64);
    let (mut v, mut c, mut t) = (Vec::new(), Vec::new(), Vec::new());
    let (mut id_exact, mut entries) = (0, 0);
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let (policy, diags) = validate_str(black_box(&text));
        let t1 = Instant::now();
        let Some(policy) = policy else {
            panic!("the generated policy does not validate:\n{diags}");
        };
        let compiled = match compile(black_box(&policy), 0) {
            Ok(c) => c,
            Err(e) => panic!("the generated policy does not compile: {e:?}"),
        };
        let t2 = Instant::now();
        id_exact = compiled.id_exact.len();
        entries = compiled.conduits.len();
        v.push((t1 - t0).as_secs_f64() * 1e3);
        c.push((t2 - t1).as_secs_f64() * 1e3);
        t.push((t2 - t0).as_secs_f64() * 1e3);
        drop(black_box(compiled));
        drop(black_box(policy));
    }
    let peak = status_kib("VmHWM").unwrap_or(0) as f64 / 1024.0;
    if !reset {
        eprintln!("note: could not reset VmHWM; the peak RSS is the process's so far");
    }
    Row {
        assets,
        conduits: CONDUITS,
        yaml_mib: text.len() as f64 / (1024.0 * 1024.0),
        validate_ms: median(&mut v),
        compile_ms: median(&mut c),
        total_ms: median(&mut t),
        id_exact,
        entries,
        peak_mib: peak,
    }
}

fn main() {
    let quick = std::env::var("CONDUIT_BENCH_QUICK").is_ok_and(|v| v == "1");
    let sizes: &[usize] = if quick {
        &[1_000, 100_000]
    } else {
        &[1_000, 100_000, 1_000_000]
    };
    println!(
        "Policy compile benchmark ({} zones, {CONDUITS} conduits, median of {RUNS} runs{})\n",
        ZONES,
        if cfg!(debug_assertions) {
            ", DEBUG BUILD"
        } else {
            ""
        }
    );
    println!(
        "| assets | conduits | YAML MiB | parse+validate ms | compile ms | total ms | id_exact | conduits (entries) | peak RSS MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut goal = None;
    for &n in sizes {
        let r = run(n);
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {:.0} |",
            r.assets,
            r.conduits,
            r.yaml_mib,
            r.validate_ms,
            r.compile_ms,
            r.total_ms,
            r.id_exact,
            r.entries,
            r.peak_mib
        );
        if n == 100_000 {
            goal = Some(r.compile_ms);
        }
    }
    if let Some(ms) = goal {
        println!(
            "\nGoal: compile of 100k assets + 10k conduits <= {GOAL_MS:.0} ms: {} ({ms:.1} ms)",
            if ms <= GOAL_MS { "MET" } else { "MISSED" }
        );
    }
}
