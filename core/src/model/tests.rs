//! Unit tests of the reference model: one per row of the contract's §3
//! transition table, the §4.1 rules, cascades, weak refs, shutdown, the
//! S/U difference, revivals and teardown. Every step of every test is
//! followed by a check of the §3 invariants on the model's own state.

use super::{Design, Model};
use crate::program::{Expect, HOLDERS, Mark, Op, StepKind, VARS, Var, WEAKS};
use crate::state::{
    AbstractState, Binding, HandleState, StepResult, Totals, VarState, WrapperLife, WrapperState,
};

// ---- helpers ----------------------------------------------------------------

/// One step line in the text form.
fn parse(line: &str) -> Op {
    crate::program::text::parse(line)
        .unwrap_or_else(|e| panic!("{line}: {e}"))
        .ops[0]
}

/// Apply every step, checking the invariants after each; return the
/// result of the last one.
fn run(m: &mut Model, script: &str) -> StepResult {
    let mut r = StepResult::Ok;
    for line in script.split([';', '\n']).map(str::trim) {
        if !line.is_empty() {
            r = m.apply(&parse(line));
            check_invariants(m);
        }
    }
    r
}

fn model(script: &str) -> Model {
    let mut m = Model::new(Design::S);
    run(&mut m, script);
    m
}

fn model_u(script: &str) -> Model {
    let mut m = Model::new(Design::U);
    run(&mut m, script);
    m
}

fn st(m: &Model) -> AbstractState {
    let mut s = AbstractState::default();
    m.observe(&mut s);
    s
}

/// A handle with storage (weak > 0).
fn hs(strong: u32, weak: u32, binding: Binding, field: Option<u32>) -> HandleState {
    assert!(weak > 0, "use HandleState::FREED");
    HandleState {
        strong,
        weak,
        storage: true,
        binding,
        field,
    }
}

fn live(refs: u32, chandle: Option<u32>) -> WrapperState {
    WrapperState {
        life: WrapperLife::Live,
        refs,
        chandle,
        tracked: false,
    }
}

const FREED_H: HandleState = HandleState::FREED;
const FREED_W: WrapperState = WrapperState::FREED;
const LEAKED_W: WrapperState = WrapperState {
    life: WrapperLife::Leaked,
    refs: 0,
    chandle: None,
    tracked: false,
};

fn totals(live_handles: u32, live_blocks: u32, live_wrappers: u32, leaked: u32) -> Totals {
    Totals {
        live_handles,
        live_blocks,
        live_wrappers,
        leaked_wrappers: leaked,
        finalized: 0,
    }
}

use Binding::{Active, Detached, Inactive};
use VarState::{Empty, Moved, Wrapper};

/// §6 teardown as the executor runs it.
fn teardown(m: &mut Model) {
    m.clear_all_fields();
    check_invariants(m);
    run(
        m,
        "release h0; release h1; release h2; release h3; unweak w0; unweak w1;
         drop v0; drop v1; drop v2; drop v3; drop v4; drop v5; drop v6; drop v7; collect",
    );
}

/// §3 invariants I1 to I5 and the reference accounting, on the model's
/// observed state: the same checker the executor runs on the real side.
fn check_invariants(m: &Model) {
    let s = st(m);
    let mut scratch = crate::exec::invariants::Scratch::default();
    if let Err(broken) = crate::exec::invariants::check(&s, &m.cycles, &mut scratch) {
        panic!("the model breaks an invariant:\n{broken}\nstate: {s:?}");
    }
}

// ---- §3 table, make_ret rows ------------------------------------------------

#[test]
fn make_ret_detached_to_active() {
    let m = model("new v0");
    let s = st(&m);
    assert_eq!(s.vars[0], Wrapper(0));
    assert_eq!(s.handles, vec![hs(1, 1, Active(0), None)]);
    assert_eq!(s.wrappers, vec![live(1, Some(0))]);
    assert_eq!(s.totals, totals(1, 1, 1, 0));
    // Also for a `dict` object: ineligible, but canonical while alive.
    let m = model("new v0 dict; hold h0 v0; ret v1 h0");
    let s = st(&m);
    assert_eq!((s.vars[0], s.vars[1]), (Wrapper(0), Wrapper(0)));
    assert_eq!(s.handles, vec![hs(2, 1, Active(0), None)]);
}

#[test]
fn make_ret_active_to_active() {
    let m = model("new v0; hold h0 v0; ret v1 h0; echo v2 v0");
    let s = st(&m);
    assert_eq!(&s.vars[..3], &[Wrapper(0), Wrapper(0), Wrapper(0)]);
    // The redundant +1 of each return was DecRef'd: W and h0 own one each.
    assert_eq!(s.handles, vec![hs(2, 1, Active(0), None)]);
    assert_eq!(s.wrappers, vec![live(3, Some(0))]);
    assert_eq!(s.holders[0], Some(0));
}

#[test]
fn make_ret_inactive_to_active_revives_same_wrapper() {
    let mut m = model("new v0; hold h0 v0; drop v0");
    let s = st(&m);
    assert_eq!(s.vars[0], Empty);
    assert_eq!(s.handles, vec![hs(1, 1, Inactive(0), None)]);
    assert_eq!(s.wrappers, vec![live(0, None)]);
    assert_eq!(s.totals, totals(1, 1, 1, 0));
    run(&mut m, "ret v1 h0");
    let s = st(&m);
    assert_eq!(s.vars[1], Wrapper(0));
    assert_eq!(s.handles, vec![hs(2, 1, Active(0), None)]);
    assert_eq!(s.wrappers, vec![live(1, Some(0))]);
}

// ---- §3 table, last-Python-ref rows -----------------------------------------

#[test]
fn eligible_drop_with_other_owner_goes_inactive() {
    // The other owner here is a field.
    let m = model("new v0; new v1; set v0 v1; drop v1");
    let s = st(&m);
    assert_eq!(
        s.handles,
        vec![hs(1, 1, Active(0), Some(1)), hs(1, 1, Inactive(1), None)]
    );
    assert_eq!(s.wrappers, vec![live(1, Some(0)), live(0, None)]);
    // Revived through the field.
    let mut m = m;
    run(&mut m, "get v2 v0");
    assert_eq!(m.var(Var(2)), Wrapper(1));
    assert_eq!(st(&m).handles[1], hs(2, 1, Active(1), None));
}

