//! Property tests of the policy compiler and of the verdict function (SPEC §1).
//!
//! Policies are generated as YAML TEXT from a random spec (zones with random `ip`/`cidr`
//! assets, IPv4 and IPv6, some MAC-bound; conduits with random `from`/`to`, `sources`,
//! `destinations`, `bidirectional`, rules with protocols, ports, port ranges and ICMP types)
//! and go through `validate_str` and `compile`, as a user's file would. The verdicts of
//! `decide` are then checked against an independent re-implementation of SPEC §1 written
//! here from the validated `Policy` model only (it shares no code with the compiler or the
//! datapath's lookups).
//!
//! 96 cases per property by default (a few seconds in a debug build); `PROPTEST_CASES=N`
//! for a longer hunt.
use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use conduit_agent::policy::validate::fmt_mac;
use conduit_agent::policy::{
    Pos,
    compile::{Compiled, compile},
    model::{Addr, Asset, Conduit, LogLevel, Mode, Policy, Proto, Rule, Zone},
    validate::validate_str,
};
use conduit_common::{
    FAMILY_V4, FAMILY_V6, IDENT_MAC_BOUND, IDENT_NO_CONDUIT, NO_CONDUIT, Reason, SKIP_FROM_UNKNOWN,
    Verdict, ZONE_UNKNOWN,
    verdict::{Decision, KIND_ARP, KIND_IP, KIND_OTHER, Packet, decide, resolve},
};
use proptest::{collection::vec, option, prelude::*};

// ------------------------------------------------------------------------------------------
// The spec of a policy, and its YAML text
// ------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct AssetSpec {
    name: String,
    /// Exactly one of `ip` and `cidr`.
    ip: Option<IpAddr>,
    cidr: Option<(IpAddr, u8)>,
    mac: Option<[u8; 6]>,
}

#[derive(Clone, Debug)]
struct ZoneSpec {
    name: String,
    security_level: u8,
    mode: Option<&'static str>,
    intra_zone: Option<&'static str>,
    assets: Vec<AssetSpec>,
}

#[derive(Clone, Debug)]
struct RuleSpec {
    proto: String,
    ports: Option<Vec<String>>,
    icmp_types: Option<Vec<String>>,
}

#[derive(Clone, Debug)]
struct ConduitSpec {
    name: String,
    from: Vec<String>,
    to: Vec<String>,
    sources: Option<Vec<String>>,
    destinations: Option<Vec<String>>,
    /// `bidirectional:` as written (`true`, `false`, `yes`, `no`), if present.
    bidirectional: Option<&'static str>,
    log: Option<&'static str>,
    rules: Vec<RuleSpec>,
}

#[derive(Clone, Debug)]
struct Spec {
    mode: &'static str,
    intra_zone: Option<&'static str>,
    log: Option<&'static str>,
    fragments: Option<&'static str>,
    /// `l2:` as written, if present.
    l2: Option<&'static str>,
    zones: Vec<ZoneSpec>,
    conduits: Vec<ConduitSpec>,
}

fn yaml_list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

impl ConduitSpec {
    fn yaml(&self, out: &mut String) {
        let side = |v: &[String]| {
            if v.len() == 1 {
                format!("\"{}\"", v[0])
            } else {
                yaml_list(&v.iter().map(|z| format!("\"{z}\"")).collect::<Vec<_>>())
            }
        };
        writeln!(out, "  - name: \"{}\"", self.name).unwrap();
        writeln!(out, "    from: {}", side(&self.from)).unwrap();
        writeln!(out, "    to: {}", side(&self.to)).unwrap();
        if let Some(s) = &self.sources {
            writeln!(out, "    sources: {}", yaml_list(s)).unwrap();
        }
        if let Some(s) = &self.destinations {
            writeln!(out, "    destinations: {}", yaml_list(s)).unwrap();
        }
        if let Some(b) = self.bidirectional {
            writeln!(out, "    bidirectional: {b}").unwrap();
        }
        if let Some(l) = self.log {
            writeln!(out, "    log: {l}").unwrap();
        }
        writeln!(out, "    rules:").unwrap();
        for r in &self.rules {
            write!(out, "      - {{ proto: {}", r.proto).unwrap();
            if let Some(p) = &r.ports {
                write!(out, ", ports: {}", yaml_list(p)).unwrap();
            }
            if let Some(t) = &r.icmp_types {
                write!(out, ", icmp_types: {}", yaml_list(t)).unwrap();
            }
            writeln!(out, " }}").unwrap();
        }
    }
}

impl Spec {
    fn yaml(&self) -> String {
        let mut out = String::new();
        out.push_str("version: 1\nsite: property-test\ndefaults:\n");
        writeln!(out, "  mode: {}", self.mode).unwrap();
        if let Some(i) = self.intra_zone {
            writeln!(out, "  intra_zone: {i}").unwrap();
        }
        if let Some(l) = self.log {
            writeln!(out, "  log: {l}").unwrap();
        }
        if let Some(f) = self.fragments {
            writeln!(out, "  fragments: {f}").unwrap();
        }
        if let Some(l2) = self.l2 {
            writeln!(out, "  l2: {l2}").unwrap();
        }
        out.push_str("zones:\n");
        for z in &self.zones {
            writeln!(out, "  - name: \"{}\"", z.name).unwrap();
            writeln!(out, "    security_level: {}", z.security_level).unwrap();
            if let Some(m) = z.mode {
                writeln!(out, "    mode: {m}").unwrap();
            }
            if let Some(i) = z.intra_zone {
                writeln!(out, "    intra_zone: {i}").unwrap();
            }
            if z.assets.is_empty() {
                continue;
            }
            out.push_str("    assets:\n");
            for a in &z.assets {
                write!(out, "      - {{ name: \"{}\"", a.name).unwrap();
                if let Some(ip) = a.ip {
                    write!(out, ", ip: \"{ip}\"").unwrap();
                }
                if let Some((net, len)) = a.cidr {
                    write!(out, ", cidr: \"{net}/{len}\"").unwrap();
                }
                if let Some(m) = &a.mac {
                    write!(out, ", mac: \"{}\"", fmt_mac(m)).unwrap();
                }
                out.push_str(" }\n");
            }
        }
        if self.conduits.is_empty() {
            out.push_str("conduits: []\n");
        } else {
            out.push_str("conduits:\n");
            for c in &self.conduits {
                c.yaml(&mut out);
            }
        }
        out
    }
}

// ------------------------------------------------------------------------------------------
// Generation: raw random values, turned into a valid spec
// ------------------------------------------------------------------------------------------

const ZONE_NAMES: &[&str] = &[
    "enterprise",
    "dmz",
    "supervisory",
    "control",
    "safety_sis",
    "z-6",
    "9lab",
];

