//! The transitions of the binding state machine (contract §3) as the model
//! takes them: each step reports exactly which edges it took, on which
//! handle, and what caused them (the step itself or a cascade, on which
//! thread, before or after `shutdown`). Coverage counts these; nothing is
//! guessed from states.

use std::fmt;

use crate::program::StepKind;
use crate::state::HandleNo;

/// A transition of the state machine, one edge of the picture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Edge {
    /// Detached -> Active: a fresh wrapper is attached (`make_ret`).
    Attach,
    /// Active -> Active: returned again, same wrapper, redundant +1 released.
    ReturnActive,
    /// Inactive -> Active: revived at the same address.
    Revive,
    /// Active -> Inactive: last Python ref dropped, another owner keeps H.
    Deactivate,
    /// Active -> Detached: last Python ref dropped, W held the last strong ref.
    DropLast,
    /// Active -> Detached: an ineligible (`dict`) wrapper dropped.
    DropIneligible,
    /// Active -> Detached: moved (`_move()`).
    Move,
    /// Inactive -> Inactive: the object died (strong 0), a weak ref keeps
    /// the storage and the cached wrapper.
    DieWhileCached,
    /// Inactive -> gone: storage freed, the wrapper reclaimed.
    Reclaim,
    /// Inactive -> gone after `shutdown`: storage freed, the wrapper leaked.
    Leak,
    /// Detached -> gone: storage freed.
    FreeDetached,
    /// Untied: a fresh wrapper for every return.
    UntiedReturn,
    /// Untied -> gone: storage freed.
    UntiedFree,
}

impl Edge {
    pub const COUNT: usize = 13;
    pub const ALL: [Edge; Edge::COUNT] = [
        Edge::Attach,
        Edge::ReturnActive,
        Edge::Revive,
        Edge::Deactivate,
        Edge::DropLast,
        Edge::DropIneligible,
        Edge::Move,
        Edge::DieWhileCached,
        Edge::Reclaim,
        Edge::Leak,
        Edge::FreeDetached,
        Edge::UntiedReturn,
        Edge::UntiedFree,
    ];

    /// A stable name (used in the coverage floor file).
    pub fn name(self) -> &'static str {
        match self {
            Edge::Attach => "attach",
            Edge::ReturnActive => "return-active",
            Edge::Revive => "revive",
            Edge::Deactivate => "deactivate",
            Edge::DropLast => "drop-last",
            Edge::DropIneligible => "drop-ineligible",
            Edge::Move => "move",
            Edge::DieWhileCached => "die-while-cached",
            Edge::Reclaim => "reclaim",
            Edge::Leak => "leak",
            Edge::FreeDetached => "free-detached",
            Edge::UntiedReturn => "untied-return",
            Edge::UntiedFree => "untied-free",
        }
    }

    /// (from, to) nodes of the picture.
    pub fn nodes(self) -> (&'static str, &'static str) {
        match self {
            Edge::Attach => ("Detached", "Active"),
            Edge::ReturnActive => ("Active", "Active"),
            Edge::Revive => ("Inactive", "Active"),
            Edge::Deactivate => ("Active", "Inactive"),
            Edge::DropLast | Edge::DropIneligible | Edge::Move => ("Active", "Detached"),
            Edge::DieWhileCached => ("Inactive", "Inactive"),
            Edge::Reclaim | Edge::Leak => ("Inactive", "Gone"),
            Edge::FreeDetached => ("Detached", "Gone"),
            Edge::UntiedReturn => ("Untied", "Untied"),
            Edge::UntiedFree => ("Untied", "Gone"),
        }
    }

    /// What the edge means, for labels.
    pub fn label(self) -> &'static str {
        match self {
            Edge::Attach => "make_ret: fresh wrapper attached",
            Edge::ReturnActive => "make_ret: same wrapper, +1 released",
            Edge::Revive => "make_ret: revived at same address",
            Edge::Deactivate => "last Python ref, other owners",
            Edge::DropLast => "last Python ref held last strong ref",
            Edge::DropIneligible => "ineligible (dict) wrapper dropped",
            Edge::Move => "_move(): detach before null",
            Edge::DieWhileCached => "object dies, weak ref keeps cache",
            Edge::Reclaim => "storage freed: wrapper reclaimed",
            Edge::Leak => "storage freed after shutdown: wrapper leaked",
            Edge::FreeDetached => "storage freed",
            Edge::UntiedReturn => "make_ret: fresh wrapper, never bound",
            Edge::UntiedFree => "storage freed",
        }
    }

    pub fn from_name(s: &str) -> Option<Edge> {
        Edge::ALL.into_iter().find(|e| e.name() == s)
    }
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What made a transition happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cause {
    /// The step that ran, or `None` for teardown (§6).
    pub step: Option<StepKind>,
    /// Reached through the death of another object (its field released),
    /// not on the step's own objects.
    pub cascade: bool,
    /// After `shutdown`.
    pub after_shutdown: bool,
}

impl Cause {
    /// On a thread without the GIL (`release_foreign` and its cascades).
    pub fn foreign(self) -> bool {
        self.step == Some(StepKind::ReleaseForeign)
    }
}

/// One transition the model took.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transition {
    pub edge: Edge,
    pub handle: HandleNo,
    pub cause: Cause,
}
