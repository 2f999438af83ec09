//! Evidence from a Prometheus server that scrapes the site's gateways: its HTTP API
//! (`/api/v1/query`), increases over the window, summed over every gateway that ran the site
//! (`conduit_policy_info{site=...}` in the window), with the split by `instance`.
use std::{collections::BTreeMap, time::Duration};

use serde_json::Value;

use super::{
    ReportError,
    evidence::{Counters, Evidence, LiveId, Traffic},
};

/// Whether `w` is a Prometheus duration (`30d`, `12h`, `1h30m`, `90s`, `2w`, `1y`).
pub fn valid_window(w: &str) -> bool {
    let mut rest = w;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

struct Client {
    agent: ureq::Agent,
    base: String,
    /// The instant every query is evaluated at (Unix seconds, as the API takes it): the
    /// report's queries compare each other's answers (a series' samples with its gateway's),
    /// which a scrape between two of them, each at its own "now", would set apart.
    at: String,
}

/// One sample of an instant vector: its labels and value.
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Client {
    fn query(&self, q: &str) -> Result<Vec<Sample>, ReportError> {
        let url = format!("{}/api/v1/query", self.base);
        let unreachable = |why: String| ReportError::Prometheus {
            url: self.base.clone(),
            why,
        };
        let mut resp = self
            .agent
            .get(&url)
            .query("query", q)
            .query("time", &self.at)
            .call()
            .map_err(|e| unreachable(format!("cannot query it: {e}")))?;
        let status = resp.status();
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| unreachable(format!("reading its answer: {e}")))?;
        let v: Value = serde_json::from_str(&body).map_err(|_| {
            unreachable(format!(
                "HTTP {status}, and the answer is not the Prometheus API's JSON (is this a Prometheus server? the URL is its base, e.g. http://prometheus:9090)"
            ))
        })?;
        if v["status"] != "success" {
            return Err(unreachable(format!(
                "the query `{q}` failed: {} {}",
                v["errorType"].as_str().unwrap_or(""),
                v["error"].as_str().unwrap_or("(no message)")
            )));
        }
        let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
        Ok(result
            .into_iter()
            .filter_map(|s| {
                let labels = s["metric"]
                    .as_object()?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect();
                let value = s["value"][1].as_str()?.parse::<f64>().ok()?;
                Some(Sample { labels, value })
            })
            .collect())
    }
}

