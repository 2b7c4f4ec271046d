//! Ingest: one decoded OTLP request aggregated per series, then each series locked once.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use super::super::wire::{KeyValue, Span, TraceRequest};

use super::ring::{Bucket, Pods};
use super::{
    duration_ns, lock, unix_ns, IngestSummary, RejectReason, Store, MAX_FUTURE_SKEW,
    MAX_SERVICE_NAME_BYTES, MAX_SERVICE_VERSION_BYTES, STATUS_ERROR,
};
use crate::signal::SpanKind;

/// The most spans one sampled span may stand for: a sampling probability of at least 1 in
/// 16,384 (0.006 %). OpenTelemetry's thresholds go down to 1 in 2^56, and one span of such a
/// `tracestate` would count as 7 × 10^16 requests, errors and as much busy time: one
/// 60-byte span from any caller would set every rate, ratio and concurrency a trigger
/// reads. A span sampled more sparsely is refused and counted, not stored.
pub const MAX_ADJUSTED_COUNT: f64 = 16_384.0;

/// A series of one request: its name, and the spans without a sampling record it got.
struct SeriesOf {
    service: String,
    version: Option<String>,
    kind: SpanKind,
    /// Spans that carried no sampling record (counted as 1 each).
    without_record: u64,
}

// Gathering a span never costs more than decoding it did.
const _: () = assert!(std::mem::size_of::<Gathered>() <= std::mem::size_of::<Span>());

/// One accepted span as ingest gathers it: what its bucket keeps of it. A request's spans
/// are gathered so, then sorted by series and bucket, and each bucket (sums, latency
/// sketch, pods) is built in the store one at a time, under the store's byte bound.
/// 48 bytes, fewer than the decoded span it comes from (56): whatever the spans'
/// durations, ingest holds no more than the decoded request it was charged for. (Built
/// per request instead, sketches of two spans 1 ns and minutes long take thousands of
/// bins: 8 KiB a bucket from 40 bytes of request.)
struct Gathered {
    /// Index into the request's [`SeriesOf`]s.
    series: u32,
    /// The bucket: end time / bucket width.
    index: u64,
    duration_ns: u64,
    /// 1 / its sampling probability; 1 without a sampling record.
    adjusted: f64,
    error: bool,
    /// The hash of the pod that served it ([`instance_hash`]), for server and consumer
    /// spans that name one.
    pod: Option<u64>,
}

/// The buckets of one series' gathered spans (sorted by bucket), built one at a time.
///
/// Span counts, error counts and durations are weighted by the adjusted count; the
/// latency sketch holds each span once (its bins are integer counts). Quantiles are
/// therefore those of the stored spans: exact (within the sketch's 1 %) when every span
/// of a selector has the same sampling probability, as with one head sampler per service;
/// biased towards the more often kept spans when probabilities differ within a selector
/// (e.g. a tail sampler that keeps every slow span and a tenth of the rest reads slower
/// quantiles than the traffic has).
///
/// A span without a pod, or sampled (an adjusted count other than 1: its pod's other
/// spans may not have been kept), makes the bucket's pods unknown.
fn buckets(spans: &[Gathered]) -> impl Iterator<Item = Bucket> + '_ {
    spans.chunk_by(|a, b| a.index == b.index).map(|same| {
        let mut bucket = Bucket {
            index: same[0].index,
            ..Bucket::default()
        };
        for g in same {
            bucket.spans += g.adjusted;
            if g.error {
                bucket.errors += g.adjusted;
            }
            bucket.busy_ns += g.duration_ns as f64 * g.adjusted;
            bucket.latency.add(g.duration_ns);
            match g.pod {
                Some(pod) if g.adjusted == 1.0 => bucket.pods.add(pod),
                _ => bucket.pods = Pods::unknown(),
            }
        }
        bucket.shrink();
        bucket
    })
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

        let longest_ns = duration_ns(self.config.retention);
        let mut summary = IngestSummary::default();

        // 1. Gather the spans it can place, no lock held.
        let mut series_of: Vec<SeriesOf> = Vec::new();
        let mut where_is: HashMap<(String, Option<String>, SpanKind), u32> = HashMap::new();
        let total = request
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        let mut gathered: Vec<Gathered> = Vec::with_capacity(total);
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
            // This resource's series, by span kind, as indexes into `series_of`.
            let mut slots: [Option<u32>; 5] = [None; 5];
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
                if end - start > longest_ns {
                    summary.reject(RejectReason::TooLong, 1);
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
                if adjusted.is_some_and(|a| a > MAX_ADJUSTED_COUNT) {
                    summary.reject(RejectReason::SampledTooSparsely, 1);
                    continue;
                }
                let slot = &mut slots[kind_slot(kind)];
                let at = match *slot {
                    Some(at) => at,
                    None => {
                        let key = (service.clone(), version.clone(), kind);
                        // At most one series per span: a request under 4 GiB never gets here.
                        let Ok(next) = u32::try_from(series_of.len()) else {
                            summary.reject(RejectReason::SeriesLimit, 1);
                            continue;
                        };
                        let at = *where_is.entry(key).or_insert_with(|| {
                            series_of.push(SeriesOf {
                                service: service.clone(),
                                version: version.clone(),
                                kind,
                                without_record: 0,
                            });
                            next
                        });
                        *slot = Some(at);
                        at
                    }
                };
                series_of[at as usize].without_record += u64::from(adjusted.is_none());
                // Server and consumer spans run in the pods that serve them; a client's or
                // producer's run in its caller's, which bound nothing about the callee's.
                gathered.push(Gathered {
                    series: at,
                    index,
                    duration_ns: end - start,
                    adjusted: adjusted.unwrap_or(1.0),
                    error: span.status.is_some_and(|s| s.code == STATUS_ERROR),
                    pod: pod.filter(|_| matches!(kind, SpanKind::Server | SpanKind::Consumer)),
                });
            }
        }

        // 2. Lock each series once, and build its buckets in it.
        gathered.sort_unstable_by_key(|g| (g.series, g.index));
        for spans in gathered.chunk_by(|a, b| a.series == b.series) {
            let of = &series_of[spans[0].series as usize];
            let n = spans.len() as u64;
            if self.bytes.load(Ordering::Relaxed) >= self.config.max_bytes {
                self.refused_bytes_ns.fetch_max(now_ns, Ordering::Relaxed);
                summary.reject(RejectReason::StoreBytesLimit, n);
                continue;
            }
            match self.series_for(&of.service, of.kind, of.version.as_deref()) {
                Some(series) => {
                    let mut series = lock(&series);
                    let before = series.bytes;
                    series.absorb(buckets(spans), self.keep(now_index), now_ns);
                    self.account(before, series.bytes);
                    summary.accepted += n;
                    summary.without_sampling_record += of.without_record;
                }
                None => {
                    self.refused_series_ns.fetch_max(now_ns, Ordering::Relaxed);
                    summary.reject(RejectReason::SeriesLimit, n)
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
