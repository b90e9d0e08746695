//! The program language of contract §4: steps over vars, holders and weak
//! slots, in a text form (`text`) for people and a binary form (`binary`)
//! for the fuzzer.

pub mod binary;
pub mod mutate;
#[cfg(feature = "proptest")]
pub mod strategy;
pub mod text;
pub mod vocab;

pub use vocab::{Holds, Op, Operand, Sort, SourceRule, StepKind};

use std::fmt;

/// Python variable slots `v0`..`v7`.
pub const VARS: usize = 8;
/// C++ holders `h0`..`h3`.
pub const HOLDERS: usize = 4;
/// C++ weak slots `w0`, `w1`.
pub const WEAKS: usize = 2;
/// Identity labels `m0`..`m7` (text form only).
pub const MARKS: usize = 8;
/// The most steps (assertions included) a text program may have: a longer
/// one is an error at load time, naming its first step past the limit. A
/// run costs time linear in its steps (about 2 s per million `new` steps
/// in a release build, BENCHMARKS.md); binary programs hold at most
/// [`binary::MAX_STEPS`].
pub const MAX_PROGRAM_STEPS: usize = 1_000_000;

/// A Python variable slot, `v0`..`v7`. Always `< VARS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub u8);
/// A C++ holder, `h0`..`h3`. Always `< HOLDERS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Holder(pub u8);
/// A C++ weak slot, `w0`, `w1`. Always `< WEAKS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WeakSlot(pub u8);
/// `oom`'s allocation number K (1-based): the byte is K - 1, so K runs
/// from 1 to [`AllocNo::MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocNo(pub u8);

impl AllocNo {
    /// The largest K (the binary byte is reduced modulo it).
    pub const MAX: u16 = 255;
    /// K, from 1.
    pub fn k(self) -> u32 {
        u32::from(self.0) + 1
    }
    /// The allocation number K (`1..=MAX`).
    pub fn of(k: u32) -> Option<AllocNo> {
        (1..=u32::from(Self::MAX))
            .contains(&k)
            .then(|| AllocNo((k - 1) as u8))
    }
}

impl fmt::Display for AllocNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.k())
    }
}

/// An identity label, `m0`..`m7`. Always `< MARKS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mark(pub u8);

impl Var {
    pub fn idx(self) -> usize {
        self.0 as usize
    }
}
impl Holder {
    pub fn idx(self) -> usize {
        self.0 as usize
    }
}
impl WeakSlot {
    pub fn idx(self) -> usize {
        self.0 as usize
    }
}
impl Mark {
    pub fn idx(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}
impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "h{}", self.0)
    }
}
impl fmt::Display for WeakSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w{}", self.0)
    }
}
impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}", self.0)
    }
}

/// What `new` constructs (contract §4.1, §2.2): where the object is
/// allocated and what its wrapper's type is. The model knows each kind only
/// by [`ObjKind::is_tied`] and [`ObjKind::is_eligible`]; the backends make
/// each through its own path (docs/tvmffi-tied.md "Object kinds").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjKind {
    /// Tied allocation, eligible wrapper type.
    Plain,
    /// Tied allocation, wrapper type with an instance `__dict__` (ineligible).
    Dict,
    /// Builtin allocator: never binds.
    Untied,
    /// Legacy layout (contract §2.1): allocated by code built against
    /// pre-tying headers, with no allocation prefix at all; nothing may
    /// read before its body. Never binds (L1), as an untied object.
    Legacy,
    /// Made by C++ (`make_object`, the library's object allocator) and
    /// returned to Python for the first time; eligible wrapper type.
    Cpp,
    /// A container that owns its one element (tvm-ffi `List`): the element
    /// is its field, released when the container dies. Eligible.
    List,
    /// A mutable map that owns its one value, under the key `"x"` (tvm-ffi
    /// `Dict`): the value is its field. Eligible.
    Map,
    /// Wrapper type with a finalizer (`__del__`): ineligible (a genuine
    /// free and one `__del__` per drop).
    Del,
    /// Wrapper type with `__slots__ = ("__weakref__",)`: eligible.
    Weakref,
    /// Constructed through a Python subclass of the plain wrapper type that
    /// the library never registered: the wrapper `new` makes has CPython's
    /// `tp_free` (ineligible); the object's type is the plain one, so every
    /// later fresh wrapper is a plain one (eligible).
    Sub,
    /// A subclass of the plain wrapper type registered with the library
    /// (its own type key): eligible.
    Derived,
    /// A registered wrapper type whose construction raises unless its
    /// constructor makes it (`new`): every wrapper the library makes for a
    /// return raises (contract §2.2, R20), the error *refused*. Eligible.
    Fragile,
}

