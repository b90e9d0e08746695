//! The peer: what a Rust user would otherwise reach for, a
//! proptest-state-machine test. The reference model is the
//! `ReferenceStateMachine`; the runtime, checked by the same executor as
//! the fuzzer (same comparison, invariants, identity and teardown checks),
//! is the `StateMachineTest`. Transitions are drawn the idiomatic way:
//! every step kind equally likely, operands uniform over all slots (the
//! language tests' `program_strategy::step`).
//!
//! `cargo test` runs a fixed number of cases. `scripts/detect` runs it on
//! every mutant with `PYTIE_PEER_CASES` (cases), `PYTIE_PEER_SEED` (RNG
//! seed) and no shrinking, and times it to the first failure.

use pytie_core::program::strategy as program_strategy;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest};
use pytie::backend::pytie::PytieBackend;
use pytie_core::exec::Executor;
use pytie_core::model::{Design, Model};
use pytie_core::program::Op;

struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::new(Design::S)).boxed()
    }

    fn transitions(_: &Model) -> BoxedStrategy<Op> {
        program_strategy::step().boxed()
    }

    fn apply(mut state: Model, op: &Op) -> Model {
        state.apply(op);
        state
    }
}

/// When the test started, and how many programs (cases) it has begun.
static STARTED: OnceLock<Instant> = OnceLock::new();
static PROGRAMS: AtomicU64 = AtomicU64::new(0);
/// When the first program began (time to detect is judged from here).
static FIRST_PROGRAM: OnceLock<Instant> = OnceLock::new();

/// The system under test: the runtime behind the lockstep executor.
struct Peer;

/// Report a failure, starting with when it was found (as the fuzz target
/// does; `scripts/detect` reads it).
fn found(f: impl std::fmt::Display) -> ! {
    let n = PROGRAMS.load(Ordering::Relaxed);
    let secs = STARTED.get().map_or(0.0, |t| t.elapsed().as_secs_f64());
    let first = FIRST_PROGRAM
        .get()
        .map_or(0.0, |t| t.elapsed().as_secs_f64());
    panic!(
        "pytie: found after {n} programs, {secs:.3} s after start-up, {first:.3} s from the first \
         program\n{f}"
    );
}

impl StateMachineTest for Peer {
    type SystemUnderTest = Executor<PytieBackend>;
    type Reference = Reference;

    fn init_test(_: &Model) -> Executor<PytieBackend> {
        PROGRAMS.fetch_add(1, Ordering::Relaxed);
        FIRST_PROGRAM.get_or_init(Instant::now);
        let mut ex = Executor::new(Design::S, PytieBackend::new());
        ex.begin().unwrap_or_else(|f| found(f));
        ex
    }

    fn apply(mut ex: Executor<PytieBackend>, _: &Model, op: Op) -> Executor<PytieBackend> {
        if let Err(f) = ex.step(&op) {
            found(f);
        }
        ex
    }

    fn teardown(mut ex: Executor<PytieBackend>, _: Model) {
        if let Err(f) = ex.finish() {
            found(f);
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

#[test]
fn peer_state_machine() {
    STARTED.get_or_init(Instant::now);
    let _session = pytie::interp::exclusive();
    let detecting = env_u64("PYTIE_PEER_CASES").is_some();
    let config = Config {
        cases: env_u64("PYTIE_PEER_CASES").map_or(64, |c| c as u32),
        rng_seed: RngSeed::Fixed(env_u64("PYTIE_PEER_SEED").unwrap_or(0x9E37_79B9)),
        // Timing a detection stops at the first failure.
        max_shrink_iters: if detecting { 0 } else { 1024 },
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config.clone());
    let strategy = Reference::sequential_strategy(1..64);
    let result = runner.run(&strategy, |(initial, transitions, seen)| {
        // The counter only serves shrinking; with shrinking off,
        // proptest-state-machine 0.9 panics on it when reporting.
        let seen = if detecting { None } else { seen };
        Peer::test_sequential(config.clone(), initial, transitions, seen);
        Ok(())
    });
    if let Err(e) = result {
        panic!("the peer found a failure: {e}");
    }
}
