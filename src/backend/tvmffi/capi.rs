//! The C ABI (include/tvm/ffi/c_api.h): the two exported C API functions
//! the backend calls itself (`TVMFFIObjectDecRef` and `IncRef`, to give
//! back what a recorded finding leaked, or restore what one released),
//! resolved with `dlopen`/`dlsym` in the copy of libtvm_ffi.so the import
//! loaded; and the observer's pass-through deleter.
//! Everything that runs upstream's inline C++ (holders, weak slots, `lock`,
//! the FFI functions pytie registers) is in the C++ harness (harness.rs).
//!
//! Everything here that takes an object's address is an `unsafe fn`: the
//! address is only an integer, and the caller states which reference keeps
//! the memory behind it allocated.

use std::ffi::{CStr, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::harness;

/// The first type index of an object (c_api.h `kTVMFFIStaticObjectBegin`).
pub(super) const K_STATIC_OBJECT_BEGIN: i32 = 64;
/// The size of a `TVMFFIAny` (c_api.h): a field holding any value.
pub(super) const ANY_SIZE: usize = 16;
/// Deleter flag (c_api.h `kTVMFFIObjectDeleterFlagBitMaskStrong`):
/// destroy the object.
const DELETE_STRONG: i32 = 1;
/// Deleter flag (c_api.h `kTVMFFIObjectDeleterFlagBitMaskWeak`): free the
/// storage.
const DELETE_WEAK: i32 = 2;

type ObjDeleter = unsafe extern "C" fn(*mut c_void, i32);
type RefFn = unsafe extern "C" fn(*mut c_void) -> i32;

/// The C API functions the backend calls (c_api.h signatures).
struct Api {
    inc_ref: RefFn,
    dec_ref: RefFn,
}

static API: OnceLock<Api> = OnceLock::new();

fn api() -> &'static Api {
    API.get()
        .expect("tvm-ffi's C API is resolved before any object exists")
}

/// `TVMFFIObjectIncRef`: a strong reference the caller then owns.
///
/// # Safety
/// The object at `addr` is alive: a reference the caller knows of keeps it.
pub(super) unsafe fn inc_ref(addr: usize) {
    // SAFETY: the caller's contract: the object is alive.
    unsafe { (api().inc_ref)(addr as *mut c_void) };
}

/// `TVMFFIObjectDecRef`.
///
/// # Safety
/// The caller gives up a strong reference it owns on the object at `addr`.
pub(super) unsafe fn dec_ref(addr: usize) {
    // SAFETY: the caller's contract: it owns the reference it gives up.
    unsafe { (api().dec_ref)(addr as *mut c_void) };
}

/// Resolve the C API in the copy of libtvm_ffi.so the import loaded (once
/// per process; later calls keep the first).
pub(super) fn resolve(path: &str) -> Result<(), String> {
    if API.get().is_some() {
        return Ok(());
    }
    let c = std::ffi::CString::new(path).map_err(|e| e.to_string())?;
    // SAFETY: RTLD_NOLOAD only looks the library up; it is loaded already.
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    if h.is_null() {
        return Err(format!("{path} is not loaded after `import tvm_ffi`"));
    }
    let sym = |name: &CStr| {
        // SAFETY: `h` is a live handle; `name` is NUL-terminated.
        let p = unsafe { libc::dlsym(h, name.as_ptr()) };
        if p.is_null() {
            Err(format!("{path}: no symbol {name:?}"))
        } else {
            Ok(p)
        }
    };
    // SAFETY: each symbol has the C signature declared in c_api.h, which
    // the function pointer types above spell out.
    let api = unsafe {
        Api {
            inc_ref: std::mem::transmute::<*mut c_void, RefFn>(sym(c"TVMFFIObjectIncRef")?),
            dec_ref: std::mem::transmute::<*mut c_void, RefFn>(sym(c"TVMFFIObjectDecRef")?),
        }
    };
    let _ = API.set(api);
    Ok(())
}

/// What the observer learns of one object from its deleter (see
/// [`watch`]): set by whichever thread runs the deleter.
#[derive(Default)]
pub(super) struct Watch {
    /// The deleter ran with the weak bit: the storage is freed (or, in
    /// upstream's dealloc handshake, freed before the step ends: §3.1).
    pub(super) freed: AtomicBool,
    /// ... on a thread that did not hold the GIL.
    pub(super) freed_without_gil: AtomicBool,
    /// The deleter's strong phase ran (the object is destroyed).
    destroyed: AtomicBool,
}

