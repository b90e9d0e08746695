//! The reference model (contract §3 to §6). No `unsafe`, no Python.
//!
//! A plain, direct reading of `docs/contract.md`: native objects
//! are counters (§2), bindings follow the state machine of §3, steps follow
//! §4.1, the state is the one of §5 (`crate::state`), teardown helpers are
//! those of §6. Section and table-row citations are in the comments.
//!
//! Representation: the model keeps each handle's `HandleState` and each
//! wrapper's `WrapperState` exactly as they are observed, so `observe` is a
//! copy. A handle whose storage is freed is set to `HandleState::FREED`.
#![forbid(unsafe_code)]

pub mod canon;
#[cfg(test)]
mod tests;
pub mod transition;

use crate::program::{HOLDERS, Holder, ObjKind, Op, SourceRule, VARS, Var, WEAKS, WeakSlot};
use crate::state::{
    AbstractState, Binding, HandleNo, HandleState, StepResult, Totals, VarState, WrapperLife,
    WrapperNo, WrapperState,
};
use transition::{Cause, Edge, Transition};

/// Contract §3 "Two designs of the same contract". S is the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Design {
    #[default]
    S,
    U,
}

/// What a wrapper's type is (contract §2.2), as far as the model tells
/// types apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct WrapperType {
    /// It may be cached Inactive (the wrapper `new` makes of a `sub`
    /// object is not, later ones are). Only a canonical wrapper, of a tied
    /// object, ever is.
    eligible: bool,
    /// It has a finalizer (`__del__`).
    finalizer: bool,
    /// It has a `__weakref__` slot.
    weakref_slot: bool,
    /// Its `__new__` raises but in a constructor (`fragile`, R20).
    refuses: bool,
}

impl WrapperType {
    /// The type of `kind`'s wrappers (`first`: the one `new` makes).
    fn of(kind: ObjKind, first: bool) -> WrapperType {
        WrapperType {
            eligible: kind.wrapper_type_eligible(first),
            finalizer: kind.has_finalizer(),
            weakref_slot: kind.has_weakref_slot(),
            refuses: kind.refuses_construction(),
        }
    }
}

/// What a var slot holds. Whether a held wrapper is moved-from is a
/// property of the wrapper (its `chandle`), decided when observing: a move
/// through one var makes every var holding that wrapper see it moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Val {
    Empty,
    None,
    W(WrapperNo),
}

#[derive(Clone, Debug)]
pub struct Model {
    design: Design,
    /// Tying switched on. Off models a library that ships the machinery
    /// dormant (every published tvm-ffi wheel): every object then behaves
    /// as untied (§3 "Untied objects never bind"), whatever `new` asks.
    tying: bool,
    vars: [Val; VARS],
    holders: [Option<HandleNo>; HOLDERS],
    weaks: [Option<HandleNo>; WEAKS],
    /// Indexed by `HandleNo` (creation order of `new`): exactly what
    /// `observe` reports for each handle.
    handles: Vec<HandleState>,
    /// What `new` asked for, by `HandleNo`.
    kinds: Vec<ObjKind>,
    /// Indexed by `WrapperNo` (creation order of fresh wrappers).
    wrappers: Vec<WrapperState>,
    /// Indexed by `WrapperNo`: what its type is (§2.2).
    types: Vec<WrapperType>,
    /// Finalizers run (wrappers with one genuinely freed) this program.
    finalized: u32,
    /// The handles and wrappers not freed, in number order (pruned after
    /// every step): what `observe` walks, so that its cost is in live
    /// objects. Freed is final in the model.
    open_handles: Vec<HandleNo>,
    open_wrappers: Vec<WrapperNo>,
    /// Python reference cycles awaiting `collect`, in creation order; each
    /// holds one Python ref on its wrapper.
    cycles: Vec<WrapperNo>,
    /// The process-wide flag of §3 "Shutdown".
    shutdown: bool,
    /// The interpreter has ended (`finalize`, §4.1 R16): only the steps
    /// that need no Python act.
    ended: bool,
    /// Result of the last state-changing step.
    result: StepResult,
    /// The transitions the last step (or teardown helper) took, in order.
    transitions: Vec<Transition>,
    /// What the transitions being taken now are caused by.
    cause: Cause,
    /// Teardown (§6) has begun: set by `clear_all_fields`.
    teardown: bool,
    /// Handles and wrappers freed since the open lists were pruned.
    freed: u32,
}

impl Model {
    pub fn new(design: Design) -> Model {
        Model {
            design,
            tying: true,
            vars: [Val::Empty; VARS],
            holders: [None; HOLDERS],
            weaks: [None; WEAKS],
            handles: Vec::new(),
            kinds: Vec::new(),
            wrappers: Vec::new(),
            types: Vec::new(),
            finalized: 0,
            open_handles: Vec::new(),
            open_wrappers: Vec::new(),
            cycles: Vec::new(),
            shutdown: false,
            ended: false,
            result: StepResult::Ok,
            transitions: Vec::new(),
            cause: Cause {
                step: None,
                cascade: false,
                after_shutdown: false,
            },
            teardown: false,
            freed: 0,
        }
    }

