//! Capture files, read as a stream, for `conduit replay` and `conduit discover`: classic libpcap
//! (either byte order, micro- or nanosecond timestamps) and pcapng (sections in either byte
//! order, any number of interfaces, enhanced and simple packet blocks; other blocks are
//! skipped, but the obsolete packet block is refused: skipped, it would renumber the frames
//! after it). `pcap-parser` parses the records through a buffer of fixed size, so a capture
//! larger than memory works: [`Capture::next_frame`] gives one frame at a time.
//!
//! An error names the file, the frame (numbered from 1, as Wireshark numbers them) or block,
//! and its byte offset. A corrupt or hostile file gives an error, never a panic, and a length
//! field is never allocated as it says: one record may grow the buffer to [`MAX_RECORD`] bytes,
//! and a record that claims more is refused.
use std::{
    fmt,
    io::{self, Read},
    path::Path,
};

use pcap_parser::{
    Block, LegacyPcapReader, PcapBlockOwned, PcapError, PcapNGOption, PcapNGReader,
    traits::PcapReaderIterator,
};

/// Ethernet, the link type of most captures (and the only one `replay` judges).
pub const LINKTYPE_ETHERNET: u32 = 1;
/// One record (a classic record or a pcapng block) must be shorter than this: the most it may
/// grow the buffer to.
pub const MAX_RECORD: usize = 16 << 20;
/// The read buffer's starting size.
const BUFFER: usize = 1 << 20;

/// pcapng block types (a Section Header Block's reads the same in both byte orders).
const SHB: u32 = 0x0a0d_0d0a;
const IDB: u32 = 1;
const OPB: u32 = 2;
const SPB: u32 = 3;
const EPB: u32 = 6;

/// One captured frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Numbered from 1, as Wireshark numbers frames.
    pub number: u64,
    /// The bytes captured: the first `data.len()` bytes of the frame.
    pub data: &'a [u8],
    /// Original length on the wire (more than `data.len()` when the capture cut it short).
    pub orig_len: u32,
    /// Link type of its interface (1 = Ethernet); FCS bits of a classic header masked off.
    pub linktype: u32,
    /// Capture time in nanoseconds since the Unix epoch; 0 for pcapng Simple Packet Blocks,
    /// which carry no time.
    pub ts_ns: u64,
}

impl Frame<'_> {
    /// The problem of a frame whose link type the reader cannot use; `supported` says which
    /// it can.
    pub fn unsupported_link_type(&self, supported: &'static str) -> Problem {
        Problem::LinkType {
            frame: self.number,
            linktype: self.linktype,
            supported,
        }
    }
}

/// A capture that cannot be read: the file, and what is wrong where.
#[derive(Debug, thiserror::Error)]
#[error("{file}: error: {problem}")]
pub struct CaptureError {
    pub file: String,
    pub problem: Problem,
}

/// What is wrong with a capture.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("cannot read: {0}")]
    Io(#[source] io::Error),
    #[error("cannot read at byte {0}: read error")]
    ReadFailed(u64),
    #[error("not a regular file or pipe ({0})")]
    NotAFile(&'static str),
    #[error("the file is empty, not a pcap or pcapng file")]
    Empty,
    #[error("not a pcap or pcapng file (only {0} bytes long)")]
    TooShort(usize),
    #[error("a gzip-compressed file, not a pcap or pcapng file: decompress it first (gunzip)")]
    Compressed,
    #[error("not a pcap or pcapng file (magic 0x{0:08x})")]
    BadMagic(u32),
    #[error("truncated: {0} is cut off (the capture ends inside it)")]
    Truncated(Place),
    #[error("{place}: {problem} (corrupt capture)")]
    Corrupt { place: Place, problem: String },
    #[error("{place}: {what} is not supported")]
    Unsupported { place: Place, what: String },
    #[error("frame {frame}: link type {linktype} is not supported ({supported})")]
    LinkType {
        frame: u64,
        linktype: u32,
        supported: &'static str,
    },
}

/// Where in a capture: a frame's record or block, or another block, and its byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub frame: Option<u64>,
    pub block: &'static str,
    pub offset: u64,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.frame {
            Some(n) => write!(f, "frame {n} ({} at byte {})", self.block, self.offset),
            None => write!(f, "{} at byte {}", self.block, self.offset),
        }
    }
}

/// A capture file, read frame by frame.
pub struct Capture {
    file: String,
    reader: Box<dyn PcapReaderIterator + Send>,
    format: Format,
    /// Frames given so far.
    frames: u64,
    capacity: usize,
    /// The bytes of the frame last given.
    data: Vec<u8>,
}

