//! The proof: every observed flow judged by the shared verdict function
//! (`conduit_common::verdict::decide`, the code the XDP program runs) over the compiled,
//! in-memory tables of a policy, as `explain` judges a flow's first packet.
use std::{collections::BTreeSet, net::IpAddr};

use conduit_common::{
    Verdict,
    inspect::Request,
    verdict::{self, Decision, Packet},
};

use super::observe::{FlowKey, Observations};
use crate::policy::{compile::addr_bytes, load::Loaded};

/// The first packet of `k` (a TCP SYN, a UDP datagram, an ICMP request), or with `modbus`
/// `(unit, function)` a segment carrying that one request, from `mac`.
pub fn first_packet(k: &FlowKey, mac: [u8; 6], modbus: Option<(u8, u8)>) -> Packet {
    let dport = match k.proto {
        1 | 58 => k.port << 8,
        6 | 17 => k.port,
        _ => 0,
    };
    let ((family, client), (_, server)) = (addr_bytes(k.client), addr_bytes(k.server));
    let request = modbus.map(|(unit, function)| Request::Modbus { unit, function });
    Packet::first(
        family,
        mac,
        client,
        server,
        k.proto,
        (40000, dport),
        request,
    )
}

/// The MAC a flow's client sends from: the one it was seen with one to one, else the one the
/// policy binds it to (so the answer is about the policy), else none.
fn mac_for(l: &Loaded, obs: &Observations, ip: IpAddr) -> [u8; 6] {
    obs.binding(ip)
        .or_else(|| l.policy.asset_of(ip).and_then(|(_, a)| a.mac))
        .unwrap_or([0; 6])
}

pub fn judge(l: &Loaded, obs: &Observations, k: &FlowKey, modbus: Option<(u8, u8)>) -> Decision {
    let p = first_packet(k, mac_for(l, obs, k.client), modbus);
    verdict::decide(&l.compiled, l.compiled.slot, &p, 0)
}

pub fn allowed(d: &Decision) -> bool {
    d.verdict == Verdict::Allow
}

/// The draft against every flow.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Proof {
    pub allows: u64,
    pub denies: u64,
    /// Answered flows the draft denies, unanswered ones it allows: each a bug of discover.
    pub wrong: Vec<String>,
    /// Modbus requests seen (client, server, unit, function), and how many the draft allows.
    pub modbus_seen: u64,
    pub modbus_allowed: u64,
}

pub fn prove(draft: &Loaded, obs: &Observations) -> Proof {
    let mut p = Proof::default();
    for (k, s) in &obs.flows {
        let d = judge(draft, obs, k, None);
        let ok = allowed(&d);
        if ok {
            p.allows += 1;
        } else {
            p.denies += 1;
        }
        let expect = s.is_answered()
            && k.client != k.server
            && super::observe::is_host_addr(k.client)
            && super::observe::is_host_addr(k.server);
        if ok != expect {
            p.wrong.push(format!(
                "{}: {} but the flow was {}answered (verdict {}, reason {})",
                super::emit::flow_text(k),
                if ok { "allowed" } else { "denied" },
                if s.is_answered() { "" } else { "not " },
                d.verdict.as_str(),
                d.reason.as_str()
            ));
        }
        if expect {
            for (unit, fs) in &s.modbus {
                for f in fs {
                    p.modbus_seen += 1;
                    if allowed(&judge(draft, obs, k, Some((*unit, *f)))) {
                        p.modbus_allowed += 1;
                    } else {
                        p.wrong.push(format!(
                            "{}: Modbus unit {unit} function {f} was seen but the draft denies it",
                            super::emit::flow_text(k)
                        ));
                    }
                }
            }
        }
    }
    p
}

/// A flow the base policy would deny.
#[derive(Debug, PartialEq, Eq, serde::Serialize)]
pub struct Denied {
    pub client: String,
    pub server: String,
    pub proto: u8,
    pub port: u16,
    pub verdict: &'static str,
    pub reason: &'static str,
    pub src_zone: String,
    pub dst_zone: String,
}

/// `--base`: what the base policy would deny of the answered flows (what to add), and which of
/// its conduits no observed flow used.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BaseReport {
    pub would_deny: Vec<Denied>,
    pub unused_conduits: Vec<String>,
}

pub fn against_base(base: &Loaded, obs: &Observations) -> BaseReport {
    let mut r = BaseReport::default();
    let mut used: BTreeSet<u32> = BTreeSet::new();
    for (k, s) in &obs.flows {
        let d = judge(base, obs, k, None);
        if allowed(&d) {
            used.insert(d.conduit);
        } else if s.is_answered() {
            let c = &base.compiled;
            r.would_deny.push(Denied {
                client: k.client.to_string(),
                server: k.server.to_string(),
                proto: k.proto,
                port: k.port,
                verdict: d.verdict.as_str(),
                reason: d.reason.as_str(),
                src_zone: c.zone_name(d.src_zone).to_owned(),
                dst_zone: c.zone_name(d.dst_zone).to_owned(),
            });
        }
    }
    r.unused_conduits = base
        .compiled
        .conduit_ids
        .iter()
        .filter(|(_, id)| !used.contains(id))
        .map(|(n, _)| n.clone())
        .collect();
    r
}
