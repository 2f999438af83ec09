//! Protocol inspection: what a client may send on a conduit's rule, judged on every
//! client-to-server TCP segment with data, by the kernel and by the reference alike.
//!
//! The structure: one compiled filter layout for every protocol ([`Filter`] in
//! `CDT_FILTERS`, chosen by the rule's [`crate::ConduitHit::filter`]); one window of the
//! segment's first bytes in the parsed packet ([`Packet::app`], [`WINDOW`] bytes); one
//! dispatcher ([`check`]); and one module per protocol holding its framing, its check, its
//! named code sets and the request `explain` builds ([`Request`]). Adding a protocol means:
//! a module here with `check`, `SETS` and a request builder, an arm in [`check`] and
//! [`Request`], its reasons in [`crate::Reason`], and its section of the policy schema in the
//! agent (`policy::raw`, `policy::validate`, `policy::compile`).
//!
//! Fail closed everywhere: a segment a protocol's module cannot judge with certainty from
//! the window alone is `malformed`.
use crate::{
    abi::{Filter, Reason},
    verdict::{PROTO_TCP, Packet},
};

pub mod dnp3;
pub mod enip;
pub mod modbus;

/// [`Filter::proto`]: Modbus/TCP ([`modbus`]).
pub const MODBUS: u8 = 1;
/// [`Filter::proto`]: DNP3 over TCP ([`dnp3`]).
pub const DNP3: u8 = 2;
/// [`Filter::proto`]: EtherNet/IP with CIP ([`enip`]).
pub const ENIP: u8 = 3;

/// How many bytes of a TCP segment's payload the parser keeps ([`Packet::app`]): what the
/// deepest checks read. DNP3 needs 28 (the link header and the first data block with its
/// CRC); EtherNet/IP's connected requests start at byte 46, and an Unconnected_Send's
/// embedded request at 50 with its path after it, so 64 holds one request, wrapped or not,
/// and two or three short ones of a Multiple Service Packet.
pub const WINDOW: usize = 64;

/// `x`, through a register barrier the compiler cannot see through: it can no longer prove
/// anything of the value, so it keeps the checks that follow (which the BPF verifier needs
/// next to the access) instead of dropping them as known from earlier ones. One instruction
/// in BPF; nothing elsewhere.
#[inline(always)]
pub fn opaque(x: usize) -> usize {
    #[cfg(target_arch = "bpf")]
    let x = {
        let mut x = x;
        // SAFETY: one move of the register onto itself: it reads and writes no memory and
        // leaves `x` as it is (an empty template would leave a line-info record with no
        // instruction, which the kernel refuses).
        unsafe { core::arch::asm!("{0} = {0}", inout(reg) x, options(pure, nomem, nostack)) };
        x
    };
    x
}

/// Byte `at` of the window, `None` past it: the one way protocol checks read the window at
/// an offset they computed.
///
/// For the verifier, the index is masked to the window right before the load, behind a
/// register barrier the compiler cannot see through. A bounds check alone is not enough on
/// Debian 12's 6.1: when the compiler keeps the offset on the stack, checks it in one
/// register and loads it again into another for the access, that verifier does not carry the
/// check over, and it refused the program for a load "outside of the allowed memory range".
/// A mask gives the value its bound wherever it travels after.
#[inline(always)]
pub fn byte(a: &[u8; WINDOW], at: usize) -> Option<u8> {
    if at >= WINDOW {
        return None;
    }
    let at = opaque(at);
    const _: () = assert!(WINDOW.is_power_of_two());
    Some(a[at & (WINDOW - 1)])
}

/// The verdict of a rule's filter on a client-to-server packet: `None` when it passes (not
/// TCP, no payload, or an allowed request), else the reason to deny it. A filter that cannot
/// be found (`None`: the policy was swapped under the packet) or of a protocol this build
/// does not know denies every data segment: fail closed.
#[inline(always)]
pub fn check(filter: Option<&Filter>, p: &Packet) -> Option<Reason> {
    if p.proto != PROTO_TCP || p.payload_len == 0 {
        return None;
    }
    let Some(f) = filter else {
        return Some(Reason::Malformed);
    };
    match f.proto {
        MODBUS => modbus::check(f, p),
        DNP3 => dnp3::check(f, p),
        ENIP => enip::check(f, p),
        _ => Some(Reason::Malformed),
    }
}

