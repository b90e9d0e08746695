//! pytie's C++ harness (`harness.cc`), built by
//! `scripts/build-tvmffi-harness` against the headers of the venv's own
//! build and linked against its libtvm_ffi.so (the setup scripts build it).
//! Holders are C++ `ObjectRef`s, weak slots `WeakObjectPtr<Object>`s, the
//! foreign release a `std::thread`; every count change a step makes outside
//! Python runs upstream's inline C++ (object.h, any.h) as compiled from
//! upstream's headers, never a Rust copy of it. Loading the library also
//! registers the FFI functions the glue calls (`pytie.tvmffi.ret`, `take`,
//! `lock`, `new_legacy`).
//!
//! Every function taking an object's address is an `unsafe fn`: the address
//! is only an integer, and the caller states which reference keeps the
//! memory behind it allocated.

use std::ffi::{CStr, CString, c_void};
use std::path::Path;
use std::sync::OnceLock;

/// The harness's source, as this binary was built with it: a harness built
/// from another source is refused (rebuild it with the setup script).
const SOURCE: &str = include_str!("harness.cc");

type Ptr = *mut c_void;

/// The harness's C functions (harness.cc, `PYTIE_EXPORT`).
struct Fns {
    holder_new: unsafe extern "C" fn(Ptr) -> Ptr,
    holder_get: unsafe extern "C" fn(Ptr) -> Ptr,
    holder_free: unsafe extern "C" fn(Ptr),
    holder_free_foreign: unsafe extern "C" fn(Ptr),
    take_last: unsafe extern "C" fn() -> Ptr,
    weak_new: unsafe extern "C" fn(Ptr) -> Ptr,
    weak_free: unsafe extern "C" fn(Ptr),
    counts: unsafe extern "C" fn(Ptr, *mut u32, *mut u32),
    type_index: unsafe extern "C" fn(Ptr) -> i32,
    tag_word: unsafe extern "C" fn(Ptr) -> usize,
    field: unsafe extern "C" fn(Ptr, i32, u64, *mut Ptr) -> i32,
    clear_field: unsafe extern "C" fn(Ptr, i32, u64),
    cpp_field_offset: unsafe extern "C" fn() -> u64,
    finalizers_run: unsafe extern "C" fn() -> u64,
    deleter_slot: unsafe extern "C" fn(Ptr) -> Ptr,
    set_legacy_field_offset: unsafe extern "C" fn(u64),
}

static FNS: OnceLock<Fns> = OnceLock::new();

fn fns() -> &'static Fns {
    FNS.get()
        .expect("the C++ harness is loaded before any object exists")
}

/// The harness of the venv at `venv`, its path.
fn path(venv: &Path) -> std::path::PathBuf {
    venv.join(".pytie-harness/libpytie_tvmffi_harness.so")
}

