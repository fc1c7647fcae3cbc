//! Fuzz targets for every reader of untrusted bytes, one [`Target`] each.
//!
//! A target may return an error for any input; it must never panic, abort or
//! hang. libFuzzer drives them with coverage feedback (`fuzz/libfuzzer`,
//! `scripts/fuzz.sh`); the tests run a short deterministic mutation run of
//! the same targets from the same [`seeds`] ([`mutate`]), so every CI run
//! fuzzes a little.

pub mod mutate;
pub mod seeds;
mod targets;

pub use targets::Target;
