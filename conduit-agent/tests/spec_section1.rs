//! SPEC §1, "The policy file", sentence by sentence: for every sentence at least one case that
//! behaves as the sentence says and one that does not pass (an error, a denial). Verdicts come
//! from `conduit_common::verdict::decide` on the compiled policy, the function the XDP program
//! runs; diagnostics from `load_bytes`, what `conduit check` prints.
//!
//! Policies are written inline. `y()` strips the common indentation so that line 1 of the
//! policy is the first line of the literal, and error lines are located with `line_of()` on a
//! fragment that occurs on exactly one line.
use std::{net::IpAddr, path::PathBuf, process::Command};

use conduit_agent::policy::{
    Diagnostic,
    load::{Loaded, load_bytes},
    validate::validate_str,
};
use conduit_common::{
    FAMILY_V4, FAMILY_V6, Reason, SKIP_FAILSAFE, SKIP_MACS, Verdict,
    parse::TCP_SYN,
    verdict::{
        KIND_ARP, KIND_IP, KIND_OTHER, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet,
        decide,
    },
};

// ---------------------------------------------------------------------------------------------
// Helpers

/// The text without its first newline and without the indentation common to its lines.
fn y(s: &str) -> String {
    let s = s.strip_prefix('\n').unwrap_or(s);
    let indent = s
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    for l in s.lines() {
        out.push_str(l.get(indent..).unwrap_or("").trim_end());
        out.push('\n');
    }
    out
}

/// The 1-based line of the only line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    let hits: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "test bug: {needle:?} must be on exactly one line of:\n{text}"
    );
    hits[0]
}

fn load(text: &str) -> Loaded {
    let (l, d) = load_bytes(text.as_bytes(), 0);
    match l {
        Some(l) => {
            assert!(!d.has_errors());
            l
        }
        None => panic!("the policy should be valid, got:\n{d}\n--- policy:\n{text}"),
    }
}

/// Every error of an invalid policy (and checks that nothing was loaded).
fn errors_of(text: &str) -> Vec<Diagnostic> {
    let (l, d) = load_bytes(text.as_bytes(), 0);
    assert!(
        l.is_none(),
        "the policy should be invalid, but it loaded:\n{text}"
    );
    let errs: Vec<Diagnostic> = d.errors().cloned().collect();
    assert!(!errs.is_empty(), "no error but nothing loaded:\n{d}");
    errs
}

/// The policy is invalid with exactly one error, on the line containing `needle`, whose message
/// contains `fragment`.
fn one_error(text: &str, needle: &str, fragment: &str) -> Diagnostic {
    let errs = errors_of(text);
    assert_eq!(errs.len(), 1, "expected exactly one error, got {errs:#?}");
    let e = errs[0].clone();
    assert_eq!(
        e.pos.line,
        line_of(text, needle),
        "error on the wrong line: {e:?}\n{text}"
    );
    assert!(
        e.message.contains(fragment),
        "message {:?} lacks {fragment:?}",
        e.message
    );
    e
}

/// Warnings of a valid policy.
fn warnings_of(text: &str) -> Vec<Diagnostic> {
    let (l, d) = load_bytes(text.as_bytes(), 0);
    assert!(l.is_some(), "the policy should be valid, got:\n{d}\n{text}");
    d.warnings().cloned().collect()
}

fn mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (o, p) in m.iter_mut().zip(s.split(':')) {
        *o = u8::from_str_radix(p, 16).unwrap();
    }
    m
}

fn addr(s: &str) -> (u8, [u8; 16]) {
    let mut a = [0u8; 16];
    match s.parse::<IpAddr>().unwrap() {
        IpAddr::V4(v) => {
            a[..4].copy_from_slice(&v.octets());
            (FAMILY_V4, a)
        }
        IpAddr::V6(v) => (FAMILY_V6, v.octets()),
    }
}

/// An IP packet, the first of a new flow, with no source MAC (see `judge`).
fn packet(src: &str, dst: &str, proto: u8, dport: u16) -> Packet {
    let (family, s) = addr(src);
    let (f2, d) = addr(dst);
    assert_eq!(family, f2, "test bug: mixed families");
    Packet {
        kind: KIND_IP,
        family,
        ethertype: if family == FAMILY_V4 { 0x0800 } else { 0x86dd },
        src: s,
        dst: d,
        proto,
        sport: 40000,
        dport,
        // The first packet of a connection.
        tcp_flags: if proto == PROTO_TCP { TCP_SYN } else { 0 },
        hop_limit: 64,
        ..Packet::default()
    }
}

fn tcp(src: &str, dst: &str, port: u16) -> Packet {
    packet(src, dst, PROTO_TCP, port)
}
fn udp(src: &str, dst: &str, port: u16) -> Packet {
    packet(src, dst, PROTO_UDP, port)
}
fn icmp(src: &str, dst: &str, ty: u8) -> Packet {
    packet(src, dst, PROTO_ICMP, u16::from(ty) << 8)
}
fn icmp6(src: &str, dst: &str, ty: u8) -> Packet {
    packet(src, dst, PROTO_ICMPV6, u16::from(ty) << 8)
}
fn with_mac(mut p: Packet, m: &str) -> Packet {
    p.src_mac = mac(m);
    p
}
fn fragment(mut p: Packet) -> Packet {
    p.fragment = 1;
    p.sport = 0;
    p.dport = 0;
    p
}
/// An ARP frame: `sender` claims to be at `sha` (ARP body), sent from `eth_src`.
fn arp(sender: &str, target: &str, sha: &str, eth_src: &str) -> Packet {
    Packet {
        kind: KIND_ARP,
        family: FAMILY_V4,
        ethertype: 0x0806,
        src_mac: mac(eth_src),
        arp_sha: mac(sha),
        src: addr(sender).1,
        dst: addr(target).1,
        ..Packet::default()
    }
}
fn l2(ethertype: u16) -> Packet {
    Packet {
        kind: KIND_OTHER,
        ethertype,
        src_mac: mac("02:00:00:00:99:99"),
        ..Packet::default()
    }
}

#[derive(Debug)]
struct Out {
    verdict: Verdict,
    reason: Reason,
    conduit: Option<String>,
    src_zone: String,
    dst_zone: String,
    log: bool,
}

/// Judges `p` as the first packet of a new flow (no flow table; time 0). An IP packet without a source MAC gets the MAC
/// its source asset is bound to (as `conduit explain` does), so that tests about conduits are
/// not about spoofing.
fn judge(l: &Loaded, mut p: Packet) -> Out {
    if p.kind == KIND_IP && p.src_mac == [0; 6] {
        let ip: IpAddr = if p.family == FAMILY_V4 {
            IpAddr::from(<[u8; 4]>::try_from(&p.src[..4]).unwrap())
        } else {
            IpAddr::from(p.src)
        };
        if let Some(m) = l.policy.asset_of(ip).and_then(|(_, a)| a.mac) {
            p.src_mac = m;
        }
    }
    let c = &l.compiled;
    let d = decide(c, c.slot, &p, 0);
    Out {
        verdict: d.verdict,
        reason: d.reason,
        conduit: c.conduit_name(d.conduit).map(str::to_owned),
        src_zone: c.zone_name(d.src_zone).to_owned(),
        dst_zone: c.zone_name(d.dst_zone).to_owned(),
        log: d.log,
    }
}

#[track_caller]
fn expect(o: &Out, verdict: Verdict, reason: Reason, conduit: Option<&str>) {
    assert_eq!(
        (o.verdict, o.reason, o.conduit.as_deref()),
        (verdict, reason, conduit),
        "{o:?}"
    );
}
#[track_caller]
fn allowed_by(o: &Out, conduit: &str) {
    expect(o, Verdict::Allow, Reason::Conduit, Some(conduit));
}
#[track_caller]
fn no_conduit(o: &Out) {
    expect(o, Verdict::Deny, Reason::NoConduit, None);
}

/// Two SL 2 zones, `a` (10.0.1.x, fd00:1::x) and `b` (10.0.2.x, fd00:2::x), plus `c`, with
/// the given `defaults:` block (or "") and conduits (a YAML list at column 0, or "[]").
fn ab(defaults: &str, conduits: &str) -> String {
    let mut s = y(r#"
        version: 1
        site: test
    "#);
    s.push_str(&y(defaults));
    s.push_str(&y(r#"
        zones:
          - name: a
            security_level: 2
            assets:
              - { name: a1, ip: 10.0.1.1 }
              - { name: a2, ip: 10.0.1.2 }
              - { name: a6, ip: "fd00:1::1" }
          - name: b
            security_level: 2
            assets:
              - { name: b1, ip: 10.0.2.1 }
              - { name: b2, ip: 10.0.2.2 }
              - { name: b6, ip: "fd00:2::1" }
          - name: c
            security_level: 2
            assets:
              - { name: c1, ip: 10.0.3.1 }
    "#));
    let conduits = y(conduits);
    if conduits.trim_start().starts_with('[') {
        s.push_str(&format!("conduits: {conduits}"));
    } else {
        s.push_str("conduits:\n");
        s.push_str(&conduits);
    }
    s
}

/// The example of SPEC §1, verbatim.
const SPEC_EXAMPLE: &str = r#"version: 1
site: water-plant-a

defaults:
  mode: enforce              # enforce | monitor  (monitor: judge and count, but pass)
  intra_zone: allow          # allow | deny       (traffic between two assets of the same zone)
  fragments: deny            # deny | allow       (IP fragments other than the first)
  log: deny                  # none | deny | all  (what goes to the audit log)
  failsafe:                  # inbound to the gateway host itself, never blocked
    - { proto: tcp, ports: [22] }
  l2:                        # frames that are neither IPv4, IPv6 nor ARP
    default: deny            # deny | allow
    allow_ethertypes: [lldp, 0x88f7]

zones:
  - name: enterprise
    security_level: 1        # SL-T, 1..4
    purdue_level: 4          # optional, informative
    description: Corporate IT
    assets:
      - { name: office-lan, cidr: 10.4.0.0/16 }
      - { name: erp, ip: 10.4.0.10 }
  - name: supervisory
    security_level: 3
    assets:
      - { name: hmi-1, ip: 10.3.0.20, mac: "02:00:00:03:00:20" }
      - { name: eng-ws, ip: 10.3.0.30, mac: "02:00:00:03:00:30" }
  - name: control
    security_level: 3
    mode: monitor            # optional: overrides defaults.mode for traffic INTO this zone
    intra_zone: deny         # optional: overrides defaults.intra_zone for this zone
    assets:
      - { name: plc-1, ip: 10.2.0.10, mac: "02:00:00:02:00:10" }
      - { name: plc-2, ip: 10.2.0.11, mac: "02:00:00:02:00:11" }

conduits:
  - name: hmi-to-plc
    from: supervisory        # a zone name or a list of zone names
    to: control
    security_level: 3        # optional SL-T of the conduit
    rules:
      - { proto: tcp, ports: [502] }
      - { proto: icmp, icmp_types: [echo-request] }
    log: all                 # optional: overrides defaults.log for this conduit
  - name: engineering
    from: supervisory
    to: control
    sources: [eng-ws]        # optional: only these assets of the from-zones may initiate
    destinations: [plc-1]    # optional: only to these assets of the to-zones
    rules:
      - { proto: tcp, ports: [102, 44818, "20000-20010"] }
"#;

fn policies_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

fn example_policies() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(policies_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    v.sort();
    assert!(v.len() >= 3, "expected the example policies, found {v:?}");
    v
}

// ---------------------------------------------------------------------------------------------
// The example and the opening paragraph

#[test]
fn spec_example_policy_is_valid_and_behaves_as_commented() {
    let l = load(SPEC_EXAMPLE);
    assert_eq!(l.policy.site, "water-plant-a");
    assert_eq!(l.policy.zones.len(), 3);
    assert_eq!(l.policy.conduits.len(), 2);
    // hmi-1 -> plc-1 Modbus through hmi-to-plc, logged (`log: all` on the conduit).
    let o = judge(&l, tcp("10.3.0.20", "10.2.0.10", 502));
    allowed_by(&o, "hmi-to-plc");
    assert!(o.log);
    // eng-ws -> plc-1 in the vendor range through engineering.
    allowed_by(
        &judge(&l, tcp("10.3.0.30", "10.2.0.10", 20005)),
        "engineering",
    );
    // hmi-1 -> plc-1 S7: not the hmi's conduit; control is in monitor mode.
    expect(
        &judge(&l, tcp("10.3.0.20", "10.2.0.10", 102)),
        Verdict::WouldDeny,
        Reason::NoConduit,
        None,
    );
}

#[test]
fn everything_not_allowed_by_a_conduit_is_denied() {
    let l = load(&ab(
        "",
        r#"
        - name: a-to-b
          from: a
          to: b
          rules:
            - { proto: tcp, ports: [502] }
        "#,
    ));
    allowed_by(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 502)), "a-to-b");
    no_conduit(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 503)));
    no_conduit(&judge(&l, udp("10.0.1.1", "10.0.2.1", 502)));
    no_conduit(&judge(&l, tcp("10.0.1.1", "10.0.3.1", 502)));
    no_conduit(&judge(&l, icmp("10.0.1.1", "10.0.2.1", 8)));
}

