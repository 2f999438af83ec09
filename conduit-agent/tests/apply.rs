//! Applying policies to real kernel maps (root): after every apply, both slots of every policy
//! map hold exactly what the compiler produced for them (nothing stale, nothing missing), read
//! back through the pins with aya's own map types, independently of the apply code. Covers the
//! batch path, the per-element fallback, and pins adopted by a new process (the first apply
//! then lists what the idle slot holds).
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Debug,
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    Pod,
    maps::{Array, HashMap, MapData, lpm_trie::LpmTrie},
};
use conduit_agent::{
    datapath::{ApplyReport, Datapath},
    policy::{compile::Compiled, load::load_bytes},
};
use conduit_common::*;
use conduit_tests::{policygen::policy_text_at, require_root, unique_name};

/// A pin directory of this test, removed with everything under it on drop.
struct Pins(PathBuf);

impl Pins {
    fn new() -> Self {
        Self(PathBuf::from("/sys/fs/bpf").join(unique_name("cdtap")))
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `yaml` compiled for `slot`, with failsafe entries for `addrs` (as the agent does).
fn compile(yaml: &str, slot: u8, addrs: &[IpAddr]) -> Compiled {
    let (loaded, d) = load_bytes(yaml.as_bytes(), slot);
    let loaded = loaded.unwrap_or_else(|| panic!("invalid test policy:\n{d}"));
    loaded.compiled.with_failsafe(addrs).expect("failsafe")
}

fn pinned(pins: &Path, name: &str) -> MapData {
    MapData::from_pin(pins.join("maps").join(name)).unwrap_or_else(|e| panic!("pin {name}: {e}"))
}

fn hash<K: Pod + Ord, V: Pod>(
    pins: &Path,
    name: &str,
    slot: u8,
    slot_of: fn(&K) -> u32,
) -> BTreeMap<K, V> {
    let m: HashMap<MapData, K, V> = HashMap::try_from(aya::maps::Map::HashMap(pinned(pins, name)))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    m.iter()
        .map(|r| r.unwrap_or_else(|e| panic!("reading {name}: {e}")))
        .filter(|(k, _)| slot_of(k) == u32::from(slot))
        .collect()
}

/// The filters of `slot` in the filter array: its elements from filter 1 up to the first
/// empty one (the compiler numbers them densely), and none after it.
fn filters(pins: &Path, slot: u8) -> BTreeMap<FilterKey, Filter> {
    let a: Array<MapData, Filter> =
        Array::try_from(aya::maps::Map::Array(pinned(pins, MAP_FILTERS)))
            .unwrap_or_else(|e| panic!("{MAP_FILTERS}: {e}"));
    let key = |filter| FilterKey {
        slot: u32::from(slot),
        filter,
    };
    let mut out = BTreeMap::new();
    for filter in 1..=MAX_FILTERS {
        let f = a.get(&key(filter).index(), 0).unwrap();
        if f.proto == 0 {
            // Cleared: so must every element after it be.
            for rest in filter..=MAX_FILTERS {
                assert_eq!(
                    a.get(&key(rest).index(), 0).unwrap(),
                    Filter::default(),
                    "slot {slot} filter {rest}"
                );
            }
            break;
        }
        out.insert(key(filter), f);
    }
    out
}

fn lpm<D: Pod + Ord, V: Pod>(
    pins: &Path,
    name: &str,
    slot: u8,
    slot_of: fn(&D) -> u8,
) -> BTreeMap<(u32, D), V> {
    let m: LpmTrie<MapData, D, V> = LpmTrie::try_from(aya::maps::Map::LpmTrie(pinned(pins, name)))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    m.iter()
        .map(|r| r.unwrap_or_else(|e| panic!("reading {name}: {e}")))
        .map(|(k, v)| ((k.prefix_len(), k.data()), v))
        .filter(|((_, d), _)| slot_of(d) == slot)
        .collect()
}

/// Fails with the first differences (maps of 100k entries are not printed whole).
fn same<K: Ord + Debug, V: PartialEq + Debug>(
    what: &str,
    slot: u8,
    got: &BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
) {
    if got == want {
        return;
    }
    let stale: Vec<_> = got
        .keys()
        .filter(|k| !want.contains_key(k))
        .take(3)
        .collect();
    let missing: Vec<_> = want
        .keys()
        .filter(|k| !got.contains_key(k))
        .take(3)
        .collect();
    let changed: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(k).is_some_and(|g| g != *v))
        .take(3)
        .collect();
    panic!(
        "{what}, slot {slot}: the kernel holds {} entries, the compiler produced {}; \
         stale {stale:?}, missing {missing:?}, different values {changed:?}",
        got.len(),
        want.len()
    );
}

fn set<K: Ord + Copy>(s: &BTreeSet<K>) -> BTreeMap<K, u32> {
    s.iter().map(|k| (*k, 1)).collect()
}

/// The kernel's `slot` half of every policy map equals `c` (or is empty for `None`).
fn check_slot(pins: &Path, slot: u8, c: Option<&Compiled>) {
    let empty = Compiled::default();
    let c = c.unwrap_or(&empty);
    same(
        MAP_ID_EXACT,
        slot,
        &hash(pins, MAP_ID_EXACT, slot, |k: &IpKey| u32::from(k.slot)),
        &c.id_exact,
    );
    same(
        MAP_ID_CIDR,
        slot,
        &lpm(pins, MAP_ID_CIDR, slot, |d: &LpmIpData| d[0]),
        &c.id_cidr,
    );
    same(
        MAP_MAC,
        slot,
        &hash(pins, MAP_MAC, slot, |k: &MacKey| u32::from(k.slot)),
        &c.mac,
    );
    same(MAP_FILTERS, slot, &filters(pins, slot), &c.filters);
    same(
        MAP_CONDUITS,
        slot,
        &lpm(pins, MAP_CONDUITS, slot, |d: &LpmConduitData| d[0]),
        &c.conduits,
    );
    same(
        MAP_ZONES,
        slot,
        &hash(pins, MAP_ZONES, slot, |k: &ZoneKey| k.slot),
        &c.zones,
    );
    same(
        MAP_LIVE,
        slot,
        &hash(pins, MAP_LIVE, slot, |k: &ConduitKey| k.slot),
        &c.live,
    );
    same(
        MAP_L2,
        slot,
        &hash(pins, MAP_L2, slot, |k: &EtherTypeKey| u32::from(k.slot)),
        &set(&c.l2),
    );
    same(
        MAP_FAILSAFE,
        slot,
        &hash(pins, MAP_FAILSAFE, slot, |k: &FailsafeKey| {
            u32::from(k.slot)
        }),
        &set(&c.failsafe),
    );
    let settings: Array<MapData, Settings> =
        Array::try_from(aya::maps::Map::Array(pinned(pins, MAP_SETTINGS))).unwrap();
    assert_eq!(
        settings.get(&u32::from(slot), 0).unwrap(),
        c.settings,
        "{MAP_SETTINGS}, slot {slot}"
    );
}

/// The policies of the sequence: sizes, overlaps and features differ from one to the next.
fn policies() -> Vec<(String, Vec<IpAddr>)> {
    let plant = include_str!("../../policies/purdue-plant.yaml").to_owned();
    let minimal = include_str!("../../policies/minimal.yaml").to_owned();
    let gw: Vec<IpAddr> = vec!["10.9.9.1".parse().unwrap(), "fd00::1".parse().unwrap()];
    vec![
        // A: 3,000 assets, 300 conduits.
        (policy_text_at(3_000, 300, 1, 0), vec![]),
        // B: Modbus filters, L2 allow-list, failsafe entries for two addresses.
        (plant, gw.clone()),
        // A again, resized: 1,200 assets overlapping A's last 1,000, other conduits.
        (policy_text_at(1_200, 700, 2, 2_000), vec![gw[0]]),
        // B again, other features and failsafe addresses.
        (minimal, vec![gw[1]]),
        // A third time: the original A.
        (policy_text_at(3_000, 300, 1, 0), vec![]),
    ]
}

/// Applies `list` in turn (each compiled for the free slot) and checks both slots after each
/// apply. `held` is what each slot holds before the first apply.
fn apply_all(
    dp: &mut Datapath,
    pins: &Path,
    list: &[(String, Vec<IpAddr>)],
    held: &mut [Option<Compiled>; 2],
    mut each: impl FnMut(usize, &ApplyReport),
) {
    for (i, (yaml, addrs)) in list.iter().enumerate() {
        let slot = dp.next_slot().unwrap();
        let c = compile(yaml, slot, addrs);
        let before = dp.active().unwrap().generation;
        let generation = dp.apply(&c).unwrap_or_else(|e| panic!("apply #{i}: {e}"));
        assert_eq!(generation, before + 1);
        let a = dp.active().unwrap();
        assert_eq!((a.slot, a.generation), (u32::from(slot), generation));
        held[usize::from(slot)] = Some(c);
        for s in 0..2u8 {
            check_slot(pins, s, held[usize::from(s)].as_ref());
        }
        each(i, dp.last_apply().expect("a report"));
    }
}

fn report_of<'a>(r: &'a ApplyReport, map: &str) -> &'a conduit_agent::datapath::MapSync {
    r.maps.iter().find(|m| m.map == map).unwrap()
}

