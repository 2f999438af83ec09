//! Hand-built frames for BPF_PROG_TEST_RUN.

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

/// Internet checksum over `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The most payload bytes of an [`L4::TcpData`].
pub const TCP_DATA: usize = 96;

/// `bytes` as [`L4::TcpData`] payload: `(data, len)`.
pub fn tcp_data(bytes: &[u8]) -> ([u8; TCP_DATA], u8) {
    let mut d = [0u8; TCP_DATA];
    d[..bytes.len()].copy_from_slice(bytes);
    (d, bytes.len() as u8)
}

/// A DNP3 link frame from `master` to `outstation` with `user` as user data (transport
/// header, application header, function code, objects), every CRC right, as
/// [`L4::TcpData`] payload.
pub fn dnp3_frame(outstation: u16, master: u16, control: u8, user: &[u8]) -> ([u8; TCP_DATA], u8) {
    use conduit_common::inspect::dnp3::{BLOCK, START, crc};
    let mut b = vec![START[0], START[1], 5 + user.len() as u8, control];
    b.extend_from_slice(&outstation.to_le_bytes());
    b.extend_from_slice(&master.to_le_bytes());
    b.extend_from_slice(&crc(&b[..8]).to_le_bytes());
    for block in user.chunks(BLOCK) {
        b.extend_from_slice(block);
        b.extend_from_slice(&crc(block).to_le_bytes());
    }
    tcp_data(&b)
}

/// An EtherNet/IP encapsulation message, and SendRRData/SendUnitData carrying a CIP request.
pub use conduit_common::inspect::enip::build::{message as enip_message, send as enip_send};

/// The CIP request `inner` inside an Unconnected_Send to the Connection Manager.
pub fn cip_unconnected_send(inner: &[u8]) -> Vec<u8> {
    let mut w = vec![0x52, 2, 0x20, 6, 0x24, 1, 7, 0xE9];
    w.extend_from_slice(&(inner.len() as u16).to_le_bytes());
    w.extend_from_slice(inner);
    w
}

/// A Multiple Service Packet (to the Message Router) of the CIP requests `a` and `b`.
pub fn cip_multiple(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut m = vec![0x0A, 2, 0x20, 2, 0x24, 1, 2, 0, 6, 0];
    m.extend_from_slice(&(6 + a.len() as u16).to_le_bytes());
    m.extend_from_slice(a);
    m.extend_from_slice(b);
    m
}

/// The transport part of a frame.
#[derive(Clone, Copy, Debug)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP or ICMPv6 (chosen by the IP version): type, code, identifier.
    Icmp {
        ty: u8,
        code: u8,
        id: u16,
    },
    /// Another protocol with a few payload bytes.
    Raw {
        proto: u8,
    },
    /// A TCP segment with the first `len` bytes of `data` as payload (e.g. a Modbus ADU).
    TcpData {
        sport: u16,
        dport: u16,
        flags: u8,
        data: [u8; TCP_DATA],
        len: u8,
    },
}

/// A Modbus/TCP request ADU (MBAP header, function code, `pdu` after it) as [`L4::TcpData`]
/// payload: `(data, len)`.
pub fn modbus_adu(transaction: u16, unit: u8, function: u8, pdu: &[u8]) -> ([u8; TCP_DATA], u8) {
    let mut d = [0u8; TCP_DATA];
    d[..2].copy_from_slice(&transaction.to_be_bytes());
    d[4..6].copy_from_slice(&(2 + pdu.len() as u16).to_be_bytes());
    d[6] = unit;
    d[7] = function;
    d[8..8 + pdu.len()].copy_from_slice(pdu);
    (d, 8 + pdu.len() as u8)
}

