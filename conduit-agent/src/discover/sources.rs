//! The sources discover reads today: captures (pcap and pcapng, streamed by
//! [`crate::capture`], so a capture larger than memory works) and audit logs written with
//! `log: all`.
use std::{
    collections::HashMap,
    io::BufRead as _,
    net::IpAddr,
    path::{Path, PathBuf},
};

use conduit_common::verdict::{KIND_IP, KIND_OTHER, Packet};

use super::{
    DiscoverError,
    observe::{FlowKey, FlowObservation, FlowStats, Observations, Source, SourceSummary, Ts},
    track::Tracker,
};
use crate::capture::{self, LINKTYPE_ETHERNET};

/// Link types understood: Ethernet, Linux cooked v1 and v2 (`tcpdump -i any`), raw IP.
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_LINUX_SLL: u32 = 113;
const LINKTYPE_IPV4: u32 = 228;
const LINKTYPE_IPV6: u32 = 229;
const LINKTYPE_LINUX_SLL2: u32 = 276;

/// A capture file, read as a stream.
pub struct Capture {
    pub path: PathBuf,
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

/// A frame in Ethernet framing (what `conduit_common::parse` reads), built from another link
/// type when needed, in `buf`. `None` when the link type cannot carry IP that we can decode.
fn as_ethernet<'a>(linktype: u32, data: &'a [u8], buf: &'a mut Vec<u8>) -> Option<&'a [u8]> {
    let mut frame = |src_mac: Option<&[u8]>, ethertype: u16, payload: &[u8]| {
        buf.clear();
        buf.extend_from_slice(&[0; 6]);
        match src_mac {
            Some(m) if m.len() == 6 => buf.extend_from_slice(m),
            _ => buf.extend_from_slice(&[0; 6]),
        }
        buf.extend_from_slice(&ethertype.to_be_bytes());
        buf.extend_from_slice(payload);
    };
    match linktype {
        LINKTYPE_ETHERNET => return Some(data),
        LINKTYPE_LINUX_SLL => {
            // packet type 2, ARPHRD 2, address length 2, address 8, protocol 2.
            let h = data.get(..16)?;
            let alen = usize::from(u16::from_be_bytes([h[4], h[5]]));
            let mac = (alen == 6).then(|| &h[6..12]);
            frame(mac, u16::from_be_bytes([h[14], h[15]]), &data[16..]);
        }
        LINKTYPE_LINUX_SLL2 => {
            // protocol 2, reserved 2, ifindex 4, ARPHRD 2, packet type 1, address length 1,
            // address 8.
            let h = data.get(..20)?;
            let mac = (h[11] == 6).then(|| &h[12..18]);
            frame(mac, u16::from_be_bytes([h[0], h[1]]), &data[20..]);
        }
        LINKTYPE_RAW | LINKTYPE_IPV4 | LINKTYPE_IPV6 => {
            let ethertype = match data.first()? >> 4 {
                4 => 0x0800,
                6 => 0x86dd,
                _ => return None,
            };
            frame(None, ethertype, data);
        }
        _ => return None,
    }
    Some(buf)
}

fn linktype_supported(l: u32) -> bool {
    matches!(
        l,
        LINKTYPE_ETHERNET
            | LINKTYPE_RAW
            | LINKTYPE_LINUX_SLL
            | LINKTYPE_IPV4
            | LINKTYPE_IPV6
            | LINKTYPE_LINUX_SLL2
    )
}

/// Frame-by-frame state of one capture.
struct Reading<'o> {
    obs: &'o mut Observations,
    tracker: Tracker,
    summary: SourceSummary,
    eth: Vec<u8>,
}

