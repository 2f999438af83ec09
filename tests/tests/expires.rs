//! Expiring conduits in the real XDP program (BPF_PROG_TEST_RUN; SPEC §8, issue 17): from the
//! instant a conduit's `expires` passes, the datapath itself allows nothing through it, new
//! flows or established ones (whose fast path no longer applies), replies included; no agent
//! takes part. Every frame is compared with the reference model, which reads the same clock
//! (CLOCK_TAI).
use std::time::{Duration, SystemTime};

use conduit_common::Reason;
use conduit_tests::{
    kernel::{self, ACK, SYN, SYN_ACK, XDP_DROP, XDP_PASS},
    require_root,
};

fn policy(expires: &str) -> String {
    kernel::vendor_and_polling("expires-test", &format!("expires: \"{expires}\""))
}

/// The session's client port.
const CLIENT: u16 = 40_300;

fn to_plc(port: u16, flags: u8) -> Vec<u8> {
    kernel::hmi_to_plc(CLIENT, port, flags)
}

fn to_hmi(port: u16, flags: u8) -> Vec<u8> {
    kernel::plc_to_hmi(CLIENT, port, flags)
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
    let mut r = conduit_tests::reference::Reference::new(k.reload(&policy(&expires)));
    let pass = |reason, fast| (XDP_PASS, reason, fast);
    // Before the end: a session through the conduit, and one through the other.
    for port in [22, 502] {
        kernel::expect(
            &mut k,
            &mut r,
            &to_plc(port, SYN),
            pass(Reason::Conduit, false),
            "SYN",
        );
        kernel::expect(
            &mut k,
            &mut r,
            &to_hmi(port, SYN_ACK),
            pass(Reason::Reply, false),
            "SYN-ACK",
        );
        kernel::expect(
            &mut k,
            &mut r,
            &to_plc(port, ACK),
            pass(Reason::Conduit, true),
            "ACK",
        );
        kernel::expect(
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
    kernel::expect(
        &mut k,
        &mut r,
        &to_plc(22, ACK),
        drop(false),
        "established, from the client",
    );
    kernel::expect(
        &mut k,
        &mut r,
        &to_hmi(22, ACK),
        drop(false),
        "established, the server's reply",
    );
    kernel::expect(
        &mut k,
        &mut r,
        &to_plc(22, SYN),
        drop(false),
        "a new session",
    );
    kernel::expect(
        &mut k,
        &mut r,
        &to_plc(502, ACK),
        pass(Reason::Conduit, true),
        "the other conduit",
    );
    kernel::expect(
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
