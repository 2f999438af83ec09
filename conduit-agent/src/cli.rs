//! The command line (SPEC §2). Exit status: 0 success, 1 input rejected, 2 operation failed.
use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};

use crate::exit::Exit;
use crate::{datapath::AttachMode, explain, run};

#[derive(Parser, Debug)]
#[command(
    name = "conduit",
    version,
    about = "IEC 62443 zones-and-conduits enforcement at line rate, with XDP",
    long_about = "Conduit compiles a YAML zones-and-conduits policy into BPF maps and enforces it \
                  with an XDP program on the interfaces between plant zones. Everything a conduit \
                  does not allow is denied.\n\nExit status: 0 success, 1 input rejected (invalid \
                  policy, bad arguments), 2 or more the operation failed (no permission, kernel \
                  refused)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate a policy: every error with its line and column, and IEC 62443 lint warnings.
    ///
    /// Errors are printed as `POLICY:LINE:COL: error: MESSAGE`, warnings as
    /// `POLICY:LINE:COL: warning: MESSAGE`, one per line. Exit status 0 when the policy is valid
    /// (warnings allowed unless --strict), 1 when it is not.
    Check {
        /// The policy file (YAML).
        policy: PathBuf,
        /// Treat lint warnings as errors (for CI and config-management `validate:` hooks).
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        signed: crate::integrity::command::CheckSignature,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Judge the first packet of a new flow against a policy, without any kernel, and say why.
    Explain(explain::ExplainArgs),
    /// Run the agent: load the policy, attach to every --iface, serve metrics, reload on
    /// SIGHUP or when the policy file changes, write the audit log.
    Run(RunArgs),
    /// Run every frame of a capture (pcap or pcapng) through the real XDP program
    /// (BPF_PROG_TEST_RUN) with the policy in fresh maps, flow tracking included. Needs root,
    /// no interface.
    Replay(crate::replay::ReplayArgs),
    /// Turn a plant's real traffic (captures, audit logs) into a draft policy for review:
    /// hosts, zones, conduits for every answered flow and nothing else, with the evidence in
    /// comments and every zone and conduit `review: pending`; then judge every observed flow
    /// against the draft (and --base) with the datapath's own verdict function.
    ///
    /// Exit status 0 when the draft was made, 1 when an input was rejected (named, with the
    /// frame or line), 2 when the draft could not be written.
    Discover(crate::discover::command::DiscoverArgs),
    /// Can this host run Conduit? What the kernel offers the XDP program (probed), whether the
    /// program loads, and the verifier's figures: instructions processed, load time, the
    /// stack of every subprogram and of the deepest call chain. Needs root. Exit status 0
    /// when the program loads and nothing it needs is missing, 2 otherwise.
    Kernel(crate::kernel::KernelArgs),
    /// Evidence for the audit (SPEC §6): the zone-and-conduit diagram, the zone and conduit
    /// registers, traffic by zone pair and findings, from the policy, the agent's counters or
    /// a Prometheus server, and audit logs. Exit status 1 for bad input (policy, metadata,
    /// arguments), 2 when the evidence cannot be read (no agent, Prometheus unreachable).
    Report(crate::report_cmd::ReportArgs),
    /// What is attached where, which policy (sha256, generation) is live, and the counters.
    ///
    /// Exit status 0 when the program is attached to at least one interface, 3 when nothing
    /// is attached (as `systemctl status` for an inactive unit).
    Status {
        #[command(flatten)]
        pins: PinArgs,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Open an on-demand conduit (`on_demand` in the policy, SPEC §8) for a while.
    ///
    /// The running agent checks the conduit and the duration against the live policy, opens
    /// the conduit in the datapath until then, and records who (the user running this, and
    /// SUDO_USER), why (--reason) and until when in the change log, the audit log and
    /// `conduit status`. The datapath closes it on time by itself, with or without an agent.
    /// Granting again replaces the earlier grant's end. Exit status 1 for an unknown conduit,
    /// one that is not on demand, or a duration above its `max`; 2 when no agent answers.
    Grant(crate::grant_cmd::GrantArgs),
    /// Close an on-demand conduit before its grant ends, its open sessions included.
    ///
    /// Done by the running agent, or from the pins when none runs (recorded in the change
    /// log and audit log the agent last used). A conduit without an open grant is left as it
    /// is (exit status 0). Exit status 1 for an unknown conduit or one that is not on demand.
    Revoke(crate::grant_cmd::RevokeArgs),
    /// Remove every program link and map pin that conduit left behind (enforcement stops).
    Detach {
        #[command(flatten)]
        pins: PinArgs,
    },
    /// The change log of `conduit run` (SPEC §7): check its hash chain, or print it.
    Changelog(crate::integrity::command::ChangelogArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), generated from these definitions.
    Man,
}

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

impl RunArgs {
    /// Where the change log is written, if anywhere.
    pub fn change_log_path(&self) -> Option<PathBuf> {
        if self.no_change_log {
            None
        } else {
            Some(self.change_log.clone().unwrap_or_else(|| {
                self.state_dir
                    .join(crate::integrity::changelog::DEFAULT_FILE)
            }))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct PinArgs {
    /// Where the agent pinned its links and maps.
    #[arg(long, default_value = crate::agent::DEFAULT_PIN_DIR, value_name = "DIR")]
    pub pin_dir: PathBuf,
    /// Where the agent keeps its state file.
    #[arg(long, default_value = crate::agent::DEFAULT_STATE_DIR, value_name = "DIR")]
    pub state_dir: PathBuf,
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` print to stdout and succeed.
            let code = if e.use_stderr() {
                Exit::Rejected
            } else {
                Exit::Ok
            };
            let _ = e.print();
            return code.into();
        }
    };
    match cli.command {
        Command::Check {
            policy,
            strict,
            signed,
            format,
        } => check(&policy, strict, &signed, format),
        Command::Explain(args) => explain::main(args),
        Command::Run(args) => run::main(args),
        Command::Replay(args) => crate::replay::main(args),
        Command::Kernel(args) => crate::kernel::main(args),
        Command::Report(args) => crate::report_cmd::main(args),
        Command::Discover(args) => crate::discover::command::main(args),
        Command::Status { pins, format } => run::status(&pins, format),
        Command::Detach { pins } => run::detach(&pins),
        Command::Grant(args) => crate::grant_cmd::grant(args),
        Command::Revoke(args) => crate::grant_cmd::revoke(args),
        Command::Changelog(args) => crate::integrity::command::changelog(args),
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "conduit",
                &mut std::io::stdout(),
            );
            Exit::Ok.into()
        }
        Command::Man => {
            use clap::CommandFactory as _;
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => Exit::Ok.into(),
                Err(e) => {
                    eprintln!("error: writing the manual page: {e}");
                    Exit::Failed.into()
                }
            }
        }
    }
}

fn check(
    path: &std::path::Path,
    strict: bool,
    signed: &crate::integrity::command::CheckSignature,
    format: Format,
) -> ExitCode {
    let shown = path.display().to_string();
    let (loaded, mut d) = match crate::policy::load::load_file(path, 0) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{shown}: error: cannot read the policy: {e}");
            return Exit::Failed.into();
        }
    };
    // With --allowed-signers, the signature is checked as `conduit run` checks it: an error
    // of the file at 1:1 when it is missing or bad.
    let signer = match signed.verify(path) {
        Ok(s) => s,
        Err(e) if e.exit_code() == Exit::Failed => {
            eprintln!("{shown}: error: {e}");
            return Exit::Failed.into();
        }
        Err(e) => {
            d.error(crate::policy::Pos::new(1, 1), format!("signature: {e}"));
            None
        }
    };
    let warnings = d.warnings().count();
    let valid = loaded.is_some() && !d.has_errors() && !(strict && warnings > 0);
    match format {
        Format::Text => {
            for item in &d.items {
                println!("{}", item.render(&shown));
            }
            if let Some(s) = &signer {
                eprintln!("{shown}: signed by {s}");
            }
            match &loaded {
                Some(_) if d.has_errors() => {
                    eprintln!("{shown}: refused: {} error(s)", d.errors().count())
                }
                Some(l) if valid => eprintln!(
                    "{shown}: valid: site \"{}\", {} zones, {} assets, {} conduits; {warnings} warning(s)",
                    l.policy.site,
                    l.policy.zones.len(),
                    l.policy.zones.iter().map(|z| z.assets.len()).sum::<usize>(),
                    l.policy.conduits.len()
                ),
                Some(_) => eprintln!("{shown}: invalid with --strict: {warnings} warning(s)"),
                None => eprintln!("{shown}: invalid: {} error(s)", d.errors().count()),
            }
        }
        Format::Json => {
            let mut v = serde_json::json!({
                "valid": valid,
                "errors": d.errors().collect::<Vec<_>>(),
                "warnings": d.warnings().collect::<Vec<_>>(),
            });
            if signed.allowed_signers.is_some() {
                v["signer"] = serde_json::json!(signer);
            }
            println!("{v}");
        }
    }
    if valid {
        Exit::Ok.into()
    } else {
        Exit::Rejected.into()
    }
}
