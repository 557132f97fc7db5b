//! reorder benchmarks (being written).
fn main() {}
