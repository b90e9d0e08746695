//! apache-tvm-ffi, the library users ship, as a backend: the wheel from
//! PyPI (`scripts/setup-tvmffi` installs the pinned version into
//! `.venv/tvmffi`), loaded into the interpreter pytie embeds and driven
//! through its Cython wrappers and its C API.
//!
//! Every step outside Python runs upstream's own C++, compiled from the
//! build's headers into pytie's C++ harness (`harness.cc`, built by
//! `scripts/build-tvmffi-harness`); docs/tvmffi-tied.md "What each step
//! runs" has the full table.
//!
//! | step | how |
//! |---|---|
//! | `new V plain` / `dict` | `Node()` / `DictNode()`: `tvm_ffi.dataclasses.py_class` types with a mutable `x: Optional[Object]` field; `DictNode` instances have a `__dict__` |
//! | `new V legacy` | `pytie.tvmffi.new_legacy(type_index)` (harness.cc): what an extension built against the published (pre-tying) headers does: a `Node`-layout object from plain `calloc`, no allocation prefix (contract §2.1), its own deleter, returned through the library's return path |
//! | `weak W V` / `unweak W` | a C++ `WeakObjectPtr<Object>` made from `ObjectPtr<Object>` / destroyed (object.h `IncWeakRef` / `DecWeakRef`) |
//! | `lock V W` | `pytie.tvmffi.lock(w)`: a typed `ffi::Function` returning `WeakObjectPtr::lock()` (object.h `TryPromoteWeakPtr`): the object, or None |
//! | `ret V H` | `pytie.tvmffi.ret(h)`: a typed `ffi::Function` returning a copy of the holder's `ObjectRef`, so the object reaches Python through the library's return path (`make_ret_object`) |
//! | `echo V U` | `testing.echo(u)` |
//! | `get`/`set`/`unset` | `u.x`, `u.x = v`, `u.x = None` |
//! | `hold H V` / `release H` | a C++ `ObjectRef` made from `v.__chandle__()` (object.h `IncRef`) / destroyed (`DecRef`, the deleter) |
//! | `move H V` | `pytie.tvmffi.take(v._move())`: a typed `ffi::Function` with an `Any` parameter (any.h: an rvalue ref's +1 is stolen and the wrapper's handle NULLed) that keeps it in a new `ObjectRef` holder |
//! | `release_foreign H` | the holder's `ObjectRef` destroyed on a new `std::thread`, the interpreter's thread having let go of the GIL |
//! | `clone`/`drop`/`cycle`/`collect` | plain Python |
//! | `pickle V U` | `pickle.loads(pickle.dumps(u))`; the copies are numbered by reading their fields, their temporary wrappers from their tag words ([`TvmFfiBackend::number_copies`]) |
//! | `pyweak V` | `weakref.ref(v)`, checked and dropped; TypeError is *noweakref* |
//! | `call V H` / `call_move V H` | `pytie.tvmffi.call(h, cb)` / `call_move`: a typed `ffi::Function` (harness.cc) calling the Python callback `cb = tvm_ffi.convert(lambda x: x)` with the holder's object, borrowed or as an `RValueRef` (the holder emptied), returning its result |
//!
//! Every step kind is expressed. `shutdown` runs upstream's atexit hook,
//! whose flag no process can reset, so it and the rest of the program run
//! in a child the harness forks (`src/child.rs`).
//!
//! Observation: handles by address; strong and weak counts through the
//! harness (`Object::use_count()`, the header's weak half); fields read
//! (the `Any` at the offset the reflection table gives) and, at teardown,
//! cleared (`obj->x = nullptr`) by the harness; vars' wrappers by
//! address and `__chandle__()` (0: moved-from). The observer holds no
//! reference: it puts a pass-through deleter in each object's header
//! ([`capi::watch`]) and so learns when (and on which thread, with or
//! without the GIL) the storage is freed, and reads a header only while
//! its storage is allocated. A wrapper nobody holds is dead unless its
//! handle's tag word caches it (tying on: `W|1`), so CPython reusing a
//! freed wrapper's address is never taken for a revival. With tying on,
//! bindings too: every object but a legacy one has the tied prefix, and
//! its tag word (body - 16) is read while its storage is allocated: NULL
//! Detached, `W` Active, `W|1` Inactive, transit or lock bits between
//! steps a violation (§3.1), read by upstream's `TVMFFIPyPeekWord`. Each
//! held wrapper's GC tracking (`PyObject_GC_IsTracked`); with tying on, the
//! `__del__` calls of `del` wrappers (counted in harness.cc); between
//! programs, the reference count of each kind's wrapper type (the world).
//! Not observable: whether a wrapper's memory is freed, world totals.
//!
//! Tying: detected at start-up (a second return of the same object is the
//! same wrapper, or not); off in every published wheel, which makes the
//! executor's model treat every object as untied; on in the build of
//! `scripts/setup-tvmffi-tied` ([`Build::Tied`], `--backend tvm-ffi-tied`),
//! checked against the model's design U (contract §3.1).
//!
//! Recorded upstream findings (corpus/upstream/):
//! - [`LEAK_FINDING`]: every store into a `py_class` field leaks one strong
//!   reference. Reported as an upstream failure; with
//!   [`KnownFindings::WorkAround`] (campaigns, corpus replay) the backend
//!   releases the leaked reference after each store, when the start-up
//!   probe measured the leak, and says so per step.
//! - [`MOVED_FINDING`]: any use of a moved-from object crashes the process.
//!   The backend refuses exactly the steps that would do it (`echo`,
//!   `get`, `set`, `unset` on a moved-from wrapper) and names the finding.
//! - [`CYCLE_FINDING`]: pickling a graph with a cycle overflows the stack;
//!   the backend refuses `pickle` when the chain from its source has one.

mod capi;
mod findings;
mod glue;
mod harness;
mod signals;
mod venv;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use pyo3::prelude::*;

use pytie_core::backend::{Backend, Caps, GcWrappers, Observes};
use pytie_core::model::Design;
use pytie_core::program::{HOLDERS, Holds, ObjKind, Op, VARS, Var, WEAKS};
use pytie_core::state::{
    AbstractState, Binding, DANGLING, HandleNo, HandleState, StepResult, Totals, VarState,
    WrapperLife, WrapperNo, WrapperState,
};

use capi::{K_STATIC_OBJECT_BEGIN, Stray, Watch};
use glue::{KindPath, Lib, chandle};
use harness::{Holder, Weak};

pub use findings::KnownFindings;
pub use pytie_core::tvmffi::{
    CALLBACK_FINDING, CELL_FINDING, CYCLE_FINDING, ERROR_FINDING, FRAME_FINDING, LEAK_FINDING,
    LEGACY_FINDING, MOVED_FINDING, OBSERVES, PINNED, SETTER_FINDING, steps,
};
pub use signals::sigsegv_handler_owner;
pub use venv::{Build, select, site_packages, tied_venv_dir, venv_dir};

/// A wrapper the program has seen, numbered by first appearance.
struct Wr {
    addr: usize,
    /// Known dead: its last ref went and its handle's tag word does not
    /// cache it (Inactive), so its address may be reused by a fresh
    /// wrapper, which is never a revival (contract §4.1 R9).
    dead: bool,
    /// Vars and cycles holding it.
    refs: u32,
    /// The handle `chandle` pointed to when last seen (`None`: NULL).
    chandle: Option<HandleNo>,
}

