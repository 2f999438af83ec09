//! Per-packet cost of the XDP program with BPF_PROG_TEST_RUN, next to the cost of an empty
//! XDP_PASS program measured in the same run (the floor), at several policy sizes. Prints a
//! markdown report (and writes it to $CONDUIT_BENCH_OUT when set). Root needed.
//!
//! `CONDUIT_BENCH_FULL=1`: 1,000,000 repeats, identities 10 / 10k / 1M, conduits 10 / 1k / 10k.
//! Otherwise quick: 200,000 repeats, identities 10 / 10k, conduits 10 / 1k.
use std::{net::IpAddr, time::Instant};

use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use conduit_agent::{
    datapath::{Datapath, LoadOptions},
    policy::{
        Pos,
        compile::compile,
        model::{
            Addr, Asset, Conduit, Defaults, Dnp3Filter, ModbusFilter, Policy, Proto, Rule, Zone,
        },
    },
};
use conduit_tests::frames::{self, L4, V4Opts};

const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

fn rule(proto: u8, ports: Option<Vec<(u16, u16)>>) -> Rule {
    Rule {
        pos: Pos::default(),
        proto: Proto::Number(proto),
        ports,
        icmp_types: None,
        modbus: None,
        dnp3: None,
        enip: None,
    }
}

