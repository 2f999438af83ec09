//! The draft policy, built from observations alone (pure, deterministic: BTreeMaps and sorted
//! lists, no clock). SPEC §5: one `ip` asset per host, `mac` only where the pairing held one
//! to one; zones from the seed, else per /24 (/64); conduits only for answered flows, narrowed
//! to the hosts seen, exact: a conduit's sources × destinations × rules holds only answered
//! flows, so nothing unanswered is allowed.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use super::{
    DiscoverError,
    observe::{FlowKey, FlowStats, HostStats, Observations},
    track::MODBUS_PORT,
};
use crate::policy::{addr, validate::check_name};

/// Ports a controller (PLC, RTU, IED) answers on: Modbus/TCP, S7 (ISO-TSAP), EtherNet/IP,
/// DNP3, IEC 60870-5-104, OPC UA, BACnet/IP.
pub const CONTROLLER_PORTS: &[u16] = &[502, 102, 44818, 20000, 2404, 4840, 47808];

/// A zone of the seed file (`--seed`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedZone {
    pub name: String,
    pub cidr: String,
    pub security_level: u8,
    pub purdue_level: Option<u8>,
}

/// A checked seed zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    pub name: String,
    pub net: IpAddr,
    pub len: u8,
    pub security_level: u8,
    pub purdue_level: Option<u8>,
}

/// Reads a seed: a YAML list of `{name, cidr, security_level, purdue_level}`.
pub fn parse_seed(path: &str, text: &str) -> Result<Vec<Seed>, DiscoverError> {
    let err = |m: String| DiscoverError::input(path, m);
    let options = marked_yaml::LoaderOptions::default().toplevel_sequence();
    let raw: Vec<SeedZone> =
        marked_yaml::from_yaml_with_options(0, text, options).map_err(|e| {
            err(format!(
                "not a seed file (a YAML list of {{name, cidr, security_level, purdue_level}}): {e}"
            ))
        })?;
    let mut out: Vec<Seed> = Vec::new();
    for (i, z) in raw.into_iter().enumerate() {
        let at = format!("zone {} (\"{}\")", i + 1, z.name);
        check_name(&z.name, "zone").map_err(|e| err(format!("{at}: {e}")))?;
        let (net, len) = addr::cidr(&z.cidr).map_err(|e| err(format!("{at}: {e}")))?;
        if !(1..=4).contains(&z.security_level) {
            return Err(err(format!(
                "{at}: security_level {} is out of range: expected 1..4",
                z.security_level
            )));
        }
        if z.purdue_level.is_some_and(|p| p > 5) {
            return Err(err(format!(
                "{at}: purdue_level is out of range: expected 0..5"
            )));
        }
        if out.iter().any(|s| s.name == z.name) {
            return Err(err(format!("{at}: zone \"{}\" is named twice", z.name)));
        }
        out.push(Seed {
            name: z.name,
            net,
            len,
            security_level: z.security_level,
            purdue_level: z.purdue_level,
        });
    }
    if out.is_empty() {
        return Err(err("the seed lists no zones".into()));
    }
    Ok(out)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Answers on an industrial port: Purdue level 1.
    Controller,
    /// A client of a controller on an industrial port: Purdue level 2.
    Supervisory,
    Host,
}

impl Role {
    fn prefix(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Supervisory => "supervisory",
            Role::Host => "host",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    pub ip: IpAddr,
    pub name: String,
    pub zone: String,
    pub role: Role,
    pub mac: Option<[u8; 6]>,
    /// Why there is no `mac` (empty when there is one).
    pub mac_note: &'static str,
    pub stats: HostStats,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    pub name: String,
    /// The network it stands for (`10.0.2.0/24`), or the seed's cidr.
    pub net: String,
    pub security_level: u8,
    pub purdue_level: Option<u8>,
    pub from_seed: bool,
    /// Its hosts, by address.
    pub hosts: Vec<IpAddr>,
}

/// A Modbus filter: function codes and unit IDs seen.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Modbus {
    pub functions: BTreeSet<u8>,
    pub units: BTreeSet<u8>,
}

impl Modbus {
    /// The `functions:` list: the smallest named sets (by the codes they allow in all, then by
    /// how many sets) that cover every code seen that is in some set, then the other codes by
    /// number.
    pub fn function_tokens(&self) -> Vec<String> {
        covering_sets(&self.functions)
    }

    pub fn has_programming(&self) -> bool {
        self.functions
            .iter()
            .any(|f| conduit_common::inspect::modbus::PROGRAMMING.contains(f))
    }
}

