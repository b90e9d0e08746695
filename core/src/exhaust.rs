//! Exhaustive bounded checking (issue 12): a breadth-first search over the
//! reference model's states within bounds, checking every step from every
//! reachable state.
//!
//! The bounds: vars `v0..v(N-1)`, holders, weak slots (only steps whose
//! operands are within them are taken); handles (a `new` that would make
//! more than that many handles in total is not taken); depth (the longest
//! program). States are identified up to renaming ([`Model::canonical_key`]:
//! vars among themselves, holders among themselves, weak slots among
//! themselves, handles and wrappers renumbered by first appearance).
//!
//! For every state of distance `d < depth` from the empty world and every
//! step within the bounds, the shortest program to the state (the first
//! found, in breadth-first order) plus the step is handed to `check`: in
//! the `pytie` crate, the executor on a real backend with all its checks,
//! teardown included. Programs are checked in order of length, so the first
//! failure is one of the shortest among the programs checked. No Python
//! here; the check is a closure.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::exec::Failure;
use crate::exec::coverage::{Combo, ComboSet, for_each_transition};
use crate::model::Model;
use crate::model::canon::Canon;
use crate::program::{
    HOLDERS, ObjKind, Op, Operand, Program, Sort, StepKind, StepSet, VARS, WEAKS,
};

/// The bounds of the search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub vars: u8,
    pub holders: u8,
    pub weaks: u8,
    /// Handles created in total (`new` steps taken).
    pub handles: u32,
    /// Longest program.
    pub depth: usize,
    /// The object kinds `new` takes (default: [`ObjKind::RUNTIME`]; on a
    /// backend, `pytie exhaust` takes those the backend makes through
    /// paths of their own, [`crate::backend::Caps::kinds`]).
    pub kinds: &'static [ObjKind],
    /// Objects of kinds outside [`ObjKind::CLASSIC`] one program may make
    /// (a `new` of such a kind that would make more is not taken): each of
    /// them meets every state the classic kinds reach, without the product
    /// of twelve kinds per handle.
    pub extra_kind_objects: u32,
    /// Stop (with [`Stop::TooManyStates`]) when more states than this are
    /// found.
    pub max_states: usize,
}

impl Default for Bounds {
    /// The default bound of `pytie exhaust`.
    fn default() -> Bounds {
        Bounds {
            vars: 3,
            holders: 2,
            weaks: 1,
            handles: 3,
            depth: 7,
            kinds: &ObjKind::RUNTIME,
            extra_kind_objects: 1,
            // The default bound on tvm-ffi, every kind, reaches 2,567,360
            // (BENCHMARKS.md, "Issue 23").
            max_states: 4_000_000,
        }
    }
}

impl Bounds {
    /// [`Bounds::kinds`], or `backend`'s when it is empty (the default of
    /// `pytie exhaust`: the kinds the backend makes through paths of their
    /// own).
    pub fn kinds_or(&self, backend: &'static [ObjKind]) -> &'static [ObjKind] {
        if self.kinds.is_empty() {
            backend
        } else {
            self.kinds
        }
    }
    /// Bad bounds, said plainly (the program language has `VARS` vars,
    /// `HOLDERS` holders, `WEAKS` weak slots).
    pub fn validate(&self) -> Result<(), String> {
        if self.vars == 0 || usize::from(self.vars) > VARS {
            return Err(format!("--vars must be 1 to {VARS}, not {}", self.vars));
        }
        if usize::from(self.holders) > HOLDERS {
            return Err(format!(
                "--holders must be 0 to {HOLDERS}, not {}",
                self.holders
            ));
        }
        if usize::from(self.weaks) > WEAKS {
            return Err(format!("--weaks must be 0 to {WEAKS}, not {}", self.weaks));
        }
        if self.max_states == 0 {
            return Err("--max-states must be at least 1".into());
        }
        Ok(())
    }
}

/// The kinds a search over `kinds` steps with: all but `oom`, which
/// changes no state the model searches (the step after it does, as
/// `pytie sweep` explores allocation by allocation; contract §4.1 R18).
pub fn searched(kinds: StepSet) -> StepSet {
    kinds.without(StepKind::Oom)
}

/// Every step of the kinds `kinds` whose operands are within `b`, in
/// vocabulary order, operands in increasing order (`new`: every kind of
/// object).
pub fn steps(b: &Bounds, kinds: StepSet) -> Vec<Op> {
    let range = |s: Sort| -> Vec<u8> {
        match s {
            Sort::Var => (0..b.vars).collect(),
            Sort::Holder => (0..b.holders).collect(),
            Sort::Weak => (0..b.weaks).collect(),
            Sort::Kind => b.kinds.iter().map(|k| k.to_byte()).collect(),
            // `oom`: the first allocation of the next step only.
            Sort::Count => vec![0],
        }
    };
    let mut out = Vec::new();
    for k in kinds.iter() {
        match *k.operands() {
            [] => out.push(Op::from_operand_bytes(k, [0, 0])),
            [a] => out.extend(
                range(a)
                    .into_iter()
                    .map(|x| Op::from_operand_bytes(k, [x, 0])),
            ),
            [a, c] => {
                for x in range(a) {
                    for y in range(c) {
                        out.push(Op::from_operand_bytes(k, [x, y]));
                    }
                }
            }
            _ => unreachable!("steps have at most two operands"),
        }
    }
    out
}

/// Where the search stands, for a progress line.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Distinct states found so far.
    pub states: usize,
    /// Programs (state, step) checked so far.
    pub transitions: u64,
    /// The distance being expanded, and the depth bound.
    pub level: usize,
    pub depth: usize,
    /// States of this level expanded, and how many it has.
    pub level_done: usize,
    pub level_size: usize,
    /// States of the next level found so far.
    pub next_level: usize,
    pub elapsed: Duration,
    /// A rough estimate of the time left: the levels still to expand are
    /// assumed to grow by the ratio seen so far.
    pub remaining: Option<Duration>,
}

