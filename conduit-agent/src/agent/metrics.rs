//! Prometheus metrics (SPEC §3): a collector that reads the kernel's per-CPU counters at
//! scrape time, and the HTTP server (hyper) for `/metrics` and `/healthz`, bounded in
//! connections and time so that a flood of clients cannot take the agent's descriptors or CPU.
use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use conduit_common::{EVSTAT_FLOOD, EVSTAT_LOST, EVSTAT_SUPPRESSED, Reason, Verdict};
use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{
    Encoder as _, TextEncoder,
    core::{Collector, Desc},
    proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType},
};
use tokio::sync::Semaphore;
use tracing::warn;

use super::{Shared, throttle::Throttle};

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_owned());
    l.set_value(value.to_owned());
    l
}

fn family(name: &str, help: &str, ty: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(ty);
    f.set_metric(metrics);
    f
}

fn counter(labels: Vec<LabelPair>, v: f64) -> Metric {
    let mut m = Metric::default();
    m.set_label(labels);
    let mut c = Counter::default();
    c.set_value(v);
    m.set_counter(c);
    m
}

fn gauge(labels: Vec<LabelPair>, v: f64) -> Metric {
    let mut m = Metric::default();
    m.set_label(labels);
    let mut g = Gauge::default();
    g.set_value(v);
    m.set_gauge(g);
    m
}

pub struct KernelCollector {
    shared: Arc<Mutex<Shared>>,
    descs: Vec<Desc>,
}

impl KernelCollector {
    pub fn new(shared: Arc<Mutex<Shared>>) -> Self {
        Self {
            shared,
            descs: Vec::new(),
        }
    }
}

