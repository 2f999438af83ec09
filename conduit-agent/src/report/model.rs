//! The report as data (SPEC §6 JSON): built once from the policy, its lint findings, the
//! evidence and the metadata; the HTML, Markdown and SVG are renderings of it.
use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    audit::AuditSummary,
    evidence::{Counters, Evidence, LiveId},
    meta::Meta,
};
use crate::policy::{
    Diagnostics, Pos,
    addr::icmp_type_name,
    model::{Addr, ICMPV6, LogLevel, Mode, Policy, Proto, Rule, TCP, UDP},
};

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub report: About,
    pub policy: PolicyId,
    pub evidence: EvidenceSummary,
    pub meta: MetaSummary,
    pub zones: Vec<ZoneEntry>,
    pub conduits: Vec<ConduitEntry>,
    pub matrix: Vec<MatrixRow>,
    pub findings: Vec<Finding>,
}

#[derive(Clone, Debug, Serialize)]
pub struct About {
    /// RFC 3339, UTC.
    pub generated_at: String,
    pub conduit_version: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct PolicyId {
    pub path: String,
    pub site: String,
    pub sha256: String,
    pub default_mode: &'static str,
    pub zones: usize,
    pub assets: usize,
    pub conduits: usize,
    /// What runs, per gateway (empty without a live source).
    pub live: Vec<LiveId>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EvidenceSummary {
    /// `none`, `agent` or `prometheus`.
    pub source: &'static str,
    pub state_dir: Option<String>,
    pub prometheus: Option<String>,
    /// The window over which counters are increases (Prometheus), or `since the counters
    /// were created` (the agent's own counters).
    pub window: Option<String>,
    pub gateways: Vec<String>,
    /// Frames judged, by verdict (agent only).
    pub frames: Option<BTreeMap<String, u64>>,
    pub audit_events_lost: Option<BTreeMap<String, u64>>,
    pub audit_events_suppressed: Option<u64>,
    pub audit_logs: Vec<AuditLogEntry>,
    /// What the evidence could not show, in words.
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AuditLogEntry {
    pub path: String,
    pub lines: u64,
    pub events: u64,
    pub unparsed: u64,
    pub first_ts: Option<String>,
    pub last_ts: Option<String>,
    /// Events by verdict.
    pub verdicts: BTreeMap<String, u64>,
    pub suppressed_before: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct MetaSummary {
    pub file: Option<String>,
    pub owner: Option<String>,
    pub approvals: Vec<super::meta::Approval>,
    /// Items the metadata leaves open (no owner, boundary or safety designation recorded).
    pub open_items: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct AssetEntry {
    pub name: String,
    pub address: String,
    pub mac: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LintItem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ZoneEntry {
    pub name: String,
    pub security_level: u8,
    pub purdue_level: Option<u8>,
    pub mode: &'static str,
    pub intra_zone: &'static str,
    /// Anti-spoofing: the reverse-path check of the zone's traffic (`strict`, `loose`,
    /// `off`), and the interfaces it must arrive on (empty: any).
    pub reverse_path: &'static str,
    pub interfaces: Vec<String>,
    pub description: Option<String>,
    pub assets: Vec<AssetEntry>,
    /// From `--meta`; `null` is open (not recorded), never guessed.
    pub owner: Option<String>,
    pub physical_boundary: Option<String>,
    pub safety_designation: Option<String>,
    pub lint: Vec<LintItem>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ConduitEntry {
    pub name: String,
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub bidirectional: bool,
    pub security_level: Option<u8>,
    pub sources: Option<Vec<String>>,
    pub destinations: Option<Vec<String>>,
    /// Each rule in words, e.g. `tcp 502 (modbus read)`.
    pub rules: Vec<String>,
    /// Temporary access (SPEC §8): `on demand (conduit grant), at most 8h`, `ends TIME`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    pub log: Option<&'static str>,
    pub description: Option<String>,
    /// Packets allowed through it over the window, replies included; `null` without counters.
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
    /// Packets per gateway.
    pub per_gateway: BTreeMap<String, u64>,
    /// Packets its own filter (Modbus, DNP3) dropped / would drop, by reason.
    pub inspection_dropped: BTreeMap<String, u64>,
    pub inspection_would_drop: BTreeMap<String, u64>,
    pub owner: Option<String>,
    pub physical_boundary: Option<String>,
    pub lint: Vec<LintItem>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MatrixRow {
    pub src_zone: String,
    pub dst_zone: String,
    /// Allowed packets of the conduits from `src_zone` to `dst_zone` (replies included);
    /// `null` where no conduit joins them.
    pub allowed: Option<u64>,
    pub conduits: Vec<String>,
    pub dropped: BTreeMap<String, u64>,
    pub would_drop: BTreeMap<String, u64>,
    /// Dropped and would-drop packets (all reasons) per gateway.
    pub dropped_per_gateway: BTreeMap<String, u64>,
    pub would_drop_per_gateway: BTreeMap<String, u64>,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    High,
    Medium,
    Low,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
            Severity::Info => "info",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub kind: &'static str,
    /// The zone, conduit or zone pair it is about (`null`: the site).
    pub subject: Option<String>,
    pub message: String,
    /// What to do about it.
    pub action: String,
}

pub fn reverse_path_str(r: crate::policy::model::ReversePath) -> &'static str {
    use crate::policy::model::ReversePath::*;
    match r {
        Strict => "strict",
        Loose => "loose",
        Off => "off",
    }
}

/// A zone's anti-spoofing settings, for people.
pub fn arrives(z: &ZoneEntry) -> String {
    let mut s = format!("reverse path {}", z.reverse_path);
    if !z.interfaces.is_empty() {
        s.push_str("; only on ");
        s.push_str(&z.interfaces.join(", "));
    }
    s
}

pub fn mode_str(m: Mode) -> &'static str {
    match m {
        Mode::Enforce => "enforce",
        Mode::Monitor => "monitor",
    }
}

pub fn address(a: &Addr) -> String {
    match a {
        Addr::Ip(ip) => ip.to_string(),
        Addr::Cidr(net, len) => format!("{net}/{len}"),
    }
}

/// A rule in words: `tcp 102, 44818, 20000-20010`, `icmp echo-request`, `any protocol`,
/// `tcp 502 (modbus read; units 1, 2)`, `tcp 20000 (dnp3 read, unsolicited; outstations 10)`.
pub fn rule_text(r: &Rule) -> String {
    let mut s = match r.proto {
        Proto::Any => "any protocol".to_owned(),
        p => p.name(),
    };
    if let Some(ports) = &r.ports {
        let list: Vec<String> = ports
            .iter()
            .map(|&(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect();
        s.push(' ');
        s.push_str(&list.join(", "));
    } else if matches!(r.proto, Proto::Number(TCP | UDP)) {
        s.push_str(" every port");
    }
    if let Some(types) = &r.icmp_types {
        let v6 = r.proto == Proto::Number(ICMPV6);
        let list: Vec<String> = types
            .iter()
            .map(|&t| icmp_type_name(t, v6).map_or_else(|| t.to_string(), str::to_owned))
            .collect();
        s.push(' ');
        s.push_str(&list.join(", "));
    }
    let filter = match (&r.modbus, &r.dnp3) {
        (Some(m), _) => Some((
            "modbus",
            conduit_common::inspect::modbus::SETS,
            &m.functions,
            m.unit_ids
                .as_ref()
                .map(|u| ("units", u.iter().map(u8::to_string).collect::<Vec<_>>())),
        )),
        (None, Some(d)) => Some((
            "dnp3",
            conduit_common::inspect::dnp3::SETS,
            &d.functions,
            d.outstations
                .as_ref()
                .map(|o| ("outstations", o.iter().map(u16::to_string).collect())),
        )),
        (None, None) => r.enip.as_ref().map(|codes| {
            (
                "enip",
                conduit_common::inspect::enip::SETS,
                codes,
                None::<(&str, Vec<String>)>,
            )
        }),
    };
    if let Some((key, sets, functions, addresses)) = filter {
        let mut rest: Vec<u8> = functions.clone();
        let mut names = Vec::new();
        for (name, set) in sets {
            if set.iter().all(|f| rest.contains(f)) {
                names.push((*name).to_owned());
                rest.retain(|f| !set.contains(f));
            }
        }
        names.extend(rest.iter().map(u8::to_string));
        s.push_str(&format!(" ({key} {}", names.join(", ")));
        if let Some((what, list)) = addresses {
            s.push_str(&format!("; {what} {}", list.join(", ")));
        }
        s.push(')');
    }
    s
}

/// Which zone or conduit a lint finding is about, from its position.
fn owners(p: &Policy) -> BTreeMap<Pos, (bool, String)> {
    let mut m = BTreeMap::new();
    for z in &p.zones {
        m.insert(z.pos, (true, z.name.clone()));
        if let Some((_, pos)) = z.mode {
            m.insert(pos, (true, z.name.clone()));
        }
        for a in &z.assets {
            m.insert(a.pos, (true, z.name.clone()));
        }
    }
    for c in &p.conduits {
        for pos in [
            Some(c.pos),
            Some(c.to_pos),
            c.bidirectional,
            c.security_level.map(|s| s.1),
        ]
        .into_iter()
        .flatten()
        {
            m.insert(pos, (false, c.name.clone()));
        }
        for r in &c.rules {
            m.insert(r.pos, (false, c.name.clone()));
        }
    }
    m
}

/// Everything the report needs, gathered.
pub struct Inputs<'a> {
    pub path: String,
    pub policy: &'a Policy,
    pub sha256: String,
    pub diagnostics: &'a Diagnostics,
    pub evidence: Evidence,
    pub audit: Vec<AuditSummary>,
    pub meta: Option<(String, Meta)>,
    pub generated_at: String,
}

pub fn build(inp: Inputs<'_>) -> Report {
    let p = inp.policy;
    let ev = &inp.evidence;
    let meta = inp.meta.as_ref().map(|(_, m)| m);
    let mut findings = Vec::new();
    // Lint findings, against their zone or conduit.
    let own = owners(p);
    let mut zone_lint: BTreeMap<String, Vec<LintItem>> = BTreeMap::new();
    let mut conduit_lint: BTreeMap<String, Vec<LintItem>> = BTreeMap::new();
    for w in inp.diagnostics.warnings() {
        let item = LintItem {
            line: w.pos.line,
            column: w.pos.column,
            message: w.message.clone(),
        };
        let subject = own.get(&w.pos).cloned();
        findings.push(Finding {
            severity: Severity::Medium,
            kind: "lint",
            subject: subject.as_ref().map(|(_, n)| n.clone()),
            message: format!("{} (line {})", w.message, w.pos.line),
            action: format!(
                "Change the policy at {}:{}:{} as the message says, or record in the approvals why it is accepted; `conduit check --strict` fails until then.",
                inp.path, w.pos.line, w.pos.column
            ),
        });
        match subject {
            Some((true, z)) => zone_lint.entry(z).or_default().push(item),
            Some((false, c)) => conduit_lint.entry(c).or_default().push(item),
            None => {}
        }
    }
    let mut open_items = 0usize;
    let mut open = |v: Option<String>| {
        if v.is_none() {
            open_items += 1;
        }
        v
    };
    let zones: Vec<ZoneEntry> = p
        .zones
        .iter()
        .map(|z| {
            let zm = meta.and_then(|m| m.zones.get(&z.name));
            ZoneEntry {
                name: z.name.clone(),
                security_level: z.security_level,
                purdue_level: z.purdue_level,
                mode: mode_str(z.mode.map_or(p.defaults.mode, |m| m.0)),
                intra_zone: if z.intra_zone_allow.unwrap_or(p.defaults.intra_zone_allow) {
                    "allow"
                } else {
                    "deny"
                },
                reverse_path: reverse_path_str(z.reverse_path.unwrap_or(p.defaults.reverse_path)),
                interfaces: z.interfaces.clone(),
                description: z.description.clone(),
                assets: z
                    .assets
                    .iter()
                    .map(|a| AssetEntry {
                        name: a.name.clone(),
                        address: address(&a.addr),
                        mac: a.mac.as_ref().map(crate::policy::validate::fmt_mac),
                    })
                    .collect(),
                owner: open(zm.and_then(|m| m.owner.clone())),
                physical_boundary: open(zm.and_then(|m| m.physical_boundary.clone())),
                safety_designation: open(zm.and_then(|m| m.safety_designation.clone())),
                lint: zone_lint.remove(&z.name).unwrap_or_default(),
            }
        })
        .collect();
    let counters = ev.counters.as_ref();
    let conduits: Vec<ConduitEntry> = p
        .conduits
        .iter()
        .map(|c| {
            let cm = meta.and_then(|m| m.conduits.get(&c.name));
            let t = counters.map(|k| k.conduits.get(&c.name).cloned().unwrap_or_default());
            let insp = |m: Option<&BTreeMap<(String, String), u64>>| -> BTreeMap<String, u64> {
                m.map(|m| {
                    m.iter()
                        .filter(|((n, _), _)| *n == c.name)
                        .map(|((_, r), v)| (r.clone(), *v))
                        .collect()
                })
                .unwrap_or_default()
            };
            ConduitEntry {
                name: c.name.clone(),
                from: c.from.clone(),
                to: c.to.clone(),
                bidirectional: c.bidirectional.is_some(),
                security_level: c.security_level.map(|s| s.0),
                sources: c.sources.clone(),
                destinations: c.destinations.clone(),
                rules: c.rules.iter().map(rule_text).collect(),
                access: access_text(c),
                log: c.log.map(|l| match l {
                    LogLevel::None => "none",
                    LogLevel::Deny => "deny",
                    LogLevel::All => "all",
                }),
                description: c.description.clone(),
                packets: t.as_ref().map(|t| t.packets),
                bytes: t.as_ref().map(|t| t.bytes),
                per_gateway: t.map(|t| t.per_gateway).unwrap_or_default(),
                inspection_dropped: insp(counters.map(|k| &k.inspection)),
                inspection_would_drop: insp(counters.map(|k| &k.inspection_would)),
                owner: open(cm.and_then(|m| m.owner.clone())),
                physical_boundary: open(cm.and_then(|m| m.physical_boundary.clone())),
                lint: conduit_lint.remove(&c.name).unwrap_or_default(),
            }
        })
        .collect();
    let site_owner = open(meta.and_then(|m| m.owner.clone()));
    let matrix = counters.map(|k| matrix(&conduits, k)).unwrap_or_default();
    evidence_findings(p, &inp.path, &inp.sha256, ev, &conduits, &mut findings);
    audit_findings(&inp.audit, &mut findings);
    for z in p
        .zones
        .iter()
        .filter(|z| z.mode.map_or(p.defaults.mode, |m| m.0) == Mode::Monitor)
    {
        findings.push(Finding {
            severity: Severity::Medium,
            kind: "monitor_mode",
            subject: Some(z.name.clone()),
            message: format!("Zone \"{}\" (SL-T {}) is in monitor mode: traffic into it that no conduit allows is counted and logged, not dropped.", z.name, z.security_level),
            action: "Switch it to enforce once the would-drop counts are explained (SPEC lifecycle: observe, then enforce).".into(),
        });
    }
    if open_items > 0 {
        findings.push(Finding {
            severity: Severity::Info,
            kind: "open_meta",
            subject: None,
            message: format!("{open_items} item(s) of ownership, physical boundary or safety designation are not recorded; the registers show them as open."),
            action: "Record them in the --meta file (owner, physical_boundary, safety_designation per zone and conduit).".into(),
        });
    }
    findings
        .sort_by(|a, b| (a.severity, a.kind, &a.subject).cmp(&(b.severity, b.kind, &b.subject)));
    let assets = p.zones.iter().map(|z| z.assets.len()).sum();
    Report {
        report: About {
            generated_at: inp.generated_at,
            conduit_version: env!("CARGO_PKG_VERSION").to_owned(),
        },
        policy: PolicyId {
            path: inp.path.clone(),
            site: p.site.clone(),
            sha256: inp.sha256.clone(),
            default_mode: mode_str(p.defaults.mode),
            zones: p.zones.len(),
            assets,
            conduits: p.conduits.len(),
            live: ev.live.clone(),
        },
        evidence: EvidenceSummary {
            source: ev.source,
            state_dir: ev.state_dir.clone(),
            prometheus: ev.prometheus.clone(),
            window: ev.window.clone(),
            gateways: ev.gateways.clone(),
            frames: counters.and_then(|k| k.frames.clone()),
            audit_events_lost: counters.map(|k| k.lost.clone()),
            audit_events_suppressed: counters.and_then(|k| k.suppressed),
            audit_logs: inp
                .audit
                .iter()
                .map(|a| AuditLogEntry {
                    path: a.path.clone(),
                    lines: a.lines,
                    events: a.events,
                    unparsed: a.unparsed,
                    first_ts: a.first_ts.clone(),
                    last_ts: a.last_ts.clone(),
                    verdicts: a.verdicts.clone(),
                    suppressed_before: a.suppressed_before,
                })
                .collect(),
            notes: ev.notes.clone(),
        },
        meta: MetaSummary {
            file: inp.meta.as_ref().map(|(f, _)| f.clone()),
            owner: site_owner,
            approvals: meta.map(|m| m.approvals.clone()).unwrap_or_default(),
            open_items,
        },
        zones,
        conduits,
        matrix,
        findings,
    }
}

/// The zone-by-zone matrix: allowed packets by the conduits joining a pair (a conduit of
/// several zones makes one row for its lists), drops and would-drops by reason.
fn matrix(conduits: &[ConduitEntry], k: &Counters) -> Vec<MatrixRow> {
    let mut rows: BTreeMap<(String, String), MatrixRow> = BTreeMap::new();
    fn row<'a>(
        rows: &'a mut BTreeMap<(String, String), MatrixRow>,
        s: &str,
        d: &str,
    ) -> &'a mut MatrixRow {
        rows.entry((s.to_owned(), d.to_owned()))
            .or_insert_with(|| MatrixRow {
                src_zone: s.to_owned(),
                dst_zone: d.to_owned(),
                allowed: None,
                conduits: Vec::new(),
                dropped: BTreeMap::new(),
                would_drop: BTreeMap::new(),
                dropped_per_gateway: BTreeMap::new(),
                would_drop_per_gateway: BTreeMap::new(),
            })
    }
    for c in conduits {
        let r = row(&mut rows, &c.from.join(", "), &c.to.join(", "));
        r.allowed = Some(r.allowed.unwrap_or(0) + c.packets.unwrap_or(0));
        r.conduits.push(c.name.clone());
    }
    for ((s, d, reason), v) in &k.drops {
        let r = row(&mut rows, s, d);
        *r.dropped.entry(reason.clone()).or_insert(0) += v.packets;
        for (gw, n) in &v.per_gateway {
            *r.dropped_per_gateway.entry(gw.clone()).or_insert(0) += n;
        }
    }
    for ((s, d, reason), v) in &k.would {
        let r = row(&mut rows, s, d);
        *r.would_drop.entry(reason.clone()).or_insert(0) += v.packets;
        for (gw, n) in &v.per_gateway {
            *r.would_drop_per_gateway.entry(gw.clone()).or_insert(0) += n;
        }
    }
    rows.into_values().collect()
}

fn evidence_findings(
    p: &Policy,
    path: &str,
    sha256: &str,
    ev: &Evidence,
    conduits: &[ConduitEntry],
    out: &mut Vec<Finding>,
) {
    for l in &ev.live {
        if l.sha256 != sha256 {
            out.push(Finding {
                severity: Severity::High,
                kind: "policy_mismatch",
                subject: l.gateway.clone(),
                message: format!(
                    "The gateway{} runs another policy (sha256 {}{}) than {path} (sha256 {sha256}): the registers describe this file, the counters come from the policy that runs.",
                    l.gateway.as_ref().map(|g| format!(" {g}")).unwrap_or_default(),
                    l.sha256,
                    l.generation.map(|g| format!(", generation {g}")).unwrap_or_default(),
                ),
                action: format!(
                    "Report on the file the gateway runs{}, or deploy this one (the agent reloads it) and report again.",
                    l.policy_path.as_ref().map(|p| format!(" ({p})")).unwrap_or_default()
                ),
            });
        }
        if l.agent_running == Some(false) {
            out.push(Finding {
                severity: Severity::Medium,
                kind: "agent_not_running",
                subject: l.gateway.clone(),
                message: format!("The agent{} is not running: its pinned program keeps enforcing the last policy and counting, but nothing reloads a changed policy and no audit event is written.", l.agent_pid.map(|p| format!(" (pid {p})")).unwrap_or_default()),
                action: "Start it again (systemctl start conduit); `conduit status` shows what is attached.".into(),
            });
        }
    }
    let Some(k) = &ev.counters else {
        return;
    };
    let window = ev.window.clone().unwrap_or_else(|| "the window".into());
    for c in conduits.iter().filter(|c| c.packets == Some(0)) {
        out.push(Finding {
            severity: Severity::Low,
            kind: "unused_conduit",
            subject: Some(c.name.clone()),
            message: format!("Conduit \"{}\" carried no packet over {window}.", c.name),
            action: "Remove it if nothing needs it any more (least privilege), or record why it stays (e.g. used only during maintenance).".into(),
        });
    }
    let is_spoof = |r: &str| r == "spoofed" || r == "arp_spoof";
    for ((s, d, reason), v) in &k.would {
        let zone = p.zone(d);
        let zone_sl = zone.map_or(1, |z| z.security_level);
        let monitor_now = zone.map_or(p.defaults.mode, |z| z.mode.map_or(p.defaults.mode, |m| m.0))
            == Mode::Monitor;
        out.push(if monitor_now {
            Finding {
                severity: if zone_sl >= 3 { Severity::High } else { Severity::Medium },
                kind: "would_deny",
                subject: Some(format!("{s} -> {d}")),
                message: format!("{} packet(s) from zone \"{s}\" to zone \"{d}\" would be dropped ({reason}) but passed, because \"{d}\" is in monitor mode.", v.packets),
                action: format!("Before enforcing zone \"{d}\": add a conduit for this traffic if it is legitimate (`conduit discover` drafts one from the audit log), else find and stop its source."),
            }
        } else {
            // The counters span a time when the zone was still observed (monitor mode).
            Finding {
                severity: Severity::Low,
                kind: "would_deny",
                subject: Some(format!("{s} -> {d}")),
                message: format!("{} packet(s) from zone \"{s}\" to zone \"{d}\" were passed that enforcement drops ({reason}), while \"{d}\" was in monitor mode; this policy enforces it now.", v.packets),
                action: "Check that this traffic now has a conduit or is meant to be dropped (the dropped counters and the audit log show which).".into(),
            }
        });
    }
    for ((s, d, reason), v) in &k.drops {
        if is_spoof(reason) {
            out.push(Finding {
                severity: Severity::High,
                kind: "spoofing",
                subject: Some(format!("{s} -> {d}")),
                message: format!("{} packet(s) claiming an address of zone \"{s}\" that did not come from it were dropped ({reason}): from a MAC other than the address's binding, or in on an interface the zone is not behind.", v.packets),
                action: "Find the sender (audit log: src_ip, interface). A replaced device needs its `mac` updated in the policy, a zone that moved to another interface its `interfaces` or `reverse_path`; otherwise treat it as a security incident.".into(),
            });
        } else if s == "unknown" || d == "unknown" {
            out.push(Finding {
                severity: Severity::Medium,
                kind: "unknown_traffic",
                subject: Some(format!("{s} -> {d}")),
                message: format!("{} packet(s) from \"{s}\" to \"{d}\" were dropped ({reason}): addresses that belong to no zone.", v.packets),
                action: "Identify the hosts (audit log: src_ip, dst_ip) and add them as assets of their zone, or confirm they are foreign and stay blocked.".into(),
            });
        }
    }
    for c in conduits {
        let touches = c.from.iter().chain(&c.to).any(|z| z == "unknown");
        if touches && c.packets.unwrap_or(0) > 0 {
            out.push(Finding {
                severity: Severity::Info,
                kind: "unknown_traffic",
                subject: Some(c.name.clone()),
                message: format!("Conduit \"{}\" carried {} packet(s) to or from addresses of no zone (`unknown`), as it allows.", c.name, c.packets.unwrap_or(0)),
                action: "Confirm that this path to outside the zones is still needed and as narrow as it can be.".into(),
            });
        }
        for (reason, v) in &c.inspection_would_drop {
            out.push(Finding {
                severity: Severity::Medium,
                kind: "would_deny",
                subject: Some(c.name.clone()),
                message: format!("{v} request(s) through conduit \"{}\" would be dropped by its filter ({reason}) but passed (monitor mode).", c.name),
                action: "Widen the filter if the requests are legitimate, else find the client that sends them, before enforcing.".into(),
            });
        }
    }
    let lost: u64 = k.lost.values().sum();
    if lost > 0 {
        let parts: Vec<String> = k
            .lost
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(r, v)| format!("{v} {r}"))
            .collect();
        out.push(Finding {
            severity: Severity::Medium,
            kind: "lost_audit_events",
            subject: None,
            message: format!("{lost} audit event(s) were lost over {window} ({}): the audit log is incomplete for this window (the counters are not).", parts.join(", ")),
            action: "flood: more loggable frames than each CPU's budget of 2,000 events per second (a scan or a flood; the audit log has its first events and the counters every packet); ring_full: the kernel's event buffer overflowed (check the agent's CPU); write_error: the audit log could not be written, check the disk it is on.".into(),
        });
    }
}

fn audit_findings(audit: &[AuditSummary], out: &mut Vec<Finding>) {
    for a in audit {
        if a.unparsed > 0 {
            out.push(Finding {
                severity: Severity::Low,
                kind: "audit_log_unreadable_lines",
                subject: Some(a.path.clone()),
                message: format!("{} line(s) of {} are not audit events (not JSON, or missing fields) and were not counted.", a.unparsed, a.path),
                action: "Check that the file is a conduit audit log and was not cut or edited.".into(),
            });
        }
        for (ip, n) in &a.spoofers {
            out.push(Finding {
                severity: Severity::High,
                kind: "spoofing",
                subject: Some(ip.clone()),
                message: format!("The audit log {} has {n} spoofing event(s) (spoofed or arp_spoof) from {ip}.", a.path),
                action: "Find the device behind that address and interface; a replaced device needs its `mac` updated, otherwise treat it as an incident.".into(),
            });
        }
    }
}

/// A conduit's temporary access, for the registers: on demand and its longest grant, its end.
fn access_text(c: &crate::policy::model::Conduit) -> Option<String> {
    let mut parts = Vec::new();
    if let Some((max, _)) = c.on_demand {
        parts.push(format!(
            "on demand (conduit grant), at most {}",
            crate::policy::addr::human_duration(u64::from(max))
        ));
    }
    if let Some((end, _)) = c.expires {
        parts.push(format!(
            "ends {}",
            crate::agent::audit::rfc3339(u128::from(end) * 1_000_000_000)
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_in_words() {
        let (p, d) = crate::policy::validate::validate_bytes(
            b"version: 1\nsite: t\nzones:\n  - { name: a, security_level: 1, assets: [{ name: x, ip: 10.0.0.1 }] }\n  - { name: b, security_level: 2, assets: [{ name: y, ip: 10.0.0.2 }] }\nconduits:\n  - name: c\n    from: a\n    to: b\n    rules:\n      - { proto: tcp, ports: [502, \"20000-20010\"], modbus: { functions: [read, 6] } }\n      - { proto: icmp, icmp_types: [echo-request, 3] }\n      - { proto: udp }\n      - { proto: 47 }\n",
        );
        let p = p.unwrap_or_else(|| panic!("{d}"));
        let r: Vec<String> = p.conduits[0].rules.iter().map(rule_text).collect();
        assert_eq!(
            r,
            [
                "tcp 502, 20000-20010 (modbus read, 6)",
                "icmp echo-request, destination-unreachable",
                "udp every port",
                "47"
            ]
        );
    }
}
