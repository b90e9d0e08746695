//! proptest strategies for programs, shared by the program_* tests (each
//! test crate uses a different subset, hence the `dead_code` allowance).
#![allow(dead_code)]

use proptest::prelude::*;
use pytie::program::{
    Expect, HOLDERS, Holder, MARKS, Mark, ObjKind, Op, Program, VARS, Var, WEAKS, WeakSlot,
};

pub fn var() -> impl Strategy<Value = Var> {
    (0..VARS as u8).prop_map(Var)
}
pub fn holder() -> impl Strategy<Value = Holder> {
    (0..HOLDERS as u8).prop_map(Holder)
}
pub fn weak() -> impl Strategy<Value = WeakSlot> {
    (0..WEAKS as u8).prop_map(WeakSlot)
}
pub fn mark() -> impl Strategy<Value = Mark> {
    (0..MARKS as u8).prop_map(Mark)
}
pub fn obj_kind() -> impl Strategy<Value = ObjKind> {
    prop::sample::select(ObjKind::ALL.to_vec())
}

/// Every state-changing step.
pub fn step() -> impl Strategy<Value = Op> {
    prop_oneof![
        (var(), obj_kind()).prop_map(|(v, kind)| Op::New { v, kind }),
        (var(), holder()).prop_map(|(v, h)| Op::Ret { v, h }),
        (var(), var()).prop_map(|(v, u)| Op::Echo { v, u }),
        (var(), var()).prop_map(|(v, u)| Op::Get { v, u }),
        (var(), var()).prop_map(|(u, v)| Op::Set { u, v }),
        var().prop_map(|u| Op::Unset { u }),
        (var(), var()).prop_map(|(v, u)| Op::Clone { v, u }),
        var().prop_map(|v| Op::Drop { v }),
        (holder(), var()).prop_map(|(h, v)| Op::Hold { h, v }),
        (holder(), var()).prop_map(|(h, v)| Op::Move { h, v }),
        holder().prop_map(|h| Op::Release { h }),
        holder().prop_map(|h| Op::ReleaseForeign { h }),
        (weak(), var()).prop_map(|(w, v)| Op::Weak { w, v }),
        weak().prop_map(|w| Op::Unweak { w }),
        (var(), weak()).prop_map(|(v, w)| Op::Lock { v, w }),
        var().prop_map(|v| Op::Cycle { v }),
        Just(Op::Collect),
        Just(Op::Shutdown),
    ]
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
        var().prop_map(|v| Op::Expect(Expect::None { v })),
        var().prop_map(|v| Op::Expect(Expect::Moved { v })),
        (var(), any::<u32>()).prop_map(|(v, n)| Op::Expect(Expect::Strong { v, n })),
        (var(), any::<u32>()).prop_map(|(v, n)| Op::Expect(Expect::Weak { v, n })),
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
