//! The compiler: a pure, deterministic function from a validated [`Policy`] to the exact
//! contents of the datapath's maps for one policy slot. No I/O; ordered maps only.
//!
//! IDs are stable across edits: a zone's, asset's or conduit's ID is a hash of its name, so
//! adding or removing one conduit renumbers no other (dashboards and counters rely on it).
//! Two names whose hashes collide are separated by probing in name order; that is the only
//! case where an edit can move another ID, and it is vanishingly rare with 31-bit IDs.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use conduit_common::{
    verdict::{ND_OWN_ADDRESS, PROTO_ICMPV6, Tables},
    *,
};

use super::{
    diag::Pos,
    model::{Addr, LogLevel, Mode, Policy, Proto, ReversePath, Rule},
};

/// A policy compiled for one slot: the map contents, and the names behind the IDs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    pub slot: u8,
    pub id_exact: BTreeMap<IpKey, Identity>,
    /// (prefix length in bits, data) → identity.
    pub id_cidr: BTreeMap<(u32, LpmIpData), Identity>,
    pub mac: BTreeMap<MacKey, MacBinding>,
    /// (prefix length in bits, data) → conduit.
    pub conduits: BTreeMap<(u32, LpmConduitData), ConduitHit>,
    /// The rules' inspection filters, one entry per distinct filter.
    pub filters: BTreeMap<FilterKey, Filter>,
    /// Every zone's settings, and `unknown`'s (its reverse-path check).
    pub zones: BTreeMap<ZoneKey, ZoneCfg>,
    /// The zones' `interfaces`, by name.
    pub zone_ifs: BTreeSet<ZoneIfKey>,
    /// Not compiled from the policy: what is known of ingress interfaces (the agent writes
    /// it for the interfaces it attaches to; `explain --in` fills it). Empty here.
    pub ingress: BTreeMap<u32, IngressCfg>,
    /// Not compiled either: the instant conduits' ends are judged at (`explain --at`), in
    /// seconds since the epoch; `None`: now, on CLOCK_TAI as the kernel reads it.
    pub clock: Option<u32>,
    /// Not compiled either: the open grants of on-demand conduits, conduit id → end in
    /// seconds of CLOCK_BOOTTIME (the agent's, written into the kernel's grants map with the
    /// policy; `explain --grant` opens one without end). Empty here: every on-demand conduit
    /// is closed.
    pub grants: BTreeMap<u32, u32>,
    pub live: BTreeMap<ConduitKey, ConduitInfo>,
    pub l2: BTreeSet<EtherTypeKey>,
    /// The gateway's own addresses on the failsafe ports (see [`Compiled::with_failsafe`]).
    pub failsafe: BTreeSet<FailsafeKey>,
    /// `defaults.failsafe` as (protocol, inclusive port range).
    pub failsafe_ports: Vec<(u8, u16, u16)>,
    pub settings: Settings,
    pub zone_ids: BTreeMap<String, u32>,
    pub asset_principals: BTreeMap<String, u32>,
    pub conduit_ids: BTreeMap<String, u32>,
    /// Rules every entry of which an earlier conduit already claims: (conduit, rule position).
    pub shadowed: Vec<(String, Pos)>,
    cidr_lens: BTreeSet<u32>,
    conduit_lens: BTreeSet<u32>,
}

/// A limit of the datapath that the policy exceeds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the policy needs {needed} {what}; the datapath holds at most {limit}")]
pub struct CapacityError {
    pub what: &'static str,
    pub needed: usize,
    pub limit: u32,
}

