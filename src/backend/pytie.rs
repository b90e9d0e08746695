//! pytie's own runtime (native layer + design-S wrapper layer) as a
//! backend. Vars are real Python references; holders and weak slots own
//! real native references; every step goes through the runtime's public
//! paths (attribute access and the FFI function through Python).

use pyo3::exceptions::PyMemoryError;
use pyo3::prelude::*;

use crate::native::sancov::Traced;
use crate::native::{HandleRef, WeakRef, release_on_foreign_thread};
use crate::watchdog::{self, Phase, Side};
use crate::wrapper::{self, Cyclic, Moved};
use pytie_core::backend::{Backend, Caps, GcWrappers, Observes};
use pytie_core::program::{HOLDERS, Holder, ObjKind, Op, StepKind, StepSet, VARS, Var, WEAKS};
use pytie_core::program::{Holds, SourceRule};
use pytie_core::state::{AbstractState, HandleNo, StepResult, VarState, WrapperNo};

/// The backend. Use it while holding [`interp::exclusive`].
pub struct PytieBackend {
    /// `None`: empty; `Some(None)`: holds Python's None.
    vars: [Option<Py<PyAny>>; VARS],
    holders: [Option<(HandleRef, HandleNo)>; HOLDERS],
    weaks: [Option<(WeakRef, HandleNo)>; WEAKS],
    /// One entry per live cycle: the wrapper it holds.
    cycles: Vec<WrapperNo>,
    result: StepResult,
    violations: Vec<String>,
    /// `oom K` ran: the next step has its K-th Python allocation fail.
    oom: Option<u32>,
    /// After a step `oom` armed: whether its armed allocation came.
    oom_reached: Option<bool>,
}

impl Default for PytieBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl PytieBackend {
    pub fn new() -> PytieBackend {
        Python::attach(wrapper::init).expect("initialize the pytie wrapper types");
        PytieBackend {
            vars: Default::default(),
            holders: Default::default(),
            weaks: Default::default(),
            cycles: Vec::new(),
            result: StepResult::Ok,
            oom: None,
            oom_reached: None,
            violations: Vec::new(),
        }
    }

    /// Vars holding None own nothing of the world: let them go (what
    /// `begin` does), so that None's reference count means the same
    /// between programs.
    pub fn forget_nones(&mut self) {
        Python::attach(|py| {
            for v in &mut self.vars {
                if v.as_ref().is_some_and(|o| o.is_none(py)) {
                    *v = None;
                }
            }
        });
    }

    /// Python assignment order: the new value is computed; replace the
    /// slot, then drop the old value.
    fn assign(&mut self, v: Var, new: Bound<'_, PyAny>) {
        let old = self.vars[v.idx()].replace(new.unbind());
        drop(old);
    }

