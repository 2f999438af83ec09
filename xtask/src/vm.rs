//! `cargo xtask vm-test`: the XDP program and the agent on the kernels gateways run, each
//! booted in qemu from Debian's own kernel package with a small initramfs that holds the
//! `conduit` binary, the kernel test binaries and what they call (busybox, ip, ping, nc).
//!
//! In every VM: `conduit kernel` (probes, load, verifier figures), `conduit replay` of the
//! project's captures (the verdicts must be those of the host), the BPF_PROG_TEST_RUN tests
//! (verdicts, a short differential run; the full form adds the bypass corpus, the fast path,
//! ICMP errors, Modbus), and the agent (`conduit run`) attached to a veth pair with real
//! traffic across it. The host reads the VM's serial console.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::workspace_root;

/// A Debian kernel package, pinned to an exact version (the archive keeps these versions while
/// the suite's point release stands; change them here, together, when it moves on).
pub struct Kernel {
    /// What `--kernel` takes.
    pub name: &'static str,
    pub package: &'static str,
    pub version: &'static str,
    /// The Debian suite that carries it.
    pub suite: &'static str,
    /// What the smoke form that `cargo xtask test` runs does on it.
    pub smoke: Smoke,
    /// `None`: Conduit runs there. `Some(text)`: a kernel older than Conduit supports, where
    /// `run`, `replay` and `kernel` must refuse to start with one line containing `text`.
    pub refused: Option<&'static str>,
}

/// The kernel matrix (the development kernel is the host's own, tested by `cargo xtask test`).
/// A kernel's part in the smoke form.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Smoke {
    /// Not booted.
    No,
    /// Every smoke step (Debian 12's kernel, the one most gateways run).
    Steps,
    /// `conduit kernel` only: the verifier takes the program (a minute less of emulation
    /// than the steps; `cargo xtask vm-test` runs them all).
    Verifier,
}

pub const KERNELS: &[Kernel] = &[
    Kernel {
        name: "6.1",
        package: "linux-image-6.1.0-50-cloud-amd64",
        version: "6.1.176-1",
        suite: "bookworm",
        smoke: Smoke::Steps,
        refused: None,
    },
    Kernel {
        name: "6.1-rt",
        package: "linux-image-6.1.0-50-rt-amd64",
        version: "6.1.176-1",
        suite: "bookworm",
        smoke: Smoke::No,
        refused: None,
    },
    Kernel {
        name: "6.12",
        package: "linux-image-6.12.117+deb13-cloud-amd64",
        version: "6.12.117-1",
        suite: "trixie",
        smoke: Smoke::Verifier,
        refused: None,
    },
    // Older than the minimum (5.11): the start-up probe must say so in one line.
    Kernel {
        name: "5.10",
        package: "linux-image-5.10.0-32-cloud-amd64",
        version: "5.10.223-1",
        suite: "bullseye",
        smoke: Smoke::Steps,
        refused: Some("bpf_ktime_get_coarse_ns (flow clock) needs 5.11; upgrade the kernel"),
    },
];

/// The test binaries of the `conduit-tests` crate run in the VM, and whether the smoke form
/// runs them too.
const TEST_BINARIES: &[(&str, bool)] = &[
    ("test_run", true),
    ("differential", true),
    ("veth", true),
    ("learn", false),
    ("expires", false),
    ("bypass", false),
    ("fast_path", false),
    ("icmp_errors", false),
    ("modbus", false),
];

/// Captures replayed in the VM and on the host: (policy, capture) under tests/captures/.
const CAPTURES: &[(&str, &str)] = &[("corpus.yaml", "corpus.pcap")];

/// What one kernel's run found.
pub struct Outcome {
    pub kernel: &'static str,
    pub release: String,
    pub steps: Vec<(String, bool)>,
    pub budget: Option<serde_json::Value>,
    pub seconds: f64,
}

/// What a run does in each VM.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `cargo xtask test`'s: the smoke kernels, the smoke tests.
    Smoke,
    /// Every kernel, every step.
    Full,
    /// Every kernel, `conduit kernel` only: the verifier figures for BENCHMARKS.md.
    Verifier,
}

