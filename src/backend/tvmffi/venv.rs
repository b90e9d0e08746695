//! Where tvm-ffi is installed: a virtual environment made by
//! `scripts/setup-tvmffi` (the published wheel, tying dormant) or
//! `scripts/setup-tvmffi-tied` (built from the sdist with tying on). One
//! build per process: the library is imported once.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The environment chosen by [`select_venv`], if any.
static SELECTED: OnceLock<PathBuf> = OnceLock::new();

/// The build a caller asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// The published wheel (`scripts/setup-tvmffi`), or whatever
    /// `$PYTIE_TVMFFI_VENV` names.
    Default,
    /// The activated build (`scripts/setup-tvmffi-tied`): tying on.
    Tied,
}

/// The virtual environment: the one [`select_venv`] chose, else
/// `$PYTIE_TVMFFI_VENV`, else `.venv/tvmffi` in the checkout.
pub fn venv_dir() -> PathBuf {
    if let Some(p) = SELECTED.get() {
        return p.clone();
    }
    std::env::var_os("PYTIE_TVMFFI_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/tvmffi"))
}

/// The activated build's environment: `$PYTIE_TVMFFI_TIED_VENV` (the
/// variable `scripts/setup-tvmffi-tied` reads), else `.venv/tvmffi-tied`.
pub fn tied_venv_dir() -> PathBuf {
    std::env::var_os("PYTIE_TVMFFI_TIED_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/tvmffi-tied"))
}

/// Choose the build this process loads. Before the library is loaded
/// (the first backend made); asking again for the same one is fine.
pub fn select(build: Build) -> Result<(), String> {
    let dir = match build {
        Build::Default => return Ok(()),
        Build::Tied => tied_venv_dir(),
    };
    if super::glue::loaded_from().is_some_and(|p| p != dir) {
        return Err(format!(
            "tvm-ffi is already loaded from {} in this process; cannot switch to {}",
            venv_dir().display(),
            dir.display()
        ));
    }
    let chosen = SELECTED.get_or_init(|| dir.clone());
    if *chosen != dir {
        return Err(format!(
            "tvm-ffi build {} already selected; cannot switch to {}",
            chosen.display(),
            dir.display()
        ));
    }
    Ok(())
}

/// The environment's site-packages holding `tvm_ffi`.
pub fn site_packages(venv: &Path) -> Result<PathBuf, String> {
    let lib = venv.join("lib");
    let missing = || {
        format!(
            "tvm-ffi is not installed in {}: run scripts/setup-tvmffi (the published wheel) \
             or scripts/setup-tvmffi-tied (tying on, into .venv/tvmffi-tied)",
            venv.display()
        )
    };
    let entries = std::fs::read_dir(&lib).map_err(|_| missing())?;
    for e in entries.flatten() {
        let site = e.path().join("site-packages");
        if e.file_name().to_string_lossy().starts_with("python") && site.join("tvm_ffi").is_dir() {
            return Ok(site);
        }
    }
    Err(missing())
}
