//! `pytie repro --python`: a program as a standalone Python script that
//! reproduces it on tvm_ffi alone, for an upstream bug report. The script
//! performs each step the way the tvm-ffi backend does (the same py_class
//! types, `testing.echo`, C functions registered through the C API with
//! ctypes, holders as `TVMFFIObjectIncRef`/`DecRef`), and after each step
//! checks what the reference model (in the profile given) expects: strong
//! counts, which vars hold the same wrapper, which hold moved-from ones,
//! and at the end that every object is freed. It prints one line per
//! expectation that fails and exits 1 if any did.
//!
//! Plain text generation: no `unsafe`, no Python.
#![forbid(unsafe_code)]

use std::fmt::Write;

use crate::model::{Design, Model};
use crate::program::{Holds, ObjKind, Op, Program, SourceRule, VARS, Var};
use crate::state::{AbstractState, StepResult, VarState};
use crate::tvmffi;

const PRELUDE: &str = r#"import ctypes
import gc
import pickle
import sys
import threading
import weakref
from typing import Optional

import tvm_ffi
from tvm_ffi import Object
from tvm_ffi.dataclasses import c_class, py_class

gc.disable()  # reference cycles die at `collect` steps only


# ---- the object kinds (pytie's contract §2.2) ----
@py_class("repro.Node")
class Node(Object):
    x: Optional[Object] = None


@py_class("repro.DictNode")
class DictNode(Object):
    __slots__ = ("__dict__",)
    x: Optional[Object] = None


@py_class("repro.DelNode")
class DelNode(Object):  # a finalizer: never cached, one __del__ per drop
    x: Optional[Object] = None

    def __del__(self):
        pass


@py_class("repro.WeakrefNode")
class WeakrefNode(Object):
    __slots__ = ("__weakref__",)
    x: Optional[Object] = None


class SubNode(Node):  # a subclass the library never registered
    __slots__ = ()


@py_class("repro.DerivedNode")
class DerivedNode(Node):  # a registered subclass
    pass


# `new V fragile`: a registered type whose construction raises unless its
# constructor makes it (contract R20): every wrapper the library makes for
# a return (fresh, or revived in place) raises after `super().__new__`.
CONSTRUCTING = [False]


class ConstructionRefused(Exception):
    """What a fragile type's __new__ raises outside its constructor."""


@py_class("repro.FragileNode")
class FragileNode(Object):
    x: Optional[Object] = None

    def __new__(cls, *args, **kwargs):
        o = super().__new__(cls)
        if not CONSTRUCTING[0]:
            raise ConstructionRefused("pytie: construction refused")
        return o


def new_fragile():
    CONSTRUCTING[0] = True
    try:
        return FragileNode()
    finally:
        CONSTRUCTING[0] = False


# `new V cpp`: an object made in C++ by make_object and returned the first
# time. Compiled here against this tvm_ffi's own headers (needs a C++17
# compiler: $CXX, default g++).
CPP_NODE = r"""
#include <tvm/ffi/any.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/memory.h>
#include <tvm/ffi/object.h>
#include <tvm/ffi/reflection/registry.h>
class ReproCppNodeObj : public tvm::ffi::Object {
 public:
  tvm::ffi::Any x;
  static constexpr bool _type_mutable = true;
  TVM_FFI_DECLARE_OBJECT_INFO_FINAL("repro.CppNode", ReproCppNodeObj, tvm::ffi::Object);
};
TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::ObjectDef<ReproCppNodeObj>().def_rw("x", &ReproCppNodeObj::x);
  refl::GlobalDef().def("repro.new_cpp", []() -> tvm::ffi::ObjectRef {
    return tvm::ffi::ObjectRef(tvm::ffi::make_object<ReproCppNodeObj>());
  });
}
"""
_NEW_CPP = []


def compile_cpp(name, source):
    """Compile C++ `source` against this tvm_ffi's headers into a shared
    library and load it (needs a C++17 compiler: $CXX, default g++)."""
    import os
    import subprocess
    import tempfile
    import tvm_ffi.libinfo as li
    d = tempfile.mkdtemp(prefix=f"repro-{name}-")
    src, lib = os.path.join(d, f"{name}.cc"), os.path.join(d, f"lib{name}.so")
    with open(src, "w") as f:
        f.write(source)
    libdir = os.path.dirname(li.find_libtvm_ffi())
    subprocess.check_call([os.environ.get("CXX", "g++"), "-std=c++17", "-O2", "-fPIC",
                           "-shared", *["-I" + p for p in li.include_paths()], src, "-o", lib,
                           "-L" + libdir, "-ltvm_ffi", "-Wl,-rpath," + libdir])
    return ctypes.CDLL(lib)


def new_cpp():
    if not _NEW_CPP:
        compile_cpp("cpp_node", CPP_NODE)

        @c_class("repro.CppNode")
        class CppNode(Object):
            x: Optional[Object]

        _NEW_CPP.append((CppNode, tvm_ffi.get_global_func("repro.new_cpp")))
    return _NEW_CPP[0][1]()


CTORS = {
    "plain": Node, "dict": DictNode, "del": DelNode, "weakref": WeakrefNode,
    "sub": SubNode, "derived": DerivedNode, "cpp": new_cpp,
    "list": lambda: tvm_ffi.List([None]), "map": lambda: tvm_ffi.Dict({"x": None}),
    "fragile": new_fragile,
}


