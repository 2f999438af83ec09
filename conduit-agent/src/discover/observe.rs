//! What discover knows about a plant: flows (client, server, protocol, server port) with their
//! evidence, and which MAC each address was seen behind. Every source (captures, audit logs,
//! and later the agents' learn dirs) reduces its input to [`FlowObservation`]s and MAC/IP
//! sightings fed into one [`Observations`]; the draft is built from that alone.
//!
//! # Adding a source (the hook for `--learned DIR`)
//!
//! A source implements [`Source`]: it reads its input and calls [`Observations::flow`] once per
//! flow record (a connection of a capture, or an aggregated record of a learn dir: `stats`
//! carries the counts, `answered` how many of its connections were answered) and
//! [`Observations::pair`] for every (address, MAC) pairing it saw. Records of the same
//! [`FlowKey`] from any number of sources merge (counts add up, first/last widen, Modbus codes
//! unite), so several gateways' learn dirs and captures give one draft. A learned record maps
//! one to one: client, server, protocol, server port (ICMP: the request type), the client's
//! MAC (`pair(client, mac)`), answered or not, first and last seen, counts, and the Modbus
//! function codes per unit ID.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

/// Capture or record time, in ns since the Unix epoch (0: not known).
pub type Ts = u64;

/// A flow as the policy sees it: who opened it, to whom, what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    pub client: IpAddr,
    pub server: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// TCP/UDP: the server's port. ICMP/ICMPv6: the type of the request (8 echo-request).
    /// Other protocols: 0.
    pub port: u16,
}

/// The evidence for one [`FlowKey`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Connections (TCP), exchanges (UDP, ICMP) or learned records.
    pub connections: u64,
    /// Of those, how many were answered: a completed TCP handshake (or, for a connection
    /// already open when the capture began, data acknowledged in both directions), a UDP or
    /// ICMP reply.
    pub answered: u64,
    /// Of the answered TCP connections, how many were already open when the source began
    /// (no handshake in it): evidence, and a hint to look at the server/client choice.
    pub midstream: u64,
    pub packets: u64,
    pub bytes: u64,
    pub first: Ts,
    pub last: Ts,
    /// Modbus/TCP requests (client to server): unit ID → function codes seen.
    pub modbus: BTreeMap<u8, BTreeSet<u8>>,
}

impl FlowStats {
    pub fn merge(&mut self, o: &FlowStats) {
        self.connections += o.connections;
        self.answered += o.answered;
        self.midstream += o.midstream;
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.first = min_ts(self.first, o.first);
        self.last = self.last.max(o.last);
        for (u, f) in &o.modbus {
            self.modbus.entry(*u).or_default().extend(f);
        }
    }

    pub fn is_answered(&self) -> bool {
        self.answered > 0
    }
}

/// The earlier of two times, where 0 means unknown.
fn min_ts(a: Ts, b: Ts) -> Ts {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

/// One flow record from a source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowObservation {
    pub key: FlowKey,
    pub stats: FlowStats,
}

/// What a MAC or an address was seen with: one partner all along, or several.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Partner<T> {
    One(T),
    Several,
}

impl<T: PartialEq + Copy> Partner<T> {
    fn add<K: Ord>(map: &mut BTreeMap<K, Partner<T>>, k: K, v: T) {
        map.entry(k)
            .and_modify(|p| {
                if *p != Partner::One(v) {
                    *p = Partner::Several;
                }
            })
            .or_insert(Partner::One(v));
    }
}

/// A host (an address that sent IP traffic) and its evidence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    pub packets: u64,
    pub first: Ts,
    pub last: Ts,
}

/// What one source contributed, for the draft's header and the summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceSummary {
    /// `capture FILE`, `audit log FILE`, ...
    pub what: String,
    /// Frames or lines read.
    pub records: u64,
    /// Of those, IP packets (or flow lines).
    pub ip: u64,
    /// Frames the parser could not decode (counted, not used).
    pub malformed: u64,
    pub first: Ts,
    pub last: Ts,
}

