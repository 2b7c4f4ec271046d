//! The endpoint and `signal: slo` over the embedded store.

use std::collections::HashMap;
use std::time::Duration;

use crate::harness::{assert_close, exact_quantile, plan, t0, Planned};
use crate::setup::Setup;

/// The exact figures of `planned` over the last `window`.
struct Exact {
    count: u64,
    error_rate: f64,
    p95: f64,
}

fn exact(planned: &[Planned]) -> Exact {
    let errors = planned.iter().filter(|p| p.error).count();
    Exact {
        count: planned.len() as u64,
        error_rate: errors as f64 / planned.len() as f64,
        p95: exact_quantile(planned, 0.95),
    }
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// v1 (baseline): 2400 spans over two minutes, median 100 ms, 2 % errors; v2 (canary):
/// 240 spans, median 300 ms, 10 % errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_analysis_equals_the_exact_figures() {
    let s = Setup::start(&[]).await;
    let window = Duration::from_secs(120);
    let v1 = plan(2400, window, 100.0, 50);
    let v2 = plan(240, window, 300.0, 10);
    s.send("payment-service", "v1", &v1).await;
    s.send("payment-service", "v2", &v2).await;
    // Another service's spans are not counted.
    s.send("order-service", "v2", &plan(500, window, 5.0, 2))
        .await;
    let (e1, e2) = (exact(&v1), exact(&v2));

    let base = [
        ("service", "payment-service"),
        ("canary", "v2"),
        ("baseline", "v1"),
    ];
    let (status, a) = s.analysis(&base).await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["service"], "payment-service");
    assert_eq!(a["window"], "2m");
    assert_eq!(a["quantile"], 0.95);
    for (side, version, e) in [("canary", "v2", &e2), ("baseline", "v1", &e1)] {
        let v = &a[side];
        assert_eq!(v["version"], version);
        // The store clock is on a bucket boundary: the window covers exactly 2 minutes.
        assert_eq!(v["count"], e.count, "{side}: {a}");
        assert!(
            (f(&v["rps"]) - e.count as f64 / 120.0).abs() < 1e-9,
            "{side} rps: {a}"
        );
        assert_eq!(f(&v["errorRate"]), e.error_rate, "{side}: {a}");
        assert_close(v["latency"].as_f64(), e.p95, &format!("{side} p95"));
    }
    assert!(
        (f(&a["delta"]["errorRate"]) - (e2.error_rate - e1.error_rate)).abs() < 1e-12,
        "{a}"
    );
    let dl = f(&a["delta"]["latency"]);
    let want = e2.p95 - e1.p95;
    let bound = 0.01 * (e2.p95 + e1.p95);
    assert!(
        (dl - want).abs() <= bound,
        "delta latency {dl}, want {want} ± {bound}"
    );
    assert_eq!(a["inconclusive"], false, "{a}");

    // `inconclusive` flips at minCount: the canary has exactly 240 spans.
    for (min, want) in [("240", false), ("241", true), ("1", false)] {
        let mut p = base.to_vec();
        p.push(("minCount", min));
        let (status, a) = s.analysis(&p).await;
        assert_eq!(status, 200, "{a}");
        assert_eq!(a["inconclusive"], want, "minCount {min}: {a}");
    }
    // A canary with no spans has no numbers and never passes.
    let (status, a) = s
        .analysis(&[
            ("service", "payment-service"),
            ("canary", "v3"),
            ("baseline", "v1"),
            ("minCount", "1"),
        ])
        .await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["canary"]["count"], 0);
    assert!(a["canary"]["latency"].is_null(), "{a}");
    assert!(a["delta"]["errorRate"].is_null(), "{a}");
    assert_eq!(a["inconclusive"], true);

    // A shorter window sees only its own spans.
    let (_, a) = s
        .analysis(&[base[0], base[1], base[2], ("window", "30s")])
        .await;
    let recent: Vec<Planned> = v2
        .iter()
        .copied()
        .filter(|p| p.end_before_now < Duration::from_secs(30))
        .collect();
    assert_eq!(a["canary"]["count"], recent.len() as u64, "{a}");
    assert_eq!(a["window"], "30s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_answer_400_naming_each() {
    let s = Setup::start(&[]).await;
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (&[], &["service", "canary", "baseline"]),
        (
            &[
                ("service", "a"),
                ("canary", "v2"),
                ("baseline", "v1"),
                ("window", "forever"),
                ("quantile", "95"),
                ("minCount", "-1"),
            ],
            &["window", "quantile", "minCount"],
        ),
        // A window the embedded store does not keep (its retention, 10m by default).
        (
            &[
                ("service", "a"),
                ("canary", "v2"),
                ("baseline", "v1"),
                ("window", "30m"),
            ],
            &["window"],
        ),
        // Backends only by configured name.
        (
            &[
                ("service", "a"),
                ("canary", "v2"),
                ("baseline", "v1"),
                ("source", "prometheus"),
                ("backend", "nope"),
            ],
            &["backend"],
        ),
        (
            &[
                ("service", "a"),
                ("canary", "v2"),
                ("baseline", "v1"),
                ("backend", "http://evil.example/"),
            ],
            &["backend"],
        ),
        (
            &[
                ("service", "a\"}) or vector(1"),
                ("canary", "v2"),
                ("baseline", "v1"),
                ("x", "1"),
            ],
            &["x"],
        ),
    ];
    for (params, want) in cases {
        let (status, body) = s.analysis(params).await;
        assert_eq!(status, 400, "{params:?}: {body}");
        let mut got: Vec<&str> = body["params"]
            .as_array()
            .expect("params")
            .iter()
            .map(|p| p["param"].as_str().expect("param name"))
            .collect();
        got.sort();
        let mut want = want.to_vec();
        want.sort();
        assert_eq!(got, want, "{params:?}: {body}");
    }
    // A hostile service name is a value, not part of a query: no spans, no error.
    let (status, a) = s
        .analysis(&[
            ("service", "a\"}) or vector(1"),
            ("canary", "v2"),
            ("baseline", "v1"),
        ])
        .await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["inconclusive"], true);
}

