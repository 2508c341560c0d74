//! Receivers of S3 event notifications: one axum [`Router`] that accepts
//!
//! - MinIO/AIStor webhook POSTs (the `{"EventName","Key","Records"}`
//!   envelope), checked against an optional `auth_token` sent as
//!   `Authorization: Bearer <token>` (compared in constant time);
//! - AWS SNS HTTP(S) deliveries: `Notification` messages verified with
//!   signature version 1 (SHA1withRSA) or 2 (SHA256withRSA) over AWS's
//!   canonical string against the signing certificate (fetched only from
//!   `https://sns.<region>.amazonaws.com/...pem` and cached, or read from a
//!   file), replays refused (a `MessageId` seen recently, or a `Timestamp`
//!   older than [`SnsConfig::max_age`]); `SubscriptionConfirmation` handled
//!   (confirmed by GETting `SubscribeURL` when
//!   [`SnsConfig::confirm_subscriptions`] is on and the URL's host is an SNS
//!   host);
//! - SQS-style bodies (`{"Messages":[...]}`, Lambda SQS events), plain
//!   `{"Records":[...]}` documents and EventBridge events, all through core's
//!   [`inbound::parse`]. An SQS message whose body is an SNS envelope (an
//!   SNS topic feeding the queue without raw message delivery) has its SNS
//!   signature checked too when [`SnsConfig::verify_sqs_wrapped`] is on (the
//!   default, with [`SnsConfig::verify_signatures`]): one bad signature
//!   refuses the whole body with a 403. SQS bodies still need the
//!   `auth_token` when one is set.
//!
//! Records go to a [`RecordsHandler`]; its error ([`HandlerError`],
//! transient or permanent) turns into a 503 so that the sender retries.
//!
//! | Outcome | Status |
//! |---|---|
//! | records handed over, test event, confirmation handled | 200 |
//! | body that is not an S3 notification | 400 |
//! | missing or wrong `Authorization` | 401 |
//! | SNS signature, certificate URL or certificate bad; topic not allowed | 403 |
//! | SNS message replayed (same `MessageId`) or too old | 409 |
//! | signing certificate could not be fetched; subscription GET failed | 502 |
//! | handler failed | 503 |
//!
//! Every request is counted through the [`metrics`] crate:
//! `s3_event_receiver_requests_total{outcome}`,
//! `s3_event_receiver_rejected_total{reason}` and
//! `s3_event_receiver_records_total`; [`Receiver::stats`] has the same
//! counts.
//!
//! ```no_run
//! use s3_event_inputs::receiver::{Receiver, ReceiverConfig, AuthToken};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ReceiverConfig {
//!     auth_token: Some(AuthToken::new("s3cr3t")),
//!     ..Default::default()
//! };
//! let receiver = Receiver::new(config, |records: Vec<s3_event_inputs::core::EventRecord>| async move {
//!     println!("{} records", records.len());
//!     Ok::<(), std::convert::Infallible>(())
//! })?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, receiver.router()).await?;
//! # Ok(()) }
//! ```

mod sns;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use s3_event_core::inbound::{self, Inbound, Origin, SnsMessage, SqsContent, SqsMessage};
use subtle::ConstantTimeEq;

use crate::handler::{BoxFuture, HandlerError, RecordsHandler};

pub use sns::{
    canonical_string, check_cert_url, check_subscribe_url, is_sns_host, SigningCertificate,
};

/// A shared secret expected in the `Authorization` header. Never printed:
/// its `Debug` shows `AuthToken(***)`. Deserializes from a non-empty string.
#[derive(Clone)]
pub struct AuthToken(String);

impl<'de> serde::Deserialize<'de> for AuthToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() || s.trim() != s {
            return Err(serde::de::Error::custom(
                "`auth_token` must be non-empty, without surrounding spaces",
            ));
        }
        Ok(AuthToken(s))
    }
}

