//! The in-process [`Sink`]: batches events per partition and uploads them to
//! an [`ObjectStore`].
//!
//! Every event handed to [`Sink::push`] is serialized, placed in a partition
//! by the configured [`Partitioner`] and appended to that partition's open
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
//! Objects are named `{prefix}{partition}{instance_id}-{seq:020}{ext}`, where
//! `seq` increases monotonically per sink. The names are deterministic; once
//! the spool exists, `seq` will come from it so that a re-upload after a crash
//! overwrites the same key instead of duplicating it. Until then, events that
//! are still in memory when the process dies are lost.
//!
//! Uploads are retried with exponential backoff and jitter and never dropped:
//! a batch is retried until it is stored, and [`Sink::flush`] and
//! [`Sink::shutdown`] wait for that.
//!
//! ```no_run
//! use std::sync::Arc;
//! use s3_event_sink::{Encoding, SinkBuilder};
//! use object_store::memory::InMemory;
//!
//! # async fn run() -> s3_event_sink::Result<()> {
//! let sink = SinkBuilder::default()
//!     .with_store(Arc::new(InMemory::new()))
//!     .with_prefix("events/")
//!     .with_encoding(Encoding::Ndjson)
//!     .with_flush_size(500)
//!     .build()?;
//! sink.push(&serde_json::json!({ "eventTime": "2024-01-01T10:00:00Z", "n": 1 }))?;
//! sink.shutdown().await?;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use s3_event_core::{PartitionEvent, Partitioner, TimePartitioner};
use serde::Serialize;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{BatchEncoder, Compression, Encoding, Error, Result};

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

/// Headroom kept below `max_bytes` for the error of the compressed-size estimate.
const GZIP_HEADROOM: usize = 256;
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Configures and builds a [`Sink`]; see the [module docs](self).
pub struct SinkBuilder {
    store: Option<Arc<dyn ObjectStore>>,
    prefix: String,
    partitioner: Option<Arc<dyn Partitioner>>,
    encoding: Encoding,
    compression: Compression,
    flush_size: usize,
    max_bytes: usize,
    flush_interval: Duration,
    instance_id: Option<String>,
    max_open_batches: usize,
}

impl fmt::Debug for SinkBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkBuilder")
            .field("store", &self.store.as_ref().map(|s| s.to_string()))
            .field("prefix", &self.prefix)
            .field("partitioner", &self.partitioner)
            .field("encoding", &self.encoding)
            .field("compression", &self.compression)
            .field("flush_size", &self.flush_size)
            .field("max_bytes", &self.max_bytes)
            .field("flush_interval", &self.flush_interval)
            .field("instance_id", &self.instance_id)
            .field("max_open_batches", &self.max_open_batches)
            .finish()
    }
}

impl Default for SinkBuilder {
    fn default() -> Self {
        SinkBuilder {
            store: None,
            prefix: String::new(),
            partitioner: None,
            encoding: Encoding::Ndjson,
            compression: Compression::gzip(),
            flush_size: DEFAULT_FLUSH_SIZE,
            max_bytes: DEFAULT_MAX_BYTES,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            instance_id: None,
            max_open_batches: DEFAULT_MAX_OPEN_BATCHES,
        }
    }
}

impl SinkBuilder {
    /// The object store to upload to (default: a [`LocalFileSystem`] rooted at
    /// [`DEFAULT_DATA_DIR`], created if missing).
    pub fn with_store(mut self, store: Arc<dyn ObjectStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// A prefix put before every key, verbatim (default: none). End it with
    /// `/` to make it a directory.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How events are placed in partitions (default: an hourly
    /// [`TimePartitioner`] by processing time).
    pub fn with_partitioner(mut self, partitioner: Arc<dyn Partitioner>) -> Self {
        self.partitioner = Some(partitioner);
        self
    }

    /// The object layout (default: [`Encoding::Ndjson`]).
    pub fn with_encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// The compression (default: gzip at the default level).
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Events per object (default [`DEFAULT_FLUSH_SIZE`]; at least 1).
    pub fn with_flush_size(mut self, flush_size: usize) -> Self {
        self.flush_size = flush_size.max(1);
        self
    }

    /// Maximum encoded size of an object in bytes (default
    /// [`DEFAULT_MAX_BYTES`]). A batch is closed before a record that would
    /// take it past this size; a single record larger than the limit makes an
    /// object of its own.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes.max(1);
        self
    }

