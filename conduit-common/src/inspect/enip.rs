//! EtherNet/IP with CIP over TCP: inspection of client-to-server segments on rules with an
//! `enip` filter.
//!
//! One encapsulation message per segment: a segment with payload must hold exactly one
//! message, its 24-byte header's length accounting for the rest of the segment. Then, by
//! command:
//!
//! - NOP, ListServices, ListIdentity, ListInterfaces, RegisterSession, UnRegisterSession pass:
//!   they open and close sessions or describe the device, and carry no CIP request;
//! - SendRRData (unconnected, UCMM) and SendUnitData (connected) carry one CIP request in the
//!   common packet format: exactly two items, a null address item and an unconnected data
//!   item, or a connected address item and a connected data item (its 2-byte sequence count
//!   first), the data item ending the segment. The request's service code must be one the
//!   filter allows (`enip_service`);
//! - any other command is `malformed`.
//!
//! Service codes: what a code means depends on the object a request is sent to. Below 0x4B
//! the codes are CIP's common services (Get_Attribute_Single, Set_Attribute_Single, Reset,
//! ...), the same for every object. From 0x4B they are object-specific: the Connection
//! Manager's (class 6: Forward_Open, Forward_Close, Unconnected_Send) differ from a Logix
//! controller's tag services (Read Tag 0x4C, Write Tag 0x4D, Read Modify Write Tag 0x4E, Read
//! and Write Tag Fragmented 0x52, 0x53). A filter's codes therefore live in two halves: a
//! service to the Connection Manager (its path's first segment is class 6) is code
//! `0x80 | service` ([`CONNECTION_MANAGER`]), any other is the service code itself, read as
//! Logix reads it. Responses (bit 7 of the service) from a client are `malformed`.
//!
//! Requests inside requests: an Unconnected_Send to the Connection Manager carries one
//! embedded request, and that request is judged (the wrapper only routes it). A Multiple
//! Service Packet (0x0A) is judged service by service: each embedded request must lie within
//! the inspected window (the segment's first [`WINDOW`] bytes) and be allowed; one that lies
//! beyond, more than [`MAX_SERVICES`] of them, or a request nested a second time
//! (an Unconnected_Send or a Multiple Service Packet inside either) is `malformed`: fail
//! closed.
use super::{WINDOW, byte};
use crate::abi::{Filter, Reason, bit};

/// EtherNet/IP's registered TCP port (the filter applies on whatever port the rule names).
pub const PORT: u16 = 44818;
/// The encapsulation header: command, length, session, status, sender context, options.
pub const HEADER: usize = 24;

pub const NOP: u16 = 0x0000;
pub const LIST_SERVICES: u16 = 0x0004;
pub const LIST_IDENTITY: u16 = 0x0063;
pub const LIST_INTERFACES: u16 = 0x0064;
pub const REGISTER_SESSION: u16 = 0x0065;
pub const UNREGISTER_SESSION: u16 = 0x0066;
pub const SEND_RR_DATA: u16 = 0x006F;
pub const SEND_UNIT_DATA: u16 = 0x0070;

/// Common packet format item types.
pub const ITEM_NULL_ADDRESS: u16 = 0x0000;
pub const ITEM_CONNECTED_ADDRESS: u16 = 0x00A1;
pub const ITEM_CONNECTED_DATA: u16 = 0x00B1;
pub const ITEM_UNCONNECTED_DATA: u16 = 0x00B2;

/// The Connection Manager's class.
pub const CONNECTION_MANAGER_CLASS: u8 = 6;
/// The filter code of a service to the Connection Manager: `CONNECTION_MANAGER | service`.
pub const CONNECTION_MANAGER: u8 = 0x80;
pub const MULTIPLE_SERVICE_PACKET: u8 = 0x0A;
pub const UNCONNECTED_SEND: u8 = 0x52;
pub const FORWARD_OPEN: u8 = 0x54;
pub const LARGE_FORWARD_OPEN: u8 = 0x5B;
pub const FORWARD_CLOSE: u8 = 0x4E;
/// The most requests of a Multiple Service Packet that are judged; more is `malformed`.
pub const MAX_SERVICES: usize = 4;

