//! The braid binary.
fn main() {}
