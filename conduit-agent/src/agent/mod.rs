//! `conduit run`: the agent. Loads the policy, keeps the datapath attached and pinned, swaps
//! policies atomically on SIGHUP or when the file changes, serves metrics, writes the audit
//! log. It never leaves the gateway unprotected: a bad policy is refused and the live one
//! stays; if the agent dies, the pinned program keeps enforcing the last good policy.
pub mod audit;
pub mod config;
pub mod grants;
pub mod host;
pub mod learn;
pub mod links;
pub mod lock;
pub mod metrics;
pub mod netlink;
pub mod state;
pub mod throttle;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tracing::{error, info, warn};

pub use config::Config;

use crate::{
    datapath::Datapath,
    exit::Exit,
    integrity::{Integrity, WentLive},
    policy::load::{Loaded, load_bytes, read_policy, sha256_hex},
};

/// What the agent's tasks share: the datapath's maps, for reading, and what the agent knows
/// about them.
pub struct Shared {
    /// The pinned maps, opened a second time: counters and the live generation for /metrics
    /// and /healthz. The loaded datapath, which writes the policy, is the [`Reloader`]'s alone,
    /// so a reload writing the idle slot never holds up a scrape.
    pub view: Datapath,
    pub state: state::State,
    /// (interface, mode, attached)
    pub ifaces: Vec<(String, String, bool)>,
    pub events_written: u64,
    /// Audit events whose line could not be written (a full disk, an I/O error).
    pub events_write_failed: u64,
    pub addrs: Vec<IpAddr>,
    /// With `--learn-dir`: the learn dir's figures as of the last drain.
    pub learn: Option<learn::Figures>,
}

impl Shared {
    /// 200 on /healthz: attached everywhere, and a policy is live.
    pub fn healthy(&self) -> bool {
        let attached = !self.ifaces.is_empty() && self.ifaces.iter().all(|(_, _, up)| *up);
        let live = self.view.active().is_ok_and(|a| a.generation > 0);
        attached && live
    }
}

/// A failure of `run`, with its exit status (SPEC §2: 1 input rejected, 2 operation failed).
#[derive(Debug)]
pub struct Failure {
    pub code: Exit,
    pub message: String,
}

