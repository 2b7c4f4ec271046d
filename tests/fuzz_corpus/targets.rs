//! The fuzz targets' bodies, shared by the cargo-fuzz crate (`fuzz/`) and the corpus replay
//! test (`tests/fuzz_corpus/main.rs`), so both run exactly the same code on the same bytes.
//!
//! Each body feeds untrusted bytes to one public entry point the way the scaler does, and
//! asserts what the entry point promises beyond "no panic". A body panics only when a
//! promise is broken; both the fuzzer and the replay test treat that as a failure.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use aws_sdk_sqs::types::QueueAttributeName;
use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use slo_scaler::config::BackendArgs;
use slo_scaler::engine::Engine;
use slo_scaler::signal::promql::Convention;
use slo_scaler::signal::{fits_keda, Quantile, SpanKind, TraceMeasure, TraceSelector};
use slo_scaler::source::otlp::{ManualClock, Store, StoreConfig};
use slo_scaler::source::sqs::{
    classify_error, depth_attributes, depth_from_attributes, region_from_queue_url, resolve_region,
    QueueRef,
};
use slo_scaler::source::tempo::response::{parse_instant, parse_range, reduce};
use slo_scaler::source::{OtlpQuery, Reading, SourceError, TempoReduce};
use slo_scaler::telemetry::Metrics;
use slo_scaler::trigger::{self, ParseOptions};

/// A target's body: one input, a panic when a promise is broken.
pub type Body = fn(&[u8]);

/// Every target, by the name of its corpus directory (`fuzz/corpus/<name>`) and fuzz target.
pub const TARGETS: [(&str, Body); 8] = [
    ("trigger_metadata", trigger_metadata),
    ("prometheus_json", prometheus_json),
    ("tempo_json", tempo_json),
    ("otlp_protobuf", otlp_protobuf),
    ("otlp_json", otlp_json),
    ("conventions", conventions),
    ("sqs_answer", sqs_answer),
    ("scaled_object_ref", scaled_object_ref),
];

/// Trigger metadata, one `key=value` per line (a value runs to the end of its line). A
/// first line `#NAMESPACE` sets the ScaledObject's namespace for [`Engine::plan`].
///
/// Promises: `trigger::parse` is deterministic; a parsed trigger has a target and an
/// activation KEDA can carry (`signal::fits_keda`), reads no data as 0 only where the
/// signal allows it, and has a metric name of at most 63 characters of `[a-z0-9-]` (what KEDA and
/// Kubernetes accept); `Engine::plan` accepts no metadata `trigger::parse` refuses.
pub fn trigger_metadata(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n').peekable();
    let namespace = match lines.peek().and_then(|l| l.strip_prefix('#')) {
        Some(ns) => {
            let ns = ns.to_string();
            lines.next();
            ns
        }
        None => "default".to_string(),
    };
    let md: HashMap<String, String> = lines
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (engine, opts) = engine();
    let parsed = trigger::parse(&md, opts);
    assert_eq!(
        format!("{parsed:?}"),
        format!("{:?}", trigger::parse(&md, opts)),
        "parse is not deterministic"
    );
    if let Ok(t) = &parsed {
        assert!(fits_keda(t.target), "target {}", t.target);
        assert!(fits_keda(t.activation), "activation {}", t.activation);
        assert!(
            !t.ignore_null_values || t.kind.no_data_is_zero(),
            "no data reads as 0 for {}",
            t.kind
        );
        assert!(
            !t.metric_name.is_empty()
                && t.metric_name.len() <= 63
                && t.metric_name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "metric name {:?}",
            t.metric_name
        );
    }
    let planned = engine.plan(&namespace, &md);
    if parsed.is_err() {
        assert!(planned.is_err(), "plan accepted what parse refused: {md:?}");
    }
}

/// One engine for the whole run, with one Prometheus and one Tempo backend (never called:
/// planning does no I/O) and a tenant policy, so every source's planning is reached; and
/// the parse options it plans with (its default source is prometheus).
fn engine() -> &'static (Engine, ParseOptions) {
    static ENGINE: OnceLock<(Engine, ParseOptions)> = OnceLock::new();
    ENGINE.get_or_init(|| {
        #[derive(Parser)]
        struct Args {
            #[command(flatten)]
            backends: BackendArgs,
        }
        let args = Args::try_parse_from([
            "fuzz",
            "--prometheus",
            "default=http://127.0.0.1:9",
            "--tempo",
            "default=http://127.0.0.1:9",
            "--tempo-tenant-allow",
            "default=team-a",
        ])
        .expect("fuzz engine flags");
        let settings = args.backends.resolve(true).expect("fuzz engine settings");
        let metrics = Arc::new(Metrics::standalone().1);
        let store = Store::new(StoreConfig::default(), metrics.clone()).expect("default store");
        let engine = slo_scaler::server::build_engine(&settings, metrics, Some(Arc::new(store)))
            .expect("fuzz engine");
        (engine, settings.parse)
    })
}

