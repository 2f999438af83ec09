//! The bypass corpus: frames crafted to slip past a parser. Each is denied in enforce mode
//! with the expected reason, by the kernel program, and the reference agrees.
use conduit_common::{Reason, Verdict};
use conduit_tests::reference::monotonic_ns;
use conduit_tests::{
    frames::{self, L4, V4Opts},
    kernel::{self, XDP_DROP},
    require_root,
};

/// office (10.0.0.0/24) may reach the PLC (10.1.0.10, MAC-bound) on tcp/502 only; so may
/// fd00::5 reach fd00:1::10. Fragments denied. HMI 10.0.0.20 is MAC-bound too.
const POLICY: &str = r#"
version: 1
site: bypass
defaults: { mode: enforce, fragments: deny }
zones:
  - name: office
    security_level: 1
    assets:
      - { name: lan, cidr: 10.0.0.0/24 }
      - { name: hmi, ip: 10.0.0.20, mac: "02:00:00:00:00:20" }
      - { name: ws6, ip: "fd00::5" }
  - name: plant
    security_level: 2
    assets:
      - { name: plc, ip: 10.1.0.10, mac: "02:00:00:01:00:10" }
      - { name: plc6, ip: "fd00:1::10" }
conduits:
  - name: office-to-plc
    from: office
    to: plant
    rules: [{ proto: tcp, ports: [502] }]
"#;

const SRC: [u8; 4] = [10, 0, 0, 5];
const PLC: [u8; 4] = [10, 1, 0, 10];
const HMI_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x20];
const PLC_MAC: [u8; 6] = [2, 0, 0, 1, 0, 0x10];
const SYN_502: L4 = L4::Tcp {
    sport: 40000,
    dport: 502,
    flags: 0x02,
};

fn v6(last: u8, net: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[3] = net;
    a[15] = last;
    a
}

/// Asserts that the kernel drops `frame` with `reason` and that the reference agrees.
fn denied(frame: &[u8], reason: Reason) {
    denied_by(POLICY, frame, reason);
}

/// [`denied`] under `policy`.
fn denied_by(policy: &str, frame: &[u8], reason: Reason) {
    let (mut k, mut r) = kernel::with_policy(policy);
    let (action, t) = k.run(frame);
    let want = r.judge(frame, monotonic_ns());
    assert_eq!(
        kernel::as_trace(&want, r.last_fast, t.seq),
        t,
        "kernel and reference disagree"
    );
    assert_eq!(action, XDP_DROP, "not dropped: {t:?}");
    assert_eq!(t.verdict, Verdict::Deny as u32);
    assert_eq!(Reason::try_from(t.reason), Ok(reason), "{t:?}");
}

/// The control case: the same frame, well formed, passes (so the denials above are about
/// the crafting, not about the policy).
#[test]
fn control_case_passes() {
    require_root();
    let (mut k, _) = kernel::with_policy(POLICY);
    assert_eq!(
        k.run(&frames::v4(frames::MAC_A, SRC, PLC, SYN_502))
            .1
            .reason,
        Reason::Conduit as u32
    );
    let mut f = frames::eth(frames::MAC_B, frames::MAC_A, &[0x88a8, 0x8100], 0x0800);
    f.extend(frames::ipv4(
        SRC,
        PLC,
        6,
        &SYN_502.bytes(),
        V4Opts {
            options: 8,
            ..Default::default()
        },
    ));
    assert_eq!(
        k.run(&f).1.reason,
        Reason::Conduit as u32,
        "two VLAN tags and IPv4 options are fine"
    );
    let f6 = frames::v6(frames::MAC_A, v6(5, 0), v6(0x10, 1), SYN_502);
    assert_eq!(k.run(&f6).1.reason, Reason::Conduit as u32);
}

#[test]
fn stacked_vlan_tags_beyond_two() {
    require_root();
    let mut f = frames::eth(
        frames::MAC_B,
        frames::MAC_A,
        &[0x88a8, 0x8100, 0x8100],
        0x0800,
    );
    f.extend(frames::ipv4(
        SRC,
        PLC,
        6,
        &SYN_502.bytes(),
        V4Opts::default(),
    ));
    denied(&f, Reason::Malformed);
}

