//! reassembly (being written).