/// The backend. Use it while holding [`crate::interp::exclusive`].
pub struct TvmFfiBackend {
    lib: &'static Lib,
    known: KnownFindings,
    vars: [Option<Py<PyAny>>; VARS],
    /// The wrapper number of each var holding an object.
    var_wr: [Option<WrapperNo>; VARS],
    /// Holders: a C++ `ObjectRef` each (harness.cc) and the handle number
    /// of the object it keeps.
    holders: [Option<(Holder, HandleNo)>; HOLDERS],
    /// Weak slots: a C++ `WeakObjectPtr<Object>` each and the handle
    /// number of its object.
    weaks: [Option<(Weak, HandleNo)>; WEAKS],
    /// Per handle number: the kind `new` made it as (a legacy object has no
    /// allocation prefix: nothing before its body may be read, contract
    /// §2.1; the kind says where the field is).
    kinds: Vec<ObjKind>,
    /// Per handle number: the object's address, and what its deleter told
    /// the observer (which holds no reference of its own: [`capi::watch`]).
    handles: Vec<(usize, Arc<Watch>)>,
    wrappers: Vec<Wr>,
    cycles: Vec<WrapperNo>,
    result: StepResult,
    violations: Vec<String>,
    worked_around: Option<String>,
    /// `$PYTIE_TVMFFI_REFUSE_LEGACY` (default on): with
    /// [`KnownFindings::WorkAround`] on the ASan build, refuse `new V
    /// legacy` ([`LEGACY_FINDING`]); `0` lets a campaign run into it.
    refuse_legacy: bool,
    /// Refuse a raising callback under an armed `oom` ([`ERROR_FINDING`]);
    /// `PYTIE_TVMFFI_REFUSE_LOST_ERROR=0` runs into it.
    refuse_lost_error: bool,
    /// The glue's `__del__` count when this program began.
    finalizers_before: u64,
    /// `oom K` ran: the next step has its K-th Python allocation fail.
    oom: Option<u32>,
    /// After a step `oom` armed: whether its armed allocation came.
    oom_reached: Option<bool>,
}

/// A refusal rule's switch, the environment variable `name`: unset or 1
/// refuses the steps that would run into `finding`, 0 runs into it.
fn refuse_flag(name: &str, finding: &str) -> Result<bool, String> {
    match std::env::var(name).as_deref() {
        Err(_) | Ok("1") => Ok(true),
        Ok("0") => Ok(false),
        Ok(v) => Err(format!("{name}={v}: expected 0 (run into {finding}) or 1")),
    }
}

impl TvmFfiBackend {
    /// Load tvm-ffi (once per process) and make a backend.
    pub fn new(known: KnownFindings) -> Result<TvmFfiBackend, String> {
        let lib = Python::attach(glue::lib)?;
        let refuse_legacy = refuse_flag("PYTIE_TVMFFI_REFUSE_LEGACY", LEGACY_FINDING)?;
        let refuse_lost_error = refuse_flag("PYTIE_TVMFFI_REFUSE_LOST_ERROR", ERROR_FINDING)?;
        Ok(TvmFfiBackend {
            refuse_legacy,
            refuse_lost_error,
            finalizers_before: 0,
            lib,
            known,
            vars: Default::default(),
            var_wr: [None; VARS],
            holders: [None; HOLDERS],
            weaks: [None; WEAKS],
            kinds: Vec::new(),
            handles: Vec::new(),
            wrappers: Vec::new(),
            cycles: Vec::new(),
            result: StepResult::Ok,
            violations: Vec::new(),
            worked_around: None,
            oom: None,
            oom_reached: None,
        })
    }

    pub fn set_known_findings(&mut self, known: KnownFindings) {
        self.known = known;
    }

    /// The environment the library was loaded from.
    pub fn venv(&self) -> PathBuf {
        glue::loaded_from().map_or_else(venv_dir, Path::to_path_buf)
    }

    /// The model design this build implements: upstream's design U when
    /// tying is on (contract §3.1); with tying off the design does not
    /// matter (every object untied), S is kept.
    pub fn design(&self) -> Design {
        if self.lib.tying { Design::U } else { Design::S }
    }

    /// The installed version (`tvm_ffi.__version__`).
    pub fn version(&self) -> &str {
        &self.lib.version
    }

    /// Strong refs a field store leaks, as measured at start-up.
    pub fn leak_per_store(&self) -> u32 {
        self.lib.kind(ObjKind::Plain).leak_per_store
    }

    /// How tying was detected, for the output.
    pub fn profile(&self) -> String {
        if self.lib.tying {
            "tying on (a second return of the same object gave the same wrapper): model design U \
             (contract §3.1)"
                .into()
        } else {
            "tying off (a second return of the same object gave a new wrapper): model profile \
             `untied` (contract §3: every object untied)"
                .into()
        }
    }

    /// The handle of the live object at `addr` (a freed object's address
    /// may be reused by a later one).
    fn handle_no(&self, addr: usize) -> HandleNo {
        self.handles
            .iter()
            .rposition(|(a, w)| *a == addr && !w.freed.load(Ordering::SeqCst))
            .map_or(DANGLING, |n| n as HandleNo)
    }

    /// The address of handle `n` while its storage is allocated.
    fn storage(&self, n: usize) -> Option<usize> {
        let (a, w) = &self.handles[n];
        (!w.freed.load(Ordering::SeqCst)).then_some(*a)
    }

    /// Handle `n`'s tag word caches the wrapper at `w` (Inactive(W), §3.1
    /// "Tag word"). Only with tying on, where every object the library
    /// makes has the 16-byte prefix, and never for a legacy object.
    fn caches(&self, n: HandleNo, w: usize) -> bool {
        self.tag(n as usize)
            .is_some_and(|tag| tag & 1 != 0 && tag & !7 == w)
    }

    /// Handle `n`'s tag word, while its storage is allocated and it has
    /// one: tying on (every object the library makes has the 16-byte
    /// prefix), and not a legacy object.
    fn tag(&self, n: usize) -> Option<usize> {
        let prefixed = self.lib.tying && self.kinds[n] != ObjKind::Legacy;
        let addr = self.storage(n).filter(|_| prefixed)?;
        // SAFETY: the storage is allocated (its deleter has not freed it)
        // and has the tied prefix.
        Some(unsafe { harness::tag_word(addr) })
    }

    /// The handle a wrapper points to; `None` when moved-from.
    fn handle_of(&self, o: &Bound<'_, PyAny>) -> PyResult<Option<HandleNo>> {
        let c = chandle(o)?;
        Ok((c != 0).then(|| self.handle_no(c)))
    }

    /// Number a wrapper about to be stored in a var: the wrapper of that
    /// address some var or cycle holds, else (tying on) the wrapper last
    /// seen there for the same handle (revived), else a fresh one.
    fn number(&mut self, o: &Bound<'_, PyAny>) -> PyResult<WrapperNo> {
        let addr = o.as_ptr() as usize;
        let h = self.handle_of(o)?;
        let held = self
            .wrappers
            .iter()
            .position(|w| w.addr == addr && w.refs > 0);
        let revived = || {
            self.wrappers.iter().rposition(|w| {
                w.addr == addr && w.refs == 0 && !w.dead && h.is_some() && w.chandle == h
            })
        };
        let n = match held.or_else(|| self.lib.tying.then(revived).flatten()) {
            Some(n) => n,
            None => {
                self.wrappers.push(Wr {
                    addr,
                    dead: false,
                    refs: 0,
                    chandle: h,
                });
                self.wrappers.len() - 1
            }
        };
        self.wrappers[n].refs += 1;
        self.wrappers[n].chandle = h;
        Ok(n as WrapperNo)
    }

