//! A real `conduit run` process inside a network namespace the test created, with its own pin
//! and state directories (never the system's), stopped by its PID when the test ends.
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{Netns, in_netns, unique_name};

pub struct Agent {
    pub child: Option<Child>,
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    pub audit_log: PathBuf,
    pub log: PathBuf,
    pub policy: PathBuf,
    pub port: u16,
    pub ns: String,
    bin: PathBuf,
    ifaces: Vec<String>,
    extra: Vec<String>,
    nofile: Option<(u64, u64)>,
}

/// A free-looking port for the metrics server (the namespace is new, so any port is free in
/// it; this just keeps parallel tests apart in logs). Below Linux's ephemeral ports (32768 and
/// up): while the agent is not listening yet, a test's health check to a port in that range
/// can pick the same port as its own source and connect to itself (TCP self-connect), and the
/// agent then cannot bind it (seen once: "Address already in use").
fn port() -> u16 {
    20_000 + (std::process::id() % 12_000) as u16
}

impl Agent {
    /// Starts `bin run` in `ns` on `ifaces` with the policy text `yaml`, and waits until
    /// /healthz answers 200.
    pub fn start(bin: &Path, ns: &Netns, ifaces: &[&str], yaml: &str, extra: &[&str]) -> Self {
        let a = Self::launch(bin, ns, ifaces, yaml, extra);
        a.wait_healthy(ns);
        a
    }

    /// Like [`Agent::start`], with the agent's descriptor limit (`RLIMIT_NOFILE`, soft and
    /// hard) set to `nofile` before it starts, as `prlimit --nofile=SOFT:HARD` would.
    pub fn start_with_nofile(
        bin: &Path,
        ns: &Netns,
        ifaces: &[&str],
        yaml: &str,
        extra: &[&str],
        nofile: (u64, u64),
    ) -> Self {
        let mut a = Self::prepare(bin, ns, ifaces, yaml, extra);
        a.nofile = Some(nofile);
        a.spawn();
        a.wait_healthy(ns);
        a
    }

    /// Like [`Agent::start`], with the metrics server on `port`: for several agents in one
    /// namespace.
    pub fn start_on_port(
        bin: &Path,
        ns: &Netns,
        ifaces: &[&str],
        yaml: &str,
        extra: &[&str],
        port: u16,
    ) -> Self {
        let mut a = Self::prepare(bin, ns, ifaces, yaml, extra);
        a.port = port;
        a.spawn();
        a.wait_healthy(ns);
        a
    }

    /// Like [`Agent::start`], without waiting: the process has just been spawned.
    pub fn launch(bin: &Path, ns: &Netns, ifaces: &[&str], yaml: &str, extra: &[&str]) -> Self {
        let mut a = Self::prepare(bin, ns, ifaces, yaml, extra);
        a.spawn();
        a
    }

