//! The in-process [`Sink`]: spools events durably, batches them per
//! partition and uploads them to an [`ObjectStore`] exactly once.
//!
//! Every event handed to [`Sink::push`] is serialized, placed in a partition
//! by the configured [`Partitioner`], appended to the spool (when one is
//! configured, [`SinkBuilder::with_spool`]) and to that partition's open
//! [`BatchEncoder`]. A batch is closed and uploaded as soon as whichever comes
//! first of these is reached:
//!
//! - `flush_size` events ([`SinkBuilder::with_flush_size`], default 1000);
//! - `max_bytes` of *encoded* output ([`SinkBuilder::with_max_bytes`],
//!   default 64 MiB), so objects come out the size configured;
//! - `flush_interval` after the batch's first event
//!   ([`SinkBuilder::with_flush_interval`], default 60 s). A background task
//!   sleeps until the earliest deadline, so a quiet batch is flushed on time
//!   without waiting for another event.
//!
//! Records that are already JSON text can be pushed as
//! `&serde_json::value::RawValue`: they are stored byte for byte, and the
//! sink skips serializing them, which for ~1 KiB records costs more than
//! gzip does (see the `sink` bench).
//!
//! Objects are named `{prefix}{partition}{instance_id}-{seq:020}{ext}`. With
//! a spool, `seq` is the batch's first delivery number (given when its close
//! frame is written, and kept in it; see [`crate::spool`]) and the instance
//! id is kept in the spool directory, so a batch re-uploaded
//! after a crash lands on the same key: exactly once in the bucket (see
//! [`crate::spool`]). Without a spool, `seq` counts batches and events still
//! in memory when the process dies are lost.
//!
//! Uploads are retried with exponential backoff and jitter and never dropped;
//! objects larger than the part size ([`SinkBuilder::with_part_size`]) go up
//! as multipart uploads; at most [`SinkBuilder::with_max_concurrent_uploads`]
//! run at once. [`Sink::flush`] and [`Sink::shutdown`] wait for them.
//!
//! ```no_run
//! use std::sync::Arc;
//! use s3_event_sink::{Encoding, SinkBuilder, SpoolOptions};
//! use object_store::memory::InMemory;
//!
//! # async fn run() -> s3_event_sink::Result<()> {
//! let sink = SinkBuilder::default()
//!     .with_store(Arc::new(InMemory::new()))
//!     .with_prefix("events/")
//!     .with_encoding(Encoding::Ndjson)
//!     .with_flush_size(500)
//!     .with_spool(SpoolOptions::new("./spool"))
//!     .build()?;
//! sink.push(&serde_json::json!({ "eventTime": "2024-01-01T10:00:00Z", "n": 1 })).await?;
//! sink.shutdown().await?;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use object_store::path::Path;
use object_store::ObjectStore;
use s3_event_core::{PartitionEvent, Partitioner, TimePartitioner};
use serde::Serialize;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::pipe::GzipPipe;
use crate::spool::{self, CloseFrame, PendingBatch, Recovered, Spool, SpoolFsync, SpoolOptions};
use crate::{BatchEncoder, Compression, Encoding, Error, Result};
use s3_event_core::log::Log;
use s3_event_core::retry::RetryPolicy;

mod batch;
mod builder;
mod recovery;
mod segments;
#[cfg(test)]
mod tests;
mod uploader;

use batch::{Payload, Shard};
pub use builder::SinkBuilder;
use recovery::start_replay;
use uploader::{background, Job};

/// Default number of events per object.
pub const DEFAULT_FLUSH_SIZE: usize = 1000;
/// Default maximum encoded size of an object, in bytes (64 MiB).
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Default time from a batch's first event to its upload.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(60);
/// Default bound on the number of open batches (one per partition).
pub const DEFAULT_MAX_OPEN_BATCHES: usize = 64;
/// Default directory of the local-filesystem store.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default size above which an object is uploaded in parts (16 MiB).
pub const DEFAULT_PART_SIZE: usize = 16 * 1024 * 1024;
/// The smallest part S3 accepts for every part but the last (5 MiB).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// The longest object key S3 accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Default bound on uploads running at once.
pub const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 8;

/// Headroom kept below `max_bytes` for the error of the compressed-size estimate.
const GZIP_HEADROOM: usize = 256;
/// How soon close frames that could not be written are tried again.
const COMMIT_RETRY: Duration = Duration::from_millis(500);

