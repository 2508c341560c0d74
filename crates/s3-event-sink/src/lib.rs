//! Batching events into object storage and reading them back. Built on [`s3_event_core`].
//!
//! So far: the encoding layer ([`BatchEncoder`]: NDJSON or a JSON array,
//! optionally gzip), the read side ([`decode`]) and failure reports
//! ([`failure_report_key`], [`failure_report_text`]), and the in-process
//! [`Sink`] that spools events durably, batches them per partition and uploads
//! them exactly once.
//!
//! ```
//! use s3_event_sink::{decode, BatchEncoder, Compression, Encoding};
//!
//! let mut enc = BatchEncoder::new(Encoding::Ndjson, Compression::gzip());
//! for i in 0..3 {
//!     enc.push(&serde_json::json!({ "n": i }))?;
//! }
//! let key = format!("batch-0001{}", enc.extension());
//! let decoded = decode(&key, &enc.finish()?)?;
//! assert_eq!(decoded.records.len(), 3);
//! assert!(decoded.bad.is_empty());
//! # Ok::<(), s3_event_sink::Error>(())
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

#[cfg(feature = "aws-sdk")]
mod aws_sdk;
#[cfg(feature = "parquet")]
mod columnar;
#[cfg(test)]
mod conformance_tests;
#[cfg(test)]
mod crash_tests;
mod decode;
#[cfg(all(test, feature = "integration", feature = "parquet"))]
mod duckdb_tests;
mod encode;
mod error;
#[cfg(test)]
mod fault_tests;
pub mod ingest;
#[cfg(feature = "kafka-source")]
#[cfg_attr(docsrs, doc(cfg(feature = "kafka-source")))]
pub mod kafka_source;
mod local;
pub mod manifest;
mod pipe;
mod report;
pub mod sink;
pub mod spool;
mod store;
pub mod target;
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod upload;
pub mod verify;

pub use s3_event_core as core;

#[cfg(feature = "aws-sdk")]
#[cfg_attr(docsrs, doc(cfg(feature = "aws-sdk")))]
pub use aws_sdk::{AwsSdkConfig, AwsSdkError, AwsSdkStore, UploadOptions};

#[cfg(feature = "parquet")]
#[cfg_attr(docsrs, doc(cfg(feature = "parquet")))]
pub use columnar::{PageCompression, ParquetOptions, ParquetSchema};
pub use decode::{decode, decode_with_limit, BadRecord, Decoded, DEFAULT_MAX_DECODED_BYTES};
pub use encode::{BatchEncoder, Compression, Encoding};
pub use error::{Error, Result};
pub use local::LocalDir;
pub use manifest::Manifest;
pub use report::{failure_report_key, failure_report_text};
pub use sink::{
    KeyNaming, Sink, SinkBuilder, SinkStats, DEFAULT_DATA_DIR, DEFAULT_FLUSH_INTERVAL,
    DEFAULT_FLUSH_SIZE, DEFAULT_MAX_BYTES, DEFAULT_MAX_CONCURRENT_UPLOADS,
    DEFAULT_MAX_OPEN_BATCHES, DEFAULT_PART_SIZE, MIN_PART_SIZE,
};
pub use spool::{SpoolFsync, SpoolOptions};
#[cfg(feature = "s3")]
#[cfg_attr(docsrs, doc(cfg(feature = "s3")))]
pub use store::S3Config;
pub use store::StoreConfig;
pub use target::{SinkTarget, SinkTargetConfig};
pub use verify::{verify, Problem, VerifyOptions, VerifyReport};
