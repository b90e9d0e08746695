//! Implementations of [`pytie_core::backend::Backend`]: pytie's own
//! runtime (design S) and apache-tvm-ffi.

pub mod pytie;
pub mod tvmffi;
