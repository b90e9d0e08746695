//! The bug zoo (`cargo test --features mutants`): for every injected fault,
//! `corpus/mutants/<name>.pytie` passes on the correct runtime and fails
//! with the fault, caught by the oracle docs/mutants.md names. Mutants
//! that hang are run in a child process (the `pytie` binary, built with
//! the same features), so this process never waits on them; every find
//! also replays from its program alone in a fresh process.
#![cfg(feature = "mutants")]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pytie::harness;
use pytie::mutants::{self, Mutant};
use pytie_core::exec::FailureKind;
use pytie_core::program::{Program, text};

mod support;
use support::in_process;

fn program(m: Mutant) -> Program {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("corpus/mutants/{}.pytie", m.name()));
    let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text::parse(&src).unwrap_or_else(|e| panic!("{}:{e}", path.display()))
}

fn oracle(kind: &FailureKind) -> &'static str {
    match kind {
        FailureKind::Divergence => "divergence",
        FailureKind::Invariant => "invariant",
        FailureKind::RuntimeAssertion => "assertion",
        FailureKind::Identity => "identity",
        FailureKind::Expectation => "expectation",
        FailureKind::Teardown => "leak",
        FailureKind::Upstream => "upstream",
        FailureKind::Hang => "hang",
        FailureKind::WorldDrift => "world drift",
        FailureKind::Crash => "crash",
    }
}

/// The oracle column of docs/mutants.md for `m`.
fn documented_oracle(m: Mutant) -> String {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/mutants.md"))
            .unwrap();
    let row = doc
        .lines()
        .find(|l| l.starts_with(&format!("| `{}` |", m.name())))
        .unwrap_or_else(|| panic!("docs/mutants.md has no row for {}", m.name()));
    row.split('|').nth(3).unwrap().trim().to_string()
}

#[test]
fn every_mutant_is_caught_and_its_program_passes_without_it() {
    let _turn = in_process();
    let mut report = Vec::new();
    for &m in Mutant::ALL.iter().filter(|m| !hangs(**m)) {
        let p = program(m);
        mutants::set(None);
        if let Err(f) = harness::check_lifecycle(&p) {
            panic!("{} fails without the mutant:\n{f}", m.name());
        }
        mutants::set(Some(m));
        let r = harness::check_lifecycle(&p);
        mutants::set(None);
        let f = r
            .err()
            .unwrap_or_else(|| panic!("mutant {} is not caught by its program", m.name()));
        let got = oracle(&f.kind);
        let doc = documented_oracle(m);
        report.push(format!(
            "{:28} {got:11} {}",
            m.name(),
            f.notes
                .first()
                .map_or("", |n| n.lines().next().unwrap_or(""))
        ));
        assert!(
            doc.starts_with(got),
            "{}: caught by {got}, docs/mutants.md says {doc}\n{f}",
            m.name()
        );
    }
    // The correct runtime still works after all those abandoned worlds.
    assert!(harness::check_lifecycle(&program(Mutant::ALL[0])).is_ok());
    println!("{}", report.join("\n"));
}

#[test]
fn the_mutant_corpus_holds_one_program_per_mutant() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/mutants");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".pytie")
                .to_string()
        })
        .collect();
    names.sort();
    let mut want: Vec<String> = Mutant::ALL.iter().map(|m| m.name().to_string()).collect();
    want.sort();
    assert_eq!(names, want);
    assert!(Mutant::ALL.len() >= 14);
}

/// Documented as caught by the watchdog: run only in a child process.
fn hangs(m: Mutant) -> bool {
    documented_oracle(m).starts_with("hang")
}

