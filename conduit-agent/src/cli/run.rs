//! `conduit run`: the thin shell around [`crate::agent`].
use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::ValueEnum;

use crate::{
    agent::{self, Config},
    datapath::AttachMode,
    exit::Exit,
};

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The policy file (YAML). Reloaded on SIGHUP and when the file changes.
    #[arg(long, value_name = "POLICY")]
    pub policy: PathBuf,
    /// Interface to attach to (repeat for every port of the gateway).
    #[arg(long = "iface", required = true, value_name = "IF")]
    pub ifaces: Vec<String>,
    /// How to attach: native where the driver supports it (auto), or force one mode.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub xdp_mode: AttachMode,
    /// Where to serve /metrics and /healthz.
    #[arg(long, default_value = "127.0.0.1:9642", value_name = "ADDR")]
    pub metrics_addr: std::net::SocketAddr,
    /// Audit log: a file to append JSON lines to, or `-` for standard output.
    #[arg(long, value_name = "PATH")]
    pub audit_log: Option<PathBuf>,
    /// On SIGTERM/SIGINT, leave the program attached and pinned (for upgrades: the next
    /// `conduit run` adopts it without a gap).
    #[arg(long)]
    pub keep_on_exit: bool,
    /// Where the program's links and maps are pinned (bpffs).
    #[arg(long, default_value = crate::agent::DEFAULT_PIN_DIR, value_name = "DIR")]
    pub pin_dir: PathBuf,
    /// Where the agent keeps its state file for `conduit status`.
    #[arg(long, default_value = crate::agent::DEFAULT_STATE_DIR, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Log format: text for a terminal, json for log collectors. RUST_LOG sets the level.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// How long the policy file must stay unchanged before a change is loaded (ms).
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub debounce_ms: u64,
    /// Write the verifier's whole log here if it refuses the XDP program.
    #[arg(long, value_name = "FILE")]
    pub verifier_log: Option<PathBuf>,
    /// Learn the plant for `conduit discover --learned DIR`: the datapath records every new
    /// flow (client, server, protocol, port, the client's MAC, answered or not, verdict,
    /// counts; Modbus function codes and unit IDs), in any mode, and the agent keeps the
    /// records in DIR/learned.jsonl, merged across restarts. Packets of established flows pay
    /// nothing for it.
    #[arg(long, value_name = "DIR")]
    pub learn_dir: Option<PathBuf>,
    /// How often the agent moves what the datapath learned into the learn dir (seconds; it
    /// also does on exit). The kernel holds 65,536 flow records between two drains; what
    /// does not fit is counted in conduit_learn_dropped_total.
    #[arg(long, default_value_t = 30, value_name = "SECS", requires = "learn_dir",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub learn_interval: u64,
    /// The most records the learn dir keeps (at most 460 bytes each, about 300 for IPv4); records of flows
    /// already in it are still updated, new ones beyond the cap are counted as dropped.
    #[arg(long, default_value_t = crate::learned::DEFAULT_MAX_RECORDS, value_name = "N",
          requires = "learn_dir")]
    pub learn_max_records: usize,
    /// Load only policies signed by a key of FILE (`ssh-keygen`'s allowed-signers format):
    /// the signature is POLICY.sig, made by `ssh-keygen -Y sign -f KEY -n conduit-policy
    /// POLICY`. An unsigned or badly signed policy is refused like an invalid one. FILE is
    /// read again at every reload.
    #[arg(long, value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,
    /// The change log: one hash-chained JSON line per policy that goes live (`conduit
    /// changelog verify|show`). [default: STATE_DIR/changelog.jsonl]
    #[arg(long, value_name = "PATH", conflicts_with = "no_change_log")]
    pub change_log: Option<PathBuf>,
    /// Keep no change log.
    #[arg(long)]
    pub no_change_log: bool,
}

impl From<RunArgs> for Config {
    fn from(a: RunArgs) -> Self {
        let change_log = match (a.no_change_log, a.change_log) {
            (true, _) => None,
            (false, Some(path)) => Some(path),
            (false, None) => Some(a.state_dir.join(crate::integrity::changelog::DEFAULT_FILE)),
        };
        Config {
            policy: a.policy,
            ifaces: a.ifaces,
            xdp_mode: a.xdp_mode,
            metrics_addr: a.metrics_addr,
            audit_log: a.audit_log,
            keep_on_exit: a.keep_on_exit,
            pin_dir: a.pin_dir,
            state_dir: a.state_dir,
            debounce: Duration::from_millis(a.debounce_ms),
            verifier_log: a.verifier_log,
            learn_dir: a.learn_dir,
            learn_interval: Duration::from_secs(a.learn_interval),
            learn_max_records: a.learn_max_records,
            allowed_signers: a.allowed_signers,
            change_log,
        }
    }
}

// The attach modes as the command line spells them (`--xdp-mode auto|native|skb`); the
// datapath's type knows nothing of clap.
impl ValueEnum for AttachMode {
    fn value_variants<'a>() -> &'a [Self] {
        &[AttachMode::Auto, AttachMode::Native, AttachMode::Skb]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            AttachMode::Auto => PossibleValue::new("auto")
                .help("Native (driver) XDP where the driver supports it, generic (skb) otherwise"),
            AttachMode::Native => PossibleValue::new("native")
                .help("Driver mode only; fails where the driver has no XDP support"),
            AttachMode::Skb => PossibleValue::new("skb")
                .help("Generic mode (`skb`): works on every interface, slower"),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b.json().flatten_event(true).try_init(),
    };
}

pub fn main(args: RunArgs) -> ExitCode {
    init_logging(args.log_format);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return Exit::Failed.into();
        }
    };
    match rt.block_on(agent::run(args.into())) {
        Ok(()) => Exit::Ok.into(),
        Err(f) => {
            tracing::error!("{}", f.message);
            f.code.into()
        }
    }
}
