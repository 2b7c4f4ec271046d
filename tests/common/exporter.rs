//! A Prometheus exporter for tests: counters and histograms that grow by fixed amounts
//! on every scrape, and gauges the test sets.
//!
//! Counters start high, so `rate()` extrapolates fully to both window edges and its
//! answer only changes when a sample enters or leaves the window: a direct query and
//! the scaler's query then agree to the bit.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::Router;

/// One exported series.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub labels: Vec<(String, String)>,
    /// Added on every scrape (counters); the value itself for gauges.
    pub step: f64,
    pub gauge: bool,
}

#[derive(Default)]
struct State {
    series: Vec<Series>,
    /// What each scrape adds to the counters, × their steps (1 unless the test sets a
    /// busier or calmer spell with `Exporter::set_load`).
    load: f64,
    /// Σ `load` over the scrapes so far.
    steps: f64,
    /// Metric families declared with a type (`counter`, `histogram`), by family name;
    /// series of other names are written one family each, `untyped` (or `gauge`).
    types: BTreeMap<String, &'static str>,
}

#[derive(Clone)]
pub struct Exporter {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

/// Counters start here.
const BASE: f64 = 1_000_000.0;

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Exporter {
    pub async fn start() -> Exporter {
        let state = Arc::new(Mutex::new(State {
            load: 1.0,
            ..State::default()
        }));
        let s = state.clone();
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let s = s.clone();
                async move { render(&mut s.lock().unwrap()) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Exporter { addr, state }
    }

    pub fn add_counter(&self, name: &str, labels: &[(&str, &str)], per_scrape: f64) {
        self.state.lock().unwrap().series.push(Series {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            step: per_scrape,
            gauge: false,
        });
    }

    /// Declares `family` as a `counter` or a `histogram` in the exposition (`# TYPE`), as
    /// the exporter being imitated does: a histogram's `_bucket`, `_sum` and `_count`
    /// series are then written as one family.
    pub fn set_type(&self, family: &str, kind: &'static str) {
        assert!(matches!(kind, "counter" | "histogram"), "{kind}");
        self.state
            .lock()
            .unwrap()
            .types
            .insert(family.to_string(), kind);
    }

    /// From the next scrape on, every counter grows by `load` × its step a scrape (a
    /// busier spell of the same traffic for `load` > 1).
    pub fn set_load(&self, load: f64) {
        self.state.lock().unwrap().load = load;
    }

    /// Sets a gauge (adding it on first use).
    pub fn set_gauge(&self, name: &str, value: f64) {
        let mut s = self.state.lock().unwrap();
        match s.series.iter_mut().find(|x| x.gauge && x.name == name) {
            Some(x) => x.step = value,
            None => s.series.push(Series {
                name: name.into(),
                labels: vec![],
                step: value,
                gauge: true,
            }),
        }
    }

    /// A classic histogram: `cumulative[i]` observations per scrape at or below
    /// `bounds[i]`, and `total` in all (the `+Inf` bucket). Each observation adds its
    /// bucket's upper bound to `_sum` (those past the last bound, the last bound).
    pub fn add_histogram(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        cumulative: &[f64],
        total: f64,
    ) {
        for (b, c) in bounds.iter().zip(cumulative) {
            let mut l = labels.to_vec();
            let le = format!("{b}");
            l.push(("le", &le));
            self.add_counter(&format!("{name}_bucket"), &l, *c);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.add_counter(&format!("{name}_bucket"), &l, total);
        self.add_counter(&format!("{name}_count"), labels, total);
        let mut sum = 0.0;
        let mut below = 0.0;
        for (b, c) in bounds.iter().zip(cumulative) {
            sum += (c - below) * b;
            below = *c;
        }
        sum += (total - below) * bounds.last().copied().unwrap_or(0.0);
        self.add_counter(&format!("{name}_sum"), labels, sum);
    }
}

fn render(s: &mut State) -> String {
    s.steps += s.load;
    // The family a series belongs to: a declared histogram's, or its own name.
    let family = |name: &str| -> String {
        ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|stem| s.types.get(*stem) == Some(&"histogram"))
            .unwrap_or(name)
            .to_string()
    };
    let mut by_family: BTreeMap<String, Vec<&Series>> = BTreeMap::new();
    for x in &s.series {
        by_family.entry(family(&x.name)).or_default().push(x);
    }
    let mut out = String::new();
    for (name, series) in by_family {
        let kind = match s.types.get(&name) {
            Some(kind) => *kind,
            None if series[0].gauge => "gauge",
            None => "untyped",
        };
        let _ = writeln!(out, "# TYPE {name} {kind}");
        // In the order added: a histogram's buckets (by `le`), count and sum, label set
        // after label set, as client libraries and Envoy write them.
        for x in series {
            let name = &x.name;
            let labels: Vec<String> = x
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let value = if x.gauge {
                x.step
            } else {
                BASE + x.step * s.steps
            };
            let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
        }
    }
    out
}
