//! What the AWS targets (`sqs`, `sns`, `eventbridge`) share: their
//! connection keys ([`AwsConnection`]) and the SDK configuration made from
//! them, the classification of SDK errors and of failed batch entries, the
//! message attributes and FIFO ids, the batch loop that resends only the
//! entries that failed, and the target itself ([`AwsTarget`], declared for
//! each service by [`aws_target!`]). Each service module keeps what is its
//! own: its keys, the entries it sends and its two calls (the batch and
//! the probe), as an implementation of [`Service`] on its configuration.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use aws_types::SdkConfig;
use s3_event_core::aws::AwsConfig;
use s3_event_core::{EventRecord, Notification, TargetError, TargetId};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::values::{opt_string, redact};
use crate::config::{ClientConfig, Timeouts};
use crate::{Error, Result};

/// Default `connect_timeout` of the AWS targets.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Default `request_timeout` of the AWS targets: one request attempt.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The AWS targets' keys whose value is a secret.
pub(crate) const SECRET_KEYS: &[&str] = &["secret_key", "session_token"];

/// Most entries in one `SendMessageBatch`, `PublishBatch` or `PutEvents`.
pub(crate) const MAX_ENTRIES: usize = 10;

/// How often the entries that failed transiently inside a batch are sent
/// again before `send_batch` gives up on them (the notifier then retries
/// with its own backoff).
const ENTRY_RETRIES: u32 = 3;

/// Digests of entries accepted by a `send_batch` call that then failed,
/// kept at most this many.
const ACCEPTED_MEMORY: usize = 1024;

/// Error codes that mean "slow down" or "try again" (SQS, SNS, EventBridge,
/// KMS behind SSE), besides every HTTP 5xx and 429.
const TRANSIENT_CODES: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestLimitExceeded",
    "SlowDown",
    "KMSThrottlingException",
];

/// The connection keys every AWS target has (`region`, `endpoint`,
/// `access_key`, `secret_key`, `session_token`), read like the `queue` and
/// `client` blocks beside the target's own keys. Unset keys (empty strings
/// mean unset) come from the standard AWS environment variables (see
/// [`s3_event_core::aws`]).
///
/// `Debug` never prints `secret_key` or `session_token`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConnection {
    /// The region (default `AWS_REGION`, `AWS_DEFAULT_REGION`, else
    /// `us-east-1`).
    #[serde(default, deserialize_with = "opt_string")]
    pub region: Option<String>,

    /// An endpoint override for a compatible service, e.g.
    /// `http://127.0.0.1:15000` (default the service's
    /// `AWS_ENDPOINT_URL_<SERVICE>`, i.e. `AWS_ENDPOINT_URL_SQS`, `_SNS`
    /// or `_EVENTBRIDGE`, then `AWS_ENDPOINT_URL`, else AWS).
    #[serde(default, deserialize_with = "opt_string")]
    pub endpoint: Option<String>,

    /// The access key id (default `AWS_ACCESS_KEY_ID`).
    #[serde(default, deserialize_with = "opt_string")]
    pub access_key: Option<String>,

    /// The secret access key (default `AWS_SECRET_ACCESS_KEY`). Secret.
    #[serde(default, deserialize_with = "opt_string")]
    pub secret_key: Option<String>,

    /// A session token (default `AWS_SESSION_TOKEN`). Secret.
    #[serde(default, deserialize_with = "opt_string")]
    pub session_token: Option<String>,
}

impl fmt::Debug for AwsConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsConnection")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key)
            .field("secret_key", &redact(&self.secret_key))
            .field("session_token", &redact(&self.session_token))
            .finish()
    }
}

impl AwsConnection {
    /// The keys as an [`AwsConfig`] (unset keys are resolved from the
    /// environment when the target is built).
    pub fn aws(&self) -> AwsConfig {
        AwsConfig {
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            access_key_id: self.access_key.clone(),
            secret_access_key: self.secret_key.clone(),
            session_token: self.session_token.clone(),
        }
    }
}

/// The SDK configuration for `service` (`SQS`, `SNS`, `EventBridge`): the
/// keys and the environment resolved now (errors name the target's key),
/// the SDK's own retries off (the notifier retries, with one policy for
/// every target), connecting and each request attempt bounded by
/// `timeouts`.
pub(crate) fn sdk_config(
    target: &str,
    service: &str,
    cfg: &AwsConfig,
    timeouts: Timeouts,
) -> Result<SdkConfig> {
    let resolved = cfg.resolve(service).map_err(|e| {
        let key = match &e {
            s3_event_core::Error::Aws { field, .. } => match *field {
                "endpoint" => "endpoint",
                "secret_access_key" => "secret_key",
                _ => "access_key",
            },
            _ => "access_key",
        };
        Error::InvalidConfig {
            target: target.to_owned(),
            key,
            message: e.to_string(),
        }
    })?;
    Ok(resolved
        .sdk_config()
        .into_builder()
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(timeouts.connect)
                .operation_attempt_timeout(timeouts.request)
                .build(),
        )
        .build())
}

