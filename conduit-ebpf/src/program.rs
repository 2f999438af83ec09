//! The entry point: parse, decide (the shared verdict function), update flows and counters,
//! and turn the verdict into an XDP action.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::bpf_ktime_get_ns,
    macros::xdp,
    programs::XdpContext,
};
use conduit_common::{
    Verdict,
    parse::{Frame, parse_into},
    verdict::{Packet, decide, malformed},
};

use crate::{
    counters, events, flow,
    maps::{CDT_ACTIVE, CDT_SCRATCH, CDT_TRACE},
    tables::KernelTables,
};

/// Set to 1 at load time (read-only data) by tests and `replay` to record every decision in
/// `CDT_TRACE`. Zero in production, where the verifier drops the tracing code.
#[unsafe(no_mangle)]
static CONDUIT_TRACE: u32 = 0;

/// The packet as the shared parser sees it: every load is bounds-checked against data_end.
struct XdpFrame {
    start: usize,
    end: usize,
}

impl Frame for XdpFrame {
    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let at = self.start.checked_add(off)?;
        if at.checked_add(N)? > self.end {
            return None;
        }
        // SAFETY: [at, at + N) lies within [data, data_end), checked just above.
        Some(unsafe { core::ptr::read_unaligned(at as *const [u8; N]) })
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.end - self.start
    }
}

#[xdp]
pub fn conduit_xdp(ctx: XdpContext) -> u32 {
    let frame = XdpFrame {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    let len = frame.len() as u64;
    // The live slot, read once: the whole frame is judged by one policy.
    let slot = match CDT_ACTIVE.get(0) {
        Some(a) => a.slot as u8,
        None => 0,
    };
    let t = KernelTables;
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(scratch) = CDT_SCRATCH.get_ptr_mut(0) else {
        // Cannot happen (a one-slot per-CPU array); fail closed if it ever does.
        return XDP_DROP;
    };
    // SAFETY: this CPU's slot, used only while this program runs on it (XDP programs are not
    // preempted by another XDP run on the same CPU).
    let p = unsafe { &mut *scratch };
    *p = Packet::default();
    let d = match parse_into(&frame, p) {
        Ok(()) => {
            let p: &Packet = p;
            let d = decide(&t, slot, p, now);
            flow::update(&d, p, now);
            if d.log {
                events::emit(&d, Some(p), ifindex, now);
            }
            d
        }
        Err(_) => {
            let d = malformed(&t, slot);
            if d.log {
                events::emit(&d, None, ifindex, now);
            }
            d
        }
    };
    counters::count(&d, len);
    // SAFETY: a read of a plain static (volatile, so the compiler keeps the load that the
    // loader's value replaces).
    if unsafe { core::ptr::read_volatile(&CONDUIT_TRACE) } != 0
        && let Some(t) = CDT_TRACE.get_ptr_mut(0)
    {
        // SAFETY: the trace slot is only read by the test harness between runs.
        unsafe {
            (*t).seq += 1;
            (*t).verdict = d.verdict as u32;
            (*t).reason = d.reason as u32;
            (*t).conduit = d.conduit;
            (*t).src_zone = d.src_zone;
            (*t).dst_zone = d.dst_zone;
            (*t).flow = u32::from(d.flow);
        }
    }
    match d.verdict {
        Verdict::Deny => XDP_DROP,
        Verdict::Allow | Verdict::WouldDeny => XDP_PASS,
    }
}

/// An empty program that passes every frame: the floor the benchmarks measure Conduit's
/// per-packet cost against, loaded only by them.
#[xdp]
pub fn conduit_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}
