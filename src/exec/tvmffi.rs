//! The `tvmffi` entry: one program on apache-tvm-ffi (the installed wheel)
//! against the model in the profile the library's start-up probe chose.
//! The `tvmffi` fuzz target, `cargo test`'s replay and
//! `pytie run --backend tvm-ffi` all come through here.

use std::cell::RefCell;

use pyo3::Python;

use super::{Executor, Failure, Outcome};
use crate::backend::Backend;
use crate::backend::tvmffi::{self, KnownFindings, TvmFfiBackend};
use crate::model::Design;
use crate::program::{Program, binary};
use crate::wrapper;

thread_local! {
    static EXEC: RefCell<Option<Executor<TvmFfiBackend>>> = const { RefCell::new(None) };
}

/// Run `f` with this thread's executor on tvm-ffi, treating recorded
/// findings as `known` says, holding the interpreter exclusively and the
/// GIL throughout. `Err` when tvm-ffi cannot be loaded (not installed:
/// run `scripts/setup-tvmffi`).
pub fn with_executor<R>(
    known: KnownFindings,
    f: impl FnOnce(&mut Executor<TvmFfiBackend>) -> R,
) -> Result<R, String> {
    let _session = wrapper::exclusive();
    Python::attach(|_py| {
        EXEC.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(Executor::new(Design::S, TvmFfiBackend::new(known)?));
            }
            let ex = slot.as_mut().expect("just made");
            ex.backend.set_known_findings(known);
            Ok(f(ex))
        })
    })
}

/// Check one program.
pub fn check_program(
    prog: &Program,
    known: KnownFindings,
) -> Result<Result<Outcome, Box<Failure>>, String> {
    with_executor(known, |ex| ex.run(prog))
}

/// Check the program a byte string decodes to within the backend's step
/// kinds (`binary::decode_for`), working around recorded findings as a
/// campaign does.
pub fn check_bytes(data: &[u8]) -> Result<Result<Outcome, Box<Failure>>, String> {
    let prog = binary::decode_for(data, tvmffi::steps());
    check_program(&prog, KnownFindings::WorkAround)
}

/// The fuzz target's init: `PYTHONMALLOC=malloc` before the interpreter
/// starts, then load tvm-ffi (a missing installation stops the campaign).
pub fn init_fuzzing() {
    wrapper::prepare_environment();
    if let Err(e) = with_executor(KnownFindings::WorkAround, |ex| {
        eprintln!("tvmffi: {}; {}", ex.backend.name(), ex.backend.profile());
    }) {
        eprintln!("tvmffi: {e}");
        std::process::exit(2);
    }
}

/// The fuzz target's body: a failure prints its report and aborts, so the
/// fuzzer saves the input.
pub fn fuzz_one(data: &[u8]) {
    match check_bytes(data) {
        Ok(Ok(_)) => {}
        Ok(Err(f)) => {
            eprintln!("{f}");
            std::process::abort();
        }
        Err(e) => {
            eprintln!("tvmffi: {e}");
            std::process::exit(2);
        }
    }
}
