//! Conservation of the world outside the program: before and after every
//! program the harness reads what every program shares and none may change
//! for good (Python's singletons' and the runtime's types' reference
//! counts, the shutdown flag, the threads, the registry's totals) and
//! fails the program that changed it ([`FailureKind::WorldDrift`]). Damage
//! of that kind (a reference-count slip on `None`, a flag `reset()` does
//! not reset) otherwise shows up programs later, in a program whose
//! artifact passes alone. Cheap: a few loads per program, and one read of
//! `/proc/self/stat` when the process is the harness's alone
//! ([`own_process`]).
//!
//! [`FailureKind::WorldDrift`]: pytie_core::exec::FailureKind::WorldDrift

use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::Python;

use crate::native;
use crate::wrapper::{self, accounts};

/// What the world outside a program looks like: (what, value) pairs, in a
/// fixed order. Reused from program to program ([`snapshot`] refills it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct World(Vec<(&'static str, i64)>);

impl World {
    /// Start a new look (a backend other than pytie's fills it itself).
    pub fn clear(&mut self) {
        self.0.clear();
    }
    /// One item of the world and its value now.
    pub fn push(&mut self, what: &'static str, value: i64) {
        self.0.push((what, value));
    }
}

static OWN_PROCESS: AtomicBool = AtomicBool::new(false);

/// The process runs nothing but the harness (a fuzz target, `pytie run`):
/// its OS thread count is part of the world too. Not under `cargo test`,
/// whose test threads come and go.
pub fn own_process(on: bool) {
    OWN_PROCESS.store(on, Ordering::Relaxed);
}

/// The process's thread count (`/proc/self/stat`, field 20), if known.
/// The file stays open and is read with one `pread` per call (opening,
/// `statx` and a growing buffer cost 9 system calls a look, two looks a
/// program: most of `pytie exhaust`'s time went there).
fn os_threads() -> Option<i64> {
    use std::os::unix::fs::FileExt;
    static STAT: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    let f = STAT
        .get_or_init(|| std::fs::File::open("/proc/self/stat").ok())
        .as_ref()?;
    let mut buf = [0u8; 1024];
    let n = f.read_at(&mut buf, 0).ok()?;
    let stat = std::str::from_utf8(&buf[..n]).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(17)?.parse().ok()
}

/// Look at the world now. The GIL is held (`py`). Starts the foreign
/// thread first if it is not running (it lives for the process: its
/// start is not a change a program made).
pub fn snapshot(py: Python<'_>, world: &mut World) {
    native::cpp::ensure_foreign_thread();
    let v = &mut world.0;
    v.clear();
    wrapper::shared_refcounts(py, |n, c| v.push((n, c as i64)));
    v.push(("the shutdown flag", i64::from(accounts::shutting_down())));
    v.push((
        "threads the native layer runs",
        native::cpp::threads_running() as i64,
    ));
    if OWN_PROCESS.load(Ordering::Relaxed)
        && let Some(n) = os_threads()
    {
        v.push(("threads of the process (/proc/self/stat)", n));
    }
    let (handles, blocks, pending, numbered) = native::registry::with(|r| {
        (
            i64::from(r.live_handles),
            i64::from(r.live_blocks),
            r.violations.len() as i64,
            r.handles.len() as i64,
        )
    });
    let (live, leaked, cycles, wrappers_numbered, door) = accounts::with(|a| {
        (
            i64::from(a.live),
            i64::from(a.leaked),
            a.cycles.len() as i64,
            a.slots.len() as i64,
            a.leak_list.len() as i64,
        )
    });
    v.extend([
        ("live native objects", handles),
        ("allocated storage blocks", blocks),
        ("allocated wrappers", live),
        ("leaked wrappers", leaked),
        ("uncollected cycles", cycles),
        ("unreported runtime assertions", pending),
        // Read after the reset that ends a program (harness::run_watched):
        // what the next program starts from.
        (
            "objects the registry has numbered (the next object's number)",
            numbered,
        ),
        (
            "wrappers the accounts have numbered (the next wrapper's number)",
            wrappers_numbered,
        ),
        ("wrappers on the reclaim door's list", door),
        (
            "freed blocks in the quarantine",
            native::guard::held() as i64,
        ),
    ]);
}

/// What differs between `before` and `after`, one line each.
pub fn drift(before: &World, after: &World) -> Vec<String> {
    let mut out = Vec::new();
    for (i, &(name, b)) in before.0.iter().enumerate() {
        match after.0.get(i) {
            Some(&(n, a)) if n == name && a == b => {}
            Some(&(n, a)) if n == name => {
                let what = if i < refcount_items(before) {
                    format!("the reference count of {name}")
                } else {
                    name.to_string()
                };
                out.push(format!(
                    "{what}: {b} before the program, {a} after ({:+})",
                    a - b
                ));
            }
            _ => out.push(format!("{name}: {b} before the program, not known after")),
        }
    }
    out
}

/// How many of the first items are reference counts.
fn refcount_items(w: &World) -> usize {
    w.0.iter()
        .position(|(n, _)| *n == "the shutdown flag")
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_names_what_changed_with_both_values() {
        let before = World(vec![("None", 100), ("the shutdown flag", 0)]);
        assert!(drift(&before, &before.clone()).is_empty());
        let after = World(vec![("None", 99), ("the shutdown flag", 1)]);
        assert_eq!(
            drift(&before, &after),
            vec![
                "the reference count of None: 100 before the program, 99 after (-1)".to_string(),
                "the shutdown flag: 0 before the program, 1 after (+1)".to_string(),
            ]
        );
    }

    #[test]
    fn the_thread_count_is_read() {
        assert!(os_threads().is_some_and(|n| n >= 1));
    }
}
