//! The two allocators of contract §2.
//!
//! Tied (the Python-aware allocator; its `delete_space` is the wrapper
//! layer's): `[tag word][delete_space][body...]`, body at block + 16,
//! 16-byte aligned. Untied (the builtin allocator): `[delete_space][body]`.
//! Tied-ness is decided by comparing `delete_space` pointers, as upstream
//! does; nothing may read the tag word of an untied object.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::ffi::c_void;
use std::sync::atomic::AtomicUsize;

use super::object::Object;
use super::registry;

/// Frees an object's storage, given its body.
pub type DeleteSpace = unsafe extern "C" fn(body: *mut c_void);

/// Bytes before the body in a tied block: tag word, then `delete_space`.
pub const TIED_PREFIX: usize = 16;
/// Bytes before the body in an untied block: `delete_space`.
pub const UNTIED_PREFIX: usize = 8;

fn tied_layout() -> Layout {
    Layout::from_size_align(TIED_PREFIX + size_of::<Object>(), 16).expect("tied layout")
}

fn untied_layout() -> Layout {
    Layout::from_size_align(UNTIED_PREFIX + size_of::<Object>(), 8).expect("untied layout")
}

/// Allocate, write the header words and a fresh body (strong 1, weak 1).
fn allocate(
    layout: Layout,
    prefix: usize,
    delete_space: DeleteSpace,
    type_index: i32,
) -> *mut Object {
    // SAFETY: the layout has a non-zero size.
    let block = unsafe { alloc(layout) };
    if block.is_null() {
        handle_alloc_error(layout);
    }
    // SAFETY: `block` has room for `prefix` bytes then an `Object`; the body
    // offset is a multiple of the body's alignment (8) and, for tied
    // blocks, of 16.
    unsafe {
        let body = block.add(prefix).cast::<Object>();
        if prefix == TIED_PREFIX {
            block.cast::<AtomicUsize>().write(AtomicUsize::new(0));
        }
        body.cast::<DeleteSpace>().sub(1).write(delete_space);
        let id = registry::register(body as usize, prefix == TIED_PREFIX);
        body.write(Object::init(type_index, id));
        body
    }
}

/// A tied object, through the Python-aware allocator whose `delete_space`
/// the wrapper layer passes in. Tag word starts NULL (Detached).
pub fn alloc_tied(type_index: i32, delete_space: DeleteSpace) -> *mut Object {
    allocate(tied_layout(), TIED_PREFIX, delete_space, type_index)
}

/// An untied object, through the builtin allocator.
pub fn alloc_untied(type_index: i32) -> *mut Object {
    allocate(
        untied_layout(),
        UNTIED_PREFIX,
        untied_delete_space,
        type_index,
    )
}

/// The `delete_space` recorded just before a body.
///
/// # Safety
/// `obj` must be a body from this module whose storage is live.
pub unsafe fn delete_space_of(obj: *mut Object) -> DeleteSpace {
    // SAFETY: both layouts put `delete_space` right before the body.
    unsafe { obj.cast::<DeleteSpace>().sub(1).read() }
}

/// The tag word of a tied body.
///
/// Builds with debug assertions (tests, fuzz targets) first check in the
/// registry that `obj` is a live tied block: reading the tag word of an
/// untied object (the bug upstream staged tying off for) reads before its
/// block. That is reported as a violation and answered with a blank word
/// of this thread's instead, so the checker sees it without a crash.
///
/// # Safety
/// `obj` must be a live body allocated by [`alloc_tied`].
pub unsafe fn tag_word<'a>(obj: *mut Object) -> &'a AtomicUsize {
    #[cfg(any(debug_assertions, feature = "mutants"))]
    if !registry::is_tied_block(obj as usize) {
        registry::report_violation(format!(
            "tag word read on {:#x}, which is not a live tied object (it has no tag word)",
            obj as usize
        ));
        thread_local! {
            static BLANK: AtomicUsize = const { AtomicUsize::new(0) };
        }
        return BLANK.with(|b| {
            b.store(0, std::sync::atomic::Ordering::Relaxed);
            // SAFETY: a thread-local lives as long as its thread, which
            // outlives the caller's use of the word.
            unsafe { &*(b as *const AtomicUsize) }
        });
    }
    // SAFETY: the caller guarantees a live tied block: the tied prefix puts
    // the tag word 16 bytes before the body.
    unsafe { tag_word_unchecked(obj) }
}

/// The tag word of a body the caller knows (from the registry) to be a
/// live tied block: no check.
///
/// # Safety
/// `obj` must be a live body allocated by [`alloc_tied`].
pub unsafe fn tag_word_unchecked<'a>(obj: *mut Object) -> &'a AtomicUsize {
    // SAFETY: the tied prefix puts the tag word 16 bytes before the body.
    unsafe { &*obj.cast::<u8>().sub(TIED_PREFIX).cast::<AtomicUsize>() }
}

/// Free an object's storage by its allocation header's `delete_space`.
///
/// # Safety
/// Weak count reached 0: nobody else refers to `obj`.
pub(super) unsafe fn free_storage(obj: *mut Object) {
    // SAFETY: storage still live; we are its last user.
    unsafe { (delete_space_of(obj))(obj.cast()) }
}

/// Free a tied block (the last act of the tied `delete_space`).
///
/// # Safety
/// `obj` is a tied body whose weak count reached 0 and whose wrapper, if
/// any, has been dealt with.
pub unsafe fn free_tied_block(obj: *mut Object) {
    if registry::block_freed(obj as usize).is_some() {
        // SAFETY: the block was allocated with `tied_layout` at obj - 16.
        unsafe { dealloc(obj.cast::<u8>().sub(TIED_PREFIX), tied_layout()) };
    }
}

/// The builtin allocator's `delete_space`.
unsafe extern "C" fn untied_delete_space(body: *mut c_void) {
    let obj = body.cast::<Object>();
    if registry::block_freed(obj as usize).is_some() {
        // SAFETY: the block was allocated with `untied_layout` at obj - 8.
        unsafe { dealloc(obj.cast::<u8>().sub(UNTIED_PREFIX), untied_layout()) };
    }
}
