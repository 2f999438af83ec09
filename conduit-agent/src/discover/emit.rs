//! The draft as YAML: grouped, sorted, with its evidence in comments, in the style of
//! `policies/minimal.yaml`. Byte-identical for the same draft (no clock, no hash order).
use std::{fmt::Write as _, net::IpAddr};

use super::{
    draft::{Conduit, Draft, Role},
    observe::{FlowKey, FlowStats, Observations, Ts},
};
use crate::{agent::audit::rfc3339, policy::validate::fmt_mac};

/// At most this many unanswered flows are listed in the closing comment.
const MAX_UNANSWERED_LISTED: usize = 50;

fn when(ts: Ts) -> String {
    if ts == 0 {
        "unknown".into()
    } else {
        // Seconds are enough for a reviewer.
        let s = rfc3339(u128::from(ts));
        format!("{}Z", &s[..19])
    }
}

fn proto_port(proto: u8, port: u16) -> String {
    match proto {
        6 => format!("tcp/{port}"),
        17 => format!("udp/{port}"),
        1 if port == 8 => "icmp echo-request".into(),
        58 if port == 128 => "icmpv6 echo-request".into(),
        1 => format!("icmp type {port}"),
        58 => format!("icmpv6 type {port}"),
        n => format!("protocol {n}"),
    }
}

pub fn flow_text(k: &FlowKey) -> String {
    format!(
        "{} -> {} {}",
        k.client,
        k.server,
        proto_port(k.proto, k.port)
    )
}

fn evidence(s: &FlowStats) -> String {
    let mut t = format!(
        "{} connection(s), {} answered, {} packet(s), {} .. {}",
        s.connections,
        s.answered,
        s.packets,
        when(s.first),
        when(s.last)
    );
    if s.midstream > 0 {
        let _ = write!(t, "; {} already open when the capture began", s.midstream);
    }
    t
}

fn role_text(r: Role) -> &'static str {
    match r {
        Role::Controller => "controller: answers on an industrial port",
        Role::Supervisory => "supervisory: a client of a controller",
        Role::Host => "host",
    }
}

fn rule_yaml(out: &mut String, c: &Conduit) {
    for r in &c.rules {
        let s = &r.service;
        let mut agg = FlowStats::default();
        for st in r.flows.values() {
            agg.merge(st);
        }
        let _ = writeln!(
            out,
            "      # {}: {}",
            proto_port(s.proto, s.port),
            evidence(&agg)
        );
        if let Some(m) = &s.modbus {
            for (k, st) in &r.flows {
                for (unit, f) in &st.modbus {
                    let codes: Vec<String> = f.iter().map(u8::to_string).collect();
                    let _ = writeln!(
                        out,
                        "      #   Modbus {} -> {} unit {unit}: function(s) {}",
                        k.client,
                        k.server,
                        codes.join(", ")
                    );
                }
            }
            if m.has_programming() {
                let _ = writeln!(
                    out,
                    "      #   PROGRAMMING function codes (90, 125, 126: program or stop the PLC) were used: only the sources above may send them"
                );
            }
        }
        match s.proto {
            6 | 17 => {
                let p = if s.proto == 6 { "tcp" } else { "udp" };
                match &s.modbus {
                    None => {
                        let _ = writeln!(out, "      - {{ proto: {p}, ports: [{}] }}", s.port);
                    }
                    Some(m) => {
                        let units: Vec<String> = m.units.iter().map(u8::to_string).collect();
                        let _ = writeln!(out, "      - proto: {p}");
                        let _ = writeln!(out, "        ports: [{}]", s.port);
                        let _ = writeln!(
                            out,
                            "        modbus: {{ functions: [{}], unit_ids: [{}] }}",
                            m.function_tokens().join(", "),
                            units.join(", ")
                        );
                    }
                }
            }
            1 | 58 => {
                let p = if s.proto == 1 { "icmp" } else { "icmpv6" };
                let ty = match (s.proto, s.port) {
                    (1, 8) | (58, 128) => "echo-request".to_owned(),
                    (_, t) => t.to_string(),
                };
                let _ = writeln!(out, "      - {{ proto: {p}, icmp_types: [{ty}] }}");
            }
            n => {
                let _ = writeln!(out, "      - {{ proto: {n} }}");
            }
        }
    }
}