/// A Prometheus `/api/v1/query` answer. The first byte picks the HTTP status (so proxies'
/// error pages are reached too); the rest is the body.
///
/// Promises: a reading is a single value, never NaN (NaN is no data; ±Inf passes up to the
/// engine's one rule for values, which refuses it); errors name the backend.
pub fn prometheus_json(data: &[u8]) {
    const STATUSES: [u16; 8] = [200, 200, 200, 400, 401, 422, 503, 504];
    let (status, body) = match data.split_first() {
        Some((s, rest)) => (STATUSES[usize::from(*s) % STATUSES.len()], rest),
        None => (200, data),
    };
    let backend = "prometheus/default";
    match slo_scaler::source::prometheus::parse_response(backend, status, body) {
        Ok(Reading::Value(v)) => {
            assert!(v.is_none_or(|v| !v.is_nan()), "reading {v:?}");
        }
        Ok(other) => panic!("a Prometheus answer gave {other:?}"),
        Err(e) => assert_error_names(&e, backend),
    }
}

/// A Tempo `/api/metrics/query` (instant, first byte even) or `/api/metrics/query_range`
/// (first byte odd) answer, reduced both ways.
///
/// Promises: reducing is deterministic; an error ratio that is a number lies within 0..=1
/// whenever every series value is finite and non-negative (Tempo's rates are). NaN and ±Inf
/// pass up unchanged to the engine's one rule for values, which refuses them.
pub fn tempo_json(data: &[u8]) {
    let (range, body) = match data.split_first() {
        Some((b, rest)) => (b % 2 == 1, rest),
        None => (false, data),
    };
    let answer = if range {
        parse_range(body)
    } else {
        parse_instant(body)
    };
    let Ok(answer) = answer else {
        return;
    };
    let plain = answer
        .series
        .iter()
        .all(|s| s.value.is_none_or(|v| v.is_finite() && v >= 0.0));
    for how in [TempoReduce::Single, TempoReduce::ErrorRatio] {
        let reduced = reduce(&answer, how);
        assert_eq!(
            format!("{reduced:?}"),
            format!("{:?}", reduce(&answer, how)),
            "reduce is not deterministic"
        );
        if let (TempoReduce::ErrorRatio, Ok(Some(v)), true) = (how, reduced, plain) {
            assert!(v.is_nan() || (0.0..=1.0).contains(&v), "error ratio {v}");
        }
    }
}

/// An OTLP/gRPC or OTLP/HTTP protobuf body, decoded as the receivers do, then ingested.
pub fn otlp_protobuf(data: &[u8]) {
    if let Ok(request) = ExportTraceServiceRequest::decode(data) {
        ingest(request);
    }
}

/// An OTLP/HTTP JSON body, decoded as the HTTP receiver does, then ingested.
pub fn otlp_json(data: &[u8]) {
    if let Ok(request) = serde_json::from_slice::<ExportTraceServiceRequest>(data) {
        ingest(request);
    }
}

/// The store's clock in every OTLP run: 2024-08-21T11:33:20Z, so seeds with real
/// timestamps near it land inside the retention.
const NOW_UNIX_S: u64 = 1_724_240_000;

/// Ingests into a fresh store, then reads every series it may hold.
///
/// Promises: every span is accounted for (accepted + rejected = sent); the store holds at
/// most `max_series` series; every read is a finite, non-negative number or no data.
fn ingest(request: ExportTraceServiceRequest) {
    let sent: u64 = request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len() as u64)
        .sum();
    let mut services = Vec::new();
    for rs in &request.resource_spans {
        for kv in rs.resource.iter().flat_map(|r| &r.attributes) {
            if kv.key == "service.name" || kv.key == "service.version" {
                if let Some(
                    opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s),
                ) = kv.value.as_ref().and_then(|v| v.value.as_ref())
                {
                    services.push(s.clone());
                }
            }
        }
    }
    let config = StoreConfig {
        max_series: 8,
        ..StoreConfig::default()
    };
    let now = UNIX_EPOCH + Duration::from_secs(NOW_UNIX_S);
    let clock = Arc::new(ManualClock::new(now));
    let metrics = Arc::new(Metrics::standalone().1);
    let store = Store::with_clock(config.clone(), metrics, clock).expect("fuzz store config");
    let summary = store.ingest(request);
    assert_eq!(
        summary.accepted + summary.rejected_total(),
        sent,
        "spans lost: {summary:?}"
    );
    assert!(store.series_count() <= config.max_series);
    services.truncate(4);
    for service in &services {
        for version in [None, Some(service.clone())] {
            for kind in [SpanKind::Server, SpanKind::Internal] {
                for measure in [
                    TraceMeasure::Latency(Quantile::new(0.95).expect("0.95")),
                    TraceMeasure::ErrorRatio,
                    TraceMeasure::Rate,
                ] {
                    let q = OtlpQuery {
                        selector: TraceSelector {
                            service: service.clone(),
                            span_kind: kind,
                            version: version.clone(),
                            labels: Vec::new(),
                        },
                        measure,
                        window: Duration::from_secs(60),
                    };
                    if let Ok(Reading::Value(Some(v))) = store.read_at(&q, now) {
                        assert!(v.is_finite() && v >= 0.0, "{measure:?} read {v}");
                        if measure == TraceMeasure::ErrorRatio {
                            assert!(v <= 1.0, "error ratio {v}");
                        }
                    }
                }
            }
        }
    }
}