pub fn run(names: &[String], form: Form) -> Result<()> {
    let smoke = form == Form::Smoke;
    let kernels: Vec<&Kernel> = if names.is_empty() {
        KERNELS
            .iter()
            .filter(|k| k.smoke != Smoke::No || !smoke)
            .collect()
    } else {
        names
            .iter()
            .map(|n| {
                KERNELS.iter().find(|k| k.name == n).with_context(|| {
                    format!(
                        "no kernel {n:?} in the matrix; known: {}",
                        KERNELS
                            .iter()
                            .map(|k| k.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            })
            .collect::<Result<_>>()?
    };
    for tool in [
        "qemu-system-x86_64",
        "busybox",
        "strip",
        "ldd",
        "ip",
        "ping",
        "nc",
    ] {
        ensure!(
            which(tool).is_some(),
            "{tool} not found: run ./xtask/bootstrap.sh (it installs qemu-system-x86 and \
             busybox-static)"
        );
    }
    let root = workspace_root();
    let out = root.join(match form {
        Form::Smoke => "target/vm-test-smoke",
        Form::Full => "target/vm-test",
        Form::Verifier => "target/vm-test-verifier",
    });
    std::fs::create_dir_all(&out)?;
    let bins = build(&root, form)?;
    let expected = if form == Form::Verifier {
        BTreeMap::new()
    } else {
        host_replays(&root, &bins.conduit)?
    };
    // The development kernel's row: the host itself.
    let host = Command::new(&bins.conduit)
        .args(["kernel", "--format", "json"])
        .output()?;
    let budget: Option<serde_json::Value> = serde_json::from_slice(&host.stdout).ok();
    let mut outcomes = vec![Outcome {
        kernel: "host",
        release: budget
            .as_ref()
            .and_then(|b| b["kernel"]["release"].as_str())
            .unwrap_or("?")
            .to_owned(),
        steps: vec![("conduit kernel on the host".into(), host.status.success())],
        budget,
        seconds: 0.0,
    }];
    for k in &kernels {
        let dir = fetch(k)?;
        let image = out.join(format!("{}.cpio", k.name));
        // In the smoke form, a kernel may be asked for the verifier's answer only.
        let kform = if smoke && k.smoke == Smoke::Verifier {
            Form::Verifier
        } else {
            form
        };
        initramfs(&root, &dir, &bins, kform, k.refused, &image)?;
        let want = if kform == Form::Verifier {
            &NOTHING
        } else {
            &expected
        };
        let o = boot(k, &dir, &image, &out, smoke, want)?;
        std::fs::remove_file(&image).ok();
        outcomes.push(o);
    }
    let report = budget_report(&outcomes);
    std::fs::write(out.join("verifier.md"), &report)?;
    println!("{report}");
    if !smoke {
        splice_benchmarks(&root.join("BENCHMARKS.md"), &report)?;
        eprintln!("[xtask] wrote the verifier figures into BENCHMARKS.md");
    }
    let failed: Vec<String> = outcomes
        .iter()
        .flat_map(|o| {
            o.steps
                .iter()
                .filter(|(_, ok)| !ok)
                .map(move |(s, _)| format!("{}: {s}", o.kernel))
        })
        .collect();
    if failed.is_empty() {
        let steps: usize = outcomes.iter().map(|o| o.steps.len()).sum();
        println!("vm-test: {steps} passed, 0 failed");
        Ok(())
    } else {
        bail!(
            "vm-test failed on: {} (serial logs in {})",
            failed.join(", "),
            out.display()
        )
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

struct Binaries {
    conduit: PathBuf,
    tests: Vec<(String, PathBuf)>,
}

/// Builds the release binary and the kernel test binaries; returns their paths.
fn build(root: &Path, form: Form) -> Result<Binaries> {
    let wanted = |smoke_too: bool| match form {
        Form::Smoke => smoke_too,
        Form::Full => true,
        Form::Verifier => false,
    };
    crate::release_binary()?;
    // The whole workspace's test binaries, as `cargo xtask test` builds them (the same
    // feature set, so nothing is compiled again); the kernel tests are taken from them.
    eprintln!("[xtask] cargo {}", crate::TEST_BUILD.join(" "));
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(crate::TEST_BUILD)
        .arg("--message-format=json")
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()?;
    ensure!(out.status.success(), "building the test binaries failed");
    let mut tests = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(exe), Some(name)) = (v["executable"].as_str(), v["target"]["name"].as_str())
        else {
            continue;
        };
        if TEST_BINARIES.iter().any(|(n, s)| *n == name && wanted(*s)) {
            tests.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    let count = TEST_BINARIES.iter().filter(|(_, s)| wanted(*s)).count();
    ensure!(
        tests.len() == count,
        "found {} of the {count} test binaries: {tests:?}",
        tests.len()
    );
    Ok(Binaries {
        conduit: root.join("target/release/conduit"),
        tests,
    })
}

/// The host's replay of every capture (JSON), the verdicts each VM must reproduce.
fn host_replays(root: &Path, conduit: &Path) -> Result<BTreeMap<String, serde_json::Value>> {
    let mut m = BTreeMap::new();
    for (policy, pcap) in CAPTURES {
        let dir = root.join("tests/captures");
        let out = Command::new(conduit)
            .args(["replay", "--format", "json"])
            .arg(dir.join(policy))
            .arg(dir.join(pcap))
            .output()?;
        ensure!(
            out.status.success(),
            "replay of {pcap} on the host failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        m.insert(pcap.to_string(), serde_json::from_slice(&out.stdout)?);
    }
    Ok(m)
}

/// The cache of downloaded kernels: `~/.cache/conduit/vm`.
fn cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"))
        .join("conduit/vm")
}

/// Downloads (once) and unpacks the kernel package; returns the directory holding `vmlinuz`
/// and the modules the VM loads (`veth.ko`).
fn fetch(k: &Kernel) -> Result<PathBuf> {
    let dir = cache().join(format!("{}_{}", k.package, k.version));
    if dir.join("vmlinuz").is_file() && dir.join("veth.ko").is_file() {
        return Ok(dir);
    }
    let debs = cache().join("debs");
    std::fs::create_dir_all(&debs)?;
    let deb = debs.join(format!(
        "{}_{}_amd64.deb",
        k.package,
        k.version.replace(':', "%3a")
    ));
    if !deb.is_file() {
        let apt = private_apt()?;
        eprintln!("[xtask] downloading {}={}", k.package, k.version);
        let st = Command::new("apt-get")
            .args(&apt)
            .args(["-q", "download"])
            .arg(format!("{}={}", k.package, k.version))
            .current_dir(&debs)
            .status()?;
        ensure!(
            st.success() && deb.is_file(),
            "downloading {}={} failed: the archive may have dropped this version; pin the \
             current one in xtask/src/vm.rs (`apt-cache policy {}` lists it)",
            k.package,
            k.version,
            k.package
        );
    }
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let st = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&tmp)
        .status()?;
    ensure!(st.success(), "unpacking {} failed", deb.display());
    let vmlinuz = find(&tmp, |n| n.starts_with("vmlinuz-"))?;
    let veth = find(&tmp, |n| n == "veth.ko" || n == "veth.ko.xz")?;
    std::fs::copy(&vmlinuz, tmp.join("vmlinuz"))?;
    if veth.extension().is_some_and(|e| e == "xz") {
        let out = Command::new("xz").arg("-dc").arg(&veth).output()?;
        ensure!(out.status.success(), "xz -d {} failed", veth.display());
        std::fs::write(tmp.join("veth.ko"), out.stdout)?;
    } else {
        std::fs::copy(&veth, tmp.join("veth.ko"))?;
    }
    for sub in ["boot", "lib", "usr"] {
        let _ = std::fs::remove_dir_all(tmp.join(sub));
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)?;
    Ok(dir)
}

fn find(dir: &Path, pick: impl Fn(&str) -> bool + Copy) -> Result<PathBuf> {
    for e in std::fs::read_dir(dir)?.flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            if let Ok(f) = find(&p, pick) {
                return Ok(f);
            }
        } else if e.file_name().to_str().is_some_and(pick) {
            return Ok(p);
        }
    }
    bail!("nothing matching in {}", dir.display())
}

/// apt options for a private configuration under the cache: the suites the matrix needs,
/// from the mirror this machine already uses, without touching the system's sources.
fn private_apt() -> Result<Vec<String>> {
    let base = cache().join("apt");
    for d in ["lists/partial", "cache/archives/partial", "prefs"] {
        std::fs::create_dir_all(base.join(d))?;
    }
    let mirror = system_mirror()?;
    let mut suites: Vec<&str> = KERNELS.iter().map(|k| k.suite).collect();
    suites.sort();
    suites.dedup();
    let sources: String = suites
        .iter()
        .map(|s| {
            format!(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {mirror} {s} main\n"
            )
        })
        .collect();
    let list = base.join("sources.list");
    let fresh = std::fs::read_to_string(&list).ok().as_deref() == Some(sources.as_str());
    std::fs::write(&list, &sources)?;
    let opts: Vec<String> = [
        format!("Dir::Etc::SourceList={}", list.display()),
        "Dir::Etc::SourceParts=/dev/null".into(),
        format!("Dir::State::Lists={}", base.join("lists").display()),
        format!("Dir::Cache={}", base.join("cache").display()),
        "Dir::Etc::Preferences=/dev/null".into(),
        // Downloads go into the cache, which apt's unprivileged user cannot write.
        "APT::Sandbox::User=root".into(),
        format!(
            "Dir::Etc::PreferencesParts={}",
            base.join("prefs").display()
        ),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_owned(), o])
    .collect();
    let stamp = base.join("updated");
    if !fresh || !stamp.is_file() {
        eprintln!(
            "[xtask] apt-get update (private lists for {})",
            suites.join(", ")
        );
        let st = Command::new("apt-get")
            .args(&opts)
            .args(["-q", "update"])
            .status()?;
        ensure!(st.success(), "apt-get update of the kernel suites failed");
        std::fs::write(&stamp, "")?;
    }
    Ok(opts)
}

/// The Debian mirror in this machine's apt sources (deb822 or one-line form).
fn system_mirror() -> Result<String> {
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "sources" || x == "list")
                && let Ok(t) = std::fs::read_to_string(&p)
            {
                texts.push(t);
            }
        }
    }
    for t in &texts {
        // deb822: a stanza with URIs and a Suites line naming a release without a suffix.
        for stanza in t.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(str::trim).map(str::to_owned))
            };
            if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:"))
                && suites
                    .split_whitespace()
                    .any(|s| !s.contains('-') && s != "sid")
                && !uris.contains("security")
            {
                return Ok(uris.split_whitespace().next().unwrap_or(&uris).to_owned());
            }
        }
        for l in t.lines() {
            let w: Vec<&str> = l
                .split_whitespace()
                .filter(|w| !w.starts_with('['))
                .collect();
            if w.len() >= 3 && w[0] == "deb" && !w[2].contains('-') && !w[1].contains("security") {
                return Ok(w[1].to_owned());
            }
        }
    }
    bail!("no Debian mirror in /etc/apt/sources.list(.d): the kernels come from Debian's archive")
}

