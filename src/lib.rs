//! pytie: fuzzing and differential testing of PyObject tying. This crate
//! holds what runs on CPython; the language, the model, the executor and
//! its oracles are in `pytie-core` (no `unsafe`, no Python).
//!
//! Layers, lowest first (a lower one never imports a higher one):
//! - [`interp`]: the embedded interpreter (exclusive use, environment).
//! - [`watchdog`]: the step watchdog (hangs are findings) and the
//!   per-thread phases the runtime sets around blocking calls.
//! - [`native`]: the native object ABI (TVM-FFI layout), allocators,
//!   accounting, and the C++ side of the world (holders, weak slots,
//!   foreign-thread release). Runtime layer: `unsafe` allowed.
//! - [`wrapper`]: the Python wrapper types and the tying state machine
//!   (design S) on CPython through PyO3. Runtime layer: `unsafe` allowed.
//! - [`backend`]: implementations of `pytie_core::backend::Backend`:
//!   pytie's runtime, and the real apache-tvm-ffi through its C API
//!   (`backend::tvmffi`, a runtime layer too: `unsafe` allowed there).
//! - [`conservation`]: what outlives a program, read before and after it.
//! - [`child`]: the end of a program in a forked child (`shutdown` on a
//!   backend whose shutdown cannot be undone).
//! - [`harness`]: the one harness the fuzz targets, the corpus replay and
//!   the CLI share.
//! - [`exhaust`]: `pytie exhaust`, the bounded search checked on a backend.
//! - [`cli`]: the `pytie` command.

pub mod alloc_fault;
pub mod backend;
pub mod child;
pub mod cli;
pub mod conservation;
pub mod exhaust;
pub mod harness;
pub mod interp;
/// `mutant!(Name)`: the injected fault `Name` is chosen (feature
/// `mutants`, `PYTIE_MUTANT`). The literal `false` without the feature, so
/// faulty branches are compiled away.
#[macro_export]
macro_rules! mutant {
    ($m:ident) => {{
        #[cfg(feature = "mutants")]
        {
            $crate::mutants::is($crate::mutants::Mutant::$m)
        }
        #[cfg(not(feature = "mutants"))]
        {
            false
        }
    }};
}

#[cfg(feature = "mutants")]
pub mod mutants;

/// `PYTIE_MUTANT` checked at start-up (`pytie`, the fuzz targets' init):
/// set on a build without the feature `mutants` it would test nothing, so
/// it is an error naming the feature; an unknown name on a build with it
/// is an error listing the names. `Err` is the message (exit 2).
pub fn check_mutant_env() -> Result<(), String> {
    let Some(name) = std::env::var_os("PYTIE_MUTANT").filter(|v| !v.is_empty()) else {
        return Ok(());
    };
    let name = name.to_string_lossy();
    #[cfg(feature = "mutants")]
    {
        match mutants::Mutant::from_name(&name) {
            Some(_) => Ok(()),
            None => {
                let names: Vec<&str> = mutants::Mutant::ALL.iter().map(|m| m.name()).collect();
                Err(format!(
                    "unknown PYTIE_MUTANT {name:?}; one of: {}",
                    names.join(", ")
                ))
            }
        }
    }
    #[cfg(not(feature = "mutants"))]
    {
        Err(format!(
            "PYTIE_MUTANT={name} is set, but this build has no mutants (cargo feature `mutants`): \
             build with `--features mutants` (`cargo run --features mutants -- ...`, \
             `scripts/fuzz --mutant {name}`), or unset PYTIE_MUTANT"
        ))
    }
}
pub mod native;
pub mod watchdog;
pub mod wrapper;