#[test]
fn ipv4_options_hiding_the_ports() {
    require_root();
    // 8 bytes of options whose first bytes look like ports 40000 -> 502; the real TCP header
    // after the options goes to port 503, which no conduit allows.
    let tcp = L4::Tcp {
        sport: 40000,
        dport: 503,
        flags: 0x02,
    }
    .bytes();
    let mut ip = frames::ipv4(
        SRC,
        PLC,
        6,
        &tcp,
        V4Opts {
            options: 8,
            ..Default::default()
        },
    );
    ip[20..24].copy_from_slice(&[0x9c, 0x40, 0x01, 0xf6]);
    let mut f = frames::eth(frames::MAC_B, frames::MAC_A, &[], 0x0800);
    f.extend(ip);
    denied(&f, Reason::NoConduit);
}

#[test]
fn ipv4_ihl_below_five() {
    require_root();
    for ihl in 0..5u8 {
        let mut f = frames::v4(frames::MAC_A, SRC, PLC, SYN_502);
        f[14] = 0x40 | ihl;
        denied(&f, Reason::Malformed);
    }
}

#[test]
fn ipv4_total_length_larger_than_the_frame() {
    require_root();
    let mut f = frames::v4(frames::MAC_A, SRC, PLC, SYN_502);
    let claimed = (f.len() - 14 + 1) as u16;
    f[16..18].copy_from_slice(&claimed.to_be_bytes());
    denied(&f, Reason::Malformed);
}

#[test]
fn ipv6_extension_chain_longer_than_supported() {
    require_root();
    let mut f = frames::eth(frames::MAC_B, frames::MAC_A, &[], 0x86dd);
    let exts = [0u8, 60, 43, 60, 60];
    f.extend(frames::ipv6(
        v6(5, 0),
        v6(0x10, 1),
        &exts,
        6,
        &SYN_502.bytes(),
        0,
    ));
    denied(&f, Reason::Malformed);
    // Four are walked (and allowed through the conduit).
    let (mut k, _) = kernel::with_policy(POLICY);
    let mut ok = frames::eth(frames::MAC_B, frames::MAC_A, &[], 0x86dd);
    ok.extend(frames::ipv6(
        v6(5, 0),
        v6(0x10, 1),
        &exts[..4],
        6,
        &SYN_502.bytes(),
        0,
    ));
    assert_eq!(k.run(&ok).1.reason, Reason::Conduit as u32);
}

#[test]
fn first_fragment_too_short_for_the_ports() {
    require_root();
    // First fragment (MF set, offset 0) carrying only 2 bytes of the TCP header.
    let mut f = frames::eth(frames::MAC_B, frames::MAC_A, &[], 0x0800);
    f.extend(frames::ipv4(
        SRC,
        PLC,
        6,
        &SYN_502.bytes()[..2],
        V4Opts {
            mf: true,
            ..Default::default()
        },
    ));
    denied(&f, Reason::Malformed);
    // IPv6: fragment header with offset 0 and a truncated TCP header.
    let mut f6 = frames::eth(frames::MAC_B, frames::MAC_A, &[], 0x86dd);
    f6.extend(frames::ipv6(
        v6(5, 0),
        v6(0x10, 1),
        &[44],
        6,
        &SYN_502.bytes()[..4],
        0,
    ));
    denied(&f6, Reason::Malformed);
}

#[test]
fn non_first_fragments() {
    require_root();
    let mut f = frames::eth(frames::MAC_B, frames::MAC_A, &[], 0x0800);
    f.extend(frames::ipv4(
        SRC,
        PLC,
        6,
        &[0u8; 16],
        V4Opts {
            frag_offset: 3,
            ..Default::default()
        },
    ));
    denied(&f, Reason::Fragment);
    let mut f6 = frames::eth(frames::MAC_B, frames::MAC_A, &[], 0x86dd);
    f6.extend(frames::ipv6(v6(5, 0), v6(0x10, 1), &[44], 6, &[0u8; 16], 3));
    denied(&f6, Reason::Fragment);
}