/// `signal: slo` over the store equals max(p95 / objective, errorRate / objective),
/// whichever ratio is the larger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_signal_is_the_larger_ratio() {
    let s = Setup::start(&[]).await;
    let v1 = plan(2000, Duration::from_secs(60), 100.0, 20);
    s.send("checkout", "v1", &v1).await;
    let e = exact(&v1);
    let md = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let eval = |pairs: Vec<(&str, &str)>| {
        let engine = s.engine.clone();
        let m = md(&pairs);
        async move {
            let plan = engine.plan("shop", &m).expect("valid slo trigger");
            engine.evaluate(&plan).await.expect("a value")
        }
    };
    let base = vec![
        ("signal", "slo"),
        ("source", "otlp"),
        ("service", "checkout"),
    ];
    // Latency dominates: objective at a fifth of p95; errors 5 % against 50 %.
    let lat_obj = e.p95 / 5.0;
    let lat_obj_s = format!("{lat_obj}");
    let mut p = base.clone();
    p.extend([
        ("latencyObjective", lat_obj_s.as_str()),
        ("errorRateObjective", "50%"),
    ]);
    let got = eval(p).await;
    let p95 = got.value * lat_obj;
    assert_close(Some(p95), e.p95, "slo × latency objective");
    assert!(got.value > e.error_rate / 0.5);
    // Errors dominate: 5 % against 1 % is 5, latency against 10 s is tiny.
    let mut p = base.clone();
    p.extend([("latencyObjective", "10s"), ("errorRateObjective", "1%")]);
    let got = eval(p).await;
    assert_eq!(
        got.value,
        (e.error_rate / 0.01).max(got.value.min(e.p95 / 10.0))
    );
    assert!((got.value - e.error_rate / 0.01).abs() < 1e-9, "{got:?}");
    // One objective alone.
    let mut p = base.clone();
    p.push(("errorRateObjective", "0.1"));
    let got = eval(p).await;
    assert_eq!(got.value, e.error_rate / 0.1, "{got:?}");
    assert!(!got.no_data);
    // No spans: no data, an error (0 would read as "all is well").
    let m = md(&[
        ("signal", "slo"),
        ("source", "otlp"),
        ("service", "nobody"),
        ("errorRateObjective", "1%"),
    ]);
    let plan = s.engine.plan("shop", &m).expect("valid");
    assert!(s.engine.evaluate(&plan).await.is_err());
}