const HASH_MAPS: [&str; 6] = [
    MAP_ID_EXACT,
    MAP_MAC,
    MAP_ZONES,
    MAP_LIVE,
    MAP_L2,
    MAP_FAILSAFE,
];

/// A, B, A', B', A with batch operations; then a new process adopts the pins and applies the
/// sequence again: its first apply to each slot lists the slot from the kernel.
#[test]
fn slots_hold_exactly_the_compiled_policy_batched_and_adopted() {
    require_root();
    let pins = Pins::new();
    let list = policies();
    let mut held = [None, None];
    {
        let mut dp = Datapath::load_pinned(&pins.0).expect("load the XDP program");
        apply_all(&mut dp, &pins.0, &list, &mut held, |i, r| {
            for m in &r.maps {
                assert!(!m.listed, "apply #{i}: {} was listed, yet known", m.map);
            }
            for name in HASH_MAPS {
                assert!(
                    !report_of(r, name).per_element,
                    "apply #{i}: {name} fell back to per-element operations"
                );
            }
            let id = report_of(r, MAP_ID_EXACT);
            match i {
                0 => assert_eq!((id.written, id.deleted, id.unchanged), (3_000, 0, 0)),
                // A' after A in slot 0: 1,000 addresses kept (other zones: values differ
                // or not), 2,000 deleted, 200 new.
                2 => assert_eq!((id.deleted, id.written + id.unchanged), (2_000, 1_200)),
                // A after A' in slot 0.
                4 => assert_eq!((id.deleted, id.written + id.unchanged), (200, 3_000)),
                _ => {}
            }
        });
        // Applying the same policy to a slot that already holds it writes nothing.
        let slot = dp.next_slot().unwrap();
        let again = &list[list.len() - 2];
        let c = compile(&again.0, slot, &again.1);
        dp.apply(&c).unwrap();
        let r = dp.last_apply().unwrap();
        assert_eq!((r.written(), r.deleted()), (0, 0), "{r:?}");
        held[usize::from(slot)] = Some(c);
        check_slot(&pins.0, slot, held[usize::from(slot)].as_ref());
        // The datapath is dropped here: its maps live on in the pins.
    }
    let mut dp = Datapath::load_pinned(&pins.0).expect("adopt the pins");
    apply_all(&mut dp, &pins.0, &list, &mut held, |i, r| {
        for m in &r.maps {
            // The first apply to each slot lists it; later ones know it.
            assert_eq!(m.listed, i < 2, "apply #{i}: {m:?}");
        }
    });
}

