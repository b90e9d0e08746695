//! Text form of programs (contract §4.1).
