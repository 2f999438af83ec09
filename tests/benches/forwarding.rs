//! Forwarding throughput and flood-drop rate through a gateway namespace: Conduit (a real
//! `conduit run` process) against nftables, linear and with a set, generated from the same
//! policy text, and against Debian's xdp-filter (stateless allow lists, the closest
//! equivalent it can express). Prints a markdown report (and writes it to $CONDUIT_BENCH_OUT
//! when set). Root needed.
//!
//! Topology (all namespaces and interfaces created here, unique names, removed on drop):
//! sender ns --veth-- gateway ns (ip_forward=1, static neighbour) --veth-- receiver ns.
//!
//! Generator: BPF_PROG_TEST_RUN in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES) on a small
//! XDP program returning XDP_TX on the sender's veth (the way xdp-trafficgen works): the same
//! 64-byte UDP frame is transmitted to the gateway as fast as one CPU can. Variants of the same
//! program give every frame a random source address (a spoofed-source flood), and mix one
//! frame in 16 of the allowed flow into a flood (does the allowed flow keep passing?). The
//! helper programs (XDP_TX, XDP_PASS, XDP_DROP, counters) are loaded from raw instructions with
//! the bpf syscall; no extra eBPF crate is built.
//!
//! Forwarding: packets per second counted at the receiver veth (rx_packets), which drops
//! everything with an XDP_DROP program. Flood: packets per second that the gateway's ingress
//! veth takes in (rx_packets) while the policy denies all of them; a denied frame that
//! reaches the receiver fails the bench (after the report). Mixed: the generator counts the
//! allowed flow's frames it sends, the receiver counts the frames it gets per destination
//! port.
//!
//! Run: `cargo build --release -p conduit-agent && cargo bench -p conduit-tests --bench
//! forwarding` (about 3.5 minutes). A TCP stream (iperf3) through the same gateway closes the
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
    Netns, VethPair,
    agent::Agent,
    conduit_bin, frames, in_netns, median, unique_name,
    xdp_filter::{self, XdpFilter},
};

const SENDER: [u8; 4] = [10, 10, 1, 2];
const GW_IN: [u8; 4] = [10, 10, 1, 1];
const GW_OUT: [u8; 4] = [10, 10, 2, 1];
const RECEIVER: [u8; 4] = [10, 10, 2, 2];
const ALLOWED_PORT: u16 = 5000;
const DENIED_PORT: u16 = 6000;
const FRAME_LEN: usize = 64;
/// The spoofed flood's base source address. The generator replaces its low 16 bits with a
/// random r and the IP ID (1, from `frames::ipv4`) with 0xffff - r: the two header words
/// still add up to 0xfffe + 1 = 0xffff as integers, so the header's one's-complement sum, and
/// with it the checksum written for the base frame, stay right without recomputing
/// (`check_generator` verifies it on the program's own output at startup). No asset of the
/// policy is in 10.99.0.0/16: every source is unknown, 65,536 of them.
const SPOOF_BASE: [u8; 4] = [10, 99, 255, 254];
/// Offsets in the frame: the IPv4 ID, the low half of the source address, the UDP
/// destination port.
const IP_ID: usize = 14 + 4;
const IP_SRC_LO: usize = 14 + 12 + 2;
const UDP_DPORT: usize = 14 + 20 + 2;
/// In a mixed run, frames of the allowed flow are those whose random number has these bits
/// clear: one in 16.
const LEGIT_MASK: i32 = 15;

// ---------------------------------------------------------------------------------------
// Raw bpf syscalls: tiny XDP programs, XDP links, live-frames test runs.

const BPF_MAP_CREATE: i64 = 0;
const BPF_MAP_LOOKUP_ELEM: i64 = 1;
const BPF_PROG_LOAD: i64 = 5;
const BPF_PROG_TEST_RUN: i64 = 10;
const BPF_LINK_CREATE: i64 = 28;
const BPF_LINK_UPDATE: i64 = 29;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const BPF_FUNC_GET_PRANDOM_U32: i32 = 7;
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

/// Replaces the program behind the XDP link `link` with `prog` (in place: the interface is
/// never without a program).
fn link_update(link: &OwnedFd, prog: &OwnedFd) {
    let mut a: Attr = [0; 128];
    put32(&mut a, 0, link.as_raw_fd() as u32);
    put32(&mut a, 4, prog.as_raw_fd() as u32);
    bpf(BPF_LINK_UPDATE, &mut a).unwrap_or_else(|e| panic!("BPF_LINK_UPDATE: {e}"));
}

/// An array of u64 counters that the raw programs add to ([`bump`]) and the bench reads.
struct Counters {
    fd: OwnedFd,
    n: u32,
}

