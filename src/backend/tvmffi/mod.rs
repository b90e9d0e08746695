//! apache-tvm-ffi, the library users ship, as a backend: the wheel from
//! PyPI (`scripts/setup-tvmffi` installs the pinned version into
//! `.venv/tvmffi`), loaded into the interpreter pytie embeds and driven
//! through its Cython wrappers and its C API.
//!
//! | step | how |
//! |---|---|
//! | `new V plain` / `dict` | `Node()` / `DictNode()`: `tvm_ffi.dataclasses.py_class` types with a mutable `x: Optional[Object]` field; `DictNode` instances have a `__dict__` |
//! | `ret V H` | `pytie.tvmffi.ret(addr)`: an FFI function registered from Rust with `TVMFFIFunctionCreate`; it IncRefs the held object and returns it, so it reaches Python through the library's return path (`make_ret_object`) |
//! | `echo V U` | `testing.echo(u)` |
//! | `get`/`set`/`unset` | `u.x`, `u.x = v`, `u.x = None` |
//! | `hold H V` / `release H` | `TVMFFIObjectIncRef` / `TVMFFIObjectDecRef` on `v.__chandle__()` |
//! | `move H V` | `pytie.tvmffi.take(v._move())`, a function registered from Rust that takes its argument with `TVMFFIAnyViewToOwnedAny` (which steals an rvalue ref's +1 and NULLs the wrapper's handle) into the holder |
//! | `release_foreign H` | `TVMFFIObjectDecRef` on a new OS thread, without the GIL |
//! | `clone`/`drop`/`cycle`/`collect` | plain Python |
//!
//! Not expressible, declared unsupported (the executor skips them and says
//! so): `weak`/`unweak`/`lock` (the C API has no weak references) and
//! `shutdown` (finalization cannot be started and undone in one process).
//!
//! Observation: handles by address; strong and weak counts read from the
//! object header (`combined_ref_count`, c_api.h); fields read from the
//! object at the offset the reflection table gives; vars' wrappers by
//! address and `__chandle__()` (0: moved-from). The observer keeps one weak
//! reference on every object the program created (the library's own
//! `IncWeakRef`/`DecWeakRef` protocol, object.h), so the header can be read
//! after the object dies and an address is never reused within a program;
//! the weak count reported excludes it. Not observable: bindings (tag
//! words), whether a wrapper's memory is freed, world totals.
//!
//! Tying: detected at start-up (a second return of the same object is the
//! same wrapper, or not); off in every published wheel, which makes the
//! executor's model treat every object as untied.
//!
//! Recorded upstream findings (corpus/upstream/):
//! - [`LEAK_FINDING`]: every store into a `py_class` field leaks one strong
//!   reference. Reported as an upstream failure; with
//!   [`KnownFindings::WorkAround`] (campaigns, corpus replay) the backend
//!   releases the leaked reference after each store, when the start-up
//!   probe measured the leak, and says so per step.
//! - [`MOVED_FINDING`]: any use of a moved-from object crashes the process.
//!   The backend refuses exactly the steps that would do it (`echo`,
//!   `get`, `set`, `unset` on a moved-from wrapper) and names the finding.

use std::ffi::{CStr, c_char, c_void};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use pytie_core::backend::{Backend, Caps};
use pytie_core::program::{HOLDERS, Holds, ObjKind, Op, SourceRule, StepKind, VARS, Var};
use pytie_core::state::{
    AbstractState, Binding, DANGLING, HandleNo, HandleState, StepResult, Totals, VarState,
    WrapperLife, WrapperNo, WrapperState,
};

pub use pytie_core::tvmffi::{LEAK_FINDING, MOVED_FINDING, OBSERVES, PINNED, steps};

/// How recorded upstream findings are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KnownFindings {
    /// Run into them: the field-store leak fails the program as an upstream
    /// failure. (Steps that would crash the process are refused anyway.)
    #[default]
    Report,
    /// Work around the field-store leak, reporting each workaround, so a
    /// campaign or a replay checks everything else.
    WorkAround,
}

/// The virtual environment: `$PYTIE_TVMFFI_VENV`, else `.venv/tvmffi` in
/// the checkout.
pub fn venv_dir() -> PathBuf {
    std::env::var_os("PYTIE_TVMFFI_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/tvmffi"))
}

