//! The XDP object's stack budget, read from its instructions: each function's stack frame and
//! the deepest call chain, as the verifier adds them up.
//!
//! The verifier limits the stack of a whole call chain to 512 bytes, and older kernels (6.1
//! among them; newer ones round JIT'ed frames to 16) round every frame up to 32 bytes first
//! (a frame of 0 counts 32), so a chain that fits on
//! the development kernel can be rejected on Debian 12's 6.1 ("combined stack size of 2 calls
//! is 544. Too large"). The verifier only reports the figures when it rejects a program, and
//! aya drops its log on success, so they are computed here from the object itself: the same
//! frame sizes the verifier prints (`stack depth 128+304`), checked by a unit test on every
//! build and reported by `conduit kernel`.
//!
//! Written by hand because no crate computes BPF stack frames; the ELF is read with `object`.
use std::collections::{BTreeMap, HashMap};

use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SymbolKind};

/// What a relocated call instruction points at.
enum Target {
    Named(String),
    /// A section (index) and the symbol's offset in it.
    Section(usize, u64),
}

/// The verifier's limit for the stack of a call chain.
pub const MAX_STACK: u32 = 512;

/// One function of the object: its own frame and the functions it calls.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Frame {
    pub name: String,
    /// Bytes below the frame pointer the function touches.
    pub stack: u32,
    pub calls: Vec<String>,
}

/// The budget of one program (an entry point and everything it calls).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StackReport {
    pub program: String,
    /// Every function the program reaches, the entry point first.
    pub frames: Vec<Frame>,
    /// The call chain with the largest combined stack, entry point first.
    pub worst_chain: Vec<String>,
    /// Its frames added up as they are.
    pub worst_bytes: u32,
    /// Its frames each rounded up to 32 bytes (at least 32), as older kernels count:
    /// this must stay within [`MAX_STACK`].
    pub worst_bytes_rounded: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("the XDP object is not a readable ELF file: {0}")]
    Elf(#[from] object::Error),
    #[error("the XDP object has no function named {0}")]
    NoProgram(String),
    #[error("the call graph of {0} is recursive, which BPF does not allow")]
    Recursive(String),
}

const BPF_CALL: u8 = 0x85;
const BPF_PSEUDO_CALL: u8 = 1;
const FP: u8 = 10;

/// The stack budget of `program` (an entry point's symbol name) in `elf`.
pub fn stack_report(elf: &[u8], program: &str) -> Result<StackReport, BudgetError> {
    let file = object::File::parse(elf)?;
    // Every function by (section, offset), to resolve calls relocated against a section.
    let mut by_offset: HashMap<(usize, u64), String> = HashMap::new();
    for sym in file.symbols() {
        if sym.kind() == SymbolKind::Text
            && sym.size() > 0
            && let (Some(sec), Ok(name)) = (sym.section_index(), sym.name())
        {
            by_offset.insert((sec.0, sym.address()), name.to_owned());
        }
    }
    let mut funcs: HashMap<String, Frame> = HashMap::new();
    for section in file.sections() {
        if section.kind() != object::SectionKind::Text {
            continue;
        }
        let Ok(data) = section.data() else { continue };
        // Calls are relocated: the relocation at a call instruction names its target, a
        // function symbol or (for a static function) its section, the instruction's
        // immediate then saying where in it.
        let relocs: BTreeMap<u64, Target> = section
            .relocations()
            .filter_map(|(at, r)| {
                let RelocationTarget::Symbol(i) = r.target() else {
                    return None;
                };
                let sym = file.symbol_by_index(i).ok()?;
                let target = if sym.kind() == SymbolKind::Section {
                    Target::Section(sym.section_index()?.0, sym.address())
                } else {
                    Target::Named(sym.name().ok()?.to_owned())
                };
                Some((at, target))
            })
            .collect();
        for sym in file.symbols() {
            if sym.section_index() != Some(section.index())
                || sym.kind() != SymbolKind::Text
                || sym.size() == 0
            {
                continue;
            }
            let Ok(name) = sym.name() else { continue };
            let start = (sym.address() - section.address()) as usize;
            let end = start.saturating_add(sym.size() as usize).min(data.len());
            let frame = scan(
                name,
                &data[start..end],
                start as u64,
                &|at, imm| match relocs.get(&at)? {
                    Target::Named(n) => Some(n.clone()),
                    Target::Section(sec, base) => {
                        let off = i64::try_from(*base).ok()? + (imm + 1) * 8;
                        by_offset.get(&(*sec, u64::try_from(off).ok()?)).cloned()
                    }
                },
            );
            funcs.insert(name.to_owned(), frame);
        }
    }
    let entry = funcs
        .get(program)
        .ok_or_else(|| BudgetError::NoProgram(program.to_owned()))?;
    let mut order = vec![entry.name.clone()];
    let mut i = 0;
    while i < order.len() {
        let callees = funcs
            .get(&order[i])
            .map(|f| f.calls.clone())
            .unwrap_or_default();
        for c in callees {
            if !order.contains(&c) {
                order.push(c);
            }
        }
        i += 1;
    }
    let (worst_chain, worst_bytes_rounded) = worst(&funcs, program, &mut Vec::new(), &rounded)?;
    let worst_bytes = worst_chain
        .iter()
        .map(|n| funcs.get(n).map_or(0, |f| f.stack))
        .sum();
    Ok(StackReport {
        program: program.to_owned(),
        frames: order
            .iter()
            .filter_map(|n| funcs.get(n))
            .map(|f| Frame {
                name: short(&f.name),
                stack: f.stack,
                calls: f.calls.iter().map(|c| short(c)).collect(),
            })
            .collect(),
        worst_chain: worst_chain.iter().map(|n| short(n)).collect(),
        worst_bytes,
        worst_bytes_rounded,
    })
}

