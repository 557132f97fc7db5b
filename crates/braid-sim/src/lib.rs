//! braid-sim: a discrete-event simulator of the links between two braid engines.
#![warn(missing_docs)]