    /// Time from a batch's first event to its upload (default
    /// [`DEFAULT_FLUSH_INTERVAL`]).
    pub fn with_flush_interval(mut self, flush_interval: Duration) -> Self {
        self.flush_interval = flush_interval;
        self
    }

    /// The instance id in object names. The default is derived from the
    /// process id and the start time (`{pid:x}{unix nanos:x}`), which is
    /// unique per process but changes on restart; set a stable id (a host or
    /// pod name) when names must be reproducible across restarts.
    pub fn with_instance_id(mut self, instance_id: impl Into<String>) -> Self {
        self.instance_id = Some(instance_id.into());
        self
    }

    /// Bound on the number of open batches (default
    /// [`DEFAULT_MAX_OPEN_BATCHES`]; at least 1). Opening one more flushes the
    /// oldest batch early.
    pub fn with_max_open_batches(mut self, max_open_batches: usize) -> Self {
        self.max_open_batches = max_open_batches.max(1);
        self
    }

    /// Builds the sink and spawns its background task; must be called inside
    /// a tokio runtime.
    pub fn build(self) -> Result<Sink> {
        let store: Arc<dyn ObjectStore> = match self.store {
            Some(s) => s,
            None => {
                std::fs::create_dir_all(DEFAULT_DATA_DIR).map_err(|e| Error::Store {
                    source: object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: Box::new(e),
                    },
                })?;
                Arc::new(
                    LocalFileSystem::new_with_prefix(DEFAULT_DATA_DIR)
                        .map_err(|source| Error::Store { source })?,
                )
            }
        };
        let partitioner = self
            .partitioner
            .unwrap_or_else(|| Arc::new(TimePartitioner::default()));
        let instance_id = self.instance_id.unwrap_or_else(default_instance_id);
        // Partition keys are valid path prefixes by construction
        // (`PartitionKey`), so checking the prefix and instance id once here
        // means a closed batch can never fail for its key (and be lost).
        let sample = format!("{}x/{}-{:020}.ndjson.gz", self.prefix, instance_id, 0);
        if instance_id.is_empty() || instance_id.contains('/') {
            return Err(Error::InvalidConfig {
                what: "instance id",
                value: instance_id,
                expected: "a non-empty name without `/`",
            });
        }
        Path::parse(&sample).map_err(|source| Error::InvalidKey {
            key: sample.clone(),
            source,
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (pending, _) = watch::channel(0usize);
        let inner = Arc::new(Inner {
            store,
            prefix: self.prefix,
            partitioner,
            encoding: self.encoding,
            compression: self.compression,
            flush_size: self.flush_size,
            max_bytes: self.max_bytes,
            flush_interval: self.flush_interval,
            instance_id,
            max_open_batches: self.max_open_batches,
            state: Mutex::new(State {
                batches: HashMap::new(),
                next_seq: 0,
                next_opened: 0,
                closed: false,
            }),
            wake: Notify::new(),
            stop: AtomicBool::new(false),
            tx,
            pending,
            counters: Counters::default(),
        });
        let task = tokio::spawn(background(Arc::clone(&inner), rx));
        Ok(Sink {
            inner,
            task: Mutex::new(Some(task)),
        })
    }
}

fn default_instance_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}{:x}", std::process::id(), nanos)
}

/// A snapshot of a sink's counters; from [`Sink::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Events accepted by `push`/`push_batch`.
    pub events_accepted: u64,
    /// Objects uploaded.
    pub objects_uploaded: u64,
    /// Bytes uploaded (encoded, as stored).
    pub bytes_uploaded: u64,
    /// Failed upload attempts that were retried.
    pub upload_retries: u64,
    /// Batches currently open.
    pub open_batches: u64,
}

#[derive(Default)]
struct Counters {
    events_accepted: AtomicU64,
    objects_uploaded: AtomicU64,
    bytes_uploaded: AtomicU64,
    upload_retries: AtomicU64,
}

struct OpenBatch {
    encoder: BatchEncoder,
    deadline: Instant,
    opened: u64,
}

struct State {
    batches: HashMap<String, OpenBatch>,
    next_seq: u64,
    next_opened: u64,
    closed: bool,
}

