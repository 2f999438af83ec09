//! What changed between two policies, by name: a digest of every zone, every conduit and of
//! the defaults, that ignores where in the file they are written (moving a zone or adding a
//! comment changes nothing; changing an asset, a rule or a mode does). The change log keeps
//! the digests of each policy that went live, so that the next one can be compared with it,
//! across agent restarts too.
//!
//! Every field of the model is named below (exhaustive destructuring): a field added to the
//! model without being added here does not compile, so no change can go unnoticed.
use std::{collections::BTreeMap, fmt::Write as _};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::model::{Conduit, Defaults, Dnp3Filter, ModbusFilter, Policy, Rule, Zone};

/// The digests of one policy: 16 hex digits (64 bits of sha256) per item. Enough to tell a
/// change: the policy's own sha256 is what proves which file it was.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digests {
    pub defaults: String,
    pub zones: BTreeMap<String, String>,
    pub conduits: BTreeMap<String, String>,
}

/// Names added, removed and changed (each sorted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// What changed from one policy to the next.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    pub zones: Delta,
    pub conduits: Delta,
    /// `defaults:` (modes, failsafe, logging, fragments, L2, reverse path) changed.
    pub defaults: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.zones.is_empty() && self.conduits.is_empty() && !self.defaults
    }
}

/// Feeds what is written into sha256.
struct Hasher(sha2::Sha256);

