//! Which metadata keys each (signal, source) uses, and the reader that records which keys
//! were read and what was wrong with them.

use std::collections::HashMap;

use super::{clip, Problem, SignalKind, SourceKind};

/// Keys KEDA itself puts in the metadata of external triggers; accepted and ignored.
pub(super) const KEDA_KEYS: &[&str] = &["scalerAddress", "enableTLS", "unsafeSsl"];

/// Most keys one trigger may carry (KEDA's own keys included).
pub const MAX_KEYS: usize = 64;
/// Longest value of an ordinary key, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024;
/// Longest raw query (`query`), in bytes.
pub const MAX_QUERY_BYTES: usize = 16 * 1024;

/// Where a key applies.
#[derive(Debug, Clone, Copy)]
enum Scope {
    /// Every signal and source.
    All,
    /// Every source but the embedded store (its reads are cached one bucket at most).
    Cached,
    /// Sources that can have no data: otlp, prometheus, tempo.
    Nullable,
    /// latency, errorRate, rps and slo, from any trace source.
    Trace,
    /// latency, and slo (whose latency objective is at `quantile`).
    Latency,
    /// `signal: slo`'s objectives.
    Slo,
    /// The latency objective of `signal: slo` and `signal: sloCapacity`.
    Objective,
    /// `signal: sloCapacity`.
    Capacity,
    /// Trace signals, and raw TraceQL (tempo) whose `since` it sets.
    Window,
    /// Trace signals read from Prometheus.
    PromTrace,
    /// Trace signals read from Prometheus or Tempo.
    Labelled,
    /// Anything read from Prometheus or Tempo.
    Named,
    /// `signal: query`.
    Query,
    /// `signal: queueDepth` (SQS).
    Queue,
}

impl Scope {
    fn applies(self, kind: SignalKind, source: SourceKind) -> bool {
        use SignalKind as K;
        use SourceKind as S;
        let trace = matches!(
            kind,
            K::Latency | K::ErrorRate | K::Rps | K::Slo | K::Concurrency | K::SloCapacity
        );
        match self {
            Scope::All => true,
            Scope::Cached => source != S::Otlp,
            Scope::Nullable => source != S::Sqs,
            Scope::Trace => trace,
            Scope::Latency => matches!(kind, K::Latency | K::Slo | K::SloCapacity),
            Scope::Slo => kind == K::Slo,
            Scope::Objective => matches!(kind, K::Slo | K::SloCapacity),
            Scope::Capacity => kind == K::SloCapacity,
            // sloCapacity reads windows of its own (signal::capacity).
            Scope::Window => {
                (trace && kind != K::SloCapacity) || (kind == K::Query && source == S::Tempo)
            }
            Scope::PromTrace => trace && source == S::Prometheus,
            Scope::Labelled => trace && matches!(source, S::Prometheus | S::Tempo),
            Scope::Named => matches!(source, S::Prometheus | S::Tempo),
            Scope::Query => kind == K::Query,
            Scope::Queue => kind == K::QueueDepth,
        }
    }
}

/// Every key this scaler understands, and where it applies.
const KEYS: &[(&str, Scope)] = &[
    ("signal", Scope::All),
    ("source", Scope::All),
    ("threshold", Scope::All),
    ("activationThreshold", Scope::All),
    ("metricName", Scope::All),
    ("cacheTTL", Scope::Cached),
    ("ignoreNullValues", Scope::Nullable),
    ("service", Scope::Trace),
    ("spanKind", Scope::Trace),
    ("version", Scope::Trace),
    ("quantile", Scope::Latency),
    ("latencyObjective", Scope::Objective),
    ("podConcurrency", Scope::Capacity),
    ("errorRateObjective", Scope::Slo),
    ("window", Scope::Window),
    ("convention", Scope::PromTrace),
    ("labels", Scope::Labelled),
    ("backend", Scope::Named),
    ("tenant", Scope::Named),
    ("query", Scope::Query),
    ("queueURL", Scope::Queue),
    ("queueLength", Scope::Queue),
    ("activationQueueLength", Scope::Queue),
    ("awsRegion", Scope::Queue),
    ("awsRoleArn", Scope::Queue),
    ("awsEndpoint", Scope::Queue),
    ("scaleOnInFlight", Scope::Queue),
    ("scaleOnDelayed", Scope::Queue),
];

