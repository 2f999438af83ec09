//! The learn dir (`conduit run --learn-dir DIR`, read by `conduit discover --learned DIR`):
//! what a gateway's datapath learned (`conduit_common::learn`), aggregated over weeks and
//! restarts in one file, `DIR/learned.jsonl`.
//!
//! JSON lines: a header (`{"conduit_learn": 1, "gateway": ..., "written": ..., "dropped":
//! {...}}`), then one line per flow record (client, server, protocol, server port) and one per
//! Modbus record (client, server, unit ID), sorted, so the same records give the same file.
//! A flow record is at most 460 bytes (IPv6 addresses, both MACs; about 300 for IPv4), a
//! Modbus record at most 640 (every function code); the file holds at most
//! `max_records` records (`--learn-max-records`, 100,000 by default: at most about 46 MB of
//! flow records) and counts what did not fit (`dropped.disk`). A record already in the file is updated
//! whatever the cap. The file is rewritten whole (a temporary file, fsync, rename), so a
//! crash leaves the previous version, never half a file.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{agent::audit::rfc3339, discover::sources::parse_rfc3339};

/// The file in a learn dir.
pub const FILE: &str = "learned.jsonl";
/// The format this conduit writes and reads (the header's `conduit_learn`).
pub const FORMAT: u32 = 1;
/// The default cap on records.
pub const DEFAULT_MAX_RECORDS: usize = 100_000;

/// A flow as discover sees it. `port`: TCP/UDP the server's port, ICMP/ICMPv6 the request's
/// type, 0 for other protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowId {
    pub client: IpAddr,
    pub server: IpAddr,
    pub proto: u8,
    pub port: u16,
}

/// What was learned of a [`FlowId`]. Times in ns since the Unix epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowRec {
    /// The MAC of the client's frames (`None`: only its server's replies were seen).
    pub client_mac: Option<[u8; 6]>,
    /// The client's frames came from more than one MAC.
    pub mac_varies: bool,
    /// The MAC of the server's answers, and whether it varied.
    pub server_mac: Option<[u8; 6]>,
    pub server_mac_varies: bool,
    pub flows: u64,
    pub answered: u64,
    pub denied: u64,
    /// The verdict and reason of the latest flow or denied frame.
    pub verdict: String,
    pub reason: String,
    pub first: u64,
    pub last: u64,
}

impl FlowRec {
    fn merge(&mut self, o: &FlowRec) {
        self.flows += o.flows;
        self.answered += o.answered;
        self.denied += o.denied;
        merge_mac(
            &mut self.client_mac,
            &mut self.mac_varies,
            o.client_mac,
            o.mac_varies,
        );
        merge_mac(
            &mut self.server_mac,
            &mut self.server_mac_varies,
            o.server_mac,
            o.server_mac_varies,
        );
        if o.last >= self.last && !o.verdict.is_empty() {
            self.verdict.clone_from(&o.verdict);
            self.reason.clone_from(&o.reason);
        }
        self.first = self.first.min(o.first);
        self.last = self.last.max(o.last);
    }
}

fn merge_mac(mac: &mut Option<[u8; 6]>, varies: &mut bool, other: Option<[u8; 6]>, o_varies: bool) {
    match (*mac, other) {
        (None, m) => *mac = m,
        (Some(a), Some(b)) if a != b => *varies = true,
        _ => {}
    }
    *varies |= o_varies;
}

/// A client's Modbus/TCP requests to one unit of a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModbusId {
    pub client: IpAddr,
    pub server: IpAddr,
    pub unit: u8,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModbusRec {
    pub functions: BTreeSet<u8>,
    pub first: u64,
    pub last: u64,
}

/// Records that did not fit: in the kernel's maps (flows, Modbus), in the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    pub kernel: u64,
    pub kernel_modbus: u64,
    pub disk: u64,
}

impl Dropped {
    pub fn total(&self) -> u64 {
        self.kernel + self.kernel_modbus + self.disk
    }
}

