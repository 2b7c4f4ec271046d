//! The demo, run as users run it (the binary).
//!
//! - The closed loop: order-service's load triples; its p95 goes over 300 ms, the HPA (with
//!   Kubernetes' behaviour) adds pods, and p95 comes back under 300 ms while the load lasts.
//! - The queue: the spike's notifications queue up faster than notification-service's
//!   consumers take them; the `queueDepth` trigger, read through the scaler's SQS source,
//!   adds consumers until the backlog is gone, and the HPA takes them back to the minimum.
//! - The canary act: payment-service v2 takes 10 % of the traffic with 12 % errors, and the
//!   canary analysis the demo asks from the admin port (`GET /api/v1/analysis`, judged by the
//!   example AnalysisTemplate's rule) turns from inconclusive, below `minCount` v2 spans, to
//!   fail.

use std::process::Command;

use crate::common::scaler::LOOPBACK_ADDRS;

/// The demo's output from `start_at` in its story for `duration`, one table a second, on
/// loopback ports; it must exit successfully.
fn run_demo(start_at: &str, duration: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_slo-scaler"))
        .args(["demo", "--start-at", start_at, "--duration", duration])
        .args(["--refresh", "1s"])
        .args(LOOPBACK_ADDRS)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// What one table said about the canary: (verdict, canary count, canary error rate).
#[derive(Debug)]
struct Seen {
    verdict: String,
    count: Option<u64>,
    errors: Option<f64>,
}

/// The canary parts of every table the demo printed.
fn tables(stdout: &str) -> Vec<Seen> {
    let mut seen = Vec::new();
    let mut row: Option<(u64, Option<f64>)> = None;
    for line in stdout.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"canary") && words.get(1) == Some(&"v2") {
            let count = words.get(2).and_then(|w| w.parse().ok());
            let errors = words
                .get(4)
                .and_then(|w| w.strip_suffix('%'))
                .and_then(|w| w.parse::<f64>().ok())
                .map(|p| p / 100.0);
            row = count.map(|c| (c, errors));
        }
        if let Some(rest) = line.strip_prefix("canary verdict: ") {
            let verdict = rest.split_whitespace().next().unwrap_or("").to_string();
            let (count, errors) = match row.take() {
                Some((c, e)) => (Some(c), e),
                None => (None, None),
            };
            seen.push(Seen {
                verdict,
                count,
                errors,
            });
        }
    }
    seen
}

#[test]
fn the_canary_act_turns_from_inconclusive_to_fail() {
    // The act starts 8 s in: after the store knows rates (`--otlp-rate-settle`, 6 s by
    // default; the endpoint answers `rps` null until then), before v2 has 50 spans. It
    // lasts 18 s, about 100 v2 spans at 6 a second: a loaded machine that sends fewer
    // still reaches 50 (at 12 s one run under a concurrent benchmark saw 49).
    let stdout = run_demo("72s", "26s");
    assert!(
        stdout.contains("payment-service canary v2 at 10 %"),
        "{stdout}"
    );
    let seen = tables(&stdout);
    // A table the endpoint could not answer says so (unavailable); none is judged.
    let judged: Vec<&Seen> = seen.iter().filter(|s| s.verdict != "unavailable").collect();
    let first_fail = judged
        .iter()
        .position(|s| s.verdict == "fail")
        .unwrap_or_else(|| panic!("no fail verdict: {seen:?}\n{stdout}"));
    assert!(first_fail > 0, "inconclusive before enough spans: {seen:?}");
    for s in &judged[..first_fail] {
        assert_eq!(s.verdict, "inconclusive", "{seen:?}");
        let count = s.count.expect("the canary row");
        assert!(count < 50, "inconclusive with {count} v2 spans: {seen:?}");
    }
    for s in &judged[first_fail..] {
        assert_eq!(s.verdict, "fail", "once bad, always bad: {seen:?}");
        let count = s.count.expect("the canary row");
        let errors = s.errors.expect("the canary error rate");
        assert!(count >= 50 && errors > 0.03, "{seen:?}");
    }
}

