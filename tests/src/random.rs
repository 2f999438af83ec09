//! Random policies and random (valid, mutated, truncated) frames for the differential test.
use conduit_agent::policy::validate::fmt_mac;
use rand::{Rng, RngCore, seq::IndexedRandom};

use crate::frames::{self, L4, V4Opts};

/// An address of the generated policy, for building frames that hit it.
#[derive(Clone, Debug)]
pub struct Host {
    pub v4: Option<[u8; 4]>,
    pub v6: Option<[u8; 16]>,
    pub mac: [u8; 6],
}

pub struct GenPolicy {
    pub yaml: String,
    pub hosts: Vec<Host>,
    pub ports: Vec<u16>,
    /// On-demand conduits to judge as granted (the rest of the on-demand ones are closed).
    pub granted: Vec<String>,
}

const PORTS: &[u16] = &[22, 80, 102, 443, 502, 2404, 20000, 20005, 20010, 44818];

fn mac_for(z: usize, i: usize) -> [u8; 6] {
    [0x02, 0, 0, z as u8, 0, i as u8]
}

fn v6_for(z: usize, i: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[7] = z as u8;
    a[15] = i as u8;
    a
}

/// A random valid policy: zones with exact, CIDR and MAC-bound assets (v4 and v6), conduits
/// over random zone pairs (and `unknown`) with random rules, random defaults.
pub fn policy(rng: &mut impl Rng) -> GenPolicy {
    let nz = rng.random_range(1..=5);
    let mut y = String::from("version: 1\nsite: diff\n");
    let pick = |rng: &mut dyn RngCore, a: &'static str, b: &'static str| {
        if rng.random_bool(0.5) { a } else { b }
    };
    y += &format!(
        "defaults:\n  mode: {}\n  intra_zone: {}\n  fragments: {}\n  l2:\n    default: {}\n    allow_ethertypes: [lldp]\n",
        if rng.random_bool(0.2) {
            "monitor"
        } else {
            "enforce"
        },
        pick(rng, "allow", "deny"),
        pick(rng, "allow", "deny"),
        if rng.random_bool(0.2) {
            "allow"
        } else {
            "deny"
        },
    );
    y += "zones:\n";
    let mut hosts = Vec::new();
    let mut assets: Vec<(usize, String)> = Vec::new();
    let mut wide_cidr_used = false;
    for z in 0..nz {
        y += &format!(
            "  - name: z{z}\n    security_level: {}\n",
            rng.random_range(1..=4)
        );
        if rng.random_bool(0.2) {
            y += "    mode: monitor\n";
        }
        if rng.random_bool(0.3) {
            y += &format!("    intra_zone: {}\n", pick(rng, "allow", "deny"));
        }
        let na = rng.random_range(0..=4);
        if na == 0 {
            continue;
        }
        y += "    assets:\n";
        for i in 1..=na {
            let name = format!("a{z}-{i}");
            let v4 = [10, z as u8, 0, i as u8];
            let mac = mac_for(z, i);
            let bound = rng.random_bool(0.5);
            if rng.random_bool(0.3) {
                let a6 = v6_for(z, i);
                let s = std::net::Ipv6Addr::from(a6);
                if bound {
                    y += &format!(
                        "      - {{ name: {name}, ip: \"{s}\", mac: \"{}\" }}\n",
                        fmt_mac(&mac)
                    );
                } else {
                    y += &format!("      - {{ name: {name}, ip: \"{s}\" }}\n");
                }
                hosts.push(Host {
                    v4: None,
                    v6: Some(a6),
                    mac,
                });
            } else {
                if bound {
                    y += &format!(
                        "      - {{ name: {name}, ip: 10.{z}.0.{i}, mac: \"{}\" }}\n",
                        fmt_mac(&mac)
                    );
                } else {
                    y += &format!("      - {{ name: {name}, ip: 10.{z}.0.{i} }}\n");
                }
                hosts.push(Host {
                    v4: Some(v4),
                    v6: None,
                    mac,
                });
            }
            assets.push((z, name));
        }
        // CIDRs: a /24 around the zone, sometimes a /16, one zone may claim all of 10/8.
        if rng.random_bool(0.6) {
            y += &format!("      - {{ name: net{z}, cidr: 10.{z}.0.0/24 }}\n");
            assets.push((z, format!("net{z}")));
            hosts.push(Host {
                v4: Some([10, z as u8, 0, 200]),
                v6: None,
                mac: mac_for(z, 200),
            });
        }
        if rng.random_bool(0.3) {
            y += &format!("      - {{ name: wide{z}, cidr: 10.{z}.0.0/16 }}\n");
            hosts.push(Host {
                v4: Some([10, z as u8, 7, 1]),
                v6: None,
                mac: mac_for(z, 201),
            });
        }
        if !wide_cidr_used && rng.random_bool(0.2) {
            wide_cidr_used = true;
            y += &format!("      - {{ name: all{z}, cidr: 10.0.0.0/8 }}\n");
        }
        if rng.random_bool(0.3) {
            y += &format!("      - {{ name: net6-{z}, cidr: \"fd00:0:0:{z}::/64\" }}\n");
            hosts.push(Host {
                v4: None,
                v6: Some(v6_for(z, 150)),
                mac: mac_for(z, 150),
            });
        }
    }
    let zones: Vec<String> = (0..nz)
        .map(|z| format!("z{z}"))
        .chain(["unknown".to_string()])
        .collect();
    let nc = rng.random_range(0..=6);
    y += "conduits:\n";
    if nc == 0 {
        y.truncate(y.len() - 1);
        y += " []\n";
    }
    let mut granted = Vec::new();
    for c in 0..nc {
        let from = zones.choose(rng).unwrap().clone();
        let to = zones.choose(rng).unwrap().clone();
        y += &format!("  - name: c{c}\n    from: {from}\n    to: {to}\n");
        let in_zone = |zname: &str| -> Vec<&String> {
            assets
                .iter()
                .filter(|(z, _)| format!("z{z}") == zname)
                .map(|(_, n)| n)
                .collect()
        };
        let srcs = in_zone(&from);
        if !srcs.is_empty() && rng.random_bool(0.25) {
            y += &format!("    sources: [{}]\n", srcs.choose(rng).unwrap());
        }
        let dsts = in_zone(&to);
        if !dsts.is_empty() && rng.random_bool(0.25) {
            y += &format!("    destinations: [{}]\n", dsts.choose(rng).unwrap());
        }
        if rng.random_bool(0.2) {
            y += "    bidirectional: true\n";
        }
        // Some conduits have ended (reason `expired`), some end in the future.
        match rng.random_range(0..10) {
            0 => y += "    expires: \"2020-01-01T00:00:00Z\"\n",
            1 => y += "    expires: \"2099-12-31T23:59:59+01:00\"\n",
            _ => {}
        }
        // Some are on demand (reason `not_granted`), half of those granted.
        if rng.random_bool(0.15) {
            y += "    on_demand: { max: 8h }\n";
            if rng.random_bool(0.5) {
                granted.push(format!("c{c}"));
            }
        }
        // One inspection filter (Modbus, DNP3 or EtherNet/IP) per conduit (two tcp rules of
        // a conduit on the same port must not differ in it), on every tcp rule; then no
        // `proto: any` rule either.
        // (key, the codes' key, code sets, address list): Modbus in 4 of 10 conduits, DNP3
        // in 2, EtherNet/IP in 2 (its denials are the rarest: random EtherNet/IP frames
        // must reach the conduit's port between its zones).
        const FILTERS: [(&str, &str, [&str; 4], &str); 3] = [
            (
                "modbus",
                "functions",
                ["read", "read, write", "3", "read, 90"],
                "unit_ids: [1, 255]",
            ),
            (
                "dnp3",
                "functions",
                ["read", "read, unsolicited", "5", "read, control, 13"],
                "outstations: [10, 1024]",
            ),
            (
                "enip",
                "services",
                [
                    "read, connection",
                    "read",
                    "read, write, connection",
                    "14, 5",
                ],
                "",
            ),
        ];
        let modbus = match rng.random_range(0..10) {
            0..=3 => Some(&FILTERS[0]),
            4..=5 => Some(&FILTERS[1]),
            6..=7 => Some(&FILTERS[2]),
            _ => None,
        }
        .map(|(key, codes, sets, addresses)| {
            format!(
                ", {key}: {{ {codes}: [{}]{} }}",
                sets.choose(rng).unwrap(),
                if !addresses.is_empty() && rng.random_bool(0.5) {
                    format!(", {addresses}")
                } else {
                    String::new()
                }
            )
        });
        let mb = modbus.as_deref().unwrap_or("");
        y += "    rules:\n";
        for _ in 0..rng.random_range(1..=3) {
            y += &match rng.random_range(0..8) {
                0 if modbus.is_none() => "      - { proto: any }\n".to_string(),
                0 => "      - { proto: udp }\n".to_string(),
                1 => format!(
                    "      - {{ proto: tcp, ports: [{}, \"20000-20010\"]{mb} }}\n",
                    PORTS.choose(rng).unwrap()
                ),
                2 => format!(
                    "      - {{ proto: udp, ports: [{}] }}\n",
                    PORTS.choose(rng).unwrap()
                ),
                3 => format!("      - {{ proto: tcp{mb} }}\n"),
                4 => "      - { proto: icmp, icmp_types: [echo-request] }\n".to_string(),
                5 => "      - { proto: icmpv6 }\n".to_string(),
                6 => "      - { proto: 47 }\n".to_string(),
                _ => format!(
                    "      - {{ proto: tcp, ports: [{}]{mb} }}\n",
                    PORTS.choose(rng).unwrap()
                ),
            };
        }
    }
    GenPolicy {
        yaml: y,
        hosts,
        ports: PORTS.to_vec(),
        granted,
    }
}

