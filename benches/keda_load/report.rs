//! The run's report: the machine, the settings and every figure, printed as the table
//! BENCHMARKS.md quotes (and as JSON with `--json`).

use std::collections::HashMap;

use crate::args::Args;
use crate::keda::HPA_SYNC;
use crate::record::{median, Percentiles};
use crate::saturation::{SAT_CONNECTIONS, SAT_STREAMS};
use crate::workload::SERVICES;
use crate::CACHE_TTL;

#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub nproc: usize,
    pub cpu_model: String,
    pub load_before: String,
    pub load_after: String,
    pub scaled_objects: usize,
    pub otlp_scaled_objects: usize,
    pub prometheus_scaled_objects: usize,
    pub polling_interval_s: f64,
    pub duration_s: f64,
    pub connections: usize,
    // (a)
    pub sat_get_metrics_rps: Vec<f64>,
    pub sat_health_rps: Vec<f64>,
    pub sat_bare_rps: Vec<f64>,
    pub sat_failures: u64,
    pub ratio_vs_health: f64,
    pub ratio_vs_bare: f64,
    // (b)
    pub get_metrics_keda_rate: Percentiles,
    pub keda_calls_per_second: f64,
    pub get_metrics_flood: Percentiles,
    /// The scaler's own GetMetrics histogram over (b)'s phase: calls within each bound.
    pub handler_within: Vec<(String, f64)>,
    /// Health/Check on the same server and connection, at the same rate, same phases.
    pub health_keda_rate: Percentiles,
    pub health_flood: Percentiles,
    pub failures: HashMap<String, (u64, String)>,
    // (c)
    pub fake_queries: u64,
    pub backend_requests_metric: f64,
    pub calls_per_ttl: f64,
    pub keda_builtin_per_ttl: f64,
    // (d)
    pub spans_offered_per_second: u64,
    pub spans_accepted_per_second: f64,
    pub spans_refused: u64,
    pub spans_sender_behind: u64,
    pub spans_flood_accepted_per_second: f64,
    /// The same two figures from the scaler's `slo_scaler_otlp_spans_total{outcome="accepted"}`.
    pub spans_counted_per_second: f64,
    pub spans_flood_counted_per_second: f64,
    // (e)
    pub rss_before: u64,
    /// After planning the first half.
    pub rss_half: u64,
    pub rss_after_planning: u64,
    pub bytes_per_scaled_object: f64,
    /// The second half's growth per ScaledObject: what one more costs.
    pub bytes_per_more_scaled_object: f64,
    pub rss_end: u64,
}

impl Report {
    /// The machine and the run's settings; the figures come later.
    pub fn new(args: &Args) -> Report {
        Report {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpu_model(),
            load_before: uptime(),
            scaled_objects: args.scaled_objects,
            polling_interval_s: args.polling_interval.as_secs_f64(),
            duration_s: args.duration.as_secs_f64(),
            connections: args.connections,
            spans_offered_per_second: args.spans_per_second,
            ..Report::default()
        }
    }
}

pub fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default()
}

