//! Types and pure logic for S3 eventing: event records, event names,
//! notification rules, target ids, inbound envelopes, the CloudEvents mapping,
//! and the [`Target`] and [`Partitioner`] traits.
//!
//! No sockets, no runtime: the `s3-event-targets` and `s3-event-sink` crates
//! build on this one.
//!
//! ```
//! use s3_event_core::Notification;
//!
//! let n = Notification::from_slice(br#"{"Records":[{"eventName":"ObjectCreated:Put",
//!     "s3":{"bucket":{"name":"b"},"object":{"key":"a+b.txt"}}}]}"#).unwrap();
//! assert_eq!(n.records[0].decoded_key().unwrap(), "a b.txt");
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

mod arn;
#[cfg(feature = "aws")]
#[cfg_attr(docsrs, doc(cfg(feature = "aws")))]
pub mod aws;
mod cloudevent;
pub mod config;
mod error;
pub mod inbound;
#[cfg(feature = "log")]
#[cfg_attr(docsrs, doc(cfg(feature = "log")))]
pub mod log;
mod name;
mod partition;
mod record;
pub mod retry;
mod rules;
mod target;
mod wire;

pub use arn::{Arn, AwsArn, AwsService, TargetId};
pub use error::{Error, Result};
pub use record::{
    decode_key, encode_key, Bucket, EventRecord, GlacierEventData, IntelligentTieringEventData,
    LifecycleEventData, Notification, Object, ReplicationEventData, RequestParameters,
    ResponseElements, RestoreEventData, S3Entity, Source, TransitionEventData, UserIdentity,
};
pub use target::{Target, TargetError};
// Each of these modules keeps its public surface small; re-export it whole.
pub use cloudevent::*;
pub use name::*;
pub use partition::*;
pub use rules::*;
