//! The Python side of the backend: tvm-ffi imported into the embedded
//! interpreter, the `py_class` types the programs' objects are, the FFI
//! functions pytie registers, and the start-up probes (is tying on? how
//! many strong refs does a field store leak?). Once per process.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pyo3::prelude::*;

use super::capi::{self, ANY_SIZE};
use super::harness::{self, Slot};
use super::signals::{set_sigsegv, sigsegv};
use super::venv::{site_packages, venv_dir};
use pytie_core::program::ObjKind;

/// The Python side, defined once per process (a type key registers once).
/// One constructor per object kind (`CTORS`, by kind name; legacy and
/// untied are made by the backend) and, for the kinds with an attribute
/// field, the type whose reflected field `x` the backend reads.
const GLUE: &CStr = cr#"
from typing import Optional
import gc
import pickle
import types
import weakref
import tvm_ffi
from tvm_ffi import Object
from tvm_ffi.dataclasses import c_class, py_class

@py_class("pytie.tvmffi.Node")
class Node(Object):
    x: Optional[Object] = None

@py_class("pytie.tvmffi.DictNode")
class DictNode(Object):
    __slots__ = ("__dict__",)
    x: Optional[Object] = None

# A finalizer: ineligible (tp_finalize), one __del__ per drop, counted by
# pytie.tvmffi.finalized (harness.cc) so that reading the count takes no
# Python call.
finalized = tvm_ffi.get_global_func("pytie.tvmffi.finalized")
@py_class("pytie.tvmffi.DelNode")
class DelNode(Object):
    x: Optional[Object] = None
    def __del__(self):
        finalized()

@py_class("pytie.tvmffi.WeakrefNode")
class WeakrefNode(Object):
    __slots__ = ("__weakref__",)
    x: Optional[Object] = None

# A Python subclass the library never registered: CPython's tp_free.
class SubNode(Node):
    __slots__ = ()

# A registered subclass: its own type key, the library's slots.
@py_class("pytie.tvmffi.DerivedNode")
class DerivedNode(Node):
    pass

# A registered type whose construction raises unless its constructor makes
# it (contract R20): every wrapper the library makes for a return, fresh or
# revived in place (after super().__new__ consumed the cached block),
# raises. `new_fragile` is its constructor.
constructing = [False]
class ConstructionRefused(Exception):
    pass
@py_class("pytie.tvmffi.FragileNode")
class FragileNode(Object):
    x: Optional[Object] = None
    def __new__(cls, *args, **kwargs):
        o = super().__new__(cls)
        if not constructing[0]:
            raise ConstructionRefused("pytie: construction refused")
        return o
def new_fragile():
    constructing[0] = True
    try:
        return FragileNode()
    finally:
        constructing[0] = False

# Defined in C++ (harness.cc), made there by make_object.
@c_class("pytie.tvmffi.CppNode")
class CppNode(Object):
    x: Optional[Object]
new_cpp = tvm_ffi.get_global_func("pytie.tvmffi.new_cpp")

CTORS = {
    "plain": Node,
    "untied": Node,
    "dict": DictNode,
    "cpp": new_cpp,
    "list": lambda: tvm_ffi.List([None]),
    "map": lambda: tvm_ffi.Dict({"x": None}),
    "del": DelNode,
    "weakref": WeakrefNode,
    "sub": SubNode,
    "derived": DerivedNode,
    "fragile": new_fragile,
}
# The wrapper type of each kind (its refcount is part of the world check).
TYPES = {
    "plain": Node, "dict": DictNode, "del": DelNode, "weakref": WeakrefNode,
    "sub": SubNode, "derived": DerivedNode, "cpp": CppNode, "fragile": FragileNode,
    "list": tvm_ffi.List, "map": tvm_ffi.Dict,
}
def field_offset(cls):
    # A subclass's type info lists its own fields; `x` is its base's.
    for c in cls.__mro__:
        info = c.__dict__.get("__tvm_ffi_type_info__")
        for f in (info.fields if info is not None else []):
            if f.name == "x":
                return f.offset, f.size
    raise TypeError(f"{cls.__name__} has no reflected field x")
