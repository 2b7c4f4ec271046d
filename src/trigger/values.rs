//! Parsers for the value syntaxes of trigger metadata: durations, thresholds in the
//! signal's unit, booleans, label lists, names.

use std::time::Duration;

use super::{clip, SignalKind, SourceKind, MAX_WINDOW, MIN_WINDOW, TEMPO_MIN_WINDOW};
use crate::signal::{Quantile, SpanKind};

/// The unit a signal's thresholds are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unit {
    /// Latency: `250ms`, `0.25s`, `0.25` (seconds).
    Seconds,
    /// Error rate: `0.03` or `3%`.
    Ratio,
    /// Everything else: a plain number.
    Count,
}

impl Unit {
    /// Every unit, in the order a value is tried while the signal is unknown: a bare number
    /// reads as a count, so no unit's rule refuses it before the signal is known.
    pub(super) const ALL: [Unit; 3] = [Unit::Count, Unit::Ratio, Unit::Seconds];

    pub(super) fn of(kind: SignalKind) -> Unit {
        match kind {
            SignalKind::Latency => Unit::Seconds,
            SignalKind::ErrorRate => Unit::Ratio,
            _ => Unit::Count,
        }
    }

    pub(super) fn expected(self) -> &'static str {
        match self {
            Unit::Seconds => "must be a latency like 250ms, 0.25s or 0.25 (seconds)",
            Unit::Ratio => "must be a ratio like 0.03 or a percentage like 3%",
            Unit::Count => "must be a number",
        }
    }

    pub(super) fn parse(self, raw: &str) -> Option<f64> {
        let raw = raw.trim();
        let v = match self {
            Unit::Seconds => {
                if let Some(n) = raw.strip_suffix("ms") {
                    number(n)? / 1e3
                } else if let Some(n) = raw.strip_suffix("us").or_else(|| raw.strip_suffix("µs")) {
                    number(n)? / 1e6
                } else if let Some(n) = raw.strip_suffix('s') {
                    number(n)?
                } else {
                    number(raw)?
                }
            }
            Unit::Ratio => match raw.strip_suffix('%') {
                Some(n) => number(n)? / 100.0,
                None => number(raw)?,
            },
            Unit::Count => number(raw)?,
        };
        v.is_finite().then_some(v)
    }

    /// A message when `v`, read from `raw`, cannot be what the user meant: a ratio above 1,
    /// or a latency without a unit above [`BARE_SECONDS_MAX`] (dashboards show latencies
    /// in milliseconds, and 300 s is no plausible target: the trigger would never scale out).
    pub(super) fn check_range(self, raw: &str, v: f64) -> Option<String> {
        match self {
            Unit::Ratio if v > 1.0 => Some(format!(
                "an error rate is a ratio of at most 1 (use 0.03 or 3%), got {v}"
            )),
            Unit::Seconds if v > BARE_SECONDS_MAX && number(raw).is_some() => {
                let raw = clip(raw.trim());
                Some(format!(
                    "{raw} reads as {raw} seconds (a latency without a unit is seconds, and one above a minute is likely milliseconds): write {raw}ms, or {raw}s if seconds are meant"
                ))
            }
            _ => None,
        }
    }
}

/// The latency objectives a trigger takes, seconds: from a microsecond to a day (the
/// longest window). Past about 1.8e19 s a `Duration` cannot hold one, and below a
/// nanosecond it is zero.
pub(super) const OBJECTIVE_S: std::ops::RangeInclusive<f64> = 1e-6..=86_400.0;

/// The largest latency that may be written without a unit (seconds).
const BARE_SECONDS_MAX: f64 = 60.0;

fn number(s: &str) -> Option<f64> {
    let s = s.trim();
    // Refuse the spellings f64::from_str accepts but people do not mean.
    if s.is_empty()
        || s.chars()
            .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
    {
        return None;
    }
    s.parse().ok()
}

/// Durations: `500ms`, `15s`, `2m`, `1h`, `1m30s`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() || s.starts_with('-') {
        return None;
    }
    humantime::parse_duration(s).ok()
}

/// A `window`: 1 s to 24 h, and for Tempo at least [`TEMPO_MIN_WINDOW`]; else what is
/// wrong with it. Triggers and the analysis endpoint both read windows with it.
pub fn parse_window(raw: &str, source: Option<SourceKind>) -> Result<Duration, String> {
    let tempo = source == Some(SourceKind::Tempo);
    let min = if tempo { TEMPO_MIN_WINDOW } else { MIN_WINDOW };
    match parse_duration(raw) {
        Some(d) if (min..=MAX_WINDOW).contains(&d) => Ok(d),
        Some(d) if tempo && d >= MIN_WINDOW && d < min => Err(format!(
            "must be at least 1m for Tempo, whose query_end_cutoff (30s by default in Tempo 3.0) leaves out the newest 30 seconds, got {:?}",
            clip(raw)
        )),
        _ => Err(format!(
            "must be a duration between 1s and 24h like 30s, 5m, got {:?}",
            clip(raw)
        )),
    }
}

/// A `spanKind`, or what the key accepts.
pub fn parse_span_kind(raw: &str) -> Result<SpanKind, String> {
    SpanKind::parse(raw).ok_or_else(|| {
        format!(
            "must be server, client, consumer, producer or internal, got {:?}",
            clip(raw)
        )
    })
}

