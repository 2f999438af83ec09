//! The `modbus` and `dnp3` sections of a tcp rule: what they accept, every error they report
//! (with the line of the offending value), the lint that asks for them, and what the compiled
//! policy decides for requests (through `decide`, the function the XDP program runs).
use conduit_agent::policy::load::{Loaded, load_bytes};
use conduit_common::{
    FAMILY_V4, Reason, Verdict,
    inspect::Request,
    parse::TCP_ACK,
    verdict::{KIND_IP, PROTO_TCP, Packet, decide},
};

/// A policy whose conduit hmi → plc has `rule` (one YAML line, indented as a list item).
fn policy(rule: &str) -> String {
    format!(
        "version: 1
site: t
zones:
  - name: sup
    security_level: 2
    assets: [{{ name: hmi, ip: 10.0.0.1 }}]
  - name: ctl
    security_level: 3
    assets: [{{ name: plc, ip: 10.1.0.1, mac: \"02:00:00:00:00:01\" }}]
conduits:
  - name: hmi-plc
    from: sup
    to: ctl
    security_level: 3
    rules:
{rule}
"
    )
}

/// The errors of `yaml` as "line: message".
fn errors(yaml: &str) -> Vec<String> {
    let (loaded, d) = load_bytes(yaml.as_bytes(), 0);
    assert!(
        loaded.is_none(),
        "expected errors, the policy loaded:\n{yaml}"
    );
    d.errors()
        .map(|e| format!("{}: {}", e.pos.line, e.message))
        .collect()
}

fn load(yaml: &str) -> (Loaded, Vec<String>) {
    let (loaded, d) = load_bytes(yaml.as_bytes(), 0);
    let warnings = d.warnings().map(|w| w.message.clone()).collect();
    (
        loaded.unwrap_or_else(|| panic!("invalid:\n{d}\n{yaml}")),
        warnings,
    )
}

fn has(errors: &[String], line: usize, needle: &str) {
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&format!("{line}: ")) && e.contains(needle)),
        "no error on line {line} containing {needle:?}: {errors:#?}"
    );
}

/// The verdict on a request segment hmi → plc:502 with `function` and `unit`.
fn request(l: &Loaded, function: u8, unit: u8) -> (Verdict, Reason) {
    judge(l, 502, Request::Modbus { unit, function })
}

/// The verdict on a segment hmi → plc:`port` carrying `request`.
fn judge(l: &Loaded, port: u16, request: Request) -> (Verdict, Reason) {
    let mut p = Packet {
        kind: KIND_IP,
        family: FAMILY_V4,
        ethertype: 0x0800,
        proto: PROTO_TCP,
        sport: 40000,
        dport: port,
        tcp_flags: TCP_ACK,
        ..Default::default()
    };
    (p.payload_len, p.app) = request.payload();
    p.src[..4].copy_from_slice(&[10, 0, 0, 1]);
    p.dst[..4].copy_from_slice(&[10, 1, 0, 1]);
    let d = decide(&l.compiled, 0, &p, 0);
    (d.verdict, d.reason)
}

#[test]
fn named_sets_and_codes() {
    let (l, warnings) = load(&policy(
        "      - { proto: tcp, ports: [502], modbus: { functions: [read, 6], unit_ids: [1, 2] } }",
    ));
    assert!(warnings.is_empty(), "{warnings:?}");
    for f in [1u8, 2, 3, 4, 7, 11, 12, 17, 20, 24, 6] {
        assert_eq!(request(&l, f, 1), (Verdict::Allow, Reason::Conduit), "{f}");
    }
    for f in [5u8, 15, 16, 21, 22, 23, 8, 43, 90, 125, 126] {
        assert_eq!(
            request(&l, f, 1),
            (Verdict::Deny, Reason::ModbusFunction),
            "{f}"
        );
    }
    assert_eq!(request(&l, 3, 2), (Verdict::Allow, Reason::Conduit));
    assert_eq!(request(&l, 3, 3), (Verdict::Deny, Reason::ModbusUnit));
    assert_eq!(request(&l, 3, 0), (Verdict::Deny, Reason::ModbusUnit));

    let (l, _) = load(&policy(
        "      - { proto: tcp, ports: [502], modbus: { functions: [write, diagnostics, programming] } }",
    ));
    for f in [
        5u8, 6, 15, 16, 21, 22, 23, 7, 8, 11, 12, 17, 43, 90, 125, 126,
    ] {
        assert_eq!(
            request(&l, f, 255),
            (Verdict::Allow, Reason::Conduit),
            "{f}"
        );
    }
    for f in [1u8, 2, 3, 4, 20, 24] {
        assert_eq!(request(&l, f, 255), (Verdict::Deny, Reason::ModbusFunction));
    }
}

