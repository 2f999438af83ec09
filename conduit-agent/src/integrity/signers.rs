//! The allowed-signers file of `ssh-keygen -Y verify` (ssh-keygen(1), "ALLOWED SIGNERS"): who
//! may sign a policy.
//!
//! Hand-written: the `ssh-key` crate, which does the cryptography, parses keys and signatures
//! but not this file (its `authorized_keys` parser splits options at the first space and
//! strips `#` anywhere in a line, both wrong here), and the one crate that parses it
//! (`sshcerts`) brings a second crypto stack. The format is small; this follows OpenSSH's
//! `sshsig.c` (`parse_principals_key_and_options`, `sshsigopt_parse`) and `misc.c`
//! (`parse_absolute_time`, `match_pattern_list`), with one difference on purpose:
//! `ssh-keygen` skips a line it cannot parse (and says so on stderr), conduit refuses the
//! whole file with the line's number, so that a typo never silently removes a signer or an
//! option (a `valid-before` that did not parse would otherwise leave a key valid for ever).
//! What conduit does not support (certificate authorities, an option it does not know) is
//! refused the same way.
use std::time::{SystemTime, UNIX_EPOCH};

use ssh_key::{HashAlg, PublicKey, public::KeyData};

/// The signature namespace of a policy signature (`ssh-keygen -Y sign -n conduit-policy`).
pub const NAMESPACE: &str = "conduit-policy";

/// One line of the file: a key and who it stands for.
#[derive(Clone, Debug)]
pub struct AllowedSigner {
    /// 1-based line number in the file.
    pub line: usize,
    /// The principals field as written (a comma-separated pattern list, e.g.
    /// `ops@plant.example`): who the signer is, for the logs and the change log.
    pub principals: String,
    /// `namespaces="..."`: the namespaces (pattern list) this key may sign for; `None`: any.
    pub namespaces: Option<String>,
    /// `valid-after`: Unix seconds.
    pub valid_after: Option<i64>,
    /// `valid-before`: Unix seconds.
    pub valid_before: Option<i64>,
    pub key: PublicKey,
}

/// Why a line of the allowed-signers file does not let its key sign a policy now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotAllowed {
    Namespace(String),
    NotYetValid(i64),
    Expired(i64),
}

impl std::fmt::Display for NotAllowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotAllowed::Namespace(n) => write!(
                f,
                "the key may sign only for namespaces=\"{n}\", which does not include \"{NAMESPACE}\""
            ),
            NotAllowed::NotYetValid(t) => write!(f, "the key is not valid before {}", utc(*t)),
            NotAllowed::Expired(t) => write!(f, "the key expired at {} (valid-before)", utc(*t)),
        }
    }
}

fn utc(t: i64) -> String {
    crate::agent::audit::rfc3339(u128::try_from(t).unwrap_or(0) * 1_000_000_000)
}

impl AllowedSigner {
    /// Whether this line lets its key sign for [`NAMESPACE`] at `now` (Unix seconds), as
    /// `ssh-keygen -Y verify` judges it (`valid-after` and `valid-before` inclusive).
    pub fn allows(&self, now: i64) -> Result<(), NotAllowed> {
        if let Some(ns) = &self.namespaces
            && !match_pattern_list(NAMESPACE, ns)
        {
            return Err(NotAllowed::Namespace(ns.clone()));
        }
        if let Some(t) = self.valid_after
            && now < t
        {
            return Err(NotAllowed::NotYetValid(t));
        }
        if let Some(t) = self.valid_before
            && now > t
        {
            return Err(NotAllowed::Expired(t));
        }
        Ok(())
    }

    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }

    pub fn key_data(&self) -> &KeyData {
        self.key.key_data()
    }
}