    /// Python assignment order: the new value is computed; replace the
    /// slot, then drop the old value.
    fn assign(&mut self, v: Var, new: Bound<'_, PyAny>) -> PyResult<()> {
        let n = if new.is_none() {
            None
        } else {
            Some(self.number(&new)?)
        };
        let old = self.vars[v.idx()].replace(new.unbind());
        let old_n = std::mem::replace(&mut self.var_wr[v.idx()], n);
        // The old value's wrapper may die here: the library's dealloc.
        crate::alloc_fault::library(|| drop(old));
        if let Some(o) = old_n {
            self.wrappers[o as usize].refs -= 1;
        }
        Ok(())
    }

    /// The object in var `v`, unless the var is empty or holds None.
    fn source<'py>(&self, py: Python<'py>, v: Var) -> Option<Bound<'py, PyAny>> {
        let o = self.vars[v.idx()].as_ref()?.bind(py);
        (!o.is_none()).then(|| o.clone())
    }

    /// Var `v` holds a moved-from wrapper (its handle is NULL).
    fn moved(&self, py: Python<'_>, v: Var) -> bool {
        self.source(py, v)
            .is_some_and(|o| chandle(&o).is_ok_and(|c| c == 0))
    }

    /// Strong refs on `val`'s object not accounted for by `target`'s field:
    /// its strong count less one if the field holds it (for the store-leak
    /// work-around on a store that failed).
    fn store_refs(&self, target: &Bound<'_, PyAny>, val: &Bound<'_, PyAny>) -> PyResult<i64> {
        let (t, addr) = (chandle(target)?, chandle(val)?);
        let (tn, vn) = (self.handle_no(t), self.handle_no(addr));
        if t == 0 || addr == 0 || tn == DANGLING || vn == DANGLING {
            return Ok(0);
        }
        // SAFETY: both objects are alive: the wrappers keep them.
        let (strong, _) = unsafe { harness::counts(addr) };
        // SAFETY: as above; `t` is handle `tn`'s object.
        let held = unsafe { self.field(tn as usize, t) } == Some(vn);
        Ok(i64::from(strong) - i64::from(held))
    }

    /// Before a callback step under an armed `oom` ([`CALLBACK_FINDING`]):
    /// one strong reference of the backend's own on the holder's object,
    /// so that the library's second release of the argument on a failed
    /// wrapper allocation cannot free it (worked around or reported, the
    /// process stays sound). Returns the object's address, its handle number and the
    /// strong count a correct library leaves if the call fails (the guard
    /// included): unchanged for a borrowed argument, one less for a moved
    /// one (§4.4).
    fn guard_callback_arg(&self, holder: Holder, moved: bool) -> Option<(usize, usize, u32)> {
        // SAFETY: a holder the slot owns, not released.
        let addr = unsafe { harness::held(holder) };
        let n = self.handle_no(addr);
        if n == DANGLING {
            return None;
        }
        // The argument's wrapper may fail to be made: an allocation `oom`
        // armed, or a type whose construction raises (R20).
        if !crate::alloc_fault::armed() && !self.kinds[n as usize].refuses_construction() {
            return None;
        }
        // SAFETY: the holder keeps the object alive.
        let (strong, _) = unsafe { harness::counts(addr) };
        // SAFETY: as above; the guard is released in unguard_callback_arg.
        unsafe { capi::inc_ref(addr) };
        Some((addr, n as usize, strong + 1 - u32::from(moved)))
    }

    /// After the call [`Self::guard_callback_arg`] guarded: if it failed
    /// and the object has one strong reference fewer than a correct
    /// library leaves, the library released the argument twice and the
    /// guard stands in for the reference it took (reported); otherwise the
    /// guard is released.
    fn unguard_callback_arg(&mut self, guard: Option<(usize, usize, u32)>, failed: bool) {
        let Some((addr, n, correct)) = guard else {
            return;
        };
        if self.storage(n).is_none() {
            // Freed: the guard went with the library's releases.
            return;
        }
        // SAFETY: the storage is allocated (not freed, checked above).
        let (strong, _) = unsafe { harness::counts(addr) };
        if failed && strong + 1 == correct {
            // The guard stays either way: the process stays sound (without
            // it the object would be freed under its holder, and the second
            // release would write into the freed block).
            let what = format!(
                "the library released the callback's argument twice when its wrapper could not \
                 be made ({CALLBACK_FINDING})"
            );
            match self.known {
                KnownFindings::WorkAround => {
                    self.worked_around = Some(format!(
                        "kept a strong ref on the callback's argument: {what}"
                    ));
                }
                KnownFindings::Report => self.violations.push(what),
            }
            return;
        }
        if strong > 0 {
            // SAFETY: the guard's reference, taken in guard_callback_arg.
            unsafe { capi::dec_ref(addr) };
        }
    }

    /// After a step that failed with MemoryError (§4.4): a wrapper the step
    /// made, cached in an object's tag word (Inactive) and dropped before
    /// anything here saw it, is numbered as a cached one.
    fn number_left_cached(&mut self) {
        for n in 0..self.handles.len() {
            let Some(tag) = self.tag(n) else { continue };
            let w = tag & !7;
            let known = self
                .wrappers
                .iter()
                .any(|x| x.addr == w && (x.refs > 0 || !x.dead));
            if tag & 1 != 0 && w != 0 && !known {
                self.number_temporary(Some((w, n as HandleNo)));
            }
        }
    }

    /// Holders: store first, release the old reference after.
    fn store_holder(&mut self, h: usize, new: Holder) {
        // SAFETY: a holder just made, not released.
        let addr = unsafe { harness::held(new) };
        let old = self.holders[h].replace((new, self.handle_no(addr)));
        if let Some((old, _)) = old {
            // SAFETY: the holder the slot owned, not used after.
            unsafe { harness::release(old) };
        }
    }

    /// How the object a (live, not moved-from) wrapper points to was made:
    /// its kind's path.
    fn path_of(&self, o: &Bound<'_, PyAny>) -> PyResult<&'static KindPath> {
        let kind = match self.handle_of(o)? {
            Some(n) if n != DANGLING => self.kinds[n as usize],
            // Not one of this program's objects (cannot happen: every
            // object a step reaches was made by `new`): the attribute path.
            _ => ObjKind::Plain,
        };
        Ok(self.lib.kind(kind))
    }

    /// A new object: numbered, observed until the program ends.
    fn new_object<'py>(&mut self, py: Python<'py>, kind: ObjKind) -> PyResult<Bound<'py, PyAny>> {
        let o = match &self.lib.kind(kind).ctor {
            Some(ctor) => glue::call(ctor.bind(py), ())?,
            None => glue::call(self.lib.new_legacy.bind(py), (self.lib.node_type_index,))?,
        };
        let addr = chandle(&o)?;
        // SAFETY: just made; only `o` reaches it, and the GIL is held.
        let watch = unsafe { capi::watch(addr) };
        self.handles.push((addr, watch));
        self.kinds.push(kind);
        Ok(o)
    }

    fn step(&mut self, py: Python<'_>, op: &Op) -> PyResult<StepResult> {
        let lib = self.lib;
        match *op {
            Op::New { v, kind } => {
                let o = self.new_object(py, kind)?;
                self.assign(v, o)?;
            }
            Op::Ret { v, h } => {
                if let Some((holder, _)) = self.holders[h.idx()] {
                    let o = glue::call(lib.ret.bind(py), (holder.0,))?;
                    self.assign(v, o)?;
                }
            }
            // The temporary reference to U goes before the assignment, as
            // in Python's `v = f(u)`.
            Op::Echo { v, u } => {
                if let Some(src) = self.source(py, u) {
                    let o = glue::call(lib.echo.bind(py), (&src,));
                    drop(src);
                    self.assign(v, o?)?;
                }
            }
            Op::Get { v, u } => {
                if let Some(src) = self.source(py, u) {
                    let path = self.path_of(&src)?;
                    let guard =
                        self.known == KnownFindings::WorkAround && crate::alloc_fault::armed();
                    // SAFETY: a live object.
                    let refs = unsafe { pyo3::ffi::Py_REFCNT(src.as_ptr()) };
                    // The error's frames hold the wrapper: let go of them
                    // (the step's error is only mapped to its result) before
                    // counting.
                    let o = glue::load_field(&src, path.access).map_err(|e| {
                        if guard {
                            glue::without_frames(py, e)
                        } else {
                            e
                        }
                    });
                    // SAFETY: as above.
                    let leaked = unsafe { pyo3::ffi::Py_REFCNT(src.as_ptr()) } - refs;
                    if guard && o.is_err() && leaked > 0 {
                        let cleared: usize =
                            lib.clear_leaked_cells.bind(py).call1((&src,))?.extract()?;
                        if cleared == 0 {
                            // SAFETY: the reference CPython leaked in the
                            // failed frame's slot, which nothing reads again
                            // (no object refers to the wrapper for it); `src`
                            // and the var keep the wrapper alive.
                            unsafe { pyo3::ffi::Py_DECREF(src.as_ptr()) };
                        }
                        self.worked_around = Some(format!(
                            "released the reference to the container's wrapper CPython leaked \
                             ({cleared} leaked cell(s) emptied) when a cell of getitem_helper could \
                             not be made ({CELL_FINDING})"
                        ));
                    }
                    drop(src);
                    self.assign(v, o?)?;
                }
            }
            Op::Set { u, v } => {
                if let (Some(target), Some(val)) = (self.source(py, u), self.source(py, v)) {
                    let path = self.path_of(&target)?;
                    let leak = path.leak_per_store;
                    let work_around = self.known == KnownFindings::WorkAround && leak > 0;
                    let before = if work_around {
                        self.store_refs(&target, &val)?
                    } else {
                        0
                    };
                    let r = glue::store(&target, path.access, Some(&val));
                    // A store that returned leaked `leak` refs; one that
                    // raised (an `oom`) leaked them if the conversion that
                    // leaks ran before the failure: the refs left over
                    // beyond what the field holds are counted.
                    let leaked = match (&r, work_around) {
                        (_, false) => 0,
                        (Ok(()), true) => leak,
                        (Err(_), true) => {
                            let extra = self.store_refs(&target, &val)? - before;
                            u32::try_from(extra)
                                .ok()
                                .filter(|&e| e == leak)
                                .unwrap_or(0)
                        }
                    };
                    if leaked > 0 {
                        let addr = chandle(&val)?;
                        // SAFETY: `val` was just stored, or converted for a
                        // store that then failed, by a library that leaked
                        // `leak` refs on it (the start-up probe; counted).
                        let done = unsafe { findings::release_store_leak(addr, leak) };
                        self.worked_around = Some(done);
                    }
                    r?;
                }
            }
            Op::Unset { u } => {
                if let Some(target) = self.source(py, u) {
                    glue::store(&target, self.path_of(&target)?.access, None)?;
                }
            }
            Op::Clone { v, u } => {
                if let Some(src) = self.source(py, u) {
                    self.assign(v, src)?;
                }
            }
            // `del v` on a var holding None leaves it None.
            Op::Drop { v } => {
                if self.source(py, v).is_some() {
                    let old = self.vars[v.idx()].take();
                    crate::alloc_fault::library(|| drop(old));
                    if let Some(n) = self.var_wr[v.idx()].take() {
                        self.wrappers[n as usize].refs -= 1;
                    }
                }
            }
            Op::Hold { h, v } => {
                if let Some(src) = self.source(py, v) {
                    let addr = chandle(&src)?;
                    if addr == 0 {
                        return Ok(StepResult::Moved);
                    }
                    // SAFETY: `src` keeps the object alive for the call.
                    let new = unsafe { harness::hold(addr) };
                    drop(src);
                    self.store_holder(h.idx(), new);
                }
            }
            Op::Move { h, v } => {
                if let Some(src) = self.source(py, v) {
                    let was_moved = chandle(&src)? == 0;
                    let rv = crate::alloc_fault::library(|| {
                        src.call_method0(pyo3::intern!(py, "_move"))
                    })?;
                    let r = glue::call(lib.take.bind(py), (rv,));
                    // The C++ holder `take` made, read from the harness: its
                    // address as a Python int may not have been made (§4.4).
                    let made = harness::take_last();
                    drop(src);
                    match (r, made) {
                        // The library refuses a second move itself.
                        (Err(_), None) if was_moved => return Ok(StepResult::Moved),
                        (Err(e), None) => return Err(e),
                        (_, Some(_)) if was_moved => {
                            self.violations
                                .push(format!("`{op}`: moving a moved-from object did not fail"));
                        }
                        (r, Some(new)) => {
                            self.store_holder(h.idx(), new);
                            // The move was done; its result failed after.
                            r?;
                        }
                        (Ok(_), None) => {
                            self.violations
                                .push(format!("`{op}`: the callee returned without a holder"));
                        }
                    }
                }
            }
            Op::Release { .. } | Op::ReleaseForeign { .. } | Op::Unweak { .. } => {
                self.cpp_release(op, Some(py));
            }
            Op::Cycle { v } => {
                if let Some(src) = self.source(py, v) {
                    // `l = [v]; l.append(l); del v`: the var is left as it
                    // was if Python could not make the cycle (§4.4).
                    glue::self_list(&src)?;
                    drop(src);
                    drop(self.vars[v.idx()].take());
                    if let Some(n) = self.var_wr[v.idx()].take() {
                        self.cycles.push(n);
                    }
                }
            }
            Op::Collect => {
                // A collection that raised collected nothing: its cycles
                // stay (gc.collect raises before it starts or not at all).
                glue::call(lib.gc_collect.bind(py), ())?;
                for n in std::mem::take(&mut self.cycles) {
                    self.wrappers[n as usize].refs -= 1;
                }
            }
            Op::Weak { w, v } => {
                if let Some(src) = self.source(py, v) {
                    let addr = chandle(&src)?;
                    if addr == 0 {
                        return Ok(StepResult::Moved);
                    }
                    // SAFETY: `src` keeps the object alive for the call.
                    let new = unsafe { harness::weak(addr) };
                    drop(src);
                    let old = self.weaks[w.idx()].replace((new, self.handle_no(addr)));
                    if let Some((old, _)) = old {
                        // SAFETY: the weak slot the var owned, not used after.
                        unsafe { harness::unweak(old) };
                    }
                }
            }
            Op::Lock { v, w } => {
                if let Some((weak, _)) = self.weaks[w.idx()] {
                    let o = glue::call(lib.lock.bind(py), (weak.0,))?;
                    self.assign(v, o)?;
                }
            }
            // Unsupported (see `steps`): the executor never applies it.
            Op::Shutdown => {
                // What the interpreter's end runs first: the atexit hooks,
                // upstream's TVMFFIPyMarkPythonFinalizing among them
                // (core.pyx). Only in a forked child (`refuse`).
                let run = py.import("atexit")?.getattr("_run_exitfuncs")?;
                glue::call(&run, ())?;
            }
            Op::Pickle { v, u } => {
                if let Some(src) = self.source(py, u) {
                    let kinds = match chandle(&src)? {
                        0 => Vec::new(),
                        addr => self.chain(self.handle_no(addr)).unwrap_or_default(),
                    };
                    let copy = glue::call(lib.pickle.bind(py), (&src,));
                    drop(src);
                    let copy = copy?;
                    self.number_copies(chandle(&copy)?, &kinds);
                    self.assign(v, copy)?;
                }
            }
            // `apply` runs it outside Python.
            Op::Finalize => {}
            // `apply` arms the next step with it.
            Op::Oom { .. } => {}
            Op::Call { v, h } | Op::CallMove { v, h } => {
                let moved = matches!(op, Op::CallMove { .. });
                if let Some((holder, n)) = self.callback_holder(h, moved) {
                    let unseen = self.argument_dies_unseen(n);
                    let o = self.call_back(py, holder, moved, &lib.callback);
                    // A refused argument (R20) was never made.
                    if unseen && !o.as_ref().is_err_and(|e| glue::refused(py, e)) {
                        self.number_temporary(None);
                    }
                    self.assign(v, o?)?;
                }
            }
            Op::CallRaise { h } | Op::CallMoveRaise { h } => {
                let moved = matches!(op, Op::CallMoveRaise { .. });
                if let Some((holder, n)) = self.callback_holder(h, moved) {
                    // A fresh argument wrapper (for a Detached or untied
                    // object) is numbered whether it ends cached or dead.
                    let fresh = self.argument_is_fresh(n);
                    match self.call_back(py, holder, moved, &lib.raiser) {
                        Ok(_) => {
                            self.violations
                                .push(format!("`{op}`: the callback raised and the call returned"));
                        }
                        Err(e) => {
                            glue::raised_by_callback(py, e)?;
                            let known = self.wrappers.len();
                            self.number_left_cached();
                            if fresh && self.wrappers.len() == known {
                                self.number_temporary(None);
                            }
                            return Ok(StepResult::Raised);
                        }
                    }
                }
            }
            Op::PyWeak { v } => {
                if let Some(src) = self.source(py, v) {
                    match glue::call(lib.pyweak.bind(py), (&src,)) {
                        Err(e) if e.is_instance_of::<pyo3::exceptions::PyTypeError>(py) => {
                            return Ok(StepResult::NoWeakref);
                        }
                        r => drop(r?),
                    }
                }
            }
            Op::Mark { .. } | Op::Expect(_) => {}
        }
        Ok(StepResult::Ok)
    }

    /// Before a callback step on handle `n`: will the callback's argument be
    /// a fresh wrapper that dies before anything here sees it (the object
    /// untied, or Detached with an ineligible wrapper type)? The model
    /// numbers it (contract §4.1 R17); an eligible one is cached and revived
    /// into the result, the same wrapper.
    fn argument_dies_unseen(&self, n: HandleNo) -> bool {
        let Some(i) = (n != DANGLING).then_some(n as usize) else {
            return false;
        };
        if !self.lib.tying || !self.kinds[i].is_tied() {
            return true;
        }
        self.tag(i) == Some(0) && !self.kinds[i].is_eligible()
    }

    /// A callback step on holder `h` would have its argument's wrapper
    /// refused (R20): the object is `fragile` and has no Active wrapper.
    fn argument_refused(&self, h: pytie_core::program::Holder) -> bool {
        let Some((_, n)) = self.holders[h.idx()] else {
            return false;
        };
        if n == DANGLING || !self.kinds[n as usize].refuses_construction() {
            return false;
        }
        // No tag word (tying off) binds nothing: every return constructs.
        let active = self.tag(n as usize).is_some_and(|t| t != 0 && t & 1 == 0);
        !active
    }

    /// `set U V` would make the field setter construct a wrapper for V that
    /// its type refuses (R20): U's type is a `py_class` one (its setter
    /// converts the value through a return), V's object is `fragile` and,
    /// with tying off, has no wrapper bound to it.
    fn setter_would_refuse(&self, u: Var, v: Var) -> bool {
        if self.lib.tying {
            return false;
        }
        Python::attach(|py| {
            let kind = |x: Var| {
                let o = self.source(py, x)?;
                let n = self.handle_of(&o).ok()??;
                (n != DANGLING).then(|| self.kinds[n as usize])
            };
            matches!(
                (kind(u), kind(v)),
                (Some(t), Some(k)) if t.refuses_as_part(k)
            )
        })
    }

    /// `pickle V U` would have a Python-built parent's conversion refuse a
    /// `fragile` part's copy (R20).
    fn part_would_be_refused(&self, u: Var) -> bool {
        let Some(Ok(addr)) = Python::attach(|py| self.source(py, u).map(|o| chandle(&o))) else {
            return false;
        };
        if addr == 0 {
            return false;
        }
        self.chain(self.handle_no(addr))
            .is_some_and(|kinds| ObjKind::copy_refused(&kinds))
    }

    /// The holder a callback step passes: H's, taken out of the slot when
    /// the step moves it.
    fn callback_holder(
        &mut self,
        h: pytie_core::program::Holder,
        moved: bool,
    ) -> Option<(Holder, HandleNo)> {
        if moved {
            self.holders[h.idx()].take()
        } else {
            self.holders[h.idx()]
        }
    }

    /// C++ calls `cb` with `holder`'s object, borrowed or moved (the
    /// harness's `call` / `call_move`), guarded against the library's
    /// double release ([`Self::guard_callback_arg`]); a moved holder is
    /// released after.
    fn call_back<'py>(
        &mut self,
        py: Python<'py>,
        holder: Holder,
        moved: bool,
        cb: &Py<PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let lib = self.lib;
        let guard = self.guard_callback_arg(holder, moved);
        let f = if moved { &lib.call_move } else { &lib.call };
        let r = glue::call(f.bind(py), (holder.0, cb.bind(py)));
        self.unguard_callback_arg(guard, r.is_err());
        if moved {
            // SAFETY: the holder the slot owned (its reference moved out by
            // the call, or still there if the call failed before), not used
            // after.
            unsafe { harness::release(holder) };
        }
        r
    }

    /// Before a raising callback step on handle `n`: will the callback's
    /// argument be a fresh wrapper (the object untied, or Detached)?
    fn argument_is_fresh(&self, n: HandleNo) -> bool {
        let Some(i) = (n != DANGLING).then_some(n as usize) else {
            return false;
        };
        !self.lib.tying || !self.kinds[i].is_tied() || self.tag(i) == Some(0)
    }

    /// Number a wrapper a step made and let go of unseen (a callback's
    /// argument, `pickle`'s temporary one for a part): cached in handle
    /// `n`'s tag word, or dead (`None`).
    fn number_temporary(&mut self, cached: Option<(usize, HandleNo)>) {
        self.wrappers.push(Wr {
            addr: cached.map_or(0, |(addr, _)| addr),
            dead: cached.is_none(),
            refs: 0,
            chandle: cached.map(|(_, n)| n),
        });
    }

    /// The kinds of the objects along the field chain from handle `n`,
    /// root first; `None` when it has a cycle (or reaches an object that is
    /// not this program's).
    fn chain(&self, n: HandleNo) -> Option<Vec<ObjKind>> {
        let mut seen = Vec::new();
        let mut next = Some(n);
        while let Some(n) = next {
            if n == DANGLING || seen.contains(&n) {
                return None;
            }
            seen.push(n);
            let addr = self.storage(n as usize)?;
            // SAFETY: the storage is allocated and the object is reached
            // from a live wrapper's through strong fields: alive.
            next = unsafe { self.field(n as usize, addr) };
        }
        Some(seen.iter().map(|&n| self.kinds[n as usize]).collect())
    }

    /// After `pickle`: number the copy rooted at `root` as the model does
    /// (contract §4.1): its objects along the field, root first (`kinds`:
    /// the originals'), then, deepest first, the temporary wrapper each
    /// part got from a parent built by Python: found cached in the part's
    /// tag word (Inactive), or dead. The field-store leak of such a parent
    /// is worked around as after a `set`.
    fn number_copies(&mut self, root: usize, kinds: &[ObjKind]) {
        let first = self.handles.len();
        let mut addr = root;
        for (i, kind) in kinds.iter().enumerate() {
            if i > 0 {
                let parent = self.lib.kind(self.kinds[first + i - 1]).slot;
                // SAFETY: the previous copy is alive (the root's wrapper or
                // its parent's field keeps it) and keeps its field there.
                addr = unsafe { harness::field(addr, parent) }.1;
            }
            // SAFETY: made by this step, alive (kept as above), the GIL held.
            let watch = unsafe { capi::watch(addr) };
            self.handles.push((addr, watch));
            self.kinds.push(kind.copied());
        }
        for part in (first + 1..self.handles.len()).rev() {
            let parent = self.kinds[part - 1];
            if !parent.built_by_python() {
                continue;
            }
            let cached = self.tag(part).filter(|t| t & 1 != 0);
            self.number_temporary(cached.map(|t| (t & !7, part as HandleNo)));
            let leak = self.lib.kind(parent).leak_per_store;
            if self.known == KnownFindings::WorkAround && leak > 0 {
                // SAFETY: the part was just stored by a library that leaked
                // `leak` refs on it (the start-up probe); its parent keeps it.
                let done = unsafe { findings::release_store_leak(self.handles[part].0, leak) };
                self.worked_around = Some(done);
            }
        }
    }

    /// Handle `n` as observed: freed when its deleter freed the storage,
    /// else its header read.
    fn observe_handle(&mut self, n: usize) -> HandleState {
        let Some(addr) = self.storage(n) else {
            return HandleState::FREED;
        };
        // SAFETY: the storage is allocated (its deleter has not freed it).
        let (strong, weak) = unsafe { harness::counts(addr) };
        // SAFETY: strong > 0: alive, of the kind `new` made it as.
        let field = (strong > 0)
            .then(|| unsafe { self.field(n, addr) })
            .flatten();
        HandleState {
            strong,
            weak,
            storage: weak > 0,
            binding: match self.tag(n) {
                Some(tag) => self.binding_of(n, tag),
                None => Binding::Untied,
            },
            field,
        }
    }

    /// The binding handle `n`'s tag word `tag` holds (§3.1 "Tag word"):
    /// NULL Detached, `W` Active(W), `W|1` Inactive(W); the wrapper
    /// numbered by its address among those not known dead. Any other bit
    /// between steps (InTransit, Locked) is reported.
    fn binding_of(&mut self, n: usize, tag: usize) -> Binding {
        if tag == 0 {
            return Binding::Detached;
        }
        if tag & 6 != 0 {
            self.violations.push(format!(
                "the tag word of obj#{n} is {tag:#x} between steps: transit or lock bits set \
                 (§3.1: only NULL, W or W|1 between steps)"
            ));
        }
        let w = tag & !7;
        let n = self
            .wrappers
            .iter()
            .rposition(|x| x.addr == w && (x.refs > 0 || !x.dead))
            .map_or(WrapperNo::MAX, |n| n as WrapperNo);
        if tag & 1 != 0 {
            Binding::Inactive(n)
        } else {
            Binding::Active(n)
        }
    }

    /// The field of handle `n`, a live object at `addr`: where its kind
    /// keeps it (an `Any` at the reflected offset, a List's element 0, a
    /// Dict's value under "x").
    ///
    /// # Safety
    /// `addr` is handle `n`'s object, alive.
    unsafe fn field(&self, n: usize, addr: usize) -> Option<HandleNo> {
        // SAFETY: the caller's contract; the slot is the kind's.
        let (t, o) = unsafe { harness::field(addr, self.lib.kind(self.kinds[n]).slot) };
        match t {
            0 => None,
            t if t >= K_STATIC_OBJECT_BEGIN => Some(self.handle_no(o)),
            _ => Some(DANGLING),
        }
    }

    /// End of a program: forget the handles (an object a finding leaked
    /// stays watched; its deleter still runs when it dies).
    fn release_observers(&mut self) {
        self.handles.clear();
        self.kinds.clear();
    }

    /// The world outside a program as far as this backend sees it: the
    /// reference counts of the wrapper types (each live wrapper holds one
    /// on its type, so a program that ends with none alive must leave them
    /// as it found them; a revival that skips the type's INCREF, or a
    /// dealloc that DECREFs it twice, drifts them).
    pub fn world(&mut self, py: Python<'_>, out: &mut crate::conservation::World) {
        out.clear();
        for (what, t) in &self.lib.types {
            // SAFETY: the type lives for the process (the glue keeps it);
            // the GIL is held (`py`).
            out.push(what, unsafe { pyo3::ffi::Py_REFCNT(t.bind(py).as_ptr()) }
                as i64);
        }
    }

    /// `__del__` calls of this program's `del` wrappers (counted in
    /// harness.cc).
    fn finalized(&self) -> u32 {
        (harness::finalizers_run() - self.finalizers_before) as u32
    }

    /// Handles whose storage the library's deleter has freed, this program
    /// (the deleter ran with the weak bit; nothing of the observer's kept
    /// it allocated).
    pub fn storage_freed(&self) -> Vec<HandleNo> {
        (0..self.handles.len())
            .filter(|&n| self.handles[n].1.freed.load(Ordering::SeqCst))
            .map(|n| n as HandleNo)
            .collect()
    }

    /// Handles whose storage was freed by a deleter on a thread without the
    /// GIL, this program (`release_foreign` freeing the last reference).
    pub fn freed_without_gil(&self) -> Vec<HandleNo> {
        (0..self.handles.len())
            .filter(|&n| self.handles[n].1.freed_without_gil.load(Ordering::SeqCst))
            .map(|n| n as HandleNo)
            .collect()
    }
}

