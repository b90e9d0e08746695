//! A model state's identity up to renaming, for the exhaustive search
//! (`crate::exhaust`): two model states get the same key exactly when one
//! is the other with the vars, the holders and the weak slots permuted
//! (within the search's bounds) and the handles and wrappers renumbered.
//!
//! The key is a complete description of what the model will do next:
//! every slot, every live handle (counts, binding, field, the kind `new`
//! asked for, when tying is on), every live wrapper (life, refs, chandle), the cycles awaiting
//! `collect` in their order, the shutdown flag, whether the interpreter
//! has ended (`finalize`), how many handles were
//! created (the search bounds that total) and how many wrappers were leaked
//! at shutdown. What it leaves out cannot change a later step: freed
//! handles and wrappers (nothing refers to them again), the result of the
//! last step, the transitions already taken.
//!
//! Handles and wrappers are numbered by first appearance: the vars in the
//! permuted order, then the holders, the weak slots and the cycles, each
//! reference met numbering what it names; then the contents of each
//! numbered entity in numbering order (which may number more). Handles that
//! nothing above reaches (two objects whose fields hold each other, both
//! dropped) follow in creation order. The key of a state is the least such
//! description over all permutations of the slots.
//!
//! One thing the renaming does not preserve: teardown (contract §6) clears
//! fields in creation order, so two states with the same key may run
//! teardown's cascades in different orders. Both must end empty; the search
//! checks teardown from the state its shortest program reaches.

use super::{Model, Val};
use crate::program::ObjKind;
use crate::state::{Binding, HandleNo, WrapperLife, WrapperNo};

const UNSEEN: u32 = u32::MAX;

/// Scratch buffers for [`Model::canonical_key`], reused between calls.
#[derive(Default)]
pub struct Canon {
    hmap: Vec<u32>,
    wmap: Vec<u32>,
    /// Entities in numbering order: `(is_handle, original number)`.
    queue: Vec<(bool, u32)>,
    cur: Vec<u8>,
    best: Vec<u8>,
    perm_v: Vec<usize>,
    perm_h: Vec<usize>,
    perm_w: Vec<usize>,
}

/// A number in the key: small numbers are one byte, the rest five.
fn num(out: &mut Vec<u8>, n: u32) {
    if n < 255 {
        out.push(n as u8);
    } else {
        out.push(255);
        out.extend_from_slice(&n.to_le_bytes());
    }
}

/// The next permutation in lexicographic order; `false` after the last.
fn next_perm(p: &mut [usize]) -> bool {
    let n = p.len();
    if n < 2 {
        return false;
    }
    let mut i = n - 1;
    while i > 0 && p[i - 1] >= p[i] {
        i -= 1;
    }
    if i == 0 {
        return false;
    }
    let mut j = n - 1;
    while p[j] <= p[i - 1] {
        j -= 1;
    }
    p.swap(i - 1, j);
    p[i..].reverse();
    true
}

impl Canon {
    fn handle(&mut self, out_ref: &mut Vec<u8>, h: HandleNo) {
        let slot = &mut self.hmap[h as usize];
        if *slot == UNSEEN {
            *slot = self.queue.len() as u32;
            self.queue.push((true, h));
        }
        num(out_ref, *slot);
    }

    fn wrapper(&mut self, out_ref: &mut Vec<u8>, w: WrapperNo) {
        let slot = &mut self.wmap[w as usize];
        if *slot == UNSEEN {
            *slot = self.queue.len() as u32;
            self.queue.push((false, w));
        }
        num(out_ref, *slot);
    }

    fn opt_handle(&mut self, out: &mut Vec<u8>, h: Option<HandleNo>) {
        match h {
            None => out.push(0),
            Some(h) => {
                out.push(1);
                self.handle(out, h);
            }
        }
    }

