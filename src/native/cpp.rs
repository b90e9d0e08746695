//! The C++ side of the world as Rust types owning raw references: a strong
//! reference ([`HandleRef`], what a holder or a field owns), a weak
//! reference ([`WeakRef`], what a weak slot owns), field access, and the
//! release of a strong reference on another OS thread.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::Instant;

use super::alloc::{DeleteSpace, alloc_legacy, alloc_tied, alloc_untied};
use super::object::{self, Object};
use crate::watchdog::{self, Phase, Side};

/// One strong reference on a native object. Dropping it DecRefs.
#[derive(Debug)]
pub struct HandleRef(NonNull<Object>);

// SAFETY: reference counts are atomic, and destruction that touches Python
// (`delete_space` of a tied object) takes the GIL itself.
unsafe impl Send for HandleRef {}

impl HandleRef {
    /// A new tied object (strong 1), allocated with the given Python-aware
    /// `delete_space`.
    pub fn new_tied(type_index: i32, delete_space: DeleteSpace) -> HandleRef {
        HandleRef(NonNull::new(alloc_tied(type_index, delete_space)).expect("allocation"))
    }

    /// A new untied object (strong 1), from the builtin allocator.
    pub fn new_untied(type_index: i32) -> HandleRef {
        HandleRef(NonNull::new(alloc_untied(type_index)).expect("allocation"))
    }

    /// A new legacy-layout object (strong 1, contract §2.1): no prefix.
    pub fn new_legacy(type_index: i32) -> HandleRef {
        HandleRef(NonNull::new(alloc_legacy(type_index)).expect("allocation"))
    }

    /// Adopt a strong reference the caller owns.
    ///
    /// # Safety
    /// `obj` is live and the caller owns one strong reference on it, which
    /// it hands over.
    pub unsafe fn from_raw(obj: *mut Object) -> HandleRef {
        HandleRef(NonNull::new(obj).expect("null handle"))
    }

    /// Take a new strong reference on a live object.
    ///
    /// # Safety
    /// `obj` is live and stays so for the call (the caller holds a ref).
    pub unsafe fn inc_ref(obj: *mut Object) -> HandleRef {
        // SAFETY: the caller guarantees `obj` is live.
        unsafe { object::inc_ref(obj) };
        HandleRef(NonNull::new(obj).expect("null handle"))
    }

    /// Give up ownership without DecRef: the caller now owns the +1.
    pub fn into_raw(self) -> *mut Object {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }

    pub fn as_ptr(&self) -> *mut Object {
        self.0.as_ptr()
    }

    fn obj(&self) -> &Object {
        // SAFETY: we own a strong reference, so the body is live.
        unsafe { self.0.as_ref() }
    }

    /// The object's creation number.
    pub fn id(&self) -> u32 {
        self.obj().id
    }

    pub fn type_index(&self) -> i32 {
        self.obj().header.type_index
    }

    /// (strong, weak).
    pub fn counts(&self) -> (u32, u32) {
        self.obj().counts()
    }

    /// Another strong reference (IncRef).
    pub fn clone_ref(&self) -> HandleRef {
        // SAFETY: we hold a strong ref.
        unsafe { HandleRef::inc_ref(self.as_ptr()) }
    }

    /// The field `x`, as a new strong reference.
    pub fn field(&self) -> Option<HandleRef> {
        let child = self.obj().field.load(Ordering::Acquire);
        // SAFETY: the field owns a strong ref on `child`, and we hold one on
        // its owner, so `child` is live for the IncRef.
        (!child.is_null()).then(|| unsafe { HandleRef::inc_ref(child) })
    }

    /// Store into the field `x` (the field takes `new`'s reference), then
    /// release the old content.
    pub fn set_field(&self, new: Option<HandleRef>) {
        let new = new.map_or(std::ptr::null_mut(), HandleRef::into_raw);
        let old = self.obj().field.swap(new, Ordering::AcqRel);
        if !old.is_null() {
            // SAFETY: the field owned one strong ref on `old`.
            drop(unsafe { HandleRef::from_raw(old) });
        }
    }

    /// A weak reference to this object.
    pub fn downgrade(&self) -> WeakRef {
        // SAFETY: we hold a strong ref, so the storage is live.
        unsafe { object::weak_hold(self.as_ptr()) };
        WeakRef(self.0)
    }
}

