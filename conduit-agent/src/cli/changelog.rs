//! `conduit changelog verify|show`: the command line of [`crate::integrity::changelog`].
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::Subcommand;
use serde_json::Value;

use super::Format;
use crate::exit::Exit;
use crate::integrity::changelog::{self, Report};

#[derive(clap::Args, Debug)]
pub struct ChangelogArgs {
    #[command(subcommand)]
    pub command: ChangelogCommand,
}

#[derive(Subcommand, Debug)]
pub enum ChangelogCommand {
    /// Check the hash chain: every line's `prev` is the sha256 of the line before it.
    ///
    /// Exit status 0 when the chain is intact (a line torn by a crash is reported, and
    /// accepted when the line after it records it, or when it is the last line), 1 naming
    /// the first line that breaks it (edited, removed, inserted), 2 when the file cannot be
    /// read.
    Verify {
        /// The change log (`conduit run --change-log`; by default
        /// /run/conduit/changelog.jsonl).
        path: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print the change log readably, and whether its chain is intact.
    ///
    /// One entry per policy that went live: time, generation, site, sha256, who signed it,
    /// and the zones and conduits added (+), removed (-) and changed (~). JSON: the entries,
    /// each with its `line`, and the chain's state as `verify --format json` gives it. Exit
    /// status 0 when printed (whatever the chain), 2 when the file cannot be read.
    Show {
        /// The change log.
        path: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

pub fn main(a: ChangelogArgs) -> ExitCode {
    let (ChangelogCommand::Verify { path, format } | ChangelogCommand::Show { path, format }) =
        &a.command;
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{}: error: cannot read the change log: {e}", path.display());
            return Exit::Failed.into();
        }
    };
    let report = changelog::verify(&bytes);
    match a.command {
        ChangelogCommand::Verify { .. } => verify(path, &report, *format),
        ChangelogCommand::Show { .. } => show(&bytes, &report, *format),
    }
}

fn report_json(r: &Report) -> Value {
    serde_json::json!({
        "intact": r.broken.is_none(),
        "lines": r.lines,
        "entries": r.entries,
        "torn": r.torn.iter().map(|(l, named)| serde_json::json!({"line": l, "recorded": named})).collect::<Vec<_>>(),
        "unterminated": r.unterminated,
        "error": r.broken.as_ref().map(|(l, m)| serde_json::json!({"line": l, "message": m})),
    })
}

fn torn_note(line: usize, named: bool) -> String {
    if named {
        format!("line {line}: torn (an append cut short by a crash), recorded by the line after it")
    } else {
        format!(
            "line {line}: torn (an append cut short by a crash): the last line; the agent's next entry records it"
        )
    }
}

fn verify(path: &Path, r: &Report, format: Format) -> ExitCode {
    let shown = path.display();
    match format {
        Format::Json => println!("{}", report_json(r)),
        Format::Text => {
            for &(l, named) in &r.torn {
                eprintln!("{shown}: note: {}", torn_note(l, named));
            }
            match &r.broken {
                Some((line, why)) => println!("{shown}:{line}: error: {why}"),
                None => println!("{shown}: intact: {} entries", r.entries),
            }
        }
    }
    if r.broken.is_some() {
        Exit::Rejected.into()
    } else {
        Exit::Ok.into()
    }
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// "zones: +a +b -c ~d" for one kind of item.
fn delta_text(what: &str, d: &Value) -> Option<String> {
    let mut parts = Vec::new();
    for (key, mark) in [("added", '+'), ("removed", '-'), ("changed", '~')] {
        parts.extend(names(&d[key]).into_iter().map(|n| format!("{mark}{n}")));
    }
    (!parts.is_empty()).then(|| format!("{what} {}", parts.join(" ")))
}

fn entry_text(n: usize, v: &Value) -> Vec<String> {
    let ts = v["ts"].as_str().unwrap_or("?");
    let kind = v["kind"].as_str().unwrap_or("?");
    if kind == "grant" || kind == "revoke" {
        let s = |k: &str| v[k].as_str().unwrap_or("?").to_owned();
        let by = match v["sudo_user"].as_str() {
            Some(u) => format!("{} (sudo for {u})", s("user")),
            None => s("user"),
        };
        let what = if kind == "grant" {
            format!(
                "grant   {}  for {} until {}",
                s("conduit"),
                v["seconds"]
                    .as_u64()
                    .map_or("?".into(), crate::policy::addr::human_duration),
                s("until")
            )
        } else {
            format!("revoke  {}", s("conduit"))
        };
        let mut out = vec![format!(
            "{n:>5}  {ts}  {what}  by {by}  generation {}",
            v["generation"]
        )];
        if let Some(r) = v["reason"].as_str() {
            out.push(format!("       reason: {r}"));
        }
        if let Some(t) = v["torn"]["line"].as_u64() {
            out.push(format!("       (after the torn line {t})"));
        }
        return out;
    }
    if kind != "policy" {
        // Kinds of later versions print whole.
        let mut rest = v.clone();
        if let Some(o) = rest.as_object_mut() {
            for k in ["kind", "ts", "prev"] {
                o.remove(k);
            }
        }
        return vec![format!("{n:>5}  {ts}  {kind}  {rest}")];
    }
    let signer = match v["signer"].as_object() {
        Some(s) => format!(
            "signed by {} {}",
            s.get("principal").and_then(Value::as_str).unwrap_or("?"),
            s.get("key").and_then(Value::as_str).unwrap_or("?")
        ),
        None => "unsigned".into(),
    };
    let sha = v["sha256"].as_str().unwrap_or("?");
    let mut out = vec![format!(
        "{n:>5}  {ts}  policy  generation {}  site {}  sha256 {}  {signer}",
        v["generation"],
        v["site"].as_str().unwrap_or("?"),
        sha.get(..16).unwrap_or(sha),
    )];
    let c = &v["changes"];
    let mut parts: Vec<String> = [
        delta_text("zones", &c["zones"]),
        delta_text("conduits", &c["conduits"]),
    ]
    .into_iter()
    .flatten()
    .collect();
    if c["defaults"].as_bool() == Some(true) {
        parts.push("defaults changed".into());
    }
    if parts.is_empty() {
        parts.push("no change to zones, conduits or defaults".into());
    }
    out.push(format!("       {}", parts.join("; ")));
    if let Some(t) = v["torn"]["line"].as_u64() {
        out.push(format!("       (after the torn line {t})"));
    }
    out
}

fn show(bytes: &[u8], r: &Report, format: Format) -> ExitCode {
    let text = String::from_utf8_lossy(bytes);
    let body = text.strip_suffix('\n').unwrap_or(&text);
    let lines: Vec<&str> = if body.is_empty() {
        Vec::new()
    } else {
        body.split('\n').collect()
    };
    let parsed = |l: &str| {
        serde_json::from_str::<Value>(l)
            .ok()
            .filter(Value::is_object)
    };
    match format {
        Format::Json => {
            let entries: Vec<Value> = lines
                .iter()
                .enumerate()
                .filter_map(|(i, l)| {
                    let mut v = parsed(l)?;
                    v["line"] = serde_json::json!(i + 1);
                    Some(v)
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({"entries": entries, "chain": report_json(r)})
            );
        }
        Format::Text => {
            println!(
                "{:>5}  {:<27}  what (+ added, - removed, ~ changed)",
                "line", "time (UTC)"
            );
            for (i, l) in lines.iter().enumerate() {
                let n = i + 1;
                match parsed(l) {
                    Some(v) => {
                        for t in entry_text(n, &v) {
                            println!("{t}");
                        }
                    }
                    None => println!("{n:>5}  (not an entry: a torn or foreign line)"),
                }
            }
            match &r.broken {
                Some((line, why)) => {
                    println!("chain: BROKEN at line {line}: {why}")
                }
                None => println!("chain: intact ({} entries)", r.entries),
            }
            for &(l, named) in &r.torn {
                println!("note: {}", torn_note(l, named));
            }
        }
    }
    Exit::Ok.into()
}
