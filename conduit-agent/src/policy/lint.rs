//! IEC 62443 lints: warnings (errors with `check --strict`) about policies that are valid but
//! weaker than the zones they protect deserve.
use super::{
    compile::Compiled,
    diag::Diagnostics,
    model::{Addr, Policy},
};

/// The registered Modbus/TCP port.
/// The protocols a rule can inspect, for lint [L8]: registered port, name, the rule's key,
/// what its codes are called, what passes without a filter, and the least-privilege filter.
const INSPECTED: [(u16, &str, &str, &str, &str, &str); 3] = [
    (
        conduit_common::inspect::modbus::PORT,
        "Modbus/TCP",
        "modbus",
        "function code",
        "programming and stop",
        "functions: [read]",
    ),
    (
        conduit_common::inspect::dnp3::PORT,
        "DNP3",
        "dnp3",
        "function code",
        "operate, restart and file transfer",
        "functions: [read]",
    ),
    (
        conduit_common::inspect::enip::PORT,
        "EtherNet/IP",
        "enip",
        "CIP service",
        "tag writes, resets and stops",
        "services: [read, connection]",
    ),
];

/// SL-T of a zone by name; `unknown` (the outside world) counts as SL 1.
fn sl(p: &Policy, zone: &str) -> u8 {
    p.zone(zone).map_or(1, |z| z.security_level)
}

pub fn lint(p: &Policy, c: &Compiled, d: &mut Diagnostics) {
    for z in &p.zones {
        // 2. Assets of high-SL zones must be MAC-bound.
        if z.security_level >= 3 {
            for a in &z.assets {
                match a.addr {
                    Addr::Ip(_) if a.mac.is_none() => d.warning(a.pos, format!(
                        "[L2] asset \"{}\" is in zone \"{}\" (SL-T {}) without a `mac` binding: bind it so a spoofed address is dropped",
                        a.name, z.name, z.security_level)),
                    Addr::Cidr(..) => d.warning(a.pos, format!(
                        "[L2] asset \"{}\" in zone \"{}\" (SL-T {}) is a network and cannot be MAC-bound: list the devices with `ip` and `mac`",
                        a.name, z.name, z.security_level)),
                    _ => {}
                }
            }
        }
        // 6. Monitor mode on an SL 4 zone leaves the most critical zone unprotected.
        if let Some((super::model::Mode::Monitor, pos)) = z.mode
            && z.security_level == 4
        {
            d.warning(pos, format!(
                "[L6] zone \"{}\" has SL-T 4 but `mode: monitor`: nothing into it is dropped; use monitor only for a short observation period",
                z.name));
        }
        // 7a. A zone with no assets holds nothing.
        if z.assets.is_empty() {
            d.warning(z.pos, format!("[L7] zone \"{}\" has no assets: no address belongs to it and its conduits never match", z.name));
        }
    }
    for x in &p.conduits {
        let zones: Vec<&str> = x.from.iter().chain(&x.to).map(String::as_str).collect();
        let into: Vec<&str> = if x.bidirectional.is_some() {
            zones.clone()
        } else {
            x.to.iter().map(String::as_str).collect()
        };
        let high_into: Vec<&str> = into.iter().copied().filter(|z| sl(p, z) >= 3).collect();
        // 1. Wide-open rules into high-SL zones.
        if let Some(target) = high_into.first() {
            for r in x.rules.iter().filter(|r| r.is_wide_open()) {
                d.warning(r.pos, format!(
                    "[L1] conduit \"{}\" allows {} into zone \"{target}\" (SL-T {}): list only the ports it needs (least privilege)",
                    x.name,
                    if r.proto == super::model::Proto::Any { "every protocol".to_owned() } else { format!("every {} port", r.proto.name()) },
                    sl(p, target)));
            }
        }
        // 8. An industrial protocol into a high-SL zone without its filter: any client
        //    allowed to read could also write, or stop and reprogram the PLC (Modbus 90,
        //    125, 126), or operate a breaker and restart the outstation (DNP3 5, 13). A
        //    filter (read-only is least privilege) settles it.
        if let Some(target) = high_into.first() {
            for r in x.rules.iter().filter(|r| {
                // A wide-open rule has its own, stronger warning ([L1]).
                r.modbus.is_none()
                    && r.dnp3.is_none()
                    && r.enip.is_none()
                    && !r.is_wide_open()
                    && r.proto == super::model::Proto::Number(super::model::TCP)
            }) {
                for (port, what, key, codes, passes, least) in INSPECTED {
                    if r.ports
                        .as_ref()
                        .is_some_and(|ports| ports.iter().any(|&(lo, hi)| lo <= port && port <= hi))
                    {
                        d.warning(r.pos, format!(
                            "[L8] conduit \"{}\" allows {what} (port {port}) into zone \"{target}\" (SL-T {}) without a `{key}` filter: every {codes} passes, {passes} included; add `{key}: {{ {least} }}` (least privilege), or list what the clients must send",
                            x.name, sl(p, target)));
                    }
                }
            }
        }
        // 3. The conduit's own SL-T must reach the highest of the zones it joins.
        let max = zones.iter().map(|z| sl(p, z)).max().unwrap_or(1);
        if let Some((csl, pos)) = x.security_level
            && csl < max
        {
            d.warning(pos, format!(
                "[L3] conduit \"{}\" has security_level {csl}, below SL-T {max} of a zone it joins: a conduit must be as strong as its strongest zone",
                x.name));
        }
        // 4. Zones far apart in SL-T should meet through a DMZ.
        'pairs: for f in &x.from {
            for t in &x.to {
                let (a, b) = (sl(p, f), sl(p, t));
                if a.abs_diff(b) >= 2 {
                    d.warning(x.pos, format!(
                        "[L4] conduit \"{}\" joins zone \"{f}\" (SL-T {a}) and zone \"{t}\" (SL-T {b}) directly: put a DMZ zone between them",
                        x.name));
                    break 'pairs;
                }
            }
        }
        // 5. Bidirectional conduits let the lower zone initiate into the higher one.
        if let Some(pos) = x.bidirectional
            && let Some(z) = zones.iter().find(|z| sl(p, z) >= 3)
        {
            d.warning(pos, format!(
                "[L5] conduit \"{}\" is bidirectional and joins zone \"{z}\" (SL-T {}): use two one-way conduits so each direction is explicit",
                x.name, sl(p, z)));
        }
        // 7b. A conduit that can never match.
        let empty = |side: &[String]| {
            side.iter()
                .all(|z| z != "unknown" && p.zone(z).is_some_and(|z| z.assets.is_empty()))
        };
        if empty(&x.from) || empty(&x.to) {
            d.warning(
                x.pos,
                format!(
                    "[L7] conduit \"{}\" can never match: its `from` or `to` zones have no assets",
                    x.name
                ),
            );
        }
    }
    // 9. A draft (`conduit discover`) that nobody has reviewed yet.
    for z in &p.zones {
        if let Some(pos) = z.review_pending {
            d.warning(pos, format!(
                "[L9] zone \"{}\" is a draft (`review: pending`): check its assets, SL-T and Purdue level, then set `review: done`; the agent does not enforce it before",
                z.name));
        }
    }
    for x in &p.conduits {
        if let Some(pos) = x.review_pending {
            d.warning(pos, format!(
                "[L9] conduit \"{}\" is a draft (`review: pending`): check that every flow it allows belongs in the plant, then set `review: done`; the agent does not enforce it before",
                x.name));
        }
    }
    // 10. A conduit that has ended (`expires` in the past) allows nothing: a leftover.
    let now = (conduit_common::verdict::Tables::now_tai_ns(c) / 1_000_000_000) as u32;
    for x in &p.conduits {
        if let Some((end, pos)) = x.expires
            && end <= now
        {
            d.warning(pos, format!(
                "[L10] conduit \"{}\" ended at {} (`expires`): it allows nothing any more; remove it, or move `expires` if the access is still needed",
                x.name,
                crate::agent::audit::rfc3339(u128::from(end) * 1_000_000_000)));
        }
    }
    for (name, pos) in &c.shadowed {
        d.warning(*pos, format!(
            "[L7] this rule of conduit \"{name}\" never matches: earlier conduits already allow everything it allows, so its traffic is counted there"));
    }
    d.sort();
}