impl Drop for HandleRef {
    fn drop(&mut self) {
        // SAFETY: we own one strong reference and give it up.
        unsafe { object::dec_ref(self.0.as_ptr()) }
    }
}

/// One weak reference on a native object. Dropping it releases the weak
/// count (the storage is freed at weak 0).
#[derive(Debug)]
pub struct WeakRef(NonNull<Object>);

// SAFETY: as for `HandleRef`.
unsafe impl Send for WeakRef {}

impl WeakRef {
    fn obj(&self) -> &Object {
        // SAFETY: our weak reference keeps the storage live.
        unsafe { self.0.as_ref() }
    }

    /// The object's creation number.
    pub fn id(&self) -> u32 {
        self.obj().id
    }

    /// Upgrade ("lock"): a strong reference if the object is alive.
    pub fn upgrade(&self) -> Option<HandleRef> {
        // SAFETY: our weak ref keeps the storage live. (Lazily: a HandleRef
        // built for a failed upgrade would DecRef a dead object when dropped.)
        unsafe { object::try_upgrade(self.0.as_ptr()) }.then(|| HandleRef(self.0))
    }
}

impl Drop for WeakRef {
    fn drop(&mut self) {
        // SAFETY: we own one weak reference and give it up.
        unsafe { object::weak_release(self.0.as_ptr()) }
    }
}

/// The foreign thread's mailbox: one job at a time, handed over and
/// answered with `park`/`unpark`. A hand-off is synchronous (the caller
/// holds [`WORKER`] and sleeps until the answer), so the slot is never
/// contended. An `mpsc` pair did the same at about twice the cost: its
/// wakers take a mutex of their own, contended when the two threads share
/// a CPU (BENCHMARKS.md, issue 14, third stop).
struct Mailbox {
    /// [`IDLE`], [`POSTED`], [`DONE`] or [`DEAD`].
    state: AtomicU8,
    /// The posted reference.
    job: Mutex<Option<HandleRef>>,
    /// The thread waiting for the answer.
    waiter: Mutex<Option<Thread>>,
}

const IDLE: u8 = 0;
const POSTED: u8 = 1;
const DONE: u8 = 2;
/// The foreign thread unwound (a panic while releasing).
const DEAD: u8 = 3;

struct Worker {
    mailbox: Arc<Mailbox>,
    thread: Thread,
    pid: u32,
}

static WORKER: Mutex<Option<Worker>> = Mutex::new(None);

/// Threads this layer started that are still running (the foreign thread):
/// the world's conservation check counts them.
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// How many threads the native layer is running.
pub fn threads_running() -> usize {
    THREADS.load(Ordering::Relaxed)
}

/// Start the foreign thread if this process has none (it is started once
/// and lives for the process; a forked child, AFL++'s fork server's,
/// inherits the slot, not the thread). The conservation check calls it
/// before its first look, so that the thread's start is not a change.
/// Cheap when the thread runs: one atomic load.
pub fn ensure_foreign_thread() {
    if THREADS.load(Ordering::Relaxed) > 0 {
        return;
    }
    let mut guard = WORKER.lock().unwrap_or_else(|e| e.into_inner());
    worker(&mut guard);
}

extern "C" fn forked_child() {
    THREADS.store(0, Ordering::Relaxed);
    FOREIGN_TID.store(0, Ordering::Relaxed);
}

/// Marks the mailbox [`DEAD`] and wakes the waiter if the foreign thread
/// unwinds.
struct OnUnwind(Arc<Mailbox>);

impl Drop for OnUnwind {
    fn drop(&mut self) {
        THREADS.fetch_sub(1, Ordering::Relaxed);
        self.0.state.store(DEAD, Ordering::Release);
        let waiter = self
            .0
            .waiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(w) = waiter {
            w.unpark();
        }
    }
}

