//! Conduit's DNP3 check against Wireshark's DNP3 dissector (tshark), frame by frame.
//!
//! About 400 TCP segments to port 20000 from a seeded RNG (valid requests of every function
//! code with up to 3 data blocks, link services, and every kind of broken framing) go into a
//! pcap that tshark dissects. From tshark's view alone (PDU count and size, start bytes,
//! header and first data block CRC status, DIR, PRM, link function, transport and application
//! FIR) the test derives whether Conduit's rules admit the segment, and asserts that
//! `inspect::check`, on the packet `parse` gives the kernel, agrees: `None` with a filter
//! allowing everything exactly for those, `Malformed` for the rest. For admitted segments it
//! also proves that Conduit reads the same function code and destination as tshark (a filter
//! of only that code or outstation passes, one without it denies with the DNP3 reason).
//! Later data blocks' CRCs are not judged by Conduit (only the first block is in its window),
//! so only the first chunk's CRC status counts; no frame has a bad later block (tshark then
//! drops the whole application layer, so its view could not show the function code). Needs
//! `tshark` (Debian's package): it fails without it rather than skip. Not root-only.
use std::{collections::BTreeMap, process::Command};

use conduit_common::{
    Reason,
    abi::{FILTER_ANY_ADDRESS, Filter},
    inspect::{self, DNP3, dnp3},
    parse::parse,
};
use conduit_tests::{
    frames::{self, L4, TCP_DATA},
    unique_name,
};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};

const FRAMES: usize = 400;
/// Wireshark's checksum status "good" (PROTO_CHECKSUM_E_GOOD).
const GOOD: &str = "1";

/// What a generated segment is meant to be: a valid request, a link service without user
/// data, or a breakage (start bytes, header CRC, first block CRC, length field, two frames in
/// one segment, a frame cut short, transport FIR cleared, application FIR cleared, DIR
/// cleared).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[rustfmt::skip]
enum Class {
    Request, Link, Start, HeaderCrc, BlockCrc, Length, TwoFrames, CutShort, TrFir, AppFir, Dir,
}

const CLASSES: [Class; 11] = {
    use Class::*;
    [
        Request, Link, Start, HeaderCrc, BlockCrc, Length, TwoFrames, CutShort, TrFir, AppFir, Dir,
    ]
};

/// A segment's payload of class `class` (see [`Class`]).
fn payload(rng: &mut StdRng, class: Class) -> Vec<u8> {
    let outstation = *[0u16, 1, 10, 1024, 0xfffd, 0xffff, rng.random()]
        .choose(rng)
        .unwrap();
    let master = rng.random_range(0..0xfff0);
    let function = if rng.random_bool(0.9) {
        rng.random_range(0..=33)
    } else {
        129
    };
    let objects = *[0usize, 0, 3, 10, 13, 14, 20, 29, 30, 40]
        .choose(rng)
        .unwrap();
    let mut user = vec![
        0xC0 | rng.random_range(0..64),
        0xC0 | rng.random_range(0..16),
        function,
    ];
    user.extend((0..objects).map(|_| rng.random::<u8>()));
    let control = match class {
        Class::Link => {
            user.clear();
            *[0xC0u8, 0xC9, 0x80, 0xC2, 0x81].choose(rng).unwrap()
        }
        Class::Dir => *[0x44u8, 0x43, 0x40].choose(rng).unwrap(),
        _ => *[0xC4u8, 0xC4, 0xC3].choose(rng).unwrap(),
    };
    match class {
        Class::TrFir => user[0] &= !dnp3::TRANSPORT_FIR,
        Class::AppFir => user[1] &= !dnp3::APP_FIR,
        _ => {}
    }
    let (data, len) = frames::dnp3_frame(outstation, master, control, &user);
    let mut b = data[..usize::from(len)].to_vec();
    let fix_header = |b: &mut Vec<u8>| {
        let c = dnp3::crc(&b[..8]).to_le_bytes();
        b[8..10].copy_from_slice(&c);
    };
    match class {
        Class::Start => b[rng.random_range(0..2)] ^= 1 << rng.random_range(0..8),
        Class::HeaderCrc => b[rng.random_range(8..10)] ^= 1 << rng.random_range(0..8),
        Class::BlockCrc => {
            let crc_at = dnp3::HEADER + user.len().min(dnp3::BLOCK);
            b[rng.random_range(crc_at..crc_at + 2)] ^= 1 << rng.random_range(0..8);
        }
        Class::Length => {
            b[2] = loop {
                let l = rng.random_range(0..=b[2].saturating_add(20));
                if l != b[2] {
                    break l;
                }
            };
            fix_header(&mut b);
        }
        Class::TwoFrames => {
            let (second, l2) = frames::dnp3_frame(outstation, master, 0xC4, &[0xC1, 0xC1, 1]);
            let take = (TCP_DATA - b.len()).min(usize::from(l2));
            b.extend_from_slice(&second[..take]);
        }
        Class::CutShort => b.truncate(rng.random_range(1..b.len())),
        _ => {}
    }
    b
}

