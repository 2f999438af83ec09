//! Verifying a policy's OpenSSH signature (SSHSIG, `ssh-keygen -Y sign -n conduit-policy`)
//! against an allowed-signers file. The cryptography is the `ssh-key` crate's.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use ssh_key::{HashAlg, SshSig};

use super::signers::{self, AllowedSigner, NAMESPACE};

/// Who signed the live policy: the principals of the allowed-signers line that admitted it
/// and the key's fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signer {
    pub principal: String,
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub key: String,
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.principal, self.key)
    }
}

/// The signature file of a policy: `POLICY.sig`, as `ssh-keygen -Y sign` names it.
pub fn sig_path(policy: &Path) -> PathBuf {
    let mut p = policy.as_os_str().to_owned();
    p.push(".sig");
    PathBuf::from(p)
}

/// Why a policy is refused. Every one is "input rejected" (exit status 1) except
/// [`SignatureError::Io`] and [`SignatureError::SignersIo`] (the operation failed: 2).
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "unsigned: {} does not exist (sign the policy with `ssh-keygen -Y sign -f KEY -n {NAMESPACE} POLICY`)",
        .0.display()
    )]
    Unsigned(PathBuf),
    #[error("cannot read the signature {path}: {err}", path = .0.display(), err = .1)]
    Io(PathBuf, std::io::Error),
    #[error("{path}: not an SSH signature (as `ssh-keygen -Y sign` writes): {err}", path = .0.display(), err = .1)]
    Malformed(PathBuf, String),
    #[error("signed for the namespace \"{0}\", not \"{NAMESPACE}\" (sign with `-n {NAMESPACE}`)")]
    Namespace(String),
    #[error(
        "the signature does not match the policy (the policy was changed after it was signed, or the signature is of another file)"
    )]
    Mismatch,
    #[error("signed by the key {key}, which is not in the allowed signers file {}", .file.display())]
    UnknownKey { key: String, file: PathBuf },
    #[error("signed by the key {key} ({}), which may not sign policies now: {}", .file.display(), .reasons.join("; "))]
    NotAllowed {
        key: String,
        file: PathBuf,
        reasons: Vec<String>,
    },
    #[error("cannot read the allowed signers file {path}: {err}", path = .0.display(), err = .1)]
    SignersIo(PathBuf, std::io::Error),
    #[error("the allowed signers file {path}: {err}", path = .0.display(), err = .1)]
    Signers(PathBuf, signers::ParseError),
}

impl SignatureError {
    /// SPEC §2: 1 when the input was rejected, 2 when it could not be read.
    pub fn exit_code(&self) -> crate::exit::Exit {
        match self {
            SignatureError::Io(..) | SignatureError::SignersIo(..) => crate::exit::Exit::Failed,
            _ => crate::exit::Exit::Rejected,
        }
    }
}

/// The allowed-signers file, read and parsed.
pub fn read_signers(file: &Path) -> Result<Vec<AllowedSigner>, SignatureError> {
    let text = read_small(file, 1 << 20).map_err(|e| SignatureError::SignersIo(file.into(), e))?;
    let text = String::from_utf8(text).map_err(|_| {
        SignatureError::Signers(
            file.into(),
            signers::ParseError {
                line: 1,
                message: "the file is not UTF-8 text".into(),
            },
        )
    })?;
    signers::parse(&text).map_err(|e| SignatureError::Signers(file.into(), e))
}

/// Verifies the policy file at `policy` as `conduit run --allowed-signers` does, with its
/// signature at `sig` (by default `POLICY.sig`): `None` when the policy itself cannot be read
/// (the caller reports that).
pub fn verify_file(
    policy: &Path,
    sig: Option<&Path>,
    signers_file: &Path,
) -> Result<Option<Signer>, SignatureError> {
    let Ok(bytes) = crate::policy::load::read_policy(policy) else {
        return Ok(None);
    };
    let sig = sig.map_or_else(|| sig_path(policy), Path::to_path_buf);
    verify(&bytes, &sig, signers_file, super::signers::now()).map(Some)
}

/// Verifies `policy` (the bytes that will be applied) against the signature at `sig` and the
/// signers of `signers_file`, at `now` (Unix seconds). The order is `ssh-keygen -Y verify`'s:
/// the signature itself (namespace, then the cryptography), then whether its key may sign.
pub fn verify(
    policy: &[u8],
    sig: &Path,
    signers_file: &Path,
    now: i64,
) -> Result<Signer, SignatureError> {
    let pem = match read_small(sig, 64 << 10) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SignatureError::Unsigned(sig.into()));
        }
        Err(e) => return Err(SignatureError::Io(sig.into(), e)),
    };
    let s =
        SshSig::from_pem(&pem).map_err(|e| SignatureError::Malformed(sig.into(), e.to_string()))?;
    if s.namespace() != NAMESPACE {
        return Err(SignatureError::Namespace(s.namespace().to_owned()));
    }
    // The key the signature names verifies it; whether that key may sign comes next.
    let embedded = ssh_key::PublicKey::new(s.public_key().clone(), "");
    embedded
        .verify(NAMESPACE, policy, &s)
        .map_err(|_| SignatureError::Mismatch)?;
    let key = embedded.fingerprint(HashAlg::Sha256).to_string();
    let list = read_signers(signers_file)?;
    let mut reasons = Vec::new();
    for l in list.iter().filter(|l| l.key_data() == s.public_key()) {
        match l.allows(now) {
            Ok(()) => {
                return Ok(Signer {
                    principal: l.principals.clone(),
                    key,
                });
            }
            Err(why) => reasons.push(format!("line {}: {why}", l.line)),
        }
    }
    if reasons.is_empty() {
        Err(SignatureError::UnknownKey {
            key,
            file: signers_file.into(),
        })
    } else {
        Err(SignatureError::NotAllowed {
            key,
            file: signers_file.into(),
            reasons,
        })
    }
}

/// A regular file of at most `limit` bytes (a signature, the signers file): never a FIFO or
/// a device, never read without bound.
fn read_small(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _};
    let regular = |m: std::fs::Metadata| {
        if m.is_file() {
            Ok(())
        } else {
            Err(std::io::Error::other("not a regular file"))
        }
    };
    // As `read_policy`: the path first (a device is never opened), then non-blocking (a FIFO
    // does not block the open), then what was opened.
    regular(std::fs::metadata(path)?)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    regular(f.metadata()?)?;
    let mut out = Vec::new();
    f.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB",
            limit >> 10
        )));
    }
    Ok(out)
}
