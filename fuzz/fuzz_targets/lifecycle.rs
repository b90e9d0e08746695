//! `cargo +nightly fuzz run lifecycle`: random programs (binary form, see
//! docs/format.md) run on pytie's runtime and the reference model in
//! lockstep. A divergence, broken invariant, runtime assertion or leak
//! prints its report and aborts, so the fuzzer saves the input.
//!
//! One harness, two engines, chosen by a cargo feature of this crate:
//! `libfuzzer` (the default: cargo-fuzz, OSS-Fuzz, ClusterFuzzLite) or
//! `afl` (`cargo afl build --no-default-features --features afl`). Both
//! start the interpreter first (for AFL++, before its fork server, so every
//! child inherits it), then run each input through [`one_input`].
#![cfg_attr(feature = "libfuzzer", no_main)]
// The weak link to ASan's report hook (`pytie::report_sanitizer_finds!`).
#![cfg_attr(feature = "libfuzzer", feature(linkage))]

#[cfg(not(any(feature = "libfuzzer", feature = "afl")))]
compile_error!(
    "choose a fuzzing engine: the feature `libfuzzer` (the default) or `afl` \
     (`cargo afl build --no-default-features --features afl`)"
);
#[cfg(not(any(feature = "libfuzzer", feature = "afl")))]
fn main() {}
#[cfg(all(feature = "libfuzzer", feature = "afl"))]
compile_error!(
    "choose one fuzzing engine: for AFL++ turn the default `libfuzzer` off \
     (`cargo afl build --no-default-features --features afl`)"
);

use pytie::backend::pytie::PytieBackend;
use pytie::harness;
use pytie_core::model::transition::Combo;
#[cfg(feature = "libfuzzer")]
use pytie_core::program::mutate;
use std::sync::atomic::{AtomicU8, Ordering};

/// libFuzzer's extra coverage counters: one per (transition, trigger)
/// combination of the model (`pytie_core::model::transition::Combo`), set
/// when a program takes it, so that a new way of reaching a transition (by
/// cascade, on a foreign thread, after shutdown) is new coverage even when
/// no new code runs. libFuzzer clears them before every input.
#[cfg(feature = "libfuzzer")]
#[used]
#[unsafe(link_section = "__libfuzzer_extra_counters")]
static COMBOS: [AtomicU8; Combo::COUNT] = [const { AtomicU8::new(0) }; Combo::COUNT];

/// The harness body both engines share. Every byte string is a program
/// (the binary form is total); `impl Arbitrary for Program` decodes the
/// same way, so inputs mean the same to either engine.
fn one_input(data: &[u8]) {
    let _combos = harness::fuzz_one::<PytieBackend>(data);
    #[cfg(feature = "libfuzzer")]
    for i in _combos.indices() {
        COMBOS[i].store(1, Ordering::Relaxed);
    }
}

#[cfg(all(feature = "libfuzzer", not(feature = "afl")))]
libfuzzer_sys::fuzz_target!(
    init: {
        // Before the interpreter starts: PYTHONMALLOC, PYTHONHOME.
        harness::init_fuzzing::<PytieBackend>();
        pytie::report_sanitizer_finds!();
        // A failure that does not replay alone: the shortest sequence of
        // recent programs that does is saved (`EXE FILE` runs one input).
        harness::enable_sequence_search();
    },
    |data: &[u8]| one_input(data)
);

// Structure-aware mutations (`pytie_core::program::mutate`): whole steps
// inserted, deleted, duplicated, swapped, retargeted, the swarm mask
// toggled; one mutation in eight is libFuzzer's own byte-level one, which
// keeps its compare-derived (trace-cmp) and dictionary mutations.
#[cfg(all(feature = "libfuzzer", not(feature = "afl")))]
libfuzzer_sys::fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    // Random testing first: the first mutations draw fresh random
    // programs only, as the peer does (the faults a few random steps
    // expose are found at its rate per program); then coverage guidance
    // takes half (BENCHMARKS.md, issue 26: programs to find).
    static MUTATIONS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let allowed = <PytieBackend as harness::Target>::steps();
    if MUTATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < FRESH_FIRST {
        let out = mutate::fresh(max_size, seed, allowed);
        data[..out.len()].copy_from_slice(&out);
        return out.len();
    }
    if seed % 8 == 0 {
        return libfuzzer_sys::fuzzer_mutate(data, size, max_size);
    }
    let out = mutate::mutate(&data[..size], max_size, seed, allowed);
    data[..out.len()].copy_from_slice(&out);
    out.len()
});

/// How many of a campaign's first mutations draw fresh random programs.
#[cfg(all(feature = "libfuzzer", not(feature = "afl")))]
const FRESH_FIRST: u32 = 1000;

// Splice a run of steps of another corpus input into this one.
#[cfg(all(feature = "libfuzzer", not(feature = "afl")))]
libfuzzer_sys::fuzz_crossover!(|data1: &[u8], data2: &[u8], out: &mut [u8], seed: u32| {
    let spliced = mutate::crossover(data1, data2, out.len(), seed, <PytieBackend as harness::Target>::steps());
    out[..spliced.len()].copy_from_slice(&spliced);
    spliced.len()
});

#[cfg(all(feature = "afl", not(feature = "libfuzzer")))]
fn main() {
    // The interpreter starts here, before afl::fuzz! starts the fork
    // server: every child is forked with CPython already initialized.
    harness::init_fuzzing::<PytieBackend>();
    afl::fuzz!(|data: &[u8]| one_input(data));
}
