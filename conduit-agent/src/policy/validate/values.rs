//! The scalars of a policy: names, one-of choices, small numbers, and the settings that
//! zones and `defaults` share.
use super::{Validator, pos};
use crate::policy::{
    diag::{Pos, did_you_mean},
    model::*,
    raw::S,
};

impl Validator<'_> {
    /// Applies `f` to a spanned string and reports its error at the value's position.
    pub(super) fn parse<T>(
        &mut self,
        s: &S,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match f(s.as_str()) {
            Ok(v) => Some(v),
            Err(m) => {
                self.err(pos(s), m);
                None
            }
        }
    }

    pub(super) fn name(&mut self, s: &S, what: &str) -> Option<String> {
        self.parse(s, |v| check_name(v, what))
            .map(|()| s.as_str().to_owned())
    }

    pub(super) fn choice<T: Copy>(&mut self, s: &S, key: &str, options: &[(&str, T)]) -> Option<T> {
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

    pub(super) fn number(&mut self, s: &S, key: &str, lo: u8, hi: u8) -> Option<u8> {
        self.parse(s, |v| match v.trim().parse::<i64>() {
            Ok(n) if (i64::from(lo)..=i64::from(hi)).contains(&n) => Ok(n as u8),
            Ok(n) => Err(format!("`{key}` {n} is out of range: expected {lo}..{hi}")),
            Err(_) => Err(format!("`{key}` must be a number {lo}..{hi}, found `{v}`")),
        })
    }

    pub(super) fn mode(&mut self, s: &S) -> Option<Mode> {
        self.choice(
            s,
            "mode",
            &[("enforce", Mode::Enforce), ("monitor", Mode::Monitor)],
        )
    }

    /// `review: pending | done`: `Some(Some(pos))` when pending, `Some(None)` when done or
    /// absent, `None` (with an error) for anything else.
    pub(super) fn review(&mut self, s: Option<&S>) -> Option<Option<Pos>> {
        match s {
            None => Some(None),
            Some(s) => self
                .choice(s, "review", &[("pending", true), ("done", false)])
                .map(|p| p.then(|| pos(s))),
        }
    }

    pub(super) fn allow_deny(&mut self, s: &S, key: &str) -> Option<bool> {
        self.choice(s, key, &[("allow", true), ("deny", false)])
    }

    pub(super) fn reverse_path(&mut self, s: &S) -> Option<ReversePath> {
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

    pub(super) fn log(&mut self, s: &S) -> Option<LogLevel> {
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