    /// The object in var `v`, unless the var is empty or holds None.
    fn source<'py>(&self, py: Python<'py>, v: Var) -> Option<Bound<'py, PyAny>> {
        let o = self.vars[v.idx()].as_ref()?.bind(py);
        (!o.is_none()).then(|| o.clone())
    }

    fn store_holder(&mut self, h: Holder, r: HandleRef) {
        let id = r.id();
        let old = self.holders[h.idx()].replace((r, id));
        drop(old);
    }

    /// Map a Python-level result: the moved-from error is a step result,
    /// anything else is a runtime fault.
    fn py_result<T>(&mut self, py: Python<'_>, op: &Op, r: PyResult<T>) -> Result<T, StepResult> {
        r.map_err(|e| {
            // An allocation `oom` made fail (contract §4.4): Python's
            // MemoryError is the step's result.
            if crate::alloc_fault::armed() && e.is_instance_of::<PyMemoryError>(py) {
                return StepResult::NoMemory;
            }
            // A `fragile` wrapper's construction raised (R20).
            if wrapper::is_refused(&e, py) {
                return StepResult::Refused;
            }
            if !wrapper::is_moved(&e, py) {
                self.violations
                    .push(format!("`{op}` raised an unexpected Python exception: {e}"));
            }
            StepResult::Moved
        })
    }

    /// `finalize` (contract §4.1 R16), in a forked child: the vars become
    /// a module's globals and the interpreter ends (`interp::end`): module
    /// teardown drops them, the collection at finalization the cycles.
    fn finalize(&mut self) -> StepResult {
        let vars = self.vars.iter_mut().map(Option::take).collect();
        self.cycles.clear();
        self.violations.extend(crate::interp::end_step(vars));
        StepResult::Ok
    }

    /// The C++ releases (`release`, `release_foreign`, `unweak`), the
    /// steps that act after the interpreter has ended too (R16): with `py`,
    /// the interpreter's thread lets go of the GIL while it waits for the
    /// foreign thread (contract §3 "Threads"); after the end there is no
    /// GIL. Any other step does nothing here.
    fn cpp_release(&mut self, op: &Op, py: Option<Python<'_>>) {
        match *op {
            Op::Release { h } => drop(self.holders[h.idx()].take()),
            Op::ReleaseForeign { h } => {
                let Some((r, _)) = self.holders[h.idx()].take() else {
                    return;
                };
                match py {
                    Some(_) if crate::mutant!(ForeignWaitHoldsGil) => {
                        let _p = watchdog::enter(Side::Interp, Phase::WaitForeignHoldingGil);
                        release_on_foreign_thread(r);
                    }
                    Some(py) => py.detach(move || {
                        let _p = watchdog::enter(Side::Interp, Phase::WaitForeign);
                        release_on_foreign_thread(r)
                    }),
                    None => {
                        let _p = watchdog::enter(Side::Interp, Phase::WaitForeign);
                        release_on_foreign_thread(r);
                    }
                }
            }
            Op::Unweak { w } => drop(self.weaks[w.idx()].take()),
            _ => {}
        }
    }

    fn step(&mut self, py: Python<'_>, op: &Op) -> Result<(), StepResult> {
        const MOVED: StepResult = StepResult::Moved;
        // The source-slot rule (§4.1): a step needing a live wrapper does
        // nothing on an empty or None var. Whether a wrapper is moved-from
        // is the runtime's to say (it raises), so every wrapper counts as
        // live here.
        let holds = |v: Var| match self.source(py, v) {
            None => Holds::Nothing,
            Some(_) => Holds::Live,
        };
        if op.source_rule(holds) == SourceRule::Skip {
            return Ok(());
        }
        match *op {
            Op::New { v, kind } => {
                let r = wrapper::new_object(py, kind);
                let o = self.py_result(py, op, r)?;
                self.assign(v, o);
            }
            Op::Ret { v, h } => {
                if let Some((r, _)) = &self.holders[h.idx()] {
                    let r = wrapper::return_handle(py, r.clone_ref());
                    let o = self.py_result(py, op, r)?;
                    self.assign(v, o);
                }
            }
            // The temporary reference to U goes before the assignment, as
            // in Python's `v = f(u)` and `v = u.x`.
            Op::Echo { v, u } | Op::Get { v, u } => {
                if let Some(src) = self.source(py, u) {
                    let r = if matches!(op, Op::Echo { .. }) {
                        wrapper::echo(&src)
                    } else {
                        wrapper::get_x(&src)
                    };
                    drop(src);
                    let o = self.py_result(py, op, r)?;
                    self.assign(v, o);
                }
            }
            Op::Set { u, v } => {
                if let (Some(target), Some(val)) = (self.source(py, u), self.source(py, v)) {
                    let r = wrapper::set_x(&target, &val);
                    self.py_result(py, op, r)?;
                }
            }
            Op::Unset { u } => {
                if let Some(target) = self.source(py, u) {
                    let r = wrapper::set_x(&target, &py.None().into_bound(py));
                    self.py_result(py, op, r)?;
                }
            }
            Op::Clone { v, u } => {
                if let Some(src) = self.source(py, u) {
                    self.assign(v, src);
                }
            }
            // `del v` on a var holding None leaves it None.
            Op::Drop { v } => {
                if self.vars[v.idx()].as_ref().is_some_and(|o| !o.is_none(py)) {
                    drop(self.vars[v.idx()].take());
                }
            }
            Op::Hold { h, v } => {
                if let Some(src) = self.source(py, v) {
                    let r = wrapper::handle_of(&src).map_err(|Moved| MOVED)?;
                    drop(src);
                    self.store_holder(h, r);
                }
            }
            Op::Move { h, v } => {
                if let Some(src) = self.source(py, v) {
                    let r = wrapper::move_out(&src).map_err(|Moved| MOVED)?;
                    drop(src);
                    self.store_holder(h, r);
                }
            }
            Op::Release { .. } | Op::ReleaseForeign { .. } | Op::Unweak { .. } => {
                self.cpp_release(op, Some(py));
            }
            Op::Weak { w, v } => {
                if let Some(src) = self.source(py, v) {
                    let r = wrapper::weak_of(&src).map_err(|Moved| MOVED)?;
                    drop(src);
                    let id = r.id();
                    let old = self.weaks[w.idx()].replace((r, id));
                    drop(old);
                }
            }
            Op::Lock { v, w } => {
                if let Some((r, _)) = &self.weaks[w.idx()] {
                    let o = match r.upgrade() {
                        Some(strong) => {
                            let r = wrapper::return_handle(py, strong);
                            self.py_result(py, op, r)?
                        }
                        None => py.None().into_bound(py),
                    };
                    self.assign(v, o);
                }
            }
            // As `make_cycle(v); del v`: a cycle that cannot be made
            // leaves V as it was.
            Op::Cycle { v } => {
                if let Some(src) = self.source(py, v) {
                    let serial = wrapper::info(&src).map_or(u32::MAX, |i| i.serial);
                    let r = wrapper::into_cycle(src);
                    self.py_result(py, op, r)?;
                    drop(self.vars[v.idx()].take());
                    self.cycles.push(serial);
                }
            }
            Op::Collect => {
                self.cycles.clear();
                let r = wrapper::collect(py);
                self.py_result(py, op, r)?;
            }
            Op::Shutdown => wrapper::shutdown(),
            // pytie's wrapper types have no `__weakref__` slot (Python weak
            // references to wrappers are not offered, contract §3.1), so
            // `caps` leaves the step out: the executor never applies it.
            Op::PyWeak { .. } => return Err(StepResult::NoWeakref),
            // `apply` runs them: `finalize` outside Python, `oom` arms the
            // next step.
            Op::Finalize | Op::Oom { .. } => {}
            Op::Call { v, h } => {
                if let Some((r, _)) = &self.holders[h.idx()] {
                    let r = wrapper::callback(py, r.clone_ref());
                    let o = self.py_result(py, op, r)?;
                    self.assign(v, o);
                }
            }
            Op::CallMove { v, h } => {
                if let Some((r, _)) = self.holders[h.idx()].take() {
                    let r = wrapper::callback(py, r);
                    let o = self.py_result(py, op, r)?;
                    self.assign(v, o);
                }
            }
            // The callback raises (R19): its argument made and dropped.
            Op::CallRaise { h } => {
                if let Some((r, _)) = &self.holders[h.idx()] {
                    let r = wrapper::callback_raise(py, r.clone_ref());
                    self.py_result(py, op, r)?;
                    return Err(StepResult::Raised);
                }
            }
            Op::CallMoveRaise { h } => {
                if let Some((r, _)) = self.holders[h.idx()].take() {
                    let r = wrapper::callback_raise(py, r);
                    self.py_result(py, op, r)?;
                    return Err(StepResult::Raised);
                }
            }
            Op::Pickle { v, u } => {
                if let Some(src) = self.source(py, u) {
                    let r = wrapper::pickle(&src).map_err(|Cyclic| StepResult::Cyclic)?;
                    drop(src);
                    let o = self.py_result(py, op, r)?;
                    self.assign(v, o);
                }
            }
            Op::Mark { .. } | Op::Expect(_) => {}
        }
        Ok(())
    }
}

