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
//!
//! Freed handles and wrappers keep their numbers but are not stored: a
//! [`Table`] holds the count of numbers given out and the entries that are
//! not freed. Freed is final (storage is never reallocated under the same
//! number), so observing, comparing and checking a state costs time in its
//! live objects, not in every object the program ever made: a program of a
//! million `new` steps costs a million times one step.

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
    /// `pickle` found a cycle in the object graph it was to copy (contract
    /// §4.1: a serializer must refuse it).
    Cyclic,
    /// `pyweak` on a wrapper whose type takes no Python weak reference (no
    /// `__weakref__` slot): Python's TypeError.
    NoWeakref,
    /// The step failed with MemoryError: an allocation `oom` armed failed
    /// (contract §4.4).
    NoMemory,
    /// `call_raise`/`call_move_raise`: the callback raised and its error
    /// came back to Python (contract §4.1 R19).
    Raised,
    /// A wrapper of a `fragile` type the step needed could not be
    /// constructed: the type's `__new__` raised (contract §4.1 R20).
    Refused,
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
    /// Tracked by the cyclic GC (`gc.is_tracked`) while the program holds
    /// it (refs > 0); false otherwise. The model leaves it false; the
    /// executor predicts it from the implementation's GC types
    /// ([`crate::backend::GcWrappers`]).
    pub tracked: bool,
}

impl WrapperState {
    pub const FREED: WrapperState = WrapperState {
        life: WrapperLife::Freed,
        refs: 0,
        chandle: None,
        tracked: false,
    };
}

/// An entry type with a "freed" value, which a [`Table`] does not store.
pub trait Freed: Copy + PartialEq + 'static {
    /// The freed value, as a `'static` reference (what `table[i]` returns
    /// for a freed entry).
    fn freed() -> &'static Self;
    fn is_freed(&self) -> bool {
        self == Self::freed()
    }
}

impl Freed for HandleState {
    fn freed() -> &'static Self {
        &HandleState::FREED
    }
}

impl Freed for WrapperState {
    fn freed() -> &'static Self {
        &WrapperState::FREED
    }
}

/// Entries numbered from 0, freed ones not stored: indexing a freed entry
/// gives the freed value, iterating ([`Table::entries`]) skips freed ones.
/// Two tables are equal when they gave out as many numbers and their
/// not-freed entries are equal: the same as comparing the dense vectors.
#[derive(Clone, Debug, Default)]
pub struct Table<T> {
    len: u32,
    /// Sorted by number. A freed value may be stored transiently (after
    /// `table[i] = FREED`); it is then treated as absent.
    live: Vec<(u32, T)>,
}

impl<T: Freed> Table<T> {
    pub fn clear(&mut self) {
        self.len = 0;
        self.live.clear();
    }

    /// How many numbers were given out (freed entries included).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append entry number `len()`.
    pub fn push(&mut self, t: T) {
        let n = self.len;
        self.len += 1;
        if !t.is_freed() {
            self.live.push((n, t));
        }
    }

    /// Declare numbers below `len` given out (entries not [`set`](Self::set)
    /// are freed).
    pub fn set_len(&mut self, len: usize) {
        self.len = len as u32;
        self.live.retain(|(n, _)| (*n as usize) < len);
    }

    /// Set entry `i` (below `len()`); cheapest in increasing order.
    pub fn set(&mut self, i: usize, t: T) {
        assert!(i < self.len(), "Table::set: index {i} out of {}", self.len);
        *self.slot(i) = t;
    }

    fn find(&self, i: usize) -> Result<usize, usize> {
        match self.live.last() {
            Some(&(n, _)) if (n as usize) < i => Err(self.live.len()),
            _ => self.live.binary_search_by_key(&(i as u32), |(n, _)| *n),
        }
    }

    fn slot(&mut self, i: usize) -> &mut T {
        let k = match self.find(i) {
            Ok(k) => k,
            Err(k) => {
                self.live.insert(k, (i as u32, *T::freed()));
                k
            }
        };
        &mut self.live[k].1
    }

    /// Entry `i`, freed or not; `None` past `len()`.
    pub fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len() {
            return None;
        }
        Some(self.find(i).map_or(T::freed(), |k| &self.live[k].1))
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        (i < self.len()).then(|| self.slot(i))
    }

    /// The entries that are not freed, with their numbers, in order.
    pub fn entries(&self) -> impl Iterator<Item = (usize, &T)> {
        self.live
            .iter()
            .filter(|(_, t)| !t.is_freed())
            .map(|(n, t)| (*n as usize, t))
    }

    /// Like [`entries`](Self::entries), mutably.
    pub fn entries_mut(&mut self) -> impl Iterator<Item = (usize, &mut T)> {
        self.live
            .iter_mut()
            .filter(|(_, t)| !t.is_freed())
            .map(|(n, t)| (*n as usize, t))
    }

    /// Every entry, freed ones included, in order: costs `len()`, for
    /// tests and short programs (per-step code walks [`entries`](Self::entries)).
    pub fn all(&self) -> impl Iterator<Item = &T> {
        (0..self.len()).map(|i| &self[i])
    }

    /// The address of the entries' buffer (a refill in place keeps it).
    pub fn as_ptr(&self) -> *const (u32, T) {
        self.live.as_ptr()
    }

    /// How many entries are not freed.
    pub fn live_len(&self) -> usize {
        self.entries().count()
    }
}

impl<T: Freed> std::ops::Index<usize> for Table<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        self.get(i)
            .unwrap_or_else(|| panic!("index {i} out of a table of {}", self.len))
    }
}

impl<T: Freed> std::ops::IndexMut<usize> for Table<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        let len = self.len;
        self.get_mut(i)
            .unwrap_or_else(|| panic!("index {i} out of a table of {len}"))
    }
}

impl<T: Freed> PartialEq for Table<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.entries().eq(other.entries())
    }
}

impl<T: Freed + Eq> Eq for Table<T> {}

/// Hashes what equality compares (the count and the entries not freed).
impl<T: Freed + std::hash::Hash> std::hash::Hash for Table<T> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.len.hash(h);
        for e in self.entries() {
            e.hash(h);
        }
    }
}

/// Equal to the dense vector of every entry, freed ones included.
impl<T: Freed> PartialEq<Vec<T>> for Table<T> {
    fn eq(&self, other: &Vec<T>) -> bool {
        self.len() == other.len() && other.iter().enumerate().all(|(i, t)| self[i] == *t)
    }
}

impl<T: Freed> FromIterator<T> for Table<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut t = Table {
            len: 0,
            live: Vec::new(),
        };
        for x in iter {
            t.push(x);
        }
        t
    }
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
    /// Finalizers (`__del__`) run this program: one per genuine free of a
    /// wrapper whose type has one (contract §2.2 `del`).
    pub finalized: u32,
}

/// The whole abstract state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct AbstractState {
    pub vars: [VarState; VARS],
    pub holders: [Option<HandleNo>; HOLDERS],
    pub weaks: [Option<HandleNo>; WEAKS],
    pub result: StepResult,
    /// Indexed by `HandleNo`.
    pub handles: Table<HandleState>,
    /// Indexed by `WrapperNo`.
    pub wrappers: Table<WrapperState>,
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
