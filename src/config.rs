//! The `serve` settings: every setting is a flag and an environment variable
//! `SLO_SCALER_<FLAG>`. [`BackendArgs::resolve`] turns them into a checked [`Settings`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::policy::{Allowance, NamespacePolicy};
use crate::signal::promql::{builtin_conventions, Convention};
use crate::source::http::{redact_url, HttpBackendConfig};
use crate::source::sqs::SqsConfig;
use crate::source::tempo::{validate_tenant, TempoApi, TempoBackendConfig, TenantPolicy};
use crate::telemetry::LogFormat;
use crate::trigger::{parse_duration, ParseOptions, SourceKind};

/// Parses a source flag value (`otlp`, `prometheus`, `tempo`, `sqs`).
pub fn source_arg(s: &str) -> Result<SourceKind, String> {
    SourceKind::parse(s).ok_or_else(|| format!("{s:?} is not otlp, prometheus, tempo or sqs"))
}

/// Parses a duration flag value (`500ms`, `15s`, `2m`).
pub fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).ok_or_else(|| format!("{s:?} is not a duration like 500ms, 15s, 2m"))
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
    /// How often StreamIsActive (external-push) re-evaluates a trigger.
    #[arg(long, env = "SLO_SCALER_STREAM_INTERVAL", value_parser = duration_arg, default_value = "5s")]
    pub stream_interval: Duration,
    /// How long in-flight RPCs may run after SIGTERM before the server exits.
    #[arg(long, env = "SLO_SCALER_SHUTDOWN_GRACE", value_parser = duration_arg, default_value = "20s")]
    pub shutdown_grace: Duration,
    /// PEM certificate for the gRPC server (TLS). Requires --tls-key-file.
    #[arg(long, env = "SLO_SCALER_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for the gRPC server.
    #[arg(long, env = "SLO_SCALER_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Start with namespace policies (--tempo-tenant-allow, --backend-allow,
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
}

