//! From text to a validated [`Policy`], collecting every error of the file (SPEC §1
//! "Strictness of the file" and "Identity").
use std::collections::{BTreeMap, BTreeSet, HashMap};

use conduit_common::MAX_OUTSTATIONS;
use marked_yaml::{LoadError, LoaderOptions, Node, Spanned};

use super::{
    addr,
    diag::{Diagnostics, Pos, did_you_mean},
    model::*,
    raw::{self, S},
};

/// Whether two rules of one conduit both reach some TCP port with different inspection
/// filters.
fn filter_conflict(a: &Rule, b: &Rule) -> bool {
    let tcp = |r: &Rule| matches!(r.proto, Proto::Any | Proto::Number(TCP));
    if (&a.modbus, &a.dnp3, &a.enip) == (&b.modbus, &b.dnp3, &b.enip) || !tcp(a) || !tcp(b) {
        return false;
    }
    match (&a.ports, &b.ports) {
        (None, _) | (_, None) => true,
        (Some(x), Some(y)) => x
            .iter()
            .any(|&(lo, hi)| y.iter().any(|&(l, h)| lo <= h && l <= hi)),
    }
}

/// Files larger than this are refused before parsing.
pub const MAX_POLICY_BYTES: usize = 256 << 20;

fn pos(s: &Spanned<impl Sized>) -> Pos {
    Pos::of(s.span())
}

/// Parses and validates a policy file's bytes. `Some` only when there is no error.
pub fn validate_bytes(bytes: &[u8]) -> (Option<Policy>, Diagnostics) {
    let mut d = Diagnostics::default();
    if bytes.len() > MAX_POLICY_BYTES {
        d.error(
            Pos::new(1, 1),
            format!(
                "the file is {} MiB; policies larger than {} MiB are refused",
                bytes.len() >> 20,
                MAX_POLICY_BYTES >> 20
            ),
        );
        return (None, d);
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
            let col = good.len() - good.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) + 1;
            d.error(
                Pos::new(line, col),
                "the file is not UTF-8 text (is it a policy file at all?)",
            );
            return (None, d);
        }
    };
    validate_str(text)
}

/// Parses and validates policy text. `Some` only when there is no error.
pub fn validate_str(text: &str) -> (Option<Policy>, Diagnostics) {
    let mut d = Diagnostics::default();
    // A UTF-8 byte order mark (some Windows editors write one) is not part of the YAML.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty()
        || text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        d.error(
            Pos::new(1, 1),
            "the file is empty; a policy needs `version: 1`, `site`, `zones` and `conduits`",
        );
        return (None, d);
    }
    if let Some((i, line)) = text.lines().enumerate().find(|(_, l)| l.contains('\0')) {
        d.error(
            Pos::new(i + 1, line.find('\0').unwrap_or(0) + 1),
            "the file contains NUL bytes: it is not a text policy",
        );
        return (None, d);
    }
    let opts = LoaderOptions::default().error_on_duplicate_keys(true);
    let root = match marked_yaml::parse_yaml_with_options(0, text, opts) {
        Ok(n) => n,
        Err(e) => {
            load_error(e, &mut d);
            return (None, d);
        }
    };
    let policy = Validator {
        d: &mut d,
        zone_names: BTreeSet::new(),
        asset_zone: BTreeMap::new(),
    }
    .policy(&root);
    d.sort();
    if d.has_errors() {
        (None, d)
    } else {
        (policy, d)
    }
}

fn load_error(e: LoadError, d: &mut Diagnostics) {
    let at = |m: &marked_yaml::Marker| Pos::new(m.line(), m.column());
    match e {
        LoadError::TopLevelMustBeMapping(m) => d.error(
            at(&m),
            "a policy is a mapping with `version`, `site`, `zones` and `conduits` at the top level",
        ),
        LoadError::TopLevelMustBeSequence(m) => d.error(at(&m), "unexpected top level"),
        LoadError::UnexpectedAnchor(m) => d.error(
            at(&m),
            "YAML anchors and aliases are not supported in policies: write each value out",
        ),
        LoadError::MappingKeyMustBeScalar(m) => d.error(at(&m), "keys must be plain names"),
        LoadError::UnexpectedTag(m) => {
            d.error(at(&m), "YAML tags (`!foo`) are not supported in policies")
        }
        LoadError::DuplicateKey(inner) => {
            let k = &inner.key;
            let first = Pos::of(inner.prev_key.span());
            d.error(Pos::of(k.span()), format!(
                "duplicate key `{}` (first at line {}); a second value would silently replace the first",
                k.as_str(), first.line));
        }
        LoadError::ScanError(m, e) => d.error(at(&m), format!("YAML syntax error: {}", e.info())),
    }
}