pub fn print_report(r: &Report, args: &Args) {
    let kib = |b: u64| b / 1024;
    println!();
    println!(
        "machine: {} × {}; load before {} / after {}",
        r.nproc, r.cpu_model, r.load_before, r.load_after
    );
    println!(
        "workload: {} ScaledObjects ({} otlp over {SERVICES} services, {} prometheus against a \
         fake that answers instantly and counts queries; no SQS: moto is left out), \
         pollingInterval {:?}, HPA sync {:?}, {} connection(s), {:?} measured, spans offered \
         {}/s over OTLP/gRPC",
        r.scaled_objects,
        r.otlp_scaled_objects,
        r.prometheus_scaled_objects,
        args.polling_interval,
        HPA_SYNC,
        r.connections,
        args.duration,
        r.spans_offered_per_second
    );
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!();
    println!("| figure | value | same-run baseline / target |");
    println!("|---|---|---|");
    println!(
        "| (a) cache-hit GetMetrics at saturation ({SAT_CONNECTIONS} conns × {SAT_STREAMS} streams) | {} req/s (median {:.0}) | Health/Check on the scaler: {} (median {:.0}) → **{:.2}×**; bare tonic ExternalScaler: {} (median {:.0}) → **{:.2}×**; failures {} |",
        fmt(&r.sat_get_metrics_rps),
        median(&r.sat_get_metrics_rps),
        fmt(&r.sat_health_rps),
        median(&r.sat_health_rps),
        r.ratio_vs_health,
        fmt(&r.sat_bare_rps),
        median(&r.sat_bare_rps),
        r.ratio_vs_bare,
        r.sat_failures
    );
    let p = |x: &Percentiles| {
        format!(
            "p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, max {:.0} µs ({} calls)",
            x.p50_us, x.p99_us, x.p999_us, x.max_us, x.count
        )
    };
    println!(
        "| (b) GetMetrics round trip, KEDA-shaped ({:.0} GetMetrics/s), {} spans/s offered | {} | Health/Check, same server, connection and rate: {}; target p99 < 1 ms |",
        r.keda_calls_per_second,
        r.spans_offered_per_second,
        p(&r.get_metrics_keda_rate),
        p(&r.health_keda_rate)
    );
    if let Some((_, all)) = r.handler_within.last().filter(|(_, n)| *n > 0.0) {
        let within: Vec<String> = r.handler_within[..r.handler_within.len() - 1]
            .iter()
            .map(|(le, n)| {
                format!(
                    "{:.2} % ≤ {:.0} µs",
                    100.0 * n / all,
                    le.parse::<f64>().unwrap_or(0.0) * 1e6
                )
            })
            .collect();
        println!(
            "| (b'') the same calls inside the scaler (its own histogram, handler entry to answer) | {} of {all:.0} | — |",
            within.join(", ")
        );
    }
    println!(
        "| (b') the same while spans flood the receiver | {} | Health/Check: {} |",
        p(&r.get_metrics_flood),
        p(&r.health_flood)
    );
    println!(
        "| (c) prometheus backend calls per {:?} TTL | {:.1} (fake counted {} in {:.0} s; slo_scaler_backend_requests_total +{:.0}) | KEDA's built-in prometheus scaler: {:.0} per TTL |",
        CACHE_TTL,
        r.calls_per_ttl,
        r.fake_queries,
        r.duration_s,
        r.backend_requests_metric,
        r.keda_builtin_per_ttl
    );
    println!(
        "| (d) spans/s accepted while polled, at the offered rate | {:.0} (the scaler counted {:.0}/s; refused {}, sender behind by {}) | offered {} |",
        r.spans_accepted_per_second,
        r.spans_counted_per_second,
        r.spans_refused,
        r.spans_sender_behind,
        r.spans_offered_per_second
    );
    println!(
        "| (d') spans/s accepted while polled, offered as fast as taken | {:.0} (the scaler counted {:.0}/s) | target ≥ 500k |",
        r.spans_flood_accepted_per_second,
        r.spans_flood_counted_per_second
    );
    println!(
        "| (e) RSS per ScaledObject: the second half's growth / its count | {:.0} B ({} → {} KiB) | target ≤ 2048 B |",
        r.bytes_per_more_scaled_object,
        kib(r.rss_half),
        kib(r.rss_after_planning),
    );
    println!(
        "| (e₀) RSS growth of planning all N / N, with what the first calls make once | {:.0} B ({} → {} → {} KiB; {} KiB at the end) | — |",
        r.bytes_per_scaled_object,
        kib(r.rss_before),
        kib(r.rss_half),
        kib(r.rss_after_planning),
        kib(r.rss_end)
    );
    if !r.failures.is_empty() {
        let mut failures: Vec<_> = r.failures.iter().collect();
        failures.sort();
        println!("RPC errors answered (count, first message):");
        for (what, (n, message)) in failures {
            println!("  {what}: {n} ({message})");
        }
    }
}
