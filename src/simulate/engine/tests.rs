//! The closed loop's tests: replica-seconds and requests add up, CPU follows the load,
//! overload scales out, fallback, and scale to zero and back.

use super::*;

fn flat(rps: f64, seconds: usize) -> Scenario {
    Scenario {
        name: "flat".into(),
        seconds: vec![Second::at(rps); seconds],
    }
}

#[test]
fn replica_seconds_and_requests_add_up() {
    let run = run(&flat(100.0, 600), &Policy::Static(3), &Config::default());
    assert_eq!(run.replica_seconds, 1_800.0);
    assert_eq!(run.minutes.len(), 10);
    // Poisson arrivals at 100 rps for 600 s: 60 000 ± a few standard deviations.
    assert!(
        (59_000..=61_000).contains(&run.requests),
        "{}",
        run.requests
    );
    assert_eq!(run.scale_events, 0);
}

/// The CPU model: utilisation = served requests/s × CPU seconds per request / (ready
/// pods × CPU request). A pod's workers cap what it serves, so a saturated pod burns
/// at most workers × CPU share of a core: with the defaults (4 workers, 20 % of 50 ms
/// on CPU, a 1-core request) 80 %, barely above a 70 % target while its queue times out.
#[test]
fn cpu_utilisation_follows_served_load_and_caps_at_saturation() {
    let check = |rps: f64, pods: u32, want_percent: f64, saturated: bool| {
        let run = run(&flat(rps, 600), &Policy::Static(pods), &Config::default());
        for m in &run.minutes[2..] {
            assert!(
                (m.cpu_percent - want_percent).abs() <= 0.06 * want_percent,
                "{rps} rps on {pods} pods: {m:?}"
            );
            assert_eq!(!m.within, saturated, "{rps} rps on {pods} pods: {m:?}");
        }
    };
    // 200 rps × 10 ms / 4 cores.
    check(200.0, 4, 50.0, false);
    // 100 rps × 10 ms / 4 cores.
    check(100.0, 4, 25.0, false);
    // 400 rps on 2 pods of 4 workers: they serve 160 rps, 4 × 0.2 cores each.
    check(400.0, 2, 80.0, true);
}

#[test]
fn overload_scales_out_and_recovers() {
    // 400 rps needs 5 pods at 80 rps each; starting from 2 the p95 policy must add pods.
    let run = run(
        &flat(400.0, 1_800),
        &Policy::P95 { target_s: None },
        &Config::default(),
    );
    assert!(run.max_replicas >= 6, "max {}", run.max_replicas);
    let last = run.minutes.last().expect("minutes");
    assert!(last.within, "{last:?}");
    assert!(!run.minutes[0].within, "the first minute is overloaded");
}

/// A load the two starting pods cannot serve from the first second: every period of the
/// history queued, so the pods that served each bound its latency (`capacity::Period`),
/// and the policy grows the fleet instead of asking for the maximum at once (30 pods
/// before the bound).
#[test]
fn a_saturated_start_grows_the_fleet_no_further_than_twice_the_loads_pods() {
    let config = Config::default();
    let policy = Policy::Recommended {
        pod_concurrency: None,
    };
    let run = run(&flat(400.0, 600), &policy, &config);
    // 400 rps × 50 ms in flight without a queue, × what the queue adds at the target.
    let slots = f64::from(config.service.workers_per_pod);
    let needed = (400.0 * 0.05 * capacity::queue_factor(slots) / slots).ceil() as u32;
    assert!(
        (needed..=2 * needed).contains(&run.max_replicas),
        "max {} for {needed}",
        run.max_replicas
    );
    assert!(!run.minutes[0].within, "the first minute is overloaded");
    assert!(
        run.minutes[2..].iter().all(|m| m.within),
        "{:?}",
        run.minutes
    );
}

#[test]
fn no_data_triggers_the_fallback() {
    let mut config = Config::default();
    config.keda.fallback = Some((3, 7));
    let run = run(&flat(0.0, 120), &Policy::P95 { target_s: None }, &config);
    assert!(run.fallbacks > 0);
    assert_eq!(run.max_replicas, 7);
}

/// KEDA serves the fallback once the failures are more than `failureThreshold`
/// (`pkg/fallback/fallback.go`: `NumberOfFailures > FailureThreshold`): with 3, from the
/// fourth failing HPA sync; with 0, from the first. No data from the start, syncs every 15 s
/// over 120 s: 8 syncs.
#[test]
fn the_fallback_comes_after_more_failures_than_the_threshold() {
    for (threshold, fallbacks) in [(3, 5), (0, 8)] {
        let mut config = Config::default();
        config.keda.fallback = Some((threshold, 7));
        let run = run(&flat(0.0, 120), &Policy::P95 { target_s: None }, &config);
        assert_eq!(run.fallbacks, fallbacks, "threshold {threshold}");
    }
}

/// With `minReplicaCount: 0`, a latency with no data is an error, not an idle target: KEDA
/// keeps the pods (the simulator scaled a p95 policy to zero once the traffic stopped).
#[test]
fn no_data_is_not_idle_for_a_latency() {
    let mut config = Config::default();
    config.keda.min_replicas = 0;
    let mut scenario = flat(50.0, 600);
    scenario.seconds.extend(vec![Second::at(0.0); 900]);
    let run = run(&scenario, &Policy::P95 { target_s: None }, &config);
    assert!(
        run.minutes.iter().all(|m| m.replicas >= 1.0),
        "{:?}",
        run.minutes
    );
}

