//! A fake Grafana Tempo query frontend on 127.0.0.1: it records every request and answers
//! what Tempo's own code would answer for scripted series.
//!
//! No Tempo server can be installed on these machines. Every behaviour reproduced here is
//! taken from Tempo's source (grafana/tempo), cited next to the code that reproduces it:
//!
//! - Label keys of `by (…)` groups are the attribute's `String()`
//!   (`pkg/traceql/engine_metrics.go`, `labelsFor`), and an intrinsic prints without its
//!   scope: `span:status` parses to `IntrinsicStatus` (`pkg/traceql/expr.y`,
//!   `SPAN_COLON STATUS`), whose `String()` is `status`
//!   (`pkg/traceql/enum_attributes.go`, `Intrinsic.String()`).
//! - Status values are `stringValue` `error` / `ok` / `unset` (`pkg/traceql/engine.go`,
//!   `Static.AsAnyValue`; `pkg/traceql/enum_statics.go`, `Status.String()`).
//! - An ungrouped query has the one label `__name__` = the aggregation's name
//!   (`pkg/traceql/engine_metrics.go`, `UngroupedAggregator.Series`); a quantile series
//!   carries a `p` label holding the quantile as a `doubleValue`
//!   (`pkg/traceql/engine_metrics.go`, `HistogramAggregator.Results`).
//! - NaN samples are left out of the answer and a series without samples is dropped
//!   (`pkg/traceql/engine_metrics.go`, `SeriesSet.ToProto`); the instant endpoint runs the
//!   query as a one-step range query and keeps each series' first sample
//!   (`modules/frontend/metrics_query_handler.go`, `translateQueryRangeToInstant`).
//! - The body is gogo `jsonpb` with default options (`metrics_query_handler.go`): fields at
//!   their zero value are left out, int64 fields are strings, non-finite doubles are the
//!   strings `"NaN"`, `"Infinity"`, `"-Infinity"` (`vendor/github.com/gogo/protobuf/jsonpb`).
//! - `query_end_cutoff` (30 s by default, `modules/frontend/config.go`): an instant query
//!   whose end lies inside the cutoff is pulled back by whole seconds, and a window that
//!   lies entirely inside it is refused with 400 and the text of
//!   `errQueryWindowWithinEndCutoff` (`modules/frontend/metrics_query_handler.go`,
//!   `clampInstantQueryEnd`; `httpInvalidRequest` in `metrics_query_range_handler.go`).
//! - `fail_on_high_lag` (on by default, `modules/livestore/config.go`): a lagging live store
//!   fails the query with `errLagged` (`modules/livestore/live_store.go`), which the
//!   querier answers as HTTP 500 with the error text (`modules/querier/http.go`,
//!   `handleError`) and the frontend passes on with that status and body
//!   (`modules/frontend/combiner/common.go`, `AddResponse` / `erroredResponse`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Map, Value};

/// Tempo 3.0's default `query_frontend.query_end_cutoff` (`modules/frontend/config.go`).
pub const QUERY_END_CUTOFF: Duration = Duration::from_secs(30);

/// The text of `errQueryWindowWithinEndCutoff` (`modules/frontend/metrics_query_range_handler.go`).
pub const CUTOFF_ERROR: &str = "query window falls entirely within query_end_cutoff";

/// What the querier writes when a lagging live store refuses a query
/// (`modules/querier/querier_query_range.go`, `queryRangeRecent`, wrapping the gRPC error
/// of `errLagged` from `modules/livestore/live_store.go`).
pub const LAG_ERROR: &str = "error querying live-stores in Querier.queryRangeRecent: rpc error: \
     code = Unknown desc = cannot guarantee complete results\n";

