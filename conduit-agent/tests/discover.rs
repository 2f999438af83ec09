//! `conduit discover` (SPEC §5) without root: drafts from hand-built captures (pcap and
//! pcapng) and audit logs, determinism, `--base`, every bad input, the `review` schema and the
//! agent's refusal to enforce a pending draft, and property tests of the draft builder.
use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
};

use conduit_agent::{
    discover::{
        draft, emit,
        observe::{FlowKey, FlowObservation, FlowStats, Observations},
        proof,
    },
    policy::{lint::pending_enforced, load::load_bytes},
};
use conduit_tests::frames::{L4, modbus_adu, v4, v6};
use proptest::prelude::*;

const BIN: &str = env!("CARGO_BIN_EXE_conduit");

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const RST: u8 = 0x04;
const FIN: u8 = 0x01;

const HMI: [u8; 4] = [10, 3, 0, 20];
const ENG: [u8; 4] = [10, 3, 0, 30];
const PLC: [u8; 4] = [10, 2, 0, 10];
const SCANNER: [u8; 4] = [10, 9, 0, 66];
const HMI_MAC: [u8; 6] = [2, 0, 0, 3, 0, 0x20];
const ENG_MAC: [u8; 6] = [2, 0, 0, 3, 0, 0x30];
const PLC_MAC: [u8; 6] = [2, 0, 0, 2, 0, 0x10];
const SCANNER_MAC: [u8; 6] = [2, 0, 0, 9, 0, 0x66];

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("conduit-discover-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tcp(smac: [u8; 6], s: [u8; 4], sp: u16, d: [u8; 4], dp: u16, flags: u8) -> Vec<u8> {
    v4(
        smac,
        s,
        d,
        L4::Tcp {
            sport: sp,
            dport: dp,
            flags,
        },
    )
}

/// A whole TCP connection: handshake, one request segment (Modbus `function` when given),
/// the answer, and the close.
fn connection(
    c: ([u8; 6], [u8; 4], u16),
    s: ([u8; 6], [u8; 4], u16),
    function: Option<u8>,
) -> Vec<Vec<u8>> {
    let (cm, ci, cp) = c;
    let (sm, si, sp) = s;
    let mut v = vec![
        tcp(cm, ci, cp, si, sp, SYN),
        tcp(sm, si, sp, ci, cp, SYN | ACK),
        tcp(cm, ci, cp, si, sp, ACK),
    ];
    if let Some(f) = function {
        let (data, len) = modbus_adu(1, 1, f, &[0, 0, 0, 1]);
        v.push(v4(
            cm,
            ci,
            si,
            L4::TcpData {
                sport: cp,
                dport: sp,
                flags: ACK | PSH,
                data,
                len,
            },
        ));
        let (data, len) = modbus_adu(1, 1, f, &[2, 0, 7]);
        v.push(v4(
            sm,
            si,
            ci,
            L4::TcpData {
                sport: sp,
                dport: cp,
                flags: ACK | PSH,
                data,
                len,
            },
        ));
    }
    v.push(tcp(cm, ci, cp, si, sp, FIN | ACK));
    v.push(tcp(sm, si, sp, ci, cp, FIN | ACK));
    v.push(tcp(cm, ci, cp, si, sp, ACK));
    v
}

/// A small plant's traffic: HMI polls the PLC (Modbus read), the engineering workstation
/// programs it (function 90) and opens S7 (102), the HMI asks the PLC's time over UDP and
/// pings it; a scanner probes the PLC (refused, and silently dropped), an unanswered UDP.
fn plant_frames() -> Vec<Vec<u8>> {
    let mut f = Vec::new();
    for i in 0..3 {
        f.extend(connection(
            (HMI_MAC, HMI, 40000 + i),
            (PLC_MAC, PLC, 502),
            Some(3),
        ));
    }
    f.extend(connection(
        (ENG_MAC, ENG, 41000),
        (PLC_MAC, PLC, 502),
        Some(90),
    ));
    f.extend(connection((ENG_MAC, ENG, 41001), (PLC_MAC, PLC, 102), None));
    f.push(v4(
        HMI_MAC,
        HMI,
        PLC,
        L4::Udp {
            sport: 50123,
            dport: 123,
        },
    ));
    f.push(v4(
        PLC_MAC,
        PLC,
        HMI,
        L4::Udp {
            sport: 123,
            dport: 50123,
        },
    ));
    f.push(v4(
        HMI_MAC,
        HMI,
        PLC,
        L4::Icmp {
            ty: 8,
            code: 0,
            id: 7,
        },
    ));
    f.push(v4(
        PLC_MAC,
        PLC,
        HMI,
        L4::Icmp {
            ty: 0,
            code: 0,
            id: 7,
        },
    ));
    for port in [21, 22, 23, 80, 8080] {
        f.push(tcp(SCANNER_MAC, SCANNER, 60000, PLC, port, SYN));
        f.push(tcp(PLC_MAC, PLC, port, SCANNER, 60000, RST | ACK));
    }
    // The scanner's SYN to the HMI's 502 goes unanswered; a UDP probe too.
    f.push(tcp(SCANNER_MAC, SCANNER, 60001, HMI, 502, SYN));
    f.push(v4(
        SCANNER_MAC,
        SCANNER,
        PLC,
        L4::Udp {
            sport: 60002,
            dport: 161,
        },
    ));
    // IPv6: the HMI reads the PLC's IPv6 address too.
    let h6: [u8; 16] = [0xfd, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20];
    let p6: [u8; 16] = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
    f.push(v6(
        HMI_MAC,
        h6,
        p6,
        L4::Tcp {
            sport: 42000,
            dport: 4840,
            flags: SYN,
        },
    ));
    f.push(v6(
        PLC_MAC,
        p6,
        h6,
        L4::Tcp {
            sport: 4840,
            dport: 42000,
            flags: SYN | ACK,
        },
    ));
    f.push(v6(
        HMI_MAC,
        h6,
        p6,
        L4::Tcp {
            sport: 42000,
            dport: 4840,
            flags: ACK,
        },
    ));
    f
}