/// The VM's /init: busybox, mounts, veth, then every step with markers on the console.
fn init_script(tests: &[String], form: Form) -> String {
    let mut s = String::from(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t bpf bpf /sys/fs/bpf; mount -t tmpfs tmp /tmp; mount -t tmpfs run /run
mkdir -p /run/netns
insmod /lib/modules/veth.ko
ip link set lo up
echo "VMTEST release $(uname -r)"
step() { echo "VMTEST step $1 $2"; }
cd /work
echo "VMTEST-BEGIN kernel"; ./conduit kernel --format json --verifier-log /tmp/verifier.log; rc=$?; echo "VMTEST-END kernel"
[ $rc -eq 0 ] || { echo "VMTEST-BEGIN verifier-log"; tail -c 20000 /tmp/verifier.log; echo "VMTEST-END verifier-log"; }
step kernel $rc
"#,
    );
    if form == Form::Verifier {
        s.push_str("echo VMTEST done\npoweroff -f\n");
        return s;
    }
    for (policy, pcap) in CAPTURES {
        let _ = writeln!(
            s,
            "echo \"VMTEST-BEGIN replay:{pcap}\"; ./conduit replay --format json captures/{policy} captures/{pcap}; rc=$?; echo; echo \"VMTEST-END replay:{pcap}\"; step replay:{pcap} $rc"
        );
    }
    let frames = if form == Form::Smoke { 2000 } else { 10000 };
    for t in tests {
        let _ = writeln!(
            s,
            "CONDUIT_DIFF_FRAMES={frames} ./{t} --test-threads=1 2>&1; step test:{t} $?"
        );
    }
    s.push_str(AGENT_STEP);
    s.push_str("echo VMTEST done\npoweroff -f\n");
    s
}

