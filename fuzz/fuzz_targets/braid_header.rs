//! Fuzz target: arbitrary bytes as a braid packet, as a TUN IP packet, as a TAP Ethernet frame
//! and as a VXLAN header. Every parse must return without panicking, and whatever parses must
//! re-emit to the same header and parse back to the same repr. The body lives in
//! `braid_wire::fuzzing::braid_header` so `cargo test` replays the corpus with it
//! (crates/braid-wire/tests/fuzz_corpus.rs).
//!
//! Run: `cargo fuzz run braid_header -s none` from fuzz/ (stable toolchain, no sanitizer).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    braid_wire::fuzzing::braid_header(data);
});
