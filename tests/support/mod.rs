//! Helpers the integration tests share: the checkout, the corpus walk, the
//! tvm-ffi replay, the "skipped" line, and the lock for tests that switch
//! process-wide state. Each test binary uses some of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use pytie::backend::tvmffi::{self, KnownFindings};
use pytie::harness;
use pytie_core::exec::Outcome;
use pytie_core::program::{Program, binary, text};

/// The directories every backend replays: the scenarios, the regressions,
/// the recorded upstream findings, upstream's tests as programs and the
/// binary seeds.
pub const SHARED_CORPUS: [&str; 5] = [
    "corpus/scenarios",
    "corpus/regressions",
    "corpus/upstream",
    "corpus/upstream-tests",
    "corpus/lifecycle",
];

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The files of one corpus directory, sorted (its README.md left out).
pub fn files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    v.sort();
    v
}

/// Every file of [`SHARED_CORPUS`].
pub fn shared_corpus() -> Vec<PathBuf> {
    SHARED_CORPUS.iter().flat_map(|d| files(d)).collect()
}

/// A corpus file as the `tvmffi` target reads it: `.pytie` is text, a
/// binary input decodes within tvm-ffi's step kinds.
pub fn load_tvmffi(p: &Path) -> Program {
    let data = std::fs::read(p).unwrap();
    if p.extension().is_some_and(|e| e == "pytie") {
        text::parse(&String::from_utf8(data).unwrap())
            .unwrap_or_else(|e| panic!("{}:{e}", p.display()))
    } else {
        binary::decode_for(&data, tvmffi::steps())
    }
}

/// A program on the loaded tvm-ffi build; a failure as its report.
pub fn check_tvmffi(p: &Program, known: KnownFindings) -> Result<Outcome, String> {
    harness::check_tvmffi(p, known)
        .expect("tvm-ffi loads")
        .map_err(|f| f.to_string())
}

/// Say, in the test output even when the test passes, that `test` of the
/// test binary `binary` checked nothing because something optional is
/// absent, the variable that makes it run, and how many of this binary's
/// tests have been skipped so far (the last such line is the count).
pub fn skipped(binary: &str, test: &str, var: &str) {
    use std::io::Write;
    static SKIPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SKIPPED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    // Straight to the process's stderr: the harness captures `eprintln!`
    // of a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "{binary}: SKIPPED {test}: what it needs is absent; {var}=1 provides it \
         ({n} skipped in this binary so far)"
    );
}

/// Serializes the tests of one binary that switch process-wide state (the
/// chosen mutant, the interpreter's world): one at a time, and a panic in
/// one does not poison the others.
pub fn in_process() -> MutexGuard<'static, ()> {
    static IN_PROCESS: Mutex<()> = Mutex::new(());
    IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner())
}
