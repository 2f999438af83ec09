//! From text to a validated [`Policy`], collecting every error of the file (SPEC §1
//! "Strictness of the file" and "Identity").
//!
//! One file per part of the policy: this one has the entry points, the checks of the file
//! as text and the top level; `values.rs` the scalars (names, choices, numbers);
//! `defaults.rs` the `defaults` (failsafe, l2); `zones.rs` and `assets.rs`; `conduits.rs`,
//! with their `rules.rs` and the rules' inspection `filters.rs`. Errors are reported in the
//! order they are found, then sorted by position (a stable sort), so the order of the checks
//! is part of the output.
use std::{collections::BTreeSet, rc::Rc};

use foldhash::HashMap;

use marked_yaml::{LoadError, LoaderOptions, Node, Spanned};

use super::{
    diag::{Diagnostics, Pos},
    model::*,
    raw,
};

mod assets;
mod conduits;
mod defaults;
mod filters;
mod rules;
mod values;
mod zones;

pub use values::{check_name, fmt_mac};

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
        known: Known::default(),
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

/// The names that conduits refer to, gathered while the zones are read.
#[derive(Default)]
struct Known {
    /// Every zone name that parsed, even of a zone with other errors, so that references to
    /// it are not reported as dangling.
    zone_names: BTreeSet<String>,
    /// Every asset name that parsed, with its zone's name. Hashed, and the names shared
    /// (`Rc<str>`, one allocation per name for this map and the zones' own bookkeeping):
    /// a policy of a million assets spent a fifth of its validation here with a B-tree of
    /// copied strings. The validator's maps hash with foldhash (hashbrown's own hasher),
    /// not SipHash: a policy is the operator's own file, and SipHash took a tenth of the
    /// time of a million-asset policy's whole check.
    asset_zone: HashMap<Rc<str>, Rc<str>>,
}

struct Validator<'a> {
    d: &'a mut Diagnostics,
    known: Known,
}

impl Validator<'_> {
    fn err(&mut self, p: Pos, m: impl Into<String>) {
        self.d.error(p, m);
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
