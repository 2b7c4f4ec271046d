//! The import rule of ARCHITECTURE.md, checked on every `cargo test`: the pure core
//! (trigger parsing, signal meaning and query building, the cache's freshness rule, the
//! response parsers, the sketch, the HPA arithmetic) imports nothing from the shell — no
//! network, file or runtime crate, no server, admin, config or telemetry module.
//!
//! Paths are checked as the compiler resolves them, not as written: `super::` and `self::`
//! are made absolute from the file's (and inline `mod`'s) place in the crate, and `use`
//! groups (`use crate::{a, b::c}`, over several lines as rustfmt writes them) are expanded,
//! so `use super::super::scaler::Engine` is `crate::scaler::Engine` to the rule.

use std::path::{Path, PathBuf};

/// Paths of the shell no core file may name.
const SHELL_MODULES: &[&str] = &[
    "crate::engine",
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
    ("source/tempo/response", true),
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

/// The module path of `file` under `src`: `src/signal/capacity.rs` is `signal::capacity`,
/// `src/signal/mod.rs` is `signal`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts
}

/// `text` with comments dropped, each `use` statement on one line, every `self::` and
/// `super::` path made absolute (`crate::…`) from `module` and the inline `mod` blocks
/// around it, and every `::{…}` group also written out as one path per item.
fn resolved(text: &str, module: &[String]) -> String {
    // One statement per line for `use`; comments dropped.
    let mut lines: Vec<String> = Vec::new();
    let mut pending: Option<String> = None;
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("").trim();
        if let Some(p) = pending.as_mut() {
            p.push(' ');
            p.push_str(code);
            if code.contains(';') {
                lines.extend(pending.take());
            }
            continue;
        }
        let is_use = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .any(|u| code.starts_with(u));
        if is_use && !code.contains(';') {
            pending = Some(code.to_string());
        } else {
            lines.push(code.to_string());
        }
    }
    lines.extend(pending);

    let mut out = String::new();
    // Inline modules: (name, brace depth outside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    for code in lines {
        let mut here: Vec<String> = module.to_vec();
        here.extend(inline.iter().map(|(n, _)| n.clone()));
        let line = absolute(&code, &here, module);
        out.push_str(&line);
        out.push('\n');
        for path in expand_groups(&line) {
            out.push_str(&path);
            out.push('\n');
        }
        let opens_mod = code
            .strip_prefix("pub mod ")
            .or_else(|| code.strip_prefix("mod "))
            .and_then(|rest| rest.strip_suffix('{'))
            .map(|name| name.trim().to_string());
        if let Some(name) = opens_mod {
            inline.push((name, depth));
        }
        depth += code.matches('{').count();
        depth = depth.saturating_sub(code.matches('}').count());
        while inline.last().is_some_and(|(_, d)| depth <= *d) {
            inline.pop();
        }
    }
    out
}

