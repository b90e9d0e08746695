//! The tying state machine, design S (contract §3): `make_ret`, the drop
//! path (finalizer with resurrection), move, and the Python-aware
//! `delete_space`. Everything here runs with the GIL held unless it says
//! otherwise.
//!
//! Tag word encoding (the 8 bytes before `delete_space` in a tied block):
//! `0` Detached; `W` Active(W); `W | INACTIVE` Inactive(W).

use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::atomic::Ordering;

use pyo3::ffi;

use super::accounts;
use super::types::{self, PyWrapper};
use crate::native::alloc::{DeleteSpace, delete_space_of, free_tied_block, tag_word};
use crate::native::object::{self, Object};
use crate::native::registry::report_violation;
use crate::watchdog::{self, Phase, Side};

/// Low bit of the tag word: the wrapper is Inactive.
pub const INACTIVE: usize = 1;

/// A binding as read from a tag word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    Detached,
    Active(*mut ffi::PyObject),
    Inactive(*mut ffi::PyObject),
}

pub fn decode_tag(word: usize) -> Tag {
    let w = (word & !INACTIVE) as *mut ffi::PyObject;
    match (word, word & INACTIVE) {
        (0, _) => Tag::Detached,
        (_, 0) => Tag::Active(w),
        _ => Tag::Inactive(w),
    }
}

/// Is `obj` tied: was it allocated by the Python-aware allocator? Decided
/// by comparing `delete_space` pointers, as upstream does.
///
/// # Safety
/// `obj` is a live body from the native layer.
pub unsafe fn is_tied(obj: *mut Object) -> bool {
    // SAFETY: the caller guarantees the storage is live.
    let ds = unsafe { delete_space_of(obj) };
    ds as usize == py_delete_space as DeleteSpace as usize
}

/// The tag word of a body, after checking it is tied. An untied body has
/// no tag word: reading one is the bug upstream staged the feature off
/// for, so it is reported and reads as Detached.
///
/// # Safety
/// `obj` is a live body.
unsafe fn tag_of<'a>(obj: *mut Object) -> Option<&'a std::sync::atomic::AtomicUsize> {
    // SAFETY: live body, as the caller guarantees.
    if unsafe { is_tied(obj) } || mutant!(UntiedTagRead) {
        // SAFETY: tied bodies have a tag word 16 bytes before them.
        Some(unsafe { tag_word(obj) })
    } else {
        None
    }
}

/// Return `obj` to Python. The caller owns +1 on `obj`, which moves into
/// the returned wrapper (or is released when the wrapper already owns
/// one). Returns a new reference, or NULL with a Python error set.
///
/// # Safety
/// GIL held; `obj` live with the caller's +1.
pub unsafe fn make_ret(obj: *mut Object) -> *mut ffi::PyObject {
    // SAFETY: live body (caller's +1).
    let Some(tag) = (unsafe { tag_of(obj) }) else {
        // Untied: never binds; a fresh wrapper owns the +1.
        // SAFETY: GIL held, +1 handed over.
        return unsafe { fresh_wrapper(obj) };
    };
    match decode_tag(tag.load(Ordering::Acquire)) {
        Tag::Detached => {
            // SAFETY: GIL held, +1 handed over.
            let w = unsafe { fresh_wrapper(obj) };
            if !w.is_null() && !mutant!(FreshUnattached) {
                // A fresh wrapper must be attached (review thread, first comment).
                tag.store(w as usize, Ordering::Release);
            }
            w
        }
        Tag::Active(w) => {
            // SAFETY: an Active wrapper is alive (I5); GIL held.
            unsafe { ffi::Py_INCREF(w) };
            if !mutant!(ActiveKeepsRef) {
                // SAFETY: the redundant +1 is ours; W's own ref keeps `obj` alive.
                unsafe { object::dec_ref(obj) };
            }
            w
        }
        Tag::Inactive(w) => {
            if mutant!(ReviveFresh) {
                // SAFETY: GIL held, +1 handed over; the old wrapper stays cached.
                let fresh = unsafe { fresh_wrapper(obj) };
                tag.store(fresh as usize, Ordering::Release);
                return fresh;
            }
            // Revive at the same address: W takes the +1, and the phantom
            // ref that kept its memory becomes the caller's reference.
            // SAFETY: an Inactive wrapper's memory is kept by its phantom ref.
            unsafe { (*w.cast::<PyWrapper>()).chandle = obj };
            tag.store(w as usize, Ordering::Release);
            if mutant!(ReviveDropsRef) {
                // SAFETY: none; the fault releases the +1 W now stands for.
                unsafe { object::dec_ref(obj) };
            }
            if mutant!(ReviveTakesTwice) {
                // SAFETY: `obj` is live (the caller's +1).
                unsafe { object::inc_ref(obj) };
            }
            w
        }
    }
}

