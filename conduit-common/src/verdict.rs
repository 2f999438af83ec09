//! The one verdict function. The XDP program calls [`decide`] with map lookups; `conduit
//! explain` and the tests call it with the compiler's in-memory tables. Same code, same
//! lookup order, same answer.
use crate::{
    abi::*,
    flow::{
        CACHE_FWD, CACHE_REV, FLOW_FWD, FLOW_LEARN_MODBUS, FLOW_MONITOR, FLOW_NEW, FLOW_NONE,
        FLOW_REV, FlowKey, FlowVal, alive, flow_key, flow_port, next_state, reply_shaped, tracked,
    },
    inspect::{Request, WINDOW},
    parse::TCP_RST,
};

/// Lookups into the compiled policy. The kernel implements them with BPF map lookups (LPM
/// lookups with the full prefix length), userspace with ordered maps.
pub trait Tables {
    fn id_exact(&self, key: &IpKey) -> Option<Identity>;
    /// Longest-prefix lookup of a full-length key.
    fn id_cidr(&self, key: &LpmIpData) -> Option<Identity>;
    fn mac(&self, key: &MacKey) -> Option<MacBinding>;
    /// Longest-prefix lookup of a full-length key.
    fn conduit(&self, key: &LpmConduitData) -> Option<ConduitHit>;
    fn zone(&self, key: &ZoneKey) -> Option<ZoneCfg>;
    fn l2_allowed(&self, key: &EtherTypeKey) -> bool;
    fn settings(&self, slot: u32) -> Option<Settings>;
    /// A flow of the flow table ([`crate::flow`]); userspace without flows answers `None`.
    fn flow(&self, key: &FlowKey) -> Option<FlowVal>;
    /// A conduit of a slot ([`MAP_LIVE`]), if it exists.
    fn conduit_info(&self, key: &ConduitKey) -> Option<ConduitInfo>;
    /// The time conduits' ends (`expires`) are compared with: nanoseconds since the Unix
    /// epoch on CLOCK_TAI (the kernel's `bpf_ktime_get_tai_ns`; `explain --at` sets another).
    /// Asked only of conduits that have an end, on the full path.
    fn now_tai_ns(&self) -> u64;
    /// Whether an on-demand conduit of a slot has an open grant now ([`MAP_GRANTS`]; the
    /// kernel compares the grant's end with CLOCK_BOOTTIME, `explain --grant` opens one).
    /// Asked only of on-demand conduits.
    fn granted(&self, key: &ConduitKey) -> bool;
    /// Whether the destination is the gateway itself on a failsafe port.
    fn failsafe(&self, key: &FailsafeKey) -> bool;
    /// A rule's inspection filter, read in place (it is too large to copy onto the BPF
    /// stack).
    fn filter(&self, key: &FilterKey) -> Option<&Filter>;
    /// The verdict of filter `key` on `p` ([`crate::inspect::check`]). The kernel's tables
    /// run it as a BPF global function, which the verifier checks once on its own rather
    /// than once for every path through the decision that reaches an inspection.
    #[inline(always)]
    fn inspect(&self, key: &FilterKey, p: &Packet) -> Option<Reason> {
        crate::inspect::check(self.filter(key), p)
    }
    /// What is known of an ingress interface ([`MAP_INGRESS`]).
    fn ingress(&self, ifindex: u32) -> Option<IngressCfg>;
    /// Whether a zone lists an interface ([`MAP_ZONE_IFS`]).
    fn zone_if(&self, key: &ZoneIfKey) -> bool;
}

/// Where the route back to a packet's source leads ([`Fib::reverse`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// A route back to the source, leaving by this ifindex.
    Via(u32),
    /// No usable route back: none, unreachable, blackhole or prohibit, or the source is not
    /// a unicast address (one of the gateway's own, a broadcast or multicast address).
    None,
    /// The ingress interface does not forward (its `forwarding` sysctl is off): nothing
    /// that arrives there is routed on, so there is nothing to check.
    NotRouting,
}

/// The kernel's routing table as the reverse-path check asks it: the kernel program calls
/// `bpf_fib_lookup`, `explain` asks the host over rtnetlink.
pub trait Fib {
    /// The route the gateway would take to answer `p` (to its source, from its
    /// destination) as a frame that arrived on `p.ifindex`.
    fn reverse(&self, p: &Packet) -> Route;
}

/// Whether a decision is one that [`check_ingress`] must confirm: a frame let through by a
/// conduit, as a reply, within its zone or as a fragment, whose ingress interface is known.
/// Frames denied anyway keep the reason they are denied for (a flood of denied frames costs
/// no route lookup); the gateway's own way in (failsafe), ARP, neighbour discovery and
/// non-IP frames are not routed and not checked.
#[inline(always)]
pub fn needs_ingress_check(d: &Decision, p: &Packet) -> bool {
    d.verdict == Verdict::Allow
        && p.ifindex != 0
        && matches!(
            d.reason,
            Reason::Conduit | Reason::Reply | Reason::IntraZone | Reason::Fragment
        )
}

/// A source address that the reverse-path check leaves alone: unspecified (a DHCP or DAD
/// client without an address yet) or IPv6 link-local (never routed, and ambiguous between
/// interfaces).
#[inline(always)]
fn unrouted_source(p: &Packet) -> bool {
    if p.family == FAMILY_V4 {
        p.src[..4] == [0, 0, 0, 0]
    } else {
        p.src == [0; 16] || (p.src[0] == 0xfe && p.src[1] & 0xc0 == 0x80)
    }
}

