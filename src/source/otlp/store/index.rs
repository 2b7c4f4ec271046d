//! The index of series by service, kind and version; creates series while there is room.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::ring::Series;
use super::{read_lock, write_lock, Store};
use crate::signal::SpanKind;

/// One series of a service: its kind, version and buckets.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) kind: SpanKind,
    pub(super) version: Option<String>,
    pub(super) series: Arc<Mutex<Series>>,
}

#[derive(Debug, Default)]
pub(super) struct Index {
    pub(super) by_service: HashMap<String, Vec<Entry>>,
    pub(super) len: usize,
}

impl Index {
    pub(super) fn find(
        &self,
        service: &str,
        kind: SpanKind,
        version: Option<&str>,
    ) -> Option<Arc<Mutex<Series>>> {
        self.by_service
            .get(service)?
            .iter()
            .find(|e| e.kind == kind && e.version.as_deref() == version)
            .map(|e| Arc::clone(&e.series))
    }
}

impl Store {
    /// The series, created when new and there is room.
    pub(super) fn series_for(
        &self,
        service: &str,
        kind: SpanKind,
        version: Option<&str>,
    ) -> Option<Arc<Mutex<Series>>> {
        if let Some(s) = read_lock(&self.index).find(service, kind, version) {
            return Some(s);
        }
        let mut index = write_lock(&self.index);
        if let Some(s) = index.find(service, kind, version) {
            return Some(s);
        }
        if index.len >= self.config.max_series {
            self.metrics.otlp_store_series_evicted.inc();
            return None;
        }
        let series = Arc::new(Mutex::new(Series::default()));
        self.account(0, entry_bytes(service, version));
        index
            .by_service
            .entry(service.to_string())
            .or_default()
            .push(Entry {
                kind,
                version: version.map(str::to_string),
                series: Arc::clone(&series),
            });
        index.len += 1;
        self.metrics.otlp_store_series.set(index.len as i64);
        Some(series)
    }
}

/// What the index holds for one series besides its buckets: its key and entry.
pub(super) fn entry_bytes(service: &str, version: Option<&str>) -> usize {
    service.len()
        + version.map_or(0, str::len)
        + std::mem::size_of::<Entry>()
        + std::mem::size_of::<Mutex<Series>>()
}
