//! The embedded OTLP receiver's and trace store's flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{duration_arg, ConfigError};

/// The most buckets a series may hold: `--otlp-retention` / `--otlp-bucket-width` (the
/// store's own bound, named by flag here).
const MAX_BUCKETS: u128 = 100_000;

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
    /// PEM certificate (chain) for both OTLP receivers (TLS). Requires --otlp-tls-key-file.
    #[arg(
        long,
        env = "SLO_SCALER_OTLP_TLS_CERT_FILE",
        requires = "otlp_tls_key_file"
    )]
    pub otlp_tls_cert_file: Option<PathBuf>,
    /// PEM private key for the OTLP receivers.
    #[arg(
        long,
        env = "SLO_SCALER_OTLP_TLS_KEY_FILE",
        requires = "otlp_tls_cert_file"
    )]
    pub otlp_tls_key_file: Option<PathBuf>,
    /// PEM CA bundle: when set, OTLP senders must present a certificate it signed (mTLS).
    #[arg(
        long,
        env = "SLO_SCALER_OTLP_TLS_CLIENT_CA_FILE",
        requires = "otlp_tls_cert_file"
    )]
    pub otlp_tls_client_ca_file: Option<PathBuf>,
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
        let buckets = self
            .otlp_retention
            .as_nanos()
            .div_ceil(self.otlp_bucket_width.as_nanos());
        if self.otlp_retention < self.otlp_bucket_width || buckets > MAX_BUCKETS {
            return bad(
                "otlp-retention",
                format!("must be at least --otlp-bucket-width and at most {MAX_BUCKETS} of them"),
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
