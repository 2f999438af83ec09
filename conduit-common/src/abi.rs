//! Map names, key and value layouts, and stable numberings shared with the kernel.
//!
//! Changing a layout means a new map name (`..._V2`), never a silent reinterpretation.

/// The maps the agent pins (under `PIN_DIR/maps/NAME`) so that enforcement, flows and
/// counters outlive the agent process. Everything but the test-only trace.
pub const PINNED_MAPS: &[&str] = &[
    MAP_TOTALS,
    MAP_ACTIVE,
    MAP_SETTINGS,
    MAP_ID_EXACT,
    MAP_ID_CIDR,
    MAP_MAC,
    MAP_CONDUITS,
    MAP_FILTERS,
    MAP_ZONES,
    MAP_LIVE,
    MAP_GRANTS,
    MAP_L2,
    MAP_FAILSAFE,
    MAP_ZONE_IFS,
    MAP_INGRESS,
    crate::flow::MAP_FLOWS4,
    crate::flow::MAP_FLOWS6,
    MAP_CONDUIT_STATS,
    MAP_DROPS,
    MAP_CONDUIT_DROPS,
    MAP_EVENTS,
    MAP_EVENT_RATE,
    MAP_EVENT_STATS,
    MAP_EVENT_BUDGET,
    crate::learn::MAP_LEARN,
    crate::learn::MAP_LEARN_MODBUS,
    crate::learn::MAP_LEARN_STATS,
];

/// Name of the XDP program in the object file (the function name in `conduit-ebpf`).
pub const PROGRAM_NAME: &str = "conduit_xdp";

/// Per-CPU array of [`Counter`], indexed by [`Verdict`]: every frame the program judged.
pub const MAP_TOTALS: &str = "CDT_TOTALS";
/// Number of slots in [`MAP_TOTALS`] (one per [`Verdict`]).
pub const TOTALS_LEN: u32 = 3;

/// What the program did with a frame. Stored as its `u32` index in [`MAP_TOTALS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// Passed because the policy allows it.
    Allow = 0,
    /// Dropped (enforce mode).
    Deny = 1,
    /// Passed although the policy denies it (monitor mode), counted as such.
    WouldDeny = 2,
}

impl Verdict {
    pub const ALL: [Verdict; 3] = [Verdict::Allow, Verdict::Deny, Verdict::WouldDeny];

    /// The stable name used in the CLI, metrics and audit log.
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::WouldDeny => "would_deny",
        }
    }
}

impl TryFrom<u32> for Verdict {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        match v {
            0 => Ok(Verdict::Allow),
            1 => Ok(Verdict::Deny),
            2 => Ok(Verdict::WouldDeny),
            other => Err(other),
        }
    }
}

/// Packets and bytes, host byte order. One per CPU in per-CPU maps; userspace sums them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Counter>() == 16);
const _: () = assert!(core::mem::align_of::<Counter>() == 8);

impl Counter {
    #[inline(always)]
    pub fn add(&mut self, bytes: u64) {
        self.packets = self.packets.wrapping_add(1);
        self.bytes = self.bytes.wrapping_add(bytes);
    }
}

/// Why a frame got its verdict. A stable numbering: append, never renumber; the names are
/// the `reason` values of SPEC §2 and are never renamed.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    Conduit = 0,
    IntraZone = 1,
    Reply = 2,
    Failsafe = 3,
    NoConduit = 4,
    Spoofed = 5,
    ArpSpoof = 6,
    Fragment = 7,
    Malformed = 8,
    L2Denied = 9,
    /// A non-IP frame allowed by `defaults.l2` (extension of SPEC §2's list).
    L2Allowed = 10,
    /// An ARP frame that is not spoofed (SPEC §1 "Other ARP frames pass").
    Arp = 11,
    /// IPv6 neighbour discovery (ICMPv6 133..=137), kept working whatever the conduits say.
    NeighborDiscovery = 12,
    /// A Modbus/TCP request whose function code the conduit's rule does not allow.
    ModbusFunction = 13,
    /// A Modbus/TCP request to a unit ID the conduit's rule does not allow.
    ModbusUnit = 14,
    /// A packet of a conduit that has ended (`expires`, SPEC §8): it allows nothing any more,
    /// new flows or established ones.
    Expired = 15,
    /// A packet of an on-demand conduit (`on_demand`, SPEC §8) that no open grant opens: it
    /// was never granted, its grant ended or was revoked.
    NotGranted = 16,
    /// A DNP3 request whose application function code the conduit's rule does not allow
    /// (SPEC §9).
    Dnp3Function = 17,
    /// A DNP3 frame to an outstation link address the conduit's rule does not list.
    Dnp3Address = 18,
    /// An EtherNet/IP request whose CIP service the conduit's rule does not allow (SPEC §9).
    EnipService = 19,
}