    /// The same model with tying switched off: every object is untied.
    pub fn without_tying(mut self) -> Model {
        self.tying = false;
        self
    }

    /// Is tying switched on?
    pub fn tying(&self) -> bool {
        self.tying
    }

    pub fn design(&self) -> Design {
        self.design
    }

    /// Back to the empty world: no handles, no wrappers, numbering from 0,
    /// shutdown flag off, all slots empty.
    pub fn reset(&mut self) {
        self.vars = [Val::Empty; VARS];
        self.holders = [None; HOLDERS];
        self.weaks = [None; WEAKS];
        self.handles.clear();
        self.kinds.clear();
        self.wrappers.clear();
        self.types.clear();
        self.finalized = 0;
        self.open_handles.clear();
        self.open_wrappers.clear();
        self.freed = 0;
        self.cycles.clear();
        self.shutdown = false;
        self.ended = false;
        self.result = StepResult::Ok;
        self.transitions.clear();
        self.cause.step = None;
        self.teardown = false;
    }

    /// The transitions (§3) the last `apply`, `clear_all_fields` or
    /// `reclaim_leaked` took, in the order taken.
    pub fn transitions(&self) -> &[Transition] {
        &self.transitions
    }

    /// Apply one step (§4.1). `mark` and `expect` change nothing, not even
    /// the recorded result of the last step. After [`Self::clear_all_fields`]
    /// (teardown, §6) steps are teardown's: their transitions' cause says so.
    pub fn apply(&mut self, op: &Op) -> StepResult {
        let Some(kind) = op.kind() else {
            return StepResult::Ok;
        };
        self.transitions.clear();
        self.cause.cascade = false;
        self.cause.after_shutdown = self.shutdown;
        self.cause.step = (!self.teardown).then_some(kind);
        // The source-slot rule (§4.1), written once in the vocabulary. After
        // `finalize` only the C++ steps act (R16).
        let rule = if self.ended && !kind.needs_no_python() {
            SourceRule::Skip
        } else {
            op.source_rule(|v| self.var(v).into())
        };
        let r = match rule {
            SourceRule::Skip => StepResult::Ok,
            SourceRule::Moved => StepResult::Moved,
            SourceRule::Run => self.run(op),
        };
        self.result = r;
        self.prune();
        r
    }

    /// Forget freed handles and wrappers in the open lists, once at least 64
    /// and half the lists were freed since the last time: amortized O(1) a
    /// free, and never in a short program. Everything that walks the lists
    /// skips freed entries.
    fn prune(&mut self) {
        let open = self.open_handles.len() + self.open_wrappers.len();
        if self.freed < 64 || (self.freed as usize) * 2 < open {
            return;
        }
        self.freed = 0;
        let (handles, wrappers) = (&self.handles, &self.wrappers);
        self.open_handles
            .retain(|&h| handles[h as usize] != HandleState::FREED);
        self.open_wrappers
            .retain(|&w| wrappers[w as usize] != WrapperState::FREED);
    }

