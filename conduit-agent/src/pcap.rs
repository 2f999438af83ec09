//! Capture files for `conduit replay`: classic libpcap (either byte order, micro- or
//! nanosecond timestamps) and pcapng (sections in either byte order, any number of interfaces,
//! enhanced, simple and obsolete packet blocks; every other block is skipped). Pure: bytes in,
//! frames out.
//!
//! Every length and interface number the file declares is checked against what is there before
//! it is used, so a corrupt or hostile file gives an error naming the frame (numbered from 1,
//! as Wireshark numbers them) or block and its byte offset, never a panic or a huge allocation.
use std::path::Path;

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The bytes captured: the first `data.len()` bytes of the frame.
    pub data: Vec<u8>,
    /// Original length on the wire (more than `data.len()` when the capture cut it short).
    pub orig_len: u32,
    /// Link type of its interface (1 = Ethernet).
    pub linktype: u32,
    /// Capture time in nanoseconds since the Unix epoch; 0 for pcapng Simple Packet Blocks,
    /// which carry no time.
    pub ts_ns: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("cannot read the capture: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a pcap or pcapng file (it is empty)")]
    Empty,
    #[error("not a pcap or pcapng file (only {0} bytes long)")]
    TooShort(usize),
    #[error("not a pcap or pcapng file (magic 0x{0:08x})")]
    BadMagic(u32),
    #[error("a gzip-compressed file, not a pcap or pcapng file: decompress it first (gunzip)")]
    Compressed,
    #[error("truncated pcap file header: the file has {0} bytes, the header needs 24")]
    TruncatedHeader(usize),
    #[error(
        "frame {frame}: truncated record at byte {offset}: it needs {need} bytes, \
         the file has {have} left"
    )]
    TruncatedRecord {
        frame: usize,
        offset: usize,
        need: u64,
        have: usize,
    },
    #[error(
        "frame {frame}: record at byte {offset} claims {caplen} captured bytes, more than the \
         snapshot length {snaplen} in the file header (the file is corrupt)"
    )]
    OverSnaplen {
        frame: usize,
        offset: usize,
        caplen: u32,
        snaplen: u32,
    },
    #[error(
        "block at byte {offset}: bad block total length {len} \
         (it must be at least 12 and a multiple of 4)"
    )]
    BadBlockLength { offset: usize, len: u32 },
    #[error("truncated block at byte {offset}: it needs {need} bytes, the file has {have} left")]
    TruncatedBlock {
        offset: usize,
        need: u64,
        have: usize,
    },
    #[error(
        "block at byte {offset}: total length {len} at its start but {trailer} at its end \
         (the file is corrupt)"
    )]
    LengthMismatch {
        offset: usize,
        len: u32,
        trailer: u32,
    },
    #[error("section header block at byte {offset}: unknown byte-order magic 0x{magic:08x}")]
    BadByteOrder { offset: usize, magic: u32 },
    #[error("section header block at byte {offset}: unsupported pcapng version {major}.{minor}")]
    Version {
        offset: usize,
        major: u16,
        minor: u16,
    },
    #[error("{block} at byte {offset}: {problem}")]
    Malformed {
        block: &'static str,
        offset: usize,
        problem: String,
    },
    #[error("frame {frame} ({block} at byte {offset}): {problem}")]
    BadFrame {
        frame: usize,
        block: &'static str,
        offset: usize,
        problem: String,
    },
}

/// Reads and parses the capture at `path`.
pub fn read_file(path: &Path) -> Result<Vec<Packet>, PcapError> {
    parse(&std::fs::read(path)?)
}