/// [`check`]'s answer as a number, for the kernel's global function (which may return a
/// scalar only): 0 when the segment passes, else the reason's code.
#[inline(always)]
pub fn to_code(r: Option<Reason>) -> u32 {
    match r {
        None => 0,
        // `Reason::Conduit` (0) is never an inspection's answer; the kernel reads it back as
        // a pass, so it must not become one: fail closed.
        Some(Reason::Conduit) => Reason::Malformed as u32,
        Some(r) => r as u32,
    }
}

/// The inverse of [`to_code`]. A code that names no reason (which the verifier cannot rule
/// out of a global function's return value) denies as `malformed`: fail closed.
#[inline(always)]
pub fn from_code(code: u32) -> Option<Reason> {
    const N: usize = Reason::ALL.len();
    const _: () = {
        // The discriminants are 0..N, so every code below N names a reason.
        let mut i = 0;
        while i < N {
            assert!(Reason::ALL[i] as usize == i);
            i += 1;
        }
    };
    if code == 0 {
        return None;
    }
    if code as usize >= N {
        return Some(Reason::Malformed);
    }
    // SAFETY: `Reason` is `repr(u32)` with the discriminants 0..N (asserted above), and
    // `code < N`. (Not `Reason::try_from`: its table lookup lost its bounds check on the way
    // to the verifier, which refused the program.)
    Some(unsafe { core::mem::transmute::<u32, Reason>(code) })
}

/// The request a filter denied with `reason`, for the audit line: `(protocol, function code,
/// address)` (Modbus: unit ID; DNP3: outstation; EtherNet/IP: 0, the code is
/// [`enip::code`]'s). `None` for other reasons, `malformed`
/// included (its bytes mean nothing certain).
#[inline(always)]
pub fn request(reason: Reason, p: &Packet) -> Option<(u8, u8, u16)> {
    match reason {
        Reason::ModbusFunction | Reason::ModbusUnit => {
            Some((MODBUS, p.app[7], u16::from(p.app[6])))
        }
        Reason::Dnp3Function | Reason::Dnp3Address => Some((
            DNP3,
            p.app[dnp3::HEADER + 2],
            u16::from_le_bytes([p.app[4], p.app[5]]),
        )),
        Reason::EnipService => enip::first_code(p).map(|c| (ENIP, c, 0)),
        _ => None,
    }
}

/// One request of a client, as `conduit explain` judges it: the payload of a segment that
/// carries exactly that request, framed as its protocol's module expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Modbus {
        unit: u8,
        function: u8,
    },
    Dnp3 {
        outstation: u16,
        function: u8,
    },
    /// A filter code ([`enip::code`]): a service to the Identity object, or with
    /// [`enip::CONNECTION_MANAGER`] to the Connection Manager.
    Enip {
        code: u8,
    },
}

impl Request {
    /// The payload's length and its first [`WINDOW`] bytes.
    pub fn payload(&self) -> (u16, [u8; WINDOW]) {
        let mut app = [0u8; WINDOW];
        let len = match *self {
            Request::Modbus { unit, function } => {
                app[..modbus::MBAP_AND_FUNCTION]
                    .copy_from_slice(&modbus::request_header(unit, function));
                modbus::MBAP_AND_FUNCTION
            }
            Request::Dnp3 {
                outstation,
                function,
            } => {
                let frame = dnp3::request(outstation, dnp3::EXPLAIN_MASTER, function, 0);
                app[..frame.len()].copy_from_slice(&frame);
                frame.len()
            }
            Request::Enip { code } => {
                let m = enip::request(code);
                app[..m.len()].copy_from_slice(&m);
                m.len()
            }
        };
        (len as u16, app)
    }
}

/// The filter of one protocol with its codes and addresses, for tests and the compiler.
pub fn filter(proto: u8, codes: &[u8]) -> Filter {
    let mut f = Filter {
        proto,
        flags: crate::abi::FILTER_ANY_ADDRESS,
        ..Filter::default()
    };
    for &c in codes {
        crate::abi::set_bit(&mut f.codes, usize::from(c));
    }
    f
}

/// A client-to-server TCP segment carrying `bytes`, as the parser would fill it: for the
/// protocol modules' unit tests.
#[cfg(test)]
pub(crate) fn segment(bytes: &[u8]) -> Packet {
    let mut p = Packet {
        proto: PROTO_TCP,
        payload_len: bytes.len() as u16,
        ..Default::default()
    };
    let n = bytes.len().min(WINDOW);
    p.app[..n].copy_from_slice(&bytes[..n]);
    p
}
