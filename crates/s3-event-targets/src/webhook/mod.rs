//! The webhook target: POSTs each event as MinIO's
//! `{"EventName", "Key", "Records": [record]}` envelope (feature `webhook`).
//!
//! - [`WebhookConfig`]: MinIO's keys (`endpoint`, `auth_token`,
//!   `client_cert`/`client_key`, `queue_dir`, `queue_limit`, `enable`) plus
//!   `ca_cert`, `signature_key`, the client block's `connect_timeout` and
//!   `request_timeout` (10 s each), and the older `timeout` (both at once).
//! - [`WebhookTarget`]: the [`Target`]. Status 2xx is delivered; 408, 429,
//!   5xx, connection errors and timeouts are transient (`Retry-After`
//!   seconds honoured); other statuses are permanent. Redirects are not
//!   followed.
//! - Signatures: with a `signature_key`, each request carries
//!   [`TIMESTAMP_HEADER`] (unix seconds) and [`SIGNATURE_HEADER`]
//!   (`sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`). Receivers check
//!   them with [`verify`], which also rejects replays outside a tolerance.

mod config;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use s3_event_core::{EventRecord, Notification, Target, TargetError, TargetId};
use sha2::Sha256;

pub use config::{
    redact_endpoint, WebhookConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
};

use crate::config::Timeouts;
use crate::{Error, Result};

/// Header carrying the signing time, unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-S3Event-Timestamp";

/// Header carrying `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub const SIGNATURE_HEADER: &str = "X-S3Event-Signature";

/// Largest batch handed to [`WebhookTarget::send_batch`]; events are still
/// POSTed one per request, in order, as MinIO does.
const MAX_BATCH: usize = 64;

/// Longest excerpt of a rejecting response's body kept in the error.
const BODY_EXCERPT: usize = 200;

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], timestamp: &str, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The [`SIGNATURE_HEADER`] value for `body` signed at `timestamp` (unix
/// seconds): `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub fn sign(signature_key: &[u8], timestamp: u64, body: &[u8]) -> String {
    let tag = mac(signature_key, &timestamp.to_string(), body).finalize();
    format!("sha256={}", hex::encode(tag.into_bytes()))
}

/// Why [`verify`] rejected a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The timestamp header is not unix seconds.
    #[error("malformed `{TIMESTAMP_HEADER}` header")]
    MalformedTimestamp,
    /// The signature header is not `sha256=<hex>`.
    #[error("malformed `{SIGNATURE_HEADER}` header (expected `sha256=<hex>`)")]
    MalformedSignature,
    /// The timestamp is older than the tolerance allows (a replay or a
    /// very late delivery).
    #[error("timestamp is {age:?} old, more than the {tolerance:?} tolerated")]
    Stale {
        /// How old the timestamp is.
        age: Duration,
        /// The tolerance given to [`verify`].
        tolerance: Duration,
    },
    /// The timestamp is further in the future than the tolerance allows.
    #[error("timestamp is {ahead:?} in the future, more than the {tolerance:?} tolerated")]
    Future {
        /// How far ahead the timestamp is.
        ahead: Duration,
        /// The tolerance given to [`verify`].
        tolerance: Duration,
    },
    /// The signature does not match the body, the timestamp and the key: the
    /// request was tampered with or signed with another key.
    #[error("signature mismatch")]
    Mismatch,
}