/// How object names are made (after the prefix and partition).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyNaming {
    /// `{instance_id}-{seq:020}{ext}` (the default): sortable, and the
    /// instance and sequence are visible in the name.
    #[default]
    Sequence,
    /// `{uuid}{ext}`, for layouts that expect a UUID per file (Amberflo's
    /// `ingest/<source>/<MM-DD-YYYY>/<uuid>` with a template partitioner
    /// `ingest/<source>/%m-%d-%Y/`). The UUID is a version 5 UUID of the
    /// instance id and sequence number, so it is as deterministic as the
    /// sequence name: a re-upload after a crash overwrites the same key.
    Uuid,
}

/// A snapshot of a sink's counters; from [`Sink::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Events accepted by `push`/`push_batch`.
    pub events_accepted: u64,
    /// Bytes of accepted events (serialized JSON).
    pub bytes_accepted: u64,
    /// Events found in the spool on start and queued again.
    pub events_recovered: u64,
    /// Objects uploaded.
    pub objects_uploaded: u64,
    /// Bytes uploaded (encoded, as stored).
    pub bytes_uploaded: u64,
    /// Failed upload attempts that were retried.
    pub upload_retries: u64,
    /// Batches currently open.
    pub open_batches: u64,
    /// Bytes of the spool on disk (0 without a spool).
    pub spool_bytes: u64,
    /// Closed batches not uploaded yet.
    pub pending_uploads: u64,
    /// Failed upload attempts that retrying cannot fix (a missing bucket,
    /// refused credentials, an invalid key); see [`Sink::degraded`].
    pub upload_permanent_errors: u64,
    /// Uploads that found their key holding another batch's object and went
    /// to an alternate key instead of overwriting it.
    pub key_collisions: u64,
    /// Records refused at push because the encoding cannot hold them (a
    /// blank record, a raw newline in NDJSON, a record that does not fit the
    /// Parquet schema); the push failed with the record's index.
    pub records_refused: u64,
}

#[derive(Default)]
struct Counters {
    events_accepted: AtomicU64,
    bytes_accepted: AtomicU64,
    events_recovered: AtomicU64,
    objects_uploaded: AtomicU64,
    bytes_uploaded: AtomicU64,
    upload_retries: AtomicU64,
    upload_permanent_errors: AtomicU64,
    key_collisions: AtomicU64,
    records_refused: AtomicU64,
}

struct Inner {
    /// Backoff between attempts of uploads and spool writes.
    retry: RetryPolicy,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    partitioner: Arc<dyn Partitioner>,
    encoding: Encoding,
    compression: Compression,
    flush_size: usize,
    max_bytes: usize,
    flush_interval: Duration,
    instance_id: String,
    /// Bound on open batches per shard.
    max_open_batches: usize,
    part_size: usize,
    max_concurrent_uploads: usize,
    naming: KeyNaming,
    /// The longest object name (after prefix and partition) this sink makes,
    /// alternate keys included.
    name_len: usize,
    background_compression: bool,
    /// Cleared when the store refuses object attributes (the local filesystem).
    attributes_supported: AtomicBool,
    /// Cleared when the store has no create-only puts.
    create_supported: AtomicBool,
    /// Why uploads fail in a way retrying cannot fix, until one succeeds.
    degraded: Mutex<Option<String>>,
    /// The spool's log, for fsync waits outside the spool's lock.
    log: Option<Arc<Log>>,
    fsync: Option<SpoolFsync>,
    spool_dir: String,
    shards: Vec<Mutex<Shard>>,
    spool: Option<Mutex<Spool>>,
    closed: AtomicBool,
    /// Calls to [`Sink::flush`] under way: while one runs (or the sink shuts
    /// down), fsync waits do not wait for the spool's interval.
    flushing: AtomicUsize,
    /// Batch counter for keys without a spool.
    batch_seq: AtomicU64,
    wake: Notify,
    /// Signalled when spool segments are deleted.
    space: Notify,
    stop: AtomicBool,
    tx: mpsc::UnboundedSender<Job>,
    pending: watch::Sender<usize>,
    counters: Counters,
    /// Set while a task deletes spool segments ([`Inner::delete_segments`]).
    deleting: AtomicBool,
    /// Set when an upload may have made segments deletable.
    delete_requested: AtomicBool,
    /// Test hook: the next deletion pass that has something to delete stops
    /// before deleting, forever (a slow fsync, then a crash).
    #[cfg(test)]
    hold_deletes: AtomicBool,
    /// Parquet with an inferred schema: the schema, inferred from the first
    /// record this sink was given; every record is checked against it.
    #[cfg(feature = "parquet")]
    parquet_schema: std::sync::OnceLock<arrow_schema::SchemaRef>,
}

/// Counts a [`Sink::flush`] as under way until dropped (also when the
/// flush is cancelled).
struct Flushing<'a>(&'a AtomicUsize);

impl Drop for Flushing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Locks `m`, also when a panic elsewhere has poisoned it.
pub(crate) fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A serialized record's partition and its range in the push's buffer.
type Placed = (String, Range<usize>);

