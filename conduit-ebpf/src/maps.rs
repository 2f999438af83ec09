//! Every map of the program, declared once. Names and layouts come from `conduit_common`
//! (the ABI test checks the object against them).
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use conduit_common::{
    flow::{FlowKey, FlowKey4, FlowVal, MAX_FLOWS4, MAX_FLOWS6},
    learn::{
        LEARNSTATS_LEN, LearnKey, LearnModbusKey, LearnModbusVal, LearnVal, MAX_LEARN,
        MAX_LEARN_MODBUS,
    },
    *,
};

/// `BPF_F_NO_PREALLOC`: memory only for the entries a policy uses (required for LPM tries).
const NO_PREALLOC: u32 = 1;

#[map(name = "CDT_TOTALS")]
pub static CDT_TOTALS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(TOTALS_LEN, 0);

#[map(name = "CDT_ACTIVE")]
pub static CDT_ACTIVE: Array<Active> = Array::with_max_entries(1, 0);

#[map(name = "CDT_SETTINGS")]
pub static CDT_SETTINGS: Array<Settings> = Array::with_max_entries(SLOTS, 0);

#[map(name = "CDT_ID_EXACT")]
pub static CDT_ID_EXACT: HashMap<IpKey, Identity> =
    HashMap::with_max_entries(SLOTS * MAX_EXACT_IDENTITIES, NO_PREALLOC);

#[map(name = "CDT_ID_CIDR")]
pub static CDT_ID_CIDR: LpmTrie<LpmIpData, Identity> =
    LpmTrie::with_max_entries(SLOTS * MAX_CIDR_IDENTITIES, NO_PREALLOC);

#[map(name = "CDT_MAC")]
pub static CDT_MAC: HashMap<MacKey, MacBinding> =
    HashMap::with_max_entries(SLOTS * MAX_MAC_BINDINGS, NO_PREALLOC);

#[map(name = "CDT_CONDUITS")]
pub static CDT_CONDUITS: LpmTrie<LpmConduitData, ConduitHit> =
    LpmTrie::with_max_entries(SLOTS * MAX_CONDUIT_ENTRIES, NO_PREALLOC);

#[map(name = "CDT_FILTERS")]
pub static CDT_FILTERS: Array<Filter> = Array::with_max_entries(SLOTS * MAX_FILTERS, 0);

#[map(name = "CDT_ZONES")]
pub static CDT_ZONES: HashMap<ZoneKey, ZoneCfg> = HashMap::with_max_entries(SLOTS * MAX_ZONES, 0);

#[map(name = "CDT_LIVE")]
pub static CDT_LIVE: HashMap<ConduitKey, ConduitInfo> =
    HashMap::with_max_entries(SLOTS * MAX_CONDUITS, 0);

#[map(name = "CDT_GRANTS")]
pub static CDT_GRANTS: HashMap<ConduitKey, Grant> =
    HashMap::with_max_entries(SLOTS * MAX_CONDUITS, NO_PREALLOC);

#[map(name = "CDT_L2")]
pub static CDT_L2: HashMap<EtherTypeKey, u32> =
    HashMap::with_max_entries(SLOTS * MAX_L2_ETHERTYPES, 0);

#[map(name = "CDT_FLOWS4_V2")]
pub static CDT_FLOWS4: LruHashMap<FlowKey4, FlowVal> = LruHashMap::with_max_entries(MAX_FLOWS4, 0);

#[map(name = "CDT_FLOWS6_V2")]
pub static CDT_FLOWS6: LruHashMap<FlowKey, FlowVal> = LruHashMap::with_max_entries(MAX_FLOWS6, 0);

#[map(name = "CDT_CSTATS")]
pub static CDT_CSTATS: PerCpuHashMap<u32, Counter> =
    PerCpuHashMap::with_max_entries(SLOTS * MAX_CONDUITS, 0);

#[map(name = "CDT_DROPS")]
pub static CDT_DROPS: PerCpuHashMap<DropKey, Counter> =
    PerCpuHashMap::with_max_entries(MAX_DROP_KEYS, 0);

#[map(name = "CDT_CDROPS")]
pub static CDT_CDROPS: PerCpuHashMap<ConduitDropKey, Counter> =
    PerCpuHashMap::with_max_entries(MAX_DROP_KEYS, 0);

/// Scratch space for the frame being judged: the parsed packet does not fit on the BPF
/// stack next to the verdict's lookups. Never read from userspace.
#[map(name = "CDT_SCRATCH")]
pub static CDT_SCRATCH: PerCpuArray<conduit_common::verdict::Packet> =
    PerCpuArray::with_max_entries(1, 0);

/// The frame's decision, from the fast or full path to the flow update, counters and audit
/// event (see `program::judge`). Never read from userspace.
#[map(name = "CDT_DECISION")]
pub static CDT_DECISION: PerCpuArray<conduit_common::verdict::Decision> =
    PerCpuArray::with_max_entries(1, 0);

/// Benchmarks only: the modulus and run counter of `conduit_bench_vary`.
#[cfg(feature = "bench")]
#[map(name = "CDT_BENCH")]
pub static CDT_BENCH: Array<u32> = Array::with_max_entries(2, 0);

#[map(name = "CDT_TRACE")]
pub static CDT_TRACE: Array<Trace> = Array::with_max_entries(1, 0);

#[map(name = "CDT_ZONE_IFS")]
pub static CDT_ZONE_IFS: HashMap<ZoneIfKey, u32> =
    HashMap::with_max_entries(SLOTS * MAX_ZONE_IFS, NO_PREALLOC);

#[map(name = "CDT_INGRESS")]
pub static CDT_INGRESS: HashMap<u32, IngressCfg> = HashMap::with_max_entries(MAX_INGRESS, 0);

#[map(name = "CDT_FAILSAFE")]
pub static CDT_FAILSAFE: HashMap<FailsafeKey, u32> =
    HashMap::with_max_entries(SLOTS * MAX_FAILSAFE, 0);

#[map(name = "CDT_EVENTS")]
pub static CDT_EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

#[map(name = "CDT_EVRATE")]
pub static CDT_EVRATE: LruHashMap<FlowKey, EventRate> =
    LruHashMap::with_max_entries(MAX_EVENT_RATE, 0);

#[map(name = "CDT_EVSTATS_V2")]
pub static CDT_EVSTATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(EVSTATS_LEN, 0);

#[map(name = "CDT_EVBUDGET")]
pub static CDT_EVBUDGET: PerCpuArray<EventBudget> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "CDT_LEARN")]
pub static CDT_LEARN: HashMap<LearnKey, LearnVal> =
    HashMap::with_max_entries(MAX_LEARN, NO_PREALLOC);

#[map(name = "CDT_LEARN_MB")]
pub static CDT_LEARN_MB: HashMap<LearnModbusKey, LearnModbusVal> =
    HashMap::with_max_entries(MAX_LEARN_MODBUS, NO_PREALLOC);

/// Learning only: what the frame's decision teaches, handed to the learning code through
/// memory the verifier knows nothing of (see `program::record`). Never read from userspace.
#[map(name = "CDT_LEARNNOTE")]
pub static CDT_LEARNNOTE: PerCpuArray<conduit_common::learn::LearnNote> =
    PerCpuArray::with_max_entries(1, 0);

#[map(name = "CDT_LEARNSTATS")]
pub static CDT_LEARNSTATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(LEARNSTATS_LEN, 0);