impl Capture {
    /// Opens the capture at `path` and reads its file header. A directory or a device is
    /// refused without opening it; a pipe (`<(zcat capture.pcap.gz)`) is read as it comes.
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let file = path.display().to_string();
        match open_file(path) {
            Ok(f) => Self::from_reader(file, f),
            Err(problem) => Err(CaptureError { file, problem }),
        }
    }

    /// Reads a capture from `input`; `file` names it in errors.
    pub fn from_reader(
        file: String,
        input: impl Read + Send + 'static,
    ) -> Result<Self, CaptureError> {
        Self::with_buffer(file, input, BUFFER)
    }

    fn with_buffer(
        file: String,
        input: impl Read + Send + 'static,
        capacity: usize,
    ) -> Result<Self, CaptureError> {
        match Self::start(&file, input, capacity) {
            Ok(c) => Ok(c),
            Err(problem) => Err(CaptureError { file, problem }),
        }
    }

    fn start(
        file: &str,
        input: impl Read + Send + 'static,
        capacity: usize,
    ) -> Result<Self, Problem> {
        let mut input = input;
        // The magic first: gzip, an empty file and a stranger get a message of their own.
        let mut head = [0u8; 12];
        let n = fill(&mut input, &mut head).map_err(Problem::Io)?;
        let head = &head[..n];
        let ng = match head {
            [] => return Err(Problem::Empty),
            [0x1f, 0x8b, ..] => return Err(Problem::Compressed),
            &[a, b, c, d, ..] => match u32::from_be_bytes([a, b, c, d]) {
                SHB => true,
                // Micro- and nanosecond, both byte orders; Kuznetzov's modified format.
                0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1 | 0x34cd_b2a1 => false,
                m => return Err(Problem::BadMagic(m)),
            },
            _ => return Err(Problem::TooShort(n)),
        };
        let input = Filling(io::Cursor::new(head.to_vec()).chain(input));
        let header = |block| Place {
            frame: None,
            block,
            offset: 0,
        };
        let reader: Box<dyn PcapReaderIterator + Send> = if ng {
            match PcapNGReader::new(capacity, input) {
                Ok(r) => Box::new(r),
                Err(e) => {
                    let place = header(block_name(SHB));
                    // A section header block pcap-parser cannot read: say why from its start.
                    return Err(match (e, diagnose(head, false)) {
                        (PcapError::ReadError, _) => Problem::ReadFailed(0),
                        (_, Some(problem)) => Problem::Corrupt { place, problem },
                        (PcapError::Incomplete(_), None) => Problem::Truncated(place),
                        (_, None) => Problem::Corrupt {
                            place,
                            problem: "it does not parse".into(),
                        },
                    });
                }
            }
        } else {
            match LegacyPcapReader::new(capacity, input) {
                Ok(r) => Box::new(r),
                Err(PcapError::ReadError) => return Err(Problem::ReadFailed(0)),
                Err(_) => return Err(Problem::Truncated(header("file header"))),
            }
        };
        Ok(Self {
            file: file.to_owned(),
            reader,
            format: if ng {
                Format::Ng {
                    big: false,
                    ifaces: Vec::new(),
                }
            } else {
                Format::Legacy(Legacy::default())
            },
            frames: 0,
            capacity,
            data: Vec::new(),
        })
    }

    /// An error of this capture.
    pub fn error(&self, problem: Problem) -> CaptureError {
        CaptureError {
            file: self.file.clone(),
            problem,
        }
    }

    /// The next frame, in file order; `None` at the end of the capture.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        match self.advance() {
            Ok(Some(meta)) => Ok(Some(Frame {
                number: self.frames,
                data: &self.data,
                orig_len: meta.orig_len,
                linktype: meta.linktype,
                ts_ns: meta.ts_ns,
            })),
            Ok(None) => Ok(None),
            Err(problem) => Err(self.error(problem)),
        }
    }

    /// Reads up to the next frame (its bytes copied to `self.data`), refilling and growing the
    /// buffer as records need.
    fn advance(&mut self) -> Result<Option<Meta>, Problem> {
        loop {
            let offset = self.reader.consumed() as u64;
            let stall = match self.reader.next() {
                Ok((len, block)) => {
                    let read = self.format.read(block, &mut self.data);
                    let raw = self.reader.data().get(..len).unwrap_or_default();
                    let place = self.format.place(raw, offset, self.frames);
                    if let Format::Ng { big, .. } = self.format {
                        framing(raw, big).map_err(|problem| Problem::Corrupt { place, problem })?;
                    }
                    let meta = read.map_err(|bad| bad.at(place))?;
                    self.reader.consume(len);
                    if meta.is_some() {
                        self.frames += 1;
                        return Ok(meta);
                    }
                    continue;
                }
                Err(PcapError::Eof) => return Ok(None),
                Err(PcapError::ReadError) => return Err(Problem::ReadFailed(offset)),
                Err(PcapError::UnexpectedEof) => Stall::Ended,
                Err(PcapError::Incomplete(_) | PcapError::BufferTooSmall) => Stall::Wanting,
                Err(_) => Stall::Refused,
            };
            let raw = self.reader.data();
            let place = self.format.place(raw, offset, self.frames);
            let declared = self.format.declared(raw);
            let whole = declared.is_some_and(|d| raw.len() as u64 >= d);
            let corrupt = |problem| Problem::Corrupt { place, problem };
            if stall == Stall::Refused || whole {
                // All of the record is there, and pcap-parser still cannot read it.
                let why = match self.format {
                    Format::Ng { big, .. } => diagnose(raw, big),
                    Format::Legacy(_) => None,
                };
                return Err(corrupt(
                    why.unwrap_or_else(|| "its contents do not fit its length".into()),
                ));
            }
            if stall == Stall::Ended {
                return Err(Problem::Truncated(place));
            }
            if raw.len() >= self.capacity {
                // The buffer is full and the record is longer: grow it, within reason.
                let need = declared.unwrap_or(u64::MAX);
                if need >= MAX_RECORD as u64 {
                    return Err(corrupt(format!(
                        "it claims {need} bytes; a record may have less than {} MiB",
                        MAX_RECORD >> 20
                    )));
                }
                let grown = ((need as usize + 1).next_power_of_two())
                    .max(self.capacity * 2)
                    .min(MAX_RECORD);
                self.reader.grow(grown);
                self.capacity = grown;
            }
            if self.reader.refill().is_err() {
                return Err(Problem::ReadFailed(offset));
            }
        }
    }
}

