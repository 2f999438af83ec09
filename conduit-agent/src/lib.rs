//! The `conduit` agent as a library: the binary (`main.rs`) is a thin shell around it, and the
//! integration tests in `tests/` drive the same code.
pub mod agent;
pub mod capture;
pub mod cli;
pub mod datapath;
pub mod discover;
pub mod exit;
pub mod integrity;
pub mod kernel;
pub mod learned;
pub mod policy;
pub mod replay;
pub mod report;
