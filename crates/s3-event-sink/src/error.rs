//! The crate's error type.

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration string did not name a known value.
    #[error("invalid {what} `{value}`: expected one of {expected}")]
    InvalidConfig {
        /// What was being parsed (`encoding`, `compression`).
        what: &'static str,
        /// The value that was given.
        value: String,
        /// The accepted values.
        expected: &'static str,
    },
    /// A record handed to the encoder cannot be written in the chosen encoding.
    #[error("record #{index} rejected: {reason}")]
    InvalidRecord {
        /// The zero-based index the record would have had in the batch.
        index: usize,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A record does not fit the Parquet schema (a CloudEvent without
    /// `id`, a field an inferred schema lacks, ...).
    #[error("record #{index} rejected: {reason}")]
    RecordMismatch {
        /// The zero-based index the record would have had in the batch (in
        /// the push, from the sink).
        index: usize,
        /// Why it does not fit, naming the field.
        reason: String,
    },
    /// An object read as Parquet (by its magic `PAR1` or a `.parquet` key)
    /// could not be read.
    #[error("object `{key}`: not a readable Parquet file: {reason}")]
    InvalidParquet {
        /// The object key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A record could not be serialized to JSON.
    #[error("record #{index} could not be serialized: {source}")]
    Serialize {
        /// The zero-based index the record would have had in the batch.
        index: usize,
        /// The serializer's error.
        source: serde_json::Error,
    },
    /// The compressor failed (writing into memory; not expected in practice).
    #[error("compression failed: {source}")]
    Compress {
        /// The underlying error.
        source: std::io::Error,
    },
    /// The key ends with `.gz` (`.zst`) but the bytes are not gzip (zstd).
    #[error("object `{key}`: its key's extension says compressed, but its bytes are not")]
    NotGzip {
        /// The object key.
        key: String,
    },
    /// The object's gzip or zstd stream is corrupt or truncated.
    #[error("object `{key}`: decompression failed: {source}")]
    Decompress {
        /// The object key.
        key: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The object decompresses to more than the allowed size.
    #[error("object `{key}` decompresses to more than {limit} bytes")]
    TooLarge {
        /// The object key.
        key: String,
        /// The limit that was exceeded, in bytes.
        limit: u64,
    },
    /// The partitioner could not place an event.
    #[error("partitioning failed: {source}")]
    Partition {
        /// The partitioner's error.
        source: s3_event_core::Error,
    },
    /// A built object key is not a valid object-store path.
    #[error("invalid object key `{key}`: {source}")]
    InvalidKey {
        /// The key that was built.
        key: String,
        /// Why the store rejected it.
        source: object_store::path::Error,
    },
    /// The object store failed (building the default store, for example).
    #[error("object store error: {source}")]
    Store {
        /// The store's error.
        source: object_store::Error,
    },
    /// Reading or writing the spool failed, or another process holds it.
    #[error("spool `{dir}`: {source}")]
    Spool {
        /// The spool directory.
        dir: String,
        /// The log's error (I/O, a failed fsync, the directory's lock).
        source: s3_event_core::log::Error,
    },
    /// An event's object key would be longer than S3 accepts (its
    /// partition, from a template, is too long); the event is refused.
    #[error("record #{index}: its object key would be {len} bytes, over the {max} S3 accepts (shorten the prefix or the partition template)")]
    KeyTooLong {
        /// The zero-based index of the record in the push.
        index: usize,
        /// The key's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The Kafka source (feature `kafka-source`) failed: the client could
    /// not be configured or could not join its group, or an object at one
    /// of its keys is not its own.
    #[error("kafka source: {context}{}", source.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Kafka {
        /// What was being done, naming the value at fault.
        context: String,
        /// The client's or store's error, if any.
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The sink has been shut down and accepts no more events.
    #[error("the sink is shut down")]
    Shutdown,
    /// The spool stayed full for longer than the caller would wait
    /// ([`Sink::push_batch_within`](crate::Sink::push_batch_within)); no event
    /// was accepted.
    #[error("the spool is full: uploads are behind; retry later")]
    Backpressure,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
