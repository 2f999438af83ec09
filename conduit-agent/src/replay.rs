//! `conduit replay POLICY PCAP`: every frame of a capture, in order, through the real XDP
//! program (BPF_PROG_TEST_RUN) with the compiled policy in fresh maps; flow state carries from
//! frame to frame because the maps do.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use aya::programs::{TestRun as _, TestRunOptions};
use conduit_common::{Reason, Verdict};

use crate::{
    capture::{Capture, CaptureError, LINKTYPE_ETHERNET},
    cli::Format,
    datapath::Datapath,
    exit::Exit,
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
    pub frame: u64,
    pub verdict: Verdict,
    pub reason: Reason,
    pub conduit: Option<String>,
}

/// Why a replay stopped before the end of the capture.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The capture is not one replay can read (input rejected, exit 1).
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// The kernel or the output failed (exit 2).
    #[error("error: {0}")]
    Failed(String),
}

/// Runs every frame of `capture`, in order, through a freshly loaded program with `policy`
/// (YAML bytes), and hands each verdict to `each` as it comes: nothing of the capture is kept,
/// so a capture larger than memory works. If the verifier refuses the program, its whole log
/// goes to `verifier_log`.
pub fn replay(
    policy: &[u8],
    capture: &mut Capture,
    verifier_log: Option<&Path>,
    mut each: impl FnMut(&FrameVerdict) -> std::io::Result<()>,
) -> Result<(), ReplayError> {
    let failed = ReplayError::Failed;
    let mut dp = Datapath::load_with(true).map_err(|e| failed(e.saving_log(verifier_log)))?;
    let slot = dp.next_slot().map_err(|e| failed(e.to_string()))?;
    let (loaded, d) = crate::policy::load::load_bytes(policy, slot);
    let loaded = loaded.ok_or_else(|| failed(format!("invalid policy:\n{d}")))?;
    dp.apply(&loaded.compiled)
        .map_err(|e| failed(e.to_string()))?;
    while let Some(f) = capture.next_frame()? {
        if f.linktype != LINKTYPE_ETHERNET {
            let problem =
                f.unsupported_link_type("replay judges Ethernet frames, link type 1, only");
            return Err(capture.error(problem).into());
        }
        let frame = f.number;
        // The kernel refuses frames shorter than an Ethernet header; such a frame is
        // malformed whatever it holds.
        let v = if f.data.len() < 14 {
            FrameVerdict {
                frame,
                verdict: Verdict::Deny,
                reason: Reason::Malformed,
                conduit: None,
            }
        } else {
            let prog = dp.program().map_err(|e| failed(e.to_string()))?;
            prog.test_run(TestRunOptions {
                data_in: Some(f.data),
                repeat: 1,
                ..Default::default()
            })
            .map_err(|e| failed(format!("frame {frame}: BPF_PROG_TEST_RUN: {e}")))?;
            let t = dp.last_trace().map_err(|e| failed(e.to_string()))?;
            FrameVerdict {
                frame,
                verdict: Verdict::try_from(t.verdict)
                    .map_err(|v| failed(format!("bad verdict {v}")))?,
                reason: Reason::try_from(t.reason)
                    .map_err(|v| failed(format!("bad reason {v}")))?,
                conduit: loaded.compiled.conduit_name(t.conduit).map(str::to_owned),
            }
        };
        each(&v).map_err(unwritten)?;
    }
    Ok(())
}

fn unwritten(e: std::io::Error) -> ReplayError {
    ReplayError::Failed(format!("cannot write the output: {e}"))
}

/// How many frames had each verdict.
#[derive(Default)]
struct Tally {
    frames: u64,
    allow: u64,
    deny: u64,
    would_deny: u64,
}

impl Tally {
    fn add(&mut self, v: Verdict) {
        self.frames += 1;
        match v {
            Verdict::Allow => self.allow += 1,
            Verdict::Deny => self.deny += 1,
            Verdict::WouldDeny => self.would_deny += 1,
        }
    }
}

pub fn main(a: ReplayArgs) -> ExitCode {
    let shown = a.policy.display().to_string();
    match load_file(&a.policy, 0) {
        Err(e) => {
            eprintln!("{shown}: error: cannot read the policy: {e}");
            return Exit::Failed.into();
        }
        Ok((None, d)) => {
            for e in d.errors() {
                eprintln!("{}", e.render(&shown));
            }
            return Exit::Rejected.into();
        }
        Ok(_) => {}
    }
    // The file header now; a frame the capture cannot give stops the replay where it is.
    let mut capture = match Capture::open(&a.pcap) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Exit::Rejected.into();
        }
    };
    let policy = match read_policy(&a.policy) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{shown}: error: {e}");
            return if matches!(e, ReadError::Io(_)) {
                Exit::Failed
            } else {
                Exit::Rejected
            }
            .into();
        }
    };
    if let Some(m) = crate::datapath::probe::probe().missing(false) {
        eprintln!("error: {m}");
        return Exit::Failed.into();
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut tally = Tally::default();
    match judge(&policy, &mut capture, &a, &mut tally, &mut out) {
        Ok(()) => Exit::Ok.into(),
        Err(e) => {
            // The verdicts before the error stand, without a summary; the JSON document is
            // closed with the error in place of the summary, so that it stays one document.
            if a.format == Format::Json {
                let start = if tally.frames == 0 {
                    "{\"frames\":["
                } else {
                    ""
                };
                let error = serde_json::Value::from(e.to_string());
                let _ = writeln!(out, "{start}],\"error\":{error}}}");
            }
            let _ = out.flush();
            eprintln!("{e}");
            match e {
                ReplayError::Capture(_) => Exit::Rejected,
                ReplayError::Failed(_) => Exit::Failed,
            }
            .into()
        }
    }
}

/// Replays `capture` and writes each verdict as it comes (the JSON too, its summary last).
fn judge(
    policy: &[u8],
    capture: &mut Capture,
    a: &ReplayArgs,
    tally: &mut Tally,
    out: &mut impl std::io::Write,
) -> Result<(), ReplayError> {
    let json = a.format == Format::Json;
    replay(policy, capture, a.verifier_log.as_deref(), |f| {
        tally.add(f.verdict);
        if json {
            let v = serde_json::json!({
                "frame": f.frame, "verdict": f.verdict.as_str(), "reason": f.reason.as_str(), "conduit": f.conduit,
            });
            let sep = if tally.frames == 1 {
                "{\"frames\":["
            } else {
                ","
            };
            write!(out, "{sep}{v}")
        } else {
            writeln!(
                out,
                "{:>6} {:<10} {:<18} {}",
                f.frame,
                f.verdict.as_str(),
                f.reason.as_str(),
                f.conduit.as_deref().unwrap_or("-")
            )
        }
    })?;
    let summary = if json {
        let start = if tally.frames == 0 {
            "{\"frames\":["
        } else {
            ""
        };
        let s = serde_json::json!({"allow": tally.allow, "deny": tally.deny, "would_deny": tally.would_deny});
        format!("{start}],\"summary\":{s}}}\n")
    } else {
        format!(
            "{} frames: {} allowed, {} denied, {} would be denied\n",
            tally.frames, tally.allow, tally.deny, tally.would_deny
        )
    };
    out.write_all(summary.as_bytes())
        .and_then(|()| out.flush())
        .map_err(unwritten)
}