# Where each kind with an attribute field keeps it (a list's and a map's
# field is an element); untied and legacy objects have Node's type.
OFFSETS = {k: field_offset(t) for k, t in TYPES.items() if k not in ("list", "map")}
OFFSETS["untied"] = OFFSETS["legacy"] = OFFSETS["plain"]
echo = tvm_ffi.get_global_func("testing.echo")
ret = tvm_ffi.get_global_func("pytie.tvmffi.ret")
take = tvm_ffi.get_global_func("pytie.tvmffi.take")
lock = tvm_ffi.get_global_func("pytie.tvmffi.lock")
new_legacy = tvm_ffi.get_global_func("pytie.tvmffi.new_legacy")
# `call` / `call_move`: C++ (harness.cc) calls this Python callback, an
# ffi::Function made from a Python callable, which returns its argument.
callback = tvm_ffi.convert(lambda x: x)
# `call_raise` / `call_move_raise`: a callback that raises.
class CallbackRaised(Exception):
    pass
def _raise(x):
    raise CallbackRaised("pytie: the callback raised")
raiser = tvm_ffi.convert(_raise)
call = tvm_ffi.get_global_func("pytie.tvmffi.call")
call_move = tvm_ffi.get_global_func("pytie.tvmffi.call_move")
def roundtrip(o):  # the `pickle` step
    return pickle.loads(pickle.dumps(o))
def pyweak(o):  # the `pyweak` step: TypeError without a __weakref__ slot
    r = weakref.ref(o)
    if r() is not o:
        raise AssertionError("a weak reference to a live wrapper does not lead to it")
# CPython 3.11 leaks a reference to a function's argument when a cell of
# that function cannot be allocated (MAKE_CELL), as tvm_ffi's
# getitem_helper(obj, ...) meets it (corpus/upstream/
# cpython-cell-arg-leaks-on-oom.pytie): held by a cell made before the one
# that failed, itself leaked, or by nothing. Empty the leaked cells that
# hold `o` (so no cell dangles once `o` dies); how many were emptied.
def clear_leaked_cells(o):
    n = 0
    for r in gc.get_referrers(o):
        if type(r) is types.CellType and r.cell_contents is o:
            del r.cell_contents
            n += 1
    return n
version = tvm_ffi.__version__
gc.disable()
"#;

/// The loaded library, once per process.
pub(super) struct Lib {
    pub(super) version: String,
    /// A second return of the same object gave the same wrapper.
    pub(super) tying: bool,
    /// Per object kind (`ObjKind as usize`): how it is made, where it
    /// keeps its field, what a store into it leaks.
    pub(super) kinds: Vec<KindPath>,
    /// The wrapper types whose reference counts the world check reads
    /// (each live wrapper holds one on its type).
    pub(super) types: Vec<(&'static str, Py<PyAny>)>,
    pub(super) node: Py<PyAny>,
    pub(super) echo: Py<PyAny>,
    pub(super) ret: Py<PyAny>,
    pub(super) take: Py<PyAny>,
    pub(super) lock: Py<PyAny>,
    /// `pickle.loads(pickle.dumps(o))`.
    pub(super) pickle: Py<PyAny>,
    /// `weakref.ref(o)`, checked and dropped.
    pub(super) pyweak: Py<PyAny>,
    /// `pytie.tvmffi.call` / `call_move` (harness.cc) and the Python
    /// callback they call.
    pub(super) call: Py<PyAny>,
    pub(super) call_move: Py<PyAny>,
    pub(super) callback: Py<PyAny>,
    /// The callback `call_raise` passes: it raises [`RAISED`].
    pub(super) raiser: Py<PyAny>,
    pub(super) new_legacy: Py<PyAny>,
    /// `Node`'s type index (a legacy object is made with it).
    pub(super) node_type_index: i32,
    /// libtvm_ffi and the Cython module were built with AddressSanitizer
    /// (`scripts/setup-tvmffi-tied --asan` marks the venv so).
    pub(super) asan: bool,
    pub(super) gc_collect: Py<PyAny>,
    /// `clear_leaked_cells(o)` (the glue): the CELL_FINDING work-around.
    pub(super) clear_leaked_cells: Py<PyAny>,
}

/// How the backend makes one object kind and reaches its field.
pub(super) struct KindPath {
    /// Called with no arguments, returns a new object of the kind (None:
    /// made by the backend itself, `new V legacy`).
    pub(super) ctor: Option<Py<PyAny>>,
    /// Where the object keeps its field (harness.cc `Slot`).
    pub(super) slot: Slot,
    /// How Python reaches the field.
    pub(super) access: Access,
    /// Strong refs one store into the field leaks, as measured at start-up
    /// (the py_class setter: [`super::LEAK_FINDING`]).
    pub(super) leak_per_store: u32,
}

/// How Python reaches an object's field.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Access {
    /// `o.x`
    Attr,
    /// `o[0]`
    Item0,
    /// `o["x"]`
    KeyX,
}