fn fnv1a(salt: &str, name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in salt.bytes().chain(name.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Stable IDs for `names`: a hash of the name in `mask`, `or`-ed with `set`, never 0, probing
/// upwards (in name order) on a collision.
fn stable_ids<'a>(
    names: impl IntoIterator<Item = &'a str>,
    salt: &str,
    mask: u32,
    set: u32,
) -> BTreeMap<String, u32> {
    let sorted: BTreeSet<&str> = names.into_iter().collect();
    let mut used = BTreeSet::new();
    let mut out = BTreeMap::new();
    for name in sorted {
        let mut h = fnv1a(salt, name) & mask;
        while h == 0 || used.contains(&h) {
            h = h.wrapping_add(1) & mask;
        }
        used.insert(h);
        out.insert(name.to_owned(), h | set);
    }
    out
}

/// An address as the maps and the parser hold it: its family and 16 bytes (IPv4 in the first
/// four).
pub fn addr_bytes(ip: IpAddr) -> (u8, [u8; 16]) {
    let mut a = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            a[..4].copy_from_slice(&v4.octets());
            (FAMILY_V4, a)
        }
        IpAddr::V6(v6) => (FAMILY_V6, v6.octets()),
    }
}

/// Splits an inclusive port range into (value, prefix bits) blocks, as few as possible.
pub fn port_prefixes(lo: u16, hi: u16) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    while lo <= hi {
        // The largest aligned block starting at lo that stays within hi.
        let mut size = if lo == 0 {
            1 << 16
        } else {
            1u32 << lo.trailing_zeros().min(16)
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        out.push((lo as u16, 16 - size.trailing_zeros()));
        lo += size;
    }
    out
}

/// The (prefix length, data) entries of one rule between two principals.
fn rule_entries(slot: u8, src: u32, dst: u32, rule: &Rule) -> Vec<(u32, LpmConduitData)> {
    let key = |proto: u8, port: u16| verdict::lpm_conduit_data(slot, src, dst, proto, port);
    match rule.proto {
        Proto::Any => vec![(LPM_CONDUIT_ANY_PROTO_BITS, key(0, 0))],
        Proto::Number(p) => match (&rule.ports, &rule.icmp_types) {
            (Some(ranges), _) => ranges
                .iter()
                .flat_map(|&(lo, hi)| port_prefixes(lo, hi))
                .map(|(v, bits)| (LPM_CONDUIT_ANY_PORT_BITS + bits, key(p, v)))
                .collect(),
            (None, Some(types)) => types
                .iter()
                .map(|&t| (LPM_CONDUIT_ANY_PORT_BITS + 8, key(p, u16::from(t) << 8)))
                .collect(),
            (None, None) => vec![(LPM_CONDUIT_ANY_PORT_BITS, key(p, 0))],
        },
    }
}

/// Whether `rule` allows `proto` to `port` (ICMP: type << 8 | code), read from the entries
/// the compiler makes of it, with the conduit table's own longest-prefix match: `explain`
/// names the rule a flow matched without a second reading of rules.
pub fn rule_covers(rule: &Rule, proto: u8, port: u16) -> bool {
    let want = verdict::lpm_conduit_data(0, 0, 0, proto, port);
    rule_entries(0, 0, 0, rule)
        .iter()
        .any(|(plen, data)| masked(&want, *plen) == masked(data, *plen))
}

fn log_code(l: LogLevel) -> u32 {
    match l {
        LogLevel::None => LOG_NONE,
        LogLevel::Deny => LOG_DENY,
        LogLevel::All => LOG_ALL,
    }
}

fn mode_code(m: Mode) -> u8 {
    match m {
        Mode::Enforce => MODE_ENFORCE,
        Mode::Monitor => MODE_MONITOR,
    }
}

/// The datapath form of a rule's inspection filter, if it has one: bitmaps of the allowed
/// codes and Modbus unit IDs, the list of DNP3 outstations (EtherNet/IP filters services only).
fn filter(r: &Rule) -> Option<Filter> {
    use conduit_common::inspect;
    if let Some(m) = &r.modbus {
        let mut f = inspect::filter(inspect::MODBUS, &m.functions);
        if let Some(units) = &m.unit_ids {
            f.flags &= !FILTER_ANY_ADDRESS;
            for &u in units {
                set_bit(&mut f.units, usize::from(u));
            }
        }
        return Some(f);
    }
    if let Some(codes) = &r.enip {
        return Some(inspect::filter(inspect::ENIP, codes));
    }
    let d = r.dnp3.as_ref()?;
    let mut f = inspect::filter(inspect::DNP3, &d.functions);
    if let Some(list) = &d.outstations {
        // Validation keeps the list within MAX_OUTSTATIONS.
        f.flags &= !FILTER_ANY_ADDRESS;
        f.n_outstations = list.len().min(MAX_OUTSTATIONS) as u8;
        for (slot, &a) in f.outstations.iter_mut().zip(list) {
            *slot = a;
        }
    }
    Some(f)
}

