//! The engine: metadata → [`Plan`] (no I/O), plan → [`Evaluation`] (through the cache).
//!
//! The gRPC adapter in `scaler::service` only translates between protobuf and these
//! calls; `check` and `demo` use the same engine.

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
    /// latency, busiest minute's concurrency, busiest minute's rate, guard latency.
    pub queries: [Query; 6],
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

    /// Parses and resolves a trigger. Never touches a backend.
    pub fn plan(&self, namespace: &str, md: &HashMap<String, String>) -> Result<Plan, PlanError> {
        let trigger = trigger::parse(md, &self.config.parse)?;
        self.check_namespace(namespace, &trigger.read)?;
        let capacity = self.capacity_plan(namespace, &trigger.read)?;
        let query = match &capacity {
            Some(c) => c.queries[0].clone(),
            None => self.build_query(namespace, &trigger.read)?,
        };
        let slo = match trigger.objectives {
            Some(o) => {
                let with = |measure| -> Result<Query, PlanError> {
                    let mut read = trigger.read.clone();
                    if let Some(t) = trace_read_mut(&mut read) {
                        t.measure = measure;
                    }
                    self.build_query(namespace, &read)
                };
                let latency_measure = trace_read_mut(&mut trigger.read.clone())
                    .map_or(TraceMeasure::Latency(crate::signal::Quantile::P95), |t| {
                        t.measure
                    });
                let latency = o
                    .latency
                    .map(|obj| Ok::<_, PlanError>((with(latency_measure)?, obj)))
                    .transpose()?;
                let error_rate = o
                    .error_rate
                    .map(|obj| Ok::<_, PlanError>((with(TraceMeasure::ErrorRatio)?, obj)))
                    .transpose()?;
                let fetch = match (&latency, &error_rate) {
                    (Some((l, _)), Some((e, _))) => Query::Pair(Box::new((l.clone(), e.clone()))),
                    (Some((q, _)), None) | (None, Some((q, _))) => q.clone(),
                    // The parser admits a slo trigger only with an objective.
                    (None, None) => query.clone(),
                };
                Some(Box::new(SloQueries {
                    latency,
                    error_rate,
                    fetch,
                }))
            }
            None => None,
        };
        let query = match slo.as_deref() {
            Some(SloQueries {
                latency: Some((q, _)),
                ..
            })
            | Some(SloQueries {
                latency: None,
                error_rate: Some((q, _)),
                ..
            }) => q.clone(),
            _ => query,
        };
        Ok(Plan {
            trigger,
            query,
            slo,
            capacity,
        })
    }

    /// `signal: sloCapacity` read from Prometheus: its queries ([`promql::capacity`]).
    /// `None` for every other read. Never touches a backend.
    fn capacity_plan(
        &self,
        namespace: &str,
        read: &Read,
    ) -> Result<Option<Box<CapacityPlan>>, PlanError> {
        let Read::Prometheus {
            backend,
            tenant,
            spec:
                PromSpec::Trace {
                    trace:
                        TraceRead {
                            selector,
                            measure: TraceMeasure::Capacity(target),
                            ..
                        },
                    convention,
                },
        } = read
        else {
            return Ok(None);
        };
        self.check_prometheus_backend(backend)
            .map_err(|m| problem("backend", m))?;
        self.check_tenant("prometheus", namespace, tenant.as_ref())?;
        let c = self
            .config
            .conventions
            .get(convention)
            .ok_or_else(|| problem("convention", "unknown convention".into()))?;
        let queries = promql::capacity(convention, c, selector, target.quantile)
            .map_err(|e| build_problem(e, "version"))?;
        let query = |promql: &String| {
            Query::Prometheus(PromQuery {
                backend: backend.clone(),
                tenant: tenant.clone(),
                promql: promql.clone(),
            })
        };
        Ok(Some(Box::new(CapacityPlan {
            target: *target,
            queries: queries.all().map(query),
        })))
    }

    /// The query a read asks, checked against the server's backends and the namespace's
    /// tenants. Never touches a backend.
    fn build_query(&self, namespace: &str, read: &Read) -> Result<Query, PlanError> {
        let query = match read {
            Read::Prometheus {
                backend,
                tenant,
                spec,
            } => {
                self.check_prometheus_backend(backend)
                    .map_err(|m| problem("backend", m))?;
                self.check_tenant("prometheus", namespace, tenant.as_ref())?;
                let promql = match spec {
                    PromSpec::Trace { trace, convention } => {
                        let c =
                            self.config.conventions.get(convention).ok_or_else(|| {
                                problem("convention", "unknown convention".into())
                            })?;
                        promql::build(convention, c, &trace.selector, trace.measure, trace.window)
                            .map_err(|e| build_problem(e, "version"))?
                    }
                    PromSpec::Raw(q) => q.clone(),
                };
                Query::Prometheus(PromQuery {
                    backend: backend.clone(),
                    tenant: tenant.clone(),
                    promql,
                })
            }
            // The parser has already refused `awsRoleArn` / `awsEndpoint` unless allowed.
            Read::Sqs(spec) => Query::Sqs(SqsQuery {
                queue: spec.queue.clone(),
                region: spec.region.clone(),
                role_arn: spec.role_arn.clone(),
                endpoint: spec.endpoint.clone(),
            }),
            Read::Tempo {
                backend,
                tenant,
                spec,
            } => {
                let (traceql, reduce, since) = match spec {
                    TempoSpec::Trace(t) => {
                        let (q, reduce) = traceql::build(&t.selector, t.measure)
                            .map_err(|m| problem("labels", m))?;
                        (q, reduce, t.window)
                    }
                    TempoSpec::Raw { query, window } => {
                        (query.clone(), TempoReduce::Single, *window)
                    }
                };
                self.tempo_query(namespace, backend, tenant.as_ref(), traceql, reduce, since)?
            }
            Read::Otlp(_) if self.sources.otlp.is_none() => {
                return Err(problem("source", RECEIVER_OFF.into()))
            }
            Read::Otlp(t) => Query::Otlp(OtlpQuery {
                selector: t.selector.clone(),
                measure: t.measure,
                window: t.window,
            }),
        };
        Ok(query)
    }

    /// The namespace's allowances: backends, raw queries, AWS roles.
    fn check_namespace(&self, namespace: &str, read: &Read) -> Result<(), PlanError> {
        let p = &self.config.policy;
        let denied = |what: String| {
            Err(PlanError::PermissionDenied(format!(
                "namespace {namespace:?} may not use {what}"
            )))
        };
        match read {
            Read::Prometheus { backend, spec, .. } => {
                let kind = "prometheus";
                if !p.backends.allows(namespace, backend) {
                    return denied(format!("{kind} backend {backend:?}"));
                }
                if matches!(spec, PromSpec::Raw(_)) && !p.raw_queries.allows(namespace, backend) {
                    return denied(format!("raw queries on {kind} backend {backend:?}"));
                }
            }
            Read::Tempo { backend, spec, .. } => {
                let kind = "tempo";
                if !p.backends.allows(namespace, backend) {
                    return denied(format!("{kind} backend {backend:?}"));
                }
                if matches!(spec, TempoSpec::Raw { .. })
                    && !p.raw_queries.allows(namespace, backend)
                {
                    return denied(format!("raw queries on {kind} backend {backend:?}"));
                }
            }
            Read::Sqs(q) => {
                if let Some(arn) = &q.role_arn {
                    if !p.aws_roles.allows(namespace, arn) {
                        return denied(format!("AWS role {arn:?}"));
                    }
                }
            }
            Read::Otlp(_) => {}
        }
        Ok(())
    }

    fn check_prometheus_backend(&self, name: &str) -> Result<(), String> {
        if self.sources.prometheus.has_backend(name) {
            return Ok(());
        }
        let names = self.sources.prometheus.backend_names();
        Err(if names.is_empty() {
            "no Prometheus backend is configured on the server (--prometheus NAME=URL)".into()
        } else {
            format!(
                "no Prometheus backend named {name:?} is configured (configured: {})",
                names.join(", ")
            )
        })
    }

    /// Checks a trigger's tenant for a `kind` backend: a valid ID, allowed to `namespace`.
    fn check_tenant(
        &self,
        kind: &'static str,
        namespace: &str,
        tenant: Option<&String>,
    ) -> Result<(), PlanError> {
        if let Some(tenant) = tenant {
            validate_tenant(tenant).map_err(|m| problem("tenant", m))?;
        }
        let policy = match kind {
            "tempo" => &self.config.tenant_policy.tempo,
            _ => &self.config.tenant_policy.prometheus,
        };
        policy
            .check(kind, namespace, tenant.map(String::as_str))
            .map_err(|e| PlanError::PermissionDenied(e.to_string()))
    }

    /// Checks the Tempo backend and tenant (the namespace's policy) and builds the query.
    fn tempo_query(
        &self,
        namespace: &str,
        backend: &str,
        tenant: Option<&String>,
        traceql: String,
        reduce: TempoReduce,
        since: Duration,
    ) -> Result<Query, PlanError> {
        if !self.sources.tempo.has_backend(backend) {
            return Err(problem(
                "backend",
                format!(
                    "no Tempo backend named {backend:?} is configured on the server (--tempo NAME=URL)"
                ),
            ));
        }
        self.check_tenant("tempo", namespace, tenant)?;
        Ok(Query::Tempo(TempoQuery {
            backend: backend.to_string(),
            tenant: tenant.cloned(),
            traceql,
            since,
            reduce,
        }))
    }

    /// Resolves one trace measure read from `source` (otlp, prometheus or tempo) into its
    /// query, without a namespace's allowances: for callers like the analysis endpoint,
    /// which name backends only by their configured name. Never touches a backend.
    pub fn trace_query(
        &self,
        source: SourceKind,
        backend: &str,
        convention: &str,
        read: &TraceRead,
    ) -> Result<Query, PlanError> {
        match source {
            SourceKind::Otlp if self.sources.otlp.is_none() => {
                Err(problem("source", RECEIVER_OFF.into()))
            }
            SourceKind::Otlp => Ok(Query::Otlp(OtlpQuery {
                selector: read.selector.clone(),
                measure: read.measure,
                window: read.window,
            })),
            SourceKind::Prometheus => {
                self.check_prometheus_backend(backend)
                    .map_err(|m| problem("backend", m))?;
                let c = self
                    .config
                    .conventions
                    .get(convention)
                    .ok_or_else(|| problem("convention", "unknown convention".into()))?;
                let promql =
                    promql::build(convention, c, &read.selector, read.measure, read.window)
                        .map_err(|e| build_problem(e, "convention"))?;
                Ok(Query::Prometheus(PromQuery {
                    backend: backend.to_string(),
                    tenant: None,
                    promql,
                }))
            }
            SourceKind::Tempo => {
                if !self.sources.tempo.has_backend(backend) {
                    return Err(problem(
                        "backend",
                        format!("no Tempo backend named {backend:?} is configured on the server (--tempo NAME=URL)"),
                    ));
                }
                let (traceql, reduce) = traceql::build(&read.selector, read.measure)
                    .map_err(|m| problem("labels", m))?;
                Ok(Query::Tempo(TempoQuery {
                    backend: backend.to_string(),
                    tenant: None,
                    traceql,
                    since: read.window,
                    reduce,
                }))
            }
            SourceKind::Sqs => Err(problem("source", "source sqs has no trace measures".into())),
        }
    }

    /// The server's default source and the names of its conventions.
    pub fn defaults(&self) -> (SourceKind, Vec<String>) {
        (
            self.config.parse.default_source,
            self.config.conventions.keys().cloned().collect(),
        )
    }

    /// Reads one number through the cache (the server's TTL; for the embedded store at
    /// most one bucket). `Ok(None)` is no data; a negative or infinite answer is refused.
    pub async fn read_value(&self, query: &Query) -> Result<Option<f64>, EvalError> {
        let mut ttl = self.config.cache_ttl;
        if let (Query::Otlp(_), Some(store)) = (query, &self.sources.otlp) {
            ttl = ttl.min(store.bucket_width());
        }
        let served = self
            .cache
            .get(query, ttl, || self.sources.fetch(query))
            .await?;
        match served.reading {
            Reading::Value(v) => match usable(v) {
                Usable::Value(v) => Ok(Some(v)),
                Usable::NoData => Ok(None),
                Usable::Refused(value) => Err(EvalError::Unusable {
                    metric: query.backend_label().into(),
                    value,
                }),
            },
            other => Err(EvalError::WrongShape {
                metric: query.backend_label().into(),
                got: other.shape(),
                wanted: "number",
            }),
        }
    }

    /// The TTL the cache serves this plan's answers with (an evaluation's value may be
    /// served again while its answer is younger and the cache still holds it: see `Watch`).
    pub fn answer_ttl(&self, plan: &Plan) -> Duration {
        let ttl = plan.trigger.cache_ttl.unwrap_or(self.config.cache_ttl);
        match (&plan.query, &self.sources.otlp) {
            // The embedded store is local and cheap to read: cache only within one of its
            // buckets, so a spike reaches KEDA within one bucket width whatever the TTL.
            (Query::Otlp(_), Some(store)) => ttl.min(store.bucket_width()),
            _ => ttl,
        }
    }

    /// Reads the plan's value (from the cache, or straight from the embedded store).
    pub async fn evaluate(&self, plan: &Plan) -> Result<Evaluation, EvalError> {
        self.evaluate_watched(plan).await.0
    }

    /// [`Engine::evaluate`], and what the cache served it from (`None` when the value was
    /// not read through the cache: `signal: slo` over the embedded store).
    pub async fn evaluate_watched(
        &self,
        plan: &Plan,
    ) -> (Result<Evaluation, EvalError>, Option<Watch>) {
        let mut watch = None;
        let result = self.evaluate_into(plan, &mut watch).await;
        (result, watch)
    }

    async fn evaluate_into(
        &self,
        plan: &Plan,
        watch: &mut Option<Watch>,
    ) -> Result<Evaluation, EvalError> {
        let ttl = self.answer_ttl(plan);
        if let Some(slo) = &plan.slo {
            return self.evaluate_slo(plan, slo, ttl, watch).await;
        }
        if let Some(capacity) = &plan.capacity {
            return self.evaluate_capacity(plan, capacity, ttl).await;
        }
        let (served, watched) = self
            .cache
            .get_watched(&plan.query, ttl, || self.sources.fetch(&plan.query))
            .await;
        *watch = Some(watched);
        let served = served?;
        let t = &plan.trigger;
        let value = match (&served.reading, &t.read) {
            (Reading::Value(v), _) => usable(*v),
            // The counts are untrusted: their sum goes through the same rule.
            (Reading::Queue(depth), Read::Sqs(spec)) => usable(Some(
                depth.total(spec.scale_on_in_flight, spec.scale_on_delayed) as f64,
            )),
            (other, _) => {
                return Err(EvalError::WrongShape {
                    metric: t.metric_name.clone(),
                    got: other.shape(),
                    wanted: "number",
                })
            }
        };
        let (value, no_data) = match value {
            Usable::Value(v) => (v, false),
            Usable::NoData if t.ignore_null_values => (0.0, true),
            Usable::NoData => {
                return Err(EvalError::NoData {
                    metric: t.metric_name.clone(),
                })
            }
            Usable::Refused(value) => {
                return Err(EvalError::Unusable {
                    metric: t.metric_name.clone(),
                    value,
                })
            }
        };
        Ok(Evaluation {
            value,
            active: value > t.activation,
            age: served.age,
            stale: served.stale,
            no_data,
        })
    }

    /// `signal: slo`: both objectives read from one snapshot of the embedded store (one
    /// pass, so both ratios describe the same spans), or, from a remote backend, the plan's
    /// one fetch (both queries as one cache entry); then [`slo::slo_ratio`]. A backend
    /// failure, an unusable number or an objective without data fails the whole value.
    async fn evaluate_slo(
        &self,
        plan: &Plan,
        slo: &SloQueries,
        ttl: Duration,
        watch: &mut Option<Watch>,
    ) -> Result<Evaluation, EvalError> {
        let t = &plan.trigger;
        let (latency, errors, age, stale) = match (&plan.query, &self.sources.otlp) {
            (Query::Otlp(q), Some(_)) => {
                // Local and cheap, like a single read of the store (whose cache lasts at
                // most one bucket): no cache, one snapshot.
                let snapshot = self.sources.otlp_snapshot(&q.selector, q.window)?;
                let value = |q: Option<&(Query, f64)>| -> Result<Option<Reading>, EvalError> {
                    match q {
                        Some((Query::Otlp(q), _)) => {
                            Ok(Some(Reading::Value(snapshot.value(q.measure)?)))
                        }
                        Some((other, _)) => Err(EvalError::Source(SourceError::BadQuery {
                            backend: other.backend_label(),
                            detail: "signal slo reads every objective from one source".into(),
                        })),
                        None => Ok(None),
                    }
                };
                (
                    value(slo.latency.as_ref())?,
                    value(slo.error_rate.as_ref())?,
                    Duration::ZERO,
                    false,
                )
            }
            _ => {
                let (served, watched) = self
                    .cache
                    .get_watched(&slo.fetch, ttl, || self.sources.fetch(&slo.fetch))
                    .await;
                *watch = Some(watched);
                let served = served?;
                let (latency, errors) = match (served.reading, &slo.latency, &slo.error_rate) {
                    (Reading::Pair(pair), Some(_), Some(_)) => {
                        let (latency, errors) = *pair;
                        (Some(latency), Some(errors))
                    }
                    (reading, Some(_), None) => (Some(reading), None),
                    (reading, None, Some(_)) => (None, Some(reading)),
                    (reading, ..) => {
                        return Err(EvalError::WrongShape {
                            metric: t.metric_name.clone(),
                            got: reading.shape(),
                            wanted: "pair of answers",
                        })
                    }
                };
                (latency, errors, served.age, served.stale)
            }
        };
        let number = |reading: &Option<Reading>| -> Result<Option<f64>, EvalError> {
            match reading {
                None => Ok(None),
                Some(Reading::Value(v)) => match usable(*v) {
                    Usable::Value(v) => Ok(Some(v)),
                    Usable::NoData => Ok(None),
                    Usable::Refused(value) => Err(EvalError::Unusable {
                        metric: t.metric_name.clone(),
                        value,
                    }),
                },
                Some(other) => Err(EvalError::WrongShape {
                    metric: t.metric_name.clone(),
                    got: other.shape(),
                    wanted: "number",
                }),
            }
        };
        let objectives = slo::Objectives {
            latency_s: slo.latency.as_ref().map(|(_, o)| *o),
            error_rate: slo.error_rate.as_ref().map(|(_, o)| *o),
        };
        let observed = slo::Observed {
            latency_s: number(&latency)?,
            error_rate: number(&errors)?,
        };
        let (value, no_data) = match slo::slo_ratio(objectives, observed) {
            // A ratio over a tiny objective can leave KEDA's range: the same rule.
            Ok(v) => match usable(Some(v)) {
                Usable::Value(v) => (v, false),
                Usable::NoData | Usable::Refused(_) => {
                    return Err(EvalError::Unusable {
                        metric: t.metric_name.clone(),
                        value: v,
                    })
                }
            },
            // An objective without its reading: no data, never a ratio of the other half.
            Err(slo::SloError::NoData { .. }) if t.ignore_null_values => (0.0, true),
            Err(slo::SloError::NoData { .. }) => {
                return Err(EvalError::NoData {
                    metric: t.metric_name.clone(),
                })
            }
            Err(slo::SloError::BadObservation { value, .. }) => {
                return Err(EvalError::Unusable {
                    metric: t.metric_name.clone(),
                    value,
                })
            }
            // The parser admits only objectives above zero, at least one.
            Err(e @ (slo::SloError::NoObjective | slo::SloError::BadObjective { .. })) => {
                return Err(EvalError::Source(SourceError::BadQuery {
                    backend: plan.query.backend_label(),
                    detail: e.to_string(),
                }))
            }
        };
        Ok(Evaluation {
            value,
            active: value > t.activation,
            age,
            stale,
            no_data,
        })
    }
}

