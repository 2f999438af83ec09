//! Learning for `conduit discover` (`conduit run --learn-dir DIR`, SPEC §5): what the datapath
//! records of the flows it judges, and the layouts of the two maps it records them in.
//!
//! The datapath records an event only where it already does work for the frame: a flow it
//! creates ([`LEARN_NEW`]), the first reply of a flow ([`LEARN_ANSWERED`]), a frame it denies
//! without a flow ([`LEARN_DENIED`]), and a Modbus/TCP request whose unit and function differ
//! from the last one learned for its flow (kept in [`FlowVal::learned`]). Packets of
//! established flows take the fast path, which learns nothing but that last case, so learning
//! costs them nothing. The whole recording sits behind the read-only global [`GLOBAL_LEARN`]:
//! loaded without it, the verifier removes the code.
//!
//! The maps are plain hash maps, not LRU: a record never vanishes to make room. What does not
//! fit is counted in [`MAP_LEARN_STATS`], and the agent drains the maps into its learn dir.
//!
//! [`FlowVal::learned`]: crate::flow::FlowVal::learned
use crate::{
    Reason, Verdict,
    flow::{FLOW_NEW, FLOW_NONE, FLOW_REV, flow_port},
    verdict::{Decision, KIND_IP, Packet},
};

/// Set to 1 at load time (read-only data) by `conduit run --learn-dir`.
pub const GLOBAL_LEARN: &str = "CONDUIT_LEARN";

/// Hash map [`LearnKey`] → [`LearnVal`]: one record per (client, server, protocol, port).
pub const MAP_LEARN: &str = "CDT_LEARN";
/// Records the kernel holds between two drains (the agent drains every `--learn-interval`).
pub const MAX_LEARN: u32 = 1 << 16;
/// Hash map [`LearnModbusKey`] → [`LearnModbusVal`]: Modbus/TCP requests per (client,
/// server, unit).
pub const MAP_LEARN_MODBUS: &str = "CDT_LEARN_MB";
pub const MAX_LEARN_MODBUS: u32 = 1 << 13;
/// Per-CPU array of one [`LearnNote`]: the datapath's hand-over to its learning code (never
/// read from userspace, not pinned).
pub const MAP_LEARN_NOTE: &str = "CDT_LEARNNOTE";
/// Per-CPU array of `u64`: [`LEARNSTAT_DROPPED`], [`LEARNSTAT_MODBUS_DROPPED`].
pub const MAP_LEARN_STATS: &str = "CDT_LEARNSTATS";
/// Flow records that did not fit in [`MAP_LEARN`] (it was full).
pub const LEARNSTAT_DROPPED: u32 = 0;
/// Modbus records that did not fit in [`MAP_LEARN_MODBUS`].
pub const LEARNSTAT_MODBUS_DROPPED: u32 = 1;
pub const LEARNSTATS_LEN: u32 = 2;

/// A flow as discover sees it: who opened it, to whom, what. Addresses in network order,
/// IPv4 in the first 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LearnKey {
    pub family: u8,
    pub proto: u8,
    /// TCP/UDP: the server's port. ICMP/ICMPv6 echo: the request's type << 8 (as
    /// [`flow_port`]). Other protocols: 0. Host order.
    pub port: u16,
    pub client: [u8; 16],
    pub server: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<LearnKey>() == 36);

/// What was seen of a [`LearnKey`] since the agent last drained it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LearnVal {
    /// CLOCK_MONOTONIC (coarse) of the first and the latest event.
    pub first_seen: u64,
    pub last_seen: u64,
    /// Flows opened (allowed, or let through by monitor mode).
    pub flows: u32,
    /// Flows whose server answered.
    pub answered: u32,
    /// Frames denied without a flow (a scan, traffic no conduit allows in enforce mode).
    pub denied: u32,
    /// The verdict and reason of the latest flow opened or frame denied (`Verdict`,
    /// `Reason` as numbers).
    pub verdict: u8,
    pub reason: u8,
    /// [`LEARN_MAC_VARIES`] | [`LEARN_SERVER_MAC_VARIES`].
    pub flags: u8,
    pub _pad: u8,
    /// The source MAC of the client's first frame, and of the server's first answer (zero
    /// until seen).
    pub client_mac: [u8; 6],
    pub server_mac: [u8; 6],
    pub _pad2: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<LearnVal>() == 48);

/// [`LearnVal::flags`]: the client's frames came from more than one MAC address.
pub const LEARN_MAC_VARIES: u8 = 1;
/// [`LearnVal::flags`]: the server's answers came from more than one MAC address.
pub const LEARN_SERVER_MAC_VARIES: u8 = 2;

/// Keeps the first MAC seen in `slot`; a different one later sets `varies` in `flags`.
#[inline(always)]
pub fn note_mac(slot: &mut [u8; 6], flags: &mut u8, varies: u8, mac: [u8; 6]) {
    if *slot == [0; 6] {
        *slot = mac;
    } else if *slot != mac {
        *flags |= varies;
    }
}

/// The Modbus/TCP requests of one client to one unit of a server.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LearnModbusKey {
    pub family: u8,
    pub unit: u8,
    pub _pad: [u8; 2],
    pub client: [u8; 16],
    pub server: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<LearnModbusKey>() == 36);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LearnModbusVal {
    /// Function codes seen: bit `f % 64` of word `f / 64`, for `f` below 128.
    pub functions: [u64; 2],
    pub first_seen: u64,
    pub last_seen: u64,
}
const _: () = assert!(core::mem::size_of::<LearnModbusVal>() == 32);

