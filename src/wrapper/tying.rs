//! The tying state machine, design S (docs/contract.md §3): binds one
//! Python wrapper to one tied native object, so that `a.x is a.x`,
//! `f(x) is x`, and `id()` survives a drop and refetch while another owner
//! keeps the object alive. Everything here runs with the GIL held unless
//! it says otherwise.
//!
//! Wrapper vs native object
//! ------------------------
//!
//! ```text
//! wrapper W (PyWrapper)             native object H (Object)
//! +------------------+              +---------------------+
//! | ob_refcnt        |              | combined_ref_count  |
//! | ob_type          |              | type_index, deleter |
//! | chandle  ---------------------> | field x             |
//! | serial           |              +---------------------+
//! +------------------+                         |
//!          ^                                   |
//!          +------ tag word (body - 16) <-----+
//! ```
//!
//! The tag word is a raw pointer: it owns no Python ref on W.
//!
//! Layouts (contract §2)
//! ---------------------
//! Tied block: `[tag word][delete_space][body]`, body at block + 16 (test
//! builds put a guard word before it: `native::guard`).
//! Untied block: `[delete_space][body]`. `is_tied` compares the word just
//! before the body with `py_delete_space`; `tag_of` reads a tag word only
//! after that test (a legacy-layout object, with no header at all, would
//! make even the test read out of bounds: contract §2.1).
//!
//! Tag word encoding: `0` Detached, `W` Active(W), `W | INACTIVE`
//! Inactive(W). `decode_tag` reads it. No other bit is ever set.
//!
//! States (tied objects)
//! ---------------------
//!   Untied       not tied (or tying off): never binds; every return makes
//!                a fresh wrapper owning its +1; dropping it DecRefs.
//!   Detached     tag 0: no canonical wrapper. Fresh, moved-from, or the
//!                last wrapper died holding the last strong ref, or was
//!                ineligible (`dict`).
//!   Active(W)    tag W, `W.chandle == H`: W owns one strong ref on H.
//!   Inactive(W)  tag W|1, `W.chandle == NULL`: W's Python life ended,
//!                W owns nothing on H, and W's memory is kept by the
//!                phantom ref, for a revival at the same address.
//!
//! Phantom ref: the one Python ref `deactivate` takes on W so that
//! CPython does not free it. It is the tying layer's, not the program's
//! (contract §5 excludes it). Revival hands it to the caller; `reclaim`
//! drops it; after shutdown it is leaked with W, until `reclaim_leaked`.
//!
//! Invariants (contract §3; checked after every step by exec/invariants)
//! ----------------------------------------------------------------------
//!   I1  When W's last Python ref goes, its strong ref on H is released.
//!   I2  When H's storage is freed, its cached W is reclaimed (leaked
//!       after shutdown); no wrapper memory outlives its block.
//!   I3  A non-NULL `W.chandle` points to a live H and owns one strong
//!       ref on it. So `chandle` is nulled *before* every DecRef of it.
//!   I4  strong == holders + fields + wrappers pointing at H; weak ==
//!       weak slots + (1 if strong > 0).
//!   I5  Active(W) => `W.chandle == H`, W alive; Inactive(W) =>
//!       `W.chandle == NULL`, W allocated; no W canonical for two H.
//!
//! Where transitions happen
//! ------------------------
//!   `make_ret` (behind `get_x`, `echo`, and wrapper/mod.rs's
//!   `return_handle`, which `new`, `ret` and `lock` use); the caller
//!   owns +1 on H:
//!       Untied        -> fresh wrapper (`fresh_wrapper`), no binding;
//!       Detached      -> Active(W): `fresh_wrapper`, then store W;
//!       Active(W)     -> Active(W): Py_INCREF W, DecRef the extra +1;
//!       Inactive(W)   -> Active(W): restore `chandle`, store W; the
//!                        phantom ref becomes the caller's reference.
//!   `plain_finalize` (tp_finalize of `plain`, from `plain_dealloc` via
//!   `PyObject_CallFinalizerFromDealloc`), at W's last Python ref:
//!       `chandle` NULL -> nothing (moved-from: owes nothing);
//!       Active(W)      -> Inactive(W) through `deactivate` when
//!                         strong > 1: phantom ref first, null `chandle`,
//!                         tag W|1, then DecRef; `plain_dealloc` sees the
//!                         resurrection and returns;
//!       Active(W)      -> Detached when W holds the last strong ref:
//!                         tag 0 first, null `chandle`, DecRef (whose
//!                         `py_delete_space` then finds no wrapper);
//!       not canonical  -> null `chandle`, DecRef.
//!   `dict_dealloc` -> `release_ineligible` (the ineligible type):
//!       Active(W) -> Detached: tag W -> 0 (compare-exchange), null
//!       `chandle`, DecRef; then W is freed.
//!   `take_handle` (move, `W._move()` consumed by C++):
//!       Active(W) -> Detached: tag W -> 0 before `chandle` is nulled;
//!       W's +1 goes to the caller; W stays alive, moved-from.
//!   `py_delete_space` (the tied `delete_space`, at weak 0, on any
//!   thread): swaps the tag to 0, then
//!       Detached    -> gone: block freed;
//!       Inactive(W) -> gone: `reclaim` drops the phantom ref under the
//!                      GIL (`with_gil` takes it off the interpreter's
//!                      thread), or after shutdown W is recorded as
//!                      leaked; then the block is freed;
//!       Active(W)   -> reported: impossible while I3 holds.
//!   `mark_finalizing` (atexit hook) sets the shutdown flag;
//!   `reclaim_leaked` is teardown's test-only door for leaked wrappers.
//!
//! Why non-GC, and the one race
//! ----------------------------
//! `plain` is not a GC type: PEP 442 runs a GC type's finalizer once per
//! object, and W must be finalized on every drop/revive generation.
//! `deactivate` tests `strong > 1` before its DecRef. Under real
//! concurrency another owner could release in between, making this DecRef
//! the last: taking the phantom ref first makes that case reclaim W
//! through a live object (contract §3 "Threads", rule T1). The harness
//! never releases concurrently.