#[test]
fn tcp_data_offset_below_five() {
    require_root();
    for doff in 0..5u8 {
        let mut f = frames::v4(frames::MAC_A, SRC, PLC, SYN_502);
        f[14 + 20 + 12] = doff << 4;
        denied(&f, Reason::Malformed);
    }
}

#[test]
fn truncated_headers_at_every_byte() {
    require_root();
    let mut vlan = frames::eth(frames::MAC_B, frames::MAC_A, &[0x8100], 0x0800);
    vlan.extend(frames::ipv4(
        SRC,
        PLC,
        6,
        &SYN_502.bytes(),
        V4Opts {
            options: 4,
            ..Default::default()
        },
    ));
    let mut v6ext = frames::eth(frames::MAC_B, frames::MAC_A, &[], 0x86dd);
    v6ext.extend(frames::ipv6(
        v6(5, 0),
        v6(0x10, 1),
        &[0, 44],
        6,
        &SYN_502.bytes(),
        0,
    ));
    let whole = [
        frames::v4(frames::MAC_A, SRC, PLC, SYN_502),
        frames::v6(frames::MAC_A, v6(5, 0), v6(0x10, 1), SYN_502),
        frames::v4(
            frames::MAC_A,
            SRC,
            PLC,
            L4::Udp {
                sport: 1,
                dport: 502,
            },
        ),
        vlan,
        v6ext,
    ];
    let (mut k, mut r) = kernel::with_policy(POLICY);
    for f in &whole {
        for len in 14..f.len() {
            let cut = &f[..len];
            let (action, t) = k.run(cut);
            let want = r.judge(cut, monotonic_ns());
            assert_eq!(
                kernel::as_trace(&want, r.last_fast, t.seq),
                t,
                "disagree at {len}"
            );
            assert_eq!(
                action,
                XDP_DROP,
                "a frame cut at {len} of {} passed: {t:?}",
                f.len()
            );
            assert_eq!(t.reason, Reason::Malformed as u32, "cut at {len}");
        }
    }
}

#[test]
fn spoofed_source_mac() {
    require_root();
    // The HMI's address from another MAC.
    denied(
        &frames::v4(frames::MAC_A, [10, 0, 0, 20], PLC, SYN_502),
        Reason::Spoofed,
    );
}

#[test]
fn spoofed_source_ip() {
    require_root();
    // The HMI's MAC with another address of the same network (which the conduit allows).
    denied(&frames::v4(HMI_MAC, SRC, PLC, SYN_502), Reason::Spoofed);
}

#[test]
fn arp_poisoning_of_a_bound_address() {
    require_root();
    // Someone claims the PLC's address: in the ARP body, and with a forged Ethernet source.
    denied(
        &frames::arp(frames::MAC_A, frames::MAC_A, PLC, SRC, 2),
        Reason::ArpSpoof,
    );
    denied(
        &frames::arp(frames::MAC_A, PLC_MAC, PLC, SRC, 2),
        Reason::ArpSpoof,
    );
    denied(
        &frames::arp(PLC_MAC, frames::MAC_A, PLC, SRC, 1),
        Reason::ArpSpoof,
    );
}

/// A bound device (the PLC) claims an address no asset has, e.g. the gateway's, to sit in the
/// middle of its neighbours' traffic: its MAC is bound to another address.
#[test]
fn arp_poisoning_by_a_bound_device() {
    require_root();
    let gateway = [10, 1, 0, 1];
    for (eth, sha) in [
        (PLC_MAC, PLC_MAC),
        (frames::MAC_A, PLC_MAC),
        (PLC_MAC, frames::MAC_A),
    ] {
        denied(&frames::arp(eth, sha, gateway, PLC, 2), Reason::ArpSpoof);
        denied(&frames::arp(eth, sha, SRC, PLC, 1), Reason::ArpSpoof);
    }
    // Its own address, and an address probe (RFC 5227, sender 0.0.0.0), are fine.
    let (mut k, _) = kernel::with_policy(POLICY);
    for f in [
        frames::arp(PLC_MAC, PLC_MAC, PLC, gateway, 1),
        frames::arp(PLC_MAC, PLC_MAC, [0, 0, 0, 0], PLC, 1),
    ] {
        let (action, t) = k.run(&f);
        assert_eq!(action, kernel::XDP_PASS, "{t:?}");
        assert_eq!(t.reason, Reason::Arp as u32);
    }
}

