//! Header decoding, shared by the XDP program (reading the packet through bounds-checked
//! loads) and userspace (`replay`'s reference, the differential test). One decoder, two
//! byte sources: whatever the kernel can parse, the reference parses the same way.
//!
//! Fail closed: anything that cannot be parsed safely is `Err(Malformed)`.
use crate::{
    abi::{FAMILY_V4, FAMILY_V6},
    inspect::WINDOW,
    verdict::{
        KIND_ARP, KIND_IP, KIND_OTHER, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet,
    },
};

/// Read access to a frame's bytes.
pub trait Frame {
    /// The `N` bytes at `off`, or `None` if the frame is shorter than `off + N`.
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]>;
    /// Copies the first `min(len, WINDOW)` of the `len` bytes at `off` to the start of `out`
    /// (the caller has checked that the frame holds them), leaving the rest of `out` as it
    /// is. The kernel's frame leaves the copy out when nothing will read the window (a
    /// policy without inspection filters, not learning).
    fn load_window(&self, off: usize, len: usize, out: &mut [u8; WINDOW]);
    /// The frame's length in bytes.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Frame for [u8] {
    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let s = self.get(off..off.checked_add(N)?)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Some(out)
    }
    fn load_window(&self, off: usize, len: usize, out: &mut [u8; WINDOW]) {
        let n = len.min(WINDOW);
        if let Some(s) = self.get(off..off + n) {
            out[..n].copy_from_slice(s);
        }
    }
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
}

/// The frame cannot be parsed safely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

/// VLAN tags accepted in front of the payload; one more is malformed.
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked before the transport header; one more is malformed.
pub const MAX_IPV6_EXT: usize = 4;
/// Transport headers must start within this many bytes of the frame's start; deeper (long
/// IPv4 options are at most 60 bytes, so only long IPv6 extension chains reach it) is
/// malformed. It bounds every offset the verifier has to reason about.
pub const MAX_L4_OFFSET: usize = 512;

/// TCP flags in [`Packet::tcp_flags`].
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Decodes a frame into the [`Packet`] the verdict function needs.
#[inline(always)]
pub fn parse<F: Frame + ?Sized>(f: &F) -> Result<Packet, Malformed> {
    let mut p = Packet::default();
    parse_into(f, &mut p)?;
    Ok(p)
}

/// [`parse`] into a [`Packet`] the caller provides, which must be `Packet::default()` (the
/// XDP program keeps it in a per-CPU map: it does not fit on the BPF stack next to the rest).
#[inline(always)]
pub fn parse_into<F: Frame + ?Sized>(f: &F, p: &mut Packet) -> Result<(), Malformed> {
    let eth: [u8; 14] = f.load(0).ok_or(Malformed)?;
    p.src_mac = [eth[6], eth[7], eth[8], eth[9], eth[10], eth[11]];
    let mut ethertype = be16([eth[12], eth[13]]);
    let mut off = 14usize;
    // VLAN tags (802.1Q, 802.1ad): at most two.
    let mut tags = 0;
    while tags < MAX_VLAN_TAGS + 1 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        if tags == MAX_VLAN_TAGS {
            return Err(Malformed);
        }
        let tag: [u8; 4] = f.load(off).ok_or(Malformed)?;
        ethertype = be16([tag[2], tag[3]]);
        off += 4;
        tags += 1;
    }
    p.ethertype = ethertype;
    match ethertype {
        ETH_P_IP => parse_ipv4(f, off, p)?,
        ETH_P_IPV6 => parse_ipv6(f, off, p)?,
        ETH_P_ARP => parse_arp(f, off, p)?,
        _ => p.kind = KIND_OTHER,
    }
    Ok(())
}

#[inline(always)]
fn parse_arp<F: Frame + ?Sized>(f: &F, off: usize, p: &mut Packet) -> Result<(), Malformed> {
    let a: [u8; 28] = f.load(off).ok_or(Malformed)?;
    // Ethernet/IPv4 ARP only: htype 1, ptype 0x0800, hlen 6, plen 4.
    if a[0] != 0 || a[1] != 1 || a[2] != 0x08 || a[3] != 0 || a[4] != 6 || a[5] != 4 {
        return Err(Malformed);
    }
    p.kind = KIND_ARP;
    p.family = FAMILY_V4;
    p.arp_sha = [a[8], a[9], a[10], a[11], a[12], a[13]];
    p.src[..4].copy_from_slice(&a[14..18]);
    p.dst[..4].copy_from_slice(&a[24..28]);
    Ok(())
}

#[inline(always)]
fn parse_ipv4<F: Frame + ?Sized>(f: &F, off: usize, p: &mut Packet) -> Result<(), Malformed> {
    let h: [u8; 20] = f.load(off).ok_or(Malformed)?;
    if h[0] >> 4 != 4 {
        return Err(Malformed);
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(Malformed);
    }
    let total = usize::from(be16([h[2], h[3]]));
    // The datagram must fit in the frame (Ethernet padding after it is fine).
    if total < ihl || off + total > f.len() {
        return Err(Malformed);
    }
    p.kind = KIND_IP;
    p.family = FAMILY_V4;
    p.hop_limit = h[8];
    p.src[..4].copy_from_slice(&h[12..16]);
    p.dst[..4].copy_from_slice(&h[16..20]);
    p.proto = h[9];
    let frag = be16([h[6], h[7]]);
    if frag & 0x1fff != 0 {
        // A non-first fragment: no transport header to judge.
        p.fragment = 1;
        return Ok(());
    }
    let l4 = off + ihl;
    // The transport header must lie within the datagram (a first fragment too short to hold
    // the ports is malformed).
    parse_l4(f, l4, off + total, p)
}

