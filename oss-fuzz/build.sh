#!/bin/bash -eu
# Build the `lifecycle` fuzz target into $OUT, for OSS-Fuzz and
# ClusterFuzzLite (.clusterfuzzlite/build.sh runs this file), and for
# scripts/check-oss-fuzz, which runs it here without Docker.
#
# Expects what the base builder sets: $SRC (the checkout is $SRC/pytie),
# $OUT, $WORK, $SANITIZER, and RUSTFLAGS ("--cfg fuzzing
# -Zsanitizer=address ..."), to which cargo-fuzz appends its own flags.
#
# $OUT must run on a runner that has no Python installed, and ClusterFuzz
# passes the target no environment, so:
#   - the interpreter is pinned at build time (PYO3_PYTHON, default the
#     `python3` on PATH), and its libpython is copied beside the binary,
#     which finds it through an $ORIGIN rpath;
#   - its standard library goes to $OUT/python/lib/pythonX.Y, where the
#     target's init points PYTHONHOME (before the interpreter starts, only
#     when PYTHONHOME is unset; PYTHONMALLOC=malloc likewise);
#   - LeakSanitizer suppressions for CPython's start-up allocations are
#     compiled into the binary (src/wrapper/lsan.rs), not only an option.
cd "$SRC/pytie"

# The interpreter itself, not a launcher or shim in front of it.
PYO3_PYTHON=$("${PYO3_PYTHON:-python3}" -c 'import sys; print(sys.executable)')
export PYO3_PYTHON
read -r pyver shared libdir soname stdlib < <("$PYO3_PYTHON" -c '
import sys, sysconfig as s
print("%d.%d" % sys.version_info[:2], s.get_config_var("Py_ENABLE_SHARED"),
      s.get_config_var("LIBDIR"), s.get_config_var("INSTSONAME"),
      s.get_paths()["stdlib"])')
if [ "$shared" != 1 ] || [ ! -f "$libdir/$soname" ]; then
    echo "build.sh: $PYO3_PYTHON has no shared libpython ($libdir/$soname);" \
        "PyO3 embeds CPython through it: use an interpreter built with --enable-shared" >&2
    exit 1
fi
echo "build.sh: interpreter $PYO3_PYTHON (Python $pyver, $libdir/$soname)"

# $ORIGIN: the binary loads the libpython copied beside it. RUSTFLAGS reach
# the coverage build too (OSS-Fuzz's cargo wrapper turns `cargo fuzz build`
# into `cargo build` with the same RUSTFLAGS).
export RUSTFLAGS="${RUSTFLAGS:-} -Clink-arg=-Wl,-rpath,\$ORIGIN"
# libFuzzer builds: compare tracing gated to the runtime's steps
# (fuzz/gated.rustflags, src/native/sancov.rs); a coverage build traces
# no compares, and gating without them is an error.
if [[ "${FUZZING_ENGINE:-libfuzzer}" == libfuzzer && "${SANITIZER:-address}" != coverage ]]; then
    RUSTFLAGS="$RUSTFLAGS $(cat fuzz/gated.rustflags)"
fi
cargo fuzz build -O --debug-assertions lifecycle

# Coverage builds put the binary in the same place.
cp fuzz/target/x86_64-unknown-linux-gnu/release/lifecycle "$OUT/"
cp "$libdir/$soname" "$OUT/"
rm -rf "$OUT/python"
mkdir -p "$OUT/python/lib/python$pyver"
tar -C "$stdlib" -cf - \
    --exclude=./test --exclude=./site-packages --exclude=./dist-packages \
    --exclude=./idlelib --exclude=./tkinter --exclude=./turtledemo \
    --exclude=./ensurepip --exclude='./config-*' . |
    tar -C "$OUT/python/lib/python$pyver" -xf -

# Seeds, options (the campaign's, fuzz/lifecycle.options.args).
rm -f "$OUT/lifecycle_seed_corpus.zip"
zip -j -q "$OUT/lifecycle_seed_corpus.zip" corpus/lifecycle/*
{
    echo "[libfuzzer]"
    for arg in $(cat fuzz/lifecycle.options.args); do
        arg=${arg#-}
        echo "${arg%%=*} = ${arg#*=}"
    done
} > "$OUT/lifecycle.options"