impl Reading<'_> {
    /// A frame of a supported link type.
    fn frame(&mut self, linktype: u32, data: &[u8], orig_len: u32, ts: Ts) {
        let Some(eth) = as_ethernet(linktype, data, &mut self.eth) else {
            self.summary.malformed += 1;
            return;
        };
        let p: Packet = match conduit_common::parse::parse(eth) {
            Ok(p) => p,
            Err(_) => {
                self.summary.malformed += 1;
                return;
            }
        };
        if ts != 0 {
            if self.summary.first == 0 {
                self.summary.first = ts;
            }
            self.summary.first = self.summary.first.min(ts);
            self.summary.last = self.summary.last.max(ts);
        }
        if p.kind == KIND_OTHER {
            *self.obs.ethertypes.entry(p.ethertype).or_default() += 1;
            return;
        }
        if p.kind != KIND_IP {
            return;
        }
        self.summary.ip += 1;
        let src = if p.family == conduit_common::FAMILY_V6 {
            IpAddr::from(p.src)
        } else {
            IpAddr::from([p.src[0], p.src[1], p.src[2], p.src[3]])
        };
        self.obs.host(src, ts, 1);
        if linktype != LINKTYPE_RAW && linktype != LINKTYPE_IPV4 && linktype != LINKTYPE_IPV6 {
            self.obs.pair(src, p.src_mac);
        }
        self.tracker.packet(&p, ts, u64::from(orig_len), self.obs);
    }
}

impl Source for Capture {
    fn read_into(&mut self, obs: &mut Observations) -> Result<SourceSummary, DiscoverError> {
        let path = shown(&self.path);
        let mut capture = capture::Capture::open(&self.path)?;
        let mut r = Reading {
            obs,
            tracker: Tracker::default(),
            summary: SourceSummary {
                what: format!("capture {path}"),
                ..SourceSummary::default()
            },
            eth: Vec::with_capacity(2048),
        };
        while let Some(f) = capture.next_frame()? {
            r.summary.records += 1;
            if !linktype_supported(f.linktype) {
                let problem = f.unsupported_link_type(
                    "Ethernet 1, Linux cooked 113 and 276, raw IP 101, 228, 229 are",
                );
                return Err(capture.error(problem).into());
            }
            r.frame(f.linktype, f.data, f.orig_len, f.ts_ns);
        }
        let Reading {
            tracker,
            summary,
            obs,
            ..
        } = r;
        tracker.finish(obs);
        if summary.ip == 0 {
            return Err(DiscoverError::input(
                &path,
                format!(
                    "no IP traffic in {} frame(s): nothing to discover",
                    summary.records
                ),
            ));
        }
        Ok(summary)
    }
}

/// Opens a regular file for reading (a FIFO or device is refused, as for policies).
fn open_regular(path: &Path) -> Result<std::fs::File, DiscoverError> {
    let s = shown(path);
    let m = std::fs::metadata(path)
        .map_err(|e| DiscoverError::input(&s, format!("cannot read: {e}")))?;
    if !m.is_file() {
        return Err(DiscoverError::input(&s, "not a regular file".into()));
    }
    std::fs::File::open(path).map_err(|e| DiscoverError::input(&s, format!("cannot read: {e}")))
}

/// An audit log (SPEC §4, JSON lines) written with `log: all`: every allowed packet has a
/// line, so a flow is answered when a line goes the other way (server to client). Denied
/// lines are flows the policy of the time did not allow; they count as seen (and answered if
/// the other side answered, in monitor mode).
pub struct AuditLog {
    pub path: PathBuf,
}

#[derive(serde::Deserialize)]
struct Line {
    ts: Option<String>,
    src_ip: Option<IpAddr>,
    dst_ip: Option<IpAddr>,
    proto: Option<serde_json::Value>,
    sport: Option<u16>,
    dport: Option<u16>,
    icmp_type: Option<u16>,
}

/// RFC 3339 (as the audit log writes it: `YYYY-MM-DDTHH:MM:SS[.frac]Z`; another offset is
/// read as the instant it names) to ns since the epoch; `None` before 1970 or not RFC 3339.
pub fn parse_rfc3339(s: &str) -> Option<Ts> {
    let t: jiff::Timestamp = s.parse().ok()?;
    u64::try_from(t.as_nanosecond()).ok()
}