#[derive(Clone, Debug)]
struct RawAsset {
    zone: u8,
    v6: bool,
    /// 0, 1: `ip`; 2: `cidr`.
    kind: u8,
    a: u8,
    b: u8,
    plen: u8,
    mac: bool,
}

#[derive(Clone, Debug)]
struct RawRule {
    proto: u8,
    ports: Option<Vec<(u8, u16, u16)>>,
    icmp: Option<Vec<(u8, u8)>>,
    /// Spell tcp/udp as their numbers.
    numeric: bool,
}

#[derive(Clone, Debug)]
struct RawConduit {
    from: Vec<u8>,
    to: Vec<u8>,
    sources: Option<Vec<u16>>,
    destinations: Option<Vec<u16>>,
    bidi: u8,
    log: u8,
    rules: Vec<RawRule>,
}

#[derive(Clone, Debug)]
struct RawPolicy {
    zones: usize,
    mode_monitor: bool,
    intra: u8,
    log: u8,
    /// `fragments` and `l2` of `defaults`.
    extras: (u8, u8),
    zone_opts: Vec<(u8, u8, u8)>,
    assets: Vec<RawAsset>,
    conduits: Vec<RawConduit>,
}

fn raw_asset() -> impl Strategy<Value = RawAsset> {
    (
        any::<u8>(),
        prop::bool::weighted(0.25),
        0..3u8,
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        prop::bool::weighted(0.4),
    )
        .prop_map(|(zone, v6, kind, a, b, plen, mac)| RawAsset {
            zone,
            v6,
            kind,
            a,
            b,
            plen,
            mac,
        })
}

fn raw_rule() -> impl Strategy<Value = RawRule> {
    (
        0..9u8,
        option::weighted(0.7, vec((0..4u8, any::<u16>(), any::<u16>()), 1..4)),
        option::weighted(0.6, vec((0..3u8, any::<u8>()), 1..4)),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(proto, ports, icmp, numeric)| RawRule {
            proto,
            ports,
            icmp,
            numeric,
        })
}

fn raw_conduit() -> impl Strategy<Value = RawConduit> {
    (
        vec(any::<u8>(), 1..3),
        vec(any::<u8>(), 1..3),
        option::weighted(0.3, vec(any::<u16>(), 1..3)),
        option::weighted(0.3, vec(any::<u16>(), 1..3)),
        0..8u8,
        0..6u8,
        vec(raw_rule(), 1..4),
    )
        .prop_map(
            |(from, to, sources, destinations, bidi, log, rules)| RawConduit {
                from,
                to,
                sources,
                destinations,
                bidi,
                log,
                rules,
            },
        )
}

fn raw_policy() -> impl Strategy<Value = RawPolicy> {
    (
        1..=ZONE_NAMES.len(),
        prop::bool::weighted(0.2),
        0..3u8,
        (0..4u8, (0..3u8, 0..4u8)),
        vec((any::<u8>(), any::<u8>(), 1..=4u8), ZONE_NAMES.len()),
        vec(raw_asset(), 0..20),
        vec(raw_conduit(), 0..8),
    )
        .prop_map(
            |(zones, mode_monitor, intra, (log, extras), zone_opts, assets, conduits)| RawPolicy {
                zones,
                mode_monitor,
                intra,
                log,
                extras,
                zone_opts,
                assets,
                conduits,
            },
        )
}

fn v4_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn v6_mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

fn asset_addr(r: &RawAsset) -> (Option<IpAddr>, Option<(IpAddr, u8)>) {
    let (a, b) = (r.a % 4, r.b % 16);
    if r.v6 {
        let base = u128::from(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, a.into(), b.into()));
        if r.kind < 2 {
            (Some(IpAddr::V6(base.into())), None)
        } else {
            let len = [48u8, 64, 112, 120, 126, 128][usize::from(r.plen % 6)];
            (None, Some((IpAddr::V6((base & v6_mask(len)).into()), len)))
        }
    } else {
        let base = u32::from(Ipv4Addr::new(10, 0, a, b));
        if r.kind < 2 {
            (Some(IpAddr::V4(base.into())), None)
        } else {
            let len = [8u8, 16, 24, 28, 30, 32, 0][usize::from(r.plen % 7)];
            (None, Some((IpAddr::V4((base & v4_mask(len)).into()), len)))
        }
    }
}

const TCP_PORTS: &[&str] = &["22", "80", "102", "443", "502", "44818", "1", "65535"];
const PORT_RANGES: &[&str] = &[
    "20000-20010",
    "1-1023",
    "1024-65535",
    "1-65535",
    "500-510",
    "65534-65535",
];
const ICMP_TYPES: &[&str] = &[
    "echo-request",
    "echo-reply",
    "destination-unreachable",
    "time-exceeded",
    "8",
    "0",
    "255",
];
const ICMPV6_TYPES: &[&str] = &[
    "echo-request",
    "echo-reply",
    "packet-too-big",
    "128",
    "1",
    "135",
    "0",
];

fn rule_spec(r: &RawRule) -> RuleSpec {
    // 0 any, 1 tcp, 2 udp, 3 icmp, 4 icmpv6, 5 gre (47), 6 sctp (132), 7 tcp, 8 udp
    let (proto, kind) = match r.proto {
        0 => ("any".to_owned(), "any"),
        1 | 7 => (if r.numeric { "6" } else { "tcp" }.to_owned(), "port"),
        2 | 8 => (if r.numeric { "17" } else { "udp" }.to_owned(), "port"),
        3 => ("icmp".to_owned(), "icmp"),
        4 => ("icmpv6".to_owned(), "icmpv6"),
        5 => ("47".to_owned(), "other"),
        _ => ("132".to_owned(), "other"),
    };
    let ports = match (kind, &r.ports) {
        ("port", Some(list)) => Some(
            list.iter()
                .map(|&(k, x, len)| match k {
                    0 => TCP_PORTS[usize::from(x) % TCP_PORTS.len()].to_owned(),
                    1 => format!("\"{}\"", PORT_RANGES[usize::from(x) % PORT_RANGES.len()]),
                    2 => x.max(1).to_string(),
                    _ => {
                        let lo = x.max(1);
                        let hi = lo.saturating_add(len % 300);
                        format!("\"{lo}-{hi}\"")
                    }
                })
                .collect(),
        ),
        _ => None,
    };
    let icmp_types = match (kind, &r.icmp) {
        ("icmp" | "icmpv6", Some(list)) => {
            let names = if kind == "icmp" {
                ICMP_TYPES
            } else {
                ICMPV6_TYPES
            };
            Some(
                list.iter()
                    .map(|&(k, x)| match k {
                        0 | 1 => names[usize::from(x) % names.len()].to_owned(),
                        _ => x.to_string(),
                    })
                    .collect(),
            )
        }
        _ => None,
    };
    RuleSpec {
        proto,
        ports,
        icmp_types,
    }
}

