//! The SQS source: long-polls an Amazon SQS queue (or an SQS-compatible
//! service) that S3 notifications reach directly (S3 → SQS), through SNS
//! (S3 → SNS → SQS) or through EventBridge, and hands their records to a
//! [`RecordsHandler`].
//!
//! - `ReceiveMessage` with `WaitTimeSeconds` up to 20
//!   ([`SqsSourceConfig::wait_time_secs`]), up to 10 messages per call
//!   ([`SqsSourceConfig::max_messages`]), from
//!   [`SqsSourceConfig::receivers`] concurrent loops.
//! - Every body goes through the receiver's parsing
//!   ([`Receiver::handle_queued`]): plain S3 records, MinIO envelopes, SNS
//!   envelopes (their signature checked as [`SnsConfig`] says; moto and
//!   other emulators do not sign, so tests against them turn
//!   `verify_signatures` off), EventBridge events. An `s3:TestEvent` is
//!   counted and deleted.
//! - The messages of one receive are handled concurrently, one handler call
//!   per message; a message is deleted (`DeleteMessageBatch`) only once the
//!   handler returned `Ok` for its records. While the batch is being
//!   handled, its visibility timeout is renewed
//!   (`ChangeMessageVisibilityBatch`) every third of
//!   [`SqsSourceConfig::visibility_timeout_secs`].
//! - A handler error leaves the message in the queue untouched: it comes
//!   back once its visibility timeout runs out, so that a failing handler
//!   (a full queue, a store that is down) is retried at the queue's pace
//!   rather than in a tight loop.
//! - A body that is not an S3 notification (or whose SNS signature does
//!   not check out) is counted, logged with its `MessageId`, and left in
//!   the queue, never deleted: after `maxReceiveCount` receives the queue's
//!   redrive policy moves it to the dead-letter queue.
//! - Shutdown stops receiving (a long poll in progress is abandoned; what
//!   it would have returned reappears after the visibility timeout),
//!   finishes the batches being handled and deletes what is done.
//!
//! Counted through the [`metrics`] crate:
//! `s3_event_sqs_messages_total{outcome}` (`accepted`, `test_event`,
//! `subscription_confirmation`, `unsubscribe_confirmation`, `rejected`,
//! `handler_failed`), `s3_event_sqs_rejected_total{reason}` (the
//! receiver's reasons: `bad_payload`, `forged`, ...),
//! `s3_event_sqs_records_total`, `s3_event_sqs_deleted_total` and
//! `s3_event_sqs_errors_total{operation}` (`receive`, `delete`,
//! `change_visibility`); [`SqsSource::stats`] has the same counts.
//!
//! ```no_run
//! use s3_event_inputs::sqs::{SqsSource, SqsSourceConfig};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config: SqsSourceConfig = serde_json::from_str(
//!     r#"{"queue_url": "https://sqs.us-east-1.amazonaws.com/123456789012/uploads",
//!         "receivers": 2}"#,
//! )?;
//! let source = SqsSource::new(config, |records: Vec<s3_event_inputs::core::EventRecord>| async move {
//!     println!("{} records", records.len());
//!     Ok::<(), std::convert::Infallible>(())
//! })?;
//! // Until the process is asked to stop; here, for a minute.
//! source.run(tokio::time::sleep(std::time::Duration::from_secs(60))).await;
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
};
use aws_sdk_sqs::Client;
use s3_event_core::aws::AwsConfig;
use serde::Deserialize;
use tokio::sync::watch;

use crate::handler::RecordsHandler;
use crate::receiver::{Confirmation, Outcome, Receiver, ReceiverConfig, SnsConfig};

