//! Implementations the executor drives. Each backend declares the step
//! kinds it can express and the parts of the abstract state it can see;
//! the generator, the replayer and the comparison respect both.

use crate::program::{ObjKind, Op, StepSet, Var};
use crate::state::{
    AbstractState, Binding, HandleState, StepResult, Totals, WrapperNo, WrapperState,
};

/// Parts of the abstract state (contract §5) a backend can observe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observes {
    /// Strong counts of handles.
    pub strong: bool,
    /// Weak counts and whether storage is allocated.
    pub weak: bool,
    /// Bindings (tag words).
    pub binding: bool,
    /// Fields, as handle numbers.
    pub fields: bool,
    /// Wrappers' life (allocated, freed, leaked).
    pub wrappers: bool,
    /// Wrappers' Python refs as the program holds them (vars and cycles)
    /// and their `chandle`.
    pub wrapper_refs: bool,
    /// World totals.
    pub totals: bool,
    /// Whether each held wrapper is tracked by the cyclic GC.
    pub tracked: bool,
    /// Finalizers run ([`Totals::finalized`]).
    pub finalized: bool,
}

/// Which wrapper types of an implementation are GC types, so that a held
/// wrapper of them is tracked by the cyclic GC (`gc.is_tracked`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcWrappers {
    /// Every wrapper type (upstream's: Cython cdef classes; design U needs
    /// an eligible type to be one).
    All,
    /// Only the types that may not be cached (design S: the eligible type
    /// is not a GC type, so that its finalizer runs at every generation).
    IneligibleTypes,
}

impl Observes {
    pub const ALL: Observes = Observes {
        strong: true,
        weak: true,
        binding: true,
        fields: true,
        wrappers: true,
        wrapper_refs: true,
        totals: true,
        tracked: true,
        finalized: true,
    };

    /// Everything the invariants of §3 are about is observed (GC tracking
    /// and finalizer counts are not among them).
    pub fn covers_invariants(self) -> bool {
        Observes {
            tracked: true,
            finalized: true,
            ..self
        } == Observes::ALL
    }

    /// Blank out what is not observed, so that model and backend states
    /// compare equal on the rest.
    pub fn mask(self, s: &mut AbstractState) {
        if self == Observes::ALL {
            return;
        }
        let all_of_handles = self.strong && self.weak && self.binding && self.fields;
        let all_of_wrappers = self.wrappers && self.wrapper_refs && self.tracked;
        if all_of_handles && all_of_wrappers && self.totals {
            if !self.finalized {
                s.totals.finalized = 0;
            }
            return;
        }
        for (_, h) in s.handles.entries_mut() {
            let keep = *h;
            *h = HandleState::FREED;
            if self.strong {
                h.strong = keep.strong;
            }
            if self.weak {
                h.weak = keep.weak;
                h.storage = keep.storage;
            }
            if self.binding {
                h.binding = keep.binding;
            } else {
                h.binding = Binding::Detached;
            }
            if self.fields {
                h.field = keep.field;
            }
        }
        for (_, w) in s.wrappers.entries_mut() {
            if !self.wrapper_refs {
                *w = WrapperState::FREED;
            } else if !self.wrappers {
                w.life = WrapperState::FREED.life;
            }
            if !self.tracked {
                w.tracked = false;
            }
        }
        let finalized = if self.finalized {
            s.totals.finalized
        } else {
            0
        };
        if !self.totals {
            s.totals = Totals::default();
        }
        s.totals.finalized = finalized;
    }
}

/// What a backend can do and see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    pub steps: StepSet,
    pub observes: Observes,
    /// Which of its wrapper types are GC types (what `tracked` is
    /// predicted from).
    pub gc_wrappers: GcWrappers,
    /// The object kinds the backend makes through paths of its own (the
    /// others it makes as one of these): what `pytie exhaust` enumerates.
    pub kinds: &'static [ObjKind],
}

/// An implementation of PyObject tying the executor can drive. Calls come
/// in this order: `begin`, then per step `apply`, `observe`,
/// `violations`, `identity`; then the teardown helpers and `leftovers`;
/// `abandon` after a failure instead.
pub trait Backend {
    /// Shown in reports, e.g. "pytie runtime (design S)".
    fn name(&self) -> String;
    fn caps(&self) -> Caps;
    /// Is tying switched on in this implementation? Off (a library that
    /// ships it dormant): the executor's model treats every object as
    /// untied (contract §3 "Untied objects never bind").
    fn tying(&self) -> bool {
        true
    }
    /// `Some(name and version)` when this backend is a third-party library:
    /// its failures are reported as upstream failures.
    fn upstream(&self) -> Option<String> {
        None
    }
    /// Start a program in an empty world (numbering from 0). Fails when
    /// something of an earlier program is still allocated.
    fn begin(&mut self) -> Result<(), String>;
    /// A step this backend will not run although its kind is supported,
    /// by a documented rule (a recorded upstream finding that would crash
    /// or poison the process): the reason, or `None` to run it. The
    /// executor then skips the step on both sides and reports the refusal.
    fn refuse(&mut self, _op: &Op) -> Option<String> {
        None
    }
    /// Run one state-changing step (never `mark`/`expect`).
    fn apply(&mut self, op: &Op) -> StepResult;
    /// After `apply`: a documented workaround for a recorded upstream
    /// finding that this step needed (what was done and why), if any.
    fn worked_around(&mut self) -> Option<String> {
        None
    }
    /// Fill `out` with the observed abstract state (all of it; the
    /// executor masks what `caps().observes` leaves out).
    fn observe(&mut self, out: &mut AbstractState);
    /// After a step an `oom` armed (contract §4.4): whether the step made
    /// the allocation that was to fail (`false`: it made fewer). `None`
    /// for a backend without `oom`.
    fn allocation_failed(&mut self) -> Option<bool> {
        None
    }
    /// Runtime assertion failures since the last call (empty when none).
    fn violations(&mut self) -> Vec<String>;
    /// The address (`id()`) of the wrapper var `v` holds, if any.
    fn identity(&mut self, v: Var) -> Option<usize>;
    /// Wrappers currently held by reference cycles awaiting collection,
    /// one entry per cycle (for the invariants' reference accounting).
    fn cycle_members(&self) -> &[WrapperNo];
    /// Teardown (§6): clear every live object's field, in creation order.
    fn clear_all_fields(&mut self);
    /// Teardown (§6): the test-only door for wrappers leaked at shutdown;
    /// also resets the shutdown flag.
    fn reclaim_leaked(&mut self);
    /// What is still allocated after teardown, or `None`.
    fn leftovers(&mut self) -> Option<String>;
    /// Give up a broken world without freeing anything.
    fn abandon(&mut self);
}
