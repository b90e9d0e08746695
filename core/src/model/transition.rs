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
    /// Detached -> Detached: a fresh wrapper's construction raised
    /// (`fragile`, R20); the +1 released.
    RefuseFresh,
    /// Inactive -> Detached (design U): the revival's construction raised
    /// after the cached block was consumed, which freed it (R20).
    RefuseRevive,
    /// Untied: a fresh wrapper's construction raised (R20).
    RefuseUntied,
}

impl Edge {
    pub const COUNT: usize = 16;
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
        Edge::RefuseFresh,
        Edge::RefuseRevive,
        Edge::RefuseUntied,
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
            Edge::RefuseFresh => "refuse-fresh",
            Edge::RefuseRevive => "refuse-revive",
            Edge::RefuseUntied => "refuse-untied",
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
            Edge::RefuseFresh => ("Detached", "Detached"),
            Edge::RefuseRevive => ("Inactive", "Detached"),
            Edge::RefuseUntied => ("Untied", "Untied"),
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
            Edge::RefuseFresh => "make_ret: construction raised, +1 released",
            Edge::RefuseRevive => "make_ret: revival raised, block freed",
            Edge::RefuseUntied => "make_ret: construction raised, +1 released",
        }
    }

    /// Taken by the model under design S with tying on, which is how
    /// coverage is counted (`coverage::edges_of`): every edge but R20's
    /// refused revival (design U only) and refused untied return (tying
    /// off only).
    pub fn in_design_s(self) -> bool {
        !matches!(self, Edge::RefuseRevive | Edge::RefuseUntied)
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

/// A transition and what set it off: the unit the coverage floor and the
/// fuzzer's extra counters count (issue 16). Which thread it ran on follows
/// from the trigger ([`Combo::foreign`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Combo {
    pub edge: Edge,
    /// The step that ran, or `None` for teardown (§6).
    pub trigger: Option<StepKind>,
    /// Reached through another object's death (its field released).
    pub cascade: bool,
    pub after_shutdown: bool,
}

impl Combo {
    /// Triggers: every step kind, then teardown.
    const TRIGGERS: usize = StepKind::COUNT + 1;
    /// The number of combinations (most are unreachable).
    pub const COUNT: usize = Edge::COUNT * Self::TRIGGERS * 4;

    pub fn of(t: &Transition) -> Combo {
        Combo {
            edge: t.edge,
            trigger: t.cause.step,
            cascade: t.cause.cascade,
            after_shutdown: t.cause.after_shutdown,
        }
    }

    /// On a thread without the GIL (`release_foreign` and its cascades).
    pub fn foreign(self) -> bool {
        self.trigger == Some(StepKind::ReleaseForeign)
    }

    /// A dense index below [`Combo::COUNT`].
    pub fn index(self) -> usize {
        let trigger = self.trigger.map_or(StepKind::COUNT, |k| k as usize);
        ((self.edge as usize * Self::TRIGGERS + trigger) * 2 + usize::from(self.cascade)) * 2
            + usize::from(self.after_shutdown)
    }

    /// The combination of an index below [`Combo::COUNT`].
    pub fn from_index(i: usize) -> Option<Combo> {
        if i >= Self::COUNT {
            return None;
        }
        let after_shutdown = i % 2 == 1;
        let cascade = (i / 2) % 2 == 1;
        let trigger = (i / 4) % Self::TRIGGERS;
        let edge = Edge::ALL[i / 4 / Self::TRIGGERS];
        Some(Combo {
            edge,
            trigger: StepKind::ALL.get(trigger).copied(),
            cascade,
            after_shutdown,
        })
    }

    /// Its stable name (the coverage floor's): `EDGE by TRIGGER`, then
    /// `cascade` and `after-shutdown` when they hold, space separated;
    /// TRIGGER is a step name or `teardown`.
    pub fn name(self) -> String {
        let mut s = format!(
            "{} by {}",
            self.edge.name(),
            self.trigger.map_or("teardown", StepKind::name)
        );
        if self.cascade {
            s += " cascade";
        }
        if self.after_shutdown {
            s += " after-shutdown";
        }
        s
    }

    /// The combination a [`Combo::name`] names.
    pub fn from_name(s: &str) -> Option<Combo> {
        let mut t = s.split_whitespace();
        let edge = Edge::from_name(t.next()?)?;
        if t.next()? != "by" {
            return None;
        }
        let trigger = match t.next()? {
            "teardown" => None,
            k => Some(StepKind::from_name(k)?),
        };
        let mut c = Combo {
            edge,
            trigger,
            cascade: false,
            after_shutdown: false,
        };
        let mut rest = t.peekable();
        if rest.peek() == Some(&"cascade") {
            c.cascade = true;
            rest.next();
        }
        if rest.peek() == Some(&"after-shutdown") {
            c.after_shutdown = true;
            rest.next();
        }
        rest.next().is_none().then_some(c)
    }
}

/// A set of [`Combo`]s, as a bit set.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ComboSet([u64; ComboSet::WORDS]);

impl Default for ComboSet {
    fn default() -> Self {
        ComboSet([0; ComboSet::WORDS])
    }
}

impl ComboSet {
    const WORDS: usize = Combo::COUNT.div_ceil(64);

    pub fn insert(&mut self, c: Combo) {
        let i = c.index();
        self.0[i / 64] |= 1 << (i % 64);
    }
    pub fn contains(&self, c: Combo) -> bool {
        let i = c.index();
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    pub fn union(&mut self, other: &ComboSet) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
    }
    pub fn clear(&mut self) {
        self.0 = [0; ComboSet::WORDS];
    }
    /// The indices of the members, in order.
    pub fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &bits)| {
            (0..64)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| w * 64 + b)
        })
    }
    pub fn iter(&self) -> impl Iterator<Item = Combo> + '_ {
        self.indices().filter_map(Combo::from_index)
    }
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }
}
