//! The step watchdog: a hang is a finding like any other. The harness arms
//! it before every step ([`arm`]: one atomic load and store, no clock, no
//! syscall); a thread of its own wakes a few times per timeout and, when
//! the armed step has not changed for the whole timeout (default 2 s,
//! `PYTIE_STEP_TIMEOUT`, `pytie run --step-timeout`), prints a report (the
//! step, the program so far, where each thread is waiting) to standard
//! error and ends the process: `abort()` by default, so a fuzzer saves the
//! input as a crash; `pytie run` exits [`HANG_EXIT`] instead. The stuck
//! thread cannot be unwound, so there is no going on.
//!
//! Where each thread waits: the runtime sets a per-thread [`Phase`] around
//! its blocking calls ([`enter`]): the interpreter's thread while it waits
//! for the foreign thread, the foreign thread while it releases and while
//! it waits for the GIL.
//!
//! A crash is a finding too (issue 26): from the first program on, a
//! handler for SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGABRT writes the step
//! the process was in and the program up to it to standard error, without
//! allocating ([`on_crash`]), then hands the signal to the disposition it
//! replaced (libFuzzer's and ASan's save the input and report; the default
//! one ends the process as before).
//!
//! A layer of its own, just above the interpreter's: it knows programs
//! (pytie-core) and nothing of the runtime, which it serves.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use pytie_core::exec::{Failure, FailureKind};
use pytie_core::program::{Op, Program};
use pytie_core::state::AbstractState;

/// The exit status of `pytie run` after a hang (1 is a failed program, 2
/// bad usage).
pub const HANG_EXIT: i32 = 3;

/// The default bound on one step.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// What a thread of the runtime is doing, as far as blocking goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Nothing that blocks (or not known to).
    Running = 0,
    /// The interpreter's thread waits for the foreign thread to finish a
    /// release, the GIL released.
    WaitForeign = 1,
    /// The interpreter's thread waits for the foreign thread while it
    /// holds the GIL.
    WaitForeignHoldingGil = 2,
    /// The foreign thread waits for work.
    Idle = 3,
    /// The foreign thread drops a reference (destructors, `delete_space`).
    Releasing = 4,
    /// The foreign thread waits for the GIL (`PyGILState_Ensure`).
    WaitGil = 5,
}

impl Phase {
    fn from_u8(n: u8) -> Phase {
        match n {
            1 => Phase::WaitForeign,
            2 => Phase::WaitForeignHoldingGil,
            3 => Phase::Idle,
            4 => Phase::Releasing,
            5 => Phase::WaitGil,
            _ => Phase::Running,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Phase::Running => "running (not in a known blocking call)",
            Phase::WaitForeign => {
                "waiting for the foreign thread to finish a release (GIL released)"
            }
            Phase::WaitForeignHoldingGil => {
                "waiting for the foreign thread to finish a release WHILE HOLDING THE GIL"
            }
            Phase::Idle => "idle (waiting for work)",
            Phase::Releasing => "releasing a reference (destructor / delete_space)",
            Phase::WaitGil => "waiting for the GIL (PyGILState_Ensure in delete_space)",
        }
    }
}

/// Which thread a phase is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The thread running the program (the interpreter's).
    Interp,
    /// The persistent foreign thread of `release_foreign`.
    Foreign,
}

static PHASES: [AtomicU8; 2] = [
    AtomicU8::new(Phase::Running as u8),
    AtomicU8::new(Phase::Idle as u8),
];

fn slot(side: Side) -> &'static AtomicU8 {
    &PHASES[side as usize]
}

/// Set `side`'s phase until the guard drops (then back to what it was).
#[must_use]
pub fn enter(side: Side, phase: Phase) -> PhaseGuard {
    let before = slot(side).swap(phase as u8, Ordering::Relaxed);
    PhaseGuard { side, before }
}

/// Restores a phase when dropped.
pub struct PhaseGuard {
    side: Side,
    before: u8,
}

impl Drop for PhaseGuard {
    fn drop(&mut self) {
        slot(self.side).store(self.before, Ordering::Relaxed);
    }
}