/// The connect and request attempt timeouts an SDK client was built with.
#[cfg(test)]
pub(crate) fn sdk_timeouts(c: Option<&TimeoutConfig>) -> Timeouts {
    let c = c.expect("the SDK client has a timeout configuration");
    Timeouts {
        connect: c.connect_timeout().expect("a connect timeout"),
        request: c.operation_attempt_timeout().expect("an attempt timeout"),
    }
}

/// Whether an error code means a retry may succeed.
pub(crate) fn transient_code(code: &str) -> bool {
    code.contains("Throttl") || TRANSIENT_CODES.contains(&code)
}

/// An SDK error as a target error: no response (connection refused,
/// timeout), an unreadable response, HTTP 5xx or 429, and throttling codes
/// are transient (with the server's `Retry-After`, when it sent one); the
/// rest (bad credentials, missing queue/topic/bus, invalid request) is
/// permanent. The message has the operation, status, code and message.
pub(crate) fn classify<E>(id: &TargetId, op: &str, e: &SdkError<E, HttpResponse>) -> TargetError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code();
    use std::fmt::Write as _;
    let mut message = op.to_owned();
    if let Some(s) = status {
        let _ = write!(message, " HTTP {s}");
    }
    if let Some(c) = code {
        let _ = write!(message, " ({c})");
    }
    let _ = match e.message() {
        Some(m) => write!(message, ": {m}"),
        None => write!(message, ": {}", DisplayErrorContext(e)),
    };
    let transient = match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        _ => status.is_some_and(|s| s >= 500 || s == 429) || code.is_some_and(transient_code),
    };
    if !transient {
        return TargetError::permanent(id, message);
    }
    let retry_after = e
        .raw_response()
        .and_then(|r| r.headers().get("retry-after"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    TargetError::Transient {
        target: id.to_string(),
        message,
        retry_after,
    }
}

/// One entry of a batch the service refused.
#[derive(Debug)]
pub(crate) struct Failed {
    /// Its position in the slice handed to the send function.
    pub index: usize,
    /// The service's error code.
    pub code: String,
    /// The service's message.
    pub message: String,
    /// Whether sending it again may succeed.
    pub transient: bool,
}

impl Failed {
    /// An entry SQS or SNS refused: `id` is its position as the request
    /// numbered it; the sender's fault is permanent unless its code says
    /// "throttled" or "try again".
    pub(crate) fn of_batch(
        id: &str,
        code: &str,
        message: Option<&str>,
        sender_fault: bool,
    ) -> Failed {
        Failed {
            index: id.parse().unwrap_or(usize::MAX),
            code: code.to_owned(),
            message: message.unwrap_or_default().to_owned(),
            transient: !sender_fault || transient_code(code),
        }
    }
}

/// What differs between the AWS targets, implemented by each one's
/// configuration: the service's client, what a record becomes, and its
/// two calls. [`AwsTarget`] does the rest.
#[async_trait]
pub(crate) trait Service: fmt::Debug + Send + Sync + 'static {
    /// The type name in configuration (`sqs`), for errors.
    const KIND: &'static str;
    /// The SDK's name of the service (`SQS`), for its endpoint variables.
    const SERVICE: &'static str;
    /// The SDK client.
    type Client: Send + Sync;
    /// What one record becomes.
    type Entry: Clone + Send + Sync;

    /// The entry of one record.
    fn entry(&self, id: &TargetId, r: &EventRecord) -> Result<Self::Entry, TargetError>;

    /// One batch request of at most [`MAX_ENTRIES`] entries; the entries
    /// the service refused (errors through [`classify`]).
    async fn send(
        &self,
        id: &TargetId,
        client: &Self::Client,
        entries: Vec<Self::Entry>,
    ) -> Result<Vec<Failed>, TargetError>;

    /// One cheap call that fails permanently when the queue, topic or bus
    /// is missing or the credentials are refused (errors through
    /// [`classify`]).
    async fn probe(&self, id: &TargetId, client: &Self::Client) -> Result<(), TargetError>;
}

/// An AWS target: a [`Service`]'s configuration, its SDK client, and the
/// [`Batcher`]. Wrapped by each service's public target ([`aws_target!`]).
pub(crate) struct AwsTarget<S: Service> {
    id: TargetId,
    config: S,
    /// The SDK client (its configuration is read by tests).
    pub(crate) client: S::Client,
    batcher: Batcher,
}

