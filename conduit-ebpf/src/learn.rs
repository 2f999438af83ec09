//! Learning (`conduit run --learn-dir`): the records of `conduit_common::learn`, written when
//! the program runs with the read-only global `CONDUIT_LEARN` set. The maps are plain hash
//! maps: a record is never evicted, a record that does not fit is counted.
use aya_ebpf::bindings::BPF_NOEXIST;
use conduit_common::{
    inspect::modbus,
    learn::{
        LEARN_ANSWERED, LEARN_DENIED, LEARN_MAC_VARIES, LEARN_NEW, LEARN_NONE,
        LEARN_SERVER_MAC_VARIES, LEARNSTAT_DROPPED, LEARNSTAT_MODBUS_DROPPED, LearnModbusVal,
        LearnNote, LearnVal, event, key, modbus_key, note_mac,
    },
    verdict::Packet,
};

use crate::maps::{CDT_LEARN, CDT_LEARN_MB, CDT_LEARNSTATS};

/// [`crate::flow::update`]'s findings for the learning code.
pub const FIRST_REPLY: u8 = 1;
/// The packet is a Modbus request to record (new for its flow).
pub const MODBUS: u8 = 2;
/// The decision opens a flow that is already open (monitor mode): not a new flow.
pub const RENEWED: u8 = 4;

/// `-EEXIST`: another CPU inserted the same record first (its event is not lost).
const EEXIST: i32 = -17;

#[inline(always)]
fn dropped(index: u32) {
    if let Some(c) = CDT_LEARNSTATS.get_ptr_mut(index) {
        // SAFETY: per-CPU array slot.
        unsafe { *c += 1 };
    }
}

/// Records what the decision noted in `n` teaches of `p` (`n.found`: [`FIRST_REPLY`] |
/// [`MODBUS`] | [`RENEWED`]).
#[inline(always)]
pub fn record(p: &Packet, n: &LearnNote, now: u64) {
    let ev = event(n, p, n.found & FIRST_REPLY != 0);
    if ev != LEARN_NONE && !(ev == LEARN_NEW && n.found & RENEWED != 0) {
        flow(p, n, ev, now);
    }
    if n.found & MODBUS != 0 {
        modbus_request(p, now);
    }
}

#[inline(always)]
fn flow(p: &Packet, d: &LearnNote, ev: u8, now: u64) {
    let answered = ev == LEARN_ANSWERED;
    let k = key(p, answered);
    if let Some(v) = CDT_LEARN.get_ptr_mut(&k) {
        // SAFETY: the element stays valid for this run (RCU; the map is not preallocated, so
        // a drained element is not reused under us). A racing CPU may lose a count: these
        // are evidence, not accounting.
        let v = unsafe { &mut *v };
        v.last_seen = now;
        if answered {
            v.answered += 1;
            note_mac(
                &mut v.server_mac,
                &mut v.flags,
                LEARN_SERVER_MAC_VARIES,
                p.src_mac,
            );
            return;
        }
        if ev == LEARN_NEW {
            v.flows += 1;
        } else {
            v.denied += 1;
        }
        v.verdict = d.verdict;
        v.reason = d.reason;
        note_mac(&mut v.client_mac, &mut v.flags, LEARN_MAC_VARIES, p.src_mac);
        return;
    }
    let v = LearnVal {
        first_seen: now,
        last_seen: now,
        flows: u32::from(ev == LEARN_NEW),
        answered: u32::from(answered),
        denied: u32::from(ev == LEARN_DENIED),
        verdict: d.verdict,
        reason: d.reason,
        flags: 0,
        _pad: 0,
        // A reply comes from the server: the client's MAC is not known here.
        client_mac: if answered { [0; 6] } else { p.src_mac },
        server_mac: if answered { p.src_mac } else { [0; 6] },
        _pad2: [0; 4],
    };
    if let Err(e) = CDT_LEARN.insert(&k, &v, u64::from(BPF_NOEXIST))
        && e != EEXIST
    {
        dropped(LEARNSTAT_DROPPED);
    }
}

#[inline(always)]
fn modbus_request(p: &Packet, now: u64) {
    let Some((unit, f)) = modbus::request(p) else {
        return;
    };
    let bit = 1u64 << (f & 63);
    let high = f >= 64;
    let k = modbus_key(p, unit);
    if let Some(v) = CDT_LEARN_MB.get_ptr_mut(&k) {
        // SAFETY: as in `flow`.
        let v = unsafe { &mut *v };
        if high {
            v.functions[1] |= bit;
        } else {
            v.functions[0] |= bit;
        }
        v.last_seen = now;
        return;
    }
    let v = LearnModbusVal {
        functions: if high { [0, bit] } else { [bit, 0] },
        first_seen: now,
        last_seen: now,
    };
    if let Err(e) = CDT_LEARN_MB.insert(&k, &v, u64::from(BPF_NOEXIST))
        && e != EEXIST
    {
        dropped(LEARNSTAT_MODBUS_DROPPED);
    }
}