/// What `run` refuses: zones and conduits still `review: pending` that would be enforced. A
/// zone is enforced when its mode (else `defaults.mode`) is enforce; a conduit when one of its
/// `to` zones is (the destination zone's mode applies, SPEC §1), or, for `unknown`,
/// `defaults.mode`. Each as (position, message).
pub fn pending_enforced(p: &Policy) -> Vec<(super::Pos, String)> {
    use super::model::Mode;
    let mode_of = |zone: &str| {
        p.zone(zone)
            .and_then(|z| z.mode.map(|(m, _)| m))
            .unwrap_or(p.defaults.mode)
    };
    let mut out = Vec::new();
    for z in &p.zones {
        if let Some(pos) = z.review_pending
            && mode_of(&z.name) == Mode::Enforce
        {
            out.push((pos, format!(
                "zone \"{}\" is still `review: pending` and would be enforced: review it and set `review: done`, or run it in `mode: monitor` until then",
                z.name)));
        }
    }
    for x in &p.conduits {
        let into = x.to.iter().chain(if x.bidirectional.is_some() {
            &x.from[..]
        } else {
            &[]
        });
        if let Some(pos) = x.review_pending
            && let Some(z) = into.clone().find(|z| mode_of(z) == Mode::Enforce)
        {
            out.push((pos, format!(
                "conduit \"{}\" is still `review: pending` and would be enforced (zone \"{z}\" is in enforce mode): review it and set `review: done`, or keep that zone in `mode: monitor` until then",
                x.name)));
        }
    }
    out
}