#[test]
fn eligible_drop_of_last_strong_ref_detaches_and_frees() {
    let m = model("new v0; drop v0");
    let s = st(&m);
    assert_eq!(s.vars[0], Empty);
    assert_eq!(s.handles, vec![FREED_H]);
    assert_eq!(s.wrappers, vec![FREED_W]);
    assert_eq!(s.totals, totals(0, 0, 0, 0));
}

#[test]
fn ineligible_drop_detaches_even_with_other_owner() {
    let mut m = model("new v0 dict; hold h0 v0; drop v0");
    let s = st(&m);
    assert_eq!(s.handles, vec![hs(1, 1, Detached, None)]);
    assert_eq!(s.wrappers, vec![FREED_W]);
    // The next return makes a fresh wrapper, canonical while alive.
    run(&mut m, "ret v1 h0; ret v2 h0");
    let s = st(&m);
    assert_eq!((s.vars[1], s.vars[2]), (Wrapper(1), Wrapper(1)));
    assert_eq!(s.handles, vec![hs(2, 1, Active(1), None)]);
    assert_eq!(s.wrappers, vec![FREED_W, live(2, Some(0))]);
}

// ---- §3 table, move row -----------------------------------------------------

#[test]
fn move_detaches_and_leaves_moved_from_wrapper() {
    let mut m = model("new v0; clone v1 v0; move h0 v0");
    let s = st(&m);
    assert_eq!((s.vars[0], s.vars[1]), (Moved(0), Moved(0)));
    assert_eq!(s.holders[0], Some(0));
    assert_eq!(s.handles, vec![hs(1, 1, Detached, None)]);
    assert_eq!(s.wrappers, vec![live(2, None)]);
    // A later return makes a fresh wrapper.
    run(&mut m, "ret v2 h0");
    let s = st(&m);
    assert_eq!(s.vars[2], Wrapper(1));
    assert_eq!(s.handles, vec![hs(2, 1, Active(1), None)]);
    // The moved-from wrapper owes nothing when dropped.
    run(&mut m, "drop v0; drop v1");
    let s = st(&m);
    assert_eq!(s.wrappers, vec![FREED_W, live(1, Some(0))]);
    assert_eq!(s.handles, vec![hs(2, 1, Active(1), None)]);
}

#[test]
fn move_of_untied_wrapper() {
    let m = model("new v0 untied; move h0 v0");
    let s = st(&m);
    assert_eq!(s.vars[0], Moved(0));
    assert_eq!(s.handles, vec![hs(1, 1, Binding::Untied, None)]);
    assert_eq!(s.wrappers, vec![live(1, None)]);
}

#[test]
fn move_into_occupied_holder_releases_old_content_after() {
    let m = model("new v0; new v1; hold h0 v1; drop v1; move h0 v0");
    let s = st(&m);
    assert_eq!(s.holders[0], Some(0));
    // Handle 1 lost its only strong owner: its cached wrapper is reclaimed.
    assert_eq!(s.handles, vec![hs(1, 1, Detached, None), FREED_H]);
    assert_eq!(s.wrappers, vec![live(1, None), FREED_W]);
}

// ---- §3 table, storage-freed rows -------------------------------------------

#[test]
fn storage_freed_reclaims_inactive_wrapper() {
    let m = model("new v0; hold h0 v0; drop v0; release h0");
    let s = st(&m);
    assert_eq!(s.handles, vec![FREED_H]);
    assert_eq!(s.wrappers, vec![FREED_W]);
    assert_eq!(s.holders[0], None);
    assert_eq!(s.totals, totals(0, 0, 0, 0));
    let m = model("new v0; hold h0 v0; drop v0; release_foreign h0");
    assert_eq!(st(&m).totals, totals(0, 0, 0, 0));
}

#[test]
fn storage_freed_when_detached() {
    let m = model("new v0 dict; hold h0 v0; drop v0; release h0");
    let s = st(&m);
    assert_eq!(s.handles, vec![FREED_H]);
    assert_eq!(s.wrappers, vec![FREED_W]);
    assert_eq!(s.totals, totals(0, 0, 0, 0));
}

// ---- untied objects ---------------------------------------------------------

#[test]
fn untied_objects_never_bind() {
    let mut m = model("new v0 untied; hold h0 v0; ret v1 h0; echo v2 v0");
    let s = st(&m);
    assert_eq!(&s.vars[..3], &[Wrapper(0), Wrapper(1), Wrapper(2)]);
    assert_eq!(s.handles, vec![hs(4, 1, Binding::Untied, None)]);
    assert_eq!(
        s.wrappers,
        vec![live(1, Some(0)), live(1, Some(0)), live(1, Some(0))]
    );
    run(&mut m, "drop v0; drop v1");
    let s = st(&m);
    assert_eq!(s.handles, vec![hs(2, 1, Binding::Untied, None)]);
    assert_eq!(s.wrappers, vec![FREED_W, FREED_W, live(1, Some(0))]);
    run(&mut m, "drop v2; release h0");
    let s = st(&m);
    // A freed untied handle is reported as FREED like any other.
    assert_eq!(s.handles, vec![FREED_H]);
    assert_eq!(s.totals, totals(0, 0, 0, 0));
}

#[test]
fn legacy_objects_never_bind_as_untied_ones() {
    // Contract §2.1 L1: a legacy-layout object behaves exactly as untied.
    for design in [Design::S, Design::U] {
        let prog = "hold h0 v0; ret v1 h0; echo v2 v0; drop v0; drop v1; drop v2; release h0";
        let mut legacy = Model::new(design);
        run(&mut legacy, &format!("new v0 legacy; {prog}"));
        let mut untied = Model::new(design);
        run(&mut untied, &format!("new v0 untied; {prog}"));
        assert_eq!(st(&legacy), st(&untied));
    }
    let m = model("new v0 legacy; hold h0 v0; ret v1 h0");
    let s = st(&m);
    assert_eq!(&s.vars[..2], &[Wrapper(0), Wrapper(1)]);
    assert_eq!(s.handles[0].binding, Binding::Untied);
}