impl Reason {
    pub const ALL: [Reason; 20] = [
        Reason::Conduit,
        Reason::IntraZone,
        Reason::Reply,
        Reason::Failsafe,
        Reason::NoConduit,
        Reason::Spoofed,
        Reason::ArpSpoof,
        Reason::Fragment,
        Reason::Malformed,
        Reason::L2Denied,
        Reason::L2Allowed,
        Reason::Arp,
        Reason::NeighborDiscovery,
        Reason::ModbusFunction,
        Reason::ModbusUnit,
        Reason::Expired,
        Reason::NotGranted,
        Reason::Dnp3Function,
        Reason::Dnp3Address,
        Reason::EnipService,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Conduit => "conduit",
            Reason::IntraZone => "intra_zone",
            Reason::Reply => "reply",
            Reason::Failsafe => "failsafe",
            Reason::NoConduit => "no_conduit",
            Reason::Spoofed => "spoofed",
            Reason::ArpSpoof => "arp_spoof",
            Reason::Fragment => "fragment",
            Reason::Malformed => "malformed",
            Reason::L2Denied => "l2_denied",
            Reason::L2Allowed => "l2_allowed",
            Reason::Arp => "arp",
            Reason::NeighborDiscovery => "neighbor_discovery",
            Reason::ModbusFunction => "modbus_function",
            Reason::ModbusUnit => "modbus_unit",
            Reason::Expired => "expired",
            Reason::NotGranted => "not_granted",
            Reason::Dnp3Function => "dnp3_function",
            Reason::Dnp3Address => "dnp3_address",
            Reason::EnipService => "enip_service",
        }
    }
}

impl TryFrom<u32> for Reason {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        Reason::ALL.get(v as usize).copied().ok_or(v)
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `Counter` is `#[repr(C)]`, made of two `u64`s, with no padding and no invalid bit
    // patterns.
    unsafe impl aya::Pod for super::Counter {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_budget_refills_at_its_rate_and_keeps_fractions() {
        const MS: u64 = 1_000_000;
        let mut b = EventBudget::default();
        let t0 = 5_000 * MS;
        // A second or more since the last refill: a full burst.
        let granted = (0..3 * EVENT_BUDGET_PER_SEC).filter(|_| b.take(t0)).count() as u64;
        assert_eq!(granted, EVENT_BUDGET_PER_SEC);
        assert!(!b.take(t0));
        // 2,000 per second: 2 per millisecond, also when asked every 0.4 ms (the remainder
        // is kept, not lost).
        let mut got = 0;
        for i in 1..=10 {
            let now = t0 + i * 4 * MS / 10;
            while b.take(now) {
                got += 1;
            }
        }
        assert_eq!(got, 8, "4 ms at 2 per ms");
        // Never more than the burst, however long the pause.
        let later = t0 + 3_600_000 * MS;
        let granted = (0..3 * EVENT_BUDGET_PER_SEC)
            .filter(|_| b.take(later))
            .count() as u64;
        assert_eq!(granted, EVENT_BUDGET_PER_SEC);
    }

    #[test]
    fn reason_numbering_is_stable() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as u32, i as u32);
            assert_eq!(Reason::try_from(i as u32), Ok(*r));
        }
        assert_eq!(Reason::try_from(Reason::ALL.len() as u32), Err(20));
        // The names are part of SPEC §2 (and the README's extensions) and must never change.
        let names: [&str; 20] = Reason::ALL.map(Reason::as_str);
        assert_eq!(
            names,
            [
                "conduit",
                "intra_zone",
                "reply",
                "failsafe",
                "no_conduit",
                "spoofed",
                "arp_spoof",
                "fragment",
                "malformed",
                "l2_denied",
                "l2_allowed",
                "arp",
                "neighbor_discovery",
                "modbus_function",
                "modbus_unit",
                "expired",
                "not_granted",
                "dnp3_function",
                "dnp3_address",
                "enip_service"
            ]
        );
    }

    #[test]
    fn verdict_roundtrip() {
        for v in Verdict::ALL {
            assert_eq!(Verdict::try_from(v as u32), Ok(v));
        }
        assert_eq!(Verdict::try_from(TOTALS_LEN), Err(TOTALS_LEN));
    }
}

