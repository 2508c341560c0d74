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
//! a spool, `seq` is the spool sequence number of the batch's first event and
//! the instance id is kept in the spool directory, so a batch re-uploaded
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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
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
    spool: Option<SpoolOptions>,
    part_size: usize,
    max_concurrent_uploads: usize,
    naming: KeyNaming,
    shards: usize,
    background_compression: bool,
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
            .field("spool", &self.spool)
            .field("part_size", &self.part_size)
            .field("max_concurrent_uploads", &self.max_concurrent_uploads)
            .field("naming", &self.naming)
            .field("shards", &self.shards)
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
            spool: None,
            part_size: DEFAULT_PART_SIZE,
            max_concurrent_uploads: DEFAULT_MAX_CONCURRENT_UPLOADS,
            naming: KeyNaming::Sequence,
            shards: 1,
            background_compression: false,
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

    /// The instance id in object names. With a spool, the default is the id
    /// stored in the spool directory (generated on first use), so names are
    /// reproducible across restarts. Without one it is derived from the
    /// process id and the start time (`{pid:x}{unix nanos:x}`).
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

    /// Spools every accepted event to local disk before `push` returns, and
    /// recovers what a previous process left there on build (default: no
    /// spool; events in memory are lost if the process dies).
    pub fn with_spool(mut self, spool: SpoolOptions) -> Self {
        self.spool = Some(spool);
        self
    }

    /// Objects larger than this are uploaded in parts of this size (default
    /// [`DEFAULT_PART_SIZE`]; at least [`MIN_PART_SIZE`], so no part but the
    /// last is ever under S3's minimum).
    pub fn with_part_size(mut self, part_size: usize) -> Self {
        self.part_size = part_size.max(MIN_PART_SIZE);
        self
    }

    /// Number of independently locked sets of open batches (default 1; at
    /// most 256). With more than one, concurrent `push` calls encode and
    /// compress in parallel on different cores; each shard keeps its own
    /// batch per partition, so a partition can get up to this many objects
    /// per flush, and the open-batch bound applies per shard. A push goes to
    /// the shard of its first event's partition when that shard is free, so
    /// a partition's events mostly stay in one shard.
    pub fn with_shards(mut self, shards: usize) -> Self {
        self.shards = shards.clamp(1, 256);
        self
    }

    /// Compresses gzip batches on tokio's blocking-thread pool instead of in
    /// `push` (default off). A pusher then serializes the next events while
    /// another core deflates the last ones: with one pusher of
    /// `serde_json::Value`s, about 1.4x the events per second (the `sink`
    /// bench). Objects, keys and the flush policy are the same; an upload
    /// waits for its object's compression. Leave it off when many tasks push
    /// at once (a server): the runtime's workers are busy already, and the
    /// extra threads would only compete with them.
    pub fn with_background_compression(mut self, on: bool) -> Self {
        self.background_compression = on;
        self
    }

    /// How object names are made (default [`KeyNaming::Sequence`]).
    pub fn with_key_naming(mut self, naming: KeyNaming) -> Self {
        self.naming = naming;
        self
    }

    /// Bound on uploads running at once (default
    /// [`DEFAULT_MAX_CONCURRENT_UPLOADS`]; at least 1).
    pub fn with_max_concurrent_uploads(mut self, n: usize) -> Self {
        self.max_concurrent_uploads = n.max(1);
        self
    }

    /// Builds the sink and spawns its background tasks; must be called inside
    /// a tokio runtime. With a spool, replays it first: batches a previous
    /// process left closed but not uploaded, and its unclosed events, are
    /// queued for upload before any new event.
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
                    crate::LocalDir::new(DEFAULT_DATA_DIR)
                        .map_err(|source| Error::Store { source })?,
                )
            }
        };
        let partitioner = self
            .partitioner
            .unwrap_or_else(|| Arc::new(TimePartitioner::default()));
        let (spool, recovered) = match &self.spool {
            Some(opts) => {
                let (s, r) = Spool::open(opts).map_err(|source| Error::Spool {
                    dir: opts.dir.display().to_string(),
                    source,
                })?;
                (Some(s), r)
            }
            None => (None, Recovered::default()),
        };
        let instance_id = match (self.instance_id, &self.spool) {
            (Some(id), _) => id,
            (None, Some(opts)) => {
                spool::instance_id(&opts.dir, default_instance_id).map_err(|source| {
                    Error::Spool {
                        dir: opts.dir.display().to_string(),
                        source: s3_event_core::log::Error::Io {
                            op: "store the instance id",
                            path: opts.dir.join("instance-id"),
                            source,
                        },
                    }
                })?
            }
            (None, None) => default_instance_id(),
        };
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
        let log = spool.as_ref().map(Spool::log);
        let fsync = spool.as_ref().map(Spool::fsync);
        let name_len = {
            let ext = self.encoding.extension().len() + self.compression.extension().len();
            let name = match self.naming {
                KeyNaming::Sequence => instance_id.len() + 21,
                KeyNaming::Uuid => 36,
            };
            // "-r" and up to four digits for alternate keys.
            name + ext + 6
        };
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
            part_size: self.part_size,
            max_concurrent_uploads: self.max_concurrent_uploads,
            naming: self.naming,
            name_len,
            background_compression: self.background_compression,
            attributes_supported: AtomicBool::new(true),
            create_supported: AtomicBool::new(true),
            degraded: Mutex::new(None),
            log,
            fsync,
            spool_dir: self
                .spool
                .as_ref()
                .map(|o| o.dir.display().to_string())
                .unwrap_or_default(),
            shards: (0..self.shards).map(|_| Mutex::default()).collect(),
            spool: spool.map(Mutex::new),
            closed: AtomicBool::new(false),
            batch_seq: AtomicU64::new(0),
            wake: Notify::new(),
            space: Notify::new(),
            stop: AtomicBool::new(false),
            tx,
            pending,
            counters: Counters::default(),
            deleting: AtomicBool::new(false),
            delete_requested: AtomicBool::new(false),
            #[cfg(test)]
            hold_deletes: AtomicBool::new(false),
        });
        let recovered = inner.close_recovered(recovered)?;
        let mut tasks = vec![tokio::spawn(background(Arc::clone(&inner), rx))];
        if !recovered.is_empty() {
            tasks.push(start_replay(&inner, recovered));
        }
        Ok(Sink {
            inner,
            tasks: Mutex::new(tasks),
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
}

/// An open batch's bytes: encoded in `push`, or gzip compressed in the
/// background ([`SinkBuilder::with_background_compression`]).
enum Body {
    Inline(BatchEncoder),
    Piped(GzipPipe),
}

/// A closed batch's object: ready, or being compressed.
enum Payload {
    Ready(bytes::Bytes),
    Compressing(crate::pipe::Finished),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Inline(e) => e.len(),
            Body::Piped(p) => p.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn encoded_len(&self) -> usize {
        match self {
            Body::Inline(e) => e.encoded_len(),
            Body::Piped(p) => p.encoded_len(),
        }
    }

    fn push_checked(&mut self, record: &[u8]) -> Result<()> {
        match self {
            Body::Inline(e) => e.push_checked(record),
            Body::Piped(p) => {
                p.push_checked(record);
                Ok(())
            }
        }
    }

    fn finish(self) -> Result<Payload> {
        Ok(match self {
            Body::Inline(e) => Payload::Ready(e.finish()?.into()),
            Body::Piped(p) => Payload::Compressing(p.finish()),
        })
    }
}

struct OpenBatch {
    /// Encoded as the batch's sink says; the batch's own encoding and
    /// compression are the sink's.
    encoder: Body,
    deadline: Instant,
    opened: u64,
    /// Spool sequence numbers of the events, in order (empty without a spool).
    seqs: Vec<u64>,
}

/// One independently locked set of open batches. Concurrent pushers take
/// different shards, so their encoding (gzip) runs in parallel; each shard
/// keeps its own batch per partition.
#[derive(Default)]
struct Shard {
    batches: HashMap<String, OpenBatch>,
    next_opened: u64,
    /// Closed batches waiting for the spool write that covers their close frame.
    outbox: Vec<Job>,
    /// Their close frames.
    closes: Vec<CloseFrame>,
}

struct Job {
    key: Path,
    /// The key's extension (`.ndjson.gz`), for alternate keys.
    ext: String,
    payload: Payload,
    content_type: &'static str,
    content_encoding: Option<&'static str>,
    /// The spool batch: its key sequence number and events.
    spooled: Option<(u64, Vec<u64>)>,
    /// Its close frame, written again if the fsync that covered it failed.
    close: Option<CloseFrame>,
    /// The logical spool position the close frame must be durable to.
    durable_at: u64,
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
}

/// Locks `m`, also when a panic elsewhere has poisoned it.
pub(crate) fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn spool_err(&self, source: s3_event_core::log::Error) -> Error {
        Error::Spool {
            dir: self.spool_dir.clone(),
            source,
        }
    }

    /// A shard for a pusher whose first event goes to `partition`: the
    /// partition's own shard when it is free (so a partition's events, and
    /// its deflate state, stay on one shard and objects fill up), else the
    /// next free one, else the partition's shard once it is free.
    fn pick_shard(&self, partition: &str) -> (usize, MutexGuard<'_, Shard>) {
        let n = self.shards.len();
        if n == 1 {
            return (0, relock(&self.shards[0]));
        }
        let home = {
            use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
            BuildHasherDefault::<DefaultHasher>::default().hash_one(partition) as usize % n
        };
        for k in 0..n {
            let id = (home + k) % n;
            if let Ok(g) = self.shards[id].try_lock() {
                return (id, g);
            }
        }
        (home, relock(&self.shards[home]))
    }

    fn key(&self, partition: &str, seq: u64, ext: &str) -> Result<Path> {
        let key = match self.naming {
            KeyNaming::Sequence => format!(
                "{}{}{}-{:020}{}",
                self.prefix, partition, self.instance_id, seq, ext
            ),
            KeyNaming::Uuid => {
                let name = format!("{}-{seq}", self.instance_id);
                let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes());
                format!("{}{}{}{}", self.prefix, partition, id, ext)
            }
        };
        Path::parse(&key).map_err(|source| Error::InvalidKey { key, source })
    }

    /// Closes `partition`'s batch in `shard` (if open): puts it and its close
    /// frame in the shard's outbox. [`Inner::commit`] writes and sends them.
    fn close(&self, shard_id: usize, shard: &mut Shard, partition: &str) -> Result<()> {
        let Some(batch) = shard.batches.remove(partition) else {
            return Ok(());
        };
        if batch.encoder.is_empty() {
            return Ok(());
        }
        let (encoding, compression) = (self.encoding, self.compression);
        let ext = format!("{}{}", encoding.extension(), compression.extension());
        let spooled = self.spool.is_some();
        let seq = match batch.seqs.first() {
            Some(&s) if spooled => s,
            _ => self.batch_seq.fetch_add(1, Ordering::Relaxed),
        };
        let path = self.key(partition, seq, &ext)?;
        let content_type = encoding.content_type();
        let content_encoding = compression.content_encoding();
        let payload = batch.encoder.finish()?;
        let close = spooled.then(|| CloseFrame {
            key_seq: seq,
            last_seq: *batch.seqs.last().expect("a spooled batch has events"),
            shard: shard_id as u16,
            encoding,
            compression,
            partition: partition.to_owned(),
            key: path.to_string(),
        });
        shard.closes.extend(close.clone());
        shard.outbox.push(Job {
            key: path,
            ext,
            payload,
            content_type,
            content_encoding,
            spooled: spooled.then_some((seq, batch.seqs)),
            close,
            durable_at: 0,
        });
        Ok(())
    }

    /// Writes the shard's close frames to the spool and sends its outbox to
    /// the uploader; returns the token that makes the frames durable. If the
    /// write fails, the close frames and their batches stay in the shard, to
    /// be written and sent by a later call (the background task retries).
    fn commit(&self, shard: &mut Shard) -> Result<u64> {
        let mut pos = 0;
        if let Some(spool) = &self.spool {
            if !shard.closes.is_empty() {
                let mut sp = relock(spool);
                for c in &shard.closes {
                    sp.append_close(c);
                }
                pos = sp.commit().map_err(|e| self.spool_err(e))?;
                shard.closes.clear();
            }
        }
        for mut job in shard.outbox.drain(..) {
            job.durable_at = pos;
            self.pending.send_modify(|n| *n += 1);
            if self.tx.send(job).is_err() {
                // The background task is gone (shutdown): nothing will upload it.
                self.pending.send_modify(|n| *n -= 1);
                return Err(Error::Shutdown);
            }
        }
        Ok(pos)
    }

    /// Appends one record (already in the spool as `seq`) to its
    /// partition's batch in `shard`, closing batches as the flush policy says.
    fn append(
        &self,
        shard_id: usize,
        shard: &mut Shard,
        partition: &str,
        record: &[u8],
        seq: Option<u64>,
    ) -> Result<()> {
        // Uncompressed, the size is exact: close first if this record would
        // take the batch past max_bytes. Compressed, the record's share is
        // unknown until written, so the check after the append decides.
        if self.compression == Compression::None {
            if let Some(b) = shard
                .batches
                .get(partition)
                .filter(|b| !b.encoder.is_empty())
            {
                if b.encoder.encoded_len() + record.len() + 1 > self.max_bytes {
                    self.close(shard_id, shard, partition)?;
                }
            }
        }
        if !shard.batches.contains_key(partition) {
            if shard.batches.len() >= self.max_open_batches {
                let oldest = shard
                    .batches
                    .iter()
                    .min_by_key(|(_, b)| b.opened)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.close(shard_id, shard, &oldest)?;
                }
            }
            let opened = shard.next_opened;
            shard.next_opened += 1;
            shard.batches.insert(
                partition.to_owned(),
                OpenBatch {
                    encoder: match self.compression {
                        Compression::Gzip { level } if self.background_compression => {
                            Body::Piped(GzipPipe::new(self.encoding, level, self.max_bytes))
                        }
                        _ => Body::Inline(BatchEncoder::new(self.encoding, self.compression)),
                    },
                    deadline: Instant::now() + self.flush_interval,
                    opened,
                    seqs: Vec::new(),
                },
            );
            self.wake.notify_one();
        }
        let batch = shard
            .batches
            .get_mut(partition)
            .expect("batch was just inserted");
        batch.encoder.push_checked(record)?;
        batch.seqs.extend(seq);
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
            self.close(shard_id, shard, partition)?;
        }
        Ok(())
    }

    /// Checks what `BatchEncoder::push_raw` would reject, before the record
    /// goes into the spool.
    fn check_record(&self, index: usize, record: &[u8]) -> Result<()> {
        match crate::encode::invalid_record(self.encoding, record) {
            Some(reason) => Err(Error::InvalidRecord { index, reason }),
            None => Ok(()),
        }
    }

    fn close_all(&self) -> Result<()> {
        for (id, shard) in self.shards.iter().enumerate() {
            let mut shard = relock(shard);
            let keys: Vec<String> = shard.batches.keys().cloned().collect();
            for k in keys {
                self.close(id, &mut shard, &k)?;
            }
            self.commit(&mut shard)?;
        }
        Ok(())
    }

    /// Closes the batches whose deadline has passed; returns the earliest
    /// remaining deadline.
    fn close_expired(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut earliest: Option<Instant> = None;
        for (id, shard) in self.shards.iter().enumerate() {
            let mut shard = relock(shard);
            let expired: Vec<String> = shard
                .batches
                .iter()
                .filter(|(_, b)| b.deadline <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for k in expired {
                // A key error here would also have failed at push time.
                if let Err(e) = self.close(id, &mut shard, &k) {
                    tracing::error!(partition = %k, error = %e, "sink: closing a batch failed");
                }
            }
            let mut next = shard.batches.values().map(|b| b.deadline).min();
            if let Err(e) = self.commit(&mut shard) {
                tracing::error!(error = %e, "sink: writing close frames failed; retrying");
                let retry = now + COMMIT_RETRY;
                next = Some(next.map_or(retry, |n| n.min(retry)));
            }
            earliest = match (earliest, next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        earliest
    }

    /// Marks a spooled batch uploaded and deletes the spool segments that no
    /// longer hold anything to upload.
    async fn uploaded(&self, key_seq: u64, seqs: &[u64]) {
        let Some(spool) = &self.spool else { return };
        let mut attempt = 0;
        loop {
            let written = relock(spool).uploaded(key_seq, seqs);
            let Err(e) = written else { break };
            // Until it is written, the batch's segments stay (a restart
            // would upload it again, finding its object already there).
            if self.closed.load(Ordering::Acquire) && attempt >= 3 {
                tracing::error!(error = %e, key_seq, "spool: writing an uploaded frame failed; giving up at shutdown");
                return;
            }
            tracing::error!(error = %e, key_seq, "spool: writing an uploaded frame failed; retrying");
            tokio::time::sleep(backoff(attempt)).await;
            attempt = attempt.saturating_add(1);
        }
        self.delete_segments(spool).await;
    }

    /// Deletes the segments that hold nothing left to upload, oldest first,
    /// by one task at a time: uploads finishing together must not delete
    /// their segments in whatever order their fsyncs return, or a crash
    /// could leave an older segment whose batches' close and uploaded frames
    /// were in a deleted newer one (its events would be uploaded again, under
    /// a key that may be an uploaded batch's: that object would be
    /// overwritten with part of its events). A task that finds another at
    /// work leaves its request to it.
    async fn delete_segments(&self, spool: &Mutex<Spool>) {
        self.delete_requested.store(true, Ordering::SeqCst);
        loop {
            if self
                .deleting
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                return;
            }
            {
                let _turn = DeleteTurn(&self.deleting);
                while self.delete_requested.swap(false, Ordering::SeqCst) {
                    if !self.delete_pass(spool).await {
                        return;
                    }
                }
            }
            // A request made while this task still had the turn.
            if !self.delete_requested.load(Ordering::SeqCst) {
                return;
            }
        }
    }

    /// Deletes what [`Spool::deletable`] lists once the uploaded frames are
    /// durable; false if that failed (the segments are kept for a later try).
    async fn delete_pass(&self, spool: &Mutex<Spool>) -> bool {
        let (through, token, log) = {
            let s = relock(spool);
            match s.deletable() {
                Some((through, token)) => (through, token, s.log()),
                None => return true,
            }
        };
        #[cfg(test)]
        if self.hold_deletes.swap(false, Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if let Err(e) = log.synced(token).await {
            tracing::error!(error = %e, "spool: fsync failed; segments kept");
            return false;
        }
        let removed = tokio::task::spawn_blocking(move || log.remove_through(through)).await;
        relock(spool).deleted();
        match removed {
            Ok(Ok(n)) => {
                if n > 0 {
                    self.space.notify_waiters();
                }
                true
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "spool: deleting uploaded segments failed; kept for a later try");
                false
            }
            Err(_) => false,
        }
    }
}

/// Starts uploading what a previous process left in the spool: closed
/// batches under their recorded keys, unclosed events as new batches. Runs
/// on a blocking thread, reading the spool a chunk at a time and waiting for
/// room among the pending uploads, so memory stays bounded by a few encoded
/// batches however large the spool is; [`Sink::flush`] waits for it.
fn start_replay(inner: &Arc<Inner>, recovered: Recovered) -> JoinHandle<()> {
    if recovered.torn_bytes > 0 {
        tracing::warn!(
            bytes = recovered.torn_bytes,
            "sink: cut a torn spool tail on start"
        );
    }
    inner.pending.send_modify(|n| *n += 1);
    let inner = Arc::clone(inner);
    let rt = tokio::runtime::Handle::current();
    let blocking = tokio::task::spawn_blocking(move || {
        if let Err(e) = inner.replay(recovered, &rt) {
            tracing::error!(error = %e, "sink: replaying the spool failed; its events stay there for the next start");
        }
        inner.pending.send_modify(|n| *n -= 1);
        inner.wake.notify_one();
    });
    tokio::spawn(async move {
        let _ = blocking.await;
    })
}

impl Inner {
    /// Closes the events a previous process left in no closed batch, before
    /// any new event is spooled: a close frame covers every earlier event of
    /// its shard and partition, so one written after new events of the same
    /// shard and partition would, on the next start, take those into the
    /// wrong batch. Counts the recovered events.
    fn close_recovered(&self, mut recovered: Recovered) -> Result<Recovered> {
        let events: u64 = recovered
            .closed
            .iter()
            .chain(&recovered.open)
            .map(|b| b.count)
            .sum();
        self.counters
            .events_recovered
            .store(events, Ordering::Relaxed);
        let Some(spool) = &self.spool else {
            return Ok(recovered);
        };
        if recovered.open.is_empty() {
            return Ok(recovered);
        }
        let ext = format!(
            "{}{}",
            self.encoding.extension(),
            self.compression.extension()
        );
        let mut sp = relock(spool);
        for b in &mut recovered.open {
            let key = self.key(&b.partition, b.key_seq, &ext)?;
            b.encoding = self.encoding;
            b.compression = self.compression;
            b.key = Some(key.to_string());
            sp.append_close(&CloseFrame {
                key_seq: b.key_seq,
                last_seq: b.last_seq,
                // Closed under the shard that wrote the events, so a replay
                // of this frame finds them.
                shard: b.shard,
                encoding: b.encoding,
                compression: b.compression,
                partition: b.partition.clone(),
                key: key.to_string(),
            });
        }
        let token = sp.commit().map_err(|e| self.spool_err(e))?;
        for b in &mut recovered.open {
            b.durable_at = token;
        }
        Ok(recovered)
    }

    fn replay(&self, recovered: Recovered, rt: &tokio::runtime::Handle) -> Result<()> {
        let Some(spool) = &self.spool else {
            return Ok(());
        };
        let log = relock(spool).log();
        let segments = recovered.segments;
        let batches: Vec<PendingBatch> =
            recovered.closed.into_iter().chain(recovered.open).collect();
        let mut building: HashMap<usize, (BatchEncoder, Vec<u64>)> = HashMap::new();
        let mut failed = None;
        spool::replay(&log, &segments, &batches, |i, event| {
            let b = &batches[i];
            let (encoding, compression) = (b.encoding, b.compression);
            match event {
                Some((seq, record)) => {
                    let (enc, seqs) = building
                        .entry(i)
                        .or_insert_with(|| (BatchEncoder::new(encoding, compression), Vec::new()));
                    if let Err(e) = push_recovered(enc, record) {
                        failed.get_or_insert(e);
                    }
                    seqs.push(seq);
                }
                None => {
                    let Some((enc, seqs)) = building.remove(&i) else {
                        return;
                    };
                    if let Err(e) = self.requeue(b, enc, seqs, rt) {
                        failed.get_or_insert(e);
                    }
                }
            }
        })
        .map_err(|e| self.spool_err(e))?;
        failed.map_or(Ok(()), Err)
    }

    /// Queues one recovered batch for upload once there is room, writing
    /// its close frame first if it had none.
    fn requeue(
        &self,
        b: &PendingBatch,
        enc: BatchEncoder,
        seqs: Vec<u64>,
        rt: &tokio::runtime::Handle,
    ) -> Result<()> {
        let limit = self.max_concurrent_uploads * 2 + 1;
        rt.block_on(async {
            let mut rx = self.pending.subscribe();
            let _ = rx.wait_for(|n| *n < limit).await;
        });
        let k = b
            .key
            .clone()
            .expect("recovered batches are closed on start");
        let key = Path::parse(&k).map_err(|source| Error::InvalidKey { key: k, source })?;
        let close = CloseFrame {
            key_seq: b.key_seq,
            last_seq: b.last_seq,
            shard: b.shard,
            encoding: enc.encoding(),
            compression: enc.compression(),
            partition: b.partition.clone(),
            key: key.to_string(),
        };
        let durable_at = b.durable_at;
        tracing::info!(key = %key, events = seqs.len(), "sink: re-uploading a spooled batch");
        let (content_type, content_encoding) = (enc.content_type(), enc.content_encoding());
        let job = Job {
            key,
            ext: enc.extension(),
            payload: Payload::Ready(enc.finish()?.into()),
            content_type,
            content_encoding,
            spooled: Some((b.key_seq, seqs)),
            close: Some(close),
            durable_at,
        };
        self.pending.send_modify(|n| *n += 1);
        if self.tx.send(job).is_err() {
            self.pending.send_modify(|n| *n -= 1);
            return Err(Error::Shutdown);
        }
        Ok(())
    }
}

/// Adds a recovered record to its batch. A record the current encoding
/// refuses (one with raw newlines, spooled while the sink wrote JSON arrays,
/// now NDJSON) is the same JSON with those newlines as spaces: a raw newline
/// can only be whitespace between JSON tokens.
fn push_recovered(enc: &mut BatchEncoder, record: &[u8]) -> Result<()> {
    match crate::encode::invalid_record(enc.encoding(), record) {
        None => enc.push_raw(record),
        Some(_) if memchr::memchr(b'\n', record).is_some() => {
            let flat: Vec<u8> = record
                .iter()
                .map(|&b| if b == b'\n' { b' ' } else { b })
                .collect();
            enc.push_raw(&flat)
        }
        Some(reason) => {
            tracing::error!(reason, "sink: a spooled record cannot be encoded; skipped");
            Ok(())
        }
    }
}

/// Holds [`Inner`]'s segment-deletion turn; gives it back when dropped (also
/// when the task is cancelled).
struct DeleteTurn<'a>(&'a AtomicBool);

