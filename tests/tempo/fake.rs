//! A fake Grafana Tempo query frontend on 127.0.0.1: it records every request and
//! answers scripted replies.
//!
//! No Tempo server can be installed on these machines, so this reproduces the documented
//! wire format of the TraceQL metrics API instead, quirks included: the bodies the tests
//! script are protobuf JSON as Tempo writes it (omitted defaults, int64 as strings,
//! `"NaN"`), and errors are an HTTP status with a plain-text body.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// What the fake answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with a JSON body.
    Json(&'static str),
    /// A status with a plain-text body, as Tempo answers errors.
    Text(u16, &'static str),
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

#[derive(Default)]
struct Script {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
}

pub struct FakeTempo {
    pub url: String,
    script: Arc<Script>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeTempo {
    /// Starts a fake that answers `replies` in order (and 500 once they run out).
    pub async fn start(replies: impl IntoIterator<Item = Reply>) -> FakeTempo {
        let script = Arc::new(Script::default());
        script.replies.lock().unwrap().extend(replies);
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
    let params = reqwest::Url::parse(&format!("http://fake{uri}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default();
    script.requests.lock().unwrap().push(Recorded {
        path: uri.path().to_string(),
        params,
        headers: req.headers().clone(),
    });
    let reply = script.replies.lock().unwrap().pop_front();
    match reply {
        Some(Reply::Json(body)) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            Body::from(body),
        )
            .into_response(),
        Some(Reply::Text(status, body)) => (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", "text/plain; charset=utf-8")],
            Body::from(body),
        )
            .into_response(),
        Some(Reply::Hang) => std::future::pending().await,
        None => (StatusCode::INTERNAL_SERVER_ERROR, "no scripted reply left").into_response(),
    }
}