/// Compiles `p` for policy slot `slot` (0 or 1).
pub fn compile(p: &Policy, slot: u8) -> Result<Compiled, Vec<CapacityError>> {
    let mut c = Compiled {
        slot,
        ..Default::default()
    };
    c.zone_ids = stable_ids(
        p.zones.iter().map(|z| z.name.as_str()),
        "zone:",
        0x7fff_ffff,
        0,
    );
    c.conduit_ids = stable_ids(
        p.conduits.iter().map(|x| x.name.as_str()),
        "conduit:",
        u32::MAX,
        0,
    );
    // Only assets that a conduit narrows to get a principal of their own.
    let referenced = p.conduits.iter().flat_map(|x| {
        x.sources
            .iter()
            .flatten()
            .chain(x.destinations.iter().flatten())
            .map(String::as_str)
    });
    c.asset_principals = stable_ids(referenced, "asset:", 0x7fff_ffff, ASSET_PRINCIPAL_BIT);

    c.settings = Settings {
        valid: 1,
        fragments_allow: u8::from(p.defaults.fragments_allow),
        l2_allow: u8::from(p.defaults.l2_default_allow),
        unknown_mode: mode_code(p.defaults.mode),
        log: log_code(p.defaults.log),
        inspect: u32::from(
            p.conduits
                .iter()
                .flat_map(|x| &x.rules)
                .any(|r| r.modbus.is_some() || r.dnp3.is_some() || r.enip.is_some()),
        ),
        skip: 0,
    };
    for r in &p.defaults.failsafe {
        if let (Proto::Number(proto), Some(ranges)) = (r.proto, &r.ports) {
            c.failsafe_ports
                .extend(ranges.iter().map(|&(lo, hi)| (proto, lo, hi)));
        }
    }
    for &e in &p.defaults.l2_ethertypes {
        c.l2.insert(EtherTypeKey {
            slot: u16::from(slot),
            ethertype: e,
        });
    }

    // `unknown`: its mode is `Settings::unknown_mode`; the entry carries its reverse path.
    c.zones.insert(
        ZoneKey {
            slot: u32::from(slot),
            zone: ZONE_UNKNOWN,
        },
        ZoneCfg {
            mode: mode_code(p.defaults.mode),
            intra: INTRA_DENY,
            rpf: rpf_code(p.defaults.reverse_path),
            ifaces: 0,
        },
    );
    for z in &p.zones {
        let zid = c.zone_ids[&z.name];
        let mode = z.mode.map_or(p.defaults.mode, |(m, _)| m);
        let intra = z.intra_zone_allow.unwrap_or(p.defaults.intra_zone_allow);
        c.zones.insert(
            ZoneKey {
                slot: u32::from(slot),
                zone: zid,
            },
            ZoneCfg {
                mode: mode_code(mode),
                intra: if intra { INTRA_ALLOW } else { INTRA_DENY },
                rpf: rpf_code(z.reverse_path.unwrap_or(p.defaults.reverse_path)),
                ifaces: u8::from(!z.interfaces.is_empty()),
            },
        );
        for name in &z.interfaces {
            c.zone_ifs.insert(ZoneIfKey {
                slot: u32::from(slot),
                zone: zid,
                name: ifname(name),
            });
        }
        for a in &z.assets {
            let mut id = Identity {
                zone: zid,
                principal: c.asset_principals.get(&a.name).copied().unwrap_or(0),
                ..Default::default()
            };
            match a.addr {
                Addr::Ip(ip) => {
                    let (family, addr) = addr_bytes(ip);
                    if let Some(mac) = a.mac {
                        id.mac = mac;
                        id.flags |= IDENT_MAC_BOUND;
                        c.mac.insert(
                            MacKey { slot, _pad: 0, mac },
                            MacBinding {
                                family,
                                _pad: [0; 3],
                                addr,
                            },
                        );
                    }
                    c.id_exact.insert(
                        IpKey {
                            slot,
                            family,
                            _pad: [0; 2],
                            addr,
                        },
                        id,
                    );
                }
                Addr::Cidr(net, len) => {
                    let (family, addr) = addr_bytes(net);
                    let plen = LPM_IP_HEADER_BITS + u32::from(len);
                    c.cidr_lens.insert(plen);
                    c.id_cidr
                        .insert((plen, verdict::lpm_ip_data(slot, family, &addr)), id);
                }
            }
        }
    }

    // Conduit entries, in file order: where two conduits claim the same entry, the first wins
    // (and the lint reports a rule that never wins anywhere).
    let zone_id = |name: &str| {
        if name == "unknown" {
            ZONE_UNKNOWN
        } else {
            c.zone_ids[name]
        }
    };
    let mut entries: BTreeMap<(u32, LpmConduitData), ConduitHit> = BTreeMap::new();
    let mut filters: BTreeMap<Filter, u32> = BTreeMap::new();
    for x in &p.conduits {
        let cid = c.conduit_ids[&x.name];
        let log = log_code(x.log.unwrap_or(p.defaults.log)) as u8;
        let expires = x.expires.map_or(0, |(t, _)| t);
        let flags = if x.on_demand.is_some() {
            CONDUIT_ON_DEMAND
        } else {
            0
        };
        c.live.insert(
            ConduitKey {
                slot: u32::from(slot),
                conduit: cid,
            },
            ConduitInfo {
                log,
                flags,
                _pad: 0,
                expires,
            },
        );
        let principals = |zones: &[String], assets: &Option<Vec<String>>| -> Vec<u32> {
            match assets {
                Some(a) => a.iter().map(|n| c.asset_principals[n]).collect(),
                None => zones.iter().map(|z| zone_id(z)).collect(),
            }
        };
        let srcs = principals(&x.from, &x.sources);
        let dsts = principals(&x.to, &x.destinations);
        let mut pairs: Vec<(u32, u32)> = srcs
            .iter()
            .flat_map(|&s| dsts.iter().map(move |&d| (s, d)))
            .collect();
        if x.bidirectional.is_some() {
            pairs.extend(dsts.iter().flat_map(|&d| srcs.iter().map(move |&s| (d, s))));
        }
        for rule in &x.rules {
            // Identical filters share one entry; IDs in order of first use, from 1.
            let filter = match filter(rule) {
                None => 0,
                Some(f) => {
                    let n = filters.len() as u32 + 1;
                    *filters.entry(f).or_insert(n)
                }
            };
            let mut won_any = false;
            for &(s, d) in &pairs {
                for (plen, data) in rule_entries(slot, s, d, rule) {
                    let hit = ConduitHit {
                        conduit: cid,
                        log,
                        flags,
                        _pad: 0,
                        filter,
                        expires,
                    };
                    let e = entries.entry((plen, data)).or_insert(hit);
                    won_any |= e.conduit == cid;
                    c.conduit_lens.insert(plen);
                }
            }
            if !won_any {
                c.shadowed.push((x.name.clone(), rule.pos));
            }
        }
    }
    c.conduits = entries;
    c.mark_conduit_sources();
    c.set_skip();
    c.filters = filters
        .into_iter()
        .map(|(rule, filter)| {
            (
                FilterKey {
                    slot: u32::from(slot),
                    filter,
                },
                rule,
            )
        })
        .collect();

    let checks = [
        (
            "exact addresses (`ip` assets)",
            c.id_exact.len(),
            MAX_EXACT_IDENTITIES,
        ),
        ("CIDR assets", c.id_cidr.len(), MAX_CIDR_IDENTITIES),
        ("MAC bindings", c.mac.len(), MAX_MAC_BINDINGS),
        (
            "conduit rule entries (zone pairs x rules x port blocks)",
            c.conduits.len(),
            MAX_CONDUIT_ENTRIES,
        ),
        // One entry of the zones' map is `unknown`'s.
        ("zones", c.zones.len() - 1, MAX_ZONES - 1),
        ("zone interfaces", c.zone_ifs.len(), MAX_ZONE_IFS),
        (
            "distinct inspection filters (`modbus`, `dnp3`, `enip`)",
            c.filters.len(),
            MAX_FILTERS,
        ),
        ("conduits", c.live.len(), MAX_CONDUITS),
        ("allowed EtherTypes", c.l2.len(), MAX_L2_ETHERTYPES),
    ];
    let errors: Vec<CapacityError> = checks
        .into_iter()
        .filter(|&(_, n, max)| n > max as usize)
        .map(|(what, needed, limit)| CapacityError {
            what,
            needed,
            limit,
        })
        .collect();
    if errors.is_empty() {
        Ok(c)
    } else {
        Err(errors)
    }
}

