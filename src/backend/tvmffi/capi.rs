//! The C ABI (include/tvm/ffi/c_api.h): the C API functions the backend
//! calls, resolved with `dlopen`/`dlsym` in the copy of libtvm_ffi.so the
//! import loaded; raw reads of an object's header; and the two FFI
//! functions pytie registers with `TVMFFIFunctionCreate`
//! (`pytie.tvmffi.ret`, `pytie.tvmffi.take`).
//!
//! Everything here that takes an object's address is an `unsafe fn`: the
//! address is only an integer, and the caller states which reference keeps
//! the memory behind it allocated.

use std::ffi::{CStr, c_char, c_void};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex, OnceLock};

/// `TVMFFIAny`: type index, padding, 8-byte value.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct FfiAny {
    pub(super) type_index: i32,
    pub(super) pad: u32,
    pub(super) v: u64,
}
pub(super) const ANY_NONE: FfiAny = FfiAny {
    type_index: 0,
    pad: 0,
    v: 0,
};
pub(super) const K_INT: i32 = 1;
pub(super) const K_STATIC_OBJECT_BEGIN: i32 = 64;
/// Bits of `combined_ref_count`: strong in the low half, weak in the high.
const WEAK_ONE: u64 = 1 << 32;
/// Deleter flag: destroy the object (strong count reached 0).
const DELETE_STRONG: i32 = 1;
/// Deleter flag: free the storage.
const DELETE_WEAK: i32 = 2;

#[repr(C)]
struct ByteArray {
    data: *const c_char,
    size: usize,
}

pub(super) type SafeCall =
    unsafe extern "C" fn(*mut c_void, *const FfiAny, i32, *mut FfiAny) -> i32;
type FnDeleter = unsafe extern "C" fn(*mut c_void);
type ObjDeleter = unsafe extern "C" fn(*mut c_void, i32);

type RefFn = unsafe extern "C" fn(*mut c_void) -> i32;
type CreateFn = unsafe extern "C" fn(*mut c_void, SafeCall, FnDeleter, *mut *mut c_void) -> i32;
type SetGlobalFn = unsafe extern "C" fn(*const ByteArray, *mut c_void, i32) -> i32;
type ToOwnedFn = unsafe extern "C" fn(*const FfiAny, *mut FfiAny) -> i32;
type RaiseFn = unsafe extern "C" fn(*const c_char, *const c_char);

/// The C API functions the backend calls (c_api.h signatures).
struct Api {
    inc_ref: RefFn,
    dec_ref: RefFn,
    function_create: CreateFn,
    function_set_global: SetGlobalFn,
    any_view_to_owned: ToOwnedFn,
    error_set_raised: RaiseFn,
}

static API: OnceLock<Api> = OnceLock::new();

/// The object `take` received, handed from the FFI callback to the backend.
pub(super) static TAKEN: AtomicUsize = AtomicUsize::new(0);

fn api() -> &'static Api {
    API.get()
        .expect("tvm-ffi's C API is resolved before any object exists")
}