impl Counters {
    fn new(n: u32, name: &str) -> Self {
        let mut a: Attr = [0; 128];
        put32(&mut a, 0, BPF_MAP_TYPE_ARRAY);
        put32(&mut a, 4, 4); // key: u32
        put32(&mut a, 8, 8); // value: u64
        put32(&mut a, 12, n);
        let k = name.len().min(15);
        a[28..28 + k].copy_from_slice(&name.as_bytes()[..k]);
        let fd = bpf(BPF_MAP_CREATE, &mut a).unwrap_or_else(|e| panic!("BPF_MAP_CREATE: {e}"));
        Self {
            // SAFETY: the kernel just returned this fd to us.
            fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
            n,
        }
    }

    fn read(&self) -> Vec<u64> {
        (0..self.n)
            .map(|key| {
                let mut value = 0u64;
                let mut a: Attr = [0; 128];
                put32(&mut a, 0, self.fd.as_raw_fd() as u32);
                put64(&mut a, 8, &key as *const u32 as u64);
                put64(&mut a, 16, &mut value as *mut u64 as u64);
                bpf(BPF_MAP_LOOKUP_ELEM, &mut a)
                    .unwrap_or_else(|e| panic!("BPF_MAP_LOOKUP_ELEM: {e}"));
                value
            })
            .collect()
    }
}

/// Instructions that add 1 to the counter of `map` whose index is `*(u32 *)(r10 - 4)`;
/// they clobber r0-r5 (a helper call), never r6-r9.
fn bump(map: &Counters) -> [u64; 8] {
    [
        // r1 = map (a two-instruction load of the map's fd, which the verifier resolves)
        insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map.fd.as_raw_fd()),
        insn(0, 0, 0, 0, 0),
        insn(0xbf, 2, 10, 0, 0),                       // r2 = r10
        insn(0x07, 2, 0, 0, -4),                       // r2 -= 4 (&key)
        insn(0x85, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM), // r0 = lookup(map, &key)
        insn(0x15, 0, 0, 2, 0),                        // if r0 == NULL goto out
        insn(0xb7, 1, 0, 0, 1),                        // r1 = 1
        insn(0xdb, 0, 1, 0, 0),                        // lock *(u64 *)(r0 + 0) += r1
    ]
}

/// Encodes one eBPF instruction.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst | (src << 4)) << 8)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

/// What the generator transmits.
#[derive(Clone, Copy)]
struct Traffic<'a> {
    /// Written over every frame: the measured flow's or the flood's.
    frame: &'a [u8],
    /// Then a random source address written into it (see [`SPOOF_BASE`]).
    spoof: bool,
    /// A mixed run: one frame in 16, chosen at random, is this one instead (the allowed
    /// flow during the flood), and the generator counts them.
    legit: Option<&'a [u8]>,
}

impl<'a> Traffic<'a> {
    fn fixed(frame: &'a [u8]) -> Self {
        Self {
            frame,
            spoof: false,
            legit: None,
        }
    }

    fn spoofed(frame: &'a [u8]) -> Self {
        Self {
            spoof: true,
            ..Self::fixed(frame)
        }
    }

    fn with_legit(self, legit: &'a [u8]) -> Self {
        Self {
            legit: Some(legit),
            ..self
        }
    }
}

/// The generator's program, and how many frames of the allowed flow it wrote (counter 0).
struct Generator {
    prog: OwnedFd,
    legit: Counters,
}

