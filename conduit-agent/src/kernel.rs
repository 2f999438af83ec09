//! `conduit kernel`: can this host run Conduit? What the kernel offers (probed), whether the
//! XDP program loads, and the verifier's figures for it (instructions processed, load time,
//! the stack of every subprogram and of the deepest call chain).
use std::time::Instant;

use crate::datapath::{
    Datapath, LoadOptions,
    budget::{self, StackReport},
    probe::{self, KernelReport, MIN_KERNEL, TESTED},
};

/// How the program fared with this kernel's verifier.
#[derive(Debug, serde::Serialize)]
pub struct LoadReport {
    pub loaded: bool,
    /// Why not, in one line.
    pub error: Option<String>,
    /// Wall time of the load (the verifier dominates it), in milliseconds.
    pub load_ms: f64,
    /// Instructions the verifier processed (kernel 5.16 and later report it).
    pub verified_insns: Option<u32>,
    /// Size of the program after the verifier's rewrites, and of its JIT'ed code, in bytes.
    pub xlated_bytes: Option<u32>,
    pub jited_bytes: Option<u32>,
}

/// The whole answer.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub kernel: KernelReport,
    pub min_kernel: String,
    pub tested: &'static str,
    pub program: LoadReport,
    /// The program as `run --learn-dir` loads it (with its learning code).
    pub learning: LoadReport,
    pub stack: Option<StackReport>,
    pub stack_limit: u32,
}

/// Probes the kernel and loads the program once (not attached anywhere).
pub fn report() -> (Report, Option<String>) {
    let kernel = probe::probe();
    let stack = budget::stack_report(crate::datapath::object(), conduit_common::PROGRAM_NAME).ok();
    let (program, log) = load_report(LoadOptions::default());
    let (learning, learning_log) = load_report(LoadOptions {
        learn: true,
        ..Default::default()
    });
    (
        Report {
            kernel,
            min_kernel: format!("{}.{}", MIN_KERNEL.0, MIN_KERNEL.1),
            tested: TESTED,
            program,
            learning,
            stack,
            stack_limit: budget::MAX_STACK,
        },
        log.or(learning_log),
    )
}

/// Loads the program as `options` say: the verifier's figures, or why it failed (and its
/// log).
fn load_report(options: LoadOptions) -> (LoadReport, Option<String>) {
    let started = Instant::now();
    let loaded = Datapath::load_options(options, None);
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    match loaded {
        Ok(mut dp) => {
            let info = dp.program().ok().and_then(|p| p.info().ok());
            (
                LoadReport {
                    loaded: true,
                    error: None,
                    load_ms,
                    verified_insns: info.as_ref().and_then(|i| i.verified_instruction_count()),
                    xlated_bytes: info.as_ref().and_then(|i| i.size_translated()),
                    jited_bytes: info.as_ref().map(|i| i.size_jitted()),
                },
                None,
            )
        }
        Err(e) => (
            LoadReport {
                loaded: false,
                error: Some(e.to_string()),
                load_ms,
                verified_insns: None,
                xlated_bytes: None,
                jited_bytes: None,
            },
            e.verifier_log().map(str::to_owned),
        ),
    }
}