fn conduit_spec(name: String, r: &RawConduit, zones: &[ZoneSpec]) -> ConduitSpec {
    let zone_of = |x: &u8| {
        let i = usize::from(*x) % (zones.len() + 1);
        zones
            .get(i)
            .map_or("unknown".to_owned(), |z| z.name.clone())
    };
    let from: Vec<String> = r.from.iter().map(zone_of).collect();
    let to: Vec<String> = r.to.iter().map(zone_of).collect();
    let narrow = |sel: &Option<Vec<u16>>, side: &[String]| {
        let sel = sel.as_ref()?;
        let candidates: Vec<&str> = zones
            .iter()
            .filter(|z| side.contains(&z.name))
            .flat_map(|z| z.assets.iter().map(|a| a.name.as_str()))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(
            sel.iter()
                .map(|&i| format!("\"{}\"", candidates[usize::from(i) % candidates.len()]))
                .collect(),
        )
    };
    ConduitSpec {
        sources: narrow(&r.sources, &from),
        destinations: narrow(&r.destinations, &to),
        name,
        from,
        to,
        bidirectional: [None, None, None, Some("true"), Some("yes"), Some("false")]
            .get(usize::from(r.bidi))
            .copied()
            .flatten(),
        log: [None, None, None, Some("all"), Some("none"), Some("deny")][usize::from(r.log % 6)],
        rules: r.rules.iter().map(rule_spec).collect(),
    }
}

fn build(r: &RawPolicy) -> Spec {
    let mut zones: Vec<ZoneSpec> = ZONE_NAMES[..r.zones]
        .iter()
        .zip(&r.zone_opts)
        .map(|(name, &(m, i, sl))| ZoneSpec {
            name: (*name).to_owned(),
            security_level: sl,
            mode: [None, None, None, Some("monitor"), Some("enforce")]
                .get(usize::from(m % 8))
                .copied()
                .flatten(),
            intra_zone: [None, None, Some("deny"), Some("allow")][usize::from(i % 4)],
            assets: Vec::new(),
        })
        .collect();
    let mut ips = BTreeSet::new();
    let mut cidrs = BTreeSet::new();
    for (n, a) in r.assets.iter().enumerate() {
        let (ip, cidr) = asset_addr(a);
        let fresh = match (ip, cidr) {
            (Some(ip), _) => ips.insert(ip),
            (_, Some(c)) => cidrs.insert(c),
            _ => unreachable!(),
        };
        if !fresh {
            continue;
        }
        let z = usize::from(a.zone) % zones.len();
        zones[z].assets.push(AssetSpec {
            name: format!("a{n}"),
            ip,
            cidr,
            mac: (ip.is_some() && a.mac).then_some([0x02, 0, 0, 0, (n >> 8) as u8, n as u8]),
        });
    }
    let conduits = r
        .conduits
        .iter()
        .enumerate()
        .map(|(i, c)| conduit_spec(format!("c{i}"), c, &zones))
        .collect();
    Spec {
        mode: if r.mode_monitor { "monitor" } else { "enforce" },
        intra_zone: [None, Some("deny"), Some("allow")][usize::from(r.intra)],
        log: [None, Some("all"), Some("none"), Some("deny")][usize::from(r.log)],
        fragments: [None, Some("allow"), Some("deny")][usize::from(r.extras.0)],
        l2: [
            None,
            Some("{ default: allow }"),
            Some("{ default: deny, allow_ethertypes: [lldp, 0x88f7] }"),
            Some("{ allow_ethertypes: [\"34958\", ptp] }"),
        ][usize::from(r.extras.1)],
        zones,
        conduits,
    }
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    raw_policy().prop_map(|r| build(&r))
}

/// Validates and compiles `text`, failing the case (with the diagnostics) if it does not.
fn load(text: &str) -> Result<(Policy, Compiled), TestCaseError> {
    let (p, d) = validate_str(text);
    let Some(p) = p else {
        return Err(TestCaseError::fail(format!(
            "the generated policy does not validate:\n{d}\n{text}"
        )));
    };
    match compile(&p, 0) {
        Ok(c) => Ok((p, c)),
        Err(e) => Err(TestCaseError::fail(format!(
            "the generated policy does not compile: {e:?}\n{text}"
        ))),
    }
}

/// A deterministic permutation (xorshift64*, Fisher-Yates).
fn shuffle<T>(v: &mut [T], seed: &mut u64) {
    for i in (1..v.len()).rev() {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let j = (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % (i + 1);
        v.swap(i, j);
    }
}

// ------------------------------------------------------------------------------------------
// The independent model of SPEC §1
// ------------------------------------------------------------------------------------------

fn in_net(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => u32::from(i) & v4_mask(len) == u32::from(n),
        (IpAddr::V6(n), IpAddr::V6(i)) => u128::from(i) & v6_mask(len) == u128::from(n),
        _ => false,
    }
}

/// The asset (and its zone) an address belongs to: an exact `ip` beats every `cidr`; among
/// `cidr` assets the longest prefix wins. `None`: the zone `unknown`.
fn owner(p: &Policy, ip: IpAddr) -> Option<(&Zone, &Asset)> {
    let all = || {
        p.zones
            .iter()
            .flat_map(|z| z.assets.iter().map(move |a| (z, a)))
    };
    if let Some(x) = all().find(|(_, a)| a.addr == Addr::Ip(ip)) {
        return Some(x);
    }
    all()
        .filter_map(|(z, a)| match a.addr {
            Addr::Cidr(net, len) if in_net(net, len, ip) => Some((len, z, a)),
            _ => None,
        })
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, z, a)| (z, a))
}

type Owner<'a> = Option<(&'a Zone, &'a Asset)>;

fn zone_name<'a>(o: &Owner<'a>) -> &'a str {
    o.map_or("unknown", |(z, _)| z.name.as_str())
}

/// Whether `who` is one of the assets of `zones`, narrowed by `assets`.
fn side_has(zones: &[String], assets: &Option<Vec<String>>, who: &Owner) -> bool {
    zones.iter().any(|z| z == zone_name(who))
        && match assets {
            None => true,
            Some(list) => who.is_some_and(|(_, a)| list.contains(&a.name)),
        }
}

fn rule_matches(r: &Rule, proto: u8, dport: u16) -> bool {
    match r.proto {
        Proto::Any => true,
        Proto::Number(p) if p != proto => false,
        Proto::Number(_) => match (&r.ports, &r.icmp_types) {
            (Some(ranges), _) => ranges.iter().any(|&(lo, hi)| lo <= dport && dport <= hi),
            (None, Some(types)) => types.contains(&((dport >> 8) as u8)),
            (None, None) => true,
        },
    }
}

