//! Lean OTLP trace messages: only the fields the store reads, and the price of decoding.
//!
//! The receivers decode protobuf bodies into these messages instead of the full
//! `ExportTraceServiceRequest`: prost skips every field a message does not declare
//! without allocating, so span ids, names, attributes, events and links cost nothing.
//! A hostile body can still be made of millions of tiny elements (an empty span is two
//! bytes on the wire); [`count_protobuf`] walks the wire format without allocating and
//! [`Elements::decoded_bytes`] prices the decoded tree, so a receiver refuses a body before building it.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as FullValue;
use prost::Message;

/// `ExportTraceServiceRequest` with only `resource_spans`.
#[derive(Clone, PartialEq, Message)]
pub struct TraceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

/// `ResourceSpans`: the resource and its scopes.
#[derive(Clone, PartialEq, Message)]
pub struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
}

/// `Resource`: its attributes (only string values are kept).
#[derive(Clone, PartialEq, Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

/// `KeyValue`.
#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

/// `AnyValue` with only `string_value` (field 1 of the `value` oneof); other kinds are
/// skipped.
#[derive(Clone, PartialEq, Message)]
pub struct AnyValue {
    #[prost(string, optional, tag = "1")]
    pub string_value: Option<String>,
}

/// `ScopeSpans`: only the spans.
#[derive(Clone, PartialEq, Message)]
pub struct ScopeSpans {
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
}

/// `Span`: its W3C `tracestate`, kind, start and end times, status. The name is not
/// read: it never enters the store. `trace_state` is empty (no allocation) unless the
/// sender set one; its bytes come from the body, so [`Elements::decoded_bytes`]'s
/// `body_len` term prices them.
#[derive(Clone, PartialEq, Message)]
pub struct Span {
    #[prost(string, tag = "3")]
    pub trace_state: String,
    #[prost(int32, tag = "6")]
    pub kind: i32,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
}

/// `Status`: only the code.
#[derive(Clone, PartialEq, Message)]
pub struct Status {
    #[prost(int32, tag = "3")]
    pub code: i32,
}