impl AuthToken {
    /// A token as configured on MinIO (`auth_token`): a bare token is
    /// expected as `Bearer <token>`; a value with a space (`Scheme value`)
    /// is expected verbatim, as MinIO sends it.
    pub fn new(token: impl Into<String>) -> Self {
        AuthToken(token.into())
    }

    /// Whether `header` (the `Authorization` value) carries this token,
    /// compared in constant time.
    pub fn matches(&self, header: &[u8]) -> bool {
        let expected = if self.0.contains(' ') {
            self.0.clone()
        } else {
            format!("Bearer {}", self.0)
        };
        expected.as_bytes().ct_eq(header).into()
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(***)")
    }
}

/// Receiver settings. Deserializes from the same keys (`auth_token`,
/// `max_body_bytes`, `sns`); unknown keys are refused.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiverConfig {
    /// When set, every request that is not a signature-verified SNS message
    /// must carry it in `Authorization`; a request carrying a wrong value is
    /// refused whatever it holds.
    pub auth_token: Option<AuthToken>,
    /// SNS settings.
    pub sns: SnsConfig,
    /// The largest body accepted (default 8 MiB).
    pub max_body_bytes: usize,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            auth_token: None,
            sns: SnsConfig::default(),
            max_body_bytes: 8 << 20,
        }
    }
}

/// SNS settings. Deserializes from the field names, durations in seconds
/// (`max_age_secs`, `max_clock_skew_secs`); unknown keys are refused.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnsConfig {
    /// Verify SNS signatures (default on). Off, SNS messages are treated as
    /// any other body (the auth token applies).
    pub verify_signatures: bool,
    /// GET `SubscribeURL` of a verified `SubscriptionConfirmation` whose host
    /// is `sns.<region>.amazonaws.com` (default off: the confirmation is
    /// acknowledged and logged, and the subscription is confirmed by hand).
    pub confirm_subscriptions: bool,
    /// Topics accepted; empty accepts any topic.
    pub topic_arns: Vec<String>,
    /// Verify against this certificate (PEM or DER) instead of fetching the
    /// one named by `SigningCertURL` (whose host is still checked).
    pub certificate_file: Option<PathBuf>,
    /// Messages whose `Timestamp` is older are refused as replays
    /// (default 1 hour; key `max_age_secs`).
    #[serde(rename = "max_age_secs", deserialize_with = "secs")]
    pub max_age: Duration,
    /// How far in the future a `Timestamp` may be (default 5 minutes; key
    /// `max_clock_skew_secs`).
    #[serde(rename = "max_clock_skew_secs", deserialize_with = "secs")]
    pub max_clock_skew: Duration,
    /// How many recent `MessageId`s are remembered (default 100000).
    pub replay_cache_size: usize,
    /// Also verify the SNS envelopes found inside SQS message bodies
    /// (default on; only with [`SnsConfig::verify_signatures`]): signature,
    /// certificate and [`SnsConfig::topic_arns`] as for a direct SNS
    /// delivery. Their `Timestamp` and `MessageId` are not checked for
    /// replays, since SQS legitimately redelivers a message and keeps it up
    /// to 14 days. Off, such bodies are trusted as any SQS body (the
    /// `auth_token` still applies).
    pub verify_sqs_wrapped: bool,
}

fn secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    <u64 as serde::Deserialize>::deserialize(d).map(Duration::from_secs)
}

impl Default for SnsConfig {
    fn default() -> Self {
        SnsConfig {
            verify_signatures: true,
            confirm_subscriptions: false,
            topic_arns: Vec::new(),
            certificate_file: None,
            max_age: Duration::from_secs(3600),
            max_clock_skew: Duration::from_secs(300),
            replay_cache_size: 100_000,
            verify_sqs_wrapped: true,
        }
    }
}

/// Error building a [`Receiver`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiverError {
    /// [`SnsConfig::certificate_file`] could not be read or parsed.
    #[error("SNS certificate file `{}`: {reason}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(String),
}

