//! Tempo's TraceQL metrics answers (protobuf JSON mapping), and how they become one number.
//!
//! The JSON is what protobuf's JSON mapping writes, with its traps: int64 fields are
//! strings, fields at their default value are left out (a value of 0 has no `value`, an
//! empty answer may have no `series`, `status` COMPLETE is absent), doubles may be the
//! strings `"NaN"`, `"Infinity"` and `"-Infinity"`, and label values are `AnyValue` objects.

use serde::Deserialize;
use serde_json::Value;

use crate::source::TempoReduce;

/// The label Tempo gives the groups of `by (span:status)`: the attribute's `String()`,
/// and intrinsics print without their scope (Tempo `pkg/traceql/enum_attributes.go`,
/// `Intrinsic.String()`, used by `labelsFor` in `pkg/traceql/engine_metrics.go`).
pub const STATUS_LABEL: &str = "status";

/// The label of a `quantile_over_time` series holding its quantile (Tempo
/// `pkg/traceql/engine_metrics.go`, `HistogramAggregator.Results`).
pub const QUANTILE_LABEL: &str = "p";

/// One answer, reduced to one value per series.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Answer {
    pub series: Vec<Series>,
    /// `Some(message)` when Tempo flagged the answer PARTIAL (cut at its max-series limit).
    pub partial: Option<String>,
}

/// One series of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, LabelValue)>,
    /// The value; `None` when a range answer has no sample for this series at the
    /// latest timestamp of the answer.
    pub value: Option<f64>,
}