    /// A step whose live operands are live (§4.1, checked by `apply`);
    /// its result.
    fn run(&mut self, op: &Op) -> StepResult {
        match *op {
            Op::Mark { .. } | Op::Expect(_) => {}
            Op::New { v, kind } => {
                let h = self.new_handle(kind);
                let w = self.construct(h);
                // The constructor's wrapper has the kind's own type.
                self.types[w as usize].eligible = kind.wrapper_type_eligible(true);
                self.assign(v, Val::W(w));
            }
            Op::Ret { v, h } => {
                if let Some(h) = self.holders[h.idx()] {
                    self.inc_ref(h);
                    return self.ret_into(v, h);
                }
            }
            // `V = f(U)`: f receives U's object and returns it (IncRef).
            Op::Echo { v, u } => {
                let (_, h) = self.live(u);
                self.inc_ref(h);
                return self.ret_into(v, h);
            }
            // `V = U.x`: None if the field is empty.
            Op::Get { v, u } => {
                let (_, h) = self.live(u);
                match self.handles[h as usize].field {
                    None => self.assign(v, Val::None),
                    Some(f) => {
                        self.inc_ref(f);
                        return self.ret_into(v, f);
                    }
                }
            }
            // `U.x = V`: IncRef V's object, store it in U's field, release
            // the old field content.
            Op::Set { u, v } => {
                let ((_, target), (_, obj)) = (self.live(u), self.live(v));
                // A Python-built type's field setter converts the value
                // through a return (upstream's `_f_type_convert`), which
                // constructs a wrapper where the object has no Active one:
                // with tying off, a `fragile` value is refused (R20) and
                // nothing is stored.
                if self.kinds[target as usize].refuses_as_part(self.kinds[obj as usize])
                    && !matches!(self.handles[obj as usize].binding, Binding::Active(_))
                {
                    return StepResult::Refused;
                }
                self.inc_ref(obj);
                let old = self.handles[target as usize].field.replace(obj);
                self.release(old);
            }
            // `U.x = None`.
            Op::Unset { u } => {
                let (_, h) = self.live(u);
                let old = self.handles[h as usize].field.take();
                self.release(old);
            }
            // `V = U`, for moved-from wrappers too; U empty or None: nothing.
            Op::Clone { v, u } => {
                if let Val::W(w) = self.vars[u.idx()] {
                    self.wrappers[w as usize].refs += 1;
                    self.assign(v, Val::W(w));
                }
            }
            // `del V`; a var holding None stays None.
            Op::Drop { v } => {
                if let Val::W(w) = self.vars[v.idx()] {
                    self.vars[v.idx()] = Val::Empty;
                    self.py_decref(w);
                }
            }
            Op::Hold { h, v } => {
                let (_, obj) = self.live(v);
                self.inc_ref(obj);
                self.store_holder(h, obj);
            }
            // §3 row "move": detach before nulling chandle; W's +1 goes to
            // the holder; W stays in V, moved-from.
            Op::Move { h, v } => {
                let (w, obj) = self.live(v);
                if self.detach_if_canonical(obj, w) {
                    self.took(Edge::Move, obj);
                }
                self.wrappers[w as usize].chandle = None;
                self.store_holder(h, obj);
            }
            // The two releases are the same in the model (the thread only
            // matters to the runtime, §3 "Threads").
            Op::Release { h } | Op::ReleaseForeign { h } => {
                let old = self.holders[h.idx()].take();
                self.release(old);
            }
            Op::Weak { w, v } => {
                let (_, obj) = self.live(v);
                self.handles[obj as usize].weak += 1;
                let old = self.weaks[w.idx()].replace(obj);
                self.weak_release(old);
            }
            Op::Unweak { w } => {
                let old = self.weaks[w.idx()].take();
                self.weak_release(old);
            }
            Op::Lock { v, w } => return self.step_lock(v, w),
            // V's wrapper (moved-from too) moves into a new cycle with the
            // ref V had; V becomes empty. Empty or None: nothing.
            Op::Cycle { v } => {
                if let Val::W(w) = self.vars[v.idx()] {
                    self.vars[v.idx()] = Val::Empty;
                    self.cycles.push(w);
                }
            }
            // All cycles die, dropping their refs in creation order. Taking
            // the vector and putting it back keeps its capacity.
            Op::Collect => {
                let mut cycles = std::mem::take(&mut self.cycles);
                for &w in &cycles {
                    self.py_decref(w);
                }
                cycles.clear();
                self.cycles = cycles;
            }
            Op::Shutdown => self.shutdown = true,
            Op::Finalize => self.finalize(),
            // Arms an allocation failure in the next step: what that step
            // may then leave is the executor's to judge (§4.4), with
            // `failed_step` below.
            Op::Oom { .. } => {}
            // C++ passes H's object to a Python callback: borrowed (the
            // argument's wrapper takes a new +1) or moved (it takes H's).
            Op::Call { v, h } => {
                if let Some(o) = self.holders[h.idx()] {
                    self.inc_ref(o);
                    return self.callback_into(v, o);
                }
            }
            Op::CallMove { v, h } => {
                if let Some(o) = self.holders[h.idx()].take() {
                    return self.callback_into(v, o);
                }
            }
            // The same, the callback raising (R19): its argument's wrapper
            // is made and dropped, and the error comes back.
            Op::CallRaise { h } => {
                if let Some(o) = self.holders[h.idx()] {
                    self.inc_ref(o);
                    return self.callback_raises(o);
                }
            }
            Op::CallMoveRaise { h } => {
                if let Some(o) = self.holders[h.idx()].take() {
                    return self.callback_raises(o);
                }
            }
            Op::Pickle { v, u } => return self.step_pickle(v, u),
            // A weak reference to V's wrapper (moved-from too), made and
            // dropped: only its type decides. Empty or None: nothing (R1).
            Op::PyWeak { v } => {
                if let Val::W(w) = self.vars[v.idx()]
                    && !self.types[w as usize].weakref_slot
                {
                    return StepResult::NoWeakref;
                }
            }
        }
        StepResult::Ok
    }

    /// Teardown helper (§6): in increasing handle-number order, every
    /// handle alive at that moment has its field cleared (set empty first,
    /// then the old content released, which may cascade).
    pub fn clear_all_fields(&mut self) {
        self.teardown = true;
        self.transitions.clear();
        self.cause = Cause {
            step: None,
            cascade: false,
            after_shutdown: self.shutdown,
        };
        for k in 0..self.open_handles.len() {
            let h = self.open_handles[k] as usize;
            if self.handles[h].alive() {
                let old = self.handles[h].field.take();
                self.release(old);
            }
        }
        self.prune();
    }

