//! Learning in the real XDP program (BPF_PROG_TEST_RUN, `conduit run --learn-dir`): what the
//! datapath records for `conduit discover`, read back the way the agent drains it. Packets
//! of established flows take the fast path and record nothing but a Modbus request not yet
//! learned for their flow; a program loaded without learning records nothing at all.
use std::collections::BTreeMap;

use conduit_common::{
    Reason, Verdict,
    learn::{LearnKey, LearnVal, has_function},
};
use conduit_tests::reference::monotonic_ns;
use conduit_tests::{
    frames::{self, L4, MAC_A, MAC_B, modbus_adu},
    kernel::{self, ACK, HMI, Kernel, PLC, SYN, SYN_ACK, XDP_DROP, XDP_PASS},
    require_root,
};

const STRANGER: [u8; 4] = [192, 168, 77, 7];
const CLIENT_PORT: u16 = 40_200;

fn policy(mode: &str, conduit: bool) -> String {
    let conduits = if conduit {
        "conduits:\n  - name: hmi-to-plc\n    from: supervisory\n    to: control\n    rules:\n      - { proto: tcp, ports: [502] }\n"
    } else {
        "conduits: []\n"
    };
    kernel::hmi_plc_policy("learn-test", &format!("{{ mode: {mode} }}"), conduits)
}

const PSH_ACK: u8 = 0x18;

fn tcp(mac: [u8; 6], src: [u8; 4], dst: [u8; 4], (sport, dport): (u16, u16), flags: u8) -> Vec<u8> {
    frames::v4(
        mac,
        src,
        dst,
        L4::Tcp {
            sport,
            dport,
            flags,
        },
    )
}

fn request(function: u8) -> Vec<u8> {
    let (data, len) = modbus_adu(7, 1, function, &[0, 0, 0, 2]);
    frames::v4(
        MAC_A,
        HMI,
        PLC,
        L4::TcpData {
            sport: CLIENT_PORT,
            dport: 502,
            flags: PSH_ACK,
            data,
            len,
        },
    )
}

fn to_plc(flags: u8) -> Vec<u8> {
    tcp(MAC_A, HMI, PLC, (CLIENT_PORT, 502), flags)
}

fn to_hmi(flags: u8) -> Vec<u8> {
    tcp(MAC_B, PLC, HMI, (502, CLIENT_PORT), flags)
}

type Addr = [u8; 4];
/// (client, server, proto, port) → record.
type Flows = BTreeMap<(Addr, Addr, u8, u16), LearnVal>;
/// (client, server, unit) → function codes.
type Requests = BTreeMap<(Addr, Addr, u8), [u64; 2]>;

/// What the kernel learned, drained (and so deleted there).
fn drain(k: &Kernel) -> (Flows, Requests) {
    let l = k.dp.drain_learned().expect("drain the learning maps");
    let four = |a: &[u8; 16]| [a[0], a[1], a[2], a[3]];
    let flows = l
        .flows
        .iter()
        .map(|(k, v): &(LearnKey, LearnVal)| {
            ((four(&k.client), four(&k.server), k.proto, k.port), *v)
        })
        .collect();
    let modbus = l
        .modbus
        .iter()
        .map(|(k, v)| ((four(&k.client), four(&k.server), k.unit), v.functions))
        .collect();
    (flows, modbus)
}

/// Runs `frame`; checks the action and whether the fast path decided.
fn step(k: &mut Kernel, frame: &[u8], action: u32, fast: bool, what: &str) {
    let (a, t) = k.run(frame);
    assert_eq!((a, t.fast == 1), (action, fast), "{what}: trace {t:?}");
}

