//! AFL++'s custom-mutator hook over pytie's step-level mutations.
//!
//! The libFuzzer build mutates programs whole steps at a time
//! (`pytie_core::program::mutate`, wired by `fuzz_mutator!` and
//! `fuzz_crossover!`). AFL++ takes a custom mutator from a shared library
//! named by `AFL_CUSTOM_MUTATOR_LIBRARY`; this crate is that library
//! (`cargo build --release -p pytie-afl-mutator`:
//! `target/release/libpytie_afl_mutator.so`; `scripts/afl` builds and sets
//! it). AFL++ keeps its own byte-level havoc beside it (unless
//! `AFL_CUSTOM_MUTATOR_ONLY=1`), as the libFuzzer build keeps one
//! mutation in eight of libFuzzer's.
//!
//! The exported functions follow AFL++'s C API (docs/custom_mutators.md
//! of AFL++): `afl_custom_init`, `afl_custom_fuzz`, `afl_custom_deinit`.
//! An engine binding, like the runtime layers: `unsafe` only at the FFI
//! boundary, each block with its reason. The mutations themselves are
//! pytie-core's, pure and total: every byte string is a program.

use std::ffi::{c_uint, c_void};

use pytie_core::program::StepSet;
use pytie_core::program::binary::{HEADER_LEN, MAX_STEPS};
use pytie_core::program::mutate::{self, Rng};

/// The longest input worth writing: the header and `MAX_STEPS` steps of
/// at most three bytes (the decoder ignores what follows).
pub const MAX_INPUT: usize = HEADER_LEN + 3 * MAX_STEPS;

/// One in this many mutations of an input that has a second one (AFL++'s
/// `add_buf`) splices a run of that input's steps in.
const SPLICE_ONE_IN: usize = 4;

/// The mutator's state: its seeded generator and the buffer AFL++ reads
/// the last output from (valid until the next call).
pub struct Mutator {
    rng: Rng,
    out: Vec<u8>,
}

impl Mutator {
    pub fn new(seed: u32) -> Mutator {
        Mutator {
            rng: Rng::new(u64::from(seed)),
            out: Vec::new(),
        }
    }

    /// Mutate `input` (splicing from `other` sometimes, when given) into
    /// at most `max_size` bytes; the result stays in `self` until the
    /// next call.
    pub fn fuzz(&mut self, input: &[u8], other: Option<&[u8]>, max_size: usize) -> &[u8] {
        let max = max_size.min(MAX_INPUT);
        let seed = self.rng.next_u64() as u32;
        self.out = match other {
            Some(b) if !b.is_empty() && self.rng.one_in(SPLICE_ONE_IN) => {
                mutate::crossover(input, b, max, seed, StepSet::ALL)
            }
            _ => mutate::mutate(input, max, seed, StepSet::ALL),
        };
        &self.out
    }
}

/// AFL++: make the mutator's state, seeded by AFL++.
#[unsafe(no_mangle)]
pub extern "C" fn afl_custom_init(_afl: *mut c_void, seed: c_uint) -> *mut c_void {
    Box::into_raw(Box::new(Mutator::new(seed))).cast()
}

/// AFL++: mutate `buf` (`buf_size` bytes), optionally splicing from
/// `add_buf`; `*out_buf` is set to the result (owned by the mutator,
/// valid until the next call), whose length is returned.
///
/// # Safety
/// `data` comes from [`afl_custom_init`] and is not yet deinitialized;
/// `buf` points to `buf_size` readable bytes, `add_buf` is null or points
/// to `add_buf_size` readable bytes, `out_buf` is writable; no other call
/// on `data` runs at the same time (AFL++ calls from one thread).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn afl_custom_fuzz(
    data: *mut c_void,
    buf: *mut u8,
    buf_size: usize,
    out_buf: *mut *mut u8,
    add_buf: *mut u8,
    add_buf_size: usize,
    max_size: usize,
) -> usize {
    // SAFETY: the caller's contract: `data` is a live Mutator of ours,
    // used by this call alone.
    let m = unsafe { &mut *data.cast::<Mutator>() };
    // SAFETY: `buf` points to `buf_size` readable bytes (an empty slice
    // when the size is 0, whatever the pointer).
    let input = unsafe { bytes(buf, buf_size) };
    // SAFETY: `add_buf` is null or points to `add_buf_size` bytes.
    let other = (!add_buf.is_null()).then(|| unsafe { bytes(add_buf, add_buf_size) });
    let out = m.fuzz(input, other, max_size);
    let len = out.len();
    // SAFETY: `out_buf` is writable; the buffer lives in `m` until the
    // next call, which is when AFL++ stops reading it.
    unsafe { *out_buf = m.out.as_mut_ptr() };
    len
}

