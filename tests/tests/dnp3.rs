//! DNP3 inspection in the real XDP program (BPF_PROG_TEST_RUN), frame by frame next to the
//! reference model: a master's session on a read-only conduit (reads and confirms pass;
//! write, operate, restart, file and configuration requests are dropped), outstation
//! addresses, link-layer services, framing that fails closed, the outstation's responses and
//! unsolicited messages passing as replies, monitor mode, per-conduit counters, and a reload
//! that narrows the filter of an open session.
use conduit_common::{Reason, Verdict, flow};
use conduit_tests::{
    frames::dnp3_frame,
    kernel::{self, ACK, SYN, SYN_ACK, XDP_DROP, XDP_PASS, step},
    require_root,
};

const MASTER_PORT: u16 = 40_001;
const PORT: u16 = 20_000;
const OUTSTATION: u16 = 10;
const MASTER: u16 = 1;
const PSH_ACK: u8 = 0x18;
/// Link control of a master's request: DIR, PRM, unconfirmed user data.
const REQUEST: u8 = 0xC4;

fn policy(filter: &str, mode: &str) -> String {
    kernel::hmi_plc_policy(
        "dnp3-test",
        &format!("{{ mode: {mode} }}"),
        &format!(
            "conduits:
  - name: scada-polls-rtu
    from: supervisory
    to: control
    rules:
      - {{ proto: tcp, ports: [{PORT}]{filter} }}
"
        ),
    )
}

const READ_ONLY: &str = ", dnp3: { functions: [read, unsolicited], outstations: [10] }";

fn to_outstation(payload: &[u8]) -> Vec<u8> {
    kernel::data_segment(true, MASTER_PORT, PORT, PSH_ACK, payload)
}

fn to_master(payload: &[u8]) -> Vec<u8> {
    kernel::data_segment(false, MASTER_PORT, PORT, PSH_ACK, payload)
}

/// A frame with `control` and `user` data from the master to `outstation`.
fn frame(outstation: u16, control: u8, user: &[u8]) -> Vec<u8> {
    let (d, n) = dnp3_frame(outstation, MASTER, control, user);
    d[..usize::from(n)].to_vec()
}

/// A request with `function` and `objects`, one transport segment, one fragment.
fn request(outstation: u16, function: u8, objects: &[u8]) -> Vec<u8> {
    let mut user = vec![0xC0, 0xC0, function];
    user.extend_from_slice(objects);
    frame(outstation, REQUEST, &user)
}

/// An integrity poll's objects: class 1, 2, 3 and 0 data (g60v2..v4, v1, all).
const CLASSES: &[u8] = &[60, 2, 6, 60, 3, 6, 60, 4, 6, 60, 1, 6];

fn handshake(k: &mut kernel::Kernel, r: &mut conduit_tests::reference::Reference) {
    let seg = |flags, to_rtu| kernel::data_segment(to_rtu, MASTER_PORT, PORT, flags, &[]);
    assert_eq!(step(k, r, &seg(SYN, true)).1, Reason::Conduit);
    assert_eq!(step(k, r, &seg(SYN_ACK, false)).1, Reason::Reply);
    assert_eq!(step(k, r, &seg(ACK, true)).1, Reason::Conduit);
}