// ---------------------------------------------------------------------------------------------
// Policy maps. Every key starts with the policy slot (0 or 1): the agent fills the inactive
// slot, then flips `Active::slot`, so a packet is judged wholly by one policy (see README).

/// Exact addresses (`ip` assets): [`IpKey`] → [`Identity`].
pub const MAP_ID_EXACT: &str = "CDT_ID_EXACT";
/// CIDR assets, longest prefix wins: LPM key over [`LpmIpData`] → [`Identity`].
pub const MAP_ID_CIDR: &str = "CDT_ID_CIDR";
/// MAC bindings, MAC → bound address: [`MacKey`] → [`MacBinding`].
pub const MAP_MAC: &str = "CDT_MAC";
/// Conduit rules: LPM key over [`LpmConduitData`] → [`ConduitHit`].
pub const MAP_CONDUITS: &str = "CDT_CONDUITS";
/// Per-zone settings: [`ZoneKey`] → [`ZoneCfg`].
pub const MAP_ZONES: &str = "CDT_ZONES";
/// Conduits that exist in a slot (a reply passes only while its conduit is live):
/// [`ConduitKey`] → [`ConduitInfo`].
pub const MAP_LIVE: &str = "CDT_LIVE";
/// Per-slot settings, array indexed by slot: [`Settings`].
pub const MAP_SETTINGS: &str = "CDT_SETTINGS";
/// Allowed EtherTypes for non-IP frames: [`EtherTypeKey`] → `u32` (1).
pub const MAP_L2: &str = "CDT_L2";

/// Capacities, per slot (the maps hold two slots, hence twice these). The compiler checks a
/// policy against them and says which limit a policy exceeds.
pub const MAX_EXACT_IDENTITIES: u32 = 1 << 20; // 1,048,576
pub const MAX_CIDR_IDENTITIES: u32 = 1 << 16;
pub const MAX_MAC_BINDINGS: u32 = 1 << 20;
pub const MAX_CONDUIT_ENTRIES: u32 = 1 << 18;
pub const MAX_ZONES: u32 = 4096;
pub const MAX_CONDUITS: u32 = 1 << 15;
pub const MAX_L2_ETHERTYPES: u32 = 64;
/// Number of policy slots.
pub const SLOTS: u32 = 2;

/// The live policy: array of one [`Active`].
pub const MAP_ACTIVE: &str = "CDT_ACTIVE";
/// Per-conduit packets and bytes allowed (replies included): per-CPU hash, conduit id (`u32`)
/// → [`Counter`]. Keyed by conduit id alone, so counters survive reloads of a conduit whose
/// name (and so id) did not change.
pub const MAP_CONDUIT_STATS: &str = "CDT_CSTATS";
/// Dropped and would-drop packets: per-CPU hash [`DropKey`] → [`Counter`].
pub const MAP_DROPS: &str = "CDT_DROPS";
/// Per-CPU hash [`ConduitDropKey`] → [`Counter`]: frames a conduit's own filter (Modbus
/// inspection) denied, per conduit.
pub const MAP_CONDUIT_DROPS: &str = "CDT_CDROPS";
pub const MAX_DROP_KEYS: u32 = 1 << 16;

/// The last decision, for tests and `replay` only: an array of one [`Trace`], written only
/// when the program was loaded with the read-only global [`GLOBAL_TRACE`] set to 1 (the
/// verifier removes the write otherwise, so it costs nothing in production).
pub const MAP_TRACE: &str = "CDT_TRACE";
pub const GLOBAL_TRACE: &str = "CONDUIT_TRACE";

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// Incremented by every run, so a reader can tell that the program ran.
    pub seq: u64,
    pub verdict: u32,
    pub reason: u32,
    pub conduit: u32,
    pub src_zone: u32,
    pub dst_zone: u32,
    pub flow: u32,
    /// 1 when the fast path (a verdict cached in the flow) decided.
    pub fast: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Trace>() == 40);