use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::atomic::Ordering;

use pyo3::ffi;

use super::accounts;
use super::seams::{self, Clear};
use super::types::{self, PyWrapper};
use crate::native::alloc::{
    DeleteSpace, delete_space_of, free_tied_block, has_prefix, tag_word, tag_word_unchecked,
};
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
/// by comparing `delete_space` pointers, as upstream does, after the
/// body's layout word says there is a `delete_space` to read (contract
/// §2.1 L3: a legacy body has none).
///
/// # Safety
/// `obj` is a live body from the native layer.
pub unsafe fn is_tied(obj: *mut Object) -> bool {
    // SAFETY: the caller guarantees the storage is live.
    if !unsafe { has_prefix(obj) } && !mutant!(LegacyPrefixPeek) {
        return false;
    }
    // SAFETY: live, and prefixed (or the fault reads before a legacy body,
    // which the guarded build reports and ASan sees).
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
    if mutant!(UntiedTagPeek) {
        // SAFETY: none for an untied body: the fault reads before it.
        let _ = unsafe { tag_word_unchecked(obj) }.load(Ordering::Relaxed);
    }
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
            if !w.is_null() {
                // A fresh wrapper must be attached (review thread, first comment).
                seams::attach(tag, w);
            }
            w
        }
        Tag::Active(w) => {
            // SAFETY: an Active wrapper is alive (I5); GIL held.
            unsafe { ffi::Py_INCREF(w) };
            // SAFETY: the redundant +1 is ours; W's own ref keeps `obj` alive.
            unsafe { seams::release_redundant(obj) };
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
            // SAFETY: `obj` is live with the caller's +1.
            unsafe { seams::revive_takes_ref(obj) };
            w
        }
    }
}

