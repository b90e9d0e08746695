//! The native object ABI of contract §2 (TVM-FFI compatible): a 24-byte body
//! header with the combined strong/weak count, a type index and a deleter;
//! one payload field `x`; reference counting as TVM-FFI does it.

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use super::registry;

/// Deleter flag: destroy the payload (strong count reached 0).
pub const DELETER_STRONG: i32 = 1;
/// Deleter flag: free the storage (weak count reached 0).
pub const DELETER_WEAK: i32 = 2;
/// Both at once.
pub const DELETER_BOTH: i32 = 3;

/// [`ObjectHeader::layout`] of a block with an allocation prefix (tied
/// or untied): `delete_space` is 8 bytes before the body.
pub const PREFIXED: u32 = 0x5052_4546;

const STRONG_ONE: u64 = 1;
const WEAK_ONE: u64 = 1 << 32;
const STRONG_MASK: u64 = 0xFFFF_FFFF;

/// Type index of objects whose wrapper type is `plain` (eligible).
pub const TYPE_PLAIN: i32 = 64;
/// Type index of objects whose wrapper type is `dict` (ineligible).
pub const TYPE_DICT: i32 = 65;
/// Type index of objects built in C++ (`cpp`, `list`, `map`: contract
/// §2.2): wrapper type `plain`; a copy of one (`pickle`) stores its field
/// in C++, not through a Python `__init__`.
pub const TYPE_CPP: i32 = 66;
/// Type index of `fragile` objects (contract §2.2, R20): wrapper type
/// `fragile`, eligible, whose construction raises but in a constructor.
pub const TYPE_FRAGILE: i32 = 67;

pub type Deleter = unsafe extern "C" fn(body: *mut c_void, flags: i32);

/// The body header: what `chandle` points to. Layout fixed by the ABI.
#[repr(C)]
pub struct ObjectHeader {
    /// Strong count in the low 32 bits, weak count in the high 32 bits.
    pub combined_ref_count: AtomicU64,
    pub type_index: i32,
    /// TVM-FFI's padding word. pytie's runtime keeps here whether the
    /// block has an allocation prefix ([`PREFIXED`]) or is legacy-layout
    /// (0), so tied-ness is decided from the body alone where no prefix
    /// may be read (contract §2.1 L3).
    pub layout: u32,
    pub deleter: Deleter,
}

const _: () = assert!(std::mem::size_of::<ObjectHeader>() == 24);
const _: () = assert!(std::mem::offset_of!(ObjectHeader, type_index) == 8);
const _: () = assert!(std::mem::offset_of!(ObjectHeader, deleter) == 16);

/// A native object: header, then the payload (one field `x`, and the
/// accounting number the checker uses to name it).
#[repr(C)]
pub struct Object {
    pub header: ObjectHeader,
    /// The field `x`: NULL or a strong reference to another object.
    pub field: AtomicPtr<Object>,
    /// Creation number (the `HandleNo` of the abstract state).
    pub id: u32,
}

/// Strong and weak counts of a combined word.
pub fn split_counts(word: u64) -> (u32, u32) {
    ((word & STRONG_MASK) as u32, (word >> 32) as u32)
}

impl Object {
    /// A fresh body: strong 1, weak 1, empty field.
    pub(super) fn init(type_index: i32, id: u32, layout: u32) -> Object {
        Object {
            header: ObjectHeader {
                combined_ref_count: AtomicU64::new(STRONG_ONE | WEAK_ONE),
                type_index,
                layout,
                deleter: object_deleter,
            },
            field: AtomicPtr::new(ptr::null_mut()),
            id,
        }
    }

    /// (strong, weak); (0, 0) for a freed block (reported, in guarded
    /// builds).
    pub fn counts(&self) -> (u32, u32) {
        // SAFETY: `self` is a body of this crate's allocator.
        if !unsafe { super::alloc::check_live(self, "count read") } {
            return (0, 0);
        }
        split_counts(self.header.combined_ref_count.load(Ordering::Acquire))
    }

    /// The field `x` (checked like every accessor in guarded builds; a
    /// freed block's field reads as a fresh empty one).
    pub fn field(&self) -> &AtomicPtr<Object> {
        // SAFETY: `self` is a body of this crate's allocator.
        if !unsafe { super::alloc::check_live(self, "field access") } {
            thread_local! {
                static EMPTY: AtomicPtr<Object> = const { AtomicPtr::new(ptr::null_mut()) };
            }
            return EMPTY.with(|e| {
                e.store(ptr::null_mut(), Ordering::Relaxed);
                // SAFETY: a thread-local outlives the caller's use.
                unsafe { &*(e as *const AtomicPtr<Object>) }
            });
        }
        &self.field
    }
}

/// IncRef: strong += 1.
///
/// # Safety
/// `obj` must point to a live object (strong > 0) the caller has a
/// reference to.
pub unsafe fn inc_ref(obj: *mut Object) {
    // SAFETY: a body of this crate's allocator, as the caller guarantees.
    if !unsafe { super::alloc::check_live(obj, "IncRef") } {
        return;
    }
    // SAFETY: the caller guarantees `obj` is live.
    unsafe { &(*obj).header.combined_ref_count }.fetch_add(STRONG_ONE, Ordering::Relaxed);
}

