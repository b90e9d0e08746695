//! `pytie exhaust` (issue 12): the bounded search checked on pytie's
//! runtime at a small bound, the command's exit codes, and (with the
//! feature `mutants`) every bug-zoo mutant within the default bound found
//! with a program no longer than the fuzzer's minimized one.

use std::process::Command;

use pytie::backend::pytie::PytieBackend;
use pytie::exhaust::{self, Ended};
use pytie::harness::Target;
use pytie_core::backend::Backend;
use pytie_core::exhaust::Bounds;
use pytie_core::model::{Design, Model};
use pytie_core::program::{StepSet, text};

mod support;
use support::in_process;

fn small() -> Bounds {
    Bounds {
        vars: 2,
        holders: 1,
        weaks: 1,
        handles: 2,
        depth: 4,
        kinds: &pytie_core::program::ObjKind::CLASSIC,
        extra_kind_objects: 1,
        max_states: 100_000,
    }
}

#[test]
fn a_small_bound_passes_on_pytie_and_counts_what_the_model_reaches() {
    let _turn = in_process();
    let b = small();
    let r = exhaust::run::<PytieBackend>(&b, Design::S, &mut |p| {
        assert!(exhaust::progress_line(p).contains("states"));
    })
    .unwrap();
    let s = match r {
        Ended::Passed(s) => s,
        Ended::Failed(f, _) => panic!("a failure at a small bound:\n{f}"),
        Ended::TooManyStates(_) => panic!("too many states"),
    };
    // The same search on the model alone, over the step kinds pytie's
    // campaigns generate (all but `pyweak`, which it does not express, and
    // `finalize`, which forks), finds the same states.
    let kinds = pytie_core::exhaust::searched(
        PytieBackend::new()
            .caps()
            .steps
            .and(<PytieBackend as Target>::steps()),
    );
    assert!(!kinds.contains(pytie_core::program::StepKind::Finalize));
    let alone = pytie_core::exhaust::explore(
        &Model::new(Design::S),
        &b,
        kinds,
        &mut |_| Ok(()),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(s.states, alone.states);
    assert_eq!(s.transitions, alone.transitions);
    assert_eq!(s.levels, alone.levels);
    assert_eq!(s.depth_reached, 4);
    assert!(s.states > 100, "{s:?}");
}

fn pytie(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pytie"))
        .args(args)
        .output()
        .expect("run pytie")
}

#[test]
fn the_command_passes_fails_and_refuses_with_its_exit_codes() {
    let o = pytie(&["exhaust", "--depth", "2", "--quiet"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("states (by depth: 1 6 63)"), "{out}");
    assert!(out.contains("pass"), "{out}");

    // Bad usage: exit 2, a message, no panic.
    for args in [
        &["exhaust", "--vars", "0"][..],
        &["exhaust", "--vars", "9"],
        &["exhaust", "--holders", "x"],
        &["exhaust", "--backend", "nope"],
        &["exhaust", "--max-states", "0"],
    ] {
        let o = pytie(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!err.is_empty());
    }

    // Too many states: exit 2 and says so.
    let o = pytie(&["exhaust", "--depth", "4", "--max-states", "100", "--quiet"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("more than 100 states"), "{err}");

    // The model in design U against the runtime's S: they differ, and the
    // shortest difference is a weak ref outliving the last drop.
    let dir = std::env::temp_dir().join(format!("pytie-exhaust-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let save = dir.join("u.pytie");
    let o = pytie(&[
        "exhaust",
        "--design",
        "U",
        "--depth",
        "4",
        "--quiet",
        "--save",
        save.to_str().unwrap(),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("FAIL: a shortest failing program (3 steps)"),
        "{out}"
    );
    let src = std::fs::read_to_string(&save).unwrap();
    assert!(src.starts_with("# Regression: "), "{src}");
    let p = text::parse(&src).unwrap();
    assert_eq!(p.ops.len(), 3);
    // The saved program passes on design S, as the runtime is.
    let turn = in_process();
    assert!(pytie::harness::check_lifecycle(&p).is_ok());
    drop(turn);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A mutant docs/mutants.md says is caught as a hang.
#[cfg(feature = "mutants")]
fn hangs(m: pytie::mutants::Mutant) -> bool {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/mutants.md")).unwrap();
    doc.lines()
        .find(|l| l.starts_with(&format!("| `{}` |", m.name())))
        .is_some_and(|l| {
            l.trim_end_matches('|')
                .rsplit('|')
                .next()
                .unwrap_or("")
                .trim()
                .starts_with("hang")
        })
}

/// The bug zoo: every mutant whose minimized program fits the default
/// bound is found, with a program no longer than that one.
#[cfg(feature = "mutants")]
#[test]
fn every_mutant_within_the_default_bound_is_found_no_longer_than_the_fuzzers() {
    use pytie::mutants::{self, Mutant};
    use pytie_core::program::{Op, Sort, StepKind};
    use std::path::Path;

    let _turn = in_process();
    let b = Bounds::default();
    let within = |p: &pytie_core::program::Program| {
        let news = p.ops.iter().filter(|o| o.kind() == Some(StepKind::New));
        p.ops.len() <= b.depth
            && news.count() <= b.handles as usize
            && p.ops.iter().all(|op: &Op| {
                let (k, bytes) = op.operand_bytes().unwrap();
                k.operands().iter().zip(bytes).all(|(s, x)| match s {
                    Sort::Var => x < b.vars,
                    Sort::Holder => x < b.holders,
                    Sort::Weak => x < b.weaks,
                    Sort::Kind => true,
                    // `oom`: not searched (contract R18).
                    Sort::Count => false,
                })
            })
    };
    let mut report = Vec::new();
    let mut found = 0;
    for &m in Mutant::ALL {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("corpus/mutants/{}.pytie", m.name()));
        let fuzzer = text::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let fuzzer = pytie_core::program::Program::new(
            fuzzer
                .ops
                .into_iter()
                .filter(|o| !o.is_assertion())
                .collect(),
        );
        // numbering-sticks needs a program of more than 8 objects: beyond
        // the default bound's 3 handles (what exhaust proves stops at its
        // bound). Every other mutant fits.
        // The allocation-failure mutants' programs need an `oom`, which
        // exhaust does not search (`pytie sweep` and the fuzzer find them
        // so); exhaust finds them through the branch they share with a
        // refused `fragile` return (R20), in a longer program.
        let needs_oom = fuzzer.ops.iter().any(|o| o.kind() == Some(StepKind::Oom));
        let beyond = m == Mutant::NumberingSticks;
        assert_eq!(!within(&fuzzer), beyond || needs_oom, "{}", m.name());
        if beyond {
            report.push(format!("{:28} outside the default bound", m.name()));
            continue;
        }
        if hangs(m) {
            // A deadlock stops the process (the watchdog aborts): run the
            // command in a child, which must report the hang, exit 3.
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_pytie"))
                .args(["exhaust", "--quiet"])
                .env("PYTIE_MUTANT", m.name())
                .env("PYTIE_STEP_TIMEOUT", "1")
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(3), "{}: {err}", m.name());
            assert!(err.contains("FAIL: hang"), "{}: {err}", m.name());
            found += 1;
            report.push(format!("{:28} found: a hang (child process)", m.name()));
            continue;
        }
        mutants::set(Some(m));
        let r = exhaust::run::<PytieBackend>(&b, Design::S, &mut |_| {});
        mutants::set(None);
        match r.unwrap() {
            Ended::Failed(f, s) => {
                assert!(
                    needs_oom || f.program.ops.len() <= fuzzer.ops.len(),
                    "{}: exhaust's program has {} steps, the fuzzer's {}:\n{f}",
                    m.name(),
                    f.program.ops.len(),
                    fuzzer.ops.len()
                );
                found += 1;
                report.push(format!(
                    "{:28} found: {} steps (fuzzer {}), {} programs",
                    m.name(),
                    f.program.ops.len(),
                    fuzzer.ops.len(),
                    s.transitions
                ));
            }
            Ended::Passed(_) | Ended::TooManyStates(_) => {
                panic!("mutant {} is not found by exhaust", m.name())
            }
        }
    }
    println!("{}", report.join("\n"));
    // Every mutant of the zoo but numbering-sticks is found within the
    // default bound.
    assert_eq!(found, Mutant::ALL.len() - 1, "{}", report.join("\n"));
}

/// On apache-tvm-ffi, within its step kinds (all of them: `shutdown` runs
/// in a forked child), the recorded findings worked around.
#[test]
fn a_tiny_bound_passes_on_tvm_ffi_within_its_step_kinds() {
    let setup = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/setup-tvmffi"))
        .output()
        .expect("run scripts/setup-tvmffi");
    assert!(
        setup.status.success(),
        "scripts/setup-tvmffi failed:\n{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    // Every kind of the language: tvm-ffi makes each through its own path
    // (an empty list means the backend's, `Caps::kinds`).
    let b = Bounds {
        depth: 2,
        kinds: &[],
        ..Bounds::default()
    };
    let r =
        exhaust::run::<pytie::backend::tvmffi::TvmFfiBackend>(&b, Design::S, &mut |_| {}).unwrap();
    let s = match r {
        Ended::Passed(s) => s,
        Ended::Failed(f, _) => panic!("{f}"),
        Ended::TooManyStates(_) => panic!("too many states"),
    };
    let kinds = pytie_core::exhaust::searched(pytie_core::tvmffi::steps());
    // The backend's object kinds: all twelve.
    let b = Bounds {
        kinds: &pytie_core::program::ObjKind::ALL,
        ..b
    };
    assert_eq!(s.steps, pytie_core::exhaust::steps(&b, kinds).len());
    // Every step kind the search takes, `shutdown` and `finalize` included
    // (each runs in a forked child).
    assert_eq!(
        s.steps,
        pytie_core::exhaust::steps(&b, pytie_core::exhaust::searched(StepSet::ALL)).len()
    );
    // Tying off (the published wheel): `new` of any kind but `fragile` is
    // one state, `new V fragile` another (its returns are refused, R20),
    // `shutdown` the third, `finalize` the fourth.
    assert_eq!(s.levels[1], 4, "{s:?}");
}
