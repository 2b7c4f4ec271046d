//! Fuzz target `scaled_object_ref`: its body lives in `tests/fuzz_corpus/targets.rs`, shared
//! with the corpus replay test.
#![no_main]

#[path = "../../tests/fuzz_corpus/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::scaled_object_ref(data));
