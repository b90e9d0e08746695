//! The native object layer (contract §2) and the C++ side of the world.
//! Runtime layer: every `unsafe` block says why it holds.

pub mod alloc;
pub mod cpp;
pub mod guard;
pub mod object;
pub mod registry;
pub mod sancov;

pub use cpp::{HandleRef, WeakRef, release_on_foreign_thread};
pub use object::{Object, TYPE_CPP, TYPE_DICT, TYPE_FRAGILE, TYPE_PLAIN};
