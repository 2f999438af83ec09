//! Connection tracking: the flow table's key and value, and the state machine that both the
//! kernel and the reference model apply. A flow is created when a conduit allows its first
//! packet; its replies then pass (reason `reply`) while the flow is alive and its conduit
//! exists in the live policy.
use crate::verdict::{Decision, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet};

/// The flow table, in two LRU hash maps: IPv4 flows under the compact [`FlowKey4`] (a
/// shorter key is a cheaper hash on every packet), IPv6 flows under [`FlowKey`]. The value is
/// [`FlowVal`] in both. (`_V2`: the value grew by the ingress interfaces; pins of an older
/// build, `CDT_FLOWS4`/`CDT_FLOWS6`, are never read with this layout.)
pub const MAP_FLOWS4: &str = "CDT_FLOWS4_V2";
pub const MAX_FLOWS4: u32 = 1 << 18;
pub const MAP_FLOWS6: &str = "CDT_FLOWS6_V2";
pub const MAX_FLOWS6: u32 = 1 << 16;

/// A flow in the direction of its first packet. Ports in host byte order; ICMP echo uses the
/// identifier for both ports, so the reply's swapped key is the request's key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    pub family: u8,
    pub proto: u8,
    pub _pad: [u8; 2],
    pub sport: u16,
    pub dport: u16,
    /// Network order, IPv4 in the first 4 bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

/// An IPv4 [`FlowKey`]: the same fields with 4-byte addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey4 {
    pub proto: u8,
    pub _pad: u8,
    pub sport: u16,
    pub dport: u16,
    pub _pad2: u16,
    pub src: [u8; 4],
    pub dst: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<FlowKey4>() == 16);

impl FlowKey {
    /// The compact form of an IPv4 key (meaningful when `family` is `FAMILY_V4`).
    #[inline(always)]
    pub fn v4(&self) -> FlowKey4 {
        FlowKey4 {
            proto: self.proto,
            _pad: 0,
            sport: self.sport,
            dport: self.dport,
            _pad2: 0,
            src: [self.src[0], self.src[1], self.src[2], self.src[3]],
            dst: [self.dst[0], self.dst[1], self.dst[2], self.dst[3]],
        }
    }
}

/// A flow's state, and the verdict its packets got under the live policy (the fast path of
/// [`crate::verdict::fast_path`]): valid only while the policy generation is `generation`
/// and the packet comes from the MAC address and in by the interface the verdict was given
/// for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowVal {
    /// The conduit that allowed the flow's first packet.
    pub conduit: u32,
    /// `FLOW_*` state bits.
    pub state: u32,
    /// CLOCK_MONOTONIC (coarse, `bpf_ktime_get_coarse_ns`) of the last packet.
    pub last_seen: u64,
    /// The policy generation (`Active::generation`) of the cached verdicts below.
    pub generation: u64,
    /// The initiator's and the responder's zones under that generation.
    pub src_zone: u32,
    pub dst_zone: u32,
    /// The inspection filter of the rule that matches the initiator's packets under that
    /// generation (`ConduitHit::modbus`), 0 for none.
    pub filter: u32,
    /// [`CACHE_FWD`] | [`CACHE_REV`]: which directions have a cached verdict.
    pub cached: u8,
    /// With [`FLOW_LEARN_MODBUS`]: the unit ID and function code of the last Modbus/TCP request
    /// learned from this flow (`crate::learn`): a repeated request is not recorded again.
    pub learned: [u8; 2],
    pub _pad: u8,
    /// The source MAC address each direction's cached verdict was given for.
    pub mac_fwd: [u8; 6],
    pub mac_rev: [u8; 6],
    /// The ingress interface (ifindex) each direction's cached verdict was given for: the
    /// interface checks (reverse path, zones' `interfaces`) hold only there.
    pub if_fwd: u32,
    pub if_rev: u32,
    /// The end of the flow's conduit (`Decision::expires`: CLOCK_MONOTONIC in units of 2^28
    /// ns; 0: none), so that the fast path ends the flow on time. (Padding in older builds.)
    pub expires: u32,
}
const _: () = assert!(core::mem::size_of::<FlowVal>() == 64);

/// [`FlowVal::cached`]: the initiator's packets have a verdict under `generation`.
pub const CACHE_FWD: u8 = 1;
/// [`FlowVal::cached`]: the replies have a verdict under `generation`.
pub const CACHE_REV: u8 = 2;