/// Named service sets of the policy language (`services: [read]`).
///
/// `read`: Get_Attributes_All (0x01), Get_Attribute_List (0x03), Get_Attribute_Single (0x0E),
/// Find_Next_Object_Instance (0x11), Get_Member (0x18), and Logix's Read Tag (0x4C), Read Tag
/// Fragmented (0x52) and Get_Instance_Attribute_List (0x55, the tag list).
pub const READ: &[u8] = &[0x01, 0x03, 0x0E, 0x11, 0x18, 0x4C, 0x52, 0x55];
/// `write`: Set_Attributes_All (0x02), Set_Attribute_List (0x04), Set_Attribute_Single (0x10),
/// Set_Member (0x19), Insert_Member (0x1A), Remove_Member (0x1B), and Logix's Write Tag
/// (0x4D), Read Modify Write Tag (0x4E) and Write Tag Fragmented (0x53).
pub const WRITE: &[u8] = &[0x02, 0x04, 0x10, 0x19, 0x1A, 0x1B, 0x4D, 0x4E, 0x53];
/// `admin`: Reset (0x05), Start (0x06), Stop (0x07), Create (0x08), Delete (0x09),
/// Apply_Attributes (0x0D), Restore (0x15), Save (0x16): what restarts a device, starts or
/// stops it, or changes its objects and configuration.
pub const ADMIN: &[u8] = &[0x05, 0x06, 0x07, 0x08, 0x09, 0x0D, 0x15, 0x16];
/// `connection`: Forward_Open (0x54), Large_Forward_Open (0x5B) and Forward_Close (0x4E) to
/// the Connection Manager: what connected messaging (SendUnitData) needs first. pycomm3 and
/// Logix HMIs open a connection before they read tags.
pub const CONNECTION: &[u8] = &[
    CONNECTION_MANAGER | FORWARD_OPEN,
    CONNECTION_MANAGER | LARGE_FORWARD_OPEN,
    CONNECTION_MANAGER | FORWARD_CLOSE,
];

/// The named sets, for the policy language and its error messages.
pub const SETS: &[(&str, &[u8])] = &[
    ("read", READ),
    ("write", WRITE),
    ("admin", ADMIN),
    ("connection", CONNECTION),
];

#[inline(always)]
fn le16(a: &[u8; WINDOW], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([byte(a, at)?, byte(a, at + 1)?]))
}

/// A CIP request at `m` within the segment's `len` bytes: its service, whether it goes to
/// the Connection Manager, and where its path ends (its data starts). `None`: it does not
/// lie within the window and the segment, or it is a response.
#[inline(always)]
fn request_at(a: &[u8; WINDOW], len: usize, m: usize) -> Option<(u8, bool, usize)> {
    let (service, words) = (byte(a, m)?, usize::from(byte(a, m + 1)?));
    let end = m + 2 + 2 * words;
    if service & 0x80 != 0 || end > len {
        return None;
    }
    // The first segment of the path: an 8-bit (0x20) or 16-bit (0x21 0x00) class segment
    // naming class 6 is the Connection Manager; anything else (an instance, a symbolic tag
    // name) is not. A first segment past the window cannot be told: `None`.
    let cm = if words == 0 {
        false
    } else {
        match (byte(a, m + 2)?, byte(a, m + 3)?) {
            (0x20, class) => class == CONNECTION_MANAGER_CLASS,
            (0x21, 0) if words >= 2 => {
                (byte(a, m + 4)?, byte(a, m + 5)?) == (CONNECTION_MANAGER_CLASS, 0)
            }
            _ => false,
        }
    };
    Some((service, cm, end))
}

/// The filter code of `service` sent to the Connection Manager (`cm`) or elsewhere.
#[inline(always)]
pub fn code(service: u8, cm: bool) -> u8 {
    if cm {
        CONNECTION_MANAGER | service
    } else {
        service
    }
}

/// Whether a request nests others (and must not be nested itself).
#[inline(always)]
fn nests(service: u8, cm: bool) -> bool {
    (cm && service == UNCONNECTED_SEND) || (!cm && service == MULTIPLE_SERVICE_PACKET)
}

