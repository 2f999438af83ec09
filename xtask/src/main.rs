//! Build, test and demo orchestration for Conduit (`cargo xtask --help`).
//!
//! Run `./xtask/bootstrap.sh` first on a fresh machine: it installs the pinned toolchain,
//! bpf-linker and the Debian packages that these commands use.
mod demo;
mod deploy;
mod plot;
mod tests;
mod vm;

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
    /// The deployment test: package, apt install, the Ansible role (twice, then with a broken
    /// policy), the agent started as the systemd unit starts it.
    DeployTest,
    /// The kernel matrix: Debian's kernel packages (6.1, its PREEMPT_RT build, 6.12, and 5.10
    /// where Conduit must refuse to start; pinned in
    /// xtask/src/vm.rs, downloaded once into ~/.cache/conduit/vm) booted in qemu, each running
    /// `conduit kernel`, replays of tests/captures (the host's verdicts), the kernel tests and
    /// the agent on a veth pair. Writes the verifier figures to target/vm-test/verifier.md and
    /// BENCHMARKS.md. Needs root.
    VmTest {
        /// Only these kernels (repeatable): 6.1, 6.1-rt, 6.12.
        #[arg(long = "kernel", value_name = "NAME")]
        kernels: Vec<String>,
        /// The form `cargo xtask test` runs: 6.1, 6.12 and the refusal on 5.10, fewer tests
        /// (a few minutes).
        #[arg(long, conflicts_with = "verifier_only")]
        smoke: bool,
        /// Every kernel, `conduit kernel` only: refreshes the verifier figures in
        /// BENCHMARKS.md (a minute or two).
        #[arg(long)]
        verifier_only: bool,
    },
    /// Build the Debian package (cargo-deb): binary, systemd unit, example policies, man page,
    /// shell completions. Prints the path of the .deb.
    Package,
    /// Benchmarks (numbers, never pass/fail): per-packet cost against an empty XDP program,
    /// forwarding, flood and a TCP stream against nftables, the control plane, compile
    /// times. Writes BENCHMARKS.md and BENCHMARKS.svg (a few minutes). Needs root.
    Bench {
        /// Release mode: 1M repeats, up to 1M identities and 10k conduits (about 10 minutes).
        #[arg(long, conflicts_with = "smoke")]
        full: bool,
        /// Every benchmark once at its smallest (seconds); the report goes to
        /// target/bench-smoke/. Run by `cargo xtask test`.
        #[arg(long)]
        smoke: bool,
    },
    /// Redraws BENCHMARKS.svg from BENCHMARKS.csv (the per-packet figures `bench` keeps next
    /// to its report), without measuring anything.
    Plot,
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Test { cargo_test_args } => {
            // Each phase's time, printed at the end (CI keeps the suite under 25 minutes).
            let mut times: Vec<(&str, f64)> = Vec::new();
            let mut timed = |name, f: &dyn Fn() -> Result<()>| {
                let t = std::time::Instant::now();
                let r = f();
                times.push((name, t.elapsed().as_secs_f64()));
                r
            };
            timed("lint", &lint)?;
            let tests = if cargo_test_args.is_empty() {
                // Every test binary, two at a time (the workspace has no doc tests).
                timed("tests", &|| tests::run(&workspace_root()))
            } else {
                let mut args = vec!["test", "--workspace", "--release", "--no-fail-fast"];
                args.extend(FEATURES);
                args.extend(cargo_test_args.iter().map(String::as_str));
                timed("cargo test", &|| cargo(&args))
            };
            // The demo, twice in a row, must leave the machine as it found it.
            let (demo, deploy, smoke, kernels) = if cargo_test_args.is_empty() {
                (
                    timed("demo twice", &demo::twice),
                    timed("deploy test", &deploy::test),
                    timed("bench smoke", &|| bench(Mode::Smoke)),
                    timed("vm-test smoke", &|| vm::run(&[], vm::Form::Smoke)),
                )
            } else {
                (Ok(()), Ok(()), Ok(()), Ok(()))
            };
            let line: Vec<String> = times.iter().map(|(n, s)| format!("{n} {s:.0} s")).collect();
            eprintln!("[xtask] times: {}", line.join(", "));
            tests.and(demo).and(deploy).and(smoke).and(kernels)
        }
        Task::Lint => lint(),
        Task::Demo => demo::run(),
        Task::DeployTest => deploy::test(),
        Task::Bench { full, smoke } => bench(if full {
            Mode::Full
        } else if smoke {
            Mode::Smoke
        } else {
            Mode::Quick
        }),
        Task::Plot => {
            let root = workspace_root();
            plot::write(&root.join("BENCHMARKS.csv"), &root.join("BENCHMARKS.svg"))
        }
        Task::Package => package().map(|p| println!("{}", p.display())),
        Task::VmTest {
            kernels,
            smoke,
            verifier_only,
        } => vm::run(
            &kernels,
            if smoke {
                vm::Form::Smoke
            } else if verifier_only {
                vm::Form::Verifier
            } else {
                vm::Form::Full
            },
        ),
    }
}

