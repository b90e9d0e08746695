//! Structure-aware mutation of the binary form (docs/format.md), for the
//! fuzz target's custom mutator (`libfuzzer_sys::fuzz_mutator!` and
//! `fuzz_crossover!`).
//!
//! libFuzzer's own mutations flip, insert and erase bytes: most of them
//! shift every later step's opcode and operands, and it grows an input
//! from nothing a byte at a time. The mutations here work on whole steps:
//! insert a run of new steps (on slots already in use, mostly), delete,
//! duplicate or swap steps, change a step's kind keeping its operands,
//! retarget an operand to a slot another step uses, toggle a kind of the
//! swarm mask, change the slot counts, and splice a run of steps from
//! another input. Half the mutations (and every mutation of an input of
//! fewer than 4 steps) instead draw a fresh random program of 8 to 40
//! steps, operands uniform over the slots ([`fresh`]; the `lifecycle`
//! target draws only those for a campaign's first 1,000 mutations): an
//! empty corpus reaches multi-step programs in its first executions, and
//! the faults any few random steps expose are found at a random tester's
//! rate per program, while the other half follows coverage. `oom`'s
//! allocation number is 1 to 4 three times in four (a step's first
//! allocations are where its error branches are).
//!
//! Everything is pure and deterministic: the output depends only on the
//! input bytes, the size limit and the seed. Decoding stays total (every
//! byte string is a program), and what comes out is written by
//! [`encode_with`]: the header it was given, widened where the steps need
//! it, so that the output decodes to exactly the mutated steps.

use super::binary::{self, Config, HEADER_LEN, HOLDER_COUNTS, MAX_STEPS, VAR_COUNTS, WEAK_COUNTS};
use super::{Op, Sort, StepKind, StepSet};

/// A small deterministic generator (SplitMix64), seeded from the
/// mutator's seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

/// One step: its kind and its operand bytes, reduced to their ranges
/// (unused entries 0), as `Op::operand_bytes` gives them.
pub type Step = (StepKind, [u8; 2]);

/// An input taken apart: the raw header fields and the steps it decodes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The swarm mask's 26 bits as written (`binary::mask_of`).
    pub mask: u32,
    /// The slot-count bits (0-5 of the header's byte 3) as written.
    pub slots: u8,
    /// The steps, as `binary::decode_for` reads them.
    pub steps: Vec<Step>,
}

/// Take `data` apart as [`binary::decode_for`] reads it for `allowed`.
pub fn parse(data: &[u8], allowed: StepSet) -> Parsed {
    let b = |i: usize| data.get(i).copied().unwrap_or(0);
    let steps = binary::decode_for(data, allowed)
        .ops
        .iter()
        .filter_map(Op::operand_bytes)
        .collect();
    Parsed {
        mask: binary::mask_of([b(0), b(1), b(2), b(3)]),
        slots: b(3) & 0x3f,
        steps,
    }
}

fn count_index(table: &[u8], needed: usize) -> usize {
    table
        .iter()
        .position(|&c| usize::from(c) >= needed)
        .unwrap_or(table.len() - 1)
}

