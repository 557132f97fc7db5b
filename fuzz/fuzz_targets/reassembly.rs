//! Fuzz target: the reassembler driven by arbitrary operation sequences, checked against a
//! reference model (see `braid_core::fuzzing::reassembly_ops`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    braid_core::fuzzing::reassembly_ops(data);
});
