//! The endpoint through Tempo: the fake of tests/tempo/fake.rs (Tempo's answers
//! reproduced from its code, cited there), one fake per query behind a router that
//! dispatches on the TraceQL text, so the endpoint's concurrent reads can come in any order.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::fake::Val::{Error as Err, Unset};
use crate::fake::{quantile, status, ungrouped, FakeTempo, Reply};
use crate::harness::{exact_quantile, plan, Planned};
use crate::setup::Setup;

/// Fakes by (version, what the query asks).
struct Dispatch {
    fakes: Vec<(String, &'static str, FakeTempo)>,
}

fn measure_of(traceql: &str) -> &'static str {
    if traceql.contains("quantile_over_time") {
        "latency"
    } else if traceql.contains("by (span:status)") {
        "errors"
    } else {
        "rate"
    }
}

async fn dispatch(State(d): State<Arc<Dispatch>>, req: Request) -> Response {
    let uri = req.uri().clone();
    let url = reqwest::Url::parse(&format!("http://x{uri}")).expect("a URL");
    let q = url
        .query_pairs()
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let Some((_, _, fake)) = d.fakes.iter().find(|(v, m, _)| {
        q.contains(&format!("resource.service.version = \"{v}\"")) && *m == measure_of(&q)
    }) else {
        return (
            axum::http::StatusCode::NOT_FOUND,
            format!("no fake for {q}"),
        )
            .into_response();
    };
    let resp = reqwest::get(format!("{}{uri}", fake.url))
        .await
        .expect("fake answers");
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    (
        axum::http::StatusCode::from_u16(status).expect("status"),
        [("content-type", "application/json")],
        body,
    )
        .into_response()
}

/// What Tempo computes from `planned` over `window_s`: spans per second, the error and
/// unset status rates, and the quantile (the exact one: Tempo's own is a sketch too).
fn replies(planned: &[Planned], window_s: f64) -> [(&'static str, Reply); 3] {
    let errors = planned.iter().filter(|p| p.error).count() as f64;
    let all = planned.len() as f64;
    [
        (
            "rate",
            Reply::Series(vec![ungrouped("rate", &[all / window_s])]),
        ),
        (
            "errors",
            Reply::Series(vec![
                status(Err, &[errors / window_s]),
                status(Unset, &[(all - errors) / window_s]),
            ]),
        ),
        (
            "latency",
            Reply::Series(vec![quantile(0.95, &[exact_quantile(planned, 0.95)])]),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tempo_analysis_reads_service_version() {
    let window = Duration::from_secs(120);
    let v1 = plan(2400, window, 100.0, 50);
    let v2 = plan(60, window, 300.0, 10);
    let mut fakes = Vec::new();
    for (version, planned) in [("v1", &v1), ("v2", &v2)] {
        for (measure, reply) in replies(planned, 120.0) {
            // Three answers each: the minCount requests below may miss the cache.
            let fake = FakeTempo::start([reply.clone(), reply.clone(), reply]).await;
            fakes.push((version.to_string(), measure, fake));
        }
    }
    let d = Arc::new(Dispatch { fakes });
    let app = Router::new().fallback(dispatch).with_state(d.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let backend = format!("default=http://{addr}");
    let s = Setup::start(&["--tempo", &backend]).await;

    let params = [
        ("service", "payment-service"),
        ("canary", "v2"),
        ("baseline", "v1"),
        ("source", "tempo"),
    ];
    let (status, a) = s.analysis(&params).await;
    assert_eq!(status, 200, "{a}");
    for (side, planned) in [("canary", &v2), ("baseline", &v1)] {
        let v = &a[side];
        let errors = planned.iter().filter(|p| p.error).count() as f64;
        assert_eq!(v["count"], planned.len() as u64, "{side}: {a}");
        assert_eq!(v["rps"], planned.len() as f64 / 120.0, "{side}: {a}");
        assert_eq!(
            v["errorRate"].as_f64(),
            Some((errors / 120.0) / (errors / 120.0 + (planned.len() as f64 - errors) / 120.0)),
            "{side}: {a}"
        );
        assert_eq!(
            v["latency"].as_f64(),
            Some(exact_quantile(planned, 0.95)),
            "{side}: {a}"
        );
    }
    assert_eq!(a["inconclusive"], false, "{a}");
    // The canary has 60 spans: minCount 61 makes the answer inconclusive.
    let mut p = params.to_vec();
    p.push(("minCount", "61"));
    let (status, b) = s.analysis(&p).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["inconclusive"], true, "{b}");
    // Every query asked for its version, service and server spans over the window.
    for (version, _, fake) in &d.fakes {
        let r = &fake.requests()[0];
        let q = r.param("q").expect("q");
        assert!(
            q.contains("resource.service.name = \"payment-service\""),
            "{q}"
        );
        assert!(
            q.contains(&format!("resource.service.version = \"{version}\"")),
            "{q}"
        );
        assert!(q.contains("span:kind = server"), "{q}");
        assert_eq!(r.param("since"), Some("2m"), "{q}");
    }
}