/// The identity of a series: its labels without the metric name.
fn series_key(labels: &BTreeMap<String, String>) -> Vec<(String, String)> {
    labels
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl Client {
    /// What each series of the counter `metric` of the site's gateways (`ran`) counted in
    /// the window. `increase()` alone misses what a series counted before its first sample:
    /// the agent creates a drop series at the first drop of its kind, so a series that
    /// appears while its gateway is already being scraped starts at 0, and its whole value
    /// was counted in the window. Such a series (none at the window's start, fewer samples
    /// than its gateway's `up`) counts its highest value; every other series its increase.
    fn counted(
        &self,
        metric: &str,
        window: &str,
        ran: &str,
        up_samples: &BTreeMap<String, f64>,
    ) -> Result<Vec<Sample>, ReportError> {
        let q = |f: &str| format!("{f}({metric}[{window}]) and on (instance) {ran}");
        let increase = self.query(&q("increase"))?;
        let max: BTreeMap<_, f64> = self
            .query(&q("max_over_time"))?
            .into_iter()
            .map(|s| (series_key(&s.labels), s.value))
            .collect();
        let samples: BTreeMap<_, f64> = self
            .query(&q("count_over_time"))?
            .into_iter()
            .map(|s| (series_key(&s.labels), s.value))
            .collect();
        let at_start: std::collections::BTreeSet<_> = self
            .query(&format!("{metric} offset {window}"))?
            .into_iter()
            .map(|s| series_key(&s.labels))
            .collect();
        Ok(increase
            .into_iter()
            .map(|mut s| {
                let key = series_key(&s.labels);
                let gateway_samples = s
                    .labels
                    .get("instance")
                    .and_then(|i| up_samples.get(i))
                    .copied()
                    .unwrap_or(0.0);
                let new_in_window = !at_start.contains(&key)
                    && samples.get(&key).is_some_and(|&n| n < gateway_samples);
                if new_in_window && let Some(&m) = max.get(&key) {
                    s.value = m;
                }
                s
            })
            .collect())
    }
}

/// Rounds an increase: Prometheus extrapolates `increase()` to the window's edges, so its
/// values are not whole numbers.
fn count(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}

pub fn from_prometheus(
    url: &str,
    window: &str,
    site: &str,
    sha256: &str,
) -> Result<Evidence, ReportError> {
    let base = url.trim_end_matches('/').to_owned();
    if !base.starts_with("http://") {
        return Err(ReportError::BadArgs(format!(
            "--prometheus {url}: give the server's base URL with http:// (e.g. http://127.0.0.1:9090); https is not supported by this build"
        )));
    }
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        // Plant networks: talk to the server itself, never through an environment proxy.
        .proxy(None)
        .build();
    let c = Client {
        agent: ureq::Agent::new_with_config(config),
        base: base.clone(),
        at: format!(
            "{:.3}",
            jiff::Timestamp::now().as_millisecond() as f64 / 1000.0
        ),
    };
    // The gateways: every instance that reported this site at some time in the window.
    let ran = format!(
        "max by (instance) (max_over_time(conduit_policy_info{{site=\"{site}\"}}[{window}]))"
    );
    let gateways: Vec<String> = {
        let mut g: Vec<String> = c
            .query(&ran)?
            .into_iter()
            .filter_map(|s| s.labels.get("instance").cloned())
            .collect();
        g.sort();
        g.dedup();
        g
    };
    let mut notes = vec![
        format!("Counters are increases over the last {window} as Prometheus computes them (increase(), extrapolated to the window's edges and rounded; a counter that first appeared within the window counts from 0): close to, not exactly, the packets counted."),
        "Conduit packets include replies; allowed traffic within a zone (intra_zone: allow) has no counter per zone.".to_owned(),
    ];
    if gateways.is_empty() {
        notes.push(format!("Prometheus at {base} has no sample of conduit_policy_info{{site=\"{site}\"}} in the last {window}: no gateway of this site reported in the window, so there are no counters."));
        return Ok(Evidence {
            source: "prometheus",
            state_dir: None,
            prometheus: Some(base),
            window: Some(window.to_owned()),
            gateways,
            live: Vec::new(),
            counters: None,
            notes,
        });
    }
    let up_samples: BTreeMap<String, f64> = c
        .query(&format!(
            "max by (instance) (count_over_time(up[{window}]))"
        ))?
        .into_iter()
        .filter_map(|s| Some((s.labels.get("instance")?.clone(), s.value)))
        .collect();
    let counted = |metric: &str| c.counted(metric, window, &ran, &up_samples);
    let mut k = Counters::default();
    for s in counted("conduit_packets_total")? {
        let (Some(gw), Some(name)) = (s.labels.get("instance"), s.labels.get("conduit")) else {
            continue;
        };
        let t: &mut Traffic = k.conduits.entry(name.clone()).or_default();
        t.packets += count(s.value);
        *t.per_gateway.entry(gw.clone()).or_insert(0) += count(s.value);
    }
    for s in counted("conduit_bytes_total")? {
        if let Some(name) = s.labels.get("conduit") {
            k.conduits.entry(name.clone()).or_default().bytes += count(s.value);
        }
    }
    for (metric, would) in [
        ("conduit_dropped_packets_total", false),
        ("conduit_would_drop_packets_total", true),
    ] {
        for s in counted(metric)? {
            let l = |n: &str| s.labels.get(n).cloned().unwrap_or_default();
            let target = if would { &mut k.would } else { &mut k.drops };
            target
                .entry((l("src_zone"), l("dst_zone"), l("reason")))
                .or_default()
                .add(&l("instance"), count(s.value));
        }
    }
    for (metric, would) in [
        ("conduit_inspection_dropped_packets_total", false),
        ("conduit_inspection_would_drop_packets_total", true),
    ] {
        for s in counted(metric)? {
            let l = |n: &str| s.labels.get(n).cloned().unwrap_or_default();
            let target = if would {
                &mut k.inspection_would
            } else {
                &mut k.inspection
            };
            *target.entry((l("conduit"), l("reason"))).or_insert(0) += count(s.value);
        }
    }
    k.lost.insert("flood".into(), 0);
    k.lost.insert("ring_full".into(), 0);
    k.lost.insert("write_error".into(), 0);
    for s in counted("conduit_audit_events_lost_total")? {
        if let Some(r) = s.labels.get("reason") {
            *k.lost.entry(r.clone()).or_insert(0) += count(s.value);
        }
    }
    let suppressed: u64 = c
        .query(&format!(
            "sum(increase(conduit_audit_events_suppressed_total[{window}]) and on (instance) {ran})"
        ))?
        .iter()
        .map(|s| count(s.value))
        .sum();
    k.suppressed = Some(suppressed);
    // What runs now: the current sample of each gateway (a reload ends the old series, so
    // only the live policy's is current).
    let info = c.query(&format!("conduit_policy_info{{site=\"{site}\"}}"))?;
    let generation: BTreeMap<String, u64> = c
        .query("conduit_policy_generation")?
        .into_iter()
        .filter_map(|s| Some((s.labels.get("instance")?.clone(), s.value as u64)))
        .collect();
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    for s in info {
        if let (Some(gw), Some(sha)) = (s.labels.get("instance"), s.labels.get("sha256")) {
            latest.insert(gw.clone(), sha.clone());
        }
    }
    for gw in gateways.iter().filter(|g| !latest.contains_key(*g)) {
        notes.push(format!("Gateway {gw} reported in the window but not now: what it runs now is not known; its counters up to its last report are included."));
    }
    let live = latest
        .into_iter()
        .map(|(gw, sha)| LiveId {
            generation: generation.get(&gw).copied(),
            gateway: Some(gw),
            matches: sha == sha256,
            sha256: sha,
            agent_running: None,
            agent_pid: None,
            policy_path: None,
            interfaces: Vec::new(),
        })
        .collect();
    Ok(Evidence {
        source: "prometheus",
        state_dir: None,
        prometheus: Some(base),
        window: Some(window.to_owned()),
        gateways,
        live,
        counters: Some(k),
        notes,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn windows() {
        for w in ["30d", "12h", "1h30m", "90s", "2w", "1y", "500ms"] {
            assert!(super::valid_window(w), "{w}");
        }
        for w in ["", "30", "d", "30 days", "-1d", "1.5h", "30d]"] {
            assert!(!super::valid_window(w), "{w}");
        }
    }
}
