//! EtherNet/IP (CIP) inspection in the real XDP program (BPF_PROG_TEST_RUN), frame by frame
//! next to the reference model: an HMI's session on a read-only conduit (session commands,
//! Forward_Open and tag reads pass, connected and unconnected; tag writes, Read Modify Write,
//! attribute writes and Reset are dropped, also inside Unconnected_Send and Multiple Service
//! Packets), framing that fails closed, the controller's answers passing as replies, monitor
//! mode, per-conduit counters, and a reload that narrows an open session.
use conduit_common::{Reason, Verdict, flow, inspect::enip};
use conduit_tests::{
    frames::{cip_multiple, cip_unconnected_send, enip_message, enip_send},
    kernel::{self, ACK, SYN, SYN_ACK, XDP_DROP, XDP_PASS, step},
    require_root,
};

const CLIENT_PORT: u16 = 40_002;
const PORT: u16 = 44_818;
const PSH_ACK: u8 = 0x18;

fn policy(filter: &str, mode: &str) -> String {
    kernel::hmi_plc_policy(
        "enip-test",
        &format!("{{ mode: {mode} }}"),
        &format!(
            "conduits:
  - name: hmi-reads-tags
    from: supervisory
    to: control
    rules:
      - {{ proto: tcp, ports: [{PORT}]{filter} }}
"
        ),
    )
}

const READ_ONLY: &str = ", enip: { services: [read, connection] }";

fn to_plc(payload: &[u8]) -> Vec<u8> {
    kernel::data_segment(true, CLIENT_PORT, PORT, PSH_ACK, payload)
}

fn to_hmi(payload: &[u8]) -> Vec<u8> {
    kernel::data_segment(false, CLIENT_PORT, PORT, PSH_ACK, payload)
}

/// A request with `service` to the tag `Cnt` (a symbolic segment), one element.
fn tag(service: u8) -> Vec<u8> {
    vec![service, 3, 0x91, 3, b'C', b'n', b't', 0, 1, 0]
}

/// A request with `service` to class `class`, instance 1.
fn object(service: u8, class: u8) -> Vec<u8> {
    vec![service, 2, 0x20, class, 0x24, 1]
}

fn handshake(k: &mut kernel::Kernel, r: &mut conduit_tests::reference::Reference) {
    let seg = |flags, to_plc| kernel::data_segment(to_plc, CLIENT_PORT, PORT, flags, &[]);
    assert_eq!(step(k, r, &seg(SYN, true)).1, Reason::Conduit);
    assert_eq!(step(k, r, &seg(SYN_ACK, false)).1, Reason::Reply);
    assert_eq!(step(k, r, &seg(ACK, true)).1, Reason::Conduit);
}