impl L4 {
    pub fn proto(&self, v6: bool) -> u8 {
        match self {
            L4::Tcp { .. } | L4::TcpData { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Icmp { .. } => {
                if v6 {
                    58
                } else {
                    1
                }
            }
            L4::Raw { proto } => *proto,
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        match *self {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => {
                let mut t = Vec::with_capacity(20);
                t.extend_from_slice(&sport.to_be_bytes());
                t.extend_from_slice(&dport.to_be_bytes());
                t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
                t
            }
            L4::Udp { sport, dport } => {
                let mut u = Vec::with_capacity(8);
                u.extend_from_slice(&sport.to_be_bytes());
                u.extend_from_slice(&dport.to_be_bytes());
                u.extend_from_slice(&[0, 8, 0, 0]);
                u
            }
            L4::Icmp { ty, code, id } => {
                let mut i = vec![ty, code, 0, 0];
                i.extend_from_slice(&id.to_be_bytes());
                i.extend_from_slice(&[0, 1]);
                i
            }
            L4::Raw { .. } => vec![0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0],
            L4::TcpData {
                sport,
                dport,
                flags,
                data,
                len,
            } => {
                let mut t = L4::Tcp {
                    sport,
                    dport,
                    flags,
                }
                .bytes();
                t.extend_from_slice(&data[..usize::from(len).min(data.len())]);
                t
            }
        }
    }
}

/// Ethernet II header with optional VLAN tags (each a TPID: 0x8100 or 0x88a8).
pub fn eth(dst: [u8; 6], src: [u8; 6], vlans: &[u16], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    for (i, tpid) in vlans.iter().enumerate() {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(100 + i as u16).to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// Options for an IPv4 header.
#[derive(Clone, Copy, Debug, Default)]
pub struct V4Opts {
    /// Bytes of IPv4 options (a multiple of 4, at most 40).
    pub options: usize,
    /// More-fragments flag.
    pub mf: bool,
    /// Fragment offset in 8-byte units.
    pub frag_offset: u16,
}

/// An IPv4 header followed by `payload`.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8], o: V4Opts) -> Vec<u8> {
    let hl = 20 + o.options;
    let total = (hl + payload.len()) as u16;
    let mut h = vec![0x40 | (hl / 4) as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    let frag = (u16::from(o.mf) << 13) | (o.frag_offset & 0x1fff);
    h.extend_from_slice(&[0, 1]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    // NOP options then end-of-list.
    h.extend(std::iter::repeat_n(1u8, o.options));
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// An IPv6 header, then extension headers (next-header values 0, 43, 60 or 44), then
/// `payload` of protocol `proto`. A fragment header (44) gets `frag_offset`.
pub fn ipv6(
    src: [u8; 16],
    dst: [u8; 16],
    exts: &[u8],
    proto: u8,
    payload: &[u8],
    frag_offset: u16,
) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, &e) in exts.iter().enumerate() {
        let next = exts.get(i + 1).copied().unwrap_or(proto);
        if e == 44 {
            body.push(next);
            body.push(0);
            body.extend_from_slice(&(frag_offset << 3).to_be_bytes());
            body.extend_from_slice(&[0, 0, 0, 1]);
        } else {
            body.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
        }
    }
    body.extend_from_slice(payload);
    let first = exts.first().copied().unwrap_or(proto);
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.push(first);
    h.push(64);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend(body);
    h
}

/// Ethernet + IPv4 + `l4`.
pub fn v4(src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], l4: L4) -> Vec<u8> {
    let mut f = eth(MAC_B, src_mac, &[], 0x0800);
    f.extend(ipv4(
        src,
        dst,
        l4.proto(false),
        &l4.bytes(),
        V4Opts::default(),
    ));
    f
}

/// Ethernet + IPv6 + `l4`.
pub fn v6(src_mac: [u8; 6], src: [u8; 16], dst: [u8; 16], l4: L4) -> Vec<u8> {
    let mut f = eth(MAC_B, src_mac, &[], 0x86dd);
    f.extend(ipv6(src, dst, &[], l4.proto(true), &l4.bytes(), 0));
    f
}

/// An Ethernet/IPv4 ARP frame (op 1 request, 2 reply).
pub fn arp(eth_src: [u8; 6], sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4], op: u16) -> Vec<u8> {
    let mut f = eth([0xff; 6], eth_src, &[], 0x0806);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa);
    f
}

/// Ethernet + IPv4 + TCP SYN from 10.0.0.1:40000 to 10.0.0.2:`dport`.
pub fn tcp_syn(dport: u16) -> Vec<u8> {
    v4(
        MAC_A,
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        L4::Tcp {
            sport: 40000,
            dport,
            flags: 0x02,
        },
    )
}

/// The ICMP (IPv4: destination unreachable, code `code`) or ICMPv6 (type 1) error that the
/// receiver of the Ethernet frame `f` would send back to its sender, quoting `f`'s IP header
/// and the first 8 bytes after it (as routers and hosts do). `None` unless `f` is IPv4 or
/// IPv6 with at least 8 bytes after its header.
pub fn icmp_error_about(f: &[u8], code: u8) -> Option<Vec<u8>> {
    let v6 = f.get(12..14)? == [0x86, 0xdd];
    icmp_about(f, if v6 { 1 } else { 3 }, code)
}

/// Like [`icmp_error_about`], with the ICMP (IPv4) or ICMPv6 type `ty` of the caller's
/// choice (source quench, time exceeded, ...) in front of the same quote.
pub fn icmp_about(f: &[u8], ty: u8, code: u8) -> Option<Vec<u8>> {
    let et = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    let ip = f.get(14..)?;
    let (src_mac, dst_mac) = (f.get(6..12)?, f.get(0..6)?);
    let mut out = Vec::new();
    out.extend_from_slice(src_mac);
    out.extend_from_slice(dst_mac);
    match et {
        0x0800 => {
            let ihl = usize::from(*ip.first()? & 0x0f) * 4;
            let quote = ip.get(..ihl + 8)?;
            let mut icmp = vec![ty, code, 0, 0, 0, 0, 0, 0];
            icmp.extend_from_slice(quote);
            let (src, dst) = (ip.get(12..16)?, ip.get(16..20)?);
            out.extend_from_slice(&0x0800u16.to_be_bytes());
            out.extend(ipv4(
                dst.try_into().ok()?,
                src.try_into().ok()?,
                1,
                &icmp,
                V4Opts::default(),
            ));
        }
        0x86dd => {
            let quote = ip.get(..48)?;
            let mut icmp = vec![ty, code, 0, 0, 0, 0, 0, 0];
            icmp.extend_from_slice(quote);
            let (src, dst) = (ip.get(8..24)?, ip.get(24..40)?);
            out.extend_from_slice(&0x86ddu16.to_be_bytes());
            out.extend(ipv6(
                dst.try_into().ok()?,
                src.try_into().ok()?,
                &[],
                58,
                &icmp,
                0,
            ));
        }
        _ => return None,
    }
    Some(out)
}
