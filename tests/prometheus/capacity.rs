//! `signal: sloCapacity` from a real Prometheus: the scaler's value is
//! `capacity::pods_needed` of Prometheus' own answers to the canonical queries
//! (src/signal/promql/mod.rs, `capacity`), over a history with a busy spell in it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use slo_scaler::signal::capacity;

use super::*;

/// The canonical queries, written out by hand for one convention (docs/capacity.md), in
/// the order the figures of `capacity::Reading` are read.
fn queries(c: &Conv) -> [String; 9] {
    let mut f = format!("{}=\"order-service\"", c.service);
    if let Some((k, v)) = c.kind {
        f.push_str(&format!(", {k}=\"{v}\""));
    }
    let h = c.histogram;
    let unit = if c.unit != 1.0 {
        format!(" / {}", c.unit)
    } else {
        String::new()
    };
    let sum = |w: &str| format!("sum(rate({h}_sum{{{f}}}[{w}]))");
    let count = |w: &str| format!("sum(rate({h}_count{{{f}}}[{w}]))");
    let guard = slo_scaler::signal::format_window(Duration::from_secs(capacity::GUARD_WINDOW_S));
    [
        format!("{}{unit}", sum("1m")),
        count("1m"),
        format!(
            "min_over_time(({} / {})[10m:1m]){unit}",
            sum("1m"),
            count("1m")
        ),
        format!("max_over_time({}[5m:1m]){unit}", sum("1m")),
        format!("max_over_time({}[5m:1m])", count("1m")),
        format!("histogram_quantile(0.95, sum by (le) (rate({h}_bucket{{{f}}}[{guard}]))){unit}"),
        format!(
            "min_over_time(histogram_quantile(0.95, sum by (le) (rate({h}_bucket{{{f}}}[1m])))[10m:1m]){unit}"
        ),
        format!("quantile_over_time(0.9, {}[30m:1m]){unit}", sum("1m")),
        format!("quantile_over_time(0.9, {}[30m:1m])", count("1m")),
    ]
}

fn trigger(convention: &str, service: &str) -> slo_scaler::proto::ScaledObjectRef {
    so(
        "orders",
        &[
            ("signal", "sloCapacity"),
            ("service", service),
            ("convention", convention),
            ("latencyObjective", "800ms"),
            ("podConcurrency", "4"),
        ],
    )
}

const TARGET: capacity::Target = capacity::Target {
    pod_concurrency: 4.0,
    objective_s: 0.8,
};

/// deploy/examples/order-service-slo-capacity-prometheus.yaml's trigger metadata.
fn example() -> Vec<(String, String)> {
    let example: yaml_serde::Value = yaml_serde::from_str(include_str!(
        "../../deploy/examples/order-service-slo-capacity-prometheus.yaml"
    ))
    .expect("the example is YAML");
    example["spec"]["triggers"][0]["metadata"]
        .as_mapping()
        .expect("trigger metadata")
        .iter()
        .map(|(k, v)| {
            let s = |x: &yaml_serde::Value| x.as_str().expect("a string").to_string();
            (s(k), s(v))
        })
        .collect()
}

/// Seconds to the next whole minute of the wall clock (Prometheus' subquery steps are
/// multiples of the resolution in absolute time).
fn to_next_minute() -> Duration {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    Duration::from_secs(60) - Duration::from_nanos((now.as_nanos() % 60_000_000_000) as u64)
}

