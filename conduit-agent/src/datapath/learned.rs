//! Draining what a learning datapath recorded (`conduit_common::learn`): the agent takes the
//! records out of the kernel's maps (read and deleted in one call, so an event recorded
//! meanwhile lands in a new record and is drained next time, never lost between a read and
//! a delete) and keeps them on disk (`agent::learn`).
use std::mem::size_of;

use aya::Pod;
use conduit_common::learn::{
    LEARNSTATS_LEN, LearnKey, LearnModbusKey, LearnModbusVal, LearnVal, MAP_LEARN,
    MAP_LEARN_MODBUS, MAP_LEARN_STATS,
};

use super::{Datapath, DatapathError, sys};

/// Entries per batch call: more than a hash bucket ever holds (the kernel refuses a batch
/// smaller than the bucket it is at with ENOSPC).
const CHUNK: usize = 1024;

/// What one drain took out of the kernel.
#[derive(Debug, Default)]
pub struct Learned {
    pub flows: Vec<(LearnKey, LearnVal)>,
    pub modbus: Vec<(LearnModbusKey, LearnModbusVal)>,
}

impl Datapath {
    /// Takes every record out of the learning maps.
    pub fn drain_learned(&self) -> Result<Learned, DatapathError> {
        Ok(Learned {
            flows: self.drain(MAP_LEARN)?,
            modbus: self.drain(MAP_LEARN_MODBUS)?,
        })
    }

    /// Records that did not fit in the kernel's maps: (flows, Modbus), summed over CPUs.
    pub fn learn_dropped(&self) -> Result<[u64; LEARNSTATS_LEN as usize], DatapathError> {
        self.per_cpu_sums(MAP_LEARN_STATS)
    }

    fn drain<K: Pod, V: Pod>(&self, name: &'static str) -> Result<Vec<(K, V)>, DatapathError> {
        let fd = match self.map(name)? {
            aya::maps::Map::HashMap(d) => sys::MapFd::<K, V>::check(d)
                .map_err(|source| DatapathError::Layout { map: name, source })?,
            _ => return Err(DatapathError::MapType(name)),
        };
        let err = |what, source| DatapathError::Sync {
            map: name,
            what,
            source,
        };
        let (mut keys, mut values) = (
            vec![sys::zeroed::<K>(); CHUNK],
            vec![sys::zeroed::<V>(); CHUNK],
        );
        let mut token = vec![0u8; size_of::<K>().max(8)];
        let mut out = Vec::new();
        let mut first = true;
        loop {
            match sys::lookup_and_delete_batch(fd, &mut token, first, &mut keys, &mut values) {
                Ok((n, more)) => {
                    out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
                    if !more {
                        return Ok(out);
                    }
                    first = false;
                }
                // A kernel without batch operations for hash maps (before 5.6): one element
                // at a time (a record updated between its read and its delete loses that
                // update; such kernels are below what Conduit supports anyway).
                Err(e) if first && e.error.raw_os_error() == Some(sys::ENOTSUPP) => break,
                Err(e) => return Err(err("draining (BPF_MAP_LOOKUP_AND_DELETE_BATCH)", e.error)),
            }
        }
        let (mut key, mut value) = (sys::zeroed::<K>(), sys::zeroed::<V>());
        while sys::next_key(fd, None, &mut key).map_err(|e| err("draining (GET_NEXT_KEY)", e))? {
            match sys::lookup_elem(fd, &key, &mut value) {
                Ok(()) => out.push((key, value)),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(err("draining (LOOKUP_ELEM)", e)),
            }
            match sys::delete_elem(fd, &key) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(err("draining (DELETE_ELEM)", e)),
            }
        }
        Ok(out)
    }
}