/// Clears every bit of `data` past the first `plen`.
fn masked<const N: usize>(data: &[u8; N], plen: u32) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, (o, d)) in out.iter_mut().zip(data).enumerate() {
        let bit = i as u32 * 8;
        if bit + 8 <= plen {
            *o = *d;
        } else if bit < plen {
            *o = d & (0xffu8 << (8 - (plen - bit)));
        }
    }
    out
}

/// Longest-prefix match over `(plen, data)` entries, trying only the lengths present.
fn lpm<const N: usize, V: Copy>(
    map: &BTreeMap<(u32, [u8; N]), V>,
    lens: &BTreeSet<u32>,
    key: &[u8; N],
) -> Option<V> {
    lens.iter()
        .rev()
        .find_map(|&plen| map.get(&(plen, masked(key, plen))).copied())
}

impl Compiled {
    /// Adds the failsafe entries for the gateway's own `addrs` (the agent finds them). Port
    /// ranges are expanded; a policy with more than [`MAX_FAILSAFE`] entries is refused.
    pub fn with_failsafe(mut self, addrs: &[IpAddr]) -> Result<Self, CapacityError> {
        self.failsafe.clear();
        for &ip in addrs {
            let (family, addr) = addr_bytes(ip);
            // Neighbour discovery addressed to the gateway's own IPv6 addresses (NUD probes,
            // answers to its solicitations) is neighbour discovery, not traffic to judge.
            if ip.is_ipv6() {
                self.failsafe.insert(FailsafeKey {
                    slot: self.slot,
                    family,
                    proto: PROTO_ICMPV6,
                    _pad: 0,
                    port: ND_OWN_ADDRESS,
                    _pad2: 0,
                    addr,
                });
            }
            for &(proto, lo, hi) in &self.failsafe_ports {
                for port in lo..=hi {
                    self.failsafe.insert(FailsafeKey {
                        slot: self.slot,
                        family,
                        proto,
                        _pad: 0,
                        port,
                        _pad2: 0,
                        addr,
                    });
                    if self.failsafe.len() > MAX_FAILSAFE as usize {
                        return Err(CapacityError {
                            what: "failsafe entries (addresses x ports)",
                            needed: self.failsafe.len(),
                            limit: MAX_FAILSAFE,
                        });
                    }
                }
            }
        }
        self.set_skip();
        Ok(self)
    }