def getx(o):  # the object's one field: o.x, o[0] (a List), o["x"] (a Dict)
    if isinstance(o, tvm_ffi.List):
        return o[0]
    if isinstance(o, tvm_ffi.Dict):
        return o["x"]
    return o.x


def setx(o, v):
    if isinstance(o, tvm_ffi.List):
        o[0] = v
    elif isinstance(o, tvm_ffi.Dict):
        o["x"] = v
    else:
        o.x = v


# ---- the C++ side, through tvm-ffi's C API (include/tvm/ffi/c_api.h) ----
class Any(ctypes.Structure):
    _fields_ = [("type_index", ctypes.c_int32), ("pad", ctypes.c_uint32), ("v", ctypes.c_uint64)]


class ByteArray(ctypes.Structure):
    _fields_ = [("data", ctypes.c_char_p), ("size", ctypes.c_size_t)]


SAFE_CALL = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(Any), ctypes.c_int32, ctypes.POINTER(Any))
FN_DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
OBJ_DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int)
LIB = ctypes.CDLL(tvm_ffi.libinfo.find_libtvm_ffi())
LIB.TVMFFIObjectIncRef.argtypes = [ctypes.c_void_p]
LIB.TVMFFIObjectDecRef.argtypes = [ctypes.c_void_p]
LIB.TVMFFIFunctionCreate.argtypes = [
    ctypes.c_void_p, SAFE_CALL, FN_DELETER, ctypes.POINTER(ctypes.c_void_p)]
LIB.TVMFFIFunctionSetGlobal.argtypes = [ctypes.POINTER(ByteArray), ctypes.c_void_p, ctypes.c_int]
LIB.TVMFFIAnyViewToOwnedAny.argtypes = [ctypes.POINTER(Any), ctypes.POINTER(Any)]


@FN_DELETER
def _no_delete(_self):
    pass


def register(name, fn):
    """A C function as the global FFI function `name`."""
    h = ctypes.c_void_p()
    assert LIB.TVMFFIFunctionCreate(None, fn, _no_delete, ctypes.byref(h)) == 0
    b = name.encode()
    assert LIB.TVMFFIFunctionSetGlobal(ctypes.byref(ByteArray(b, len(b))), h, 1) == 0
    LIB.TVMFFIObjectDecRef(h)
    return tvm_ffi.get_global_func(name)


@SAFE_CALL
def _ret(_self, args, n, out):
    # C++ returns a held object: IncRef; the caller owns the result.
    addr = args[0].v
    LIB.TVMFFIObjectIncRef(addr)
    out[0].type_index = ctypes.c_int32.from_address(addr + 8).value
    out[0].v = addr
    return 0


TAKEN = []


@SAFE_CALL
def _take(_self, args, n, out):
    # C++ stores its argument; an rvalue ref (`x._move()`) is taken over.
    owned = Any()
    rc = LIB.TVMFFIAnyViewToOwnedAny(args, ctypes.byref(owned))
    if rc == 0:
        TAKEN.append(owned.v)
    return rc


@SAFE_CALL
def _lock(_self, args, n, out):
    # C++ returns weak.lock() (object.h TryPromoteWeakPtr): strong += 1
    # only while strong > 0; the object, or None.
    addr = args[0].v
    c = ctypes.c_uint64.from_address(addr)
    if c.value & 0xFFFFFFFF:
        c.value += 1
        out[0].type_index = ctypes.c_int32.from_address(addr + 8).value
        out[0].v = addr
    else:
        out[0].type_index = 0
        out[0].v = 0
    return 0


# A legacy-layout object: what an extension compiled against the published
# (pre-tying) headers makes: a Node-layout object from plain malloc, with no
# allocation prefix before its body, and its own deleter.
LIBC = ctypes.CDLL(None)
LIBC.calloc.restype = ctypes.c_void_p
LIBC.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
LIBC.free.argtypes = [ctypes.c_void_p]
FIELD_X = [f for f in Node.__tvm_ffi_type_info__.fields if f.name == "x"][0].offset
_n = Node()
NODE_TYPE = ctypes.c_int32.from_address(_n.__chandle__() + 8).value
del _n


@OBJ_DELETER
def _legacy_deleter(addr, flags):
    if flags & 1:  # strong 0: release the field
        f = Any.from_address(addr + FIELD_X)
        if f.type_index >= 64:
            LIB.TVMFFIObjectDecRef(f.v)
        f.type_index, f.v = 0, 0
    if flags & 2:  # weak 0: free the body itself (there is no delete_space)
        LIBC.free(addr)


@SAFE_CALL
def _new_legacy(_self, args, n, out):
    addr = LIBC.calloc(1, FIELD_X + 16)
    ctypes.c_uint64.from_address(addr).value = 1 | (1 << 32)
    ctypes.c_int32.from_address(addr + 8).value = NODE_TYPE
    ctypes.c_void_p.from_address(addr + 16).value = ctypes.cast(
        _legacy_deleter, ctypes.c_void_p).value
    out[0].type_index = NODE_TYPE
    out[0].v = addr
    return 0


ret = register("repro.ret", _ret)      # ret(addr): return a held object to Python
lock = register("repro.lock", _lock)   # lock(addr): return weak.lock() to Python
new_legacy = register("repro.new_legacy", _new_legacy)  # a legacy-layout object
take = register("repro.take", _take)   # take(x._move()): C++ takes x's reference
echo = tvm_ffi.get_global_func("testing.echo")

HOLDERS = [0, 0, 0, 0]  # C++ holders: object addresses, one strong ref each