struct Validator<'a> {
    d: &'a mut Diagnostics,
    /// Every zone name that parsed, even of a zone with other errors, so that references to
    /// it are not reported as dangling.
    zone_names: BTreeSet<String>,
    /// Every asset name that parsed, with its zone's name.
    asset_zone: BTreeMap<String, String>,
}

impl Validator<'_> {
    fn err(&mut self, p: Pos, m: impl Into<String>) {
        self.d.error(p, m);
    }

    /// Applies `f` to a spanned string and reports its error at the value's position.
    fn parse<T>(&mut self, s: &S, f: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        match f(s.as_str()) {
            Ok(v) => Some(v),
            Err(m) => {
                self.err(pos(s), m);
                None
            }
        }
    }

    fn name(&mut self, s: &S, what: &str) -> Option<String> {
        self.parse(s, |v| check_name(v, what))
            .map(|()| s.as_str().to_owned())
    }

    fn choice<T: Copy>(&mut self, s: &S, key: &str, options: &[(&str, T)]) -> Option<T> {
        self.parse(s, |v| {
            options
                .iter()
                .find(|(n, _)| *n == v)
                .map(|(_, t)| *t)
                .ok_or_else(|| {
                    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                    let hint = did_you_mean(v, names.iter().copied())
                        .map(|h| format!("did you mean `{h}`? "))
                        .unwrap_or_default();
                    format!(
                        "`{v}` is not a valid `{key}`; {hint}expected {}",
                        names.join(" or ")
                    )
                })
        })
    }

    fn number(&mut self, s: &S, key: &str, lo: u8, hi: u8) -> Option<u8> {
        self.parse(s, |v| match v.trim().parse::<i64>() {
            Ok(n) if (i64::from(lo)..=i64::from(hi)).contains(&n) => Ok(n as u8),
            Ok(n) => Err(format!("`{key}` {n} is out of range: expected {lo}..{hi}")),
            Err(_) => Err(format!("`{key}` must be a number {lo}..{hi}, found `{v}`")),
        })
    }

    fn mode(&mut self, s: &S) -> Option<Mode> {
        self.choice(
            s,
            "mode",
            &[("enforce", Mode::Enforce), ("monitor", Mode::Monitor)],
        )
    }

    /// `review: pending | done`: `Some(Some(pos))` when pending, `Some(None)` when done or
    /// absent, `None` (with an error) for anything else.
    fn review(&mut self, s: Option<&S>) -> Option<Option<Pos>> {
        match s {
            None => Some(None),
            Some(s) => self
                .choice(s, "review", &[("pending", true), ("done", false)])
                .map(|p| p.then(|| pos(s))),
        }
    }

    fn allow_deny(&mut self, s: &S, key: &str) -> Option<bool> {
        self.choice(s, key, &[("allow", true), ("deny", false)])
    }

    fn reverse_path(&mut self, s: &S) -> Option<ReversePath> {
        self.choice(
            s,
            "reverse_path",
            &[
                ("strict", ReversePath::Strict),
                ("loose", ReversePath::Loose),
                ("off", ReversePath::Off),
            ],
        )
    }

    /// A zone's `interfaces`: names the kernel accepts (`dev_valid_name`), each once.
    fn interfaces(&mut self, list: &Spanned<Vec<S>>) -> Option<Vec<String>> {
        if list.is_empty() {
            self.err(
                pos(list),
                "`interfaces: []` would let the zone's traffic in nowhere; remove `interfaces` to accept it on any interface, or list them",
            );
            return None;
        }
        let mut ok = true;
        let mut out: Vec<String> = Vec::new();
        for s in list.iter() {
            let name = self.parse(s, |v| {
                if v.is_empty() || v.len() > 15 {
                    Err(format!(
                        "`{v}` is not an interface name: 1 to 15 bytes (IFNAMSIZ)"
                    ))
                } else if v == "."
                    || v == ".."
                    || v.contains(['/', ':'])
                    || v.contains(char::is_whitespace)
                {
                    Err(format!(
                        "`{v}` is not an interface name: no `/`, `:` or spaces, not `.` or `..`"
                    ))
                } else {
                    Ok(v.to_owned())
                }
            });
            match name {
                Some(n) if out.contains(&n) => {
                    self.err(pos(s), format!("interface `{n}` is listed twice"));
                    ok = false;
                }
                Some(n) => out.push(n),
                None => ok = false,
            }
        }
        out.sort();
        ok.then_some(out)
    }

    fn log(&mut self, s: &S) -> Option<LogLevel> {
        self.choice(
            s,
            "log",
            &[
                ("none", LogLevel::None),
                ("deny", LogLevel::Deny),
                ("all", LogLevel::All),
            ],
        )
    }

    fn policy(&mut self, root: &Node) -> Option<Policy> {
        const NESTED: &[&str] = &["defaults", "zones", "conduits"];
        let (top, nested) = raw::item::<raw::Top>(root, "policy", raw::TOP_KEYS, NESTED, self.d)
            .map(|(i, n)| (Some(i.value), n))
            .unwrap_or_else(|| (None, nested_of(root, NESTED)));
        let mut ok = top.is_some();
        let mut version = 1;
        let mut site = String::new();
        let mut defaults = Defaults::default();
        if let Some(top) = &top {
            match self.number(&top.version, "version", 0, u8::MAX) {
                Some(1) => {}
                Some(v) => {
                    self.err(
                        pos(&top.version),
                        format!(
                            "policy `version` {v} is not supported: this conduit reads version 1"
                        ),
                    );
                    ok = false;
                    version = u32::from(v);
                }
                None => ok = false,
            }
            site = top.site.as_str().trim().to_owned();
            if site.is_empty() || site.len() > 128 || site.chars().any(char::is_control) {
                self.err(
                    pos(&top.site),
                    "`site` must be a name of 1 to 128 printable characters",
                );
                ok = false;
            }
        }
        let root_pos = Pos::of(root.span());
        let get = |k: &str| nested.iter().find(|(n, _)| n == k).map(|(_, v)| v);
        if let Some(node) = get("defaults") {
            match self.defaults(node) {
                Some(v) => defaults = v,
                None => ok = false,
            }
        }
        let zones = match get("zones") {
            Some(node) => self.zones(node),
            None => {
                self.err(root_pos, "the policy is missing the required key `zones`");
                None
            }
        };
        let conduits = match get("conduits") {
            Some(node) => self.conduits(node),
            None => {
                self.err(root_pos, "the policy is missing the required key `conduits` (write `conduits: []` for a policy that allows nothing between zones)");
                None
            }
        };
        if !ok {
            return None;
        }
        Some(Policy {
            version,
            site,
            defaults,
            zones: zones?,
            conduits: conduits?,
        })
    }

    fn defaults(&mut self, node: &Node) -> Option<Defaults> {
        let mut out = Defaults::default();
        let (raw, nested) = raw::item::<raw::Defaults>(
            node,
            "defaults",
            raw::DEFAULTS_KEYS,
            &["failsafe", "l2"],
            self.d,
        )?;
        let raw = raw.value;
        let get = |k: &str| nested.iter().find(|(n, _)| n == k).map(|(_, v)| v);
        let mut ok = true;
        macro_rules! set {
            ($field:expr, $parsed:expr) => {
                match $parsed {
                    Some(v) => $field = v,
                    None => ok = false,
                }
            };
        }
        if let Some(s) = &raw.mode {
            set!(out.mode, self.mode(s));
        }
        if let Some(s) = &raw.intra_zone {
            set!(out.intra_zone_allow, self.allow_deny(s, "intra_zone"));
        }
        if let Some(s) = &raw.fragments {
            set!(out.fragments_allow, self.allow_deny(s, "fragments"));
        }
        if let Some(s) = &raw.log {
            set!(out.log, self.log(s));
        }
        if let Some(s) = &raw.reverse_path {
            set!(out.reverse_path, self.reverse_path(s));
        }
        if let Some(list) = get("failsafe") {
            for rn in raw::list(list, "failsafe", self.d).unwrap_or_default() {
                let Some((r, _)) =
                    raw::item::<raw::Rule>(rn, "failsafe entry", raw::RULE_KEYS, &[], self.d)
                else {
                    ok = false;
                    continue;
                };
                match self.rule(&r.value, r.pos) {
                    Some(rule) => {
                        if rule.modbus.is_some() || rule.dnp3.is_some() || rule.enip.is_some() {
                            self.err(rule.pos, "a failsafe entry cannot have `modbus`, `dnp3` or `enip`: failsafe traffic to the gateway is never inspected");
                            ok = false;
                        } else if rule.proto == Proto::Any || rule.icmp_types.is_some() {
                            self.err(rule.pos, "a failsafe entry names a port-based protocol (tcp or udp) and its ports, e.g. { proto: tcp, ports: [22] }");
                            ok = false;
                        } else if rule.ports.is_none() {
                            self.err(rule.pos, "a failsafe entry needs `ports`: every port of the gateway would never be blocked");
                            ok = false;
                        }
                        out.failsafe.push(rule);
                    }
                    None => ok = false,
                }
            }
        }
        if let Some(l2node) = get("l2") {
            let (l2, _) = raw::item::<raw::L2>(l2node, "l2", raw::L2_KEYS, &[], self.d)?;
            let l2 = l2.value;
            if let Some(s) = &l2.default {
                set!(out.l2_default_allow, self.allow_deny(s, "default"));
            }
            if let Some(list) = &l2.allow_ethertypes {
                for s in list.iter() {
                    match self.parse(s, addr::ethertype) {
                        Some(e) => out.l2_ethertypes.push(e),
                        None => ok = false,
                    }
                }
                out.l2_ethertypes.sort_unstable();
                out.l2_ethertypes.dedup();
            }
        }
        ok.then_some(out)
    }

    fn rule(&mut self, r: &raw::Rule, at: Pos) -> Option<Rule> {
        let proto = self.parse(&r.proto, addr::proto)?;
        let mut ok = true;
        let ports = match &r.ports {
            None => None,
            Some(list) => {
                if !matches!(proto, Proto::Number(TCP | UDP)) {
                    self.err(
                        pos(list),
                        format!(
                            "`ports` only applies to tcp and udp, not to `{}`",
                            proto.name()
                        ),
                    );
                    ok = false;
                }
                if list.is_empty() {
                    self.err(pos(list), "`ports: []` would allow nothing; remove `ports` to allow every port, or list the ports");
                    ok = false;
                }
                let mut v = Vec::new();
                for p in list.iter() {
                    match self.parse(p, addr::port_range) {
                        Some(x) => v.push(x),
                        None => ok = false,
                    }
                }
                Some(v)
            }
        };
        let icmp_types = match &r.icmp_types {
            None => None,
            Some(list) => {
                let v6 = match proto {
                    Proto::Number(ICMP) => false,
                    Proto::Number(ICMPV6) => true,
                    _ => {
                        self.err(
                            pos(list),
                            format!(
                                "`icmp_types` only applies to icmp and icmpv6, not to `{}`",
                                proto.name()
                            ),
                        );
                        return None;
                    }
                };
                if list.is_empty() {
                    self.err(
                        pos(list),
                        "`icmp_types: []` would allow nothing; remove it to allow every type",
                    );
                    ok = false;
                }
                let mut v = Vec::new();
                for t in list.iter() {
                    match self.parse(t, |s| addr::icmp_type(s, v6)) {
                        Some(x) => v.push(x),
                        None => ok = false,
                    }
                }
                Some(v)
            }
        };
        let filters: Vec<Pos> = [
            r.modbus.as_ref().map(pos),
            r.dnp3.as_ref().map(pos),
            r.enip.as_ref().map(pos),
        ]
        .into_iter()
        .flatten()
        .collect();
        if filters.len() > 1 {
            self.err(
                filters.into_iter().max().unwrap_or(at),
                "a rule inspects one protocol: `modbus`, `dnp3` and `enip` need rules of their own (on their own ports)",
            );
            return None;
        }
        let modbus = match &r.modbus {
            None => None,
            Some(m) => {
                self.tcp_only(proto, pos(m), "modbus", "Modbus/TCP")?;
                let functions = self.codes(
                    &m.functions,
                    "functions",
                    "Modbus",
                    "[read]",
                    addr::modbus_functions,
                    &mut ok,
                );
                let unit_ids = self.addresses(
                    &m.unit_ids,
                    "`unit_ids: []` would allow no Modbus request; remove it to allow every unit ID, or list them",
                    addr::modbus_unit,
                    &mut ok,
                );
                Some(ModbusFilter {
                    functions,
                    unit_ids,
                })
            }
        };
        let dnp3 = match &r.dnp3 {
            None => None,
            Some(d) => {
                self.tcp_only(proto, pos(d), "dnp3", "DNP3 over TCP")?;
                let functions = self.codes(
                    &d.functions,
                    "functions",
                    "DNP3",
                    "[read]",
                    addr::dnp3_functions,
                    &mut ok,
                );
                let outstations = self.addresses(
                    &d.outstations,
                    "`outstations: []` would allow no DNP3 request; remove it to allow every outstation, or list their link addresses",
                    addr::dnp3_outstation,
                    &mut ok,
                );
                if let (Some(list), Some(v)) = (&d.outstations, &outstations)
                    && v.len() > MAX_OUTSTATIONS
                {
                    self.err(
                        pos(list),
                        format!(
                            "{} outstation addresses: a `dnp3` filter lists {MAX_OUTSTATIONS} at most; give the outstations behind one address a rule of their own (on their own port), or drop `outstations` to allow every address",
                            v.len()
                        ),
                    );
                    ok = false;
                }
                Some(Dnp3Filter {
                    functions,
                    outstations,
                })
            }
        };
        let enip = match &r.enip {
            None => None,
            Some(e) => {
                self.tcp_only(proto, pos(e), "enip", "EtherNet/IP")?;
                Some(self.codes(
                    &e.services,
                    "services",
                    "EtherNet/IP",
                    "[read, connection]",
                    addr::enip_services,
                    &mut ok,
                ))
            }
        };
        ok.then_some(Rule {
            pos: at,
            proto,
            ports,
            icmp_types,
            modbus,
            dnp3,
            enip,
        })
    }

    /// Refuses a protocol filter (`key`) on a rule that is not tcp.
    fn tcp_only(&mut self, proto: Proto, at: Pos, key: &str, over: &str) -> Option<()> {
        if proto == Proto::Number(TCP) {
            return Some(());
        }
        self.err(
            at,
            format!(
                "`{key}` only applies to tcp rules ({over}), not to `{}`",
                proto.name()
            ),
        );
        None
    }

    /// A filter's codes (`functions`, `services`): named sets or codes, at least one; sorted, deduplicated.
    fn codes(
        &mut self,
        list: &Spanned<Vec<S>>,
        key: &str,
        protocol: &str,
        example: &str,
        parse: fn(&str) -> Result<Vec<u8>, String>,
        ok: &mut bool,
    ) -> Vec<u8> {
        if list.is_empty() {
            self.err(pos(list), format!("`{key}: []` would allow no {protocol} request; list the allowed sets or codes, e.g. {example}"));
            *ok = false;
        }
        let mut v = Vec::new();
        for f in list.iter() {
            match self.parse(f, parse) {
                Some(codes) => v.extend(codes),
                None => *ok = false,
            }
        }
        v.sort_unstable();
        v.dedup();
        v
    }

    /// A filter's address list (`unit_ids`, `outstations`), if given: at least one; sorted,
    /// deduplicated.
    fn addresses<T: Ord>(
        &mut self,
        list: &Option<Spanned<Vec<S>>>,
        empty: &str,
        parse: fn(&str) -> Result<T, String>,
        ok: &mut bool,
    ) -> Option<Vec<T>> {
        let list = list.as_ref()?;
        if list.is_empty() {
            self.err(pos(list), empty);
            *ok = false;
        }
        let mut v = Vec::new();
        for a in list.iter() {
            match self.parse(a, parse) {
                Some(x) => v.push(x),
                None => *ok = false,
            }
        }
        v.sort_unstable();
        v.dedup();
        Some(v)
    }

    fn zones(&mut self, node: &Node) -> Option<Vec<Zone>> {
        let items = raw::list(node, "zones", self.d)?;
        let mut ok = !items.is_empty() || {
            self.err(
                Pos::of(node.span()),
                "`zones` is empty: a policy needs at least one zone",
            );
            false
        };
        let mut zones = Vec::new();
        let mut seen_zone: HashMap<String, Pos> = HashMap::new();
        let mut seen_asset: HashMap<String, Pos> = HashMap::new();
        let mut seen_ip: HashMap<std::net::IpAddr, (String, Pos)> = HashMap::new();
        let mut seen_cidr: HashMap<(std::net::IpAddr, u8), (String, Pos)> = HashMap::new();
        let mut seen_mac: HashMap<[u8; 6], (String, Pos)> = HashMap::new();
        for zn in items {
            let parsed = raw::item::<raw::Zone>(zn, "zone", raw::ZONE_KEYS, &["assets"], self.d);
            let (zone_raw, nested) = match parsed {
                Some((i, n)) => (Some(i), n),
                None => {
                    ok = false;
                    if let Some(n) = raw::name_of(zn) {
                        self.zone_names.insert(n);
                    }
                    (None, nested_of(zn, &["assets"]))
                }
            };
            let zone_name = match &zone_raw {
                Some(z) => z.value.name.as_str().to_owned(),
                None => raw::name_of(zn).unwrap_or_default(),
            };
            let mut zone = zone_raw.as_ref().and_then(|z| {
                let r = &z.value;
                let name = self.name(&r.name, "zone");
                if let Some(n) = &name {
                    self.zone_names.insert(n.clone());
                    if let Some(first) = seen_zone.insert(n.clone(), pos(&r.name)) {
                        self.err(
                            pos(&r.name),
                            format!(
                                "zone \"{n}\" is defined twice (first at line {})",
                                first.line
                            ),
                        );
                    }
                }
                let sl = self.number(&r.security_level, "security_level", 1, 4);
                let purdue = r
                    .purdue_level
                    .as_ref()
                    .map(|s| self.number(s, "purdue_level", 0, 5));
                let mode = r.mode.as_ref().map(|s| self.mode(s).map(|m| (m, pos(s))));
                let intra = r
                    .intra_zone
                    .as_ref()
                    .map(|s| self.allow_deny(s, "intra_zone"));
                let rpf = r.reverse_path.as_ref().map(|s| self.reverse_path(s));
                let ifaces = r.interfaces.as_ref().map(|l| self.interfaces(l));
                let review = self.review(r.review.as_ref());
                Some(Zone {
                    review_pending: review?,
                    name: name?,
                    pos: z.pos,
                    security_level: sl?,
                    purdue_level: match purdue {
                        Some(p) => Some(p?),
                        None => None,
                    },
                    description: r.description.as_ref().map(|s| s.as_str().to_owned()),
                    mode: match mode {
                        Some(m) => Some(m?),
                        None => None,
                    },
                    intra_zone_allow: match intra {
                        Some(i) => Some(i?),
                        None => None,
                    },
                    reverse_path: match rpf {
                        Some(r) => Some(r?),
                        None => None,
                    },
                    interfaces: match ifaces {
                        Some(l) => l?,
                        None => Vec::new(),
                    },
                    assets: Vec::new(),
                })
            });
            if zone.is_none() {
                ok = false;
            }
            let assets_node = nested.iter().find(|(k, _)| k == "assets").map(|(_, v)| v);
            let Some(assets_node) = assets_node else {
                // A zone without assets is legal (lint 7 warns about it).
                if let Some(z) = zone {
                    zones.push(z);
                }
                continue;
            };
            let Some(asset_nodes) = raw::list(assets_node, "assets", self.d) else {
                ok = false;
                continue;
            };
            for an in asset_nodes {
                let Some((a, _)) =
                    raw::item::<raw::Asset>(an, "asset", raw::ASSET_KEYS, &[], self.d)
                else {
                    ok = false;
                    if let Some(n) = raw::name_of(an) {
                        self.asset_zone.insert(n, zone_name.clone());
                    }
                    continue;
                };
                let r = &a.value;
                let name = self.name(&r.name, "asset");
                if let Some(n) = &name {
                    self.asset_zone.insert(n.clone(), zone_name.clone());
                }
                if let Some(n) = &name
                    && let Some(first) = seen_asset.insert(n.clone(), pos(&r.name))
                {
                    self.err(pos(&r.name), format!("asset \"{n}\" is defined twice (first at line {}); asset names are unique across zones", first.line));
                    ok = false;
                }
                let addr_v = match (&r.ip, &r.cidr) {
                    (Some(ip), None) => self.parse(ip, addr::ip).map(|x| (Addr::Ip(x), pos(ip))),
                    (None, Some(c)) => self
                        .parse(c, addr::cidr)
                        .map(|(n, l)| (Addr::Cidr(n, l), pos(c))),
                    (Some(ip), Some(_)) => {
                        self.err(pos(ip), "an asset has either `ip` (one address) or `cidr` (a network), not both");
                        None
                    }
                    (None, None) => {
                        self.err(
                            a.pos,
                            format!(
                                "asset \"{}\" needs an address: `ip: ...` or `cidr: ...`",
                                r.name.as_str()
                            ),
                        );
                        None
                    }
                };
                let mac = r.mac.as_ref().map(|m| (self.parse(m, addr::mac), pos(m)));
                if let (Some((Addr::Cidr(..), _)), Some((_, mpos))) = (&addr_v, &mac) {
                    self.err(
                        *mpos,
                        "`mac` binds one address to one device: use it with `ip`, not `cidr`",
                    );
                    ok = false;
                }
                if let (Some((addr_ok, apos)), Some(n)) = (&addr_v, &name) {
                    match addr_ok {
                        Addr::Ip(ip) => {
                            if let Some((other, first)) = seen_ip.insert(*ip, (n.clone(), *apos)) {
                                self.err(*apos, format!("address {ip} is claimed by assets \"{other}\" (line {}) and \"{n}\"; an address belongs to one asset", first.line));
                                ok = false;
                            }
                        }
                        Addr::Cidr(net, len) => {
                            if let Some((other, first)) =
                                seen_cidr.insert((*net, *len), (n.clone(), *apos))
                            {
                                self.err(*apos, format!("network {net}/{len} is claimed by assets \"{other}\" (line {}) and \"{n}\"", first.line));
                                ok = false;
                            }
                        }
                    }
                }
                if let (Some((Some(m), mpos)), Some(n)) = (&mac, &name)
                    && let Some((other, first)) = seen_mac.insert(*m, (n.clone(), *mpos))
                {
                    self.err(*mpos, format!("MAC {} is bound by assets \"{other}\" (line {}) and \"{n}\"; a MAC binds one address", fmt_mac(m), first.line));
                    ok = false;
                }
                match (name, addr_v, mac) {
                    (Some(name), Some((addr_v, _)), None) => {
                        if let Some(z) = &mut zone {
                            z.assets.push(Asset {
                                name,
                                pos: a.pos,
                                addr: addr_v,
                                mac: None,
                            });
                        }
                    }
                    (Some(name), Some((addr_v, _)), Some((Some(m), _))) => {
                        if let Some(z) = &mut zone {
                            z.assets.push(Asset {
                                name,
                                pos: a.pos,
                                addr: addr_v,
                                mac: Some(m),
                            });
                        }
                    }
                    _ => ok = false,
                }
            }
            if let Some(z) = zone {
                zones.push(z);
            }
        }
        ok.then_some(zones)
    }

    fn conduits(&mut self, node: &Node) -> Option<Vec<Conduit>> {
        let zone_names = std::mem::take(&mut self.zone_names);
        let asset_zone = std::mem::take(&mut self.asset_zone);
        let mut ok = true;
        let mut out = Vec::new();
        let mut seen: HashMap<String, Pos> = HashMap::new();
        for cn in raw::list(node, "conduits", self.d)? {
            let Some((c, nested)) = raw::item::<raw::Conduit>(
                cn,
                "conduit",
                raw::CONDUIT_KEYS,
                &["rules", "on_demand"],
                self.d,
            ) else {
                ok = false;
                // Still report the errors of its rules.
                if let Some((_, rn)) = nested_of(cn, &["rules"]).first() {
                    for r in raw::list(rn, "rules", self.d).unwrap_or_default() {
                        if let Some((ri, _)) =
                            raw::item::<raw::Rule>(r, "rule", raw::RULE_KEYS, &[], self.d)
                        {
                            let _ = self.rule(&ri.value, ri.pos);
                        }
                    }
                }
                continue;
            };
            let r = &c.value;
            let name = self.name(&r.name, "conduit");
            if let Some(n) = &name
                && let Some(first) = seen.insert(n.clone(), pos(&r.name))
            {
                self.err(
                    pos(&r.name),
                    format!(
                        "conduit \"{n}\" is defined twice (first at line {})",
                        first.line
                    ),
                );
                ok = false;
            }
            let cname = r.name.as_str();
            let mut zone_refs = |this: &mut Self,
                                 side: &Spanned<raw::OneOrMany>,
                                 key: &str|
             -> Vec<String> {
                if side.0.is_empty() {
                    this.err(
                        pos(side),
                        format!("`{key}` of conduit \"{cname}\" names no zone"),
                    );
                    ok = false;
                }
                for z in &side.0 {
                    if z != "unknown" && !zone_names.contains(z.as_str()) {
                        let hint = did_you_mean(z, zone_names.iter().map(String::as_str))
                            .map(|h| format!("did you mean \"{h}\"? "))
                            .unwrap_or_default();
                        this.err(pos(side), format!(
                            "unknown zone \"{z}\" in `{key}` of conduit \"{cname}\"; {hint}known zones: {}",
                            zone_names.iter().map(String::as_str).chain(["unknown"]).collect::<Vec<_>>().join(", ")));
                        ok = false;
                    }
                }
                side.0.clone()
            };
            let from = zone_refs(self, &r.from, "from");
            let to = zone_refs(self, &r.to, "to");
            let mut asset_refs = |this: &mut Self,
                                  list: &Option<Spanned<Vec<S>>>,
                                  key: &str,
                                  side: &[String],
                                  side_key: &str| {
                let list = list.as_ref()?;
                if list.is_empty() {
                    this.err(pos(list), format!("`{key}: []` would match nothing; remove `{key}` to mean every asset of `{side_key}`"));
                    ok = false;
                }
                let mut v = Vec::new();
                for a in list.iter() {
                    match asset_zone.get(a.as_str()) {
                        None => {
                            let hint = did_you_mean(a, asset_zone.keys().map(String::as_str))
                                .map(|h| format!("; did you mean \"{h}\"?"))
                                .unwrap_or_default();
                            this.err(
                                pos(a),
                                format!(
                                    "unknown asset \"{}\" in `{key}` of conduit \"{cname}\"{hint}",
                                    a.as_str()
                                ),
                            );
                            ok = false;
                        }
                        Some(z) if !side.iter().any(|s| s == z) => {
                            this.err(pos(a), format!(
                                "asset \"{}\" in `{key}` of conduit \"{cname}\" belongs to zone \"{z}\", which is not in `{side_key}` ({})",
                                a.as_str(), side.join(", ")));
                            ok = false;
                        }
                        Some(_) => v.push(a.as_str().to_owned()),
                    }
                }
                Some(v)
            };
            let sources = asset_refs(self, &r.sources, "sources", &from, "from");
            let destinations = asset_refs(self, &r.destinations, "destinations", &to, "to");
            let sl = r
                .security_level
                .as_ref()
                .map(|s| (self.number(s, "security_level", 1, 4), pos(s)));
            let bidi = r.bidirectional.as_ref().map(|s| {
                (
                    self.choice(
                        s,
                        "bidirectional",
                        &[
                            ("true", true),
                            ("false", false),
                            ("yes", true),
                            ("no", false),
                        ],
                    ),
                    pos(s),
                )
            });
            let log = r.log.as_ref().map(|s| self.log(s));
            let review = self.review(r.review.as_ref());
            let expires = match &r.expires {
                None => Some(None),
                Some(e) => self.parse(e, addr::instant).map(|t| Some((t, pos(e)))),
            };
            let on_demand = match nested.iter().find(|(k, _)| k == "on_demand") {
                None => Some(None),
                Some((_, on)) => {
                    match raw::item::<raw::OnDemand>(
                        on,
                        "on_demand",
                        raw::ON_DEMAND_KEYS,
                        &[],
                        self.d,
                    ) {
                        Some((o, _)) => self
                            .parse(&o.value.max, addr::duration)
                            .map(|m| Some((m, o.pos))),
                        None => None,
                    }
                }
            };
            let mut rules = Vec::new();
            match nested.iter().find(|(k, _)| k == "rules") {
                None => {
                    self.err(
                        c.pos,
                        format!(
                            "conduit \"{cname}\" has no `rules`: a conduit must say what it allows"
                        ),
                    );
                    ok = false;
                }
                Some((_, rn)) => {
                    let items = raw::list(rn, "rules", self.d);
                    if items.is_none() {
                        ok = false;
                    }
                    let items = items.unwrap_or_default();
                    if items.is_empty() && ok {
                        self.err(Pos::of(rn.span()), format!("conduit \"{cname}\" has an empty `rules` list: it would allow nothing"));
                        ok = false;
                    }
                    for rnode in items {
                        match raw::item::<raw::Rule>(rnode, "rule", raw::RULE_KEYS, &[], self.d) {
                            Some((ri, _)) => match self.rule(&ri.value, ri.pos) {
                                Some(rule) => rules.push(rule),
                                None => ok = false,
                            },
                            None => ok = false,
                        }
                    }
                    // Two rules of one conduit that cover the same TCP port with different Modbus filters
                    // would make the filter depend on which rule the lookup finds: refuse.
                    for (i, b) in rules.iter().enumerate() {
                        if let Some(a) = rules[..i].iter().find(|a| filter_conflict(a, b)) {
                            self.err(b.pos, format!(
                                "this rule and the rule at line {} of conduit \"{cname}\" both allow tcp port(s) in common with different filters (`modbus`, `dnp3`, `enip`); merge them into one rule (or give them disjoint ports)",
                                a.pos.line));
                            ok = false;
                        }
                    }
                }
            }
            let (
                Some(name),
                Some(sl),
                Some(bidi),
                Some(log),
                Some(review_pending),
                Some(expires),
                Some(on_demand),
            ) = (
                name,
                match sl {
                    None => Some(None),
                    Some((Some(v), p)) => Some(Some((v, p))),
                    Some((None, _)) => None,
                },
                match bidi {
                    None => Some(None),
                    Some((Some(true), p)) => Some(Some(p)),
                    Some((Some(false), _)) => Some(None),
                    Some((None, _)) => None,
                },
                match log {
                    None => Some(None),
                    Some(Some(l)) => Some(Some(l)),
                    Some(None) => None,
                },
                review,
                expires,
                on_demand,
            )
            else {
                ok = false;
                continue;
            };
            out.push(Conduit {
                name,
                pos: c.pos,
                from,
                to,
                to_pos: pos(&r.to),
                security_level: sl,
                sources,
                destinations,
                bidirectional: bidi,
                rules,
                log,
                description: r.description.as_ref().map(|s| s.as_str().to_owned()),
                review_pending,
                expires,
                on_demand,
            });
        }
        ok.then_some(out)
    }
}

