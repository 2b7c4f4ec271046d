//! `slo-scaler simulate` against closed forms and on the built-in seed scenario.
//!
//! - The queueing model against Erlang C: one pod with c workers fed Poisson arrivals is
//!   an M/M/c queue, whose waiting time has `P(W > t) = C(c, a) · exp(−(cμ − λ) t)`.
//! - The seed scenario (`diurnal`, 24 h of order-service traffic): the p95 policy holds
//!   the objective for less than the smallest static fleet that does, and better than
//!   CPU scaling.
//! - `slo-scaler simulate --out` (the binary itself): `summary.json`, the CSV, and every
//!   plot as SVG and as a PNG that decodes, has the chart's size and is drawn on (lines in
//!   the series' colours, text from the embedded font).
//! - Policies run side by side give exactly what they give one after the other.

use slo_scaler::simulate::engine::{self, Config};
use slo_scaler::simulate::policy::Policy;
use slo_scaler::simulate::report::Summary;
use slo_scaler::simulate::scenario;
use slo_scaler::simulate::service::{
    erlang_c, mmc_wait_quantile, Rng, Service, ServiceDist, ServiceModel,
};
use slo_scaler::simulate::{simulate, smallest_static};

/// Simulated waiting-time quantiles of one pod with `c` workers at utilisation `rho`
/// (mean service 50 ms), compared with the closed form within 5 %.
fn check(c: u32, rho: f64, quantiles: &[f64]) {
    let mu = 20.0;
    let lambda = rho * f64::from(c) * mu;
    let model = ServiceModel {
        workers_per_pod: c,
        mean_service_s: 1.0 / mu,
        dist: ServiceDist::Exponential,
        cpu_share: 1.0,
        cpu_request_cores: 1.0,
        timeout_s: 1e6,
        startup_s: 0.0,
    };
    let mut service = Service::new(model, 1, 42 + u64::from(c));
    let mut arrivals = Rng::new(7 + (rho * 100.0) as u64);
    // Samples grow with the queue's relaxation time, which grows like 1 / (1 − ρ).
    let n = (400_000.0 / (1.0 - rho)) as usize;
    let mut t = 0.0;
    let mut waits: Vec<f64> = (0..n)
        .map(|_| {
            t += arrivals.exp1() / lambda;
            service.serve(t, 1.0).wait_s
        })
        .collect();
    // The first 1 % is the queue filling from empty.
    waits.drain(..n / 100);
    waits.sort_by(f64::total_cmp);
    let waited = waits.iter().filter(|w| **w > 0.0).count() as f64 / waits.len() as f64;
    let pc = erlang_c(c, lambda / mu);
    assert!(
        (waited - pc).abs() <= 0.05 * pc,
        "c={c} ρ={rho}: P(wait) {waited:.4} vs Erlang C {pc:.4}"
    );
    for &p in quantiles {
        let want = mmc_wait_quantile(c, lambda, mu, p);
        let got = waits[(p * (waits.len() - 1) as f64).floor() as usize];
        assert!(
            (got - want).abs() <= 0.05 * want,
            "c={c} ρ={rho} p{}: simulated {:.2} ms vs closed form {:.2} ms",
            p * 100.0,
            got * 1e3,
            want * 1e3
        );
    }
}

#[test]
fn mmc_waiting_time_percentiles_match_erlang_c() {
    // Quantiles where the closed form is well away from the atom at zero
    // (ln(C / (1 − p)) ≥ 1), so a 5 % bound tests the tail rather than C alone.
    check(1, 0.5, &[0.9, 0.95, 0.99]);
    check(1, 0.8, &[0.9, 0.95, 0.99]);
    check(4, 0.5, &[0.95, 0.99]);
    check(4, 0.7, &[0.9, 0.95, 0.99]);
    check(4, 0.8, &[0.9, 0.95, 0.99]);
    check(4, 0.9, &[0.9, 0.95, 0.99]);
    check(8, 0.7, &[0.95, 0.99]);
    check(8, 0.9, &[0.9, 0.95, 0.99]);
}

