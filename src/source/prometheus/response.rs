//! Prometheus HTTP API answers → a [`Reading`] or a [`SourceError`].

use serde::Deserialize;
use serde_json::Value;

use crate::source::http::error_snippet;
use crate::source::{Reading, SourceError};

#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    /// VictoriaMetrics cluster's flag for an answer some `vmstorage` nodes did not
    /// contribute to (`"isPartial"`, written by vmselect's `QueryResponse` template in
    /// `app/vmselect/prometheus/query_response.qtpl`).
    #[serde(default, rename = "isPartial")]
    is_partial: Option<bool>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Value,
}

/// Interprets an answer of `/api/v1/query` with HTTP status `status`.
///
/// An empty vector and NaN are "no data" (`Reading::Value(None)`); ±Inf passes up as a
/// number (the engine's one rule for values refuses it, naming it); several series, range
/// vectors and native-histogram samples are errors, because no single number can honestly
/// be reported for them.
pub fn parse_response(backend: &str, status: u16, body: &[u8]) -> Result<Reading, SourceError> {
    let bad = |detail: String| SourceError::BadResponse {
        backend: backend.to_string(),
        detail,
    };
    let parsed: Result<ApiResponse, _> = serde_json::from_slice(body);
    let api = match parsed {
        Ok(api) => api,
        Err(e) => {
            // Not the API's JSON: a proxy or a load balancer answered.
            let text = error_snippet(body);
            return Err(match status {
                200 => bad(format!("invalid JSON: {e}")),
                401 | 403 => SourceError::PermissionDenied {
                    backend: backend.to_string(),
                    detail: format!("HTTP {status}: {text}"),
                },
                400 | 422 => SourceError::BadQuery {
                    backend: backend.to_string(),
                    detail: format!("HTTP {status}: {text}"),
                },
                _ => SourceError::Unavailable {
                    backend: backend.to_string(),
                    detail: format!("HTTP {status}: {text}"),
                },
            });
        }
    };
    if api.status != "success" {
        let kind = api.error_type.unwrap_or_else(|| "unknown".into());
        let detail = format!(
            "{kind}: {}",
            api.error.unwrap_or_else(|| "no error message".into())
        );
        return Err(match (kind.as_str(), status) {
            ("bad_data" | "execution", _) | (_, 400 | 422) => SourceError::BadQuery {
                backend: backend.to_string(),
                detail,
            },
            (_, 401 | 403) => SourceError::PermissionDenied {
                backend: backend.to_string(),
                detail,
            },
            _ => SourceError::Unavailable {
                backend: backend.to_string(),
                detail,
            },
        });
    }
    if api.is_partial == Some(true) {
        // Sums and rates over the nodes that answered undercount: no figure at all.
        return Err(SourceError::Unavailable {
            backend: backend.to_string(),
            detail: "the answer is partial (isPartial: some storage nodes did not answer), \
                     so its figure may undercount"
                .into(),
        });
    }
    let Some(data) = api.data else {
        return Err(bad("success without data".into()));
    };
    match data.result_type.as_str() {
        "scalar" => sample_value(&data.result)
            .map(Reading::Value)
            .map_err(bad),
        "vector" => {
            let Value::Array(items) = &data.result else {
                return Err(bad("vector result is not an array".into()));
            };
            match items.as_slice() {
                [] => Ok(Reading::Value(None)),
                [item] => {
                    if let Some(v) = item.get("value") {
                        sample_value(v).map(Reading::Value).map_err(bad)
                    } else if item.get("histogram").is_some() {
                        Err(bad("the query returned a native histogram sample; wrap it in histogram_quantile(), histogram_count() or histogram_sum()".into()))
                    } else {
                        Err(bad("vector sample without a value".into()))
                    }
                }
                many => Err(bad(format!(
                    "the query returned {} series; aggregate it to one (e.g. sum(...))",
                    many.len()
                ))),
            }
        }
        "matrix" => Err(bad(
            "the query returned a range vector; use an instant expression (e.g. rate(x[5m]), not x[5m])".into(),
        )),
        other => Err(bad(format!("unsupported result type {other:?}"))),
    }
}

