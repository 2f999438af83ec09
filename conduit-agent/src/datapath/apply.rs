//! Writing a compiled policy into the kernel maps: fill the inactive slot, then flip
//! `CDT_ACTIVE` in one array update. A packet reads the slot once, so it is judged wholly by
//! the old policy or wholly by the new one.
//!
//! Invariants:
//! - the live slot is never touched: only keys of the idle slot are deleted or written;
//! - the idle slot is invalidated first (`Settings.valid = 0`) and made valid only after
//!   every map is written, so a half-written slot can never become live;
//! - an error leaves the live policy untouched and names the map that failed.
//!
//! Each map is brought to the compiled contents by a diff: the keys of the idle slot that the
//! new policy lacks are deleted, the entries that are new or changed are written, the rest is
//! left alone. What the idle slot holds is known without asking the kernel when this process
//! wrote it (two generations ago: the entries written are kept, keys and values, about 40
//! bytes per entry and slot) or created the map empty; otherwise (pins adopted from an earlier
//! agent, or an earlier apply that failed half-way) the slot is listed from the kernel once.
//!
//! Deletes, writes and listings use the kernel's batch commands (BPF_MAP_*_BATCH, one syscall
//! per [`CHUNK`] entries); large deletes and writes are split over a few threads, since the
//! kernel's per-element work dominates and hash maps lock per bucket. Where the kernel refuses
//! batch commands for a map (kernels before 5.6, map types without them), that map falls back
//! to one syscall per element.
use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    ops::Range,
    time::{Duration, Instant},
};

use aya::{
    Pod,
    maps::{Array, MapData},
};
use conduit_common::*;

use super::{Datapath, DatapathError, sys};
use crate::policy::compile::Compiled;

/// Entries per batch syscall: the syscall's own cost is negligible at this size, and it
/// bounds the listing buffers and the length of any one call.
const CHUNK: usize = 16_384;
/// Below this many entries per thread a batch stays on one thread.
const PARALLEL_MIN: usize = 2 * CHUNK;
/// At most this many threads per batch operation.
const MAX_THREADS: usize = 4;

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    move |e| DatapathError::Map(name, e)
}

/// The key of an LPM trie entry as the kernel reads it (`struct bpf_lpm_trie_key_u8`): the
/// prefix length in bits, then the data. Ordered by (prefix length, data), like the
/// compiler's maps.
#[repr(C, packed)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LpmKey<D> {
    /// Host byte order.
    pub prefix_len: u32,
    pub data: D,
}

// SAFETY: `Pod` asks for a `Copy + 'static` type without padding whose every byte sequence
// of its size is a valid value. `LpmKey<D>` is `Copy`, and `'static` since `D: Pod` is; packed,
// it is exactly a u32 followed by a `D`, with no padding, and every byte sequence is a valid
// u32 and (`D` being `Pod`) a valid `D`.
unsafe impl<D: Pod> Pod for LpmKey<D> {}

impl<D: Copy> LpmKey<D> {
    pub fn data(&self) -> D {
        self.data
    }
}

/// What one map's sync did (see [`ApplyReport`]).
#[derive(Clone, Debug)]
pub struct MapSync {
    pub map: &'static str,
    /// The idle slot's contents were not known and had to be listed from the kernel.
    pub listed: bool,
    /// Keys of the idle slot deleted (not in the new policy).
    pub deleted: usize,
    /// Entries written (new, or with a changed value).
    pub written: usize,
    /// Entries the idle slot already held with the same value.
    pub unchanged: usize,
    /// Some operation fell back to one syscall per element (the kernel refused batches).
    pub per_element: bool,
    /// The whole sync: listing, diff, deletes and writes.
    pub time: Duration,
}

/// What the last [`Datapath::apply`] did, for logs, tests and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct ApplyReport {
    pub maps: Vec<MapSync>,
    /// Writing the idle slot: invalidate, every map, validate.
    pub write: Duration,
    /// The swap alone: the `CDT_ACTIVE` update.
    pub swap: Duration,
}

impl ApplyReport {
    pub fn written(&self) -> usize {
        self.maps.iter().map(|m| m.written).sum()
    }

