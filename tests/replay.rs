//! A find must reproduce from its artifact alone: every corpus file, run
//! in a fresh process (`pytie run FILE`, one process per file), gives the
//! same result as in this long-lived process, which has run every other
//! file before it. A difference means a program's outcome depends on what
//! ran before it: damage that outlives a program, which the harness's
//! conservation check exists to pin on the program that caused it.

use std::path::{Path, PathBuf};
use std::process::Command;

use pytie::cli::program_files;
use pytie::harness;

fn corpus_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    program_files(&[root]).expect("the corpus")
}

/// The in-process verdict in the CLI's words: `ok (N steps` or `FAIL: title`.
fn verdict_in_process(f: &Path) -> String {
    let text = f.extension().is_some_and(|e| e == "pytie");
    // As `pytie run` reads it (a binary file: as the `lifecycle` target does).
    let p = pytie::cli::load_pytie(f, text).unwrap_or_else(|e| panic!("{e}"));
    match harness::check_lifecycle(&p) {
        Ok(o) => format!("ok ({} steps", o.steps),
        Err(e) => format!("FAIL: {}", e.kind.title()),
    }
}

fn verdict_fresh(f: &Path) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pytie"))
        .arg("run")
        .arg(f)
        .env_remove("PYTIE_MUTANT")
        .output()
        .expect("run pytie");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let verdict = if out.status.success() {
        let line = stdout.lines().next().unwrap_or_default();
        let steps = line.split_once(" (").map_or("", |(_, r)| r);
        let n = steps.split_whitespace().next().unwrap_or_default();
        format!("ok ({n} steps")
    } else {
        stdout
            .lines()
            .find(|l| l.starts_with("FAIL: "))
            .map(|l| l.split(" at ").next().unwrap_or(l).to_string())
            .unwrap_or_else(|| format!("exit {:?}", out.status.code()))
    };
    (verdict, stdout)
}

#[test]
fn every_corpus_file_gives_the_same_result_in_a_fresh_process() {
    let files = corpus_files();
    assert!(files.len() >= 60, "the corpus is missing: {}", files.len());
    // In-process first, all of them, so later files run in a process
    // that has run many programs.
    let here: Vec<String> = files.iter().map(|f| verdict_in_process(f)).collect();
    let mut differ = Vec::new();
    for (f, want) in files.iter().zip(&here) {
        let (got, out) = verdict_fresh(f);
        if got != *want {
            differ.push(format!(
                "{}: here {want:?}, fresh process {got:?}\n{out}",
                f.display()
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "{} corpus files replay differently alone:\n{}",
        differ.len(),
        differ.join("\n")
    );
}