/// The issue asks three things of the seed scenario with every default: the p95 policy
/// holds ≥ 99 % of minutes, at ≤ 0.8× the replica-hours of the smallest static fleet that
/// also holds 99 %, and beats CPU-utilisation scaling on attainment. The defaults are the
/// model's stated assumptions (SIMULATION.md), not values picked for this test.
#[test]
fn seed_scenario_p95_policy_holds_the_objective_cheaper_than_static_and_cpu() {
    let scenario = scenario::builtin("diurnal").expect("built-in diurnal");
    let config = Config::default();
    let fleet = Summary::of(&smallest_static(&scenario, &config, 0.99));
    let runs = engine::run_lockstep(
        &scenario,
        &[
            Policy::P95 { target_s: None },
            Policy::Cpu {
                target_percent: 70.0,
            },
            // The smallest fleet: one pod fewer misses the goal.
            Policy::Static(fleet.max_replicas - 1),
        ],
        &config,
    );
    let [p95, cpu, smaller] = [0, 1, 2].map(|i| Summary::of(&runs[i]));
    let report = format!("static {fleet:?}\np95 {p95:?}\ncpu {cpu:?}\nsmaller {smaller:?}");
    assert!(fleet.slo_attainment >= 0.99, "{report}");
    assert!(smaller.slo_attainment < 0.99, "{report}");
    assert!(
        p95.slo_attainment >= 0.99,
        "p95 holds 99 % of minutes\n{report}"
    );
    assert!(
        p95.replica_hours <= 0.8 * fleet.replica_hours,
        "p95 costs at most 0.8× the static fleet\n{report}"
    );
    assert!(
        p95.slo_attainment > cpu.slo_attainment,
        "p95 beats CPU scaling on attainment\n{report}"
    );
}

/// A PNG's size and its pixels as RGB triples.
fn decode_png(path: &std::path::Path) -> ((u32, u32), Vec<[u8; 3]>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()));
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .unwrap_or_else(|e| panic!("{} has no frame: {e}", path.display()));
    let step = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("{}: colour type {other:?}", path.display()),
    };
    assert_eq!(info.bit_depth, png::BitDepth::Eight, "{}", path.display());
    let pixels = buf[..info.buffer_size()]
        .chunks_exact(step)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    ((info.width, info.height), pixels)
}

#[test]
fn out_writes_summary_csv_and_every_plot_as_svg_and_png() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Ten minutes: 100 rps, then 400 rps, which two pods cannot serve.
    let csv = dir.path().join("spike.csv");
    std::fs::write(&csv, "t,rps\n0,100\n300,400\n599,400\n").expect("write scenario");
    let out = dir.path().join("sim");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_slo-scaler"))
        .arg("simulate")
        .arg("--scenario")
        .arg(&csv)
        .args(["--policy", "static:2", "--policy", "p95", "--out"])
        .arg(&out)
        .output()
        .expect("run slo-scaler simulate");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("p95.png"), "{stdout}");

    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("summary.json")).expect("summary.json"),
    )
    .expect("summary.json is JSON");
    let names: Vec<&str> = summary["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["static:2", "p95"]);
    let rows = std::fs::read_to_string(out.join("timeseries.csv")).expect("timeseries.csv");
    assert_eq!(rows.lines().count(), 1 + 2 * 10, "{rows}");

    for name in ["load", "replicas", "p95"] {
        let svg = std::fs::read_to_string(out.join(format!("{name}.svg"))).expect("svg");
        assert!(
            svg.starts_with("<svg"),
            "{name}.svg: {}",
            &svg[..svg.len().min(80)]
        );
        let path = out.join(format!("{name}.png"));
        let ((w, h), pixels) = decode_png(&path);
        assert_eq!((w, h), (960, 380), "{name}.png");
        let colours: std::collections::HashSet<[u8; 3]> = pixels.iter().copied().collect();
        assert!(
            colours.len() >= 8,
            "{name}.png has {} colours",
            colours.len()
        );
        // The first series is drawn in the first colour of the palette.
        assert!(
            pixels.contains(&[31, 119, 180]),
            "{name}.png has no line in the first series' colour"
        );
        // The caption (the top 30 rows) holds text: dark pixels from the embedded font.
        let caption_ink = pixels[..(w * 30) as usize]
            .iter()
            .filter(|p| p.iter().all(|c| *c < 128))
            .count();
        assert!(
            caption_ink > 50,
            "{name}.png: {caption_ink} dark pixels in the caption"
        );
    }
    // The p95 chart draws the objective line in black.
    let (_, pixels) = decode_png(&out.join("p95.png"));
    assert!(pixels[(960 * 30) as usize..].contains(&[0, 0, 0]));
}