/// The SQS source's settings. Deserializes from the field names
/// (`queue_url`, `aws`, `wait_time_secs`, `max_messages`, `receivers`,
/// `visibility_timeout_secs`, `sns`); unknown keys are refused.
///
/// `Debug` never prints the secret access key or the session token.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqsSourceConfig {
    /// The queue URL, e.g.
    /// `https://sqs.us-east-1.amazonaws.com/123456789012/uploads`. Required.
    pub queue_url: String,
    /// Region, endpoint override and credentials; what is unset comes from
    /// the standard AWS environment (see [`s3_event_core::aws`]).
    pub aws: AwsConfig,
    /// `WaitTimeSeconds` of each `ReceiveMessage`, 0 to 20 (default 20:
    /// long polling).
    pub wait_time_secs: u32,
    /// `MaxNumberOfMessages` of each `ReceiveMessage`, 1 to 10 (default 10).
    pub max_messages: u32,
    /// Concurrent receive loops, 1 to 64 (default 1).
    pub receivers: usize,
    /// The visibility timeout asked for on each receive and renewed every
    /// third of it while a message is handled, 1 to 43200 (default 30).
    pub visibility_timeout_secs: u32,
    /// SNS settings, for bodies that are SNS envelopes (only
    /// `verify_signatures`, `verify_sqs_wrapped`, `topic_arns` and
    /// `certificate_file` matter here).
    pub sns: SnsConfig,
}

impl Default for SqsSourceConfig {
    fn default() -> Self {
        SqsSourceConfig {
            queue_url: String::new(),
            aws: AwsConfig::default(),
            wait_time_secs: 20,
            max_messages: 10,
            receivers: 1,
            visibility_timeout_secs: 30,
            sns: SnsConfig::default(),
        }
    }
}

impl SqsSourceConfig {
    /// A configuration reading `queue_url`, every other key at its default.
    pub fn new(queue_url: impl Into<String>) -> Self {
        SqsSourceConfig {
            queue_url: queue_url.into(),
            ..Default::default()
        }
    }

    /// Checks every key's range; the error names the key.
    pub fn validate(&self) -> Result<(), SqsError> {
        let bad = |key: &'static str, message: String| Err(SqsError::Config { key, message });
        let url = self.queue_url.trim();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return bad(
                "queue_url",
                format!("`{url}` is not an http:// or https:// queue URL"),
            );
        }
        if self.wait_time_secs > 20 {
            return bad(
                "wait_time_secs",
                format!("{} is over 20", self.wait_time_secs),
            );
        }
        if !(1..=10).contains(&self.max_messages) {
            return bad(
                "max_messages",
                format!("{} is not 1 to 10", self.max_messages),
            );
        }
        if !(1..=64).contains(&self.receivers) {
            return bad("receivers", format!("{} is not 1 to 64", self.receivers));
        }
        if !(1..=43_200).contains(&self.visibility_timeout_secs) {
            return bad(
                "visibility_timeout_secs",
                format!("{} is not 1 to 43200", self.visibility_timeout_secs),
            );
        }
        Ok(())
    }
}