impl Lib {
    pub(super) fn kind(&self, k: ObjKind) -> &KindPath {
        &self.kinds[k as usize]
    }
}

static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();
/// The environment the library was (or was tried to be) loaded from.
static LOADED_FROM: OnceLock<PathBuf> = OnceLock::new();

/// Where this process loaded tvm-ffi from, once it tried.
pub(super) fn loaded_from() -> Option<&'static Path> {
    LOADED_FROM.get().map(PathBuf::as_path)
}

/// The library, loaded on first use.
pub(super) fn lib(py: Python<'_>) -> Result<&'static Lib, String> {
    LIB.get_or_init(|| load(py)).as_ref().map_err(Clone::clone)
}

fn load(py: Python<'_>) -> Result<Lib, String> {
    let venv = LOADED_FROM.get_or_init(venv_dir);
    let site = site_packages(venv)?;
    let e = |what: &'static str| move |err: PyErr| format!("tvm-ffi: {what}: {err}");
    let sys = py.import("sys").map_err(e("import sys"))?;
    sys.getattr("path")
        .and_then(|p| p.call_method1("insert", (0, site.to_string_lossy().into_owned())))
        .map_err(e("sys.path"))?;
    let before = sigsegv();
    let imported = py.import("tvm_ffi");
    set_sigsegv(&before);
    let tvm_ffi = imported.map_err(e("import tvm_ffi"))?;
    let path: String = tvm_ffi
        .getattr("libinfo")
        .and_then(|l| l.call_method0("find_libtvm_ffi"))
        .and_then(|p| p.extract())
        .map_err(e("libinfo.find_libtvm_ffi()"))?;
    capi::resolve(&path)?;
    // Registers pytie.tvmffi.{ret,take,lock,new_legacy} (harness.cc).
    harness::load(venv)?;
    // A module of its own, in sys.modules: `pickle` finds a class by its
    // module's name and its own.
    let module = PyModule::new(py, "pytie_tvmffi_glue").map_err(e("glue module"))?;
    sys.getattr("modules")
        .and_then(|m| m.set_item("pytie_tvmffi_glue", &module))
        .map_err(e("sys.modules"))?;
    let ns = module.dict();
    py.run(GLUE, Some(&ns), None)
        .map_err(e("defining the py_class types"))?;
    let get = |k: &str| -> Result<Bound<'_, PyAny>, String> {
        ns.get_item(k)
            .ok()
            .flatten()
            .ok_or_else(|| format!("tvm-ffi glue: {k} missing"))
    };
    let ctors = get("CTORS")?;
    let offsets = get("OFFSETS")?;
    let mut kinds = Vec::new();
    for k in ObjKind::ALL {
        let (slot, access) = match k {
            ObjKind::List => (Slot::ListItem, Access::Item0),
            ObjKind::Map => (Slot::DictValue, Access::KeyX),
            k => {
                let (offset, size): (usize, usize) = offsets
                    .get_item(k.name())
                    .and_then(|o| o.extract())
                    .map_err(e("field offsets"))?;
                if size != ANY_SIZE {
                    return Err(format!(
                        "tvm-ffi: field x of the {} kind has size {size}, not an Any",
                        k.name()
                    ));
                }
                (Slot::AnyAt(offset), Access::Attr)
            }
        };
        let ctor = match k {
            ObjKind::Legacy => None,
            k => Some(
                ctors
                    .get_item(k.name())
                    .map_err(e("constructors"))?
                    .unbind(),
            ),
        };
        kinds.push(KindPath {
            ctor,
            slot,
            access,
            leak_per_store: 0,
        });
    }
    // Where the harness's own type keeps `x`: reflection must agree.
    if kinds[ObjKind::Cpp as usize].slot != Slot::AnyAt(harness::cpp_field_offset()) {
        return Err("tvm-ffi: the C++ type's field offset differs from its reflection".into());
    }
    // A legacy object (`pytie.tvmffi.new_legacy`) has `Node`'s layout.
    if let Slot::AnyAt(off) = kinds[ObjKind::Legacy as usize].slot {
        harness::set_legacy_field_offset(off);
    }
    let gc_collect = py
        .import("gc")
        .and_then(|g| g.getattr("collect"))
        .map_err(e("gc"))?;
    let mut lib = Lib {
        version: get("version")?.extract().map_err(e("version"))?,
        tying: false,
        kinds,
        types: wrapper_types(&get("TYPES")?).map_err(e("wrapper types"))?,
        node: get("Node")?.unbind(),
        echo: get("echo")?.unbind(),
        ret: get("ret")?.unbind(),
        take: get("take")?.unbind(),
        lock: get("lock")?.unbind(),
        pickle: get("roundtrip")?.unbind(),
        pyweak: get("pyweak")?.unbind(),
        call: get("call")?.unbind(),
        call_move: get("call_move")?.unbind(),
        callback: get("callback")?.unbind(),
        raiser: get("raiser")?.unbind(),
        new_legacy: get("new_legacy")?.unbind(),
        node_type_index: 0,
        asan: venv.join(".pytie-asan-runtime").exists(),
        gc_collect: gc_collect.unbind(),
        clear_leaked_cells: get("clear_leaked_cells")?.unbind(),
    };
    probe(py, &mut lib).map_err(e("start-up probes"))?;
    {
        let n = lib.node.bind(py).call0().map_err(e("Node()"))?;
        let h = chandle(&n).map_err(e("Node().__chandle__()"))?;
        // SAFETY: `n` keeps the object alive.
        lib.node_type_index = unsafe { harness::type_index(h) };
    }
    find_chandle(py, &lib, &get("Object")?).map_err(e("CObject.chandle offset"))?;
    // Everything alive now (the interpreter, tvm_ffi and its ~20,000
    // tracked objects, the probes' leftovers) moves to the permanent
    // generation: a `collect` step stays a full `gc.collect()` but walks
    // only what programs made (3.5 ms a collection before, well under a
    // microsecond after: BENCHMARKS.md), as pytie's own backend does.
    let gc = py.import("gc").map_err(e("gc"))?;
    gc.call_method0("collect")
        .and_then(|_| gc.call_method0("freeze"))
        .map_err(e("gc.freeze()"))?;
    Ok(lib)
}

