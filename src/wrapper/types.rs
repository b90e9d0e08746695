//! The Python types, built with `PyType_FromSpec` and raw slots because
//! `#[pyclass]` cannot express a resurrecting finalizer or counted
//! alloc/free: `plain` (eligible, non-GC so its finalizer runs on every
//! generation), `fragile` (`plain`'s slots under a type of its own, whose
//! construction for a return raises: contract R20), `dict` (instance
//! `__dict__`, GC, ineligible), and `Cycle`
//! (a GC node pointing at a wrapper and at itself, for the `cycle` step).

use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::OnceLock;

use pyo3::ffi;
use pyo3::prelude::*;

use super::{accounts, tying};
use crate::native::{Object, TYPE_DICT, TYPE_FRAGILE};

/// Memory layout of every wrapper.
#[repr(C)]
pub struct PyWrapper {
    pub ob_base: ffi::PyObject,
    /// The handle, or NULL (moved-from, Inactive).
    pub chandle: *mut Object,
    /// Allocation serial since the last reset: the wrapper number.
    pub serial: u32,
}

/// Memory layout of a `dict` wrapper.
#[repr(C)]
pub struct DictWrapper {
    pub base: PyWrapper,
    pub dict: *mut ffi::PyObject,
}

/// Memory layout of a cycle node: `item` is the wrapper, `next` itself.
#[repr(C)]
pub struct CycleNode {
    pub ob_base: ffi::PyObject,
    pub item: *mut ffi::PyObject,
    pub next: *mut ffi::PyObject,
}

/// The process's type objects and functions (created once).
struct Types {
    plain: usize,
    /// The eligible type made a GC type (mutant `gc-finalize-once` only).
    #[cfg(feature = "mutants")]
    plain_gc: usize,
    fragile: usize,
    dict: usize,
    cycle: usize,
    moved_error: usize,
    /// What a `fragile` wrapper's construction raises (R20).
    refused_error: usize,
    echo: usize,
    gc_collect: usize,
}

static TYPES: OnceLock<Types> = OnceLock::new();

fn types() -> &'static Types {
    TYPES
        .get()
        .expect("pytie wrapper layer not initialized (wrapper::init)")
}

pub fn plain_type() -> *mut ffi::PyTypeObject {
    types().plain as *mut ffi::PyTypeObject
}

pub fn dict_type() -> *mut ffi::PyTypeObject {
    types().dict as *mut ffi::PyTypeObject
}

pub fn fragile_type() -> *mut ffi::PyTypeObject {
    types().fragile as *mut ffi::PyTypeObject
}

pub fn refused_error() -> *mut ffi::PyObject {
    types().refused_error as *mut ffi::PyObject
}

fn cycle_type() -> *mut ffi::PyTypeObject {
    types().cycle as *mut ffi::PyTypeObject
}

pub fn moved_error() -> *mut ffi::PyObject {
    types().moved_error as *mut ffi::PyObject
}

pub fn echo_function() -> *mut ffi::PyObject {
    types().echo as *mut ffi::PyObject
}

/// Python's `gc.collect` (the C API's `PyGC_Collect` does nothing while
/// automatic collection is disabled).
pub fn gc_collect_function() -> *mut ffi::PyObject {
    types().gc_collect as *mut ffi::PyObject
}