    /// Marks the identities that no conduit leaves (`IDENT_NO_CONDUIT`): neither their zone
    /// nor their asset's principal is the source of a conduit entry (for a bidirectional
    /// conduit, its `to` zones are sources too: the entries say so).
    fn mark_conduit_sources(&mut self) {
        let sources: BTreeSet<u32> = self
            .conduits
            .keys()
            .map(|(_, d)| u32::from_be_bytes([d[1], d[2], d[3], d[4]]))
            .collect();
        let mark = |id: &mut Identity| {
            let leaves = sources.contains(&id.zone)
                || (id.principal != 0 && sources.contains(&id.principal));
            if leaves {
                id.flags &= !IDENT_NO_CONDUIT;
            } else {
                id.flags |= IDENT_NO_CONDUIT;
            }
        };
        self.id_exact.values_mut().for_each(&mark);
        self.id_cidr.values_mut().for_each(&mark);
    }

    /// Tells the datapath which optional tables this slot leaves empty (`Settings::skip`).
    fn set_skip(&mut self) {
        let mut skip = 0;
        if self.failsafe.is_empty() {
            skip |= SKIP_FAILSAFE;
        }
        if self.mac.is_empty() {
            skip |= SKIP_MACS;
        }
        if !self.conduits.keys().any(|(_, d)| d[1..5] == [0; 4]) {
            skip |= SKIP_FROM_UNKNOWN;
        }
        self.settings.skip = skip;
    }

