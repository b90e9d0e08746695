//! The findings policy: how the backend treats the recorded upstream
//! findings (corpus/upstream/), which steps it refuses and why, and the
//! workaround for the field-store leak.

use pytie_core::program::{Holds, ObjKind, Op, SourceRule, StepKind, Var};

use super::capi;
use super::{LEAK_FINDING, LEGACY_FINDING, MOVED_FINDING};

/// How recorded upstream findings are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KnownFindings {
    /// Run into them: the field-store leak fails the program as an upstream
    /// failure. (Steps that would crash the process are refused anyway.)
    #[default]
    Report,
    /// Work around the field-store leak, reporting each workaround, so a
    /// campaign or a replay checks everything else.
    WorkAround,
}

/// Why the backend refuses `op`, if it does: a use of a moved-from object
/// the library dereferences ([`MOVED_FINDING`]: the steps the source-slot
/// rule, §4.1, fails with *moved*), an untied object under tying on, or,
/// when `legacy_aborts` (a campaign or replay on the AddressSanitizer build
/// with tying on, where the process would abort), a legacy-layout object
/// ([`LEGACY_FINDING`]). `holds` says what each var holds now.
pub(super) fn refusal(
    op: &Op,
    version: &str,
    tying: bool,
    legacy_aborts: bool,
    holds: impl Fn(Var) -> Holds,
) -> Option<String> {
    let derefs = matches!(
        op.kind(),
        Some(StepKind::Echo | StepKind::Get | StepKind::Set | StepKind::Unset)
    );
    let touches_moved = match *op {
        _ if derefs => op.source_rule(holds) == SourceRule::Moved,
        Op::New {
            kind: ObjKind::Untied,
            ..
        } if tying => {
            return Some(
                "tvm-ffi with tying on has no way to make an untied py_class object".to_string(),
            );
        }
        Op::New {
            kind: ObjKind::Legacy,
            ..
        } if legacy_aborts => {
            return Some(format!(
                "apache-tvm-ffi {version} with tying on reads 8 bytes before a legacy-layout \
                 object's body when it returns it (`TVMFFIPyIsCanonical`; AddressSanitizer \
                 aborts: heap-buffer-overflow) ({LEGACY_FINDING}); the contract expects it to \
                 behave as untied (§2.1)"
            ));
        }
        _ => false,
    };
    touches_moved.then(|| {
        format!(
            "apache-tvm-ffi {version} crashes the process (SIGSEGV) on this use of a moved-from \
             object ({MOVED_FINDING}); the contract expects the error *moved*"
        )
    })
}

/// The [`LEAK_FINDING`] workaround after a store of the object at `addr`:
/// release the `leak` strong refs nobody owns (the wrapper and the field
/// keep it alive), as a fixed library would not have taken them. Returns
/// what was done, for the report.
///
/// # Safety
/// The object at `addr` was just stored into a field by a library that
/// leaked `leak` strong references on it, and is alive.
pub(super) unsafe fn release_store_leak(addr: usize, leak: u32) -> String {
    for _ in 0..leak {
        // SAFETY: the caller's contract: these references are owned by
        // nobody, and the field and the wrapper keep the object alive.
        unsafe { capi::dec_ref(addr) };
    }
    format!("released the {leak} strong ref the store leaked ({LEAK_FINDING})")
}