/// Where a `tvm_ffi.Object` wrapper keeps its handle: the Cython
/// `CObject.chandle` field's offset in the wrapper, measured at start-up
/// against `__chandle__()` ([`find_chandle`]), and the class.
static CHANDLE_AT: OnceLock<(Py<PyAny>, usize)> = OnceLock::new();

/// A wrapper's handle (`__chandle__()`; 0: moved-from). For a
/// `tvm_ffi.Object` the field is read directly (the observer asks for every
/// var after every step; a Python method call each time was a large part of
/// a program's cost under ASan); anything else asks `__chandle__()`.
pub(super) fn chandle(o: &Bound<'_, PyAny>) -> PyResult<usize> {
    if let Some((cls, off)) = CHANDLE_AT.get()
        && o.is_instance(cls.bind(o.py()))?
    {
        // SAFETY: `o` is a live CObject (the isinstance check): its
        // `chandle` pointer is at `off` (measured by `find_chandle`).
        return Ok(unsafe { std::ptr::read((o.as_ptr() as usize + off) as *const usize) });
    }
    chandle_slow(o)
}

fn chandle_slow(o: &Bound<'_, PyAny>) -> PyResult<usize> {
    o.call_method0(pyo3::intern!(o.py(), "__chandle__"))?
        .extract()
}

