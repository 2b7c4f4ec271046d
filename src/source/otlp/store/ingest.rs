//! Ingest: one decoded OTLP request aggregated per series, then each series locked once.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use super::super::wire::{KeyValue, TraceRequest};

use super::ring::{Bucket, Pods};
use super::{
    duration_ns, lock, unix_ns, IngestSummary, RejectReason, Store, MAX_FUTURE_SKEW,
    MAX_SERVICE_NAME_BYTES, MAX_SERVICE_VERSION_BYTES, STATUS_ERROR,
};
use crate::signal::SpanKind;

/// The spans of one request for one series, aggregated before the series is locked.
struct Pending {
    service: String,
    version: Option<String>,
    kind: SpanKind,
    buckets: Vec<Bucket>,
    /// Spans that carried no sampling record (counted as 1 each).
    without_record: u64,
}

impl Pending {
    /// Adds one span standing for `adjusted` spans (1 / its sampling probability; a span
    /// without a sampling record stands for itself).
    ///
    /// The span counts, error counts and durations are weighted by `adjusted`; the
    /// latency sketch holds the span once (its bins are integer counts, and a weight can
    /// be up to 2^56). Quantiles are therefore those of the stored spans: exact (within
    /// the sketch's 1 %) when every span of a selector has the same sampling probability,
    /// as with one head sampler per service; biased towards the more often kept spans
    /// when probabilities differ within a selector (e.g. a tail sampler that keeps every
    /// slow span and a tenth of the rest reads slower quantiles than the traffic has).
    ///
    /// `pod` is the hash of the span's instance id ([`instance_hash`]); a span without
    /// one, or sampled (an adjusted count other than 1: its pod's other spans may not have
    /// been kept), makes the bucket's pods unknown.
    fn add(
        &mut self,
        index: u64,
        duration_ns: u64,
        error: bool,
        adjusted: Option<f64>,
        pod: Option<u64>,
    ) {
        self.without_record += u64::from(adjusted.is_none());
        let adjusted = adjusted.unwrap_or(1.0);
        let bucket = match self.buckets.iter().rposition(|b| b.index == index) {
            Some(i) => &mut self.buckets[i],
            None => {
                self.buckets.push(Bucket {
                    index,
                    ..Bucket::default()
                });
                let last = self.buckets.len() - 1;
                &mut self.buckets[last]
            }
        };
        bucket.spans += adjusted;
        if error {
            bucket.errors += adjusted;
        }
        bucket.busy_ns += duration_ns as f64 * adjusted;
        bucket.latency.add(duration_ns);
        match pod {
            Some(pod) if adjusted == 1.0 => bucket.pods.add(pod),
            _ => bucket.pods = Pods::unknown(),
        }
    }

    fn spans(&self) -> u64 {
        self.buckets.iter().map(|b| b.latency.count()).sum()
    }
}

impl Store {
    /// Stores the spans of one decoded request and says what was refused and why.
    /// Refused spans never change stored data.
    pub fn ingest(&self, request: ExportTraceServiceRequest) -> IngestSummary {
        self.ingest_lean(TraceRequest::from(request))
    }