impl Engine {
    /// `signal: sloCapacity` from Prometheus: every figure's query at once, each through
    /// the cache (bounded and counted like any fetch), then [`capacity::pods_needed`] —
    /// the function the embedded store's value comes from, with the same rules:
    ///
    /// - a query that fails (past what the cache may serve stale) fails the value: never
    ///   a value from some of the figures;
    /// - no spans in the long window (no series, NaN, or a rate of 0), or no latency over
    ///   the guard window, is no data;
    /// - a history without a minute with spans (no series or NaN) is no reference
    ///   latency, and a busiest minute of 0.
    ///
    /// The figures are cached apart, so the value has no single cache entry to watch.
    async fn evaluate_capacity(
        &self,
        plan: &Plan,
        cap: &CapacityPlan,
        ttl: Duration,
    ) -> Result<Evaluation, EvalError> {
        let t = &plan.trigger;
        let read = |q: &'_ Query| {
            let q = q.clone();
            async move { self.cache.get(&q, ttl, || self.sources.fetch(&q)).await }
        };
        let [a, b, c, d, e, f] = &cap.queries;
        let answers = tokio::join!(read(a), read(b), read(c), read(d), read(e), read(f));
        let answers = [
            answers.0?, answers.1?, answers.2?, answers.3?, answers.4?, answers.5?,
        ];
        let age = answers.iter().map(|s| s.age).max().unwrap_or_default();
        let stale = answers.iter().any(|s| s.stale);
        let mut figures = [None; 6];
        for (figure, served) in figures.iter_mut().zip(&answers) {
            *figure = match &served.reading {
                Reading::Value(v) => match usable(*v) {
                    Usable::Value(v) => Some(v),
                    Usable::NoData => None,
                    Usable::Refused(value) => {
                        return Err(EvalError::Unusable {
                            metric: t.metric_name.clone(),
                            value,
                        })
                    }
                },
                other => {
                    return Err(EvalError::WrongShape {
                        metric: t.metric_name.clone(),
                        got: other.shape(),
                        wanted: "number",
                    })
                }
            };
        }
        let [concurrency, rate, reference_latency, peak_concurrency, peak_rate, latency] = figures;
        let history = capacity::History {
            reference_latency_s: reference_latency,
            peak_concurrency: peak_concurrency.unwrap_or(0.0),
            peak_rate: peak_rate.unwrap_or(0.0),
        };
        let reading = match (concurrency, rate, latency) {
            (Some(concurrency), Some(rate), Some(latency_s)) if rate > 0.0 => {
                Some(history.reading(concurrency, rate, latency_s))
            }
            _ => None,
        };
        let (value, no_data) = match reading {
            Some(r) => {
                let v = capacity::pods_needed(cap.target.target(), r);
                match usable(Some(v)) {
                    Usable::Value(v) => (v, false),
                    Usable::NoData | Usable::Refused(_) => {
                        return Err(EvalError::Unusable {
                            metric: t.metric_name.clone(),
                            value: v,
                        })
                    }
                }
            }
            // The parser refuses ignoreNullValues for sloCapacity; the rule is kept whole.
            None if t.ignore_null_values => (0.0, true),
            None => {
                return Err(EvalError::NoData {
                    metric: t.metric_name.clone(),
                })
            }
        };
        Ok(Evaluation {
            value,
            active: value > t.activation,
            age,
            stale,
            no_data,
        })
    }
}