/// The SDK configuration of an `S` target `id` from its connection keys
/// (and the environment for what they leave unset) and its client block.
pub(crate) fn target_sdk_config<S: Service>(
    id: &TargetId,
    connection: &AwsConnection,
    client: &ClientConfig,
) -> Result<SdkConfig> {
    let timeouts = Timeouts::of(client, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT);
    let target = format!("{} {}", S::KIND, id.id());
    sdk_config(&target, S::SERVICE, &connection.aws(), timeouts)
}

impl<S: Service> AwsTarget<S> {
    /// The target `id` sending with `client`.
    pub(crate) fn new(id: TargetId, config: S, client: S::Client) -> AwsTarget<S> {
        AwsTarget {
            client,
            id,
            config,
            batcher: Batcher::default(),
        }
    }

    /// The target's id.
    pub(crate) fn id(&self) -> &TargetId {
        &self.id
    }

    /// The configuration the target was built with.
    pub(crate) fn config(&self) -> &S {
        &self.config
    }

    /// Sends every event, [`MAX_ENTRIES`] per request, in order, resending
    /// only the entries that failed; returns once the service accepted
    /// each.
    pub(crate) async fn send_batch(&self, events: &[EventRecord]) -> Result<(), TargetError> {
        self.batcher
            .deliver(
                &self.id,
                events,
                |r| self.config.entry(&self.id, r),
                |entries| self.config.send(&self.id, &self.client, entries),
            )
            .await
    }