impl TvmFfiBackend {
    /// `pickle` of a graph with a cycle: the library's serializer overflows
    /// the stack ([`CYCLE_FINDING`]).
    fn refuse_pickle(&self, u: Var) -> Option<String> {
        let addr = Python::attach(|py| self.source(py, u).map(|o| chandle(&o)))?.ok()?;
        if addr == 0 || self.chain(self.handle_no(addr)).is_some() {
            return None;
        }
        Some(format!(
            "apache-tvm-ffi {} crashes the process (SIGSEGV: a stack overflow in \
             `to_json_graph_str`) when it serializes an object graph with a cycle \
             ({CYCLE_FINDING}); the contract expects the error *cyclic*",
            self.lib.version
        ))
    }
}

impl TvmFfiBackend {
    /// `finalize` (contract §4.1 R16), in a forked child: the vars become a
    /// module's globals and the interpreter ends (`interp::end`): module
    /// teardown drops them, `v0` first, and the collection at finalization
    /// kills the cycles; the wrappers they held lose those references.
    fn finalize(&mut self) {
        let vars = self.vars.iter_mut().map(Option::take).collect();
        for n in self.var_wr.iter_mut().filter_map(Option::take) {
            self.wrappers[n as usize].refs -= 1;
        }
        for n in std::mem::take(&mut self.cycles) {
            self.wrappers[n as usize].refs -= 1;
        }
        self.violations.extend(crate::interp::end_step(vars));
    }

