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
    let mut ps = load_for(file, form, BackendName::TvmFfi)?;
    if ps.len() != 1 {
        return Err(Bad(format!(
            "{}: a sequence of {} programs: repro --python writes a script for one program; \
             replay the sequence with `pytie run --binary --backend tvm-ffi {}`",
            file.display(),
            ps.len(),
            file.display()
        )));
    }
    let p = ps.pop().expect("one program");
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