def store(h, addr):
    old, HOLDERS[h] = HOLDERS[h], addr
    if old:
        LIB.TVMFFIObjectDecRef(old)


def hold(h, w):
    addr = w.__chandle__()
    if addr == 0:
        raise RuntimeError("moved-from wrapper: nothing to hold")
    LIB.TVMFFIObjectIncRef(addr)
    store(h, addr)


def move(h, w):
    take(w._move())
    store(h, TAKEN.pop())


def release(h, foreign=False):
    addr, HOLDERS[h] = HOLDERS[h], 0
    if addr and foreign:  # on a thread that does not hold the GIL
        t = threading.Thread(target=LIB.TVMFFIObjectDecRef, args=(addr,))
        t.start()
        t.join()
    elif addr:
        LIB.TVMFFIObjectDecRef(addr)


WEAKS = [0, 0]  # C++ weak references (WeakObjectPtr): object addresses


def dec_weak(addr):
    c = ctypes.c_uint64.from_address(addr)
    c.value -= 1 << 32
    if c.value == 0:
        OBJ_DELETER(ctypes.c_void_p.from_address(addr + 16).value)(addr, 2)


def weak(s, w):
    addr = w.__chandle__()
    if addr == 0:
        raise RuntimeError("moved-from wrapper: nothing to hold weakly")
    ctypes.c_uint64.from_address(addr).value += 1 << 32
    old, WEAKS[s] = WEAKS[s], addr
    if old:
        dec_weak(old)


def unweak(s):
    addr, WEAKS[s] = WEAKS[s], 0
    if addr:
        dec_weak(addr)


# obj#N's address. One weak reference is kept on each object (object.h
# IncWeakRef/DecWeakRef) so its header stays readable after it dies.
OBJ = []


def observe(w):
    addr = w.__chandle__()
    OBJ.append(addr)
    ctypes.c_uint64.from_address(addr).value += 1 << 32


LIB.TVMFFIFunctionGetGlobal.argtypes = [ctypes.POINTER(ByteArray), ctypes.POINTER(ctypes.c_void_p)]
LIB.TVMFFIFunctionCall.argtypes = [
    ctypes.c_void_p, ctypes.POINTER(Any), ctypes.c_int32, ctypes.POINTER(Any)]


def field_offset(cls):
    for c in cls.__mro__:
        info = c.__dict__.get("__tvm_ffi_type_info__")
        for f in (info.fields if info is not None else []):
            if f.name == "x":
                return f.offset
    raise TypeError(f"{cls.__name__} has no reflected field x")


def part_of(addr, kind):
    """The object in the field of the object at addr (of `kind`), read in C++:
    no wrapper is made, so no binding changes."""
    if kind in ("list", "map"):
        args = (Any * 2)()
        args[0].type_index = ctypes.c_int32.from_address(addr + 8).value
        args[0].v = addr
        if kind == "list":  # element 0
            name, args[1].type_index, args[1].v = b"ffi.ListGetItem", 1, 0
        else:  # the value under "x" (a small string: length in the pad word)
            name, args[1].type_index, args[1].pad, args[1].v = b"ffi.DictGetItem", 11, 1, ord("x")
        fn = ctypes.c_void_p()
        assert LIB.TVMFFIFunctionGetGlobal(ctypes.byref(ByteArray(name, len(name))),
                                           ctypes.byref(fn)) == 0
        out = Any()
        assert LIB.TVMFFIFunctionCall(fn, args, 2, ctypes.byref(out)) == 0
        LIB.TVMFFIObjectDecRef(out.v)  # the call's +1; the field keeps it
        LIB.TVMFFIObjectDecRef(fn)
        return out.v
    cls = _NEW_CPP[0][0] if kind == "cpp" else CTORS[kind]
    return Any.from_address(addr + field_offset(cls)).v


def observe_copy(w, kinds):
    """`pickle`: the copy's root, then each part along the field, in the
    model's numbering (kinds: the copies' kinds, root first)."""
    addr = w.__chandle__()
    for k, kind in enumerate(kinds):
        if k:
            addr = part_of(addr, kinds[k - 1])
        OBJ.append(addr)
        ctypes.c_uint64.from_address(addr).value += 1 << 32


def strong_count(n):
    return ctypes.c_uint64.from_address(OBJ[n]).value & 0xFFFFFFFF


def unobserve_all():
    for addr in OBJ:
        dec_weak(addr)


# ---- what the contract expects ----
FAILED = 0
V = {}  # the program's vars


def fail(msg):
    global FAILED
    FAILED += 1
    print("  FAIL " + msg, flush=True)


def step(n, text):
    print(f"step {n}: {text}", flush=True)


def unexpected(e):
    fail(f"raised {type(e).__name__}: {e}")


def strong(n, want):
    got = strong_count(n)
    if got != want:
        fail(f"obj#{n} has strong {got}; the contract expects {want}")


def same(a, b, want):
    got = V.get(a) is V.get(b)
    if got != want:
        fail(f"`{a} is {b}` is {got}; the contract expects {want}")


def moved(a, want):
    w = V.get(a)
    got = w is not None and w.__chandle__() == 0
    if w is None or got != want:
        what = "a moved-from wrapper" if want else "a live wrapper"
        fail(f"{a} holds {w!r}; the contract expects {what}")


def none(a):
    if V.get(a) is not None:
        fail(f"{a} holds {V[a]!r}; the contract expects None or nothing")