/// Which slot holds the live policy, and its generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Active {
    pub slot: u32,
    pub _pad: u32,
    /// Increases by one with every policy swap.
    pub generation: u64,
}
const _: () = assert!(core::mem::size_of::<Active>() == 16);

/// A drop counter's key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DropKey {
    pub src_zone: u32,
    pub dst_zone: u32,
    /// [`Reason`] as `u32`.
    pub reason: u32,
    /// [`Verdict::Deny`] or [`Verdict::WouldDeny`] as `u32`.
    pub verdict: u32,
}
const _: () = assert!(core::mem::size_of::<DropKey>() == 16);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConduitDropKey {
    pub conduit: u32,
    /// [`Reason`] as u32.
    pub reason: u32,
    /// [`Verdict::Deny`] or [`Verdict::WouldDeny`] as u32.
    pub verdict: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ConduitDropKey>() == 16);

/// Failsafe: the gateway's own addresses on the failsafe ports, [`FailsafeKey`] → `u32` (1).
/// Filled by the agent, which knows the host's addresses.
pub const MAP_FAILSAFE: &str = "CDT_FAILSAFE";
pub const MAX_FAILSAFE: u32 = 4096;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FailsafeKey {
    pub slot: u8,
    pub family: u8,
    pub proto: u8,
    pub _pad: u8,
    /// Destination port, host order.
    pub port: u16,
    pub _pad2: u16,
    /// The gateway's address, network order, IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<FailsafeKey>() == 24);

/// Audit events: a BPF ring buffer of [`Event`]s.
pub const MAP_EVENTS: &str = "CDT_EVENTS";
pub const EVENTS_BYTES: u32 = 1 << 20;
/// Rate limit of audit events per flow and outcome: LRU hash `flow::FlowKey` whose `_pad`
/// holds the verdict and the reason → [`EventRate`].
pub const MAP_EVENT_RATE: &str = "CDT_EVRATE";
pub const MAX_EVENT_RATE: u32 = 1 << 16;
/// Per-CPU array of `u64` counters: [`EVSTAT_SUPPRESSED`], [`EVSTAT_LOST`],
/// [`EVSTAT_FLOOD`]. (`_V2`: one counter more than `CDT_EVSTATS`.)
pub const MAP_EVENT_STATS: &str = "CDT_EVSTATS_V2";
/// Events not sent because their flow already had one within [`EVENT_WINDOW_NS`].
pub const EVSTAT_SUPPRESSED: u32 = 0;
/// Events lost because the ring buffer was full.
pub const EVSTAT_LOST: u32 = 1;
/// Events shed because their CPU had used its budget ([`EVENT_BUDGET_PER_SEC`]): a flood.
pub const EVSTAT_FLOOD: u32 = 2;
pub const EVSTATS_LEN: u32 = 3;
/// Per-CPU array of one [`EventBudget`]: each CPU's token bucket for audit events.
pub const MAP_EVENT_BUDGET: &str = "CDT_EVBUDGET";
/// Audit events each CPU may start per second, and its burst. Under a flood of loggable
/// frames (a scan, a spoofed-source flood), the rest are shed before the per-flow rate limit
/// (whose LRU map the flood would otherwise churn) and counted ([`EVSTAT_FLOOD`]): the audit
/// log and the ring buffer stay bounded, the frames are still judged and counted.
pub const EVENT_BUDGET_PER_SEC: u64 = 2_000;

/// A CPU's audit event budget: tokens left, and the clock (CLOCK_MONOTONIC ns) up to which
/// they were refilled.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventBudget {
    pub tokens: u64,
    pub refilled_ns: u64,
}
const _: () = assert!(core::mem::size_of::<EventBudget>() == 16);