    pub fn deleted(&self) -> usize {
        self.maps.iter().map(|m| m.deleted).sum()
    }
}

/// A map's entries of one slot as two arrays, sorted by key: the layout the batch syscalls
/// read, so that writing a whole slot needs no copy.
struct Entries<K, V> {
    keys: Vec<K>,
    values: Vec<V>,
}

impl<K: Ord + Copy, V: Copy> Entries<K, V> {
    fn new() -> Self {
        Self {
            keys: Vec::new(),
            values: Vec::new(),
        }
    }

    /// From (key, value) pairs in any order; the first of equal keys is kept.
    fn collect(pairs: impl Iterator<Item = (K, V)>) -> Self {
        let (keys, values): (Vec<K>, Vec<V>) = pairs.unzip();
        if keys.is_sorted_by(|a, b| a < b) {
            return Self { keys, values };
        }
        let mut pairs: Vec<(K, V)> = keys.into_iter().zip(values).collect();
        pairs.sort_by_key(|p| p.0);
        pairs.dedup_by(|a, b| a.0 == b.0);
        let (keys, values) = pairs.into_iter().unzip();
        Self { keys, values }
    }

    fn len(&self) -> usize {
        self.keys.len()
    }
}

/// One policy map as this process knows it: its name, the slot of a key, and what each slot
/// holds: exactly these entries (none when the map was created empty: a fresh load, or a pin
/// that did not exist yet), or `None`, unknown, to be listed before it is changed.
struct Cached<K, V> {
    name: &'static str,
    slot_of: fn(&K) -> u32,
    slots: [Option<Entries<K, V>>; SLOTS as usize],
}

impl<K: Ord + Copy, V: Copy> Cached<K, V> {
    /// Both slots known empty if the map is among the `fresh` (just created), else unknown.
    fn new(name: &'static str, slot_of: fn(&K) -> u32, fresh: &BTreeSet<&str>) -> Self {
        let empty = fresh.contains(name);
        Self {
            name,
            slot_of,
            slots: std::array::from_fn(|_| empty.then(Entries::new)),
        }
    }
}

/// The contents this process knows the policy maps' slots to hold, a field per map.
struct Cache {
    id_exact: Cached<IpKey, Identity>,
    id_cidr: Cached<LpmKey<LpmIpData>, Identity>,
    mac: Cached<MacKey, MacBinding>,
    conduits: Cached<LpmKey<LpmConduitData>, ConduitHit>,
    zones: Cached<ZoneKey, ZoneCfg>,
    zone_ifs: Cached<ZoneIfKey, u32>,
    live: Cached<ConduitKey, ConduitInfo>,
    l2: Cached<EtherTypeKey, u32>,
    failsafe: Cached<FailsafeKey, u32>,
    /// How many filters each slot of [`MAP_FILTERS`] holds (elements 1..=n), if known.
    filters: [Option<u32>; SLOTS as usize],
}

/// What this process knows of the policy maps, and how it may write them.
pub(crate) struct Written {
    cache: Cache,
    /// Batch operations allowed at all (tests turn them off to exercise the fallback).
    batch: bool,
    /// Maps whose batch operations the kernel refused: per element from then on.
    no_batch: BTreeSet<&'static str>,
    last: Option<ApplyReport>,
}

impl Written {
    /// Nothing known yet, except that `fresh` maps were just created empty.
    pub(crate) fn new<'a>(fresh: impl IntoIterator<Item = &'a &'static str>) -> Self {
        let fresh: BTreeSet<&str> = fresh.into_iter().copied().collect();
        let cache = Cache {
            id_exact: Cached::new(MAP_ID_EXACT, |k| u32::from(k.slot), &fresh),
            id_cidr: Cached::new(MAP_ID_CIDR, |k| u32::from(k.data()[0]), &fresh),
            mac: Cached::new(MAP_MAC, |k| u32::from(k.slot), &fresh),
            conduits: Cached::new(MAP_CONDUITS, |k| u32::from(k.data()[0]), &fresh),
            zones: Cached::new(MAP_ZONES, |k| k.slot, &fresh),
            zone_ifs: Cached::new(MAP_ZONE_IFS, |k| k.slot, &fresh),
            live: Cached::new(MAP_LIVE, |k| k.slot, &fresh),
            l2: Cached::new(MAP_L2, |k| u32::from(k.slot), &fresh),
            failsafe: Cached::new(MAP_FAILSAFE, |k| u32::from(k.slot), &fresh),
            filters: [fresh.contains(MAP_FILTERS).then_some(0); SLOTS as usize],
        };
        Self {
            cache,
            batch: true,
            no_batch: BTreeSet::new(),
            last: None,
        }
    }
}