# `call V H` / `call_move V H`: C++ calls a Python callback with a held
# object, borrowed or moved (an rvalue), and returns what it returns;
# compiled here against this tvm_ffi's headers, as `new_cpp` is.
CALLBACK_SRC = r"""
#include <tvm/ffi/any.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/object.h>
#include <tvm/ffi/reflection/registry.h>
#include <tvm/ffi/rvalue_ref.h>
using tvm::ffi::Any;
using tvm::ffi::Function;
using tvm::ffi::Object;
using tvm::ffi::ObjectRef;
using tvm::ffi::details::ObjectUnsafe;
TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::GlobalDef()
      .def("repro.call", [](int64_t addr, Function cb) -> Any {
        ObjectRef r(ObjectUnsafe::ObjectPtrFromUnowned<Object>(reinterpret_cast<Object*>(addr)));
        return cb(r);
      })
      .def("repro.call_move", [](int64_t addr, Function cb) -> Any {
        ObjectRef r(ObjectUnsafe::ObjectPtrFromOwned<Object>(reinterpret_cast<Object*>(addr)));
        return cb(tvm::ffi::RValueRef<ObjectRef>(std::move(r)));
      });
}
"""
_CALLBACK = []


def _callback_fns():
    """The C++ side of `call` (compiled once) and `lambda x: x`."""
    if not _CALLBACK:
        compile_cpp("callback", CALLBACK_SRC)
        _CALLBACK.append((tvm_ffi.get_global_func("repro.call"),
                          tvm_ffi.get_global_func("repro.call_move"),
                          tvm_ffi.convert(lambda x: x)))
    return _CALLBACK[0]


def callback(h, move):
    """C++ calls `lambda x: x` with HOLDERS[h]'s object; moved: the holder's
    reference goes into the call."""
    call, call_move, cb = _callback_fns()
    if move:
        addr, HOLDERS[h] = HOLDERS[h], 0
        return call_move(addr, cb)
    return call(HOLDERS[h], cb)


class CallbackRaised(Exception):
    """What the raising callback raises."""


def _raise(x):
    raise CallbackRaised("pytie: the callback raised")


def callback_raise(h, move):
    """C++ calls a callback that raises with HOLDERS[h]'s object (moved:
    the holder's reference goes into the call); the error comes back."""
    call, call_move, _ = _callback_fns()
    cb = tvm_ffi.convert(_raise)
    try:
        if move:
            addr, HOLDERS[h] = HOLDERS[h], 0
            call_move(addr, cb)
        else:
            call(HOLDERS[h], cb)
    except Exception as e:  # tvm_ffi passes it back as its own error
        if "pytie: the callback raised" not in str(e):
            raise
        e.__traceback__ = None
    else:
        raise AssertionError("the callback raised, and the call returned")


# `finalize`: the interpreter's end. What a program does after it (C++
# releases, no Python) runs after Py_FinalizeEx, from a C++ atexit handler
# compiled here against this tvm_ffi's headers, as `new_cpp` is.
AFTER_END_SRC = r"""
#include <tvm/ffi/c_api.h>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <vector>
namespace {
struct Op { int kind; void* addr; };
std::vector<Op>* ops = new std::vector<Op>();
void run() {
  for (const Op& o : *ops) {
    if (o.kind == 0) {  // release: on the thread that ran the interpreter
      TVMFFIObjectDecRef(o.addr);
    } else if (o.kind == 1) {  // release_foreign: on another thread
      std::thread([a = o.addr] { TVMFFIObjectDecRef(a); }).join();
    } else {  // unweak (object.h DecWeakRef)
      auto* c = static_cast<uint64_t*>(o.addr);
      if (__atomic_sub_fetch(c, uint64_t{1} << 32, __ATOMIC_ACQ_REL) == 0) {
        auto del = *reinterpret_cast<void (**)(void*, int)>(static_cast<char*>(o.addr) + 16);
        del(o.addr, 2);
      }
    }
  }
}
}  // namespace
extern "C" void repro_after_end(int kind, void* addr) { ops->push_back({kind, addr}); }
extern "C" void repro_arm() { std::atexit(run); }
"""
_AFTER_END = []


def after_end(kind, addr):
    """Queue a C++ step for after Py_FinalizeEx (kind: 0 release, 1
    release_foreign, 2 unweak)."""
    if not _AFTER_END:
        h = compile_cpp("after_end", AFTER_END_SRC)
        h.repro_after_end.argtypes = [ctypes.c_int, ctypes.c_void_p]
        h.repro_arm()
        _AFTER_END.append(h)
    if addr:
        _AFTER_END[0].repro_after_end(kind, addr)


def finalize():
    import atexit
    atexit._run_exitfuncs()  # the atexit hooks: upstream's shutdown flag
    for k in sorted(V, key=lambda k: int(k[1:])):  # module teardown, v0 first
        del V[k]
    gc.collect()  # the collection at finalization: the cycles die
    after_end(0, 0)  # build and arm the handler now, while Python runs
    print("  the interpreter ends here for the program: what follows runs after "
          "Py_FinalizeEx (a crash there is the finding; counts are not checked)", flush=True)


def expect_error(why, fn):
    print(f"  {why}: the contract expects an error", flush=True)
    try:
        fn()
    except Exception as e:  # the error the contract asks for
        print(f"  raised {type(e).__name__}: as expected", flush=True)
        return
    fail("no error")


# `oom K` then a step: pytie counts the K-th allocation inside the
# library's calls only, which no Python hook can; here the step runs once
# per allocation index instead, each failed in turn in a child process
# (`_testcapi.set_nomemory`, from the step's first allocation), and each
# must leave what the contract allows a failed step (pytie's contract
# §4.4): MemoryError (or the step's own error), and every strong count of
# the objects that existed before as before the step, as after it, or as
# the step left it having given a reference away. A crash, another error
# or other counts is reported, with the index.
SWEEP_MAX = 120


