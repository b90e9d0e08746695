//! The `pytie` command. Exit codes: 0 all programs pass, 1 a program
//! fails (its report is printed), 2 bad usage, unreadable or empty file,
//! or a text program that does not parse, 3 a step hung (did not finish
//! within the step timeout: the hang's report is on standard error, and
//! the process exits at once, the stuck thread cannot be unwound).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::backend::pytie::PytieBackend;
use crate::backend::tvmffi::{self, KnownFindings, TvmFfiBackend};
use crate::harness::{self, with_executor};
use pytie_core::backend::Backend;
use pytie_core::exec::report::state_summary;
use pytie_core::exec::{Failure, Outcome};
use pytie_core::program::{Program, binary, text};

#[derive(Parser)]
#[command(
    name = "pytie",
    version,
    about = "Fuzzing and differential testing of PyObject tying"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone, Copy)]
struct Form {
    /// Read files as text programs, whatever their extension.
    #[arg(long, conflicts_with = "binary")]
    text: bool,
    /// Read files as binary programs, whatever their extension.
    #[arg(long)]
    binary: bool,
}

/// The implementation `run` checks.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendName {
    /// pytie's own runtime (design S).
    Pytie,
    /// apache-tvm-ffi from PyPI, installed by scripts/setup-tvmffi (or the
    /// environment $PYTIE_TVMFFI_VENV names).
    TvmFfi,
    /// apache-tvm-ffi built with tying on by scripts/setup-tvmffi-tied
    /// ($PYTIE_TVMFFI_TIED_VENV, else .venv/tvmffi-tied); checked against
    /// the model's design U.
    TvmFfiTied,
}

impl BackendName {
    fn is_tvmffi(self) -> bool {
        self != BackendName::Pytie
    }