fn random_v4(rng: &mut impl Rng, hosts: &[Host]) -> ([u8; 4], [u8; 6]) {
    let v4: Vec<&Host> = hosts.iter().filter(|h| h.v4.is_some()).collect();
    if !v4.is_empty() && rng.random_bool(0.8) {
        let h = v4.choose(rng).unwrap();
        (h.v4.unwrap(), h.mac)
    } else {
        (
            [
                rng.random_range(1..=223),
                rng.random(),
                rng.random(),
                rng.random(),
            ],
            rng.random::<[u8; 6]>().map(|b| b & 0xfe),
        )
    }
}

fn random_v6(rng: &mut impl Rng, hosts: &[Host]) -> ([u8; 16], [u8; 6]) {
    let v6: Vec<&Host> = hosts.iter().filter(|h| h.v6.is_some()).collect();
    if !v6.is_empty() && rng.random_bool(0.8) {
        let h = v6.choose(rng).unwrap();
        (h.v6.unwrap(), h.mac)
    } else {
        let mut a: [u8; 16] = rng.random();
        a[0] = 0xfd;
        (a, [0x02, 9, 9, 9, 9, 9])
    }
}

fn random_l4(rng: &mut impl Rng, ports: &[u16], v6: bool) -> L4 {
    let port = |rng: &mut dyn RngCore| {
        if rng.random_bool(0.7) {
            *ports.choose(rng).unwrap()
        } else {
            rng.random()
        }
    };
    match rng.random_range(0..13) {
        11 => {
            let sport = port(rng);
            let dport = if rng.random_bool(0.5) {
                44818
            } else {
                port(rng)
            };
            random_enip(rng, sport, dport)
        }
        0..=3 => L4::Tcp {
            sport: port(rng),
            dport: port(rng),
            flags: *[0x02u8, 0x12, 0x10, 0x11, 0x04, 0x18, 0x01]
                .choose(rng)
                .unwrap(),
        },
        4..=5 => L4::Udp {
            sport: port(rng),
            dport: port(rng),
        },
        6..=8 => {
            let ty = if v6 {
                *[128u8, 129, 135, 136, 1, 2].choose(rng).unwrap()
            } else {
                *[8u8, 0, 3, 11].choose(rng).unwrap()
            };
            L4::Icmp {
                ty,
                code: 0,
                id: rng.random_range(0..4),
            }
        }
        9 => {
            let sport = port(rng);
            let dport = if rng.random_bool(0.5) { 502 } else { port(rng) };
            random_modbus(rng, sport, dport)
        }
        10 => {
            let sport = port(rng);
            let dport = if rng.random_bool(0.5) {
                20000
            } else {
                port(rng)
            };
            random_dnp3(rng, sport, dport)
        }
        _ => L4::Raw {
            proto: *[47u8, 50, 132].choose(rng).unwrap(),
        },
    }
}

