//! Every map of the program, declared once. Names come from `conduit_common`.
use aya_ebpf::{macros::map, maps::PerCpuArray};
use conduit_common::{Counter, TOTALS_LEN};

/// Frames and bytes per verdict (`conduit_common::MAP_TOTALS`).
#[map(name = "CDT_TOTALS")]
pub static CDT_TOTALS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(TOTALS_LEN, 0);