/// The environment's site-packages holding `tvm_ffi`.
pub fn site_packages(venv: &Path) -> Result<PathBuf, String> {
    let lib = venv.join("lib");
    let missing = || {
        format!(
            "tvm-ffi is not installed in {}: run scripts/setup-tvmffi",
            venv.display()
        )
    };
    let entries = std::fs::read_dir(&lib).map_err(|_| missing())?;
    for e in entries.flatten() {
        let site = e.path().join("site-packages");
        if e.file_name().to_string_lossy().starts_with("python") && site.join("tvm_ffi").is_dir() {
            return Ok(site);
        }
    }
    Err(missing())
}

// ---- the C ABI (include/tvm/ffi/c_api.h) -----------------------------------

/// `TVMFFIAny`: type index, padding, 8-byte value.
#[repr(C)]
#[derive(Clone, Copy)]
struct FfiAny {
    type_index: i32,
    pad: u32,
    v: u64,
}
const ANY_NONE: FfiAny = FfiAny {
    type_index: 0,
    pad: 0,
    v: 0,
};
const K_INT: i32 = 1;
const K_STATIC_OBJECT_BEGIN: i32 = 64;
/// Bits of `combined_ref_count`: strong in the low half, weak in the high.
const WEAK_ONE: u64 = 1 << 32;
/// Deleter flag: free the storage.
const DELETE_WEAK: i32 = 2;

#[repr(C)]
struct ByteArray {
    data: *const c_char,
    size: usize,
}

type SafeCall = unsafe extern "C" fn(*mut c_void, *const FfiAny, i32, *mut FfiAny) -> i32;
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
static TAKEN: AtomicUsize = AtomicUsize::new(0);

fn api() -> &'static Api {
    API.get()
        .expect("tvm-ffi's C API is resolved before any object exists")
}

fn inc_ref(addr: usize) {
    // SAFETY: callers pass the address of a live tvm-ffi object on which
    // they own (or are handed) a strong reference.
    unsafe { (api().inc_ref)(addr as *mut c_void) };
}

fn dec_ref(addr: usize) {
    // SAFETY: callers give up a strong reference they own on a live object.
    unsafe { (api().dec_ref)(addr as *mut c_void) };
}

/// The header's combined count, read atomically as the library does.
fn header(addr: usize) -> &'static AtomicU64 {
    // SAFETY: callers pass an object whose storage the observer keeps
    // allocated (its weak reference, see `observe_handle`); the count is
    // the first field of the header (c_api.h `TVMFFIObject`), 8-aligned.
    unsafe { &*(addr as *const AtomicU64) }
}

/// (strong, weak) of an object whose storage is kept.
fn counts(addr: usize) -> (u32, u32) {
    let c = header(addr).load(Ordering::Acquire);
    (c as u32, (c >> 32) as u32)
}

fn type_index(addr: usize) -> i32 {
    // SAFETY: a live object's header: the type index is at offset 8.
    unsafe { std::ptr::read((addr + 8) as *const i32) }
}

/// `Object::IncWeakRef` (object.h, inline there, not exported).
fn inc_weak(addr: usize) {
    header(addr).fetch_add(WEAK_ONE, Ordering::Relaxed);
}

