//! The fast path in the real XDP program (BPF_PROG_TEST_RUN): packets of a flow whose
//! direction already has a verdict under the live policy are judged from the flow entry
//! alone. These tests check, from the program's own trace, when it is taken and, above all,
//! when it must not be: another source MAC (spoofing), a reload (every cached verdict is
//! void under a new generation), a Modbus segment the filter denies, a reset.
use conduit_common::{Reason, Trace, flow};
use conduit_tests::reference::{Reference, monotonic_ns};
use conduit_tests::{
    frames::{self, L4, MAC_A, MAC_B, modbus_adu},
    kernel::{self, ACK, HMI, Kernel, PLC, SYN, SYN_ACK, XDP_DROP, XDP_PASS},
    require_root,
};

const CLIENT_PORT: u16 = 40_100;
const ATTACKER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x66];

/// `rules`: the conduit's rules, or `None` for a policy without the conduit.
fn policy(rules: Option<&str>) -> String {
    let conduit = match rules {
        Some(rules) => format!(
            "conduits:\n  - name: hmi-to-plc\n    from: supervisory\n    to: control\n    rules:\n      - {rules}\n"
        ),
        None => "conduits: []\n".into(),
    };
    kernel::hmi_plc_policy("fast-path-test", "{ mode: enforce }", &conduit)
}

const TCP_502: &str = "{ proto: tcp, ports: [502] }";
const READ_ONLY: &str = "{ proto: tcp, ports: [502], modbus: { functions: [read] } }";

fn segment(mac: [u8; 6], src: [u8; 4], dst: [u8; 4], ports: (u16, u16), flags: u8) -> Vec<u8> {
    segment_with(mac, src, dst, ports, flags, &[])
}

fn segment_with(
    mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    (sport, dport): (u16, u16),
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut data = [0u8; frames::TCP_DATA];
    data[..payload.len()].copy_from_slice(payload);
    frames::v4(
        mac,
        src,
        dst,
        L4::TcpData {
            sport,
            dport,
            flags,
            data,
            len: payload.len() as u8,
        },
    )
}

fn to_plc(flags: u8) -> Vec<u8> {
    segment(MAC_A, HMI, PLC, (CLIENT_PORT, 502), flags)
}

fn to_hmi(flags: u8) -> Vec<u8> {
    segment(MAC_B, PLC, HMI, (502, CLIENT_PORT), flags)
}

fn modbus_to_plc(function: u8) -> Vec<u8> {
    let (d, n) = modbus_adu(7, 1, function, &[0, 0, 0, 2]);
    segment_with(
        MAC_A,
        HMI,
        PLC,
        (CLIENT_PORT, 502),
        PSH_ACK,
        &d[..usize::from(n)],
    )
}

const PSH_ACK: u8 = 0x18;
const RST: u8 = 0x04;

/// One frame and what the kernel must do with it: action, reason, and whether the fast path
/// decided.
type Step = (Vec<u8>, u32, Reason, bool);

/// Runs `steps` through the kernel (and, given one, the reference model, which must agree
/// frame by frame, fast path included); returns the traces.
fn play(k: &mut Kernel, mut r: Option<&mut Reference>, what: &str, steps: &[Step]) -> Vec<Trace> {
    let mut traces = Vec::new();
    for (i, (frame, action, reason, fast)) in steps.iter().enumerate() {
        let (a, t) = k.run(frame);
        if let Some(r) = r.as_deref_mut() {
            let want = r.judge(frame, monotonic_ns());
            let want = kernel::as_trace(&want, r.last_fast, t.seq);
            assert_eq!(want, t, "{what}, frame {i}: kernel and reference disagree");
        }
        assert_eq!(
            (a, Reason::try_from(t.reason).unwrap(), t.fast == 1),
            (*action, *reason, *fast),
            "{what}, frame {i}: trace {t:?}"
        );
        traces.push(t);
    }
    traces
}

/// SYN, SYN-ACK (judged in full), then an ACK each way (fast).
fn handshake() -> Vec<Step> {
    vec![
        (to_plc(SYN), XDP_PASS, Reason::Conduit, false),
        (to_hmi(SYN_ACK), XDP_PASS, Reason::Reply, false),
        (to_plc(ACK), XDP_PASS, Reason::Conduit, true),
        (to_hmi(ACK), XDP_PASS, Reason::Reply, true),
    ]
}

