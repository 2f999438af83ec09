//! ICMP errors about a flow (port unreachable, fragmentation needed, packet too big) travel
//! back to the flow's initiator as replies of that flow; errors about anything else, and
//! deprecated messages that quote a packet too (source quench), are judged as packets of their
//! own. Kernel (BPF_PROG_TEST_RUN) and reference agree on every frame.
use conduit_common::Reason;
use conduit_tests::reference::{Reference, monotonic_ns};
use conduit_tests::{
    frames::{self, L4, icmp_about, icmp_error_about},
    kernel::{self, HMI, Kernel, PLC, XDP_DROP, XDP_PASS},
    require_root,
};

const POLICY: &str = r#"
version: 1
site: icmp-errors
zones:
  - name: hmi
    security_level: 2
    assets: [{ name: hmi, ip: 10.0.0.20 }, { name: hmi6, ip: "fd00::20" }]
  - name: plc
    security_level: 2
    assets: [{ name: plc, ip: 10.1.0.10 }, { name: plc6, ip: "fd00:1::10" }]
conduits:
  - name: hmi-to-plc
    from: hmi
    to: plc
    rules: [{ proto: udp, ports: [161] }, { proto: tcp, ports: [502] }]
"#;

fn step(k: &mut Kernel, r: &mut Reference, f: &[u8]) -> (u32, Reason) {
    let (action, t) = k.run(f);
    let want = r.judge(f, monotonic_ns());
    assert_eq!(
        kernel::as_trace(&want, r.last_fast, t.seq),
        t,
        "kernel and reference disagree"
    );
    (action, Reason::try_from(t.reason).unwrap())
}

fn udp(sport: u16, dport: u16) -> L4 {
    L4::Udp { sport, dport }
}

#[test]
fn errors_about_allowed_flows_are_replies() {
    require_root();
    let (mut k, mut r) = kernel::with_policy(POLICY);
    // UDP to a closed port: the PLC answers port unreachable.
    let request = frames::v4(frames::MAC_A, HMI, PLC, udp(40000, 161));
    assert_eq!(step(&mut k, &mut r, &request), (XDP_PASS, Reason::Conduit));
    let unreachable = icmp_error_about(&request, 3).unwrap();
    assert_eq!(
        step(&mut k, &mut r, &unreachable),
        (XDP_PASS, Reason::Reply)
    );
    // Fragmentation needed (path MTU discovery) for a TCP connection.
    let syn = frames::v4(
        frames::MAC_A,
        HMI,
        PLC,
        L4::Tcp {
            sport: 40001,
            dport: 502,
            flags: 0x02,
        },
    );
    assert_eq!(step(&mut k, &mut r, &syn), (XDP_PASS, Reason::Conduit));
    let frag_needed = icmp_error_about(&syn, 4).unwrap();
    assert_eq!(
        step(&mut k, &mut r, &frag_needed),
        (XDP_PASS, Reason::Reply)
    );
    // IPv6: the error (type 1) about a UDP flow.
    let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
    a[0] = 0xfd;
    a[15] = 0x20;
    b[0] = 0xfd;
    b[3] = 1;
    b[15] = 0x10;
    let request6 = frames::v6(frames::MAC_A, a, b, udp(40002, 161));
    assert_eq!(step(&mut k, &mut r, &request6), (XDP_PASS, Reason::Conduit));
    let unreachable6 = icmp_error_about(&request6, 4).unwrap();
    assert_eq!(
        step(&mut k, &mut r, &unreachable6),
        (XDP_PASS, Reason::Reply)
    );
}

#[test]
fn errors_about_anything_else_are_judged_on_their_own() {
    require_root();
    let (mut k, mut r) = kernel::with_policy(POLICY);
    // A packet the policy denied never made a flow: an error quoting it is no reply.
    let denied = frames::v4(frames::MAC_A, HMI, PLC, udp(40000, 162));
    assert_eq!(step(&mut k, &mut r, &denied), (XDP_DROP, Reason::NoConduit));
    let e = icmp_error_about(&denied, 3).unwrap();
    assert_eq!(step(&mut k, &mut r, &e), (XDP_DROP, Reason::NoConduit));
    // An error that quotes a live flow but goes to someone else than its initiator (the PLC
    // trying to reach a third host through the flow's hole).
    let request = frames::v4(frames::MAC_A, HMI, PLC, udp(40003, 161));
    assert_eq!(step(&mut k, &mut r, &request), (XDP_PASS, Reason::Conduit));
    let mut e = icmp_error_about(&request, 3).unwrap();
    // Outer destination: 10.0.0.21 instead of the HMI (IP checksum is not checked).
    e[14 + 19] = 21;
    assert_eq!(step(&mut k, &mut r, &e).0, XDP_DROP);
    // A quote cut short: no association, judged as an ICMP packet (no conduit for it).
    let mut short = icmp_error_about(&request, 3).unwrap();
    let keep = short.len() - 6;
    short.truncate(keep);
    let total = (keep - 14) as u16;
    short[16..18].copy_from_slice(&total.to_be_bytes());
    assert_eq!(step(&mut k, &mut r, &short), (XDP_DROP, Reason::NoConduit));
}

#[test]
fn source_quench_about_a_live_flow_is_judged_on_its_own() {
    require_root();
    let (mut k, mut r) = kernel::with_policy(POLICY);
    let request = frames::v4(frames::MAC_A, HMI, PLC, udp(40004, 161));
    assert_eq!(step(&mut k, &mut r, &request), (XDP_PASS, Reason::Conduit));
    // What an ICMP source quench of the PLC's own gets: no conduit leads from plc to hmi.
    let own = frames::v4(
        frames::MAC_B,
        PLC,
        HMI,
        L4::Icmp {
            ty: 4,
            code: 0,
            id: 0,
        },
    );
    let alone = step(&mut k, &mut r, &own);
    assert_eq!(alone, (XDP_DROP, Reason::NoConduit));
    // Source quench (type 4) is deprecated (RFC 6633: hosts ignore it, routers no longer send
    // it). Quoting the live flow does not make it a reply of that flow.
    let quench = icmp_about(&request, 4, 0).unwrap();
    assert_eq!(
        step(&mut k, &mut r, &quench),
        alone,
        "a source quench quoting a live flow is judged like any ICMP packet from its sender"
    );
    // Destination unreachable about the same flow still passes as its reply.
    let unreachable = icmp_error_about(&request, 3).unwrap();
    assert_eq!(
        step(&mut k, &mut r, &unreachable),
        (XDP_PASS, Reason::Reply)
    );
}