/// Error building an [`SqsSource`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqsError {
    /// A key of the configuration is wrong.
    #[error("`{key}`: {message}")]
    Config {
        /// The key (`queue_url`, `aws`, `sns`, ...).
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Counts since the source was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SqsStats {
    /// Messages received.
    pub messages: u64,
    /// Records handed to the handler successfully.
    pub records: u64,
    /// Messages deleted.
    pub deleted: u64,
    /// `s3:TestEvent`s received (and deleted).
    pub test_events: u64,
    /// Messages left in the queue because their body was refused (not an
    /// S3 notification, bad SNS signature, topic not allowed).
    pub rejected: u64,
    /// Messages left in the queue because the handler failed.
    pub handler_failed: u64,
    /// Failed `ReceiveMessage`, `DeleteMessageBatch` and
    /// `ChangeMessageVisibilityBatch` calls or entries.
    pub errors: u64,
}

#[derive(Default)]
struct Stats {
    messages: AtomicU64,
    records: AtomicU64,
    deleted: AtomicU64,
    test_events: AtomicU64,
    rejected: AtomicU64,
    handler_failed: AtomicU64,
    errors: AtomicU64,
}

struct Inner {
    config: SqsSourceConfig,
    client: Client,
    receiver: Receiver,
    stats: Stats,
}

/// The SQS source: build it with [`SqsSource::new`], then
/// [`SqsSource::run`] it. Cheap to clone.
#[derive(Clone)]
pub struct SqsSource {
    inner: Arc<Inner>,
}

impl fmt::Debug for SqsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqsSource")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SqsSource {
    /// Validates `config`, reads the environment for what it leaves unset
    /// and builds the client; nothing is contacted.
    pub fn new(config: SqsSourceConfig, handler: impl RecordsHandler) -> Result<Self, SqsError> {
        config.validate()?;
        let sdk = config.aws.sdk_config("SQS").map_err(|e| SqsError::Config {
            key: "aws",
            message: e.to_string(),
        })?;
        // A long poll lasts up to `wait_time_secs`: the attempt timeout
        // leaves it room.
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .operation_attempt_timeout(Duration::from_secs(u64::from(config.wait_time_secs) + 15))
            .build();
        let client = Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&sdk)
                .timeout_config(timeouts)
                .build(),
        );
        let receiver_config = ReceiverConfig {
            auth_token: None,
            sns: config.sns.clone(),
            ..ReceiverConfig::default()
        };
        let receiver = Receiver::new(receiver_config, handler).map_err(|e| SqsError::Config {
            key: "sns",
            message: e.to_string(),
        })?;
        Ok(SqsSource {
            inner: Arc::new(Inner {
                config,
                client,
                receiver,
                stats: Stats::default(),
            }),
        })
    }

    /// The configuration the source was built with.
    pub fn config(&self) -> &SqsSourceConfig {
        &self.inner.config
    }

    /// The counts so far.
    pub fn stats(&self) -> SqsStats {
        let s = &self.inner.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SqsStats {
            messages: l(&s.messages),
            records: l(&s.records),
            deleted: l(&s.deleted),
            test_events: l(&s.test_events),
            rejected: l(&s.rejected),
            handler_failed: l(&s.handler_failed),
            errors: l(&s.errors),
        }
    }

    /// Receives and handles messages with [`SqsSourceConfig::receivers`]
    /// loops until `shutdown` completes, then finishes the batches in
    /// hand (handled and deleted) and returns. Failed receives are logged,
    /// counted and retried with a backoff of up to 30 s.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut loops = tokio::task::JoinSet::new();
        for n in 0..self.inner.config.receivers {
            loops.spawn(Arc::clone(&self.inner).receive_loop(n, stop_rx.clone()));
        }
        tracing::info!(
            queue_url = self.inner.config.queue_url.trim(),
            receivers = self.inner.config.receivers,
            "SQS source started"
        );
        shutdown.await;
        let _ = stop_tx.send(true);
        while let Some(r) = loops.join_next().await {
            if let Err(e) = r {
                tracing::error!(error = %e, "SQS receive loop failed");
            }
        }
        tracing::info!(stats = ?self.stats(), "SQS source stopped");
    }
}

impl Inner {
    fn error(&self, operation: &'static str) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("s3_event_sqs_errors_total", "operation" => operation).increment(1);
    }

