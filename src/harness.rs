//! The one harness every entry shares: the fuzz targets (`lifecycle`,
//! `tvmffi`), `cargo test`'s corpus replay and `pytie run` all check a
//! program through [`check`], so a failure found by one replays in the
//! others. Generic over the backend ([`Target`]); each backend keeps one
//! executor per thread, made on first use and reused (buffers warm).
//!
//! Every program run through [`run_watched`] (all of the above) is watched
//! step by step ([`crate::watchdog`]: a step that does not finish within
//! the step timeout is reported as a hang and ends the process) and, on
//! backends that say what their world outside a program is
//! ([`Target::world`]), checked for conservation ([`crate::conservation`]):
//! a program that passes but changed what outlives it fails as world drift.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::LocalKey;
use std::time::Instant;

use pyo3::Python;
use pytie_core::backend::Backend;
use pytie_core::exec::coverage::ComboSet;
use pytie_core::exec::{Executor, Failure, FailureKind, Outcome};
use pytie_core::model::Design;
use pytie_core::program::{Program, StepKind, StepSet, binary};
use pytie_core::state::{AbstractState, VarState};

use crate::backend::pytie::PytieBackend;
use crate::backend::tvmffi::{KnownFindings, TvmFfiBackend};
use crate::conservation::{self, World};
use crate::interp;
use crate::watchdog;

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
    /// The model design the backend implements.
    fn design(&self) -> Design {
        Design::S
    }
    /// The fuzz target's interpreter imports `site` (site-packages, where
    /// an installed library lives) when it starts.
    const SITE: bool = true;
    /// A line for the campaign's start-up (what was loaded, which profile).
    fn describe(&self) -> Option<String> {
        None
    }
    /// A program run once when the executor is made, before any program
    /// is checked for conservation: paths whose first use changes the
    /// world for good (lazily initialized interpreter state) run here.
    fn warm_up() -> Option<String> {
        None
    }
    /// `shutdown` runs in a forked child (src/child.rs): this backend's
    /// shutdown cannot be undone for the next program.
    const SHUTDOWN_IN_CHILD: bool = false;
    /// Python's singletons' reference counts are checked after every step
    /// (None's with the vars holding None): only where nothing but the
    /// program holds them between steps.
    const SINGLETONS_PER_STEP: bool = false;
    /// The world outside a program, as far as this backend can see it
    /// ([`conservation`]), into `out`; `false`: not checked. Called with
    /// the GIL held, between programs.
    fn world(&mut self, _out: &mut World) -> bool {
        false
    }
}

/// Run `prog` on `ex` as every entry does: the watchdog armed before each
/// step and the teardown (`label`, e.g. a file name, goes into a hang's
/// report), and, when the run passes, the world outside the program
/// compared before and after it. `trace` as in [`Executor::run_traced`].
pub fn run_watched<B: Target>(
    ex: &mut Executor<B>,
    prog: &Program,
    label: &str,
    trace: &mut dyn FnMut(usize, &AbstractState, &AbstractState),
) -> Result<Outcome, Box<Failure>> {
    // The watchdog's thread starts with the first program: before the
    // world is looked at, so that its start is not a change. The world is
    // looked at as the program starts (after `begin`'s reset: what an
    // earlier program left and the reset repairs is that program's drift,
    // not this one's).
    watchdog::begin_program(label, &prog.ops);
    WORLDS.with_borrow_mut(|(before, after)| {
        let mut checked = false;
        let r = ex.begin().and_then(|()| {
            checked = ex.backend.world(before);
            run_steps(ex, prog, trace)
        });
        watchdog::disarm();
        let outcome = r?;
        // The world after the program is what the next one starts from:
        // read after the reset that begins a program, so that state the
        // reset should restore and does not is charged to this program
        // (issue 31), not to the next, whose artifact would pass alone.
        if checked && let Err(e) = ex.backend.begin() {
            let note = format!("the reset after it failed: {e}");
            return Err(world_failure(ex, prog, FailureKind::Teardown, vec![note]));
        }
        if checked && ex.backend.world(after) && before != after {
            let drift = conservation::drift(before, after);
            return Err(drift_failure(ex, prog, drift));
        }
        Ok(outcome)
    })
}

