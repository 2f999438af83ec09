//! Prometheus metrics (SPEC §3): a collector that reads the kernel's per-CPU counters at
//! scrape time, and a small HTTP server for `/metrics` and `/healthz`.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use conduit_common::{EVSTAT_LOST, EVSTAT_SUPPRESSED, Reason, Verdict};
use prometheus::{
    Encoder as _, TextEncoder,
    core::{Collector, Desc},
    proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType},
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::Shared;

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
        let zone = |id: u32| -> String {
            if id == 0 {
                "unknown".into()
            } else {
                st.zones
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| format!("zone-{id}"))
            }
        };
        let mut out = Vec::new();
        // Per-conduit traffic, for the conduits of the live policy.
        let (mut pk, mut by) = (Vec::new(), Vec::new());
        if let Ok(stats) = s.dp.conduit_stats() {
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
        if let Ok(drops) = s.dp.drops() {
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
        // Denials by a conduit's own filter (Modbus inspection), per conduit.
        let (mut cdropped, mut cwould) = (Vec::new(), Vec::new());
        if let Ok(drops) = s.dp.conduit_drops() {
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
            "Packets a conduit's own filter dropped (Modbus function or unit not allowed, malformed Modbus), by conduit and reason.",
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
        let generation = s.dp.active().map(|a| a.generation).unwrap_or(st.generation);
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
                vec![label("sha256", &st.sha256), label("site", &st.site)],
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
        if let Ok(t) = s.dp.totals() {
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
        if let Ok(ev) = s.dp.event_stats() {
            out.push(family(
                "conduit_audit_events_suppressed_total",
                "Audit events held back by the per-flow rate limit.",
                MetricType::COUNTER,
                vec![counter(vec![], ev[EVSTAT_SUPPRESSED as usize] as f64)],
            ));
            out.push(family(
                "conduit_audit_events_lost_total",
                "Audit events lost because the ring buffer was full.",
                MetricType::COUNTER,
                vec![counter(vec![], ev[EVSTAT_LOST as usize] as f64)],
            ));
        }
        out.push(family(
            "conduit_audit_events_written_total",
            "Audit events written to the audit log.",
            MetricType::COUNTER,
            vec![counter(vec![], s.events_written as f64)],
        ));
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

/// Serves `/metrics` and `/healthz` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: prometheus::Registry,
    shared: Arc<Mutex<Shared>>,
) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            // Read the request head (it may arrive in pieces), at most 8 KiB, within 5 s.
            let mut buf = Vec::with_capacity(1024);
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                let mut chunk = [0u8; 1024];
                match tokio::time::timeout_at(deadline, sock.read(&mut chunk)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                    Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let req = String::from_utf8_lossy(&buf);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (status, ctype, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", render(&registry)),
                "/healthz" => {
                    let healthy = shared.lock().map(|s| s.healthy()).unwrap_or(false);
                    if healthy {
                        ("200 OK", "text/plain", "ok\n".into())
                    } else {
                        (
                            "503 Service Unavailable",
                            "text/plain",
                            "unhealthy\n".into(),
                        )
                    }
                }
                _ => (
                    "404 Not Found",
                    "text/plain",
                    "not found: try /metrics or /healthz\n".into(),
                ),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}