    /// [`Store::ingest`] for a request decoded with only the fields the store reads
    /// (what the receivers decode).
    /// Traced as `otlp.ingest` (self-traces).
    #[tracing::instrument(level = "debug", name = "otlp.ingest", skip_all, fields(
        otlp.spans.accepted = tracing::field::Empty,
        otlp.spans.rejected = tracing::field::Empty,
    ))]
    pub fn ingest_lean(&self, request: TraceRequest) -> IngestSummary {
        let now_ns = unix_ns(self.clock.now());
        let now_index = now_ns / self.bucket_ns;
        let oldest = self.oldest_index(now_index);
        let mut summary = IngestSummary::default();

        // 1. Aggregate per series, no lock held.
        let mut pending: Vec<Pending> = Vec::new();
        let mut where_is: HashMap<(String, Option<String>, SpanKind), usize> = HashMap::new();
        for rs in request.resource_spans {
            let spans: u64 = rs.scope_spans.iter().map(|s| s.spans.len() as u64).sum();
            let attrs = rs.resource.map(|r| r.attributes).unwrap_or_default();
            let Some(service) = string_attr(&attrs, "service.name").filter(|s| !s.is_empty())
            else {
                summary.reject(RejectReason::MissingServiceName, spans);
                continue;
            };
            if service.len() > MAX_SERVICE_NAME_BYTES {
                summary.reject(RejectReason::ServiceNameTooLong, spans);
                continue;
            }
            let version = string_attr(&attrs, "service.version");
            if version
                .as_ref()
                .is_some_and(|v| v.len() > MAX_SERVICE_VERSION_BYTES)
            {
                summary.reject(RejectReason::ServiceVersionTooLong, spans);
                continue;
            }
            let pod = instance_hash(&attrs);
            // This resource's series, by span kind, as indexes into `pending`.
            let mut slots: [Option<usize>; 5] = [None; 5];
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                let kind = match span.kind {
                    // Unspecified: the OTLP spec lets receivers assume internal.
                    0 => SpanKind::Internal,
                    k => match SpanKind::from_otlp(k) {
                        Some(kind) => kind,
                        None => {
                            summary.reject(RejectReason::UnknownSpanKind, 1);
                            continue;
                        }
                    },
                };
                let (start, end) = (span.start_time_unix_nano, span.end_time_unix_nano);
                if start == 0 || end < start {
                    summary.reject(RejectReason::BadTimestamps, 1);
                    continue;
                }
                let placed = if end <= now_ns {
                    end
                } else if end - now_ns <= duration_ns(MAX_FUTURE_SKEW) {
                    now_ns
                } else {
                    summary.reject(RejectReason::TooNew, 1);
                    continue;
                };
                let index = placed / self.bucket_ns;
                if index < oldest {
                    summary.reject(RejectReason::TooOld, 1);
                    continue;
                }
                let adjusted = span.adjusted_count();
                let error = span.status.is_some_and(|s| s.code == STATUS_ERROR);
                let slot = &mut slots[kind_slot(kind)];
                let at = match *slot {
                    Some(at) => at,
                    None => {
                        let key = (service.clone(), version.clone(), kind);
                        let at = *where_is.entry(key).or_insert_with(|| {
                            pending.push(Pending {
                                service: service.clone(),
                                version: version.clone(),
                                kind,
                                buckets: Vec::new(),
                                without_record: 0,
                            });
                            pending.len() - 1
                        });
                        *slot = Some(at);
                        at
                    }
                };
                // Server and consumer spans run in the pods that serve them; a client's or
                // producer's run in its caller's, which bound nothing about the callee's.
                let served_by =
                    pod.filter(|_| matches!(kind, SpanKind::Server | SpanKind::Consumer));
                pending[at].add(index, end - start, error, adjusted, served_by);
            }
        }

        // 2. Lock each series once.
        for p in pending {
            let spans = p.spans();
            if self.bytes.load(Ordering::Relaxed) >= self.config.max_bytes {
                self.refused_bytes_ns.fetch_max(now_ns, Ordering::Relaxed);
                summary.reject(RejectReason::StoreBytesLimit, spans);
                continue;
            }
            match self.series_for(&p.service, p.kind, p.version.as_deref()) {
                Some(series) => {
                    let mut series = lock(&series);
                    let before = series.bytes;
                    series.absorb(&p.buckets, self.keep(now_index), now_ns);
                    self.account(before, series.bytes);
                    summary.accepted += spans;
                    summary.without_sampling_record += p.without_record;
                }
                None => {
                    self.refused_series_ns.fetch_max(now_ns, Ordering::Relaxed);
                    summary.reject(RejectReason::SeriesLimit, spans)
                }
            }
        }
        tracing::Span::current()
            .record("otlp.spans.accepted", summary.accepted)
            .record("otlp.spans.rejected", summary.rejected_total());
        summary
    }
}

fn kind_slot(kind: SpanKind) -> usize {
    match kind {
        SpanKind::Internal => 0,
        SpanKind::Server => 1,
        SpanKind::Client => 2,
        SpanKind::Producer => 3,
        SpanKind::Consumer => 4,
    }
}

/// The resource attributes that name one pod (one instance of a service), in the order
/// they are read: OpenTelemetry's `service.instance.id` ("MUST be unique for each
/// instance of the same `service.namespace,service.name` pair", semantic conventions,
/// `service` resource) and the Kubernetes pod's uid and name (`k8s` resource, as the
/// Collector's `k8sattributes` processor adds them). `host.name` is not one: the
/// Collector's `resourcedetection` processor sets it to the node's or its own host name,
/// which many pods share, and pods counted too few would bound `sloCapacity` too low.
pub const INSTANCE_ATTRIBUTES: [&str; 3] = ["service.instance.id", "k8s.pod.uid", "k8s.pod.name"];

/// A hash of the resource's instance id (the first of [`INSTANCE_ATTRIBUTES`] it has,
/// non-empty), with its attribute's name: a fixed hash, so ids hash alike in every
/// request. `None` without one.
fn instance_hash(attrs: &[KeyValue]) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    INSTANCE_ATTRIBUTES.iter().find_map(|&key| {
        let id = attrs
            .iter()
            .find(|kv| kv.key == key)?
            .value
            .as_ref()?
            .string_value
            .as_deref()
            .filter(|id| !id.is_empty())?;
        // `DefaultHasher::new` hashes alike in every call of a process.
        let mut h = std::hash::DefaultHasher::new();
        (key, id).hash(&mut h);
        Some(h.finish())
    })
}

/// The string value of a resource attribute.
fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.string_value.clone())
}