/// Why a batch operation did not complete.
enum Fail {
    /// The kernel refused the command itself (older kernel, map type without batch ops).
    Unsupported,
    Error(&'static str, io::Error),
}

impl Fail {
    fn of(e: sys::Partial, first_call: bool, what: &'static str) -> Self {
        let refused = matches!(
            e.error.raw_os_error(),
            Some(sys::ENOTSUPP | libc::EOPNOTSUPP | libc::EINVAL)
        );
        if first_call && e.done == 0 && refused {
            Fail::Unsupported
        } else {
            Fail::Error(what, e.error)
        }
    }
}

/// Runs `op` on `0..len`, split in equal ranges over several threads when `len` is large:
/// hash maps lock per bucket, so the kernel's per-element work (most of a load's time) runs
/// on several CPUs at once. The first failure is returned (the ranges are independent).
fn split(len: usize, op: impl Fn(Range<usize>) -> Result<(), Fail> + Sync) -> Result<(), Fail> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS)
        .min(len / PARALLEL_MIN)
        .max(1);
    if threads == 1 {
        return op(0..len);
    }
    let per = len.div_ceil(threads);
    std::thread::scope(|s| {
        let op = &op;
        let parts: Vec<_> = (0..len)
            .step_by(per)
            .map(|lo| s.spawn(move || op(lo..(lo + per).min(len))))
            .collect();
        let mut result = Ok(());
        for p in parts {
            let r = p.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            // An error beats "unsupported": it says what really went wrong.
            if r.is_err() && !matches!(result, Err(Fail::Error(..))) {
                result = r;
            }
        }
        result
    })
}

/// BPF_MAP_UPDATE_BATCH over `keys`/`values`, [`CHUNK`] entries per call.
fn update_batched<K: Pod, V: Pod>(
    m: sys::MapFd<'_, K, V>,
    keys: &[K],
    values: &[V],
) -> Result<(), Fail> {
    for (i, (k, v)) in keys.chunks(CHUNK).zip(values.chunks(CHUNK)).enumerate() {
        sys::update_batch(m, k, v, sys::BPF_ANY)
            .map_err(|e| Fail::of(e, i == 0, "writing (BPF_MAP_UPDATE_BATCH)"))?;
    }
    Ok(())
}

/// BPF_MAP_DELETE_BATCH over `keys`, [`CHUNK`] per call; a key already gone is skipped.
fn delete_batched<K: Pod, V: Pod>(m: sys::MapFd<'_, K, V>, mut keys: &[K]) -> Result<(), Fail> {
    let mut first = true;
    while !keys.is_empty() {
        let n = keys.len().min(CHUNK);
        match sys::delete_batch(m, &keys[..n]) {
            Ok(()) => keys = &keys[n..],
            // keys[done] is not in the map: skip it, go on with the rest.
            Err(e) if e.error.raw_os_error() == Some(libc::ENOENT) => keys = &keys[e.done + 1..],
            Err(e) => return Err(Fail::of(e, first, "deleting (BPF_MAP_DELETE_BATCH)")),
        }
        first = false;
    }
    Ok(())
}

/// One map's fd and how to talk to it: batch operations, else one syscall per element.
struct Ops<'a, K, V> {
    name: &'static str,
    map: sys::MapFd<'a, K, V>,
    batch: bool,
    /// Set when the kernel refused a batch command for this map.
    refused: bool,
    per_element: bool,
}

