//! [`Plan`] → [`Evaluation`]: every read through the cache, the one mapping from a backend
//! answer to a value KEDA may use.

use super::*;

impl Engine {
    /// Reads one number through the cache (the server's TTL; for the embedded store at
    /// most one bucket), for a verdict (the analysis endpoint). `Ok(None)` is no data; a
    /// negative or infinite answer is refused; and so is the last good answer the cache
    /// stands in with for a failing backend: KEDA may scale on it for `--max-stale`, but
    /// a canary is judged on what its traffic does now.
    pub async fn read_value(&self, query: &Query) -> Result<Option<f64>, EvalError> {
        let mut ttl = self.config.cache_ttl;
        if let (Query::Otlp(_), Some(store)) = (query, &self.sources.otlp) {
            ttl = ttl.min(store.bucket_width());
        }
        let served = self
            .cache
            .get(query, ttl, || self.sources.fetch(query))
            .await?;
        if served.stale {
            return Err(EvalError::Source(SourceError::Unavailable {
                backend: query.backend_label().to_string(),
                detail: format!(
                    "failing; its last good answer is {} old, and a verdict needs a fresh one",
                    humantime::format_duration(Duration::from_secs(served.age.as_secs()))
                ),
            }));
        }
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
            // Boxed: its six joined reads would make every evaluation's future that large.
            return Box::pin(self.evaluate_capacity(plan, capacity, ttl)).await;
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
            // The counts are untrusted: their sum goes through the same rule. The query asked
            // for every count the trigger adds; one missing is an error, never a 0.
            (Reading::Queue(depth), Read::Sqs(spec)) => {
                match depth.total(spec.scale_on_in_flight, spec.scale_on_delayed) {
                    Some(n) => usable(Some(n as f64)),
                    None => {
                        return Err(EvalError::WrongShape {
                            metric: t.metric_name.clone(),
                            got: "queue depth without a count this trigger adds",
                            wanted: "queue depth with every count it adds",
                        })
                    }
                }
            }
            (other, _) => {
                return Err(EvalError::WrongShape {
                    metric: t.metric_name.clone(),
                    got: other.shape(),
                    wanted: "number",
                })
            }
        };
        conclude(t, value, served.age, served.stale)
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
        let value = match slo::slo_ratio(objectives, observed) {
            // A ratio over a tiny objective can leave KEDA's range: the same rule.
            Ok(v) => computed(v),
            // An objective without its reading: no data, never a ratio of the other half.
            Err(slo::SloError::NoData { .. }) => Usable::NoData,
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
        conclude(t, value, age, stale)
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
    ///   latency, no calmest minute, and a busiest minute and sustained level of 0.
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
        let [a, b, c, d, e, f, g, h, i] = &cap.queries;
        let answers = tokio::join!(
            read(a),
            read(b),
            read(c),
            read(d),
            read(e),
            read(f),
            read(g),
            read(h),
            read(i)
        );
        let answers = [
            answers.0?, answers.1?, answers.2?, answers.3?, answers.4?, answers.5?, answers.6?,
            answers.7?, answers.8?,
        ];
        let age = answers.iter().map(|s| s.age).max().unwrap_or_default();
        let stale = answers.iter().any(|s| s.stale);
        let mut figures = [None; 9];
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
        let [concurrency, rate, reference_latency, peak_concurrency, peak_rate, latency, calm_latency, sustained_concurrency, sustained_rate] =
            figures;
        let history = capacity::History {
            reference_latency_s: reference_latency,
            peak_concurrency: peak_concurrency.unwrap_or(0.0),
            peak_rate: peak_rate.unwrap_or(0.0),
            calm_latency_s: calm_latency,
            sustained_concurrency: sustained_concurrency.unwrap_or(0.0),
            sustained_rate: sustained_rate.unwrap_or(0.0),
        };
        let reading = match (concurrency, rate, latency) {
            (Some(concurrency), Some(rate), Some(latency_s)) if rate > 0.0 => {
                Some(history.reading(concurrency, rate, latency_s))
            }
            _ => None,
        };
        let value = match reading {
            Some(r) => computed(capacity::pods_needed(cap.target.target(), r)),
            // The parser refuses ignoreNullValues for sloCapacity; the rule is kept whole.
            None => Usable::NoData,
        };
        conclude(t, value, age, stale)
    }
}

/// The one mapping from a usable value to what KEDA gets, for every signal: a value and
/// whether it is above the activation threshold; no data is 0 only where the trigger says
/// `ignoreNullValues` (and its signal allows it), else an error; a refused value an error.
fn conclude(
    t: &Trigger,
    value: Usable,
    age: Duration,
    stale: bool,
) -> Result<Evaluation, EvalError> {
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
        age,
        stale,
        no_data,
    })
}

/// A value the scaler worked out itself (an `slo` ratio, `sloCapacity`'s pods): not a
/// finite number in KEDA's range is a refused value, never "no data".
fn computed(v: f64) -> Usable {
    match usable(Some(v)) {
        Usable::NoData => Usable::Refused(v),
        u => u,
    }
}

/// The trace measure a read asks, if it is one (on a read of its own to change).
pub(super) fn trace_read_mut(read: &mut Read) -> Option<&mut TraceRead> {
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

    /// A value the scaler computed that is not a number is refused, not "no data": no data
    /// may read 0 under ignoreNullValues, a broken computation never.
    #[test]
    fn a_computed_value_is_never_no_data() {
        assert_eq!(computed(1.5), Usable::Value(1.5));
        assert!(matches!(computed(f64::NAN), Usable::Refused(v) if v.is_nan()));
        assert_eq!(computed(f64::INFINITY), Usable::Refused(f64::INFINITY));
        assert_eq!(computed(-1.0), Usable::Refused(-1.0));
        assert_eq!(
            usable(Some(f64::NAN)),
            Usable::NoData,
            "a backend's NaN is no data"
        );
    }

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
