//! Modbus/TCP inspection of client-to-server segments on rules with a `modbus` section.
//!
//! One ADU per segment: a segment with payload must hold exactly one Modbus/TCP ADU, starting
//! with a valid MBAP header (protocol id 0, length 2..=254 counting the unit id and the PDU,
//! nothing after it). Anything else (several pipelined ADUs in one segment, an ADU split over
//! segments, a payload shorter than the MBAP header and function code) cannot be judged from
//! this segment alone and is `malformed`: fail closed. Modbus clients send one request and
//! wait for its answer, so this holds for the polling traffic of HMIs and SCADA masters.
use super::WINDOW;
use crate::{
    abi::{FILTER_ANY_ADDRESS, Filter, Reason, bit},
    verdict::{PROTO_TCP, Packet},
};

/// The MBAP header (7 bytes) and the function code.
pub const MBAP_AND_FUNCTION: usize = 8;
/// Modbus/TCP's registered port: where learning and discover look for requests (a rule's
/// `modbus` filter applies on whatever port the rule names).
pub const PORT: u16 = 502;
/// The largest MBAP length field: unit id (1) + the largest PDU (253).
pub const MAX_MBAP_LENGTH: u16 = 254;

/// Named function-code sets of the policy language (`functions: [read]`).
///
/// `read`: the read-only preset of Hirschmann's Modbus enforcer: read coils (1), discrete
/// inputs (2), holding registers (3), input registers (4), read exception status (7), get
/// comm event counter (11) and log (12), report server id (17), read file record (20), read
/// FIFO queue (24). None of them changes the state of the PLC. 23 (read/write multiple
/// registers) writes and is not in it; 43 (encapsulated interface, e.g. read device
/// identification) can carry other requests and is not in it either.
pub const READ: &[u8] = &[1, 2, 3, 4, 7, 11, 12, 17, 20, 24];
/// `write`: every public function that changes coils, registers or files: 5, 6, 15, 16,
/// 21 (write file record), 22 (mask write register), 23 (read/write multiple registers).
pub const WRITE: &[u8] = &[5, 6, 15, 16, 21, 22, 23];
/// `diagnostics`: 7, 8 (diagnostics, whose sub-functions include restarting the
/// communications of the device), 11, 12, 17, 43 (encapsulated interface transport).
pub const DIAGNOSTICS: &[u8] = &[7, 8, 11, 12, 17, 43];
/// `programming`: vendor function codes that program or stop a PLC: 90 (Schneider UMAS),
/// 125 and 126 (Modicon programming). Other user-defined codes (65..=72, 100..=110) are
/// listed by number.
pub const PROGRAMMING: &[u8] = &[90, 125, 126];

/// The named sets, for the policy language and its error messages.
pub const SETS: &[(&str, &[u8])] = &[
    ("read", READ),
    ("write", WRITE),
    ("diagnostics", DIAGNOSTICS),
    ("programming", PROGRAMMING),
];

/// The verdict of a rule's Modbus filter on a client-to-server TCP segment with payload
/// (see [`super::check`]): `None` when it passes, else the reason to deny it.
#[inline(always)]
pub fn check(f: &Filter, p: &Packet) -> Option<Reason> {
    let Some((unit, function)) = adu(p.payload_len, &p.app) else {
        return Some(Reason::Malformed);
    };
    if f.flags & FILTER_ANY_ADDRESS == 0 && !bit(&f.units, usize::from(unit)) {
        return Some(Reason::ModbusUnit);
    }
    if !bit(&f.codes, usize::from(function)) {
        return Some(Reason::ModbusFunction);
    }
    None
}

/// The unit ID and function code of a segment that holds exactly one Modbus/TCP ADU (the
/// MBAP header of protocol 0 and a length of 2..=254 that matches the segment), as the
/// filters frame it; `None` for anything else.
#[inline(always)]
pub fn adu(payload_len: u16, app: &[u8; WINDOW]) -> Option<(u8, u8)> {
    if usize::from(payload_len) < MBAP_AND_FUNCTION {
        return None;
    }
    let protocol = u16::from_be_bytes([app[2], app[3]]);
    let length = u16::from_be_bytes([app[4], app[5]]);
    if protocol != 0 || !(2..=MAX_MBAP_LENGTH).contains(&length) || length + 6 != payload_len {
        return None;
    }
    Some((app[6], app[7]))
}