/// The same sequence with one syscall per element (the kernel without batch operations).
#[test]
fn slots_hold_exactly_the_compiled_policy_per_element() {
    require_root();
    let pins = Pins::new();
    let list = policies();
    let mut held = [None, None];
    let mut dp = Datapath::load_pinned(&pins.0).expect("load the XDP program");
    dp.set_batch_ops(false);
    apply_all(&mut dp, &pins.0, &list, &mut held, |i, r| {
        for m in &r.maps {
            let work = m.written + m.deleted > 0;
            assert_eq!(m.per_element, work, "apply #{i}: {m:?}");
        }
    });
    drop(dp);
    // Adopted, listing one element at a time too.
    let mut dp = Datapath::load_pinned(&pins.0).expect("adopt the pins");
    dp.set_batch_ops(false);
    apply_all(&mut dp, &pins.0, &list[..2], &mut held, |_, r| {
        assert!(r.maps.iter().all(|m| m.listed && m.per_element), "{r:?}");
    });
}

/// Policies large enough that writes and deletes span several batch calls and are split over
/// threads (more than 65,536 entries of one map): slot 0 goes from 70,000 identities to 70,000
/// others (every key deleted, every new one written), then back.
#[test]
fn large_changes_span_chunks_and_threads() {
    require_root();
    let pins = Pins::new();
    let list: Vec<(String, Vec<IpAddr>)> = [0, 0, 70_000, 140_000, 0]
        .iter()
        .enumerate()
        .map(|(i, &first)| (policy_text_at(70_000, 20, i as u64, first), vec![]))
        .collect();
    let mut held = [None, None];
    let mut dp = Datapath::load_pinned(&pins.0).expect("load the XDP program");
    apply_all(&mut dp, &pins.0, &list, &mut held, |i, r| {
        let id = report_of(r, MAP_ID_EXACT);
        let expect = match i {
            0 | 1 => (70_000, 0),
            _ => (70_000, 70_000),
        };
        assert_eq!((id.written, id.deleted), expect, "apply #{i}: {id:?}");
        assert!(!id.per_element && !id.listed, "apply #{i}: {id:?}");
    });
}

