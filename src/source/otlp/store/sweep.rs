//! Expiry of old buckets and idle series, and the store's memory accounting.

use std::sync::Mutex;

use super::index::{entry_bytes, Entry};
use super::ring::Series;
use super::{duration_ns, lock, read_lock, unix_ns, write_lock, Store};

impl Store {
    /// Drops buckets past retention and series idle for `idle_expiry`. Call it
    /// periodically; returns how many series were dropped.
    pub fn sweep(&self) -> usize {
        let now_ns = unix_ns(self.clock.now());
        let keep = self.keep(now_ns / self.bucket_ns);
        let idle_ns = duration_ns(self.config.idle_expiry);
        let mut index = write_lock(&self.index);
        let mut dropped = 0;
        let mut freed = 0usize;
        index.by_service.retain(|service, entries| {
            entries.retain(|e| {
                let mut s = lock(&e.series);
                let before = s.bytes;
                s.trim(keep);
                let keep = now_ns.saturating_sub(s.last_ingest_ns) < idle_ns;
                if keep {
                    freed += before - s.bytes;
                } else {
                    dropped += 1;
                    freed += before + entry_bytes(service, e.version.as_deref());
                }
                keep
            });
            !entries.is_empty()
        });
        index.len -= dropped;
        self.account(freed, 0);
        self.metrics.otlp_store_series.set(index.len as i64);
        self.metrics
            .otlp_store_series_evicted
            .inc_by(dropped as u64);
        dropped
    }

    /// Approximate bytes held by the series (keys, buckets, sketches), for debugging
    /// and the memory figures in the module docs.
    pub fn heap_bytes(&self) -> usize {
        let index = read_lock(&self.index);
        index
            .by_service
            .iter()
            .map(|(service, entries)| {
                service.capacity()
                    + entries.capacity() * std::mem::size_of::<Entry>()
                    + entries
                        .iter()
                        .map(|e| {
                            std::mem::size_of::<Mutex<Series>>()
                                + e.version.as_ref().map_or(0, String::capacity)
                                + lock(&e.series).heap_bytes()
                        })
                        .sum::<usize>()
            })
            .sum()
    }
}
