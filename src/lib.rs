//! Shared helpers of the examples, integration tests and benchmarks of `fhe-nn`: the shipped
//! data sets with their fixed splits, and the end-to-end run of the examples.

pub mod data;
pub mod driver;

/// The README's Rust snippets, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