fn worker(guard: &mut Option<Worker>) -> &Worker {
    let pid = std::process::id();
    if guard.as_ref().is_none_or(|w| w.pid != pid) {
        static AT_FORK: std::sync::Once = std::sync::Once::new();
        AT_FORK.call_once(|| {
            // SAFETY: registers a handler that only stores to an atomic.
            unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
        });
        let mailbox = Arc::new(Mailbox {
            state: AtomicU8::new(IDLE),
            job: Mutex::new(None),
            waiter: Mutex::new(None),
        });
        let mine = OnUnwind(mailbox.clone());
        THREADS.store(1, Ordering::Relaxed);
        let handle = std::thread::Builder::new()
            .name("pytie-foreign".into())
            .spawn(move || {
                FOREIGN_CPU.store(-1, Ordering::Relaxed);
                // SAFETY: gettid has no preconditions.
                FOREIGN_TID.store(unsafe { libc::gettid() }, Ordering::Relaxed);
                let mb = &mine.0;
                loop {
                    while mb.state.load(Ordering::Acquire) != POSTED {
                        std::thread::park();
                    }
                    let job = mb.job.lock().unwrap_or_else(|e| e.into_inner()).take();
                    let phase = watchdog::enter(Side::Foreign, Phase::Releasing);
                    drop(job);
                    drop(phase);
                    mb.state.store(DONE, Ordering::Release);
                    let waiter = mb.waiter.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if let Some(w) = waiter {
                        w.unpark();
                    }
                }
            })
            .expect("spawn the foreign thread");
        *guard = Some(Worker {
            mailbox,
            thread: handle.thread().clone(),
            pid,
        });
    }
    guard.as_ref().expect("worker")
}

/// The foreign thread's kernel thread id (0: not started yet), and the
/// CPU it was last confined to (-1: none).
static FOREIGN_TID: AtomicI32 = AtomicI32::new(0);
static FOREIGN_CPU: AtomicI32 = AtomicI32::new(-1);

/// Confine the foreign thread to the CPU this thread runs on. The
/// hand-off is synchronous (this thread sleeps until the release is
/// done), so the two never need two CPUs at once; on one CPU each wake-up
/// is a context switch, not a cross-CPU interrupt, which on a virtual
/// machine cost tens of microseconds a `release_foreign` (BENCHMARKS.md,
/// issue 14). A failure (a CPU outside the process's set) leaves the
/// thread where it was.
fn follow_on_this_cpu() {
    let tid = FOREIGN_TID.load(Ordering::Relaxed);
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    if tid == 0 || cpu < 0 || FOREIGN_CPU.load(Ordering::Relaxed) == cpu {
        return;
    }
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is a CPU number the kernel just gave, below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; `tid` is a
    // thread of this process (a stale id only makes the call fail).
    let ok =
        unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) } == 0;
    if ok {
        FOREIGN_CPU.store(cpu, Ordering::Relaxed);
    }
}

/// Drop `r` on another OS thread, one that never holds the GIL unless it
/// takes it, and wait until it has finished. The caller must not hold the
/// GIL while waiting (release it around this call), or a `delete_space`
/// on the other thread that needs the GIL would deadlock. The wait is
/// bounded: after twice the step timeout (the watchdog reports first when
/// it watches the step), it is reported as a hang and the process ends.
pub fn release_on_foreign_thread(r: HandleRef) {
    let mut guard = WORKER.lock().unwrap_or_else(|e| e.into_inner());
    let w = worker(&mut guard);
    follow_on_this_cpu();
    let mb = &w.mailbox;
    if mb.state.load(Ordering::Acquire) == DEAD {
        panic!("the foreign thread died during an earlier release");
    }
    {
        let mut waiter = mb.waiter.lock().unwrap_or_else(|e| e.into_inner());
        if waiter
            .as_ref()
            .is_none_or(|t| t.id() != std::thread::current().id())
        {
            *waiter = Some(std::thread::current());
        }
    }
    *mb.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    mb.state.store(POSTED, Ordering::Release);
    w.thread.unpark();
    let bound = watchdog::timeout() * 2;
    let deadline = Instant::now() + bound;
    loop {
        match mb.state.load(Ordering::Acquire) {
            DONE => break,
            DEAD => panic!("the foreign thread died during a release"),
            _ => {}
        }
        let now = Instant::now();
        if now >= deadline {
            watchdog::stuck(&format!(
                "the interpreter thread waited {:.1} s for the foreign thread to finish a release",
                bound.as_secs_f64()
            ));
        }
        std::thread::park_timeout(deadline - now);
    }
    mb.state.store(IDLE, Ordering::Relaxed);
}