/// `program::full` for a mangled Rust symbol (`_RNvNtCs4ZpbR7wWKcl_7conduit7program4full`:
/// v0 mangling, the crate's disambiguator up to `_`, then length-prefixed identifiers); other
/// names as they are.
pub fn short(symbol: &str) -> String {
    let Some((_, mut rest)) = symbol.strip_prefix("_R").and_then(|r| r.split_once('_')) else {
        return symbol.to_owned();
    };
    let mut names = Vec::new();
    while let Some(d) = rest.find(|c: char| c.is_ascii_digit()) {
        rest = &rest[d..];
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: usize = rest[..digits].parse().unwrap_or(0);
        let end = (digits + n).min(rest.len());
        names.push(&rest[digits..end]);
        rest = &rest[end..];
    }
    match names.as_slice() {
        [.., a, b] => format!("{a}::{b}"),
        _ => symbol.to_owned(),
    }
}

/// A frame as older kernels (6.1) count it in a call chain.
fn rounded(stack: u32) -> u32 {
    stack.max(1).div_ceil(32) * 32
}

/// The deepest chain from `f` by `cost`, and its cost.
fn worst(
    funcs: &HashMap<String, Frame>,
    f: &str,
    path: &mut Vec<String>,
    cost: &dyn Fn(u32) -> u32,
) -> Result<(Vec<String>, u32), BudgetError> {
    if path.iter().any(|p| p == f) {
        return Err(BudgetError::Recursive(f.to_owned()));
    }
    let Some(frame) = funcs.get(f) else {
        // A call to something that is not in the object: a helper, no frame of ours.
        return Ok((Vec::new(), 0));
    };
    path.push(f.to_owned());
    let mut best = (Vec::new(), 0);
    for c in &frame.calls {
        let sub = worst(funcs, c, path, cost)?;
        if sub.1 > best.1 {
            best = sub;
        }
    }
    path.pop();
    let mut chain = vec![f.to_owned()];
    chain.extend(best.0);
    Ok((chain, cost(frame.stack) + best.1))
}