impl Source for AuditLog {
    fn read_into(&mut self, obs: &mut Observations) -> Result<SourceSummary, DiscoverError> {
        let path = shown(&self.path);
        let file = open_regular(&self.path)?;
        let mut summary = SourceSummary {
            what: format!("audit log {path}"),
            ..SourceSummary::default()
        };
        // (client, client port, server, server port or icmp, proto) → stats; the key's
        // direction is that of its first line.
        type K = (IpAddr, u16, IpAddr, u16, u8);
        let mut conns: HashMap<K, (FlowStats, bool)> = HashMap::new();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let n = i + 1;
            let line = line
                .map_err(|e| DiscoverError::input(&path, format!("line {n}: cannot read: {e}")))?;
            if line.trim().is_empty() {
                continue;
            }
            summary.records += 1;
            let l: Line = serde_json::from_str(&line).map_err(|e| {
                DiscoverError::input(
                    &path,
                    format!("line {n}: not an audit log line (JSON object): {e}"),
                )
            })?;
            let (Some(src), Some(dst)) = (l.src_ip, l.dst_ip) else {
                continue; // ARP and non-IP events.
            };
            let proto = match &l.proto {
                Some(serde_json::Value::String(s)) => match s.as_str() {
                    "tcp" => 6,
                    "udp" => 17,
                    "icmp" => 1,
                    "icmpv6" => 58,
                    _ => continue,
                },
                Some(serde_json::Value::Number(x)) => {
                    match x.as_u64().and_then(|x| u8::try_from(x).ok()) {
                        Some(x) => x,
                        None => continue,
                    }
                }
                _ => continue,
            };
            let ts = match l.ts.as_deref() {
                Some(t) => parse_rfc3339(t).ok_or_else(|| {
                    DiscoverError::input(
                        &path,
                        format!("line {n}: `ts` is not an RFC 3339 time: {t}"),
                    )
                })?,
                None => 0,
            };
            summary.ip += 1;
            if ts != 0 {
                summary.first = if summary.first == 0 {
                    ts
                } else {
                    summary.first.min(ts)
                };
                summary.last = summary.last.max(ts);
            }
            obs.host(src, ts, 1);
            let (sp, dp, reply) = match proto {
                6 | 17 => (l.sport.unwrap_or(0), l.dport.unwrap_or(0), false),
                1 | 58 => {
                    let ty = l.icmp_type.unwrap_or(0);
                    let (req, rep) = if proto == 58 { (128, 129) } else { (8, 0) };
                    if ty == rep {
                        (req, req, true)
                    } else {
                        (ty, ty, false)
                    }
                }
                _ => (0, 0, false),
            };
            let fwd: K = (src, sp, dst, dp, proto);
            let rev: K = (dst, dp, src, sp, proto);
            let (entry, from_server) =
                if reply || (!conns.contains_key(&fwd) && conns.contains_key(&rev)) {
                    (
                        conns
                            .entry(rev)
                            .or_insert_with(|| (FlowStats::default(), false)),
                        true,
                    )
                } else {
                    (
                        conns
                            .entry(fwd)
                            .or_insert_with(|| (FlowStats::default(), false)),
                        false,
                    )
                };
            let (st, answered) = entry;
            st.packets += 1;
            st.first = if st.first == 0 { ts } else { st.first.min(ts) };
            st.last = st.last.max(ts);
            if from_server {
                *answered = true;
            }
        }
        let mut keys: Vec<K> = conns.keys().copied().collect();
        keys.sort();
        for k in keys {
            let (mut stats, answered) = conns.remove(&k).expect("listed");
            let (client, _, server, port, proto) = k;
            stats.connections = 1;
            stats.answered = u64::from(answered);
            obs.flow(FlowObservation {
                key: FlowKey {
                    client,
                    server,
                    proto,
                    port: if matches!(proto, 6 | 17 | 1 | 58) {
                        port
                    } else {
                        0
                    },
                },
                stats,
            });
        }
        if summary.ip == 0 {
            return Err(DiscoverError::input(
                &path,
                format!(
                    "no IP traffic in {} line(s): nothing to discover",
                    summary.records
                ),
            ));
        }
        Ok(summary)
    }
}
