//! The allocators of contract §2 and §2.1.
//!
//! Tied (the Python-aware allocator; its `delete_space` is the wrapper
//! layer's): `[tag word][delete_space][body...]`, body at block + 16,
//! 16-byte aligned. Untied (the builtin allocator): `[delete_space][body]`.
//! Legacy layout (code built against pre-tying headers, §2.1): `[body]`,
//! no prefix at all; its deleter frees the body itself (L4). Tied-ness is
//! decided by comparing `delete_space` pointers, as upstream does, but
//! only for a body whose `layout` word says it has a prefix (L3):
//! nothing may read before a legacy body, nor the tag word of an untied
//! one.
//!
//! Test and debug builds put a guard word and, for untied and legacy
//! blocks, markers before those prefixes, and quarantine freed blocks
//! ([`super::guard`]): the body offset is then 32 for all three.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::ffi::c_void;
use std::sync::atomic::AtomicUsize;

use super::guard::{self, GUARD_BYTES, GUARDED, Guard, Held, NO_PREFIX, NO_TAG, QUARANTINED};
use super::object::{Object, PREFIXED};
use super::registry;

/// Frees an object's storage, given its body.
pub type DeleteSpace = unsafe extern "C" fn(body: *mut c_void);

/// Bytes before the body in a tied block: tag word, then `delete_space`.
pub const TIED_PREFIX: usize = 16;
/// Bytes before the body in an untied block: `delete_space`.
pub const UNTIED_PREFIX: usize = 8;

/// The three block layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Tied,
    Untied,
    Legacy,
}

/// Bytes before the body in a block as allocated: the contract's prefix,
/// after the guard (and the markers) in guarded builds.
const fn prefix(kind: Kind) -> usize {
    if GUARDED {
        GUARD_BYTES + TIED_PREFIX
    } else {
        match kind {
            Kind::Tied => TIED_PREFIX,
            Kind::Untied => UNTIED_PREFIX,
            Kind::Legacy => 0,
        }
    }
}

fn layout(kind: Kind) -> Layout {
    let align = if kind == Kind::Tied { 16 } else { 8 };
    Layout::from_size_align(prefix(kind) + size_of::<Object>(), align).expect("block layout")
}

/// Allocate, write the header words and a fresh body (strong 1, weak 1).
fn allocate(kind: Kind, delete_space: DeleteSpace, type_index: i32) -> *mut Object {
    let layout = layout(kind);
    // SAFETY: the layout has a non-zero size.
    let block = unsafe { alloc(layout) };
    if block.is_null() {
        handle_alloc_error(layout);
    }
    // SAFETY: `block` has room for the prefix then an `Object`; the body
    // offset is a multiple of the body's alignment (8) and, for tied
    // blocks, of 16. The words written are inside the block: a prefix
    // word only where the kind has one, or in a guarded block (32 bytes
    // before the body).
    unsafe {
        let body = block.add(prefix(kind)).cast::<Object>();
        if GUARDED {
            block.cast::<usize>().write(guard::LIVE);
        }
        let tag = || block.add(prefix(kind) - TIED_PREFIX).cast::<AtomicUsize>();
        match kind {
            Kind::Tied => tag().write(AtomicUsize::new(0)),
            _ if GUARDED => tag().write(AtomicUsize::new(NO_TAG)),
            _ => {}
        }
        match kind {
            Kind::Legacy if GUARDED => body.cast::<usize>().sub(1).write(NO_PREFIX),
            Kind::Legacy => {}
            _ => body.cast::<DeleteSpace>().sub(1).write(delete_space),
        }
        let id = registry::register(body as usize, kind == Kind::Tied);
        let word = if kind == Kind::Legacy { 0 } else { PREFIXED };
        body.write(Object::init(type_index, id, word));
        body
    }
}

/// A tied object, through the Python-aware allocator whose `delete_space`
/// the wrapper layer passes in. Tag word starts NULL (Detached).
pub fn alloc_tied(type_index: i32, delete_space: DeleteSpace) -> *mut Object {
    allocate(Kind::Tied, delete_space, type_index)
}

/// An untied object, through the builtin allocator.
pub fn alloc_untied(type_index: i32) -> *mut Object {
    allocate(Kind::Untied, untied_delete_space, type_index)
}