thread_local! {
    /// The world before and after the current program (buffers reused).
    static WORLDS: RefCell<(World, World)> = RefCell::default();
}

/// Run the backend's warm-up program: armed step by step like any program,
/// so that a crash or a hang in it is reported with its step; the world is
/// not compared (changing it for good is what the warm-up is for).
fn warm_up<B: Target>(ex: &mut Executor<B>, p: &Program) -> Result<Outcome, Box<Failure>> {
    watchdog::begin_program(
        &format!("the {} target's warm-up (src/harness.rs, warm_up)", B::NAME),
        &p.ops,
    );
    let r = ex
        .begin()
        .and_then(|()| run_steps_checked(ex, p, &mut |_, _, _| {}, false));
    watchdog::disarm();
    r
}

fn run_steps<B: Target>(
    ex: &mut Executor<B>,
    prog: &Program,
    trace: &mut dyn FnMut(usize, &AbstractState, &AbstractState),
) -> Result<Outcome, Box<Failure>> {
    run_steps_checked(ex, prog, trace, true)
}

/// [`run_steps`]; with `per_step`, Python's singletons' reference counts
/// are read after every step ([`singletons_moved`]): a step that changes
/// them for good is reported at that step, before the damage crashes the
/// process or the program ends (the warm-up, which may change them once
/// per process, runs without).
fn run_steps_checked<B: Target>(
    ex: &mut Executor<B>,
    prog: &Program,
    trace: &mut dyn FnMut(usize, &AbstractState, &AbstractState),
    per_step: bool,
) -> Result<Outcome, Box<Failure>> {
    let base = (per_step && B::SINGLETONS_PER_STEP).then(|| singleton_base(ex.actual()));
    for (i, op) in prog.ops.iter().enumerate() {
        watchdog::arm(i + 1);
        if crate::child::forks_at(ex, op) {
            return crate::child::finish_in_child(ex, prog, i);
        }
        if ex.step(op)? {
            trace(i + 1, ex.expected(), ex.actual());
            if let Some(base) = &base
                && let Some(notes) = singletons_moved(base, ex.actual())
            {
                ex.backend.abandon();
                return Err(step_drift_failure(ex, prog, i, notes));
            }
        }
    }
    watchdog::arm_teardown();
    ex.finish_traced(trace)
}

/// The vars holding None: each owns a reference to it.
fn vars_holding_none(s: &AbstractState) -> isize {
    s.vars
        .iter()
        .filter(|v| matches!(v, VarState::None))
        .count() as isize
}

/// The singletons' counts as the program starts, None's without the
/// references its vars hold.
fn singleton_base(s: &AbstractState) -> [isize; 5] {
    let mut base = Python::attach(crate::wrapper::singleton_refcounts);
    base[0] -= vars_holding_none(s);
    base
}

/// What changed in the singletons' counts since `base`, None's counted
/// with the references the vars hold now (contract §5, "the world").
fn singletons_moved(base: &[isize; 5], s: &AbstractState) -> Option<Vec<String>> {
    let now = Python::attach(crate::wrapper::singleton_refcounts);
    let held = vars_holding_none(s);
    let mut notes = Vec::new();
    for (i, name) in crate::wrapper::SINGLETONS.iter().enumerate() {
        let want = base[i] + if i == 0 { held } else { 0 };
        if now[i] != want {
            let vars = if i == 0 {
                format!(", {held} of them the vars holding None")
            } else {
                String::new()
            };
            notes.push(format!(
                "the reference count of {name}: {want} expected after this step ({} as the \
                 program began{vars}), {} found ({:+})",
                base[i],
                now[i],
                now[i] - want
            ));
        }
    }
    (!notes.is_empty()).then_some(notes)
}