impl Series {
    fn label(&self, key: &str) -> Option<&LabelValue> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// A label value (`AnyValue`).
#[derive(Debug, Clone, PartialEq)]
pub enum LabelValue {
    String(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    /// An empty `AnyValue` or a kind this scaler does not read (arrays, maps, bytes).
    Other,
}

impl LabelValue {
    /// The value as an error message shows it: strings quoted, numbers as is.
    fn describe(&self) -> String {
        match self {
            LabelValue::String(s) => format!("{s:?}"),
            LabelValue::Int(i) => i.to_string(),
            LabelValue::Double(d) => d.to_string(),
            LabelValue::Bool(b) => b.to_string(),
            LabelValue::Other => "of another type".to_string(),
        }
    }
}

/// Parses an instant answer: `{"series":[{"labels":[…],"value":0.23}],"status":…}`.
pub fn parse_instant(body: &[u8]) -> Result<Answer, String> {
    let raw: RawInstant = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let series = raw
        .series
        .unwrap_or_default()
        .into_iter()
        .map(|s| {
            Ok(Series {
                labels: labels(s.labels)?,
                value: Some(double(s.value.as_ref(), "value")?.unwrap_or(0.0)),
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Answer {
        series,
        partial: partial(raw.status.as_ref(), raw.message)?,
    })
}

/// Parses a range answer
/// (`{"series":[{"labels":[…],"samples":[{"timestampMs":"…","value":…}]}],…}`) and keeps,
/// for every series, its sample at the latest timestamp found in the whole answer.
///
/// Aligning on one timestamp keeps series comparable: Tempo leaves out the samples of
/// steps where a series had no spans, so a series' own last sample may be older than
/// the others' (an error series whose last sample is a minute old must not be divided
/// by the current total).
pub fn parse_range(body: &[u8]) -> Result<Answer, String> {
    let raw: RawRange = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut parsed = Vec::new();
    let mut latest: Option<i64> = None;
    for s in raw.series.unwrap_or_default() {
        let mut samples = Vec::new();
        for sample in s.samples.unwrap_or_default() {
            let ts = int64(sample.timestamp_ms.as_ref(), "timestampMs")?.unwrap_or(0);
            let value = double(sample.value.as_ref(), "value")?.unwrap_or(0.0);
            latest = latest.max(Some(ts));
            samples.push((ts, value));
        }
        parsed.push((labels(s.labels)?, samples));
    }
    let series = parsed
        .into_iter()
        .map(|(labels, samples)| Series {
            labels,
            value: samples
                .iter()
                .rev()
                .find(|(ts, _)| Some(*ts) == latest)
                .map(|(_, v)| *v),
        })
        .collect();
    Ok(Answer {
        series,
        partial: partial(raw.status.as_ref(), raw.message)?,
    })
}

/// Reduces an answer to the reading: `Ok(None)` means no data (no series, no traffic).
///
/// Non-finite values pass up unchanged, and so do negative counts in an error ratio, for
/// the engine to refuse (Tempo itself never writes NaN: it drops NaN
/// samples and empty series, `SeriesSet.ToProto` in `pkg/traceql/engine_metrics.go`).
/// An error-ratio answer whose series do not all carry Tempo's `status` label with one of
/// its three values fails, rather than reading as "no errors".
pub fn reduce(answer: &Answer, how: TempoReduce) -> Result<Option<f64>, String> {
    match how {
        TempoReduce::Single => match answer.series.as_slice() {
            [] => Ok(None),
            // `quantile_over_time` writes 0 for a step without spans (Tempo
            // `pkg/traceql/engine_metrics.go`, `HistogramAggregator.Results`), while a real
            // quantile is at least half the smallest bucket, never 0: no data. Its series
            // carry the quantile as label `p`.
            [one] if one.label(QUANTILE_LABEL).is_some() && one.value == Some(0.0) => Ok(None),
            [one] => Ok(one.value),
            many => Err(format!(
                "query returned {} series, expected at most one \
                 (aggregate the query, e.g. drop its `by (…)`)",
                many.len()
            )),
        },
        TempoReduce::ErrorRatio => {
            let mut total = 0.0;
            let mut errors = 0.0;
            for s in &answer.series {
                let is_error = match s.label(STATUS_LABEL) {
                    Some(LabelValue::String(v)) if v == "error" => true,
                    Some(LabelValue::String(v)) if v == "ok" || v == "unset" => false,
                    Some(other) => {
                        return Err(format!(
                            "series with {STATUS_LABEL} {}, expected error, ok or unset",
                            other.describe()
                        ))
                    }
                    None => {
                        let keys: Vec<&str> = s.labels.iter().map(|(k, _)| k.as_str()).collect();
                        return Err(format!(
                            "series without the {STATUS_LABEL:?} label (labels {keys:?}); \
                             cannot tell errors from successes"
                        ));
                    }
                };
                // A range answer's series without a sample at the latest step had no spans.
                let Some(v) = s.value else {
                    continue;
                };
                // A count that is no count (NaN, infinite, negative) makes no ratio: it
                // goes up unchanged for the engine to refuse, not divided into a
                // plausible one.
                if !v.is_finite() || v < 0.0 {
                    return Ok(Some(v));
                }
                total += v;
                if is_error {
                    errors += v;
                }
            }
            if !total.is_finite() {
                // Counts past f64's range: no ratio either.
                return Ok(Some(total));
            }
            Ok((total != 0.0).then(|| errors / total))
        }
    }
}

#[derive(Deserialize)]
struct RawInstant {
    series: Option<Vec<RawInstantSeries>>,
    status: Option<Value>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct RawInstantSeries {
    labels: Option<Vec<RawLabel>>,
    value: Option<Value>,
}

#[derive(Deserialize)]
struct RawRange {
    series: Option<Vec<RawRangeSeries>>,
    status: Option<Value>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct RawRangeSeries {
    labels: Option<Vec<RawLabel>>,
    samples: Option<Vec<RawSample>>,
}

#[derive(Deserialize)]
struct RawSample {
    #[serde(rename = "timestampMs")]
    timestamp_ms: Option<Value>,
    value: Option<Value>,
}

#[derive(Deserialize)]
struct RawLabel {
    key: Option<String>,
    value: Option<RawAnyValue>,
}

#[derive(Deserialize)]
struct RawAnyValue {
    #[serde(rename = "stringValue")]
    string_value: Option<String>,
    #[serde(rename = "intValue")]
    int_value: Option<Value>,
    #[serde(rename = "doubleValue")]
    double_value: Option<Value>,
    #[serde(rename = "boolValue")]
    bool_value: Option<bool>,
}

fn labels(raw: Option<Vec<RawLabel>>) -> Result<Vec<(String, LabelValue)>, String> {
    raw.unwrap_or_default()
        .into_iter()
        .map(|l| {
            let key = l.key.unwrap_or_default();
            let value = match l.value {
                None => LabelValue::Other,
                Some(v) => {
                    if let Some(s) = v.string_value {
                        LabelValue::String(s)
                    } else if let Some(i) = int64(v.int_value.as_ref(), "intValue")? {
                        LabelValue::Int(i)
                    } else if let Some(d) = double(v.double_value.as_ref(), "doubleValue")? {
                        LabelValue::Double(d)
                    } else if let Some(b) = v.bool_value {
                        LabelValue::Bool(b)
                    } else {
                        LabelValue::Other
                    }
                }
            };
            Ok((key, value))
        })
        .collect()
}

/// A protobuf JSON double: a number, a numeric string, or `"NaN"` / `"Infinity"` /
/// `"-Infinity"`. `null` or absent is `None` (the caller applies the default).
fn double(v: Option<&Value>, field: &str) -> Result<Option<f64>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("{field} {n} is not a number")),
        Some(Value::String(s)) => match s.as_str() {
            "NaN" => Ok(Some(f64::NAN)),
            "Infinity" => Ok(Some(f64::INFINITY)),
            "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
            // Rust also reads "inf" and "nan"; protobuf JSON does not write them.
            s if s
                .chars()
                .any(|c| c.is_ascii_alphabetic() && !matches!(c, 'e' | 'E')) =>
            {
                Err(format!("{field} {s:?} is not a number"))
            }
            s => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| format!("{field} {s:?} is not a number")),
        },
        Some(other) => Err(format!("{field} {other} is not a number")),
    }
}

/// A protobuf JSON int64: a string of digits (or, leniently, a JSON integer).
fn int64(v: Option<&Value>, field: &str) -> Result<Option<i64>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("{field} {n} is not an int64")),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("{field} {s:?} is not an int64")),
        Some(other) => Err(format!("{field} {other} is not an int64")),
    }
}

/// `status`: absent, `"COMPLETE"` or `0` is complete; `"PARTIAL"` or `1` is partial.
fn partial(status: Option<&Value>, message: Option<String>) -> Result<Option<String>, String> {
    match status {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "COMPLETE" => Ok(None),
        Some(Value::Number(n)) if n.as_i64() == Some(0) => Ok(None),
        Some(Value::String(s)) if s == "PARTIAL" => Ok(Some(message.unwrap_or_default())),
        Some(Value::Number(n)) if n.as_i64() == Some(1) => Ok(Some(message.unwrap_or_default())),
        Some(other) => Err(format!("unknown status {other}")),
    }
}

#[cfg(test)]
mod tests;