/// The verdict on the CIP request at `m`, judged through Unconnected_Send and Multiple
/// Service Packet: `Ok` when allowed, else the reason and the code denied (0 for
/// `malformed`).
#[inline(always)]
fn judge_cip(
    allowed: impl Fn(u8) -> bool,
    a: &[u8; WINDOW],
    len: usize,
    m: usize,
) -> Result<(), (Reason, u8)> {
    const MALFORMED: (Reason, u8) = (Reason::Malformed, 0);
    let (service, cm, end) = request_at(a, len, m).ok_or(MALFORMED)?;
    if cm && service == UNCONNECTED_SEND {
        // Priority/tick time, timeout ticks, the embedded request's size, the request.
        let size = usize::from(le16(a, end + 2).ok_or(MALFORMED)?);
        let inner = end + 4;
        let (s, cm, _) = request_at(a, len, inner).ok_or(MALFORMED)?;
        if nests(s, cm) || inner + size > len {
            return Err(MALFORMED);
        }
        return if allowed(code(s, cm)) {
            Ok(())
        } else {
            Err((Reason::EnipService, code(s, cm)))
        };
    }
    if !cm && service == MULTIPLE_SERVICE_PACKET {
        // The number of requests, then each one's offset from the number.
        let n = usize::from(le16(a, end).ok_or(MALFORMED)?);
        if n == 0 || n > MAX_SERVICES {
            return Err(MALFORMED);
        }
        let mut i = 0;
        while i < MAX_SERVICES {
            if i < n {
                let at = end + usize::from(le16(a, end + 2 + 2 * i).ok_or(MALFORMED)?);
                let (s, cm, _) = request_at(a, len, at).ok_or(MALFORMED)?;
                if nests(s, cm) {
                    return Err(MALFORMED);
                }
                if !allowed(code(s, cm)) {
                    return Err((Reason::EnipService, code(s, cm)));
                }
            }
            i += 1;
        }
        return Ok(());
    }
    if allowed(code(service, cm)) {
        Ok(())
    } else {
        Err((Reason::EnipService, code(service, cm)))
    }
}

/// The verdict of a rule's EtherNet/IP filter on a client-to-server segment with payload,
/// with the code it denied (see this module's documentation).
#[inline(always)]
pub fn judge(f: &Filter, p: &crate::verdict::Packet) -> Result<(), (Reason, u8)> {
    judge_with(|c| bit(&f.codes, usize::from(c)), p)
}

/// The code of the (first) request a segment carries, for the audit line of a denied one;
/// `None` when it carries none or is malformed.
#[inline(always)]
pub fn first_code(p: &crate::verdict::Packet) -> Option<u8> {
    match judge_with(|_| false, p) {
        Err((Reason::EnipService, c)) => Some(c),
        _ => None,
    }
}

/// [`judge`] with the allowed codes as a function.
#[inline(always)]
fn judge_with(
    allowed: impl Fn(u8) -> bool,
    p: &crate::verdict::Packet,
) -> Result<(), (Reason, u8)> {
    const MALFORMED: (Reason, u8) = (Reason::Malformed, 0);
    let a = &p.app;
    let len = usize::from(p.payload_len);
    let (Some(command), Some(length)) = (le16(a, 0), le16(a, 2)) else {
        return Err(MALFORMED);
    };
    if len < HEADER || HEADER + usize::from(length) != len {
        return Err(MALFORMED);
    }
    let connected = match command {
        NOP | LIST_SERVICES | LIST_IDENTITY | LIST_INTERFACES | REGISTER_SESSION
        | UNREGISTER_SESSION => return Ok(()),
        SEND_RR_DATA => false,
        SEND_UNIT_DATA => true,
        _ => return Err(MALFORMED),
    };
    // Interface handle (4), timeout (2), item count (2), the address item.
    let items = le16(a, HEADER + 6).ok_or(MALFORMED)?;
    let (address, address_len) = (
        le16(a, HEADER + 8).ok_or(MALFORMED)?,
        le16(a, HEADER + 10).ok_or(MALFORMED)?,
    );
    let (want_address, want_len, want_data, data_at) = if connected {
        (ITEM_CONNECTED_ADDRESS, 4, ITEM_CONNECTED_DATA, HEADER + 16)
    } else {
        (ITEM_NULL_ADDRESS, 0, ITEM_UNCONNECTED_DATA, HEADER + 12)
    };
    if items != 2 || address != want_address || address_len != want_len {
        return Err(MALFORMED);
    }
    let (data, data_len) = (
        le16(a, data_at).ok_or(MALFORMED)?,
        usize::from(le16(a, data_at + 2).ok_or(MALFORMED)?),
    );
    if data != want_data || data_at + 4 + data_len != len {
        return Err(MALFORMED);
    }
    // A connected data item starts with its sequence count.
    let m = data_at + 4 + if connected { 2 } else { 0 };
    judge_cip(allowed, a, len, m)
}

/// [`judge`] as [`super::check`] wants it.
#[inline(always)]
pub fn check(f: &Filter, p: &crate::verdict::Packet) -> Option<Reason> {
    judge(f, p).err().map(|(r, _)| r)
}

