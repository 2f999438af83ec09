//! Conduit's kernel/user ABI and the pure logic shared by the XDP program and userspace.
//!
//! Everything here is `#![no_std]` with no runtime dependency, so the eBPF crate and the agent
//! compile the very same code. Shared types follow the ABI rules of `DESIGN.md`: `#[repr(C)]`,
//! fixed-width integers and byte arrays only, explicit padding, and a compile-time size check.
#![no_std]
// `inspect::byte`'s register barrier (the bpf target's inline assembly is unstable).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

#[cfg(test)]
extern crate std;
// Frame builders for tests and tools (`inspect::enip::build`), never in the XDP program.
#[cfg(any(test, feature = "user"))]
extern crate alloc;

pub mod abi;
pub mod flow;
pub mod inspect;
pub mod learn;
pub mod parse;
pub mod verdict;

pub use abi::*;
