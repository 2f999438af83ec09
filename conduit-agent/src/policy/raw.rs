//! The policy file as written: serde structures over the YAML node tree, with
//! `deny_unknown_fields` everywhere and a span on every value. Scalars stay strings here;
//! `validate` parses them, so that every bad value gets its own error with its position.
//!
//! The lists that users edit most (zones, assets, conduits, rules) are deserialized item by
//! item, so one broken item does not hide the errors of the others.
use marked_yaml::{Node, Spanned, types::MarkedMappingNode};
use serde::{Deserialize, de::DeserializeOwned};

use super::diag::{Diagnostics, Pos, did_you_mean};

pub type S = Spanned<String>;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Top {
    pub version: S,
    pub site: S,
    // `defaults`, `zones` and `conduits` are taken out and read on their own.
}
pub const TOP_KEYS: &[&str] = &["version", "site", "defaults", "zones", "conduits"];

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub mode: Option<S>,
    pub intra_zone: Option<S>,
    pub fragments: Option<S>,
    pub log: Option<S>,
    pub reverse_path: Option<S>,
    // `failsafe` (rules) and `l2` are read on their own.
}
pub const DEFAULTS_KEYS: &[&str] = &[
    "mode",
    "intra_zone",
    "fragments",
    "log",
    "reverse_path",
    "failsafe",
    "l2",
];

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct L2 {
    pub default: Option<S>,
    pub allow_ethertypes: Option<Spanned<Vec<S>>>,
}
pub const L2_KEYS: &[&str] = &["default", "allow_ethertypes"];

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    pub name: S,
    pub security_level: S,
    pub purdue_level: Option<S>,
    pub description: Option<S>,
    pub mode: Option<S>,
    pub intra_zone: Option<S>,
    pub reverse_path: Option<S>,
    pub interfaces: Option<Spanned<Vec<S>>>,
    pub review: Option<S>,
    // `assets` is read item by item.
}
pub const ZONE_KEYS: &[&str] = &[
    "name",
    "security_level",
    "purdue_level",
    "description",
    "mode",
    "intra_zone",
    "reverse_path",
    "interfaces",
    "review",
    "assets",
];

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Asset {
    pub name: S,
    pub ip: Option<S>,
    pub cidr: Option<S>,
    pub mac: Option<S>,
}
pub const ASSET_KEYS: &[&str] = &["name", "ip", "cidr", "mac"];

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Conduit {
    pub name: S,
    pub from: Spanned<OneOrMany>,
    pub to: Spanned<OneOrMany>,
    pub security_level: Option<S>,
    pub sources: Option<Spanned<Vec<S>>>,
    pub destinations: Option<Spanned<Vec<S>>>,
    pub bidirectional: Option<S>,
    pub log: Option<S>,
    pub description: Option<S>,
    pub review: Option<S>,
    pub expires: Option<S>,
    // `rules` is read item by item, `on_demand` on its own.
}

/// `on_demand:` of a conduit (SPEC §8): closed until `conduit grant`, for at most `max`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct OnDemand {
    pub max: S,
}
pub const ON_DEMAND_KEYS: &[&str] = &["max"];
pub const CONDUIT_KEYS: &[&str] = &[
    "name",
    "from",
    "to",
    "security_level",
    "sources",
    "destinations",
    "bidirectional",
    "rules",
    "log",
    "description",
    "review",
    "expires",
    "on_demand",
];

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub proto: S,
    pub ports: Option<Spanned<Vec<S>>>,
    pub icmp_types: Option<Spanned<Vec<S>>>,
    pub modbus: Option<Spanned<Modbus>>,
    pub dnp3: Option<Spanned<Dnp3>>,
    pub enip: Option<Spanned<Enip>>,
}
pub const RULE_KEYS: &[&str] = &["proto", "ports", "icmp_types", "modbus", "dnp3", "enip"];

/// `modbus:` of a tcp rule: the function codes (named sets or numbers) and unit IDs a
/// client may send.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Modbus {
    pub functions: Spanned<Vec<S>>,
    pub unit_ids: Option<Spanned<Vec<S>>>,
}

/// `dnp3:` of a tcp rule: the application function codes (named sets or numbers) a master
/// may send, and the outstation link addresses it may send them to.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Dnp3 {
    pub functions: Spanned<Vec<S>>,
    pub outstations: Option<Spanned<Vec<S>>>,
}

/// `enip:` of a tcp rule: the CIP services (named sets or numbers) an EtherNet/IP client may
/// request.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Enip {
    pub services: Spanned<Vec<S>>,
}

