//! The engine: metadata → [`Plan`] (no I/O, `plan.rs`), plan → [`Evaluation`] (through
//! the cache, `evaluate.rs`). Shared by the gRPC adapter (`scaler`), `check`, `demo` and the
//! analysis endpoint; none of them builds a query or maps a value itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::cache::{CacheConfig, Refresher, SignalCache, Watch};
use crate::policy::NamespacePolicy;
use crate::signal::promql::{self, Convention};
use crate::signal::slo;
use crate::signal::traceql;
use crate::signal::{capacity, CapacityTarget, TraceMeasure};
use crate::source::tenant::{validate_tenant, TenantPolicies};
use crate::source::{
    OtlpQuery, PromQuery, Query, Reading, SourceError, Sources, SqsQuery, TempoQuery, TempoReduce,
};
use crate::telemetry::Metrics;
use crate::trigger::{
    self, ParseOptions, Problem, PromSpec, Read, SourceKind, TempoSpec, TraceRead, Trigger,
    TriggerError,
};

/// A trigger resolved against the server's configuration: what to ask, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub trigger: Trigger,
    /// The query (for `signal: slo`, the first of its objectives' queries).
    pub query: Query,
    /// `signal: slo`'s queries, each with its objective; `None` for other signals.
    /// Boxed: most plans have none, and the board holds a plan per ScaledObject.
    pub slo: Option<Box<SloQueries>>,
    /// `signal: sloCapacity`'s queries from Prometheus; `None` for other plans (and for
    /// the embedded store, which reads every figure in one pass).
    pub capacity: Option<Box<CapacityPlan>>,
}

impl Plan {
    /// What the plan sends, in one line: for `signal: slo`, each objective's query.
    pub fn describe(&self) -> String {
        match &self.slo {
            Some(slo) => [&slo.latency, &slo.error_rate]
                .into_iter()
                .flatten()
                .map(|(q, _)| Sources::describe(q))
                .collect::<Vec<_>>()
                .join(" | "),
            None => match &self.capacity {
                Some(c) => c
                    .queries
                    .iter()
                    .map(Sources::describe)
                    .collect::<Vec<_>>()
                    .join(" | "),
                None => Sources::describe(&self.query),
            },
        }
    }
}

/// `signal: sloCapacity` from Prometheus: one instant query per figure of
/// [`capacity::Reading`], each fetched and cached like any query, all at once.
#[derive(Debug, Clone, PartialEq)]
pub struct CapacityPlan {
    pub target: CapacityTarget,
    /// In the order of [`promql::CapacityQueries::all`]: concurrency, rate, reference
    /// latency, busiest minute's concurrency, busiest minute's rate, guard latency,
    /// calmest minute's latency, sustained concurrency, sustained rate.
    pub queries: [Query; 9],
}

/// The queries of `signal: slo`, each with its objective: evaluated together, one value.
#[derive(Debug, Clone, PartialEq)]
pub struct SloQueries {
    pub latency: Option<(Query, f64)>,
    pub error_rate: Option<(Query, f64)>,
    /// What is fetched for both: with both objectives a [`Query::Pair`] (fetched together
    /// and cached as one entry, so the two halves describe the same moment), else the one
    /// objective's query.
    pub fetch: Query,
}

/// One evaluated value.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub value: f64,
    pub active: bool,
    /// Age of the backend answer behind the value.
    pub age: Duration,
    /// True when the backend failed and the last good value was served.
    pub stale: bool,
    /// True when the backend had no data and `ignoreNullValues` made the value 0 (only for
    /// signals where 0 is a real reading: `SignalKind::no_data_is_zero`).
    pub no_data: bool,
}

/// Why a trigger cannot be planned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Invalid(#[from] TriggerError),
    #[error("{0}")]
    PermissionDenied(String),
}

/// One metadata problem found while resolving a trigger against the server.
fn problem(key: &str, message: String) -> PlanError {
    PlanError::Invalid(TriggerError {
        problems: vec![Problem {
            key: key.to_string(),
            message,
        }],
    })
}

