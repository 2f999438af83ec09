//! `conduit report`: the command line of [`crate::report`].
use std::{path::PathBuf, process::ExitCode};

use clap::ValueEnum;

use crate::exit::Exit;
use crate::report::{self, Format, Options, Source};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// One self-contained HTML file (inline CSS and SVG, no script), printable.
    Html,
    /// Markdown, the diagram as Mermaid source.
    Md,
    /// The report's data (SPEC §6), which the other formats render.
    Json,
    /// The zone-and-conduit diagram alone.
    Svg,
}

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The policy file (YAML) the report is about.
    pub policy: PathBuf,
    /// Counters of the local agent: its state directory (`conduit run --state-dir`). Without
    /// it or --prometheus, the default state directory is tried, and the report has no
    /// counters when no agent ran there.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["prometheus", "policy_only"])]
    pub state_dir: Option<PathBuf>,
    /// Counters of every gateway of the site from a Prometheus server that scrapes them:
    /// its base URL (http://HOST:9090).
    #[arg(long, value_name = "URL", conflicts_with = "policy_only")]
    pub prometheus: Option<String>,
    /// The window of the Prometheus counters (a Prometheus duration: 30d, 12h, 1h30m).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "30d",
        requires = "prometheus"
    )]
    pub window: String,
    /// The policy alone: no counters, whatever runs here.
    #[arg(long)]
    pub policy_only: bool,
    /// An audit log (JSON lines) to summarise (repeat for several).
    #[arg(long = "audit-log", value_name = "FILE")]
    pub audit_logs: Vec<PathBuf>,
    /// What traffic cannot show: owners, physical boundaries, safety designations, approvals
    /// (YAML; see the README).
    #[arg(long, value_name = "META.yaml")]
    pub meta: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub format: ReportFormat,
    /// Write the report here (atomically) instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn main(a: ReportArgs) -> ExitCode {
    let source = if a.policy_only {
        Source::None
    } else if let Some(url) = a.prometheus {
        Source::Prometheus {
            url,
            window: a.window,
        }
    } else {
        match a.state_dir {
            Some(dir) => Source::Agent {
                state_dir: dir,
                explicit: true,
            },
            None => Source::Agent {
                state_dir: crate::agent::DEFAULT_STATE_DIR.into(),
                explicit: false,
            },
        }
    };
    let o = Options {
        policy: a.policy,
        source,
        audit_logs: a.audit_logs,
        meta: a.meta,
    };
    let r = match report::build(&o) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return e.exit_code().into();
        }
    };
    for n in r
        .evidence
        .notes
        .iter()
        .filter(|n| n.starts_with("No ") || n.contains("no gateway"))
    {
        eprintln!("warning: {n}");
    }
    for l in r.policy.live.iter().filter(|l| !l.matches) {
        eprintln!(
            "warning: {} runs another policy (sha256 {}) than {}: the report says so",
            l.gateway.as_deref().unwrap_or("the gateway"),
            l.sha256,
            r.policy.path
        );
    }
    let format = match a.format {
        ReportFormat::Html => Format::Html,
        ReportFormat::Md => Format::Md,
        ReportFormat::Json => Format::Json,
        ReportFormat::Svg => Format::Svg,
    };
    let text = report::render(&r, format);
    match a.output {
        None => {
            use std::io::Write as _;
            if let Err(e) = std::io::stdout().lock().write_all(text.as_bytes()) {
                eprintln!("error: writing the report: {e}");
                return Exit::Failed.into();
            }
        }
        Some(path) => {
            if let Err(e) = report::write_atomic(&path, &text) {
                eprintln!("error: writing the report to {}: {e}", path.display());
                return Exit::Failed.into();
            }
            eprintln!(
                "report written to {} ({} findings)",
                path.display(),
                r.findings.len()
            );
        }
    }
    Exit::Ok.into()
}
