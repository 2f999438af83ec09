//! `conduit kernel`: the command line of [`crate::kernel`].
use std::{path::PathBuf, process::ExitCode};

use super::Format;
use crate::{
    datapath::probe,
    exit::Exit,
    kernel::{Report, report},
};

#[derive(clap::Args, Debug)]
pub struct KernelArgs {
    /// Write the verifier's whole log here when it refuses the program.
    #[arg(long, value_name = "FILE")]
    pub verifier_log: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn main(a: KernelArgs) -> ExitCode {
    let (r, log) = report();
    if let (Some(path), Some(log)) = (&a.verifier_log, &log)
        && let Err(e) = std::fs::write(path, log)
    {
        eprintln!("{}: error: writing the verifier log: {e}", path.display());
    }
    match a.format {
        Format::Json => match serde_json::to_string_pretty(&r) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Failed.into();
            }
        },
        Format::Text => print_text(&r),
    }
    let missing = r.kernel.missing(true);
    if let Some(m) = &missing {
        eprintln!("error: {m}");
    }
    if r.program.loaded && r.learning.loaded && missing.is_none() {
        Exit::Ok.into()
    } else {
        Exit::Failed.into()
    }
}

fn print_text(r: &Report) {
    println!(
        "kernel {} (Conduit needs {} or later; tested on {})",
        r.kernel.release, r.min_kernel, r.tested
    );
    for f in &r.kernel.features {
        let state = match f.present {
            Some(true) => "yes",
            Some(false) => "MISSING",
            None => "unknown",
        };
        let need = match f.need {
            probe::Need::Program => "",
            probe::Need::Agent => " (conduit run)",
            probe::Need::Optional => " (optional)",
        };
        println!("  {state:<8} {} (since {}){need}", f.feature, f.since);
    }
    for (what, p) in [
        ("program", &r.program),
        ("program with learning (run --learn-dir)", &r.learning),
    ] {
        match &p.error {
            None => println!(
                "{what}: loads in {:.0} ms; the verifier processed {} instructions; {} bytes \
                 translated, {} JIT'ed",
                p.load_ms,
                p.verified_insns
                    .map_or_else(|| "an unreported number of".into(), |n| n.to_string()),
                p.xlated_bytes.map_or_else(|| "?".into(), |n| n.to_string()),
                p.jited_bytes.map_or_else(|| "?".into(), |n| n.to_string()),
            ),
            Some(e) => println!("{what}: does NOT load: {e}"),
        }
    }
    if let Some(s) = &r.stack {
        println!(
            "stack: deepest call chain {} bytes ({} as kernel 6.1 counts it; limit {}): {}",
            s.worst_bytes,
            s.worst_bytes_rounded,
            r.stack_limit,
            s.worst_chain
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" -> ")
        );
        for f in &s.frames {
            println!("  {:>4} bytes  {}", f.stack, f.name);
        }
    }
}
