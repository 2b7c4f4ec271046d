//! A multi-tenant query gateway in front of real Prometheus servers, reading the tenant as
//! Mimir and Cortex do, and the tests of `tenant` for Prometheus backends.
//!
//! The tenant rules follow grafana/dskit, the library Mimir and Cortex share:
//! `user/http.go` (`ExtractOrgIDFromHTTPRequest`: the `X-Scope-OrgID` header; missing or
//! empty → `no org id`, which Mimir's auth middleware answers with 401) and
//! `tenant/resolver.go` + `tenant/tenant.go` (`TenantIDs`: the value split on `|`, a
//! `:subtenant` suffix dropped, each ID checked by `ValidTenantID` — at most 150 bytes of
//! `a-zA-Z0-9!-_.*'()`, not `.` or `..` — then sorted and de-duplicated). Written here
//! from those rules, independently of the scaler's own check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;

use super::common::exporter::Exporter;
use super::common::prometheus::PrometheusServer;
use super::common::scaler::{metric, so, try_start_server, Scaler};

#[derive(Clone, Default)]
struct Gateway {
    /// Tenant → the base URL of its Prometheus.
    tenants: HashMap<String, String>,
    /// The `X-Scope-OrgID` of every request, as received (`None`: absent).
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

/// dskit `ValidTenantID`.
fn valid_tenant_id(s: &str) -> Result<(), String> {
    if let Some(c) = s
        .bytes()
        .find(|&b| !(b.is_ascii_alphanumeric() || b"!-_.*'()".contains(&b)))
    {
        return Err(format!(
            "tenant ID '{s}' contains unsupported character '{}'",
            c as char
        ));
    }
    if s.len() > 150 {
        return Err("tenant ID is too long: max 150 characters".into());
    }
    if s == "." || s == ".." {
        return Err("tenant ID is '.' or '..'".into());
    }
    Ok(())
}

/// dskit `TenantIDs` over the header's value.
fn tenant_ids(org_id: &str) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    for part in org_id.split('|') {
        let id = part.split(':').next().unwrap_or_default();
        valid_tenant_id(id)?;
        ids.push(id.to_string());
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

fn answer(status: u16, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

async fn serve(State(g): State<Gateway>, req: Request) -> Response {
    let org_id = req
        .headers()
        .get("X-Scope-OrgID")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    g.seen.lock().unwrap().push(org_id.clone());
    let Some(org_id) = org_id.filter(|v| !v.is_empty()) else {
        return answer(401, "no org id");
    };
    let ids = match tenant_ids(&org_id) {
        Ok(ids) => ids,
        Err(e) => return answer(401, e),
    };
    let [id] = ids.as_slice() else {
        return answer(400, "this gateway serves one tenant per query");
    };
    let Some(upstream) = g.tenants.get(id) else {
        // A tenant that has written nothing: Mimir answers an empty result.
        return answer(
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
        );
    };
    let (parts, body) = req.into_parts();
    let body = to_bytes(body, 1 << 20).await.unwrap();
    let path = parts
        .uri
        .path()
        .strip_prefix("/prometheus")
        .unwrap_or(parts.uri.path());
    let resp = reqwest::Client::new()
        .post(format!("{upstream}{path}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    answer(status, resp.bytes().await.unwrap())
}

/// Two tenants, each with its own real Prometheus scraping `queue_backlog`: team-a 3,
/// team-b 8. Mimir serves the Prometheus API under `/prometheus`.
struct Setup {
    url: String,
    seen: Arc<Mutex<Vec<Option<String>>>>,
    _servers: Vec<(Exporter, PrometheusServer)>,
}

async fn setup() -> Setup {
    let mut servers = Vec::new();
    let mut tenants = HashMap::new();
    for (tenant, value) in [("team-a", 3.0), ("team-b", 8.0)] {
        let (exporter, prom) = PrometheusServer::scraping_gauge("queue_backlog", value).await;
        tenants.insert(tenant.to_string(), prom.url());
        servers.push((exporter, prom));
    }
    let gateway = Gateway {
        tenants,
        ..Default::default()
    };
    let seen = gateway.seen.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(serve).with_state(gateway);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Setup {
        url: format!("http://{addr}/prometheus"),
        seen,
        _servers: servers,
    }
}

fn backlog(name: &str, tenant: Option<&str>) -> slo_scaler::proto::ScaledObjectRef {
    let mut md = vec![
        ("signal", "query"),
        ("source", "prometheus"),
        ("backend", "mimir"),
        ("query", "max(queue_backlog)"),
        ("threshold", "5"),
    ];
    if let Some(t) = tenant {
        md.push(("tenant", t));
    }
    so(name, &md)
}

#[tokio::test]
async fn a_triggers_tenant_picks_its_data() {
    let env = setup().await;
    let backend = format!("mimir={}", env.url);
    let mut s = Scaler::start(&["--prometheus", &backend]).await;
    let a = metric(&mut s.client, &backlog("a", Some("team-a")))
        .await
        .unwrap();
    let b = metric(&mut s.client, &backlog("b", Some("team-b")))
        .await
        .unwrap();
    assert_eq!((a, b), (3.0, 8.0));
    // No tenant and no default: the gateway refuses, and no value is made up.
    let status = metric(&mut s.client, &backlog("none", None))
        .await
        .expect_err("no org id");
    // The gateway's 401: the backend refusing us, so `Unavailable` (not the caller's fault).
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("prometheus/mimir"), "{status:?}");
    assert_eq!(
        *env.seen.lock().unwrap(),
        vec![Some("team-a".into()), Some("team-b".into()), None]
    );
}

#[tokio::test]
async fn the_backends_default_tenant_serves_triggers_that_name_none() {
    let env = setup().await;
    let backend = format!("mimir={}", env.url);
    let mut s = Scaler::start(&[
        "--prometheus",
        &backend,
        "--prometheus-tenant",
        "mimir=team-b",
    ])
    .await;
    assert_eq!(
        metric(&mut s.client, &backlog("dflt", None)).await.unwrap(),
        8.0
    );
    assert_eq!(
        metric(&mut s.client, &backlog("own", Some("team-a")))
            .await
            .unwrap(),
        3.0
    );
}

#[tokio::test]
async fn the_allow_list_keeps_namespaces_to_their_tenants() {
    let env = setup().await;
    let backend = format!("mimir={}", env.url);
    let mut s = Scaler::start(&[
        "--prometheus",
        &backend,
        "--prometheus-tenant-allow",
        "shop=team-a",
        "--allow-unauthenticated-namespace-policy",
    ])
    .await;
    // `so` puts triggers in namespace shop.
    assert_eq!(
        metric(&mut s.client, &backlog("mine", Some("team-a")))
            .await
            .unwrap(),
        3.0
    );
    let status = metric(&mut s.client, &backlog("theirs", Some("team-b")))
        .await
        .expect_err("not shop's tenant");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("prometheus tenant \"team-b\""),
        "{status:?}"
    );
    // Refused before any request: the gateway only saw shop's tenant.
    assert_eq!(*env.seen.lock().unwrap(), vec![Some("team-a".into())]);
}

#[tokio::test]
async fn tenants_the_backend_would_refuse_are_refused_up_front() {
    let env = setup().await;
    let backend = format!("mimir={}", env.url);
    let mut s = Scaler::start(&["--prometheus", &backend]).await;
    // `|` joins several tenants in dskit (query federation); a trigger reads one.
    for bad in ["team-a|team-b", "team:sub", ".."] {
        let status = metric(&mut s.client, &backlog("bad", Some(bad)))
            .await
            .expect_err("invalid tenant");
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{bad}: {status:?}"
        );
        assert!(status.message().contains("tenant"), "{bad}: {status:?}");
    }
    assert!(env.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_tenant_allow_list_needs_authenticated_callers() {
    let err = try_start_server(&[
        "--prometheus",
        "mimir=http://127.0.0.1:9",
        "--prometheus-tenant-allow",
        "shop=team-a",
    ])
    .await
    .err()
    .expect("refused without mTLS");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("--prometheus-tenant-allow") && msg.contains("--tls-client-ca-file"),
        "{msg}"
    );
}
