//! Memory errors made visible without a sanitizer (test and debug builds).
//!
//! With debug assertions (plain `cargo test`, the fuzz targets) or the
//! `mutants` feature, every block carries a **guard word** 32 bytes before
//! its body, and an untied block carries a **no-tag marker** where a tied
//! one has its tag word (16 bytes before the body):
//!
//! ```text
//! tied:    [guard][pad][tag word][delete_space][body]
//! untied:  [guard][pad][NO_TAG  ][delete_space][body]
//! legacy:  [guard][pad][NO_TAG  ][NO_PREFIX   ][body]
//! ```
//!
//! (A legacy block has no prefix in the contract's layout, §2.1; a
//! `delete_space` read on it reads the no-prefix marker and is reported.)
//!
//! Every accessor of the native layer (counts, IncRef/DecRef, weak hold and
//! release, upgrade, the field, `delete_space`, the tag word, checked and
//! unchecked alike) checks the guard first. A freed block is **poisoned**
//! (guard and counts overwritten) and **quarantined** (kept allocated, up to
//! [`QUARANTINE`] blocks, then freed oldest first; all of it when a new
//! program starts), so a use after free reads our own memory and is
//! reported as a runtime assertion, with the program, instead of passing
//! silently. A tag-word read on an untied object reads the marker and is
//! reported the same way.
//!
//! Under AddressSanitizer (`cfg(fuzzing)`, or `--cfg pytie_asan` as
//! `scripts/asan` sets) blocks are freed at once instead, so ASan sees
//! every access to freed memory itself; the guard and marker still catch
//! what they can. Release builds without debug assertions have none of
//! this: the layout is the contract's (§2).

use std::collections::VecDeque;
use std::sync::Mutex;

/// Guard words and markers are written and checked.
pub const GUARDED: bool = cfg!(any(debug_assertions, feature = "mutants"));

/// Freed blocks are kept (poisoned) instead of freed.
pub const QUARANTINED: bool = GUARDED && !cfg!(any(fuzzing, pytie_asan));

/// Bytes a guarded block has before the contract's prefix.
pub const GUARD_BYTES: usize = if GUARDED { 16 } else { 0 };

/// How many freed blocks the quarantine keeps at most.
pub const QUARANTINE: usize = 1 << 16;

/// The guard word of a live block. Not a user-space address, not a tag.
pub const LIVE: usize = 0xA11C_0DE5_0000_0001;
/// The guard word of a freed (quarantined) block.
pub const FREED: usize = 0xDEAD_B10C_DEAD_B10C;
/// What an untied or legacy block holds where a tied block has its tag word.
pub const NO_TAG: usize = 0x0DD0_0000_7A6F_0001;
/// What a legacy block holds where the others have `delete_space`.
pub const NO_PREFIX: usize = 0x0DD0_0000_9E7F_0002;
/// The combined count a freed body is poisoned with.
pub const POISONED_COUNT: u64 = 0xDDDD_DDDD_DDDD_DDDD;

/// What a guard word says of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    Live,
    Freed,
    /// Neither: not a block of this allocator (or its guard was overwritten).
    Foreign(usize),
}

impl Guard {
    pub fn of(word: usize) -> Guard {
        match word {
            LIVE => Guard::Live,
            FREED => Guard::Freed,
            w => Guard::Foreign(w),
        }
    }
}

/// A quarantined block: its start and how to free it.
pub(super) struct Held {
    pub block: usize,
    pub layout: std::alloc::Layout,
}

static HELD: Mutex<VecDeque<Held>> = Mutex::new(VecDeque::new());

/// Keep a freed block; returns the blocks that must now really be freed
/// (the oldest, past [`QUARANTINE`]).
pub(super) fn quarantine(h: Held) -> Vec<Held> {
    let mut q = HELD.lock().unwrap_or_else(|e| e.into_inner());
    q.push_back(h);
    let excess = q.len().saturating_sub(QUARANTINE);
    q.drain(..excess).collect()
}

/// How many freed blocks the quarantine holds (part of the world between
/// programs: none after a reset).
pub fn held() -> usize {
    HELD.lock().unwrap_or_else(|e| e.into_inner()).len()
}

/// Everything the quarantine holds, to be really freed (a new program
/// starts: nothing of the last one may be touched any more).
pub(super) fn drain() -> Vec<Held> {
    let mut q = HELD.lock().unwrap_or_else(|e| e.into_inner());
    q.drain(..).collect()
}

/// In a libFuzzer target's init: have AddressSanitizer call
/// [`harness::sanitizer_report`] after its report. The sanitizer's hook is
/// linked weakly (a build without ASan, `cargo fuzz build -s none`, has
/// none and skips it), so the target crate needs `#![feature(linkage)]`
/// (nightly, as cargo-fuzz is).
#[macro_export]
macro_rules! report_sanitizer_finds {
    () => {{
        unsafe extern "C" {
            #[linkage = "extern_weak"]
            static __asan_set_error_report_callback:
                Option<unsafe extern "C" fn(extern "C" fn(*const std::ffi::c_char))>;
        }
        // SAFETY: a weak symbol is read as a nullable function pointer;
        // ASan's hook only stores the callback, which is a plain function.
        unsafe {
            if let Some(set) = __asan_set_error_report_callback {
                set($crate::harness::sanitizer_report);
            }
        }
    }};
}

/// AddressSanitizer's defaults in the fuzz targets (`ASAN_OPTIONS` still
/// wins): no fake stack frames for stack-use-after-return. In safe Rust a
/// frame cannot be used after it returns, and CPython and tvm-ffi are not
/// instrumented for it; the fake stacks cost a third of an execution
/// (BENCHMARKS.md, issue 14). Heap errors, the classes the zoo and the
/// findings are about, are checked as before.
#[cfg(fuzzing)]
#[unsafe(no_mangle)]
pub extern "C" fn __asan_default_options() -> *const std::ffi::c_char {
    c"detect_stack_use_after_return=0".as_ptr()
}
