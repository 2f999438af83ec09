//! The change log (SPEC §7): one JSON line per policy that goes live, each carrying the
//! sha256 of the line before it, so that an edited, removed or inserted line breaks the chain.
//!
//! The format, line by line:
//! - Every line is one JSON object with `kind` (`"policy"`; later kinds, such as grants and
//!   revocations of on-demand conduits, add their own fields), `ts` (RFC 3339, UTC) and `prev`:
//!   the sha256 (hex) of the bytes of the line before it, without its newline; the first
//!   line's `prev` is 64 zeros.
//! - A `policy` line adds `generation`, `site`, `path`, `sha256` (of the policy file),
//!   `signer` (`{"principal", "key"}` or null when unsigned), `changes` (zones and conduits
//!   added, removed, changed, by name, and whether `defaults` changed, against the previous
//!   policy line; everything is added when there is none) and `digests` (what the next line
//!   compares with, see [`crate::policy::digest`]).
//! - A line cut short by a crash during an append (no newline, or not JSON) is left as it is:
//!   the agent ends it with a newline at its next start, and the next line it writes names it,
//!   `"torn": {"line": N, "sha256": ...}` (the bytes of line N), and chains to the last whole
//!   line before it. `verify` accepts such a line only when the line after it names it, or when
//!   it is the last line (a crash the agent has not yet seen), and reports it either way.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::signature::Signer;
use crate::policy::{
    digest::{Changes, Digests},
    load::sha256_hex,
};

/// `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The file name under the agent's state directory when `--change-log` is not given.
pub const DEFAULT_FILE: &str = "changelog.jsonl";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Torn {
    pub line: usize,
    pub sha256: String,
}

/// A `policy` line, fields in the order they are written.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyLine {
    pub kind: String,
    pub ts: String,
    pub generation: u64,
    pub site: String,
    pub path: String,
    pub sha256: String,
    pub signer: Option<Signer>,
    pub changes: Changes,
    pub digests: Digests,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torn: Option<Torn>,
    pub prev: String,
}

/// A `grant` or a `revoke` line (on-demand conduits, SPEC §8), fields in the order they are
/// written. `user` is who ran the command (the control socket's peer), `sudo_user` whom sudo
/// ran it for; the agent itself is `conduit` (a reload that ends a grant).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GrantLine {
    pub kind: String,
    pub ts: String,
    pub generation: u64,
    pub conduit: String,
    /// A grant's length, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u32>,
    /// A grant's end on the wall clock (RFC 3339, UTC), as it was when granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sudo_user: Option<String>,
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torn: Option<Torn>,
    pub prev: String,
}

/// What the agent knows about a policy that went live.
#[derive(Clone, Debug)]
pub struct WentLive {
    pub generation: u64,
    pub site: String,
    pub path: PathBuf,
    pub sha256: String,
    pub signer: Option<Signer>,
    pub digests: Digests,
}

/// How a change log reads: whole lines, the torn ones, or the first line that breaks it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Lines in the file (a last line without a newline counts).
    pub lines: usize,
    /// Lines that are entries of the chain.
    pub entries: usize,
    /// Torn lines: (line, named by the line after it). Only the last line may be unnamed.
    pub torn: Vec<(usize, bool)>,
    /// The last line has no newline.
    pub unterminated: bool,
    /// The first line that is not what the chain needs, and why.
    pub broken: Option<(usize, String)>,
}

fn is_zero_or_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// One line, parsed as far as the chain needs: an object with a string `kind`, `ts` and a
/// `prev` of 64 lowercase hex digits.
fn entry(bytes: &[u8]) -> Option<Value> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let ok = v.is_object()
        && v["kind"].is_string()
        && v["ts"].is_string()
        && v["prev"].as_str().is_some_and(is_zero_or_hex);
    ok.then_some(v)
}

/// The lines of `bytes` (without their newlines) and whether the last one had none.
fn lines(bytes: &[u8]) -> (Vec<&[u8]>, bool) {
    if bytes.is_empty() {
        return (Vec::new(), false);
    }
    let unterminated = !bytes.ends_with(b"\n");
    let body = if unterminated {
        bytes
    } else {
        &bytes[..bytes.len() - 1]
    };
    (body.split(|&b| b == b'\n').collect(), unterminated)
}