/// A TCP data segment that is mostly an EtherNet/IP request: session commands, CIP services
/// inside and outside the generated filters, to the Connection Manager or elsewhere,
/// wrapped in Unconnected_Send or batched in a Multiple Service Packet, and broken framing
/// (lengths, item counts and types, a second message, a response, a cut).
fn random_enip(rng: &mut impl Rng, sport: u16, dport: u16) -> L4 {
    use conduit_common::inspect::enip;
    let service = *[
        0x01u8, 0x0E, 0x4C, 0x52, 0x4D, 0x4E, 0x05, 0x10, 0x54, 0x5B, 0x8E,
    ]
    .choose(rng)
    .unwrap();
    let path: &[u8] = match rng.random_range(0..4) {
        0 => &[0x20, 6, 0x24, 1],
        1 => &[0x21, 0, 6, 0, 0x24, 1],
        2 => &[0x91, 3, b'C', b'n', b't', 0],
        _ => &[0x20, 1, 0x24, 1],
    };
    let mut request = vec![service, (path.len() / 2) as u8];
    request.extend_from_slice(path);
    request.extend_from_slice(&[1, 0][..rng.random_range(0..=2)]);
    let cip = match rng.random_range(0..6) {
        0 => frames::cip_unconnected_send(&request),
        1 => {
            // A Multiple Service Packet of the request and a short one.
            let second = [
                *[0x0Eu8, 0x10, 0x05].choose(rng).unwrap(),
                2,
                0x20,
                1,
                0x24,
                1,
            ];
            frames::cip_multiple(&request, &second)
        }
        _ => request,
    };
    let mut b = match rng.random_range(0..8) {
        0 => frames::enip_message(
            *[enip::LIST_IDENTITY, enip::REGISTER_SESSION, 0x72]
                .choose(rng)
                .unwrap(),
            &[1, 0, 0, 0][..rng.random_range(0..=4)],
        ),
        n => frames::enip_send(n % 2 == 0, &cip),
    };
    match rng.random_range(0..14) {
        0 => b[2] = b[2].wrapping_add(1),
        1 if b.len() > 31 => b[30] = 3,
        2 if b.len() > 36 => b[36] ^= 0x03,
        3 => b.extend(frames::enip_message(enip::LIST_IDENTITY, &[])),
        4 if b.len() > 40 => b[40] |= 0x80,
        5 => b.truncate(rng.random_range(1..b.len())),
        _ => {}
    }
    b.truncate(frames::TCP_DATA);
    let (data, len) = frames::tcp_data(&b);
    L4::TcpData {
        sport,
        dport,
        flags: *[0x18u8, 0x10, 0x19].choose(rng).unwrap(),
        data,
        len,
    }
}

