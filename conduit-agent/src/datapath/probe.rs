//! What the running kernel offers the XDP program, asked of the kernel itself (aya's feature
//! probes: a map of each type, a two-instruction program calling each helper), so that `run`
//! and `replay` can say in one line what is missing and on which kernel, instead of leaving
//! the user with a verifier dump.
use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported},
};

/// The oldest kernel release the program can run on: the newest feature in [`FEATURES`].
pub const MIN_KERNEL: (u32, u32) = (5, 11);

/// The kernels the program is tested on (`cargo xtask vm-test`, and the development kernel).
pub const TESTED: &str = "Debian 12's 6.1 (generic and PREEMPT_RT), 6.12, 6.18";

/// What a feature is needed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Need {
    /// Every command that loads the program (`run`, `replay`).
    Program,
    /// `conduit run` only (attach and pin).
    Agent,
    /// Used where present, with a slower fallback.
    Optional,
}

/// One thing the program or the agent uses, the release that brought it, and how to ask.
pub struct Feature {
    pub name: &'static str,
    pub since: (u32, u32),
    pub need: Need,
    ask: Ask,
}

enum Ask {
    Program(ProgramType),
    Map(MapType),
    Helper(BpfHelper),
    /// Nothing to ask without side effects: the release number decides.
    Release,
}

/// Everything the program and the agent use, oldest first.
pub const FEATURES: &[Feature] = &[
    Feature {
        name: "XDP programs",
        since: (4, 8),
        need: Need::Program,
        ask: Ask::Program(ProgramType::Xdp),
    },
    Feature {
        name: "per-CPU hash maps",
        since: (4, 6),
        need: Need::Program,
        ask: Ask::Map(MapType::PerCpuHash),
    },
    Feature {
        name: "LRU hash maps (flow table)",
        since: (4, 10),
        need: Need::Program,
        ask: Ask::Map(MapType::LruHash),
    },
    Feature {
        name: "LPM trie maps (CIDR assets, conduits)",
        since: (4, 11),
        need: Need::Program,
        ask: Ask::Map(MapType::LpmTrie),
    },
    Feature {
        name: "BPF_PROG_TEST_RUN for XDP (replay)",
        since: (4, 12),
        need: Need::Program,
        ask: Ask::Release,
    },
    Feature {
        name: "batched map updates (BPF_MAP_UPDATE_BATCH)",
        since: (5, 6),
        need: Need::Optional,
        ask: Ask::Release,
    },
    Feature {
        name: "BPF ring buffer (audit events)",
        since: (5, 8),
        need: Need::Program,
        ask: Ask::Map(MapType::RingBuf),
    },
    Feature {
        name: "XDP links (bpf_link: pinned attachment, adoption without a gap)",
        since: (5, 9),
        need: Need::Agent,
        ask: Ask::Release,
    },
    Feature {
        name: "helper bpf_ktime_get_coarse_ns (flow clock)",
        since: (5, 11),
        need: Need::Program,
        ask: Ask::Helper(BpfHelper::BPF_FUNC_ktime_get_coarse_ns),
    },
];

/// The answer for one feature.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Found {
    pub feature: &'static str,
    pub since: String,
    pub need: Need,
    /// `None` when the kernel could not be asked (no privilege): the release decides.
    pub present: Option<bool>,
}

/// What this kernel offers.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KernelReport {
    /// `uname -r`.
    pub release: String,
    pub features: Vec<Found>,
}

/// The release's major and minor numbers (`6.1.0-50-cloud-amd64` → 6.1).
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// This kernel's release, as `uname -r` prints it.
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Asks the running kernel about every feature.
pub fn probe() -> KernelReport {
    let release = release();
    let version = parse_release(&release);
    let features = FEATURES
        .iter()
        .map(|f| {
            let asked = match &f.ask {
                Ask::Program(t) => is_program_supported(*t).ok(),
                Ask::Map(t) => is_map_supported(*t).ok(),
                Ask::Helper(h) => is_helper_supported(ProgramType::Xdp, *h).ok(),
                Ask::Release => None,
            };
            let present = asked.or_else(|| version.map(|v| v >= f.since));
            Found {
                feature: f.name,
                since: format!("{}.{}", f.since.0, f.since.1),
                need: f.need,
                present,
            }
        })
        .collect();
    KernelReport { release, features }
}