/// The VM's /init on a kernel Conduit does not support: `kernel`, `replay` and `run` each
/// exit 2 with one line on standard error that contains `text`.
fn refusal_script(text: &str) -> String {
    let head = init_script(&[], Form::Verifier);
    let head = &head[..head
        .find("cd /work\n")
        .map_or(head.len(), |i| i + "cd /work\n".len())];
    let mut s = head.to_owned();
    s.push_str("echo \"VMTEST-BEGIN kernel\"; ./conduit kernel --format json 2>/dev/null; echo \"VMTEST-END kernel\"\n");
    for (name, cmd) in [
        ("kernel", "./conduit kernel"),
        (
            "replay",
            "./conduit replay captures/corpus.yaml captures/corpus.pcap",
        ),
        (
            "run",
            "./conduit run --policy captures/agent.yaml --iface lo --pin-dir /sys/fs/bpf/vmtest",
        ),
    ] {
        let _ = writeln!(
            s,
            "{cmd} >/dev/null 2>/tmp/err; rc=$?; echo \"VMTEST-BEGIN refusal:{name}\"; cat /tmp/err; echo \"VMTEST-END refusal:{name}\"\n\
             [ $rc -eq 2 ] && [ \"$(grep -c . /tmp/err)\" -eq 1 ] && grep -qF '{text}' /tmp/err; step refused:{name} $?"
        );
    }
    s.push_str("echo VMTEST done\npoweroff -f\n");
    s
}