/// The original deleter of each watched object and its [`Watch`], by
/// address. An entry goes when the storage is freed, so a later object at
/// the same address is watched afresh.
static WATCHED: Mutex<Vec<(usize, ObjDeleter, Arc<Watch>)>> = Mutex::new(Vec::new());

fn watched() -> std::sync::MutexGuard<'static, Vec<(usize, ObjDeleter, Arc<Watch>)>> {
    WATCHED.lock().unwrap_or_else(|e| e.into_inner())
}

/// A deleter call the observer did not pass on, because passing it on
/// would destroy or free memory a second time: the library's own fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stray {
    /// The deleter ran for an address whose storage was already freed (no
    /// watched object is there): a use after free.
    AfterFree { addr: usize, flags: i32 },
    /// The strong phase ran a second time on a destroyed object.
    DestroyedTwice { addr: usize },
}

static STRAY: Mutex<Vec<Stray>> = Mutex::new(Vec::new());

/// The deleter calls not passed on since the last call.
pub(super) fn take_stray() -> Vec<Stray> {
    std::mem::take(&mut *STRAY.lock().unwrap_or_else(|e| e.into_inner()))
}

fn stray(s: Stray) {
    STRAY.lock().unwrap_or_else(|e| e.into_inner()).push(s);
}

/// The deleter the observer puts in a watched object's header: records
/// the event, then calls the object's own deleter with the same flags. A
/// call that would destroy a destroyed object, or reach a freed one, is
/// recorded ([`take_stray`]) and not passed on, so the fault is reported at
/// the step that made it rather than as a crash.
///
/// # Safety
/// Called by the library (object.h `DecRef`/`DecWeakRef`) with a watched
/// object's header and the deleter flags.
unsafe extern "C" fn watching_deleter(obj: *mut c_void, mut flags: i32) {
    let addr = obj as usize;
    let (orig, w) = {
        let mut t = watched();
        let Some(i) = t.iter().position(|e| e.0 == addr) else {
            drop(t);
            stray(Stray::AfterFree { addr, flags });
            return;
        };
        if flags & DELETE_STRONG != 0 && t[i].2.destroyed.swap(true, Ordering::SeqCst) {
            stray(Stray::DestroyedTwice { addr });
            flags &= !DELETE_STRONG;
            if flags == 0 {
                return;
            }
        }
        if flags & DELETE_WEAK != 0 {
            let (_, d, w) = t.swap_remove(i);
            (d, Some(w))
        } else {
            (t[i].1, None)
        }
    };
    if let Some(w) = &w {
        // SAFETY: PyGILState_Check may be called on any thread.
        let gil = unsafe { pyo3::ffi::PyGILState_Check() } != 0;
        w.freed_without_gil.store(!gil, Ordering::SeqCst);
    }
    // SAFETY: the object's own deleter, called as the library would have.
    unsafe { orig(obj, flags) };
    if let Some(w) = w {
        w.freed.store(true, Ordering::SeqCst);
    }
}

/// Watch the object at `addr`: put [`watching_deleter`] in its header, so
/// the observer learns when its storage is freed without keeping it
/// allocated (a weak reference of its own would change which flow of the
/// dealloc handshake upstream takes, and on which thread storage dies).
///
/// # Safety
/// The object at `addr` is alive and not watched yet, and no other thread
/// can reach it (just created, the GIL held).
pub(super) unsafe fn watch(addr: usize) -> Arc<Watch> {
    // SAFETY: the object is alive (the contract).
    let slot = unsafe { harness::deleter_slot(addr) } as *mut Option<ObjDeleter>;
    // SAFETY: the header's deleter pointer (c_api.h `TVMFFIObject`); nobody
    // else reads or writes it now (the contract).
    let orig = unsafe { std::ptr::read(slot) };
    let w = Arc::new(Watch::default());
    if let Some(d) = orig {
        watched().push((addr, d, w.clone()));
        // SAFETY: as above.
        unsafe { std::ptr::write(slot, Some(watching_deleter as ObjDeleter)) };
    }
    w
}