/// Why pcap-parser gave no record.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// It needs more bytes than the buffer holds.
    Wanting,
    /// The file ended inside the record.
    Ended,
    /// The record does not parse.
    Refused,
}

/// Opens a regular file or a pipe; anything else is refused before it is opened, and what the
/// descriptor is decides (not what the path was a moment before).
fn open_file(path: &Path) -> Result<std::fs::File, Problem> {
    use std::os::unix::fs::FileTypeExt as _;
    let check = |t: std::fs::FileType| {
        if t.is_file() || t.is_fifo() {
            Ok(())
        } else if t.is_dir() {
            Err(Problem::NotAFile("a directory"))
        } else {
            Err(Problem::NotAFile("a device or socket"))
        }
    };
    check(std::fs::metadata(path).map_err(Problem::Io)?.file_type())?;
    let f = std::fs::File::open(path).map_err(Problem::Io)?;
    check(f.metadata().map_err(Problem::Io)?.file_type())?;
    Ok(f)
}

/// Reads until `buf` is full or the input ends.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if n == 0 => return Err(e),
            // Give what was read; the error comes again on the next read.
            Err(_) => break,
        }
    }
    Ok(n)
}

/// The input as pcap-parser needs it: every read fills the buffer unless the input ends (it
/// takes one short read of the file header for the whole of it, and a pipe gives short reads).
struct Filling<R>(R);

impl<R: Read> Read for Filling<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        fill(&mut self.0, buf)
    }
}

/// What a frame's record says besides its bytes.
struct Meta {
    linktype: u32,
    orig_len: u32,
    ts_ns: u64,
}

/// Why a record that parsed is refused.
enum Bad {
    Corrupt(String),
    Unsupported(String),
}

impl Bad {
    fn at(self, place: Place) -> Problem {
        match self {
            Bad::Corrupt(problem) => Problem::Corrupt { place, problem },
            Bad::Unsupported(what) => Problem::Unsupported { place, what },
        }
    }
}

/// What the file header of a classic pcap says.
#[derive(Clone, Copy, Default)]
struct Legacy {
    linktype: u32,
    /// The sub-second unit in nanoseconds (1000 or 1).
    unit: u64,
    big: bool,
    /// The size of a record header (16; 24 in the modified format).
    header: u64,
}

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

/// The capture's format and what its headers said so far.
enum Format {
    Legacy(Legacy),
    /// The byte order of the current section, and its interfaces.
    Ng {
        big: bool,
        ifaces: Vec<Interface>,
    },
}

fn u32_at(b: &[u8], at: usize, big: bool) -> Option<u32> {
    let v: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if big {
        u32::from_be_bytes(v)
    } else {
        u32::from_le_bytes(v)
    })
}

fn block_name(ty: u32) -> &'static str {
    match ty {
        SHB => "section header block",
        IDB => "interface description block",
        OPB => "packet block",
        SPB => "simple packet block",
        4 => "name resolution block",
        5 => "interface statistics block",
        EPB => "enhanced packet block",
        _ => "block",
    }
}