/// The handshake is judged in full; from then on both directions take the fast path, with
/// the same verdict, conduit, zones and flow relation as the full decision (checked against
/// the reference model frame by frame), and the per-conduit counters still count.
#[test]
fn established_flows_take_the_fast_path_with_the_full_verdict() {
    require_root();
    let (mut k, mut r) = kernel::with_policy(&policy(Some(TCP_502)));
    let mut steps = handshake();
    steps.push((to_plc(PSH_ACK), XDP_PASS, Reason::Conduit, true));
    steps.push((to_hmi(PSH_ACK), XDP_PASS, Reason::Reply, true));
    let traces = play(&mut k, Some(&mut r), "session", &steps);
    let conduit = traces[0].conduit;
    assert!(traces.iter().all(|t| t.conduit == conduit), "{traces:?}");
    let stats = k.dp.conduit_stats().unwrap();
    let c = stats.get(&conduit).copied().unwrap_or_default();
    assert_eq!(c.packets, steps.len() as u64, "per-conduit packets");
}

/// A frame of the flow from another MAC address never uses the cached verdict: the binding
/// checks run and drop it; the real client's next packet is fast again.
#[test]
fn another_source_mac_takes_the_full_path_and_is_dropped() {
    require_root();
    let (mut k, _) = kernel::with_policy(&policy(Some(TCP_502)));
    play(&mut k, None, "handshake", &handshake());
    let from_client = segment(ATTACKER_MAC, HMI, PLC, (CLIENT_PORT, 502), ACK);
    let from_server = segment(ATTACKER_MAC, PLC, HMI, (502, CLIENT_PORT), ACK);
    play(
        &mut k,
        None,
        "spoofs",
        &[
            (from_client, XDP_DROP, Reason::Spoofed, false),
            (from_server, XDP_DROP, Reason::Spoofed, false),
            (to_plc(ACK), XDP_PASS, Reason::Conduit, true),
            (to_hmi(ACK), XDP_PASS, Reason::Reply, true),
        ],
    );
}

/// A reload voids every cached verdict: without the conduit the open session is dropped at
/// once (no_conduit), with it again the next packet is judged in full, then fast.
#[test]
fn a_reload_voids_cached_verdicts() {
    require_root();
    let (mut k, _) = kernel::with_policy(&policy(Some(TCP_502)));
    play(&mut k, None, "handshake", &handshake());
    k.reload(&policy(None));
    play(
        &mut k,
        None,
        "without the conduit",
        &[
            (to_plc(ACK), XDP_DROP, Reason::NoConduit, false),
            (to_hmi(ACK), XDP_DROP, Reason::NoConduit, false),
            (to_plc(ACK), XDP_DROP, Reason::NoConduit, false),
        ],
    );
    k.reload(&policy(Some(TCP_502)));
    play(
        &mut k,
        None,
        "with the conduit again",
        &[
            (to_plc(ACK), XDP_PASS, Reason::Conduit, false),
            (to_plc(ACK), XDP_PASS, Reason::Conduit, true),
            (to_hmi(ACK), XDP_PASS, Reason::Reply, false),
            (to_hmi(ACK), XDP_PASS, Reason::Reply, true),
        ],
    );
}

/// A reload that narrows a conduit (a port taken out of its rule: "contain an incident")
/// cuts the open sessions it no longer allows, in both directions and on the full path as
/// well as the fast one, while a session on a port it still allows goes on.
#[test]
fn a_reload_that_narrows_a_conduit_cuts_its_open_sessions() {
    require_root();
    let two_ports = "{ proto: tcp, ports: [502, 503] }";
    let (mut k, _) = kernel::with_policy(&policy(Some(two_ports)));
    let to_503 = |flags| segment(MAC_A, HMI, PLC, (CLIENT_PORT + 1, 503), flags);
    let from_503 = |flags| segment(MAC_B, PLC, HMI, (503, CLIENT_PORT + 1), flags);
    let mut steps = handshake();
    steps.extend([
        (to_503(SYN), XDP_PASS, Reason::Conduit, false),
        (from_503(SYN_ACK), XDP_PASS, Reason::Reply, false),
        (to_503(ACK), XDP_PASS, Reason::Conduit, true),
    ]);
    play(&mut k, None, "two sessions", &steps);
    k.reload(&policy(Some("{ proto: tcp, ports: [503] }")));
    play(
        &mut k,
        None,
        "after 502 is taken out",
        &[
            (to_plc(ACK), XDP_DROP, Reason::NoConduit, false),
            (to_hmi(PSH_ACK), XDP_DROP, Reason::NoConduit, false),
            (to_plc(PSH_ACK), XDP_DROP, Reason::NoConduit, false),
            (to_503(ACK), XDP_PASS, Reason::Conduit, false),
            (to_503(ACK), XDP_PASS, Reason::Conduit, true),
            (from_503(ACK), XDP_PASS, Reason::Reply, false),
            (from_503(ACK), XDP_PASS, Reason::Reply, true),
        ],
    );
}

