use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::xdp,
    programs::XdpContext,
};
use conduit_common::Verdict;

use crate::maps::CDT_TOTALS;

/// Length of an Ethernet II header.
const ETH_HLEN: usize = 14;
/// Minimum IPv4 header length.
const IPV4_MIN_HLEN: usize = 20;

#[xdp]
pub fn conduit_xdp(ctx: XdpContext) -> u32 {
    let len = ctx.data_end().saturating_sub(ctx.data());
    // Fail closed: a frame too short for its headers is malformed.
    let verdict = match ethertype(&ctx) {
        None => Verdict::Deny,
        Some(0x0800) if len < ETH_HLEN + IPV4_MIN_HLEN => Verdict::Deny,
        Some(_) => Verdict::Allow,
    };
    if let Some(c) = CDT_TOTALS.get_ptr_mut(verdict as u32) {
        // SAFETY: a per-CPU array slot is only ever touched by this CPU while the program runs.
        unsafe { (*c).add(len as u64) };
    }
    match verdict {
        Verdict::Deny => XDP_DROP,
        Verdict::Allow | Verdict::WouldDeny => XDP_PASS,
    }
}

/// The EtherType of the frame, or `None` when the frame is shorter than an Ethernet header.
#[inline(always)]
fn ethertype(ctx: &XdpContext) -> Option<u16> {
    let start = ctx.data();
    if start + ETH_HLEN > ctx.data_end() {
        return None;
    }
    // SAFETY: bounds checked just above against data_end.
    let raw = unsafe { core::ptr::read_unaligned((start + 12) as *const [u8; 2]) };
    Some(u16::from_be_bytes(raw))
}