/// A new wrapper of the object's wrapper type owning the caller's +1.
///
/// # Safety
/// GIL held; the caller hands over +1 on `obj`.
unsafe fn fresh_wrapper(obj: *mut Object) -> *mut ffi::PyObject {
    // SAFETY: live body.
    let type_index = unsafe { (*obj).header.type_index };
    let tp = types::wrapper_type_for(type_index);
    // SAFETY: GIL held; `tp` is one of our heap types.
    let w = unsafe { types::wrapper_alloc(tp, 0) };
    if w.is_null() {
        // SAFETY: the +1 was ours to hand over; nobody took it.
        unsafe { object::dec_ref(obj) };
        return ptr::null_mut();
    }
    // SAFETY: `w` is a freshly allocated, zeroed wrapper.
    unsafe { (*w.cast::<PyWrapper>()).chandle = obj };
    w
}

/// `tp_finalize` of the eligible (`plain`) type: runs at the last Python
/// reference (non-GC type, so on every generation, PEP 442 allowing).
pub(super) unsafe extern "C" fn plain_finalize(w: *mut ffi::PyObject) {
    let wr = w.cast::<PyWrapper>();
    // SAFETY: CPython passes a live (temporarily resurrected) wrapper.
    let obj = unsafe { (*wr).chandle };
    if obj.is_null() {
        // Moved-from (or already Inactive): owes nothing.
        return;
    }
    // SAFETY: a non-NULL chandle owns a strong ref (I3), so `obj` is live.
    if let Some(tag) = unsafe { tag_of(obj) }
        && tag.load(Ordering::Acquire) == w as usize
    {
        // SAFETY: GIL held; `w` is the Active wrapper of `obj`.
        if unsafe { deactivate(w, obj, tag) } {
            return;
        }
        if mutant!(DecrefBeforeDetach) {
            // SAFETY: none: `delete_space`, inside this DecRef, finds W
            // still Active.
            unsafe {
                (*wr).chandle = ptr::null_mut();
                object::dec_ref(obj);
            }
            // (The late detach writes into the block only while it is
            // still allocated, so that runs without a sanitizer stay
            // deterministic.)
            if crate::native::registry::id_of(obj as usize).is_some() {
                tag.store(0, Ordering::Release);
            }
            return;
        }
        // Active -> Detached: W holds the last strong ref. Detach first,
        // so that `delete_space`, run inside the DecRef, finds no wrapper.
        tag.store(0, Ordering::Release);
    }
    // SAFETY: W's +1 is released after its chandle is cleared.
    unsafe {
        (*wr).chandle = ptr::null_mut();
        object::dec_ref(obj);
    }
}

/// Active -> Inactive when another owner keeps `obj` alive: the wrapper
/// keeps its memory with a phantom ref and releases its +1. False (nothing
/// done) when W holds the last strong ref.
///
/// # Safety
/// GIL held; `w` is the Active wrapper of the live `obj`, whose tag word
/// is `tag`, and its Python life just ended.
unsafe fn deactivate(
    w: *mut ffi::PyObject,
    obj: *mut Object,
    tag: &std::sync::atomic::AtomicUsize,
) -> bool {
    // SAFETY: live body.
    let (strong, _) = unsafe { (*obj).counts() };
    if strong <= 1 {
        return false;
    }
    // Take the phantom ref first, so that even a DecRef that turned out to
    // be the last one would reclaim through a live object.
    // SAFETY: GIL held, `w` is live.
    unsafe { ffi::Py_INCREF(w) };
    if !mutant!(DeactivateKeepsChandle) {
        // SAFETY: as above; null before the DecRef (I3).
        unsafe { (*w.cast::<PyWrapper>()).chandle = ptr::null_mut() };
    }
    tag.store(w as usize | INACTIVE, Ordering::Release);
    // SAFETY: W's +1 is released.
    unsafe { object::dec_ref(obj) };
    true
}