impl Inner {
    /// A future that resolves once the spool's writes up to `token` are
    /// durable: at the spool's interval, or at once while someone waits for
    /// everything (a flush or a shutdown), to whom the interval is only
    /// latency.
    fn synced(&self, log: &Log, token: u64) -> s3_event_core::log::Synced {
        if self.closed.load(Ordering::Acquire) || self.flushing.load(Ordering::Acquire) > 0 {
            log.synced_now(token)
        } else {
            log.synced(token)
        }
    }

    /// The delay before retry `attempt` (0-based) of a spool write or an
    /// upload.
    fn backoff(&self, attempt: u32) -> Duration {
        self.retry.delay(attempt.saturating_add(1))
    }

    fn spool_err(&self, source: s3_event_core::log::Error) -> Error {
        Error::Spool {
            dir: self.spool_dir.clone(),
            source,
        }
    }

    /// Serializes `events` into one buffer (one allocation, not one per
    /// record), checking each as the encoder would and partitioning it
    /// (time partitions at the current time); returns the buffer and each
    /// record's partition and range in it. An error names the first event
    /// that cannot be stored, and nothing is kept.
    fn serialize<T: Serialize + PartitionEvent>(
        &self,
        events: &[T],
    ) -> Result<(Vec<u8>, Vec<Placed>)> {
        let now = Utc::now();
        let mut buf = Vec::new();
        let mut records = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            let start = buf.len();
            serde_json::to_writer(&mut buf, event)
                .map_err(|source| Error::Serialize { index, source })?;
            self.check_record(index, &buf[start..])?;
            if index == 0 {
                // Room for the rest, if they are about the first one's size.
                buf.reserve(buf.len().saturating_mul(events.len() - 1));
            }
            let partition = self
                .partitioner
                .partition(event, now)
                .map_err(|source| Error::Partition { source })?
                .into_string();
            let len = self.prefix.len() + partition.len() + self.name_len;
            if len > MAX_KEY_BYTES {
                return Err(Error::KeyTooLong {
                    index,
                    len,
                    max: MAX_KEY_BYTES,
                });
            }
            records.push((partition, start..buf.len()));
        }
        Ok((buf, records))
    }
}

