//! Failure reports: what failed, where, expected and actual side by side
//! (only what differs unless the whole state is asked for), and the program
//! up to the failing step in text form, ready to replay.

use std::fmt;

use crate::program::{Program, text};
use crate::state::{
    AbstractState, Binding, HandleNo, HandleState, VarState, WrapperLife, WrapperNo, WrapperState,
};

pub use crate::state::DANGLING;

/// What kind of failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Model and backend states differ.
    Divergence,
    /// An invariant of §3 is broken on the backend's side.
    Invariant,
    /// The runtime's own assertion (or an unexpected Python exception).
    RuntimeAssertion,
    /// A wrapper changed address, or a fresh one took a live one's address.
    Identity,
    /// A hand-written `expect` is false on both sides.
    Expectation,
    /// The world did not end empty (§6), or did not start empty.
    Teardown,
    /// The backend is a real third-party library and broke the contract
    /// (reported by such backends as an upstream failure).
    Upstream,
    /// A step did not finish within the step timeout (reported by the
    /// harness's watchdog, which then ends the process).
    Hang,
    /// The world outside the program (shared interpreter objects' reference
    /// counts, process-wide flags, threads) differs after the program from
    /// before it: damage a later program would trip over.
    WorldDrift,
    /// The process that ran the program's end (the child forked at
    /// `shutdown`) died of a signal: the parent reports it.
    Crash,
}

impl FailureKind {
    pub fn title(&self) -> &'static str {
        match self {
            FailureKind::Divergence => "divergence between the model and the runtime",
            FailureKind::Invariant => "broken invariant",
            FailureKind::RuntimeAssertion => "runtime assertion failed",
            FailureKind::Identity => "wrapper identity broken",
            FailureKind::Expectation => "failed expectation",
            FailureKind::Teardown => "the world is not empty after teardown",
            FailureKind::Upstream => "upstream failure",
            FailureKind::Hang => "hang: a step did not finish",
            FailureKind::WorldDrift => "world drift: the program changed what outlives it",
            FailureKind::Crash => "crash: the process running the program's end died",
        }
    }

    /// Every kind, in a fixed order (the index crosses a pipe from a
    /// forked child).
    pub const ALL: [FailureKind; 10] = [
        FailureKind::Divergence,
        FailureKind::Invariant,
        FailureKind::RuntimeAssertion,
        FailureKind::Identity,
        FailureKind::Expectation,
        FailureKind::Teardown,
        FailureKind::Upstream,
        FailureKind::Hang,
        FailureKind::WorldDrift,
        FailureKind::Crash,
    ];
}

/// A failed run.
#[derive(Clone, Debug)]
pub struct Failure {
    pub kind: FailureKind,
    /// 1-based index of the failing step in the program; `None` for
    /// teardown and start-up checks.
    pub step: Option<usize>,
    /// The failing step in text form (or the teardown action).
    pub step_text: String,
    /// Explanations: invariant messages, assertion texts.
    pub notes: Vec<String>,
    pub expected: AbstractState,
    pub actual: AbstractState,
    /// The program up to and including the failing step.
    pub program: Program,
    /// The backend's name.
    pub backend: String,
    /// Print the whole states instead of only what differs.
    pub full: bool,
}

impl Failure {
    /// Show the whole states, not only the differences.
    pub fn full(mut self) -> Failure {
        self.full = true;
        self
    }

    /// The comment a text regression of this failure starts with: the
    /// report's first line, then its notes (`pytie regress`, `pytie exhaust`).
    pub fn regression_header(&self) -> String {
        let mut h = format!(
            "# Regression: {}\n",
            self.to_string().lines().next().unwrap_or_default()
        );
        for n in &self.notes {
            for l in n.lines() {
                h += &format!("#   {l}\n");
            }
        }
        h
    }
}

/// `line` with every heap address (`0x` and at least six hex digits)
/// replaced by `0x…`, so that one failure reads the same in every run;
/// `--full` shows them.
pub fn mask_addresses(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("0x") {
        out.push_str(&rest[..i]);
        let hex = rest[i + 2..]
            .bytes()
            .take_while(u8::is_ascii_hexdigit)
            .count();
        let boundary = !rest[..i].ends_with(|c: char| c.is_ascii_alphanumeric());
        if hex >= 6 && boundary {
            out.push_str("0x…");
        } else {
            out.push_str(&rest[i..i + 2 + hex]);
        }
        rest = &rest[i + 2 + hex..];
    }
    out.push_str(rest);
    out
}

fn wr(w: WrapperNo) -> String {
    if w == DANGLING {
        "wr#? (dangling)".into()
    } else {
        format!("wr#{w}")
    }
}

