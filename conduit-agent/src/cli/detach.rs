//! `conduit detach`: remove every link and map pin conduit left behind.
use std::process::ExitCode;

use super::PinArgs;
use crate::{
    agent::{self, links, state},
    exit::Exit,
};

pub fn main(p: &PinArgs) -> ExitCode {
    // Never under a running agent: it would go on reporting itself attached and healthy while
    // nothing is enforced. Its lock says whether one runs; held while the pins go.
    let _lock = if p.pin_dir.exists() {
        match agent::lock::lock(&p.pin_dir) {
            Ok(l) => Some(l),
            Err(e @ agent::lock::LockError::Held { .. }) => {
                eprintln!(
                    "error: {e}; stopping it with SIGTERM detaches it (unless --keep-on-exit)"
                );
                return Exit::Failed.into();
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Failed.into();
            }
        }
    } else {
        None
    };
    match links::detach_all(&p.pin_dir) {
        Ok(removed) => {
            let _ = std::fs::remove_file(state::path(&p.state_dir));
            if removed.is_empty() {
                println!("nothing to detach under {}", p.pin_dir.display());
            } else {
                println!(
                    "detached: removed {} pins under {}",
                    removed.len(),
                    p.pin_dir.display()
                );
            }
            Exit::Ok.into()
        }
        Err(e) => {
            eprintln!("error: detaching under {}: {e}", p.pin_dir.display());
            Exit::Failed.into()
        }
    }
}
