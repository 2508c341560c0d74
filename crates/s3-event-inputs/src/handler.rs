//! [`RecordsHandler`]: where the receivers and the poller hand the records
//! they produce (for example a closure calling the notifier's `send`, or
//! the sink's `push_batch`), and [`HandlerError`], why it did not take them.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use s3_event_core::EventRecord;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The cause carried by a [`HandlerError`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a [`RecordsHandler`] did not take a batch, and whether offering it
/// again can help. Either way the batch is not lost: a receiver answers
/// `503` so that the sender retries (a 4xx would make MinIO or SNS drop the
/// notification, and a handler's failure is not the sender's fault); the
/// poller offers the batch again on its next poll. The kind is logged, so
/// that an operator sees a failure retrying will not fix.
///
/// `Display` is the cause's message. Cheap to clone. Any error converts
/// into a transient one (`?` in a handler), and a transient or permanent
/// one is made with [`HandlerError::transient`] and
/// [`HandlerError::permanent`].
///
/// ```
/// use s3_event_inputs::handler::HandlerError;
///
/// let e = HandlerError::transient("queue full for 1 target(s)");
/// assert!(e.is_transient());
/// assert_eq!(e.to_string(), "queue full for 1 target(s)");
/// let e = HandlerError::permanent(std::io::Error::other("record too large"));
/// assert_eq!(e.kind(), "permanent");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum HandlerError {
    /// Offering the batch again later may succeed: a full queue, a store or
    /// target that is down, a shutdown in progress.
    Transient {
        /// What went wrong.
        source: Arc<dyn StdError + Send + Sync + 'static>,
    },
    /// Offering the same batch again will fail again: a record the handler
    /// cannot represent or store.
    Permanent {
        /// What went wrong.
        source: Arc<dyn StdError + Send + Sync + 'static>,
    },
}

impl HandlerError {
    /// A failure that may go away by itself.
    pub fn transient(source: impl Into<BoxError>) -> Self {
        HandlerError::Transient {
            source: Arc::from(source.into()),
        }
    }

    /// A failure retrying will not fix.
    pub fn permanent(source: impl Into<BoxError>) -> Self {
        HandlerError::Permanent {
            source: Arc::from(source.into()),
        }
    }

    /// Whether offering the batch again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, HandlerError::Transient { .. })
    }

    /// `transient` or `permanent`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            HandlerError::Transient { .. } => "transient",
            HandlerError::Permanent { .. } => "permanent",
        }
    }

    /// What went wrong.
    pub fn source(&self) -> &(dyn StdError + Send + Sync + 'static) {
        match self {
            HandlerError::Transient { source } | HandlerError::Permanent { source } => &**source,
        }
    }

    /// The cause as a `std::error::Error` of its own, kind dropped.
    pub fn into_error(self) -> BoxError {
        match self {
            HandlerError::Transient { source } | HandlerError::Permanent { source } => {
                Box::new(Shared(source))
            }
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.source(), f)
    }
}

/// Equal when of the same kind with the same message (for comparing
/// receiver outcomes).
impl PartialEq for HandlerError {
    fn eq(&self, other: &Self) -> bool {
        self.kind() == other.kind() && self.to_string() == other.to_string()
    }
}

impl Eq for HandlerError {}

/// Any error, or a message (`String`, `&str`), as a transient failure: what
/// a handler's `?` does with its own error types. `HandlerError` itself is
/// not a `std::error::Error` (as `anyhow::Error` is not), so that this
/// conversion can take every one that is.
impl<E: Into<BoxError>> From<E> for HandlerError {
    fn from(source: E) -> Self {
        HandlerError::transient(source)
    }
}

/// The cause behind the `Arc`, as an error of its own.
#[derive(Debug)]
struct Shared(Arc<dyn StdError + Send + Sync + 'static>);

impl fmt::Display for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl StdError for Shared {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

/// Takes a batch of records; `Ok` means they are accepted (queued or
/// delivered) and need not be offered again. An error is reported to the
/// sender (the HTTP status asks MinIO/SNS to retry; the poller offers the
/// batch again on its next poll).
///
/// Implemented for every `Fn(Vec<EventRecord>) -> impl Future<Output =
/// Result<(), E>>` with `E: Into<HandlerError>`: a [`HandlerError`], or any
/// `std::error::Error + Send + Sync` or message (`String`, `&str`), taken as
/// transient:
///
/// ```
/// # use s3_event_inputs::handler::{HandlerError, RecordsHandler};
/// let h = |records: Vec<s3_event_inputs::core::EventRecord>| async move {
///     if records.len() > 1000 {
///         return Err(HandlerError::permanent("more than 1000 records"));
///     }
///     println!("{} records", records.len());
///     Ok(())
/// };
/// fn takes(_: impl RecordsHandler) {}
/// takes(h);
/// ```
pub trait RecordsHandler: Send + Sync + 'static {
    /// Handles one batch.
    fn handle(&self, records: Vec<EventRecord>) -> BoxFuture<'static, Result<(), HandlerError>>;
}

impl<F, Fut, E> RecordsHandler for F
where
    F: Fn(Vec<EventRecord>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<HandlerError>,
{
    fn handle(&self, records: Vec<EventRecord>) -> BoxFuture<'static, Result<(), HandlerError>> {
        let fut = self(records);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_messages_and_sources() {
        let e = HandlerError::from("down".to_owned());
        assert!(e.is_transient());
        assert_eq!(e.to_string(), "down");
        let e = HandlerError::from(std::io::Error::other("refused"));
        assert_eq!((e.kind(), e.to_string().as_str()), ("transient", "refused"));
        let e = HandlerError::permanent(std::io::Error::other("no space left"));
        assert!(!e.is_transient());
        assert_eq!(
            (e.kind(), e.to_string().as_str()),
            ("permanent", "no space left")
        );
        assert_eq!(e.clone(), e);
        assert_ne!(e, HandlerError::transient("no space left"));
        let boxed = e.into_error();
        assert_eq!(boxed.to_string(), "no space left");
    }
}