impl EventBudget {
    /// Takes one token at `now`, refilling at [`EVENT_BUDGET_PER_SEC`] up to a burst of as
    /// many; false when none is left. (Shared with the tests: the kernel calls it.)
    #[inline(always)]
    pub fn take(&mut self, now: u64) -> bool {
        const SEC: u64 = 1_000_000_000;
        let elapsed = now.saturating_sub(self.refilled_ns);
        if elapsed >= SEC {
            self.tokens = EVENT_BUDGET_PER_SEC;
            self.refilled_ns = now;
        } else {
            let add = elapsed * EVENT_BUDGET_PER_SEC / SEC;
            if add > 0 {
                self.tokens = (self.tokens + add).min(EVENT_BUDGET_PER_SEC);
                // Only the time the tokens stand for: the remainder counts next time.
                self.refilled_ns += add * SEC / EVENT_BUDGET_PER_SEC;
            }
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}
/// At most one audit event per flow per window.
pub const EVENT_WINDOW_NS: u64 = 10_000_000_000;

/// One audit event, written by the kernel into [`MAP_EVENTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// CLOCK_MONOTONIC ns.
    pub ts_ns: u64,
    pub verdict: u32,
    pub reason: u32,
    pub conduit: u32,
    pub src_zone: u32,
    pub dst_zone: u32,
    /// Interface the frame arrived on.
    pub ifindex: u32,
    /// 0 when the frame had no IP header to report.
    pub family: u8,
    pub proto: u8,
    /// 1 for an ARP frame (its addresses are the ARP body's; no protocol, no ports).
    pub arp: u8,
    pub _pad: u8,
    /// Host order.
    pub sport: u16,
    pub dport: u16,
    /// Network order, IPv4 in the first 4 bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Events of this flow suppressed since its previous event.
    pub suppressed: u32,
    /// A request a filter denied (`crate::inspect::request`): its protocol
    /// (`crate::inspect::MODBUS`, `DNP3`; 0: none, as older builds wrote), function code and
    /// address (Modbus unit ID, DNP3 outstation).
    pub protocol: u8,
    pub function: u8,
    pub address: u16,
}
const _: () = assert!(core::mem::size_of::<Event>() == 80);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventRate {
    pub last_ns: u64,
    pub suppressed: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<EventRate>() == 16);

/// Zone id of the reserved zone `unknown` (addresses that match no asset).
pub const ZONE_UNKNOWN: u32 = 0;
/// Conduit id meaning "no conduit".
pub const NO_CONDUIT: u32 = 0;
/// Asset principals have this bit set; zone ids never do.
pub const ASSET_PRINCIPAL_BIT: u32 = 0x8000_0000;

/// Address families in keys.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// An address in a key: IPv4 uses the first 4 bytes of `addr`, the rest zero.
/// `addr` is in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpKey {
    pub slot: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    pub _pad: [u8; 2],
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<IpKey>() == 20);

/// LPM data for CIDR identities: slot, family, then the address (network order). The prefix
/// length of an entry is `16 + CIDR prefix length`.
pub type LpmIpData = [u8; 18];
/// Bits of [`LpmIpData`] before the address.
pub const LPM_IP_HEADER_BITS: u32 = 16;

/// What an address resolves to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// Zone id (never [`ZONE_UNKNOWN`] in a map entry).
    pub zone: u32,
    /// Asset principal (with [`ASSET_PRINCIPAL_BIT`]) when a conduit's `sources` or
    /// `destinations` names this asset, else 0.
    pub principal: u32,
    /// The bound MAC when `flags & IDENT_MAC_BOUND`.
    pub mac: [u8; 6],
    pub flags: u16,
}
const _: () = assert!(core::mem::size_of::<Identity>() == 16);
/// [`Identity::flags`]: the asset binds `mac` to this address.
pub const IDENT_MAC_BOUND: u16 = 1;
/// [`Identity::flags`]: no conduit leaves this address (neither its zone nor its asset's
/// principal is the source of any conduit entry): its new flows need no conduit lookup.
/// Zero, what older builds wrote, means "look".
pub const IDENT_NO_CONDUIT: u16 = 2;

/// A bound MAC.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacKey {
    pub slot: u8,
    pub _pad: u8,
    pub mac: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<MacKey>() == 8);

/// The address a MAC is bound to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MacBinding {
    pub family: u8,
    pub _pad: [u8; 3],
    /// Network order; IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<MacBinding>() == 20);