    /// One receive loop: receive, handle, delete, until `stop`.
    async fn receive_loop(self: Arc<Self>, n: usize, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            if *stop.borrow() {
                break;
            }
            let received = tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                r = self.receive() => r,
            };
            match received {
                Ok(messages) => {
                    backoff = Duration::from_secs(1);
                    if !messages.is_empty() {
                        self.process(messages).await;
                    }
                }
                Err(e) => {
                    self.error("receive");
                    tracing::warn!(receiver = n, error = %e, retry_in = ?backoff, "SQS ReceiveMessage failed");
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// One `ReceiveMessage`.
    async fn receive(&self) -> Result<Vec<Message>, String> {
        let c = &self.config;
        let out = self
            .client
            .receive_message()
            .queue_url(c.queue_url.trim())
            .max_number_of_messages(c.max_messages as i32)
            .wait_time_seconds(c.wait_time_secs as i32)
            .visibility_timeout(c.visibility_timeout_secs as i32)
            .send()
            .await
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())?;
        let messages = out.messages.unwrap_or_default();
        self.stats
            .messages
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        Ok(messages)
    }

    /// Handles the messages of one receive concurrently, renewing their
    /// visibility meanwhile, then deletes those that are done.
    async fn process(&self, messages: Vec<Message>) {
        let handling = futures::future::join_all(messages.iter().map(|m| self.handle(m)));
        let done = tokio::select! {
            done = handling => done,
            _ = self.heartbeat(&messages) => unreachable!("the heartbeat never ends"),
        };
        let receipts: Vec<&str> = messages
            .iter()
            .zip(done)
            .filter(|(_, done)| *done)
            .filter_map(|(m, _)| m.receipt_handle())
            .collect();
        if !receipts.is_empty() {
            self.delete(&receipts).await;
        }
    }

    /// Renews the visibility of `messages` every third of the timeout,
    /// forever.
    async fn heartbeat(&self, messages: &[Message]) {
        let secs = self.config.visibility_timeout_secs;
        let period =
            Duration::from_millis(u64::from(secs) * 1000 / 3).max(Duration::from_millis(300));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tick.tick().await;
            let entries = messages.iter().enumerate().filter_map(|(i, m)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .set_receipt_handle(m.receipt_handle().map(str::to_owned))
                    .visibility_timeout(secs as i32)
                    .build()
                    .ok()
            });
            let r = self
                .client
                .change_message_visibility_batch()
                .queue_url(self.config.queue_url.trim())
                .set_entries(Some(entries.collect()))
                .send()
                .await;
            match r {
                Ok(out) => {
                    for f in out.failed() {
                        self.error("change_visibility");
                        tracing::warn!(
                            code = f.code(),
                            message = f.message(),
                            "SQS visibility not renewed"
                        );
                    }
                }
                Err(e) => {
                    self.error("change_visibility");
                    tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "SQS ChangeMessageVisibilityBatch failed");
                }
            }
        }
    }

    /// Handles one message; whether it is done with (to be deleted).
    async fn handle(&self, m: &Message) -> bool {
        let id = m.message_id().unwrap_or_default();
        let body = m.body().unwrap_or_default();
        let outcome = self.receiver.handle_queued(body.as_bytes()).await;
        metrics::counter!("s3_event_sqs_messages_total", "outcome" => outcome.label()).increment(1);
        let s = &self.stats;
        match outcome {
            Outcome::Accepted { records } => {
                s.records.fetch_add(records as u64, Ordering::Relaxed);
                metrics::counter!("s3_event_sqs_records_total").increment(records as u64);
                true
            }
            Outcome::TestEvent => {
                s.test_events.fetch_add(1, Ordering::Relaxed);
                tracing::info!(message_id = id, "s3:TestEvent received and deleted");
                true
            }
            Outcome::SubscriptionConfirmation(Confirmation::Failed(e)) => {
                tracing::warn!(message_id = id, "SNS subscription confirmation failed: {e}");
                false
            }
            Outcome::SubscriptionConfirmation(_) | Outcome::Unsubscribed => true,
            Outcome::Rejected(r) => {
                s.rejected.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("s3_event_sqs_rejected_total", "reason" => r.reason())
                    .increment(1);
                tracing::warn!(
                    message_id = id,
                    reason = r.reason(),
                    "SQS message left in the queue (for its redrive policy): {r}"
                );
                false
            }
            Outcome::HandlerFailed(e) => {
                s.handler_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(message_id = id, error = %e, kind = e.kind(), "SQS message not handled; it comes back after its visibility timeout");
                false
            }
        }
    }

    /// `DeleteMessageBatch` of `receipts` (at most 10).
    async fn delete(&self, receipts: &[&str]) {
        let entries = receipts.iter().enumerate().filter_map(|(i, r)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(*r)
                .build()
                .ok()
        });
        let r = self
            .client
            .delete_message_batch()
            .queue_url(self.config.queue_url.trim())
            .set_entries(Some(entries.collect()))
            .send()
            .await;
        match r {
            Ok(out) => {
                let failed = out.failed().len();
                let deleted = receipts.len().saturating_sub(failed) as u64;
                self.stats.deleted.fetch_add(deleted, Ordering::Relaxed);
                metrics::counter!("s3_event_sqs_deleted_total").increment(deleted);
                for f in out.failed() {
                    self.error("delete");
                    tracing::warn!(
                        code = f.code(),
                        message = f.message(),
                        "SQS message not deleted; it will be handled again"
                    );
                }
            }
            Err(e) => {
                self.error("delete");
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "SQS DeleteMessageBatch failed; its messages will be handled again");
            }
        }
    }
}

#[cfg(test)]
mod tests;