fn fail(code: Exit, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// A policy that went live: its generation and the names behind the IDs of its maps.
pub struct Live {
    pub generation: u64,
    pub sha256: String,
    pub site: String,
    pub zones: BTreeMap<u32, String>,
    pub conduits: BTreeMap<u32, String>,
    /// Who signed it (with `--allowed-signers`), and what the change log compares.
    pub signer: Option<crate::integrity::Signer>,
    pub digests: crate::policy::digest::Digests,
    /// Its on-demand conduits, by name.
    pub on_demand: BTreeMap<String, grants::OnDemand>,
}

impl Live {
    fn set(self, st: &mut state::State) {
        st.generation = self.generation;
        st.sha256 = self.sha256;
        st.site = self.site;
        st.zones = self.zones;
        st.conduits = self.conduits;
        st.signer = self.signer;
        st.on_demand = self.on_demand;
    }

    /// What the change log and the audit log record of it.
    fn went_live(&self, path: &Path) -> WentLive {
        WentLive {
            generation: self.generation,
            site: self.site.clone(),
            path: path.to_owned(),
            sha256: self.sha256.clone(),
            signer: self.signer.clone(),
            digests: self.digests.clone(),
        }
    }
}

/// Reads, admits (the signature, with `--allowed-signers`), validates, compiles (for the free
/// slot, with the failsafe for `addrs`, this host's addresses) and applies the policy at
/// `path`, with `grants` (open grants: conduit name → end, CLOCK_BOOTTIME seconds) for its
/// on-demand conduits. On any error the live policy is untouched and every error is returned.
/// Blocking (file reading, parsing, compiling, map writes): never on the runtime thread once
/// the agent serves.
pub fn load_and_apply(
    dp: &mut Datapath,
    addrs: &[IpAddr],
    path: &Path,
    gate: &Integrity,
    grants: &BTreeMap<String, u32>,
) -> Result<Live, Vec<String>> {
    let shown = path.display().to_string();
    // Never blocks or reads without bound: a FIFO, a device or an endless file in the
    // policy's place is refused (`read_policy`).
    let r = read_policy(path)
        .map_err(|e| vec![format!("{shown}: cannot read the policy: {e}")])
        .and_then(|bytes| admit_and_apply(dp, addrs, bytes, path, gate, grants));
    release_freed_heap();
    r
}

/// The signature check of exactly the bytes that are then applied.
fn admit_and_apply(
    dp: &mut Datapath,
    addrs: &[IpAddr],
    bytes: Vec<u8>,
    path: &Path,
    gate: &Integrity,
    grants: &BTreeMap<String, u32>,
) -> Result<Live, Vec<String>> {
    let signer = gate.admit(path, &bytes).map_err(|e| vec![e])?;
    let mut live = apply_bytes(dp, addrs, bytes, &path.display().to_string(), grants)?;
    live.signer = signer;
    Ok(live)
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

fn apply_bytes(
    dp: &mut Datapath,
    addrs: &[IpAddr],
    bytes: Vec<u8>,
    shown: &str,
    grants: &BTreeMap<String, u32>,
) -> Result<Live, Vec<String>> {
    let slot = dp.next_slot().map_err(|e| vec![e.to_string()])?;
    let (loaded, diags) = load_bytes(&bytes, slot);
    drop(bytes);
    for w in diags.warnings() {
        warn!(target: "conduit::policy", "{}", w.render(shown));
    }
    let Some(loaded) = loaded else {
        return Err(diags.errors().map(|e| e.render(shown)).collect());
    };
    drop(diags);
    // A draft (`conduit discover`) is enforced only once a person has reviewed it.
    let pending = crate::policy::lint::pending_enforced(&loaded.policy);
    if !pending.is_empty() {
        return Err(pending
            .into_iter()
            .map(|(pos, m)| format!("{shown}:{}:{}: error: {m}", pos.line, pos.column))
            .collect());
    }
    // Only the compiled maps are needed from here on: the parsed policy goes before the maps
    // are written.
    let Loaded {
        mut policy,
        compiled,
        sha256,
    } = loaded;
    let site = std::mem::take(&mut policy.site);
    let digests = crate::policy::digest::of(&policy);
    let on_demand: BTreeMap<String, grants::OnDemand> = policy
        .conduits
        .iter()
        .filter_map(|c| {
            c.on_demand.map(|(max, _)| {
                (
                    c.name.clone(),
                    grants::OnDemand {
                        max,
                        expires: c.expires.map(|(t, _)| t),
                    },
                )
            })
        })
        .collect();
    drop(policy);
    let mut compiled = compiled
        .with_failsafe(addrs)
        .map_err(|e| vec![format!("{shown}: {e}")])?;
    compiled.grants = grants::for_policy(grants, &compiled.conduit_ids, &on_demand);
    let generation = dp
        .apply(&compiled)
        .map_err(|e| vec![format!("loading the policy into the kernel failed: {e}")])?;
    let names = |m: &BTreeMap<String, u32>| m.iter().map(|(n, id)| (*id, n.clone())).collect();
    Ok(Live {
        generation,
        sha256,
        site,
        zones: names(&compiled.zone_ids),
        conduits: names(&compiled.conduit_ids),
        signer: None,
        digests,
        on_demand,
    })
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

/// Reloads the policy, one at a time, off the runtime thread.
struct Reloader {
    /// The loaded datapath: the only writer of the policy maps and links (reloads, and the
    /// re-attachment of interfaces that come back). Locked before `shared`, never after.
    dp: Arc<Mutex<Datapath>>,
    shared: Arc<Mutex<Shared>>,
    policy: PathBuf,
    state_dir: PathBuf,
    /// The signature check, the change log and the audit log's policy lines.
    integrity: Mutex<Integrity>,
}

impl Reloader {
    /// Reads, parses, compiles and applies the policy on a blocking thread, and waits for it:
    /// the runtime thread meanwhile keeps serving /metrics and /healthz and draining the audit
    /// log. The caller awaits each reload before it looks at the next trigger, so reloads stay
    /// one at a time. With `only_if_changed`, a file whose content is the live policy's is not
    /// reloaded.
    async fn reload(self: &Arc<Self>, why: &'static str, only_if_changed: bool) {
        let r = self.clone();
        if let Err(e) =
            tokio::task::spawn_blocking(move || r.reload_now(why, only_if_changed)).await
        {
            error!(trigger = why, "the reload did not finish: {e}");
        }
    }

    fn reload_now(&self, why: &str, only_if_changed: bool) {
        let t = Instant::now();
        let Ok(mut dp) = self.dp.lock() else { return };
        let Ok((addrs, live, open)) = self.shared.lock().map(|s| {
            let open: BTreeMap<String, u32> = s
                .state
                .grants
                .iter()
                .map(|(c, g)| (c.clone(), g.until_boot))
                .collect();
            (s.addrs.clone(), s.state.sha256.clone(), open)
        }) else {
            return;
        };
        let shown = self.policy.display().to_string();
        let Ok(mut integrity) = self.integrity.lock() else {
            return;
        };
        let result = match read_policy(&self.policy) {
            Ok(bytes) if only_if_changed && sha256_hex(&bytes) == live => return,
            Ok(bytes) => admit_and_apply(&mut dp, &addrs, bytes, &self.policy, &integrity, &open),
            Err(e) => Err(vec![format!("{shown}: cannot read the policy: {e}")]),
        };
        release_freed_heap();
        let w = ApplyFigures::of(&dp);
        // The shared state only to swap the names and count.
        let Ok(mut s) = self.shared.lock() else {
            return;
        };
        let mut went_live = None;
        match result {
            Ok(live) => {
                went_live = Some(live.went_live(&s.state.policy_path));
                live.set(&mut s.state);
                s.state.reloads_success += 1;
                grants::after_apply(&mut s.state, &mut integrity);
                info!(generation = s.state.generation, sha256 = %s.state.sha256, trigger = why, elapsed_ms = t.elapsed().as_millis() as u64, written = w.written, deleted = w.deleted, write_us = w.write_us, swap_us = w.swap_us, "policy reloaded");
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
        let st = s.state.clone();
        drop(s);
        if let Err(e) = state::write(&self.state_dir, &st) {
            warn!("writing the state file: {e}");
        }
        if let Some(w) = went_live {
            integrity.went_live(&w);
        }
    }
}

/// The grants of an earlier agent's state that the kernel still holds, for the live slot and
/// the same end: those go on.
fn carried_grants(previous: &state::State, dp: &Datapath) -> BTreeMap<String, grants::GrantRecord> {
    let (Ok(kernel), Ok(active)) = (dp.grants(), dp.active()) else {
        return BTreeMap::new();
    };
    previous
        .grants
        .iter()
        .filter(|(c, g)| {
            previous.conduit_id(c).is_some_and(|id| {
                kernel
                    .get(&conduit_common::ConduitKey {
                        slot: active.slot,
                        conduit: id,
                    })
                    .is_some_and(|k| k.until == g.until_boot)
            })
        })
        .map(|(c, g)| (c.clone(), g.clone()))
        .collect()
}

/// `p` as an absolute path (relative to the current directory), for the state file.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// A cheap fingerprint of the policy file, to notice edits (also by rename).
fn stat_key(p: &Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(p).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

pub async fn run(args: Config) -> Result<(), Failure> {
    // Signals first: a SIGHUP or SIGTERM that arrives while starting must not kill the agent
    // by default action (it is handled once the agent runs).
    let mut signals = Signals::install()?;
    // Descriptors: systemd's default soft limit (1024) is far below the hard one; every map,
    // link and client connection takes one.
    let nofile = match host::raise_fd_limit() {
        Ok(n) => n,
        Err(e) => {
            warn!("raising the descriptor limit (RLIMIT_NOFILE): {e}");
            host::fd_limit()
        }
    };
    check_bpffs(&args.pin_dir)?;
    if let Some(m) = crate::datapath::probe::probe().missing(true) {
        return Err(fail(Exit::Failed, m));
    }
    // Before anything reads or changes the pins, and held until the agent exits.
    let _lock = lock::lock(&args.pin_dir).map_err(|e| fail(Exit::Failed, e.to_string()))?;
    let Started {
        mut dp,
        st,
        ifaces,
        integrity,
        addrs,
        learner,
    } = start(&args)?;
    let signature = integrity.watched_signature(&args.policy);
    let ring = dp
        .take_events()
        .map_err(|e| fail(Exit::Failed, e.to_string()))?;
    let view = Datapath::open_pins(&args.pin_dir).map_err(|e| {
        fail(
            Exit::Failed,
            format!("opening the pinned maps for reading: {e}"),
        )
    })?;
    let shared = Arc::new(Mutex::new(Shared {
        view,
        state: st,
        ifaces,
        events_written: 0,
        events_write_failed: 0,
        addrs,
        learn: None,
    }));
    let reloader = Arc::new(Reloader {
        dp: Arc::new(Mutex::new(dp)),
        shared: shared.clone(),
        policy: args.policy.clone(),
        state_dir: args.state_dir.clone(),
        integrity: Mutex::new(integrity),
    });
    let addresses = Arc::new(tokio::sync::Notify::new());
    serve(&args, &reloader, &shared, nofile, &addresses)?;
    let sink = match &args.audit_log {
        Some(p) => Some(audit::Sink::open(p).map_err(|e| {
            fail(
                Exit::Failed,
                format!("opening the audit log {}: {e}", p.display()),
            )
        })?),
        None => None,
    };
    tokio::spawn(audit::write_events(ring, sink, shared.clone()));
    if let Some(l) = &learner {
        learn_every(&args, l, &shared);
    }
    reload_loop(
        &args,
        &mut signals,
        &reloader,
        &shared,
        signature.as_deref(),
        &addresses,
    )
    .await;
    shutdown(&args, learner.as_ref(), &shared).await;
    Ok(())
}

/// The signals the agent handles: SIGHUP reloads, SIGTERM and SIGINT stop it.
struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, Failure> {
        use tokio::signal::unix::{SignalKind, signal};
        let on = |kind| signal(kind).map_err(|e| fail(Exit::Failed, e.to_string()));
        Ok(Signals {
            hup: on(SignalKind::hangup())?,
            term: on(SignalKind::terminate())?,
            int: on(SignalKind::interrupt())?,
        })
    }
}

/// What the agent has once it enforces: the datapath with the policy live and attached.
struct Started {
    dp: Datapath,
    st: state::State,
    ifaces: Vec<(String, String, bool)>,
    integrity: Integrity,
    addrs: Vec<IpAddr>,
    learner: Option<Arc<Mutex<learn::Learner>>>,
}

/// Loads the program (adopting an earlier agent's pins), opens the learn dir, applies the
/// policy (or keeps the pinned one of an earlier agent when the file is refused), attaches
/// to every interface and writes the state file.
fn start(args: &Config) -> Result<Started, Failure> {
    let pin_dir = &args.pin_dir;
    let adopting = !links::pinned_ifaces(pin_dir).is_empty();
    let options = crate::datapath::LoadOptions {
        learn: args.learn_dir.is_some(),
        ..Default::default()
    };
    let mut dp =
        Datapath::load_options(options, Some(pin_dir)).map_err(|e| match e.verifier_log() {
            Some(_) => fail(Exit::Failed, e.saving_log(args.verifier_log.as_deref())),
            None => fail(
                Exit::Failed,
                format!("{e}; if an older conduit left incompatible pins, run `conduit detach`"),
            ),
        })?;
    // The learn dir before anything is attached: one from another version is refused.
    let learner = match &args.learn_dir {
        Some(dir) => Some(Arc::new(Mutex::new(
            learn::Learner::open(dir, args.learn_max_records, &dp)
                .map_err(|e| fail(Exit::Rejected, e))?,
        ))),
        None => None,
    };
    let addrs = host::own_addresses()
        .map_err(|e| fail(Exit::Failed, format!("listing this host's addresses: {e}")))?;
    let mut st = state::State {
        pid: std::process::id(),
        policy_path: std::fs::canonicalize(&args.policy).unwrap_or(args.policy.clone()),
        pin_dir: pin_dir.clone(),
        ..Default::default()
    };
    let previous = state::read(&args.state_dir).ok();
    let mut integrity = Integrity::open(
        args.allowed_signers.as_deref(),
        args.change_log.as_deref(),
        args.audit_log.as_deref(),
    )
    .map_err(|e| fail(Exit::Failed, e))?;
    let mut went_live = None;
    if let Some(old) = &previous {
        st.reloads_success = old.reloads_success;
        st.reloads_failure = old.reloads_failure;
    }
    st.change_log = args.change_log.as_deref().map(absolute);
    st.audit_log = args.audit_log.as_deref().map(absolute);
    // Open grants of an earlier agent (`--keep-on-exit`, a crash) that the pinned grants map
    // still holds carry over.
    let carried = previous
        .as_ref()
        .map(|p| carried_grants(p, &dp))
        .unwrap_or_default();
    st.grants = carried.clone();
    let open: BTreeMap<String, u32> = carried
        .iter()
        .map(|(c, g)| (c.clone(), g.until_boot))
        .collect();
    match load_and_apply(&mut dp, &addrs, &args.policy, &integrity, &open) {
        Ok(live) => {
            went_live = Some(live.went_live(&st.policy_path));
            live.set(&mut st);
            grants::after_apply(&mut st, &mut integrity);
            let w = ApplyFigures::of(&dp);
            info!(generation = st.generation, sha256 = %st.sha256, site = %st.site, written = w.written, deleted = w.deleted, write_us = w.write_us, swap_us = w.swap_us, "policy loaded")
        }
        Err(errors) => {
            for e in &errors {
                error!(target: "conduit::policy", "{e}");
            }
            let live = dp.active().is_ok_and(|a| a.generation > 0);
            if !(adopting && live) {
                return Err(fail(
                    Exit::Rejected,
                    format!(
                        "the policy was refused ({} error(s)); nothing was attached",
                        errors.len()
                    ),
                ));
            }
            // An earlier agent's policy is still enforced from the pins: keep it.
            st.reloads_failure += 1;
            if let Ok(old) = state::read(&args.state_dir) {
                st.sha256 = old.sha256;
                st.site = old.site;
                st.zones = old.zones;
                st.conduits = old.conduits;
                st.signer = old.signer;
                st.on_demand = old.on_demand;
            }
            st.generation = dp.active().map(|a| a.generation).unwrap_or(0);
            warn!(
                generation = st.generation,
                "the policy file was refused; keeping the pinned policy of the previous agent"
            );
        }
    }
    let mut ifaces = Vec::new();
    for iface in &args.ifaces {
        let known = previous
            .as_ref()
            .and_then(|p| p.interfaces.iter().find(|i| &i.name == iface))
            .map(|i| i.mode.as_str());
        match links::attach(&mut dp, pin_dir, iface, args.xdp_mode, known) {
            Ok((mode, adopted)) => {
                info!(interface = %iface, %mode, adopted, "attached");
                ifaces.push((iface.clone(), mode.clone(), true));
                st.interfaces.push(state::Iface {
                    name: iface.clone(),
                    mode,
                    missing: false,
                });
            }
            Err(e) => {
                // Leave nothing half-attached behind.
                if !adopting {
                    let _ = links::detach_all(pin_dir);
                }
                return Err(fail(Exit::Failed, format!("attaching to {iface}: {e}")));
            }
        }
    }
    st.generation = dp.active().map(|a| a.generation).unwrap_or(0);
    state::write(&args.state_dir, &st).map_err(|e| {
        fail(
            Exit::Failed,
            format!("writing {}: {e}", args.state_dir.display()),
        )
    })?;
    if let Some(w) = went_live {
        integrity.went_live(&w);
    }
    Ok(Started {
        dp,
        st,
        ifaces,
        integrity,
        addrs,
        learner,
    })
}

/// The agent's servers: the control socket (`conduit grant`, `revoke`), link notifications
/// (interfaces deleted and created again; addresses, which `addresses` is told of), /metrics
/// and /healthz.
fn serve(
    args: &Config,
    reloader: &Arc<Reloader>,
    shared: &Arc<Mutex<Shared>>,
    nofile: u64,
    addresses: &Arc<tokio::sync::Notify>,
) -> Result<(), Failure> {
    // `conduit grant` and `conduit revoke`.
    let control = grants::bind(&args.state_dir).map_err(|e| {
        fail(
            Exit::Failed,
            format!(
                "binding the control socket {}: {e}",
                grants::socket_path(&args.state_dir).display()
            ),
        )
    })?;
    tokio::spawn(grants::serve(control, reloader.clone()));

    // Interfaces deleted and created again (netlink link notifications).
    let link_events = netlink::LinkEvents::subscribe().map_err(|e| {
        fail(
            Exit::Failed,
            format!("subscribing to link notifications: {e}"),
        )
    })?;
    tokio::spawn(netlink::watch(
        link_events,
        reloader.dp.clone(),
        shared.clone(),
        args.clone(),
        addresses.clone(),
    ));

    // Metrics.
    let registry = prometheus::Registry::new();
    registry
        .register(Box::new(metrics::KernelCollector::new(shared.clone())))
        .map_err(|e| fail(Exit::Failed, format!("metrics: {e}")))?;
    let listener = metrics::bind(args.metrics_addr).map_err(|e| {
        fail(
            Exit::Failed,
            format!("binding the metrics address {}: {e}", args.metrics_addr),
        )
    })?;
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|e| fail(Exit::Failed, e.to_string()))?;
    let cap = metrics::connection_cap(nofile);
    info!(addr = %args.metrics_addr, max_connections = cap, descriptor_limit = nofile, "serving /metrics and /healthz");
    tokio::spawn(metrics::serve(listener, registry, shared.clone(), cap));

    Ok(())
}

/// Moves the kernel's learn records into the learn dir every `--learn-interval`, off the
/// runtime thread.
fn learn_every(args: &Config, l: &Arc<Mutex<learn::Learner>>, shared: &Arc<Mutex<Shared>>) {
    info!(dir = %args.learn_dir.as_deref().unwrap_or(Path::new("")).display(), interval_s = args.learn_interval.as_secs(), max_records = args.learn_max_records, "learning the plant for `conduit discover --learned`");
    let (l, shared) = (l.clone(), shared.clone());
    let every = args.learn_interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let (l, shared) = (l.clone(), shared.clone());
            let _ = tokio::task::spawn_blocking(move || learn::drain(&l, &shared)).await;
        }
    });
}

/// Reloads on SIGHUP, when the policy file (or its signature) changes and stays so for the
/// debounce time, and when this host's addresses change (the failsafe follows them); ends
/// grants whose time has come; returns on SIGTERM or SIGINT.
async fn reload_loop(
    args: &Config,
    signals: &mut Signals,
    reloader: &Arc<Reloader>,
    shared: &Arc<Mutex<Shared>>,
    signature: Option<&Path>,
    addresses: &tokio::sync::Notify,
) {
    // Reload triggers: SIGHUP, the policy file changing (debounced), this host's addresses
    // changing (the failsafe follows them).
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    // The signature too, when policies must be signed: a new POLICY.sig alone (written after
    // the policy it signs) loads the policy that was refused without it.
    let watched = || (stat_key(&args.policy), signature.and_then(stat_key));
    let mut seen = watched();
    let mut pending: Option<Instant> = None;
    let mut last_addr_check = Instant::now();
    let mut last_grant_check = Instant::now();
    info!(pid = std::process::id(), "running");
    loop {
        tokio::select! {
            _ = signals.hup.recv() => reloader.reload("SIGHUP", false).await,
            _ = signals.term.recv() => break,
            _ = signals.int.recv() => break,
            _ = tick.tick() => {
                let now_key = watched();
                if now_key != seen {
                    seen = now_key;
                    pending = Some(Instant::now());
                } else if let Some(since) = pending
                    && since.elapsed() >= args.debounce
                {
                    pending = None;
                    reloader.reload("file changed", true).await;
                }
                // Grants whose time has come (the kernel closed them already): recorded
                // within a second.
                if last_grant_check.elapsed() >= Duration::from_secs(1) {
                    last_grant_check = Instant::now();
                    let r = reloader.clone();
                    let _ = tokio::task::spawn_blocking(move || r.end_due_grants()).await;
                }
                // A backstop for address notifications that were lost.
                if last_addr_check.elapsed() >= Duration::from_secs(5) {
                    last_addr_check = Instant::now();
                    follow_addresses(reloader, shared).await;
                }
            }
            // An address came or went (netlink): the failsafe follows at once.
            _ = addresses.notified() => {
                last_addr_check = Instant::now();
                follow_addresses(reloader, shared).await;
            }
        }
    }
}

/// Reloads when this host's addresses changed since the agent last looked (the failsafe
/// holds them).
async fn follow_addresses(reloader: &Arc<Reloader>, shared: &Arc<Mutex<Shared>>) {
    let Ok(addrs) = host::own_addresses() else {
        return;
    };
    let changed = shared
        .lock()
        .map(|mut s| {
            let c = s.addrs != addrs;
            s.addrs = addrs;
            c
        })
        .unwrap_or(false);
    if changed {
        reloader.reload("host addresses changed", false).await;
    }
}

/// What the agent does on its way out: the last learn drain, then detach (unless
/// `--keep-on-exit`).
async fn shutdown(
    args: &Config,
    learner: Option<&Arc<Mutex<learn::Learner>>>,
    shared: &Arc<Mutex<Shared>>,
) {
    // What was learned since the last drain, before the pins may go.
    if let Some(l) = learner {
        let (l2, sh) = (l.clone(), shared.clone());
        let _ = tokio::task::spawn_blocking(move || learn::drain(&l2, &sh)).await;
        if let Ok(l) = l.lock() {
            let f = l.figures();
            info!(dir = %l.dir().display(), records = f.records, dropped_kernel = f.dropped_kernel, dropped_disk = f.dropped_disk, "learn dir written");
        }
    }
    let _ = std::fs::remove_file(grants::socket_path(&args.state_dir));
    if args.keep_on_exit {
        info!(pin_dir = %args.pin_dir.display(), "exiting with the program attached and pinned (--keep-on-exit); `conduit detach` removes it");
    } else {
        match links::detach_all(&args.pin_dir) {
            Ok(_) => info!("detached from every interface"),
            Err(e) => error!("detaching: {e}; run `conduit detach`"),
        }
        let _ = std::fs::remove_file(state::path(&args.state_dir));
    }
}

/// The pin directory must be on the host's bpffs, or pins would not outlive the agent.
fn check_bpffs(pin_dir: &Path) -> Result<(), Failure> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let mut dir = pin_dir;
    while !dir.exists() {
        dir = dir.parent().unwrap_or(Path::new("/"));
    }
    // `f_type`'s width differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    let on_bpffs = rustix::fs::statfs(dir).is_ok_and(|st| st.f_type as i64 == BPF_FS_MAGIC);
    if !on_bpffs {
        return Err(fail(
            Exit::Failed,
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