// ---- §4.1 rules -------------------------------------------------------------

#[test]
fn steps_on_moved_from_wrapper_fail_and_change_nothing() {
    for design in [Design::S, Design::U] {
        let mut m = Model::new(design);
        run(&mut m, "new v0; new v1; hold h1 v1; weak w1 v1; move h0 v0");
        let before = st(&m);
        for step in [
            "echo v2 v0",
            "get v2 v0",
            "set v0 v1",
            "set v1 v0",
            "unset v0",
            "hold h1 v0",
            "move h1 v0",
            "weak w0 v0",
        ] {
            assert_eq!(run(&mut m, step), StepResult::Moved, "{step}");
            let mut after = st(&m);
            assert_eq!(after.result, StepResult::Moved);
            after.result = StepResult::Ok;
            assert_eq!(after, before, "{step} changed state");
        }
        // drop, clone and cycle work on moved-from wrappers.
        assert_eq!(run(&mut m, "clone v2 v0"), StepResult::Ok);
        assert_eq!(st(&m).result, StepResult::Ok);
        assert_eq!(m.var(Var(2)), Moved(0));
        assert_eq!(st(&m).wrappers[0], live(2, None));
        run(&mut m, "cycle v2; drop v0");
        assert_eq!(st(&m).wrappers[0], live(1, None));
        run(&mut m, "collect");
        assert_eq!(st(&m).wrappers[0], FREED_W);
        assert_eq!(st(&m).handles[0], hs(1, 1, Detached, None));
    }
}

#[test]
fn empty_and_none_sources_do_nothing() {
    // v1 holds None (lock of a dead object), v7 is empty, h3 and w1 empty.
    let mut m = model("new v0; new v2; weak w0 v0; drop v0; lock v1 w0; hold h0 v2");
    assert_eq!(m.var(Var(1)), VarState::None);
    let before = st(&m);
    for step in [
        "echo v3 v1",
        "echo v3 v7",
        "get v3 v1",
        "get v3 v7",
        "set v1 v2",
        "set v2 v1",
        "set v7 v2",
        "set v2 v7",
        "unset v1",
        "unset v7",
        "clone v3 v1",
        "clone v3 v7",
        "drop v1",
        "drop v7",
        "hold h1 v1",
        "hold h1 v7",
        "move h1 v1",
        "move h1 v7",
        "weak w1 v1",
        "weak w1 v7",
        "cycle v1",
        "cycle v7",
        "ret v3 h3",
        "release h3",
        "release_foreign h3",
        "unweak w1",
        "lock v3 w1",
        "collect",
    ] {
        assert_eq!(run(&mut m, step), StepResult::Ok, "{step}");
        assert_eq!(st(&m), before, "{step} changed state");
    }
    // `drop` leaves None as None; `clone`/`cycle` of None did not touch v3.
    assert_eq!(m.var(Var(1)), VarState::None);
    assert_eq!(m.var(Var(3)), Empty);
}

#[test]
fn set_with_empty_side_and_moved_side_does_nothing() {
    // Interpretation: the empty/None check comes before the moved check.
    let mut m = model("new v0; move h0 v0");
    let before = st(&m);
    assert_eq!(run(&mut m, "set v7 v0"), StepResult::Ok);
    assert_eq!(run(&mut m, "set v0 v7"), StepResult::Ok);
    assert_eq!(st(&m), before);
}

#[test]
fn lock_gives_none_when_dead_and_the_object_when_alive() {
    let mut m = model("new v0; weak w0 v0; lock v1 w0");
    let s = st(&m);
    assert_eq!(s.vars[1], Wrapper(0));
    assert_eq!(s.handles, vec![hs(1, 2, Active(0), None)]);
    run(&mut m, "drop v0; drop v1; lock v2 w0");
    let s = st(&m);
    assert_eq!(s.vars[2], VarState::None);
    assert_eq!(s.handles, vec![hs(0, 1, Detached, None)]);
    // lock revives an Inactive wrapper.
    let m = model("new v0; hold h0 v0; weak w0 v0; drop v0; lock v1 w0");
    let s = st(&m);
    assert_eq!(s.vars[1], Wrapper(0));
    assert_eq!(s.handles, vec![hs(2, 2, Active(0), None)]);
}

#[test]
fn assignment_computes_new_value_before_dropping_old() {
    // v0 is the only owner: dropping it first would kill the object.
    let m = model("new v0; weak w0 v0; lock v0 w0");
    let s = st(&m);
    assert_eq!(s.vars[0], Wrapper(0));
    assert_eq!(s.handles, vec![hs(1, 2, Active(0), None)]);
    assert_eq!(s.wrappers, vec![live(1, Some(0))]);

    // `get v0 v0`: read the field, then the old wrapper goes and takes
    // its object (and the field's ref) with it.
    let m = model("new v0; new v1; set v0 v1; drop v1; get v0 v0");
    let s = st(&m);
    assert_eq!(s.vars[0], Wrapper(1));
    assert_eq!(s.handles, vec![FREED_H, hs(1, 1, Active(1), None)]);
    assert_eq!(s.wrappers, vec![FREED_W, live(1, Some(1))]);

    // Re-assigning the same wrapper: +1 then -1, no transition.
    let mut m = model("new v0; hold h0 v0");
    let before = st(&m);
    run(&mut m, "ret v0 h0; echo v0 v0; clone v0 v0; lock v0 w0");
    assert_eq!(st(&m), before);
    run(&mut m, "weak w0 v0; lock v0 w0");
    assert_eq!(st(&m).handles, vec![hs(2, 2, Active(0), None)]);
    assert_eq!(st(&m).wrappers, vec![live(1, Some(0))]);

    // Same for an ineligible wrapper, where dropping the old value first
    // would free W and make a fresh wrapper.
    let mut m = model("new v0 dict; hold h0 v0");
    let before = st(&m);
    run(&mut m, "ret v0 h0; echo v0 v0; clone v0 v0");
    assert_eq!(st(&m), before);
    assert_eq!(st(&m).wrappers, vec![live(1, Some(0))]);

    // `new` into an occupied var: the new handle and wrapper come first.
    let m = model("new v0; new v0");
    let s = st(&m);
    assert_eq!(s.vars[0], Wrapper(1));
    assert_eq!(s.handles, vec![FREED_H, hs(1, 1, Active(1), None)]);
}

