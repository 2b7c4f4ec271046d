//! The `istio` convention: every signal over gRPC from the destination proxy's series, and
//! the analysis endpoint judging canaries by the seed's rule.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn istio_signals_read_the_destination_proxys_series() {
    let mut f = fixture().await;
    // Every version of payment-service in `shop`, as the server's sidecars report it.
    let sel = r#"destination_service_name="payment-service",reporter="destination",destination_service_namespace="shop""#;
    let all: Vec<Dist> = ISTIO_SIDES.iter().flat_map(|s| [s.ok, s.failed]).collect();
    let calls: f64 = all.iter().map(|d| total(d)).sum();
    let errors: f64 = ISTIO_SIDES.iter().map(|s| total(s.failed)).sum();
    let ns = [("labels", "destination_service_namespace=shop")];
    for (query, signal) in canonical(ISTIO_NAMES.0, ISTIO_NAMES.1, sel, r#"response_code=~"5..""#) {
        let r = so("payment", &trigger(signal, "istio", "payment-service", &ns));
        let v = assert_agrees(&f.prom, &mut f.scaler, &r, &query).await;
        match signal {
            "latency" => {
                let want = quantile(0.95, &ISTIO_BOUNDS, &all);
                assert!((v - want).abs() < 1e-9, "p95 {want}: {v}");
            }
            "errorRate" => assert!((v - errors / calls).abs() < 1e-12, "{v}"),
            // About one scrape a second.
            "rps" => assert!((calls * 0.7..calls * 1.3).contains(&v), "{v}"),
            // Each request counted at its bucket's bound: seconds of requests per scrape.
            _ => {
                let seconds: f64 = all
                    .iter()
                    .flat_map(|d| d.iter())
                    .map(|(b, n)| b * n / 1000.0)
                    .sum();
                assert!((seconds * 0.7..seconds * 1.3).contains(&v), "{v}");
            }
        }
    }

    // deploy/examples/payment-service-latency-istio.yaml's trigger, over the test's window.
    let example: yaml_serde::Value = yaml_serde::from_str(include_str!(
        "../../deploy/examples/payment-service-latency-istio.yaml"
    ))
    .expect("the example is YAML");
    let mut md: Vec<(String, String)> = example["spec"]["triggers"][0]["metadata"]
        .as_mapping()
        .expect("trigger metadata")
        .iter()
        .map(|(k, v)| {
            let s = |x: &yaml_serde::Value| x.as_str().expect("a string").to_string();
            (s(k), s(v))
        })
        .collect();
    md.retain(|(k, _)| k != "window");
    md.push(("window".into(), "10s".into()));
    let md: Vec<(&str, &str)> = md.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let q = format!(
        "histogram_quantile(0.95, sum by (le) (rate({}_bucket{{{sel}}}[10s]))) / 1000",
        ISTIO_NAMES.1
    );
    let v = assert_agrees(&f.prom, &mut f.scaler, &so("example", &md), &q).await;
    let want = quantile(0.95, &ISTIO_BOUNDS, &all);
    assert!((v - want).abs() < 1e-9, "the example's p95 {want}: {v}");

    // One version: the slow canary's p95, from `destination_version`.
    let sel_v3 = format!("{sel},destination_version=\"v3\"");
    let q = format!(
        "histogram_quantile(0.95, sum by (le) (rate({}_bucket{{{sel_v3}}}[10s]))) / 1000",
        ISTIO_NAMES.1
    );
    let md = [ns[0], ("version", "v3")];
    let r = so(
        "payment-v3",
        &trigger("latency", "istio", "payment-service", &md),
    );
    let v = assert_agrees(&f.prom, &mut f.scaler, &r, &q).await;
    let want = quantile(0.95, &ISTIO_BOUNDS, &[SLOW.ok, SLOW.failed]);
    assert!((v - want).abs() < 1e-9, "v3 p95 {want}: {v}");

    // Without the namespace, the namesake in staging counts too: the labels matter.
    let r = so(
        "payment-any-ns",
        &trigger("errorRate", "istio", "payment-service", &[]),
    );
    let v = metric(&mut f.scaler.client, &r).await.expect("a value");
    assert!(v > 0.2, "staging's failures are in: {v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn istio_analysis_judges_canaries_by_the_seeds_rule() {
    let f = fixture().await;
    for (canary, want) in [
        (&ERRORS, "Failed"),
        (&SLOW, "Failed"),
        (&GOOD, "Successful"),
    ] {
        // deploy/examples/canary/analysis-template-istio.yaml's parameters, over the
        // test's 10 s window.
        let params = [
            ("service", "payment-service"),
            ("canary", canary.version),
            ("baseline", BASELINE.version),
            ("source", "prometheus"),
            ("convention", "istio"),
            ("labels", "destination_service_namespace=shop"),
            ("window", "10s"),
            ("quantile", "0.95"),
            ("minCount", "50"),
        ];
        let (status, a) = analysis(&f.scaler, &params).await;
        assert_eq!(status, 200, "{a}");
        assert_side(&a, "canary", &ISTIO_BOUNDS, canary);
        assert_side(&a, "baseline", &ISTIO_BOUNDS, &BASELINE);
        let delta = quantile(0.95, &ISTIO_BOUNDS, &[canary.ok, canary.failed])
            - quantile(0.95, &ISTIO_BOUNDS, &[BASELINE.ok, BASELINE.failed]);
        let got = a["delta"]["latency"].as_f64().expect("delta");
        assert!((got - delta).abs() < 1e-9, "delta {delta}: {a}");
        assert_eq!(a["inconclusive"], false, "{a}");
        // Argo Rollouts' verdict under the example template, and the demo's judge.
        assert_eq!(
            common::canary::verdict("slo-scaler-canary-istio", &a),
            want,
            "{}: {a}",
            canary.version
        );
        let answer: Answer = serde_json::from_value(a.clone()).expect("an answer");
        let ours = match Rule::EXAMPLE.judge(&answer) {
            Verdict::Pass => "Successful",
            Verdict::Fail => "Failed",
            Verdict::Inconclusive => "Inconclusive",
        };
        assert_eq!(ours, want, "{}: {a}", canary.version);
    }
    // A version no pod reports: no traffic, never a pass.
    let (status, a) = analysis(
        &f.scaler,
        &[
            ("service", "payment-service"),
            ("canary", "v9"),
            ("baseline", "v1"),
            ("source", "prometheus"),
            ("convention", "istio"),
            ("window", "10s"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["canary"]["count"], 0, "{a}");
    assert_eq!(a["inconclusive"], true, "{a}");
}