/// The initiator sent a FIN.
pub const FLOW_FIN_FWD: u32 = 1;
/// The responder sent a FIN.
pub const FLOW_FIN_REV: u32 = 2;
/// The responder has answered.
pub const FLOW_REPLIED: u32 = 4;
/// A flow that no conduit allows, let through by a monitor-mode zone (would-deny); its
/// replies pass while the zone stays in monitor mode.
pub const FLOW_MONITOR: u32 = 8;
/// Set by a learning datapath only (`crate::learn`; never read by a verdict): the flow goes
/// to the Modbus/TCP port and its requests are learned ([`FlowVal::learned`]).
pub const FLOW_LEARN_MODBUS: u32 = 16;
/// Set by a learning datapath only: the flow's answer has been learned.
pub const FLOW_LEARN_ANSWERED: u32 = 32;
/// The learning state a monitor-mode flow keeps when its initiator's next packet opens it
/// again (a would-deny packet always opens its flow anew, [`FLOW_NEW`]).
pub const FLOW_LEARN_STATE: u32 = FLOW_LEARN_MODBUS | FLOW_LEARN_ANSWERED;

const SEC: u64 = 1_000_000_000;
/// Idle timeouts. OT sessions (Modbus polling, S7, EtherNet/IP) stay open for days, so an
/// established TCP flow lives an hour without a packet.
pub const TIMEOUT_TCP: u64 = 3600 * SEC;
/// A TCP flow with FINs from both sides (one never answered has [`TIMEOUT_TCP_SYN`]).
pub const TIMEOUT_TCP_CLOSING: u64 = 10 * SEC;
pub const TIMEOUT_TCP_SYN: u64 = 30 * SEC;
pub const TIMEOUT_UDP: u64 = 60 * SEC;
pub const TIMEOUT_ICMP: u64 = 30 * SEC;
pub const TIMEOUT_OTHER: u64 = 60 * SEC;

/// How a packet relates to the flow table ([`Decision::flow`]).
pub const FLOW_NONE: u8 = 0;
/// A conduit allowed the first packet of a flow: insert it.
pub const FLOW_NEW: u8 = 1;
/// A packet of a known flow, from the initiator.
pub const FLOW_FWD: u8 = 2;
/// A reply of a known flow.
pub const FLOW_REV: u8 = 3;

/// Whether packets like this one are tracked (and so can have replies). ICMP other than echo
/// is judged packet by packet.
#[inline(always)]
pub fn tracked(p: &Packet) -> bool {
    match p.proto {
        PROTO_ICMP => matches!((p.dport >> 8) as u8, 0 | 8),
        PROTO_ICMPV6 => matches!((p.dport >> 8) as u8, 128 | 129),
        _ => true,
    }
}

/// Whether the packet may be a reply: not a TCP SYN without ACK, not an ICMP echo request. A
/// reply never opens anything.
#[inline(always)]
pub fn reply_shaped(p: &Packet) -> bool {
    match p.proto {
        PROTO_TCP => {
            p.tcp_flags & (crate::parse::TCP_SYN | crate::parse::TCP_ACK) != crate::parse::TCP_SYN
        }
        PROTO_ICMP => (p.dport >> 8) as u8 == 0,
        PROTO_ICMPV6 => (p.dport >> 8) as u8 == 129,
        _ => true,
    }
}

/// The port (ICMP: type << 8) by which the policy allowed the flow of `p`, a packet sent
/// by the flow's initiator (`reverse == false`) or by its responder: the destination port
/// of a TCP or UDP flow (the packet's own, or the source port of a reply), the echo
/// request's type for an echo flow (whichever echo message `p` is: the flow's direction
/// decides, as it does for the fast path's cached verdicts), 0 for other protocols.
#[inline(always)]
pub fn flow_port(p: &Packet, reverse: bool) -> u16 {
    match p.proto {
        PROTO_TCP | PROTO_UDP if reverse => p.sport,
        PROTO_TCP | PROTO_UDP => p.dport,
        PROTO_ICMP => 8 << 8,
        PROTO_ICMPV6 => 128 << 8,
        _ => 0,
    }
}

/// The packet's flow key, as sent (`reverse == false`) or as its reply would be.
#[inline(always)]
pub fn flow_key(p: &Packet, reverse: bool) -> FlowKey {
    let (sport, dport) = match p.proto {
        PROTO_TCP | PROTO_UDP => (p.sport, p.dport),
        PROTO_ICMP | PROTO_ICMPV6 => (p.sport, p.sport),
        _ => (0, 0),
    };
    if reverse {
        FlowKey {
            family: p.family,
            proto: p.proto,
            _pad: [0; 2],
            sport: dport,
            dport: sport,
            src: p.dst,
            dst: p.src,
        }
    } else {
        FlowKey {
            family: p.family,
            proto: p.proto,
            _pad: [0; 2],
            sport,
            dport,
            src: p.src,
            dst: p.dst,
        }
    }
}