/// Anti-spoofing by ingress interface: a zone's traffic must arrive where the zone is. A
/// frame that [`needs_ingress_check`] is denied as `spoofed` when its source zone lists
/// `interfaces` and the frame came in by another, or when the reverse-path check of the
/// source zone (strict: the route back to the source leaves by the ingress interface; loose:
/// some route back exists) fails. The reverse path is not asked where the FIB cannot tell
/// ([`INGRESS_NO_FIB`]: bridge ports) nor on the loopback of `replay`
/// ([`INGRESS_UNCHECKED`]).
#[inline(always)]
pub fn check_ingress<T: Tables, F: Fib>(t: &T, fib: &F, slot: u8, p: &Packet, d: &mut Decision) {
    if !needs_ingress_check(d, p) {
        return;
    }
    let cfg = match t.ingress(p.ifindex) {
        Some(c) => c,
        // An interface the agent wrote nothing for: routed, named nothing (so no zone's
        // `interfaces` names it).
        None => IngressCfg {
            flags: 0,
            fib_ifindex: p.ifindex,
            name: [0; 16],
        },
    };
    if cfg.flags & INGRESS_UNCHECKED != 0 {
        return;
    }
    let zkey = ZoneKey {
        slot: slot as u32,
        zone: d.src_zone,
    };
    // No entry (a slot written by an older build): strict, no interface list.
    let zone = t.zone(&zkey).unwrap_or_default();
    let listed = zone.ifaces == 0
        || t.zone_if(&ZoneIfKey {
            slot: slot as u32,
            zone: d.src_zone,
            name: cfg.name,
        });
    let routed = zone.rpf == RPF_OFF
        || cfg.flags & INGRESS_NO_FIB != 0
        || unrouted_source(p)
        || match fib.reverse(p) {
            Route::Via(i) => zone.rpf == RPF_LOOSE || i == cfg.fib_ifindex,
            Route::None => false,
            Route::NotRouting => true,
        };
    if !(listed && routed) {
        let j = Judge {
            t,
            slot,
            settings: settings_of(t, slot),
            src_zone: d.src_zone,
            dst_zone: d.dst_zone,
        };
        *d = j.deny(Reason::Spoofed);
    }
}

/// The verdict of the inspection filter `filter` (0: none) of slot `slot` on a
/// client-to-server packet (see [`crate::inspect`]).
#[inline(always)]
fn inspect<T: Tables>(t: &T, slot: u8, filter: u32, p: &Packet) -> Option<Reason> {
    if filter == 0 {
        return None;
    }
    let key = FilterKey {
        slot: slot as u32,
        filter,
    };
    t.inspect(&key, p)
}

/// The failsafe table's entry for one of the gateway's own IPv6 addresses as a destination
/// of neighbour discovery (protocol ICMPv6, this "port"): NS and NA to the gateway's global
/// addresses pass as neighbour discovery.
pub const ND_OWN_ADDRESS: u16 = 0;

/// A link-local unicast (fe80::/10) or link-scope multicast (ff02::/16) IPv6 address: a
/// destination no router forwards.
#[inline(always)]
pub fn link_scoped(a: &[u8; 16]) -> bool {
    (a[0] == 0xfe && a[1] & 0xc0 == 0x80) || (a[0] == 0xff && a[1] & 0x0f == 0x02)
}

