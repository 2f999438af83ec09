//! Forwarding throughput and flood-drop rate through a gateway namespace: Conduit (a real
//! `conduit run` process) against nftables, linear and with a set, generated from the same
//! policy text. Prints a markdown report (and writes it to $CONDUIT_BENCH_OUT when set).
//! Root needed.
//!
//! Topology (all namespaces and interfaces created here, unique names, removed on drop):
//! sender ns --veth-- gateway ns (ip_forward=1, static neighbour) --veth-- receiver ns.
//!
//! Generator: BPF_PROG_TEST_RUN in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES) on a
//! two-instruction XDP program returning XDP_TX on the sender's veth (the way xdp-trafficgen
//! works): the same 64-byte UDP frame is transmitted to the gateway as fast as one CPU can.
//! The helper programs (XDP_TX, XDP_PASS, XDP_DROP) are loaded from raw instructions with the
//! bpf syscall; no extra eBPF crate is built.
//!
//! Forwarding: packets per second counted at the receiver veth (rx_packets), which drops
//! everything with an XDP_DROP program. Flood: packets per second that the gateway's ingress
//! veth takes in (rx_packets) while the policy denies all of them.
//!
//! Run: `cargo build --release -p conduit-agent && cargo bench -p conduit-tests --bench
//! forwarding` (about 2 minutes). A TCP stream (iperf3) through the same gateway closes the
//! report. Knobs: CONDUIT_BIN (default target/release/conduit), CONDUIT_FWD_SECS (seconds per
//! interval, default 2), CONDUIT_FWD_SIZES (nftables sizes, default "100,1000,10000"),
//! CONDUIT_FWD_ROUNDS (intervals per contestant, default 3).
use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::PathBuf,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use conduit_agent::policy::{
    Policy,
    model::{Addr, Proto},
    validate::validate_bytes,
};
use conduit_tests::{
    Netns, VethPair, agent::Agent, conduit_bin, frames, in_netns, median, unique_name,
};

const SENDER: [u8; 4] = [10, 10, 1, 2];
const GW_IN: [u8; 4] = [10, 10, 1, 1];
const GW_OUT: [u8; 4] = [10, 10, 2, 1];
const RECEIVER: [u8; 4] = [10, 10, 2, 2];
const ALLOWED_PORT: u16 = 5000;
const DENIED_PORT: u16 = 6000;
const FRAME_LEN: usize = 64;

// ---------------------------------------------------------------------------------------
// Raw bpf syscalls: tiny XDP programs, XDP links, live-frames test runs.

const BPF_PROG_LOAD: i64 = 5;
const BPF_PROG_TEST_RUN: i64 = 10;
const BPF_LINK_CREATE: i64 = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
const XDP_DROP: i32 = 1;
const XDP_PASS: i32 = 2;
const XDP_TX: i32 = 3;

type Attr = [u8; 128];

