//! The kernel side as seen from userspace: load the embedded XDP object, attach it, write the
//! compiled policy into its maps, read its counters.
mod apply;
use aya::{
    Ebpf,
    maps::PerCpuArray,
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use conduit_common::{Counter, MAP_TOTALS, PROGRAM_NAME, Verdict};

/// The XDP object built by `build.rs`, embedded in the binary.
pub fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/conduit"))
}

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "this conduit binary was built without its XDP program (bpf-linker was missing); \
         run ./xtask/bootstrap.sh and rebuild"
    )]
    NoObject,
    #[error("loading the XDP program into the kernel failed: {0} (are you root, with bpffs?)")]
    Load(#[source] aya::EbpfError),
    #[error("the kernel rejected the XDP program: {0}")]
    Program(#[source] aya::programs::ProgramError),
    #[error("map {0} is missing from the XDP object (ABI mismatch: rebuild conduit)")]
    MissingMap(&'static str),
    #[error("reading map {0}: {1}")]
    Map(&'static str, #[source] aya::maps::MapError),
    #[error(
        "internal error: policy compiled for slot {compiled}, but slot {expected} is the free one"
    )]
    WrongSlot { compiled: u8, expected: u8 },
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Native (driver) XDP where the driver supports it, generic (skb) otherwise.
    Auto,
    /// Driver mode only; fails where the driver has no XDP support.
    Native,
    /// Generic mode (`skb`): works on every interface, slower.
    Skb,
}

/// A loaded program and its maps.
pub struct Datapath {
    ebpf: Ebpf,
}

impl Datapath {
    /// Loads the embedded object and the program into the kernel (nothing is attached yet).
    pub fn load() -> Result<Self, DatapathError> {
        Self::load_with(false)
    }

    /// Like [`Datapath::load`]; with `trace`, the program records every decision in
    /// `CDT_TRACE` (for tests and `replay`).
    pub fn load_with(trace: bool) -> Result<Self, DatapathError> {
        let obj = object();
        if obj.is_empty() {
            return Err(DatapathError::NoObject);
        }
        let flag = u32::from(trace);
        let mut ebpf = aya::EbpfLoader::new()
            .override_global(conduit_common::GLOBAL_TRACE, &flag, true)
            .load(obj)
            .map_err(DatapathError::Load)?;
        let prog: &mut Xdp = program(&mut ebpf)?;
        prog.load().map_err(DatapathError::Program)?;
        Ok(Self { ebpf })
    }

    /// The loaded XDP program, for attaching or for BPF_PROG_TEST_RUN.
    pub fn program(&mut self) -> Result<&mut Xdp, DatapathError> {
        program(&mut self.ebpf)
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
        let m = self
            .ebpf
            .map(MAP_TRACE)
            .ok_or(DatapathError::MissingMap(MAP_TRACE))?;
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

    fn per_cpu_hash<K: aya::Pod + Ord>(
        &self,
        name: &'static str,
    ) -> Result<std::collections::BTreeMap<K, Counter>, DatapathError> {
        let m = self.ebpf.map(name).ok_or(DatapathError::MissingMap(name))?;
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

    /// Frames and bytes per verdict, summed over CPUs.
    pub fn totals(&self) -> Result<[(Verdict, Counter); 3], DatapathError> {
        let map = self
            .ebpf
            .map(MAP_TOTALS)
            .ok_or(DatapathError::MissingMap(MAP_TOTALS))?;
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
