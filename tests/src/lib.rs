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
pub mod plant;
pub mod policygen;
pub mod random;
pub mod report;
pub mod tmpfs;
pub mod xdp_filter;

pub use netns::{Netns, VethPair, in_netns, ip, unique_name};

/// Panics with an explanation unless the process can load BPF programs (root).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
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
