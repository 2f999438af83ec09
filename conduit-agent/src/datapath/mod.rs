//! The kernel side as seen from userspace: load the embedded XDP object, attach it, write the
//! compiled policy into its maps, read its counters.
mod apply;
pub mod budget;
mod grants;
mod learned;
pub mod probe;
pub(crate) mod sys;
pub use apply::{ApplyReport, LpmKey, MapSync};
use aya::{
    Ebpf,
    maps::PerCpuArray,
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use conduit_common::{Counter, MAP_TOTALS, PROGRAM_NAME, Verdict};
pub use learned::Learned;

/// The XDP object built by `build.rs`, embedded in the binary.
pub fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/conduit"))
}

/// The benchmarks' object (the program plus `conduit_pass`, `conduit_bench_vary(_pass)` and
/// `CDT_BENCH`), which `build.rs` leaves next to the embedded one. Read from there when a
/// benchmark asks for it, so that the shipped binary does not carry it.
fn bench_object() -> Result<Aligned, DatapathError> {
    const PATH: &str = env!("CONDUIT_BENCH_OBJECT");
    let bytes = std::fs::read(PATH).map_err(|e| DatapathError::BenchObject(PATH, e))?;
    Ok(Aligned::of(&bytes))
}

/// Bytes at an 8-byte aligned address, as the ELF parser needs them.
struct Aligned {
    buf: Vec<u8>,
    at: usize,
    len: usize,
}

impl Aligned {
    fn of(bytes: &[u8]) -> Self {
        let mut buf = vec![0u8; bytes.len() + 8];
        let at = buf.as_ptr().align_offset(8).min(8);
        buf[at..at + bytes.len()].copy_from_slice(bytes);
        Aligned {
            buf,
            at,
            len: bytes.len(),
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.at..self.at + self.len]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "this conduit binary was built without its XDP program (bpf-linker was missing); \
         run ./xtask/bootstrap.sh and rebuild"
    )]
    NoObject,
    #[error(
        "the benchmarks' XDP object {0} cannot be read ({1}): it is built with conduit by cargo, for the benchmarks only"
    )]
    BenchObject(&'static str, #[source] std::io::Error),
    #[error("loading the XDP program into the kernel failed: {0} (are you root, with bpffs?)")]
    Load(#[source] aya::EbpfError),
    #[error(
        "the verifier of kernel {release} refused the XDP program: {reason} (the full log: \
         --verifier-log FILE; `conduit kernel` says what this kernel offers)"
    )]
    Verifier {
        release: String,
        /// The line of the log that says why.
        reason: String,
        /// The whole verifier log.
        log: String,
    },
    #[error("the kernel rejected the XDP program: {0}")]
    Program(#[source] aya::programs::ProgramError),
    #[error("map {0} is missing from the XDP object (ABI mismatch: rebuild conduit)")]
    MissingMap(&'static str),
    #[error("reading map {0}: {1}")]
    Map(&'static str, #[source] aya::maps::MapError),
    #[error("map {map}: {what}: {source}")]
    Sync {
        map: &'static str,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "map {map}: {source} (ABI mismatch: rebuild conduit; pins of an older conduit go with \
         `conduit detach`)"
    )]
    Layout {
        map: &'static str,
        #[source]
        source: sys::Mismatch,
    },
    #[error("map {0} is neither a hash map nor an LPM trie (ABI mismatch: rebuild conduit)")]
    MapType(&'static str),
    #[error(
        "internal error: policy compiled for slot {compiled}, but slot {expected} is the free one"
    )]
    WrongSlot { compiled: u8, expected: u8 },
    #[error("cannot create the pin directory {0}: {1} (is bpffs mounted on /sys/fs/bpf?)")]
    PinDir(std::path::PathBuf, #[source] std::io::Error),
    #[error("{0:?} is not an interface name (it contains a NUL byte)")]
    BadInterfaceName(String),
    #[error("attaching to interface {iface:?} ({mode}): {source}")]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
}

/// How the program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) XDP where the driver supports it, generic (skb) otherwise.
    Auto,
    /// Driver mode only; fails where the driver has no XDP support.
    Native,
    /// Generic mode (`skb`): works on every interface, slower.
    Skb,
}

/// The loopback interface's ifindex in every network namespace (the kernel's
/// `LOOPBACK_IFINDEX`).
pub const LOOPBACK_IFINDEX: u32 = 1;

/// A loaded program and its maps.
pub struct Datapath {
    /// The loaded object; `None` for [`Datapath::open_pins`].
    pub(crate) ebpf: Option<Ebpf>,
    /// Maps opened from pins without a program (`conduit status`).
    pinned: std::collections::HashMap<&'static str, aya::maps::Map>,
    /// What this process knows the policy maps hold (see `apply.rs`).
    written: apply::Written,
}

