//! Binary form of programs (contract §4.2, docs/format.md).