    /// The name of a zone id (`unknown` for 0).
    pub fn zone_name(&self, id: u32) -> &str {
        if id == ZONE_UNKNOWN {
            return "unknown";
        }
        self.zone_ids
            .iter()
            .find(|(_, v)| **v == id)
            .map_or("?", |(k, _)| k.as_str())
    }

    pub fn conduit_name(&self, id: u32) -> Option<&str> {
        self.conduit_ids
            .iter()
            .find(|(_, v)| **v == id)
            .map(|(k, _)| k.as_str())
    }
}

impl Tables for Compiled {
    fn id_exact(&self, key: &IpKey) -> Option<Identity> {
        self.id_exact.get(key).copied()
    }
    fn id_cidr(&self, key: &LpmIpData) -> Option<Identity> {
        lpm(&self.id_cidr, &self.cidr_lens, key)
    }
    fn mac(&self, key: &MacKey) -> Option<MacBinding> {
        self.mac.get(key).copied()
    }
    fn conduit(&self, key: &LpmConduitData) -> Option<ConduitHit> {
        lpm(&self.conduits, &self.conduit_lens, key)
    }
    fn zone(&self, key: &ZoneKey) -> Option<ZoneCfg> {
        self.zones.get(key).copied()
    }
    fn l2_allowed(&self, key: &EtherTypeKey) -> bool {
        self.l2.contains(key)
    }
    fn settings(&self, slot: u32) -> Option<Settings> {
        (slot == u32::from(self.slot)).then_some(self.settings)
    }
    /// The compiled policy alone has no flows: it judges first packets.
    fn flow(&self, _key: &conduit_common::flow::FlowKey) -> Option<conduit_common::flow::FlowVal> {
        None
    }
    fn conduit_info(&self, key: &ConduitKey) -> Option<ConduitInfo> {
        self.live.get(key).copied()
    }
    fn now_tai_ns(&self) -> u64 {
        match self.clock {
            Some(s) => u64::from(s) * 1_000_000_000,
            None => tai_now_ns(),
        }
    }
    fn granted(&self, key: &ConduitKey) -> bool {
        self.grants
            .get(&key.conduit)
            .is_some_and(|&until| boot_now_s() < until)
    }
    fn filter(&self, key: &FilterKey) -> Option<&Filter> {
        self.filters.get(key)
    }

    fn failsafe(&self, key: &FailsafeKey) -> bool {
        self.failsafe.contains(key)
    }
    fn ingress(&self, ifindex: u32) -> Option<IngressCfg> {
        self.ingress.get(&ifindex).copied()
    }
    fn zone_if(&self, key: &ZoneIfKey) -> bool {
        self.zone_ifs.contains(key)
    }
}

