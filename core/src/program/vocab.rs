//! The step vocabulary, declared once (contract §4.1).
//!
//! [`steps!`] below is the only list of step kinds. From it come:
//! [`StepKind`] (its order is the binary opcode order and the bit order of
//! [`StepSet`](super::StepSet): never reorder, only append, and bump the
//! binary layout version), each kind's text name, its binary weight, the
//! [`Op`] enum with one variant per kind (fields in text order, which is
//! also the binary operand order), the text printer and parser of the
//! state-changing steps (`text.rs` handles only `mark` and `expect`), the
//! binary encoding of operands (`binary.rs`), and the proptest strategy
//! (`strategy.rs`).
//!
//! Adding a step kind: one line here; then the model
//! (`Model::apply`), each backend's `apply` (and its `caps`), and, if the
//! step needs a live wrapper, [`Op::live_operands`]. Nothing else.

use std::fmt;

use super::{AllocNo, Holder, ObjKind, Var, WeakSlot, text};

/// The sort of an operand: what range its binary byte is reduced to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    Var,
    Holder,
    Weak,
    /// `new`'s object kind, an index into `binary::NEW_KINDS`.
    Kind,
    /// `oom`'s allocation number, K - 1.
    Count,
}

impl Sort {
    /// How many values an operand of this sort takes when its range does
    /// not depend on a program's header (every sort but the slots).
    pub const fn fixed_range(self) -> Option<u8> {
        match self {
            Sort::Kind => Some(super::binary::NEW_KINDS.len() as u8),
            Sort::Count => Some(AllocNo::MAX as u8),
            Sort::Var | Sort::Holder | Sort::Weak => None,
        }
    }
}

/// An operand type of a step.
pub trait Operand: Copy {
    const SORT: Sort;
    /// Its operand byte in the binary form.
    fn to_byte(self) -> u8;
    /// From an operand byte already reduced to the sort's range.
    fn from_byte(b: u8) -> Self;
    /// Parse it from the rest of a text line.
    fn parse(line: &mut text::Line<'_>) -> Result<Self, text::ParseError>;
    /// Write it in the text form, with its leading space (nothing for a
    /// default that the text form omits).
    fn write(self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
}

impl Operand for Var {
    const SORT: Sort = Sort::Var;
    fn to_byte(self) -> u8 {
        self.0
    }
    fn from_byte(b: u8) -> Self {
        Var(b)
    }
    fn parse(line: &mut text::Line<'_>) -> Result<Self, text::ParseError> {
        line.var()
    }
    fn write(self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, " {self}")
    }
}

impl Operand for Holder {
    const SORT: Sort = Sort::Holder;
    fn to_byte(self) -> u8 {
        self.0
    }
    fn from_byte(b: u8) -> Self {
        Holder(b)
    }
    fn parse(line: &mut text::Line<'_>) -> Result<Self, text::ParseError> {
        line.holder()
    }
    fn write(self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, " {self}")
    }
}

impl Operand for WeakSlot {
    const SORT: Sort = Sort::Weak;
    fn to_byte(self) -> u8 {
        self.0
    }
    fn from_byte(b: u8) -> Self {
        WeakSlot(b)
    }
    fn parse(line: &mut text::Line<'_>) -> Result<Self, text::ParseError> {
        line.weak()
    }
    fn write(self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, " {self}")
    }
}

impl Operand for AllocNo {
    const SORT: Sort = Sort::Count;
    fn to_byte(self) -> u8 {
        self.0
    }
    fn from_byte(b: u8) -> Self {
        AllocNo(b)
    }
    fn parse(line: &mut text::Line<'_>) -> Result<Self, text::ParseError> {
        line.alloc_no()
    }
    fn write(self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, " {self}")
    }
}

impl Operand for ObjKind {
    const SORT: Sort = Sort::Kind;
    fn to_byte(self) -> u8 {
        super::binary::NEW_KINDS
            .iter()
            .position(|k| *k == self)
            .unwrap_or(0) as u8
    }
    fn from_byte(b: u8) -> Self {
        super::binary::NEW_KINDS[usize::from(b) % super::binary::NEW_KINDS.len()]
    }
    /// Optional: `new v0` is `new v0 plain`.
    fn parse(line: &mut text::Line<'_>) -> Result<Self, text::ParseError> {
        line.obj_kind()
    }
    fn write(self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjKind::Plain => Ok(()),
            k => write!(f, " {}", k.name()),
        }
    }
}

