//! Implementations of [`pytie_core::backend::Backend`]: pytie's own
//! runtime (design S) and apache-tvm-ffi.

pub mod pytie;
pub mod tvmffi;

use pytie_core::program::Op;
use pytie_core::state::StepResult;

/// What both backends do with a step before it reaches Python (contract
/// §4.1 R16, R18), written once: after the interpreter's end only the C++
/// releases act; `finalize` ends it; `oom` arms the next step.
pub(crate) trait Gate {
    /// A C++ release after the interpreter's end (R16); other steps do
    /// nothing then.
    fn release_after_end(&mut self, op: &Op);
    /// `finalize` (R16), in a forked child.
    fn end_interpreter(&mut self) -> StepResult;
    /// The allocation failure `oom` armed for the next step (R18).
    fn armed(&mut self) -> &mut Option<u32>;

    /// `Err(result)` when `op` was handled here; `Ok(armed)` when it runs
    /// in Python, with the allocation it is to fail, if any.
    fn gate(&mut self, op: &Op) -> Result<Option<u32>, StepResult> {
        if crate::interp::ended() {
            self.release_after_end(op);
            return Err(StepResult::Ok);
        }
        match *op {
            Op::Finalize => Err(self.end_interpreter()),
            Op::Oom { k } => {
                *self.armed() = Some(k.k());
                Err(StepResult::Ok)
            }
            _ => Ok(self.armed().take()),
        }
    }
}
