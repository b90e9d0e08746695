//! LeakSanitizer suppressions compiled into fuzzing builds (`cfg(fuzzing)`:
//! cargo-fuzz, OSS-Fuzz's and ClusterFuzzLite's builds, cargo-afl).
//!
//! CPython allocates for the life of the process by design (interned
//! strings, type caches, module state) and the fuzz target never finalizes
//! the interpreter, so at exit, or when libFuzzer checks an input that
//! allocated more than it freed, LeakSanitizer would report CPython's own
//! allocations. ClusterFuzz does not reliably apply a `.options` file's
//! `suppressions=`, and passes no environment, so the suppressions are
//! compiled in: the sanitizer runtime calls this hook, when it is defined,
//! before it reads any suppression file.
//!
//! Only allocations with a frame in libpython on their stack are
//! suppressed. Memory the Rust side allocates itself (native objects,
//! storage blocks) is still reported; pytie's own teardown check
//! (contract §6) counts every handle, block and wrapper, including the
//! wrapper objects CPython allocates for it, after every program.

use std::ffi::CStr;

/// One suppression a line: `leak:PATTERN`, matched against every frame's
/// function, source file and module (a substring of the module's path).
pub const SUPPRESSIONS: &CStr = c"leak:libpython3\n";

/// The sanitizer runtime's hook, read once when LeakSanitizer starts.
// SAFETY: `no_mangle` exports this under the name the sanitizer runtimes
// declare weakly (`const char *__lsan_default_suppressions(void)`); no other
// item in the program defines that symbol, and the signature matches. The
// returned pointer is to a NUL-terminated static string that lives for the
// whole process and is never written.
#[cfg(fuzzing)]
#[unsafe(no_mangle)]
pub extern "C" fn __lsan_default_suppressions() -> *const std::ffi::c_char {
    SUPPRESSIONS.as_ptr()
}

/// `PYTIE_LSAN_SELFTEST=1` (read by the fuzz target's init): leak a few
/// objects that CPython allocates, so that the leak check at exit has
/// something of libpython's to suppress. With the hook compiled in the
/// target exits 0 and LeakSanitizer lists `libpython3` under "Suppressions
/// used"; without it, it reports the leak and exits 1
/// (`scripts/check-oss-fuzz` checks the first).
pub fn leak_for_selftest(py: pyo3::Python<'_>) {
    for _ in 0..4 {
        std::mem::forget(pyo3::types::PyBytes::new(py, &[0x5a; 100]));
    }
}
