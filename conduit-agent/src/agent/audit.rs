//! The audit log (SPEC §4): events from the kernel's ring buffer, written as JSON lines.
use std::{io::Write, net::IpAddr, time::SystemTime};

use conduit_common::{Event, FAMILY_V4, FAMILY_V6, Reason, Verdict};
use serde_json::json;

use super::{host::ifname, state::State};

/// RFC 3339 (UTC, microseconds) for a Unix time in ns.
pub fn rfc3339(unix_ns: u128) -> String {
    let secs = (unix_ns / 1_000_000_000) as i64;
    let micros = (unix_ns % 1_000_000_000) / 1000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn addr(family: u8, a: &[u8; 16]) -> Option<IpAddr> {
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

/// One audit line. `mono_now` and `wall_now` map the kernel's monotonic time to wall time.
pub fn line(ev: &Event, st: &State, mono_now: u64, wall_now: SystemTime) -> String {
    let age = u128::from(mono_now.saturating_sub(ev.ts_ns));
    let wall = wall_now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        .saturating_sub(age);
    let zone = |id: u32| {
        if id == 0 {
            "unknown".to_owned()
        } else {
            st.zones
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("zone-{id}"))
        }
    };
    let icmp = ev.arp == 0 && matches!(ev.proto, 1 | 58);
    let ports = ev.family != 0 && ev.arp == 0 && !icmp;
    let v = json!({
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
    v.to_string()
}

/// Where audit lines go: a file (appended) or stdout.
pub enum Sink {
    Stdout,
    File(std::fs::File),
}

impl Sink {
    pub fn open(path: &std::path::Path) -> std::io::Result<Self> {
        if path.as_os_str() == "-" {
            return Ok(Sink::Stdout);
        }
        Ok(Sink::File(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ))
    }

    pub fn write_line(&mut self, l: &str) -> std::io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{l}")?;
                out.flush()
            }
            Sink::File(f) => writeln!(f, "{l}"),
        }
    }
}

#[cfg(test)]
mod tests {
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
