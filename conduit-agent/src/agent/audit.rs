//! The audit log (SPEC §4): events from the kernel's ring buffer, written as JSON lines.
use std::{
    io::Write,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use conduit_common::{Event, FAMILY_V4, FAMILY_V6, Reason, Verdict, inspect};
use serde_json::json;

use tracing::{info, warn};

use super::{
    Shared,
    host::{ifname, monotonic_ns},
    state::State,
    throttle,
};

/// Unix time in ns as RFC 3339 in UTC with microseconds (`2026-11-22T07:57:42.123456Z`), the
/// audit log's and the learn dir's form.
pub fn rfc3339(unix_ns: u128) -> String {
    let micros = i64::try_from(unix_ns / 1000).unwrap_or(i64::MAX);
    let t = jiff::Timestamp::from_microsecond(micros).unwrap_or(jiff::Timestamp::MAX);
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// An address of the kernel's layout (network order, IPv4 in the first 4 bytes).
pub fn addr(family: u8, a: &[u8; 16]) -> Option<IpAddr> {
    match family {
        FAMILY_V4 => Some(IpAddr::from([a[0], a[1], a[2], a[3]])),
        FAMILY_V6 => Some(IpAddr::from(*a)),
        _ => None,
    }
}

fn proto_name(p: u8, family: u8) -> serde_json::Value {
    match (p, family) {
        (_, 0) => serde_json::Value::Null,
        (6, _) => "tcp".into(),
        (17, _) => "udp".into(),
        (1, _) => "icmp".into(),
        (58, _) => "icmpv6".into(),
        (n, _) => n.into(),
    }
}

/// The wall-clock time (ns since the epoch) of the kernel's monotonic time `ts`, given both
/// clocks read now.
pub fn wall_ns(ts: u64, mono_now: u64, wall_now: SystemTime) -> u128 {
    let age = u128::from(mono_now.saturating_sub(ts));
    wall_now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        .saturating_sub(age)
}

/// One audit line. `mono_now` and `wall_now` map the kernel's monotonic time to wall time.
pub fn line(ev: &Event, st: &State, mono_now: u64, wall_now: SystemTime) -> String {
    let wall = wall_ns(ev.ts_ns, mono_now, wall_now);
    let zone = |id: u32| st.zone_name(id);
    let icmp = ev.arp == 0 && matches!(ev.proto, 1 | 58);
    let ports = ev.family != 0 && ev.arp == 0 && !icmp;
    let mut v = json!({
        "ts": rfc3339(wall),
        "verdict": Verdict::try_from(ev.verdict).map(Verdict::as_str).unwrap_or("?"),
        "reason": Reason::try_from(ev.reason).map(Reason::as_str).unwrap_or("?"),
        "conduit": st.conduits.get(&ev.conduit),
        "src_zone": zone(ev.src_zone),
        "dst_zone": zone(ev.dst_zone),
        "src_ip": addr(ev.family, &ev.src),
        "dst_ip": addr(ev.family, &ev.dst),
        "proto": if ev.arp == 1 { "arp".into() } else { proto_name(ev.proto, ev.family) },
        "sport": ports.then_some(ev.sport),
        "dport": ports.then_some(ev.dport),
        "icmp_type": if icmp { Some(ev.dport >> 8) } else { None },
        "interface": ifname(ev.ifindex),
        "suppressed_before": ev.suppressed,
    });
    // A request a filter denied: which, on which protocol.
    if let Some(o) = v.as_object_mut() {
        match ev.protocol {
            inspect::MODBUS | inspect::DNP3 => {
                let (protocol, address) = if ev.protocol == inspect::MODBUS {
                    ("modbus", "unit")
                } else {
                    ("dnp3", "outstation")
                };
                o.insert("protocol".into(), protocol.into());
                o.insert("function".into(), ev.function.into());
                o.insert(address.into(), ev.address.into());
            }
            inspect::ENIP => {
                // The service, and whether it went to the Connection Manager (the other
                // half of the filter's codes).
                o.insert("protocol".into(), "enip".into());
                o.insert(
                    "service".into(),
                    (ev.function & !inspect::enip::CONNECTION_MANAGER).into(),
                );
                if ev.function & inspect::enip::CONNECTION_MANAGER != 0 {
                    o.insert("object".into(), "connection_manager".into());
                }
            }
            _ => {}
        }
    }
    v.to_string()
}

/// Where audit lines go: a file (appended) or stdout. A line is written whole or not at all:
/// when a write fails part-way (a full disk), what of the line reached the file is cut off
/// again, so that every line of the file stays one JSON object.
pub struct Sink {
    out: Out,
    /// Part of a line could not be taken back (or, on stdout, may have been written): the next
    /// line starts with a newline, so that it at least parses.
    cut: bool,
    buf: Vec<u8>,
}

enum Out {
    Stdout,
    File(std::fs::File),
}

impl Sink {
    pub fn open(path: &std::path::Path) -> std::io::Result<Self> {
        let out = if path.as_os_str() == "-" {
            Out::Stdout
        } else {
            Out::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )
        };
        Ok(Self {
            out,
            cut: false,
            buf: Vec::new(),
        })
    }

    /// Writes `l` and a newline. On error nothing of the line stays in a file (see [`Sink`]).
    pub fn write_line(&mut self, l: &str) -> std::io::Result<()> {
        self.buf.clear();
        if self.cut {
            self.buf.push(b'\n');
        }
        self.buf.extend_from_slice(l.as_bytes());
        self.buf.push(b'\n');
        match &mut self.out {
            Out::File(f) => {
                let (written, r) = write_counted(f, &self.buf);
                if r.is_err() && written > 0 && !take_back(f, written) {
                    self.cut = true;
                }
                r?;
            }
            Out::Stdout => {
                let mut out = std::io::stdout().lock();
                let r = out.write_all(&self.buf).and_then(|()| out.flush());
                // What reached the terminal or pipe is unknown: end it, to be safe.
                if r.is_err() {
                    self.cut = true;
                }
                r?;
            }
        }
        self.cut = false;
        Ok(())
    }
}

/// `write_all` that says how many bytes it wrote before failing.
fn write_counted(w: &mut impl Write, buf: &[u8]) -> (usize, std::io::Result<()>) {
    let mut done = 0;
    while done < buf.len() {
        match w.write(&buf[done..]) {
            Ok(0) => return (done, Err(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (done, Err(e)),
        }
    }
    (done, Ok(()))
}

/// Cuts the last `n` bytes (the start of a line that could not be written whole) off the end
/// of `f`; whether it could.
fn take_back(f: &std::fs::File, n: usize) -> bool {
    f.metadata()
        .ok()
        .and_then(|m| m.len().checked_sub(n as u64))
        .is_some_and(|len| f.set_len(len).is_ok())
}

/// Writes the kernel's audit events (the ring buffer) to `sink` as JSON lines, as they come,
/// counting what was written and what failed in `shared`; without a sink, the events are
/// drained and dropped. Runs for the agent's life.
pub async fn write_events(
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    mut sink: Option<Sink>,
    audit_shared: Arc<Mutex<Shared>>,
) {
    // A full disk fails every line: one warning per 10 s, with the count.
    let mut write_failures = throttle::Throttle::new(Duration::from_secs(10));
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long
    // as the AsyncFd (which owns the ring buffer) lives.
    let Ok(mut fd) = (unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE)
    }) else {
        warn!("cannot watch the audit ring buffer: no audit events");
        return;
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        let ring = guard.get_inner_mut();
        let mut lines = Vec::new();
        while let Some(item) = ring.next() {
            if item.len() >= std::mem::size_of::<conduit_common::Event>() {
                // SAFETY: the kernel wrote a whole `Event` (repr(C), plain integers).
                let ev: conduit_common::Event =
                    unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                lines.push(ev);
            }
        }
        guard.clear_ready();
        if lines.is_empty() {
            continue;
        }
        let st = match audit_shared.lock() {
            Ok(s) => s.state.clone(),
            Err(_) => return,
        };
        let (mono, wall) = (monotonic_ns(), SystemTime::now());
        let (mut written, mut failed) = (0, 0);
        for ev in &lines {
            let l = line(ev, &st, mono, wall);
            if let Some(sink) = &mut sink {
                match sink.write_line(&l) {
                    Ok(()) => written += 1,
                    Err(e) => {
                        failed += 1;
                        if let Some(lost) = write_failures.hit() {
                            warn!(error = %e, lost, "audit events could not be written to the audit log and are lost (counted in conduit_audit_events_lost_total{{reason=\"write_error\"}}); this warning repeats at most every 10 s");
                        }
                    }
                }
            }
        }
        if written > 0
            && let Some(lost) = write_failures.settle()
        {
            info!(
                lost,
                "the audit log is writable again (lost: events since the last warning)"
            );
        }
        if let Ok(mut s) = audit_shared.lock() {
            s.events_written += written;
            s.events_write_failed += failed;
        }
    }
}

#[cfg(test)]
mod tests {
    /// A writer that takes `room` bytes in all, then fails like a full disk.
    struct Full {
        got: Vec<u8>,
        room: usize,
    }

    impl std::io::Write for Full {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.room - self.got.len()).min(7);
            if n == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_counted_says_how_much_reached_the_writer() {
        let mut w = Full {
            got: Vec::new(),
            room: 20,
        };
        let (n, r) = super::write_counted(&mut w, b"0123456789\n");
        assert_eq!((n, r.is_ok()), (11, true));
        let (n, r) = super::write_counted(&mut w, b"abcdefghijklmno\n");
        assert_eq!(
            n, 9,
            "in pieces of at most 7 bytes, until the writer was full"
        );
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(w.got, b"0123456789\nabcdefghi");
    }

    #[test]
    fn take_back_cuts_the_end_of_the_file() {
        let path = std::env::temp_dir().join(format!("conduit-audit-{}", std::process::id()));
        let mut sink = super::Sink::open(&path).unwrap();
        sink.write_line("{\"a\":1}").unwrap();
        let super::Out::File(f) = &mut sink.out else {
            unreachable!()
        };
        use std::io::Write as _;
        f.write_all(b"{\"b\":").unwrap();
        assert!(super::take_back(f, 5));
        assert!(
            !super::take_back(f, 100),
            "never past the start of the file"
        );
        sink.write_line("{\"c\":3}").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"c\":3}\n");
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            super::rfc3339(1_795_334_262_123_456_000),
            "2026-11-22T07:57:42.123456Z"
        );
        assert_eq!(
            super::rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }
}
