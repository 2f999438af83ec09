//! On-demand conduits (SPEC §8): `conduit grant` opens one for a while, `conduit revoke`
//! closes it early, and the datapath closes it on time by itself.
//!
//! - The kernel's grants map ([`conduit_common::MAP_GRANTS`]) is the truth: a grant is
//!   enforced while its entry's end (CLOCK_BOOTTIME seconds) has not come, whether or not an
//!   agent runs. Flows of on-demand conduits never take the fast path, so a revoke closes
//!   their open sessions at once.
//! - The agent is the only writer while it runs: `conduit grant` and `conduit revoke` ask it
//!   over a Unix socket in its state directory ([`socket_path`], mode 0600: root only). It
//!   checks the request against the live policy, writes the map, records the grant in the
//!   state file (who, why, until), the change log and the audit log, and ends grants whose
//!   time has come (an audit line). A reload carries open grants over to the new policy's
//!   on-demand conduits of the same name and ends the others (recorded as revocations by
//!   `conduit`).
//! - Without a running agent, `conduit revoke` still works from the pins (under the pin
//!   directory's lock, so no agent starts meanwhile) and records itself in the change log and
//!   the audit log the agent named in its state file. A grant needs the agent: opening access
//!   nobody records is refused.
use std::{
    io::{BufRead as _, Write as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use conduit_common::{ConduitKey, Grant};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{Reloader, state};
use crate::{
    datapath::Datapath,
    exit::Exit,
    integrity::{Integrity, changelog::GrantLine, now_rfc3339},
    policy::{addr::human_duration, compile::boot_now_s},
};

/// An on-demand conduit of the live policy.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct OnDemand {
    /// `on_demand.max`, in seconds.
    pub max: u32,
    /// The conduit's `expires` (seconds since the epoch), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u32>,
}

/// An open grant, as the state file keeps it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GrantRecord {
    /// Its end in the kernel: CLOCK_BOOTTIME seconds.
    pub until_boot: u32,
    /// Its end on the wall clock when it was granted (RFC 3339, UTC).
    pub until: String,
    pub seconds: u32,
    pub granted_at: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sudo_user: Option<String>,
    pub reason: Option<String>,
}

impl GrantRecord {
    /// Seconds left at `boot_now` (CLOCK_BOOTTIME).
    pub fn left(&self, boot_now: u32) -> u32 {
        self.until_boot.saturating_sub(boot_now)
    }

    /// Who granted it: `user`, or `user (sudo for NAME)`.
    pub fn by(&self) -> String {
        match &self.sudo_user {
            Some(s) => format!("{} (sudo for {s})", self.user),
            None => self.user.clone(),
        }
    }
}

/// The agent's control socket in its state directory.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("control.sock")
}

/// A request on the control socket: one JSON line.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Grant {
        conduit: String,
        seconds: u32,
        reason: Option<String>,
        sudo_user: Option<String>,
    },
    Revoke {
        conduit: String,
        reason: Option<String>,
        sudo_user: Option<String>,
    },
}

/// The answer: one JSON line, `code` the exit status for the command (SPEC §2).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Reply {
    pub code: u8,
    pub message: String,
}

impl Reply {
    fn ok(message: String) -> Self {
        Self {
            code: Exit::Ok.code(),
            message,
        }
    }
    fn refused(message: String) -> Self {
        Self {
            code: Exit::Rejected.code(),
            message,
        }
    }
    fn failed(message: String) -> Self {
        Self {
            code: Exit::Failed.code(),
            message,
        }
    }
}

/// Who asked: the socket peer's user (its credentials, from the kernel) and, when the
/// command ran under sudo, whom for (`SUDO_USER`, as the command reports it).
#[derive(Clone, Debug)]
pub struct Who {
    pub user: String,
    pub sudo_user: Option<String>,
}

/// The longest request line and `--reason`.
const MAX_REQUEST: usize = 8 * 1024;
pub const MAX_REASON: usize = 1024;

/// A user's name from /etc/passwd, else `uid N`.
pub fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_owned())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// The wall-clock time `seconds` from now, RFC 3339.
fn wall_in(seconds: u32) -> String {
    let t = std::time::SystemTime::now() + Duration::from_secs(u64::from(seconds));
    crate::agent::audit::rfc3339(
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    )
}

