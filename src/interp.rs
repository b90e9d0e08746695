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
