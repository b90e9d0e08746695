//! `pytie trace`: the program and the abstract state after every step.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::backend::pytie::PytieBackend;
use crate::harness::{self, with_executor};
use pytie_core::exec::report::state_summary;
use pytie_core::program::text;

use super::input::{is_text, load_pytie};
use super::{Bad, Form};
pub(super) fn trace(file: &Path, form: Form) -> Result<ExitCode, Bad> {
    let p = load_pytie(file, is_text(file, form)).map_err(Bad)?;
    let _ = write!(std::io::stdout(), "{}", text::print(&p));
    out!("---");
    let mut n = 0;
    let label = file.display().to_string();
    let r = with_executor::<PytieBackend, _>(|ex| {
        harness::run_watched(ex, &p, &label, &mut |step, expected, _actual| {
            let title = if step == 0 {
                n += 1;
                format!("teardown {n}")
            } else {
                format!("step {step}: {}", p.ops[step - 1])
            };
            out!("{title}\n{}", state_summary(expected));
        })
    })
    .map_err(Bad)?;
    match r {
        Ok(_) => {
            out!("pass");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            out!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}
