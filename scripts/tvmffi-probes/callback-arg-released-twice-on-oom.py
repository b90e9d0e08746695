# Reproduces corpus/upstream/callback-arg-released-twice-on-oom.pytie without
# pytie: C++ (a few lines compiled here with g++ against the installed
# tvm_ffi's headers) calls a Python callback with an object it holds,
# borrowed, while CPython's allocations fail one at a time
# (`_testcapi.set_nomemory`). When the callback's argument wrapper cannot be
# allocated, `TVMFFIPyMakeRetObject` releases the +1 it was given
# (tvm_ffi_python_object.h, "release the caller's +1 before propagating")
# and `TVMFFIPyCallbackArgSetterObject_` (cython/pycallback.pxi) releases it
# again in its `except BaseException` branch: one strong reference too few,
# a use after free once the other owners let go. Exit status 1 when it
# happens. Run with a venv's python, e.g.
#     .venv/tvmffi/bin/python scripts/tvmffi-probes/callback-arg-released-twice-on-oom.py
#     .venv/tvmffi-tied/bin/python scripts/tvmffi-probes/callback-arg-released-twice-on-oom.py
import ctypes, gc, sys, _testcapi
from typing import Optional
import tvm_ffi
from tvm_ffi import Object
from tvm_ffi.dataclasses import py_class

gc.disable()
CPP = r"""
#include <tvm/ffi/function.h>
using tvm::ffi::Any;
using tvm::ffi::Function;
using tvm::ffi::ObjectRef;
static ObjectRef held, held2;
// Two C++ owners, so that one reference too few shows as a count.
void hold(ObjectRef x) { held = x; held2 = x; }
void drop_held() { held = ObjectRef(); held2 = ObjectRef(); }
// C++ calls a Python callback with the object it holds, borrowed.
Any call_held(Function cb) { return cb(held); }
TVM_FFI_DLL_EXPORT_TYPED_FUNC(hold, hold);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(drop_held, drop_held);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(call_held, call_held);
"""


def build():
    """Compile CPP against the installed tvm_ffi's headers (g++)."""
    import os, subprocess, tempfile
    import tvm_ffi.libinfo as info
    d = tempfile.mkdtemp()
    src, lib = os.path.join(d, "repro.cc"), os.path.join(d, "repro.so")
    open(src, "w").write(CPP)
    libdir = os.path.dirname(info.find_libtvm_ffi())
    cmd = ["g++", "-std=c++17", "-O2", "-fPIC", "-shared", src, "-o", lib]
    cmd += [f"-I{p}" for p in info.include_paths()]
    cmd += [f"-L{libdir}", "-ltvm_ffi", f"-Wl,-rpath,{libdir}"]
    subprocess.run(cmd, check=True)
    return tvm_ffi.load_module(lib)


mod = build()

# A `__dict__` slot makes the wrapper type ineligible for caching (tying on):
# once its wrapper is gone, each callback makes a fresh one (tying off: any
# type does).
@py_class("repro.DictNode")
class DictNode(Object):
    __slots__ = ("__dict__",)
    x: Optional[Object] = None

def strong(h):
    return ctypes.c_uint64.from_address(h).value & 0xFFFFFFFF

cb = tvm_ffi.convert(lambda v: None)
x = DictNode()
h = x.__chandle__()
mod.hold(x)            # owners: C++'s `held` and `held2`
del x                  # no wrapper: a callback must make one
mod.call_held(cb)      # warm the callback's argument setter for the type
for k in range(0, 64):
    before = strong(h)
    _testcapi.set_nomemory(k, k + 1)   # the (k+1)-th allocation from here fails
    try:
        mod.call_held(cb)
        err = None
    except MemoryError:
        err = "MemoryError"
    finally:
        _testcapi.remove_mem_hooks()
    after = strong(h)
    if after != before:
        print(f"allocation {k + 1} failed ({err}): strong count {before} -> {after} with both "
              "C++ owners alive: the callback's argument was released twice")
        sys.exit(1)
print("no allocation failure changed the count")
