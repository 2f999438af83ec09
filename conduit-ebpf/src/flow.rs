//! Connection tracking writes: the state machine is `conduit_common::flow`.
use conduit_common::{
    flow::{FLOW_NEW, FlowVal, next_state, state_key},
    verdict::{Decision, Packet},
};

use crate::maps::CDT_FLOWS;

#[inline(always)]
pub fn update(d: &Decision, p: &Packet, now: u64) {
    let Some(key) = state_key(d, p) else { return };
    let old = if d.flow == FLOW_NEW {
        FlowVal::default()
    } else {
        // SAFETY: copied out at once.
        match unsafe { CDT_FLOWS.get(&key) } {
            Some(v) => *v,
            None => return,
        }
    };
    match next_state(d, p, &old, now) {
        Some(v) => {
            let _ = CDT_FLOWS.insert(&key, &v, 0);
        }
        None => {
            let _ = CDT_FLOWS.remove(&key);
        }
    }
}