impl DatapathError {
    /// The verifier's whole log, when the verifier refused the program.
    pub fn verifier_log(&self) -> Option<&str> {
        match self {
            Self::Verifier { log, .. } => Some(log),
            _ => None,
        }
    }

    /// The message, after writing the verifier's log (if the verifier refused the program)
    /// to `path`: the message then says where it is.
    pub fn saving_log(&self, path: Option<&std::path::Path>) -> String {
        match (self.verifier_log(), path) {
            (Some(log), Some(path)) => match std::fs::write(path, log) {
                Ok(()) => format!("{self}; the verifier's log is in {}", path.display()),
                Err(w) => format!("{self}; writing its log to {}: {w}", path.display()),
            },
            _ => self.to_string(),
        }
    }
}

/// How the program is loaded (its read-only globals).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Record every decision in `CDT_TRACE` (tests and `replay`).
    pub trace: bool,
    /// Record what the datapath learns for `conduit discover` (`run --learn-dir`).
    pub learn: bool,
    /// Load the benchmarks' object instead of the production one: the same program, plus
    /// the benchmark programs ([`Datapath::floor_program`], [`Datapath::bench_program`]).
    pub bench: bool,
}

impl Datapath {
    /// Loads the embedded object and the program into the kernel (nothing is attached yet).
    pub fn load() -> Result<Self, DatapathError> {
        Self::load_options(LoadOptions::default(), None)
    }

    /// Like [`Datapath::load`]; with `trace`, the program records every decision in
    /// `CDT_TRACE` (for tests and `replay`).
    pub fn load_with(trace: bool) -> Result<Self, DatapathError> {
        Self::load_options(
            LoadOptions {
                trace,
                ..Default::default()
            },
            None,
        )
    }

    /// Loads the program with its maps pinned under `pin_dir/maps/`: maps pinned there by an
    /// earlier agent are adopted (policy, flows and counters continue), missing ones are
    /// created and pinned.
    pub fn load_pinned(pin_dir: &std::path::Path) -> Result<Self, DatapathError> {
        Self::load_options(LoadOptions::default(), Some(pin_dir))
    }

    /// The program loaded as `options` say, its maps pinned under `pin_dir` if given (see
    /// [`Datapath::load_pinned`]).
    pub fn load_options(
        options: LoadOptions,
        pin_dir: Option<&std::path::Path>,
    ) -> Result<Self, DatapathError> {
        let bench = if options.bench {
            Some(bench_object()?)
        } else {
            None
        };
        let obj: &[u8] = match &bench {
            Some(b) => b.bytes(),
            None => object(),
        };
        if obj.is_empty() {
            return Err(DatapathError::NoObject);
        }
        let (trace, learn) = (u32::from(options.trace), u32::from(options.learn));
        let mut loader = aya::EbpfLoader::new();
        loader.override_global(conduit_common::GLOBAL_TRACE, &trace, true);
        loader.override_global(conduit_common::learn::GLOBAL_LEARN, &learn, true);
        // Maps created by this load start empty; adopted pins hold what an earlier agent
        // wrote, which the first apply lists.
        let mut fresh: Vec<&'static str> = conduit_common::PINNED_MAPS.to_vec();
        if let Some(dir) = pin_dir {
            let maps = dir.join("maps");
            std::fs::create_dir_all(&maps).map_err(|e| DatapathError::PinDir(maps.clone(), e))?;
            for name in conduit_common::PINNED_MAPS {
                loader.map_pin_path(name, maps.join(name));
            }
            fresh.retain(|name| !maps.join(name).exists());
        }
        let mut ebpf = loader.load(obj).map_err(DatapathError::Load)?;
        let prog: &mut Xdp = program(&mut ebpf)?;
        prog.load().map_err(|e| match e {
            aya::programs::ProgramError::LoadError {
                io_error,
                verifier_log,
            } => {
                let log = verifier_log.to_string();
                DatapathError::Verifier {
                    release: probe::release(),
                    reason: probe::verifier_reason(&log)
                        .map_or_else(|| io_error.to_string(), str::to_owned),
                    log,
                }
            }
            e => DatapathError::Program(e),
        })?;
        let mut dp = Self {
            ebpf: Some(ebpf),
            pinned: Default::default(),
            written: apply::Written::new(&fresh),
        };
        if pin_dir.is_none() {
            // Not an agent's datapath: `replay`, tests and benchmarks, which run frames
            // through BPF_PROG_TEST_RUN, where they arrive on the loopback interface. There
            // is no real ingress interface to check them against.
            dp.set_ingress(
                LOOPBACK_IFINDEX,
                &conduit_common::IngressCfg {
                    flags: conduit_common::INGRESS_UNCHECKED,
                    ..Default::default()
                },
            )?;
        }
        Ok(dp)
    }