fn step_drift_failure<B: Target>(
    ex: &Executor<B>,
    prog: &Program,
    i: usize,
    drift: Vec<String>,
) -> Box<Failure> {
    let mut notes = vec![
        "this step changed a count every program shares, and the program's own references do \
         not account for it: left alone, the damage ends in a crash or a failure programs later"
            .to_string(),
    ];
    notes.extend(drift);
    let mut f = world_failure(ex, prog, FailureKind::WorldDrift, notes);
    f.step = Some(i + 1);
    f.step_text = prog.ops[i].to_string();
    f.program = Program::new(prog.ops[..=i].to_vec());
    f
}

/// World drift found after the program: its notes, after the one that says
/// what that means.
fn drift_failure<B: Target>(ex: &Executor<B>, prog: &Program, drift: Vec<String>) -> Box<Failure> {
    let mut notes = vec![
        "the program passed, but what every program shares is not as it found it: \
         a later program would fail for it (and its artifact would pass alone)"
            .to_string(),
    ];
    notes.extend(drift);
    world_failure(ex, prog, FailureKind::WorldDrift, notes)
}

/// A failure the harness finds in the world outside the program (the
/// executor passed it): `kind` with `notes`, after teardown.
fn world_failure<B: Target>(
    ex: &Executor<B>,
    prog: &Program,
    kind: FailureKind,
    notes: Vec<String>,
) -> Box<Failure> {
    Box::new(Failure {
        kind,
        step: None,
        step_text: "after teardown: the world outside the program".into(),
        notes,
        expected: ex.expected().clone(),
        actual: ex.actual().clone(),
        program: prog.clone(),
        backend: format!(
            "{}, model design {:?}",
            ex.backend.name(),
            ex.model.design()
        ),
        full: false,
    })
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
                watchdog::setting_up(&format!(
                    "loading the {} target's backend and running its start-up probes",
                    B::NAME
                ));
                let b = B::make();
                watchdog::disarm();
                let b = b?;
                let mut ex = Executor::new(b.design(), b);
                if let Some(src) = B::warm_up() {
                    let p = pytie_core::program::text::parse(&src).expect("the warm-up parses");
                    // Set-up, not a test: it runs with the bug zoo's
                    // mutant off, so a mutant is found (or not) by the
                    // programs checked, with their artifact, never by a
                    // crash while the process starts (an ASan report here
                    // would have no input to save).
                    // Off on this thread only: the process's choice is
                    // another test thread's, and stays as it is.
                    #[cfg(feature = "mutants")]
                    let _ = crate::mutants::off_here(|| warm_up(&mut ex, &p));
                    #[cfg(not(feature = "mutants"))]
                    let _ = warm_up(&mut ex, &p);
                }
                *slot = Some(ex);
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
    check_named(prog, "", setup)
}

