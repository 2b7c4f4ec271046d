//! The board read: rows copied from a snapshot at read time, for `/debug/signals` (JSON)
//! and `/metrics` (the per-ScaledObject families, written by a collector).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

use super::history::widen;
use super::reuse::answered_ms;
use super::table::read;
use super::{Board, Entry, SignalState};

/// Characters of a trigger's query a debug row shows; longer ones are cut there and say their
/// length. A raw query may have 16 KiB, and JSON writes a control character in 6 bytes: shown
/// whole, 5,000 such triggers made `/debug/signals` ~490 MB. Cut, a row stays under 8 KiB
/// (docs/limits.md).
pub const QUERY_SHOWN: usize = 512;

/// `query` as a debug row shows it: its first [`QUERY_SHOWN`] characters, then its length.
fn shown(query: String) -> String {
    match query.char_indices().nth(QUERY_SHOWN) {
        None => query,
        Some((cut, _)) => format!("{}… ({} bytes)", &query[..cut], query.len()),
    }
}

/// One row of the debug view and of `/metrics`: a copy taken at read time.
#[derive(Debug, Clone)]
pub struct Row {
    pub entry: Arc<Entry>,
    value: Option<f64>,
    age: Option<Duration>,
    active: Option<bool>,
    state: Option<SignalState>,
    error: Option<String>,
    asked_ago: Duration,
    history: Vec<(u64, Option<f64>)>,
}

impl Row {
    pub fn state(&self) -> Option<SignalState> {
        self.state
    }

    pub fn to_json(&self) -> serde_json::Value {
        let e = &self.entry;
        let t = &e.plan.trigger;
        serde_json::json!({
            "namespace": e.namespace(),
            "scaledObject": e.name(),
            "metric": &*t.metric_name,
            "signal": t.kind.as_str(),
            "source": t.source().as_str(),
            "query": shown(e.plan.describe()),
            "value": self.value,
            "threshold": t.target,
            "activationThreshold": t.activation,
            "active": self.active,
            "state": self.state.map_or("pending", SignalState::as_str),
            "valueAgeSeconds": self.age.map(|a| a.as_secs_f64()),
            "error": self.error,
            "askedSecondsAgo": self.asked_ago.as_secs_f64(),
            "history": self.history.iter().map(|(t, v)| serde_json::json!([t, v])).collect::<Vec<_>>(),
        })
    }
}

impl Board {
    /// Every entry, sorted by namespace, name and metric.
    pub fn snapshot(&self) -> Vec<Row> {
        self.run_pending_tasks();
        let now_ms = self.now_ms();
        let entries: Vec<Arc<Entry>> = self
            .shards
            .iter()
            .flat_map(|shard| read(shard).iter().cloned().collect::<Vec<_>>())
            .collect();
        let mut rows: Vec<Row> = entries
            .into_iter()
            .map(|entry| {
                let slot = entry.slot();
                let last = slot.last.clone();
                let history = slot
                    .history
                    .iter()
                    .map(|&(t, v)| (u64::from(t), widen(v)))
                    .collect();
                drop(slot);
                let asked = entry.asked_ms.load(Ordering::Relaxed);
                // A reused answer's age when it was last served.
                let age = match entry.reuse_meta.load(Ordering::Acquire) {
                    0 => last.as_ref().and_then(|o| o.age),
                    meta => Some(Duration::from_millis(
                        entry
                            .served_ms
                            .load(Ordering::Relaxed)
                            .saturating_sub(answered_ms(meta)),
                    )),
                };
                Row {
                    value: last.as_ref().and_then(|o| o.value),
                    age,
                    active: last.as_ref().and_then(|o| o.active),
                    state: last.as_ref().map(|o| o.state),
                    error: last.and_then(|o| o.error),
                    asked_ago: Duration::from_millis(now_ms.saturating_sub(asked)),
                    history,
                    entry,
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            let key = |r: &Row| {
                (
                    r.entry.namespace().to_string(),
                    r.entry.name().to_string(),
                    r.entry.plan.trigger.metric_name.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        rows
    }

    /// The debug view (`/debug/signals`): a JSON array, written a row at a time (no
    /// document of the whole board is built first).
    pub fn debug_json(&self) -> Vec<u8> {
        let mut out = vec![b'['];
        for (i, row) in self.snapshot().iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Writing a `Value` (string keys only) into a `Vec` cannot fail.
            let _ = serde_json::to_writer(&mut out, &row.to_json());
        }
        out.push(b']');
        out
    }
}

/// The per-ScaledObject families, written from a snapshot at scrape time.
impl Collector for Board {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.snapshot();
        let labels = |r: &Row| {
            [
                ("namespace", r.entry.namespace().to_string()),
                ("scaled_object", r.entry.name().to_string()),
                ("metric", r.entry.plan.trigger.metric_name.to_string()),
            ]
        };
        type Pick = fn(&Row) -> Option<f64>;
        let gauges: [(&str, &str, Pick); 5] = [
            (
                "signal_value",
                "Last value served for a ScaledObject's metric (latency in seconds)",
                |r| r.value,
            ),
            (
                "signal_threshold",
                "Target (threshold) of a ScaledObject's metric",
                |r| Some(r.entry.plan.trigger.target),
            ),
            (
                "signal_activation_threshold",
                "Activation threshold of a ScaledObject's metric",
                |r| Some(r.entry.plan.trigger.activation),
            ),
            (
                "signal_age_seconds",
                "Age of the backend answer behind the last value served",
                |r| r.age.map(|a| a.as_secs_f64()),
            ),
            (
                "signal_active",
                "1 when the metric's value is above its activation threshold",
                |r| r.active.map(|a| if a { 1.0 } else { 0.0 }),
            ),
        ];
        for (name, help, pick) in gauges {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for r in &rows {
                if let Some(v) = pick(r) {
                    let l = labels(r);
                    if name == "signal_active" {
                        ConstGauge::new(v as i64).encode(family.encode_family(&l)?)?;
                    } else {
                        ConstGauge::new(v).encode(family.encode_family(&l)?)?;
                    }
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "signal_state",
            "State of a ScaledObject's metric at its last evaluation: 1 for the current state (ok, no_data, stale, error), 0 for the others",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for r in &rows {
            let Some(current) = r.state else { continue };
            for s in SignalState::ALL {
                let [a, b, c] = labels(r);
                let l = [a, b, c, ("state", s.as_str().to_string())];
                ConstGauge::new(i64::from(s == current)).encode(family.encode_family(&l)?)?;
            }
        }
        Ok(())
    }
}