/// Everything the sources saw.
#[derive(Debug, Default)]
pub struct Observations {
    pub flows: BTreeMap<FlowKey, FlowStats>,
    pub hosts: BTreeMap<IpAddr, HostStats>,
    /// Address → the MAC(s) it was seen with (as a frame's source).
    mac_of: BTreeMap<IpAddr, Partner<[u8; 6]>>,
    /// MAC → the address(es) it was seen with, of either family (a policy binds a MAC to one
    /// address: a dual-stack host gets no binding).
    addr_of: BTreeMap<[u8; 6], Partner<IpAddr>>,
    /// Non-IP EtherTypes seen (for the reviewer: `l2.allow_ethertypes`).
    pub ethertypes: BTreeMap<u16, u64>,
    pub sources: Vec<SourceSummary>,
}

/// Whether an address can be a host of its own (an asset): unicast, not link-local, not
/// unspecified, not loopback.
pub fn is_host_addr(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            !(v.is_unspecified()
                || v.is_loopback()
                || v.is_multicast()
                || v.is_broadcast()
                || v.is_link_local()
                || v.octets()[0] == 0)
        }
        IpAddr::V6(v) => {
            !(v.is_unspecified()
                || v.is_loopback()
                || v.is_multicast()
                || v.is_unicast_link_local())
        }
    }
}

impl Observations {
    /// Adds a flow record (merged with earlier records of the same key).
    pub fn flow(&mut self, o: FlowObservation) {
        match self.flows.get_mut(&o.key) {
            Some(s) => s.merge(&o.stats),
            None => {
                self.flows.insert(o.key, o.stats);
            }
        }
    }

    /// An address sent traffic at `ts` (it is a host).
    pub fn host(&mut self, ip: IpAddr, ts: Ts, packets: u64) {
        if !is_host_addr(ip) {
            return;
        }
        let h = self.hosts.entry(ip).or_default();
        h.packets += packets;
        h.first = min_ts(h.first, ts);
        h.last = h.last.max(ts);
    }

    /// A frame from `ip` came from `mac`.
    pub fn pair(&mut self, ip: IpAddr, mac: [u8; 6]) {
        if !is_host_addr(ip) || mac == [0; 6] || mac[0] & 1 == 1 {
            return;
        }
        Partner::add(&mut self.mac_of, ip, mac);
        Partner::add(&mut self.addr_of, mac, ip);
    }

    /// `ip` was seen with more than one MAC (a learn dir's record says so): never bound.
    pub fn several_macs(&mut self, ip: IpAddr) {
        if is_host_addr(ip) {
            self.mac_of.insert(ip, Partner::Several);
        }
    }

    /// The MAC to bind `ip` to: the one MAC it was seen with, when that MAC was seen with no
    /// other address for the whole window (a router's MAC, seen behind many
    /// addresses, is never bound).
    pub fn binding(&self, ip: IpAddr) -> Option<[u8; 6]> {
        let Some(Partner::One(mac)) = self.mac_of.get(&ip) else {
            return None;
        };
        match self.addr_of.get(mac) {
            Some(Partner::One(a)) if *a == ip => Some(*mac),
            _ => None,
        }
    }

    /// Why `ip` has no binding, for the evidence comment.
    pub fn binding_note(&self, ip: IpAddr) -> &'static str {
        match self.mac_of.get(&ip) {
            None => "no frame from it with its own MAC",
            Some(Partner::Several) => "seen with several MACs",
            Some(Partner::One(mac)) => match self.addr_of.get(mac) {
                Some(Partner::One(_)) => "",
                _ => "its MAC was seen with several addresses (a router, or a dual-stack host)",
            },
        }
    }
}

/// A source of observations: a capture, an audit log, a learn dir.
pub trait Source {
    /// Reads the whole input into `obs`. Errors name the input (and the frame or line).
    fn read_into(&mut self, obs: &mut Observations) -> Result<SourceSummary, super::DiscoverError>;
}