/// `new` through a constructor of wrapper type `tp` (not the object's
/// registered one): a fresh wrapper of `tp` owning the caller's +1, bound
/// Active as `make_ret` binds a Detached object's first wrapper.
///
/// # Safety
/// GIL held; `obj` a new object (Detached or untied) with the caller's +1;
/// `tp` one of our wrapper types.
pub unsafe fn make_new_as(obj: *mut Object, tp: *mut ffi::PyTypeObject) -> *mut ffi::PyObject {
    // SAFETY: GIL held, +1 handed over, `tp` ours. A constructor's
    // wrapper is never refused (R20).
    let w = unsafe { fresh_wrapper_of(obj, tp, false) };
    if w.is_null() {
        // The +1 was released with the failed wrapper: `obj` may be gone
        // (`pytie sweep` found the tag read that was here, after it).
        return w;
    }
    // SAFETY: live body (the wrapper's +1).
    if let Some(tag) = unsafe { tag_of(obj) } {
        seams::attach(tag, w);
    }
    w
}

/// A new wrapper of the object's wrapper type owning the caller's +1, as
/// a return makes it: the `fragile` type's construction raises (contract
/// R20) before anything is allocated, and the +1 goes as it goes when the
/// allocation fails.
///
/// # Safety
/// GIL held; the caller hands over +1 on `obj`.
unsafe fn fresh_wrapper(obj: *mut Object) -> *mut ffi::PyObject {
    // SAFETY: live body.
    let type_index = unsafe { (*obj).header.type_index };
    let tp = types::wrapper_type_for(type_index);
    let refused = tp == types::fragile_type();
    // SAFETY: the caller's contract; the type is the object's own.
    unsafe { fresh_wrapper_of(obj, tp, refused) }
}

/// A new wrapper of type `tp` owning the caller's +1; with `refused`, its
/// construction raises (R20) instead.
///
/// # Safety
/// GIL held; the caller hands over +1 on `obj`; `tp` one of our wrapper
/// types.
unsafe fn fresh_wrapper_of(
    obj: *mut Object,
    tp: *mut ffi::PyTypeObject,
    refused: bool,
) -> *mut ffi::PyObject {
    let w = if refused {
        // SAFETY: GIL held; the exception type lives for the process.
        unsafe {
            ffi::PyErr_SetString(
                types::refused_error(),
                c"pytie: construction refused".as_ptr(),
            )
        };
        ptr::null_mut()
    } else {
        // SAFETY: GIL held; `tp` is one of our heap types.
        unsafe { types::wrapper_alloc(tp, 0) }
    };
    if w.is_null() {
        if mutant!(AllocFailKeepsRef) {
            return ptr::null_mut();
        }
        // SAFETY: the +1 was ours to hand over; nobody took it.
        unsafe { object::dec_ref(obj) };
        if mutant!(AllocFailDecrefsTwice) {
            // SAFETY: (the fault) a second release of the same +1; the
            // registry catches a release of a dead object.
            unsafe { object::dec_ref(obj) };
        }
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
    // be the last one would reclaim through a live object. (The mutant
    // takes none after the flag: the finalizer does not resurrect W, whose
    // memory the dealloc then frees under the Inactive tag.)
    if !(mutant!(TeardownFreesCached) && accounts::shutting_down()) {
        // SAFETY: GIL held, `w` is live.
        unsafe { ffi::Py_INCREF(w) };
    }
    // SAFETY: as above; null before the DecRef (I3).
    unsafe { seams::clear_chandle(w, Clear::Deactivate) };
    seams::mark_inactive(tag, w);
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
    if let Some(tag) = unsafe { tag_of(obj) } {
        seams::detach_moved(tag, w);
    }
    // SAFETY: `w` is a live wrapper of ours.
    unsafe { seams::clear_chandle(w, Clear::Move) };
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
            // SAFETY: an Active wrapper is allocated (I5).
            let serial = unsafe { (*w.cast::<PyWrapper>()).serial };
            report_violation(format!(
                "storage of h#{id} freed while Active (wr#{serial} still bound)"
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
        // SAFETY: an Inactive wrapper's memory is kept by its phantom ref.
        let serial = unsafe { (*w.cast::<PyWrapper>()).serial };
        report_violation(format!("wr#{serial} reclaimed on a thread without the GIL"));
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
    let child = unsafe { (*obj).field() }.load(Ordering::Acquire);
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
    let old = unsafe { (*obj).field() }.swap(new, Ordering::AcqRel);
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
        seams::take_argument_ref(obj);
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