    /// Teardown helper (§6), the test-only door: every wrapper leaked at
    /// shutdown is freed, and the shutdown flag is reset.
    pub fn reclaim_leaked(&mut self) {
        for &w in &self.open_wrappers {
            let w = &mut self.wrappers[w as usize];
            if w.life == WrapperLife::Leaked {
                *w = WrapperState::FREED;
                self.freed += 1;
            }
        }
        self.prune();
        self.shutdown = false;
    }

    /// Wrapper `w`'s type may be cached (§2.2): what decides, with the
    /// implementation's choice of GC types, whether a live wrapper is
    /// tracked by the cyclic GC ([`crate::backend::GcWrappers`]).
    pub fn wrapper_type_eligible(&self, w: WrapperNo) -> bool {
        self.types[w as usize].eligible
    }

    /// Wrapper `w`'s type has a `__weakref__` slot (`pyweak`).
    pub fn weakref_slot(&self, w: WrapperNo) -> bool {
        self.types[w as usize].weakref_slot
    }

    /// Fill `out` with the abstract state of §5.
    pub fn observe(&self, out: &mut AbstractState) {
        out.clear();
        for (i, slot) in out.vars.iter_mut().enumerate() {
            *slot = self.var(Var(i as u8));
        }
        out.holders = self.holders;
        out.weaks = self.weaks;
        out.result = self.result;
        // Freed entries count in no total: walking the open ones is exact.
        let mut t = Totals::default();
        out.handles.set_len(self.handles.len());
        for &h in &self.open_handles {
            let hs = self.handles[h as usize];
            if hs == HandleState::FREED {
                continue;
            }
            t.live_handles += u32::from(hs.alive());
            t.live_blocks += u32::from(hs.storage);
            out.handles.set(h as usize, hs);
        }
        out.wrappers.set_len(self.wrappers.len());
        for &w in &self.open_wrappers {
            let ws = self.wrappers[w as usize];
            if ws == WrapperState::FREED {
                continue;
            }
            match ws.life {
                WrapperLife::Live => t.live_wrappers += 1,
                WrapperLife::Leaked => t.leaked_wrappers += 1,
                WrapperLife::Freed => {}
            }
            out.wrappers.set(w as usize, ws);
        }
        t.finalized = self.finalized;
        out.totals = t;
    }

    // ---- §4.4: a step that failed with MemoryError --------------------------

    /// How many handle and wrapper numbers were given out.
    pub fn numbered(&self) -> (usize, usize) {
        (self.handles.len(), self.wrappers.len())
    }

    /// The step `op` just undone (the model was set back to its state
    /// before it) failed: its result is the error *nomemory*, and what it
    /// gave away before it could fail is gone: `call_move` moved its
    /// holder's reference into the call (an rvalue is moved-from whether
    /// the callee returns or raises), released when the call failed.
    pub fn failed_step(&mut self, op: &Op) {
        self.transitions.clear();
        if let Op::CallMove { h, .. } | Op::CallMoveRaise { h } = *op {
            let o = self.holders[h.idx()].take();
            self.release(o);
            self.prune();
        }
        self.fail_result();
    }

    /// What a failed `move H V` may leave instead of nothing done (§4.4):
    /// V's reference given away to the callee and released when the call
    /// failed (a C++ by-value parameter is destroyed when the call throws):
    /// V's wrapper moved-from as `move` leaves it, H unchanged. `false`
    /// (and the model unchanged) when `op` is no `move` of a live wrapper.
    pub fn failed_move(&mut self, op: &Op) -> bool {
        let Op::Move { v, .. } = *op else {
            return false;
        };
        let live =
            matches!(self.vars[v.idx()], Val::W(w) if self.wrappers[w as usize].chandle.is_some());
        if !live {
            return false;
        }
        self.transitions.clear();
        let (w, obj) = self.live(v);
        if self.detach_if_canonical(obj, w) {
            self.took(Edge::Move, obj);
        }
        self.wrappers[w as usize].chandle = None;
        self.release(Some(obj));
        self.prune();
        self.fail_result();
        true
    }

    /// The last step did its work and then failed: its result is the
    /// error *nomemory*.
    pub fn fail_result(&mut self) {
        self.result = StepResult::NoMemory;
    }

    /// What a failed step may leave (§4.4): an object it made and
    /// destroyed again. Takes the next handle number, freed.
    pub fn skip_handle(&mut self) {
        self.handles.push(HandleState::FREED);
        self.kinds.push(ObjKind::Plain);
    }

    /// What a failed step may leave (§4.4): a wrapper of a type with a
    /// finalizer it made and freed again unseen (not numbered) ran its
    /// `__del__`, as every freed wrapper of that type does.
    pub fn finalized_unseen(&mut self) {
        self.finalized += 1;
    }

    /// What a failed step may leave (§4.4): a wrapper it made and freed
    /// again. Takes the next wrapper number, freed.
    pub fn skip_wrapper(&mut self) {
        self.wrappers.push(WrapperState::FREED);
        self.types.push(WrapperType::default());
    }

