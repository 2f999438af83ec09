//! Evidence from audit logs (SPEC §4): JSON lines, one event each, read as they are.
use std::{collections::BTreeMap, io::BufRead as _, path::Path};

use super::ReportError;

/// What one audit log shows.
#[derive(Clone, Debug, Default)]
pub struct AuditSummary {
    pub path: String,
    pub lines: u64,
    pub events: u64,
    /// Lines that are no audit event (not JSON, or without `ts` and `verdict`).
    pub unparsed: u64,
    pub first_ts: Option<String>,
    pub last_ts: Option<String>,
    pub verdicts: BTreeMap<String, u64>,
    /// Events held back by the per-flow rate limit before the events written.
    pub suppressed_before: u64,
    /// Source addresses of `spoofed` and `arp_spoof` events, with their counts.
    pub spoofers: BTreeMap<String, u64>,
}

pub fn read(path: &Path) -> Result<AuditSummary, ReportError> {
    let shown = path.display().to_string();
    let f = std::fs::File::open(path)
        .map_err(|e| ReportError::Io(format!("reading the audit log {shown}: {e}")))?;
    let mut s = AuditSummary {
        path: shown.clone(),
        ..Default::default()
    };
    for line in std::io::BufReader::new(f).lines() {
        let line =
            line.map_err(|e| ReportError::Io(format!("reading the audit log {shown}: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        s.lines += 1;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            s.unparsed += 1;
            continue;
        };
        // The agent's own records (`"event": "policy"`: a policy went live) are no traffic.
        if v.get("event").is_some() {
            s.lines -= 1;
            continue;
        }
        let (Some(ts), Some(verdict)) = (v["ts"].as_str(), v["verdict"].as_str()) else {
            s.unparsed += 1;
            continue;
        };
        s.events += 1;
        // RFC 3339 in UTC with a fixed width sorts as text.
        if s.first_ts.as_deref().is_none_or(|f| ts < f) {
            s.first_ts = Some(ts.to_owned());
        }
        if s.last_ts.as_deref().is_none_or(|l| ts > l) {
            s.last_ts = Some(ts.to_owned());
        }
        *s.verdicts.entry(verdict.to_owned()).or_insert(0) += 1;
        s.suppressed_before += v["suppressed_before"].as_u64().unwrap_or(0);
        if matches!(v["reason"].as_str(), Some("spoofed" | "arp_spoof")) {
            let src = v["src_ip"].as_str().unwrap_or("(no address)").to_owned();
            *s.spoofers.entry(src).or_insert(0) += 1;
        }
    }
    Ok(s)
}
