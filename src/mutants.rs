//! Injected faults, to prove the checker finds bugs (the bug zoo). Compiled
//! only with the cargo feature `mutants`; without it, [`mutant!`] is the
//! literal `false` and the faulty branches are compiled away. One build
//! serves them all: `PYTIE_MUTANT=<name>` chooses one at run time (read
//! once; [`set`] changes it, for tests).
//!
//! Each is a bug someone could really write; the table with the oracle
//! that catches each is in docs/mutants.md, and `corpus/mutants/<name>.pytie`
//! is a minimal program that fails with it and passes without it.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

macro_rules! mutants {
    ($($variant:ident $name:literal: $fault:literal;)*) => {
        /// The faults, each a realistic bug in the runtime.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Mutant { $($variant,)* }

        impl Mutant {
            pub const ALL: &'static [Mutant] = &[$(Mutant::$variant,)*];

            /// The name `PYTIE_MUTANT` takes.
            pub fn name(self) -> &'static str {
                match self { $(Mutant::$variant => $name,)* }
            }

            /// What the fault is.
            pub fn fault(self) -> &'static str {
                match self { $(Mutant::$variant => $fault,)* }
            }
        }
    };
}

mutants! {
    FreshUnattached "fresh-unattached":
        "make_ret on a Detached handle makes a fresh wrapper but does not attach it";
    ActiveKeepsRef "active-keeps-ref":
        "make_ret on an Active handle keeps the caller's redundant +1";
    ReviveDropsRef "revive-drops-ref":
        "revival does not take over the caller's +1: it releases it";
    ReviveTakesTwice "revive-takes-twice":
        "revival takes the caller's +1 and one more";
    ReviveFresh "revive-fresh":
        "make_ret on an Inactive handle makes a fresh wrapper instead of reviving the cached one";
    DecrefBeforeDetach "decref-before-detach":
        "the last-ref drop DecRefs before detaching, so delete_space finds the wrapper still Active";
    DeactivateKeepsChandle "deactivate-keeps-chandle":
        "Active -> Inactive keeps chandle set after releasing the wrapper's +1";
    MovedStillOwns "moved-still-owns":
        "a move hands the +1 to the receiver but leaves chandle set, so the moved-from wrapper still DecRefs on death";
    MoveKeepsBinding "move-keeps-binding":
        "a move nulls chandle without detaching the binding";
    DeleteSpaceKeepsWrapper "delete-space-keeps-wrapper":
        "delete_space frees the block but not the cached wrapper";
    ReclaimAfterShutdown "reclaim-after-shutdown":
        "delete_space reclaims the cached wrapper after the shutdown flag";
    ForeignNoGil "foreign-no-gil":
        "delete_space on a thread without the GIL reclaims without taking it";
    StorageFreedAtStrongZero "storage-freed-at-strong-zero":
        "storage is freed when strong reaches 0 although a weak ref is held";
    DictCached "dict-cached":
        "an ineligible (dict) wrapper is cached and revived like an eligible one";
    UntiedTagRead "untied-tag-read":
        "make_ret reads the tag word without checking the object is tied";
    EchoBorrowedAsOwned "echo-borrowed-as-owned":
        "the FFI function treats its borrowed argument as owned (no IncRef)";
    DestroyKeepsField "destroy-keeps-field":
        "destroying an object does not release its field";
    ReadAfterFree "read-after-free":
        "DecRef reads the object's counts again after the deleter freed its storage (a use after free that changes no observed value)";
    UntiedTagPeek "untied-tag-peek":
        "make_ret peeks at the tag word through the unchecked accessor before testing tied-ness (a read before an untied body that changes no observed value)";
    LegacyPrefixPeek "legacy-prefix-peek":
        "the tied-ness test reads delete_space before every body, as upstream's TVMFFIPyIsCanonical does, without first asking the body whether it has an allocation prefix (a read before a legacy-layout body, contract §2.1 L2)";
    GcFinalizeOnce "gc-finalize-once":
        "the eligible wrapper type is a GC type, so PEP 442 runs its finalizer once: the second drop frees a wrapper the binding still names";
    ForeignWaitHoldsGil "foreign-wait-holds-gil":
        "release_foreign waits for the foreign thread without releasing the GIL, which the foreign thread's delete_space needs: a deadlock";
    UnsetDecrefsNone "unset-decrefs-none":
        "the field setter treats its None value as owned and DecRefs it: None's reference count slips once per unset";
    NumberingSticks "numbering-sticks":
        "the registry's reset() clears its handle table one chunk of 8 entries at a time and stops after the first: after a program that made more than 8 objects, the next program numbers its objects after the leftovers";
    ShutdownFlagSticks "shutdown-flag-sticks":
        "reset() leaves the shutdown flag to the reclaim door, which clears it only when it reclaimed a wrapper: a `shutdown` outlives its program";
    UnlistedLatch "unlisted-latch":
        "a latch `shutdown` sets and nothing resets (the process is ending, the thinking goes), which later returns obey by not attaching their fresh wrapper: process-wide state the world check does not list";
    TeardownFreesCached "teardown-frees-cached":
        "after the shutdown flag, a wrapper settling Inactive is freed (nothing will revive it at exit, the thinking goes) while its object's tag word still caches it";
    AllocFailKeepsRef "alloc-fail-keeps-ref":
        "when the wrapper cannot be allocated (MemoryError), the +1 the caller handed over is not released: the object leaks one strong reference";
    AllocFailDecrefsTwice "alloc-fail-decrefs-twice":
        "when the wrapper cannot be allocated, the handed-over +1 is released twice (once here, once by a caller that thinks it still owns it): the object dies while a var's field or a holder still refers to it";
}