/// The idle timeout of a flow in its state.
#[inline(always)]
pub fn timeout(proto: u8, state: u32) -> u64 {
    match proto {
        PROTO_TCP => {
            if state & (FLOW_FIN_FWD | FLOW_FIN_REV) == FLOW_FIN_FWD | FLOW_FIN_REV {
                TIMEOUT_TCP_CLOSING
            } else if state & FLOW_REPLIED == 0 {
                TIMEOUT_TCP_SYN
            } else {
                TIMEOUT_TCP
            }
        }
        PROTO_UDP => TIMEOUT_UDP,
        PROTO_ICMP | PROTO_ICMPV6 => TIMEOUT_ICMP,
        _ => TIMEOUT_OTHER,
    }
}

/// Whether a flow last seen at `v.last_seen` is still alive at `now`.
#[inline(always)]
pub fn alive(v: &FlowVal, proto: u8, now: u64) -> bool {
    now.saturating_sub(v.last_seen) < timeout(proto, v.state)
}

/// What to store after a packet of a flow: the new value, or `None` to remove the flow (a
/// TCP reset). `old` is the flow the packet's key has (for [`FLOW_NEW`], what the table holds
/// under that key, or the default when it holds nothing). An allowed packet of a tracked flow
/// leaves its verdict for the fast path, under the policy `generation` that gave it.
///
/// A would-deny packet always opens its flow anew ([`FLOW_NEW`]), but of a live monitor-mode
/// flow it continues the conversation: whether it was answered, its FINs and what was learned
/// of it stay (else an answered session would get the timeout of an unanswered one at every
/// client packet, and its server's packets would be dropped after 30 s of silence). A SYN
/// from the initiator of a flow that both sides closed (FINs) starts a new connection on the
/// same ports (a client that binds a fixed port): not answered, not closed.
#[inline(always)]
pub fn next_state(
    d: &Decision,
    p: &Packet,
    old: &FlowVal,
    now: u64,
    generation: u64,
) -> Option<FlowVal> {
    if p.proto == PROTO_TCP && p.tcp_flags & crate::parse::TCP_RST != 0 {
        return None;
    }
    let mut v = match d.flow {
        FLOW_NEW
            if d.verdict == crate::Verdict::WouldDeny
                && old.state & FLOW_MONITOR != 0
                && alive(old, p.proto, now) =>
        {
            FlowVal {
                conduit: d.conduit,
                state: old.state,
                learned: old.learned,
                ..FlowVal::default()
            }
        }
        FLOW_NEW => FlowVal {
            conduit: d.conduit,
            state: if d.verdict == crate::Verdict::WouldDeny {
                FLOW_MONITOR
            } else {
                0
            },
            ..FlowVal::default()
        },
        _ => *old,
    };
    if d.verdict == crate::Verdict::Allow && v.state & FLOW_MONITOR == 0 {
        remember(&mut v, d, p, generation);
    }
    v.last_seen = now;
    let fin = p.proto == PROTO_TCP && p.tcp_flags & crate::parse::TCP_FIN != 0;
    if d.flow == FLOW_REV {
        v.state |= FLOW_REPLIED;
        if fin {
            v.state |= FLOW_FIN_REV;
        }
    } else {
        let closed = FLOW_FIN_FWD | FLOW_FIN_REV;
        if p.proto == PROTO_TCP
            && p.tcp_flags & (crate::parse::TCP_SYN | crate::parse::TCP_ACK)
                == crate::parse::TCP_SYN
            && v.state & closed == closed
        {
            v.state &= !(closed | FLOW_REPLIED);
        }
        if fin {
            v.state |= FLOW_FIN_FWD;
        }
    }
    Some(v)
}

/// Caches an allowed packet's verdict in its flow for the packets that follow in the same
/// direction, from the same MAC address and interface, under the same policy generation.
#[inline(always)]
fn remember(v: &mut FlowVal, d: &Decision, p: &Packet, generation: u64) {
    if v.generation != generation {
        v.generation = generation;
        v.cached = 0;
    }
    v.expires = d.expires;
    if d.flow == FLOW_REV {
        v.cached |= CACHE_REV;
        v.mac_rev = p.src_mac;
        v.if_rev = p.ifindex;
        v.src_zone = d.dst_zone;
        v.dst_zone = d.src_zone;
    } else {
        v.cached |= CACHE_FWD;
        v.mac_fwd = p.src_mac;
        v.if_fwd = p.ifindex;
        v.src_zone = d.src_zone;
        v.dst_zone = d.dst_zone;
        v.filter = u32::from(d.filter);
    }
}

/// The key under which a decision's flow state is stored, if it has any: the packet's own
/// key for new flows and the initiator's packets, the swapped key for replies.
#[inline(always)]
pub fn state_key(d: &Decision, p: &Packet) -> Option<FlowKey> {
    match d.flow {
        FLOW_NEW | FLOW_FWD => Some(flow_key(p, false)),
        FLOW_REV => Some(flow_key(p, true)),
        _ => None,
    }
}