impl ObjKind {
    /// The kinds of layout version 3, one for each way the model can tell
    /// objects apart (tied and eligible, tied and ineligible, untied,
    /// legacy): every other kind is, to the model, one of these. What
    /// `pytie exhaust` takes on a backend that makes no kind through a path
    /// of its own (pytie's runtime).
    pub const CLASSIC: [ObjKind; 4] = [
        ObjKind::Plain,
        ObjKind::Dict,
        ObjKind::Untied,
        ObjKind::Legacy,
    ];
    /// The classic kinds and `fragile` (R20): the kinds pytie's runtime
    /// makes through paths of its own.
    pub const RUNTIME: [ObjKind; 5] = [
        ObjKind::Plain,
        ObjKind::Dict,
        ObjKind::Untied,
        ObjKind::Legacy,
        ObjKind::Fragile,
    ];
    pub const ALL: [ObjKind; 12] = [
        ObjKind::Plain,
        ObjKind::Dict,
        ObjKind::Untied,
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
    pub const fn name(self) -> &'static str {
        match self {
            ObjKind::Plain => "plain",
            ObjKind::Dict => "dict",
            ObjKind::Untied => "untied",
            ObjKind::Legacy => "legacy",
            ObjKind::Cpp => "cpp",
            ObjKind::List => "list",
            ObjKind::Map => "map",
            ObjKind::Del => "del",
            ObjKind::Weakref => "weakref",
            ObjKind::Sub => "sub",
            ObjKind::Derived => "derived",
            ObjKind::Fragile => "fragile",
        }
    }
    /// Allocated with the tied prefix: it binds (with tying on).
    pub fn is_tied(self) -> bool {
        !matches!(self, ObjKind::Untied | ObjKind::Legacy)
    }
    /// Tied, and the wrappers a return makes for it (of the object's
    /// registered type) may be cached Inactive and revived (contract §2.2:
    /// no instance dict, no finalizer, the library's `tp_free`).
    pub fn is_eligible(self) -> bool {
        self.is_tied() && !matches!(self, ObjKind::Dict | ObjKind::Del)
    }
    /// The same for the wrapper `new` makes (of the constructor's type):
    /// differs only for `sub`.
    pub fn constructed_eligible(self) -> bool {
        self.is_eligible() && self != ObjKind::Sub
    }
    /// Whether the *type* of a wrapper of this kind may be cached (no
    /// instance dict, no finalizer, the library's `tp_free`), whether or
    /// not the object is tied: `first` for the wrapper `new` makes.
    pub fn wrapper_type_eligible(self, first: bool) -> bool {
        match self {
            ObjKind::Dict | ObjKind::Del => false,
            ObjKind::Sub => !first,
            _ => true,
        }
    }
    /// Its wrappers' type has a finalizer (`__del__`), which runs once at
    /// each genuine free.
    pub fn has_finalizer(self) -> bool {
        self == ObjKind::Del
    }
    /// A wrapper the library makes for it other than by its constructor
    /// (a return's, a revival's under design U) raises (R20).
    pub fn refuses_construction(self) -> bool {
        self == ObjKind::Fragile
    }
    /// Its wrappers' type has a `__weakref__` slot: Python weak references
    /// to them can be made (`pyweak`).
    pub fn has_weakref_slot(self) -> bool {
        self == ObjKind::Weakref
    }
    /// Its field is stored by a Python `__init__` when the library builds
    /// the object from its parts (a `py_class` type, contract §2.2): the
    /// part is returned to Python first, as an argument. A C++ class or
    /// container is built in C++.
    pub fn built_by_python(self) -> bool {
        !matches!(self, ObjKind::Cpp | ObjKind::List | ObjKind::Map)
    }
    /// A parent of this kind receives `part` through a return to Python (a
    /// `py_class` setter's or `__init__`'s conversion), which a `part`
    /// whose wrappers refuse construction refuses (R20).
    pub fn refuses_as_part(self, part: ObjKind) -> bool {
        self.built_by_python() && part.refuses_construction()
    }
    /// The copy `pickle` makes of an object chain of these kinds (root
    /// first) has a part its parent refuses (R20).
    pub fn copy_refused(chain: &[ObjKind]) -> bool {
        chain
            .windows(2)
            .any(|p| p[0].copied().refuses_as_part(p[1].copied()))
    }
    /// The kind of the copy `pickle` makes of an object of this kind: its
    /// registered type's, made by the library (a legacy object's copy is
    /// allocated with the tied prefix: a plain one).
    pub fn copied(self) -> ObjKind {
        match self {
            ObjKind::Legacy => ObjKind::Plain,
            k => k,
        }
    }
}