impl Collector for KernelCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(s) = self.shared.lock() else {
            return Vec::new();
        };
        let st = &s.state;
        let zone = |id: u32| st.zone_name(id);
        let mut out = Vec::new();
        // Per-conduit traffic, for the conduits of the live policy.
        let (mut pk, mut by) = (Vec::new(), Vec::new());
        if let Ok(stats) = s.view.conduit_stats() {
            for (id, name) in &st.conduits {
                let c = stats.get(id).copied().unwrap_or_default();
                pk.push(counter(vec![label("conduit", name)], c.packets as f64));
                by.push(counter(vec![label("conduit", name)], c.bytes as f64));
            }
        }
        out.push(family(
            "conduit_packets_total",
            "Packets allowed through each conduit, replies included.",
            MetricType::COUNTER,
            pk,
        ));
        out.push(family(
            "conduit_bytes_total",
            "Bytes allowed through each conduit, replies included.",
            MetricType::COUNTER,
            by,
        ));
        let (mut dropped, mut would) = (BTreeMap::new(), BTreeMap::new());
        if let Ok(drops) = s.view.drops() {
            for (k, c) in drops {
                let reason = Reason::try_from(k.reason)
                    .map(Reason::as_str)
                    .unwrap_or("other");
                let key = (zone(k.src_zone), zone(k.dst_zone), reason);
                let target = if k.verdict == Verdict::WouldDeny as u32 {
                    &mut would
                } else {
                    &mut dropped
                };
                *target.entry(key).or_insert(0u64) += c.packets;
            }
        }
        let to_metrics = |m: BTreeMap<(String, String, &str), u64>| -> Vec<Metric> {
            m.into_iter()
                .map(|((s, d, r), v)| {
                    counter(
                        vec![
                            label("src_zone", &s),
                            label("dst_zone", &d),
                            label("reason", r),
                        ],
                        v as f64,
                    )
                })
                .collect()
        };
        // Denials by a conduit's own filter (protocol inspection), per conduit.
        let (mut cdropped, mut cwould) = (Vec::new(), Vec::new());
        if let Ok(drops) = s.view.conduit_drops() {
            for (k, c) in drops {
                let Some(name) = st.conduits.get(&k.conduit) else {
                    continue;
                };
                let reason = Reason::try_from(k.reason)
                    .map(Reason::as_str)
                    .unwrap_or("other");
                let m = counter(
                    vec![label("conduit", name), label("reason", reason)],
                    c.packets as f64,
                );
                if k.verdict == Verdict::WouldDeny as u32 {
                    cwould.push(m);
                } else {
                    cdropped.push(m);
                }
            }
        }
        out.push(family(
            "conduit_inspection_dropped_packets_total",
            "Packets a conduit's own filter dropped (a Modbus or DNP3 function, a unit, outstation or CIP service not allowed, malformed), by conduit and reason.",
            MetricType::COUNTER,
            cdropped,
        ));
        out.push(family(
            "conduit_inspection_would_drop_packets_total",
            "Packets a conduit's own filter would drop in a monitor-mode zone, by conduit and reason.",
            MetricType::COUNTER,
            cwould,
        ));
        out.push(family(
            "conduit_dropped_packets_total",
            "Packets dropped, by zone pair and reason.",
            MetricType::COUNTER,
            to_metrics(dropped),
        ));
        out.push(family(
            "conduit_would_drop_packets_total",
            "Packets a monitor-mode zone passed that enforcement would drop.",
            MetricType::COUNTER,
            to_metrics(would),
        ));
        out.push(family(
            "conduit_policy_reloads_total",
            "Policy reloads by result.",
            MetricType::COUNTER,
            vec![
                counter(vec![label("result", "success")], st.reloads_success as f64),
                counter(vec![label("result", "failure")], st.reloads_failure as f64),
            ],
        ));
        // The generation the names above belong to: a reload sets both at once, just after its
        // swap.
        let generation = st.generation;
        out.push(family(
            "conduit_policy_generation",
            "Generation of the live policy (one more per swap).",
            MetricType::GAUGE,
            vec![gauge(vec![], generation as f64)],
        ));
        out.push(family(
            "conduit_policy_info",
            "The live policy.",
            MetricType::GAUGE,
            vec![gauge(
                vec![
                    label("sha256", &st.sha256),
                    label("site", &st.site),
                    // "principal SHA256:fingerprint"; "" when unsigned.
                    label(
                        "signer",
                        &st.signer
                            .as_ref()
                            .map(|s| s.to_string())
                            .unwrap_or_default(),
                    ),
                ],
                1.0,
            )],
        ));
        let attached: Vec<Metric> = s
            .ifaces
            .iter()
            .map(|(name, mode, up)| {
                gauge(
                    vec![label("interface", name), label("mode", mode)],
                    if *up { 1.0 } else { 0.0 },
                )
            })
            .collect();
        out.push(family(
            "conduit_interface_attached",
            "1 while the XDP program is attached to the interface.",
            MetricType::GAUGE,
            attached,
        ));
        let mut totals = Vec::new();
        if let Ok(t) = s.view.totals() {
            for (v, c) in t {
                totals.push(counter(
                    vec![label("verdict", v.as_str())],
                    c.packets as f64,
                ));
            }
        }
        out.push(family(
            "conduit_frames_total",
            "Frames judged by the datapath, by verdict.",
            MetricType::COUNTER,
            totals,
        ));
        let events = s.view.event_stats();
        if let Ok(ev) = &events {
            out.push(family(
                "conduit_audit_events_suppressed_total",
                "Audit events held back by the per-flow rate limit.",
                MetricType::COUNTER,
                vec![counter(vec![], ev[EVSTAT_SUPPRESSED as usize] as f64)],
            ));
        }
        // Lost audit events by cause: shed by the per-CPU budget (a flood), the kernel could
        // not queue them (its ring buffer was full), or their line could not be written (a
        // full disk).
        let mut lost = Vec::new();
        if let Ok(ev) = &events {
            lost.push(counter(
                vec![label("reason", "flood")],
                ev[EVSTAT_FLOOD as usize] as f64,
            ));
            lost.push(counter(
                vec![label("reason", "ring_full")],
                ev[EVSTAT_LOST as usize] as f64,
            ));
        }
        lost.push(counter(
            vec![label("reason", "write_error")],
            s.events_write_failed as f64,
        ));
        out.push(family(
            "conduit_audit_events_lost_total",
            "Audit events lost, by reason: flood (more loggable frames than a CPU's budget of 2,000 events per second: a scan or a flood; the frames are still judged and counted), ring_full (the kernel's ring buffer was full), write_error (the line could not be written to the audit log, e.g. a full disk).",
            MetricType::COUNTER,
            lost,
        ));
        out.push(family(
            "conduit_audit_events_written_total",
            "Audit events written to the audit log.",
            MetricType::COUNTER,
            vec![counter(vec![], s.events_written as f64)],
        ));
        // On-demand conduits: open or closed, and the time left (SPEC §8).
        if !st.on_demand.is_empty() {
            let now = crate::policy::compile::boot_now_s();
            let left = |c: &str| st.grants.get(c).map_or(0, |g| g.left(now));
            out.push(family(
                "conduit_grant_active",
                "1 while an on-demand conduit has an open grant (conduit grant), 0 while it is closed.",
                MetricType::GAUGE,
                st.on_demand
                    .keys()
                    .map(|c| gauge(vec![label("conduit", c)], if left(c) > 0 { 1.0 } else { 0.0 }))
                    .collect(),
            ));
            out.push(family(
                "conduit_grant_remaining_seconds",
                "Seconds until an on-demand conduit's grant ends (0: closed).",
                MetricType::GAUGE,
                st.on_demand
                    .keys()
                    .map(|c| gauge(vec![label("conduit", c)], f64::from(left(c))))
                    .collect(),
            ));
        }
        if let Some(l) = &s.learn {
            out.push(family(
                "conduit_learn_records",
                "Records in the learn dir (run --learn-dir), as of the last drain.",
                MetricType::GAUGE,
                vec![gauge(vec![], l.records as f64)],
            ));
            out.push(family(
                "conduit_learn_dropped_total",
                "Learned records that did not fit, as of the last drain: store=kernel (the datapath's maps were full between two drains: drain more often, --learn-interval), store=disk (the learn dir held --learn-max-records).",
                MetricType::COUNTER,
                vec![
                    counter(vec![label("store", "kernel")], l.dropped_kernel as f64),
                    counter(vec![label("store", "disk")], l.dropped_disk as f64),
                ],
            ));
        }
        // The text encoder refuses a family without samples (e.g. no drops yet).
        out.retain(|f| !f.get_metric().is_empty());
        out
    }
}