#[test]
fn scale_to_zero_after_cooldown_and_back() {
    let mut config = Config::default();
    config.keda.min_replicas = 0;
    let mut scenario = flat(50.0, 600);
    scenario.seconds.extend(vec![Second::at(0.0); 900]);
    scenario.seconds.extend(vec![Second::at(50.0); 300]);
    let run = run(&scenario, &Policy::Rps { per_pod: 60.0 }, &config);
    let idle = &run.minutes[20];
    assert_eq!(idle.replicas, 0.0, "{idle:?}");
    let back = run.minutes.last().expect("minutes");
    assert!(back.replicas >= 1.0, "{back:?}");
}

/// The simulator reads `signal: sloCapacity` as the embedded store does (ARCHITECTURE.md,
/// invariant 14): the same requests, filed in the simulator's ring and sent to a store as
/// spans (each ending when the request completed, the store's settle time the server's
/// default), give the same value at every HPA sync. The traffic: a burst that queues for
/// the whole of the history's first minute (its reference, and while the history is young
/// its calm latency, only from the calm 10 s blocks before it), then calm for fourteen
/// minutes: past the busiest minute's five, the sustained level holds the burst's minutes,
/// and past the buckets' ten-minute retention it reads the per-minute sums the store kept.
#[test]
fn recommended_reads_as_the_embedded_store_does() {
    use crate::signal::{CapacityTarget, Quantile, SpanKind, TraceSelector};
    use crate::source::otlp::store::tests::{at, instance, request, sp, S};
    use crate::source::otlp::store::{ManualClock, Store, StoreConfig};
    use crate::telemetry::Metrics;
    use std::sync::Arc;
    use std::time::Duration;

    let config = Config::default();
    let store_config = StoreConfig {
        rate_settle: Duration::from_secs(SETTLE_S as u64),
        ..StoreConfig::default()
    };
    let clock = Arc::new(ManualClock::new(at(0)));
    let metrics = Arc::new(Metrics::standalone().1);
    let store = Store::with_clock(store_config, metrics, clock.clone()).expect("valid config");
    let selector = TraceSelector {
        service: "orders".to_string(),
        span_kind: SpanKind::Server,
        version: None,
        labels: Vec::new(),
    };
    let target = CapacityTarget {
        pod_concurrency: f64::from(config.service.workers_per_pod),
        objective: Duration::from_secs_f64(config.objective_s),
        quantile: Quantile::P95,
    };
    let policy = Policy::Recommended {
        pod_concurrency: None,
    };
    let mut ring = Ring::new(capacity::HISTORY_S.max(capacity::GUARD_WINDOW_S) as usize);
    let mut rng = Rng::new(7);
    // (end ns after T0, duration ns, pod) of the requests not yet ended at the read.
    let mut pending: Vec<(u64, u64, u32)> = Vec::new();
    let (mut compared, mut clamped) = (0, 0);
    for t in 0..900usize {
        ring.advance(t);
        // 40 requests a second at a 50 ms mean; from 20 s to 80 s four times as many,
        // queueing: each waits longer the later in the burst it comes.
        let burst = (20..80).contains(&t);
        let (n, wait_s) = if burst {
            (160, (t - 20) as f64 * 0.02)
        } else {
            (40, 0.0)
        };
        for i in 0..n {
            let at_s = t as f64 + i as f64 / n as f64;
            let latency_ns = ((0.05 * rng.exp1() + wait_s) * 1e9) as u64 + 1_000_000;
            let latency_s = latency_ns as f64 / 1e9;
            let b = ring.completion(t, (at_s + latency_s) as usize);
            b.latency.add(latency_ns);
            b.requests += 1;
            b.busy_s += latency_s;
            // Two pods serve in turn, each request filed under its pod as the store
            // files a span under its `service.instance.id`.
            let pod = (i % 2) as u32;
            if !b.pods.contains(&pod) {
                b.pods.push(pod);
            }
            pending.push(((at_s * 1e9) as u64 + latency_ns, latency_ns, pod));
        }
        if t % 15 != 0 {
            continue;
        }
        // What the store knows at `t`: the spans that ended before it.
        let now_ns = t as u64 * S;
        let (ended, waiting): (Vec<_>, Vec<_>) =
            pending.iter().partition(|(end, _, _)| *end < now_ns);
        pending = waiting;
        let spans: Vec<_> = ended
            .iter()
            .map(|&(end, d, _)| sp("orders", end, d))
            .collect();
        let mut request = request(&spans);
        for (rs, &(_, _, pod)) in request.resource_spans.iter_mut().zip(&ended) {
            if let Some(r) = rs.resource.as_mut() {
                r.attributes
                    .push(instance(["pod-0", "pod-1"][pod as usize]));
            }
        }
        clock.set(at(now_ns));
        store.ingest(request);
        let simulated = read(&policy, &config, &mut ring, t);
        let stored = store
            .capacity_at(&selector, target, at(now_ns))
            .ok()
            .flatten();
        match (simulated, stored) {
            (Some(a), Some(b)) => {
                assert!(
                    (a - b).abs() <= 1e-9 * b.max(1.0),
                    "t {t}: simulated {a}, store {b}"
                );
                compared += 1;
                // In the burst, below what the window's requests in flight ask for at any
                // utilisation: the clamp held the queue (from 45 s; at 30 s the window
                // holds only 4 s of it).
                let (w, covered) = ring.settled(t, capacity::WINDOW_S as usize);
                let in_flight = w.busy_s / covered as f64;
                if burst && t >= 45 && a * target.pod_concurrency * capacity::U_HIGH < in_flight {
                    clamped += 1;
                }
            }
            (None, None) => assert!(t <= SETTLE_S, "t {t}: neither has a value"),
            (a, b) => panic!("t {t}: simulated {a:?}, store {b:?}"),
        }
    }
    assert_eq!(compared, 59, "every sync from the first settled second on");
    assert_eq!(
        clamped, 3,
        "the burst's queue clamped at every sync from 45 s to 75 s"
    );
}
