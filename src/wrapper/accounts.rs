//! Accounting of wrapper allocations (by allocation serial, which is the
//! abstract state's wrapper number), of cycle nodes, and the shutdown flag.
//! A registry of addresses for the checker, never consulted by the tying
//! state machine: the binding lives in the tag word alone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::native::registry::{AddrMap, report_violation};
use pytie_core::state::WrapperLife;

#[derive(Clone, Copy, Debug)]
pub struct WrapperSlot {
    pub addr: usize,
    pub life: WrapperLife,
}

#[derive(Default)]
pub struct Accounts {
    /// Every wrapper allocated since the last reset, by serial.
    pub slots: Vec<WrapperSlot>,
    /// Allocated wrappers (live or leaked): address -> serial.
    pub by_addr: AddrMap<u32>,
    pub live: u32,
    pub leaked: u32,
    /// Wrappers leaked by `delete_space` after shutdown, by address.
    pub leak_list: Vec<usize>,
    /// Live cycle nodes, by address.
    pub cycles: AddrMap<()>,
}

static ACCOUNTS: Mutex<Option<Accounts>> = Mutex::new(None);
static SHUTDOWN: AtomicBool = AtomicBool::new(false);

fn lock() -> MutexGuard<'static, Option<Accounts>> {
    ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run `f` on the accounts. `f` must not call into Python or the native
/// layer.
pub fn with<R>(f: impl FnOnce(&mut Accounts) -> R) -> R {
    f(lock().get_or_insert_with(Accounts::default))
}

pub(super) fn wrapper_allocated(addr: usize) -> u32 {
    with(|a| {
        let serial = a.slots.len() as u32;
        a.slots.push(WrapperSlot {
            addr,
            life: WrapperLife::Live,
        });
        a.by_addr.insert(addr, serial);
        a.live += 1;
        serial
    })
}

/// A wrapper's memory is being freed. False when `addr` is not an
/// allocated wrapper (the caller must not free it).
pub(super) fn wrapper_freed(addr: usize) -> bool {
    let known = with(|a| match a.by_addr.remove(&addr) {
        Some(serial) => {
            let slot = &mut a.slots[serial as usize];
            match slot.life {
                WrapperLife::Live => a.live -= 1,
                WrapperLife::Leaked => a.leaked -= 1,
                WrapperLife::Freed => {}
            }
            slot.life = WrapperLife::Freed;
            true
        }
        None => false,
    });
    if !known {
        report_violation(format!(
            "free of wrapper memory at {addr:#x}, which is not allocated"
        ));
    }
    known
}

pub(super) fn wrapper_leaked(addr: usize) {
    with(|a| {
        if let Some(&serial) = a.by_addr.get(&addr) {
            let slot = &mut a.slots[serial as usize];
            if slot.life == WrapperLife::Live {
                slot.life = WrapperLife::Leaked;
                a.live -= 1;
                a.leaked += 1;
                a.leak_list.push(addr);
            }
        }
    });
}

/// Take the leak list, turning the leaked wrappers back to live (they are
/// about to be reclaimed).
pub(super) fn take_leaked() -> Vec<usize> {
    with(|a| {
        let list = std::mem::take(&mut a.leak_list);
        for addr in &list {
            if let Some(&serial) = a.by_addr.get(addr) {
                a.slots[serial as usize].life = WrapperLife::Live;
                a.leaked -= 1;
                a.live += 1;
            }
        }
        list
    })
}

pub(super) fn cycle_born(addr: usize) {
    with(|a| a.cycles.insert(addr, ()));
}

pub(super) fn cycle_died(addr: usize) {
    with(|a| a.cycles.remove(&addr));
}

/// The shutdown flag of contract §3 is set.
pub fn shutting_down() -> bool {
    SHUTDOWN.load(Ordering::Acquire)
}

/// Set the shutdown flag (atexit, or the `shutdown` step).
pub fn set_shutdown(on: bool) {
    SHUTDOWN.store(on, Ordering::Release);
}

/// Forget every record and number wrappers from 0 again.
pub(super) fn reset() {
    with(|a| {
        a.slots.clear();
        a.by_addr.clear();
        a.live = 0;
        a.leaked = 0;
        a.leak_list.clear();
        a.cycles.clear();
    });
    if !mutant!(ShutdownFlagSticks) {
        set_shutdown(false);
    }
}
