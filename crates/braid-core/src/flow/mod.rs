//! flow (being written).
