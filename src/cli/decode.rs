//! `pytie decode`: a binary program to text.

use std::path::Path;
use std::process::ExitCode;

use pytie_core::program::{binary, text};

use super::input::{decode_noting, read, write_out};
use super::{BackendName, Bad};
/// `pytie decode`: a binary program to text. An input that decodes to no
/// step is an error (its text would be empty, which `run` rejects).
pub(super) fn decode(
    file: &Path,
    output: Option<&Path>,
    backend: BackendName,
) -> Result<ExitCode, Bad> {
    let data = read(file)?;
    let steps = match backend {
        BackendName::Pytie => {
            <crate::backend::pytie::PytieBackend as crate::harness::Target>::steps()
        }
        BackendName::TvmFfi | BackendName::TvmFfiTied => crate::backend::tvmffi::steps(),
    };
    let p = decode_noting(file, &data, steps);
    if p.ops.is_empty() {
        return Err(Bad(format!(
            "{}: {} bytes decode to no step (a binary program is a {}-byte header, then steps); nothing written",
            file.display(),
            data.len(),
            binary::HEADER_LEN
        )));
    }
    write_out(output, text::print(&p).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
