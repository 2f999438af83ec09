//! `conduit run`: the agent. (Policy loading, reload, pinning, metrics and the audit log come
//! with the agent work; for now it attaches the program and reports its counters.)
use std::{process::ExitCode, time::Duration};

use crate::{cli::RunArgs, datapath::Datapath};

pub fn main(args: RunArgs) -> ExitCode {
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
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut dp = Datapath::load()?;
    for iface in &args.ifaces {
        let (_, mode) = dp.attach(iface, args.xdp_mode)?;
        eprintln!("conduit: attached to {iface} ({mode})");
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_secs(args.report_every.max(1)));
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