/// `Object::DecWeakRef` (object.h): at weak 0 the deleter frees storage.
fn dec_weak(addr: usize) {
    if header(addr).fetch_sub(WEAK_ONE, Ordering::Release) == WEAK_ONE {
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

fn raise(msg: &CStr) {
    // SAFETY: both strings are NUL-terminated and live for the call.
    unsafe { (api().error_set_raised)(c"RuntimeError".as_ptr(), msg.as_ptr()) };
}

/// `pytie.tvmffi.ret(addr)`: a C++ function returning a held object. The
/// caller receives a new strong reference (IncRef, then the result).
unsafe extern "C" fn ret_call(
    _self: *mut c_void,
    args: *const FfiAny,
    n: i32,
    out: *mut FfiAny,
) -> i32 {
    // SAFETY: the library passes `n` argument views and a result slot;
    // the int argument is the address of an object a holder keeps alive.
    unsafe {
        if n != 1 || (*args).type_index != K_INT {
            raise(c"pytie.tvmffi.ret takes one int: the address of a held object");
            return -1;
        }
        let addr = (*args).v as usize;
        inc_ref(addr);
        *out = FfiAny {
            type_index: type_index(addr),
            pad: 0,
            v: addr as u64,
        };
    }
    0
}

/// `pytie.tvmffi.take(obj)`: a C++ function storing its argument. With an
/// rvalue ref (`x._move()`), taking it steals the wrapper's +1 and NULLs its
/// handle, as any C++ callee does.
unsafe extern "C" fn take_call(
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

unsafe extern "C" fn no_delete(_self: *mut c_void) {}

/// Resolve the C API in the copy of libtvm_ffi.so the import loaded.
fn resolve(path: &str) -> Result<Api, String> {
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
    unsafe {
        Ok(Api {
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
        })
    }
}

/// Register a Rust callback as the global FFI function `name`.
fn register(name: &str, f: SafeCall) -> Result<(), String> {
    let api = api();
    let mut h: *mut c_void = std::ptr::null_mut();
    // SAFETY: `f` and `no_delete` are valid for the process; `h` receives
    // the new function object (+1), which the global table then shares.
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

/// The SIGSEGV disposition now.
fn sigsegv() -> libc::sigaction {
    // SAFETY: a query only (null new action); `old` is plain data.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut old);
        old
    }
}

/// The file (executable or library) whose code handles SIGSEGV now, or
/// "" for the default disposition.
pub fn sigsegv_handler_owner() -> String {
    let handler = sigsegv().sa_sigaction;
    // SAFETY: dladdr only reads the loader's tables into `info`; the name
    // it returns is a NUL-terminated string the loader keeps.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if handler == 0
            || libc::dladdr(handler as *const c_void, &mut info) == 0
            || info.dli_fname.is_null()
        {
            return String::new();
        }
        CStr::from_ptr(info.dli_fname)
            .to_string_lossy()
            .into_owned()
    }
}

fn set_sigsegv(a: &libc::sigaction) {
    // SAFETY: `a` is a disposition read back from sigaction itself.
    unsafe { libc::sigaction(libc::SIGSEGV, a, std::ptr::null_mut()) };
}

/// The Python side, defined once per process (a type key registers once).
const GLUE: &CStr = cr#"
from typing import Optional
import gc
import tvm_ffi
from tvm_ffi import Object
from tvm_ffi.dataclasses import py_class

@py_class("pytie.tvmffi.Node")
class Node(Object):
    x: Optional[Object] = None

@py_class("pytie.tvmffi.DictNode")
class DictNode(Object):
    __slots__ = ("__dict__",)
    x: Optional[Object] = None

echo = tvm_ffi.get_global_func("testing.echo")
ret = tvm_ffi.get_global_func("pytie.tvmffi.ret")
take = tvm_ffi.get_global_func("pytie.tvmffi.take")
field_x = [f for f in Node.__tvm_ffi_type_info__.fields if f.name == "x"][0]
version = tvm_ffi.__version__
gc.disable()
"#;

/// The loaded library, once per process.
struct Lib {
    version: String,
    /// A second return of the same object gave the same wrapper.
    tying: bool,
    /// Strong references one store of an object into a field leaks (the
    /// start-up probe of [`LEAK_FINDING`]).
    leak_per_store: u32,
    /// Offset of `x` (an `Any`) in a `Node`/`DictNode` object.
    field_offset: usize,
    node: Py<PyAny>,
    dict_node: Py<PyAny>,
    echo: Py<PyAny>,
    ret: Py<PyAny>,
    take: Py<PyAny>,
    gc_collect: Py<PyAny>,
}

static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();

fn load(py: Python<'_>) -> Result<Lib, String> {
    let site = site_packages(&venv_dir())?;
    let e = |what: &'static str| move |err: PyErr| format!("tvm-ffi: {what}: {err}");
    let sys = py.import("sys").map_err(e("import sys"))?;
    sys.getattr("path")
        .and_then(|p| p.call_method1("insert", (0, site.to_string_lossy().into_owned())))
        .map_err(e("sys.path"))?;
    // libtvm_ffi.so replaces the SIGSEGV handler when it is loaded (a
    // constructor in backtrace.cc); keep the one the process had (Rust's,
    // or libFuzzer's/ASan's, which save the crashing input).
    let before = sigsegv();
    let imported = py.import("tvm_ffi");
    set_sigsegv(&before);
    let tvm_ffi = imported.map_err(e("import tvm_ffi"))?;
    let path: String = tvm_ffi
        .getattr("libinfo")
        .and_then(|l| l.call_method0("find_libtvm_ffi"))
        .and_then(|p| p.extract())
        .map_err(e("libinfo.find_libtvm_ffi()"))?;
    let _ = API.set(resolve(&path)?);
    register("pytie.tvmffi.ret", ret_call)?;
    register("pytie.tvmffi.take", take_call)?;
    let ns = PyDict::new(py);
    py.run(GLUE, Some(&ns), None)
        .map_err(e("defining the py_class types"))?;
    let get = |k: &str| -> Result<Bound<'_, PyAny>, String> {
        ns.get_item(k)
            .ok()
            .flatten()
            .ok_or_else(|| format!("tvm-ffi glue: {k} missing"))
    };
    let field = get("field_x")?;
    let offset: usize = field
        .getattr("offset")
        .and_then(|o| o.extract())
        .map_err(e("field offset"))?;
    let size: usize = field
        .getattr("size")
        .and_then(|o| o.extract())
        .map_err(e("field size"))?;
    if size != std::mem::size_of::<FfiAny>() {
        return Err(format!("tvm-ffi: field x has size {size}, not an Any"));
    }
    let gc_collect = py
        .import("gc")
        .and_then(|g| g.getattr("collect"))
        .map_err(e("gc"))?;
    let mut lib = Lib {
        version: get("version")?.extract().map_err(e("version"))?,
        tying: false,
        leak_per_store: 0,
        field_offset: offset,
        node: get("Node")?.unbind(),
        dict_node: get("DictNode")?.unbind(),
        echo: get("echo")?.unbind(),
        ret: get("ret")?.unbind(),
        take: get("take")?.unbind(),
        gc_collect: gc_collect.unbind(),
    };
    probe(py, &mut lib).map_err(e("start-up probes"))?;
    Ok(lib)
}

fn chandle(o: &Bound<'_, PyAny>) -> PyResult<usize> {
    o.call_method0("__chandle__")?.extract()
}

/// Start-up probes: is tying active (a second return of the same object is
/// the same wrapper)? How many strong refs does a field store leak?
fn probe(py: Python<'_>, lib: &mut Lib) -> PyResult<()> {
    let a = lib.node.bind(py).call0()?;
    let h = chandle(&a)?;
    inc_ref(h); // a C++ holder
    let r1 = lib.ret.bind(py).call1((h,))?;
    let r2 = lib.ret.bind(py).call1((h,))?;
    lib.tying = r1.is(&r2);
    drop((r1, r2, a));
    dec_ref(h);

    let a = lib.node.bind(py).call0()?;
    let b = lib.node.bind(py).call0()?;
    let hb = chandle(&b)?;
    inc_weak(hb); // keep the header readable
    let before = counts(hb).0;
    a.setattr("x", &b)?;
    a.setattr("x", py.None())?;
    lib.leak_per_store = counts(hb).0.saturating_sub(before);
    // Give back what the store leaked, so the probe itself leaks nothing
    // (LeakSanitizer in the fuzz target would report it).
    for _ in 0..lib.leak_per_store {
        dec_ref(hb);
    }
    drop((a, b));
    dec_weak(hb);
    Ok(())
}

/// Load tvm-ffi into this process's interpreter (once).
pub fn load_library(py: Python<'_>) -> Result<(), String> {
    LIB.get_or_init(|| load(py))
        .as_ref()
        .map(|_| ())
        .map_err(Clone::clone)
}

/// A wrapper the program has seen, numbered by first appearance.
struct Wr {
    addr: usize,
    /// Vars and cycles holding it.
    refs: u32,
    /// The handle `chandle` pointed to when last seen (`None`: NULL).
    chandle: Option<HandleNo>,
}

/// The backend. Use it while holding [`crate::interp::exclusive`].
pub struct TvmFfiBackend {
    lib: &'static Lib,
    known: KnownFindings,
    vars: [Option<Py<PyAny>>; VARS],
    /// The wrapper number of each var holding an object.
    var_wr: [Option<WrapperNo>; VARS],
    /// Holders: (object address, handle number); each owns a strong ref.
    holders: [Option<(usize, HandleNo)>; HOLDERS],
    /// Object address per handle number; the observer holds a weak ref on
    /// each until the program ends.
    handles: Vec<usize>,
    wrappers: Vec<Wr>,
    cycles: Vec<WrapperNo>,
    result: StepResult,
    violations: Vec<String>,
    worked_around: Option<String>,
}

impl TvmFfiBackend {
    /// Load tvm-ffi (once per process) and make a backend.
    pub fn new(known: KnownFindings) -> Result<TvmFfiBackend, String> {
        let lib = Python::attach(|py| LIB.get_or_init(|| load(py)).as_ref())?;
        Ok(TvmFfiBackend {
            lib,
            known,
            vars: Default::default(),
            var_wr: [None; VARS],
            holders: [None; HOLDERS],
            handles: Vec::new(),
            wrappers: Vec::new(),
            cycles: Vec::new(),
            result: StepResult::Ok,
            violations: Vec::new(),
            worked_around: None,
        })
    }

    pub fn set_known_findings(&mut self, known: KnownFindings) {
        self.known = known;
    }

    pub fn known_findings(&self) -> KnownFindings {
        self.known
    }

    /// The installed version (`tvm_ffi.__version__`).
    pub fn version(&self) -> &str {
        &self.lib.version
    }

    /// Strong refs a field store leaks, as measured at start-up.
    pub fn leak_per_store(&self) -> u32 {
        self.lib.leak_per_store
    }

    /// How tying was detected, for the output.
    pub fn profile(&self) -> String {
        if self.lib.tying {
            "tying on (a second return of the same object gave the same wrapper): model with tying"
                .into()
        } else {
            "tying off (a second return of the same object gave a new wrapper): model profile \
             `untied` (contract §3: every object untied)"
                .into()
        }
    }

    fn handle_no(&self, addr: usize) -> HandleNo {
        self.handles
            .iter()
            .position(|&a| a == addr)
            .map_or(DANGLING, |n| n as HandleNo)
    }

    /// The handle a wrapper points to; `None` when moved-from.
    fn handle_of(&self, o: &Bound<'_, PyAny>) -> PyResult<Option<HandleNo>> {
        let c = chandle(o)?;
        Ok((c != 0).then(|| self.handle_no(c)))
    }

    /// Number a wrapper about to be stored in a var: the wrapper of that
    /// address some var or cycle holds, else (tying on) the wrapper last
    /// seen there for the same handle (revived), else a fresh one.
    fn number(&mut self, o: &Bound<'_, PyAny>) -> PyResult<WrapperNo> {
        let addr = o.as_ptr() as usize;
        let h = self.handle_of(o)?;
        let held = self
            .wrappers
            .iter()
            .position(|w| w.addr == addr && w.refs > 0);
        let revived = || {
            self.wrappers
                .iter()
                .rposition(|w| w.addr == addr && w.refs == 0 && h.is_some() && w.chandle == h)
        };
        let n = match held.or_else(|| self.lib.tying.then(revived).flatten()) {
            Some(n) => n,
            None => {
                self.wrappers.push(Wr {
                    addr,
                    refs: 0,
                    chandle: h,
                });
                self.wrappers.len() - 1
            }
        };
        self.wrappers[n].refs += 1;
        self.wrappers[n].chandle = h;
        Ok(n as WrapperNo)
    }

    /// Python assignment order: the new value is computed; replace the
    /// slot, then drop the old value.
    fn assign(&mut self, v: Var, new: Bound<'_, PyAny>) -> PyResult<()> {
        let n = if new.is_none() {
            None
        } else {
            Some(self.number(&new)?)
        };
        let old = self.vars[v.idx()].replace(new.unbind());
        let old_n = std::mem::replace(&mut self.var_wr[v.idx()], n);
        drop(old);
        if let Some(o) = old_n {
            self.wrappers[o as usize].refs -= 1;
        }
        Ok(())
    }

    /// The object in var `v`, unless the var is empty or holds None.
    fn source<'py>(&self, py: Python<'py>, v: Var) -> Option<Bound<'py, PyAny>> {
        let o = self.vars[v.idx()].as_ref()?.bind(py);
        (!o.is_none()).then(|| o.clone())
    }

    /// Var `v` holds a moved-from wrapper (its handle is NULL).
    fn moved(&self, py: Python<'_>, v: Var) -> bool {
        self.source(py, v)
            .is_some_and(|o| chandle(&o).is_ok_and(|c| c == 0))
    }

    /// Holders: store first, release the old reference after.
    fn store_holder(&mut self, h: usize, addr: usize) {
        let old = self.holders[h].replace((addr, self.handle_no(addr)));
        if let Some((a, _)) = old {
            dec_ref(a);
        }
    }

    /// A new object: numbered, observed until the program ends.
    fn new_object<'py>(&mut self, py: Python<'py>, kind: ObjKind) -> PyResult<Bound<'py, PyAny>> {
        let cls = match kind {
            ObjKind::Dict => &self.lib.dict_node,
            ObjKind::Plain | ObjKind::Untied => &self.lib.node,
        };
        let o = cls.bind(py).call0()?;
        let addr = chandle(&o)?;
        inc_weak(addr);
        self.handles.push(addr);
        Ok(o)
    }

    fn step(&mut self, py: Python<'_>, op: &Op) -> PyResult<StepResult> {
        let lib = self.lib;
        match *op {
            Op::New { v, kind } => {
                let o = self.new_object(py, kind)?;
                self.assign(v, o)?;
            }
            Op::Ret { v, h } => {
                if let Some((addr, _)) = self.holders[h.idx()] {
                    let o = lib.ret.bind(py).call1((addr,))?;
                    self.assign(v, o)?;
                }
            }
            // The temporary reference to U goes before the assignment, as
            // in Python's `v = f(u)`.
            Op::Echo { v, u } => {
                if let Some(src) = self.source(py, u) {
                    let o = lib.echo.bind(py).call1((&src,));
                    drop(src);
                    self.assign(v, o?)?;
                }
            }
            Op::Get { v, u } => {
                if let Some(src) = self.source(py, u) {
                    let o = src.getattr("x");
                    drop(src);
                    self.assign(v, o?)?;
                }
            }
            Op::Set { u, v } => {
                if let (Some(target), Some(val)) = (self.source(py, u), self.source(py, v)) {
                    target.setattr("x", &val)?;
                    let leak = lib.leak_per_store;
                    if self.known == KnownFindings::WorkAround && leak > 0 {
                        // The store left `leak` strong refs nobody owns on
                        // the value (the wrapper and the field keep it
                        // alive): release them, as a fixed library would
                        // not have taken them.
                        let addr = chandle(&val)?;
                        for _ in 0..leak {
                            dec_ref(addr);
                        }
                        self.worked_around = Some(format!(
                            "released the {leak} strong ref the store leaked ({LEAK_FINDING})"
                        ));
                    }
                }
            }
            Op::Unset { u } => {
                if let Some(target) = self.source(py, u) {
                    target.setattr("x", py.None())?;
                }
            }
            Op::Clone { v, u } => {
                if let Some(src) = self.source(py, u) {
                    self.assign(v, src)?;
                }
            }
            // `del v` on a var holding None leaves it None.
            Op::Drop { v } => {
                if self.source(py, v).is_some() {
                    drop(self.vars[v.idx()].take());
                    if let Some(n) = self.var_wr[v.idx()].take() {
                        self.wrappers[n as usize].refs -= 1;
                    }
                }
            }
            Op::Hold { h, v } => {
                if let Some(src) = self.source(py, v) {
                    let addr = chandle(&src)?;
                    if addr == 0 {
                        return Ok(StepResult::Moved);
                    }
                    inc_ref(addr);
                    drop(src);
                    self.store_holder(h.idx(), addr);
                }
            }
            Op::Move { h, v } => {
                if let Some(src) = self.source(py, v) {
                    let was_moved = chandle(&src)? == 0;
                    TAKEN.store(0, Ordering::SeqCst);
                    let rv = src.call_method0("_move")?;
                    let r = lib.take.bind(py).call1((rv,));
                    drop(src);
                    match r {
                        // The library refuses a second move itself.
                        Err(_) if was_moved => return Ok(StepResult::Moved),
                        Err(e) => return Err(e),
                        Ok(_) if was_moved => {
                            self.violations
                                .push(format!("`{op}`: moving a moved-from object did not fail"));
                        }
                        Ok(_) => {}
                    }
                    let addr = TAKEN.swap(0, Ordering::SeqCst);
                    if addr == 0 {
                        self.violations
                            .push(format!("`{op}`: the FFI function received no object"));
                    } else {
                        self.store_holder(h.idx(), addr);
                    }
                }
            }
            Op::Release { h } => {
                if let Some((addr, _)) = self.holders[h.idx()].take() {
                    dec_ref(addr);
                }
            }
            Op::ReleaseForeign { h } => {
                if let Some((addr, _)) = self.holders[h.idx()].take() {
                    // The interpreter's thread lets go of the GIL while the
                    // other thread releases (contract §3 "Threads").
                    py.detach(move || {
                        std::thread::spawn(move || dec_ref(addr))
                            .join()
                            .expect("the releasing thread finishes")
                    });
                }
            }
            Op::Cycle { v } => {
                if let Some(src) = self.source(py, v) {
                    drop(self.vars[v.idx()].take());
                    if let Some(n) = self.var_wr[v.idx()].take() {
                        self.cycles.push(n);
                    }
                    let l = PyList::new(py, [src])?;
                    l.append(&l)?;
                }
            }
            Op::Collect => {
                for n in std::mem::take(&mut self.cycles) {
                    self.wrappers[n as usize].refs -= 1;
                }
                lib.gc_collect.bind(py).call0()?;
            }
            // Unsupported (see `steps`): the executor never applies them.
            Op::Weak { .. } | Op::Unweak { .. } | Op::Lock { .. } | Op::Shutdown => {}
            Op::Mark { .. } | Op::Expect(_) => {}
        }
        Ok(StepResult::Ok)
    }

    /// One handle as observed.
    fn observe_handle(&self, addr: usize) -> HandleState {
        let (strong, weak) = counts(addr);
        let weak = weak.saturating_sub(1); // the observer's own
        if weak == 0 && strong == 0 {
            return HandleState::FREED;
        }
        let field = (strong > 0).then(|| self.field(addr)).flatten();
        HandleState {
            strong,
            weak,
            storage: weak > 0,
            binding: if self.lib.tying {
                Binding::Detached
            } else {
                Binding::Untied
            },
            field,
        }
    }

    /// The field `x` of a live object: the `Any` at the reflected offset.
    fn field(&self, addr: usize) -> Option<HandleNo> {
        // SAFETY: `addr` is a live Node/DictNode object (strong > 0), whose
        // field `x` is an `Any` at `field_offset` (reflection table).
        let any = unsafe { std::ptr::read((addr + self.lib.field_offset) as *const FfiAny) };
        match any.type_index {
            0 => None,
            t if t >= K_STATIC_OBJECT_BEGIN => Some(self.handle_no(any.v as usize)),
            _ => Some(DANGLING),
        }
    }

    /// End of a program: drop the observer's weak references (storage of
    /// dead objects is freed now) and forget the handles.
    fn release_observers(&mut self) {
        for addr in self.handles.drain(..) {
            dec_weak(addr);
        }
    }
}