/// Encode `steps` under the header `mask`/`slots`, widened where the steps
/// need it: every kind used gets its mask bit, every slot used fits the
/// counts. At most `max_len` bytes: trailing steps that do not fit are
/// left out. `binary::decode_for(out, allowed)` gives back exactly the
/// steps written, provided each step's kind is in `allowed` and its
/// operands are within the sorts' largest ranges.
pub fn encode_with(
    mask: u32,
    slots: u8,
    steps: &[Step],
    allowed: StepSet,
    max_len: usize,
) -> Vec<u8> {
    let used = steps.iter().fold(StepSet::EMPTY, |s, (k, _)| s.with(*k)).0;
    let mask = (mask | used) & StepSet::ALL.0;
    let (mut vars, mut holders, mut weaks) = (0usize, 0usize, 0usize);
    for (kind, a) in steps {
        for (sort, &x) in kind.operands().iter().zip(a) {
            let x = usize::from(x) + 1;
            match sort {
                Sort::Var => vars = vars.max(x),
                Sort::Holder => holders = holders.max(x),
                Sort::Weak => weaks = weaks.max(x),
                Sort::Kind | Sort::Count => {}
            }
        }
    }
    let s = usize::from(slots);
    let vi = (s & 7).max(count_index(&VAR_COUNTS, vars));
    let hi = ((s >> 3) & 3).max(count_index(&HOLDER_COUNTS, holders));
    let wi = ((s >> 5) & 1).max(count_index(&WEAK_COUNTS, weaks));
    let slots = (vi | hi << 3 | wi << 5) as u8;
    let mut out = Vec::with_capacity(HEADER_LEN + 3 * steps.len());
    out.extend_from_slice(&binary::header_bytes(mask, slots));
    // The kinds as the decoder will read this header (a mask of `new`
    // alone enables every allowed kind): opcodes are relative to it.
    let cfg = binary::header_for(&out, allowed);
    for (kind, a) in steps.iter().take(MAX_STEPS) {
        let n = kind.operands().len();
        if out.len() + 1 + n > max_len {
            break;
        }
        out.push(binary::opcode_of(*kind, cfg.kinds));
        out.extend_from_slice(&a[..n]);
    }
    out.truncate(max_len);
    out
}

/// The number of slots of `sort` under `cfg` (`Kind`: `NEW_KINDS`' length).
fn range(cfg: &Config, sort: Sort) -> usize {
    usize::from(match sort {
        Sort::Var => cfg.vars,
        Sort::Holder => cfg.holders,
        Sort::Weak => cfg.weaks,
        Sort::Kind | Sort::Count => sort.fixed_range().unwrap_or(1),
    })
}

/// Operand values of `sort` that some step of `steps` uses.
fn in_use(steps: &[Step], sort: Sort) -> Vec<u8> {
    let mut seen = Vec::new();
    for (kind, a) in steps {
        for (s, &x) in kind.operands().iter().zip(a) {
            if *s == sort && !seen.contains(&x) {
                seen.push(x);
            }
        }
    }
    seen
}

/// An operand of `sort`: half the time a slot already in use (steps must
/// meet on the same objects to reach deep states), else any slot.
fn operand(rng: &mut Rng, cfg: &Config, steps: &[Step], sort: Sort) -> u8 {
    // `oom`'s K: a step makes a few Python allocations, most of them its
    // first ones (a wrapper, an exception): K from 1 to 4 three times in
    // four, any K else.
    if sort == Sort::Count && !rng.one_in(4) {
        return rng.below(4) as u8;
    }
    let used = if matches!(sort, Sort::Kind | Sort::Count) {
        Vec::new()
    } else {
        in_use(steps, sort)
    };
    if !used.is_empty() && rng.one_in(2) {
        used[rng.below(used.len())]
    } else {
        rng.below(range(cfg, sort)) as u8
    }
}

/// A random step among the kinds `cfg` enables, weighted as the decoder
/// weighs opcodes.
fn random_step(rng: &mut Rng, cfg: &Config, steps: &[Step]) -> Step {
    let kind = binary::kind_for_opcode(rng.below(256) as u8, cfg.kinds);
    let mut a = [0u8; 2];
    for (slot, sort) in a.iter_mut().zip(kind.operands()) {
        *slot = operand(rng, cfg, steps, *sort);
    }
    (kind, a)
}

/// Reduce every operand to the ranges of `cfg` (as the decoder would).
fn reduce(steps: &mut [Step], cfg: &Config) {
    for (kind, a) in steps {
        for (x, sort) in a.iter_mut().zip(kind.operands()) {
            *x %= range(cfg, *sort).max(1) as u8;
        }
    }
}

