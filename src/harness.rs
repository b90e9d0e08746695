//! The one harness every entry shares: the fuzz targets (`lifecycle`,
//! `tvmffi`), `cargo test`'s corpus replay and `pytie run` all check a
//! program through [`check`], so a failure found by one replays in the
//! others. Generic over the backend ([`Target`]); each backend keeps one
//! executor per thread, made on first use and reused (buffers warm).

use std::cell::RefCell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::LocalKey;
use std::time::Instant;

use pyo3::Python;
use pytie_core::backend::Backend;
use pytie_core::exec::{Executor, Failure, Outcome};
use pytie_core::model::Design;
use pytie_core::program::{Program, StepSet, binary};

use crate::backend::pytie::PytieBackend;
use crate::backend::tvmffi::{KnownFindings, TvmFfiBackend};
use crate::interp;

/// A backend the harness can drive.
pub trait Target: Backend + Sized + 'static {
    /// The fuzz target's name, in messages.
    const NAME: &'static str;
    /// This thread's executor slot (a `thread_local!` of the backend's).
    fn slot() -> &'static LocalKey<RefCell<Option<Executor<Self>>>>;
    /// Make the backend (load the library). `Err`: it cannot be had here.
    fn make() -> Result<Self, String>;
    /// The step kinds inputs decode to ([`binary::decode_for`]).
    fn steps() -> StepSet;
    /// How a fuzzing campaign sets the backend up before each program.
    fn for_campaign(&mut self) {}
    /// A line for the campaign's start-up (what was loaded, which profile).
    fn describe(&self) -> Option<String> {
        None
    }
}

/// Run `f` with this thread's executor on `B`, holding the interpreter
/// exclusively and the GIL throughout. `Err` when the backend cannot be
/// made (e.g. tvm-ffi not installed: run `scripts/setup-tvmffi`).
pub fn with_executor<B: Target, R>(f: impl FnOnce(&mut Executor<B>) -> R) -> Result<R, String> {
    let _session = interp::exclusive();
    Python::attach(|_py| {
        B::slot().with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(Executor::new(Design::S, B::make()?));
            }
            Ok(f(slot.as_mut().expect("just made")))
        })
    })
}

/// Check one program on `B`, its backend first set up by `setup`.
pub fn check_with<B: Target>(
    prog: &Program,
    setup: impl FnOnce(&mut B),
) -> Result<Result<Outcome, Box<Failure>>, String> {
    with_executor::<B, _>(|ex| {
        setup(&mut ex.backend);
        ex.run(prog)
    })
}

/// Check one program on `B` as it is set up.
pub fn check<B: Target>(prog: &Program) -> Result<Result<Outcome, Box<Failure>>, String> {
    check_with::<B>(prog, |_| {})
}

/// The program a fuzz input means to `B` (the binary form is total).
pub fn decode<B: Target>(data: &[u8]) -> Program {
    binary::decode_for(data, B::steps())
}

/// When the fuzzing process started, and how many programs it has run.
static STARTED: OnceLock<Instant> = OnceLock::new();
static PROGRAMS: AtomicU64 = AtomicU64::new(0);

/// A fuzz target's init. Before the interpreter starts: the settings a
/// fuzzing process needs (`PYTHONMALLOC=malloc`, so AddressSanitizer sees
/// wrapper memory; `PYTHONHOME` for a self-contained build); then start
/// the interpreter and make the executor (a backend that cannot be made
/// stops the campaign, exit 2). With `PYTIE_SHOW_PYTHON=1`, prints where
/// the interpreter, its standard library and libpython come from; with
/// `PYTIE_LSAN_SELFTEST=1`, leaks a few CPython objects on purpose, to
/// show that the compiled-in LeakSanitizer suppressions apply.
pub fn init_fuzzing<B: Target>() {
    STARTED.get_or_init(Instant::now);
    if let Err(e) = crate::check_mutant_env() {
        eprintln!("{}: {e}", B::NAME);
        std::process::exit(2);
    }
    interp::prepare_environment();
    match with_executor::<B, _>(|ex| ex.backend.describe()) {
        Ok(Some(line)) => eprintln!("{}: {line}", B::NAME),
        Ok(None) => {}
        Err(e) => {
            eprintln!("{}: {e}", B::NAME);
            std::process::exit(2);
        }
    }
    if std::env::var_os("PYTIE_LSAN_SELFTEST").is_some_and(|v| v == "1") {
        Python::attach(crate::wrapper::lsan::leak_for_selftest);
    }
    if std::env::var_os("PYTIE_SHOW_PYTHON").is_some_and(|v| v == "1") {
        let origin = Python::attach(interp::interpreter_origin)
            .unwrap_or_else(|e| format!("cannot inspect the interpreter: {e}\n"));
        eprint!("{origin}");
    }
}