/// Backends, caching and timeouts: shared by `serve` and `check`.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// A Prometheus backend, NAME=URL (repeatable; triggers pick one with `backend`).
    #[arg(
        long = "prometheus",
        env = "SLO_SCALER_PROMETHEUS",
        value_delimiter = ','
    )]
    pub prometheus: Vec<String>,
    /// NAME=PATH of a file holding a bearer token for that Prometheus backend.
    #[arg(
        long = "prometheus-bearer-token-file",
        env = "SLO_SCALER_PROMETHEUS_BEARER_TOKEN_FILE",
        value_delimiter = ','
    )]
    pub prometheus_bearer_token_file: Vec<String>,
    /// NAME=PATH of a file holding `user:password` for basic auth.
    #[arg(
        long = "prometheus-basic-auth-file",
        env = "SLO_SCALER_PROMETHEUS_BASIC_AUTH_FILE",
        value_delimiter = ','
    )]
    pub prometheus_basic_auth_file: Vec<String>,
    /// NAME=HEADER:VALUE sent on every request to that backend (repeatable). Not for
    /// secrets (arguments are visible to anyone who can list processes): use
    /// --prometheus-header-file.
    #[arg(long = "prometheus-header", env = "SLO_SCALER_PROMETHEUS_HEADER")]
    pub prometheus_header: Vec<String>,
    /// NAME=HEADER:PATH: that header, its value read from the file on every request
    /// (repeatable; for secret headers such as API keys).
    #[arg(
        long = "prometheus-header-file",
        env = "SLO_SCALER_PROMETHEUS_HEADER_FILE",
        value_delimiter = ','
    )]
    pub prometheus_header_file: Vec<String>,
    /// NAME=PATH of a PEM CA bundle for that backend.
    #[arg(
        long = "prometheus-ca-file",
        env = "SLO_SCALER_PROMETHEUS_CA_FILE",
        value_delimiter = ','
    )]
    pub prometheus_ca_file: Vec<String>,
    /// JSON file adding or overriding Prometheus naming conventions (see README).
    #[arg(long, env = "SLO_SCALER_CONVENTIONS_FILE")]
    pub conventions_file: Option<PathBuf>,
    /// A Tempo backend, NAME=URL (repeatable).
    #[arg(long = "tempo", env = "SLO_SCALER_TEMPO", value_delimiter = ',')]
    pub tempo: Vec<String>,
    /// NAME=TENANT: the default X-Scope-OrgID for that Tempo backend.
    #[arg(
        long = "tempo-tenant",
        env = "SLO_SCALER_TEMPO_TENANT",
        value_delimiter = ','
    )]
    pub tempo_tenant: Vec<String>,
    /// NAME=PATH of a bearer token file for that Tempo backend.
    #[arg(
        long = "tempo-bearer-token-file",
        env = "SLO_SCALER_TEMPO_BEARER_TOKEN_FILE",
        value_delimiter = ','
    )]
    pub tempo_bearer_token_file: Vec<String>,
    /// NAME=HEADER:VALUE sent on every request to that Tempo backend (repeatable). Not
    /// for secrets: use --tempo-header-file.
    #[arg(long = "tempo-header", env = "SLO_SCALER_TEMPO_HEADER")]
    pub tempo_header: Vec<String>,
    /// NAME=HEADER:PATH: that header, its value read from the file on every request
    /// (repeatable; for secret headers).
    #[arg(
        long = "tempo-header-file",
        env = "SLO_SCALER_TEMPO_HEADER_FILE",
        value_delimiter = ','
    )]
    pub tempo_header_file: Vec<String>,
    /// NAME=PATH of a PEM CA bundle for that Tempo backend.
    #[arg(
        long = "tempo-ca-file",
        env = "SLO_SCALER_TEMPO_CA_FILE",
        value_delimiter = ','
    )]
    pub tempo_ca_file: Vec<String>,
    /// NAME=instant|range: `range` for Tempo older than 2.6 (no instant metrics endpoint).
    #[arg(
        long = "tempo-api",
        env = "SLO_SCALER_TEMPO_API",
        value_delimiter = ','
    )]
    pub tempo_api: Vec<String>,
    /// NAMESPACE=TENANT[,TENANT…]: which Tempo tenants a namespace may read (repeatable;
    /// `*` for every namespace). With none set, every tenant is allowed.
    #[arg(long = "tempo-tenant-allow", env = "SLO_SCALER_TEMPO_TENANT_ALLOW")]
    pub tempo_tenant_allow: Vec<String>,
    /// AWS region for SQS when a trigger names none (else the AWS default chain's).
    #[arg(long, env = "SLO_SCALER_AWS_REGION")]
    pub aws_region: Option<String>,
    /// SQS endpoint override (an emulator or a VPC endpoint).
    #[arg(long, env = "SLO_SCALER_AWS_ENDPOINT")]
    pub aws_endpoint: Option<String>,
    /// An SQS endpoint URL triggers may name in `awsEndpoint` (repeatable; none: only the
    /// operator picks endpoints). Requests to it are signed with the scaler's credentials.
    #[arg(
        long = "allow-metadata-aws-endpoint",
        env = "SLO_SCALER_ALLOW_METADATA_AWS_ENDPOINT",
        value_delimiter = ','
    )]
    pub allow_metadata_aws_endpoint: Vec<String>,
    /// NAMESPACE=ARN[,ARN…]: IAM roles the SQS triggers of a namespace may assume with
    /// `awsRoleArn` (repeatable; `*` for every namespace). None: `awsRoleArn` is refused.
    #[arg(long = "aws-role-allow", env = "SLO_SCALER_AWS_ROLE_ALLOW")]
    pub aws_role_allow: Vec<String>,
    /// NAMESPACE=BACKEND[,BACKEND…]: named Prometheus / Tempo backends a namespace's triggers
    /// may read (repeatable; `*` for every namespace or backend). None: every backend.
    #[arg(long = "backend-allow", env = "SLO_SCALER_BACKEND_ALLOW")]
    pub backend_allow: Vec<String>,
    /// NAMESPACE=BACKEND[,BACKEND…]: backends a namespace may send raw queries
    /// (`signal: query`) to (repeatable; `*` as above). None: every namespace, every backend.
    #[arg(long = "raw-query-allow", env = "SLO_SCALER_RAW_QUERY_ALLOW")]
    pub raw_query_allow: Vec<String>,
    /// Source for trace signals whose trigger names none
    /// [default: prometheus when one is configured, else otlp].
    #[arg(long, env = "SLO_SCALER_DEFAULT_SOURCE", value_parser = source_arg)]
    pub default_source: Option<SourceKind>,
    /// How long a backend answer is reused.
    #[arg(long, env = "SLO_SCALER_CACHE_TTL", value_parser = duration_arg, default_value = "10s")]
    pub cache_ttl: Duration,
    /// Smallest `cacheTTL` a trigger may ask for.
    #[arg(long, env = "SLO_SCALER_MIN_CACHE_TTL", value_parser = duration_arg, default_value = "1s")]
    pub min_cache_ttl: Duration,
    /// Largest `cacheTTL` a trigger may ask for; must be below --max-stale, so that a
    /// failure at the end of a TTL is covered by the last good answer.
    #[arg(long, env = "SLO_SCALER_MAX_CACHE_TTL", value_parser = duration_arg, default_value = "1m")]
    pub max_cache_ttl: Duration,
    /// After a backend failure, the last good answer is served while younger than this;
    /// then GetMetrics fails with Unavailable (so KEDA's fallback takes over).
    #[arg(long, env = "SLO_SCALER_MAX_STALE", value_parser = duration_arg, default_value = "2m")]
    pub max_stale: Duration,
    /// Hard limit on every backend call.
    #[arg(long, env = "SLO_SCALER_BACKEND_TIMEOUT", value_parser = duration_arg, default_value = "5s")]
    pub backend_timeout: Duration,
}

