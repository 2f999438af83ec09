//! The exit statuses of SPEC §2, in one place: every command returns one of these.
use std::process::ExitCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Done.
    Ok = 0,
    /// Input rejected: an invalid policy, bad arguments, a request the agent refuses.
    Rejected = 1,
    /// The operation failed: no permission, the kernel refused, no agent answers.
    Failed = 2,
    /// `conduit status`: nothing is attached (as `systemctl status` for an inactive unit).
    NotAttached = 3,
}

impl Exit {
    /// The status as a number (what the agent's control socket answers).
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The status of a number: 0 to 3 as themselves, anything else as [`Exit::Failed`].
    pub const fn of(code: u8) -> Self {
        match code {
            0 => Exit::Ok,
            1 => Exit::Rejected,
            3 => Exit::NotAttached,
            _ => Exit::Failed,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e.code())
    }
}