/// ICMPv6 of the neighbour-discovery types is no channel between zones: only hop limit 255
/// (sent on the link) to a link-local or link-scope multicast destination passes as
/// neighbour discovery; to another zone's global address, or routed (hop limit below 255),
/// it is judged as ICMPv6, and there is no conduit for it.
#[test]
fn neighbor_discovery_types_are_no_channel_between_zones() {
    require_root();
    let (mut k, mut r) = kernel::with_policy(POLICY);
    let nd = |ty: u8, dst: [u8; 16], hop_limit: u8| {
        let mut f = frames::v6(
            frames::MAC_A,
            v6(5, 0),
            dst,
            L4::Icmp { ty, code: 0, id: 0 },
        );
        f[14 + 7] = hop_limit;
        f
    };
    let mut solicited = [0u8; 16];
    solicited[..2].copy_from_slice(&[0xff, 0x02]);
    solicited[11..13].copy_from_slice(&[1, 0xff]);
    solicited[15] = 0x10;
    let cases = [
        // Neighbour discovery as it is sent: passes whatever the conduits say.
        (
            nd(135, solicited, 255),
            Verdict::Allow,
            Reason::NeighborDiscovery,
        ),
        // A "neighbour advertisement" carried to a PLC's global address across zones.
        (nd(136, v6(0x10, 1), 255), Verdict::Deny, Reason::NoConduit),
        // Router advertisement types, routed (hop limit below 255).
        (nd(134, solicited, 254), Verdict::Deny, Reason::NoConduit),
        (nd(137, v6(0x10, 1), 64), Verdict::Deny, Reason::NoConduit),
    ];
    for (i, (frame, verdict, reason)) in cases.iter().enumerate() {
        let (_, t) = k.run(frame);
        let want = r.judge(frame, monotonic_ns());
        assert_eq!(
            kernel::as_trace(&want, r.last_fast, t.seq),
            t,
            "case {i}: kernel and reference disagree"
        );
        assert_eq!(
            (t.verdict, Reason::try_from(t.reason)),
            (*verdict as u32, Ok(*reason)),
            "case {i}: {t:?}"
        );
    }
}

/// The office may poll the RTU (10.1.0.10, outstation 10) over DNP3, read-only.
const DNP3_POLICY: &str = r#"
version: 1
site: bypass-dnp3
defaults: { mode: enforce }
zones:
  - name: office
    security_level: 1
    assets: [{ name: lan, cidr: 10.0.0.0/24 }]
  - name: plant
    security_level: 2
    assets: [{ name: rtu, ip: 10.1.0.10 }]
conduits:
  - name: poll
    from: office
    to: plant
    rules: [{ proto: tcp, ports: [20000], dnp3: { functions: [read], outstations: [10] } }]
"#;

/// A DNP3 frame from master 1 to `outstation` with link `control` and `user` data.
fn dnp3(outstation: u16, control: u8, user: &[u8]) -> Vec<u8> {
    let (d, n) = frames::dnp3_frame(outstation, 1, control, user);
    d[..usize::from(n)].to_vec()
}

/// A segment of the master's session carrying `payload`, behind `vlans` and `options` bytes
/// of IPv4 options.
fn to_rtu(payload: &[u8], vlans: &[u16], options: usize) -> Vec<u8> {
    let (data, len) = frames::tcp_data(payload);
    let l4 = L4::TcpData {
        sport: 40000,
        dport: 20000,
        flags: 0x18,
        data,
        len,
    };
    let mut f = frames::eth(frames::MAC_B, frames::MAC_A, vlans, 0x0800);
    f.extend(frames::ipv4(
        SRC,
        PLC,
        6,
        &l4.bytes(),
        V4Opts {
            options,
            ..Default::default()
        },
    ));
    f
}

