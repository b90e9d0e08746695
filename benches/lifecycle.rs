//! `cargo bench`: executions per second over the seed corpus
//! (corpus/lifecycle) of the lifecycle entry (model + runtime + every
//! check), of the runtime alone and of the model alone. The three are
//! measured interleaved, round after round, in one process, and reported
//! as medians, so their ratios hold on a noisy machine. The lifecycle
//! entry runs each program as every entry does (`harness::run_watched`:
//! the step watchdog armed per step, the world's conservation checked per
//! program); a fourth line runs the executor without either, so the ratio
//! of the two is their cost. Another line runs the lifecycle entry as the
//! fuzz targets do, judging the invariants only where the states differ
//! (`Executor::judge_invariants_on_divergence`).
//!
//! A line runs the runtime alone reading its whole state after every step
//! (nothing compared): the floor under any check that reads the state
//! after every step, whatever it does with it.
//!
//! `cargo bench -- ROUNDS` (default 21); `PYTIE_BENCH_CORPUS=DIR` measures
//! another directory of binary programs.

use std::time::Instant;

use pytie::backend::pytie::PytieBackend;
use pytie::harness::{self, Target};
use pytie_core::backend::Backend;
use pytie_core::exec::{run_backend_only, run_model_only, teardown_ops};
use pytie_core::program::{Program, binary};
use pytie_core::state::AbstractState;

fn corpus() -> Vec<Program> {
    // PYTIE_BENCH_CORPUS: another directory of binary programs.
    let dir = std::env::var("PYTIE_BENCH_CORPUS")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/lifecycle").into());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus/lifecycle")
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    // Read as the lifecycle target reads its inputs: its kinds only
    // (`finalize`, which forks, is not among them).
    files
        .iter()
        .map(|f| binary::decode_for(&std::fs::read(f).unwrap(), PytieBackend::steps()))
        .collect()
}

/// The runtime alone, its whole state read (as the executor reads it)
/// after every step and teardown action, nothing compared: the floor under
/// any check that reads the whole state after every step.
fn run_backend_observed<B: Backend>(b: &mut B, prog: &Program, state: &mut AbstractState) {
    b.begin().expect("begin");
    let steps = b.caps().steps;
    let supported = |op: &&pytie_core::program::Op| op.kind().is_some_and(|k| steps.contains(k));
    for op in prog.ops.iter().filter(supported) {
        b.apply(op);
        b.observe(state);
    }
    b.clear_all_fields();
    for op in teardown_ops() {
        b.apply(&op);
        b.observe(state);
    }
    b.reclaim_leaked();
    assert!(b.leftovers().is_none(), "the runtime ends empty");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Programs a second over `passes` passes of `run` over `programs`.
fn rate(programs: &[Program], passes: usize, mut run: impl FnMut(&Program)) -> f64 {
    let t = Instant::now();
    for _ in 0..passes {
        for p in programs {
            run(p);
        }
    }
    (passes * programs.len()) as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(21);
    let programs = corpus();
    let steps: usize = programs
        .iter()
        .map(|p| p.ops.iter().filter(|o| !o.is_assertion()).count())
        .sum();
    // Enough passes over the corpus that one sample takes a few ms.
    let passes = 20;
    let (mut full, mut runtime, mut model) = (Vec::new(), Vec::new(), Vec::new());
    let mut bare = Vec::new();
    let mut fuzzing = Vec::new();
    let mut observed = Vec::new();
    let mut state = AbstractState::default();
    harness::with_lifecycle(|ex| {
        for _ in 0..rounds {
            full.push(rate(&programs, passes, |p| {
                harness::run_watched(ex, p, "", &mut |_, _, _| {}).expect("the seed corpus passes");
            }));
            ex.judge_invariants_on_divergence(true);
            fuzzing.push(rate(&programs, passes, |p| {
                harness::run_watched(ex, p, "", &mut |_, _, _| {}).expect("the seed corpus passes");
            }));
            ex.judge_invariants_on_divergence(false);
            bare.push(rate(&programs, passes, |p| {
                ex.run(p).expect("the seed corpus passes");
            }));
            runtime.push(rate(&programs, passes, |p| {
                run_backend_only(&mut ex.backend, p).expect("the runtime ends empty");
            }));
            observed.push(rate(&programs, passes, |p| {
                run_backend_observed(&mut ex.backend, p, &mut state)
            }));
            model.push(rate(&programs, passes, |p| {
                run_model_only(&mut ex.model, p)
            }));
        }
    });
    let (f, r, m) = (median(full), median(runtime), median(model));
    let b = median(bare);
    let fz = median(fuzzing);
    let o = median(observed);
    println!(
        "seed corpus: {} programs, {steps} steps ({:.1} steps/program); {rounds} rounds, medians",
        programs.len(),
        steps as f64 / programs.len() as f64
    );
    println!("  lifecycle (model + runtime + checks)  {f:>9.0} exec/s");
    println!("  as the fuzz targets check (invariants on divergence) {fz:>9.0} exec/s");
    println!("  executor alone (no watchdog, no world check) {b:>9.0} exec/s");
    println!(
        "  the watchdog and the world check cost {:.1}% of the lifecycle entry's exec/s",
        100.0 * (1.0 - f / b)
    );
    println!("  runtime alone                         {r:>9.0} exec/s");
    println!(
        "  runtime, its state read after every step {o:>9.0} exec/s ({:.1}x the runtime alone)",
        r / o
    );
    println!("  model alone                           {m:>9.0} exec/s");
    println!(
        "  lifecycle costs {:.1}x the runtime alone ({:.1}x as the fuzz targets check); the model is {:.1}% of the runtime's cost",
        r / f,
        r / fz,
        100.0 * r / m
    );
}