/// What a complete search did.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Distinct states within the bounds (the empty world included).
    pub states: usize,
    /// Programs checked (one per state of distance < depth and step).
    pub transitions: u64,
    /// States by distance from the empty world.
    pub levels: Vec<usize>,
    /// The largest distance of a state found.
    pub depth_reached: usize,
    /// Steps within the bounds (the most a state has).
    pub steps: usize,
    pub elapsed: Duration,
}

/// Why a search stopped early.
#[derive(Debug)]
pub enum Stop {
    /// A checked program failed: one of the shortest that do.
    Failure(Box<Failure>, Summary),
    /// More states than `Bounds::max_states`.
    TooManyStates(Summary),
}

/// Reports progress at most once per `every`.
struct Ticker {
    start: Instant,
    last: Instant,
    every: Duration,
}

/// Search the states of `model` (its profile: design, tying) within `b`,
/// taking steps of `kinds`, checking each (state, step) program with
/// `check`. `progress` is called at most once a second.
pub fn explore(
    model: &Model,
    b: &Bounds,
    kinds: StepSet,
    check: &mut dyn FnMut(&Program) -> Result<(), Box<Failure>>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Summary, Stop> {
    explore_with(model, b, kinds, check, progress, Duration::from_secs(1))
}

fn explore_with(
    model: &Model,
    b: &Bounds,
    kinds: StepSet,
    check: &mut dyn FnMut(&Program) -> Result<(), Box<Failure>>,
    progress: &mut dyn FnMut(&Progress),
    every: Duration,
) -> Result<Summary, Stop> {
    let ops = steps(b, kinds);
    let (nv, nh, nw) = (
        usize::from(b.vars),
        usize::from(b.holders),
        usize::from(b.weaks),
    );
    let now = Instant::now();
    let mut tick = Ticker {
        start: now,
        last: now,
        every,
    };
    let mut root = model.clone();
    root.reset();
    let mut canon = Canon::default();
    let mut key = Vec::new();
    root.canonical_key(nv, nh, nw, &mut canon, &mut key);
    let mut seen: HashSet<Box<[u8]>> = HashSet::new();
    seen.insert(key.clone().into_boxed_slice());
    // Per state: its parent and the step from it (the BFS tree).
    let mut tree: Vec<(u32, Op)> = vec![(u32::MAX, Op::Collect)];
    let mut sum = Summary {
        states: 1,
        levels: vec![1],
        steps: ops.len(),
        ..Summary::default()
    };
    let mut frontier: Vec<(u32, Model)> = vec![(0, root)];
    let mut prog = Program::default();
    let finish = |mut s: Summary, tick: &Ticker| {
        s.elapsed = tick.start.elapsed();
        s.depth_reached = s.levels.iter().rposition(|&n| n > 0).unwrap_or(0);
        s
    };
    for level in 0..b.depth {
        let expand_next = level + 1 < b.depth;
        let mut next: Vec<(u32, Model)> = Vec::new();
        let mut next_count = 0usize;
        let level_size = frontier.len();
        for (done, (id, m)) in frontier.iter().enumerate() {
            // The shortest program to this state.
            prog.ops.clear();
            let mut at = *id;
            while at != 0 {
                let (parent, op) = tree[at as usize];
                prog.ops.push(op);
                at = parent;
            }
            prog.ops.reverse();
            let can_new = (m.handle_count() as u64) < u64::from(b.handles);
            let extra = m
                .kinds()
                .iter()
                .filter(|k| !ObjKind::CLASSIC.contains(k))
                .count();
            let can_new_extra = (extra as u64) < u64::from(b.extra_kind_objects);
            // After `finalize` the steps that need Python do nothing (R16):
            // only the C++ releases are tried (each such program forks).
            let ended = m.ended();
            for op in &ops {
                if ended && !op.kind().is_some_and(StepKind::needs_no_python) {
                    continue;
                }
                match *op {
                    Op::New { .. } if !can_new => continue,
                    Op::New { kind, .. } if !can_new_extra && !ObjKind::CLASSIC.contains(&kind) => {
                        continue;
                    }
                    _ => {}
                }
                let mut m2 = m.clone();
                m2.apply(op);
                m2.canonical_key(nv, nh, nw, &mut canon, &mut key);
                if !seen.contains(key.as_slice()) {
                    seen.insert(key.clone().into_boxed_slice());
                    let nid = tree.len() as u32;
                    tree.push((*id, *op));
                    next_count += 1;
                    if expand_next {
                        next.push((nid, m2));
                    }
                    if seen.len() > b.max_states {
                        sum.states = seen.len();
                        sum.levels.push(next_count);
                        return Err(Stop::TooManyStates(finish(sum, &tick)));
                    }
                }
                prog.ops.push(*op);
                let r = check(&prog);
                prog.ops.pop();
                sum.transitions += 1;
                if let Err(f) = r {
                    sum.states = seen.len();
                    sum.levels.push(next_count);
                    return Err(Stop::Failure(f, finish(sum, &tick)));
                }
            }
            let t = Instant::now();
            if t.duration_since(tick.last) >= tick.every {
                tick.last = t;
                progress(&estimate(
                    &sum,
                    seen.len(),
                    level,
                    b.depth,
                    done + 1,
                    level_size,
                    next_count,
                    ops.len(),
                    tick.start.elapsed(),
                ));
            }
        }
        sum.levels.push(next_count);
        sum.states = seen.len();
        frontier = next;
        if frontier.is_empty() {
            break;
        }
    }
    Ok(finish(sum, &tick))
}

/// A progress report with a rough estimate of the time left.
#[allow(clippy::too_many_arguments)]
fn estimate(
    sum: &Summary,
    states: usize,
    level: usize,
    depth: usize,
    level_done: usize,
    level_size: usize,
    next_level: usize,
    steps: usize,
    elapsed: Duration,
) -> Progress {
    let remaining = (sum.transitions > 0).then(|| {
        let per = elapsed.as_secs_f64() / sum.transitions as f64;
        let frac = level_done as f64 / level_size.max(1) as f64;
        // This level's rest, then the next levels, each growing by the
        // ratio the next level shows so far against this one.
        let mut work = (level_size - level_done) as f64 * steps as f64;
        let next_est = next_level as f64 / frac.max(1e-9);
        let ratio = next_est / level_size.max(1) as f64;
        let mut size = next_est;
        for _ in level + 1..depth {
            work += size * steps as f64;
            size *= ratio;
        }
        Duration::from_secs_f64((work * per).min(1e9))
    });
    Progress {
        states,
        transitions: sum.transitions,
        level,
        depth,
        level_done,
        level_size,
        next_level,
        elapsed,
        remaining,
    }
}

#[cfg(test)]
mod tests;

/// Every (transition, trigger) combination (coverage, issue 16) the model
/// of design S takes within `b`, each with the first program found that
/// takes it, in order of length (breadth first): the reachable set the
/// shipped corpus must cover. Model only: no backend, no interpreter.
pub fn reachable_combos(b: &Bounds) -> Result<(Vec<(Combo, Program)>, Summary), Stop> {
    let model = Model::new(crate::model::Design::S);
    let mut seen = ComboSet::default();
    let mut found: Vec<(Combo, Program)> = Vec::new();
    let mut check = |p: &Program| -> Result<(), Box<Failure>> {
        for_each_transition(p, crate::model::Design::S, |t| {
            let c = Combo::of(t);
            if !seen.contains(c) {
                seen.insert(c);
                found.push((c, p.clone()));
            }
        });
        Ok(())
    };
    let summary = explore(&model, b, searched(StepSet::ALL), &mut check, &mut |_| {})?;
    found.sort_by_key(|(c, _)| *c);
    Ok((found, summary))
}
