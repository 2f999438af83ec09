//! An independent oracle for the flow state machine (`conduit_common::flow`, issue 20).
//!
//! `properties.rs` is `decide`'s oracle; the differential test runs the same `flow.rs` in the
//! kernel and in the reference, so it proves the kernel's glue, not the state machine. Here a
//! model of a flow's life, written from the contract's words (not from `flow.rs`), judges
//! random packet sequences between one client and one server, in both directions, with random
//! time steps that often land exactly on a flow's deadline (one nanosecond before, on it, one
//! after). The reference datapath (`Reference::judge`: the shared parser, `fast_path`,
//! `decide` and `next_state` over a userspace flow table, the code the kernel runs) must give
//! the model's verdict, reason and conduit for every frame, and afterwards hold exactly the
//! model's live flows, each in the model's state and with the model's deadline. The pure
//! functions (`tracked`, `reply_shaped`, `flow_key`, `state_key`, `timeout`, `alive`,
//! `next_state`) are checked against the same model on random inputs.
//!
//! Where the model comes from:
//! - SPEC §1 "Conduits": a conduit allows connections initiated from its `from` side; replies
//!   pass because the flow is tracked, while it is alive: "TCP until closed or idle; UDP and
//!   ICMP until idle"; a reply never allows the other side to open new flows.
//! - SPEC §1 "Modes" and the README ("Monitor mode and replies"): a flow that a monitor-mode
//!   zone lets through (would-deny) is tracked, and its replies pass too (would-deny, reason
//!   `reply`) while that zone stays in monitor mode, "so production traffic really flows
//!   untouched during observation".
//! - SPEC §8 and the README ("Conduits that end", "On-demand conduits"): a conduit that has
//!   ended, or an on-demand one without an open grant, allows nothing, new flows or established
//!   ones, in both directions (reasons `expired`, `not_granted`, the conduit named); in monitor
//!   mode its traffic is would-deny like anything no conduit allows.
//! - README "The datapath": an ICMP error quoting a packet of a live flow and going back to the
//!   flow's initiator passes as a `reply` of the flow; ICMP other than echo is judged packet by
//!   packet (no flow).
//! - Where SPEC and README are silent, what `flow.rs` and `verdict.rs` say in their doc
//!   comments (marked "(code's docs)" below): the idle timeouts (an hour for an established TCP
//!   flow, 30 s for one never answered, 10 s once both sides sent a FIN, 60 s UDP and other
//!   protocols, 30 s ICMP echo), that "closed" is a reset (at once) or FINs from both sides
//!   (then the closing timeout), that every packet refreshes its flow, that an ICMP echo flow is
//!   keyed by its identifier and a flow of another protocol has no ports, that any packet the
//!   conduit allows opens a flow (not only a SYN: an upgrade or an expired flow is re-created
//!   by the client's next packet, README changelog), and the lookup order (the packet's own
//!   flow first, then the flow it may reply to, then the conduits).
//!
//! Three disagreements this oracle found, all fixed in the datapath (`flow::next_state`,
//! `decide`'s ICMP errors); each has a regression test below that runs its minimal sequence
//! with the model held to the SPEC and shows that the model with the old rule ([`Rules`], one
//! switch per point) fails on it, so the sequence tells the two apart:
//! 1. [`Rules::syn_reopens_closed`]: a new TCP connection on the 4-tuple of one that closed
//!    (FINs both ways) less than 10 s before inherited the closed state, and so the closing
//!    timeout: idle 10 s, it was cut (the server's next packet dropped), where the SPEC keeps
//!    it open until closed or idle (an hour).
//! 2. [`Rules::monitor_keeps_state`]: in monitor mode every initiator packet re-opened its flow
//!    as never answered, so an answered TCP session got the 30 s timeout of an unanswered one
//!    after each client packet: a server packet 30 s after the client's last one was denied,
//!    in an enforce-mode client zone dropped: production traffic was not untouched during
//!    observation.
//! 3. [`Rules::monitor_errors_are_replies`]: an ICMP error about a packet of a monitor-mode
//!    flow (port unreachable, fragmentation needed) was not passed as its reply: judged on its
//!    own, it was dropped in an enforce-mode initiator zone (path MTU discovery of an observed
//!    flow broke).
//!
//! Not covered here: reloads (the reference holds one policy generation; `next_state`'s
//! handling of generations is checked on its own below), the learning bits, another source
//! MAC or ingress interface (the fast path's other conditions), LRU eviction, IPv6 extension
//! headers and fragments.
//!
//! 96 cases per property by default (`PROPTEST_CASES=N` for a longer hunt); pure userspace,
//! no root.
use std::collections::BTreeMap;

use conduit_agent::policy::{compile::compile, validate::validate_str};
use conduit_common::{
    FAMILY_V4, FAMILY_V6, NO_CONDUIT, Reason, Verdict,
    flow::{
        self, CACHE_FWD, CACHE_REV, FLOW_FIN_FWD, FLOW_FIN_REV, FLOW_FWD, FLOW_LEARN_STATE,
        FLOW_MONITOR, FLOW_NEW, FLOW_NONE, FLOW_REPLIED, FLOW_REV, FlowKey, FlowVal,
    },
    parse::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN},
    verdict::{Decision, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet},
};
use conduit_tests::frames::{self, L4, MAC_A, MAC_B};
use conduit_tests::reference::Reference;
use proptest::{collection::vec, prelude::*};

// ------------------------------------------------------------------------------------------
// The model's constants (code's docs: the SPEC names no number)
// ------------------------------------------------------------------------------------------

const SEC: u64 = 1_000_000_000;
/// An established TCP flow: "an established TCP flow lives an hour without a packet".
const IDLE_TCP: u64 = 3600 * SEC;
/// A TCP flow whose responder never answered. (`flow::TIMEOUT_TCP_CLOSING`'s doc says "A TCP
/// flow with FINs from both sides, or never answered", but the code and
/// `flow::TIMEOUT_TCP_SYN` give a never-answered flow 30 s: that doc is the odd one out.)
const IDLE_TCP_UNANSWERED: u64 = 30 * SEC;
/// A TCP flow after FINs from both sides.
const IDLE_TCP_CLOSING: u64 = 10 * SEC;
const IDLE_UDP: u64 = 60 * SEC;
const IDLE_ICMP_ECHO: u64 = 30 * SEC;
const IDLE_OTHER: u64 = 60 * SEC;
const IDLES: [u64; 5] = [
    IDLE_TCP,
    IDLE_TCP_UNANSWERED,
    IDLE_TCP_CLOSING,
    IDLE_UDP,
    IDLE_ICMP_ECHO,
];

// ------------------------------------------------------------------------------------------
// The model of one flow
// ------------------------------------------------------------------------------------------

/// What the model knows of a flow: its last packet and where the conversation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct Conversation {
    /// Opened by a would-deny packet (monitor mode), not by a conduit.
    monitor: bool,
    /// The responder has sent something back.
    answered: bool,
    /// TCP: the initiator, and the responder, sent a FIN.
    fin_init: bool,
    fin_resp: bool,
}

/// The protocol classes whose flows live differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Tcp,
    Udp,
    Echo,
    Other,
}

