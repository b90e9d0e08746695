# Probe for docs/tvmffi-tied.md: run with a venv's bin/python (e.g. .venv/tvmffi-tied/bin/python).
import gc, sys, tvm_ffi
from tvm_ffi import dataclasses as dc
@dc.py_class("probe.Inner")
class Inner(dc.Object):
    val: int
@dc.py_class("probe.Outer")
class Outer(dc.Object):
    x: Inner
def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096
keep = Inner(2)
cases = {"Inner(1)": lambda: Inner(1), "Outer(keep)": lambda: Outer(keep), "Outer(Inner(1))": lambda: Outer(Inner(1))}
for name, f in cases.items():
    for _ in range(1000): f()
    gc.collect(); r0 = rss()
    for _ in range(200000): f()
    gc.collect(); print("%-16s RSS growth over 200000: %5.1f MB" % (name, (rss() - r0) / 1e6))
use_count = tvm_ffi.get_global_func("testing.object_use_count")
print("use_count(keep) after 201000 Outer(keep) dropped:", use_count(keep))