def _allowed_error(e, errors):
    for _ in range(8):
        if e is None:
            return False
        if isinstance(e, MemoryError) or any(m in str(e) for m in errors):
            return True
        e = e.__cause__ or e.__context__
    return False


def teardown():
    """Clear every field, release the holders, drop the vars, collect: the
    contract expects nothing left (each object not freed is a FAIL)."""
    CONSTRUCTING[0] = True  # the script's own returns: a fragile type's too
    for n, addr in enumerate(OBJ):
        if strong_count(n) > 0:
            _w = ret(addr)
            setx(_w, None)
            del _w
    CONSTRUCTING[0] = False
    for h in range(len(HOLDERS)):
        release(h)
    for s in range(len(WEAKS)):
        unweak(s)
    V.clear()
    gc.collect()
    for n in range(len(OBJ)):
        strong(n, 0)  # the contract: nothing is left


def sweep_step(fn, accepted, errors):
    import os
    n_pre = len(accepted[0])
    for k in range(1, SWEEP_MAX + 1):
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            try:
                _sweep_child(k, fn, accepted, errors, n_pre)
            except BaseException as e:  # never go on with the script in a child
                print(f"  FAIL allocation {k} failed: the check raised {type(e).__name__}: {e}",
                      flush=True)
            os._exit(2)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            fail(f"allocation {k} failed: the process died of signal {os.WTERMSIG(status)}")
        elif os.WEXITSTATUS(status) != 0:
            fail(f"allocation {k} failed: the step left what the contract does not allow")
    print(f"  each of the step's first {SWEEP_MAX} allocations was failed in turn", flush=True)


def _sweep_child(k, fn, accepted, errors, n_pre):
    import os
    import _testcapi
    n_obj = len(OBJ)
    err = None
    _testcapi.set_nomemory(k - 1, k)  # the k-th allocation from here fails
    try:
        fn()
    except BaseException as e:
        err = e
    finally:
        _testcapi.remove_mem_hooks()
    if err is not None:
        # The script's own records of what the step made may be
        # half written: only the objects that existed before are
        # checked.
        del OBJ[n_obj:]
    bad = []
    if err is not None and not _allowed_error(err, errors):
        bad.append(f"raised {type(err).__name__}: {err}")
    del err  # its frames hold wrappers
    counts = [strong_count(i) for i in range(n_pre)]
    if counts not in accepted:
        bad.append(f"strong counts {counts}; the contract allows {accepted}")
    for b in bad:
        print(f"  FAIL allocation {k} failed: {b}", flush=True)
    if not bad:  # what the failed step left must still all be freed
        failed = FAILED
        teardown()
        bad = FAILED > failed
        if bad:
            print(f"  FAIL allocation {k} failed: objects left after the teardown",
                  flush=True)
    os._exit(1 if bad else 0)


def expect_refused(e):
    """A step the contract expects to fail: a fragile wrapper's construction
    raised (R20), passed on by tvm_ffi as its own error where it crossed C++."""
    if "pytie: construction refused" in str(e):
        print(f"  raised {type(e).__name__}: construction refused, as expected", flush=True)
    else:
        unexpected(e)


def expect_moved_error(what, fn):
    expect_error(f"{what} is moved-from (tvm_ffi {tvm_ffi.__version__} dereferences the NULL "
                 "handle on most uses; the error *moved*)", fn)


# Is tying active? A second return of the same object is the same wrapper.
_a = Node()
_h = _a.__chandle__()
LIB.TVMFFIObjectIncRef(_h)
_r1, _r2 = ret(_h), ret(_h)
TYING = _r1 is _r2
del _a, _r1, _r2
LIB.TVMFFIObjectDecRef(_h)
print(f"tvm_ffi {tvm_ffi.__version__}: tying {'on' if TYING else 'off'}; "
      f"the expectations below are the contract's with tying {PROFILE}", flush=True)
if TYING != (PROFILE == "on"):
    print("  note: this tvm_ffi's tying differs from the profile the script was made for",
          flush=True)
"#;

const TEARDOWN_AFTER_END: &str = r#"
print("teardown, after Py_FinalizeEx: the holders and the weak slots are released", flush=True)
for h in range(len(HOLDERS)):
    after_end(0, HOLDERS[h])
for s in range(len(WEAKS)):
    after_end(2, WEAKS[s])
for addr in OBJ:  # the script's own weak references, which kept headers readable
    after_end(2, addr)
if FAILED:
    print(f"{FAILED} expectation(s) of the contract failed on tvm_ffi {tvm_ffi.__version__}")
    sys.exit(1)
print(f"the expectations checked hold on tvm_ffi {tvm_ffi.__version__}; the rest runs after the end")
"#;

const TEARDOWN: &str = r#"
print("teardown: clear every field, release the holders, drop the vars, collect", flush=True)
teardown()
unobserve_all()
if FAILED:
    print(f"{FAILED} expectation(s) of the contract failed on tvm_ffi {tvm_ffi.__version__}")
    sys.exit(1)
print(f"all expectations of the contract hold on tvm_ffi {tvm_ffi.__version__}")
"#;

fn q(v: Var) -> String {
    format!("V[\"{v}\"]")
}