/// An apply that fails half-way (here: CDT_L2 is full of entries written behind the agent's
/// back into the idle slot) reports the map, leaves the live policy as it was and the idle
/// slot invalid; the next apply lists that map (its contents are no longer known), removes the
/// strangers and succeeds.
#[test]
fn a_failed_apply_keeps_the_live_policy_and_the_next_one_recovers() {
    require_root();
    let pins = Pins::new();
    let minimal = include_str!("../../policies/minimal.yaml");
    let more_l2 = minimal.replace(
        "allow_ethertypes: [lldp, 0x88f7]",
        "allow_ethertypes: [lldp, 0x88f7, 0x88b8, 0x88ba]",
    );
    assert_ne!(
        more_l2, minimal,
        "minimal.yaml no longer has the expected l2 line"
    );
    let list = vec![(minimal.to_owned(), vec![]), (minimal.to_owned(), vec![])];
    let mut held = [None, None];
    let mut dp = Datapath::load_pinned(&pins.0).expect("load the XDP program");
    apply_all(&mut dp, &pins.0, &list, &mut held, |_, _| {});
    let live = dp.active().unwrap();
    assert_eq!(live.slot, 1);

    // Fill the map with slot-0 keys until the kernel refuses more.
    let mut l2: HashMap<MapData, EtherTypeKey, u32> =
        HashMap::try_from(aya::maps::Map::HashMap(pinned(&pins.0, MAP_L2))).unwrap();
    let mut strangers = 0;
    for ethertype in 0x9000u16.. {
        let k = EtherTypeKey { slot: 0, ethertype };
        if l2.insert(&k, &1, 0).is_err() {
            break;
        }
        strangers += 1;
    }
    assert!(strangers > 0);

    let c = compile(&more_l2, 0, &[]);
    let err = dp.apply(&c).expect_err("the full map must fail the apply");
    let msg = err.to_string();
    assert!(
        msg.contains(MAP_L2) && msg.contains("the map is full"),
        "{msg}"
    );
    assert_eq!(dp.active().unwrap(), live, "the live slot changed");
    check_slot(&pins.0, 1, held[1].as_ref());
    let settings: Array<MapData, Settings> =
        Array::try_from(aya::maps::Map::Array(pinned(&pins.0, MAP_SETTINGS))).unwrap();
    assert_eq!(
        settings.get(&0, 0).unwrap().valid,
        0,
        "the idle slot is valid"
    );

    dp.apply(&c).expect("the next apply recovers");
    let r = dp.last_apply().unwrap();
    let m = report_of(r, MAP_L2);
    assert!(m.listed, "{m:?}");
    assert_eq!(m.deleted, strangers, "{m:?}");
    held[0] = Some(c);
    check_slot(&pins.0, 0, held[0].as_ref());
    check_slot(&pins.0, 1, held[1].as_ref());
}
