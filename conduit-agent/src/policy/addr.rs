//! Parsing of the address-like values of a policy: IPs, CIDRs, MACs, ports, protocols,
//! ICMP types and EtherTypes. Each returns a message that quotes the bad value and says what
//! would be right.
use std::net::IpAddr;

use super::model::{ICMP, ICMPV6, Proto, TCP, UDP};

pub fn ip(s: &str) -> Result<IpAddr, String> {
    s.trim().parse::<IpAddr>().map_err(|_| {
        format!("`{s}` is not an IP address (expected IPv4 like 10.2.0.10 or IPv6 like fd00::10)")
    })
}

pub fn cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let Some((a, l)) = s.trim().split_once('/') else {
        return Err(format!(
            "`{s}` is not a CIDR: expected ADDRESS/PREFIX like 10.4.0.0/16 (use `ip:` for one address)"
        ));
    };
    let addr: IpAddr = a
        .parse()
        .map_err(|_| format!("`{s}` is not a CIDR: `{a}` is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len: u8 =
        l.parse().ok().filter(|&n: &u8| n <= max).ok_or_else(|| {
            format!("`{s}` is not a CIDR: the prefix length `{l}` must be 0..{max}")
        })?;
    let net = mask(addr, len);
    if net != addr {
        return Err(format!(
            "`{s}` has host bits set; did you mean {net}/{len}?"
        ));
    }
    Ok((addr, len))
}

/// `addr` with every bit past the first `len` cleared.
pub fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

pub fn contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    net.is_ipv4() == ip.is_ipv4() && mask(ip, len) == net
}

pub fn mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.trim().split([':', '-']).collect();
    let bad =
        || format!("`{s}` is not a MAC address (expected six hex octets like 02:00:00:02:00:10)");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut out = [0u8; 6];
    for (o, p) in out.iter_mut().zip(&parts) {
        if p.len() != 2 {
            return Err(bad());
        }
        *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if out[0] & 1 == 1 {
        return Err(format!(
            "`{s}` is a multicast or broadcast MAC; a device's own MAC is unicast"
        ));
    }
    if out == [0; 6] {
        return Err(format!("`{s}` is the all-zero MAC, which no device has"));
    }
    Ok(out)
}

pub fn proto(s: &str) -> Result<Proto, String> {
    Ok(match s.trim() {
        "any" => Proto::Any,
        "tcp" => Proto::Number(TCP),
        "udp" => Proto::Number(UDP),
        "icmp" => Proto::Number(ICMP),
        "icmpv6" => Proto::Number(ICMPV6),
        other => match other.parse::<u16>() {
            Ok(n) if n <= 255 => Proto::Number(n as u8),
            _ => {
                let hint =
                    super::diag::did_you_mean(other, ["tcp", "udp", "icmp", "icmpv6", "any"])
                        .map(|h| format!("; did you mean `{h}`?"))
                        .unwrap_or_default();
                return Err(format!(
                    "`{s}` is not a protocol{hint} (expected tcp, udp, icmp, icmpv6, any, or an IP protocol number 0..255)"
                ));
            }
        },
    })
}

/// A destination port or an inclusive `"lo-hi"` range.
pub fn port_range(s: &str) -> Result<(u16, u16), String> {
    let one = |p: &str| -> Result<u16, String> {
        match p.trim().parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            Ok(n) => Err(format!("port `{n}` is out of range: ports are 1..65535")),
            Err(_) => Err(format!(
                "`{s}` is not a port: expected a number 1..65535 or a range like \"20000-20010\""
            )),
        }
    };
    match s.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (one(lo)?, one(hi)?);
            if lo > hi {
                return Err(format!(
                    "port range `{s}` is backwards: {lo} > {hi}; write \"{hi}-{lo}\""
                ));
            }
            Ok((lo, hi))
        }
        None => one(s).map(|p| (p, p)),
    }
}

const ICMP_NAMES: &[(&str, u8)] = &[
    ("echo-reply", 0),
    ("destination-unreachable", 3),
    ("source-quench", 4),
    ("redirect", 5),
    ("echo-request", 8),
    ("router-advertisement", 9),
    ("router-solicitation", 10),
    ("time-exceeded", 11),
    ("parameter-problem", 12),
    ("timestamp-request", 13),
    ("timestamp-reply", 14),
];
const ICMPV6_NAMES: &[(&str, u8)] = &[
    ("destination-unreachable", 1),
    ("packet-too-big", 2),
    ("time-exceeded", 3),
    ("parameter-problem", 4),
    ("echo-request", 128),
    ("echo-reply", 129),
    ("router-solicitation", 133),
    ("router-advertisement", 134),
    ("neighbor-solicitation", 135),
    ("neighbor-advertisement", 136),
    ("redirect", 137),
];