impl Drop for DeleteTurn<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
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
        let room = uploads.len() < inner.max_concurrent_uploads;
        tokio::select! {
            () = sleep => {}
            () = inner.wake.notified() => {
                if inner.stop.load(Ordering::Acquire) && *inner.pending.borrow() == 0 {
                    break;
                }
            }
            job = rx.recv(), if room => match job {
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

/// Stores `job` once: create-only under its key, or, when another batch's
/// object holds that key, under the next free alternate key (see
/// [`crate::upload`]). Returns the key it is stored under.
async fn store_job(inner: &Inner, job: &Job, bytes: &bytes::Bytes) -> object_store::Result<Path> {
    let mut n = 0;
    loop {
        let key = crate::upload::alternate(&job.key, &job.ext, n);
        let put = crate::upload::Put {
            store: &*inner.store,
            content_type: job.content_type,
            content_encoding: job.content_encoding,
            part_size: inner.part_size,
            attributes: inner.attributes_supported.load(Ordering::Relaxed),
            create: inner.create_supported.load(Ordering::Relaxed),
        };
        match put.put(&key, bytes).await {
            Ok(()) => return Ok(key),
            Err(object_store::Error::NotImplemented { operation, .. }) => {
                if put.attributes {
                    // The store keeps no content type (the local filesystem).
                    inner.attributes_supported.store(false, Ordering::Relaxed);
                } else if put.create {
                    tracing::warn!(%operation, "sink: the store has no create-only puts; a key reused by another batch would be overwritten");
                    inner.create_supported.store(false, Ordering::Relaxed);
                } else {
                    return Err(object_store::Error::NotImplemented {
                        operation,
                        implementer: inner.store.to_string(),
                    });
                }
            }
            Err(object_store::Error::AlreadyExists { .. }) => {
                if put.holds(&key, bytes).await? {
                    // Stored by an earlier attempt (a lost reply, or before
                    // a crash): done.
                    return Ok(key);
                }
                inner
                    .counters
                    .key_collisions
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    key = %key,
                    "sink: the key holds another batch's object (a reused instance id or a wiped spool?); not overwriting it, trying the next alternate key"
                );
                n += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn upload(inner: Arc<Inner>, mut job: Job) {
    let bytes = match std::mem::replace(&mut job.payload, Payload::Ready(bytes::Bytes::new())) {
        Payload::Ready(b) => b,
        Payload::Compressing(rx) => match rx.await {
            Ok(Ok(v)) => v.into(),
            failed => {
                // Cannot happen short of a deflate bug or the runtime going
                // away; the events stay in the spool (if any) and are
                // uploaded on restart.
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "the compression task did not finish".to_owned(),
                };
                tracing::error!(key = %job.key, %error, "sink: compressing a batch failed; not uploaded");
                inner.pending.send_modify(|n| *n -= 1);
                return;
            }
        },
    };
    let len = bytes.len() as u64;
    // The close frame must be on disk before the object exists.
    if let (Some(log), Some(_)) = (&inner.log, &job.spooled) {
        let mut at = job.durable_at;
        let mut attempt = 0;
        while let Err(e) = log.synced(at).await {
            // The round that covered the close frame failed: the frame may
            // be lost whatever later rounds say, so write it again.
            tracing::error!(error = %e, key = %job.key, "spool: fsync failed before an upload; writing the close frame again");
            tokio::time::sleep(backoff(attempt)).await;
            attempt = attempt.saturating_add(1);
            if let (Some(spool), Some(c)) = (&inner.spool, &job.close) {
                let mut sp = relock(spool);
                sp.append_close(c);
                match sp.commit() {
                    Ok(t) => at = t,
                    Err(e) => {
                        tracing::error!(error = %e, "spool: writing a close frame failed; retrying")
                    }
                }
            }
        }
    }
    let mut attempt: u32 = 0;
    let key = loop {
        match store_job(&inner, &job, &bytes).await {
            Ok(key) => {
                let mut d = relock(&inner.degraded);
                if d.take().is_some() {
                    tracing::info!(key = %key, "sink: uploads work again");
                }
                break key;
            }
            Err(e) => {
                inner
                    .counters
                    .upload_retries
                    .fetch_add(1, Ordering::Relaxed);
                match crate::upload::permanent_reason(&e) {
                    Some(reason) => {
                        // Kept and retried (the operator may fix the bucket
                        // or the credentials), but said loudly.
                        inner
                            .counters
                            .upload_permanent_errors
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            key = %job.key, attempt, %reason,
                            "sink: upload failed and retrying will not help until the store's configuration is fixed; the batch is kept and retried"
                        );
                        *relock(&inner.degraded) = Some(reason);
                    }
                    None => {
                        tracing::warn!(key = %job.key, attempt, error = %e, "sink: upload failed; retrying")
                    }
                }
                tokio::time::sleep(backoff(attempt)).await;
                attempt = attempt.saturating_add(1);
            }
        }
    };
    tracing::info!(key = %key, bytes = len, "upload file {} completed", key);
    if let Some((key_seq, seqs)) = &job.spooled {
        inner.uploaded(*key_seq, seqs).await;
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
        let now = Utc::now();
        // All records serialized into one buffer: one allocation, not one
        // per record.
        let mut buf = Vec::new();
        let mut records = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            let start = buf.len();
            serde_json::to_writer(&mut buf, event)
                .map_err(|source| Error::Serialize { index, source })?;
            inner.check_record(index, &buf[start..])?;
            if index == 0 {
                // Room for the rest, if they are about the first one's size.
                buf.reserve(buf.len().saturating_mul(events.len() - 1));
            }
            let partition = inner
                .partitioner
                .partition(event, now)
                .map_err(|source| Error::Partition { source })?
                .into_string();
            let len = inner.prefix.len() + partition.len() + inner.name_len;
            if len > MAX_KEY_BYTES {
                return Err(Error::KeyTooLong {
                    index,
                    len,
                    max: MAX_KEY_BYTES,
                });
            }
            records.push((partition, start..buf.len()));
        }
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
            let _ = log.synced(log.written()).await;
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
    #[cfg(test)]
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
            sink.push(&json!({ "n": i })).await.unwrap();
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
        assert!(sink.push(&json!({})).await.is_err());
    }

    #[tokio::test]
    async fn flush_by_encoded_bytes() {
        // gzip's size is an estimate until the compressor has produced output,
        // so its limit is large enough for several deflate blocks.
        for (compression, max, count, background) in [
            (Compression::None, 16 * 1024, 3000u64, false),
            (Compression::gzip(), 256 * 1024, 60_000, false),
            (Compression::gzip(), 256 * 1024, 60_000, true),
        ] {
            let store = mem();
            let sink = SinkBuilder::default()
                .with_store(store.clone())
                .with_compression(compression)
                .with_flush_size(1_000_000)
                .with_max_bytes(max)
                .with_background_compression(background)
                .build()
                .unwrap();
            let mut seed = 12345u64;
            let mut largest = 0;
            for i in 0..count {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                let rec = json!({ "n": i, "r": format!("{seed:x}{:x}", seed >> 7) });
                largest = largest.max(serde_json::to_vec(&rec).unwrap().len() + 1);
                sink.push(&rec).await.unwrap();
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
            sink.push(&json!({ "n": i })).await.unwrap();
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
        sink.push_batch(&events).await.unwrap();
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
                .await
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
    async fn raw_json_is_stored_byte_for_byte() {
        use serde_json::value::RawValue;
        let store = mem();
        let sink = SinkBuilder::default()
            .with_store(store.clone())
            .with_compression(Compression::None)
            .build()
            .unwrap();
        let texts = [r#"{"n": 1.50, "s":"caf\u00e9"}"#, r#"[1,  2]"#, r#""x""#];
        let raws: Vec<Box<RawValue>> = texts
            .iter()
            .map(|t| RawValue::from_string((*t).to_owned()).unwrap())
            .collect();
        let refs: Vec<&RawValue> = raws.iter().map(|r| &**r).collect();
        sink.push_batch(&refs).await.unwrap();
        // A raw newline inside a record would split it in NDJSON: refused,
        // naming the record, and nothing of that push is accepted.
        let bad = RawValue::from_string("{\"a\":\n1}".to_owned()).unwrap();
        let e = sink.push_batch(&[&*raws[0], &*bad]).await.unwrap_err();
        assert!(matches!(e, Error::InvalidRecord { index: 1, .. }), "{e:?}");
        sink.shutdown().await.unwrap();
        assert_eq!(sink.stats().events_accepted, 3);
        let objs = objects(&store).await;
        assert_eq!(objs.len(), 1);
        let expected: String = texts.iter().map(|t| format!("{t}\n")).collect();
        assert_eq!(String::from_utf8(objs[0].1.clone()).unwrap(), expected);
    }

    /// Compressing in the background changes where deflate runs, not what
    /// it is fed: the objects are the same, byte for byte.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn background_compression_writes_the_same_objects() {
        let partitioner = Arc::new(s3_event_core::TemplatePartitioner::new("p/").unwrap());
        for encoding in [Encoding::Ndjson, Encoding::JsonArray] {
            let mut results = Vec::new();
            for background in [false, true] {
                let store = mem();
                let sink = SinkBuilder::default()
                    .with_store(store.clone())
                    .with_instance_id("same")
                    .with_partitioner(partitioner.clone())
                    .with_encoding(encoding)
                    .with_background_compression(background)
                    .build()
                    .unwrap();
                let events: Vec<serde_json::Value> = (0..6500)
                    .map(|n| json!({ "n": n, "text": format!("{}", n * 7919).repeat(n % 40 + 1) }))
                    .collect();
                for chunk in events.chunks(50) {
                    sink.push_batch(chunk).await.unwrap();
                }
                sink.shutdown().await.unwrap();
                let objs = objects(&store).await;
                let decoded: usize = objs
                    .iter()
                    .map(|(k, b)| decode(k, b).unwrap().records.len())
                    .sum();
                assert_eq!(decoded, 6500, "{encoding} background {background}");
                results.push(objs);
            }
            assert_eq!(results[0].len(), 7, "{encoding}");
            assert!(results[0] == results[1], "{encoding}: the objects differ");
        }
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
            sink.push(&json!({ "n": i })).await.unwrap();
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
        let store =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let sink = SinkBuilder::default()
            .with_store(store)
            .with_prefix("out/")
            .with_instance_id("i")
            .with_flush_size(2)
            .build()
            .unwrap();
        for i in 0..5 {
            sink.push(&json!({ "n": i })).await.unwrap();
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

    /// Two uploads finish together and each frees spool segments: the older
    /// segments' deletion is slow (held here, as by a long fsync) and the
    /// process dies before it. The newer segment (holding the first batch's
    /// close and uploaded frames) must not be gone while the older one (its
    /// first events) is still there: a restart would take those events for
    /// an unclosed batch and upload them under the first batch's key,
    /// overwriting the object that held all of them.
    #[tokio::test]
    async fn a_crash_during_a_slow_segment_deletion_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = mem();
        let build = || {
            let p = TimePartitioner::default().with_time_source(TimeSource::Event {
                fallback_to_processing: false,
            });
            SinkBuilder::default()
                .with_store(store.clone())
                .with_instance_id("i")
                .with_partitioner(Arc::new(p))
                .with_flush_size(10)
                .with_spool(
                    SpoolOptions::new(dir.path())
                        .with_fsync(SpoolFsync::Never)
                        .with_segment_bytes(4096),
                )
                .build()
                .unwrap()
        };
        let pad = "x".repeat(500);
        let event = |n: u64| {
            let hour = if n < 10 { 10 } else { 11 };
            json!({ "eventTime": format!("2024-03-05T{hour}:00:00Z"), "n": n, "pad": pad })
        };
        let sink = build();
        sink.inner.hold_deletes.store(true, Ordering::SeqCst);
        // The first batch (hour 10) fills the first 4 KiB segment (six
        // events of ~560 bytes) and starts the second; its upload frees the
        // first segment, whose deletion is then held.
        for n in 0..10 {
            sink.push(&event(n)).await.unwrap();
        }
        let t0 = std::time::Instant::now();
        while sink.inner.hold_deletes.load(Ordering::SeqCst) {
            assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", sink.stats());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Three more batches (hour 11) free the second segment too.
        for n in 10..40 {
            sink.push(&event(n)).await.unwrap();
        }
        let t0 = std::time::Instant::now();
        while sink.stats().objects_uploaded < 3 {
            assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", sink.stats());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sink.crash().await;

        let sink = build();
        sink.shutdown().await.unwrap();
        let mut seen = std::collections::BTreeMap::new();
        for (k, b) in objects(&store).await {
            for r in decode(&k, &b).unwrap().records {
                *seen.entry(r["n"].as_u64().unwrap()).or_insert(0) += 1;
            }
        }
        let missing: Vec<u64> = (0..40).filter(|n| !seen.contains_key(n)).collect();
        assert!(missing.is_empty(), "lost: {missing:?}");
        assert!(seen.values().all(|c| *c == 1), "duplicated: {seen:?}");
    }
}
