//! The `lifecycle` entry: one program on pytie's runtime (design S) against
//! the model. The fuzz target, `cargo test`'s corpus replay and `pytie run`
//! all come through here, so a failure found by one replays in the others.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

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

/// When the fuzzing process started, and how many programs it has run.
static STARTED: OnceLock<Instant> = OnceLock::new();
static PROGRAMS: AtomicU64 = AtomicU64::new(0);

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
    STARTED.get_or_init(Instant::now);
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
/// fuzzer saves the input. The report starts with when the failure was
/// found (programs run, seconds since start-up), before the fuzzer's own
/// crash handling (stack symbolization) takes its time; `scripts/detect`
/// reads it.
pub fn fuzz_one(prog: &Program) {
    let n = PROGRAMS.fetch_add(1, Ordering::Relaxed) + 1;
    if let Err(f) = check_program(prog) {
        let secs = STARTED.get().map_or(0.0, |t| t.elapsed().as_secs_f64());
        eprintln!("pytie: found after {n} programs, {secs:.3} s after start-up\n{f}");
        std::process::abort();
    }
}