/// See [`Modbus::function_tokens`].
pub fn covering_sets(seen: &BTreeSet<u8>) -> Vec<String> {
    let sets = conduit_common::inspect::modbus::SETS;
    let in_some: BTreeSet<u8> = seen
        .iter()
        .copied()
        .filter(|f| sets.iter().any(|(_, s)| s.contains(f)))
        .collect();
    let mut best: Option<(usize, u32, u32)> = None; // (allowed, sets, mask)
    for mask in 0u32..(1 << sets.len()) {
        let union: BTreeSet<u8> = sets
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .flat_map(|(_, (_, s))| s.iter().copied())
            .collect();
        if !in_some.is_subset(&union) {
            continue;
        }
        let cand = (union.len(), mask.count_ones(), mask);
        if best.is_none_or(|b| {
            (cand.0, cand.1, cand.2.reverse_bits()) < (b.0, b.1, b.2.reverse_bits())
        }) {
            best = Some(cand);
        }
    }
    let mask = best.map_or(0, |b| b.2);
    let mut out: Vec<String> = sets
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, (n, _))| (*n).to_owned())
        .collect();
    out.extend(
        seen.iter()
            .filter(|f| !in_some.contains(f))
            .map(u8::to_string),
    );
    out
}

/// What a rule allows: protocol, port (ICMP: type), Modbus filter.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Service {
    pub proto: u8,
    pub port: u16,
    pub modbus: Option<Modbus>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub service: Service,
    /// The flows it stands for, with their evidence.
    pub flows: BTreeMap<FlowKey, FlowStats>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conduit {
    pub name: String,
    pub from: String,
    pub to: String,
    /// Asset names.
    pub sources: Vec<String>,
    pub destinations: Vec<String>,
    pub rules: Vec<Rule>,
    /// It carries Modbus programming function codes (90, 125, 126).
    pub programming: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Draft {
    pub hosts: BTreeMap<IpAddr, Host>,
    pub zones: BTreeMap<String, Zone>,
    pub conduits: Vec<Conduit>,
    /// Flows that were never answered: not allowed.
    pub unanswered: BTreeMap<FlowKey, FlowStats>,
}

/// `10.0.2.0/24` → `10-0-2`; an IPv6 /64 → its four groups.
fn net_label(ip: IpAddr) -> (String, String) {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            (
                format!("net-{}-{}-{}", o[0], o[1], o[2]),
                format!("{}.{}.{}.0/24", o[0], o[1], o[2]),
            )
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            (
                format!("net6-{:x}-{:x}-{:x}-{:x}", s[0], s[1], s[2], s[3]),
                format!("{net}/64"),
            )
        }
    }
}

fn addr_label(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v) => v.to_string().replace('.', "-"),
        IpAddr::V6(v) => v.to_string().replace(':', "-"),
    }
}

fn modbus_of(key: &FlowKey, stats: &FlowStats) -> Option<Modbus> {
    if key.proto != conduit_common::verdict::PROTO_TCP
        || key.port != MODBUS_PORT
        || stats.modbus.is_empty()
    {
        return None;
    }
    Some(Modbus {
        functions: stats.modbus.values().flatten().copied().collect(),
        units: stats.modbus.keys().copied().collect(),
    })
}

