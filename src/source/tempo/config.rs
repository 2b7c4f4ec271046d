//! How the operator configures Tempo backends, and which tenants each namespace may read.

use crate::source::http::HttpBackendConfig;

/// One named Tempo backend (`--tempo NAME=URL` and its options).
#[derive(Debug, Clone, Default)]
pub struct TempoBackendConfig {
    pub http: HttpBackendConfig,
    /// `X-Scope-OrgID` sent when a trigger sets no `tenant`; `None` sends no header
    /// (single-tenant Tempo).
    pub default_tenant: Option<String>,
    pub api: TempoApi,
}

/// Which TraceQL metrics endpoint a backend is asked through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TempoApi {
    /// `GET /api/metrics/query?q=…&since=…` (Tempo 2.6 and later).
    #[default]
    Instant,
    /// `GET /api/metrics/query_range?q=…&start=…&end=…&step=…` over the window, using
    /// each series' latest sample (Tempo 2.4 and 2.5, which have no instant endpoint).
    Range,
}

impl TempoApi {
    /// Parses `instant` or `range` (the flag value).
    pub fn parse(s: &str) -> Option<TempoApi> {
        match s.trim() {
            "instant" => Some(TempoApi::Instant),
            "range" => Some(TempoApi::Range),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_names() {
        assert_eq!(TempoApi::parse("instant"), Some(TempoApi::Instant));
        assert_eq!(TempoApi::parse("range"), Some(TempoApi::Range));
        assert_eq!(TempoApi::parse("Range"), None);
        assert_eq!(TempoApi::default(), TempoApi::Instant);
    }
}