/// Which conduit a request names: its id, if it is an on-demand conduit of the live policy.
fn on_demand<'a>(st: &'a state::State, conduit: &str) -> Result<(u32, &'a OnDemand), Reply> {
    let names: Vec<&str> = st.on_demand.keys().map(String::as_str).collect();
    let list = if names.is_empty() {
        "it has none".to_owned()
    } else {
        format!("its on-demand conduits: {}", names.join(", "))
    };
    let Some(id) = st.conduit_id(conduit) else {
        return Err(Reply::refused(format!(
            "conduit \"{conduit}\" is not in the live policy (generation {}); {list}",
            st.generation
        )));
    };
    match st.on_demand.get(conduit) {
        Some(o) => Ok((id, o)),
        None => Err(Reply::refused(format!(
            "conduit \"{conduit}\" is not on demand (it is open by the policy, with no grant); \
             give it `on_demand: {{ max: DURATION }}` to open it only with `conduit grant`; {list}"
        ))),
    }
}

/// Opens `conduit` for `seconds` in the live slot and records it.
pub fn grant(
    dp: &mut Datapath,
    st: &mut state::State,
    integrity: &mut Integrity,
    conduit: &str,
    seconds: u32,
    reason: Option<String>,
    who: &Who,
) -> Reply {
    let (id, od) = match on_demand(st, conduit) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if seconds == 0 {
        return Reply::refused("a grant must last longer than zero seconds".into());
    }
    if seconds > od.max {
        return Reply::refused(format!(
            "--for {} is longer than conduit \"{conduit}\" may be open: its on_demand.max is {}",
            human_duration(u64::from(seconds)),
            human_duration(u64::from(od.max))
        ));
    }
    if let Some(end) = od.expires
        && crate::policy::compile::tai_now_s() >= end
    {
        return Reply::refused(format!(
            "conduit \"{conduit}\" has ended (its `expires` has passed): a grant cannot open it"
        ));
    }
    let slot = match dp.active() {
        Ok(a) if a.generation > 0 => a.slot,
        Ok(_) => return Reply::failed("no policy is live".into()),
        Err(e) => return Reply::failed(format!("reading the live slot: {e}")),
    };
    let until_boot = boot_now_s().saturating_add(seconds);
    if let Err(e) = dp.set_grant(
        &ConduitKey { slot, conduit: id },
        &Grant {
            until: until_boot,
            _pad: 0,
        },
    ) {
        return Reply::failed(format!("writing the grant into the datapath: {e}"));
    }
    let until = wall_in(seconds);
    let extended = st.grants.contains_key(conduit);
    st.grants.insert(
        conduit.to_owned(),
        GrantRecord {
            until_boot,
            until: until.clone(),
            seconds,
            granted_at: now_rfc3339(),
            user: who.user.clone(),
            sudo_user: who.sudo_user.clone(),
            reason: reason.clone(),
        },
    );
    info!(conduit, seconds, until = %until, user = %who.user, sudo_user = ?who.sudo_user, reason = ?reason, "grant: on-demand conduit opened");
    let logged = integrity.record_grant(GrantLine {
        kind: "grant".into(),
        generation: st.generation,
        conduit: conduit.to_owned(),
        seconds: Some(seconds),
        until: Some(until.clone()),
        user: who.user.clone(),
        sudo_user: who.sudo_user.clone(),
        reason,
        ..GrantLine::default()
    });
    let mut m = format!(
        "granted: conduit \"{conduit}\" is open for {} (until {until}){}; `conduit revoke {conduit}` closes it early",
        human_duration(u64::from(seconds)),
        if extended {
            ", replacing its earlier grant"
        } else {
            ""
        }
    );
    if let Err(e) = logged {
        m.push_str(&format!(
            "\nwarning: the grant is open but could not be recorded: {e}"
        ));
    }
    Reply::ok(m)
}

/// Closes `conduit` (both slots) and records it.
pub fn revoke(
    dp: &mut Datapath,
    st: &mut state::State,
    integrity: &mut Integrity,
    conduit: &str,
    reason: Option<String>,
    who: &Who,
) -> Reply {
    let id = match on_demand(st, conduit) {
        Ok((id, _)) => id,
        Err(r) => return r,
    };
    // Open in the kernel, whatever the state file says (one that was lost or not written
    // still leaves a grant the kernel enforces: closing it is a revocation to record).
    let now = boot_now_s();
    let kernel_open = dp
        .grants()
        .is_ok_and(|g| g.iter().any(|(k, v)| k.conduit == id && v.until > now));
    let removed = match dp.remove_grants(id) {
        Ok(n) => n,
        Err(e) => return Reply::failed(format!("removing the grant from the datapath: {e}")),
    };
    let record = st.grants.remove(conduit);
    let open = kernel_open || record.as_ref().is_some_and(|r| r.left(now) > 0);
    if !open {
        return Reply::ok(format!(
            "conduit \"{conduit}\" has no open grant: it is closed{}",
            if removed > 0 {
                " (a grant whose time was up was removed)"
            } else {
                ""
            }
        ));
    }
    info!(conduit, user = %who.user, sudo_user = ?who.sudo_user, reason = ?reason, "revoke: on-demand conduit closed");
    let logged = integrity.record_grant(GrantLine {
        kind: "revoke".into(),
        generation: st.generation,
        conduit: conduit.to_owned(),
        user: who.user.clone(),
        sudo_user: who.sudo_user.clone(),
        reason,
        ..GrantLine::default()
    });
    let mut m = format!("revoked: conduit \"{conduit}\" is closed, its open sessions included");
    if let Err(e) = logged {
        m.push_str(&format!(
            "\nwarning: the revocation holds but could not be recorded: {e}"
        ));
    }
    Reply::ok(m)
}

