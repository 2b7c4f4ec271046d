//! The `serve` settings: every setting is a flag and an environment variable
//! `SLO_SCALER_<FLAG>`. [`BackendArgs::resolve`] turns them into a checked [`Settings`].
//!
//! `mod.rs` holds the server's own flags, the checked [`Settings`] and the one
//! [`ConfigError`]; `backends.rs` the backend, cache and policy flags shared with `check`;
//! `resolve.rs` their checking; `otlp.rs` the embedded receiver's flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::policy::NamespacePolicy;
use crate::signal::promql::Convention;
use crate::source::sqs::SqsConfig;
use crate::source::tempo::TempoBackendConfig;
use crate::source::tenant::TenantPolicies;
use crate::telemetry::LogFormat;
use crate::trigger::{parse_duration, ParseOptions, SourceKind};

mod backends;
mod otlp;
mod resolve;
#[cfg(test)]
mod tests;

pub use backends::BackendArgs;
pub use otlp::OtlpArgs;

/// Parses a source flag value (`otlp`, `prometheus`, `tempo`, `sqs`).
pub fn source_arg(s: &str) -> Result<SourceKind, String> {
    SourceKind::parse(s).ok_or_else(|| format!("{s:?} is not otlp, prometheus, tempo or sqs"))
}

/// The longest duration a flag takes, 7d: no setting needs more, and 2^64 s overflowed the
/// clocks and timers flags are added to.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The most `--max-signals` may be (at 80 KiB a trigger at most, 80 GB: past any pod).
pub const SIGNALS_LIMIT: u64 = 1_000_000;

/// The most `--cache-max-entries` may be (a thousand times the default).
pub const CACHE_ENTRIES_LIMIT: u64 = 100_000_000;

/// Parses a duration flag value (`500ms`, `15s`, `2m`), at most [`MAX_DURATION`].
pub fn duration_arg(s: &str) -> Result<Duration, String> {
    match parse_duration(s) {
        Some(d) if d <= MAX_DURATION => Ok(d),
        Some(_) => Err(format!("{s:?} is longer than 7d, the longest a flag takes")),
        None => Err(format!("{s:?} is not a duration like 500ms, 15s, 2m")),
    }
}

/// Every server setting.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// gRPC address for KEDA (ExternalScaler + grpc.health.v1.Health).
    #[arg(long, env = "SLO_SCALER_GRPC_ADDR", default_value = "0.0.0.0:6000")]
    pub grpc_addr: SocketAddr,
    /// Admin HTTP address: /metrics, /healthz, /readyz, /debug/signals.
    #[arg(long, env = "SLO_SCALER_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,
    #[command(flatten)]
    pub backends: BackendArgs,
    #[command(flatten)]
    pub otlp: OtlpArgs,
    /// Log format.
    #[arg(
        long,
        env = "SLO_SCALER_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,
    /// Per-ScaledObject metric series are dropped after this long without a request.
    #[arg(long, env = "SLO_SCALER_SIGNAL_EXPIRY", value_parser = duration_arg, default_value = "10m")]
    pub signal_expiry: Duration,
    /// Most ScaledObject triggers tracked at once (their memoised plans, debug rows and
    /// per-ScaledObject series), and most open streams; the overflow is evicted and counted.
    #[arg(long, env = "SLO_SCALER_MAX_SIGNALS", default_value_t = 5_000)]
    pub max_signals: u64,
    /// How often StreamIsActive (external-push) re-evaluates a trigger. 1 s costs 2.3 % of
    /// one core with 2,000 streams open (`benches/stream_cost.rs`, BENCHMARKS.md) and keeps a
    /// push within a second of the value the cache holds.
    #[arg(long, env = "SLO_SCALER_STREAM_INTERVAL", value_parser = duration_arg, default_value = "1s")]
    pub stream_interval: Duration,
    /// How often the gRPC server pings a connection (HTTP/2 keepalive) to find clients
    /// that vanished without closing it (a crashed node, a dropped network): their
    /// external-push streams would otherwise hold a `--max-signals` place and evaluate
    /// their trigger for as long as the process lives.
    #[arg(long, env = "SLO_SCALER_GRPC_KEEPALIVE_INTERVAL", value_parser = duration_arg, default_value = "30s")]
    pub grpc_keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered before the connection is closed.
    #[arg(long, env = "SLO_SCALER_GRPC_KEEPALIVE_TIMEOUT", value_parser = duration_arg, default_value = "20s")]
    pub grpc_keepalive_timeout: Duration,
    /// How long in-flight RPCs may run after SIGTERM before the server exits.
    #[arg(long, env = "SLO_SCALER_SHUTDOWN_GRACE", value_parser = duration_arg, default_value = "20s")]
    pub shutdown_grace: Duration,
    /// PEM certificate for the gRPC server (TLS). Requires --tls-key-file.
    #[arg(long, env = "SLO_SCALER_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for the gRPC server.
    #[arg(long, env = "SLO_SCALER_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Start with namespace policies (--tempo-tenant-allow, --prometheus-tenant-allow, --backend-allow,
    /// --raw-query-allow, --aws-role-allow) although callers are not authenticated by
    /// client certificates: the operator trusts every caller's `namespace` field (for
    /// example because a NetworkPolicy lets only KEDA reach the gRPC port).
    #[arg(long, env = "SLO_SCALER_ALLOW_UNAUTHENTICATED_NAMESPACE_POLICY")]
    pub allow_unauthenticated_namespace_policy: bool,
    /// PEM CA bundle: when set, clients (KEDA) must present a certificate it signed (mTLS).
    #[arg(
        long,
        env = "SLO_SCALER_TLS_CLIENT_CA_FILE",
        requires = "tls_cert_file"
    )]
    pub tls_client_ca_file: Option<PathBuf>,
    /// How often every TLS listener's certificate, key and client CA files are re-read;
    /// changed files that load are served to new connections.
    #[arg(long, env = "SLO_SCALER_TLS_RELOAD_INTERVAL", value_parser = duration_arg, default_value = "1m")]
    pub tls_reload_interval: Duration,
}

