//! The Python wrapper layer: wrapper types tied to native objects by the
//! design-S state machine of contract §3, on the machine's CPython.
//! Runtime layer: `unsafe` lives here and in [`crate::native`], behind the
//! safe API below, which the backends use.

pub mod accounts;
pub mod lsan;
mod observe;
mod seams;
mod tying;
mod types;

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;

use crate::native::{self, HandleRef, TYPE_CPP, TYPE_DICT, TYPE_FRAGILE, TYPE_PLAIN, WeakRef};
use pytie_core::program::ObjKind;

pub use observe::{observe, observe_after_end};
pub use tying::{INACTIVE, Tag, decode_tag};

/// The step needed a live wrapper and found a moved-from one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moved;

/// `pickle` found a cycle in the object graph it was to copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cyclic;

/// What the checker may learn of a wrapper object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WrapperInfo {
    /// Allocation serial since the last reset (the wrapper number).
    pub serial: u32,
    /// Address (`id()`).
    pub addr: usize,
    /// `chandle` is NULL.
    pub moved: bool,
}

/// Create the Python types (once per process), register the atexit hook
/// that sets the shutdown flag, and switch automatic GC off (cycles die at
/// `collect` steps only).
pub fn init(py: Python<'_>) -> PyResult<()> {
    types::init(py)
}

/// `new`: C++ constructs an object and returns it to Python. This runtime
/// has one eligible and one ineligible wrapper type and one object
/// allocator, so every other kind is made as the classic kind the model
/// takes it for (docs/contract.md §2.2): the C++-made, container and
/// registered-subclass kinds as plain objects, the finalizer kind as a dict
/// one; a `sub` object is a plain object whose first wrapper has the
/// ineligible type, as a constructor of an unregistered subclass makes it.
pub fn new_object(py: Python<'_>, kind: ObjKind) -> PyResult<Bound<'_, PyAny>> {
    let h = match kind {
        ObjKind::Plain | ObjKind::Weakref | ObjKind::Derived => {
            HandleRef::new_tied(TYPE_PLAIN, tying::py_delete_space)
        }
        ObjKind::Cpp | ObjKind::List | ObjKind::Map => {
            HandleRef::new_tied(TYPE_CPP, tying::py_delete_space)
        }
        ObjKind::Sub => {
            let h = HandleRef::new_tied(TYPE_PLAIN, tying::py_delete_space);
            // SAFETY: GIL held (py); the +1 of `h` is handed over.
            return unsafe {
                let w = tying::make_new_as(h.into_raw(), types::dict_type());
                Bound::from_owned_ptr_or_err(py, w)
            };
        }
        ObjKind::Dict | ObjKind::Del => HandleRef::new_tied(TYPE_DICT, tying::py_delete_space),
        // Its constructor makes the wrapper: never refused (R20).
        ObjKind::Fragile => {
            let h = HandleRef::new_tied(TYPE_FRAGILE, tying::py_delete_space);
            // SAFETY: GIL held (py); the +1 of `h` is handed over.
            return unsafe {
                let w = tying::make_new_as(h.into_raw(), types::fragile_type());
                Bound::from_owned_ptr_or_err(py, w)
            };
        }
        ObjKind::Untied => HandleRef::new_untied(TYPE_PLAIN),
        ObjKind::Legacy => HandleRef::new_legacy(TYPE_PLAIN),
    };
    return_handle(py, h)
}

/// Return a strong reference to Python (`make_ret`): the canonical wrapper
/// takes it over.
pub fn return_handle(py: Python<'_>, h: HandleRef) -> PyResult<Bound<'_, PyAny>> {
    // SAFETY: GIL held (py); the +1 of `h` is handed to make_ret.
    unsafe {
        let w = tying::make_ret(h.into_raw());
        Bound::from_owned_ptr_or_err(py, w)
    }
}

/// `f(w)` where the FFI function `f` returns its argument.
pub fn echo<'py>(w: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = w.py();
    // SAFETY: the function object lives for the process.
    let f = unsafe { Bound::from_borrowed_ptr(py, types::echo_function()) };
    f.call1((w,))
}

/// `w.x`.
pub fn get_x<'py>(w: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    w.getattr(intern!(w.py(), "x"))
}

/// `w.x = v` (`v` may be None).
pub fn set_x(w: &Bound<'_, PyAny>, v: &Bound<'_, PyAny>) -> PyResult<()> {
    w.setattr(intern!(w.py(), "x"), v)
}