/// The nested keys of a mapping node whose own deserialization failed, so their errors are
/// still reported.
fn nested_of<'a>(node: &'a Node, keys: &[&str]) -> raw::Nested<'a> {
    let Some(map) = node.as_mapping() else {
        return Vec::new();
    };
    keys.iter()
        .filter_map(|k| map.get_node(k).map(|n| ((*k).to_owned(), n)))
        .collect()
}

/// SPEC §1: `[a-z0-9][a-z0-9_-]*`, at most 63 characters, `unknown` reserved.
pub fn check_name(v: &str, what: &str) -> Result<(), String> {
    let valid_chars = v
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    let first_ok = v
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if v.is_empty() {
        Err(format!("a {what} name cannot be empty"))
    } else if v.len() > 63 {
        Err(format!(
            "{what} name \"{v}\" is {} characters long; names have at most 63",
            v.len()
        ))
    } else if !valid_chars || !first_ok {
        Err(format!(
            "\"{v}\" is not a valid {what} name: names are lower-case letters, digits, `-` and `_`, starting with a letter or digit{}",
            if v.bytes().any(|b| b.is_ascii_uppercase()) {
                format!(" (try \"{}\")", v.to_ascii_lowercase())
            } else {
                String::new()
            }
        ))
    } else if v == "unknown" {
        Err(format!(
            "\"unknown\" is reserved (it is the zone of addresses that match no asset); choose another {what} name"
        ))
    } else {
        Ok(())
    }
}

pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
