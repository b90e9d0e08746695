//! Binary form of programs (contract §4.2, docs/format.md), layout
//! version [`FORMAT_VERSION`].
//!
//! A 4-byte header (swarm mask and slot counts), then one opcode byte per
//! step followed by one byte per operand. [`decode`] is total: every byte
//! string is a program. [`encode`] writes the minimal header for a
//! program, and `decode(&encode(p)) == p` for every program without
//! `mark`/`expect` steps and with at most [`MAX_STEPS`] steps.
//!
//! Changing anything here changes what every stored fuzz input means:
//! bump [`FORMAT_VERSION`] and follow docs/format.md.

use arbitrary::{Arbitrary, Unstructured};

use super::{HOLDERS, ObjKind, Op, Program, Sort, StepKind, StepSet, VARS, Var, WEAKS};

/// Version of the layout below. Bump it on any change (docs/format.md).
/// 10: `new`'s kind table's last entry is `fragile` (it was a second `cpp`;
/// the encoder writes `cpp` as 8, which keeps its meaning).
/// 9: `call_raise` and `call_move_raise` appended, their mask bits in byte 3.
/// 8: `oom` appended.
/// 7: `call` (21) and `call_move` (22) appended.
/// 6: `finalize` appended (20).
/// 5: two step kinds appended, `pickle` (18) and `pyweak` (19) (every
/// opcode the encoder writes for the older kinds means the same).
/// 4: `new`'s kind table has 16 entries, the seven kinds of issue 23 after
/// version 3's eight (an operand the encoder writes means the same in both).
/// 3: `new`'s kind table has 8 entries, the last `legacy` (version 2 had
/// the first 4; an operand the encoder writes means the same in both).
/// 2: weighted opcodes and slot-count tables (version 1 took opcodes
/// uniformly and slot counts `1 + bits`).
pub const FORMAT_VERSION: u32 = 10;

/// How many opcode values each step kind gets among the enabled kinds, in
/// `StepKind` order (docs/format.md): declared with the vocabulary
/// (`vocab.rs`). The building blocks of deep states (create, return, drop,
/// hold) come up more often than `shutdown`.
pub const WEIGHTS: [u8; StepKind::COUNT] = StepKind::WEIGHTS;

/// Var counts the header's 3 bits choose from: few vars most of the time,
/// so that steps meet on the same objects; 8 so that every program encodes.
pub const VAR_COUNTS: [u8; 8] = [1, 2, 2, 3, 3, 4, 5, 8];
/// What `new`'s kind operand selects (taken modulo the table's length):
/// plain objects, the first of the kinds whose wrappers are cached and
/// revived, a quarter of the time; every other kind one or two times in 16.
/// The first eight entries are version 3's table (whose first four are
/// version 2's), so the indices the encoder writes (plain 0, dict 2,
/// untied 3, legacy 7) kept their meaning; the kinds of issue 23 follow,
/// and `fragile` (issue 30, layout 10) last.
pub const NEW_KINDS: [ObjKind; 16] = [
    ObjKind::Plain,
    ObjKind::Plain,
    ObjKind::Dict,
    ObjKind::Untied,
    ObjKind::Plain,
    ObjKind::Plain,
    ObjKind::Dict,
    ObjKind::Legacy,
    ObjKind::Cpp,
    ObjKind::List,
    ObjKind::Map,
    ObjKind::Del,
    ObjKind::Weakref,
    ObjKind::Sub,
    ObjKind::Derived,
    ObjKind::Fragile,
];
/// Holder counts the header's 2 bits choose from.
pub const HOLDER_COUNTS: [u8; 4] = [1, 2, 2, 4];
/// Weak slot counts the header's bit chooses from.
pub const WEAK_COUNTS: [u8; 2] = [1, 2];
/// Bytes of header before the first step.
pub const HEADER_LEN: usize = 4;
/// Decoding stops after this many steps; further bytes are ignored.
/// [`encode`] writes at most this many steps.
pub const MAX_STEPS: usize = 256;

/// The decoded header: which step kinds the opcodes range over and how
/// many slots of each sort the operands range over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Enabled kinds; always contains `new`.
    pub kinds: StepSet,
    /// Number of vars, 1..=8.
    pub vars: u8,
    /// Number of holders, 1..=4.
    pub holders: u8,
    /// Number of weak slots, 1..=2.
    pub weaks: u8,
}

impl Config {
    /// Every kind, every slot (an all-zero header's kinds, all slots).
    pub const FULL: Config = Config {
        kinds: StepSet::ALL,
        vars: VARS as u8,
        holders: HOLDERS as u8,
        weaks: WEAKS as u8,
    };
}

/// The swarm mask of a header: 26 bits, bytes 0-2 and then bits 6-7 of
/// byte 3 (layout 9; the slot counts use bits 0-5 of byte 3).
pub fn mask_of(h: [u8; HEADER_LEN]) -> u32 {
    u32::from(h[0]) | u32::from(h[1]) << 8 | u32::from(h[2]) << 16 | u32::from(h[3] >> 6) << 24
}