/// Every key name this scaler understands.
pub fn known_keys() -> impl Iterator<Item = &'static str> {
    KEYS.iter().map(|(k, _)| *k)
}

fn scope(key: &str) -> Option<Scope> {
    KEYS.iter().find(|(k, _)| *k == key).map(|(_, s)| *s)
}

/// The metadata key `k` stands for: `serviceFromEnv` is `service`, filled by KEDA.
fn base(k: &str) -> &str {
    k.strip_suffix("FromEnv").unwrap_or(k)
}

/// Reads metadata keys, remembering what was wrong.
pub(super) struct Reader<'a> {
    md: &'a HashMap<String, String>,
    pub(super) problems: Vec<Problem>,
    /// Keys whose values were refused for their size and are not read.
    oversized: Vec<String>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(md: &'a HashMap<String, String>) -> Self {
        Reader {
            md,
            problems: Vec::new(),
            oversized: Vec::new(),
        }
    }

    /// Problems that stand before any parsing: too many keys, values too long. Returns
    /// false when the metadata is too large to read at all.
    pub(super) fn check_sizes(&mut self) -> bool {
        if self.md.len() > MAX_KEYS {
            self.problem(
                "metadata",
                format!("has {} keys; at most {MAX_KEYS} are read", self.md.len()),
            );
            return false;
        }
        let mut long: Vec<(&String, usize)> = self
            .md
            .iter()
            .filter_map(|(k, v)| {
                let limit = if base(k) == "query" {
                    MAX_QUERY_BYTES
                } else {
                    MAX_VALUE_BYTES
                };
                (v.len() > limit || k.len() > MAX_VALUE_BYTES).then_some((k, limit))
            })
            .collect();
        long.sort();
        for (k, limit) in long {
            self.problem(&clip(k), format!("longer than {limit} bytes"));
            self.oversized.push(base(k).to_string());
        }
        true
    }

    /// Whether the value of `key` was refused for its size (it is then not read).
    fn oversized(&self, key: &str) -> bool {
        self.oversized.iter().any(|k| k == key)
    }

    /// The trimmed value of `key` (or of `keyFromEnv`, which KEDA fills from the
    /// target's environment); `None` when absent, empty or oversized.
    pub(super) fn get(&mut self, key: &str) -> Option<&'a str> {
        let direct = self.md.get(key);
        let env_key = format!("{key}FromEnv");
        let from_env = self.md.get(env_key.as_str());
        if direct.is_some() && from_env.is_some() {
            self.problem(key, format!("set both {key} and {key}FromEnv; use one"));
        }
        if self.oversized(key) {
            return None;
        }
        let v = direct.or(from_env)?.trim();
        (!v.is_empty()).then_some(v)
    }

    pub(super) fn has(&self, key: &str) -> bool {
        let set = |k: &str| self.md.get(k).is_some_and(|v| !v.trim().is_empty());
        set(key) || set(&format!("{key}FromEnv"))
    }

    /// Records a problem with `key`; a key refused for its size has that one problem only.
    pub(super) fn problem(&mut self, key: &str, message: impl Into<String>) {
        if self.oversized(key) {
            return;
        }
        self.problems.push(Problem {
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// Parses `key` with `parse`, recording `expected` on failure.
    pub(super) fn parse<T>(
        &mut self,
        key: &str,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        let raw = self.get(key)?;
        let parsed = parse(raw);
        if parsed.is_none() {
            self.problem(key, format!("{expected}, got {:?}", clip(raw)));
        }
        parsed
    }

    /// `key`'s value through `parse`, whose error becomes the key's problem.
    pub(super) fn value<T>(
        &mut self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.get(key)?;
        parse(raw).map_err(|msg| self.problem(key, msg)).ok()
    }

    pub(super) fn bool(&mut self, key: &str, default: bool) -> bool {
        self.parse(key, "must be true or false", super::parse_bool)
            .unwrap_or(default)
    }

    /// Unknown keys, and — once signal and source are known — keys they do not use.
    pub(super) fn check_keys(&mut self, used: Option<(SignalKind, SourceKind)>) {
        let mut keys: Vec<&String> = self
            .md
            .iter()
            .filter(|(k, v)| !KEDA_KEYS.contains(&k.as_str()) && !v.trim().is_empty())
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        for k in keys {
            if self.oversized(base(k)) {
                continue;
            }
            match (scope(base(k)), used) {
                (Some(scope), Some((kind, source))) if !scope.applies(kind, source) => {
                    self.problem(k, format!("not used by signal {kind} with source {source}"));
                }
                (Some(_), _) => {}
                (None, _) => {
                    let msg = match super::values::closest(base(k), known_keys()) {
                        Some(s) => format!("unknown key (did you mean {s}?)"),
                        None => "unknown key".to_string(),
                    };
                    self.problem(&clip(k), msg);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table as a matrix: which keys each (signal, source) uses.
    #[test]
    fn keys_by_signal_and_source() {
        use SignalKind as K;
        use SourceKind as S;
        let uses = |kind, source| -> Vec<&str> {
            KEYS.iter()
                .filter(|(_, s)| s.applies(kind, source))
                .map(|(k, _)| *k)
                .collect()
        };
        let common = [
            "signal",
            "source",
            "threshold",
            "activationThreshold",
            "metricName",
        ];
        let with = |extra: &[&'static str]| -> Vec<&str> {
            let mut v: Vec<&str> = common.to_vec();
            v.extend_from_slice(extra);
            v
        };
        let cases: &[(K, S, Vec<&str>)] = &[
            (
                K::Latency,
                S::Otlp,
                with(&[
                    "ignoreNullValues",
                    "service",
                    "spanKind",
                    "version",
                    "quantile",
                    "window",
                ]),
            ),
            (
                K::Rps,
                S::Prometheus,
                with(&[
                    "cacheTTL",
                    "ignoreNullValues",
                    "service",
                    "spanKind",
                    "version",
                    "window",
                    "convention",
                    "labels",
                    "backend",
                    "tenant",
                ]),
            ),
            (
                K::ErrorRate,
                S::Tempo,
                with(&[
                    "cacheTTL",
                    "ignoreNullValues",
                    "service",
                    "spanKind",
                    "version",
                    "window",
                    "labels",
                    "backend",
                    "tenant",
                ]),
            ),
            (
                K::Query,
                S::Prometheus,
                with(&["cacheTTL", "ignoreNullValues", "backend", "tenant", "query"]),
            ),
            (
                K::Slo,
                S::Otlp,
                with(&[
                    "ignoreNullValues",
                    "service",
                    "spanKind",
                    "version",
                    "quantile",
                    "latencyObjective",
                    "errorRateObjective",
                    "window",
                ]),
            ),
            (
                K::Slo,
                S::Prometheus,
                with(&[
                    "cacheTTL",
                    "ignoreNullValues",
                    "service",
                    "spanKind",
                    "version",
                    "quantile",
                    "latencyObjective",
                    "errorRateObjective",
                    "window",
                    "convention",
                    "labels",
                    "backend",
                    "tenant",
                ]),
            ),
            (
                K::Query,
                S::Tempo,
                with(&[
                    "cacheTTL",
                    "ignoreNullValues",
                    "window",
                    "backend",
                    "tenant",
                    "query",
                ]),
            ),
            (
                K::QueueDepth,
                S::Sqs,
                with(&[
                    "cacheTTL",
                    "queueURL",
                    "queueLength",
                    "activationQueueLength",
                    "awsRegion",
                    "awsRoleArn",
                    "awsEndpoint",
                    "scaleOnInFlight",
                    "scaleOnDelayed",
                ]),
            ),
        ];
        for (kind, source, want) in cases {
            assert_eq!(uses(*kind, *source), *want, "{kind} with {source}");
        }
    }
}
