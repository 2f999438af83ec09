//! BPF_PROG_TEST_RUN: the embedded program judges hand-built frames in the real kernel.
use aya::programs::{TestRun as _, TestRunOptions};
use conduit_agent::datapath::Datapath;
use conduit_common::Verdict;
use conduit_tests::{frames, require_root};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn run(dp: &mut Datapath, frame: &[u8]) -> u32 {
    let prog = dp.program().expect("program");
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat: 1,
        ..Default::default()
    })
    .expect("BPF_PROG_TEST_RUN")
    .return_value
}

#[test]
fn judges_hand_built_frames() {
    require_root();
    let mut dp = Datapath::load().expect("load the XDP program (root, bpffs, BTF)");
    let syn = frames::tcp_syn(502);
    assert_eq!(run(&mut dp, &syn), XDP_PASS);
    // An IPv4 frame too short for its IPv4 header is malformed: fail closed. (The kernel's
    // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.)
    assert_eq!(run(&mut dp, &syn[..33]), XDP_DROP);
    let totals = dp.totals().expect("read totals");
    let get = |v: Verdict| totals.iter().find(|(w, _)| *w == v).unwrap().1;
    assert_eq!(get(Verdict::Allow).packets, 1);
    assert_eq!(get(Verdict::Allow).bytes, syn.len() as u64);
    assert_eq!(get(Verdict::Deny).packets, 1);
    assert_eq!(get(Verdict::Deny).bytes, 33);
}
