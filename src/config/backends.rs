//! The backend, cache and namespace-policy flags, shared by `serve` and `check`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{duration_arg, source_arg};
use crate::trigger::SourceKind;

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
    /// NAME=REGION: sign that Prometheus backend's requests with AWS SigV4 for service
    /// `aps` (Amazon Managed Service for Prometheus), credentials from the AWS default chain.
    #[arg(
        long = "prometheus-sigv4",
        env = "SLO_SCALER_PROMETHEUS_SIGV4",
        value_delimiter = ','
    )]
    pub prometheus_sigv4: Vec<String>,
    /// NAME=TENANT: the default X-Scope-OrgID for that Prometheus backend (Mimir, Cortex,
    /// Thanos receive); a trigger's `tenant` overrides it.
    #[arg(
        long = "prometheus-tenant",
        env = "SLO_SCALER_PROMETHEUS_TENANT",
        value_delimiter = ','
    )]
    pub prometheus_tenant: Vec<String>,
    /// NAMESPACE=TENANT[,TENANT…]: which Prometheus tenants a namespace may read
    /// (repeatable; `*` for every namespace). With none set, every tenant is allowed.
    #[arg(
        long = "prometheus-tenant-allow",
        env = "SLO_SCALER_PROMETHEUS_TENANT_ALLOW"
    )]
    pub prometheus_tenant_allow: Vec<String>,
    /// JSON file adding or overriding Prometheus naming conventions (see docs/prometheus-conventions.md).
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
    /// Most distinct queries the signal cache holds (each backend query, raw or built
    /// from a trigger's keys, is one entry); past it the least used are dropped and counted.
    #[arg(long, env = "SLO_SCALER_CACHE_MAX_ENTRIES", default_value_t = 100_000)]
    pub cache_max_entries: u64,
    /// Bytes the signal cache may hold: each entry weighs its query's text plus its answer
    /// (at least --cache-max-bytes / --cache-max-entries); past it the least used are
    /// dropped and counted.
    #[arg(long, env = "SLO_SCALER_CACHE_MAX_BYTES", default_value_t = 64 << 20)]
    pub cache_max_bytes: u64,
    /// Hard limit on every backend call.
    #[arg(long, env = "SLO_SCALER_BACKEND_TIMEOUT", value_parser = duration_arg, default_value = "5s")]
    pub backend_timeout: Duration,
}