    /// The probe: `Ok(false)` while the service is unreachable or
    /// throttling, an error when the destination does not exist or the
    /// credentials are refused.
    pub(crate) async fn is_active(&self) -> Result<bool, TargetError> {
        match self.config.probe(&self.id, &self.client).await {
            Ok(()) => Ok(true),
            Err(e) if e.is_transient() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Declares an AWS target: `aws_target! { /// docs SqsTarget(SqsConfig,
/// aws_sdk_sqs::Client) }` makes the public struct around an [`AwsTarget`]
/// of the configuration (which implements [`Service`] and has the fields
/// `connection` and `client`, the blocks), its `Debug` (the
/// configuration's, which redacts the secrets), its registration, `new`,
/// `config` and its [`Target`](s3_event_core::Target) implementation.
macro_rules! aws_target {
    ($(#[$doc:meta])* $target:ident($config:ty, $client:ty)) => {
        $(#[$doc])*
        pub struct $target($crate::aws_common::AwsTarget<$config>);

        impl ::std::fmt::Debug for $target {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($target))
                    .field("id", self.0.id())
                    .field("config", self.0.config())
                    .finish_non_exhaustive()
            }
        }

        /// Registered in `lib.rs`'s `targets!` list.
        impl $crate::registry::TargetType for $target {
            type Config = $config;

            const SECRET_KEYS: &'static [&'static str] = $crate::aws_common::SECRET_KEYS;

            fn build(
                id: ::s3_event_core::TargetId,
                config: $config,
            ) -> $crate::Result<::std::sync::Arc<dyn ::s3_event_core::Target>> {
                Ok(::std::sync::Arc::new($target::new(id, config)?))
            }
        }

        impl $target {
            /// Validates `config` (errors name the target and the key),
            /// reads the environment for what it leaves unset, and builds
            /// the client. Nothing is contacted.
            pub fn new(id: ::s3_event_core::TargetId, config: $config) -> $crate::Result<$target> {
                config.validate(id.id())?;
                let sdk = $crate::aws_common::target_sdk_config::<$config>(
                    &id,
                    &config.connection,
                    &config.client,
                )?;
                let client = <$client>::new(&sdk);
                Ok($target($crate::aws_common::AwsTarget::new(id, config, client)))
            }

            /// The configuration the target was built with.
            pub fn config(&self) -> &$config {
                self.0.config()
            }
        }

        #[::async_trait::async_trait]
        impl ::s3_event_core::Target for $target {
            fn id(&self) -> &::s3_event_core::TargetId {
                self.0.id()
            }

            /// Sends every event, 10 per request, in order; returns once
            /// the service accepted each. See the [module docs](self).
            async fn send_batch(
                &self,
                events: &[::s3_event_core::EventRecord],
            ) -> ::std::result::Result<(), ::s3_event_core::TargetError> {
                self.0.send_batch(events).await
            }

            /// One cheap call: `Ok(false)` while the service is unreachable
            /// or throttling, an error when the destination does not exist
            /// or the credentials are refused.
            async fn is_active(&self) -> ::std::result::Result<bool, ::s3_event_core::TargetError> {
                self.0.is_active().await
            }

            fn max_batch(&self) -> usize {
                $crate::aws_common::MAX_ENTRIES
            }
        }
    };
}
pub(crate) use aws_target;

/// One record as an SQS message or SNS notification: the envelope, its
/// attributes, and for FIFO queues and topics the group and deduplication
/// ids.
#[derive(Clone, Debug)]
pub(crate) struct Message {
    /// The MinIO envelope, as JSON text.
    pub body: String,
    /// `EventName` and `Key`.
    pub attributes: Vec<(&'static str, String)>,
    /// `(MessageGroupId, MessageDeduplicationId)`, for FIFO.
    pub fifo: Option<(String, String)>,
}

/// The [`Message`] of a record.
pub(crate) fn message(id: &TargetId, r: &EventRecord, fifo: bool) -> Result<Message, TargetError> {
    let n = envelope(id, r)?;
    let body = String::from_utf8(n.to_vec()).map_err(|e| TargetError::permanent(id, e))?;
    Ok(Message {
        body,
        attributes: attributes(&n),
        fifo: fifo.then(|| (group_id(r), dedup_id(r))),
    })
}

/// The MinIO envelope of one record (`{"EventName", "Key", "Records"}`),
/// the body the SQS and SNS targets send, as the other targets do.
pub(crate) fn envelope(id: &TargetId, r: &EventRecord) -> Result<Notification, TargetError> {
    Notification::minio_envelope(vec![r.clone()]).map_err(|e| TargetError::permanent(id, e))
}

/// The message attributes of a record: `EventName` and `Key`
/// (`bucket/key`, URL-decoded), each when present, non-empty and made of
/// characters SQS and SNS accept in an attribute value (XML text: no
/// control characters but tab, line feed and carriage return; no U+FFFE or
/// U+FFFF). A key they would refuse is left out rather than failing the
/// event; the body still carries it.
pub(crate) fn attributes(n: &Notification) -> Vec<(&'static str, String)> {
    let accepted = |c: char| {
        (c >= ' ' || matches!(c, '\t' | '\n' | '\r')) && !matches!(c, '\u{FFFE}' | '\u{FFFF}')
    };
    [("EventName", &n.event_name), ("Key", &n.key)]
        .into_iter()
        .filter_map(|(name, v)| {
            v.as_ref()
                .filter(|v| !v.is_empty() && v.chars().all(accepted))
                .map(|v| (name, v.clone()))
        })
        .collect()
}

fn sha256_hex(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The FIFO message group: `bucket/key` with the key as on the wire
/// (URL-encoded, so ASCII), when it fits the services' limit (at most 128
/// characters, ASCII letters, digits and punctuation); else the SHA-256 of
/// it in hex, which is stable for one object too.
pub(crate) fn group_id(r: &EventRecord) -> String {
    let g = format!(
        "{}/{}",
        r.bucket_name().unwrap_or_default(),
        r.key().unwrap_or_default()
    );
    if g.len() <= 128 && g.bytes().all(|b| b.is_ascii_graphic()) {
        g
    } else {
        sha256_hex(&[&g])
    }
}

/// The FIFO deduplication id: the SHA-256 (64 hex characters) of bucket,
/// key, sequencer, version id and event name, which name one event; a
/// record with neither sequencer nor version id hashes its whole JSON
/// instead (so two writes of one key are not taken for one).
pub(crate) fn dedup_id(r: &EventRecord) -> String {
    let object = r.s3.as_ref().and_then(|s| s.object.as_ref());
    let sequencer = object.and_then(|o| o.sequencer.as_deref());
    let version = object.and_then(|o| o.version_id.as_deref());
    if sequencer.is_none() && version.is_none() {
        let json = serde_json::to_string(r).unwrap_or_default();
        return sha256_hex(&["record", &json]);
    }
    sha256_hex(&[
        r.bucket_name().unwrap_or_default(),
        r.key().unwrap_or_default(),
        sequencer.unwrap_or_default(),
        version.unwrap_or_default(),
        r.event_name_str().unwrap_or_default(),
    ])
}

/// The digest a record is remembered by.
fn digest(r: &EventRecord) -> [u8; 32] {
    let json = serde_json::to_vec(r).unwrap_or_default();
    Sha256::digest(&json).into()
}

/// Sends a target's entries in chunks of [`MAX_ENTRIES`], in order, and
/// resends only the entries that failed.
///
/// Within one `send_batch`, entries that failed transiently are sent again
/// (up to [`ENTRY_RETRIES`] times) without their accepted neighbours. When
/// the call still fails (an entry refused permanently, or transiently too
/// often, or the request itself), the entries already accepted are
/// remembered, and the notifier's retry of the same records (the whole
/// batch, or one record at a time after a permanent error) skips them: each
/// is delivered once. A remembered record is skipped once, by its digest
/// (its whole JSON); the memory holds the last [`ACCEPTED_MEMORY`].
#[derive(Debug, Default)]
pub(crate) struct Batcher {
    accepted: Mutex<VecDeque<[u8; 32]>>,
}

impl Batcher {
    /// Takes `d` out of the memory, if it is there.
    fn take(&self, d: &[u8; 32]) -> bool {
        let mut m = self.accepted.lock().unwrap_or_else(|p| p.into_inner());
        match m.iter().position(|x| x == d) {
            Some(i) => {
                m.remove(i);
                true
            }
            None => false,
        }
    }

    fn remember(&self, digests: impl IntoIterator<Item = [u8; 32]>) {
        let mut m = self.accepted.lock().unwrap_or_else(|p| p.into_inner());
        for d in digests {
            if m.len() >= ACCEPTED_MEMORY {
                m.pop_front();
            }
            m.push_back(d);
        }
    }

    /// Delivers `records`: `prepare` turns each into the service's entry
    /// type, `send` sends up to [`MAX_ENTRIES`] entries in one request and
    /// returns those the service refused.
    pub(crate) async fn deliver<T, P, S, F>(
        &self,
        id: &TargetId,
        records: &[EventRecord],
        prepare: P,
        send: S,
    ) -> Result<(), TargetError>
    where
        T: Clone,
        P: Fn(&EventRecord) -> Result<T, TargetError>,
        S: Fn(Vec<T>) -> F,
        F: Future<Output = Result<Vec<Failed>, TargetError>>,
    {
        let mut pending = Vec::with_capacity(records.len());
        for r in records {
            let d = digest(r);
            if !self.take(&d) {
                pending.push((d, prepare(r)?));
            }
        }
        let mut accepted: Vec<[u8; 32]> = Vec::new();
        for chunk in pending.chunks(MAX_ENTRIES) {
            if let Err(e) = self.deliver_chunk(id, chunk, &send, &mut accepted).await {
                self.remember(accepted);
                return Err(e);
            }
        }
        Ok(())
    }

    async fn deliver_chunk<T, S, F>(
        &self,
        id: &TargetId,
        chunk: &[([u8; 32], T)],
        send: &S,
        accepted: &mut Vec<[u8; 32]>,
    ) -> Result<(), TargetError>
    where
        T: Clone,
        S: Fn(Vec<T>) -> F,
        F: Future<Output = Result<Vec<Failed>, TargetError>>,
    {
        let mut todo: Vec<&([u8; 32], T)> = chunk.iter().collect();
        let mut attempt = 0u32;
        loop {
            let failed = send(todo.iter().map(|(_, t)| t.clone()).collect()).await?;
            let mut is_failed = vec![false; todo.len()];
            for f in &failed {
                if let Some(slot) = is_failed.get_mut(f.index) {
                    *slot = true;
                }
                metrics::counter!("s3_event_target_entry_failures_total",
                    "target" => id.to_string(), "code" => f.code.clone())
                .increment(1);
            }
            accepted.extend(
                todo.iter()
                    .zip(&is_failed)
                    .filter(|(_, f)| !**f)
                    .map(|(e, _)| e.0),
            );
            let Some(first) = failed.first() else {
                return Ok(());
            };
            let summary = format!(
                "{} of {} entries refused; first: {} {}",
                failed.len(),
                todo.len(),
                first.code,
                first.message
            );
            if let Some(p) = failed.iter().find(|f| !f.transient) {
                return Err(TargetError::permanent(
                    id,
                    format!("{summary}; permanent: {} {}", p.code, p.message),
                ));
            }
            attempt += 1;
            if attempt > ENTRY_RETRIES {
                return Err(TargetError::transient(id, summary));
            }
            tracing::debug!(target_id = %id, attempt, %summary, "resending the failed entries");
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            todo = todo
                .into_iter()
                .zip(is_failed)
                .filter(|(_, f)| *f)
                .map(|(e, _)| e)
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::conformance::record;

    fn id() -> TargetId {
        "arn:minio:sqs::1:sqs".parse().unwrap()
    }

    fn keys(rs: &[EventRecord]) -> Vec<String> {
        rs.iter().map(|r| r.decoded_key().unwrap()).collect()
    }

    #[test]
    fn group_ids_are_bucket_and_key_or_a_hash_when_they_do_not_fit() {
        assert_eq!(group_id(&record("a/b.txt")), "conformance/a/b.txt");
        // Spaces and non-ASCII are URL-encoded on the wire.
        assert_eq!(group_id(&record("a b é")), "conformance/a+b+%C3%A9");
        let long = record(&"k".repeat(200));
        let g = group_id(&long);
        assert_eq!(g.len(), 64);
        assert_eq!(g, group_id(&long), "stable");
        assert_ne!(g, group_id(&record(&"k".repeat(201))));
    }

    #[test]
    fn dedup_ids_name_one_event() {
        let mut a = record("k");
        let mut b = record("k");
        // Without sequencer or version id: the whole record.
        assert_eq!(dedup_id(&a), dedup_id(&b));
        b.event_time = Some("2026-01-01T00:00:00.000Z".into());
        assert_ne!(dedup_id(&a), dedup_id(&b));
        // With a sequencer: bucket, key, sequencer, version, event name.
        for r in [&mut a, &mut b] {
            r.s3.as_mut().unwrap().object.as_mut().unwrap().sequencer = Some("0A1".into());
        }
        assert_eq!(dedup_id(&a), dedup_id(&b));
        b.event_name = Some("s3:ObjectRemoved:Delete".into());
        assert_ne!(dedup_id(&a), dedup_id(&b));
        assert!(dedup_id(&a).len() <= 128);
    }

    #[test]
    fn attributes_carry_event_name_and_key() {
        let n = envelope(&id(), &record("a b")).unwrap();
        assert_eq!(
            attributes(&n),
            vec![
                ("EventName", "s3:ObjectCreated:Put".to_owned()),
                ("Key", "conformance/a b".to_owned())
            ]
        );
    }

    #[test]
    fn a_key_the_services_would_refuse_is_not_an_attribute() {
        let n = envelope(&id(), &record("a\u{1}b")).unwrap();
        assert_eq!(
            attributes(&n),
            vec![("EventName", "s3:ObjectCreated:Put".to_owned())]
        );
        let n = envelope(&id(), &record("tab\there")).unwrap();
        assert_eq!(attributes(&n).len(), 2);
    }

    #[test]
    fn throttling_and_server_errors_are_transient_codes() {
        for c in [
            "ThrottlingException",
            "Throttling",
            "RequestThrottled",
            "InternalError",
        ] {
            assert!(transient_code(c), "{c}");
        }
        for c in [
            "AccessDenied",
            "InvalidParameterValue",
            "NotFound",
            "MalformedDetail",
        ] {
            assert!(!transient_code(c), "{c}");
        }
    }

    fn service_error(status: u16, code: &str, retry_after: Option<&str>) -> TargetError {
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;
        use aws_smithy_types::error::ErrorMetadata;
        let mut raw = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        if let Some(after) = retry_after {
            raw.headers_mut().insert("retry-after", after.to_owned());
        }
        let err = ErrorMetadata::builder()
            .code(code)
            .message("what the service said")
            .build();
        classify(
            &id(),
            "SendMessageBatch",
            &SdkError::service_error(err, raw),
        )
    }

    #[test]
    fn sdk_errors_are_classified_by_status_and_code() {
        use s3_event_core::retry::Retry;
        let e = service_error(400, "ThrottlingException", None);
        assert_eq!(e.retry(), Retry::Transient, "{e}");
        assert!(e
            .to_string()
            .contains("HTTP 400 (ThrottlingException): what the service said"));
        let e = service_error(503, "ServiceUnavailable", Some("7"));
        assert_eq!(e.retry(), Retry::After(Duration::from_secs(7)), "{e}");
        assert_eq!(
            service_error(500, "Whatever", None).retry(),
            Retry::Transient
        );
        assert_eq!(
            service_error(429, "TooMany", None).retry(),
            Retry::Transient
        );
        for (status, code) in [
            (400, "AWS.SimpleQueueService.NonExistentQueue"),
            (403, "InvalidClientTokenId"),
            (400, "InvalidParameterValue"),
            (404, "NotFound"),
        ] {
            let e = service_error(status, code, None);
            assert!(
                matches!(e.retry(), Retry::Permanent(_)),
                "{status} {code}: {e}"
            );
        }
        let e: SdkError<ErrorMetadataAlias, HttpResponse> = SdkError::timeout_error("slow");
        assert!(classify(&id(), "op", &e).is_transient());
    }

    type ErrorMetadataAlias = aws_smithy_types::error::ErrorMetadata;

    /// A fake service: refuses, per call, the entries whose key is listed,
    /// with the given transient flag, and records what it accepted.
    struct Fake {
        accepted: Mutex<Vec<String>>,
        calls: AtomicUsize,
        refuse: Mutex<Vec<(String, bool, usize)>>,
    }

    impl Fake {
        fn new(refuse: &[(&str, bool, usize)]) -> Fake {
            Fake {
                accepted: Mutex::default(),
                calls: AtomicUsize::new(0),
                refuse: Mutex::new(
                    refuse
                        .iter()
                        .map(|(k, t, n)| ((*k).to_owned(), *t, *n))
                        .collect(),
                ),
            }
        }

        async fn send(&self, entries: Vec<String>) -> Result<Vec<Failed>, TargetError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            assert!(entries.len() <= MAX_ENTRIES);
            let mut failed = Vec::new();
            let mut refuse = self.refuse.lock().unwrap();
            for (i, k) in entries.into_iter().enumerate() {
                match refuse.iter_mut().find(|(r, _, n)| *r == k && *n > 0) {
                    Some((_, transient, n)) => {
                        *n -= 1;
                        failed.push(Failed {
                            index: i,
                            code: "X".into(),
                            message: "refused".into(),
                            transient: *transient,
                        });
                    }
                    None => self.accepted.lock().unwrap().push(k),
                }
            }
            Ok(failed)
        }
    }

    fn prepare(r: &EventRecord) -> Result<String, TargetError> {
        Ok(r.decoded_key().unwrap())
    }

    #[tokio::test]
    async fn only_the_failed_entries_are_sent_again() {
        let records: Vec<EventRecord> = (0..12).map(|i| record(&format!("k{i}"))).collect();
        let fake = Fake::new(&[("k3", true, 2), ("k11", true, 1)]);
        let b = Batcher::default();
        b.deliver(&id(), &records, prepare, |e| fake.send(e))
            .await
            .unwrap();
        let got = fake.accepted.lock().unwrap().clone();
        let mut sorted = got.clone();
        sorted.sort();
        let mut want = keys(&records);
        want.sort();
        assert_eq!(sorted, want, "each record accepted exactly once");
        // 2 chunks; k3 twice more, k11 once more.
        assert_eq!(fake.calls.load(Ordering::Relaxed), 5);
    }

    #[tokio::test]
    async fn after_a_permanent_entry_the_retry_skips_what_was_accepted() {
        let records: Vec<EventRecord> = (0..5).map(|i| record(&format!("k{i}"))).collect();
        let fake = Fake::new(&[("k2", false, usize::MAX)]);
        let b = Batcher::default();
        let e = b
            .deliver(&id(), &records, prepare, |e| fake.send(e))
            .await
            .unwrap_err();
        assert!(!e.is_transient(), "{e}");
        assert_eq!(fake.accepted.lock().unwrap().len(), 4);
        // The notifier's retry, one record at a time: only k2 is sent
        // again (and refused again); the others are not duplicated.
        for r in &records {
            let res = b
                .deliver(&id(), std::slice::from_ref(r), prepare, |e| fake.send(e))
                .await;
            assert_eq!(res.is_ok(), r.decoded_key().unwrap() != "k2");
        }
        assert_eq!(fake.accepted.lock().unwrap().len(), 4);
        // Once skipped, a record is sent again when it comes again.
        b.deliver(&id(), &records[..1], prepare, |e| fake.send(e))
            .await
            .unwrap();
        assert_eq!(fake.accepted.lock().unwrap().len(), 5);
    }

    #[tokio::test]
    async fn entries_failing_transiently_too_often_fail_the_call_transiently() {
        let records: Vec<EventRecord> = (0..3).map(|i| record(&format!("k{i}"))).collect();
        let fake = Fake::new(&[("k1", true, usize::MAX)]);
        let b = Batcher::default();
        let e = b
            .deliver(&id(), &records, prepare, |e| fake.send(e))
            .await
            .unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert_eq!(
            fake.calls.load(Ordering::Relaxed),
            1 + ENTRY_RETRIES as usize
        );
        // The whole-batch retry sends only k1.
        let before = fake.calls.load(Ordering::Relaxed);
        fake.refuse.lock().unwrap().clear();
        b.deliver(&id(), &records, prepare, |e| fake.send(e))
            .await
            .unwrap();
        assert_eq!(fake.calls.load(Ordering::Relaxed), before + 1);
        assert_eq!(*fake.accepted.lock().unwrap(), ["k0", "k2", "k1"]);
    }
}

/// Helpers for the AWS targets' tests against moto (`S3E_MOTO_ENDPOINT`,
/// default `http://127.0.0.1:15000`, started by `scripts/services.sh`):
/// clients, queues, and a reader that drains a queue.
#[cfg(all(test, feature = "integration", feature = "sqs"))]
pub(crate) mod moto {
    use std::net::ToSocketAddrs;

    use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
    use s3_event_core::aws::AwsConfig;

    use crate::config::Timeouts;

    use crate::broker_tests::env_or;

    /// moto's endpoint.
    pub(crate) fn endpoint() -> String {
        env_or("S3E_MOTO_ENDPOINT", "http://127.0.0.1:15000")
    }

    /// moto's address, for a proxy in front of it.
    pub(crate) fn address() -> std::net::SocketAddr {
        let e = endpoint();
        let hostport = e.split("://").nth(1).unwrap_or(&e).trim_end_matches('/');
        hostport
            .to_socket_addrs()
            .expect("S3E_MOTO_ENDPOINT names a host and port")
            .next()
            .expect("S3E_MOTO_ENDPOINT resolves")
    }

    /// Connection settings for moto (any key is accepted), at `endpoint`.
    pub(crate) fn aws_at(endpoint: &str) -> AwsConfig {
        AwsConfig {
            region: Some("us-east-1".into()),
            endpoint: Some(endpoint.to_owned()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            session_token: None,
        }
    }

    /// The connection keys of a target talking to moto at `endpoint`.
    pub(crate) fn connection_at(endpoint: &str) -> super::AwsConnection {
        let aws = aws_at(endpoint);
        super::AwsConnection {
            region: aws.region,
            endpoint: aws.endpoint,
            access_key: aws.access_key_id,
            secret_key: aws.secret_access_key,
            session_token: aws.session_token,
        }
    }

    /// The SDK configuration for moto itself.
    pub(crate) fn sdk(service: &str) -> aws_types::SdkConfig {
        let timeouts = Timeouts {
            connect: super::DEFAULT_CONNECT_TIMEOUT,
            request: super::DEFAULT_REQUEST_TIMEOUT,
        };
        super::sdk_config("test", service, &aws_at(&endpoint()), timeouts).unwrap()
    }

    /// An SQS client talking to moto directly.
    pub(crate) fn sqs() -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&sdk("SQS"))
    }

    /// Creates queue `name` with `attributes`; its URL and ARN.
    pub(crate) async fn create_queue(
        name: &str,
        attributes: &[(QueueAttributeName, &str)],
    ) -> (String, String) {
        let c = sqs();
        let mut req = c.create_queue().queue_name(name);
        for (k, v) in attributes {
            req = req.attributes(k.clone(), *v);
        }
        let url = req
            .send()
            .await
            .expect("moto creates the queue")
            .queue_url
            .unwrap();
        let arn = c
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()
            .remove(&QueueAttributeName::QueueArn)
            .unwrap();
        (url, arn)
    }

    /// Records with every field a notification carries.
    pub(crate) fn rich_records(n: usize) -> Vec<s3_event_core::EventRecord> {
        (0..n)
            .map(|i| {
                let v = serde_json::json!({
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "awsRegion": "us-east-1",
                    "eventTime": format!("2026-12-06T10:00:{:02}.000Z", i % 60),
                    "eventName": if i % 3 == 2 { "ObjectRemoved:Delete" } else { "ObjectCreated:Put" },
                    "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
                    "requestParameters": {"sourceIPAddress": "10.0.0.1"},
                    "responseElements": {"x-amz-request-id": format!("REQ{i}"), "x-amz-id-2": "id2"},
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "configurationId": "cfg",
                        "bucket": {"name": "photos", "ownerIdentity": {"principalId": "OWNER"},
                                   "arn": "arn:aws:s3:::photos"},
                        "object": {"key": format!("dir/caf%C3%A9+{i}.jpg"), "size": 1000 + i,
                                   "eTag": format!("etag{i}"), "versionId": format!("v{i}"),
                                   "sequencer": format!("0055AED6DCD9028{i:03X}")}
                    }
                });
                serde_json::from_value(v).unwrap()
            })
            .collect()
    }

    /// One message read back.
    #[derive(Clone, Debug)]
    pub(crate) struct Received {
        /// The body.
        pub body: String,
        /// String message attributes, `(name, value)`.
        pub attributes: Vec<(String, String)>,
        /// `MessageGroupId`, on FIFO queues.
        pub group: Option<String>,
    }

    /// Reads a queue through its own client, deleting what it read, and
    /// keeps every message in arrival order.
    pub(crate) struct QueueReader {
        client: aws_sdk_sqs::Client,
        url: String,
        seen: tokio::sync::Mutex<Vec<Received>>,
    }

    impl QueueReader {
        /// A reader of the queue at `url`.
        pub(crate) fn new(url: &str) -> QueueReader {
            QueueReader {
                client: sqs(),
                url: url.to_owned(),
                seen: tokio::sync::Mutex::default(),
            }
        }

        /// Receives until the queue is empty; every message read so far.
        pub(crate) async fn drain(&self) -> Vec<Received> {
            let mut seen = self.seen.lock().await;
            loop {
                let out = self
                    .client
                    .receive_message()
                    .queue_url(&self.url)
                    .max_number_of_messages(10)
                    .message_attribute_names("All")
                    .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
                    .send()
                    .await
                    .expect("moto answers ReceiveMessage");
                let messages = out.messages.unwrap_or_default();
                if messages.is_empty() {
                    return seen.clone();
                }
                for m in messages {
                    let attributes = m
                        .message_attributes
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.string_value.unwrap_or_default()))
                        .collect();
                    let group = m
                        .attributes
                        .as_ref()
                        .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                        .cloned();
                    seen.push(Received {
                        body: m.body.clone().unwrap_or_default(),
                        attributes,
                        group,
                    });
                    self.client
                        .delete_message()
                        .queue_url(&self.url)
                        .receipt_handle(m.receipt_handle.unwrap_or_default())
                        .send()
                        .await
                        .expect("moto deletes the message");
                }
            }
        }
    }
}