/// The header's `Config` for raw fields.
fn config(mask: u32, slots: u8, allowed: StepSet) -> Config {
    binary::header_for(&binary::header_bytes(mask, slots), allowed)
}

/// Grow `p` by `n` random steps at random places.
fn insert_steps(rng: &mut Rng, p: &mut Parsed, cfg: &Config, n: usize) {
    let at = rng.below(p.steps.len() + 1);
    for i in 0..n {
        let s = random_step(rng, cfg, &p.steps);
        p.steps.insert(at + i, s);
    }
}

/// One structure-aware mutation of `data` for a backend supporting
/// `allowed`, at most `max_len` bytes. Deterministic in its arguments.
pub fn mutate(data: &[u8], max_len: usize, seed: u32, allowed: StepSet) -> Vec<u8> {
    let mut rng = Rng::new(u64::from(seed));
    let mut p = parse(data, allowed);
    // A short input, and one mutation in two whatever the input: a fresh
    // random program of 8 to 40 steps, operands uniform over the slots,
    // as a random-testing peer draws them. Coverage guidance alone grows
    // programs slowly and keeps editing the corpus it has; fresh programs
    // find the faults that any few steps expose in the first executions,
    // and keep finding them at the peer's rate per program.
    if p.steps.len() < 4 || rng.one_in(2) {
        return fresh_with(&mut rng, max_len, allowed);
    }
    // A couple of mutations stacked, like libFuzzer's own.
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        mutate_once(&mut rng, &mut p, allowed);
    }
    encode_with(p.mask, p.slots, &p.steps, allowed, max_len)
}

/// A fresh random program of 8 to 40 steps, operands uniform over the
/// slots, as a random-testing peer draws them (what [`mutate`] draws one
/// time in two); deterministic in `seed`.
pub fn fresh(max_len: usize, seed: u32, allowed: StepSet) -> Vec<u8> {
    fresh_with(&mut Rng::new(u64::from(seed)), max_len, allowed)
}

fn fresh_with(rng: &mut Rng, max_len: usize, allowed: StepSet) -> Vec<u8> {
    // Every kind most of the time (a mask of `new` alone), a random swarm
    // mask else; few slots.
    let mask = if rng.one_in(4) {
        rng.next_u64() as u32 & StepSet::ALL.0
    } else {
        0
    };
    let slots = rng.next_u64() as u8;
    let cfg = config(mask, slots, allowed);
    let n = 8 + rng.below(33);
    let steps: Vec<Step> = (0..n).map(|_| random_step(rng, &cfg, &[])).collect();
    encode_with(mask, slots, &steps, allowed, max_len)
}

