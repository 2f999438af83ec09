//! Evidence from the local agent: its state file (which policy runs, the names behind the
//! IDs) and the counters in the maps it pinned, as `conduit status` reads them.
use std::{collections::BTreeMap, path::Path};

use conduit_common::{EVSTAT_FLOOD, EVSTAT_LOST, EVSTAT_SUPPRESSED, Reason, Verdict};
use serde::Serialize;

use super::ReportError;
use crate::agent::state;

/// Packets and bytes of a conduit, with packets per gateway.
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    pub per_gateway: BTreeMap<String, u64>,
}

/// Packets of one (zones, reason) drop counter, with the per-gateway split.
#[derive(Clone, Debug, Default)]
pub struct PerGateway {
    pub packets: u64,
    pub per_gateway: BTreeMap<String, u64>,
}

impl PerGateway {
    pub fn add(&mut self, gateway: &str, n: u64) {
        self.packets += n;
        *self.per_gateway.entry(gateway.to_owned()).or_insert(0) += n;
    }
}

/// Counters over the window, summed over the gateways.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub conduits: BTreeMap<String, Traffic>,
    /// (src_zone, dst_zone, reason).
    pub drops: BTreeMap<(String, String, String), PerGateway>,
    pub would: BTreeMap<(String, String, String), PerGateway>,
    /// (conduit, reason).
    pub inspection: BTreeMap<(String, String), u64>,
    pub inspection_would: BTreeMap<(String, String), u64>,
    /// Lost audit events by reason.
    pub lost: BTreeMap<String, u64>,
    pub suppressed: Option<u64>,
    pub frames: Option<BTreeMap<String, u64>>,
}

/// What runs on one gateway.
#[derive(Clone, Debug, Serialize)]
pub struct LiveId {
    /// The gateway (Prometheus `instance`, or this host's name).
    pub gateway: Option<String>,
    pub sha256: String,
    pub generation: Option<u64>,
    /// Whether the live policy is the file the report is about.
    pub matches: bool,
    pub agent_running: Option<bool>,
    pub agent_pid: Option<u32>,
    pub policy_path: Option<String>,
    pub interfaces: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Evidence {
    pub source: &'static str,
    pub state_dir: Option<String>,
    pub prometheus: Option<String>,
    pub window: Option<String>,
    pub gateways: Vec<String>,
    pub live: Vec<LiveId>,
    pub counters: Option<Counters>,
    pub notes: Vec<String>,
}

impl Evidence {
    pub fn none() -> Self {
        Self {
            source: "none",
            state_dir: None,
            prometheus: None,
            window: None,
            gateways: Vec::new(),
            live: Vec::new(),
            counters: None,
            notes: vec!["No evidence source: the report shows the policy only, without counters (give --state-dir on the gateway or --prometheus URL).".into()],
        }
    }
}

/// The local agent's evidence: the state file in `state_dir` names the pin directory and the
/// live policy; the counters are read from the pinned maps (they live as long as the pins,
/// across agent restarts). `sha256` is the report's policy, compared with the live one.
pub fn from_agent(state_dir: &Path, sha256: &str) -> Result<Evidence, ReportError> {
    let st = state::read(state_dir).map_err(|e| ReportError::NoAgent {
        dir: state_dir.display().to_string(),
        why: if e.kind() == std::io::ErrorKind::NotFound {
            "no state file: no agent has run with this --state-dir (is it the directory `conduit run --state-dir` uses?)".into()
        } else {
            e.to_string()
        },
    })?;
    let running = Path::new(&format!("/proc/{}", st.pid)).exists();
    let dp = crate::datapath::Datapath::open_pins(&st.pin_dir).map_err(|e| ReportError::NoAgent {
        dir: state_dir.display().to_string(),
        why: format!(
            "its state file names the pins under {}, which cannot be opened ({e}): was the agent detached?",
            st.pin_dir.display()
        ),
    })?;
    let read = |what: &str, e: crate::datapath::DatapathError| {
        ReportError::Counters(format!("{what}: {e}"))
    };
    let gw = crate::agent::host::hostname();
    let zone = |id: u32| st.zone_name(id);
    let mut k = Counters::default();
    let stats = dp
        .conduit_stats()
        .map_err(|e| read("conduit counters", e))?;
    for (id, name) in &st.conduits {
        let c = stats.get(id).copied().unwrap_or_default();
        k.conduits.insert(
            name.clone(),
            Traffic {
                packets: c.packets,
                bytes: c.bytes,
                per_gateway: BTreeMap::from([(gw.clone(), c.packets)]),
            },
        );
    }
    for (key, c) in dp.drops().map_err(|e| read("drop counters", e))? {
        let reason = Reason::try_from(key.reason)
            .map(Reason::as_str)
            .unwrap_or("other");
        let target = if key.verdict == Verdict::WouldDeny as u32 {
            &mut k.would
        } else {
            &mut k.drops
        };
        target
            .entry((zone(key.src_zone), zone(key.dst_zone), reason.to_owned()))
            .or_default()
            .add(&gw, c.packets);
    }
    for (key, c) in dp
        .conduit_drops()
        .map_err(|e| read("inspection counters", e))?
    {
        let Some(name) = st.conduits.get(&key.conduit) else {
            continue;
        };
        let reason = Reason::try_from(key.reason)
            .map(Reason::as_str)
            .unwrap_or("other");
        let target = if key.verdict == Verdict::WouldDeny as u32 {
            &mut k.inspection_would
        } else {
            &mut k.inspection
        };
        *target.entry((name.clone(), reason.to_owned())).or_insert(0) += c.packets;
    }
    let ev = dp
        .event_stats()
        .map_err(|e| read("audit event counters", e))?;
    k.suppressed = Some(ev[EVSTAT_SUPPRESSED as usize]);
    // Lines the agent could not write are counted in the agent's memory only (its metrics).
    k.lost.insert("flood".into(), ev[EVSTAT_FLOOD as usize]);
    k.lost.insert("ring_full".into(), ev[EVSTAT_LOST as usize]);
    k.frames = Some(
        dp.totals()
            .map_err(|e| read("frame totals", e))?
            .iter()
            .map(|(v, c)| (v.as_str().to_owned(), c.packets))
            .collect(),
    );
    let generation = dp.active().ok().map(|a| a.generation);
    let mut notes = vec![
        "Counters are the agent's own, since its maps were pinned (they survive reloads and agent restarts), not a fixed window; use --prometheus --window for one.".to_owned(),
        "Conduit packets include replies; allowed traffic within a zone (intra_zone: allow) has no counter per zone.".to_owned(),
        "Audit lines the agent could not write (write_error) are counted only in its metrics (conduit_audit_events_lost_total); --prometheus reports them.".to_owned(),
    ];
    if !running {
        notes.push(format!("The agent (pid {}) is not running; the pinned program and its counters are read as they are.", st.pid));
    }
    Ok(Evidence {
        source: "agent",
        state_dir: Some(state_dir.display().to_string()),
        prometheus: None,
        window: Some("since the counters were created".into()),
        gateways: vec![gw.clone()],
        live: vec![LiveId {
            gateway: Some(gw),
            matches: st.sha256 == sha256,
            sha256: st.sha256.clone(),
            generation: generation.or(Some(st.generation)),
            agent_running: Some(running),
            agent_pid: Some(st.pid),
            policy_path: Some(st.policy_path.display().to_string()),
            interfaces: st.interfaces.iter().map(|i| i.name.clone()).collect(),
        }],
        counters: Some(k),
        notes,
    })
}
