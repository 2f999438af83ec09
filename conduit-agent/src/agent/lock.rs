//! One agent per pin directory. Two agents on the same pins would fight over the same links:
//! the second adopts the first's, and removes them when it exits while the first still
//! reports itself attached. So `conduit run` holds an exclusive `flock` on the pin directory
//! itself (bpffs holds no regular files, but a directory can be locked) for its whole life.
//! The kernel drops the lock when the process ends, however it ends (`kill -9` included), so
//! it is never stale; an agent that finds it held refuses to start and names the holder.
use std::{
    fs::{File, TryLockError},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// The lock on a pin directory: held until this value is dropped or the process ends.
#[derive(Debug)]
pub struct PinLock {
    _dir: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another conduit agent ({}) is running with the pin directory {}: stop it first; an \
         agent for other interfaces needs a --pin-dir of its own",
        holder_text(.pid),
        .dir.display()
    )]
    Held { dir: PathBuf, pid: Option<u32> },
    #[error("locking the pin directory {}: {}", .0.display(), .1)]
    Io(PathBuf, std::io::Error),
}

fn holder_text(pid: &Option<u32>) -> String {
    match pid {
        Some(pid) => format!("PID {pid}"),
        None => "its PID is not visible from here".to_owned(),
    }
}

/// Creates `pin_dir` if needed and locks it, without waiting.
pub fn lock(pin_dir: &Path) -> Result<PinLock, LockError> {
    let io = |e| LockError::Io(pin_dir.to_owned(), e);
    // An agent that exits removes the directory. A lock taken on it just before that guards a
    // directory that is gone: lock whatever is at the path then (the race needs an agent to
    // exit each time, so a few tries are plenty).
    for _ in 0..8 {
        std::fs::create_dir_all(pin_dir).map_err(io)?;
        let dir = File::open(pin_dir).map_err(io)?;
        match dir.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    dir: pin_dir.to_owned(),
                    pid: holder(&dir),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let locked = dir.metadata().map_err(io)?;
        if std::fs::metadata(pin_dir)
            .is_ok_and(|now| (now.dev(), now.ino()) == (locked.dev(), locked.ino()))
        {
            return Ok(PinLock { _dir: dir });
        }
    }
    Err(io(std::io::Error::other(
        "the directory keeps being removed while it is locked",
    )))
}

/// The PID of the process holding a `flock` on `f`, from the kernel's list of locks (PIDs as
/// this process's PID namespace sees them).
fn holder(f: &File) -> Option<u32> {
    let m = f.metadata().ok()?;
    let file = format!(
        "{:02x}:{:02x}:{}",
        libc::major(m.dev()),
        libc::minor(m.dev()),
        m.ino()
    );
    holder_in(&std::fs::read_to_string("/proc/locks").ok()?, &file)
}

/// In /proc/locks' text, the PID of the exclusive flock on `file` (`MAJOR:MINOR:INODE`, as
/// the kernel writes it: device numbers in hex, the inode in decimal).
fn holder_in(locks: &str, file: &str) -> Option<u32> {
    locks.lines().find_map(|l| {
        // "1: FLOCK  ADVISORY  WRITE 1234 00:2d:5678 0 EOF"; a waiter has "->" after the
        // number, and is not the holder.
        match l.split_whitespace().collect::<Vec<_>>()[..] {
            [_, "FLOCK", _, "WRITE", pid, id, ..] if id == file => {
                pid.parse().ok().filter(|&p| p != 0)
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_found_in_proc_locks() {
        let locks = "1: POSIX  ADVISORY  WRITE 77 00:2d:5678 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 1234 00:2d:5678 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 99 00:2d:5678 0 EOF\n\
                     3: FLOCK  ADVISORY  READ 55 fe:00:42 0 EOF\n";
        assert_eq!(holder_in(locks, "00:2d:5678"), Some(1234));
        assert_eq!(
            holder_in(locks, "fe:00:42"),
            None,
            "a shared lock is no agent's"
        );
        assert_eq!(holder_in(locks, "00:2d:1"), None);
    }

    #[test]
    fn a_held_directory_is_refused_with_the_holders_pid_until_it_is_released() {
        let dir = std::env::temp_dir().join(format!("conduit-lock-test-{}", std::process::id()));
        let first = lock(&dir).unwrap();
        // flock conflicts between two opens even in one process.
        match lock(&dir) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("the second lock must be refused: {other:?}"),
        }
        drop(first);
        let again = lock(&dir).unwrap();
        // Removed while locked (an agent exiting): the next lock is on the new directory.
        std::fs::remove_dir(&dir).unwrap();
        let renewed = lock(&dir).unwrap();
        assert!(lock(&dir).is_err());
        drop((again, renewed));
        std::fs::remove_dir(&dir).unwrap();
    }
}