    /// The agent's directories and arguments, nothing started. `--audit-log PATH` in `extra`
    /// replaces the default audit log (in the agent's temporary directory).
    fn prepare(bin: &Path, ns: &Netns, ifaces: &[&str], yaml: &str, extra: &[&str]) -> Self {
        // The host's addresses first: one appearing after the start makes the agent apply
        // its policy again (a generation more than the test expects).
        ns.settle_addresses();
        let tag = unique_name("cdtag");
        let tmp = std::env::temp_dir().join(&tag);
        std::fs::create_dir_all(&tmp).unwrap();
        let policy = tmp.join("policy.yaml");
        std::fs::write(&policy, yaml).unwrap();
        let audit_log = extra
            .iter()
            .position(|e| *e == "--audit-log")
            .and_then(|i| extra.get(i + 1))
            .map_or_else(|| tmp.join("audit.jsonl"), PathBuf::from);
        Agent {
            child: None,
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/{tag}")),
            state_dir: tmp.join("state"),
            audit_log,
            log: tmp.join("agent.log"),
            policy,
            port: port(),
            ns: ns.name.clone(),
            bin: bin.to_owned(),
            ifaces: ifaces.iter().map(|s| s.to_string()).collect(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            nofile: None,
        }
    }

    /// (Re)starts the process with the same arguments.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        // nsenter switches the network namespace only: `ip netns exec` would also remount /sys,
        // hiding the host's bpffs (and so the pins) from the agent.
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/var/run/netns/{}", self.ns))
            .arg("--")
            .arg(&self.bin)
            .arg("run")
            .arg("--policy")
            .arg(&self.policy);
        for i in &self.ifaces {
            c.args(["--iface", i]);
        }
        c.arg("--metrics-addr")
            .arg(format!("127.0.0.1:{}", self.port));
        c.arg("--pin-dir")
            .arg(&self.pin_dir)
            .arg("--state-dir")
            .arg(&self.state_dir);
        if !self.extra.iter().any(|e| e == "--audit-log") {
            c.arg("--audit-log").arg(&self.audit_log);
        }
        if !self.extra.iter().any(|e| e == "--debounce-ms") {
            c.args(["--debounce-ms", "200"]);
        }
        c.args(&self.extra);
        c.stdout(Stdio::null())
            .stderr(log.try_clone().unwrap())
            .env("RUST_LOG", "info");
        if let Some((soft, hard)) = self.nofile {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: setrlimit is async-signal-safe and only reads `lim`, which the closure
            // owns; it runs in the child between fork and exec.
            unsafe {
                c.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        self.child = Some(c.spawn().expect("start conduit run"));
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// CPU time the agent has used so far (user + system, from `/proc/PID/stat`).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // The command name (field 2) may hold spaces: count fields after its closing ')'.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_millis((f[11] + f[12]) * 1000 / hz)
    }

    /// The agent's `RLIMIT_NOFILE` (soft, hard), from `/proc/PID/limits`.
    pub fn nofile(&self) -> (u64, u64) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid())).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let v: Vec<u64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        (v[0], v[1])
    }

    /// The state file the agent wrote last (`conduit status` reads it).
    pub fn state(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.state_dir.join("state.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Sends a signal to the agent (nsenter execs conduit: same PID).
    /// Nothing when the process is not running (waited for already).
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            crate::signal(c.id(), sig);
        }
    }

    /// Waits for the process to exit and returns its status code.
    pub fn wait(&mut self) -> Option<i32> {
        self.child
            .take()
            .and_then(|mut c| c.wait().ok())
            .and_then(|s| s.code())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` from the agent's HTTP server inside its namespace: (status, body).
    pub fn get(&self, ns: &Netns, path: &str) -> Option<(u16, String)> {
        http_get(ns, self.port, path)
    }

    pub fn wait_healthy(&self, ns: &Netns) {
        let healthy = crate::poll(Duration::from_secs(20), Duration::from_millis(100), || {
            matches!(self.get(ns, "/healthz"), Some((200, _)))
        });
        assert!(
            healthy.is_some(),
            "the agent did not become healthy; its log:\n{}",
            self.log_text()
        );
    }

    /// The value of the sample `name{labels}`; the labels may be given in any order.
    pub fn metric(&self, ns: &Netns, name_and_labels: &str) -> Option<f64> {
        let (_, body) = self.get(ns, "/metrics")?;
        find_sample(&body, name_and_labels)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal(libc::SIGTERM);
            let _ = self.wait();
        }
        // Whatever the test did to the agent, leave no pin behind.
        let _ = conduit_agent::agent::links::detach_all(&self.pin_dir);
        if let Some(dir) = self.policy.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// GET from `127.0.0.1:port` inside `ns`.
pub fn http_get(ns: &Netns, port: u16, path: &str) -> Option<(u16, String)> {
    match http_get_result(ns, port, path) {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("GET {path} on port {port} in {}: {e}", ns.name);
            None
        }
    }
}

fn http_get_result(ns: &Netns, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    in_netns(ns, || {
        let mut s =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let status = resp
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad response {resp:?}")))?;
        let body = resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    })
}

/// Splits `name{a="1",b="2"}` into the name and its sorted label pairs.
fn split_sample(s: &str) -> (String, Vec<String>) {
    match s.split_once('{') {
        Some((name, rest)) => {
            let mut labels: Vec<String> = rest
                .trim_end_matches('}')
                .split("\",")
                .map(|l| l.trim_end_matches('"').to_owned())
                .filter(|l| !l.is_empty())
                .collect();
            labels.sort();
            (name.to_owned(), labels)
        }
        None => (s.to_owned(), Vec::new()),
    }
}

/// The value of label `label` on the first sample of metric `name` in a Prometheus text
/// exposition (an info metric's `sha256`, say).
pub fn find_label(body: &str, name: &str, label: &str) -> Option<String> {
    let key = format!("{label}=\"");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(sample, _)| split_sample(sample)))
        .find(|(n, _)| n == name)?
        .1
        .iter()
        .find_map(|l| l.strip_prefix(&key).map(str::to_owned))
}

/// The value of a sample in a Prometheus text exposition.
pub fn find_sample(body: &str, name_and_labels: &str) -> Option<f64> {
    let want = split_sample(name_and_labels);
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (sample, value) = l.rsplit_once(' ')?;
        (split_sample(sample) == want)
            .then(|| value.parse().ok())
            .flatten()
    })
}
