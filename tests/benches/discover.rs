//! `conduit discover` over a large capture, side by side in the same run with the tool users
//! would reach for, `tshark -r FILE -q -z conv,tcp`, on the same file: frames per second and
//! peak RSS of each (the child's `ru_maxrss`), and discover's RSS at a quarter of the capture
//! too (memory must stay flat in capture size). Numbers, never a failure on speed. No root.
//!
//! The capture: plant-like traffic written here (pcap, Ethernet): Modbus/TCP polling
//! connections (handshake, request, answer, close: 9 frames) from 50 clients to 40 servers,
//! NTP-like UDP exchanges, and a port scan, one frame per millisecond (1M frames: 17 minutes of plant time, longer than any idle
//! timeout of discover's connection tracking, so the quarter and the whole capture both reach
//! the steady state: memory follows the connections open at one time, not the file).
//!
//! Run: `cargo build --release -p conduit-agent && cargo bench -p conduit-tests --bench
//! discover`. CONDUIT_DISCOVER_FRAMES (default 1,000,000; `cargo xtask bench --smoke`: 20,000),
//! CONDUIT_BIN (default target/release/conduit), CONDUIT_BENCH_OUT (Markdown section).
use std::{
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use conduit_tests::{
    frames::{L4, modbus_adu, v4},
    report::machine,
};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;

/// Writes a capture of about `n` frames; returns the frame count.
fn write_capture(path: &Path, n: u64) -> u64 {
    let f = std::fs::File::create(path).expect("create the capture");
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    hdr.extend_from_slice(&2u16.to_le_bytes());
    hdr.extend_from_slice(&4u16.to_le_bytes());
    hdr.extend_from_slice(&[0; 8]);
    hdr.extend_from_slice(&65535u32.to_le_bytes());
    hdr.extend_from_slice(&1u32.to_le_bytes());
    w.write_all(&hdr).unwrap();
    let count = std::cell::Cell::new(0u64);
    let put = |w: &mut std::io::BufWriter<std::fs::File>, frame: &[u8]| {
        let us = 1_767_225_600_000_000u64 + count.get() * 1000;
        let mut r = Vec::with_capacity(16);
        r.extend_from_slice(&((us / 1_000_000) as u32).to_le_bytes());
        r.extend_from_slice(&((us % 1_000_000) as u32).to_le_bytes());
        r.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        r.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        w.write_all(&r).unwrap();
        w.write_all(frame).unwrap();
        count.set(count.get() + 1);
    };
    let mac = |ip: [u8; 4]| [2, 0, 0, ip[1], ip[2], ip[3]];
    let mut i = 0u64;
    while count.get() < n {
        let c = [10, 3, (i % 5) as u8, 10 + (i % 50) as u8];
        let s = [10, 2, 0, 10 + ((i / 7) % 40) as u8];
        let cp = 20_000 + (i % 40_000) as u16;
        let t = |smac, src, sp, dst, dp, flags| {
            v4(
                smac,
                src,
                dst,
                L4::Tcp {
                    sport: sp,
                    dport: dp,
                    flags,
                },
            )
        };
        put(&mut w, &t(mac(c), c, cp, s, 502, SYN));
        put(&mut w, &t(mac(s), s, 502, c, cp, SYN | ACK));
        put(&mut w, &t(mac(c), c, cp, s, 502, ACK));
        let (data, len) = modbus_adu(i as u16, 1, 3, &[0, 0, 0, 4]);
        put(
            &mut w,
            &v4(
                mac(c),
                c,
                s,
                L4::TcpData {
                    sport: cp,
                    dport: 502,
                    flags: ACK | PSH,
                    data,
                    len,
                },
            ),
        );
        let (data, len) = modbus_adu(i as u16, 1, 3, &[8, 0, 1, 0, 2, 0, 3, 0, 4]);
        put(
            &mut w,
            &v4(
                mac(s),
                s,
                c,
                L4::TcpData {
                    sport: 502,
                    dport: cp,
                    flags: ACK | PSH,
                    data,
                    len,
                },
            ),
        );
        put(&mut w, &t(mac(c), c, cp, s, 502, FIN | ACK));
        put(&mut w, &t(mac(s), s, 502, c, cp, FIN | ACK));
        put(&mut w, &t(mac(c), c, cp, s, 502, ACK));
        put(
            &mut w,
            &v4(
                mac(c),
                c,
                s,
                L4::Udp {
                    sport: cp,
                    dport: 123,
                },
            ),
        );
        put(
            &mut w,
            &v4(
                mac(s),
                s,
                c,
                L4::Udp {
                    sport: 123,
                    dport: cp,
                },
            ),
        );
        if i.is_multiple_of(10) {
            let scanner = [10, 9, 0, 66];
            let port = 1 + (i / 10 % 1024) as u16;
            put(&mut w, &t(mac(scanner), scanner, 60_000, s, port, SYN));
            put(&mut w, &t(mac(s), s, port, scanner, 60_000, RST | ACK));
        }
        i += 1;
    }
    w.flush().unwrap();
    count.get()
}

/// Runs `cmd` to the end: (seconds, peak RSS in MiB, stdout).
fn measure(cmd: &mut Command) -> (f64, f64, String) {
    let t = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let pid = child.id() as i32;
    let out = std::thread::spawn(move || {
        let mut child = child;
        let mut s = String::new();
        let mut e = String::new();
        use std::io::Read as _;
        child.stdout.take().unwrap().read_to_string(&mut s).ok();
        child.stderr.take().unwrap().read_to_string(&mut e).ok();
        std::mem::forget(child); // reaped by wait4 below
        (s, e)
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 on our own child's PID fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on the PID of a child we spawned, with valid pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let secs = t.elapsed().as_secs_f64();
    let (stdout, stderr) = out.join().unwrap();
    assert!(
        r == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed: {stderr}"
    );
    (secs, ru.ru_maxrss as f64 / 1024.0, stdout)
}

fn main() {
    let n: u64 = std::env::var("CONDUIT_DISCOVER_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = std::env::var("CONDUIT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target/release/conduit"));
    let dir = std::env::temp_dir().join(format!("conduit-bench-discover-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let quarter_path = dir.join("quarter.pcap");
    let full_path = dir.join("full.pcap");
    let quarter = write_capture(&quarter_path, n / 4);
    let full = write_capture(&full_path, n);
    let size_mib = std::fs::metadata(&full_path).unwrap().len() as f64 / (1 << 20) as f64;
    let discover = |p: &Path| {
        measure(
            Command::new(&bin)
                .arg("discover")
                .arg("--pcap")
                .arg(p)
                .arg("-o")
                .arg(dir.join("draft.yaml"))
                .args(["--format", "json"]),
        )
    };
    let (dq_s, dq_rss, _) = discover(&quarter_path);
    let (d_s, d_rss, d_out) = discover(&full_path);
    let j: serde_json::Value = serde_json::from_str(&d_out).expect("discover's JSON");
    let tshark = Command::new("tshark")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut md = String::new();
    let _ = writeln!(md, "## Discover over a capture\n");
    let _ = writeln!(md, "{}\n", machine());
    let _ = writeln!(
        md,
        "A capture of {full} frames ({size_mib:.0} MiB, pcap): Modbus/TCP polling, UDP exchanges, a port scan. `conduit discover --pcap FILE -o DRAFT --format json` ({} flows, {} answered, {} conduits) against `tshark -r FILE -q -z conv,tcp`, same file, same run; peak RSS is the process's `ru_maxrss`.\n",
        j["flows"]["seen"], j["flows"]["answered"], j["conduits"]
    );
    let _ = writeln!(
        md,
        "| tool | frames | seconds | frames/s | peak RSS (MiB) |\n| --- | ---: | ---: | ---: | ---: |"
    );
    let _ = writeln!(
        md,
        "| conduit discover | {quarter} | {dq_s:.2} | {:.0} | {dq_rss:.1} |",
        quarter as f64 / dq_s
    );
    let _ = writeln!(
        md,
        "| conduit discover | {full} | {d_s:.2} | {:.0} | {d_rss:.1} |",
        full as f64 / d_s
    );
    if tshark {
        let (t_s, t_rss, _) = measure(
            Command::new("tshark")
                .arg("-r")
                .arg(&full_path)
                .args(["-q", "-z", "conv,tcp"]),
        );
        let _ = writeln!(
            md,
            "| tshark -z conv,tcp | {full} | {t_s:.2} | {:.0} | {t_rss:.1} |",
            full as f64 / t_s
        );
        let _ = writeln!(
            md,
            "\ndiscover is {:.1}× tshark's speed (goal ≥ 5×) with {:.2}× its peak memory; discover's RSS at 4× the capture: {:.2}× (goal: flat, ≤ 64 MiB for 1 GB).",
            t_s / d_s,
            d_rss / t_rss,
            d_rss / dq_rss
        );
    } else {
        let _ = writeln!(md, "\n(tshark is not installed: no comparison.)");
    }
    print!("{md}");
    if let Ok(out) = std::env::var("CONDUIT_BENCH_OUT") {
        std::fs::write(out, &md).unwrap();
    }
    std::fs::remove_dir_all(&dir).ok();
}
