//! The assets of a zone: a name, an address (`ip` or `cidr`) and an optional MAC, each
//! claimed by one asset across all zones.
use std::rc::Rc;

use marked_yaml::Node;

use super::{Validator, fmt_mac, pos, zones::ZonesCx};
use crate::policy::{addr, model::*, raw};

impl Validator<'_> {
    /// The `assets` of zone `zone` (its name as written): the valid ones, or `None` when
    /// `assets` is not a list. An error clears `cx.ok`; every name that parsed is known to
    /// the conduits, with its zone.
    pub(super) fn assets(
        &mut self,
        cx: &mut ZonesCx,
        node: &Node,
        zone: &Rc<str>,
    ) -> Option<Vec<Asset>> {
        let Some(asset_nodes) = raw::list(node, "assets", self.d) else {
            cx.ok = false;
            return None;
        };
        // Room for every asset at once (a zone may have hundreds of thousands).
        let n = asset_nodes.len();
        self.known.asset_zone.reserve(n);
        cx.assets.reserve(n);
        cx.ips.reserve(n);
        let mut assets = Vec::with_capacity(n);
        for an in asset_nodes {
            if let Some(a) = self.asset(cx, an, zone) {
                assets.push(a);
            }
        }
        Some(assets)
    }

    /// One item of `assets`. `None` when it has an error (then `cx.ok` is cleared).
    fn asset(&mut self, cx: &mut ZonesCx, an: &Node, zone: &Rc<str>) -> Option<Asset> {
        let Some((a, _)) = raw::item::<raw::Asset>(an, "asset", raw::ASSET_KEYS, &[], self.d)
        else {
            cx.ok = false;
            if let Some(n) = raw::name_of(an) {
                self.known.asset_zone.insert(n.into(), zone.clone());
            }
            return None;
        };
        let r = &a.value;
        let name = self.name(&r.name, "asset");
        // The name once, shared by the bookkeeping below.
        let shared: Option<Rc<str>> = name.as_deref().map(Rc::from);
        if let Some(n) = &shared {
            self.known.asset_zone.insert(n.clone(), zone.clone());
        }
        if let Some(n) = &shared
            && let Some(first) = cx.assets.insert(n.clone(), pos(&r.name))
        {
            self.err(pos(&r.name), format!("asset \"{n}\" is defined twice (first at line {}); asset names are unique across zones", first.line));
            cx.ok = false;
        }
        let addr_v = match (&r.ip, &r.cidr) {
            (Some(ip), None) => self.parse(ip, addr::ip).map(|x| (Addr::Ip(x), pos(ip))),
            (None, Some(c)) => self
                .parse(c, addr::cidr)
                .map(|(n, l)| (Addr::Cidr(n, l), pos(c))),
            (Some(ip), Some(_)) => {
                self.err(
                    pos(ip),
                    "an asset has either `ip` (one address) or `cidr` (a network), not both",
                );
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
            cx.ok = false;
        }
        if let (Some((addr_ok, apos)), Some(n)) = (&addr_v, &shared) {
            match addr_ok {
                Addr::Ip(ip) => {
                    if let Some((other, first)) = cx.ips.insert(*ip, (n.clone(), *apos)) {
                        self.err(*apos, format!("address {ip} is claimed by assets \"{other}\" (line {}) and \"{n}\"; an address belongs to one asset", first.line));
                        cx.ok = false;
                    }
                }
                Addr::Cidr(net, len) => {
                    if let Some((other, first)) = cx.cidrs.insert((*net, *len), (n.clone(), *apos))
                    {
                        self.err(*apos, format!("network {net}/{len} is claimed by assets \"{other}\" (line {}) and \"{n}\"", first.line));
                        cx.ok = false;
                    }
                }
            }
        }
        if let (Some((Some(m), mpos)), Some(n)) = (&mac, &shared)
            && let Some((other, first)) = cx.macs.insert(*m, (n.clone(), *mpos))
        {
            self.err(*mpos, format!("MAC {} is bound by assets \"{other}\" (line {}) and \"{n}\"; a MAC binds one address", fmt_mac(m), first.line));
            cx.ok = false;
        }
        match (name, addr_v, mac) {
            (Some(name), Some((addr_v, _)), None) => Some(Asset {
                name,
                pos: a.pos,
                addr: addr_v,
                mac: None,
            }),
            (Some(name), Some((addr_v, _)), Some((Some(m), _))) => Some(Asset {
                name,
                pos: a.pos,
                addr: addr_v,
                mac: Some(m),
            }),
            _ => {
                cx.ok = false;
                None
            }
        }
    }
}
