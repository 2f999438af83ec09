//! `conduit discover` (SPEC §5): from a plant's real traffic to a draft policy that a person
//! reviews, with its proof.
//!
//! - [`observe`]: the observation model every source produces, and the [`observe::Source`]
//!   trait (the hook for `--learned DIR`);
//! - [`track`]: connection tracking over decoded packets (answered or not, Modbus requests);
//! - [`sources`]: captures (pcap, pcapng; streamed), audit logs, learn dirs;
//! - [`draft`]: the draft builder (pure); [`emit`]: its YAML; [`proof`]: the verdicts;
pub mod draft;
pub mod emit;
pub mod learned;
pub mod observe;
pub mod proof;
pub mod sources;
pub mod track;

use std::path::{Path, PathBuf};

use observe::{Observations, Source};

/// Why discover could not make a draft.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// An input was rejected (exit 1): names the file, and the frame or line.
    #[error("{file}: error: {message}")]
    Input { file: String, message: String },
    /// The operation failed (exit 2): writing the draft, or a draft that fails its own proof.
    #[error("error: {0}")]
    Failed(String),
}

impl From<crate::capture::CaptureError> for DiscoverError {
    fn from(e: crate::capture::CaptureError) -> Self {
        Self::Input {
            file: e.file,
            message: e.problem.to_string(),
        }
    }
}

impl DiscoverError {
    pub fn input(file: &str, message: String) -> Self {
        Self::Input {
            file: file.to_owned(),
            message,
        }
    }

    pub fn exit_code(&self) -> crate::exit::Exit {
        match self {
            Self::Input { .. } => crate::exit::Exit::Rejected,
            Self::Failed(_) => crate::exit::Exit::Failed,
        }
    }
}

/// What to read.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub pcaps: Vec<PathBuf>,
    pub audit_logs: Vec<PathBuf>,
    pub learned: Vec<PathBuf>,
    pub seed: Option<PathBuf>,
    pub base: Option<PathBuf>,
}

/// The result: the draft's text, and everything the summary says.
pub struct Outcome {
    pub yaml: String,
    pub draft: draft::Draft,
    pub observations: Observations,
    pub proof: proof::Proof,
    pub base: Option<proof::BaseReport>,
}

fn read_text(path: &Path, what: &str) -> Result<String, DiscoverError> {
    let shown = path.display().to_string();
    let bytes = crate::policy::load::read_policy(path)
        .map_err(|e| DiscoverError::input(&shown, format!("cannot read the {what}: {e}")))?;
    String::from_utf8(bytes)
        .map_err(|_| DiscoverError::input(&shown, format!("the {what} is not UTF-8 text")))
}

/// Reads every source and returns the observations.
pub fn observe(o: &Options) -> Result<Observations, DiscoverError> {
    let mut obs = Observations::default();
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    for p in &o.pcaps {
        sources.push(Box::new(sources::Capture { path: p.clone() }));
    }
    for p in &o.audit_logs {
        sources.push(Box::new(sources::AuditLog { path: p.clone() }));
    }
    for p in &o.learned {
        sources.push(Box::new(learned::LearnDir { path: p.clone() }));
    }
    if sources.is_empty() {
        return Err(DiscoverError::input(
            "discover",
            "no source: give at least one --pcap FILE, --audit-log FILE or --learned DIR".into(),
        ));
    }
    for mut s in sources {
        let summary = s.read_into(&mut obs)?;
        obs.sources.push(summary);
    }
    Ok(obs)
}

/// Loads a policy (the draft or `--base`); a policy that does not load is an input error.
fn load(bytes: &[u8], shown: &str) -> Result<crate::policy::load::Loaded, Vec<String>> {
    let (loaded, d) = crate::policy::load::load_bytes(bytes, 0);
    loaded.ok_or_else(|| d.errors().map(|e| e.render(shown)).collect())
}

/// The whole of discover but the writing: observe, build, emit, prove.
pub fn run(o: &Options) -> Result<Outcome, DiscoverError> {
    let seed = match &o.seed {
        Some(p) => draft::parse_seed(&p.display().to_string(), &read_text(p, "seed")?)?,
        None => Vec::new(),
    };
    let base = match &o.base {
        Some(p) => {
            let shown = p.display().to_string();
            let text = read_text(p, "base policy")?;
            Some(load(text.as_bytes(), &shown).map_err(|errs| {
                DiscoverError::input(
                    &shown,
                    format!(
                        "the base policy is not valid (see `conduit check`):\n{}",
                        errs.join("\n")
                    ),
                )
            })?)
        }
        None => None,
    };
    let observations = observe(o)?;
    let draft = draft::build(&observations, &seed);
    let yaml = emit::yaml(&draft, &observations);
    let loaded = load(yaml.as_bytes(), "draft").map_err(|errs| {
        DiscoverError::Failed(format!(
            "the draft discover made is not a valid policy (a bug of discover; please report it):\n{}",
            errs.join("\n")
        ))
    })?;
    let proof = proof::prove(&loaded, &observations);
    if !proof.wrong.is_empty() {
        return Err(DiscoverError::Failed(format!(
            "the draft fails its own proof (a bug of discover; please report it):\n{}",
            proof.wrong.join("\n")
        )));
    }
    let base = base.map(|b| proof::against_base(&b, &observations));
    Ok(Outcome {
        yaml,
        draft,
        observations,
        proof,
        base,
    })
}

/// Writes `text` to `path` whole or not at all: a temporary file beside it, synced, renamed.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "draft.yaml".into());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let r = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}