/// Two results as one: both values, or every metadata problem of both (`InvalidArgument`),
/// or else the first other error.
fn merge<A, B>(a: Result<A, PlanError>, b: Result<B, PlanError>) -> Result<A, PlanError> {
    match (a, b) {
        (Ok(a), Ok(_)) => Ok(a),
        (Err(PlanError::Invalid(mut x)), Err(PlanError::Invalid(y))) => {
            x.problems.extend(y.problems);
            Err(PlanError::Invalid(x))
        }
        (Err(e @ PlanError::Invalid(_)), _) | (_, Err(e @ PlanError::Invalid(_))) => Err(e),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// The one place a query a convention cannot express becomes a problem, named by the key
/// the caller must change. `version_key` is where the caller asked for a version: a
/// trigger's `version` (leave it out, or pick a convention with a version label); the
/// analysis endpoint's `convention` (its versions are required, so only the convention
/// can change).
fn build_problem(e: promql::QueryBuildError, version_key: &str) -> PlanError {
    let key = match e {
        promql::QueryBuildError::NoSpanKind { .. } => "spanKind",
        promql::QueryBuildError::NoVersion { .. } => version_key,
        promql::QueryBuildError::NotServed { .. } => "source",
    };
    problem(key, e.to_string())
}

/// Why a value cannot be given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{metric}: the backend has no data for this query (an error, not 0, for this trigger: see ignoreNullValues)")]
    NoData { metric: Arc<str> },
    #[error("{metric}: the backend answered {value}, which is not a value KEDA can use (it must be finite, not negative and at most 9.2e15: KEDA sends int64(value × 1000))")]
    Unusable { metric: Arc<str>, value: f64 },
    #[error("{metric}: the backend answered a {got} where a {wanted} was expected")]
    WrongShape {
        metric: Arc<str>,
        got: &'static str,
        wanted: &'static str,
    },
}

impl EvalError {
    /// A short, fixed name for each kind of failure (self-traces carry it, never the text).
    pub fn kind(&self) -> &'static str {
        match self {
            EvalError::NoData { .. } => "no_data",
            EvalError::WrongShape { .. } => "wrong_shape",
            EvalError::Unusable { .. } => "unusable_value",
            EvalError::Source(s) => match s {
                SourceError::Timeout { .. } => "timeout",
                SourceError::Connect { .. } => "connect",
                SourceError::Unavailable { .. } => "unavailable",
                SourceError::BadQuery { .. } => "bad_query",
                SourceError::NotFound { .. } => "not_found",
                SourceError::PermissionDenied { .. } => "permission_denied",
                SourceError::BadResponse { .. } => "bad_response",
                SourceError::UnknownBackend { .. } => "unknown_backend",
            },
        }
    }
}

/// Why a `source: otlp` trigger cannot be served by a server without the receiver: the
/// Helm chart turns it off when replicas would each receive a share of the spans.
const RECEIVER_OFF: &str = "source otlp needs the embedded OTLP receiver, which is off on this install (--no-otlp; the Helm chart turns it off when several replicas would each receive only a share of the spans): read source prometheus or tempo, or install with otlp.fanOut=true (every replica receives every span) or replicaCount=1";

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub parse: ParseOptions,
    pub conventions: BTreeMap<String, Convention>,
    /// Which Tempo and Prometheus tenants each namespace may read.
    pub tenant_policy: TenantPolicies,
    /// Which backends, raw queries and AWS roles each namespace may use.
    pub policy: NamespacePolicy,
    pub cache_ttl: Duration,
    pub cache: CacheConfig,
}

pub struct Engine {
    config: EngineConfig,
    sources: Arc<Sources>,
    cache: SignalCache,
    metrics: Arc<Metrics>,
}

impl Engine {
    pub fn new(config: EngineConfig, sources: Sources, metrics: Arc<Metrics>) -> Self {
        let sources = Arc::new(sources);
        // A refresh ahead of the TTL is the same bounded, counted call a miss makes.
        let refresher: Refresher = {
            let sources = Arc::clone(&sources);
            Arc::new(move |query: Query| {
                let sources = Arc::clone(&sources);
                Box::pin(async move { sources.fetch(&query).await })
            })
        };
        Engine {
            cache: SignalCache::new(config.cache, metrics.clone()).with_refresher(refresher),
            config,
            sources,
            metrics,
        }
    }

    /// The signal cache (its gauges are read at scrape time).
    pub fn cache(&self) -> &SignalCache {
        &self.cache
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// The server's default source and the names of its conventions.
    pub fn defaults(&self) -> (SourceKind, Vec<String>) {
        (
            self.config.parse.default_source,
            self.config.conventions.keys().cloned().collect(),
        )
    }
}

mod evaluate;
mod plan;