#[tokio::test(flavor = "multi_thread")]
async fn slo_capacity_is_pods_needed_of_prometheus_own_answers() {
    let exporter = Exporter::start().await;
    export_conventions(&exporter);
    // A busy spell first: three times the traffic until a whole minute of the wall clock
    // (one step of the history's subquery) has been busy throughout, then the usual load.
    exporter.set_load(3.0);
    let prom = PrometheusServer::start(&[exporter.addr]).await;
    let url = format!("default={}", prom.url());
    let mut flags = vec!["--prometheus", &url];
    flags.extend_from_slice(&FAST_CACHE);
    let mut scaler = Scaler::start(&flags).await;
    prom.wait_for_data(&queries(&CONVENTIONS[0])[0]).await;
    // Busy from before the next whole minute to past its end.
    tokio::time::sleep(to_next_minute() + Duration::from_secs(61)).await;
    exporter.set_load(1.0);
    // A third of the long window calm: the busiest minute is now busier than the window.
    tokio::time::sleep(Duration::from_secs(20)).await;

    // Every convention, then the example's trigger (otel-spanmetrics, 300 ms, 4 a pod).
    let example = example();
    let example: Vec<(&str, &str)> = example
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let example_target = capacity::Target {
        pod_concurrency: 4.0,
        objective_s: 0.3,
    };
    let cases = CONVENTIONS
        .iter()
        .map(|c| (c, trigger(c.name, "order-service"), TARGET))
        .chain([(&CONVENTIONS[0], so("example", &example), example_target)]);
    for (c, r, target) in cases {
        let qs = queries(c);
        let (mut agreed, mut differed) = (false, None);
        // Until one try fits between two scrapes (1 s apart): a minute at most, so a slow
        // machine gets many tries and the busy minute stays in the thirty-minute sustained
        // window (and, unless the machine is very slow, in the five-minute peak's).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(120)).await; // past the cache TTL
            let mut before = Vec::new();
            for q in &qs {
                before.push(prom.query(q).await);
            }
            let got = metric(&mut scaler.client, &r).await;
            let mut after = Vec::new();
            for q in &qs {
                after.push(prom.query(q).await);
            }
            if before != after {
                continue; // a scrape or a subquery step in between: the three differ
            }
            let [concurrency, rate, reference, peak, peak_rate, latency, calm, sustained, sustained_rate] =
                <[Option<f64>; 9]>::try_from(before).unwrap();
            let (concurrency, rate, latency) = (
                concurrency.expect("concurrency"),
                rate.expect("rate"),
                latency.expect("latency"),
            );
            let reference = reference.expect("a minute of the history with spans");
            let (peak, peak_rate) = (peak.expect("peak"), peak_rate.expect("peak rate"));
            let calm = calm.expect("a minute of the history with spans");
            let (sustained, sustained_rate) = (
                sustained.expect("a sustained level"),
                sustained_rate.expect("a sustained rate"),
            );
            // The history saw the busy spell: its busiest minute (or, on a slow machine
            // past the peak window, the sustained level of the few minutes there are)
            // out-weighs the window (three times the load against at most 7/3 of it).
            let (held, held_rate) = (peak.max(sustained), peak_rate.max(sustained_rate));
            assert!(held > 1.2 * concurrency, "{}: {held} {concurrency}", c.name);
            assert!(held_rate > 1.2 * rate, "{}: {held_rate} {rate}", c.name);
            let history = capacity::History {
                reference_latency_s: Some(reference),
                peak_concurrency: peak,
                peak_rate,
                calm_latency_s: Some(calm),
                sustained_concurrency: sustained,
                sustained_rate,
            };
            let reading = history.reading(concurrency, rate, latency);
            let want = capacity::pods_needed(target, reading);
            let got = got.unwrap_or_else(|s| panic!("{}: {s:?}", c.name));
            if (got - want).abs() > want.abs() * 1e-9 {
                // The scrape-commit gap (`common::scaler::assert_agrees`): ask again.
                eprintln!("{}: scaler {got}, pods_needed {want}: asking again", c.name);
                differed = Some((got, want));
                continue;
            }
            // Held up by the busy minute: more than the calmer window alone asks for.
            let window_alone = capacity::pods_needed(
                target,
                capacity::Reading {
                    peak_concurrency: 0.0,
                    peak_reference: None,
                    sustained_concurrency: 0.0,
                    sustained_reference: None,
                    ..reading
                },
            );
            assert!(want > window_alone, "{}: {want} {window_alone}", c.name);
            agreed = true;
            break;
        }
        if let (false, Some((got, want))) = (agreed, differed) {
            panic!("{}: scaler {got} != pods_needed {want} of {qs:?}", c.name);
        }
        assert!(agreed, "{}: prometheus never gave a stable answer", c.name);
    }

    // The sustained level's quantile is `capacity::quantile` of the subquery's own minutes
    // (Prometheus' `quantile_over_time` interpolates as it does).
    let sum = queries(&CONVENTIONS[0])[0].clone();
    let minutes = format!("({sum})[30m:1m]");
    let level = format!("quantile_over_time(0.9, {minutes})");
    let mut agreed = false;
    for _ in 0..50 {
        let before = prom.query(&level).await;
        let mut values = prom.query_matrix(&minutes).await;
        if prom.query(&level).await != before {
            continue; // a subquery step in between
        }
        assert!(values.len() >= 2, "{minutes}: {values:?}");
        let want = capacity::quantile(capacity::SUSTAINED_Q, &mut values);
        let got = before.expect("a sustained level");
        assert!((got - want.unwrap()).abs() <= 1e-12 * got, "{got} {want:?}");
        agreed = true;
        break;
    }
    assert!(agreed, "prometheus never gave a stable answer");

    // No series (here a typo): an error for KEDA's fallback, never 0 pods.
    let err = metric(
        &mut scaler.client,
        &trigger("otel-spanmetrics", "order-servce"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("no data"), "{err:?}");
    // The convention's limits hold as for every signal: no span kind label in otel-http.
    let mut client = trigger("otel-http", "order-service");
    client
        .scaler_metadata
        .insert("spanKind".into(), "client".into());
    let err = metric(&mut scaler.client, &client).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("spanKind"), "{err:?}");
}