/// An interface name as the kernel maps hold it: NUL-padded to IFNAMSIZ (validation keeps
/// names to 15 bytes).
pub fn ifname(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let n = name.len().min(15);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

fn rpf_code(r: ReversePath) -> u8 {
    match r {
        ReversePath::Strict => RPF_STRICT,
        ReversePath::Loose => RPF_LOOSE,
        ReversePath::Off => RPF_OFF,
    }
}

/// Now, in whole seconds of CLOCK_BOOTTIME: the clock of grants' ends (as the kernel's
/// `bpf_ktime_get_boot_ns` reads it).
pub fn boot_now_s() -> u32 {
    rustix::time::clock_gettime(rustix::time::ClockId::Boottime).tv_sec as u32
}

/// Now, in seconds since the epoch on CLOCK_TAI: the clock the kernel judges conduits' ends
/// by (`bpf_ktime_get_tai_ns`), so that `explain` and the datapath agree.
pub fn tai_now_s() -> u32 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Tai);
    u32::try_from(ts.tv_sec).unwrap_or(u32::MAX)
}

/// Now, in nanoseconds since the epoch on CLOCK_TAI (as `bpf_ktime_get_tai_ns` reads it).
pub fn tai_now_ns() -> u64 {
    crate::agent::host::clock_ns(rustix::time::ClockId::Tai)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flow keeps its conduit's end on the monotonic clock: never after the end, at most
    /// 2^28 ns (0.27 s) before it, and an end beyond what the flow entry holds is kept as
    /// the last instant it holds (earlier, never wrapped round to a wrong one).
    #[test]
    fn flow_deadlines_never_come_late_nor_wrap() {
        use conduit_common::verdict::{END_UNCACHED, flow_deadline, flow_ended};
        const S: u64 = 1_000_000_000;
        let c = Compiled {
            clock: Some(1_800_000_000),
            ..Default::default()
        };
        let now = 10 * S;
        // Ends 10 s from now: at monotonic 20 s, or at most 0.27 s before.
        let d = flow_deadline(&c, 1_800_000_010, now);
        assert!(flow_ended(d, 20 * S));
        assert!(!flow_ended(d, 20 * S - 300_000_000));
        assert!(!flow_ended(d, now));
        // 2099: beyond a u32 of 2^28 ns units from now; kept as the largest.
        assert_eq!(flow_deadline(&c, 4_070_908_800, now), u32::MAX);
        assert!(!flow_ended(u32::MAX, now));
        // Ended already: at once. None, and on demand, stay as they are.
        assert!(flow_ended(flow_deadline(&c, 1_799_999_999, now), now));
        assert_eq!(flow_deadline(&c, 0, now), 0);
        assert_eq!(flow_deadline(&c, END_UNCACHED, now), END_UNCACHED);
        assert!(flow_ended(END_UNCACHED, now));
        assert!(!flow_ended(0, now));
    }

    #[test]
    fn port_prefixes_cover_exactly() {
        for &(lo, hi) in &[
            (1u16, 65535u16),
            (502, 502),
            (20000, 20010),
            (1, 1),
            (1024, 2047),
            (65535, 65535),
            (3, 70),
        ] {
            let blocks = port_prefixes(lo, hi);
            let mut covered = Vec::new();
            for (v, bits) in &blocks {
                let size = 1u32 << (16 - bits);
                assert_eq!(u32::from(*v) % size, 0, "aligned");
                covered.extend(u32::from(*v)..u32::from(*v) + size);
            }
            assert_eq!(
                covered,
                (u32::from(lo)..=u32::from(hi)).collect::<Vec<_>>(),
                "{lo}-{hi}"
            );
        }
        assert_eq!(port_prefixes(1, 65535).len(), 16);
    }

    #[test]
    fn masking() {
        assert_eq!(masked(&[0xff, 0xff], 9), [0xff, 0x80]);
        assert_eq!(masked(&[0xff, 0xff], 0), [0, 0]);
        assert_eq!(masked(&[0xab, 0xcd], 16), [0xab, 0xcd]);
    }
}