fn lint() -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"]).context("formatting differs: run `cargo fmt`")?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        FEATURES[0],
        FEATURES[1],
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

/// A `cargo bench -p PACKAGE --bench NAME` command, run from the workspace root.
fn cargo_bench(package: &str, name: &str) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(["bench", "--package", package, "--bench", name])
        .args(FEATURES)
        .current_dir(workspace_root());
    c
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

/// Builds the release `conduit` binary and returns its path. With the benchmarks' package in
/// the same build, so that dependencies get the features `cargo bench` gives them: the
/// benchmarks then reuse this build instead of compiling the agent and several dependencies
/// a second time (minutes of a cold CI run).
/// How `cargo xtask test` and `vm-test` build the test binaries: in the release profile, so
/// that they share every compiled dependency with the release binary that the demo, the
/// package, the benchmarks and the VMs use (a second, dev-profile build of the dependencies
/// took about as long as everything else together on CI). Plain `cargo test` (a
/// contributor's) stays in the dev profile.
/// The features every build of `cargo xtask` turns on: the agent's root-only integration
/// tests (the same set everywhere, so that the agent is compiled once for all of them).
pub const FEATURES: [&str; 2] = ["--features", "conduit-agent/root-tests"];

pub const TEST_BUILD: &[&str] = &[
    "test",
    "--workspace",
    "--release",
    "--no-run",
    FEATURES[0],
    FEATURES[1],
];

pub fn release_binary() -> Result<std::path::PathBuf> {
    // The whole workspace but the eBPF crate (its bin is also named `conduit`; the agent's
    // build script builds it for the bpf target): the same packages as [`TEST_BUILD`], so
    // the same features are unified and the agent compiled for the tests is this one.
    cargo(&[
        "build",
        "--release",
        "--workspace",
        "--exclude",
        "conduit-ebpf",
        FEATURES[0],
        FEATURES[1],
    ])?;
    Ok(workspace_root().join("target/release/conduit"))
}

/// Sends `signal` to a child process this one started (and has not reaped: its PID is still
/// its own). Errors (the child already gone) are of no interest to the callers.
pub fn signal(child: &std::process::Child, signal: rustix::process::Signal) {
    let _ = rustix::process::kill_process(rustix::process::Pid::from_child(child), signal);
}

pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Smoke,
    Quick,
    Full,
}

