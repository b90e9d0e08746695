//! A read-only snapshot of the real abstract state (contract §5): handles
//! from the native registry, bindings from tag words, wrappers from the
//! wrapper accounts, totals from both. Pointers are followed only when the
//! registries say their memory is allocated; a pointer into freed memory
//! is reported as [`DANGLING`] instead of being read.

use std::sync::atomic::Ordering;

use pyo3::ffi;
use pyo3::prelude::*;

use super::accounts;
use super::tying::{Tag, decode_tag};
use super::types::PyWrapper;
use crate::native::alloc::tag_word_unchecked;
use crate::native::object::Object;
use crate::native::registry;
use pytie_core::state::{AbstractState, Binding, HandleState, Totals, WrapperLife, WrapperState};

pub use pytie_core::state::DANGLING;

/// Fill `out.handles`, `out.wrappers` and `out.totals` (vars, holders,
/// weak slots and the step result are the backend's to fill). Walks the
/// live storage blocks and allocated wrappers only (freed ones are freed
/// for good): the cost is in live objects, not in every object made.
pub fn observe(_py: Python<'_>, out: &mut AbstractState) {
    observe_memory(out);
}

/// [`observe`] after the interpreter has ended (`finalize`): the same
/// reads, of the registries and of memory they say is allocated (a leaked
/// wrapper's memory stays allocated); no Python call.
pub fn observe_after_end(out: &mut AbstractState) {
    observe_memory(out);
}

fn observe_memory(out: &mut AbstractState) {
    out.handles.clear();
    out.wrappers.clear();
    // Reused between observations: no allocation per step once warm.
    ORDER.with_borrow_mut(|order| observe_into(out, order));
}

thread_local! {
    /// (number, address) of the live blocks, then of the allocated
    /// wrappers, sorted by number.
    static ORDER: std::cell::RefCell<Vec<(u32, usize)>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn observe_into(out: &mut AbstractState, order: &mut Vec<(u32, usize)>) {
    order.clear();
    registry::with(|r| {
        accounts::with(|a| {
            let handle_no =
                |p: *mut Object| r.blocks.get(&(p as usize)).copied().unwrap_or(DANGLING);
            let wrapper_no =
                |p: *mut ffi::PyObject| a.by_addr.get(&(p as usize)).copied().unwrap_or(DANGLING);
            out.handles.set_len(r.handles.len());
            order.extend(r.blocks.iter().map(|(&addr, &id)| (id, addr)));
            order.sort_unstable();
            for &(id, _) in order.iter() {
                let h = &r.handles[id as usize];
                if !h.storage {
                    // A block the registry lists but marks freed: no
                    // memory to read.
                    continue;
                }
                let obj = h.addr as *mut Object;
                // SAFETY: the registry says this block is allocated.
                let ((strong, weak), field) =
                    unsafe { ((*obj).counts(), (*obj).field().load(Ordering::Acquire)) };
                let binding = if h.tied {
                    // SAFETY: allocated tied block: its tag word exists.
                    match decode_tag(unsafe { tag_word_unchecked(obj) }.load(Ordering::Acquire)) {
                        Tag::Detached => Binding::Detached,
                        Tag::Active(w) => Binding::Active(wrapper_no(w)),
                        Tag::Inactive(w) => Binding::Inactive(wrapper_no(w)),
                    }
                } else {
                    Binding::Untied
                };
                out.handles.set(
                    id as usize,
                    HandleState {
                        strong,
                        weak,
                        storage: true,
                        binding,
                        field: (!field.is_null()).then(|| handle_no(field)),
                    },
                );
            }
            out.wrappers.set_len(a.slots.len());
            order.clear();
            order.extend(a.by_addr.iter().map(|(&addr, &serial)| (serial, addr)));
            order.sort_unstable();
            for &(serial, _) in order.iter() {
                let s = &a.slots[serial as usize];
                if s.life == WrapperLife::Freed {
                    continue;
                }
                let w = s.addr as *mut ffi::PyObject;
                // SAFETY: the accounts say this wrapper is allocated.
                let (refcnt, chandle, tracked) = unsafe {
                    (
                        ffi::Py_REFCNT(w),
                        (*w.cast::<PyWrapper>()).chandle,
                        ffi::PyObject_GC_IsTracked(w) == 1,
                    )
                };
                // A leaked wrapper's memory is kept by its phantom ref.
                let phantom = isize::from(s.life == WrapperLife::Leaked);
                let refs = (refcnt - phantom).max(0) as u32;
                out.wrappers.set(
                    serial as usize,
                    WrapperState {
                        life: s.life,
                        refs,
                        chandle: (!chandle.is_null()).then(|| handle_no(chandle)),
                        tracked: tracked && refs > 0,
                    },
                );
            }
            out.totals = Totals {
                live_handles: r.live_handles,
                live_blocks: r.live_blocks,
                live_wrappers: a.live,
                leaked_wrappers: a.leaked,
                // Not observed: this runtime's `del` objects are dict ones.
                finalized: 0,
            };
        })
    });
    // An Inactive wrapper's memory is kept by its phantom ref: not the
    // program's.
    let AbstractState {
        handles, wrappers, ..
    } = out;
    for (_, h) in handles.entries() {
        if let Binding::Inactive(w) = h.binding
            && let Some(ws) = wrappers.get_mut(w as usize)
        {
            ws.refs = ws.refs.saturating_sub(1);
            ws.tracked &= ws.refs > 0;
        }
    }
}
