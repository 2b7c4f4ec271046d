//! Metadata → [`Plan`]: parse, resolve against the server's backends, conventions and the
//! namespace's allowances, build the query. Never touches a backend.

use super::evaluate::trace_read_mut;
use super::*;

impl Engine {
    /// Parses and resolves a trigger. Never touches a backend. The problems found against
    /// the server (an unknown `backend`) come back with the metadata's own, all at once.
    pub fn plan(&self, namespace: &str, md: &HashMap<String, String>) -> Result<Plan, PlanError> {
        let trigger = match trigger::parse(md, &self.config.parse) {
            Ok(t) => t,
            Err(mut e) => {
                if let Err(PlanError::Invalid(b)) = self.unparsed_backend(md, &e) {
                    e.problems.extend(b.problems);
                }
                return Err(e.into());
            }
        };
        self.check_namespace(namespace, &trigger.read)?;
        let backend = match &trigger.read {
            Read::Prometheus { backend, .. } => self.check_prometheus_backend(backend),
            Read::Tempo { backend, .. } => self.check_tempo_backend(backend),
            Read::Otlp(_) | Read::Sqs(_) => Ok(()),
        };
        merge(self.resolve(namespace, trigger), backend)
    }

    /// The backend problem of metadata the parser refused, so that it is named beside the
    /// others: the source the metadata names (or the default), the backend it names (or
    /// `default`). Nothing when the parser already named `backend` or `source`.
    fn unparsed_backend(
        &self,
        md: &HashMap<String, String>,
        e: &trigger::TriggerError,
    ) -> Result<(), PlanError> {
        if e.problems
            .iter()
            .any(|p| p.key == "backend" || p.key == "source")
        {
            return Ok(());
        }
        let source = match (md.get("source"), md.get("signal").map(String::as_str)) {
            (Some(s), _) => SourceKind::parse(s),
            (None, Some("queueDepth")) => Some(SourceKind::Sqs),
            (None, _) => Some(self.config.parse.default_source),
        };
        let backend = md.get("backend").map_or("default", String::as_str);
        match source {
            Some(SourceKind::Prometheus) => self.check_prometheus_backend(backend),
            Some(SourceKind::Tempo) => self.check_tempo_backend(backend),
            _ => Ok(()),
        }
    }

    /// Everything after the namespace's allowances, backends aside (checked by the caller).
    fn resolve(&self, namespace: &str, trigger: trigger::Trigger) -> Result<Plan, PlanError> {
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
        self.check_tenant("prometheus", namespace, tenant.as_ref())?;
        let c = self.convention(convention)?;
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
                self.check_tenant("prometheus", namespace, tenant.as_ref())?;
                let promql = match spec {
                    PromSpec::Trace { trace, convention } => {
                        self.trace_promql(convention, trace, "version")?
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
                in_flight: spec.scale_on_in_flight,
                delayed: spec.scale_on_delayed,
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
            Read::Otlp(t) => self.otlp_query(t)?,
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

    /// `backend` names a Prometheus backend configured on the server.
    fn check_prometheus_backend(&self, name: &str) -> Result<(), PlanError> {
        if self.sources.prometheus.has_backend(name) {
            return Ok(());
        }
        let names = self.sources.prometheus.backend_names();
        Err(problem(
            "backend",
            if names.is_empty() {
                "no Prometheus backend is configured on the server (--prometheus NAME=URL)".into()
            } else {
                format!(
                    "no Prometheus backend named {name:?} is configured (configured: {})",
                    names.join(", ")
                )
            },
        ))
    }

    /// `backend` names a Tempo backend configured on the server.
    fn check_tempo_backend(&self, name: &str) -> Result<(), PlanError> {
        if self.sources.tempo.has_backend(name) {
            return Ok(());
        }
        Err(problem(
            "backend",
            format!(
                "no Tempo backend named {name:?} is configured on the server (--tempo NAME=URL)"
            ),
        ))
    }

    /// The embedded store's query for a trace read; refused while the receiver is off.
    fn otlp_query(&self, read: &TraceRead) -> Result<Query, PlanError> {
        let Some(store) = &self.sources.otlp else {
            return Err(problem("source", RECEIVER_OFF.into()));
        };
        // sloCapacity reads windows of its own, bounded by the retention when read.
        if !matches!(read.measure, TraceMeasure::Capacity(_)) && read.window > store.retention() {
            return Err(problem(
                "window",
                format!(
                    "must be at most the embedded store's retention {} (--otlp-retention), got {}",
                    humantime::format_duration(store.retention()),
                    humantime::format_duration(read.window)
                ),
            ));
        }
        Ok(Query::Otlp(OtlpQuery {
            selector: read.selector.clone(),
            measure: read.measure,
            window: read.window,
        }))
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
            SourceKind::Otlp => self.otlp_query(read),
            SourceKind::Prometheus => {
                self.check_prometheus_backend(backend)?;
                let promql = self.trace_promql(convention, read, "convention")?;
                Ok(Query::Prometheus(PromQuery {
                    backend: backend.to_string(),
                    tenant: None,
                    promql,
                }))
            }
            SourceKind::Tempo => {
                self.check_tempo_backend(backend)?;
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

    /// A convention by name, known to the server.
    fn convention(&self, name: &str) -> Result<&Convention, PlanError> {
        self.config
            .conventions
            .get(name)
            .ok_or_else(|| problem("convention", "unknown convention".into()))
    }

    /// The one Prometheus query builder for a trace read, for triggers and the analysis
    /// endpoint; `version_key` as in [`build_problem`].
    fn trace_promql(
        &self,
        convention: &str,
        read: &TraceRead,
        version_key: &str,
    ) -> Result<String, PlanError> {
        let c = self.convention(convention)?;
        promql::build(convention, c, &read.selector, read.measure, read.window)
            .map_err(|e| build_problem(e, version_key))
    }
}