/// `tp_dealloc` of the eligible type.
pub(super) unsafe extern "C" fn plain_dealloc(w: *mut ffi::PyObject) {
    // SAFETY: CPython calls dealloc with refcount 0 on a live object.
    if unsafe { ffi::PyObject_CallFinalizerFromDealloc(w) } < 0 {
        // Resurrected by the finalizer: Inactive, memory kept for H.
        return;
    }
    // SAFETY: the object is dead; free it and drop its type reference.
    unsafe {
        let tp = ffi::Py_TYPE(w);
        types::wrapper_free(w.cast());
        ffi::Py_DECREF(tp.cast());
    }
}

/// `tp_dealloc` of the eligible type made a GC type (mutant
/// `gc-finalize-once`): PEP 442 runs the finalizer of a GC object once, so
/// the second death frees a wrapper that still owns its +1 and is bound.
#[cfg(feature = "mutants")]
pub(super) unsafe extern "C" fn plain_gc_dealloc(w: *mut ffi::PyObject) {
    // SAFETY: CPython calls dealloc with refcount 0 on a live GC object.
    unsafe {
        if ffi::PyObject_CallFinalizerFromDealloc(w) < 0 {
            return;
        }
        ffi::PyObject_GC_UnTrack(w.cast());
        let tp = ffi::Py_TYPE(w);
        types::wrapper_free(w.cast());
        ffi::Py_DECREF(tp.cast());
    }
}

/// Release a dying ineligible wrapper's reference: detach, then DecRef.
///
/// # Safety
/// GIL held; `w` is a wrapper in its dealloc.
unsafe fn release_ineligible(w: *mut ffi::PyObject) {
    let wr = w.cast::<PyWrapper>();
    // SAFETY: `w` is live during its dealloc.
    let obj = unsafe { (*wr).chandle };
    if obj.is_null() {
        return;
    }
    // SAFETY: non-NULL chandle owns a strong ref (I3).
    if let Some(tag) = unsafe { tag_of(obj) } {
        let _ = tag.compare_exchange(w as usize, 0, Ordering::AcqRel, Ordering::Acquire);
    }
    // SAFETY: as above.
    unsafe {
        (*wr).chandle = ptr::null_mut();
        object::dec_ref(obj);
    }
}

/// `tp_dealloc` of the ineligible (`dict`) type: never cached.
pub(super) unsafe extern "C" fn dict_dealloc(w: *mut ffi::PyObject) {
    // SAFETY: CPython calls dealloc with refcount 0 on a live GC object.
    unsafe { ffi::PyObject_GC_UnTrack(w.cast()) };
    if mutant!(DictCached) {
        // SAFETY: `w` is live in its dealloc; a non-NULL chandle owns a
        // strong ref. The fault caches it like an eligible wrapper.
        unsafe {
            let obj = (*w.cast::<PyWrapper>()).chandle;
            if !obj.is_null()
                && let Some(tag) = tag_of(obj)
                && tag.load(Ordering::Acquire) == w as usize
                && deactivate(w, obj, tag)
            {
                return;
            }
        }
    }
    // SAFETY: as above.
    unsafe {
        release_ineligible(w);
        types::dict_clear(w);
        let tp = ffi::Py_TYPE(w);
        types::wrapper_free(w.cast());
        ffi::Py_DECREF(tp.cast());
    }
}