/// The armed position: (sequence << 32) | step. Steps are 1-based;
/// [`START`] and [`TEARDOWN`] name the rest of a program, [`IDLE`] means
/// disarmed.
static ARMED: AtomicU64 = AtomicU64::new(IDLE as u64);
const START: u32 = 0;
/// Setting up outside any program ([`setting_up`]): not watched for
/// hangs, named by a crash report.
const SETUP: u32 = u32::MAX - 2;
const TEARDOWN: u32 = u32::MAX - 1;
const IDLE: u32 = u32::MAX;

/// The timeout in milliseconds (0: not read yet).
static TIMEOUT_MS: AtomicU64 = AtomicU64::new(0);
/// 0: abort; otherwise the exit status.
static EXIT_CODE: AtomicU8 = AtomicU8::new(0);

/// The program being run and a label for it (a file name), for reports.
struct Current {
    label: String,
    ops: Vec<Op>,
}

static CURRENT: Mutex<Current> = Mutex::new(Current {
    label: String::new(),
    ops: Vec::new(),
});

/// This process runs the watchdog's thread. A forked child (AFL++'s fork
/// server's) inherits the flag, not the thread: a fork handler clears it.
static RUNNING: AtomicBool = AtomicBool::new(false);

extern "C" fn forked_child() {
    RUNNING.store(false, Ordering::Relaxed);
}

/// A line printed before a hang report (the fuzz target's "found after").
static HEADER: OnceLock<fn() -> String> = OnceLock::new();

/// Parse a timeout in seconds (`2`, `0.5`): positive and finite.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 => {
            Ok(Duration::from_secs_f64(secs))
        }
        _ => Err(format!(
            "step timeout {s:?}: expected a number of seconds, more than 0 and at most 86400"
        )),
    }
}

/// The bound on one step: [`set_timeout`]'s, else `PYTIE_STEP_TIMEOUT`'s
/// (a bad value is a usage error: exit 2), else 2 s.
pub fn timeout() -> Duration {
    let ms = TIMEOUT_MS.load(Ordering::Relaxed);
    if ms != 0 {
        return Duration::from_millis(ms);
    }
    let t = match std::env::var("PYTIE_STEP_TIMEOUT") {
        Ok(s) if !s.is_empty() => parse_timeout(&s).unwrap_or_else(|e| {
            eprintln!("pytie: PYTIE_STEP_TIMEOUT: {e}");
            std::process::exit(2);
        }),
        _ => DEFAULT_TIMEOUT,
    };
    set_timeout(t);
    t
}

/// Change the bound on one step (`pytie run --step-timeout`).
pub fn set_timeout(t: Duration) {
    TIMEOUT_MS.store((t.as_millis() as u64).max(1), Ordering::Relaxed);
}

/// After a hang, exit with `code` instead of aborting (`pytie run`).
pub fn exit_on_hang(code: u8) {
    EXIT_CODE.store(code, Ordering::Relaxed);
}

/// A line to print before a hang report (set once).
pub fn set_header(f: fn() -> String) {
    let _ = HEADER.set(f);
}

/// A program starts: remember it for reports, start the watchdog thread
/// if this process has none (also after a fork), arm at its start.
pub fn begin_program(label: &str, ops: &[Op]) {
    install_crash_report();
    {
        let mut c = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
        c.label.clear();
        c.label.push_str(label);
        c.ops.clear();
        c.ops.extend_from_slice(ops);
        if !RUNNING.swap(true, Ordering::Relaxed) {
            start_thread();
        }
    }
    arm_at(START);
}

/// Work outside any program starts (loading a backend, its start-up
/// probes): a crash in it is reported as happening "while `what`". Not
/// watched for hangs. Ends with [`disarm`].
pub fn setting_up(what: &str) {
    install_crash_report();
    {
        let mut c = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
        c.label.clear();
        c.label.push_str(what);
        c.ops.clear();
    }
    arm_at(SETUP);
}

