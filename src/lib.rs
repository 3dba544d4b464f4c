//! Examples, integration tests and benchmarks of `fhe-nn`. The library part only compiles
//! the README's Rust snippets as doctests; the examples share `examples/support/`.

/// The README's Rust snippets, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