/// Find the offset of `CObject.chandle` in a wrapper: the one word after
/// the object header that equals `__chandle__()` for two live objects and
/// is 0 once one is moved from. Not found: `chandle` keeps asking Python.
fn find_chandle(py: Python<'_>, lib: &Lib, object: &Bound<'_, PyAny>) -> PyResult<()> {
    let a = lib.node.bind(py).call0()?;
    let b = lib
        .kind(ObjKind::Dict)
        .ctor
        .as_ref()
        .expect("dict kind has a constructor")
        .bind(py)
        .call0()?;
    let word = |o: &Bound<'_, PyAny>, off: usize| {
        // SAFETY: offsets below the wrapper's basic size (checked by the
        // caller's loop bound), of a live object.
        unsafe { std::ptr::read((o.as_ptr() as usize + off) as *const usize) }
    };
    let basic: usize = object.getattr("__basicsize__")?.extract()?;
    let (ha, hb) = (chandle_slow(&a)?, chandle_slow(&b)?);
    let found = (16..basic)
        .step_by(8)
        .find(|&off| word(&a, off) == ha && word(&b, off) == hb && ha != 0 && hb != 0);
    if let Some(off) = found {
        let rv = a.call_method0("_move")?;
        let moved_ok = chandle_slow(&a)? == 0 && word(&a, off) == 0;
        // Give the moved reference back: `rv` owns it.
        drop(rv);
        if moved_ok {
            let _ = CHANDLE_AT.set((object.clone().unbind(), off));
        }
    }
    Ok(())
}

/// The wrapper type of each kind with one of its own, labelled for the
/// world check.
fn wrapper_types(types: &Bound<'_, PyAny>) -> PyResult<Vec<(&'static str, Py<PyAny>)>> {
    let mut out = Vec::new();
    for k in ObjKind::ALL {
        let label = match k {
            ObjKind::Plain => "refcount of the plain kind's wrapper type (Node)",
            ObjKind::Dict => "refcount of the dict kind's wrapper type (DictNode)",
            ObjKind::Del => "refcount of the del kind's wrapper type (DelNode)",
            ObjKind::Weakref => "refcount of the weakref kind's wrapper type (WeakrefNode)",
            ObjKind::Sub => "refcount of the sub kind's wrapper type (SubNode)",
            ObjKind::Derived => "refcount of the derived kind's wrapper type (DerivedNode)",
            ObjKind::Cpp => "refcount of the cpp kind's wrapper type (CppNode)",
            ObjKind::List => "refcount of the list kind's wrapper type (tvm_ffi.List)",
            ObjKind::Map => "refcount of the map kind's wrapper type (tvm_ffi.Dict)",
            ObjKind::Fragile => "refcount of the fragile kind's wrapper type (FragileNode)",
            // Made with `Node`'s type.
            ObjKind::Untied | ObjKind::Legacy => continue,
        };
        out.push((label, types.get_item(k.name())?.unbind()));
    }
    Ok(out)
}

/// The key of a field's access: the interned "x", or 0.
fn field_key<'py>(py: Python<'py>, access: Access) -> Bound<'py, PyAny> {
    match access {
        Access::Attr | Access::KeyX => pyo3::intern!(py, "x").clone().into_any(),
        // A small int: CPython's cached one, no allocation.
        Access::Item0 => 0_i32
            .into_pyobject(py)
            .map_or_else(|e| match e {}, Bound::into_any),
    }
}

/// `o.x = v`, `o[0] = v` or `o["x"] = v` (None: `= None`): a call into the
/// library (an armed `oom` counts its allocations and no others).
pub(super) fn store(
    o: &Bound<'_, PyAny>,
    access: Access,
    v: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let py = o.py();
    let v = v.cloned().unwrap_or_else(|| py.None().into_bound(py));
    let key = field_key(py, access);
    let rc = crate::alloc_fault::library(|| match access {
        // SAFETY: three live objects, the GIL held.
        Access::Attr => unsafe {
            pyo3::ffi::PyObject_SetAttr(o.as_ptr(), key.as_ptr(), v.as_ptr())
        },
        // SAFETY: as above.
        Access::Item0 | Access::KeyX => unsafe {
            pyo3::ffi::PyObject_SetItem(o.as_ptr(), key.as_ptr(), v.as_ptr())
        },
    });
    if rc == -1 {
        return Err(PyErr::fetch(py));
    }
    Ok(())
}