/// Backends, caching and timeouts: shared by `serve` and `check`.

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--{flag}: expected {expected}, got {value:?}")]
    Format {
        flag: &'static str,
        expected: &'static str,
        value: String,
    },
    #[error("--{flag}: backend {name:?} is not configured (add --{base} {name}=URL)")]
    UnknownBackend {
        flag: &'static str,
        base: &'static str,
        name: String,
    },
    #[error("--{flag}: backend {name:?} is given twice")]
    Duplicate { flag: &'static str, name: String },
    #[error("--conventions-file {path}: {reason}")]
    Conventions { path: String, reason: String },
    #[error("--default-source {kind}: {reason}")]
    DefaultSource { kind: SourceKind, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// Refuses a zero duration, naming its flag.
pub(crate) fn positive(flags: &[(&'static str, Duration)]) -> Result<(), ConfigError> {
    match flags.iter().find(|(_, d)| d.is_zero()) {
        Some((flag, _)) => Err(ConfigError::Invalid(format!(
            "--{flag} must be more than 0"
        ))),
        None => Ok(()),
    }
}

impl Settings {
    /// Whether any policy keyed by the caller's namespace is configured.
    pub fn has_namespace_policy(&self) -> bool {
        self.tenant_policy.is_restricted() || self.policy.is_restricted()
    }
}

impl ServeArgs {
    /// Namespace policies need callers whose namespace can be believed: client
    /// certificates (mTLS), or the operator's explicit acknowledgement.
    pub fn check_policy_trust(&self, settings: &Settings) -> Result<(), ConfigError> {
        if settings.has_namespace_policy()
            && self.tls_client_ca_file.is_none()
            && !self.allow_unauthenticated_namespace_policy
        {
            return Err(ConfigError::Invalid(
                "namespace policies (--tempo-tenant-allow, --prometheus-tenant-allow, --backend-allow, --raw-query-allow, --aws-role-allow) trust the namespace a caller writes: require client certificates with --tls-client-ca-file, or accept unauthenticated callers with --allow-unauthenticated-namespace-policy".into(),
            ));
        }
        Ok(())
    }

    /// Checks the server's own settings (the backends' are checked by
    /// [`BackendArgs::resolve`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive(&[
            ("signal-expiry", self.signal_expiry),
            ("stream-interval", self.stream_interval),
            ("grpc-keepalive-interval", self.grpc_keepalive_interval),
            ("grpc-keepalive-timeout", self.grpc_keepalive_timeout),
            ("tls-reload-interval", self.tls_reload_interval),
            ("shutdown-grace", self.shutdown_grace),
        ])?;
        if !(1..=SIGNALS_LIMIT).contains(&self.max_signals) {
            return Err(ConfigError::Invalid(format!(
                "--max-signals must be between 1 and {SIGNALS_LIMIT}, got {}",
                self.max_signals
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub prometheus: Vec<crate::source::prometheus::PrometheusBackendConfig>,
    pub tempo: Vec<TempoBackendConfig>,
    pub tenant_policy: TenantPolicies,
    /// Per-namespace allowances of backends, raw queries and AWS roles.
    pub policy: NamespacePolicy,
    pub sqs: SqsConfig,
    pub conventions: BTreeMap<String, Convention>,
    pub parse: ParseOptions,
    pub cache_ttl: Duration,
    pub max_stale: Duration,
    /// `--cache-max-entries`, `--cache-max-bytes`: the signal cache's bounds.
    pub cache_max_entries: u64,
    pub cache_max_bytes: u64,
    pub backend_timeout: Duration,
}