/// Step `n` (1-based) of the current program starts.
#[inline]
pub fn arm(n: usize) {
    arm_at(n.min(TEARDOWN as usize - 1) as u32);
}

/// The current program's teardown starts.
pub fn arm_teardown() {
    arm_at(TEARDOWN);
}

/// The current program is over: nothing is watched until the next one.
pub fn disarm() {
    arm_at(IDLE);
}

#[inline]
fn arm_at(step: u32) {
    // One writer (the harness, under the interpreter's exclusive lock): a
    // load and a store, no read-modify-write.
    let seq = (ARMED.load(Ordering::Relaxed) >> 32).wrapping_add(1);
    ARMED.store((seq << 32) | u64::from(step), Ordering::Release);
}

fn start_thread() {
    static AT_FORK: std::sync::Once = std::sync::Once::new();
    AT_FORK.call_once(|| {
        // SAFETY: registers a handler that only stores to an atomic.
        unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
    });
    let spawned = std::thread::Builder::new()
        .name("pytie-watchdog".into())
        .spawn(watch);
    if let Err(e) = spawned {
        eprintln!("pytie: cannot start the step watchdog: {e}");
        std::process::exit(2);
    }
}

fn watch() {
    let mut last = ARMED.load(Ordering::Acquire);
    let mut since = Instant::now();
    loop {
        let t = timeout();
        std::thread::sleep((t / 20).clamp(Duration::from_millis(5), Duration::from_millis(100)));
        let now = ARMED.load(Ordering::Acquire);
        if now != last {
            last = now;
            since = Instant::now();
            continue;
        }
        let step = now as u32;
        if step != IDLE && step != SETUP && since.elapsed() >= t {
            let note = format!(
                "no progress for {:.1} s (the bound on one step: PYTIE_STEP_TIMEOUT, \
                 `pytie run --step-timeout SECS`)",
                since.elapsed().as_secs_f64()
            );
            fire(step, note);
        }
    }
}

/// Something waited longer than any step may: report it as a hang of the
/// armed step and end the process. For bounded waits in the runtime,
/// which call it when the watchdog has not fired first.
pub fn stuck(what: &str) -> ! {
    let step = ARMED.load(Ordering::Acquire) as u32;
    fire(step, what.to_string())
}

fn fire(step: u32, note: String) -> ! {
    // The abort below must not add a crash report to the hang's.
    REPORTED.store(true, Ordering::SeqCst);
    let report = report(step, note);
    let mut err = std::io::stderr().lock();
    if let Some(h) = HEADER.get() {
        let _ = writeln!(err, "{}", h());
    }
    let _ = write!(err, "{report}");
    let _ = err.flush();
    drop(err);
    let _ = std::io::stdout().flush();
    match EXIT_CODE.load(Ordering::Relaxed) {
        // libFuzzer's SIGABRT handler saves the input as a crash artifact.
        0 => std::process::abort(),
        // SAFETY: `_exit` ends the process without running atexit handlers
        // or destructors, which could wait for the stuck thread's locks.
        code => unsafe { libc::_exit(i32::from(code)) },
    }
}

// ---- crash reports -----------------------------------------------------------

/// The signals a crash ends a process with.
const CRASH_SIGNALS: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
];

/// The dispositions [`install_crash_report`] replaced, in
/// [`CRASH_SIGNALS`] order.
static REPLACED: OnceLock<[libc::sigaction; 5]> = OnceLock::new();

/// A report (a hang's or a crash's) is written: the dying process says
/// nothing more.
static REPORTED: AtomicBool = AtomicBool::new(false);

/// Put [`on_crash`] in front of the process's crash dispositions, once.
fn install_crash_report() {
    if REPLACED.get().is_some() {
        return;
    }
    // SAFETY: sigaction with a zeroed (then filled) action and out-slots of
    // plain data; `on_crash` has the SA_SIGINFO signature.
    let replaced = unsafe {
        let mut old: [libc::sigaction; 5] = std::mem::zeroed();
        for (i, &sig) in CRASH_SIGNALS.iter().enumerate() {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_crash as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, &mut old[i]);
        }
        old
    };
    let _ = REPLACED.set(replaced);
}

