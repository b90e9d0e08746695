# Reproduces corpus/upstream/callback-arg-released-twice-on-raising-new.pytie
# without pytie, and without any allocation failure: C++ (a few lines
# compiled here with g++ against the installed tvm_ffi's headers) calls a
# Python callback with an object it holds, borrowed, whose wrapper type's
# `__new__` raises (a user's validation, say). `TVMFFIPyMakeRetObject`
# releases the +1 it was given when `tp_new` fails
# (tvm_ffi_python_object.h, "release the caller's +1 before propagating")
# and `TVMFFIPyCallbackArgSetterObject_` (cython/pycallback.pxi) releases it
# again in its `except BaseException` branch: one strong reference too few
# per call, a use after free once the other owners let go. The same double
# release as callback-arg-released-twice-on-oom.py, reached by a raising
# constructor instead of MemoryError. Exit status 1 when it happens. Run
# with a venv's python, e.g.
#     .venv/tvmffi/bin/python scripts/tvmffi-probes/callback-arg-released-twice-on-raising-new.py
#     .venv/tvmffi-tied/bin/python scripts/tvmffi-probes/callback-arg-released-twice-on-raising-new.py
import ctypes, gc, sys
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
static ObjectRef held, held2, held3;
// Three C++ owners, so that one reference too few shows as a count.
void hold(ObjectRef x) { held = x; held2 = x; held3 = x; }
// C++ calls a Python callback with the object it holds, borrowed.
Any call_held(Function cb) { return cb(held); }
TVM_FFI_DLL_EXPORT_TYPED_FUNC(hold, hold);
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
constructing = [False]


class Refused(Exception):
    pass


@py_class("repro.FragileNode")
class FragileNode(Object):
    x: Optional[Object] = None

    def __new__(cls, *args, **kwargs):  # raises unless its constructor runs
        o = super().__new__(cls)
        if not constructing[0]:
            raise Refused("construction refused")
        return o


def strong(h):
    return ctypes.c_uint64.from_address(h).value & 0xFFFFFFFF


constructing[0] = True
x = FragileNode()
constructing[0] = False
h = x.__chandle__()
mod.hold(x)            # owners: C++'s `held`, `held2`, `held3`
x._move()              # no wrapper bound to it now (tying on; any with it off)
del x
before = strong(h)
try:
    mod.call_held(tvm_ffi.convert(lambda v: None))
    print("the callback's argument was made: nothing refused it")
    sys.exit(2)
except Exception as e:
    print(f"the call raised {type(e).__name__}: {e}")
after = strong(h)
if after != before:
    print(f"strong count {before} -> {after} with all three C++ owners alive: "
          "the callback's argument was released twice")
    sys.exit(1)
print("the count is unchanged")
