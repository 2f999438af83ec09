//! Counters: totals per verdict, per-conduit traffic, drops per zone pair and reason.
use aya_ebpf::maps::PerCpuHashMap;
use conduit_common::{ConduitDropKey, Counter, DropKey, NO_CONDUIT, Verdict, verdict::Decision};

use crate::maps::{CDT_CDROPS, CDT_CSTATS, CDT_DROPS, CDT_TOTALS};

/// Adds one packet of `len` bytes under `key`, creating the entry on first use.
#[inline(always)]
fn bump<K>(map: &PerCpuHashMap<K, Counter>, key: &K, len: u64) {
    match map.get_ptr_mut(key) {
        // SAFETY: per-CPU value, only this CPU touches it while the program runs.
        Some(c) => unsafe { (*c).add(len) },
        None => {
            let _ = map.insert(
                key,
                &Counter {
                    packets: 1,
                    bytes: len,
                },
                0,
            );
        }
    }
}

#[inline(always)]
pub fn count(d: &Decision, len: u64) {
    if let Some(c) = CDT_TOTALS.get_ptr_mut(d.verdict as u32) {
        // SAFETY: per-CPU array slot.
        unsafe { (*c).add(len) };
    }
    match d.verdict {
        Verdict::Allow => {
            if d.conduit != NO_CONDUIT {
                bump(&CDT_CSTATS, &d.conduit, len);
            }
        }
        Verdict::Deny | Verdict::WouldDeny => {
            let key = DropKey {
                src_zone: d.src_zone,
                dst_zone: d.dst_zone,
                reason: d.reason as u32,
                verdict: d.verdict as u32,
            };
            bump(&CDT_DROPS, &key, len);
            // Denied by a conduit's own filter (Modbus inspection): counted per conduit too.
            if d.conduit != NO_CONDUIT {
                let key = ConduitDropKey {
                    conduit: d.conduit,
                    reason: d.reason as u32,
                    verdict: d.verdict as u32,
                    _pad: 0,
                };
                bump(&CDT_CDROPS, &key, len);
            }
        }
    }
}