/// The crash handler: the report, then the replaced disposition.
///
/// # Safety
/// Called by the kernel for one of [`CRASH_SIGNALS`] with its `siginfo_t`
/// and context.
unsafe extern "C" fn on_crash(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    // Any other signal this handler gets is an abort's.
    report_death_once(signal_name(sig).unwrap_or("SIGABRT"));
    let Some(i) = CRASH_SIGNALS.iter().position(|&s| s == sig) else {
        return;
    };
    let Some(old) = REPLACED.get().map(|r| r[i]) else {
        return;
    };
    // SAFETY: `old` is a disposition sigaction gave back; a handler in it
    // has the signature its flags say, and is called as the kernel would.
    unsafe {
        libc::sigaction(sig, &old, std::ptr::null_mut());
        match old.sa_sigaction {
            libc::SIG_IGN => {}
            // The default action: a fault re-faults when the handler
            // returns, a raised signal is delivered once it does.
            libc::SIG_DFL => {
                libc::raise(sig);
            }
            h if old.sa_flags & libc::SA_SIGINFO != 0 => {
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    std::mem::transmute(h);
                f(sig, info, ctx);
            }
            h => {
                let f: extern "C" fn(libc::c_int) = std::mem::transmute(h);
                f(sig);
            }
        }
    }
}

/// Text straight to standard error through a fixed buffer: no allocation
/// (the crash may have happened inside the allocator).
struct RawStderr {
    buf: [u8; 2048],
    len: usize,
}

impl RawStderr {
    fn flush(&mut self) {
        let mut at = 0;
        while at < self.len {
            // SAFETY: writes initialised bytes of our own buffer to fd 2.
            let n = unsafe { libc::write(2, self.buf[at..].as_ptr().cast(), self.len - at) };
            if n <= 0 {
                break;
            }
            at += n as usize;
        }
        self.len = 0;
    }
}

impl std::fmt::Write for RawStderr {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for chunk in s.as_bytes().chunks(self.buf.len()) {
            if self.len + chunk.len() > self.buf.len() {
                self.flush();
            }
            self.buf[self.len..self.len + chunk.len()].copy_from_slice(chunk);
            self.len += chunk.len();
        }
        Ok(())
    }
}

/// The death report (what killed the process, the step and the program up
/// to it), once per process, when a step is armed.
fn report_death_once(name: &str) {
    if !REPORTED.swap(true, Ordering::SeqCst) {
        let step = ARMED.load(Ordering::Acquire) as u32;
        if step != IDLE {
            write_death_report(name, step);
        }
    }
}

/// The name of signal `sig`, for the signals pytie reports a death by
/// (no allocation: the crash handler calls it).
pub fn signal_name(sig: libc::c_int) -> Option<&'static str> {
    Some(match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        _ => return None,
    })
}

/// A sanitizer's error report is out and the process will end (the fuzz
/// targets' AddressSanitizer callback, `harness::sanitizer_report`): the
/// same report as a crash's, the step it happened in and the program up to
/// it, so that a memory error names its step too (issue 26).
pub fn sanitizer_died() {
    report_death_once("an AddressSanitizer report");
}

