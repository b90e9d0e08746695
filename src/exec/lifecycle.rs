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
/// (`PYTHONMALLOC=malloc`, so AddressSanitizer sees wrapper memory).
/// Call first thing, from the fuzz target's init.
pub fn init_fuzzing() {
    wrapper::prepare_environment();
    with_executor(|_| ());
}

/// The fuzz target's body: a failure prints its report and aborts, so the
/// fuzzer saves the input.
pub fn fuzz_one(prog: &Program) {
    if let Err(f) = check_program(prog) {
        eprintln!("{f}");
        std::process::abort();
    }
}
