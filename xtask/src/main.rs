//! Build, test and demo orchestration for Conduit (`cargo xtask --help`).
//!
//! Run `./xtask/bootstrap.sh` first on a fresh machine: it installs the pinned toolchain,
//! bpf-linker and the Debian packages that these commands use.
mod demo;

use std::process::Command;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Conduit's build, test and demo tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// The whole test suite: formatting, clippy (host crates and the eBPF crate), every test.
    /// Needs root: the kernel tests load BPF and create network namespaces.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cargo_test_args: Vec<String>,
    },
    /// Formatting and clippy only.
    Lint,
    /// The demo: Conduit enforcing a policy between network namespaces it creates.
    Demo,
    /// Benchmarks (numbers, never pass/fail): per-packet cost against an empty XDP program,
    /// policy compile times. Writes BENCHMARKS.md. Needs root.
    Bench {
        /// Release mode: 1M repeats, up to 1M identities and 10k conduits (minutes).
        #[arg(long)]
        full: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Test { cargo_test_args } => {
            lint()?;
            let mut args = vec!["test", "--workspace", "--no-fail-fast"];
            args.extend(cargo_test_args.iter().map(String::as_str));
            let tests = cargo(&args);
            // The demo, twice in a row, must leave the machine as it found it.
            let demo = if cargo_test_args.is_empty() {
                demo::twice()
            } else {
                Ok(())
            };
            tests.and(demo)
        }
        Task::Lint => lint(),
        Task::Demo => demo::run(),
        Task::Bench { full } => bench(full),
    }
}

fn lint() -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"]).context("formatting differs: run `cargo fmt`")?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The eBPF crate for its real target, as aya-template does.
    cargo(&[
        "clippy",
        "--package",
        "conduit-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ])
}

/// Runs cargo with `args` from the workspace root.
pub fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("[xtask] cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the benchmarks and writes BENCHMARKS.md at the workspace root.
fn bench(full: bool) -> Result<()> {
    let root = workspace_root();
    let datapath = std::env::temp_dir().join(format!("conduit-bench-{}.md", std::process::id()));
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["bench", "--package", "conduit-tests", "--bench", "datapath"])
        .current_dir(&root)
        .env("CONDUIT_BENCH_OUT", &datapath);
    if full {
        cmd.env("CONDUIT_BENCH_FULL", "1");
    }
    eprintln!(
        "[xtask] datapath benchmark ({})",
        if full { "full" } else { "quick" }
    );
    if !cmd.status()?.success() {
        bail!("the datapath benchmark failed");
    }
    let mut compile = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    compile
        .args(["bench", "--package", "conduit-agent", "--bench", "compile"])
        .current_dir(&root);
    if !full {
        compile.env("CONDUIT_BENCH_QUICK", "1");
    }
    eprintln!("[xtask] compile benchmark");
    let out = compile.output()?;
    if !out.status.success() {
        bail!(
            "the compile benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()?;
    let report = format!(
        "# Benchmarks\n\nWritten by `cargo xtask bench{}` on {}. Numbers, not pass/fail; this machine is shared and noisy, so compare ratios within one run.\n\n{}\n## Policy compile time\n\n```\n{}```\n",
        if full { " --full" } else { "" },
        String::from_utf8_lossy(&date.stdout).trim(),
        std::fs::read_to_string(&datapath)?,
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::remove_file(&datapath).ok();
    std::fs::write(root.join("BENCHMARKS.md"), report)?;
    eprintln!("[xtask] wrote BENCHMARKS.md");
    Ok(())
}
