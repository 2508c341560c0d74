//! [`RecordsHandler`]: where the receivers and the poller hand the records
//! they produce (for example a closure calling the notifier's `send`, or
//! the sink's `push_batch`).

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;

use s3_event_core::EventRecord;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Takes a batch of records; `Ok` means they are accepted (queued or
/// delivered) and need not be offered again. An error is reported to the
/// sender (the HTTP status asks MinIO/SNS to retry; the poller offers the
/// batch again on its next poll).
///
/// Implemented for every `Fn(Vec<EventRecord>) -> impl Future<Output =
/// Result<(), E>>` with `E: Display`:
///
/// ```
/// # use s3_event_inputs::handler::RecordsHandler;
/// let h = |records: Vec<s3_event_inputs::core::EventRecord>| async move {
///     println!("{} records", records.len());
///     Ok::<(), std::convert::Infallible>(())
/// };
/// fn takes(_: impl RecordsHandler) {}
/// takes(h);
/// ```
pub trait RecordsHandler: Send + Sync + 'static {
    /// Handles one batch.
    fn handle(&self, records: Vec<EventRecord>) -> BoxFuture<'static, Result<(), String>>;
}

impl<F, Fut, E> RecordsHandler for F
where
    F: Fn(Vec<EventRecord>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display,
{
    fn handle(&self, records: Vec<EventRecord>) -> BoxFuture<'static, Result<(), String>> {
        let fut = self(records);
        Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
    }
}