/// Each table printed in the load spike: (t, the order-service p95 row's value in seconds,
/// and the pods before and after from the row of the trigger that drives them, the
/// recommended sloCapacity).
fn spike_rows(stdout: &str) -> Vec<(f64, f64, u32, u32)> {
    let mut rows = Vec::new();
    let mut t = None;
    let mut pods: Option<(u32, u32)> = None;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("slo-scaler demo — t=") {
            t = rest
                .trim_start()
                .split_once("s — ")
                .filter(|(_, phase)| phase.starts_with("order-service load spike"))
                .and_then(|(n, _)| n.parse::<f64>().ok());
        }
        // value, threshold, active, pods before, →, pods after, metric type
        let words =
            |rest: &str| -> Vec<String> { rest.split_whitespace().map(str::to_string).collect() };
        if let (Some(rest), Some(_)) = (line.strip_prefix("order-service SLO p95 300ms, 4/pod"), t)
        {
            let w = words(rest);
            pods = w
                .get(3)
                .and_then(|b| b.parse().ok())
                .zip(w.get(5).and_then(|a| a.parse().ok()));
        }
        if let (Some(rest), Some(t)) = (line.strip_prefix("order-service p95 < 300ms"), t) {
            let w = words(rest);
            if let (Some(v), Some((before, after))) =
                (w.first().and_then(|v| v.parse().ok()), pods.take())
            {
                rows.push((t, v, before, after));
            }
        }
    }
    rows
}

#[test]
fn scaling_brings_p95_back_under_the_objective_during_the_spike() {
    // The spike runs from 20 s to 60 s of the story.
    let stdout = run_demo("15s", "44s");
    let rows = spike_rows(&stdout);
    let spike: Vec<_> = rows.iter().collect();
    let start_pods = spike.first().map(|r| r.2).expect("tables during the spike");
    let over = spike
        .iter()
        .position(|r| r.1 > 0.3)
        .unwrap_or_else(|| panic!("p95 never over 300 ms in the spike: {rows:?}"));
    let back = spike[over..]
        .iter()
        .position(|r| r.1 < 0.3)
        .map(|i| spike[over + i])
        .unwrap_or_else(|| panic!("p95 not back under 300 ms during the spike: {rows:?}"));
    assert!(
        back.2 > start_pods,
        "back under the objective with more pods than at the spike's start ({start_pods}): {back:?} in {rows:?}"
    );
}

/// One table's queue line: (t, consumers, ready consumers, messages waiting).
fn queue_rows(stdout: &str) -> Vec<(f64, u32, u32, u64)> {
    let mut rows = Vec::new();
    let mut t = None;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("slo-scaler demo — t=") {
            t = rest
                .trim_start()
                .split_once("s — ")
                .and_then(|(n, _)| n.parse::<f64>().ok());
        }
        let (Some(rest), Some(t)) = (line.strip_prefix("notification-service consumers: "), t)
        else {
            continue;
        };
        // "N (R ready, …), set by the queueDepth trigger; its queue: W waiting, F in flight"
        let w: Vec<&str> = rest.split_whitespace().collect();
        let number = |s: Option<&&str>| s.and_then(|s| s.trim_start_matches('(').parse().ok());
        let waiting = rest
            .split_once("its queue: ")
            .and_then(|(_, q)| q.split_whitespace().next())
            .and_then(|n| n.parse().ok());
        if let (Some(pods), Some(ready), Some(waiting)) =
            (number(w.first()), number(w.get(1)), waiting)
        {
            rows.push((t, pods, ready, waiting));
        }
    }
    rows
}

#[test]
fn queue_depth_adds_consumers_until_the_backlog_is_gone() {
    // The spike runs from 20 s to 60 s; the consumers' scale-down stabilisation is 20 s.
    let stdout = run_demo("18s", "64s");
    let rows = queue_rows(&stdout);
    let min = rows
        .first()
        .map(|r| r.1)
        .expect("queue lines in the tables");
    assert_eq!(min, 3, "{rows:?}");
    let in_spike = |r: &&(f64, u32, u32, u64)| (20.0..60.0).contains(&r.0);
    // The backlog outgrows what the minimum's queueLength (20 a pod) covers, and the
    // queueDepth trigger answers with more consumers.
    let peak = rows.iter().filter(in_spike).map(|r| r.3).max().unwrap_or(0);
    assert!(
        peak > 20 * u64::from(min),
        "no backlog in the spike: {rows:?}"
    );
    let most = rows.iter().filter(in_spike).map(|r| r.2).max().unwrap_or(0);
    assert!(most > min, "no consumers added in the spike: {rows:?}");
    // They empty the queue within 15 s of the spike's end, and the HPA takes them back to
    // the minimum once its stabilisation window has passed.
    let drained = rows.iter().find(|r| r.0 >= 60.0 && r.3 == 0);
    assert!(
        drained.is_some_and(|r| r.0 < 75.0),
        "backlog not gone by 75 s: {rows:?}"
    );
    let last = rows.last().expect("rows");
    assert!(
        last.0 > 80.0 && last.1 == min,
        "not back to {min} consumers: {rows:?}"
    );
}
