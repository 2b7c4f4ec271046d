//! Turns the backend flags into checked [`Settings`], naming the first bad flag.

use std::collections::BTreeMap;

use super::{positive, BackendArgs, ConfigError, Settings, CACHE_ENTRIES_LIMIT};
use crate::policy::{Allowance, NamespacePolicy};
use crate::signal::promql::{builtin_conventions, Convention};
use crate::source::http::{redact_url, HttpBackendConfig};
use crate::source::prometheus::PrometheusBackendConfig;
use crate::source::sqs::SqsConfig;
use crate::source::tempo::{validate_tenant, TempoApi, TempoBackendConfig, TenantPolicy};
use crate::source::tenant::TenantPolicies;
use crate::trigger::{is_aws_region, ParseOptions, SourceKind};

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
        let prometheus = self.prometheus_options(prometheus)?;
        let tempo = self.tempo_backends()?;
        let allow = |flag: &'static str, values: &[String]| {
            TenantPolicy::from_flags(values).map_err(|e| ConfigError::Format {
                flag,
                expected: "NAMESPACE=TENANT[,TENANT…]",
                value: e,
            })
        };
        let tenant_policy = TenantPolicies {
            tempo: allow("tempo-tenant-allow", &self.tempo_tenant_allow)?,
            prometheus: allow("prometheus-tenant-allow", &self.prometheus_tenant_allow)?,
        };
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
        let unusable = match default_source {
            SourceKind::Otlp if !otlp_enabled => {
                Some("the OTLP receiver is disabled (--no-otlp); configure --prometheus or --tempo")
            }
            SourceKind::Prometheus if prometheus.is_empty() => {
                Some("no Prometheus backend is configured (--prometheus NAME=URL)")
            }
            SourceKind::Tempo if tempo.is_empty() => {
                Some("no Tempo backend is configured (--tempo NAME=URL)")
            }
            _ => None,
        };
        if let Some(reason) = unusable {
            return Err(ConfigError::DefaultSource {
                kind: default_source,
                reason: reason.into(),
            });
        }
        positive(&[
            ("cache-ttl", self.cache_ttl),
            ("min-cache-ttl", self.min_cache_ttl),
            ("max-cache-ttl", self.max_cache_ttl),
            ("max-stale", self.max_stale),
            ("backend-timeout", self.backend_timeout),
        ])?;
        for (flag, n) in [
            ("cache-max-entries", self.cache_max_entries),
            ("cache-max-bytes", self.cache_max_bytes),
        ] {
            if n == 0 {
                return Err(ConfigError::Invalid(format!(
                    "--{flag} must be more than 0"
                )));
            }
        }
        if self.cache_max_entries > CACHE_ENTRIES_LIMIT {
            return Err(ConfigError::Invalid(format!(
                "--cache-max-entries must be at most {CACHE_ENTRIES_LIMIT}, got {}",
                self.cache_max_entries
            )));
        }
        if self.cache_max_bytes > u64::from(u32::MAX).saturating_mul(self.cache_max_entries) {
            return Err(ConfigError::Invalid(format!(
                "--cache-max-bytes ({}) must be at most 4 GiB × --cache-max-entries ({})",
                self.cache_max_bytes, self.cache_max_entries
            )));
        }
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
            cache_max_entries: self.cache_max_entries,
            cache_max_bytes: self.cache_max_bytes,
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

    /// The Prometheus-only options (`--prometheus-sigv4`, `--prometheus-tenant`) on top of
    /// the HTTP ones.
    fn prometheus_options(
        &self,
        http: Vec<HttpBackendConfig>,
    ) -> Result<Vec<PrometheusBackendConfig>, ConfigError> {
        let mut backends: Vec<PrometheusBackendConfig> = http
            .into_iter()
            .map(|http| PrometheusBackendConfig {
                http,
                ..Default::default()
            })
            .collect();
        for s in &self.prometheus_sigv4 {
            let (name, region) = split_named("prometheus-sigv4", s)?;
            if !is_aws_region(region) {
                return Err(ConfigError::Format {
                    flag: "prometheus-sigv4",
                    expected: "NAME=REGION with an AWS region such as us-east-1",
                    value: s.clone(),
                });
            }
            let b = backends
                .iter_mut()
                .find(|b| b.http.name == name)
                .ok_or_else(|| ConfigError::UnknownBackend {
                    flag: "prometheus-sigv4",
                    base: "prometheus",
                    name: name.to_string(),
                })?;
            if b.http.bearer_token_file.is_some() || b.http.basic_auth_file.is_some() {
                return Err(ConfigError::Invalid(format!(
                    "--prometheus-sigv4 {name}=…: backend {name:?} also has a bearer token or basic auth file, and both would set Authorization"
                )));
            }
            b.sigv4_region = Some(region.to_string());
        }
        for s in &self.prometheus_tenant {
            let (name, tenant) = split_named("prometheus-tenant", s)?;
            validate_tenant(tenant).map_err(|e| ConfigError::Format {
                flag: "prometheus-tenant",
                expected: "NAME=TENANT with a valid tenant ID",
                value: e,
            })?;
            let b = backends
                .iter_mut()
                .find(|b| b.http.name == name)
                .ok_or_else(|| ConfigError::UnknownBackend {
                    flag: "prometheus-tenant",
                    base: "prometheus",
                    name: name.to_string(),
                })?;
            b.default_tenant = Some(tenant.to_string());
        }
        Ok(backends)
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
