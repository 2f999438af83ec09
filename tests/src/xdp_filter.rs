//! xdp-filter (Debian's xdp-tools) as a contestant in the benchmarks: loaded on a veth end in a
//! namespace of our own (the per-packet bench: run on the same frames with `bpftool prog run`,
//! BPF_PROG_TEST_RUN, as Conduit's own figures are measured), or on an interface the caller
//! created (the forwarding bench), configured with allow-list entries.
//!
//! xdp-filter is stateless: in its `deny` policy a frame passes when any one of its allow
//! lists matches (a source or destination MAC, IP address or port), so "this client to that
//! server on port 502" cannot be said: the closest equivalent allows the client's address and
//! port 502 separately.
//!
//! Its state lives in bpffs: libxdp's pins and xdp-filter's own maps, which every xdp-filter of
//! a machine shares (`xdp-filter port` changes the allow list of all of them, and xdp-filter
//! 1.3.1 puts its maps in /sys/fs/bpf whatever `LIBXDP_BPFFS` says). So every `XdpFilter`
//! runs xdp-filter in a mount namespace of its own with a fresh bpffs on /sys/fs/bpf
//! ([`PinNs`]): a run never sees, changes or removes another xdp-filter's state (another
//! bench's, or the machine's), and its own pins go away with the namespace.
use std::{path::PathBuf, process::Command};

use crate::{Netns, ip, unique_name};

pub struct XdpFilter<'a> {
    ns: Ns<'a>,
    iface: String,
    mode: &'static str,
    prog_id: u32,
    frame_file: PathBuf,
    /// Dropped last (fields drop in order, after `Drop::drop` has unloaded xdp-filter).
    pins: PinNs,
}

/// The namespace xdp-filter's interface lives in: created for it, or the caller's.
enum Ns<'a> {
    Own(Netns),
    Of(&'a Netns),
}

impl Ns<'_> {
    fn get(&self) -> &Netns {
        match self {
            Ns::Own(ns) => ns,
            Ns::Of(ns) => ns,
        }
    }
}

/// A mount namespace whose /sys/fs/bpf is a bpffs of its own, kept without a process: `unshare
/// --mount=FILE` bind-mounts the namespace on FILE, and unmounting FILE releases it (and the
/// bpffs, and every pin in it). Inside, the copies of the machine's namespace files (`ip
/// netns`' mounts, nsfs) are unmounted at once: a copy would keep a network namespace alive
/// after its owner deleted it, for as long as this one lives.
struct PinNs {
    /// A directory of our own, bind-mounted on itself and made private (the file a namespace
    /// is bound to must not be on a shared mount), holding `mnt`.
    dir: PathBuf,
}

/// Runs in the new mount namespace: nsfs copies out, a fresh bpffs in.
const PIN_NS_SETUP: &str = "findmnt -rn -t nsfs -o TARGET | while read -r m; do umount -l \"$m\" \
                            || true; done; mount -t bpf bpf /sys/fs/bpf";