#[test]
fn read_only_conduit_passes_reads_and_drops_writes() {
    require_root();
    let (mut k, mut r) = kernel::with_policy(&policy(READ_ONLY, "enforce"));
    handshake(&mut k, &mut r);
    let forward_open = {
        let mut f = object(enip::LARGE_FORWARD_OPEN, 6);
        f.extend_from_slice(&[0; 12]);
        f
    };
    for (what, payload) in [
        (
            "RegisterSession",
            enip_message(enip::REGISTER_SESSION, &[1, 0, 0, 0]),
        ),
        ("ListIdentity", enip_message(enip::LIST_IDENTITY, &[])),
        ("Large_Forward_Open", enip_send(false, &forward_open)),
        ("Read Tag, connected", enip_send(true, &tag(0x4C))),
        (
            "Read Tag Fragmented, unconnected",
            enip_send(false, &tag(0x52)),
        ),
        ("Get_Attribute_Single", enip_send(false, &object(0x0E, 1))),
        (
            "Get_Attribute_Single in Unconnected_Send",
            enip_send(false, &cip_unconnected_send(&object(0x0E, 1))),
        ),
        (
            "two reads in a Multiple Service Packet",
            enip_send(false, &cip_multiple(&object(0x0E, 1), &object(0x01, 1))),
        ),
        (
            "Forward_Close",
            enip_send(false, &object(enip::FORWARD_CLOSE, 6)),
        ),
        (
            "UnRegisterSession",
            enip_message(enip::UNREGISTER_SESSION, &[]),
        ),
    ] {
        let (action, reason, _) = step(&mut k, &mut r, &to_plc(&payload));
        assert_eq!((action, reason), (XDP_PASS, Reason::Conduit), "{what}");
    }
    // The controller's answer (a Read Tag response) is a reply: not inspected.
    let answer = enip_send(true, &[0xCC, 0, 0, 0, 0xC3, 0, 42, 0]);
    assert_eq!(step(&mut k, &mut r, &to_hmi(&answer)).1, Reason::Reply);
    for (what, payload) in [
        ("Write Tag", enip_send(true, &tag(0x4D))),
        ("Write Tag Fragmented", enip_send(false, &tag(0x53))),
        (
            "Read Modify Write Tag (0x4E to a tag)",
            enip_send(true, &tag(0x4E)),
        ),
        ("Set_Attribute_Single", enip_send(false, &object(0x10, 1))),
        (
            "Reset of the Identity object",
            enip_send(false, &object(0x05, 1)),
        ),
        ("Stop", enip_send(false, &object(0x07, 1))),
        (
            "Reset in Unconnected_Send",
            enip_send(false, &cip_unconnected_send(&object(0x05, 1))),
        ),
        (
            "Reset behind a read in a Multiple Service Packet",
            enip_send(false, &cip_multiple(&object(0x0E, 1), &object(0x05, 1))),
        ),
        (
            "Get_Connection_Data to the Connection Manager",
            enip_send(false, &object(0x56, 6)),
        ),
    ] {
        let (action, reason, _) = step(&mut k, &mut r, &to_plc(&payload));
        assert_eq!((action, reason), (XDP_DROP, Reason::EnipService), "{what}");
    }
    let mut two = enip_message(enip::LIST_IDENTITY, &[]);
    two.extend(enip_send(false, &object(0x05, 1)));
    let mut cut = enip_send(true, &tag(0x4C));
    cut.pop();
    let mut three_items = enip_send(false, &tag(0x4C));
    three_items[30] = 3;
    let nested = cip_unconnected_send(&cip_unconnected_send(&object(0x0E, 1)));
    for (what, payload) in [
        ("a second message behind the first", two),
        ("a message cut short", cut),
        ("three items", three_items),
        (
            "a response from the client",
            enip_send(false, &[0x8E, 0, 0, 0]),
        ),
        ("another command (IndicateStatus)", enip_message(0x72, &[])),
        (
            "Unconnected_Send inside Unconnected_Send",
            enip_send(false, &nested),
        ),
        (
            "a Multiple Service Packet reaching past the window",
            enip_send(true, &cip_multiple(&tag(0x4C), &tag(0x4C))),
        ),
        ("not EtherNet/IP at all", b"GET / HTTP/1.0\r\n\r\n".to_vec()),
    ] {
        let (action, reason, _) = step(&mut k, &mut r, &to_plc(&payload));
        assert_eq!((action, reason), (XDP_DROP, Reason::Malformed), "{what}");
    }
    let count = |reason| kernel::filter_drops(&k, Verdict::Deny, Some(reason)).0;
    assert_eq!(count(Reason::EnipService), 9);
    assert_eq!(count(Reason::Malformed), 8);
    let ids = kernel::filter_drops(&k, Verdict::Deny, None).1;
    assert_eq!(
        ids.into_iter().collect::<Vec<_>>(),
        vec![r.compiled.conduit_ids["hmi-reads-tags"]]
    );
}

#[test]
fn monitor_mode_counts_and_a_reload_narrows_open_sessions() {
    require_root();
    let (mut k, mut r) = kernel::with_policy(&policy(READ_ONLY, "monitor"));
    handshake(&mut k, &mut r);
    let (action, reason, verdict) = step(&mut k, &mut r, &to_plc(&enip_send(true, &tag(0x4D))));
    assert_eq!(
        (action, reason, verdict),
        (XDP_PASS, Reason::EnipService, Verdict::WouldDeny)
    );
    assert_eq!(kernel::filter_drops(&k, Verdict::WouldDeny, None).0, 1);

    let (mut k, mut r) = kernel::with_policy(&policy("", "enforce"));
    handshake(&mut k, &mut r);
    let write = to_plc(&enip_send(true, &tag(0x4D)));
    assert_eq!(step(&mut k, &mut r, &write).0, XDP_PASS);
    k.reload(&policy(READ_ONLY, "enforce"));
    let (action, t) = k.run(&write);
    assert_eq!((action, t.reason), (XDP_DROP, Reason::EnipService as u32));
    let (action, t) = k.run(&to_plc(&enip_send(true, &tag(0x4C))));
    assert_eq!((action, t.reason), (XDP_PASS, Reason::Conduit as u32));
    assert_eq!(t.flow, u32::from(flow::FLOW_FWD));
}
