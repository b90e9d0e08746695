//! The abstract state of contract §5: what the reference model predicts and
//! what a backend observes after every step, compared whole.
//!
//! Numbering: handles are numbered in creation order (`new` steps) from 0;
//! wrappers are numbered in creation order of *fresh* wrappers from 0 (a
//! revived wrapper keeps its number). A correct implementation allocates
//! exactly one wrapper per fresh wrapper the model creates, in the same
//! order, so the two numberings coincide; any other wrapper traffic is a
//! divergence.
//!
//! The types are plain data so that a snapshot is refilled in place
//! (`clear` + push into reused vectors): no allocation per step once warm.

use crate::program::{HOLDERS, VARS, WEAKS};

pub type HandleNo = u32;
pub type WrapperNo = u32;

/// Number a backend gives to a handle or wrapper pointer that points to no
/// live allocation (a dangling `chandle`, field or tag word).
pub const DANGLING: u32 = u32::MAX;

/// What a var slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum VarState {
    /// Never assigned, or dropped.
    #[default]
    Empty,
    /// Holds Python's `None`.
    None,
    /// Holds a wrapper whose `chandle` is set.
    Wrapper(WrapperNo),
    /// Holds a moved-from wrapper (`chandle == NULL`).
    Moved(WrapperNo),
}

/// The result of the last step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum StepResult {
    #[default]
    Ok,
    /// The step needed a live wrapper and found a moved-from one.
    Moved,
}

/// The binding of a handle (contract §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Binding {
    /// Untied object: never binds.
    Untied,
    /// Tied, no canonical wrapper (also the binding of a freed handle).
    #[default]
    Detached,
    Active(WrapperNo),
    Inactive(WrapperNo),
}

/// One handle the program created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct HandleState {
    pub strong: u32,
    pub weak: u32,
    /// The storage block is allocated (weak > 0).
    pub storage: bool,
    pub binding: Binding,
    /// The field `x`: the handle it holds a strong ref on, if any.
    pub field: Option<HandleNo>,
}

impl HandleState {
    /// The state of a handle whose storage has been freed.
    pub const FREED: HandleState = HandleState {
        strong: 0,
        weak: 0,
        storage: false,
        binding: Binding::Detached,
        field: None,
    };
    /// The handle is alive (strong > 0).
    pub fn alive(&self) -> bool {
        self.strong > 0
    }
}

/// Where a wrapper's memory stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum WrapperLife {
    /// Allocated (alive in Python, or cached Inactive).
    #[default]
    Live,
    /// Memory freed.
    Freed,
    /// Memory deliberately leaked by `delete_space` after `shutdown`.
    Leaked,
}

/// One wrapper the program made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct WrapperState {
    pub life: WrapperLife,
    /// Python references as seen by the program: vars plus cycles holding
    /// it (an Inactive or leaked wrapper has 0, whatever keeps its memory).
    pub refs: u32,
    /// The handle `chandle` points to, or `None` for NULL.
    pub chandle: Option<HandleNo>,
}

impl WrapperState {
    pub const FREED: WrapperState = WrapperState {
        life: WrapperLife::Freed,
        refs: 0,
        chandle: None,
    };
}

/// World totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Totals {
    /// Handles with strong > 0.
    pub live_handles: u32,
    /// Storage blocks not yet freed.
    pub live_blocks: u32,
    /// Wrapper allocations not freed and not leaked.
    pub live_wrappers: u32,
    /// Wrapper allocations leaked at shutdown (and not yet reclaimed by
    /// the test-only door).
    pub leaked_wrappers: u32,
}

/// The whole abstract state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct AbstractState {
    pub vars: [VarState; VARS],
    pub holders: [Option<HandleNo>; HOLDERS],
    pub weaks: [Option<HandleNo>; WEAKS],
    pub result: StepResult,
    /// Indexed by `HandleNo`.
    pub handles: Vec<HandleState>,
    /// Indexed by `WrapperNo`.
    pub wrappers: Vec<WrapperState>,
    pub totals: Totals,
}

impl AbstractState {
    /// Reset to the empty world, keeping the vectors' capacity.
    pub fn clear(&mut self) {
        self.vars = [VarState::Empty; VARS];
        self.holders = [None; HOLDERS];
        self.weaks = [None; WEAKS];
        self.result = StepResult::Ok;
        self.handles.clear();
        self.wrappers.clear();
        self.totals = Totals::default();
    }

    /// The handle a var's wrapper points to, if the var holds a live
    /// (not moved-from) wrapper.
    pub fn var_handle(&self, v: usize) -> Option<HandleNo> {
        match self.vars[v] {
            VarState::Wrapper(w) => self.wrappers.get(w as usize)?.chandle,
            _ => None,
        }
    }
}