/// Right after a (re)start the store knows every span it received but no rate yet (it
/// counts only whole buckets since it started). The endpoint answers the figures it
/// knows, with `rps` null until the rate is known (product spec: "A figure that is not
/// known yet is null; the others are still answered"), so an Argo AnalysisRun in the
/// scaler's first seconds gets an answer, not a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_store_answers_every_known_figure_and_null_rps() {
    // Started half a second ago: no whole bucket yet, so no rate.
    let s = Setup::start_after(&[], Duration::from_millis(500)).await;
    let window = Duration::from_secs(60);
    // Spans from before the start, as an SDK's queue delivers them after a restart.
    let v1 = plan(600, window, 100.0, 50);
    let v2 = plan(120, window, 300.0, 10);
    s.send("payment-service", "v1", &v1).await;
    s.send("payment-service", "v2", &v2).await;
    let (e1, e2) = (exact(&v1), exact(&v2));
    let params = [
        ("service", "payment-service"),
        ("canary", "v2"),
        ("baseline", "v1"),
        ("window", "1m"),
    ];
    let (status, a) = s.analysis(&params).await;
    assert_eq!(status, 200, "{a}");
    for (side, e) in [("canary", &e2), ("baseline", &e1)] {
        let v = &a[side];
        assert!(v["rps"].is_null(), "{side}: rps is not known yet: {a}");
        assert_eq!(v["count"], e.count, "{side}: {a}");
        assert_eq!(f(&v["errorRate"]), e.error_rate, "{side}: {a}");
        assert_close(v["latency"].as_f64(), e.p95, &format!("{side} p95"));
    }
    assert!(a["delta"]["errorRate"].is_number(), "{a}");
    assert_eq!(a["inconclusive"], false, "{a}");
    // Once the store has seen a whole bucket (this store settles none), rps is known.
    s.clock.set(t0() + Duration::from_secs(2));
    let (status, a) = s.analysis(&params).await;
    assert_eq!(status, 200, "{a}");
    assert!(a["canary"]["rps"].is_number(), "{a}");
}