/// LPM data for conduit rules, all big-endian: slot (1), source principal (4), destination
/// principal (4), IP protocol (1), port (2: TCP/UDP destination port; ICMP type << 8 | code).
/// A rule for every protocol ends its prefix after the principals (72 bits), a rule for every
/// port after the protocol (80 bits); port ranges become several prefixes.
pub type LpmConduitData = [u8; 12];
pub const LPM_CONDUIT_ANY_PROTO_BITS: u32 = 72;
pub const LPM_CONDUIT_ANY_PORT_BITS: u32 = 80;
pub const LPM_CONDUIT_FULL_BITS: u32 = 96;

/// The conduit a rule belongs to, and the rule's inspection filter if it has one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConduitHit {
    pub conduit: u32,
    /// [`LOG_NONE`], [`LOG_DENY`] or [`LOG_ALL`]: the conduit's `log`. (The low byte of
    /// what older builds wrote as a `u32`; the bytes after it were zero.)
    pub log: u8,
    /// [`CONDUIT_ON_DEMAND`]: the conduit's traits (0 in older builds).
    pub flags: u8,
    pub _pad: u16,
    /// The rule's inspection filter ([`MAP_FILTERS`] key with the slot), or 0: none.
    pub filter: u32,
    /// The conduit's end (`expires`), in seconds since the Unix epoch, compared with the
    /// kernel's CLOCK_TAI; 0: none. (Padding in older builds, so their entries never end.)
    pub expires: u32,
}
const _: () = assert!(core::mem::size_of::<ConduitHit>() == 16);

/// Inspection filters of the rules that have one (`modbus`, `dnp3`, `enip`): an array,
/// [`FilterKey`] → [`Filter`] at [`FilterKey::index`]. An array rather than a hash map: its
/// lookup is a bounds check and an addition, which every inspected segment makes (a hash
/// lookup cost tens of ns). (`CDT_MODBUS` in 0.1, with Modbus's layout only; a new name for a
/// new layout.)
pub const MAP_FILTERS: &str = "CDT_FILTERS";
pub const MAX_FILTERS: u32 = 4096;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FilterKey {
    pub slot: u32,
    /// [`ConduitHit::filter`], from 1.
    pub filter: u32,
}
const _: () = assert!(core::mem::size_of::<FilterKey>() == 8);

impl FilterKey {
    /// The filter's index in [`MAP_FILTERS`]: slot by slot, [`MAX_FILTERS`] each, filter 1
    /// first. `u32::MAX` (no element, so the lookup fails and the segment fails closed) for
    /// a filter number outside 1..=[`MAX_FILTERS`] or a slot past [`SLOTS`].
    #[inline(always)]
    pub fn index(&self) -> u32 {
        if self.filter == 0 || self.filter > MAX_FILTERS || self.slot >= SLOTS {
            return u32::MAX;
        }
        self.slot * MAX_FILTERS + (self.filter - 1)
    }
}

/// What a client may send on a rule, for one protocol (`crate::inspect`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Filter {
    /// `crate::inspect::MODBUS`, `DNP3`, `ENIP`: the protocol whose check applies.
    pub proto: u8,
    /// [`FILTER_ANY_ADDRESS`].
    pub flags: u8,
    /// DNP3: how many entries of `outstations` are used.
    pub n_outstations: u8,
    pub _pad: u8,
    /// Allowed request codes (Modbus function, DNP3 application function, CIP service as
    /// `crate::inspect::enip::code` makes it): bit `c % 32` of word `c / 32`.
    pub codes: [u32; 8],
    /// Modbus: allowed unit IDs (when [`FILTER_ANY_ADDRESS`] is clear), a bitmap like `codes`.
    pub units: [u32; 8],
    /// DNP3: allowed outstation link addresses (when [`FILTER_ANY_ADDRESS`] is clear), the
    /// first `n_outstations`.
    pub outstations: [u16; MAX_OUTSTATIONS],
}
const _: () = assert!(core::mem::size_of::<Filter>() == 132);

/// The most outstation addresses one `dnp3` filter lists.
pub const MAX_OUTSTATIONS: usize = 32;

/// Every address (Modbus unit ID, DNP3 outstation) is allowed: the rule lists none.
pub const FILTER_ANY_ADDRESS: u8 = 1;

/// Whether bit `i` of a bitmap of 32-bit words is set (false past its end).
#[inline(always)]
pub fn bit(words: &[u32], i: usize) -> bool {
    match words.get(i / 32) {
        Some(w) => (w >> (i % 32)) & 1 == 1,
        None => false,
    }
}