struct Job {
    key: Path,
    bytes: bytes::Bytes,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    partitioner: Arc<dyn Partitioner>,
    encoding: Encoding,
    compression: Compression,
    flush_size: usize,
    max_bytes: usize,
    flush_interval: Duration,
    instance_id: String,
    max_open_batches: usize,
    state: Mutex<State>,
    wake: Notify,
    stop: AtomicBool,
    tx: mpsc::UnboundedSender<Job>,
    pending: watch::Sender<usize>,
    counters: Counters,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes `partition`'s batch (if open) and queues it for upload.
    fn close(&self, state: &mut State, partition: &str) -> Result<()> {
        let Some(batch) = state.batches.remove(partition) else {
            return Ok(());
        };
        if batch.encoder.is_empty() {
            return Ok(());
        }
        let ext = batch.encoder.extension();
        let seq = state.next_seq;
        state.next_seq += 1;
        let key = format!(
            "{}{}{}-{:020}{}",
            self.prefix, partition, self.instance_id, seq, ext
        );
        let path = Path::parse(&key).map_err(|source| Error::InvalidKey { key, source })?;
        let bytes = batch.encoder.finish()?;
        self.pending.send_modify(|n| *n += 1);
        let job = Job {
            key: path,
            bytes: bytes.into(),
        };
        if self.tx.send(job).is_err() {
            // The background task is gone (shutdown): nothing will upload it.
            self.pending.send_modify(|n| *n -= 1);
            return Err(Error::Shutdown);
        }
        Ok(())
    }

    fn append(&self, state: &mut State, event: &dyn PartitionEvent, record: &[u8]) -> Result<()> {
        let partition = self
            .partitioner
            .partition(event, Utc::now())
            .map_err(|source| Error::Partition { source })?
            .into_string();
        // Uncompressed, the size is exact: close first if this record would
        // take the batch past max_bytes. Compressed, the record's share is
        // unknown until written, so the check after the append decides.
        if let Some(b) = state.batches.get(&partition) {
            if self.compression == Compression::None
                && !b.encoder.is_empty()
                && b.encoder.encoded_len() + record.len() + 1 > self.max_bytes
            {
                self.close(state, &partition)?;
            }
        }
        if !state.batches.contains_key(&partition) {
            if state.batches.len() >= self.max_open_batches {
                let oldest = state
                    .batches
                    .iter()
                    .min_by_key(|(_, b)| b.opened)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.close(state, &oldest)?;
                }
            }
            let opened = state.next_opened;
            state.next_opened += 1;
            state.batches.insert(
                partition.clone(),
                OpenBatch {
                    encoder: BatchEncoder::new(self.encoding, self.compression),
                    deadline: Instant::now() + self.flush_interval,
                    opened,
                },
            );
            self.wake.notify_one();
        }
        let batch = state
            .batches
            .get_mut(&partition)
            .expect("batch was just inserted");
        batch.encoder.push_raw(record)?;
        // Compressed, `encoded_len` is an estimate of what `finish` will
        // produce; keep a record's worth (plus a margin) of headroom for it.
        let limit = if self.compression == Compression::None {
            self.max_bytes
        } else {
            self.max_bytes
                .saturating_sub(record.len() + GZIP_HEADROOM)
                .max(1)
        };
        if batch.encoder.len() >= self.flush_size || batch.encoder.encoded_len() >= limit {
            self.close(state, &partition)?;
        }
        Ok(())
    }

    fn close_all(&self) -> Result<()> {
        let mut state = self.lock();
        let keys: Vec<String> = state.batches.keys().cloned().collect();
        for k in keys {
            self.close(&mut state, &k)?;
        }
        Ok(())
    }

    /// Closes the batches whose deadline has passed; returns the earliest
    /// remaining deadline.
    fn close_expired(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut state = self.lock();
        let expired: Vec<String> = state
            .batches
            .iter()
            .filter(|(_, b)| b.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            // A key error here would also have failed at push time; the batch
            // is dropped from the open set either way.
            let _ = self.close(&mut state, &k);
        }
        state.batches.values().map(|b| b.deadline).min()
    }
}