/// Direct operate (5) on a CROB, hidden every way a parser could be led to see a read.
#[test]
fn dnp3_operate_hidden_from_a_read_only_filter() {
    require_root();
    const REQUEST: u8 = 0xC4;
    // A CROB header and the start of its object (two such frames fit one test segment).
    let crob = [12, 1, 0x28, 1, 0, 0, 0, 3, 1, 0xE8];
    let request = |outstation, function| {
        let mut user = vec![0xC0, 0xC0, function];
        user.extend_from_slice(&crob);
        dnp3(outstation, REQUEST, &user)
    };
    // The control case: a read passes, behind VLAN tags and IPv4 options too.
    let (mut k, _) = kernel::with_policy(DNP3_POLICY);
    for (vlans, options) in [(&[][..], 0), (&[0x88a8, 0x8100][..], 40)] {
        let f = to_rtu(&request(10, 1), vlans, options);
        assert_eq!(
            k.run(&f).1.reason,
            Reason::Conduit as u32,
            "{vlans:?} {options}"
        );
    }
    // The operate itself, wherever the headers put it.
    for (vlans, options) in [
        (&[][..], 0),
        (&[0x8100][..], 12),
        (&[0x88a8, 0x8100][..], 40),
    ] {
        let f = to_rtu(&request(10, 5), vlans, options);
        denied_by(DNP3_POLICY, &f, Reason::Dnp3Function);
    }
    // Behind a read in the same segment.
    let mut two = request(10, 1);
    two.extend(request(10, 5));
    // In a frame whose transport header says it continues an earlier message, or whose
    // application header says it continues an earlier fragment.
    let mut continued = crob.to_vec();
    continued.splice(0..0, [0x01, 0xC0, 5]);
    let mut fragment = crob.to_vec();
    fragment.splice(0..0, [0xC0, 0x40, 5]);
    // In user data under a link function that carries none (reset link states), or under
    // a primary function that is not user data.
    let mut under_reset = crob.to_vec();
    under_reset.splice(0..0, [0xC0, 0xC0, 5]);
    // With a length field that claims only the read, the operate in the tail.
    let mut short = request(10, 1);
    short.truncate(10 + 3 + 2);
    short[2] = 5 + 3;
    let c = conduit_common::inspect::dnp3::crc(&short[..8]).to_le_bytes();
    short[8..10].copy_from_slice(&c);
    let c = conduit_common::inspect::dnp3::crc(&[0xC0, 0xC0, 1]).to_le_bytes();
    short[13..15].copy_from_slice(&c);
    short.extend(request(10, 5));
    // A corrupted first block (the outstation would drop it, so would Conduit).
    let mut corrupt = request(10, 5);
    corrupt[20] ^= 0xff;
    for (what, payload) in [
        ("behind a read", two),
        ("as a continued message", dnp3(10, REQUEST, &continued)),
        ("as a continued fragment", dnp3(10, REQUEST, &fragment)),
        ("under reset link states", dnp3(10, 0xC0, &under_reset)),
        ("under link function 7", dnp3(10, 0xC7, &under_reset)),
        ("past a short length field", short),
        ("with a corrupted first block", corrupt),
        (
            "with the direction of an outstation",
            dnp3(10, 0x44, &under_reset),
        ),
    ] {
        let f = to_rtu(&payload, &[], 0);
        let (mut k, mut r) = kernel::with_policy(DNP3_POLICY);
        let (action, t) = k.run(&f);
        let want = r.judge(&f, monotonic_ns());
        assert_eq!(kernel::as_trace(&want, r.last_fast, t.seq), t, "{what}");
        assert_eq!(
            (action, Reason::try_from(t.reason)),
            (XDP_DROP, Ok(Reason::Malformed)),
            "{what}"
        );
    }
    // To the broadcast addresses and to another outstation.
    for dest in [0xfffdu16, 0xfffe, 0xffff, 11] {
        denied_by(
            DNP3_POLICY,
            &to_rtu(&request(dest, 1), &[], 0),
            Reason::Dnp3Address,
        );
    }
}