/// The embedded OTLP receiver and trace store.
#[derive(Debug, Clone, Args)]
pub struct OtlpArgs {
    /// OTLP/gRPC receiver address.
    #[arg(
        long,
        env = "SLO_SCALER_OTLP_GRPC_ADDR",
        default_value = "0.0.0.0:4317"
    )]
    pub otlp_grpc_addr: SocketAddr,
    /// OTLP/HTTP receiver address (POST /v1/traces).
    #[arg(
        long,
        env = "SLO_SCALER_OTLP_HTTP_ADDR",
        default_value = "0.0.0.0:4318"
    )]
    pub otlp_http_addr: SocketAddr,
    /// Do not start the OTLP receiver.
    #[arg(long, env = "SLO_SCALER_NO_OTLP")]
    pub no_otlp: bool,
    /// Most series (service, span kind, version) the embedded store holds.
    #[arg(long, env = "SLO_SCALER_OTLP_MAX_SERIES", default_value_t = 1_000)]
    pub otlp_max_series: usize,
    /// How far back the embedded store keeps spans (the longest `window` for otlp).
    #[arg(long, env = "SLO_SCALER_OTLP_RETENTION", value_parser = duration_arg, default_value = "10m")]
    pub otlp_retention: Duration,
    /// Time resolution of the embedded store.
    #[arg(long, env = "SLO_SCALER_OTLP_BUCKET_WIDTH", value_parser = duration_arg, default_value = "1s")]
    pub otlp_bucket_width: Duration,
    /// Largest OTLP request accepted, after decompression (gRPC message or HTTP body).
    #[arg(long, env = "SLO_SCALER_OTLP_MAX_REQUEST_BYTES", default_value_t = 4 << 20)]
    pub otlp_max_request_bytes: usize,
    /// Bytes both OTLP receivers may hold for requests in flight; each is charged 10 × its
    /// size (at most 10 × --otlp-max-request-bytes), and refused (HTTP 429, gRPC
    /// UNAVAILABLE) when the budget is spent.
    #[arg(long, env = "SLO_SCALER_OTLP_MAX_INFLIGHT_BYTES", default_value_t = 256 << 20)]
    pub otlp_max_inflight_bytes: usize,
    /// Bytes the embedded store may hold (buckets, sketches, keys); spans are refused,
    /// and counted, while it holds more.
    #[arg(long, env = "SLO_SCALER_OTLP_MAX_STORE_BYTES", default_value_t = 512 << 20)]
    pub otlp_max_store_bytes: usize,
    /// Embedded rates leave out spans that ended less than this long ago (exporters
    /// batch: the SDK's BatchSpanProcessor sends every 5 s).
    #[arg(long, env = "SLO_SCALER_OTLP_RATE_SETTLE", value_parser = duration_arg, default_value = "6s")]
    pub otlp_rate_settle: Duration,
}

