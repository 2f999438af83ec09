//! The entry point: parse, decide (the shared verdict function), update flows and counters,
//! and turn the verdict into an XDP action.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::bpf_ktime_get_coarse_ns,
    macros::xdp,
    programs::XdpContext,
};
use conduit_common::{
    Verdict,
    inspect::{self, WINDOW},
    learn::LearnNote,
    parse::{Frame, parse_into},
    verdict::{
        Decision, Fast, Packet, check_ingress, decide_with, fast_path, malformed,
        needs_ingress_check,
    },
};

use crate::{
    counters, events, flow, learn,
    maps::{CDT_ACTIVE, CDT_DECISION, CDT_LEARNNOTE, CDT_SCRATCH, CDT_SETTINGS, CDT_TRACE},
    tables::{KernelFib, KernelTables},
};

/// Set to 1 at load time (read-only data) by tests and `replay` to record every decision in
/// `CDT_TRACE`. Zero in production, where the verifier drops the tracing code.
#[unsafe(no_mangle)]
static CONDUIT_TRACE: u32 = 0;

/// Set to 1 at load time (read-only data) by `conduit run --learn-dir`: record what the
/// datapath learns (`crate::learn`). Zero otherwise, and the verifier drops the learning code.
#[unsafe(no_mangle)]
static CONDUIT_LEARN: u32 = 0;

/// The packet as the shared parser sees it: every load is bounds-checked against data_end.
struct XdpFrame {
    start: usize,
    end: usize,
    /// The policy slot the frame is judged by, and whether the program learns: whether
    /// anything will read the payload's window (see [`XdpFrame::window_read`]).
    slot: u8,
    learning: bool,
}

impl XdpFrame {
    /// Copies the `C` bytes at `off + at` to `out[at..]` when `len - at` holds them, and
    /// moves `at` past them. The store is volatile, so that the compiler does not merge the
    /// chunks into one copy out of the packet (a `memmove` whose reads the verifier refuses).
    #[inline(always)]
    fn chunk<const C: usize>(
        &self,
        off: usize,
        len: usize,
        at: &mut usize,
        out: &mut [u8; WINDOW],
    ) {
        if len - *at < C {
            return;
        }
        // Opaque: else the compiler drops the bounds check below as known from the parser's,
        // and the verifier needs it here.
        let ptr = self.start + inspect::opaque(off + *at);
        if ptr + C <= self.end {
            // SAFETY: [ptr, ptr + C) lies within the frame, checked just above.
            let b = unsafe { core::ptr::read_unaligned(ptr as *const [u8; C]) };
            let to = *at & (WINDOW - 1);
            if to + C <= WINDOW {
                // SAFETY: within `out` (checked); volatile, so that the compiler does not merge
                // the chunks into one copy from the packet without bounds checks.
                unsafe { core::ptr::write_volatile(out.as_mut_ptr().add(to).cast::<[u8; C]>(), b) };
            }
        }
        *at += C;
    }

    /// Whether anything reads the payload's window of this frame: protocol inspection, when
    /// the policy has a filter (`Settings::inspect`, set by the compiler when a rule has
    /// one; no conduit can then hand the decision a filter), and the learning code (Modbus
    /// requests). Else the window stays zeros, which nothing reads.
    #[inline(always)]
    fn window_read(&self) -> bool {
        self.learning
            || CDT_SETTINGS
                .get(u32::from(self.slot))
                .is_some_and(|s| s.inspect == 1)
    }
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