impl Class {
    fn of(proto: u8) -> Class {
        match proto {
            PROTO_TCP => Class::Tcp,
            PROTO_UDP => Class::Udp,
            PROTO_ICMP | PROTO_ICMPV6 => Class::Echo,
            _ => Class::Other,
        }
    }
}

/// How long a flow may stay without a packet: SPEC "TCP until closed or idle; UDP and ICMP
/// until idle", with the durations of the code's docs.
fn idle_limit(class: Class, c: &Conversation) -> u64 {
    match class {
        Class::Tcp if c.fin_init && c.fin_resp => IDLE_TCP_CLOSING,
        Class::Tcp if !c.answered => IDLE_TCP_UNANSWERED,
        Class::Tcp => IDLE_TCP,
        Class::Udp => IDLE_UDP,
        Class::Echo => IDLE_ICMP_ECHO,
        Class::Other => IDLE_OTHER,
    }
}

/// Which side sent a packet of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Initiator,
    Responder,
}

/// The three points where the datapath once departed from the SPEC (see the module's docs):
/// `true`, the SPEC's word (the datapath now); `false`, the old rule (regression tests only).
#[derive(Clone, Copy, Debug)]
struct Rules {
    /// A SYN (without ACK) from the initiator of a TCP flow closed by FINs from both sides
    /// starts a new connection, which has not been answered yet nor closed.
    syn_reopens_closed: bool,
    /// A would-deny packet of a live monitor-mode flow continues it (its state is kept) rather
    /// than opening it anew as never answered.
    monitor_keeps_state: bool,
    /// An ICMP error about a packet of a live monitor-mode flow is its reply (would-deny,
    /// reason `reply`) while the responder's zone is in monitor mode.
    monitor_errors_are_replies: bool,
}

const SPEC: Rules = Rules {
    syn_reopens_closed: true,
    monitor_keeps_state: true,
    monitor_errors_are_replies: true,
};

/// The conversation after a packet that continues it (not a reset: a reset ends it).
fn continued(mut c: Conversation, side: Side, tcp_flags: Option<u8>, rules: Rules) -> Conversation {
    let fin = tcp_flags.is_some_and(|f| f & TCP_FIN != 0);
    let syn_only = tcp_flags.is_some_and(|f| f & (TCP_SYN | TCP_ACK) == TCP_SYN);
    match side {
        Side::Initiator => {
            if rules.syn_reopens_closed && syn_only && c.fin_init && c.fin_resp {
                c = Conversation {
                    monitor: c.monitor,
                    ..Conversation::default()
                };
            }
            c.fin_init |= fin;
        }
        Side::Responder => {
            c.answered = true;
            c.fin_resp |= fin;
        }
    }
    c
}

/// The conversation a packet opens.
fn opened(monitor: bool, tcp_flags: Option<u8>) -> Conversation {
    Conversation {
        monitor,
        fin_init: tcp_flags.is_some_and(|f| f & TCP_FIN != 0),
        ..Conversation::default()
    }
}

fn is_reset(tcp_flags: Option<u8>) -> bool {
    tcp_flags.is_some_and(|f| f & TCP_RST != 0)
}

// ------------------------------------------------------------------------------------------
// The scenario: one client, one server, one conduit
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Host {
    /// In zone `sup`, the conduit's `from`.
    Client,
    /// In zone `ctl`, the conduit's `to`.
    Server,
}

impl Host {
    fn peer(self) -> Host {
        match self {
            Host::Client => Host::Server,
            Host::Server => Host::Client,
        }
    }
}

/// What a flow is: the server's service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Svc {
    /// TCP 502: a rule of the conduit.
    Modbus,
    /// TCP 503: no rule (a monitor-mode flow at most).
    Closed,
    /// UDP 161: a rule.
    Snmp,
    /// ICMP (ICMPv6) echo: the rule allows echo requests.
    Echo,
    /// IP protocol 47: a rule (no ports).
    Gre,
}

const SVCS: [Svc; 5] = [Svc::Modbus, Svc::Closed, Svc::Snmp, Svc::Echo, Svc::Gre];
const CLIENT_PORTS: [u16; 2] = [40_000, 40_001];

impl Svc {
    fn proto(self, v6: bool) -> u8 {
        match self {
            Svc::Modbus | Svc::Closed => PROTO_TCP,
            Svc::Snmp => PROTO_UDP,
            Svc::Echo if v6 => PROTO_ICMPV6,
            Svc::Echo => PROTO_ICMP,
            Svc::Gre => 47,
        }
    }
    fn port(self) -> u16 {
        match self {
            Svc::Modbus => 502,
            Svc::Closed => 503,
            Svc::Snmp => 161,
            Svc::Echo | Svc::Gre => 0,
        }
    }
    /// The packet that opens such a flow.
    fn opening(self) -> What {
        match self {
            Svc::Modbus | Svc::Closed => What::Tcp(self, TCP_SYN),
            Svc::Snmp => What::Udp,
            Svc::Echo => What::Echo { request: true },
            Svc::Gre => What::Gre,
        }
    }
}

/// A packet, from one host to the other.
#[derive(Clone, Copy, Debug)]
enum What {
    /// TCP between the client's port and the service's (Modbus or Closed), with these flags.
    Tcp(Svc, u8),
    /// UDP between the client's port and 161.
    Udp,
    /// ICMP echo request or reply, identifier: the client's port.
    Echo { request: bool },
    /// IP protocol 47.
    Gre,
    /// ICMP timestamp request (13) or reply (14), ICMPv6 200 or 201: ICMP other than echo,
    /// never tracked; the conduit allows the request.
    Timestamp { request: bool },
    /// An ICMP destination unreachable (ICMPv6: type 1) quoting the packet that opens a flow
    /// of this service, as the peer would send it.
    Error(Svc),
}

impl What {
    fn svc(self) -> Option<Svc> {
        match self {
            What::Tcp(s, _) => Some(s),
            What::Udp => Some(Svc::Snmp),
            What::Echo { .. } => Some(Svc::Echo),
            What::Gre => Some(Svc::Gre),
            What::Timestamp { .. } | What::Error(_) => None,
        }
    }
    fn tcp_flags(self) -> Option<u8> {
        match self {
            What::Tcp(_, f) => Some(f),
            _ => None,
        }
    }
    /// SPEC: "a reply never allows the other side to open new flows": a TCP SYN without ACK
    /// and an echo request open, they never answer.
    fn reply_shaped(self) -> bool {
        match self {
            What::Tcp(_, f) => f & (TCP_SYN | TCP_ACK) != TCP_SYN,
            What::Echo { request } => !request,
            _ => true,
        }
    }
}

/// A flow as the model names it: who opened it, to which service, from which client port
/// (the echo identifier; none for protocols without ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct FlowId {
    initiator: Host,
    svc: Svc,
    client: u16,
}

impl FlowId {
    fn new(initiator: Host, svc: Svc, client: u16) -> FlowId {
        // (code's docs) a flow of a protocol without ports is one per address pair.
        let client = if svc == Svc::Gre { 0 } else { client };
        FlowId {
            initiator,
            svc,
            client,
        }
    }
}

fn all_flow_ids() -> Vec<FlowId> {
    let mut v = Vec::new();
    for initiator in [Host::Client, Host::Server] {
        for svc in SVCS {
            for client in CLIENT_PORTS {
                let id = FlowId::new(initiator, svc, client);
                if !v.contains(&id) {
                    v.push(id);
                }
            }
        }
    }
    v
}

