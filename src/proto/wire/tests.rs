//! The wire types' tests: decoded as prost decodes, hand-made bytes included, and the
//! answer written byte for byte as prost writes it.

use prost::bytes::Buf as _;
use prost::Message as _;

use super::*;

fn generated(name: &str, namespace: &str, md: &[(&str, &str)]) -> super::super::ScaledObjectRef {
    super::super::ScaledObjectRef {
        name: name.into(),
        namespace: namespace.into(),
        scaler_metadata: md
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// What prost's generated type encodes, this type decodes to the same request, and back.
#[test]
fn decodes_what_prost_encodes() {
    let md = [
        ("signal", "latency"),
        ("service", "orders"),
        ("threshold", "300ms"),
        ("empty", ""),
        ("", "no key"),
        ("ключ", "значение"),
    ];
    let theirs = super::super::GetMetricsRequest {
        scaled_object_ref: Some(generated("so", "shop", &md)),
        metric_name: "s0-latency".into(),
    };
    let bytes = theirs.encode_to_vec();
    let ours = GetMetricsRequest::decode(&bytes[..]).unwrap();
    let r = ours.scaled_object_ref().unwrap();
    assert_eq!((r.name(), r.namespace()), ("so", "shop"));
    assert_eq!(ours.metric_name(), "s0-latency");
    assert_eq!(
        r.scaler_metadata().to_map(),
        theirs.scaled_object_ref.as_ref().unwrap().scaler_metadata
    );
    assert_eq!(ours.encoded_len(), bytes.len());
    let back = super::super::GetMetricsRequest::decode(&ours.encode_to_vec()[..]).unwrap();
    assert_eq!(back, theirs);
    assert_eq!(GetMetricsRequest::from(theirs), ours);
}

/// The server's answer is byte for byte what prost's generated type writes for the same
/// value, so every client reads the same number.
#[test]
#[allow(deprecated)]
fn writes_the_answer_as_prost_does() {
    for value in [
        0.0,
        0.25,
        0.5,
        1.5,
        2.5,
        3.0,
        1e-9,
        1e12,
        123_456.789,
        f64::MAX,
    ] {
        for name in ["s0-latency-p95-orders", ""] {
            let theirs = super::super::GetMetricsResponse {
                metric_values: vec![super::super::MetricValue {
                    metric_name: name.into(),
                    metric_value: value.round() as i64,
                    metric_value_float: value,
                }],
            };
            let ours = GetMetricsResponse::one(name.into(), value);
            let bytes = ours.encode_to_vec();
            assert_eq!(bytes, theirs.encode_to_vec(), "{name:?} {value}");
            assert_eq!(ours.encoded_len(), bytes.len());
            let read = super::super::GetMetricsResponse::decode(&bytes[..]).unwrap();
            assert_eq!(read.metric_values[0].metric_value_float, value);
        }
    }
    assert!(GetMetricsResponse::default().encode_to_vec().is_empty());
    assert!(
        GetMetricsResponse::decode(&[10, 0][..]).is_err(),
        "encode-only"
    );
}

/// The metric name shares the ref's buffer whichever field comes first, and a request
/// without a ref still has its metric name (and no ref), as prost reads it.
#[test]
fn the_metric_name_lives_beside_the_ref() {
    let r = generated("so", "shop", &[("signal", "rps"), ("service", "a")]);
    let mut name_first = Vec::new();
    encode_text(2, "s0-rps-a", &mut name_first);
    message::encode(1, &ScaledObjectRef::from(r.clone()), &mut name_first);
    encode_text(2, "s1-rps-a", &mut name_first); // the last one counts
    let ours = GetMetricsRequest::decode(&name_first[..]).unwrap();
    let theirs = super::super::GetMetricsRequest::decode(&name_first[..]).unwrap();
    assert_eq!(ours.metric_name(), "s1-rps-a");
    assert_eq!(ours.metric_name(), theirs.metric_name);
    let (o, t) = (
        ours.scaled_object_ref().unwrap(),
        theirs.scaled_object_ref.unwrap(),
    );
    assert_eq!((o.name(), o.namespace()), ("so", "shop"));
    assert_eq!(o.scaler_metadata().to_map(), t.scaler_metadata);
    assert_eq!(t.scaler_metadata, r.scaler_metadata);

    let mut no_ref = Vec::new();
    encode_text(2, "s0-rps-a", &mut no_ref);
    let ours = GetMetricsRequest::decode(&no_ref[..]).unwrap();
    assert_eq!(
        (ours.scaled_object_ref(), ours.metric_name()),
        (None, "s0-rps-a")
    );
    // An empty ref field is a ref with nothing in it, as for prost.
    let ours = GetMetricsRequest::decode(&[10, 0][..]).unwrap();
    assert_eq!(ours.scaled_object_ref(), Some(&ScaledObjectRef::default()));
    assert_eq!(ours.metric_name(), "");
}

#[test]
fn reads_the_wire_as_prost_does() {
    fn field(tag: u32, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_key(tag, WireType::LengthDelimited, &mut out);
        encode_varint(bytes.len() as u64, &mut out);
        out.extend_from_slice(bytes);
        out
    }
    let entry = |parts: &[(u32, &[u8])]| {
        let inner: Vec<u8> = parts.iter().flat_map(|(t, b)| field(*t, b)).collect();
        field(3, &inner)
    };
    let mut msg = Vec::new();
    msg.extend(field(1, b"first"));
    msg.extend(field(1, b"so")); // the last value of a repeated scalar counts
    msg.extend(entry(&[(1, b"a"), (2, b"1")]));
    msg.extend(entry(&[(1, b"a"), (2, b"2")])); // a key sent twice: the last value
    msg.extend(entry(&[(2, b"v"), (1, b"k")])); // fields in either order
    msg.extend(entry(&[(1, b"x"), (1, b"y"), (2, b"v1"), (2, b"v2")]));
    msg.extend(entry(&[(1, b"novalue")]));
    msg.extend(entry(&[(1, b"u"), (7, b"unknown"), (2, b"w")]));
    msg.extend(field(9, b"unknown field"));
    let ours = ScaledObjectRef::decode(&msg[..]).unwrap();
    let theirs = super::super::ScaledObjectRef::decode(&msg[..]).unwrap();
    assert_eq!(ours.name(), "so");
    assert_eq!(ours.scaler_metadata().to_map(), theirs.scaler_metadata);
    assert_eq!(ours.scaler_metadata().to_map()["a"], "2");
    assert_eq!(ours.scaler_metadata().to_map()["y"], "v2");
    assert_eq!(ours.scaler_metadata().to_map()["novalue"], "");
    // The same bytes in pieces (a buffer that is not one slice): the same request.
    for cut in [1, msg.len() / 3, msg.len() / 2, msg.len() - 1] {
        let (a, b) = msg.split_at(cut);
        assert_eq!(
            ScaledObjectRef::decode(a.chain(b)).unwrap(),
            ours,
            "cut at {cut}"
        );
    }

    // Refused as prost refuses them: bad UTF-8 in a key or value, a truncated entry,
    // a wrong wire type.
    for bad in [
        entry(&[(1, b"\xff"), (2, b"v")]),
        entry(&[(1, b"k"), (2, b"\xc3")]),
        field(3, &field(1, b"abc")[..3]),
        vec![3 << 3, 1],
        {
            let mut m = field(3, &field(1, b"abc"));
            m.truncate(m.len() - 1);
            m
        },
    ] {
        assert!(
            super::super::ScaledObjectRef::decode(&bad[..]).is_err(),
            "prost takes {bad:?}"
        );
        assert!(ScaledObjectRef::decode(&bad[..]).is_err(), "{bad:?}");
    }
}
