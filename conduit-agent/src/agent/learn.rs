//! `conduit run --learn-dir DIR`: moves what the datapath learned (`conduit_common::learn`)
//! into the learn dir (`crate::learned`) every `--learn-interval` and on exit.
use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use conduit_common::{
    Reason, Verdict,
    learn::{
        LEARN_MAC_VARIES, LEARN_SERVER_MAC_VARIES, LearnKey, LearnModbusKey, LearnModbusVal,
        LearnVal,
    },
    verdict::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP},
};

use super::audit::{addr, wall_ns};
use crate::{
    datapath::{Datapath, DatapathError, Learned},
    learned::{FlowId, FlowRec, ModbusId, ModbusRec, Store},
};

/// What /metrics shows of learning.
#[derive(Clone, Copy, Debug, Default)]
pub struct Figures {
    pub records: usize,
    /// Records that did not fit: in the kernel, in the learn dir.
    pub dropped_kernel: u64,
    pub dropped_disk: u64,
}

pub struct Learner {
    dir: PathBuf,
    store: Store,
    /// The kernel's drop counters (cumulative, pinned) when last accounted for.
    kernel_seen: [u64; 2],
}

impl Learner {
    /// Opens (or creates) the learn dir; its records, if any, are continued.
    pub fn open(dir: &Path, max_records: usize, dp: &Datapath) -> Result<Self, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("creating the learn dir {}: {e}", dir.display()))?;
        let mut store = Store::load(dir)
            .map_err(|e| e.to_string())?
            .unwrap_or_else(|| Store::new(String::new(), max_records));
        store.gateway = super::host::hostname();
        store.max_records = max_records;
        let kernel_seen = dp.learn_dropped().map_err(|e| e.to_string())?;
        Ok(Self {
            dir: dir.to_owned(),
            store,
            kernel_seen,
        })
    }

    pub fn figures(&self) -> Figures {
        Figures {
            records: self.store.records(),
            dropped_kernel: self.store.dropped.kernel + self.store.dropped.kernel_modbus,
            dropped_disk: self.store.dropped.disk,
        }
    }

    /// Takes the records out of the kernel (quick: the caller may hold the shared state).
    pub fn take(dp: &Datapath) -> Result<(Learned, [u64; 2]), DatapathError> {
        Ok((dp.drain_learned()?, dp.learn_dropped()?))
    }

    /// Merges what [`Learner::take`] took; `mono_now` and `wall_now` read together now.
    pub fn merge(
        &mut self,
        (l, dropped): (Learned, [u64; 2]),
        mono_now: u64,
        wall_now: SystemTime,
    ) {
        let wall = |ts: u64| u64::try_from(wall_ns(ts, mono_now, wall_now)).unwrap_or(u64::MAX);
        for (k, v) in &l.flows {
            if let Some((id, rec)) = flow(k, v, wall) {
                self.store.add_flow(id, rec);
            }
        }
        for (k, v) in &l.modbus {
            if let Some((id, rec)) = modbus(k, v, wall) {
                self.store.add_modbus(id, rec);
            }
        }
        // The kernel's counters are cumulative (and start again if its pins were removed).
        let delta = |now: u64, seen: u64| if now >= seen { now - seen } else { now };
        self.store.dropped.kernel += delta(dropped[0], self.kernel_seen[0]);
        self.store.dropped.kernel_modbus += delta(dropped[1], self.kernel_seen[1]);
        self.kernel_seen = dropped;
    }

    /// Writes the learn dir (atomically). Returns the bytes written.
    pub fn save(&self) -> std::io::Result<usize> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        self.store.save(&self.dir, now)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A kernel flow record as discover sees it; `None` for an address family it does not know.
fn flow(k: &LearnKey, v: &LearnVal, wall: impl Fn(u64) -> u64) -> Option<(FlowId, FlowRec)> {
    let id = FlowId {
        client: addr(k.family, &k.client)?,
        server: addr(k.family, &k.server)?,
        proto: k.proto,
        port: match k.proto {
            PROTO_TCP | PROTO_UDP => k.port,
            // The kernel keeps an echo request's type << 8 (`flow_port`).
            PROTO_ICMP | PROTO_ICMPV6 => k.port >> 8,
            _ => 0,
        },
    };
    let name = |v: Option<&'static str>| v.unwrap_or("?").to_owned();
    let rec = FlowRec {
        client_mac: (v.client_mac != [0; 6]).then_some(v.client_mac),
        mac_varies: v.flags & LEARN_MAC_VARIES != 0,
        server_mac: (v.server_mac != [0; 6]).then_some(v.server_mac),
        server_mac_varies: v.flags & LEARN_SERVER_MAC_VARIES != 0,
        flows: u64::from(v.flows),
        answered: u64::from(v.answered),
        denied: u64::from(v.denied),
        // A record made by a reply alone says nothing of the flow's verdict.
        verdict: if v.flows + v.denied == 0 {
            String::new()
        } else {
            name(
                Verdict::try_from(u32::from(v.verdict))
                    .ok()
                    .map(Verdict::as_str),
            )
        },
        reason: if v.flows + v.denied == 0 {
            String::new()
        } else {
            name(
                Reason::try_from(u32::from(v.reason))
                    .ok()
                    .map(Reason::as_str),
            )
        },
        first: wall(v.first_seen),
        last: wall(v.last_seen),
    };
    Some((id, rec))
}

fn modbus(
    k: &LearnModbusKey,
    v: &LearnModbusVal,
    wall: impl Fn(u64) -> u64,
) -> Option<(ModbusId, ModbusRec)> {
    let id = ModbusId {
        client: addr(k.family, &k.client)?,
        server: addr(k.family, &k.server)?,
        unit: k.unit,
    };
    let functions = (0u8..128)
        .filter(|f| conduit_common::learn::has_function(&v.functions, *f))
        .collect();
    Some((
        id,
        ModbusRec {
            functions,
            first: wall(v.first_seen),
            last: wall(v.last_seen),
        },
    ))
}

/// One drain: the kernel's records into the learn dir, and the figures into `shared` for
/// /metrics. Blocking (file writing): run it off the runtime thread. Holds the shared state
/// only while it reads the kernel's maps.
pub fn drain(learner: &std::sync::Mutex<Learner>, shared: &std::sync::Mutex<super::Shared>) {
    let taken = match shared.lock() {
        Ok(s) => Learner::take(&s.view),
        Err(_) => return,
    };
    let Ok(mut l) = learner.lock() else { return };
    match taken {
        Ok(t) => l.merge(t, super::host::monotonic_ns(), SystemTime::now()),
        Err(e) => tracing::warn!("reading what the datapath learned: {e}"),
    }
    if let Err(e) = l.save() {
        tracing::warn!(dir = %l.dir().display(), "writing the learn dir: {e}; its records are kept in memory and written at the next drain");
    }
    let f = l.figures();
    if let Ok(mut s) = shared.lock() {
        s.learn = Some(f);
    }
}