/// Checks the chain of a change log's bytes.
pub fn verify(bytes: &[u8]) -> Report {
    let (lines, unterminated) = lines(bytes);
    let mut r = Report {
        lines: lines.len(),
        unterminated,
        ..Report::default()
    };
    let mut prev = GENESIS.to_owned();
    let mut prev_line = 0;
    let mut pending: Option<(usize, String)> = None;
    for (i, l) in lines.iter().enumerate() {
        let n = i + 1;
        let Some(v) = entry(l) else {
            if let Some((t, _)) = pending {
                r.broken = Some((
                    t,
                    "not a change-log entry (JSON with kind, ts and prev), and the line after it does not record it as torn".into(),
                ));
                return r;
            }
            pending = Some((n, sha256_hex(l)));
            continue;
        };
        let torn: Option<Torn> = v
            .get("torn")
            .and_then(|t| serde_json::from_value(t.clone()).ok());
        match (&pending, &torn) {
            (Some((t, h)), Some(x)) if x.line == *t && &x.sha256 == h => {
                r.torn.push((*t, true));
            }
            (Some((t, _)), _) => {
                r.broken = Some((
                    *t,
                    format!(
                        "not a change-log entry (JSON with kind, ts and prev), and line {n} does not record it as torn (or records other bytes)"
                    ),
                ));
                return r;
            }
            (None, Some(x)) => {
                r.broken = Some((
                    n,
                    format!(
                        "records line {} as torn, but that line is {}",
                        x.line,
                        if x.line < n && x.line > 0 {
                            "a whole entry"
                        } else {
                            "not the line before it"
                        }
                    ),
                ));
                return r;
            }
            (None, None) => {}
        }
        pending = None;
        if v["prev"].as_str() != Some(prev.as_str()) {
            r.broken = Some((
                n,
                if prev_line == 0 {
                    format!("`prev` is not {GENESIS} (the first entry's)")
                } else {
                    format!(
                        "`prev` is not the sha256 of line {prev_line}: a line before it was changed, removed or inserted, or this line was"
                    )
                },
            ));
            return r;
        }
        prev = sha256_hex(l);
        prev_line = n;
        r.entries += 1;
    }
    if let Some((t, _)) = pending {
        r.torn.push((t, false));
    }
    r
}

/// The change log, open for appending.
pub struct ChangeLog {
    path: PathBuf,
    file: std::fs::File,
    /// sha256 of the last whole entry (what the next line's `prev` is).
    prev: String,
    /// A torn last line, to be named by the next line.
    torn: Option<Torn>,
    /// The digests of the last `policy` line: what the next one is compared with.
    last_policy: Option<Digests>,
    /// The policy (sha256, signer) this agent last recorded: the same policy applied again
    /// in the same run (the host's addresses changed, a SIGHUP of an unchanged file) is
    /// no new policy and gets no line. A restart records its policy again.
    last_live: Option<(String, Option<Signer>)>,
}

/// What [`ChangeLog::open`] found, for the agent's log.
#[derive(Debug, Default)]
pub struct Opened {
    pub lines: usize,
    /// A torn last line (its number), which the next entry records.
    pub torn: Option<usize>,
    /// Whether a newline was added after a last line that had none.
    pub terminated: bool,
    /// Where the chain is broken (line, why); appending goes on after the last line.
    pub broken: Option<(usize, String)>,
}

