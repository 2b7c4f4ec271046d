//! Tempo's answers as Tempo's code writes them: instant and range responses, the
//! reductions, NaN, label values, and errors that name what was wrong.

use super::*;

fn s(labels: &[(&str, &str)], value: Option<f64>) -> Series {
    Series {
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), LabelValue::String(v.to_string())))
            .collect(),
        value,
    }
}

fn complete(series: Vec<Series>) -> Answer {
    Answer {
        series,
        partial: None,
    }
}

#[test]
fn instant_answers() {
    let check = |body: &str, expect: Result<Answer, ()>| {
        assert_eq!(
            parse_instant(body.as_bytes()).map_err(|_| ()),
            expect,
            "{body}"
        );
    };
    check(
        r#"{"series":[{"labels":[],"value":0.23}]}"#,
        Ok(complete(vec![s(&[], Some(0.23))])),
    );
    // A value of 0 is left out, and so are empty labels.
    check(r#"{"series":[{}]}"#, Ok(complete(vec![s(&[], Some(0.0))])));
    check(
        r#"{"series":[{"labels":[],"value":null}]}"#,
        Ok(complete(vec![s(&[], Some(0.0))])),
    );
    // No series at all: the key is left out, or null, or the list is empty.
    check("{}", Ok(complete(vec![])));
    check(r#"{"series":null}"#, Ok(complete(vec![])));
    check(
        r#"{"series":[],"metrics":{"inspectedBytes":"0"}}"#,
        Ok(complete(vec![])),
    );
    check(
        r#"{"series":[{"value":"Infinity"}]}"#,
        Ok(complete(vec![s(&[], Some(f64::INFINITY))])),
    );
    check(
        r#"{"series":[{"value":"-Infinity"}]}"#,
        Ok(complete(vec![s(&[], Some(f64::NEG_INFINITY))])),
    );
    check(
        r#"{"series":[{"value":"1.5e-3"}]}"#,
        Ok(complete(vec![s(&[], Some(0.0015))])),
    );
    check(
        r#"{"series":[{"value":7}]}"#,
        Ok(complete(vec![s(&[], Some(7.0))])),
    );
    check(
        r#"{"series":[{"labels":[{"key":"span:status","value":{"stringValue":"error"}}],"value":2}],"status":"PARTIAL","message":"2 blocks unreadable"}"#,
        Ok(Answer {
            series: vec![s(&[("span:status", "error")], Some(2.0))],
            partial: Some("2 blocks unreadable".into()),
        }),
    );
    check(
        r#"{"series":[],"status":"PARTIAL"}"#,
        Ok(Answer {
            series: vec![],
            partial: Some(String::new()),
        }),
    );
    check(r#"{"series":[],"status":"COMPLETE"}"#, Ok(complete(vec![])));
    check(
        r#"{"series":[],"status":1}"#,
        Ok(Answer {
            series: vec![],
            partial: Some(String::new()),
        }),
    );
    check(r#"{"series":[],"status":"WEIRD"}"#, Err(()));
    check(r#"{"series":[{"value":"inf"}]}"#, Err(()));
    check(r#"{"series":[{"value":"abc"}]}"#, Err(()));
    check(r#"{"series":[{"value":true}]}"#, Err(()));
    check(r#"{"series":{}}"#, Err(()));
    check("not json", Err(()));
    check("", Err(()));
    check("[]", Err(()));
}

#[test]
fn nan_values_parse_as_nan() {
    let a = parse_instant(br#"{"series":[{"value":"NaN"}]}"#).unwrap();
    assert!(a.series[0].value.is_some_and(f64::is_nan));
}

#[test]
fn label_values() {
    let body = br#"{"series":[{"labels":[
        {"key":"s","value":{"stringValue":"x"}},
        {"key":"i","value":{"intValue":"-42"}},
        {"key":"i2","value":{"intValue":7}},
        {"key":"d","value":{"doubleValue":1.5}},
        {"key":"d2","value":{"doubleValue":"NaN"}},
        {"key":"b","value":{"boolValue":true}},
        {"key":"e","value":{}},
        {"key":"n"}
    ],"value":1}]}"#;
    let a = parse_instant(body).unwrap();
    let labels = &a.series[0].labels;
    let get = |k: &str| labels.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    assert_eq!(get("s"), Some(&LabelValue::String("x".into())));
    assert_eq!(get("i"), Some(&LabelValue::Int(-42)));
    assert_eq!(get("i2"), Some(&LabelValue::Int(7)));
    assert_eq!(get("d"), Some(&LabelValue::Double(1.5)));
    assert!(matches!(get("d2"), Some(LabelValue::Double(d)) if d.is_nan()));
    assert_eq!(get("b"), Some(&LabelValue::Bool(true)));
    assert_eq!(get("e"), Some(&LabelValue::Other));
    assert_eq!(get("n"), Some(&LabelValue::Other));
    assert!(
        parse_instant(br#"{"series":[{"labels":[{"key":"i","value":{"intValue":"x"}}]}]}"#)
            .is_err()
    );
}

#[test]
fn range_answers() {
    let check = |body: &str, expect: Result<Vec<Series>, ()>| {
        let got = parse_range(body.as_bytes())
            .map(|a| a.series)
            .map_err(|_| ());
        assert_eq!(got, expect, "{body}");
    };
    check(
        r#"{"series":[{"labels":[],"samples":[
            {"timestampMs":"1724240000000","value":0.2},
            {"timestampMs":"1724240060000","value":0.31}]}]}"#,
        Ok(vec![s(&[], Some(0.31))]),
    );
    // Samples are taken by timestamp, not by position; a 0 sample has no value.
    check(
        r#"{"series":[{"samples":[
            {"timestampMs":"1724240060000"},
            {"timestampMs":"1724240000000","value":0.2}]}]}"#,
        Ok(vec![s(&[], Some(0.0))]),
    );
    // Series without a sample at the latest timestamp have no value.
    check(
        r#"{"series":[
            {"labels":[{"key":"span:status","value":{"stringValue":"error"}}],
             "samples":[{"timestampMs":"1724240000000","value":5}]},
            {"labels":[{"key":"span:status","value":{"stringValue":"ok"}}],
             "samples":[{"timestampMs":"1724240000000","value":5},
                        {"timestampMs":"1724240060000","value":10}]}]}"#,
        Ok(vec![
            s(&[("span:status", "error")], None),
            s(&[("span:status", "ok")], Some(10.0)),
        ]),
    );
    check(r#"{"series":[{"labels":[]}]}"#, Ok(vec![s(&[], None)]));
    check("{}", Ok(vec![]));
    check(
        r#"{"series":[{"samples":[{"timestampMs":1724240000000,"value":"2"}]}]}"#,
        Ok(vec![s(&[], Some(2.0))]),
    );
    check(
        r#"{"series":[{"samples":[{"timestampMs":"yesterday","value":1}]}]}"#,
        Err(()),
    );
}

