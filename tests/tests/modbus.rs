//! Modbus/TCP inspection in the real XDP program (BPF_PROG_TEST_RUN), frame by frame next to
//! the reference model: a session on a read-only conduit, framing that fails closed, replies
//! not inspected, monitor mode, per-conduit counters, and a reload that narrows a conduit
//! while a session is open.
use conduit_common::{Reason, Verdict, flow};
use conduit_tests::{
    frames::modbus_adu,
    kernel::{self, ACK, SYN, SYN_ACK, XDP_DROP, XDP_PASS, step},
    require_root,
};

const CLIENT_PORT: u16 = 40_000;

fn policy(filter: &str, mode: &str) -> String {
    format!(
        r#"
version: 1
site: modbus-test
defaults: {{ mode: enforce }}
zones:
  - name: supervisory
    security_level: 2
    assets: [{{ name: hmi, ip: 10.0.0.20 }}]
  - name: control
    security_level: 3
    mode: {mode}
    assets: [{{ name: plc, ip: 10.1.0.10, mac: "02:00:00:00:00:0b" }}]
conduits:
  - name: hmi-reads-plc
    from: supervisory
    to: control
    rules:
      - {{ proto: tcp, ports: [502]{filter} }}
"#
    )
}

const READ_ONLY_UNIT_1: &str = ", modbus: { functions: [read], unit_ids: [1] }";

/// A client-to-server segment with `payload`.
fn to_plc(flags: u8, payload: &[u8]) -> Vec<u8> {
    kernel::data_segment(true, CLIENT_PORT, 502, flags, payload)
}

/// A server-to-client segment with `payload`.
fn to_hmi(flags: u8, payload: &[u8]) -> Vec<u8> {
    kernel::data_segment(false, CLIENT_PORT, 502, flags, payload)
}

fn adu(unit: u8, function: u8, pdu: &[u8]) -> Vec<u8> {
    let (d, n) = modbus_adu(1, unit, function, pdu);
    d[..usize::from(n)].to_vec()
}

const PSH_ACK: u8 = 0x18;

/// Opens the TCP session HMI → PLC:502 (SYN, SYN-ACK, ACK), all allowed.
fn handshake(k: &mut kernel::Kernel, r: &mut conduit_tests::reference::Reference) {
    assert_eq!(step(k, r, &to_plc(SYN, &[])).1, Reason::Conduit);
    assert_eq!(step(k, r, &to_hmi(SYN_ACK, &[])).1, Reason::Reply);
    assert_eq!(step(k, r, &to_plc(ACK, &[])).1, Reason::Conduit);
}

#[test]
fn read_only_conduit_passes_reads_and_drops_writes() {
    require_root();
    let (mut k, mut r) = kernel::with_policy(&policy(READ_ONLY_UNIT_1, "enforce"));
    handshake(&mut k, &mut r);
    // Read holding registers (3), input registers (4), coils (1): pass.
    for f in [3u8, 4, 1] {
        let (action, reason, _) = step(&mut k, &mut r, &to_plc(PSH_ACK, &adu(1, f, &[0, 0, 0, 4])));
        assert_eq!(
            (action, reason),
            (XDP_PASS, Reason::Conduit),
            "function {f}"
        );
        // The server's answer is a reply: not inspected (a write echo passes too).
        let (action, reason, _) = step(&mut k, &mut r, &to_hmi(PSH_ACK, &adu(1, f, &[2, 0, 7])));
        assert_eq!((action, reason), (XDP_PASS, Reason::Reply));
    }
    // Write single register (6), write multiple registers (16), write coil (5), read/write
    // multiple (23), diagnostics (8), a programming code (90): dropped.
    for f in [6u8, 16, 5, 23, 8, 90] {
        let (action, reason, _) = step(&mut k, &mut r, &to_plc(PSH_ACK, &adu(1, f, &[0, 1, 0, 9])));
        assert_eq!(
            (action, reason),
            (XDP_DROP, Reason::ModbusFunction),
            "function {f}"
        );
    }
    // A read to another unit ID.
    let (action, reason, _) = step(&mut k, &mut r, &to_plc(PSH_ACK, &adu(2, 3, &[0, 0, 0, 1])));
    assert_eq!((action, reason), (XDP_DROP, Reason::ModbusUnit));
    // Framing the filter cannot judge: fail closed.
    let mut two = adu(1, 3, &[0, 0, 0, 1]);
    two.extend(adu(1, 6, &[0, 1, 0, 9]));
    let mut wrong_protocol = adu(1, 3, &[0, 0, 0, 1]);
    wrong_protocol[3] = 1;
    let split = adu(1, 3, &[0, 0, 0, 1])[..5].to_vec();
    let mut long = adu(1, 3, &[0, 0, 0, 1]);
    long[5] += 1;
    for (what, payload) in [
        (
            "two ADUs in one segment (a write hidden behind a read)",
            two,
        ),
        ("protocol id 1", wrong_protocol),
        ("an ADU split over segments", split),
        ("a length field past the segment", long),
    ] {
        let (action, reason, _) = step(&mut k, &mut r, &to_plc(PSH_ACK, &payload));
        assert_eq!((action, reason), (XDP_DROP, Reason::Malformed), "{what}");
    }
    // Segments without payload (ACK, FIN) are not inspected; the session stays up.
    let (action, reason, _) = step(&mut k, &mut r, &to_plc(ACK, &[]));
    assert_eq!((action, reason), (XDP_PASS, Reason::Conduit));
    // Per-conduit counters of the filter's drops.
    let count = |reason| kernel::filter_drops(&k, Verdict::Deny, Some(reason)).0;
    assert_eq!(count(Reason::ModbusFunction), 6);
    assert_eq!(count(Reason::ModbusUnit), 1);
    assert_eq!(count(Reason::Malformed), 4);
    let ids = kernel::filter_drops(&k, Verdict::Deny, None).1;
    assert_eq!(
        ids.into_iter().collect::<Vec<_>>(),
        vec![r.compiled.conduit_ids["hmi-reads-plc"]]
    );
}

