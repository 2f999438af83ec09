//! `conduit replay POLICY PCAP`: every frame of a capture, in order, through the real XDP
//! program (BPF_PROG_TEST_RUN) with the compiled policy in fresh maps; flow state carries from
//! frame to frame because the maps do.
use std::{path::PathBuf, process::ExitCode};

use aya::programs::{TestRun as _, TestRunOptions};
use conduit_common::{Reason, Verdict};

use crate::{
    cli::Format,
    datapath::Datapath,
    policy::load::{ReadError, load_file, read_policy},
};

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// The policy file (YAML).
    pub policy: PathBuf,
    /// The capture (pcap or pcapng, Ethernet frames).
    pub pcap: PathBuf,
    /// Write the verifier's whole log here if it refuses the program.
    #[arg(long, value_name = "FILE")]
    pub verifier_log: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// The verdict on one frame of a capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameVerdict {
    /// Numbered from 1, as Wireshark numbers frames.
    pub frame: usize,
    pub verdict: Verdict,
    pub reason: Reason,
    pub conduit: Option<String>,
}

/// Runs `frames` through a freshly loaded program with `policy` (YAML bytes). If the verifier
/// refuses the program, its whole log goes to `verifier_log`.
pub fn replay(
    policy: &[u8],
    frames: &[Vec<u8>],
    verifier_log: Option<&std::path::Path>,
) -> Result<Vec<FrameVerdict>, String> {
    let mut dp = Datapath::load_with(true).map_err(|e| e.saving_log(verifier_log))?;
    let slot = dp.next_slot().map_err(|e| e.to_string())?;
    let (loaded, d) = crate::policy::load::load_bytes(policy, slot);
    let loaded = loaded.ok_or_else(|| format!("invalid policy:\n{d}"))?;
    dp.apply(&loaded.compiled).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(frames.len());
    for (i, f) in frames.iter().enumerate() {
        // The kernel refuses frames shorter than an Ethernet header; such a frame is
        // malformed whatever it holds.
        if f.len() < 14 {
            out.push(FrameVerdict {
                frame: i + 1,
                verdict: Verdict::Deny,
                reason: Reason::Malformed,
                conduit: None,
            });
            continue;
        }
        let prog = dp.program().map_err(|e| e.to_string())?;
        prog.test_run(TestRunOptions {
            data_in: Some(f),
            repeat: 1,
            ..Default::default()
        })
        .map_err(|e| format!("frame {}: BPF_PROG_TEST_RUN: {e}", i + 1))?;
        let t = dp.last_trace().map_err(|e| e.to_string())?;
        out.push(FrameVerdict {
            frame: i + 1,
            verdict: Verdict::try_from(t.verdict).map_err(|v| format!("bad verdict {v}"))?,
            reason: Reason::try_from(t.reason).map_err(|v| format!("bad reason {v}"))?,
            conduit: loaded.compiled.conduit_name(t.conduit).map(str::to_owned),
        });
    }
    Ok(out)
}

pub fn main(a: ReplayArgs) -> ExitCode {
    let shown = a.policy.display().to_string();
    match load_file(&a.policy, 0) {
        Err(e) => {
            eprintln!("{shown}: error: cannot read the policy: {e}");
            return ExitCode::from(2);
        }
        Ok((None, d)) => {
            for e in d.errors() {
                eprintln!("{}", e.render(&shown));
            }
            return ExitCode::from(1);
        }
        Ok(_) => {}
    }
    let packets = match crate::pcap::read_file(&a.pcap) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: error: {e}", a.pcap.display());
            return ExitCode::from(1);
        }
    };
    if let Some((i, p)) = packets.iter().enumerate().find(|(_, p)| p.linktype != 1) {
        eprintln!(
            "{}: error: frame {} has link type {}; replay judges Ethernet frames (link type 1) only",
            a.pcap.display(),
            i + 1,
            p.linktype
        );
        return ExitCode::from(1);
    }
    let frames: Vec<Vec<u8>> = packets.into_iter().map(|p| p.data).collect();
    let policy = match read_policy(&a.policy) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{shown}: error: {e}");
            return ExitCode::from(if matches!(e, ReadError::Io(_)) { 2 } else { 1 });
        }
    };
    if let Some(m) = crate::datapath::probe::probe().missing(false) {
        eprintln!("error: {m}");
        return ExitCode::from(2);
    }
    let verdicts = match replay(&policy, &frames, a.verifier_log.as_deref()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let count = |v: Verdict| verdicts.iter().filter(|f| f.verdict == v).count();
    match a.format {
        Format::Json => {
            let v = serde_json::json!({
                "frames": verdicts.iter().map(|f| serde_json::json!({
                    "frame": f.frame, "verdict": f.verdict.as_str(), "reason": f.reason.as_str(), "conduit": f.conduit,
                })).collect::<Vec<_>>(),
                "summary": {"allow": count(Verdict::Allow), "deny": count(Verdict::Deny), "would_deny": count(Verdict::WouldDeny)},
            });
            println!("{v}");
        }
        Format::Text => {
            for f in &verdicts {
                println!(
                    "{:>6} {:<10} {:<18} {}",
                    f.frame,
                    f.verdict.as_str(),
                    f.reason.as_str(),
                    f.conduit.as_deref().unwrap_or("-")
                );
            }
            println!(
                "{} frames: {} allowed, {} denied, {} would be denied",
                verdicts.len(),
                count(Verdict::Allow),
                count(Verdict::Deny),
                count(Verdict::WouldDeny)
            );
        }
    }
    ExitCode::SUCCESS
}
