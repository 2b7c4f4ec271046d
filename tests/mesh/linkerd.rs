//! The `linkerd` convention: every signal over gRPC from the inbound side's series, and a
//! Rollout's pods told apart through a conventions file.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn linkerd_signals_read_the_inbound_side() {
    let mut f = fixture().await;
    let sel = r#"deployment="payment-service",direction="inbound",namespace="shop""#;
    let d = &DEPLOYED;
    let calls = total(d.ok) + total(d.failed);
    let ns = [("labels", "namespace=shop")];
    for (query, signal) in canonical(
        LINKERD_NAMES.0,
        LINKERD_NAMES.1,
        sel,
        r#"classification="failure""#,
    ) {
        let r = so(
            "payment",
            &trigger(signal, "linkerd", "payment-service", &ns),
        );
        let v = assert_agrees(&f.prom, &mut f.scaler, &r, &query).await;
        match signal {
            "latency" => {
                let want = quantile(0.95, &LINKERD_BOUNDS, &[d.ok, d.failed]);
                assert!((v - want).abs() < 1e-9, "p95 {want}: {v}");
            }
            "errorRate" => assert!((v - total(d.failed) / calls).abs() < 1e-12, "{v}"),
            "rps" => assert!((calls * 0.7..calls * 1.3).contains(&v), "{v}"),
            _ => assert!(v > 0.0, "{v}"),
        }
    }

    // linkerd has no version label: a version is refused, naming the key.
    let md = [ns[0], ("version", "v2")];
    let r = so(
        "payment-v2",
        &trigger("rps", "linkerd", "payment-service", &md),
    );
    let e = metric(&mut f.scaler.client, &r).await.expect_err("refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message()
            .contains("version: convention linkerd has no service version label"),
        "{e:?}"
    );
    // … and so is the analysis endpoint, naming the convention (its versions are required).
    let (status, a) = analysis(
        &f.scaler,
        &[
            ("service", "payment-service"),
            ("canary", "v2"),
            ("baseline", "v1"),
            ("source", "prometheus"),
            ("convention", "linkerd"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{a}");
    assert_eq!(a["params"][0]["param"], "convention", "{a}");
}

#[tokio::test(flavor = "multi_thread")]
async fn linkerd_rollouts_by_a_conventions_file() {
    let mut f = fixture().await;
    // The file's fixed matcher keeps the inbound side; versions by pod-template hash.
    let q = r#"sum(rate(response_total{app="checkout",direction="inbound",rollouts_pod_template_hash="7c8d9e0f1"}[10s]))"#;
    let md = [("version", CANARY.version)];
    let r = so(
        "checkout",
        &trigger("rps", "linkerd-rollouts", "checkout", &md),
    );
    assert_agrees(&f.prom, &mut f.scaler, &r, q).await;

    let (status, a) = analysis(
        &f.scaler,
        &[
            ("service", "checkout"),
            ("canary", CANARY.version),
            ("baseline", STABLE.version),
            ("source", "prometheus"),
            ("convention", "linkerd-rollouts"),
            ("window", "10s"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{a}");
    assert_side(&a, "canary", &LINKERD_BOUNDS, &CANARY);
    assert_side(&a, "baseline", &LINKERD_BOUNDS, &STABLE);
    let answer: Answer = serde_json::from_value(a.clone()).expect("an answer");
    assert_eq!(
        Rule::EXAMPLE.judge(&answer),
        Verdict::Fail,
        "10 % failures: {a}"
    );
}