/// Zones a (client 10.0.0.1, fd00::1, bound MAC) and b (server 10.200.0.1, fd00::2), padded
/// to `identities` exact addresses in zone a, and `conduits` conduits a→b (one allows
/// tcp/502, the others other ports).
fn policy(identities: u32, conduits: u32) -> Policy {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let mut a_assets = vec![
        Asset {
            name: "client".into(),
            pos: Pos::default(),
            addr: Addr::Ip(ip("10.0.0.1")),
            mac: Some(CLIENT_MAC),
        },
        Asset {
            name: "client6".into(),
            pos: Pos::default(),
            addr: Addr::Ip(ip("fd00::1")),
            mac: None,
        },
    ];
    // The network the distinct-flows cases send from (10.1.0.0 ..): matched by this CIDR
    // asset where the policy has no `ip` asset for an address.
    a_assets.push(Asset {
        name: "plant-net".into(),
        pos: Pos::default(),
        addr: Addr::Cidr(ip("10.1.0.0"), 16),
        mac: None,
    });
    for i in 0..identities.saturating_sub(4) {
        let addr = IpAddr::from([10, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        a_assets.push(Asset {
            name: format!("f{i}"),
            pos: Pos::default(),
            addr: Addr::Ip(addr),
            mac: None,
        });
    }
    let zone = |name: &str, assets| Zone {
        name: name.into(),
        pos: Pos::default(),
        security_level: 2,
        purdue_level: None,
        description: None,
        mode: None,
        intra_zone_allow: None,
        reverse_path: None,
        interfaces: Vec::new(),
        review_pending: None,
        assets,
    };
    let b_assets = vec![
        Asset {
            name: "server".into(),
            pos: Pos::default(),
            addr: Addr::Ip(ip("10.200.0.1")),
            mac: None,
        },
        Asset {
            name: "server6".into(),
            pos: Pos::default(),
            addr: Addr::Ip(ip("fd00::2")),
            mac: None,
        },
    ];
    let conduit = |name: String, rules| Conduit {
        name,
        pos: Pos::default(),
        from: vec!["a".into()],
        to: vec!["b".into()],
        to_pos: Pos::default(),
        security_level: None,
        sources: None,
        destinations: None,
        bidirectional: None,
        rules,
        log: None,
        description: None,
        review_pending: None,
        expires: None,
        on_demand: None,
    };
    let mut read_only = rule(6, Some(vec![(1502, 1502)]));
    read_only.modbus = Some(ModbusFilter {
        functions: conduit_common::inspect::modbus::READ.to_vec(),
        unit_ids: Some(vec![1]),
    });
    let mut cs = vec![
        conduit(
            "web".into(),
            vec![rule(6, Some(vec![(502, 502)])), rule(1, None)],
        ),
        conduit("modbus-read-only".into(), vec![read_only]),
        conduit("protocols".into(), protocol_rules()),
    ];
    for i in 1..conduits {
        cs.push(conduit(
            format!("c{i}"),
            vec![rule(6, Some(vec![(10_000 + i as u16, 10_000 + i as u16)]))],
        ));
    }
    Policy {
        version: 1,
        site: "bench".into(),
        defaults: Defaults::default(),
        zones: vec![zone("a", a_assets), zone("b", b_assets)],
        conduits: cs,
    }
}

/// DNP3 and EtherNet/IP, each on a rule without a filter ([`DNP3_PLAIN`], [`ENIP_PLAIN`])
/// and a read-only one ([`DNP3_READ_ONLY`], [`ENIP_READ_ONLY`]): the cost of each protocol's
/// inspection next to the same segment uninspected.
fn protocol_rules() -> Vec<Rule> {
    let tcp = |port| rule(6, Some(vec![(port, port)]));
    let mut dnp3 = tcp(DNP3_READ_ONLY);
    dnp3.dnp3 = Some(Dnp3Filter {
        functions: conduit_common::inspect::dnp3::READ.to_vec(),
        outstations: Some(vec![10]),
    });
    let mut enip = tcp(ENIP_READ_ONLY);
    let mut codes = conduit_common::inspect::enip::READ.to_vec();
    codes.extend(conduit_common::inspect::enip::CONNECTION);
    codes.sort_unstable();
    enip.enip = Some(codes);
    vec![tcp(DNP3_PLAIN), dnp3, tcp(ENIP_PLAIN), enip]
}

const DNP3_PLAIN: u16 = 20000;
const DNP3_READ_ONLY: u16 = 20001;
const ENIP_PLAIN: u16 = 44818;
const ENIP_READ_ONLY: u16 = 44819;

/// A data segment with `payload` from the client's port `sport` to `dport` (PSH, ACK).
fn data(sport: u16, dport: u16, payload: &[u8]) -> L4 {
    let (data, len) = frames::tcp_data(payload);
    L4::TcpData {
        sport,
        dport,
        flags: 0x18,
        data,
        len,
    }
}

/// A DNP3 read (function 1) from master 1 to outstation 10: one link frame.
fn dnp3_read(sport: u16, dport: u16) -> L4 {
    data(
        sport,
        dport,
        &conduit_common::inspect::dnp3::request(10, 1, 1, 0),
    )
}

/// A connected EtherNet/IP Read Tag (0x4C) of tag `Cnt` (SendUnitData).
fn enip_read(sport: u16, dport: u16) -> L4 {
    let read_tag = [0x4C, 3, 0x91, 3, b'C', b'n', b't', 0, 1, 0];
    data(sport, dport, &frames::enip_send(true, &read_tag))
}

/// A data segment with a Modbus read-holding-registers request to unit 1.
fn modbus_read(sport: u16, dport: u16) -> L4 {
    let (data, len) = frames::modbus_adu(1, 1, 3, &[0, 0, 0, 4]);
    L4::TcpData {
        sport,
        dport,
        flags: 0x18,
        data,
        len,
    }
}

/// Median ns per run of `frame` over `rounds` runs of `repeat` repetitions.
/// Distinct sources of the many-flows cases.
const DISTINCT: u32 = 1024;
const VARY_ESTABLISHED: &str = "established flows, distinct sources (TCP ACK)";
const VARY_NEW: &str = "new flows allowed, distinct sources (SYN+RST)";

/// The source MAC of the distinct-flows frames: bound to no address (the client's MAC is
/// bound to 10.0.0.1, so frames from it with other addresses would be `spoofed`).
const NET_MAC: [u8; 6] = [2, 0, 0, 0, 1, 0];

/// A TCP segment from 10.1.0.0 (the varying program changes the last two bytes) to the
/// server's `dport` (502 is allowed, 503 closed).
fn from_net(dport: u16, flags: u8) -> Vec<u8> {
    frames::v4(
        NET_MAC,
        [10, 1, 0, 0],
        [10, 200, 0, 1],
        L4::Tcp {
            sport: 41000,
            dport,
            flags,
        },
    )
}

/// One measurement.
struct Row {
    ids: u32,
    cds: u32,
    name: String,
    ns: f64,
    floor: f64,
}

/// Each protocol's inspection, against the same kind of segment on a rule without a filter:
/// (protocol, uninspected case, inspected case).
const INSPECTED: [(&str, &str, &str); 3] = [
    (
        "Modbus/TCP",
        "established flow, TCP data with a Modbus read (rule without filter)",
        "established flow, Modbus read inspected (read-only rule)",
    ),
    (
        "DNP3",
        "established flow, TCP data with a DNP3 read (rule without filter)",
        "established flow, DNP3 read inspected (read-only rule)",
    ),
    (
        "EtherNet/IP",
        "established flow, TCP data with an EtherNet/IP Read Tag (rule without filter)",
        "established flow, EtherNet/IP Read Tag inspected (read-only rule)",
    ),
];

/// The cost each protocol's inspection adds to an allowed request, from this size's rows
/// (issue 18's goal: at most 15 ns).
fn inspection_table(rows: &[Row], ids: u32, cds: u32) -> String {
    let ns = |name: &str| {
        rows.iter()
            .find(|r| r.ids == ids && r.cds == cds && r.name == name)
            .map(|r| r.ns)
    };
    let mut t = String::from(
        "\nInspection of an allowed request, against the same segment on a rule without a filter (both established flows):\n\n| protocol | without filter ns | inspected ns | added ns | goal |\n| --- | ---: | ---: | ---: | --- |\n",
    );
    let mut any = false;
    for (protocol, plain, inspected) in INSPECTED {
        if let (Some(a), Some(b)) = (ns(plain), ns(inspected)) {
            t += &format!(
                "| {protocol} | {a:.1} | {b:.1} | {:.1} | ≤ 15 ns |\n",
                b - a
            );
            any = true;
        }
    }
    if any { t } else { String::new() }
}

/// The scale goals, from the distinct-flows rows: the cost at the largest identity count
/// against the smallest (goal ≤ 1.5×), and across conduit counts (goal: flat).
fn scale_summary(rows: &[Row]) -> String {
    let get = |ids: u32, cds: u32, name: &str| {
        rows.iter()
            .find(|r| r.ids == ids && r.cds == cds && r.name == name)
            .map(|r| r.ns)
    };
    let ids: Vec<u32> = {
        let mut v: Vec<u32> = rows.iter().map(|r| r.ids).collect();
        v.sort();
        v.dedup();
        v
    };
    let cds: Vec<u32> = {
        let mut v: Vec<u32> = rows.iter().map(|r| r.cds).collect();
        v.sort();
        v.dedup();
        v
    };
    let (Some(&i0), Some(&i1), Some(&c0), Some(&c1)) =
        (ids.first(), ids.last(), cds.first(), cds.last())
    else {
        return String::new();
    };
    let mut s = String::new();
    for name in [VARY_ESTABLISHED, VARY_NEW] {
        for &c in cds.iter().filter(|_| i0 != i1) {
            if let (Some(a), Some(b)) = (get(i0, c, name), get(i1, c, name)) {
                let r = b / a;
                s += &format!(
                    "| {name} | {i1} vs {i0} | {c} | {r:.2} | ≤ 1.5×: {} |\n",
                    if r <= 1.5 { "met" } else { "missed" }
                );
            }
        }
        for &i in ids.iter().filter(|_| c0 != c1) {
            if let (Some(a), Some(b)) = (get(i, c0, name), get(i, c1, name)) {
                s += &format!(
                    "| {name} | {i} | {c1} vs {c0} | {:.2} | flat (program size does not depend on the policy) |\n",
                    b / a
                );
            }
        }
    }
    if s.is_empty() {
        // One policy size (smoke): nothing to compare.
        return s;
    }
    "### Scale (distinct flows)\n\n| case | identities | conduits | ratio | goal |\n| --- | --- | --- | ---: | --- |\n".to_string()
        + &s
        + "\n"
}

fn cost(prog: &mut Xdp, frame: &[u8], repeat: u32, rounds: usize) -> f64 {
    let mut v: Vec<f64> = (0..rounds)
        .map(|_| {
            let r = prog
                .test_run(TestRunOptions {
                    data_in: Some(frame),
                    repeat,
                    ..Default::default()
                })
                .expect("BPF_PROG_TEST_RUN");
            r.duration.as_nanos() as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Conduit and xdp-filter on the same frames, in the same run (issue #16's goals): the
/// smallest policy, xdp-filter with its closest equivalent.
/// Also returns xdp-filter's cost on the established flow, a reference line for the plot.
fn against_xdp_filter(repeat: u32, rounds: usize, profile_secs: f64) -> (String, Row) {
    let client = [10, 0, 0, 1];
    let server = [10, 200, 0, 1];
    let tcp = |src: [u8; 4], mac: [u8; 6], sport: u16, dport: u16, flags: u8| {
        frames::v4(
            mac,
            src,
            server,
            L4::Tcp {
                sport,
                dport,
                flags,
            },
        )
    };
    let unknown_mac = [2, 0, 0, 0, 0, 0x66];
    // (case, frame, goal as a multiple of xdp-filter)
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "established flow (TCP ACK)",
            tcp(client, CLIENT_MAC, 41000, 502, 0x10),
            "≤ 1.0×",
        ),
        (
            "frame from an unknown address (SYN to a closed port: a scan or flood)",
            tcp([192, 0, 2, 66], unknown_mac, 41001, 503, 0x02),
            "≤ 1.0×",
        ),
        (
            "denied frame from a known zone (no conduit for the port)",
            tcp(client, CLIENT_MAC, 41002, 503, 0x02),
            "≤ 1.5×",
        ),
        (
            "new allowed flow (SYN+RST: full decision, no insert)",
            tcp(client, CLIENT_MAC, 41003, 502, 0x06),
            "≤ 2.0×",
        ),
    ];
    let mut dp = Datapath::load().expect("load");
    let slot = dp.next_slot().unwrap();
    dp.apply(&compile(&policy(10, 10), slot).expect("compile"))
        .expect("apply");
    // The floor is the benchmarks' object's empty program; Conduit is the production object.
    let mut floor_dp = bench_object();
    let empty = cost(
        floor_dp.floor_program().unwrap(),
        &cases[0].1,
        repeat,
        rounds,
    );
    let prog = dp.program().unwrap();
    // The established flow's handshake.
    let _ = cost(prog, &tcp(client, CLIENT_MAC, 41000, 502, 0x02), 1, 1);
    let mac = CLIENT_MAC
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let xf = conduit_tests::xdp_filter::XdpFilter::load(&[
        &["ip", "10.0.0.1", "--mode", "src"],
        &["ether", &mac, "--mode", "src"],
        &["port", "502", "--mode", "dst"],
    ]);
    let mut out = format!(
        "### Against xdp-filter (xdp-tools, in one run)

xdp-filter {} (Debian's xdp-tools) loaded in skb mode with policy `deny` and allow entries: source IP 10.0.0.1, source MAC of the client, destination port 502; measured with `bpftool prog run` ({repeat} repeats, median of {rounds} runs), Conduit with BPF_PROG_TEST_RUN through aya on the same frames, policy of 10 identities and 10 conduits; the empty XDP program: {empty:.1} ns. xdp-filter is stateless and its allow lists are alternatives (any match passes): it cannot say \"this client, to that server, on port 502\" (so it passes the known client's SYN to port 503 that Conduit denies), nor zones, MAC/IP binding, flow state, replies or Modbus inspection.\n\n| case | Conduit ns | xdp-filter ns | Conduit ÷ xdp-filter | goal | Conduit ÷ empty program | verdicts (Conduit / xdp-filter) |\n| --- | ---: | ---: | ---: | --- | ---: | --- |\n",
        conduit_tests::xdp_filter::version()
    );
    let action = |a: u32| match a {
        1 => "drop",
        2 => "pass",
        _ => "other",
    };
    let mut costs = Vec::new();
    let mut reference = None;
    for (name, frame, goal) in &cases {
        let prog = dp.program().unwrap();
        let ours = cost(prog, frame, repeat, rounds);
        costs.push(ours - empty);
        let our_action = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: 1,
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN")
            .return_value;
        let (theirs, their_action) = xf.cost(frame, repeat, rounds);
        reference.get_or_insert(Row {
            ids: 0,
            cds: 0,
            name: format!("xdp-filter: {name}"),
            ns: theirs,
            floor: empty,
        });
        out += &format!(
            "| {name} | {ours:.1} | {theirs:.1} | {:.2}× | {goal} | {:.1}× | {} / {} |\n",
            ours / theirs,
            ours / empty,
            action(our_action),
            action(their_action)
        );
    }
    out += "\n";
    out += &where_the_time_goes(&mut dp, &cases, &costs, repeat, profile_secs);
    (out, reference.expect("the first case"))
}

/// Denied frames from unknown addresses as a spoofed-source flood sends them: the same frame
/// from 1, 1,024 and 65,536 distinct sources (`conduit_bench_vary`, which changes the source's
/// last two bytes run by run), against the varying program's own floor. The difference is
/// what a source never seen before costs: the lookups of its address (identity, flow table)
/// miss in buckets that are not in the CPU's caches.
fn spoofed_sources(repeat: u32, rounds: usize) -> String {
    let mut dp = bench_object();
    let slot = dp.next_slot().unwrap();
    dp.apply(&compile(&policy(10, 10), slot).expect("compile"))
        .expect("apply");
    let unknown_mac = [2, 0, 0, 0, 0, 0x66];
    let from = |l4| frames::v4(unknown_mac, [192, 0, 0, 0], [10, 200, 0, 1], l4);
    let cases = [
        (
            "UDP datagram to a closed port",
            from(L4::Udp {
                sport: 40000,
                dport: 6000,
            }),
        ),
        (
            "TCP SYN to a closed port",
            from(L4::Tcp {
                sport: 40000,
                dport: 503,
                flags: 0x02,
            }),
        ),
    ];
    let mut out = String::from(
        "### A spoofed-source flood, per packet (distinct unknown sources, in one run)\n\nThe frame from an unknown address (192.0.x.y, denied) with its source's last two bytes changed run by run, cycling through N sources; the policy of 10 identities and 10 conduits; ns above the varying program's floor (the change, then pass). The identity table's buckets span the map's whole capacity (two slots of a million addresses), the flow tables' theirs, so a source never seen before misses the CPU's caches in each; a UDP datagram, which may be a reply, looks up the flow table both ways.\n\n| case | 1 source ns | 1,024 sources ns | 65,536 sources ns | 65,536 ÷ 1 |\n| --- | ---: | ---: | ---: | ---: |\n",
    );
    let mut rows: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for n in [1, 1024, 65536] {
        dp.set_bench_sources(n).unwrap();
        for (i, (_, frame)) in cases.iter().enumerate() {
            let floor = cost(
                dp.bench_program("conduit_bench_vary_pass").unwrap(),
                frame,
                repeat,
                rounds,
            );
            let ns = cost(
                dp.bench_program("conduit_bench_vary").unwrap(),
                frame,
                repeat,
                rounds,
            );
            rows[i].push(ns - floor);
        }
    }
    for ((name, _), v) in cases.iter().zip(&rows) {
        out += &format!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.2}× |\n",
            v[0],
            v[1],
            v[2],
            v[2] / v[0]
        );
    }
    out + "\n"
}

/// The program's functions (entry point and subprograms), as the profile table names them.
const STAGES: [(&str, &str); 9] = [
    (
        "conduit_xdp",
        "entry point (clock, per-CPU scratch, counters)",
    ),
    ("parse", "parse"),
    ("fast", "fast path (flow table)"),
    ("full", "full decision (identities, zones, conduits)"),
    ("ingress", "interface checks"),
    ("update", "flow table update"),
    ("log", "audit event"),
    ("conduit_inspect", "inspection"),
    ("record", "learning"),
];

/// The xdp-filter cases profiled (`conduit_tests::profile`): each case's samples inside the
/// program by function and by what the innermost frame was, as a share and as nanoseconds of
/// the case's cost above the empty program (`above`).
fn where_the_time_goes(
    dp: &mut Datapath,
    cases: &[(&str, Vec<u8>, &str)],
    above: &[f64],
    repeat: u32,
    secs: f64,
) -> String {
    let mut profiles = Vec::new();
    for (_, frame, _) in cases {
        let prog = dp.program().unwrap();
        match conduit_tests::profile::profile(secs, || {
            prog.test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        }) {
            Ok(p) => profiles.push(p),
            // perf is part of the bootstrap: without it the benchmark fails rather than leave
            // the table out.
            Err(e) => panic!("profiling the per-packet cases: {e}"),
        }
    }
    let mitigations = ["spec_rstack_overflow", "retbleed", "spectre_v2"]
        .iter()
        .filter_map(|v| {
            let t = std::fs::read_to_string(format!("/sys/devices/system/cpu/vulnerabilities/{v}"))
                .ok()?;
            Some(format!("{v}: {}", t.trim()))
        })
        .collect::<Vec<_>>()
        .join("; ");
    let mut out = format!(
        "### Where the time goes (perf, the cases above)\n\n`perf record -e cpu-clock -g` on the thread that test-runs each case for {secs} s; a sample counts for the innermost program function on its call chain (the entry point or a subprogram) and for what its innermost frame was: the program's own instructions, or the kernel code of a map lookup, the clock, ... Shares are of the samples inside the program ({}); ns are the share times the case's cost above the empty program. Rows under 3% in every case are summed in the last row. Calls and returns cost more than usual on machines whose kernel mitigates return-address speculation in software; this one: {mitigations}. Samples at the instruction after a call (the return) count as the caller's own code.\n\n| function | what | {} |\n| --- | --- |{}\n",
        profiles
            .iter()
            .map(|p| p.inside.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        cases
            .iter()
            .map(|(n, _, _)| n.split(" (").next().unwrap_or(n).to_owned())
            .collect::<Vec<_>>()
            .join(" | "),
        " ---: |".repeat(cases.len()),
    );
    let keys: std::collections::BTreeSet<(String, &'static str)> = profiles
        .iter()
        .flat_map(|p| p.shares.keys().cloned())
        .collect();
    let mut rest = vec![0.0; profiles.len()];
    let cell = |share: f64, i: usize| format!("{:.0}% · {:.0} ns", share * 100.0, share * above[i]);
    let mut rows = Vec::new();
    for (f, what) in &keys {
        let shares: Vec<f64> = profiles.iter().map(|p| p.share(f, what)).collect();
        if shares.iter().all(|&s| s < 0.03) {
            for (r, s) in rest.iter_mut().zip(&shares) {
                *r += s;
            }
            continue;
        }
        let order = STAGES
            .iter()
            .position(|(n, _)| n == f)
            .unwrap_or(STAGES.len());
        let name = STAGES
            .iter()
            .find(|(n, _)| n == f)
            .map_or(f.as_str(), |(_, d)| d);
        rows.push((
            order,
            format!(
                "| {name} | {what} | {} |\n",
                shares
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| cell(s, i))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ),
        ));
    }
    rows.sort_by_key(|(o, _)| *o);
    for (_, r) in rows {
        out += &r;
    }
    out += &format!(
        "| everything else | | {} |\n\n",
        rest.iter()
            .enumerate()
            .map(|(i, &s)| cell(s, i))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    out
}

/// What a data segment costs over a bare ACK, in a policy without inspection filters (the
/// datapath copies no payload window then) and in the same policy with them (every data
/// segment's window is copied for the filters to read), in one run.
fn window_cost(repeat: u32, rounds: usize) -> String {
    let with = policy(10, 10);
    let mut without = with.clone();
    without.conduits.retain(|c| {
        c.rules
            .iter()
            .all(|r| r.modbus.is_none() && r.dnp3.is_none() && r.enip.is_none())
    });
    let v4 = |l4| frames::v4(CLIENT_MAC, [10, 0, 0, 1], [10, 200, 0, 1], l4);
    let syn = v4(L4::Tcp {
        sport: 42000,
        dport: 502,
        flags: 0x02,
    });
    let ack = v4(L4::Tcp {
        sport: 42000,
        dport: 502,
        flags: 0x10,
    });
    let read = v4(modbus_read(42000, 502));
    let mut out = String::from(
        "### The payload window\n\nAn established flow on a rule without a filter (tcp/502), 10 identities and 10 conduits; the window (a segment's first 64 bytes, what inspection reads) is copied only when the policy has an inspection filter or the program learns.\n\n| policy | TCP ACK ns | TCP data (a Modbus read) ns | data − ACK ns |\n| --- | ---: | ---: | ---: |\n",
    );
    for (name, p) in [
        ("without inspection filters", &without),
        ("with inspection filters", &with),
    ] {
        let mut dp = Datapath::load().expect("load");
        let slot = dp.next_slot().unwrap();
        dp.apply(&compile(p, slot).expect("compile"))
            .expect("apply");
        let prog = dp.program().unwrap();
        let _ = cost(prog, &syn, 1, 1);
        let (a, d) = (
            cost(prog, &ack, repeat, rounds),
            cost(prog, &read, repeat, rounds),
        );
        out += &format!("| {name} | {a:.1} | {d:.1} | {:.1} |\n", d - a);
    }
    out + "\n"
}

/// The cost of learning (`conduit run --learn-dir`, issue #14's goal: ≤ 2 % on established
/// flows): the program loaded with learning on and off, the same policy and frames, measured
/// alternately in the same run (median of the per-round ratios).
fn learning_cost(repeat: u32, rounds: usize) -> String {
    let client = [10, 0, 0, 1];
    let tcp = |sport, dport, flags| {
        frames::v4(
            CLIENT_MAC,
            client,
            [10, 200, 0, 1],
            L4::Tcp {
                sport,
                dport,
                flags,
            },
        )
    };
    let cases = [
        (
            "established flow (TCP ACK)",
            tcp(41100, 502, 0x10),
            "≤ 1.02×",
        ),
        (
            "established flow, a repeated Modbus read",
            frames::v4(CLIENT_MAC, client, [10, 200, 0, 1], modbus_read(41101, 502)),
            "≤ 1.02×",
        ),
        (
            "new allowed flow (SYN+RST)",
            tcp(41102, 502, 0x06),
            "(recorded)",
        ),
        (
            "denied frame (SYN to a closed port)",
            tcp(41103, 503, 0x02),
            "(recorded)",
        ),
    ];
    let mut dps: Vec<Datapath> = [false, true]
        .into_iter()
        .map(|learn| {
            let options = LoadOptions {
                learn,
                ..Default::default()
            };
            let mut dp = Datapath::load_options(options, None).expect("load");
            let slot = dp.next_slot().unwrap();
            dp.apply(&compile(&policy(10, 10), slot).expect("compile"))
                .expect("apply");
            let prog = dp.program().unwrap();
            // The established flows' handshakes, and a first Modbus read (learned once).
            for sport in [41100, 41101] {
                let _ = cost(prog, &tcp(sport, 502, 0x02), 1, 1);
            }
            let _ = cost(prog, &cases[1].1, 1, 1);
            dp
        })
        .collect();
    let mut out = format!(
        "### Learning on and off (`run --learn-dir`, in one run)

The program loaded without and with learning, the policy of 10 identities and 10 conduits, {repeat} repeats; each round measures both on the same frame one after the other, and the ratio is the median of {rounds} rounds' ratios. A new or denied flow with learning on updates its learn record (found after the first frame: the common case of a client that retries or polls).

| case | off ns | on ns | on ÷ off | goal |
| --- | ---: | ---: | ---: | --- |
"
    );
    for (name, frame, goal) in &cases {
        let mut ratios = Vec::new();
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let a = cost(dps[0].program().unwrap(), frame, repeat, 1);
            let b = cost(dps[1].program().unwrap(), frame, repeat, 1);
            ratios.push(b / a);
            off.push(a);
            on.push(b);
        }
        let med = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        out += &format!(
            "| {name} | {:.1} | {:.1} | {:.3}× | {goal} |\n",
            med(off),
            med(on),
            med(ratios)
        );
    }
    out + "\n"
}

/// The cost of conduits that end (issue #17's goal: the deadline check on the fast path is
/// not measurable, ≤ 1 ns) and of on-demand conduits (their flows take the full path, with the
/// grant's lookup, on every packet): the same policy with every conduit ending in 2099, and
/// with every conduit on demand and granted, against the plain policy, measured alternately in
/// the same run (median of the per-round figures).
fn temporary_conduits_cost(repeat: u32, rounds: usize) -> String {
    let ack = |sport| {
        frames::v4(
            CLIENT_MAC,
            [10, 0, 0, 1],
            [10, 200, 0, 1],
            L4::Tcp {
                sport,
                dport: 502,
                flags: 0x10,
            },
        )
    };
    // 2099-01-01T00:00:00Z.
    const END: u32 = 4_070_908_800;
    // As it is, every conduit ending (`expires`), every conduit on demand.
    let forms: [fn(&mut Conduit); 3] = [
        |_| {},
        |c| c.expires = Some((END, Pos::default())),
        |c| c.on_demand = Some((3600, Pos::default())),
    ];
    let mut dps: Vec<Datapath> = forms
        .iter()
        .map(|form| {
            let mut p = policy(10, 10);
            p.conduits.iter_mut().for_each(form);
            let mut dp = Datapath::load().expect("load");
            let slot = dp.next_slot().unwrap();
            let mut c = compile(&p, slot).expect("compile");
            // On demand: every conduit granted for as long as the grants map holds.
            if p.conduits[0].on_demand.is_some() {
                c.grants = c.conduit_ids.values().map(|&id| (id, u32::MAX)).collect();
            }
            dp.apply(&c).expect("apply");
            let prog = dp.program().unwrap();
            let _ = cost(
                prog,
                &frames::v4(
                    CLIENT_MAC,
                    [10, 0, 0, 1],
                    [10, 200, 0, 1],
                    L4::Tcp {
                        sport: 41200,
                        dport: 502,
                        flags: 0x02,
                    },
                ),
                1,
                1,
            );
            dp
        })
        .collect();
    let frame = ack(41200);
    let mut out = format!(
        "### Conduits that end, and on-demand conduits (issue 17, in one run)

The policy of 10 identities and 10 conduits three times: as it is, with every conduit ending in 2099 (`expires`), and with every conduit on demand and granted (`on_demand`); an established flow's TCP ACK, {repeat} repeats; each round measures the three one after the other, figures are medians of {rounds} rounds. The flow entry keeps its conduit's end on the monotonic clock the fast path reads anyway, so the fast path checks it with a comparison: no lookup, no clock read (the goal: not measurable; BPF_PROG_TEST_RUN reports whole nanoseconds, and this machine's noise is several); a flow of an on-demand conduit is judged on the full path with its grant on every packet, so that a revoke closes open sessions at once.

| case | plain ns | ns | difference | ratio | goal |
| --- | ---: | ---: | ---: | ---: | --- |
"
    );
    let (mut plain, mut ends, mut od) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        plain.push(cost(dps[0].program().unwrap(), &frame, repeat, 1));
        ends.push(cost(dps[1].program().unwrap(), &frame, repeat, 1));
        od.push(cost(dps[2].program().unwrap(), &frame, repeat, 1));
    }
    let med = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let diffs = |v: &[f64]| -> Vec<f64> { v.iter().zip(&plain).map(|(a, b)| a - b).collect() };
    let ratios = |v: &[f64]| -> Vec<f64> { v.iter().zip(&plain).map(|(a, b)| a / b).collect() };
    for (name, v, goal) in [
        (
            "established flow, its conduit has `expires` (fast path)",
            &ends,
            "≤ 1 ns",
        ),
        (
            "established flow, its conduit is on demand and granted (full path)",
            &od,
            "(none)",
        ),
    ] {
        out += &format!(
            "| {name} | {:.1} | {:.1} | {:+.1} ns | {:.3}× | {goal} |\n",
            med(&plain),
            med(v),
            med(&diffs(v)),
            med(&ratios(v)),
        );
    }
    out + "\n"
}

fn main() {
    conduit_tests::require_root();
    let full = std::env::var("CONDUIT_BENCH_FULL").is_ok_and(|v| v == "1");
    // For profiling (e.g. under `perf record`): only the cases whose name contains this.
    let only = std::env::var("CONDUIT_BENCH_ONLY").ok();
    // CI's smoke run: every case once, short, smallest policy (it checks that the benchmark
    // works, its numbers mean little).
    let smoke = std::env::var("CONDUIT_BENCH_SMOKE").is_ok_and(|v| v == "1");
    let (repeat, rounds) = if full {
        (1_000_000, 5)
    } else if smoke {
        (20_000, 1)
    } else {
        (200_000, 3)
    };
    let id_sizes: &[u32] = if full {
        &[10, 10_000, 1_000_000]
    } else if smoke {
        &[10]
    } else {
        &[10, 10_000]
    };
    let conduit_sizes: &[u32] = if full {
        &[10, 1_000, 10_000]
    } else if smoke {
        &[10]
    } else {
        &[10, 1_000]
    };

    let v4 = |l4| frames::v4(CLIENT_MAC, [10, 0, 0, 1], [10, 200, 0, 1], l4);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "established flow (TCP ACK)",
            v4(L4::Tcp {
                sport: 40000,
                dport: 502,
                flags: 0x10,
            }),
        ),
        (
            "new flow allowed (SYN+RST: full decision, no insert)",
            v4(L4::Tcp {
                sport: 40001,
                dport: 502,
                flags: 0x06,
            }),
        ),
        (
            "new flow denied (SYN to a closed port)",
            v4(L4::Tcp {
                sport: 40002,
                dport: 503,
                flags: 0x02,
            }),
        ),
        (
            "ARP request",
            frames::arp(CLIENT_MAC, CLIENT_MAC, [10, 0, 0, 1], [10, 200, 0, 1], 1),
        ),
        ("IPv6 new flow denied", {
            let mut a = [0u8; 16];
            a[0] = 0xfd;
            a[15] = 1;
            let mut b = a;
            b[15] = 2;
            frames::v6(
                CLIENT_MAC,
                a,
                b,
                L4::Tcp {
                    sport: 40003,
                    dport: 503,
                    flags: 0x02,
                },
            )
        }),
        (
            "established flow, TCP data with a Modbus read (rule without filter)",
            v4(modbus_read(40005, 502)),
        ),
        (
            "established flow, Modbus read inspected (read-only rule)",
            v4(modbus_read(40006, 1502)),
        ),
        (
            "established flow, Modbus write dropped (read-only rule)",
            v4({
                let (data, len) = frames::modbus_adu(1, 1, 6, &[0, 1, 0, 42]);
                L4::TcpData {
                    sport: 40006,
                    dport: 1502,
                    flags: 0x18,
                    data,
                    len,
                }
            }),
        ),
        (
            "established flow, TCP data with a DNP3 read (rule without filter)",
            v4(dnp3_read(40007, DNP3_PLAIN)),
        ),
        (
            "established flow, DNP3 read inspected (read-only rule)",
            v4(dnp3_read(40008, DNP3_READ_ONLY)),
        ),
        (
            "established flow, TCP data with an EtherNet/IP Read Tag (rule without filter)",
            v4(enip_read(40009, ENIP_PLAIN)),
        ),
        (
            "established flow, EtherNet/IP Read Tag inspected (read-only rule)",
            v4(enip_read(40010, ENIP_READ_ONLY)),
        ),
        ("VLAN-tagged (2 tags) established flow", {
            let mut f = frames::eth(frames::MAC_B, CLIENT_MAC, &[0x88a8, 0x8100], 0x0800);
            f.extend(frames::ipv4(
                [10, 0, 0, 1],
                [10, 200, 0, 1],
                6,
                &L4::Tcp {
                    sport: 40004,
                    dport: 502,
                    flags: 0x10,
                }
                .bytes(),
                V4Opts::default(),
            ));
            f
        }),
    ];
    let mut out = String::new();
    let mut rows: Vec<Row> = Vec::new();
    out += "## Per-packet cost (BPF_PROG_TEST_RUN)\n\n";
    out += &format!(
        "Machine: {}. Method: BPF_PROG_TEST_RUN, {repeat} repeats per run, median of {rounds} runs, ns per packet as the kernel reports it; the floor is an empty XDP_PASS program measured in the same run. These tables load the benchmarks' object (the production program plus the benchmark programs, built with the feature `bench`). A constant frame is cache-hot: the first table of each size gives best cases; the distinct-flows table below it changes the source address with every run (1,024 devices) inside the measured program, against that program's own floor.\n\n",
        conduit_tests::report::machine()
    );
    for &ids in id_sizes {
        for &cds in conduit_sizes {
            // The benchmarks' object: the program and, for the distinct-flows rows, the
            // programs that vary the source address, with the same maps.
            let mut dp = bench_object();
            let p = policy(ids, cds);
            let slot = dp.next_slot().unwrap();
            let t = Instant::now();
            let c = compile(&p, slot).expect("compile");
            let compile_ms = t.elapsed().as_millis();
            let t = Instant::now();
            dp.apply(&c).expect("apply");
            let apply_ms = t.elapsed().as_millis();
            let floor = cost(dp.floor_program().unwrap(), &cases[0].1, repeat, rounds);
            out += &format!(
                "### {ids} identities, {cds} conduits\n\nload: compile {compile_ms} ms, apply {apply_ms} ms. Floor (empty XDP_PASS): {floor:.1} ns.\n\n| case | ns/packet | × floor |\n| --- | ---: | ---: |\n"
            );
            let prog = dp.program().unwrap();
            // Warm up: the first established-flow frames create their flows.
            for (_, f) in &cases {
                let _ = cost(
                    prog,
                    &frames::v4(
                        CLIENT_MAC,
                        [10, 0, 0, 1],
                        [10, 200, 0, 1],
                        L4::Tcp {
                            sport: 40000,
                            dport: 502,
                            flags: 0x02,
                        },
                    ),
                    1,
                    1,
                );
                let _ = cost(prog, f, 1, 1);
            }
            let mut syn = frames::eth(frames::MAC_B, CLIENT_MAC, &[0x88a8, 0x8100], 0x0800);
            syn.extend(frames::ipv4(
                [10, 0, 0, 1],
                [10, 200, 0, 1],
                6,
                &L4::Tcp {
                    sport: 40004,
                    dport: 502,
                    flags: 0x02,
                }
                .bytes(),
                V4Opts::default(),
            ));
            let _ = cost(prog, &syn, 1, 1);
            for (sport, dport) in [
                (40005, 502),
                (40006, 1502),
                (40007, DNP3_PLAIN),
                (40008, DNP3_READ_ONLY),
                (40009, ENIP_PLAIN),
                (40010, ENIP_READ_ONLY),
            ] {
                let syn = L4::Tcp {
                    sport,
                    dport,
                    flags: 0x02,
                };
                let _ = cost(
                    prog,
                    &frames::v4(CLIENT_MAC, [10, 0, 0, 1], [10, 200, 0, 1], syn),
                    1,
                    1,
                );
            }
            for (name, f) in &cases {
                if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
                    continue;
                }
                let ns = cost(prog, f, repeat, rounds);
                out += &format!("| {name} | {ns:.1} | {:.1} |\n", ns / floor);
                rows.push(Row {
                    ids,
                    cds,
                    name: name.to_string(),
                    ns,
                    floor,
                });
            }
            out += &inspection_table(&rows, ids, cds);
            // Many distinct flows: the source address changes with every run (see
            // `conduit_bench_vary`), against the same program's floor (the change, then pass).
            dp.set_bench_sources(DISTINCT).unwrap();
            let vfloor = cost(
                dp.bench_program("conduit_bench_vary_pass").unwrap(),
                &from_net(502, 0x10),
                repeat,
                rounds,
            );
            let vary = dp.bench_program("conduit_bench_vary").unwrap();
            // One SYN from every source opens its flow.
            let _ = cost(vary, &from_net(502, 0x02), DISTINCT, 1);
            out += &format!(
                "\nMany distinct flows ({DISTINCT} sources, 10.1.0.0 upwards, cycled run by run): floor of the varying program {vfloor:.1} ns.\n\n| case | ns/packet | × floor |\n| --- | ---: | ---: |\n"
            );
            for (name, f) in [
                (VARY_ESTABLISHED, from_net(502, 0x10)),
                (VARY_NEW, from_net(502, 0x06)),
                (
                    "new flows denied, distinct sources (SYN to a closed port)",
                    from_net(503, 0x02),
                ),
            ] {
                if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
                    continue;
                }
                let ns = cost(vary, &f, repeat, rounds);
                out += &format!("| {name} | {ns:.1} | {:.1} |\n", ns / vfloor);
                rows.push(Row {
                    ids,
                    cds,
                    name: name.to_string(),
                    ns,
                    floor: vfloor,
                });
            }
            out += "\n";
            eprintln!("done: {ids} identities, {cds} conduits");
        }
    }
    out += &scale_summary(&rows);
    let (xdp_filter, reference) =
        against_xdp_filter(repeat, rounds.max(3), if smoke { 0.3 } else { 2.0 });
    out += &xdp_filter;
    // The plot draws xdp-filter's established flow as a line across its panels.
    rows.push(reference);
    out += &spoofed_sources(repeat, rounds.max(3));
    out += &learning_cost(repeat, rounds.max(5));
    out += &window_cost(repeat, rounds.max(3));
    out += &temporary_conduits_cost(repeat, rounds.max(5));
    conduit_tests::report::publish(&out);
    // For the plot (`cargo xtask bench` draws it).
    if let Ok(path) = std::env::var("CONDUIT_BENCH_CSV") {
        let mut csv = String::from("identities,conduits,case,ns,floor_ns\n");
        for r in &rows {
            csv += &format!(
                "{},{},{},{:.1},{:.1}\n",
                r.ids, r.cds, r.name, r.ns, r.floor
            );
        }
        std::fs::write(path, &csv).expect("write the CSV");
    }
}

/// The benchmarks' XDP object: the program plus the floor and distinct-flows programs.
fn bench_object() -> Datapath {
    Datapath::load_options(
        LoadOptions {
            bench: true,
            ..Default::default()
        },
        None,
    )
    .expect("load the benchmarks' object")
}
