//! The program's own state: the live slot, counters by conduit and by reason, the test
//! trace, the failsafe.

// The other ABI modules' items, for the links of the docs.
#[cfg(doc)]
#[allow(unused_imports)]
use super::*;

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
