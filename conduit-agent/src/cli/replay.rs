//! `conduit replay POLICY PCAP`: the command line of [`crate::replay`].
use std::{io::Write as _, path::PathBuf, process::ExitCode};

use conduit_common::Verdict;

use super::Format;
use crate::{
    capture::Capture,
    exit::Exit,
    policy::load::{ReadError, load_file, read_policy},
    replay::{ReplayError, replay, unwritten},
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
