# Reproduces corpus/upstream/cpython-cell-arg-leaks-on-oom.pytie in plain
# CPython (no tvm_ffi, no pytie): a function whose arguments are cell
# variables (captured by a comprehension, as tvm_ffi's
# container.getitem_helper(obj, elem_getter, ...) captures both) leaks a
# reference to its argument when an allocation at its entry fails (MAKE_CELL's
# PyCell_New, or the cell made before the failing one stays, holding it).
# Exit status 1 when a reference leaks. Measured on CPython 3.11.7:
#     python3 scripts/tvmffi-probes/cpython-cell-arg-leaks-on-oom.py
import sys, _testcapi, gc
gc.disable()
def helper(obj, getter, idx):
    if isinstance(idx, slice):
        return [getter(obj, i) for i in range(3)]
    return getter(obj, idx)
def attempt(o, k):
    _testcapi.set_nomemory(k, k + 1)
    try:
        return helper(o, lambda a, b: b, 0)
    finally:
        _testcapi.remove_mem_hooks()
class C: pass
leaked = 0
for k in (1, 2, 3):
    o = C()
    before = sys.getrefcount(o)
    try:
        attempt(o, k)
        err = "no error"
    except MemoryError:
        err = "MemoryError"
    after = sys.getrefcount(o)
    leaked += after != before
    print(f"allocation {k + 1} failed ({err}): refcount of the argument {before} -> {after}")
print(sys.version)
sys.exit(1 if leaked else 0)
