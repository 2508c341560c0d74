//! [`SinkBuilder`]: the sink's options, and building it.

use super::*;

/// Configures and builds a [`Sink`]; see the [module docs](super).
pub struct SinkBuilder {
    store: Option<Arc<dyn ObjectStore>>,
    prefix: String,
    partitioner: Option<Arc<dyn Partitioner>>,
    encoding: Encoding,
    compression: Compression,
    /// Whether `with_compression` was called (Parquet refuses it then).
    compression_set: bool,
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
    retry: RetryPolicy,
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
            compression_set: false,
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
            retry: RetryPolicy::default(),
        }
    }
}

impl SinkBuilder {
    /// The object store to upload to (default: a [`LocalDir`](crate::LocalDir) rooted at
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

    /// The compression (default: gzip at the default level; none for
    /// [`Encoding::Parquet`], whose pages are compressed inside the file:
    /// [`build`](Self::build) refuses Parquet with any other).
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self.compression_set = true;
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

    /// Sets the backoff between upload attempts (default: 100 ms doubling
    /// to 30 s, 20 % jitter). Uploads are retried until they succeed;
    /// `max_attempts` is ignored.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Builds the sink and spawns its background tasks; must be called inside
    /// a tokio runtime. With a spool, replays it first: batches a previous
    /// process left closed but not uploaded, and its unclosed events, are
    /// queued for upload before any new event.
    pub fn build(mut self) -> Result<Sink> {
        if self.encoding.is_parquet() {
            if self.compression_set && self.compression != Compression::None {
                return Err(Error::InvalidConfig {
                    what: "compression",
                    value: self.compression.to_string(),
                    expected: "`none` with the Parquet encoding (its pages are compressed by the Parquet options' `compression`)",
                });
            }
            self.compression = Compression::None;
        }
        let store = match self.store.take() {
            Some(s) => s,
            None => default_store()?,
        };
        let (spool, recovered) = match &self.spool {
            Some(opts) => {
                let (s, r) = Spool::open(opts).map_err(|source| spool_error(opts, source))?;
                (Some(s), r)
            }
            None => (None, Recovered::default()),
        };
        let instance_id = self.instance_id()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            retry: self.retry,
            store,
            partitioner: self
                .partitioner
                .unwrap_or_else(|| Arc::new(TimePartitioner::default())),
            name_len: name_len(self.encoding, self.compression, self.naming, &instance_id),
            prefix: self.prefix,
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
            background_compression: self.background_compression,
            attributes_supported: AtomicBool::new(true),
            create_supported: AtomicBool::new(true),
            degraded: Mutex::new(None),
            log: spool.as_ref().map(Spool::log),
            fsync: spool.as_ref().map(Spool::fsync),
            spool_dir: self
                .spool
                .as_ref()
                .map(|o| o.dir.display().to_string())
                .unwrap_or_default(),
            shards: (0..self.shards).map(|_| Mutex::default()).collect(),
            spool: spool.map(Mutex::new),
            closed: AtomicBool::new(false),
            flushing: AtomicUsize::new(0),
            batch_seq: AtomicU64::new(0),
            wake: Notify::new(),
            space: Notify::new(),
            stop: AtomicBool::new(false),
            tx,
            pending: watch::channel(0usize).0,
            counters: Counters::default(),
            deleting: AtomicBool::new(false),
            delete_requested: AtomicBool::new(false),
            #[cfg(test)]
            hold_deletes: AtomicBool::new(false),
            #[cfg(feature = "parquet")]
            parquet_schema: std::sync::OnceLock::new(),
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

    /// The instance id: given, kept in the spool, or made up; checked once
    /// here with the prefix. Partition keys are valid path prefixes by
    /// construction (`PartitionKey`), so a closed batch can never fail for
    /// its key (and be lost).
    fn instance_id(&mut self) -> Result<String> {
        let instance_id = match (self.instance_id.take(), &self.spool) {
            (Some(id), _) => id,
            (None, Some(opts)) => {
                spool::instance_id(&opts.dir, default_instance_id).map_err(|source| {
                    spool_error(
                        opts,
                        s3_event_core::log::Error::Io {
                            op: "store the instance id",
                            path: opts.dir.join("instance-id"),
                            source,
                        },
                    )
                })?
            }
            (None, None) => default_instance_id(),
        };
        if instance_id.is_empty() || instance_id.contains('/') {
            return Err(Error::InvalidConfig {
                what: "instance id",
                value: instance_id,
                expected: "a non-empty name without `/`",
            });
        }
        let sample = format!("{}x/{}-{:020}.ndjson.gz", self.prefix, instance_id, 0);
        Path::parse(&sample).map_err(|source| Error::InvalidKey {
            key: sample.clone(),
            source,
        })?;
        Ok(instance_id)
    }
}

/// The default store: a local directory under [`DEFAULT_DATA_DIR`].
fn default_store() -> Result<Arc<dyn ObjectStore>> {
    std::fs::create_dir_all(DEFAULT_DATA_DIR).map_err(|e| Error::Store {
        source: object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        },
    })?;
    Ok(Arc::new(
        crate::LocalDir::new(DEFAULT_DATA_DIR).map_err(|source| Error::Store { source })?,
    ))
}

fn spool_error(opts: &SpoolOptions, source: s3_event_core::log::Error) -> Error {
    Error::Spool {
        dir: opts.dir.display().to_string(),
        source,
    }
}

/// The longest object name (after prefix and partition) a sink makes,
/// alternate keys included.
fn name_len(
    encoding: Encoding,
    compression: Compression,
    naming: KeyNaming,
    instance_id: &str,
) -> usize {
    let ext = encoding.extension().len() + compression.extension().len();
    let name = match naming {
        KeyNaming::Sequence => instance_id.len() + 21,
        KeyNaming::Uuid => 36,
    };
    // "-r" and up to four digits for alternate keys.
    name + ext + 6
}

fn default_instance_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}{:x}", std::process::id(), nanos)
}
