//! The example AnalysisTemplate (deploy/examples/canary/) judging live answers of the
//! endpoint, through `common::canary::verdict`.

use std::time::Duration;

use slo_scaler::analysis::{Answer, Rule, Verdict};

use crate::common::canary::verdict;
use crate::harness::plan;
use crate::setup::Setup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_template_judges_live_answers() {
    let s = Setup::start(&[]).await;
    let window = Duration::from_secs(120);
    // Baseline: median 100 ms, 1 % errors.
    s.send("payment-service", "v1", &plan(2000, window, 100.0, 100))
        .await;
    // A good canary: the same latency, 2 % errors.
    s.send("payment-service", "good", &plan(200, window, 100.0, 50))
        .await;
    // A bad canary: 10 % errors.
    s.send("payment-service", "bad", &plan(200, window, 100.0, 10))
        .await;
    // A slow canary: p95 far more than 200 ms above the baseline's.
    s.send("payment-service", "slow", &plan(200, window, 600.0, 1000))
        .await;
    // Too little traffic, whatever its numbers.
    s.send("payment-service", "quiet", &plan(20, window, 900.0, 2))
        .await;
    // The parameters the example template sends.
    for (canary, want) in [
        ("good", "Successful"),
        ("bad", "Failed"),
        ("slow", "Failed"),
        ("quiet", "Inconclusive"),
    ] {
        let (status, a) = s
            .analysis(&[
                ("service", "payment-service"),
                ("canary", canary),
                ("baseline", "v1"),
                ("window", "2m"),
                ("quantile", "0.95"),
                ("minCount", "50"),
            ])
            .await;
        assert_eq!(status, 200, "{a}");
        assert_eq!(verdict("slo-scaler-canary", &a), want, "{canary}: {a}");
        // The demo's judge (analysis::Rule::EXAMPLE) agrees with the template.
        let answer: Answer = serde_json::from_value(a.clone()).expect("an answer");
        let ours = match Rule::EXAMPLE.judge(&answer) {
            Verdict::Pass => "Successful",
            Verdict::Fail => "Failed",
            Verdict::Inconclusive => "Inconclusive",
        };
        assert_eq!(ours, want, "{canary}: {a}");
    }
}