/// Runs `argv`; its stdout, or a message with its output when it fails.
fn try_run(mut c: Command) -> Result<String, String> {
    let out = c
        .output()
        .map_err(|e| format!("running {c:?}: {e} (is xdp-tools installed?)"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{c:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn run(c: Command) -> String {
    try_run(c).unwrap_or_else(|e| panic!("{e}"))
}

impl PinNs {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique_name("cdtxfm"));
        std::fs::create_dir(&dir).expect("a directory for xdp-filter's mount namespace");
        // Built first: whatever part of the setup happened is undone on drop.
        let p = Self { dir };
        let d = p.dir.to_str().expect("temp dir path");
        for args in [["--bind", d, d].as_slice(), &["--make-private", d]] {
            let mut c = Command::new("mount");
            c.args(args);
            run(c);
        }
        std::fs::File::create(p.file()).expect("the mount namespace's file");
        let mut c = Command::new("unshare");
        c.arg(format!("--mount={}", p.file().display())).args([
            "--propagation",
            "private",
            "sh",
            "-c",
            PIN_NS_SETUP,
        ]);
        run(c);
        p
    }

    fn file(&self) -> PathBuf {
        self.dir.join("mnt")
    }

    /// `argv` in this mount namespace and the network namespace `ns` (`nsenter`, not `ip netns
    /// exec`, which would remount /sys and hide this bpffs).
    fn command(&self, ns: &Netns, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount={}", self.file().display()))
            .arg(format!("--net=/var/run/netns/{}", ns.name))
            .args(argv);
        c
    }
}

impl Drop for PinNs {
    fn drop(&mut self) {
        // Only our own mounts, by path: the namespace's file, then the directory's bind mount.
        let _ = Command::new("umount").arg(self.file()).output();
        let _ = Command::new("umount").arg(&self.dir).output();
        let _ = std::fs::remove_file(self.file());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

impl XdpFilter<'static> {
    /// Loads xdp-filter in `deny` policy (skb mode: the program is what is measured, not the
    /// driver) with `allow` entries, each the arguments of one `xdp-filter` command (e.g.
    /// `["port", "502", "--mode", "dst"]`), on a veth end in a namespace of its own.
    pub fn load(allow: &[&[&str]]) -> Self {
        let ns = Netns::new("cdtxf");
        let iface = unique_name("xf");
        let peer = unique_name("xg");
        ip(&[
            "-n", &ns.name, "link", "add", &iface, "type", "veth", "peer", "name", &peer,
        ]);
        for dev in [&iface, &peer] {
            ip(&["-n", &ns.name, "link", "set", dev, "up"]);
        }
        Self::start(Ns::Own(ns), &iface, &["skb"], &[], allow)
    }
}

impl<'a> XdpFilter<'a> {
    /// Loads xdp-filter in `deny` policy on `iface` (an interface the caller created) in `ns`,
    /// in the first of `modes` (`native`, `skb`) that loads, with its `features` (`-f`; all
    /// when empty) and `allow` entries as for [`XdpFilter::load`]. Unloaded on drop.
    pub fn attach(
        ns: &'a Netns,
        iface: &str,
        modes: &[&'static str],
        features: &[&str],
        allow: &[&[&str]],
    ) -> Self {
        Self::start(Ns::Of(ns), iface, modes, features, allow)
    }

    fn start(
        ns: Ns<'a>,
        iface: &str,
        modes: &[&'static str],
        features: &[&str],
        allow: &[&[&str]],
    ) -> Self {
        let pins = PinNs::new();
        let frame_file = std::env::temp_dir().join(format!("{}.frame", unique_name("cdtxf")));
        let mut failures = Vec::new();
        let mut mode = None;
        for &m in modes {
            let mut argv = vec!["xdp-filter", "load", "-m", m, "-p", "deny"];
            let feats = features.join(",");
            if !features.is_empty() {
                argv.extend(["-f", &feats]);
            }
            argv.push(iface);
            match try_run(pins.command(ns.get(), &argv)) {
                Ok(_) => {
                    mode = Some(m);
                    break;
                }
                Err(e) => failures.push(e),
            }
        }
        // From here on, drop unloads it (and removes the namespace and the pins).
        let mut xf = Self {
            ns,
            iface: iface.to_string(),
            mode: mode.unwrap_or_else(|| panic!("xdp-filter did not load: {failures:?}")),
            prog_id: 0,
            frame_file,
            pins,
        };
        for a in allow {
            let mut argv = vec!["xdp-filter"];
            argv.extend_from_slice(a);
            run(xf.pins.command(xf.ns.get(), &argv));
        }
        let json = run(xf.pins.command(
            xf.ns.get(),
            &["ip", "-j", "-d", "link", "show", "dev", iface],
        ));
        let v: serde_json::Value = serde_json::from_str(&json).expect("ip -j output");
        xf.prog_id = v[0]["xdp"]["prog"]["id"]
            .as_u64()
            .or_else(|| v[0]["xdp"]["attached"][0]["prog"]["id"].as_u64())
            .unwrap_or_else(|| panic!("no XDP program on {iface}: {json}"))
            as u32;
        xf
    }

    /// The mode xdp-filter loaded in (`native` or `skb`).
    pub fn mode(&self) -> &'static str {
        self.mode
    }

    /// The median cost in ns per run of `frame` (`repeat` runs, `rounds` times), and the XDP
    /// action xdp-filter returned.
    pub fn cost(&self, frame: &[u8], repeat: u32, rounds: usize) -> (f64, u32) {
        std::fs::write(&self.frame_file, frame).expect("write the frame");
        let mut action = 0;
        let mut v: Vec<f64> = (0..rounds)
            .map(|_| {
                let out = Command::new("bpftool")
                    .args(["prog", "run", "id", &self.prog_id.to_string(), "data_in"])
                    .arg(&self.frame_file)
                    .args(["repeat", &repeat.to_string()])
                    .output()
                    .expect("bpftool");
                let text = String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr);
                // "Return value: 2, duration (average): 17ns"
                let num = |after: &str| -> Option<f64> {
                    let rest = &text[text.find(after)? + after.len()..];
                    let end = rest
                        .find(|c: char| !c.is_ascii_digit() && c != '.')
                        .unwrap_or(rest.len());
                    rest[..end].trim().parse().ok()
                };
                action = num("Return value: ").unwrap_or_else(|| panic!("bpftool: {text}")) as u32;
                num("duration (average): ").unwrap_or_else(|| panic!("bpftool: {text}"))
            })
            .collect();
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], action)
    }
}

impl Drop for XdpFilter<'_> {
    fn drop(&mut self) {
        // This interface only (never `--all`).
        let _ = self
            .pins
            .command(self.ns.get(), &["xdp-filter", "unload", &self.iface])
            .output();
        let _ = std::fs::remove_file(&self.frame_file);
    }
}

/// `xdp-filter --version`'s version number ("?" when it cannot say). Its output reads
/// "xdp-filter version 1.3.1 using libbpf version 1.1.2": the first word that starts with a
/// digit (a `v1.3.1` form too), never the word "version".
pub fn version() -> String {
    Command::new("xdp-filter")
        .args(["load", "--version"])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(|w| w.strip_prefix('v').unwrap_or(w))
                .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into())
}
