//! `cargo +nightly fuzz run tvmffi` (or `scripts/fuzz --target tvmffi`, `--target tvmffi-tied`): random
//! programs run on apache-tvm-ffi (the wheel scripts/setup-tvmffi installs)
//! and the reference model in lockstep. Inputs decode within the step kinds
//! the backend supports (`binary::decode_for`), so the same seeds serve both
//! targets. Recorded upstream findings are worked around or refused, each
//! by its documented rule (docs/guide-checking.md, "Recorded findings"); anything else
//! prints its report and aborts, so libFuzzer saves the input.
#![no_main]
// The weak link to ASan's report hook (`pytie::report_sanitizer_finds!`).
#![feature(linkage)]

use libfuzzer_sys::fuzz_target;
use pytie::backend::tvmffi::TvmFfiBackend;
use pytie::harness;
use pytie_core::model::transition::Combo;
use std::sync::atomic::{AtomicU8, Ordering};

/// libFuzzer's extra coverage counters, one per (transition, trigger)
/// combination the model took (see the `lifecycle` target).
#[used]
#[unsafe(link_section = "__libfuzzer_extra_counters")]
static COMBOS: [AtomicU8; Combo::COUNT] = [const { AtomicU8::new(0) }; Combo::COUNT];

fuzz_target!(
    init: {
        // Before the interpreter starts: PYTHONMALLOC=malloc for ASan;
        // then load tvm-ffi (and keep libFuzzer's SIGSEGV handler).
        harness::init_fuzzing::<TvmFfiBackend>();
        pytie::report_sanitizer_finds!();
        // A failure that does not replay alone: the shortest sequence of
        // recent programs that does is saved (`EXE FILE` runs one input).
        harness::enable_sequence_search();
    },
    |data: &[u8]| {
        for i in harness::fuzz_one::<TvmFfiBackend>(data).indices() {
            COMBOS[i].store(1, Ordering::Relaxed);
        }
    }
);