#[test]
fn the_first_packet_of_a_connection_is_not_a_request() {
    // A SYN has no payload: the filter has nothing to judge, the conduit allows it.
    let (l, _) = load(&policy(
        "      - { proto: tcp, ports: [502], modbus: { functions: [read] } }",
    ));
    let mut p = Packet {
        kind: KIND_IP,
        family: FAMILY_V4,
        proto: PROTO_TCP,
        dport: 502,
        tcp_flags: conduit_common::parse::TCP_SYN,
        ..Default::default()
    };
    p.src[..4].copy_from_slice(&[10, 0, 0, 1]);
    p.dst[..4].copy_from_slice(&[10, 1, 0, 1]);
    assert_eq!(decide(&l.compiled, 0, &p, 0).reason, Reason::Conduit);
}

#[test]
fn every_mistake_is_an_error_on_its_line() {
    // Line 16 is the rule line in `policy`.
    let e = errors(&policy(
        "      - { proto: tcp, ports: [502], modbus: { functions: [reed] } }",
    ));
    has(
        &e,
        16,
        "`reed` is not a Modbus function set or code; did you mean `read`?",
    );
    has(&e, 16, "read, write, diagnostics, programming");
    for code in ["0", "128", "255", "1000"] {
        let e = errors(&policy(&format!(
            "      - {{ proto: tcp, ports: [502], modbus: {{ functions: [{code}] }} }}"
        )));
        has(&e, 16, "out of range: requests are 1..127");
    }
    for (rule, message) in [
        (
            "proto: tcp, ports: [502], modbus: { functions: [] }",
            "`functions: []` would allow no Modbus request",
        ),
        (
            "proto: tcp, ports: [502], modbus: { functions: [read], unit_ids: [256] }",
            "unit IDs are 0..255",
        ),
        (
            "proto: tcp, ports: [502], modbus: { functions: [read], unit_ids: [] }",
            "`unit_ids: []`",
        ),
        (
            "proto: udp, ports: [502], modbus: { functions: [read] }",
            "`modbus` only applies to tcp rules",
        ),
    ] {
        let e = errors(&policy(&format!("      - {{ {rule} }}")));
        has(&e, 16, message);
    }
    let e = errors(&policy(
        "      - { proto: tcp, ports: [502], modbus: { function: [read] } }",
    ));
    assert!(
        e.iter().any(|m| m.contains("function")),
        "unknown key inside modbus: {e:?}"
    );
    let e = errors(&policy("      - { proto: tcp, ports: [502], modbus: {} }"));
    assert!(
        e.iter().any(|m| m.contains("functions")),
        "missing functions: {e:?}"
    );
    // Several mistakes: all reported.
    let e = errors(&policy(
        "      - { proto: tcp, ports: [502], modbus: { functions: [reed, 0], unit_ids: [300] } }",
    ));
    assert!(e.len() >= 3, "{e:#?}");
}

