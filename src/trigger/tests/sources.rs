//! The source-specific keys: SQS's names and defaults, AWS regions, endpoints and roles,
//! Tempo's windows and the Prometheus tenant.

use super::*;

#[test]
fn sqs_trigger_keeps_keda_names_and_defaults() {
    let t = check_ok(&[
        ("signal", "queueDepth"),
        (
            "queueURL",
            "https://sqs.eu-west-1.amazonaws.com/123456789012/notifications",
        ),
        ("awsRegion", "eu-west-1"),
    ]);
    assert_eq!(t.source(), SourceKind::Sqs);
    assert_eq!(t.target, 5.0);
    assert_eq!(t.activation, 0.0);
    assert_eq!(&*t.metric_name, "queuedepth-notifications");
    let Read::Sqs(q) = &t.read else {
        panic!("{t:?}")
    };
    assert!(q.scale_on_in_flight);
    assert!(!q.scale_on_delayed);
    let t = check_ok(&[
        ("signal", "queueDepth"),
        ("queueURLFromEnv", "orders.fifo"),
        ("queueLength", "10"),
        ("activationQueueLength", "2"),
        ("scaleOnInFlight", "false"),
        ("scaleOnDelayed", "True"),
    ]);
    assert_eq!((t.target, t.activation), (10.0, 2.0));
    let Read::Sqs(q) = &t.read else {
        panic!("{t:?}")
    };
    assert_eq!(q.queue, "orders.fifo");
    assert!(!q.scale_on_in_flight && q.scale_on_delayed);
}

#[test]
fn aws_regions() {
    for ok in [
        "us-east-1",
        "eu-west-1",
        "us-gov-west-1",
        "cn-north-1",
        "ap-southeast-2",
    ] {
        assert!(is_aws_region(ok), "{ok}");
    }
    for bad in [
        "mars",
        "us-east",
        "US-EAST-1",
        "us--1",
        "1-east-1",
        "us-east-x",
        "",
        "eu-west-1 ",
    ] {
        assert!(!is_aws_region(bad), "{bad}");
    }
}

#[test]
fn aws_endpoints_and_roles_need_the_operator() {
    let q = |extra: (&'static str, &'static str)| {
        md(&[("signal", "queueDepth"), ("queueURL", "orders"), extra])
    };
    // Without the operator's list of endpoints and roles, metadata names neither.
    for (key, value) in [
        ("awsEndpoint", "http://127.0.0.1:4566"),
        ("awsRoleArn", "arn:aws:iam::123456789012:role/reader"),
    ] {
        let err = parse(&q((key, value)), &opts()).unwrap_err();
        assert_eq!(err.keys(), vec![key], "{err}");
        assert!(err.to_string().contains("not allowed"), "{err}");
    }
    let mut o = opts();
    o.metadata_aws_endpoints = vec!["http://127.0.0.1:4566".into()];
    o.allow_aws_role_arn = true;
    assert!(parse(&q(("awsEndpoint", "http://127.0.0.1:4566")), &o).is_ok());
    let err = parse(&q(("awsEndpoint", "http://evil.example")), &o).unwrap_err();
    assert_eq!(err.keys(), vec!["awsEndpoint"]);
    assert!(parse(
        &q(("awsRoleArn", "arn:aws:iam::123456789012:role/reader")),
        &o
    )
    .is_ok());
    for bad in ["arn:aws:s3:::bucket", "arn:aws:iam::12:role/x", "role/x"] {
        let err = parse(&q(("awsRoleArn", bad)), &o).unwrap_err();
        assert_eq!(err.keys(), vec!["awsRoleArn"], "{bad}");
    }
}

#[test]
fn tempo_windows_are_longer_than_its_query_end_cutoff() {
    let tempo = |w: &'static str| {
        md(&[
            ("signal", "rps"),
            SVC,
            ("threshold", "1"),
            ("source", "tempo"),
            ("window", w),
        ])
    };
    assert!(parse(&tempo("1m"), &opts()).is_ok());
    for w in ["30s", "59s"] {
        let err = parse(&tempo(w), &opts()).unwrap_err();
        assert!(err.to_string().contains("query_end_cutoff"), "{err}");
    }
}