/// `TVMFFIObjectIncRef`.
///
/// # Safety
/// `addr` is a live tvm-ffi object on which the caller owns (or is
/// handed) a strong reference.
pub(super) unsafe fn inc_ref(addr: usize) {
    // SAFETY: the caller's contract: a live object.
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

/// The header's `combined_ref_count`, read atomically as the library does.
///
/// # Safety
/// The storage of the object at `addr` is allocated for the call (a strong
/// or weak reference someone keeps).
unsafe fn combined(addr: usize) -> u64 {
    // SAFETY: the count is the first field of the header (c_api.h
    // `TVMFFIObject`), 8-aligned; the caller keeps the storage allocated.
    // The reference lives only for this load.
    unsafe { (*(addr as *const AtomicU64)).load(Ordering::Acquire) }
}

/// (strong, weak) of an object.
///
/// # Safety
/// As [`combined`]: the object's storage is allocated for the call.
pub(super) unsafe fn counts(addr: usize) -> (u32, u32) {
    // SAFETY: the caller's contract.
    let c = unsafe { combined(addr) };
    (c as u32, (c >> 32) as u32)
}

/// The type index in an object's header.
///
/// # Safety
/// The object at `addr` is alive (its header is initialised).
pub(super) unsafe fn type_index(addr: usize) -> i32 {
    // SAFETY: the header's type index is at offset 8 (c_api.h).
    unsafe { std::ptr::read((addr + 8) as *const i32) }
}

/// `Object::IncWeakRef` (object.h, inline there, not exported).
///
/// # Safety
/// The object at `addr` is alive; the caller then owns a weak reference,
/// which keeps its storage allocated until [`dec_weak`].
pub(super) unsafe fn inc_weak(addr: usize) {
    // SAFETY: a live object's header; the reference lives for this add.
    unsafe { (*(addr as *const AtomicU64)).fetch_add(WEAK_ONE, Ordering::Relaxed) };
}

/// `Object::DecWeakRef` (object.h): at weak 0 the deleter frees storage.
///
/// # Safety
/// The caller gives up a weak reference it owns on the object at `addr`;
/// after the call the address may be freed and must not be read.
pub(super) unsafe fn dec_weak(addr: usize) {
    // SAFETY: the caller's weak reference keeps the storage allocated for
    // this subtraction; the reference does not outlive it.
    let before = unsafe { (*(addr as *const AtomicU64)).fetch_sub(WEAK_ONE, Ordering::Release) };
    if before == WEAK_ONE {
        fence(Ordering::Acquire);
        // SAFETY: strong and weak are both 0: nobody else can reach the
        // object; the deleter pointer is at offset 16 of the header.
        unsafe {
            let d = std::ptr::read((addr + 16) as *const Option<ObjDeleter>);
            if let Some(d) = d {
                d(addr as *mut c_void, DELETE_WEAK);
            }
        }
    }
}

/// `Object::TryPromoteWeakPtr` (object.h 274-302, inline there): strong
/// += 1 only while strong > 0, by compare-and-swap.
///
/// # Safety
/// The storage of the object at `addr` is allocated (the caller owns a
/// weak reference on it); on `true` the caller owns a new strong one.
pub(super) unsafe fn try_promote(addr: usize) -> bool {
    // SAFETY: the caller's weak reference keeps the header allocated.
    let c = unsafe { &*(addr as *const AtomicU64) };
    let mut old = c.load(Ordering::Relaxed);
    while old & 0xFFFF_FFFF != 0 {
        match c.compare_exchange_weak(old, old + 1, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(now) => old = now,
        }
    }
    false
}

/// Set the FFI error a callback returns -1 with.
fn raise(msg: &CStr) {
    // SAFETY: both strings are NUL-terminated and live for the call.
    unsafe { (api().error_set_raised)(c"RuntimeError".as_ptr(), msg.as_ptr()) };
}

/// The one int argument of a registered function, or `None` (with the
/// FFI error `usage` raised) when the call has anything else.
///
/// # Safety
/// `args` points at `n` argument views (the library's call contract).
unsafe fn int_arg(args: *const FfiAny, n: i32, usage: &CStr) -> Option<u64> {
    // SAFETY: the caller's contract; the first view is read only if n == 1.
    if n == 1 && unsafe { (*args).type_index } == K_INT {
        // SAFETY: as above.
        Some(unsafe { (*args).v })
    } else {
        raise(usage);
        None
    }
}

/// The `Any` of the object at `addr`, as a result slot holds it.
///
/// # Safety
/// The object at `addr` is alive (its header is initialised).
unsafe fn object_any(addr: usize) -> FfiAny {
    FfiAny {
        // SAFETY: the caller's contract.
        type_index: unsafe { type_index(addr) },
        pad: 0,
        v: addr as u64,
    }
}

/// Set the `Any` field at `field` to None and release the strong reference
/// it held, as C++ `obj->x = nullptr` does.
///
/// # Safety
/// `field` is the `Any` field of an object whose strong reference it holds
/// (if any) is its own, and nothing else reads or writes it meanwhile.
pub(super) unsafe fn release_field(field: *mut FfiAny) {
    // SAFETY: the caller's contract.
    let old = unsafe { std::ptr::replace(field, ANY_NONE) };
    if old.type_index >= K_STATIC_OBJECT_BEGIN {
        // SAFETY: the field owned this strong reference.
        unsafe { dec_ref(old.v as usize) };
    }
}

/// `pytie.tvmffi.ret(addr)`: a C++ function returning a held object. The
/// caller receives a new strong reference (IncRef, then the result).
///
/// # Safety
/// Called by the library with `n` argument views at `args` and a result
/// slot `out`; the int argument is the address of an object a holder keeps
/// alive (the backend passes only those).
pub(super) unsafe extern "C" fn ret_call(
    _self: *mut c_void,
    args: *const FfiAny,
    n: i32,
    out: *mut FfiAny,
) -> i32 {
    let usage = c"pytie.tvmffi.ret takes one int: the address of a held object";
    // SAFETY: the library passes `n` argument views and a result slot;
    // the int argument is the address of an object a holder keeps alive.
    unsafe {
        let Some(addr) = int_arg(args, n, usage) else {
            return -1;
        };
        inc_ref(addr as usize);
        *out = object_any(addr as usize);
    }
    0
}

/// `pytie.tvmffi.take(obj)`: a C++ function storing its argument. With an
/// rvalue ref (`x._move()`), taking it steals the wrapper's +1 and NULLs its
/// handle, as any C++ callee does.
///
/// # Safety
/// Called by the library with `n` argument views at `args`.
pub(super) unsafe extern "C" fn take_call(
    _self: *mut c_void,
    args: *const FfiAny,
    n: i32,
    _out: *mut FfiAny,
) -> i32 {
    if n != 1 {
        raise(c"pytie.tvmffi.take takes one object");
        return -1;
    }
    let mut owned = ANY_NONE;
    // SAFETY: `args` points at one argument view; `owned` is a result slot.
    let rc = unsafe { (api().any_view_to_owned)(args, &mut owned) };
    if rc != 0 {
        return rc; // the library raised (e.g. "RValueRef already moved")
    }
    if owned.type_index < K_STATIC_OBJECT_BEGIN {
        raise(c"pytie.tvmffi.take takes an object");
        return -1;
    }
    TAKEN.store(owned.v as usize, Ordering::SeqCst);
    0
}

/// `pytie.tvmffi.lock(addr)`: a C++ function returning `weak.lock()` of
/// a weak reference it keeps (object.h `WeakObjectPtr::lock`): the object
/// with a new strong reference the caller receives, or None when it died.
///
/// # Safety
/// Called by the library with `n` argument views at `args` and a result
/// slot `out`; the int argument is the address of an object a weak slot
/// keeps allocated (the backend passes only those).
pub(super) unsafe extern "C" fn lock_call(
    _self: *mut c_void,
    args: *const FfiAny,
    n: i32,
    out: *mut FfiAny,
) -> i32 {
    let usage = c"pytie.tvmffi.lock takes one int: the address of a weakly held object";
    // SAFETY: as `ret_call`; the weak slot keeps the header allocated, and
    // a promoted object is alive.
    unsafe {
        let Some(addr) = int_arg(args, n, usage) else {
            return -1;
        };
        let addr = addr as usize;
        *out = if try_promote(addr) {
            object_any(addr)
        } else {
            ANY_NONE
        };
    }
    0
}

/// Offset of the field `x` in a legacy-layout object (the `Node` layout),
/// set before `pytie.tvmffi.new_legacy` is registered.
pub(super) static LEGACY_FIELD_OFFSET: AtomicUsize = AtomicUsize::new(0);

/// `pytie.tvmffi.new_legacy(type_index)`: what an extension compiled
/// against the published (pre-tying) headers does: a `Node`-layout object
/// allocated with plain `malloc`, no allocation prefix (contract §2.1),
/// strong 1 and weak 1, its own deleter; returned to Python, which
/// receives its one strong reference.
///
/// # Safety
/// Called by the library with `n` argument views at `args` and a result
/// slot `out`.
pub(super) unsafe extern "C" fn new_legacy_call(
    _self: *mut c_void,
    args: *const FfiAny,
    n: i32,
    out: *mut FfiAny,
) -> i32 {
    // SAFETY: the library passes `n` argument views and a result slot.
    let Some(ti) = (unsafe {
        int_arg(
            args,
            n,
            c"pytie.tvmffi.new_legacy takes one int: the type index",
        )
    }) else {
        return -1;
    };
    let ti = ti as i32;
    let off = LEGACY_FIELD_OFFSET.load(Ordering::Relaxed);
    let size = off + std::mem::size_of::<FfiAny>();
    // SAFETY: calloc of a non-zero size; the block is zeroed (field None).
    let p = unsafe { libc::calloc(1, size) }.cast::<u8>();
    if p.is_null() {
        raise(c"pytie.tvmffi.new_legacy: out of memory");
        return -1;
    }
    // SAFETY: `p` is a fresh block of `size` bytes, 16-aligned by malloc:
    // the header (c_api.h `TVMFFIObject`: count, type index, padding,
    // deleter) and the zeroed field fit in it.
    unsafe {
        (*(p as *const AtomicU64)).store(1 | WEAK_ONE, Ordering::Relaxed);
        std::ptr::write(p.add(8).cast::<i32>(), ti);
        std::ptr::write(p.add(16).cast::<Option<ObjDeleter>>(), Some(legacy_deleter));
        *out = FfiAny {
            type_index: ti,
            pad: 0,
            v: p as u64,
        };
    }
    0
}

/// A legacy-layout object's deleter: on strong 0 release the field, on
/// weak 0 free the body itself (memory.h 200-213: no `delete_space`).
///
/// # Safety
/// Called by the library with a legacy object made by [`new_legacy_call`]
/// and the deleter flags.
unsafe extern "C" fn legacy_deleter(obj: *mut c_void, flags: i32) {
    let addr = obj as usize;
    if flags & DELETE_STRONG != 0 {
        let field = (addr + LEGACY_FIELD_OFFSET.load(Ordering::Relaxed)) as *mut FfiAny;
        // SAFETY: the field is inside the object, which is destroyed now:
        // nobody else reads it.
        unsafe { release_field(field) };
    }
    if flags & DELETE_WEAK != 0 {
        // SAFETY: allocated by calloc in `new_legacy_call`; weak 0: last use.
        unsafe { libc::free(obj) };
    }
}

unsafe extern "C" fn no_delete(_self: *mut c_void) {}

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
            function_create: std::mem::transmute::<*mut c_void, CreateFn>(sym(
                c"TVMFFIFunctionCreate",
            )?),
            function_set_global: std::mem::transmute::<*mut c_void, SetGlobalFn>(sym(
                c"TVMFFIFunctionSetGlobal",
            )?),
            any_view_to_owned: std::mem::transmute::<*mut c_void, ToOwnedFn>(sym(
                c"TVMFFIAnyViewToOwnedAny",
            )?),
            error_set_raised: std::mem::transmute::<*mut c_void, RaiseFn>(sym(
                c"TVMFFIErrorSetRaisedFromCStr",
            )?),
        }
    };
    let _ = API.set(api);
    Ok(())
}