/// Parses a whole capture (pcap or pcapng, told apart by the magic) into its frames, in file
/// order.
pub fn parse(bytes: &[u8]) -> Result<Vec<Packet>, PcapError> {
    let &[a, b, c, d, ..] = bytes else {
        return Err(match bytes.len() {
            0 => PcapError::Empty,
            n => PcapError::TooShort(n),
        });
    };
    // The magic as it reads in file order: a big-endian file starts a1 b2 c3 d4.
    match u32::from_be_bytes([a, b, c, d]) {
        0xa1b2_c3d4 => classic(bytes, Endian::Big, 1_000),
        0xd4c3_b2a1 => classic(bytes, Endian::Little, 1_000),
        0xa1b2_3c4d => classic(bytes, Endian::Big, 1),
        0x4d3c_b2a1 => classic(bytes, Endian::Little, 1),
        SHB => pcapng(bytes),
        m if m >> 16 == 0x1f8b => Err(PcapError::Compressed),
        m => Err(PcapError::BadMagic(m)),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endian {
    Little,
    Big,
}

/// Fixed-width reads; callers have checked that `b` holds the bytes.
impl Endian {
    fn u16(self, b: &[u8], at: usize) -> u16 {
        let v = [b[at], b[at + 1]];
        match self {
            Endian::Little => u16::from_le_bytes(v),
            Endian::Big => u16::from_be_bytes(v),
        }
    }

    fn u32(self, b: &[u8], at: usize) -> u32 {
        let v = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        match self {
            Endian::Little => u32::from_le_bytes(v),
            Endian::Big => u32::from_be_bytes(v),
        }
    }

    fn u64(self, b: &[u8], at: usize) -> u64 {
        let (hi, lo) = match self {
            Endian::Little => (self.u32(b, at + 4), self.u32(b, at)),
            Endian::Big => (self.u32(b, at), self.u32(b, at + 4)),
        };
        (u64::from(hi) << 32) | u64::from(lo)
    }
}

/// Classic libpcap: a 24-byte file header, then records of a 16-byte header and the data.
/// `frac_ns` is the length of the sub-second unit in nanoseconds (1000 or 1).
fn classic(bytes: &[u8], e: Endian, frac_ns: u64) -> Result<Vec<Packet>, PcapError> {
    if bytes.len() < 24 {
        return Err(PcapError::TruncatedHeader(bytes.len()));
    }
    let snaplen = e.u32(bytes, 16);
    // The upper bits of the link-type field carry FCS information, as libpcap's LT_LINKTYPE.
    let linktype = e.u32(bytes, 20) & 0x03ff_ffff;
    let mut out = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let frame = out.len() + 1;
        let have = bytes.len() - at;
        if have < 16 {
            return Err(PcapError::TruncatedRecord {
                frame,
                offset: at,
                need: 16,
                have,
            });
        }
        let caplen = e.u32(bytes, at + 8);
        // A snapshot length of 0 is a broken writer's "unset", not a limit.
        if snaplen != 0 && caplen > snaplen {
            return Err(PcapError::OverSnaplen {
                frame,
                offset: at,
                caplen,
                snaplen,
            });
        }
        let need = 16 + u64::from(caplen);
        if need > have as u64 {
            return Err(PcapError::TruncatedRecord {
                frame,
                offset: at,
                need,
                have,
            });
        }
        let end = at + 16 + caplen as usize;
        out.push(Packet {
            data: bytes[at + 16..end].to_vec(),
            orig_len: e.u32(bytes, at + 12),
            linktype,
            ts_ns: u64::from(e.u32(bytes, at)) * 1_000_000_000
                + u64::from(e.u32(bytes, at + 4)) * frac_ns,
        });
        at = end;
    }
    Ok(out)
}

/// pcapng block types (the Section Header Block's reads the same in both byte orders).
const SHB: u32 = 0x0a0d_0d0a;
const IDB: u32 = 1;
const OPB: u32 = 2;
const SPB: u32 = 3;
const EPB: u32 = 6;

/// What an Interface Description Block says about the packets of its interface.
struct Interface {
    linktype: u32,
    snaplen: u32,
    /// if_tsresol: bit 7 clear, units of 10^-n s; set, 2^-n s (n = the low 7 bits).
    tsresol: u8,
    /// if_tsoffset: seconds to add to every timestamp.
    tsoffset: i64,
}

impl Interface {
    fn ns(&self, ts: u64) -> u64 {
        let exp = u32::from(self.tsresol & 0x7f);
        let scaled = u128::from(ts) * 1_000_000_000;
        let ns = if self.tsresol & 0x80 == 0 {
            // 10^n beyond u128 leaves nothing of any u64 timestamp.
            10u128.checked_pow(exp).map_or(0, |d| scaled / d)
        } else {
            scaled >> exp
        };
        let ns = ns as i128 + i128::from(self.tsoffset) * 1_000_000_000;
        u64::try_from(ns.max(0)).unwrap_or(u64::MAX)
    }
}

/// pcapng: a sequence of blocks (type, total length, body, total length again); every Section
/// Header Block sets the byte order and starts a new list of interfaces.
fn pcapng(bytes: &[u8]) -> Result<Vec<Packet>, PcapError> {
    let mut e = Endian::Little;
    let mut ifaces: Vec<Interface> = Vec::new();
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let have = bytes.len() - at;
        if have < 12 {
            return Err(PcapError::TruncatedBlock {
                offset: at,
                need: 12,
                have,
            });
        }
        let ty = e.u32(bytes, at);
        if ty == SHB {
            e = match u32::from_le_bytes([
                bytes[at + 8],
                bytes[at + 9],
                bytes[at + 10],
                bytes[at + 11],
            ]) {
                0x1a2b_3c4d => Endian::Little,
                0x4d3c_2b1a => Endian::Big,
                _ => {
                    return Err(PcapError::BadByteOrder {
                        offset: at,
                        magic: Endian::Big.u32(bytes, at + 8),
                    });
                }
            };
            ifaces.clear();
        }
        let len = e.u32(bytes, at + 4);
        if len < 12 || !len.is_multiple_of(4) {
            return Err(PcapError::BadBlockLength { offset: at, len });
        }
        if u64::from(len) > have as u64 {
            return Err(PcapError::TruncatedBlock {
                offset: at,
                need: len.into(),
                have,
            });
        }
        let end = at + len as usize;
        let trailer = e.u32(bytes, end - 4);
        if trailer != len {
            return Err(PcapError::LengthMismatch {
                offset: at,
                len,
                trailer,
            });
        }
        let body = &bytes[at + 8..end - 4];
        let malformed = |block, problem| PcapError::Malformed {
            block,
            offset: at,
            problem,
        };
        let short = |block, min: usize| {
            malformed(
                block,
                format!(
                    "block total length {len} is too short, it needs at least {}",
                    min + 12
                ),
            )
        };
        match ty {
            SHB => {
                const NAME: &str = "section header block";
                if body.len() < 16 {
                    return Err(short(NAME, 16));
                }
                let (major, minor) = (e.u16(body, 4), e.u16(body, 6));
                if major != 1 {
                    return Err(PcapError::Version {
                        offset: at,
                        major,
                        minor,
                    });
                }
            }
            IDB => {
                const NAME: &str = "interface description block";
                if body.len() < 8 {
                    return Err(short(NAME, 8));
                }
                let mut iface = Interface {
                    linktype: e.u16(body, 0).into(),
                    snaplen: e.u32(body, 4),
                    tsresol: 6,
                    tsoffset: 0,
                };
                let mut o = 8;
                while o + 4 <= body.len() {
                    let (code, olen) = (e.u16(body, o), usize::from(e.u16(body, o + 2)));
                    if code == 0 {
                        break;
                    }
                    let Some(v) = body.get(o + 4..o + 4 + olen) else {
                        return Err(malformed(
                            NAME,
                            format!(
                                "option {code} at byte {} runs past the end of the block",
                                at + 8 + o
                            ),
                        ));
                    };
                    let wrong = |name, want| {
                        malformed(
                            NAME,
                            format!("option {name} has length {olen}, it must be {want}"),
                        )
                    };
                    match code {
                        9 if olen != 1 => return Err(wrong("if_tsresol", 1)),
                        9 => iface.tsresol = v[0],
                        14 if olen != 8 => return Err(wrong("if_tsoffset", 8)),
                        14 => iface.tsoffset = e.u64(v, 0) as i64,
                        _ => {}
                    }
                    o += 4 + olen.next_multiple_of(4);
                }
                ifaces.push(iface);
            }
            EPB | OPB => {
                // The obsolete Packet Block is the Enhanced one with a 16-bit interface id
                // followed by a drop count.
                let name = if ty == EPB {
                    "enhanced packet block"
                } else {
                    "packet block"
                };
                if body.len() < 20 {
                    return Err(short(name, 20));
                }
                let frame = out.len() + 1;
                let bad = |problem| PcapError::BadFrame {
                    frame,
                    block: name,
                    offset: at,
                    problem,
                };
                let id = if ty == EPB {
                    e.u32(body, 0)
                } else {
                    e.u16(body, 0).into()
                };
                let Some(iface) = ifaces.get(id as usize) else {
                    return Err(bad(format!(
                        "interface {id} is not described in its section (which has {})",
                        ifaces.len()
                    )));
                };
                let ts = (u64::from(e.u32(body, 4)) << 32) | u64::from(e.u32(body, 8));
                let caplen = e.u32(body, 12);
                let room = body.len() - 20;
                if caplen as usize > room {
                    return Err(bad(format!(
                        "captured length {caplen} runs past the end of the block \
                         ({room} bytes of room)"
                    )));
                }
                out.push(Packet {
                    data: body[20..20 + caplen as usize].to_vec(),
                    orig_len: e.u32(body, 16),
                    linktype: iface.linktype,
                    ts_ns: iface.ns(ts),
                });
            }
            SPB => {
                const NAME: &str = "simple packet block";
                if body.len() < 4 {
                    return Err(short(NAME, 4));
                }
                let Some(iface) = ifaces.first() else {
                    return Err(PcapError::BadFrame {
                        frame: out.len() + 1,
                        block: NAME,
                        offset: at,
                        problem: "no interface is described in its section".into(),
                    });
                };
                // The data is as long as the original packet, cut to the snapshot length of
                // interface 0 (0 = none) and to the block.
                let orig_len = e.u32(body, 0);
                let mut caplen = (orig_len as usize).min(body.len() - 4);
                if iface.snaplen != 0 {
                    caplen = caplen.min(iface.snaplen as usize);
                }
                out.push(Packet {
                    data: body[4..4 + caplen].to_vec(),
                    orig_len,
                    linktype: iface.linktype,
                    ts_ns: 0,
                });
            }
            _ => {} // name resolution, statistics, custom, secrets...: nothing replay needs
        }
        at = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte buffer written in one byte order.
    struct W {
        big: bool,
        buf: Vec<u8>,
    }

    impl W {
        fn new(big: bool) -> Self {
            W {
                big,
                buf: Vec::new(),
            }
        }
        fn u16(&mut self, v: u16) -> &mut Self {
            let b = if self.big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            self.buf.extend_from_slice(&b);
            self
        }
        fn u32(&mut self, v: u32) -> &mut Self {
            let b = if self.big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            self.buf.extend_from_slice(&b);
            self
        }
        fn u64(&mut self, v: u64) -> &mut Self {
            let b = if self.big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            self.buf.extend_from_slice(&b);
            self
        }
        fn bytes(&mut self, b: &[u8]) -> &mut Self {
            self.buf.extend_from_slice(b);
            self
        }
        fn pad(&mut self) -> &mut Self {
            while !self.buf.len().is_multiple_of(4) {
                self.buf.push(0);
            }
            self
        }
        fn done(&mut self) -> Vec<u8> {
            std::mem::take(&mut self.buf)
        }
    }

    /// A record: seconds, sub-second units, data, original length.
    type Rec<'a> = (u32, u32, &'a [u8], u32);

    fn classic_file(big: bool, nano: bool, snaplen: u32, linktype: u32, recs: &[Rec]) -> Vec<u8> {
        let mut w = W::new(big);
        w.u32(if nano { 0xa1b2_3c4d } else { 0xa1b2_c3d4 })
            .u16(2)
            .u16(4)
            .u32(0)
            .u32(0)
            .u32(snaplen)
            .u32(linktype);
        for &(s, f, data, orig) in recs {
            w.u32(s).u32(f).u32(data.len() as u32).u32(orig).bytes(data);
        }
        w.done()
    }

    /// One pcapng block: the body is padded to 4 bytes and framed by the total length.
    fn block(big: bool, ty: u32, body: &[u8]) -> Vec<u8> {
        let padded = body.len().next_multiple_of(4);
        let len = (padded + 12) as u32;
        W::new(big)
            .u32(ty)
            .u32(len)
            .bytes(body)
            .pad()
            .u32(len)
            .done()
    }

    fn shb(big: bool) -> Vec<u8> {
        let body = W::new(big)
            .u32(0x1a2b_3c4d)
            .u16(1)
            .u16(0)
            .u64(u64::MAX)
            .done();
        block(big, SHB, &body)
    }

    /// An IDB with options given as (code, value).
    fn idb(big: bool, linktype: u16, snaplen: u32, opts: &[(u16, &[u8])]) -> Vec<u8> {
        let mut w = W::new(big);
        w.u16(linktype).u16(0).u32(snaplen);
        for &(code, v) in opts {
            w.u16(code).u16(v.len() as u16).bytes(v).pad();
        }
        if !opts.is_empty() {
            w.u32(0); // opt_endofopt
        }
        block(big, IDB, &w.done())
    }

    fn epb(big: bool, iface: u32, ts: u64, data: &[u8], orig: u32) -> Vec<u8> {
        let body = W::new(big)
            .u32(iface)
            .u32((ts >> 32) as u32)
            .u32(ts as u32)
            .u32(data.len() as u32)
            .u32(orig)
            .bytes(data)
            .pad()
            // an epb_flags option, which the reader must not take for data
            .u16(2)
            .u16(4)
            .u32(1)
            .u32(0)
            .done();
        block(big, EPB, &body)
    }

    fn spb(big: bool, orig: u32, data: &[u8]) -> Vec<u8> {
        block(big, SPB, &W::new(big).u32(orig).bytes(data).done())
    }

    fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    fn err(bytes: &[u8]) -> String {
        parse(bytes)
            .expect_err("the capture must be refused")
            .to_string()
    }

    fn frame(n: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| n.wrapping_add(i as u8)).collect()
    }

    #[test]
    fn classic_little_endian_microseconds() {
        let (a, b) = (frame(1, 60), frame(2, 14));
        let f = classic_file(
            false,
            false,
            65535,
            1,
            &[(10, 5, &a, 60), (11, 999_999, &b, 1500)],
        );
        assert_eq!(&f[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        let p = parse(&f).unwrap();
        assert_eq!(
            p,
            vec![
                Packet {
                    data: a,
                    orig_len: 60,
                    linktype: 1,
                    ts_ns: 10_000_005_000
                },
                Packet {
                    data: b,
                    orig_len: 1500,
                    linktype: 1,
                    ts_ns: 11_999_999_000
                },
            ]
        );
    }

    #[test]
    fn classic_big_endian_microseconds() {
        let a = frame(7, 42);
        let f = classic_file(true, false, 262_144, 113, &[(1, 2, &a, 42)]);
        assert_eq!(&f[..4], &[0xa1, 0xb2, 0xc3, 0xd4]);
        let p = parse(&f).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].data, a);
        assert_eq!(p[0].linktype, 113);
        assert_eq!(p[0].ts_ns, 1_000_002_000);
    }

    #[test]
    fn classic_nanoseconds_both_orders() {
        let a = frame(3, 64);
        for big in [false, true] {
            let f = classic_file(big, true, 65535, 1, &[(1_700_000_000, 123_456_789, &a, 64)]);
            let p = parse(&f).unwrap();
            assert_eq!(p.len(), 1, "big = {big}");
            assert_eq!(p[0].ts_ns, 1_700_000_000_123_456_789, "big = {big}");
            assert_eq!(p[0].data, a);
        }
    }

    #[test]
    fn classic_header_only_and_fcs_bits() {
        // No records: no frames. FCS bits above the link type (LT_FCS_DATALEN) are masked.
        let f = classic_file(false, false, 65535, 1 | 0x1400_0000, &[]);
        assert_eq!(parse(&f).unwrap(), vec![]);
        let a = frame(0, 20);
        let f = classic_file(false, false, 65535, 1 | 0x1400_0000, &[(0, 0, &a, 20)]);
        assert_eq!(parse(&f).unwrap()[0].linktype, 1);
    }

    #[test]
    fn classic_truncated() {
        let (a, b) = (frame(1, 60), frame(2, 40));
        let f = classic_file(false, false, 65535, 1, &[(0, 0, &a, 60), (0, 0, &b, 40)]);
        assert_eq!(f.len(), 24 + 16 + 60 + 16 + 40);
        assert_eq!(
            err(&f[..10]),
            "truncated pcap file header: the file has 10 bytes, the header needs 24"
        );
        // Frame 2's record header is cut short...
        assert_eq!(
            err(&f[..24 + 76 + 5]),
            "frame 2: truncated record at byte 100: it needs 16 bytes, the file has 5 left"
        );
        // ...or its data is.
        assert_eq!(
            err(&f[..f.len() - 1]),
            "frame 2: truncated record at byte 100: it needs 56 bytes, the file has 55 left"
        );
        // Frame 1's.
        assert!(matches!(
            parse(&f[..50]),
            Err(PcapError::TruncatedRecord {
                frame: 1,
                offset: 24,
                need: 76,
                have: 26
            })
        ));
    }

    #[test]
    fn classic_record_beyond_snaplen() {
        let (a, b) = (frame(1, 60), frame(2, 100));
        let f = classic_file(true, false, 96, 1, &[(0, 0, &a, 60), (0, 0, &b, 100)]);
        assert_eq!(
            err(&f),
            "frame 2: record at byte 100 claims 100 captured bytes, more than the snapshot \
             length 96 in the file header (the file is corrupt)"
        );
        // A huge declared length is refused before anything is allocated.
        let mut f = classic_file(false, false, 0, 1, &[(0, 0, &a, 60)]);
        f[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            err(&f),
            "frame 1: truncated record at byte 24: it needs 4294967311 bytes, the file has 76 left"
        );
    }

    #[test]
    fn not_a_capture() {
        assert_eq!(err(b""), "not a pcap or pcapng file (it is empty)");
        assert_eq!(err(b"ab"), "not a pcap or pcapng file (only 2 bytes long)");
        assert_eq!(
            err(b"GET / HTTP/1.1\r\n"),
            "not a pcap or pcapng file (magic 0x47455420)"
        );
        assert!(matches!(
            parse(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]),
            Err(PcapError::Compressed)
        ));
        // The Kuznetzov "modified" pcap is not supported.
        assert_eq!(
            err(&[0xa1, 0xb2, 0xcd, 0x34, 0, 0, 0, 0]),
            "not a pcap or pcapng file (magic 0xa1b2cd34)"
        );
    }

    #[test]
    fn read_file_reports_io_errors() {
        let e = read_file(Path::new("/nonexistent/conduit/capture.pcap")).unwrap_err();
        assert!(matches!(e, PcapError::Io(_)));
        assert!(
            e.to_string().starts_with("cannot read the capture: "),
            "{e}"
        );
    }

    /// A section with two interfaces (Ethernet in microseconds; raw IP in nanoseconds, offset
    /// by 100 s), an unknown block, a name resolution block and interface statistics.
    fn two_interfaces(big: bool) -> (Vec<u8>, Vec<Packet>) {
        let (a, b, c) = (frame(1, 60), frame(2, 33), frame(3, 14));
        let ns_offset: Vec<u8> = if big {
            100u64.to_be_bytes().to_vec()
        } else {
            100u64.to_le_bytes().to_vec()
        };
        let file = cat(&[
            shb(big),
            idb(big, 1, 65535, &[(2, b"eth0\0\0"), (9, &[6])]),
            block(big, 4, &[1, 0, 4, 0, 127, 0, 0, 1, 0, 0, 0, 0]), // NRB
            idb(big, 101, 0, &[(9, &[9]), (14, &ns_offset)]),
            epb(big, 0, 1_700_000_000_000_001, &a, 60),
            block(big, 0x4000_0bad, &[0xde, 0xad, 0xbe, 0xef, 1]), // custom, unknown
            epb(big, 1, 5_000_000_007, &b, 1000),
            block(big, 5, &W::new(big).u32(0).u32(0).u32(0).done()), // ISB
            block(big, 10, &[0; 16]),                                // decryption secrets
            epb(big, 0, 0, &c, 14),
        ]);
        let want = vec![
            Packet {
                data: a,
                orig_len: 60,
                linktype: 1,
                ts_ns: 1_700_000_000_000_001_000,
            },
            Packet {
                data: b,
                orig_len: 1000,
                linktype: 101,
                ts_ns: 105_000_000_007,
            },
            Packet {
                data: c,
                orig_len: 14,
                linktype: 1,
                ts_ns: 0,
            },
        ];
        (file, want)
    }

    #[test]
    fn pcapng_two_interfaces_little_endian() {
        let (f, want) = two_interfaces(false);
        assert_eq!(&f[..4], &[0x0a, 0x0d, 0x0d, 0x0a]);
        assert_eq!(parse(&f).unwrap(), want);
    }

    #[test]
    fn pcapng_two_interfaces_big_endian() {
        let (f, want) = two_interfaces(true);
        assert_eq!(parse(&f).unwrap(), want);
    }

    #[test]
    fn pcapng_sections_switch_byte_order_and_interfaces() {
        let (le, mut want) = two_interfaces(false);
        let a = frame(9, 70);
        let f = cat(&[
            le.clone(),
            shb(true),
            idb(true, 1, 65535, &[(9, &[0x80 | 10])]), // 2^-10 s
            epb(true, 0, 1024 * 3 + 512, &a, 70),
        ]);
        want.push(Packet {
            data: a.clone(),
            orig_len: 70,
            linktype: 1,
            ts_ns: 3_500_000_000,
        });
        assert_eq!(parse(&f).unwrap(), want);
        // The second section has one interface: interface 1 belonged to the first.
        let f = cat(&[
            le.clone(),
            shb(true),
            idb(true, 1, 0, &[]),
            epb(true, 1, 0, &a, 70),
        ]);
        let at = le.len() + 28 + 20;
        assert_eq!(
            err(&f),
            format!(
                "frame 4 (enhanced packet block at byte {at}): interface 1 is not described \
                 in its section (which has 1)"
            )
        );
    }

    #[test]
    fn pcapng_simple_packet_blocks() {
        let (a, b) = (frame(1, 60), frame(2, 100));
        // Interface 0 has a snapshot length of 64: SPB data is cut there; the 61-byte frame
        // is padded to 64 in the block, the padding is not data.
        let f = cat(&[
            shb(false),
            idb(false, 1, 64, &[]),
            idb(false, 105, 0, &[]),
            spb(false, 61, &frame(1, 61)),
            spb(false, 100, &b[..64]),
            spb(false, 60, &a),
        ]);
        let p = parse(&f).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].data, frame(1, 61));
        assert_eq!((p[1].data.as_slice(), p[1].orig_len), (&b[..64], 100));
        assert_eq!(p[2].data, a);
        assert!(p.iter().all(|p| p.linktype == 1 && p.ts_ns == 0));
        // Without an interface, an SPB has no link type.
        let f = cat(&[shb(false), spb(false, 60, &a)]);
        assert_eq!(
            err(&f),
            "frame 1 (simple packet block at byte 28): no interface is described in its section"
        );
    }

    #[test]
    fn pcapng_obsolete_packet_block() {
        let a = frame(5, 50);
        let body = W::new(true)
            .u16(0)
            .u16(0)
            .u32(0)
            .u32(2_000_000)
            .u32(50)
            .u32(50)
            .bytes(&a)
            .done();
        let f = cat(&[shb(true), idb(true, 1, 0, &[]), block(true, OPB, &body)]);
        let p = parse(&f).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].data.as_slice(), p[0].ts_ns),
            (a.as_slice(), 2_000_000_000)
        );
    }

    #[test]
    fn pcapng_bad_block_lengths() {
        let a = frame(1, 60);
        let good = cat(&[shb(false), idb(false, 1, 0, &[]), epb(false, 0, 0, &a, 60)]);
        let epb_at = 28 + 20;
        let set_len = |f: &mut Vec<u8>, at: usize, v: u32| {
            f[at + 4..at + 8].copy_from_slice(&v.to_le_bytes())
        };
        assert_eq!(parse(&good).unwrap().len(), 1);
        // Not a multiple of 4.
        let mut f = good.clone();
        set_len(&mut f, epb_at, 94);
        assert_eq!(
            err(&f),
            "block at byte 48: bad block total length 94 (it must be at least 12 and a multiple of 4)"
        );
        // Below the minimum.
        let mut f = good.clone();
        set_len(&mut f, epb_at, 8);
        assert!(matches!(
            parse(&f),
            Err(PcapError::BadBlockLength { offset: 48, len: 8 })
        ));
        // Past the end of the file.
        let mut f = good.clone();
        set_len(&mut f, epb_at, 1 << 30);
        assert_eq!(
            err(&f),
            format!(
                "truncated block at byte 48: it needs {} bytes, the file has {} left",
                1 << 30,
                good.len() - epb_at
            )
        );
        // Leading and trailing lengths differ.
        let mut f = good.clone();
        let len = (good.len() - epb_at) as u32;
        set_len(&mut f, epb_at, len - 4);
        assert_eq!(
            err(&f),
            format!(
                "block at byte 48: total length {} at its start but {} at its end (the file is corrupt)",
                len - 4,
                u32::from_le_bytes(f[f.len() - 8..f.len() - 4].try_into().unwrap())
            )
        );
        // Too short for what the block is.
        let f = cat(&[shb(false), block(false, IDB, &[1, 0, 0, 0])]);
        assert_eq!(
            err(&f),
            "interface description block at byte 28: block total length 16 is too short, it \
             needs at least 20"
        );
        // A file cut inside a block, and a few stray bytes after the last one.
        assert_eq!(
            err(&good[..good.len() - 2]),
            format!(
                "truncated block at byte 48: it needs {len} bytes, the file has {} left",
                len - 2
            )
        );
        let f = cat(&[good.clone(), vec![0; 5]]);
        assert!(matches!(
            parse(&f),
            Err(PcapError::TruncatedBlock {
                need: 12,
                have: 5,
                ..
            })
        ));
    }

    #[test]
    fn pcapng_bad_contents() {
        let a = frame(1, 60);
        // Byte-order magic.
        let mut f = cat(&[shb(false), idb(false, 1, 0, &[])]);
        f[8..12].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            err(&f),
            "section header block at byte 0: unknown byte-order magic 0x01020304"
        );
        // Version 2.0.
        let mut f = cat(&[shb(false), idb(false, 1, 0, &[])]);
        f[12] = 2;
        assert_eq!(
            err(&f),
            "section header block at byte 0: unsupported pcapng version 2.0"
        );
        // An EPB whose captured length exceeds its block.
        let mut e = epb(false, 0, 0, &a, 60);
        e[20..24].copy_from_slice(&200u32.to_le_bytes());
        let f = cat(&[shb(false), idb(false, 1, 0, &[]), e]);
        assert_eq!(
            err(&f),
            "frame 1 (enhanced packet block at byte 48): captured length 200 runs past the end \
             of the block (72 bytes of room)"
        );
        // IDB options that do not fit, or have the wrong size.
        let mut i = idb(false, 1, 0, &[(9, &[6])]);
        i[18..20].copy_from_slice(&40u16.to_le_bytes());
        assert_eq!(
            err(&cat(&[shb(false), i])),
            "interface description block at byte 28: option 9 at byte 44 runs past the end of \
             the block"
        );
        let i = idb(false, 1, 0, &[(9, &[6, 0])]);
        assert_eq!(
            err(&cat(&[shb(false), i])),
            "interface description block at byte 28: option if_tsresol has length 2, it must be 1"
        );
    }

    #[test]
    fn timestamp_resolutions() {
        let at = |tsresol, tsoffset, ts| {
            Interface {
                linktype: 1,
                snaplen: 0,
                tsresol,
                tsoffset,
            }
            .ns(ts)
        };
        assert_eq!(at(6, 0, 1_500_000), 1_500_000_000);
        assert_eq!(at(9, 0, 7), 7);
        assert_eq!(at(3, 0, 2), 2_000_000);
        assert_eq!(at(12, 0, 5_000), 5);
        assert_eq!(at(0x80 | 20, 0, 1 << 20), 1_000_000_000);
        assert_eq!(at(0, 0, u64::MAX), u64::MAX); // saturates
        assert_eq!(at(100, 0, u64::MAX), 0);
        assert_eq!(at(6, -10, 1_000_000), 0); // before the epoch: clamped
        assert_eq!(at(6, 10, 1_000_000), 11_000_000_000);
    }

    /// Any prefix, and any single corrupted byte, of valid captures gives frames or an error,
    /// never a panic.
    #[test]
    fn never_panics_on_damage() {
        let a = frame(1, 61);
        let captures = [
            classic_file(
                false,
                false,
                65535,
                1,
                &[(1, 2, &a, 61), (3, 4, &a[..7], 90)],
            ),
            classic_file(true, true, 65535, 1, &[(1, 2, &a, 61)]),
            cat(&[two_interfaces(false).0, spb(false, 61, &a)]),
            cat(&[two_interfaces(true).0, shb(false), idb(false, 1, 9, &[])]),
        ];
        for c in &captures {
            for n in 0..=c.len() {
                let _ = parse(&c[..n]);
            }
            for i in 0..c.len() {
                for v in [0x00, 0x03, 0x80, 0xff] {
                    let mut d = c.clone();
                    d[i] = v;
                    let _ = parse(&d);
                }
            }
        }
    }
}