impl OtlpArgs {
    /// Checks the OTLP flags, naming the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad =
            |flag: &str, reason: String| Err(ConfigError::Invalid(format!("--{flag}: {reason}")));
        if self.otlp_max_request_bytes == 0 {
            return bad("otlp-max-request-bytes", "must be above zero".into());
        }
        if self.otlp_max_series == 0 {
            return bad("otlp-max-series", "must be above zero".into());
        }
        if self.otlp_max_store_bytes == 0 {
            return bad("otlp-max-store-bytes", "must be above zero".into());
        }
        if self.otlp_bucket_width < Duration::from_millis(1) {
            return bad("otlp-bucket-width", "must be at least 1ms".into());
        }
        if self.otlp_retention < self.otlp_bucket_width {
            return bad(
                "otlp-retention",
                "must be at least --otlp-bucket-width".into(),
            );
        }
        if self.otlp_rate_settle.is_zero() || self.otlp_rate_settle >= self.otlp_retention {
            return bad(
                "otlp-rate-settle",
                "must be above zero (1ms leaves out only the bucket in progress) and below --otlp-retention".into(),
            );
        }
        let per_request = self.otlp_max_request_bytes.saturating_mul(10);
        if self.otlp_max_inflight_bytes < per_request {
            return bad(
                "otlp-max-inflight-bytes",
                format!(
                    "{} is below 10 × --otlp-max-request-bytes ({per_request}): no maximum-size request would fit",
                    self.otlp_max_inflight_bytes
                ),
            );
        }
        Ok(())
    }
}

/// A bad setting; the process exits with status 64.
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
fn positive(flags: &[(&'static str, Duration)]) -> Result<(), ConfigError> {
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
                "namespace policies (--tempo-tenant-allow, --backend-allow, --raw-query-allow, --aws-role-allow) trust the namespace a caller writes: require client certificates with --tls-client-ca-file, or accept unauthenticated callers with --allow-unauthenticated-namespace-policy".into(),
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
            ("shutdown-grace", self.shutdown_grace),
        ])?;
        if self.max_signals == 0 {
            return Err(ConfigError::Invalid(
                "--max-signals must be more than 0".into(),
            ));
        }
        Ok(())
    }
}

/// Splits `NAME=VALUE`.
fn split_named<'a>(flag: &'static str, s: &'a str) -> Result<(&'a str, &'a str), ConfigError> {
    match s.split_once('=') {
        Some((n, v)) if !n.is_empty() && !v.is_empty() => Ok((n.trim(), v.trim())),
        _ => Err(ConfigError::Format {
            flag,
            expected: "NAME=VALUE",
            value: redact_url(s),
        }),
    }
}

