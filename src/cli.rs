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
    /// Text program to binary (assertions are dropped).
    Encode {
        file: PathBuf,
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
        path.extension().is_some_and(|e| e == "pytie")
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Bad> {
    let data =
        std::fs::read(path).map_err(|e| Bad(format!("{}: cannot read: {e}", path.display())))?;
    if data.is_empty() {
        return Err(Bad(format!("{}: empty file", path.display())));
    }
    Ok(data)
}

/// Load a program in the form `form` says (or its extension).
pub fn load(path: &Path, text_form: bool) -> Result<Program, String> {
    let data = read(path).map_err(|Bad(e)| e)?;
    if text_form {
        let src = String::from_utf8(data)
            .map_err(|e| format!("{}: not UTF-8 text: {e}", path.display()))?;
        text::parse(&src).map_err(|e| format!("{}:{e}", path.display()))
    } else {
        Ok(binary::decode(&data))
    }
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
    let check = |p: &Program, label: &str| -> Result<Outcome, Box<Failure>> {
        match backend {
            BackendName::Pytie => harness::check_named::<PytieBackend>(p, label, |_| {})
                .expect("pytie's runtime is always available"),
            BackendName::TvmFfi | BackendName::TvmFfiTied => {
                with_executor::<TvmFfiBackend, _>(|ex| {
                    ex.backend.set_known_findings(known);
                    ex.set_strict_expectations(strict.then_some(true));
                    harness::run_watched(ex, p, label, &mut |_, _, _| {})
                })
                .expect("tvm-ffi was loaded above")
            }
        }
    };
    let mut failed = 0;
    for (f, p) in &programs {
        match check(p, &f.display().to_string()) {
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
        BackendName::TvmFfi | BackendName::TvmFfiTied if !is_text(path, form) => Ok(
            binary::decode_for(&read(path)?, crate::backend::tvmffi::steps()),
        ),
        _ => load(path, is_text(path, form)).map_err(Bad),
    }
}

fn regress(file: &Path, form: Form, backend: BackendName, output: &Path) -> Result<ExitCode, Bad> {
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
        Err(f) => {
            let mut h = format!(
                "# Regression: {}\n",
                f.to_string().lines().next().unwrap_or_default()
            );
            for n in &f.notes {
                for l in n.lines() {
                    h += &format!("#   {l}\n");
                }
            }
            (h, f.program.clone())
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
    paths: &[PathBuf],
    form: Form,
    depth: usize,
    write: Option<&Path>,
) -> Result<ExitCode, Bad> {
    use pytie_core::exec::coverage::Counts;
    use pytie_core::exhaust::{Bounds, Stop, reachable_combos};
    let mut counts = Counts::default();
    for f in program_files(paths).map_err(Bad)? {
        counts.add_program(&load(&f, is_text(&f, form)).map_err(Bad)?);
    }
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

fn coverage(paths: &[PathBuf], form: Form, output: &Path, png: bool) -> Result<ExitCode, Bad> {
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
    Ok(ExitCode::SUCCESS)
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
        Cmd::Encode { file, output } => load(&file, true)
            .map_err(Bad)
            .and_then(|p| write_out(output.as_deref(), &binary::encode(&p)))
            .map(|()| ExitCode::SUCCESS),
        Cmd::Regress {
            form,
            backend,
            file,
            output,
        } => regress(&file, form, backend, &output),
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
        } => coverage(&paths, form, &output, png).and_then(|code| match reachable {
            Some(depth) => uncovered(&paths, form, depth, write_missing.as_deref()),
            None => Ok(code),
        }),
        Cmd::Exhaust(a) => Ok(crate::exhaust::command(&a)),
        Cmd::Decode { file, output } => read(&file)
            .and_then(|d| {
                write_out(
                    output.as_deref(),
                    text::print(&binary::decode(&d)).as_bytes(),
                )
            })
            .map(|()| ExitCode::SUCCESS),
    };
    r.unwrap_or_else(|Bad(msg)| {
        eprintln!("pytie: {msg}");
        ExitCode::from(2)
    })
}