    /// What a failed step may leave after `shutdown` (§4.4): a wrapper of
    /// an object it made and destroyed again, cached and then leaked as
    /// §3 "Shutdown" leaks a cached wrapper whose object dies. Takes the
    /// next wrapper number, leaked; `None` (nothing taken) before
    /// `shutdown`.
    pub fn skip_wrapper_leaked(&mut self) -> Option<WrapperNo> {
        if !self.shutdown {
            return None;
        }
        self.skip_wrapper();
        let w = self.wrappers.len() - 1;
        self.wrappers[w] = WrapperState {
            life: WrapperLife::Leaked,
            refs: 0,
            chandle: None,
            tracked: false,
        };
        self.open_wrappers.push(w as WrapperNo);
        Some(w as WrapperNo)
    }

    /// What a failed step may leave (§4.4): a wrapper it returned for
    /// handle `h` (as a `get` would) and dropped when the error came, so
    /// that `h`'s first wrapper may now be cached. The wrapper's number.
    pub fn made_and_dropped(&mut self, h: HandleNo) -> WrapperNo {
        self.inc_ref(h);
        let w = self.construct(h);
        self.py_decref(w);
        self.prune();
        w
    }

    /// What `new` made each handle as (by handle number).
    pub fn kinds(&self) -> &[ObjKind] {
        &self.kinds
    }

    /// Are reference cycles waiting for `collect`?
    pub fn has_cycles(&self) -> bool {
        !self.cycles.is_empty()
    }

    /// The state of one var (same as `observe().vars[v]`).
    pub fn var(&self, v: Var) -> VarState {
        match self.vars[v.idx()] {
            Val::Empty => VarState::Empty,
            Val::None => VarState::None,
            Val::W(w) => match self.wrappers[w as usize].chandle {
                Some(_) => VarState::Wrapper(w),
                None => VarState::Moved(w),
            },
        }
    }

    // ---- steps needing more than a few lines -------------------------------

    /// `lock V W`: W empty: nothing; object dead: `V = None`; else upgrade
    /// (IncRef, §2 "lock") and return it into V.
    fn step_lock(&mut self, v: Var, w: WeakSlot) -> StepResult {
        let Some(h) = self.weaks[w.idx()] else {
            return StepResult::Ok;
        };
        if self.handles[h as usize].alive() {
            self.inc_ref(h);
            return self.ret_into(v, h);
        }
        self.assign(v, Val::None);
        StepResult::Ok
    }

    /// `finalize` (§4.1 R16): the interpreter's real end. The atexit hooks
    /// run (the flag of §3 "Shutdown"); module teardown drops every var's
    /// wrapper, `v0` first (the vars are a module's globals, cleared in
    /// their order); the collection at finalization kills the cycles in
    /// creation order; then Python is gone.
    fn finalize(&mut self) {
        self.shutdown = true;
        self.cause.after_shutdown = true;
        for v in 0..VARS {
            if let Val::W(w) = std::mem::replace(&mut self.vars[v], Val::Empty) {
                self.py_decref(w);
            }
        }
        let cycles = std::mem::take(&mut self.cycles);
        for w in cycles {
            self.py_decref(w);
        }
        self.ended = true;
    }

    /// A Python callback called by C++ with `o` (the caller owns +1 on it,
    /// which the argument's wrapper takes), returning its argument, which C++
    /// returns into `v` (§4.1 R17): the argument is returned to Python
    /// (`make_ret`), the callback's result becomes an owned reference
    /// (IncRef), the callback's frame ends (the argument's Python ref goes),
    /// and C++ returns that reference (`make_ret` into `v`).
    /// A callback that raises receives `o` (the +1 the caller passed goes
    /// into its argument's wrapper) and lets go of it when its frame and
    /// error die.
    /// An argument whose wrapper cannot be constructed (`fragile`, R20)
    /// fails the call before the callback runs: *refused*, the +1 released.
    fn callback_raises(&mut self, o: HandleNo) -> StepResult {
        let Some(arg) = self.make_ret(o) else {
            return StepResult::Refused;
        };
        self.py_decref(arg);
        StepResult::Raised
    }

    fn callback_into(&mut self, v: Var, o: HandleNo) -> StepResult {
        let Some(arg) = self.make_ret(o) else {
            return StepResult::Refused;
        };
        self.inc_ref(o);
        self.py_decref(arg);
        self.ret_into(v, o)
    }

    /// Handle `h` and the objects it reaches through the field, in order;
    /// `None` when the chain comes back to one of them (a cycle).
    fn chain_from(&self, h: HandleNo) -> Option<Vec<HandleNo>> {
        let mut chain = vec![h];
        let mut next = self.handles[h as usize].field;
        while let Some(n) = next {
            if chain.contains(&n) {
                return None;
            }
            chain.push(n);
            next = self.handles[n as usize].field;
        }
        Some(chain)
    }

