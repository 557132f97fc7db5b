//! reorder (being written).
