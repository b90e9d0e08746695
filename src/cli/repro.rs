//! `pytie repro --python`: a program as a standalone Python script.

use std::path::Path;
use std::process::ExitCode;

use crate::backend::tvmffi::TvmFfiBackend;
use crate::harness::with_executor;
use pytie_core::backend::Backend;

use super::input::{load_for, write_out};
use super::{BackendName, Bad, Form};
pub(super) fn repro(
    file: &Path,
    form: Form,
    backend: BackendName,
    output: Option<&Path>,
) -> Result<ExitCode, Bad> {
    let p = load_for(file, form, BackendName::TvmFfi)?;
    // The model's profile: the installed tvm-ffi's, else tying off (every
    // published wheel). An explicit `--backend tvm-ffi-tied` must load.
    match backend {
        BackendName::TvmFfiTied => backend.prepare()?,
        BackendName::Pytie => {
            return Err(Bad(
                "repro --python writes a script for tvm_ffi: --backend tvm-ffi or tvm-ffi-tied"
                    .into(),
            ));
        }
        BackendName::TvmFfi => {}
    }
    let tying = match with_executor::<TvmFfiBackend, _>(|ex| ex.backend.tying()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("pytie: {e}; assuming tying off, as in every published wheel");
            false
        }
    };
    let script = pytie_core::repro::python(&p, &file.display().to_string(), tying);
    write_out(output, script.as_bytes())?;
    if let Some(o) = output {
        eprintln!("wrote {} ({} steps)", o.display(), p.ops.len());
    }
    Ok(ExitCode::SUCCESS)
}