/// `tenant` reaches Prometheus reads as it reaches Tempo's (Mimir, Cortex, Thanos receive).
#[test]
fn prometheus_reads_carry_their_tenant() {
    let cases: [&[(&str, &str)]; 2] = [
        &[
            ("signal", "rps"),
            SVC,
            ("threshold", "10"),
            ("source", "prometheus"),
        ],
        &[
            ("signal", "query"),
            ("source", "prometheus"),
            ("query", "up"),
            ("threshold", "1"),
        ],
    ];
    for pairs in cases {
        let mut with = pairs.to_vec();
        with.push(("tenant", "team-a"));
        let Read::Prometheus { tenant, .. } = &check_ok(&with).read else {
            panic!("not a prometheus read: {with:?}");
        };
        assert_eq!(tenant.as_deref(), Some("team-a"), "{with:?}");
        let Read::Prometheus { tenant, .. } = &check_ok(pairs).read else {
            panic!("not a prometheus read: {pairs:?}");
        };
        assert_eq!(*tenant, None, "{pairs:?}");
    }
}

/// SQS queue URLs never hold a user or password; one that does is refused by name and the
/// message does not repeat it (errors and logs quote the queue URL).
#[test]
fn queue_urls_with_a_user_or_password_are_refused_unquoted() {
    for (url, secret) in [
        (
            "https://user:s3cret@sqs.eu-west-1.amazonaws.com/123456789012/orders",
            "s3cret",
        ),
        (
            "https://s3cret@sqs.eu-west-1.amazonaws.com/123456789012/orders",
            "s3cret",
        ),
        (
            "http://key:s3cr/et@127.0.0.1:4566/000000000000/orders",
            "s3cr/et",
        ),
        (
            "HTTPS://user:s3cret@sqs.eu-west-1.amazonaws.com/123456789012/orders",
            "s3cret",
        ),
    ] {
        for signal in ["queueDepth", "rps"] {
            let err = parse(&md(&[("signal", signal), ("queueURL", url)]), &opts()).unwrap_err();
            assert!(err.keys().contains(&"queueURL"), "{url}: {err}");
            let text = format!("{err} {err:?}");
            assert!(!text.contains(secret), "{url}: {text}");
            assert!(text.contains("password"), "{url}: {text}");
        }
    }
}

/// KEDA's `aws-sqs-queue` reads `queueLength` and `activationQueueLength` as integers
/// (`int64` fields of `awsSqsQueueMetadata`): a trigger moved over keeps integers, and a
/// fraction or exponent is refused by name rather than read as a different target.
#[test]
fn queue_lengths_are_integers_as_in_keda() {
    let queue = |extra: (&'static str, &'static str)| {
        vec![("signal", "queueDepth"), ("queueURL", "orders"), extra]
    };
    for (key, raw) in [
        ("queueLength", "2.5"),
        ("queueLength", "1e3"),
        ("queueLength", "10.0"),
        ("activationQueueLength", "0.5"),
        ("activationQueueLength", "1E2"),
    ] {
        let err = parse(&md(&queue((key, raw))), &opts()).unwrap_err();
        assert_eq!(err.keys(), vec![key], "{raw}: {err}");
        assert!(err.to_string().contains("whole number"), "{raw}: {err}");
    }
    let t = check_ok(&queue(("queueLength", " 20 ")));
    assert_eq!(t.target, 20.0);
    let t = check_ok(&queue(("activationQueueLength", "3")));
    assert_eq!(t.activation, 3.0);
    // This scaler's own keys take any number, as for every other signal.
    let t = check_ok(&queue(("threshold", "2.5")));
    assert_eq!(t.target, 2.5);
}

/// Queue URLs as KEDA reads them (Go's `url.ParseRequestURI`, then the path split into
/// exactly `/ACCOUNT/NAME`, else "cannot get queueName from queueURL").
#[test]
fn queue_urls_are_read_as_keda_reads_them() {
    let queue = |url: &'static str| vec![("signal", "queueDepth"), ("queueURL", url)];
    for url in [
        "https://sqs.eu-west-1.amazonaws.com/123456789012/orders",
        "HTTPS://sqs.eu-west-1.amazonaws.com/123456789012/orders",
        "Http://127.0.0.1:4566/000000000000/orders.fifo",
        "orders",
    ] {
        let Read::Sqs(q) = &check_ok(&queue(url)).read else {
            panic!("{url}: not an SQS read");
        };
        assert_eq!(q.queue, url);
    }
    for url in [
        "https://sqs.eu-west-1.amazonaws.com/orders",
        "https://sqs.eu-west-1.amazonaws.com//orders",
        "https://sqs.eu-west-1.amazonaws.com/123456789012/team/orders",
        "https://sqs.eu-west-1.amazonaws.com/123456789012/orders/",
        "https:///123456789012/orders",
        "ftp://sqs.eu-west-1.amazonaws.com/123456789012/orders",
    ] {
        let err = parse(&md(&queue(url)), &opts()).unwrap_err();
        assert_eq!(err.keys(), vec!["queueURL"], "{url}: {err}");
        assert!(err.to_string().contains("ACCOUNT/NAME"), "{url}: {err}");
    }
}