/// The payload of an unconnected request (SendRRData, UCMM) with `service` to the Identity
/// object (class 1, instance 1) or, for a Connection Manager code, to the Connection
/// Manager: what `explain --enip-service` judges. 40 bytes of header and items, 6 of CIP.
pub fn request(code: u8) -> [u8; 46] {
    let mut b = [0u8; 46];
    let cip_len = 6u16;
    b[0..2].copy_from_slice(&SEND_RR_DATA.to_le_bytes());
    b[2..4].copy_from_slice(&(46 - HEADER as u16).to_le_bytes());
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    b[HEADER + 6..HEADER + 8].copy_from_slice(&2u16.to_le_bytes());
    b[HEADER + 12..HEADER + 14].copy_from_slice(&ITEM_UNCONNECTED_DATA.to_le_bytes());
    b[HEADER + 14..HEADER + 16].copy_from_slice(&cip_len.to_le_bytes());
    let (service, class) = if code & CONNECTION_MANAGER != 0 {
        (code & !CONNECTION_MANAGER, CONNECTION_MANAGER_CLASS)
    } else {
        (code, 1)
    };
    b[40..46].copy_from_slice(&[service, 2, 0x20, class, 0x24, 1]);
    b
}

/// Messages as clients send them, for tests and tools (userspace only).
#[cfg(any(test, feature = "user"))]
pub mod build {
    use super::{HEADER, SEND_RR_DATA, SEND_UNIT_DATA};
    use alloc::{vec, vec::Vec};

    /// An encapsulation message with `command` and `data` (session 7).
    pub fn message(command: u16, data: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; HEADER];
        b[0..2].copy_from_slice(&command.to_le_bytes());
        b[2..4].copy_from_slice(&(data.len() as u16).to_le_bytes());
        b[4] = 7;
        b.extend_from_slice(data);
        b
    }

    /// SendRRData (unconnected: null address, unconnected data) or SendUnitData
    /// (`connected`: connected address, connected data with a sequence count) carrying the
    /// CIP request `cip`.
    pub fn send(connected: bool, cip: &[u8]) -> Vec<u8> {
        let mut d = vec![0, 0, 0, 0, 10, 0, 2, 0];
        if connected {
            d.extend_from_slice(&[0xA1, 0, 4, 0, 1, 2, 3, 4, 0xB1, 0]);
            d.extend_from_slice(&(cip.len() as u16 + 2).to_le_bytes());
            d.extend_from_slice(&[5, 0]);
        } else {
            d.extend_from_slice(&[0, 0, 0, 0, 0xB2, 0]);
            d.extend_from_slice(&(cip.len() as u16).to_le_bytes());
        }
        d.extend_from_slice(cip);
        let command = if connected {
            SEND_UNIT_DATA
        } else {
            SEND_RR_DATA
        };
        message(command, &d)
    }
}

#[cfg(test)]
mod tests {
    use super::build::{message, send};
    use super::*;
    use crate::inspect::{ENIP, check as inspect, filter, segment as packet};
    use std::{vec, vec::Vec};

    const READ_TAG: &[u8] = &[0x4C, 3, 0x91, 3, b'C', b'n', b't', 0, 1, 0];
    const WRITE_TAG: &[u8] = &[
        0x4D, 3, 0x91, 3, b'S', b'e', b't', 0, 0xCA, 0, 1, 0, 0, 0, 0xAC, 0x41,
    ];
    const IDENTITY_RESET: &[u8] = &[0x05, 2, 0x20, 1, 0x24, 1];
    const FORWARD_OPEN_CM: &[u8] = &[0x5B, 2, 0x20, 6, 0x24, 1, 0, 0];

    fn read_only() -> Filter {
        let mut codes: Vec<u8> = READ.to_vec();
        codes.extend_from_slice(CONNECTION);
        filter(ENIP, &codes)
    }