/// A group-by attribute, printed the way Tempo's `Attribute.String()` prints it.
#[derive(Debug, Clone)]
pub enum Attr {
    /// `span:status` or `status`: prints `status` (intrinsics print without scope).
    Status,
    /// A resource attribute: prints `resource.NAME`.
    Resource(&'static str),
    /// The metric-name label of an ungrouped aggregation.
    MetricName,
    /// The quantile label of `quantile_over_time`.
    Quantile,
}

impl Attr {
    fn key(&self) -> String {
        match self {
            Attr::Status => "status".into(),
            Attr::Resource(name) => format!("resource.{name}"),
            Attr::MetricName => "__name__".into(),
            Attr::Quantile => "p".into(),
        }
    }
}

/// A label value (`Static`), as `AsAnyValue` writes it.
#[derive(Debug, Clone)]
pub enum Val {
    /// A span status: `stringValue` `error`, `ok` or `unset`.
    Error,
    Ok,
    Unset,
    Str(&'static str),
    Float(f64),
}

/// One series of a TraceQL metrics result, one value per step (NaN: no sample).
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: Vec<(Attr, Val)>,
    pub values: Vec<f64>,
}

/// `{} | rate()` (or any ungrouped aggregation `name`) with one value per step.
pub fn ungrouped(name: &'static str, values: &[f64]) -> Series {
    Series {
        labels: vec![(Attr::MetricName, Val::Str(name))],
        values: values.to_vec(),
    }
}

/// `quantile_over_time(span:duration, p)` with one value per step; Tempo writes 0 for a
/// step without spans (`HistogramAggregator.Results` in `pkg/traceql/engine_metrics.go`).
pub fn quantile(p: f64, values: &[f64]) -> Series {
    Series {
        labels: vec![(Attr::Quantile, Val::Float(p))],
        values: values.to_vec(),
    }
}

/// One group of `rate() by (span:status)` with one value per step.
pub fn status(status: Val, values: &[f64]) -> Series {
    Series {
        labels: vec![(Attr::Status, status)],
        values: values.to_vec(),
    }
}

/// What the fake answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A complete answer for these series, written as Tempo writes it for the endpoint
    /// asked (instant or range).
    Series(Vec<Series>),
    /// The same, flagged PARTIAL with a message.
    Partial(Vec<Series>, &'static str),
    /// 200 with this exact body (for answers Tempo itself would not write: a proxy's page).
    Raw(&'static str),
    /// A status with a plain-text body, as Tempo answers errors.
    Text(u16, &'static str),
    /// `fail_on_high_lag`: the live store is behind.
    Lagged,
    /// Never answers.
    Hang,
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    /// Decoded query parameters, in order.
    pub params: Vec<(String, String)>,
    pub headers: HeaderMap,
}

impl Recorded {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct Script {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
    cutoff: Duration,
}

pub struct FakeTempo {
    pub url: String,
    script: Arc<Script>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeTempo {
    /// Starts a fake Tempo 3.0 (30 s `query_end_cutoff`) that answers `replies` in order
    /// (and 500 once they run out).
    pub async fn start(replies: impl IntoIterator<Item = Reply>) -> FakeTempo {
        FakeTempo::with_cutoff(QUERY_END_CUTOFF, replies).await
    }

    /// Starts a fake with another `query_end_cutoff` (Tempo before 3.0 had none).
    pub async fn with_cutoff(
        cutoff: Duration,
        replies: impl IntoIterator<Item = Reply>,
    ) -> FakeTempo {
        let script = Arc::new(Script {
            replies: Mutex::new(replies.into_iter().collect()),
            requests: Mutex::new(Vec::new()),
            cutoff,
        });
        let app = Router::new().fallback(answer).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeTempo {
            url: format!("http://{addr}"),
            script,
            server,
        }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.script.requests.lock().unwrap().clone()
    }

    /// The only request received; fails the test if there were more or none.
    pub fn only_request(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "{requests:#?}");
        requests.into_iter().next().unwrap()
    }
}

impl Drop for FakeTempo {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(State(script): State<Arc<Script>>, req: Request) -> Response {
    let uri = req.uri().clone();
    let params: Vec<(String, String)> = reqwest::Url::parse(&format!("http://fake{uri}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default();
    let recorded = Recorded {
        path: uri.path().to_string(),
        params,
        headers: req.headers().clone(),
    };
    script.requests.lock().unwrap().push(recorded.clone());
    let instant = recorded.path.ends_with("/api/metrics/query");
    // The cutoff is checked before the query runs, so it answers whatever was scripted.
    if instant {
        if let Some(since) = recorded.param("since") {
            if !window_outlives_cutoff(since, script.cutoff) {
                return text(400, CUTOFF_ERROR);
            }
        }
    }
    let reply = script.replies.lock().unwrap().pop_front();
    match reply {
        Some(Reply::Series(series)) => json_reply(render(&series, instant, None)),
        Some(Reply::Partial(series, message)) => {
            json_reply(render(&series, instant, Some(message)))
        }
        Some(Reply::Raw(body)) => json_reply(body.to_string()),
        Some(Reply::Text(status, body)) => text(status, body),
        Some(Reply::Lagged) => text(500, LAG_ERROR),
        Some(Reply::Hang) => std::future::pending().await,
        None => text(500, "no scripted reply left"),
    }
}

/// `clampInstantQueryEnd`: `end` = now is pulled back by the fewest whole seconds that put
/// it at or before now − cutoff; a window left empty is refused.
fn window_outlives_cutoff(since: &str, cutoff: Duration) -> bool {
    let Ok(since) = humantime::parse_duration(since) else {
        return true;
    };
    if cutoff.is_zero() {
        return true;
    }
    let pulled_back = Duration::from_secs(cutoff.as_secs_f64().ceil() as u64);
    since > pulled_back
}

fn json_reply(body: String) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        Body::from(body),
    )
        .into_response()
}

fn text(status: u16, body: &'static str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "text/plain; charset=utf-8")],
        Body::from(body),
    )
        .into_response()
}

/// The step timestamps of a range answer, in milliseconds (any fixed, aligned values).
const FIRST_STEP_MS: i64 = 1_724_240_000_000;
const STEP_MS: i64 = 60_000;

/// Writes the answer as `jsonpb` writes a `QueryInstantResponse` / `QueryRangeResponse`.
fn render(series: &[Series], instant: bool, partial: Option<&str>) -> String {
    let mut out = Map::new();
    let mut list = Vec::new();
    for s in series {
        let mut item = Map::new();
        if !s.labels.is_empty() {
            item.insert(
                "labels".into(),
                Value::Array(s.labels.iter().map(label).collect()),
            );
        }
        // `ToProto`: NaN samples are left out, and a series left without samples too.
        let samples: Vec<(i64, f64)> = s
            .values
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_nan())
            .map(|(i, v)| (FIRST_STEP_MS + i as i64 * STEP_MS, *v))
            .collect();
        let Some(first) = samples.first() else {
            continue;
        };
        if instant {
            // `translateQueryRangeToInstant` keeps the first sample.
            if let Some(v) = double(first.1) {
                item.insert("value".into(), v);
            }
        } else {
            let samples = samples
                .iter()
                .map(|(ts, v)| {
                    let mut sample = Map::new();
                    sample.insert("timestampMs".into(), Value::String(ts.to_string()));
                    if let Some(v) = double(*v) {
                        sample.insert("value".into(), v);
                    }
                    Value::Object(sample)
                })
                .collect();
            item.insert("samples".into(), Value::Array(samples));
        }
        list.push(Value::Object(item));
    }
    if !list.is_empty() {
        out.insert("series".into(), Value::Array(list));
    }
    // `SearchMetrics` is always present on a frontend answer; its zero fields are omitted.
    out.insert(
        "metrics".into(),
        json!({"inspectedBytes": "5120", "totalBlocks": 1, "completedJobs": 1, "totalJobs": 1}),
    );
    if let Some(message) = partial {
        out.insert("status".into(), Value::String("PARTIAL".into()));
        if !message.is_empty() {
            out.insert("message".into(), Value::String(message.into()));
        }
    }
    Value::Object(out).to_string()
}

/// A `KeyValue` as `jsonpb` writes it.
fn label((attr, val): &(Attr, Val)) -> Value {
    let value = match val {
        Val::Error => json!({"stringValue": "error"}),
        Val::Ok => json!({"stringValue": "ok"}),
        Val::Unset => json!({"stringValue": "unset"}),
        Val::Str(s) => json!({ "stringValue": s }),
        Val::Float(f) => match double(*f) {
            Some(v) => json!({ "doubleValue": v }),
            None => json!({}),
        },
    };
    json!({"key": attr.key(), "value": value})
}

/// A proto3 double: omitted at 0, non-finite values as strings.
fn double(v: f64) -> Option<Value> {
    if v == 0.0 {
        None
    } else if v.is_nan() {
        Some(Value::String("NaN".into()))
    } else if v == f64::INFINITY {
        Some(Value::String("Infinity".into()))
    } else if v == f64::NEG_INFINITY {
        Some(Value::String("-Infinity".into()))
    } else {
        Some(json!(v))
    }
}
