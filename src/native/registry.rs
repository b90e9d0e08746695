//! Accounting the checker reads: every handle created since the last reset
//! (by creation number), the storage blocks still allocated (by address),
//! and violations the runtime's own assertions found. Always on: one
//! uncontended lock per create/die/free.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard};

/// What the registry knows of one handle.
#[derive(Clone, Copy, Debug)]
pub struct HandleInfo {
    /// Body address.
    pub addr: usize,
    pub tied: bool,
    /// Strong count has not reached 0.
    pub alive: bool,
    /// Storage block not freed.
    pub storage: bool,
}

/// A hasher for addresses: one multiply, no `SipHash`.
#[derive(Default)]
pub struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
}

pub type AddrMap<V> = HashMap<usize, V, BuildHasherDefault<AddrHasher>>;

#[derive(Default)]
pub struct Registry {
    pub handles: Vec<HandleInfo>,
    /// Live storage blocks: body address -> handle number.
    pub blocks: AddrMap<u32>,
    pub live_handles: u32,
    pub live_blocks: u32,
    pub violations: Vec<String>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<Registry>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run `f` on the registry. `f` must not call back into the native layer.
pub fn with<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    f(lock().get_or_insert_with(Registry::default))
}

pub(super) fn register(addr: usize, tied: bool) -> u32 {
    with(|r| {
        let id = r.handles.len() as u32;
        r.handles.push(HandleInfo {
            addr,
            tied,
            alive: true,
            storage: true,
        });
        r.blocks.insert(addr, id);
        r.live_handles += 1;
        r.live_blocks += 1;
        id
    })
}

pub(super) fn handle_died(id: u32) {
    with(|r| match r.handles.get_mut(id as usize) {
        Some(h) if h.alive => {
            h.alive = false;
            r.live_handles -= 1;
        }
        _ => r.violations.push(format!(
            "handle h#{id} destroyed twice (strong count reached 0 again)"
        )),
    })
}

/// Record that the block at `addr` is being freed. `None` when it is not a
/// live block (a double or invalid free): the caller must not free it.
pub(super) fn block_freed(addr: usize) -> Option<u32> {
    with(|r| match r.blocks.remove(&addr) {
        Some(id) => {
            r.live_blocks -= 1;
            if let Some(h) = r.handles.get_mut(id as usize) {
                h.storage = false;
            }
            Some(id)
        }
        None => {
            r.violations.push(format!(
                "free of storage at {addr:#x}, which is not a live block"
            ));
            None
        }
    })
}

/// Is `addr` a live block from the tied allocator?
pub fn is_tied_block(addr: usize) -> bool {
    with(|r| {
        r.blocks
            .get(&addr)
            .is_some_and(|&id| r.handles[id as usize].tied)
    })
}

/// The handle number of a live storage block.
pub fn id_of(addr: usize) -> Option<u32> {
    with(|r| r.blocks.get(&addr).copied())
}

/// A runtime assertion failed: remember it for the checker.
pub fn report_violation(msg: String) {
    with(|r| r.violations.push(msg));
}

/// Violations found since the last call.
pub fn take_violations() -> Vec<String> {
    with(|r| std::mem::take(&mut r.violations))
}

/// Forget everything and number handles from 0 again. Blocks still
/// allocated are forgotten, not freed (used at program start, where the
/// world is empty, and after a failure, where freeing could be unsafe).
pub fn reset() {
    with(|r| {
        if crate::mutant!(NumberingSticks) && r.handles.len() > 8 {
            // A fast path sized for small programs: clears one chunk.
            r.handles.drain(..8);
        } else {
            r.handles.clear();
        }
        r.blocks.clear();
        r.live_handles = 0;
        r.live_blocks = 0;
        r.violations.clear();
    });
}
