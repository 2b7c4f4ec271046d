//! TraceQL metrics queries for Grafana Tempo, built from a trace selector and a measure.
//!
//! Values from trigger metadata only ever reach a query as Go string literals (see
//! [`go_string`]), and attribute names only as checked identifier paths (see
//! [`attribute`]), so no metadata can change the shape of the query.

use crate::signal::quote::go_string;
use crate::signal::{Quantile, TraceMeasure, TraceSelector};

/// How the series of a TraceQL metrics answer become one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TempoReduce {
    /// The answer has at most one series; its value is the reading.
    Single,
    /// The answer is `rate() by (span:status)`: error series / all series.
    ErrorRatio,
}

/// Turns a trigger `labels` key into a TraceQL attribute.
///
/// `span.NAME` and `resource.NAME` keep their scope, a bare `NAME` means `span.NAME`.
/// `NAME` is a dotted path of non-empty segments made of ASCII letters, digits, `_`,
/// `-` and `/`; anything else is refused, so a key cannot inject TraceQL.
pub fn attribute(name: &str) -> Result<String, String> {
    let (scope, path) = if let Some(rest) = name.strip_prefix("span.") {
        ("span", rest)
    } else if let Some(rest) = name.strip_prefix("resource.") {
        ("resource", rest)
    } else {
        ("span", name)
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/');
    let valid = !path.is_empty()
        && path
            .split('.')
            .all(|segment| !segment.is_empty() && segment.chars().all(plain));
    if valid {
        Ok(format!("{scope}.{path}"))
    } else {
        Err(format!(
            "invalid attribute name {name:?}: use span.NAME, resource.NAME or NAME, \
             where NAME is dot-separated letters, digits, '_', '-' and '/'"
        ))
    }
}

/// Builds the TraceQL metrics query for `measure` over the spans `selector` picks, and
/// says how its series reduce to one number.
///
/// Latency quantiles come back in seconds, rates in spans per second; the error ratio is
/// asked as `rate() by (span:status)` and divided by the caller ([`TempoReduce::ErrorRatio`]),
/// because no released Tempo divides two queries. Fails, naming every bad key, when a
/// `labels` key is not a valid attribute name (see [`attribute`]).
pub fn build(
    selector: &TraceSelector,
    measure: TraceMeasure,
) -> Result<(String, TempoReduce), String> {
    let mut conditions = vec![
        format!("resource.service.name = {}", go_string(&selector.service)),
        format!("span:kind = {}", selector.span_kind.as_str()),
    ];
    if let Some(version) = &selector.version {
        conditions.push(format!("resource.service.version = {}", go_string(version)));
    }
    let mut problems = Vec::new();
    for (name, value) in &selector.labels {
        match attribute(name) {
            Ok(attr) => conditions.push(format!("{attr} = {}", go_string(value))),
            Err(e) => problems.push(e),
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let filter = format!("{{ {} }}", conditions.join(" && "));
    Ok(match measure {
        TraceMeasure::Latency(q) => (
            format!(
                "{filter} | quantile_over_time(span:duration, {})",
                format_quantile(q)
            ),
            TempoReduce::Single,
        ),
        TraceMeasure::Rate => (format!("{filter} | rate()"), TempoReduce::Single),
        TraceMeasure::ErrorRatio => (
            format!("{filter} | rate() by (span:status)"),
            TempoReduce::ErrorRatio,
        ),
        TraceMeasure::Concurrency | TraceMeasure::Capacity(_) => {
            return Err(
                "signals concurrency and sloCapacity are not read from tempo; use source otlp \
                 (or prometheus for concurrency)"
                    .to_string(),
            )
        }
    })
}

/// Writes a quantile the way the Tempo docs do: `.95`, `.99`, `.999`.
fn format_quantile(q: Quantile) -> String {
    // Quantiles lie strictly between 0 and 1, and `Display` for f64 never uses an
    // exponent, so the text is always `0.` followed by digits.
    let text = q.get().to_string();
    match text.strip_prefix('0') {
        Some(rest) => rest.to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::quote::tests::lex;
    use crate::signal::SpanKind;

    #[test]
    fn attributes() {
        let check = |input: &str, expect: Option<&str>| {
            assert_eq!(attribute(input).ok().as_deref(), expect, "{input:?}");
        };
        check("http.route", Some("span.http.route"));
        check("span.http.route", Some("span.http.route"));
        check(
            "resource.k8s.namespace.name",
            Some("resource.k8s.namespace.name"),
        );
        check(
            "deployment.environment",
            Some("span.deployment.environment"),
        );
        check("team_name", Some("span.team_name"));
        check(
            "app.kubernetes.io/name",
            Some("span.app.kubernetes.io/name"),
        );
        check("x-request-kind", Some("span.x-request-kind"));
        check("Region2", Some("span.Region2"));
        check("", None);
        check("span.", None);
        check("resource.", None);
        check(".x", None);
        check("x.", None);
        check("a..b", None);
        check("a b", None);
        check("a=\"b\"", None);
        check("a}|rate()", None);
        check("a&&b", None);
        check("span:status", None);
        check("ünicode", None);
        check("a\nb", None);
    }

    #[test]
    fn bad_attribute_messages_name_the_key() {
        let err = attribute("bad key").unwrap_err();
        assert!(err.contains("\"bad key\""), "{err}");
    }

    fn selector(version: Option<&str>, labels: &[(&str, &str)]) -> TraceSelector {
        TraceSelector {
            service: "order-service".into(),
            span_kind: SpanKind::Server,
            version: version.map(str::to_string),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn queries() {
        let check = |sel: TraceSelector, measure: TraceMeasure, expect: &str, reduce| {
            assert_eq!(build(&sel, measure), Ok((expect.to_string(), reduce)));
        };
        use TempoReduce::{ErrorRatio, Single};
        let p = |s: &str| TraceMeasure::Latency(Quantile::parse(s).unwrap());
        check(
            selector(None, &[]),
            p("p95"),
            r#"{ resource.service.name = "order-service" && span:kind = server } | quantile_over_time(span:duration, .95)"#,
            Single,
        );
        check(
            selector(None, &[]),
            p("p99"),
            r#"{ resource.service.name = "order-service" && span:kind = server } | quantile_over_time(span:duration, .99)"#,
            Single,
        );
        check(
            selector(None, &[]),
            p("p99.9"),
            r#"{ resource.service.name = "order-service" && span:kind = server } | quantile_over_time(span:duration, .999)"#,
            Single,
        );
        check(
            selector(None, &[]),
            p("0.5"),
            r#"{ resource.service.name = "order-service" && span:kind = server } | quantile_over_time(span:duration, .5)"#,
            Single,
        );
        check(
            selector(None, &[]),
            TraceMeasure::Rate,
            r#"{ resource.service.name = "order-service" && span:kind = server } | rate()"#,
            Single,
        );
        check(
            selector(None, &[]),
            TraceMeasure::ErrorRatio,
            r#"{ resource.service.name = "order-service" && span:kind = server } | rate() by (span:status)"#,
            ErrorRatio,
        );
        check(
            selector(Some("1.4.2-canary"), &[]),
            TraceMeasure::Rate,
            r#"{ resource.service.name = "order-service" && span:kind = server && resource.service.version = "1.4.2-canary" } | rate()"#,
            Single,
        );
        check(
            selector(
                None,
                &[
                    ("http.route", "/orders/{id}"),
                    ("resource.k8s.namespace.name", "shop"),
                ],
            ),
            TraceMeasure::ErrorRatio,
            r#"{ resource.service.name = "order-service" && span:kind = server && span.http.route = "/orders/{id}" && resource.k8s.namespace.name = "shop" } | rate() by (span:status)"#,
            ErrorRatio,
        );
        let consumer = TraceSelector {
            span_kind: SpanKind::Consumer,
            ..selector(None, &[])
        };
        check(
            consumer,
            TraceMeasure::Rate,
            r#"{ resource.service.name = "order-service" && span:kind = consumer } | rate()"#,
            Single,
        );
    }

    #[test]
    fn bad_label_keys_are_all_reported() {
        let err = build(
            &selector(None, &[("ok", "1"), ("bad key", "2"), ("a}b", "3")]),
            TraceMeasure::Rate,
        )
        .unwrap_err();
        assert!(err.contains("\"bad key\""), "{err}");
        assert!(err.contains("\"a}b\""), "{err}");
        assert!(!err.contains("\"ok\""), "{err}");
    }

    #[test]
    fn hostile_values_stay_literals() {
        let hostile = [
            r#"a" } | rate() #"#,
            r#"a" || resource.service.name != "x"#,
            r"back\slash\",
            r#"\" } | rate() \"#,
            "new\nline\r\ncr",
            "}",
            "{ }",
            "tab\tnul\0bell\x07esc\x1bdel\x7f",
            "c1\u{85}\u{9f}bom\u{feff}",
            "ünïcødé 東京 🚀 \u{2028}",
            "\\x41\\u0041",
            "",
        ];
        for value in hostile {
            let sel = TraceSelector {
                service: value.to_string(),
                span_kind: SpanKind::Server,
                version: Some(value.to_string()),
                labels: vec![("http.route".into(), value.to_string())],
            };
            for measure in [
                TraceMeasure::Latency(Quantile::P95),
                TraceMeasure::Rate,
                TraceMeasure::ErrorRatio,
            ] {
                let (query, _) = build(&sel, measure).unwrap();
                let (skeleton, literals) =
                    lex(&query).unwrap_or_else(|e| panic!("{value:?}: {e}: {query}"));
                assert_eq!(literals, vec![value; 3], "{query}");
                let (clean, _) =
                    build(&selector(Some("v"), &[("http.route", "r")]), measure).unwrap();
                let (expect_skeleton, _) = lex(&clean).unwrap();
                assert_eq!(skeleton, expect_skeleton, "{query}");
            }
        }
    }
}