/// With a Modbus filter every request is still inspected: reads are fast, a write on the
/// same session is dropped by the full path, and the reads after it are fast again.
#[test]
fn modbus_requests_are_inspected_on_the_fast_path() {
    require_root();
    let (mut k, mut r) = kernel::with_policy(&policy(Some(READ_ONLY)));
    let mut steps = handshake();
    steps.extend([
        (modbus_to_plc(3), XDP_PASS, Reason::Conduit, true),
        (modbus_to_plc(6), XDP_DROP, Reason::ModbusFunction, false),
        (modbus_to_plc(16), XDP_DROP, Reason::ModbusFunction, false),
        (modbus_to_plc(4), XDP_PASS, Reason::Conduit, true),
        (to_hmi(PSH_ACK), XDP_PASS, Reason::Reply, true),
    ]);
    play(&mut k, Some(&mut r), "session", &steps);
    // Narrowed on reload to diagnostics only: the cached read verdict does not survive.
    k.reload(&policy(Some(
        "{ proto: tcp, ports: [502], modbus: { functions: [diagnostics] } }",
    )));
    play(
        &mut k,
        None,
        "after the reload",
        &[(modbus_to_plc(3), XDP_DROP, Reason::ModbusFunction, false)],
    );
}

/// A reset is judged in full and ends the flow: the next packet is not a fast one.
#[test]
fn a_reset_ends_the_flow() {
    require_root();
    let (mut k, _) = kernel::with_policy(&policy(Some(TCP_502)));
    play(
        &mut k,
        None,
        "session and reset",
        &[
            (to_plc(SYN), XDP_PASS, Reason::Conduit, false),
            (to_hmi(SYN_ACK), XDP_PASS, Reason::Reply, false),
            (to_hmi(RST | ACK), XDP_PASS, Reason::Reply, false),
            // The flow is gone: the server's next segment is no reply of anything.
            (to_hmi(ACK), XDP_DROP, Reason::NoConduit, false),
        ],
    );
    let (_, t) = k.run(&to_plc(ACK));
    assert_eq!(t.fast, 0, "no cached verdict after a reset: {t:?}");
    assert_eq!(t.flow, u32::from(flow::FLOW_NEW), "{t:?}");
}

/// Many flows at once (a thousand PLC polls): each one's packets after the first are fast.
#[test]
fn many_flows_each_keep_their_verdict() {
    require_root();
    let yaml = policy(Some(TCP_502)).replace(
        "assets: [{ name: hmi, ip: 10.0.0.20, mac: \"02:00:00:00:00:0a\" }]",
        "assets: [{ name: hmi, ip: 10.0.0.20, mac: \"02:00:00:00:00:0a\" }, { name: hmis, cidr: 10.0.4.0/22 }]",
    );
    let (mut k, _) = kernel::with_policy(&yaml);
    let from = |i: u16, flags| {
        let [hi, lo] = i.to_be_bytes();
        segment(
            ATTACKER_MAC,
            [10, 0, 4 + hi, lo],
            PLC,
            (CLIENT_PORT, 502),
            flags,
        )
    };
    let syns: Vec<Step> = (0..1024)
        .map(|i| (from(i, SYN), XDP_PASS, Reason::Conduit, false))
        .collect();
    play(&mut k, None, "syns", &syns);
    let acks: Vec<Step> = (0..1024)
        .map(|i| (from(i, ACK), XDP_PASS, Reason::Conduit, true))
        .collect();
    play(&mut k, None, "acks", &acks);
}
