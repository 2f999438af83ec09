//! `conduit explain`: the verdict on the first packet of a new flow, from the compiled policy
//! and the very `decide` function the XDP program runs.
use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use conduit_common::{
    Reason, Verdict,
    inspect::{Request, enip},
    verdict::{self, Packet},
};

use super::Format;
use crate::{
    exit::Exit,
    policy::{
        addr,
        compile::addr_bytes,
        load::load_file,
        model::{ICMP, ICMPV6, Proto, TCP, UDP},
        validate::fmt_mac,
    },
};

#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// The policy file (YAML).
    pub policy: PathBuf,
    /// Source IP address of the packet.
    #[arg(long)]
    pub src: IpAddr,
    /// Destination IP address of the packet.
    #[arg(long)]
    pub dst: IpAddr,
    /// Protocol: tcp, udp, icmp, icmpv6, or an IP protocol number.
    #[arg(long)]
    pub proto: String,
    /// Source port (tcp/udp); informative only, conduits match destination ports.
    #[arg(long)]
    pub sport: Option<u16>,
    /// Destination port (required for tcp and udp).
    #[arg(long)]
    pub dport: Option<u16>,
    /// ICMP or ICMPv6 type, by number or name (e.g. 8 or echo-request).
    #[arg(long)]
    pub icmp_type: Option<String>,
    /// Source MAC of the frame. Default: the MAC the source's asset is bound to, if any (so the
    /// answer is about the policy, not about spoofing).
    #[arg(long)]
    pub src_mac: Option<String>,
    /// Judge a Modbus/TCP request with this function code (1..127) instead of the
    /// connection's first packet: a data segment carrying one request, as the datapath
    /// inspects it on rules with a `modbus` filter (needs --proto tcp).
    #[arg(long, value_name = "CODE", value_parser = clap::value_parser!(u8).range(1..=127))]
    pub modbus_function: Option<u8>,
    /// Unit ID of the Modbus request (with --modbus-function).
    #[arg(
        long,
        value_name = "ID",
        default_value_t = 1,
        requires = "modbus_function"
    )]
    pub modbus_unit: u8,
    /// Judge a DNP3 request with this application function code (0..255, e.g. 1 read, 5
    /// direct operate, 13 cold restart) instead of the connection's first packet: a data
    /// segment carrying one request frame from a master, as the datapath inspects it on
    /// rules with a `dnp3` filter (needs --proto tcp).
    #[arg(long, value_name = "CODE", conflicts_with = "modbus_function")]
    pub dnp3_function: Option<u8>,
    /// Outstation link address the DNP3 request goes to (with --dnp3-function).
    #[arg(
        long,
        value_name = "ADDRESS",
        default_value_t = 1,
        requires = "dnp3_function"
    )]
    pub dnp3_outstation: u16,
    /// Judge an EtherNet/IP request with this CIP service code (0..127, e.g. 0x0E
    /// Get_Attribute_Single, 0x4D Write Tag, 0x05 Reset; `0x` for hex) to the Identity object,
    /// unconnected (SendRRData), instead of the connection's first packet, as the datapath
    /// inspects it on rules with an `enip` filter (needs --proto tcp).
    #[arg(long, value_name = "SERVICE", value_parser = cip_service, conflicts_with_all = ["modbus_function", "dnp3_function"])]
    pub enip_service: Option<u8>,
    /// Send the --enip-service request to the Connection Manager (class 6) rather than the
    /// Identity object: its services 0x4E, 0x52, 0x54 and 0x5B are Forward_Close,
    /// Unconnected_Send, Forward_Open and Large_Forward_Open, which the `connection` set
    /// allows (to any other object they are tag services).
    #[arg(long, requires = "enip_service")]
    pub enip_connection_manager: bool,
    /// The interface the frame comes in on, on this host: adds the datapath's anti-spoofing
    /// checks (the source zone's `interfaces`, and its reverse path against this host's
    /// routing table). Run it on the gateway. Without it, those checks are not made.
    #[arg(long = "in", value_name = "IFACE")]
    pub ingress: Option<String>,
    /// Judge at this instant instead of now (RFC 3339, e.g. 2026-12-24T18:00:00Z): what
    /// conduits with `expires` allow then.
    #[arg(long, value_name = "TIME", value_parser = addr::instant)]
    pub at: Option<u32>,
    /// Judge this on-demand conduit as granted (repeat for several): what it allows while a
    /// `conduit grant` is open. Without it, on-demand conduits are closed.
    #[arg(long = "grant", value_name = "CONDUIT")]
    pub grants: Vec<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

fn reject(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    Exit::Rejected.into()
}