    /// The C++ releases (`release`, `release_foreign`, `unweak`), the
    /// steps that act after the interpreter has ended too (R16): with `py`,
    /// the interpreter's thread lets go of the GIL while a C++ thread drops
    /// a holder (contract §3 "Threads"); after the end there is no GIL.
    /// Any other step does nothing here.
    fn cpp_release(&mut self, op: &Op, py: Option<Python<'_>>) {
        match *op {
            Op::Release { h } => {
                if let Some((holder, _)) = self.holders[h.idx()].take() {
                    // SAFETY: the holder the slot owned, not used after.
                    unsafe { harness::release(holder) };
                }
            }
            Op::ReleaseForeign { h } => {
                if let Some((holder, _)) = self.holders[h.idx()].take() {
                    let holder = holder.0;
                    // SAFETY: the holder the slot owned, not used after.
                    let release = move || unsafe { harness::release_foreign(Holder(holder)) };
                    match py {
                        Some(py) => py.detach(release),
                        None => release(),
                    }
                }
            }
            Op::Unweak { w } => {
                if let Some((weak, _)) = self.weaks[w.idx()].take() {
                    // SAFETY: the weak slot the var owned, not used after.
                    unsafe { harness::unweak(weak) };
                }
            }
            _ => {}
        }
    }
}