/// The header for a swarm mask (its low 26 bits) and slot-count bits (the
/// low 6 bits of `slots`): the inverse of [`mask_of`] and the slot fields.
pub fn header_bytes(mask: u32, slots: u8) -> [u8; HEADER_LEN] {
    let m = mask.to_le_bytes();
    [m[0], m[1], m[2], slots & 0x3f | (m[3] & 3) << 6]
}

/// Decode the header of `data`; missing bytes read as 0.
pub fn header(data: &[u8]) -> Config {
    header_for(data, StepSet::ALL)
}

/// Decode the header of `data` for a backend that supports only `allowed`
/// (`new` is always in): the mask is read within `allowed`, and a mask
/// enabling nothing but `new` there means all of `allowed`. With
/// `StepSet::ALL` this is [`header`].
pub fn header_for(data: &[u8], allowed: StepSet) -> Config {
    let b = |i: usize| data.get(i).copied().unwrap_or(0);
    let mask = mask_of([b(0), b(1), b(2), b(3)]);
    let allowed = allowed.and(StepSet::ALL).with(StepKind::New);
    let new_only = StepSet::EMPTY.with(StepKind::New);
    let mut kinds = StepSet(mask & allowed.0).with(StepKind::New);
    if kinds == new_only {
        kinds = allowed;
    }
    let s = usize::from(b(3));
    Config {
        kinds,
        vars: VAR_COUNTS[s & 7],
        holders: HOLDER_COUNTS[(s >> 3) & 3],
        weaks: WEAK_COUNTS[(s >> 5) & 1],
    }
}

/// The kind an opcode byte selects: `byte % total weight` of the enabled
/// kinds, walked in `StepKind` order.
fn kind_of(opcode: u8, kinds: StepSet, total: u32) -> StepKind {
    let mut r = u32::from(opcode) % total;
    for k in kinds.iter() {
        let w = u32::from(WEIGHTS[k as usize]);
        if r < w {
            return k;
        }
        r -= w;
    }
    StepKind::New
}

/// The kind an opcode byte selects among `kinds` (what [`decode`] reads).
pub fn kind_for_opcode(opcode: u8, kinds: StepSet) -> StepKind {
    kind_of(opcode, kinds, total_weight(kinds))
}

/// The first opcode that selects `kind` among `kinds` (the inverse of
/// [`kind_for_opcode`]).
pub fn opcode_of(kind: StepKind, kinds: StepSet) -> u8 {
    kinds
        .iter()
        .take_while(|k| *k != kind)
        .map(|k| WEIGHTS[k as usize])
        .sum()
}

fn total_weight(kinds: StepSet) -> u32 {
    kinds.iter().map(|k| u32::from(WEIGHTS[k as usize])).sum()
}

/// The index of the smallest count in `table` that holds `needed` slots.
fn count_index(table: &[u8], needed: usize) -> usize {
    table
        .iter()
        .position(|&c| usize::from(c) >= needed)
        .unwrap_or(table.len() - 1)
}

/// Read the operands of one step of `kind`; `None` if the bytes run out.
fn read_step(kind: StepKind, cfg: &Config, bytes: &mut impl Iterator<Item = u8>) -> Option<Op> {
    let mut a = [0u8; 2];
    for (slot, sort) in a.iter_mut().zip(kind.operands()) {
        let modulus = match sort {
            Sort::Var => cfg.vars,
            Sort::Holder => cfg.holders,
            Sort::Weak => cfg.weaks,
            Sort::Kind | Sort::Count => sort.fixed_range().unwrap_or(1),
        };
        *slot = bytes.next()? % modulus.max(1);
    }
    Some(Op::from_operand_bytes(kind, a))
}

/// Decode a byte string into a program. Total: never fails, never panics.
pub fn decode(data: &[u8]) -> Program {
    decode_for(data, StepSet::ALL)
}

/// Decode for a backend that supports only the kinds in `allowed`: every
/// byte string still decodes, to a program using only those kinds (and
/// `new`). Same layout; with `StepSet::ALL` this is [`decode`].
pub fn decode_for(data: &[u8], allowed: StepSet) -> Program {
    decode_counted(data, allowed).0
}

/// [`decode_for`], also saying how many bytes the program is made of: the
/// rest (`data.len()` minus that) was ignored, an incomplete last step or
/// the bytes after the [`MAX_STEPS`]-th step.
pub fn decode_counted(data: &[u8], allowed: StepSet) -> (Program, usize) {
    let cfg = header_for(data, allowed);
    let total = total_weight(cfg.kinds);
    let body = data.get(HEADER_LEN..).unwrap_or(&[]);
    let mut bytes = body.iter().copied();
    let mut ops = Vec::new();
    let mut used = data.len().min(HEADER_LEN);
    while ops.len() < MAX_STEPS {
        let Some(opcode) = bytes.next() else { break };
        let kind = kind_of(opcode, cfg.kinds, total);
        match read_step(kind, &cfg, &mut bytes) {
            Some(op) => {
                ops.push(op);
                used = data.len() - bytes.len();
            }
            None => break, // truncated last step: dropped
        }
    }
    (Program::new(ops), used)
}

