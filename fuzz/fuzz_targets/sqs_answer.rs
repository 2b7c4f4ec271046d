//! Fuzz target `sqs_answer`: its body lives in `tests/fuzz_corpus/targets.rs`, shared with
//! the corpus replay test.
#![no_main]

#[path = "../../tests/fuzz_corpus/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::sqs_answer(data));