/// `o.x`, `o[0]` or `o["x"]`: a call into the library, as [`store`].
pub(super) fn load_field<'py>(
    o: &Bound<'py, PyAny>,
    access: Access,
) -> PyResult<Bound<'py, PyAny>> {
    let py = o.py();
    let key = field_key(py, access);
    let r = crate::alloc_fault::library(|| match access {
        // SAFETY: two live objects, the GIL held.
        Access::Attr => unsafe { pyo3::ffi::PyObject_GetAttr(o.as_ptr(), key.as_ptr()) },
        // SAFETY: as above.
        Access::Item0 | Access::KeyX => unsafe {
            pyo3::ffi::PyObject_GetItem(o.as_ptr(), key.as_ptr())
        },
    });
    // SAFETY: a new reference, or NULL with the exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, r) }
}

/// `f(*args)`, a call into the library: the argument tuple is built
/// before, outside what an armed `oom` counts (its failure must land in
/// the library, not in pytie's marshalling).
pub(super) fn call<'py, A>(f: &Bound<'py, PyAny>, args: A) -> PyResult<Bound<'py, PyAny>>
where
    A: IntoPyObject<'py, Target = pyo3::types::PyTuple>,
{
    let py = f.py();
    let args = pyo3::BoundObject::into_bound(args.into_pyobject(py).map_err(Into::into)?);
    let r = crate::alloc_fault::library(|| {
        // SAFETY: a live callable and a live tuple, the GIL held.
        unsafe { pyo3::ffi::PyObject_Call(f.as_ptr(), args.as_ptr(), std::ptr::null_mut()) }
    });
    // SAFETY: a new reference, or NULL with the exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, r) }
}

/// Start-up probes: is tying active (a second return of the same object is
/// the same wrapper)? How many strong refs does a field store leak?
fn probe(py: Python<'_>, lib: &mut Lib) -> PyResult<()> {
    let a = lib.node.bind(py).call0()?;
    // SAFETY: `a` keeps the object alive for the call.
    let h = unsafe { harness::hold(chandle(&a)?) };
    let r1 = lib.ret.bind(py).call1((h.0,))?;
    let r2 = lib.ret.bind(py).call1((h.0,))?;
    lib.tying = r1.is(&r2);
    drop((r1, r2, a));
    // SAFETY: the holder made above, not used after.
    unsafe { harness::release(h) };

    // What one store leaks, per kind with a constructor (a legacy object
    // has `Node`'s type, so `Node`'s setter).
    for k in ObjKind::ALL {
        let path = lib.kind(if k == ObjKind::Legacy {
            ObjKind::Plain
        } else {
            k
        });
        let (Some(ctor), access) = (&path.ctor, path.access) else {
            continue;
        };
        let a = ctor.bind(py).call0()?;
        let b = lib.node.bind(py).call0()?;
        let hb = chandle(&b)?;
        // SAFETY: `b` keeps the object alive; the weak slot keeps the
        // header readable until the `unweak` below.
        let wb = unsafe { harness::weak(hb) };
        // SAFETY: the weak slot above keeps the storage.
        let before = unsafe { harness::counts(hb) }.0;
        store(&a, access, Some(&b))?;
        store(&a, access, None)?;
        // SAFETY: as above.
        let leak = unsafe { harness::counts(hb) }.0.saturating_sub(before);
        lib.kinds[k as usize].leak_per_store = leak;
        // Give back what the store leaked, so the probe itself leaks
        // nothing (LeakSanitizer in the fuzz target would report it).
        for _ in 0..leak {
            // SAFETY: the leaked references nobody owns; `b` still holds one.
            unsafe { capi::dec_ref(hb) };
        }
        drop((a, b));
        // SAFETY: the probe's own weak slot; `hb` is not read after.
        unsafe { harness::unweak(wb) };
    }
    Ok(())
}

