//! The command tree: `serve`, `demo`, `check`, `simulate`. Each command's arguments live beside
//! the command (`config::ServeArgs`, `demo::DemoArgs`, `check::CheckArgs`, `simulate::SimulateArgs`).

use clap::{Parser, Subcommand};

use crate::config::ServeArgs;

#[derive(Debug, Parser)]
#[command(
    name = "slo-scaler",
    version,
    about = "KEDA external scaler for trace-derived SLO signals and SQS queue depth"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// In every command, `-1` after a flag is its value (refused by the flag's own parser, which
/// names the flag), never a flag of its own.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // Parsed once at start-up.
pub enum Command {
    /// Run the scaler: KEDA's gRPC ExternalScaler, the admin HTTP server, the OTLP receiver.
    #[command(allow_negative_numbers = true)]
    Serve(ServeArgs),
    /// The one-command tour: the server with the embedded trace store, synthetic traffic
    /// for the seed services (a latency spike, an error burst), and a live table.
    #[command(allow_negative_numbers = true)]
    Demo(crate::demo::DemoArgs),
    /// Explain one trigger: the query it sends, the value, active or not, desired replicas.
    #[command(allow_negative_numbers = true)]
    Check(crate::check::CheckArgs),
    /// Replay a traffic scenario through a model of the service, KEDA and the HPA for
    /// several scaling policies; print the table, or write summary.json, a CSV and plots.
    #[command(allow_negative_numbers = true)]
    Simulate(crate::simulate::SimulateArgs),
}