#[test]
fn two_rules_of_one_conduit_must_not_disagree_on_a_port() {
    let e = errors(&policy(
        "      - { proto: tcp, ports: [502], modbus: { functions: [read] } }
      - { proto: tcp, ports: [\"500-510\"] }",
    ));
    has(
        &e,
        17,
        "different filters (`modbus`, `dnp3`, `enip`); merge them",
    );
    let e = errors(&policy(
        "      - { proto: tcp, ports: [502], modbus: { functions: [read] } }
      - { proto: any }",
    ));
    has(&e, 17, "different filters (`modbus`, `dnp3`, `enip`)");
    // Disjoint ports, or the same filter: fine.
    load(&policy(
        "      - { proto: tcp, ports: [502], modbus: { functions: [read] } }
      - { proto: tcp, ports: [503], modbus: { functions: [write] } }
      - { proto: tcp, ports: [\"500-502\"], modbus: { functions: [read] } }
      - { proto: udp }",
    ));
}

#[test]
fn failsafe_entries_cannot_inspect() {
    let yaml = policy("      - { proto: tcp, ports: [502] , modbus: { functions: [read] } }")
        .replace(
            "site: t\n",
            "site: t\ndefaults:\n  failsafe: [{ proto: tcp, ports: [22], modbus: { functions: [read] } }]\n",
        );
    let e = errors(&yaml);
    has(&e, 4, "a failsafe entry cannot have `modbus`");
}

#[test]
fn lint_asks_for_a_filter_on_modbus_into_high_sl_zones() {
    let (_, w) = load(&policy("      - { proto: tcp, ports: [502] }"));
    assert!(
        w.iter()
            .any(|m| m.starts_with("[L8]") && m.contains("modbus: { functions: [read] }")),
        "{w:?}"
    );
    let (_, w) = load(&policy("      - { proto: tcp, ports: [\"500-510\"] }"));
    assert!(w.iter().any(|m| m.starts_with("[L8]")), "{w:?}");
    // Read-only is least privilege: no warning; nor for other ports.
    for rule in [
        "      - { proto: tcp, ports: [502], modbus: { functions: [read] } }",
        "      - { proto: tcp, ports: [502], modbus: { functions: [read, write] } }",
        "      - { proto: tcp, ports: [4840] }",
    ] {
        let (_, w) = load(&policy(rule));
        assert!(!w.iter().any(|m| m.starts_with("[L8]")), "{rule}: {w:?}");
    }
}

#[test]
fn identical_filters_share_one_entry_and_compilation_is_deterministic() {
    let yaml = policy(
        "      - { proto: tcp, ports: [502], modbus: { functions: [read] } }
      - { proto: tcp, ports: [503], modbus: { functions: [3, 1, 2, 4, 7, 11, 12, 17, 20, 24] } }
      - { proto: tcp, ports: [504], modbus: { functions: [write] } }",
    );
    let (a, _) = load(&yaml);
    let (b, _) = load(&yaml);
    assert_eq!(a.compiled, b.compiled);
    assert_eq!(a.compiled.filters.len(), 2);
    assert_eq!(a.compiled.settings.inspect, 1);
    let (c, _) = load(&policy("      - { proto: tcp, ports: [502] }"));
    assert_eq!(c.compiled.settings.inspect, 0);
    assert!(c.compiled.filters.is_empty());
}

#[test]
fn dnp3_named_sets_codes_and_outstations() {
    let dnp3 = |l: &Loaded, function: u8, outstation: u16| {
        judge(
            l,
            20000,
            Request::Dnp3 {
                outstation,
                function,
            },
        )
    };
    let (l, warnings) = load(&policy(
        "      - { proto: tcp, ports: [20000], dnp3: { functions: [read, unsolicited, 24], outstations: [10, 1024] } }",
    ));
    assert!(warnings.is_empty(), "{warnings:?}");
    for f in [0u8, 1, 20, 21, 22, 24] {
        assert_eq!(dnp3(&l, f, 10), (Verdict::Allow, Reason::Conduit), "{f}");
    }
    for f in [2u8, 3, 4, 5, 6, 7, 13, 14, 18, 23, 25, 32, 129] {
        assert_eq!(
            dnp3(&l, f, 1024),
            (Verdict::Deny, Reason::Dnp3Function),
            "{f}"
        );
    }
    for o in [0u16, 11, 0xfffd, 0xffff] {
        assert_eq!(dnp3(&l, 1, o), (Verdict::Deny, Reason::Dnp3Address), "{o}");
    }
    // Every named set, every outstation.
    let (l, _) = load(&policy(
        "      - { proto: tcp, ports: [20000], dnp3: { functions: [write, control, freeze, restart, application, time, files, auth] } }",
    ));
    for f in (2u8..=19).chain(23..=33) {
        assert_eq!(dnp3(&l, f, 7), (Verdict::Allow, Reason::Conduit), "{f}");
    }
    for f in [0u8, 1, 20, 21, 22, 34, 255] {
        assert_eq!(dnp3(&l, f, 7), (Verdict::Deny, Reason::Dnp3Function), "{f}");
    }
    // A Modbus request on a DNP3 rule is not DNP3: malformed.
    assert_eq!(
        judge(
            &l,
            20000,
            Request::Modbus {
                unit: 1,
                function: 3
            }
        ),
        (Verdict::Deny, Reason::Malformed)
    );
}

#[test]
fn dnp3_mistakes_are_errors_on_their_line() {
    let e = errors(&policy(
        "      - { proto: tcp, ports: [20000], dnp3: { functions: [raed] } }",
    ));
    has(
        &e,
        16,
        "`raed` is not a DNP3 function set or code; did you mean `read`?",
    );
    has(
        &e,
        16,
        "read, write, control, freeze, restart, application, unsolicited, time, files, auth",
    );
    let many: Vec<String> = (1..=33).map(|i| i.to_string()).collect();
    for (rule, message) in [
        (
            "dnp3: { functions: [256] }",
            "out of range: requests are 0..255",
        ),
        (
            "dnp3: { functions: [] }",
            "`functions: []` would allow no DNP3 request",
        ),
        (
            "dnp3: { functions: [read], outstations: [] }",
            "`outstations: []`",
        ),
        (
            "dnp3: { functions: [read], outstations: [65536] }",
            "link addresses are 0..65535",
        ),
        (
            "dnp3: { functions: [read], outstations: [ten] }",
            "is not a DNP3 outstation address",
        ),
        (
            &format!(
                "dnp3: {{ functions: [read], outstations: [{}] }}",
                many.join(", ")
            ),
            "33 outstation addresses: a `dnp3` filter lists 32 at most",
        ),
        (
            "modbus: { functions: [read] }, dnp3: { functions: [read] }",
            "a rule inspects one protocol",
        ),
    ] {
        let e = errors(&policy(&format!(
            "      - {{ proto: tcp, ports: [20000], {rule} }}"
        )));
        has(&e, 16, message);
    }
    let e = errors(&policy(
        "      - { proto: udp, ports: [20000], dnp3: { functions: [read] } }",
    ));
    has(&e, 16, "`dnp3` only applies to tcp rules (DNP3 over TCP)");
    let e = errors(&policy(
        "      - { proto: tcp, ports: [20000], dnp3: { functions: [read], units: [1] } }",
    ));
    assert!(
        e.iter().any(|m| m.contains("units")),
        "unknown key inside dnp3: {e:?}"
    );
    // Two rules reaching port 20000 with different filters.
    let e = errors(&policy(
        "      - { proto: tcp, ports: [20000], dnp3: { functions: [read] } }
      - { proto: tcp, ports: [\"19999-20001\"], dnp3: { functions: [control] } }",
    ));
    has(&e, 17, "different filters (`modbus`, `dnp3`, `enip`)");
}

#[test]
fn lint_l8_asks_for_a_dnp3_filter_into_high_zones() {
    let (_, warnings) = load(&policy("      - { proto: tcp, ports: [20000] }"));
    assert!(
        warnings.iter().any(|w| w.contains("[L8]")
            && w.contains("DNP3 (port 20000)")
            && w.contains("`dnp3: { functions: [read] }`")),
        "{warnings:?}"
    );
    let (_, warnings) = load(&policy(
        "      - { proto: tcp, ports: [20000], dnp3: { functions: [read, control] } }",
    ));
    assert!(!warnings.iter().any(|w| w.contains("[L8]")), "{warnings:?}");
}

#[test]
fn enip_named_sets_and_services() {
    use conduit_common::inspect::enip::{CONNECTION_MANAGER, FORWARD_OPEN, UNCONNECTED_SEND};
    let enip = |l: &Loaded, code: u8| judge(l, 44818, Request::Enip { code });
    let (l, warnings) = load(&policy(
        "      - { proto: tcp, ports: [44818], enip: { services: [read, connection, 0x10] } }",
    ));
    assert!(warnings.is_empty(), "{warnings:?}");
    for c in [
        0x01u8,
        0x03,
        0x0E,
        0x4C,
        0x52,
        0x10,
        CONNECTION_MANAGER | FORWARD_OPEN,
    ] {
        assert_eq!(enip(&l, c), (Verdict::Allow, Reason::Conduit), "{c:#x}");
    }
    for c in [
        0x02u8,
        0x05,
        0x07,
        0x4D,
        0x4E,
        0x53,
        CONNECTION_MANAGER | 0x56,
    ] {
        assert_eq!(enip(&l, c), (Verdict::Deny, Reason::EnipService), "{c:#x}");
    }
    // An Unconnected_Send with nothing inside cannot be judged.
    assert_eq!(
        enip(&l, CONNECTION_MANAGER | UNCONNECTED_SEND),
        (Verdict::Deny, Reason::Malformed)
    );
    let (l, _) = load(&policy(
        "      - { proto: tcp, ports: [44818], enip: { services: [write, admin] } }",
    ));
    for c in [0x02u8, 0x10, 0x4D, 0x4E, 0x53, 0x05, 0x06, 0x07, 0x15, 0x16] {
        assert_eq!(enip(&l, c), (Verdict::Allow, Reason::Conduit), "{c:#x}");
    }
    for c in [0x0Eu8, 0x4C, CONNECTION_MANAGER | FORWARD_OPEN] {
        assert_eq!(enip(&l, c), (Verdict::Deny, Reason::EnipService), "{c:#x}");
    }
}

#[test]
fn enip_mistakes_are_errors_on_their_line() {
    let e = errors(&policy(
        "      - { proto: tcp, ports: [44818], enip: { services: [raed] } }",
    ));
    has(
        &e,
        16,
        "`raed` is not a CIP service set or code; did you mean `read`?",
    );
    has(&e, 16, "read, write, admin, connection");
    for (rule, message) in [
        (
            "enip: { services: [128] }",
            "out of range: requests are 0..127",
        ),
        (
            "enip: { services: [] }",
            "`services: []` would allow no EtherNet/IP request",
        ),
        (
            "dnp3: { functions: [read] }, enip: { services: [read] }",
            "a rule inspects one protocol",
        ),
    ] {
        let e = errors(&policy(&format!(
            "      - {{ proto: tcp, ports: [44818], {rule} }}"
        )));
        has(&e, 16, message);
    }
    let e = errors(&policy(
        "      - { proto: udp, ports: [44818], enip: { services: [read] } }",
    ));
    has(&e, 16, "`enip` only applies to tcp rules (EtherNet/IP)");
    let e = errors(&policy(
        "      - { proto: tcp, ports: [44818], enip: { functions: [read] } }",
    ));
    assert!(e.iter().any(|m| m.contains("functions")), "{e:?}");
    let (_, warnings) = load(&policy("      - { proto: tcp, ports: [44818] }"));
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("[L8]") && w.contains("EtherNet/IP (port 44818)")),
        "{warnings:?}"
    );
}

/// What lint [L8] suggests is a filter that parses, and silences it, for every protocol.
#[test]
fn lint_l8_suggests_a_filter_that_works() {
    for port in [502, 20000, 44818] {
        let (_, warnings) = load(&policy(&format!(
            "      - {{ proto: tcp, ports: [{port}] }}"
        )));
        let w = warnings
            .iter()
            .find(|w| w.contains("[L8]"))
            .unwrap_or_else(|| panic!("{port}: no [L8] in {warnings:?}"));
        let filter = w
            .split("add `")
            .nth(1)
            .and_then(|s| s.split('`').next())
            .unwrap_or_else(|| panic!("{port}: no suggestion in {w}"));
        let (_, warnings) = load(&policy(&format!(
            "      - {{ proto: tcp, ports: [{port}], {filter} }}"
        )));
        assert!(
            !warnings.iter().any(|w| w.contains("[L8]")),
            "{port}: {filter}: {warnings:?}"
        );
    }
}
