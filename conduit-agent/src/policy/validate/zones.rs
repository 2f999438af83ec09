//! Zones: each zone's settings and interfaces, and the uniqueness of names and addresses
//! across the zones list (its assets are read in [`super::assets`]).
use std::{net::IpAddr, rc::Rc};

use foldhash::{HashMap, HashMapExt as _};

use marked_yaml::{Node, Spanned};

use super::{Validator, nested_of, pos};
use crate::policy::{
    diag::Pos,
    model::*,
    raw::{self, S},
};

/// The zones list being read: what its zones and assets claimed so far (each with where),
/// to refuse a second claim, and whether everything so far is valid.
pub(super) struct ZonesCx {
    pub(super) ok: bool,
    zones: HashMap<String, Pos>,
    pub(super) assets: HashMap<Rc<str>, Pos>,
    pub(super) ips: HashMap<IpAddr, (Rc<str>, Pos)>,
    pub(super) cidrs: HashMap<(IpAddr, u8), (Rc<str>, Pos)>,
    pub(super) macs: HashMap<[u8; 6], (Rc<str>, Pos)>,
}

impl Validator<'_> {
    pub(super) fn zones(&mut self, node: &Node) -> Option<Vec<Zone>> {
        let items = raw::list(node, "zones", self.d)?;
        let ok = !items.is_empty() || {
            self.err(
                Pos::of(node.span()),
                "`zones` is empty: a policy needs at least one zone",
            );
            false
        };
        let mut cx = ZonesCx {
            ok,
            zones: HashMap::new(),
            assets: HashMap::new(),
            ips: HashMap::new(),
            cidrs: HashMap::new(),
            macs: HashMap::new(),
        };
        let mut zones = Vec::new();
        for zn in items {
            if let Some(z) = self.zone(&mut cx, zn) {
                zones.push(z);
            }
        }
        cx.ok.then_some(zones)
    }

    /// One item of `zones`, with its assets. `None` when it has an error (then `cx.ok` is
    /// cleared); its names are known to the conduits even so.
    fn zone(&mut self, cx: &mut ZonesCx, zn: &Node) -> Option<Zone> {
        let parsed = raw::item::<raw::Zone>(zn, "zone", raw::ZONE_KEYS, &["assets"], self.d);
        let (zone_raw, nested) = match parsed {
            Some((i, n)) => (Some(i), n),
            None => {
                cx.ok = false;
                if let Some(n) = raw::name_of(zn) {
                    self.known.zone_names.insert(n);
                }
                (None, nested_of(zn, &["assets"]))
            }
        };
        let zone_name = match &zone_raw {
            Some(z) => z.value.name.as_str().to_owned(),
            None => raw::name_of(zn).unwrap_or_default(),
        };
        let mut zone = zone_raw.as_ref().and_then(|z| self.zone_settings(cx, z));
        if zone.is_none() {
            cx.ok = false;
        }
        let assets_node = nested.iter().find(|(k, _)| k == "assets").map(|(_, v)| v);
        let Some(assets_node) = assets_node else {
            // A zone without assets is legal (lint 7 warns about it).
            return zone;
        };
        let assets = self.assets(cx, assets_node, &Rc::from(zone_name))?;
        if let Some(z) = &mut zone {
            z.assets = assets;
        }
        zone
    }

    /// A zone's own keys (all but `assets`); its name is recorded as known and as claimed.
    fn zone_settings(&mut self, cx: &mut ZonesCx, z: &raw::Item<raw::Zone>) -> Option<Zone> {
        let r = &z.value;
        let name = self.name(&r.name, "zone");
        if let Some(n) = &name {
            self.known.zone_names.insert(n.clone());
            if let Some(first) = cx.zones.insert(n.clone(), pos(&r.name)) {
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
}