fn bad_length(len: u64) -> Option<String> {
    (len < 12 || !len.is_multiple_of(4)).then(|| {
        format!("bad block total length {len}: it must be at least 12 and a multiple of 4")
    })
}

/// The checks of a pcapng block's framing that pcap-parser leaves out: the total length is a
/// multiple of 4 and stands again at the block's end.
fn framing(raw: &[u8], big: bool) -> Result<(), String> {
    let len = raw.len();
    if let Some(bad) = bad_length(len as u64) {
        return Err(bad);
    }
    match len.checked_sub(4).and_then(|at| u32_at(raw, at, big)) {
        Some(trailer) if trailer as usize == len => Ok(()),
        trailer => Err(format!(
            "total length {len} at its start but {} at its end",
            trailer.unwrap_or(0)
        )),
    }
}

/// The byte order of the pcapng block at the start of `raw`: a section header block's own
/// (its byte-order magic says), any other block's that of its section.
fn block_order(raw: &[u8], section_big: bool) -> Option<bool> {
    match u32_at(raw, 0, section_big)? {
        SHB => Some(u32_at(raw, 8, true)? == 0x1a2b_3c4d),
        _ => Some(section_big),
    }
}

/// Why the pcapng block at the start of `raw` (all of it, or its start) does not parse, as far
/// as its header tells; `None` where it does not tell.
fn diagnose(raw: &[u8], section_big: bool) -> Option<String> {
    let ty = u32_at(raw, 0, section_big)?;
    if ty == SHB {
        let bom = u32_at(raw, 8, true)?;
        if bom != 0x1a2b_3c4d && bom != 0x4d3c_2b1a {
            return Some(format!("unknown byte-order magic 0x{bom:08x}"));
        }
    }
    let big = block_order(raw, section_big)?;
    let len = u32_at(raw, 4, big)?;
    if let Some(bad) = bad_length(len.into()) {
        return Some(bad);
    }
    framing(raw.get(..len as usize)?, big).err()
}

impl Format {
    /// Takes in what `block` says; for a frame, copies its bytes to `data`.
    fn read(&mut self, block: PcapBlockOwned<'_>, data: &mut Vec<u8>) -> Result<Option<Meta>, Bad> {
        let mut frame = |bytes: &[u8], linktype, orig_len, ts_ns| {
            data.clear();
            data.extend_from_slice(bytes);
            Ok(Some(Meta {
                linktype,
                orig_len,
                ts_ns,
            }))
        };
        match (self, block) {
            (f, PcapBlockOwned::LegacyHeader(h)) => {
                *f = Format::Legacy(Legacy {
                    // The upper bits carry FCS information, as libpcap's LT_LINKTYPE.
                    linktype: h.network.0 as u32 & 0x03ff_ffff,
                    unit: if h.is_nanosecond_precision() { 1 } else { 1000 },
                    big: h.is_bigendian(),
                    header: if h.is_modified_format() { 24 } else { 16 },
                });
                Ok(None)
            }
            (Format::Legacy(l), PcapBlockOwned::Legacy(b)) => frame(
                b.data,
                l.linktype,
                b.origlen,
                u64::from(b.ts_sec) * 1_000_000_000 + u64::from(b.ts_usec) * l.unit,
            ),
            (Format::Ng { big, ifaces }, PcapBlockOwned::NG(b)) => match b {
                Block::SectionHeader(shb) => {
                    *big = shb.big_endian();
                    ifaces.clear();
                    if shb.major_version != 1 {
                        return Err(Bad::Unsupported(format!(
                            "pcapng version {}.{}",
                            shb.major_version, shb.minor_version
                        )));
                    }
                    Ok(None)
                }
                Block::InterfaceDescription(idb) => {
                    ifaces.push(Interface {
                        linktype: u32::from(idb.linktype.0 as u16),
                        snaplen: idb.snaplen,
                        tsresol: idb.if_tsresol,
                        tsoffset: tsoffset(&idb.options, *big),
                    });
                    Ok(None)
                }
                Block::EnhancedPacket(epb) => {
                    let i = interface(ifaces, epb.if_id)?;
                    let ts = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                    let bytes = epb.data.get(..epb.caplen as usize).unwrap_or(epb.data);
                    frame(bytes, i.linktype, epb.origlen, i.ns(ts))
                }
                Block::SimplePacket(spb) => {
                    let Some(i) = ifaces.first() else {
                        return Err(Bad::Corrupt(
                            "no interface is described in its section".into(),
                        ));
                    };
                    // The data is as long as the original packet, cut to the snapshot length
                    // of interface 0 (0 = none) and to the block.
                    let mut n = (spb.origlen as usize).min(spb.data.len());
                    if i.snaplen != 0 {
                        n = n.min(i.snaplen as usize);
                    }
                    frame(&spb.data[..n], i.linktype, spb.origlen, 0)
                }
                // pcap-parser does not know the obsolete Packet Block; skipped, it would shift
                // the numbers of the frames after it.
                Block::Unknown(u) if ng_type(u.block_type, *big) == OPB => Err(Bad::Unsupported(
                    "the obsolete packet block (editcap converts it)".into(),
                )),
                _ => Ok(None), // name resolution, statistics, custom, secrets...
            },
            _ => Ok(None),
        }
    }

