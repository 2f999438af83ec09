//! Audit events into the ring buffer, at most one per flow and outcome (verdict, reason) per
//! window, so a denied request inside a logged, allowed session still gets its line; what is
//! held back is
//! counted (and reported with the flow's next event), what the ring buffer cannot take is
//! counted too. Never silently lost.
use conduit_common::{
    EVENT_WINDOW_NS, EVSTAT_FLOOD, EVSTAT_LOST, EVSTAT_SUPPRESSED, Event, EventRate,
    flow::{FlowKey, flow_key},
    inspect,
    verdict::{Decision, Packet},
};

use crate::maps::{CDT_EVBUDGET, CDT_EVENTS, CDT_EVRATE, CDT_EVSTATS};

#[inline(always)]
fn bump(index: u32) {
    if let Some(c) = CDT_EVSTATS.get_ptr_mut(index) {
        // SAFETY: per-CPU array slot.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
pub fn emit(d: &Decision, p: Option<&Packet>, ifindex: u32, now: u64) {
    // This CPU's budget first: a flood is shed here, before it churns the rate limit's LRU.
    match CDT_EVBUDGET.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, used only while the program runs on it.
        Some(b) if unsafe { (*b).take(now) } => {}
        _ => {
            bump(EVSTAT_FLOOD);
            return;
        }
    }
    let mut key = match p {
        Some(p) => flow_key(p, false),
        None => FlowKey::default(),
    };
    // The key's padding carries the outcome: one window per (flow, verdict, reason).
    key._pad = [d.verdict as u8, d.reason as u8];
    let mut suppressed = 0;
    match CDT_EVRATE.get_ptr_mut(&key) {
        Some(r) => {
            // SAFETY: the LRU entry stays valid for this program run (RCU).
            let r = unsafe { &mut *r };
            if now.saturating_sub(r.last_ns) < EVENT_WINDOW_NS {
                r.suppressed = r.suppressed.saturating_add(1);
                bump(EVSTAT_SUPPRESSED);
                return;
            }
            suppressed = r.suppressed;
            r.last_ns = now;
            r.suppressed = 0;
        }
        None => {
            let _ = CDT_EVRATE.insert(
                &key,
                &EventRate {
                    last_ns: now,
                    suppressed: 0,
                    _pad: 0,
                },
                0,
            );
        }
    }
    let mut ev = Event {
        ts_ns: now,
        verdict: d.verdict as u32,
        reason: d.reason as u32,
        conduit: d.conduit,
        src_zone: d.src_zone,
        dst_zone: d.dst_zone,
        ifindex,
        suppressed,
        ..Event::default()
    };
    if let Some(p) = p {
        ev.family = p.family;
        ev.proto = p.proto;
        ev.arp = u8::from(p.kind == conduit_common::verdict::KIND_ARP);
        ev.sport = p.sport;
        ev.dport = p.dport;
        ev.src = p.src;
        ev.dst = p.dst;
        if let Some((protocol, function, address)) = inspect::request(d.reason, p) {
            ev.protocol = protocol;
            ev.function = function;
            ev.address = address;
        }
    }
    if CDT_EVENTS.output(&ev, 0).is_err() {
        bump(EVSTAT_LOST);
    }
}
