# Probe for docs/tvmffi-tied.md ("Findings outside the language"): run with a
# venv's bin/python (e.g. .venv/tvmffi-tied/bin/python).
#
# A Function made from a Python callable (tvm_ffi.convert, _convert_to_ffi_func
# in pycallback.pxi) and an Error made from a Python exception get a wrapper
# through `Function.__new__` + a direct chandle store, never bound: with tying
# on, the first FFI return of that object makes a second, canonical wrapper,
# so `f(x) is x` fails for them while it holds for every other object.
import tvm_ffi

echo = tvm_ffi.get_global_func("testing.echo")
tying = (lambda a: echo(a) is a)(tvm_ffi.convert([1, 2]))
f = tvm_ffi.convert(lambda z: z)
e = tvm_ffi.convert(ValueError("boom"))
box = tvm_ffi.convert([f, e])
print(f"tying {'on' if tying else 'off'}")
print("echo(f) is f:", echo(f) is f)
print("box[0] is f:", box[0] is f, "(box[0] is box[0]:", box[0] is box[0], ")")
print("echo(e) is e:", echo(e) is e)
print("box[1] is e:", box[1] is e)
ok = echo(f) is f and echo(e) is e
print("FINDING: a Function/Error made from Python is never tied" if tying and not ok else "no finding")