/// The Python statement of a state-changing step whose sources are live;
/// `copies`: for `pickle`, the kinds of the copies it makes (root first).
fn statement(op: &Op, copies: &[ObjKind]) -> String {
    match *op {
        Op::New { v, kind } => {
            let make = match kind {
                ObjKind::Legacy => "new_legacy()".to_string(),
                ObjKind::Untied => "Node()".to_string(),
                k => format!("CTORS[\"{}\"]()", k.name()),
            };
            format!("_o = {make}\nobserve(_o)\n{} = _o\ndel _o", q(v))
        }
        Op::Ret { v, h } => format!("{} = ret(HOLDERS[{}])", q(v), h.0),
        // Not among tvm-ffi's steps yet (skipped before this is asked).
        // Runs the next step allocation by allocation (`sweep_step`).
        Op::Oom { .. } => "pass".to_string(),
        Op::Echo { v, u } => format!("{} = echo({})", q(v), q(u)),
        Op::Get { v, u } => format!("{} = getx({})", q(v), q(u)),
        Op::Set { u, v } => format!("setx({}, {})", q(u), q(v)),
        Op::Unset { u } => format!("setx({}, None)", q(u)),
        Op::Clone { v, u } => format!("{} = {}", q(v), q(u)),
        Op::Drop { v } => format!("del {}", q(v)),
        Op::Hold { h, v } => format!("hold({}, {})", h.0, q(v)),
        Op::Move { h, v } => format!("move({}, {})", h.0, q(v)),
        Op::Release { h } => format!("release({})", h.0),
        Op::ReleaseForeign { h } => format!("release({}, foreign=True)", h.0),
        Op::Cycle { v } => format!("_l = [{}]\n_l.append(_l)\ndel {}, _l", q(v), q(v)),
        Op::Collect => "gc.collect()".into(),
        Op::Weak { w, v } => format!("weak({}, {})", w.0, q(v)),
        Op::Unweak { w } => format!("unweak({})", w.0),
        Op::Lock { v, w } => format!("{} = lock(WEAKS[{}])", q(v), w.0),
        // The interpreter's end begins with the atexit hooks; upstream's
        // sets its shutdown flag (TVMFFIPyMarkPythonFinalizing, core.pyx).
        Op::Shutdown => "import atexit\natexit._run_exitfuncs()".into(),
        Op::Pickle { v, u } => {
            let kinds: Vec<String> = copies.iter().map(|k| format!("\"{}\"", k.name())).collect();
            format!(
                "_o = pickle.loads(pickle.dumps({}))\nobserve_copy(_o, [{}])\n{} = _o\ndel _o",
                q(u),
                kinds.join(", "),
                q(v)
            )
        }
        Op::PyWeak { v } => format!("_r = weakref.ref({0})\nassert _r() is {0}\ndel _r", q(v)),
        Op::Finalize => "finalize()".into(),
        Op::Call { v, h } => format!("{} = callback({}, move=False)", q(v), h.0),
        Op::CallMove { v, h } => format!("{} = callback({}, move=True)", q(v), h.0),
        Op::CallRaise { h } => format!("callback_raise({}, move=False)", h.0),
        Op::CallMoveRaise { h } => format!("callback_raise({}, move=True)", h.0),
        Op::Mark { .. } | Op::Expect(_) => String::new(),
    }
}

/// The backend's warm-up (`tvmffi::warm_up`: every step kind on each
/// object kind, once) as script statements, each step whose sources are
/// live run and its errors ignored, then everything it made let go of: so
/// that the steps an `oom` arms make the allocations of a warm process, as
/// pytie's backend runs them.
fn warm_up(tying: bool) -> String {
    let mut model = Model::new(if tying { Design::U } else { Design::S });
    if !tying {
        model = model.without_tying();
    }
    let prog = crate::program::text::parse(&tvmffi::warm_up()).expect("the warm-up parses");
    let mut out = String::from(
        "\nprint(\"warm-up: every step kind on each object kind once, as pytie's backend runs \
         it, so that a step's allocations are a warm process's\", flush=True)\n",
    );
    let mut before = AbstractState::default();
    for op in &prog.ops {
        model.observe(&mut before);
        // A callback whose argument is refused releases it twice on
        // tvm_ffi (corpus/upstream/callback-arg-released-twice-on-raising-new.pytie):
        // the warm-up leaves it out, as the backend guards it.
        let callback = matches!(
            op,
            Op::Call { .. } | Op::CallMove { .. } | Op::CallRaise { .. } | Op::CallMoveRaise { .. }
        );
        if callback && model.clone().apply(op) == StepResult::Refused {
            model.apply(op);
            continue;
        }
        if let (Finds::Live, Ok(copies)) = (finds(op, &before), copies_of(op, &model)) {
            out += "try:\n";
            out += &indent(&statement(op, &copies), "    ");
            out += "except Exception:\n    pass\n";
        }
        model.apply(op);
    }
    out += "V.clear()\nfor _h in range(len(HOLDERS)):\n    release(_h)\n\
            for _s in range(len(WEAKS)):\n    unweak(_s)\ngc.collect()\nunobserve_all()\n\
            OBJ.clear()\n";
    out
}

