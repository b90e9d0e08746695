//! `pytie run`: programs against the model and an implementation.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::backend::tvmffi::{KnownFindings, TvmFfiBackend};
use crate::harness::{self, with_executor};
use pytie_core::backend::Backend;
use pytie_core::exec::{Failure, Outcome};
use pytie_core::program::Program;

use super::input::load_for;
use super::{BackendName, Bad, Form};
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
            "     {} `expect` steps not judged: after a skipped or refused step (contract §4.3 \
             E4), or about a count this backend does not observe (E5)",
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
        if step == 0 || !step.is_multiple_of(4096) {
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

pub(super) fn run(
    files: &[PathBuf],
    form: Form,
    full: bool,
    backend: BackendName,
    work_around: bool,
    strict: bool,
) -> Result<ExitCode, Bad> {
    // A sequence file's programs run in order, each named by its place.
    let mut programs: Vec<(PathBuf, Program)> = Vec::new();
    for f in files {
        let ps = load_for(f, form, backend)?;
        let n = ps.len();
        for (i, p) in ps.into_iter().enumerate() {
            let name = if n > 1 {
                PathBuf::from(format!("{} [program {} of {n}]", f.display(), i + 1))
            } else {
                f.clone()
            };
            programs.push((name, p));
        }
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
