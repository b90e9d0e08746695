# Reproduces corpus/upstream/field-setter-error-lost-on-oom-segfaults.pytie
# without pytie, on the published wheel (tying off): a `py_class` field
# setter converts its value through a return to Python (`_f_type_convert`,
# cython/type_info.pxi, `noexcept with gil`); the value's wrapper type
# refuses construction (its `__new__` raises), and then one allocation
# fails while the error is recorded (`_testcapi.set_nomemory`, each in a
# child process): the error escapes the `noexcept` function and the
# process dies of SIGSEGV. Exit status 1 when a child dies of a signal.
#     .venv/tvmffi/bin/python scripts/tvmffi-probes/field-setter-error-lost-on-oom-segfaults.py
import subprocess
import sys

CHILD = r"""
import sys, _testcapi
import tvm_ffi
from tvm_ffi import Object
from typing import Optional
from tvm_ffi.dataclasses import py_class

constructing = [False]

@py_class("repro.Node")
class Node(Object):
    x: Optional[Object] = None

@py_class("repro.FragileNode")
class FragileNode(Object):
    x: Optional[Object] = None
    def __new__(cls, *args, **kwargs):
        o = super().__new__(cls)
        if not constructing[0]:
            raise ValueError("construction refused")
        return o

constructing[0] = True
a = FragileNode()
constructing[0] = False
n = Node()
try:  # warm the setter's conversion and its error path once
    n.x = a
except Exception:
    pass
k = int(sys.argv[1])
_testcapi.set_nomemory(k, k + 1)  # the (k+1)-th allocation from here fails
try:
    n.x = a
except BaseException:
    pass
finally:
    _testcapi.remove_mem_hooks()
print("survived")
"""

for k in range(0, 80):
    r = subprocess.run([sys.executable, "-c", CHILD, str(k)], capture_output=True, text=True)
    if r.returncode < 0:
        print(f"allocation {k + 1} failed: the process died of signal {-r.returncode}")
        sys.exit(1)
print("no allocation failure crashed the process")