/// Checks a webhook request's signature, for receivers.
///
/// `timestamp_header` and `signature_header` are the values of
/// [`TIMESTAMP_HEADER`] and [`SIGNATURE_HEADER`]; `body` the raw request
/// body. Fails when the timestamp is further than `tolerance` from `now`
/// either way, or when the signature does not match (compared in constant
/// time).
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use s3_event_targets::webhook::{sign, verify};
///
/// let now = SystemTime::now();
/// let ts = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
/// let sig = sign(b"key", ts, b"{}");
/// let tol = Duration::from_secs(300);
/// assert!(verify(b"key", &ts.to_string(), &sig, b"{}", now, tol).is_ok());
/// assert!(verify(b"key", &ts.to_string(), &sig, b"{ }", now, tol).is_err());
/// ```
pub fn verify(
    signature_key: &[u8],
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let ts_text = timestamp_header.trim();
    let ts: u64 = ts_text
        .parse()
        .map_err(|_| VerifyError::MalformedTimestamp)?;
    let tag = signature_header
        .trim()
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(VerifyError::MalformedSignature)?;
    let signed_at = UNIX_EPOCH + Duration::from_secs(ts);
    match now.duration_since(signed_at) {
        Ok(age) if age > tolerance => return Err(VerifyError::Stale { age, tolerance }),
        Err(e) if e.duration() > tolerance => {
            return Err(VerifyError::Future {
                ahead: e.duration(),
                tolerance,
            })
        }
        _ => {}
    }
    mac(signature_key, ts_text, body)
        .verify_slice(&tag)
        .map_err(|_| VerifyError::Mismatch)
}

/// A webhook [`Target`]: POSTs every event, in order, as MinIO's envelope.
///
/// Built from a [`WebhookConfig`]; reconnects by itself (each request uses
/// reqwest's connection pool), so a receiver that was down works again
/// without rebuilding the target.
pub struct WebhookTarget {
    id: TargetId,
    endpoint: reqwest::Url,
    authorization: Option<HeaderValue>,
    signature_key: Option<Vec<u8>>,
    timeouts: Timeouts,
    client: reqwest::Client,
}

impl fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("id", &self.id)
            .field("endpoint", &config::redact_endpoint(self.endpoint.as_str()))
            .field("authorization", &self.authorization.as_ref().map(|_| "***"))
            .field("signature_key", &self.signature_key.as_ref().map(|_| "***"))
            .field("timeouts", &self.timeouts)
            .finish()
    }
}


/// Registered in `lib.rs`'s `targets!` list.
impl crate::registry::TargetType for WebhookTarget {
    type Config = WebhookConfig;

    const SECRET_KEYS: &'static [&'static str] = &["auth_token", "signature_key"];
    const URL_KEYS: &'static [&'static str] = &["endpoint"];

    fn build(
        id: TargetId,
        config: WebhookConfig,
    ) -> crate::Result<std::sync::Arc<dyn s3_event_core::Target>> {
        Ok(std::sync::Arc::new(WebhookTarget::new(id, config)?))
    }
}