fn mutate_once(rng: &mut Rng, p: &mut Parsed, allowed: StepSet) {
    let cfg = config(p.mask, p.slots, allowed);
    let len = p.steps.len();
    match rng.below(10) {
        // Insert a run of 1..=4 new steps.
        0 | 1 => {
            let n = 1 + rng.below(4);
            insert_steps(rng, p, &cfg, n);
        }
        // Delete a run of 1..=3 steps.
        2 if len > 1 => {
            let n = (1 + rng.below(3)).min(len - 1);
            let at = rng.below(len - n + 1);
            p.steps.drain(at..at + n);
        }
        // Duplicate a run of 1..=4 steps somewhere.
        3 if len > 0 => {
            let n = (1 + rng.below(4)).min(len);
            let from = rng.below(len - n + 1);
            let run: Vec<Step> = p.steps[from..from + n].to_vec();
            let at = rng.below(len + 1);
            p.steps.splice(at..at, run);
        }
        // Swap two steps.
        4 if len > 1 => {
            let (i, j) = (rng.below(len), rng.below(len));
            p.steps.swap(i, j);
        }
        // Retarget an operand to a slot another step uses.
        5 | 6 if len > 0 => {
            let i = rng.below(len);
            let (kind, _) = p.steps[i];
            let sorts = kind.operands();
            if !sorts.is_empty() {
                let k = rng.below(sorts.len());
                let x = operand(rng, &cfg, &p.steps, sorts[k]);
                p.steps[i].1[k] = x;
            }
        }
        // Change a step's kind; operands of the same sort stay.
        7 if len > 0 => {
            let i = rng.below(len);
            let (old, a) = p.steps[i];
            let (kind, mut b) = random_step(rng, &cfg, &p.steps);
            let mut olds = old.operands().iter().zip(a);
            for (x, sort) in b.iter_mut().zip(kind.operands()) {
                if let Some((_, v)) = olds.find(|(s, _)| *s == sort) {
                    *x = v;
                }
            }
            p.steps[i] = (kind, b);
        }
        // Toggle one kind of the swarm mask (never `new`); switching a
        // kind off removes its steps.
        8 => {
            let kinds: Vec<StepKind> = allowed.without(StepKind::New).iter().collect();
            if !kinds.is_empty() {
                let k = kinds[rng.below(kinds.len())];
                let bit = 1u32 << k as u32;
                if cfg.kinds.contains(k) {
                    // A mask of `new` alone means every kind: write the
                    // enabled kinds out before taking one away.
                    p.mask = (cfg.kinds.0 & !bit) | 1;
                    p.steps.retain(|(s, _)| *s != k);
                } else {
                    p.mask |= bit;
                }
            }
        }
        // New slot counts; operands reduced into them.
        _ => {
            p.slots = rng.next_u64() as u8;
            let cfg = config(p.mask, p.slots, allowed);
            reduce(&mut p.steps, &cfg);
        }
    }
}

/// Splice: `a`'s steps with a run of `b`'s steps put in at a random place
/// (replacing a run of `a` half the time), under `a`'s header widened for
/// them. At most `max_len` bytes; deterministic in its arguments.
pub fn crossover(a: &[u8], b: &[u8], max_len: usize, seed: u32, allowed: StepSet) -> Vec<u8> {
    let mut rng = Rng::new(u64::from(seed) | 1 << 40);
    let mut p = parse(a, allowed);
    let q = parse(b, allowed);
    if p.steps.len() < 4 && q.steps.len() < 4 {
        // Nothing worth splicing: grow instead.
        return mutate(a, max_len, seed, allowed);
    }
    if !q.steps.is_empty() {
        let n = 1 + rng.below(q.steps.len());
        let from = rng.below(q.steps.len() - n + 1);
        let at = rng.below(p.steps.len() + 1);
        let replace = if rng.one_in(2) {
            rng.below(p.steps.len() - at + 1)
        } else {
            0
        };
        p.steps
            .splice(at..at + replace, q.steps[from..from + n].iter().copied());
    }
    if rng.one_in(2) {
        mutate_once(&mut rng, &mut p, allowed);
    }
    encode_with(p.mask, p.slots, &p.steps, allowed, max_len)
}

#[cfg(test)]
mod tests {
    use super::Rng;
    use super::*;
    use crate::program::binary::{decode, decode_for, encode};
    use proptest::prelude::*;

    fn steps_of(data: &[u8], allowed: StepSet) -> Vec<Step> {
        parse(data, allowed).steps
    }

    #[test]
    fn empty_input_grows_by_several_steps() {
        for seed in 0..200 {
            let out = mutate(&[], 128, seed, StepSet::ALL);
            let n = decode(&out).ops.len();
            // 8 to 40 steps, fewer only where 128 bytes cannot hold them.
            assert!((8..=40).contains(&n), "seed {seed}: {n} steps from nothing");
        }
    }