    /// The kinds of the copies `pickle V U` would make now (root first,
    /// R14): empty when U holds no live wrapper, `None` when U's chain has a
    /// cycle (the step fails with *cyclic*).
    pub fn pickle_copies(&self, u: Var) -> Option<Vec<ObjKind>> {
        let Val::W(w) = self.vars[u.idx()] else {
            return Some(Vec::new());
        };
        let Some(h) = self.wrappers[w as usize].chandle else {
            return Some(Vec::new());
        };
        let chain = self.chain_from(h)?;
        Some(
            chain
                .iter()
                .map(|&o| self.kinds[o as usize].copied())
                .collect(),
        )
    }

    /// The interpreter has ended (`finalize`).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// `pickle V U` (§4.1): `V = pickle.loads(pickle.dumps(U))`. U empty
    /// or None: nothing. U moved-from: V gets a new moved-from wrapper of
    /// U's type. Else the chain of objects U's object reaches through the
    /// field (each object has one) is copied, unless it has a cycle
    /// (*cyclic*, nothing changes). The copies are built deepest first, as a
    /// deserializer builds an object from its parts: each part is created
    /// (the deserializer owns it), and a parent of a kind built by Python
    /// receives it as an argument (a return into a temporary wrapper, which
    /// its `__init__` stores in the field and then drops); the deserializer
    /// lets go of the parts; the root's wrapper is made first by Python, of
    /// U's wrapper's type, and bound by the constructor (`make_new`).
    fn step_pickle(&mut self, v: Var, u: Var) -> StepResult {
        let Val::W(wu) = self.vars[u.idx()] else {
            return StepResult::Ok;
        };
        // The root's wrapper is made by its type's `__new__` (as the
        // deserializer does), which a `fragile` type's raises (R20).
        let ty = self.types[wu as usize];
        if ty.refuses {
            return StepResult::Refused;
        }
        let w = match self.wrappers[wu as usize].chandle {
            None => self.new_wrapper(None, ty),
            Some(h) => {
                let Some(chain) = self.chain_from(h) else {
                    return StepResult::Cyclic;
                };
                // A Python `__init__` receives each part through a return,
                // which a `fragile` part's copy refuses (R20): nothing is
                // left (the copies made die with the error).
                let kinds: Vec<ObjKind> = chain
                    .iter()
                    .map(|&o| self.kinds[o as usize].copied())
                    .collect();
                if ObjKind::copy_refused(&kinds) {
                    return StepResult::Refused;
                }
                let copies: Vec<HandleNo> = chain
                    .iter()
                    .map(|&o| self.new_handle(self.kinds[o as usize].copied()))
                    .collect();
                for i in (0..copies.len() - 1).rev() {
                    let (parent, part) = (copies[i], copies[i + 1]);
                    // A Python `__init__` receives the part as an argument.
                    let temp = self.kinds[parent as usize].built_by_python().then(|| {
                        self.inc_ref(part);
                        self.construct(part)
                    });
                    self.inc_ref(part);
                    self.handles[parent as usize].field = Some(part);
                    if let Some(temp) = temp {
                        self.py_decref(temp);
                    }
                }
                for &part in &copies[1..] {
                    self.dec_ref(part);
                }
                self.construct(copies[0])
            }
        };
        // Of U's wrapper's type.
        self.types[w as usize] = ty;
        self.assign(v, Val::W(w));
        StepResult::Ok
    }

    // ---- §4.1 plumbing ------------------------------------------------------

    /// The live wrapper var `v` holds and its handle (only called where
    /// the source-slot rule said the var is live).
    fn live(&self, v: Var) -> (WrapperNo, HandleNo) {
        match self.vars[v.idx()] {
            Val::W(w) => match self.wrappers[w as usize].chandle {
                Some(h) => (w, h),
                None => unreachable!("source rule: {v} is moved-from"),
            },
            _ => unreachable!("source rule: {v} holds no wrapper"),
        }
    }

    /// Record a transition taken now on `h`.
    fn took(&mut self, edge: Edge, h: HandleNo) {
        self.transitions.push(Transition {
            edge,
            handle: h,
            cause: self.cause,
        });
    }

    /// The caller owns +1 on `h`: `make_ret` it into var `v`. *refused*
    /// (and `v` unchanged) when the wrapper cannot be constructed (R20).
    fn ret_into(&mut self, v: Var, h: HandleNo) -> StepResult {
        match self.make_ret(h) {
            Some(w) => {
                self.assign(v, Val::W(w));
                StepResult::Ok
            }
            None => StepResult::Refused,
        }
    }

    /// Python assignment order (§4.1): the new value is computed already;
    /// replace the slot, then drop the old value. `new` must own one Python
    /// ref if it is a wrapper.
    fn assign(&mut self, v: Var, new: Val) {
        let old = std::mem::replace(&mut self.vars[v.idx()], new);
        if let Val::W(w) = old {
            self.py_decref(w);
        }
    }

