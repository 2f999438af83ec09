//! The sources discover reads today: captures (pcap and pcapng, streamed through a fixed
//! buffer, so a capture larger than memory works) and audit logs written with `log: all`.
use std::{
    collections::HashMap,
    io::{BufRead as _, Read as _},
    net::IpAddr,
    path::{Path, PathBuf},
};

use conduit_common::verdict::{KIND_IP, KIND_OTHER, Packet};
use pcap_parser::{Block, PcapBlockOwned, PcapError};

use super::{
    DiscoverError,
    observe::{FlowKey, FlowObservation, FlowStats, Observations, Source, SourceSummary, Ts},
    track::Tracker,
};

/// Link types understood: Ethernet, Linux cooked v1 and v2 (`tcpdump -i any`), raw IP.
const LINKTYPE_ETHERNET: i32 = 1;
const LINKTYPE_RAW: i32 = 101;
const LINKTYPE_LINUX_SLL: i32 = 113;
const LINKTYPE_IPV4: i32 = 228;
const LINKTYPE_IPV6: i32 = 229;
const LINKTYPE_LINUX_SLL2: i32 = 276;
/// The read buffer, and the most it may grow to for one record.
const BUFFER: usize = 1 << 20;
const MAX_RECORD: usize = 16 << 20;

/// A capture file, read as a stream.
pub struct Capture {
    pub path: PathBuf,
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

/// A frame in Ethernet framing (what `conduit_common::parse` reads), built from another link
/// type when needed, in `buf`. `None` when the link type cannot carry IP that we can decode.
fn as_ethernet<'a>(linktype: i32, data: &'a [u8], buf: &'a mut Vec<u8>) -> Option<&'a [u8]> {
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

fn linktype_supported(l: i32) -> bool {
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

/// Per-interface facts of a pcapng section.
#[derive(Clone, Copy)]
struct Iface {
    linktype: i32,
    /// Timestamp units per second, and offset in seconds.
    resolution: u64,
    offset: i64,
}

/// Frame-by-frame state of one capture.
struct Reading<'o> {
    path: String,
    obs: &'o mut Observations,
    tracker: Tracker,
    summary: SourceSummary,
    frame: u64,
    eth: Vec<u8>,
}

impl Reading<'_> {
    fn frame(
        &mut self,
        linktype: i32,
        data: &[u8],
        orig_len: u32,
        ts: Ts,
    ) -> Result<(), DiscoverError> {
        self.summary.records += 1;
        if !linktype_supported(linktype) {
            return Err(DiscoverError::input(
                &self.path,
                format!(
                    "frame {}: link type {linktype} is not supported (Ethernet 1, Linux cooked 113 and 276, raw IP 101, 228, 229 are)",
                    self.frame
                ),
            ));
        }
        let Some(eth) = as_ethernet(linktype, data, &mut self.eth) else {
            self.summary.malformed += 1;
            return Ok(());
        };
        let p: Packet = match conduit_common::parse::parse(eth) {
            Ok(p) => p,
            Err(_) => {
                self.summary.malformed += 1;
                return Ok(());
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
            return Ok(());
        }
        if p.kind != KIND_IP {
            return Ok(());
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
        Ok(())
    }
}

impl Source for Capture {
    fn read_into(&mut self, obs: &mut Observations) -> Result<SourceSummary, DiscoverError> {
        let path = shown(&self.path);
        let err = |m: String| DiscoverError::input(&path, m);
        let mut file = open_regular(&self.path)?;
        // gzip: say so rather than "not a capture".
        let mut magic = [0u8; 2];
        let n = file
            .read(&mut magic)
            .map_err(|e| err(format!("cannot read: {e}")))?;
        if n == 2 && magic == [0x1f, 0x8b] {
            return Err(err(
                "a gzip-compressed file, not a pcap or pcapng file: decompress it first (gunzip)"
                    .into(),
            ));
        }
        std::io::Seek::rewind(&mut file).map_err(|e| err(format!("cannot read: {e}")))?;
        let mut reader = match pcap_parser::create_reader(BUFFER, file) {
            Ok(r) => r,
            Err(PcapError::Eof) => {
                return Err(err("the file is empty, not a pcap or pcapng file".into()));
            }
            Err(PcapError::Incomplete(_)) => {
                return Err(err(
                    "truncated: the file is shorter than a capture file header".into(),
                ));
            }
            Err(_) => return Err(err("not a pcap or pcapng file (unknown file header)".into())),
        };
        let mut r = Reading {
            path: path.clone(),
            obs,
            tracker: Tracker::default(),
            summary: SourceSummary {
                what: format!("capture {path}"),
                ..SourceSummary::default()
            },
            frame: 0,
            eth: Vec::with_capacity(2048),
        };
        let mut capacity = BUFFER;
        // Classic pcap: link type and timestamp unit from the header.
        let mut legacy: Option<(i32, u64)> = None;
        let mut ifaces: Vec<Iface> = Vec::new();
        loop {
            match reader.next() {
                Ok((len, block)) => {
                    match block {
                        PcapBlockOwned::LegacyHeader(h) => {
                            let unit = if h.is_nanosecond_precision() { 1 } else { 1000 };
                            legacy = Some((h.network.0, unit));
                        }
                        PcapBlockOwned::Legacy(b) => {
                            r.frame += 1;
                            let (linktype, unit) = legacy.unwrap_or((LINKTYPE_ETHERNET, 1000));
                            let ts =
                                u64::from(b.ts_sec) * 1_000_000_000 + u64::from(b.ts_usec) * unit;
                            r.frame(linktype, b.data, b.origlen, ts)?;
                        }
                        PcapBlockOwned::NG(Block::SectionHeader(_)) => ifaces.clear(),
                        PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                            let Some(resolution) = idb.ts_resolution() else {
                                return Err(err(format!(
                                    "interface {}: invalid timestamp resolution",
                                    ifaces.len()
                                )));
                            };
                            ifaces.push(Iface {
                                linktype: idb.linktype.0,
                                resolution: resolution.max(1),
                                offset: idb.ts_offset(),
                            });
                        }
                        PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                            r.frame += 1;
                            let Some(i) = ifaces.get(epb.if_id as usize).copied() else {
                                return Err(err(format!(
                                    "frame {}: names interface {}, but the file describes {} interface(s) (corrupt capture)",
                                    r.frame,
                                    epb.if_id,
                                    ifaces.len()
                                )));
                            };
                            let raw = (u128::from(epb.ts_high) << 32) | u128::from(epb.ts_low);
                            let ns = raw * 1_000_000_000 / u128::from(i.resolution);
                            let ns = (ns as i128 + i128::from(i.offset) * 1_000_000_000).max(0);
                            let ts = u64::try_from(ns).unwrap_or(u64::MAX);
                            let data = epb.data.get(..epb.caplen as usize).unwrap_or(epb.data);
                            r.frame(i.linktype, data, epb.origlen, ts)?;
                        }
                        PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                            r.frame += 1;
                            let Some(i) = ifaces.first().copied() else {
                                return Err(err(format!(
                                    "frame {}: a simple packet block before any interface description (corrupt capture)",
                                    r.frame
                                )));
                            };
                            r.frame(i.linktype, spb.data, spb.origlen, 0)?;
                        }
                        PcapBlockOwned::NG(_) => {}
                    }
                    reader.consume(len);
                }
                Err(PcapError::Eof) => break,
                Err(PcapError::Incomplete(_)) => {
                    reader
                        .refill()
                        .map_err(|e| err(format!("cannot read after frame {}: {e}", r.frame)))?;
                }
                Err(PcapError::BufferTooSmall) => {
                    if capacity >= MAX_RECORD || !reader.grow(capacity * 2) {
                        return Err(err(format!(
                            "frame {}: a record larger than {} MiB at byte {} (corrupt capture)",
                            r.frame + 1,
                            MAX_RECORD >> 20,
                            reader.consumed()
                        )));
                    }
                    capacity *= 2;
                    reader
                        .refill()
                        .map_err(|e| err(format!("cannot read after frame {}: {e}", r.frame)))?;
                }
                Err(PcapError::UnexpectedEof) => {
                    return Err(err(format!(
                        "truncated: frame {} at byte {} is cut off (the capture ends inside it)",
                        r.frame + 1,
                        reader.consumed()
                    )));
                }
                Err(e) => {
                    let e = e.to_string();
                    return Err(err(format!(
                        "corrupt capture: frame {} at byte {}: {e}",
                        r.frame + 1,
                        reader.consumed()
                    )));
                }
            }
        }
        let Reading {
            tracker,
            summary,
            obs,
            ..
        } = r;
        tracker.finish(obs);
        if summary.ip == 0 {
            return Err(err(format!(
                "no IP traffic in {} frame(s): nothing to discover",
                summary.records
            )));
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

/// RFC 3339 (as the audit log writes it: `YYYY-MM-DDTHH:MM:SS[.frac]Z`) to ns since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<Ts> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = &s[19..];
    let (frac, tz) = match rest.strip_prefix('.') {
        Some(r) => {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            let digits = &r[..end.min(9)];
            let mut ns: i64 = digits.parse().ok()?;
            for _ in digits.len()..9 {
                ns *= 10;
            }
            (ns, &r[end..])
        }
        None => (0, rest),
    };
    if tz != "Z" {
        return None;
    }
    let days = crate::agent::audit::days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec;
    u64::try_from(secs)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(frac as u64)
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