fn conduit_matches(c: &Conduit, src: &Owner, dst: &Owner, proto: u8, dport: u16) -> bool {
    let forward = side_has(&c.from, &c.sources, src) && side_has(&c.to, &c.destinations, dst);
    let backward = c.bidirectional.is_some()
        && side_has(&c.from, &c.sources, dst)
        && side_has(&c.to, &c.destinations, src);
    (forward || backward) && c.rules.iter().any(|r| rule_matches(r, proto, dport))
}

fn ip_bytes(ip: IpAddr) -> (u8, [u8; 16]) {
    let mut a = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            a[..4].copy_from_slice(&v4.octets());
            (FAMILY_V4, a)
        }
        IpAddr::V6(v6) => (FAMILY_V6, v6.octets()),
    }
}

/// What the model says about one packet.
struct Expect<'a> {
    src: Owner<'a>,
    dst: Owner<'a>,
    spoofed: bool,
    neighbor_discovery: bool,
    /// Conduits with a rule that matches, in file order.
    matching: Vec<&'a Conduit>,
    /// The verdict of a denial: monitor in the destination zone turns it into would-deny.
    deny: Verdict,
    intra_allow: Option<bool>,
}

fn expect<'a>(p: &'a Policy, pkt: &Packet, src_ip: IpAddr, dst_ip: IpAddr) -> Expect<'a> {
    let src = owner(p, src_ip);
    let dst = owner(p, dst_ip);
    let bound_elsewhere = p.zones.iter().flat_map(|z| &z.assets).any(|a| {
        a.mac == Some(pkt.src_mac)
            && matches!(a.addr, Addr::Ip(ip) if ip.is_ipv4() == src_ip.is_ipv4() && ip != src_ip)
    });
    let own_mac_differs = src.is_some_and(|(_, a)| {
        matches!(a.addr, Addr::Ip(_)) && a.mac.is_some_and(|m| m != pkt.src_mac)
    });
    let mode = match dst {
        Some((z, _)) => z.mode.map_or(p.defaults.mode, |(m, _)| m),
        None => p.defaults.mode,
    };
    let intra_allow = match (src, dst) {
        (Some((a, _)), Some((b, _))) if a.name == b.name => {
            Some(a.intra_zone_allow.unwrap_or(p.defaults.intra_zone_allow))
        }
        _ => None,
    };
    Expect {
        src,
        dst,
        spoofed: bound_elsewhere || own_mac_differs,
        // RFC 4861's own rules: hop limit 255, a destination no router forwards (fe80::/10,
        // ff02::/16). The generated packets never address the gateway itself.
        neighbor_discovery: pkt.proto == 58
            && (133..=137).contains(&(pkt.dport >> 8))
            && pkt.hop_limit == 255
            && matches!(dst_ip, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80
                || a.segments()[0] & 0xff0f == 0xff02),
        matching: p
            .conduits
            .iter()
            .filter(|c| conduit_matches(c, &src, &dst, pkt.proto, pkt.dport))
            .collect(),
        deny: if mode == Mode::Monitor {
            Verdict::WouldDeny
        } else {
            Verdict::Deny
        },
        intra_allow,
    }
}

// ------------------------------------------------------------------------------------------
// Packets biased towards the policy's addresses, protocols and ports
// ------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct RawPacket {
    v6: bool,
    src: (u8, u16, u32),
    dst: (u8, u16, u32),
    proto: (u8, u16),
    port: (u8, u16, u16),
    mac: (u8, u16),
    /// Aim at one conduit (its sides and rules) rather than at the whole policy.
    aim: (u8, u16),
    /// A non-first fragment.
    frag: bool,
}

fn raw_packet() -> impl Strategy<Value = RawPacket> {
    (
        prop::bool::weighted(0.3),
        (any::<u8>(), any::<u16>(), any::<u32>()),
        (any::<u8>(), any::<u16>(), any::<u32>()),
        (any::<u8>(), any::<u16>()),
        (any::<u8>(), any::<u16>(), any::<u16>()),
        (any::<u8>(), any::<u16>()),
        (any::<u8>(), any::<u16>()),
        prop::bool::weighted(0.08),
    )
        .prop_map(|(v6, src, dst, proto, port, mac, aim, frag)| RawPacket {
            v6,
            src,
            dst,
            proto,
            port,
            mac,
            aim,
            frag,
        })
}

/// One side of a conduit: its zones, narrowed by its assets.
type Side<'a> = (&'a [String], &'a Option<Vec<String>>);

fn pick_addr(p: &Policy, v6: bool, (kind, idx, rnd): (u8, u16, u32), side: Option<Side>) -> IpAddr {
    let assets: Vec<&Asset> = p
        .zones
        .iter()
        .flat_map(|z| z.assets.iter().map(move |a| (z, a)))
        .filter(|(z, a)| {
            side.is_none_or(|(zones, names)| {
                zones.contains(&z.name) && names.as_ref().is_none_or(|n| n.contains(&a.name))
            })
        })
        .map(|(_, a)| a)
        .filter(|a| match a.addr {
            Addr::Ip(ip) | Addr::Cidr(ip, _) => ip.is_ipv6() == v6,
        })
        .collect();
    let k = kind % 10;
    if k < 6 && !assets.is_empty() {
        let a = assets[usize::from(idx) % assets.len()];
        return match a.addr {
            Addr::Ip(ip) => ip,
            Addr::Cidr(IpAddr::V4(n), len) => {
                IpAddr::V4((u32::from(n) | (rnd & !v4_mask(len))).into())
            }
            Addr::Cidr(IpAddr::V6(n), len) => {
                IpAddr::V6((u128::from(n) | (u128::from(rnd) & !v6_mask(len))).into())
            }
        };
    }
    let (x, y) = (((rnd >> 8) % 5) as u16, (rnd % 20) as u16);
    match (k, v6) {
        (0..=8, false) => IpAddr::V4(Ipv4Addr::new(10, 0, x as u8, y as u8)),
        (0..=8, true) => IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, x, y)),
        (_, false) => IpAddr::V4(rnd.into()),
        (_, true) => IpAddr::V6(((0xfd00u128 << 112) | u128::from(rnd) << 16).into()),
    }
}

