//! pytie-core: everything pytie checks *with*, none of what it checks.
//!
//! - [`program`]: the step language; the vocabulary is declared once
//!   ([`program::vocab`]) and the text form, the binary form and the test
//!   strategy all come from that declaration.
//! - [`state`]: the abstract state of contract §5, what both sides produce.
//! - [`model`]: the reference model of the contract (`docs/contract.md`),
//!   which also says which transition each step takes.
//! - [`backend`]: the trait an implementation under test fills in.
//! - [`exec`]: the lockstep executor, invariants, reports, coverage.
//! - [`exhaust`]: exhaustive bounded checking over the model's states.
//! - [`repro`]: a program as a standalone Python script on tvm_ffi.
//!
//! No `unsafe` and no Python: this crate's tests run on a machine without
//! libpython. The runtime layers and backends live in the `pytie` crate.
#![forbid(unsafe_code)]

pub mod backend;
pub mod exec;
pub mod exhaust;
pub mod model;
pub mod program;
pub mod repro;
pub mod state;
pub mod tvmffi;