const NONE: u8 = u8::MAX;
const UNREAD: u8 = u8::MAX - 1;

static CHOSEN: AtomicU8 = AtomicU8::new(UNREAD);

thread_local! {
    /// Set while [`off_here`] runs: the chosen fault is off on this thread
    /// only, so another thread's test keeps its mutant.
    static OFF_HERE: Cell<bool> = const { Cell::new(false) };
}

impl Mutant {
    pub fn from_name(name: &str) -> Option<Mutant> {
        Mutant::ALL.iter().copied().find(|m| m.name() == name)
    }
}

/// The mutant chosen by `PYTIE_MUTANT` (or [`set`]), if any. An unknown
/// name is a fatal usage error: a typo must not silently test nothing.
pub fn chosen() -> Option<Mutant> {
    if OFF_HERE.get() {
        return None;
    }
    let mut c = CHOSEN.load(Ordering::Relaxed);
    if c == UNREAD {
        c = match std::env::var("PYTIE_MUTANT") {
            Ok(n) if !n.is_empty() => match Mutant::from_name(&n) {
                Some(m) => m as u8,
                None => {
                    let names: Vec<&str> = Mutant::ALL.iter().map(|m| m.name()).collect();
                    eprintln!(
                        "pytie: unknown PYTIE_MUTANT {n:?}; one of: {}",
                        names.join(", ")
                    );
                    std::process::exit(2);
                }
            },
            _ => NONE,
        };
        CHOSEN.store(c, Ordering::Relaxed);
    }
    Mutant::ALL.get(usize::from(c)).copied()
}

/// Is `m` the chosen fault?
pub fn is(m: Mutant) -> bool {
    chosen() == Some(m)
}

/// Choose a fault (or none) for this process, overriding `PYTIE_MUTANT`.
pub fn set(m: Option<Mutant>) {
    CHOSEN.store(m.map_or(NONE, |m| m as u8), Ordering::Relaxed);
}

/// Run `f` with every fault off on this thread, leaving the process's
/// choice as it is (other threads keep it). For set-up that is not a test,
/// like the harness's warm-up; `f` must not hand work to other threads.
pub fn off_here<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            OFF_HERE.set(self.0);
        }
    }
    let _restore = Restore(OFF_HERE.replace(true));
    f()
}
