//! Freed handles and wrappers are not stored: tables compare, index and
//! report as the dense vectors did, at a cost in live objects only.

use pytie_core::exec::report::diff_lines;
use pytie_core::model::{Design, Model};
use pytie_core::program::text::parse;
use pytie_core::program::{MAX_PROGRAM_STEPS, ObjKind, Op, Var};
use pytie_core::state::{AbstractState, HandleState, Table, WrapperState};

fn live(strong: u32) -> HandleState {
    HandleState {
        strong,
        weak: 1,
        storage: true,
        ..HandleState::default()
    }
}

#[test]
fn a_table_equals_the_dense_vector_and_stores_no_freed_entry() {
    let dense = vec![HandleState::FREED, live(1), HandleState::FREED, live(2)];
    let t: Table<HandleState> = dense.iter().copied().collect();
    assert_eq!(t, dense);
    assert_eq!(t.len(), 4);
    assert_eq!(t.live_len(), 2);
    assert_eq!(t[0], HandleState::FREED);
    assert_eq!(t[3], live(2));
    assert_eq!(t.get(4), None);
    let numbers: Vec<usize> = t.entries().map(|(i, _)| i).collect();
    assert_eq!(numbers, [1, 3]);

    // Same entries, one more number given out (freed): not equal.
    let mut longer = t.clone();
    longer.push(HandleState::FREED);
    assert_ne!(t, longer);
    // An entry written freed is as good as absent.
    let mut u = t.clone();
    u[1] = HandleState::FREED;
    let mut v: Table<HandleState> = Table::default();
    v.set_len(4);
    v.set(3, live(2));
    assert_eq!(u, v);
    // A freed entry brought back is compared again.
    u[0] = live(5);
    assert_ne!(u, v);
    assert_eq!(u.entries().map(|(i, _)| i).collect::<Vec<_>>(), [0, 3]);
}

fn model_after(steps: usize) -> (Model, AbstractState) {
    let mut m = Model::new(Design::S);
    let new = Op::New {
        v: Var(0),
        kind: ObjKind::Plain,
    };
    for _ in 0..steps {
        m.apply(&new);
    }
    let mut s = AbstractState::default();
    m.observe(&mut s);
    (m, s)
}

#[test]
fn the_model_observes_only_what_is_not_freed() {
    let (_, s) = model_after(10_000);
    assert_eq!((s.handles.len(), s.wrappers.len()), (10_000, 10_000));
    assert_eq!((s.handles.live_len(), s.wrappers.live_len()), (1, 1));
    assert_eq!(s.handles[9_999].strong, 1);
    assert_eq!(s.handles[0], HandleState::FREED);
    assert_eq!(s.wrappers[0], WrapperState::FREED);
}

#[test]
fn a_report_after_many_freed_objects_shows_what_differs_and_no_freed_line() {
    let (_, expected) = model_after(10_000);
    let mut actual = expected.clone();
    actual.handles[9_999].strong = 2;
    actual.handles[17] = live(1); // freed on one side only: shown
    let diff = diff_lines(&expected, &actual, false);
    let names: Vec<&str> = diff.iter().map(|(n, _, _)| n.as_str()).collect();
    assert!(names.contains(&"obj#9999.strong"), "{diff:?}");
    assert!(names.contains(&"obj#17.storage"), "{diff:?}");
    assert!(diff.len() < 10, "{diff:?}");
    // The whole states: the objects not freed and how many were made.
    let full = diff_lines(&expected, &actual, true);
    assert!(full.len() < 60, "{} lines", full.len());
    assert!(
        full.iter()
            .any(|(n, e, a)| n == "objects made" && e == "10000" && a == "10000")
    );
    // One side made more: the count says so.
    let mut more = expected.clone();
    more.handles.push(HandleState::FREED);
    let diff = diff_lines(&expected, &more, false);
    assert_eq!(
        diff,
        [("objects made".into(), "10000".into(), "10001".into())]
    );
}

#[test]
fn a_program_past_the_step_limit_is_an_error_naming_its_line() {
    let src = "new v0\n".repeat(MAX_PROGRAM_STEPS + 1);
    let e = parse(&src).expect_err("one step too many").to_string();
    assert!(
        e.starts_with(&format!("{}:1: too many steps", MAX_PROGRAM_STEPS + 1)),
        "{e}"
    );
    assert!(e.contains("at most 1000000 steps"), "{e}");
}