fn obj(h: Option<HandleNo>) -> String {
    match h {
        None => "-".into(),
        Some(DANGLING) => "obj#? (dangling)".into(),
        Some(h) => format!("obj#{h}"),
    }
}

/// A var's content in report form (`wr#3`, `wr#3 (moved)`, `None`, `empty`).
pub fn var_text(v: VarState) -> String {
    var(v)
}

fn var(v: VarState) -> String {
    match v {
        VarState::Empty => "empty".into(),
        VarState::None => "None".into(),
        VarState::Wrapper(w) => wr(w),
        VarState::Moved(w) => format!("{} (moved)", wr(w)),
    }
}

fn binding(b: Binding) -> String {
    match b {
        Binding::Untied => "untied".into(),
        Binding::Detached => "Detached".into(),
        Binding::Active(w) => format!("Active({})", wr(w)),
        Binding::Inactive(w) => format!("Inactive({})", wr(w)),
    }
}

fn life(l: WrapperLife) -> &'static str {
    match l {
        WrapperLife::Live => "live",
        WrapperLife::Freed => "freed",
        WrapperLife::Leaked => "leaked",
    }
}

fn handle_lines(out: &mut Vec<(String, String)>, i: usize, h: Option<&HandleState>) {
    let Some(h) = h else { return };
    out.push((format!("obj#{i}.strong"), h.strong.to_string()));
    out.push((format!("obj#{i}.weak"), h.weak.to_string()));
    out.push((
        format!("obj#{i}.storage"),
        if h.storage { "allocated" } else { "freed" }.into(),
    ));
    out.push((format!("obj#{i}.binding"), binding(h.binding)));
    out.push((format!("obj#{i}.x"), obj(h.field)));
}

fn wrapper_lines(out: &mut Vec<(String, String)>, i: usize, w: Option<&WrapperState>) {
    let Some(w) = w else { return };
    out.push((format!("wr#{i}.life"), life(w.life).into()));
    out.push((format!("wr#{i}.refs"), w.refs.to_string()));
    out.push((
        format!("wr#{i}.chandle"),
        obj(w.chandle).replace('-', "NULL"),
    ));
    out.push((format!("wr#{i}.gc_tracked"), w.tracked.to_string()));
}

/// The numbers in either of two increasing sequences, in order, once each.
fn union<'a, T: 'a>(
    a: impl Iterator<Item = (usize, &'a T)>,
    b: impl Iterator<Item = (usize, &'a T)>,
) -> Vec<usize> {
    let mut out: Vec<usize> = a.map(|(i, _)| i).chain(b.map(|(i, _)| i)).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The state as (name, value) lines, in a fixed order. Handles and
/// wrappers freed in both `s` and `other` are left out (counted by the
/// "made" lines), the others detailed, so that two states line up name by
/// name.
fn state_lines_against(s: &AbstractState, other: &AbstractState) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, v) in s.vars.iter().enumerate() {
        out.push((format!("v{i}"), var(*v)));
    }
    for (i, h) in s.holders.iter().enumerate() {
        out.push((format!("h{i}"), obj(*h)));
    }
    for (i, w) in s.weaks.iter().enumerate() {
        out.push((format!("w{i}"), obj(*w)));
    }
    out.push(("result".into(), format!("{:?}", s.result).to_lowercase()));
    // Freed entries are not listed (a program of a million steps has a
    // million of them): "made" says how many there are in all, and every
    // number not freed on one side or the other is listed in detail.
    out.push(("objects made".into(), s.handles.len().to_string()));
    for i in union(s.handles.entries(), other.handles.entries()) {
        handle_lines(&mut out, i, s.handles.get(i));
    }
    out.push(("wrappers made".into(), s.wrappers.len().to_string()));
    for i in union(s.wrappers.entries(), other.wrappers.entries()) {
        wrapper_lines(&mut out, i, s.wrappers.get(i));
    }
    let t = &s.totals;
    out.push(("live handles".into(), t.live_handles.to_string()));
    out.push(("live storage blocks".into(), t.live_blocks.to_string()));
    out.push(("live wrappers".into(), t.live_wrappers.to_string()));
    out.push(("leaked wrappers".into(), t.leaked_wrappers.to_string()));
    out.push(("__del__ calls".into(), t.finalized.to_string()));
    out
}

/// A compact rendering of a state, a few lines, for `pytie trace`.
pub fn state_summary(s: &AbstractState) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let slots = |names: &str, items: Vec<String>| {
        let items: Vec<String> = items.into_iter().filter(|i| !i.is_empty()).collect();
        if items.is_empty() {
            String::new()
        } else {
            format!("  {names:8} {}\n", items.join(" "))
        }
    };
    let vars = s.vars.iter().enumerate();
    out += &slots(
        "vars",
        vars.map(|(i, v)| match v {
            VarState::Empty => String::new(),
            v => format!("v{i}={}", var(*v)),
        })
        .collect(),
    );
    let holders = s.holders.iter().enumerate();
    out += &slots(
        "holders",
        holders
            .map(|(i, h)| h.map_or(String::new(), |h| format!("h{i}={}", obj(Some(h)))))
            .collect(),
    );
    let weaks = s.weaks.iter().enumerate();
    out += &slots(
        "weak",
        weaks
            .map(|(i, h)| h.map_or(String::new(), |h| format!("w{i}={}", obj(Some(h)))))
            .collect(),
    );
    match s.result {
        crate::state::StepResult::Ok => {}
        crate::state::StepResult::Moved => out += "  result   moved\n",
        crate::state::StepResult::Cyclic => out += "  result   cyclic\n",
        crate::state::StepResult::NoWeakref => out += "  result   noweakref\n",
        crate::state::StepResult::NoMemory => out += "  result   nomemory\n",
        crate::state::StepResult::Raised => out += "  result   raised\n",
        crate::state::StepResult::Refused => out += "  result   refused\n",
    }
    for (i, h) in s.handles.all().enumerate() {
        let name = format!("obj#{i}");
        if !h.storage {
            let _ = writeln!(out, "  {name:8} freed");
        } else {
            let _ = writeln!(
                out,
                "  {name:8} strong {} weak {} {} x={}",
                h.strong,
                h.weak,
                binding(h.binding),
                obj(h.field)
            );
        }
    }
    for (i, w) in s.wrappers.all().enumerate() {
        let name = format!("wr#{i}");
        if w.life == WrapperLife::Freed {
            let _ = writeln!(out, "  {name:8} freed");
        } else {
            let chandle = obj(w.chandle).replace('-', "NULL");
            let _ = writeln!(
                out,
                "  {name:8} {} refs {} chandle {chandle}",
                life(w.life),
                w.refs
            );
        }
    }
    let t = &s.totals;
    let _ = writeln!(
        out,
        "  totals   {} handles, {} blocks, {} wrappers, {} leaked",
        t.live_handles, t.live_blocks, t.live_wrappers, t.leaked_wrappers
    );
    out
}