/// A legacy-layout object (contract §2.1): no prefix; `layout` 0.
pub fn alloc_legacy(type_index: i32) -> *mut Object {
    allocate(Kind::Legacy, untied_delete_space, type_index)
}

/// Does the body say it has an allocation prefix (contract §2.1 L3)? Reads
/// only the body.
///
/// # Safety
/// `obj` is a live body from this module.
pub unsafe fn has_prefix(obj: *const Object) -> bool {
    // SAFETY: a live body, as the caller guarantees.
    unsafe { check_live(obj, "layout read") && (*obj).header.layout == PREFIXED }
}

/// Guarded builds: is `obj` the body of a live block? A freed
/// (quarantined) or foreign one is reported as a runtime assertion naming
/// `what` was attempted, and the caller must not touch it. Always true in
/// unguarded builds.
///
/// # Safety
/// `obj` is a body this module allocated, live or quarantined (in guarded
/// builds its guard word, 32 bytes before it, is readable).
pub unsafe fn check_live(obj: *const Object, what: &str) -> bool {
    if !GUARDED {
        return true;
    }
    // SAFETY: as the caller guarantees, the guard word is readable.
    let word = unsafe {
        obj.cast::<u8>()
            .sub(prefix(Kind::Tied))
            .cast::<usize>()
            .read()
    };
    match Guard::of(word) {
        Guard::Live => true,
        Guard::Freed => {
            // SAFETY: a quarantined body keeps its number.
            let id = unsafe { (*obj).id };
            registry::report_violation(format!(
                "use after free: {what} on obj#{id}, whose storage was already freed"
            ));
            false
        }
        Guard::Foreign(w) => {
            registry::report_violation(format!(
                "{what} on memory that is no live object of this allocator (guard word {w:#x})"
            ));
            false
        }
    }
}

/// The `delete_space` recorded just before a body.
///
/// Guarded builds check the word read: on a legacy body it is the
/// no-prefix marker, which is reported (a read before a legacy body,
/// contract §2.1 L2) and answered with a `delete_space` that frees
/// nothing. Unguarded, such a read is out of bounds, for ASan to see.
///
/// # Safety
/// `obj` must be a body from this module whose storage is live and that
/// has a prefix ([`has_prefix`]); a legacy body only in guarded builds.
pub unsafe fn delete_space_of(obj: *mut Object) -> DeleteSpace {
    // SAFETY: a body of this module, as the caller guarantees.
    unsafe { check_live(obj, "delete_space read") };
    let word = obj.cast::<DeleteSpace>().wrapping_sub(1);
    // SAFETY: tied and untied layouts put `delete_space` right before the
    // body; a guarded legacy block has its marker there.
    if GUARDED && unsafe { word.cast::<usize>().read() } == NO_PREFIX {
        // SAFETY: a live body.
        let id = unsafe { (*obj).id };
        registry::report_violation(format!(
            "delete_space read on obj#{id}, a legacy-layout object (no allocation prefix): a \
             read before its body (contract §2.1 L2)"
        ));
        return no_delete_space;
    }
    // SAFETY: as above: a prefixed body.
    unsafe { word.read() }
}

/// What a `delete_space` read on a legacy body answers (guarded builds).
unsafe extern "C" fn no_delete_space(_body: *mut c_void) {}

/// The tag word of a tied body.
///
/// Guarded builds (tests, fuzz targets) check the guard word first, and
/// that the word read is a tag word: reading the tag word of an untied
/// object (the bug upstream staged tying off for) reads before its body;
/// here it reads the no-tag marker instead. Either is reported as a
/// violation and answered with a blank word of this thread's, so the
/// checker sees it without a crash.
///
/// # Safety
/// `obj` must be a live body allocated by [`alloc_tied`].
pub unsafe fn tag_word<'a>(obj: *mut Object) -> &'a AtomicUsize {
    // SAFETY: as the caller guarantees.
    unsafe { tag_word_unchecked(obj) }
}