/// `[<unix seconds>, "<number>"]` → the number (±Inf included); NaN → `None`.
fn sample_value(v: &Value) -> Result<Option<f64>, String> {
    let Some([_, Value::String(s)]) = v.as_array().map(Vec::as_slice) else {
        return Err(format!(
            "malformed sample {}",
            error_snippet(v.to_string().as_bytes())
        ));
    };
    let n = match s.as_str() {
        "NaN" => return Ok(None),
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        s => s
            .parse::<f64>()
            .map_err(|_| format!("sample value {s:?} is not a number"))?,
    };
    if n.is_nan() {
        return Ok(None);
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: u16, body: &str, expect: Result<Option<f64>, &str>) {
        let got = parse_response("prometheus/default", status, body.as_bytes());
        match (got, expect) {
            (Ok(Reading::Value(v)), Ok(e)) => assert_eq!(v, e, "{body}"),
            (Err(err), Err(fragment)) => {
                let text = err.to_string();
                assert!(
                    text.contains(fragment),
                    "{body}: {text:?} lacks {fragment:?}"
                );
                assert!(text.starts_with("prometheus/default"), "{text}");
            }
            (got, expect) => panic!("{body}: got {got:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn answers() {
        let vector = |v: &str| {
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1724240000.123,"{v}"]}}]}}}}"#
            )
        };
        check(200, &vector("0.25"), Ok(Some(0.25)));
        check(200, &vector("1e-3"), Ok(Some(0.001)));
        check(200, &vector("-2"), Ok(Some(-2.0)));
        check(200, &vector("NaN"), Ok(None));
        check(200, &vector("+Inf"), Ok(Some(f64::INFINITY)));
        check(200, &vector("-Inf"), Ok(Some(f64::NEG_INFINITY)));
        check(200, &vector("abc"), Err("not a number"));
        check(
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            Ok(None),
        );
        check(
            200,
            r#"{"status":"success","data":{"resultType":"scalar","result":[1724240000,"42"]}}"#,
            Ok(Some(42.0)),
        );
        check(
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}}"#,
            Err("returned 2 series"),
        );
        check(
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{"count":"2","sum":"3","buckets":[]}]}]}}"#,
            Err("native histogram"),
        );
        check(
            200,
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            Err("range vector"),
        );
        check(
            400,
            r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected identifier"}"#,
            Err("rejected the query: bad_data: 1:5: parse error"),
        );
        check(
            422,
            r#"{"status":"error","errorType":"execution","error":"many-to-many matching not allowed"}"#,
            Err("many-to-many"),
        );
        check(
            503,
            r#"{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}"#,
            Err("unavailable: timeout"),
        );
        check(
            502,
            "<html>Bad Gateway</html>",
            Err("HTTP 502: <html>Bad Gateway</html>"),
        );
        check(403, "forbidden", Err("access denied: HTTP 403"));
        check(200, "not json", Err("invalid JSON"));
        check(200, r#"{"status":"success"}"#, Err("without data"));
        check(200, &"x".repeat(10_000), Err("invalid JSON"));
        // VictoriaMetrics cluster marks an answer some vmstorage nodes missed (vmselect's
        // query_response.qtpl writes "isPartial" on every answer).
        check(
            200,
            r#"{"status":"success","isPartial":true,"data":{"resultType":"vector","result":[{"metric":{},"value":[1,"5"]}]}}"#,
            Err("unavailable: the answer is partial"),
        );
        check(
            200,
            r#"{"status":"success","isPartial":false,"data":{"resultType":"vector","result":[{"metric":{},"value":[1,"5"]}]}}"#,
            Ok(Some(5.0)),
        );
    }

    #[test]
    fn long_error_bodies_are_cut() {
        let body = "é".repeat(2000);
        let err = parse_response("p", 500, body.as_bytes()).unwrap_err();
        assert!(err.to_string().len() < 700);
    }
}