/// Lines (name, expected, actual), in order; only differing ones unless
/// `all`. A name present on one side only shows "(absent)" on the other.
pub fn diff_lines(
    expected: &AbstractState,
    actual: &AbstractState,
    all: bool,
) -> Vec<(String, String, String)> {
    let e = state_lines_against(expected, actual);
    let a = state_lines_against(actual, expected);
    let mut out = Vec::new();
    let find = |lines: &[(String, String)], k: &str| {
        lines
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "(absent)".into())
    };
    let mut names: Vec<&String> = e.iter().map(|(n, _)| n).collect();
    for (n, _) in &a {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    for n in names {
        let (ev, av) = (find(&e, n), find(&a, n));
        if all || ev != av {
            out.push((n.clone(), ev, av));
        }
    }
    out
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = match self.step {
            Some(n) => format!("step {n}"),
            None => "teardown".into(),
        };
        writeln!(
            f,
            "FAIL: {} at {at}: `{}`",
            self.kind.title(),
            self.step_text
        )?;
        writeln!(f, "  backend: {}", self.backend)?;
        for n in &self.notes {
            for line in n.lines() {
                if self.full {
                    writeln!(f, "  - {line}")?;
                } else {
                    writeln!(f, "  - {}", mask_addresses(line))?;
                }
            }
        }
        let rows = diff_lines(&self.expected, &self.actual, self.full);
        if !rows.is_empty() {
            let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(5);
            let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(16);
            writeln!(f)?;
            writeln!(f, "  {:w0$}  {:w1$}  actual", "", "expected (model)")?;
            for (n, e, a) in &rows {
                let mark = if e != a { "  <--" } else { "" };
                writeln!(f, "  {n:w0$}  {e:w1$}  {a}{mark}")?;
            }
            if !self.full {
                writeln!(
                    f,
                    "  (only differences shown; `pytie run --full` shows whole states)"
                )?;
            }
        }
        writeln!(f)?;
        writeln!(
            f,
            "program up to the failing step (replay: save as a .pytie file, `pytie run FILE`):"
        )?;
        let lines: Vec<String> = text::print(&self.program)
            .lines()
            .map(str::to_string)
            .collect();
        let last = lines.len();
        for (i, l) in lines.iter().enumerate() {
            if i + 1 == last && self.step.is_some() {
                writeln!(f, "{l:<24} # <- step {}: fails here", i + 1)?;
            } else {
                writeln!(f, "{l}")?;
            }
        }
        Ok(())
    }
}
