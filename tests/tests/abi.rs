//! The built object's maps match the `conduit-common` ABI: names, types, key/value sizes and
//! capacities. No root needed: this parses the ELF object embedded in the agent.
use std::mem::size_of;

use conduit_common::{
    self as abi,
    flow::{FlowKey, FlowVal},
    learn,
};

const HASH: u32 = 1;
const ARRAY: u32 = 2;
const PERCPU_HASH: u32 = 5;
const PERCPU_ARRAY: u32 = 6;
const LRU_HASH: u32 = 9;
const LPM_TRIE: u32 = 11;
const RINGBUF: u32 = 27;

const S: u32 = abi::SLOTS;

#[test]
fn object_maps_match_common_types() {
    let object = conduit_agent::datapath::object();
    assert!(
        !object.is_empty(),
        "the agent was built without its XDP object: run ./xtask/bootstrap.sh"
    );
    let obj = aya_obj::Object::parse(object).expect("parse the XDP object");
    let lpm = |data: usize| 4 + data;
    // (name, map type, key size, value size, max entries)
    let expected: &[(&str, u32, usize, usize, u32)] = &[
        (
            abi::MAP_TOTALS,
            PERCPU_ARRAY,
            4,
            size_of::<abi::Counter>(),
            abi::TOTALS_LEN,
        ),
        (abi::MAP_ACTIVE, ARRAY, 4, size_of::<abi::Active>(), 1),
        (abi::MAP_SETTINGS, ARRAY, 4, size_of::<abi::Settings>(), S),
        (
            abi::MAP_ID_EXACT,
            HASH,
            size_of::<abi::IpKey>(),
            size_of::<abi::Identity>(),
            S * abi::MAX_EXACT_IDENTITIES,
        ),
        (
            abi::MAP_ID_CIDR,
            LPM_TRIE,
            lpm(size_of::<abi::LpmIpData>()),
            size_of::<abi::Identity>(),
            S * abi::MAX_CIDR_IDENTITIES,
        ),
        (
            abi::MAP_MAC,
            HASH,
            size_of::<abi::MacKey>(),
            size_of::<abi::MacBinding>(),
            S * abi::MAX_MAC_BINDINGS,
        ),
        (
            abi::MAP_CONDUITS,
            LPM_TRIE,
            lpm(size_of::<abi::LpmConduitData>()),
            size_of::<abi::ConduitHit>(),
            S * abi::MAX_CONDUIT_ENTRIES,
        ),
        (
            abi::MAP_ZONES,
            HASH,
            size_of::<abi::ZoneKey>(),
            size_of::<abi::ZoneCfg>(),
            S * abi::MAX_ZONES,
        ),
        (
            abi::MAP_LIVE,
            HASH,
            size_of::<abi::ConduitKey>(),
            size_of::<abi::ConduitInfo>(),
            S * abi::MAX_CONDUITS,
        ),
        (
            abi::MAP_GRANTS,
            HASH,
            size_of::<abi::ConduitKey>(),
            size_of::<abi::Grant>(),
            S * abi::MAX_CONDUITS,
        ),
        (
            abi::MAP_L2,
            HASH,
            size_of::<abi::EtherTypeKey>(),
            4,
            S * abi::MAX_L2_ETHERTYPES,
        ),
        (
            abi::MAP_ZONE_IFS,
            HASH,
            size_of::<abi::ZoneIfKey>(),
            4,
            S * abi::MAX_ZONE_IFS,
        ),
        (
            abi::MAP_INGRESS,
            HASH,
            4,
            size_of::<abi::IngressCfg>(),
            abi::MAX_INGRESS,
        ),
        (
            abi::MAP_FAILSAFE,
            HASH,
            size_of::<abi::FailsafeKey>(),
            4,
            S * abi::MAX_FAILSAFE,
        ),
        (
            abi::flow::MAP_FLOWS4,
            LRU_HASH,
            size_of::<abi::flow::FlowKey4>(),
            size_of::<FlowVal>(),
            abi::flow::MAX_FLOWS4,
        ),
        (
            abi::flow::MAP_FLOWS6,
            LRU_HASH,
            size_of::<FlowKey>(),
            size_of::<FlowVal>(),
            abi::flow::MAX_FLOWS6,
        ),
        (
            abi::MAP_CONDUIT_STATS,
            PERCPU_HASH,
            4,
            size_of::<abi::Counter>(),
            S * abi::MAX_CONDUITS,
        ),
        (
            abi::MAP_DROPS,
            PERCPU_HASH,
            size_of::<abi::DropKey>(),
            size_of::<abi::Counter>(),
            abi::MAX_DROP_KEYS,
        ),
        (
            abi::MAP_FILTERS,
            ARRAY,
            4,
            size_of::<abi::Filter>(),
            S * abi::MAX_FILTERS,
        ),
        (
            abi::MAP_CONDUIT_DROPS,
            PERCPU_HASH,
            size_of::<abi::ConduitDropKey>(),
            size_of::<abi::Counter>(),
            abi::MAX_DROP_KEYS,
        ),
        (abi::MAP_TRACE, ARRAY, 4, size_of::<abi::Trace>(), 1),
        (
            "CDT_DECISION",
            PERCPU_ARRAY,
            4,
            size_of::<conduit_common::verdict::Decision>(),
            1,
        ),
        (
            "CDT_SCRATCH",
            PERCPU_ARRAY,
            4,
            size_of::<conduit_common::verdict::Packet>(),
            1,
        ),
        (abi::MAP_EVENTS, RINGBUF, 0, 0, abi::EVENTS_BYTES),
        (
            abi::MAP_EVENT_RATE,
            LRU_HASH,
            size_of::<FlowKey>(),
            size_of::<abi::EventRate>(),
            abi::MAX_EVENT_RATE,
        ),
        (abi::MAP_EVENT_STATS, PERCPU_ARRAY, 4, 8, abi::EVSTATS_LEN),
        (
            abi::MAP_EVENT_BUDGET,
            PERCPU_ARRAY,
            4,
            size_of::<abi::EventBudget>(),
            1,
        ),
        (
            learn::MAP_LEARN,
            HASH,
            size_of::<learn::LearnKey>(),
            size_of::<learn::LearnVal>(),
            learn::MAX_LEARN,
        ),
        (
            learn::MAP_LEARN_MODBUS,
            HASH,
            size_of::<learn::LearnModbusKey>(),
            size_of::<learn::LearnModbusVal>(),
            learn::MAX_LEARN_MODBUS,
        ),
        (
            learn::MAP_LEARN_STATS,
            PERCPU_ARRAY,
            4,
            8,
            learn::LEARNSTATS_LEN,
        ),
        (
            learn::MAP_LEARN_NOTE,
            PERCPU_ARRAY,
            4,
            size_of::<learn::LearnNote>(),
            1,
        ),
    ];
    for &(name, ty, key, value, max) in expected {
        assert!(
            name.len() <= 15,
            "map name {name} longer than the kernel's 15 bytes"
        );
        let m = obj
            .maps
            .get(name)
            .unwrap_or_else(|| panic!("map {name} missing from the object"));
        assert_eq!(m.map_type(), ty, "{name}: map type");
        assert_eq!(m.key_size() as usize, key, "{name}: key size");
        assert_eq!(m.value_size() as usize, value, "{name}: value size");
        assert_eq!(m.max_entries(), max, "{name}: max entries");
    }
    // Every map of the object is described above: none escapes the check.
    let mut names: Vec<&str> = obj
        .maps
        .keys()
        .map(String::as_str)
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort_unstable();
    let mut want: Vec<&str> = expected.iter().map(|e| e.0).collect();
    want.sort_unstable();
    assert_eq!(names, want, "maps in the object vs. maps in the ABI table");
    // One program: the benchmarks' (`conduit_pass`, `conduit_bench_vary`...) and their map
    // are in the benchmarks' object only.
    let programs: Vec<&str> = obj.programs.keys().map(String::as_str).collect();
    assert_eq!(
        programs,
        [abi::PROGRAM_NAME],
        "programs in the production object"
    );
}