    /// Holder stores: store first, release the old content after (§4.1).
    /// The holder takes over a strong ref the caller owns on `h`.
    fn store_holder(&mut self, holder: Holder, h: HandleNo) {
        let old = self.holders[holder.idx()].replace(h);
        self.release(old);
    }

    // ---- §3: the binding state machine -------------------------------------

    /// The wrapper a constructor makes for a new object `h` (`new`, and
    /// the deserializer's copies), or a wrapper the implementation showed
    /// was made: `make_ret` without R20's refusal. The caller owns +1.
    fn construct(&mut self, h: HandleNo) -> WrapperNo {
        self.make_wrapper(h, false)
            .expect("a wrapper that is not refused is made")
    }

    /// `make_ret` (§3 rows "return H to Python"): the caller owns +1 on `h`.
    /// Returns the wrapper, which has gained the one Python ref the caller
    /// receives; `None` when its construction raised (R20: the +1
    /// released).
    fn make_ret(&mut self, h: HandleNo) -> Option<WrapperNo> {
        self.make_wrapper(h, self.kinds[h as usize].refuses_construction())
    }

    /// `make_ret`, where every wrapper the library constructs raises when
    /// `refuses` (R20): a fresh one, and under design U a revival (whose
    /// `tp_new` consumed the cached block, then freed it with the failed
    /// instance: Detached, not Inactive, upstream h:843-854). A return that
    /// finds the object Active constructs nothing. Under design S a
    /// revival constructs nothing either (the same object resurrected).
    fn make_wrapper(&mut self, h: HandleNo, refuses: bool) -> Option<WrapperNo> {
        let binding = self.handles[h as usize].binding;
        if refuses {
            let edge = match binding {
                Binding::Untied => Some(Edge::RefuseUntied),
                Binding::Detached => Some(Edge::RefuseFresh),
                Binding::Inactive(_) if self.design == Design::U => Some(Edge::RefuseRevive),
                _ => None,
            };
            if let Some(edge) = edge {
                self.took(edge, h);
                if let Binding::Inactive(w) = binding {
                    self.wrappers[w as usize] = WrapperState::FREED;
                    self.freed += 1;
                    self.handles[h as usize].binding = Binding::Detached;
                }
                self.dec_ref(h);
                return None;
            }
        }
        Some(match binding {
            // Untied objects never bind: a fresh wrapper owns the +1.
            Binding::Untied => {
                self.took(Edge::UntiedReturn, h);
                self.fresh_wrapper(h)
            }
            // Detached -> Active(W): a new wrapper W takes the +1.
            Binding::Detached => {
                self.took(Edge::Attach, h);
                let w = self.fresh_wrapper(h);
                self.handles[h as usize].binding = Binding::Active(w);
                w
            }
            // Active(W) -> Active(W): new Python ref; DecRef the redundant +1.
            Binding::Active(w) => {
                self.took(Edge::ReturnActive, h);
                self.wrappers[w as usize].refs += 1;
                self.dec_ref(h);
                w
            }
            // Inactive(W) -> Active(W): revive W with the same number; W
            // takes the +1 and has the one Python ref the caller receives.
            Binding::Inactive(w) => {
                self.took(Edge::Revive, h);
                let ws = &mut self.wrappers[w as usize];
                debug_assert!(ws.life == WrapperLife::Live && ws.refs == 0 && ws.chandle.is_none());
                ws.chandle = Some(h);
                ws.refs = 1;
                self.handles[h as usize].binding = Binding::Active(w);
                w
            }
        })
    }

    /// A fresh wrapper of the object's registered type (a return's).
    fn fresh_wrapper(&mut self, h: HandleNo) -> WrapperNo {
        let kind = self.kinds[h as usize];
        self.new_wrapper(Some(h), WrapperType::of(kind, false))
    }

    /// A new wrapper with one Python ref, of `h` (`None`: moved-from), of
    /// type `ty`.
    fn new_wrapper(&mut self, h: Option<HandleNo>, ty: WrapperType) -> WrapperNo {
        let w = self.wrappers.len() as WrapperNo;
        self.types.push(ty);
        self.open_wrappers.push(w);
        self.wrappers.push(WrapperState {
            life: WrapperLife::Live,
            refs: 1,
            chandle: h,
            tracked: false,
        });
        w
    }

