//! Where a program's time goes: `perf record` (cpu-clock samples with call chains) on the
//! calling thread while it runs a workload, then every sample taken inside a BPF program
//! sorted by the program's function (the entry point or one of its subprograms) and by what
//! the innermost frame is (the program's own code, a hash map lookup, an LPM trie lookup, the
//! clock, ...). The per-packet benchmark uses it to say why a case costs what it does.
//!
//! perf is Debian's `linux-perf` (bootstrap installs it). Samples of the test-run harness
//! itself (outside any BPF program) are counted apart: the empty program's floor covers them.
use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// What the innermost frame of a sample is.
pub fn category(sym: &str) -> &'static str {
    let s = sym.split('+').next().unwrap_or(sym);
    if s.starts_with("bpf_prog_") {
        "own code"
    } else if s.contains("trie_") {
        "LPM trie lookup"
    } else if s.contains("htab")
        || s.contains("lookup_nulls_elem")
        || s.contains("jhash")
        || s == "memcmp"
        || s.contains("lru")
    {
        "hash map lookup/update"
    } else if s.contains("ktime") || s.contains("timespec") || s.contains("clock") {
        "clock"
    } else if s.contains("ringbuf") {
        "audit event ring"
    } else if s.contains("fib") || s.contains("neigh") {
        "FIB lookup"
    } else if s.contains("return_thunk") || s.contains("srso") || s.contains("retpoline") {
        "return/indirect-call thunks"
    } else if s.contains("percpu") || s.contains("array_map") {
        "array lookup"
    } else {
        "other kernel code"
    }
}

/// The program function a frame's symbol names: the part after `bpf_prog_<tag>_`.
pub fn function(sym: &str) -> Option<&str> {
    let s = sym.split('+').next().unwrap_or(sym);
    let rest = s.strip_prefix("bpf_prog_")?;
    // A JIT'ed program's symbol: bpf_prog_<tag, 16 hex digits>_<name>.
    let (tag, name) = rest.split_once('_')?;
    (tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit())).then_some(name)
}

/// Samples of one workload: (program function, category) → count.
#[derive(Debug, Default)]
pub struct Profile {
    pub shares: BTreeMap<(String, &'static str), u64>,
    /// Samples inside a BPF program.
    pub inside: u64,
    /// Samples of the thread outside any BPF program (the test-run harness, the syscall).
    pub outside: u64,
}

impl Profile {
    /// The share (0..1) of the samples inside the program that fell in `function` with an
    /// innermost frame of `category` (one of [`category`]'s answers).
    pub fn share(&self, function: &str, category: &'static str) -> f64 {
        let n = self
            .shares
            .get(&(function.to_owned(), category))
            .copied()
            .unwrap_or(0);
        n as f64 / self.inside.max(1) as f64
    }

    /// Reads `perf script` output (fields ip and sym, call chains): samples are blocks of
    /// frames, innermost first, separated by blank lines.
    pub fn parse(script: &str) -> Profile {
        let mut p = Profile::default();
        for block in script.split("\n\n") {
            let syms: Vec<&str> = block
                .lines()
                .filter_map(|l| {
                    let l = l.trim();
                    let (_ip, sym) = l.split_once(char::is_whitespace)?;
                    Some(sym.trim())
                })
                .collect();
            let Some(leaf) = syms.first() else { continue };
            match syms.iter().find_map(|s| function(s)) {
                Some(f) => {
                    p.inside += 1;
                    *p.shares.entry((f.to_owned(), category(leaf))).or_default() += 1;
                }
                None => p.outside += 1,
            }
        }
        p
    }
}

/// A `perf record` of this thread; stopped (SIGINT, to the child this started, by its PID)
/// and read by [`Recording::finish`].
struct Recording {
    child: Child,
    out: PathBuf,
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.out);
    }
}

/// Runs `work` repeatedly for about `secs` seconds under `perf record` of this thread and
/// returns the profile; `Err` says why perf could not record (not installed, not allowed).
pub fn profile(secs: f64, mut work: impl FnMut()) -> Result<Profile, String> {
    let out = std::env::temp_dir().join(format!(
        "conduit-profile-{}-{}.data",
        std::process::id(),
        crate::unique_name("p")
    ));
    let tid = rustix::thread::gettid().as_raw_nonzero().get();
    let child = Command::new("perf")
        .args([
            "record",
            "-q",
            "-e",
            "cpu-clock",
            "-F",
            "20000",
            "-g",
            "--tid",
        ])
        .arg(tid.to_string())
        .arg("-o")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("perf (Debian's linux-perf) could not be started: {e}"))?;
    let mut rec = Recording { child, out };
    // perf writes its file's header once it records.
    let ready = Instant::now();
    while std::fs::metadata(&rec.out).map_or(true, |m| m.len() == 0) {
        if ready.elapsed() > Duration::from_secs(10) {
            return Err("perf record wrote nothing within 10 s".into());
        }
        if let Ok(Some(st)) = rec.child.try_wait() {
            return Err(format!("perf record ended at once ({st})"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < secs {
        work();
    }
    // SIGINT, to the perf this started: it writes its file and exits.
    crate::signal(rec.child.id(), libc::SIGINT);
    let st = rec.child.wait().map_err(|e| e.to_string())?;
    if !st.success() && st.code() != Some(130) && st.code().is_some() {
        let mut err = String::new();
        if let Some(mut e) = rec.child.stderr.take() {
            use std::io::Read as _;
            let _ = e.read_to_string(&mut err);
        }
        return Err(format!("perf record failed ({st}): {}", err.trim()));
    }
    let script = Command::new("perf")
        .args(["script", "-F", "ip,sym", "-i"])
        .arg(&rec.out)
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("perf script: {e}"))?;
    if !script.status.success() {
        return Err(format!("perf script failed ({})", script.status));
    }
    Ok(Profile::parse(&String::from_utf8_lossy(&script.stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_sorted_by_function_and_what_the_leaf_is() {
        let script = "\
\tffffffffc0026e9e bpf_prog_d082e669bcdb1a8f_conduit_xdp+0x3ca
\tffffffff81000000 bpf_test_run+0x10

\tffffffff81234567 htab_map_hash+0x20
\tffffffff81234000 __htab_map_lookup_elem+0x10
\tffffffffc0027000 bpf_prog_4d09dad0d69c4b26_fast+0x40
\tffffffffc0026e00 bpf_prog_d082e669bcdb1a8f_conduit_xdp+0x231

\tffffffff81000000 bpf_test_run+0x10
\tffffffff81000100 bpf_prog_test_run_xdp+0x10
";
        let p = Profile::parse(script);
        assert_eq!((p.inside, p.outside), (2, 1));
        assert_eq!(p.share("conduit_xdp", "own code"), 0.5);
        assert_eq!(p.share("fast", "hash map lookup/update"), 0.5);
        assert_eq!(p.share("fast", "own code"), 0.0);
        assert_eq!(category("trie_lookup_elem+0x5"), "LPM trie lookup");
        assert_eq!(category("bpf_ktime_get_coarse_ns"), "clock");
        assert_eq!(function("bpf_prog_648d6ead272565fd_parse"), Some("parse"));
        assert_eq!(function("htab_map_hash"), None);
        assert_eq!(function("bpf_prog_test_run_xdp"), None);
    }
}