/// One sentence per reason, for people.
fn why(reason: Reason, verdict: Verdict) -> &'static str {
    match (reason, verdict) {
        (Reason::Conduit, _) => "a rule of this conduit allows the flow",
        (Reason::IntraZone, _) => {
            "both ends are in the same zone, and that zone allows intra-zone traffic"
        }
        (Reason::NoConduit, _) => {
            "no conduit allows this flow between these zones, and everything not allowed is denied"
        }
        (Reason::Spoofed, _) => {
            "the source address does not belong where the frame comes from: its MAC does not match an asset's binding, or it came in on an interface its zone is not behind (the zone's `interfaces`, or the reverse path)"
        }
        (Reason::Fragment, Verdict::Allow) => {
            "a non-first IP fragment, and the policy allows fragments"
        }
        (Reason::Fragment, _) => "a non-first IP fragment, and the policy denies fragments",
        (Reason::NeighborDiscovery, _) => "IPv6 neighbour discovery always passes",
        (Reason::ModbusFunction, _) => {
            "the conduit's rule has a Modbus filter that does not allow this function code"
        }
        (Reason::ModbusUnit, _) => {
            "the conduit's rule has a Modbus filter that does not allow this unit ID"
        }
        (Reason::Dnp3Function, _) => {
            "the conduit's rule has a DNP3 filter that does not allow this function code"
        }
        (Reason::Dnp3Address, _) => {
            "the conduit's rule has a DNP3 filter that does not list this outstation address"
        }
        (Reason::EnipService, _) => {
            "the conduit's rule has an EtherNet/IP filter that does not allow this CIP service"
        }
        (Reason::Expired, _) => {
            "the conduit has ended (its `expires` has passed): it allows nothing any more"
        }
        (Reason::NotGranted, _) => {
            "the conduit is on demand and not granted: it opens only for `conduit grant` (judge it as granted with --grant CONDUIT)"
        }
        _ => "",
    }
}