/// The name of an ICMP (`v6 == false`) or ICMPv6 type, where it has one (for reports).
pub fn icmp_type_name(t: u8, v6: bool) -> Option<&'static str> {
    let names = if v6 { ICMPV6_NAMES } else { ICMP_NAMES };
    names.iter().find(|(_, n)| *n == t).map(|(name, _)| *name)
}

/// An ICMP (`v6 == false`) or ICMPv6 type by name or number.
pub fn icmp_type(s: &str, v6: bool) -> Result<u8, String> {
    let table = if v6 { ICMPV6_NAMES } else { ICMP_NAMES };
    let s = s.trim();
    if let Some(&(_, n)) = table.iter().find(|(name, _)| *name == s) {
        return Ok(n);
    }
    match s.parse::<u16>() {
        Ok(n) if n <= 255 => Ok(n as u8),
        Ok(n) => Err(format!("ICMP type `{n}` is out of range: types are 0..255")),
        Err(_) => {
            let hint = super::diag::did_you_mean(s, table.iter().map(|(n, _)| *n))
                .map(|h| format!("did you mean `{h}`? "))
                .unwrap_or_default();
            Err(format!(
                "`{s}` is not an {} type; {hint}known names: {}",
                if v6 { "ICMPv6" } else { "ICMP" },
                table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ))
        }
    }
}

const ETHERTYPE_NAMES: &[(&str, u16)] = &[
    ("lldp", 0x88cc),
    ("ptp", 0x88f7),
    ("profinet", 0x8892),
    ("ethercat", 0x88a4),
    ("goose", 0x88b8),
    ("sv", 0x88ba),
    ("mrp", 0x88e3),
    ("lacp", 0x8809),
    ("macsec", 0x88e5),
    ("eapol", 0x888e),
    ("powerlink", 0x88ab),
    ("sercos", 0x88cd),
    ("hsr", 0x892f),
    ("prp", 0x88fb),
];

/// A number written in decimal or, with `0x`, in hex (how EtherTypes and CIP services are
/// usually written).
fn number(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse::<u32>().ok(),
    }
}

