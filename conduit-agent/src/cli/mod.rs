//! The command line (SPEC §2): clap lives here and only here. One file per command holds its
//! arguments and turns them into calls of the library (`agent`, `policy`, `report`, ...),
//! which takes plain values; exit statuses are [`Exit`]'s.
use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};

use crate::exit::Exit;

mod changelog;
mod check;
mod detach;
mod discover;
mod explain;
mod grant;
mod kernel;
mod replay;
mod report;
mod run;
mod status;

pub use run::RunArgs;

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
    Check(check::CheckArgs),
    /// Judge the first packet of a new flow against a policy, without any kernel, and say why.
    Explain(explain::ExplainArgs),
    /// Run the agent: load the policy, attach to every --iface, serve metrics, reload on
    /// SIGHUP or when the policy file changes, write the audit log.
    Run(run::RunArgs),
    /// Run every frame of a capture (pcap or pcapng) through the real XDP program
    /// (BPF_PROG_TEST_RUN) with the policy in fresh maps, flow tracking included. Needs root,
    /// no interface.
    Replay(replay::ReplayArgs),
    /// Turn a plant's real traffic (captures, audit logs) into a draft policy for review:
    /// hosts, zones, conduits for every answered flow and nothing else, with the evidence in
    /// comments and every zone and conduit `review: pending`; then judge every observed flow
    /// against the draft (and --base) with the datapath's own verdict function.
    ///
    /// Exit status 0 when the draft was made, 1 when an input was rejected (named, with the
    /// frame or line), 2 when the draft could not be written.
    Discover(discover::DiscoverArgs),
    /// Can this host run Conduit? What the kernel offers the XDP program (probed), whether the
    /// program loads, and the verifier's figures: instructions processed, load time, the
    /// stack of every subprogram and of the deepest call chain. Needs root. Exit status 0
    /// when the program loads and nothing it needs is missing, 2 otherwise.
    Kernel(kernel::KernelArgs),
    /// Evidence for the audit (SPEC §6): the zone-and-conduit diagram, the zone and conduit
    /// registers, traffic by zone pair and findings, from the policy, the agent's counters or
    /// a Prometheus server, and audit logs. Exit status 1 for bad input (policy, metadata,
    /// arguments), 2 when the evidence cannot be read (no agent, Prometheus unreachable).
    Report(report::ReportArgs),
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
    Grant(grant::GrantArgs),
    /// Close an on-demand conduit before its grant ends, its open sessions included.
    ///
    /// Done by the running agent, or from the pins when none runs (recorded in the change
    /// log and audit log the agent last used). A conduit without an open grant is left as it
    /// is (exit status 0). Exit status 1 for an unknown conduit or one that is not on demand.
    Revoke(grant::RevokeArgs),
    /// Remove every program link and map pin that conduit left behind (enforcement stops).
    Detach {
        #[command(flatten)]
        pins: PinArgs,
    },
    /// The change log of `conduit run` (SPEC §7): check its hash chain, or print it.
    Changelog(changelog::ChangelogArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), generated from these definitions.
    Man,
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
        Command::Check(args) => check::main(&args),
        Command::Explain(args) => explain::main(args),
        Command::Run(args) => run::main(args),
        Command::Replay(args) => replay::main(args),
        Command::Kernel(args) => kernel::main(args),
        Command::Report(args) => report::main(args),
        Command::Discover(args) => discover::main(args),
        Command::Status { pins, format } => status::main(&pins, format),
        Command::Detach { pins } => detach::main(&pins),
        Command::Grant(args) => grant::grant(args),
        Command::Revoke(args) => grant::revoke(args),
        Command::Changelog(args) => changelog::main(args),
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
