//! Memory the scaler keeps per ScaledObject, counted exactly: the heap bytes still allocated
//! after N ScaledObjects of the KEDA-shaped workload (`common/workload.rs`, as `keda_load`
//! polls them) have each been answered once — GetMetricSpec → GetMetrics → IsActive, as
//! KEDA's first poll — divided by N. This bench's global allocator forwards to the system
//! allocator and counts what is live, so the figure is the scaler's state (board entries,
//! plans, the signal cache's entries for the queries they share), without allocator slack
//! or garbage; `keda_load`'s (e) is the resident memory of the release binary, which has
//! both.
//!
//! `cargo bench --bench state_memory [-- --scaled-objects 1500]`
//!
//! The server runs in this process (`Server::start`, its embedded store on, a Prometheus
//! fake that answers every instant query with one sample), and the calls go straight to its
//! `ScalerService`, so no connection's buffers are counted.

#![deny(unsafe_code)]

#[path = "common/in_process.rs"]
mod in_process;
#[path = "../tests/common/loopback.rs"]
mod loopback;
#[path = "common/workload.rs"]
mod workload;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use in_process::start_scaler;
use slo_scaler::proto::external_scaler_server::ExternalScaler;
use slo_scaler::proto::{wire, GetMetricsRequest};
use slo_scaler::scaler::ScalerService;
use workload::{scaled_object, Kind};

/// Bytes and allocations live now.
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_ALLOCATIONS: AtomicIsize = AtomicIsize::new(0);

/// The system allocator, counting what is live.
struct Counting;

// A global allocator is an unsafe trait; this one only forwards to `System` and counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            LIVE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            LIVE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        LIVE_ALLOCATIONS.fetch_sub(1, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> (isize, isize) {
    (
        LIVE_BYTES.load(Ordering::Relaxed),
        LIVE_ALLOCATIONS.load(Ordering::Relaxed),
    )
}

/// A Prometheus that answers every instant query with one sample.
/// One KEDA first poll of a ScaledObject, straight to the service. Errors are answers too
/// (otlp `rps` has no rate yet in a fresh store); each leaves its entry on the board.
async fn poll(service: &ScalerService, r: &slo_scaler::proto::ScaledObjectRef) -> bool {
    let wire_ref = wire::ScaledObjectRef::from(r.clone());
    let spec = service
        .get_metric_spec(tonic::Request::new(wire_ref.clone()))
        .await
        .expect("every ScaledObject of the workload plans");
    let metric_name = spec.into_inner().metric_specs[0].metric_name.clone();
    let req = wire::GetMetricsRequest::from(GetMetricsRequest {
        scaled_object_ref: Some(r.clone()),
        metric_name,
    });
    let value = service.get_metrics(tonic::Request::new(req)).await.is_ok();
    let _ = service.is_active(tonic::Request::new(wire_ref)).await;
    value
}

fn main() {
    let mut n = 1_500usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--scaled-objects" => {
                n = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--scaled-objects N")
            }
            "--bench" => {}
            other => panic!("unknown flag {other:?}"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = start_scaler("10s").await;
        let (service, _stop) = in_process::service(&server);
        // Once each shape beforehand, under other names: what is made once per process
        // (metric series, lazily built tables, thread-local buffers) is not counted.
        for i in 0..12 {
            let (_, mut r) = scaled_object(i);
            r.namespace = "warm-up".into();
            poll(&service, &r).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = live();
        let (mut otlp, mut values) = (0, 0);
        for i in 0..n {
            let (kind, r) = scaled_object(i);
            otlp += usize::from(kind == Kind::Otlp);
            values += usize::from(poll(&service, &r).await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = live();
        let held = server.board.len();
        let bytes = (after.0 - before.0) as f64 / n as f64;
        let allocations = (after.1 - before.1) as f64 / n as f64;
        println!(
            "{n} ScaledObjects ({otlp} otlp, {} prometheus), {values} answered with a value, \
             {held} board entries",
            n - otlp
        );
        println!(
            "live heap per ScaledObject: {bytes:.0} B in {allocations:.1} allocations \
             ({} → {} B live)",
            before.0, after.0
        );
        println!(
            "sizes: board entry {} B, plan {} B (trigger {} B, query {} B)",
            std::mem::size_of::<slo_scaler::scaler::Entry>(),
            std::mem::size_of::<slo_scaler::engine::Plan>(),
            std::mem::size_of::<slo_scaler::trigger::Trigger>(),
            std::mem::size_of::<slo_scaler::source::Query>(),
        );
        assert_eq!(
            held,
            (n + 12) as u64,
            "every ScaledObject stays on the board"
        );
    });
}