/// Builds the draft.
pub fn build(obs: &Observations, seed: &[Seed]) -> Draft {
    let answered: BTreeMap<FlowKey, &FlowStats> = obs
        .flows
        .iter()
        .filter(|(k, s)| s.is_answered() && k.client != k.server)
        .map(|(k, s)| (*k, s))
        .collect();
    // Hosts: every address that sent traffic, and both ends of every answered flow.
    let mut host_ips: BTreeMap<IpAddr, HostStats> = obs.hosts.clone();
    for k in answered.keys() {
        for ip in [k.client, k.server] {
            host_ips.entry(ip).or_default();
        }
    }
    // Roles.
    let mut role: BTreeMap<IpAddr, Role> = BTreeMap::new();
    for k in answered.keys() {
        if matches!(k.proto, 6 | 17) && CONTROLLER_PORTS.contains(&k.port) {
            role.insert(k.server, Role::Controller);
        }
    }
    for k in answered.keys() {
        if matches!(k.proto, 6 | 17)
            && CONTROLLER_PORTS.contains(&k.port)
            && role.get(&k.client) != Some(&Role::Controller)
        {
            role.insert(k.client, Role::Supervisory);
        }
    }
    // Zones.
    let seed_names: BTreeSet<&str> = seed.iter().map(|s| s.name.as_str()).collect();
    let mut zones: BTreeMap<String, Zone> = BTreeMap::new();
    let mut hosts: BTreeMap<IpAddr, Host> = BTreeMap::new();
    for (ip, stats) in host_ips {
        let seeded = seed
            .iter()
            .filter(|s| s.net.is_ipv4() == ip.is_ipv4() && addr::contains(s.net, s.len, ip))
            .max_by_key(|s| (s.len, std::cmp::Reverse(s.name.clone())));
        let zone = match seeded {
            Some(s) => zones.entry(s.name.clone()).or_insert_with(|| Zone {
                name: s.name.clone(),
                net: format!("{}/{}", s.net, s.len),
                security_level: s.security_level,
                purdue_level: s.purdue_level,
                from_seed: true,
                hosts: Vec::new(),
            }),
            None => {
                let (mut name, net) = net_label(ip);
                if seed_names.contains(name.as_str()) {
                    name.push_str("-auto");
                }
                zones.entry(name.clone()).or_insert_with(|| Zone {
                    name,
                    net,
                    security_level: 2,
                    purdue_level: None,
                    from_seed: false,
                    hosts: Vec::new(),
                })
            }
        };
        zone.hosts.push(ip);
        let r = role.get(&ip).copied().unwrap_or(Role::Host);
        let mac = obs.binding(ip);
        hosts.insert(
            ip,
            Host {
                ip,
                name: format!("{}-{}", r.prefix(), addr_label(ip)),
                zone: zone.name.clone(),
                role: r,
                mac,
                mac_note: if mac.is_some() {
                    ""
                } else {
                    obs.binding_note(ip)
                },
                stats,
            },
        );
    }
    // Purdue levels of generated zones from their hosts' roles.
    for z in zones.values_mut().filter(|z| !z.from_seed) {
        let roles: BTreeSet<Role> = z.hosts.iter().map(|ip| hosts[ip].role).collect();
        z.purdue_level = if roles.contains(&Role::Controller) {
            Some(1)
        } else if roles.contains(&Role::Supervisory) {
            Some(2)
        } else {
            None
        };
    }
    // Services per zone pair: client → servers.
    type Pair = (String, String);
    let mut by_service: BTreeMap<(Pair, Service), BTreeMap<IpAddr, BTreeSet<IpAddr>>> =
        BTreeMap::new();
    for (k, s) in &answered {
        let service = Service {
            proto: k.proto,
            port: k.port,
            modbus: modbus_of(k, s),
        };
        let pair = (hosts[&k.client].zone.clone(), hosts[&k.server].zone.clone());
        by_service
            .entry((pair, service))
            .or_default()
            .entry(k.client)
            .or_default()
            .insert(k.server);
    }
    // Clients with the same servers share a conduit entry; then entries with the same
    // (zones, sources, destinations) share a conduit.
    let mut grouped: BTreeMap<(Pair, Vec<String>, Vec<String>), Vec<Service>> = BTreeMap::new();
    for ((pair, service), clients) in by_service {
        let mut by_servers: BTreeMap<BTreeSet<IpAddr>, BTreeSet<IpAddr>> = BTreeMap::new();
        for (c, servers) in clients {
            by_servers.entry(servers).or_default().insert(c);
        }
        for (servers, clients) in by_servers {
            let mut src: Vec<String> = clients.iter().map(|ip| hosts[ip].name.clone()).collect();
            let mut dst: Vec<String> = servers.iter().map(|ip| hosts[ip].name.clone()).collect();
            src.sort();
            dst.sort();
            grouped
                .entry((pair.clone(), src, dst))
                .or_default()
                .push(service.clone());
        }
    }
    let by_name: BTreeMap<&str, IpAddr> = hosts.values().map(|h| (h.name.as_str(), h.ip)).collect();
    let mut conduits = Vec::new();
    let mut used: BTreeMap<String, usize> = BTreeMap::new();
    for (((from, to), sources, destinations), mut services) in grouped {
        services.sort();
        let programming = services
            .iter()
            .any(|s| s.modbus.as_ref().is_some_and(Modbus::has_programming));
        let mut base = format!("{from}-to-{to}");
        if programming {
            base.push_str("-programming");
        }
        let n = used.entry(base.clone()).or_default();
        *n += 1;
        let mut name = if *n == 1 { base } else { format!("{base}-{n}") };
        if name.len() > 63 {
            name = format!("conduit-{}", conduits.len() + 1);
        }
        let rules = services
            .into_iter()
            .map(|service| {
                let mut flows = BTreeMap::new();
                for c in &sources {
                    for d in &destinations {
                        let key = FlowKey {
                            client: by_name[c.as_str()],
                            server: by_name[d.as_str()],
                            proto: service.proto,
                            port: service.port,
                        };
                        if let Some(s) = answered.get(&key) {
                            flows.insert(key, (*s).clone());
                        }
                    }
                }
                Rule { service, flows }
            })
            .collect();
        conduits.push(Conduit {
            name,
            from,
            to,
            sources,
            destinations,
            rules,
            programming,
        });
    }
    let unanswered = obs
        .flows
        .iter()
        .filter(|(k, s)| !s.is_answered() || k.client == k.server)
        .map(|(k, s)| (*k, s.clone()))
        .collect();
    Draft {
        hosts,
        zones,
        conduits,
        unanswered,
    }
}