    /// With direct packet reads in chunks of constant sizes: the window's length in binary
    /// (64, or 32, 16, 8, 4, 2, 1), each chunk one load and one store (see
    /// [`XdpFrame::chunk`]). About 8 ns for a Modbus request; `bpf_xdp_load_bytes` took 65
    /// (and one call with the length itself needed the verifier to know that it is not zero,
    /// which Debian 12's 6.1 cannot learn).
    ///
    /// Only when something will read the window ([`XdpFrame::window_read`]).
    #[inline(always)]
    fn load_window(&self, off: usize, len: usize, out: &mut [u8; WINDOW]) {
        if len == 0 || !self.window_read() {
            return;
        }
        const _: () = assert!(WINDOW == 64);
        let len = if len < WINDOW { len } else { WINDOW };
        let mut at = 0;
        self.chunk::<64>(off, len, &mut at, out);
        self.chunk::<32>(off, len, &mut at, out);
        self.chunk::<16>(off, len, &mut at, out);
        self.chunk::<8>(off, len, &mut at, out);
        self.chunk::<4>(off, len, &mut at, out);
        self.chunk::<2>(off, len, &mut at, out);
        self.chunk::<1>(off, len, &mut at, out);
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.end - self.start
    }
}

const PACKET_WORDS: usize = core::mem::size_of::<Packet>() / 8;
const _: () = assert!(core::mem::size_of::<Packet>() == PACKET_WORDS * 8);

/// `*p = Packet::default()` in eleven 8-byte stores: written plainly, the compiler calls a
/// byte-by-byte `memset` subprogram, a quarter of the whole program's time.
#[inline(always)]
fn zero(p: *mut Packet) {
    let w = p as *mut u64;
    let mut i = 0;
    while i < PACKET_WORDS {
        // SAFETY: within the scratch slot; an all-zero Packet is its Default. Volatile, so
        // the stores are not merged back into a memset call.
        unsafe { core::ptr::write_volatile(w.add(i), 0) };
        i += 1;
    }
}

/// The fast path (`conduit_common::verdict::fast_path`) as a BPF subprogram of its own: kept
/// out of line, its registers and stack slots cannot be confused with the full decision's
/// by the verifier.
#[inline(never)]
fn fast(p: &Packet, slot: u8, generation: u64, now: u64, out: &mut Decision) -> Fast {
    fast_path(
        &KernelTables,
        &mut flow::KernelFlows,
        slot,
        generation,
        p,
        now,
        out,
    )
}

/// The full decision, out of line. The verifier adds up the stack frames of a call chain
/// against a 512-byte limit, each frame rounded up to 32 bytes on older kernels: inlined
/// here, the entry point's frame was 368 bytes and with [`fast`]'s 136 came to 544 on Debian
/// 12's 6.1, which refused the program. Now the entry point keeps little more than the
/// decision, and each stage ([`parse`], [`fast`], [`full`], [`ingress`], [`update`],
/// [`log`], [`reject`]) has a frame of its own that is freed before the next is called.
/// `datapath::budget` checks the deepest chain on every build.
#[inline(never)]
fn full(p: &Packet, slot: u8, now: u64, no_flow: bool, out: &mut Decision) {
    *out = decide_with(&KernelTables, slot, p, now, no_flow);
}

/// The interface checks of a frame the full decision lets through (reverse path against
/// the kernel's FIB, zones' `interfaces`), out of line: the FIB request is 64 bytes.
#[inline(never)]
fn ingress(ctx: *mut aya_ebpf::bindings::xdp_md, p: &Packet, slot: u8, out: &mut Decision) {
    check_ingress(&KernelTables, &KernelFib(ctx), slot, p, out);
}

/// The flow table after the full decision (and the interface checks), out of line; what
/// the learning code records (0 when not learning).
#[inline(never)]
fn update(p: &Packet, now: u64, generation: u64, learn: bool, d: &Decision) -> u8 {
    flow::update(d, p, now, generation, learn)
}

/// The learning code, out of line (only in a program loaded for learning), called last. It
/// reads what the frame's decision teaches from `CDT_LEARNNOTE` rather than from the
/// decision itself: to the verifier a map value is any value, so it checks this code once
/// rather than once for every way the decision can come out (a million instructions, its
/// limit, otherwise).
#[inline(never)]
fn record(p: &Packet, now: u64) {
    if let Some(n) = CDT_LEARNNOTE.get_ptr(0) {
        // SAFETY: this CPU's slot, written just before the call.
        let n = unsafe { *n };
        learn::record(p, &n, now);
    }
}