/// `pickle.loads(pickle.dumps(w))` (contract §4.1 `pickle`), as a
/// serializer and deserializer of the library do it: a moved-from `w`
/// gives a new moved-from wrapper of its type; else the chain of objects
/// `w`'s object reaches through the field is copied (`Err(Cyclic)` if it
/// has a cycle, nothing done): the copies are made root first, built
/// deepest first (a parent whose type is not a C++ one receives its part
/// through a Python `__init__`: returned into a temporary wrapper, stored,
/// the wrapper dropped), the deserializer lets go of the parts, and the
/// root gets a new wrapper of `w`'s type (a constructor's: `make_new_as`).
pub fn pickle<'py>(w: &Bound<'py, PyAny>) -> Result<PyResult<Bound<'py, PyAny>>, Cyclic> {
    let py = w.py();
    let p = wrapper_ptr(w);
    // SAFETY: `p` is a live wrapper (GIL held).
    let (tp, obj) = unsafe { (ffi::Py_TYPE(p), (*p.cast::<types::PyWrapper>()).chandle) };
    // The root's wrapper is made by its type's `__new__`, which a fragile
    // type's raises (R20).
    if tp == types::fragile_type() {
        return Ok(Err(refused(py)));
    }
    if obj.is_null() {
        // SAFETY: GIL held; `tp` is one of our wrapper types; a zeroed
        // wrapper has a NULL chandle: moved-from.
        return Ok(unsafe { Bound::from_owned_ptr_or_err(py, types::wrapper_alloc(tp, 0)) });
    }
    // SAFETY: a non-NULL chandle owns a strong ref, so `obj` is live.
    let mut chain = vec![unsafe { HandleRef::inc_ref(obj) }];
    while let Some(next) = chain.last().and_then(HandleRef::field) {
        if chain.iter().any(|h| h.as_ptr() == next.as_ptr()) {
            return Err(Cyclic);
        }
        chain.push(next);
    }
    // A Python-built parent receives its part through a return, which a
    // fragile part's copy refuses (R20): nothing is made.
    if chain
        .windows(2)
        .any(|p| p[0].type_index() != TYPE_CPP && p[1].type_index() == TYPE_FRAGILE)
    {
        return Ok(Err(refused(py)));
    }
    let copies: Vec<HandleRef> = chain.iter().map(copy_of).collect();
    drop(chain);
    for pair in copies.windows(2).rev() {
        let (parent, part) = (&pair[0], &pair[1]);
        if parent.type_index() == TYPE_CPP {
            parent.set_field(Some(part.clone_ref()));
        } else {
            let temp = match return_handle(py, part.clone_ref()) {
                Ok(t) => t,
                Err(e) => return Ok(Err(e)),
            };
            parent.set_field(Some(part.clone_ref()));
            drop(temp);
        }
    }
    let mut copies = copies.into_iter();
    let root = copies.next().expect("a chain has a root");
    // The deserializer lets go of the parts (their parents' fields keep them).
    drop(copies);
    // SAFETY: GIL held; the root's +1 is handed over; `tp` is ours.
    Ok(unsafe { Bound::from_owned_ptr_or_err(py, tying::make_new_as(root.into_raw(), tp)) })
}

/// A new object like `h`'s, made by the library (its field empty): a
/// legacy object's copy has the tied prefix (contract §4.1 `pickle`).
fn copy_of(h: &HandleRef) -> HandleRef {
    // SAFETY: `h` owns a strong ref: the body is live.
    let (prefixed, tied) = unsafe {
        (
            native::alloc::has_prefix(h.as_ptr()),
            tying::is_tied(h.as_ptr()),
        )
    };
    match (prefixed, tied) {
        (true, false) => HandleRef::new_untied(h.type_index()),
        _ => HandleRef::new_tied(h.type_index(), tying::py_delete_space),
    }
}