/// A proxy in front of Prometheus that fails every instant query whose text contains
/// `failing`, as Prometheus itself answers a query it cannot serve: 503 with its error
/// envelope (prometheus/prometheus `web/api/v1/api.go`, `returnAPIError`:
/// `errorUnavailable` → 503; docs/querying/api.md, "Format overview").
async fn failing_proxy(upstream: String, failing: &'static str) -> std::net::SocketAddr {
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
            let (http, upstream) = (http.clone(), upstream.clone());
            async move {
                if form_decode(&body).contains(failing) {
                    let envelope = r#"{"status":"error","errorType":"unavailable","error":"query failed on purpose"}"#;
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [(header::CONTENT_TYPE, "application/json")],
                        envelope.to_string(),
                    )
                        .into_response();
                }
                let mut req = http.post(format!("{upstream}{uri}")).body(body);
                if let Some(ct) = headers.get(header::CONTENT_TYPE) {
                    req = req.header(header::CONTENT_TYPE, ct.as_bytes());
                }
                let resp = req.send().await.expect("upstream prometheus");
                let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
                let text = resp.text().await.expect("upstream body");
                (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// An `application/x-www-form-urlencoded` body as text (`+` a space, `%XX` a byte).
fn form_decode(body: &[u8]) -> String {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < body.len() => {
                let hex = std::str::from_utf8(&body[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).expect("percent escape"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Any one of the figures failing fails the value (Unavailable, naming the backend):
/// never pods computed from the others.
#[tokio::test(flavor = "multi_thread")]
async fn one_failing_query_fails_slo_capacity() {
    let (_exporter, prom) = fixture().await;
    let c = &CONVENTIONS[0];
    prom.wait_for_data(&queries(c)[0]).await;
    // Each query fails on its own in turn; the others are served.
    let markers = [
        // The long window's concurrency, the reference latency, the busiest minute's.
        "duration_milliseconds_sum{",
        // The guard latency alone.
        "histogram_quantile",
        // The reference latency alone.
        "min_over_time",
        // The busiest minute's rate alone.
        "max_over_time(sum(rate(traces_span_metrics_duration_milliseconds_count",
        // The sustained level's two.
        "quantile_over_time",
    ];
    for failing in markers {
        let proxy = failing_proxy(prom.url(), failing).await;
        let url = format!("default=http://{proxy}");
        let mut scaler = Scaler::start(&["--prometheus", &url]).await;
        // The same backend serves the other signals through the proxy.
        let rps = so(
            "orders",
            &[
                ("signal", "rps"),
                ("service", "order-service"),
                ("convention", c.name),
                ("threshold", "10"),
            ],
        );
        assert!(metric(&mut scaler.client, &rps).await.unwrap() > 0.0);
        let err = metric(&mut scaler.client, &trigger(c.name, "order-service"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{failing}: {err:?}");
        assert!(
            err.message().contains("prometheus/default"),
            "{failing}: {err:?}"
        );
    }
}
