//! The import rule of ARCHITECTURE.md, checked on every `cargo test`: the pure core
//! (trigger parsing, signal meaning and query building, the cache's freshness rule, the
//! response parsers, the sketch, the HPA arithmetic) imports nothing from the shell — no
//! network, file or runtime crate, no server, admin, config or telemetry module.

use std::path::{Path, PathBuf};

/// Paths of the shell no core file may name.
const SHELL_MODULES: &[&str] = &[
    "crate::scaler",
    "crate::server",
    "crate::admin",
    "crate::config",
    "crate::cli",
    "crate::telemetry",
    "crate::demo",
    "crate::check",
    "crate::policy",
];

/// Crates and std modules that do I/O or run things.
const IO_CRATES: &[&str] = &[
    "tokio",
    "reqwest",
    "tonic",
    "axum",
    "hyper",
    "http",
    "aws_",
    "moka",
    "clap",
    "prometheus_client",
    "tracing",
    "std::net",
    "std::fs",
    "std::process",
    "std::env",
    "std::thread",
    "opentelemetry",
];

/// The core: (file or folder under src/, may it name `crate::source`?). The response
/// parsers live beside their backend and use its reading and error types.
const CORE: &[(&str, bool)] = &[
    ("trigger", false),
    ("signal", false),
    ("cache/freshness.rs", false),
    ("source/otlp/sketch.rs", false),
    ("source/prometheus/response.rs", true),
    ("source/tempo/response.rs", true),
];

fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
        out.extend(rust_files(&entry.unwrap().path()));
    }
    out.retain(|p| p.extension().is_some_and(|e| e == "rs"));
    out
}

/// Every path a file names (in `use` lines and inline `a::b` paths), comments left out.
fn violations(text: &str, may_use_source: bool) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut forbidden: Vec<String> = SHELL_MODULES.iter().map(|m| m.to_string()).collect();
        if !may_use_source {
            forbidden.push("crate::source".into());
        }
        for m in &forbidden {
            if contains_path(code, m) {
                found.push(format!("line {}: {m}: {}", n + 1, line.trim()));
            }
        }
        for c in IO_CRATES {
            let named = code
                .split(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == ':'))
                .any(|tok| {
                    let tok = tok.trim_start_matches("::");
                    if c.ends_with('_') {
                        tok.starts_with(c)
                    } else {
                        tok == *c || tok.starts_with(&format!("{c}::"))
                    }
                });
            if named && (code.contains("use ") || code.contains("::")) {
                found.push(format!("line {}: {c}: {}", n + 1, line.trim()));
            }
        }
    }
    found
}

fn contains_path(code: &str, module: &str) -> bool {
    code.match_indices(module).any(|(i, _)| {
        let rest = &code[i + module.len()..];
        rest.is_empty() || !rest.starts_with(|c: char| c.is_alphanumeric() || c == '_')
    })
}

#[test]
fn the_core_imports_nothing_from_the_shell() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut problems = Vec::new();
    let mut files = 0;
    for (path, may_use_source) in CORE {
        for file in rust_files(&src.join(path)) {
            files += 1;
            let text = std::fs::read_to_string(&file).unwrap();
            for v in violations(&text, *may_use_source) {
                problems.push(format!("{}: {v}", file.display()));
            }
        }
    }
    assert!(files >= 12, "the core's files were found ({files})");
    assert!(
        problems.is_empty(),
        "the core names the shell:\n{}",
        problems.join("\n")
    );
}

/// The rule catches what it is meant to (and not comments or look-alike names).
#[test]
fn the_rule_sees_planted_violations() {
    let cases: &[(&str, bool, usize)] = &[
        ("use crate::scaler::Engine;", false, 1),
        ("use crate::source::Reading;", false, 1),
        ("use crate::source::Reading;", true, 0),
        ("let x = tokio::time::sleep(d);", false, 1),
        ("use reqwest::Client;", false, 1),
        ("use aws_sdk_sqs::Client;", false, 1),
        ("use std::fs::read;", false, 1),
        ("// see crate::scaler for the adapter", false, 0),
        ("use crate::signal::promql;", false, 0),
        ("use crate::scalers_like_name;", false, 0),
        ("fn http_status(x: u16) {}", false, 0),
    ];
    for (line, may_use_source, want) in cases {
        assert_eq!(
            violations(line, *may_use_source).len(),
            *want,
            "{line}: {:?}",
            violations(line, *may_use_source)
        );
    }
}
