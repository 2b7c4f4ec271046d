//! The `slo-scaler` binary: parse the command line, then run `serve` or `check`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;
use slo_scaler::cli::{Cli, Command};
use slo_scaler::config::ConfigError;
use slo_scaler::server::Server;
use slo_scaler::telemetry::init_tracing;

/// sysexits' EX_CONFIG-adjacent "usage" code, for a refused configuration.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return refused(&e),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slo-scaler: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Self-traces' gRPC exporter starts its connection on this runtime.
    let _rt = runtime.enter();
    match cli.command {
        Command::Serve(args) => {
            let _traces = init_tracing(args.log_format);
            runtime.block_on(serve(args))
        }
        Command::Demo(args) => {
            let _traces = init_tracing(slo_scaler::telemetry::LogFormat::Text);
            match runtime.block_on(slo_scaler::demo::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("slo-scaler demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Simulate(args) => match slo_scaler::simulate::run(&args) {
            Ok(table) => emit(&table),
            Err(e) => {
                eprintln!("slo-scaler simulate: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Check(args) => match runtime.block_on(slo_scaler::check::run(args)) {
            Ok(report) => emit(&report),
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Writes a command's report to stdout. A reader that stopped reading (`| head`) ends the
/// command quietly, where `print!` would panic.
fn emit(text: &str) -> ExitCode {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slo-scaler: cannot write the report: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--help` and `--version` print and exit 0. Any other command line clap refuses (an unknown
/// flag, a value that does not parse) is a refused configuration: its message, naming the
/// flag, and exit 64.
fn refused(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
        _ => ExitCode::from(EXIT_CONFIG),
    }
}

async fn serve(args: slo_scaler::config::ServeArgs) -> ExitCode {
    let mut server = match Server::start(args).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "cannot start");
            return if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            };
        }
    };
    let failure = tokio::select! {
        _ = terminate() => None,
        e = server.wait_for_failure() => Some(e),
    };
    if let Some(e) = failure {
        tracing::error!(error = format!("{e:#}"), "server failed");
        return ExitCode::FAILURE;
    }
    tracing::info!("shutting down");
    match server.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "unclean shutdown");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM (Kubernetes) or Ctrl-C.
async fn terminate() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
