//! Real traffic: two network namespaces joined by a veth pair, the program attached to the
//! server's end with a policy, real ICMP echo and TCP across it. Allowed traffic passes,
//! denied traffic does not, and the kernel's counters say why.
use conduit_agent::datapath::AttachMode;
use conduit_common::{DropKey, Reason, Verdict};
use conduit_tests::{Netns, VethPair, in_netns, kernel, require_root};

const POLICY: &str = r#"
version: 1
site: veth
zones:
  - name: clients
    security_level: 1
    assets: [{ name: client, ip: 10.201.0.1 }]
  - name: servers
    security_level: 2
    assets: [{ name: server, ip: 10.201.0.2 }]
conduits:
  - name: ping-only
    from: clients
    to: servers
    rules: [{ proto: icmp, icmp_types: [echo-request] }]
"#;

#[test]
fn enforces_a_policy_on_real_traffic() {
    require_root();
    let client = Netns::new("cdtc");
    let server = Netns::new("cdts");
    let veth = VethPair::new(&client, "10.201.0.1/24", &server, "10.201.0.2/24");
    let (mut k, r) = kernel::with_policy(POLICY);
    let (_link, mode) =
        in_netns(&server, || k.dp.attach(&veth.b, AttachMode::Auto)).expect("attach");
    assert!(mode == "native" || mode == "skb");

    // Allowed: ping.
    client.exec_ok(&["ping", "-c", "5", "-i", "0.05", "-W", "1", "10.201.0.2"]);
    let cid = r.compiled.conduit_ids["ping-only"];
    let stats = k.dp.conduit_stats().unwrap();
    assert_eq!(stats.get(&cid).map(|c| c.packets), Some(5), "{stats:?}");

    // Denied: a TCP connection the policy does not allow (a server is listening).
    let mut listener = server
        .command("nc")
        .args(["-l", "-k", "-p", "7000"])
        .spawn()
        .unwrap();
    let out = client
        .command("nc")
        .args(["-z", "-w", "1", "10.201.0.2", "7000"])
        .output()
        .unwrap();
    conduit_tests::signal(listener.id(), libc::SIGTERM);
    let _ = listener.wait();
    assert!(!out.status.success(), "the TCP connection went through");
    let drops = k.dp.drops().unwrap();
    let key = DropKey {
        src_zone: r.compiled.zone_ids["clients"],
        dst_zone: r.compiled.zone_ids["servers"],
        reason: Reason::NoConduit as u32,
        verdict: Verdict::Deny as u32,
    };
    assert!(drops.get(&key).is_some_and(|c| c.packets >= 1), "{drops:?}");
}

/// The harness's settle wait (`Netns::settle_addresses`, before every test agent starts):
/// after it, both ends of a pair just brought up have their IPv6 link-local address, no
/// longer tentative, so an agent started then sees the addresses it will keep.
#[test]
fn a_settled_namespace_has_its_link_local_addresses() {
    require_root();
    let (a, b) = (Netns::new("cdtsa"), Netns::new("cdtsb"));
    let pair = VethPair::new(&a, "10.78.0.1/24", &b, "10.78.0.2/24");
    for (ns, dev) in [(&a, &pair.a), (&b, &pair.b)] {
        ns.settle_addresses();
        let out = std::process::Command::new("ip")
            .args(["-n", &ns.name, "-j", "-6", "addr", "show", "dev", dev])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let addrs = v[0]["addr_info"].as_array().cloned().unwrap_or_default();
        assert!(
            addrs
                .iter()
                .any(|x| x["scope"] == "link" && x["tentative"] != true),
            "{dev} in {}: {v}",
            ns.name
        );
    }
}