/// The text exposition of every metric.
pub fn render(registry: &prometheus::Registry) -> String {
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut buf) {
        tracing::error!("encoding metrics: {e}");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// How long a client may take to send a whole request head; also how long a kept-alive
/// connection may wait idle for its next request. Then the connection is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one connection is kept at most: then it is closed after its current response
/// (Prometheus simply opens a new one), so a client that reads its answer slowly cannot keep
/// a slot for ever.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// The most connections served at once, whatever the descriptor limit.
pub const MAX_CONNECTIONS: usize = 256;
/// The pause after `accept` failed for want of a resource (EMFILE, ENFILE, ENOBUFS, ENOMEM):
/// trying again at once would fail again, in a loop that takes a whole CPU.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one warning per interval about refused connections or failing `accept`.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The connection cap for a descriptor limit: a quarter of it, at most [`MAX_CONNECTIONS`],
/// so that a flood of connections leaves the agent the descriptors it needs for its maps,
/// reloads (the policy file), the state file and the audit log.
pub fn connection_cap(nofile: u64) -> usize {
    (nofile / 4).clamp(4, MAX_CONNECTIONS as u64) as usize
}

/// The answer to a request for `path`.
fn respond(
    path: &str,
    registry: &prometheus::Registry,
    shared: &Mutex<Shared>,
) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            render(registry),
        ),
        "/healthz" => {
            if shared.lock().map(|s| s.healthy()).unwrap_or(false) {
                (StatusCode::OK, "text/plain", "ok\n".into())
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "unhealthy\n".into(),
                )
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics or /healthz\n".into(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    r
}

/// Errors of one connection that `accept` reports (the client gave up): the next `accept`
/// is unaffected.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Serves `/metrics` and `/healthz` (HTTP/1.1, hyper) until the task is dropped, at most
/// `cap` connections at once: a connection over the cap is closed as soon as it is accepted,
/// so a flood holds none of the agent's descriptors beyond the cap.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: prometheus::Registry,
    shared: Arc<Mutex<Shared>>,
    cap: usize,
) {
    let permits = Arc::new(Semaphore::new(cap));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(16 * 1024);
    let (mut refused, mut failing) = (Throttle::new(WARN_EVERY), Throttle::new(WARN_EVERY));
    loop {
        let sock = match listener.accept().await {
            Ok((sock, _)) => sock,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                if let Some(n) = failing.hit() {
                    warn!(error = %e, failures = n, "accepting a metrics connection failed; retrying in 100 ms");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(sock);
            if let Some(n) = refused.hit() {
                warn!(
                    refused = n,
                    cap, "too many metrics connections at once: closing new ones"
                );
            }
            continue;
        };
        let (registry, shared) = (registry.clone(), shared.clone());
        let service = service_fn(move |req: Request<Incoming>| {
            let r = respond(req.uri().path(), &registry, &shared);
            async move { Ok::<_, Infallible>(r) }
        });
        let conn = http.serve_connection(TokioIo::new(sock), service);
        tokio::spawn(async move {
            let _permit = permit;
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = tokio::time::sleep(CONNECTION_LIFETIME) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(HEADER_TIMEOUT, conn).await;
        });
    }
}

pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}