impl KernelReport {
    /// One line saying what is missing for `need` (the agent needs the program's features
    /// too), or `None` when nothing is.
    pub fn missing(&self, agent: bool) -> Option<String> {
        let missing: Vec<String> = self
            .features
            .iter()
            .filter(|f| f.present == Some(false))
            .filter(|f| f.need == Need::Program || (agent && f.need == Need::Agent))
            .map(|f| format!("{} needs {}", f.feature, f.since))
            .collect();
        if missing.is_empty() {
            return None;
        }
        Some(format!(
            "kernel {}: {}; upgrade the kernel (Conduit needs {}.{} or later; tested on {TESTED})",
            self.release,
            missing.join(", "),
            MIN_KERNEL.0,
            MIN_KERNEL.1
        ))
    }
}

/// The line of a verifier log that says why it refused the program: the last one before the
/// statistics it ends with (`verification time`, `stack depth`, `processed N insns`).
pub fn verifier_reason(log: &str) -> Option<&str> {
    log.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .rfind(|l| {
            !(l.starts_with("verification time")
                || l.starts_with("stack depth")
                || l.starts_with("processed ")
                || l.starts_with("-- END PROG LOAD LOG --"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_as_distributions_write_them() {
        assert_eq!(parse_release("6.1.0-50-cloud-amd64"), Some((6, 1)));
        assert_eq!(parse_release("6.12.117+deb13-cloud-amd64"), Some((6, 12)));
        assert_eq!(parse_release("5.10.0-28-amd64"), Some((5, 10)));
        assert_eq!(parse_release("6.18.44-fc-v1045"), Some((6, 18)));
        assert_eq!(parse_release("garbage"), None);
    }

    #[test]
    fn the_minimum_is_the_newest_feature() {
        let newest = FEATURES
            .iter()
            .filter(|f| f.need != Need::Optional)
            .map(|f| f.since)
            .max();
        assert_eq!(newest, Some(MIN_KERNEL));
    }

    #[test]
    fn a_missing_feature_is_one_line_naming_the_kernel_and_the_release() {
        let r = KernelReport {
            release: "5.10.0-28-amd64".into(),
            features: vec![
                Found {
                    feature: "helper bpf_ktime_get_coarse_ns (flow clock)",
                    since: "5.11".into(),
                    need: Need::Program,
                    present: Some(false),
                },
                Found {
                    feature: "XDP links",
                    since: "5.9".into(),
                    need: Need::Agent,
                    present: Some(false),
                },
                Found {
                    feature: "batched map updates",
                    since: "5.6".into(),
                    need: Need::Optional,
                    present: Some(false),
                },
            ],
        };
        let replay = r.missing(false).unwrap();
        assert_eq!(
            replay,
            format!(
                "kernel 5.10.0-28-amd64: helper bpf_ktime_get_coarse_ns (flow clock) needs 5.11; \
                 upgrade the kernel (Conduit needs 5.11 or later; tested on {TESTED})"
            )
        );
        assert!(!replay.contains('\n'));
        let run = r.missing(true).unwrap();
        assert!(run.contains("XDP links needs 5.9"), "{run}");
        assert!(!run.contains("batched"), "{run}");
    }

    #[test]
    fn the_reason_is_the_last_line_before_the_statistics() {
        let log = "func#0 @0\n0: R1=ctx() R10=fp0\ncombined stack size of 2 calls is 544. Too large\n\
                   verification time 4585440 usec\nstack depth 368+0+0+136\n\
                   processed 78486 insns (limit 1000000) max_states_per_insn 19\n";
        assert_eq!(
            verifier_reason(log),
            Some("combined stack size of 2 calls is 544. Too large")
        );
        assert_eq!(verifier_reason(""), None);
    }
}