/// Builds named HTTP backends from `--X NAME=URL` and their per-name option flags.
pub(crate) fn http_backends(
    base: &'static str,
    urls: &[String],
    options: &[(&'static str, &[String])],
) -> Result<Vec<HttpBackendConfig>, ConfigError> {
    let mut backends: BTreeMap<String, HttpBackendConfig> = BTreeMap::new();
    for s in urls {
        let (name, url) = split_named(base, s)?;
        if backends.contains_key(name) {
            return Err(ConfigError::Duplicate {
                flag: base,
                name: name.to_string(),
            });
        }
        backends.insert(
            name.to_string(),
            HttpBackendConfig {
                name: name.to_string(),
                url: url.to_string(),
                ..Default::default()
            },
        );
    }
    for (flag, values) in options {
        for s in *values {
            let (name, value) = split_named(flag, s)?;
            let b = backends
                .get_mut(name)
                .ok_or_else(|| ConfigError::UnknownBackend {
                    flag,
                    base,
                    name: name.to_string(),
                })?;
            if flag.ends_with("bearer-token-file") {
                b.bearer_token_file = Some(value.into());
            } else if flag.ends_with("basic-auth-file") {
                b.basic_auth_file = Some(value.into());
            } else if flag.ends_with("ca-file") {
                b.ca_file = Some(value.into());
            } else if flag.ends_with("header-file") {
                let (h, path) = value.split_once(':').ok_or(ConfigError::Format {
                    flag,
                    expected: "NAME=HEADER:PATH",
                    value: format!("{name}=…"),
                })?;
                b.header_files
                    .push((h.trim().to_string(), path.trim().into()));
            } else if flag.ends_with("header") {
                let (h, v) = value.split_once(':').ok_or(ConfigError::Format {
                    flag,
                    expected: "NAME=HEADER:VALUE",
                    value: format!("{name}=…"),
                })?;
                b.headers.push((h.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    Ok(backends.into_values().collect())
}

/// Settings derived from the flags, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub prometheus: Vec<HttpBackendConfig>,
    pub tempo: Vec<TempoBackendConfig>,
    pub tenant_policy: TenantPolicy,
    /// Per-namespace allowances of backends, raw queries and AWS roles.
    pub policy: NamespacePolicy,
    pub sqs: SqsConfig,
    pub conventions: BTreeMap<String, Convention>,
    pub parse: ParseOptions,
    pub cache_ttl: Duration,
    pub max_stale: Duration,
    pub backend_timeout: Duration,
}

impl BackendArgs {
    /// Checks the backend settings. `otlp_enabled` says whether the embedded store runs.
    pub fn resolve(&self, otlp_enabled: bool) -> Result<Settings, ConfigError> {
        let prometheus = http_backends(
            "prometheus",
            &self.prometheus,
            &[
                (
                    "prometheus-bearer-token-file",
                    &self.prometheus_bearer_token_file,
                ),
                (
                    "prometheus-basic-auth-file",
                    &self.prometheus_basic_auth_file,
                ),
                ("prometheus-header", &self.prometheus_header),
                ("prometheus-header-file", &self.prometheus_header_file),
                ("prometheus-ca-file", &self.prometheus_ca_file),
            ],
        )?;
        let tempo = self.tempo_backends()?;
        let tenant_policy = TenantPolicy::from_flags(&self.tempo_tenant_allow).map_err(|e| {
            ConfigError::Format {
                flag: "tempo-tenant-allow",
                expected: "NAMESPACE=TENANT[,TENANT…]",
                value: e,
            }
        })?;
        let policy = self.namespace_policy()?;
        let mut conventions = builtin_conventions();
        if let Some(path) = &self.conventions_file {
            let err = |reason: String| ConfigError::Conventions {
                path: path.display().to_string(),
                reason,
            };
            let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
            let extra: BTreeMap<String, Convention> =
                serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
            for (name, c) in extra {
                c.validate(&name).map_err(|e| err(e.to_string()))?;
                conventions.insert(name, c);
            }
        }
        let default_source = match self.default_source {
            Some(s @ (SourceKind::Prometheus | SourceKind::Tempo | SourceKind::Otlp)) => s,
            Some(s @ SourceKind::Sqs) => {
                return Err(ConfigError::DefaultSource {
                    kind: s,
                    reason: "sqs only serves queueDepth, which defaults to it anyway".into(),
                })
            }
            None if !prometheus.is_empty() => SourceKind::Prometheus,
            None => SourceKind::Otlp,
        };
        if default_source == SourceKind::Otlp && !otlp_enabled {
            return Err(ConfigError::DefaultSource {
                kind: default_source,
                reason:
                    "the OTLP receiver is disabled (--no-otlp); configure --prometheus or --tempo"
                        .into(),
            });
        }
        positive(&[
            ("cache-ttl", self.cache_ttl),
            ("min-cache-ttl", self.min_cache_ttl),
            ("max-cache-ttl", self.max_cache_ttl),
            ("max-stale", self.max_stale),
            ("backend-timeout", self.backend_timeout),
        ])?;
        if self.min_cache_ttl > self.max_cache_ttl
            || !(self.min_cache_ttl..=self.max_cache_ttl).contains(&self.cache_ttl)
        {
            return Err(ConfigError::Invalid(
                "--cache-ttl must lie between --min-cache-ttl and --max-cache-ttl".into(),
            ));
        }
        if self.max_cache_ttl >= self.max_stale {
            return Err(ConfigError::Invalid(format!(
                "--max-cache-ttl ({}) must be below --max-stale ({}): a backend failing when a TTL ends must find the last good answer still servable",
                humantime::format_duration(self.max_cache_ttl),
                humantime::format_duration(self.max_stale)
            )));
        }
        let nonempty = |s: &Option<String>| {
            s.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Ok(Settings {
            prometheus,
            tempo,
            tenant_policy,
            sqs: SqsConfig {
                endpoint: nonempty(&self.aws_endpoint),
                region: nonempty(&self.aws_region),
            },
            parse: ParseOptions {
                default_source,
                min_cache_ttl: self.min_cache_ttl,
                max_cache_ttl: self.max_cache_ttl,
                metadata_aws_endpoints: self.allow_metadata_aws_endpoint.clone(),
                allow_aws_role_arn: policy.aws_roles.is_restricted(),
                conventions: conventions.keys().cloned().collect(),
            },
            conventions,
            policy,
            cache_ttl: self.cache_ttl,
            max_stale: self.max_stale,
            backend_timeout: self.backend_timeout,
        })
    }
}

impl BackendArgs {
    fn namespace_policy(&self) -> Result<NamespacePolicy, ConfigError> {
        let allowance =
            |flag: &'static str, values: &[String], valid: fn(&str) -> Result<(), String>| {
                Allowance::from_flags(values, valid).map_err(|e| ConfigError::Format {
                    flag,
                    expected: "NAMESPACE=VALUE[,VALUE…]",
                    value: e,
                })
            };
        let backend = |v: &str| {
            if v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !v.is_empty()
            {
                Ok(())
            } else {
                Err(format!("{v:?} is not a backend name"))
            }
        };
        let role = |v: &str| {
            if v.starts_with("arn:") && v.contains(":role/") {
                Ok(())
            } else {
                Err(format!("{v:?} is not an IAM role ARN"))
            }
        };
        for url in &self.allow_metadata_aws_endpoint {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(ConfigError::Format {
                    flag: "allow-metadata-aws-endpoint",
                    expected: "an http(s) URL",
                    value: url.clone(),
                });
            }
        }
        Ok(NamespacePolicy {
            backends: allowance("backend-allow", &self.backend_allow, backend)?,
            raw_queries: allowance("raw-query-allow", &self.raw_query_allow, backend)?,
            aws_roles: allowance("aws-role-allow", &self.aws_role_allow, role)?,
        })
    }

    fn tempo_backends(&self) -> Result<Vec<TempoBackendConfig>, ConfigError> {
        let http = http_backends(
            "tempo",
            &self.tempo,
            &[
                ("tempo-bearer-token-file", &self.tempo_bearer_token_file),
                ("tempo-header", &self.tempo_header),
                ("tempo-header-file", &self.tempo_header_file),
                ("tempo-ca-file", &self.tempo_ca_file),
            ],
        )?;
        let mut backends: Vec<TempoBackendConfig> = http
            .into_iter()
            .map(|http| TempoBackendConfig {
                http,
                ..Default::default()
            })
            .collect();
        let mut find = |flag: &'static str, name: &str| {
            backends
                .iter_mut()
                .position(|b| b.http.name == name)
                .ok_or_else(|| ConfigError::UnknownBackend {
                    flag,
                    base: "tempo",
                    name: name.to_string(),
                })
        };
        let mut tenants = Vec::new();
        for s in &self.tempo_tenant {
            let (name, tenant) = split_named("tempo-tenant", s)?;
            validate_tenant(tenant).map_err(|e| ConfigError::Format {
                flag: "tempo-tenant",
                expected: "NAME=TENANT with a valid Tempo tenant ID",
                value: e,
            })?;
            tenants.push((find("tempo-tenant", name)?, tenant.to_string()));
        }
        let mut apis = Vec::new();
        for s in &self.tempo_api {
            let (name, api) = split_named("tempo-api", s)?;
            let api = TempoApi::parse(api).ok_or(ConfigError::Format {
                flag: "tempo-api",
                expected: "NAME=instant|range",
                value: s.clone(),
            })?;
            apis.push((find("tempo-api", name)?, api));
        }
        for (i, tenant) in tenants {
            backends[i].default_tenant = Some(tenant);
        }
        for (i, api) in apis {
            backends[i].api = api;
        }
        Ok(backends)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(extra: &[&str]) -> ServeArgs {
        let mut argv = vec!["slo-scaler", "serve"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_follow_the_product_spec() {
        let a = args(&[]);
        assert_eq!(a.grpc_addr.port(), 6000);
        assert_eq!(a.admin_addr.port(), 8080);
        assert_eq!(a.otlp.otlp_grpc_addr.port(), 4317);
        assert_eq!(a.otlp.otlp_http_addr.port(), 4318);
        assert_eq!(a.otlp.otlp_max_request_bytes, 4 << 20);
        a.otlp.validate().expect("the default OTLP flags are valid");
        let s = a.backends.resolve(true).unwrap();
        assert_eq!(s.parse.default_source, SourceKind::Otlp);
        let s = args(&[
            "--prometheus",
            "default=http://p:9090",
            "--cache-ttl",
            "500ms",
            "--min-cache-ttl",
            "100ms",
        ])
        .backends
        .resolve(true)
        .unwrap();
        assert_eq!(s.parse.default_source, SourceKind::Prometheus);
        assert_eq!(s.cache_ttl, Duration::from_millis(500));
    }

    #[test]
    fn backend_options_attach_by_name() {
        let s = args(&[
            "--prometheus",
            "default=http://p:9090",
            "--prometheus",
            "thanos=https://t/",
            "--prometheus-bearer-token-file",
            "thanos=/var/run/token",
            "--prometheus-header",
            "thanos=X-Scope-OrgID: team-a",
        ])
        .backends
        .resolve(true)
        .unwrap();
        let thanos = s.prometheus.iter().find(|b| b.name == "thanos").unwrap();
        assert_eq!(thanos.bearer_token_file, Some("/var/run/token".into()));
        assert_eq!(
            thanos.headers,
            vec![("X-Scope-OrgID".into(), "team-a".into())]
        );
    }

    #[test]
    fn header_files_attach_by_name() {
        let s = args(&[
            "--prometheus",
            "default=http://p:9090",
            "--prometheus-header-file",
            "default=X-Api-Key:/var/run/secrets/key",
            "--tempo",
            "t=http://t:3200",
            "--tempo-header-file",
            "t=Authorization: /var/run/secrets/tempo",
        ])
        .backends
        .resolve(true)
        .unwrap();
        assert_eq!(
            s.prometheus[0].header_files,
            vec![("X-Api-Key".into(), "/var/run/secrets/key".into())]
        );
        assert!(s.prometheus[0].headers.is_empty());
        assert_eq!(
            s.tempo[0].http.header_files,
            vec![("Authorization".into(), "/var/run/secrets/tempo".into())]
        );
        let err = args(&[
            "--tempo",
            "t=http://t:3200",
            "--tempo-header-file",
            "t=nopath",
        ])
        .backends
        .resolve(true)
        .unwrap_err();
        assert!(err.to_string().contains("--tempo-header-file"), "{err}");
    }

    #[test]
    fn urls_with_passwords_are_not_echoed() {
        for flag in ["--prometheus", "--tempo"] {
            let err = args(&[flag, "http://user:s3cret@p:9090"])
                .backends
                .resolve(true)
                .unwrap_err()
                .to_string();
            assert!(!err.contains("s3cret"), "{err}");
            assert!(err.contains("http://***@p:9090"), "{err}");
        }
    }

    #[test]
    fn tempo_backends_collect_their_options() {
        let s = args(&[
            "--tempo",
            "default=http://tempo:3200",
            "--tempo-tenant",
            "default=team-a",
            "--tempo-api",
            "default=range",
            "--tempo-tenant-allow",
            "shop=team-a,team-b",
        ])
        .backends
        .resolve(true)
        .unwrap();
        assert_eq!(s.tempo[0].default_tenant.as_deref(), Some("team-a"));
        assert_eq!(s.tempo[0].api, TempoApi::Range);
        assert!(s.tenant_policy.check("shop", Some("team-b")).is_ok());
        assert!(s.tenant_policy.check("other", Some("team-b")).is_err());
    }

    #[test]
    fn zero_durations_and_counts_are_refused_naming_the_flag() {
        for (flags, name) in [
            (&["--stream-interval", "0s"][..], "--stream-interval"),
            (&["--signal-expiry", "0ms"], "--signal-expiry"),
            (&["--shutdown-grace", "0s"], "--shutdown-grace"),
            (&["--max-signals", "0"], "--max-signals"),
        ] {
            let err = args(flags).validate().unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
        let err = args(&["--max-stale", "30s"])
            .backends
            .resolve(true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--max-cache-ttl") && err.contains("--max-stale"),
            "{err}"
        );
        assert!(args(&[]).validate().is_ok());
    }

    #[test]
    fn bad_settings_are_refused() {
        let check = |extra: &[&str]| {
            assert!(args(extra).backends.resolve(true).is_err(), "{extra:?}");
        };
        check(&["--prometheus", "nourl"]);
        check(&["--prometheus", "a=http://x", "--prometheus", "a=http://y"]);
        check(&["--prometheus-bearer-token-file", "missing=/x"]);
        check(&[
            "--prometheus",
            "a=http://x",
            "--prometheus-header",
            "a=novalue",
        ]);
        check(&["--cache-ttl", "10m"]);
        check(&["--cache-ttl", "0s"]);
        check(&["--backend-timeout", "0s"]);
        check(&["--max-stale", "0s"]);
        check(&["--max-cache-ttl", "2m"]);
        check(&["--max-stale", "30s"]);
        check(&["--default-source", "sqs"]);
        check(&["--conventions-file", "/nonexistent/conventions.json"]);
        check(&["--tempo-tenant", "nobackend=team-a"]);
        check(&["--tempo", "t=http://t:3200", "--tempo-api", "t=grpc"]);
        check(&["--tempo", "t=http://t:3200", "--tempo-tenant", "t=.."]);
        check(&["--tempo-tenant-allow", "team-a"]);
        assert!(args(&["--no-otlp"]).backends.resolve(false).is_err());
    }

    #[test]
    fn bad_otlp_flags_are_refused_by_name() {
        let check = |flags: &[&str], flag: &str| {
            let err = args(flags).otlp.validate().expect_err("refused");
            assert!(
                matches!(err, ConfigError::Invalid(ref m) if m.starts_with(&format!("--{flag}: "))),
                "{flags:?}: {err}"
            );
        };
        check(&["--otlp-max-request-bytes", "0"], "otlp-max-request-bytes");
        check(&["--otlp-max-series", "0"], "otlp-max-series");
        check(&["--otlp-max-store-bytes", "0"], "otlp-max-store-bytes");
        check(&["--otlp-bucket-width", "0s"], "otlp-bucket-width");
        check(&["--otlp-retention", "500ms"], "otlp-retention");
        check(&["--otlp-rate-settle", "0s"], "otlp-rate-settle");
        check(&["--otlp-rate-settle", "10m"], "otlp-rate-settle");
        check(
            &["--otlp-max-inflight-bytes", "0"],
            "otlp-max-inflight-bytes",
        );
        check(
            &[
                "--otlp-max-request-bytes",
                "1048576",
                "--otlp-max-inflight-bytes",
                "10485759",
            ],
            "otlp-max-inflight-bytes",
        );
        args(&[
            "--otlp-max-request-bytes",
            "1048576",
            "--otlp-max-inflight-bytes",
            "10485760",
        ])
        .otlp
        .validate()
        .expect("one maximum-size request fits");
    }
}
