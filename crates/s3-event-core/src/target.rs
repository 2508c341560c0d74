//! The `Target` trait: where notifications are delivered.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use async_trait::async_trait;
//! use s3_event_core::{EventRecord, Target, TargetError, TargetId};
//!
//! #[derive(Debug)]
//! struct Collect { id: TargetId, seen: Mutex<Vec<EventRecord>> }
//!
//! #[async_trait]
//! impl Target for Collect {
//!     fn id(&self) -> &TargetId { &self.id }
//!     async fn send_batch(&self, events: &[EventRecord]) -> Result<(), TargetError> {
//!         self.seen.lock().unwrap().extend_from_slice(events);
//!         Ok(())
//!     }
//!     async fn is_active(&self) -> Result<bool, TargetError> { Ok(true) }
//! }
//!
//! let t: Arc<dyn Target> = Arc::new(Collect {
//!     id: "arn:minio:sqs::1:webhook".parse().unwrap(),
//!     seen: Mutex::new(vec![]),
//! });
//! assert_eq!(t.id().to_string(), "arn:minio:sqs::1:webhook");
//! ```

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::retry::Retry;
use crate::{EventRecord, TargetId};

/// Why a delivery failed, and whether retrying can help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// Retrying later may succeed: connection refused or lost, timeout,
    /// throttling, 5xx, broker unavailable.
    #[error("target {target}: transient failure: {message}")]
    Transient {
        /// The target's id, as text.
        target: String,
        /// The server's or client's message (never a secret).
        message: String,
        /// A delay the server asked for (`Retry-After`), if any.
        retry_after: Option<Duration>,
    },
    /// Retrying the same events will fail again: bad credentials, a rejected
    /// document, a missing table permission, a 4xx. The events go to the
    /// dead-letter store.
    #[error("target {target}: permanent failure: {message}")]
    Permanent {
        /// The target's id, as text.
        target: String,
        /// The server's or client's message (never a secret).
        message: String,
    },
}

impl TargetError {
    /// A transient error for `target`.
    pub fn transient(target: &TargetId, message: impl fmt::Display) -> Self {
        TargetError::Transient {
            target: target.to_string(),
            message: message.to_string(),
            retry_after: None,
        }
    }

    /// A permanent error for `target`.
    pub fn permanent(target: &TargetId, message: impl fmt::Display) -> Self {
        TargetError::Permanent {
            target: target.to_string(),
            message: message.to_string(),
        }
    }

    /// Whether retrying may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, TargetError::Transient { .. })
    }

    /// The delay the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TargetError::Transient { retry_after, .. } => *retry_after,
            TargetError::Permanent { .. } => None,
        }
    }

    /// How the notifier retries it: [`Retry::Permanent`] (dead-lettered),
    /// [`Retry::After`] when the server asked for a delay, else
    /// [`Retry::Transient`].
    pub fn retry(&self) -> Retry {
        match self {
            TargetError::Transient {
                retry_after: Some(after),
                ..
            } => Retry::After(*after),
            TargetError::Transient { .. } => Retry::Transient,
            TargetError::Permanent { message, .. } => Retry::Permanent(message.clone()),
        }
    }
}

/// A place notifications are delivered to (a webhook, a broker, a database).
///
/// # Contract
///
/// - `send_batch` delivers the events in slice order. It returns `Ok` only
///   once the target has accepted every event (acknowledged, confirmed,
///   committed, 2xx) as far as its protocol allows.
/// - On `Err`, none, some or all of the events may have been delivered: the
///   caller retries the whole batch on a transient error, so a target should
///   be idempotent where its protocol allows (namespace formats upsert).
/// - A permanent error means retrying the same events will fail again.
/// - `is_active` is cheap (a ping, a HEAD, a connection check), never sends
///   an event, and is honest: it returns `Ok(false)` or an error while the
///   target is unreachable.
/// - Implementations reconnect by themselves; a target that was down and came
///   back works again without being rebuilt.
/// - `Debug` output never contains a secret.
#[async_trait]
pub trait Target: Send + Sync + fmt::Debug + 'static {
    /// The target's id (`arn:minio:sqs:<region>:<id>:<type>`).
    fn id(&self) -> &TargetId;

    /// Delivers a batch of events, in order. See the trait's contract.
    async fn send_batch(&self, events: &[EventRecord]) -> Result<(), TargetError>;

    /// Delivers one event.
    async fn send(&self, event: &EventRecord) -> Result<(), TargetError> {
        self.send_batch(std::slice::from_ref(event)).await
    }

    /// Whether the target is reachable now.
    async fn is_active(&self) -> Result<bool, TargetError>;

    /// Releases connections. The default does nothing.
    async fn close(&self) -> Result<(), TargetError> {
        Ok(())
    }

    /// The largest batch the target wants in one `send_batch` call.
    fn max_batch(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_and_permanent() {
        let id: TargetId = "arn:minio:sqs:us-east-1:1:webhook".parse().unwrap();
        let t = TargetError::transient(&id, "connection refused");
        assert!(t.is_transient());
        assert!(t.to_string().contains("arn:minio:sqs:us-east-1:1:webhook"));
        let p = TargetError::permanent(&id, "401 Unauthorized");
        assert!(!p.is_transient());
        assert!(p.to_string().contains("401"));
    }
}