#[test]
fn empty_conduit_list_denies_everything_between_zones() {
    let l = load(&ab("", "[]"));
    no_conduit(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 80)));
    // Within a zone, intra_zone (allow by default) still applies.
    expect(
        &judge(&l, tcp("10.0.1.1", "10.0.1.2", 80)),
        Verdict::Allow,
        Reason::IntraZone,
        None,
    );
}

// ---------------------------------------------------------------------------------------------
// Identity: addresses resolve to assets and zones

#[test]
fn identity_src_and_dst_resolve_to_their_zones() {
    let l = load(&ab("", "[]"));
    let o = judge(&l, tcp("10.0.1.2", "10.0.3.1", 80));
    assert_eq!((o.src_zone.as_str(), o.dst_zone.as_str()), ("a", "c"));
    let o = judge(&l, tcp("fd00:2::1", "fd00:1::1", 80));
    assert_eq!((o.src_zone.as_str(), o.dst_zone.as_str()), ("b", "a"));
}

#[test]
fn identity_exact_ip_beats_cidr() {
    // The `ip` asset is written after the network that contains it, and before it, in two
    // policies: the order in the file must not matter.
    for (first, second) in [
        (
            "{ name: net, cidr: 10.9.0.0/16 }",
            "{ name: host, ip: 10.9.0.5 }",
        ),
        (
            "{ name: host, ip: 10.9.0.5 }",
            "{ name: net, cidr: 10.9.0.0/16 }",
        ),
    ] {
        let (zn, zh) = if first.contains("net") {
            ("netzone", "hostzone")
        } else {
            ("hostzone", "netzone")
        };
        let p = y(&format!(
            r#"
            version: 1
            site: t
            zones:
              - name: {zn}
                security_level: 1
                assets:
                  - {first}
              - name: {zh}
                security_level: 1
                assets:
                  - {second}
            conduits: []
            "#
        ));
        let l = load(&p);
        assert_eq!(
            judge(&l, tcp("10.9.0.5", "10.9.0.6", 1)).src_zone,
            "hostzone"
        );
        // Its neighbour is the network's.
        assert_eq!(
            judge(&l, tcp("10.9.0.6", "10.9.0.5", 1)).src_zone,
            "netzone"
        );
        assert_eq!(
            judge(&l, tcp("10.9.0.6", "10.9.0.5", 1)).dst_zone,
            "hostzone"
        );
    }
}