/// The generator: writes the traffic's frame (whole 4-byte words) over the packet on every
/// run, then returns XDP_TX. Rewriting matters: live-frames mode recycles pages, and the
/// gateway's stack rewrites the headers it forwards (TTL, MAC addresses) in place. One random
/// number per frame (`bpf_get_prandom_u32`) when it spoofs or mixes: its low 4 bits choose the
/// allowed flow's frame (one in 16), its high 16 bits the source address, so the two are
/// independent. The packet pointer stays in r6 (a helper call clobbers r1-r5), the random
/// number in r7.
fn xdp_tx_writer(tr: Traffic) -> Generator {
    let len = tr.frame.len();
    assert!(len.is_multiple_of(4));
    assert!(tr.legit.is_none_or(|l| l.len() == len));
    let legit_count = Counters::new(1, "cdt_gen_legit");
    let write = |frame: &[u8]| -> Vec<u64> {
        frame
            .as_chunks::<4>()
            .0
            .iter()
            .enumerate()
            // *(u32 *)(r6 + 4i) = v
            .map(|(i, w)| insn(0x62, 6, 0, (4 * i) as i16, i32::from_le_bytes(*w)))
            .collect()
    };
    let tx = [insn(0xb7, 0, 0, 0, XDP_TX), insn(0x95, 0, 0, 0, 0)]; // return XDP_TX
    let random = if tr.spoof || tr.legit.is_some() {
        vec![
            insn(0x85, 0, 0, 0, BPF_FUNC_GET_PRANDOM_U32), // r0 = bpf_get_prandom_u32()
            insn(0xbf, 7, 0, 0, 0),                        // r7 = r0
        ]
    } else {
        Vec::new()
    };
    let mut flood = write(tr.frame);
    if tr.spoof {
        let word = |at: usize| u32::from(u16::from_be_bytes([tr.frame[at], tr.frame[at + 1]]));
        assert_eq!(
            word(IP_SRC_LO) + word(IP_ID),
            0xffff,
            "the spoofed frame's source low half and IP ID must add up to 0xffff"
        );
        flood.extend([
            insn(0xbf, 1, 7, 0, 0),                // r1 = r7
            insn(0x77, 1, 0, 0, 16),               // r1 >>= 16
            insn(0x57, 1, 0, 0, 0xffff),           // r1 &= 0xffff
            insn(0xb7, 2, 0, 0, 0xffff),           // r2 = 0xffff
            insn(0x1f, 2, 1, 0, 0),                // r2 -= r1
            insn(0xdc, 1, 0, 0, 16),               // r1 = htobe16(r1)
            insn(0xdc, 2, 0, 0, 16),               // r2 = htobe16(r2)
            insn(0x6b, 6, 1, IP_SRC_LO as i16, 0), // source address, low half = r1
            insn(0x6b, 6, 2, IP_ID as i16, 0),     // IP ID = r2
        ]);
    }
    flood.extend(tx);
    let (select, legit) = match tr.legit {
        Some(l) => {
            let mut b = write(l);
            b.push(insn(0x62, 10, 0, -4, 0)); // key = 0
            b.extend(bump(&legit_count));
            b.extend(tx);
            let select = vec![
                insn(0xbf, 1, 7, 0, 0),                  // r1 = r7
                insn(0x57, 1, 0, 0, LEGIT_MASK),         // r1 &= 15
                insn(0x15, 1, 0, flood.len() as i16, 0), // if r1 == 0 goto legit
            ];
            (select, b)
        }
        None => (Vec::new(), Vec::new()),
    };
    let body = random.len() + select.len() + flood.len() + legit.len();
    let mut p = vec![
        insn(0x61, 6, 1, 0, 0),           // r6 = ctx->data
        insn(0x61, 3, 1, 4, 0),           // r3 = ctx->data_end
        insn(0xbf, 4, 6, 0, 0),           // r4 = r6
        insn(0x07, 4, 0, 0, len as i32),  // r4 += len
        insn(0x2d, 4, 3, body as i16, 0), // if r4 > r3 goto abort
    ];
    for block in [random, select, flood, legit] {
        p.extend(block);
    }
    p.push(insn(0xb7, 0, 0, 0, 0)); // abort: r0 = XDP_ABORTED
    p.push(insn(0x95, 0, 0, 0, 0)); // exit
    Generator {
        prog: load_xdp(&p, "cdt_gen_tx"),
        legit: legit_count,
    }
}

/// The receiver's program in mixed runs: counts the frames to the allowed flow's port
/// (counter 0) and all others (counter 1), then drops them all like `cdt_rx_drop`. Only the
/// bench's UDP frames reach the receiver (no IPv6, a static neighbour on the gateway), so the
/// port at its fixed offset is enough.
fn xdp_rx_counter(c: &Counters) -> OwnedFd {
    let port = i32::from(u16::from_le_bytes(ALLOWED_PORT.to_be_bytes()));
    let mut p = vec![
        insn(0x61, 6, 1, 0, 0),                    // r6 = ctx->data
        insn(0x61, 3, 1, 4, 0),                    // r3 = ctx->data_end
        insn(0x62, 10, 0, -4, 1),                  // key = 1
        insn(0xbf, 4, 6, 0, 0),                    // r4 = r6
        insn(0x07, 4, 0, 0, UDP_DPORT as i32 + 2), // r4 += end of the port
        insn(0x2d, 4, 3, 3, 0),                    // if r4 > r3 goto count
        insn(0x69, 1, 6, UDP_DPORT as i16, 0),     // r1 = *(u16 *)(r6 + port)
        insn(0x55, 1, 0, 1, port),                 // if r1 != 5000 goto count
        insn(0x62, 10, 0, -4, 0),                  // key = 0
    ];
    p.extend(bump(c)); // count:
    p.push(insn(0xb7, 0, 0, 0, XDP_DROP));
    p.push(insn(0x95, 0, 0, 0, 0));
    load_xdp(&p, "cdt_rx_count")
}