/// Run `pytie run FILE` for `m`'s program in a fresh process (`mutant`
/// chosen or not), with `args` before the file; kill it after `limit`.
fn run_child(m: Mutant, mutant: bool, args: &[&str], limit: Duration) -> (Output, Duration) {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("corpus/mutants/{}.pytie", m.name()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytie"));
    cmd.arg("run").args(args).arg(&file);
    cmd.env_remove("PYTIE_STEP_TIMEOUT");
    if mutant {
        cmd.env("PYTIE_MUTANT", m.name());
    } else {
        cmd.env_remove("PYTIE_MUTANT");
    }
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pytie");
    while child.try_wait().expect("wait for pytie").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("pytie run {} did not end within {limit:?}", file.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = start.elapsed();
    (child.wait_with_output().expect("pytie's output"), took)
}

#[test]
fn a_hanging_mutant_is_reported_with_its_program_within_5_s_of_the_stuck_step() {
    let hanging: Vec<Mutant> = Mutant::ALL.iter().copied().filter(|m| hangs(*m)).collect();
    assert!(!hanging.is_empty(), "docs/mutants.md names no hang");
    for m in hanging {
        let (out, _) = run_child(m, false, &[], Duration::from_secs(30));
        assert!(
            out.status.success(),
            "{} fails without the mutant: {out:?}",
            m.name()
        );
        for (args, bound) in [(&[][..], 2.0), (&["--step-timeout", "0.5"][..], 0.5)] {
            let (out, took) = run_child(m, true, args, Duration::from_secs(30));
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(3), "{}: {err}", m.name());
            // Start-up (< 1 s) + the bound + the watchdog's tick.
            assert!(
                took < Duration::from_secs_f64(bound + 5.0),
                "{}: reported after {took:?}",
                m.name()
            );
            assert!(
                took >= Duration::from_secs_f64(bound),
                "{}: {took:?}",
                m.name()
            );
            for want in [
                "pytie: hang at step 4\n",
                "FAIL: hang: a step did not finish at step 4: `release_foreign h0`",
                "interpreter thread: waiting for the foreign thread to finish a release WHILE HOLDING THE GIL",
                "foreign thread (pytie-foreign): waiting for the GIL",
                "new v0\nhold h0 v0\ndrop v0\nrelease_foreign h0",
            ] {
                assert!(err.contains(want), "{}: no {want:?} in:\n{err}", m.name());
            }
        }
    }
}

#[test]
fn the_step_timeout_env_var_is_the_bound() {
    let m = *Mutant::ALL
        .iter()
        .find(|m| hangs(**m))
        .expect("a hanging mutant");
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("corpus/mutants/{}.pytie", m.name()));
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_pytie"))
        .args(["run"])
        .arg(&file)
        .env("PYTIE_MUTANT", m.name())
        .env("PYTIE_STEP_TIMEOUT", "0.3")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("no progress for 0."), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn every_find_replays_from_its_program_alone_in_a_fresh_process() {
    for &m in Mutant::ALL {
        let (out, _) = run_child(m, true, &[], Duration::from_secs(30));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if hangs(m) {
            assert_eq!(out.status.code(), Some(3), "{}: {text}", m.name());
            continue;
        }
        assert_eq!(out.status.code(), Some(1), "{}: {text}", m.name());
        // The same kind of failure as in this long-lived process.
        let turn = in_process();
        mutants::set(Some(m));
        let r = harness::check_lifecycle(&program(m));
        mutants::set(None);
        drop(turn);
        let f = r.expect_err("caught in-process too");
        assert!(
            text.contains(&format!("FAIL: {}", f.kind.title())),
            "{}: in-process {:?}, fresh process:\n{text}",
            m.name(),
            f.kind
        );
    }
}

/// The fuzz targets judge the invariants only where the two states differ
/// (`Executor::judge_invariants_on_divergence`): every mutant is still
/// caught, by the same oracle with the same first note. (World-drift
/// mutants are left out: that check does not involve the invariants, and
/// its first find leaves the world changed for the second run.)
#[test]
fn every_mutant_is_caught_alike_when_invariants_are_judged_on_divergence() {
    let _turn = in_process();
    let drift = |m: Mutant| documented_oracle(m).starts_with("world drift");
    for &m in Mutant::ALL.iter().filter(|m| !hangs(**m) && !drift(**m)) {
        let p = program(m);
        let run = |on_divergence: bool| {
            mutants::set(Some(m));
            let r = harness::with_lifecycle(|ex| {
                ex.judge_invariants_on_divergence(on_divergence);
                let r = harness::run_watched(ex, &p, "", &mut |_, _, _| {});
                ex.judge_invariants_on_divergence(false);
                r
            });
            mutants::set(None);
            r.err().unwrap_or_else(|| {
                panic!(
                    "mutant {} is not caught (on divergence: {on_divergence})",
                    m.name()
                )
            })
        };
        let (always, fuzzing) = (run(false), run(true));
        assert_eq!(
            (always.kind, always.notes.first()),
            (fuzzing.kind, fuzzing.notes.first()),
            "{}: caught differently",
            m.name()
        );
    }
}

/// The harness's warm-up runs with the mutant off on its own thread only
/// (`mutants::off_here`): a test on another thread keeps its mutant. (The
/// warm-up used to switch the process's choice off and back, and a test
/// whose first program came at that moment ran a mutant-free search.)
#[test]
fn the_warm_up_turns_the_mutant_off_on_its_own_thread_only() {
    let _turn = in_process();
    let m = Mutant::ALL[0];
    mutants::set(Some(m));
    let (here, other) = mutants::off_here(|| {
        let other = std::thread::spawn(mutants::chosen).join().unwrap();
        (mutants::chosen(), other)
    });
    let after = mutants::chosen();
    // A thread's first program makes its executor, warm-up included.
    let fresh = std::thread::spawn(move || {
        let r = harness::check_lifecycle(&program(m));
        (r.is_err(), mutants::chosen())
    })
    .join()
    .unwrap();
    mutants::set(None);
    assert_eq!((here, other, after), (None, Some(m), Some(m)));
    assert_eq!(fresh, (true, Some(m)), "a new thread's warm-up and program");
}

/// Issue 26: damage to a count every program shares, done deep inside a
/// long program, is reported at the step that did it (Python's singletons'
/// counts are read after every step), with the program up to that step;
/// not at the program's end, nor as the crash None's deallocation would be
/// once enough programs drained it.
#[test]
fn a_none_drain_deep_in_a_long_program_is_reported_at_its_step() {
    let _turn = in_process();
    // 10,000 steps of churn in which a var holds None now and then (`get`
    // of an empty field): the per-step check counts the vars' references.
    let mut ops: Vec<&str> = ["new v0", "get v1 v0", "drop v1", "drop v0"]
        .iter()
        .copied()
        .cycle()
        .take(10_000)
        .collect();
    // Step 7,002 (a `get v1 v0` while v0 is live) becomes the one `unset`.
    ops[7001] = "unset v0";
    let p = text::parse(&ops.join("\n")).unwrap();
    mutants::set(None);
    harness::check_lifecycle(&p).expect("passes without the mutant");
    mutants::set(Some(Mutant::UnsetDecrefsNone));
    let r = harness::check_lifecycle(&p);
    mutants::set(None);
    let f = r.expect_err("the mutant drains None");
    assert_eq!(f.kind, FailureKind::WorldDrift, "{f}");
    assert_eq!(f.step, Some(7002), "{f}");
    assert_eq!(f.program.ops.len(), 7002);
    assert!(
        f.notes
            .iter()
            .any(|n| n.contains("reference count of None")),
        "{f}"
    );
    // The world is usable after the abandoned program.
    assert!(harness::check_lifecycle(&program(Mutant::ALL[0])).is_ok());
}

/// `pytie sweep` (contract §4.4) finds the mutants in the runtime's
/// allocation-failure branch in the hand-written scenarios, none of which
/// has an `oom` of its own but one: each report names the failed step and
/// shows the `oom` the sweep put before it.
#[test]
fn the_sweep_finds_the_allocation_failure_mutants_in_the_scenarios() {
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/scenarios");
    for m in [Mutant::AllocFailKeepsRef, Mutant::AllocFailDecrefsTwice] {
        let o = Command::new(env!("CARGO_BIN_EXE_pytie"))
            .env("PYTIE_MUTANT", m.name())
            .args(["sweep", "--show", "1"])
            .arg(&scenarios)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{}: {out}", m.name());
        assert!(
            out.contains("(allocation failure injected)") && out.contains("# <- step "),
            "{}: {out}",
            m.name()
        );
        let failing: usize = out
            .lines()
            .last()
            .and_then(|l| l.split(", ").nth(2))
            .and_then(|w| w.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(failing > 10, "{}: {out}", m.name());
    }
    // Without a mutant the same sweep passes.
    let o = Command::new(env!("CARGO_BIN_EXE_pytie"))
        .args(["sweep"])
        .arg(&scenarios)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}
