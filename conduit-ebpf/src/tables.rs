//! The compiled policy as the verdict function sees it: one BPF map lookup per question.
use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        bpf_fib_lookup, xdp_md,
    },
    helpers::generated::{
        bpf_fib_lookup as fib_lookup, bpf_ktime_get_boot_ns, bpf_ktime_get_tai_ns,
    },
    maps::lpm_trie::Key,
};
use conduit_common::{
    flow::{FlowKey, FlowVal},
    verdict::{Fib, Packet, Route, Tables},
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
    fn conduit_info(&self, key: &ConduitKey) -> Option<ConduitInfo> {
        // SAFETY: copied out at once (as `id_exact`).
        unsafe { CDT_LIVE.get(key).copied() }
    }

    #[inline(always)]
    fn now_tai_ns(&self) -> u64 {
        // SAFETY: a helper without arguments (Linux 6.1 and later).
        unsafe { bpf_ktime_get_tai_ns() }
    }

    #[inline(always)]
    fn granted(&self, key: &ConduitKey) -> bool {
        // SAFETY: copied out at once (as `id_exact`).
        match unsafe { CDT_GRANTS.get(key).copied() } {
            // SAFETY: a helper without arguments (Linux 5.8 and later).
            Some(g) => ((unsafe { bpf_ktime_get_boot_ns() } / 1_000_000_000) as u32) < g.until,
            None => false,
        }
    }

    #[inline(always)]
    fn filter(&self, key: &FilterKey) -> Option<&Filter> {
        // Read in place: an array's elements are never freed, and the agent writes only the
        // idle slot's.
        CDT_FILTERS.get(key.index())
    }

    #[inline(always)]
    fn inspect(&self, key: &FilterKey, p: &Packet) -> Option<Reason> {
        inspect::from_code(conduit_inspect(p, key.slot, key.filter))
    }

    #[inline(always)]
    fn failsafe(&self, key: &FailsafeKey) -> bool {
        CDT_FAILSAFE.get_ptr(key).is_some()
    }

    #[inline(always)]
    fn ingress(&self, ifindex: u32) -> Option<IngressCfg> {
        // SAFETY: copied out at once; the agent replaces entries whole.
        unsafe { CDT_INGRESS.get(&ifindex).copied() }
    }

    #[inline(always)]
    fn zone_if(&self, key: &ZoneIfKey) -> bool {
        CDT_ZONE_IFS.get_ptr(key).is_some()
    }
}

/// The kernel's FIB, asked with `bpf_fib_lookup` from the XDP context.
pub struct KernelFib(pub *mut xdp_md);

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

impl Fib for KernelFib {
    #[inline(always)]
    fn reverse(&self, p: &Packet) -> Route {
        // SAFETY: a plain C struct; all-zero is its empty request.
        let mut f: bpf_fib_lookup = unsafe { core::mem::zeroed() };
        // The answer's direction: from the packet's destination to its source, as it would
        // arrive on the ingress interface (policy routing rules see the same ports).
        f.l4_protocol = p.proto;
        f.sport = p.dport.to_be();
        f.dport = p.sport.to_be();
        f.ifindex = p.ifindex;
        if p.family == FAMILY_V4 {
            f.family = AF_INET;
            f.__bindgen_anon_3.ipv4_src =
                u32::from_ne_bytes([p.dst[0], p.dst[1], p.dst[2], p.dst[3]]);
            f.__bindgen_anon_4.ipv4_dst =
                u32::from_ne_bytes([p.src[0], p.src[1], p.src[2], p.src[3]]);
        } else {
            f.family = AF_INET6;
            let mut i = 0;
            while i < 4 {
                let w = |a: &[u8; 16]| {
                    u32::from_ne_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]])
                };
                // SAFETY: writes into plain unions of integers.
                unsafe {
                    f.__bindgen_anon_3.ipv6_src[i] = w(&p.dst);
                    f.__bindgen_anon_4.ipv6_dst[i] = w(&p.src);
                }
                i += 1;
            }
        }
        // SAFETY: the XDP context of this run and a request on this frame's stack, of the
        // size the kernel expects (64 bytes since 4.18).
        let r = unsafe {
            fib_lookup(
                self.0 as *mut _,
                &mut f,
                core::mem::size_of::<bpf_fib_lookup>() as i32,
                0,
            )
        };
        if r < 0 {
            return Route::None;
        }
        match r as u32 {
            BPF_FIB_LKUP_RET_SUCCESS | BPF_FIB_LKUP_RET_NO_NEIGH => Route::Via(f.ifindex),
            BPF_FIB_LKUP_RET_FWD_DISABLED => Route::NotRouting,
            _ => Route::None,
        }
    }
}
const _: () = assert!(core::mem::size_of::<bpf_fib_lookup>() == 64);

/// Protocol inspection ([`conduit_common::inspect::check`]) as a BPF global function: the
/// verifier checks a global function once, on its own, with its arguments as their types
/// allow (a pointer may be null, the memory behind it any bytes), and its calls as a call
/// returning any number. Inlined, the inspection code was checked again for every path of
/// the fast and full decisions that reaches one of its three call sites: with EtherNet/IP
/// that took Debian 12's 6.1 past its 1,000,000 instructions. A global function takes and
/// returns scalars and pointers to memory of a size known from BTF only, hence the code
/// ([`inspect::to_code`]) rather than an `Option<Reason>`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn conduit_inspect(p: *const Packet, slot: u32, filter: u32) -> u32 {
    // SAFETY: the verifier lets a global function's pointer argument be null (checked here)
    // or point to a whole `Packet` (the caller's is the per-CPU scratch).
    let Some(p) = (unsafe { p.as_ref() }) else {
        return Reason::Malformed as u32;
    };
    let key = FilterKey { slot, filter };
    inspect::to_code(inspect::check(KernelTables.filter(&key), p))
}