/// One run of `prog` on `frame` (BPF_PROG_TEST_RUN, not live): the action and the frame as
/// the program left it.
fn run_once(prog: &OwnedFd, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len()];
    let mut a: Attr = [0; 128];
    put32(&mut a, 0, prog.as_raw_fd() as u32);
    put32(&mut a, 8, frame.len() as u32);
    put32(&mut a, 12, out.len() as u32);
    put64(&mut a, 16, frame.as_ptr() as u64);
    put64(&mut a, 24, out.as_mut_ptr() as u64);
    put32(&mut a, 32, 1);
    bpf(BPF_PROG_TEST_RUN, &mut a).unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {e}"));
    (u32::from_ne_bytes(a[4..8].try_into().unwrap()), out)
}

/// Runs each generator `runs` times on its own frame and checks what it wrote: the traffic's
/// frame, byte for byte where nothing is random; a spoofed frame with a source in 10.99/16,
/// the IP ID compensating and the header checksum still valid; in a mixed run the allowed
/// flow's frame about one time in 16, each one counted. A wrong jump offset or byte order in
/// the raw instructions shows here rather than as odd rates.
fn check_generator(traffic: &[Traffic], runs: u32) {
    for tr in traffic {
        let g = xdp_tx_writer(*tr);
        let (mut legit, mut sources) = (0u64, std::collections::HashSet::new());
        for _ in 0..runs {
            let (action, f) = run_once(&g.prog, tr.frame);
            assert_eq!(action, XDP_TX as u32, "the generator must return XDP_TX");
            if tr.legit == Some(&f[..]) {
                legit += 1;
                continue;
            }
            let ip = &f[14..34];
            assert_eq!(
                frames::checksum(ip),
                0,
                "IPv4 header checksum broken: {ip:02x?}"
            );
            if !tr.spoof {
                assert_eq!(f, tr.frame, "the generator changed the frame");
                continue;
            }
            let lo = u16::from_be_bytes([f[IP_SRC_LO], f[IP_SRC_LO + 1]]);
            let id = u16::from_be_bytes([f[IP_ID], f[IP_ID + 1]]);
            assert_eq!(u32::from(lo) + u32::from(id), 0xffff, "{f:02x?}");
            let mut rest = f.clone();
            rest[IP_SRC_LO..IP_SRC_LO + 2].copy_from_slice(&tr.frame[IP_SRC_LO..IP_SRC_LO + 2]);
            rest[IP_ID..IP_ID + 2].copy_from_slice(&tr.frame[IP_ID..IP_ID + 2]);
            assert_eq!(
                rest, tr.frame,
                "the spoofing changed more than the source and ID"
            );
            sources.insert(lo);
        }
        if tr.spoof {
            // Random 16-bit values: nearly every run a new one (a constant would give 1).
            assert!(
                sources.len() as u32 > (runs - legit as u32) * 9 / 10,
                "{} distinct sources in {runs} runs",
                sources.len()
            );
        }
        if tr.legit.is_some() {
            // Binomial(runs, 1/16): far inside these bounds unless the selection is wrong.
            let expected = u64::from(runs) / 16;
            assert!(
                legit > expected / 2 && legit < expected * 3 / 2,
                "{legit} frames of the allowed flow in {runs} runs (expected about {expected})"
            );
            assert_eq!(
                g.legit.read()[0],
                legit,
                "the generator's count of the allowed flow"
            );
        } else {
            assert_eq!(legit, 0);
        }
    }
}

/// A generator's log entry, after one of its calls: when, frames sent so far, of which of
/// the allowed flow, and the receiver's count of the allowed flow's frames then (mixed runs).
#[derive(Clone, Copy)]
struct Tick {
    at: Instant,
    sent: u64,
    legit: u64,
    legit_rx: u64,
}

