//! Delivery of S3 event notifications to targets (webhooks, brokers, databases). Built on [`s3_event_core`].
#![warn(missing_docs)]

pub use s3_event_core as core;