/// Fetches URLs for the receiver: signing certificates and `SubscribeURL`s.
/// The default uses reqwest (HTTPS, no redirects, 10 s timeout); tests
/// supply their own.
pub trait HttpGet: Send + Sync + 'static {
    /// GETs `url` and returns the body of a 2xx response.
    fn get(&self, url: &url::Url) -> BoxFuture<'static, Result<Vec<u8>, String>>;
}

struct ReqwestGet(reqwest::Client);

impl HttpGet for ReqwestGet {
    fn get(&self, url: &url::Url) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let req = self.0.get(url.clone());
        Box::pin(async move {
            let resp = req.send().await.map_err(|e| e.to_string())?;
            let status = resp.status();
            if !status.is_success() {
                return Err(format!("HTTP {status}"));
            }
            let body = resp.bytes().await.map_err(|e| e.to_string())?;
            if body.len() > 1 << 20 {
                return Err(format!("response of {} bytes is too large", body.len()));
            }
            Ok(body.to_vec())
        })
    }
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// Missing or wrong `Authorization` (401).
    Unauthorized,
    /// Not an S3 notification (400); the parser's message.
    BadPayload(String),
    /// An SNS message whose signature, certificate URL or certificate does
    /// not check out (403).
    Forged(String),
    /// An SNS message from a topic not in [`SnsConfig::topic_arns`] (403).
    TopicNotAllowed(String),
    /// An SNS message seen before or too old (409).
    Replayed(String),
    /// The signing certificate could not be fetched (502).
    CertificateUnavailable(String),
}

impl Rejection {
    /// The metrics label: `unauthorized`, `bad_payload`, `forged`,
    /// `topic_not_allowed`, `replayed`, `certificate_unavailable`.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Unauthorized => "unauthorized",
            Rejection::BadPayload(_) => "bad_payload",
            Rejection::Forged(_) => "forged",
            Rejection::TopicNotAllowed(_) => "topic_not_allowed",
            Rejection::Replayed(_) => "replayed",
            Rejection::CertificateUnavailable(_) => "certificate_unavailable",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::Unauthorized => StatusCode::UNAUTHORIZED,
            Rejection::BadPayload(_) => StatusCode::BAD_REQUEST,
            Rejection::Forged(_) | Rejection::TopicNotAllowed(_) => StatusCode::FORBIDDEN,
            Rejection::Replayed(_) => StatusCode::CONFLICT,
            Rejection::CertificateUnavailable(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Unauthorized => f.write_str("unauthorized: missing or wrong Authorization"),
            Rejection::BadPayload(m) => write!(f, "bad payload: {m}"),
            Rejection::Forged(m) => write!(f, "SNS message refused: {m}"),
            Rejection::TopicNotAllowed(t) => write!(f, "SNS topic `{t}` is not allowed"),
            Rejection::Replayed(m) => write!(f, "SNS message replayed: {m}"),
            Rejection::CertificateUnavailable(m) => {
                write!(f, "SNS signing certificate unavailable: {m}")
            }
        }
    }
}

/// What happened to a subscription confirmation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// `SubscribeURL` was fetched.
    Confirmed,
    /// [`SnsConfig::confirm_subscriptions`] is off: acknowledged only.
    NotConfigured,
    /// `SubscribeURL` is not an `https://sns.<region>.amazonaws.com` URL:
    /// not visited.
    UrlNotAllowed(String),
    /// The GET failed (the reply is a 502).
    Failed(String),
}

/// The result of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Records handed to the handler (possibly none).
    Accepted {
        /// How many.
        records: usize,
    },
    /// An `s3:TestEvent`, acknowledged.
    TestEvent,
    /// A verified `SubscriptionConfirmation`.
    SubscriptionConfirmation(Confirmation),
    /// A verified `UnsubscribeConfirmation`, acknowledged.
    Unsubscribed,
    /// Refused.
    Rejected(Rejection),
    /// The handler failed, transiently or permanently; the sender should
    /// retry (503 either way: a 4xx would make it drop the notification).
    HandlerFailed(HandlerError),
}

