//! The real binary's command line: what it refuses, with which exit status and message.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../common/loopback.rs"]
mod loopback;

/// Every listener on a loopback port of the kernel's choosing: a command line wrongly
/// accepted starts a server that takes no fixed port, and is stopped after a while.
use loopback::LOOPBACK_ADDRS as ANY_PORT;

/// Runs `slo-scaler args…` with `env`: its exit status (`None` when it was still running
/// after 20 s and was stopped) and what it printed.
fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_slo-scaler"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn slo-scaler");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), printed)
}

/// `serve` with `flags`, on any port.
fn serve<'a>(flags: &[&'a str]) -> Vec<&'a str> {
    let mut argv = vec!["serve"];
    argv.extend(ANY_PORT);
    argv.extend(flags);
    argv
}

/// docs/configuration.md: a bad configuration exits 64 and names the flag, a value that does
/// not parse included (clap's own status, 2, was what these got); `--help` and `--version`
/// print and exit 0.
#[test]
fn values_that_do_not_parse_exit_64_naming_the_flag() {
    for (flags, named) in [
        (&["--cache-ttl", "10"][..], "--cache-ttl"),
        (&["--max-signals", "-1"], "--max-signals"),
        (&["--cache-ttl", "-1"], "--cache-ttl"),
        (
            &["--grpc-keepalive-timeout", "soon"],
            "--grpc-keepalive-timeout",
        ),
        (&["--otlp-max-series", "many"], "--otlp-max-series"),
        (&["--log-format", "xml"], "--log-format"),
        (&["--cache-tll", "10s"], "--cache-tll"),
    ] {
        let (status, printed) = run(&serve(flags), &[]);
        assert_eq!(status, Some(64), "{flags:?}: {printed}");
        assert!(printed.contains(named), "{flags:?}: {printed}");
    }
    // The same from the environment, named by its flag.
    let (status, printed) = run(&serve(&[]), &[("SLO_SCALER_CACHE_TTL", "10")]);
    assert_eq!(status, Some(64), "{printed}");
    assert!(printed.contains("--cache-ttl"), "{printed}");
    // Other commands read their command line the same way.
    let (status, printed) = run(&["check", "--current-replicas", "-1"], &[]);
    assert_eq!(status, Some(64), "{printed}");
    assert!(printed.contains("--current-replicas"), "{printed}");

    for args in [&["--help"][..], &["serve", "--help"], &["--version"]] {
        let (status, printed) = run(args, &[]);
        assert_eq!(status, Some(0), "{args:?}: {printed}");
        assert!(
            printed.contains("Usage:") || printed.starts_with("slo-scaler "),
            "{args:?}: {printed}"
        );
    }
}

/// Values past the documented maxima exit 64 naming the flag, where they panicked (exit 101)
/// or, for `--signal-expiry`, wrapped to 384 ms and started.
#[test]
fn values_past_the_maxima_exit_64_naming_the_flag() {
    for (flag, value) in [
        ("--max-signals", "18446744073709551615"),
        ("--max-stale", "18446744073709551615s"),
        ("--tls-reload-interval", "18446744073709551615s"),
        ("--cache-max-entries", "4294967298"),
        ("--signal-expiry", "18446744073709552s"),
    ] {
        let (status, printed) = run(&serve(&[flag, value]), &[]);
        assert_eq!(status, Some(64), "{flag} {value}: {printed}");
        assert!(printed.contains(flag), "{flag} {value}: {printed}");
        assert!(!printed.contains("panicked"), "{flag} {value}: {printed}");
    }
}

/// A reader that stops reading (`slo-scaler simulate … | head -1`) ends the command quietly:
/// `print!` panicked on the closed pipe (exit 101 and a panic message).
#[test]
fn a_reader_that_stops_reading_ends_the_report_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_slo-scaler"))
        .args([
            "simulate",
            "--scenario",
            "flash-crowd",
            "--policy",
            "rps:60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn slo-scaler");
    // Close the read end before the report is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The simulator's service model is bounded where it allocates: 2^32 − 1 workers a pod
/// aborted on a 32 GiB allocation.
#[test]
fn simulated_pods_of_too_many_workers_are_refused_by_name() {
    let (status, printed) = run(
        &[
            "simulate",
            "--scenario",
            "flash-crowd",
            "--workers-per-pod",
            "4294967295",
        ],
        &[],
    );
    assert_eq!(status, Some(1), "{printed}");
    assert!(printed.contains("workers-per-pod"), "{printed}");
}