/// An Ethernet/IPv4/TCP frame number `i` to port 20000 carrying `payload`, from an address
/// and port of its own: tshark reassembles DNP3 application fragments per address pair
/// (keyed by the transport sequence number), so frames must not share one.
fn frame(i: usize, payload: &[u8]) -> Vec<u8> {
    let (data, len) = frames::tcp_data(payload);
    let l4 = L4::TcpData {
        sport: 40_000 + i as u16,
        dport: dnp3::PORT,
        flags: 0x18,
        data,
        len,
    };
    let src = [10, 1, (i >> 8) as u8, i as u8];
    frames::v4(frames::MAC_A, src, [10, 0, 0, 2], l4)
}

/// A classic pcap (microseconds, Ethernet) of `frames`.
fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for w in [0xa1b2c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    for (i, f) in frames.iter().enumerate() {
        for w in [1_700_000_000 + i as u32, 0, f.len() as u32, f.len() as u32] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(f);
    }
    out
}

/// The size on the wire of a link frame with `user` bytes of user data, from IEEE 1815
/// (header, blocks of 16 bytes each followed by a 2-byte CRC).
fn wire_len(user: usize) -> usize {
    10 + user + 2 * user.div_ceil(16)
}

/// The fields the test reads, in tshark's output order.
const FIELDS: &str = "frame.number tcp.len dnp3.start dnp3.len dnp3.ctl.dir dnp3.ctl.prm \
    dnp3.ctl.prifunc dnp3.dst dnp.hdr.CRC.status dnp.data_chunk.CRC.status dnp3.tr.fir \
    dnp3.al.fir dnp3.al.func";

/// What tshark's fields of one frame imply under Conduit's rules: `Some((destination,
/// function code if user data))` when the segment must pass.
fn expected(v: &BTreeMap<&str, Vec<&str>>) -> Option<(u16, Option<u8>)> {
    let one = |k: &str| match v[k].as_slice() {
        [x] => Some(*x),
        _ => None,
    };
    let num = |k: &str| one(k)?.parse::<usize>().ok();
    let flag = |k: &str| one(k).is_some_and(|x| x == "1" || x == "True");
    if one("dnp3.start")? != "0x0564" || one("dnp.hdr.CRC.status")? != GOOD || !flag("dnp3.ctl.dir")
    {
        return None;
    }
    let user = num("dnp3.len")?.checked_sub(5)?;
    if wire_len(user) != num("tcp.len")? {
        return None;
    }
    let dst = num("dnp3.dst")? as u16;
    let prifunc = num("dnp3.ctl.prifunc");
    if user == 0 {
        return (!flag("dnp3.ctl.prm") || matches!(prifunc, Some(0 | 2 | 9)))
            .then_some((dst, None));
    }
    let ok = flag("dnp3.ctl.prm")
        && matches!(prifunc, Some(3 | 4))
        && user >= 3
        && v["dnp.data_chunk.CRC.status"].first() == Some(&GOOD)
        && flag("dnp3.tr.fir")
        && flag("dnp3.al.fir");
    ok.then_some((dst, Some(num("dnp3.al.func")? as u8)))
}

fn any_filter(codes: impl IntoIterator<Item = u8>) -> Filter {
    inspect::filter(DNP3, &codes.into_iter().collect::<Vec<_>>())
}

fn outstation_filter(dst: u16) -> Filter {
    let mut f = any_filter(0..=255);
    f.flags &= !FILTER_ANY_ADDRESS;
    f.outstations[0] = dst;
    f.n_outstations = 1;
    f
}