#[test]
fn identity_exact_ipv6_beats_cidr() {
    let l = load(&y(r#"
        version: 1
        site: t
        zones:
          - name: net
            security_level: 1
            assets:
              - { name: net6, cidr: "fd00:9::/64" }
          - name: host
            security_level: 1
            assets:
              - { name: host6, ip: "fd00:9::5" }
        conduits: []
    "#));
    assert_eq!(judge(&l, tcp("fd00:9::5", "fd00:9::6", 1)).src_zone, "host");
    assert_eq!(judge(&l, tcp("fd00:9::6", "fd00:9::5", 1)).src_zone, "net");
    assert_eq!(
        judge(&l, tcp("fd00:9:0:1::6", "fd00:9::5", 1)).src_zone,
        "unknown"
    );
}

#[test]
fn identity_longest_cidr_prefix_wins() {
    // Narrowest first in one zone order, widest first in the other: only the prefix counts.
    let p = y(r#"
        version: 1
        site: t
        zones:
          - name: narrow
            security_level: 1
            assets:
              - { name: n24, cidr: 10.1.2.0/24 }
              - { name: n6, cidr: "fd00:1:2::/48" }
          - name: wide
            security_level: 1
            assets:
              - { name: w8, cidr: 10.0.0.0/8 }
              - { name: w6, cidr: "fd00::/16" }
          - name: mid
            security_level: 1
            assets:
              - { name: m16, cidr: 10.1.0.0/16 }
              - { name: m6, cidr: "fd00:1::/32" }
        conduits: []
    "#);
    let l = load(&p);
    let zone = |ip: &str| {
        let other = if ip.contains(':') {
            "fd99::1"
        } else {
            "192.0.2.1"
        };
        judge(&l, tcp(ip, other, 1)).src_zone
    };
    assert_eq!(zone("10.1.2.3"), "narrow");
    assert_eq!(zone("10.1.3.3"), "mid");
    assert_eq!(zone("10.2.0.1"), "wide");
    assert_eq!(zone("11.0.0.1"), "unknown");
    assert_eq!(zone("fd00:1:2::9"), "narrow");
    assert_eq!(zone("fd00:1:3::9"), "mid");
    assert_eq!(zone("fd00:2::9"), "wide");
    assert_eq!(zone("fd01::9"), "unknown");
}

#[test]
fn identity_cidr_matches_only_its_own_family() {
    let l = load(&y(r#"
        version: 1
        site: t
        zones:
          - name: all4
            security_level: 1
            assets:
              - { name: any4, cidr: 0.0.0.0/0 }
        conduits: []
    "#));
    assert_eq!(
        judge(&l, tcp("203.0.113.9", "10.0.0.1", 1)).src_zone,
        "all4"
    );
    assert_eq!(
        judge(&l, tcp("2001:db8::9", "fd00::1", 1)).src_zone,
        "unknown"
    );
}

#[test]
fn identity_address_matching_no_asset_is_zone_unknown() {
    let l = load(&ab("", "[]"));
    let c = &l.compiled;
    let d = decide(c, c.slot, &tcp("192.0.2.7", "10.0.1.1", 80), 0);
    assert_eq!(d.src_zone, 0, "unknown is zone id 0");
    assert_eq!(c.zone_name(d.src_zone), "unknown");
    assert_ne!(d.dst_zone, 0);
    assert_eq!(c.zone_name(d.dst_zone), "a");
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(d.reason, Reason::NoConduit);
}

#[test]
fn identity_conduit_may_name_unknown_in_to_for_egress() {
    let l = load(&ab(
        "",
        r#"
        - name: internet
          from: a
          to: unknown
          rules:
            - { proto: tcp, ports: [443] }
        "#,
    ));
    let o = judge(&l, tcp("10.0.1.1", "8.8.8.8", 443));
    allowed_by(&o, "internet");
    assert_eq!(o.dst_zone, "unknown");
    allowed_by(&judge(&l, tcp("fd00:1::1", "2001:db8::1", 443)), "internet");
    // Not into known zones, not from unknown, not on other ports.
    no_conduit(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 443)));
    no_conduit(&judge(&l, tcp("8.8.8.8", "10.0.1.1", 443)));
    no_conduit(&judge(&l, tcp("10.0.1.1", "8.8.8.8", 80)));
}

#[test]
fn identity_conduit_may_name_unknown_in_from() {
    let l = load(&ab(
        "",
        r#"
        - name: public-web
          from: unknown
          to: b
          destinations: [b1]
          rules:
            - { proto: tcp, ports: [80] }
        "#,
    ));
    allowed_by(
        &judge(&l, tcp("198.51.100.7", "10.0.2.1", 80)),
        "public-web",
    );
    no_conduit(&judge(&l, tcp("198.51.100.7", "10.0.2.2", 80)));
    // a is a known zone, not unknown.
    no_conduit(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 80)));
}

#[test]
fn identity_intra_zone_never_applies_to_unknown() {
    let l = load(&ab("defaults: { intra_zone: allow }", "[]"));
    no_conduit(&judge(&l, tcp("192.0.2.1", "192.0.2.2", 80)));
    no_conduit(&judge(&l, tcp("2001:db8::1", "2001:db8::2", 80)));
    // ... while it does apply to a real zone.
    expect(
        &judge(&l, tcp("10.0.2.1", "10.0.2.2", 80)),
        Verdict::Allow,
        Reason::IntraZone,
        None,
    );
}

#[test]
fn identity_unknown_to_unknown_allowed_only_by_a_conduit() {
    let l = load(&ab(
        "",
        r#"
        - name: transit
          from: unknown
          to: unknown
          rules:
            - { proto: udp, ports: [53] }
        "#,
    ));
    allowed_by(&judge(&l, udp("192.0.2.1", "192.0.2.2", 53)), "transit");
    no_conduit(&judge(&l, udp("192.0.2.1", "192.0.2.2", 54)));
}

#[test]
fn identity_two_assets_may_not_claim_the_same_ip() {
    let p = ab("", "[]").replace(
        "- { name: c1, ip: 10.0.3.1 }",
        "- { name: c1, ip: 10.0.3.1 }\n      - { name: twin, ip: 10.0.1.1 }",
    );
    let e = one_error(&p, "twin", "10.0.1.1");
    assert!(
        e.message.contains("a1") && e.message.contains("twin"),
        "{e:?}"
    );
    // Within one zone too.
    let p = ab("", "[]").replace(
        "- { name: a2, ip: 10.0.1.2 }",
        "- { name: a2, ip: 10.0.1.1 }",
    );
    one_error(&p, "name: a2", "claimed");
}

#[test]
fn identity_same_ipv6_written_differently_is_the_same_ip() {
    let p = ab("", "[]").replace(
        "- { name: c1, ip: 10.0.3.1 }",
        "- { name: c1, ip: 10.0.3.1 }\n      - { name: twin6, ip: \"fd00:1:0:0::1\" }",
    );
    one_error(&p, "twin6", "claimed");
}

#[test]
fn identity_distinct_ips_and_overlapping_cidrs_are_fine() {
    let p = ab("", "[]").replace(
        "- { name: c1, ip: 10.0.3.1 }",
        "- { name: c1, ip: 10.0.3.1 }\n      - { name: n8, cidr: 10.0.0.0/8 }\n      - { name: n16, cidr: 10.0.0.0/16 }",
    );
    let l = load(&p);
    assert_eq!(judge(&l, tcp("10.0.9.9", "10.0.1.1", 1)).src_zone, "c");
}

#[test]
fn identity_two_cidr_assets_may_not_be_identical() {
    let p = ab("", "[]").replace(
        "- { name: c1, ip: 10.0.3.1 }",
        "- { name: c1, ip: 10.0.3.1 }\n      - { name: net-a, cidr: 10.5.0.0/16 }\n      - { name: net-b, cidr: 10.5.0.0/16 }",
    );
    let e = one_error(&p, "net-b", "10.5.0.0/16");
    assert!(e.message.contains("net-a"), "{e:?}");
}

// ---------------------------------------------------------------------------------------------
// Identity: MAC binding and ARP

/// Zone `a` with a MAC-bound asset m1 (10.0.1.1, 02:00:00:00:01:01), an unbound one, and
/// conduits that allow everything, so that only the binding can deny.
fn bound() -> Loaded {
    load(&y(r#"
        version: 1
        site: t
        zones:
          - name: a
            security_level: 2
            assets:
              - { name: m1, ip: 10.0.1.1, mac: "02:00:00:00:01:01" }
              - { name: u2, ip: 10.0.1.2 }
              - { name: m3, ip: 10.0.1.3, mac: "02:00:00:00:01:03" }
          - name: b
            security_level: 2
            assets:
              - { name: b1, ip: 10.0.2.1 }
        conduits:
          - name: a-anything
            from: a
            to: b
            rules:
              - { proto: any }
          - name: unknown-anything
            from: unknown
            to: b
            rules:
              - { proto: any }
    "#))
}

#[test]
fn mac_binding_correct_pair_passes() {
    let l = bound();
    allowed_by(
        &judge(
            &l,
            with_mac(tcp("10.0.1.1", "10.0.2.1", 80), "02:00:00:00:01:01"),
        ),
        "a-anything",
    );
}

#[test]
fn mac_binding_bound_ip_with_other_mac_is_spoofed_whatever_the_conduits() {
    let l = bound();
    let o = judge(
        &l,
        with_mac(tcp("10.0.1.1", "10.0.2.1", 80), "02:00:00:00:0e:0e"),
    );
    expect(&o, Verdict::Deny, Reason::Spoofed, None);
    // The MAC of another bound asset is no better.
    let o = judge(
        &l,
        with_mac(tcp("10.0.1.1", "10.0.2.1", 80), "02:00:00:00:01:03"),
    );
    expect(&o, Verdict::Deny, Reason::Spoofed, None);
}

#[test]
fn mac_binding_bound_mac_with_other_ip_is_spoofed_whatever_the_conduits() {
    let l = bound();
    // The unbound asset's address, from m1's MAC.
    let o = judge(
        &l,
        with_mac(tcp("10.0.1.2", "10.0.2.1", 80), "02:00:00:00:01:01"),
    );
    expect(&o, Verdict::Deny, Reason::Spoofed, None);
    // An unknown address (a conduit from unknown allows everything), from m1's MAC.
    let o = judge(
        &l,
        with_mac(tcp("10.0.1.99", "10.0.2.1", 80), "02:00:00:00:01:01"),
    );
    expect(&o, Verdict::Deny, Reason::Spoofed, None);
    // The same unknown address from an unbound MAC passes through that conduit.
    allowed_by(
        &judge(
            &l,
            with_mac(tcp("10.0.1.99", "10.0.2.1", 80), "02:00:00:00:0e:0e"),
        ),
        "unknown-anything",
    );
}

#[test]
fn mac_binding_spoofed_even_within_the_zone() {
    let l = bound();
    let o = judge(
        &l,
        with_mac(tcp("10.0.1.1", "10.0.1.2", 80), "02:00:00:00:0e:0e"),
    );
    expect(&o, Verdict::Deny, Reason::Spoofed, None);
    expect(
        &judge(
            &l,
            with_mac(tcp("10.0.1.1", "10.0.1.2", 80), "02:00:00:00:01:01"),
        ),
        Verdict::Allow,
        Reason::IntraZone,
        None,
    );
}

#[test]
fn mac_binding_ipv6_asset() {
    let l = load(&y(r#"
        version: 1
        site: t
        zones:
          - name: a
            security_level: 2
            assets:
              - { name: m6, ip: "fd00:1::1", mac: "02:00:00:00:06:01" }
          - name: b
            security_level: 2
            assets:
              - { name: b6, ip: "fd00:2::1" }
        conduits:
          - name: any
            from: [a, unknown]
            to: b
            rules:
              - { proto: any }
    "#));
    allowed_by(
        &judge(
            &l,
            with_mac(tcp("fd00:1::1", "fd00:2::1", 1), "02:00:00:00:06:01"),
        ),
        "any",
    );
    let o = judge(
        &l,
        with_mac(tcp("fd00:1::1", "fd00:2::1", 1), "02:00:00:00:06:02"),
    );
    expect(&o, Verdict::Deny, Reason::Spoofed, None);
    let o = judge(
        &l,
        with_mac(tcp("fd00:1::2", "fd00:2::1", 1), "02:00:00:00:06:01"),
    );
    expect(&o, Verdict::Deny, Reason::Spoofed, None);
}

#[test]
fn arp_sender_ip_bound_with_other_sender_mac_in_body_is_arp_spoof() {
    let l = bound();
    let o = judge(
        &l,
        arp(
            "10.0.1.1",
            "10.0.2.1",
            "02:00:00:00:0e:0e",
            "02:00:00:00:01:01",
        ),
    );
    expect(&o, Verdict::Deny, Reason::ArpSpoof, None);
}

#[test]
fn arp_sender_ip_bound_with_other_ethernet_source_is_arp_spoof() {
    let l = bound();
    let o = judge(
        &l,
        arp(
            "10.0.1.1",
            "10.0.2.1",
            "02:00:00:00:01:01",
            "02:00:00:00:0e:0e",
        ),
    );
    expect(&o, Verdict::Deny, Reason::ArpSpoof, None);
}

#[test]
fn arp_other_frames_pass_without_any_conduit() {
    // No conduit at all: ARP does not need one.
    let l = load(&ab("", "[]").replace(
        "- { name: a1, ip: 10.0.1.1 }",
        "- { name: a1, ip: 10.0.1.1, mac: \"02:00:00:00:01:01\" }",
    ));
    let ok = |o: Out| expect(&o, Verdict::Allow, Reason::Arp, None);
    // The bound asset, with its own MAC in both places.
    ok(judge(
        &l,
        arp(
            "10.0.1.1",
            "10.0.2.1",
            "02:00:00:00:01:01",
            "02:00:00:00:01:01",
        ),
    ));
    // An unbound asset, any MAC.
    ok(judge(
        &l,
        arp(
            "10.0.1.2",
            "10.0.2.1",
            "02:00:00:00:0e:0e",
            "02:00:00:00:0e:0e",
        ),
    ));
    // An unknown address.
    ok(judge(
        &l,
        arp(
            "192.0.2.1",
            "10.0.2.1",
            "02:00:00:00:0e:0f",
            "02:00:00:00:0e:0f",
        ),
    ));
    // ... while the bound asset's address from another MAC is still refused.
    expect(
        &judge(
            &l,
            arp(
                "10.0.1.1",
                "10.0.2.1",
                "02:00:00:00:0e:0e",
                "02:00:00:00:0e:0e",
            ),
        ),
        Verdict::Deny,
        Reason::ArpSpoof,
        None,
    );
}

// ---------------------------------------------------------------------------------------------
// Conduits

#[test]
fn conduit_allows_from_zone_to_zone_matching_a_rule() {
    let l = load(&ab(
        "",
        r#"
        - name: a-to-b
          from: a
          to: b
          rules:
            - { proto: tcp, ports: [502] }
            - { proto: udp, ports: [161] }
        "#,
    ));
    for src in ["10.0.1.1", "10.0.1.2"] {
        for dst in ["10.0.2.1", "10.0.2.2"] {
            allowed_by(&judge(&l, tcp(src, dst, 502)), "a-to-b");
            allowed_by(&judge(&l, udp(src, dst, 161)), "a-to-b");
        }
    }
    allowed_by(&judge(&l, tcp("fd00:1::1", "fd00:2::1", 502)), "a-to-b");
    no_conduit(&judge(&l, udp("10.0.1.1", "10.0.2.1", 502)));
}

#[test]
fn conduit_never_allows_the_to_side_to_initiate() {
    // A reply is the flow tracker's business; a new flow from `to` to `from` is not allowed.
    let l = load(&ab(
        "",
        r#"
        - name: a-to-b
          from: a
          to: b
          rules:
            - { proto: tcp, ports: [502] }
        "#,
    ));
    allowed_by(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 502)), "a-to-b");
    no_conduit(&judge(&l, tcp("10.0.2.1", "10.0.1.1", 502)));
}

#[test]
fn conduit_from_and_to_take_lists_of_zones() {
    let l = load(&ab(
        "",
        r#"
        - name: many
          from: [a, c]
          to: [b]
          rules:
            - { proto: tcp, ports: [22] }
        "#,
    ));
    allowed_by(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 22)), "many");
    allowed_by(&judge(&l, tcp("10.0.3.1", "10.0.2.2", 22)), "many");
    no_conduit(&judge(&l, tcp("10.0.1.1", "10.0.3.1", 22)));
    no_conduit(&judge(&l, tcp("10.0.2.1", "10.0.3.1", 22)));
}

#[test]
fn conduit_sources_narrow_the_initiators() {
    let l = load(&ab(
        "",
        r#"
        - name: only-a1
          from: a
          to: b
          sources: [a1]
          rules:
            - { proto: tcp, ports: [102] }
        "#,
    ));
    allowed_by(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 102)), "only-a1");
    allowed_by(&judge(&l, tcp("10.0.1.1", "10.0.2.2", 102)), "only-a1");
    no_conduit(&judge(&l, tcp("10.0.1.2", "10.0.2.1", 102)));
    no_conduit(&judge(&l, tcp("fd00:1::1", "fd00:2::1", 102)));
}

#[test]
fn conduit_destinations_narrow_the_targets() {
    let l = load(&ab(
        "",
        r#"
        - name: only-b2
          from: a
          to: b
          destinations: [b2]
          rules:
            - { proto: tcp, ports: [102] }
        "#,
    ));
    allowed_by(&judge(&l, tcp("10.0.1.1", "10.0.2.2", 102)), "only-b2");
    allowed_by(&judge(&l, tcp("10.0.1.2", "10.0.2.2", 102)), "only-b2");
    no_conduit(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 102)));
}

#[test]
fn conduit_sources_as_cidr_asset_excludes_exact_hosts_inside_it() {
    // The purdue-plant situation: office-lan (cidr) is a source, erp (ip, inside it) is not.
    let l = load(&y(r#"
        version: 1
        site: t
        zones:
          - name: office
            security_level: 1
            assets:
              - { name: office-lan, cidr: 10.4.0.0/16 }
              - { name: erp, ip: 10.4.0.10 }
          - name: dmz
            security_level: 2
            assets:
              - { name: historian, ip: 10.5.0.10 }
        conduits:
          - name: office-to-historian
            from: office
            to: dmz
            sources: [office-lan]
            rules:
              - { proto: tcp, ports: [443] }
    "#));
    allowed_by(
        &judge(&l, tcp("10.4.7.7", "10.5.0.10", 443)),
        "office-to-historian",
    );
    no_conduit(&judge(&l, tcp("10.4.0.10", "10.5.0.10", 443)));
}

#[test]
fn conduit_narrowed_asset_keeps_its_zone_wide_conduits() {
    let l = load(&ab(
        "",
        r#"
        - name: a1-special
          from: a
          to: b
          sources: [a1]
          rules:
            - { proto: tcp, ports: [102] }
        - name: zone-wide
          from: a
          to: b
          rules:
            - { proto: tcp, ports: [502] }
        "#,
    ));
    allowed_by(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 502)), "zone-wide");
    allowed_by(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 102)), "a1-special");
    allowed_by(&judge(&l, tcp("10.0.1.2", "10.0.2.1", 502)), "zone-wide");
    no_conduit(&judge(&l, tcp("10.0.1.2", "10.0.2.1", 102)));
}

