//! `conduit run`: the agent. Loads the policy, keeps the datapath attached and pinned, swaps
//! policies atomically on SIGHUP or when the file changes, serves metrics, writes the audit
//! log. It never leaves the gateway unprotected: a bad policy is refused and the live one
//! stays; if the agent dies, the pinned program keeps enforcing the last good policy.
pub mod audit;
pub mod host;
pub mod links;
pub mod lock;
pub mod metrics;
pub mod netlink;
pub mod state;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use tracing::{error, info, warn};

use crate::{
    cli::RunArgs,
    datapath::Datapath,
    policy::load::{Loaded, load_file, read_policy, sha256_hex},
    reference::monotonic_ns,
};

/// What the agent's tasks share: the datapath (maps) and what it knows about them.
pub struct Shared {
    pub dp: Datapath,
    pub state: state::State,
    /// (interface, mode, attached)
    pub ifaces: Vec<(String, String, bool)>,
    pub events_written: u64,
    pub addrs: Vec<IpAddr>,
}

impl Shared {
    /// 200 on /healthz: attached everywhere, and a policy is live.
    pub fn healthy(&self) -> bool {
        let attached = !self.ifaces.is_empty() && self.ifaces.iter().all(|(_, _, up)| *up);
        let live = self.dp.active().is_ok_and(|a| a.generation > 0);
        attached && live
    }
}

/// A failure of `run`, with its exit status (SPEC §2: 1 input rejected, 2 operation failed).
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// Reads, validates, compiles (for the free slot, with the failsafe for this host's addresses)
/// and applies the policy. On any error the live policy is untouched and every error is
/// returned.
pub fn apply_policy(s: &mut Shared, path: &Path) -> Result<u64, Vec<String>> {
    let r = load_and_apply(s, path);
    release_freed_heap();
    r
}

/// Parsing a policy takes far more memory than the result (the YAML tree with positions: about
/// 2 KiB per asset), for a moment. glibc keeps heap it got back for later use, so without this
/// the agent's RSS would stay at the peak of the largest policy it ever read: `malloc_trim`
/// hands the free pages back to the kernel (a few ms, after the new policy is live).
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let t = Instant::now();
        // SAFETY: malloc_trim has no preconditions; it only releases free memory of the
        // allocator.
        unsafe {
            libc::malloc_trim(0);
        }
        tracing::debug!(
            elapsed_us = t.elapsed().as_micros() as u64,
            "released freed heap"
        );
    }
}

fn load_and_apply(s: &mut Shared, path: &Path) -> Result<u64, Vec<String>> {
    let shown = path.display().to_string();
    let slot = s.dp.next_slot().map_err(|e| vec![e.to_string()])?;
    let (loaded, diags) =
        load_file(path, slot).map_err(|e| vec![format!("{shown}: cannot read the policy: {e}")])?;
    for w in diags.warnings() {
        warn!(target: "conduit::policy", "{}", w.render(&shown));
    }
    let Some(loaded) = loaded else {
        return Err(diags.errors().map(|e| e.render(&shown)).collect());
    };
    drop(diags);
    // Only the compiled maps are needed from here on: the parsed policy goes before the maps
    // are written.
    let Loaded {
        mut policy,
        compiled,
        sha256,
    } = loaded;
    let site = std::mem::take(&mut policy.site);
    drop(policy);
    let compiled = compiled
        .with_failsafe(&s.addrs)
        .map_err(|e| vec![format!("{shown}: {e}")])?;
    let generation =
        s.dp.apply(&compiled)
            .map_err(|e| vec![format!("loading the policy into the kernel failed: {e}")])?;
    let st = &mut s.state;
    st.sha256 = sha256;
    st.site = site;
    st.generation = generation;
    st.zones = compiled
        .zone_ids
        .iter()
        .map(|(n, id)| (*id, n.clone()))
        .collect();
    st.conduits = compiled
        .conduit_ids
        .iter()
        .map(|(n, id)| (*id, n.clone()))
        .collect();
    Ok(generation)
}