/// The tag word of a body the caller knows (from the registry) to be a
/// live tied block. Checked all the same in guarded builds: a caller that
/// is wrong is the bug this layer exists to show.
///
/// # Safety
/// `obj` must be a live body allocated by [`alloc_tied`].
pub unsafe fn tag_word_unchecked<'a>(obj: *mut Object) -> &'a AtomicUsize {
    // SAFETY: the tag word's place is 16 bytes before any body of this
    // module (inside the block when guarded; see the caller's contract).
    let word = unsafe { &*obj.cast::<u8>().sub(TIED_PREFIX).cast::<AtomicUsize>() };
    if GUARDED {
        // SAFETY: a body of this module, as the caller guarantees.
        let live = unsafe { check_live(obj, "tag word read") };
        let untied = live && word.load(std::sync::atomic::Ordering::Relaxed) == NO_TAG;
        if untied {
            // SAFETY: a live body.
            let id = unsafe { (*obj).id };
            registry::report_violation(format!(
                "tag word read on obj#{id}, which is not a live tied object (it has no tag word): \
                 a read before an untied object's body"
            ));
        }
        if !live || untied {
            return blank_word();
        }
    }
    word
}

/// A zeroed word of this thread's, returned instead of a tag word that
/// must not be used.
fn blank_word<'a>() -> &'a AtomicUsize {
    thread_local! {
        static BLANK: AtomicUsize = const { AtomicUsize::new(0) };
    }
    BLANK.with(|b| {
        b.store(0, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: a thread-local lives as long as its thread, which
        // outlives the caller's use of the word.
        unsafe { &*(b as *const AtomicUsize) }
    })
}

/// Free an object's storage by its allocation header's `delete_space`.
///
/// # Safety
/// Weak count reached 0: nobody else refers to `obj`.
pub(super) unsafe fn free_storage(obj: *mut Object) {
    // SAFETY: storage still live; we are its last user.
    unsafe {
        if has_prefix(obj) {
            (delete_space_of(obj))(obj.cast())
        } else if registry::block_freed(obj as usize).is_some() {
            // A legacy object's deleter frees the body itself (§2.1 L4).
            release_block(obj, Kind::Legacy)
        }
    }
}

/// Free a tied block (the last act of the tied `delete_space`).
///
/// # Safety
/// `obj` is a tied body whose weak count reached 0 and whose wrapper, if
/// any, has been dealt with.
pub unsafe fn free_tied_block(obj: *mut Object) {
    if registry::block_freed(obj as usize).is_some() {
        // SAFETY: as the caller guarantees; a live tied block.
        unsafe { release_block(obj, Kind::Tied) };
    }
}

/// The builtin allocator's `delete_space`.
unsafe extern "C" fn untied_delete_space(body: *mut c_void) {
    let obj = body.cast::<Object>();
    if registry::block_freed(obj as usize).is_some() {
        // SAFETY: the registry says it is a live block; weak reached 0.
        unsafe { release_block(obj, Kind::Untied) };
    }
}

/// Give a block back: in guarded builds poison it first (guard word, counts,
/// field), and quarantine it where quarantine is on.
///
/// # Safety
/// `obj` is the body of a live block of this module of the given kind,
/// and nobody may use it any more.
unsafe fn release_block(obj: *mut Object, kind: Kind) {
    // SAFETY: the block starts `prefix` bytes before the body.
    let block = unsafe { obj.cast::<u8>().sub(prefix(kind)) };
    if GUARDED {
        // SAFETY: the block is ours until freed below; these words are in it.
        unsafe {
            block.cast::<usize>().write(guard::FREED);
            (*obj)
                .header
                .combined_ref_count
                .store(guard::POISONED_COUNT, std::sync::atomic::Ordering::Relaxed);
            (*obj)
                .field
                .store(std::ptr::null_mut(), std::sync::atomic::Ordering::Relaxed);
        }
    }
    let held = Held {
        block: block as usize,
        layout: layout(kind),
    };
    let now = if QUARANTINED {
        guard::quarantine(held)
    } else {
        vec![held]
    };
    for h in now {
        // SAFETY: allocated by `allocate` with this layout, freed once
        // (each block enters the quarantine once and leaves it once).
        unsafe { dealloc(h.block as *mut u8, h.layout) };
    }
}

/// Free every quarantined block: a new program starts, so nothing of the
/// last one may be touched any more (called with the world empty).
pub fn release_quarantine() {
    for h in guard::drain() {
        // SAFETY: as in `release_block`.
        unsafe { dealloc(h.block as *mut u8, h.layout) };
    }
}