/// Move: `W._move()` consumed by C++. Detach before nulling `chandle`;
/// the wrapper's +1 goes to the caller; the wrapper stays alive, empty.
/// NULL when the wrapper was already moved from.
///
/// # Safety
/// GIL held; `w` is one of our wrappers.
pub unsafe fn take_handle(w: *mut ffi::PyObject) -> *mut Object {
    let wr = w.cast::<PyWrapper>();
    // SAFETY: `w` is a live wrapper.
    let obj = unsafe { (*wr).chandle };
    if obj.is_null() {
        return obj;
    }
    // SAFETY: non-NULL chandle owns a strong ref (I3).
    if !mutant!(MoveKeepsBinding)
        && let Some(tag) = unsafe { tag_of(obj) }
    {
        let _ = tag.compare_exchange(w as usize, 0, Ordering::AcqRel, Ordering::Acquire);
    }
    if !mutant!(MovedStillOwns) {
        // SAFETY: as above.
        unsafe { (*wr).chandle = ptr::null_mut() };
    }
    obj
}

/// `delete_space` of the Python-aware allocator: H's storage is being
/// freed (weak count 0). An Inactive wrapper is reclaimed under the GIL
/// (taken here when the release happens on a thread without it), or,
/// after the shutdown flag, leaked; then the block is freed.
pub(super) unsafe extern "C" fn py_delete_space(body: *mut c_void) {
    let obj = body.cast::<Object>();
    // SAFETY: the storage is live until `free_tied_block` below.
    let tag = unsafe { tag_word(obj) };
    match decode_tag(tag.swap(0, Ordering::AcqRel)) {
        Tag::Detached => {}
        Tag::Inactive(_) if mutant!(DeleteSpaceKeepsWrapper) => {}
        Tag::Inactive(w) => {
            if accounts::shutting_down() && !mutant!(ReclaimAfterShutdown) {
                // No Python after the flag: leak the wrapper's memory.
                accounts::wrapper_leaked(w as usize);
            } else if mutant!(ForeignNoGil) {
                // SAFETY: none off the interpreter's thread: no GIL taken.
                unsafe { reclaim(w) };
            } else {
                // SAFETY: `w` is kept alive by its phantom ref.
                unsafe { with_gil(|| reclaim(w)) };
            }
        }
        Tag::Active(w) => {
            // Impossible when I3 holds: an Active wrapper owns a strong ref.
            // SAFETY: live storage.
            let id = unsafe { (*obj).id };
            report_violation(format!(
                "storage of h#{id} freed while Active (wrapper at {:#x} still bound)",
                w as usize
            ));
        }
    }
    // SAFETY: weak count 0, wrapper dealt with.
    unsafe { free_tied_block(obj) };
}

/// Run `f` holding the GIL, taking it when this thread does not hold it.
///
/// # Safety
/// The interpreter is initialized.
unsafe fn with_gil(f: impl FnOnce()) {
    // SAFETY: the interpreter is initialized.
    if unsafe { ffi::PyGILState_Check() } == 1 {
        f();
    } else {
        // SAFETY: PyGILState_Ensure works from any thread of an initialized
        // interpreter; the release below pairs with it.
        let phase = watchdog::enter(Side::Foreign, Phase::WaitGil);
        // SAFETY: as above.
        let g = unsafe { ffi::PyGILState_Ensure() };
        drop(phase);
        f();
        // SAFETY: pairs with the Ensure above on this thread.
        unsafe { ffi::PyGILState_Release(g) };
    }
}

/// Reclaim an Inactive wrapper: drop its phantom reference.
///
/// # Safety
/// `w` is an Inactive wrapper whose tag word has been cleared.
unsafe fn reclaim(w: *mut ffi::PyObject) {
    // SAFETY: the interpreter is initialized.
    if unsafe { ffi::PyGILState_Check() } != 1 {
        report_violation(format!(
            "wrapper at {:#x} reclaimed on a thread without the GIL",
            w as usize
        ));
        return;
    }
    // SAFETY: GIL held; the phantom ref is ours to drop.
    unsafe { ffi::Py_DECREF(w) };
}

/// The test-only door: reclaim wrappers leaked after shutdown.
///
/// # Safety
/// GIL held.
pub(super) unsafe fn reclaim_leaked() {
    for addr in accounts::take_leaked() {
        // SAFETY: a leaked wrapper still has its phantom ref and no binding.
        unsafe { ffi::Py_DECREF(addr as *mut ffi::PyObject) };
    }
}

/// Raise `MovedError` and return NULL-ish for the caller's convention.
///
/// # Safety
/// GIL held.
pub(super) unsafe fn raise_moved() {
    // SAFETY: GIL held; the exception type is alive for the process.
    unsafe {
        ffi::PyErr_SetString(
            types::moved_error(),
            c"wrapper was moved from (_move)".as_ptr(),
        )
    };
}

