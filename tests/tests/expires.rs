//! Expiring conduits in the real XDP program (BPF_PROG_TEST_RUN; SPEC §8, issue 17): from the
//! instant a conduit's `expires` passes, the datapath itself allows nothing through it, new
//! flows or established ones (whose fast path no longer applies), replies included; no agent
//! takes part. Every frame is compared with the reference model, which reads the same clock
//! (CLOCK_TAI).
use std::time::{Duration, SystemTime};

use conduit_agent::reference::monotonic_ns;
use conduit_common::Reason;
use conduit_tests::{
    frames::{self, L4, MAC_A, MAC_B},
    kernel::{self, Kernel, XDP_DROP, XDP_PASS},
    require_root,
};

const HMI: [u8; 4] = [10, 0, 0, 20];
const PLC: [u8; 4] = [10, 1, 0, 10];

fn policy(expires: &str) -> String {
    let conduits = format!(
        "conduits:
  - name: vendor-access
    from: supervisory
    to: control
    expires: \"{expires}\"
    rules: [{{ proto: tcp, ports: [22] }}]
  - name: polling
    from: supervisory
    to: control
    rules: [{{ proto: tcp, ports: [502] }}]
"
    );
    kernel::hmi_plc_policy("expires-test", "{}", &conduits)
}

const SYN: u8 = 0x02;
const SYN_ACK: u8 = 0x12;
const ACK: u8 = 0x10;

fn to_plc(port: u16, flags: u8) -> Vec<u8> {
    let l4 = L4::Tcp {
        sport: 40_300,
        dport: port,
        flags,
    };
    frames::v4(MAC_A, HMI, PLC, l4)
}

fn to_hmi(port: u16, flags: u8) -> Vec<u8> {
    let l4 = L4::Tcp {
        sport: port,
        dport: 40_300,
        flags,
    };
    frames::v4(MAC_B, PLC, HMI, l4)
}

/// Runs `frame` through the kernel and the reference; checks action, reason and whether the
/// fast path decided.
fn step(
    k: &mut Kernel,
    r: &mut conduit_agent::reference::Reference,
    frame: &[u8],
    want: (u32, Reason, bool),
    what: &str,
) {
    let (a, t) = k.run(frame);
    let d = r.judge(frame, monotonic_ns());
    assert_eq!(
        kernel::as_trace(&d, r.last_fast, t.seq),
        t,
        "{what}: kernel and reference disagree"
    );
    assert_eq!(
        (a, Reason::try_from(t.reason).unwrap(), t.fast == 1),
        want,
        "{what}: {t:?}"
    );
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn an_expired_conduit_allows_nothing_new_or_established() {
    require_root();
    // Loaded first (which takes seconds on a busy machine), then the policy whose conduit
    // ends 4 s from now (whole seconds, as `expires` is judged) goes live.
    let (mut k, _) = kernel::with_policy(&policy("2099-01-01T00:00:00Z"));
    let end = unix_now() + 4;
    let expires = conduit_agent::agent::audit::rfc3339(u128::from(end) * 1_000_000_000);
    let mut r = conduit_agent::reference::Reference::new(k.reload(&policy(&expires)));
    let pass = |reason, fast| (XDP_PASS, reason, fast);
    // Before the end: a session through the conduit, and one through the other.
    for port in [22, 502] {
        step(
            &mut k,
            &mut r,
            &to_plc(port, SYN),
            pass(Reason::Conduit, false),
            "SYN",
        );
        step(
            &mut k,
            &mut r,
            &to_hmi(port, SYN_ACK),
            pass(Reason::Reply, false),
            "SYN-ACK",
        );
        step(
            &mut k,
            &mut r,
            &to_plc(port, ACK),
            pass(Reason::Conduit, true),
            "ACK",
        );
        step(
            &mut k,
            &mut r,
            &to_hmi(port, ACK),
            pass(Reason::Reply, true),
            "ACK back",
        );
    }
    assert!(
        unix_now() < end,
        "the machine took more than 4 s for 8 frames: the test's premise does not hold"
    );
    while unix_now() <= end {
        std::thread::sleep(Duration::from_millis(100));
    }
    // After it: the established session's packets leave the fast path and are dropped, in
    // both directions, and a new session is refused; the other conduit is untouched.
    let drop = |fast| (XDP_DROP, Reason::Expired, fast);
    step(
        &mut k,
        &mut r,
        &to_plc(22, ACK),
        drop(false),
        "established, from the client",
    );
    step(
        &mut k,
        &mut r,
        &to_hmi(22, ACK),
        drop(false),
        "established, the server's reply",
    );
    step(
        &mut k,
        &mut r,
        &to_plc(22, SYN),
        drop(false),
        "a new session",
    );
    step(
        &mut k,
        &mut r,
        &to_plc(502, ACK),
        pass(Reason::Conduit, true),
        "the other conduit",
    );
    step(
        &mut k,
        &mut r,
        &to_hmi(502, ACK),
        pass(Reason::Reply, true),
        "its reply",
    );
    // The three drops are counted against the conduit.
    let drops = k.dp.conduit_drops().expect("conduit drops");
    assert!(
        drops
            .iter()
            .any(|(k, c)| k.reason == Reason::Expired as u32 && c.packets == 3),
        "{drops:?}"
    );
}