#[test]
fn learning_records_flows_answers_denials_and_modbus_requests() {
    require_root();
    let (mut k, _) = kernel::learning(&policy("enforce", true));
    let t0 = monotonic_ns();
    step(&mut k, &to_plc(SYN), XDP_PASS, false, "SYN");
    step(&mut k, &to_hmi(SYN_ACK), XDP_PASS, false, "SYN-ACK");
    step(&mut k, &to_plc(ACK), XDP_PASS, true, "ACK");
    step(&mut k, &to_hmi(ACK), XDP_PASS, true, "ACK back");
    // Requests on the fast path: the first of each (unit, function) change is learned.
    for f in [3, 3, 16, 3] {
        step(&mut k, &request(f), XDP_PASS, true, "Modbus request");
    }
    // A scan of the PLC from the HMI: no conduit.
    for port in [22, 23] {
        step(
            &mut k,
            &tcp(MAC_A, HMI, PLC, (CLIENT_PORT + 1, port), SYN),
            XDP_DROP,
            false,
            "scan",
        );
    }
    // A stranger (the unknown zone) tries Modbus, twice.
    for _ in 0..2 {
        step(
            &mut k,
            &tcp([2, 0, 0, 0, 0, 0x77], STRANGER, PLC, (50_000, 502), SYN),
            XDP_DROP,
            false,
            "stranger",
        );
    }
    let (flows, modbus) = drain(&k);
    assert_eq!(flows.len(), 4, "{flows:#?}");
    let poll = &flows[&(HMI, PLC, 6, 502)];
    assert_eq!(
        (
            poll.flows,
            poll.answered,
            poll.denied,
            poll.client_mac,
            poll.flags
        ),
        (1, 1, 0, MAC_A, 0),
        "{poll:?}"
    );
    assert_eq!(
        (
            Verdict::try_from(u32::from(poll.verdict)),
            Reason::try_from(u32::from(poll.reason))
        ),
        (Ok(Verdict::Allow), Ok(Reason::Conduit))
    );
    // The datapath's clock is CLOCK_MONOTONIC_COARSE: up to a tick behind.
    assert!(
        poll.first_seen + 10_000_000 >= t0 && poll.last_seen >= poll.first_seen,
        "{poll:?}"
    );
    for port in [22, 23] {
        let s = &flows[&(HMI, PLC, 6, port)];
        assert_eq!(
            (s.flows, s.answered, s.denied),
            (0, 0, 1),
            "port {port}: {s:?}"
        );
        assert_eq!(Reason::try_from(u32::from(s.reason)), Ok(Reason::NoConduit));
    }
    let s = &flows[&(STRANGER, PLC, 6, 502)];
    assert_eq!((s.flows, s.answered, s.denied), (0, 0, 2), "{s:?}");
    assert_eq!(modbus.len(), 1, "{modbus:?}");
    let fcs = modbus[&(HMI, PLC, 1)];
    let seen: Vec<u8> = (0..128).filter(|f| has_function(&fcs, *f)).collect();
    assert_eq!(seen, [3, 16]);
    // Drained means gone from the kernel: the next drain has only what came since.
    step(
        &mut k,
        &request(4),
        XDP_PASS,
        true,
        "Modbus request after the drain",
    );
    let (flows, modbus) = drain(&k);
    assert!(flows.is_empty(), "{flows:?}");
    let seen: Vec<u8> = (0..128)
        .filter(|f| has_function(&modbus[&(HMI, PLC, 1)], *f))
        .collect();
    assert_eq!(seen, [4]);
    assert_eq!(k.dp.learn_dropped().unwrap(), [0, 0]);
}

