//! pytie: fuzzing and differential testing of PyObject tying.
//!
//! Layers, one module each:
//! - [`native`]: the native object ABI (TVM-FFI layout), allocators,
//!   accounting, and the C++ side of the world (holders, weak slots,
//!   foreign-thread release). Runtime layer: `unsafe` allowed.
//! - [`wrapper`]: the Python wrapper types and the tying state machine
//!   (design S) on CPython through PyO3. Runtime layer: `unsafe` allowed.
//! - [`model`]: the reference model of the contract. No `unsafe`, no Python.
//! - [`program`]: the step language, text and binary forms.
//! - [`state`]: the abstract state both sides produce.
//! - [`backend`]: implementations the executor can drive: pytie's runtime,
//!   and the real `apache-tvm-ffi` wheel through its C API (`backend::tvmffi`,
//!   a runtime layer too: `unsafe` allowed there).
//! - [`exec`]: runs a program on the model and a backend in lockstep.
//! - [`repro`]: a program as a standalone Python script on tvm_ffi.
//! - [`cli`]: the `pytie` command.

pub mod backend;
pub mod cli;
pub mod exec;
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

pub mod model;
#[cfg(feature = "mutants")]
pub mod mutants;
pub mod native;
pub mod program;
pub mod repro;
pub mod state;
pub mod wrapper;