/// The handle of a wrapper argument, or NULL with an error set (not a
/// wrapper: TypeError; moved-from: MovedError).
///
/// # Safety
/// GIL held; `arg` a live object.
pub(super) unsafe fn handle_arg(arg: *mut ffi::PyObject) -> *mut Object {
    // SAFETY: GIL held, `arg` live.
    if !unsafe { types::is_wrapper(arg) } {
        // SAFETY: GIL held.
        unsafe { ffi::PyErr_SetString(ffi::PyExc_TypeError, c"expected a pytie wrapper".as_ptr()) };
        return ptr::null_mut();
    }
    // SAFETY: `arg` is one of our wrappers.
    let obj = unsafe { (*arg.cast::<PyWrapper>()).chandle };
    if obj.is_null() {
        // SAFETY: GIL held.
        unsafe { raise_moved() };
    }
    obj
}

/// Getter of `x`: `a.x` returns the field's object through `make_ret`.
pub(super) unsafe extern "C" fn get_x(w: *mut ffi::PyObject, _: *mut c_void) -> *mut ffi::PyObject {
    // SAFETY: CPython calls getters with the GIL and a live `w`.
    let obj = unsafe { handle_arg(w) };
    if obj.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: `obj` is live (W's ref); its field owns a ref on the child.
    let child = unsafe { (*obj).field.load(Ordering::Acquire) };
    if child.is_null() {
        // SAFETY: GIL held.
        return unsafe { ffi::Py_NewRef(ffi::Py_None()) };
    }
    // SAFETY: the child is live (field's ref); the +1 goes to make_ret.
    unsafe {
        object::inc_ref(child);
        make_ret(child)
    }
}

/// Setter of `x`: C++ IncRefs the new object, stores it, then releases the
/// old one. `None` or deletion clears the field.
pub(super) unsafe extern "C" fn set_x(
    w: *mut ffi::PyObject,
    value: *mut ffi::PyObject,
    _: *mut c_void,
) -> c_int {
    // SAFETY: CPython calls setters with the GIL and a live `w`.
    let obj = unsafe { handle_arg(w) };
    if obj.is_null() {
        return -1;
    }
    // SAFETY: GIL held.
    let new = if value.is_null() || value == unsafe { ffi::Py_None() } {
        if mutant!(UnsetDecrefsNone) && !value.is_null() {
            // SAFETY: none: the setter's value is borrowed; this DecRef
            // takes a reference on None that nobody gave it.
            unsafe { ffi::Py_DECREF(value) };
        }
        ptr::null_mut()
    } else {
        // SAFETY: GIL held, `value` live.
        let v = unsafe { handle_arg(value) };
        if v.is_null() {
            return -1;
        }
        // SAFETY: `v` is live (its wrapper's ref); the +1 goes to the field.
        unsafe { object::inc_ref(v) };
        v
    };
    // SAFETY: `obj` is live (W's ref).
    let old = unsafe { (*obj).field.swap(new, Ordering::AcqRel) };
    if !old.is_null() {
        // SAFETY: the field owned one strong ref on `old`.
        unsafe { object::dec_ref(old) };
    }
    0
}

/// The FFI function `f(x)` that returns its argument: it receives the
/// argument's object (+1, as C++ takes an ObjectRef) and returns it through
/// `make_ret`.
pub(super) unsafe extern "C" fn echo(
    _module: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls METH_O functions with the GIL and a live arg.
    let obj = unsafe { handle_arg(arg) };
    if obj.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: `obj` is live (the argument wrapper's ref).
    unsafe {
        if !mutant!(EchoBorrowedAsOwned) {
            object::inc_ref(obj);
        }
        make_ret(obj)
    }
}

/// atexit hook: interpreter finalization begins.
pub(super) unsafe extern "C" fn mark_finalizing(
    _module: *mut ffi::PyObject,
    _arg: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    accounts::set_shutdown(true);
    // SAFETY: GIL held (atexit runs Python callables).
    unsafe { ffi::Py_NewRef(ffi::Py_None()) }
}
