//! Audit events: the ring buffer, its rate limits and budget.

// The other ABI modules' items, for the links of the docs.
#[cfg(doc)]
#[allow(unused_imports)]
use super::*;

/// Audit events: a BPF ring buffer of [`Event`]s.
pub const MAP_EVENTS: &str = "CDT_EVENTS";
pub const EVENTS_BYTES: u32 = 1 << 20;
/// Rate limit of audit events per flow and outcome: LRU hash `flow::FlowKey` whose `_pad`
/// holds the verdict and the reason → [`EventRate`].
pub const MAP_EVENT_RATE: &str = "CDT_EVRATE";
pub const MAX_EVENT_RATE: u32 = 1 << 16;
/// Per-CPU array of `u64` counters: [`EVSTAT_SUPPRESSED`], [`EVSTAT_LOST`],
/// [`EVSTAT_FLOOD`]. (`_V2`: one counter more than `CDT_EVSTATS`.)
pub const MAP_EVENT_STATS: &str = "CDT_EVSTATS_V2";
/// Events not sent because their flow already had one within [`EVENT_WINDOW_NS`].
pub const EVSTAT_SUPPRESSED: u32 = 0;
/// Events lost because the ring buffer was full.
pub const EVSTAT_LOST: u32 = 1;
/// Events shed because their CPU had used its budget ([`EVENT_BUDGET_PER_SEC`]): a flood.
pub const EVSTAT_FLOOD: u32 = 2;
pub const EVSTATS_LEN: u32 = 3;
/// Per-CPU array of one [`EventBudget`]: each CPU's token bucket for audit events.
pub const MAP_EVENT_BUDGET: &str = "CDT_EVBUDGET";
/// Audit events each CPU may start per second, and its burst. Under a flood of loggable
/// frames (a scan, a spoofed-source flood), the rest are shed before the per-flow rate limit
/// (whose LRU map the flood would otherwise churn) and counted ([`EVSTAT_FLOOD`]): the audit
/// log and the ring buffer stay bounded, the frames are still judged and counted.
pub const EVENT_BUDGET_PER_SEC: u64 = 2_000;

/// A CPU's audit event budget: tokens left, and the clock (CLOCK_MONOTONIC ns) up to which
/// they were refilled.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventBudget {
    pub tokens: u64,
    pub refilled_ns: u64,
}
const _: () = assert!(core::mem::size_of::<EventBudget>() == 16);

impl EventBudget {
    /// Takes one token at `now`, refilling at [`EVENT_BUDGET_PER_SEC`] up to a burst of as
    /// many; false when none is left. (Shared with the tests: the kernel calls it.)
    #[inline(always)]
    pub fn take(&mut self, now: u64) -> bool {
        const SEC: u64 = 1_000_000_000;
        let elapsed = now.saturating_sub(self.refilled_ns);
        if elapsed >= SEC {
            self.tokens = EVENT_BUDGET_PER_SEC;
            self.refilled_ns = now;
        } else {
            let add = elapsed * EVENT_BUDGET_PER_SEC / SEC;
            if add > 0 {
                self.tokens = (self.tokens + add).min(EVENT_BUDGET_PER_SEC);
                // Only the time the tokens stand for: the remainder counts next time.
                self.refilled_ns += add * SEC / EVENT_BUDGET_PER_SEC;
            }
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}
/// At most one audit event per flow per window.
pub const EVENT_WINDOW_NS: u64 = 10_000_000_000;

/// One audit event, written by the kernel into [`MAP_EVENTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// CLOCK_MONOTONIC ns.
    pub ts_ns: u64,
    pub verdict: u32,
    pub reason: u32,
    pub conduit: u32,
    pub src_zone: u32,
    pub dst_zone: u32,
    /// Interface the frame arrived on.
    pub ifindex: u32,
    /// 0 when the frame had no IP header to report.
    pub family: u8,
    pub proto: u8,
    /// 1 for an ARP frame (its addresses are the ARP body's; no protocol, no ports).
    pub arp: u8,
    pub _pad: u8,
    /// Host order.
    pub sport: u16,
    pub dport: u16,
    /// Network order, IPv4 in the first 4 bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Events of this flow suppressed since its previous event.
    pub suppressed: u32,
    /// A request a filter denied (`crate::inspect::request`): its protocol
    /// (`crate::inspect::MODBUS`, `DNP3`; 0: none, as older builds wrote), function code and
    /// address (Modbus unit ID, DNP3 outstation).
    pub protocol: u8,
    pub function: u8,
    pub address: u16,
}
const _: () = assert!(core::mem::size_of::<Event>() == 80);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventRate {
    pub last_ns: u64,
    pub suppressed: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<EventRate>() == 16);

#[cfg(test)]
mod tests {
    use crate::abi::*;

    #[test]
    fn the_event_budget_refills_at_its_rate_and_keeps_fractions() {
        const MS: u64 = 1_000_000;
        let mut b = EventBudget::default();
        let t0 = 5_000 * MS;
        // A second or more since the last refill: a full burst.
        let granted = (0..3 * EVENT_BUDGET_PER_SEC).filter(|_| b.take(t0)).count() as u64;
        assert_eq!(granted, EVENT_BUDGET_PER_SEC);
        assert!(!b.take(t0));
        // 2,000 per second: 2 per millisecond, also when asked every 0.4 ms (the remainder
        // is kept, not lost).
        let mut got = 0;
        for i in 1..=10 {
            let now = t0 + i * 4 * MS / 10;
            while b.take(now) {
                got += 1;
            }
        }
        assert_eq!(got, 8, "4 ms at 2 per ms");
        // Never more than the burst, however long the pause.
        let later = t0 + 3_600_000 * MS;
        let granted = (0..3 * EVENT_BUDGET_PER_SEC)
            .filter(|_| b.take(later))
            .count() as u64;
        assert_eq!(granted, EVENT_BUDGET_PER_SEC);
    }

    #[test]
    fn reason_numbering_is_stable() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as u32, i as u32);
            assert_eq!(Reason::try_from(i as u32), Ok(*r));
        }
        assert_eq!(Reason::try_from(Reason::ALL.len() as u32), Err(20));
        // The names are part of SPEC §2 (and the README's extensions) and must never change.
        let names: [&str; 20] = Reason::ALL.map(Reason::as_str);
        assert_eq!(
            names,
            [
                "conduit",
                "intra_zone",
                "reply",
                "failsafe",
                "no_conduit",
                "spoofed",
                "arp_spoof",
                "fragment",
                "malformed",
                "l2_denied",
                "l2_allowed",
                "arp",
                "neighbor_discovery",
                "modbus_function",
                "modbus_unit",
                "expired",
                "not_granted",
                "dnp3_function",
                "dnp3_address",
                "enip_service"
            ]
        );
    }

    #[test]
    fn verdict_roundtrip() {
        for v in Verdict::ALL {
            assert_eq!(Verdict::try_from(v as u32), Ok(v));
        }
        assert_eq!(Verdict::try_from(TOTALS_LEN), Err(TOTALS_LEN));
    }
}