/// The trace measure a read asks, if it is one (on a read of its own to change).
fn trace_read_mut(read: &mut Read) -> Option<&mut TraceRead> {
    match read {
        Read::Otlp(t)
        | Read::Prometheus {
            spec: PromSpec::Trace { trace: t, .. },
            ..
        }
        | Read::Tempo {
            spec: TempoSpec::Trace(t),
            ..
        } => Some(t),
        _ => None,
    }
}

/// What a backend's number means for KEDA.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Usable {
    Value(f64),
    /// No data: an empty answer or NaN (KEDA's prometheus scaler treats NaN the same way).
    NoData,
    /// A number KEDA would turn into a scale-in: negative or infinite.
    Refused(f64),
}

/// The one rule for values: what reaches KEDA is finite, not negative and within KEDA's
/// range. KEDA reads `metricValueFloat` only when it is > 0 and converts with Go's
/// `int64(v*1000)` ([`crate::signal::fits_keda`]), so a negative number, NaN, ±Inf or a
/// number past about 9.22e15 would all scale the workload in.
fn usable(v: Option<f64>) -> Usable {
    match v {
        None => Usable::NoData,
        Some(v) if v.is_nan() => Usable::NoData,
        Some(v) if v < 0.0 || !crate::signal::fits_keda(v) => Usable::Refused(v),
        // -0.0 is 0.
        Some(0.0) => Usable::Value(0.0),
        Some(v) => Usable::Value(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_finite_non_negative_values_reach_keda() {
        let cases: &[(Option<f64>, Usable)] = &[
            (Some(0.25), Usable::Value(0.25)),
            (Some(0.0), Usable::Value(0.0)),
            (Some(-0.0), Usable::Value(0.0)),
            // KEDA makes `int64(v * 1000)`: the milli-value must fit an int64.
            (Some(9e15), Usable::Value(9e15)),
            (Some(9.3e15), Usable::Refused(9.3e15)),
            (Some(1e300), Usable::Refused(1e300)),
            (Some(f64::MAX), Usable::Refused(f64::MAX)),
            (None, Usable::NoData),
            (Some(f64::NAN), Usable::NoData),
            (Some(-3.0), Usable::Refused(-3.0)),
            (Some(-1e-9), Usable::Refused(-1e-9)),
            (Some(f64::INFINITY), Usable::Refused(f64::INFINITY)),
            (Some(f64::NEG_INFINITY), Usable::Refused(f64::NEG_INFINITY)),
        ];
        for (input, want) in cases {
            let got = usable(*input);
            assert_eq!(got, *want, "{input:?}");
            if let Usable::Value(v) = got {
                assert!(v.is_sign_positive() && v.is_finite(), "{input:?}");
            }
        }
    }
}
