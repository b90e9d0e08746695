//! The word-access leaves of the tying state machine: each writes one word
//! or moves one reference, and is the only place an injected fault of its
//! kind lives (the bug zoo, `crate::mutants`), so the transition bodies in
//! `tying.rs` read as the contract does. Upstream confines its build
//! variants to a few such leaves in the same way.
//!
//! Faults that change a body's control flow (an order, a branch taken)
//! stay at their site in `tying.rs`, visible where they act.

use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

use pyo3::ffi;

use super::tying::INACTIVE;
use super::types::PyWrapper;
use crate::native::object::{self, Object};

/// Detached -> Active: record the fresh wrapper `w` in the tag word.
pub(super) fn attach(tag: &AtomicUsize, w: *mut ffi::PyObject) {
    let unlisted = mutant!(UnlistedLatch) && latched();
    if !mutant!(FreshUnattached) && !unlisted {
        tag.store(w as usize, Ordering::Release);
    }
}

/// The mutant `unlisted-latch`'s latch: set by `shutdown`, never reset,
/// and not one of the world's items (contract §5): state a check cannot
/// see, as tvm-ffi's Cython-held references are.
#[cfg(feature = "mutants")]
static LATCH: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(feature = "mutants")]
fn latched() -> bool {
    LATCH.load(Ordering::Relaxed)
}

#[cfg(not(feature = "mutants"))]
fn latched() -> bool {
    false
}

/// `shutdown` (the mutant `unlisted-latch` latches here).
pub(super) fn shutdown_seen() {
    #[cfg(feature = "mutants")]
    if mutant!(UnlistedLatch) {
        LATCH.store(true, Ordering::Relaxed);
    }
}

/// Active -> Inactive: the tag word keeps `w`, marked cached.
pub(super) fn mark_inactive(tag: &AtomicUsize, w: *mut ffi::PyObject) {
    tag.store(w as usize | INACTIVE, Ordering::Release);
}

/// Move: detach `w` from the tag word if it is the canonical wrapper.
pub(super) fn detach_moved(tag: &AtomicUsize, w: *mut ffi::PyObject) {
    if !mutant!(MoveKeepsBinding) {
        let _ = tag.compare_exchange(w as usize, 0, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// Why a wrapper's `chandle` is cleared (each site has its own fault).
#[derive(Clone, Copy)]
pub(super) enum Clear {
    /// Active -> Inactive (§3 I3: an Inactive wrapper points to nothing).
    Deactivate,
    /// `_move()`: the wrapper's +1 went to the caller.
    Move,
}

/// Clear `w`'s `chandle`.
///
/// # Safety
/// GIL held; `w` is a live wrapper of ours.
pub(super) unsafe fn clear_chandle(w: *mut ffi::PyObject, why: Clear) {
    let skip = match why {
        Clear::Deactivate => mutant!(DeactivateKeepsChandle),
        Clear::Move => mutant!(MovedStillOwns),
    };
    if !skip {
        // SAFETY: a live wrapper of ours, as the caller guarantees.
        unsafe { (*w.cast::<PyWrapper>()).chandle = ptr::null_mut() };
    }
}

/// Active -> Active: release the caller's redundant +1 on `obj` (the
/// canonical wrapper owns one already).
///
/// # Safety
/// `obj` is live and the caller owns the +1 released.
pub(super) unsafe fn release_redundant(obj: *mut Object) {
    if !mutant!(ActiveKeepsRef) {
        // SAFETY: as the caller guarantees; W's own ref keeps `obj` alive.
        unsafe { object::dec_ref(obj) };
    }
}

/// Inactive -> Active: the revived wrapper takes over the caller's +1 on
/// `obj`, which needs no count change (the phantom Python ref becomes the
/// caller's reference).
///
/// # Safety
/// `obj` is live with the caller's +1.
pub(super) unsafe fn revive_takes_ref(obj: *mut Object) {
    if mutant!(ReviveDropsRef) {
        // SAFETY: none; the fault releases the +1 W now stands for.
        unsafe { object::dec_ref(obj) };
    }
    if mutant!(ReviveTakesTwice) {
        // SAFETY: `obj` is live (the caller's +1).
        unsafe { object::inc_ref(obj) };
    }
}

/// `f(x)`: the callee takes its own +1 on the argument's object (C++ takes
/// an `ObjectRef`).
///
/// # Safety
/// `obj` is live (the argument wrapper's ref keeps it).
pub(super) unsafe fn take_argument_ref(obj: *mut Object) {
    if !mutant!(EchoBorrowedAsOwned) {
        // SAFETY: as the caller guarantees.
        unsafe { object::inc_ref(obj) };
    }
}