impl Backend for TvmFfiBackend {
    fn name(&self) -> String {
        format!(
            "apache-tvm-ffi {} (tying {}, detected at start-up)",
            self.lib.version,
            if self.lib.tying { "on" } else { "off" }
        )
    }

    fn caps(&self) -> Caps {
        Caps {
            steps: steps(),
            observes: OBSERVES,
        }
    }

    fn tying(&self) -> bool {
        self.lib.tying
    }

    fn upstream(&self) -> Option<String> {
        Some(format!("apache-tvm-ffi {}", self.lib.version))
    }

    fn begin(&mut self) -> Result<(), String> {
        Python::attach(|py| {
            for v in &mut self.vars {
                if v.as_ref().is_some_and(|o| o.is_none(py)) {
                    *v = None;
                }
            }
        });
        if self.vars.iter().any(Option::is_some) || self.holders.iter().any(Option::is_some) {
            return Err("tvm-ffi backend: vars or holders left by the last program".into());
        }
        self.release_observers();
        self.var_wr = [None; VARS];
        self.wrappers.clear();
        self.cycles.clear();
        self.result = StepResult::Ok;
        self.violations.clear();
        self.worked_around = None;
        TAKEN.store(0, Ordering::SeqCst);
        Ok(())
    }

    fn refuse(&mut self, op: &Op) -> Option<String> {
        Python::attach(|py| {
            // Steps whose moved-from source the library dereferences: the
            // ones the source-slot rule (§4.1) fails with *moved*.
            let derefs = matches!(
                op.kind(),
                Some(StepKind::Echo | StepKind::Get | StepKind::Set | StepKind::Unset)
            );
            let holds = |v: Var| match self.source(py, v) {
                None => Holds::Nothing,
                Some(_) if self.moved(py, v) => Holds::Moved,
                Some(_) => Holds::Live,
            };
            let touches_moved = match *op {
                _ if derefs => op.source_rule(holds) == SourceRule::Moved,
                Op::New {
                    kind: ObjKind::Untied,
                    ..
                } if self.lib.tying => {
                    return Some(
                        "tvm-ffi with tying on has no way to make an untied py_class object"
                            .to_string(),
                    );
                }
                _ => false,
            };
            touches_moved.then(|| {
                format!(
                    "apache-tvm-ffi {} crashes the process (SIGSEGV) on this use of a moved-from \
                     object ({MOVED_FINDING}); the contract expects the error *moved*",
                    self.lib.version
                )
            })
        })
    }