/// [`check_with`], `label` (a file name) naming the program in a hang's
/// report.
pub fn check_named<B: Target>(
    prog: &Program,
    label: &str,
    setup: impl FnOnce(&mut B),
) -> Result<Result<Outcome, Box<Failure>>, String> {
    with_executor::<B, _>(|ex| {
        setup(&mut ex.backend);
        run_watched(ex, prog, label, &mut |_, _, _| {})
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

/// With `PYTIE_REPORT_FILE` set (scripts/fuzz sets it), the failure's
/// report is also written there, so the script can print it again after
/// libFuzzer's own crash output, last on the screen.
pub fn keep_report(report: &str) {
    if let Some(path) = std::env::var_os("PYTIE_REPORT_FILE") {
        let _ = std::fs::write(path, report);
    }
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
    interp::prepare_environment(B::SITE);
    // The process is the harness's alone: its thread count is conserved
    // too. A hang aborts (the default) after this line, so `scripts/detect`
    // times it like any other find.
    conservation::own_process(true);
    watchdog::set_header(found_line);
    watchdog::timeout();
    // Invariants judged where the states differ (`Executor::judge_invariants_on_divergence`).
    match with_executor::<B, _>(|ex| {
        ex.judge_invariants_on_divergence(true);
        ex.backend.describe()
    }) {
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

/// AddressSanitizer's error-report callback (registered by the fuzz
/// targets, [`crate::report_sanitizer_finds`]): after ASan's report, the
/// line saying when the failure was found, as every other find has, so
/// `scripts/detect` times memory errors too, and the step and the program
/// up to it, as a crash's report has.
pub extern "C" fn sanitizer_report(_report: *const std::ffi::c_char) {
    eprintln!("{}", found_line());
    watchdog::sanitizer_died();
}

fn found_line() -> String {
    found_line_after(PROGRAMS.load(Ordering::Relaxed))
}

fn found_line_after(n: u64) -> String {
    let secs = STARTED.get().map_or(0.0, |t| t.elapsed().as_secs_f64());
    let from_first = FIRST_PROGRAM
        .get()
        .map_or(0.0, |t| t.elapsed().as_secs_f64());
    format!(
        "pytie: found after {n} programs, {secs:.3} s after start-up, {from_first:.3} s from the \
         first program"
    )
}

/// When the fuzzing process began its first program: time to detect is
/// judged from here (issue 26), start-up excluded.
static FIRST_PROGRAM: OnceLock<Instant> = OnceLock::new();

/// A fuzz target's body: a failure prints its report and aborts, so the
/// fuzzer saves the input. The report starts with when the failure was
/// found (programs run, seconds since start-up), before the fuzzer's own
/// crash handling takes its time; `scripts/detect` reads it.
///
/// Returns the (transition, trigger) combinations the program took, for
/// the target's extra coverage counters: so the fuzzer is guided by how a
/// transition happened, not only by which code ran.
///
/// A *sequence* input (`binary::SEQUENCE_MAGIC`) is several programs, run
/// in order; a target saves one when a failure does not replay alone
/// ([`enable_sequence_search`]).
pub fn fuzz_one<B: Target>(data: &[u8]) -> ComboSet {
    if let Some(parts) = binary::sequence(data) {
        let n = parts.len();
        let mut combos = ComboSet::default();
        for (i, p) in parts.into_iter().enumerate() {
            combos = fuzz_program::<B>(p, Some((i + 1, n)));
        }
        return combos;
    }
    let combos = fuzz_program::<B>(data, None);
    if SEQUENCE_SEARCH.load(Ordering::Relaxed) {
        RECENT.with_borrow_mut(|r| {
            // Once full, the oldest program's buffer takes the newest: no
            // allocation per program.
            let mut buf = if r.len() == RECENT_PROGRAMS {
                r.pop_front().unwrap_or_default()
            } else {
                Vec::new()
            };
            buf.clear();
            buf.extend_from_slice(data);
            r.push_back(buf);
        });
    }
    combos
}

/// One program of a fuzz input (`place`: its place in a sequence input).
fn fuzz_program<B: Target>(data: &[u8], place: Option<(usize, usize)>) -> ComboSet {
    let n = PROGRAMS.fetch_add(1, Ordering::Relaxed) + 1;
    FIRST_PROGRAM.get_or_init(Instant::now);
    let prog = decode::<B>(data);
    match check_with::<B>(&prog, B::for_campaign) {
        Ok(Ok(outcome)) => outcome.combos,
        Ok(Err(f)) => {
            let mut report = format!("{}\n{f}", found_line_after(n));
            match place {
                Some((i, n)) => {
                    report += &format!("\n(program {i} of the {n} of this sequence input)")
                }
                None => report += &sequence_note(data).unwrap_or_default(),
            }
            eprintln!("{report}");
            keep_report(&report);
            std::process::abort();
        }
        Err(e) => {
            eprintln!("{}: {e}", B::NAME);
            std::process::exit(2);
        }
    }
}

/// How many passing programs a fuzz target keeps (issue 31): a failure
/// that does not replay alone is searched for among the sequences of the
/// last of them.
pub const RECENT_PROGRAMS: usize = 8;

thread_local! {
    static RECENT: RefCell<std::collections::VecDeque<Vec<u8>>> =
        const { RefCell::new(std::collections::VecDeque::new()) };
}

static SEQUENCE_SEARCH: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set in the process a target starts to replay an input in
/// ([`sequence_note`]): it searches no further.
const REPLAYING: &str = "PYTIE_REPLAYING";

/// A libFuzzer target's init calls this: keep the last programs, and when
/// a failure does not replay alone, replay it in fresh processes of this
/// executable (`EXE FILE` runs one input), after the last one, two, ...
/// programs before it, and save the shortest sequence that fails as
/// `sequence-HASH` beside libFuzzer's own artifact (`-artifact_prefix`).
/// Not for engines whose binary cannot run one input from a file argument.
pub fn enable_sequence_search() {
    if std::env::var_os(REPLAYING).is_none() {
        SEQUENCE_SEARCH.store(true, Ordering::Relaxed);
    }
}

/// What [`shortest_failing_sequence`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay {
    /// The program fails alone.
    Alone,
    /// It fails after the last `k` programs before it: the sequence input.
    After(usize, Vec<u8>),
    /// Not even after all of them.
    NotFound,
}

/// The shortest run of `recent` programs (oldest first) after which `last`
/// fails, as judged by `fails` (a fresh process each time): `last` alone
/// first, then after the last one, two, ... programs.
pub fn shortest_failing_sequence(
    recent: &[Vec<u8>],
    last: &[u8],
    mut fails: impl FnMut(&[u8]) -> bool,
) -> Replay {
    if fails(last) {
        return Replay::Alone;
    }
    for k in 1..=recent.len() {
        let parts: Vec<&[u8]> = recent[recent.len() - k..]
            .iter()
            .map(Vec::as_slice)
            .chain([last])
            .collect();
        let seq = binary::encode_sequence(&parts);
        if fails(&seq) {
            return Replay::After(k, seq);
        }
    }
    Replay::NotFound
}

/// For the report of a failure of `data`: nothing when it replays alone in
/// a fresh process (or the search is off); else where the sequence that
/// reproduces it was saved, or that none was found.
fn sequence_note(data: &[u8]) -> Option<String> {
    if !SEQUENCE_SEARCH.load(Ordering::Relaxed) {
        return None;
    }
    let recent: Vec<Vec<u8>> = RECENT.with_borrow(|r| r.iter().cloned().collect());
    if recent.is_empty() {
        return None;
    }
    let prefix = artifact_prefix();
    let scratch = format!("{prefix}pytie-replay-{}", std::process::id());
    let exe = std::env::current_exe().ok()?;
    let fails = |input: &[u8]| {
        std::fs::write(&scratch, input).is_ok()
            && std::process::Command::new(&exe)
                .arg(&scratch)
                .env(REPLAYING, "1")
                .env_remove("PYTIE_REPORT_FILE")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| !s.success())
    };
    let found = shortest_failing_sequence(&recent, data, fails);
    let _ = std::fs::remove_file(&scratch);
    match found {
        Replay::Alone => None,
        Replay::After(k, seq) => {
            let name = format!("{prefix}sequence-{:016x}", fnv1a(&seq));
            let saved = std::fs::write(&name, &seq).is_ok();
            Some(format!(
                "\npytie: this program passes alone, in a fresh process: what it found was left by \
                 the programs before it (state no check of this backend sees). It fails after the \
                 last {k} program(s) this process ran: {}; replay it with `{} {name}` or `pytie run \
                 --binary {name}` (docs/guide-triage.md, \"Sequences\")",
                if saved {
                    format!("the sequence of {} programs is saved as {name}", k + 1)
                } else {
                    format!("the sequence could not be written to {name}")
                },
                exe.display()
            ))
        }
        Replay::NotFound => Some(format!(
            "\npytie: this program passes alone, in a fresh process, and after each run of the last \
             {} programs this process ran: what it found was left by an earlier program, or \
             depends on more than the programs (docs/guide-triage.md, \"Sequences\")",
            recent.len()
        )),
    }
}

/// libFuzzer's `-artifact_prefix=` (where it saves crash inputs), else the
/// current directory.
fn artifact_prefix() -> String {
    std::env::args()
        .find_map(|a| a.strip_prefix("-artifact_prefix=").map(str::to_string))
        .unwrap_or_default()
}

/// FNV-1a, 64 bits: a name for a saved sequence.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

thread_local! {
    static PYTIE: RefCell<Option<Executor<PytieBackend>>> = const { RefCell::new(None) };
    static TVMFFI: RefCell<Option<Executor<TvmFfiBackend>>> = const { RefCell::new(None) };
}

/// pytie's runtime (design S): the `lifecycle` target.
impl Target for PytieBackend {
    const NAME: &'static str = "lifecycle";
    const SINGLETONS_PER_STEP: bool = true;
    /// pytie's runtime needs nothing installed.
    const SITE: bool = false;
    fn slot() -> &'static LocalKey<RefCell<Option<Executor<Self>>>> {
        &PYTIE
    }
    fn make() -> Result<Self, String> {
        Ok(PytieBackend::new())
    }
    /// Every kind this runtime expresses (not `pyweak`) but `finalize`:
    /// each program with it forks a child (about 1.8 ms), and with it in
    /// the decoded kinds the `lifecycle` target runs 466 programs a second
    /// where it runs 7,243 without (BENCHMARKS.md, issue 24). pytie's
    /// runtime runs `finalize` in `pytie run`, the corpus replay and the
    /// zoo; the `tvmffi` target and `exhaust` on tvm-ffi generate it.
    fn steps() -> StepSet {
        StepSet::ALL
            .without(StepKind::PyWeak)
            .without(StepKind::Finalize)
    }
    /// Some paths change the interpreter for good the first time they run
    /// (measured, one fresh process per corpus file: None's reference count
    /// drops by one, once per process, at the first `get` of an empty
    /// field or `unset`, at the first `MovedError`, at the first `set` on a
    /// dict wrapper): every step kind on each kind of wrapper, once, except
    /// `release_foreign` and `shutdown` (what a program may not change).
    fn warm_up() -> Option<String> {
        Some(
            "new v0\nnew v1 dict\nnew v2 untied\nget v3 v0\nget v3 v1\nunset v0\nunset v1\n\
         set v0 v1\nset v1 v0\nset v1 v1\nset v2 v2\nget v3 v1\necho v4 v1\necho v4 v0\n\
         hold h1 v1\nweak w0 v1\nlock v5 w0\nmove h0 v0\nget v3 v0\nset v0 v1\nunset v0\n\
         echo v4 v0\nhold h2 v0\nweak w1 v0\ncycle v1\ncycle v2\ncollect\n\
         new v6 fragile\nget v3 v6\nset v6 v6\nunset v6\necho v4 v6\nhold h3 v6\nmove h1 v6\n\
         ret v7 h3\nget v7 v6\n"
                .to_string(),
        )
    }
    fn world(&mut self, out: &mut World) -> bool {
        self.forget_nones();
        Python::attach(|py| conservation::snapshot(py, out));
        true
    }
}

/// apache-tvm-ffi: the `tvmffi` target. A campaign works around the
/// recorded findings (docs/guide-checking.md, "Recorded findings").
impl Target for TvmFfiBackend {
    const NAME: &'static str = "tvmffi";
    const SHUTDOWN_IN_CHILD: bool = true;
    // Not on tvm-ffi: its Cython layer holds references to None between
    // steps and even between programs (after `move h1 v0` in
    // corpus/scenarios/moved-wrapper-steps-fail-or-work.pytie, one more,
    // released at the next program's first `new`), so None's count there
    // is not a function of the program's state; its world check covers its
    // wrapper types instead.
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
    /// Some paths change a wrapper type's reference count for good the
    /// first time they run (measured: `DictNode`'s rose by one, once per
    /// process, in corpus/scenarios/dict-wrapper-identity-while-alive.pytie,
    /// and not when the same program ran again): every step kind on each
    /// object kind, once. It also fills the library's per-type caches (a
    /// callback's argument setters), so that `oom K` fails the same
    /// allocation of a step in a fresh process as in a long-lived one.
    fn warm_up() -> Option<String> {
        Some(pytie_core::tvmffi::warm_up())
    }
    fn world(&mut self, out: &mut World) -> bool {
        Python::attach(|py| self.world(py, out));
        true
    }
    fn design(&self) -> Design {
        TvmFfiBackend::design(self)
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
