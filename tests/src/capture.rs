//! Writing a capture with tcpdump in a namespace the test created, and running a `conduit`
//! command that answers JSON.
use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::Netns;

/// tcpdump writing `filter`ed frames of `iface` to a pcap file (or tshark to a pcapng file);
/// stopped (and flushed) by [`PcapWriter::stop`] or on drop.
pub struct PcapWriter(Option<Child>);

impl PcapWriter {
    /// Starts tcpdump and returns once it is capturing. Immediate mode: every frame is written
    /// as it arrives, so none is lost when the capture stops.
    pub fn start(ns: &Netns, iface: &str, path: &Path, filter: &str) -> Self {
        let mut child = ns
            .command("tcpdump")
            .args(["-i", iface, "-w"])
            .arg(path)
            .args(["-U", "--immediate-mode", "-s", "0", filter])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump");
        wait_until_capturing(&mut child);
        Self(Some(child))
    }

    /// Starts tshark writing pcapng, its own format (a section header and an interface
    /// description with options, nanosecond enhanced packet blocks, interface statistics at
    /// the end), and returns once it is capturing.
    pub fn start_pcapng(ns: &Netns, iface: &str, path: &Path, filter: &str) -> Self {
        let mut child = ns
            .command("tshark")
            .args(["-i", iface, "-F", "pcapng", "-f", filter, "-w"])
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tshark");
        wait_for(&mut child, "tshark", "Capturing on");
        Self(Some(child))
    }

    /// Stops the capture; the file is complete when this returns.
    pub fn stop(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if let Some(mut c) = self.0.take() {
            crate::signal(c.id(), libc::SIGINT);
            let _ = c.wait();
        }
    }
}

impl Drop for PcapWriter {
    fn drop(&mut self) {
        self.end();
    }
}

/// Waits until a tcpdump started with a piped stderr says it is capturing ("listening on").
pub fn wait_until_capturing(child: &mut Child) {
    wait_for(child, "tcpdump", "listening on");
}

/// Waits until `what`, started with a piped stderr, writes a line holding `line_holding`
/// there; what it writes after that is read and dropped (a closed pipe would kill it when it
/// next writes: tshark logs as it goes, tcpdump counts at exit).
fn wait_for(child: &mut Child, what: &str, line_holding: &str) {
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let t = Instant::now();
    while !line.contains(line_holding) {
        line.clear();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 || t.elapsed() > Duration::from_secs(10) {
            crate::signal(child.id(), libc::SIGKILL);
            let _ = child.wait();
            panic!("{what} did not start: {line}");
        }
    }
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
}

/// `conduit explain` (the binary `bin`) of a TCP segment from `src` to `dst:dport` under
/// `policy`, with the request flags `request` (e.g. `--modbus-function 6`), must give the
/// verdict, reason and conduit that `conduit replay` gave the captured frame (`replayed`, one
/// of replay's JSON frames); `what` names the frame in the failure.
pub fn explain_agrees(
    bin: &str,
    policy: &Path,
    replayed: &serde_json::Value,
    (src, dst, dport): (&str, &str, &str),
    request: &[&str],
    what: &str,
) {
    let explain = run_json(
        Command::new(bin)
            .arg("explain")
            .arg(policy)
            .args([
                "--src", src, "--dst", dst, "--proto", "tcp", "--dport", dport,
            ])
            .args(request)
            .args(["--format", "json"]),
    );
    for k in ["verdict", "reason", "conduit"] {
        assert_eq!(
            replayed[k], explain[k],
            "{what}: {k}: replay {replayed} vs explain {explain}"
        );
    }
}

/// Runs a command that must succeed and print JSON; returns the JSON.
pub fn run_json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().expect("run the command");
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// `conduit replay POLICY PCAP --format json` with the `conduit` binary `bin`: the verdict
/// of every frame (`frames`, in capture order) and the `summary`.
pub fn replay_json(bin: &str, policy: &Path, pcap: &Path) -> serde_json::Value {
    run_json(
        Command::new(bin)
            .arg("replay")
            .arg(policy)
            .arg(pcap)
            .args(["--format", "json"]),
    )
}

/// tshark's decoding of `pcap` (the reference decoder): a line per frame, the `fields`
/// separated by commas, each field's first occurrence only (an ICMP error's quoted header
/// does not shift the columns), empty where the frame has no such field.
pub fn tshark_fields(pcap: &Path, fields: &[&str]) -> String {
    tshark(pcap, fields, &["-E", "separator=,", "-E", "occurrence=f"])
}

/// [`tshark_fields`] with every occurrence of each field, joined by `/` (a request inside
/// a request has two services); the fields separated by `;`.
pub fn tshark_all_fields(pcap: &Path, fields: &[&str]) -> String {
    let options = [
        "-E",
        "separator=;",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=/",
    ];
    tshark(pcap, fields, &options)
}

fn tshark(pcap: &Path, fields: &[&str], options: &[&str]) -> String {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(pcap).args(["-T", "fields"]).args(options);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark");
    assert!(
        out.status.success(),
        "tshark -r {}: {}",
        pcap.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