/// Ends the grants whose time has come: the kernel closed them already; their entries go,
/// and each gets a `grant_ended` audit line. Whether anything changed.
pub fn end_due(dp: &mut Datapath, st: &mut state::State, integrity: &mut Integrity) -> bool {
    let now = boot_now_s();
    let due: Vec<String> = st
        .grants
        .iter()
        .filter(|(_, g)| g.left(now) == 0)
        .map(|(c, _)| c.clone())
        .collect();
    for c in &due {
        let Some(g) = st.grants.remove(c) else {
            continue;
        };
        if let Some(id) = st.conduit_id(c)
            && let Err(e) = dp.remove_grants(id)
        {
            warn!(conduit = %c, "removing an ended grant from the datapath: {e} (it is closed anyway)");
        }
        info!(conduit = %c, until = %g.until, "grant ended: on-demand conduit closed");
        let _ = integrity.audit_line(&serde_json::json!({
            "ts": now_rfc3339(),
            "event": "grant_ended",
            "conduit": c,
            "generation": st.generation,
            "until": g.until,
            "user": g.user,
            "reason": g.reason,
        }));
    }
    !due.is_empty()
}

/// After a policy went live: grants of conduits that are no longer on demand in it end (the
/// new slot was written without them), recorded as revocations by the agent.
pub fn after_apply(st: &mut state::State, integrity: &mut Integrity) {
    let gone: Vec<String> = st
        .grants
        .keys()
        .filter(|c| !st.on_demand.contains_key(*c))
        .cloned()
        .collect();
    for c in gone {
        st.grants.remove(&c);
        let why = if st.conduit_id(&c).is_some() {
            "the conduit is no longer on demand in the live policy"
        } else {
            "the conduit is not in the live policy"
        };
        warn!(conduit = %c, generation = st.generation, "grant ended by the reload: {why}");
        let _ = integrity.record_grant(GrantLine {
            kind: "revoke".into(),
            generation: st.generation,
            conduit: c,
            user: "conduit".into(),
            reason: Some(format!("{why} (generation {})", st.generation)),
            ..GrantLine::default()
        });
    }
}

/// What a new policy's slot must hold: the open grants of its on-demand conduits, by the
/// conduit ids of that policy (conduit id → end).
pub fn for_policy(
    grants: &std::collections::BTreeMap<String, u32>,
    conduit_ids: &std::collections::BTreeMap<String, u32>,
    on_demand: &std::collections::BTreeMap<String, OnDemand>,
) -> std::collections::BTreeMap<u32, u32> {
    grants
        .iter()
        .filter(|(c, _)| on_demand.contains_key(*c))
        .filter_map(|(c, &until)| conduit_ids.get(c).map(|&id| (id, until)))
        .collect()
}

impl Reloader {
    /// Carries out a control-socket request (blocking: map writes, fsync of the change log).
    fn control(&self, req: Request, peer_user: String) -> Reply {
        let Ok(mut dp) = self.dp.lock() else {
            return Reply::failed("the agent is shutting down".into());
        };
        let Ok(mut integrity) = self.integrity.lock() else {
            return Reply::failed("the agent is shutting down".into());
        };
        let Ok(mut st) = self.shared.lock().map(|s| s.state.clone()) else {
            return Reply::failed("the agent is shutting down".into());
        };
        let who = |sudo_user| Who {
            user: peer_user.clone(),
            sudo_user,
        };
        let reply = match req {
            Request::Grant {
                conduit,
                seconds,
                reason,
                sudo_user,
            } => grant(
                &mut dp,
                &mut st,
                &mut integrity,
                &conduit,
                seconds,
                reason,
                &who(sudo_user),
            ),
            Request::Revoke {
                conduit,
                reason,
                sudo_user,
            } => revoke(
                &mut dp,
                &mut st,
                &mut integrity,
                &conduit,
                reason,
                &who(sudo_user),
            ),
        };
        self.store_grants(st);
        reply
    }

    /// Ends the grants whose time has come (see [`end_due`]).
    pub(super) fn end_due_grants(&self) {
        let Ok(mut dp) = self.dp.lock() else { return };
        let Ok(mut integrity) = self.integrity.lock() else {
            return;
        };
        let Ok(mut st) = self.shared.lock().map(|s| s.state.clone()) else {
            return;
        };
        if end_due(&mut dp, &mut st, &mut integrity) {
            self.store_grants(st);
        }
    }

