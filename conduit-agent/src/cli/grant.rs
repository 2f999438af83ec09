//! `conduit grant` and `conduit revoke` (SPEC §8): the commands' side of
//! [`crate::agent::grants`].
use std::process::ExitCode;

use super::PinArgs;
use crate::{
    agent::grants::{self, Reply, Request, Who},
    exit::Exit,
    policy::addr,
};

#[derive(clap::Args, Debug)]
pub struct GrantArgs {
    /// The on-demand conduit to open (its `name` in the live policy).
    pub conduit: String,
    /// How long: 2h, 1h30m, 90m, 2d, 45s. At most the conduit's `on_demand.max`.
    #[arg(long = "for", value_name = "DURATION", allow_hyphen_values = true)]
    pub duration: String,
    /// Why, for the change log and the audit log (a ticket, a vendor's name, a work order).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    #[command(flatten)]
    pub pins: PinArgs,
}

#[derive(clap::Args, Debug)]
pub struct RevokeArgs {
    /// The on-demand conduit to close (its `name` in the live policy).
    pub conduit: String,
    /// Why, for the change log and the audit log.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    #[command(flatten)]
    pub pins: PinArgs,
}

fn reason(r: Option<String>) -> Result<Option<String>, ExitCode> {
    match r {
        Some(r) if r.len() > grants::MAX_REASON => {
            eprintln!(
                "error: --reason is longer than {} bytes; say it shorter (a ticket number)",
                grants::MAX_REASON
            );
            Err(Exit::Rejected.into())
        }
        Some(r) if r.chars().any(char::is_control) => {
            eprintln!("error: --reason must be one line of text, without control characters");
            Err(Exit::Rejected.into())
        }
        r => Ok(r),
    }
}

fn sudo_user() -> Option<String> {
    std::env::var("SUDO_USER").ok().filter(|u| !u.is_empty())
}

fn finish(r: Reply) -> ExitCode {
    if r.code == Exit::Ok.code() {
        println!("{}", r.message);
    } else {
        eprintln!("error: {}", r.message);
    }
    Exit::of(r.code).into()
}

pub fn grant(a: GrantArgs) -> ExitCode {
    let seconds = match addr::duration(&a.duration) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: --for: {e}");
            return Exit::Rejected.into();
        }
    };
    let reason = match reason(a.reason) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let req = Request::Grant {
        conduit: a.conduit,
        seconds,
        reason,
        sudo_user: sudo_user(),
    };
    match grants::ask(&a.pins.state_dir, &req) {
        Ok(r) => finish(r),
        Err(e) => {
            eprintln!(
                "error: no agent answers on {} ({e}): a grant needs the running agent, which \
                 writes it, records it and ends it (start it: systemctl start conduit; with \
                 other directories, give --state-dir)",
                grants::socket_path(&a.pins.state_dir).display()
            );
            Exit::Failed.into()
        }
    }
}

pub fn revoke(a: RevokeArgs) -> ExitCode {
    let reason = match reason(a.reason) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let req = Request::Revoke {
        conduit: a.conduit.clone(),
        reason: reason.clone(),
        sudo_user: sudo_user(),
    };
    match grants::ask(&a.pins.state_dir, &req) {
        Ok(r) => finish(r),
        // No agent: the pins alone (closing access never waits for an agent).
        Err(_) => {
            let who = Who {
                user: grants::user_name(rustix::process::getuid().as_raw()),
                sudo_user: sudo_user(),
            };
            finish(grants::revoke_offline(
                &a.pins.pin_dir,
                &a.pins.state_dir,
                &a.conduit,
                reason,
                &who,
            ))
        }
    }
}