/// `l = [o]; l.append(l)`, the list then let go of: a reference cycle
/// through `o`, for the collector. Made as a call into the library (an
/// armed `oom` counts its allocations); on an error nothing is left.
pub(super) fn self_list(o: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = o.py();
    let made = crate::alloc_fault::library(|| {
        // SAFETY: the GIL is held; a new list or NULL.
        let l = unsafe { pyo3::ffi::PyList_New(0) };
        if l.is_null() {
            return false;
        }
        // SAFETY: `l` is a live list, `o` a live object; append takes its
        // own references.
        let ok = unsafe {
            pyo3::ffi::PyList_Append(l, o.as_ptr()) == 0 && pyo3::ffi::PyList_Append(l, l) == 0
        };
        // SAFETY: our reference to `l`: the cycle (if made) keeps it.
        unsafe { pyo3::ffi::Py_DECREF(l) };
        ok
    });
    if made { Ok(()) } else { Err(PyErr::fetch(py)) }
}

/// `e`, raised by `op` after an armed allocation failed, is that failure's
/// error (contract §4.4): a MemoryError, itself or as the cause or context
/// of what was raised, or, for `pickle`, the PicklingError CPython's
/// `_pickle` raises in place of the failed import of the class's module
/// (it keeps no cause).
pub(super) fn from_no_memory(py: Python<'_>, op: &pytie_core::program::Op, e: &PyErr) -> bool {
    in_chain(py, e, |x| {
        x.is_instance_of::<pyo3::exceptions::PyMemoryError>(py)
    }) || (matches!(op, pytie_core::program::Op::Pickle { .. })
        && py
            .import("pickle")
            .and_then(|m| m.getattr("PicklingError"))
            .is_ok_and(|t| e.get_type(py).is(&t)))
}

/// `e` (or an error in its cause or context chain) is CPython's complaint
/// that a function returned NULL with no error set: the error it was
/// raising was lost (`pytie_core::tvmffi::FRAME_FINDING`), passed on by
/// tvm_ffi as its own error where it crossed C++.
pub(super) fn lost_by_cpython(py: Python<'_>, e: &PyErr) -> bool {
    in_chain(py, e, |x| {
        let msg = x.value(py).to_string();
        msg.contains("returned NULL without setting an exception")
            || msg.contains("error return without exception set")
    })
}

/// `e`, or an error in its cause or context chain (the first 8), is one
/// `is` says.
fn in_chain(py: Python<'_>, e: &PyErr, is: impl Fn(&PyErr) -> bool) -> bool {
    let mut cur = Some(e.clone_ref(py));
    for _ in 0..8 {
        let Some(x) = cur else { break };
        if is(&x) {
            return true;
        }
        cur = x.cause(py).or_else(|| {
            let ctx = x.value(py).getattr(pyo3::intern!(py, "__context__")).ok()?;
            (!ctx.is_none()).then(|| PyErr::from_value(ctx))
        });
    }
    false
}

/// The message of the error the glue's raising callback raises.
pub(super) const RAISED: &str = "pytie: the callback raised";

/// `e` is the raising callback's error as it came back through C++ (tvm_ffi
/// passes it on as an error of its own carrying the message). Its frames
/// (the callback's, whose local is the argument's wrapper) are let go of.
pub(super) fn raised_by_callback(py: Python<'_>, e: PyErr) -> Result<(), PyErr> {
    if !e.value(py).to_string().contains(RAISED) {
        return Err(e);
    }
    drop(without_frames(py, e));
    Ok(())
}

/// Is `e` a `fragile` wrapper's refused construction (R20), itself or as
/// tvm_ffi passes it on where it crossed C++ (its message kept)?
pub(super) fn refused(py: Python<'_>, e: &PyErr) -> bool {
    e.value(py)
        .to_string()
        .contains("pytie: construction refused")
}

/// `e` without its frames: the traceback of the error and of the errors in
/// its context chain let go of (their frames' locals may be wrappers a
/// step counts). The same error value.
pub(super) fn without_frames(py: Python<'_>, e: PyErr) -> PyErr {
    let value = e.value(py).clone().into_any();
    drop(e);
    let mut cur = Some(value.clone());
    for _ in 0..8 {
        let Some(x) = cur else { break };
        let _ = x.setattr(pyo3::intern!(py, "__traceback__"), py.None());
        cur = x
            .getattr(pyo3::intern!(py, "__context__"))
            .ok()
            .filter(|c| !c.is_none());
    }
    PyErr::from_value(value)
}
