//! The grants of on-demand conduits in the kernel ([`MAP_GRANTS`], SPEC §8): the agent writes
//! them for the live slot (`conduit grant`) and for the idle slot before a reload swaps it in;
//! `conduit revoke` deletes them, also from the pins alone when no agent runs.
//!
//! The map is small (one entry per open grant and slot) and written from more than one place,
//! so unlike the policy maps (`apply.rs`) it is never diffed against a remembered copy: every
//! sync lists it from the kernel.
use std::collections::BTreeMap;

use aya::maps::{HashMap, MapData};
use conduit_common::{ConduitKey, Grant, MAP_GRANTS};

use super::{Datapath, DatapathError};

fn map_err(e: aya::maps::MapError) -> DatapathError {
    DatapathError::Map(MAP_GRANTS, e)
}

/// A delete whose key is gone already (a concurrent revoke) did what was asked.
fn deleted(r: Result<(), aya::maps::MapError>) -> Result<(), DatapathError> {
    match r {
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(aya::maps::MapError::KeyNotFound) | Ok(()) => Ok(()),
        Err(e) => Err(map_err(e)),
    }
}

impl Datapath {
    fn grants_mut(&mut self) -> Result<HashMap<&mut MapData, ConduitKey, Grant>, DatapathError> {
        let m = match self.ebpf.as_mut().and_then(|e| e.map_mut(MAP_GRANTS)) {
            Some(m) => m,
            None => self
                .pinned
                .get_mut(MAP_GRANTS)
                .ok_or(DatapathError::MissingMap(MAP_GRANTS))?,
        };
        HashMap::try_from(m).map_err(map_err)
    }

    /// Every grant in the kernel, both slots.
    pub fn grants(&self) -> Result<BTreeMap<ConduitKey, Grant>, DatapathError> {
        let h: HashMap<&MapData, ConduitKey, Grant> =
            HashMap::try_from(self.map(MAP_GRANTS)?).map_err(map_err)?;
        h.iter()
            .map(|r| r.map_err(map_err))
            .collect::<Result<_, _>>()
    }

    /// Opens (or moves the end of) the grant of conduit `key`.
    pub fn set_grant(&mut self, key: &ConduitKey, g: &Grant) -> Result<(), DatapathError> {
        self.grants_mut()?.insert(key, g, 0).map_err(map_err)
    }

    /// Closes conduit `conduit`'s grants in both slots; how many there were.
    pub fn remove_grants(&mut self, conduit: u32) -> Result<usize, DatapathError> {
        let keys: Vec<ConduitKey> = self
            .grants()?
            .into_keys()
            .filter(|k| k.conduit == conduit)
            .collect();
        let mut h = self.grants_mut()?;
        for k in &keys {
            deleted(h.remove(k))?;
        }
        Ok(keys.len())
    }

    /// Makes slot `slot` hold exactly `grants` (conduit id → end, CLOCK_BOOTTIME seconds),
    /// touching nothing of the other slot.
    pub(crate) fn sync_grants(
        &mut self,
        slot: u8,
        grants: &BTreeMap<u32, u32>,
    ) -> Result<(), DatapathError> {
        let s = u32::from(slot);
        let stale: Vec<ConduitKey> = self
            .grants()?
            .into_iter()
            .filter(|(k, g)| k.slot == s && grants.get(&k.conduit) != Some(&g.until))
            .map(|(k, _)| k)
            .collect();
        let mut h = self.grants_mut()?;
        for k in &stale {
            deleted(h.remove(k))?;
        }
        for (&conduit, &until) in grants {
            h.insert(
                &ConduitKey { slot: s, conduit },
                &Grant { until, _pad: 0 },
                0,
            )
            .map_err(map_err)?;
        }
        Ok(())
    }
}