#[test]
fn holder_and_weak_slot_store_then_release() {
    let m = model("new v0; hold h0 v0; hold h0 v0; weak w0 v0; weak w0 v0");
    assert_eq!(st(&m).handles, vec![hs(2, 2, Active(0), None)]);
    // Replacing a weak slot's content frees the old storage.
    let m = model("new v0; new v1; weak w0 v0; drop v0; weak w0 v1");
    let s = st(&m);
    assert_eq!(s.weaks[0], Some(1));
    assert_eq!(s.handles, vec![FREED_H, hs(1, 2, Active(1), None)]);
}

#[test]
fn set_and_unset_fields() {
    let mut m = model("new v0; set v0 v0");
    assert_eq!(st(&m).handles, vec![hs(2, 1, Active(0), Some(0))]);
    run(&mut m, "unset v0");
    assert_eq!(st(&m).handles, vec![hs(1, 1, Active(0), None)]);
    let mut m = model("new v0; new v1; new v2; set v0 v1; set v0 v2");
    let s = st(&m);
    assert_eq!(
        s.handles,
        vec![
            hs(1, 1, Active(0), Some(2)),
            hs(1, 1, Active(1), None),
            hs(2, 1, Active(2), None)
        ]
    );
    run(&mut m, "get v3 v0; get v4 v1");
    let s = st(&m);
    assert_eq!((s.vars[3], s.vars[4]), (Wrapper(2), VarState::None));
    assert_eq!(s.wrappers[2], live(2, Some(2)));
}

#[test]
fn cycles_hold_a_ref_until_collect() {
    let mut m = model("new v0; clone v1 v0; hold h0 v0; cycle v0; cycle v1");
    let s = st(&m);
    assert_eq!((s.vars[0], s.vars[1]), (Empty, Empty));
    assert_eq!(s.wrappers, vec![live(2, Some(0))]);
    assert_eq!(s.handles, vec![hs(2, 1, Active(0), None)]);
    run(&mut m, "collect");
    let s = st(&m);
    assert_eq!(s.wrappers, vec![live(0, None)]);
    assert_eq!(s.handles, vec![hs(1, 1, Inactive(0), None)]);
    // A second collect has nothing to do.
    run(&mut m, "collect");
    assert_eq!(st(&m), s);
}

#[test]
fn mark_and_expect_change_nothing() {
    let mut m = model("new v0; move h0 v0; echo v1 v0");
    let before = st(&m);
    assert_eq!(before.result, StepResult::Moved);
    let ops = [
        Op::Mark {
            m: Mark(0),
            v: Var(0),
        },
        Op::Expect(Expect::Moved { v: Var(0) }),
        Op::Expect(Expect::Strong { v: Var(0), n: 7 }),
    ];
    for op in ops {
        assert_eq!(m.apply(&op), StepResult::Ok);
        // Interpretation: the recorded result of the last step stays.
        assert_eq!(st(&m), before);
    }
}

// ---- cascades, weak refs, shutdown, designs ---------------------------------

#[test]
fn cascade_through_fields() {
    let script = "new v0; new v1; new v2; set v0 v1; set v1 v2; drop v2; drop v1";
    let mut m = model(script);
    let s = st(&m);
    assert_eq!(
        s.handles,
        vec![
            hs(1, 1, Active(0), Some(1)),
            hs(1, 1, Inactive(1), Some(2)),
            hs(1, 1, Inactive(2), None)
        ]
    );
    run(&mut m, "drop v0");
    let s = st(&m);
    assert_eq!(s.handles, vec![FREED_H; 3]);
    assert_eq!(s.wrappers, vec![FREED_W; 3]);
    assert_eq!(s.totals, totals(0, 0, 0, 0));

    // A weak ref in the middle keeps that storage (and its cached wrapper).
    let mut m = model(&format!(
        "{script}; weak w0 v0; get v3 v0; weak w0 v3; drop v3"
    ));
    run(&mut m, "drop v0");
    let s = st(&m);
    assert_eq!(
        s.handles,
        vec![FREED_H, hs(0, 1, Inactive(1), None), FREED_H]
    );
    assert_eq!(s.wrappers, vec![FREED_W, live(0, None), FREED_W]);
    assert_eq!(s.totals, totals(0, 1, 1, 0));
    run(&mut m, "unweak w0");
    assert_eq!(st(&m).totals, totals(0, 0, 0, 0));
    assert_eq!(st(&m).wrappers[1], FREED_W);
}

#[test]
fn weak_ref_outlives_strong_refs_s_vs_u() {
    let script = "new v0; weak w0 v0; drop v0";
    // Design S: W held the last strong ref: detached and freed at once.
    let mut s_model = model(script);
    let s = st(&s_model);
    assert_eq!(s.handles, vec![hs(0, 1, Detached, None)]);
    assert_eq!(s.wrappers, vec![FREED_W]);
    assert_eq!(s.totals, totals(0, 1, 0, 0));
    // Design U: W stays cached (Inactive) until the weak count reaches 0.
    let mut u_model = model_u(script);
    let s = st(&u_model);
    assert_eq!(s.handles, vec![hs(0, 1, Inactive(0), None)]);
    assert_eq!(s.wrappers, vec![live(0, None)]);
    assert_eq!(s.totals, totals(0, 1, 1, 0));
    // Nothing can revive it in between.
    run(&mut u_model, "lock v1 w0");
    assert_eq!(u_model.var(Var(1)), VarState::None);
    assert_eq!(st(&u_model).handles, vec![hs(0, 1, Inactive(0), None)]);
    for m in [&mut s_model, &mut u_model] {
        run(m, "unweak w0");
        let s = st(m);
        assert_eq!(s.handles, vec![FREED_H]);
        assert_eq!(s.wrappers, vec![FREED_W]);
        assert_eq!(s.totals, totals(0, 0, 0, 0));
    }
}