/// A fuzz target's body: a failure prints its report and aborts, so the
/// fuzzer saves the input. The report starts with when the failure was
/// found (programs run, seconds since start-up), before the fuzzer's own
/// crash handling takes its time; `scripts/detect` reads it.
pub fn fuzz_one<B: Target>(data: &[u8]) {
    let n = PROGRAMS.fetch_add(1, Ordering::Relaxed) + 1;
    let prog = decode::<B>(data);
    match check_with::<B>(&prog, B::for_campaign) {
        Ok(Ok(_)) => {}
        Ok(Err(f)) => {
            let secs = STARTED.get().map_or(0.0, |t| t.elapsed().as_secs_f64());
            eprintln!("pytie: found after {n} programs, {secs:.3} s after start-up\n{f}");
            std::process::abort();
        }
        Err(e) => {
            eprintln!("{}: {e}", B::NAME);
            std::process::exit(2);
        }
    }
}

thread_local! {
    static PYTIE: RefCell<Option<Executor<PytieBackend>>> = const { RefCell::new(None) };
    static TVMFFI: RefCell<Option<Executor<TvmFfiBackend>>> = const { RefCell::new(None) };
}

/// pytie's runtime (design S): the `lifecycle` target.
impl Target for PytieBackend {
    const NAME: &'static str = "lifecycle";
    fn slot() -> &'static LocalKey<RefCell<Option<Executor<Self>>>> {
        &PYTIE
    }
    fn make() -> Result<Self, String> {
        Ok(PytieBackend::new())
    }
    fn steps() -> StepSet {
        StepSet::ALL
    }
}

/// apache-tvm-ffi: the `tvmffi` target. A campaign works around the
/// recorded findings (README, "Checking tvm-ffi itself").
impl Target for TvmFfiBackend {
    const NAME: &'static str = "tvmffi";
    fn slot() -> &'static LocalKey<RefCell<Option<Executor<Self>>>> {
        &TVMFFI
    }
    fn make() -> Result<Self, String> {
        TvmFfiBackend::new(KnownFindings::WorkAround)
    }
    fn steps() -> StepSet {
        pytie_core::tvmffi::steps()
    }
    fn for_campaign(&mut self) {
        self.set_known_findings(KnownFindings::WorkAround);
    }
    fn describe(&self) -> Option<String> {
        Some(format!("{}; {}", self.name(), self.profile()))
    }
}

/// Check one program on pytie's runtime (the `lifecycle` target).
pub fn check_lifecycle(prog: &Program) -> Result<Outcome, Box<Failure>> {
    check::<PytieBackend>(prog).expect("pytie's runtime is always available")
}

/// Check one program on apache-tvm-ffi, treating recorded findings as
/// `known` says. `Err`: tvm-ffi cannot be loaded.
pub fn check_tvmffi(
    prog: &Program,
    known: KnownFindings,
) -> Result<Result<Outcome, Box<Failure>>, String> {
    check_with::<TvmFfiBackend>(prog, |b| b.set_known_findings(known))
}

/// [`with_executor`] on pytie's runtime, which is always available.
pub fn with_lifecycle<R>(f: impl FnOnce(&mut Executor<PytieBackend>) -> R) -> R {
    with_executor::<PytieBackend, _>(f).expect("pytie's runtime is always available")
}

/// [`with_executor`] on apache-tvm-ffi, recorded findings treated as
/// `known` says.
pub fn with_tvmffi<R>(
    known: KnownFindings,
    f: impl FnOnce(&mut Executor<TvmFfiBackend>) -> R,
) -> Result<R, String> {
    with_executor::<TvmFfiBackend, _>(|ex| {
        ex.backend.set_known_findings(known);
        f(ex)
    })
}