/// A learn dir's records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Store {
    /// The host that learned them.
    pub gateway: String,
    pub flows: BTreeMap<FlowId, FlowRec>,
    pub modbus: BTreeMap<ModbusId, ModbusRec>,
    pub dropped: Dropped,
    pub max_records: usize,
}

#[derive(Serialize, Deserialize)]
struct Header {
    conduit_learn: u32,
    gateway: String,
    written: String,
    records: usize,
    max_records: usize,
    dropped: Dropped,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum Line {
    Flow {
        client: IpAddr,
        server: IpAddr,
        proto: u8,
        port: u16,
        client_mac: Option<String>,
        mac_varies: bool,
        server_mac: Option<String>,
        server_mac_varies: bool,
        flows: u64,
        answered: u64,
        denied: u64,
        verdict: String,
        reason: String,
        first: String,
        last: String,
    },
    Modbus {
        client: IpAddr,
        server: IpAddr,
        unit: u8,
        functions: Vec<u8>,
        first: String,
        last: String,
    },
}

/// Why a learn dir could not be read: the file (and line) and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct LearnError {
    pub file: String,
    pub message: String,
}

impl Store {
    pub fn new(gateway: String, max_records: usize) -> Self {
        Self {
            gateway,
            flows: BTreeMap::new(),
            modbus: BTreeMap::new(),
            dropped: Dropped::default(),
            max_records,
        }
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    pub fn records(&self) -> usize {
        self.flows.len() + self.modbus.len()
    }

    fn room(&mut self) -> bool {
        if self.records() < self.max_records {
            true
        } else {
            self.dropped.disk += 1;
            false
        }
    }

    /// Adds a flow record (merged into the one of the same flow).
    pub fn add_flow(&mut self, id: FlowId, rec: FlowRec) {
        if let Some(r) = self.flows.get_mut(&id) {
            r.merge(&rec);
        } else if self.room() {
            self.flows.insert(id, rec);
        }
    }

    /// Adds Modbus requests (merged into the record of the same client, server and unit).
    pub fn add_modbus(&mut self, id: ModbusId, rec: ModbusRec) {
        if let Some(r) = self.modbus.get_mut(&id) {
            r.functions.extend(&rec.functions);
            r.first = r.first.min(rec.first);
            r.last = r.last.max(rec.last);
        } else if self.room() {
            self.modbus.insert(id, rec);
        }
    }

    /// The learn dir's file; `None` when it has none yet. Errors name the file and line.
    pub fn load(dir: &Path) -> Result<Option<Store>, LearnError> {
        let path = Self::path(dir);
        let shown = path.display().to_string();
        let err = |message: String| LearnError {
            file: shown.clone(),
            message,
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if dir.is_dir() {
                    return Ok(None);
                }
                return Err(LearnError {
                    file: dir.display().to_string(),
                    message: "not a directory (a learn dir is the --learn-dir of `conduit run`)"
                        .into(),
                });
            }
            Err(e) => return Err(err(format!("cannot read: {e}"))),
        };
        let mut lines = text.lines().enumerate();
        let header: Header = lines
            .next()
            .and_then(|(_, l)| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                let format = v.get("conduit_learn")?.as_u64()?;
                Some((format, l))
            })
            .ok_or_else(|| {
                err("line 1: not a conduit learn file (no `conduit_learn` header)".into())
            })
            .and_then(|(format, l)| {
                if format != u64::from(FORMAT) {
                    return Err(err(format!(
                        "written in learn format {format} by another version of conduit; this \
                         one reads format {FORMAT} (read it with the conduit that wrote it, or \
                         start a new learn dir)"
                    )));
                }
                serde_json::from_str(l).map_err(|e| err(format!("line 1: bad header: {e}")))
            })?;
        let mut store = Store::new(header.gateway, header.max_records);
        store.dropped = header.dropped;
        for (i, l) in lines {
            let n = i + 1;
            if l.trim().is_empty() {
                continue;
            }
            let line: Line =
                serde_json::from_str(l).map_err(|e| err(format!("line {n}: bad record: {e}")))?;
            let time = |s: &str| {
                parse_rfc3339(s).ok_or_else(|| err(format!("line {n}: not an RFC 3339 time: {s}")))
            };
            match line {
                Line::Flow {
                    client,
                    server,
                    proto,
                    port,
                    client_mac,
                    mac_varies,
                    server_mac,
                    server_mac_varies,
                    flows,
                    answered,
                    denied,
                    verdict,
                    reason,
                    first,
                    last,
                } => {
                    let mac = |m: Option<String>, what: &str| {
                        m.map(|m| {
                            crate::policy::addr::mac(&m)
                                .map_err(|e| err(format!("line {n}: {what}: {e}")))
                        })
                        .transpose()
                    };
                    let rec = FlowRec {
                        client_mac: mac(client_mac, "client_mac")?,
                        mac_varies,
                        server_mac: mac(server_mac, "server_mac")?,
                        server_mac_varies,
                        flows,
                        answered,
                        denied,
                        verdict,
                        reason,
                        first: time(&first)?,
                        last: time(&last)?,
                    };
                    let id = FlowId {
                        client,
                        server,
                        proto,
                        port,
                    };
                    store.flows.insert(id, rec);
                }
                Line::Modbus {
                    client,
                    server,
                    unit,
                    functions,
                    first,
                    last,
                } => {
                    let rec = ModbusRec {
                        functions: functions.into_iter().collect(),
                        first: time(&first)?,
                        last: time(&last)?,
                    };
                    store.modbus.insert(
                        ModbusId {
                            client,
                            server,
                            unit,
                        },
                        rec,
                    );
                }
            }
        }
        Ok(Some(store))
    }

    /// The file's text (sorted records after the header; `written` in the header).
    pub fn render(&self, written_ns: u128) -> String {
        let mut out = String::new();
        let header = Header {
            conduit_learn: FORMAT,
            gateway: self.gateway.clone(),
            written: rfc3339(written_ns),
            records: self.records(),
            max_records: self.max_records,
            dropped: self.dropped,
        };
        let mut push = |v: String| {
            out.push_str(&v);
            out.push('\n');
        };
        push(json(&header));
        for (id, r) in &self.flows {
            push(json(&Line::Flow {
                client: id.client,
                server: id.server,
                proto: id.proto,
                port: id.port,
                client_mac: r.client_mac.as_ref().map(crate::policy::validate::fmt_mac),
                mac_varies: r.mac_varies,
                server_mac: r.server_mac.as_ref().map(crate::policy::validate::fmt_mac),
                server_mac_varies: r.server_mac_varies,
                flows: r.flows,
                answered: r.answered,
                denied: r.denied,
                verdict: r.verdict.clone(),
                reason: r.reason.clone(),
                first: rfc3339(u128::from(r.first)),
                last: rfc3339(u128::from(r.last)),
            }));
        }
        for (id, r) in &self.modbus {
            push(json(&Line::Modbus {
                client: id.client,
                server: id.server,
                unit: id.unit,
                functions: r.functions.iter().copied().collect(),
                first: rfc3339(u128::from(r.first)),
                last: rfc3339(u128::from(r.last)),
            }));
        }
        out
    }

    /// Writes the file: a temporary file beside it, fsync, rename, fsync of the directory.
    /// Returns the bytes written.
    pub fn save(&self, dir: &Path, written_ns: u128) -> std::io::Result<usize> {
        let text = self.render(written_ns);
        let tmp = dir.join(format!(".{FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, Self::path(dir))?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(text.len())
    }
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sample() -> Store {
        let mut s = Store::new("gw1".into(), 3);
        s.add_flow(
            FlowId {
                client: ip("10.0.1.5"),
                server: ip("10.0.2.10"),
                proto: 6,
                port: 502,
            },
            FlowRec {
                client_mac: Some([2, 0, 0, 0, 1, 5]),
                flows: 2,
                answered: 2,
                verdict: "would_deny".into(),
                reason: "no_conduit".into(),
                first: 1_700_000_000_000_000_000,
                last: 1_700_000_060_000_000_000,
                ..FlowRec::default()
            },
        );
        s.add_modbus(
            ModbusId {
                client: ip("10.0.1.5"),
                server: ip("10.0.2.10"),
                unit: 1,
            },
            ModbusRec {
                functions: [3, 16].into(),
                first: 1_700_000_001_000_000_000,
                last: 1_700_000_002_000_000_000,
            },
        );
        s
    }

    #[test]
    fn round_trip_and_merge() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sample();
        s.save(dir.path(), 1_700_000_100_000_000_000).unwrap();
        let back = Store::load(dir.path()).unwrap().unwrap();
        assert_eq!(back, s);
        // The same record again: counts add up, a second MAC marks the client.
        let id = *s.flows.keys().next().unwrap();
        s.add_flow(
            id,
            FlowRec {
                client_mac: Some([2, 0, 0, 0, 9, 9]),
                flows: 1,
                verdict: "allow".into(),
                reason: "conduit".into(),
                first: 1_600_000_000_000_000_000,
                last: 1_800_000_000_000_000_000,
                ..FlowRec::default()
            },
        );
        let r = &s.flows[&id];
        assert_eq!((r.flows, r.answered, r.mac_varies), (3, 2, true));
        assert_eq!(
            (r.verdict.as_str(), r.first),
            ("allow", 1_600_000_000_000_000_000)
        );
    }

    /// The size per record the documentation gives (`--learn-max-records`): the longest
    /// line, IPv6 addresses, both MACs, the largest counts and the longest reason.
    #[test]
    fn a_record_is_at_most_460_bytes() {
        let mut s = Store::new("gw".into(), 10);
        let v6 = ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe");
        s.add_flow(
            FlowId {
                client: v6,
                server: ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
                proto: 255,
                port: 65535,
            },
            FlowRec {
                client_mac: Some([0xff; 6]),
                mac_varies: true,
                server_mac: Some([0xff; 6]),
                server_mac_varies: true,
                flows: u64::from(u32::MAX) * 10_000,
                answered: u64::from(u32::MAX) * 10_000,
                denied: u64::from(u32::MAX) * 10_000,
                verdict: "would_deny".into(),
                reason: "neighbor_discovery".into(),
                first: u64::MAX,
                last: u64::MAX,
            },
        );
        s.add_modbus(
            ModbusId {
                client: v6,
                server: v6,
                unit: 255,
            },
            ModbusRec {
                functions: (0..128).collect(),
                first: u64::MAX,
                last: u64::MAX,
            },
        );
        let text = s.render(0);
        let mut lines = text.lines().skip(1);
        let flow = lines.next().unwrap();
        assert!(flow.len() <= 460, "{} bytes: {flow}", flow.len());
        // Every Modbus function code at once is the one longer line (about 600 bytes).
        let modbus = lines.next().unwrap();
        assert!(modbus.len() <= 640, "{} bytes: {modbus}", modbus.len());
    }

    #[test]
    fn the_cap_counts_what_does_not_fit() {
        let mut s = sample();
        for i in 0..3 {
            s.add_flow(
                FlowId {
                    client: ip("10.0.1.6"),
                    server: ip("10.0.2.10"),
                    proto: 17,
                    port: 123 + i,
                },
                FlowRec::default(),
            );
        }
        assert_eq!((s.records(), s.dropped.disk), (3, 2));
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Store::load(dir.path()).unwrap(), None);
        let path = Store::path(dir.path());
        std::fs::write(&path, "{\"conduit_learn\": 7}\n").unwrap();
        let e = Store::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("learn format 7") && e.contains(FILE), "{e}");
        std::fs::write(&path, "hello\n").unwrap();
        let e = Store::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("line 1: not a conduit learn file"), "{e}");
        let mut text = sample().render(0);
        text.push_str("{\"kind\":\"flow\"}\n");
        std::fs::write(&path, text).unwrap();
        let e = Store::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("line 4: bad record"), "{e}");
    }
}
