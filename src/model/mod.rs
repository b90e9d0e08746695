//! The reference model (contract §3 to §6). No `unsafe`, no Python.
#![forbid(unsafe_code)]
