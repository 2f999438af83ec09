//! Harness for Conduit's root integration tests: network namespaces and veth pairs that the
//! test itself creates (unique names, removed on drop, so also when a test panics), running
//! code inside a namespace, and hand-built frames.
//!
//! Tests that need root call [`require_root`] first: it fails loudly, never skips.
pub mod agent;
pub mod capture;
pub mod frames;
pub mod kernel;
pub mod netns;
pub mod peers;
pub mod plant;
pub mod policygen;
pub mod profile;
pub mod random;
pub mod reference;
pub mod report;
pub mod tmpfs;
pub mod xdp_filter;

pub use netns::{Netns, VethPair, in_netns, ip, unique_name};

/// Panics with an explanation unless the process can load BPF programs (root).
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (BPF, network namespaces); run it through `cargo xtask test` \
         as root. It fails rather than skips so that CI can never pass without running it."
    );
}

/// The property tests' configuration: 96 cases per property, or `PROPTEST_CASES` when set
/// (for a longer hunt); no regression files next to the sources (a failure prints its
/// minimal input).
pub fn proptest_config() -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96);
    proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

/// Sends signal `sig` (`libc::SIG*`) to process `pid`, a child this test started and has not
/// waited for yet (so its PID cannot have been reused). A process that is gone already is
/// no error: what the signal was for has happened.
pub fn signal(pid: u32, sig: i32) {
    let (Some(p), Some(s)) = (
        rustix::process::Pid::from_raw(pid as i32),
        rustix::process::Signal::from_named_raw(sig),
    ) else {
        panic!("signal {sig} to process {pid}: not a process or not a signal");
    };
    let _ = rustix::process::kill_process(p, s);
}

/// The median of `v` (sorted in place); NaN when it is empty.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The workspace's root directory (the checkout).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The release `conduit` binary the benchmarks run (`CONDUIT_BIN` overrides it): what
/// `cargo xtask bench` builds first.
pub fn conduit_bin() -> std::path::PathBuf {
    std::env::var_os("CONDUIT_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/conduit"))
}

/// Polls `f` every `every` for at most `limit`: how long it took to become true, or `None`.
pub fn poll(
    limit: std::time::Duration,
    every: std::time::Duration,
    mut f: impl FnMut() -> bool,
) -> Option<std::time::Duration> {
    let t = std::time::Instant::now();
    loop {
        if f() {
            return Some(t.elapsed());
        }
        if t.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Waits up to `limit` for `child` to exit: `true` if it did (its status is then for
/// `wait`/`wait_with_output` to collect), `false` if it still runs.
pub fn exited_within(child: &mut std::process::Child, limit: std::time::Duration) -> bool {
    poll(limit, std::time::Duration::from_millis(20), || {
        child.try_wait().is_ok_and(|s| s.is_some())
    })
    .is_some()
}

/// Waits up to 15 s (polling every 100 ms) until `f` holds, or panics naming `what`.
pub fn wait_for(what: &str, f: impl FnMut() -> bool) {
    let ms = std::time::Duration::from_millis;
    if poll(ms(15_000), ms(100), f).is_none() {
        panic!("timed out waiting for {what}");
    }
}
