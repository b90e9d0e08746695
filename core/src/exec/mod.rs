//! The executor: runs a program on the reference model and a backend in
//! lockstep. After every step it compares the abstract states whole, runs
//! the backend's own assertions, checks the invariants on the real side
//! and the wrappers' identities; then it tears the world down (§6) and
//! checks that nothing is left. The first failure stops the run.

pub mod coverage;
pub mod invariants;
pub mod report;

use crate::backend::{Backend, Caps, GcWrappers};
use crate::model::{Design, Model};
use crate::program::{
    Expect, HOLDERS, Holder, MARKS, Op, Program, StepKind, VARS, Var, WEAKS, WeakSlot,
};
use crate::state::{
    AbstractState, Binding, HandleNo, StepResult, VarState, WrapperLife, WrapperNo,
};

pub use report::{Failure, FailureKind};

/// What a passing run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// State-changing steps run on both sides.
    pub steps: usize,
    /// Steps skipped because the backend cannot express them, by kind.
    pub skipped: Vec<StepKind>,
    /// Steps the backend refused by a documented rule: (1-based step, reason).
    pub refused: Vec<(usize, String)>,
    /// Steps run with a documented workaround for a recorded upstream
    /// finding: (1-based step, what was done).
    pub worked_around: Vec<(usize, String)>,
    /// `expect` steps false on both sides under a model profile the
    /// contract's scenarios were not written for (tying off): the model and
    /// the backend agree, so they are not failures (see
    /// [`Executor::strict_expectations`]).
    pub unheld: usize,
    /// `expect` steps after the program's first skipped or refused step:
    /// not evaluated, never a failure, even when strict (contract §4.3
    /// rule E4).
    pub not_judged: usize,
    /// The (transition, trigger) combinations the model took, teardown
    /// included (coverage; the fuzz target's extra counters).
    pub combos: coverage::ComboSet,
    /// The steps an `oom` armed (contract §4.4), in order.
    pub injected: Vec<Injected>,
}

/// A step run with an allocation failure armed by `oom K`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injected {
    /// The step (1-based).
    pub step: usize,
    /// The allocation that was to fail.
    pub k: u32,
    /// The step made that allocation (it failed); `false`: it made fewer.
    pub reached: bool,
    /// The step failed with MemoryError (else it went on as if nothing
    /// had failed, which must then be the model's state after it).
    pub failed: bool,
}

