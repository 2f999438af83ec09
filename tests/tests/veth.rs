//! Real traffic: two network namespaces joined by a veth pair, the program attached to one
//! end, real ICMP echo across it, and the per-CPU counters prove the kernel judged it.
use conduit_agent::datapath::{AttachMode, Datapath};
use conduit_common::Verdict;
use conduit_tests::{Netns, VethPair, in_netns, require_root};

#[test]
fn counts_real_packets_on_a_veth() {
    require_root();
    let client = Netns::new("cdtc");
    let server = Netns::new("cdts");
    let veth = VethPair::new(&client, "10.201.0.1/24", &server, "10.201.0.2/24");
    let mut dp = Datapath::load().expect("load the XDP program");
    let (_link, mode) = in_netns(&server, || dp.attach(&veth.b, AttachMode::Auto)).expect("attach");
    assert!(mode == "native" || mode == "skb");
    let before = dp.totals().unwrap();
    client.exec_ok(&["ping", "-c", "5", "-i", "0.05", "-W", "1", "10.201.0.2"]);
    let after = dp.totals().unwrap();
    let allowed =
        |t: &[(Verdict, conduit_common::Counter); 3]| t[Verdict::Allow as usize].1.packets;
    // 5 echo requests (plus ARP) entered the server's interface.
    assert!(
        allowed(&after) >= allowed(&before) + 5,
        "before {before:?} after {after:?}"
    );
}