/// The draft policy file.
pub fn yaml(d: &Draft, obs: &Observations) -> String {
    let mut o = String::new();
    let answered: usize = d
        .conduits
        .iter()
        .flat_map(|c| &c.rules)
        .map(|r| r.flows.len())
        .sum();
    o.push_str("# Draft policy made by `conduit discover` from what the plant really did:\n");
    for s in &obs.sources {
        let _ = writeln!(
            o,
            "#   {}: {} record(s), {} IP, {} .. {}",
            s.what,
            s.records,
            s.ip,
            when(s.first),
            when(s.last)
        );
    }
    let _ = writeln!(
        o,
        "# {} host(s) in {} zone(s); {} answered flow(s) became {} conduit(s); {} flow(s) never answered (scans, dead services) are not allowed.",
        d.hosts.len(),
        d.zones.len(),
        answered,
        d.conduits.len(),
        d.unanswered.len()
    );
    o.push_str(
        "#
# NOTHING HERE IS REVIEWED YET. Every zone and conduit says `review: pending`; `conduit check`
# warns about each ([L9]) and `conduit run` refuses to enforce them. To go live:
#   1. Review: rename assets and zones, set each zone's SL-T, delete conduits that should not
#      exist (what a plant did is not always what it should do), then set `review: done`.
#   2. Observe: run it in monitor mode (`defaults.mode: monitor`, as here) and watch
#      conduit_would_drop_packets_total and the audit log.
#   3. Enforce: set `mode: enforce` (zone by zone, or in `defaults`).
#
# Evidence for every item is in the comments: first and last seen, connections, packets.
version: 1
site: discovered

defaults:
  # monitor until reviewed: nothing is dropped, what would be is counted and logged.
  mode: monitor
  # deny: discover lists the traffic within a zone as conduits too, so nothing is allowed
  # that was not seen answered.
  intra_zone: deny
  fragments: deny
  log: deny
  # Never lock yourself out of the gateway.
  failsafe:
    - { proto: tcp, ports: [22] }
  l2:
    default: deny
",
    );
    if !obs.ethertypes.is_empty() {
        o.push_str("    # Seen (not allowed; add to `allow_ethertypes` what the plant needs):\n");
        for (t, n) in &obs.ethertypes {
            let _ = writeln!(o, "    #   0x{t:04x}: {n} frame(s)");
        }
    }
    o.push_str("\nzones:\n");
    for z in d.zones.values() {
        let _ = writeln!(
            o,
            "  # {}: {} host(s){}",
            z.net,
            z.hosts.len(),
            if z.from_seed { ", from the seed" } else { "" }
        );
        let _ = writeln!(o, "  - name: {}", z.name);
        if z.from_seed {
            let _ = writeln!(o, "    security_level: {}", z.security_level);
        } else {
            let _ = writeln!(
                o,
                "    security_level: {}        # review: the SL-T this zone needs",
                z.security_level
            );
        }
        if let Some(p) = z.purdue_level {
            let why = if z.from_seed {
                ""
            } else if p == 1 {
                "        # controllers answer here"
            } else {
                "        # clients of controllers"
            };
            let _ = writeln!(o, "    purdue_level: {p}{why}");
        }
        o.push_str("    review: pending\n    assets:\n");
        for ip in &z.hosts {
            let h = &d.hosts[ip];
            let mut note = format!(
                "{}; {} packet(s) sent, {} .. {}",
                role_text(h.role),
                h.stats.packets,
                when(h.stats.first),
                when(h.stats.last)
            );
            if h.mac.is_some() {
                note.push_str("; MAC and address paired one to one throughout");
            } else if !h.mac_note.is_empty() {
                let _ = write!(note, "; no `mac`: {}", h.mac_note);
            }
            let _ = writeln!(o, "      # {note}");
            match h.mac {
                Some(m) => {
                    let _ = writeln!(
                        o,
                        "      - {{ name: {}, ip: {}, mac: \"{}\" }}",
                        h.name,
                        ip,
                        fmt_mac(&m)
                    );
                }
                None => {
                    let _ = writeln!(o, "      - {{ name: {}, ip: {} }}", h.name, ip);
                }
            }
        }
        o.push('\n');
    }
    if d.conduits.is_empty() {
        o.push_str("# No flow was answered: there is nothing to allow.\nconduits: []\n");
    } else {
        o.push_str("conduits:\n");
    }
    for c in &d.conduits {
        let flows: usize = c.rules.iter().map(|r| r.flows.len()).sum();
        let _ = writeln!(o, "  # {} answered flow(s):", flows);
        for r in &c.rules {
            for k in r.flows.keys() {
                let _ = writeln!(o, "  #   {}", flow_text(k));
            }
        }
        let _ = writeln!(o, "  - name: {}", c.name);
        let _ = writeln!(o, "    from: {}", c.from);
        let _ = writeln!(o, "    to: {}", c.to);
        let _ = writeln!(o, "    sources: [{}]", c.sources.join(", "));
        let _ = writeln!(o, "    destinations: [{}]", c.destinations.join(", "));
        o.push_str("    review: pending\n    rules:\n");
        rule_yaml(&mut o, c);
        o.push('\n');
    }
    if !d.unanswered.is_empty() {
        let _ = writeln!(
            o,
            "# Never answered, so NOT allowed ({} flow(s)): port scans, dead services, broadcasts.",
            d.unanswered.len()
        );
        for (k, s) in d.unanswered.iter().take(MAX_UNANSWERED_LISTED) {
            let _ = writeln!(o, "#   {}: {}", flow_text(k), evidence(s));
        }
        if d.unanswered.len() > MAX_UNANSWERED_LISTED {
            let _ = writeln!(
                o,
                "#   ... and {} more",
                d.unanswered.len() - MAX_UNANSWERED_LISTED
            );
        }
    }
    o
}

/// For JSON: an address as a string.
pub fn ip_str(ip: IpAddr) -> String {
    ip.to_string()
}