#[test]
fn range_partial() {
    let a = parse_range(br#"{"series":[],"status":"PARTIAL","message":"m"}"#).unwrap();
    assert_eq!(a.partial.as_deref(), Some("m"));
}

#[test]
fn single_reductions() {
    let check = |series: Vec<Series>, expect: Result<Option<f64>, ()>| {
        let got = reduce(&complete(series.clone()), TempoReduce::Single).map_err(|_| ());
        assert_eq!(got, expect, "{series:?}");
    };
    check(vec![], Ok(None));
    check(vec![s(&[], Some(0.25))], Ok(Some(0.25)));
    check(vec![s(&[], Some(0.0))], Ok(Some(0.0)));
    check(vec![s(&[], None)], Ok(None));
    // A quantile of 0 is Tempo's filler for a step without spans; a rate of 0 is real.
    check(vec![s(&[(QUANTILE_LABEL, "0.95")], Some(0.0))], Ok(None));
    check(
        vec![s(&[(QUANTILE_LABEL, "0.95")], Some(0.25))],
        Ok(Some(0.25)),
    );
    check(vec![s(&[("__name__", "rate")], Some(0.0))], Ok(Some(0.0)));
    check(vec![s(&[], Some(f64::INFINITY))], Ok(Some(f64::INFINITY)));
    check(
        vec![s(&[], Some(f64::NEG_INFINITY))],
        Ok(Some(f64::NEG_INFINITY)),
    );
    check(
        vec![s(&[("a", "1")], Some(1.0)), s(&[("a", "2")], Some(2.0))],
        Err(()),
    );
}

#[test]
fn non_finite_values_pass_up_unchanged() {
    let nan = reduce(&complete(vec![s(&[], Some(f64::NAN))]), TempoReduce::Single);
    assert!(nan.unwrap().is_some_and(f64::is_nan));
    let st = |status: &str, v: f64| s(&[(STATUS_LABEL, status)], Some(v));
    let nan = reduce(
        &complete(vec![st("error", f64::NAN), st("ok", 4.0)]),
        TempoReduce::ErrorRatio,
    );
    assert!(nan.unwrap().is_some_and(f64::is_nan));
    // An infinite or negative count makes no ratio: it reaches the engine, which refuses
    // it, rather than being divided into a plausible 0 (1 ÷ ∞) or 5 (5 ÷ (5 − 4)).
    for (error, ok, want) in [
        (1.0, f64::INFINITY, f64::INFINITY),
        (1.0, f64::NEG_INFINITY, f64::NEG_INFINITY),
        (f64::INFINITY, 3.0, f64::INFINITY),
        (5.0, -4.0, -4.0),
        (-1.0, 3.0, -1.0),
        (f64::MAX, f64::MAX, f64::INFINITY),
    ] {
        let got = reduce(
            &complete(vec![st("error", error), st("ok", ok)]),
            TempoReduce::ErrorRatio,
        );
        assert_eq!(got, Ok(Some(want)), "error {error}, ok {ok}");
    }
}

#[test]
fn several_series_error_names_the_count() {
    let series = vec![s(&[], Some(1.0)), s(&[], Some(2.0)), s(&[], Some(3.0))];
    let err = reduce(&complete(series), TempoReduce::Single).unwrap_err();
    assert!(err.contains("3 series"), "{err}");
}

#[test]
fn error_ratio_reductions() {
    let check = |series: Vec<Series>, expect: Result<Option<f64>, &str>| {
        let got = reduce(&complete(series.clone()), TempoReduce::ErrorRatio);
        match (&got, &expect) {
            (Err(msg), Err(fragment)) => assert!(msg.contains(fragment), "{msg}"),
            _ => assert_eq!(got, expect.map_err(String::from), "{series:?}"),
        }
    };
    let st = |status: &str, v: Option<f64>| s(&[(STATUS_LABEL, status)], v);
    // Tempo's own answer: key `status`, values `error` / `ok` / `unset`.
    assert_eq!(STATUS_LABEL, "status");
    check(
        vec![
            st("error", Some(3.0)),
            st("ok", Some(7.0)),
            st("unset", Some(10.0)),
        ],
        Ok(Some(0.15)),
    );
    check(
        vec![st("ok", Some(5.0)), st("unset", Some(5.0))],
        Ok(Some(0.0)),
    );
    check(vec![st("error", Some(2.0))], Ok(Some(1.0)));
    check(vec![st("error", Some(1.0)), st("ok", None)], Ok(Some(1.0)));
    check(vec![st("error", None), st("ok", Some(4.0))], Ok(Some(0.0)));
    // No traffic is no data, not a ratio of 0.
    check(vec![], Ok(None));
    check(vec![st("error", Some(0.0)), st("ok", Some(0.0))], Ok(None));
    check(vec![st("ok", None)], Ok(None));
    // The label as the query spells it is not Tempo's: refused, never read as 0 errors.
    check(
        vec![
            s(&[("span:status", "error")], Some(1.0)),
            s(&[("span:status", "ok")], Some(3.0)),
        ],
        Err("without the \"status\" label (labels [\"span:status\"])"),
    );
    check(
        vec![s(&[], Some(4.0)), st("error", Some(1.0))],
        Err("without the \"status\" label"),
    );
    // A value that is not one of Tempo's three statuses.
    check(
        vec![st("ERROR", Some(1.0)), st("ok", Some(3.0))],
        Err("status \"ERROR\", expected error, ok or unset"),
    );
    check(
        vec![
            Series {
                labels: vec![(STATUS_LABEL.into(), LabelValue::Int(2))],
                value: Some(1.0),
            },
            st("ok", Some(1.0)),
        ],
        Err("status 2, expected"),
    );
}