pub fn ethertype(s: &str) -> Result<u16, String> {
    let s = s.trim();
    let n = if let Some(&(_, n)) = ETHERTYPE_NAMES.iter().find(|(name, _)| *name == s) {
        n
    } else {
        match number(s) {
            Some(n) if (0x0600..=0xffff).contains(&n) => n as u16,
            Some(_) => {
                return Err(format!(
                    "EtherType `{s}` is out of range: EtherTypes are 0x0600..0xffff"
                ));
            }
            None => {
                return Err(format!(
                    "`{s}` is not an EtherType; use a number like 0x88f7 or a name: {}",
                    ETHERTYPE_NAMES
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    };
    match n {
        0x0800 | 0x86dd | 0x0806 | 0x8100 | 0x88a8 => Err(format!(
            "EtherType `{s}` is IPv4, IPv6, ARP or a VLAN tag, which conduits and the ARP rules govern; l2 lists other EtherTypes"
        )),
        n => Ok(n),
    }
}

/// A filter's code entry: one of the protocol's named sets (`sets`), or a number in `range`
/// (decimal, or hex with `0x`).
/// `what` names the codes in messages ("Modbus function code").
fn codes(
    s: &str,
    what: &str,
    sets: &[(&str, &[u8])],
    range: std::ops::RangeInclusive<u8>,
) -> Result<Vec<u8>, String> {
    let s = s.trim();
    if let Some(&(_, codes)) = sets.iter().find(|(name, _)| *name == s) {
        return Ok(codes.to_vec());
    }
    let names = || sets.iter().map(|(n, _)| *n);
    let (lo, hi) = (*range.start(), *range.end());
    match number(s) {
        Some(n) if (u32::from(lo)..=u32::from(hi)).contains(&n) => Ok(vec![n as u8]),
        Some(_) => Err(format!(
            "{what} code `{s}` is out of range: requests are {lo}..{hi}"
        )),
        None => {
            let hint = super::diag::did_you_mean(s, names())
                .map(|h| format!("did you mean `{h}`? "))
                .unwrap_or_default();
            Err(format!(
                "`{s}` is not a {what} set or code; {hint}use a code {lo}..{hi} or one of: {}",
                names().collect::<Vec<_>>().join(", ")
            ))
        }
    }
}

/// A filter's address entry: a number in `0..=max`. `what` names it in messages.
fn address(s: &str, what: &str, max: u16, note: &str) -> Result<u16, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if n <= u32::from(max) => Ok(n as u16),
        Ok(n) => Err(format!("{what} `{n}` is out of range: {note}")),
        Err(_) => Err(format!(
            "`{}` is not a {what}: use a number 0..{max}",
            s.trim()
        )),
    }
}

/// A Modbus function-code entry: a named set (`read`, `write`, `diagnostics`,
/// `programming`) or a code in 1..=127 (128..=255 are exception responses, 0 is invalid).
pub fn modbus_functions(s: &str) -> Result<Vec<u8>, String> {
    codes(
        s,
        "Modbus function",
        conduit_common::inspect::modbus::SETS,
        1..=127,
    )
}

/// A Modbus unit ID, 0..=255 (0 is the broadcast and TCP-gateway address, 255 the usual
/// "this device" value of Modbus/TCP servers).
pub fn modbus_unit(s: &str) -> Result<u8, String> {
    address(s, "Modbus unit ID", 255, "unit IDs are 0..255").map(|u| u as u8)
}

/// A DNP3 application function-code entry: a named set (`read`, `control`, `restart`, ...)
/// or a code in 0..=255 (requests are 0..=33; 129..=131 are the outstation's responses).
pub fn dnp3_functions(s: &str) -> Result<Vec<u8>, String> {
    codes(
        s,
        "DNP3 function",
        conduit_common::inspect::dnp3::SETS,
        0..=255,
    )
}

/// An EtherNet/IP service entry: a named set (`read`, `write`, `admin`, `connection`) or a
/// CIP service code 0..=127 (to any object but the Connection Manager, whose services only
/// the `connection` set names).
pub fn enip_services(s: &str) -> Result<Vec<u8>, String> {
    codes(
        s,
        "CIP service",
        conduit_common::inspect::enip::SETS,
        0..=127,
    )
}

/// A DNP3 outstation link address, 0..=65535 (0xFFFD..=0xFFFF are broadcast addresses, and
/// pass only where listed).
pub fn dnp3_outstation(s: &str) -> Result<u16, String> {
    address(
        s,
        "DNP3 outstation address",
        u16::MAX,
        "link addresses are 0..65535",
    )
}

/// An instant in RFC 3339 (`2026-12-02T18:00:00Z`, `2026-12-02T19:00:00+01:00`): seconds
/// since the Unix epoch (`expires`, `explain --at`). Only instants from 1970 to 2106 (what
/// the datapath's 32-bit seconds hold).
pub fn instant(s: &str) -> Result<u32, String> {
    let t: jiff::Timestamp = s.trim().parse().map_err(|e| {
        format!(
            "`{s}` is not an RFC 3339 time with a UTC offset, e.g. 2026-12-02T18:00:00Z or \
             2026-12-02T19:00:00+01:00 ({e})"
        )
    })?;
    u32::try_from(t.as_second())
        .map_err(|_| format!("`{s}` is out of range: expected an instant from 1970 to 2106"))
}

/// The longest on-demand access (`on_demand.max`, `conduit grant --for`): a maintenance
/// window or a vendor's session, not a standing path (a conduit without `on_demand` is that).
pub const MAX_GRANT_S: u32 = 31 * 24 * 3600;

/// A duration (`8h`, `1h30m`, `90m`, `2d`, `PT8H`): whole seconds, more than zero and at most
/// [`MAX_GRANT_S`] (`on_demand.max`, `conduit grant --for`).
pub fn duration(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let d: jiff::SignedDuration = t.parse().or_else(|e| {
        // Days, which the friendly format reads as a calendar unit: 24 hours here.
        t.parse::<jiff::Span>()
            .ok()
            .and_then(|sp| {
                sp.to_duration(jiff::SpanRelativeTo::days_are_24_hours())
                    .ok()
            })
            .ok_or_else(|| {
                format!("`{s}` is not a duration: write e.g. 2h, 1h30m, 90m, 2d or 45s ({e})")
            })
    })?;
    if d.subsec_nanos() != 0 {
        return Err(format!("`{s}` is not a whole number of seconds"));
    }
    match u32::try_from(d.as_secs()) {
        Ok(0) | Err(_) if d.as_secs() <= 0 => {
            Err(format!("`{s}` is not a duration longer than zero"))
        }
        Ok(n) if n <= MAX_GRANT_S => Ok(n),
        _ => Err(format!(
            "`{s}` is longer than on-demand access may last: at most 31 days (31d); \
             a standing path is a conduit without `on_demand`"
        )),
    }
}

/// A duration as people read it: `2h`, `1h 30m`, `45s`, `2d 3h`.
pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let parts: Vec<String> = [(d, "d"), (h, "h"), (m, "m"), (s, "s")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod duration_tests {
    use super::{duration, human_duration};

    #[test]
    fn durations_read_and_refuse() {
        assert_eq!(duration("8h"), Ok(8 * 3600));
        assert_eq!(duration("1h30m"), Ok(5400));
        assert_eq!(duration("1h 30m"), Ok(5400));
        assert_eq!(duration("90m"), Ok(5400));
        assert_eq!(duration("2d"), Ok(2 * 86_400));
        assert_eq!(duration("PT2H"), Ok(7200));
        assert_eq!(duration("45s"), Ok(45));
        assert_eq!(duration("31d"), Ok(31 * 86_400));
        for bad in ["", "0s", "-1h", "2 hours later", "1.5s", "32d", "h", "10"] {
            assert!(duration(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(human_duration(5400), "1h 30m");
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(90_061), "1d 1h 1m 1s");
    }
}