/// A step of the run: a program step, or a teardown action.
#[derive(Clone, Copy)]
enum At<'a> {
    Step(usize, &'a Op),
    Teardown(&'a str),
    TeardownStep(&'a Op),
}

/// The steps of teardown (§6) after the fields are cleared: release the
/// holders, the weak slots, drop the vars, collect.
pub fn teardown_ops() -> impl Iterator<Item = Op> {
    let releases = (0..HOLDERS).map(|h| Op::Release { h: Holder(h as u8) });
    let unweaks = (0..WEAKS).map(|w| Op::Unweak {
        w: WeakSlot(w as u8),
    });
    let drops = (0..VARS).map(|v| Op::Drop { v: Var(v as u8) });
    releases.chain(unweaks).chain(drops).chain([Op::Collect])
}

/// Run `prog` and its teardown on the model alone, checking nothing: what
/// the model costs.
pub fn run_model_only(model: &mut Model, prog: &Program) {
    model.reset();
    for op in prog.ops.iter().filter(|op| !op.is_assertion()) {
        model.apply(op);
    }
    model.clear_all_fields();
    for op in teardown_ops() {
        model.apply(&op);
    }
    model.reclaim_leaked();
}

/// Run `prog` and its teardown on a backend alone, checking only that the
/// world ends empty: what the implementation costs.
pub fn run_backend_only<B: Backend>(backend: &mut B, prog: &Program) -> Result<(), String> {
    backend.begin()?;
    let steps = backend.caps().steps;
    let supported = |op: &&Op| op.kind().is_some_and(|k| steps.contains(k));
    for op in prog.ops.iter().filter(supported) {
        backend.apply(op);
    }
    backend.clear_all_fields();
    for op in teardown_ops() {
        backend.apply(&op);
    }
    backend.reclaim_leaked();
    backend.leftovers().map_or(Ok(()), Err)
}

/// Reusable lockstep runner (keeps its buffers between programs).
pub struct Executor<B: Backend> {
    pub model: Model,
    pub backend: B,
    caps: Caps,
    expected: AbstractState,
    actual: AbstractState,
    /// Address of each wrapper number once seen (0: not yet).
    addrs: Vec<usize>,
    /// The wrapper last seen at each address: the clash check costs one
    /// look-up, not a walk over every wrapper made.
    by_addr: std::collections::HashMap<usize, WrapperNo>,
    /// `mark`: the model's wrapper number, and the backend's wrapper
    /// number and address. Both identify: CPython reuses a freed
    /// wrapper's address for the next wrapper, so an address alone would
    /// make `expect V is M` true of a different wrapper.
    marks: [Option<MarkSeen>; MARKS],
    scratch: invariants::Scratch,
    /// The steps of the current program so far (for reports).
    ops: Vec<Op>,
    /// `oom K` ran: the next step that runs has an allocation failure
    /// armed.
    armed: Option<u32>,
    outcome: Outcome,
    /// Overrides [`Self::strict_expectations`]'s default.
    strict: Option<bool>,
    /// Check the invariants after every step (`true`, the default) or only
    /// after a step where the two states differ ([`Self::judge_invariants_on_divergence`]).
    invariants_always: bool,
}

/// What `mark M V` saw: V's wrapper on each side, its address, and the
/// object (chandle) each side's wrapper was of.
#[derive(Clone, Copy, Debug)]
struct MarkSeen {
    model: WrapperNo,
    real: WrapperNo,
    addr: usize,
    model_obj: Option<HandleNo>,
    real_obj: Option<HandleNo>,
}

impl<B: Backend> Executor<B> {
    /// The model gets the backend's profile: tying off when the backend
    /// says its tying is dormant.
    pub fn new(design: Design, backend: B) -> Executor<B> {
        let caps = backend.caps();
        let model = if backend.tying() {
            Model::new(design)
        } else {
            Model::new(design).without_tying()
        };
        Executor {
            model,
            backend,
            caps,
            expected: AbstractState::default(),
            actual: AbstractState::default(),
            addrs: Vec::new(),
            by_addr: std::collections::HashMap::new(),
            marks: [None; MARKS],
            scratch: invariants::Scratch::default(),
            ops: Vec::new(),
            armed: None,
            outcome: Outcome::default(),
            strict: None,
            invariants_always: true,
        }
    }

    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// A false `expect` is a failure only when the model has tying on, the
    /// profile the contract's scenarios are written for. With tying off
    /// (a library shipping it dormant), an `expect` both sides find false
    /// (`expect v1 is v0` after a second return) is counted in
    /// [`Outcome::unheld`]; a disagreement is still a divergence. Programs
    /// written for the profile at hand ask for strictness with
    /// [`Self::set_strict_expectations`].
    pub fn strict_expectations(&self) -> bool {
        self.strict.unwrap_or(self.model.tying())
    }

    /// Check the invariants (§3) only after a step where the observed state
    /// differs from the model's, as the fuzz targets do. The invariants
    /// are a function of the state alone, and the model's states satisfy
    /// them (checked on every state `pytie exhaust` reaches and on random
    /// programs in the model's tests, where this stays off): on a state
    /// equal to the model's they cannot fail. On a divergence they are
    /// still checked and named in the report. A quarter of the checker's
    /// cost per step (BENCHMARKS.md, issue 14).
    /// `false` goes back to every step.
    pub fn judge_invariants_on_divergence(&mut self, on: bool) {
        self.invariants_always = !on;
    }

    /// `Some(true)`: every false `expect` fails; `None`: the default above.
    pub fn set_strict_expectations(&mut self, strict: Option<bool>) {
        self.strict = strict;
    }

    /// The state the model predicts after the last step.
    pub fn expected(&self) -> &AbstractState {
        &self.expected
    }

    /// The state the backend showed after the last step.
    pub fn actual(&self) -> &AbstractState {
        &self.actual
    }

    /// Run `prog`; after a failure the backend's world is abandoned.
    pub fn run(&mut self, prog: &Program) -> Result<Outcome, Box<Failure>> {
        self.run_traced(prog, &mut |_, _, _| {})
    }

    /// Run `prog`, calling `trace(step, expected, actual)` after every
    /// state-changing step (`step` 1-based; 0 for teardown actions).
    pub fn run_traced(
        &mut self,
        prog: &Program,
        trace: &mut dyn FnMut(usize, &AbstractState, &AbstractState),
    ) -> Result<Outcome, Box<Failure>> {
        self.begin()?;
        for (i, op) in prog.ops.iter().enumerate() {
            if self.step(op)? {
                trace(i + 1, &self.expected, &self.actual);
            }
        }
        self.finish_traced(trace)
    }

    /// Start a program in an empty world. After an `Err` from this or
    /// [`step`](Self::step) or [`finish`](Self::finish), the backend's world
    /// has been abandoned; start again with `begin`.
    pub fn begin(&mut self) -> Result<(), Box<Failure>> {
        self.ops.clear();
        self.armed = None;
        self.outcome = Outcome::default();
        self.model.reset();
        self.addrs.clear();
        self.by_addr.clear();
        self.marks = [None; MARKS];
        if let Err(e) = self.backend.begin() {
            return Err(self.fail(At::Teardown("start"), FailureKind::Teardown, vec![e]));
        }
        self.observe();
        Ok(())
    }

    /// Run one step on both sides and check. `Ok(true)` when it changed
    /// state (ran on both sides), `Ok(false)` for an assertion or a step the
    /// backend cannot express (skipped).
    pub fn step(&mut self, op: &Op) -> Result<bool, Box<Failure>> {
        self.ops.push(*op);
        let i = self.ops.len() - 1;
        let r = match op.kind() {
            None => self.assertion(i, op).map(|()| false),
            Some(k) if !self.caps.steps.contains(k) => {
                self.outcome.skipped.push(k);
                Ok(false)
            }
            Some(_) if let Some(why) = self.backend.refuse(op) => {
                self.outcome.refused.push((i + 1, why));
                Ok(false)
            }
            Some(_) => {
                let armed = self.armed.take();
                let before = armed.map(|_| self.model.clone());
                self.model.apply(op);
                self.took_transitions();
                let result = self.backend.apply(op);
                if let Some(what) = self.backend.worked_around() {
                    self.outcome.worked_around.push((i + 1, what));
                }
                if let (Some(k), Some(before)) = (armed, before) {
                    let failed = result == StepResult::NoMemory;
                    self.outcome.injected.push(Injected {
                        step: i + 1,
                        k,
                        reached: self.backend.allocation_failed().unwrap_or(false),
                        failed,
                    });
                    if failed {
                        self.settle_failed_step(before, op);
                    }
                }
                if let Op::Oom { k } = *op {
                    self.armed = Some(k.k());
                }
                self.outcome.steps += 1;
                self.check(At::Step(i, op)).map(|()| true)
            }
        };
        if r.is_err() {
            self.backend.abandon();
        }
        r
    }

    /// Teardown (§6) and the final empty-world check.
    pub fn finish(&mut self) -> Result<Outcome, Box<Failure>> {
        self.finish_traced(&mut |_, _, _| {})
    }

    /// [`finish`](Self::finish), calling `trace(0, expected, actual)` after
    /// every teardown action (as [`run_traced`](Self::run_traced) does).
    pub fn finish_traced(
        &mut self,
        trace: &mut dyn FnMut(usize, &AbstractState, &AbstractState),
    ) -> Result<Outcome, Box<Failure>> {
        let r = self.teardown(trace);
        if r.is_err() {
            self.backend.abandon();
        }
        r.map(|()| std::mem::take(&mut self.outcome))
    }

    /// Contract §6.
    fn teardown(
        &mut self,
        trace: &mut dyn FnMut(usize, &AbstractState, &AbstractState),
    ) -> Result<(), Box<Failure>> {
        self.model.clear_all_fields();
        self.took_transitions();
        self.backend.clear_all_fields();
        self.check(At::Teardown("clear every field"))?;
        trace(0, &self.expected, &self.actual);
        for op in teardown_ops() {
            if op.kind().is_some_and(|k| self.caps.steps.contains(k)) && !self.teardown_noop(&op) {
                self.model.apply(&op);
                self.took_transitions();
                self.backend.apply(&op);
                self.check(At::TeardownStep(&op))?;
                trace(0, &self.expected, &self.actual);
            }
        }
        let t = self.expected.totals;
        if t.live_handles + t.live_blocks + t.live_wrappers > 0 {
            let note = format!(
                "the model itself ends with {} live handles, {} blocks, {} wrappers: a model bug",
                t.live_handles, t.live_blocks, t.live_wrappers
            );
            return Err(self.fail(
                At::Teardown("end of teardown"),
                FailureKind::Teardown,
                vec![note],
            ));
        }
        self.model.reclaim_leaked();
        self.backend.reclaim_leaked();
        if t.leaked_wrappers > 0 || self.actual.totals.leaked_wrappers > 0 {
            self.check(At::Teardown("reclaim wrappers leaked at shutdown"))?;
        }
        if let Some(left) = self.backend.leftovers() {
            let note = format!("still allocated: {left}");
            return Err(self.fail(
                At::Teardown("final empty-world check"),
                FailureKind::Teardown,
                vec![note],
            ));
        }
        Ok(())
    }

    /// A step failed with MemoryError (contract §4.4): the model takes the
    /// state the failure may leave. Either the failure came after the
    /// step's work (in making its result): the model's state after the
    /// step, with the error as the result, if that is what the backend
    /// shows; or it came before the work was done: the state before the
    /// step, with what [`Self::take_failed_steps_leftovers`] allows.
    fn settle_failed_step(&mut self, before: Model, op: &Op) {
        self.model.fail_result();
        self.observe();
        if self.expected == self.actual {
            return;
        }
        let mut gave_away = before.clone();
        self.model = before;
        self.model.failed_step(op);
        self.take_failed_steps_leftovers();
        // A `move` may have given V's reference away before it failed.
        if gave_away.failed_move(op) {
            let nothing_done = std::mem::replace(&mut self.model, gave_away);
            self.take_failed_steps_leftovers();
            self.observe_model();
            if self.expected != self.actual {
                self.model = nothing_done;
            }
        }
    }

    /// A step failed with MemoryError (contract §4.4) and the model is back
    /// at its state before it: give the model what the step may have left
    /// and the backend shows. Numbers the step gave out to objects and
    /// wrappers are taken, freed (a wrapper, after `shutdown`, leaked if
    /// the backend leaked it); a wrapper it made for an object that had
    /// none and dropped again is made and dropped in the model, which
    /// caches it where the contract does. Anything else the step changed
    /// is a divergence at the comparison that follows.
    ///
    /// `self.actual` is the backend's state after the step, as
    /// [`Self::settle_failed_step`] just observed it.
    fn take_failed_steps_leftovers(&mut self) {
        let real = &self.actual;
        let (handles, wrappers) = self.model.numbered();
        let mut before = AbstractState::default();
        self.model.observe(&mut before);
        // Objects that were Detached and now cache a wrapper numbered in
        // the step.
        let cached: Vec<(WrapperNo, HandleNo)> = real
            .handles
            .entries()
            .filter(|&(h, _)| h < handles && before.handles[h].binding == Binding::Detached)
            .filter_map(|(h, hs)| match hs.binding {
                Binding::Inactive(w) if w as usize >= wrappers => Some((w, h as HandleNo)),
                _ => None,
            })
            .collect();
        let leaked: Vec<bool> = (wrappers..real.wrappers.len())
            .map(|n| real.wrappers[n].life == WrapperLife::Leaked)
            .collect();
        let real_handles = real.handles.len();
        for (n, leaked) in (wrappers..).zip(leaked) {
            match cached.iter().find(|(w, _)| *w as usize == n) {
                Some(&(_, h)) => {
                    self.model.made_and_dropped(h);
                }
                None if leaked && self.model.skip_wrapper_leaked().is_some() => {}
                None => self.model.skip_wrapper(),
            }
        }
        for _ in handles..real_handles {
            self.model.skip_handle();
        }
        // A wrapper of a finalizer type made and freed before it was seen
        // (a `new V del` whose constructor failed) ran `__del__` once.
        let mut now = AbstractState::default();
        self.model.observe(&mut now);
        if real.totals.finalized == now.totals.finalized + 1 {
            self.model.finalized_unseen();
        }
    }

    /// Count the combinations the model's last step took.
    fn took_transitions(&mut self) {
        for t in self.model.transitions() {
            self.outcome.combos.insert(coverage::Combo::of(t));
        }
    }

    /// A teardown step that changes nothing on either side (its slot is
    /// empty in both states, or no cycle is left to collect): skipped.
    fn teardown_noop(&self, op: &Op) -> bool {
        let (e, a) = (&self.expected, &self.actual);
        let nothing = |v: VarState| matches!(v, VarState::Empty | VarState::None);
        match *op {
            Op::Release { h } => e.holders[h.idx()].is_none() && a.holders[h.idx()].is_none(),
            Op::Unweak { w } => e.weaks[w.idx()].is_none() && a.weaks[w.idx()].is_none(),
            Op::Drop { v } => nothing(e.vars[v.idx()]) && nothing(a.vars[v.idx()]),
            Op::Collect => !self.model.has_cycles() && self.backend.cycle_members().is_empty(),
            _ => false,
        }
    }

    fn observe(&mut self) {
        self.backend.observe(&mut self.actual);
        self.caps.observes.mask(&mut self.actual);
        self.observe_model();
    }

    /// The model's side of [`Self::observe`] alone.
    fn observe_model(&mut self) {
        self.model.observe(&mut self.expected);
        let obs = self.caps.observes;
        if obs.tracked {
            self.predict_tracked();
        }
        obs.mask(&mut self.expected);
    }

    /// The model's wrappers that the program holds are tracked by the
    /// cyclic GC exactly when their type is a GC type in this
    /// implementation ([`Caps::gc_wrappers`]).
    fn predict_tracked(&mut self) {
        let gc = self.caps.gc_wrappers;
        for (w, ws) in self.expected.wrappers.entries_mut() {
            ws.tracked = ws.life == WrapperLife::Live
                && ws.refs > 0
                && match gc {
                    GcWrappers::All => true,
                    GcWrappers::IneligibleTypes => {
                        !self.model.wrapper_type_eligible(w as WrapperNo)
                    }
                };
        }
    }

    /// After a state-changing step: assertions, comparison, invariants,
    /// identity.
    fn check(&mut self, at: At<'_>) -> Result<(), Box<Failure>> {
        self.observe();
        let violations = self.backend.violations();
        if !violations.is_empty() {
            return Err(self.fail(at, FailureKind::RuntimeAssertion, violations));
        }
        let diverged = self.expected != self.actual;
        let broken =
            if self.caps.observes.covers_invariants() && (diverged || self.invariants_always) {
                invariants::check(
                    &self.actual,
                    self.backend.cycle_members(),
                    &mut self.scratch,
                )
                .err()
            } else {
                None
            };
        if diverged {
            return Err(self.fail(at, FailureKind::Divergence, broken.into_iter().collect()));
        }
        if let Some(b) = broken {
            return Err(self.fail(at, FailureKind::Invariant, vec![b]));
        }
        self.check_identity(at)
    }

    /// A revived wrapper keeps its address; a fresh wrapper takes no
    /// address of a wrapper alive or cached.
    fn check_identity(&mut self, at: At<'_>) -> Result<(), Box<Failure>> {
        for v in 0..VARS {
            let (VarState::Wrapper(n) | VarState::Moved(n)) = self.actual.vars[v] else {
                continue;
            };
            let Some(addr) = self.backend.identity(Var(v as u8)) else {
                continue;
            };
            let n = n as usize;
            if self.addrs.len() <= n {
                self.addrs.resize(n + 1, 0);
            }
            let problem = if self.addrs[n] == 0 {
                let clash = self.by_addr.get(&addr).copied().filter(|&m| {
                    m as usize != n
                        && self
                            .actual
                            .wrappers
                            .get(m as usize)
                            .is_some_and(|w| w.life != WrapperLife::Freed)
                });
                self.addrs[n] = addr;
                self.by_addr.insert(addr, n as WrapperNo);
                clash.map(|m| format!("fresh wr#{n} in v{v} has the address {addr:#x} of wr#{m}, which is still allocated"))
            } else if self.addrs[n] != addr {
                Some(format!(
                    "wr#{n} in v{v} moved from address {:#x} to {addr:#x}: id() changed",
                    self.addrs[n]
                ))
            } else {
                None
            };
            if let Some(p) = problem {
                return Err(self.fail(at, FailureKind::Identity, vec![p]));
            }
        }
        Ok(())
    }

    /// `mark` and `expect`: evaluated on the model (wrapper numbers) and on
    /// the backend (addresses); disagreement is a divergence, agreement on
    /// false a failed expectation.
    fn assertion(&mut self, i: usize, op: &Op) -> Result<(), Box<Failure>> {
        // E4: a skipped or refused step voids the premise of every later
        // expectation; not evaluated at all (marks are still recorded).
        let unrun = !self.outcome.skipped.is_empty() || !self.outcome.refused.is_empty();
        if unrun && matches!(op, Op::Expect(_)) {
            self.outcome.not_judged += 1;
            return Ok(());
        }
        // E5: an expectation about a quantity this backend does not
        // observe (it reads as the model's default on both sides) is not
        // judged either.
        let seen = self.caps.observes;
        let unseen = match op {
            Op::Expect(Expect::Finalized { .. }) => !seen.finalized,
            Op::Expect(Expect::Wrappers { .. }) => !seen.wrapper_refs,
            Op::Expect(Expect::Strong { .. }) => !seen.strong,
            Op::Expect(Expect::Weak { .. }) => !seen.weak,
            _ => false,
        };
        if unseen {
            self.outcome.not_judged += 1;
            return Ok(());
        }
        let model_id = |s: &AbstractState, v: Var| match s.vars[v.idx()] {
            VarState::Wrapper(n) | VarState::Moved(n) => Some(n),
            _ => None,
        };
        let var_text = |s: &AbstractState, v: Var| report::var_text(s.vars[v.idx()]);
        let (want, got, detail) = match *op {
            Op::Mark { m, v } => {
                let n = model_id(&self.expected, v);
                let real = model_id(&self.actual, v).zip(self.backend.identity(v));
                self.marks[m.idx()] = n.zip(real).map(|(n, (r, a))| MarkSeen {
                    model: n,
                    real: r,
                    addr: a,
                    model_obj: self.expected.var_handle(v.idx()),
                    real_obj: self.actual.var_handle(v.idx()),
                });
                return Ok(());
            }
            Op::Expect(e) => match e {
                Expect::IsVar { v, u, negated } => {
                    let same_model = model_id(&self.expected, v) == model_id(&self.expected, u);
                    let (av, au) = (self.backend.identity(v), self.backend.identity(u));
                    let detail = format!(
                        "{v} holds {} at {av:#x?}, {u} holds {} at {au:#x?}",
                        var_text(&self.actual, v),
                        var_text(&self.actual, u)
                    );
                    (same_model != negated, (av == au) != negated, detail)
                }
                Expect::IsMark { v, m, negated } => match self.marks[m.idx()] {
                    None => (
                        false,
                        false,
                        format!("{m} was never set on a var holding a wrapper"),
                    ),
                    Some(MarkSeen {
                        model: n,
                        real,
                        addr,
                        ..
                    }) => {
                        let same_model = model_id(&self.expected, v) == Some(n);
                        let av = self.backend.identity(v);
                        let same_real = model_id(&self.actual, v) == Some(real) && av == Some(addr);
                        let detail = format!(
                            "{m} is wr#{real} at {addr:#x}; {v} holds {} at {av:#x?}",
                            var_text(&self.actual, v)
                        );
                        (same_model != negated, same_real != negated, detail)
                    }
                },
                Expect::ObjMark { v, m, negated } => match self.marks[m.idx()] {
                    None => (
                        false,
                        false,
                        format!("{m} was never set on a var holding a wrapper"),
                    ),
                    Some(seen) => {
                        // A moved-from wrapper at the mark, or in V, has no
                        // object: the expectation is false, not a match of
                        // two absences.
                        let same = |s: &AbstractState, obj: Option<HandleNo>| {
                            obj.is_some() && s.var_handle(v.idx()) == obj
                        };
                        let same_model = same(&self.expected, seen.model_obj);
                        let same_real = same(&self.actual, seen.real_obj);
                        let obj_text = |h: Option<HandleNo>| match h {
                            Some(h) => format!("obj#{h}"),
                            None => "no object".to_string(),
                        };
                        let detail = format!(
                            "{m} saw {}; {v} holds {} of {}",
                            obj_text(seen.real_obj),
                            var_text(&self.actual, v),
                            obj_text(self.actual.var_handle(v.idx()))
                        );
                        (same_model != negated, same_real != negated, detail)
                    }
                },
                Expect::None { v } | Expect::Moved { v } => {
                    let test = |s: &AbstractState| match e {
                        Expect::None { .. } => {
                            matches!(s.vars[v.idx()], VarState::Empty | VarState::None)
                        }
                        _ => matches!(s.vars[v.idx()], VarState::Moved(_)),
                    };
                    let detail = format!("{v} holds {}", var_text(&self.actual, v));
                    (test(&self.expected), test(&self.actual), detail)
                }
                Expect::Wrappers { n } | Expect::Finalized { n } => {
                    let wrappers = matches!(e, Expect::Wrappers { .. });
                    let count = |s: &AbstractState| {
                        if wrappers {
                            s.wrappers.entries().filter(|(_, w)| w.refs > 0).count() as u32
                        } else {
                            s.totals.finalized
                        }
                    };
                    let detail = format!("the count is {}", count(&self.actual));
                    (count(&self.expected) == n, count(&self.actual) == n, detail)
                }
                Expect::Strong { v, n } | Expect::Weak { v, n } => {
                    let strong = matches!(e, Expect::Strong { .. });
                    let count = |s: &AbstractState| {
                        let h = s.var_handle(v.idx())?;
                        let hs = &s.handles[h as usize];
                        Some(if strong { hs.strong } else { hs.weak })
                    };
                    let detail = match count(&self.actual) {
                        Some(c) => format!("the count is {c}"),
                        None => format!("{v} holds {}, no live wrapper", var_text(&self.actual, v)),
                    };
                    (
                        count(&self.expected) == Some(n),
                        count(&self.actual) == Some(n),
                        detail,
                    )
                }
            },
            _ => return Ok(()),
        };
        if want == got && want {
            return Ok(());
        }
        if want == got && !self.strict_expectations() {
            self.outcome.unheld += 1;
            return Ok(());
        }
        let (kind, note) = if want != got {
            (
                FailureKind::Divergence,
                format!("the model says `{op}` is {want}, the runtime says {got}: {detail}"),
            )
        } else {
            (
                FailureKind::Expectation,
                format!("`{op}` is false: {detail}"),
            )
        };
        Err(self.fail(At::Step(i, op), kind, vec![note]))
    }

    /// A failure the executor did not see itself: one a forked child
    /// relayed (its report in `notes`), or the child's death. `step`
    /// (1-based) indexes `program`, the whole program; the report shows
    /// it up to that step. (A relayed report already says whether it is
    /// an upstream failure: the child's executor decided.)
    pub fn relayed_failure(
        &self,
        kind: FailureKind,
        step: Option<usize>,
        step_text: String,
        notes: Vec<String>,
        program: &Program,
    ) -> Box<Failure> {
        let upto = step.map_or(program.ops.len(), |s| s.min(program.ops.len()));
        Box::new(Failure {
            kind,
            step,
            step_text,
            notes,
            expected: AbstractState::default(),
            actual: AbstractState::default(),
            program: Program::new(program.ops[..upto].to_vec()),
            backend: self.backend.name(),
            full: false,
        })
    }

    fn fail(&self, at: At<'_>, kind: FailureKind, mut notes: Vec<String>) -> Box<Failure> {
        // A third-party library that breaks the contract: an upstream
        // finding. (A false `expect` both sides agree on is not one.)
        let kind = match self.backend.upstream() {
            Some(lib) if kind != FailureKind::Expectation => {
                notes.insert(
                    0,
                    format!(
                        "{lib} breaks the contract ({}): a finding in the library, not in pytie; \
                         keep the program under corpus/upstream/ and reproduce it without pytie \
                         with `pytie repro --python FILE`",
                        kind.title()
                    ),
                );
                FailureKind::Upstream
            }
            _ => kind,
        };
        let (step, step_text, program) = match at {
            At::Step(i, op) => (
                Some(i + 1),
                format!("{op}"),
                Program::new(self.ops[..=i].to_vec()),
            ),
            At::Teardown(t) => (
                None,
                format!("teardown: {t}"),
                Program::new(self.ops.clone()),
            ),
            At::TeardownStep(op) => (
                None,
                format!("teardown: {op}"),
                Program::new(self.ops.clone()),
            ),
        };
        Box::new(Failure {
            kind,
            step,
            step_text,
            notes,
            expected: self.expected.clone(),
            actual: self.actual.clone(),
            program,
            backend: format!(
                "{}, model design {:?}{}",
                self.backend.name(),
                self.model.design(),
                if self.model.tying() {
                    ""
                } else {
                    ", tying off (every object untied)"
                }
            ),
            full: false,
        })
    }
}
