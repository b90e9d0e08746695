//! `cargo +nightly fuzz run lifecycle`: random programs (binary form, see
//! docs/format.md) run on pytie's runtime and the reference model in
//! lockstep. A divergence, broken invariant, runtime assertion or leak
//! prints its report and aborts, so libFuzzer saves the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pytie::exec::lifecycle;
use pytie::program::Program;

fuzz_target!(
    init: {
        // Before the interpreter starts: PYTHONMALLOC=malloc for ASan.
        lifecycle::init_fuzzing();
    },
    |prog: Program| {
        lifecycle::fuzz_one(&prog);
    }
);
