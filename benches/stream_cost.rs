//! What `--stream-interval` costs: the scaler's CPU with 2,000 `external-push` streams open
//! (StreamIsActive, as KEDA holds one per ScaledObject on one connection), for each interval
//! from today's default down to the add-ons' (KEDA's otel-add-on pushes every 0.5 s, the
//! http-add-on every 0.2 s), next to the same server with no stream open, measured in the
//! same run. Issue #24 asks for the default to be picked from this cost.
//!
//! `cargo bench --bench stream_cost [-- --streams 2000 --seconds 30]`
//!
//! Each setting runs in a child process of this bench, which starts `slo-scaler serve` in
//! process on a runtime of its own (the binary's: one worker per core), reading a Prometheus fake that answers every instant
//! query with one sample (`common/in_process.rs`), so every evaluation has a value and the
//! cache refreshes each query once per `--cache-ttl` (10 s, the default) whatever the
//! interval. The streams are Prometheus triggers of the KEDA-shaped workload
//! (`common/workload.rs`): no two with the same metadata, about 150 distinct queries. (An
//! embedded-store trigger is re-evaluated every half bucket whatever the flag says, so the
//! flag is about these.) The client holds the streams on a one-thread runtime of its own
//! and receives only the first answer of each (the fake's value never changes). CPU is the
//! process's user + system time from `/proc/self/stat` over the window, client included —
//! the client only waits.

#[path = "common/in_process.rs"]
mod in_process;
#[path = "../tests/common/loopback.rs"]
mod loopback;
#[path = "common/workload.rs"]
mod workload;

use std::time::{Duration, Instant};

use slo_scaler::proto::external_scaler_client::ExternalScalerClient;
use slo_scaler::proto::ScaledObjectRef;
use tonic::transport::Channel;
use workload::{scaled_object, Kind};

/// Intervals measured, today's default first.
const INTERVALS: [&str; 5] = ["5s", "2s", "1s", "500ms", "200ms"];

struct Opts {
    streams: usize,
    seconds: u64,
    /// Set in the child that measures one setting: an interval, or "idle".
    one: Option<String>,
}