/// Sets bit `i` of a bitmap of 32-bit words (ignored past its end).
#[inline(always)]
pub fn set_bit(words: &mut [u32], i: usize) {
    if let Some(w) = words.get_mut(i / 32) {
        *w |= 1 << (i % 32);
    }
}

pub const LOG_NONE: u32 = 0;
pub const LOG_DENY: u32 = 1;
pub const LOG_ALL: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ZoneKey {
    pub slot: u32,
    pub zone: u32,
}
const _: () = assert!(core::mem::size_of::<ZoneKey>() == 8);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneCfg {
    /// [`MODE_ENFORCE`] or [`MODE_MONITOR`] for traffic into this zone.
    pub mode: u8,
    /// [`INTRA_ALLOW`] or [`INTRA_DENY`] (never allow for `unknown`).
    pub intra: u8,
    /// [`RPF_STRICT`], [`RPF_LOOSE`] or [`RPF_OFF`]: the reverse-path check of traffic from
    /// this zone (`reverse_path`). Zero, what older builds left as padding, is strict.
    pub rpf: u8,
    /// 1 when the zone lists `interfaces`: its traffic must arrive on one of them
    /// ([`MAP_ZONE_IFS`]).
    pub ifaces: u8,
}
const _: () = assert!(core::mem::size_of::<ZoneCfg>() == 4);
/// [`ZoneCfg::rpf`]: the route back to the source must leave by the interface the frame
/// came in on (the kernel's `rp_filter=1`).
pub const RPF_STRICT: u8 = 0;
/// [`ZoneCfg::rpf`]: a route back to the source must exist, by any interface
/// (`rp_filter=2`): for asymmetric routing.
pub const RPF_LOOSE: u8 = 1;
/// [`ZoneCfg::rpf`]: no reverse-path check.
pub const RPF_OFF: u8 = 2;

/// The interfaces a zone's traffic must arrive on (`zones[].interfaces`): keys of zones
/// that list interfaces, by name (the kernel program reads the ingress interface's name
/// from [`MAP_INGRESS`]). The value is unused (1).
pub const MAP_ZONE_IFS: &str = "CDT_ZONE_IFS";
pub const MAX_ZONE_IFS: u32 = 4096;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ZoneIfKey {
    pub slot: u32,
    pub zone: u32,
    /// The interface name, NUL-padded (IFNAMSIZ).
    pub name: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<ZoneIfKey>() == 24);

/// What the kernel program knows of the interface a frame came in on, by ifindex (host
/// order `u32` key): written by the agent for each interface it attaches to (not per policy
/// slot: interfaces outlive policies).
pub const MAP_INGRESS: &str = "CDT_INGRESS";
pub const MAX_INGRESS: u32 = 1024;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngressCfg {
    /// `INGRESS_*` flags.
    pub flags: u32,
    /// The ifindex the kernel's FIB names for routes through this interface: its own, or
    /// its bond's for a bond port. A route back to the source must leave by it.
    pub fib_ifindex: u32,
    /// The interface's name, NUL-padded, for zones' `interfaces`.
    pub name: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<IngressCfg>() == 24);
/// [`IngressCfg::flags`]: no interface checks at all: the loopback interface on which
/// `replay` and the tests run frames through BPF_PROG_TEST_RUN.
pub const INGRESS_UNCHECKED: u32 = 1;
/// [`IngressCfg::flags`]: the FIB cannot tell which port a source is behind (a bridge or
/// Open vSwitch port, an interface carrying VLANs or macvlans): no reverse-path check;
/// zones' `interfaces` still apply.
pub const INGRESS_NO_FIB: u32 = 2;
pub const MODE_ENFORCE: u8 = 0;
pub const MODE_MONITOR: u8 = 1;
pub const INTRA_DENY: u8 = 0;
pub const INTRA_ALLOW: u8 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConduitKey {
    pub slot: u32,
    pub conduit: u32,
}
const _: () = assert!(core::mem::size_of::<ConduitKey>() == 8);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConduitInfo {
    /// As [`ConduitHit::log`].
    pub log: u8,
    /// As [`ConduitHit::flags`].
    pub flags: u8,
    pub _pad: u16,
    /// As [`ConduitHit::expires`].
    pub expires: u32,
}
const _: () = assert!(core::mem::size_of::<ConduitInfo>() == 8);

