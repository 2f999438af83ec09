//! Connection tracking in the kernel: the flow table (two maps, by address family) and its
//! writes. The state machine is `conduit_common::flow`.
use conduit_common::{
    FAMILY_V4, Verdict,
    flow::{
        FLOW_FWD, FLOW_LEARN_ANSWERED, FLOW_LEARN_MODBUS, FLOW_MONITOR, FLOW_NEW, FLOW_REV,
        FlowKey, FlowVal, alive, next_state, state_key,
    },
    inspect::modbus,
    parse::TCP_RST,
    verdict::{Decision, FlowTable, PROTO_TCP, Packet},
};

use crate::{
    learn,
    maps::{CDT_FLOWS4, CDT_FLOWS6},
};

/// The flow stored under `key`, in place.
#[inline(always)]
pub fn get(key: &FlowKey) -> Option<*mut FlowVal> {
    if key.family == FAMILY_V4 {
        CDT_FLOWS4.get_ptr_mut(&key.v4())
    } else {
        CDT_FLOWS6.get_ptr_mut(key)
    }
}

#[inline(always)]
fn insert(key: &FlowKey, v: &FlowVal) {
    let _ = if key.family == FAMILY_V4 {
        CDT_FLOWS4.insert(&key.v4(), v, 0)
    } else {
        CDT_FLOWS6.insert(key, v, 0)
    };
}

#[inline(always)]
fn remove(key: &FlowKey) {
    let _ = if key.family == FAMILY_V4 {
        CDT_FLOWS4.remove(&key.v4())
    } else {
        CDT_FLOWS6.remove(key)
    };
}

/// The flow table, updated in place by the fast path.
pub struct KernelFlows;

impl FlowTable for KernelFlows {
    #[inline(always)]
    fn with_flow<R>(&mut self, key: &FlowKey, f: impl FnOnce(&mut FlowVal) -> R) -> Option<R> {
        let ptr = get(key)?;
        // SAFETY: the LRU element stays valid for this program run (RCU); a racing writer on
        // another CPU at worst leaves a slightly older timestamp or cached verdict, which the
        // next packet's checks (generation, MAC) still hold to.
        Some(f(unsafe { &mut *ptr }))
    }
}

/// After the full decision: inserts a new flow, or updates (or removes) a known one. When
/// `learning`, returns what the learning code records (`learn::FIRST_REPLY`,
/// `learn::MODBUS`, `learn::RENEWED`) and keeps its state in the flow
/// (`FLOW_LEARN_STATE`); else 0.
#[inline(always)]
pub fn update(d: &Decision, p: &Packet, now: u64, generation: u64, learning: bool) -> u8 {
    let Some(key) = state_key(d, p) else { return 0 };
    if d.flow == FLOW_NEW {
        // A monitor-mode flow is opened anew by every packet of its initiator, and continues
        // its conversation (`next_state`): when learning, what was learned of it too, and
        // it is not a new flow again.
        let mut old = FlowVal::default();
        let mut found = 0;
        if d.verdict == Verdict::WouldDeny
            && let Some(ptr) = get(&key)
        {
            // SAFETY: as in `with_flow`.
            old = unsafe { *ptr };
            if learning && old.state & FLOW_MONITOR != 0 && alive(&old, p.proto, now) {
                found = learn::RENEWED;
            }
        }
        match next_state(d, p, &old, now, generation) {
            Some(mut v) => {
                if learning && p.proto == PROTO_TCP && p.dport == modbus::PORT {
                    v.state |= FLOW_LEARN_MODBUS;
                    found |= learn_modbus(&mut v, p);
                }
                insert(&key, &v);
                return found;
            }
            None => remove(&key),
        }
        return found;
    }
    // A known flow: update it in place (no map update on the hot path).
    let Some(ptr) = get(&key) else {
        return 0;
    };
    // SAFETY: as in `with_flow`.
    let old = unsafe { *ptr };
    let mut found = 0;
    let mut learned = old;
    if learning {
        // A reset is a refusal, not an answer (a port scan's closed ports).
        if d.flow == FLOW_REV
            && old.state & FLOW_LEARN_ANSWERED == 0
            && !(p.proto == PROTO_TCP && p.tcp_flags & TCP_RST != 0)
        {
            learned.state |= FLOW_LEARN_ANSWERED;
            found = learn::FIRST_REPLY;
        }
        if d.flow == FLOW_FWD && old.state & FLOW_LEARN_MODBUS != 0 {
            found |= learn_modbus(&mut learned, p);
        }
    }
    match next_state(d, p, &learned, now, generation) {
        // SAFETY: as above.
        Some(v) => unsafe { *ptr = v },
        None => remove(&key),
    }
    found
}

/// A Modbus request of a learning flow other than the last one learned: remembered in the
/// flow, and reported for recording.
#[inline(always)]
fn learn_modbus(v: &mut FlowVal, p: &Packet) -> u8 {
    match modbus::request(p) {
        Some((unit, f)) if v.learned != [unit, f] => {
            v.learned = [unit, f];
            learn::MODBUS
        }
        _ => 0,
    }
}