/// A line that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Every signer of the file, in file order. Empty lines and `#` comment lines are skipped;
/// any other line that is not `PRINCIPALS [OPTIONS] KEYTYPE BASE64 [COMMENT]` is an error.
pub fn parse(text: &str) -> Result<Vec<AllowedSigner>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let err = |message: String| ParseError { line, message };
        let l = raw.trim_start_matches([' ', '\t', '\r']);
        let l = l.trim_end_matches(['\r', ' ', '\t']);
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (principals, rest) = principals_field(l).map_err(err)?;
        if principals.is_empty() {
            return Err(err("the principals field is empty".into()));
        }
        let rest = rest.trim_start_matches([' ', '\t']);
        if rest.is_empty() {
            return Err(err(
                "no key after the principals (PRINCIPALS [OPTIONS] KEYTYPE BASE64)".into(),
            ));
        }
        // A key starts with its type; anything else there is the options field.
        let first = rest.split([' ', '\t']).next().unwrap_or_default();
        let (opts, key_text) = if is_key_type(first) {
            (None, rest)
        } else {
            let end = options_end(rest).map_err(err)?;
            let key_text = rest[end..].trim_start_matches([' ', '\t']);
            if key_text.is_empty() {
                return Err(err(format!("no key after the options `{}`", &rest[..end])));
            }
            (Some(&rest[..end]), key_text)
        };
        let key = parse_key(key_text).map_err(err)?;
        let mut signer = AllowedSigner {
            line,
            principals: principals.to_owned(),
            namespaces: None,
            valid_after: None,
            valid_before: None,
            key,
        };
        if let Some(o) = opts {
            parse_options(o, &mut signer).map_err(err)?;
        }
        out.push(signer);
    }
    Ok(out)
}

/// The principals field and what follows it. A field that starts with `"` runs to the next
/// `"` (OpenSSH's `strdelimw`), otherwise to the first space or tab.
fn principals_field(l: &str) -> Result<(&str, &str), String> {
    if let Some(q) = l.strip_prefix('"') {
        let end = q
            .find('"')
            .ok_or("the quoted principals field has no closing quote")?;
        let rest = &q[end + 1..];
        if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
            return Err("a space must follow the quoted principals field".into());
        }
        Ok((&q[..end], rest))
    } else {
        let end = l.find([' ', '\t']).unwrap_or(l.len());
        Ok((&l[..end], &l[end..]))
    }
}

/// Whether `word` names an OpenSSH public key type (the first field of a key).
fn is_key_type(word: &str) -> bool {
    word.parse::<ssh_key::Algorithm>().is_ok() || word.contains("-cert-v01@openssh.com")
}

/// The end of the options field: the first space or tab outside double quotes (`\"` inside
/// quotes is a quote), as OpenSSH's `sshkey_advance_past_options`.
fn options_end(s: &str) -> Result<usize, String> {
    let b = s.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' if !quoted => return Ok(i),
            b'\\' if quoted && b.get(i + 1) == Some(&b'"') => i += 1,
            b'"' => quoted = !quoted,
            _ => {}
        }
        i += 1;
    }
    if quoted {
        Err("an option's value has no closing quote".into())
    } else {
        Ok(b.len())
    }
}

/// `KEYTYPE BASE64 [COMMENT]`.
fn parse_key(text: &str) -> Result<PublicKey, String> {
    let mut words = text.split([' ', '\t']).filter(|w| !w.is_empty());
    let ty = words.next().unwrap_or_default();
    if ty.contains("-cert-v01@openssh.com") {
        return Err(format!(
            "`{ty}`: certificates are not supported; list the signer's plain public key"
        ));
    }
    let Some(b64) = words.next() else {
        return Err(format!("`{ty}` has no base64 key after it"));
    };
    PublicKey::from_openssh(&format!("{ty} {b64}"))
        .map_err(|e| format!("`{ty}` key cannot be read: {e}"))
}

