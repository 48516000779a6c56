#![cfg(feature = "sandbox")]
#[test]
fn placeholder() {}
