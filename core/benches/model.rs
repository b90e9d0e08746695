//! `cargo bench -p pytie-core --bench model`: the reference model alone
//! over the seed corpus (corpus/lifecycle), with no interpreter: programs
//! per second and nanoseconds per step, median of rounds. What the model
//! costs the checker, and what `pytie exhaust` pays per state.
//!
//! `cargo bench -p pytie-core --bench model -- ROUNDS` (default 21);
//! `PYTIE_BENCH_CORPUS=DIR` measures another directory of binary programs.

use std::time::Instant;

use pytie_core::exec::run_model_only;
use pytie_core::model::{Design, Model};
use pytie_core::program::{Program, binary};

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(21);
    // PYTIE_BENCH_CORPUS: another directory of binary programs.
    let dir = std::env::var("PYTIE_BENCH_CORPUS")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../corpus/lifecycle").into());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus/lifecycle")
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let programs: Vec<Program> = files
        .iter()
        .map(|f| binary::decode(&std::fs::read(f).unwrap()))
        .collect();
    let steps: usize = programs.iter().map(|p| p.ops.len()).sum();
    let mut model = Model::new(Design::S);
    let passes = 200;
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..passes {
            for p in &programs {
                run_model_only(&mut model, p);
            }
        }
        rates.push((passes * programs.len()) as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    let median = rates[rates.len() / 2];
    let per_step = 1e9 / (median * steps as f64 / programs.len() as f64);
    println!(
        "seed corpus: {} programs, {steps} steps; {rounds} rounds, median: \
         model alone {median:.0} programs/s, {per_step:.1} ns per step",
        programs.len()
    );
}
