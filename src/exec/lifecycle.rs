//! The `lifecycle` entry: one program on pytie's runtime (design S) against
//! the model. The fuzz target, `cargo test`'s corpus replay and `pytie run`
//! all come through here, so a failure found by one replays in the others.

use std::cell::RefCell;

use pyo3::Python;

use super::{Executor, Failure, Outcome};
use crate::backend::pytie::PytieBackend;
use crate::model::Design;
use crate::program::{Program, binary};
use crate::wrapper;

thread_local! {
    static EXEC: RefCell<Option<Executor<PytieBackend>>> = const { RefCell::new(None) };
}

/// Run `prog` with `f` given this thread's executor, holding the runtime
/// exclusively and the GIL throughout.
pub fn with_executor<R>(f: impl FnOnce(&mut Executor<PytieBackend>) -> R) -> R {
    let _session = wrapper::exclusive();
    Python::attach(|_py| {
        EXEC.with(|cell| {
            let mut slot = cell.borrow_mut();
            let ex = slot.get_or_insert_with(|| Executor::new(Design::S, PytieBackend::new()));
            f(ex)
        })
    })
}

/// Check one program.
pub fn check_program(prog: &Program) -> Result<Outcome, Box<Failure>> {
    with_executor(|ex| ex.run(prog))
}

/// Check the program a byte string decodes to (the binary form is total).
pub fn check_bytes(data: &[u8]) -> Result<Outcome, Box<Failure>> {
    check_program(&binary::decode(data))
}

/// Before the interpreter starts: settings a fuzzing process needs
/// (`PYTHONMALLOC=malloc`, so AddressSanitizer sees wrapper memory;
/// `PYTHONHOME` for a self-contained build), then start the interpreter and
/// the executor. Call first thing, from the fuzz target's init. With
/// `PYTIE_SHOW_PYTHON=1` in the environment, prints where the interpreter,
/// its standard library and libpython come from, on standard error; with
/// `PYTIE_LSAN_SELFTEST=1`, leaks a few CPython objects on purpose, to show
/// that the compiled-in LeakSanitizer suppressions apply
/// (`wrapper::lsan`).
pub fn init_fuzzing() {
    wrapper::prepare_environment();
    with_executor(|_| ());
    if std::env::var_os("PYTIE_LSAN_SELFTEST").is_some_and(|v| v == "1") {
        Python::attach(wrapper::lsan::leak_for_selftest);
    }
    if std::env::var_os("PYTIE_SHOW_PYTHON").is_some_and(|v| v == "1") {
        let origin = Python::attach(wrapper::interpreter_origin)
            .unwrap_or_else(|e| format!("cannot inspect the interpreter: {e}\n"));
        eprint!("{origin}");
    }
}

/// The fuzz target's body: a failure prints its report and aborts, so the
/// fuzzer saves the input.
pub fn fuzz_one(prog: &Program) {
    if let Err(f) = check_program(prog) {
        eprintln!("{f}");
        std::process::abort();
    }
}