macro_rules! steps {
    ($(
        $(#[$doc:meta])*
        $variant:ident $name:literal weight $weight:literal $({ $($field:ident: $ty:ty),* })?;
    )*) => {
        /// The steps that change state, in opcode order (see the module
        /// documentation: never reorder).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum StepKind { $($variant,)* }

        impl StepKind {
            pub const COUNT: usize = [$($name),*].len();
            pub const ALL: [StepKind; StepKind::COUNT] = [$(StepKind::$variant),*];
            /// Opcode values each kind gets among the enabled kinds
            /// (docs/format.md), in `StepKind` order.
            pub const WEIGHTS: [u8; StepKind::COUNT] = [$($weight),*];

            /// The step's name in the text form.
            pub fn name(self) -> &'static str {
                match self { $(StepKind::$variant => $name,)* }
            }

            /// The kind a text name names.
            pub fn from_name(s: &str) -> Option<StepKind> {
                match s { $($name => Some(StepKind::$variant),)* _ => None }
            }

            /// The sorts of its operands, in text order.
            pub fn operands(self) -> &'static [Sort] {
                match self {
                    $(StepKind::$variant => &[$($(<$ty as Operand>::SORT),*)?],)*
                }
            }
        }

        /// One step of a program (contract §4.1). Field names follow the
        /// text form: `New { v, kind }` is `new V KIND`, `Set { u, v }` is
        /// `set U V`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Op {
            $($(#[$doc])* $variant $({ $($field: $ty),* })?,)*
            /// `mark M V` (text only).
            Mark { m: super::Mark, v: Var },
            /// `expect ...` (text only).
            Expect(super::Expect),
        }

        impl Op {
            /// The state-changing kind, or `None` for the text-only assertions.
            pub fn kind(&self) -> Option<StepKind> {
                match self {
                    $(Op::$variant $({ $($field: _),* })? => Some(StepKind::$variant),)*
                    Op::Mark { .. } | Op::Expect(_) => None,
                }
            }

            /// The operand bytes of a state-changing step, in text order
            /// (unused entries 0); `None` for assertions.
            pub fn operand_bytes(&self) -> Option<(StepKind, [u8; 2])> {
                #[allow(unused_mut, unused_variables)]
                let mut out = [0u8; 2];
                #[allow(unused_mut, unused_variables)]
                let mut slots = out.iter_mut();
                match *self {
                    $(Op::$variant $({ $($field),* })? => {
                        $($(*slots.next()? = Operand::to_byte($field);)*)?
                        Some((StepKind::$variant, out))
                    })*
                    Op::Mark { .. } | Op::Expect(_) => None,
                }
            }

            /// The step of `kind` from operand bytes already reduced to
            /// their sorts' ranges (the inverse of [`Op::operand_bytes`]).
            pub fn from_operand_bytes(kind: StepKind, a: [u8; 2]) -> Op {
                #[allow(unused_mut, unused_variables)]
                let mut it = a.into_iter();
                match kind {
                    $(StepKind::$variant => Op::$variant $({
                        $($field: Operand::from_byte(it.next().unwrap_or(0))),*
                    })?,)*
                }
            }

            /// Parse the operands of a `kind` step from the rest of its line.
            pub(super) fn parse_operands(
                kind: StepKind,
                #[allow(unused_variables)] line: &mut text::Line<'_>,
            ) -> Result<Op, text::ParseError> {
                Ok(match kind {
                    $(StepKind::$variant => Op::$variant $({
                        $($field: Operand::parse(line)?),*
                    })?,)*
                })
            }

            /// Write a state-changing step in the text form; `Ok(false)`
            /// for assertions (not written).
            pub(super) fn write_step(&self, f: &mut fmt::Formatter<'_>) -> Result<bool, fmt::Error> {
                match *self {
                    $(Op::$variant $({ $($field),* })? => {
                        f.write_str($name)?;
                        $($(Operand::write($field, f)?;)*)?
                    })*
                    Op::Mark { .. } | Op::Expect(_) => return Ok(false),
                }
                Ok(true)
            }
        }
    };
}