/// The interpreter objects this layer made and every program shares, by
/// name: the wrapper types, the cycle node type, `MovedError`, the FFI
/// function and `gc.collect` (the world's conservation check reads their
/// reference counts before and after each program).
pub fn for_each_shared(mut f: impl FnMut(&'static str, *mut ffi::PyObject)) {
    let t = types();
    for (n, p) in [
        ("the eligible wrapper type", t.plain),
        ("the dict wrapper type", t.dict),
        ("the fragile wrapper type", t.fragile),
        ("ConstructionRefused", t.refused_error),
        ("the cycle node type", t.cycle),
        ("MovedError", t.moved_error),
        ("the FFI function f", t.echo),
        ("gc.collect", t.gc_collect),
        #[cfg(feature = "mutants")]
        ("the GC wrapper type (mutant gc-finalize-once)", t.plain_gc),
    ] {
        f(n, p as *mut ffi::PyObject);
    }
}

/// The wrapper type for an object's type index.
pub fn wrapper_type_for(type_index: i32) -> *mut ffi::PyTypeObject {
    if type_index == TYPE_DICT {
        dict_type()
    } else if type_index == TYPE_FRAGILE {
        fragile_type()
    } else {
        #[cfg(feature = "mutants")]
        if mutant!(GcFinalizeOnce) {
            return types().plain_gc as *mut ffi::PyTypeObject;
        }
        plain_type()
    }
}

/// Is `o` one of our wrappers?
///
/// # Safety
/// GIL held, `o` live.
pub unsafe fn is_wrapper(o: *mut ffi::PyObject) -> bool {
    // SAFETY: GIL held, live object.
    let tp = unsafe { ffi::Py_TYPE(o) };
    #[cfg(feature = "mutants")]
    if tp as usize == types().plain_gc {
        return true;
    }
    tp == plain_type() || tp == dict_type() || tp == fragile_type()
}

/// `tp_alloc` of the wrapper types: counted, numbered.
///
/// # Safety
/// GIL held; `tp` is a wrapper type.
pub unsafe extern "C" fn wrapper_alloc(
    tp: *mut ffi::PyTypeObject,
    n: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // SAFETY: GIL held; generic allocation zeroes the object and, for GC
    // types, tracks it.
    let w = unsafe { ffi::PyType_GenericAlloc(tp, n) };
    if !w.is_null() {
        let serial = accounts::wrapper_allocated(w as usize);
        // SAFETY: fresh wrapper memory of at least `PyWrapper`'s size.
        unsafe { (*w.cast::<PyWrapper>()).serial = serial };
    }
    w
}

/// `tp_free` of the wrapper types: counted.
///
/// # Safety
/// GIL held; `p` is a dead wrapper whose type is still referenced.
pub unsafe extern "C" fn wrapper_free(p: *mut c_void) {
    if !accounts::wrapper_freed(p as usize) {
        return;
    }
    // SAFETY: `p` is a wrapper allocated by PyType_GenericAlloc; the
    // matching free depends on whether its type is a GC type.
    unsafe {
        let tp = ffi::Py_TYPE(p.cast());
        if ffi::PyType_GetFlags(tp) & ffi::Py_TPFLAGS_HAVE_GC != 0 {
            ffi::PyObject_GC_Del(p);
        } else {
            ffi::PyObject_Free(p);
        }
    }
}

unsafe extern "C" fn dict_traverse(
    w: *mut ffi::PyObject,
    visit: ffi::visitproc,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: CPython traverses live objects with the GIL.
    unsafe {
        let d = (*w.cast::<DictWrapper>()).dict;
        if !d.is_null() {
            let r = visit(d, arg);
            if r != 0 {
                return r;
            }
        }
        visit(ffi::Py_TYPE(w).cast(), arg)
    }
}

#[cfg(feature = "mutants")]
unsafe extern "C" fn type_only_traverse(
    w: *mut ffi::PyObject,
    visit: ffi::visitproc,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: CPython traverses live objects with the GIL.
    unsafe { visit(ffi::Py_TYPE(w).cast(), arg) }
}

unsafe extern "C" fn dict_tp_clear(w: *mut ffi::PyObject) -> c_int {
    // SAFETY: CPython clears live objects with the GIL.
    unsafe { dict_clear(w) };
    0
}

/// Drop a `dict` wrapper's instance dictionary.
///
/// # Safety
/// GIL held; `w` is a `dict` wrapper.
pub(super) unsafe fn dict_clear(w: *mut ffi::PyObject) {
    // SAFETY: `w` is a live dict wrapper; Py_XDECREF after nulling.
    unsafe {
        let slot = &mut (*w.cast::<DictWrapper>()).dict;
        let d = std::mem::replace(slot, ptr::null_mut());
        if !d.is_null() {
            ffi::Py_DECREF(d);
        }
    }
}

unsafe extern "C" fn cycle_traverse(
    c: *mut ffi::PyObject,
    visit: ffi::visitproc,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: CPython traverses live objects with the GIL.
    unsafe {
        let node = &*c.cast::<CycleNode>();
        for o in [node.item, node.next, ffi::Py_TYPE(c).cast()] {
            if !o.is_null() {
                let r = visit(o, arg);
                if r != 0 {
                    return r;
                }
            }
        }
    }
    0
}

unsafe extern "C" fn cycle_clear(c: *mut ffi::PyObject) -> c_int {
    // SAFETY: CPython clears live objects with the GIL; each pointer is
    // nulled before its reference is dropped.
    unsafe {
        let node = &mut *c.cast::<CycleNode>();
        for slot in [&mut node.next, &mut node.item] {
            let o = std::mem::replace(slot, ptr::null_mut());
            if !o.is_null() {
                ffi::Py_DECREF(o);
            }
        }
    }
    0
}

unsafe extern "C" fn cycle_dealloc(c: *mut ffi::PyObject) {
    // SAFETY: CPython calls dealloc with the GIL on a dead GC object.
    unsafe {
        ffi::PyObject_GC_UnTrack(c.cast());
        cycle_clear(c);
        accounts::cycle_died(c as usize);
        let tp = ffi::Py_TYPE(c);
        ffi::PyObject_GC_Del(c.cast());
        ffi::Py_DECREF(tp.cast());
    }
}

/// Put `w` (a new reference, given away) into a new reference cycle that
/// nothing else refers to: it dies at the next collection.
///
/// # Safety
/// GIL held; `w` live, its reference handed over.
pub unsafe fn make_cycle(w: *mut ffi::PyObject) -> PyResult<()> {
    let tp = cycle_type();
    // SAFETY: GIL held; generic allocation zeroes and tracks the node.
    let c = unsafe { ffi::PyType_GenericAlloc(tp, 0) };
    if c.is_null() {
        // SAFETY: the reference was handed to us.
        unsafe { ffi::Py_DECREF(w) };
        // SAFETY: GIL held by contract of this function.
        return Err(PyErr::fetch(unsafe { Python::assume_attached() }));
    }
    accounts::cycle_born(c as usize);
    // SAFETY: fresh node; it takes `w` and a reference to itself, then our
    // creation reference is dropped, leaving the node kept by itself only.
    unsafe {
        let node = &mut *c.cast::<CycleNode>();
        node.item = w;
        node.next = ffi::Py_NewRef(c);
        ffi::Py_DECREF(c);
    }
    Ok(())
}

fn leak<T>(v: Vec<T>) -> *mut T {
    Box::leak(v.into_boxed_slice()).as_mut_ptr()
}

fn slot(slot: c_int, pfunc: *mut c_void) -> ffi::PyType_Slot {
    ffi::PyType_Slot { slot, pfunc }
}

/// Create a heap type from slots. `PyType_FromSpec` copies the spec and
/// the slot array; what the slots point to (getset, members) must live as
/// long as the type.
fn make_type(
    py: Python<'_>,
    name: &'static std::ffi::CStr,
    basicsize: usize,
    flags: u64,
    slots: Vec<ffi::PyType_Slot>,
) -> PyResult<usize> {
    let mut slots = slots;
    slots.push(ffi::PyType_Slot::default());
    let mut spec = ffi::PyType_Spec {
        name: name.as_ptr(),
        basicsize: basicsize as c_int,
        itemsize: 0,
        flags: flags as std::ffi::c_uint,
        slots: slots.as_mut_ptr(),
    };
    // SAFETY: GIL held (py); spec and slots outlive the call.
    let tp = unsafe { ffi::PyType_FromSpec(&mut spec) };
    if tp.is_null() {
        return Err(PyErr::fetch(py));
    }
    Ok(tp as usize)
}

fn c_fn(
    name: &'static std::ffi::CStr,
    f: ffi::PyCFunction,
    flags: c_int,
    py: Python<'_>,
) -> PyResult<usize> {
    let def = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: f },
        ml_flags: flags,
        ml_doc: ptr::null(),
    }));
    // SAFETY: GIL held; the method definition lives forever.
    let f = unsafe { ffi::PyCFunction_NewEx(def, ptr::null_mut(), ptr::null_mut()) };
    if f.is_null() {
        return Err(PyErr::fetch(py));
    }
    Ok(f as usize)
}