/// What the last apply did, for the log: entries written and deleted, time spent writing the
/// idle slot and flipping `CDT_ACTIVE`.
#[derive(Default)]
struct ApplyFigures {
    written: usize,
    deleted: usize,
    write_us: u64,
    swap_us: u64,
}

impl ApplyFigures {
    fn of(dp: &Datapath) -> Self {
        dp.last_apply()
            .map(|r| Self {
                written: r.written(),
                deleted: r.deleted(),
                write_us: r.write.as_micros() as u64,
                swap_us: r.swap.as_micros() as u64,
            })
            .unwrap_or_default()
    }
}

fn reload(shared: &Mutex<Shared>, args: &RunArgs, why: &str) {
    let Ok(mut s) = shared.lock() else { return };
    let t = Instant::now();
    match apply_policy(&mut s, &args.policy) {
        Ok(generation) => {
            s.state.reloads_success += 1;
            let w = ApplyFigures::of(&s.dp);
            info!(generation, sha256 = %s.state.sha256, trigger = why, elapsed_ms = t.elapsed().as_millis() as u64, written = w.written, deleted = w.deleted, write_us = w.write_us, swap_us = w.swap_us, "policy reloaded");
        }
        Err(errors) => {
            s.state.reloads_failure += 1;
            for e in &errors {
                error!(target: "conduit::policy", "{e}");
            }
            error!(
                trigger = why,
                errors = errors.len(),
                generation = s.state.generation,
                "policy rejected; the live policy stays"
            );
        }
    }
    if let Err(e) = state::write(&args.state_dir, &s.state) {
        warn!("writing the state file: {e}");
    }
}