/// For a step an `oom` armed: the step as a function, run by `sweep_step`
/// once per allocation index in child processes, with the strong counts of
/// the objects that exist before it that a failed step may leave (contract
/// §4.4: as before, as after, or as it left them having given a reference
/// away) and the messages of the errors the step itself may raise.
fn sweep(op: &Op, copies: &[ObjKind], model: &Model) -> String {
    // `ret`, `lock`, `move`'s callee and `new V legacy` are C functions this
    // script makes from Python with ctypes, whose callback machinery is not
    // safe when an allocation fails (it returns without an answer): only
    // the steps that run tvm_ffi's own code and compiled C++ are swept.
    if matches!(
        op,
        Op::Ret { .. }
            | Op::Lock { .. }
            | Op::Move { .. }
            | Op::New {
                kind: ObjKind::Legacy,
                ..
            }
    ) {
        return "print(\"  oom: not swept here: the script runs this step through a ctypes \
                callback, which is not safe when an allocation fails (pytie sweeps it)\", \
                flush=True)\n"
            .to_string();
    }
    let counts = |m: &Model, n: usize| {
        let mut s = AbstractState::default();
        m.observe(&mut s);
        let c: Vec<String> = s
            .handles
            .all()
            .take(n)
            .map(|h| h.strong.to_string())
            .collect();
        format!("[{}]", c.join(", "))
    };
    let n = model.numbered().0;
    let mut after = model.clone();
    let result = after.apply(op);
    let mut gave = model.clone();
    gave.failed_step(op);
    let mut moved = model.clone();
    let mut accepted = vec![counts(model, n), counts(&after, n), counts(&gave, n)];
    if moved.failed_move(op) {
        accepted.push(counts(&moved, n));
    }
    let mut seen = Vec::new();
    accepted.retain(|a| {
        let new = !seen.contains(a);
        seen.push(a.clone());
        new
    });
    let errors = match (result, op) {
        (StepResult::Raised, _) => "[\"pytie: the callback raised\"]",
        (StepResult::Refused, _) => "[\"pytie: construction refused\"]",
        // CPython's PicklingError in place of the failed import (§4.4).
        (_, Op::Pickle { .. }) => "[\"import of module\"]",
        _ => "[]",
    };
    format!(
        "print(\"  oom: the step once per allocation, each failed in turn, each in a child \
         process\", flush=True)\n\
         def _step():\n{}sweep_step(_step, [{}], {errors})\n",
        indent(&statement(op, copies), "    "),
        accepted.join(", ")
    )
}

/// The same step as an expression raising the error *moved* (used when a
/// source is moved-from).
fn moved_call(op: &Op) -> String {
    match *op {
        Op::Echo { u, .. } => format!("echo({})", q(u)),
        Op::Get { u, .. } => format!("getx({})", q(u)),
        Op::Set { u, v } => format!("setx({}, {})", q(u), q(v)),
        Op::Unset { u } => format!("setx({}, None)", q(u)),
        Op::Hold { h, v } => format!("hold({}, {})", h.0, q(v)),
        Op::Move { h, v } => format!("move({}, {})", h.0, q(v)),
        Op::Weak { w, v } => format!("weak({}, {})", w.0, q(v)),
        _ => "None".into(),
    }
}

/// For `pickle V U`: the kinds of the copies (root first, along the field),
/// or `Err(U)` when the chain has a cycle; empty for every other step.
fn copies_of(op: &Op, model: &Model) -> Result<Vec<ObjKind>, Var> {
    match *op {
        Op::Pickle { u, .. } => model.pickle_copies(u).ok_or(u),
        _ => Ok(Vec::new()),
    }
}

/// What a step finds in its sources (contract §4.1 rules).
enum Finds {
    /// It runs.
    Live,
    /// An empty or None source (or holder): it does nothing.
    Nothing(String),
    /// A moved-from source: the error *moved*.
    Moved(Var),
}

fn finds(op: &Op, s: &AbstractState) -> Finds {
    let holds = |v: Var| Holds::from(s.vars[v.idx()]);
    let first = |want: Holds| {
        op.live_operands()
            .into_iter()
            .flatten()
            .find(|v| holds(*v) == want)
    };
    match op.source_rule(holds) {
        SourceRule::Skip => {
            let v = first(Holds::Nothing).expect("a source is empty");
            return Finds::Nothing(format!("{v} is empty or None"));
        }
        SourceRule::Moved => return Finds::Moved(first(Holds::Moved).expect("a source is moved")),
        SourceRule::Run => {}
    }
    match *op {
        Op::Clone { u: v, .. }
        | Op::Drop { v }
        | Op::Cycle { v }
        | Op::Pickle { u: v, .. }
        | Op::PyWeak { v }
            if holds(v) == Holds::Nothing =>
        {
            Finds::Nothing(format!("{v} is empty or None"))
        }
        Op::Ret { h, .. }
        | Op::Call { h, .. }
        | Op::CallMove { h, .. }
        | Op::CallRaise { h }
        | Op::CallMoveRaise { h }
            if s.holders[h.idx()].is_none() =>
        {
            Finds::Nothing(format!("{h} is empty"))
        }
        Op::Lock { w, .. } if s.weaks[w.idx()].is_none() => Finds::Nothing(format!("{w} is empty")),
        _ => Finds::Live,
    }
}

fn indent(code: &str, by: &str) -> String {
    code.lines().map(|l| format!("{by}{l}\n")).collect()
}

