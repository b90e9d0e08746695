//! Allocation failures on demand (`oom K`, contract §4.4): the K-th
//! allocation made through Python's memory and object allocators
//! (`PyMem_Malloc`, `PyObject_Malloc` and their `Calloc`/`Realloc`) while
//! a step runs returns NULL, as when memory runs out. SQLite's
//! out-of-memory testing is the model: each allocation of a step made to
//! fail in turn, and after each the library must report the error and
//! keep its accounts (`pytie sweep`).
//!
//! The hook wraps the allocators in place (`PyMem_SetAllocator`, the hook
//! CPython's own `_testcapi.set_nomemory` uses) the first time it is
//! armed and stays, passing every call through when nothing is armed (one
//! atomic load). Unlike `_testcapi`, it says afterwards whether the K-th
//! allocation came at all (`pytie sweep` stops there) and leaves the raw
//! domain alone (allocations without the GIL: thread states, the
//! interpreter's own start-up). Allocations by C++ or Rust code (native
//! objects, pytie's registries) are not counted.
//!
//! A layer of its own beside the interpreter's: it knows CPython and
//! nothing of the runtime or the backends, which arm it around a step.

use std::ffi::c_void;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use pyo3::Python;
use pyo3::ffi::{self, PyMemAllocatorDomain, PyMemAllocatorEx};

/// The allocation to fail (1-based), 0 when none is armed.
static TARGET: AtomicU32 = AtomicU32::new(0);
/// Allocations counted since [`around`] armed them.
static COUNT: AtomicU32 = AtomicU32::new(0);
/// The armed allocation came and failed.
static FIRED: AtomicBool = AtomicBool::new(false);
/// Armed by [`around`] with `in_library`: count only inside [`library`].
static SCOPED: AtomicBool = AtomicBool::new(false);
/// Inside a [`library`] scope.
static INSIDE: AtomicBool = AtomicBool::new(false);

/// The allocators the hook wraps, mem's then obj's, each the `ctx` of the
/// hook that wraps it.
struct Wrapped([PyMemAllocatorEx; 2]);
// SAFETY: plain function pointers and CPython's context pointers, written
// once before the hook is installed and only read after.
unsafe impl Send for Wrapped {}
// SAFETY: as above.
unsafe impl Sync for Wrapped {}

static WRAPPED: OnceLock<Box<Wrapped>> = OnceLock::new();

/// Run `f`, one step, with the `k`-th allocation (from 1) failing if
/// `armed` is `Some(k)`; with it, whether the armed allocation came.
/// Installs the hook the first time. The GIL is held (`py`).
///
/// `in_library`: count only the allocations made inside [`library`]
/// scopes. A backend that drives a library through Python builds its own
/// arguments and reads its results outside them, so the failure lands in
/// the library's code (and in the interpreter's calling machinery on the
/// way in), never in the backend's own marshalling.
pub fn around<R>(
    py: Python<'_>,
    armed: Option<u32>,
    in_library: bool,
    f: impl FnOnce() -> R,
) -> (R, Option<bool>) {
    let Some(k) = armed else {
        return (f(), None);
    };
    install(py);
    COUNT.store(0, Ordering::Relaxed);
    FIRED.store(false, Ordering::Relaxed);
    SCOPED.store(in_library, Ordering::Relaxed);
    TARGET.store(k, Ordering::Release);
    let r = f();
    TARGET.store(0, Ordering::Release);
    (r, Some(FIRED.load(Ordering::Acquire)))
}

/// Run `f`, a call into the library under test: the allocations it makes
/// count towards an [`around`] armed with `in_library`.
pub fn library<R>(f: impl FnOnce() -> R) -> R {
    let outer = INSIDE.swap(true, Ordering::AcqRel);
    let r = f();
    INSIDE.store(outer, Ordering::Release);
    r
}

/// An allocation failure is armed.
pub fn armed() -> bool {
    TARGET.load(Ordering::Acquire) != 0
}