fn make_packet(p: &Policy, r: &RawPacket) -> (Packet, IpAddr, IpAddr) {
    let aimed = (r.aim.0 % 5 < 2 && !p.conduits.is_empty())
        .then(|| &p.conduits[usize::from(r.aim.1) % p.conduits.len()]);
    let (src_side, dst_side) = match aimed {
        Some(x) => {
            let fwd: Side = (&x.from, &x.sources);
            let rev: Side = (&x.to, &x.destinations);
            if x.bidirectional.is_some() && r.aim.0 & 0x80 != 0 {
                (Some(rev), Some(fwd))
            } else {
                (Some(fwd), Some(rev))
            }
        }
        None => (None, None),
    };
    let src_ip = pick_addr(p, r.v6, r.src, src_side);
    let dst_ip = pick_addr(p, r.v6, r.dst, dst_side);
    let rules: Vec<&Rule> = match aimed {
        Some(x) => x.rules.iter().collect(),
        None => p.conduits.iter().flat_map(|c| &c.rules).collect(),
    };

    let mut protos: Vec<u8> = rules
        .iter()
        .filter_map(|r| match r.proto {
            Proto::Number(n) => Some(n),
            Proto::Any => None,
        })
        .collect();
    if aimed.is_none() || protos.is_empty() {
        protos.extend([6, 17, if r.v6 { 58 } else { 1 }]);
    }
    protos.sort_unstable();
    protos.dedup();
    let proto = if r.proto.0 % 8 == 7 {
        r.proto.1 as u8
    } else {
        protos[usize::from(r.proto.1) % protos.len()]
    };

    let (k, idx, rnd) = r.port;
    let dport = if proto == 1 || proto == 58 {
        let types: Vec<u8> = rules
            .iter()
            .filter(|x| x.proto == Proto::Number(proto))
            .flat_map(|x| x.icmp_types.iter().flatten().copied())
            .collect();
        let ty = if k % 4 == 3 || types.is_empty() {
            rnd as u8
        } else {
            types[usize::from(idx) % types.len()]
        };
        (u16::from(ty) << 8) | ((rnd >> 8) % 4)
    } else {
        let points: Vec<u16> = rules
            .iter()
            .flat_map(|x| x.ports.iter().flatten())
            .flat_map(|&(lo, hi)| {
                [
                    lo,
                    hi,
                    lo.wrapping_sub(1),
                    hi.wrapping_add(1),
                    lo + (hi - lo) / 2,
                ]
            })
            .collect();
        if k % 4 == 3 || points.is_empty() {
            rnd
        } else {
            points[usize::from(idx) % points.len()]
        }
    };

    // Mostly the right MAC for a bound source; sometimes another asset's (spoofing).
    let macs: Vec<[u8; 6]> = p
        .zones
        .iter()
        .flat_map(|z| &z.assets)
        .filter_map(|a| a.mac)
        .collect();
    let unbound = [0x02, 0xee, 0, 0, 0, 1];
    let own = owner(p, src_ip).and_then(|(_, a)| a.mac);
    let (mk, mi) = r.mac;
    let src_mac = match (own, mk % 8) {
        (Some(m), 0..=5) => m,
        (None, 0..=5) => unbound,
        (_, 6) if !macs.is_empty() => macs[usize::from(mi) % macs.len()],
        _ => unbound,
    };

    let (family, src) = ip_bytes(src_ip);
    let (_, dst) = ip_bytes(dst_ip);
    let pkt = Packet {
        kind: KIND_IP,
        family,
        ethertype: if r.v6 { 0x86dd } else { 0x0800 },
        src_mac,
        arp_sha: [0; 6],
        src,
        dst,
        proto,
        fragment: u8::from(r.frag),
        sport: 40000,
        dport,
        hop_limit: if r.dst.2.is_multiple_of(2) { 255 } else { 64 },
        ..Default::default()
    };
    (pkt, src_ip, dst_ip)
}

/// The verdict on the first packet of a flow (the compiled tables hold no flows).
fn judge(c: &Compiled, pkt: &Packet) -> Decision {
    decide(c, c.slot, pkt, 0)
}

fn log_of(p: &Policy, c: &Conduit) -> bool {
    c.log.unwrap_or(p.defaults.log) == LogLevel::All
}

fn arb_case() -> impl Strategy<Value = (Spec, Vec<RawPacket>)> {
    (arb_spec(), vec(raw_packet(), 1..48))
}

/// `shadowed` carries rule positions, which an edit elsewhere in the file moves.
fn without_positions(mut c: Compiled) -> Compiled {
    for s in &mut c.shadowed {
        s.1 = Pos::default();
    }
    c
}