/// Batches events per partition and uploads them; see the [module docs](self).
pub struct Sink {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sink")
            .field("store", &self.inner.store.to_string())
            .field("prefix", &self.inner.prefix)
            .field("instance_id", &self.inner.instance_id)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Sink {
    /// A builder with the defaults.
    pub fn builder() -> SinkBuilder {
        SinkBuilder::default()
    }

    /// Accepts one event; see [`Sink::push_batch`].
    pub async fn push<T: Serialize + PartitionEvent>(&self, event: &T) -> Result<()> {
        self.push_batch(std::slice::from_ref(event)).await
    }

    /// Accepts several events: serializes them, appends them to the spool and
    /// to their partitions' batches (closing full batches), and returns once
    /// they are durable per the spool's fsync policy. Does not wait for the
    /// upload.
    ///
    /// When the spool is at its size bound, waits (closing the open batches
    /// so their uploads free space) instead of growing it. If a record cannot
    /// be serialized, none of the events is accepted. If writing the spool
    /// fails, the error is returned and the events may or may not be uploaded.
    pub async fn push_batch<T: Serialize + PartitionEvent>(&self, events: &[T]) -> Result<()> {
        self.push_batch_inner(events, None).await
    }

    /// Like [`Sink::push_batch`], but waits at most `max_wait` for spool
    /// space: when the spool is still full after that, fails with
    /// [`Error::Backpressure`] and *none* of the events is accepted (so the
    /// caller may retry them without making duplicates). Once the events are
    /// appended it no longer gives up: it returns after the spool's fsync
    /// policy is met, however long that takes.
    pub async fn push_batch_within<T: Serialize + PartitionEvent>(
        &self,
        events: &[T],
        max_wait: Duration,
    ) -> Result<()> {
        self.push_batch_inner(events, Some(Instant::now() + max_wait))
            .await
    }

    async fn push_batch_inner<T: Serialize + PartitionEvent>(
        &self,
        events: &[T],
        deadline: Option<Instant>,
    ) -> Result<()> {
        let inner = &*self.inner;
        // Without a wait on the spool (fsync `Always`) a push never yields:
        // take part in tokio's cooperative budget so pushers in a loop
        // cannot starve the sink's own timer and upload tasks.
        tokio::task::coop::consume_budget().await;
        let (buf, records) = inner.serialize(events)?;
        let bytes = buf.len() as u64;
        let pos = loop {
            let space = inner.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            if inner.closed.load(Ordering::Acquire) {
                return Err(Error::Shutdown);
            }
            let full = inner.spool.as_ref().is_some_and(|s| relock(s).is_full());
            if full {
                // Upload what is open so its segments can go, then wait.
                inner.close_all()?;
                let mut wait = Duration::from_millis(500);
                if let Some(deadline) = deadline {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Backpressure);
                    }
                    wait = wait.min(left);
                }
                let _ = tokio::time::timeout(wait, space).await;
                continue;
            }
            let (id, mut shard) = inner.pick_shard(records.first().map_or("", |(p, _)| p));
            let mut written = 0;
            let seqs: Option<Vec<u64>> = match &inner.spool {
                Some(spool) => {
                    let mut sp = relock(spool);
                    let seqs = records
                        .iter()
                        .map(|(p, r)| sp.append_event(id as u16, p, &buf[r.clone()]))
                        .collect();
                    // On failure nothing of these events is kept: refused.
                    written = sp.commit().map_err(|e| inner.spool_err(e))?;
                    Some(seqs)
                }
                None => None,
            };
            for (i, (partition, record)) in records.iter().enumerate() {
                let seq = seqs.as_ref().map(|s| s[i]);
                inner.append(id, &mut shard, partition, &buf[record.clone()], seq)?;
            }
            // The events are in; a close frame that cannot be written yet
            // stays with its batch and is retried by the background task.
            let closed_at = inner.commit(&mut shard).unwrap_or_else(|e| {
                tracing::error!(error = %e, "sink: writing close frames failed; retrying");
                inner.wake.notify_one();
                0
            });
            drop(shard);
            let c = &inner.counters;
            c.events_accepted
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            c.bytes_accepted.fetch_add(bytes, Ordering::Relaxed);
            break written.max(closed_at);
        };
        if let (Some(SpoolFsync::Always), Some(log)) = (inner.fsync, &inner.log) {
            log.synced(pos).await.map_err(|e| inner.spool_err(e))?;
        }
        Ok(())
    }

    /// Closes every open batch and waits until every closed batch is
    /// uploaded (retrying for as long as the store fails).
    pub async fn flush(&self) -> Result<()> {
        self.inner.flushing.fetch_add(1, Ordering::AcqRel);
        let _flushing = Flushing(&self.inner.flushing);
        self.inner.close_all()?;
        let mut rx = self.inner.pending.subscribe();
        // The sender lives in `inner`, so this cannot fail.
        let _ = rx.wait_for(|n| *n == 0).await;
        Ok(())
    }

    /// Stops accepting events, flushes everything accepted and stops the
    /// background tasks. Calling it again is a no-op.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        self.flush().await?;
        self.inner.stop.store(true, Ordering::Release);
        self.inner.wake.notify_one();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
        if let Some(log) = &self.inner.log {
            let _ = log.synced_now(log.written()).await;
        }
        Ok(())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SinkStats {
        let c = &self.inner.counters;
        let open_batches = self
            .inner
            .shards
            .iter()
            .map(|s| relock(s).batches.len() as u64)
            .sum();
        SinkStats {
            events_accepted: c.events_accepted.load(Ordering::Relaxed),
            bytes_accepted: c.bytes_accepted.load(Ordering::Relaxed),
            events_recovered: c.events_recovered.load(Ordering::Relaxed),
            objects_uploaded: c.objects_uploaded.load(Ordering::Relaxed),
            bytes_uploaded: c.bytes_uploaded.load(Ordering::Relaxed),
            upload_retries: c.upload_retries.load(Ordering::Relaxed),
            open_batches,
            spool_bytes: self
                .inner
                .spool
                .as_ref()
                .map_or(0, |s| relock(s).total_bytes()),
            pending_uploads: *self.inner.pending.borrow() as u64,
            upload_permanent_errors: c.upload_permanent_errors.load(Ordering::Relaxed),
            key_collisions: c.key_collisions.load(Ordering::Relaxed),
            records_refused: c.records_refused.load(Ordering::Relaxed),
        }
    }

    /// Why uploads are failing in a way retrying will not fix (a missing
    /// bucket, refused credentials, an invalid key), from the last such
    /// failure until an upload succeeds; `None` when healthy. The batches
    /// are kept and retried meanwhile.
    pub fn degraded(&self) -> Option<String> {
        relock(&self.inner.degraded).clone()
    }

    /// The instance id used in object names.
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// Stops the sink as a crash would: its tasks die, nothing is flushed;
    /// returns once the spool (and its lock) is released.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) async fn crash(self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        let mut inner = self.inner;
        let t0 = std::time::Instant::now();
        loop {
            match Arc::try_unwrap(inner) {
                Ok(i) => {
                    drop(i);
                    return;
                }
                Err(i) => inner = i,
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the sink's state is still in use"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}