#[test]
fn conduit_bidirectional_allows_to_side_with_the_same_rules() {
    let l = load(&ab(
        "",
        r#"
        - name: both-ways
          from: a
          to: b
          bidirectional: true
          rules:
            - { proto: tcp, ports: [4840] }
        "#,
    ));
    allowed_by(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 4840)), "both-ways");
    allowed_by(&judge(&l, tcp("10.0.2.1", "10.0.1.1", 4840)), "both-ways");
    // Same rules only.
    no_conduit(&judge(&l, tcp("10.0.2.1", "10.0.1.1", 4841)));
    // Not to other zones.
    no_conduit(&judge(&l, tcp("10.0.2.1", "10.0.3.1", 4840)));
}

#[test]
fn conduit_bidirectional_false_is_one_way() {
    let l = load(&ab(
        "",
        r#"
        - name: one-way
          from: a
          to: b
          bidirectional: false
          rules:
            - { proto: tcp, ports: [4840] }
        "#,
    ));
    allowed_by(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 4840)), "one-way");
    no_conduit(&judge(&l, tcp("10.0.2.1", "10.0.1.1", 4840)));
}

#[test]
fn conduit_bidirectional_keeps_sources_and_destinations() {
    let l = load(&ab(
        "",
        r#"
        - name: pair
          from: a
          to: b
          sources: [a1]
          destinations: [b1]
          bidirectional: true
          rules:
            - { proto: tcp, ports: [4840] }
        "#,
    ));
    allowed_by(&judge(&l, tcp("10.0.2.1", "10.0.1.1", 4840)), "pair");
    no_conduit(&judge(&l, tcp("10.0.2.2", "10.0.1.1", 4840)));
    no_conduit(&judge(&l, tcp("10.0.2.1", "10.0.1.2", 4840)));
}

#[test]
fn conduit_bidirectional_must_be_a_boolean() {
    let p = ab(
        "",
        r#"
        - name: x
          from: a
          to: b
          bidirectional: sometimes
          rules:
            - { proto: tcp, ports: [1] }
        "#,
    );
    one_error(&p, "sometimes", "bidirectional");
}

#[test]
fn rule_proto_tcp_and_udp_are_distinct() {
    let l = load(&ab(
        "",
        r#"
        - name: t
          from: a
          to: b
          rules:
            - { proto: tcp, ports: [53] }
        "#,
    ));
    allowed_by(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 53)), "t");
    no_conduit(&judge(&l, udp("10.0.1.1", "10.0.2.1", 53)));
}

#[test]
fn rule_proto_any_allows_every_protocol() {
    let l = load(&ab(
        "",
        r#"
        - name: all
          from: a
          to: b
          rules:
            - { proto: any }
        "#,
    ));
    allowed_by(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 1)), "all");
    allowed_by(&judge(&l, udp("10.0.1.1", "10.0.2.1", 65535)), "all");
    allowed_by(&judge(&l, icmp("10.0.1.1", "10.0.2.1", 8)), "all");
    allowed_by(&judge(&l, packet("10.0.1.1", "10.0.2.1", 47, 0)), "all");
    allowed_by(&judge(&l, icmp6("fd00:1::1", "fd00:2::1", 128)), "all");
    no_conduit(&judge(&l, tcp("10.0.2.1", "10.0.1.1", 1)));
}

#[test]
fn rule_proto_number_matches_that_protocol_only() {
    let l = load(&ab(
        "",
        r#"
        - name: gre
          from: a
          to: b
          rules:
            - { proto: 47 }
        - name: six
          from: a
          to: c
          rules:
            - { proto: 6, ports: [80] }
        "#,
    ));
    allowed_by(&judge(&l, packet("10.0.1.1", "10.0.2.1", 47, 0)), "gre");
    no_conduit(&judge(&l, packet("10.0.1.1", "10.0.2.1", 50, 0)));
    no_conduit(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 80)));
    // 6 is tcp, with ports.
    allowed_by(&judge(&l, tcp("10.0.1.1", "10.0.3.1", 80)), "six");
    no_conduit(&judge(&l, tcp("10.0.1.1", "10.0.3.1", 81)));
}

#[test]
fn rule_proto_range_and_names() {
    for ok in ["0", "255", "icmpv6", "udp"] {
        let p = ab(
            "",
            &format!("- {{ name: x, from: a, to: b, rules: [{{ proto: \"{ok}\" }}] }}"),
        );
        load(&p);
    }
    let p = ab(
        "",
        "- name: x\n  from: a\n  to: b\n  rules:\n    - { proto: 256 }\n",
    );
    one_error(&p, "proto: 256", "not a protocol");
    let p = ab(
        "",
        "- name: x\n  from: a\n  to: b\n  rules:\n    - { proto: tpc, ports: [1] }\n",
    );
    let e = one_error(&p, "proto: tpc", "not a protocol");
    assert!(e.message.contains("tcp"), "suggests tcp: {e:?}");
    let p = ab(
        "",
        "- name: x\n  from: a\n  to: b\n  rules:\n    - { proto: -1 }\n",
    );
    one_error(&p, "proto: -1", "not a protocol");
}

#[test]
fn rule_proto_is_required() {
    let p = ab(
        "",
        "- name: x\n  from: a\n  to: b\n  rules:\n    - { ports: [80] }\n",
    );
    one_error(&p, "ports: [80]", "proto");
}

#[test]
fn rule_ports_absent_means_every_port() {
    let l = load(&ab(
        "",
        r#"
        - name: every-udp
          from: a
          to: b
          rules:
            - { proto: udp }
        "#,
    ));
    for port in [1, 53, 1024, 65535] {
        allowed_by(&judge(&l, udp("10.0.1.1", "10.0.2.1", port)), "every-udp");
    }
    no_conduit(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 53)));
}

#[test]
fn rule_ports_are_destination_ports() {
    let l = load(&ab(
        "",
        r#"
        - name: modbus
          from: a
          to: b
          rules:
            - { proto: tcp, ports: [502] }
        "#,
    ));
    let mut p = tcp("10.0.1.1", "10.0.2.1", 80);
    p.sport = 502;
    no_conduit(&judge(&l, p));
    let mut p = tcp("10.0.1.1", "10.0.2.1", 502);
    p.sport = 61000;
    allowed_by(&judge(&l, p), "modbus");
}

#[test]
fn rule_port_ranges_are_inclusive() {
    let l = load(&ab(
        "",
        r#"
        - name: vendor
          from: a
          to: b
          rules:
            - { proto: tcp, ports: [102, "20000-20010", "7-7"] }
        "#,
    ));
    for port in [102, 20000, 20001, 20005, 20010, 7] {
        allowed_by(&judge(&l, tcp("10.0.1.1", "10.0.2.1", port)), "vendor");
    }
    for port in [101, 103, 19999, 20011, 6, 8] {
        no_conduit(&judge(&l, tcp("10.0.1.1", "10.0.2.1", port)));
    }
}

#[test]
fn rule_full_port_range_is_every_port() {
    let l = load(&ab(
        "",
        "- name: all-tcp\n  from: a\n  to: b\n  rules:\n    - { proto: tcp, ports: [\"1-65535\"] }\n",
    ));
    for port in [1, 2, 32768, 65534, 65535] {
        allowed_by(&judge(&l, tcp("10.0.1.1", "10.0.2.1", port)), "all-tcp");
    }
}

#[test]
fn rule_ports_only_for_tcp_and_udp() {
    for proto in ["icmp", "any", "47"] {
        let p = ab(
            "",
            &format!(
                "- name: x\n  from: a\n  to: b\n  rules:\n    - {{ proto: {proto}, ports: [80] }}\n"
            ),
        );
        one_error(&p, "ports: [80]", "only applies to tcp and udp");
    }
}

#[test]
fn rule_empty_ports_list_is_an_error() {
    let p = ab(
        "",
        "- name: x\n  from: a\n  to: b\n  rules:\n    - { proto: tcp, ports: [] }\n",
    );
    one_error(&p, "ports: []", "ports");
}

#[test]
fn rule_icmp_types_by_name_and_number() {
    let l = load(&ab(
        "",
        r#"
        - name: ping
          from: a
          to: b
          rules:
            - { proto: icmp, icmp_types: [echo-request, 13] }
            - { proto: icmpv6, icmp_types: [echo-request] }
        "#,
    ));
    allowed_by(&judge(&l, icmp("10.0.1.1", "10.0.2.1", 8)), "ping");
    allowed_by(&judge(&l, icmp("10.0.1.1", "10.0.2.1", 13)), "ping");
    // Any code of an allowed type.
    let mut p = icmp("10.0.1.1", "10.0.2.1", 8);
    p.dport |= 3;
    allowed_by(&judge(&l, p), "ping");
    no_conduit(&judge(&l, icmp("10.0.1.1", "10.0.2.1", 0)));
    no_conduit(&judge(&l, icmp("10.0.1.1", "10.0.2.1", 5)));
    // icmpv6 echo-request is 128, not 8.
    allowed_by(&judge(&l, icmp6("fd00:1::1", "fd00:2::1", 128)), "ping");
    no_conduit(&judge(&l, icmp6("fd00:1::1", "fd00:2::1", 8)));
    no_conduit(&judge(&l, icmp6("fd00:1::1", "fd00:2::1", 129)));
}

#[test]
fn rule_icmp_types_absent_means_every_type() {
    let l = load(&ab(
        "",
        "- name: icmp-all\n  from: a\n  to: b\n  rules:\n    - { proto: icmp }\n",
    ));
    for ty in [0, 3, 8, 11, 255] {
        allowed_by(&judge(&l, icmp("10.0.1.1", "10.0.2.1", ty)), "icmp-all");
    }
    // icmp is not icmpv6.
    no_conduit(&judge(&l, icmp6("fd00:1::1", "fd00:2::1", 128)));
}

#[test]
fn rule_icmp_types_only_for_icmp_and_icmpv6() {
    for proto in ["tcp", "udp", "any"] {
        let p = ab(
            "",
            &format!(
                "- name: x\n  from: a\n  to: b\n  rules:\n    - {{ proto: {proto}, icmp_types: [8] }}\n"
            ),
        );
        one_error(&p, "icmp_types", "only applies to icmp");
    }
}

#[test]
fn rule_icmp_type_names_are_checked() {
    let p = ab(
        "",
        "- name: x\n  from: a\n  to: b\n  rules:\n    - { proto: icmp, icmp_types: [echo-requst] }\n",
    );
    let e = one_error(&p, "echo-requst", "not an ICMP type");
    assert!(e.message.contains("echo-request"), "suggests: {e:?}");
    // An ICMPv6-only name is not an ICMP name.
    let p = ab(
        "",
        "- name: x\n  from: a\n  to: b\n  rules:\n    - { proto: icmp, icmp_types: [neighbor-solicitation] }\n",
    );
    one_error(&p, "neighbor-solicitation", "not an ICMP type");
}

#[test]
fn intra_zone_allow_by_default() {
    let l = load(&ab("", "[]"));
    let o = judge(&l, tcp("10.0.1.1", "10.0.1.2", 12345));
    expect(&o, Verdict::Allow, Reason::IntraZone, None);
    assert_eq!((o.src_zone.as_str(), o.dst_zone.as_str()), ("a", "a"));
    expect(
        &judge(&l, udp("10.0.2.2", "10.0.2.1", 1)),
        Verdict::Allow,
        Reason::IntraZone,
        None,
    );
    // Between zones, no.
    no_conduit(&judge(&l, udp("10.0.2.2", "10.0.1.1", 1)));
}