#[test]
fn s_and_u_agree_when_another_owner_remains() {
    let script = "new v0; hold h0 v0; weak w0 v0; drop v0; release h0";
    for m in [model(script), model_u(script)] {
        let s = st(&m);
        // The last strong ref went from the holder: Inactive in both.
        assert_eq!(s.handles, vec![hs(0, 1, Inactive(0), None)]);
        assert_eq!(s.wrappers, vec![live(0, None)]);
    }
}

#[test]
fn u_cached_wrapper_leaks_after_shutdown() {
    let mut m = model_u("new v0; weak w0 v0; drop v0; shutdown; unweak w0");
    let s = st(&m);
    assert_eq!(s.handles, vec![FREED_H]);
    assert_eq!(s.wrappers, vec![LEAKED_W]);
    assert_eq!(s.totals, totals(0, 0, 0, 1));
    m.reclaim_leaked();
    assert_eq!(st(&m).totals, totals(0, 0, 0, 0));
}

#[test]
fn shutdown_leaks_inactive_wrapper_then_reclaim() {
    let mut m = model("new v0; hold h0 v0; drop v0; shutdown; shutdown; release h0");
    let s = st(&m);
    assert_eq!(s.handles, vec![FREED_H]);
    assert_eq!(s.wrappers, vec![LEAKED_W]);
    assert_eq!(s.totals, totals(0, 0, 0, 1));
    // Everything else works as before after shutdown.
    run(
        &mut m,
        "new v1; hold h1 v1; drop v1; ret v2 h1; release h1; drop v2",
    );
    let s = st(&m);
    assert_eq!(s.handles, vec![FREED_H, FREED_H]);
    assert_eq!(s.wrappers, vec![LEAKED_W, FREED_W]);
    // Detached handles lose nothing at shutdown.
    run(&mut m, "new v3 dict; hold h2 v3; drop v3; release h2");
    assert_eq!(st(&m).totals, totals(0, 0, 0, 1));

    m.reclaim_leaked();
    let s = st(&m);
    assert_eq!(s.wrappers, vec![FREED_W; 3]);
    assert_eq!(s.totals, totals(0, 0, 0, 0));
    // The flag is reset: a cached wrapper is reclaimed again.
    run(&mut m, "new v0; hold h0 v0; drop v0; release h0");
    assert_eq!(st(&m).wrappers[3], FREED_W);
    assert_eq!(st(&m).totals, totals(0, 0, 0, 0));
}

#[test]
fn interleaved_revivals_of_two_handles() {
    let mut m = model("new v0; new v1; hold h0 v0; hold h1 v1; drop v0; drop v1");
    let s = st(&m);
    assert_eq!(
        s.handles,
        vec![hs(1, 1, Inactive(0), None), hs(1, 1, Inactive(1), None)]
    );
    for round in 0..50 {
        let (a, b) = if round % 2 == 0 { (1, 0) } else { (0, 1) };
        run(&mut m, &format!("ret v2 h{a}; ret v3 h{b}"));
        let s = st(&m);
        assert_eq!((s.vars[2], s.vars[3]), (Wrapper(a), Wrapper(b)));
        assert_eq!(
            s.handles,
            vec![hs(2, 1, Active(0), None), hs(2, 1, Active(1), None)]
        );
        run(&mut m, "drop v3; drop v2");
        let s = st(&m);
        assert_eq!(
            s.handles,
            vec![hs(1, 1, Inactive(0), None), hs(1, 1, Inactive(1), None)]
        );
        assert_eq!(s.wrappers, vec![live(0, None), live(0, None)]);
    }
}

// ---- §6 teardown ------------------------------------------------------------

#[test]
fn clear_all_fields_breaks_native_cycles() {
    let mut m = model("new v0; new v1; set v0 v1; set v1 v0; drop v0; drop v1");
    let s = st(&m);
    assert_eq!(
        s.handles,
        vec![
            hs(1, 1, Inactive(0), Some(1)),
            hs(1, 1, Inactive(1), Some(0))
        ]
    );
    m.clear_all_fields();
    check_invariants(&m);
    let s = st(&m);
    // h0's field release killed h1, which released h0: both gone; h1 was
    // dead at its turn and skipped.
    assert_eq!(s.handles, vec![FREED_H, FREED_H]);
    assert_eq!(s.wrappers, vec![FREED_W, FREED_W]);
    assert_eq!(s.totals, totals(0, 0, 0, 0));
}

#[test]
fn teardown_ends_in_empty_world() {
    let script = "
        new v0; new v1 dict; new v2 untied; new v3
        set v0 v1; set v1 v0; set v2 v3; set v3 v3
        hold h0 v0; weak w0 v1; weak w1 v3; move h1 v3
        echo v4 v1; clone v5 v2; cycle v5; get v6 v2
        drop v1; drop v4; shutdown; new v7; set v7 v7; drop v7; drop v0
    ";
    for design in [Design::S, Design::U] {
        let mut m = Model::new(design);
        run(&mut m, script);
        assert_eq!(st(&m).totals, totals(5, 5, 5, 0));
        teardown(&mut m);
        let s = st(&m);
        assert_eq!(s.vars, [Empty; VARS]);
        assert_eq!(s.holders, [None; HOLDERS]);
        assert_eq!(s.weaks, [None; WEAKS]);
        assert!(s.handles.all().all(|h| *h == FREED_H));
        assert_eq!((s.totals.live_handles, s.totals.live_blocks), (0, 0));
        assert_eq!(s.totals.live_wrappers, 0);
        // Handles 0 and 4 were kept Inactive and freed after shutdown: leaked.
        assert_eq!(s.totals.leaked_wrappers, 2);
        m.reclaim_leaked();
        assert_eq!(st(&m).totals, totals(0, 0, 0, 0));
        assert!(st(&m).wrappers.all().all(|w| *w == FREED_W));
    }
}