    /// Load a tvm-ffi build (once per process) and check it is the one
    /// asked for: `tvm-ffi-tied` must have tying on.
    fn prepare(self) -> Result<(), Bad> {
        let build = match self {
            BackendName::Pytie => return Ok(()),
            BackendName::TvmFfi => tvmffi::Build::Default,
            BackendName::TvmFfiTied => tvmffi::Build::Tied,
        };
        tvmffi::select(build).map_err(Bad)?;
        let (tying, venv) =
            with_executor::<TvmFfiBackend, _>(|ex| (ex.backend.tying(), ex.backend.venv()))
                .map_err(Bad)?;
        if build == tvmffi::Build::Tied && !tying {
            return Err(Bad(format!(
                "--backend tvm-ffi-tied: the tvm-ffi in {} has tying off (a second return gave \
                 a new wrapper); rebuild it with scripts/setup-tvmffi-tied",
                venv.display()
            )));
        }
        Ok(())
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run programs against the model and an implementation; exit 1 if one
    /// fails.
    Run {
        #[command(flatten)]
        form: Form,
        /// Show whole states in failure reports, not only differences.
        #[arg(long)]
        full: bool,
        /// The implementation to check.
        #[arg(long, value_enum, default_value = "pytie")]
        backend: BackendName,
        /// tvm-ffi: work around recorded upstream findings (corpus/upstream/)
        /// instead of failing on them, saying so per step.
        #[arg(long)]
        work_around: bool,
        /// Every false `expect` fails, also under a model profile with tying
        /// off (by default there, an `expect` the model finds false too is
        /// counted, not failed: the shared scenarios assume tying on).
        #[arg(long)]
        strict: bool,
        /// The bound on one step, in seconds (default 2, or
        /// PYTIE_STEP_TIMEOUT): a step that takes longer is a hang, reported
        /// with its program, and `pytie` exits 3.
        #[arg(long, value_name = "SECS", value_parser = crate::watchdog::parse_timeout)]
        step_timeout: Option<std::time::Duration>,
        /// Program files: `.pytie` is text, anything else binary.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the program and the abstract state after every step.
    Trace {
        #[command(flatten)]
        form: Form,
        file: PathBuf,
    },
    /// Text program to binary (assertions are dropped). A binary program
    /// holds at most 256 steps: a longer one is an error unless --truncate.
    Encode {
        file: PathBuf,
        /// Keep the first 256 steps of a longer program (a warning says how
        /// many were dropped) instead of failing.
        #[arg(long)]
        truncate: bool,
        /// Write here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Turn a (minimized) crash artifact into a text regression: the
    /// program up to its failing step, headed by a comment saying what it
    /// caught.
    Regress {
        #[command(flatten)]
        form: Form,
        /// The backend the input failed on (tvm-ffi: binary inputs decode as
        /// the `tvmffi` target does, recorded findings are worked around).
        #[arg(long, value_enum, default_value = "pytie")]
        backend: BackendName,
        /// The failing input, e.g. fuzz/artifacts/lifecycle/minimized-from-...
        file: PathBuf,
        /// The regression file to write, e.g. corpus/regressions/NAME.pytie
        #[arg(short, long)]
        output: PathBuf,
        /// Write the file even when the input passes (by default that is
        /// exit 1 and nothing written: wrong build, mutant or toolchain?).
        #[arg(long)]
        allow_pass: bool,
    },
    /// A program as a standalone Python script that reproduces it on tvm_ffi
    /// alone (no pytie) and checks what the contract expects, for an
    /// upstream bug report.
    Repro {
        /// Write a Python script (the only form so far).
        #[arg(long, required = true)]
        python: bool,
        #[command(flatten)]
        form: Form,
        /// Which tvm-ffi build's profile the script expects (tying on or
        /// off); `tvm-ffi-tied` loads the activated build.
        #[arg(long, value_enum, default_value = "tvm-ffi")]
        backend: BackendName,
        /// The program (binary files decode as the `tvmffi` target does).
        file: PathBuf,
        /// Write here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Which transitions of the state machine the programs take: writes
    /// OUTPUT.dot (Graphviz) and renders OUTPUT.svg with `dot`; edges no
    /// program takes are red.
    Coverage {
        #[command(flatten)]
        form: Form,
        /// Also render OUTPUT.png.
        #[arg(long)]
        png: bool,
        /// Output path without extension.
        #[arg(short, long, default_value = "coverage")]
        output: PathBuf,
        /// Also check the programs against every (transition, trigger)
        /// combination the model reaches within `pytie exhaust`'s default
        /// slots and this depth; exit 1 naming each one missed, with a
        /// shortest program that takes it.
        #[arg(long, value_name = "DEPTH")]
        reachable: Option<usize>,
        /// With --reachable: write each missed combination's program into
        /// this directory (one text file each), for the corpus.
        #[arg(long, value_name = "DIR", requires = "reachable")]
        write_missing: Option<PathBuf>,
        /// Program files, or directories (recursed; files starting with a
        /// dot and `.md`/`.txt` files in them are skipped).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Exhaustive bounded checking: every state the model reaches within
    /// the bounds, every step from it, on the implementation; a failure is
    /// reported with a shortest program (README "Exhaustive bounded
    /// checking").
    Exhaust(crate::exhaust::ExhaustArgs),
    /// Binary program to text.
    Decode {
        file: PathBuf,
        /// Write here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Decode as this backend's fuzz target does: within its step
        /// kinds (the `tvmffi` target's inputs: `--backend tvm-ffi`).
        #[arg(long, value_enum, default_value = "pytie")]
        backend: BackendName,
    },
}

/// Print to standard output; a closed pipe (`pytie trace F | head`) is not
/// an error worth a panic.
macro_rules! out {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// A user-facing error: printed, exit 2.
struct Bad(String);

fn is_text(path: &Path, form: Form) -> bool {
    if form.text {
        true
    } else if form.binary {
        false
    } else {
        // Standard input is text unless `--binary`.
        path == Path::new("-") || path.extension().is_some_and(|e| e == "pytie")
    }
}

/// The largest input file read (`--binary /dev/zero` must not read
/// forever): 64 MiB, far above the step limit's text (1,000,000 lines).
const MAX_INPUT: u64 = 64 << 20;

fn read(path: &Path) -> Result<Vec<u8>, Bad> {
    use std::io::Read;
    let cannot = |e: std::io::Error| Bad(format!("{}: cannot read: {e}", path.display()));
    let mut data = Vec::new();
    // `-` is standard input (`pytie run - < prog.pytie`, text unless
    // `--binary`).
    let source: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).map_err(cannot)?)
    };
    source
        .take(MAX_INPUT + 1)
        .read_to_end(&mut data)
        .map_err(cannot)?;
    if data.len() as u64 > MAX_INPUT {
        return Err(Bad(format!(
            "{}: larger than {} MiB, the most pytie reads",
            path.display(),
            MAX_INPUT >> 20
        )));
    }
    if data.is_empty() {
        return Err(Bad(format!("{}: empty file", path.display())));
    }
    Ok(data)
}

/// Load a program in the form `form` says (or its extension).
pub fn load(path: &Path, text_form: bool) -> Result<Program, String> {
    let data = read(path).map_err(|Bad(e)| e)?;
    if text_form {
        text::parse_bytes(&data).map_err(|e| format!("{}:{e}", path.display()))
    } else {
        Ok(decode_noting(
            path,
            &data,
            pytie_core::program::StepSet::ALL,
        ))
    }
}

/// Decode a binary program within `allowed`, saying on standard error
/// what of `data` was ignored (bytes past the 256th step, or an
/// incomplete last step): nothing is dropped silently.
fn decode_noting(path: &Path, data: &[u8], allowed: pytie_core::program::StepSet) -> Program {
    let (p, used) = binary::decode_counted(data, allowed);
    let ignored = data.len() - used;
    if ignored > 0 {
        let why = if p.ops.len() == binary::MAX_STEPS {
            format!("binary programs hold at most {} steps", binary::MAX_STEPS)
        } else {
            "an incomplete last step".to_string()
        };
        eprintln!(
            "pytie: {}: {} steps; {ignored} trailing bytes ignored: {why}",
            path.display(),
            p.ops.len()
        );
    }
    p
}

/// `pytie encode`: a text program to binary. Refuses (exit 2) to drop
/// steps past the binary form's limit unless `truncate`.
fn encode(file: &Path, output: Option<&Path>, truncate: bool) -> Result<ExitCode, Bad> {
    let p = load(file, true).map_err(Bad)?;
    let steps = p.ops.iter().filter(|op| !op.is_assertion()).count();
    let max = binary::MAX_STEPS;
    if steps > max {
        let dropped = steps - max;
        let what = format!(
            "{}: {steps} steps, but a binary program holds at most {max}: \
             the last {dropped} (steps {} to {steps}, assertions not counted)",
            file.display(),
            max + 1
        );
        if !truncate {
            return Err(Bad(format!(
                "{what} would be dropped; nothing written (--truncate keeps the first {max})"
            )));
        }
        eprintln!("pytie: warning: {what} are dropped (--truncate)");
    }
    write_out(output, &binary::encode(&p))?;
    Ok(ExitCode::SUCCESS)
}

/// `pytie decode`: a binary program to text. An input that decodes to no
/// step is an error (its text would be empty, which `run` rejects).
fn decode(file: &Path, output: Option<&Path>, backend: BackendName) -> Result<ExitCode, Bad> {
    let data = read(file)?;
    let steps = match backend {
        BackendName::Pytie => pytie_core::program::StepSet::ALL,
        BackendName::TvmFfi | BackendName::TvmFfiTied => crate::backend::tvmffi::steps(),
    };
    let p = decode_noting(file, &data, steps);
    if p.ops.is_empty() {
        return Err(Bad(format!(
            "{}: {} bytes decode to no step (a binary program is a {}-byte header, then steps); nothing written",
            file.display(),
            data.len(),
            binary::HEADER_LEN
        )));
    }
    write_out(output, text::print(&p).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn write_out(output: Option<&Path>, bytes: &[u8]) -> Result<(), Bad> {
    match output {
        Some(p) => {
            std::fs::write(p, bytes).map_err(|e| Bad(format!("{}: cannot write: {e}", p.display())))
        }
        None => std::io::stdout()
            .write_all(bytes)
            .map_err(|e| Bad(format!("cannot write to standard output: {e}"))),
    }
}

/// `ok FILE (...)` and, indented, what was skipped, refused, worked
/// around or left unjudged.
fn print_outcome(f: &Path, o: &Outcome) {
    let mut counts = format!("{} steps", o.steps);
    for (n, what) in [
        (o.skipped.len(), "skipped"),
        (o.refused.len(), "refused"),
        (o.worked_around.len(), "worked around"),
        (o.unheld, "expectations false on both sides"),
        (o.not_judged, "expectations not judged"),
    ] {
        if n > 0 {
            counts += &format!(", {n} {what}");
        }
    }
    out!("ok   {} ({counts})", f.display());
    if !o.skipped.is_empty() {
        let mut kinds: Vec<&str> = o.skipped.iter().map(|k| k.name()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        out!(
            "     skipped: step kinds this backend cannot express: {}",
            kinds.join(", ")
        );
    }
    for (step, why) in &o.refused {
        out!("     refused step {step}: {why}");
    }
    for (step, what) in &o.worked_around {
        out!("     worked around at step {step}: {what}");
    }
    if o.unheld > 0 {
        out!(
            "     {} `expect` steps are false on the model too (tying off): unheld (contract §4.3 E2)",
            o.unheld
        );
    }
    if o.not_judged > 0 {
        out!(
            "     {} `expect` steps come after a skipped or refused step: not judged (contract \
             §4.3 E4)",
            o.not_judged
        );
    }
}

/// Progress of a long run on standard error: a line a second once a
/// program has run for a second (checked every 4096 steps;
/// `PYTIE_PROGRESS_MS` sets the period, e.g. 0 for every check).
struct Progress<'a> {
    file: &'a Path,
    total: usize,
    start: std::time::Instant,
    next: std::time::Duration,
}

impl<'a> Progress<'a> {
    fn new(file: &'a Path, total: usize) -> Progress<'a> {
        Progress {
            file,
            total,
            start: std::time::Instant::now(),
            next: Self::period(),
        }
    }

    fn period() -> std::time::Duration {
        let ms = std::env::var("PYTIE_PROGRESS_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        std::time::Duration::from_millis(ms)
    }

    fn tick(&mut self, step: usize) {
        if step == 0 || step % 4096 != 0 {
            return;
        }
        let t = self.start.elapsed();
        if t >= self.next {
            eprintln!(
                "pytie: {}: step {step} of {} ({}%), {:.1} s",
                self.file.display(),
                self.total,
                step * 100 / self.total.max(1),
                t.as_secs_f64()
            );
            self.next = t + Self::period();
        }
    }
}

fn run(
    files: &[PathBuf],
    form: Form,
    full: bool,
    backend: BackendName,
    work_around: bool,
    strict: bool,
) -> Result<ExitCode, Bad> {
    let mut programs = Vec::new();
    for f in files {
        programs.push((f, load_for(f, form, backend)?));
    }
    let known = if work_around {
        KnownFindings::WorkAround
    } else {
        KnownFindings::Report
    };
    backend.prepare()?;
    if backend.is_tvmffi() {
        let about = with_executor::<TvmFfiBackend, _>(|ex| {
            ex.backend.set_known_findings(known);
            format!("{}\nmodel: {}", ex.backend.name(), ex.backend.profile())
        })
        .map_err(Bad)?;
        out!("backend: {about}");
    }
    let check = |f: &Path, p: &Program| -> Result<Outcome, Box<Failure>> {
        let label = f.display().to_string();
        let mut progress = Progress::new(f, p.ops.len());
        let mut tick = |step: usize, _: &_, _: &_| progress.tick(step);
        match backend {
            BackendName::Pytie => {
                harness::with_lifecycle(|ex| harness::run_watched(ex, p, &label, &mut tick))
            }
            BackendName::TvmFfi | BackendName::TvmFfiTied => {
                with_executor::<TvmFfiBackend, _>(|ex| {
                    ex.backend.set_known_findings(known);
                    ex.set_strict_expectations(strict.then_some(true));
                    harness::run_watched(ex, p, &label, &mut tick)
                })
                .expect("tvm-ffi was loaded above")
            }
        }
    };
    let mut failed = 0;
    for (f, p) in &programs {
        match check(f, p) {
            Ok(o) => print_outcome(f, &o),
            Err(e) => {
                failed += 1;
                let e = if full { e.full() } else { *e };
                out!("FAIL {}\n{e}", f.display());
            }
        }
    }
    if programs.len() > 1 {
        out!("{} passed, {failed} failed", programs.len() - failed);
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn trace(file: &Path, form: Form) -> Result<ExitCode, Bad> {
    let p = load(file, is_text(file, form)).map_err(Bad)?;
    let _ = write!(std::io::stdout(), "{}", text::print(&p));
    out!("---");
    let mut n = 0;
    let label = file.display().to_string();
    let r = with_executor::<PytieBackend, _>(|ex| {
        harness::run_watched(ex, &p, &label, &mut |step, expected, _actual| {
            let title = if step == 0 {
                n += 1;
                format!("teardown {n}")
            } else {
                format!("step {step}: {}", p.ops[step - 1])
            };
            out!("{title}\n{}", state_summary(expected));
        })
    })
    .map_err(Bad)?;
    match r {
        Ok(_) => {
            out!("pass");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            out!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Load a program as `backend` reads it: binary inputs for tvm-ffi decode
/// within its step kinds, as the `tvmffi` fuzz target does.
fn load_for(path: &Path, form: Form, backend: BackendName) -> Result<Program, Bad> {
    match backend {
        BackendName::TvmFfi | BackendName::TvmFfiTied if !is_text(path, form) => Ok(decode_noting(
            path,
            &read(path)?,
            crate::backend::tvmffi::steps(),
        )),
        _ => load(path, is_text(path, form)).map_err(Bad),
    }
}

fn regress(
    file: &Path,
    form: Form,
    backend: BackendName,
    output: &Path,
    allow_pass: bool,
) -> Result<ExitCode, Bad> {
    let p = load_for(file, form, backend)?;
    backend.prepare()?;
    let name = file
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let checked = match backend {
        BackendName::Pytie => harness::check_lifecycle(&p),
        BackendName::TvmFfi | BackendName::TvmFfiTied => {
            harness::check_tvmffi(&p, KnownFindings::WorkAround).map_err(Bad)?
        }
    };
    let (header, program) = match checked {
        Err(f) => (f.regression_header(), f.program.clone()),
        Ok(_) if !allow_pass => {
            eprintln!(
                "pytie: {}: this input passes: nothing failed, so there is no regression to write \
                 (a mutant's input needs PYTIE_MUTANT and `--features mutants`; \
                 --allow-pass writes it anyway); {} not written",
                file.display(),
                output.display()
            );
            return Ok(ExitCode::from(1));
        }
        Ok(_) => (
            "# Regression: this input passes now (nothing failed when it was recorded).\n"
                .to_string(),
            p,
        ),
    };
    let body = format!(
        "{header}# From {name} ({}).\n{}",
        file.display(),
        text::print(&program)
    );
    write_out(Some(output), body.as_bytes())?;
    out!("wrote {} ({} steps)", output.display(), program.ops.len());
    Ok(ExitCode::SUCCESS)
}

fn repro(
    file: &Path,
    form: Form,
    backend: BackendName,
    output: Option<&Path>,
) -> Result<ExitCode, Bad> {
    let p = load_for(file, form, BackendName::TvmFfi)?;
    // The model's profile: the installed tvm-ffi's, else tying off (every
    // published wheel). An explicit `--backend tvm-ffi-tied` must load.
    match backend {
        BackendName::TvmFfiTied => backend.prepare()?,
        BackendName::Pytie => {
            return Err(Bad(
                "repro --python writes a script for tvm_ffi: --backend tvm-ffi or tvm-ffi-tied"
                    .into(),
            ));
        }
        BackendName::TvmFfi => {}
    }
    let tying = match with_executor::<TvmFfiBackend, _>(|ex| ex.backend.tying()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("pytie: {e}; assuming tying off, as in every published wheel");
            false
        }
    };
    let script = pytie_core::repro::python(&p, &file.display().to_string(), tying);
    write_out(output, script.as_bytes())?;
    if let Some(o) = output {
        eprintln!("wrote {} ({} steps)", o.display(), p.ops.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// The program files `paths` name: files as given, directories recursed
/// (sorted; dotfiles and `.md`/`.txt` files in them skipped).
pub fn program_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        let meta =
            std::fs::metadata(p).map_err(|e| format!("{}: cannot read: {e}", p.display()))?;
        if !meta.is_dir() {
            out.push(p.clone());
            continue;
        }
        let mut found = Vec::new();
        let mut stack = vec![p.clone()];
        while let Some(d) = stack.pop() {
            let entries =
                std::fs::read_dir(&d).map_err(|e| format!("{}: cannot read: {e}", d.display()))?;
            for entry in entries {
                let f = entry
                    .map_err(|e| format!("{}: cannot read: {e}", d.display()))?
                    .path();
                let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
                let skipped = name.is_none_or(|n| n.starts_with('.'))
                    || f.extension().is_some_and(|e| e == "md" || e == "txt");
                if f.is_dir() {
                    stack.push(f);
                } else if !skipped {
                    found.push(f);
                }
            }
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// `pytie coverage --reachable DEPTH`: the combinations the model reaches
/// within the default slots and `depth` that none of the programs takes.
fn uncovered(
    counts: &pytie_core::exec::coverage::Counts,
    depth: usize,
    write: Option<&Path>,
) -> Result<ExitCode, Bad> {
    use pytie_core::exhaust::{Bounds, Stop, reachable_combos};
    let bounds = Bounds {
        depth,
        ..Bounds::default()
    };
    let (reachable, summary) = match reachable_combos(&bounds) {
        Ok(r) => r,
        Err(Stop::TooManyStates(s)) => {
            return Err(Bad(format!(
                "more than {} states within depth {depth}: choose a smaller depth",
                s.states
            )));
        }
        Err(Stop::Failure(f, _)) => return Err(Bad(format!("the model failed: {f}"))),
    };
    let taken = counts.combos_reached();
    let missed: Vec<_> = reachable
        .iter()
        .filter(|(c, _)| !taken.contains(*c))
        .collect();
    out!(
        "reachable within {} vars, {} holders, {} weak slot(s), {} handles, depth {depth} \
         ({} states): {} combinations; the programs take {} of them",
        bounds.vars,
        bounds.holders,
        bounds.weaks,
        bounds.handles,
        summary.states,
        reachable.len(),
        reachable.len() - missed.len()
    );
    for (c, p) in &missed {
        let ops: Vec<String> = p.ops.iter().map(|op| op.to_string()).collect();
        out!("  missed: {}  ({})", c.name(), ops.join("; "));
        if let Some(dir) = write {
            std::fs::create_dir_all(dir)
                .map_err(|e| Bad(format!("cannot create {}: {e}", dir.display())))?;
            let name = c.name().replace([' ', '_'], "-");
            let file = dir.join(format!("{name}.pytie"));
            let text = format!(
                "# Coverage: the shortest program (pytie coverage --reachable {depth}) that takes\n\
                 # the transition `{}`{}.\n{}",
                c.name(),
                if c.foreign() {
                    " (on a thread without the GIL)"
                } else {
                    ""
                },
                text::print(p)
            );
            write_out(Some(&file), text.as_bytes())?;
        }
    }
    Ok(if missed.is_empty() || write.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `pytie coverage`; with `reachable` (`--reachable DEPTH`, `--write-missing
/// DIR`) also [`uncovered`] on the same counts.
fn coverage(
    paths: &[PathBuf],
    form: Form,
    output: &Path,
    png: bool,
    reachable: Option<(usize, Option<&Path>)>,
) -> Result<ExitCode, Bad> {
    use pytie_core::exec::coverage::{Counts, Edge, to_dot};
    let files = program_files(paths).map_err(Bad)?;
    if files.is_empty() {
        return Err(Bad("no program files found".into()));
    }
    let mut programs = Vec::new();
    for f in &files {
        programs.push((f, load(f, is_text(f, form)).map_err(Bad)?));
    }
    // The model says which transitions each program takes: no backend runs.
    let mut counts = Counts::default();
    for (_, p) in &programs {
        counts.add_program(p);
    }
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let title = format!(
        "pytie: state-machine transitions taken by {} programs ({})\nred: never taken",
        counts.programs,
        shown.join(", ")
    );
    out!("{} programs ({} files)", counts.programs, files.len());
    for e in Edge::ALL {
        out!("  {:<17} {:>5}", e.name(), counts.get(e));
    }
    let never: Vec<&str> = Edge::ALL
        .iter()
        .filter(|e| counts.get(**e) == 0)
        .map(|e| e.name())
        .collect();
    if never.is_empty() {
        out!("every transition is taken");
    } else {
        out!("never taken: {}", never.join(", "));
    }
    let combos = counts.combos_reached();
    out!(
        "by trigger and thread: {} combinations of transition, trigger (step or teardown), \
         cascade and shutdown taken",
        combos.len()
    );
    for c in combos.iter() {
        let thread = if c.foreign() {
            "foreign thread"
        } else {
            "interpreter's thread"
        };
        out!("  {:<48} {:>5}  {thread}", c.name(), counts.combo(c));
    }
    let dot_file = output.with_extension("dot");
    write_out(Some(&dot_file), to_dot(&counts, &title).as_bytes())?;
    out!("wrote {}", dot_file.display());
    let mut formats = vec!["svg"];
    if png {
        formats.push("png");
    }
    for fmt in formats {
        let target = output.with_extension(fmt);
        let result = std::process::Command::new("dot")
            .arg(format!("-T{fmt}"))
            .arg(&dot_file)
            .arg("-o")
            .arg(&target)
            .output();
        match result {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Bad(format!(
                    "cannot render {}: Graphviz's `dot` is not installed (Debian: apt-get install graphviz); {} is written",
                    target.display(),
                    dot_file.display()
                )));
            }
            Err(e) => return Err(Bad(format!("cannot run `dot`: {e}"))),
            Ok(o) if !o.status.success() => {
                return Err(Bad(format!(
                    "`dot -T{fmt}` failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                )));
            }
            Ok(_) => out!("wrote {}", target.display()),
        }
    }
    match reachable {
        Some((depth, write)) => uncovered(&counts, depth, write),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if let Err(e) = crate::check_mutant_env() {
        eprintln!("pytie: {e}");
        return ExitCode::from(2);
    }
    // A hang exits 3 (not abort); the process is the harness's alone, so
    // its thread count is part of the world a program must conserve.
    crate::watchdog::exit_on_hang(crate::watchdog::HANG_EXIT as u8);
    crate::conservation::own_process(true);
    let r = match cli.cmd {
        Cmd::Run {
            form,
            full,
            backend,
            work_around,
            strict,
            step_timeout,
            files,
        } => {
            match step_timeout {
                Some(t) => crate::watchdog::set_timeout(t),
                None => _ = crate::watchdog::timeout(),
            }
            run(&files, form, full, backend, work_around, strict)
        }
        Cmd::Trace { form, file } => trace(&file, form),
        Cmd::Encode {
            file,
            truncate,
            output,
        } => encode(&file, output.as_deref(), truncate),
        Cmd::Regress {
            form,
            backend,
            file,
            output,
            allow_pass,
        } => regress(&file, form, backend, &output, allow_pass),
        Cmd::Repro {
            python: _,
            form,
            backend,
            file,
            output,
        } => repro(&file, form, backend, output.as_deref()),
        Cmd::Coverage {
            form,
            png,
            output,
            reachable,
            write_missing,
            paths,
        } => coverage(
            &paths,
            form,
            &output,
            png,
            reachable.map(|depth| (depth, write_missing.as_deref())),
        ),
        Cmd::Exhaust(a) => Ok(crate::exhaust::command(&a)),
        Cmd::Decode {
            file,
            output,
            backend,
        } => decode(&file, output.as_deref(), backend),
    };
    r.unwrap_or_else(|Bad(msg)| {
        eprintln!("pytie: {msg}");
        ExitCode::from(2)
    })
}
