//! The embedded interpreter, shared by every runtime layer and backend:
//! exclusive use of it, the environment it must start with, and where it
//! comes from. Lower than the wrapper layer and the backends, which both
//! use it.

use pyo3::prelude::*;

/// Exclusive use of the interpreter and the runtime: one interpreter and one set of
/// registries per process, so every user (a test, an executor) holds this
/// while it runs a world. Take it before attaching to Python.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static SESSION: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SESSION.lock().unwrap_or_else(|e| e.into_inner())
}

/// Settings that must be in the environment before the interpreter
/// starts, each kept if already set (a fuzzing engine, OSS-Fuzz and
/// ClusterFuzzLite pass no environment to the target, so it sets them):
/// - `PYTHONMALLOC=malloc`, so that AddressSanitizer sees every wrapper
///   allocation (pymalloc's arenas hide them);
/// - `PYTHONHOME=<the executable's directory>/python` when that directory
///   holds a standard library (`python/lib`): a self-contained build
///   (`oss-fuzz/build.sh`) ships libpython and the standard library beside
///   the binary, for runners that have no Python installed;
/// - with `site` false, no `site` import at start-up (`python -S`): no
///   site-packages, `.pth` files or `sitecustomize` (a target that needs
///   nothing installed starts faster: BENCHMARKS.md, issue 14).
pub fn prepare_environment(site: bool) {
    if !site {
        // SAFETY: the interpreter has not started (it reads the flag when
        // it does), and no other thread runs yet.
        #[allow(deprecated)] // deprecated from 3.12 on (PyConfig); 3.11 here
        unsafe {
            pyo3::ffi::Py_NoSiteFlag = 1
        };
    }
    if std::env::var_os("PYTHONMALLOC").is_none() {
        // SAFETY: called before the interpreter starts, from the process's
        // init, before this crate starts any thread; nothing else reads the
        // environment concurrently.
        unsafe { std::env::set_var("PYTHONMALLOC", "malloc") };
    }
    if let (None, Some(home)) = (std::env::var_os("PYTHONHOME"), bundled_home()) {
        // SAFETY: as above: before the interpreter and any thread start.
        unsafe { std::env::set_var("PYTHONHOME", home) };
    }
}

/// `<directory of the executable>/python`, if it holds a standard library.
fn bundled_home() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let home = exe.parent()?.join("python");
    home.join("lib").is_dir().then_some(home)
}

/// Where the running interpreter comes from, one `key: value` a line: its
/// version, `sys.prefix`, the file of the standard library's `os` module,
/// and the libpython this process mapped (from `/proc/self/maps`). Shows
/// that a shipped build uses its own copies (`scripts/check-oss-fuzz`).
pub fn interpreter_origin(py: Python<'_>) -> PyResult<String> {
    let sys = py.import("sys")?;
    let version: String = sys.getattr("version")?.extract()?;
    let prefix: String = sys.getattr("prefix")?.extract()?;
    let os_file: String = py.import("os")?.getattr("__file__")?.extract()?;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let libpython = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("libpython"))
        .unwrap_or("(not mapped)");
    let version = version.split_whitespace().next().unwrap_or_default();
    Ok(format!(
        "python: {version}\nsys.prefix: {prefix}\nos module: {os_file}\nlibpython: {libpython}\n"
    ))
}

/// Where the rule that runs `finalize` in a forked child is written.
const FINALIZE_RULE: &str = "src/child.rs; docs/contract.md §4.1 R16";

/// Every backend refuses `finalize` outside a forked child: no process can
/// undo the interpreter's end ([`FINALIZE_RULE`]).
pub fn refuse_outside_child(op: &pytie_core::program::Op) -> Option<String> {
    (matches!(op, pytie_core::program::Op::Finalize) && !in_forked_child()).then(|| {
        format!(
            "`finalize` ends the interpreter, which no process can undo: it runs only in a \
             child the harness forks ({FINALIZE_RULE})"
        )
    })
}