#[test]
fn reset_returns_to_empty_world() {
    let mut m = model("new v0; hold h0 v0; weak w0 v0; cycle v0; shutdown");
    m.reset();
    assert_eq!(st(&m), AbstractState::default());
    // Numbering from 0 and the shutdown flag off.
    run(&mut m, "new v0; hold h0 v0; drop v0; release h0");
    assert_eq!(st(&m).wrappers, vec![FREED_W]);
    assert_eq!(m.design(), Design::S);
}

#[test]
fn observe_reuses_its_vectors() {
    let m = model("new v0; new v1; new v2; drop v1");
    let mut s = AbstractState::default();
    m.observe(&mut s);
    let (hp, wp) = (s.handles.as_ptr(), s.wrappers.as_ptr());
    m.observe(&mut s);
    assert_eq!((s.handles.as_ptr(), s.wrappers.as_ptr()), (hp, wp));
    assert_eq!(s, st(&m));
}

// ---- random programs --------------------------------------------------------

/// Operand bytes reduced to every slot's full range.
fn reduce(k: StepKind, mut a: [u8; 2]) -> [u8; 2] {
    use crate::program::Sort;
    for (b, sort) in a.iter_mut().zip(k.operands()) {
        *b %= match sort {
            Sort::Var => VARS as u8,
            Sort::Holder => HOLDERS as u8,
            Sort::Weak => WEAKS as u8,
            Sort::Kind | Sort::Count => sort.fixed_range().unwrap_or(1),
        };
    }
    a
}

/// Deterministic random programs over every step kind: the invariants hold
/// after every step, and teardown leaves only leaked wrappers.
#[test]
fn random_programs_keep_invariants_and_tear_down_clean() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: usize| -> u8 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) % n as u64) as u8
    };
    for design in [Design::S, Design::U] {
        let mut m = Model::new(design);
        for _ in 0..400 {
            m.reset();
            for _ in 0..60 {
                let k = StepKind::ALL[next(StepKind::COUNT) as usize];
                let a = [next(256), next(256)];
                let mut op = Op::from_operand_bytes(k, reduce(k, a));
                // Rare, so that most programs run without the flag.
                if k == StepKind::Shutdown && next(4) != 0 {
                    op = Op::Collect;
                }
                m.apply(&op);
                check_invariants(&m);
            }
            let shut = m.shutdown;
            teardown(&mut m);
            let t = st(&m).totals;
            assert_eq!((t.live_handles, t.live_blocks, t.live_wrappers), (0, 0, 0));
            if !shut {
                assert_eq!(t.leaked_wrappers, 0);
            }
            m.reclaim_leaked();
            // `finalized` counts what the program's finalizers did.
            let t = st(&m).totals;
            assert_eq!(Totals { finalized: 0, ..t }, Totals::default());
        }
    }
}

#[test]
fn without_tying_every_object_is_untied() {
    let mut m = Model::new(Design::S).without_tying();
    assert!(!m.tying());
    for op in crate::program::text::parse(
        "new v0\nnew v1 dict\necho v2 v0\nhold h0 v0\ndrop v0\nret v3 h0",
    )
    .unwrap()
    .ops
    {
        m.apply(&op);
    }
    let mut s = AbstractState::default();
    m.observe(&mut s);
    assert_eq!(s.handles[0].binding, Binding::Untied);
    assert_eq!(s.handles[1].binding, Binding::Untied);
    // echo and ret give fresh wrappers, each owning its +1.
    assert_eq!(s.vars[2], VarState::Wrapper(2));
    assert_eq!(s.vars[3], VarState::Wrapper(3));
    assert_eq!(s.handles[0].strong, 3, "v2's wrapper, h0, v3's wrapper");
}

// ---- transitions: the model says which edge each step takes -------------------

fn edges(m: &Model) -> Vec<(crate::model::transition::Edge, u32, bool)> {
    m.transitions()
        .iter()
        .map(|t| (t.edge, t.handle, t.cause.cascade))
        .collect()
}

#[test]
fn each_step_reports_the_transitions_it_takes() {
    use crate::model::transition::Edge::*;
    let mut m = Model::new(Design::S);
    m.apply(&parse("new v0"));
    assert_eq!(edges(&m), [(Attach, 0, false)]);
    m.apply(&parse("hold h0 v0"));
    assert_eq!(edges(&m), []);
    m.apply(&parse("drop v0"));
    assert_eq!(edges(&m), [(Deactivate, 0, false)]);
    m.apply(&parse("ret v1 h0"));
    assert_eq!(edges(&m), [(Revive, 0, false)]);
    m.apply(&parse("ret v2 h0"));
    assert_eq!(edges(&m), [(ReturnActive, 0, false)]);
    // On a foreign thread: obj#1 (cached, held by h1 alone) dies and its
    // wrapper is reclaimed; obj#0 in its field lives on in h0.
    run(
        &mut m,
        "new v3; set v3 v1; drop v1; drop v2; hold h1 v3; drop v3",
    );
    m.apply(&parse("release_foreign h1"));
    let t = m.transitions();
    assert_eq!(edges(&m), [(Reclaim, 1, false)], "{t:?}");
    assert!(
        t.iter()
            .all(|t| t.cause.foreign() && !t.cause.after_shutdown)
    );
    m.apply(&parse("release h0"));
    assert_eq!(edges(&m), [(Reclaim, 0, false)]);
}

#[test]
fn cascades_and_teardown_are_told_apart() {
    use crate::model::transition::Edge::*;
    let mut m = Model::new(Design::S);
    run(
        &mut m,
        "new v0; new v1; set v0 v1; drop v1; hold h0 v0; drop v0",
    );
    m.apply(&parse("release h0"));
    // obj#0 dies (its cached wrapper reclaimed), then obj#1, cached while
    // the field held it, by cascade.
    assert_eq!(edges(&m), [(Reclaim, 0, false), (Reclaim, 1, true)]);
    assert!(
        m.transitions()
            .iter()
            .all(|t| t.cause.step == Some(StepKind::Release))
    );
    run(&mut m, "new v2; shutdown");
    m.clear_all_fields();
    m.apply(&parse("drop v2"));
    let t = m.transitions();
    assert_eq!(edges(&m), [(DropLast, 2, false), (FreeDetached, 2, false)]);
    assert!(
        t.iter()
            .all(|t| t.cause.step.is_none() && t.cause.after_shutdown)
    );
}