/// A client's request in a TCP segment to [`PORT`]: `(unit, function)`, the function a
/// public or user-defined code (below 128; 128 and up are exception responses).
#[inline(always)]
pub fn request(p: &Packet) -> Option<(u8, u8)> {
    if p.proto != PROTO_TCP || p.dport != PORT || p.payload_len == 0 {
        return None;
    }
    adu(p.payload_len, &p.app).filter(|&(_, f)| f < 128)
}

/// The 8 payload bytes of a request: MBAP header (transaction 0, protocol 0, length 2) and
/// the function code, as `explain --modbus-function` describes a request.
pub fn request_header(unit: u8, function: u8) -> [u8; 8] {
    [0, 0, 0, 0, 0, 2, unit, function]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        abi::set_bit,
        inspect::{MODBUS, Request, check as inspect, filter},
    };

    fn hit(functions: &[u8], units: Option<&[u8]>) -> Filter {
        let mut h = filter(MODBUS, functions);
        if let Some(u) = units {
            h.flags = 0;
            u.iter()
                .for_each(|&u| set_bit(&mut h.units, usize::from(u)));
        }
        h
    }

    fn req(unit: u8, function: u8) -> Packet {
        let (payload_len, app) = Request::Modbus { unit, function }.payload();
        Packet {
            proto: PROTO_TCP,
            payload_len,
            app,
            ..Default::default()
        }
    }

    #[test]
    fn read_only_rule() {
        let h = hit(READ, None);
        for f in READ {
            assert_eq!(inspect(Some(&h), &req(1, *f)), None, "function {f}");
        }
        for f in [5u8, 6, 15, 16, 23, 8, 90, 0, 128, 255] {
            assert_eq!(
                inspect(Some(&h), &req(1, f)),
                Some(Reason::ModbusFunction),
                "{f}"
            );
        }
    }

    #[test]
    fn unit_ids() {
        let h = hit(READ, Some(&[1, 2]));
        assert_eq!(inspect(Some(&h), &req(1, 3)), None);
        assert_eq!(inspect(Some(&h), &req(2, 3)), None);
        assert_eq!(inspect(Some(&h), &req(3, 3)), Some(Reason::ModbusUnit));
        assert_eq!(inspect(Some(&h), &req(255, 3)), Some(Reason::ModbusUnit));
    }

    #[test]
    fn framing_fails_closed() {
        let h = hit(READ, None);
        let mut p = req(1, 3);
        // No payload (SYN, ACK, FIN): nothing to inspect.
        p.payload_len = 0;
        assert_eq!(inspect(Some(&h), &p), None);
        // Shorter than MBAP + function.
        p.payload_len = 5;
        assert_eq!(inspect(Some(&h), &p), Some(Reason::Malformed));
        // Two ADUs in one segment, or an ADU split over segments: length disagrees.
        let mut p = req(1, 3);
        p.payload_len = 16;
        assert_eq!(inspect(Some(&h), &p), Some(Reason::Malformed));
        // Protocol id other than 0.
        let mut p = req(1, 3);
        p.app[3] = 1;
        assert_eq!(inspect(Some(&h), &p), Some(Reason::Malformed));
        // Length 1 (no function code) and 255 (too long).
        for len in [1u16, 255] {
            let mut p = req(1, 3);
            p.app[4..6].copy_from_slice(&len.to_be_bytes());
            p.payload_len = len + 6;
            assert_eq!(
                inspect(Some(&h), &p),
                Some(Reason::Malformed),
                "length {len}"
            );
        }
        // A filter that is missing from the map denies: fail closed.
        assert_eq!(inspect(None, &req(1, 3)), Some(Reason::Malformed));
    }
}
