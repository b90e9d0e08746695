//! Which code's comparisons the fuzzer is told about.
//!
//! libFuzzer's compare tracing (`-sanitizer-coverage-trace-compares`,
//! cargo-fuzz's default) reports every comparison the instrumented code
//! makes, and libFuzzer feeds the operands back into its mutations. In
//! this harness most comparisons are the oracle's: observing, comparing
//! and checking the two states after every step, values that never came
//! from the input. They cost more than half of an ASan execution and tell
//! the mutator nothing. Built with
//! `-Cllvm-args=-sanitizer-coverage-gated-trace-callbacks` (scripts/fuzz,
//! fuzz/gated.rustflags), instrumented code calls the compare callbacks
//! only while the gate below is set: [`Traced`] sets it while the runtime
//! under test runs a step. Edge coverage is not gated: it counts
//! everywhere. Without that flag (a bare `cargo fuzz run`) the gate is
//! unused and every comparison is traced, as before.

use std::sync::atomic::{AtomicI64, Ordering};

/// SanitizerCoverage's gate: the instrumented modules declare it
/// `linkonce` and read it before every compare callback; this strong
/// definition is the one they link to.
#[cfg(fuzzing)]
#[unsafe(no_mangle)]
static __sancov_should_track: AtomicI64 = AtomicI64::new(0);

#[cfg(not(fuzzing))]
static GATE: AtomicI64 = AtomicI64::new(0);
#[cfg(fuzzing)]
use __sancov_should_track as GATE;

/// While alive, the comparisons of the code that runs are traced.
pub struct Traced(i64);

impl Traced {
    /// A load and a store, not a `swap`: only the interpreter thread sets
    /// the gate, and a locked exchange cost about a tenth of the runtime's
    /// time a step (`perf annotate` of the bench's runtime alone).
    pub fn new() -> Traced {
        let before = GATE.load(Ordering::Relaxed);
        GATE.store(1, Ordering::Relaxed);
        Traced(before)
    }
}

impl Default for Traced {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        GATE.store(self.0, Ordering::Relaxed);
    }
}
