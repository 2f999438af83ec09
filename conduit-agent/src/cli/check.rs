//! `conduit check POLICY`: validate a policy (errors and lint warnings), and its signature
//! with --allowed-signers.
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use super::Format;
use crate::exit::Exit;
use crate::integrity::signature::{self, SignatureError, Signer};

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The policy file (YAML).
    pub policy: PathBuf,
    /// Treat lint warnings as errors (for CI and config-management `validate:` hooks).
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub signed: CheckSignature,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `conduit check --allowed-signers FILE [--signature SIG]`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckSignature {
    /// Check the policy's signature as `conduit run --allowed-signers FILE` does: a valid
    /// OpenSSH signature (`ssh-keygen -Y sign -f KEY -n conduit-policy POLICY`) by a key of
    /// FILE (`ssh-keygen`'s allowed-signers format). A missing or bad signature is an error.
    #[arg(long, value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,
    /// The signature file, when it is not POLICY.sig (for a `validate:` hook that checks a
    /// temporary copy of the policy).
    #[arg(long, value_name = "SIG", requires = "allowed_signers")]
    pub signature: Option<PathBuf>,
}

impl CheckSignature {
    /// The signer, `None` without --allowed-signers (or when the policy itself cannot be
    /// read: `check` reports that).
    fn verify(&self, policy: &Path) -> Result<Option<Signer>, SignatureError> {
        match &self.allowed_signers {
            Some(file) => signature::verify_file(policy, self.signature.as_deref(), file),
            None => Ok(None),
        }
    }
}

pub fn main(a: &CheckArgs) -> ExitCode {
    let (path, strict, signed, format) = (&a.policy, a.strict, &a.signed, a.format);
    let shown = path.display().to_string();
    let (loaded, mut d) = match crate::policy::load::load_file(path, 0) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{shown}: error: cannot read the policy: {e}");
            return Exit::Failed.into();
        }
    };
    // With --allowed-signers, the signature is checked as `conduit run` checks it: an error
    // of the file at 1:1 when it is missing or bad.
    let signer = match signed.verify(path) {
        Ok(s) => s,
        Err(e) if e.exit_code() == Exit::Failed => {
            eprintln!("{shown}: error: {e}");
            return Exit::Failed.into();
        }
        Err(e) => {
            d.error(crate::policy::Pos::new(1, 1), format!("signature: {e}"));
            None
        }
    };
    let warnings = d.warnings().count();
    let valid = loaded.is_some() && !d.has_errors() && !(strict && warnings > 0);
    match format {
        Format::Text => {
            for item in &d.items {
                println!("{}", item.render(&shown));
            }
            if let Some(s) = &signer {
                eprintln!("{shown}: signed by {s}");
            }
            match &loaded {
                Some(_) if d.has_errors() => {
                    eprintln!("{shown}: refused: {} error(s)", d.errors().count())
                }
                Some(l) if valid => eprintln!(
                    "{shown}: valid: site \"{}\", {} zones, {} assets, {} conduits; {warnings} warning(s)",
                    l.policy.site,
                    l.policy.zones.len(),
                    l.policy.zones.iter().map(|z| z.assets.len()).sum::<usize>(),
                    l.policy.conduits.len()
                ),
                Some(_) => eprintln!("{shown}: invalid with --strict: {warnings} warning(s)"),
                None => eprintln!("{shown}: invalid: {} error(s)", d.errors().count()),
            }
        }
        Format::Json => {
            let mut v = serde_json::json!({
                "valid": valid,
                "errors": d.errors().collect::<Vec<_>>(),
                "warnings": d.warnings().collect::<Vec<_>>(),
            });
            if signed.allowed_signers.is_some() {
                v["signer"] = serde_json::json!(signer);
            }
            println!("{v}");
        }
    }
    if valid {
        Exit::Ok.into()
    } else {
        Exit::Rejected.into()
    }
}
