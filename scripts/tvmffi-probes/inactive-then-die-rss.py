# Probe for docs/tvmffi-tied.md: run with a venv's bin/python (e.g. .venv/tvmffi-tied/bin/python).
import gc, tvm_ffi
def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096
def cycle():
    a = tvm_ffi.convert([[1]]); x = a[0]; del x; del a   # inner dies while its wrapper is Inactive
for _ in range(1000): cycle()
gc.collect(); r0 = rss()
for _ in range(200000): cycle()
gc.collect(); print("RSS growth over 200000 array cycles: %.1f MB" % ((rss() - r0) / 1e6))