    fn apply(&mut self, op: &Op) -> StepResult {
        self.worked_around = None;
        let r = Python::attach(|py| {
            self.step(py, op).unwrap_or_else(|e| {
                self.violations
                    .push(format!("`{op}` raised an unexpected Python exception: {e}"));
                StepResult::Ok
            })
        });
        self.result = r;
        r
    }

    fn worked_around(&mut self) -> Option<String> {
        self.worked_around.take()
    }

    fn observe(&mut self, out: &mut AbstractState) {
        out.clear();
        Python::attach(|py| {
            for i in 0..VARS {
                out.vars[i] = match (&self.vars[i], self.var_wr[i]) {
                    (None, _) => VarState::Empty,
                    (Some(_), None) => VarState::None,
                    (Some(o), Some(n)) => {
                        let h = self.handle_of(o.bind(py)).unwrap_or(Some(DANGLING));
                        self.wrappers[n as usize].chandle = h;
                        match h {
                            None => VarState::Moved(n),
                            Some(_) => VarState::Wrapper(n),
                        }
                    }
                };
            }
        });
        for (slot, h) in out.holders.iter_mut().zip(&self.holders) {
            *slot = h.map(|(_, n)| n);
        }
        out.result = self.result;
        let mut t = Totals::default();
        for &addr in &self.handles {
            let h = self.observe_handle(addr);
            t.live_handles += u32::from(h.alive());
            t.live_blocks += u32::from(h.storage);
            out.handles.push(h);
        }
        for w in &self.wrappers {
            let held = w.refs > 0;
            t.live_wrappers += u32::from(held);
            out.wrappers.push(WrapperState {
                life: if held {
                    WrapperLife::Live
                } else {
                    WrapperLife::Freed
                },
                refs: w.refs,
                chandle: if held { w.chandle } else { None },
            });
        }
        out.totals = t;
    }

