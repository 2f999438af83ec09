//! The policy: parse and validate (all errors, with positions), lint (IEC 62443), compile
//! (pure and deterministic) into the exact map contents of the datapath.
pub mod addr;
pub mod compile;
pub mod diag;
pub mod digest;
pub mod lint;
pub mod load;
pub mod model;
pub mod raw;
pub mod validate;

pub use diag::{Diagnostic, Diagnostics, Pos, Severity};
pub use model::Policy;