/// [`ConduitHit::flags`], [`ConduitInfo::flags`]: an on-demand conduit (`on_demand`, SPEC §8),
/// closed unless [`MAP_GRANTS`] holds an open grant for it.
pub const CONDUIT_ON_DEMAND: u8 = 1;

/// Open grants of on-demand conduits: [`ConduitKey`] → [`Grant`]. Written by the agent
/// (`conduit grant`) for the live slot, and for the next slot before a reload swaps it in;
/// deleted by `conduit revoke` and when a grant has ended. Pinned, so that grants outlive the
/// agent; a grant's end is enforced by the datapath itself.
pub const MAP_GRANTS: &str = "CDT_GRANTS";

/// A grant: open until `until`, in whole seconds of CLOCK_BOOTTIME (`bpf_ktime_get_boot_ns`),
/// the clock that no one can set: a grant lasts what was granted whatever the wall clock does,
/// and ends with the host (as the pins do).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    pub until: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Grant>() == 8);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EtherTypeKey {
    pub slot: u16,
    /// Host byte order.
    pub ethertype: u16,
}
const _: () = assert!(core::mem::size_of::<EtherTypeKey>() == 4);

/// Settings of one policy slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// 1 when the slot holds a policy.
    pub valid: u8,
    /// 1: non-first IP fragments pass (`defaults.fragments: allow`).
    pub fragments_allow: u8,
    /// 1: non-IP frames not in the EtherType list pass (`defaults.l2.default: allow`).
    pub l2_allow: u8,
    /// [`MODE_ENFORCE`] or [`MODE_MONITOR`] for the `unknown` zone (`defaults.mode`).
    pub unknown_mode: u8,
    /// `defaults.log` for denials that no conduit is involved in.
    pub log: u32,
    /// 1 when a rule of the policy has an inspection filter (`modbus`, `dnp3`): data
    /// segments of established TCP flows are then looked up again so that the live filter
    /// applies to them.
    pub inspect: u32,
    /// [`SKIP_FAILSAFE`] | [`SKIP_MACS`]: optional tables the slot leaves empty, whose
    /// lookups a packet skips. Zero (what this field held as padding in older builds) means
    /// every lookup runs: a slot that says nothing is judged the careful way.
    pub skip: u32,
}
const _: () = assert!(core::mem::size_of::<Settings>() == 16);

/// [`Settings::skip`]: the slot has no failsafe entries (`CDT_FAILSAFE`).
pub const SKIP_FAILSAFE: u32 = 1;
/// [`Settings::skip`]: the slot has no MAC bindings (`CDT_MAC`).
pub const SKIP_MACS: u32 = 2;
/// [`Settings::skip`]: no conduit leaves `unknown`: a new flow from an unknown address needs
/// no conduit lookup (a scan or a spoofed-source flood stops after the identity lookups).
pub const SKIP_FROM_UNKNOWN: u32 = 4;

/// `aya::Pod` for ABI types (the agent reads and writes them as map keys and values): only
/// for `#[repr(C)]` structs of integers and byte arrays whose padding is explicit fields, so
/// that every bit pattern is a valid value and no byte is uninitialised. Each type's size is
/// asserted next to it.
#[cfg(feature = "user")]
#[macro_export]
#[doc(hidden)]
macro_rules! pod {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: the macro's contract above, which every type listed meets.
            unsafe impl aya::Pod for $t {}
        )*
    };
}

#[cfg(feature = "user")]
pod!(
    IpKey,
    Identity,
    MacKey,
    MacBinding,
    ConduitHit,
    ZoneKey,
    ZoneCfg,
    ConduitKey,
    ConduitInfo,
    Grant,
    EtherTypeKey,
    Settings,
    crate::flow::FlowKey,
    crate::flow::FlowKey4,
    Active,
    Trace,
    FailsafeKey,
    Event,
    EventRate,
    DropKey,
    ConduitDropKey,
    FilterKey,
    Filter,
    crate::flow::FlowVal,
    ZoneIfKey,
    IngressCfg,
    EventBudget,
);