/// A cheap fingerprint of the policy file, to notice edits (also by rename).
fn stat_key(p: &Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(p).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

pub async fn run(args: RunArgs) -> Result<(), Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    // Signals first: a SIGHUP or SIGTERM that arrives while starting must not kill the agent
    // by default action (it is handled once the agent runs).
    let mut hup = signal(SignalKind::hangup()).map_err(|e| fail(2, e.to_string()))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| fail(2, e.to_string()))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| fail(2, e.to_string()))?;
    let pin_dir = args.pin_dir.clone();
    check_bpffs(&pin_dir)?;
    if let Some(m) = crate::datapath::probe::probe().missing(true) {
        return Err(fail(2, m));
    }
    // Before anything reads or changes the pins, and held until the agent exits.
    let _lock = lock::lock(&pin_dir).map_err(|e| fail(2, e.to_string()))?;
    let adopting = !links::pinned_ifaces(&pin_dir).is_empty();
    let dp = Datapath::load_pinned(&pin_dir).map_err(|e| match e.verifier_log() {
        Some(_) => fail(2, e.saving_log(args.verifier_log.as_deref())),
        None => fail(
            2,
            format!("{e}; if an older conduit left incompatible pins, run `conduit detach`"),
        ),
    })?;
    let addrs = host::own_addresses()
        .map_err(|e| fail(2, format!("listing this host's addresses: {e}")))?;
    let mut shared = Shared {
        dp,
        state: state::State::default(),
        ifaces: Vec::new(),
        events_written: 0,
        addrs,
    };
    shared.state.pid = std::process::id();
    shared.state.policy_path = std::fs::canonicalize(&args.policy).unwrap_or(args.policy.clone());
    shared.state.pin_dir = pin_dir.clone();
    let previous = state::read(&args.state_dir).ok();
    if let Some(old) = &previous {
        shared.state.reloads_success = old.reloads_success;
        shared.state.reloads_failure = old.reloads_failure;
    }
    match apply_policy(&mut shared, &args.policy) {
        Ok(generation) => {
            let w = ApplyFigures::of(&shared.dp);
            info!(generation, sha256 = %shared.state.sha256, site = %shared.state.site, written = w.written, deleted = w.deleted, write_us = w.write_us, swap_us = w.swap_us, "policy loaded")
        }
        Err(errors) => {
            for e in &errors {
                error!(target: "conduit::policy", "{e}");
            }
            let live = shared.dp.active().is_ok_and(|a| a.generation > 0);
            if !(adopting && live) {
                return Err(fail(
                    1,
                    format!(
                        "the policy is invalid ({} error(s)); nothing was attached",
                        errors.len()
                    ),
                ));
            }
            // An earlier agent's policy is still enforced from the pins: keep it.
            shared.state.reloads_failure += 1;
            if let Ok(old) = state::read(&args.state_dir) {
                shared.state.sha256 = old.sha256;
                shared.state.site = old.site;
                shared.state.zones = old.zones;
                shared.state.conduits = old.conduits;
            }
            shared.state.generation = shared.dp.active().map(|a| a.generation).unwrap_or(0);
            warn!(
                generation = shared.state.generation,
                "the policy file is invalid; keeping the pinned policy of the previous agent"
            );
        }
    }
    for iface in &args.ifaces {
        let known = previous
            .as_ref()
            .and_then(|p| p.interfaces.iter().find(|i| &i.name == iface))
            .map(|i| i.mode.as_str());
        match links::attach(&mut shared.dp, &pin_dir, iface, args.xdp_mode, known) {
            Ok((mode, adopted)) => {
                info!(interface = %iface, %mode, adopted, "attached");
                shared.ifaces.push((iface.clone(), mode.clone(), true));
                shared.state.interfaces.push(state::Iface {
                    name: iface.clone(),
                    mode,
                    missing: false,
                });
            }
            Err(e) => {
                // Leave nothing half-attached behind.
                if !adopting {
                    let _ = links::detach_all(&pin_dir);
                }
                return Err(fail(2, format!("attaching to {iface}: {e}")));
            }
        }
    }
    shared.state.generation = shared.dp.active().map(|a| a.generation).unwrap_or(0);
    state::write(&args.state_dir, &shared.state)
        .map_err(|e| fail(2, format!("writing {}: {e}", args.state_dir.display())))?;

    let ring = shared
        .dp
        .take_events()
        .map_err(|e| fail(2, e.to_string()))?;
    let shared = Arc::new(Mutex::new(shared));

    // Interfaces deleted and created again (netlink link notifications).
    let link_events = netlink::LinkEvents::subscribe()
        .map_err(|e| fail(2, format!("subscribing to link notifications: {e}")))?;
    tokio::spawn(netlink::watch(link_events, shared.clone(), args.clone()));

    // Metrics.
    let registry = prometheus::Registry::new();
    registry
        .register(Box::new(metrics::KernelCollector::new(shared.clone())))
        .map_err(|e| fail(2, format!("metrics: {e}")))?;
    let listener = metrics::bind(args.metrics_addr).map_err(|e| {
        fail(
            2,
            format!("binding the metrics address {}: {e}", args.metrics_addr),
        )
    })?;
    let listener =
        tokio::net::TcpListener::from_std(listener).map_err(|e| fail(2, e.to_string()))?;
    info!(addr = %args.metrics_addr, "serving /metrics and /healthz");
    tokio::spawn(metrics::serve(listener, registry, shared.clone()));

    // Audit log.
    let mut sink = match &args.audit_log {
        Some(p) => Some(
            audit::Sink::open(p)
                .map_err(|e| fail(2, format!("opening the audit log {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let audit_shared = shared.clone();
    tokio::spawn(async move {
        // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long
        // as the AsyncFd (which owns the ring buffer) lives.
        let Ok(mut fd) = (unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE)
        }) else {
            warn!("cannot watch the audit ring buffer: no audit events");
            return;
        };
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            let ring = guard.get_inner_mut();
            let mut lines = Vec::new();
            while let Some(item) = ring.next() {
                if item.len() >= std::mem::size_of::<conduit_common::Event>() {
                    // SAFETY: the kernel wrote a whole `Event` (repr(C), plain integers).
                    let ev: conduit_common::Event =
                        unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                    lines.push(ev);
                }
            }
            guard.clear_ready();
            if lines.is_empty() {
                continue;
            }
            let st = match audit_shared.lock() {
                Ok(s) => s.state.clone(),
                Err(_) => return,
            };
            let (mono, wall) = (monotonic_ns(), SystemTime::now());
            let mut written = 0;
            for ev in &lines {
                let l = audit::line(ev, &st, mono, wall);
                if let Some(sink) = &mut sink {
                    match sink.write_line(&l) {
                        Ok(()) => written += 1,
                        Err(e) => warn!("writing the audit log: {e}"),
                    }
                }
            }
            if let Ok(mut s) = audit_shared.lock() {
                s.events_written += written;
            }
        }
    });

    // Reload triggers: SIGHUP, the policy file changing (debounced), this host's addresses
    // changing (the failsafe follows them).
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut seen = stat_key(&args.policy);
    let mut pending: Option<Instant> = None;
    let mut last_addr_check = Instant::now();
    info!(pid = std::process::id(), "running");
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&shared, &args, "SIGHUP"),
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {
                let now_key = stat_key(&args.policy);
                if now_key != seen {
                    seen = now_key;
                    pending = Some(Instant::now());
                } else if let Some(since) = pending
                    && since.elapsed() >= Duration::from_millis(args.debounce_ms)
                {
                    pending = None;
                    // The same reader as the reload: a FIFO or an endless file put in the
                    // policy's place must not block or exhaust the agent here either.
                    let content = read_policy(&args.policy).ok().map(|b| sha256_hex(&b));
                    let live = shared.lock().map(|s| s.state.sha256.clone()).unwrap_or_default();
                    if content.as_deref() != Some(live.as_str()) {
                        reload(&shared, &args, "file changed");
                    }
                }
                if last_addr_check.elapsed() >= Duration::from_secs(5) {
                    last_addr_check = Instant::now();
                    if let Ok(addrs) = host::own_addresses() {
                        let changed = shared.lock().map(|mut s| {
                            let c = s.addrs != addrs;
                            s.addrs = addrs;
                            c
                        }).unwrap_or(false);
                        if changed {
                            reload(&shared, &args, "host addresses changed");
                        }
                    }
                }
            }
        }
    }
    if args.keep_on_exit {
        info!(pin_dir = %pin_dir.display(), "exiting with the program attached and pinned (--keep-on-exit); `conduit detach` removes it");
    } else {
        match links::detach_all(&pin_dir) {
            Ok(_) => info!("detached from every interface"),
            Err(e) => error!("detaching: {e}; run `conduit detach`"),
        }
        let _ = std::fs::remove_file(state::path(&args.state_dir));
    }
    Ok(())
}

/// The pin directory must be on the host's bpffs, or pins would not outlive the agent.
fn check_bpffs(pin_dir: &Path) -> Result<(), Failure> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let mut dir = pin_dir;
    while !dir.exists() {
        dir = dir.parent().unwrap_or(Path::new("/"));
    }
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| fail(1, "bad --pin-dir"))?;
    // SAFETY: statfs fills the struct we own from a NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 || st.f_type as i64 != BPF_FS_MAGIC {
        return Err(fail(
            2,
            format!(
                "{} is not on a bpffs mount: mount it (mount -t bpf bpf /sys/fs/bpf); in a network namespace, \
                 start conduit with `nsenter --net=/var/run/netns/NAME` rather than `ip netns exec`, which remounts /sys",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Default locations.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/conduit";
pub const DEFAULT_STATE_DIR: &str = "/run/conduit";

pub fn default_pin_dir() -> PathBuf {
    PathBuf::from(DEFAULT_PIN_DIR)
}
