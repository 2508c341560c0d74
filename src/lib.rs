//! # s3-event
//!
//! S3 eventing in one dependency: parse and route bucket notifications
//! ([`core`]), deliver them to brokers, databases and webhooks (`targets`
//! feature), and batch events into object storage (`sink` feature). The
//! services the `s3-event` program runs are library modules too, read from
//! the same configuration files: the notification relay (`relay` feature),
//! the meter ingest pipeline (`ingest` feature) and the sink server
//! (`server` feature). Data flows one way: the inputs (`inputs`:
//! receivers, poller, the CloudEvents HTTP input) feed the notifier and its
//! targets, or the sink and its store; these modules join them.
//!
//! ```
//! use s3_event::core::Notification;
//!
//! let n = Notification::from_slice(br#"{"Records":[]}"#).unwrap();
//! assert!(n.records.is_empty());
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub use s3_event_core as core;
#[cfg(feature = "inputs")]
#[cfg_attr(docsrs, doc(cfg(feature = "inputs")))]
pub use s3_event_inputs as inputs;
#[cfg(feature = "sink")]
#[cfg_attr(docsrs, doc(cfg(feature = "sink")))]
pub use s3_event_sink as sink;
#[cfg(feature = "targets")]
#[cfg_attr(docsrs, doc(cfg(feature = "targets")))]
pub use s3_event_targets as targets;

#[cfg(feature = "ingest")]
#[cfg_attr(docsrs, doc(cfg(feature = "ingest")))]
pub mod ingest;
#[cfg(feature = "relay")]
#[cfg_attr(docsrs, doc(cfg(feature = "relay")))]
pub mod relay;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod sink_server;
#[cfg(all(feature = "sqs-source", any(feature = "relay", feature = "ingest")))]
mod sqs_source;