impl Outcome {
    /// The HTTP status of the reply.
    pub fn status(&self) -> StatusCode {
        match self {
            Outcome::Accepted { .. } | Outcome::TestEvent | Outcome::Unsubscribed => StatusCode::OK,
            Outcome::SubscriptionConfirmation(Confirmation::Failed(_)) => StatusCode::BAD_GATEWAY,
            Outcome::SubscriptionConfirmation(_) => StatusCode::OK,
            Outcome::Rejected(r) => r.status(),
            Outcome::HandlerFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub(crate) fn label(&self) -> &'static str {
        match self {
            Outcome::Accepted { .. } => "accepted",
            Outcome::TestEvent => "test_event",
            Outcome::SubscriptionConfirmation(_) => "subscription_confirmation",
            Outcome::Unsubscribed => "unsubscribe_confirmation",
            Outcome::Rejected(_) => "rejected",
            Outcome::HandlerFailed(_) => "handler_failed",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Accepted { records } => write!(f, "accepted {records} records"),
            Outcome::TestEvent => f.write_str("test event acknowledged"),
            Outcome::SubscriptionConfirmation(Confirmation::Confirmed) => {
                f.write_str("subscription confirmed")
            }
            Outcome::SubscriptionConfirmation(Confirmation::NotConfigured) => {
                f.write_str("subscription confirmation received (confirm_subscriptions is off)")
            }
            Outcome::SubscriptionConfirmation(Confirmation::UrlNotAllowed(m)) => {
                write!(f, "subscription confirmation not followed: {m}")
            }
            Outcome::SubscriptionConfirmation(Confirmation::Failed(m)) => {
                write!(f, "subscription confirmation failed: {m}")
            }
            Outcome::Unsubscribed => f.write_str("unsubscribe confirmation acknowledged"),
            Outcome::Rejected(r) => r.fmt(f),
            Outcome::HandlerFailed(m) => write!(f, "handler failed: {m}"),
        }
    }
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = self.to_string();
        body.push('\n');
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response()
    }
}

/// Counts since the receiver was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Requests seen.
    pub requests: u64,
    /// Records handed to the handler successfully.
    pub records: u64,
    /// Requests refused for a bad or missing token.
    pub unauthorized: u64,
    /// Bodies that were not S3 notifications.
    pub bad_payload: u64,
    /// SNS messages with a bad signature, certificate or certificate URL,
    /// or from a topic not allowed.
    pub forged: u64,
    /// SNS messages replayed or too old.
    pub replayed: u64,
    /// Requests that failed for want of a signing certificate.
    pub certificate_unavailable: u64,
    /// Handler failures.
    pub handler_failed: u64,
}

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    records: AtomicU64,
    unauthorized: AtomicU64,
    bad_payload: AtomicU64,
    forged: AtomicU64,
    replayed: AtomicU64,
    certificate_unavailable: AtomicU64,
    handler_failed: AtomicU64,
}

/// Recently seen SNS `MessageId`s, bounded in count and age.
struct ReplayCache {
    seen: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
    capacity: usize,
    ttl: Duration,
}

impl ReplayCache {
    fn prune(&mut self, now: Instant) {
        while let Some((t, _)) = self.order.front() {
            let expired = now.duration_since(*t) > self.ttl;
            if !expired && self.order.len() <= self.capacity {
                break;
            }
            let (t, id) = self.order.pop_front().expect("front exists");
            if self.seen.get(&id) == Some(&t) {
                self.seen.remove(&id);
            }
        }
    }

    fn contains(&mut self, id: &str) -> bool {
        self.prune(Instant::now());
        self.seen.contains_key(id)
    }

    /// Records `id`; false when it was already there.
    fn insert(&mut self, id: &str) -> bool {
        let now = Instant::now();
        self.prune(now);
        if self.seen.contains_key(id) {
            return false;
        }
        self.seen.insert(id.to_owned(), now);
        self.order.push_back((now, id.to_owned()));
        self.prune(now);
        true
    }

