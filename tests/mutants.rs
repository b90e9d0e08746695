//! The bug zoo (`cargo test --features mutants`): for every injected fault,
//! `corpus/mutants/<name>.pytie` passes on the correct runtime and fails
//! with the fault, caught by the oracle docs/mutants.md names.
#![cfg(feature = "mutants")]

use std::path::Path;

use pytie::harness;
use pytie::mutants::{self, Mutant};
use pytie_core::exec::FailureKind;
use pytie_core::program::{Program, text};

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
    let mut report = Vec::new();
    for &m in Mutant::ALL {
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