    /// The grants of `st` into the shared state and the state file. Grants change only under
    /// the datapath's lock, which the caller holds: nothing else changes them meanwhile.
    fn store_grants(&self, st: state::State) {
        let Ok(mut s) = self.shared.lock() else {
            return;
        };
        s.state.grants = st.grants;
        let snapshot = s.state.clone();
        drop(s);
        if let Err(e) = state::write(&self.state_dir, &snapshot) {
            warn!("writing the state file: {e}");
        }
    }
}

/// Binds the control socket (replacing a stale one), root only.
pub fn bind(state_dir: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(state_dir)?;
    let path = socket_path(state_dir);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let l = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serves `conduit grant` and `conduit revoke`: one request line, one reply line per
/// connection, within 10 s.
pub(super) async fn serve(listener: tokio::net::UnixListener, r: Arc<Reloader>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let r = r.clone();
        tokio::spawn(async move {
            if let Err(e) = tokio::time::timeout(Duration::from_secs(10), answer(stream, r)).await {
                warn!("a control-socket client took too long: {e}");
            }
        });
    }
}

async fn answer(stream: tokio::net::UnixStream, r: Arc<Reloader>) {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    let uid = stream.peer_cred().map(|c| c.uid()).ok();
    let (rd, mut wr) = stream.into_split();
    let mut line = Vec::new();
    let read = tokio::io::BufReader::new(rd.take(MAX_REQUEST as u64 + 1))
        .read_until(b'\n', &mut line)
        .await;
    let reply = match (read, uid) {
        (Err(e), _) => Reply::refused(format!("reading the request: {e}")),
        (_, None) => Reply::failed("the peer's credentials are unknown".into()),
        (Ok(_), _) if line.len() > MAX_REQUEST => Reply::refused("the request is too long".into()),
        (Ok(_), Some(uid)) => match serde_json::from_slice::<Request>(&line) {
            Err(e) => Reply::refused(format!("not a request: {e}")),
            Ok(req) => {
                let user = user_name(uid);
                tokio::task::spawn_blocking(move || r.control(req, user))
                    .await
                    .unwrap_or_else(|e| Reply::failed(format!("the request failed: {e}")))
            }
        },
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    let _ = wr.write_all(&out).await;
}

/// `conduit grant` and `conduit revoke`, the command's side: asks the agent over its socket.
/// `Err` when no agent answers (the socket is missing or refuses).
pub fn ask(state_dir: &Path, req: &Request) -> Result<Reply, std::io::Error> {
    let mut s = std::os::unix::net::UnixStream::connect(socket_path(state_dir))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut answer = String::new();
    std::io::BufReader::new(s).read_line(&mut answer)?;
    serde_json::from_str(&answer).map_err(|e| {
        std::io::Error::other(format!(
            "the agent's answer is not a reply ({e}): {answer:?}"
        ))
    })
}

/// `conduit revoke` without a running agent: from the pins, under the pin directory's lock,
/// recorded in the change log and audit log of the agent's state file.
pub fn revoke_offline(
    pin_dir: &Path,
    state_dir: &Path,
    conduit: &str,
    reason: Option<String>,
    who: &Who,
) -> Reply {
    let _lock = match super::lock::lock(pin_dir) {
        Ok(l) => l,
        Err(e) => {
            return Reply::failed(format!(
                "{e}; it does not answer on {}",
                socket_path(state_dir).display()
            ));
        }
    };
    let mut st = match state::read(state_dir) {
        Ok(s) => s,
        Err(e) => {
            return Reply::failed(format!(
                "no agent runs and its state file {} cannot be read ({e}): nothing is known of grants",
                state::path(state_dir).display()
            ));
        }
    };
    let mut dp = match Datapath::open_pins(pin_dir) {
        Ok(d) => d,
        Err(e) => {
            return Reply::failed(format!(
                "no agent runs and its pins under {} cannot be opened: {e}",
                pin_dir.display()
            ));
        }
    };
    let mut integrity =
        match Integrity::open(None, st.change_log.as_deref(), st.audit_log.as_deref()) {
            Ok(i) => i,
            Err(e) => return Reply::failed(e),
        };
    let mut reply = revoke(&mut dp, &mut st, &mut integrity, conduit, reason, who);
    if let Err(e) = state::write(state_dir, &st) {
        reply
            .message
            .push_str(&format!("\nwarning: writing the state file: {e}"));
    }
    if reply.code == Exit::Ok.code() {
        reply
            .message
            .push_str(" (no agent runs: done from the pins)");
    }
    reply
}