#[test]
fn intra_zone_deny_on_a_zone_needs_a_self_conduit() {
    let p = ab("", "[]").replace(
        "  - name: b\n    security_level: 2\n",
        "  - name: b\n    security_level: 2\n    intra_zone: deny\n",
    );
    let l = load(&p);
    no_conduit(&judge(&l, tcp("10.0.2.1", "10.0.2.2", 80)));
    // Zone a still follows defaults (allow).
    expect(
        &judge(&l, tcp("10.0.1.1", "10.0.1.2", 80)),
        Verdict::Allow,
        Reason::IntraZone,
        None,
    );
}

#[test]
fn intra_zone_deny_allowed_by_conduit_whose_from_and_to_include_the_zone() {
    let p = ab(
        "",
        r#"
        - name: b-internal
          from: [a, b]
          to: b
          rules:
            - { proto: tcp, ports: [80] }
        "#,
    )
    .replace(
        "  - name: b\n    security_level: 2\n",
        "  - name: b\n    security_level: 2\n    intra_zone: deny\n",
    );
    let l = load(&p);
    allowed_by(&judge(&l, tcp("10.0.2.1", "10.0.2.2", 80)), "b-internal");
    no_conduit(&judge(&l, tcp("10.0.2.1", "10.0.2.2", 81)));
}

#[test]
fn intra_zone_deny_not_satisfied_by_a_conduit_to_another_zone() {
    let p = ab(
        "",
        r#"
        - name: b-out
          from: b
          to: a
          rules:
            - { proto: any }
        "#,
    )
    .replace(
        "  - name: b\n    security_level: 2\n",
        "  - name: b\n    security_level: 2\n    intra_zone: deny\n",
    );
    let l = load(&p);
    no_conduit(&judge(&l, tcp("10.0.2.1", "10.0.2.2", 80)));
    allowed_by(&judge(&l, tcp("10.0.2.1", "10.0.1.1", 80)), "b-out");
}

#[test]
fn intra_zone_defaults_deny_with_zone_override_allow() {
    let p = ab("defaults: { intra_zone: deny }", "[]").replace(
        "  - name: a\n    security_level: 2\n",
        "  - name: a\n    security_level: 2\n    intra_zone: allow\n",
    );
    let l = load(&p);
    expect(
        &judge(&l, tcp("10.0.1.1", "10.0.1.2", 80)),
        Verdict::Allow,
        Reason::IntraZone,
        None,
    );
    no_conduit(&judge(&l, tcp("10.0.2.1", "10.0.2.2", 80)));
}

#[test]
fn intra_zone_values_are_checked() {
    let p = ab("defaults: { intra_zone: permit }", "[]");
    one_error(&p, "permit", "intra_zone");
    let p = ab("", "[]").replace(
        "  - name: a\n    security_level: 2\n",
        "  - name: a\n    security_level: 2\n    intra_zone: yes-please\n",
    );
    one_error(&p, "yes-please", "intra_zone");
}

#[test]
fn overlapping_conduits_more_specific_port_wins() {
    let l = load(&ab(
        "",
        r#"
        - name: all-tcp
          from: a
          to: b
          rules:
            - { proto: tcp }
        - name: modbus
          from: a
          to: b
          rules:
            - { proto: tcp, ports: [502] }
        "#,
    ));
    allowed_by(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 502)), "modbus");
    allowed_by(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 503)), "all-tcp");
}

#[test]
fn overlapping_conduits_equal_rules_go_to_the_earlier_conduit() {
    let l = load(&ab(
        "",
        r#"
        - name: first
          from: a
          to: b
          rules:
            - { proto: tcp, ports: [502] }
        - name: second
          from: a
          to: b
          rules:
            - { proto: tcp, ports: [502] }
            - { proto: tcp, ports: [503] }
        "#,
    ));
    allowed_by(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 502)), "first");
    allowed_by(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 503)), "second");
}

// ---------------------------------------------------------------------------------------------
// Modes

#[test]
fn mode_enforce_denies() {
    let l = load(&ab("defaults: { mode: enforce }", "[]"));
    let o = judge(&l, tcp("10.0.1.1", "10.0.2.1", 80));
    assert_eq!(o.verdict, Verdict::Deny);
}

#[test]
fn mode_monitor_of_the_destination_zone_turns_deny_into_would_deny() {
    let p = ab("", "[]").replace(
        "  - name: b\n    security_level: 2\n",
        "  - name: b\n    security_level: 2\n    mode: monitor\n",
    );
    let l = load(&p);
    let o = judge(&l, tcp("10.0.1.1", "10.0.2.1", 80));
    expect(&o, Verdict::WouldDeny, Reason::NoConduit, None);
    // The source's mode does not matter: b -> c is enforced.
    no_conduit(&judge(&l, tcp("10.0.2.1", "10.0.3.1", 80)));
    // Spoofing into a monitored zone is also only counted, into an enforced one dropped.
    let l = load(&p.replace(
        "{ name: a1, ip: 10.0.1.1 }",
        "{ name: a1, ip: 10.0.1.1, mac: \"02:00:00:00:01:01\" }",
    ));
    let o = judge(
        &l,
        with_mac(tcp("10.0.1.1", "10.0.2.1", 80), "02:00:00:00:0e:0e"),
    );
    expect(&o, Verdict::WouldDeny, Reason::Spoofed, None);
    let o = judge(
        &l,
        with_mac(tcp("10.0.1.1", "10.0.3.1", 80), "02:00:00:00:0e:0e"),
    );
    expect(&o, Verdict::Deny, Reason::Spoofed, None);
}

#[test]
fn mode_monitor_keeps_allowed_traffic_allowed() {
    let p = ab(
        "defaults: { mode: monitor }",
        "- name: ok\n  from: a\n  to: b\n  rules:\n    - { proto: tcp, ports: [80] }\n",
    );
    let l = load(&p);
    allowed_by(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 80)), "ok");
    expect(
        &judge(&l, tcp("10.0.1.1", "10.0.2.1", 81)),
        Verdict::WouldDeny,
        Reason::NoConduit,
        None,
    );
}

#[test]
fn mode_defaults_apply_when_the_zone_has_none_and_zone_mode_overrides() {
    let p = ab("defaults: { mode: monitor }", "[]").replace(
        "  - name: c\n    security_level: 2\n",
        "  - name: c\n    security_level: 2\n    mode: enforce\n",
    );
    let l = load(&p);
    assert_eq!(
        judge(&l, tcp("10.0.1.1", "10.0.2.1", 80)).verdict,
        Verdict::WouldDeny
    );
    assert_eq!(
        judge(&l, tcp("10.0.1.1", "10.0.3.1", 80)).verdict,
        Verdict::Deny
    );
    // Into unknown: defaults.mode.
    assert_eq!(
        judge(&l, tcp("10.0.1.1", "192.0.2.1", 80)).verdict,
        Verdict::WouldDeny
    );
}

#[test]
fn mode_into_unknown_follows_defaults_enforce() {
    let p = ab("", "[]").replace(
        "  - name: a\n    security_level: 2\n",
        "  - name: a\n    security_level: 2\n    mode: monitor\n",
    );
    let l = load(&p);
    assert_eq!(
        judge(&l, tcp("10.0.1.1", "192.0.2.1", 80)).verdict,
        Verdict::Deny
    );
    assert_eq!(
        judge(&l, tcp("192.0.2.1", "10.0.1.1", 80)).verdict,
        Verdict::WouldDeny
    );
}

#[test]
fn mode_values_are_checked() {
    let p = ab("defaults: { mode: monitr }", "[]");
    let e = one_error(&p, "monitr", "mode");
    assert!(e.message.contains("monitor"), "suggests: {e:?}");
    let p = ab("", "[]").replace(
        "  - name: a\n    security_level: 2\n",
        "  - name: a\n    security_level: 2\n    mode: audit\n",
    );
    one_error(&p, "mode: audit", "mode");
}

// ---------------------------------------------------------------------------------------------
// Defaults keys of the example: fragments, log, failsafe, l2

#[test]
fn defaults_absent_are_enforce_intra_allow_fragments_deny_log_deny_l2_deny() {
    let l = load(&ab("", "[]"));
    let o = judge(&l, tcp("10.0.1.1", "10.0.2.1", 80));
    expect(&o, Verdict::Deny, Reason::NoConduit, None);
    assert!(o.log, "denials are logged by default");
    expect(
        &judge(&l, tcp("10.0.1.1", "10.0.1.2", 80)),
        Verdict::Allow,
        Reason::IntraZone,
        None,
    );
    expect(
        &judge(&l, fragment(tcp("10.0.1.1", "10.0.1.2", 80))),
        Verdict::Deny,
        Reason::Fragment,
        None,
    );
    expect(
        &judge(&l, l2(0x88cc)),
        Verdict::Deny,
        Reason::L2Denied,
        None,
    );
}

#[test]
fn fragments_deny_drops_non_first_fragments_even_on_an_open_conduit() {
    let l = load(&ab(
        "defaults: { fragments: deny }",
        "- name: open\n  from: a\n  to: b\n  rules:\n    - { proto: any }\n",
    ));
    let o = judge(&l, fragment(udp("10.0.1.1", "10.0.2.1", 0)));
    expect(&o, Verdict::Deny, Reason::Fragment, None);
    // The first fragment is a normal packet.
    allowed_by(&judge(&l, udp("10.0.1.1", "10.0.2.1", 53)), "open");
}

#[test]
fn fragments_allow_passes_non_first_fragments() {
    let l = load(&ab("defaults: { fragments: allow }", "[]"));
    let o = judge(&l, fragment(udp("10.0.1.1", "10.0.2.1", 0)));
    expect(&o, Verdict::Allow, Reason::Fragment, None);
    let o = judge(&l, fragment(udp("fd00:1::1", "fd00:2::1", 0)));
    expect(&o, Verdict::Allow, Reason::Fragment, None);
}

#[test]
fn fragments_values_are_checked() {
    let p = ab("defaults: { fragments: reassemble }", "[]");
    one_error(&p, "reassemble", "fragments");
}

#[test]
fn log_deny_logs_denials_but_not_allowed_traffic() {
    let l = load(&ab(
        "defaults: { log: deny }",
        "- name: ok\n  from: a\n  to: b\n  rules:\n    - { proto: tcp, ports: [80] }\n",
    ));
    assert!(judge(&l, tcp("10.0.1.1", "10.0.2.1", 81)).log);
    assert!(!judge(&l, tcp("10.0.1.1", "10.0.2.1", 80)).log);
}

#[test]
fn log_none_logs_nothing() {
    let l = load(&ab(
        "defaults: { log: none }",
        "- name: ok\n  from: a\n  to: b\n  rules:\n    - { proto: tcp, ports: [80] }\n",
    ));
    assert!(!judge(&l, tcp("10.0.1.1", "10.0.2.1", 81)).log);
    assert!(!judge(&l, tcp("10.0.1.1", "10.0.2.1", 80)).log);
}

#[test]
fn log_all_logs_allowed_conduit_traffic_and_denials() {
    let l = load(&ab(
        "defaults: { log: all }",
        "- name: ok\n  from: a\n  to: b\n  rules:\n    - { proto: tcp, ports: [80] }\n",
    ));
    assert!(judge(&l, tcp("10.0.1.1", "10.0.2.1", 80)).log);
    assert!(judge(&l, tcp("10.0.1.1", "10.0.2.1", 81)).log);
}

#[test]
fn log_all_logs_allowed_intra_zone_traffic() {
    let l = load(&ab("defaults: { log: all }", "[]"));
    let o = judge(&l, tcp("10.0.1.1", "10.0.1.2", 80));
    expect(&o, Verdict::Allow, Reason::IntraZone, None);
    assert!(o.log, "log: all means allowed traffic too");
}

