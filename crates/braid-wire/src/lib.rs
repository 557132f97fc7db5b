//! braid-wire: zero-copy packet views and reprs. No I/O, no unsafe, no allocation.
#![no_std]
#![warn(missing_docs)]