async fn background(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut uploads = tokio::task::JoinSet::new();
    loop {
        let next = inner.close_expired();
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = inner.wake.notified() => {
                if inner.stop.load(Ordering::Acquire) && *inner.pending.borrow() == 0 {
                    break;
                }
            }
            job = rx.recv() => match job {
                Some(job) => {
                    uploads.spawn(upload(Arc::clone(&inner), job));
                }
                None => break,
            },
            Some(_) = uploads.join_next(), if !uploads.is_empty() => {}
        }
    }
    while uploads.join_next().await.is_some() {}
}

async fn upload(inner: Arc<Inner>, job: Job) {
    let len = job.bytes.len() as u64;
    let mut attempt: u32 = 0;
    loop {
        let payload = PutPayload::from_bytes(job.bytes.clone());
        match inner.store.put(&job.key, payload).await {
            Ok(_) => break,
            Err(_) => {
                inner
                    .counters
                    .upload_retries
                    .fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff(attempt)).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
    inner
        .counters
        .objects_uploaded
        .fetch_add(1, Ordering::Relaxed);
    inner
        .counters
        .bytes_uploaded
        .fetch_add(len, Ordering::Relaxed);
    inner.pending.send_modify(|n| *n -= 1);
}

/// Exponential backoff with full jitter: a random delay in
/// `[base * 2^attempt / 2, base * 2^attempt]`, capped at [`BACKOFF_MAX`].
fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_MAX);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    // A cheap hash of the clock's low bits as the jitter source.
    let r = u64::from(nanos.wrapping_mul(2_654_435_761)) % 1000;
    exp / 2 + exp / 2 * (r as u32) / 1000
}

/// Batches events per partition and uploads them; see the [module docs](self).
pub struct Sink {
    inner: Arc<Inner>,
    task: Mutex<Option<JoinHandle<()>>>,
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

    /// Accepts one event: serializes it, places it in its partition's batch
    /// and closes that batch if it is full. Does not wait for the upload.
    pub fn push<T: Serialize + PartitionEvent>(&self, event: &T) -> Result<()> {
        self.push_batch(std::slice::from_ref(event))
    }

