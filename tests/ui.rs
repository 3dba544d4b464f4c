//! Compile-time behaviour of `fhe_net!`: networks FHE can run compile, the others fail with
//! the errors recorded next to each case.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