impl super::Gate for PytieBackend {
    fn release_after_end(&mut self, op: &Op) {
        self.cpp_release(op, None);
    }
    fn end_interpreter(&mut self) -> StepResult {
        self.finalize()
    }
    fn armed(&mut self) -> &mut Option<u32> {
        &mut self.oom
    }
}

impl Backend for PytieBackend {
    fn name(&self) -> String {
        "pytie runtime (design S)".into()
    }

    fn caps(&self) -> Caps {
        Caps {
            // No Python weak references to wrappers (contract §3.1).
            steps: StepSet::ALL.without(StepKind::PyWeak),
            // `del` objects are made as dict ones (no `__del__`): no
            // finalizer to count.
            observes: Observes {
                finalized: false,
                ..Observes::ALL
            },
            // The eligible type is not a GC type (its finalizer must run at
            // every generation, PEP 442); the dict type is.
            gc_wrappers: GcWrappers::IneligibleTypes,
            // The other kinds are made as plain or dict objects (docs/contract.md §2.2);
            // `fragile` has a wrapper type of its own (R20).
            kinds: &ObjKind::RUNTIME,
        }
    }

    fn begin(&mut self) -> Result<(), String> {
        // Teardown leaves vars that held None holding None (`del` of None
        // keeps it): they own nothing; a new program starts empty.
        self.forget_nones();
        self.result = StepResult::Ok;
        self.cycles.clear();
        self.violations.clear();
        self.oom = None;
        self.oom_reached = None;
        wrapper::reset()
    }