/// `option[,option...]`: `namespaces="..."`, `valid-after="..."`, `valid-before="..."`
/// (keywords in any case). `cert-authority` and anything else are refused.
fn parse_options(opts: &str, s: &mut AllowedSigner) -> Result<(), String> {
    let mut rest = opts;
    while !rest.is_empty() {
        let name_end = rest.find(['=', ',']).unwrap_or(rest.len());
        let name = rest[..name_end].to_ascii_lowercase();
        rest = &rest[name_end..];
        let value = if let Some(r) = rest.strip_prefix('=') {
            let (v, after) = dequote(r).map_err(|e| format!("option `{name}`: {e}"))?;
            rest = after;
            Some(v)
        } else {
            None
        };
        match (name.as_str(), value) {
            ("namespaces", Some(v)) => {
                if s.namespaces.replace(v).is_some() {
                    return Err("`namespaces` is given twice".into());
                }
            }
            ("valid-after" | "valid-before", Some(v)) => {
                let t = parse_time(&v).map_err(|e| format!("`{name}=\"{v}\"`: {e}"))?;
                let slot = if name == "valid-after" {
                    &mut s.valid_after
                } else {
                    &mut s.valid_before
                };
                if slot.replace(t).is_some() {
                    return Err(format!("`{name}` is given twice"));
                }
            }
            ("cert-authority", None) => {
                return Err(
                    "`cert-authority`: certificate signers are not supported by conduit; list \
                     each signer's public key"
                        .into(),
                );
            }
            (n @ ("namespaces" | "valid-after" | "valid-before"), None) => {
                return Err(format!("option `{n}` needs a value: {n}=\"...\""));
            }
            (n, _) => {
                return Err(format!(
                    "unknown option `{n}` (conduit supports namespaces, valid-after and \
                     valid-before)"
                ));
            }
        }
        if rest.is_empty() {
            break;
        }
        rest = rest
            .strip_prefix(',')
            .ok_or_else(|| format!("unexpected `{rest}` after option `{name}`"))?;
        if rest.is_empty() {
            return Err("the options end with a comma".into());
        }
    }
    if let (Some(a), Some(b)) = (s.valid_after, s.valid_before)
        && b <= a
    {
        return Err("valid-before is not after valid-after".into());
    }
    Ok(())
}

/// A double-quoted value (`\"` is a quote) and what follows its closing quote (OpenSSH's
/// `opt_dequote`).
fn dequote(s: &str) -> Result<(String, &str), String> {
    let Some(body) = s.strip_prefix('"') else {
        return Err("the value must be in double quotes".into());
    };
    let mut v = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((v, &body[i + 1..])),
            '\\' if body[i + 1..].starts_with('"') => {
                chars.next();
                v.push('"');
            }
            c => v.push(c),
        }
    }
    Err("the value has no closing quote".into())
}

/// `YYYYMMDD`, `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, in UTC with a trailing `Z` (or `UTC`),
/// else in the system's time zone (as `ssh-keygen` reads them). Unix seconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let (digits, utc) = if let Some(d) = s.strip_suffix(['Z', 'z']) {
        (d, true)
    } else if s.len() > 3 && s[s.len() - 3..].eq_ignore_ascii_case("utc") {
        (&s[..s.len() - 3], true)
    } else {
        (s, false)
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 14].contains(&digits.len()) {
        return Err(
            "not a time in the form YYYYMMDD[Z], YYYYMMDDHHMM[Z] or YYYYMMDDHHMMSS[Z]".into(),
        );
    }
    let num =
        |r: std::ops::Range<usize>| digits.get(r).map_or(0, |x| x.parse::<i64>().unwrap_or(0));
    let (y, mo, d) = (num(0..4), num(4..6), num(6..8));
    let (h, mi, sec) = (num(8..10), num(10..12), num(12..14));
    // ssh-keygen reads these with strptime, whose seconds go up to 60 (a leap second): the
    // 60th is the next minute's first.
    let leap = i64::from(sec == 60);
    let civil = |v: i64| i8::try_from(v).ok();
    let dt = match (civil(mo), civil(d), civil(h), civil(mi), civil(sec - leap)) {
        (Some(mo), Some(d), Some(h), Some(mi), Some(sec)) => {
            jiff::civil::DateTime::new(y as i16, mo, d, h, mi, sec, 0).ok()
        }
        _ => None,
    }
    .ok_or("not a valid date and time")?;
    let zone = if utc {
        jiff::tz::TimeZone::UTC
    } else {
        // As mktime(3): TZ, else /etc/localtime.
        jiff::tz::TimeZone::system()
    };
    let t = dt
        .to_zoned(zone)
        .map_err(|e| format!("not a valid local time: {e}"))?
        .timestamp()
        .as_second()
        + leap;
    if t <= 0 {
        return Err("the time is not after 1970".into());
    }
    Ok(t)
}

/// OpenSSH's `match_pattern_list`: `list` is comma-separated patterns (`*` and `?` are
/// wildcards); a pattern with a leading `!` that matches refuses the whole list.
pub fn match_pattern_list(s: &str, list: &str) -> bool {
    let mut positive = false;
    for p in list.split(',') {
        let (neg, p) = match p.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, p),
        };
        if match_pattern(s.as_bytes(), p.as_bytes()) {
            if neg {
                return false;
            }
            positive = true;
        }
    }
    positive
}

