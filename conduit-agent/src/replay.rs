//! `conduit replay POLICY PCAP`: every frame of a capture, in order, through the real XDP
//! program (BPF_PROG_TEST_RUN) with the compiled policy in fresh maps; flow state carries from
//! frame to frame because the maps do.
use std::path::Path;

use aya::programs::{TestRun as _, TestRunOptions};
use conduit_common::{Reason, Verdict};

use crate::{
    capture::{Capture, CaptureError, LINKTYPE_ETHERNET},
    datapath::Datapath,
};

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

/// An output error, as the replay reports it.
pub fn unwritten(e: std::io::Error) -> ReplayError {
    ReplayError::Failed(format!("cannot write the output: {e}"))
}