fn install(_py: Python<'_>) {
    WRAPPED.get_or_init(|| {
        let domains = [
            PyMemAllocatorDomain::PYMEM_DOMAIN_MEM,
            PyMemAllocatorDomain::PYMEM_DOMAIN_OBJ,
        ];
        // SAFETY: PyMemAllocatorEx is plain data (a context pointer and
        // optional function pointers); zeroed is all-None.
        let mut old: Box<Wrapped> = Box::new(Wrapped(unsafe { std::mem::zeroed() }));
        for (slot, d) in old.0.iter_mut().zip(domains) {
            // SAFETY: GIL held; fills `slot` with the domain's allocator.
            unsafe { ffi::PyMem_GetAllocator(d, slot) };
        }
        for (slot, d) in old.0.iter().zip(domains) {
            let mut hook = PyMemAllocatorEx {
                ctx: (slot as *const PyMemAllocatorEx).cast_mut().cast(),
                malloc: Some(hook_malloc),
                calloc: Some(hook_calloc),
                realloc: Some(hook_realloc),
                free: Some(hook_free),
            };
            // SAFETY: GIL held; the hook passes every call to the allocator
            // it wraps (kept alive for the process in WRAPPED), so blocks
            // made before it are freed by the same allocator after.
            unsafe { ffi::PyMem_SetAllocator(d, &mut hook) };
        }
        old
    });
}

/// Count one allocation; `true` when it is the one to fail.
fn fails_now() -> bool {
    let target = TARGET.load(Ordering::Acquire);
    if target == 0 || (SCOPED.load(Ordering::Relaxed) && !INSIDE.load(Ordering::Acquire)) {
        return false;
    }
    let n = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
    if n == target {
        FIRED.store(true, Ordering::Release);
        if std::env::var_os("PYTIE_OOM_BACKTRACE").is_some() {
            // Where the failed allocation came from, to classify a finding
            // (the C frames named from libpython's and the library's
            // symbols). Rust's allocator, not the hooked one.
            eprintln!(
                "pytie: allocation {n} fails here:\n{}",
                std::backtrace::Backtrace::force_capture()
            );
        }
        return true;
    }
    false
}

/// The allocator a hook wraps.
///
/// # Safety
/// `ctx` is the context [`install`] gave the hook: an allocator in WRAPPED.
unsafe fn wrapped<'a>(ctx: *mut c_void) -> &'a PyMemAllocatorEx {
    // SAFETY: the caller's contract; WRAPPED lives for the process.
    unsafe { &*ctx.cast::<PyMemAllocatorEx>() }
}

extern "C" fn hook_malloc(ctx: *mut c_void, size: libc::size_t) -> *mut c_void {
    if fails_now() {
        return std::ptr::null_mut();
    }
    // SAFETY: CPython passes the context the hook was installed with.
    let a = unsafe { wrapped(ctx) };
    a.malloc.map_or(std::ptr::null_mut(), |f| f(a.ctx, size))
}

extern "C" fn hook_calloc(ctx: *mut c_void, n: libc::size_t, size: libc::size_t) -> *mut c_void {
    if fails_now() {
        return std::ptr::null_mut();
    }
    // SAFETY: as in hook_malloc.
    let a = unsafe { wrapped(ctx) };
    a.calloc.map_or(std::ptr::null_mut(), |f| f(a.ctx, n, size))
}

extern "C" fn hook_realloc(ctx: *mut c_void, p: *mut c_void, size: libc::size_t) -> *mut c_void {
    if fails_now() {
        return std::ptr::null_mut();
    }
    // SAFETY: as in hook_malloc.
    let a = unsafe { wrapped(ctx) };
    a.realloc
        .map_or(std::ptr::null_mut(), |f| f(a.ctx, p, size))
}

extern "C" fn hook_free(ctx: *mut c_void, p: *mut c_void) {
    // SAFETY: as in hook_malloc.
    let a = unsafe { wrapped(ctx) };
    if let Some(f) = a.free {
        f(a.ctx, p)
    }
}
