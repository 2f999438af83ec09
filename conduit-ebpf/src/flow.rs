//! Connection tracking in the kernel: the flow table (two maps, by address family) and its
//! writes. The state machine is `conduit_common::flow`.
use conduit_common::{
    FAMILY_V4,
    flow::{FLOW_NEW, FlowKey, FlowVal, next_state, state_key},
    verdict::{Decision, FlowTable, Packet},
};

use crate::maps::{CDT_FLOWS4, CDT_FLOWS6};

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
    fn with_flow(&mut self, key: &FlowKey, f: impl FnOnce(&mut FlowVal) -> bool) -> Option<bool> {
        let ptr = get(key)?;
        // SAFETY: the LRU element stays valid for this program run (RCU); a racing writer on
        // another CPU at worst leaves a slightly older timestamp or cached verdict, which the
        // next packet's checks (generation, MAC) still hold to.
        Some(f(unsafe { &mut *ptr }))
    }
}

/// After the full decision: inserts a new flow, or updates (or removes) a known one.
#[inline(always)]
pub fn update(d: &Decision, p: &Packet, now: u64, generation: u64) {
    let Some(key) = state_key(d, p) else { return };
    if d.flow == FLOW_NEW {
        match next_state(d, p, &FlowVal::default(), now, generation) {
            Some(v) => insert(&key, &v),
            None => remove(&key),
        }
        return;
    }
    // A known flow: update it in place (no map update on the hot path).
    let Some(ptr) = get(&key) else {
        return;
    };
    // SAFETY: as in `with_flow`.
    let old = unsafe { *ptr };
    match next_state(d, p, &old, now, generation) {
        Some(v) => unsafe { *ptr = v },
        None => remove(&key),
    }
}