/// The agent attached to a veth pair with real traffic: ping passes (its conduit counts it),
/// a TCP connection the policy does not allow fails (a drop is counted), SIGTERM detaches.
const AGENT_STEP: &str = r#"
agent() {
  ip=/bin/ip  # iproute2's: busybox sh would run its own applet for a bare `ip`
  $ip netns add vma || return 1; $ip netns add vmb || return 1
  $ip link add vma0 netns vma type veth peer name vmb0 netns vmb || return 1
  $ip -n vma addr add 10.210.0.1/24 dev vma0; $ip -n vma link set vma0 up; $ip -n vma link set lo up
  $ip -n vmb addr add 10.210.0.2/24 dev vmb0; $ip -n vmb link set vmb0 up; $ip -n vmb link set lo up
  nsenter --net=/run/netns/vmb ./conduit run --policy captures/agent.yaml --iface vmb0 \
    --pin-dir /sys/fs/bpf/vmtest --state-dir /tmp/vmstate --audit-log /tmp/audit.jsonl &
  pid=$!
  i=0
  until nsenter --net=/run/netns/vmb wget -q -O /dev/null http://127.0.0.1:9642/healthz; do
    i=$((i+1)); [ $i -lt 120 ] || { echo "agent never became healthy"; return 1; }
    kill -0 $pid 2>/dev/null || { echo "agent exited"; return 1; }
    sleep 0.5
  done
  nsenter --net=/run/netns/vma /bin/ping -c 3 -W 2 10.210.0.2 || { echo "allowed ping failed"; return 1; }
  nsenter --net=/run/netns/vmb /bin/nc -l -p 7000 & lpid=$!
  sleep 0.5
  if nsenter --net=/run/netns/vma /bin/nc -z -w 2 10.210.0.2 7000; then echo "denied TCP went through"; kill $lpid; return 1; fi
  kill $lpid 2>/dev/null
  nsenter --net=/run/netns/vmb wget -q -O /tmp/metrics http://127.0.0.1:9642/metrics || return 1
  grep -E '^conduit_(packets_total|dropped_packets_total|interface_attached)' /tmp/metrics
  grep -q '^conduit_packets_total{conduit="ping-only"} [3-9]' /tmp/metrics || { echo "no ping counted"; return 1; }
  grep -q 'conduit_dropped_packets_total{.*reason="no_conduit".*} [1-9]' /tmp/metrics || { echo "no drop counted"; return 1; }
  grep -q '"reason":"no_conduit"' /tmp/audit.jsonl || { echo "no audit line"; return 1; }
  kill -TERM $pid; wait $pid || { echo "agent exit status $?"; return 1; }
  [ -z "$(ls /sys/fs/bpf/vmtest/links 2>/dev/null)" ] || { echo "links left behind"; return 1; }
  return 0
}
agent 2>&1; step agent $?
"#;

/// The policy of the agent step.
const AGENT_POLICY: &str = r#"version: 1
site: vm-test
defaults:
  log: deny
zones:
  - name: clients
    security_level: 1
    assets: [{ name: client, ip: 10.210.0.1 }]
  - name: servers
    security_level: 2
    assets: [{ name: server, ip: 10.210.0.2 }]
