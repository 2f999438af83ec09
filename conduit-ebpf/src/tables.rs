//! The compiled policy as the verdict function sees it: one BPF map lookup per question.
use aya_ebpf::maps::lpm_trie::Key;
use conduit_common::{
    flow::{FlowKey, FlowVal},
    verdict::Tables,
    *,
};

use crate::maps::*;

pub struct KernelTables;

impl Tables for KernelTables {
    #[inline(always)]
    fn id_exact(&self, key: &IpKey) -> Option<Identity> {
        // SAFETY: the value is copied out at once; the map has BPF_F_NO_PREALLOC, so a
        // concurrent delete cannot alias the element (RCU keeps it readable).
        unsafe { CDT_ID_EXACT.get(key).copied() }
    }

    #[inline(always)]
    fn id_cidr(&self, key: &LpmIpData) -> Option<Identity> {
        CDT_ID_CIDR
            .get(&Key::new(LPM_IP_HEADER_BITS + 128, *key))
            .copied()
    }

    #[inline(always)]
    fn mac(&self, key: &MacKey) -> Option<MacBinding> {
        // SAFETY: as in `id_exact`.
        unsafe { CDT_MAC.get(key).copied() }
    }

    #[inline(always)]
    fn conduit(&self, key: &LpmConduitData) -> Option<ConduitHit> {
        CDT_CONDUITS
            .get(&Key::new(LPM_CONDUIT_FULL_BITS, *key))
            .copied()
    }

    #[inline(always)]
    fn zone(&self, key: &ZoneKey) -> Option<ZoneCfg> {
        // SAFETY: copied out at once; entries are only replaced whole by the agent.
        unsafe { CDT_ZONES.get(key).copied() }
    }

    #[inline(always)]
    fn l2_allowed(&self, key: &EtherTypeKey) -> bool {
        CDT_L2.get_ptr(key).is_some()
    }

    #[inline(always)]
    fn settings(&self, slot: u32) -> Option<Settings> {
        CDT_SETTINGS.get(slot).copied()
    }

    #[inline(always)]
    fn flow(&self, key: &FlowKey) -> Option<FlowVal> {
        // SAFETY: copied out at once; a racing update at worst gives a slightly older
        // `last_seen`.
        crate::flow::get(key).map(|v| unsafe { *v })
    }

    #[inline(always)]
    fn live(&self, key: &ConduitKey) -> bool {
        CDT_LIVE.get_ptr(key).is_some()
    }

    #[inline(always)]
    fn modbus(&self, key: &ModbusKey) -> Option<&ModbusRule> {
        // SAFETY: read in place; BPF_F_NO_PREALLOC keeps a deleted element readable (RCU)
        // until the program returns, and the agent only deletes filters of the idle slot.
        unsafe { CDT_MODBUS.get(key) }
    }

    #[inline(always)]
    fn failsafe(&self, key: &FailsafeKey) -> bool {
        CDT_FAILSAFE.get_ptr(key).is_some()
    }
}
