//! Where events come in: every input of the workspace, each behind a
//! feature named after it. Built on [`s3_event_core`]; it depends on neither
//! the targets nor the sink crate: a program joins an input to the
//! notifier or to the sink through a [`RecordsHandler`](handler::RecordsHandler)
//! (the `s3-event` facade's relay and ingest pipeline do).
//!
//! - `handler` (feature `handler`): [`RecordsHandler`](handler::RecordsHandler),
//!   where the receivers and the poller hand the records they produce, and
//!   its typed error ([`HandlerError`](handler::HandlerError): transient or
//!   permanent).
//! - `receiver` (feature `receiver`): an axum router receiving S3
//!   notifications from MinIO/AIStor webhooks, AWS SNS (signatures verified)
//!   and SQS bodies.
//! - `sqs` (feature `sqs`): the SQS source, long-polling a queue that S3
//!   notifications reach (directly, through SNS or EventBridge) and
//!   deleting each message once the handler took its records.
//! - `poller` (feature `poller`): a bucket poller over `object_store` that
//!   turns listing differences into `ObjectCreated:Put`/`ObjectRemoved:Delete`.
//! - `cloudevents` (feature `cloudevents`): the CloudEvents HTTP input's
//!   parsing: a request into structured-mode CloudEvents, or a rejection
//!   naming the bad attribute.
//! - `http` (feature `http`): what every HTTP input is served with: a
//!   bearer token, rustls TLS, a concurrency bound and a read timeout, the
//!   Prometheus recorder, and the shutdown signal.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub use s3_event_core as core;

#[cfg(feature = "cloudevents")]
#[cfg_attr(docsrs, doc(cfg(feature = "cloudevents")))]
pub mod cloudevents;
#[cfg(feature = "handler")]
#[cfg_attr(docsrs, doc(cfg(feature = "handler")))]
pub mod handler;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
#[cfg(feature = "poller")]
#[cfg_attr(docsrs, doc(cfg(feature = "poller")))]
pub mod poller;
#[cfg(feature = "receiver")]
#[cfg_attr(docsrs, doc(cfg(feature = "receiver")))]
pub mod receiver;
#[cfg(feature = "sqs")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqs")))]
pub mod sqs;
