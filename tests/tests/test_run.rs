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
    let now = conduit_tests::reference::monotonic_ns();
    assert_eq!(r.judge(&syn, now).verdict, Verdict::WouldDeny);
    assert_eq!(r.judge(&synack, now).reason, Reason::Reply);
}

/// A flood of loggable frames (a scan from ever new sources: every frame its own flow, so the
/// per-flow rate limit holds none back) is shed by the per-CPU event budget once the burst is
/// used, and counted: the audit path stays bounded while every frame is still judged.
#[test]
fn a_flood_of_denied_frames_is_shed_from_the_audit_path_and_counted() {
    require_root();
    // One CPU, so that one budget applies.
    // SAFETY: a CPU set of our own, applied to this thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
    let (mut k, _) = kernel::with_policy(POLICY);
    let before = k.dp.event_stats().unwrap();
    let frames_sent: u64 = 10_000;
    let t = std::time::Instant::now();
    for i in 0..frames_sent {
        let src = [172, 16, (i >> 8) as u8, i as u8];
        let syn = frames::v4(
            frames::MAC_A,
            src,
            [10, 1, 0, 10],
            L4::Tcp {
                sport: 40000 + (i >> 16) as u16,
                dport: 23,
                flags: 0x02,
            },
        );
        let (action, t) = k.run(&syn);
        assert_eq!((action, t.reason), (XDP_DROP, Reason::NoConduit as u32));
    }
    let elapsed = t.elapsed().as_secs_f64();
    let after = k.dp.event_stats().unwrap();
    let flood = after[2] - before[2];
    // At most the burst plus what the elapsed time refilled went on to the audit path.
    let budget = conduit_common::EVENT_BUDGET_PER_SEC as f64 * (1.0 + elapsed.ceil());
    assert!(
        flood > 0,
        "nothing was shed in a flood of {frames_sent} frames"
    );
    assert!(
        flood as f64 >= frames_sent as f64 - budget,
        "shed {flood} of {frames_sent} in {elapsed:.2} s: more than the budget went through"
    );
    eprintln!("{frames_sent} denied frames in {elapsed:.2} s: {flood} audit events shed");
}