impl From<ExportTraceServiceRequest> for TraceRequest {
    fn from(full: ExportTraceServiceRequest) -> TraceRequest {
        TraceRequest {
            resource_spans: full
                .resource_spans
                .into_iter()
                .map(|rs| ResourceSpans {
                    resource: rs.resource.map(|r| Resource {
                        attributes: r
                            .attributes
                            .into_iter()
                            .map(|kv| KeyValue {
                                key: kv.key,
                                value: kv.value.map(|v| AnyValue {
                                    string_value: match v.value {
                                        Some(FullValue::StringValue(s)) => Some(s),
                                        _ => None,
                                    },
                                }),
                            })
                            .collect(),
                    }),
                    scope_spans: rs
                        .scope_spans
                        .into_iter()
                        .map(|ss| ScopeSpans {
                            spans: ss
                                .spans
                                .into_iter()
                                .map(|s| Span {
                                    trace_state: s.trace_state,
                                    kind: s.kind,
                                    start_time_unix_nano: s.start_time_unix_nano,
                                    end_time_unix_nano: s.end_time_unix_nano,
                                    status: s.status.map(|st| Status { code: st.code }),
                                })
                                .collect(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// `MaxAdjustedCount` of the OpenTelemetry specification: 2^56, the number of distinct
/// 56-bit randomness values.
const MAX_ADJUSTED_COUNT_BITS: u64 = 1 << 56;
const MAX_ADJUSTED_COUNT: f64 = MAX_ADJUSTED_COUNT_BITS as f64;

impl Span {
    /// The span's adjusted count (1 / its sampling probability) from the `th` sub-key of
    /// the `ot` entry of its `tracestate`, or `None` when it carries no valid record.
    pub fn adjusted_count(&self) -> Option<f64> {
        adjusted_count(&self.trace_state)
    }
}

/// The adjusted count a W3C `tracestate` records, as the OpenTelemetry specification
/// defines it ("TraceState: Probability Sampling", `specification/trace/
/// tracestate-probability-sampling.md`, and "TraceState Handling", `specification/trace/
/// tracestate-handling.md`, section "Sampling threshold value `th`"):
///
/// - OpenTelemetry's values live in the one `ot` list member, a `;`-separated list of
///   `key:value` sub-keys (`ot=th:c;rv:…`);
/// - `th` is 1 to 14 hexadecimal digits (`DIGIT`, `A-F`, `a-f`) with the trailing zeros
///   dropped: extended with zeros to 14 digits it is the 56-bit rejection threshold T;
/// - `Probability = (MaxAdjustedCount − T) / MaxAdjustedCount` with MaxAdjustedCount =
///   2^56, and `AdjustedCount = MaxAdjustedCount / (MaxAdjustedCount − T)`.
///
/// `None` when there is no `ot` member, no `th` in it, or a `th` that is not 1–14 hex
/// digits: such a span's probability is unknown, and is counted once.
pub fn adjusted_count(trace_state: &str) -> Option<f64> {
    let threshold = rejection_threshold(trace_state)?;
    // T < 2^56, so the probability is at least 2^-56 and the count at most 2^56. The
    // difference is exact in u64; as f64 it keeps 53 of its at most 56 bits (a relative
    // error under 2^-53), and 2^56 is exact.
    Some(MAX_ADJUSTED_COUNT / ((MAX_ADJUSTED_COUNT_BITS - threshold) as f64))
}

/// The 56-bit rejection threshold of the `ot` member's `th` sub-key.
fn rejection_threshold(trace_state: &str) -> Option<u64> {
    // W3C Trace Context: list members are separated by `,` with optional spaces and
    // tabs around them; a key appears at most once.
    let ot = trace_state
        .split(',')
        .map(|m| m.trim_matches([' ', '\t']))
        .find_map(|m| m.strip_prefix("ot="))?;
    let th = ot.split(';').find_map(|sub| sub.strip_prefix("th:"))?;
    if th.is_empty() || th.len() > 14 || !th.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let value = u64::from_str_radix(th, 16).ok()?;
    // Extend with trailing zeros to 14 digits (56 bits).
    Some(value << (4 * (14 - th.len())))
}

/// Why a body cannot be priced: it is not protobuf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf at byte {0}")]
pub struct WireError(pub usize);

/// Elements the lean decode of a body allocates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Elements {
    pub resource_spans: usize,
    pub attributes: usize,
    pub scope_spans: usize,
    pub spans: usize,
}

impl Elements {
    /// Bytes the lean decode allocates at most: every element's struct, twice over for
    /// the slack of growing `Vec`s, plus the body's own length for the strings.
    pub fn decoded_bytes(&self, body_len: usize) -> usize {
        use std::mem::size_of;
        let structs = self
            .resource_spans
            .saturating_mul(size_of::<ResourceSpans>() + size_of::<Resource>())
            .saturating_add(self.attributes.saturating_mul(size_of::<KeyValue>()))
            .saturating_add(self.scope_spans.saturating_mul(size_of::<ScopeSpans>()))
            .saturating_add(self.spans.saturating_mul(size_of::<Span>()));
        structs.saturating_mul(2).saturating_add(body_len)
    }
}

/// Counts the elements of a protobuf `ExportTraceServiceRequest` without allocating.
pub fn count_protobuf(body: &[u8]) -> Result<Elements, WireError> {
    let mut n = Elements::default();
    walk(body, 0, &mut |field, rs, at| {
        if field != 1 {
            return Ok(());
        }
        n.resource_spans += 1;
        walk(rs, at, &mut |field, inner, at| match field {
            1 => walk(inner, at, &mut |field, _, _| {
                n.attributes += usize::from(field == 1);
                Ok(())
            }),
            2 => {
                n.scope_spans += 1;
                walk(inner, at, &mut |field, _, _| {
                    n.spans += usize::from(field == 2);
                    Ok(())
                })
            }
            _ => Ok(()),
        })
    })?;
    Ok(n)
}

/// An upper bound on the elements of a JSON body: every object is at most one element.
pub fn count_json(body: &[u8]) -> Elements {
    let objects = body.iter().filter(|&&b| b == b'{').count();
    Elements {
        resource_spans: objects,
        attributes: 0,
        scope_spans: 0,
        spans: 0,
    }
}

/// The strings of a JSON body that are array elements (after `[` or `,`, and no key: no
/// `:` after them). Each decodes to a `String` in a `Vec` (a resource's
/// `entityRefs[].idKeys`, say), 24 bytes however short its text (`"",` is 3).
pub fn json_array_strings(body: &[u8]) -> usize {
    let (mut n, mut i, mut before) = (0, 0, 0u8);
    while i < body.len() {
        match body[i] {
            b'"' => {
                let mut end = i + 1;
                while end < body.len() && body[end] != b'"' {
                    end += if body[end] == b'\\' { 2 } else { 1 };
                }
                let after = body
                    .get(end + 1..)
                    .and_then(|rest| rest.iter().find(|b| !b.is_ascii_whitespace()));
                if matches!(before, b'[' | b',') && after != Some(&b':') {
                    n += 1;
                }
                before = b'"';
                i = end + 1;
            }
            b if b.is_ascii_whitespace() => i += 1,
            b => {
                before = b;
                i += 1;
            }
        }
    }
    n
}

/// The bytes a JSON body decodes to at most (the full message types, which the JSON
/// decoder builds): every object priced as the largest of them, every string in an array
/// as a `String`, both twice over for the slack of growing `Vec`s, plus the text.
pub fn json_decoded_bytes(body: &[u8]) -> usize {
    use opentelemetry_proto::tonic::trace::v1 as full;
    use std::mem::size_of;
    let largest = size_of::<full::Span>()
        .max(size_of::<full::ResourceSpans>())
        .max(size_of::<full::span::Event>())
        .max(size_of::<full::span::Link>())
        .max(size_of::<opentelemetry_proto::tonic::common::v1::KeyValue>());
    let strings = json_array_strings(body).saturating_mul(size_of::<String>());
    count_json(body)
        .resource_spans
        .saturating_mul(largest)
        .saturating_add(strings)
        .saturating_mul(2)
        .saturating_add(body.len())
}

/// What [`walk`] calls for each length-delimited field: field number, payload, offset.
type FieldVisitor<'a> = dyn FnMut(u64, &[u8], usize) -> Result<(), WireError> + 'a;

/// Calls `f(field, payload, offset)` for every length-delimited field of `msg` and
/// skips the others; errors name the byte offset (from `base`).
fn walk(msg: &[u8], base: usize, f: &mut FieldVisitor<'_>) -> Result<(), WireError> {
    let mut at = 0usize;
    while at < msg.len() {
        let key = varint(msg, &mut at).ok_or(WireError(base + at))?;
        let (field, wire_type) = (key >> 3, key & 7);
        match wire_type {
            0 => {
                varint(msg, &mut at).ok_or(WireError(base + at))?;
            }
            1 => at = skip(msg, at, 8).ok_or(WireError(base + at))?,
            5 => at = skip(msg, at, 4).ok_or(WireError(base + at))?,
            2 => {
                let len = varint(msg, &mut at).ok_or(WireError(base + at))?;
                let len = usize::try_from(len).map_err(|_| WireError(base + at))?;
                let end = skip(msg, at, len).ok_or(WireError(base + at))?;
                f(field, &msg[at..end], base + at)?;
                at = end;
            }
            _ => return Err(WireError(base + at)),
        }
    }
    Ok(())
}

fn skip(msg: &[u8], at: usize, n: usize) -> Option<usize> {
    at.checked_add(n).filter(|&end| end <= msg.len())
}

fn varint(msg: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *msg.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only strings that are array elements are priced: keys and field values are inside
    /// an object's struct (their text is priced as the body's length).
    #[test]
    fn json_array_strings_are_the_array_elements() {
        let count = |text: &str| json_array_strings(text.as_bytes());
        assert_eq!(count(r#"{"a":"b","c":["d", "e" ,"f"]}"#), 3);
        assert_eq!(count(r#"{"idKeys":[],"x":"[\",\"]"}"#), 0);
        assert_eq!(count(r#"[ "a\"" , "b" ]"#), 2);
        assert_eq!(count(r#"{"k":{"l":"m"}, "n" : "o"}"#), 0);
        // Unterminated text is counted without reading past the body.
        assert_eq!(count(r#"["a", "b"#), 2);
    }
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest as Full;
    use opentelemetry_proto::tonic::common::v1 as common;
    use opentelemetry_proto::tonic::resource::v1 as resource;
    use opentelemetry_proto::tonic::trace::v1 as trace;

    fn full(resources: usize, spans: usize, attrs: usize) -> Full {
        let kv = |k: &str, v: &str| common::KeyValue {
            key: k.to_string(),
            value: Some(common::AnyValue {
                value: Some(FullValue::StringValue(v.to_string())),
            }),
            ..Default::default()
        };
        Full {
            resource_spans: (0..resources)
                .map(|_| trace::ResourceSpans {
                    resource: Some(resource::Resource {
                        attributes: (0..attrs).map(|i| kv(&format!("k{i}"), "v")).collect(),
                        ..Default::default()
                    }),
                    scope_spans: vec![trace::ScopeSpans {
                        spans: (0..spans)
                            .map(|i| trace::Span {
                                trace_id: vec![1; 16],
                                span_id: vec![2; 8],
                                name: "GET /orders".into(),
                                kind: 2,
                                start_time_unix_nano: 10 + i as u64,
                                end_time_unix_nano: 20 + i as u64,
                                attributes: vec![kv("http.route", "/orders")],
                                status: Some(trace::Status {
                                    code: 2,
                                    ..Default::default()
                                }),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn lean_decode_matches_the_full_message() {
        let request = full(3, 5, 2);
        let bytes = request.encode_to_vec();
        let lean = TraceRequest::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(lean, TraceRequest::from(request));
        assert_eq!(lean.resource_spans.len(), 3);
        assert_eq!(lean.resource_spans[0].scope_spans[0].spans[4].kind, 2);
        assert_eq!(
            lean.resource_spans[0].scope_spans[0].spans[4].end_time_unix_nano,
            24
        );
    }

    /// The `th` examples of the OpenTelemetry specification ("TraceState Handling",
    /// "Sampling threshold value `th`": `ot=th:0` is 100 % sampling; "TraceState:
    /// Probability Sampling": 1 % is `fd70a4`) and the table of the power-of-two
    /// probabilities, then values that are no record.
    #[test]
    fn reads_the_adjusted_count_of_the_ot_th_sub_key() {
        let cases: &[(&str, Option<f64>)] = &[
            ("ot=th:0", Some(1.0)),
            ("ot=th:8", Some(2.0)),
            ("ot=th:c", Some(4.0)),
            ("ot=th:C", Some(4.0)),
            ("ot=th:e", Some(8.0)),
            ("ot=th:80000000000000", Some(2.0)),
            ("ot=th:ff", Some(256.0)),
            // The largest threshold, 2^56 − 1: probability 2^-56.
            ("ot=th:ffffffffffffff", Some(72_057_594_037_927_936.0)),
            // Other sub-keys and other vendors' members around it.
            ("ot=rv:0123456789abcd;th:8", Some(2.0)),
            ("vendor=x:1,ot=th:c;rv:ffffffffffffff", Some(4.0)),
            ("congo=t61rcWkgMzE , \tot=th:8 ", Some(2.0)),
            // No record: no `ot` member, no `th`, or a `th` that is not 1–14 hex digits.
            ("", None),
            ("vendor=th:8", None),
            ("xot=th:8", None),
            ("ot=rv:0123456789abcd", None),
            ("ot=th:", None),
            ("ot=th:g", None),
            ("ot=th:-1", None),
            ("ot=th:+8", None),
            ("ot=th:0x8", None),
            ("ot=th:8 ;rv:1", None),
            ("ot=th:fffffffffffffff", None),
            ("ot=p:8", None),
        ];
        for (trace_state, want) in cases {
            assert_eq!(adjusted_count(trace_state), *want, "{trace_state:?}");
        }
        // 1 %, the specification's example, five digits of precision.
        let one_percent = adjusted_count("ot=th:fd70a4").expect("valid");
        assert!((one_percent - 100.0).abs() < 1e-3, "{one_percent}");
    }

    #[test]
    fn lean_decode_keeps_the_trace_state() {
        let mut request = full(1, 2, 0);
        request.resource_spans[0].scope_spans[0].spans[1].trace_state = "ot=th:c".into();
        let lean = TraceRequest::decode(request.encode_to_vec().as_slice()).expect("decodes");
        let spans = &lean.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans[0].adjusted_count(), None);
        assert_eq!(spans[1].adjusted_count(), Some(4.0));
        assert_eq!(lean, TraceRequest::from(request));
    }

    #[test]
    fn counts_elements_without_decoding() {
        let check = |resources: usize, spans: usize, attrs: usize| {
            let bytes = full(resources, spans, attrs).encode_to_vec();
            let got = count_protobuf(&bytes).expect("well-formed");
            assert_eq!(
                got,
                Elements {
                    resource_spans: resources,
                    attributes: resources * attrs,
                    scope_spans: resources,
                    spans: resources * spans,
                }
            );
        };
        check(0, 0, 0);
        check(1, 1, 1);
        check(4, 100, 7);
        // Empty spans: two bytes each on the wire, priced at their decoded size.
        let empty = Full {
            resource_spans: vec![trace::ResourceSpans {
                scope_spans: vec![trace::ScopeSpans {
                    spans: vec![trace::Span::default(); 1000],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let bytes = empty.encode_to_vec();
        let n = count_protobuf(&bytes).expect("well-formed");
        assert_eq!(n.spans, 1000);
        assert!(n.decoded_bytes(bytes.len()) > 10 * bytes.len());
        // Truncated or invalid wire data is refused, not guessed.
        let bytes = full(1, 3, 1).encode_to_vec();
        assert!(count_protobuf(&bytes[..bytes.len() - 1]).is_err());
        assert!(count_protobuf(&[0x0f]).is_err());
        assert!(count_protobuf(&[0x0a, 0xff]).is_err());
    }
}