static ENDED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Has the interpreter ended ([`end`])? Then nothing may call Python:
/// not `Python::attach`, not any C API function but the few that read an
/// object's memory.
pub fn ended() -> bool {
    ENDED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The interpreter's real end (`finalize`, contract §4.1 R16), in a child
/// made by [`fork`]: `vars` become the globals `v0`, `v1`, ... of a module
/// of their own (in `sys.modules`, so module teardown drops them, in that
/// order: its dict dies with it, releasing its values in insertion
/// order), and then `Py_FinalizeEx` runs: the atexit hooks, module
/// teardown, the collection at finalization (the program's reference
/// cycles), and the rest of CPython's end. Returns its status (0: a clean
/// end). The caller must hold no GIL and no Python reference after it.
pub fn end(vars: Vec<Option<Py<PyAny>>>) -> Result<i32, String> {
    if !in_forked_child() {
        return Err("the interpreter ends only in a forked child".into());
    }
    Python::attach(|py| -> PyResult<()> {
        let m = pyo3::types::PyModule::new(py, "pytie_program_vars")?;
        for (i, v) in vars.into_iter().enumerate() {
            m.setattr(format!("v{i}").as_str(), v.unwrap_or_else(|| py.None()))?;
        }
        py.import("sys")?
            .getattr("modules")?
            .set_item("pytie_program_vars", m)?;
        Ok(())
    })
    .map_err(|e| format!("making the vars a module's globals: {e}"))?;
    // SAFETY: this thread holds no GIL (the attach above ended); the
    // interpreter is initialized and this is its only thread (a forked
    // child), so taking the GIL and finalizing from here is what a
    // program's `main` does at its end. Nothing calls Python afterwards
    // ([`ended`]).
    let status = unsafe {
        pyo3::ffi::PyGILState_Ensure();
        pyo3::ffi::Py_FinalizeEx()
    };
    ENDED.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(status)
}

/// [`end`], as a backend's `finalize` step does it: what went wrong, as a
/// violation to report (`None`: a clean end).
pub fn end_step(vars: Vec<Option<Py<PyAny>>>) -> Option<String> {
    match end(vars) {
        Ok(0) => None,
        Ok(status) => Some(format!("`finalize`: Py_FinalizeEx returned {status}")),
        Err(e) => Some(format!("`finalize`: {e}")),
    }
}

/// Which side of [`fork`] this is.
pub enum Forked {
    /// The new process: it carries on from the fork and must end with
    /// [`exit_child`].
    Child,
    /// The process that forked, with the child's pid.
    Parent(i32),
}

static IN_CHILD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Is this process a child made by [`fork`]? (What may only happen once
/// in a process's life, such as the interpreter's end, may happen there.)
pub fn in_forked_child() -> bool {
    IN_CHILD.load(std::sync::atomic::Ordering::Relaxed)
}

/// Fork the process the way CPython's `os.fork()` does
/// (`PyOS_BeforeFork`, `fork`, `PyOS_AfterFork_Parent` or
/// `PyOS_AfterFork_Child`), holding the GIL (`_py`). The child has only the
/// calling thread; it is killed when the parent dies (`PR_SET_PDEATHSIG`).
pub fn fork(_py: Python<'_>) -> Result<Forked, String> {
    // SAFETY: the GIL is held (the token), as PyOS_BeforeFork and the
    // AfterFork calls require; `fork` has no preconditions, and in the
    // child only async-signal-unsafe work that CPython's own os.fork does
    // (PyOS_AfterFork_Child re-initialises the runtime's locks and thread
    // states) happens before Rust code continues on this one thread.
    unsafe {
        pyo3::ffi::PyOS_BeforeFork();
        let pid = libc::fork();
        if pid < 0 {
            pyo3::ffi::PyOS_AfterFork_Parent();
            return Err(format!("fork failed: {}", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            pyo3::ffi::PyOS_AfterFork_Child();
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            IN_CHILD.store(true, std::sync::atomic::Ordering::Relaxed);
            Ok(Forked::Child)
        } else {
            pyo3::ffi::PyOS_AfterFork_Parent();
            Ok(Forked::Parent(pid))
        }
    }
}

/// How a child made by [`fork`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildEnd {
    Exited(i32),
    Signaled(i32),
}

/// Wait for the child `pid` to end (retrying on EINTR).
pub fn wait_child(pid: i32) -> Result<ChildEnd, String> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer; `pid` is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("waitpid({pid}) failed: {e}"));
        }
    }
    Ok(if libc::WIFSIGNALED(status) {
        ChildEnd::Signaled(libc::WTERMSIG(status))
    } else {
        ChildEnd::Exited(libc::WEXITSTATUS(status))
    })
}

/// Kill the child `pid` (a hung one) and reap it.
pub fn kill_child(pid: i32) {
    // SAFETY: plain syscalls on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = wait_child(pid);
}

/// End a child made by [`fork`] at once: no atexit handlers, no
/// destructors, no LeakSanitizer pass (the parent owns the world's end).
pub fn exit_child(code: i32) -> ! {
    // SAFETY: `_exit` is always safe to call; it does not return.
    unsafe { libc::_exit(code) }
}
