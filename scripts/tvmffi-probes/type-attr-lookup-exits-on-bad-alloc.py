# A C++ allocation failure ends the process (exit status 255) instead of
# raising MemoryError: TVMFFIGetTypeAttrColumn (src/ffi/object.cc) builds a
# `String` of the attribute's name to look it up, and wraps the call in
# TVM_FFI_LOG_EXCEPTION_CALL_END, which prints "Exception caught during
# TVMFFIGetTypeAttrColumn: std::bad_alloc" and calls exit(-1) (the error
# constructors TVMFFIErrorCreate* catch std::bad_alloc and return -1; this
# lookup, TVMFFITypeGetOrAllocIndex and TVMFFIGetTypeInfo do not). Every
# `py_class` constructor looks up `__ffi_init__` through it, so `Node()`
# under memory pressure ends the interpreter.
#
# The probe wraps the registered object allocator (c_api.h
# TVMFFISetCustomAllocator, the hook the activated build's make_object
# allocates through) with one that throws std::bad_alloc, as upstream's own
# allocators do when malloc fails (memory.h AlignedAlloc), at the first
# object allocation after it is armed; then `Node()` runs. Exit status 255
# and the message above when the process was ended; 0 when `Node()` raised.
# Run with the activated build's python (or a build of upstream's main):
#     .venv/tvmffi-tied/bin/python scripts/tvmffi-probes/type-attr-lookup-exits-on-bad-alloc.py
import ctypes
import os
import subprocess
import tempfile
from typing import Optional

import tvm_ffi
from tvm_ffi import Object
from tvm_ffi.dataclasses import py_class

CPP = r"""
#include <tvm/ffi/c_api.h>
#include <atomic>
#include <new>
static TVMFFICustomAllocator* inner = nullptr;
static std::atomic<long> countdown{-1};
// The registered allocator, but the (n+1)-th allocation after
// probe_fail_after(n) throws std::bad_alloc.
static void* Allocate(size_t size, size_t align, int32_t type_index, void* ctx) {
  if (countdown.load() >= 0 && countdown.fetch_sub(1) == 0) throw std::bad_alloc();
  return inner->allocate(size, align, type_index, inner->context);
}
extern "C" int probe_wrap() {
  static TVMFFICustomAllocator wrapped{&Allocate, nullptr};
  inner = TVMFFIGetCustomAllocator();
  return TVMFFISetCustomAllocator(&wrapped);
}
extern "C" void probe_fail_after(long n) { countdown.store(n); }
"""


def build():
    """Compile CPP against the installed tvm_ffi's headers (g++)."""
    import tvm_ffi.libinfo as info
    d = tempfile.mkdtemp()
    src, lib = os.path.join(d, "probe.cc"), os.path.join(d, "probe.so")
    open(src, "w").write(CPP)
    libdir = os.path.dirname(info.find_libtvm_ffi())
    cmd = ["g++", "-std=c++17", "-O2", "-fPIC", "-shared", src, "-o", lib]
    cmd += [f"-I{p}" for p in info.include_paths()]
    cmd += [f"-L{libdir}", "-ltvm_ffi", f"-Wl,-rpath,{libdir}"]
    subprocess.run(cmd, check=True)
    return ctypes.CDLL(lib)


@py_class("probe.Node")
class Node(Object):
    x: Optional[Object] = None


Node()  # warm: the type's caches filled
lib = build()
assert lib.probe_wrap() == 0
lib.probe_fail_after(0)  # the next object allocation fails
try:
    Node()
    print("the allocation failure was not met")
except MemoryError as e:
    print(f"MemoryError, as the contract expects: {e}")
except Exception as e:
    print(f"raised {type(e).__name__}: {e}")
