//! `conduit report` (SPEC §6): evidence for the audit. One data model ([`model::Report`],
//! the JSON), built from the policy, its lint findings, the evidence (the local agent or a
//! Prometheus server, audit logs) and the metadata; the HTML, Markdown and SVG render it.
pub mod audit;
pub mod diagram;
pub mod evidence;
pub mod html;
pub mod layout;
pub mod markdown;
pub mod meta;
pub mod model;
pub mod prometheus;

use std::path::{Path, PathBuf};

/// Why no report was written. [`ReportError::exit_code`] maps it to SPEC §2.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    BadArgs(String),
    #[error("{path}: the policy is invalid ({count} error(s)); `conduit check {path}` lists them")]
    InvalidPolicy { path: String, count: usize },
    #[error("{path}: {why}")]
    Meta { path: String, why: String },
    #[error("{0}")]
    Io(String),
    #[error("no agent evidence in {dir}: {why}")]
    NoAgent { dir: String, why: String },
    #[error("reading the agent's counters: {0}")]
    Counters(String),
    #[error("Prometheus at {url}: {why}")]
    Prometheus { url: String, why: String },
}

impl ReportError {
    /// 1: the input was rejected; 2: the operation failed.
    pub fn exit_code(&self) -> crate::exit::Exit {
        match self {
            Self::BadArgs(_) | Self::InvalidPolicy { .. } | Self::Meta { .. } => {
                crate::exit::Exit::Rejected
            }
            _ => crate::exit::Exit::Failed,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Html,
    Md,
    Json,
    Svg,
}

#[derive(Clone, Debug)]
pub enum Source {
    /// The policy alone, no counters.
    None,
    /// The local agent. `explicit`: named by `--state-dir` (its absence is an error); else
    /// the default directory, whose absence leaves the report without counters.
    Agent {
        state_dir: PathBuf,
        explicit: bool,
    },
    Prometheus {
        url: String,
        window: String,
    },
}

#[derive(Clone, Debug)]
pub struct Options {
    pub policy: PathBuf,
    pub source: Source,
    pub audit_logs: Vec<PathBuf>,
    pub meta: Option<PathBuf>,
}

/// The report's time: `SOURCE_DATE_EPOCH` when set (reproducible output, as for builds),
/// else now.
fn generated_at() -> String {
    let ns = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(|s| u128::from(s) * 1_000_000_000)
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        });
    crate::agent::audit::rfc3339(ns)
}

/// Gathers everything and builds the report (warnings about the evidence go into it).
pub fn build(o: &Options) -> Result<model::Report, ReportError> {
    let shown = o.policy.display().to_string();
    let (loaded, diagnostics) = crate::policy::load::load_file(&o.policy, 0)
        .map_err(|e| ReportError::Io(format!("{shown}: cannot read the policy: {e}")))?;
    let Some(loaded) = loaded else {
        return Err(ReportError::InvalidPolicy {
            path: shown,
            count: diagnostics.errors().count(),
        });
    };
    let meta = match &o.meta {
        None => None,
        Some(path) => {
            let m = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| ReportError::Io(format!("{m}: cannot read the metadata: {e}")))?;
            let meta = meta::parse(&text, &loaded.policy).map_err(|why| ReportError::Meta {
                path: m.clone(),
                why,
            })?;
            Some((m, meta))
        }
    };
    let evidence = match &o.source {
        Source::None => evidence::Evidence::none(),
        Source::Agent {
            state_dir,
            explicit,
        } => {
            if !explicit && !crate::agent::state::path(state_dir).exists() {
                let mut e = evidence::Evidence::none();
                e.notes = vec![format!(
                    "No agent runs here (no state file in {}): the report shows the policy only, without counters; give --state-dir or --prometheus.",
                    state_dir.display()
                )];
                e
            } else {
                evidence::from_agent(state_dir, &loaded.sha256)?
            }
        }
        Source::Prometheus { url, window } => {
            if !prometheus::valid_window(window) {
                return Err(ReportError::BadArgs(format!(
                    "--window {window}: not a duration (e.g. 30d, 12h, 1h30m)"
                )));
            }
            prometheus::from_prometheus(url, window, &loaded.policy.site, &loaded.sha256)?
        }
    };
    let audit = o
        .audit_logs
        .iter()
        .map(|p| audit::read(p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(model::build(model::Inputs {
        path: shown,
        policy: &loaded.policy,
        sha256: loaded.sha256.clone(),
        diagnostics: &diagnostics,
        evidence,
        audit,
        meta,
        generated_at: generated_at(),
    }))
}

pub fn render(r: &model::Report, format: Format) -> String {
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(r).unwrap_or_default();
            s.push('\n');
            s
        }
        Format::Svg => diagram::svg(r),
        Format::Html => html::render(r),
        Format::Md => markdown::render(r),
    }
}

/// Writes `text` to `path` atomically: a temporary file in the same directory, synced, then
/// renamed over the target, so that a reader never sees half a report.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the output path names no file"))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