/// Where the rule that runs `shutdown` in a forked child is written.
pub const SHUTDOWN_RULE: &str = "src/child.rs; docs/tvmffi-tied.md, \"shutdown\"";

impl crate::backend::Gate for TvmFfiBackend {
    fn release_after_end(&mut self, op: &Op) {
        self.cpp_release(op, None);
    }
    fn end_interpreter(&mut self) -> StepResult {
        self.finalize();
        StepResult::Ok
    }
    fn armed(&mut self) -> &mut Option<u32> {
        &mut self.oom
    }
}

impl Backend for TvmFfiBackend {
    fn name(&self) -> String {
        format!(
            "apache-tvm-ffi {} (tying {}, detected at start-up)",
            self.lib.version,
            if self.lib.tying { "on" } else { "off" }
        )
    }

    fn caps(&self) -> Caps {
        Caps {
            steps: steps(),
            // With tying on every object but a legacy one has the tied
            // prefix: its tag word is the binding.
            observes: Observes {
                binding: self.lib.tying,
                // With tying off, the library's own temporary wrappers (a
                // py_class setter makes one of the value it stores, and its
                // death runs a `del` wrapper's finalizer) are fresh ones the
                // model does not see: the count is judged with tying on only.
                finalized: self.lib.tying,
                ..OBSERVES
            },
            kinds: &ObjKind::ALL,
            // Every wrapper type is a Cython cdef class or a subclass of
            // one: a GC type.
            gc_wrappers: GcWrappers::All,
        }
    }

