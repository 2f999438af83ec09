//! Rules: what one rule allows (protocol, ports, ICMP types, at most one inspection filter),
//! and the rules list of a conduit.
use marked_yaml::Node;

use super::{Validator, conduits::ConduitsCx, filters::filter_conflict, pos};
use crate::policy::{
    addr,
    diag::Pos,
    model::*,
    raw::{self},
};

impl Validator<'_> {
    pub(super) fn rule(&mut self, r: &raw::Rule, at: Pos) -> Option<Rule> {
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
            Some(m) => Some(self.modbus(m, proto, &mut ok)?),
        };
        let dnp3 = match &r.dnp3 {
            None => None,
            Some(d) => Some(self.dnp3(d, proto, &mut ok)?),
        };
        let enip = match &r.enip {
            None => None,
            Some(e) => Some(self.enip(e, proto, &mut ok)?),
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

    /// The `rules` of conduit `cname` (whose item is at `at`): a list of at least one rule,
    /// each valid, no two of which filter a TCP port in common differently. Returns the rules
    /// that are valid; an error clears `cx.ok`.
    pub(super) fn conduit_rules(
        &mut self,
        cx: &mut ConduitsCx,
        cname: &str,
        at: Pos,
        node: Option<&Node>,
    ) -> Vec<Rule> {
        let mut rules = Vec::new();
        let Some(rn) = node else {
            self.err(
                at,
                format!("conduit \"{cname}\" has no `rules`: a conduit must say what it allows"),
            );
            cx.ok = false;
            return rules;
        };
        let items = raw::list(rn, "rules", self.d);
        if items.is_none() {
            cx.ok = false;
        }
        let items = items.unwrap_or_default();
        // Not when the list did not parse (that is reported), nor after an error anywhere
        // earlier in the conduits (`cx.ok` is the whole list's).
        if items.is_empty() && cx.ok {
            self.err(
                Pos::of(rn.span()),
                format!("conduit \"{cname}\" has an empty `rules` list: it would allow nothing"),
            );
            cx.ok = false;
        }
        for rnode in items {
            match raw::item::<raw::Rule>(rnode, "rule", raw::RULE_KEYS, &[], self.d) {
                Some((ri, _)) => match self.rule(&ri.value, ri.pos) {
                    Some(rule) => rules.push(rule),
                    None => cx.ok = false,
                },
                None => cx.ok = false,
            }
        }
        // Two rules of one conduit that cover the same TCP port with different filters would
        // make the filter depend on which rule the lookup finds: refuse.
        for (i, b) in rules.iter().enumerate() {
            if let Some(a) = rules[..i].iter().find(|a| filter_conflict(a, b)) {
                self.err(b.pos, format!(
                    "this rule and the rule at line {} of conduit \"{cname}\" both allow tcp port(s) in common with different filters (`modbus`, `dnp3`, `enip`); merge them into one rule (or give them disjoint ports)",
                    a.pos.line));
                cx.ok = false;
            }
        }
        rules
    }
}