fn build(py: Python<'_>) -> PyResult<Types> {
    let getset = leak(vec![
        ffi::PyGetSetDef {
            name: c"x".as_ptr(),
            get: Some(tying::get_x),
            set: Some(tying::set_x),
            doc: c"the native object's field".as_ptr(),
            closure: ptr::null_mut(),
        },
        ffi::PyGetSetDef::default(),
    ]);
    // Copied into the type by PyType_FromSpec (unlike getset): a local.
    let mut dict_members = vec![
        ffi::PyMemberDef {
            name: c"__dictoffset__".as_ptr(),
            type_code: ffi::Py_T_PYSSIZET,
            offset: std::mem::offset_of!(DictWrapper, dict) as ffi::Py_ssize_t,
            flags: ffi::Py_READONLY,
            doc: ptr::null(),
        },
        ffi::PyMemberDef::default(),
    ];
    let base = ffi::Py_TPFLAGS_DEFAULT | ffi::Py_TPFLAGS_DISALLOW_INSTANTIATION;
    let wrapper_slots = |dealloc: *mut c_void| {
        vec![
            slot(ffi::Py_tp_dealloc, dealloc),
            slot(ffi::Py_tp_alloc, wrapper_alloc as *mut c_void),
            slot(ffi::Py_tp_free, wrapper_free as *mut c_void),
            slot(ffi::Py_tp_getset, getset.cast()),
        ]
    };
    let mut plain_slots = wrapper_slots(tying::plain_dealloc as *mut c_void);
    plain_slots.push(slot(
        ffi::Py_tp_finalize,
        tying::plain_finalize as *mut c_void,
    ));
    let fragile_slots = plain_slots.clone();
    let plain = make_type(
        py,
        c"pytie.plain",
        size_of::<PyWrapper>(),
        base,
        plain_slots,
    )?;
    let fragile = make_type(
        py,
        c"pytie.fragile",
        size_of::<PyWrapper>(),
        base,
        fragile_slots,
    )?;
    #[cfg(feature = "mutants")]
    let plain_gc = {
        let mut slots = wrapper_slots(tying::plain_gc_dealloc as *mut c_void);
        slots.push(slot(
            ffi::Py_tp_finalize,
            tying::plain_finalize as *mut c_void,
        ));
        slots.push(slot(ffi::Py_tp_traverse, type_only_traverse as *mut c_void));
        let flags = base | ffi::Py_TPFLAGS_HAVE_GC;
        make_type(py, c"pytie.plain_gc", size_of::<PyWrapper>(), flags, slots)?
    };

    let mut dict_slots = wrapper_slots(tying::dict_dealloc as *mut c_void);
    dict_slots.push(slot(ffi::Py_tp_traverse, dict_traverse as *mut c_void));
    dict_slots.push(slot(ffi::Py_tp_clear, dict_tp_clear as *mut c_void));
    dict_slots.push(slot(ffi::Py_tp_members, dict_members.as_mut_ptr().cast()));
    let gc = base | ffi::Py_TPFLAGS_HAVE_GC;
    let dict = make_type(py, c"pytie.dict", size_of::<DictWrapper>(), gc, dict_slots)?;

    let cycle_slots = vec![
        slot(ffi::Py_tp_dealloc, cycle_dealloc as *mut c_void),
        slot(ffi::Py_tp_traverse, cycle_traverse as *mut c_void),
        slot(ffi::Py_tp_clear, cycle_clear as *mut c_void),
    ];
    let cycle = make_type(py, c"pytie.Cycle", size_of::<CycleNode>(), gc, cycle_slots)?;

    // SAFETY: GIL held; name and base are valid.
    let moved_error = unsafe {
        ffi::PyErr_NewException(
            c"pytie.MovedError".as_ptr(),
            ffi::PyExc_ValueError,
            ptr::null_mut(),
        )
    };
    if moved_error.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: as above.
    let refused_error = unsafe {
        ffi::PyErr_NewException(
            c"pytie.ConstructionRefused".as_ptr(),
            ffi::PyExc_RuntimeError,
            ptr::null_mut(),
        )
    };
    if refused_error.is_null() {
        return Err(PyErr::fetch(py));
    }
    let echo = c_fn(c"echo", tying::echo, ffi::METH_O, py)?;

    // Interpreter finalization sets the shutdown flag.
    let hook = c_fn(
        c"mark_finalizing",
        tying::mark_finalizing,
        ffi::METH_NOARGS,
        py,
    )?;
    // SAFETY: `hook` is a new reference we own.
    let hook = unsafe { Bound::from_owned_ptr(py, hook as *mut ffi::PyObject) };
    py.import("atexit")?.call_method1("register", (hook,))?;
    // Cycles die at `collect` steps only, never at an allocation threshold.
    let gc = py.import("gc")?;
    gc.call_method0("disable")?;
    let gc_collect = gc.getattr("collect")?.into_ptr() as usize;

    // Everything alive now (interpreter start-up, these types) moves to
    // the permanent generation: a `collect` step stays a full
    // `gc.collect()` but only walks what programs made.
    gc.call_method0("collect")?;
    gc.call_method0("freeze")?;

    Ok(Types {
        plain,
        #[cfg(feature = "mutants")]
        plain_gc,
        fragile,
        dict,
        cycle,
        moved_error: moved_error as usize,
        refused_error: refused_error as usize,
        echo,
        gc_collect,
    })
}

/// Create the types once per process.
pub fn init(py: Python<'_>) -> PyResult<()> {
    if TYPES.get().is_none() {
        let t = build(py)?;
        let _ = TYPES.set(t);
    }
    Ok(())
}