/// The script for `prog`, read from `source`, with the model's profile
/// `tying` (the installed tvm-ffi's, detected by the caller).
pub fn python(prog: &Program, source: &str, tying: bool) -> String {
    let mut model = Model::new(if tying { Design::U } else { Design::S });
    if !tying {
        model = model.without_tying();
    }
    let profile = if tying { "on" } else { "off" };
    let mut out = String::new();
    let _ = write!(
        out,
        "#!/usr/bin/env python3\n\"\"\"Reproduces on tvm_ffi alone (no pytie) the pytie program {source}.\n\n\
         Generated by `pytie repro --python {source}`. Run it with a Python that has\n\
         apache-tvm-ffi installed (pytie's scripts/setup-tvmffi makes .venv/tvmffi, pinned\n\
         to {pin}):\n\n    .venv/tvmffi/bin/python SCRIPT.py\n\n\
         Each step is printed, then every expectation of the PyObject-tying contract\n\
         that does not hold after it: strong counts read from the object header, which\n\
         vars hold the same wrapper, which hold moved-from wrappers; at the end, that\n\
         every object was freed. Exit status 1 if any failed. Expectations are the\n\
         contract's reference model with tying {profile}.\n\"\"\"\nPROFILE = \"{profile}\"\n",
        pin = tvmffi::PINNED,
    );
    out += PRELUDE;
    if prog.ops.iter().any(|op| matches!(op, Op::Oom { .. })) {
        out += &warm_up(tying);
    }
    let mut before = AbstractState::default();
    let mut after = AbstractState::default();
    let mut used = [false; VARS];
    let steps = tvmffi::steps();
    let mut armed_next = false;
    for (i, op) in prog.ops.iter().enumerate() {
        let n = i + 1;
        let text = format!("{op}");
        let Some(kind) = op.kind() else {
            let _ = writeln!(
                out,
                "\n# {text}  (checked by the model's expectations below)"
            );
            continue;
        };
        let _ = writeln!(out, "\nstep({n}, {text:?})");
        if model.ended() {
            let _ = match *op {
                Op::Release { h } => {
                    writeln!(out, "after_end(0, HOLDERS[{0}])\nHOLDERS[{0}] = 0", h.0)
                }
                Op::ReleaseForeign { h } => {
                    writeln!(out, "after_end(1, HOLDERS[{0}])\nHOLDERS[{0}] = 0", h.0)
                }
                Op::Unweak { w } => writeln!(out, "after_end(2, WEAKS[{0}])\nWEAKS[{0}] = 0", w.0),
                _ => writeln!(
                    out,
                    "print(\"  does nothing: the interpreter has ended\", flush=True)"
                ),
            };
            model.apply(op);
            continue;
        }
        if !steps.contains(kind) {
            let _ = writeln!(
                out,
                "print(\"  not expressible on tvm-ffi: skipped\", flush=True)"
            );
            continue;
        }
        model.observe(&mut before);
        // An `oom` arms the next step that runs (R18).
        let armed = std::mem::replace(&mut armed_next, matches!(op, Op::Oom { .. }));
        match finds(op, &before) {
            Finds::Nothing(why) => {
                let _ = writeln!(out, "print(\"  does nothing: {why}\", flush=True)");
            }
            Finds::Moved(v) => {
                let _ = writeln!(
                    out,
                    "expect_moved_error(\"{v}\", lambda: {})",
                    moved_call(op)
                );
            }
            Finds::Live
                if let Op::PyWeak { v } = *op
                    && let VarState::Wrapper(w) | VarState::Moved(w) = before.vars[v.idx()]
                    && !model.weakref_slot(w) =>
            {
                let _ = writeln!(
                    out,
                    "expect_error(\"{v}'s type has no __weakref__ slot\", lambda: weakref.ref({}))",
                    q(v)
                );
            }
            Finds::Live => match copies_of(op, &model) {
                Err(u) => {
                    let _ = writeln!(
                        out,
                        "expect_error(\"{u}'s object graph has a cycle\", lambda: pickle.dumps({}))",
                        q(u)
                    );
                }
                Ok(copies) => {
                    if armed {
                        out += &sweep(op, &copies, &model);
                    }
                    // A step the model refuses (R20) must raise.
                    let refused = model.clone().apply(op) == StepResult::Refused;
                    out += "try:\n";
                    out += &indent(&statement(op, &copies), "    ");
                    if refused {
                        out += "except Exception as e:\n    expect_refused(e)\n";
                        out += "else:\n    fail(\"no error: the contract expects the \
                                construction to be refused\")\n";
                    } else {
                        out += "except Exception as e:\n    unexpected(e)\n";
                    }
                }
            },
        }
        model.apply(op);
        model.observe(&mut after);
        for (n, h) in after.handles.all().enumerate() {
            let _ = writeln!(out, "strong({n}, {})", h.strong);
        }
        for (v, s) in after.vars.iter().enumerate() {
            used[v] |= *s != VarState::Empty;
            if !used[v] {
                continue;
            }
            let _ = match s {
                VarState::Empty | VarState::None => writeln!(out, "none(\"v{v}\")"),
                VarState::Wrapper(_) => writeln!(out, "moved(\"v{v}\", False)"),
                VarState::Moved(_) => writeln!(out, "moved(\"v{v}\", True)"),
            };
        }
        let wr = |s: &VarState| match s {
            VarState::Wrapper(w) | VarState::Moved(w) => Some(*w),
            _ => None,
        };
        for a in 0..VARS {
            for b in a + 1..VARS {
                if let (Some(x), Some(y)) = (wr(&after.vars[a]), wr(&after.vars[b])) {
                    let _ = writeln!(
                        out,
                        "same(\"v{a}\", \"v{b}\", {})",
                        if x == y { "True" } else { "False" }
                    );
                }
            }
        }
    }
    out += if model.ended() {
        TEARDOWN_AFTER_END
    } else {
        TEARDOWN
    };
    out
}