fn put32(a: &mut Attr, off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put64(a: &mut Attr, off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

fn bpf(cmd: i64, attr: &mut Attr) -> std::io::Result<i64> {
    // SAFETY: attr is a zero-padded bpf_attr of the size passed; every pointer in it points
    // to memory that lives for the duration of the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// An XDP program `r0 = verdict; exit`.
fn xdp_const(verdict: i32, name: &str) -> OwnedFd {
    // BPF_ALU64 | BPF_MOV | BPF_K (0xb7) into r0, then BPF_JMP | BPF_EXIT (0x95).
    load_xdp(&[0xb7 | (u64::from(verdict as u32) << 32), 0x95], name)
}

fn load_xdp(insns: &[u64], name: &str) -> OwnedFd {
    let license = b"GPL\0";
    let mut a: Attr = [0; 128];
    put32(&mut a, 0, BPF_PROG_TYPE_XDP);
    put32(&mut a, 4, insns.len() as u32);
    put64(&mut a, 8, insns.as_ptr() as u64);
    put64(&mut a, 16, license.as_ptr() as u64);
    let n = name.len().min(15);
    a[48..48 + n].copy_from_slice(&name.as_bytes()[..n]);
    put32(&mut a, 68, BPF_XDP);
    let fd = bpf(BPF_PROG_LOAD, &mut a).unwrap_or_else(|e| panic!("BPF_PROG_LOAD {name}: {e}"));
    // SAFETY: the kernel just returned this fd to us.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

fn ifindex(dev: &str) -> u32 {
    let c = std::ffi::CString::new(dev).unwrap();
    // SAFETY: valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert!(
        i != 0,
        "no interface {dev}: {}",
        std::io::Error::last_os_error()
    );
    i
}

/// Attaches `prog` to `dev` in `ns` (native XDP) with a BPF link: detached when the returned
/// fd is closed.
fn attach(ns: &Netns, dev: &str, prog: &OwnedFd) -> OwnedFd {
    let pfd = prog.as_raw_fd();
    in_netns(ns, || {
        let mut a: Attr = [0; 128];
        put32(&mut a, 0, pfd as u32);
        put32(&mut a, 4, ifindex(dev));
        put32(&mut a, 8, BPF_XDP);
        let fd = bpf(BPF_LINK_CREATE, &mut a)
            .unwrap_or_else(|e| panic!("attaching XDP to {dev} in {}: {e}", ns.name));
        // SAFETY: the kernel just returned this fd to us.
        unsafe { OwnedFd::from_raw_fd(fd as i32) }
    })
}

/// Encodes one eBPF instruction.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst | (src << 4)) << 8)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

/// The generator: writes `frame` (whole 4-byte words) over the packet on every run, then
/// returns XDP_TX. Rewriting matters: live-frames mode recycles pages, and the gateway's
/// stack rewrites the headers it forwards (TTL, MAC addresses) in place.
fn xdp_tx_writer(frame: &[u8]) -> OwnedFd {
    assert!(frame.len().is_multiple_of(4));
    let words = frame.len() / 4;
    let mut p = vec![
        insn(0x61, 2, 1, 0, 0),                  // r2 = ctx->data
        insn(0x61, 3, 1, 4, 0),                  // r3 = ctx->data_end
        insn(0xbf, 4, 2, 0, 0),                  // r4 = r2
        insn(0x07, 4, 0, 0, frame.len() as i32), // r4 += len
        insn(0x2d, 4, 3, words as i16 + 2, 0),   // if r4 > r3 goto abort
    ];
    for (i, w) in frame.as_chunks::<4>().0.iter().enumerate() {
        let v = i32::from_le_bytes(*w);
        p.push(insn(0x62, 2, 0, (4 * i) as i16, v)); // *(u32 *)(r2 + 4i) = v
    }
    p.push(insn(0xb7, 0, 0, 0, XDP_TX)); // r0 = XDP_TX
    p.push(insn(0x95, 0, 0, 0, 0)); // exit
    p.push(insn(0xb7, 0, 0, 0, 0)); // abort: r0 = XDP_ABORTED
    p.push(insn(0x95, 0, 0, 0, 0)); // exit
    load_xdp(&p, "cdt_gen_tx")
}

/// Live-frames generator: runs until `stop`, logging (end of call, frames offered so far)
/// after every call.
fn generate(
    ns: &Netns,
    dev: &str,
    frame: &[u8],
    stop: &AtomicBool,
    log: &Mutex<Vec<(Instant, u64)>>,
) {
    let prog = xdp_tx_writer(frame);
    in_netns(ns, || {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex.
        let ctx: [u32; 6] = [0, frame.len() as u32, 0, ifindex(dev), 0, 0];
        // Every call sets up a page pool (tens of ms here), so calls must be long; but the
        // stop flag is only seen between calls. Aim at about 0.3 s per call.
        let mut repeat: u32 = 8_192;
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let mut a: Attr = [0; 128];
            put32(&mut a, 0, prog.as_raw_fd() as u32);
            put32(&mut a, 8, frame.len() as u32);
            put64(&mut a, 16, frame.as_ptr() as u64);
            put32(&mut a, 32, repeat);
            put32(&mut a, 40, std::mem::size_of_val(&ctx) as u32);
            put64(&mut a, 48, ctx.as_ptr() as u64);
            put32(&mut a, 64, BPF_F_TEST_XDP_LIVE_FRAMES);
            match bpf(BPF_PROG_TEST_RUN, &mut a) {
                Ok(_) => {
                    sent += u64::from(repeat);
                    log.lock().unwrap().push((Instant::now(), sent));
                    let rate = f64::from(repeat) / t.elapsed().as_secs_f64();
                    repeat = (rate * 0.3).clamp(4096.0, 4_000_000.0) as u32;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => panic!("BPF_PROG_TEST_RUN (live frames): {e}"),
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// The policy, and nftables rulesets generated from its text.

/// `n` filler conduits (each from its own /32 asset to the receiver on its own UDP port),
/// then the conduit that allows the measured flows: sender → receiver, udp/5000 (frames) and
/// tcp/5201 (the iperf3 stream).
fn policy_yaml(n: u32) -> String {
    let mut y = String::from(
        "version: 1\nsite: forwarding-bench\ndefaults:\n  mode: enforce\n  intra_zone: allow\n  \
         log: none\nzones:\n  - name: senders\n    security_level: 2\n    assets:\n      \
         - { name: sender, ip: 10.10.1.2 }\n  - name: receivers\n    security_level: 2\n    \
         assets:\n      - { name: receiver, ip: 10.10.2.2 }\n",
    );
    if n > 0 {
        y.push_str("  - name: fillers\n    security_level: 2\n    assets:\n");
        for i in 0..n {
            let _ = writeln!(
                y,
                "      - {{ name: f{i}, ip: 10.20.{}.{} }}",
                i >> 8,
                i & 0xff
            );
        }
    }
    y.push_str("conduits:\n");
    for i in 0..n {
        let _ = writeln!(
            y,
            "  - {{ name: c{i}, from: fillers, to: receivers, sources: [f{i}], \
             rules: [{{ proto: udp, ports: [{}] }}] }}",
            10_000 + i
        );
    }
    y.push_str(
        "  - name: sender-to-receiver\n    from: senders\n    to: receivers\n    rules:\n      \
         - { proto: udp, ports: [5000] }\n      - { proto: tcp, ports: [5201] }\n",
    );
    y
}

fn parse(yaml: &str) -> Policy {
    let (p, d) = validate_bytes(yaml.as_bytes());
    match p {
        Some(p) => p,
        None => panic!(
            "the bench policy does not validate: {:?}",
            d.errors().map(|e| e.render("bench")).collect::<Vec<_>>()
        ),
    }
}

/// One allowed (source, destination, protocol, destination ports) tuple of the policy.
struct Entry {
    src: String,
    dst: String,
    proto: u8,
    ports: Option<(u16, u16)>,
}

fn nft_addr(a: &Addr) -> Option<String> {
    match *a {
        Addr::Ip(IpAddr::V4(ip)) => Some(ip.to_string()),
        Addr::Cidr(IpAddr::V4(ip), len) => Some(format!("{ip}/{len}")),
        _ => None,
    }
}

/// Every IPv4 TCP/UDP entry the conduits allow, in policy order (other protocols and IPv6
/// are not needed by this bench and are left out).
fn entries(p: &Policy) -> Vec<Entry> {
    let assets = |zones: &[String], only: &Option<Vec<String>>| -> Vec<String> {
        p.zones
            .iter()
            .filter(|z| zones.contains(&z.name))
            .flat_map(|z| z.assets.iter())
            .filter(|a| only.as_ref().is_none_or(|o| o.contains(&a.name)))
            .filter_map(|a| nft_addr(&a.addr))
            .collect()
    };
    let mut out = Vec::new();
    for c in &p.conduits {
        let srcs = assets(&c.from, &c.sources);
        let dsts = assets(&c.to, &c.destinations);
        for r in &c.rules {
            let proto = match r.proto {
                Proto::Number(n @ (6 | 17)) => n,
                _ => continue,
            };
            let ports: Vec<Option<(u16, u16)>> = match &r.ports {
                None => vec![None],
                Some(v) => v.iter().map(|&p| Some(p)).collect(),
            };
            for s in &srcs {
                for d in &dsts {
                    for &pr in &ports {
                        out.push(Entry {
                            src: s.clone(),
                            dst: d.clone(),
                            proto,
                            ports: pr,
                        });
                    }
                }
            }
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq)]
enum NftForm {
    /// One rule per entry, in policy order.
    Linear,
    /// One concatenated-set lookup.
    Set,
}

fn port_text((lo, hi): (u16, u16)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

/// A forward-chain ruleset (table `ip <table>`, policy drop, stateless) equivalent to the
/// IPv4 TCP/UDP part of the policy text `yaml`.
fn nft_ruleset(yaml: &str, table: &str, form: NftForm) -> String {
    let es = entries(&parse(yaml));
    let mut s = format!(
        "table ip {table} {{\n  chain forward {{\n    type filter hook forward priority 0; policy drop;\n"
    );
    match form {
        NftForm::Linear => {
            for e in &es {
                let l4 = if e.proto == 6 { "tcp" } else { "udp" };
                let ports = match e.ports {
                    Some(p) => format!("{l4} dport {}", port_text(p)),
                    None => format!("meta l4proto {l4}"),
                };
                let _ = writeln!(
                    s,
                    "    ip saddr {} ip daddr {} {ports} accept",
                    e.src, e.dst
                );
            }
            s.push_str("  }\n}\n");
        }
        NftForm::Set => {
            s.push_str("    ip saddr . ip daddr . meta l4proto . th dport @allowed accept\n  }\n");
            let interval = es.iter().any(|e| {
                e.src.contains('/')
                    || e.dst.contains('/')
                    || e.ports.is_none_or(|(lo, hi)| lo != hi)
            });
            s.push_str(
                "  set allowed {\n    type ipv4_addr . ipv4_addr . inet_proto . inet_service\n",
            );
            if interval {
                s.push_str("    flags interval\n");
            }
            s.push_str("    elements = {\n");
            for e in &es {
                let l4 = if e.proto == 6 { "tcp" } else { "udp" };
                let ports = port_text(e.ports.unwrap_or((0, 65535)));
                let _ = writeln!(s, "      {} . {} . {l4} . {ports},", e.src, e.dst);
            }
            s.push_str("    }\n  }\n}\n");
        }
    }
    s
}

// ---------------------------------------------------------------------------------------
// Topology and measurement.

struct Topo {
    s: Netns,
    g: Netns,
    r: Netns,
    /// sender end (in s) / gateway ingress (in g).
    sg: VethPair,
    /// gateway egress (in g) / receiver end (in r).
    gr: VethPair,
    /// The receiver's XDP_DROP counter program (frames); removed for the TCP stream.
    rx_drop: Option<OwnedFd>,
}

fn mac(ns: &Netns, dev: &str) -> [u8; 6] {
    let t = ns.exec_ok(&["cat", &format!("/sys/class/net/{dev}/address")]);
    let v: Vec<u8> = t
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

fn rx_packets(ns: &Netns, dev: &str) -> u64 {
    ns.exec_ok(&[
        "cat",
        &format!("/sys/class/net/{dev}/statistics/rx_packets"),
    ])
    .trim()
    .parse()
    .unwrap()
}

fn dotted(a: [u8; 4]) -> String {
    Ipv4Addr::from(a).to_string()
}

impl Topo {
    fn new() -> Self {
        let s = Netns::new("cdfs");
        let g = Netns::new("cdfg");
        let r = Netns::new("cdfr");
        // No IPv6: its router and neighbour solicitations would be counted as traffic.
        for ns in [&s, &g, &r] {
            ns.exec_ok(&[
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]);
        }
        let sg = VethPair::new(
            &s,
            &format!("{}/24", dotted(SENDER)),
            &g,
            &format!("{}/24", dotted(GW_IN)),
        );
        let gr = VethPair::new(
            &g,
            &format!("{}/24", dotted(GW_OUT)),
            &r,
            &format!("{}/24", dotted(RECEIVER)),
        );
        g.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let rmac = mac(&r, &gr.b);
        let rmac = rmac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        g.exec_ok(&[
            "ip",
            "neigh",
            "replace",
            &dotted(RECEIVER),
            "lladdr",
            &rmac,
            "dev",
            &gr.a,
            "nud",
            "permanent",
        ]);
        let drop = xdp_const(XDP_DROP, "cdt_rx_drop");
        let rx_drop = attach(&r, &gr.b, &drop);
        Self {
            s,
            g,
            r,
            sg,
            gr,
            rx_drop: Some(rx_drop),
        }
    }

    /// A 64-byte Ethernet/IPv4/UDP frame from the sender to the receiver, addressed to the
    /// gateway's MAC.
    fn frame(&self, dport: u16) -> Vec<u8> {
        let mut udp = Vec::new();
        udp.extend_from_slice(&40000u16.to_be_bytes());
        udp.extend_from_slice(&dport.to_be_bytes());
        let ulen = (FRAME_LEN - 14 - 20) as u16;
        udp.extend_from_slice(&ulen.to_be_bytes());
        udp.extend_from_slice(&[0, 0]); // no UDP checksum
        udp.resize(ulen as usize, 0);
        let mut f = frames::eth(
            mac(&self.g, &self.sg.b),
            mac(&self.s, &self.sg.a),
            &[],
            0x0800,
        );
        f.extend(frames::ipv4(SENDER, RECEIVER, 17, &udp, Default::default()));
        assert_eq!(f.len(), FRAME_LEN);
        f
    }
}

/// Where a run counts packets.
#[derive(Clone, Copy)]
enum Count {
    /// rx_packets of the receiver's veth (forwarded packets).
    Receiver,
    /// rx_packets of the gateway's ingress veth (packets the gateway took in).
    GatewayIngress,
}

struct Sample {
    mpps: f64,
    offered_mpps: f64,
    /// Packets that reached the receiver during the counted intervals.
    leaked: u64,
}

/// Runs the generator with `frame`, waits `warmup`, then counts over `rounds` consecutive
/// intervals of `secs`; returns the median rate.
fn measure(t: &Topo, frame: &[u8], count: Count, secs: f64, rounds: usize) -> Sample {
    let stop = AtomicBool::new(false);
    let log = Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        sc.spawn(|| generate(&t.s, &t.sg.a, frame, &stop, &log));
        std::thread::sleep(Duration::from_millis(500));
        let read = || match count {
            Count::Receiver => rx_packets(&t.r, &t.gr.b),
            Count::GatewayIngress => rx_packets(&t.g, &t.sg.b),
        };
        let mut rates = Vec::new();
        let r0 = rx_packets(&t.r, &t.gr.b);
        let mut c0 = read();
        let mut t0 = Instant::now();
        let start = t0;
        for _ in 0..rounds {
            std::thread::sleep(Duration::from_secs_f64(secs));
            let c1 = read();
            let t1 = Instant::now();
            rates.push((c1 - c0) as f64 / (t1 - t0).as_secs_f64() / 1e6);
            (c0, t0) = (c1, t1);
        }
        let leaked = rx_packets(&t.r, &t.gr.b) - r0;
        stop.store(true, Ordering::Relaxed);
        // Offered rate over the generator calls that ended during the counted intervals
        // (over all calls if fewer than two did).
        let log = log.lock().unwrap().clone();
        let inside: Vec<_> = log
            .iter()
            .filter(|(at, _)| *at >= start && *at <= t0)
            .copied()
            .collect();
        let span = if inside.len() >= 2 { &inside } else { &log };
        let offered_mpps = match (span.first(), span.last()) {
            (Some(a), Some(b)) if b.0 > a.0 => (b.1 - a.1) as f64 / (b.0 - a.0).as_secs_f64() / 1e6,
            _ => f64::NAN,
        };
        Sample {
            mpps: median(&mut rates),
            offered_mpps,
            leaked,
        }
    })
}

/// Loads an nftables ruleset into the gateway namespace; the table is deleted on drop.
struct Nft<'a> {
    g: &'a Netns,
    table: String,
    file: PathBuf,
}

impl<'a> Nft<'a> {
    fn load(g: &'a Netns, yaml: &str, form: NftForm) -> Self {
        let table = unique_name("cdfnft");
        let rules = nft_ruleset(yaml, &table, form);
        let file = std::env::temp_dir().join(format!("{table}.nft"));
        std::fs::write(&file, rules).unwrap();
        // Built first, so that the file (and any table) goes away if loading fails.
        let nft = Self { g, table, file };
        let t = Instant::now();
        g.exec_ok(&["nft", "-f", nft.file.to_str().unwrap()]);
        eprintln!("  nft -f ({}): {} ms", nft.table, t.elapsed().as_millis());
        nft
    }
}

impl Drop for Nft<'_> {
    fn drop(&mut self) {
        let _ = self
            .g
            .command("nft")
            .args(["delete", "table", "ip", &self.table])
            .status();
        let _ = std::fs::remove_file(&self.file);
    }
}

const IPERF_PORT: &str = "5201";

/// One TCP stream sender → receiver through the gateway with iperf3 for `secs`: the
/// receiver's goodput in Gbit/s. The server (in the receiver namespace) is this process's
/// child, ended by its PID once the client is done.
fn iperf(t: &Topo, secs: f64) -> f64 {
    let mut server =
        t.r.command("iperf3")
            .args(["-s", "-1", "-B", &dotted(RECEIVER), "-p", IPERF_PORT])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("iperf3 (apt-get install iperf3; ./xtask/bootstrap.sh installs it)");
    // Wait until it listens.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !t
        .r
        .exec_ok(&["ss", "-Hltn", &format!("sport = :{IPERF_PORT}")])
        .contains(IPERF_PORT)
    {
        assert!(Instant::now() < deadline, "iperf3 -s did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out =
        t.s.command("iperf3")
            .args([
                "-c",
                &dotted(RECEIVER),
                "-p",
                IPERF_PORT,
                "-t",
                // Whole seconds (iperf3 reads an integer; 0 would mean forever).
                &format!("{}", secs.ceil().max(1.0) as u32),
                "--connect-timeout",
                "3000",
                "-J",
            ])
            .output()
            .expect("iperf3 -c");
    // The client has the result; the one-off server sometimes lingers: end it (our child).
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        out.status.success(),
        "iperf3 -c failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
    j["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("iperf3 gave no receiver rate: {}", j["error"]))
        / 1e9
}

struct Row {
    name: String,
    s: Sample,
}

fn table(out: &mut String, rows: &[Row], base: f64, base_name: &str, best: f64, best_name: &str) {
    let _ = writeln!(
        out,
        "| contestant | Mpps | × {base_name} | × {best_name} | offered Mpps | packets at the receiver |"
    );
    out.push_str("| --- | ---: | ---: | ---: | ---: | ---: |\n");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {:.3} | {:.2} | {:.2} | {} | {} |",
            r.name,
            r.s.mpps,
            r.s.mpps / base,
            r.s.mpps / best,
            if r.s.offered_mpps.is_nan() {
                "n/a".to_string()
            } else {
                format!("{:.3}", r.s.offered_mpps)
            },
            r.s.leaked
        );
    }
}

fn main() {
    conduit_tests::require_root();
    let secs: f64 = std::env::var("CONDUIT_FWD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2.0);
    let sizes: Vec<u32> = std::env::var("CONDUIT_FWD_SIZES")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().parse().unwrap()).collect())
        .unwrap_or_else(|| vec![100, 1000, 10_000]);
    let rounds: usize = std::env::var("CONDUIT_FWD_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let bin = conduit_bin();
    assert!(
        bin.exists(),
        "no conduit binary at {} (cargo build --release -p conduit-agent, or set CONDUIT_BIN)",
        bin.display()
    );
    let conduit_n = *sizes.iter().max().unwrap_or(&0);
    let started = Instant::now();

    let mut t = Topo::new();
    let allowed = t.frame(ALLOWED_PORT);
    let denied = t.frame(DENIED_PORT);
    let pass = xdp_const(XDP_PASS, "cdt_gw_pass");
    let gw_drop = xdp_const(XDP_DROP, "cdt_gw_drop");
    let run = |name: String, frame: &[u8], count: Count| -> Row {
        let s = measure(&t, frame, count, secs, rounds);
        eprintln!(
            "  {name}: {:.3} Mpps (offered {:.2}, reached receiver {})",
            s.mpps, s.offered_mpps, s.leaked
        );
        Row { name, s }
    };

    // ---- Forwarding (allowed flow).
    let mut fwd = Vec::new();
    {
        let _l = attach(&t.g, &t.sg.b, &pass);
        fwd.push(run("no filter".into(), &allowed, Count::Receiver));
        for &n in &sizes {
            let yaml = policy_yaml(n);
            {
                let _nft = Nft::load(&t.g, &yaml, NftForm::Linear);
                fwd.push(run(
                    format!("nftables linear, {n} rules before the match"),
                    &allowed,
                    Count::Receiver,
                ));
            }
            {
                let _nft = Nft::load(&t.g, &yaml, NftForm::Set);
                fwd.push(run(
                    format!("nftables set (best form), {} entries", n + 1),
                    &allowed,
                    Count::Receiver,
                ));
            }
        }
    }
    // Conduit at the smallest and the largest policy size.
    let mut conduit_sizes = vec![*sizes.iter().min().unwrap_or(&0), conduit_n];
    conduit_sizes.dedup();
    let mut flood = Vec::new();
    for (i, &n) in conduit_sizes.iter().enumerate() {
        let tl = Instant::now();
        let agent = Agent::start(&bin, &t.g, &[&t.sg.b, &t.gr.a], &policy_yaml(n), &[]);
        eprintln!(
            "  conduit run healthy after {} ms ({n} + 1 conduits)",
            tl.elapsed().as_millis()
        );
        let row = run(
            format!("Conduit, {} conduits (flow allowed by the last)", n + 1),
            &allowed,
            Count::Receiver,
        );
        fwd.insert(1 + i, row);
        flood.push(run(
            format!("Conduit drop, {} conduits", n + 1),
            &denied,
            Count::GatewayIngress,
        ));
        drop(agent);
    }

    // ---- Flood drop (denied flow).
    {
        let _l = attach(&t.g, &t.sg.b, &gw_drop);
        flood.push(run(
            "bare XDP_DROP (no lookup): the generator's ceiling".into(),
            &denied,
            Count::GatewayIngress,
        ));
    }
    {
        let _l = attach(&t.g, &t.sg.b, &pass);
        let n_best = conduit_n;
        {
            let _nft = Nft::load(&t.g, &policy_yaml(n_best), NftForm::Set);
            flood.push(run(
                format!("nftables set drop (best form), {} entries", n_best + 1),
                &denied,
                Count::GatewayIngress,
            ));
        }
        {
            let _nft = Nft::load(&t.g, &policy_yaml(1000), NftForm::Linear);
            flood.push(run(
                "nftables linear drop, 1001 rules".into(),
                &denied,
                Count::GatewayIngress,
            ));
        }
    }

    // ---- A TCP stream (iperf3): the receiver accepts traffic again.
    t.rx_drop = None;
    let t = t;
    // Routes through the gateway (the frames above carried its MAC address themselves).
    t.s.exec_ok(&["ip", "route", "add", "10.10.2.0/24", "via", &dotted(GW_IN)]);
    t.r.exec_ok(&["ip", "route", "add", "10.10.1.0/24", "via", &dotted(GW_OUT)]);
    let mut tcp: Vec<(String, f64)> = Vec::new();
    let stream = |name: &str| -> (String, f64) {
        let mut v: Vec<f64> = (0..rounds).map(|_| iperf(&t, secs)).collect();
        let g = median(&mut v);
        eprintln!("  {name}: {g:.2} Gbit/s");
        (name.to_string(), g)
    };
    tcp.push(stream("no filter (no XDP program)"));
    {
        let _a = attach(&t.g, &t.sg.b, &pass);
        let _b = attach(&t.g, &t.gr.a, &pass);
        tcp.push(stream("empty XDP_PASS on both gateway ports"));
    }
    {
        let agent = Agent::start(
            &bin,
            &t.g,
            &[&t.sg.b, &t.gr.a],
            &policy_yaml(conduit_n),
            &[],
        );
        tcp.push(stream(&format!(
            "Conduit, {} conduits, on both gateway ports",
            conduit_n + 1
        )));
        drop(agent);
    }
    {
        let nft = Nft::load(&t.g, &policy_yaml(conduit_n), NftForm::Set);
        // Stateful: the stream's ACKs come back as part of the connection.
        t.g.exec_ok(&[
            "nft",
            "insert",
            "rule",
            "ip",
            &nft.table,
            "forward",
            "ct",
            "state",
            "established,related",
            "accept",
        ]);
        tcp.push(stream(&format!(
            "nftables set + conntrack (best form), {} entries",
            conduit_n + 1
        )));
    }

    // ---- Report.
    let ceiling = flood
        .iter()
        .find(|r| r.name.starts_with("bare XDP_DROP"))
        .map_or(1.0, |r| r.s.mpps);
    let mut out = String::new();
    out.push_str("## Forwarding throughput and flood drop (Conduit vs nftables)\n\n");
    let _ = writeln!(
        out,
        "Method: sender ns → gateway ns (veth, ip_forward=1, static neighbour) → receiver ns, \
         {FRAME_LEN}-byte UDP frames, one flow (10.10.1.2:40000 → 10.10.2.2). Generator: \
         BPF_PROG_TEST_RUN in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES) on an XDP_TX \
         program on the sender's veth, one thread; its ceiling (the gateway's ingress drops \
         everything in XDP, no lookup) was {:.2} Mpps in this run. The generator is \
         self-clocked: the gateway's and the receiver's softirq work runs on the generator's \
         CPU, so a rate is the throughput of the whole path on about one CPU. Rates are the median of {rounds} \
         intervals of {secs} s. Native XDP on veth everywhere; the receiver drops everything \
         with XDP_DROP after counting (rx_packets of its veth). Non-Conduit contestants run an \
         empty XDP_PASS program on the gateway's ingress veth (a veth only accepts redirected \
         frames when it has XDP or GRO). nftables rulesets are stateless forward chains \
         (policy drop), generated from the same policy text Conduit loads; Conduit runs as \
         `conduit run` with `log: none`. Machine: {}, shared; everything (generator, \
         gateway, receiver) competes for them, so compare ratios within one run.\n",
        ceiling,
        conduit_tests::report::machine(),
    );
    let base = fwd[0].s.mpps;
    let best_fwd = fwd
        .iter()
        .filter(|r| {
            r.name.starts_with("nftables set") && r.name.contains(&format!("{}", conduit_n + 1))
        })
        .map(|r| r.s.mpps)
        .next()
        .unwrap_or(base);
    out.push_str("### Forwarding an allowed flow (packets per second at the receiver)\n\n");
    table(
        &mut out,
        &fwd,
        base,
        "no filter",
        best_fwd,
        &format!("nftables set, {} entries", conduit_n + 1),
    );
    out.push_str(
        "\n### Flood of denied frames (packets per second the gateway takes in and drops)\n\n",
    );
    let best_flood = flood
        .iter()
        .find(|r| r.name.starts_with("nftables set"))
        .map_or(1.0, |r| r.s.mpps);
    table(
        &mut out,
        &flood,
        ceiling,
        "bare XDP_DROP",
        best_flood,
        "nftables set drop",
    );
    let _ = writeln!(
        out,
        "\n`packets at the receiver` (summed over the counted intervals) must be 0 in the flood \
         table: every denied frame dropped.\n"
    );
    out.push_str("### A TCP stream (iperf3, sender → receiver through the gateway)\n\n");
    let _ = writeln!(
        out,
        "One iperf3 connection (tcp/5201, allowed by the last conduit), {secs} s, median of \
         {rounds} runs; goodput at the receiver. Conduit judges the data segments and the \
         returning ACKs (replies) on the gateway's two ports, like the empty XDP program row; \
         nftables runs with its set and a conntrack rule for the return path. On veth, any XDP \
         program changes how segments are batched, so Conduit compares with the empty XDP_PASS \
         row.\n"
    );
    let tcp_base = tcp
        .iter()
        .find(|r| r.0.starts_with("empty XDP_PASS"))
        .map_or(1.0, |r| r.1);
    out.push_str("| contestant | Gbit/s | × empty XDP_PASS |\n| --- | ---: | ---: |\n");
    for (name, g) in &tcp {
        let _ = writeln!(out, "| {name} | {g:.2} | {:.2} |", g / tcp_base);
    }
    let _ = writeln!(
        out,
        "\nTotal bench time {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    conduit_tests::report::publish(&out);
}