/// Load the harness of `venv` (once per process), after `import tvm_ffi`
/// loaded its libtvm_ffi.so, which the harness shares.
pub(super) fn load(venv: &Path) -> Result<(), String> {
    if FNS.get().is_some() {
        return Ok(());
    }
    let lib = path(venv);
    let rebuild = format!(
        "run scripts/build-tvmffi-harness {} (scripts/setup-tvmffi and setup-tvmffi-tied do)",
        venv.display()
    );
    let built_from = std::fs::read_to_string(venv.join(".pytie-harness/harness.cc"))
        .map_err(|_| format!("no C++ harness in {}: {rebuild}", venv.display()))?;
    if built_from != SOURCE {
        return Err(format!(
            "the C++ harness in {} was built from another harness.cc: {rebuild}",
            venv.display()
        ));
    }
    let c = CString::new(lib.to_string_lossy().into_owned()).map_err(|e| e.to_string())?;
    // SAFETY: loading runs the harness's static initialisers, which register
    // FFI functions in the libtvm_ffi already loaded (its DT_NEEDED).
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if h.is_null() {
        // SAFETY: dlerror returns a NUL-terminated message or NULL.
        let why = unsafe {
            let e = libc::dlerror();
            if e.is_null() {
                String::new()
            } else {
                CStr::from_ptr(e).to_string_lossy().into_owned()
            }
        };
        return Err(format!("cannot load {}: {why}", lib.display()));
    }
    let sym = |name: &CStr| {
        // SAFETY: `h` is a live handle; `name` is NUL-terminated.
        let p = unsafe { libc::dlsym(h, name.as_ptr()) };
        if p.is_null() {
            Err(format!("{}: no symbol {name:?}: {rebuild}", lib.display()))
        } else {
            Ok(p)
        }
    };
    macro_rules! f {
        ($name:literal, $t:ty) => {
            // SAFETY: each symbol has the C signature harness.cc declares,
            // which the field's function pointer type spells out.
            unsafe { std::mem::transmute::<*mut c_void, $t>(sym($name)?) }
        };
    }
    let fns = Fns {
        holder_new: f!(c"pytie_holder_new", unsafe extern "C" fn(Ptr) -> Ptr),
        holder_get: f!(c"pytie_holder_get", unsafe extern "C" fn(Ptr) -> Ptr),
        holder_free: f!(c"pytie_holder_free", unsafe extern "C" fn(Ptr)),
        holder_free_foreign: f!(c"pytie_holder_free_foreign", unsafe extern "C" fn(Ptr)),
        take_last: f!(c"pytie_take_last", unsafe extern "C" fn() -> Ptr),
        weak_new: f!(c"pytie_weak_new", unsafe extern "C" fn(Ptr) -> Ptr),
        weak_free: f!(c"pytie_weak_free", unsafe extern "C" fn(Ptr)),
        counts: f!(
            c"pytie_counts",
            unsafe extern "C" fn(Ptr, *mut u32, *mut u32)
        ),
        type_index: f!(c"pytie_type_index", unsafe extern "C" fn(Ptr) -> i32),
        tag_word: f!(c"pytie_tag_word", unsafe extern "C" fn(Ptr) -> usize),
        field: f!(
            c"pytie_field",
            unsafe extern "C" fn(Ptr, i32, u64, *mut Ptr) -> i32
        ),
        clear_field: f!(c"pytie_clear_field", unsafe extern "C" fn(Ptr, i32, u64)),
        cpp_field_offset: f!(c"pytie_cpp_field_offset", unsafe extern "C" fn() -> u64),
        finalizers_run: f!(c"pytie_finalizers_run", unsafe extern "C" fn() -> u64),
        deleter_slot: f!(c"pytie_deleter_slot", unsafe extern "C" fn(Ptr) -> Ptr),
        set_legacy_field_offset: f!(c"pytie_set_legacy_field_offset", unsafe extern "C" fn(u64)),
    };
    let _ = FNS.set(fns);
    Ok(())
}

/// A C++ holder (a boxed `ObjectRef`): the box's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Holder(pub(super) usize);

/// A C++ weak slot (a boxed `WeakObjectPtr<Object>`): the box's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Weak(pub(super) usize);

/// A new holder of the object at `addr`: `ObjectRef` from the pointer (+1).
///
/// # Safety
/// The object at `addr` is alive for the call (a reference the caller keeps).
pub(super) unsafe fn hold(addr: usize) -> Holder {
    // SAFETY: the caller's contract.
    Holder(unsafe { (fns().holder_new)(addr as Ptr) } as usize)
}

/// The holder `pytie.tvmffi.take` made since the last call, if any (made
/// even when the call's Python result could not be, §4.4). The caller
/// owns it.
pub(super) fn take_last() -> Option<Holder> {
    // SAFETY: no arguments; an exchange of the harness's atomic slot.
    let p = unsafe { (fns().take_last)() };
    (!p.is_null()).then_some(Holder(p as usize))
}

/// The object a holder keeps.
///
/// # Safety
/// `h` is a holder not yet released.
pub(super) unsafe fn held(h: Holder) -> usize {
    // SAFETY: the caller's contract.
    unsafe { (fns().holder_get)(h.0 as Ptr) as usize }
}

/// Drop a holder on this thread (`~ObjectRef`).
///
/// # Safety
/// `h` is a holder not yet released; it is not used after.
pub(super) unsafe fn release(h: Holder) {
    // SAFETY: the caller's contract.
    unsafe { (fns().holder_free)(h.0 as Ptr) };
}

/// Drop a holder on a new C++ thread and wait for it. Call without the
/// GIL: the thread may run a deleter that takes it.
///
/// # Safety
/// As [`release`].
pub(super) unsafe fn release_foreign(h: Holder) {
    // SAFETY: the caller's contract.
    unsafe { (fns().holder_free_foreign)(h.0 as Ptr) };
}

