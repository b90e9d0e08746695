# Probe for docs/tvmffi-tied.md: run with a venv's bin/python (e.g. .venv/tvmffi-tied/bin/python).
import gc
import tvm_ffi, tvm_ffi.testing
from tvm_ffi import dataclasses as dc
@dc.py_class("probe.Inner")
class Inner(dc.Object):
    val: int
@dc.py_class("probe.Outer")
class Outer(dc.Object):
    x: Inner
use_count = tvm_ffi.get_global_func("testing.object_use_count")
identity = tvm_ffi.convert(lambda x: x)
a = tvm_ffi.convert([1, 2])
for _ in range(10): identity(a)
print("use_count after 10 aliasing returns:", use_count(a))
o = Outer(Inner(1)); x = o.x; del x; y = o.x
print("revived wrapper gc-tracked:", gc.is_tracked(y))