/// Live-frames generator: runs until `stop`, logging a [`Tick`] after every call (`rx`: the
/// receiver's counters in a mixed run).
fn generate(
    ns: &Netns,
    dev: &str,
    tr: Traffic,
    rx: Option<&Counters>,
    stop: &AtomicBool,
    log: &Mutex<Vec<Tick>>,
) {
    let g = xdp_tx_writer(tr);
    let frame = tr.frame;
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
            put32(&mut a, 0, g.prog.as_raw_fd() as u32);
            put32(&mut a, 8, frame.len() as u32);
            put64(&mut a, 16, frame.as_ptr() as u64);
            put32(&mut a, 32, repeat);
            put32(&mut a, 40, std::mem::size_of_val(&ctx) as u32);
            put64(&mut a, 48, ctx.as_ptr() as u64);
            put32(&mut a, 64, BPF_F_TEST_XDP_LIVE_FRAMES);
            match bpf(BPF_PROG_TEST_RUN, &mut a) {
                Ok(_) => {
                    sent += u64::from(repeat);
                    let legit = if tr.legit.is_some() {
                        g.legit.read()[0]
                    } else {
                        0
                    };
                    let legit_rx = rx.map_or(0, |c| c.read()[0]);
                    log.lock().unwrap().push(Tick {
                        at: Instant::now(),
                        sent,
                        legit,
                        legit_rx,
                    });
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
    /// The link of the receiver's XDP_DROP counter program (frames); removed for the TCP
    /// stream.
    rx_drop: Option<OwnedFd>,
    /// That program, put back after a mixed run's counting program (`RxCounting`).
    rx_drop_prog: OwnedFd,
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
        // No reverse-path filter on the gateway's ingress (a distribution may set it for new
        // namespaces): the routing step would drop the spoofed sources (10.99/16 is not
        // routed back through that port) before nftables could judge them.
        g.exec_ok(&[
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.rp_filter=0",
            &format!("net.ipv4.conf.{}.rp_filter=0", sg.b),
        ]);
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
        let rx_drop_prog = xdp_const(XDP_DROP, "cdt_rx_drop");
        let rx_drop = attach(&r, &gr.b, &rx_drop_prog);
        Self {
            s,
            g,
            r,
            sg,
            gr,
            rx_drop: Some(rx_drop),
            rx_drop_prog,
        }
    }

    /// A 64-byte Ethernet/IPv4/UDP frame from the sender's MAC and address `src` to the
    /// receiver, addressed to the gateway's MAC.
    fn frame(&self, src: [u8; 4], dport: u16) -> Vec<u8> {
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
        f.extend(frames::ipv4(src, RECEIVER, 17, &udp, Default::default()));
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
    /// Denied frames that reached the receiver during the counted intervals (in a mixed run,
    /// frames to another port than the allowed flow's).
    leaked: u64,
    /// Mixed runs: the allowed flow's frames sent and delivered per second (over the same
    /// generator calls), and the share delivered.
    legit_offered_mpps: f64,
    legit_mpps: f64,
    legit_share: f64,
}

/// While alive, the receiver's XDP program counts frames per destination port
/// (`xdp_rx_counter`) instead of only dropping them; the plain XDP_DROP program comes back
/// on drop. The same BPF link is updated in place both ways.
struct RxCounting<'t> {
    t: &'t Topo,
    counters: Counters,
    _prog: OwnedFd,
}

impl<'t> RxCounting<'t> {
    fn start(t: &'t Topo) -> Self {
        let counters = Counters::new(2, "cdt_rx_count");
        let prog = xdp_rx_counter(&counters);
        link_update(t.rx_drop.as_ref().expect("the receiver's link"), &prog);
        Self {
            t,
            counters,
            _prog: prog,
        }
    }
}

impl Drop for RxCounting<'_> {
    fn drop(&mut self) {
        if let Some(link) = &self.t.rx_drop {
            link_update(link, &self.t.rx_drop_prog);
        }
    }
}