#[inline(always)]
fn parse_ipv6<F: Frame + ?Sized>(f: &F, off: usize, p: &mut Packet) -> Result<(), Malformed> {
    let h: [u8; 40] = f.load(off).ok_or(Malformed)?;
    if h[0] >> 4 != 6 {
        return Err(Malformed);
    }
    let payload = usize::from(be16([h[4], h[5]]));
    let end = off + 40 + payload;
    if end > f.len() {
        return Err(Malformed);
    }
    p.kind = KIND_IP;
    p.family = FAMILY_V6;
    p.hop_limit = h[7];
    p.src.copy_from_slice(&h[8..24]);
    p.dst.copy_from_slice(&h[24..40]);
    let mut next = h[6];
    let mut cur = off + 40;
    let mut i = 0;
    while i < MAX_IPV6_EXT + 1 {
        match next {
            // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
            0 | 43 | 60 => {
                if i == MAX_IPV6_EXT {
                    return Err(Malformed);
                }
                let e: [u8; 2] = f.load(cur).ok_or(Malformed)?;
                next = e[0];
                cur += (usize::from(e[1]) + 1) * 8;
            }
            // Fragment header: 8 bytes.
            44 => {
                if i == MAX_IPV6_EXT {
                    return Err(Malformed);
                }
                let e: [u8; 4] = f.load(cur).ok_or(Malformed)?;
                next = e[0];
                cur += 8;
                if be16([e[2], e[3]]) & 0xfff8 != 0 {
                    p.proto = next;
                    p.fragment = 1;
                    return if cur > end { Err(Malformed) } else { Ok(()) };
                }
            }
            _ => break,
        }
        if cur > MAX_L4_OFFSET {
            return Err(Malformed);
        }
        i += 1;
    }
    p.proto = next;
    parse_l4(f, cur, end, p)
}

/// The packet an ICMP error quotes, at `off`: when its source is this packet's destination
/// (the error goes back to the sender) and its ports are there, fills `p.inner_*` and sets
/// `p.icmp_error`. A quote that is cut short or odd just leaves the error on its own.
#[inline(always)]
fn quoted<F: Frame + ?Sized>(f: &F, off: usize, end: usize, p: &mut Packet) {
    let (proto, l4) = if p.family == FAMILY_V4 {
        let Some(h) = f.load::<20>(off) else { return };
        let ihl = usize::from(h[0] & 0x0f) * 4;
        if h[0] >> 4 != 4 || ihl < 20 || h[12..16] != p.dst[..4] {
            return;
        }
        p.inner_dst = [0; 16];
        p.inner_dst[..4].copy_from_slice(&h[16..20]);
        (h[9], off + ihl)
    } else {
        let Some(h) = f.load::<40>(off) else { return };
        if h[0] >> 4 != 6 || h[8..24] != p.dst[..] {
            return;
        }
        p.inner_dst.copy_from_slice(&h[24..40]);
        (h[6], off + 40)
    };
    let Some(q) = f.load::<8>(l4) else { return };
    if l4 + 8 > end {
        return;
    }
    let (sport, dport) = match proto {
        PROTO_TCP | PROTO_UDP => (be16([q[0], q[1]]), be16([q[2], q[3]])),
        PROTO_ICMP | PROTO_ICMPV6 => (be16([q[4], q[5]]), be16([q[4], q[5]])),
        _ => (0, 0),
    };
    p.icmp_error = 1;
    p.inner_proto = proto;
    p.inner_sport = sport;
    p.inner_dport = dport;
}

/// The transport header at `off`; it must end by `end` (the IP datagram's end).
#[inline(always)]
fn parse_l4<F: Frame + ?Sized>(
    f: &F,
    off: usize,
    end: usize,
    p: &mut Packet,
) -> Result<(), Malformed> {
    if off > MAX_L4_OFFSET {
        return Err(Malformed);
    }
    match p.proto {
        PROTO_TCP => {
            let t: [u8; 20] = f.load(off).ok_or(Malformed)?;
            let doff = usize::from(t[12] >> 4) * 4;
            if doff < 20 || off + doff > end {
                return Err(Malformed);
            }
            p.sport = be16([t[0], t[1]]);
            p.dport = be16([t[2], t[3]]);
            p.tcp_flags = t[13];
            let data = off + doff;
            // At most 65535 - 20 - 20: the IP length is 16 bits.
            p.payload_len = (end - data) as u16;
            // The payload lies within the datagram, which lies within the frame.
            f.load_window(data, end - data, &mut p.app);
        }
        PROTO_UDP => {
            let u: [u8; 8] = f.load(off).ok_or(Malformed)?;
            if off + 8 > end {
                return Err(Malformed);
            }
            p.sport = be16([u[0], u[1]]);
            p.dport = be16([u[2], u[3]]);
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            let i: [u8; 8] = f.load(off).ok_or(Malformed)?;
            if off + 8 > end {
                return Err(Malformed);
            }
            p.dport = be16([i[0], i[1]]);
            // Echo request/reply (v4 8/0, v6 128/129): the identifier ties replies to requests.
            if matches!(
                (p.proto, i[0]),
                (PROTO_ICMP, 0 | 8) | (PROTO_ICMPV6, 128 | 129)
            ) {
                p.sport = be16([i[4], i[5]]);
            }
            // Errors that may travel back with a flow: destination unreachable (including
            // fragmentation needed / packet too big), time exceeded, parameter problem. Not
            // source quench (v4 type 4), deprecated by RFC 6633: it is judged on its own.
            if matches!(
                (p.proto, i[0]),
                (PROTO_ICMP, 3 | 11 | 12) | (PROTO_ICMPV6, 1..=4)
            ) {
                quoted(f, off + 8, end, p);
            }
        }
        _ => {}
    }
    Ok(())
}
