//! The invariant checker (I1 to I5 and reference accounting) must accept
//! consistent states and name the invariant a corrupted state breaks.

use pytie_core::exec::invariants::{Scratch, check};
use pytie_core::model::{Design, Model};
use pytie_core::program::text::parse;
use pytie_core::state::{AbstractState, Binding, WrapperLife};

/// A consistent state: obj#0 held by h0, its wrapper wr#0 Inactive; obj#1
/// Active in v1 with obj#0 in its field; a weak ref on obj#1.
fn state() -> AbstractState {
    let mut m = Model::new(Design::S);
    let p = parse("new v0\nhold h0 v0\nnew v1\nset v1 v0\ndrop v0\nweak w0 v1\n").unwrap();
    for op in &p.ops {
        m.apply(op);
    }
    let mut s = AbstractState::default();
    m.observe(&mut s);
    assert_eq!(s.handles[0].binding, Binding::Inactive(0));
    s
}

fn broken(s: &AbstractState) -> String {
    check(s, &[], &mut Scratch::default()).expect_err("the corruption must be caught")
}

#[test]
fn a_consistent_state_passes() {
    assert_eq!(check(&state(), &[], &mut Scratch::default()), Ok(()));
}

#[test]
fn i1_a_wrapper_without_python_refs_still_owning_a_strong_ref() {
    let mut s = state();
    s.vars[1] = Default::default();
    assert!(
        broken(&s).contains("I1: wr#1's last Python reference is gone"),
        "{}",
        broken(&s)
    );
}

#[test]
fn i2_wrapper_memory_kept_for_no_storage() {
    let mut s = state();
    s.handles[0].binding = Binding::Detached;
    assert!(broken(&s).contains("I2: wr#0"), "{}", broken(&s));
}

#[test]
fn i3_a_chandle_to_a_dead_handle() {
    let mut s = state();
    s.handles[1].strong = 0;
    assert!(
        broken(&s).contains("I3: wr#1.chandle points to obj#1, which is dead"),
        "{}",
        broken(&s)
    );
}

#[test]
fn i4_strong_and_weak_counts_are_conserved() {
    let mut s = state();
    s.handles[0].strong += 1;
    assert!(
        broken(&s).contains("I4: obj#0 has strong 3"),
        "{}",
        broken(&s)
    );
    let mut s = state();
    s.handles[1].weak = 1;
    assert!(
        broken(&s).contains("I4: obj#1 has weak 1"),
        "{}",
        broken(&s)
    );
}

#[test]
fn i5_bindings_match_wrappers() {
    let mut s = state();
    s.handles[0].binding = Binding::Active(0);
    assert!(
        broken(&s).contains("I5: obj#0 is Active(wr#0)"),
        "{}",
        broken(&s)
    );
    let mut s = state();
    s.wrappers[0].life = WrapperLife::Freed;
    assert!(
        broken(&s).contains("I5: obj#0 is Inactive(wr#0) but wr#0 is Freed"),
        "{}",
        broken(&s)
    );
    let mut s = state();
    s.handles[1].binding = Binding::Inactive(0);
    assert!(
        broken(&s).contains("canonical for 2 handles"),
        "{}",
        broken(&s)
    );
}

#[test]
fn python_references_are_accounted_for() {
    let mut s = state();
    s.wrappers[1].refs = 2;
    assert!(
        broken(&s).contains("wr#1 has 2 Python references but the program holds 1"),
        "{}",
        broken(&s)
    );
    // A cycle holding wr#1 accounts for a second reference.
    assert_eq!(check(&s, &[1], &mut Scratch::default()), Ok(()));
}

#[test]
fn reports_mask_heap_addresses_unless_full() {
    use pytie_core::exec::report::mask_addresses;
    assert_eq!(
        mask_addresses(
            "wr#1 in v0 moved from address 0x7f3a9c012340 to 0x7f3a9c0ab120: id() changed"
        ),
        "wr#1 in v0 moved from address 0x… to 0x…: id() changed"
    );
    // Short hex (a count, a flag) and hex inside a word stay.
    assert_eq!(
        mask_addresses("flags 0x3, id0x1234567"),
        "flags 0x3, id0x1234567"
    );
    assert_eq!(mask_addresses("no address"), "no address");
}