    /// Accepts several events, taking the lock once. On an error, the events
    /// before the failing one have been accepted.
    pub fn push_batch<T: Serialize + PartitionEvent>(&self, events: &[T]) -> Result<()> {
        let mut state = self.inner.lock();
        if state.closed {
            return Err(Error::Shutdown);
        }
        for (i, event) in events.iter().enumerate() {
            let record = serde_json::to_vec(event)
                .map_err(|source| Error::Serialize { index: i, source })?;
            self.inner.append(&mut state, event, &record)?;
            self.inner
                .counters
                .events_accepted
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Closes every open batch and waits until every closed batch is
    /// uploaded (retrying for as long as the store fails).
    pub async fn flush(&self) -> Result<()> {
        self.inner.close_all()?;
        let mut rx = self.inner.pending.subscribe();
        // The sender lives in `inner`, so this cannot fail.
        let _ = rx.wait_for(|n| *n == 0).await;
        Ok(())
    }

    /// Stops accepting events, flushes everything accepted and stops the
    /// background task. Calling it again is a no-op.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.lock().closed = true;
        self.flush().await?;
        self.inner.stop.store(true, Ordering::Release);
        self.inner.wake.notify_one();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        Ok(())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SinkStats {
        let c = &self.inner.counters;
        SinkStats {
            events_accepted: c.events_accepted.load(Ordering::Relaxed),
            objects_uploaded: c.objects_uploaded.load(Ordering::Relaxed),
            bytes_uploaded: c.bytes_uploaded.load(Ordering::Relaxed),
            upload_retries: c.upload_retries.load(Ordering::Relaxed),
            open_batches: self.inner.lock().batches.len() as u64,
        }
    }

    /// The instance id used in object names.
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode;
    use helpers::*;
    use object_store::memory::InMemory;
    use s3_event_core::TimeSource;
    use serde_json::json;

    mod helpers {
        use object_store::memory::InMemory;
        use object_store::path::Path;
        use object_store::{ObjectStore, ObjectStoreExt};

        /// Every key in the store, sorted, with its bytes.
        pub async fn objects(store: &InMemory) -> Vec<(String, Vec<u8>)> {
            let mut keys = Vec::new();
            let mut dirs: Vec<Option<Path>> = vec![None];
            while let Some(dir) = dirs.pop() {
                let l = store.list_with_delimiter(dir.as_ref()).await.unwrap();
                dirs.extend(l.common_prefixes.into_iter().map(Some));
                keys.extend(l.objects.into_iter().map(|o| o.location));
            }
            keys.sort();
            let mut out = Vec::new();
            for k in keys {
                let b = store.get(&k).await.unwrap().bytes().await.unwrap();
                out.push((k.to_string(), b.to_vec()));
            }
            out
        }
    }

    fn mem() -> Arc<InMemory> {
        Arc::new(InMemory::new())
    }

    #[tokio::test]
    async fn flush_by_count() {
        let store = mem();
        let sink = SinkBuilder::default()
            .with_store(store.clone())
            .with_prefix("p/")
            .with_instance_id("inst")
            .with_flush_size(1000)
            .build()
            .unwrap();
        for i in 0..2500 {
            sink.push(&json!({ "n": i })).unwrap();
        }
        sink.shutdown().await.unwrap();
        let objs = objects(&store).await;
        assert_eq!(objs.len(), 3);
        let mut n = 0;
        for (i, (key, bytes)) in objs.iter().enumerate() {
            assert!(key.starts_with("p/"), "{key}");
            assert!(key.ends_with(&format!("inst-{i:020}.ndjson.gz")), "{key}");
            let d = decode(key, bytes).unwrap();
            assert!(d.bad.is_empty());
            for r in d.records {
                assert_eq!(r["n"], n);
                n += 1;
            }
        }
        assert_eq!(n, 2500);
        let st = sink.stats();
        assert_eq!(st.events_accepted, 2500);
        assert_eq!(st.objects_uploaded, 3);
        assert_eq!(st.open_batches, 0);
        assert_eq!(
            st.bytes_uploaded,
            objs.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
        );
        assert!(sink.push(&json!({})).is_err());
    }

    #[tokio::test]
    async fn flush_by_encoded_bytes() {
        // gzip's size is an estimate until the compressor has produced output,
        // so its limit is large enough for several deflate blocks.
        for (compression, max, count) in [
            (Compression::None, 16 * 1024, 3000u64),
            (Compression::gzip(), 256 * 1024, 60_000),
        ] {
            let store = mem();
            let sink = SinkBuilder::default()
                .with_store(store.clone())
                .with_compression(compression)
                .with_flush_size(1_000_000)
                .with_max_bytes(max)
                .build()
                .unwrap();
            let mut seed = 12345u64;
            let mut largest = 0;
            for i in 0..count {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                let rec = json!({ "n": i, "r": format!("{seed:x}{:x}", seed >> 7) });
                largest = largest.max(serde_json::to_vec(&rec).unwrap().len() + 1);
                sink.push(&rec).unwrap();
            }
            sink.shutdown().await.unwrap();
            let objs = objects(&store).await;
            assert!(objs.len() >= 3, "{}", objs.len());
            let mut total = 0;
            for (i, (key, bytes)) in objs.iter().enumerate() {
                assert!(bytes.len() <= max + largest, "{} > {max}", bytes.len());
                if i + 1 < objs.len() {
                    assert!(
                        bytes.len() >= max * 3 / 4,
                        "{key}: {} too small",
                        bytes.len()
                    );
                }
                total += decode(key, bytes).unwrap().records.len();
            }
            assert_eq!(total as u64, count);
        }
    }

    #[tokio::test]
    async fn flush_by_interval_without_more_events() {
        let store = mem();
        let sink = SinkBuilder::default()
            .with_store(store.clone())
            .with_flush_interval(Duration::from_millis(200))
            .build()
            .unwrap();
        for i in 0..3 {
            sink.push(&json!({ "n": i })).unwrap();
        }
        assert!(objects(&store).await.is_empty());
        tokio::time::sleep(Duration::from_millis(600)).await;
        let objs = objects(&store).await;
        assert_eq!(objs.len(), 1);
        assert_eq!(decode(&objs[0].0, &objs[0].1).unwrap().records.len(), 3);
        assert_eq!(sink.stats().open_batches, 0);
        sink.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn two_partitions_by_event_time() {
        let store = mem();
        let p = TimePartitioner::default().with_time_source(TimeSource::Event {
            fallback_to_processing: false,
        });
        let sink = SinkBuilder::default()
            .with_store(store.clone())
            .with_prefix("ev/")
            .with_partitioner(Arc::new(p))
            .build()
            .unwrap();
        let events: Vec<_> = (0..10)
            .map(|i| {
                let hour = if i % 2 == 0 { 10 } else { 11 };
                json!({ "eventTime": format!("2024-03-05T{hour}:15:00Z"), "n": i })
            })
            .collect();
        sink.push_batch(&events).unwrap();
        assert_eq!(sink.stats().open_batches, 2);
        sink.flush().await.unwrap();
        let objs = objects(&store).await;
        assert_eq!(objs.len(), 2);
        assert!(objs[0].0.starts_with("ev/2024/03/05/10/"), "{}", objs[0].0);
        assert!(objs[1].0.starts_with("ev/2024/03/05/11/"), "{}", objs[1].0);
        for (k, b) in &objs {
            assert_eq!(decode(k, b).unwrap().records.len(), 5);
        }
        sink.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn max_open_batches_flushes_oldest() {
        let store = mem();
        let p = TimePartitioner::default().with_time_source(TimeSource::Event {
            fallback_to_processing: false,
        });
        let sink = SinkBuilder::default()
            .with_store(store.clone())
            .with_partitioner(Arc::new(p))
            .with_max_open_batches(2)
            .build()
            .unwrap();
        for hour in 10..13 {
            sink.push(&json!({ "eventTime": format!("2024-03-05T{hour}:00:00Z") }))
                .unwrap();
        }
        assert_eq!(sink.stats().open_batches, 2);
        sink.flush().await.unwrap();
        let objs = objects(&store).await;
        assert_eq!(objs.len(), 3);
        assert!(objs[0].0.starts_with("2024/03/05/10/"));
        assert!(objs[0].0.ends_with(&format!("-{:020}.ndjson.gz", 0)));
        sink.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn json_array_without_compression_is_valid_json() {
        let store = mem();
        let sink = SinkBuilder::default()
            .with_store(store.clone())
            .with_encoding(Encoding::JsonArray)
            .with_compression(Compression::None)
            .build()
            .unwrap();
        for i in 0..5 {
            sink.push(&json!({ "n": i })).unwrap();
        }
        sink.shutdown().await.unwrap();
        let objs = objects(&store).await;
        assert_eq!(objs.len(), 1);
        assert!(objs[0].0.ends_with(".json"));
        let v: serde_json::Value = serde_json::from_slice(&objs[0].1).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 5);
        assert_eq!(v[4]["n"], 4);
    }

    #[tokio::test]
    async fn local_store_writes_under_tempdir() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let sink = SinkBuilder::default()
            .with_store(store)
            .with_prefix("out/")
            .with_instance_id("i")
            .with_flush_size(2)
            .build()
            .unwrap();
        for i in 0..5 {
            sink.push(&json!({ "n": i })).unwrap();
        }
        sink.shutdown().await.unwrap();
        let mut files = Vec::new();
        let mut stack = vec![dir.path().join("out")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    files.push(p);
                }
            }
        }
        files.sort();
        assert_eq!(files.len(), 3);
        let mut n = 0;
        for f in &files {
            let name = f.file_name().unwrap().to_str().unwrap();
            assert!(
                name.starts_with("i-") && name.ends_with(".ndjson.gz"),
                "{name}"
            );
            n += decode(name, &std::fs::read(f).unwrap())
                .unwrap()
                .records
                .len();
        }
        assert_eq!(n, 5);
    }

    #[tokio::test]
    async fn bad_prefix_or_instance_id_fails_at_build() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        for (prefix, instance) in [("a//b/", "i"), ("ok/", "a/b"), ("ok/", "")] {
            let built = Sink::builder()
                .with_store(store.clone())
                .with_prefix(prefix)
                .with_instance_id(instance)
                .build();
            let Err(e) = built else {
                panic!("build must fail for prefix {prefix:?}, instance {instance:?}")
            };
            assert!(
                matches!(e, Error::InvalidKey { .. } | Error::InvalidConfig { .. }),
                "{prefix} {instance}: {e}"
            );
        }
    }
}