    fn refuse(&mut self, op: &Op) -> Option<String> {
        crate::interp::refuse_outside_child(op)
    }

    fn apply(&mut self, op: &Op) -> StepResult {
        let _traced = Traced::new();
        let armed = match super::Gate::gate(self, op) {
            Ok(armed) => armed,
            Err(r) => {
                self.result = r;
                return r;
            }
        };
        let r = Python::attach(|py| {
            let (r, reached) = crate::alloc_fault::around(py, armed, false, || self.step(py, op));
            self.oom_reached = reached;
            r
        });
        self.result = r.err().unwrap_or(StepResult::Ok);
        self.result
    }

    fn allocation_failed(&mut self) -> Option<bool> {
        self.oom_reached.take()
    }

    fn observe(&mut self, out: &mut AbstractState) {
        if crate::interp::ended() {
            // No var holds anything after the end (`finalize`).
            wrapper::observe_after_end(out);
            out.vars = [VarState::Empty; VARS];
            for (slot, h) in out.holders.iter_mut().zip(&self.holders) {
                *slot = h.as_ref().map(|(_, id)| *id);
            }
            for (slot, w) in out.weaks.iter_mut().zip(&self.weaks) {
                *slot = w.as_ref().map(|(_, id)| *id);
            }
            out.result = self.result;
            return;
        }
        Python::attach(|py| {
            wrapper::observe(py, out);
            for (slot, var) in out.vars.iter_mut().zip(&self.vars) {
                *slot = match var.as_ref().map(|o| o.bind(py)) {
                    None => VarState::Empty,
                    Some(o) if o.is_none() => VarState::None,
                    Some(o) => match wrapper::info(o) {
                        Some(i) if i.moved => VarState::Moved(i.serial),
                        Some(i) => VarState::Wrapper(i.serial),
                        None => VarState::None,
                    },
                };
            }
        });
        for (slot, h) in out.holders.iter_mut().zip(&self.holders) {
            *slot = h.as_ref().map(|(_, id)| *id);
        }
        for (slot, w) in out.weaks.iter_mut().zip(&self.weaks) {
            *slot = w.as_ref().map(|(_, id)| *id);
        }
        out.result = self.result;
    }

    fn violations(&mut self) -> Vec<String> {
        let mut v = std::mem::take(&mut self.violations);
        v.extend(wrapper::take_violations());
        v
    }

    fn identity(&mut self, v: Var) -> Option<usize> {
        let o = self.vars[v.idx()].as_ref()?;
        Python::attach(|py| wrapper::info(o.bind(py)).map(|i| i.addr))
    }

    fn cycle_members(&self) -> &[WrapperNo] {
        &self.cycles
    }

    fn clear_all_fields(&mut self) {
        let _traced = Traced::new();
        // Teardown (§6) begins: an `oom` that was the program's last step
        // arms nothing.
        self.oom = None;
        if crate::interp::ended() {
            wrapper::clear_all_fields_after_end();
        } else {
            Python::attach(wrapper::clear_all_fields);
        }
    }

    fn reclaim_leaked(&mut self) {
        if crate::interp::ended() {
            wrapper::forget_leaked();
        } else {
            Python::attach(wrapper::reclaim_leaked);
        }
    }

    fn leftovers(&mut self) -> Option<String> {
        wrapper::leftovers()
    }

    fn abandon(&mut self) {
        for v in &mut self.vars {
            std::mem::forget(v.take());
        }
        for h in &mut self.holders {
            std::mem::forget(h.take());
        }
        for w in &mut self.weaks {
            std::mem::forget(w.take());
        }
        self.cycles.clear();
        Python::attach(wrapper::abandon);
    }
}

impl Drop for PytieBackend {
    fn drop(&mut self) {
        // Vars that hold None own nothing of the world (teardown leaves
        // them so): release them here. Anything else is a world left behind
        // (a panic mid-program), abandoned, not freed. Abandoning resets the
        // process-wide records, so it must not happen after a clean finish:
        // a test thread's executor is dropped when the thread ends, while
        // another thread may be in the middle of a program.
        let world_left = self.holders.iter().any(Option::is_some)
            || self.weaks.iter().any(Option::is_some)
            || Python::attach(|py| {
                for v in &mut self.vars {
                    if v.as_ref().is_some_and(|o| o.is_none(py)) {
                        *v = None;
                    }
                }
                self.vars.iter().any(Option::is_some)
            });
        if world_left {
            self.abandon();
        }
    }
}