/// One function's frame and callees from its instructions (8 bytes each; 16 for a 64-bit
/// immediate load). The frame is the deepest byte below the frame pointer (r10) it reads,
/// writes or hands out: `*(r10 - N)`, and `rX = r10; rX += -N` (a key passed to a helper).
fn scan(name: &str, code: &[u8], base: u64, callee: &dyn Fn(u64, i64) -> Option<String>) -> Frame {
    let mut stack: i64 = 0;
    // Registers that hold the frame pointer plus an offset.
    let mut fp_off: [Option<i64>; 11] = [None; 11];
    let mut calls = Vec::new();
    let mut at = 0;
    while at + 8 <= code.len() {
        let op = code[at];
        let dst = code[at + 1] & 0x0f;
        let src = code[at + 1] >> 4;
        let off = i64::from(i16::from_le_bytes([code[at + 2], code[at + 3]]));
        let imm = i64::from(i32::from_le_bytes([
            code[at + 4],
            code[at + 5],
            code[at + 6],
            code[at + 7],
        ]));
        let class = op & 0x07;
        let base_of = |r: u8| -> Option<i64> {
            if r == FP {
                Some(0)
            } else {
                fp_off.get(r as usize).copied().flatten()
            }
        };
        match class {
            // LDX: dst = *(src + off)
            0x01 => {
                if let Some(b) = base_of(src) {
                    stack = stack.max(-(b + off));
                }
                if let Some(r) = fp_off.get_mut(dst as usize) {
                    *r = None;
                }
            }
            // ST / STX: *(dst + off) = ...
            0x02 | 0x03 => {
                if let Some(b) = base_of(dst) {
                    stack = stack.max(-(b + off));
                }
            }
            // ALU64
            0x07 => {
                let r = dst as usize;
                match (op & 0xf0, op & 0x08) {
                    // mov64 dst, src
                    (0xb0, 0x08) => {
                        let v = base_of(src);
                        if let Some(x) = fp_off.get_mut(r) {
                            *x = v;
                        }
                        if let Some(v) = v {
                            stack = stack.max(-v);
                        }
                    }
                    // add64 dst, imm
                    (0x00, 0x00) => {
                        if let Some(Some(v)) = fp_off.get(r).copied() {
                            let n = v + imm;
                            fp_off[r] = Some(n);
                            stack = stack.max(-n);
                        }
                    }
                    _ => {
                        if let Some(x) = fp_off.get_mut(r) {
                            *x = None;
                        }
                    }
                }
            }
            // LD (64-bit immediate, two slots) and 32-bit ALU: the destination is no
            // longer a stack pointer.
            0x00 | 0x04 => {
                if let Some(x) = fp_off.get_mut(dst as usize) {
                    *x = None;
                }
            }
            _ => {}
        }
        if op == BPF_CALL {
            if src == BPF_PSEUDO_CALL
                && let Some(target) = callee(base + at as u64, imm)
                && !calls.contains(&target)
            {
                calls.push(target);
            }
            // A call clobbers r0-r5.
            for r in fp_off.iter_mut().take(6) {
                *r = None;
            }
        }
        at += if op == 0x18 { 16 } else { 8 };
    }
    Frame {
        name: name.to_owned(),
        stack: u32::try_from(stack.max(0)).unwrap_or(u32::MAX),
        calls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The program Conduit attaches fits the oldest verifier's stack limit, counted the way
    /// 6.1 counts it. Fails on every build that would be rejected there, without a VM.
    #[test]
    #[cfg_attr(
        conduit_no_ebpf,
        ignore = "built without the XDP program (no bpf-linker)"
    )]
    fn the_program_fits_the_6_1_stack_limit() {
        let r = stack_report(crate::datapath::object(), conduit_common::PROGRAM_NAME)
            .expect("read the object");
        assert!(r.frames.len() > 1, "{r:#?}");
        assert!(
            r.worst_bytes_rounded <= MAX_STACK,
            "the call chain {:?} needs {} bytes of stack as kernel 6.1 counts it \
             (limit {MAX_STACK}): {:#?}",
            r.worst_chain,
            r.worst_bytes_rounded,
            r.frames
        );
    }

    #[test]
    fn mangled_names_are_shortened() {
        assert_eq!(
            short("_RNvNtCs4ZpbR7wWKcl_7conduit7program4full"),
            "program::full"
        );
        assert_eq!(short("memset"), "memset");
    }

    #[test]
    fn frames_are_rounded_as_the_verifier_does() {
        assert_eq!(rounded(0), 32);
        assert_eq!(rounded(1), 32);
        assert_eq!(rounded(136), 160);
        assert_eq!(rounded(368), 384);
    }
}