/// A TCP data segment that is mostly a DNP3 request frame: function codes and outstation
/// addresses inside and outside the generated filters, link services, frames longer than the
/// inspection window, and broken framing (start bytes, CRCs, length, two frames in one
/// segment, a frame cut short, a non-first transport segment or application fragment, a
/// frame from an outstation).
fn random_dnp3(rng: &mut impl Rng, sport: u16, dport: u16) -> L4 {
    let function = *[0u8, 1, 2, 3, 5, 13, 20, 21, 129, 255].choose(rng).unwrap();
    let outstation = *[10u16, 1024, 11, 0xffff].choose(rng).unwrap();
    let control = *[0xC4u8, 0xC4, 0xC4, 0xC3, 0xC0, 0xC9, 0x80, 0x44, 0xC7]
        .choose(rng)
        .unwrap();
    let mut user = Vec::new();
    if matches!(control, 0xC4 | 0xC3 | 0x44) || rng.random_bool(0.1) {
        user.extend_from_slice(&[0xC0 | rng.random_range(0..64), 0xC0, function]);
        let objects = *[0usize, 0, 3, 13, 14, 30, 40].choose(rng).unwrap();
        user.extend((0..objects).map(|i| i as u8));
    }
    // Not the first transport segment, or not the first application fragment.
    let (at, bit) = *[(0, 0x40u8), (1, 0x80)].choose(rng).unwrap();
    if rng.random_bool(0.15)
        && let Some(b) = user.get_mut(at)
    {
        *b &= !bit;
    }
    let (mut data, mut len) = frames::dnp3_frame(outstation, 1, control, &user);
    let n = usize::from(len);
    match rng.random_range(0..14) {
        0 => data[1] = 0x65,
        1 => data[8] ^= 1,
        2 if n > 12 => data[n.min(28) - 1] ^= 0x10,
        3 => data[2] = data[2].wrapping_add(rng.random_range(1..4)),
        4 => {
            // A second frame right after the first.
            let (second, l2) = frames::dnp3_frame(outstation, 1, 0xC4, &[0xC1, 0xC1, 1]);
            let take = (frames::TCP_DATA - n).min(usize::from(l2));
            data[n..n + take].copy_from_slice(&second[..take]);
            len += take as u8;
        }
        5 => len = rng.random_range(1..n as u8),
        _ => {}
    }
    L4::TcpData {
        sport,
        dport,
        flags: *[0x18u8, 0x10, 0x19].choose(rng).unwrap(),
        data,
        len,
    }
}

