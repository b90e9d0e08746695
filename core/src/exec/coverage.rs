//! Which transitions of the binding state machine (contract §3) a program
//! takes, as the model reports them (`model::transition`). Used to show
//! what a corpus reaches (and never reaches), to keep a coverage floor, and
//! to check that random inputs still reach deep states.

pub use crate::model::transition::{Cause, Combo, ComboSet, Edge, Transition};
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

/// The (edge, trigger) combinations `prog` and its teardown take, as the
/// model reports them.
pub fn combos_of(prog: &Program) -> ComboSet {
    let mut combos = ComboSet::default();
    for_each_transition(prog, Design::S, |t| combos.insert(Combo::of(t)));
    combos
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

/// How many programs of a corpus take each edge, and each combination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counts {
    /// Programs counted.
    pub programs: usize,
    per_edge: [usize; Edge::COUNT],
    per_combo: Vec<usize>,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            programs: 0,
            per_edge: [0; Edge::COUNT],
            per_combo: vec![0; Combo::COUNT],
        }
    }
}

impl Counts {
    /// Count one program: its edges and combinations.
    pub fn add_program(&mut self, prog: &Program) {
        self.add(edges_of(prog));
        for i in combos_of(prog).indices() {
            self.per_combo[i] += 1;
        }
    }

    /// Programs that take the combination `c`.
    pub fn combo(&self, c: Combo) -> usize {
        self.per_combo[c.index()]
    }

    /// The combinations at least one program takes.
    pub fn combos_reached(&self) -> ComboSet {
        let mut s = ComboSet::default();
        for (i, &n) in self.per_combo.iter().enumerate() {
            if n > 0 {
                s.insert(Combo::from_index(i).expect("in range"));
            }
        }
        s
    }

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

/// What set `e` off in `counts`' programs, for its label: the triggers
/// (steps, or teardown) in step order, `*` after one that took it only in
/// a cascade, and which took it on a foreign thread or after `shutdown`.
fn triggers_line(counts: &Counts, e: Edge) -> String {
    let combos: Vec<Combo> = counts
        .combos_reached()
        .iter()
        .filter(|c| c.edge == e)
        .collect();
    if combos.is_empty() {
        return String::new();
    }
    let mut triggers: Vec<Option<crate::program::StepKind>> = Vec::new();
    for c in &combos {
        if !triggers.contains(&c.trigger) {
            triggers.push(c.trigger);
        }
    }
    let names: Vec<String> = triggers
        .iter()
        .map(|t| {
            let direct = combos.iter().any(|c| c.trigger == *t && !c.cascade);
            let name = t.map_or("teardown", |k| k.name());
            if direct {
                name.to_string()
            } else {
                format!("{name}*")
            }
        })
        .collect();
    let mut line = format!("\nby {}", names.join(", "));
    let cascade = combos.iter().filter(|c| c.cascade).count();
    let shutdown = combos.iter().filter(|c| c.after_shutdown).count();
    if cascade > 0 || shutdown > 0 {
        line += &format!("\n{cascade} by cascade, {shutdown} after shutdown");
    }
    line
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
            "{}: {n} program{}\n{}{}",
            e.name(),
            if n == 1 { "" } else { "s" },
            e.label(),
            triggers_line(counts, e)
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