// ------------------------------------------------------------------------------------------
// The properties
// ------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(conduit_tests::proptest_config())]

    /// 1. Compiling is deterministic, and the order of zones and of their assets is
    /// irrelevant: same IDs, same principals, same map contents.
    #[test]
    fn p1_compile_is_deterministic_and_zone_order_free(spec in arb_spec(), seed in any::<u64>()) {
        let text = spec.yaml();
        let (p, c1) = load(&text)?;
        let c2 = compile(&p, 0).unwrap();
        prop_assert_eq!(&c1, &c2);
        let (_, c3) = load(&text)?;
        prop_assert_eq!(&c1, &c3);

        let mut shuffled = spec.clone();
        let mut s = seed | 1;
        shuffle(&mut shuffled.zones, &mut s);
        for z in &mut shuffled.zones {
            shuffle(&mut z.assets, &mut s);
        }
        let (_, c4) = load(&shuffled.yaml())?;
        prop_assert_eq!(&c1.zone_ids, &c4.zone_ids);
        prop_assert_eq!(&c1.conduit_ids, &c4.conduit_ids);
        prop_assert_eq!(&c1.asset_principals, &c4.asset_principals);
        // Stronger: every map is the same, whatever the order of the zones.
        prop_assert_eq!(without_positions(c1), without_positions(c4));
    }

    /// 2. Adding a conduit (anywhere in the list) keeps every zone ID, conduit ID and asset
    /// principal that existed; removing one keeps every one that remains.
    #[test]
    fn p2_ids_are_stable_across_edits(
        raw in raw_policy(),
        extra in raw_conduit(),
        at in any::<u16>(),
        drop in any::<u16>(),
    ) {
        let spec = build(&raw);
        let (_, base) = load(&spec.yaml())?;

        let mut added = spec.clone();
        let new = conduit_spec("added-conduit".into(), &extra, &spec.zones);
        let at = usize::from(at) % (added.conduits.len() + 1);
        added.conduits.insert(at, new);
        let (_, bigger) = load(&added.yaml())?;
        let (smaller, larger) = (&base, &bigger);
        prop_assert_eq!(&smaller.zone_ids, &larger.zone_ids);
        for (k, v) in &smaller.conduit_ids {
            prop_assert_eq!(Some(v), larger.conduit_ids.get(k), "conduit {} moved", k);
        }
        for (k, v) in &smaller.asset_principals {
            prop_assert_eq!(Some(v), larger.asset_principals.get(k), "asset {} moved", k);
        }
        prop_assert!(larger.conduit_ids.contains_key("added-conduit"));

        if !spec.conduits.is_empty() {
            let mut removed = spec.clone();
            let gone = removed.conduits.remove(usize::from(drop) % spec.conduits.len());
            let (_, fewer) = load(&removed.yaml())?;
            prop_assert_eq!(&fewer.zone_ids, &base.zone_ids);
            prop_assert!(!fewer.conduit_ids.contains_key(&gone.name));
            for (k, v) in &fewer.conduit_ids {
                prop_assert_eq!(Some(v), base.conduit_ids.get(k), "conduit {} moved", k);
            }
            for (k, v) in &fewer.asset_principals {
                prop_assert_eq!(Some(v), base.asset_principals.get(k), "asset {} moved", k);
            }
        }
    }

    /// 2b. Adding an (empty) zone keeps every other ID.
    #[test]
    fn p2b_adding_a_zone_keeps_ids(spec in arb_spec()) {
        let (_, base) = load(&spec.yaml())?;
        let mut more = spec.clone();
        more.zones.push(ZoneSpec {
            name: "added-zone".into(),
            security_level: 1,
            mode: None,
            intra_zone: None,
            assets: Vec::new(),
        });
        let (_, c) = load(&more.yaml())?;
        for (k, v) in &base.zone_ids {
            prop_assert_eq!(Some(v), c.zone_ids.get(k), "zone {} moved", k);
        }
        prop_assert_eq!(&base.conduit_ids, &c.conduit_ids);
        prop_assert_eq!(&base.asset_principals, &c.asset_principals);
    }

    /// 3a. Soundness: an Allow with reason `conduit` names a conduit with a rule that matches
    /// the packet; and where no conduit matches and the two ends are in different zones,
    /// nothing is allowed by a conduit.
    #[test]
    fn p3a_allowed_by_a_matching_conduit((spec, pkts) in arb_case()) {
        let text = spec.yaml();
        let (p, c) = load(&text)?;
        for r in &pkts {
            let (pkt, s, d) = make_packet(&p, r);
            let e = expect(&p, &pkt, s, d);
            let got = judge(&c, &pkt);
            let names: Vec<&str> = e.matching.iter().map(|x| x.name.as_str()).collect();
            if got.reason == Reason::Conduit {
                prop_assert_eq!(got.verdict, Verdict::Allow);
                let name = c.conduit_name(got.conduit);
                prop_assert!(
                    name.is_some_and(|n| names.contains(&n)),
                    "{s} -> {d} proto {} dport {}: allowed by {:?}, but the matching conduits \
                     are {:?}\n{}", pkt.proto, pkt.dport, name, names, text
                );
                let x = p.conduits.iter().find(|x| Some(x.name.as_str()) == name).unwrap();
                prop_assert_eq!(got.log, log_of(&p, x), "log of conduit {}", x.name);
            } else {
                prop_assert_eq!(got.conduit, NO_CONDUIT);
            }
            if e.matching.is_empty() && zone_name(&e.src) != zone_name(&e.dst) {
                prop_assert!(
                    !(got.verdict == Verdict::Allow && got.reason == Reason::Conduit),
                    "{s} -> {d} proto {} dport {}: no conduit matches, yet {:?}\n{}",
                    pkt.proto, pkt.dport, got, text
                );
            }
        }
    }

    /// 3b. Completeness: a packet that some conduit matches (and that is not spoofed) is
    /// allowed by a conduit.
    #[test]
    fn p3b_a_matching_conduit_allows((spec, pkts) in arb_case()) {
        let text = spec.yaml();
        let (p, c) = load(&text)?;
        for r in &pkts {
            let (pkt, s, d) = make_packet(&p, r);
            let e = expect(&p, &pkt, s, d);
            if e.spoofed || pkt.fragment != 0 || e.neighbor_discovery || e.matching.is_empty() {
                continue;
            }
            let got = judge(&c, &pkt);
            let names: Vec<&str> = e.matching.iter().map(|x| x.name.as_str()).collect();
            prop_assert!(
                got.verdict == Verdict::Allow && got.reason == Reason::Conduit,
                "{s} -> {d} proto {} dport {}: conduits {:?} match, yet {:?}\n{}",
                pkt.proto, pkt.dport, names, got, text
            );
        }
    }

    /// 3c. Everything else of the verdict: spoofing, neighbour discovery, intra-zone
    /// traffic, `no_conduit`, and the mode (monitor turns a deny into would-deny).
    #[test]
    fn p3c_other_verdicts((spec, pkts) in arb_case()) {
        let text = spec.yaml();
        let (p, c) = load(&text)?;
        for r in &pkts {
            let (pkt, s, d) = make_packet(&p, r);
            let e = expect(&p, &pkt, s, d);
            let got = judge(&c, &pkt);
            let ctx = || format!("{s} -> {d} proto {} dport {} mac {}: {got:?}\n{text}",
                pkt.proto, pkt.dport, fmt_mac(&pkt.src_mac));
            let want = if e.spoofed {
                (e.deny, Reason::Spoofed)
            } else if pkt.fragment != 0 {
                let v = if p.defaults.fragments_allow { Verdict::Allow } else { e.deny };
                (v, Reason::Fragment)
            } else if e.neighbor_discovery {
                (Verdict::Allow, Reason::NeighborDiscovery)
            } else if !e.matching.is_empty() {
                (Verdict::Allow, Reason::Conduit)
            } else if e.intra_allow == Some(true) {
                (Verdict::Allow, Reason::IntraZone)
            } else {
                (e.deny, Reason::NoConduit)
            };
            prop_assert_eq!((got.verdict, got.reason), want, "{}", ctx());
            if got.verdict != Verdict::Allow {
                prop_assert_eq!(got.log, p.defaults.log != LogLevel::None, "{}", ctx());
            }
        }
    }

    /// 4. Resolution: the zones of `decide` are those of an exact `ip` asset, else of the
    /// longest `cidr`, else `unknown`; and `resolve` gives the asset's principal and binding.
    #[test]
    fn p4_resolution((spec, pkts) in arb_case()) {
        let text = spec.yaml();
        let (p, c) = load(&text)?;
        let zid = |o: &Owner| o.map_or(ZONE_UNKNOWN, |(z, _)| c.zone_ids[&z.name]);
        for r in &pkts {
            let (pkt, s, d) = make_packet(&p, r);
            let e = expect(&p, &pkt, s, d);
            let got = judge(&c, &pkt);
            prop_assert_eq!(got.src_zone, zid(&e.src), "zone of {}\n{}", s, text);
            prop_assert_eq!(got.dst_zone, zid(&e.dst), "zone of {}\n{}", d, text);
            prop_assert_eq!(c.zone_name(got.src_zone), zone_name(&e.src));
            for (ip, o) in [(s, &e.src), (d, &e.dst)] {
                let (family, bytes) = ip_bytes(ip);
                let id = resolve(&c, c.slot, family, &bytes);
                prop_assert_eq!(id.zone, zid(o), "zone of {}", ip);
                let principal = o
                    .and_then(|(_, a)| c.asset_principals.get(&a.name).copied())
                    .unwrap_or(0);
                prop_assert_eq!(id.principal, principal, "principal of {}", ip);
                let mac = o.and_then(|(_, a)| a.mac);
                prop_assert_eq!(id.flags & IDENT_MAC_BOUND != 0, mac.is_some(), "binding of {}", ip);
                if let Some(m) = mac {
                    prop_assert_eq!(id.mac, m);
                }
            }
        }
    }

    /// 4b. Resolution of arbitrary addresses (mostly outside the policy's assets), in both
    /// families, including addresses just outside each CIDR.
    #[test]
    fn p4b_resolution_of_any_address(
        spec in arb_spec(),
        addrs in vec((any::<bool>(), any::<u128>(), 0..4u8), 1..64),
    ) {
        let (p, c) = load(&spec.yaml())?;
        let nets: Vec<(IpAddr, u8)> = p
            .zones
            .iter()
            .flat_map(|z| &z.assets)
            .map(|a| match a.addr {
                Addr::Ip(ip) => (ip, if ip.is_ipv4() { 32 } else { 128 }),
                Addr::Cidr(n, l) => (n, l),
            })
            .collect();
        for (v6, x, how) in addrs {
            let ip = match (v6, how, nets.is_empty()) {
                // Just below / just above an asset's network.
                (_, 0 | 1, false) => {
                    let (n, l) = nets[(x % nets.len() as u128) as usize];
                    match n {
                        IpAddr::V4(n) => {
                            let size = 1u64 << (32 - u32::from(l));
                            let v = if how == 0 {
                                u64::from(u32::from(n)).wrapping_sub(1)
                            } else {
                                u64::from(u32::from(n)) + size
                            };
                            IpAddr::V4((v as u32).into())
                        }
                        IpAddr::V6(n) => {
                            let v = if how == 0 {
                                u128::from(n).wrapping_sub(1)
                            } else {
                                u128::from(n).wrapping_add(!v6_mask(l)).wrapping_add(1)
                            };
                            IpAddr::V6(v.into())
                        }
                    }
                }
                (false, _, _) => IpAddr::V4(Ipv4Addr::new(10, 0, (x >> 8) as u8 % 6, x as u8)),
                (true, _, _) => IpAddr::V6(((0xfd00u128 << 112) | (x & 0xf_ffff)).into()),
            };
            let (family, bytes) = ip_bytes(ip);
            let o = owner(&p, ip);
            let want = o.map_or(ZONE_UNKNOWN, |(z, _)| c.zone_ids[&z.name]);
            let pkt = Packet {
                kind: KIND_IP,
                family,
                src: bytes,
                dst: bytes,
                proto: 6,
                dport: 1,
                src_mac: o.and_then(|(_, a)| a.mac).unwrap_or([0x02, 0xee, 0, 0, 0, 1]),
                ..Default::default()
            };
            let got = judge(&c, &pkt);
            prop_assert_eq!(got.src_zone, want, "zone of {}", ip);
            prop_assert_eq!(got.dst_zone, want, "zone of {}", ip);
        }
    }
}

