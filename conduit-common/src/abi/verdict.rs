//! What the program decides and counts: verdicts, reasons, counters.

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