    /// Opens the maps an agent pinned under `pin_dir/maps/`, read-only use, without loading
    /// a program (for `conduit status`).
    pub fn open_pins(pin_dir: &std::path::Path) -> Result<Self, DatapathError> {
        let mut pinned = std::collections::HashMap::new();
        for name in conduit_common::PINNED_MAPS {
            let path = pin_dir.join("maps").join(name);
            // A map that an older agent did not have (its pins, adopted and kept): what asks
            // for it gets `MissingMap`, the rest works.
            if *name == conduit_common::MAP_GRANTS && !path.exists() {
                continue;
            }
            let md =
                aya::maps::MapData::from_pin(&path).map_err(|e| DatapathError::Map(name, e))?;
            let m = aya::maps::Map::from_map_data(md).map_err(|e| DatapathError::Map(name, e))?;
            pinned.insert(*name, m);
        }
        Ok(Self {
            ebpf: None,
            pinned,
            written: apply::Written::new(&[]),
        })
    }

    /// A map by name: the loaded object's, else one opened from its pin.
    pub(crate) fn map(&self, name: &'static str) -> Result<&aya::maps::Map, DatapathError> {
        self.ebpf
            .as_ref()
            .and_then(|e| e.map(name))
            .or_else(|| self.pinned.get(name))
            .ok_or(DatapathError::MissingMap(name))
    }

    /// The empty XDP_PASS program of the benchmarks' object (`conduit_pass`, loaded with
    /// [`LoadOptions::bench`]), loaded on first use: the benchmarks' floor.
    pub fn floor_program(&mut self) -> Result<&mut Xdp, DatapathError> {
        self.bench_program("conduit_pass")
    }

    /// A benchmark program of the benchmarks' object (`conduit_pass`, `conduit_bench_vary`,
    /// `conduit_bench_vary_pass`; loaded with [`LoadOptions::bench`]), loaded on first use.
    /// Never attached.
    pub fn bench_program(&mut self, name: &'static str) -> Result<&mut Xdp, DatapathError> {
        let ebpf = self.ebpf.as_mut().ok_or(DatapathError::MissingMap(name))?;
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or(DatapathError::MissingMap(name))?
            .try_into()
            .map_err(DatapathError::Program)?;
        if prog.fd().is_err() {
            prog.load().map_err(DatapathError::Program)?;
        }
        Ok(prog)
    }

    /// Benchmarks: makes `conduit_bench_vary` cycle through `sources` (a power of two)
    /// source addresses, starting over from the first.
    pub fn set_bench_sources(&mut self, sources: u32) -> Result<(), DatapathError> {
        const MAP: &str = "CDT_BENCH";
        let m = self
            .ebpf
            .as_mut()
            .and_then(|e| e.map_mut(MAP))
            .ok_or(DatapathError::MissingMap(MAP))?;
        let mut a: aya::maps::Array<&mut aya::maps::MapData, u32> =
            aya::maps::Array::try_from(m).map_err(|e| DatapathError::Map(MAP, e))?;
        a.set(0, &sources, 0)
            .map_err(|e| DatapathError::Map(MAP, e))?;
        a.set(1, &0, 0).map_err(|e| DatapathError::Map(MAP, e))
    }

    /// The loaded XDP program, for attaching or for BPF_PROG_TEST_RUN.
    pub fn program(&mut self) -> Result<&mut Xdp, DatapathError> {
        program(
            self.ebpf
                .as_mut()
                .ok_or(DatapathError::MissingMap(PROGRAM_NAME))?,
        )
    }

    /// Attaches to `iface` (in the caller's network namespace). Returns the mode used.
    pub fn attach(
        &mut self,
        iface: &str,
        mode: AttachMode,
    ) -> Result<(XdpLinkId, &'static str), DatapathError> {
        let name = std::ffi::CString::new(iface)
            .map_err(|_| DatapathError::BadInterfaceName(iface.to_owned()))?;
        let prog = self.program()?;
        let try_mode = |prog: &mut Xdp, flags, mode_name| {
            prog.attach(name.as_c_str(), flags)
                .map(|id| (id, mode_name))
                .map_err(|source| DatapathError::Attach {
                    iface: iface.to_owned(),
                    mode: mode_name,
                    source,
                })
        };
        match mode {
            AttachMode::Native => try_mode(prog, XdpMode::Driver, "native"),
            AttachMode::Skb => try_mode(prog, XdpMode::Skb, "skb"),
            AttachMode::Auto => try_mode(prog, XdpMode::Driver, "native")
                .or_else(|_| try_mode(prog, XdpMode::Skb, "skb")),
        }
    }