/// The verdict mode of traffic into the zone of `dst` (else `defaults.mode`).
fn deny_verdict(p: &Policy, dst: &Owner) -> Verdict {
    let mode = match dst {
        Some((z, _)) => z.mode.map_or(p.defaults.mode, |(m, _)| m),
        None => p.defaults.mode,
    };
    if mode == Mode::Monitor {
        Verdict::WouldDeny
    } else {
        Verdict::Deny
    }
}

proptest! {
    #![proptest_config(conduit_tests::proptest_config())]

    /// 5. ARP (SPEC §1 "Identity"): a frame whose sender IP is a bound asset's IP but whose
    /// sender MAC (ARP body or Ethernet header) differs is `arp_spoof`, and so is a bound MAC
    /// claiming another IPv4 address (README); other ARP passes.
    #[test]
    fn p5_arp(spec in arb_spec(), frames in vec((any::<(u8, u16, u32)>(), any::<(u8, u16, u32)>(), any::<(u8, u8, u16)>()), 1..32)) {
        let text = spec.yaml();
        let (p, c) = load(&text)?;
        let macs: Vec<[u8; 6]> = p.zones.iter().flat_map(|z| &z.assets).filter_map(|a| a.mac).collect();
        let unbound = [0x02, 0xee, 0, 0, 0, 1];
        for (s, d, (k1, k2, i)) in frames {
            let sender = pick_addr(&p, false, s, None);
            let target = pick_addr(&p, false, d, None);
            let own = owner(&p, sender).and_then(|(_, a)| a.mac);
            let pick = |k: u8| match (own, k % 4) {
                (Some(m), 0..=2) => m,
                (_, 3) if !macs.is_empty() => macs[usize::from(i) % macs.len()],
                _ => unbound,
            };
            let (sha, eth) = (pick(k1), pick(k2));
            let (family, src) = ip_bytes(sender);
            let (_, dst) = ip_bytes(target);
            let pkt = Packet {
                kind: KIND_ARP,
                family,
                ethertype: 0x0806,
                src_mac: eth,
                arp_sha: sha,
                src,
                dst,
                ..Default::default()
            };
            let got = judge(&c, &pkt);
            // A bound MAC that claims another IPv4 address (not a probe from 0.0.0.0).
            let claims_other = |m: [u8; 6]| {
                !sender.is_unspecified()
                    && p.zones.iter().flat_map(|z| &z.assets).any(|a| {
                        a.mac == Some(m)
                            && matches!(a.addr, Addr::Ip(ip) if ip.is_ipv4() && ip != sender)
                    })
            };
            let spoof = own.is_some_and(|m| m != sha || m != eth)
                || claims_other(sha)
                || claims_other(eth);
            let want = if spoof {
                (deny_verdict(&p, &owner(&p, target)), Reason::ArpSpoof)
            } else {
                (Verdict::Allow, Reason::Arp)
            };
            prop_assert_eq!((got.verdict, got.reason), want,
                "ARP {} is-at {} (eth {}) for {}: {:?}\n{}",
                sender, fmt_mac(&sha), fmt_mac(&eth), target, got, text);
        }
    }

    /// 5b. Frames that are neither IP nor ARP follow `defaults.l2`.
    #[test]
    fn p5b_l2(spec in arb_spec(), types in vec((0..5u8, 0x0600..=0xffffu16), 1..16)) {
        let text = spec.yaml();
        let (p, c) = load(&text)?;
        for (k, rnd) in types {
            let ethertype = [0x88cc, 0x88f7, 0x888e, 0x8892, rnd][usize::from(k)];
            let pkt = Packet { kind: KIND_OTHER, ethertype, ..Default::default() };
            let got = judge(&c, &pkt);
            let allow = p.defaults.l2_default_allow || p.defaults.l2_ethertypes.contains(&ethertype);
            let want = if allow {
                (Verdict::Allow, Reason::L2Allowed)
            } else {
                (deny_verdict(&p, &None), Reason::L2Denied)
            };
            prop_assert_eq!((got.verdict, got.reason), want, "EtherType {:#06x}\n{}", ethertype, text);
        }
    }

    /// 6. The slot changes nothing but the slot: a policy compiled for slot 1 judges as the
    /// same policy compiled for slot 0; and a slot without a policy fails closed.
    #[test]
    fn p6_slots((spec, pkts) in arb_case()) {
        let text = spec.yaml();
        let (p, c0) = load(&text)?;
        let c1 = compile(&p, 1).unwrap();
        prop_assert_eq!(&c0.zone_ids, &c1.zone_ids);
        prop_assert_eq!(&c0.conduit_ids, &c1.conduit_ids);
        prop_assert_eq!(c0.conduits.len(), c1.conduits.len());
        for r in &pkts {
            let (pkt, _, _) = make_packet(&p, r);
            prop_assert_eq!(decide(&c0, 0, &pkt, 0), decide(&c1, 1, &pkt, 0));
            let empty = decide(&c0, 1, &pkt, 0);
            prop_assert!(
                empty.verdict == Verdict::Deny || empty.reason == Reason::NeighborDiscovery,
                "slot 1 holds no policy, yet {:?}", empty
            );
        }
    }

    /// 6b. The compiler's "no conduit leaves this source" marks (`IDENT_NO_CONDUIT`,
    /// `SKIP_FROM_UNKNOWN`), which spare a scan or a flood the conduit lookups, change no
    /// verdict: the same policy with every mark cleared judges every packet alike. And the
    /// marks are used: a source marked is one that no conduit entry starts from.
    #[test]
    fn p6b_no_conduit_marks_change_nothing((spec, pkts) in arb_case()) {
        let text = spec.yaml();
        let (p, c) = load(&text)?;
        let mut plain = c.clone();
        plain.id_exact.values_mut().for_each(|i| i.flags &= !IDENT_NO_CONDUIT);
        plain.id_cidr.values_mut().for_each(|i| i.flags &= !IDENT_NO_CONDUIT);
        plain.settings.skip &= !SKIP_FROM_UNKNOWN;
        let sources: std::collections::BTreeSet<u32> = c
            .conduits
            .keys()
            .map(|(_, d)| u32::from_be_bytes([d[1], d[2], d[3], d[4]]))
            .collect();
        for id in c.id_exact.values().chain(c.id_cidr.values()) {
            let starts = sources.contains(&id.zone) || (id.principal != 0 && sources.contains(&id.principal));
            prop_assert_eq!(id.flags & IDENT_NO_CONDUIT != 0, !starts, "{:?}", id);
        }
        prop_assert_eq!(c.settings.skip & SKIP_FROM_UNKNOWN != 0, !sources.contains(&ZONE_UNKNOWN));
        for r in &pkts {
            let (pkt, _, _) = make_packet(&p, r);
            prop_assert_eq!(decide(&c, c.slot, &pkt, 0), decide(&plain, plain.slot, &pkt, 0), "{}", text);
        }
    }

    /// 7. SPEC §1: "a frame [...] whose source MAC is the asset's MAC but whose source IP
    /// differs is denied with reason `spoofed`", within the family of the bound address: the
    /// README documents that a MAC bound by its IPv4 address may send IPv6 (a dual-stack
    /// device's link-local addresses, neighbour discovery), and the reverse. So a frame of the
    /// other family from a bound MAC is `spoofed` exactly when its source address is itself
    /// bound to another MAC.
    #[test]
    fn p7_bound_mac_from_another_family(spec in arb_spec(), pkts in vec(raw_packet(), 1..16)) {
        let text = spec.yaml();
        let (p, c) = load(&text)?;
        let bound: Vec<(IpAddr, [u8; 6])> = p.zones.iter().flat_map(|z| &z.assets)
            .filter_map(|a| match (a.addr, a.mac) { (Addr::Ip(ip), Some(m)) => Some((ip, m)), _ => None })
            .collect();
        prop_assume!(!bound.is_empty());
        for (n, r) in pkts.iter().enumerate() {
            let (ip, mac) = bound[n % bound.len()];
            // A frame of the other family, from that MAC.
            let mut r = r.clone();
            r.v6 = ip.is_ipv4();
            r.frag = false;
            let (mut pkt, s, d) = make_packet(&p, &r);
            pkt.src_mac = mac;
            let got = judge(&c, &pkt);
            let other_binding = bound.iter().any(|&(b, m)| b == s && m != mac);
            prop_assert_eq!(got.reason == Reason::Spoofed, other_binding,
                "{} -> {} from MAC {} (bound to {}): {:?}\n{}", s, d, fmt_mac(&mac), ip, got, text);
        }
    }
}