    fn tying(&self) -> bool {
        self.lib.tying
    }

    fn upstream(&self) -> Option<String> {
        Some(format!("apache-tvm-ffi {}", self.lib.version))
    }

    fn begin(&mut self) -> Result<(), String> {
        self.oom = None;
        self.oom_reached = None;
        Python::attach(|py| {
            for v in &mut self.vars {
                if v.as_ref().is_some_and(|o| o.is_none(py)) {
                    *v = None;
                }
            }
        });
        if self.vars.iter().any(Option::is_some)
            || self.holders.iter().any(Option::is_some)
            || self.weaks.iter().any(Option::is_some)
        {
            return Err(
                "tvm-ffi backend: vars, holders or weak slots left by the last program".into(),
            );
        }
        // A failed program's teardown is not judged: what its deleters did
        // wrong is its own fault, already reported.
        capi::take_stray();
        self.release_observers();
        self.var_wr = [None; VARS];
        self.wrappers.clear();
        self.cycles.clear();
        self.result = StepResult::Ok;
        self.violations.clear();
        self.worked_around = None;
        self.finalizers_before = harness::finalizers_run();
        Ok(())
    }

    fn refuse(&mut self, op: &Op) -> Option<String> {
        if crate::interp::ended() {
            return None;
        }
        if let Some(why) = crate::interp::refuse_outside_child(op) {
            return Some(why);
        }
        if matches!(op, Op::Shutdown) && !crate::interp::in_forked_child() {
            return Some(format!(
                "`shutdown` runs upstream's atexit hook, whose flag no process can reset: it \
                 runs only in a child the harness forks ({SHUTDOWN_RULE})"
            ));
        }
        if let Op::Pickle { u, .. } = *op
            && let Some(why) = self.refuse_pickle(u)
        {
            return Some(why);
        }
        let raises = match *op {
            Op::CallRaise { .. } | Op::CallMoveRaise { .. } => true,
            // The argument's wrapper refused (R20): the callback path raises.
            Op::Call { h, .. } | Op::CallMove { h, .. } => self.argument_refused(h),
            _ => false,
        };
        if raises && self.oom.is_some() && self.refuse_lost_error {
            return Some(format!(
                "apache-tvm-ffi {} crashes the process (SIGSEGV) when an allocation fails while \
                 a callback's error is passed to C++ ({ERROR_FINDING}): a callback step that \
                 raises (a raising callback, or an argument whose wrapper is refused, R20) is not \
                 run under an armed `oom`; the contract expects the error *nomemory*, *raised* or \
                 *refused*",
                self.lib.version
            ));
        }
        let setter_refuses = match *op {
            Op::Set { u, v } => self.setter_would_refuse(u, v),
            // The deserializer builds a py_class parent through its
            // setters' conversion: a `fragile` part's copy is refused there.
            Op::Pickle { u, .. } => self.part_would_be_refused(u),
            _ => false,
        };
        if setter_refuses && self.oom.is_some() && self.refuse_lost_error {
            return Some(format!(
                "apache-tvm-ffi {} crashes the process (SIGSEGV) when an allocation fails while a \
                 py_class field setter reports that its value's wrapper could not be made \
                 ({SETTER_FINDING}): such a step (a `set`, or a `pickle` whose deserializer \
                 converts a `fragile` part for a py_class parent) is not run under an armed \
                 `oom`; the contract expects the error *nomemory* or *refused*",
                self.lib.version
            ));
        }
        Python::attach(|py| {
            let holds = |v: Var| match self.source(py, v) {
                None => Holds::Nothing,
                Some(_) if self.moved(py, v) => Holds::Moved,
                Some(_) => Holds::Live,
            };
            let legacy_aborts = self.lib.tying
                && self.lib.asan
                && self.known == KnownFindings::WorkAround
                && self.refuse_legacy;
            findings::refusal(op, &self.lib.version, self.lib.tying, legacy_aborts, holds)
        })
    }

    fn apply(&mut self, op: &Op) -> StepResult {
        self.worked_around = None;
        let armed = match crate::backend::Gate::gate(self, op) {
            Ok(armed) => armed,
            Err(r) => {
                self.result = r;
                return r;
            }
        };
        let r = Python::attach(|py| {
            let (r, reached) = crate::alloc_fault::around(py, armed, true, || self.step(py, op));
            self.oom_reached = reached;
            r.unwrap_or_else(|e| {
                // An allocation `oom` made fail (contract §4.4).
                if self.oom_reached == Some(true) && glue::from_no_memory(py, op, &e) {
                    self.number_left_cached();
                    return StepResult::NoMemory;
                }
                // CPython 3.11 lost the error the step was raising when a
                // frame object could not be allocated ([`FRAME_FINDING`]):
                // the step failed with MemoryError all the same.
                if self.oom_reached == Some(true) && glue::lost_by_cpython(py, &e) {
                    let what = format!(
                        "CPython lost the step's error when a frame object could not be \
                         allocated (SystemError: returned NULL without setting an exception; \
                         {FRAME_FINDING}): taken as the failed allocation's MemoryError"
                    );
                    match self.known {
                        KnownFindings::WorkAround => self.worked_around = Some(what),
                        KnownFindings::Report => self.violations.push(what),
                    }
                    drop(glue::without_frames(py, e));
                    self.number_left_cached();
                    return StepResult::NoMemory;
                }
                // A wrapper of a type whose construction raises (R20).
                if glue::refused(py, &e) {
                    drop(glue::without_frames(py, e));
                    return StepResult::Refused;
                }
                self.violations
                    .push(format!("`{op}` raised an unexpected Python exception: {e}"));
                StepResult::Ok
            })
        });
        self.result = r;
        r
    }