/// Register a Rust callback as the global FFI function `name`.
///
/// # Safety
/// `f` follows the `TVMFFISafeCallType` contract for every call the
/// library may make of it (it lives for the process: a function item).
pub(super) unsafe fn register(name: &str, f: SafeCall) -> Result<(), String> {
    let api = api();
    let mut h: *mut c_void = std::ptr::null_mut();
    // SAFETY: `f` (the caller's contract) and `no_delete` are valid for the
    // process; `h` receives the new function object (+1), which the global
    // table then shares.
    unsafe {
        if (api.function_create)(std::ptr::null_mut(), f, no_delete, &mut h) != 0 {
            return Err(format!("TVMFFIFunctionCreate failed for {name}"));
        }
        let n = ByteArray {
            data: name.as_ptr().cast(),
            size: name.len(),
        };
        let rc = (api.function_set_global)(&n, h, 1);
        (api.dec_ref)(h);
        if rc != 0 {
            return Err(format!("TVMFFIFunctionSetGlobal failed for {name}"));
        }
    }
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
}

/// The original deleter of each watched object and its [`Watch`], by
/// address. An entry goes when the storage is freed, so a later object at
/// the same address is watched afresh.
static WATCHED: Mutex<Vec<(usize, ObjDeleter, Arc<Watch>)>> = Mutex::new(Vec::new());

