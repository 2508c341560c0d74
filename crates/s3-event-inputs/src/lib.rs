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
//! - `poller` (feature `poller`): a bucket poller over `object_store` that
//!   turns listing differences into `ObjectCreated:Put`/`ObjectRemoved:Delete`.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub use s3_event_core as core;

#[cfg(feature = "handler")]
#[cfg_attr(docsrs, doc(cfg(feature = "handler")))]
pub mod handler;
#[cfg(feature = "poller")]
#[cfg_attr(docsrs, doc(cfg(feature = "poller")))]
pub mod poller;
#[cfg(feature = "receiver")]
#[cfg_attr(docsrs, doc(cfg(feature = "receiver")))]
pub mod receiver;
