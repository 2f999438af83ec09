//! Writing a compiled policy into the kernel maps: fill the inactive slot, then flip
//! `CDT_ACTIVE` in one array update. A packet reads the slot once, so it is judged wholly by
//! the old policy or wholly by the new one.
use std::collections::BTreeMap;

use aya::{
    Pod,
    maps::{
        Array, HashMap, MapData,
        lpm_trie::{Key, LpmTrie},
    },
};
use conduit_common::*;

use super::{Datapath, DatapathError};
use crate::policy::compile::Compiled;

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    move |e| DatapathError::Map(name, e)
}

impl Datapath {
    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, DatapathError> {
        self.ebpf
            .as_mut()
            .and_then(|e| e.map_mut(name))
            .ok_or(DatapathError::MissingMap(name))
    }

    /// Replaces the hash map's entries of `slot` with `entries`.
    fn sync_hash<K: Pod + Ord, V: Pod>(
        &mut self,
        name: &'static str,
        slot: u32,
        slot_of: fn(&K) -> u32,
        entries: impl Iterator<Item = (K, V)>,
    ) -> Result<(), DatapathError> {
        let mut m: HashMap<&mut MapData, K, V> =
            HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        let stale: Vec<K> = m
            .keys()
            .filter_map(Result::ok)
            .filter(|k| slot_of(k) == slot)
            .collect();
        for k in stale {
            m.remove(&k).map_err(map_err(name))?;
        }
        for (k, v) in entries {
            m.insert(&k, &v, 0).map_err(map_err(name))?;
        }
        Ok(())
    }

    /// Replaces the LPM trie's entries of `slot` (the first data byte) with `entries`.
    fn sync_lpm<K: Pod + Ord, V: Pod>(
        &mut self,
        name: &'static str,
        slot: u8,
        first_byte: fn(&K) -> u8,
        entries: &BTreeMap<(u32, K), V>,
    ) -> Result<(), DatapathError> {
        let mut m: LpmTrie<&mut MapData, K, V> =
            LpmTrie::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        let stale: Vec<Key<K>> = m
            .keys()
            .filter_map(Result::ok)
            .filter(|k| first_byte(&k.data()) == slot)
            .collect();
        for k in stale {
            m.remove(&k).map_err(map_err(name))?;
        }
        for ((plen, data), v) in entries {
            m.insert(&Key::new(*plen, *data), v, 0)
                .map_err(map_err(name))?;
        }
        Ok(())
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

    /// Loads a policy compiled for [`Datapath::next_slot`] and makes it live. Returns the new
    /// generation. On error the live policy is untouched (only the inactive slot was written).
    pub fn apply(&mut self, c: &Compiled) -> Result<u64, DatapathError> {
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
        self.sync_hash(
            MAP_ID_EXACT,
            s32,
            |k: &IpKey| u32::from(k.slot),
            c.id_exact.iter().map(|(k, v)| (*k, *v)),
        )?;
        self.sync_lpm(MAP_ID_CIDR, slot, |d: &LpmIpData| d[0], &c.id_cidr)?;
        self.sync_hash(
            MAP_MAC,
            s32,
            |k: &MacKey| u32::from(k.slot),
            c.mac.iter().map(|(k, v)| (*k, *v)),
        )?;
        self.sync_hash(
            MAP_MODBUS,
            s32,
            |k: &ModbusKey| k.slot,
            c.modbus.iter().map(|(k, v)| (*k, *v)),
        )?;
        self.sync_lpm(MAP_CONDUITS, slot, |d: &LpmConduitData| d[0], &c.conduits)?;
        self.sync_hash(
            MAP_ZONES,
            s32,
            |k: &ZoneKey| k.slot,
            c.zones.iter().map(|(k, v)| (*k, *v)),
        )?;
        self.sync_hash(
            MAP_LIVE,
            s32,
            |k: &ConduitKey| k.slot,
            c.live.iter().map(|(k, v)| (*k, *v)),
        )?;
        self.sync_hash(
            MAP_L2,
            s32,
            |k: &EtherTypeKey| u32::from(k.slot),
            c.l2.iter().map(|k| (*k, 1u32)),
        )?;
        self.sync_hash(
            MAP_FAILSAFE,
            s32,
            |k: &FailsafeKey| u32::from(k.slot),
            c.failsafe.iter().map(|k| (*k, 1u32)),
        )?;
        self.set_settings(s32, c.settings)?;
        // The switch: one array update.
        let generation = self.active()?.generation + 1;
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
        Ok(generation)
    }

    fn set_settings(&mut self, slot: u32, s: Settings) -> Result<(), DatapathError> {
        let m = self.map_mut(MAP_SETTINGS)?;
        let mut a: Array<&mut MapData, Settings> =
            Array::try_from(m).map_err(map_err(MAP_SETTINGS))?;
        a.set(slot, &s, 0).map_err(map_err(MAP_SETTINGS))
    }
}
