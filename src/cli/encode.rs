//! `pytie encode`: a text program to binary.

use std::path::Path;
use std::process::ExitCode;

use pytie_core::program::binary;

use super::Bad;
use super::input::{load, write_out};
/// `pytie encode`: a text program to binary. Refuses (exit 2) to drop
/// steps past the binary form's limit unless `truncate`.
pub(super) fn encode(file: &Path, output: Option<&Path>, truncate: bool) -> Result<ExitCode, Bad> {
    let p = load(file, true).map_err(Bad)?;
    let steps = p.ops.iter().filter(|op| !op.is_assertion()).count();
    let max = binary::MAX_STEPS;
    if steps > max {
        let dropped = steps - max;
        let what = format!(
            "{}: {steps} steps, but a binary program holds at most {max}: \
             the last {dropped} (steps {} to {steps}, assertions not counted)",
            file.display(),
            max + 1
        );
        if !truncate {
            return Err(Bad(format!(
                "{what} would be dropped; nothing written (--truncate keeps the first {max})"
            )));
        }
        eprintln!("pytie: warning: {what} are dropped (--truncate)");
    }
    write_out(output, &binary::encode(&p))?;
    Ok(ExitCode::SUCCESS)
}
