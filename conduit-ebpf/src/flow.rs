//! Connection tracking writes: the state machine is `conduit_common::flow`.
use conduit_common::{
    flow::{FLOW_NEW, FlowVal, next_state, state_key},
    verdict::{Decision, Packet},
};

use crate::maps::CDT_FLOWS;

#[inline(always)]
pub fn update(d: &Decision, p: &Packet, now: u64) {
    let Some(key) = state_key(d, p) else { return };
    if d.flow == FLOW_NEW {
        match next_state(d, p, &FlowVal::default(), now) {
            Some(v) => {
                let _ = CDT_FLOWS.insert(&key, &v, 0);
            }
            None => {
                let _ = CDT_FLOWS.remove(&key);
            }
        }
        return;
    }
    // A known flow: update it in place (no map update on the hot path).
    let Some(ptr) = CDT_FLOWS.get_ptr_mut(&key) else {
        return;
    };
    // SAFETY: the LRU element stays valid for this program run (RCU); a racing writer on
    // another CPU at worst leaves a slightly older timestamp.
    let old = unsafe { *ptr };
    match next_state(d, p, &old, now) {
        Some(v) => unsafe { *ptr = v },
        None => {
            let _ = CDT_FLOWS.remove(&key);
        }
    }
}