impl std::fmt::Write for Hasher {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

/// The first 8 bytes of the hash, hex.
fn finish(h: Hasher) -> String {
    let mut hex = format!("{:x}", h.0.finalize());
    hex.truncate(16);
    hex
}

fn rule(h: &mut Hasher, r: &Rule) {
    let Rule {
        pos: _,
        proto,
        ports,
        icmp_types,
        modbus,
        dnp3,
        enip,
    } = r;
    let _ = write!(h, "rule({proto:?},{ports:?},{icmp_types:?},");
    match (modbus, dnp3) {
        (
            Some(ModbusFilter {
                functions,
                unit_ids,
            }),
            _,
        ) => {
            let _ = write!(h, "modbus({functions:?},{unit_ids:?}))");
        }
        (
            None,
            Some(Dnp3Filter {
                functions,
                outstations,
            }),
        ) => {
            let _ = write!(h, "dnp3({functions:?},{outstations:?}))");
        }
        (None, None) => match enip {
            Some(codes) => {
                let _ = write!(h, "enip({codes:?}))");
            }
            None => {
                let _ = write!(h, "-)");
            }
        },
    }
}

fn defaults(d: &Defaults) -> String {
    let Defaults {
        mode,
        intra_zone_allow,
        fragments_allow,
        log,
        reverse_path,
        failsafe,
        l2_default_allow,
        l2_ethertypes,
    } = d;
    let mut h = Hasher(sha2::Sha256::new());
    let _ = write!(
        h,
        "{mode:?},{intra_zone_allow},{fragments_allow},{log:?},{reverse_path:?},{l2_default_allow},{l2_ethertypes:?},"
    );
    for r in failsafe {
        rule(&mut h, r);
    }
    finish(h)
}

fn zone(z: &Zone) -> String {
    let Zone {
        name,
        pos: _,
        security_level,
        purdue_level,
        description,
        mode,
        intra_zone_allow,
        reverse_path,
        interfaces,
        review_pending,
        assets,
    } = z;
    let mut h = Hasher(sha2::Sha256::new());
    let _ = write!(
        h,
        "{name:?},{security_level},{purdue_level:?},{description:?},{:?},{intra_zone_allow:?},{reverse_path:?},{interfaces:?},{},",
        mode.map(|(m, _)| m),
        review_pending.is_some()
    );
    for a in assets {
        let super::model::Asset {
            name,
            pos: _,
            addr,
            mac,
        } = a;
        let _ = write!(h, "asset({name:?},{addr:?},{mac:?})");
    }
    finish(h)
}

fn conduit(c: &Conduit) -> String {
    let Conduit {
        name,
        pos: _,
        from,
        to,
        to_pos: _,
        security_level,
        sources,
        destinations,
        bidirectional,
        rules,
        log,
        description,
        review_pending,
        expires,
        on_demand,
    } = c;
    let mut h = Hasher(sha2::Sha256::new());
    let _ = write!(
        h,
        "{name:?},{from:?},{to:?},{:?},{sources:?},{destinations:?},{},{log:?},{description:?},{},",
        security_level.map(|(l, _)| l),
        bidirectional.is_some(),
        review_pending.is_some()
    );
    // Written only when set, so that the digests of conduits without an end stay as they were.
    if let Some((end, _)) = expires {
        let _ = write!(h, "expires({end}),");
    }
    if let Some((max, _)) = on_demand {
        let _ = write!(h, "on_demand({max}),");
    }
    for r in rules {
        rule(&mut h, r);
    }
    finish(h)
}

/// The digests of a policy's defaults, zones and conduits.
pub fn of(p: &Policy) -> Digests {
    Digests {
        defaults: defaults(&p.defaults),
        zones: p.zones.iter().map(|z| (z.name.clone(), zone(z))).collect(),
        conduits: p
            .conduits
            .iter()
            .map(|c| (c.name.clone(), conduit(c)))
            .collect(),
    }
}

fn delta(prev: Option<&BTreeMap<String, String>>, next: &BTreeMap<String, String>) -> Delta {
    let empty = BTreeMap::new();
    let prev = prev.unwrap_or(&empty);
    Delta {
        added: next
            .keys()
            .filter(|k| !prev.contains_key(*k))
            .cloned()
            .collect(),
        removed: prev
            .keys()
            .filter(|k| !next.contains_key(*k))
            .cloned()
            .collect(),
        changed: next
            .iter()
            .filter(|(k, v)| prev.get(*k).is_some_and(|p| p != *v))
            .map(|(k, _)| k.clone())
            .collect(),
    }
}

/// What changed from `prev` (none: no policy before, so everything is added) to `next`.
pub fn diff(prev: Option<&Digests>, next: &Digests) -> Changes {
    Changes {
        zones: delta(prev.map(|p| &p.zones), &next.zones),
        conduits: delta(prev.map(|p| &p.conduits), &next.conduits),
        defaults: prev.is_some_and(|p| p.defaults != next.defaults),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::validate::validate_str;

    fn digests(text: &str) -> Digests {
        let (p, d) = validate_str(text);
        of(&p.unwrap_or_else(|| panic!("{d}")))
    }

    const BASE: &str = "version: 1\nsite: s\nzones:\n  - name: a\n    security_level: 1\n    assets: [{ name: a1, ip: 10.0.0.1 }]\n  - name: b\n    security_level: 2\n    assets: [{ name: b1, ip: 10.0.1.1 }]\nconduits:\n  - name: a-to-b\n    from: a\n    to: b\n    rules: [{ proto: tcp, ports: [502] }]\n";

    #[test]
    fn moving_and_commenting_change_nothing() {
        let moved = "# a comment\nversion: 1\nsite: s\nconduits:\n  - name: a-to-b\n    from: a\n    to: b\n    rules:\n      - { proto: tcp, ports: [502] }\nzones:\n  - name: b\n    security_level: 2\n    assets: [{ name: b1, ip: 10.0.1.1 }]\n  - name: a\n    security_level: 1\n    assets: [{ name: a1, ip: 10.0.0.1 }]\n";
        let c = diff(Some(&digests(BASE)), &digests(moved));
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn added_removed_changed_by_name() {
        let next = BASE
            .replace("ports: [502]", "ports: [502, 503]")
            .replace("  - name: b\n    security_level: 2\n    assets: [{ name: b1, ip: 10.0.1.1 }]\n", "  - name: b\n    security_level: 2\n    assets: [{ name: b1, ip: 10.0.1.1 }]\n  - name: c\n    security_level: 1\n    assets: []\n")
            .replace("site: s\n", "site: s\ndefaults:\n  mode: monitor\n");
        let c = diff(Some(&digests(BASE)), &digests(&next));
        assert_eq!(c.zones.added, ["c"]);
        assert!(c.zones.removed.is_empty() && c.zones.changed.is_empty());
        assert_eq!(c.conduits.changed, ["a-to-b"]);
        assert!(c.defaults);
        let c = diff(Some(&digests(&next)), &digests(BASE));
        assert_eq!(c.zones.removed, ["c"]);
        let first = diff(None, &digests(BASE));
        assert_eq!(first.zones.added, ["a", "b"]);
        assert_eq!(first.conduits.added, ["a-to-b"]);
        assert!(!first.defaults);
    }
}