/// AFL++: free the mutator's state.
///
/// # Safety
/// `data` comes from [`afl_custom_init`] and is not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn afl_custom_deinit(data: *mut c_void) {
    // SAFETY: the caller's contract: `data` is ours and no longer used.
    drop(unsafe { Box::from_raw(data.cast::<Mutator>()) });
}

/// The bytes at `p`.
///
/// # Safety
/// `p` points to `len` readable bytes that stay unchanged for `'a`, or
/// `len` is 0.
unsafe fn bytes<'a>(p: *const u8, len: usize) -> &'a [u8] {
    if len == 0 || p.is_null() {
        return &[];
    }
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(p, len) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pytie_core::program::binary;

    fn call(data: *mut c_void, input: &mut [u8], other: Option<&mut [u8]>, max: usize) -> Vec<u8> {
        let mut out: *mut u8 = std::ptr::null_mut();
        let (add, add_len) = match other {
            Some(b) => (b.as_mut_ptr(), b.len()),
            None => (std::ptr::null_mut(), 0),
        };
        // SAFETY: `data` is from afl_custom_init; the buffers are live.
        let n = unsafe {
            afl_custom_fuzz(
                data,
                input.as_mut_ptr(),
                input.len(),
                &mut out,
                add,
                add_len,
                max,
            )
        };
        // SAFETY: afl_custom_fuzz set `out` to `n` bytes it owns.
        unsafe { bytes(out, n) }.to_vec()
    }

    /// Through the C entry points as AFL++ calls them: outputs within the
    /// size limit, decoding to whole programs, different from their input
    /// most of the time, the same for the same seed.
    #[test]
    fn the_afl_entry_points_mutate_at_step_granularity() {
        let seed_input = first_seed();
        let run = |seed: u32| {
            let data = afl_custom_init(std::ptr::null_mut(), seed);
            let mut input = seed_input.clone();
            let mut other = [0u8, 0, 0, 0, 0, 1, 2, 3];
            let outs: Vec<Vec<u8>> = (0..200)
                .map(|i| {
                    let o = if i % 2 == 0 {
                        Some(&mut other[..])
                    } else {
                        None
                    };
                    call(data, &mut input, o, 64)
                })
                .collect();
            // SAFETY: from afl_custom_init, not used again.
            unsafe { afl_custom_deinit(data) };
            outs
        };
        let outs = run(7);
        assert_eq!(outs, run(7), "same seed, same mutations");
        assert_ne!(outs, run(8), "another seed, other mutations");
        let changed = outs.iter().filter(|o| **o != seed_input).count();
        assert!(
            changed > 150,
            "only {changed} of 200 outputs differ from the input"
        );
        for o in &outs {
            assert!(
                o.len() <= 64,
                "an output of {} bytes over the limit of 64",
                o.len()
            );
            // Whole steps: re-encoding what it decodes to gives it back.
            let p = mutate::parse(o, StepSet::ALL);
            let again = mutate::encode_with(p.mask, p.slots, &p.steps, StepSet::ALL, 64);
            assert_eq!(binary::decode(&again), binary::decode(o));
        }
        assert!(
            outs.iter().any(|o| binary::decode(o).ops.len() >= 8),
            "no multi-step program among 200 mutations"
        );
    }

    /// The first program of the shipped seed corpus, in name order.
    fn first_seed() -> Vec<u8> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../corpus/lifecycle");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        std::fs::read(&files[0]).unwrap()
    }
}