pub fn main(a: ExplainArgs) -> ExitCode {
    let (loaded, d) = match load_file(&a.policy, 0) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{}: error: cannot read the policy: {e}", a.policy.display());
            return Exit::Failed.into();
        }
    };
    let Some(mut l) = loaded else {
        for item in d.errors() {
            eprintln!("{}", item.render(&a.policy.display().to_string()));
        }
        return reject(format!(
            "{} is not a valid policy (see `conduit check`)",
            a.policy.display()
        ));
    };
    if a.src.is_ipv4() != a.dst.is_ipv4() {
        return reject("--src and --dst must both be IPv4 or both IPv6");
    }
    let proto = match addr::proto(&a.proto) {
        Ok(Proto::Number(n)) => n,
        Ok(Proto::Any) => return reject("--proto any: a packet has one protocol; name it"),
        Err(e) => return reject(e),
    };
    let v6 = a.src.is_ipv6();
    let dport = match proto {
        TCP | UDP => match a.dport {
            Some(p) => p,
            None => return reject("--dport is required for tcp and udp"),
        },
        ICMP | ICMPV6 => {
            if (proto == ICMPV6) != v6 {
                return reject("icmp goes with IPv4 addresses and icmpv6 with IPv6");
            }
            match a
                .icmp_type
                .as_deref()
                .map(|t| addr::icmp_type(t, proto == ICMPV6))
            {
                Some(Ok(t)) => u16::from(t) << 8,
                Some(Err(e)) => return reject(e),
                None => {
                    return reject(
                        "--icmp-type is required for icmp and icmpv6 (e.g. echo-request)",
                    );
                }
            }
        }
        _ => 0,
    };
    if a.modbus_function.is_some() && proto != TCP {
        return reject("--modbus-function needs --proto tcp (Modbus/TCP)");
    }
    if a.dnp3_function.is_some() && proto != TCP {
        return reject("--dnp3-function needs --proto tcp (DNP3 over TCP)");
    }
    if a.enip_service.is_some() && proto != TCP {
        return reject("--enip-service needs --proto tcp (EtherNet/IP)");
    }
    let src_asset = l.policy.asset_of(a.src);
    let src_mac = match &a.src_mac {
        Some(m) => match addr::mac(m) {
            Ok(m) => m,
            Err(e) => return reject(e),
        },
        None => src_asset.and_then(|(_, asset)| asset.mac).unwrap_or([0; 6]),
    };
    let ((family, src), (_, dst)) = (addr_bytes(a.src), addr_bytes(a.dst));
    let mut packet = Packet::first(
        family,
        src_mac,
        src,
        dst,
        proto,
        (a.sport.unwrap_or(0), dport),
        a.modbus_function
            .map(|function| Request::Modbus {
                unit: a.modbus_unit,
                function,
            })
            .or(a.dnp3_function.map(|function| Request::Dnp3 {
                outstation: a.dnp3_outstation,
                function,
            }))
            .or(a.enip_service.map(|service| Request::Enip {
                code: enip::code(service, a.enip_connection_manager),
            })),
    );
    l.compiled.clock = a.at;
    for g in &a.grants {
        match l.policy.conduits.iter().find(|c| &c.name == g) {
            Some(c) if c.on_demand.is_some() => {
                l.compiled
                    .grants
                    .insert(l.compiled.conduit_ids[g], u32::MAX);
            }
            Some(_) => {
                return reject(format!(
                    "--grant {g}: conduit \"{g}\" is not on demand (it needs no grant)"
                ));
            }
            None => return reject(format!("--grant {g}: the policy has no conduit \"{g}\"")),
        }
    }
    let dec = match &a.ingress {
        None => verdict::decide(&l.compiled, l.compiled.slot, &packet, 0),
        Some(iface) => {
            use crate::agent::{host, netlink};
            let Some(ifindex) = host::ifindex(iface) else {
                return reject(format!(
                    "--in {iface}: no such interface on this host; run explain on the gateway, or leave out --in"
                ));
            };
            let cfg = match netlink::ingress_cfg(iface, ifindex) {
                Ok((cfg, _)) => cfg,
                Err(e) => return reject(format!("--in {iface}: reading its links: {e}")),
            };
            l.compiled.ingress.insert(ifindex, cfg);
            packet.ifindex = ifindex;
            let c = &l.compiled;
            verdict::decide_at(c, &netlink::HostFib, c.slot, &packet, 0)
        }
    };
    let c = &l.compiled;
    let conduit = c.conduit_name(dec.conduit);
    let dst_asset = l.policy.asset_of(a.dst);
    let (src_zone, dst_zone) = (c.zone_name(dec.src_zone), c.zone_name(dec.dst_zone));
    // The rule of the conduit that matched (first in file order), to point at its line.
    let rule = conduit
        .and_then(|name| l.policy.conduits.iter().find(|x| x.name == name))
        .and_then(|x| {
            x.rules
                .iter()
                .enumerate()
                .find(|(_, r)| crate::policy::compile::rule_covers(r, proto, dport))
        });
    match a.format {
        Format::Json => {
            let v = serde_json::json!({
                "verdict": dec.verdict.as_str(),
                "reason": dec.reason.as_str(),
                "conduit": conduit,
                "src_zone": src_zone,
                "dst_zone": dst_zone,
                "src_asset": src_asset.map(|(_, x)| x.name.as_str()),
                "dst_asset": dst_asset.map(|(_, x)| x.name.as_str()),
                "in": a.ingress,
                "rule": rule.map(|(i, r)| serde_json::json!({"index": i + 1, "line": r.pos.line, "column": r.pos.column})),
            });
            println!("{v}");
        }
        Format::Text => {
            let end = |ip: IpAddr,
                       zone: &str,
                       asset: Option<(
                &crate::policy::model::Zone,
                &crate::policy::model::Asset,
            )>| {
                match asset {
                    Some((_, x)) => format!("{ip} (asset {}, zone {zone})", x.name),
                    None => format!("{ip} (no asset: zone {zone})"),
                }
            };
            println!("verdict:     {}", dec.verdict.as_str());
            println!("reason:      {}", dec.reason.as_str());
            println!("conduit:     {}", conduit.unwrap_or("-"));
            if let Some((i, r)) = rule {
                println!(
                    "rule:        {} of the conduit, {}:{}:{}",
                    i + 1,
                    a.policy.display(),
                    r.pos.line,
                    r.pos.column
                );
            }
            println!("source:      {}", end(a.src, src_zone, src_asset));
            println!("destination: {}", end(a.dst, dst_zone, dst_asset));
            println!("source MAC:  {}", fmt_mac(&src_mac));
            match &a.ingress {
                Some(i) => println!("in:          {i}"),
                None => println!(
                    "in:          - (interface checks not made: give --in IFACE on the gateway)"
                ),
            }
            let mut why = why(dec.reason, dec.verdict).to_owned();
            if dec.verdict == Verdict::WouldDeny {
                why.push_str("; the destination zone is in monitor mode, so it passes and is counted as would-deny");
            }
            if !why.is_empty() {
                println!("why:         {why}");
            }
        }
    }
    Exit::Ok.into()
}

/// A CIP service code for `--enip-service`: 0..127, decimal or `0x` hex.
fn cip_service(s: &str) -> Result<u8, String> {
    let n = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => s.parse::<u8>(),
    }
    .map_err(|_| format!("`{s}` is not a CIP service code: use 0..127 (e.g. 14 or 0x0e)"))?;
    if n > 127 {
        return Err(format!(
            "CIP service `{s}` is a response code (128..255): requests are 0..127"
        ));
    }
    Ok(n)
}
