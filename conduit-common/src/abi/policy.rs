//! The policy maps: every key starts with the policy slot (0 or 1), so that a packet is
//! judged wholly by one policy.

// The other ABI modules' items, for the links of the docs.
#[cfg(doc)]
#[allow(unused_imports)]
use super::*;

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