#[test]
fn read_only_conduit_passes_polls_and_drops_commands() {
    require_root();
    let (mut k, mut r) = kernel::with_policy(&policy(READ_ONLY, "enforce"));
    handshake(&mut k, &mut r);
    // An integrity poll, a confirm, enabling unsolicited responses: pass.
    for (what, f, objects) in [
        ("read", 1u8, CLASSES),
        ("confirm", 0, &[][..]),
        ("enable unsolicited", 20, &[60, 2, 6][..]),
    ] {
        let (action, reason, _) = step(
            &mut k,
            &mut r,
            &to_outstation(&request(OUTSTATION, f, objects)),
        );
        assert_eq!((action, reason), (XDP_PASS, Reason::Conduit), "{what}");
    }
    // The outstation's response and an unsolicited response (with its confirm request bit)
    // are replies: not inspected.
    let response = frame(MASTER, 0x44, &[0xC0, 0xC0, 129, 0, 0, 1, 2, 0, 0, 0]);
    let unsolicited = frame(MASTER, 0x44, &[0xC1, 0xF0, 130, 0, 0]);
    for payload in [response, unsolicited] {
        let (action, reason, _) = step(&mut k, &mut r, &to_master(&payload));
        assert_eq!((action, reason), (XDP_PASS, Reason::Reply));
    }
    // Write, select, operate, direct operate (a CROB), cold and warm restart, stop
    // application, open file: dropped.
    let crob = [12, 1, 0x28, 1, 0, 0, 0, 3, 1, 0xE8, 3, 0, 0, 0, 0, 0, 0, 0];
    for f in [2u8, 3, 4, 5, 6, 13, 14, 18, 25] {
        let (action, reason, _) = step(
            &mut k,
            &mut r,
            &to_outstation(&request(OUTSTATION, f, &crob)),
        );
        assert_eq!(
            (action, reason),
            (XDP_DROP, Reason::Dnp3Function),
            "function {f}"
        );
    }
    // A read to another outstation, and to the broadcast address.
    for dest in [11u16, 0xffff] {
        let (action, reason, _) = step(&mut k, &mut r, &to_outstation(&request(dest, 1, CLASSES)));
        assert_eq!((action, reason), (XDP_DROP, Reason::Dnp3Address), "{dest}");
    }
    // Link services without user data pass: reset link states, request link status, the
    // master's link ACK.
    for control in [0xC0u8, 0xC9, 0x80] {
        let (action, reason, _) = step(
            &mut k,
            &mut r,
            &to_outstation(&frame(OUTSTATION, control, &[])),
        );
        assert_eq!(
            (action, reason),
            (XDP_PASS, Reason::Conduit),
            "control {control:#x}"
        );
    }
    // Framing the filter cannot judge: fail closed.
    let read = request(OUTSTATION, 1, CLASSES);
    let mut two = read.clone();
    two.extend(request(OUTSTATION, 5, &crob));
    let mut bad_start = read.clone();
    bad_start[1] = 0x65;
    let mut bad_header_crc = read.clone();
    bad_header_crc[9] ^= 0x80;
    let mut bad_block_crc = read.clone();
    bad_block_crc[26] ^= 1;
    let not_first_segment = frame(OUTSTATION, REQUEST, &[0x81, 0xC0, 5, 12, 1]);
    let not_first_fragment = frame(OUTSTATION, REQUEST, &[0xC0, 0x40, 5, 12, 1]);
    let from_outstation = frame(OUTSTATION, 0x44, &[0xC0, 0xC0, 5]);
    for (what, payload) in [
        (
            "two frames in one segment (an operate hidden behind a read)",
            two,
        ),
        ("wrong start bytes", bad_start),
        ("wrong header CRC", bad_header_crc),
        ("wrong CRC of the first data block", bad_block_crc),
        ("a frame cut short", read[..20].to_vec()),
        ("not the first transport segment", not_first_segment),
        ("not the first application fragment", not_first_fragment),
        ("DIR clear: not from a master", from_outstation),
        (
            "a link service carrying user data",
            frame(OUTSTATION, 0xC0, &[0xC0, 0xC0, 1]),
        ),
        ("not DNP3 at all", b"GET / HTTP/1.0\r\n\r\n".to_vec()),
    ] {
        let (action, reason, _) = step(&mut k, &mut r, &to_outstation(&payload));
        assert_eq!((action, reason), (XDP_DROP, Reason::Malformed), "{what}");
    }
    // The session is still up.
    let (action, reason, _) = step(&mut k, &mut r, &to_outstation(&read));
    assert_eq!((action, reason), (XDP_PASS, Reason::Conduit));
    // Per-conduit counters of the filter's drops.
    let count = |reason| kernel::filter_drops(&k, Verdict::Deny, Some(reason)).0;
    assert_eq!(count(Reason::Dnp3Function), 9);
    assert_eq!(count(Reason::Dnp3Address), 2);
    assert_eq!(count(Reason::Malformed), 10);
    let ids = kernel::filter_drops(&k, Verdict::Deny, None).1;
    assert_eq!(
        ids.into_iter().collect::<Vec<_>>(),
        vec![r.compiled.conduit_ids["scada-polls-rtu"]]
    );
}

#[test]
fn a_rule_without_dnp3_passes_everything_and_monitor_mode_counts() {
    require_root();
    let (mut k, mut r) = kernel::with_policy(&policy("", "enforce"));
    handshake(&mut k, &mut r);
    for f in [1u8, 5, 13] {
        let (action, _, _) = step(&mut k, &mut r, &to_outstation(&request(OUTSTATION, f, &[])));
        assert_eq!(action, XDP_PASS, "function {f}");
    }
    let (mut k, mut r) = kernel::with_policy(&policy(READ_ONLY, "monitor"));
    handshake(&mut k, &mut r);
    let (action, reason, verdict) = step(
        &mut k,
        &mut r,
        &to_outstation(&request(OUTSTATION, 13, &[])),
    );
    assert_eq!(
        (action, reason, verdict),
        (XDP_PASS, Reason::Dnp3Function, Verdict::WouldDeny)
    );
    assert_eq!(kernel::filter_drops(&k, Verdict::WouldDeny, None).0, 1);
}

/// A reload that narrows the filter applies to the session already open: SCADA sessions stay
/// up for months.
#[test]
fn a_reload_to_read_only_applies_to_open_sessions() {
    require_root();
    let (mut k, mut r) =
        kernel::with_policy(&policy(", dnp3: { functions: [read, control] }", "enforce"));
    handshake(&mut k, &mut r);
    let operate = to_outstation(&request(OUTSTATION, 5, &[12, 1]));
    assert_eq!(step(&mut k, &mut r, &operate).0, XDP_PASS);
    k.reload(&policy(READ_ONLY, "enforce"));
    let (action, t) = k.run(&operate);
    assert_eq!((action, t.reason), (XDP_DROP, Reason::Dnp3Function as u32));
    let (action, t) = k.run(&to_outstation(&request(OUTSTATION, 1, CLASSES)));
    assert_eq!((action, t.reason), (XDP_PASS, Reason::Conduit as u32));
    assert_eq!(t.flow, u32::from(flow::FLOW_FWD));
}