/// Rewrites the `self::` / `super::…::` paths of one line as `crate::` paths; a path into
/// the file's own module (`file`; an inline `mod tests` naming `super::*`) stays `self::`:
/// a file may name its own items.
fn absolute(code: &str, module: &[String], file: &[String]) -> String {
    let mut out = String::new();
    let mut rest = code;
    while !rest.is_empty() {
        let boundary = out
            .chars()
            .last()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
        if boundary && (rest.starts_with("super::") || rest.starts_with("self::")) {
            let mut up = 0;
            while let Some(r) = rest.strip_prefix("super::") {
                up += 1;
                rest = r;
            }
            if up == 0 {
                rest = &rest["self::".len()..];
            }
            let base = &module[..module.len().saturating_sub(up)];
            let (root, base) = match base.strip_prefix(file) {
                Some(inner) => ("self::", inner),
                None => ("crate::", base),
            };
            out.push_str(root);
            for m in base {
                out.push_str(m);
                out.push_str("::");
            }
            continue;
        }
        let c = rest.chars().next().unwrap();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Every path a `::{…}` group stands for (`crate::a::{b, c::{d}}` → `crate::a::b`,
/// `crate::a::c::d`), groups within groups included.
fn expand_groups(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some(open) = line.find("::{") else {
        return out;
    };
    let prefix_start = line[..open]
        .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .map_or(0, |i| i + 1);
    let prefix = &line[prefix_start..open];
    let body_start = open + 3;
    let (mut level, mut end) = (1usize, None);
    for (i, c) in line[body_start..].char_indices() {
        match c {
            '{' => level += 1,
            '}' => {
                level -= 1;
                if level == 0 {
                    end = Some(body_start + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let Some(end) = end else {
        return out;
    };
    let (mut item, mut level) = (String::new(), 0usize);
    let mut items = Vec::new();
    for c in line[body_start..end].chars() {
        match c {
            '{' => level += 1,
            '}' => level = level.saturating_sub(1),
            ',' if level == 0 => {
                items.push(std::mem::take(&mut item));
                continue;
            }
            _ => {}
        }
        item.push(c);
    }
    items.push(item);
    for item in items {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let path = if item == "self" {
            prefix.to_string()
        } else {
            format!("{prefix}::{item}")
        };
        out.extend(expand_groups(&path));
        out.push(path);
    }
    // A second group later on the line.
    out.extend(expand_groups(&line[end..]));
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
            let text = resolved(
                &std::fs::read_to_string(&file).unwrap(),
                &module_of(&src, &file),
            );
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

/// Paths are resolved before the rule looks at them: relative paths, groups over several
/// lines and inline modules.
#[test]
fn the_rule_sees_violations_written_as_relative_paths() {
    let module = |m: &str| m.split("::").map(str::to_string).collect::<Vec<_>>();
    let cases: &[(&str, &str, bool)] = &[
        // From signal/promql.rs, super::super is the crate.
        ("use super::super::scaler::Engine;", "signal::promql", true),
        (
            "let e = super::super::scaler::Engine::new();",
            "signal::promql",
            true,
        ),
        ("use super::hpa;", "signal::capacity", false),
        ("use self::inner::X;", "signal", false),
        // A group, over lines as rustfmt writes it.
        (
            "use crate::{\n    scaler::Engine,\n    signal::hpa,\n};",
            "signal::promql",
            true,
        ),
        (
            "use super::super::{config::Args, signal::hpa};",
            "signal::promql",
            true,
        ),
        (
            "use crate::{signal::{hpa, quote}, telemetry::{Metrics}};",
            "signal",
            true,
        ),
        // In an inline `mod tests`, super is the file's module.
        (
            "mod tests {\n    use super::super::scaler::X;\n}",
            "signal::capacity",
            false,
        ),
        (
            "mod tests {\n    use super::super::super::scaler::X;\n}",
            "signal::capacity",
            true,
        ),
        // After the inline module closes, paths resolve from the file again.
        (
            "mod a {\n}\nuse super::super::scaler::X;",
            "signal::capacity",
            true,
        ),
        // A file's tests naming the file's own items.
        (
            "mod tests {\n    use super::*;\n}",
            "source::otlp::sketch",
            false,
        ),
    ];
    for (text, m, want) in cases {
        let r = resolved(text, &module(m));
        let got = violations(&r, false);
        assert_eq!(
            !got.is_empty(),
            *want,
            "{text} in {m}: resolved {r:?}: {got:?}"
        );
    }
    let src = Path::new("/x/src");
    assert_eq!(
        module_of(src, &src.join("signal/mod.rs")),
        vec!["signal".to_string()]
    );
    assert_eq!(
        module_of(src, &src.join("source/otlp/sketch.rs")),
        module("source::otlp::sketch")
    );
}

/// Which top-level modules each top-level module of `src/` names (`crate::x`, after
/// [`resolved`]), tests included: an edge is an edge wherever it is written.
fn module_graph(
    src: &Path,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut modules = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if name == "lib" || name == "main" {
            continue;
        }
        modules.insert(name, path);
    }
    let mut graph = std::collections::BTreeMap::new();
    for (name, path) in &modules {
        let mut edges = std::collections::BTreeSet::new();
        for file in rust_files(path) {
            let text = resolved(
                &std::fs::read_to_string(&file).unwrap(),
                &module_of(src, &file),
            );
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or("");
                for (i, _) in code.match_indices("crate::") {
                    let rest = &code[i + "crate::".len()..];
                    let target: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if target != *name && modules.contains_key(&target) {
                        edges.insert(target);
                    }
                }
            }
        }
        graph.insert(name.clone(), edges);
    }
    graph
}

/// A cycle through `graph`, if there is one.
fn find_cycle(
    graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = std::collections::BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// What the engine (`src/engine/`: planning and evaluation, shared by the gRPC adapter,
/// `check`, `demo` and the analysis endpoint) may not name: the adapters that use it.
const ADAPTERS: &[&str] = &[
    "crate::scaler",
    "crate::server",
    "crate::admin",
    "crate::analysis",
    "crate::check",
    "crate::demo",
    "tonic",
];

/// Lines of `text` (resolved) naming an adapter.
fn adapter_uses(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for m in ADAPTERS {
            let named = if m.starts_with("crate::") {
                contains_path(code, m)
            } else {
                code.split(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == ':'))
                    .any(|tok| tok == *m || tok.starts_with(&format!("{m}::")))
            };
            if named {
                found.push(format!("line {}: {m}: {}", n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn the_engine_knows_nothing_of_its_adapters() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&src.join("engine"));
    assert!(files.len() >= 3, "{files:?}");
    let mut problems = Vec::new();
    for file in &files {
        let text = resolved(
            &std::fs::read_to_string(file).unwrap(),
            &module_of(&src, file),
        );
        for v in adapter_uses(&text) {
            problems.push(format!("{}: {v}", file.display()));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    // Planted: each way of naming an adapter from src/engine/plan.rs is caught.
    for planted in [
        "use crate::scaler::Board;",
        "use super::super::scaler::Board;",
        "use crate::{analysis::AnalysisError, cache::SignalCache};",
        "fn f(status: tonic::Status) -> String { status.to_string() }",
    ] {
        let text = resolved(planted, &["engine".to_string(), "plan".to_string()]);
        assert!(!adapter_uses(&text).is_empty(), "{planted}: {text}");
    }
    assert!(adapter_uses(&resolved(
        "use super::evaluate::X;",
        &["engine".into(), "plan".into()]
    ))
    .is_empty());
}

#[test]
fn no_import_cycle_between_modules() {
    let graph = module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.len() >= 12, "{graph:?}");
    assert_eq!(find_cycle(&graph), None, "{graph:#?}");
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let g = |edges: &[(&str, &str)]| {
        let mut m = std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
        for (a, b) in edges {
            m.entry(a.to_string()).or_default().insert(b.to_string());
            m.entry(b.to_string()).or_default();
        }
        m
    };
    assert_eq!(find_cycle(&g(&[("a", "b"), ("b", "c")])), None);
    assert!(find_cycle(&g(&[("a", "b"), ("b", "c"), ("c", "a")])).is_some());
    assert!(find_cycle(&g(&[("config", "cli"), ("cli", "config")])).is_some());
}