/// A zone name or a list of zone names (`from`, `to`).
#[derive(Debug)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a zone name or a list of zone names")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_owned()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A list item of the file and where it starts.
pub struct Item<T> {
    pub pos: Pos,
    pub value: T,
}

/// Keys taken out of a mapping to be read on their own, with their nodes.
pub type Nested<'a> = Vec<(String, &'a Node)>;

/// Deserializes `node` into `T` after taking out `nested` keys (returned separately, with their
/// nodes), reporting a failure as a diagnostic at the right place.
pub fn item<'a, T: DeserializeOwned>(
    node: &'a Node,
    what: &str,
    known_keys: &[&str],
    nested: &[&str],
    diags: &mut Diagnostics,
) -> Option<(Item<T>, Nested<'a>)> {
    let pos = Pos::of(node.span());
    let Some(map) = node.as_mapping() else {
        diags.error(
            pos,
            format!(
                "expected a {what} (a mapping of keys to values), found {}",
                kind(node)
            ),
        );
        return None;
    };
    // Copy only the keys read here: the nested ones (zones, assets, ...) can be huge.
    let mut rest = MarkedMappingNode::new_empty(*map.span());
    let mut taken = Vec::new();
    for (k, v) in map.iter() {
        if nested.contains(&k.as_str()) {
            taken.push((k.as_str().to_owned(), v));
        } else {
            rest.insert(k.clone(), v.clone());
        }
    }
    match marked_yaml::from_node::<T>(&Node::Mapping(rest)) {
        Ok(value) => Some((Item { pos, value }, taken)),
        Err(e) => {
            report(&e, map, pos, what, known_keys, diags);
            None
        }
    }
}

/// A serde failure as a diagnostic: unknown keys get a suggestion, missing keys the place of
/// the mapping that lacks them.
fn report(
    e: &marked_yaml::FromNodeError,
    map: &MarkedMappingNode,
    fallback: Pos,
    what: &str,
    known: &[&str],
    diags: &mut Diagnostics,
) {
    let mut pos = e
        .start_mark()
        .map(|m| Pos::new(m.line(), m.column()))
        .unwrap_or(fallback);
    let msg = match &**e {
        marked_yaml::Error::UnknownFieldError(field, _, _) => {
            // Point at the key itself, not at the mapping that holds it.
            if let Some((k, _)) = map.iter().find(|(k, _)| k.as_str() == field) {
                pos = Pos::of(k.span());
            }
            let hint = match did_you_mean(field, known.iter().copied()) {
                Some(s) => format!("; did you mean `{s}`?"),
                None => String::new(),
            };
            format!(
                "unknown key `{field}` in {what}{hint} (known keys: {})",
                known.join(", ")
            )
        }
        marked_yaml::Error::Other(m, _) => {
            let m = m.replace("invalid type: ", "wrong type: ");
            if let Some(field) = m.strip_prefix("missing field ") {
                format!("{what} is missing the required key {field}")
            } else {
                format!("in {what}: {m}")
            }
        }
        other => format!("in {what}: {other}"),
    };
    diags.error(pos, msg);
}

pub fn kind(node: &Node) -> &'static str {
    match node {
        Node::Scalar(s) if s.as_str().is_empty() => "nothing",
        Node::Scalar(_) => "a single value",
        Node::Mapping(_) => "a mapping",
        Node::Sequence(_) => "a list",
    }
}

/// The items of a list-valued key; `None` (with an error) if the value is not a list.
pub fn list<'a>(node: &'a Node, key: &str, diags: &mut Diagnostics) -> Option<&'a [Node]> {
    match node {
        Node::Sequence(seq) => Some(seq),
        // `key:` with nothing after it.
        Node::Scalar(s) if s.as_str().is_empty() => Some(&[]),
        Node::Scalar(s) => {
            diags.error(
                Pos::of(node.span()),
                format!(
                    "`{key}` must be a list, found the single value `{}` (write `{key}: [{}]`?)",
                    s.as_str(),
                    s.as_str()
                ),
            );
            None
        }
        other => {
            diags.error(
                Pos::of(other.span()),
                format!("`{key}` must be a list, found {}", kind(other)),
            );
            None
        }
    }
}

/// The `name` of a mapping item whose deserialization failed, so references to it still
/// resolve (and do not add errors of their own).
pub fn name_of(node: &Node) -> Option<String> {
    node.as_mapping()?
        .get_scalar("name")
        .map(|s| s.as_str().to_owned())
}