#[test]
fn log_of_a_conduit_overrides_defaults() {
    let l = load(&ab(
        "defaults: { log: none }",
        r#"
        - name: loud
          from: a
          to: b
          log: all
          rules:
            - { proto: tcp, ports: [80] }
        - name: quiet
          from: a
          to: c
          log: none
          rules:
            - { proto: tcp, ports: [80] }
        "#,
    ));
    assert!(judge(&l, tcp("10.0.1.1", "10.0.2.1", 80)).log);
    assert!(!judge(&l, tcp("10.0.1.1", "10.0.3.1", 80)).log);
    let l = load(&ab(
        "defaults: { log: all }",
        "- name: quiet\n  from: a\n  to: c\n  log: none\n  rules:\n    - { proto: tcp, ports: [80] }\n",
    ));
    assert!(!judge(&l, tcp("10.0.1.1", "10.0.3.1", 80)).log);
}

#[test]
fn log_values_are_checked() {
    let p = ab("defaults: { log: everything }", "[]");
    one_error(&p, "everything", "log");
    let p = ab(
        "",
        "- name: x\n  from: a\n  to: b\n  log: verbose\n  rules:\n    - { proto: tcp, ports: [1] }\n",
    );
    one_error(&p, "verbose", "log");
}

/// The gateway's own addresses on failsafe ports pass; a slot without failsafe entries tells
/// the datapath to skip the lookup (a gateway without addresses has none), one with entries
/// does not.
#[test]
fn failsafe_reaches_the_gateway_and_the_slot_flag_follows_its_entries() {
    let text = ab(
        "defaults:\n  failsafe:\n    - { proto: tcp, ports: [22] }\n",
        "[]",
    );
    let l = load(&text);
    assert_ne!(l.compiled.settings.skip & SKIP_FAILSAFE, 0);
    let gw: IpAddr = "10.0.1.254".parse().unwrap();
    let with = l.compiled.clone().with_failsafe(&[gw]).unwrap();
    assert_eq!(with.settings.skip & SKIP_FAILSAFE, 0);
    let d = decide(&with, with.slot, &tcp("10.0.2.1", "10.0.1.254", 22), 0);
    assert_eq!((d.verdict, d.reason), (Verdict::Allow, Reason::Failsafe));
    let d = decide(&with, with.slot, &tcp("10.0.2.1", "10.0.1.254", 23), 0);
    assert_eq!((d.verdict, d.reason), (Verdict::Deny, Reason::NoConduit));
    let without = with.with_failsafe(&[]).unwrap();
    assert_ne!(without.settings.skip & SKIP_FAILSAFE, 0);
    let d = decide(
        &without,
        without.slot,
        &tcp("10.0.2.1", "10.0.1.254", 22),
        0,
    );
    assert_eq!(d.reason, Reason::NoConduit);
}

/// A policy without MAC bindings lets the datapath skip the MAC lookups; one with bindings
/// does not, and they are enforced.
#[test]
fn the_slot_flag_for_mac_bindings_follows_the_policy() {
    let l = load(&ab("", "[]"));
    assert_ne!(l.compiled.settings.skip & SKIP_MACS, 0);
    let bound = ab("", "[]").replace(
        "{ name: a1, ip: 10.0.1.1 }",
        "{ name: a1, ip: 10.0.1.1, mac: \"02:00:00:00:01:01\" }",
    );
    let l = load(&bound);
    assert_eq!(l.compiled.settings.skip & SKIP_MACS, 0);
    // The binding is enforced: a1's address from another MAC is spoofed.
    let mut p = tcp("10.0.1.1", "10.0.2.1", 80);
    p.src_mac = [2, 0, 0, 0, 9, 9];
    assert_eq!(decide(&l.compiled, 0, &p, 0).reason, Reason::Spoofed);
}

#[test]
fn failsafe_entries_are_tcp_or_udp_with_ports() {
    let ok = ab(
        "defaults:\n  failsafe:\n    - { proto: tcp, ports: [22] }\n    - { proto: udp, ports: [\"67-68\"] }\n",
        "[]",
    );
    let l = load(&ok);
    assert_eq!(l.policy.defaults.failsafe.len(), 2);
    let p = ab("defaults:\n  failsafe:\n    - { proto: tcp }\n", "[]");
    one_error(&p, "proto: tcp", "ports");
    let p = ab("defaults:\n  failsafe:\n    - { proto: any }\n", "[]");
    one_error(&p, "proto: any", "failsafe");
    let p = ab(
        "defaults:\n  failsafe:\n    - { proto: tcp, ports: [0] }\n",
        "[]",
    );
    one_error(&p, "ports: [0]", "out of range");
}

#[test]
fn l2_default_deny_with_allowed_ethertypes_by_name_and_number() {
    let l = load(&ab(
        "defaults:\n  l2:\n    default: deny\n    allow_ethertypes: [lldp, 0x88f7, 34962]\n",
        "[]",
    ));
    expect(
        &judge(&l, l2(0x88cc)),
        Verdict::Allow,
        Reason::L2Allowed,
        None,
    );
    expect(
        &judge(&l, l2(0x88f7)),
        Verdict::Allow,
        Reason::L2Allowed,
        None,
    );
    // 34962 = 0x8892 (PROFINET), in decimal.
    expect(
        &judge(&l, l2(0x8892)),
        Verdict::Allow,
        Reason::L2Allowed,
        None,
    );
    expect(
        &judge(&l, l2(0x88b8)),
        Verdict::Deny,
        Reason::L2Denied,
        None,
    );
}

#[test]
fn l2_default_allow_passes_every_other_ethertype() {
    let l = load(&ab("defaults:\n  l2:\n    default: allow\n", "[]"));
    expect(
        &judge(&l, l2(0x88b8)),
        Verdict::Allow,
        Reason::L2Allowed,
        None,
    );
    expect(
        &judge(&l, l2(0x9000)),
        Verdict::Allow,
        Reason::L2Allowed,
        None,
    );
}

#[test]
fn l2_values_are_checked() {
    let p = ab("defaults:\n  l2:\n    default: maybe\n", "[]");
    one_error(&p, "maybe", "default");
    let p = ab(
        "defaults:\n  l2:\n    allow_ethertypes: [lldp, frobnet]\n",
        "[]",
    );
    one_error(&p, "frobnet", "EtherType");
    let p = ab("defaults:\n  l2:\n    allow_ethertypes: [0x0500]\n", "[]");
    one_error(&p, "0x0500", "out of range");
    // IPv4 is governed by conduits, not by l2.
    let p = ab("defaults:\n  l2:\n    allow_ethertypes: [0x0800]\n", "[]");
    one_error(&p, "0x0800", "EtherType");
}

/// Neighbour discovery passes without a conduit, as neighbour discovery only: hop limit 255
/// (sent on the link) to a link-local address or a link-scope multicast group.
#[test]
fn neighbor_discovery_passes_without_conduit() {
    let l = load(&ab("", "[]"));
    let nd = |dst: &str, ty: u8, hop_limit: u8| Packet {
        hop_limit,
        ..icmp6("fd00:1::1", dst, ty)
    };
    for ty in 133..=137 {
        for dst in ["fe80::2", "ff02::1", "ff02::2", "ff02::1:ff00:1"] {
            expect(
                &judge(&l, nd(dst, ty, 255)),
                Verdict::Allow,
                Reason::NeighborDiscovery,
                None,
            );
        }
        // Routed (hop limit below 255), or addressed across zones: judged as ICMPv6.
        no_conduit(&judge(&l, nd("ff02::1", ty, 254)));
        no_conduit(&judge(&l, nd("fe80::2", ty, 64)));
        no_conduit(&judge(&l, nd("fd00:2::1", ty, 255)));
        no_conduit(&judge(&l, nd("ff05::1", ty, 255)));
    }
    no_conduit(&judge(&l, nd("ff02::1", 128, 255)));
    no_conduit(&judge(&l, nd("ff02::1", 138, 255)));
}

// ---------------------------------------------------------------------------------------------
// Strictness: unknown keys

#[test]
fn strict_unknown_keys_are_errors_at_every_level() {
    let cases: &[(&str, &str, &str)] = &[
        // (replace, with, the unknown key)
        ("site: test\n", "site: test\nsitee: x\n", "sitee"),
        (
            "zones:\n",
            "defaults:\n  fragment: deny\nzones:\n",
            "fragment",
        ),
        (
            "zones:\n",
            "defaults:\n  l2:\n    allow_ethertype: [lldp]\nzones:\n",
            "allow_ethertype",
        ),
        (
            "zones:\n",
            "defaults:\n  failsafe:\n    - { proto: tcp, port: [22] }\nzones:\n",
            "port",
        ),
        (
            "  - name: c\n    security_level: 2\n",
            "  - name: c\n    security_level: 2\n    sl: 3\n",
            "sl",
        ),
        (
            "{ name: c1, ip: 10.0.3.1 }",
            "{ name: c1, ip: 10.0.3.1, mca: \"02:00:00:00:03:01\" }",
            "mca",
        ),
        ("  to: b\n", "  to: b\n  destination: [b1]\n", "destination"),
        ("ports: [502]", "prots: [502]", "prots"),
    ];
    let base = ab(
        "",
        "- name: x\n  from: a\n  to: b\n  rules:\n    - { proto: tcp, ports: [502] }\n",
    );
    load(&base);
    for (from, to, key) in cases {
        assert!(base.contains(from), "test bug: {from:?}");
        let p = base.replacen(from, to, 1);
        let errs = errors_of(&p);
        assert_eq!(errs.len(), 1, "{key}: {errs:#?}\n{p}");
        let e = &errs[0];
        assert!(
            e.message.contains(&format!("unknown key `{key}`")),
            "{key}: {e:?}"
        );
        let line = p
            .lines()
            .position(|l| l.contains(&format!("{key}:")))
            .unwrap()
            + 1;
        assert_eq!(e.pos.line, line, "{key}: {e:?}\n{p}");
    }
}

#[test]
fn strict_misspelt_prots_is_an_error_not_every_port() {
    let p = ab(
        "",
        "- name: x\n  from: a\n  to: b\n  rules:\n    - { proto: tcp, prots: [502] }\n",
    );
    let e = one_error(&p, "prots", "unknown key `prots`");
    assert!(e.message.contains("did you mean `ports`"), "{e:?}");
    // The column points at the key itself.
    let line = p.lines().nth(e.pos.line - 1).unwrap();
    assert_eq!(line.find("prots").unwrap() + 1, e.pos.column, "{e:?}");
}

#[test]
fn strict_from_and_to_must_name_a_zone() {
    let p = ab(
        "",
        "- name: x\n  from: []\n  to: b\n  rules:\n    - { proto: tcp, ports: [1] }\n",
    );
    one_error(&p, "from: []", "names no zone");
}

#[test]
fn policy_with_crlf_line_endings_is_read_like_lf() {
    let p = ab(
        "",
        "- name: x\n  from: a\n  to: b\n  rules:\n    - { proto: tcp, ports: [502] }\n",
    );
    let l = load(&p.replace('\n', "\r\n"));
    allowed_by(&judge(&l, tcp("10.0.1.1", "10.0.2.1", 502)), "x");
    let bad = p.replace("ports: [502]", "prots: [502]");
    let errs = errors_of(&bad.replace('\n', "\r\n"));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].pos.line, line_of(&bad, "prots"));
}

#[test]
fn policy_starting_with_a_byte_order_mark_is_valid_yaml() {
    // YAML allows a BOM at the start of a stream; Windows editors write one.
    let p = format!("\u{feff}{}", ab("", "[]"));
    let (l, d) = load_bytes(p.as_bytes(), 0);
    assert!(l.is_some(), "{d}");
}

#[test]
fn strict_duplicate_keys_are_errors() {
    let p = ab(
        "",
        "- name: x\n  from: a\n  to: b\n  to: c\n  rules:\n    - { proto: tcp, ports: [1] }\n",
    );
    one_error(&p, "to: c", "duplicate key `to`");
}