#[test]
fn dnp3_check_agrees_with_tshark() {
    let mut rng = StdRng::seed_from_u64(0x0564_1815);
    let mut classes = Vec::with_capacity(FRAMES);
    let mut payloads = Vec::with_capacity(FRAMES);
    for _ in 0..FRAMES {
        let class = if rng.random_bool(0.35) {
            Class::Request
        } else {
            *CLASSES.choose(&mut rng).unwrap()
        };
        classes.push(class);
        payloads.push(payload(&mut rng, class));
    }
    // Each segment its own connection and address pair: no reassembly across frames.
    let frames: Vec<_> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| frame(i, p))
        .collect();
    let path = std::env::temp_dir().join(format!("{}.pcap", unique_name("cdtdnp")));
    struct Remove<'a>(&'a std::path::Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _remove = Remove(&path);
    std::fs::write(&path, pcap(&frames)).unwrap();

    let mut cmd = Command::new("tshark");
    // No TCP or DNP3 reassembly: each segment is dissected alone.
    let options = "-d tcp.port==20000,dnp3 -o tcp.desegment_tcp_streams:FALSE \
        -o dnp3.desegment:FALSE -T fields -E separator=/t -E occurrence=a -E aggregator=,";
    cmd.arg("-r").arg(&path).args(options.split_whitespace());
    for f in FIELDS.split_whitespace() {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("running tshark: {e}. This test needs tshark (Debian: apt-get install tshark)")
    });
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), FRAMES, "tshark's lines:\n{text}");

    let all = any_filter(0..=255);
    let (mut disagree, mut unintended, mut passed, mut with_data) = (0, 0, 0, 0);
    let mut seen = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let at = format!("frame {} ({:?})", i + 1, classes[i]);
        let v: BTreeMap<&str, Vec<&str>> = FIELDS
            .split_whitespace()
            .zip(line.split('\t'))
            .map(|(k, x)| (k, x.split(',').filter(|s| !s.is_empty()).collect()))
            .collect();
        assert_eq!(v["frame.number"], [(i + 1).to_string().as_str()]);
        let want = expected(&v);
        let packet = parse(&frames[i][..]).expect("parse");
        let got = inspect::check(Some(&all), &packet);
        *seen.entry(classes[i]).or_insert(0) += 1;
        // tshark must also see what the generator meant: only requests and link services pass.
        let intended = matches!(classes[i], Class::Request | Class::Link);
        if want.is_some() != intended {
            unintended += 1;
            eprintln!("{at}: tshark's view {v:?}");
        }
        let ok = match want {
            None => got == Some(Reason::Malformed),
            Some(_) => got.is_none(),
        };
        if !ok {
            disagree += 1;
            eprintln!(
                "{at}: tshark implies {}, Conduit says {got:?}\n  payload {}\n  tshark {v:?}",
                if want.is_some() { "pass" } else { "malformed" },
                payloads[i]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>(),
            );
            continue;
        }
        let Some((dst, function)) = want else {
            continue;
        };
        passed += 1;
        let p = &payloads[i];
        assert_eq!(dst, u16::from_le_bytes([p[4], p[5]]), "{at}");
        let check = |f: &Filter| inspect::check(Some(f), &packet);
        assert_eq!(check(&outstation_filter(dst)), None, "{at}");
        let other = outstation_filter(dst.wrapping_add(1));
        assert_eq!(check(&other), Some(Reason::Dnp3Address), "{at}");
        if let Some(code) = function {
            with_data += 1;
            assert_eq!(code, p[12], "{at}");
            assert_eq!(check(&any_filter([code])), None, "{at}");
            let without = any_filter((0..=255).filter(|&c| c != code));
            assert_eq!(check(&without), Some(Reason::Dnp3Function), "{at}");
        }
    }
    eprintln!("{passed} of {FRAMES} frames pass ({with_data} with user data); classes {seen:?}");
    assert_eq!(
        disagree, 0,
        "Conduit and tshark disagree on {disagree} frames (above)"
    );
    assert_eq!(
        unintended, 0,
        "{unintended} frames not what their class means (above)"
    );
    for c in CLASSES {
        assert!(seen.contains_key(&c), "no frame of class {c:?}");
    }
    assert!(
        with_data >= 50 && passed - with_data >= 20,
        "too few passing frames"
    );
}