    fn remove(&mut self, id: &str) {
        self.seen.remove(id);
    }
}

struct Inner {
    config: ReceiverConfig,
    handler: Box<dyn RecordsHandler>,
    http: Arc<dyn HttpGet>,
    file_certificate: Option<Arc<SigningCertificate>>,
    certificates: Mutex<HashMap<String, Arc<SigningCertificate>>>,
    replay: Mutex<ReplayCache>,
    stats: Stats,
}

/// The receiver: build it once, serve [`Receiver::router`], or call
/// [`Receiver::receive`] directly. Cheap to clone.
#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Inner>,
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// A receiver handing records to `handler`, fetching certificates and
    /// confirming subscriptions with reqwest.
    pub fn new(
        config: ReceiverConfig,
        handler: impl RecordsHandler,
    ) -> Result<Self, ReceiverError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true)
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ReceiverError::Http(e.to_string()))?;
        Self::with_http(config, handler, ReqwestGet(client))
    }

    /// A receiver that fetches URLs with `http`.
    pub fn with_http(
        config: ReceiverConfig,
        handler: impl RecordsHandler,
        http: impl HttpGet,
    ) -> Result<Self, ReceiverError> {
        let file_certificate = match &config.sns.certificate_file {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| ReceiverError::Certificate {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let cert = SigningCertificate::parse(&bytes).map_err(|reason| {
                    ReceiverError::Certificate {
                        path: path.clone(),
                        reason,
                    }
                })?;
                Some(Arc::new(cert))
            }
            None => None,
        };
        let replay = ReplayCache {
            seen: HashMap::new(),
            order: VecDeque::new(),
            capacity: config.sns.replay_cache_size.max(1),
            ttl: config.sns.max_age + config.sns.max_clock_skew,
        };
        Ok(Receiver {
            inner: Arc::new(Inner {
                config,
                handler: Box::new(handler),
                http: Arc::new(http),
                file_certificate,
                certificates: Mutex::new(HashMap::new()),
                replay: Mutex::new(replay),
                stats: Stats::default(),
            }),
        })
    }

    /// A router answering `POST /` (nest or merge it where it should live),
    /// with bodies limited to [`ReceiverConfig::max_body_bytes`].
    pub fn router(&self) -> Router {
        let this = self.clone();
        Router::new()
            .route(
                "/",
                post(move |headers: HeaderMap, body: Bytes| {
                    let this = this.clone();
                    async move { this.receive(&headers, &body).await }
                }),
            )
            .layer(DefaultBodyLimit::max(self.inner.config.max_body_bytes))
    }

    /// The counts so far.
    pub fn stats(&self) -> ReceiverStats {
        let s = &self.inner.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ReceiverStats {
            requests: l(&s.requests),
            records: l(&s.records),
            unauthorized: l(&s.unauthorized),
            bad_payload: l(&s.bad_payload),
            forged: l(&s.forged),
            replayed: l(&s.replayed),
            certificate_unavailable: l(&s.certificate_unavailable),
            handler_failed: l(&s.handler_failed),
        }
    }

    /// Handles one request: its headers and body.
    pub async fn receive(&self, headers: &HeaderMap, body: &[u8]) -> Outcome {
        let outcome = self.receive_inner(headers, body).await;
        let s = &self.inner.stats;
        s.requests.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("s3_event_receiver_requests_total", "outcome" => outcome.label())
            .increment(1);
        match &outcome {
            Outcome::Accepted { records } => {
                s.records.fetch_add(*records as u64, Ordering::Relaxed);
                metrics::counter!("s3_event_receiver_records_total").increment(*records as u64);
            }
            Outcome::Rejected(r) => {
                let counter = match r {
                    Rejection::Unauthorized => &s.unauthorized,
                    Rejection::BadPayload(_) => &s.bad_payload,
                    Rejection::Forged(_) | Rejection::TopicNotAllowed(_) => &s.forged,
                    Rejection::Replayed(_) => &s.replayed,
                    Rejection::CertificateUnavailable(_) => &s.certificate_unavailable,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("s3_event_receiver_rejected_total", "reason" => r.reason())
                    .increment(1);
                tracing::warn!(reason = r.reason(), "notification refused: {r}");
            }
            Outcome::HandlerFailed(e) => {
                s.handler_failed.fetch_add(1, Ordering::Relaxed);
                if e.is_transient() {
                    tracing::warn!(error = %e, kind = e.kind(), "notification handler failed");
                } else {
                    tracing::error!(error = %e, kind = e.kind(), "notification handler failed");
                }
            }
            _ => {}
        }
        outcome
    }

    /// Handles the body of one message read from an SQS queue (what the
    /// `sqs` source does with each message): parsed as any body; an SNS
    /// envelope in it (the queue subscribed to a topic without raw delivery)
    /// verified when [`SnsConfig::verify_signatures`] and
    /// [`SnsConfig::verify_sqs_wrapped`] are on (signature, certificate and
    /// topic; no replay or age check, since SQS redelivers and keeps
    /// messages up to 14 days); then handed on as [`Receiver::receive`]
    /// would. The auth token does not apply, and nothing is counted in
    /// [`Receiver::stats`]: the caller counts.
    pub async fn handle_queued(&self, body: &[u8]) -> Outcome {
        let inbound = match inbound::parse(body) {
            Ok(i) => i,
            Err(e) => return Outcome::Rejected(Rejection::BadPayload(e.to_string())),
        };
        let sns = &self.inner.config.sns;
        if sns.verify_signatures && sns.verify_sqs_wrapped {
            if let Some(message) = sns_message(&inbound) {
                if let Err(r) = self.verify_sns_signature(message, false).await {
                    return Outcome::Rejected(r);
                }
            }
        }
        if let Err(r) = self.verify_sqs_wrapped(&inbound).await {
            return Outcome::Rejected(r);
        }
        self.dispatch(inbound).await
    }

    /// The checks in order (token, body, SNS signatures, replay), then the
    /// handler.
    async fn receive_inner(&self, headers: &HeaderMap, body: &[u8]) -> Outcome {
        let token_ok = match self.token_ok(headers) {
            Ok(ok) => ok,
            Err(r) => return Outcome::Rejected(r),
        };
        let inbound = match inbound::parse(body) {
            Ok(i) => i,
            Err(e) => return Outcome::Rejected(Rejection::BadPayload(e.to_string())),
        };
        if let Err(r) = self.verify_sqs_wrapped(&inbound).await {
            return Outcome::Rejected(r);
        }
        let reserved = match self.admit(&inbound, token_ok).await {
            Ok(reserved) => reserved,
            Err(r) => return Outcome::Rejected(r),
        };
        let outcome = self.dispatch(inbound).await;
        if let (Some(id), Outcome::HandlerFailed(_)) = (&reserved, &outcome) {
            // SNS retries with the same MessageId: let the retry through.
            self.inner.replay.lock().expect("replay lock").remove(id);
        }
        outcome
    }

    /// Whether the request carries the token (always true without one). A
    /// wrong token is refused before the body is looked at; a missing one
    /// only matters for bodies that are not verified SNS messages.
    fn token_ok(&self, headers: &HeaderMap) -> Result<bool, Rejection> {
        match (
            &self.inner.config.auth_token,
            headers.get(header::AUTHORIZATION),
        ) {
            (None, _) => Ok(true),
            (Some(t), Some(v)) if t.matches(v.as_bytes()) => Ok(true),
            (Some(_), Some(_)) => Err(Rejection::Unauthorized),
            (Some(_), None) => Ok(false),
        }
    }

    /// The signatures of the SNS envelopes inside an SQS body, when
    /// [`SnsConfig::verify_sqs_wrapped`] is on: one bad one refuses the body.
    async fn verify_sqs_wrapped(&self, inbound: &Inbound) -> Result<(), Rejection> {
        let sns = &self.inner.config.sns;
        if !(sns.verify_signatures && sns.verify_sqs_wrapped) {
            return Ok(());
        }
        for m in sqs_messages(inbound).unwrap_or_default() {
            let Some(message) = sqs_wrapped_sns(&m.content) else {
                continue;
            };
            if let Err(r) = self.verify_sns_signature(message, false).await {
                let id = m.message_id.as_deref().unwrap_or_default();
                return Err(match r {
                    Rejection::Forged(e) => Rejection::Forged(format!("SQS message `{id}`: {e}")),
                    other => other,
                });
            }
        }
        Ok(())
    }

    /// Whether the request may go on: a direct SNS message must verify (its
    /// `MessageId` is then reserved against replays and returned), anything
    /// else must carry the token when one is set.
    async fn admit(&self, inbound: &Inbound, token_ok: bool) -> Result<Option<String>, Rejection> {
        let verify = self.inner.config.sns.verify_signatures;
        let message = match sns_message(inbound) {
            Some(message) if verify => message,
            _ if token_ok => return Ok(None),
            _ => return Err(Rejection::Unauthorized),
        };
        self.verify_sns(message).await?;
        // Record the id once verified, so that a forged copy cannot block
        // the real message.
        if message.message_type.as_deref() != Some("Notification") {
            return Ok(None);
        }
        let id = message.message_id.clone().unwrap_or_default();
        if !self.inner.replay.lock().expect("replay lock").insert(&id) {
            return Err(Rejection::Replayed(format!(
                "MessageId `{id}` was already received"
            )));
        }
        Ok(Some(id))
    }

    /// Hands the records to the handler, or answers what is not records.
    async fn dispatch(&self, inbound: Inbound) -> Outcome {
        match inbound {
            Inbound::Records { notification, .. } => {
                let n = notification.records.len();
                if n == 0 {
                    return Outcome::Accepted { records: 0 };
                }
                match self.inner.handler.handle(notification.records).await {
                    Ok(()) => Outcome::Accepted { records: n },
                    Err(e) => Outcome::HandlerFailed(e),
                }
            }
            Inbound::TestEvent { .. } => Outcome::TestEvent,
            Inbound::SnsSubscriptionConfirmation { message } => {
                Outcome::SubscriptionConfirmation(self.confirm(&message).await)
            }
            Inbound::SnsUnsubscribeConfirmation { message } => {
                tracing::info!(
                    topic = message.topic_arn.as_deref().unwrap_or_default(),
                    "SNS unsubscribe confirmation received"
                );
                Outcome::Unsubscribed
            }
        }
    }

    /// What to do with a verified `SubscriptionConfirmation`.
    async fn confirm(&self, message: &SnsMessage) -> Confirmation {
        let topic = message.topic_arn.as_deref().unwrap_or_default();
        if !self.inner.config.sns.confirm_subscriptions {
            tracing::info!(
                topic,
                "SNS subscription confirmation received; confirm_subscriptions is off, \
                 confirm it by hand"
            );
            return Confirmation::NotConfigured;
        }
        let url = match check_subscribe_url(message.subscribe_url.as_deref().unwrap_or_default()) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(topic, "SNS SubscribeURL not followed: {e}");
                return Confirmation::UrlNotAllowed(e);
            }
        };
        match self.inner.http.get(&url).await {
            Ok(_) => {
                tracing::info!(topic, "SNS subscription confirmed");
                Confirmation::Confirmed
            }
            Err(e) => Confirmation::Failed(e),
        }
    }

    async fn verify_sns(&self, message: &SnsMessage) -> Result<(), Rejection> {
        self.verify_sns_signature(message, true).await
    }

    /// Topic, (when `fresh`) replay and age, then signature.
    async fn verify_sns_signature(
        &self,
        message: &SnsMessage,
        fresh: bool,
    ) -> Result<(), Rejection> {
        let sns = &self.inner.config.sns;
        let topic = message.topic_arn.as_deref().unwrap_or_default();
        if !sns.topic_arns.is_empty() && !sns.topic_arns.iter().any(|t| t == topic) {
            return Err(Rejection::TopicNotAllowed(topic.to_owned()));
        }
        if fresh {
            let is_notification = message.message_type.as_deref() == Some("Notification");
            if is_notification {
                let id = message.message_id.as_deref().unwrap_or_default();
                if self.inner.replay.lock().expect("replay lock").contains(id) {
                    return Err(Rejection::Replayed(format!(
                        "MessageId `{id}` was already received"
                    )));
                }
            }
            sns::check_timestamp(message, sns.max_age, sns.max_clock_skew, is_notification)?;
        }
        let version = message.signature_version.as_deref().unwrap_or_default();
        if version != "1" && version != "2" {
            return Err(Rejection::Forged(format!(
                "SignatureVersion `{version}` is not 1 or 2"
            )));
        }
        let cert_url = message.signing_cert_url.as_deref().unwrap_or_default();
        let url = check_cert_url(cert_url).map_err(Rejection::Forged)?;
        let cert = match &self.inner.file_certificate {
            Some(c) => c.clone(),
            None => self.certificate(&url).await?,
        };
        cert.check_validity(std::time::SystemTime::now())
            .map_err(Rejection::Forged)?;
        let canonical = canonical_string(message).map_err(Rejection::Forged)?;
        cert.verify(
            version,
            canonical.as_bytes(),
            message.signature.as_deref().unwrap_or_default(),
        )
        .map_err(Rejection::Forged)
    }

    async fn certificate(&self, url: &url::Url) -> Result<Arc<SigningCertificate>, Rejection> {
        if let Some(c) = self
            .inner
            .certificates
            .lock()
            .expect("cert lock")
            .get(url.as_str())
        {
            return Ok(c.clone());
        }
        let bytes = self
            .inner
            .http
            .get(url)
            .await
            .map_err(|e| Rejection::CertificateUnavailable(format!("{url}: {e}")))?;
        let cert = Arc::new(
            SigningCertificate::parse(&bytes)
                .map_err(|e| Rejection::Forged(format!("certificate at {url}: {e}")))?,
        );
        let mut cache = self.inner.certificates.lock().expect("cert lock");
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(url.as_str().to_owned(), cert.clone());
        Ok(cert)
    }
}

