//! On-demand conduits in the real XDP program (BPF_PROG_TEST_RUN; SPEC §8, issue 17): closed
//! until the grants map opens them, closed again the moment a grant is removed (revoke) or
//! its end passes on CLOCK_BOOTTIME, established sessions and replies included (their flows
//! never take the fast path); a reload carries a grant to the new slot. Every frame is
//! compared with the reference model, given the same grants.
use std::time::Duration;

use conduit_agent::policy::compile::boot_now_s;
use conduit_common::{ConduitKey, Reason};
use conduit_tests::{
    kernel::{self, ACK, Kernel, SYN, SYN_ACK, XDP_DROP, XDP_PASS},
    require_root,
};

fn policy(max: &str) -> String {
    kernel::vendor_and_polling("grants-test", &format!("on_demand: {{ max: {max} }}"))
}

/// The session's client port.
const CLIENT: u16 = 40_400;

fn to_plc(port: u16, flags: u8) -> Vec<u8> {
    kernel::hmi_to_plc(CLIENT, port, flags)
}

fn to_hmi(port: u16, flags: u8) -> Vec<u8> {
    kernel::plc_to_hmi(CLIENT, port, flags)
}

/// A session on `port`: SYN, SYN-ACK, ACK, ACK back, all passing by `reason`/`Reply`; the last
/// two on the fast path if `fast`.
fn session(k: &mut Kernel, r: &mut conduit_tests::reference::Reference, port: u16, fast: bool) {
    let pass = |reason, fast| (XDP_PASS, reason, fast);
    kernel::expect(
        k,
        r,
        &to_plc(port, SYN),
        pass(Reason::Conduit, false),
        "SYN",
    );
    kernel::expect(
        k,
        r,
        &to_hmi(port, SYN_ACK),
        pass(Reason::Reply, false),
        "SYN-ACK",
    );
    kernel::expect(k, r, &to_plc(port, ACK), pass(Reason::Conduit, fast), "ACK");
    kernel::expect(
        k,
        r,
        &to_hmi(port, ACK),
        pass(Reason::Reply, fast),
        "ACK back",
    );
}

#[test]
fn an_on_demand_conduit_opens_only_while_granted() {
    require_root();
    let (mut k, mut r) = kernel::with_policy(&policy("1h"));
    let id = r.compiled.conduit_ids["vendor-access"];
    const VENDOR: &str = "vendor-access";
    let closed = |fast| (XDP_DROP, Reason::NotGranted, fast);

    // Never granted: closed; the ordinary conduit next to it is not.
    kernel::expect(&mut k, &mut r, &to_plc(22, SYN), closed(false), "no grant");
    session(&mut k, &mut r, 502, true);

    // Granted: a session opens, and its packets never take the fast path.
    kernel::grant(&mut k, &mut r, VENDOR, 3600);
    session(&mut k, &mut r, 22, false);

    // Revoked: the open session stops at once in both directions, and nothing new opens.
    assert_eq!(
        kernel::revoke(&mut k, &mut r, VENDOR),
        1,
        "one grant to remove"
    );
    kernel::expect(
        &mut k,
        &mut r,
        &to_plc(22, ACK),
        closed(false),
        "revoked, established",
    );
    kernel::expect(
        &mut k,
        &mut r,
        &to_hmi(22, ACK),
        closed(false),
        "revoked, the reply",
    );
    kernel::expect(
        &mut k,
        &mut r,
        &to_plc(22, SYN),
        closed(false),
        "revoked, a new session",
    );
    let pass = |reason, fast| (XDP_PASS, reason, fast);
    kernel::expect(
        &mut k,
        &mut r,
        &to_plc(502, ACK),
        pass(Reason::Conduit, true),
        "the other conduit",
    );

    // Granted again, for 2 s: the session goes on, until the end passes on CLOCK_BOOTTIME.
    let end = boot_now_s() + 2;
    kernel::grant_until(&mut k, &mut r, VENDOR, end);
    kernel::expect(
        &mut k,
        &mut r,
        &to_plc(22, ACK),
        pass(Reason::Conduit, false),
        "granted again",
    );
    kernel::expect(
        &mut k,
        &mut r,
        &to_hmi(22, ACK),
        pass(Reason::Reply, false),
        "its reply",
    );
    assert!(
        boot_now_s() < end,
        "the machine took more than a second for 2 frames: the test's premise does not hold"
    );
    while boot_now_s() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    kernel::expect(
        &mut k,
        &mut r,
        &to_plc(22, ACK),
        closed(false),
        "the grant ended",
    );
    kernel::expect(
        &mut k,
        &mut r,
        &to_hmi(22, ACK),
        closed(false),
        "the grant ended, the reply",
    );

    // The drops are counted against the conduit.
    let drops = k.dp.conduit_drops().expect("conduit drops");
    let n: u64 = drops
        .iter()
        .filter(|(k, _)| k.conduit == id && k.reason == Reason::NotGranted as u32)
        .map(|(_, c)| c.packets)
        .sum();
    assert_eq!(n, 6, "{drops:?}");
}

#[test]
fn a_reload_writes_open_grants_into_the_new_slot() {
    require_root();
    let (mut k, mut r) = kernel::with_policy(&policy("1h"));
    let id = r.compiled.conduit_ids["vendor-access"];
    let until = boot_now_s() + 3600;
    kernel::grant_until(&mut k, &mut r, "vendor-access", until);
    session(&mut k, &mut r, 22, false);
    let old = k.dp.active().unwrap().slot;

    // The next policy, compiled with the grant (as the agent does), swaps in: the session goes
    // on, and the grants map holds the grant for both slots until the next sync.
    let slot = k.dp.next_slot().unwrap();
    let (loaded, d) = conduit_agent::policy::load::load_bytes(policy("2h").as_bytes(), slot);
    let mut c = loaded.unwrap_or_else(|| panic!("{d}")).compiled;
    c.grants.insert(id, until);
    k.dp.apply(&c).unwrap();
    r.compiled = c;
    let pass = |reason, fast| (XDP_PASS, reason, fast);
    kernel::expect(
        &mut k,
        &mut r,
        &to_plc(22, ACK),
        pass(Reason::Conduit, false),
        "after the reload",
    );
    let g = k.dp.grants().unwrap();
    for s in [old, u32::from(slot)] {
        assert_eq!(
            g.get(&ConduitKey {
                slot: s,
                conduit: id
            })
            .map(|g| g.until),
            Some(until),
            "slot {s}: {g:?}"
        );
    }

    // A reload without the grant closes the conduit in the new slot.
    let slot = k.dp.next_slot().unwrap();
    let (loaded, _) = conduit_agent::policy::load::load_bytes(policy("2h").as_bytes(), slot);
    let c = loaded.unwrap().compiled;
    k.dp.apply(&c).unwrap();
    r.compiled = c;
    kernel::expect(
        &mut k,
        &mut r,
        &to_plc(22, ACK),
        (XDP_DROP, Reason::NotGranted, false),
        "reloaded without the grant",
    );
    assert!(
        !k.dp.grants().unwrap().contains_key(&ConduitKey {
            slot: u32::from(slot),
            conduit: id
        }),
        "the new slot holds no grant"
    );
}