// ---------------------------------------------------------------------------------------------
// Strictness: names

fn with_zone_named(name: &str) -> String {
    ab("", "[]").replace("- name: c\n", &format!("- name: {name}\n"))
}

#[test]
fn strict_names_valid_forms() {
    for n in ["c", "1st-floor", "line_2", "z-", &"x".repeat(63)] {
        let l = load(&with_zone_named(n));
        assert!(l.policy.zone(n).is_some(), "{n}");
    }
}

#[test]
fn strict_zone_names_invalid_forms() {
    for (n, frag) in [
        ("Control", "try \"control\""),
        ("-dash", "not a valid zone name"),
        ("_under", "not a valid zone name"),
        ("dot.ted", "not a valid zone name"),
        ("\"sp ace\"", "not a valid zone name"),
        ("\"\"", "empty"),
    ] {
        let p = with_zone_named(n);
        one_error(&p, &format!("- name: {n}"), frag);
    }
    let long = "x".repeat(64);
    one_error(&with_zone_named(&long), &long, "at most 63");
}

#[test]
fn strict_asset_and_conduit_names_are_checked() {
    let p = ab("", "[]").replace("name: c1,", "name: C1,");
    one_error(&p, "C1", "not a valid asset name");
    let p = ab(
        "",
        "- name: A-to-B\n  from: a\n  to: b\n  rules:\n    - { proto: tcp, ports: [1] }\n",
    );
    one_error(&p, "A-to-B", "not a valid conduit name");
    let long = "y".repeat(64);
    let p = ab(
        "",
        &format!(
            "- name: {long}\n  from: a\n  to: b\n  rules:\n    - {{ proto: tcp, ports: [1] }}\n"
        ),
    );
    one_error(&p, &long, "at most 63");
}

#[test]
fn strict_zone_names_are_unique() {
    let p = with_zone_named("a");
    let errs = errors_of(&p);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].message.contains("defined twice"), "{errs:?}");
    // The second definition (zone c renamed a) is the one reported.
    let second = p
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == "- name: a")
        .map(|(i, _)| i + 1)
        .nth(1)
        .unwrap();
    assert_eq!(errs[0].pos.line, second);
}

#[test]
fn strict_asset_names_are_unique_across_zones() {
    let p = ab("", "[]").replace("name: c1,", "name: a1,");
    one_error(&p, "10.0.3.1", "asset \"a1\" is defined twice");
}

#[test]
fn strict_conduit_names_are_unique() {
    let p = ab(
        "",
        r#"
        - name: dup
          from: a
          to: b
          rules:
            - { proto: tcp, ports: [1] }
        - name: dup
          from: a
          to: c
          rules:
            - { proto: tcp, ports: [1] }
        "#,
    );
    let errs = errors_of(&p);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].message.contains("conduit \"dup\" is defined twice"));
    assert_eq!(errs[0].pos.line, line_of(&p, "to: c") - 2);
}

#[test]
fn strict_names_are_unique_per_kind_only() {
    // A zone, an asset and a conduit may share a name.
    let p = ab(
        "",
        "- name: c\n  from: a\n  to: c\n  rules:\n    - { proto: tcp, ports: [1] }\n",
    )
    .replace("name: c1,", "name: c,");
    let l = load(&p);
    allowed_by(&judge(&l, tcp("10.0.1.1", "10.0.3.1", 1)), "c");
}

#[test]
fn strict_unknown_is_a_reserved_zone_name() {
    let p = with_zone_named("unknown");
    one_error(&p, "- name: unknown", "reserved");
}

// ---------------------------------------------------------------------------------------------
// Strictness: references

#[test]
fn strict_zone_references_must_exist() {
    let p = ab(
        "",
        "- name: x\n  from: aa\n  to: b\n  rules:\n    - { proto: tcp, ports: [1] }\n",
    );
    let e = one_error(&p, "from: aa", "unknown zone \"aa\"");
    assert!(e.message.contains("`from`"), "{e:?}");
    let p = ab(
        "",
        "- name: x\n  from: a\n  to: [b, contrl]\n  rules:\n    - { proto: tcp, ports: [1] }\n",
    );
    let e = one_error(&p, "contrl", "unknown zone \"contrl\"");
    assert!(e.message.contains("`to`"), "{e:?}");
}

#[test]
fn strict_asset_references_must_exist() {
    let p = ab(
        "",
        "- name: x\n  from: a\n  to: b\n  sources: [a9]\n  rules:\n    - { proto: tcp, ports: [1] }\n",
    );
    one_error(&p, "a9", "unknown asset \"a9\"");
    let p = ab(
        "",
        "- name: x\n  from: a\n  to: b\n  destinations: [b1, bb2]\n  rules:\n    - { proto: tcp, ports: [1] }\n",
    );
    let e = one_error(&p, "bb2", "unknown asset \"bb2\"");
    assert!(e.message.contains("b2"), "suggests b2: {e:?}");
}

#[test]
fn strict_sources_must_belong_to_from_zone() {
    let p = ab(
        "",
        "- name: x\n  from: a\n  to: b\n  sources: [a1, c1]\n  rules:\n    - { proto: tcp, ports: [1] }\n",
    );
    let e = one_error(&p, "sources", "\"c1\"");
    assert!(e.message.contains("zone \"c\""), "{e:?}");
    // With c in `from`, the same sources are fine.
    let p = p.replace("from: a\n", "from: [a, c]\n");
    let l = load(&p);
    allowed_by(&judge(&l, tcp("10.0.3.1", "10.0.2.1", 1)), "x");
    no_conduit(&judge(&l, tcp("10.0.1.2", "10.0.2.1", 1)));
}

#[test]
fn strict_destinations_must_belong_to_to_zone() {
    let p = ab(
        "",
        "- name: x\n  from: a\n  to: b\n  destinations: [a2]\n  rules:\n    - { proto: tcp, ports: [1] }\n",
    );
    let e = one_error(&p, "destinations", "\"a2\"");
    assert!(e.message.contains("`to`"), "{e:?}");
}

// ---------------------------------------------------------------------------------------------
// Strictness: values out of range

#[test]
fn strict_security_level_must_be_1_to_4() {
    for bad in ["0", "5", "high", "-1"] {
        let p = ab("", "[]").replacen("security_level: 2", &format!("security_level: {bad}"), 1);
        one_error(&p, &format!("security_level: {bad}"), "security_level");
    }
    for good in ["1", "4"] {
        let p = ab("", "[]").replacen("security_level: 2", &format!("security_level: {good}"), 1);
        load(&p);
    }
    let p = ab(
        "",
        "- name: x\n  from: a\n  to: b\n  security_level: 5\n  rules:\n    - { proto: tcp, ports: [1] }\n",
    );
    one_error(&p, "security_level: 5", "out of range");
}

#[test]
fn strict_ports_must_be_1_to_65535() {
    for (bad, frag) in [
        ("0", "out of range"),
        ("65536", "out of range"),
        ("http", "not a port"),
        ("\"10-5\"", "backwards"),
        ("\"0-10\"", "out of range"),
        ("\"100-70000\"", "out of range"),
        ("\"5-\"", "not a port"),
    ] {
        let p = ab(
            "",
            &format!(
                "- name: x\n  from: a\n  to: b\n  rules:\n    - {{ proto: tcp, ports: [80, {bad}] }}\n"
            ),
        );
        one_error(&p, "ports:", frag);
    }
    let p = ab(
        "",
        "- name: x\n  from: a\n  to: b\n  rules:\n    - { proto: udp, ports: [1, 65535, \"5-5\"] }\n",
    );
    let l = load(&p);
    allowed_by(&judge(&l, udp("10.0.1.1", "10.0.2.1", 65535)), "x");
    allowed_by(&judge(&l, udp("10.0.1.1", "10.0.2.1", 5)), "x");
}

#[test]
fn strict_bad_mac_is_an_error() {
    for bad in [
        "zz",
        "02:00:00:00:03",
        "02:00:00:00:03:01:07",
        "02:00:00:00:03:0g",
        "01:00:5e:00:00:01",
        "ff:ff:ff:ff:ff:ff",
        "00:00:00:00:00:00",
        "2:0:0:0:3:1",
    ] {
        let p = ab("", "[]").replace(
            "{ name: c1, ip: 10.0.3.1 }",
            &format!("{{ name: c1, ip: 10.0.3.1, mac: \"{bad}\" }}"),
        );
        one_error(&p, "name: c1", "MAC");
    }
    // Good: lower and upper case hex, and dashes.
    for good in [
        "02:00:00:00:03:01",
        "02:AB:00:00:03:01",
        "02-00-00-00-03-01",
    ] {
        let p = ab("", "[]").replace(
            "{ name: c1, ip: 10.0.3.1 }",
            &format!("{{ name: c1, ip: 10.0.3.1, mac: \"{good}\" }}"),
        );
        load(&p);
    }
}

#[test]
fn strict_mac_goes_with_ip_not_cidr() {
    let p = ab("", "[]").replace(
        "{ name: c1, ip: 10.0.3.1 }",
        "{ name: c1, cidr: 10.0.3.0/24, mac: \"02:00:00:00:03:01\" }",
    );
    one_error(&p, "name: c1", "mac");
}

#[test]
fn strict_two_assets_may_not_bind_the_same_mac() {
    let p = ab("", "[]")
        .replace(
            "{ name: a1, ip: 10.0.1.1 }",
            "{ name: a1, ip: 10.0.1.1, mac: \"02:00:00:00:00:01\" }",
        )
        .replace(
            "{ name: c1, ip: 10.0.3.1 }",
            "{ name: c1, ip: 10.0.3.1, mac: \"02:00:00:00:00:01\" }",
        );
    one_error(&p, "name: c1", "MAC");
}

#[test]
fn strict_bad_cidr_is_an_error() {
    for (bad, frag) in [
        ("10.0.3.0", "not a CIDR"),
        ("10.0.3.0/33", "prefix length"),
        ("10.0.3.300/24", "not an IP address"),
        ("\"fd00::/129\"", "prefix length"),
        ("10.0.3.1/24", "host bits"),
        ("10.0.3.0/x", "prefix length"),
    ] {
        let p = ab("", "[]").replace(
            "{ name: c1, ip: 10.0.3.1 }",
            &format!("{{ name: c1, cidr: {bad} }}"),
        );
        one_error(&p, "name: c1", frag);
    }
}

#[test]
fn strict_bad_ip_and_address_kind_are_errors() {
    let p = ab("", "[]").replace("ip: 10.0.3.1", "ip: 10.0.3.256");
    one_error(&p, "10.0.3.256", "not an IP address");
    let p = ab("", "[]").replace("ip: 10.0.3.1", "ip: 10.0.3.1, cidr: 10.0.3.0/24");
    one_error(&p, "name: c1", "not both");
    let p = ab("", "[]").replace("{ name: c1, ip: 10.0.3.1 }", "{ name: c1 }");
    one_error(&p, "name: c1", "needs an address");
}

#[test]
fn strict_icmp_type_must_be_0_to_255() {
    for bad in ["256", "-1", "1000"] {
        let p = ab(
            "",
            &format!(
                "- name: x\n  from: a\n  to: b\n  rules:\n    - {{ proto: icmp, icmp_types: [8, {bad}] }}\n"
            ),
        );
        one_error(&p, "icmp_types", "ICMP");
    }
    let p = ab(
        "",
        "- name: x\n  from: a\n  to: b\n  rules:\n    - { proto: icmp, icmp_types: [0, 255] }\n",
    );
    let l = load(&p);
    allowed_by(&judge(&l, icmp("10.0.1.1", "10.0.2.1", 255)), "x");
    allowed_by(&judge(&l, icmp("10.0.1.1", "10.0.2.1", 0)), "x");
    no_conduit(&judge(&l, icmp("10.0.1.1", "10.0.2.1", 254)));
}

