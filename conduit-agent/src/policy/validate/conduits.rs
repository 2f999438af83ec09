//! Conduits: their names, the zones and assets they connect, their settings and time limits
//! (`expires`, `on_demand`); their rules are read in [`super::rules`].
use foldhash::{HashMap, HashMapExt as _};

use marked_yaml::{Node, Spanned};

use super::{Known, Validator, nested_of, pos};
use crate::policy::{
    addr,
    diag::{Pos, did_you_mean},
    model::*,
    raw::{self, S},
};

/// The conduits list being read: the zones and assets it may name, the conduit names claimed
/// so far (with where), and whether everything so far is valid.
pub(super) struct ConduitsCx<'k> {
    known: &'k Known,
    seen: HashMap<String, Pos>,
    pub(super) ok: bool,
}

impl Validator<'_> {
    pub(super) fn conduits(&mut self, node: &Node) -> Option<Vec<Conduit>> {
        let known = std::mem::take(&mut self.known);
        let mut cx = ConduitsCx {
            known: &known,
            seen: HashMap::new(),
            ok: true,
        };
        let mut out = Vec::new();
        for cn in raw::list(node, "conduits", self.d)? {
            if let Some(c) = self.conduit(&mut cx, cn) {
                out.push(c);
            }
        }
        cx.ok.then_some(out)
    }

    /// One item of `conduits`. `None` when it has an error (then `cx.ok` is cleared).
    fn conduit(&mut self, cx: &mut ConduitsCx, cn: &Node) -> Option<Conduit> {
        let Some((c, nested)) = raw::item::<raw::Conduit>(
            cn,
            "conduit",
            raw::CONDUIT_KEYS,
            &["rules", "on_demand"],
            self.d,
        ) else {
            cx.ok = false;
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
            return None;
        };
        let r = &c.value;
        let name = self.name(&r.name, "conduit");
        if let Some(n) = &name
            && let Some(first) = cx.seen.insert(n.clone(), pos(&r.name))
        {
            self.err(
                pos(&r.name),
                format!(
                    "conduit \"{n}\" is defined twice (first at line {})",
                    first.line
                ),
            );
            cx.ok = false;
        }
        let cname = r.name.as_str();
        let from = self.zone_refs(cx, cname, &r.from, "from");
        let to = self.zone_refs(cx, cname, &r.to, "to");
        let sources = self.asset_refs(cx, cname, &r.sources, "sources", &from, "from");
        let destinations = self.asset_refs(cx, cname, &r.destinations, "destinations", &to, "to");
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
        let expires = self.expires(r.expires.as_ref());
        let on_demand = self.on_demand(&nested);
        let rules_node = nested.iter().find(|(k, _)| k == "rules").map(|(_, n)| *n);
        let rules = self.conduit_rules(cx, cname, c.pos, rules_node);
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
            cx.ok = false;
            return None;
        };
        Some(Conduit {
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
        })
    }

    /// `from` or `to` (`key`) of conduit `cname`: at least one zone, each known (or
    /// `unknown`). Returns the names as written; an error clears `cx.ok`.
    fn zone_refs(
        &mut self,
        cx: &mut ConduitsCx,
        cname: &str,
        side: &Spanned<raw::OneOrMany>,
        key: &str,
    ) -> Vec<String> {
        let zone_names = &cx.known.zone_names;
        if side.0.is_empty() {
            self.err(
                pos(side),
                format!("`{key}` of conduit \"{cname}\" names no zone"),
            );
            cx.ok = false;
        }
        for z in &side.0 {
            if z != "unknown" && !zone_names.contains(z.as_str()) {
                let hint = did_you_mean(z, zone_names.iter().map(String::as_str))
                    .map(|h| format!("did you mean \"{h}\"? "))
                    .unwrap_or_default();
                self.err(pos(side), format!(
                    "unknown zone \"{z}\" in `{key}` of conduit \"{cname}\"; {hint}known zones: {}",
                    zone_names.iter().map(String::as_str).chain(["unknown"]).collect::<Vec<_>>().join(", ")));
                cx.ok = false;
            }
        }
        side.0.clone()
    }

    /// `sources` or `destinations` (`key`) of conduit `cname`, if given: at least one asset,
    /// each known and in a zone of `side` (its `from` or `to`, `side_key`). Returns the
    /// valid names; an error clears `cx.ok`.
    fn asset_refs(
        &mut self,
        cx: &mut ConduitsCx,
        cname: &str,
        list: &Option<Spanned<Vec<S>>>,
        key: &str,
        side: &[String],
        side_key: &str,
    ) -> Option<Vec<String>> {
        let asset_zone = &cx.known.asset_zone;
        let list = list.as_ref()?;
        if list.is_empty() {
            self.err(pos(list), format!("`{key}: []` would match nothing; remove `{key}` to mean every asset of `{side_key}`"));
            cx.ok = false;
        }
        let mut v = Vec::new();
        for a in list.iter() {
            match asset_zone.get(a.as_str()) {
                None => {
                    // The nearest name whatever the map's order (`did_you_mean` breaks
                    // ties by name).
                    let hint = did_you_mean(a, asset_zone.keys().map(|k| &**k))
                        .map(|h| format!("; did you mean \"{h}\"?"))
                        .unwrap_or_default();
                    self.err(
                        pos(a),
                        format!(
                            "unknown asset \"{}\" in `{key}` of conduit \"{cname}\"{hint}",
                            a.as_str()
                        ),
                    );
                    cx.ok = false;
                }
                Some(z) if !side.iter().any(|s| **s == **z) => {
                    self.err(pos(a), format!(
                        "asset \"{}\" in `{key}` of conduit \"{cname}\" belongs to zone \"{z}\", which is not in `{side_key}` ({})",
                        a.as_str(), side.join(", ")));
                    cx.ok = false;
                }
                Some(_) => v.push(a.as_str().to_owned()),
            }
        }
        Some(v)
    }

    /// `expires` of a conduit: `Some(None)` when absent, `None` (with an error) when it is not
    /// an instant.
    fn expires(&mut self, e: Option<&S>) -> Option<Option<(u32, Pos)>> {
        match e {
            None => Some(None),
            Some(e) => self.parse(e, addr::instant).map(|t| Some((t, pos(e)))),
        }
    }

    /// `on_demand` of a conduit (among its `nested` keys), as [`Validator::expires`].
    fn on_demand(&mut self, nested: &raw::Nested) -> Option<Option<(u32, Pos)>> {
        match nested.iter().find(|(k, _)| k == "on_demand") {
            None => Some(None),
            Some((_, on)) => {
                match raw::item::<raw::OnDemand>(on, "on_demand", raw::ON_DEMAND_KEYS, &[], self.d)
                {
                    Some((o, _)) => self
                        .parse(&o.value.max, addr::duration)
                        .map(|m| Some((m, o.pos))),
                    None => None,
                }
            }
        }
    }
}
