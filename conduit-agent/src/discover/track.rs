//! Connection tracking over decoded packets (a capture, in file order): which side opened
//! each connection, whether it was answered, and what Modbus requests it carried. Memory grows
//! with the connections open at one time, not with the capture: a connection idle for longer
//! than the datapath would keep it (in capture time) is folded into the observations and
//! forgotten.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use conduit_common::{
    parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    verdict::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet},
};

use super::observe::{FlowKey, FlowObservation, FlowStats, Observations, Ts};

const SEC: u64 = 1_000_000_000;
/// Idle time after which an established TCP connection is forgotten (capture time); a later
/// packet of it opens a `midstream` connection. Shorter than the datapath's hour: discover
/// only needs to know who opened it.
const IDLE_TCP: u64 = 600 * SEC;
/// The datapath's own timeouts for the rest (`conduit_common::flow`): a closed TCP
/// connection (FIN or RST), a handshake that never completed, UDP, ICMP, other protocols.
const IDLE_CLOSED: u64 = conduit_common::flow::TIMEOUT_TCP_CLOSING;
const IDLE_SYN: u64 = conduit_common::flow::TIMEOUT_TCP_SYN;
const IDLE_UDP: u64 = conduit_common::flow::TIMEOUT_UDP;
const IDLE_ICMP: u64 = conduit_common::flow::TIMEOUT_ICMP;
const IDLE_OTHER: u64 = conduit_common::flow::TIMEOUT_OTHER;
/// How often (capture time) idle connections are swept.
const SWEEP_EVERY: u64 = 30 * SEC;
/// The registered Modbus/TCP port.
pub const MODBUS_PORT: u16 = conduit_common::inspect::modbus::PORT;

type End = (IpAddr, u16);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ConnKey {
    lo: End,
    hi: End,
    proto: u8,
}

impl ConnKey {
    fn of(a: End, b: End, proto: u8) -> Self {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        Self { lo, hi, proto }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TcpState {
    /// The client's SYN seen.
    Syn,
    /// The server's SYN-ACK seen (the client's SYN maybe before the capture).
    SynAck,
    /// Handshake complete.
    Established,
    /// Already open when the capture began: no handshake seen.
    Midstream {
        from_client: bool,
        from_server: bool,
    },
}

struct Conn {
    client: End,
    key: FlowKey,
    tcp: TcpState,
    answered: bool,
    closed: bool,
    stats: FlowStats,
}

/// Connection tracker; feed it packets in capture order, then [`Tracker::finish`].
#[derive(Default)]
pub struct Tracker {
    conns: HashMap<ConnKey, Conn>,
    last_sweep: Ts,
}

fn addr(family: u8, a: &[u8; 16]) -> IpAddr {
    if family == conduit_common::FAMILY_V6 {
        IpAddr::from(*a)
    } else {
        IpAddr::from([a[0], a[1], a[2], a[3]])
    }
}

/// ICMP echo request/reply types of a family.
fn echo(v6: bool) -> (u8, u8) {
    if v6 { (128, 129) } else { (8, 0) }
}

impl Tracker {
    /// One IP packet (`p.kind == KIND_IP`) of `wire_len` bytes at `ts`.
    pub fn packet(&mut self, p: &Packet, ts: Ts, wire_len: u64, obs: &mut Observations) {
        if ts >= self.last_sweep.saturating_add(SWEEP_EVERY) {
            self.sweep(ts, obs);
        }
        if p.fragment != 0 || p.icmp_error != 0 {
            // No transport header, or about another flow: not a flow of its own.
            return;
        }
        let v6 = p.family == conduit_common::FAMILY_V6;
        let (s, d) = (addr(p.family, &p.src), addr(p.family, &p.dst));
        let (proto, sport, dport) = match p.proto {
            PROTO_TCP | PROTO_UDP => (p.proto, p.sport, p.dport),
            PROTO_ICMP | PROTO_ICMPV6 => {
                let ty = (p.dport >> 8) as u8;
                // Neighbour discovery, router and multicast listener messages: link-local
                // plumbing that always passes (130..=143 ICMPv6).
                if v6 && (130..=143).contains(&ty) {
                    return;
                }
                let (req, rep) = echo(v6);
                if ty == req || ty == rep {
                    // Identifier on both ends: request and reply share the connection.
                    (p.proto, p.sport, p.sport)
                } else {
                    (p.proto, u16::from(ty), u16::from(ty))
                }
            }
            other => (other, 0, 0),
        };
        let key = ConnKey::of((s, sport), (d, dport), proto);
        let flags = p.tcp_flags;
        let syn_only = proto == PROTO_TCP && flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        // A new SYN on a closed connection's ports: a new connection.
        if syn_only
            && let Some(c) = self.conns.get(&key)
            && (c.closed || c.client != (s, sport))
        {
            let c = self.conns.remove(&key).expect("just found");
            Self::fold(c, obs);
        }
        let c = match self.conns.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let Some(c) = Self::open(p, proto, (s, sport), (d, dport), v6) else {
                    return;
                };
                e.insert(c)
            }
        };
        let from_client = c.client == (s, sport);
        c.stats.packets += 1;
        c.stats.bytes += wire_len;
        if c.stats.first == 0 {
            c.stats.first = ts;
        }
        c.stats.last = c.stats.last.max(ts);
        match proto {
            PROTO_TCP => {
                if flags & (TCP_FIN | TCP_RST) != 0 {
                    c.closed = true;
                }
                let rst = flags & TCP_RST != 0;
                c.tcp = match (c.tcp, from_client) {
                    (TcpState::Syn, false) if flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK => {
                        TcpState::SynAck
                    }
                    (TcpState::SynAck, true)
                        if flags & TCP_ACK != 0 && !rst && flags & TCP_SYN == 0 =>
                    {
                        c.answered = true;
                        TcpState::Established
                    }
                    (
                        TcpState::Midstream {
                            from_client: fc,
                            from_server: fs,
                        },
                        dir,
                    ) if flags & TCP_ACK != 0 && !rst => {
                        let m = TcpState::Midstream {
                            from_client: fc || dir,
                            from_server: fs || !dir,
                        };
                        if let TcpState::Midstream {
                            from_client: true,
                            from_server: true,
                        } = m
                            && !c.answered
                        {
                            c.answered = true;
                            c.stats.midstream = 1;
                        }
                        m
                    }
                    (state, _) => state,
                };
                if from_client && let Some((unit, f)) = conduit_common::inspect::modbus::request(p)
                {
                    c.stats.modbus.entry(unit).or_default().insert(f);
                }
            }
            PROTO_ICMP | PROTO_ICMPV6 => {
                // An echo is answered by its reply; any other request by anything back.
                let (req, rep) = echo(v6);
                if !from_client && ((p.dport >> 8) as u8 == rep || c.key.port != u16::from(req)) {
                    c.answered = true;
                }
            }
            _ => {
                if !from_client {
                    c.answered = true;
                }
            }
        }
    }

