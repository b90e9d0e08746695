# Probe for docs/tvmffi-tied.md ("Findings outside the language"): run with a
# venv's bin/python (e.g. .venv/tvmffi/bin/python, the published wheel; the
# activated build behaves the same). Exit status 139 (SIGSEGV) shows it.
#
# tvm_ffi.serialization.to_json_graph_str, which pickling a tvm-ffi object
# uses (CObject.__getstate__), recurses into an object's fields before it
# records the object's node index (src/ffi/extra/serialization.cc,
# GetOrCreateNodeIndex: node_index_map_.emplace after CreateObjectData), so
# an object graph with a cycle recurses until the stack overflows: SIGSEGV,
# where an error (or a graph with a back reference) is due. Fields are
# settable, so such graphs are one assignment away.
from typing import Optional

import tvm_ffi
from tvm_ffi import dataclasses as dc


@dc.py_class("pytie.probe.CycleNode", frozen=False)
class CycleNode(dc.Object):
    x: Optional[tvm_ffi.Object]


acyclic = CycleNode(CycleNode(None))
print("acyclic:", tvm_ffi.serialization.to_json_graph_str(acyclic), flush=True)
c = CycleNode(None)
c.x = c  # a cycle of one
print("serializing a cycle (a SIGSEGV here is the finding)...", flush=True)
tvm_ffi.serialization.to_json_graph_str(c)
print("no finding: serialized a cyclic graph")
