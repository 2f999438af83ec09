//! The command line (SPEC §2). Exit status: 0 success, 1 input rejected, 2 operation failed.
use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

use crate::datapath::{AttachMode, Datapath};

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

#[derive(Subcommand, Debug)]
pub enum Command {
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
        Command::Run(args) => run(args),
    }
}

fn run(args: RunArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run_async(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run_async(args: RunArgs) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut dp = Datapath::load()?;
    for iface in &args.ifaces {
        let (_, mode) = dp.attach(iface, args.xdp_mode)?;
        eprintln!("conduit: attached to {iface} ({mode})");
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let period = Duration::from_secs(args.report_every.max(1));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => if args.report_every > 0 {
                let t = dp.totals()?;
                let line: Vec<String> = t.iter()
                    .map(|(v, c)| format!("{}={} pkts/{} B", v.as_str(), c.packets, c.bytes))
                    .collect();
                println!("conduit: {}", line.join(" "));
            }
        }
    }
    eprintln!("conduit: detaching");
    Ok(())
}