    /// The decision of the last run (needs [`Datapath::load_with`]`(true)`).
    pub fn last_trace(&self) -> Result<conduit_common::Trace, DatapathError> {
        use conduit_common::MAP_TRACE;
        let m = self.map(MAP_TRACE)?;
        let a: aya::maps::Array<&aya::maps::MapData, conduit_common::Trace> =
            aya::maps::Array::try_from(m).map_err(|e| DatapathError::Map(MAP_TRACE, e))?;
        a.get(&0, 0).map_err(|e| DatapathError::Map(MAP_TRACE, e))
    }

    /// Packets and bytes allowed per conduit id, summed over CPUs.
    pub fn conduit_stats(&self) -> Result<std::collections::BTreeMap<u32, Counter>, DatapathError> {
        self.per_cpu_hash(conduit_common::MAP_CONDUIT_STATS)
    }

    /// Denied and would-deny packets per (zones, reason, verdict), summed over CPUs.
    pub fn drops(
        &self,
    ) -> Result<std::collections::BTreeMap<conduit_common::DropKey, Counter>, DatapathError> {
        self.per_cpu_hash(conduit_common::MAP_DROPS)
    }

    /// Packets a conduit's own filter (Modbus inspection) denied, per (conduit, reason,
    /// verdict), summed over CPUs.
    pub fn conduit_drops(
        &self,
    ) -> Result<std::collections::BTreeMap<conduit_common::ConduitDropKey, Counter>, DatapathError>
    {
        self.per_cpu_hash(conduit_common::MAP_CONDUIT_DROPS)
    }

    fn per_cpu_hash<K: aya::Pod + Ord>(
        &self,
        name: &'static str,
    ) -> Result<std::collections::BTreeMap<K, Counter>, DatapathError> {
        let m = self.map(name)?;
        let h: aya::maps::PerCpuHashMap<&aya::maps::MapData, K, Counter> =
            aya::maps::PerCpuHashMap::try_from(m).map_err(|e| DatapathError::Map(name, e))?;
        let mut out = std::collections::BTreeMap::new();
        for item in h.iter() {
            let (k, per_cpu) = item.map_err(|e| DatapathError::Map(name, e))?;
            let mut sum = Counter::default();
            for c in per_cpu.iter() {
                sum.packets += c.packets;
                sum.bytes += c.bytes;
            }
            out.insert(k, sum);
        }
        Ok(out)
    }

    /// Audit event counters (suppressed, lost, shed in a flood), summed over CPUs.
    pub fn event_stats(&self) -> Result<[u64; 3], DatapathError> {
        self.per_cpu_sums(conduit_common::MAP_EVENT_STATS)
    }

    /// The first `N` slots of a per-CPU array of `u64` counters, each summed over CPUs.
    fn per_cpu_sums<const N: usize>(&self, name: &'static str) -> Result<[u64; N], DatapathError> {
        let m = self.map(name)?;
        let arr = PerCpuArray::<_, u64>::try_from(m).map_err(|e| DatapathError::Map(name, e))?;
        let mut out = [0u64; N];
        for (i, slot) in out.iter_mut().enumerate() {
            let v = arr
                .get(&(i as u32), 0)
                .map_err(|e| DatapathError::Map(name, e))?;
            *slot = v.iter().sum();
        }
        Ok(out)
    }

    /// The audit event ring buffer, taken out of the datapath for a reader task.
    pub fn take_events(&mut self) -> Result<aya::maps::RingBuf<aya::maps::MapData>, DatapathError> {
        use conduit_common::MAP_EVENTS as N;
        let m = self
            .ebpf
            .as_mut()
            .and_then(|e| e.take_map(N))
            .ok_or(DatapathError::MissingMap(N))?;
        aya::maps::RingBuf::try_from(m).map_err(|e| DatapathError::Map(N, e))
    }

    /// Frames and bytes per verdict, summed over CPUs.
    pub fn totals(&self) -> Result<[(Verdict, Counter); 3], DatapathError> {
        let map = self.map(MAP_TOTALS)?;
        let arr = PerCpuArray::<_, Counter>::try_from(map)
            .map_err(|e| DatapathError::Map(MAP_TOTALS, e))?;
        let mut out = Verdict::ALL.map(|v| (v, Counter::default()));
        for (v, sum) in out.iter_mut() {
            let per_cpu = arr
                .get(&(*v as u32), 0)
                .map_err(|e| DatapathError::Map(MAP_TOTALS, e))?;
            for c in per_cpu.iter() {
                sum.packets += c.packets;
                sum.bytes += c.bytes;
            }
        }
        Ok(out)
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DatapathError> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or(DatapathError::MissingMap(PROGRAM_NAME))?
        .try_into()
        .map_err(DatapathError::Program)
}