/// The crash report for a death by `name`: the step and the program up
/// to it, in the text form `pytie run` replays.
fn write_death_report(name: &str, step: u32) {
    use std::fmt::Write as _;
    let mut out = RawStderr {
        buf: [0; 2048],
        len: 0,
    };
    let _ = write!(out, "\nFAIL: the process is dying of {name}");
    // The lock is the harness's; a crash while it is held leaves the
    // program unreadable rather than deadlocking here.
    let Ok(c) = CURRENT.try_lock() else {
        let _ = writeln!(out, " (the program being run cannot be read)");
        out.flush();
        return;
    };
    if step == SETUP {
        let _ = writeln!(out, " while {}, outside any program", c.label);
        out.flush();
        return;
    }
    let (upto, at) = match step {
        START => (0, None),
        TEARDOWN => (c.ops.len(), None),
        s => ((s as usize).min(c.ops.len()), Some(s as usize)),
    };
    match at.and_then(|n| c.ops.get(n - 1).map(|op| (n, op))) {
        Some((n, op)) => {
            let _ = write!(out, " in step {n}: `{op}`");
        }
        None if step == TEARDOWN => {
            let _ = write!(out, " in the program's teardown");
        }
        None => {
            let _ = write!(out, " at the start of the program");
        }
    }
    if !c.label.is_empty() {
        let _ = write!(out, " ({})", c.label);
    }
    let _ = writeln!(
        out,
        "\nprogram up to that step (replay: save as a .pytie file, `pytie run FILE`):"
    );
    for (i, op) in c.ops[..upto].iter().enumerate() {
        if at == Some(i + 1) {
            let _ = writeln!(out, "{op}    # <- step {}: dies here", i + 1);
        } else {
            let _ = writeln!(out, "{op}");
        }
    }
    out.flush();
}

/// The report of a hang at `step` (as armed).
fn report(step: u32, note: String) -> String {
    let (label, ops) = match CURRENT.try_lock() {
        Ok(c) => (c.label.clone(), c.ops.clone()),
        Err(_) => (String::new(), Vec::new()),
    };
    let (n, step_text, upto) = match step {
        START => (None, "start of the program".to_string(), 0),
        TEARDOWN | IDLE => (None, "teardown".to_string(), ops.len()),
        s => {
            let i = s as usize;
            let text = ops
                .get(i - 1)
                .map_or_else(|| "?".into(), |op| op.to_string());
            (Some(i), text, i.min(ops.len()))
        }
    };
    let phase = |side| Phase::from_u8(slot(side).load(Ordering::Relaxed)).text();
    let mut notes = vec![
        note,
        format!("interpreter thread: {}", phase(Side::Interp)),
        format!("foreign thread (pytie-foreign): {}", phase(Side::Foreign)),
    ];
    if !label.is_empty() {
        notes.insert(0, format!("in {label}"));
    }
    let failure = Failure {
        kind: FailureKind::Hang,
        step: n,
        step_text,
        notes,
        expected: AbstractState::default(),
        actual: AbstractState::default(),
        program: Program::new(ops[..upto].to_vec()),
        backend: "the backend the harness ran (the process is stuck in it)".into(),
        full: false,
    };
    let head = match n {
        Some(i) => format!("pytie: hang at step {i}\n"),
        None => "pytie: hang in the program's teardown or start-up\n".to_string(),
    };
    format!("{head}{failure}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pytie_core::program::text;

    #[test]
    fn timeouts_parse_or_say_why_not() {
        assert_eq!(parse_timeout("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_timeout("0.25").unwrap(), Duration::from_millis(250));
        for bad in ["0", "-1", "abc", "", "inf", "NaN", "1e9"] {
            assert!(parse_timeout(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_report_names_the_step_the_program_so_far_and_the_phases() {
        let p =
            text::parse("new v0 plain\nhold h0 v0\ndrop v0\nrelease_foreign h0\nnew v1 plain\n")
                .unwrap();
        {
            let mut c = CURRENT.lock().unwrap();
            c.ops = p.ops.clone();
            c.label = "f.pytie".into();
        }
        let _a = enter(Side::Interp, Phase::WaitForeignHoldingGil);
        let _b = enter(Side::Foreign, Phase::WaitGil);
        let r = report(4, "no progress".into());
        assert!(r.starts_with("pytie: hang at step 4\n"), "{r}");
        assert!(r.contains("at step 4: `release_foreign h0`"), "{r}");
        assert!(r.contains("WHILE HOLDING THE GIL"), "{r}");
        assert!(r.contains("waiting for the GIL"), "{r}");
        assert!(r.contains("in f.pytie"), "{r}");
        assert!(r.contains("release_foreign h0"), "{r}");
        assert!(
            !r.contains("new v1"),
            "the program stops at the stuck step:\n{r}"
        );
    }
}
