//! Reading a policy file end to end: read, validate, compile, lint.
use std::{io::Read as _, path::Path};

use super::{
    Diagnostics, Policy, Pos,
    compile::Compiled,
    lint::lint,
    validate::{MAX_POLICY_BYTES, validate_bytes},
};

/// Why a policy file's bytes could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening or reading failed (missing, no permission): the operation failed.
    #[error("cannot read the policy: {0}")]
    Io(#[from] std::io::Error),
    /// The path names something that is no policy file at all: input rejected.
    #[error("this is {0}, not a regular file; conduit reads a policy only from a regular file")]
    NotRegular(&'static str),
    /// Input rejected.
    #[error(
        "the file is larger than {} MiB; policies larger than that are refused",
        MAX_POLICY_BYTES >> 20
    )]
    TooLarge,
}

/// The bytes of the policy file at `path`: a regular file only, and never more than
/// [`MAX_POLICY_BYTES`] + 1 bytes read. The one reader of policy files (`check`, `explain`,
/// `replay`, the agent's start and every reload).
///
/// A FIFO would block the open until a writer comes and a device such as `/dev/zero` never
/// ends: the path is looked at first (so a device is never even opened), then the file is
/// opened non-blocking (opening a FIFO returns at once) and what the descriptor is decides
/// (fstat), not what the path was a moment before.
pub fn read_policy(path: &Path) -> Result<Vec<u8>, ReadError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let regular = |m: &std::fs::Metadata| {
        if m.is_file() {
            Ok(())
        } else {
            Err(ReadError::NotRegular(kind(m.file_type())))
        }
    };
    regular(&std::fs::metadata(path)?)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let m = f.metadata()?;
    regular(&m)?;
    if m.len() > MAX_POLICY_BYTES as u64 {
        return Err(ReadError::TooLarge);
    }
    read_bounded(f, m.len() as usize, MAX_POLICY_BYTES)
}

/// At most `limit` bytes of `r`: one byte more is read to tell that there is more, and then it
/// is refused. `size` is what the file claims (the first allocation), never trusted as a bound.
fn read_bounded(r: impl std::io::Read, size: usize, limit: usize) -> Result<Vec<u8>, ReadError> {
    let mut bytes = Vec::with_capacity(size.min(limit) + 1);
    r.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > limit {
        return Err(ReadError::TooLarge);
    }
    Ok(bytes)
}

/// What a file that is not a regular file is, for the error message.
fn kind(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "something else"
    }
}

/// The sha256 of a policy file's bytes, hex: what the agent reports and compares.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// A policy file that validated and compiled, with its warnings.
pub struct Loaded {
    pub policy: Policy,
    pub compiled: Compiled,
    /// sha256 of the file's bytes, hex.
    pub sha256: String,
}

/// Reads ([`read_policy`]), validates, compiles (for `slot`) and lints a policy file. Every
/// diagnostic is in the returned list; `Some` only when there are no errors (warnings are
/// fine). A path that is no regular file or a file over the size limit is an error of the
/// file (at 1:1); `Err` only when it cannot be opened or read.
pub fn load_file(path: &Path, slot: u8) -> Result<(Option<Loaded>, Diagnostics), std::io::Error> {
    match read_policy(path) {
        Ok(bytes) => Ok(load_bytes(&bytes, slot)),
        Err(ReadError::Io(e)) => Err(e),
        Err(e) => {
            let mut d = Diagnostics::default();
            d.error(Pos::new(1, 1), e.to_string());
            Ok((None, d))
        }
    }
}

pub fn load_bytes(bytes: &[u8], slot: u8) -> (Option<Loaded>, Diagnostics) {
    let (policy, mut d) = validate_bytes(bytes);
    let Some(policy) = policy else {
        return (None, d);
    };
    match super::compile::compile(&policy, slot) {
        Ok(compiled) => {
            lint(&policy, &compiled, &mut d);
            let sha256 = sha256_hex(bytes);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_reader_is_read_only_to_the_limit_plus_one() {
        struct Counted(u64);
        impl std::io::Read for Counted {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                buf.fill(b'#');
                self.0 += buf.len() as u64;
                Ok(buf.len())
            }
        }
        let mut endless = Counted(0);
        assert!(matches!(
            read_bounded(&mut endless, 0, 1000),
            Err(ReadError::TooLarge)
        ));
        assert_eq!(endless.0, 1001, "bytes read from an endless source");
        // A file that claims more than it has, or less, is read as it is.
        let r = read_bounded(&b"version: 1\n"[..], 1 << 40, 1000).unwrap();
        assert_eq!(r, b"version: 1\n");
        let r = read_bounded(&[b'#'; 1000][..], 0, 1000).unwrap();
        assert_eq!(r.len(), 1000, "exactly the limit is fine");
    }

    #[test]
    fn only_regular_files_are_read() {
        let dir = std::env::temp_dir().join(format!("conduit-read-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.yaml");
        std::fs::write(&file, "version: 1\n").unwrap();
        assert_eq!(read_policy(&file).unwrap(), b"version: 1\n");
        let e = read_policy(&dir).unwrap_err();
        assert!(matches!(e, ReadError::NotRegular("a directory")), "{e}");
        let e = read_policy(Path::new("/dev/null")).unwrap_err();
        assert!(
            matches!(e, ReadError::NotRegular("a character device")),
            "{e}"
        );
        let e = read_policy(&dir.join("missing.yaml")).unwrap_err();
        assert!(matches!(e, ReadError::Io(_)), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
