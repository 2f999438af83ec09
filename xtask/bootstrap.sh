#!/usr/bin/env bash
# Installs everything Conduit's build, tests and demo need on a fresh Debian machine (as root):
# the pinned nightly toolchain and its components, bpf-linker built against that nightly's own
# libLLVM, the Debian packages, and a mounted bpffs. Idempotent: a few seconds when all is there.
set -euo pipefail

# The nightly is pinned in rust-toolchain.toml; bpf-linker must match its LLVM major version.
# Change them together.
BPF_LINKER_VERSION=0.13.0

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
say() { printf '[bootstrap] %s\n' "$*" >&2; }

NIGHTLY=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
[ -n "$NIGHTLY" ] || { say "cannot read the channel from rust-toolchain.toml"; exit 2; }

# --- Debian packages -----------------------------------------------------------------------
PKGS=(iproute2 iputils-ping netcat-openbsd tcpdump tshark python3-scapy nftables bpftool libxml2-utils
      prometheus jq python3-pymodbus python3-serial-asyncio curl ansible gzip iperf3
      qemu-system-x86 busybox-static xz-utils binutils xdp-tools chromium fonts-dejavu-core
      openssh-client python3-venv linux-perf)   # linux-perf: the per-packet benchmark's profile; openssh-client: ssh-keygen, which signs and checks policies in the tests
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# chromium (the report tests render the HTML report headless) is installed without its
# recommended fonts: fonts-dejavu-core is the font the report asks for first.
# prometheus' Debian package starts a server through systemd where systemd runs; tests start
# their own on loopback, so nothing here depends on it.

# --- Test peers from PyPI ------------------------------------------------------------------
# A real DNP3 outstation and master for the inspection tests (opendnp3 through the yadnp3
# wheel), in a virtualenv of the checkout's own; quick when it is there.
tests/dnp3/install.sh "$root/target/peers/dnp3"
# A real EtherNet/IP (CIP) server and client: cpppo's Logix simulator and pycomm3.
tests/enip/install.sh "$root/target/peers/enip"

# --- bpffs ---------------------------------------------------------------------------------
if ! mount | grep -q ' /sys/fs/bpf type bpf '; then
  say "mounting bpffs on /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf
fi

# --- Rust toolchain ------------------------------------------------------------------------
command -v rustup >/dev/null || { say "rustup is required (it is on every machine of this kind)"; exit 2; }
if ! rustup run "$NIGHTLY" rustc --version >/dev/null 2>&1 \
   || ! rustup component list --toolchain "$NIGHTLY" --installed 2>/dev/null | grep -q '^rust-src' \
   || ! rustup component list --toolchain "$NIGHTLY" --installed 2>/dev/null | grep -q '^clippy' \
   || ! rustup component list --toolchain "$NIGHTLY" --installed 2>/dev/null | grep -q '^rustfmt'; then
  say "installing toolchain $NIGHTLY (rust-toolchain.toml)"
  rustup toolchain install   # no arguments: installs what rust-toolchain.toml names
fi

# --- bpf-linker ----------------------------------------------------------------------------
CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/conduit
PREFIX="$CACHE/llvm-$NIGHTLY"
STAMP="$CACHE/bpf-linker.stamp"
want="bpf-linker $BPF_LINKER_VERSION for $NIGHTLY"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ] || ! "$CARGO_BIN/bpf-linker" --version >/dev/null 2>&1; then
  say "building $want (about a minute)"
  sysroot=$(rustup run "$NIGHTLY" rustc --print sysroot)
  lib=$(ls "$sysroot"/lib/libLLVM.so.* 2>/dev/null | head -n1)
  [ -n "$lib" ] || { say "no libLLVM.so.* in $sysroot/lib: this nightly does not ship LLVM"; exit 2; }
  mkdir -p "$PREFIX/lib"
  ln -sf "$lib" "$PREFIX/lib/libLLVM.so"
  ln -sf "$lib" "$PREFIX/lib/"
  # Build with the pinned nightly: bpf-linker's own MSRV is above the machine's stable.
  LLVM_PREFIX="$PREFIX" rustup run "$NIGHTLY" cargo install bpf-linker \
    --version "$BPF_LINKER_VERSION" --locked --force --root "${CARGO_HOME:-$HOME/.cargo}" >&2
  echo "$want" > "$STAMP"
fi
# --- cargo-deb (the Debian package) --------------------------------------------------------
CARGO_DEB_VERSION=3.6.3
if ! "$CARGO_BIN/cargo-deb" --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  say "installing cargo-deb $CARGO_DEB_VERSION (about a minute)"
  rustup run "$NIGHTLY" cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --force \
    --root "${CARGO_HOME:-$HOME/.cargo}" >&2
fi

case ":$PATH:" in *":$CARGO_BIN:"*) ;; *) say "note: add $CARGO_BIN to PATH" ;; esac
say "ready: $(rustup run "$NIGHTLY" rustc --version), $("$CARGO_BIN/bpf-linker" --version)"