/// `count` is the number of spans the store holds for the window, not rps × window: read
/// half a second into a bucket, with spans in the bucket still filling (which the rate
/// leaves out, see `--otlp-rate-settle`), the count is still every span sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_count_is_every_span_in_the_window() {
    let s = Setup::start(&[]).await;
    let now = t0() + Duration::from_millis(500);
    s.clock.set(now);
    // 300 spans over the last 10 s, some of them in the newest half second.
    let v2 = plan(300, Duration::from_secs(10), 120.0, 10);
    let v1 = plan(700, Duration::from_secs(10), 100.0, 50);
    let filling = v2
        .iter()
        .filter(|p| p.end_before_now < Duration::from_millis(500))
        .count();
    assert!(
        filling > 0,
        "the plan puts spans in the bucket still filling"
    );
    s.send_before(now, "payment-service", "v2", &v2).await;
    s.send_before(now, "payment-service", "v1", &v1).await;
    let (e1, e2) = (exact(&v1), exact(&v2));
    for window in ["2m", "30s"] {
        let calls = s.backend_calls("otlp").await;
        let (status, a) = s
            .analysis(&[
                ("service", "payment-service"),
                ("canary", "v2"),
                ("baseline", "v1"),
                ("window", window),
                ("minCount", "300"),
            ])
            .await;
        assert_eq!(status, 200, "{a}");
        // One read of the store per side.
        assert_eq!(s.backend_calls("otlp").await, calls + 2, "{window}");
        assert_eq!(a["canary"]["count"], 300, "{window}: {a}");
        assert_eq!(a["baseline"]["count"], 700, "{window}: {a}");
        // The error rate and latency describe those same spans.
        assert_eq!(f(&a["canary"]["errorRate"]), e2.error_rate, "{a}");
        assert_eq!(f(&a["baseline"]["errorRate"]), e1.error_rate, "{a}");
        assert_close(a["canary"]["latency"].as_f64(), e2.p95, "canary p95");
        // The rate counts whole buckets only: those spans still filling are not in it.
        let rps = f(&a["canary"]["rps"]);
        let secs = humantime::parse_duration(window)
            .expect("window")
            .as_secs_f64();
        assert!(
            (rps - (300 - filling) as f64 / secs).abs() < 1e-9,
            "{window}: rps {rps}: {a}"
        );
        assert_eq!(a["inconclusive"], false, "{a}");
    }
}

/// `signal: slo` over the store reads both objectives from one snapshot: right after a
/// plain latency trigger has cached its reading and new, slower spans arrived, the slo
/// value is still max(p95 / objective, errors / objective) of every span sent, not a
/// cached p95 next to a fresh error rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_reads_both_objectives_from_one_snapshot() {
    let s = Setup::start(&[]).await;
    let fast = plan(1000, Duration::from_secs(30), 50.0, 100);
    s.send("checkout", "v1", &fast).await;
    let md = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let latency = s
        .engine
        .plan(
            "shop",
            &md(&[
                ("signal", "latency"),
                ("source", "otlp"),
                ("service", "checkout"),
                ("window", "1m"),
                ("threshold", "300ms"),
            ]),
        )
        .expect("valid latency trigger");
    let before = s.engine.evaluate(&latency).await.expect("a p95");
    // Slow spans with errors arrive: p95 and the error rate both move.
    let slow = plan(1000, Duration::from_secs(30), 900.0, 4);
    s.send("checkout", "v1", &slow).await;
    let all: Vec<_> = fast.iter().chain(&slow).copied().collect();
    let e = exact(&all);
    assert!(e.p95 > 2.0 * before.value, "the slow spans move p95");
    let slo = s
        .engine
        .plan(
            "shop",
            &md(&[
                ("signal", "slo"),
                ("source", "otlp"),
                ("service", "checkout"),
                ("window", "1m"),
                ("latencyObjective", "100ms"),
                ("errorRateObjective", "50%"),
            ]),
        )
        .expect("valid slo trigger");
    let calls = s.backend_calls("otlp").await;
    let got = s.engine.evaluate(&slo).await.expect("an slo value");
    // One read of the store for both objectives.
    assert_eq!(s.backend_calls("otlp").await, calls + 1);
    let want = (e.p95 / 0.1).max(e.error_rate / 0.5);
    assert!(
        (got.value - want).abs() <= 0.01 * want,
        "slo {} want {want} (p95 {}, errors {})",
        got.value,
        e.p95,
        e.error_rate
    );
    // Errors dominate against a tight error objective: exactly errors / objective.
    let slo = s
        .engine
        .plan(
            "shop",
            &md(&[
                ("signal", "slo"),
                ("source", "otlp"),
                ("service", "checkout"),
                ("window", "1m"),
                ("latencyObjective", "10s"),
                ("errorRateObjective", "1%"),
            ]),
        )
        .expect("valid slo trigger");
    let got = s.engine.evaluate(&slo).await.expect("an slo value");
    assert_eq!(got.value, e.error_rate / 0.01);
}
