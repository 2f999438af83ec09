//! Integrity (SPEC §7): who may change the rules, and what went live when.
//!
//! - [`signature`]: a policy is loaded only with a valid OpenSSH signature (`POLICY.sig`) from
//!   a key of the allowed-signers file ([`signers`]), when `--allowed-signers` is given.
//! - [`changelog`]: a hash-chained JSON-lines log of every policy that went live.
//!
//! [`Integrity`] is what the agent holds: it admits a policy's bytes before they are applied
//! and records a policy once it is live (change log, and a `policy` line in the audit log).
pub mod changelog;
pub mod signature;
pub mod signers;

use std::path::{Path, PathBuf};

use tracing::{error, info, warn};

pub use changelog::WentLive;
pub use signature::Signer;

/// Now on the wall clock, RFC 3339 (UTC).
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    crate::agent::audit::rfc3339(now)
}

/// The agent's side of integrity: the signature check before a policy is applied, the
/// change log and the audit log's `policy` line after.
pub struct Integrity {
    allowed_signers: Option<PathBuf>,
    change_log: Option<changelog::ChangeLog>,
    audit: Option<crate::agent::audit::Sink>,
}

impl Integrity {
    /// Opens the change log (reporting a torn last line or a broken chain in the agent's log,
    /// never failing for them) and the audit log for `policy` lines. Fails only when one of
    /// them cannot be opened.
    pub fn open(
        allowed_signers: Option<&Path>,
        change_log: Option<&Path>,
        audit_log: Option<&Path>,
    ) -> Result<Self, String> {
        let change_log = match change_log {
            Some(p) => {
                let (log, o) = changelog::ChangeLog::open(p)
                    .map_err(|e| format!("opening the change log {}: {e}", p.display()))?;
                if let Some(line) = o.torn {
                    warn!(change_log = %p.display(), line, "the change log's last line (line {line}) is torn: an append was cut short by a crash; it stays, and the next entry records it (`conduit changelog verify` reports it)");
                } else if o.terminated {
                    info!(change_log = %p.display(), line = o.lines, "the change log's last line had no newline (a crash after the entry was written); one was added");
                }
                if let Some((line, why)) = &o.broken {
                    error!(change_log = %p.display(), line, "the change log's chain is broken at line {line}: {why}; new entries chain to its last line (run `conduit changelog verify`)");
                }
                info!(change_log = %p.display(), lines = o.lines, "change log open");
                Some(log)
            }
            None => None,
        };
        let audit = match audit_log {
            Some(p) => Some(
                crate::agent::audit::Sink::open(p)
                    .map_err(|e| format!("opening the audit log {}: {e}", p.display()))?,
            ),
            None => None,
        };
        if let Some(f) = allowed_signers {
            // Read for every policy (keys can be rotated with a reload); a file that is missing
            // or does not parse refuses the policy, with its reason.
            info!(allowed_signers = %f.display(), "policies must be signed (ssh-keygen -Y sign -n {})", signers::NAMESPACE);
        }
        Ok(Self {
            allowed_signers: allowed_signers.map(Path::to_owned),
            change_log,
            audit,
        })
    }

    /// Whether `bytes`, read from `policy`, may be applied: with `--allowed-signers`, only
    /// with a valid signature in `POLICY.sig` (the signer is returned); without, always
    /// (unsigned: `None`). The error is the reason, for the log.
    pub fn admit(&self, policy: &Path, bytes: &[u8]) -> Result<Option<Signer>, String> {
        let Some(file) = &self.allowed_signers else {
            return Ok(None);
        };
        signature::verify(bytes, &signature::sig_path(policy), file, signers::now())
            .map(Some)
            .map_err(|e| format!("{}: signature: {e}", policy.display()))
    }

    /// The policy file's signature file, watched for changes with the policy when policies
    /// must be signed.
    pub fn watched_signature(&self, policy: &Path) -> Option<PathBuf> {
        self.allowed_signers
            .as_ref()
            .map(|_| signature::sig_path(policy))
    }

    /// Records a grant or a revocation of an on-demand conduit: a change-log entry and an
    /// audit-log line (`event` = the line's `kind`). A write that fails is logged and returned.
    pub fn record_grant(&mut self, mut line: changelog::GrantLine) -> Result<(), String> {
        line.ts = now_rfc3339();
        let mut failed = Vec::new();
        if let Some(log) = &mut self.change_log {
            match log.append_grant(line.clone()) {
                Ok(_) => {
                    info!(change_log = %log.path().display(), kind = %line.kind, conduit = %line.conduit, head = %log.head(), "change log: {} recorded", line.kind);
                }
                Err(e) => {
                    error!(change_log = %log.path().display(), kind = %line.kind, conduit = %line.conduit, "the change log could not be written: {e}");
                    failed.push(format!("the change log {}: {e}", log.path().display()));
                }
            }
        }
        let mut v = serde_json::json!({
            "ts": line.ts,
            "event": line.kind,
            "conduit": line.conduit,
            "generation": line.generation,
            "user": line.user,
            "reason": line.reason,
        });
        if let Some(n) = line.seconds {
            v["seconds"] = n.into();
        }
        if let Some(u) = &line.until {
            v["until"] = u.clone().into();
        }
        if let Some(u) = &line.sudo_user {
            v["sudo_user"] = u.clone().into();
        }
        if let Err(e) = self.audit_line(&v) {
            failed.push(e);
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }

    /// Writes one line to the audit log (when there is one).
    pub fn audit_line(&mut self, v: &serde_json::Value) -> Result<(), String> {
        match &mut self.audit {
            Some(sink) => sink.write_line(&v.to_string()).map_err(|e| {
                warn!("writing a {} line to the audit log: {e}", v["event"]);
                format!("the audit log: {e}")
            }),
            None => Ok(()),
        }
    }

    /// Records a policy that went live: a change-log entry and an audit-log `policy` line.
    /// A write that fails is logged; the policy stays live.
    pub fn went_live(&mut self, w: &WentLive) {
        let ts = now_rfc3339();
        if let Some(log) = &mut self.change_log {
            match log.append_policy(w, ts.clone()) {
                Ok(None) => {
                    info!(change_log = %log.path().display(), generation = w.generation, "change log: the recorded policy applied again (no new line)");
                }
                Ok(Some(line)) => {
                    let c = &line.changes;
                    // `head`: the new line's sha256, in the agent's own log (journald), an
                    // anchor outside the file for the last line.
                    info!(change_log = %log.path().display(), generation = w.generation, head = %log.head(),
                        zones_added = c.zones.added.len(), zones_removed = c.zones.removed.len(), zones_changed = c.zones.changed.len(),
                        conduits_added = c.conduits.added.len(), conduits_removed = c.conduits.removed.len(), conduits_changed = c.conduits.changed.len(),
                        defaults_changed = c.defaults, "change log: policy recorded");
                }
                Err(e) => {
                    error!(change_log = %log.path().display(), generation = w.generation, "the change log could not be written: {e}; the policy is live but not recorded there");
                }
            }
        }
        if let Some(sink) = &mut self.audit {
            let line = serde_json::json!({
                "ts": ts,
                "event": "policy",
                "generation": w.generation,
                "site": w.site,
                "sha256": w.sha256,
                "signer": w.signer,
            });
            if let Err(e) = sink.write_line(&line.to_string()) {
                warn!("writing the policy line to the audit log: {e}");
            }
        }
    }
}
