//! Replays every committed fuzz corpus file through its target's body, on stable Rust.
//!
//! The fuzzer (`cargo +nightly fuzz run TARGET`, see SECURITY.md) grows the corpora under
//! `fuzz/corpus/<target>/`; this test keeps every input there passing in CI, which has no
//! nightly toolchain. A target whose corpus directory is missing or empty fails the test,
//! so a corpus cannot silently stop being replayed.
#![forbid(unsafe_code)]

mod targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Every file of a corpus directory, sorted; an error when it is missing or empty.
fn corpus_at(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("{}: no corpus files", dir.display()));
    }
    Ok(files)
}

/// Runs `body` on every corpus file of `target`; returns the files replayed.
fn check(target: &str, body: targets::Body) -> usize {
    let files =
        corpus_at(&corpus_dir(target)).unwrap_or_else(|e| panic!("fuzz target {target}: {e}"));
    let mut failures = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
            failures.push(file.display().to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "fuzz target {target}: inputs failing: {failures:#?}"
    );
    files.len()
}

#[test]
fn every_corpus_file_of_every_target_passes() {
    for (target, body) in targets::TARGETS {
        let replayed = check(target, body);
        println!("{target}: {replayed} corpus files replayed");
    }
}

#[test]
fn every_fuzz_target_has_a_body_here() {
    // The cargo-fuzz crate's targets and this test's table must name the same set.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".rs"))
                .map(str::to_string)
        })
        .collect();
    on_disk.sort();
    let mut here: Vec<String> = targets::TARGETS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    here.sort();
    assert_eq!(on_disk, here);
}

#[test]
fn a_missing_or_empty_corpus_is_refused() {
    let empty = tempfile::tempdir().expect("tempdir");
    let err = corpus_at(empty.path()).expect_err("an empty corpus is refused");
    assert!(err.contains("no corpus files"), "{err}");
    let err = corpus_at(&empty.path().join("absent")).expect_err("a missing corpus is refused");
    assert!(err.contains("absent"), "{err}");
}
