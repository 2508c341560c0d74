//! Batching events into object storage and reading them back. Built on [`s3_event_core`].
#![warn(missing_docs)]

pub use s3_event_core as core;
