//! BPF_PROG_TEST_RUN: the embedded program judges hand-built frames in the real kernel, with a
//! real policy in its maps, and counts them.
use conduit_common::{Reason, Verdict};
use conduit_tests::{
    frames::{self, L4},
    kernel::{self, XDP_DROP, XDP_PASS},
    require_root,
};

const POLICY: &str = r#"
version: 1
site: t
zones:
  - name: office
    security_level: 1
    assets: [{ name: lan, cidr: 10.0.0.0/24 }]
  - name: plant
    security_level: 2
    assets: [{ name: plc, ip: 10.1.0.10, mac: "02:00:00:01:00:10" }]
conduits:
  - name: office-to-plc
    from: office
    to: plant
    rules: [{ proto: tcp, ports: [502] }]
"#;

const PLC_MAC: [u8; 6] = [2, 0, 0, 1, 0, 0x10];

#[test]
fn enforces_a_policy_and_counts() {
    require_root();
    let (mut k, _) = kernel::with_policy(POLICY);
    let syn = frames::v4(
        frames::MAC_A,
        [10, 0, 0, 5],
        [10, 1, 0, 10],
        L4::Tcp {
            sport: 40000,
            dport: 502,
            flags: 0x02,
        },
    );
    let (action, t) = k.run(&syn);
    assert_eq!((action, t.reason), (XDP_PASS, Reason::Conduit as u32));
    // The reply passes as a reply; the PLC cannot open a connection of its own.
    let synack = frames::v4(
        PLC_MAC,
        [10, 1, 0, 10],
        [10, 0, 0, 5],
        L4::Tcp {
            sport: 502,
            dport: 40000,
            flags: 0x12,
        },
    );
    assert_eq!(k.run(&synack).1.reason, Reason::Reply as u32);
    let open = frames::v4(
        PLC_MAC,
        [10, 1, 0, 10],
        [10, 0, 0, 5],
        L4::Tcp {
            sport: 502,
            dport: 40001,
            flags: 0x02,
        },
    );
    assert_eq!(k.run(&open), (XDP_DROP, k.dp.last_trace().unwrap()));
    assert_eq!(k.dp.last_trace().unwrap().reason, Reason::NoConduit as u32);
    // Another port is not in the conduit.
    let other = frames::v4(
        frames::MAC_A,
        [10, 0, 0, 5],
        [10, 1, 0, 10],
        L4::Tcp {
            sport: 40000,
            dport: 503,
            flags: 0x02,
        },
    );
    assert_eq!(k.run(&other).0, XDP_DROP);
    // An IPv4 frame too short for its IPv4 header is malformed: fail closed.
    assert_eq!(k.run(&syn[..33]).0, XDP_DROP);
    assert_eq!(k.dp.last_trace().unwrap().reason, Reason::Malformed as u32);

    let totals = k.dp.totals().expect("read totals");
    let get = |v: Verdict| totals.iter().find(|(w, _)| *w == v).unwrap().1;
    assert_eq!(get(Verdict::Allow).packets, 2);
    assert_eq!(get(Verdict::Allow).bytes, (syn.len() + synack.len()) as u64);
    assert_eq!(get(Verdict::Deny).packets, 3);
}

/// Monitor mode: a flow no conduit allows passes as would-deny, and so do its replies, while
/// the destination zone stays in monitor mode.
#[test]
fn monitor_mode_passes_flows_and_their_replies() {
    require_root();
    let monitored = POLICY.replace(
        "  - name: plant\n    security_level: 2\n",
        "  - name: plant\n    security_level: 2\n    mode: monitor\n",
    );
    assert_ne!(monitored, POLICY);
    let (mut k, mut r) = kernel::with_policy(&monitored);
    let syn = frames::v4(
        frames::MAC_A,
        [10, 0, 0, 5],
        [10, 1, 0, 10],
        L4::Tcp {
            sport: 40000,
            dport: 80,
            flags: 0x02,
        },
    );
    let (action, t) = k.run(&syn);
    assert_eq!(
        (action, t.verdict, t.reason),
        (
            XDP_PASS,
            Verdict::WouldDeny as u32,
            Reason::NoConduit as u32
        )
    );
    let synack = frames::v4(
        PLC_MAC,
        [10, 1, 0, 10],
        [10, 0, 0, 5],
        L4::Tcp {
            sport: 80,
            dport: 40000,
            flags: 0x12,
        },
    );
    let (action, t) = k.run(&synack);
    assert_eq!(
        (action, t.verdict, t.reason),
        (XDP_PASS, Verdict::WouldDeny as u32, Reason::Reply as u32),
        "{t:?}"
    );
    let now = conduit_agent::reference::monotonic_ns();
    assert_eq!(r.judge(&syn, now).verdict, Verdict::WouldDeny);
    assert_eq!(r.judge(&synack, now).reason, Reason::Reply);
}