    fn violations(&mut self) -> Vec<String> {
        std::mem::take(&mut self.violations)
    }

    fn identity(&mut self, v: Var) -> Option<usize> {
        self.var_wr[v.idx()]?;
        self.vars[v.idx()].as_ref().map(|o| o.as_ptr() as usize)
    }

    fn cycle_members(&self) -> &[WrapperNo] {
        &self.cycles
    }

    /// Through the library: each live object is returned to Python
    /// (`pytie.tvmffi.ret`) and its field set to None.
    fn clear_all_fields(&mut self) {
        Python::attach(|py| {
            for i in 0..self.handles.len() {
                let addr = self.handles[i];
                if counts(addr).0 == 0 {
                    continue;
                }
                let r = self
                    .lib
                    .ret
                    .bind(py)
                    .call1((addr,))
                    .and_then(|w| w.setattr("x", py.None()));
                if let Err(e) = r {
                    self.violations
                        .push(format!("teardown: clearing obj#{i}.x raised {e}"));
                }
            }
        });
    }

    fn reclaim_leaked(&mut self) {}

    fn leftovers(&mut self) -> Option<String> {
        let alive: Vec<String> = self
            .handles
            .iter()
            .enumerate()
            .filter_map(|(i, &a)| {
                let s = counts(a).0;
                (s > 0).then(|| format!("obj#{i} (strong {s})"))
            })
            .collect();
        self.release_observers();
        (!alive.is_empty()).then(|| format!("live tvm-ffi objects: {}", alive.join(", ")))
    }

    /// A failed program's world is torn down through the library (nothing
    /// here is corrupt, only counted wrong); objects a finding leaked stay.
    fn abandon(&mut self) {
        Python::attach(|py| {
            for v in &mut self.vars {
                drop(v.take());
            }
            if !self.cycles.is_empty() {
                self.cycles.clear();
                let _ = self.lib.gc_collect.bind(py).call0();
            }
        });
        for h in &mut self.holders {
            if let Some((addr, _)) = h.take() {
                dec_ref(addr);
            }
        }
        self.var_wr = [None; VARS];
        self.wrappers.clear();
        self.release_observers();
    }
}

impl Drop for TvmFfiBackend {
    /// A world left behind (a panic mid-program) is torn down, holding the
    /// interpreter exclusively like any user of it.
    fn drop(&mut self) {
        let used = self.vars.iter().any(Option::is_some)
            || self.holders.iter().any(Option::is_some)
            || !self.handles.is_empty()
            || !self.cycles.is_empty();
        if used {
            let _session = crate::interp::exclusive();
            self.abandon();
        }
    }
}