/// DecRef: strong -= 1; at 0 the deleter destroys the payload, then the
/// weak count the strong side held is released (storage freed at weak 0).
///
/// # Safety
/// The caller owns one strong reference on `obj` and gives it up.
pub unsafe fn dec_ref(obj: *mut Object) {
    // SAFETY: a body of this crate's allocator, as the caller guarantees.
    if !unsafe { super::alloc::check_live(obj, "DecRef") } {
        return;
    }
    // SAFETY: the caller owns a strong ref, so the body is live here.
    let header = unsafe { &(*obj).header };
    let before = header
        .combined_ref_count
        .fetch_sub(STRONG_ONE, Ordering::Release);
    if before == STRONG_ONE | WEAK_ONE {
        std::sync::atomic::fence(Ordering::Acquire);
        // SAFETY: both counts reached 0; nobody else can reach the object.
        unsafe { (header.deleter)(obj.cast(), DELETER_BOTH) };
        if crate::mutant!(ReadAfterFree) {
            // SAFETY: none; the fault reads storage the deleter just freed.
            let _ = unsafe { (*obj).counts() };
        }
    } else if before & STRONG_MASK == STRONG_ONE {
        std::sync::atomic::fence(Ordering::Acquire);
        if crate::mutant!(StorageFreedAtStrongZero) {
            // SAFETY: none; the fault frees storage weak refs still hold.
            unsafe { (header.deleter)(obj.cast(), DELETER_BOTH) };
            return;
        }
        // SAFETY: strong reached 0; weak refs keep the storage alive.
        unsafe { (header.deleter)(obj.cast(), DELETER_STRONG) };
        // SAFETY: the strong side's weak count keeps the storage alive until here.
        unsafe { weak_release(obj) };
    }
}

/// Weak hold: weak += 1.
///
/// # Safety
/// `obj`'s storage must be live and the caller must hold a reference.
pub unsafe fn weak_hold(obj: *mut Object) {
    // SAFETY: a body of this crate's allocator, as the caller guarantees.
    if !unsafe { super::alloc::check_live(obj, "weak hold") } {
        return;
    }
    // SAFETY: the caller guarantees the storage is live.
    unsafe { &(*obj).header.combined_ref_count }.fetch_add(WEAK_ONE, Ordering::Relaxed);
}

/// Weak release: weak -= 1; at 0 the deleter frees the storage.
///
/// # Safety
/// The caller owns one weak reference on `obj` and gives it up.
pub unsafe fn weak_release(obj: *mut Object) {
    // SAFETY: a body of this crate's allocator, as the caller guarantees.
    if !unsafe { super::alloc::check_live(obj, "weak release") } {
        return;
    }
    // SAFETY: the caller owns a weak ref, so the storage is live here.
    let header = unsafe { &(*obj).header };
    let before = header
        .combined_ref_count
        .fetch_sub(WEAK_ONE, Ordering::Release);
    if before == WEAK_ONE {
        std::sync::atomic::fence(Ordering::Acquire);
        // SAFETY: weak reached 0 (strong is 0 too): last reference.
        unsafe { (header.deleter)(obj.cast(), DELETER_WEAK) };
    }
}

/// Weak upgrade ("lock"): strong += 1 only if strong > 0, by CAS.
///
/// # Safety
/// The caller owns a weak reference on `obj` (storage live).
pub unsafe fn try_upgrade(obj: *mut Object) -> bool {
    // SAFETY: a body of this crate's allocator, as the caller guarantees.
    if !unsafe { super::alloc::check_live(obj, "weak upgrade") } {
        return false;
    }
    // SAFETY: the caller's weak ref keeps the storage live.
    let count = unsafe { &(*obj).header.combined_ref_count };
    let mut cur = count.load(Ordering::Relaxed);
    loop {
        if cur & STRONG_MASK == 0 {
            return false;
        }
        match count.compare_exchange_weak(
            cur,
            cur + STRONG_ONE,
            Ordering::Acquire,
            Ordering::Relaxed,
        ) {
            Ok(_) => return true,
            Err(seen) => cur = seen,
        }
    }
}

/// The deleter every object carries.
unsafe extern "C" fn object_deleter(body: *mut c_void, flags: i32) {
    let obj = body.cast::<Object>();
    if flags & DELETER_STRONG != 0 {
        // SAFETY: strong reached 0; the payload is ours to destroy.
        unsafe { destroy_payload(obj) };
    }
    if flags & DELETER_WEAK != 0 {
        // SAFETY: weak reached 0; the storage is ours to free.
        unsafe { super::alloc::free_storage(obj) };
    }
}

/// Destroy the payload: release the field (may cascade).
unsafe fn destroy_payload(obj: *mut Object) {
    // SAFETY: the storage is live until the weak side lets go.
    let id = unsafe { (*obj).id };
    registry::handle_died(id);
    if crate::mutant!(DestroyKeepsField) {
        return;
    }
    // SAFETY: as above.
    let child = unsafe { (*obj).field() }.swap(ptr::null_mut(), Ordering::AcqRel);
    if !child.is_null() {
        // SAFETY: the field owned one strong ref on `child`.
        unsafe { dec_ref(child) };
    }
}
