//! Which transitions of the binding state machine (contract §3) a program
//! takes, read off consecutive model states. Used to show what a corpus
//! reaches (and never reaches), to keep a coverage floor, and to check that
//! random inputs still reach deep states.

use std::fmt;

use crate::program::{ObjKind, Op};
use crate::state::{AbstractState, Binding, HandleState, WrapperLife};

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

/// A set of edges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EdgeSet(pub u32);

impl EdgeSet {
    pub fn insert(&mut self, e: Edge) {
        self.0 |= 1 << e as u32;
    }
    pub fn contains(self, e: Edge) -> bool {
        self.0 & (1 << e as u32) != 0
    }
    pub fn iter(self) -> impl Iterator<Item = Edge> {
        Edge::ALL.into_iter().filter(move |e| self.contains(*e))
    }
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Follows a run's model states and collects the edges taken. Edges are
/// read off consecutive states, so a handle that changes twice within one
/// step (a collection that deactivates a wrapper and then frees its
/// object) shows the net change.
#[derive(Default)]
pub struct Tracker {
    kinds: Vec<ObjKind>,
    prev: AbstractState,
    pub edges: EdgeSet,
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// After a step (`op`, or `None` for a teardown action) the model's
    /// state is `next`.
    pub fn step(&mut self, op: Option<&Op>, next: &AbstractState) {
        if let Some(Op::New { kind, .. }) = op {
            self.kinds.push(*kind);
        }
        let returned = match op {
            Some(
                Op::Ret { v, .. }
                | Op::Echo { v, .. }
                | Op::Get { v, .. }
                | Op::Lock { v, .. }
                | Op::New { v, .. },
            ) => next.var_handle(v.idx()),
            _ => None,
        };
        for (h, now) in next.handles.iter().enumerate() {
            let before = self.prev.handles.get(h).copied();
            let kind = self.kinds.get(h).copied().unwrap_or(ObjKind::Plain);
            let freed = *now == HandleState::FREED;
            let was = before.map(|b| b.binding);
            let e = &mut self.edges;
            match (was, now.binding) {
                // Created this step: born Detached, then returned.
                (None, Binding::Active(_)) => e.insert(Edge::Attach),
                (None, Binding::Untied) => e.insert(Edge::UntiedReturn),
                (Some(Binding::Untied), _) if freed && before.is_some_and(|b| b.storage) => {
                    e.insert(Edge::UntiedFree)
                }
                (Some(Binding::Untied), Binding::Untied) if returned == Some(h as u32) => {
                    e.insert(Edge::UntiedReturn)
                }
                (Some(Binding::Detached), Binding::Active(_)) => e.insert(Edge::Attach),
                (Some(Binding::Active(w)), Binding::Active(w2))
                    if w == w2 && returned == Some(h as u32) =>
                {
                    e.insert(Edge::ReturnActive)
                }
                (Some(Binding::Inactive(w)), Binding::Active(w2)) if w == w2 => {
                    e.insert(Edge::Revive)
                }
                (Some(Binding::Active(w)), Binding::Inactive(w2)) if w == w2 => {
                    e.insert(Edge::Deactivate)
                }
                (Some(Binding::Active(_)), Binding::Detached) => {
                    e.insert(if matches!(op, Some(Op::Move { .. })) {
                        Edge::Move
                    } else if kind == ObjKind::Dict {
                        Edge::DropIneligible
                    } else {
                        Edge::DropLast
                    });
                    if freed {
                        e.insert(Edge::FreeDetached);
                    }
                }
                (Some(Binding::Inactive(_)), Binding::Inactive(_))
                    if before.is_some_and(|b| b.strong > 0) && now.strong == 0 =>
                {
                    e.insert(Edge::DieWhileCached)
                }
                (Some(Binding::Inactive(w)), Binding::Detached) if freed => {
                    let leaked = next
                        .wrappers
                        .get(w as usize)
                        .is_some_and(|ws| ws.life == WrapperLife::Leaked);
                    e.insert(if leaked { Edge::Leak } else { Edge::Reclaim });
                }
                (Some(Binding::Detached), Binding::Detached)
                    if freed && before.is_some_and(|b| b.storage) =>
                {
                    e.insert(Edge::FreeDetached)
                }
                _ => {}
            }
        }
        self.prev.clone_from(next);
    }
}

/// The edges `prog` takes on the lifecycle executor (model states), or its
/// failure.
pub fn edges_of(prog: &crate::program::Program) -> Result<EdgeSet, Box<super::Failure>> {
    let mut t = Tracker::new();
    super::lifecycle::with_executor(|ex| {
        ex.run_traced(prog, &mut |step, expected, _| {
            let op = step.checked_sub(1).map(|i| &prog.ops[i]);
            t.step(op, expected);
        })
    })?;
    Ok(t.edges)
}

/// How many programs of a corpus take each edge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Programs counted.
    pub programs: usize,
    per_edge: [usize; Edge::COUNT],
}

