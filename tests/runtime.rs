//! The runtime (native layer + design-S wrapper layer) on real CPython
//! objects: one test per row of the transition table of contract §3, one
//! per invariant, and the situations issue 2 lists. Every test ends by
//! checking that nothing is left alive and nothing leaked.

use pyo3::prelude::*;
use pytie::native::release_on_foreign_thread;
use pytie::wrapper as w;
use pytie_core::program::ObjKind;
use pytie_core::state::{AbstractState, Binding, HandleState, WrapperLife, WrapperState};

/// Run `f` in a fresh world; afterwards collect cycles and require an
/// empty world and no runtime assertion failures.
fn world(f: impl FnOnce(Python<'_>)) {
    let _g = pytie::interp::exclusive();
    Python::attach(|py| {
        w::init(py).unwrap();
        w::reset().expect("the world is empty at the start");
        f(py);
        w::collect(py).unwrap();
        assert_eq!(w::leftovers(), None, "something is still allocated");
        assert_eq!(w::take_violations(), Vec::<String>::new());
        w::reset().unwrap();
    });
}

fn snap(py: Python<'_>) -> AbstractState {
    let mut s = AbstractState::default();
    w::observe(py, &mut s);
    s
}

fn handle(py: Python<'_>, i: usize) -> HandleState {
    snap(py).handles[i]
}

fn wrapper(py: Python<'_>, i: usize) -> WrapperState {
    snap(py).wrappers[i]
}

fn addr(o: &Bound<'_, PyAny>) -> usize {
    w::info(o).expect("a wrapper").addr
}

fn serial(o: &Bound<'_, PyAny>) -> u32 {
    w::info(o).expect("a wrapper").serial
}

fn new(py: Python<'_>) -> Bound<'_, PyAny> {
    w::new_object(py, ObjKind::Plain).unwrap()
}

// ---- §3 transition table, one test per row ---------------------------------

#[test]
fn row_make_ret_detached_to_active_attaches_a_fresh_wrapper() {
    world(|py| {
        let a = new(py);
        let h = handle(py, 0);
        assert_eq!(
            h.binding,
            Binding::Active(0),
            "a fresh wrapper must be attached"
        );
        assert_eq!(
            (h.strong, h.weak),
            (1, 1),
            "the wrapper took the caller's +1"
        );
        assert_eq!(wrapper(py, 0).chandle, Some(0));
        drop(a);
    });
}

#[test]
fn row_make_ret_active_returns_the_same_wrapper_and_drops_the_redundant_ref() {
    world(|py| {
        let a = new(py);
        let holder = w::handle_of(&a).unwrap();
        assert_eq!(handle(py, 0).strong, 2);
        let b = w::return_handle(py, holder.clone_ref()).unwrap();
        assert!(a.is(&b), "a return of an Active handle is its wrapper");
        assert_eq!(handle(py, 0).strong, 2, "the caller's +1 was released");
        assert_eq!(wrapper(py, 0).refs, 2);
        drop((a, b, holder));
    });
}

#[test]
fn row_make_ret_inactive_revives_at_the_same_address() {
    world(|py| {
        let a = new(py);
        let (at, n) = (addr(&a), serial(&a));
        let holder = w::handle_of(&a).unwrap();
        drop(a);
        assert_eq!(handle(py, 0).binding, Binding::Inactive(0));
        let b = w::return_handle(py, holder.clone_ref()).unwrap();
        assert_eq!((addr(&b), serial(&b)), (at, n), "same memory, same wrapper");
        let h = handle(py, 0);
        assert_eq!(h.binding, Binding::Active(0));
        assert_eq!(h.strong, 2, "the revived wrapper took the caller's +1");
        assert_eq!(
            wrapper(py, 0).refs,
            1,
            "the phantom ref became the caller's"
        );
        drop((b, holder));
    });
}

#[test]
fn row_drop_with_another_owner_goes_inactive_and_keeps_memory() {
    world(|py| {
        let a = new(py);
        let holder = w::handle_of(&a).unwrap();
        drop(a);
        let s = snap(py);
        assert_eq!(s.handles[0].binding, Binding::Inactive(0));
        assert_eq!(s.handles[0].strong, 1, "the wrapper released its +1");
        assert_eq!(
            s.wrappers[0],
            WrapperState {
                life: WrapperLife::Live,
                refs: 0,
                chandle: None,
                tracked: false,
            }
        );
        assert_eq!(s.totals.live_wrappers, 1, "memory kept for the handle");
        drop(holder);
    });
}

#[test]
fn row_drop_of_the_last_strong_ref_detaches_and_frees_everything() {
    world(|py| {
        let a = new(py);
        drop(a);
        let s = snap(py);
        assert_eq!(s.handles[0], HandleState::FREED);
        assert_eq!(s.wrappers[0], WrapperState::FREED);
        assert_eq!(
            (
                s.totals.live_handles,
                s.totals.live_blocks,
                s.totals.live_wrappers
            ),
            (0, 0, 0)
        );
    });
}

#[test]
fn row_drop_of_an_ineligible_wrapper_detaches_even_with_other_owners() {
    world(|py| {
        let a = w::new_object(py, ObjKind::Dict).unwrap();
        let holder = w::handle_of(&a).unwrap();
        drop(a);
        let s = snap(py);
        assert_eq!(
            s.handles[0].binding,
            Binding::Detached,
            "dict wrappers are never cached"
        );
        assert_eq!(s.handles[0].strong, 1);
        assert_eq!(s.wrappers[0].life, WrapperLife::Freed);
        let b = w::return_handle(py, holder.clone_ref()).unwrap();
        assert_eq!(serial(&b), 1, "a fresh wrapper");
        drop((b, holder));
    });
}

#[test]
fn row_move_detaches_before_nulling_and_leaves_an_empty_wrapper() {
    world(|py| {
        let a = new(py);
        let holder = w::move_out(&a).unwrap();
        let s = snap(py);
        assert_eq!(s.handles[0].binding, Binding::Detached);
        assert_eq!(
            s.handles[0].strong, 1,
            "the wrapper's +1 went to the receiver"
        );
        assert_eq!(s.wrappers[0].chandle, None);
        assert_eq!(
            s.wrappers[0].life,
            WrapperLife::Live,
            "the wrapper stays alive, empty"
        );
        assert!(w::info(&a).unwrap().moved);
        drop(a);
        assert_eq!(handle(py, 0).strong, 1, "a moved-from wrapper owes nothing");
        drop(holder);
    });
}

#[test]
fn row_storage_freed_while_inactive_reclaims_the_wrapper() {
    world(|py| {
        let a = new(py);
        let holder = w::handle_of(&a).unwrap();
        drop(a);
        assert_eq!(snap(py).totals.live_wrappers, 1);
        drop(holder);
        let s = snap(py);
        assert_eq!(s.handles[0], HandleState::FREED);
        assert_eq!(
            s.wrappers[0],
            WrapperState::FREED,
            "reclaimed with the storage"
        );
    });
}

#[test]
fn row_storage_freed_while_detached_frees_the_block() {
    world(|py| {
        let a = new(py);
        let holder = w::move_out(&a).unwrap();
        drop(a);
        assert_eq!(handle(py, 0).binding, Binding::Detached);
        drop(holder);
        assert_eq!(handle(py, 0), HandleState::FREED);
    });
}

#[test]
fn row_untied_objects_always_give_fresh_wrappers() {
    world(|py| {
        let a = w::new_object(py, ObjKind::Untied).unwrap();
        let holder = w::handle_of(&a).unwrap();
        assert_eq!(handle(py, 0).binding, Binding::Untied);
        let b = w::return_handle(py, holder.clone_ref()).unwrap();
        let c = w::echo(&a).unwrap();
        assert!(
            !a.is(&b) && !a.is(&c) && !b.is(&c),
            "untied objects never bind"
        );
        assert_eq!(handle(py, 0).strong, 4, "each wrapper owns its +1");
        drop((a, b, c));
        assert_eq!(
            snap(py).totals.live_wrappers,
            0,
            "untied wrappers are freed on drop"
        );
        drop(holder);
    });
}

// ---- invariants, one test each ---------------------------------------------

#[test]
fn invariant_i1_the_last_python_ref_releases_the_strong_ref() {
    world(|py| {
        let a = new(py);
        let b = a.clone();
        let holder = w::handle_of(&a).unwrap();
        drop(a);
        assert_eq!(
            handle(py, 0).strong,
            2,
            "a Python ref remains: W keeps its +1"
        );
        drop(b);
        assert_eq!(
            handle(py, 0).strong,
            1,
            "the last Python ref released W's +1"
        );
        assert_eq!(wrapper(py, 0).chandle, None);
        drop(holder);
    });
}

#[test]
fn invariant_i2_no_wrapper_memory_outlives_its_storage() {
    world(|py| {
        let objs: Vec<_> = (0..4).map(|_| new(py)).collect();
        let holders: Vec<_> = objs.iter().map(|o| w::handle_of(o).unwrap()).collect();
        drop(objs);
        assert_eq!(snap(py).totals.live_wrappers, 4, "four Inactive wrappers");
        for (i, h) in holders.into_iter().enumerate() {
            drop(h);
            assert_eq!(
                snap(py).totals.live_wrappers,
                3 - i as u32,
                "each storage free reclaims"
            );
        }
    });
}

#[test]
fn invariant_i3_a_set_chandle_points_to_a_live_handle_it_owns() {
    world(|py| {
        let a = new(py);
        let b = new(py);
        w::set_x(&a, &b).unwrap();
        drop(b);
        let x = w::get_x(&a).unwrap();
        let s = snap(py);
        for ws in s.wrappers.all().filter(|w| w.life == WrapperLife::Live) {
            if let Some(h) = ws.chandle {
                assert!(
                    s.handles[h as usize].strong > 0,
                    "I3: chandle to a dead handle"
                );
            }
        }
        assert_eq!(s.handles[1].strong, 2, "field + wrapper");
        drop((a, x));
    });
}

#[test]
fn invariant_i4_counts_are_conserved() {
    world(|py| {
        let a = new(py);
        let b = new(py);
        w::set_x(&a, &b).unwrap();
        let h0 = w::handle_of(&b).unwrap();
        let weak = w::weak_of(&b).unwrap();
        // b: wrapper + field of a + holder = 3 strong; weak slot + 1 = 2.
        let hs = handle(py, 1);
        assert_eq!((hs.strong, hs.weak), (3, 2));
        drop(b);
        let hs = handle(py, 1);
        assert_eq!(
            (hs.strong, hs.weak),
            (2, 2),
            "the wrapper's ref went; Inactive"
        );
        w::set_x(&a, &py.None().into_bound(py)).unwrap();
        assert_eq!(handle(py, 1).strong, 1);
        drop((h0, weak, a));
    });
}

#[test]
fn invariant_i5_bindings_are_consistent() {
    world(|py| {
        let objs: Vec<_> = (0..3).map(|_| new(py)).collect();
        let holders: Vec<_> = objs.iter().map(|o| w::handle_of(o).unwrap()).collect();
        drop(objs);
        let back: Vec<_> = holders
            .iter()
            .map(|h| w::return_handle(py, h.clone_ref()).unwrap())
            .collect();
        let s = snap(py);
        for (i, h) in s.handles.all().enumerate() {
            let Binding::Active(n) = h.binding else {
                panic!("obj#{i} not Active")
            };
            assert_eq!(n as usize, i, "each handle has its own wrapper");
            assert_eq!(s.wrappers[n as usize].chandle, Some(i as u32));
        }
        drop((back, holders));
    });
}

// ---- situations issue 2 lists ------------------------------------------------

#[test]
fn attribute_identity_a_x_is_a_x() {
    world(|py| {
        let a = new(py);
        let b = new(py);
        w::set_x(&a, &b).unwrap();
        let x1 = w::get_x(&a).unwrap();
        let x2 = w::get_x(&a).unwrap();
        assert!(x1.is(&x2) && x1.is(&b));
        drop((x1, x2, b));
        let x3 = w::get_x(&a).unwrap();
        let x4 = w::get_x(&a).unwrap();
        assert!(x3.is(&x4));
        drop((a, x3, x4));
    });
}

#[test]
fn ffi_function_returning_its_argument_gives_it_back() {
    world(|py| {
        let a = new(py);
        let b = w::echo(&a).unwrap();
        assert!(a.is(&b), "f(x) is x");
        assert_eq!(handle(py, 0).strong, 1, "the returned +1 was released");
        drop((a, b));
    });
}

#[test]
fn one_address_across_a_thousand_drop_refetch_generations() {
    world(|py| {
        let a = new(py);
        let at = addr(&a);
        let holder = w::handle_of(&a).unwrap();
        drop(a);
        for g in 0..1000 {
            let b = w::return_handle(py, holder.clone_ref()).unwrap();
            assert_eq!(addr(&b), at, "generation {g} moved the wrapper");
            assert_eq!(serial(&b), 0);
        }
        // Thousands more: the finalizer must run on every generation (PEP 442).
        for _ in 0..5000 {
            drop(w::return_handle(py, holder.clone_ref()).unwrap());
        }
        let s = snap(py);
        assert_eq!(
            (s.handles[0].strong, s.handles[0].binding),
            (1, Binding::Inactive(0))
        );
        assert_eq!(s.wrappers.len(), 1, "one wrapper allocation in all");
        drop(holder);
    });
}

#[test]
fn last_ref_drop_frees_handle_block_and_wrapper() {
    world(|py| {
        let a = new(py);
        let b = new(py);
        w::set_x(&a, &b).unwrap();
        drop(b);
        drop(a);
        let t = snap(py).totals;
        assert_eq!(
            (t.live_handles, t.live_blocks, t.live_wrappers),
            (0, 0, 0),
            "cascade through the field"
        );
    });
}

#[test]
fn handle_dying_while_inactive_reclaims_its_wrapper() {
    world(|py| {
        let a = new(py);
        let b = new(py);
        w::set_x(&a, &b).unwrap();
        drop(b);
        let x = w::get_x(&a).unwrap();
        drop(x);
        assert_eq!(handle(py, 1).binding, Binding::Inactive(1));
        drop(a);
        let s = snap(py);
        assert_eq!(
            s.wrappers[1],
            WrapperState::FREED,
            "reclaimed when the field's release freed it"
        );
    });
}

#[test]
fn move_then_refetch_binds_a_fresh_canonical_wrapper() {
    world(|py| {
        let a = new(py);
        let holder = w::move_out(&a).unwrap();
        let b = w::return_handle(py, holder.clone_ref()).unwrap();
        assert!(!a.is(&b));
        assert_eq!(serial(&b), 1);
        assert_eq!(handle(py, 0).binding, Binding::Active(1));
        let c = w::return_handle(py, holder.clone_ref()).unwrap();
        assert!(b.is(&c), "the new wrapper is canonical");
        drop((a, b, c, holder));
    });
}

#[test]
fn moved_from_wrappers_raise_instead_of_crashing() {
    world(|py| {
        let a = new(py);
        let b = new(py);
        let holder = w::move_out(&a).unwrap();
        for r in [
            w::echo(&a).map(drop),
            w::get_x(&a).map(drop),
            w::set_x(&a, &b),
            w::set_x(&b, &a),
        ] {
            let e = r.expect_err("a moved-from wrapper must raise");
            assert!(w::is_moved(&e, py), "{e}");
        }
        assert!(w::handle_of(&a).is_err() && w::move_out(&a).is_err() && w::weak_of(&a).is_err());
        drop((a, b, holder));
    });
}

#[test]
fn dict_wrappers_keep_identity_while_alive_and_are_freed_on_drop() {
    world(|py| {
        let a = new(py);
        let d = w::new_object(py, ObjKind::Dict).unwrap();
        w::set_x(&a, &d).unwrap();
        let x1 = w::get_x(&a).unwrap();
        assert!(x1.is(&d), "identity while alive");
        d.setattr("note", 1)
            .expect("dict wrappers have an instance __dict__");
        drop((d, x1));
        assert_eq!(
            wrapper(py, 1).life,
            WrapperLife::Freed,
            "freed on drop, never cached"
        );
        let x2 = w::get_x(&a).unwrap();
        assert_eq!(serial(&x2), 2, "a fresh wrapper after the drop");
        assert!(x2.getattr("note").is_err(), "nothing revived");
        drop((a, x2));
    });
}

#[test]
fn last_release_on_a_foreign_thread_reclaims_the_cached_wrapper() {
    world(|py| {
        let a = new(py);
        let holder = w::handle_of(&a).unwrap();
        drop(a);
        assert_eq!(handle(py, 0).binding, Binding::Inactive(0));
        py.detach(move || release_on_foreign_thread(holder));
        let s = snap(py);
        assert_eq!(s.handles[0], HandleState::FREED);
        assert_eq!(
            s.wrappers[0],
            WrapperState::FREED,
            "reclaimed under the GIL it took"
        );
    });
}

#[test]
fn shutdown_then_release_leaks_exactly_one_wrapper_and_frees_the_block() {
    world(|py| {
        let a = new(py);
        let b = new(py);
        let ha = w::handle_of(&a).unwrap();
        let hb = w::handle_of(&b).unwrap();
        drop((a, b));
        w::shutdown();
        let c = w::return_handle(py, hb.clone_ref()).unwrap();
        assert_eq!(serial(&c), 1, "revival still works after the flag");
        drop(ha);
        let s = snap(py);
        assert_eq!(s.totals.leaked_wrappers, 1, "exactly one wrapper leaked");
        assert_eq!(s.wrappers[0].life, WrapperLife::Leaked);
        assert_eq!(s.handles[0], HandleState::FREED, "the block is still freed");
        drop((c, hb));
        w::reclaim_leaked(py);
        assert_eq!(snap(py).totals.leaked_wrappers, 0);
    });
}

#[test]
fn a_weak_ref_outliving_the_strong_refs_then_released() {
    world(|py| {
        let a = new(py);
        let weak = w::weak_of(&a).unwrap();
        let holder = w::handle_of(&a).unwrap();
        drop(a);
        drop(holder);
        let h = handle(py, 0);
        assert_eq!(
            (h.strong, h.weak, h.storage),
            (0, 1, true),
            "storage kept by the weak ref"
        );
        assert_eq!(
            h.binding,
            Binding::Inactive(0),
            "design S: cached until the storage goes"
        );
        assert!(weak.upgrade().is_none(), "a dead object cannot be locked");
        drop(weak);
        let s = snap(py);
        assert_eq!(
            (s.handles[0], s.wrappers[0]),
            (HandleState::FREED, WrapperState::FREED)
        );
    });
}

#[test]
fn weak_upgrade_revives_the_cached_wrapper() {
    world(|py| {
        let a = new(py);
        let at = addr(&a);
        let weak = w::weak_of(&a).unwrap();
        let holder = w::handle_of(&a).unwrap();
        drop(a);
        let b = w::return_handle(py, weak.upgrade().unwrap()).unwrap();
        assert_eq!(addr(&b), at);
        drop((b, holder, weak));
    });
}

#[test]
fn a_wrapper_collected_from_a_reference_cycle_goes_inactive_and_revives_at_its_address() {
    world(|py| {
        let a = new(py);
        let at = addr(&a);
        let holder = w::handle_of(&a).unwrap();
        w::into_cycle(a).unwrap();
        assert_eq!(
            handle(py, 0).binding,
            Binding::Active(0),
            "alive until collected"
        );
        w::collect(py).unwrap();
        assert_eq!(handle(py, 0).binding, Binding::Inactive(0));
        let b = w::return_handle(py, holder.clone_ref()).unwrap();
        assert_eq!(addr(&b), at);
        drop((b, holder));
    });
}

#[test]
fn a_dict_wrapper_in_a_reference_cycle_is_freed_at_collection() {
    world(|py| {
        let d = w::new_object(py, ObjKind::Dict).unwrap();
        d.setattr("me", d.clone()).unwrap();
        let holder = w::handle_of(&d).unwrap();
        drop(d);
        assert_eq!(snap(py).totals.live_wrappers, 1, "kept by its own __dict__");
        w::collect(py).unwrap();
        let s = snap(py);
        assert_eq!(s.wrappers[0].life, WrapperLife::Freed);
        assert_eq!(
            (s.handles[0].strong, s.handles[0].binding),
            (1, Binding::Detached)
        );
        drop(holder);
    });
}

#[test]
fn native_cycles_are_broken_by_clearing_fields() {
    world(|py| {
        let a = new(py);
        let b = new(py);
        w::set_x(&a, &b).unwrap();
        w::set_x(&b, &a).unwrap();
        drop((a, b));
        assert_eq!(
            snap(py).totals.live_handles,
            2,
            "a native cycle keeps both alive"
        );
        w::clear_all_fields(py);
        assert_eq!(snap(py).totals.live_handles, 0);
    });
}

#[test]
fn reset_refuses_a_world_that_is_not_empty() {
    let _g = pytie::interp::exclusive();
    Python::attach(|py| {
        w::init(py).unwrap();
        w::reset().unwrap();
        let a = new(py);
        let err = w::reset().expect_err("a live object is left");
        assert!(err.contains("1 live handles"), "{err}");
        drop(a);
        w::reset().unwrap();
    });
}
