//! The tiny container monitor's pure parts (`logic.rs`) as a library, so
//! that cargo builds, lints and tests them and crispd's std monitor uses
//! the same code. The monitor program itself (`main.rs`, which
//! includes `logic.rs` as a module) is built by crispd's build.rs with
//! plain rustc: static, `panic=abort`, without libc.
#![cfg_attr(not(test), no_std)]

mod logic;

pub use logic::*;

#[cfg(test)]
mod tests;