steps! {
    /// `new V KIND`: C++ creates an object and returns it into V.
    New "new" weight 4 { v: Var, kind: ObjKind };
    /// `ret V H`: C++ returns the object H holds into V.
    Ret "ret" weight 4 { v: Var, h: Holder };
    /// `echo V U`: `V = f(U)`, f returns its argument.
    Echo "echo" weight 2 { v: Var, u: Var };
    /// `get V U`: `V = U.x`.
    Get "get" weight 3 { v: Var, u: Var };
    /// `set U V`: `U.x = V`.
    Set "set" weight 3 { u: Var, v: Var };
    /// `unset U`: `U.x = None`.
    Unset "unset" weight 1 { u: Var };
    /// `clone V U`: `V = U`.
    Clone "clone" weight 2 { v: Var, u: Var };
    /// `drop V`: `del V`.
    Drop "drop" weight 4 { v: Var };
    /// `hold H V`: a C++ holder takes a strong ref on V's object.
    Hold "hold" weight 4 { h: Holder, v: Var };
    /// `move H V`: `V._move()` into holder H.
    Move "move" weight 2 { h: Holder, v: Var };
    /// `release H`: the holder lets go, on the interpreter's thread.
    Release "release" weight 3 { h: Holder };
    /// `release_foreign H`: the same on a thread without the GIL.
    ReleaseForeign "release_foreign" weight 2 { h: Holder };
    /// `weak W V`: a C++ weak ref on V's object.
    Weak "weak" weight 2 { w: WeakSlot, v: Var };
    /// `unweak W`: the weak ref goes.
    Unweak "unweak" weight 1 { w: WeakSlot };
    /// `lock V W`: upgrade the weak ref and return the object into V.
    Lock "lock" weight 3 { v: Var, w: WeakSlot };
    /// `cycle V`: V's wrapper moves into a reference cycle.
    Cycle "cycle" weight 2 { v: Var };
    /// `collect`: the garbage collector runs.
    Collect "collect" weight 2;
    /// `shutdown`: the interpreter starts finalizing.
    Shutdown "shutdown" weight 1;
    /// `pickle V U`: `V = pickle.loads(pickle.dumps(U))`, a copy of the
    /// object graph U's object reaches (contract §4.1).
    Pickle "pickle" weight 2 { v: Var, u: Var };
    /// `pyweak V`: a Python weak reference to V's wrapper, made and
    /// dropped (`weakref.ref(V)`).
    PyWeak "pyweak" weight 1 { v: Var };
    /// `finalize`: the interpreter ends (`Py_FinalizeEx`); only C++ steps
    /// act after it.
    Finalize "finalize" weight 1;
    /// `call V H`: C++ calls a Python callback with H's object (borrowed)
    /// and returns what it returns (its argument) into V.
    Call "call" weight 2 { v: Var, h: Holder };
    /// `call_move V H`: the same with H's reference moved into the call
    /// (an rvalue): H is empty after it.
    CallMove "call_move" weight 1 { v: Var, h: Holder };
    /// `oom K`: the next step that runs has the K-th allocation it makes
    /// through Python's allocators fail (contract §4.4).
    Oom "oom" weight 1 { k: AllocNo };
    /// `call_raise H`: C++ calls a Python callback with H's object
    /// (borrowed); the callback raises, and the error comes back through
    /// C++ to Python: the result *raised* (contract §4.1).
    CallRaise "call_raise" weight 1 { h: Holder };
    /// `call_move_raise H`: the same with H's reference moved into the
    /// call (an rvalue): H is empty after it.
    CallMoveRaise "call_move_raise" weight 1 { h: Holder };
}

impl StepKind {
    /// The step acts after the interpreter has ended (`finalize`, contract
    /// §4.1 R16): a C++ holder's or weak slot's release, on either thread.
    /// Every other step needs Python, and does nothing then.
    pub fn needs_no_python(self) -> bool {
        matches!(
            self,
            StepKind::Release | StepKind::ReleaseForeign | StepKind::Unweak
        )
    }
}

impl Op {
    /// The vars whose wrapper this step needs live (contract §4.1, the
    /// source-slot rule): `echo`/`get`/`unset` U, `set` U and V,
    /// `hold`/`move`/`weak` V. See [`Op::source_rule`].
    #[inline]
    pub fn live_operands(&self) -> [Option<Var>; 2] {
        match *self {
            Op::Echo { u, .. } | Op::Get { u, .. } | Op::Unset { u } => [Some(u), None],
            Op::Set { u, v } => [Some(u), Some(v)],
            Op::Hold { v, .. } | Op::Move { v, .. } | Op::Weak { v, .. } => [Some(v), None],
            _ => [None, None],
        }
    }

    /// The source-slot rule (§4.1), the one place it is written: given
    /// what each var holds, a step needing live wrappers does nothing if
    /// any of them is empty or None, else fails with *moved* if any is
    /// moved-from, else runs. Steps needing none always run.
    #[inline]
    pub fn source_rule(&self, holds: impl Fn(Var) -> Holds) -> SourceRule {
        let rule = |h: Holds| match h {
            Holds::Nothing => SourceRule::Skip,
            Holds::Moved => SourceRule::Moved,
            Holds::Live => SourceRule::Run,
        };
        match self.live_operands() {
            [None, _] => SourceRule::Run,
            [Some(a), None] => rule(holds(a)),
            // Any empty source wins over a moved one (`set U V`).
            [Some(a), Some(b)] => match (rule(holds(a)), rule(holds(b))) {
                (SourceRule::Skip, _) | (_, SourceRule::Skip) => SourceRule::Skip,
                (SourceRule::Moved, _) | (_, SourceRule::Moved) => SourceRule::Moved,
                _ => SourceRule::Run,
            },
        }
    }
}

/// What a var holds, as far as [`Op::source_rule`] is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holds {
    /// Empty, or Python's `None`.
    Nothing,
    /// A moved-from wrapper (`chandle == NULL`).
    Moved,
    /// A wrapper with its object.
    Live,
}

/// What [`Op::source_rule`] decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceRule {
    /// The step does nothing (result ok).
    Skip,
    /// The step fails with *moved* and changes nothing.
    Moved,
    /// The step runs.
    Run,
}

impl From<crate::state::VarState> for Holds {
    fn from(v: crate::state::VarState) -> Holds {
        use crate::state::VarState;
        match v {
            VarState::Empty | VarState::None => Holds::Nothing,
            VarState::Moved(_) => Holds::Moved,
            VarState::Wrapper(_) => Holds::Live,
        }
    }
}