/// The shared parser over the frame, out of line for the same reason as [`full`]; false
/// when the frame is malformed.
#[inline(never)]
fn parse(start: usize, end: usize, slot: u8, p: &mut Packet) -> bool {
    // Whether the program learns is read here, not passed: BPF passes five arguments at
    // most, and the compiler may split a struct passed by reference into its fields.
    let frame = XdpFrame {
        start,
        end,
        slot,
        // SAFETY: a read of a plain static (see `judge`).
        learning: unsafe { core::ptr::read_volatile(&CONDUIT_LEARN) } != 0,
    };
    parse_into(&frame, p).is_ok()
}

/// The decision for a frame that does not parse, and its audit event.
#[inline(never)]
fn reject(slot: u8, ifindex: u32, now: u64, out: &mut Decision) {
    *out = malformed(&KernelTables, slot);
    if out.log {
        events::emit(out, None, ifindex, now);
    }
}

/// The audit event of a parsed packet, out of line for the same reason as [`full`].
#[inline(never)]
fn log(d: &Decision, p: &Packet, ifindex: u32, now: u64) {
    events::emit(d, Some(p), ifindex, now);
}

#[xdp]
pub fn conduit_xdp(ctx: XdpContext) -> u32 {
    judge(&ctx)
}

/// The whole program: parse, decide, count, log; the XDP action.
#[inline(always)]
fn judge(ctx: &XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    // The live slot, read once: the whole frame is judged by one policy.
    let (slot, generation) = match CDT_ACTIVE.get(0) {
        Some(a) => (a.slot as u8, a.generation),
        None => (0, 0),
    };
    // CLOCK_MONOTONIC_COARSE (a tick behind at most, and no clock read): flow timeouts and
    // the audit window are seconds. SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // SAFETY: a read of a plain static (volatile, so the compiler keeps the load that the
    // loader's value replaces).
    let learning = unsafe { core::ptr::read_volatile(&CONDUIT_LEARN) } != 0;
    let (Some(scratch), Some(decision)) = (CDT_SCRATCH.get_ptr_mut(0), CDT_DECISION.get_ptr_mut(0))
    else {
        // Cannot happen (one-slot per-CPU arrays); fail closed if it ever does.
        return XDP_DROP;
    };
    // SAFETY: this CPU's slot, used only while this program runs on it (XDP programs are not
    // preempted by another XDP run on the same CPU).
    zero(scratch);
    // SAFETY: as above.
    let p = unsafe { &mut *scratch };
    let mut quick = false;
    // The decision lives in per-CPU memory (`CDT_DECISION`), not on the stack, for the
    // verifier: it does not track what a map value holds, so it checks the flow update, the
    // audit event, the counters and the learning code once for every decision rather than
    // once for every way the fast and full paths can come out (which took Debian 12's 6.1 to
    // 660,000 of its 1,000,000 instructions, and with EtherNet/IP past them). The entry
    // point's stack frame is smaller by a decision too (the stack chain's limit is 512).
    // SAFETY: this CPU's slot, used only while this program runs on it.
    let d = unsafe { &mut *decision };
    *d = Decision::FAIL_CLOSED;
    // What the learning code records: `learn::FIRST_REPLY` | `MODBUS` | `RENEWED`.
    let mut found = 0;
    let parsed = parse(start, end, slot, p);
    if parsed {
        p.ifindex = ctx.ingress_ifindex() as u32;
        let p: &Packet = p;
        // A packet of a flow with a verdict under this policy: one flow lookup. Else the
        // full decision.
        let f = fast(p, slot, generation, now, d);
        quick = f == Fast::Decided || f == Fast::Learn;
        if !quick {
            full(p, slot, now, f == Fast::NoFlow, d);
            if needs_ingress_check(d, p) {
                ingress(ctx.ctx, p, slot, d);
            }
            found = update(p, now, generation, learning, d);
        } else if f == Fast::Learn {
            found = learn::MODBUS;
        }
        if d.log {
            log(d, p, p.ifindex, now);
        }
    } else {
        reject(slot, ctx.ingress_ifindex() as u32, now, d);
    }
    // The frame's length and ingress interface are read from the context where they are
    // needed rather than kept across the stages: the entry point's stack frame is part of
    // the deepest call chain (512 bytes as 6.1 counts it).
    counters::count(d, (ctx.data_end() - ctx.data()) as u64);
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
            (*t).fast = u32::from(quick);
        }
    }
    let action = match d.verdict {
        Verdict::Deny => XDP_DROP,
        Verdict::Allow | Verdict::WouldDeny => XDP_PASS,
    };
    // Only what the full path decided, or a Modbus request the fast path found new: a packet
    // of an established flow pays nothing for learning.
    if learning
        && parsed
        && (!quick || found != 0)
        && let Some(n) = CDT_LEARNNOTE.get_ptr_mut(0)
    {
        // SAFETY: this CPU's slot (see `record`).
        unsafe {
            *n = LearnNote {
                verdict: d.verdict as u8,
                reason: d.reason as u8,
                flow: d.flow,
                found,
            };
        }
        record(p, now);
    }
    action
}

