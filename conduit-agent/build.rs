//! Builds the XDP program (`conduit-ebpf`) for the bpf target with aya-build and leaves the
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
    let root = root.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "conduit-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
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
