//! `pytie sweep`: SQLite's out-of-memory test on the corpus (contract
//! §4.4). For each program, each of its steps S and each K from 1, the
//! program runs with `oom K` before S (S's K-th Python allocation fails)
//! and is judged as every program is: the model's state for a failed step,
//! the invariants, teardown's empty world, the world outside the program.
//! K stops at the first K whose allocation S does not make. The programs
//! run without their `mark` and `expect` lines (those say what a program
//! expects of steps that succeed). A program that fails without an
//! injected failure is not swept (it is reported as such). On tvm-ffi
//! the recorded upstream findings are worked around, as the fuzz target
//! does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use pytie_core::exec::{Failure, Outcome};
use pytie_core::program::{AllocNo, Op, Program, StepKind};

use super::input::load_for;
use super::{BackendName, Bad, Form};
use crate::backend::pytie::PytieBackend;
use crate::backend::tvmffi::TvmFfiBackend;
use crate::harness::{self, Target, with_executor};

/// What sweeping one program found.
#[derive(Default)]
struct Swept {
    /// (step, K) points run.
    points: usize,
    /// Points where the step failed with MemoryError.
    failed_steps: usize,
    /// Points where the program failed: the first few reports.
    failures: Vec<Failure>,
    failing_points: usize,
}

/// How a sweep checks one program.
type Check = fn(&Program, &str) -> Result<Outcome, Box<Failure>>;

/// Run `p` on `B` as a campaign does (on tvm-ffi: the recorded upstream
/// findings worked around).
fn check<B: Target>(p: &Program, label: &str) -> Result<Outcome, Box<Failure>> {
    with_executor::<B, _>(|ex| {
        B::for_campaign(&mut ex.backend);
        harness::run_watched(ex, p, label, &mut |_, _, _| {})
    })
    .unwrap_or_else(|e| panic!("{} was loaded before the sweep: {e}", B::NAME))
}

/// Sweep `paths` on `backend`; at most `max_k` allocations a step and,
/// if given, `max_points` points a program.
pub(super) fn sweep(
    paths: &[PathBuf],
    form: Form,
    backend: BackendName,
    max_k: u32,
    max_points: Option<usize>,
    show: usize,
) -> Result<ExitCode, Bad> {
    let files = super::program_files(paths).map_err(Bad)?;
    if files.is_empty() {
        return Err(Bad("no program files under the paths given".into()));
    }
    backend.prepare()?;
    let check: Check = match backend {
        BackendName::Pytie => check::<PytieBackend>,
        BackendName::TvmFfi | BackendName::TvmFfiTied => check::<TvmFfiBackend>,
    };
    let t = Instant::now();
    let (mut points, mut failed_steps, mut failing, mut programs) = (0, 0, 0, 0);
    let mut unswept = Vec::new();
    let mut shown = 0;
    for f in &files {
        for p in load_for(f, form, backend)? {
            let p = Program::new(p.ops.into_iter().filter(|o| !o.is_assertion()).collect());
            if check(&p, "").is_err() {
                unswept.push(f.clone());
                continue;
            }
            programs += 1;
            let s = sweep_program(check, f, &p, max_k, max_points, show.saturating_sub(shown));
            points += s.points;
            failed_steps += s.failed_steps;
            failing += s.failing_points;
            for r in &s.failures {
                shown += 1;
                out!("FAIL {} (allocation failure injected)\n{r}", f.display());
            }
        }
    }
    for f in &unswept {
        out!(
            "not swept: {} fails without an injected failure (`pytie run` it)",
            f.display()
        );
    }
    out!(
        "swept {programs} programs: {points} points (a step, an allocation), {failed_steps} \
         where the step failed with MemoryError, {failing} failing; {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(if failing > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The points of one program, each checked by `check`.
fn sweep_program(
    check: Check,
    file: &Path,
    p: &Program,
    max_k: u32,
    max_points: Option<usize>,
    show: usize,
) -> Swept {
    let label = file.display().to_string();
    let mut s = Swept::default();
    let steps = p
        .ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.kind().is_some_and(|k| k != StepKind::Oom))
        .map(|(i, _)| i);
    'steps: for i in steps {
        for k in 1..=max_k.min(u32::from(AllocNo::MAX)) {
            if max_points.is_some_and(|m| s.points >= m) {
                break 'steps;
            }
            let oom = Op::Oom {
                k: AllocNo::of(k).expect("in range"),
            };
            let mut ops = p.ops.clone();
            ops.insert(i, oom);
            let q = Program::new(ops);
            s.points += 1;
            // The armed step is the one after the inserted `oom`.
            let armed = i + 2;
            match check(&q, &label) {
                Ok(o) => match o.injected.iter().find(|j| j.step == armed) {
                    Some(j) if j.reached => s.failed_steps += usize::from(j.failed),
                    // The step makes fewer than K allocations (or did not
                    // run at all): the next step.
                    _ => continue 'steps,
                },
                Err(f) => {
                    s.failing_points += 1;
                    if s.failures.len() < show {
                        s.failures.push(*f);
                    }
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn points_stop_where_a_step_makes_no_more_allocations() {
        // `new v0` on pytie's runtime allocates its wrapper (1) and no more
        // than a few objects: the sweep of a one-step program ends.
        let p = pytie_core::program::text::parse("new v0\n").unwrap();
        let s = super::sweep_program(
            super::check::<super::PytieBackend>,
            std::path::Path::new("t"),
            &p,
            255,
            None,
            0,
        );
        assert!(s.points >= 2 && s.points < 255, "{} points", s.points);
        assert!(s.failed_steps >= 1);
        assert_eq!(s.failing_points, 0);
    }
}