fn match_pattern(s: &[u8], p: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| match_pattern(&s[i..], rest)),
        Some((b'?', rest)) => !s.is_empty() && match_pattern(&s[1..], rest),
        Some((c, rest)) => s.first() == Some(c) && match_pattern(&s[1..], rest),
    }
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti";

    #[test]
    fn lines_with_and_without_options() {
        let text = format!(
            "# who may sign\n\n  ops@plant {ED} a comment\n\"two words\" namespaces=\"conduit-policy,file\",VALID-AFTER=\"20200101Z\" {ED}\n"
        );
        let s = parse(&text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].line, s[0].principals.as_str()), (3, "ops@plant"));
        assert_eq!(s[0].namespaces, None);
        assert_eq!(s[1].principals, "two words");
        assert_eq!(s[1].namespaces.as_deref(), Some("conduit-policy,file"));
        assert_eq!(s[1].valid_after, Some(1_577_836_800));
        assert!(s[1].allows(1_700_000_000).is_ok());
        assert_eq!(
            s[1].allows(1_500_000_000),
            Err(NotAllowed::NotYetValid(1_577_836_800))
        );
        assert!(s[0].fingerprint().starts_with("SHA256:"));
    }

    #[test]
    fn what_is_not_supported_or_malformed_is_refused_with_its_line() {
        let cases = [
            (format!("a cert-authority {ED}"), "certificate signers"),
            (
                format!("a no-touch-required {ED}"),
                "unknown option `no-touch-required`",
            ),
            (format!("a namespaces=file {ED}"), "double quotes"),
            (format!("a namespaces=\"x\",namespaces=\"y\" {ED}"), "twice"),
            (format!("a valid-before=\"2020\" {ED}"), "YYYYMMDD"),
            (format!("a valid-before=\"20200230\" {ED}"), "valid date"),
            (
                format!("a valid-after=\"20210101Z\",valid-before=\"20200101Z\" {ED}"),
                "not after",
            ),
            (format!("a namespaces=\"x\", {ED}"), "end with a comma"),
            ("a".to_string(), "no key"),
            ("a namespaces=\"x\"".to_string(), "no key after the options"),
            ("a ssh-ed25519".to_string(), "no base64"),
            ("a ssh-ed25519 AAAAnotakey".to_string(), "cannot be read"),
            ("\"a b ssh-ed25519 AAAA".to_string(), "closing quote"),
        ];
        for (line, want) in cases {
            let e = parse(&format!("# first\n{line}\n")).unwrap_err();
            assert_eq!(e.line, 2, "{line}");
            assert!(e.message.contains(want), "{line}: {e}");
        }
    }

    #[test]
    fn namespaces_are_pattern_lists() {
        assert!(match_pattern_list("conduit-policy", "file,conduit-*"));
        assert!(match_pattern_list("conduit-policy", "conduit-polic?"));
        assert!(!match_pattern_list("conduit-policy", "*,!conduit-policy"));
        assert!(!match_pattern_list("conduit-policy", "file,git"));
        assert!(match_pattern_list("conduit-policy", "*"));
    }

    #[test]
    fn times_as_ssh_keygen_reads_them() {
        assert_eq!(parse_time("19700102Z"), Ok(86_400));
        assert_eq!(parse_time("202001010000Z"), Ok(1_577_836_800));
        assert_eq!(parse_time("20200101000001UTC"), Ok(1_577_836_801));
        assert_eq!(parse_time("29990101Z"), Ok(32_472_144_000));
        assert!(parse_time("19691231Z").is_err());
        assert!(parse_time("2020010").is_err());
        assert!(parse_time("20201301Z").is_err());
        assert!(parse_time("2020-01-01").is_err());
        assert!(parse_time("20200230Z").is_err());
        assert!(parse_time("20210229Z").is_err());
        assert_eq!(parse_time("20200229Z"), Ok(1_582_934_400));
        assert!(parse_time("202001012400Z").is_err());
        assert!(parse_time("20200101000061Z").is_err());
        // strptime's leap second: the next minute's first.
        assert_eq!(parse_time("20200101235960Z"), parse_time("202001020000Z"));
        // Local time: the same instant as UTC when TZ is UTC, else off by the zone's offset
        // (never more than a day).
        let local = parse_time("20200101").unwrap();
        assert!((local - 1_577_836_800).abs() <= 86_400);
    }
}