/// Runs the generator with `tr`, waits `warmup`, then counts over `rounds` consecutive
/// intervals of `secs`; returns the median rate.
fn measure(t: &Topo, tr: Traffic, count: Count, secs: f64, rounds: usize) -> Sample {
    let stop = AtomicBool::new(false);
    let log = Mutex::new(Vec::new());
    let rx = tr.legit.map(|_| RxCounting::start(t));
    let rx_counters = rx.as_ref().map(|r| &r.counters);
    std::thread::scope(|sc| {
        sc.spawn(|| generate(&t.s, &t.sg.a, tr, rx_counters, &stop, &log));
        std::thread::sleep(Duration::from_millis(500));
        let read = || match count {
            Count::Receiver => rx_packets(&t.r, &t.gr.b),
            Count::GatewayIngress => rx_packets(&t.g, &t.sg.b),
        };
        let denied_at_receiver = || match rx_counters {
            Some(c) => c.read()[1],
            None => rx_packets(&t.r, &t.gr.b),
        };
        let mut rates = Vec::new();
        let r0 = denied_at_receiver();
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
        let leaked = denied_at_receiver() - r0;
        stop.store(true, Ordering::Relaxed);
        // Offered rates over the generator calls that ended during the counted intervals
        // (over all calls if fewer than two did).
        let log: Vec<Tick> = log.lock().unwrap().clone();
        let inside: Vec<Tick> = log
            .iter()
            .filter(|k| k.at >= start && k.at <= t0)
            .copied()
            .collect();
        let span = if inside.len() >= 2 { &inside } else { &log };
        // Counts over the span (first to last call), and its length (NaN if none).
        let (first, last) = match (span.first(), span.last()) {
            (Some(a), Some(b)) if b.at > a.at => (*a, *b),
            _ => {
                let none = Tick {
                    at: start,
                    sent: 0,
                    legit: 0,
                    legit_rx: 0,
                };
                (none, none)
            }
        };
        let span_s = (last.at - first.at).as_secs_f64();
        let mpps = |f: fn(&Tick) -> u64| (f(&last) - f(&first)) as f64 / span_s / 1e6;
        let (legit_offered_mpps, legit_mpps) = if tr.legit.is_some() {
            (mpps(|k| k.legit), mpps(|k| k.legit_rx))
        } else {
            (f64::NAN, f64::NAN)
        };
        Sample {
            mpps: median(&mut rates),
            offered_mpps: mpps(|k| k.sent),
            leaked,
            legit_offered_mpps,
            legit_mpps,
            legit_share: legit_mpps / legit_offered_mpps,
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

/// The mixed runs' table: the allowed flow's frames sent and delivered during a flood, and
/// the delivered rate against `reference`'s (no filter).
fn mixed_table(out: &mut String, rows: &[Row], reference: f64) {
    out.push_str(
        "| contestant | taken in, Mpps (all frames) | allowed flow sent, Mpps | allowed flow \
         delivered, Mpps | delivered share | delivered × no filter | denied frames at the \
         receiver |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {:.3} | {:.3} | {:.3} | {:.1} % | {:.2} | {} |",
            r.name,
            r.s.mpps,
            r.s.legit_offered_mpps,
            r.s.legit_mpps,
            100.0 * r.s.legit_share,
            r.s.legit_mpps / reference,
            r.s.leaked
        );
    }
}

/// Issue #16's goal lines under a table: for each Conduit row, its rate as a multiple of each
/// reference `(name, rate, goal)`, and whether it meets the goal (at least `goal`×).
fn goals(out: &mut String, rows: &[Row], refs: &[(&str, f64, f64)]) {
    let text: Vec<String> = refs
        .iter()
        .map(|(name, _, goal)| format!("≥ {goal}× {name}"))
        .collect();
    let _ = writeln!(
        out,
        "\nIssue #16's goals for Conduit: {}.\n",
        text.join(" and ")
    );
    for r in rows.iter().filter(|r| r.name.starts_with("Conduit")) {
        let parts: Vec<String> = refs
            .iter()
            .map(|&(name, base, goal)| {
                let x = r.s.mpps / base;
                let verdict = if x >= goal { "met" } else { "missed" };
                format!("{x:.3}× {name} (goal ≥ {goal}×): {verdict}")
            })
            .collect();
        let _ = writeln!(out, "- {}: {}", r.name, parts.join("; "));
    }
}

/// The rate of the first row whose name starts with `prefix` (and contains `with`); 1 when
/// none (so ratios stay finite).
fn rate_of(rows: &[Row], prefix: &str, with: &str) -> f64 {
    rows.iter()
        .find(|r| r.name.starts_with(prefix) && r.name.contains(with))
        .map_or(1.0, |r| r.s.mpps)
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
    let allowed = t.frame(SENDER, ALLOWED_PORT);
    let denied = t.frame(SENDER, DENIED_PORT);
    let spoofed = t.frame(SPOOF_BASE, DENIED_PORT);
    let forward = Traffic::fixed(&allowed);
    let flood_fixed = Traffic::fixed(&denied);
    let flood_spoofed = Traffic::spoofed(&spoofed);
    let mixed_in = flood_spoofed.with_legit(&allowed);
    check_generator(&[forward, flood_spoofed, mixed_in], 4096);
    let pass = xdp_const(XDP_PASS, "cdt_gw_pass");
    let gw_drop = xdp_const(XDP_DROP, "cdt_gw_drop");
    let run = |name: String, tr: Traffic, count: Count| -> Row {
        let s = measure(&t, tr, count, secs, rounds);
        if tr.legit.is_some() {
            eprintln!(
                "  {name}: took in {:.3} Mpps, allowed flow {:.3} of {:.3} Mpps delivered \
                 ({:.1} %), denied frames at the receiver {}",
                s.mpps,
                s.legit_mpps,
                s.legit_offered_mpps,
                100.0 * s.legit_share,
                s.leaked
            );
        } else {
            eprintln!(
                "  {name}: {:.3} Mpps (offered {:.2}, reached receiver {})",
                s.mpps, s.offered_mpps, s.leaked
            );
        }
        Row { name, s }
    };

    // ---- Forwarding (allowed flow), and the mixed runs' reference.
    let mut fwd = Vec::new();
    let mut mixed = Vec::new();
    {
        let _l = attach(&t.g, &t.sg.b, &pass);
        fwd.push(run("no filter".into(), forward, Count::Receiver));
        mixed.push(run(
            "no filter (delivers the flood too)".into(),
            mixed_in,
            Count::GatewayIngress,
        ));
        for &n in &sizes {
            let yaml = policy_yaml(n);
            {
                let _nft = Nft::load(&t.g, &yaml, NftForm::Linear);
                fwd.push(run(
                    format!("nftables linear, {n} rules before the match"),
                    forward,
                    Count::Receiver,
                ));
            }
            {
                let _nft = Nft::load(&t.g, &yaml, NftForm::Set);
                fwd.push(run(
                    format!("nftables set (best form), {} entries", n + 1),
                    forward,
                    Count::Receiver,
                ));
            }
        }
    }
    // Conduit at the smallest and the largest policy size: every table's rows from one
    // agent; the mixed run at the largest.
    let mut conduit_sizes = vec![*sizes.iter().min().unwrap_or(&0), conduit_n];
    conduit_sizes.dedup();
    let mut flood = Vec::new();
    let mut spoof = Vec::new();
    for (i, &n) in conduit_sizes.iter().enumerate() {
        let tl = Instant::now();
        let agent = Agent::start(&bin, &t.g, &[&t.sg.b, &t.gr.a], &policy_yaml(n), &[]);
        eprintln!(
            "  conduit run healthy after {} ms ({n} + 1 conduits)",
            tl.elapsed().as_millis()
        );
        let row = run(
            format!("Conduit, {} conduits (flow allowed by the last)", n + 1),
            forward,
            Count::Receiver,
        );
        fwd.insert(1 + i, row);
        let name = format!("Conduit drop, {} conduits", n + 1);
        flood.push(run(name.clone(), flood_fixed, Count::GatewayIngress));
        spoof.push(run(name, flood_spoofed, Count::GatewayIngress));
        if n == conduit_n {
            mixed.push(run(
                format!("Conduit, {} conduits", n + 1),
                mixed_in,
                Count::GatewayIngress,
            ));
        }
        drop(agent);
    }

    // ---- Flood drop (denied flow).
    {
        let _l = attach(&t.g, &t.sg.b, &gw_drop);
        let name = "bare XDP_DROP (no lookup): the generator's ceiling";
        flood.push(run(name.into(), flood_fixed, Count::GatewayIngress));
        spoof.push(run(name.into(), flood_spoofed, Count::GatewayIngress));
    }
    // ---- xdp-filter on the gateway's ingress veth: deny, one allow entry (destination port
    // 5000), its UDP-only program (the smallest that can say it). The sender's address is
    // not allowed: its allow lists are alternatives, so that would pass the denied flood
    // (the sender's frames to port 6000) too. Measured right after the ceiling its flood
    // rows are compared with (the load of this shared machine drifts).
    let xf_version = xdp_filter::version();
    let xf_mode;
    {
        let port = ALLOWED_PORT.to_string();
        let xf = XdpFilter::attach(
            &t.g,
            &t.sg.b,
            &["native", "skb"],
            &["udp"],
            &[&["port", &port, "--mode", "dst"]],
        );
        xf_mode = xf.mode();
        let name = format!("xdp-filter {xf_version}, {xf_mode} mode");
        fwd.push(run(
            format!("{name} (allows dst port {ALLOWED_PORT})"),
            forward,
            Count::Receiver,
        ));
        flood.push(run(
            format!("{name} drop"),
            flood_fixed,
            Count::GatewayIngress,
        ));
        spoof.push(run(
            format!("{name} drop"),
            flood_spoofed,
            Count::GatewayIngress,
        ));
        mixed.push(run(name, mixed_in, Count::GatewayIngress));
    }

    {
        let _l = attach(&t.g, &t.sg.b, &pass);
        let n_best = conduit_n;
        {
            let _nft = Nft::load(&t.g, &policy_yaml(n_best), NftForm::Set);
            let name = format!("nftables set drop (best form), {} entries", n_best + 1);
            flood.push(run(name.clone(), flood_fixed, Count::GatewayIngress));
            spoof.push(run(name, flood_spoofed, Count::GatewayIngress));
            mixed.push(run(
                format!("nftables set (best form), {} entries", n_best + 1),
                mixed_in,
                Count::GatewayIngress,
            ));
        }
        {
            let _nft = Nft::load(&t.g, &policy_yaml(1000), NftForm::Linear);
            flood.push(run(
                "nftables linear drop, 1001 rules".into(),
                flood_fixed,
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
    let ceiling = rate_of(&flood, "bare XDP_DROP", "");
    let spoof_ceiling = rate_of(&spoof, "bare XDP_DROP", "");
    let mut out = String::new();
    out.push_str(
        "## Forwarding throughput and flood drop (Conduit vs nftables and xdp-filter)\n\n",
    );
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
         with XDP_DROP after counting (rx_packets of its veth). nftables and no filter run an \
         empty XDP_PASS program on the gateway's ingress veth (a veth only accepts redirected \
         frames when it has XDP or GRO). nftables rulesets are stateless forward chains \
         (policy drop), generated from the same policy text Conduit loads; Conduit runs as \
         `conduit run` with `log: none`. xdp-filter {xf_version} (Debian's xdp-tools) runs on \
         the gateway's ingress veth in {xf_mode} mode, policy deny, its UDP-only program \
         (`-f udp`, the smallest that can say it), one allow entry: destination port \
         {ALLOWED_PORT}. Machine: {}, shared; everything (generator, gateway, receiver) \
         competes for them, so compare ratios within one run.\n",
        ceiling,
        conduit_tests::report::machine(),
    );
    let base = fwd[0].s.mpps;
    let best_name = format!("nftables set, {} entries", conduit_n + 1);
    let best_fwd = rate_of(&fwd, "nftables set", &format!("{} entries", conduit_n + 1));
    out.push_str("### Forwarding an allowed flow (packets per second at the receiver)\n\n");
    table(&mut out, &fwd, base, "no filter", best_fwd, &best_name);
    goals(
        &mut out,
        &fwd,
        &[("no filter", base, 0.97), (&best_name, best_fwd, 1.1)],
    );
    let flood_refs = |rows: &[Row], ceiling: f64| {
        [
            ("bare XDP_DROP", ceiling, 0.75),
            ("nftables set drop", rate_of(rows, "nftables set", ""), 3.0),
        ]
    };
    out.push_str(
        "\n### Flood of denied frames (packets per second the gateway takes in and drops)\n\n",
    );
    let refs = flood_refs(&flood, ceiling);
    table(&mut out, &flood, ceiling, refs[0].0, refs[1].1, refs[1].0);
    goals(&mut out, &flood, &refs);
    out.push_str(
        "\n### Flood of denied frames from spoofed (random) source addresses\n\n\
         The same flood, every frame from a random source address: the generator writes a \
         random number's high 16 bits into the source's low half (10.99.0.0/16, 65,536 \
         sources, none of them in the policy) and their complement into the IP ID, which keeps \
         the header checksum valid (checked on the generator's output at startup). Its own bare \
         XDP_DROP row is this table's ceiling (the random number costs the generator a \
         little).\n\n",
    );
    let refs = flood_refs(&spoof, spoof_ceiling);
    table(
        &mut out,
        &spoof,
        spoof_ceiling,
        refs[0].0,
        refs[1].1,
        refs[1].0,
    );
    goals(&mut out, &spoof, &refs);
    let _ = writeln!(
        out,
        "\n`packets at the receiver` (summed over the counted intervals) must be 0 in the flood \
         tables: every denied frame dropped (the bench fails otherwise).\n"
    );
    out.push_str(
        "### The allowed flow during a spoofed-source flood\n\n\
         The spoofed flood with one frame in 16 (chosen by the same random number) replaced by \
         the allowed flow's frame (sender → receiver udp/5000, the forwarding table's). The \
         generator counts the allowed frames it sends; for these runs the receiver's XDP \
         program counts the frames it gets per destination port before dropping them; sent and \
         delivered rates are over the same generator calls. `taken in` is every frame the \
         gateway's ingress took in (rx_packets). Bare XDP_DROP is no contestant here (it drops \
         the allowed flow too); no filter forwards everything, the flood included, and is the \
         reference for the delivered rate. The generator is self-clocked, so the gateway is \
         never overrun: a filter that passes the flow delivers all of it, and what differs is \
         how fast the whole path runs (the delivered rate). `denied frames at the receiver` \
         must be 0 but for no filter.\n\n",
    );
    mixed_table(&mut out, &mixed, mixed[0].s.legit_mpps);
    let _ = writeln!(
        out,
        "\nWhat xdp-filter cannot express: its allow lists are stateless alternatives (any match \
         passes), so \"the sender to the receiver on udp/{ALLOWED_PORT}\" becomes \"anything to \
         port {ALLOWED_PORT}\": a spoofed flood to that port would pass it, where Conduit and \
         the nftables set drop it; allowing the sender's address as well would pass the \
         sender's denied frames (the fixed-source flood, to port {DENIED_PORT}). Nor zones, \
         MAC binding, flow state or inspection. Its rows measure its cost, not an equal \
         policy.\n"
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
    // Last, so that the report is out: a denied frame past the gateway fails the bench.
    let leaks: Vec<String> = flood
        .iter()
        .chain(&spoof)
        .chain(&mixed)
        .filter(|r| !r.name.starts_with("no filter") && r.s.leaked > 0)
        .map(|r| format!("{}: {}", r.name, r.s.leaked))
        .collect();
    assert!(
        leaks.is_empty(),
        "denied frames reached the receiver: {leaks:?}"
    );
}
