//! The validated policy: every name resolved, every value parsed and in range.
use std::net::IpAddr;

use super::diag::Pos;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Monitor,
}

/// `reverse_path`: the anti-spoofing check of a zone's traffic against the kernel's routing
/// table (see the README's "Anti-spoofing").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReversePath {
    /// The route back to the source leaves by the interface the frame came in on.
    Strict,
    /// Some route back to the source exists (asymmetric routing).
    Loose,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    None,
    Deny,
    All,
}

#[derive(Clone, Debug)]
pub struct Policy {
    pub version: u32,
    pub site: String,
    pub defaults: Defaults,
    pub zones: Vec<Zone>,
    pub conduits: Vec<Conduit>,
}

#[derive(Clone, Debug)]
pub struct Defaults {
    pub mode: Mode,
    pub intra_zone_allow: bool,
    pub fragments_allow: bool,
    pub log: LogLevel,
    pub reverse_path: ReversePath,
    pub failsafe: Vec<Rule>,
    pub l2_default_allow: bool,
    /// Host byte order, sorted, unique.
    pub l2_ethertypes: Vec<u16>,
}

impl Default for Defaults {
    /// SPEC §1's defaults when a key is absent: enforce, intra-zone allowed, fragments
    /// denied, denials logged, no failsafe, non-IP frames denied; and the strict
    /// reverse-path check.
    fn default() -> Self {
        Self {
            mode: Mode::Enforce,
            intra_zone_allow: true,
            fragments_allow: false,
            log: LogLevel::Deny,
            reverse_path: ReversePath::Strict,
            failsafe: Vec::new(),
            l2_default_allow: false,
            l2_ethertypes: Vec::new(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Zone {
    pub name: String,
    pub pos: Pos,
    pub security_level: u8,
    pub purdue_level: Option<u8>,
    pub description: Option<String>,
    pub mode: Option<(Mode, Pos)>,
    pub intra_zone_allow: Option<bool>,
    pub reverse_path: Option<ReversePath>,
    /// The interfaces the zone's traffic must arrive on (empty: any).
    pub interfaces: Vec<String>,
    /// `review: pending` (where it is written): a draft zone nobody has reviewed yet (lint
    /// [L9]; the agent refuses to enforce it). `review: done` or no `review`: `None`.
    pub review_pending: Option<Pos>,
    pub assets: Vec<Asset>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Addr {
    Ip(IpAddr),
    Cidr(IpAddr, u8),
}

#[derive(Clone, Debug)]
pub struct Asset {
    pub name: String,
    pub pos: Pos,
    pub addr: Addr,
    pub mac: Option<[u8; 6]>,
}

#[derive(Clone, Debug)]
pub struct Conduit {
    pub name: String,
    pub pos: Pos,
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub to_pos: Pos,
    pub security_level: Option<(u8, Pos)>,
    pub sources: Option<Vec<String>>,
    pub destinations: Option<Vec<String>>,
    pub bidirectional: Option<Pos>,
    pub rules: Vec<Rule>,
    pub log: Option<LogLevel>,
    pub description: Option<String>,
    /// `review: pending`, as for [`Zone::review_pending`].
    pub review_pending: Option<Pos>,
    /// `expires`: the instant the conduit ends (seconds since the Unix epoch), and where it
    /// is written (SPEC §8).
    pub expires: Option<(u32, Pos)>,
    /// `on_demand.max`: the longest grant, in seconds, and where it is written (SPEC §8).
    pub on_demand: Option<(u32, Pos)>,
}

/// `proto` of a rule, normalised: `tcp` and `6` are the same rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Any,
    Number(u8),
}

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;

impl Proto {
    pub fn name(self) -> String {
        match self {
            Proto::Any => "any".into(),
            Proto::Number(TCP) => "tcp".into(),
            Proto::Number(UDP) => "udp".into(),
            Proto::Number(ICMP) => "icmp".into(),
            Proto::Number(ICMPV6) => "icmpv6".into(),
            Proto::Number(n) => n.to_string(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub pos: Pos,
    pub proto: Proto,
    /// Inclusive destination port ranges; `None`: every port.
    pub ports: Option<Vec<(u16, u16)>>,
    /// ICMP types; `None`: every type.
    pub icmp_types: Option<Vec<u8>>,
    /// The Modbus/TCP filter of a tcp rule; `None`: no Modbus inspection.
    pub modbus: Option<ModbusFilter>,
    /// The DNP3 filter of a tcp rule; `None`: no DNP3 inspection.
    pub dnp3: Option<Dnp3Filter>,
    /// The EtherNet/IP filter of a tcp rule: the allowed filter codes
    /// (`conduit_common::inspect::enip::code`), sorted; `None`: no inspection. A rule has
    /// one filter at most.
    pub enip: Option<Vec<u8>>,
}

/// `dnp3:` of a rule, resolved: sorted, deduplicated function codes and outstation
/// addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dnp3Filter {
    pub functions: Vec<u8>,
    /// `None`: every outstation.
    pub outstations: Option<Vec<u16>>,
}

/// `modbus:` of a rule, resolved: sorted, deduplicated function codes and unit IDs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModbusFilter {
    pub functions: Vec<u8>,
    /// `None`: every unit ID.
    pub unit_ids: Option<Vec<u8>>,
}

impl ModbusFilter {
    /// Whether the filter allows only functions that read (the `read` set or a subset).
    pub fn is_read_only(&self) -> bool {
        self.functions
            .iter()
            .all(|f| conduit_common::inspect::modbus::READ.contains(f))
    }
}

impl Rule {
    /// Whether the rule lets every port (or every protocol) through.
    pub fn is_wide_open(&self) -> bool {
        match self.proto {
            Proto::Any => true,
            Proto::Number(TCP | UDP) => match &self.ports {
                None => true,
                Some(r) => r.iter().any(|&(lo, hi)| lo <= 1 && hi == u16::MAX),
            },
            Proto::Number(_) => false,
        }
    }
}

impl Policy {
    pub fn zone(&self, name: &str) -> Option<&Zone> {
        self.zones.iter().find(|z| z.name == name)
    }

    /// The asset an address belongs to (exact before CIDR, then the longest prefix), and its
    /// zone. For explanations; the datapath uses the compiled maps.
    pub fn asset_of(&self, ip: IpAddr) -> Option<(&Zone, &Asset)> {
        let mut best: Option<(&Zone, &Asset, u8)> = None;
        for z in &self.zones {
            for a in &z.assets {
                match a.addr {
                    Addr::Ip(x) if x == ip => return Some((z, a)),
                    Addr::Cidr(net, len)
                        if super::addr::contains(net, len, ip)
                            && best.is_none_or(|(_, _, l)| len > l) =>
                    {
                        best = Some((z, a, len));
                    }
                    _ => {}
                }
            }
        }
        best.map(|(z, a, _)| (z, a))
    }
}