    /// Describe the entities queued from `from` on (the queue grows while
    /// it is read).
    fn drain(&mut self, m: &Model, out: &mut Vec<u8>, mut i: usize) -> usize {
        while i < self.queue.len() {
            let (is_handle, n) = self.queue[i];
            i += 1;
            if is_handle {
                let hs = m.handles[n as usize];
                out.push(b'H');
                num(out, hs.strong);
                num(out, hs.weak);
                out.push(u8::from(hs.storage));
                // With tying off every object behaves as untied, whatever
                // `new` asked for, but for a type that refuses (R20).
                let kind = if m.tying || m.kinds[n as usize].refuses_construction() {
                    m.kinds[n as usize]
                } else {
                    ObjKind::Untied
                };
                out.push(kind as u8);
                match hs.binding {
                    Binding::Untied => out.push(0),
                    Binding::Detached => out.push(1),
                    Binding::Active(w) => {
                        out.push(2);
                        self.wrapper(out, w);
                    }
                    Binding::Inactive(w) => {
                        out.push(3);
                        self.wrapper(out, w);
                    }
                }
                self.opt_handle(out, hs.field);
            } else {
                let ws = m.wrappers[n as usize];
                out.push(b'W');
                out.push(match ws.life {
                    WrapperLife::Live => 0,
                    WrapperLife::Freed => 1,
                    WrapperLife::Leaked => 2,
                });
                num(out, ws.refs);
                // With tying off no wrapper is ever cached, whatever its type.
                let ty = m.types[n as usize];
                out.push(u8::from(m.tying && ty.eligible) | u8::from(ty.refuses) << 1);
                self.opt_handle(out, ws.chandle);
            }
        }
        i
    }

    /// The description of `m` with the slots in the given order.
    fn describe(&mut self, m: &Model, out: &mut Vec<u8>) {
        out.clear();
        self.queue.clear();
        self.hmap.clear();
        self.hmap.resize(m.handles.len(), UNSEEN);
        self.wmap.clear();
        self.wmap.resize(m.wrappers.len(), UNSEEN);
        let perm_v = std::mem::take(&mut self.perm_v);
        for &v in &perm_v {
            match m.vars[v] {
                Val::Empty => out.push(0),
                Val::None => out.push(1),
                Val::W(w) => {
                    out.push(2);
                    self.wrapper(out, w);
                }
            }
        }
        self.perm_v = perm_v;
        let perm_h = std::mem::take(&mut self.perm_h);
        for &h in &perm_h {
            self.opt_handle(out, m.holders[h]);
        }
        self.perm_h = perm_h;
        let perm_w = std::mem::take(&mut self.perm_w);
        for &w in &perm_w {
            self.opt_handle(out, m.weaks[w]);
        }
        self.perm_w = perm_w;
        num(out, m.cycles.len() as u32);
        for &w in &m.cycles {
            self.wrapper(out, w);
        }
        let done = self.drain(m, out, 0);
        // Handles nothing above reaches, in creation order.
        out.push(b'|');
        for h in 0..m.handles.len() {
            if self.hmap[h] == UNSEEN && m.handles[h].storage {
                self.handle(out, h as HandleNo);
            }
        }
        self.drain(m, out, done);
        out.push(u8::from(m.shutdown));
        out.push(u8::from(m.ended));
        num(out, m.handles.len() as u32);
        let leaked = m
            .wrappers
            .iter()
            .filter(|w| w.life == WrapperLife::Leaked)
            .count();
        num(out, leaked as u32);
    }
}

impl Model {
    /// The key of this state up to renaming (module documentation), the
    /// first `vars` vars, `holders` holders and `weaks` weak slots being
    /// interchangeable among themselves. Slots beyond those take part in
    /// the key in their own places. Written into `out`.
    pub fn canonical_key(
        &self,
        vars: usize,
        holders: usize,
        weaks: usize,
        c: &mut Canon,
        out: &mut Vec<u8>,
    ) {
        let (vars, holders, weaks) = (
            vars.min(self.vars.len()),
            holders.min(self.holders.len()),
            weaks.min(self.weaks.len()),
        );
        c.perm_v = (0..self.vars.len()).collect();
        c.perm_h = (0..self.holders.len()).collect();
        c.perm_w = (0..self.weaks.len()).collect();
        let mut best = std::mem::take(&mut c.best);
        let mut cur = std::mem::take(&mut c.cur);
        best.clear();
        let mut first = true;
        loop {
            c.describe(self, &mut cur);
            if first || cur < best {
                std::mem::swap(&mut cur, &mut best);
                first = false;
            }
            // Odometer over the three groups' permutations.
            if next_perm(&mut c.perm_w[..weaks]) {
                continue;
            }
            c.perm_w[..weaks].sort_unstable();
            if next_perm(&mut c.perm_h[..holders]) {
                continue;
            }
            c.perm_h[..holders].sort_unstable();
            if next_perm(&mut c.perm_v[..vars]) {
                continue;
            }
            break;
        }
        out.clear();
        out.extend_from_slice(&best);
        c.best = best;
        c.cur = cur;
    }
}

impl Model {
    /// Handles created so far (`new` steps run since the last reset).
    pub fn handle_count(&self) -> usize {
        self.handles.len()
    }
}