/// A `quantile`, or what the key accepts.
pub fn parse_quantile(raw: &str) -> Result<Quantile, String> {
    Quantile::parse(raw)
        .ok_or_else(|| format!("must be a quantile like 0.95 or p95, got {:?}", clip(raw)))
}

/// Go's `strconv.ParseBool`, which KEDA uses for its boolean keys.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// `k=v,k2=v2`; `\,`, `\=` and `\\` escape those characters in values; spaces around
/// names and values are dropped, and a value may not be empty. Sorted by key.
pub fn parse_labels(raw: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut key = String::new();
    let mut value = String::new();
    let mut in_value = false;
    let mut chars = raw.chars();
    let mut finish = |key: &mut String, value: &mut String, in_value: bool| {
        let k = key.trim().to_string();
        if k.is_empty() && !in_value && value.is_empty() {
            return Ok(());
        }
        if !in_value {
            return Err(format!(
                "expected k=v pairs separated by commas, got {k:?} without ="
            ));
        }
        if k.is_empty() {
            return Err("a label name is empty".to_string());
        }
        // Spaces around the value are the list's layout, as around the name.
        let v = value.trim().to_string();
        value.clear();
        if v.is_empty() {
            return Err(format!("label {k:?} has an empty value"));
        }
        pairs.push((k, v));
        key.clear();
        Ok(())
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ (',' | '=' | '\\')) => {
                    if in_value {
                        value.push(e)
                    } else {
                        key.push(e)
                    }
                }
                Some(other) => {
                    let buf = if in_value { &mut value } else { &mut key };
                    buf.push('\\');
                    buf.push(other);
                }
                None => return Err("ends with a lone backslash".to_string()),
            },
            '=' if !in_value => in_value = true,
            ',' => {
                finish(&mut key, &mut value, in_value)?;
                in_value = false;
            }
            c => {
                if in_value {
                    value.push(c)
                } else {
                    key.push(c)
                }
            }
        }
    }
    finish(&mut key, &mut value, in_value)?;
    pairs.sort();
    for w in pairs.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(format!("label {:?} is given twice", w[0].0));
        }
    }
    if pairs.is_empty() {
        return Err("no k=v pairs".to_string());
    }
    Ok(pairs)
}

pub fn is_backend_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Kubernetes external metric names: lowercase `[a-z0-9-]`, a letter first, ≤ 63.
pub(super) fn is_metric_name(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.ends_with('-')
}

/// Lowercases and replaces everything else with `-`, collapsing runs, at most 63
/// characters; falls back to `fallback` when nothing is left.
pub(super) fn sanitize_metric_name(raw: &str, fallback: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(63));
    for c in raw.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    out.truncate(63);
    while out.ends_with('-') {
        out.pop();
    }
    while out.starts_with(|c: char| c.is_ascii_digit()) {
        out.remove(0);
    }
    if out.is_empty() {
        return fallback.to_lowercase();
    }
    out
}

/// A queue URL as KEDA's `aws-sqs-queue` reads one (`https://sqs.REGION.amazonaws.com/
/// ACCOUNT/NAME`, or an emulator's http URL; the scheme in any case, its path exactly
/// `/ACCOUNT/NAME`) or a bare queue name. Never one with `@`: SQS queue URLs hold no user
/// or password, and errors quote the queue.
pub(super) fn is_queue_ref(s: &str) -> bool {
    if s.contains('@') {
        return false;
    }
    let is_name = |n: &str| {
        let base = n.strip_suffix(".fifo").unwrap_or(n);
        !base.is_empty()
            && n.len() <= 80
            && base
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    match s.split_once("://") {
        Some((scheme, rest)) => {
            let parts: Vec<&str> = rest.split('/').collect();
            (scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http"))
                && matches!(parts.as_slice(), [host, account, name]
                    if !host.is_empty() && !account.is_empty() && is_name(name))
        }
        None => is_name(s),
    }
}

/// An integer as KEDA's `int64` keys take it: an optional `-`, then digits.
pub(super) fn is_whole_number(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `s` looks like an AWS region name (`us-east-1`, `us-gov-west-1`, `cn-north-1`):
/// lowercase words joined by `-`, letters first, a number last. Used by the trigger parser
/// and by the SQS source for regions in queue URLs.
pub fn is_aws_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    s.len() <= 32
        && parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// An IAM role ARN: `arn:<partition>:iam::<12-digit account>:role/<path and name>`.
pub(super) fn is_role_arn(s: &str) -> bool {
    let mut parts = s.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    partition.starts_with("aws")
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource
            .strip_prefix("role/")
            .is_some_and(|n| !n.is_empty() && n.len() <= 512)
}

/// The known key closest to a misspelt one, when it is close enough to be a typo.
pub(super) fn closest(
    key: &str,
    known: impl Iterator<Item = &'static str>,
) -> Option<&'static str> {
    let key = key.to_lowercase();
    known
        .map(|k| (strsim::levenshtein(&key, &k.to_lowercase()), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// RFC 1123 label as Kubernetes checks it (`IsDNS1123Label`).
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// RFC 1123 subdomain as Kubernetes checks it (`IsDNS1123Subdomain`): dot-separated labels.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && !s.is_empty()
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// FNV-1a, for short stable names of raw queries.
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}