/// A TCP data segment that is mostly a Modbus/TCP request: function codes inside and outside
/// the generated filters, unit IDs in and out of them, and broken framing (wrong protocol id
/// or length, two ADUs in one segment, a short payload).
fn random_modbus(rng: &mut impl Rng, sport: u16, dport: u16) -> L4 {
    let function = *[1u8, 3, 4, 5, 6, 16, 23, 43, 90, 0, 128, 200]
        .choose(rng)
        .unwrap();
    let unit = *[1u8, 2, 255, 0].choose(rng).unwrap();
    let pdu: &[u8] = &[0, 1, 0, 2][..rng.random_range(0..=4)];
    let (mut data, mut len) = frames::modbus_adu(rng.random(), unit, function, pdu);
    match rng.random_range(0..10) {
        0 => data[3] = 1,
        1 => data[5] = data[5].wrapping_add(1),
        2 => {
            // A second ADU right after the first.
            let n = usize::from(len);
            let (second, l2) = frames::modbus_adu(7, unit, 3, &[0, 1]);
            let take = (frames::TCP_DATA - n).min(usize::from(l2));
            data[n..n + take].copy_from_slice(&second[..take]);
            len += take as u8;
        }
        3 => len = rng.random_range(1..8),
        _ => {}
    }
    L4::TcpData {
        sport,
        dport,
        flags: *[0x18u8, 0x10, 0x19].choose(rng).unwrap(),
        data,
        len,
    }
}

/// The same flow seen from the other side (for replies).
pub fn reverse(f: &[u8]) -> Option<Vec<u8>> {
    let mut r = f.to_vec();
    let et = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    match et {
        0x0800 if f.len() >= 34 => {
            let ihl = usize::from(f[14] & 0x0f) * 4;
            r[26..30].copy_from_slice(&f[30..34]);
            r[30..34].copy_from_slice(&f[26..30]);
            let l4 = 14 + ihl;
            swap_l4(&mut r, l4, f[23]);
        }
        0x86dd if f.len() >= 54 => {
            r[22..38].copy_from_slice(&f[38..54]);
            r[38..54].copy_from_slice(&f[22..38]);
            swap_l4(&mut r, 54, f[20]);
        }
        _ => return None,
    }
    // The reply comes from the other host's MAC: use the frame's destination MAC as source
    // is meaningless here (MAC_B); keep the source MAC unless told otherwise by the caller.
    Some(r)
}

fn swap_l4(r: &mut [u8], l4: usize, proto: u8) {
    if r.len() < l4 + 4 {
        return;
    }
    match proto {
        6 | 17 => {
            let (a, b) = ([r[l4], r[l4 + 1]], [r[l4 + 2], r[l4 + 3]]);
            r[l4..l4 + 2].copy_from_slice(&b);
            r[l4 + 2..l4 + 4].copy_from_slice(&a);
            if proto == 6 && r.len() > l4 + 13 {
                // SYN -> SYN+ACK, otherwise ACK.
                r[l4 + 13] = if r[l4 + 13] & 0x02 != 0 { 0x12 } else { 0x10 };
            }
        }
        1 => r[l4] = if r[l4] == 8 { 0 } else { r[l4] },
        58 => r[l4] = if r[l4] == 128 { 129 } else { r[l4] },
        _ => {}
    }
}

/// Sets the frame's source MAC.
pub fn set_src_mac(f: &mut [u8], mac: [u8; 6]) {
    if f.len() >= 12 {
        f[6..12].copy_from_slice(&mac);
    }
}

