//! DNP3 (IEEE 1815) over TCP: inspection of master-to-outstation segments on rules with a
//! `dnp3` filter.
//!
//! One link frame per segment. A segment with payload must hold exactly one DNP3 link frame:
//! start bytes `05 64`, a length of 5 or more, and a size that the length accounts for
//! (header, user data in blocks of 16 bytes, a CRC after each block), with nothing after it.
//! The frame is checked as follows; anything else is `malformed` (fail closed):
//!
//! - the header's CRC (bytes 0..8 against bytes 8..10);
//! - the direction bit set (DIR: the frame comes from a master; the filter judges the
//!   connection's initiator, which must be the master);
//! - the destination against the filter's `outstations` (`dnp3_address`);
//! - link-layer services without user data pass: a secondary frame (the master's link ACK),
//!   reset link states, test link states, request link status. They have no effect on the
//!   application;
//! - user data (confirmed or unconfirmed): the CRC of its first block; the transport header
//!   must start a message (FIR), the application header must start a fragment (FIR), and the
//!   application function code must be one the filter allows (`dnp3_function`).
//!
//! What is not judged: CRCs of data blocks after the first (the window holds the first
//! block only: a corrupted object header later in the frame is the outstation's to reject);
//! the objects themselves (a `write` of a time object and of a setpoint are both function 2).
//! What fails closed: several link frames in one segment, a frame split over segments, and a
//! transport segment or application fragment that is not the first of its message (their
//! function code is in an earlier segment). Masters send one short request at a time and
//! wait for its answer, so polling and control traffic is one frame per segment; a request
//! too large for one frame (a long write, a file transfer) is refused. A rule without `dnp3`
//! lets such traffic through uninspected.
use super::WINDOW;
use crate::abi::{FILTER_ANY_ADDRESS, Filter, Reason, bit};

/// DNP3's registered TCP port (the filter applies on whatever port the rule names).
pub const PORT: u16 = 20000;
/// The link header: start (2), length (1), control (1), destination (2), source (2), CRC (2).
pub const HEADER: usize = 10;
/// User data travels in blocks of this many bytes, each followed by its CRC.
pub const BLOCK: usize = 16;
pub const START: [u8; 2] = [0x05, 0x64];
/// The least value of the length field: control, destination and source, no user data.
pub const MIN_LENGTH: u8 = 5;

/// Link control: the frame comes from the master.
pub const DIR: u8 = 0x80;
/// Link control: a primary (initiating) frame.
pub const PRM: u8 = 0x40;
/// Primary link functions (the control byte's low 4 bits).
pub const RESET_LINK_STATES: u8 = 0;
pub const TEST_LINK_STATES: u8 = 2;
pub const CONFIRMED_USER_DATA: u8 = 3;
pub const UNCONFIRMED_USER_DATA: u8 = 4;
pub const REQUEST_LINK_STATUS: u8 = 9;
/// Transport header: first segment of a message, last segment.
pub const TRANSPORT_FIR: u8 = 0x40;
pub const TRANSPORT_FIN: u8 = 0x80;
/// Application control: first fragment, last fragment.
pub const APP_FIR: u8 = 0x80;
pub const APP_FIN: u8 = 0x40;

/// The master address of the requests `explain` builds (the filter does not look at it).
pub const EXPLAIN_MASTER: u16 = 1;

/// Named function-code sets of the policy language (`functions: [read]`), from IEEE 1815's
/// table of application function codes.
///
/// `read`: confirm (0) and read (1). A master confirms the event data it reads (and the
/// outstation's unsolicited responses): without 0 a polling master cannot clear events.
pub const READ: &[u8] = &[0, 1];
/// `write`: write (2), which writes any object: time, IIN bits (a master clears "device
/// restart" this way), setpoints and attributes alike.
pub const WRITE: &[u8] = &[2];
/// `control`: select (3), operate (4), direct operate (5) and direct operate without
/// acknowledgement (6): output commands, breakers and setpoints (CROB, analog outputs).
pub const CONTROL: &[u8] = &[3, 4, 5, 6];
/// `freeze`: immediate freeze (7, 8 no ack), freeze and clear (9, 10), freeze at time (11,
/// 12): counters.
pub const FREEZE: &[u8] = &[7, 8, 9, 10, 11, 12];
/// `restart`: cold restart (13) and warm restart (14).
pub const RESTART: &[u8] = &[13, 14];
/// `application`: initialize data (15), initialize application (16), start (17) and stop
/// (18) application, save configuration (19), activate configuration (31).
pub const APPLICATION: &[u8] = &[15, 16, 17, 18, 19, 31];
/// `unsolicited`: enable (20) and disable (21) unsolicited responses, assign class (22):
/// what a master sends when it starts up, to set up event reporting.
pub const UNSOLICITED: &[u8] = &[20, 21, 22];
/// `time`: delay measurement (23) and record current time (24), for time synchronisation
/// (the time itself is then written with function 2).
pub const TIME: &[u8] = &[23, 24];
/// `files`: open (25), close (26), delete (27), get info (28), authenticate (29) and abort
/// (30) file transfers.
pub const FILES: &[u8] = &[25, 26, 27, 28, 29, 30];
/// `auth`: secure authentication request (32) and error (33).
pub const AUTH: &[u8] = &[32, 33];

