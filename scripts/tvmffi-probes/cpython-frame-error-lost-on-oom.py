# Reproduces corpus/upstream/cpython-frame-error-lost-on-oom.pytie in plain
# CPython 3.11 (no tvm_ffi, no pytie): `inner` raises; as its frame is
# cleared, the frame object of its caller `outer` must be made, and when
# that allocation fails `take_ownership` (Python/frame.c) clears every
# error, the one being raised too: `outer` sees NULL with no error set,
# a SystemError. Each allocation is made to fail in turn
# (`_testcapi.set_nomemory`). Exit status 1 when the error was lost.
#     python3 scripts/tvmffi-probes/cpython-frame-error-lost-on-oom.py
import sys
import _testcapi


def inner():
    raise ValueError("inner raised")


def outer():
    inner()


seen = {}
for k in range(0, 40):
    err = None
    _testcapi.set_nomemory(k, k + 1)  # the (k+1)-th allocation from here fails
    try:
        outer()
    except BaseException as e:
        err = e
    finally:
        _testcapi.remove_mem_hooks()
    seen.setdefault(type(err).__name__, []).append(k + 1)
    if isinstance(err, SystemError):
        print(f"allocation {k + 1} failed: SystemError ({err}): the ValueError was lost")
        sys.exit(1)
    del err
print(f"no error was lost: {seen}")
