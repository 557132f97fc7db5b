//! buffer (being written).
