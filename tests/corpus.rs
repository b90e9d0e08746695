//! Replays every file under `corpus/` through the entry point the fuzz
//! target uses (`.pytie` files are text, everything else binary), and
//! checks the corpus's own rules.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use pytie::cli::program_files;
use pytie::harness;
use pytie_core::program::{Program, binary, text};

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// Every program file under `dir` (the CLI's own walk: sorted, dotfiles
/// and `.md`/`.txt` files skipped).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    program_files(&[dir.to_path_buf()]).unwrap_or_default()
}

/// A corpus file as the CLI loads it: `.pytie` is text, anything else binary.
fn load(p: &Path) -> Program {
    let text = p.extension().is_some_and(|e| e == "pytie");
    pytie::cli::load(p, text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_corpus_file_passes() {
    let files = files_under(&corpus_root());
    assert!(
        files.len() >= 60,
        "the corpus is missing: {} files",
        files.len()
    );
    let mut failures = Vec::new();
    for f in &files {
        if let Err(e) = harness::check_lifecycle(&load(f)) {
            failures.push(format!("{}\n{e}", f.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} corpus files fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_corpus_replays_identically_twice() {
    // A fingerprint of every state both sides showed, step by step.
    let fingerprint = |p: &Program| {
        let mut h = DefaultHasher::new();
        harness::with_lifecycle(|ex| {
            ex.run_traced(p, &mut |step, expected, actual| {
                (step, expected, actual).hash(&mut h)
            })
            .map(|o| o.steps)
            .map_err(|e| e.to_string())
        })
        .hash(&mut h);
        h.finish()
    };
    let programs: Vec<(PathBuf, Program)> = files_under(&corpus_root())
        .into_iter()
        .map(|f| {
            let p = load(&f);
            (f, p)
        })
        .collect();
    let first: Vec<u64> = programs.iter().map(|(_, p)| fingerprint(p)).collect();
    let second: Vec<u64> = programs.iter().map(|(_, p)| fingerprint(p)).collect();
    for ((f, _), (a, b)) in programs.iter().zip(first.iter().zip(&second)) {
        assert_eq!(a, b, "{} replays differently", f.display());
    }
}

#[test]
fn scenarios_are_many_and_every_seed_comes_from_one() {
    let root = corpus_root();
    let scenarios = files_under(&root.join("scenarios"));
    assert!(scenarios.len() >= 30, "{} scenarios", scenarios.len());
    for s in &scenarios {
        let seed = root
            .join("lifecycle")
            .join(s.with_extension("bin").file_name().unwrap());
        assert!(
            seed.exists(),
            "no seed for {}: run scripts/seed-corpus",
            s.display()
        );
        assert_eq!(
            binary::decode(&std::fs::read(&seed).unwrap()),
            binary::decode(&binary::encode(&load(s))),
            "{} is stale: run scripts/seed-corpus",
            seed.display()
        );
    }
}

#[test]
fn regressions_are_text_and_say_what_they_caught() {
    let files = files_under(&corpus_root().join("regressions"));
    assert!(!files.is_empty());
    for f in files {
        assert!(
            f.extension().is_some_and(|e| e == "pytie"),
            "{}: regressions are kept in text form",
            f.display()
        );
        let src = std::fs::read_to_string(&f).unwrap();
        assert!(
            src.lines().next().is_some_and(|l| l.starts_with("# ")),
            "{}: start with a comment saying what it caught",
            f.display()
        );
    }
}

#[test]
fn a_test_thread_ending_does_not_disturb_another_threads_program() {
    // Every test thread has its own executor (thread-local), dropped when
    // the thread ends; the runtime's records are process-wide. A thread
    // whose last program left a var holding None used to "abandon" its
    // world on exit, resetting those records under a program running on
    // another thread (a flaky corpus replay).
    use std::sync::mpsc::channel;
    let (ran, ran_rx) = channel();
    let (exit, exit_rx) = channel::<()>();
    let other = std::thread::spawn(move || {
        // `get v1 v0` of an object without a field: v1 holds None.
        let p = text::parse("new v0\nget v1 v0\n").unwrap();
        harness::check_lifecycle(&p).unwrap();
        ran.send(()).unwrap();
        exit_rx.recv().unwrap();
    });
    ran_rx.recv().unwrap();
    let p = text::parse("new v0\nhold h0 v0\ndrop v0\nret v1 h0\nrelease h0\n").unwrap();
    harness::with_lifecycle(|ex| {
        ex.begin().unwrap_or_else(|f| panic!("{f}"));
        for op in &p.ops[..2] {
            ex.step(op).unwrap_or_else(|f| panic!("{f}"));
        }
        // The other thread ends mid-program (its executor is dropped; it
        // needs the GIL for that, so let go of it while waiting).
        exit.send(()).unwrap();
        pyo3::Python::attach(|py| py.detach(|| other.join().unwrap()));
        for op in &p.ops[2..] {
            ex.step(op).unwrap_or_else(|f| panic!("{f}"));
        }
        ex.finish().unwrap_or_else(|f| panic!("{f}"));
    });
}
