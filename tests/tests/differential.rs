//! Differential test: random and mutated frames over random policies get the same verdict,
//! reason, conduit, zones and flow action from the kernel program (BPF_PROG_TEST_RUN) and
//! from the userspace reference. Any mismatch is a bug.
//!
//! Knobs: CONDUIT_DIFF_FRAMES (default 100000), CONDUIT_DIFF_SEED (default: time-based,
//! printed), CONDUIT_DIFF_FRAMES_PER_POLICY (default 2000).
//!
//! With 20,000 frames or more, every verdict and reason must occur. Some reasons are rare
//! (a DNP3 request to an outstation a random filter does not list): when one has not
//! occurred after the frames asked for, more random policies follow, up to five times as
//! many frames, so that the check does not depend on the seed's luck.
use conduit_tests::reference::monotonic_ns;
use conduit_tests::{kernel, random, require_root};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `frame`, with probability `chance` sent from another host's MAC address (the binding
/// checks, on the fast path too).
fn other_mac(rng: &mut StdRng, p: &random::GenPolicy, mut frame: Vec<u8>, chance: f64) -> Vec<u8> {
    if rng.random_bool(chance)
        && let Some(h) = p.hosts.choose(rng)
    {
        random::set_src_mac(&mut frame, h.mac);
    }
    frame
}

#[test]
fn kernel_and_reference_agree() {
    require_root();
    let total = env("CONDUIT_DIFF_FRAMES", 100_000);
    let per_policy = env("CONDUIT_DIFF_FRAMES_PER_POLICY", 2000).max(1);
    let seed = env("CONDUIT_DIFF_SEED", monotonic_ns());
    eprintln!("differential: {total} frames, seed {seed} (CONDUIT_DIFF_SEED={seed} to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut mismatches = Vec::new();
    let mut done = 0u64;
    let mut fast = 0u64;
    let mut verdicts = [0u64; 3];
    let mut reasons = std::collections::BTreeMap::new();
    let missing = |reasons: &std::collections::BTreeMap<&str, u64>| {
        total >= 20_000
            && conduit_common::Reason::ALL.iter().any(|r| {
                *r != conduit_common::Reason::Failsafe && !reasons.contains_key(r.as_str())
            })
    };
    while done < total || (missing(&reasons) && done < 5 * total) {
        let p = random::policy(&mut rng);
        let (mut k, mut r) = kernel::with_policy(&p.yaml);
        for c in &p.granted {
            kernel::grant(&mut k, &mut r, c, 3600);
        }
        let mut recent: Vec<Vec<u8>> = Vec::new();
        // Frames that opened a flow on a conduit: their next packets are the fast path's
        // traffic, which random frames rarely give (most are denied or answered by ARP).
        let mut opened: Vec<Vec<u8>> = Vec::new();
        let frames = if done < total {
            per_policy.min(total - done)
        } else {
            per_policy
        };
        for _ in 0..frames {
            let f = match recent.choose(&mut rng) {
                _ if !opened.is_empty() && rng.random_bool(0.1) => {
                    let again = opened.choose(&mut rng).unwrap().clone();
                    other_mac(&mut rng, &p, again, 0.2)
                }
                Some(prev)
                    if rng.random_bool(0.05)
                        && let Some(e) = conduit_tests::frames::icmp_error_about(prev, 3) =>
                {
                    // An ICMP error about an earlier frame, from its receiver.
                    e
                }
                // The initiator's next packet, as sent (the fast path, once its flow has a
                // verdict), sometimes from another MAC address.
                Some(prev) if rng.random_bool(0.15) => other_mac(&mut rng, &p, prev.clone(), 0.2),
                Some(prev) if rng.random_bool(0.3) => {
                    let rev = random::reverse(prev).unwrap_or_else(|| prev.clone());
                    other_mac(&mut rng, &p, rev, 0.5)
                }
                _ => random::frame(&mut rng, &p),
            };
            let now = monotonic_ns();
            let want = r.judge(&f, now);
            let (action, got) = k.run(&f);
            let want_t = kernel::as_trace(&want, r.last_fast, got.seq);
            verdicts[want.verdict as usize] += 1;
            *reasons.entry(want.reason.as_str()).or_insert(0u64) += 1;
            if got != want_t || action != kernel::action_of(&want) {
                mismatches.push(format!(
                    "frame {}: kernel {got:?} (action {action}) vs reference {want_t:?}\n  frame {}\n  policy:\n{}",
                    done,
                    f.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                    p.yaml
                ));
            }
            if want.reason == conduit_common::Reason::Conduit
                && want.flow == conduit_common::flow::FLOW_NEW
            {
                opened.push(f.clone());
                if opened.len() > 64 {
                    opened.remove(0);
                }
            }
            if f.len() < 2000 && rng.random_bool(0.5) {
                recent.push(f);
                if recent.len() > 64 {
                    recent.remove(0);
                }
            }
            done += 1;
        }
        fast += r.fast_hits;
    }
    eprintln!(
        "differential: allow {} deny {} would_deny {}",
        verdicts[0], verdicts[1], verdicts[2]
    );
    eprintln!("differential: {done} frames judged; reasons {reasons:?}");
    eprintln!("differential: {fast} frames judged by the fast path (checked against decide)");
    // Disagreements first: they are what this test is for.
    assert!(
        mismatches.is_empty(),
        "{} mismatches (seed {seed}); first ones:\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    if total >= 20_000 {
        // The generator must exercise every verdict and every reason the datapath can give
        // (failsafe needs the agent's own addresses and is tested with the agent).
        assert!(verdicts.iter().all(|&v| v > 0), "verdicts {verdicts:?}");
        // At least 1 in 100 of the frames judged. The generator replays frames that opened
        // a flow on a conduit (1 in 10 frames once a policy has one), so this fails only if
        // the fast path stops deciding what it should.
        assert!(
            fast >= done / 100,
            "only {fast} of {done} frames took the fast path"
        );
        for r in conduit_common::Reason::ALL {
            if r != conduit_common::Reason::Failsafe {
                assert!(
                    reasons.contains_key(r.as_str()),
                    "no frame got reason {}: {reasons:?}",
                    r.as_str()
                );
            }
        }
    }
}