impl WebhookTarget {
    /// Validates `config` (errors name `id` and the key) and builds the
    /// target. With `client_cert` and `client_key` both set, the PEM files
    /// are read now and presented for mutual TLS (rustls).
    pub fn new(id: TargetId, config: WebhookConfig) -> Result<WebhookTarget> {
        config.validate(id.id())?;
        let err = |key: &'static str, message: String| Error::InvalidConfig {
            target: format!("webhook {}", id.id()),
            key,
            message,
        };
        let endpoint = reqwest::Url::parse(&config.endpoint)
            .map_err(|e| err("endpoint", format!("`endpoint` is not a valid URL: {e}")))?;
        let authorization = match config.authorization() {
            Some(v) => {
                let mut v = HeaderValue::from_str(&v).map_err(|_| {
                    err(
                        "auth_token",
                        "`auth_token` is not a valid header value".into(),
                    )
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let timeouts = config.timeouts();
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(timeouts.request)
            .connect_timeout(timeouts.connect)
            .redirect(reqwest::redirect::Policy::none());
        if let (Some(cert), Some(key)) = (&config.client_cert, &config.client_key) {
            let read = |k: &'static str, p: &std::path::Path| {
                std::fs::read(p)
                    .map_err(|e| err(k, format!("`{k}`: cannot read `{}`: {e}", p.display())))
            };
            let mut pem = read("client_cert", cert)?;
            pem.push(b'\n');
            pem.extend(read("client_key", key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                err(
                    "client_cert",
                    format!("`client_cert`/`client_key` are not a PEM certificate and key: {e}"),
                )
            })?;
            builder = builder.identity(identity);
        }
        if let Some(ca) = &config.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| {
                err(
                    "ca_cert",
                    format!("`ca_cert`: cannot read `{}`: {e}", ca.display()),
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| err("ca_cert", format!("`ca_cert` is not a PEM bundle: {e}")))?;
            if certs.is_empty() {
                return Err(err("ca_cert", "`ca_cert` holds no certificate".into()));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder
            .build()
            .map_err(|e| err("client_cert", format!("cannot build the HTTP client: {e}")))?;
        Ok(WebhookTarget {
            id,
            endpoint,
            authorization,
            signature_key: config.signature_key.map(String::into_bytes),
            timeouts,
            client,
        })
    }

    /// The connect and request timeouts its HTTP client was built with.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    fn transport_error(&self, e: reqwest::Error) -> TargetError {
        // The URL's path and query can hold a token: keep it out of the
        // message (and so out of logs and dead letters).
        let e = e.without_url();
        // Builder errors cannot happen with a validated URL; everything else
        // (connect, timeout, reset, body) may work on a later attempt.
        if e.is_builder() {
            TargetError::permanent(&self.id, e)
        } else if e.is_timeout() && e.is_connect() {
            let t = self.timeouts.connect;
            let message = format!("not connected within `connect_timeout` ({t:?}): {}", describe(&e));
            TargetError::transient(&self.id, message)
        } else if e.is_timeout() {
            let t = self.timeouts.request;
            let message = format!("no answer within `request_timeout` ({t:?}): {}", describe(&e));
            TargetError::transient(&self.id, message)
        } else {
            TargetError::transient(&self.id, describe(&e))
        }
    }

    async fn post(&self, record: &EventRecord) -> Result<(), TargetError> {
        let envelope = Notification::minio_envelope(vec![record.clone()])
            .map_err(|e| TargetError::permanent(&self.id, e))?;
        let body = envelope.to_vec();
        let mut req = self
            .client
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/json");
        if let Some(auth) = &self.authorization {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        if let Some(key) = &self.signature_key {
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            req = req
                .header(TIMESTAMP_HEADER, ts)
                .header(SIGNATURE_HEADER, sign(key, ts, &body));
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let excerpt = match resp.text().await {
            Ok(t) => excerpt(&t),
            Err(_) => String::new(),
        };
        let message = if excerpt.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {excerpt}")
        };
        if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error()
        {
            Err(TargetError::Transient {
                target: self.id.to_string(),
                message,
                retry_after,
            })
        } else {
            Err(TargetError::permanent(&self.id, message))
        }
    }
}

/// A reqwest error with its causes, on one line.
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// At most [`BODY_EXCERPT`] characters of `text`, on one line.
fn excerpt(text: &str) -> String {
    let one_line: String = text
        .chars()
        .take(BODY_EXCERPT)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    one_line.trim().to_owned()
}

#[async_trait]
impl Target for WebhookTarget {
    fn id(&self) -> &TargetId {
        &self.id
    }

    /// POSTs each event in its own request, in order; stops at the first
    /// failure (the caller retries the whole batch, so receivers should be
    /// idempotent on the record's `sequencer`).
    async fn send_batch(&self, events: &[EventRecord]) -> Result<(), TargetError> {
        for record in events {
            self.post(record).await?;
        }
        Ok(())
    }

    /// A `HEAD` to the endpoint: any HTTP answer means reachable (as
    /// MinIO); a refused connection or a timeout is `Ok(false)`.
    async fn is_active(&self) -> Result<bool, TargetError> {
        let probe = self
            .client
            .head(self.endpoint.clone())
            .timeout(self.timeouts.request.min(Duration::from_secs(5)))
            .send()
            .await;
        match probe {
            Ok(_) => Ok(true),
            Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => Ok(false),
            Err(e) => Err(self.transport_error(e)),
        }
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notifier::{Notifier, RetryPolicy, TargetOptions};
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, StatusCode as AxStatus};
    use axum::response::{IntoResponse, Response};
    use axum::Router;
    use s3_event_core::{EventName, NotificationRule, RuleSet};
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    /// One request the test server received.
    #[derive(Clone, Debug)]
    struct Seen {
        method: Method,
        headers: HeaderMap,
        body: Bytes,
    }

    type Log = Arc<Mutex<Vec<Seen>>>;

    /// Starts a server on `listener` answering `status` (with `extra`
    /// headers) to every request and logging it.
    fn serve(
        listener: tokio::net::TcpListener,
        status: u16,
        extra: &'static [(&'static str, &'static str)],
        body: &'static str,
    ) -> Log {
        let log: Log = Arc::default();
        let l = log.clone();
        let app = Router::new().fallback(move |method: Method, headers: HeaderMap, b: Bytes| {
            let l = l.clone();
            async move {
                l.lock().unwrap().push(Seen {
                    method,
                    headers,
                    body: b,
                });
                let mut r: Response = (AxStatus::from_u16(status).unwrap(), body).into_response();
                for (k, v) in extra {
                    r.headers_mut().insert(*k, v.parse().unwrap());
                }
                r
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        log
    }

    async fn server(
        status: u16,
        extra: &'static [(&'static str, &'static str)],
        body: &'static str,
    ) -> (SocketAddr, Log) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (addr, serve(listener, status, extra, body))
    }

    /// A loopback address nobody listens on (bound, then released).
    fn free_addr() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    fn id() -> TargetId {
        "arn:minio:sqs::1:webhook".parse().unwrap()
    }

    fn record(key: &str) -> EventRecord {
        EventRecord::from_slice(
            format!(r#"{{"eventName":"s3:ObjectCreated:Put","s3":{{"bucket":{{"name":"photos"}},"object":{{"key":"{key}"}}}}}}"#)
                .as_bytes(),
        )
        .unwrap()
    }

    fn target(addr: SocketAddr, f: impl FnOnce(&mut WebhookConfig)) -> WebhookTarget {
        let mut c = WebhookConfig::new(format!("http://{addr}/events"));
        c.client.request_timeout = Some(Duration::from_secs(2));
        f(&mut c);
        WebhookTarget::new(id(), c).unwrap()
    }

    fn body_json(s: &Seen) -> serde_json::Value {
        serde_json::from_slice(&s.body).unwrap()
    }

    #[tokio::test]
    async fn delivers_minio_envelope_with_bearer_auth() {
        let (addr, log) = server(200, &[], "").await;
        let t = target(addr, |c| c.auth_token = Some("s3cr3t".into()));
        t.send_batch(&[record("summer/red+flower%21.jpg"), record("b")])
            .await
            .unwrap();
        let seen = log.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "one request per record");
        let s = &seen[0];
        assert_eq!(s.method, Method::POST);
        assert_eq!(s.headers["authorization"], "Bearer s3cr3t");
        assert_eq!(s.headers["content-type"], "application/json");
        assert!(s.headers.get(SIGNATURE_HEADER).is_none());
        let v = body_json(s);
        assert_eq!(v["EventName"], "s3:ObjectCreated:Put");
        assert_eq!(v["Key"], "photos/summer/red flower!.jpg");
        assert_eq!(v["Records"].as_array().unwrap().len(), 1);
        assert_eq!(
            v["Records"][0]["s3"]["object"]["key"],
            "summer/red+flower%21.jpg"
        );
        assert_eq!(body_json(&seen[1])["Key"], "photos/b");
    }

    #[tokio::test]
    async fn auth_token_with_scheme_is_sent_as_is() {
        let (addr, log) = server(204, &[], "").await;
        let t = target(addr, |c| c.auth_token = Some("Basic eHl6".into()));
        t.send(&record("k")).await.unwrap();
        assert_eq!(
            log.lock().unwrap()[0].headers["authorization"],
            "Basic eHl6"
        );
    }

    #[tokio::test]
    async fn signature_verifies_and_tampering_fails() {
        let (addr, log) = server(200, &[], "").await;
        let t = target(addr, |c| c.signature_key = Some("sig-key".into()));
        t.send(&record("k")).await.unwrap();
        let s = log.lock().unwrap()[0].clone();
        let ts = s.headers[TIMESTAMP_HEADER].to_str().unwrap().to_owned();
        let sig = s.headers[SIGNATURE_HEADER].to_str().unwrap().to_owned();
        assert!(sig.starts_with("sha256="));
        let now = SystemTime::now();
        let tol = Duration::from_secs(300);
        verify(b"sig-key", &ts, &sig, &s.body, now, tol).unwrap();

        let mut tampered = s.body.to_vec();
        tampered[10] ^= 1;
        assert_eq!(
            verify(b"sig-key", &ts, &sig, &tampered, now, tol),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"other", &ts, &sig, &s.body, now, tol),
            Err(VerifyError::Mismatch)
        );
        let later = now + Duration::from_secs(3600);
        assert!(matches!(
            verify(b"sig-key", &ts, &sig, &s.body, later, tol),
            Err(VerifyError::Stale { .. })
        ));
        let earlier = now - Duration::from_secs(3600);
        assert!(matches!(
            verify(b"sig-key", &ts, &sig, &s.body, earlier, tol),
            Err(VerifyError::Future { .. })
        ));
        // A replay with a fresh timestamp but the old signature fails.
        let fresh = (ts.parse::<u64>().unwrap() + 1).to_string();
        assert_eq!(
            verify(b"sig-key", &fresh, &sig, &s.body, now, tol),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"sig-key", "x", &sig, &s.body, now, tol),
            Err(VerifyError::MalformedTimestamp)
        );
        assert_eq!(
            verify(b"sig-key", &ts, "md5=00", &s.body, now, tol),
            Err(VerifyError::MalformedSignature)
        );
    }

    #[tokio::test]
    async fn status_503_is_transient_with_retry_after() {
        let (addr, _log) = server(503, &[("retry-after", "2")], "busy").await;
        let e = target(addr, |_| {}).send(&record("k")).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        assert!(e.to_string().contains("503"), "{e}");
    }

    #[tokio::test]
    async fn status_429_is_transient() {
        let (addr, _log) = server(429, &[], "").await;
        let e = target(addr, |_| {}).send(&record("k")).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
    }

    #[tokio::test]
    async fn status_400_is_permanent_with_status_and_excerpt() {
        let (addr, _log) = server(400, &[], "bad document: missing field").await;
        let e = target(addr, |_| {}).send(&record("k")).await.unwrap_err();
        assert!(!e.is_transient(), "{e}");
        let m = e.to_string();
        assert!(m.contains("400"), "{m}");
        assert!(m.contains("bad document"), "{m}");
    }

    #[tokio::test]
    async fn batch_stops_at_first_failure() {
        let (addr, log) = server(400, &[], "").await;
        let t = target(addr, |_| {});
        assert!(t.send_batch(&[record("a"), record("b")]).await.is_err());
        assert_eq!(log.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn connection_refused_is_transient_and_inactive() {
        let t = target(free_addr(), |_| {});
        let e = t.send(&record("k")).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(!t.is_active().await.unwrap());
    }

    #[tokio::test]
    async fn any_http_answer_is_active() {
        let (addr, log) = server(404, &[], "").await;
        assert!(target(addr, |_| {}).is_active().await.unwrap());
        assert_eq!(log.lock().unwrap()[0].method, Method::HEAD);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn notifier_delivers_in_order_once_the_receiver_comes_up() {
        let addr = free_addr();
        let t = Arc::new(target(addr, |_| {}));
        let rules = RuleSet::new([NotificationRule::new(
            "r",
            EventName::ObjectCreatedPut.mask(),
            id(),
        )])
        .unwrap();
        let opts = TargetOptions {
            retry: RetryPolicy {
                initial: Duration::from_millis(5),
                max: Duration::from_millis(50),
                ..RetryPolicy::default()
            },
            ..TargetOptions::default()
        };
        let n = Notifier::builder()
            .rules(rules)
            .target(t, opts)
            .build()
            .unwrap();
        let keys: Vec<String> = (0..30).map(|i| format!("k{i:02}")).collect();
        for k in &keys {
            n.send(record(k)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let log = serve(listener, 200, &[], "");
        for _ in 0..1000 {
            if log.lock().unwrap().len() >= keys.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        n.shutdown(Duration::from_secs(5)).await;
        let got: Vec<String> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == Method::POST)
            .map(|s| body_json(s)["Key"].as_str().unwrap().to_owned())
            .collect();
        let want: Vec<String> = keys.iter().map(|k| format!("photos/{k}")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn client_keys_reach_the_client() {
        use crate::config::client::testing::{assert_client_keys, secs};
        let keys = serde_json::json!({"endpoint": "http://127.0.0.1:1/events"});
        assert_client_keys(keys, secs(10, 10), |v| {
            WebhookTarget::new(id(), serde_json::from_value(v).unwrap())
                .unwrap()
                .timeouts()
        });
    }

    /// A receiver on loopback that accepts connections and reads what is
    /// sent, but never answers.
    #[cfg(feature = "integration")]
    async fn silent_receiver() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = [0u8; 4096];
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        addr
    }

    #[cfg(feature = "integration")]
    #[tokio::test]
    async fn request_timeout_fails_a_delivery_the_receiver_never_answers() {
        let addr = silent_receiver().await;
        let config: WebhookConfig = serde_json::from_value(serde_json::json!({
            "endpoint": format!("http://{addr}/events"),
            "request_timeout": "300ms",
        }))
        .unwrap();
        let t = WebhookTarget::new(id(), config).unwrap();
        let e = t.send(&record("k")).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        let m = e.to_string();
        assert!(
            m.contains("no answer within `request_timeout` (300ms)"),
            "not the request timeout: {m}"
        );
        // The older `timeout` key still sets it.
        let config: WebhookConfig = serde_json::from_value(serde_json::json!({
            "endpoint": format!("http://{addr}/events"),
            "timeout": "200ms",
        }))
        .unwrap();
        let t = WebhookTarget::new(id(), config).unwrap();
        let m = t.send(&record("k")).await.unwrap_err().to_string();
        assert!(m.contains("`request_timeout` (200ms)"), "{m}");
    }

    #[test]
    fn debug_hides_secrets() {
        let mut c = WebhookConfig::new("http://example.invalid/");
        c.auth_token = Some("tok-SECRET".into());
        c.signature_key = Some("key-SECRET".into());
        let d = format!("{c:?}");
        assert!(!d.contains("SECRET"), "{d}");
        assert!(d.contains("***"), "{d}");
        let t = WebhookTarget::new(id(), c).unwrap();
        let d = format!("{t:?}");
        assert!(!d.contains("SECRET"), "{d}");
    }

    #[test]
    fn debug_hides_the_endpoint_path_query_and_userinfo() {
        // A token is often put in the URL itself (`?token=…`, `/hooks/<token>`,
        // `user:password@`): `Debug` of the config and of the target shows
        // the scheme, host and port only.
        let endpoint = "https://hook-user:PASSWORD1@hooks.example.invalid:8443/services/T0KEN2/x?sig=QUERY3#FRAG4";
        let c = WebhookConfig::new(endpoint);
        let t = WebhookTarget::new(id(), c.clone()).unwrap();
        for d in [format!("{c:?}"), format!("{t:?}"), format!("{c:#?}")] {
            for secret in ["PASSWORD1", "T0KEN2", "QUERY3", "FRAG4", "hook-user"] {
                assert!(!d.contains(secret), "{secret} in {d}");
            }
            assert!(d.contains("https://hooks.example.invalid:8443"), "{d}");
        }
    }

    #[tokio::test]
    async fn transport_errors_do_not_carry_the_endpoint_path() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(); // Closed again: connections are refused.
        let c = WebhookConfig::new(format!("http://127.0.0.1:{port}/hooks/T0KEN2?sig=QUERY3"));
        let t = WebhookTarget::new(id(), c).unwrap();
        let e = t.send_batch(&[record("a")]).await.unwrap_err().to_string();
        assert!(!e.contains("T0KEN2") && !e.contains("QUERY3"), "{e}");
    }

    #[test]
    fn parses_minio_keys_and_on_off() {
        let c: WebhookConfig = serde_json::from_str(
            r#"{"enable":"on","endpoint":"https://h/x","auth_token":"","client_cert":"",
                "client_key":"","queue_dir":"/tmp/q","queue_limit":"0","timeout":"500ms"}"#,
        )
        .unwrap();
        assert!(c.queue.enable);
        assert_eq!(c.auth_token, None);
        assert_eq!(c.client_cert, None);
        assert_eq!(c.queue.queue_limit, crate::config::DEFAULT_QUEUE_LIMIT);
        assert_eq!(c.timeouts().request, Duration::from_millis(500));
        assert_eq!(
            c.queue.target_options().queue_dir.as_deref(),
            Some("/tmp/q".as_ref())
        );
        c.validate("1").unwrap();
        let off: WebhookConfig =
            serde_json::from_str(r#"{"enable":false,"endpoint":"http://h","queue_limit":5}"#)
                .unwrap();
        assert!(!off.queue.enable);
        assert_eq!(off.queue.queue_limit, 5);
        let off: WebhookConfig = serde_json::from_str(r#"{"enable":"off"}"#).unwrap();
        assert!(!off.queue.enable);
        let e = serde_json::from_str::<WebhookConfig>(r#"{"endpoint":"http://h","nope":1}"#)
            .unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        assert!(serde_json::from_str::<WebhookConfig>(r#"{"enable":"maybe"}"#).is_err());
    }

    #[test]
    fn validation_names_target_and_key() {
        let msg = |c: WebhookConfig| c.validate("1").unwrap_err().to_string();
        assert_eq!(
            msg(WebhookConfig::default()),
            "webhook 1: `endpoint` is required"
        );
        assert!(msg(WebhookConfig::new("ftp://h/")).contains("`endpoint`"));
        assert!(msg(WebhookConfig::new("not a url")).contains("`endpoint`"));
        let mut c = WebhookConfig::new("https://h/");
        c.client_cert = Some("/c.pem".into());
        assert!(msg(c.clone()).contains("`client_key`"));
        c.client_cert = None;
        c.client_key = Some("/k.pem".into());
        assert!(msg(c).contains("`client_cert`"));
        let mut c = WebhookConfig::new("https://h/");
        c.timeout = Some(Duration::ZERO);
        assert!(msg(c).contains("`timeout`"));
        let mut c = WebhookConfig::new("https://h/");
        c.client.request_timeout = Some(Duration::ZERO);
        assert!(msg(c).contains("`request_timeout`"));
        // Missing certificate files are reported at build time, naming the key.
        let mut c = WebhookConfig::new("https://h/");
        c.client_cert = Some("/nonexistent/c.pem".into());
        c.client_key = Some("/nonexistent/k.pem".into());
        let e = WebhookTarget::new(id(), c).unwrap_err().to_string();
        assert!(e.starts_with("webhook 1: `client_cert`"), "{e}");
    }
}

#[cfg(test)]
mod conformance_tests;
#[cfg(test)]
mod durability_tests;
#[cfg(test)]
mod tls_tests;