impl<K: Pod + Sync, V: Pod + Sync> Ops<'_, K, V> {
    fn err(&self, what: &'static str, e: io::Error) -> DatapathError {
        // A full hash map answers E2BIG ("Argument list too long"), a full LPM trie ENOSPC.
        let source = match e.raw_os_error() {
            Some(libc::E2BIG | libc::ENOSPC) => io::Error::new(
                e.kind(),
                format!("{e}: the map is full (entries of an old slot left behind?)"),
            ),
            _ => e,
        };
        DatapathError::Sync {
            map: self.name,
            what,
            source,
        }
    }

    /// Runs a batch operation unless batches are off or refused for this map. `Ok(true)`: done;
    /// `Ok(false)`: the caller must do it per element.
    fn batched(&mut self, op: impl FnOnce() -> Result<(), Fail>) -> Result<bool, DatapathError> {
        if !self.batch || self.refused {
            self.per_element = true;
            return Ok(false);
        }
        match op() {
            Ok(()) => Ok(true),
            Err(Fail::Unsupported) => {
                self.refused = true;
                self.per_element = true;
                Ok(false)
            }
            Err(Fail::Error(what, e)) => Err(self.err(what, e)),
        }
    }

    /// Every entry whose key satisfies `keep`, in any order.
    fn list(&mut self, keep: impl Fn(&K) -> bool) -> Result<Vec<(K, V)>, DatapathError> {
        let mut out = Vec::new();
        let m = self.map;
        let listed = self.batched(|| {
            let (mut keys, mut values) = (
                vec![sys::zeroed::<K>(); CHUNK],
                vec![sys::zeroed::<V>(); CHUNK],
            );
            let mut token = vec![0u8; size_of::<K>().max(8)];
            let mut first = true;
            loop {
                let (n, more) = sys::lookup_batch(m, &mut token, first, &mut keys, &mut values)
                    .map_err(|e| Fail::of(e, first, "listing (BPF_MAP_LOOKUP_BATCH)"))?;
                out.extend(
                    keys[..n]
                        .iter()
                        .zip(&values[..n])
                        .filter(|(k, _)| keep(k))
                        .map(|(k, v)| (*k, *v)),
                );
                if !more {
                    return Ok(());
                }
                first = false;
            }
        })?;
        if listed {
            return Ok(out);
        }
        out.clear();
        let (mut key, mut value) = (sys::zeroed::<K>(), sys::zeroed::<V>());
        let mut prev: Option<K> = None;
        while sys::next_key(self.map, prev.as_ref(), &mut key)
            .map_err(|e| self.err("listing (BPF_MAP_GET_NEXT_KEY)", e))?
        {
            prev = Some(key);
            if !keep(&key) {
                continue;
            }
            match sys::lookup_elem(self.map, &key, &mut value) {
                Ok(()) => out.push((key, value)),
                // Deleted since get_next_key: nothing to list.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(self.err("listing (BPF_MAP_LOOKUP_ELEM)", e)),
            }
        }
        Ok(out)
    }

    /// Deletes `keys`; a key already gone is fine.
    fn delete(&mut self, keys: &[K]) -> Result<(), DatapathError> {
        let m = self.map;
        if keys.is_empty() || self.batched(|| split(keys.len(), |r| delete_batched(m, &keys[r])))? {
            return Ok(());
        }
        for k in keys {
            match sys::delete_elem(m, k) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(self.err("deleting (BPF_MAP_DELETE_ELEM)", e)),
            }
        }
        Ok(())
    }

    /// Writes `keys[i] → values[i]`, creating or replacing.
    fn update(&mut self, keys: &[K], values: &[V]) -> Result<(), DatapathError> {
        let m = self.map;
        if keys.is_empty()
            || self.batched(|| {
                split(keys.len(), |r| {
                    update_batched(m, &keys[r.clone()], &values[r])
                })
            })?
        {
            return Ok(());
        }
        for (k, v) in keys.iter().zip(values) {
            sys::update_elem(m, k, v, sys::BPF_ANY)
                .map_err(|e| self.err("writing (BPF_MAP_UPDATE_ELEM)", e))?;
        }
        Ok(())
    }
}