/// The example of SPEC §1, as a fixed point for the model itself.
#[test]
fn spec_example_by_the_model() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/minimal.yaml"
    ))
    .unwrap();
    let (p, c) = load(&text).unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let pkt = |src: &str, dst: &str, proto: u8, dport: u16, mac: [u8; 6]| {
        let (family, s) = ip_bytes(ip(src));
        let (_, d) = ip_bytes(ip(dst));
        Packet {
            kind: KIND_IP,
            family,
            src: s,
            dst: d,
            proto,
            dport,
            src_mac: mac,
            ..Default::default()
        }
    };
    let m = [0x02, 0xee, 0, 0, 0, 1];
    for (src, dst, proto, dport, allowed) in [
        ("192.168.10.5", "192.168.20.10", 6, 502, true),
        ("192.168.10.5", "192.168.20.10", 6, 80, false),
        ("192.168.20.11", "192.168.10.5", 6, 502, false),
        ("192.168.10.5", "192.168.20.11", 1, 8 << 8, true),
    ] {
        let p2 = pkt(src, dst, proto, dport, m);
        let e = expect(&p, &p2, ip(src), ip(dst));
        assert_eq!(
            !e.matching.is_empty(),
            allowed,
            "{src} -> {dst} {proto}/{dport}"
        );
        let got = judge(&c, &p2);
        assert_eq!(got.verdict == Verdict::Allow, allowed, "{got:?}");
    }
}
