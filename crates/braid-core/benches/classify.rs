//! classify benchmarks (being written).
fn main() {}