/// Runs the benchmarks and writes BENCHMARKS.md and BENCHMARKS.svg at the workspace root
/// (smoke: under target/bench-smoke/).
fn bench(mode: Mode) -> Result<()> {
    let (full, smoke) = (mode == Mode::Full, mode == Mode::Smoke);
    let root = workspace_root();
    let dest = if smoke {
        root.join("target/bench-smoke")
    } else {
        root.clone()
    };
    std::fs::create_dir_all(&dest)?;
    // Per packet (with the CSV the plot is drawn from, kept: `cargo xtask plot` redraws it).
    let csv = dest.join("BENCHMARKS.csv");
    let mut c = cargo_bench("conduit-tests", "datapath");
    c.env("CONDUIT_BENCH_CSV", &csv);
    if full {
        c.env("CONDUIT_BENCH_FULL", "1");
    }
    if smoke {
        c.env("CONDUIT_BENCH_SMOKE", "1");
    }
    let datapath = section("datapath", c)?;
    plot::write(&csv, &dest.join("BENCHMARKS.svg"))?;

    // The compiler alone (the control-plane benchmark times it too, at 1k assets in smoke).
    let compile_report = if smoke {
        "(not run in smoke mode)\n".to_string()
    } else {
        let mut c = cargo_bench("conduit-agent", "compile");
        if !full {
            c.env("CONDUIT_BENCH_QUICK", "1");
        }
        eprintln!("[xtask] compile benchmark");
        let out = c.output()?;
        if !out.status.success() {
            bail!(
                "the compile benchmark failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // Forwarding, a flood of denied frames and a TCP stream against nftables; the control
    // plane (compile, apply, a real agent's memory and reload latency). Both run the agent.
    let bin = release_binary()?;
    let mut c = cargo_bench("conduit-tests", "forwarding");
    c.env("CONDUIT_BIN", &bin);
    match mode {
        Mode::Smoke => c
            .env("CONDUIT_FWD_SIZES", "100")
            .env("CONDUIT_FWD_SECS", "1")
            .env("CONDUIT_FWD_ROUNDS", "1"),
        Mode::Quick => c
            .env("CONDUIT_FWD_SIZES", "100,1000")
            .env("CONDUIT_FWD_SECS", "1"),
        Mode::Full => &mut c,
    };
    let forwarding = section("forwarding", c)?;
    let mut c = cargo_bench("conduit-tests", "control");
    c.env("CONDUIT_BIN", &bin);
    if full {
        c.env("CONDUIT_BENCH_FULL", "1");
    }
    if smoke {
        c.env("CONDUIT_CONTROL_SIZES", "1000");
    }
    let control = section("control-plane", c)?;
    // Discover over a large capture, against tshark on the same file.
    let mut c = cargo_bench("conduit-tests", "discover");
    c.env("CONDUIT_BIN", &bin);
    if smoke {
        c.env("CONDUIT_DISCOVER_FRAMES", "20000");
    }
    let discover = section("discover", c)?;

    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()?;
    let report = format!(
        "# Benchmarks\n\nWritten by `cargo xtask bench{}` on {}. Numbers, not pass/fail; this machine is shared and noisy, so compare ratios within one run.\n\n![Per-packet cost against policy size, as a multiple of the empty program](BENCHMARKS.svg)\n\n{datapath}\n{forwarding}\n{control}\n{discover}\n## Policy compile time\n\n```\n{compile_report}```\n",
        match mode {
            Mode::Smoke => " --smoke",
            Mode::Quick => "",
            Mode::Full => " --full",
        },
        String::from_utf8_lossy(&date.stdout).trim(),
    );
    let md = dest.join("BENCHMARKS.md");
    // The verifier figures come from `cargo xtask vm-test`: kept as they are.
    let report = format!("{report}\n{}", vm::kept_section(&md));
    // What each performance goal's figure means and why a missed one is missed: analysis
    // written by hand next to the figures above (docs/PERFORMANCE-GOALS.md), kept verbatim.
    let goals = std::fs::read_to_string(root.join("docs/PERFORMANCE-GOALS.md"))
        .context("reading docs/PERFORMANCE-GOALS.md")?;
    let report = format!("{report}\n{goals}");
    std::fs::write(&md, report)?;
    eprintln!("[xtask] wrote {}", md.display());
    Ok(())
}

/// Runs one benchmark (`cmd`) that writes its Markdown section to `$CONDUIT_BENCH_OUT`;
/// returns the section.
fn section(name: &str, mut cmd: Command) -> Result<String> {
    let out = std::env::temp_dir().join(format!("conduit-bench-{name}-{}.md", std::process::id()));
    cmd.env("CONDUIT_BENCH_OUT", &out);
    eprintln!("[xtask] {name} benchmark");
    if !cmd.status()?.success() {
        bail!("the {name} benchmark failed");
    }
    let text = std::fs::read_to_string(&out).with_context(|| format!("the {name} report"))?;
    std::fs::remove_file(&out).ok();
    Ok(text)
}

/// Builds target/debian/conduit_*.deb and returns its path.
pub fn package() -> Result<std::path::PathBuf> {
    let root = workspace_root();
    let bin = release_binary()?;
    let assets = root.join("target/assets");
    std::fs::create_dir_all(&assets)?;
    let generate = |args: &[&str]| -> Result<Vec<u8>> {
        let out = Command::new(&bin).args(args).output()?;
        if !out.status.success() {
            bail!("conduit {} failed", args.join(" "));
        }
        Ok(out.stdout)
    };
    let man = generate(&["man"])?;
    let mut gz = Command::new("gzip")
        .args(["-9n"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(gz.stdin.as_mut().context("gzip stdin")?, &man)?;
    drop(gz.stdin.take());
    let out = gz.wait_with_output()?;
    std::fs::write(assets.join("conduit.1.gz"), out.stdout)?;
    std::fs::write(
        assets.join("conduit.bash"),
        generate(&["completions", "bash"])?,
    )?;
    std::fs::write(assets.join("_conduit"), generate(&["completions", "zsh"])?)?;
    std::fs::write(
        assets.join("conduit.fish"),
        generate(&["completions", "fish"])?,
    )?;
    cargo(&[
        "deb",
        "--package",
        "conduit-agent",
        "--no-build",
        "--no-strip",
    ])?;
    let dir = root.join("target/debian");
    let mut debs: Vec<_> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    debs.pop().context("cargo deb wrote no .deb")
}
