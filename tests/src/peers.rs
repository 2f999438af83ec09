//! Real protocol peers for the plant tests: Python programs under `tests/NAME/` run with the
//! virtualenv that `./xtask/bootstrap.sh` installs into `target/peers/NAME`
//! (`tests/NAME/install.sh`): a DNP3 master and outstation (`dnp3`), an EtherNet/IP client and
//! server (`enip`).
use std::{
    path::PathBuf,
    process::{Child, Stdio},
};

use crate::plant::{Plant, Role};

/// One peer's virtualenv and scripts.
pub struct Peer {
    name: &'static str,
    python: PathBuf,
}

impl Peer {
    /// The peer `name`; panics, saying how to install it, when its virtualenv is missing.
    pub fn new(name: &'static str) -> Self {
        let python = crate::workspace_root().join(format!("target/peers/{name}/bin/python"));
        assert!(
            python.exists(),
            "{} is missing: run ./xtask/bootstrap.sh (it installs the {name} test peers)",
            python.display()
        );
        Self { name, python }
    }

    fn script(&self, file: &str) -> String {
        crate::workspace_root()
            .join("tests")
            .join(self.name)
            .join(file)
            .display()
            .to_string()
    }

    /// Starts `script args` in `role`'s namespace and waits until it listens on tcp `port`;
    /// ended (by its PID) when the returned [`Kill`] is dropped.
    pub fn serve(&self, plant: &Plant, role: Role, script: &str, args: &[&str], port: u16) -> Kill {
        let child = plant
            .ns(role)
            .command(self.python.to_str().unwrap())
            .arg(self.script(script))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {script}: {e}"));
        let server = Kill(child);
        let sport = format!(":{port}");
        crate::wait_for(&format!("{script} listens on {port}"), || {
            let out = plant.run(role, &["ss", "-ltnH", "sport", "=", &sport]);
            !out.stdout.is_empty()
        });
        server
    }

    /// Runs `script args` in `role`'s namespace to its end: what it printed, as JSON.
    pub fn client(
        &self,
        plant: &Plant,
        role: Role,
        script: &str,
        args: &[&str],
    ) -> serde_json::Value {
        let path = self.script(script);
        let mut argv = vec![self.python.to_str().unwrap(), path.as_str()];
        argv.extend_from_slice(args);
        let out = plant.run(role, &argv);
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "{script}: {e}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

/// Asserts that a client's answer (`{"connected": bool, "results": {REQ: ...}}`, what
/// every peer client prints) says it connected and that each request in `reqs` came out as
/// `want`; a failure shows the agent's audit log too.
pub fn assert_results(
    got: &serde_json::Value,
    reqs: &[&str],
    want: &str,
    audit_log: &std::path::Path,
) {
    assert_eq!(got["connected"], true, "{got}");
    for req in reqs {
        assert_eq!(
            got["results"][req],
            want,
            "{req}: {got}\naudit log:\n{}",
            std::fs::read_to_string(audit_log).unwrap_or_default()
        );
    }
}

/// A process of the test's, ended (by its PID) when this is dropped, passed or failed.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
