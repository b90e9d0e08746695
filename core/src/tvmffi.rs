//! What pytie knows of apache-tvm-ffi without loading it: the version it
//! pins, the step kinds the library's API can express, and the files of
//! the recorded findings. The backend (`pytie::backend::tvmffi`) and the
//! script generator ([`crate::repro`]) both read them from here.

use crate::backend::Observes;
use crate::program::StepSet;

/// The version `scripts/setup-tvmffi` installs and
/// `scripts/setup-tvmffi-tied` builds from its source distribution.
pub const PINNED: &str = "0.1.15.post2";
/// The finding "every py_class field store leaks one strong reference".
pub const LEAK_FINDING: &str = "corpus/upstream/field-store-leaks-strong-ref.pytie";
/// The finding "using a moved-from object segfaults".
pub const MOVED_FINDING: &str = "corpus/upstream/moved-from-use-segfaults.pytie";

/// The finding "serializing a graph with a cycle overflows the stack".
pub const CYCLE_FINDING: &str = "corpus/upstream/json-graph-cycle-segfaults.pytie";

/// The finding "a callback's object argument is released twice when its
/// wrapper cannot be made".
pub const CALLBACK_FINDING: &str = "corpus/upstream/callback-arg-released-twice-on-oom.pytie";

/// The finding "an allocation failure while a callback's error is passed
/// to C++ loses the error, and the caller dereferences the empty one".
pub const ERROR_FINDING: &str = "corpus/upstream/callback-error-lost-on-oom-segfaults.pytie";

/// The finding "an allocation failure while a `py_class` field setter's
/// value conversion reports its error crashes the process" (tying off).
pub const SETTER_FINDING: &str = "corpus/upstream/field-setter-error-lost-on-oom-segfaults.pytie";

/// The finding in CPython 3.11 "an error propagating out of a Python
/// function is lost when its caller's frame object cannot be allocated"
/// (`take_ownership`, Python/frame.c: `PyErr_Clear`), met through a
/// `fragile` type's `__new__`.
pub const FRAME_FINDING: &str = "corpus/upstream/cpython-frame-error-lost-on-oom.pytie";

/// The finding in CPython 3.11 "a function whose argument is a cell
/// variable leaks a reference to it when the cell cannot be allocated",
/// met through tvm_ffi's `getitem_helper` (`List.__getitem__`).
pub const CELL_FINDING: &str = "corpus/upstream/cpython-cell-arg-leaks-on-oom.pytie";

/// The finding "an activated build reads before a legacy-layout object".
pub const LEGACY_FINDING: &str = "corpus/upstream/legacy-layout-read-before-body.pytie";

/// The step kinds tvm-ffi can express: all (weak slots through the
/// object's weak count, as C++ `WeakObjectPtr` does; `shutdown` runs
/// upstream's atexit hook, in a child process the harness forks, since its
/// flag cannot be reset).
pub fn steps() -> StepSet {
    StepSet::ALL
}

/// The object kinds the tvm-ffi warm-up runs every step kind on, in order.
pub const WARM_UP_KINDS: [&str; 11] = [
    "plain", "dict", "cpp", "list", "map", "del", "weakref", "sub", "derived", "legacy", "fragile",
];

/// The tvm-ffi warm-up: every step kind once on two objects of each kind
/// of [`WARM_UP_KINDS`]. Some paths change a wrapper type's reference count
/// for good the first time they run, and the first call of a step kind on
/// a type fills the library's per-type caches (a callback's argument
/// setters), so that `oom K` fails the same allocation of a step in a
/// fresh process as in a long-lived one. The backend runs it once per
/// process (src/harness.rs); `pytie repro --python` runs it too before a
/// program with an `oom`.
pub fn warm_up() -> String {
    let mut out = String::new();
    for kind in WARM_UP_KINDS {
        out += &format!("new v0 {kind}\nnew v1 {kind}\n");
        out += "get v2 v0\nset v0 v1\nget v2 v0\nunset v0\nset v1 v1\necho v3 v1\n\
                hold h0 v1\nret v4 h0\ncall v6 h0\ncall_raise h0\npickle v7 v1\npyweak v1\n\
                weak w0 v1\nlock v5 w0\nunweak w0\nmove h1 v1\nget v2 v4\nrelease h0\n\
                call_move v6 h1\ncycle v0\ncollect\n";
    }
    out += "drop v6\ndrop v7\n";
    out
}

/// What the backend observes (contract §5 restricted to what tvm-ffi shows);
/// with tying on the backend adds bindings (the tag words).
pub const OBSERVES: Observes = Observes {
    strong: true,
    weak: true,
    binding: false,
    fields: true,
    wrappers: false,
    wrapper_refs: true,
    totals: false,
    tracked: true,
    finalized: true,
};
