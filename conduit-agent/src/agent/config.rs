//! What `conduit run` is asked to do, as plain values: the command line (`cli/run.rs`) builds
//! it; the agent knows nothing of clap.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::datapath::AttachMode;

#[derive(Clone, Debug)]
pub struct Config {
    /// The policy file (YAML), reloaded on SIGHUP and when it changes.
    pub policy: PathBuf,
    /// The interfaces to attach to.
    pub ifaces: Vec<String>,
    pub xdp_mode: AttachMode,
    /// Where /metrics and /healthz are served.
    pub metrics_addr: SocketAddr,
    /// The audit log: a file to append JSON lines to, or `-` for standard output.
    pub audit_log: Option<PathBuf>,
    /// Leave the program attached and pinned on SIGTERM/SIGINT.
    pub keep_on_exit: bool,
    /// Where links and maps are pinned (bpffs).
    pub pin_dir: PathBuf,
    /// Where the state file (`conduit status`) and the control socket live.
    pub state_dir: PathBuf,
    /// How long the policy file must stay unchanged before a change is loaded.
    pub debounce: Duration,
    /// Where the verifier's whole log goes if it refuses the program.
    pub verifier_log: Option<PathBuf>,
    /// Learn the plant into this directory (`conduit discover --learned`).
    pub learn_dir: Option<PathBuf>,
    /// How often what the datapath learned is moved into the learn dir.
    pub learn_interval: Duration,
    /// The most records the learn dir keeps.
    pub learn_max_records: usize,
    /// Load only policies signed by a key of this allowed-signers file.
    pub allowed_signers: Option<PathBuf>,
    /// The change log, if one is kept.
    pub change_log: Option<PathBuf>,
}