fn opts() -> Opts {
    let mut o = Opts {
        streams: 2_000,
        seconds: 30,
        one: None,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        if args[i] == "--one" {
            o.one = args.get(i + 1).cloned();
            i += 2;
            continue;
        }
        let value = args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (args[i].as_str(), value) {
            ("--streams", Some(v)) => o.streams = v as usize,
            ("--seconds", Some(v)) => o.seconds = v,
            // `cargo bench` passes `--bench`; anything else is ignored the same way.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

/// This process's CPU time (user + system) so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (in parentheses, may hold spaces): utime is field 14,
    // stime 15, counted from 1, in clock ticks (USER_HZ, 100 on Linux).
    let after = &stat[stat.rfind(')').expect("command name") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// The first `n` Prometheus triggers of the workload.
fn triggers(n: usize) -> Vec<ScaledObjectRef> {
    (0..)
        .map(scaled_object)
        .filter(|(kind, _)| *kind == Kind::Prometheus)
        .map(|(_, so)| so)
        .take(n)
        .collect()
}

/// Opens one StreamIsActive per trigger on `channel`, waits for each stream's first answer,
/// and keeps the streams open (draining them) until the client runtime is dropped.
async fn open_streams(channel: Channel, triggers: Vec<ScaledObjectRef>) -> usize {
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<bool>(triggers.len().max(1));
    let n = triggers.len();
    for so in triggers {
        let mut client = ExternalScalerClient::new(channel.clone());
        let opened = opened_tx.clone();
        let so_name = so.name.clone();
        tokio::spawn(async move {
            let call = tokio::time::timeout(Duration::from_secs(20), client.stream_is_active(so));
            let mut stream = match call.await.map_err(|e| e.to_string()) {
                Ok(Ok(r)) => r.into_inner(),
                Ok(Err(status)) => return refused(&opened, &so_name, status.to_string()).await,
                Err(elapsed) => return refused(&opened, &so_name, elapsed).await,
            };
            // A stream whose first answer does not come counts as not open; the bench goes on.
            let first = tokio::time::timeout(Duration::from_secs(20), stream.message()).await;
            if let Ok(Err(ref e)) = first {
                eprintln!("stream {so_name}: {e}");
            }
            let _ = opened.send(matches!(first, Ok(Ok(Some(_))))).await;
            while let Ok(Some(_)) = stream.message().await {}
        });
    }
    // The tasks keep their senders while they drain: count answers, not closed senders.
    let mut ok = 0;
    for _ in 0..n {
        ok += usize::from(opened_rx.recv().await.unwrap_or(false));
    }
    ok
}

/// A stream that did not open: said on stderr, counted as not open.
async fn refused(opened: &tokio::sync::mpsc::Sender<bool>, name: &str, why: String) {
    eprintln!("stream {name}: {why}");
    let _ = opened.send(false).await;
}

/// The two runtimes of a setting's process: the server's (the binary's: one worker per core) and
/// the client's (one thread).
struct Runtimes {
    server: tokio::runtime::Runtime,
    client: tokio::runtime::Runtime,
}

/// One setting: the process's CPU share of one core over the window, and the streams open.
fn measure(rt: &Runtimes, interval: Option<&str>, o: &Opts) -> (f64, usize) {
    let flags: Vec<&str> = match interval {
        Some(i) => vec!["--stream-interval", i],
        None => vec![],
    };
    let server = rt.server.block_on(in_process::start_scaler_with(&flags));
    let addr = server.grpc_addr;
    let streams = match interval {
        Some(_) => triggers(o.streams),
        None => vec![],
    };
    // The streams' tasks run on the client runtime's worker after this returns.
    let open = rt.client.block_on(async move {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        open_streams(channel, streams).await
    });
    // Let every stream's first tick pass and the cache settle before the window.
    std::thread::sleep(Duration::from_secs(3));
    let (cpu0, t0) = (cpu_time(), Instant::now());
    std::thread::sleep(Duration::from_secs(o.seconds));
    let (cpu, wall) = (cpu_time() - cpu0, t0.elapsed());
    drop(server);
    (cpu.as_secs_f64() / wall.as_secs_f64(), open)
}

/// Runs one setting in a child process of this bench (a server per process: its CPU is the
/// process's, and nothing of one setting lingers into the next); returns its CPU share and
/// the streams open.
fn child(setting: &str, o: &Opts) -> (f64, usize) {
    let out = std::process::Command::new(std::env::current_exe().expect("own path"))
        .args(["--one", setting])
        .args(["--streams", &o.streams.to_string()])
        .args(["--seconds", &o.seconds.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run the child");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("measured "))
        .unwrap_or_else(|| panic!("child {setting} printed no figure: {text}"));
    let mut it = line.split_whitespace();
    let cpu = it.next().and_then(|v| v.parse().ok()).expect("cpu");
    let open = it.next().and_then(|v| v.parse().ok()).expect("open");
    (cpu, open)
}

fn main() {
    let o = opts();
    if let Some(setting) = &o.one {
        let rt = Runtimes {
            server: tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("server")
                .build()
                .expect("server runtime"),
            client: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .thread_name("client")
                .build()
                .expect("client runtime"),
        };
        let interval = (setting != "idle").then_some(setting.as_str());
        let (cpu, open) = measure(&rt, interval, &o);
        println!("measured {cpu} {open}");
        std::process::exit(0);
    }
    println!(
        "stream_cost: {} streams, {} s windows, a process per setting ({} cores)",
        o.streams,
        o.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let (idle, _) = child("idle", &o);
    println!("| setting | streams open | CPU (share of one core) | above idle | per evaluation |");
    println!("|---|---|---|---|---|");
    println!(
        "| no stream open (baseline) | 0 | {:.2} % | — | — |",
        idle * 100.0
    );
    for interval in INTERVALS {
        let (cpu, open) = child(interval, &o);
        let per_s = open as f64
            / slo_scaler::config::duration_arg(interval).map_or(1.0, |d| d.as_secs_f64());
        let above = (cpu - idle).max(0.0);
        println!(
            "| `--stream-interval {interval}` | {open} | {:.2} % | {:.2} % | {:.1} µs ({per_s:.0} evaluations/s) |",
            cpu * 100.0,
            above * 100.0,
            above * 1e6 / per_s,
        );
    }
}