    #[test]
    fn read_only_rule() {
        let f = read_only();
        let pass = |b: &[u8]| assert_eq!(inspect(Some(&f), &packet(b)), None, "{b:x?}");
        let deny =
            |b: &[u8], r: Reason| assert_eq!(inspect(Some(&f), &packet(b)), Some(r), "{b:x?}");
        pass(&send(true, READ_TAG));
        pass(&send(false, READ_TAG));
        pass(&send(false, FORWARD_OPEN_CM));
        pass(&send(false, &[0x0E, 3, 0x20, 1, 0x24, 1, 0x30, 7]));
        deny(&send(true, WRITE_TAG), Reason::EnipService);
        deny(&send(false, IDENTITY_RESET), Reason::EnipService);
        // 0x4E to a tag is Read Modify Write (a write); to the Connection Manager it is
        // Forward_Close (allowed by `connection`).
        deny(
            &send(true, &[0x4E, 3, 0x91, 3, b'C', b'n', b't', 0]),
            Reason::EnipService,
        );
        pass(&send(false, &[0x4E, 2, 0x20, 6, 0x24, 1]));
        // 0x52 to the Connection Manager is Unconnected_Send: the embedded request counts.
        let mut wrapped = vec![0x52, 2, 0x20, 6, 0x24, 1, 7, 0xE9];
        wrapped.extend_from_slice(&(IDENTITY_RESET.len() as u16).to_le_bytes());
        wrapped.extend_from_slice(IDENTITY_RESET);
        deny(&send(false, &wrapped), Reason::EnipService);
        let mut wrapped_read = vec![0x52, 2, 0x20, 6, 0x24, 1, 7, 0xE9, 8, 0];
        wrapped_read.extend_from_slice(&[0x0E, 3, 0x20, 1, 0x24, 1, 0x30, 7]);
        pass(&send(false, &wrapped_read));
        // Session commands pass.
        for c in [
            NOP,
            LIST_SERVICES,
            LIST_IDENTITY,
            LIST_INTERFACES,
            UNREGISTER_SESSION,
        ] {
            pass(&message(c, &[]));
        }
        pass(&message(REGISTER_SESSION, &[1, 0, 0, 0]));
        // The denied code, for the audit line.
        let p = packet(&send(false, &wrapped));
        assert_eq!(judge(&f, &p), Err((Reason::EnipService, 0x05)));
    }

    #[test]
    fn multiple_service_packets_are_judged_service_by_service() {
        let f = read_only();
        let msp = |a: &[u8], b: &[u8]| {
            let mut m = vec![0x0A, 2, 0x20, 2, 0x24, 1, 2, 0, 6, 0];
            m.extend_from_slice(&(6 + a.len() as u16).to_le_bytes());
            m.extend_from_slice(a);
            m.extend_from_slice(b);
            send(false, &m)
        };
        let short_read = [0x0E, 2, 0x20, 1, 0x24, 1];
        assert_eq!(
            inspect(Some(&f), &packet(&msp(&short_read, &short_read))),
            None
        );
        assert_eq!(
            inspect(Some(&f), &packet(&msp(&short_read, IDENTITY_RESET))),
            Some(Reason::EnipService)
        );
        // A request beyond the window cannot be judged.
        assert_eq!(
            inspect(Some(&f), &packet(&msp(READ_TAG, READ_TAG))),
            Some(Reason::Malformed)
        );
    }

    #[test]
    fn framing_fails_closed() {
        let f = read_only();
        let good = send(true, READ_TAG);
        let malformed = |b: &[u8], why: &str| {
            assert_eq!(
                inspect(Some(&f), &packet(b)),
                Some(Reason::Malformed),
                "{why}"
            );
        };
        malformed(&good[..20], "shorter than the header");
        malformed(&good[..good.len() - 1], "a message cut short");
        let mut two = message(LIST_IDENTITY, &[]);
        two.extend_from_slice(&send(false, IDENTITY_RESET));
        malformed(&two, "a second message behind the first");
        let mut b = good.clone();
        b[0] = 0x72;
        malformed(&b, "another command");
        let mut b = send(false, READ_TAG);
        b[HEADER + 6] = 3;
        malformed(&b, "three items");
        let mut b = send(false, READ_TAG);
        b[HEADER + 12] = 0xB1;
        malformed(&b, "connected data without a connected address");
        malformed(&send(false, &[0xCC, 0]), "a response");
        malformed(&send(false, &[0x4C, 9, 0x91, 3]), "a path past the segment");
        let mut nested = vec![0x52, 2, 0x20, 6, 0x24, 1, 7, 0xE9, 10, 0];
        nested.extend_from_slice(&[0x52, 2, 0x20, 6, 0x24, 1, 7, 0xE9, 0, 0]);
        malformed(
            &send(false, &nested),
            "Unconnected_Send inside Unconnected_Send",
        );
        assert_eq!(inspect(None, &packet(&good)), Some(Reason::Malformed));
    }

    #[test]
    fn explain_requests() {
        let f = read_only();
        for (code, want) in [
            (0x0E, None),
            (0x05, Some(Reason::EnipService)),
            (CONNECTION_MANAGER | FORWARD_OPEN, None),
            (
                CONNECTION_MANAGER | UNCONNECTED_SEND,
                Some(Reason::Malformed),
            ),
        ] {
            assert_eq!(
                inspect(Some(&f), &packet(&request(code))),
                want,
                "{code:#x}"
            );
        }
    }
}
