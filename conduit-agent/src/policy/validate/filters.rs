//! The inspection filters of a tcp rule (`modbus`, `dnp3`, `enip`), and which filters of one
//! conduit's rules conflict.
use conduit_common::MAX_OUTSTATIONS;
use marked_yaml::Spanned;

use super::{Validator, pos};
use crate::policy::{
    addr,
    diag::Pos,
    model::*,
    raw::{self, S},
};

/// Whether two rules of one conduit both reach some TCP port with different inspection
/// filters.
pub(super) fn filter_conflict(a: &Rule, b: &Rule) -> bool {
    let tcp = |r: &Rule| matches!(r.proto, Proto::Any | Proto::Number(TCP));
    if (&a.modbus, &a.dnp3, &a.enip) == (&b.modbus, &b.dnp3, &b.enip) || !tcp(a) || !tcp(b) {
        return false;
    }
    match (&a.ports, &b.ports) {
        (None, _) | (_, None) => true,
        (Some(x), Some(y)) => x
            .iter()
            .any(|&(lo, hi)| y.iter().any(|&(l, h)| lo <= h && l <= hi)),
    }
}

impl Validator<'_> {
    /// `modbus:` of a rule whose protocol is `proto`. `None` (with an error) when the rule is
    /// not tcp; an error in the filter's lists clears `ok`.
    pub(super) fn modbus(
        &mut self,
        m: &Spanned<raw::Modbus>,
        proto: Proto,
        ok: &mut bool,
    ) -> Option<ModbusFilter> {
        self.tcp_only(proto, pos(m), "modbus", "Modbus/TCP")?;
        let functions = self.codes(
            &m.functions,
            "functions",
            "Modbus",
            "[read]",
            addr::modbus_functions,
            ok,
        );
        let unit_ids = self.addresses(
            &m.unit_ids,
            "`unit_ids: []` would allow no Modbus request; remove it to allow every unit ID, or list them",
            addr::modbus_unit,
            ok,
        );
        Some(ModbusFilter {
            functions,
            unit_ids,
        })
    }

    /// `dnp3:` of a rule whose protocol is `proto`, as [`Validator::modbus`].
    pub(super) fn dnp3(
        &mut self,
        d: &Spanned<raw::Dnp3>,
        proto: Proto,
        ok: &mut bool,
    ) -> Option<Dnp3Filter> {
        self.tcp_only(proto, pos(d), "dnp3", "DNP3 over TCP")?;
        let functions = self.codes(
            &d.functions,
            "functions",
            "DNP3",
            "[read]",
            addr::dnp3_functions,
            ok,
        );
        let outstations = self.addresses(
            &d.outstations,
            "`outstations: []` would allow no DNP3 request; remove it to allow every outstation, or list their link addresses",
            addr::dnp3_outstation,
            ok,
        );
        if let (Some(list), Some(v)) = (&d.outstations, &outstations)
            && v.len() > MAX_OUTSTATIONS
        {
            self.err(
                pos(list),
                format!(
                    "{} outstation addresses: a `dnp3` filter lists {MAX_OUTSTATIONS} at most; give the outstations behind one address a rule of their own (on their own port), or drop `outstations` to allow every address",
                    v.len()
                ),
            );
            *ok = false;
        }
        Some(Dnp3Filter {
            functions,
            outstations,
        })
    }

    /// `enip:` of a rule whose protocol is `proto`, as [`Validator::modbus`]: the CIP services.
    pub(super) fn enip(
        &mut self,
        e: &Spanned<raw::Enip>,
        proto: Proto,
        ok: &mut bool,
    ) -> Option<Vec<u8>> {
        self.tcp_only(proto, pos(e), "enip", "EtherNet/IP")?;
        Some(self.codes(
            &e.services,
            "services",
            "EtherNet/IP",
            "[read, connection]",
            addr::enip_services,
            ok,
        ))
    }

    /// Refuses a protocol filter (`key`) on a rule that is not tcp.
    fn tcp_only(&mut self, proto: Proto, at: Pos, key: &str, over: &str) -> Option<()> {
        if proto == Proto::Number(TCP) {
            return Some(());
        }
        self.err(
            at,
            format!(
                "`{key}` only applies to tcp rules ({over}), not to `{}`",
                proto.name()
            ),
        );
        None
    }

    /// A filter's codes (`functions`, `services`): named sets or codes, at least one; sorted, deduplicated.
    fn codes(
        &mut self,
        list: &Spanned<Vec<S>>,
        key: &str,
        protocol: &str,
        example: &str,
        parse: fn(&str) -> Result<Vec<u8>, String>,
        ok: &mut bool,
    ) -> Vec<u8> {
        if list.is_empty() {
            self.err(pos(list), format!("`{key}: []` would allow no {protocol} request; list the allowed sets or codes, e.g. {example}"));
            *ok = false;
        }
        let mut v = Vec::new();
        for f in list.iter() {
            match self.parse(f, parse) {
                Some(codes) => v.extend(codes),
                None => *ok = false,
            }
        }
        v.sort_unstable();
        v.dedup();
        v
    }

    /// A filter's address list (`unit_ids`, `outstations`), if given: at least one; sorted,
    /// deduplicated.
    fn addresses<T: Ord>(
        &mut self,
        list: &Option<Spanned<Vec<S>>>,
        empty: &str,
        parse: fn(&str) -> Result<T, String>,
        ok: &mut bool,
    ) -> Option<Vec<T>> {
        let list = list.as_ref()?;
        if list.is_empty() {
            self.err(pos(list), empty);
            *ok = false;
        }
        let mut v = Vec::new();
        for a in list.iter() {
            match self.parse(a, parse) {
                Some(x) => v.push(x),
                None => *ok = false,
            }
        }
        v.sort_unstable();
        v.dedup();
        Some(v)
    }
}
