//! `defaults`: the policy-wide settings, the failsafe entries and the non-IP (`l2`) rules.
use marked_yaml::Node;

use super::Validator;
use crate::policy::{addr, model::*, raw};

impl Validator<'_> {
    pub(super) fn defaults(&mut self, node: &Node) -> Option<Defaults> {
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
            set!(out.failsafe, self.failsafe(list));
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

    /// `defaults.failsafe`: rules to the gateway itself, port-based and never inspected.
    /// `None` when any entry has an error (every entry is checked).
    fn failsafe(&mut self, list: &Node) -> Option<Vec<Rule>> {
        let mut ok = true;
        let mut out = Vec::new();
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
                    out.push(rule);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}