fn watched() -> std::sync::MutexGuard<'static, Vec<(usize, ObjDeleter, Arc<Watch>)>> {
    WATCHED.lock().unwrap_or_else(|e| e.into_inner())
}

/// The deleter the observer puts in a watched object's header: records
/// the event, then calls the object's own deleter with the same flags.
///
/// # Safety
/// Called by the library (object.h `DecRef`/`DecWeakRef`) with a watched
/// object's header and the deleter flags.
unsafe extern "C" fn watching_deleter(obj: *mut c_void, flags: i32) {
    let addr = obj as usize;
    let (orig, w) = {
        let mut t = watched();
        let i = t
            .iter()
            .position(|e| e.0 == addr)
            .expect("a watched object's deleter is in the table");
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
    let slot = (addr + 16) as *mut Option<ObjDeleter>;
    // SAFETY: the deleter pointer is at offset 16 of a live header (c_api.h
    // `TVMFFIObject`); nobody else reads or writes it now (the contract).
    let orig = unsafe { std::ptr::read(slot) };
    let w = Arc::new(Watch::default());
    if let Some(d) = orig {
        watched().push((addr, d, w.clone()));
        // SAFETY: as above.
        unsafe { std::ptr::write(slot, Some(watching_deleter as ObjDeleter)) };
    }
    w
}
