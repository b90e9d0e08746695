//! proptest strategies for programs (feature `proptest`), derived from the
//! vocabulary: a step is a kind drawn uniformly from [`StepKind::ALL`] and
//! operand bytes reduced to their sorts' full ranges
//! ([`Op::from_operand_bytes`]), so a new step kind is generated without
//! touching this file.

use proptest::prelude::*;

use super::{Expect, HOLDERS, MARKS, Mark, Op, Program, Sort, StepKind, VARS, Var, WEAKS};

/// The number of values an operand of `sort` takes.
fn range(sort: Sort) -> u8 {
    match sort {
        Sort::Var => VARS as u8,
        Sort::Holder => HOLDERS as u8,
        Sort::Weak => WEAKS as u8,
        Sort::Kind | Sort::Count => sort.fixed_range().unwrap_or(1),
    }
}

pub fn var() -> impl Strategy<Value = Var> {
    (0..VARS as u8).prop_map(Var)
}
pub fn mark() -> impl Strategy<Value = Mark> {
    (0..MARKS as u8).prop_map(Mark)
}

/// A state-changing step of one of `kinds`, every slot in range.
pub fn step_of(kinds: Vec<StepKind>) -> impl Strategy<Value = Op> {
    (prop::sample::select(kinds), any::<[u8; 2]>()).prop_map(|(kind, mut a)| {
        for (b, sort) in a.iter_mut().zip(kind.operands()) {
            *b %= range(*sort);
        }
        Op::from_operand_bytes(kind, a)
    })
}

/// Every state-changing step.
pub fn step() -> impl Strategy<Value = Op> {
    step_of(StepKind::ALL.to_vec())
}

/// `mark` and every `expect` form.
pub fn assertion() -> impl Strategy<Value = Op> {
    prop_oneof![
        (mark(), var()).prop_map(|(m, v)| Op::Mark { m, v }),
        (var(), var(), any::<bool>()).prop_map(|(v, u, negated)| Op::Expect(Expect::IsVar {
            v,
            u,
            negated
        })),
        (var(), mark(), any::<bool>()).prop_map(|(v, m, negated)| Op::Expect(Expect::IsMark {
            v,
            m,
            negated
        })),
        (var(), mark(), any::<bool>()).prop_map(|(v, m, negated)| Op::Expect(Expect::ObjMark {
            v,
            m,
            negated
        })),
        var().prop_map(|v| Op::Expect(Expect::None { v })),
        var().prop_map(|v| Op::Expect(Expect::Moved { v })),
        (var(), any::<u32>()).prop_map(|(v, n)| Op::Expect(Expect::Strong { v, n })),
        (var(), any::<u32>()).prop_map(|(v, n)| Op::Expect(Expect::Weak { v, n })),
        (0u32..8).prop_map(|n| Op::Expect(Expect::Wrappers { n })),
        (0u32..8).prop_map(|n| Op::Expect(Expect::Finalized { n })),
    ]
}

/// Any step, assertions included.
pub fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![3 => step(), 1 => assertion()]
}

/// Programs of state-changing steps only.
pub fn program(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Program> {
    prop::collection::vec(step(), len).prop_map(Program::new)
}

/// Programs with assertions mixed in.
pub fn program_with_assertions(
    len: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = Program> {
    prop::collection::vec(any_op(), len).prop_map(Program::new)
}