    #[test]
    fn deterministic_in_the_seed() {
        let data = encode(
            &crate::program::text::parse("new v0\nhold h0 v0\ndrop v0\nret v1 h0\nget v2 v1\n")
                .unwrap(),
        );
        for seed in 0..50 {
            assert_eq!(
                mutate(&data, 128, seed, StepSet::ALL),
                mutate(&data, 128, seed, StepSet::ALL)
            );
        }
        let distinct: std::collections::HashSet<Vec<u8>> = (0..50)
            .map(|s| mutate(&data, 128, s, StepSet::ALL))
            .collect();
        assert!(
            distinct.len() > 25,
            "only {} distinct mutants",
            distinct.len()
        );
    }

    #[test]
    fn toggling_the_mask_off_removes_the_kind() {
        // Every kind enabled (all-zero mask); find a seed whose mutation
        // switches a used kind off and check no step of it is left.
        let prog = "new v0\nhold h0 v0\ndrop v0\nret v0 h0\nrelease h0\n";
        let data = encode(&crate::program::text::parse(prog).unwrap());
        let mut p = parse(&data, StepSet::ALL);
        p.mask = 0;
        let mut rng = Rng::new(7);
        let mut removed = false;
        for _ in 0..3000 {
            let mut q = p.clone();
            mutate_once(&mut rng, &mut q, StepSet::ALL);
            let out = encode_with(q.mask, q.slots, &q.steps, StepSet::ALL, 128);
            let cfg = binary::header(&out);
            for (k, _) in steps_of(&out, StepSet::ALL) {
                assert!(cfg.kinds.contains(k));
            }
            if !cfg.kinds.contains(StepKind::Hold) {
                assert!(q.steps.iter().all(|(k, _)| *k != StepKind::Hold));
                removed = true;
            }
        }
        assert!(removed, "no mutation switched `hold` off in 3000 tries");
    }

    #[test]
    fn crossover_splices_steps_of_the_other_input() {
        let a = encode(&crate::program::text::parse("new v0\nnew v1\nnew v0\nnew v1\n").unwrap());
        let b = encode(&crate::program::text::parse("cycle v0\ncycle v0\ncycle v0\n").unwrap());
        let both = (0..100)
            .filter(|&seed| {
                let kinds = decode(&crossover(&a, &b, 128, seed, StepSet::ALL)).kinds();
                kinds.contains(StepKind::Cycle)
            })
            .count();
        // The splice always brings in a `cycle`; the stacked mutation (half
        // the time) rarely takes every one away again.
        assert!(
            both >= 80,
            "only {both} of 100 crossovers have a step of the other input"
        );
    }

    proptest! {
        #[test]
        fn encode_with_round_trips(data in proptest::collection::vec(any::<u8>(), 0..200),
                                   mask in any::<u32>(), slots in any::<u8>()) {
            let steps = steps_of(&data, StepSet::ALL);
            let out = encode_with(mask, slots, &steps, StepSet::ALL, 4096);
            prop_assert_eq!(steps_of(&out, StepSet::ALL), steps);
        }

        #[test]
        fn mutants_fit_and_decode(data in proptest::collection::vec(any::<u8>(), 0..160),
                                  other in proptest::collection::vec(any::<u8>(), 0..160),
                                  max in 0usize..160, seed in any::<u32>()) {
            // A backend without weak slots or shutdown, as tvm-ffi.
            let allowed = StepSet::ALL.without(StepKind::Weak).without(StepKind::Unweak)
                .without(StepKind::Lock).without(StepKind::Shutdown);
            for allowed in [StepSet::ALL, allowed] {
                let m = mutate(&data, max, seed, allowed);
                prop_assert!(m.len() <= max);
                let c = crossover(&data, &other, max, seed, allowed);
                prop_assert!(c.len() <= max);
                for out in [&m, &c] {
                    // What comes out decodes to whole steps: no byte left over.
                    let (prog, used) = binary::decode_counted(out, allowed);
                    prop_assert_eq!(used, out.len());
                    prop_assert!(prog.ops.iter().all(|o| o.kind().is_some_and(|k| allowed.contains(k))));
                    let _ = decode_for(out, allowed);
                }
            }
        }
    }
}