    /// Where the record at the start of `raw` is, `offset` bytes into the file, after `frames`
    /// frames.
    fn place(&self, raw: &[u8], offset: u64, frames: u64) -> Place {
        let (frame, block) = match self {
            Format::Legacy(_) => (true, "record"),
            Format::Ng { big, .. } => match u32_at(raw, 0, *big) {
                Some(ty @ (EPB | SPB | OPB)) => (true, block_name(ty)),
                Some(ty) => (false, block_name(ty)),
                None => (false, "block"),
            },
        };
        Place {
            frame: frame.then_some(frames + 1),
            block,
            offset,
        }
    }

    /// How many bytes the record at the start of `raw` says it takes, once its header is there.
    fn declared(&self, raw: &[u8]) -> Option<u64> {
        match self {
            Format::Legacy(l) => Some(l.header + u64::from(u32_at(raw, 8, l.big)?)),
            Format::Ng { big, .. } => u32_at(raw, 4, block_order(raw, *big)?).map(u64::from),
        }
    }
}

/// A pcapng block type as pcap-parser gives it for unknown blocks (read little-endian).
fn ng_type(raw: u32, big: bool) -> u32 {
    if big { raw.swap_bytes() } else { raw }
}

fn interface(ifaces: &[Interface], id: u32) -> Result<&Interface, Bad> {
    ifaces.get(id as usize).ok_or_else(|| {
        Bad::Corrupt(format!(
            "names interface {id}, but its section describes {} interface(s)",
            ifaces.len()
        ))
    })
}