    fn allocation_failed(&mut self) -> Option<bool> {
        self.oom_reached.take()
    }

    fn worked_around(&mut self) -> Option<String> {
        self.worked_around.take()
    }

    fn observe(&mut self, out: &mut AbstractState) {
        out.clear();
        // After the end (`finalize`) no var holds anything and no Python is
        // called: the rest is read from headers and tag words.
        let ended = crate::interp::ended();
        if !ended {
            Python::attach(|py| {
                for i in 0..VARS {
                    out.vars[i] = match (&self.vars[i], self.var_wr[i]) {
                        (None, _) => VarState::Empty,
                        (Some(_), None) => VarState::None,
                        (Some(o), Some(n)) => {
                            let h = self.handle_of(o.bind(py)).unwrap_or(Some(DANGLING));
                            self.wrappers[n as usize].chandle = h;
                            match h {
                                None => VarState::Moved(n),
                                Some(_) => VarState::Wrapper(n),
                            }
                        }
                    };
                }
            });
        }
        // A wrapper nobody holds is dead unless its handle caches it.
        for i in 0..self.wrappers.len() {
            let w = &self.wrappers[i];
            if w.refs == 0 && !w.dead {
                let cached = w.chandle.is_some_and(|h| self.caches(h, w.addr));
                self.wrappers[i].dead = !cached;
            }
        }
        for (slot, h) in out.holders.iter_mut().zip(&self.holders) {
            *slot = h.map(|(_, n)| n);
        }
        for (slot, w) in out.weaks.iter_mut().zip(&self.weaks) {
            *slot = w.map(|(_, n)| n);
        }
        out.result = self.result;
        let mut t = Totals::default();
        for n in 0..self.handles.len() {
            let h = self.observe_handle(n);
            t.live_handles += u32::from(h.alive());
            t.live_blocks += u32::from(h.storage);
            out.handles.push(h);
        }
        let mut wrappers = |tracked: &dyn Fn(usize) -> bool| {
            for w in &self.wrappers {
                let held = w.refs > 0;
                t.live_wrappers += u32::from(held);
                out.wrappers.push(WrapperState {
                    life: if held {
                        WrapperLife::Live
                    } else {
                        WrapperLife::Freed
                    },
                    refs: w.refs,
                    chandle: if held { w.chandle } else { None },
                    tracked: held && tracked(w.addr),
                });
            }
        };
        if ended {
            // Nothing is held after the end.
            wrappers(&|_| false);
        } else {
            Python::attach(|_| {
                // SAFETY: a wrapper the program holds is alive, and the GIL
                // is held (`gc.is_tracked`).
                wrappers(&|a| unsafe { pyo3::ffi::PyObject_GC_IsTracked(a as *mut _) } == 1);
            });
        }
        t.finalized = self.finalized();
        out.totals = t;
    }

    fn violations(&mut self) -> Vec<String> {
        for st in capi::take_stray() {
            let (addr, what) = match st {
                Stray::AfterFree { addr, flags } => (
                    addr,
                    format!(
                        "the deleter ran (flags {flags}) after the storage was freed: a use after \
                         free in the library (not passed on)"
                    ),
                ),
                Stray::DestroyedTwice { addr } => (
                    addr,
                    "the deleter's strong phase ran a second time: the object was destroyed \
                     twice (not passed on)"
                        .to_string(),
                ),
            };
            let who = self
                .handles
                .iter()
                .rposition(|(a, _)| *a == addr)
                .map_or_else(
                    || format!("the object at {addr:#x}"),
                    |n| format!("obj#{n}"),
                );
            self.violations.push(format!("{who}: {what}"));
        }
        std::mem::take(&mut self.violations)
    }

    fn identity(&mut self, v: Var) -> Option<usize> {
        self.var_wr[v.idx()]?;
        self.vars[v.idx()].as_ref().map(|o| o.as_ptr() as usize)
    }

    fn cycle_members(&self) -> &[WrapperNo] {
        &self.cycles
    }

    /// As C++ does `obj->x = nullptr`: each live object's field `x` (the
    /// `Any` at the reflected offset) is set to None and the reference it
    /// held released. No wrapper is made (a wrapper made here would stay
    /// cached under its holder, which the model's teardown never does).
    fn clear_all_fields(&mut self) {
        // Teardown (§6) begins: an `oom` that was the program's last step
        // arms nothing.
        self.oom = None;
        for i in 0..self.handles.len() {
            let Some(addr) = self.storage(i) else {
                continue;
            };
            // SAFETY: the storage is allocated.
            if unsafe { harness::counts(addr) }.0 == 0 {
                continue;
            }
            // SAFETY: strong > 0: a live object of the kind recorded, so
            // its field is at its kind's slot, which nothing else touches
            // now (the GIL-holding thread only).
            unsafe { harness::clear_field(addr, self.lib.kind(self.kinds[i]).slot) };
        }
    }

    fn reclaim_leaked(&mut self) {}

    fn leftovers(&mut self) -> Option<String> {
        let alive: Vec<String> = (0..self.handles.len())
            .filter_map(|i| {
                let a = self.storage(i)?;
                // SAFETY: the storage is allocated.
                let s = unsafe { harness::counts(a) }.0;
                (s > 0).then(|| format!("obj#{i} (strong {s})"))
            })
            .collect();
        // Deleter calls not passed on during teardown are this program's.
        let stray = self.violations();
        self.release_observers();
        let mut out = Vec::new();
        if !alive.is_empty() {
            out.push(format!("live tvm-ffi objects: {}", alive.join(", ")));
        }
        out.extend(stray);
        (!out.is_empty()).then(|| out.join("; "))
    }

    /// A failed program's world is torn down through the library (nothing
    /// here is corrupt, only counted wrong); objects a finding leaked stay.
    fn abandon(&mut self) {
        Python::attach(|py| {
            for v in &mut self.vars {
                drop(v.take());
            }
            if !self.cycles.is_empty() {
                self.cycles.clear();
                let _ = self.lib.gc_collect.bind(py).call0();
            }
        });
        for h in &mut self.holders {
            if let Some((holder, _)) = h.take() {
                // SAFETY: the holder the slot owned, not used after.
                unsafe { harness::release(holder) };
            }
        }
        for w in &mut self.weaks {
            if let Some((weak, _)) = w.take() {
                // SAFETY: the weak slot the var owned, not used after.
                unsafe { harness::unweak(weak) };
            }
        }
        self.var_wr = [None; VARS];
        self.wrappers.clear();
        self.release_observers();
    }
}

impl Drop for TvmFfiBackend {
    /// A world left behind (a panic mid-program) is torn down, holding the
    /// interpreter exclusively like any user of it.
    fn drop(&mut self) {
        let used = self.vars.iter().any(Option::is_some)
            || self.holders.iter().any(Option::is_some)
            || self.weaks.iter().any(Option::is_some)
            || !self.handles.is_empty()
            || !self.cycles.is_empty();
        if used {
            let _session = crate::interp::exclusive();
            self.abandon();
        }
    }
}