/// The benchmarks' programs (the object built with the feature `bench`, never the production
/// one).
#[cfg(feature = "bench")]
pub mod bench {
    use aya_ebpf::{bindings::xdp_action::XDP_PASS, macros::xdp, programs::XdpContext};

    use super::judge;
    use crate::maps::CDT_BENCH;

    /// An empty program that passes every frame: the floor the benchmarks measure Conduit's
    /// per-packet cost against, loaded only by them.
    #[xdp]
    pub fn conduit_pass(_ctx: XdpContext) -> u32 {
        XDP_PASS
    }

    /// Benchmarks only (never attached): [`super::conduit_xdp`] on a frame whose IPv4 source address
    /// changes with every run, so that a BPF_PROG_TEST_RUN with many repeats measures many
    /// distinct flows and identities instead of one cache-hot frame. See [`vary`].
    #[xdp]
    pub fn conduit_bench_vary(ctx: XdpContext) -> u32 {
        vary(&ctx);
        judge(&ctx)
    }

    /// Benchmarks only: the floor of [`conduit_bench_vary`] (the address change, then pass).
    #[xdp]
    pub fn conduit_bench_vary_pass(ctx: XdpContext) -> u32 {
        vary(&ctx);
        XDP_PASS
    }

    /// Sets the last two bytes of an untagged IPv4 frame's source address to the run counter
    /// modulo `CDT_BENCH[0]` (a power of two, written by the benchmark), then counts the run in
    /// `CDT_BENCH[1]`. BPF_PROG_TEST_RUN reruns the program on the same buffer, so a benchmark
    /// that starts from 10.1.0.0 cycles through 10.1.0.0 .. 10.1.(n-1).
    #[inline(always)]
    fn vary(ctx: &XdpContext) {
        const SRC_LOW: usize = 14 + 12 + 2;
        let (Some(n), Some(count)) = (CDT_BENCH.get_ptr_mut(0), CDT_BENCH.get_ptr_mut(1)) else {
            return;
        };
        let at = ctx.data() + SRC_LOW;
        if at + 2 > ctx.data_end() {
            return;
        }
        // SAFETY: array slots of this map; the two bytes lie within the frame (checked above).
        unsafe {
            let i = *count & (*n).wrapping_sub(1);
            *count = (*count).wrapping_add(1);
            core::ptr::write_unaligned(at as *mut [u8; 2], (i as u16).to_be_bytes());
        }
    }
}