/// A new weak slot on the object at `addr` (`WeakObjectPtr<Object>`).
///
/// # Safety
/// The object at `addr` is alive for the call (a reference the caller keeps).
pub(super) unsafe fn weak(addr: usize) -> Weak {
    // SAFETY: the caller's contract.
    Weak(unsafe { (fns().weak_new)(addr as Ptr) } as usize)
}

/// Drop a weak slot (`~WeakObjectPtr`): at weak 0 the deleter frees the
/// storage.
///
/// # Safety
/// `w` is a weak slot not yet dropped; it is not used after.
pub(super) unsafe fn unweak(w: Weak) {
    // SAFETY: the caller's contract.
    unsafe { (fns().weak_free)(w.0 as Ptr) };
}

/// (strong, weak) of an object: `Object::use_count()` and the header's
/// weak half.
///
/// # Safety
/// The storage of the object at `addr` is allocated for the call.
pub(super) unsafe fn counts(addr: usize) -> (u32, u32) {
    let (mut s, mut w) = (0, 0);
    // SAFETY: the caller's contract; two out-slots.
    unsafe { (fns().counts)(addr as Ptr, &mut s, &mut w) };
    (s, w)
}

/// `Object::type_index()`.
///
/// # Safety
/// The object at `addr` is alive.
pub(super) unsafe fn type_index(addr: usize) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { (fns().type_index)(addr as Ptr) }
}

/// The tag word (`TVMFFIPyPeekWord(TVMFFIPyHeader(body))`).
///
/// # Safety
/// The storage of the object at `addr` is allocated and has the Python
/// allocator's 16-byte prefix (tying on, not a legacy object).
pub(super) unsafe fn tag_word(addr: usize) -> usize {
    // SAFETY: the caller's contract.
    unsafe { (fns().tag_word)(addr as Ptr) }
}

/// Where an object keeps its one field (harness.cc `Slot`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    /// An `Any` at this byte offset of the object.
    AnyAt(usize),
    /// Element 0 of a `List`.
    ListItem,
    /// The value under the key "x" of a `Dict`.
    DictValue,
}

impl Slot {
    fn code(self) -> (i32, u64) {
        match self {
            Slot::AnyAt(off) => (0, off as u64),
            Slot::ListItem => (1, 0),
            Slot::DictValue => (2, 0),
        }
    }
}

/// The field of a live object: its type index and the object it holds (0
/// unless an object).
///
/// # Safety
/// The object at `addr` is alive and keeps its field at `slot`.
pub(super) unsafe fn field(addr: usize, slot: Slot) -> (i32, usize) {
    let mut o: Ptr = std::ptr::null_mut();
    let (code, off) = slot.code();
    // SAFETY: the caller's contract; one out-slot.
    let t = unsafe { (fns().field)(addr as Ptr, code, off, &mut o) };
    (t, o as usize)
}

/// `obj->x = nullptr` on the field at `slot` (a List's or Dict's through
/// its own `Set`).
///
/// # Safety
/// The object at `addr` is alive, keeps its field at `slot`, and nothing
/// else reads or writes that field meanwhile.
pub(super) unsafe fn clear_field(addr: usize, slot: Slot) {
    let (code, off) = slot.code();
    // SAFETY: the caller's contract.
    unsafe { (fns().clear_field)(addr as Ptr, code, off) };
}

/// `__del__` calls counted by `pytie.tvmffi.finalized` so far.
pub(super) fn finalizers_run() -> u64 {
    // SAFETY: reads an atomic counter.
    unsafe { (fns().finalizers_run)() }
}

/// Where the harness's C++ type keeps `x`.
pub(super) fn cpp_field_offset() -> usize {
    // SAFETY: returns a constant.
    unsafe { (fns().cpp_field_offset)() as usize }
}

/// The address of the deleter pointer in an object's header.
///
/// # Safety
/// The object at `addr` is alive.
pub(super) unsafe fn deleter_slot(addr: usize) -> usize {
    // SAFETY: the caller's contract.
    unsafe { (fns().deleter_slot)(addr as Ptr) as usize }
}

/// Where `pytie.tvmffi.new_legacy` puts the field `x` (`Node`'s offset).
pub(super) fn set_legacy_field_offset(offset: usize) {
    // SAFETY: stores an integer.
    unsafe { (fns().set_legacy_field_offset)(offset as u64) };
}
