//! The coverage floor: the shipped corpus must keep reaching every
//! transition of the state machine listed in tests/coverage-floor.txt, so
//! that a change to the binary format, the decoder or the scenarios cannot
//! silently leave the fuzzer's seeds blind to part of the machine.

use std::path::{Path, PathBuf};

use pytie::cli::{load, program_files};
use pytie_core::exec::coverage::{Combo, Counts, Edge, to_dot};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The edges and combinations of the floor file, in file order.
fn floor_file() -> (Vec<Edge>, Vec<Combo>) {
    let path = root().join("tests/coverage-floor.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    let (mut edges, mut combos) = (Vec::new(), Vec::new());
    for l in text.lines().map(str::trim) {
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some(e) = Edge::from_name(l) {
            edges.push(e);
        } else if let Some(c) = Combo::from_name(l) {
            combos.push(c);
        } else {
            panic!(
                "{}: {l:?} is neither an edge nor a combination; the edges are: {}; a \
                 combination is `EDGE by STEP|teardown [cascade] [after-shutdown]`",
                path.display(),
                Edge::ALL.map(Edge::name).join(", ")
            );
        }
    }
    (edges, combos)
}

/// The edges of the floor file, in file order.
fn floor() -> Vec<Edge> {
    floor_file().0
}

fn shipped_corpus() -> Counts {
    let dirs: Vec<PathBuf> = ["scenarios", "lifecycle", "regressions", "combos"]
        .iter()
        .map(|d| root().join("corpus").join(d))
        .collect();
    let files = program_files(&dirs).unwrap();
    assert!(
        files.len() >= 60,
        "the corpus is missing: {} files",
        files.len()
    );
    let mut counts = Counts::default();
    for f in &files {
        let text = f.extension().is_some_and(|e| e == "pytie");
        counts.add_program(&load(f, text).unwrap());
    }
    counts
}

#[test]
fn the_shipped_corpus_keeps_its_coverage_floor() {
    let floor = floor();
    assert!(!floor.is_empty(), "the coverage floor is empty");
    let counts = shipped_corpus();
    let lost: Vec<&str> = floor
        .iter()
        .filter(|e| counts.get(**e) == 0)
        .map(|e| e.name())
        .collect();
    assert!(
        lost.is_empty(),
        "the shipped corpus no longer reaches {}: a scenario or the binary layout changed so \
         that no program takes it; restore a program that does (corpus/scenarios, then \
         scripts/seed-corpus)",
        lost.join(", ")
    );
    let new: Vec<&str> = counts
        .reached()
        .iter()
        .filter(|e| !floor.contains(e))
        .map(|e| e.name())
        .collect();
    assert!(
        new.is_empty(),
        "coverage grew: the shipped corpus now reaches {}; add {} to tests/coverage-floor.txt \
         (one name a line) and redraw docs/coverage.svg (`pytie coverage corpus/scenarios \
         corpus/lifecycle corpus/regressions -o docs/coverage --png`)",
        new.join(", "),
        if new.len() == 1 { "it" } else { "them" }
    );
}

#[test]
fn the_committed_picture_is_the_shipped_corpus() {
    // docs/coverage.dot is what `pytie coverage` writes for the shipped
    // corpus; a stale picture in docs/guide-campaigns.md would mislead.
    let counts = shipped_corpus();
    let title = format!(
        "pytie: state-machine transitions taken by {} programs (corpus/scenarios, \
         corpus/lifecycle, corpus/regressions, corpus/combos)\nred: never taken",
        counts.programs
    );
    let committed = std::fs::read_to_string(root().join("docs/coverage.dot")).unwrap();
    assert_eq!(
        committed,
        to_dot(&counts, &title),
        "docs/coverage.dot is stale: run `cargo run --release -- coverage corpus/scenarios \
         corpus/lifecycle corpus/regressions corpus/combos -o docs/coverage --png`"
    );
}

#[test]
fn never_taken_edges_and_unreached_states_are_red() {
    let mut counts = Counts::default();
    let mut only_attach = pytie_core::exec::coverage::EdgeSet::default();
    only_attach.insert(Edge::Attach);
    counts.add(only_attach);
    counts.add(only_attach);
    let dot = to_dot(&counts, "t");
    let line = |from: &str, name: &str| {
        dot.lines()
            .find(|l| {
                l.trim_start().starts_with(&format!("{from} -> "))
                    && l.contains(&format!("\"{name}: "))
            })
            .unwrap_or_else(|| panic!("no edge {name} in\n{dot}"))
            .to_string()
    };
    let attach = line("Detached", "attach");
    assert!(attach.contains("attach: 2 programs"), "{attach}");
    assert!(!attach.contains("red"), "{attach}");
    let revive = line("Inactive", "revive");
    assert!(revive.contains("revive: 0 programs"), "{revive}");
    assert!(revive.contains("color=red"), "{revive}");
    // Untied and Inactive are touched by no taken edge; Active is.
    assert!(dot.contains("  Untied [shape=ellipse, color=red"), "{dot}");
    assert!(
        dot.contains("  Inactive [shape=ellipse, color=red"),
        "{dot}"
    );
    assert!(dot.contains("  Active [shape=ellipse];"), "{dot}");
    assert_eq!(dot.matches("->").count(), Edge::COUNT);
}

#[test]
fn the_shipped_corpus_takes_every_combination_of_the_floor_and_no_other() {
    let (_, floor) = floor_file();
    assert!(floor.len() > Edge::COUNT, "the floor lists no combinations");
    let reached = shipped_corpus().combos_reached();
    let lost: Vec<String> = floor
        .iter()
        .filter(|c| !reached.contains(**c))
        .map(|c| c.name())
        .collect();
    assert!(
        lost.is_empty(),
        "the shipped corpus no longer takes {}; `pytie coverage corpus/scenarios corpus/lifecycle \
         corpus/regressions corpus/combos --reachable 7 --write-missing corpus/combos` writes a \
         program for each",
        lost.join(", ")
    );
    let new: Vec<String> = reached
        .iter()
        .filter(|c| !floor.contains(c))
        .map(|c| c.name())
        .collect();
    assert!(
        new.is_empty(),
        "coverage grew: the shipped corpus now takes {}; add them to tests/coverage-floor.txt",
        new.join(", ")
    );
}

#[test]
fn every_combination_the_model_reaches_at_a_small_bound_is_in_the_floor() {
    // The full check (`--reachable 7`, the default bound) runs in CI in a
    // release build; here depth 5 (11,559 states) keeps cargo test quick.
    use pytie_core::exhaust::{Bounds, reachable_combos};
    let b = Bounds {
        depth: 5,
        ..Bounds::default()
    };
    let (reachable, _) = reachable_combos(&b).unwrap_or_else(|_| panic!("the search stopped"));
    assert!(reachable.len() > 100, "{} combinations", reachable.len());
    let (_, floor) = floor_file();
    let missing: Vec<String> = reachable
        .iter()
        .filter(|(c, _)| !floor.contains(c))
        .map(|(c, p)| format!("{} ({})", c.name(), p.ops.len()))
        .collect();
    assert!(
        missing.is_empty(),
        "reachable but not in the floor: {}",
        missing.join(", ")
    );
}

/// Every object kind of contract §2.2 takes, in the shipped corpus (design
/// U: upstream's), the transitions that tell its wrapper type apart: an
/// eligible kind is attached, cached Inactive and revived; `del` (and
/// `dict`) is attached and detached at its drop, never cached; `sub` is
/// detached at the drop of its constructor's wrapper and later cached and
/// revived; `fragile` is cached and then refused, fresh and revived. The model takes a kind for its class; this keeps the seeds
/// reaching each kind's own path in upstream's code.
#[test]
fn every_object_kind_reaches_what_tells_it_apart() {
    use pytie_core::exec::coverage::for_each_transition;
    use pytie_core::model::{Design, Model};
    use pytie_core::program::ObjKind;
    let dirs: Vec<PathBuf> = ["scenarios", "lifecycle", "regressions", "combos"]
        .iter()
        .map(|d| root().join("corpus").join(d))
        .collect();
    let mut reached = vec![Vec::<Edge>::new(); ObjKind::ALL.len()];
    for f in &program_files(&dirs).unwrap() {
        let text = f.extension().is_some_and(|e| e == "pytie");
        let p = load(f, text).unwrap();
        // Each handle's kind, as the model made it (`new`, and `pickle`'s
        // copies).
        let mut model = Model::new(Design::U);
        for op in &p.ops {
            model.apply(op);
        }
        let kinds = model.kinds().to_vec();
        for_each_transition(&p, Design::U, |t| {
            let k = kinds[t.handle as usize] as usize;
            if !reached[k].contains(&t.edge) {
                reached[k].push(t.edge);
            }
        });
    }
    let eligible = [Edge::Attach, Edge::Deactivate, Edge::Revive];
    let ineligible = [Edge::Attach, Edge::ReturnActive, Edge::DropIneligible];
    for k in ObjKind::ALL {
        let want: &[Edge] = match k {
            ObjKind::Untied | ObjKind::Legacy => &[Edge::UntiedReturn, Edge::UntiedFree],
            ObjKind::Dict | ObjKind::Del => &ineligible,
            ObjKind::Sub => &[
                Edge::Attach,
                Edge::DropIneligible,
                Edge::Deactivate,
                Edge::Revive,
            ],
            // Cached like any eligible kind; every return that constructs
            // is refused, a revival too (design U, R20).
            ObjKind::Fragile => &[
                Edge::Attach,
                Edge::Deactivate,
                Edge::RefuseFresh,
                Edge::RefuseRevive,
            ],
            _ => &eligible,
        };
        let missing: Vec<&str> = want
            .iter()
            .filter(|e| !reached[k as usize].contains(e))
            .map(|e| e.name())
            .collect();
        assert!(
            missing.is_empty(),
            "no shipped program takes {} on a `{}` object (it takes: {})",
            missing.join(", "),
            k.name(),
            reached[k as usize]
                .iter()
                .map(|e| e.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}