/// The changes that turn `old` into `new`: the keys to delete, and the positions in `new` of
/// the entries to write (new, or with another value).
fn diff<K: Ord + Copy, V: PartialEq>(
    old: &Entries<K, V>,
    new: &Entries<K, V>,
) -> (Vec<K>, Vec<usize>) {
    use std::cmp::Ordering::*;
    let (mut del, mut write) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    loop {
        // Which side's next key comes first; a finished side never does.
        let step = match (old.keys.get(i), new.keys.get(j)) {
            (None, None) => break,
            (Some(_), None) => Less,
            (None, Some(_)) => Greater,
            (Some(o), Some(n)) => o.cmp(n),
        };
        match step {
            Less => {
                del.push(old.keys[i]);
                i += 1;
            }
            Greater => {
                write.push(j);
                j += 1;
            }
            Equal => {
                if old.values[i] != new.values[j] {
                    write.push(j);
                }
                i += 1;
                j += 1;
            }
        }
    }
    (del, write)
}

fn lpm<D: Copy, V: Copy>(m: &BTreeMap<(u32, D), V>) -> impl Iterator<Item = (LpmKey<D>, V)> + '_ {
    m.iter()
        .map(|(&(prefix_len, data), v)| (LpmKey { prefix_len, data }, *v))
}

fn pairs<K: Copy, V: Copy>(m: &BTreeMap<K, V>) -> impl Iterator<Item = (K, V)> + '_ {
    m.iter().map(|(k, v)| (*k, *v))
}

fn present<K: Copy>(s: &BTreeSet<K>) -> impl Iterator<Item = (K, u32)> + '_ {
    s.iter().map(|k| (*k, 1u32))
}