/// Encode a program with the minimal header for it. `mark` and `expect`
/// steps are skipped (they are text-only); only the first [`MAX_STEPS`]
/// remaining steps are written.
pub fn encode(p: &Program) -> Vec<u8> {
    let steps: Vec<(StepKind, [u8; 2])> = p
        .ops
        .iter()
        .filter_map(Op::operand_bytes)
        .take(MAX_STEPS)
        .collect();

    // Mask: exactly the kinds used, plus `new`. If that is `new` alone the
    // decoder enables every kind; `new` comes first either way, so its
    // opcode (0) decodes to `new` in both readings.
    let kinds = steps
        .iter()
        .fold(StepSet::EMPTY.with(StepKind::New), |s, (k, _)| s.with(*k));
    let (mut vars, mut holders, mut weaks) = (0usize, 0usize, 0usize);
    for (kind, a) in &steps {
        for (sort, &x) in kind.operands().iter().zip(a) {
            let x = usize::from(x);
            match sort {
                Sort::Var => vars = vars.max(x),
                Sort::Holder => holders = holders.max(x),
                Sort::Weak => weaks = weaks.max(x),
                Sort::Kind | Sort::Count => {}
            }
        }
    }
    // Slot indices are in range by the types' invariants; an out-of-range
    // program gets the largest counts (it will not round-trip).
    let slots = count_index(&VAR_COUNTS, vars + 1)
        | count_index(&HOLDER_COUNTS, holders + 1) << 3
        | count_index(&WEAK_COUNTS, weaks + 1) << 5;

    let mut out = Vec::with_capacity(HEADER_LEN + 3 * steps.len());
    out.extend_from_slice(&header_bytes(kinds.0, slots as u8));
    for (kind, a) in &steps {
        out.push(opcode_of(*kind, kinds));
        out.extend_from_slice(&a[..kind.operands().len()]);
    }
    out
}

/// A program is exactly what [`decode`] makes of all the remaining bytes,
/// so a fuzz target taking a `Program` sees `decode(input)`.
impl<'a> Arbitrary<'a> for Program {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let rest = u.bytes(u.len())?;
        Ok(decode(rest))
    }

    fn arbitrary_take_rest(u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(decode(u.take_rest()))
    }

    fn size_hint(_depth: usize) -> (usize, Option<usize>) {
        // Any length decodes (even empty); all of it is consumed.
        (0, None)
    }
}

/// One step, decoded as by [`decode`] with every kind and every slot
/// enabled ([`Config::FULL`]): an opcode byte, then operand bytes. Missing
/// bytes read as 0, so an exhausted input gives `new v0`.
impl<'a> Arbitrary<'a> for Op {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let opcode = u8::arbitrary(u)?;
        let kind = kind_of(opcode, StepSet::ALL, total_weight(StepSet::ALL));
        let mut a = [0u8; 2];
        for slot in a.iter_mut().take(kind.operands().len()) {
            *slot = u8::arbitrary(u)?;
        }
        let mut bytes = a.into_iter();
        Ok(
            read_step(kind, &Config::FULL, &mut bytes).unwrap_or(Op::New {
                v: Var(0),
                kind: ObjKind::Plain,
            }),
        )
    }

    fn size_hint(_depth: usize) -> (usize, Option<usize>) {
        (1, Some(3))
    }
}

/// The first bytes of a *sequence* input: several programs, run one after
/// another in one process, as a fuzz target ran them when a failure would
/// not replay alone (docs/format.md, "Sequences").
pub const SEQUENCE_MAGIC: &[u8; 8] = b"PYTIESEQ";

/// The programs of a sequence input, in order, each in the binary form;
/// `None` when `data` does not start with [`SEQUENCE_MAGIC`] (it is one
/// program). Total: after the magic, each program is a 2-byte little-endian
/// length and that many bytes; a length running past the end takes what is
/// there, and an odd last byte is ignored.
pub fn sequence(data: &[u8]) -> Option<Vec<&[u8]>> {
    let mut rest = data.strip_prefix(SEQUENCE_MAGIC.as_slice())?;
    let mut out = Vec::new();
    while rest.len() >= 2 {
        let n = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        let body = &rest[2..];
        let (p, tail) = body.split_at(n.min(body.len()));
        out.push(p);
        rest = tail;
    }
    Some(out)
}

/// A sequence input of `programs` (each in the binary form, at most 65,535
/// bytes: longer ones are cut there).
pub fn encode_sequence(programs: &[&[u8]]) -> Vec<u8> {
    let mut out = SEQUENCE_MAGIC.to_vec();
    for p in programs {
        let p = &p[..p.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(p.len() as u16).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}