// ---- object kinds (contract §2.2) --------------------------------------------

/// The observed states of `script` after every step, in both designs.
fn trace(script: &str) -> Vec<AbstractState> {
    let mut out = Vec::new();
    for design in [Design::S, Design::U] {
        let mut m = Model::new(design);
        for line in script.split([';', '\n']).map(str::trim) {
            if !line.is_empty() {
                m.apply(&parse(line));
                check_invariants(&m);
                let mut s = st(&m);
                // A `del` object's finalizer runs where a `dict` object has
                // none: the one count in which the two kinds differ.
                s.totals.finalized = 0;
                out.push(s);
            }
        }
    }
    out
}

/// Every kind but `sub` and `fragile` (R20, tested below) is, to the
/// model, the classic kind of its class:
/// the same states after every step of a program that caches, revives,
/// detaches, holds weakly and cascades through the field.
#[test]
fn each_new_kind_behaves_as_its_classic_kind() {
    use crate::program::ObjKind;
    let program = |k: &str| {
        format!(
            "new v0 {k}; new v1; set v0 v1; hold h0 v0; weak w0 v0; drop v0; ret v2 h0; \
             get v3 v2; drop v2; lock v4 w0; drop v4; release h0; drop v1; drop v3; unweak w0"
        )
    };
    for k in ObjKind::ALL {
        let classic = match k {
            ObjKind::Sub | ObjKind::Fragile => continue,
            k if !k.is_tied() => k,
            k if k.is_eligible() => ObjKind::Plain,
            _ => ObjKind::Dict,
        };
        assert_eq!(
            trace(&program(k.name())),
            trace(&program(classic.name())),
            "{} against {}",
            k.name(),
            classic.name()
        );
    }
}

/// `sub`: the wrapper `new` makes is never cached (Detached at its drop);
/// a later return makes a wrapper of the object's registered type, which
/// is cached and revived.
#[test]
fn a_sub_objects_first_wrapper_is_ineligible_and_later_ones_are_not() {
    for design in [Design::S, Design::U] {
        let mut m = Model::new(design);
        run(&mut m, "new v0 sub; hold h0 v0; drop v0");
        assert_eq!(st(&m).handles[0].binding, Binding::Detached);
        run(&mut m, "ret v1 h0; drop v1");
        assert_eq!(st(&m).handles[0].binding, Binding::Inactive(1));
        run(&mut m, "ret v2 h0");
        assert_eq!(st(&m).vars[2], VarState::Wrapper(1), "revived");
        // A `dict` object's wrappers are never cached, first or later.
        run(
            &mut m,
            "new v3 dict; hold h1 v3; drop v3; ret v4 h1; drop v4",
        );
        assert_eq!(st(&m).handles[1].binding, Binding::Detached);
    }
}

/// `del`: every genuine free of one of its wrappers runs its `__del__`
/// once (counted), a moved-from one's too; other kinds count nothing.
#[test]
fn a_del_objects_wrappers_run_their_finalizer_at_each_free() {
    for design in [Design::S, Design::U] {
        let mut m = Model::new(design);
        run(&mut m, "new v0 del; hold h0 v0; drop v0");
        assert_eq!(st(&m).totals.finalized, 1, "the first wrapper");
        run(&mut m, "ret v1 h0; clone v2 v1; drop v1");
        assert_eq!(st(&m).totals.finalized, 1, "v2 still holds it");
        run(&mut m, "drop v2; ret v3 h0; move h1 v3; drop v3");
        assert_eq!(st(&m).totals.finalized, 3, "the moved-from one too");
        run(&mut m, "new v4; hold h2 v4; drop v4; new v5 dict; drop v5");
        assert_eq!(st(&m).totals.finalized, 3, "no finalizer elsewhere");
    }
}

// ---- pickle, pyweak, finalize (R14-R16) --------------------------------------

#[test]
fn pickle_copies_a_chain_through_temporary_wrappers() {
    // plain -> list -> plain: the list part went through a temporary
    // wrapper (its parent is built by Python): Inactive; the plain part
    // under the list never had one: Detached. Root Active in v1.
    let m = model_u(
        "new v0; new v2 list; set v0 v2; new v3; set v2 v3; drop v2; drop v3; pickle v1 v0",
    );
    let s = st(&m);
    assert_eq!(s.handles.len(), 6);
    let (root, list, part) = (s.handles[3], s.handles[4], s.handles[5]);
    assert!(matches!(root.binding, Binding::Active(_)), "{root:?}");
    assert_eq!((root.strong, root.field), (1, Some(4)));
    assert!(matches!(list.binding, Binding::Inactive(_)), "{list:?}");
    assert_eq!((list.strong, list.field), (1, Some(5)));
    assert_eq!((part.strong, part.binding), (1, Binding::Detached));
    assert_eq!(
        s.vars[1],
        VarState::Wrapper(match root.binding {
            Binding::Active(w) => w,
            _ => unreachable!(),
        })
    );
}

#[test]
fn pickle_of_a_cycle_is_an_error_and_of_a_moved_wrapper_a_moved_copy() {
    let mut m = model("new v0; new v1; set v0 v1; set v1 v0");
    let before = st(&m);
    assert_eq!(run(&mut m, "pickle v2 v0"), StepResult::Cyclic);
    let after = st(&m);
    assert_eq!(after.handles, before.handles);
    assert_eq!(after.vars[2], VarState::Empty);
    let m = model("new v0; move h0 v0; pickle v1 v0");
    assert!(matches!(st(&m).vars[1], VarState::Moved(_)));
    assert_ne!(st(&m).vars[1], st(&m).vars[0]);
}

#[test]
fn pyweak_needs_a_weakref_slot() {
    let mut m = model("new v0; new v1 weakref");
    assert_eq!(run(&mut m, "pyweak v0"), StepResult::NoWeakref);
    assert_eq!(run(&mut m, "pyweak v1"), StepResult::Ok);
    assert_eq!(run(&mut m, "pyweak v2"), StepResult::Ok);
}

