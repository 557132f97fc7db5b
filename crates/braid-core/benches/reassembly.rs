//! reassembly benchmarks (being written).
fn main() {}
