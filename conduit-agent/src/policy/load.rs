//! Reading a policy file end to end: validate, compile, lint.
use std::path::Path;

use super::{Diagnostics, Policy, Pos, compile::Compiled, lint::lint, validate::validate_bytes};

/// A policy file that validated and compiled, with its warnings.
pub struct Loaded {
    pub policy: Policy,
    pub compiled: Compiled,
    /// sha256 of the file's bytes, hex.
    pub sha256: String,
}

/// Reads, validates, compiles (for `slot`) and lints a policy file. Every diagnostic is in the
/// returned list; `Some` only when there are no errors (warnings are fine).
pub fn load_file(path: &Path, slot: u8) -> Result<(Option<Loaded>, Diagnostics), std::io::Error> {
    let bytes = std::fs::read(path)?;
    Ok(load_bytes(&bytes, slot))
}

pub fn load_bytes(bytes: &[u8], slot: u8) -> (Option<Loaded>, Diagnostics) {
    use sha2::Digest as _;
    let (policy, mut d) = validate_bytes(bytes);
    let Some(policy) = policy else {
        return (None, d);
    };
    match super::compile::compile(&policy, slot) {
        Ok(compiled) => {
            lint(&policy, &compiled, &mut d);
            let sha256 = sha2::Sha256::digest(bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            (
                Some(Loaded {
                    policy,
                    compiled,
                    sha256,
                }),
                d,
            )
        }
        Err(errs) => {
            for e in errs {
                d.error(Pos::new(1, 1), e.to_string());
            }
            (None, d)
        }
    }
}