/// A `--conventions-file`, read as `BackendArgs::resolve` reads it.
///
/// Promises: a convention that validates has a positive finite unit, and validation is
/// deterministic.
pub fn conventions(data: &[u8]) {
    let Ok(extra) = serde_json::from_slice::<BTreeMap<String, Convention>>(data) else {
        return;
    };
    for (name, c) in &extra {
        let verdict = c.validate(name);
        assert_eq!(format!("{verdict:?}"), format!("{:?}", c.validate(name)));
        if verdict.is_ok() {
            assert!(c.units_per_second.is_finite() && c.units_per_second > 0.0);
        }
    }
}

/// An SQS answer as the SDK hands it to the scaler: a first line with the trigger's queue
/// (a URL or a name), then `Name=value` lines: the `GetQueueAttributes` attributes, and
/// `__type` / `status` for an error answer's code and HTTP status.
///
/// Promises: a depth holds exactly the counts asked for, read only from plain decimal
/// counts and equal to them; their KEDA sum is there, never panics (saturating) and is at
/// least every count it adds; a region taken from a URL is a substring of it.
pub fn sqs_answer(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let queue = lines.next().unwrap_or("");
    let mut attrs = HashMap::new();
    let mut code = None;
    let mut status = None;
    for line in lines {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "__type" => code = Some(v.to_string()),
            "status" => status = v.parse::<u16>().ok(),
            _ => {
                attrs.insert(QueueAttributeName::from(k), v.to_string());
            }
        }
    }
    let _ = classify_error(code.as_deref(), status);
    for (in_flight, delayed) in [(false, false), (true, false), (false, true), (true, true)] {
        let Ok(depth) = depth_from_attributes(Some(&attrs), in_flight, delayed) else {
            continue;
        };
        let counts = [Some(depth.visible), depth.in_flight, depth.delayed];
        let asked = depth_attributes(in_flight, delayed);
        assert_eq!(counts.iter().flatten().count(), asked.len());
        for (name, n) in asked.iter().zip(counts.into_iter().flatten()) {
            let raw = &attrs[name];
            assert!(
                raw.bytes().all(|b| b.is_ascii_digit()),
                "{raw:?} read as {n}"
            );
            assert_eq!(raw.parse::<u64>().ok(), Some(n));
        }
        // The sum of the counts asked for is there, never below one it adds.
        let total = depth
            .total(in_flight, delayed)
            .expect("every count asked for");
        assert!(total >= depth.visible);
        assert!(depth.in_flight.is_none_or(|n| total >= n));
        assert!(depth.delayed.is_none_or(|n| total >= n));
    }
    if let Some(q) = QueueRef::parse(queue) {
        if let QueueRef::Url(url) = q {
            if let Some(region) = region_from_queue_url(url) {
                assert!(url.contains(region));
            }
        }
        let _ = resolve_region(None, q, Some("eu-west-1"), None);
    }
}

/// Source errors name their backend (the caller's only clue which one failed).
fn assert_error_names(e: &SourceError, backend: &str) {
    let text = e.to_string();
    assert!(text.contains(backend), "{text:?} does not name {backend}");
}

/// A `GetMetricsRequest` as KEDA's client sends it, in protobuf bytes, and the same bytes as
/// a bare `ScaledObjectRef` (the other calls' request).
///
/// Promises: the server's decoder (`proto::wire`) accepts exactly what prost's generated
/// decoder accepts, and reads the same request from it — names, metric name, and the
/// metadata map (for a key sent twice, the last value).
pub fn scaled_object_ref(data: &[u8]) {
    use slo_scaler::proto::{wire, GetMetricsRequest, ScaledObjectRef};
    let same_ref = |ours: &wire::ScaledObjectRef, theirs: &ScaledObjectRef| {
        assert_eq!(ours.name(), theirs.name);
        assert_eq!(ours.namespace(), theirs.namespace);
        assert_eq!(ours.scaler_metadata().to_map(), theirs.scaler_metadata);
    };
    match (
        wire::GetMetricsRequest::decode(data),
        GetMetricsRequest::decode(data),
    ) {
        (Ok(ours), Ok(theirs)) => {
            assert_eq!(ours.metric_name(), theirs.metric_name);
            match (ours.scaled_object_ref(), &theirs.scaled_object_ref) {
                (Some(o), Some(t)) => same_ref(o, t),
                (None, None) => {}
                (o, t) => panic!("a ref on one side only: {o:?} / {t:?}"),
            }
        }
        (Err(_), Err(_)) => {}
        (ours, theirs) => panic!("the decoders disagree: ours {ours:?}, prost's {theirs:?}"),
    }
    match (
        wire::ScaledObjectRef::decode(data),
        ScaledObjectRef::decode(data),
    ) {
        (Ok(ours), Ok(theirs)) => same_ref(&ours, &theirs),
        (Err(_), Err(_)) => {}
        (ours, theirs) => panic!("the decoders disagree: ours {ours:?}, prost's {theirs:?}"),
    }
}