/// `call` / `call_move` (contract §4.1 R17): C++ calls a Python callback
/// with `arg` (a reference the callback's argument takes: a new one for a
/// borrowed argument, the holder's for a moved one) that returns its
/// argument, and returns that: the argument returned to Python, the
/// callback's result made an owned reference, the callback's frame ended,
/// the result returned to Python.
pub fn callback(py: Python<'_>, arg: HandleRef) -> PyResult<Bound<'_, PyAny>> {
    let arg = return_handle(py, arg)?;
    let result = handle_of(&arg).map_err(|Moved| {
        pyo3::exceptions::PyRuntimeError::new_err("a callback's argument is moved-from")
    })?;
    drop(arg);
    return_handle(py, result)
}

/// A callback that raises (`call_raise`, contract §4.1 R19): C++ hands it
/// `arg` (the reference goes into its argument's wrapper), and its frame
/// lets go of that wrapper as the error leaves; the error itself is the
/// step's result, not a Python exception here. `Err` only when the
/// argument's wrapper cannot be made (an injected allocation failure).
pub fn callback_raise(py: Python<'_>, arg: HandleRef) -> PyResult<()> {
    drop(return_handle(py, arg)?);
    Ok(())
}

/// What a `fragile` wrapper's construction raises (R20).
fn refused(py: Python<'_>) -> PyErr {
    // SAFETY: GIL held (py); the exception type lives for the process.
    unsafe {
        ffi::PyErr_SetString(
            types::refused_error(),
            c"pytie: construction refused".as_ptr(),
        )
    };
    PyErr::fetch(py)
}

/// Is this error a `fragile` wrapper's refused construction (R20)?
pub fn is_refused(err: &PyErr, py: Python<'_>) -> bool {
    // SAFETY: the exception type lives for the process.
    let ty = unsafe { Bound::from_borrowed_ptr(py, types::refused_error()) };
    err.get_type(py).is(&ty)
}

/// Is this error the moved-from error?
pub fn is_moved(err: &PyErr, py: Python<'_>) -> bool {
    // SAFETY: the exception type lives for the process.
    let ty = unsafe { Bound::from_borrowed_ptr(py, types::moved_error()) };
    err.get_type(py).is(&ty)
}

fn wrapper_ptr(w: &Bound<'_, PyAny>) -> *mut ffi::PyObject {
    // SAFETY: GIL held (Bound); type check only.
    assert!(
        unsafe { types::is_wrapper(w.as_ptr()) },
        "not a pytie wrapper: {w}"
    );
    w.as_ptr()
}

/// A new strong reference to the wrapper's object (C++ receives it).
pub fn handle_of(w: &Bound<'_, PyAny>) -> Result<HandleRef, Moved> {
    let p = wrapper_ptr(w);
    // SAFETY: `p` is a live wrapper; a non-NULL chandle owns a strong ref,
    // so the object is live for the IncRef.
    unsafe {
        let obj = (*p.cast::<types::PyWrapper>()).chandle;
        if obj.is_null() {
            return Err(Moved);
        }
        Ok(HandleRef::inc_ref(obj))
    }
}

/// `w._move()`: the wrapper's reference leaves it; it stays alive, empty.
pub fn move_out(w: &Bound<'_, PyAny>) -> Result<HandleRef, Moved> {
    let p = wrapper_ptr(w);
    // SAFETY: GIL held; `p` is a live wrapper.
    let obj = unsafe { tying::take_handle(p) };
    if obj.is_null() {
        return Err(Moved);
    }
    // SAFETY: take_handle handed us the wrapper's strong ref.
    Ok(unsafe { HandleRef::from_raw(obj) })
}

/// A weak reference to the wrapper's object.
pub fn weak_of(w: &Bound<'_, PyAny>) -> Result<WeakRef, Moved> {
    handle_of(w).map(|h| h.downgrade())
}

/// Identity and state of a wrapper, or `None` for any other object.
pub fn info(w: &Bound<'_, PyAny>) -> Option<WrapperInfo> {
    let p = w.as_ptr();
    // SAFETY: GIL held; fields read only after the type check.
    unsafe {
        if !types::is_wrapper(p) {
            return None;
        }
        let wr = &*p.cast::<types::PyWrapper>();
        Some(WrapperInfo {
            serial: wr.serial,
            addr: p as usize,
            moved: wr.chandle.is_null(),
        })
    }
}

/// `cycle`: the wrapper (its reference given away) goes into a new
/// reference cycle that dies at the next collection.
pub fn into_cycle(w: Bound<'_, PyAny>) -> PyResult<()> {
    // SAFETY: GIL held; the reference is handed over.
    unsafe { types::make_cycle(w.into_ptr()) }
}

/// `collect`: `gc.collect()`.
pub fn collect(py: Python<'_>) -> PyResult<()> {
    // SAFETY: the function object lives for the process.
    let f = unsafe { Bound::from_borrowed_ptr(py, types::gc_collect_function()) };
    f.call0().map(drop)
}

/// `shutdown`: interpreter finalization begins (contract §3).
pub fn shutdown() {
    accounts::set_shutdown(true);
    seams::shutdown_seen();
}

/// Teardown (§6): in creation order, clear the field of every object alive
/// at that moment (breaks native cycles). With the GIL held (`py`), or
/// after the interpreter has ended ([`clear_all_fields_after_end`]).
pub fn clear_all_fields(_py: Python<'_>) {
    clear_fields();
}

/// [`clear_all_fields`] after the interpreter has ended (`finalize`): the
/// cascades reach `delete_space` after the shutdown flag, which touches no
/// Python.
pub fn clear_all_fields_after_end() {
    clear_fields();
}

fn clear_fields() {
    let mut i = 0;
    while let Some(entry) =
        native::registry::with(|r| r.handles.get(i).map(|h| h.alive.then_some(h.addr)))
    {
        if let Some(addr) = entry {
            // SAFETY: the registry says the object is alive; the temporary
            // strong ref keeps it so while its field is cleared.
            let h = unsafe { HandleRef::inc_ref(addr as *mut native::Object) };
            h.set_field(None);
        }
        i += 1;
    }
}

/// The test-only door of §6: reclaim wrapper memory leaked after shutdown
/// and reset the shutdown flag.
pub fn reclaim_leaked(_py: Python<'_>) {
    let reclaims = accounts::with(|a| !a.leak_list.is_empty());
    // SAFETY: GIL held (py).
    unsafe { tying::reclaim_leaked() };
    if reclaims || !mutant!(ShutdownFlagSticks) {
        accounts::set_shutdown(false);
    }
}

/// The test-only door after the interpreter has ended (`finalize`, in a
/// child process that exits next): the leaked wrappers' memory cannot go
/// back to an interpreter that is gone, and dies with the process; they are
/// counted freed and the flag reset, as [`reclaim_leaked`] does.
pub fn forget_leaked() {
    for addr in accounts::take_leaked() {
        accounts::wrapper_freed(addr);
    }
    accounts::set_shutdown(false);
}

/// What is still allocated: `None` when the world is empty.
pub fn leftovers() -> Option<String> {
    let (handles, blocks) = native::registry::with(|r| (r.live_handles, r.live_blocks));
    let (wrappers, leaked, cycles) = accounts::with(|a| (a.live, a.leaked, a.cycles.len()));
    let all = [
        handles as usize,
        blocks as usize,
        wrappers as usize,
        leaked as usize,
        cycles,
    ];
    all.iter().any(|n| *n > 0).then(|| {
        format!(
            "{handles} live handles, {blocks} storage blocks, {wrappers} wrappers, {leaked} leaked wrappers, {cycles} uncollected cycles"
        )
    })
}

/// Start a new program: number handles and wrappers from 0, shutdown flag
/// off. Fails when something from before is still allocated.
pub fn reset() -> Result<(), String> {
    if let Some(left) = leftovers() {
        return Err(format!("the world is not empty: {left}"));
    }
    native::alloc::release_quarantine();
    native::registry::reset();
    accounts::reset();
    Ok(())
}

/// After a failure, give up the world without freeing anything (freeing a
/// broken world could crash): keep every live cycle alive forever, forget
/// all records, reset the flag. Leaks memory on purpose; the caller must
/// forget (not drop) every reference it still holds.
pub fn abandon(_py: Python<'_>) {
    let cycles: Vec<usize> = accounts::with(|a| a.cycles.keys().copied().collect());
    for c in cycles {
        // SAFETY: GIL held; the node is live (it unregisters when it dies).
        unsafe { ffi::Py_INCREF(c as *mut ffi::PyObject) };
    }
    native::registry::reset();
    accounts::reset();
}

/// The interpreter objects every program shares and this layer touches,
/// with their reference counts, to `f`: Python's singletons and this
/// layer's types and functions. Read with the GIL held (`py`).
pub fn shared_refcounts(_py: Python<'_>, mut f: impl FnMut(&'static str, isize)) {
    // SAFETY: GIL held (py); the singletons live for the process.
    let singletons = unsafe {
        [
            ("None", ffi::Py_None()),
            ("True", ffi::Py_True()),
            ("False", ffi::Py_False()),
            ("Ellipsis", ffi::Py_Ellipsis()),
            ("NotImplemented", ffi::Py_NotImplemented()),
        ]
    };
    // SAFETY (both): GIL held; every object here lives for the process.
    for (n, p) in singletons {
        f(n, unsafe { ffi::Py_REFCNT(p) });
    }
    types::for_each_shared(|n, p| f(n, unsafe { ffi::Py_REFCNT(p) }));
}

/// The names of [`singleton_refcounts`]' counts, in its order.
pub const SINGLETONS: [&str; 5] = ["None", "True", "False", "Ellipsis", "NotImplemented"];

/// The reference counts of Python's singletons ([`SINGLETONS`]): a few
/// loads, cheap enough to read after every step.
pub fn singleton_refcounts(_py: Python<'_>) -> [isize; 5] {
    // SAFETY: GIL held (py); the singletons live for the process.
    unsafe {
        [
            ffi::Py_REFCNT(ffi::Py_None()),
            ffi::Py_REFCNT(ffi::Py_True()),
            ffi::Py_REFCNT(ffi::Py_False()),
            ffi::Py_REFCNT(ffi::Py_Ellipsis()),
            ffi::Py_REFCNT(ffi::Py_NotImplemented()),
        ]
    }
}

/// Runtime assertion failures since the last call.
pub fn take_violations() -> Vec<String> {
    native::registry::take_violations()
}