conduits:
  - name: ping-only
    from: clients
    to: servers
    rules: [{ proto: icmp, icmp_types: [echo-request] }]
"#;

/// Writes the initramfs (an uncompressed newc cpio, by busybox).
fn initramfs(
    root: &Path,
    kdir: &Path,
    bins: &Binaries,
    form: Form,
    refused: Option<&str>,
    image: &Path,
) -> Result<()> {
    let r = image.with_extension("d");
    let _ = std::fs::remove_dir_all(&r);
    for d in [
        "bin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "etc",
        "lib/modules",
        "work/captures",
    ] {
        std::fs::create_dir_all(r.join(d))?;
    }
    std::os::unix::fs::symlink("/run", r.join("var/run")).or_else(|_| {
        std::fs::create_dir_all(r.join("var"))?;
        std::os::unix::fs::symlink("/run", r.join("var/run"))
    })?;
    let busybox = which("busybox").context("busybox")?;
    std::fs::copy(&busybox, r.join("bin/busybox"))?;
    for tool in ["ip", "ping", "nc"] {
        let p = which(tool).with_context(|| tool.to_owned())?;
        copy_with_libs(&p, &r, &r.join("bin").join(tool), false)?;
    }
    copy_with_libs(&bins.conduit, &r, &r.join("work/conduit"), true)?;
    let mut names = Vec::new();
    for (name, p) in &bins.tests {
        copy_with_libs(p, &r, &r.join("work").join(name), true)?;
        names.push(name.clone());
    }
    names.sort();
    for (policy, pcap) in CAPTURES {
        for f in [policy, pcap] {
            std::fs::copy(
                root.join("tests/captures").join(f),
                r.join("work/captures").join(f),
            )?;
        }
    }
    std::fs::write(r.join("work/captures/agent.yaml"), AGENT_POLICY)?;
    std::fs::copy(kdir.join("veth.ko"), r.join("lib/modules/veth.ko"))?;
    let init = r.join("init");
    let script = match refused {
        None => init_script(&names, form),
        Some(text) => refusal_script(text),
    };
    std::fs::write(&init, script)?;
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let file = std::fs::File::create(image)?;
    let mut find = Command::new("find")
        .arg(".")
        .current_dir(&r)
        .stdout(Stdio::piped())
        .spawn()?;
    let st = Command::new(&busybox)
        .args(["cpio", "-o", "-H", "newc"])
        .current_dir(&r)
        .stdin(find.stdout.take().context("find's output")?)
        .stdout(file)
        .stderr(Stdio::null())
        .status()?;
    ensure!(
        find.wait()?.success() && st.success(),
        "writing the initramfs failed"
    );
    std::fs::remove_dir_all(&r)?;
    Ok(())
}

/// Copies a binary (stripped of debug info when `strip`) and the shared libraries it loads.
fn copy_with_libs(bin: &Path, root: &Path, dest: &Path, strip: bool) -> Result<()> {
    if strip {
        let st = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(dest)
            .arg(bin)
            .status()?;
        ensure!(st.success(), "strip {} failed", bin.display());
    } else {
        std::fs::copy(bin, dest)?;
    }
    let out = Command::new("ldd").arg(bin).output()?;
    for lib in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let target = root.join(lib.trim_start_matches('/'));
        if !target.exists() {
            std::fs::create_dir_all(target.parent().context("library directory")?)?;
            std::fs::copy(lib, &target)?;
        }
    }
    Ok(())
}