/// if_tsoffset in the section's byte order (pcap-parser reads it little-endian always).
fn tsoffset(options: &[PcapNGOption<'_>], big: bool) -> i64 {
    options
        .iter()
        .filter(|o| o.code.0 == 14)
        .find_map(|o| {
            let v: [u8; 8] = o.as_bytes().ok()?.try_into().ok()?;
            Some(if big {
                i64::from_be_bytes(v)
            } else {
                i64::from_le_bytes(v)
            })
        })
        .unwrap_or(0)
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
        /// A number given in both byte orders, written in the buffer's.
        fn num<const N: usize>(&mut self, be: [u8; N], le: [u8; N]) -> &mut Self {
            self.buf.extend_from_slice(if self.big { &be } else { &le });
            self
        }
        fn u16(&mut self, v: u16) -> &mut Self {
            self.num(v.to_be_bytes(), v.to_le_bytes())
        }
        fn u32(&mut self, v: u32) -> &mut Self {
            self.num(v.to_be_bytes(), v.to_le_bytes())
        }
        fn u64(&mut self, v: u64) -> &mut Self {
            self.num(v.to_be_bytes(), v.to_le_bytes())
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

    fn frame(n: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| n.wrapping_add(i as u8)).collect()
    }

    /// A frame, owned, to compare.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Packet {
        number: u64,
        data: Vec<u8>,
        orig_len: u32,
        linktype: u32,
        ts_ns: u64,
    }

    fn packet(number: u64, data: &[u8], orig_len: u32, linktype: u32, ts_ns: u64) -> Packet {
        Packet {
            number,
            data: data.to_vec(),
            orig_len,
            linktype,
            ts_ns,
        }
    }

    /// Every frame of `input`, read through a buffer of `capacity` bytes.
    fn read_all(
        input: impl Read + Send + 'static,
        capacity: usize,
    ) -> Result<Vec<Packet>, Problem> {
        let mut c =
            Capture::with_buffer("c.pcap".into(), input, capacity).map_err(|e| e.problem)?;
        let mut out = Vec::new();
        while let Some(f) = c.next_frame().map_err(|e| e.problem)? {
            out.push(packet(f.number, f.data, f.orig_len, f.linktype, f.ts_ns));
        }
        Ok(out)
    }

    /// Every frame of `bytes`. A good capture gives the same through a buffer of 64 bytes
    /// (refilled, and grown for longer records) and from an input that gives 3 bytes a read
    /// (a pipe); a bad one is refused by those too.
    fn parse(bytes: &[u8]) -> Result<Vec<Packet>, Problem> {
        let got = read_all(io::Cursor::new(bytes.to_vec()), BUFFER);
        let small = read_all(io::Cursor::new(bytes.to_vec()), 64);
        let trickle = read_all(Trickle(io::Cursor::new(bytes.to_vec())), 64);
        match &got {
            Ok(p) => {
                assert_eq!(small.as_ref().ok(), Some(p), "through a small buffer");
                assert_eq!(trickle.as_ref().ok(), Some(p), "3 bytes a read");
            }
            Err(_) => assert!(small.is_err() && trickle.is_err()),
        }
        got
    }

    struct Trickle(io::Cursor<Vec<u8>>);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(3);
            self.0.read(&mut buf[..n])
        }
    }

    fn err(bytes: &[u8]) -> String {
        parse(bytes)
            .expect_err("the capture must be refused")
            .to_string()
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
        assert_eq!(
            parse(&f).unwrap(),
            vec![
                packet(1, &a, 60, 1, 10_000_005_000),
                packet(2, &b, 1500, 1, 11_999_999_000),
            ]
        );
    }

    #[test]
    fn classic_big_endian_microseconds() {
        let a = frame(7, 42);
        let f = classic_file(true, false, 262_144, 113, &[(1, 2, &a, 42)]);
        assert_eq!(&f[..4], &[0xa1, 0xb2, 0xc3, 0xd4]);
        assert_eq!(
            parse(&f).unwrap(),
            vec![packet(1, &a, 42, 113, 1_000_002_000)]
        );
    }

    #[test]
    fn classic_nanoseconds_both_orders() {
        let a = frame(3, 64);
        for big in [false, true] {
            let f = classic_file(big, true, 65535, 1, &[(1_700_000_000, 123_456_789, &a, 64)]);
            assert_eq!(
                parse(&f).unwrap(),
                vec![packet(1, &a, 64, 1, 1_700_000_000_123_456_789)],
                "big = {big}"
            );
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
        // A record longer than the snapshot length is read, as libpcap reads it.
        let b = frame(2, 100);
        let f = classic_file(true, false, 96, 1, &[(0, 0, &a, 20), (0, 0, &b, 100)]);
        assert_eq!(parse(&f).unwrap()[1].data, b);
    }

    #[test]
    fn classic_truncated() {
        let (a, b) = (frame(1, 60), frame(2, 40));
        let f = classic_file(false, false, 65535, 1, &[(0, 0, &a, 60), (0, 0, &b, 40)]);
        assert_eq!(f.len(), 24 + 16 + 60 + 16 + 40);
        assert_eq!(
            err(&f[..10]),
            "truncated: file header at byte 0 is cut off (the capture ends inside it)"
        );
        // Frame 2's record header is cut short, or its data is.
        for cut in [24 + 76 + 5, f.len() - 1] {
            assert_eq!(
                err(&f[..cut]),
                "truncated: frame 2 (record at byte 100) is cut off (the capture ends inside it)"
            );
        }
        assert!(matches!(
            parse(&f[..50]),
            Err(Problem::Truncated(Place {
                frame: Some(1),
                block: "record",
                offset: 24
            }))
        ));
    }

    #[test]
    fn huge_lengths_are_refused_not_allocated() {
        let a = frame(1, 60);
        // Claimed by a record in a short file: the file ends first.
        let mut f = classic_file(false, false, 0, 1, &[(0, 0, &a, 60)]);
        f[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            err(&f),
            "truncated: frame 1 (record at byte 24) is cut off (the capture ends inside it)"
        );
        // In a file longer than the buffer: refused when the buffer is full, never grown.
        f.resize(3 * BUFFER, 0);
        let mut c = Capture::from_reader("c.pcap".into(), io::Cursor::new(f)).unwrap();
        assert_eq!(
            c.next_frame().unwrap_err().to_string(),
            "c.pcap: error: frame 1 (record at byte 24): it claims 4294967311 bytes; a record \
             may have less than 16 MiB (corrupt capture)"
        );
        assert_eq!(c.capacity, BUFFER);
        // Likewise a pcapng block.
        let mut f = cat(&[shb(true), idb(true, 1, 0, &[]), epb(true, 0, 0, &a, 60)]);
        f[52..56].copy_from_slice(&(64u32 << 20).to_be_bytes());
        f.resize(3 * BUFFER, 0);
        assert_eq!(
            read_all(io::Cursor::new(f), BUFFER)
                .unwrap_err()
                .to_string(),
            "frame 1 (enhanced packet block at byte 48): it claims 67108864 bytes; a record \
             may have less than 16 MiB (corrupt capture)"
        );
    }

    #[test]
    fn records_longer_than_the_buffer_grow_it() {
        // A 3 MiB frame (jumbo frames do not come so large, but a capture may), after and
        // before small ones, in both formats.
        let (a, big) = (frame(1, 60), frame(9, 3 << 20));
        let f = classic_file(
            false,
            false,
            0,
            1,
            &[(0, 0, &a, 60), (1, 0, &big, 1 << 22), (2, 0, &a, 60)],
        );
        let p = read_all(io::Cursor::new(f), BUFFER).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!((p[1].data.len(), p[1].orig_len), (3 << 20, 1 << 22));
        assert_eq!(p[2], packet(3, &a, 60, 1, 2_000_000_000));
        let f = cat(&[
            shb(false),
            idb(false, 1, 0, &[]),
            epb(false, 0, 0, &big, 1 << 22),
            epb(false, 0, 1, &a, 60),
        ]);
        let p = read_all(io::Cursor::new(f), BUFFER).unwrap();
        assert_eq!(p[0].data, big);
        assert_eq!(p[1], packet(2, &a, 60, 1, 1_000));
    }

    #[test]
    fn not_a_capture() {
        assert_eq!(err(b""), "the file is empty, not a pcap or pcapng file");
        assert_eq!(err(b"ab"), "not a pcap or pcapng file (only 2 bytes long)");
        assert_eq!(
            err(b"GET / HTTP/1.1\r\n"),
            "not a pcap or pcapng file (magic 0x47455420)"
        );
        assert_eq!(
            err(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]),
            "a gzip-compressed file, not a pcap or pcapng file: decompress it first (gunzip)"
        );
        // Kuznetzov's "modified" pcap is read little-endian only, as pcap-parser reads it.
        assert_eq!(
            err(&[0xa1, 0xb2, 0xcd, 0x34, 0, 0, 0, 0]),
            "not a pcap or pcapng file (magic 0xa1b2cd34)"
        );
    }

    #[test]
    fn open_names_the_file() {
        let e = Capture::open(Path::new("/nonexistent/conduit/capture.pcap"))
            .err()
            .unwrap();
        assert!(matches!(e.problem, Problem::Io(_)));
        assert!(
            e.to_string()
                .starts_with("/nonexistent/conduit/capture.pcap: error: cannot read: "),
            "{e}"
        );
        let e = Capture::open(Path::new("/")).err().unwrap();
        assert_eq!(
            e.to_string(),
            "/: error: not a regular file or pipe (a directory)"
        );
        let e = Capture::open(Path::new("/dev/zero")).err().unwrap();
        assert_eq!(
            e.to_string(),
            "/dev/zero: error: not a regular file or pipe (a device or socket)"
        );
    }

    /// A section with two interfaces (Ethernet in microseconds; raw IP in nanoseconds, offset
    /// by 100 s), an unknown block, a name resolution block and interface statistics.
    fn two_interfaces(big: bool) -> (Vec<u8>, Vec<Packet>) {
        let (a, b, c) = (frame(1, 60), frame(2, 33), frame(3, 14));
        let offset = W::new(big).u64(100).done();
        let nrb = W::new(big)
            .u16(1)
            .u16(8)
            .bytes(&[127, 0, 0, 1])
            .bytes(b"lo\0\0")
            .u32(0)
            .done();
        let file = cat(&[
            shb(big),
            idb(big, 1, 65535, &[(2, b"eth0\0\0"), (9, &[6])]),
            block(big, 4, &nrb),
            idb(big, 101, 0, &[(9, &[9]), (14, &offset)]),
            epb(big, 0, 1_700_000_000_000_001, &a, 60),
            block(big, 0x4000_0bad, &[0xde, 0xad, 0xbe, 0xef, 1]), // custom, unknown
            epb(big, 1, 5_000_000_007, &b, 1000),
            block(big, 5, &W::new(big).u32(0).u32(0).u32(0).done()), // ISB
            block(big, 10, &W::new(big).u32(0x544c_534b).u32(4).u32(0).done()), // secrets
            epb(big, 0, 0, &c, 14),
        ]);
        let want = vec![
            packet(1, &a, 60, 1, 1_700_000_000_000_001_000),
            packet(2, &b, 1000, 101, 105_000_000_007),
            packet(3, &c, 14, 1, 0),
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
        want.push(packet(4, &a, 70, 1, 3_500_000_000));
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
                "frame 4 (enhanced packet block at byte {at}): names interface 1, but its \
                 section describes 1 interface(s) (corrupt capture)"
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
        assert_eq!(
            parse(&f).unwrap(),
            vec![
                packet(1, &frame(1, 61), 61, 1, 0),
                packet(2, &b[..64], 100, 1, 0),
                packet(3, &a, 60, 1, 0),
            ]
        );
        // Without an interface, an SPB has no link type.
        let f = cat(&[shb(false), spb(false, 60, &a)]);
        assert_eq!(
            err(&f),
            "frame 1 (simple packet block at byte 28): no interface is described in its \
             section (corrupt capture)"
        );
    }

    #[test]
    fn pcapng_obsolete_packet_block_is_refused() {
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
        assert_eq!(
            err(&f),
            "frame 1 (packet block at byte 48): the obsolete packet block (editcap converts \
             it) is not supported"
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
        let bad = |len| {
            format!(
                "frame 1 (enhanced packet block at byte 48): bad block total length {len}: it \
                 must be at least 12 and a multiple of 4 (corrupt capture)"
            )
        };
        // Not a multiple of 4; below the minimum.
        for len in [94, 8] {
            let mut f = good.clone();
            set_len(&mut f, epb_at, len);
            assert_eq!(err(&f), bad(len));
        }
        // Past the end of the file.
        let mut f = good.clone();
        set_len(&mut f, epb_at, 1 << 20);
        assert_eq!(
            err(&f),
            "truncated: frame 1 (enhanced packet block at byte 48) is cut off (the capture \
             ends inside it)"
        );
        // Leading and trailing lengths differ.
        let len = (good.len() - epb_at) as u32;
        for (start, end) in [(len - 4, len), (len, len + 4)] {
            let mut f = good.clone();
            set_len(&mut f, epb_at, start);
            let n = f.len();
            f[n - 4..].copy_from_slice(&end.to_le_bytes());
            let trailer =
                u32::from_le_bytes(f[epb_at + start as usize - 4..][..4].try_into().unwrap());
            assert_eq!(
                err(&f),
                format!(
                    "frame 1 (enhanced packet block at byte 48): total length {start} at its \
                     start but {trailer} at its end (corrupt capture)"
                )
            );
        }
        // The same in a block pcap-parser does not check, and in a section header.
        let f = cat(&[good.clone(), block(false, 0x4000_0bad, &[1, 2, 3, 4])]);
        let mut g = f.clone();
        let n = g.len();
        g[n - 4..].copy_from_slice(&20u32.to_le_bytes());
        assert_eq!(
            err(&g),
            format!(
                "block at byte {}: total length 16 at its start but 20 at its end (corrupt \
                 capture)",
                good.len()
            )
        );
        let mut g = good.clone();
        g[4..8].copy_from_slice(&27u32.to_le_bytes());
        assert_eq!(
            err(&g),
            "section header block at byte 0: bad block total length 27: it must be at least 12 \
             and a multiple of 4 (corrupt capture)"
        );
        // A file cut inside a block, and a few stray bytes after the last one.
        assert_eq!(
            err(&good[..good.len() - 2]),
            "truncated: frame 1 (enhanced packet block at byte 48) is cut off (the capture \
             ends inside it)"
        );
        assert_eq!(
            err(&cat(&[good.clone(), vec![0; 5]])),
            format!(
                "truncated: block at byte {} is cut off (the capture ends inside it)",
                good.len()
            )
        );
    }

    #[test]
    fn pcapng_bad_contents() {
        let a = frame(1, 60);
        // Byte-order magic, in the first section and a later one.
        let mut f = cat(&[shb(false), idb(false, 1, 0, &[])]);
        f[8..12].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            err(&f),
            "section header block at byte 0: unknown byte-order magic 0x01020304 (corrupt \
             capture)"
        );
        let mut f = cat(&[shb(false), shb(false)]);
        f[36..40].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            err(&f),
            "section header block at byte 28: unknown byte-order magic 0x01020304 (corrupt \
             capture)"
        );
        // Version 2.0.
        let mut f = cat(&[shb(false), idb(false, 1, 0, &[])]);
        f[12] = 2;
        assert_eq!(
            err(&f),
            "section header block at byte 0: pcapng version 2.0 is not supported"
        );
        // An EPB whose captured length exceeds its block.
        let mut e = epb(false, 0, 0, &a, 60);
        e[20..24].copy_from_slice(&200u32.to_le_bytes());
        let f = cat(&[shb(false), idb(false, 1, 0, &[]), e]);
        assert_eq!(
            err(&f),
            "frame 1 (enhanced packet block at byte 48): its contents do not fit its length \
             (corrupt capture)"
        );
        // An IDB too short for what it must hold.
        assert_eq!(
            err(&cat(&[shb(false), block(false, IDB, &[1, 0, 0, 0])])),
            "interface description block at byte 28: its contents do not fit its length \
             (corrupt capture)"
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
        let read = |b: &[u8]| read_all(io::Cursor::new(b.to_vec()), 64);
        for c in &captures {
            for n in 0..=c.len() {
                let _ = read(&c[..n]);
            }
            for i in 0..c.len() {
                for v in [0x00, 0x03, 0x80, 0xff] {
                    let mut d = c.clone();
                    d[i] = v;
                    let _ = read(&d);
                }
            }
        }
    }
}