impl Datapath {
    fn map_data(&self, name: &'static str) -> Result<&MapData, DatapathError> {
        let m = self.map(name)?;
        use aya::maps::Map::*;
        match m {
            HashMap(d) | LpmTrie(d) => Ok(d),
            _ => Err(DatapathError::MapType(name)),
        }
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, DatapathError> {
        self.ebpf
            .as_mut()
            .and_then(|e| e.map_mut(name))
            .ok_or(DatapathError::MissingMap(name))
    }

    /// Makes the `slot` half of a policy map (`map` picks its field of the [`Cache`]) hold
    /// exactly `entries` (keys of that slot), touching nothing of the other slot.
    fn sync<K, V>(
        &mut self,
        slot: u8,
        map: fn(&mut Cache) -> &mut Cached<K, V>,
        entries: impl Iterator<Item = (K, V)>,
    ) -> Result<MapSync, DatapathError>
    where
        K: Pod + Ord + Send + Sync,
        V: Pod + PartialEq + Send + Sync,
    {
        let t = Instant::now();
        let (name, slot_of) = {
            let m = map(&mut self.written.cache);
            (m.name, m.slot_of)
        };
        let new = Entries::collect(entries);
        debug_assert!(new.keys.iter().all(|k| slot_of(k) == u32::from(slot)));
        // Taken out: should this sync fail half-way, the slot is unknown from then on.
        let old = map(&mut self.written.cache).slots[usize::from(slot)].take();
        let (batch, refused) = (self.written.batch, self.written.no_batch.contains(name));
        let data = self.map_data(name)?;
        let mut ops = Ops {
            name,
            map: sys::MapFd::<K, V>::check(data)
                .map_err(|source| DatapathError::Layout { map: name, source })?,
            batch,
            refused,
            per_element: false,
        };
        let (old, listed) = match old {
            Some(old) => (old, false),
            None => (
                Entries::collect(ops.list(|k| slot_of(k) == u32::from(slot))?.into_iter()),
                true,
            ),
        };
        let (del, write) = diff(&old, &new);
        drop(old);
        let r = ops.delete(&del).and_then(|()| {
            if write.len() == new.len() {
                ops.update(&new.keys, &new.values)
            } else {
                let keys: Vec<K> = write.iter().map(|&i| new.keys[i]).collect();
                let values: Vec<V> = write.iter().map(|&i| new.values[i]).collect();
                ops.update(&keys, &values)
            }
        });
        let (refused, per_element) = (ops.refused, ops.per_element);
        if refused {
            self.written.no_batch.insert(name);
        }
        r?;
        let report = MapSync {
            map: name,
            listed,
            deleted: del.len(),
            written: write.len(),
            unchanged: new.len() - write.len(),
            per_element,
            time: t.elapsed(),
        };
        map(&mut self.written.cache).slots[usize::from(slot)] = Some(new);
        Ok(report)
    }

    /// The live slot and generation.
    pub fn active(&self) -> Result<Active, DatapathError> {
        let m = self.map(MAP_ACTIVE)?;
        let a: Array<&MapData, Active> = Array::try_from(m).map_err(map_err(MAP_ACTIVE))?;
        a.get(&0, 0).map_err(map_err(MAP_ACTIVE))
    }

    /// The slot a new policy must be compiled for: the one not in use.
    pub fn next_slot(&self) -> Result<u8, DatapathError> {
        let a = self.active()?;
        Ok(if a.generation == 0 {
            0
        } else {
            1 - (a.slot as u8 & 1)
        })
    }

    /// What the last successful [`Datapath::apply`] did.
    pub fn last_apply(&self) -> Option<&ApplyReport> {
        self.written.last.as_ref()
    }

    /// Turns the kernel's batch map operations off (`false`): every map then uses one
    /// syscall per element, as on kernels without them. For tests and benchmarks.
    #[doc(hidden)]
    pub fn set_batch_ops(&mut self, on: bool) {
        self.written.batch = on;
    }

    /// Loads a policy compiled for [`Datapath::next_slot`] and makes it live. Returns the new
    /// generation. On error the live policy is untouched (only the inactive slot was written).
    pub fn apply(&mut self, c: &Compiled) -> Result<u64, DatapathError> {
        let t = Instant::now();
        let slot = c.slot;
        let next = self.next_slot()?;
        if slot != next {
            return Err(DatapathError::WrongSlot {
                compiled: slot,
                expected: next,
            });
        }
        let s32 = u32::from(slot);
        // Invalidate the slot first so a half-written slot can never become live by mistake.
        self.set_settings(s32, Settings::default())?;
        let maps = vec![
            self.sync(slot, |w| &mut w.id_exact, pairs(&c.id_exact))?,
            self.sync(slot, |w| &mut w.id_cidr, lpm(&c.id_cidr))?,
            self.sync(slot, |w| &mut w.mac, pairs(&c.mac))?,
            self.sync(slot, |w| &mut w.conduits, lpm(&c.conduits))?,
            self.sync(slot, |w| &mut w.zones, pairs(&c.zones))?,
            self.sync(slot, |w| &mut w.zone_ifs, present(&c.zone_ifs))?,
            self.sync(slot, |w| &mut w.live, pairs(&c.live))?,
            self.sync(slot, |w| &mut w.l2, present(&c.l2))?,
            self.sync(slot, |w| &mut w.failsafe, present(&c.failsafe))?,
        ];
        let mut maps = maps;
        maps.push(self.write_filters(slot, &c.filters)?);
        // The open grants of the new policy's on-demand conduits (none outside the agent).
        self.sync_grants(slot, &c.grants)?;
        self.set_settings(s32, c.settings)?;
        let write = t.elapsed();
        // The switch: one array update.
        let generation = self.active()?.generation + 1;
        let t = Instant::now();
        let m = self.map_mut(MAP_ACTIVE)?;
        let mut a: Array<&mut MapData, Active> = Array::try_from(m).map_err(map_err(MAP_ACTIVE))?;
        a.set(
            0,
            &Active {
                slot: s32,
                _pad: 0,
                generation,
            },
            0,
        )
        .map_err(map_err(MAP_ACTIVE))?;
        let swap = t.elapsed();
        self.written.last = Some(ApplyReport { maps, write, swap });
        Ok(generation)
    }

    /// Tells the kernel program what `ifindex` is (see [`IngressCfg`]); written before the
    /// program is attached there, and again when the interface changes (enslaved to a
    /// bridge, given a VLAN). Returns whether the entry changed.
    pub fn set_ingress(&mut self, ifindex: u32, cfg: &IngressCfg) -> Result<bool, DatapathError> {
        let m = self.map_mut(MAP_INGRESS)?;
        let mut h: aya::maps::HashMap<&mut MapData, u32, IngressCfg> =
            aya::maps::HashMap::try_from(m).map_err(map_err(MAP_INGRESS))?;
        if h.get(&ifindex, 0).ok().as_ref() == Some(cfg) {
            return Ok(false);
        }
        h.insert(&ifindex, cfg, 0).map_err(map_err(MAP_INGRESS))?;
        Ok(true)
    }

    /// Writes the slot's inspection filters into the filter array ([`MAP_FILTERS`]) at their
    /// indices, and clears the indices the slot's previous policy used beyond them (an
    /// array has no deletes: a cleared filter is all zeros, protocol 0, which denies every
    /// data segment, but no conduit of the new policy names it). Which indices were used is
    /// known from the last write of the slot; in a new process, from the kernel (a read of
    /// the slot's elements until the first zero one: the compiler numbers filters densely
    /// from 1).
    fn write_filters(
        &mut self,
        slot: u8,
        filters: &BTreeMap<FilterKey, Filter>,
    ) -> Result<MapSync, DatapathError> {
        let t = Instant::now();
        // Taken out: should a write fail half-way, the slot is unknown from then on.
        let known = self.written.cache.filters[usize::from(slot)].take();
        let m = self.map_mut(MAP_FILTERS)?;
        let mut a: Array<&mut MapData, Filter> =
            Array::try_from(m).map_err(map_err(MAP_FILTERS))?;
        let key = |filter: u32| FilterKey {
            slot: u32::from(slot),
            filter,
        };
        let (used, listed) = match known {
            Some(n) => (n, false),
            None => {
                let mut n = 0;
                while n < MAX_FILTERS
                    && a.get(&key(n + 1).index(), 0)
                        .map_err(map_err(MAP_FILTERS))?
                        .proto
                        != 0
                {
                    n += 1;
                }
                (n, true)
            }
        };
        let (mut written, mut deleted, mut unchanged) = (0, 0, 0);
        for (k, f) in filters {
            if a.get(&k.index(), 0).map_err(map_err(MAP_FILTERS))? == *f {
                unchanged += 1;
                continue;
            }
            a.set(k.index(), f, 0).map_err(map_err(MAP_FILTERS))?;
            written += 1;
        }
        let n = filters.len() as u32;
        for filter in n + 1..=used {
            a.set(key(filter).index(), &Filter::default(), 0)
                .map_err(map_err(MAP_FILTERS))?;
            deleted += 1;
        }
        self.written.cache.filters[usize::from(slot)] = Some(n);
        Ok(MapSync {
            map: MAP_FILTERS,
            listed,
            deleted,
            written,
            unchanged,
            // Arrays have no batch operations here: what was read or written went one element
            // at a time.
            per_element: listed || written + deleted > 0,
            time: t.elapsed(),
        })
    }

    fn set_settings(&mut self, slot: u32, s: Settings) -> Result<(), DatapathError> {
        let m = self.map_mut(MAP_SETTINGS)?;
        let mut a: Array<&mut MapData, Settings> =
            Array::try_from(m).map_err(map_err(MAP_SETTINGS))?;
        a.set(slot, &s, 0).map_err(map_err(MAP_SETTINGS))
    }
}

#[cfg(test)]
mod tests {
    use super::{Entries, diff};

    fn entries(v: &[(i32, char)]) -> Entries<i32, char> {
        Entries::collect(v.iter().copied())
    }

    #[test]
    fn diff_deletes_writes_and_keeps() {
        let old = entries(&[(1, 'a'), (2, 'b'), (4, 'd'), (6, 'f')]);
        let new = entries(&[(0, 'z'), (2, 'b'), (4, 'D'), (5, 'e')]);
        let (del, write) = diff(&old, &new);
        assert_eq!(del, [1, 6]);
        assert_eq!(write, [0, 2, 3]);
        assert_eq!(diff(&old, &old), (vec![], vec![]));
        let (del, write) = diff(&old, &Entries::new());
        assert_eq!((del.len(), write.len()), (4, 0));
        let (del, write) = diff(&Entries::new(), &new);
        assert_eq!((del.len(), write), (0, vec![0, 1, 2, 3]));
    }

    #[test]
    fn entries_are_sorted_and_unique() {
        let e = entries(&[(3, 'c'), (1, 'a'), (3, 'x'), (2, 'b')]);
        assert_eq!(e.keys, [1, 2, 3]);
        assert_eq!(e.values, ['a', 'b', 'c']);
    }
}