/// Boots the kernel with the image under qemu, reads the console, judges every step.
fn boot(
    k: &'static Kernel,
    kdir: &Path,
    image: &Path,
    out: &Path,
    smoke: bool,
    expected: &BTreeMap<String, serde_json::Value>,
) -> Result<Outcome> {
    let log = out.join(format!("{}.log", k.name));
    eprintln!(
        "[xtask] booting {} ({}={}) under qemu; console in {}",
        k.name,
        k.package,
        k.version,
        log.display()
    );
    let started = Instant::now();
    // Software emulation: KVM is not usable inside this kind of VM (nested), and TCG boots
    // Debian's kernel in a few seconds.
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
            "-m",
            "2048",
            "-smp",
            "2",
        ])
        .args([
            "-nographic",
            "-no-reboot",
            "-nodefaults",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(kdir.join("vmlinuz"))
        .arg("-initrd")
        .arg(image)
        .args(["-append", "console=ttyS0 quiet panic=-1 oops=panic"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let limit = Duration::from_secs(if smoke { 600 } else { 1800 });
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("[xtask] {}: no end after {limit:?}; stopped", k.name);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let seconds = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&std::fs::read(&log)?).replace('\r', "");
    let mut o = judge(
        k.name,
        &text,
        if k.refused.is_some() {
            &NOTHING
        } else {
            expected
        },
    );
    o.seconds = seconds;
    for (s, ok) in &o.steps {
        eprintln!(
            "[xtask] {} {}: {}",
            k.name,
            s,
            if *ok { "ok" } else { "FAILED" }
        );
    }
    Ok(o)
}

static NOTHING: BTreeMap<String, serde_json::Value> = BTreeMap::new();

/// The steps a console log reports, with replays compared to the host's and the budget.
pub fn judge(
    kernel: &'static str,
    text: &str,
    expected: &BTreeMap<String, serde_json::Value>,
) -> Outcome {
    let block = |name: &str| -> Option<&str> {
        let begin = format!("VMTEST-BEGIN {name}\n");
        let end = format!("VMTEST-END {name}");
        let start = text.find(&begin)? + begin.len();
        let len = text[start..].find(&end)?;
        Some(&text[start..start + len])
    };
    let release = text
        .lines()
        .find_map(|l| l.split_once("VMTEST release ").map(|(_, r)| r))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let mut steps: Vec<(String, bool)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("VMTEST step "))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(name, rc)| (name.to_owned(), rc.trim() == "0"))
        .collect();
    for (pcap, want) in expected {
        let name = format!("replay:{pcap}");
        let got = block(&name).and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok());
        let same = got.as_ref() == Some(want);
        if !same && let Some(got) = &got {
            for (g, w) in got["frames"]
                .as_array()
                .into_iter()
                .flatten()
                .zip(want["frames"].as_array().into_iter().flatten())
            {
                if g != w {
                    eprintln!("[xtask] {kernel} {pcap}: kernel says {g}, host says {w}");
                }
            }
        }
        steps.push((format!("{name} same verdicts as the host"), same));
    }
    if !text.contains("VMTEST done") {
        steps.push(("the VM ran to the end".into(), false));
    }
    let budget = block("kernel").and_then(|b| serde_json::from_str(b).ok());
    Outcome {
        kernel,
        release,
        steps,
        budget,
        seconds: 0.0,
    }
}

/// The verifier's figures per kernel, as Markdown.
fn budget_report(outcomes: &[Outcome]) -> String {
    let mut s = String::from(
        "## Verifier budget per kernel (`cargo xtask vm-test`)\n\nThe XDP program as each kernel's verifier takes it (`conduit kernel`; in qemu with software emulation for the Debian kernels, so their load times are several times the host's: compare them with each other; `host` is the development machine's own kernel). The stack is read from the object: every subprogram's frame and the deepest call chain, rounded as 6.1 counts it (limit 512 bytes).\n\n| kernel | release | loads | instructions processed (limit 1,000,000) | with learning (`run --learn-dir`) | load time (TCG) | JIT'ed bytes | deepest stack chain (6.1 count) |\n| --- | --- | --- | ---: | ---: | ---: | ---: | --- |\n",
    );
    let mut frames = String::new();
    for o in outcomes {
        let b = o.budget.as_ref();
        let p = b.map(|b| &b["program"]);
        let learning = b.map(|b| &b["learning"]);
        let st = b.map(|b| &b["stack"]);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            o.kernel,
            o.release,
            p.and_then(|p| p["loaded"].as_bool())
                .map_or("?", |l| if l { "yes" } else { "**no**" }),
            p.and_then(|p| p["verified_insns"].as_u64())
                .map_or("-".into(), |n| n.to_string()),
            learning
                .and_then(|p| p["verified_insns"].as_u64())
                .map_or("-".into(), |n| n.to_string()),
            p.and_then(|p| p["load_ms"].as_f64())
                .map_or("-".into(), |n| format!("{n:.0} ms")),
            p.and_then(|p| p["jited_bytes"].as_u64())
                .map_or("-".into(), |n| n.to_string()),
            st.map_or("-".into(), |st| format!(
                "{} bytes ({})",
                st["worst_bytes_rounded"],
                st["worst_chain"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(" → ")
            )),
        );
        if frames.is_empty()
            && let Some(list) = st.and_then(|st| st["frames"].as_array())
        {
            frames.push_str("\nStack frame of every subprogram (the same object on every kernel):\n\n| function | bytes |\n| --- | ---: |\n");
            for f in list {
                let _ = writeln!(
                    frames,
                    "| {} | {} |",
                    f["name"].as_str().unwrap_or("?"),
                    f["stack"]
                );
            }
        }
    }
    s.push_str(&frames);
    let _ = writeln!(
        s,
        "\nWall time per VM (boot and every step): {}.",
        outcomes
            .iter()
            .filter(|o| o.seconds > 0.0)
            .map(|o| format!("{} {:.0} s", o.kernel, o.seconds))
            .collect::<Vec<_>>()
            .join(", ")
    );
    s
}