#[test]
fn a_request_in_the_first_packet_is_inspected_too() {
    require_root();
    let (mut k, mut r) = kernel::with_policy(&policy(READ_ONLY_UNIT_1, "enforce"));
    // No flow yet: the segment is judged as a new flow's first packet.
    let (action, reason, _) = step(&mut k, &mut r, &to_plc(PSH_ACK, &adu(1, 6, &[0, 1, 0, 9])));
    assert_eq!((action, reason), (XDP_DROP, Reason::ModbusFunction));
    let (action, reason, _) = step(&mut k, &mut r, &to_plc(PSH_ACK, &adu(1, 3, &[0, 1, 0, 9])));
    assert_eq!((action, reason), (XDP_PASS, Reason::Conduit));
}

#[test]
fn a_conduit_without_filter_passes_every_function() {
    require_root();
    let (mut k, mut r) = kernel::with_policy(&policy("", "enforce"));
    handshake(&mut k, &mut r);
    for f in [3u8, 6, 16, 90] {
        let (action, reason, _) = step(&mut k, &mut r, &to_plc(PSH_ACK, &adu(1, f, &[0, 1, 0, 9])));
        assert_eq!(
            (action, reason),
            (XDP_PASS, Reason::Conduit),
            "function {f}"
        );
    }
    // Not Modbus at all: no filter, no opinion.
    let (action, _, _) = step(&mut k, &mut r, &to_plc(PSH_ACK, b"hello"));
    assert_eq!(action, XDP_PASS);
}

#[test]
fn monitor_mode_passes_and_counts_would_drop() {
    require_root();
    let (mut k, mut r) = kernel::with_policy(&policy(READ_ONLY_UNIT_1, "monitor"));
    handshake(&mut k, &mut r);
    let (action, reason, verdict) =
        step(&mut k, &mut r, &to_plc(PSH_ACK, &adu(1, 6, &[0, 1, 0, 9])));
    assert_eq!(
        (action, reason, verdict),
        (XDP_PASS, Reason::ModbusFunction, Verdict::WouldDeny)
    );
    // The session goes on: the answer is still a reply, the next read passes.
    assert_eq!(
        step(&mut k, &mut r, &to_hmi(PSH_ACK, &adu(1, 6, &[0, 1, 0, 9]))).1,
        Reason::Reply
    );
    assert_eq!(
        step(&mut k, &mut r, &to_plc(PSH_ACK, &adu(1, 3, &[0, 1, 0, 1]))).2,
        Verdict::Allow
    );
    assert_eq!(kernel::filter_drops(&k, Verdict::WouldDeny, None).0, 1);
}

/// A reload that makes a read-write conduit read-only applies to the session already open:
/// Modbus sessions of HMIs stay up for days, so waiting for new ones would leave writes open.
#[test]
fn a_reload_to_read_only_applies_to_open_sessions() {
    require_root();
    let (mut k, mut r) = kernel::with_policy(&policy("", "enforce"));
    handshake(&mut k, &mut r);
    let write = to_plc(PSH_ACK, &adu(1, 6, &[0, 1, 0, 9]));
    assert_eq!(step(&mut k, &mut r, &write).0, XDP_PASS);

    k.reload(&policy(READ_ONLY_UNIT_1, "enforce"));
    let (action, t) = k.run(&write);
    assert_eq!(action, XDP_DROP);
    assert_eq!(t.reason, Reason::ModbusFunction as u32);
    // The session itself is still tracked: a read on it passes as part of the flow.
    let (action, t) = k.run(&to_plc(PSH_ACK, &adu(1, 3, &[0, 1, 0, 1])));
    assert_eq!((action, t.reason), (XDP_PASS, Reason::Conduit as u32));
    assert_eq!(t.flow, u32::from(flow::FLOW_FWD));
}