/// When the conduit is open.
#[derive(Clone, Copy, Debug)]
enum Gate {
    Always,
    /// `expires`: this many seconds after the run's start.
    Ends(u64),
    /// `on_demand`, granted at the start; `Act::Grant` opens and closes it.
    OnDemand,
}

#[derive(Clone, Copy, Debug)]
struct Scenario {
    v6: bool,
    /// Whether zone `sup` (the client's), and zone `ctl` (the server's), is in monitor mode.
    sup_monitor: bool,
    ctl_monitor: bool,
    gate: Gate,
}

const CONDUIT: &str = "sup-to-ctl";
/// The run's start on the reference's monotonic clock (past the first second of uptime).
const T0: u64 = 1_000 * SEC;
/// The run's start on CLOCK_TAI, in seconds (2030).
const TAI0: u64 = 1_900_000_000;

impl Scenario {
    fn yaml(&self) -> String {
        let mode = |m: bool| if m { "monitor" } else { "enforce" };
        let gate = match self.gate {
            Gate::Always => String::new(),
            Gate::Ends(s) => format!(
                "    expires: \"{}\"\n",
                jiff::Timestamp::from_second((TAI0 + s) as i64).unwrap()
            ),
            Gate::OnDemand => "    on_demand: { max: 1h }\n".into(),
        };
        format!(
            "version: 1
site: flow-oracle
defaults:
  mode: enforce
zones:
  - name: sup
    security_level: 2
    mode: {sup}
    assets:
      - {{ name: client, ip: \"10.1.0.5\" }}
      - {{ name: client6, ip: \"fd00:1::5\" }}
  - name: ctl
    security_level: 2
    mode: {ctl}
    assets:
      - {{ name: server, ip: \"10.2.0.5\" }}
      - {{ name: server6, ip: \"fd00:2::5\" }}
conduits:
  - name: {CONDUIT}
    from: sup
    to: ctl
{gate}    rules:
      - {{ proto: tcp, ports: [502] }}
      - {{ proto: udp, ports: [161] }}
      - {{ proto: icmp, icmp_types: [echo-request, 13] }}
      - {{ proto: icmpv6, icmp_types: [echo-request, 200] }}
      - {{ proto: 47 }}
",
            sup = mode(self.sup_monitor),
            ctl = mode(self.ctl_monitor),
        )
    }

    /// Whether traffic into `h`'s zone is in monitor mode (SPEC: the destination's mode).
    fn monitored(&self, h: Host) -> bool {
        match h {
            Host::Client => self.sup_monitor,
            Host::Server => self.ctl_monitor,
        }
    }

    fn addr(&self, h: Host) -> [u8; 16] {
        let mut a = [0u8; 16];
        match (self.v6, h) {
            (false, Host::Client) => a[..4].copy_from_slice(&[10, 1, 0, 5]),
            (false, Host::Server) => a[..4].copy_from_slice(&[10, 2, 0, 5]),
            (true, h) => {
                a[0] = 0xfd;
                a[3] = if h == Host::Client { 1 } else { 2 };
                a[15] = 5;
            }
        }
        a
    }

    /// The frame `from` sends.
    fn frame(&self, from: Host, client: u16, what: What) -> Vec<u8> {
        if let What::Error(svc) = what {
            let quoted = self.frame(from.peer(), client, svc.opening());
            return frames::icmp_error_about(&quoted, if self.v6 { 4 } else { 3 })
                .expect("an error about an IP packet");
        }
        let ports = |port: u16| {
            if from == Host::Client {
                (client, port)
            } else {
                (port, client)
            }
        };
        let l4 = match what {
            What::Tcp(svc, flags) => {
                let (sport, dport) = ports(svc.port());
                L4::Tcp {
                    sport,
                    dport,
                    flags,
                }
            }
            What::Udp => {
                let (sport, dport) = ports(161);
                L4::Udp { sport, dport }
            }
            What::Echo { request } => L4::Icmp {
                ty: match (self.v6, request) {
                    (false, true) => 8,
                    (false, false) => 0,
                    (true, true) => 128,
                    (true, false) => 129,
                },
                code: 0,
                id: client,
            },
            What::Timestamp { request } => L4::Icmp {
                ty: match (self.v6, request) {
                    (false, true) => 13,
                    (false, false) => 14,
                    (true, true) => 200,
                    (true, false) => 201,
                },
                code: 0,
                id: client,
            },
            What::Gre => L4::Raw { proto: 47 },
            What::Error(_) => unreachable!(),
        };
        let mac = if from == Host::Client { MAC_A } else { MAC_B };
        let (src, dst) = (self.addr(from), self.addr(from.peer()));
        if self.v6 {
            frames::v6(mac, src, dst, l4)
        } else {
            let v4 = |a: [u8; 16]| [a[0], a[1], a[2], a[3]];
            frames::v4(mac, v4(src), v4(dst), l4)
        }
    }

    /// The flow table's key of a flow, as the model names it: the initiator's address and
    /// port first; an echo flow's ports are its identifier, a flow without ports has 0.
    fn key(&self, id: FlowId) -> FlowKey {
        let (ip, rp) = match id.svc {
            Svc::Echo => (id.client, id.client),
            Svc::Gre => (0, 0),
            s if id.initiator == Host::Client => (id.client, s.port()),
            s => (s.port(), id.client),
        };
        FlowKey {
            family: if self.v6 { FAMILY_V6 } else { FAMILY_V4 },
            proto: id.svc.proto(self.v6),
            _pad: [0; 2],
            sport: ip,
            dport: rp,
            src: self.addr(id.initiator),
            dst: self.addr(id.initiator.peer()),
        }
    }
}

// ------------------------------------------------------------------------------------------
// The model of the datapath's flows
// ------------------------------------------------------------------------------------------

/// A verdict as the model sees it: the conduit is named or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Outcome {
    verdict: Verdict,
    reason: Reason,
    conduit: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MFlow {
    last: u64,
    c: Conversation,
}

struct Model {
    s: Scenario,
    rules: Rules,
    flows: BTreeMap<FlowId, MFlow>,
    granted: bool,
}

impl Model {
    fn new(s: Scenario, rules: Rules) -> Model {
        Model {
            s,
            rules,
            flows: BTreeMap::new(),
            granted: true,
        }
    }

    /// Why the conduit allows nothing at `now`, if it does not.
    fn closed(&self, now: u64) -> Option<Reason> {
        match self.s.gate {
            Gate::Always => None,
            Gate::Ends(s) => (now >= T0 + s * SEC).then_some(Reason::Expired),
            Gate::OnDemand => (!self.granted).then_some(Reason::NotGranted),
        }
    }

    /// The flow `id` if it is alive at `now`: its last packet less than its idle limit ago.
    fn live(&self, id: FlowId, now: u64) -> Option<MFlow> {
        let f = *self.flows.get(&id)?;
        (now - f.last < idle_limit(self.class(id.svc), &f.c)).then_some(f)
    }

    fn deadline(&self, id: FlowId, now: u64) -> Option<u64> {
        self.live(id, now)
            .map(|f| f.last + idle_limit(self.class(id.svc), &f.c))
    }

    fn class(&self, svc: Svc) -> Class {
        Class::of(svc.proto(self.s.v6))
    }

    /// Whether the conduit's rules allow `from` to send `what` as a new packet.
    fn conduit_allows(from: Host, what: What) -> bool {
        from == Host::Client
            && matches!(
                what,
                What::Tcp(Svc::Modbus, _)
                    | What::Udp
                    | What::Echo { request: true }
                    | What::Gre
                    | What::Timestamp { request: true }
            )
    }

    /// The flow `id` after a packet from `side` that the datapath passes (allow or
    /// would-deny): a reset ends it.
    fn touch(&mut self, id: FlowId, side: Side, flags: Option<u8>, now: u64) {
        if is_reset(flags) {
            self.flows.remove(&id);
            return;
        }
        let f = self.flows.get_mut(&id).expect("a live flow");
        f.c = continued(f.c, side, flags, self.rules);
        f.last = now;
    }

    fn open(&mut self, id: FlowId, monitor: bool, flags: Option<u8>, now: u64) {
        if is_reset(flags) {
            // A reset opens nothing, and ends what was there.
            self.flows.remove(&id);
            return;
        }
        self.flows.insert(
            id,
            MFlow {
                last: now,
                c: opened(monitor, flags),
            },
        );
    }

    /// The verdict on `what` from `from` (client port `client`) at `now`, and its effect on
    /// the flows.
    fn judge(&mut self, from: Host, client: u16, what: What, now: u64) -> Outcome {
        let to = from.peer();
        let allow = |reason| Outcome {
            verdict: Verdict::Allow,
            reason,
            conduit: true,
        };
        // SPEC §1 Modes: the destination's mode turns a denial into would-deny.
        let deny = |reason, conduit| Outcome {
            verdict: if self.s.monitored(to) {
                Verdict::WouldDeny
            } else {
                Verdict::Deny
            },
            reason,
            conduit,
        };
        let closed = self.closed(now);
        let Some(svc) = what.svc() else {
            // ICMP other than echo: no flow of its own.
            if let What::Error(about) = what {
                // It goes back to the initiator of the flow it quotes (the peer): a reply of
                // that flow while it is alive and its conduit is open.
                let id = FlowId::new(to, about, client);
                if let Some(f) = self.live(id, now) {
                    if !f.c.monitor && closed.is_none() {
                        // It does not refresh the flow (SPEC silent; as the code does: an
                        // error is no sign of the flow being used).
                        return allow(Reason::Reply);
                    }
                    if f.c.monitor
                        && self.rules.monitor_errors_are_replies
                        && self.s.monitored(from)
                    {
                        return Outcome {
                            verdict: Verdict::WouldDeny,
                            reason: Reason::Reply,
                            conduit: false,
                        };
                    }
                }
                // Judged on its own: no rule allows ICMP errors.
                return deny(Reason::NoConduit, false);
            }
            return if Model::conduit_allows(from, what) {
                match closed {
                    None => allow(Reason::Conduit),
                    Some(r) => deny(r, true),
                }
            } else {
                deny(Reason::NoConduit, false)
            };
        };
        let flags = what.tcp_flags();
        let own = FlowId::new(from, svc, client);
        let theirs = FlowId::new(to, svc, client);
        // A packet of a flow this host opened through the conduit, while the conduit is open.
        // (code's docs: whatever it is, an echo reply too: the flow's direction decides.)
        if let Some(f) = self.live(own, now)
            && !f.c.monitor
            && closed.is_none()
        {
            self.touch(own, Side::Initiator, flags, now);
            return allow(Reason::Conduit);
        }
        // A reply of a flow the peer opened.
        if what.reply_shaped()
            && let Some(f) = self.live(theirs, now)
        {
            if !f.c.monitor {
                match closed {
                    None => {
                        self.touch(theirs, Side::Responder, flags, now);
                        return allow(Reason::Reply);
                    }
                    // SPEC §8: the conduit allows nothing any more, established flows
                    // included (the flow is not refreshed).
                    Some(r) => return deny(r, true),
                }
            }
            // README: a monitor-mode flow's replies pass (would-deny) while the zone that
            // let it through, the replier's, is in monitor mode.
            if self.s.monitored(from) {
                self.touch(theirs, Side::Responder, flags, now);
                return Outcome {
                    verdict: Verdict::WouldDeny,
                    reason: Reason::Reply,
                    conduit: false,
                };
            }
        }
        // A new flow: the conduit, else nothing (SPEC §1: everything else is denied).
        let out = if Model::conduit_allows(from, what) {
            match closed {
                None => allow(Reason::Conduit),
                Some(r) => deny(r, true),
            }
        } else {
            deny(Reason::NoConduit, false)
        };
        match out.verdict {
            Verdict::Allow => self.open(own, false, flags, now),
            // Monitor mode: tracked, so that its replies pass too.
            Verdict::WouldDeny => match self.live(own, now) {
                Some(f) if f.c.monitor && self.rules.monitor_keeps_state => {
                    self.touch(own, Side::Initiator, flags, now)
                }
                _ => self.open(own, true, flags, now),
            },
            Verdict::Deny => {}
        }
        out
    }
}

// ------------------------------------------------------------------------------------------
// Sequences, and the run against the reference datapath
// ------------------------------------------------------------------------------------------

/// How time moves before an event.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// This many nanoseconds (rounded up to whole seconds when the scenario counts seconds).
    Wait(u64),
    /// To the deadline of the `n`th flow (of [`all_flow_ids`]), plus `offset` units (a
    /// nanosecond, or a second); a short wait if that flow is not alive.
    ToDeadline(usize, i8),
    /// To the conduit's end (`expires`), plus `offset` units; a short wait if it has none
    /// or it is past.
    ToEnd(i8),
}

#[derive(Clone, Copy, Debug)]
enum Act {
    Packet {
        from: Host,
        client: u16,
        what: What,
    },
    /// On-demand conduits: a grant (open) or a revocation.
    Grant(bool),
}

#[derive(Clone, Copy, Debug)]
struct Event {
    step: Step,
    act: Act,
}

/// What to compare after each frame: the verdict only, or the live flows' states too.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Compare {
    Verdicts,
    VerdictsAndFlows,
}

/// Runs `events` through the reference datapath and the model; the first difference, with
/// the events up to it, or how many frames the reference's fast path judged.
fn run(s: Scenario, rules: Rules, events: &[Event], compare: Compare) -> Result<u64, String> {
    let text = s.yaml();
    let (policy, diags) = validate_str(&text);
    let policy = policy.ok_or_else(|| format!("the policy does not validate:\n{diags}\n{text}"))?;
    let compiled = compile(&policy, 0).map_err(|e| format!("{e:?}"))?;
    let conduit = compiled.conduit_ids[CONDUIT];
    let mut r = Reference::new(compiled);
    let mut m = Model::new(s, rules);
    // Whole seconds when a conduit's end is judged: its clock (CLOCK_TAI, seconds in the
    // reference) and the flows' (nanoseconds) must then agree.
    let unit = match s.gate {
        Gate::Ends(_) => SEC,
        _ => 1,
    };
    if let Gate::OnDemand = s.gate {
        r.compiled.grants.insert(conduit, u32::MAX);
    }
    let ids = all_flow_ids();
    let mut now = T0;
    let mut log = String::new();
    for (i, e) in events.iter().enumerate() {
        let dt = match e.step {
            Step::Wait(ns) => ns.div_ceil(unit) * unit,
            Step::ToDeadline(n, off) => match m.deadline(ids[n % ids.len()], now) {
                Some(d) => (d - now).saturating_add_signed(i64::from(off) * unit as i64),
                None => unit,
            },
            Step::ToEnd(off) => match s.gate {
                Gate::Ends(e) if T0 + e * SEC > now => {
                    (T0 + e * SEC - now).saturating_add_signed(i64::from(off) * unit as i64)
                }
                _ => unit,
            },
        };
        now += dt;
        r.compiled.clock = Some((TAI0 + (now - T0) / SEC) as u32);
        let line = format!(
            "#{i} t={}.{:09} s (+{} ns): {:?}",
            (now - T0) / SEC,
            (now - T0) % SEC,
            dt,
            e.act
        );
        log.push_str(&line);
        log.push('\n');
        let fail = |what: String| Err(format!("{what}\nscenario: {s:?}\nevents:\n{log}"));
        let (from, client, what) = match e.act {
            Act::Grant(open) => {
                if let Gate::OnDemand = s.gate {
                    m.granted = open;
                    if open {
                        r.compiled.grants.insert(conduit, u32::MAX);
                    } else {
                        r.compiled.grants.remove(&conduit);
                    }
                }
                continue;
            }
            Act::Packet { from, client, what } => (from, client, what),
        };
        let want = m.judge(from, client, what, now);
        let d: Decision = r.judge(&s.frame(from, client, what), now);
        let got = Outcome {
            verdict: d.verdict,
            reason: d.reason,
            conduit: d.conduit != NO_CONDUIT,
        };
        if got != want || (got.conduit && d.conduit != conduit) {
            return fail(format!(
                "verdict: the datapath gave {got:?} (conduit {}), the model {want:?}",
                d.conduit
            ));
        }
        if compare == Compare::Verdicts {
            continue;
        }
        // The live flows, their state and their deadlines.
        let mut code_live = 0;
        for (k, v) in &r.flows {
            if flow::alive(v, k.proto, now) {
                code_live += 1;
            }
        }
        let mut model_live = 0;
        for &id in &ids {
            let key = s.key(id);
            let code = r.flows.get(&key).filter(|v| flow::alive(v, key.proto, now));
            let model = m.live(id, now);
            model_live += usize::from(model.is_some());
            match (code, model) {
                (None, None) => {}
                (Some(v), Some(f)) => {
                    let c = decode(v.state);
                    let deadline = v.last_seen + flow::timeout(key.proto, v.state);
                    let tcp = key.proto == PROTO_TCP;
                    let same = c.monitor == f.c.monitor
                        && c.answered == f.c.answered
                        && (!tcp || (c.fin_init, c.fin_resp) == (f.c.fin_init, f.c.fin_resp))
                        && v.last_seen == f.last
                        && Some(deadline) == m.deadline(id, now)
                        && (f.c.monitor || v.conduit == conduit);
                    if !same {
                        return fail(format!(
                            "flow {id:?}: the datapath holds {c:?}, last seen {}, deadline \
                             {deadline}, conduit {}; the model {f:?}, deadline {:?}",
                            v.last_seen,
                            v.conduit,
                            m.deadline(id, now)
                        ));
                    }
                }
                (code, model) => {
                    return fail(format!(
                        "flow {id:?}: alive in the datapath: {:?}; in the model: {model:?}",
                        code.map(|v| (decode(v.state), v.last_seen))
                    ));
                }
            }
        }
        if code_live != model_live {
            return fail(format!(
                "the datapath has {code_live} live flows, the model {model_live}"
            ));
        }
    }
    Ok(r.fast_hits)
}

/// A flow's state bits as the model's conversation (the bits are the ABI of `flow.rs`).
fn decode(state: u32) -> Conversation {
    Conversation {
        monitor: state & FLOW_MONITOR != 0,
        answered: state & FLOW_REPLIED != 0,
        fin_init: state & FLOW_FIN_FWD != 0,
        fin_resp: state & FLOW_FIN_REV != 0,
    }
}

fn encode(c: &Conversation) -> u32 {
    (if c.monitor { FLOW_MONITOR } else { 0 })
        | (if c.answered { FLOW_REPLIED } else { 0 })
        | (if c.fin_init { FLOW_FIN_FWD } else { 0 })
        | (if c.fin_resp { FLOW_FIN_REV } else { 0 })
}

// ------------------------------------------------------------------------------------------
// Generators
// ------------------------------------------------------------------------------------------

fn arb_scenario(gates: bool) -> impl Strategy<Value = Scenario> {
    let gate = if gates {
        prop_oneof![
            1 => Just(Gate::Always),
            // Mostly within reach of the session's first steps.
            2 => prop_oneof![3 => 0u64..120, 1 => 0u64..4_000].prop_map(Gate::Ends),
            1 => Just(Gate::OnDemand),
        ]
        .boxed()
    } else {
        Just(Gate::Always).boxed()
    };
    (any::<bool>(), any::<bool>(), any::<bool>(), gate).prop_map(
        |(v6, sup_monitor, ctl_monitor, gate)| Scenario {
            v6,
            sup_monitor,
            ctl_monitor,
            gate,
        },
    )
}

fn arb_flags() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => Just(TCP_SYN),
        3 => Just(TCP_SYN | TCP_ACK),
        4 => Just(TCP_ACK),
        4 => Just(TCP_PSH | TCP_ACK),
        3 => Just(TCP_FIN | TCP_ACK),
        1 => Just(TCP_FIN),
        1 => Just(TCP_RST),
        1 => Just(TCP_RST | TCP_ACK),
        1 => any::<u8>(),
    ]
}

fn arb_svc() -> impl Strategy<Value = Svc> {
    prop_oneof![
        3 => Just(Svc::Modbus),
        1 => Just(Svc::Closed),
        1 => Just(Svc::Snmp),
        1 => Just(Svc::Echo),
        1 => Just(Svc::Gre),
    ]
}

fn arb_what() -> impl Strategy<Value = What> {
    prop_oneof![
        10 => arb_flags().prop_map(|f| What::Tcp(Svc::Modbus, f)),
        3 => arb_flags().prop_map(|f| What::Tcp(Svc::Closed, f)),
        3 => Just(What::Udp),
        3 => any::<bool>().prop_map(|request| What::Echo { request }),
        2 => Just(What::Gre),
        1 => any::<bool>().prop_map(|request| What::Timestamp { request }),
        2 => arb_svc().prop_map(What::Error),
    ]
}

fn arb_step() -> impl Strategy<Value = Step> {
    let idle = prop::sample::select(IDLES.to_vec());
    prop_oneof![
        4 => Just(Step::Wait(0)),
        6 => (0..5 * SEC).prop_map(Step::Wait),
        // Around an idle limit from the last event.
        3 => (idle, -1i64..=1).prop_map(|(t, d)| Step::Wait(t.saturating_add_signed(d))),
        // Exactly at (or a unit from) a live flow's deadline.
        4 => (0usize..32, -1i8..=1).prop_map(|(n, o)| Step::ToDeadline(n, o)),
        // Exactly at (or a unit from) the conduit's end.
        2 => (-1i8..=1).prop_map(Step::ToEnd),
        1 => (0..2 * IDLE_TCP).prop_map(Step::Wait),
    ]
}

fn arb_event() -> impl Strategy<Value = Event> {
    let packet = (
        prop_oneof![Just(Host::Client), Just(Host::Server)],
        prop_oneof![3 => Just(CLIENT_PORTS[0]), 1 => Just(CLIENT_PORTS[1])],
        arb_what(),
    )
        .prop_map(|(from, client, what)| Act::Packet { from, client, what });
    let act = prop_oneof![30 => packet, 1 => any::<bool>().prop_map(Act::Grant)];
    (arb_step(), act).prop_map(|(step, act)| Event { step, act })
}

/// A TCP session as it goes: a handshake, an exchange, FINs both ways and the last ACK, once
/// or twice on the same 4-tuple, with noise (any event) between and after; the random
/// sequences above rarely complete a close, this always does.
fn arb_session() -> impl Strategy<Value = Vec<Event>> {
    let pkt = |from, flags| Act::Packet {
        from,
        client: CLIENT_PORTS[0],
        what: What::Tcp(Svc::Modbus, flags),
    };
    let script = [
        pkt(Host::Client, TCP_SYN),
        pkt(Host::Server, TCP_SYN | TCP_ACK),
        pkt(Host::Client, TCP_ACK),
        pkt(Host::Client, TCP_PSH | TCP_ACK),
        pkt(Host::Server, TCP_PSH | TCP_ACK),
        pkt(Host::Client, TCP_FIN | TCP_ACK),
        pkt(Host::Server, TCP_FIN | TCP_ACK),
        pkt(Host::Client, TCP_ACK),
    ];
    (
        vec(arb_step(), script.len()),
        vec(prop::option::weighted(0.2, arb_event()), script.len()),
        vec(arb_event(), 0..12),
        1usize..3,
    )
        .prop_map(move |(steps, noise, tail, repeat)| {
            let mut v = Vec::new();
            for _ in 0..repeat {
                for ((a, s), n) in script.iter().zip(&steps).zip(&noise) {
                    // Mostly short steps inside a session.
                    let step = match s {
                        Step::Wait(ns) if *ns > 5 * SEC => Step::Wait(ns % (5 * SEC)),
                        s => *s,
                    };
                    v.push(Event { step, act: *a });
                    v.extend(n.iter().copied());
                }
            }
            v.extend(tail);
            v
        })
}

// ------------------------------------------------------------------------------------------
// Properties against the reference datapath
// ------------------------------------------------------------------------------------------

fn check(s: Scenario, rules: Rules, events: &[Event]) -> Result<(), TestCaseError> {
    run(s, rules, events, Compare::VerdictsAndFlows)
        .map(|_| ())
        .map_err(TestCaseError::fail)
}

/// Runs a fixed sequence comparing verdicts only: a disagreement shows as the packet the
/// datapath judges otherwise.
fn check_verdicts(s: Scenario, rules: Rules, events: &[Event]) {
    if let Err(e) = run(s, rules, events, Compare::Verdicts) {
        panic!("{e}");
    }
}

proptest! {
    #![proptest_config(conduit_tests::proptest_config())]

    /// Random packets both ways, in both families and every mix of modes: the datapath's
    /// verdicts and live flows are the model's.
    #[test]
    fn datapath_follows_the_model(s in arb_scenario(false), events in vec(arb_event(), 1..80)) {
        check(s, SPEC, &events)?;
    }

    /// Whole sessions (handshake, data, FINs both ways, final ACK), repeated on the same
    /// 4-tuple, with noise and time steps on the deadlines.
    #[test]
    fn sessions_follow_the_model(s in arb_scenario(false), events in arb_session()) {
        check(s, SPEC, &events)?;
    }

    /// Conduits that end (`expires`) and on-demand ones granted and revoked: established
    /// flows stop in both directions, in whole seconds (the clock of conduits' ends).
    #[test]
    fn gated_conduits_follow_the_model(s in arb_scenario(true), events in vec(arb_event(), 1..80)) {
        check(s, SPEC, &events)?;
    }
}

/// The harness itself: the reference's fast path judges some of a session's frames (so the
/// flows it updates in place are under the model's eye too), and the full path the others.
#[test]
fn the_fast_path_is_under_test() {
    use Host::*;
    let mut events = vec![
        modbus(0, Client, TCP_SYN),
        modbus(SEC, Server, TCP_SYN | TCP_ACK),
        modbus(SEC, Client, TCP_ACK),
    ];
    for _ in 0..4 {
        events.push(modbus(SEC, Client, TCP_PSH | TCP_ACK));
        events.push(modbus(SEC, Server, TCP_PSH | TCP_ACK));
    }
    let fast = run(enforce_v4(), SPEC, &events, Compare::VerdictsAndFlows)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        fast > 0 && fast < events.len() as u64,
        "{fast} of {} frames on the fast path",
        events.len()
    );
}

// The three disagreements the oracle found, now fixed: each minimal sequence passes with the
// model held to the SPEC, and the model with the old rule on that one point fails on it (the
// sequence tells the two apart, so it would catch the old behaviour coming back).

fn regression(s: Scenario, old_rule: impl Fn(&mut Rules), events: &[Event]) {
    check_verdicts(s, SPEC, events);
    let mut old = SPEC;
    old_rule(&mut old);
    assert!(
        run(s, old, events, Compare::Verdicts).is_err(),
        "the old rule gives the same verdicts: the sequence does not test the fix"
    );
}

fn enforce_v4() -> Scenario {
    Scenario {
        v6: false,
        sup_monitor: false,
        ctl_monitor: false,
        gate: Gate::Always,
    }
}

fn at(step: u64, from: Host, what: What) -> Event {
    Event {
        step: Step::Wait(step),
        act: Act::Packet {
            from,
            client: CLIENT_PORTS[0],
            what,
        },
    }
}

fn modbus(step: u64, from: Host, flags: u8) -> Event {
    at(step, from, What::Tcp(Svc::Modbus, flags))
}

/// Disagreement 1 (fixed), minimal: a connection closed by FINs both ways, a new one on the same
/// 4-tuple within 10 s (a client with a fixed source port reconnecting), idle 10 s, then the
/// server sends: SPEC "TCP until closed or idle" says it passes (reply); the datapath drops it
/// (the new flow kept the closing state and its 10 s timeout) until the fix.
#[test]
fn regression_1_new_connection_on_a_closed_4tuple() {
    use Host::*;
    let events = [
        modbus(0, Client, TCP_SYN),
        modbus(0, Server, TCP_SYN | TCP_ACK),
        modbus(0, Client, TCP_FIN | TCP_ACK),
        modbus(0, Server, TCP_FIN | TCP_ACK),
        modbus(SEC, Client, TCP_SYN),
        modbus(0, Server, TCP_SYN | TCP_ACK),
        modbus(0, Client, TCP_ACK),
        modbus(IDLE_TCP_CLOSING, Server, TCP_PSH | TCP_ACK),
    ];
    regression(enforce_v4(), |r| r.syn_reopens_closed = false, &events);
}

/// Disagreement 2 (fixed), minimal: the server's zone in monitor mode (no conduit for port 503), the
/// client's zone enforcing. A handshake, then the server sends 30 s after the client's last
/// packet: the README says a monitor-mode flow's replies pass (would-deny) while it is alive
/// (an hour for an answered TCP flow); the datapath dropped the server's packet (the client's
/// ACK re-opened the flow as never answered: 30 s) until the fix.
#[test]
fn regression_2_monitor_flow_forgets_its_answer() {
    use Host::*;
    let s = Scenario {
        ctl_monitor: true,
        ..enforce_v4()
    };
    let closed = |step, from, flags| at(step, from, What::Tcp(Svc::Closed, flags));
    let events = [
        closed(0, Client, TCP_SYN),
        closed(0, Server, TCP_SYN | TCP_ACK),
        closed(0, Client, TCP_ACK),
        closed(IDLE_TCP_UNANSWERED, Server, TCP_PSH | TCP_ACK),
    ];
    regression(s, |r| r.monitor_keeps_state = false, &events);
}

/// Disagreement 3 (fixed), minimal: the server's zone in monitor mode, the client's enforcing; the
/// client's SYN to a port no conduit allows (would-deny, a monitor-mode flow), and the
/// server's ICMP port unreachable about it. README: an ICMP error about a packet of a live
/// flow passes as its reply, and a monitor-mode flow's replies pass (would-deny); the
/// datapath judged the error on its own and dropped it (`no_conduit`, the client's zone
/// enforcing) until the fix.
#[test]
fn regression_3_icmp_error_of_a_monitor_flow() {
    use Host::*;
    let s = Scenario {
        ctl_monitor: true,
        ..enforce_v4()
    };
    let events = [
        at(0, Client, What::Tcp(Svc::Closed, TCP_SYN)),
        at(0, Server, What::Error(Svc::Closed)),
    ];
    regression(s, |r| r.monitor_errors_are_replies = false, &events);
}

// ------------------------------------------------------------------------------------------
// The pure functions against the model
// ------------------------------------------------------------------------------------------

fn arb_proto() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => Just(PROTO_TCP),
        2 => Just(PROTO_UDP),
        2 => Just(PROTO_ICMP),
        2 => Just(PROTO_ICMPV6),
        1 => any::<u8>(),
    ]
}

fn arb_packet() -> impl Strategy<Value = Packet> {
    let icmp_type = prop_oneof![
        Just(0u8),
        Just(8),
        Just(128),
        Just(129),
        Just(3),
        Just(13),
        any::<u8>()
    ];
    (
        arb_proto(),
        any::<bool>(),
        (any::<[u8; 16]>(), any::<[u8; 16]>()),
        (any::<u16>(), any::<u16>(), icmp_type),
        prop_oneof![arb_flags(), any::<u8>()],
        (any::<[u8; 6]>(), any::<u32>()),
    )
        .prop_map(
            |(proto, v6, (src, dst), (sport, dport, ty), tcp_flags, (mac, ifindex))| {
                let icmp = matches!(proto, PROTO_ICMP | PROTO_ICMPV6);
                Packet {
                    family: if v6 { FAMILY_V6 } else { FAMILY_V4 },
                    proto,
                    src,
                    dst,
                    sport,
                    dport: if icmp {
                        u16::from(ty) << 8 | (dport & 0xff)
                    } else {
                        dport
                    },
                    tcp_flags,
                    src_mac: mac,
                    ifindex,
                    ..Packet::default()
                }
            },
        )
}

fn arb_flow_val() -> impl Strategy<Value = FlowVal> {
    (
        (any::<u32>(), prop_oneof![0u32..64, any::<u32>()]),
        (
            any::<u64>(),
            0u64..4,
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        ),
        (0u8..4, any::<[u8; 2]>(), any::<[u8; 6]>(), any::<[u8; 6]>()),
        (any::<u32>(), any::<u32>(), any::<u32>()),
    )
        .prop_map(
            |(
                (conduit, state),
                (last_seen, generation, src_zone, dst_zone, filter),
                (cached, learned, mac_fwd, mac_rev),
                (if_fwd, if_rev, expires),
            )| FlowVal {
                conduit,
                state,
                last_seen,
                generation,
                src_zone,
                dst_zone,
                filter,
                cached,
                learned,
                _pad: 0,
                mac_fwd,
                mac_rev,
                if_fwd,
                if_rev,
                expires,
            },
        )
}

fn arb_decision() -> impl Strategy<Value = Decision> {
    (
        prop_oneof![
            Just(Verdict::Allow),
            Just(Verdict::Deny),
            Just(Verdict::WouldDeny)
        ],
        prop::sample::select(Reason::ALL.to_vec()),
        prop_oneof![Just(FLOW_NEW), Just(FLOW_FWD), Just(FLOW_REV)],
        (any::<u32>(), any::<u32>(), any::<u32>()),
        (any::<u16>(), any::<u32>(), any::<bool>()),
    )
        .prop_map(
            |(verdict, reason, flow, (conduit, src_zone, dst_zone), (filter, expires, log))| {
                Decision {
                    verdict,
                    reason,
                    conduit,
                    src_zone,
                    dst_zone,
                    log,
                    flow,
                    filter,
                    expires,
                }
            },
        )
}

/// The model's ports of a packet's flow, as the packet's sender sees them: TCP and UDP their
/// ports, ICMP echo its identifier both ways, anything else none.
fn model_ports(p: &Packet) -> (u16, u16) {
    match p.proto {
        PROTO_TCP | PROTO_UDP => (p.sport, p.dport),
        PROTO_ICMP | PROTO_ICMPV6 => (p.sport, p.sport),
        _ => (0, 0),
    }
}

/// The key of the flow `p` belongs to when `initiator_sent` (else the flow `p` answers):
/// the initiator's address and port first.
fn model_key(p: &Packet, initiator_sent: bool) -> FlowKey {
    let (a, b) = model_ports(p);
    let ((src, sport), (dst, dport)) = if initiator_sent {
        ((p.src, a), (p.dst, b))
    } else {
        ((p.dst, b), (p.src, a))
    };
    FlowKey {
        family: p.family,
        proto: p.proto,
        _pad: [0; 2],
        sport,
        dport,
        src,
        dst,
    }
}

fn icmp_type(p: &Packet) -> u8 {
    (p.dport >> 8) as u8
}

/// The packet that answers `p`: addresses and ports swapped (an echo reply keeps the
/// identifier).
fn answer(p: &Packet) -> Packet {
    let mut a = *p;
    a.src = p.dst;
    a.dst = p.src;
    match p.proto {
        PROTO_TCP | PROTO_UDP => {
            a.sport = p.dport;
            a.dport = p.sport;
        }
        PROTO_ICMP => a.dport = 0,
        PROTO_ICMPV6 => a.dport = 129 << 8,
        _ => {}
    }
    a
}

proptest! {
    #![proptest_config(conduit_tests::proptest_config())]

    /// README: "ICMP other than echo is judged packet by packet"; everything else is tracked.
    /// SPEC: a reply never opens: a TCP SYN without ACK and an echo request are never replies.
    #[test]
    fn tracked_and_reply_shaped(p in arb_packet()) {
        let echo = match p.proto {
            PROTO_ICMP => matches!(icmp_type(&p), 0 | 8),
            PROTO_ICMPV6 => matches!(icmp_type(&p), 128 | 129),
            _ => true,
        };
        prop_assert_eq!(flow::tracked(&p), echo);
        let reply = match p.proto {
            PROTO_TCP => !(p.tcp_flags & TCP_SYN != 0 && p.tcp_flags & TCP_ACK == 0),
            PROTO_ICMP => icmp_type(&p) == 0,
            PROTO_ICMPV6 => icmp_type(&p) == 129,
            _ => true,
        };
        prop_assert_eq!(flow::reply_shaped(&p), reply);
    }

    /// A flow has one key, the initiator's view, whichever side's packet it is computed from:
    /// a reply's own key is its request's swapped key, and `state_key` stores each decision
    /// under the key of the flow it belongs to.
    #[test]
    fn keys(p in arb_packet(), d in arb_decision(), none in any::<bool>()) {
        prop_assert_eq!(flow::flow_key(&p, false), model_key(&p, true));
        prop_assert_eq!(flow::flow_key(&p, true), model_key(&p, false));
        prop_assert_eq!(flow::flow_key(&answer(&p), true), flow::flow_key(&p, false));
        prop_assert_eq!(flow::flow_key(&answer(&p), false), flow::flow_key(&p, true));
        let mut d = d;
        if none {
            d.flow = FLOW_NONE;
        }
        let want = match d.flow {
            FLOW_NEW | FLOW_FWD => Some(model_key(&p, true)),
            FLOW_REV => Some(model_key(&p, false)),
            _ => None,
        };
        prop_assert_eq!(flow::state_key(&d, &p), want);
    }

    /// The idle limit of every state, and `alive` exactly up to it (the clock never goes
    /// back; a packet stamped before the flow's last one finds it alive).
    #[test]
    fn timeouts_and_alive(
        v in arb_flow_val(),
        proto in arb_proto(),
        idle in prop::sample::select(IDLES.to_vec()),
        off in -2i64..=2,
        far in any::<u64>(),
        pick in 0u8..3,
    ) {
        let c = decode(v.state);
        let limit = idle_limit(Class::of(proto), &c);
        prop_assert_eq!(flow::timeout(proto, v.state), limit, "state {:#x}", v.state);
        let now = match pick {
            0 => v.last_seen.saturating_add(idle.saturating_add_signed(off)),
            1 => v.last_seen.saturating_add(limit.saturating_add_signed(off)),
            _ => far,
        };
        let want = now <= v.last_seen || now - v.last_seen < limit;
        prop_assert_eq!(flow::alive(&v, proto, now), want, "now {} last {}", now, v.last_seen);
    }

    /// `next_state`: a reset ends the flow (SPEC "TCP until closed"); otherwise the flow's
    /// conversation moves as the model's does, its clock restarts, a new flow starts from
    /// nothing, and the verdict an allowed packet leaves for the fast path is the one for its
    /// direction, under this generation (code's docs: `FlowVal`, `remember`).
    #[test]
    fn next_state_follows_the_model(
        d in arb_decision(),
        p in arb_packet(),
        old in arb_flow_val(),
        now in any::<u64>(),
        generation in 0u64..4,
    ) {
        let got = flow::next_state(&d, &p, &old, now, generation);
        let tcp = p.proto == PROTO_TCP;
        let flags = tcp.then_some(p.tcp_flags);
        if is_reset(flags) {
            prop_assert_eq!(got, None);
            return Ok(());
        }
        let Some(v) = got else {
            return Err(TestCaseError::fail("a flow without a reset ended"));
        };
        // What the packet continues: the flow; for a new one, a live monitor-mode flow that a
        // would-deny packet continues, else an empty one by this decision.
        let live_monitor = old.state & FLOW_MONITOR != 0
            && now.saturating_sub(old.last_seen) < idle_limit(Class::of(p.proto), &decode(old.state));
        let base = if d.flow == FLOW_NEW && d.verdict == Verdict::WouldDeny && live_monitor {
            FlowVal {
                conduit: d.conduit,
                state: old.state,
                learned: old.learned,
                ..FlowVal::default()
            }
        } else if d.flow == FLOW_NEW {
            FlowVal {
                conduit: d.conduit,
                state: encode(&opened(d.verdict == Verdict::WouldDeny, None)),
                ..FlowVal::default()
            }
        } else {
            old
        };
        let side = if d.flow == FLOW_REV { Side::Responder } else { Side::Initiator };
        let want = continued(decode(base.state), side, flags, SPEC);
        prop_assert_eq!(decode(v.state), want);
        // The learning bits are the learning datapath's: carried over, never made here.
        prop_assert_eq!(v.state & FLOW_LEARN_STATE, base.state & FLOW_LEARN_STATE);
        prop_assert_eq!(
            v.state & !(FLOW_LEARN_STATE | FLOW_MONITOR | FLOW_REPLIED | FLOW_FIN_FWD | FLOW_FIN_REV),
            base.state & !(FLOW_LEARN_STATE | FLOW_MONITOR | FLOW_REPLIED | FLOW_FIN_FWD | FLOW_FIN_REV)
        );
        prop_assert_eq!(v.last_seen, now);
        prop_assert_eq!(v.conduit, base.conduit);
        prop_assert_eq!(v.learned, base.learned);
        if d.verdict == Verdict::Allow && !want.monitor {
            let fwd = d.flow != FLOW_REV;
            let (bit, other) = if fwd { (CACHE_FWD, CACHE_REV) } else { (CACHE_REV, CACHE_FWD) };
            prop_assert_eq!(v.generation, generation);
            prop_assert!(v.cached & bit != 0);
            // The other direction's verdict holds only under the generation that gave it.
            prop_assert_eq!(
                v.cached & other != 0,
                base.generation == generation && base.cached & other != 0
            );
            prop_assert_eq!(v.expires, d.expires);
            if fwd {
                prop_assert_eq!((v.mac_fwd, v.if_fwd), (p.src_mac, p.ifindex));
                prop_assert_eq!((v.mac_rev, v.if_rev), (base.mac_rev, base.if_rev));
                prop_assert_eq!((v.src_zone, v.dst_zone), (d.src_zone, d.dst_zone));
                prop_assert_eq!(v.filter, u32::from(d.filter));
            } else {
                prop_assert_eq!((v.mac_rev, v.if_rev), (p.src_mac, p.ifindex));
                prop_assert_eq!((v.mac_fwd, v.if_fwd), (base.mac_fwd, base.if_fwd));
                // The flow keeps its zones in the initiator's direction.
                prop_assert_eq!((v.src_zone, v.dst_zone), (d.dst_zone, d.src_zone));
                prop_assert_eq!(v.filter, base.filter);
            }
        } else {
            // Nothing cached: a would-deny or monitor-mode packet leaves the fast path alone.
            let cache = |x: &FlowVal| {
                (
                    x.generation,
                    x.cached,
                    x.mac_fwd,
                    x.mac_rev,
                    x.if_fwd,
                    x.if_rev,
                    (x.src_zone, x.dst_zone, x.filter, x.expires),
                )
            };
            prop_assert_eq!(cache(&v), cache(&base));
        }
    }
}
