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

mod events;
mod policy;
mod runtime;
mod verdict;

pub use events::*;
pub use policy::*;
pub use runtime::*;
pub use verdict::*;

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