/// A random frame for `p`: mostly well-formed traffic between its hosts, often mutated.
pub fn frame(rng: &mut impl Rng, p: &GenPolicy) -> Vec<u8> {
    let vlans: Vec<u16> = (0..*[0usize, 0, 0, 0, 1, 2, 3].choose(rng).unwrap())
        .map(|_| if rng.random_bool(0.5) { 0x8100 } else { 0x88a8 })
        .collect();
    let mut f = match rng.random_range(0..20) {
        0..=11 => {
            let (src, smac) = random_v4(rng, &p.hosts);
            let (dst, _) = random_v4(rng, &p.hosts);
            let l4 = random_l4(rng, &p.ports, false);
            let o = V4Opts {
                options: if rng.random_bool(0.1) {
                    4 * rng.random_range(1..=10)
                } else {
                    0
                },
                mf: rng.random_bool(0.05),
                frag_offset: if rng.random_bool(0.05) {
                    rng.random_range(1..100)
                } else {
                    0
                },
            };
            let smac = if rng.random_bool(0.1) {
                p.hosts.choose(rng).map_or(smac, |h| h.mac)
            } else {
                smac
            };
            let mut f = frames::eth(frames::MAC_B, smac, &vlans, 0x0800);
            f.extend(frames::ipv4(src, dst, l4.proto(false), &l4.bytes(), o));
            f
        }
        12..=15 => {
            let (src, smac) = random_v6(rng, &p.hosts);
            let (mut dst, _) = random_v6(rng, &p.hosts);
            // Now and then a destination no router forwards (link-local, all-nodes,
            // solicited-node), where neighbour discovery is exempt.
            if rng.random_bool(0.15) {
                dst = *[
                    [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                    [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                    [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 1],
                ]
                .choose(rng)
                .unwrap();
            }
            let l4 = random_l4(rng, &p.ports, true);
            let n = *[0usize, 0, 0, 1, 2, 4, 5].choose(rng).unwrap();
            let exts: Vec<u8> = (0..n)
                .map(|_| *[0u8, 43, 60, 44].choose(rng).unwrap())
                .collect();
            let frag = if rng.random_bool(0.3) {
                rng.random_range(0..4)
            } else {
                0
            };
            let mut f = frames::eth(frames::MAC_B, smac, &vlans, 0x86dd);
            f.extend(frames::ipv6(
                src,
                dst,
                &exts,
                l4.proto(true),
                &l4.bytes(),
                frag,
            ));
            // Hop limit: 64 as built, or 255 (sent on the link, as neighbour discovery is).
            if rng.random_bool(0.5) {
                let at = 14 + 4 * vlans.len() + 7;
                f[at] = 255;
            }
            f
        }
        16..=17 => {
            let (spa, smac) = random_v4(rng, &p.hosts);
            let (tpa, _) = random_v4(rng, &p.hosts);
            let sha = if rng.random_bool(0.2) {
                p.hosts.choose(rng).map_or(smac, |h| h.mac)
            } else {
                smac
            };
            let eth_src = if rng.random_bool(0.1) {
                rng.random::<[u8; 6]>().map(|b| b & 0xfe)
            } else {
                smac
            };
            let mut f = frames::arp(eth_src, sha, spa, tpa, rng.random_range(1..=2));
            if !vlans.is_empty() {
                let mut g = frames::eth([0xff; 6], eth_src, &vlans, 0x0806);
                g.extend_from_slice(&f[14..]);
                f = g;
            }
            f
        }
        _ => {
            let et = *[0x88ccu16, 0x88f7, 0x8892, 0x1234, 0x0600, 0x0100]
                .choose(rng)
                .unwrap();
            let mut f = frames::eth(frames::MAC_B, frames::MAC_A, &vlans, et);
            f.extend_from_slice(&[0u8; 46]);
            f
        }
    };
    // Ethernet padding sometimes.
    if rng.random_bool(0.1) {
        f.extend(std::iter::repeat_n(0u8, rng.random_range(1..20)));
    }
    mutate(rng, &mut f);
    f
}

/// Often leaves the frame alone; else truncates it, flips bits, or scribbles on a length field.
pub fn mutate(rng: &mut impl Rng, f: &mut Vec<u8>) {
    match rng.random_range(0..10) {
        0 => {
            let n = rng.random_range(14..=f.len().max(14));
            f.truncate(n);
        }
        1 => {
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..f.len());
                f[i] ^= 1 << rng.random_range(0..8);
            }
        }
        2 => {
            // IHL / version / data offset / lengths live in the first 60 bytes.
            let i = rng.random_range(12..f.len().min(70));
            f[i] = rng.random();
        }
        _ => {}
    }
    while f.len() < 14 {
        f.push(0);
    }
}
