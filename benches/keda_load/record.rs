//! What the bench records of the calls it makes: latencies per phase, failures by phase and
//! method, and the percentiles and medians the report prints.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

/// The phases of a run, as failures name them.
const PHASES: [&str; 5] = ["planning", "warm-up", "keda-shaped", "flood", "after"];

/// Latencies (ns) per phase, and RPC failures by method.
#[derive(Default)]
pub struct Record {
    pub latencies: Mutex<Vec<Vec<u64>>>,
    /// "phase method: code" → (count, the first message).
    pub failures: Mutex<HashMap<String, (u64, String)>>,
    pub calls: AtomicU64,
}

impl Record {
    pub fn latency(&self, phase: usize, d: Duration) {
        let mut l = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
        if l.len() <= phase {
            l.resize(phase + 1, Vec::new());
        }
        l[phase].push(d.as_nanos() as u64);
    }

    pub fn failure(&self, phase: usize, what: &str, status: &tonic::Status) {
        let key = format!("{} {what}: {:?}", PHASES[phase.min(4)], status.code());
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert_with(|| (0, status.message().to_string()))
            .0 += 1;
    }
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

pub fn percentiles(mut ns: Vec<u64>) -> Percentiles {
    if ns.is_empty() {
        return Percentiles::default();
    }
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() - 1) as f64 * q).round() as usize] as f64 / 1e3;
    Percentiles {
        count: ns.len(),
        p50_us: at(0.5),
        p99_us: at(0.99),
        p999_us: at(0.999),
        max_us: at(1.0),
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
