//! Where tvm-ffi is installed: a virtual environment made by
//! `scripts/setup-tvmffi` (the published wheel) or
//! `scripts/setup-tvmffi-tied` (built from the sdist with tying on).

use std::path::{Path, PathBuf};

/// The virtual environment: `$PYTIE_TVMFFI_VENV`, else `.venv/tvmffi` in
/// the checkout.
pub fn venv_dir() -> PathBuf {
    std::env::var_os("PYTIE_TVMFFI_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/tvmffi"))
}

/// The environment's site-packages holding `tvm_ffi`.
pub fn site_packages(venv: &Path) -> Result<PathBuf, String> {
    let lib = venv.join("lib");
    let missing = || {
        format!(
            "tvm-ffi is not installed in {}: run scripts/setup-tvmffi",
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
