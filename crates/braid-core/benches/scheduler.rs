//! scheduler benchmarks (being written).
fn main() {}