#[test]
fn strict_version_must_be_1() {
    let p = ab("", "[]").replace("version: 1", "version: 2");
    one_error(&p, "version: 2", "version");
}

#[test]
fn strict_required_keys() {
    let p = ab("", "[]").replace("site: test\n", "");
    one_error(&p, "version: 1", "site");
    let p = ab("", "[]").replace("conduits: []\n", "");
    let errs = errors_of(&p);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].message.contains("conduits"), "{errs:?}");
    let p = ab("", "[]").replace(
        "    security_level: 2\n    assets:\n      - { name: c1",
        "    assets:\n      - { name: c1",
    );
    one_error(&p, "- name: c", "security_level");
}

// ---------------------------------------------------------------------------------------------
// Every error of the file, not just the first

#[test]
fn all_errors_of_a_file_are_reported() {
    let p = ab(
        "",
        r#"
        - name: x
          from: a
          to: nowhere
          rules:
            - { proto: tcp, ports: [0] }
        - name: y
          from: a
          to: b
          rules:
            - { proto: udp, prots: [53] }
        "#,
    )
    .replacen("security_level: 2", "security_level: 7", 1)
    .replace(
        "{ name: c1, ip: 10.0.3.1 }",
        "{ name: c1, ip: 10.0.3.1, mac: \"nope\" }",
    );
    let errs = errors_of(&p);
    let got: Vec<(usize, &str)> = errs
        .iter()
        .map(|e| (e.pos.line, e.message.as_str()))
        .collect();
    assert_eq!(errs.len(), 5, "{got:#?}");
    let want = [
        (line_of(&p, "security_level: 7"), "security_level"),
        (line_of(&p, "nope"), "MAC"),
        (line_of(&p, "nowhere"), "unknown zone \"nowhere\""),
        (line_of(&p, "ports: [0]"), "out of range"),
        (line_of(&p, "prots"), "unknown key `prots`"),
    ];
    for ((line, msg), (wl, wm)) in got.iter().zip(want) {
        assert_eq!(*line, wl, "{got:#?}");
        assert!(msg.contains(wm), "{msg:?} lacks {wm:?}");
    }
}

#[test]
fn all_errors_reported_by_validate_str_too() {
    let p = ab("", "[]")
        .replace("ip: 10.0.1.1", "ip: 10.0.1.x")
        .replace("ip: 10.0.2.1", "ip: 10.0.2.x")
        .replace("ip: 10.0.3.1", "ip: 10.0.3.x");
    let (pol, d) = validate_str(&p);
    assert!(pol.is_none());
    let lines: Vec<usize> = d.errors().map(|e| e.pos.line).collect();
    assert_eq!(
        lines,
        vec![
            line_of(&p, "10.0.1.x"),
            line_of(&p, "10.0.2.x"),
            line_of(&p, "10.0.3.x")
        ]
    );
}

#[test]
fn all_errors_without_cascades_from_a_zone_with_an_unknown_key() {
    // One mistake (a misspelt key in zone a) must give one error, not three: the conduit's
    // `from: a` and `sources: [a1]` are right.
    let p = ab(
        "",
        "- name: x\n  from: a\n  to: b\n  sources: [a1]\n  rules:\n    - { proto: tcp, ports: [1] }\n",
    )
    .replacen(
        "  - name: a\n    security_level: 2\n",
        "  - name: a\n    security_level: 2\n    descripton: typo\n",
        1,
    );
    let errs = errors_of(&p);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].message.contains("unknown key `descripton`"));
}

#[test]
fn loaded_is_some_with_warnings_and_none_with_errors() {
    // An SL 3 zone with an unbound asset: a warning, not an error.
    let p = ab("", "[]").replacen("security_level: 2", "security_level: 3", 1);
    let (l, d) = load_bytes(p.as_bytes(), 0);
    assert!(l.is_some());
    assert!(!d.has_errors());
    assert!(d.warnings().count() > 0);
    let (l, d) = load_bytes(b"version: 1\nsite: t\nzones: []\nconduits: []\n", 0);
    assert!(l.is_none());
    assert!(d.has_errors());
}

// ---------------------------------------------------------------------------------------------
// Lints [L1]..[L7]

/// A policy with no warning; each lint test changes one thing in it.
fn lint_base() -> String {
    y(r#"
        version: 1
        site: lint
        zones:
          - name: low
            security_level: 2
            assets:
              - { name: l1, ip: 10.0.1.1 }
          - name: high
            security_level: 3
            assets:
              - { name: h1, ip: 10.0.3.1, mac: "02:00:00:00:03:01" }
        conduits:
          - name: low-to-high
            from: low
            to: high
            security_level: 3
            rules:
              - { proto: tcp, ports: [4840] }
    "#)
}

/// Exactly one warning, with `code`, on the line containing `needle`.
fn one_warning(text: &str, code: &str, needle: &str) {
    let w = warnings_of(text);
    assert_eq!(w.len(), 1, "expected one warning, got {w:#?}\n{text}");
    assert!(
        w[0].message.starts_with(code),
        "{:?} should start with {code}",
        w[0].message
    );
    assert_eq!(w[0].pos.line, line_of(text, needle), "{w:?}\n{text}");
}

#[test]
fn lint_base_policy_has_no_warning() {
    assert_eq!(warnings_of(&lint_base()), vec![]);
}

#[test]
fn lint_l1_wide_open_rule_into_high_sl_zone() {
    let p = lint_base().replace("{ proto: tcp, ports: [4840] }", "{ proto: tcp }");
    one_warning(&p, "[L1]", "{ proto: tcp }");
    let p = lint_base().replace("{ proto: tcp, ports: [4840] }", "{ proto: any }");
    one_warning(&p, "[L1]", "{ proto: any }");
    let p = lint_base().replace("ports: [4840]", "ports: [\"1-65535\"]");
    one_warning(&p, "[L1]", "1-65535");
    // Into an SL 2 zone, a wide rule is not flagged.
    let p = lint_base()
        .replace("from: low\n    to: high", "from: high\n    to: low")
        .replace("{ proto: tcp, ports: [4840] }", "{ proto: tcp }");
    assert_eq!(warnings_of(&p), vec![]);
}

#[test]
fn lint_l2_assets_of_high_sl_zones_must_be_mac_bound() {
    let p = lint_base().replace(", mac: \"02:00:00:00:03:01\"", "");
    one_warning(&p, "[L2]", "name: h1");
    let p = lint_base().replace(
        "{ name: h1, ip: 10.0.3.1, mac: \"02:00:00:00:03:01\" }",
        "{ name: h1, ip: 10.0.3.1, mac: \"02:00:00:00:03:01\" }\n      - { name: hnet, cidr: 10.0.4.0/24 }",
    );
    one_warning(&p, "[L2]", "hnet");
    // An unbound asset in the SL 2 zone is fine (the base has one).
}

#[test]
fn lint_l3_conduit_sl_below_its_strongest_zone() {
    let p = lint_base().replace(
        "    security_level: 3\n    rules",
        "    security_level: 2 # conduit\n    rules",
    );
    one_warning(&p, "[L3]", "# conduit");
    // Higher than its zones is fine.
    let p = lint_base().replace(
        "    security_level: 3\n    rules",
        "    security_level: 4\n    rules",
    );
    assert_eq!(warnings_of(&p), vec![]);
}

#[test]
fn lint_l4_zones_two_levels_apart_need_a_dmz() {
    let p = lint_base().replacen("security_level: 2", "security_level: 1", 1);
    one_warning(&p, "[L4]", "name: low-to-high");
    // SL 2 -> SL 3 (the base) is fine.
}

#[test]
fn lint_l5_bidirectional_into_high_sl_zone() {
    let p = lint_base().replace("    rules:", "    bidirectional: true\n    rules:");
    one_warning(&p, "[L5]", "bidirectional");
    // Between two SL 2 zones, bidirectional is not flagged.
    let p = lint_base()
        .replace("security_level: 3", "security_level: 2")
        .replace("    rules:", "    bidirectional: true\n    rules:");
    assert_eq!(warnings_of(&p), vec![]);
}

#[test]
fn lint_l6_monitor_mode_on_sl4_zone() {
    let p = lint_base()
        .replace(
            "security_level: 3\n    rules",
            "security_level: 4\n    rules",
        )
        .replace(
            "security_level: 3\n    assets:",
            "security_level: 4\n    mode: monitor\n    assets:",
        );
    // Besides [L6], only the SL 2 -> SL 4 gap ([L4]).
    let w = warnings_of(&p);
    assert_eq!(w.len(), 2, "{w:#?}");
    let l6: Vec<_> = w.iter().filter(|w| w.message.starts_with("[L6]")).collect();
    assert_eq!(l6.len(), 1, "{w:#?}");
    assert_eq!(l6[0].pos.line, line_of(&p, "mode: monitor"));
    // The same SL 4 zone in enforce mode: no [L6].
    let p = p.replace("    mode: monitor\n", "");
    assert!(
        warnings_of(&p)
            .iter()
            .all(|w| !w.message.starts_with("[L6]"))
    );
    // Monitor on an SL 3 zone is not flagged.
    let p = lint_base().replace(
        "    assets:\n      - { name: h1",
        "    mode: monitor\n    assets:\n      - { name: h1",
    );
    assert_eq!(warnings_of(&p), vec![]);
}

#[test]
fn lint_l7_zone_without_assets_and_conduit_that_never_matches() {
    let p = lint_base().replace(
        "conduits:\n",
        "  - name: empty\n    security_level: 2\nconduits:\n",
    );
    one_warning(&p, "[L7]", "name: empty");
    let p = lint_base()
        .replace(
            "conduits:\n",
            "  - name: empty\n    security_level: 2\n    assets: []\nconduits:\n",
        )
        .replace("from: low\n", "from: empty\n");
    let w = warnings_of(&p);
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(w.iter().all(|w| w.message.starts_with("[L7]")), "{w:#?}");
    assert_eq!(w[0].pos.line, line_of(&p, "name: empty"));
    assert_eq!(w[1].pos.line, line_of(&p, "name: low-to-high"));
    assert!(w[1].message.contains("never match"), "{w:?}");
}

#[test]
fn lint_l7_shadowed_rule() {
    let p = lint_base().replace(
        "      - { proto: tcp, ports: [4840] }\n",
        "      - { proto: tcp, ports: [4840] }\n  - name: again\n    from: low\n    to: high\n    security_level: 3\n    rules:\n      - { proto: tcp, ports: [4840] }\n      - { proto: tcp, ports: [4841] }\n",
    );
    let w = warnings_of(&p);
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(w[0].message.starts_with("[L7]"), "{w:?}");
    assert!(w[0].message.contains("\"again\""), "{w:?}");
    let shadowed = p
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("ports: [4840]"))
        .map(|(i, _)| i + 1)
        .nth(1)
        .unwrap();
    assert_eq!(w[0].pos.line, shadowed);
}

#[test]
fn lints_do_not_fire_on_the_example_policies() {
    for path in example_policies() {
        let bytes = std::fs::read(&path).unwrap();
        let (l, d) = load_bytes(&bytes, 0);
        assert!(l.is_some(), "{}: {d}", path.display());
        let w: Vec<_> = d.warnings().collect();
        assert!(w.is_empty(), "{}: {w:#?}", path.display());
    }
}

#[test]
fn check_strict_passes_on_every_example_policy() {
    for path in example_policies() {
        let out = Command::new(env!("CARGO_BIN_EXE_conduit"))
            .arg("check")
            .arg(&path)
            .arg("--strict")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "no diagnostic expected");
    }
}
