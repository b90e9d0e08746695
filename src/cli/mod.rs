//! The `pytie` command. Exit codes: 0 all programs pass, 1 a program
//! fails (its report is printed), 2 bad usage, unreadable or empty file,
//! or a text program that does not parse, 3 a step hung (did not finish
//! within the step timeout: the hang's report is on standard error, and
//! the process exits at once, the stuck thread cannot be unwound).

//!
//! One file per subcommand (`run.rs`, `trace.rs`, ...; `exhaust` is
//! [`crate::exhaust`]), the arguments and the dispatch here, and reading
//! and writing programs in `input.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::backend::tvmffi::{self, TvmFfiBackend};
use crate::harness::with_executor;
use pytie_core::backend::Backend;

/// Print to standard output; a closed pipe (`pytie trace F | head`) is not
/// an error worth a panic.
macro_rules! out {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod coverage;
mod decode;
mod encode;
mod input;
mod regress;
mod repro;
mod run;
mod sweep;
mod trace;

pub use input::{load, load_pytie, program_files};

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
pub(crate) struct Form {
    /// Read files as text programs, whatever their extension.
    #[arg(long, conflicts_with = "binary")]
    text: bool,
    /// Read files as binary programs, whatever their extension.
    #[arg(long)]
    binary: bool,
}

/// The implementation `run` checks.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackendName {
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
    pub(crate) fn is_tvmffi(self) -> bool {
        self != BackendName::Pytie
    }

    /// Load a tvm-ffi build (once per process) and check it is the one
    /// asked for: `tvm-ffi-tied` must have tying on.
    pub(crate) fn prepare(self) -> Result<(), Bad> {
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
    /// reported with a shortest program (docs/guide-campaigns.md "Exhaustive bounded
    /// checking").
    Exhaust(crate::exhaust::ExhaustArgs),
    /// SQLite-style out-of-memory test: every program with each of its
    /// steps' Python allocations made to fail in turn (`oom K` before the
    /// step), each judged as any program is; exit 1 if one fails
    /// (contract §4.4).
    Sweep {
        #[command(flatten)]
        form: Form,
        /// The implementation to sweep (tvm-ffi: recorded findings worked
        /// around, binary files read as the `tvmffi` target reads them).
        #[arg(long, value_enum, default_value = "pytie")]
        backend: BackendName,
        /// The most allocations tried in one step.
        #[arg(long, default_value_t = 255, value_name = "K")]
        max_k: u32,
        /// The most points (a step, an allocation) tried in one program.
        #[arg(long, value_name = "N")]
        max_points: Option<usize>,
        /// How many failure reports to print (all are counted).
        #[arg(long, default_value_t = 5, value_name = "N")]
        show: usize,
        /// Program files, or directories (recursed as `coverage` does).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
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

/// A user-facing error: printed, exit 2.
pub(crate) struct Bad(String);

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
            run::run(&files, form, full, backend, work_around, strict)
        }
        Cmd::Trace { form, file } => trace::trace(&file, form),
        Cmd::Encode {
            file,
            truncate,
            output,
        } => encode::encode(&file, output.as_deref(), truncate),
        Cmd::Regress {
            form,
            backend,
            file,
            output,
            allow_pass,
        } => regress::regress(&file, form, backend, &output, allow_pass),
        Cmd::Repro {
            python: _,
            form,
            backend,
            file,
            output,
        } => repro::repro(&file, form, backend, output.as_deref()),
        Cmd::Coverage {
            form,
            png,
            output,
            reachable,
            write_missing,
            paths,
        } => coverage::coverage(
            &paths,
            form,
            &output,
            png,
            reachable.map(|depth| (depth, write_missing.as_deref())),
        ),
        Cmd::Exhaust(a) => Ok(crate::exhaust::command(&a)),
        Cmd::Sweep {
            form,
            backend,
            max_k,
            max_points,
            show,
            paths,
        } => sweep::sweep(&paths, form, backend, max_k, max_points, show),
        Cmd::Decode {
            file,
            output,
            backend,
        } => decode::decode(&file, output.as_deref(), backend),
    };
    r.unwrap_or_else(|Bad(msg)| {
        eprintln!("pytie: {msg}");
        ExitCode::from(2)
    })
}
