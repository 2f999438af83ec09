//! The fast path in the real XDP program (BPF_PROG_TEST_RUN): packets of a flow whose
//! direction already has a verdict under the live policy are judged from the flow entry
//! alone. These tests check, from the program's own trace, when it is taken and, above all,
//! when it must not be: another source MAC (spoofing), a reload (every cached verdict is
//! void under a new generation), a Modbus segment the filter denies, a reset.
use conduit_agent::{policy::load::load_bytes, reference::monotonic_ns};
use conduit_common::{Reason, Trace, flow};
use conduit_tests::{
    frames::{self, L4, MAC_A, MAC_B, modbus_adu},
    kernel::{self, Kernel, XDP_DROP, XDP_PASS},
    require_root,
};

const HMI: [u8; 4] = [10, 0, 0, 20];
const PLC: [u8; 4] = [10, 1, 0, 10];
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
    format!(
        r#"
version: 1
site: fast-path-test
defaults: {{ mode: enforce }}
zones:
  - name: supervisory
    security_level: 2
    assets: [{{ name: hmi, ip: 10.0.0.20, mac: "02:00:00:00:00:0a" }}]
  - name: control
    security_level: 3
    assets: [{{ name: plc, ip: 10.1.0.10, mac: "02:00:00:00:00:0b" }}]
{conduit}"#
    )
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
    let mut data = [0u8; 24];
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

const SYN: u8 = 0x02;
const SYN_ACK: u8 = 0x12;
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;
const RST: u8 = 0x04;

/// Loads `yaml` as the next generation.
fn reload(k: &mut Kernel, yaml: &str) {
    let slot = k.dp.next_slot().unwrap();
    let (loaded, d) = load_bytes(yaml.as_bytes(), slot);
    let loaded = loaded.unwrap_or_else(|| panic!("{d}"));
    k.dp.apply(&loaded.compiled).unwrap();
}

/// Runs a frame; returns the action and the trace.
fn run(k: &mut Kernel, frame: &[u8]) -> (u32, Trace) {
    k.run(frame)
}

fn expect(k: &mut Kernel, frame: &[u8], action: u32, reason: Reason, fast: bool, what: &str) {
    let (a, t) = run(k, frame);
    assert_eq!(
        (a, Reason::try_from(t.reason).unwrap(), t.fast == 1),
        (action, reason, fast),
        "{what}: trace {t:?}"
    );
}

/// The handshake is judged in full; from then on both directions take the fast path, with
/// the same verdict, conduit, zones and flow relation as the full decision (checked against
/// the reference model frame by frame), and the per-conduit counters still count.
#[test]
fn established_flows_take_the_fast_path_with_the_full_verdict() {
    require_root();
    let (mut k, mut r) = kernel::with_policy(&policy(Some(TCP_502)));
    let frames = [
        (to_plc(SYN), Reason::Conduit, false),
        (to_hmi(SYN_ACK), Reason::Reply, false),
        (to_plc(ACK), Reason::Conduit, true),
        (to_hmi(ACK), Reason::Reply, true),
        (to_plc(PSH_ACK), Reason::Conduit, true),
        (to_hmi(PSH_ACK), Reason::Reply, true),
    ];
    let mut conduit = None;
    for (i, (f, reason, fast)) in frames.iter().enumerate() {
        let (action, t) = run(&mut k, f);
        let want = r.judge(f, monotonic_ns());
        assert_eq!(kernel::as_trace(&want, r.last_fast, t.seq), t, "frame {i}");
        assert_eq!(
            (action, Reason::try_from(t.reason).unwrap(), t.fast == 1),
            (XDP_PASS, *reason, *fast),
            "frame {i}: {t:?}"
        );
        assert_eq!(*conduit.get_or_insert(t.conduit), t.conduit, "frame {i}");
    }
    let stats = k.dp.conduit_stats().unwrap();
    let c = stats.get(&conduit.unwrap()).copied().unwrap_or_default();
    assert_eq!(c.packets, frames.len() as u64, "per-conduit packets");
}

/// A frame of the flow from another MAC address never uses the cached verdict: the binding
/// checks run and drop it; the real client's next packet is fast again.
#[test]
fn another_source_mac_takes_the_full_path_and_is_dropped() {
    require_root();
    let (mut k, _) = kernel::with_policy(&policy(Some(TCP_502)));
    expect(
        &mut k,
        &to_plc(SYN),
        XDP_PASS,
        Reason::Conduit,
        false,
        "syn",
    );
    expect(
        &mut k,
        &to_hmi(SYN_ACK),
        XDP_PASS,
        Reason::Reply,
        false,
        "syn-ack",
    );
    expect(&mut k, &to_plc(ACK), XDP_PASS, Reason::Conduit, true, "ack");
    let spoofed = segment(ATTACKER_MAC, HMI, PLC, (CLIENT_PORT, 502), ACK);
    expect(
        &mut k,
        &spoofed,
        XDP_DROP,
        Reason::Spoofed,
        false,
        "client spoof",
    );
    let spoofed = segment(ATTACKER_MAC, PLC, HMI, (502, CLIENT_PORT), ACK);
    expect(
        &mut k,
        &spoofed,
        XDP_DROP,
        Reason::Spoofed,
        false,
        "server spoof",
    );
    expect(
        &mut k,
        &to_plc(ACK),
        XDP_PASS,
        Reason::Conduit,
        true,
        "ack after",
    );
    expect(
        &mut k,
        &to_hmi(ACK),
        XDP_PASS,
        Reason::Reply,
        true,
        "reply after",
    );
}