/// Replaces the verifier section of BENCHMARKS.md (between its markers) with `report`.
pub fn splice_benchmarks(md: &Path, report: &str) -> Result<()> {
    let text = std::fs::read_to_string(md).unwrap_or_default();
    let section = format!("{BEGIN}\n{report}{END}\n");
    let new = match (text.find(BEGIN), text.find(END)) {
        (Some(a), Some(b)) if b > a => {
            format!(
                "{}{section}{}",
                &text[..a],
                text[b + END.len()..].trim_start_matches('\n')
            )
        }
        _ => format!("{}\n{section}", text.trim_end()),
    };
    std::fs::write(md, new)?;
    Ok(())
}

/// The markers around the verifier section in BENCHMARKS.md (kept by `cargo xtask bench`).
pub const BEGIN: &str = "<!-- vm-test:begin -->";
pub const END: &str = "<!-- vm-test:end -->";

/// The verifier section of an existing BENCHMARKS.md, markers included, or "".
pub fn kept_section(md: &Path) -> String {
    let text = std::fs::read_to_string(md).unwrap_or_default();
    match (text.find(BEGIN), text.find(END)) {
        (Some(a), Some(b)) if b > a => format!("{}\n", &text[a..b + END.len()]),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_console_log_is_judged_step_by_step() {
        let want: serde_json::Value =
            serde_json::json!({"frames": [{"frame": 1, "verdict": "allow"}]});
        let expected = BTreeMap::from([("c.pcap".to_string(), want.clone())]);
        let log = format!(
            "noise\u{1b}[2JVMTEST release 6.1.0-50-cloud-amd64\nVMTEST-BEGIN kernel\n{{\"program\": {{\"loaded\": true}}}}\nVMTEST-END kernel\nVMTEST step kernel 0\nVMTEST-BEGIN replay:c.pcap\n{want}\n\nVMTEST-END replay:c.pcap\nVMTEST step replay:c.pcap 0\nVMTEST step test:bypass 101\nVMTEST done\n"
        );
        let o = judge("6.1", &log, &expected);
        assert_eq!(o.release, "6.1.0-50-cloud-amd64");
        assert_eq!(
            o.steps,
            vec![
                ("kernel".to_string(), true),
                ("replay:c.pcap".to_string(), true),
                ("test:bypass".to_string(), false),
                ("replay:c.pcap same verdicts as the host".to_string(), true),
            ]
        );
        assert!(o.budget.is_some());
        // Other verdicts, and a VM that died half-way, fail.
        let other = log
            .replace("\"allow\"", "\"deny\"")
            .replace("VMTEST done", "");
        let o = judge("6.1", &other, &expected);
        assert!(
            o.steps.iter().filter(|(_, ok)| !ok).count() == 3,
            "{:?}",
            o.steps
        );
    }

    #[test]
    fn the_verifier_section_is_replaced_in_place() {
        let dir = std::env::temp_dir().join(format!("xtask-splice-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let md = dir.join("B.md");
        std::fs::write(&md, "# Benchmarks\n\nbody\n").unwrap();
        splice_benchmarks(&md, "first\n").unwrap();
        splice_benchmarks(&md, "second\n").unwrap();
        let text = std::fs::read_to_string(&md).unwrap();
        assert_eq!(text.matches(BEGIN).count(), 1, "{text}");
        assert!(text.contains("second") && !text.contains("first"), "{text}");
        assert!(text.starts_with("# Benchmarks\n\nbody\n"), "{text}");
        assert_eq!(kept_section(&md), format!("{BEGIN}\nsecond\n{END}\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
