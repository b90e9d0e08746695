# Probe for contract §4.1 R14 (`pickle`): run with the activated build's
# python (.venv/tvmffi-tied/bin/python; on a dormant wheel there is no tag
# word to read, and the probe says so).
#
# What pickling a chain of objects leaves, read from each copy's tag word
# (the 8 bytes before the object's allocation header, tvm_ffi_python_object.h
# PyCustomAllocHeader: NULL Detached, W Active, W|1 Inactive) and its strong
# count, without making any wrapper for the parts (their addresses are read
# from the parent's reflected field). Expected on 0.1.15.post2, activated:
#   root Active, bound to the wrapper pickle made;
#   a part under a py_class parent: Inactive (its `__init__` received it in a
#     temporary wrapper), strong 2 (the field, and the field-store leak of
#     corpus/upstream/field-store-leaks-strong-ref.pytie); a `__del__` part:
#     Detached, its finalizer run once.
# (A part under a C++ parent, a List or a C++ class, is Detached with strong
# 1: pytie's programs check it, through the harness's field reader.)
import ctypes
import gc
import pickle
from typing import Optional

import tvm_ffi
from tvm_ffi import Object
from tvm_ffi.dataclasses import py_class

gc.disable()
FIN = [0]


@py_class("probe.pickle.Node")
class Node(Object):
    x: Optional[Object] = None


@py_class("probe.pickle.DelNode")
class DelNode(Object):
    x: Optional[Object] = None

    def __del__(self):
        FIN[0] += 1


def field_offset(cls):
    return [f.offset for f in cls.__tvm_ffi_type_info__.fields if f.name == "x"][0]


def word(addr):
    return ctypes.c_uint64.from_address(addr - 16).value


def strong(addr):
    return ctypes.c_uint64.from_address(addr).value & 0xFFFFFFFF


def state(addr, wrapper=None):
    w = word(addr)
    if w == 0:
        return "Detached"
    if w & 1:
        return "Inactive"
    return "Active(its wrapper)" if wrapper is not None and w == id(wrapper) else f"Active({w:#x})"


_a = Node()
_b = tvm_ffi.get_global_func("testing.echo")(_a)
if _a is not _b:
    raise SystemExit("tying is off in this build: no tag word to read (use the activated build)")
del _a, _b

for parent, part in [(Node, Node), (Node, DelNode)]:
    p = parent(x=part())
    FIN[0] = 0
    q = pickle.loads(pickle.dumps(p))
    addr = ctypes.c_uint64.from_address(q.__chandle__() + field_offset(parent) + 8).value
    print(f"{parent.__name__:5} <- {part.__name__:7}: root {state(q.__chandle__(), q)}, "
          f"part {state(addr)} strong {strong(addr)}, __del__ during loads: {FIN[0]}")
