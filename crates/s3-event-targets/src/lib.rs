//! Delivery of S3 event notifications to targets (webhooks, brokers, databases). Built on [`s3_event_core`].
//!
//! - [`QueueStore`]: the durable on-disk queue behind a target's `queue_dir`.
//! - [`Notifier`]: routes records to targets through per-target queues.
//! - [`NotifyConfig`]: MinIO-compatible target configuration (JSON and
//!   `MINIO_NOTIFY_*` environment variables) to targets and a notifier.
//! - `webhook` (feature `webhook`): the webhook target, MinIO-compatible,
//!   with HMAC-SHA256 signatures.
//! - `receiver` (feature `receiver`): an axum router receiving S3
//!   notifications from MinIO/AIStor webhooks, AWS SNS (signatures verified)
//!   and SQS bodies.
//! - `poller` (feature `poller`): a bucket poller over `object_store` that
//!   turns listing differences into `ObjectCreated:Put`/`ObjectRemoved:Delete`.
//! - `conformance` (feature `conformance`, and in this crate's tests): the
//!   shared suite every target's tests run (`publishes`, `preserves_order`,
//!   `survives_target_restart`, `dead_letters_poison`, ...).
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub use s3_event_core as core;

pub mod config;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod error;
#[cfg(any(feature = "receiver", feature = "poller"))]
pub mod handler;
pub mod notifier;
#[cfg(feature = "poller")]
pub mod poller;
pub mod queue_store;
#[cfg(feature = "receiver")]
pub mod receiver;
#[cfg(feature = "webhook")]
pub mod webhook;

pub use config::NotifyConfig;
pub use error::{Error, Result};
pub use notifier::{
    DeadLetter, DeliveryMode, FullPolicy, Notifier, NotifierBuilder, RetryPolicy, SendOutcome,
    TargetOptions, TargetStats,
};
pub use queue_store::{FsyncPolicy, QueueStore, QueueStoreOptions};
#[cfg(feature = "webhook")]
pub use webhook::{verify, VerifyError, WebhookConfig, WebhookTarget};
