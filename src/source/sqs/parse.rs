//! Pure helpers of the SQS source: queue references, regions, attribute values, error codes.
//!
//! Nothing here does I/O, so every rule is table-tested.

use std::collections::HashMap;

use aws_sdk_sqs::types::QueueAttributeName;

use crate::source::QueueDepth;

/// How a trigger names its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRef<'a> {
    /// A full queue URL, used as is.
    Url(&'a str),
    /// A bare queue name, resolved with `GetQueueUrl`.
    Name(&'a str),
}

impl<'a> QueueRef<'a> {
    /// Reads a trigger's queue: anything with an `http://` or `https://` scheme is a URL,
    /// anything else a name. Returns `None` for an empty or blank queue.
    pub fn parse(queue: &'a str) -> Option<Self> {
        let queue = queue.trim();
        if queue.is_empty() {
            return None;
        }
        let lower = queue.get(..8).unwrap_or(queue).to_ascii_lowercase();
        if lower.starts_with("https://") || lower.starts_with("http://") {
            Some(QueueRef::Url(queue))
        } else {
            Some(QueueRef::Name(queue))
        }
    }
}

/// The region in an AWS queue URL, as KEDA reads it: `https://sqs.<region>.amazonaws.com/…`,
/// the legacy `https://<region>.queue.amazonaws.com/…`, and VPC endpoint hosts
/// `…sqs.<region>.vpce.amazonaws.com`. Other hosts (emulators, custom endpoints) give `None`.
pub fn region_from_queue_url(url: &str) -> Option<&str> {
    let rest = url
        .get(..8)
        .filter(|s| s.eq_ignore_ascii_case("https://"))
        .map(|_| &url[8..])
        .or_else(|| {
            url.get(..7)
                .filter(|s| s.eq_ignore_ascii_case("http://"))
                .map(|_| &url[7..])
        })?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    let host = host.split(':').next()?;
    let host = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let labels: Vec<&str> = host.split('.').collect();
    let region = match labels.as_slice() {
        [.., region, "queue"] => Some(*region),
        [.., "sqs", region] | [.., "sqs", region, "vpce"] => Some(*region),
        _ => None,
    }?;
    crate::trigger::is_aws_region(region).then_some(region)
}

/// The region a query is read in: the trigger's, else the one in its queue URL, else the
/// scaler's (`--aws-region`), else the AWS default chain's.
pub fn resolve_region(
    query_region: Option<&str>,
    queue: QueueRef<'_>,
    config_region: Option<&str>,
    default_region: Option<&str>,
) -> Option<String> {
    let from_url = match queue {
        QueueRef::Url(url) => region_from_queue_url(url),
        QueueRef::Name(_) => None,
    };
    query_region
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .or(from_url)
        .or(config_region)
        .or(default_region)
        .map(str::to_string)
}

/// The attributes a call asks for: the visible count, and the in-flight and delayed
/// ones when asked (KEDA's `scaleOnInFlight`, `scaleOnDelayed`).
pub fn depth_attributes(in_flight: bool, delayed: bool) -> Vec<QueueAttributeName> {
    let mut names = vec![QueueAttributeName::ApproximateNumberOfMessages];
    if in_flight {
        names.push(QueueAttributeName::ApproximateNumberOfMessagesNotVisible);
    }
    if delayed {
        names.push(QueueAttributeName::ApproximateNumberOfMessagesDelayed);
    }
    names
}

/// Reads a `GetQueueAttributes` answer strictly: each count asked for (see
/// [`depth_attributes`]) must be present and a plain non-negative decimal integer; the
/// others are left out, whatever the answer holds. The error names the attribute and value.
pub fn depth_from_attributes(
    attrs: Option<&HashMap<QueueAttributeName, String>>,
    in_flight: bool,
    delayed: bool,
) -> Result<QueueDepth, String> {
    let get = |name: QueueAttributeName| -> Result<u64, String> {
        let value = attrs
            .and_then(|a| a.get(&name))
            .ok_or_else(|| format!("answer lacks {}", name.as_str()))?;
        parse_count(value).ok_or_else(|| format!("{} is {value:?}, not a count", name.as_str()))
    };
    let asked = |on: bool, name| on.then(|| get(name)).transpose();
    Ok(QueueDepth {
        visible: get(QueueAttributeName::ApproximateNumberOfMessages)?,
        in_flight: asked(
            in_flight,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        )?,
        delayed: asked(
            delayed,
            QueueAttributeName::ApproximateNumberOfMessagesDelayed,
        )?,
    })
}

/// Digits only: no sign, no spaces, no fraction, no overflow.
fn parse_count(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// What an SQS error answer means for the scaler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The queue does not exist (in this account and region).
    NotFound,
    /// The credentials are not allowed to read the queue, or are not valid.
    Denied,
    /// SQS asked us to slow down.
    Throttled,
    /// The request itself is wrong (a malformed URL or name); retrying will not help.
    BadQuery,
    /// Anything else: the service failed or answered something unknown.
    Unavailable,
}

/// Classifies an AWS error answer by its code (`__type`, or the query-compatible
/// `x-amzn-query-error` code) and HTTP status.
pub fn classify_error(code: Option<&str>, status: Option<u16>) -> ErrorClass {
    // JSON-protocol codes may carry a namespace (`com.amazonaws.sqs#QueueDoesNotExist`).
    let code = code.map(|c| c.rsplit('#').next().unwrap_or(c));
    match code {
        Some("QueueDoesNotExist" | "AWS.SimpleQueueService.NonExistentQueue") => {
            return ErrorClass::NotFound
        }
        Some(
            "AccessDenied"
            | "AccessDeniedException"
            | "InvalidSecurity"
            | "InvalidClientTokenId"
            | "UnrecognizedClientException"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "MissingAuthenticationToken"
            | "IncompleteSignature"
            | "KMS.AccessDeniedException",
        ) => return ErrorClass::Denied,
        Some(
            "RequestThrottled"
            | "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "RequestThrottledException",
        ) => return ErrorClass::Throttled,
        Some(
            "InvalidAddress"
            | "InvalidParameterValue"
            | "InvalidParameterValueException"
            | "InvalidAttributeName"
            | "InvalidAttributeValue"
            | "UnsupportedOperation"
            | "ValidationError"
            | "ValidationException"
            | "MissingParameter",
        ) => return ErrorClass::BadQuery,
        _ => {}
    }
    match status {
        Some(401 | 403) => ErrorClass::Denied,
        Some(429) => ErrorClass::Throttled,
        Some(404) => ErrorClass::NotFound,
        _ => ErrorClass::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_refs() {
        fn check(input: &str, expect: Option<QueueRef<'_>>) {
            assert_eq!(QueueRef::parse(input), expect, "{input:?}");
        }
        check(
            "https://sqs.eu-west-1.amazonaws.com/123456789012/orders",
            Some(QueueRef::Url(
                "https://sqs.eu-west-1.amazonaws.com/123456789012/orders",
            )),
        );
        check(
            "HTTP://127.0.0.1:4566/000000000000/q",
            Some(QueueRef::Url("HTTP://127.0.0.1:4566/000000000000/q")),
        );
        check("orders", Some(QueueRef::Name("orders")));
        check(" orders.fifo ", Some(QueueRef::Name("orders.fifo")));
        check("http", Some(QueueRef::Name("http")));
        check("", None);
        check("   ", None);
    }

    #[test]
    fn regions_from_urls() {
        fn check(input: &str, expect: Option<&str>) {
            assert_eq!(region_from_queue_url(input), expect, "{input:?}");
        }
        check(
            "https://sqs.eu-west-1.amazonaws.com/123456789012/orders",
            Some("eu-west-1"),
        );
        check(
            "https://sqs.us-gov-west-1.amazonaws.com/123456789012/q",
            Some("us-gov-west-1"),
        );
        check(
            "https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q",
            Some("cn-north-1"),
        );
        check(
            "https://ap-southeast-2.queue.amazonaws.com/123456789012/q",
            Some("ap-southeast-2"),
        );
        check(
            "https://vpce-0abc-def.sqs.us-east-1.vpce.amazonaws.com/123456789012/q",
            Some("us-east-1"),
        );
        check(
            "HTTPS://sqs.us-east-2.amazonaws.com:443/123456789012/q",
            Some("us-east-2"),
        );
        check("https://queue.amazonaws.com/123456789012/q", None);
        check("https://sqs.amazonaws.com/123456789012/q", None);
        check("https://sqs.not_a_region.amazonaws.com/1/q", None);
        check("https://sqs.us-east-1.example.com/1/q", None);
        check("https://sqs.us-east-1.amazonaws.com.evil.example/1/q", None);
        check("http://127.0.0.1:4566/000000000000/q", None);
        check(
            "http://sqs.us-east-1.localhost.localstack.cloud:4566/0/q",
            None,
        );
        check("orders", None);
        check("", None);
    }

    #[test]
    fn region_precedence() {
        let url = QueueRef::Url("https://sqs.eu-west-1.amazonaws.com/123456789012/orders");
        let name = QueueRef::Name("orders");
        #[allow(clippy::type_complexity)]
        fn check(
            input: (Option<&str>, QueueRef<'_>, Option<&str>, Option<&str>),
            expect: Option<&str>,
        ) {
            let (query, queue, config, default) = input;
            assert_eq!(
                resolve_region(query, queue, config, default).as_deref(),
                expect,
                "{input:?}"
            );
        }
        check(
            (Some("us-west-2"), url, Some("ap-south-1"), None),
            Some("us-west-2"),
        );
        check((None, url, Some("ap-south-1"), None), Some("eu-west-1"));
        check((Some(" "), url, None, None), Some("eu-west-1"));
        check(
            (None, name, Some("ap-south-1"), Some("us-east-1")),
            Some("ap-south-1"),
        );
        check((None, name, None, Some("us-east-1")), Some("us-east-1"));
        check((None, name, None, None), None);
    }

    #[test]
    fn attribute_values() {
        fn check(input: &[(QueueAttributeName, &str)], expect: Result<(u64, u64, u64), &str>) {
            let map: HashMap<QueueAttributeName, String> = input
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect();
            let got = depth_from_attributes(Some(&map), true, true)
                .map(|d| (d.visible, d.in_flight.unwrap(), d.delayed.unwrap()));
            assert_eq!(got, expect.map_err(str::to_string), "{input:?}");
        }
        use QueueAttributeName::{
            ApproximateNumberOfMessages as V, ApproximateNumberOfMessagesDelayed as D,
            ApproximateNumberOfMessagesNotVisible as F,
        };
        check(&[(V, "7"), (F, "3"), (D, "2")], Ok((7, 3, 2)));
        check(&[(V, "0"), (F, "0"), (D, "0")], Ok((0, 0, 0)));
        check(
            &[(V, "18446744073709551615"), (F, "0"), (D, "0")],
            Ok((u64::MAX, 0, 0)),
        );
        check(
            &[(V, "7"), (F, "3")],
            Err("answer lacks ApproximateNumberOfMessagesDelayed"),
        );
        check(
            &[(V, "-1"), (F, "3"), (D, "2")],
            Err("ApproximateNumberOfMessages is \"-1\", not a count"),
        );
        check(
            &[(V, "+1"), (F, "3"), (D, "2")],
            Err("ApproximateNumberOfMessages is \"+1\", not a count"),
        );
        check(
            &[(V, "1"), (F, " 3"), (D, "2")],
            Err("ApproximateNumberOfMessagesNotVisible is \" 3\", not a count"),
        );
        check(
            &[(V, "1"), (F, "3"), (D, "2.0")],
            Err("ApproximateNumberOfMessagesDelayed is \"2.0\", not a count"),
        );
        check(
            &[(V, ""), (F, "3"), (D, "2")],
            Err("ApproximateNumberOfMessages is \"\", not a count"),
        );
        check(
            &[(V, "18446744073709551616"), (F, "3"), (D, "2")],
            Err("ApproximateNumberOfMessages is \"18446744073709551616\", not a count"),
        );
        assert_eq!(
            depth_from_attributes(None, false, false),
            Err("answer lacks ApproximateNumberOfMessages".to_string())
        );
    }

    /// Only the counts asked for are read and required, as KEDA asks only for those its
    /// flags sum; one asked for and missing stays an error, never a 0.
    #[test]
    fn only_the_counts_asked_for_are_read() {
        use QueueAttributeName::{
            ApproximateNumberOfMessages as V, ApproximateNumberOfMessagesDelayed as D,
            ApproximateNumberOfMessagesNotVisible as F,
        };
        assert_eq!(depth_attributes(false, false), vec![V]);
        assert_eq!(depth_attributes(true, false), vec![V, F]);
        assert_eq!(depth_attributes(false, true), vec![V, D]);
        assert_eq!(depth_attributes(true, true), vec![V, F, D]);
        let answer = |pairs: &[(QueueAttributeName, &str)]| -> HashMap<_, _> {
            pairs
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect()
        };
        let read = |pairs, in_flight, delayed| {
            depth_from_attributes(Some(&answer(pairs)), in_flight, delayed)
        };
        let depth = |visible, in_flight, delayed| QueueDepth {
            visible,
            in_flight,
            delayed,
        };
        assert_eq!(
            read(&[(V, "4"), (F, "3")], true, false),
            Ok(depth(4, Some(3), None))
        );
        assert_eq!(read(&[(V, "4")], false, false), Ok(depth(4, None, None)));
        assert_eq!(
            read(&[(V, "4"), (D, "2")], false, true),
            Ok(depth(4, None, Some(2)))
        );
        // A count not asked for is left out, even when the answer holds it (or garbage).
        assert_eq!(
            read(&[(V, "4"), (F, "3"), (D, "oops")], true, false),
            Ok(depth(4, Some(3), None))
        );
        assert_eq!(
            read(&[(V, "4"), (F, "3")], true, true),
            Err("answer lacks ApproximateNumberOfMessagesDelayed".to_string())
        );
        assert_eq!(
            read(&[(V, "4"), (D, "2")], true, true),
            Err("answer lacks ApproximateNumberOfMessagesNotVisible".to_string())
        );
        assert_eq!(
            read(&[(F, "3")], true, false),
            Err("answer lacks ApproximateNumberOfMessages".to_string())
        );
    }

    #[test]
    fn error_classes() {
        fn check(input: (Option<&str>, Option<u16>), expect: ErrorClass) {
            assert_eq!(classify_error(input.0, input.1), expect, "{input:?}");
        }
        use ErrorClass::*;
        check((Some("QueueDoesNotExist"), Some(400)), NotFound);
        check(
            (Some("com.amazonaws.sqs#QueueDoesNotExist"), Some(400)),
            NotFound,
        );
        check(
            (Some("AWS.SimpleQueueService.NonExistentQueue"), Some(400)),
            NotFound,
        );
        check((Some("AccessDenied"), Some(403)), Denied);
        check((Some("InvalidClientTokenId"), Some(403)), Denied);
        check((Some("InvalidSecurity"), Some(400)), Denied);
        check((Some("RequestThrottled"), Some(400)), Throttled);
        check((Some("ThrottlingException"), Some(400)), Throttled);
        check((None, Some(429)), Throttled);
        check((Some("InvalidAddress"), Some(400)), BadQuery);
        check((Some("InvalidParameterValue"), Some(400)), BadQuery);
        check((None, Some(403)), Denied);
        check((Some("InternalError"), Some(500)), Unavailable);
        check((Some("ServiceUnavailable"), Some(503)), Unavailable);
        check((None, None), Unavailable);
    }
}