    /// One Python ref on wrapper `w` goes (a var or a cycle let go of it).
    /// At the last one, §3 rows "last Python ref to W dropped".
    fn py_decref(&mut self, w: WrapperNo) {
        let ws = &mut self.wrappers[w as usize];
        ws.refs -= 1;
        if ws.refs > 0 {
            return;
        }
        // A moved-from wrapper owes nothing (review thread): just freed.
        let Some(h) = ws.chandle else {
            *ws = WrapperState::FREED;
            self.freed += 1;
            self.finalized += u32::from(self.types[w as usize].finalizer);
            return;
        };
        let hs = &self.handles[h as usize];
        let canonical = hs.binding == Binding::Active(w);
        let eligible = self.types[w as usize].eligible;
        if canonical && eligible {
            // Row "W eligible, Active -> Inactive": another owner keeps H alive.
            let others_keep_h = hs.strong > 1;
            // One of the two S/U differences (§3 "Two designs"; the
            // other is R20's refused revival, `make_wrapper`): W holds the last
            // strong ref while a weak slot still holds H (weak > 1: one weak
            // is the strong refs' own). S frees W at once (Detached, below);
            // U keeps W cached as Inactive until weak reaches 0.
            let u_keeps_cached = self.design == Design::U && hs.weak > 1;
            if others_keep_h || u_keeps_cached {
                self.took(Edge::Deactivate, h);
                self.handles[h as usize].binding = Binding::Inactive(w);
                self.wrappers[w as usize].chandle = None; // memory kept: Live, refs 0
                self.dec_ref(h);
                return;
            }
        }
        // Rows "W eligible, Active -> Detached" (W held the last strong
        // ref) and "W ineligible, Active -> Detached": detach first, then
        // DecRef; W freed. Untied (or, unreachably, non-canonical) wrappers:
        // DecRef, freed.
        if self.detach_if_canonical(h, w) {
            let edge = if eligible {
                Edge::DropLast
            } else {
                Edge::DropIneligible
            };
            self.took(edge, h);
        }
        self.wrappers[w as usize] = WrapperState::FREED;
        self.freed += 1;
        self.finalized += u32::from(self.types[w as usize].finalizer);
        self.dec_ref(h);
    }

    /// Active(W) -> Detached, if W is canonical; says whether it was.
    fn detach_if_canonical(&mut self, h: HandleNo, w: WrapperNo) -> bool {
        let b = &mut self.handles[h as usize].binding;
        let canonical = *b == Binding::Active(w);
        if canonical {
            *b = Binding::Detached;
        }
        canonical
    }

    // ---- §2: reference counting --------------------------------------------

    fn new_handle(&mut self, kind: ObjKind) -> HandleNo {
        let h = self.handles.len() as HandleNo;
        let binding = if kind.is_tied() && self.tying {
            Binding::Detached
        } else {
            Binding::Untied
        };
        self.open_handles.push(h);
        self.handles.push(HandleState {
            strong: 1,
            weak: 1,
            storage: true,
            binding,
            field: None,
        });
        self.kinds.push(kind);
        h
    }

    fn inc_ref(&mut self, h: HandleNo) {
        let st = &mut self.handles[h as usize];
        debug_assert!(st.strong > 0, "IncRef on a dead handle");
        st.strong += 1;
    }

    /// Release a strong ref from a slot or field, if there was one.
    fn release(&mut self, h: Option<HandleNo>) {
        if let Some(h) = h {
            self.dec_ref(h);
        }
    }

    /// DecRef (§2). At strong 0 the payload is destroyed (its field is
    /// released, which may cascade), then weak -= 1.
    ///
    /// Written as a loop along the field chain: this handle's weak release
    /// is done before its field's release instead of after. The two touch
    /// different handles (a field holding its own object keeps strong > 0),
    /// so the end state is the same, and long chains need no recursion.
    fn dec_ref(&mut self, h: HandleNo) {
        let cascade = self.cause.cascade;
        let mut next = Some(h);
        while let Some(h) = next {
            let st = &mut self.handles[h as usize];
            debug_assert!(st.strong > 0, "DecRef on a dead handle");
            st.strong -= 1;
            if st.strong > 0 {
                break;
            }
            next = st.field.take();
            if matches!(st.binding, Binding::Inactive(_)) && st.weak > 1 {
                // The object dies; a weak ref keeps storage and cache.
                self.took(Edge::DieWhileCached, h);
            }
            self.weak_release(Some(h));
            // What the field held dies of this object's death.
            self.cause.cascade = true;
        }
        self.cause.cascade = cascade;
    }

    /// Weak release (§2), if there was a weak ref. At weak 0 the storage is
    /// freed (`delete_space`, §3 rows "H's storage freed").
    fn weak_release(&mut self, h: Option<HandleNo>) {
        let Some(h) = h else { return };
        let st = &mut self.handles[h as usize];
        st.weak -= 1;
        if st.weak > 0 {
            return;
        }
        debug_assert!(st.strong == 0 && !matches!(st.binding, Binding::Active(_)));
        match st.binding {
            Binding::Inactive(w) => {
                // Reclaimed (under the GIL), or after `shutdown`
                // deliberately leaked (§3 "Shutdown").
                let (edge, life) = if self.shutdown {
                    (Edge::Leak, WrapperLife::Leaked)
                } else {
                    (Edge::Reclaim, WrapperLife::Freed)
                };
                self.wrappers[w as usize].life = life;
                self.took(edge, h);
            }
            Binding::Detached => self.took(Edge::FreeDetached, h),
            Binding::Untied => self.took(Edge::UntiedFree, h),
            Binding::Active(_) => {}
        }
        self.handles[h as usize] = HandleState::FREED;
        self.freed += 1;
    }
}
