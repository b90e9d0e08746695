# Reproduces corpus/upstream/callback-error-lost-on-oom-segfaults.pytie
# without pytie: C++ (`testing.apply`, shipped with tvm_ffi) calls a Python
# callback that raises, while CPython's allocations fail one at a time
# (`_testcapi.set_nomemory`), each attempt in a fresh child process. When
# an allocation fails inside `set_last_ffi_error` (cython/error.pxi), which
# `TVMFFICyErrorSetRaisedFromPyError` calls to pass the callback's error to
# C++, the new MemoryError is swallowed (the function is `noexcept`) and no
# FFI error is set, but the function still returns -1; back in Python,
# CHECK_CALL's `move_from_last_error()` makes an `Error` with a NULL handle
# and reading its `kind` dereferences it: SIGSEGV. Exit status 1 when a
# child dies of a signal. Run with a venv's python, e.g.
#     .venv/tvmffi/bin/python scripts/tvmffi-probes/callback-error-lost-on-oom-segfaults.py
import subprocess
import sys

CHILD = r"""
import sys, _testcapi
import tvm_ffi
from tvm_ffi import Object
from typing import Optional
from tvm_ffi.dataclasses import py_class

@py_class("repro.Node")
class Node(Object):
    x: Optional[Object] = None

def raiser(x):
    raise ValueError("the callback raised")

apply = tvm_ffi.get_global_func("testing.apply")
cb = tvm_ffi.convert(raiser)
x = Node()
try:  # warm the argument setters and the error path once
    apply(cb, x)
except Exception:
    pass
k = int(sys.argv[1])
_testcapi.set_nomemory(k, k + 1)  # the (k+1)-th allocation from here fails
try:
    apply(cb, x)
except BaseException:
    pass
finally:
    _testcapi.remove_mem_hooks()
"""

for k in range(0, 80):
    r = subprocess.run([sys.executable, "-c", CHILD, str(k)], capture_output=True, text=True)
    if r.returncode < 0:
        print(f"allocation {k + 1} failed: the process died of signal {-r.returncode}")
        sys.exit(1)
print("no allocation failure crashed the process")