/// A reload voids every cached verdict: without the conduit the open session is dropped at
/// once (no_conduit), with it again the next packet is judged in full, then fast.
#[test]
fn a_reload_voids_cached_verdicts() {
    require_root();
    let (mut k, _) = kernel::with_policy(&policy(Some(TCP_502)));
    expect(
        &mut k,
        &to_plc(SYN),
        XDP_PASS,
        Reason::Conduit,
        false,
        "syn",
    );
    expect(
        &mut k,
        &to_hmi(SYN_ACK),
        XDP_PASS,
        Reason::Reply,
        false,
        "syn-ack",
    );
    expect(&mut k, &to_plc(ACK), XDP_PASS, Reason::Conduit, true, "ack");
    expect(&mut k, &to_hmi(ACK), XDP_PASS, Reason::Reply, true, "reply");

    reload(&mut k, &policy(None));
    expect(
        &mut k,
        &to_plc(ACK),
        XDP_DROP,
        Reason::NoConduit,
        false,
        "ack, no conduit",
    );
    expect(
        &mut k,
        &to_hmi(ACK),
        XDP_DROP,
        Reason::NoConduit,
        false,
        "reply, no conduit",
    );
    expect(
        &mut k,
        &to_plc(ACK),
        XDP_DROP,
        Reason::NoConduit,
        false,
        "ack, again",
    );

    reload(&mut k, &policy(Some(TCP_502)));
    expect(
        &mut k,
        &to_plc(ACK),
        XDP_PASS,
        Reason::Conduit,
        false,
        "ack, conduit back",
    );
    expect(
        &mut k,
        &to_plc(ACK),
        XDP_PASS,
        Reason::Conduit,
        true,
        "ack, cached again",
    );
    expect(
        &mut k,
        &to_hmi(ACK),
        XDP_PASS,
        Reason::Reply,
        false,
        "reply, conduit back",
    );
    expect(
        &mut k,
        &to_hmi(ACK),
        XDP_PASS,
        Reason::Reply,
        true,
        "reply, cached again",
    );
}

/// With a Modbus filter every request is still inspected: reads are fast, a write on the
/// same session is dropped by the full path, and the reads after it are fast again.
#[test]
fn modbus_requests_are_inspected_on_the_fast_path() {
    require_root();
    let (mut k, mut r) = kernel::with_policy(&policy(Some(READ_ONLY)));
    let frames = [
        (to_plc(SYN), XDP_PASS, Reason::Conduit, false),
        (to_hmi(SYN_ACK), XDP_PASS, Reason::Reply, false),
        (to_plc(ACK), XDP_PASS, Reason::Conduit, true),
        (modbus_to_plc(3), XDP_PASS, Reason::Conduit, true),
        (modbus_to_plc(6), XDP_DROP, Reason::ModbusFunction, false),
        (modbus_to_plc(16), XDP_DROP, Reason::ModbusFunction, false),
        (modbus_to_plc(4), XDP_PASS, Reason::Conduit, true),
        (to_hmi(PSH_ACK), XDP_PASS, Reason::Reply, true),
    ];
    for (i, (f, action, reason, fast)) in frames.iter().enumerate() {
        let (a, t) = run(&mut k, f);
        let want = r.judge(f, monotonic_ns());
        assert_eq!(kernel::as_trace(&want, r.last_fast, t.seq), t, "frame {i}");
        assert_eq!(
            (a, Reason::try_from(t.reason).unwrap(), t.fast == 1),
            (*action, *reason, *fast),
            "frame {i}: {t:?}"
        );
    }
    // Narrowed to no Modbus at all on reload: the cached read verdict does not survive.
    reload(
        &mut k,
        &policy(Some(
            "{ proto: tcp, ports: [502], modbus: { functions: [diagnostics] } }",
        )),
    );
    expect(
        &mut k,
        &modbus_to_plc(3),
        XDP_DROP,
        Reason::ModbusFunction,
        false,
        "read after reload",
    );
}

/// A reset is judged in full and ends the flow: the next packet is not a fast one.
#[test]
fn a_reset_ends_the_flow() {
    require_root();
    let (mut k, _) = kernel::with_policy(&policy(Some(TCP_502)));
    expect(
        &mut k,
        &to_plc(SYN),
        XDP_PASS,
        Reason::Conduit,
        false,
        "syn",
    );
    expect(
        &mut k,
        &to_hmi(SYN_ACK),
        XDP_PASS,
        Reason::Reply,
        false,
        "syn-ack",
    );
    expect(
        &mut k,
        &to_hmi(RST | ACK),
        XDP_PASS,
        Reason::Reply,
        false,
        "rst",
    );
    // The flow is gone: the server's next segment is no reply of anything.
    expect(
        &mut k,
        &to_hmi(ACK),
        XDP_DROP,
        Reason::NoConduit,
        false,
        "after rst",
    );
    let (_, t) = run(&mut k, &to_plc(ACK));
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
    for i in 0..1024 {
        expect(
            &mut k,
            &from(i, SYN),
            XDP_PASS,
            Reason::Conduit,
            false,
            "syn",
        );
    }
    for i in 0..1024 {
        expect(
            &mut k,
            &from(i, ACK),
            XDP_PASS,
            Reason::Conduit,
            true,
            "ack",
        );
    }
}