/// The named sets, for the policy language and its error messages.
pub const SETS: &[(&str, &[u8])] = &[
    ("read", READ),
    ("write", WRITE),
    ("control", CONTROL),
    ("freeze", FREEZE),
    ("restart", RESTART),
    ("application", APPLICATION),
    ("unsolicited", UNSOLICITED),
    ("time", TIME),
    ("files", FILES),
    ("auth", AUTH),
];

/// The CRC of DNP3's link layer (polynomial 0x3D65, bit-reversed, initial 0, complemented),
/// by table: a step is a shift and a load, which costs the verifier far less than 8 shifts.
const CRC_TABLE: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u16;
        let mut b = 0;
        while b < 8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xA6BC
            } else {
                c >> 1
            };
            b += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

#[inline(always)]
fn crc_step(crc: u16, byte: u8) -> u16 {
    (crc >> 8) ^ CRC_TABLE[usize::from((crc as u8) ^ byte)]
}

/// The link-layer CRC of `bytes`, as the frame carries it (little-endian after the bytes).
pub fn crc(bytes: &[u8]) -> u16 {
    !bytes.iter().fold(0, |c, &b| crc_step(c, b))
}

/// The size on the wire of a frame with `user` bytes of user data.
#[inline(always)]
pub const fn frame_len(user: usize) -> usize {
    HEADER + user + 2 * user.div_ceil(BLOCK)
}

#[inline(always)]
fn le16(a: &[u8; WINDOW], at: usize) -> u16 {
    u16::from_le_bytes([a[at], a[at + 1]])
}

/// Whether the filter allows frames to link address `dest`.
#[inline(always)]
fn outstation_allowed(f: &Filter, dest: u16) -> bool {
    if f.flags & FILTER_ANY_ADDRESS != 0 {
        return true;
    }
    let mut i = 0;
    while i < f.outstations.len() {
        if i < usize::from(f.n_outstations) && f.outstations[i] == dest {
            return true;
        }
        i += 1;
    }
    false
}

/// The verdict of a rule's DNP3 filter on a master-to-outstation TCP segment with payload
/// (see [`super::check`] and this module's documentation): `None` when it passes.
#[inline(always)]
pub fn check(f: &Filter, p: &crate::verdict::Packet) -> Option<Reason> {
    let a = &p.app;
    let len = usize::from(p.payload_len);
    if len < HEADER || a[0] != START[0] || a[1] != START[1] || a[2] < MIN_LENGTH {
        return Some(Reason::Malformed);
    }
    let user = usize::from(a[2] - MIN_LENGTH);
    let mut c = 0;
    let mut i = 0;
    while i < 8 {
        c = crc_step(c, a[i]);
        i += 1;
    }
    if frame_len(user) != len || !c != le16(a, 8) {
        return Some(Reason::Malformed);
    }
    let control = a[3];
    if control & DIR == 0 {
        return Some(Reason::Malformed);
    }
    if !outstation_allowed(f, le16(a, 4)) {
        return Some(Reason::Dnp3Address);
    }
    let function = control & 0x0f;
    if control & PRM == 0
        || matches!(
            function,
            RESET_LINK_STATES | TEST_LINK_STATES | REQUEST_LINK_STATUS
        )
    {
        // A link-layer service: it carries nothing for the application.
        return if user == 0 {
            None
        } else {
            Some(Reason::Malformed)
        };
    }
    // User data: a transport header, an application header and a function code at least.
    if !matches!(function, CONFIRMED_USER_DATA | UNCONFIRMED_USER_DATA) || user < 3 {
        return Some(Reason::Malformed);
    }
    let n = if user < BLOCK { user } else { BLOCK };
    let mut c = 0;
    let mut i = 0;
    while i < BLOCK {
        if i < n {
            c = crc_step(c, a[HEADER + i]);
        }
        i += 1;
    }
    // `n` is at most 16, so the block's CRC lies within the window (bytes 12..=27).
    let (Some(lo), Some(hi)) = (super::byte(a, HEADER + n), super::byte(a, HEADER + n + 1)) else {
        return Some(Reason::Malformed);
    };
    if !c != u16::from_le_bytes([lo, hi])
        || a[HEADER] & TRANSPORT_FIR == 0
        || a[HEADER + 1] & APP_FIR == 0
    {
        return Some(Reason::Malformed);
    }
    if !bit(&f.codes, usize::from(a[HEADER + 2])) {
        return Some(Reason::Dnp3Function);
    }
    None
}