impl ChangeLog {
    /// Opens (creating it and its directory if needed) the change log at `path`, reads where
    /// its chain ends, and ends a last line cut short by a crash with a newline (see the
    /// module's documentation). A broken chain or a torn line is reported, never fatal.
    pub fn open(path: &Path) -> std::io::Result<(Self, Opened)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let created = !path.exists();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        if created {
            // The new directory entry is durable too.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)?.sync_all()?;
            }
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes)?;
        let report = verify(&bytes);
        let (lines, unterminated) = lines(&bytes);
        let mut opened = Opened {
            lines: lines.len(),
            broken: report.broken.clone(),
            ..Opened::default()
        };
        // The chain goes on from the last whole entry, and the last policy line is what the
        // next one is compared with.
        let mut prev = GENESIS.to_owned();
        let mut last_policy = None;
        for l in &lines {
            if let Some(v) = entry(l) {
                prev = sha256_hex(l);
                if v["kind"] == "policy" {
                    last_policy = serde_json::from_value(v["digests"].clone()).ok();
                }
            }
        }
        let torn = lines.last().filter(|l| entry(l).is_none()).map(|l| Torn {
            line: lines.len(),
            sha256: sha256_hex(l),
        });
        if unterminated {
            file.write_all(b"\n")?;
            file.sync_data()?;
            opened.terminated = true;
        }
        opened.torn = torn.as_ref().map(|t| t.line);
        Ok((
            Self {
                path: path.to_owned(),
                file,
                prev,
                torn,
                last_policy,
                last_live: None,
            },
            opened,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sha256 of the last whole entry: the next line's `prev`.
    pub fn head(&self) -> &str {
        &self.prev
    }

    /// Appends the line of a policy that went live at `ts`, durably (written, then
    /// fdatasync). On an error nothing of the line stays in the file if it can be helped (a
    /// part that cannot be taken back is a torn line for the next start), and the chain is
    /// as it was.
    ///
    /// `None` when `p` is the policy this agent recorded last (see `last_live`).
    pub fn append_policy(
        &mut self,
        p: &WentLive,
        ts: String,
    ) -> std::io::Result<Option<PolicyLine>> {
        let this = (p.sha256.clone(), p.signer.clone());
        if self.last_live.as_ref() == Some(&this) {
            return Ok(None);
        }
        let line = PolicyLine {
            kind: "policy".into(),
            ts,
            generation: p.generation,
            site: p.site.clone(),
            path: p.path.display().to_string(),
            sha256: p.sha256.clone(),
            signer: p.signer.clone(),
            changes: crate::policy::digest::diff(self.last_policy.as_ref(), &p.digests),
            digests: p.digests.clone(),
            torn: self.torn.clone(),
            prev: self.prev.clone(),
        };
        let text = serde_json::to_string(&line).map_err(std::io::Error::other)?;
        self.append(&text)?;
        self.last_policy = Some(p.digests.clone());
        self.last_live = Some(this);
        Ok(Some(line))
    }

    /// Appends a `grant` or `revoke` line (its `torn` and `prev` are set here), durably, as
    /// [`ChangeLog::append_policy`].
    pub fn append_grant(&mut self, mut line: GrantLine) -> std::io::Result<GrantLine> {
        line.torn = self.torn.clone();
        line.prev = self.prev.clone();
        let text = serde_json::to_string(&line).map_err(std::io::Error::other)?;
        self.append(&text)?;
        Ok(line)
    }

    fn append(&mut self, text: &str) -> std::io::Result<()> {
        let before = self.file.metadata()?.len();
        let mut buf = Vec::with_capacity(text.len() + 1);
        buf.extend_from_slice(text.as_bytes());
        buf.push(b'\n');
        let r = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = r {
            let _ = self.file.set_len(before);
            return Err(e);
        }
        self.prev = sha256_hex(text.as_bytes());
        self.torn = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("conduit-changelog-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d.join("log").join("changelog.jsonl")
    }

    fn live(generation: u64, zones: &[&str]) -> WentLive {
        WentLive {
            generation,
            site: "s".into(),
            path: "/etc/conduit/policy.yaml".into(),
            sha256: format!("{generation:064x}"),
            signer: None,
            digests: Digests {
                defaults: "d".into(),
                zones: zones.iter().map(|z| (z.to_string(), "x".into())).collect(),
                conduits: Default::default(),
            },
        }
    }

    #[test]
    fn a_chain_of_appends_verifies_and_an_edit_breaks_it_at_its_line() {
        let path = tmp("chain");
        let (mut log, o) = ChangeLog::open(&path).unwrap();
        assert_eq!((o.lines, o.torn, o.broken), (0, None, None));
        let first = log
            .append_policy(&live(1, &["a"]), "t1".into())
            .unwrap()
            .unwrap();
        assert_eq!(first.prev, GENESIS);
        assert_eq!(first.changes.zones.added, ["a"]);
        log.append_policy(&live(2, &["a", "b"]), "t2".into())
            .unwrap();
        drop(log);
        // Reopened: the chain and the last policy carry on.
        let (mut log, o) = ChangeLog::open(&path).unwrap();
        assert_eq!((o.lines, o.torn), (2, None));
        let third = log
            .append_policy(&live(3, &["b"]), "t3".into())
            .unwrap()
            .unwrap();
        assert_eq!(third.changes.zones.removed, ["a"]);
        assert!(third.changes.zones.added.is_empty());
        let bytes = std::fs::read(&path).unwrap();
        let r = verify(&bytes);
        assert_eq!(
            (r.lines, r.entries, r.broken.clone()),
            (3, 3, None),
            "{r:?}"
        );
        // One byte of line 2 changed: line 3's prev no longer matches.
        let text = String::from_utf8(bytes.clone()).unwrap();
        let edited = text.replacen("\"generation\":2", "\"generation\":7", 1);
        let r = verify(edited.as_bytes());
        assert_eq!(r.broken.as_ref().map(|b| b.0), Some(3), "{r:?}");
        // A line removed.
        let mut ls: Vec<&str> = text.lines().collect();
        ls.remove(1);
        let r = verify((ls.join("\n") + "\n").as_bytes());
        assert_eq!(r.broken.as_ref().map(|b| b.0), Some(2), "{r:?}");
        // The first line's prev.
        let forged = text.replacen(GENESIS, &"1".repeat(64), 1);
        assert_eq!(verify(forged.as_bytes()).broken.map(|b| b.0), Some(1));
        std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_reported_then_named_by_the_next_entry() {
        let path = tmp("torn");
        let (mut log, _) = ChangeLog::open(&path).unwrap();
        log.append_policy(&live(1, &["a"]), "t1".into()).unwrap();
        drop(log);
        // A crash half-way through the second append.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"kind\":\"policy\",\"ts\":\"t2\",\"gen")
            .unwrap();
        drop(f);
        let r = verify(&std::fs::read(&path).unwrap());
        assert_eq!(
            (r.torn.clone(), r.broken.clone(), r.unterminated),
            (vec![(2, false)], None, true)
        );
        let (mut log, o) = ChangeLog::open(&path).unwrap();
        assert_eq!((o.torn, o.terminated, o.broken), (Some(2), true, None));
        let l = log
            .append_policy(&live(2, &["a"]), "t3".into())
            .unwrap()
            .unwrap();
        assert_eq!(l.torn.as_ref().map(|t| t.line), Some(2));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            l.prev,
            sha256_hex(lines[0].as_bytes()),
            "chains to the last whole line"
        );
        let r = verify(text.as_bytes());
        assert_eq!(
            (r.entries, r.torn.clone(), r.broken.clone()),
            (2, vec![(2, true)], None),
            "{r:?}"
        );
        // The torn bytes changed afterwards: the line after it no longer vouches for them.
        let edited = text.replacen("\"gen\n", "\"gex\n", 1);
        assert_eq!(verify(edited.as_bytes()).broken.map(|b| b.0), Some(2));
        // A garbage line in the middle that nothing names.
        let inserted = format!("{}\nnot json\n{}\n", lines[0], lines[2]);
        assert_eq!(verify(inserted.as_bytes()).broken.map(|b| b.0), Some(2));
        std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).unwrap();
    }

    #[test]
    fn the_same_policy_again_in_one_run_gets_no_line_but_a_restart_records_it() {
        let path = tmp("again");
        let (mut log, _) = ChangeLog::open(&path).unwrap();
        assert!(
            log.append_policy(&live(1, &["a"]), "t1".into())
                .unwrap()
                .is_some()
        );
        // Applied again (generation 2): the same sha256 and signer.
        let mut again = live(1, &["a"]);
        again.generation = 2;
        assert!(log.append_policy(&again, "t2".into()).unwrap().is_none());
        // Signed now: a new line, though the bytes are the same.
        again.signer = Some(Signer {
            principal: "ops".into(),
            key: "SHA256:k".into(),
        });
        assert!(log.append_policy(&again, "t3".into()).unwrap().is_some());
        drop(log);
        // After a restart, the policy that goes live is recorded again.
        let (mut log, _) = ChangeLog::open(&path).unwrap();
        assert!(log.append_policy(&again, "t4".into()).unwrap().is_some());
        let r = verify(&std::fs::read(&path).unwrap());
        assert_eq!((r.entries, r.broken), (3, None));
        std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).unwrap();
    }

    #[test]
    fn a_whole_last_line_without_its_newline_is_kept() {
        let path = tmp("nonl");
        let (mut log, _) = ChangeLog::open(&path).unwrap();
        log.append_policy(&live(1, &["a"]), "t1".into()).unwrap();
        drop(log);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let (mut log, o) = ChangeLog::open(&path).unwrap();
        assert_eq!((o.torn, o.terminated), (None, true));
        log.append_policy(&live(2, &["a"]), "t2".into()).unwrap();
        let r = verify(&std::fs::read(&path).unwrap());
        assert_eq!((r.entries, r.broken), (2, None));
        std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).unwrap();
    }
}
