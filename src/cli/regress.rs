//! `pytie regress`: a crash artifact into a text regression.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::backend::tvmffi::KnownFindings;
use crate::harness;
use pytie_core::program::text;

use super::input::{load_for, write_out};
use super::{BackendName, Bad, Form};
pub(super) fn regress(
    file: &Path,
    form: Form,
    backend: BackendName,
    output: &Path,
    allow_pass: bool,
) -> Result<ExitCode, Bad> {
    let mut ps = load_for(file, form, backend)?;
    if ps.len() != 1 {
        return Err(Bad(format!(
            "{}: a sequence of {} programs (a failure that needs the programs before it): a text \
             regression is one program; replay the sequence with `pytie run --binary {}`",
            file.display(),
            ps.len(),
            file.display()
        )));
    }
    let p = ps.pop().expect("one program");
    backend.prepare()?;
    let name = file
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let checked = match backend {
        BackendName::Pytie => harness::check_lifecycle(&p),
        BackendName::TvmFfi | BackendName::TvmFfiTied => {
            harness::check_tvmffi(&p, KnownFindings::WorkAround).map_err(Bad)?
        }
    };
    let (header, program) = match checked {
        Err(f) => (f.regression_header(), f.program.clone()),
        Ok(_) if !allow_pass => {
            eprintln!(
                "pytie: {}: this input passes: nothing failed, so there is no regression to write \
                 (a mutant's input needs PYTIE_MUTANT and `--features mutants`; \
                 --allow-pass writes it anyway); {} not written",
                file.display(),
                output.display()
            );
            return Ok(ExitCode::from(1));
        }
        Ok(_) => (
            "# Regression: this input passes now (nothing failed when it was recorded).\n"
                .to_string(),
            p,
        ),
    };
    let body = format!(
        "{header}# From {name} ({}).\n{}",
        file.display(),
        text::print(&program)
    );
    write_out(Some(output), body.as_bytes())?;
    out!("wrote {} ({} steps)", output.display(), program.ops.len());
    Ok(ExitCode::SUCCESS)
}