/// A request frame from `master` to `outstation` carrying application function `function`
/// with no objects: unconfirmed user data, one transport segment, one application fragment
/// with sequence number `seq`, every CRC right.
pub fn request(outstation: u16, master: u16, function: u8, seq: u8) -> [u8; frame_len(3)] {
    let mut f = [0u8; frame_len(3)];
    let [d0, d1] = outstation.to_le_bytes();
    let [s0, s1] = master.to_le_bytes();
    f[..8].copy_from_slice(&[
        START[0],
        START[1],
        MIN_LENGTH + 3,
        DIR | PRM | UNCONFIRMED_USER_DATA,
        d0,
        d1,
        s0,
        s1,
    ]);
    let c = crc(&f[..8]).to_le_bytes();
    f[8..10].copy_from_slice(&c);
    f[10..13].copy_from_slice(&[
        TRANSPORT_FIR | TRANSPORT_FIN | (seq & 0x3f),
        APP_FIR | APP_FIN | (seq & 0x0f),
        function,
    ]);
    let c = crc(&f[10..13]).to_le_bytes();
    f[13..15].copy_from_slice(&c);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        inspect::{DNP3, Request, check as inspect, filter, segment as packet},
        verdict::{PROTO_TCP, Packet},
    };
    use std::{vec, vec::Vec};

    fn req(outstation: u16, function: u8) -> Packet {
        let (payload_len, app) = Request::Dnp3 {
            outstation,
            function,
        }
        .payload();
        Packet {
            proto: PROTO_TCP,
            payload_len,
            app,
            ..Default::default()
        }
    }

    /// Recomputes the header's CRC after an edit of bytes 0..8.
    fn fix_header(b: &mut [u8]) {
        let c = crc(&b[..8]).to_le_bytes();
        b[8..10].copy_from_slice(&c);
    }

    #[test]
    fn crc_matches_the_standard() {
        // IEEE 1815 Annex E's example, and a reset link states frame (master 1 to
        // outstation 1024) as opendnp3 and Wireshark's dissector compute it.
        assert_eq!(
            crc(&[0x05, 0x64, 0x05, 0xC0, 0x01, 0x00, 0x00, 0x04]),
            0x21E9
        );
    }

    #[test]
    fn read_only_rule() {
        let f = filter(DNP3, READ);
        assert_eq!(inspect(Some(&f), &req(10, 1)), None);
        assert_eq!(inspect(Some(&f), &req(10, 0)), None);
        for code in [2u8, 3, 4, 5, 6, 13, 14, 18, 20, 21, 25, 129, 130, 255] {
            assert_eq!(
                inspect(Some(&f), &req(10, code)),
                Some(Reason::Dnp3Function),
                "function {code}"
            );
        }
    }

    #[test]
    fn outstations() {
        let mut f = filter(DNP3, READ);
        f.flags = 0;
        f.outstations[..2].copy_from_slice(&[10, 1024]);
        f.n_outstations = 2;
        assert_eq!(inspect(Some(&f), &req(10, 1)), None);
        assert_eq!(inspect(Some(&f), &req(1024, 1)), None);
        for dest in [0u16, 11, 0xfffd, 0xffff] {
            assert_eq!(
                inspect(Some(&f), &req(dest, 1)),
                Some(Reason::Dnp3Address),
                "{dest}"
            );
        }
        // Entries past `n_outstations` do not count.
        f.n_outstations = 1;
        assert_eq!(inspect(Some(&f), &req(1024, 1)), Some(Reason::Dnp3Address));
    }

    #[test]
    fn link_services_pass_and_carry_nothing() {
        let f = filter(DNP3, READ);
        for control in [
            DIR | PRM | RESET_LINK_STATES,
            DIR | PRM | TEST_LINK_STATES,
            DIR | PRM | REQUEST_LINK_STATUS,
            DIR,
            DIR | 1,
        ] {
            let mut b = [0x05, 0x64, 5, control, 10, 0, 1, 0, 0, 0];
            fix_header(&mut b);
            assert_eq!(inspect(Some(&f), &packet(&b)), None, "control {control:#x}");
        }
        // A link service with user data, or an unknown primary function: malformed.
        let frame = req(10, 1);
        let mut b = frame.app;
        b[3] = DIR | PRM | RESET_LINK_STATES;
        fix_header(&mut b);
        let p = packet(&b[..usize::from(frame.payload_len)]);
        assert_eq!(inspect(Some(&f), &p), Some(Reason::Malformed));
        let mut b = [0x05, 0x64, 5, DIR | PRM | 7, 10, 0, 1, 0, 0, 0];
        fix_header(&mut b);
        assert_eq!(inspect(Some(&f), &packet(&b)), Some(Reason::Malformed));
    }

    #[test]
    fn framing_fails_closed() {
        let f = filter(DNP3, READ);
        let good = req(10, 1);
        let bytes = good.app[..usize::from(good.payload_len)].to_vec();
        let malformed = |b: &[u8], why: &str| {
            assert_eq!(
                inspect(Some(&f), &packet(b)),
                Some(Reason::Malformed),
                "{why}"
            );
        };
        malformed(&bytes[..9], "shorter than the header");
        malformed(&bytes[..14], "a frame cut short");
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        malformed(&two, "two frames in one segment");
        let mut b = bytes.clone();
        b[1] = 0x65;
        malformed(&b, "wrong start bytes");
        let mut b = bytes.clone();
        b[8] ^= 1;
        malformed(&b, "wrong header CRC");
        let mut b = bytes.clone();
        b[13] ^= 1;
        malformed(&b, "wrong data block CRC");
        let mut b = bytes.clone();
        b[3] &= !DIR;
        fix_header(&mut b);
        malformed(&b, "a frame from an outstation");
        let mut b = bytes.clone();
        b[2] = 4;
        fix_header(&mut b);
        malformed(&b, "length below 5");
        for (at, bit, why) in [
            (10, TRANSPORT_FIR, "not the first transport segment"),
            (11, APP_FIR, "not the first application fragment"),
        ] {
            let mut b = bytes.clone();
            b[at] &= !bit;
            let c = crc(&b[10..13]).to_le_bytes();
            b[13..15].copy_from_slice(&c);
            malformed(&b, why);
        }
        // User data of fewer than 3 bytes (no function code).
        let mut b = vec![
            0x05,
            0x64,
            7,
            DIR | PRM | UNCONFIRMED_USER_DATA,
            10,
            0,
            1,
            0,
        ];
        b.extend_from_slice(&crc(&b[..8]).to_le_bytes());
        b.extend_from_slice(&[0xC0, 0xC0]);
        b.extend_from_slice(&crc(&[0xC0, 0xC0]).to_le_bytes());
        malformed(&b, "no function code");
        // A missing filter denies.
        assert_eq!(inspect(None, &good), Some(Reason::Malformed));
    }

    #[test]
    fn long_frames_check_the_first_block() {
        // A read with objects: 3 + 30 bytes of user data, two blocks.
        let f = filter(DNP3, READ);
        let user: Vec<u8> = [0xC0u8, 0xC0, 1]
            .into_iter()
            .chain((0..30).map(|i| i as u8))
            .collect();
        let mut b = vec![0x05, 0x64, 5 + user.len() as u8, 0xC4, 10, 0, 1, 0];
        b.extend_from_slice(&crc(&b[..8]).to_le_bytes());
        for block in user.chunks(BLOCK) {
            b.extend_from_slice(block);
            b.extend_from_slice(&crc(block).to_le_bytes());
        }
        assert_eq!(b.len(), frame_len(user.len()));
        assert_eq!(inspect(Some(&f), &packet(&b)), None);
        let mut bad = b.clone();
        bad[26] ^= 0xff;
        assert_eq!(inspect(Some(&f), &packet(&bad)), Some(Reason::Malformed));
        // The second block's CRC is past the window: not judged.
        let mut late = b.clone();
        let n = late.len();
        late[n - 1] ^= 0xff;
        assert_eq!(inspect(Some(&f), &packet(&late)), None);
    }
}
