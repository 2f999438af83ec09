//! The command line (SPEC §2). Exit status: 0 success, 1 input rejected, 2 operation failed.
use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};

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
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Judge the first packet of a new flow against a policy, without any kernel, and say why.
    Explain(explain::ExplainArgs),
    /// Run the agent: load the XDP program, attach it to every --iface, report counters.
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Interface to attach to (repeat for every port of the gateway).
    #[arg(long = "iface", required = true, value_name = "IF")]
    pub ifaces: Vec<String>,
    /// How to attach: native where the driver supports it (auto), or force one mode.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub xdp_mode: AttachMode,
    /// Print the counters every this many seconds (0: never).
    #[arg(long, default_value_t = 1, value_name = "SECONDS")]
    pub report_every: u64,
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Check {
            policy,
            strict,
            format,
        } => check(&policy, strict, format),
        Command::Explain(args) => explain::main(args),
        Command::Run(args) => run::main(args),
    }
}

fn check(path: &std::path::Path, strict: bool, format: Format) -> ExitCode {
    let shown = path.display().to_string();
    let (loaded, d) = match crate::policy::load::load_file(path, 0) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{shown}: error: cannot read the policy: {e}");
            return ExitCode::from(2);
        }
    };
    let warnings = d.warnings().count();
    let valid = loaded.is_some() && !(strict && warnings > 0);
    match format {
        Format::Text => {
            for item in &d.items {
                println!("{}", item.render(&shown));
            }
            match &loaded {
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
            let v = serde_json::json!({
                "valid": valid,
                "errors": d.errors().collect::<Vec<_>>(),
                "warnings": d.warnings().collect::<Vec<_>>(),
            });
            println!("{v}");
        }
    }
    if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
