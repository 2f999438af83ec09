//! Builds the XDP program (`conduit-ebpf`) for the bpf target as aya-build does and leaves the
//! object in OUT_DIR, where `datapath::object()` embeds it.
//!
//! Without bpf-linker (or with `AYA_BUILD_SKIP=1`) the host crates still build and their unit
//! tests still run: an empty object is embedded instead, and loading it fails with a message
//! that says how to get the real one.
use std::{env, fs, path::PathBuf};

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let obj = out.join("conduit");
    println!("cargo::rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo::rustc-check-cfg=cfg(conduit_no_ebpf)");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let have_linker = which_bpf_linker();
    if skip || !have_linker {
        println!(
            "cargo::warning=building conduit WITHOUT its XDP program ({}); run ./xtask/bootstrap.sh",
            if skip {
                "AYA_BUILD_SKIP set"
            } else {
                "bpf-linker not found"
            }
        );
        fs::write(&obj, []).context("writing the empty placeholder object")?;
        fs::write(out.join("conduit-bench"), []).context("writing the empty placeholder object")?;
        bench_object_env(&out);
        println!("cargo::rustc-cfg=conduit_no_ebpf");
        return Ok(());
    }
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("no manifest dir")?);
    let toolchain = pinned_toolchain(&manifest.join("../rust-toolchain.toml"))?;
    let root = manifest.join("../conduit-ebpf");
    // The program compiles conduit-common too: rebuild it when that changes.
    println!(
        "cargo::rerun-if-changed={}",
        manifest.join("../conduit-common").display()
    );
    let root = root
        .canonicalize()
        .context("conduit-ebpf not found next to conduit-agent")?;
    println!("cargo::rerun-if-changed={}", root.display());
    // The production object, then the benchmarks' (the program plus its benchmark programs
    // and their map: the feature `bench`), each copied out before the next build replaces it.
    build_ebpf(&root, &toolchain, &[], &out.join("conduit"))?;
    build_ebpf(
        &root,
        &toolchain,
        &["--features", "bench"],
        &out.join("conduit-bench"),
    )?;
    bench_object_env(&out);
    Ok(())
}

/// Where the benchmarks' object is, for `Datapath::load_options` with `bench` (read at run
/// time, so that the shipped binary does not carry it).
fn bench_object_env(out: &std::path::Path) {
    println!(
        "cargo::rustc-env=CONDUIT_BENCH_OBJECT={}",
        out.join("conduit-bench").display()
    );
}

/// The program's build, as `aya_build::build_ebpf` runs it (the same cargo command, flags and
/// environment), written out here for one reason: aya-build builds in a target directory
/// inside this build script's OUT_DIR, which is different for every profile and feature set,
/// so `cargo clippy`, `cargo test`, `cargo build --release` and `cargo bench` each rebuilt
/// `core` and the program from nothing (a minute each; several minutes of every CI run). Here
/// the program has one target directory, `<target dir>/bpf`, shared by all of them: after
/// the first build, the others find it fresh. (Two builds at once wait for each other on its
/// lock.)
fn build_ebpf(
    root: &std::path::Path,
    toolchain: &str,
    features: &[&str],
    to: &std::path::Path,
) -> anyhow::Result<()> {
    let out = to.parent().context("an object path without a directory")?;
    use std::process::Command;
    let target_dir = shared_target_dir(out).join("bpf");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH not set")?;
    let target = match env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() {
        Ok("big") => "bpfeb-unknown-none",
        _ => "bpfel-unknown-none",
    };
    let rustflags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
    ]
    .join("\x1f");
    let output = Command::new("rustup")
        .args([
            "run",
            toolchain,
            "cargo",
            "build",
            "--package",
            "conduit-ebpf",
            "--bins",
        ])
        .args(features)
        .args([
            "--release",
            "--target",
            target,
            "-Z",
            "build-std=core",
            "--target-dir",
        ])
        .arg(&target_dir)
        .current_dir(root)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .output()
        .context("running `rustup run TOOLCHAIN cargo build` for conduit-ebpf")?;
    // Its messages as cargo warnings: all of them when it failed, else only the headlines of
    // the compiler's warnings (not the progress lines).
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        if !output.status.success() || line.starts_with("warning") {
            println!("cargo::warning={line}");
        }
    }
    anyhow::ensure!(
        output.status.success(),
        "building the XDP program (conduit-ebpf) failed: see the warnings above"
    );
    let built = target_dir.join(target).join("release").join("conduit");
    fs::copy(&built, to).with_context(|| format!("copying {} into OUT_DIR", built.display()))?;
    Ok(())
}

/// The target directory this build runs in: the ancestor of OUT_DIR where cargo keeps its
/// `CACHEDIR.TAG` (OUT_DIR itself if there is none).
fn shared_target_dir(out: &std::path::Path) -> PathBuf {
    out.ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .unwrap_or(out)
        .to_path_buf()
}

fn which_bpf_linker() -> bool {
    env::var_os("PATH")
        .is_some_and(|paths| env::split_paths(&paths).any(|dir| dir.join("bpf-linker").is_file()))
}

/// The nightly pinned in rust-toolchain.toml: the one place it is written.
fn pinned_toolchain(path: &std::path::Path) -> anyhow::Result<String> {
    println!("cargo::rerun-if-changed={}", path.display());
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .next()
        .with_context(|| format!("no `channel = \"...\"` in {}", path.display()))
}
