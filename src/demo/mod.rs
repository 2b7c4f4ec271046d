//! `slo-scaler demo`: the one-command tour. The server with the embedded trace store, fed
//! over real OTLP/gRPC by synthetic traffic for the seed services, and asked over real
//! gRPC the way KEDA asks — printing a live table of every signal and the replicas the
//! HPA would choose.
//!
//! The story (one loop is 100 s): steady load; an order-service load spike, whose
//! notifications queue up for notification-service ([`queue`]); a payment-service error
//! burst; recovery, while payment-service v2 rolls out as a canary that gets 10 % of its
//! traffic and fails 12 % of it (`--start-at 80s` jumps there).
//!
//! The canary act shows what the scaling signals cannot: diluted in the service-wide error
//! rate, v2's errors stay under the 3 % trigger, while the canary analysis, asked over
//! HTTP exactly as Argo Rollouts asks (`GET /api/v1/analysis` on the admin port, the
//! parameters of `deploy/examples/canary/analysis-template.yaml`) and judged by that
//! template's rule ([`crate::analysis::Rule::EXAMPLE`]), turns from inconclusive (fewer
//! than `minCount` v2 spans) to fail.
//!
//! The loop is closed for order-service: its spans' latencies come from the simulator's
//! service model ([`crate::simulate::service`]) with as many pods as the HPA would run
//! for the recommended `sloCapacity` trigger (the Kubernetes behaviour of [`Autoscaler`](crate::signal::hpa::Autoscaler),
//! with a start-up delay and a scale-down stabilisation shortened to fit the story). So the
//! table shows the spike, the scale-out and p95 back under the objective; the fleet then
//! keeps the spike's capacity, the busiest minute of the policy's last five minutes, for
//! the rest of the story.
//!
//! Rooms: [`story`] (the services, the phases and the triggers), [`queue`] (the queue, its
//! consumers and the endpoint the server reads it from), [`traffic`] (the spans,
//! over OTLP), [`scaling`] (asking like KEDA, the HPA closing order-service's loop, and
//! the analysis client) and [`render`] (the table).

mod queue;
mod render;
mod scaling;
mod story;
mod traffic;

use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

use clap::Args;

use crate::config::ServeArgs;
use crate::proto::external_scaler_client::ExternalScalerClient;

use queue::QueueLoop;
use scaling::{AnalysisClient, OrderLoop};
use story::demo_triggers;
use traffic::Traffic;

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Stop after this long (0 runs until Ctrl-C). One loop of the story is 100 s.
    #[arg(long, value_parser = crate::config::duration_arg, default_value = "100s")]
    pub duration: Duration,
    /// How often the table refreshes.
    #[arg(long, value_parser = crate::config::duration_arg, default_value = "2s")]
    pub refresh: Duration,
    /// Start the story this far in (80s starts with the canary act).
    #[arg(long, value_parser = crate::config::duration_arg, default_value = "0s")]
    pub start_at: Duration,
    /// Drive an already running scaler (at --grpc-addr and --otlp-grpc-addr) instead of
    /// starting one: traffic and KEDA-like polling only (and the canary analysis from
    /// its admin port at --admin-addr, when it answers there).
    #[arg(long)]
    pub attach: bool,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Runs the demo; returns an error message when it cannot.
pub async fn run(args: DemoArgs) -> Result<(), String> {
    let mut server = None;
    let mut queue = QueueLoop::new();
    let (grpc_addr, otlp_addr, admin_addr) = if args.attach {
        (
            args.serve.grpc_addr,
            args.serve.otlp.otlp_grpc_addr,
            args.serve.admin_addr,
        )
    } else {
        let mut serve = args.serve.clone();
        serve.otlp.no_otlp = false;
        // The server's SQS source reads the demo's queue, with the demo's credentials.
        serve.backends.aws_endpoint = Some(format!("http://{}", queue.serve().await?));
        let s = crate::server::Server::start_with(serve, Some(std::sync::Arc::new(aws_loader)))
            .await
            .map_err(|e| format!("cannot start the scaler: {e:#}"))?;
        let addrs = (
            s.grpc_addr,
            s.otlp_grpc_addr.ok_or("the OTLP receiver is not running")?,
            s.admin_addr,
        );
        server = Some(s);
        addrs
    };
    let local = |a: std::net::SocketAddr| {
        if a.ip().is_unspecified() {
            std::net::SocketAddr::from(([127, 0, 0, 1], a.port()))
        } else {
            a
        }
    };
    let (grpc_addr, otlp_addr) = (local(grpc_addr), local(otlp_addr));
    let analysis = AnalysisClient::new(local(admin_addr))?;
    let mut traffic = Traffic::connect(otlp_addr).await?;
    let mut keda = ExternalScalerClient::connect(format!("http://{grpc_addr}"))
        .await
        .map_err(|e| format!("cannot reach the scaler at {grpc_addr}: {e}"))?;

    let tty = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut order = OrderLoop::new();
    let mut triggers = demo_triggers(!args.attach);
    let tick = Duration::from_millis(200);
    let mut next_table = Instant::now() + args.refresh;
    let mut result = Ok(());
    let mut stop = Box::pin(tokio::signal::ctrl_c());
    loop {
        let elapsed = started.elapsed();
        if !args.duration.is_zero() && elapsed >= args.duration {
            break;
        }
        let t = (args.start_at + elapsed).as_secs_f64();
        if let Err(e) = traffic.send(t, &mut order, &mut queue).await {
            result = Err(e);
            break;
        }
        if Instant::now() >= next_table {
            next_table += args.refresh;
            let polled = scaling::poll(&mut keda, &mut triggers, &mut order, &mut queue, t).await;
            let mut table = render::table(&polled);
            render::analysis(&mut table, analysis.ask().await);
            let clear = if tty { "\x1b[2J\x1b[H" } else { "" };
            let mut out = std::io::stdout().lock();
            if write!(out, "{clear}{table}")
                .and_then(|()| out.flush())
                .is_err()
            {
                // Nobody reads the tables any more (`| head`): the demo is over.
                break;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = &mut stop => break,
        }
    }
    if let Some(s) = server {
        s.shutdown().await.map_err(|e| format!("{e:#}"))?;
    }
    result
}

/// The AWS configuration the demo's server reads its queue with: placeholder credentials
/// (the demo's queue checks none) and no look-up of the machine's own.
fn aws_loader() -> aws_config::ConfigLoader {
    let demo =
        aws_credential_types::Credentials::new("demo", "demo", None, None, "slo-scaler demo");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .credentials_provider(demo)
        .region(aws_config::Region::new("us-east-1"))
}