/// The office may read the controller's tags (10.1.0.10) over EtherNet/IP, read-only.
const ENIP_POLICY: &str = r#"
version: 1
site: bypass-enip
defaults: { mode: enforce }
zones:
  - name: office
    security_level: 1
    assets: [{ name: lan, cidr: 10.0.0.0/24 }]
  - name: plant
    security_level: 2
    assets: [{ name: plc, ip: 10.1.0.10 }]
conduits:
  - name: read-tags
    from: office
    to: plant
    rules: [{ proto: tcp, ports: [44818], enip: { services: [read, connection] } }]
"#;

/// A segment of the client's session to port 44818 carrying `payload`.
fn to_plc_44818(payload: &[u8]) -> Vec<u8> {
    let (data, len) = frames::tcp_data(payload);
    frames::v4(
        frames::MAC_A,
        SRC,
        PLC,
        L4::TcpData {
            sport: 40000,
            dport: 44818,
            flags: 0x18,
            data,
            len,
        },
    )
}

/// A tag write (Write Tag 0x4D) and a Reset, hidden every way a parser could be led to see
/// a read or a session command.
#[test]
fn enip_write_hidden_from_a_read_only_filter() {
    require_root();
    use conduit_common::inspect::enip;
    use frames::{enip_message, enip_send};
    let write_tag = [0x4D, 3, 0x91, 3, b'C', b'n', b't', 0, 0xC3, 0, 1, 0, 7, 0];
    let reset = [0x05, 2, 0x20, 1, 0x24, 1];
    let read = [0x0E, 2, 0x20, 1, 0x24, 1];
    // The control case: a read passes.
    let (mut k, _) = kernel::with_policy(ENIP_POLICY);
    let f = to_plc_44818(&enip_send(false, &read));
    assert_eq!(k.run(&f).1.reason, Reason::Conduit as u32);
    let (wrapped, batch) = (frames::cip_unconnected_send, frames::cip_multiple);
    // Denied by service, wherever it is put.
    let by_service = [
        ("a connected Write Tag", enip_send(true, &write_tag)),
        ("an unconnected Write Tag", enip_send(false, &write_tag)),
        (
            "Reset inside Unconnected_Send",
            enip_send(false, &wrapped(&reset)),
        ),
        (
            "Reset behind a read in a batch",
            enip_send(false, &batch(&read, &reset)),
        ),
        // 0x4E to a symbolic tag is Read Modify Write, not Forward_Close.
        (
            "Read Modify Write dressed as Forward_Close",
            enip_send(true, &[0x4E, 3, 0x91, 3, b'C', b'n', b't', 0]),
        ),
    ];
    // Unjudgeable: malformed.
    let mut behind_session = enip_message(enip::LIST_IDENTITY, &[]);
    behind_session.extend(enip_send(false, &write_tag));
    let mut short_length = enip_send(false, &read);
    short_length.extend_from_slice(&write_tag);
    let mut third_item = enip_send(false, &write_tag);
    third_item[30] = 3;
    let mut as_response = enip_send(false, &write_tag);
    as_response[40] |= 0x80;
    let twice = wrapped(&wrapped(&reset));
    let malformed = [
        ("behind a session command", behind_session),
        ("past a length that ends at a read", short_length),
        ("in a third item", third_item),
        ("with the response bit", as_response),
        ("wrapped twice", enip_send(false, &twice)),
        (
            "in a batch, past the window behind a read",
            enip_send(true, &batch(&read, &write_tag)),
        ),
    ];
    let cases = by_service
        .into_iter()
        .map(|(w, p)| (w, p, Reason::EnipService))
        .chain(
            malformed
                .into_iter()
                .map(|(w, p)| (w, p, Reason::Malformed)),
        );
    for (what, payload, reason) in cases {
        let f = to_plc_44818(&payload);
        let (mut k, mut r) = kernel::with_policy(ENIP_POLICY);
        let (action, t) = k.run(&f);
        let want = r.judge(&f, monotonic_ns());
        assert_eq!(kernel::as_trace(&want, r.last_fast, t.seq), t, "{what}");
        assert_eq!(
            (action, Reason::try_from(t.reason)),
            (XDP_DROP, Ok(reason)),
            "{what}"
        );
    }
}