/// A classic pcap (little endian, microseconds), one frame per 10 ms from 2026-01-01.
fn pcap(frames: &[Vec<u8>], linktype: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&linktype.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        let us = i as u64 * 10_000;
        out.extend_from_slice(&(1_767_225_600u32 + (us / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((us % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// The same frames as pcapng (section header, one Ethernet interface, enhanced packet blocks
/// with microsecond timestamps).
fn pcapng(frames: &[Vec<u8>]) -> Vec<u8> {
    fn block(out: &mut Vec<u8>, ty: u32, body: &[u8]) {
        let len = 12 + body.len().div_ceil(4) * 4;
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(body);
        out.resize(out.len() + (len - 12 - body.len()), 0);
        out.extend_from_slice(&(len as u32).to_le_bytes());
    }
    let mut out = Vec::new();
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    block(&mut out, 0x0a0d_0d0a, &shb);
    let mut idb = Vec::new();
    idb.extend_from_slice(&1u16.to_le_bytes());
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&65535u32.to_le_bytes());
    block(&mut out, 1, &idb);
    for (i, f) in frames.iter().enumerate() {
        let ts = 1_767_225_600_000_000u64 + i as u64 * 10_000;
        let mut epb = Vec::new();
        epb.extend_from_slice(&0u32.to_le_bytes());
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ts as u32).to_le_bytes());
        epb.extend_from_slice(&(f.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(f.len() as u32).to_le_bytes());
        epb.extend_from_slice(f);
        block(&mut out, 6, &epb);
    }
    out
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn conduit(args: &[&std::ffi::OsStr]) -> Out {
    let o = Command::new(BIN).args(args).output().expect("run conduit");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn discover(args: &[&Path], extra: &[&str]) -> Out {
    let mut a: Vec<&std::ffi::OsStr> = vec!["discover".as_ref()];
    for p in args {
        a.push(p.as_os_str());
    }
    for e in extra {
        a.push(e.as_ref());
    }
    conduit(&a)
}

/// `discover --pcap FILE -o DRAFT --format json`: (JSON, draft text).
fn discover_pcap(d: &Path, pcap_bytes: &[u8], name: &str) -> (serde_json::Value, String) {
    let pcap = d.join(name);
    std::fs::write(&pcap, pcap_bytes).unwrap();
    let draft = d.join(format!("{name}.draft.yaml"));
    let o = conduit(&[
        "discover".as_ref(),
        "--pcap".as_ref(),
        pcap.as_os_str(),
        "-o".as_ref(),
        draft.as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
    ]);
    assert_eq!(o.code, 0, "discover failed: {}", o.stderr);
    (
        serde_json::from_str(&o.stdout).expect("JSON"),
        std::fs::read_to_string(&draft).unwrap(),
    )
}

/// The draft without its header comment (which names the input file).
fn body(draft: &str) -> &str {
    &draft[draft.find("\nversion: 1").expect("a version line")..]
}

#[test]
fn a_capture_becomes_a_draft_that_allows_every_answered_flow_and_nothing_else() {
    let d = dir("capture");
    let (j, text) = discover_pcap(&d, &pcap(&plant_frames(), 1), "plant.pcap");
    // HMI, engineering workstation, PLC, scanner; IPv6 HMI and PLC.
    assert_eq!(j["hosts"], 6, "{j}");
    // Answered: HMI→PLC 502, ENG→PLC 502, ENG→PLC 102, HMI→PLC udp/123, HMI→PLC ping,
    // HMI6→PLC6 4840. Unanswered: five refused ports, the SYN to the HMI, the UDP probe.
    assert_eq!(j["flows"]["answered"], 6, "{j}");
    assert_eq!(j["flows"]["unanswered"], 7, "{j}");
    assert_eq!(j["draft_allows"], 6);
    assert_eq!(j["draft_denies"], 7);
    assert_eq!(j["modbus_requests"]["seen"], 2);
    assert_eq!(j["modbus_requests"]["draft_allows"], 2);
    // Roles: the PLC answers on industrial ports, its clients are supervisory. MACs: bound
    // where the pairing held one to one; the PLC and the HMI are dual-stack (one MAC, two
    // addresses: a policy binds a MAC to one address), so they get none, and say why.
    assert!(
        text.contains("no `mac`: its MAC was seen with several addresses"),
        "{text}"
    );
    assert!(
        text.contains("name: controller-10-2-0-10, ip: 10.2.0.10 }"),
        "{text}"
    );
    assert!(
        text.contains("name: supervisory-10-3-0-30, ip: 10.3.0.30, mac: \"02:00:00:03:00:30\""),
        "{text}"
    );
    assert!(
        text.contains("name: host-10-9-0-66, ip: 10.9.0.66"),
        "the scanner is a host: {text}"
    );
    assert!(text.contains("purdue_level: 1"), "{text}");
    // The programming codes get a conduit of their own, for the workstation that sent them.
    let prog = &text[text
        .find("- name: net-10-3-0-to-net-10-2-0-programming")
        .expect(&text)..];
    let prog = &prog[..prog.find("\n\n").unwrap()];
    assert!(prog.contains("sources: [supervisory-10-3-0-30]"), "{prog}");
    assert!(
        prog.contains("modbus: { functions: [programming], unit_ids: [1] }"),
        "{prog}"
    );
    assert!(prog.contains("ports: [102]"), "{prog}");
    let hmi = &text[text
        .find("- name: net-10-3-0-to-net-10-2-0\n")
        .expect(&text)..];
    let hmi = &hmi[..hmi.find("\n\n").unwrap()];
    assert!(hmi.contains("sources: [supervisory-10-3-0-20]"), "{hmi}");
    assert!(
        hmi.contains("modbus: { functions: [read], unit_ids: [1] }"),
        "{hmi}"
    );
    assert!(hmi.contains("{ proto: udp, ports: [123] }"), "{hmi}");
    assert!(
        hmi.contains("{ proto: icmp, icmp_types: [echo-request] }"),
        "{hmi}"
    );
    // Nothing for the scanned ports.
    for p in ["[21]", "[22] }\n      #", "[23]", "[80]", "[8080]", "[161]"] {
        assert!(
            !text[text.find("conduits:").unwrap()..]
                .split("# Never answered")
                .next()
                .unwrap()
                .contains(&format!("ports: {p}")),
            "port {p} allowed:\n{text}"
        );
    }
    assert!(text.contains("review: pending"));
    assert!(text.contains("  mode: monitor\n"));
    // `check` accepts it with [L9] warnings; `--strict` fails on them.
    let draft = d.join("plant.pcap.draft.yaml");
    let o = conduit(&["check".as_ref(), draft.as_os_str()]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout
            .contains("[L9] conduit \"net-10-3-0-to-net-10-2-0-programming\""),
        "{}",
        o.stdout
    );
    let o = conduit(&["check".as_ref(), draft.as_os_str(), "--strict".as_ref()]);
    assert_eq!(o.code, 1);
    // Reviewed and enforced, the draft still judges every flow the same way (explain).
    let reviewed = d.join("reviewed.yaml");
    std::fs::write(&reviewed, enforce(&text)).unwrap();
    let o = conduit(&[
        "check".as_ref(),
        reviewed.as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
    ]);
    let w: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert!(
        w["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| !w["message"].as_str().unwrap().contains("[L9]")),
        "{w}"
    );
    let explain = |src: &str, dst: &str, proto: &str, port: &str| {
        let mut a: Vec<&std::ffi::OsStr> = vec!["explain".as_ref(), reviewed.as_os_str()];
        for x in [
            "--src", src, "--dst", dst, "--proto", proto, "--format", "json",
        ] {
            a.push(x.as_ref());
        }
        if proto == "icmp" {
            a.push("--icmp-type".as_ref());
            a.push(port.as_ref());
        } else {
            a.push("--dport".as_ref());
            a.push(port.as_ref());
        }
        let o = conduit(&a);
        let v: serde_json::Value =
            serde_json::from_str(&o.stdout).unwrap_or_else(|_| panic!("{}", o.stderr));
        v["verdict"].as_str().unwrap().to_owned()
    };
    assert_eq!(explain("10.3.0.20", "10.2.0.10", "tcp", "502"), "allow");
    assert_eq!(
        explain("10.3.0.20", "10.2.0.10", "tcp", "102"),
        "deny",
        "only the workstation opened 102"
    );
    assert_eq!(explain("10.3.0.30", "10.2.0.10", "tcp", "102"), "allow");
    assert_eq!(explain("10.9.0.66", "10.2.0.10", "tcp", "22"), "deny");
    assert_eq!(
        explain("10.3.0.20", "10.2.0.10", "icmp", "echo-request"),
        "allow"
    );
    assert_eq!(
        explain("10.2.0.10", "10.3.0.20", "tcp", "502"),
        "deny",
        "replies never open flows"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// The draft with review done and everything enforced.
fn enforce(draft: &str) -> String {
    draft
        .replace("review: pending", "review: done")
        .replace("  mode: monitor\n", "  mode: enforce\n")
}

#[test]
fn the_same_input_gives_the_same_bytes_pcap_or_pcapng() {
    let d = dir("determinism");
    let frames = plant_frames();
    let (j1, a) = discover_pcap(&d, &pcap(&frames, 1), "a.pcap");
    let (j2, b) = discover_pcap(&d, &pcap(&frames, 1), "b.pcap");
    let (j3, c) = discover_pcap(&d, &pcapng(&frames), "c.pcapng");
    assert_eq!(j1, j2);
    assert_eq!(j1, j3);
    assert_eq!(body(&a), body(&b));
    assert_eq!(body(&a), body(&c), "pcapng gives the same draft as pcap");
    // Twice the same file: byte-identical, header included.
    let (_, a2) = discover_pcap(&d, &pcap(&frames, 1), "a.pcap");
    assert_eq!(a, a2);
    // Linux cooked capture (tcpdump -i any): the same conduits.
    let sll: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            let mut s = vec![0, 0, 0, 1, 0, 6];
            s.extend_from_slice(&f[6..12]);
            s.extend_from_slice(&[0, 0]);
            s.extend_from_slice(&f[12..]);
            s
        })
        .collect();
    let (j4, e) = discover_pcap(&d, &pcap(&sll, 113), "cooked.pcap");
    assert_eq!(j1, j4);
    assert_eq!(body(&a), body(&e));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn base_policy_what_to_add_and_what_nobody_used() {
    let d = dir("base");
    let pcap_path = d.join("plant.pcap");
    std::fs::write(&pcap_path, pcap(&plant_frames(), 1)).unwrap();
    let base = d.join("base.yaml");
    std::fs::write(
        &base,
        "version: 1
site: base
zones:
  - name: control
    security_level: 2
    assets: [{ name: plc, ip: 10.2.0.10 }]
  - name: supervisory
    security_level: 2
    assets: [{ name: ops, cidr: 10.3.0.0/24 }]
conduits:
  - name: modbus
    from: supervisory
    to: control
    rules: [{ proto: tcp, ports: [502] }]
  - name: old-ftp
    from: supervisory
    to: control
    rules: [{ proto: tcp, ports: [21] }]
",
    )
    .unwrap();
    let o = discover(
        &[Path::new("--pcap"), &pcap_path, Path::new("--base"), &base],
        &["--format", "json"],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let j: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let denied: Vec<String> = j["base"]["would_deny"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            format!(
                "{} {} {} {} {}",
                x["client"], x["server"], x["proto"], x["port"], x["reason"]
            )
            .replace('"', "")
        })
        .collect();
    assert_eq!(
        denied,
        [
            "10.3.0.20 10.2.0.10 1 8 no_conduit",
            "10.3.0.20 10.2.0.10 17 123 no_conduit",
            "10.3.0.30 10.2.0.10 6 102 no_conduit",
            "fd00:3::20 fd00:2::10 6 4840 no_conduit",
        ],
        "{j}"
    );
    assert_eq!(
        j["base"]["unused_conduits"],
        serde_json::json!(["old-ftp"]),
        "{j}"
    );
    // The draft's own proof is still there.
    assert_eq!(j["draft_allows"], 6);
    // Text: the same, for people.
    let o = discover(
        &[Path::new("--pcap"), &pcap_path, Path::new("--base"), &base],
        &["-o", d.join("x.yaml").to_str().unwrap()],
    );
    assert_eq!(o.code, 0);
    assert!(
        o.stderr
            .contains("base policy: would deny 4 answered flow(s)"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr
            .contains("10.3.0.30 -> 10.2.0.10 tcp/102: deny (no_conduit)"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr
            .contains("1 conduit(s) no observed flow used: old-ftp"),
        "{}",
        o.stderr
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_audit_log_is_a_source_too() {
    let d = dir("audit");
    let log = d.join("audit.jsonl");
    let line = |ts: &str,
                src: &str,
                dst: &str,
                proto: &str,
                sp: u16,
                dp: u16,
                verdict: &str,
                reason: &str| {
        format!(
            r#"{{"ts":"{ts}","verdict":"{verdict}","reason":"{reason}","conduit":null,"src_zone":"a","dst_zone":"b","src_ip":"{src}","dst_ip":"{dst}","proto":"{proto}","sport":{sp},"dport":{dp},"icmp_type":null,"interface":"eth0","suppressed_before":0}}"#
        )
    };
    let text = [
        line("2026-01-01T00:00:00.000001Z", "10.3.0.20", "10.2.0.10", "tcp", 40000, 502, "allow", "conduit"),
        line("2026-01-01T00:00:00.000200Z", "10.2.0.10", "10.3.0.20", "tcp", 502, 40000, "allow", "reply"),
        line("2026-01-01T00:00:01Z", "10.9.0.66", "10.2.0.10", "tcp", 60000, 23, "would_deny", "no_conduit"),
        r#"{"ts":"2026-01-01T00:00:02Z","verdict":"deny","reason":"arp_spoof","conduit":null,"src_zone":"unknown","dst_zone":"unknown","src_ip":null,"dst_ip":null,"proto":"arp","sport":null,"dport":null,"icmp_type":null,"interface":"eth0","suppressed_before":0}"#.to_owned(),
    ]
    .join("\n");
    std::fs::write(&log, text).unwrap();
    let o = discover(&[Path::new("--audit-log"), &log], &["--format", "json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let j: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(
        j["flows"],
        serde_json::json!({"seen": 2, "answered": 1, "unanswered": 1})
    );
    assert_eq!(j["conduits"], 1);
    // A line that is not JSON: named by its number.
    std::fs::write(&log, "{\"ts\":\"2026-01-01T00:00:00Z\"}\nnot json\n").unwrap();
    let o = discover(&[Path::new("--audit-log"), &log], &[]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr
            .contains("audit.jsonl: error: line 2: not an audit log line"),
        "{}",
        o.stderr
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_seed_names_the_zones() {
    let d = dir("seed");
    let pcap_path = d.join("plant.pcap");
    std::fs::write(&pcap_path, pcap(&plant_frames(), 1)).unwrap();
    let seed = d.join("seed.yaml");
    std::fs::write(
        &seed,
        "- { name: control, cidr: 10.2.0.0/16, security_level: 3, purdue_level: 1 }\n- { name: supervisory, cidr: 10.3.0.0/24, security_level: 3, purdue_level: 2 }\n",
    )
    .unwrap();
    let out = d.join("draft.yaml");
    let o = discover(
        &[
            Path::new("--pcap"),
            &pcap_path,
            Path::new("--seed"),
            &seed,
            Path::new("-o"),
            &out,
        ],
        &[],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("  - name: control\n    security_level: 3\n    purdue_level: 1\n"),
        "{text}"
    );
    assert!(
        text.contains("- name: supervisory-to-control-programming"),
        "{text}"
    );
    // Hosts outside the seed: a zone per /24.
    assert!(text.contains("- name: net-10-9-0"), "{text}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// A bad input: exit 1, the file (and frame) named in the message, no panic, nothing at -o.
fn rejected(d: &Path, args: &[&Path], want: &[&str]) {
    let out = d.join("never.yaml");
    let mut a = args.to_vec();
    a.extend([Path::new("-o"), out.as_path()]);
    let o = discover(&a, &[]);
    assert_eq!(o.code, 1, "{args:?}: {}", o.stderr);
    for w in want {
        assert!(o.stderr.contains(w), "{args:?}: {w:?} not in {}", o.stderr);
    }
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    assert!(!out.exists(), "{args:?}: a draft was written");
    // Nothing left behind either (no temporary file).
    let left: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains(".tmp."))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bad_input_is_named_and_rejected() {
    let d = dir("bad");
    let good = pcap(&plant_frames(), 1);
    let file = |name: &str, bytes: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let pc = Path::new("--pcap");
    // Cut inside the 5th frame's data: 24-byte header, each frame 16 + len.
    let frames = plant_frames();
    let cut = 24 + frames[..4].iter().map(|f| 16 + f.len()).sum::<usize>() + 16 + 10;
    let p = file("truncated.pcap", &good[..cut]);
    rejected(
        &d,
        &[pc, &p],
        &["truncated.pcap: error: truncated: frame 5"],
    );
    let p = file("header-only.pcap", &good[..10]);
    rejected(&d, &[pc, &p], &["header-only.pcap: error: truncated"]);
    let p = file("garbage.pcap", b"this is not a capture at all, just text\n");
    rejected(
        &d,
        &[pc, &p],
        &["garbage.pcap: error: not a pcap or pcapng file"],
    );
    let p = file("empty.pcap", b"");
    rejected(&d, &[pc, &p], &["empty.pcap: error: the file is empty"]);
    let p = file("zipped.pcap.gz", &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
    rejected(
        &d,
        &[pc, &p],
        &["zipped.pcap.gz: error: a gzip-compressed file"],
    );
    let p = file("linktype.pcap", &pcap(&frames, 147));
    rejected(
        &d,
        &[pc, &p],
        &["linktype.pcap: error: frame 1: link type 147 is not supported"],
    );
    let arp_only: Vec<Vec<u8>> = (0..3)
        .map(|i| conduit_tests::frames::arp(HMI_MAC, HMI_MAC, HMI, [10, 3, 0, i], 1))
        .collect();
    let p = file("arp.pcap", &pcap(&arp_only, 1));
    rejected(
        &d,
        &[pc, &p],
        &["arp.pcap: error: no IP traffic in 3 frame(s)"],
    );
    // A record that claims 1 GiB: refused, not allocated.
    let mut huge = good[..24].to_vec();
    huge.extend_from_slice(&[0; 8]);
    huge.extend_from_slice(&(1u32 << 30).to_le_bytes());
    huge.extend_from_slice(&(1u32 << 30).to_le_bytes());
    huge.extend_from_slice(&[0; 64]);
    let p = file("huge.pcap", &huge);
    rejected(&d, &[pc, &p], &["huge.pcap: error: truncated: frame 1"]);
    // pcapng: a block whose length is not a multiple of 4, and a packet of an interface
    // that was never described.
    let mut ng = pcapng(&frames);
    ng[4..8].copy_from_slice(&27u32.to_le_bytes());
    let p = file("corrupt.pcapng", &ng);
    rejected(&d, &[pc, &p], &["corrupt.pcapng: error:"]);
    let ng = pcapng(&frames);
    let idb_end = 28 + 20;
    let mut no_idb = ng[..28].to_vec();
    no_idb.extend_from_slice(&ng[idb_end..]);
    let p = file("no-idb.pcapng", &no_idb);
    rejected(
        &d,
        &[pc, &p],
        &["no-idb.pcapng: error: frame 1 (enhanced packet block at byte 28): names interface 0"],
    );
    let missing = d.join("missing.pcap");
    rejected(&d, &[pc, &missing], &["missing.pcap: error: cannot read"]);
    rejected(&d, &[pc, &d], &["error: not a regular file"]);
    // Seeds.
    let ok = file("ok.pcap", &good);
    let s = Path::new("--seed");
    let seed = file("bad.yaml", b"zones: [ this is: not: a list\n");
    rejected(
        &d,
        &[pc, &ok, s, &seed],
        &["bad.yaml: error: not a seed file"],
    );
    let seed = file(
        "badcidr.yaml",
        b"- { name: control, cidr: 10.2.0.0/33, security_level: 3 }\n",
    );
    rejected(
        &d,
        &[pc, &ok, s, &seed],
        &["badcidr.yaml: error: zone 1 (\"control\")"],
    );
    let seed = file(
        "badsl.yaml",
        b"- { name: control, cidr: 10.2.0.0/16, security_level: 7 }\n",
    );
    rejected(
        &d,
        &[pc, &ok, s, &seed],
        &["badsl.yaml: error: zone 1 (\"control\"): security_level 7"],
    );
    let seed = file(
        "badkey.yaml",
        b"- { name: control, cidr: 10.2.0.0/16, security_level: 3, sl: 2 }\n",
    );
    rejected(
        &d,
        &[pc, &ok, s, &seed],
        &["badkey.yaml: error: not a seed file"],
    );
    let seed = d.join("no-seed.yaml");
    rejected(
        &d,
        &[pc, &ok, s, &seed],
        &["no-seed.yaml: error: cannot read the seed"],
    );
    // An invalid base policy.
    let base = file("base.yaml", b"version: 1\nsite: x\nzones: []\n");
    rejected(
        &d,
        &[pc, &ok, Path::new("--base"), &base],
        &["base.yaml: error: the base policy is not valid"],
    );
    // No source at all.
    rejected(&d, &[], &["no source"]);
    // Learn dirs: one that never existed, one without a learn file, one of another format
    // version, one with a bad record (named by line), one without a flow.
    let ld = Path::new("--learned");
    let learn = |name: &str, text: Option<&str>| {
        let p = d.join(name);
        std::fs::create_dir_all(&p).unwrap();
        if let Some(t) = text {
            std::fs::write(p.join("learned.jsonl"), t).unwrap();
        }
        p
    };
    rejected(
        &d,
        &[ld, &d.join("no-such-dir")],
        &["no-such-dir: error: not a directory"],
    );
    let p = learn("empty-learn", None);
    rejected(
        &d,
        &[ld, &p],
        &["empty-learn: error: no learned.jsonl in this directory"],
    );
    let p = learn(
        "future-learn",
        Some("{\"conduit_learn\":2,\"gateway\":\"gw\"}\n"),
    );
    rejected(
        &d,
        &[ld, &p],
        &["future-learn/learned.jsonl: error: written in learn format 2 by another version"],
    );
    let header = "{\"conduit_learn\":1,\"gateway\":\"gw\",\"written\":\"2026-12-01T00:00:00.000000Z\",\"records\":1,\"max_records\":10,\"dropped\":{\"kernel\":0,\"kernel_modbus\":0,\"disk\":0}}\n";
    let p = learn(
        "bad-learn",
        Some(&format!(
            "{header}{{\"kind\":\"flow\",\"client\":\"10.0.0.1\"}}\n"
        )),
    );
    rejected(
        &d,
        &[ld, &p],
        &["bad-learn/learned.jsonl: error: line 2: bad record"],
    );
    let p = learn("no-flow-learn", Some(header));
    rejected(
        &d,
        &[ld, &p],
        &["no-flow-learn: error: no flow in the learn dir"],
    );
    // A draft that already exists stays as it was when discover fails.
    let out = file("existing.yaml", b"# mine\n");
    let o = discover(&[pc, &missing, Path::new("-o"), &out], &[]);
    assert_eq!(o.code, 1);
    assert_eq!(std::fs::read(&out).unwrap(), b"# mine\n");
    // And an -o that cannot be written: exit 2, nothing half-written.
    let o = discover(
        &[pc, &ok, Path::new("-o"), &d.join("no/such/dir/draft.yaml")],
        &[],
    );
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("cannot write the draft"), "{}", o.stderr);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn review_pending_is_linted_and_never_enforced() {
    let policy = |mode: &str, review: &str| {
        format!(
            "version: 1
site: s
defaults: {{ mode: {mode} }}
zones:
  - name: a
    security_level: 2
    review: {review}
    assets: [{{ name: x, ip: 10.0.0.1 }}]
  - name: b
    security_level: 2
    mode: monitor
    assets: [{{ name: y, ip: 10.0.1.1 }}]
conduits:
  - name: a-to-b
    from: a
    to: b
    review: {review}
    rules: [{{ proto: tcp, ports: [502] }}]
  - name: b-to-a
    from: b
    to: a
    review: {review}
    rules: [{{ proto: tcp, ports: [502] }}]
"
        )
    };
    let msgs = |mode: &str, review: &str| -> Vec<String> {
        let (l, d) = load_bytes(policy(mode, review).as_bytes(), 0);
        let l = l.unwrap_or_else(|| panic!("{d}"));
        pending_enforced(&l.policy)
            .into_iter()
            .map(|(p, m)| format!("{}:{}: {m}", p.line, p.column))
            .collect()
    };
    // Enforced and pending: zone a, and the conduit into a (b is in monitor mode).
    let m = msgs("enforce", "pending");
    assert_eq!(m.len(), 2, "{m:?}");
    assert!(
        m[0].starts_with("7:13: zone \"a\" is still `review: pending` and would be enforced"),
        "{m:?}"
    );
    assert!(m[1].contains("conduit \"b-to-a\" is still `review: pending` and would be enforced (zone \"a\" is in enforce mode)"), "{m:?}");
    assert!(msgs("monitor", "pending").is_empty());
    assert!(msgs("enforce", "done").is_empty());
    // The lint: one [L9] per pending zone and conduit.
    let (_, d) = load_bytes(policy("monitor", "pending").as_bytes(), 0);
    assert_eq!(
        d.warnings().filter(|w| w.message.contains("[L9]")).count(),
        3,
        "{d}"
    );
    // A bad value is an error with its position.
    let (l, d) = load_bytes(policy("monitor", "maybe").as_bytes(), 0);
    assert!(l.is_none());
    assert!(
        d.to_string()
            .contains("`maybe` is not a valid `review`; expected pending or done"),
        "{d}"
    );
}

// ---- Property tests of the draft builder -------------------------------------------------

fn host(i: u8) -> IpAddr {
    match i % 8 {
        0..=2 => IpAddr::from([10, 1, 0, 10 + i]),
        3..=5 => IpAddr::from([10, 2, 0, 10 + i]),
        6 => IpAddr::from([192, 168, 7, i]),
        _ => IpAddr::from([0xfd00, 0, 0, 1, 0, 0, 0, u16::from(i)]),
    }
}

/// A random flow: (client, server, protocol, port, answered, Modbus codes, client MAC index).
fn arb_flow() -> impl Strategy<Value = Flow> {
    (
        0u8..16,
        0u8..16,
        prop_oneof![Just(6u8), Just(17u8), Just(1u8), Just(47u8)],
        prop_oneof![
            Just(502u16),
            Just(102),
            Just(22),
            Just(123),
            Just(8),
            1u16..3000
        ],
        any::<bool>(),
        proptest::collection::vec(
            prop_oneof![
                Just(3u8),
                Just(6),
                Just(8),
                Just(43),
                Just(90),
                Just(100),
                1u8..128
            ],
            0..4,
        ),
        0u8..20,
    )
}

/// (client, server, protocol, port, answered, Modbus codes, client MAC index).
type Flow = (u8, u8, u8, u16, bool, Vec<u8>, u8);

fn observations(flows: &[Flow]) -> Observations {
    let mut obs = Observations::default();
    for (c, s, proto, port, answered, codes, mac) in flows {
        let (client, server) = (host(*c), host(*s));
        if client.is_ipv4() != server.is_ipv4() {
            continue;
        }
        let proto = if *proto == 1 && client.is_ipv6() {
            58
        } else {
            *proto
        };
        let port = match proto {
            6 | 17 => *port,
            1 => 8,
            58 => 128,
            _ => 0,
        };
        let mut modbus = BTreeMap::new();
        if proto == 6 && port == 502 && *answered && !codes.is_empty() {
            modbus.insert(1u8, codes.iter().copied().collect());
        }
        obs.host(client, 1, 1);
        if *answered {
            obs.host(server, 1, 1);
        }
        // Mostly each host's own MAC; sometimes a shared one (a router) or a second one.
        obs.pair(
            client,
            [2, 0, 0, 0, 0, if *mac < 16 { *c } else { 200 + *mac }],
        );
        obs.flow(FlowObservation {
            key: FlowKey {
                client,
                server,
                proto,
                port,
            },
            stats: FlowStats {
                connections: 1,
                answered: u64::from(*answered),
                packets: 3,
                first: 1_000_000_000,
                last: 2_000_000_000,
                modbus,
                ..FlowStats::default()
            },
        });
    }
    obs
}

proptest! {
    #![proptest_config(conduit_tests::proptest_config())]

    /// The draft is a valid policy that allows every answered flow and denies every other,
    /// judged by the datapath's verdict function, allows every Modbus request seen; and it
    /// does not depend on the order in which flows were observed.
    #[test]
    fn the_draft_allows_exactly_the_answered_flows(flows in proptest::collection::vec(arb_flow(), 1..40)) {
        let obs = observations(&flows);
        prop_assume!(!obs.flows.is_empty());
        let d = draft::build(&obs, &[]);
        let text = emit::yaml(&d, &obs);
        let (l, diags) = load_bytes(text.as_bytes(), 0);
        let l = l.unwrap_or_else(|| panic!("the draft does not load:\n{diags}\n{text}"));
        prop_assert!(diags.warnings().all(|w| !w.message.contains("never matches")), "{diags}");
        let p = proof::prove(&l, &obs);
        prop_assert!(p.wrong.is_empty(), "{:?}\n{text}", p.wrong);
        let answered = obs.flows.iter().filter(|(k, s)| s.answered > 0 && k.client != k.server).count() as u64;
        prop_assert_eq!(p.allows, answered);
        prop_assert_eq!(p.denies, obs.flows.len() as u64 - answered);
        prop_assert_eq!(p.modbus_allowed, p.modbus_seen);
        // Order-free and deterministic.
        let mut rev = flows.clone();
        rev.reverse();
        let obs2 = observations(&rev);
        prop_assert_eq!(&text, &emit::yaml(&draft::build(&obs2, &[]), &obs2));
    }

    /// The smallest named sets: every code seen is allowed, and no smaller choice of sets
    /// covers the codes that are in some set.
    #[test]
    fn modbus_sets_cover_what_was_seen(codes in proptest::collection::btree_set(1u8..128, 1..8)) {
        let tokens = draft::covering_sets(&codes);
        let mut allowed = std::collections::BTreeSet::new();
        for t in &tokens {
            match t.parse::<u8>() {
                Ok(n) => { allowed.insert(n); }
                Err(_) => {
                    let (_, s) = conduit_common::inspect::modbus::SETS.iter().find(|(n, _)| n == t).unwrap();
                    allowed.extend(s.iter().copied());
                }
            }
        }
        prop_assert!(codes.is_subset(&allowed), "{codes:?} -> {tokens:?}");
        for n in codes.iter().filter(|c| tokens.contains(&c.to_string())) {
            prop_assert!(conduit_common::inspect::modbus::SETS.iter().all(|(_, s)| !s.contains(n)), "{n} is in a set but listed by number");
        }
    }
}

#[test]
fn modbus_sets_examples() {
    let s = |c: &[u8]| draft::covering_sets(&c.iter().copied().collect());
    assert_eq!(s(&[3]), ["read"]);
    assert_eq!(s(&[3, 16]), ["read", "write"]);
    assert_eq!(s(&[90]), ["programming"]);
    assert_eq!(s(&[3, 90, 100]), ["read", "programming", "100"]);
    assert_eq!(s(&[8]), ["diagnostics"]);
}
