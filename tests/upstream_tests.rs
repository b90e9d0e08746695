//! docs/upstream-tests.md lists every test of upstream's
//! `tests/python/test_pyobject_tying.py` with the pytie program that
//! translates it, or the capability the language lacks. This checks the
//! table against `corpus/upstream-tests/` (each program names its test on
//! its first line; each file is listed; the count in the text is the
//! table's) and, when the pinned sdist is in the cache, against the
//! sdist's own test names. That the programs pass is the corpus replay's
//! job (tests/corpus.rs here, tests/tvmffi*.rs on tvm-ffi).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

mod support;
use support::root;

const UPSTREAM_FILE: &str = "tests/python/test_pyobject_tying.py";

struct Row {
    test: String,
    program: bool,
    files: Vec<String>,
}

fn table() -> (String, Vec<Row>) {
    let doc = std::fs::read_to_string(root().join("docs/upstream-tests.md")).unwrap();
    let mut rows = Vec::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // `| Class::test | status | programs or capability |`
        if cells.len() != 5 || !cells[1].contains("::test_") {
            continue;
        }
        let program = cells[2].starts_with("program");
        let files = cells[3]
            .split([' ', ','])
            .filter(|w| w.ends_with(".pytie"))
            .map(str::to_string)
            .collect();
        rows.push(Row {
            test: cells[1].to_string(),
            program,
            files,
        });
    }
    (doc, rows)
}

#[test]
fn the_table_and_the_programs_agree() {
    let (doc, rows) = table();
    assert_eq!(rows.len(), 33, "upstream's tying suite has 33 tests");
    let names: BTreeSet<&str> = rows.iter().map(|r| r.test.as_str()).collect();
    assert_eq!(names.len(), rows.len(), "a test is listed twice");

    let dir = root().join("corpus/upstream-tests");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut listed = BTreeSet::new();
    let mut problems = Vec::new();
    for r in &rows {
        if r.program == r.files.is_empty() {
            problems.push(format!(
                "{}: status and programs do not match ({} files)",
                r.test,
                r.files.len()
            ));
        }
        for f in &r.files {
            listed.insert(f.clone());
            let Ok(text) = std::fs::read_to_string(dir.join(f)) else {
                problems.push(format!("{}: {f} is not in corpus/upstream-tests", r.test));
                continue;
            };
            let first = text.lines().next().unwrap_or("");
            let want = format!("# upstream: {UPSTREAM_FILE}::{}", r.test);
            if !first.starts_with(&want) {
                problems.push(format!("{f}: the first line should start `{want}`"));
            }
            if !f.starts_with(r.test.rsplit("::").next().unwrap()) {
                problems.push(format!("{f}: not named after {}", r.test));
            }
        }
    }
    for f in on_disk.difference(&listed) {
        problems.push(format!(
            "corpus/upstream-tests/{f} is in no row of the table"
        ));
    }
    let programs = rows.iter().filter(|r| r.program).count();
    let claim = format!("**{programs} of 33 are programs**");
    if !doc.contains(&claim) {
        problems.push(format!("the text should say {claim}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(programs >= 25, "{programs} programs");
}

/// The pinned sdist: fetched when `PYTIE_TVMFFI_TIED=1`, else looked for
/// in the cache `scripts/setup-tvmffi-tied` fills.
fn sdist() -> Option<PathBuf> {
    if std::env::var_os("PYTIE_TVMFFI_TIED").is_some_and(|v| v == "1") {
        let o = Command::new(root().join("scripts/setup-tvmffi-tied"))
            .arg("--fetch-sdist")
            .output()
            .expect("run scripts/setup-tvmffi-tied --fetch-sdist");
        assert!(
            o.status.success(),
            "--fetch-sdist: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        return Some(PathBuf::from(String::from_utf8(o.stdout).unwrap().trim()));
    }
    let cache = std::env::var_os("PYTIE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| Path::new(&d).join("pytie")))
        .or_else(|| std::env::var_os("HOME").map(|d| Path::new(&d).join(".cache/pytie")))?;
    let p = cache.join("tvmffi-tied/sdist/apache_tvm_ffi-0.1.15.post2.tar.gz");
    p.exists().then_some(p)
}

#[test]
fn the_table_lists_exactly_the_sdists_tests() {
    let Some(tarball) = sdist() else {
        support::skipped(
            "upstream_tests",
            "the_table_lists_exactly_the_sdists_tests (the pinned sdist is not in the cache)",
            "PYTIE_TVMFFI_TIED",
        );
        return;
    };
    let o = Command::new("tar")
        .args(["-xzOf"])
        .arg(&tarball)
        .arg(format!("apache_tvm_ffi-0.1.15.post2/{UPSTREAM_FILE}"))
        .output()
        .expect("run tar");
    assert!(
        o.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let source = String::from_utf8(o.stdout).unwrap();
    // `class TestX:` then its `    def test_y(` lines.
    let mut class = String::new();
    let mut upstream = BTreeSet::new();
    for line in source.lines() {
        if let Some(rest) = line.strip_prefix("class Test") {
            class = format!("Test{}", rest.split([':', '(']).next().unwrap());
        } else if let Some(rest) = line.trim_start().strip_prefix("def test_") {
            upstream.insert(format!("{class}::test_{}", rest.split('(').next().unwrap()));
        }
    }
    let (_, rows) = table();
    let ours: BTreeSet<String> = rows.into_iter().map(|r| r.test).collect();
    assert_eq!(upstream.len(), 33, "{upstream:?}");
    assert_eq!(
        ours, upstream,
        "docs/upstream-tests.md and the sdist's {UPSTREAM_FILE} name different tests"
    );
}