/// What the parser found in a frame (or what `explain` was told).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// [`KIND_IP`], [`KIND_ARP`] or [`KIND_OTHER`].
    pub kind: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`] for IP and ARP (ARP: always v4).
    pub family: u8,
    /// EtherType after any VLAN tags, host order.
    pub ethertype: u16,
    /// Source MAC of the Ethernet header.
    pub src_mac: [u8; 6],
    /// ARP: sender hardware address from the ARP body.
    pub arp_sha: [u8; 6],
    /// Source and destination address, network order, IPv4 in the first 4 bytes. ARP: sender
    /// and target protocol address.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// IP protocol (after IPv6 extension headers).
    pub proto: u8,
    /// 1 for a non-first IP fragment (no transport header to look at).
    pub fragment: u8,
    /// TCP/UDP source port; ICMP echo: the identifier.
    pub sport: u16,
    /// TCP/UDP destination port; ICMP/ICMPv6: type << 8 | code.
    pub dport: u16,
    /// TCP flags (`parse::TCP_*`).
    pub tcp_flags: u8,
    /// IPv4 TTL or IPv6 hop limit, as received (neighbour discovery needs 255: nothing
    /// routed).
    pub hop_limit: u8,
    /// TCP payload length in bytes (from the IP length, so Ethernet padding is not payload).
    pub payload_len: u16,
    /// The first bytes of the TCP payload, up to [`WINDOW`], zeros after the payload's end:
    /// what protocol inspection reads (`crate::inspect`). All zeros in the kernel when
    /// nothing reads it (`Settings::inspect` is 0 and the program does not learn).
    pub app: [u8; WINDOW],
    /// 1 for an ICMP/ICMPv6 error (unreachable, too big, time exceeded, parameter problem)
    /// whose quoted packet was sent by this packet's destination: the quoted packet's
    /// protocol, ports (echo: identifier twice) and destination below, so that the error can
    /// be tied to the flow it is about.
    pub icmp_error: u8,
    pub inner_proto: u8,
    pub inner_sport: u16,
    pub inner_dport: u16,
    pub inner_dst: [u8; 16],
    /// The interface the frame came in on (ifindex); 0 when not known (`explain` without
    /// `--in`): the interface checks are then not made.
    pub ifindex: u32,
    pub _pad: u32,
}

/// All zeros (written out: arrays longer than 32 have no derived `Default`).
impl Default for Packet {
    fn default() -> Self {
        Packet {
            kind: 0,
            family: 0,
            ethertype: 0,
            src_mac: [0; 6],
            arp_sha: [0; 6],
            src: [0; 16],
            dst: [0; 16],
            proto: 0,
            fragment: 0,
            sport: 0,
            dport: 0,
            tcp_flags: 0,
            hop_limit: 0,
            payload_len: 0,
            app: [0; WINDOW],
            icmp_error: 0,
            inner_proto: 0,
            inner_sport: 0,
            inner_dport: 0,
            inner_dst: [0; 16],
            ifindex: 0,
            _pad: 0,
        }
    }
}

impl Packet {
    /// The first packet of a flow as a host sends it, for judging a flow without a frame
    /// (`conduit explain`, `conduit discover`'s proof): from `src_mac`, `family`'s addresses
    /// `src` → `dst`, a TCP SYN, a UDP datagram or an ICMP message (`ports.1` holds its type
    /// << 8), or with `request` a TCP segment of an established connection carrying that one
    /// request.
    /// Neighbour discovery comes with hop limit 255 (RFC 4861), everything else with 64.
    pub fn first(
        family: u8,
        src_mac: [u8; 6],
        src: [u8; 16],
        dst: [u8; 16],
        proto: u8,
        ports: (u16, u16),
        request: Option<Request>,
    ) -> Packet {
        let v6 = family == FAMILY_V6;
        let nd = proto == PROTO_ICMPV6 && (133..=137).contains(&(ports.1 >> 8));
        let (payload_len, app) = request.map_or((0, [0; WINDOW]), |r| r.payload());
        Packet {
            kind: KIND_IP,
            family,
            ethertype: if v6 { 0x86dd } else { 0x0800 },
            src_mac,
            src,
            dst,
            proto,
            sport: ports.0,
            dport: ports.1,
            tcp_flags: match (proto, request) {
                (PROTO_TCP, None) => crate::parse::TCP_SYN,
                (PROTO_TCP, Some(_)) => crate::parse::TCP_ACK | crate::parse::TCP_PSH,
                _ => 0,
            },
            hop_limit: if nd { 255 } else { 64 },
            payload_len,
            app,
            // Not a fragment, not an ICMP error about another flow, no ingress interface.
            ..Packet::default()
        }
    }
}

pub const KIND_IP: u8 = 0;
pub const KIND_ARP: u8 = 1;
pub const KIND_OTHER: u8 = 2;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// The verdict on one frame and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: Reason,
    /// The conduit that allowed the frame, or [`NO_CONDUIT`].
    pub conduit: u32,
    pub src_zone: u32,
    pub dst_zone: u32,
    /// Whether the frame is worth an audit event (`log` of the conduit or of `defaults`).
    pub log: bool,
    /// How the frame relates to the flow table (`flow::FLOW_*`).
    pub flow: u8,
    /// The inspection filter of the rule that matched an allowed initiator's packet (new or
    /// established flow), 0 for none: kept in the flow for the fast path. A `u16` so that
    /// the struct has no padding: the BPF verifier rejects a copy whose padding bytes the
    /// compiler fills from a pointer register.
    pub filter: u16,
    /// The end of the conduit that allowed the frame as its flow keeps it (`expires`,
    /// [`ConduitHit::expires`], on the monotonic clock: [`flow_deadline`]), 0 for none,
    /// [`END_UNCACHED`] for an on-demand conduit: the fast path ends the flow on time
    /// without a lookup or a clock read.
    pub expires: u32,
}
const _: () = assert!(core::mem::size_of::<Decision>() == 28);
const _: () = assert!(MAX_FILTERS <= u16::MAX as u32);

/// Resolves an address: exact `ip` assets first, then the longest CIDR, else `unknown`.
#[inline(always)]
pub fn resolve<T: Tables>(t: &T, slot: u8, family: u8, addr: &[u8; 16]) -> Identity {
    let key = IpKey {
        slot,
        family,
        _pad: [0; 2],
        addr: *addr,
    };
    if let Some(id) = t.id_exact(&key) {
        return id;
    }
    if let Some(id) = t.id_cidr(&lpm_ip_data(slot, family, addr)) {
        return id;
    }
    Identity::default()
}

/// The LPM data of an address (all bits; entries carry shorter prefixes).
#[inline(always)]
pub fn lpm_ip_data(slot: u8, family: u8, addr: &[u8; 16]) -> LpmIpData {
    let mut d = [0u8; 18];
    d[0] = slot;
    d[1] = family;
    let mut i = 0;
    while i < 16 {
        d[2 + i] = addr[i];
        i += 1;
    }
    d
}

/// The LPM data of a conduit lookup.
#[inline(always)]
pub fn lpm_conduit_data(slot: u8, src: u32, dst: u32, proto: u8, port: u16) -> LpmConduitData {
    let s = src.to_be_bytes();
    let d = dst.to_be_bytes();
    let p = port.to_be_bytes();
    [
        slot, s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3], proto, p[0], p[1],
    ]
}

/// The conduit whose rule matches, trying the narrowest principals first: asset to asset,
/// asset to zone, zone to asset, zone to zone. At most four lookups, whatever the policy size.
#[inline(always)]
pub fn find_conduit<T: Tables>(
    t: &T,
    slot: u8,
    src: &Identity,
    dst: &Identity,
    proto: u8,
    port: u16,
) -> Option<ConduitHit> {
    let look = |s: u32, d: u32| t.conduit(&lpm_conduit_data(slot, s, d, proto, port));
    if src.principal != 0 {
        if dst.principal != 0
            && let Some(h) = look(src.principal, dst.principal)
        {
            return Some(h);
        }
        if let Some(h) = look(src.principal, dst.zone) {
            return Some(h);
        }
    }
    if dst.principal != 0
        && let Some(h) = look(src.zone, dst.principal)
    {
        return Some(h);
    }
    look(src.zone, dst.zone)
}

/// Whether a conduit's end (`expires`; 0: none) has come.
#[inline(always)]
pub fn ended<T: Tables>(t: &T, expires: u32) -> bool {
    expires != 0 && t.now_tai_ns() >= u64::from(expires) * NS_PER_S
}

const NS_PER_S: u64 = 1_000_000_000;

/// A flow's end ([`FlowVal::expires`]) counts CLOCK_MONOTONIC (coarse) in units of 2^28 ns
/// (0.27 s; a `u32` lasts 36 years of uptime), the clock the fast path reads anyway: checking
/// it costs a comparison, not a clock read.
pub const FLOW_END_SHIFT: u32 = 28;

/// The end a flow keeps for the conduit end `end` (TAI seconds; 0: none, or
/// [`END_UNCACHED`]), judged at `now` (CLOCK_MONOTONIC ns): the same instant on the monotonic
/// clock, rounded down, so that the fast path ends the flow no later than `end` (and at most
/// 0.27 s earlier). The full path judges every packet with the TAI clock again, after a
/// reload or when the fast path no longer applies.
#[inline(always)]
pub fn flow_deadline<T: Tables>(t: &T, end: u32, now: u64) -> u32 {
    if end <= END_UNCACHED {
        return end;
    }
    let left = (u64::from(end) * NS_PER_S).saturating_sub(t.now_tai_ns());
    // An end beyond what a `u32` holds (36 years of uptime) is kept as the last one it holds:
    // earlier than the real end, so the fast path hands the flow to the full path then, which
    // judges it by `end` itself. Never one of the special values (only within the first
    // second of uptime).
    let units = now.saturating_add(left) >> FLOW_END_SHIFT;
    (units.min(u64::from(u32::MAX)) as u32).max(END_UNCACHED + 1)
}

/// Whether a flow's end (as [`flow_deadline`] made it; 0: none) has come at `now`.
#[inline(always)]
pub fn flow_ended(end: u32, now: u64) -> bool {
    end != 0 && (now >> FLOW_END_SHIFT) as u32 >= end
}

/// The end a flow of an on-demand conduit keeps ([`Decision::expires`]): one that has always
/// passed, so that the fast path never serves such a flow and each of its packets is judged
/// with the conduit's grant (a revoke closes open sessions at once). On-demand access is a
/// person's session, not a production flow: it pays the full path.
pub const END_UNCACHED: u32 = 1;

/// Why a conduit that exists allows nothing now: it has ended (`expires`), or it is on demand
/// and no grant opens it.
#[inline(always)]
fn closed<T: Tables>(t: &T, slot: u8, conduit: u32, flags: u8, expires: u32) -> Option<Reason> {
    if ended(t, expires) {
        Some(Reason::Expired)
    } else if flags & CONDUIT_ON_DEMAND != 0
        && !t.granted(&ConduitKey {
            slot: slot as u32,
            conduit,
        })
    {
        Some(Reason::NotGranted)
    } else {
        None
    }
}

/// The end a decision by a conduit hands to its flow: the conduit's own, or [`END_UNCACHED`]
/// for an on-demand conduit.
#[inline(always)]
fn flow_end(flags: u8, expires: u32) -> u32 {
    if flags & CONDUIT_ON_DEMAND != 0 {
        END_UNCACHED
    } else {
        expires
    }
}

/// A conduit of the slot that allows traffic now: the end its flows keep
/// ([`flow_end`]); `Err(Some(reason))` when it is closed ([`closed`]), `Err(None)` when the
/// slot has no such conduit.
#[inline(always)]
fn live_conduit<T: Tables>(t: &T, slot: u8, conduit: u32) -> Result<u32, Option<Reason>> {
    match t.conduit_info(&ConduitKey {
        slot: slot as u32,
        conduit,
    }) {
        Some(i) => match closed(t, slot, conduit, i.flags, i.expires) {
            Some(r) => Err(Some(r)),
            None => Ok(flow_end(i.flags, i.expires)),
        },
        None => Err(None),
    }
}

/// What every verdict of one frame shares: the tables, the slot, its settings, the zones.
struct Judge<'a, T> {
    t: &'a T,
    slot: u8,
    settings: Settings,
    src_zone: u32,
    dst_zone: u32,
}

impl<T: Tables> Judge<'_, T> {
    /// The mode for traffic into the destination zone: monitor turns a deny into would-deny.
    #[inline(always)]
    fn monitored(&self) -> bool {
        if self.dst_zone == ZONE_UNKNOWN {
            return self.settings.unknown_mode == MODE_MONITOR;
        }
        match self.t.zone(&ZoneKey {
            slot: self.slot as u32,
            zone: self.dst_zone,
        }) {
            Some(cfg) => cfg.mode == MODE_MONITOR,
            None => self.settings.unknown_mode == MODE_MONITOR,
        }
    }

    /// A packet from `src` to `dst` that answers flow `v` (a reply, or an ICMP error about
    /// one of its packets), if `v` is a flow that a monitor-mode zone let through: it passes
    /// as well (would-deny, reason `reply`) while that zone, the packet's source, is still in
    /// monitor mode.
    #[inline(always)]
    fn monitor_reply(&self, v: &FlowVal, src: &Identity, dst: &Identity) -> Option<Decision> {
        let origin = Judge {
            t: self.t,
            slot: self.slot,
            settings: self.settings,
            src_zone: dst.zone,
            dst_zone: src.zone,
        };
        if v.state & FLOW_MONITOR == 0 || !origin.monitored() {
            return None;
        }
        let mut d = self.deny(Reason::Reply);
        d.verdict = Verdict::WouldDeny;
        Some(d)
    }

    #[inline(always)]
    fn allow(&self, reason: Reason, conduit: Option<ConduitHit>) -> Decision {
        // `log: all` logs allowed traffic too: the conduit's setting, else `defaults.log`.
        let (conduit, log, expires) = match conduit {
            Some(h) => (
                h.conduit,
                u32::from(h.log) == LOG_ALL,
                flow_end(h.flags, h.expires),
            ),
            None => (NO_CONDUIT, self.settings.log == LOG_ALL, 0),
        };
        Decision {
            verdict: Verdict::Allow,
            reason,
            conduit,
            src_zone: self.src_zone,
            dst_zone: self.dst_zone,
            log,
            flow: FLOW_NONE,
            filter: 0,
            expires,
        }
    }

    #[inline(always)]
    fn deny(&self, reason: Reason) -> Decision {
        let verdict = if self.monitored() {
            Verdict::WouldDeny
        } else {
            Verdict::Deny
        };
        Decision {
            verdict,
            reason,
            conduit: NO_CONDUIT,
            src_zone: self.src_zone,
            dst_zone: self.dst_zone,
            log: self.settings.log != LOG_NONE,
            flow: FLOW_NONE,
            filter: 0,
            expires: 0,
        }
    }

    /// A denial by a conduit's own filter (protocol inspection): the conduit is named, so that
    /// the drop is counted per conduit, and the conduit's `log` decides the audit event.
    #[inline(always)]
    fn deny_by(&self, reason: Reason, hit: &ConduitHit) -> Decision {
        let mut d = self.deny(reason);
        d.conduit = hit.conduit;
        d.log = u32::from(hit.log) != LOG_NONE;
        d
    }

    #[inline(always)]
    fn either(&self, allow: bool, yes: Reason, no: Reason) -> Decision {
        if allow {
            self.allow(yes, None)
        } else {
            self.deny(no)
        }
    }
}

fn settings_of<T: Tables>(t: &T, slot: u8) -> Settings {
    match t.settings(slot as u32) {
        Some(s) if s.valid == 1 => s,
        // No policy in this slot: deny everything (fail closed).
        _ => Settings::default(),
    }
}

/// The verdict for a frame the parser could not make sense of: malformed, denied (or
/// would-deny when `defaults.mode` is monitor). Fail closed.
#[inline(always)]
pub fn malformed<T: Tables>(t: &T, slot: u8) -> Decision {
    let j = Judge {
        t,
        slot,
        settings: settings_of(t, slot),
        src_zone: ZONE_UNKNOWN,
        dst_zone: ZONE_UNKNOWN,
    };
    j.deny(Reason::Malformed)
}

/// Judges a frame: identity and binding checks, fragments, then the flow table (packets of
/// known flows and their replies), then the conduits and the intra-zone rule. `now` is
/// CLOCK_MONOTONIC in ns (the kernel reads the coarse clock, `bpf_ktime_get_coarse_ns`), for
/// flow expiry.
///
/// The interface checks ([`check_ingress`]) need the ingress interface and the routing
/// table: [`decide_at`] makes them; here the packet's `ifindex` must be 0 (not known).
#[inline(always)]
pub fn decide<T: Tables>(t: &T, slot: u8, p: &Packet, now: u64) -> Decision {
    decide_with(t, slot, p, now, false)
}

/// [`decide`] for a frame that came in by `p.ifindex`, with the interface checks that the
/// kernel program makes ([`check_ingress`] against `fib`).
#[inline(always)]
pub fn decide_at<T: Tables, F: Fib>(t: &T, fib: &F, slot: u8, p: &Packet, now: u64) -> Decision {
    let mut d = decide_with(t, slot, p, now, false);
    check_ingress(t, fib, slot, p, &mut d);
    d
}

/// [`decide`], told by the fast path that the flow table has no entry under the packet's key
/// nor (for a reply-shaped packet) under its reply's key (`no_flow`): the flow lookups, which
/// would miss, are left out. Same answer.
#[inline(always)]
pub fn decide_with<T: Tables>(t: &T, slot: u8, p: &Packet, now: u64, no_flow: bool) -> Decision {
    let settings = settings_of(t, slot);
    if settings.valid != 1 {
        // No policy in this slot: nothing passes (fail closed).
        let j = Judge {
            t,
            slot,
            settings,
            src_zone: ZONE_UNKNOWN,
            dst_zone: ZONE_UNKNOWN,
        };
        return j.deny(Reason::NoConduit);
    }
    if p.kind == KIND_OTHER {
        let j = Judge {
            t,
            slot,
            settings,
            src_zone: ZONE_UNKNOWN,
            dst_zone: ZONE_UNKNOWN,
        };
        let key = EtherTypeKey {
            slot: slot as u16,
            ethertype: p.ethertype,
        };
        let allow = settings.l2_allow == 1 || t.l2_allowed(&key);
        return j.either(allow, Reason::L2Allowed, Reason::L2Denied);
    }
    let src = resolve(t, slot, p.family, &p.src);
    let dst = resolve(t, slot, p.family, &p.dst);
    let j = Judge {
        t,
        slot,
        settings,
        src_zone: src.zone,
        dst_zone: dst.zone,
    };

    if p.kind == KIND_ARP {
        return arp(&j, &src, p);
    }
    if let Some(d) = guards(&j, &src, p) {
        return d;
    }
    if p.icmp_error == 1
        && let Some(d) = icmp_error(&j, &src, &dst, p, now)
    {
        return d;
    }
    let tracked = tracked(p);
    if tracked
        && !no_flow
        && let Some(d) = known_flow(&j, &src, &dst, p, now)
    {
        return d;
    }
    new_flow(&j, &src, &dst, p, now, tracked)
}

/// [`decide_with`] for ARP: a sender that claims an address bound to another MAC, or a bound
/// MAC that claims another address, is ARP poisoning; else ARP passes.
#[inline(always)]
fn arp<T: Tables>(j: &Judge<'_, T>, src: &Identity, p: &Packet) -> Decision {
    let (t, slot, settings) = (j.t, j.slot, j.settings);
    // The sender claims an address bound to another MAC: ARP poisoning.
    if src.flags & IDENT_MAC_BOUND != 0 && (src.mac != p.arp_sha || src.mac != p.src_mac) {
        return j.deny(Reason::ArpSpoof);
    }
    // A bound device claims an address that is not its own (the gateway's, an unused
    // one, another unbound host's): the same poisoning, seen from the MAC's side. An ARP
    // probe (RFC 5227: sender address 0.0.0.0) claims nothing.
    if settings.skip & SKIP_MACS == 0 && p.src[..4] != [0, 0, 0, 0] {
        let mut i = 0;
        while i < 2 {
            let mac = if i == 0 { p.arp_sha } else { p.src_mac };
            if let Some(b) = t.mac(&MacKey { slot, _pad: 0, mac })
                && b.family == FAMILY_V4
                && b.addr != p.src
            {
                return j.deny(Reason::ArpSpoof);
            }
            i += 1;
        }
    }
    j.allow(Reason::Arp, None)
}

/// [`decide_with`]'s checks before any flow or conduit: the failsafe, MAC/IP binding,
/// fragments, neighbour discovery. `Some` decides the frame.
#[inline(always)]
fn guards<T: Tables>(j: &Judge<'_, T>, src: &Identity, p: &Packet) -> Option<Decision> {
    let (t, slot, settings) = (j.t, j.slot, j.settings);
    // The operator's way in to the gateway itself is never blocked (and its replies leave
    // through the egress path, which XDP does not see).
    if settings.skip & SKIP_FAILSAFE == 0
        && matches!(p.proto, PROTO_TCP | PROTO_UDP)
        && p.fragment == 0
    {
        let key = FailsafeKey {
            slot,
            family: p.family,
            proto: p.proto,
            _pad: 0,
            port: p.dport,
            _pad2: 0,
            addr: p.dst,
        };
        if t.failsafe(&key) {
            return Some(j.allow(Reason::Failsafe, None));
        }
    }

    // MAC/IP binding, both ways (the MAC side only within the bound address's family).
    if src.flags & IDENT_MAC_BOUND != 0 && src.mac != p.src_mac {
        return Some(j.deny(Reason::Spoofed));
    }
    if settings.skip & SKIP_MACS == 0
        && let Some(b) = t.mac(&MacKey {
            slot,
            _pad: 0,
            mac: p.src_mac,
        })
        && b.family == p.family
        && b.addr != p.src
    {
        return Some(j.deny(Reason::Spoofed));
    }

    if p.fragment != 0 {
        return Some(j.either(
            settings.fragments_allow == 1,
            Reason::Fragment,
            Reason::Fragment,
        ));
    }

    // Neighbour discovery keeps working whatever the conduits say, but only as neighbour
    // discovery (RFC 4861): hop limit 255 (sent on this link, never routed) and addressed
    // to a link-local address, a link-scope multicast group (all-nodes, all-routers,
    // solicited-node) or the gateway itself. Anything else of types 133-137 is judged like
    // any other ICMPv6 (it would otherwise be a channel between zones).
    if p.proto == PROTO_ICMPV6
        && (133..=137).contains(&((p.dport >> 8) as u8))
        && p.hop_limit == 255
        && (link_scoped(&p.dst)
            || t.failsafe(&FailsafeKey {
                slot,
                family: p.family,
                proto: PROTO_ICMPV6,
                _pad: 0,
                port: ND_OWN_ADDRESS,
                _pad2: 0,
                addr: p.dst,
            }))
    {
        return Some(j.allow(Reason::NeighborDiscovery, None));
    }
    None
}

/// An ICMP error about a packet of a live flow (port unreachable, fragmentation needed,
/// time exceeded) goes back to the flow's initiator as part of the flow: a reply.
#[inline(always)]
fn icmp_error<T: Tables>(
    j: &Judge<'_, T>,
    src: &Identity,
    dst: &Identity,
    p: &Packet,
    now: u64,
) -> Option<Decision> {
    let (t, slot) = (j.t, j.slot);
    let key = FlowKey {
        family: p.family,
        proto: p.inner_proto,
        _pad: [0; 2],
        sport: p.inner_sport,
        dport: p.inner_dport,
        src: p.dst,
        dst: p.inner_dst,
    };
    if let Some(v) = t.flow(&key)
        && alive(&v, p.inner_proto, now)
    {
        if v.state & FLOW_MONITOR == 0 && live_conduit(t, slot, v.conduit).is_ok() {
            let mut d = j.allow(Reason::Reply, None);
            d.conduit = v.conduit;
            return Some(d);
        }
        // About a flow that a monitor-mode zone let through: a reply as well, as the flow's
        // replies are (path MTU discovery of an observed flow keeps working).
        if let Some(d) = j.monitor_reply(&v, src, dst) {
            return Some(d);
        }
    }
    None
}

/// [`decide_with`] for a packet of a live flow (its own key) or a reply (the swapped key).
#[inline(always)]
fn known_flow<T: Tables>(
    j: &Judge<'_, T>,
    src: &Identity,
    dst: &Identity,
    p: &Packet,
    now: u64,
) -> Option<Decision> {
    let (t, slot, settings) = (j.t, j.slot, j.settings);
    // A live flow's conduit, if it is live: its end.
    let live = |v: &FlowVal| {
        if alive(v, p.proto, now) && v.state & FLOW_MONITOR == 0 {
            live_conduit(t, slot, v.conduit).ok()
        } else {
            None
        }
    };
    // A packet of a live flow passes only while the live policy still allows the flow
    // (its conduit, and a rule of it for the flow's protocol and port): a reload that
    // narrows a conduit (a port out of a rule, `sources` cut) ends the open sessions it
    // no longer allows, in both directions. The full path runs once per flow and
    // direction after a reload; the fast path then caches the answer.
    if let Some(v) = t.flow(&flow_key(p, false))
        && let Some(end) = live(&v)
        && let Some(hit) = find_conduit(t, slot, src, dst, p.proto, flow_port(p, false))
    {
        // In a policy with inspection filters, the live policy's filter judges every
        // client-to-server segment with data (so a reload that narrows a conduit to
        // read-only applies to sessions already open).
        let mut filter = 0;
        if settings.inspect == 1 && p.proto == PROTO_TCP {
            filter = hit.filter as u16;
            if let Some(reason) = inspect(t, slot, hit.filter, p) {
                let mut d = j.deny_by(reason, &hit);
                if d.verdict == Verdict::WouldDeny {
                    d.flow = FLOW_FWD;
                }
                return Some(d);
            }
        }
        let mut d = j.allow(Reason::Conduit, None);
        d.conduit = v.conduit;
        d.flow = FLOW_FWD;
        d.filter = filter;
        d.expires = flow_deadline(t, end, now);
        return Some(d);
    }
    if reply_shaped(p)
        && let Some(v) = t.flow(&flow_key(p, true))
        && alive(&v, p.proto, now)
    {
        if let Some(end) = live(&v)
            && find_conduit(t, slot, dst, src, p.proto, flow_port(p, true)).is_some()
        {
            let mut d = j.allow(Reason::Reply, None);
            d.conduit = v.conduit;
            d.flow = FLOW_REV;
            d.expires = flow_deadline(t, end, now);
            return Some(d);
        }
        // The reply of a flow whose conduit has ended or lost its grant: nothing passes
        // any more.
        if v.state & FLOW_MONITOR == 0
            && let Err(Some(reason)) = live_conduit(t, slot, v.conduit)
        {
            let mut d = j.deny(reason);
            d.conduit = v.conduit;
            return Some(d);
        }
        // The reply of a flow that a monitor-mode zone let through.
        if let Some(mut d) = j.monitor_reply(&v, src, dst) {
            d.flow = FLOW_REV;
            return Some(d);
        }
    }
    None
}

/// [`decide_with`] for the first packet of a flow: its conduit, else the intra-zone rule,
/// else denied (tracked in monitor mode, so that its replies pass too).
#[inline(always)]
fn new_flow<T: Tables>(
    j: &Judge<'_, T>,
    src: &Identity,
    dst: &Identity,
    p: &Packet,
    now: u64,
    tracked: bool,
) -> Decision {
    let (t, slot, settings) = (j.t, j.slot, j.settings);
    // A source that no conduit leaves (the compiler marks its identity; `unknown` in the
    // settings) needs no conduit lookup: a scan or a flood from it stops here.
    let conduits_from = if src.zone == ZONE_UNKNOWN {
        settings.skip & SKIP_FROM_UNKNOWN == 0
    } else {
        src.flags & IDENT_NO_CONDUIT == 0
    };
    if conduits_from && let Some(hit) = find_conduit(t, slot, src, dst, p.proto, p.dport) {
        // A conduit that has ended, or an on-demand one without a grant, allows nothing (in
        // monitor mode its flow is tracked, as any would-deny flow is, so that its replies
        // pass too).
        if let Some(reason) = closed(t, slot, hit.conduit, hit.flags, hit.expires) {
            let mut d = j.deny_by(reason, &hit);
            if d.verdict == Verdict::WouldDeny && tracked {
                d.flow = FLOW_NEW;
            }
            return d;
        }
        if let Some(reason) = inspect(t, slot, hit.filter, p) {
            return j.deny_by(reason, &hit);
        }
        let mut d = j.allow(Reason::Conduit, Some(hit));
        d.expires = flow_deadline(t, d.expires, now);
        if tracked {
            d.flow = FLOW_NEW;
            // What the established path finds for the flow's next packets.
            if settings.inspect == 1 && p.proto == PROTO_TCP {
                d.filter = hit.filter as u16;
            }
        }
        return d;
    }

    if src.zone == dst.zone && src.zone != ZONE_UNKNOWN {
        let intra = t
            .zone(&ZoneKey {
                slot: slot as u32,
                zone: src.zone,
            })
            .map(|z| z.intra);
        if intra == Some(INTRA_ALLOW) {
            return j.allow(Reason::IntraZone, None);
        }
    }
    let mut d = j.deny(Reason::NoConduit);
    if d.verdict == Verdict::WouldDeny && tracked {
        // Monitor mode: track the flow so that its replies pass too (production traffic
        // flows untouched while it is observed).
        d.flow = FLOW_NEW;
    }
    d
}

/// The flow table with in-place access, for [`fast_path`]: the kernel's LRU hash map, or the
/// reference model's ordered map.
pub trait FlowTable {
    /// Runs `f` on the flow stored under `key` and returns its answer; `None` when there is
    /// no such flow.
    fn with_flow<R>(&mut self, key: &FlowKey, f: impl FnOnce(&mut FlowVal) -> R) -> Option<R>;
}

impl Decision {
    /// A starting value that fails closed (deny, malformed), for code that fills a decision
    /// in place.
    pub const FAIL_CLOSED: Decision = Decision {
        verdict: Verdict::Deny,
        reason: Reason::Malformed,
        conduit: NO_CONDUIT,
        src_zone: ZONE_UNKNOWN,
        dst_zone: ZONE_UNKNOWN,
        log: false,
        flow: FLOW_NONE,
        filter: 0,
        expires: 0,
    };
}

/// The fast path: a packet of a flow whose direction already has a verdict under the live
/// policy `generation` (see [`crate::flow::next_state`]). Writes to `out` exactly what
/// [`decide`] would return, updates the flow as the full path would, with one flow lookup
/// (two for a reply), and returns [`Fast::Decided`]; otherwise `out` is untouched and the
/// full decision must run: [`Fast::NoFlow`] when no flow exists under the keys `decide`
/// would look up, [`Fast::Full`] for no verdict cached for this generation, another source
/// MAC, an expired flow, a fragment, a reset, an ICMP error, or an inspected segment that the
/// filter would not let through. (An out-parameter, not an `Option`: the BPF verifier rejects the
/// niche-encoded copies the compiler makes of an `Option<Decision>`.)
///
/// Why the cached verdict is [`decide`]'s: every step before the flow lookup in [`decide`]
/// depends only on the policy (the generation), the flow's addresses, ports and protocol
/// (the key) and the source MAC, and [`check_ingress`] on the ingress interface (both
/// cached per direction; a route change after the verdict does not move an open flow to
/// another interface's check, see the README); the flow's conduit was live under
/// this generation when the verdict was cached; what remains (expiry, inspection of
/// the initiator's data) is checked here on every packet.
#[inline(always)]
pub fn fast_path<T: Tables, F: FlowTable>(
    t: &T,
    flows: &mut F,
    slot: u8,
    generation: u64,
    p: &Packet,
    now: u64,
    out: &mut Decision,
) -> Fast {
    if p.kind != KIND_IP
        || p.fragment != 0
        || p.icmp_error != 0
        || !tracked(p)
        || (p.proto == PROTO_TCP && p.tcp_flags & TCP_RST != 0)
    {
        return Fast::Full;
    }
    let settings = settings_of(t, slot);
    if settings.valid != 1 {
        return Fast::Full;
    }
    let of = |hit: Hit| match hit {
        Hit::No => Fast::Full,
        Hit::Yes => Fast::Decided,
        Hit::Learn => Fast::Learn,
    };
    // The order of `decide`: the packet's own key first, then (for a reply) the swapped one.
    if let Some(hit) = flows.with_flow(&flow_key(p, false), |v| {
        cached(t, slot, generation, &settings, p, v, FLOW_FWD, now, out)
    }) {
        return of(hit);
    }
    if !reply_shaped(p) {
        return Fast::NoFlow;
    }
    match flows.with_flow(&flow_key(p, true), |v| {
        cached(t, slot, generation, &settings, p, v, FLOW_REV, now, out)
    }) {
        Some(hit) => of(hit),
        None => Fast::NoFlow,
    }
}

/// What [`fast_path`] did.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fast {
    /// It decided: the decision is in `out`.
    Decided = 1,
    /// The flow table has nothing for the packet: [`decide_with`] may skip the flow lookups.
    NoFlow = 2,
    /// The full decision must run as it is.
    Full = 3,
    /// It decided, and the packet is a Modbus/TCP request that a learning datapath records
    /// (`crate::learn`: the flow has [`FLOW_LEARN_MODBUS`], and the request's unit and function
    /// differ from the last learned). Only a datapath loaded for learning opens such flows.
    Learn = 4,
}

/// The cached verdict of flow `v` for a packet in direction `dir` ([`FLOW_FWD`] or
/// [`FLOW_REV`]), if it still holds: written to `out`, and the flow updated.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn cached<T: Tables>(
    t: &T,
    slot: u8,
    generation: u64,
    settings: &Settings,
    p: &Packet,
    v: &mut FlowVal,
    dir: u8,
    now: u64,
    out: &mut Decision,
) -> Hit {
    let (bit, mac, ifindex) = if dir == FLOW_FWD {
        (CACHE_FWD, &v.mac_fwd, v.if_fwd)
    } else {
        (CACHE_REV, &v.mac_rev, v.if_rev)
    };
    if v.generation != generation
        || v.cached & bit == 0
        || *mac != p.src_mac
        || ifindex != p.ifindex
        || v.state & FLOW_MONITOR != 0
        || !alive(v, p.proto, now)
        || flow_ended(v.expires, now)
    {
        return Hit::No;
    }
    let mut d = Decision {
        verdict: Verdict::Allow,
        reason: Reason::Conduit,
        conduit: v.conduit,
        src_zone: v.src_zone,
        dst_zone: v.dst_zone,
        log: settings.log == LOG_ALL,
        flow: dir,
        filter: 0,
        expires: v.expires,
    };
    let mut learn = false;
    if dir == FLOW_FWD {
        d.filter = v.filter as u16;
        if inspect(t, slot, v.filter, p).is_some() {
            // Denied by the filter: the full path says how and counts it.
            return Hit::No;
        }
        // A learning flow's Modbus request other than the last one learned.
        if v.state & FLOW_LEARN_MODBUS != 0
            && let Some((unit, f)) = crate::inspect::modbus::request(p)
            && v.learned != [unit, f]
        {
            v.learned = [unit, f];
            learn = true;
        }
    } else {
        d.reason = Reason::Reply;
        d.src_zone = v.dst_zone;
        d.dst_zone = v.src_zone;
    }
    if let Some(n) = next_state(&d, p, v, now, generation) {
        *v = n;
    }
    *out = d;
    if learn { Hit::Learn } else { Hit::Yes }
}

/// What [`cached`] found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hit {
    /// The cached verdict does not hold: the full path decides.
    No,
    Yes,
    /// It holds, and the packet is a Modbus request to learn ([`Fast::Learn`]).
    Learn,
}