/// What a decision teaches, if anything (see the module's text).
pub const LEARN_NONE: u8 = 0;
/// A flow was opened: allowed by a conduit, or let through by a monitor-mode zone.
pub const LEARN_NEW: u8 = 1;
/// The first reply of a flow.
pub const LEARN_ANSWERED: u8 = 2;
/// An IP frame denied (or, in monitor mode, would-denied) without a flow to record it in.
pub const LEARN_DENIED: u8 = 3;

/// What the learning code is told of a frame's decision (the datapath hands it over through
/// a per-CPU map: see `conduit-ebpf`'s `program::record`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LearnNote {
    /// `Verdict` and `Reason` as numbers, the decision's `flow` relation.
    pub verdict: u8,
    pub reason: u8,
    pub flow: u8,
    /// `FIRST_REPLY` | `MODBUS` | `RENEWED` of the datapath's flow update.
    pub found: u8,
}
const _: () = assert!(core::mem::size_of::<LearnNote>() == 4);

impl LearnNote {
    pub fn of(d: &Decision, found: u8) -> Self {
        Self {
            verdict: d.verdict as u8,
            reason: d.reason as u8,
            flow: d.flow,
            found,
        }
    }
}

/// The event of a decision. `first_reply`: the decision is a reply ([`FLOW_REV`]) of a flow
/// that had none yet.
#[inline(always)]
pub fn event(n: &LearnNote, p: &Packet, first_reply: bool) -> u8 {
    match n.flow {
        FLOW_NEW => LEARN_NEW,
        FLOW_REV if first_reply => LEARN_ANSWERED,
        FLOW_NONE
            if p.kind == KIND_IP
                && p.fragment == 0
                && p.icmp_error == 0
                && n.verdict != Verdict::Allow as u8
                && n.reason != Reason::Reply as u8 =>
        {
            LEARN_DENIED
        }
        _ => LEARN_NONE,
    }
}

/// The record of a packet: sent by the client (`reverse == false`) or by the server.
#[inline(always)]
pub fn key(p: &Packet, reverse: bool) -> LearnKey {
    let (client, server) = if reverse {
        (p.dst, p.src)
    } else {
        (p.src, p.dst)
    };
    LearnKey {
        family: p.family,
        proto: p.proto,
        port: flow_port(p, reverse),
        client,
        server,
    }
}

/// The Modbus record of a client's request to `unit`.
#[inline(always)]
pub fn modbus_key(p: &Packet, unit: u8) -> LearnModbusKey {
    LearnModbusKey {
        family: p.family,
        unit,
        _pad: [0; 2],
        client: p.src,
        server: p.dst,
    }
}

/// Whether `functions` holds function code `f`.
#[inline(always)]
pub fn has_function(functions: &[u64; 2], f: u8) -> bool {
    f < 128 && functions[usize::from(f >> 6)] & (1 << (f & 63)) != 0
}

#[cfg(feature = "user")]
crate::pod!(LearnKey, LearnVal, LearnModbusKey, LearnModbusVal);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{flow::FLOW_FWD, verdict::PROTO_TCP};

    fn decision(verdict: Verdict, reason: Reason, flow: u8) -> Decision {
        Decision {
            verdict,
            reason,
            conduit: 0,
            src_zone: 0,
            dst_zone: 0,
            log: false,
            flow,
            filter: 0,
            expires: 0,
        }
    }

    #[test]
    fn events() {
        let p = Packet {
            kind: KIND_IP,
            proto: PROTO_TCP,
            ..Packet::default()
        };
        let e = |v, r, f, first| event(&LearnNote::of(&decision(v, r, f), 0), &p, first);
        assert_eq!(
            e(Verdict::Allow, Reason::Conduit, FLOW_NEW, false),
            LEARN_NEW
        );
        assert_eq!(
            e(Verdict::WouldDeny, Reason::NoConduit, FLOW_NEW, false),
            LEARN_NEW
        );
        assert_eq!(
            e(Verdict::Allow, Reason::Reply, FLOW_REV, true),
            LEARN_ANSWERED
        );
        assert_eq!(
            e(Verdict::Allow, Reason::Reply, FLOW_REV, false),
            LEARN_NONE
        );
        assert_eq!(
            e(Verdict::Allow, Reason::Conduit, FLOW_FWD, false),
            LEARN_NONE
        );
        assert_eq!(
            e(Verdict::Deny, Reason::NoConduit, FLOW_NONE, false),
            LEARN_DENIED
        );
        assert_eq!(
            e(Verdict::Allow, Reason::IntraZone, FLOW_NONE, false),
            LEARN_NONE
        );
        // A stray reply (no flow for it) is not a client's attempt.
        assert_eq!(
            e(Verdict::Deny, Reason::Reply, FLOW_NONE, false),
            LEARN_NONE
        );
        let frag = Packet { fragment: 1, ..p };
        assert_eq!(
            event(
                &LearnNote::of(&decision(Verdict::Deny, Reason::Fragment, FLOW_NONE), 0),
                &frag,
                false
            ),
            LEARN_NONE
        );
    }

    #[test]
    fn keys_put_the_client_first() {
        let p = Packet {
            kind: KIND_IP,
            proto: PROTO_TCP,
            src: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            sport: 40000,
            dport: 502,
            ..Packet::default()
        };
        let fwd = key(&p, false);
        assert_eq!((fwd.client[3], fwd.server[3], fwd.port), (1, 2, 502));
        let reply = Packet {
            src: p.dst,
            dst: p.src,
            sport: 502,
            dport: 40000,
            ..p
        };
        assert_eq!(key(&reply, true), fwd);
        let mut f = [0u64; 2];
        f[1] |= 1 << (90 - 64);
        assert!(has_function(&f, 90) && !has_function(&f, 26) && !has_function(&f, 200));
    }
}