/// The SNS message of a direct SNS delivery (not one inside an SQS body).
fn sns_message(inbound: &Inbound) -> Option<&SnsMessage> {
    match inbound {
        Inbound::Records {
            origin: Origin::Sns { message, .. },
            ..
        }
        | Inbound::TestEvent {
            origin: Origin::Sns { message, .. },
            ..
        } => Some(&**message),
        Inbound::SnsSubscriptionConfirmation { message }
        | Inbound::SnsUnsubscribeConfirmation { message } => Some(message),
        _ => None,
    }
}

/// The SNS envelope inside an SQS message, if its body is one.
fn sqs_wrapped_sns(content: &SqsContent) -> Option<&SnsMessage> {
    match content {
        SqsContent::Records {
            origin: Origin::Sns { message, .. },
            ..
        }
        | SqsContent::TestEvent {
            origin: Origin::Sns { message, .. },
            ..
        } => Some(&**message),
        SqsContent::SnsConfirmation(message) => Some(message),
        _ => None,
    }
}

/// The SQS messages of an SQS body, if `inbound` is one.
fn sqs_messages(inbound: &Inbound) -> Option<&[SqsMessage]> {
    match inbound {
        Inbound::Records {
            origin: Origin::Sqs { messages },
            ..
        }
        | Inbound::TestEvent {
            origin: Origin::Sqs { messages },
            ..
        } => Some(messages),
        _ => None,
    }
}

#[cfg(any(test, feature = "testing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
#[cfg(test)]
mod tests;