#[test]
fn finalize_drops_the_vars_in_order_and_then_only_releases_act() {
    // R11's order dependence, at module teardown: v0 is dropped first, so
    // its wrapper settles Inactive under v1's object's field (which still
    // keeps it), then v1's death orphans it: cached while the weak ref
    // holds the storage.
    let mut m = model("new v1; new v0; set v1 v0; weak w0 v0; hold h0 v1; finalize");
    assert!(m.ended());
    let s = st(&m);
    assert!(s.vars.iter().all(|v| *v == VarState::Empty));
    assert!(matches!(s.handles[1].binding, Binding::Inactive(_)));
    // Steps that need Python do nothing now; the releases act.
    let before = st(&m);
    run(&mut m, "new v2; get v3 v0; shutdown; finalize; collect");
    assert_eq!(st(&m).handles, before.handles);
    run(&mut m, "release h0");
    let s = st(&m);
    assert!(!s.handles[0].alive());
    // obj#1 died with its cached wrapper, which the weak ref keeps.
    assert!(matches!(s.handles[1].binding, Binding::Inactive(_)));
    run(&mut m, "unweak w0");
    // Both cached wrappers leaked after the flag: obj#0's at its release
    // (h0 kept it, so module teardown cached its wrapper), obj#1's now.
    assert_eq!(st(&m).totals.leaked_wrappers, 2, "after the flag: leaked");
}

// ---- R20: a wrapper type whose construction raises (`fragile`) ------------

#[test]
fn fragile_constructor_binds_and_an_active_return_constructs_nothing() {
    let mut m = model("new v0 fragile; hold h0 v0");
    let w = st(&m).vars[0];
    assert_eq!(run(&mut m, "ret v1 h0"), StepResult::Ok);
    assert_eq!(run(&mut m, "echo v2 v0"), StepResult::Ok);
    let s = st(&m);
    assert_eq!((s.vars[1], s.vars[2]), (w, w));
    assert_eq!(s.handles[0].strong, 2, "v0's wrapper and h0");
}

#[test]
fn fragile_detached_return_is_refused_and_releases_its_ref() {
    let mut m = model("new v0 fragile; hold h0 v0; new v1; set v1 v0; move h1 v0");
    // obj#0 Detached (moved), held by h0, h1 and v1's field.
    let before = st(&m);
    assert_eq!(before.handles[0].binding, Binding::Detached);
    for step in ["ret v2 h0", "get v2 v1", "call v2 h0", "call_raise h0"] {
        assert_eq!(run(&mut m, step), StepResult::Refused, "{step}");
        let s = st(&m);
        assert_eq!(s.handles, before.handles, "{step}: counts unchanged");
        assert_eq!(s.vars[2], VarState::Empty, "{step}: no assignment");
    }
    // A moved reference is given away and released with the error.
    assert_eq!(run(&mut m, "call_move v2 h1"), StepResult::Refused);
    let s = st(&m);
    assert_eq!(s.holders[1], None);
    assert_eq!(s.handles[0].strong, before.handles[0].strong - 1);
}

#[test]
fn fragile_revival_is_refused_under_u_and_frees_the_cached_wrapper() {
    let script = "new v0 fragile; hold h0 v0; drop v0";
    let mut u = model_u(script);
    let Binding::Inactive(w) = st(&u).handles[0].binding else {
        panic!("eligible: cached");
    };
    assert_eq!(run(&mut u, "ret v1 h0"), StepResult::Refused);
    let s = st(&u);
    assert_eq!(
        s.handles[0].binding,
        Binding::Detached,
        "not a dangling Inactive"
    );
    assert_eq!(s.handles[0].strong, 1, "the +1 released");
    assert_eq!(s.wrappers[w as usize], WrapperState::FREED);
    assert_eq!(s.vars[1], VarState::Empty);
    // Under S the revival resurrects the same wrapper: nothing constructed.
    let mut m = model(script);
    assert_eq!(run(&mut m, "ret v1 h0"), StepResult::Ok);
    assert_eq!(st(&m).vars[1], VarState::Wrapper(w));
}

#[test]
fn fragile_with_tying_off_refuses_every_return_but_the_constructor() {
    let mut m = Model::new(Design::U).without_tying();
    run(&mut m, "new v0 fragile; hold h0 v0");
    assert!(matches!(st(&m).vars[0], VarState::Wrapper(_)));
    assert_eq!(run(&mut m, "echo v1 v0"), StepResult::Refused);
    assert_eq!(run(&mut m, "ret v1 h0"), StepResult::Refused);
    assert_eq!(st(&m).handles[0].strong, 2);
}

#[test]
fn fragile_pickle_is_refused_at_its_root_or_a_python_built_parent() {
    for (script, step) in [
        ("new v0 fragile", "pickle v1 v0"),
        ("new v0 fragile; move h0 v0", "pickle v1 v0"),
        ("new v0; new v2 fragile; set v0 v2", "pickle v1 v0"),
    ] {
        let mut m = model(script);
        let before = st(&m);
        assert_eq!(run(&mut m, step), StepResult::Refused, "{script}");
        let after = st(&m);
        assert_eq!(after.handles, before.handles, "{script}: no copy left");
        assert_eq!(after.wrappers, before.wrappers, "{script}");
    }
    // A C++-built parent stores its part without a return.
    let mut m = model("new v0 list; new v2 fragile; set v0 v2");
    assert_eq!(run(&mut m, "pickle v1 v0"), StepResult::Ok);
}

#[test]
fn fragile_value_stored_through_a_python_setter_is_refused_with_tying_off() {
    let mut m = Model::new(Design::S).without_tying();
    run(&mut m, "new v0; new v1 list; new v2 fragile");
    assert_eq!(run(&mut m, "set v0 v2"), StepResult::Refused);
    assert_eq!(st(&m).handles[0].field, None);
    assert_eq!(
        run(&mut m, "set v1 v2"),
        StepResult::Ok,
        "a container stores it in C++"
    );
    // With tying on the value's wrapper is Active: nothing constructed.
    let mut m = model("new v0; new v2 fragile");
    assert_eq!(run(&mut m, "set v0 v2"), StepResult::Ok);
}
