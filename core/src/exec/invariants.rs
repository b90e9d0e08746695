//! The invariants of contract §3, checked on an observed (real) state after
//! every step. They need no model: a state that breaks one is wrong
//! whatever the model says.

use std::fmt::Write;

use crate::state::{AbstractState, Binding, HandleNo, VarState, WrapperLife, WrapperNo};

/// Scratch space reused between checks (no allocation once warm).
#[derive(Default)]
pub struct Scratch {
    /// Per wrapper: Python references the program holds (vars + cycles).
    program_refs: Counts,
    /// Per wrapper: how many handles bind it.
    bound: Counts,
    /// Per handle: expected strong count (I4).
    strong: Counts,
    /// Per handle: weak slots holding it (I4).
    weak: Counts,
    /// The wrappers to check: not freed, or referred to.
    visit: Vec<usize>,
}

/// Counters by number, zeroed where they were touched (not over every
/// number ever made): a check costs time in the live objects.
#[derive(Default)]
struct Counts {
    n: Vec<u32>,
    touched: Vec<usize>,
}

impl Counts {
    fn reset(&mut self, len: usize) {
        for &i in &self.touched {
            self.n[i] = 0;
        }
        self.touched.clear();
        if self.n.len() < len {
            self.n.resize(len, 0);
        }
    }
    fn bump(&mut self, i: usize) {
        if self.n[i] == 0 {
            self.touched.push(i);
        }
        self.n[i] += 1;
    }
    fn get(&self, i: usize) -> u32 {
        self.n[i]
    }
}

fn valid(no: u32, len: usize) -> bool {
    (no as usize) < len
}

/// Check I1 to I5 and the wrappers' reference accounting on `s`, where
/// `cycles` lists the wrapper each live cycle holds. Returns every broken
/// invariant, one line each. Walks the objects not freed (and the slots),
/// never every object made.
pub fn check(s: &AbstractState, cycles: &[WrapperNo], scratch: &mut Scratch) -> Result<(), String> {
    let nh = s.handles.len();
    let nw = s.wrappers.len();
    let Scratch {
        program_refs,
        bound,
        strong,
        weak,
        visit,
    } = scratch;
    program_refs.reset(nw);
    bound.reset(nw);
    strong.reset(nh);
    weak.reset(nh);
    let mut errs = String::new();
    let mut err = |args: std::fmt::Arguments<'_>| {
        let _ = writeln!(errs, "{args}");
    };

    for (i, v) in s.vars.iter().enumerate() {
        if let VarState::Wrapper(w) | VarState::Moved(w) = *v {
            if valid(w, nw) {
                program_refs.bump(w as usize);
            } else {
                err(format_args!("v{i} holds an unknown wrapper"));
            }
        }
    }
    for &w in cycles {
        if valid(w, nw) {
            program_refs.bump(w as usize);
        }
    }
    for (i, h) in s.holders.iter().enumerate() {
        if let Some(h) = *h {
            match s.handles.get(h as usize) {
                Some(hs) if hs.storage => strong.bump(h as usize),
                _ => err(format_args!(
                    "holder h{i} holds obj#{h}, whose storage is freed"
                )),
            }
        }
    }
    for (i, w) in s.weaks.iter().enumerate() {
        if let Some(h) = *w {
            match s.handles.get(h as usize) {
                Some(hs) if hs.storage => weak.bump(h as usize),
                _ => err(format_args!(
                    "weak slot w{i} holds obj#{h}, whose storage is freed"
                )),
            }
        }
    }
    for (i, hs) in s.handles.entries() {
        if let Some(f) = hs.field {
            if valid(f, nh) && s.handles[f as usize].storage {
                strong.bump(f as usize);
            } else {
                err(format_args!("obj#{i}.x points to freed storage"));
            }
        }
        match hs.binding {
            Binding::Active(w) | Binding::Inactive(w) if !valid(w, nw) => {
                err(format_args!(
                    "I5: the tag word of obj#{i} points to memory that is no wrapper"
                ));
            }
            Binding::Active(w) => {
                bound.bump(w as usize);
                let ws = &s.wrappers[w as usize];
                if ws.life != WrapperLife::Live || ws.chandle != Some(i as HandleNo) {
                    err(format_args!(
                        "I5: obj#{i} is Active(wr#{w}) but wr#{w} is {:?} with chandle {}",
                        ws.life,
                        show(ws.chandle)
                    ));
                }
            }
            Binding::Inactive(w) => {
                bound.bump(w as usize);
                let ws = &s.wrappers[w as usize];
                if ws.life != WrapperLife::Live || ws.chandle.is_some() {
                    err(format_args!(
                        "I5: obj#{i} is Inactive(wr#{w}) but wr#{w} is {:?} with chandle {}",
                        ws.life,
                        show(ws.chandle)
                    ));
                }
            }
            Binding::Detached | Binding::Untied => {}
        }
    }

    visit.clear();
    visit.extend(s.wrappers.entries().map(|(w, _)| w));
    visit.extend(&program_refs.touched);
    visit.sort_unstable();
    visit.dedup();
    for &w in visit.iter() {
        let ws = &s.wrappers[w];
        let refs = program_refs.get(w);
        if ws.life != WrapperLife::Live {
            if ws.life == WrapperLife::Freed && refs > 0 {
                err(format_args!(
                    "wr#{w} is freed but the program still refers to it"
                ));
            }
            continue;
        }
        if ws.refs != refs {
            err(format_args!(
                "wr#{w} has {} Python references but the program holds {refs} (vars and cycles)",
                ws.refs
            ));
        }
        if let Some(h) = ws.chandle {
            if refs == 0 {
                err(format_args!(
                    "I1: wr#{w}'s last Python reference is gone but it still owns a strong ref on obj#{h}"
                ));
            }
            match s.handles.get(h as usize) {
                Some(hs) if hs.strong > 0 => strong.bump(h as usize),
                _ => err(format_args!(
                    "I3: wr#{w}.chandle points to obj#{h}, which is dead"
                )),
            }
        } else if refs == 0 && bound.get(w) == 0 {
            err(format_args!(
                "I2: wr#{w} has no Python reference and is cached for no live storage, yet its memory is kept"
            ));
        }
        if bound.get(w) > 1 {
            err(format_args!(
                "I5: wr#{w} is canonical for {} handles",
                bound.get(w)
            ));
        }
    }

    for (i, hs) in s.handles.entries() {
        if !hs.storage {
            continue;
        }
        if hs.strong != strong.get(i) {
            err(format_args!(
                "I4: obj#{i} has strong {} but holders, fields and wrappers own {}",
                hs.strong,
                strong.get(i)
            ));
        }
        let want_weak = weak.get(i) + u32::from(hs.strong > 0);
        if hs.weak != want_weak {
            err(format_args!(
                "I4: obj#{i} has weak {} but weak slots and its strong side own {want_weak}",
                hs.weak
            ));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.trim_end().to_string())
    }
}

fn show(h: Option<HandleNo>) -> String {
    h.map_or_else(|| "NULL".to_string(), |h| format!("obj#{h}"))
}