#[test]
fn policies_side_by_side_match_one_after_the_other() {
    let scenario = scenario::builtin("flash-crowd").expect("built-in flash-crowd");
    let scenario = scenario::Scenario {
        name: scenario.name,
        seconds: scenario.seconds[1_500..2_400].to_vec(),
    };
    let config = Config::default();
    let policies = [
        Policy::Static(4),
        Policy::Cpu {
            target_percent: 70.0,
        },
        Policy::Rps { per_pod: 60.0 },
        Policy::P95 { target_s: None },
        Policy::Slo { target: 0.8 },
        Policy::Concurrency { per_pod: 3.0 },
        Policy::Recommended {
            pod_concurrency: None,
        },
    ];
    // However `simulate` groups them in lockstep (`simulate::groups`), each policy's run is
    // the one it has alone.
    let together = simulate(&scenario, &policies, &config, 0.99);
    let apart: Vec<_> = policies
        .iter()
        .map(|p| engine::run(&scenario, p, &config))
        .collect();
    assert_eq!(together, apart);
}

/// The recommended policy (`signal: sloCapacity`) with its defaults, on a built-in
/// scenario or a committed traffic day (a file of docs/simulation/traffic) with
/// the model's defaults or `workers` and a log-normal service time: its summary, the
/// smallest static fleet's, and the other policies'.
fn compare(name: &str, config: &Config, others: &[Policy]) -> (Summary, Summary, Vec<Summary>) {
    let scenario = match scenario::builtin(name) {
        Some(s) => s,
        None => {
            let path = format!(
                "{}/docs/simulation/traffic/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            let text = std::fs::read_to_string(&path).expect("committed traffic day");
            scenario::parse_csv(name, &text).expect("a t,rps scenario")
        }
    };
    let fleet = Summary::of(&smallest_static(&scenario, config, 0.99));
    let mut policies = vec![Policy::Recommended {
        pod_concurrency: None,
    }];
    policies.extend_from_slice(others);
    let runs = engine::run_lockstep(&scenario, &policies, config);
    let mut rows: Vec<Summary> = runs.iter().map(Summary::of).collect();
    let recommended = rows.remove(0);
    (recommended, fleet, rows)
}

/// The bar: ≥ 99 % of minutes, ≤ 0.75× the smallest static fleet's
/// replica-hours, at most 2× its pods, at most 100 scale events in the day.
fn assert_meets_the_bar(rec: &Summary, fleet: &Summary, report: &str) {
    assert!(rec.slo_attainment >= 0.99, "{report}");
    assert!(rec.replica_hours <= 0.75 * fleet.replica_hours, "{report}");
    assert!(rec.max_replicas <= 2 * fleet.max_replicas, "{report}");
    assert!(rec.scale_events <= 100, "{report}");
}

fn eight_slow_workers() -> Config {
    let mut config = Config::default();
    config.service.workers_per_pod = 8;
    config.service.mean_service_s = 0.120;
    config.service.dist = ServiceDist::LogNormal { sigma: 0.5 };
    config
}

/// The bar on the seed day, for the default service model and for 8 workers with
/// a 120 ms log-normal service time (podConcurrency follows `--workers-per-pod`, as a
/// user sets it from the service's configuration; nothing else changes): ≥ 99 % of
/// minutes, ≤ 0.75× the smallest static fleet's replica-hours, at most 2× its pods, at
/// most 100 scale events in the day.
#[test]
fn recommended_policy_holds_the_seed_day_for_three_quarters_of_the_static_fleet() {
    for config in [Config::default(), eight_slow_workers()] {
        let (rec, fleet, _) = compare("diurnal", &config, &[]);
        let report = format!(
            "{:?}\nrecommended {rec:?}\nstatic {fleet:?}",
            config.service
        );
        assert_meets_the_bar(&rec, &fleet, &report);
    }
}

/// The same bar on the committed public web-server day (NASA, 5 July 1995, per minute,
/// swings of 3× between minutes), with the default service model. (With 8 workers and
/// 120 ms log-normal requests it holds 99.6 % at 0.82×: docs/simulation-results.md.)
#[test]
fn recommended_policy_holds_a_public_web_server_day_for_three_quarters_of_the_static_fleet() {
    let (rec, fleet, _) = compare("nasa-1995-07-05.csv", &Config::default(), &[]);
    let report = format!("recommended {rec:?}\nstatic {fleet:?}");
    assert_meets_the_bar(&rec, &fleet, &report);
}

/// A release 1.5× slower from noon: the RPS threshold that was right in the morning lets
/// the afternoon saturate; the recommended policy follows the longer service time.
#[test]
fn recommended_policy_follows_a_slower_release_where_rps_cannot() {
    let (rec, fleet, others) = compare(
        "release-regression",
        &Config::default(),
        &[Policy::Rps { per_pod: 60.0 }],
    );
    let rps = &others[0];
    let report = format!("recommended {rec:?}\nstatic {fleet:?}\nrps {rps:?}");
    assert!(rps.slo_attainment < 0.99, "{report}");
    assert_meets_the_bar(&rec, &fleet, &report);
}

/// A flash crowd (4× within a minute): no reactive policy holds every minute; the
/// recommended one holds at least as many as the best of RPS, p95 and CPU scaling, at
/// ≤ 0.8× the static fleet that holds them all.
#[test]
fn recommended_policy_meets_a_flash_crowd_as_well_as_the_best_threshold() {
    let others = [
        Policy::Rps { per_pod: 60.0 },
        Policy::P95 { target_s: None },
        Policy::Cpu {
            target_percent: 70.0,
        },
    ];
    let (rec, fleet, others) = compare("flash-crowd", &Config::default(), &others);
    let best = others.iter().map(|s| s.slo_attainment).fold(0.0, f64::max);
    let report = format!("recommended {rec:?}\nstatic {fleet:?}\nothers {others:?}");
    assert!(rec.slo_attainment >= best, "{report}");
    assert!(rec.replica_hours <= 0.8 * fleet.replica_hours, "{report}");
}

/// A dependency 3× slower for half an hour: the objective cannot be held by any fleet
/// while it lasts (the service time alone passes it), and the p95 policy scales to the
/// maximum trying. The recommended policy holds as many minutes for ≤ 0.6× its cost.
#[test]
fn recommended_policy_does_not_scale_into_a_slow_dependency() {
    for config in [Config::default(), eight_slow_workers()] {
        let (rec, _, others) = compare(
            "slow-dependency",
            &config,
            &[Policy::P95 { target_s: None }],
        );
        let p95 = &others[0];
        let report = format!("{:?}\nrecommended {rec:?}\np95 {p95:?}", config.service);
        assert!(rec.slo_attainment >= p95.slo_attainment, "{report}");
        assert!(rec.replica_hours <= 0.6 * p95.replica_hours, "{report}");
    }
}

/// The verdict does not rest on the HPA's `behavior`: with `spec.behavior` unset (a
/// ScaledObject without `advanced.horizontalPodAutoscalerConfig`, the controller's older
/// rules: at most `max(2 × current, 4)` a sync, the highest proposal of the last 5 minutes
/// even above the current count) the recommended policy still meets the bar on the seed day,
/// the NASA day and the slower release, and costs ≤ 0.6× p95's on the slow dependency.
#[test]
fn recommended_policy_meets_its_bars_under_the_hpa_rules_without_a_behavior() {
    let config = Config {
        behavior_unset: true,
        ..Config::default()
    };
    for day in ["diurnal", "nasa-1995-07-05.csv", "release-regression"] {
        let (rec, fleet, _) = compare(day, &config, &[]);
        let report = format!(
            "{day}
recommended {rec:?}
static {fleet:?}"
        );
        assert_meets_the_bar(&rec, &fleet, &report);
    }
    let (rec, _, others) = compare(
        "slow-dependency",
        &config,
        &[Policy::P95 { target_s: None }],
    );
    let p95 = &others[0];
    let report = format!(
        "recommended {rec:?}
p95 {p95:?}"
    );
    assert!(rec.slo_attainment >= p95.slo_attainment, "{report}");
    assert!(rec.replica_hours <= 0.6 * p95.replica_hours, "{report}");
}

/// A slow dependency that more pods do fix: each request holds its worker twice as long,
/// and the objective leaves room for that service time (100 ms requests against 1 s, or
/// one 20 ms worker a pod against 300 ms), so the fleet the slower requests need holds it.
/// The recommended policy holds at least the minutes p95 scaling holds, for less. (Before
/// the last two minutes' own service time counted, `capacity::RECENT_S`, the fleet stayed
/// near its old size for the ten minutes the faster minutes stayed in its history: 91.7 %
/// against p95's 92.5 % and 94.2 %.)
#[test]
fn recommended_policy_scales_for_a_slow_dependency_more_pods_fix() {
    let mut slower = Config::default();
    slower.service.mean_service_s = 0.1;
    slower.objective_s = 1.0;
    let mut one_worker = Config::default();
    one_worker.service.workers_per_pod = 1;
    one_worker.service.mean_service_s = 0.02;
    for config in [slower, one_worker] {
        let (rec, fleet, others) = compare(
            "slow-dependency",
            &config,
            &[Policy::P95 { target_s: None }],
        );
        let p95 = &others[0];
        let report = format!(
            "{:?}\nrecommended {rec:?}\np95 {p95:?}\nstatic {fleet:?}",
            config.service
        );
        assert!(fleet.slo_attainment >= 0.99, "{report}");
        assert!(rec.slo_attainment >= p95.slo_attainment, "{report}");
        assert!(rec.replica_hours <= p95.replica_hours, "{report}");
    }
}

/// The oracle is a lower bound: a fleet sized each minute for that minute with no
/// start-up delay costs no more than any policy that holds as many minutes.
#[test]
fn oracle_is_a_lower_bound() {
    let scenario = scenario::builtin("flash-crowd").expect("flash-crowd");
    let config = Config::default();
    let policies = [
        Policy::Oracle,
        Policy::StaticAuto,
        Policy::Recommended {
            pod_concurrency: None,
        },
        Policy::Rps { per_pod: 60.0 },
    ];
    let rows = Summary::all(&simulate(&scenario, &policies, &config, 0.99));
    let oracle = &rows[0];
    assert!(oracle.bound && !oracle.recommended, "{oracle:?}");
    assert!(rows[2].recommended, "{:?}", rows[2]);
    assert_eq!(oracle.slo_attainment, 1.0, "{oracle:?}");
    for s in &rows[1..] {
        assert!(oracle.replica_hours <= s.replica_hours, "{oracle:?}\n{s:?}");
        assert_eq!(s.oracle_ratio, Some(s.replica_hours / oracle.replica_hours));
    }
}

/// A minute no fleet holds (the service time alone passes the objective) is not a cost a
/// policy must pay: the bound spends the fewest pods on it, one, so it stays below every
/// policy. On `release-regression` with 8 workers of 120 ms log-normal requests the
/// afternoon is out of any fleet's reach; the bound took the maximum there, 391.9
/// replica-hours, and the recommended policy read as 0.58× of its lower bound.
#[test]
fn oracle_spends_the_fewest_pods_on_a_minute_no_fleet_holds() {
    let scenario = scenario::builtin("release-regression").expect("release-regression");
    let config = eight_slow_workers();
    let policies = [
        Policy::Oracle,
        Policy::Recommended {
            pod_concurrency: None,
        },
        Policy::P95 { target_s: None },
        Policy::Rps { per_pod: 60.0 },
    ];
    let runs = simulate(&scenario, &policies, &config, 0.99);
    let rows = Summary::all(&runs);
    let oracle = &rows[0];
    // The afternoon (from noon) is out of reach; the morning is held.
    assert!((0.45..0.55).contains(&oracle.slo_attainment), "{oracle:?}");
    for (m, minute) in runs[0].minutes.iter().enumerate() {
        if !minute.within {
            assert_eq!(minute.replicas, 1.0, "minute {m}: {minute:?}");
        }
    }
    for s in &rows[1..] {
        assert!(oracle.replica_hours <= s.replica_hours, "{oracle:?}\n{s:?}");
    }
}

/// `signal: sloCapacity` reads windows of its own (a trigger refuses `window`), so the
/// simulator's `--window`, the other trace signals' window, leaves the recommended policy
/// as the scaler runs it: the same run at every `--window`.
#[test]
fn the_window_flag_leaves_the_recommended_policy_alone() {
    let scenario = scenario::builtin("flash-crowd").expect("flash-crowd");
    let policies = [Policy::Recommended {
        pod_concurrency: None,
    }];
    let run = |window_s| {
        let config = Config {
            window_s,
            ..Config::default()
        };
        Summary::of(&engine::run_lockstep(&scenario, &policies, &config)[0])
    };
    let (at_60, at_15) = (run(60), run(15));
    assert_eq!(format!("{at_60:?}"), format!("{at_15:?}"));
}
