//! Memory errors in plain `cargo test`, without a sanitizer (contract §2;
//! `src/native/guard.rs`): a use after free of a native block and a read
//! before an untied object's body are reported as runtime assertions. The
//! same faults injected into the runtime (`read-after-free`,
//! `untied-tag-peek` in the bug zoo) fail whole programs with the report.
//!
//! Only where blocks are guarded and quarantined: a debug build without a
//! sanitizer (plain `cargo test`). Under `scripts/asan` freed blocks are
//! really freed, and ASan reports these accesses itself.
#![cfg(all(debug_assertions, not(pytie_asan), not(fuzzing)))]

use pytie::native::{Object, TYPE_PLAIN, alloc, object, registry};

/// Run `f` with the runtime to itself and an empty registry; return the
/// violations it caused.
fn violations_of(f: impl FnOnce()) -> Vec<String> {
    let _g = pytie::interp::exclusive();
    registry::reset();
    f();
    let v = registry::take_violations();
    registry::reset();
    alloc::release_quarantine();
    v
}

#[test]
fn a_use_after_free_of_a_native_block_is_reported() {
    let v = violations_of(|| {
        let obj: *mut Object = alloc::alloc_untied(TYPE_PLAIN);
        // SAFETY: the only reference; strong 1, weak 1: storage freed here.
        unsafe { object::dec_ref(obj) };
        // SAFETY: none: the block is freed. The guard word of the
        // quarantined block reports it, and nothing is written.
        unsafe { object::inc_ref(obj) };
        // SAFETY: as above.
        let counts = unsafe { (*obj).counts() };
        assert_eq!(counts, (0, 0), "a freed block reads as dead");
    });
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(
        v[0].starts_with("use after free: IncRef on obj#0, whose storage was already freed"),
        "{v:?}"
    );
    assert!(
        v[1].starts_with("use after free: count read on obj#0"),
        "{v:?}"
    );
}

#[test]
fn a_read_before_an_untied_body_is_reported_by_the_unchecked_accessor_too() {
    let v = violations_of(|| {
        let obj = alloc::alloc_untied(TYPE_PLAIN);
        for read in [alloc::tag_word, alloc::tag_word_unchecked] {
            // SAFETY: none for an untied body (it has no tag word); in a
            // guarded build the word read is the block's no-tag marker.
            let word = unsafe { read(obj) };
            assert_eq!(word.load(std::sync::atomic::Ordering::Relaxed), 0);
        }
        // SAFETY: the only reference.
        unsafe { object::dec_ref(obj) };
    });
    assert_eq!(v.len(), 2, "{v:?}");
    for m in &v {
        assert!(
            m.starts_with("tag word read on obj#0, which is not a live tied object"),
            "{m}"
        );
    }
}

#[test]
fn a_tied_object_passes_every_check() {
    extern "C" fn free(body: *mut std::ffi::c_void) {
        // SAFETY: called once, when the weak count reaches 0.
        unsafe { alloc::free_tied_block(body.cast()) };
    }
    let v = violations_of(|| {
        let obj = alloc::alloc_tied(TYPE_PLAIN, free);
        // SAFETY: a live tied body; the only reference.
        unsafe {
            assert_eq!(
                alloc::tag_word(obj).load(std::sync::atomic::Ordering::Relaxed),
                0
            );
            object::inc_ref(obj);
            assert_eq!((*obj).counts(), (2, 1));
            object::dec_ref(obj);
            object::dec_ref(obj);
        }
    });
    assert_eq!(v, Vec::<String>::new());
}
