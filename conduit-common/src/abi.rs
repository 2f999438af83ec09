//! Map names, key and value layouts, and stable numberings shared with the kernel.
//!
//! Changing a layout means a new map name (`..._V2`), never a silent reinterpretation.

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
}

impl Reason {
    pub const ALL: [Reason; 10] = [
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
    fn reason_numbering_is_stable() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as u32, i as u32);
            assert_eq!(Reason::try_from(i as u32), Ok(*r));
        }
        assert_eq!(Reason::try_from(Reason::ALL.len() as u32), Err(10));
        // The names are part of SPEC §2 and must never change.
        let names: [&str; 10] = Reason::ALL.map(Reason::as_str);
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
                "l2_denied"
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
