//! xdp-filter (Debian's xdp-tools) as a contestant in the benchmarks: loaded on a veth end in a
//! namespace of our own, configured with allow-list entries, and run on the same frames with
//! `bpftool prog run` (BPF_PROG_TEST_RUN, as Conduit's own figures are measured).
//!
//! xdp-filter is stateless: in its `deny` policy a frame passes when any one of its allow
//! lists matches (a source or destination MAC, IP address or port), so "this client to that
//! server on port 502" cannot be said: the closest equivalent allows the client's address and
//! port 502 separately.
use std::{path::PathBuf, process::Command};

use crate::{Netns, ip, unique_name};

/// libxdp's directory in bpffs: removed on drop when this run created it and left it empty.
const LIBXDP_DIR: &str = "/sys/fs/bpf/xdp";

pub struct XdpFilter {
    ns: Netns,
    iface: String,
    prog_id: u32,
    frame_file: PathBuf,
    created_libxdp_dir: bool,
}

/// Runs a command in `ns` with `nsenter` (not `ip netns exec`, which remounts /sys and hides
/// bpffs, where xdp-filter keeps its maps); panics with its output when it fails.
fn run_in(ns: &Netns, argv: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", ns.name))
        .args(argv)
        .output()
        .unwrap_or_else(|e| panic!("running {argv:?}: {e} (is xdp-tools installed?)"));
    assert!(
        out.status.success(),
        "{argv:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl XdpFilter {
    /// Loads xdp-filter in `deny` policy (skb mode: the program is what is measured, not the
    /// driver) with `allow` entries, each the arguments of one `xdp-filter` command (e.g.
    /// `["port", "502", "--mode", "dst"]`).
    pub fn load(allow: &[&[&str]]) -> Self {
        let created_libxdp_dir = !std::path::Path::new(LIBXDP_DIR).exists();
        let ns = Netns::new("cdtxf");
        let iface = unique_name("xf");
        let peer = unique_name("xg");
        ip(&[
            "-n", &ns.name, "link", "add", &iface, "type", "veth", "peer", "name", &peer,
        ]);
        for dev in [&iface, &peer] {
            ip(&["-n", &ns.name, "link", "set", dev, "up"]);
        }
        run_in(
            &ns,
            &["xdp-filter", "load", "-m", "skb", "-p", "deny", &iface],
        );
        for a in allow {
            let mut argv = vec!["xdp-filter"];
            argv.extend_from_slice(a);
            run_in(&ns, &argv);
        }
        let json = run_in(&ns, &["ip", "-j", "-d", "link", "show", "dev", &iface]);
        let v: serde_json::Value = serde_json::from_str(&json).expect("ip -j output");
        let prog_id = v[0]["xdp"]["prog"]["id"]
            .as_u64()
            .or_else(|| v[0]["xdp"]["attached"][0]["prog"]["id"].as_u64())
            .unwrap_or_else(|| panic!("no XDP program on {iface}: {json}"))
            as u32;
        let frame_file = std::env::temp_dir().join(format!("{}.frame", unique_name("cdtxf")));
        Self {
            ns,
            iface,
            prog_id,
            frame_file,
            created_libxdp_dir,
        }
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

impl Drop for XdpFilter {
    fn drop(&mut self) {
        let _ = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.ns.name))
            .args(["xdp-filter", "unload", &self.iface])
            .output();
        let _ = std::fs::remove_file(&self.frame_file);
        if self.created_libxdp_dir {
            // Only if empty: never anything another program put there.
            let _ = std::fs::remove_dir(LIBXDP_DIR);
        }
    }
}