    /// A connection for a packet of no known connection, or `None` when the packet opens
    /// nothing (a reset, an echo reply to a request never seen).
    fn open(p: &Packet, proto: u8, src: End, dst: End, v6: bool) -> Option<Conn> {
        let (client, server, tcp) = match proto {
            PROTO_TCP => {
                let f = p.tcp_flags;
                if f & TCP_RST != 0 {
                    return None;
                }
                match f & (TCP_SYN | TCP_ACK) {
                    TCP_SYN => (src, dst, TcpState::Syn),
                    x if x == TCP_SYN | TCP_ACK => (dst, src, TcpState::SynAck),
                    _ => {
                        // Already open when the capture began: the server is the end with
                        // the lower port (the well-known one), the destination on a tie.
                        let (client, server) = if src.1 < dst.1 {
                            (dst, src)
                        } else {
                            (src, dst)
                        };
                        (
                            client,
                            server,
                            TcpState::Midstream {
                                from_client: false,
                                from_server: false,
                            },
                        )
                    }
                }
            }
            PROTO_ICMP | PROTO_ICMPV6 => {
                let ty = (p.dport >> 8) as u8;
                if ty == echo(v6).1 {
                    return None;
                }
                (src, dst, TcpState::Syn)
            }
            _ => (src, dst, TcpState::Syn),
        };
        let port = match proto {
            PROTO_TCP | PROTO_UDP => server.1,
            PROTO_ICMP | PROTO_ICMPV6 => u16::from((p.dport >> 8) as u8),
            _ => 0,
        };
        Some(Conn {
            client,
            key: FlowKey {
                client: client.0,
                server: server.0,
                proto,
                port,
            },
            tcp,
            answered: false,
            closed: false,
            stats: FlowStats {
                connections: 1,
                modbus: BTreeMap::new(),
                ..FlowStats::default()
            },
        })
    }

    fn fold(c: Conn, obs: &mut Observations) {
        let mut stats = c.stats;
        stats.answered = u64::from(c.answered);
        if !c.answered {
            stats.midstream = 0;
        }
        obs.flow(FlowObservation { key: c.key, stats });
    }

    /// Folds the connections idle at `now` into `obs`.
    fn sweep(&mut self, now: Ts, obs: &mut Observations) {
        self.last_sweep = now;
        let idle: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                let limit = match c.key.proto {
                    _ if c.closed => IDLE_CLOSED,
                    PROTO_TCP if c.answered => IDLE_TCP,
                    PROTO_TCP => IDLE_SYN.max(IDLE_CLOSED),
                    PROTO_UDP => IDLE_UDP,
                    PROTO_ICMP | PROTO_ICMPV6 => IDLE_ICMP,
                    _ => IDLE_OTHER,
                };
                c.stats.last.saturating_add(limit) < now
            })
            .map(|(k, _)| *k)
            .collect();
        // Fold in a fixed order: merging is commutative, but keep it plainly deterministic.
        let mut idle: BTreeSet<_> = idle.into_iter().map(|k| (k.lo, k.hi, k.proto)).collect();
        while let Some((lo, hi, proto)) = idle.pop_first() {
            if let Some(c) = self.conns.remove(&ConnKey { lo, hi, proto }) {
                Self::fold(c, obs);
            }
        }
    }

    /// Folds every connection still open into `obs`.
    pub fn finish(mut self, obs: &mut Observations) {
        self.sweep(u64::MAX, obs);
    }

    /// Connections tracked right now (for tests of the memory bound).
    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }
}
