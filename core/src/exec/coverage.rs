//! Which transitions of the binding state machine (contract §3) a program
//! takes, as the model reports them (`model::transition`). Used to show
//! what a corpus reaches (and never reaches), to keep a coverage floor, and
//! to check that random inputs still reach deep states.

pub use crate::model::transition::{Cause, Edge, Transition};
use crate::model::{Design, Model};
use crate::program::Program;

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

/// The edges `prog` takes, as the model reports them step by step, its
/// teardown (§6) included. The model alone: no backend, no interpreter.
pub fn edges_of(prog: &Program) -> EdgeSet {
    let mut edges = EdgeSet::default();
    for_each_transition(prog, Design::S, |t| edges.insert(t.edge));
    edges
}

/// Every transition `prog` and its teardown take on the model of `design`,
/// in order.
pub fn for_each_transition(prog: &Program, design: Design, mut f: impl FnMut(&Transition)) {
    let mut model = Model::new(design);
    for op in prog.ops.iter().filter(|op| !op.is_assertion()) {
        model.apply(op);
        model.transitions().iter().for_each(&mut f);
    }
    model.clear_all_fields();
    model.transitions().iter().for_each(&mut f);
    for op in super::teardown_ops() {
        model.apply(&op);
        model.transitions().iter().for_each(&mut f);
    }
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