impl Op {
    /// True for `mark` and `expect`, which never change state.
    pub fn is_assertion(&self) -> bool {
        self.kind().is_none()
    }
}

/// A set of step kinds (bit `k` = `StepKind` with discriminant `k`).
/// Backends declare what they support with it; swarm testing picks one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StepSet(pub u32);

impl StepSet {
    pub const ALL: StepSet = StepSet((1 << StepKind::COUNT) - 1);
    pub const EMPTY: StepSet = StepSet(0);
    pub fn contains(self, k: StepKind) -> bool {
        self.0 & (1 << k as u32) != 0
    }
    pub fn with(self, k: StepKind) -> StepSet {
        StepSet(self.0 | (1 << k as u32))
    }
    /// The kinds in both sets.
    pub fn and(self, other: StepSet) -> StepSet {
        StepSet(self.0 & other.0)
    }
    pub fn without(self, k: StepKind) -> StepSet {
        StepSet(self.0 & !(1 << k as u32))
    }
    pub fn iter(self) -> impl Iterator<Item = StepKind> {
        StepKind::ALL.into_iter().filter(move |k| self.contains(*k))
    }
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// `expect` forms (text only, contract §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Expect {
    /// `expect V is U` (`negated`: `is not`).
    IsVar { v: Var, u: Var, negated: bool },
    /// `expect V is M` (`negated`: `is not`).
    IsMark { v: Var, m: Mark, negated: bool },
    /// `expect V obj M` (`negated`: `obj not`): V's wrapper is one of the
    /// object `mark M` saw (the same chandle), whichever wrapper it is.
    ObjMark { v: Var, m: Mark, negated: bool },
    /// `expect V none`: V is empty or holds None.
    None { v: Var },
    /// `expect V moved`: V holds a moved-from wrapper.
    Moved { v: Var },
    /// `expect strong V N`.
    Strong { v: Var, n: u32 },
    /// `expect weak V N`.
    Weak { v: Var, n: u32 },
    /// `expect wrappers N`: N wrappers are alive to Python (held by a var
    /// or a cycle; an Inactive cached or a leaked one is not).
    Wrappers { n: u32 },
    /// `expect finalized N`: `__del__` has run N times this program.
    Finalized { n: u32 },
}

/// A program: steps run in order from an empty world.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Program {
    pub ops: Vec<Op>,
}

impl Program {
    pub fn new(ops: Vec<Op>) -> Program {
        Program { ops }
    }
    /// The kinds of step this program uses.
    pub fn kinds(&self) -> StepSet {
        self.ops
            .iter()
            .filter_map(Op::kind)
            .fold(StepSet::EMPTY, StepSet::with)
    }
}