impl Counts {
    /// Count one program that took `edges`.
    pub fn add(&mut self, edges: EdgeSet) {
        self.programs += 1;
        for e in edges.iter() {
            self.per_edge[e as usize] += 1;
        }
    }

    /// Programs that take `e`.
    pub fn get(&self, e: Edge) -> usize {
        self.per_edge[e as usize]
    }

    /// The edges at least one program takes.
    pub fn reached(&self) -> EdgeSet {
        let mut s = EdgeSet::default();
        for e in Edge::ALL {
            if self.get(e) > 0 {
                s.insert(e);
            }
        }
        s
    }
}

/// The nodes of the picture: the binding states of contract §3, `Gone`
/// (storage freed) and `Untied` (objects that never bind).
pub const STATES: [&str; 5] = ["Detached", "Active", "Inactive", "Gone", "Untied"];

fn dot_quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                q.push('\\');
                q.push(c);
            }
            '\n' => q.push_str("\\n"),
            _ => q.push(c),
        }
    }
    q.push('"');
    q
}

/// The state machine as `counts` exercises it, in Graphviz DOT: states as
/// nodes, one edge per [`Edge`] labelled with its name, meaning and the
/// number of programs taking it. Edges no program takes, and states no
/// taken edge touches, are drawn red (dashed). `title` heads the picture.
pub fn to_dot(counts: &Counts, title: &str) -> String {
    let reached = counts.reached();
    let touched = |state: &str| {
        reached
            .iter()
            .any(|e| e.nodes().0 == state || e.nodes().1 == state)
    };
    let mut out = String::new();
    out += "digraph pytie_coverage {\n";
    out += "  rankdir=LR;\n  labelloc=t;\n  fontname=\"Helvetica\";\n";
    out += &format!("  label={};\n", dot_quote(title));
    out += "  node [fontname=\"Helvetica\", shape=ellipse, style=filled, fillcolor=\"#eef3fb\"];\n";
    out += "  edge [fontname=\"Helvetica\", fontsize=10];\n";
    for s in STATES {
        let shape = if s == "Gone" {
            "doublecircle"
        } else {
            "ellipse"
        };
        if touched(s) {
            out += &format!("  {s} [shape={shape}];\n");
        } else {
            out += &format!(
                "  {s} [shape={shape}, color=red, fontcolor=red, fillcolor=\"#fde8e8\", style=\"filled,dashed\"];\n"
            );
        }
    }
    for e in Edge::ALL {
        let (from, to) = e.nodes();
        let n = counts.get(e);
        let label = dot_quote(&format!(
            "{}: {n} program{}\n{}",
            e.name(),
            if n == 1 { "" } else { "s" },
            e.label()
        ));
        let style = if n == 0 {
            ", color=red, fontcolor=red, style=dashed, penwidth=2"
        } else {
            ""
        };
        out += &format!("  {from} -> {to} [label={label}{style}];\n");
    }
    out += "}\n";
    out
}