/// Monitor mode (how a plant is learned before it has a policy): flows no conduit allows
/// pass and are learned; their packets never take the fast path, so every request goes
/// through the full path, which learns the same way.
#[test]
fn monitor_mode_flows_are_learned() {
    require_root();
    let (mut k, _) = kernel::learning(&policy("monitor", false));
    step(&mut k, &to_plc(SYN), XDP_PASS, false, "SYN");
    step(&mut k, &to_hmi(SYN_ACK), XDP_PASS, false, "SYN-ACK");
    step(&mut k, &to_plc(ACK), XDP_PASS, false, "ACK");
    step(&mut k, &request(3), XDP_PASS, false, "read");
    step(&mut k, &request(3), XDP_PASS, false, "read again");
    step(&mut k, &request(6), XDP_PASS, false, "write");
    // An echo request and its reply: port 8 << 8 in the kernel's key.
    let echo = |mac, src, dst, ty| frames::v4(mac, src, dst, L4::Icmp { ty, code: 0, id: 9 });
    step(
        &mut k,
        &echo(MAC_A, HMI, PLC, 8),
        XDP_PASS,
        false,
        "echo request",
    );
    step(
        &mut k,
        &echo(MAC_B, PLC, HMI, 0),
        XDP_PASS,
        false,
        "echo reply",
    );
    // A scan of a closed port: the reset refuses, it does not answer.
    step(
        &mut k,
        &tcp(MAC_A, HMI, PLC, (CLIENT_PORT, 23), SYN),
        XDP_PASS,
        false,
        "scan",
    );
    step(
        &mut k,
        &tcp(MAC_B, PLC, HMI, (23, CLIENT_PORT), 0x14),
        XDP_PASS,
        false,
        "RST-ACK",
    );
    let (flows, modbus) = drain(&k);
    let scan = &flows[&(HMI, PLC, 6, 23)];
    assert_eq!((scan.flows, scan.answered), (1, 0), "{scan:?}");
    let poll = &flows[&(HMI, PLC, 6, 502)];
    assert_eq!(
        (poll.flows, poll.answered, poll.denied),
        (1, 1, 0),
        "{poll:?}"
    );
    assert_eq!(
        Verdict::try_from(u32::from(poll.verdict)),
        Ok(Verdict::WouldDeny)
    );
    let ping = &flows[&(HMI, PLC, 1, 8 << 8)];
    assert_eq!((ping.flows, ping.answered), (1, 1), "{ping:?}");
    let seen: Vec<u8> = (0..128)
        .filter(|f| has_function(&modbus[&(HMI, PLC, 1)], *f))
        .collect();
    assert_eq!(seen, [3, 6]);
}

/// Loaded without learning (every agent without --learn-dir), the program records nothing.
#[test]
fn without_learning_nothing_is_recorded() {
    require_root();
    let (mut k, _) = kernel::with_policy(&policy("enforce", true));
    step(&mut k, &to_plc(SYN), XDP_PASS, false, "SYN");
    step(&mut k, &to_hmi(SYN_ACK), XDP_PASS, false, "SYN-ACK");
    step(&mut k, &request(3), XDP_PASS, true, "request");
    step(
        &mut k,
        &tcp(MAC_A, HMI, PLC, (CLIENT_PORT, 22), SYN),
        XDP_DROP,
        false,
        "scan",
    );
    let (flows, modbus) = drain(&k);
    assert!(
        flows.is_empty() && modbus.is_empty(),
        "{flows:?} {modbus:?}"
    );
}

/// The kernel's store is bounded and never evicts: a flood of distinct sources fills it, and
/// what does not fit is counted (conduit_learn_dropped_total{store="kernel"}).
#[test]
fn a_full_store_counts_what_does_not_fit() {
    require_root();
    use aya::programs::{TestRun as _, TestRunOptions};
    // The benchmarks' object, for its program that varies the source address.
    let options = conduit_agent::datapath::LoadOptions {
        learn: true,
        bench: true,
        ..Default::default()
    };
    let (mut k, _) = kernel::with_load(&policy("enforce", true), options);
    let max = conduit_common::learn::MAX_LEARN as usize;
    let extra = 1000;
    // The benchmark program varies the source's last two bytes: 10.2.x.y (unknown) →
    // PLC:502 from 65,536 distinct sources fills the store, then 10.3.x.y adds `extra` more.
    k.dp.set_bench_sources(1 << 17).unwrap();
    for (base, runs) in [([10, 2, 0, 0], max), ([10, 3, 0, 0], extra)] {
        let frame = tcp(MAC_A, base, PLC, (40_000, 502), SYN);
        let prog = k.dp.bench_program("conduit_bench_vary").unwrap();
        prog.test_run(TestRunOptions {
            data_in: Some(&frame),
            repeat: runs as u32,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    }
    let dropped = k.dp.learn_dropped().unwrap();
    let (flows, _) = drain(&k);
    assert_eq!(flows.len(), max, "the store holds exactly its maximum");
    assert_eq!(
        dropped[0] as usize, extra,
        "every record that did not fit is counted"
    );
}
