//! The NATS target (feature `nats`): publishes each event as MinIO's
//! `{"EventName", "Key", "Records": [record]}` envelope on one subject,
//! through core NATS or JetStream.
//!
//! - Core NATS: a batch is published, then one round trip is made (a
//!   request the server itself answers with "no responders"), so
//!   `send_batch` returns once the server has read every message. The
//!   client must be allowed to publish to `_INBOX.>`. Core NATS keeps nothing: subscribers that are not connected
//!   miss events.
//! - JetStream (`jetstream` on): every message of a batch is published at
//!   once and the stream's acknowledgements awaited afterwards, so a batch
//!   costs about one round trip; an event counts only once its stream
//!   acknowledged it. A stream must capture the subject.
//!
//! Errors: a refused authentication, a message larger than the server's
//! `max_payload` or a subject no stream captures are permanent, with the
//! server's message; a lost connection, a timeout or a missing
//! acknowledgement are transient. Once connected the client reconnects by
//! itself; the first connection is made on first use (building a target
//! contacts nothing).
//!
//! ```no_run
//! use s3_event_targets::core::TargetId;
//! use s3_event_targets::nats::{NatsConfig, NatsTarget};
//!
//! let config = NatsConfig::new("nats://127.0.0.1:4222", "bucketevents");
//! let id: TargetId = "arn:minio:sqs::1:nats".parse().unwrap();
//! let target = NatsTarget::new(id, config).unwrap();
//! ```

mod config;

use std::fmt;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{jetstream, Client, ConnectErrorKind, ConnectOptions};
use async_trait::async_trait;
use s3_event_core::{EventRecord, Notification, Target, TargetError, TargetId};

pub use config::{NatsConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};

use crate::config::Timeouts;
use crate::error::describe;
use crate::{Error, Result};

/// Largest batch handed to [`NatsTarget::send_batch`].
const MAX_BATCH: usize = 256;

/// How much longer than the client's own timeouts the outer bounds wait,
/// so that the client's error (which says more) comes first.
const MARGIN: Duration = Duration::from_secs(1);

/// How long `is_active` waits for the server's `PONG`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A NATS [`Target`]. See the [module docs](self).
pub struct NatsTarget {
    id: TargetId,
    config: NatsConfig,
    tls: Option<async_nats::rustls::ClientConfig>,
    /// Connecting; a batch's round trip or acknowledgements, a flush.
    timeouts: Timeouts,
    conn: tokio::sync::Mutex<Option<Conn>>,
}

#[derive(Clone)]
struct Conn {
    client: Client,
    js: Option<jetstream::Context>,
}

impl fmt::Debug for NatsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsTarget")
            .field("id", &self.id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}


/// Registered in `lib.rs`'s `targets!` list.
impl crate::registry::TargetType for NatsTarget {
    type Config = NatsConfig;

    const SECRET_KEYS: &'static [&'static str] = &["password", "token", "nkey_seed"];

    const LEGACY_KEYS: &'static [(&'static str, &'static str)] = &[("secure", "tls"), ("user", "username")];

    /// `"streaming": {"enable": false, ...}` (NATS Streaming off) is read
    /// and ignored; NATS Streaming on is refused.
    fn legacy_form(
        target: &str,
        written: &str,
        value: &serde_json::Value,
    ) -> crate::registry::LegacyForm {
        use serde_json::Value;
        let ("streaming", Value::Object(inner)) = (written, value) else {
            return None;
        };
        let on = inner.get("enable").is_some_and(|e| match e {
            Value::Bool(b) => *b,
            Value::String(s) => s3_event_core::config::parse_flag(s) == Some(true),
            _ => false,
        });
        if on {
            return Some(Err(Error::InvalidConfig {
                target: target.to_owned(),
                key: "streaming",
                message: "NATS Streaming reached its end of life and is not supported; \
                          use `jetstream`"
                    .into(),
            }));
        }
        Some(Ok(Vec::new()))
    }

    fn build(
        id: TargetId,
        config: NatsConfig,
    ) -> crate::Result<std::sync::Arc<dyn s3_event_core::Target>> {
        Ok(std::sync::Arc::new(NatsTarget::new(id, config)?))
    }
}

impl NatsTarget {
    /// Validates `config` (errors name the target and the key) and builds
    /// the target; TLS files are read now. Nothing is contacted.
    pub fn new(id: TargetId, config: NatsConfig) -> Result<NatsTarget> {
        config.validate(id.id())?;
        let tls = if config.wants_tls() {
            let opts = crate::tls::TlsOptions {
                ca: config.cert_authority.as_deref(),
                client: config
                    .client_cert
                    .as_deref()
                    .zip(config.client_key.as_deref()),
                skip_verify: config.tls_skip_verify,
                skip_hostname: false,
            };
            Some(
                crate::tls::client_config(&opts).map_err(|message| Error::InvalidConfig {
                    target: format!("nats {}", id.id()),
                    key: "cert_authority",
                    message,
                })?,
            )
        } else {
            None
        };
        Ok(NatsTarget {
            id,
            timeouts: config.timeouts(),
            config,
            tls,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// The configuration the target was built with.
    pub fn config(&self) -> &NatsConfig {
        &self.config
    }

    /// How long connecting, and a batch's round trip or acknowledgements,
    /// may take.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    fn options(&self) -> Result<ConnectOptions, TargetError> {
        let c = &self.config;
        let mut o = ConnectOptions::new()
            .name(format!("s3-event {}", self.id))
            .connection_timeout(self.timeouts.connect)
            .max_reconnects(None)
            // Never wait for the whole reconnect backoff: a restarted server
            // is found within a second.
            .reconnect_delay_callback(|attempt| {
                Duration::from_millis((attempt as u64).saturating_mul(100).min(1000))
            });
        if let (Some(u), Some(p)) = (&c.username, &c.password) {
            o = o.user_and_password(u.clone(), p.clone());
        }
        if let Some(t) = &c.token {
            o = o.token(t.clone());
        }
        if let Some(seed) = &c.nkey_seed {
            o = o.nkey(seed.clone());
        }
        if let Some(creds) = &c.user_credentials {
            let text = std::fs::read_to_string(creds).map_err(|e| {
                TargetError::permanent(
                    &self.id,
                    format!("cannot read `user_credentials` {}: {e}", creds.display()),
                )
            })?;
            o = ConnectOptions::with_credentials(&text)
                .map_err(|e| {
                    TargetError::permanent(&self.id, format!("bad `user_credentials`: {e}"))
                })?
                .name(format!("s3-event {}", self.id))
                .connection_timeout(self.timeouts.connect)
                .max_reconnects(None);
        }
        if let Some(ping) = c.ping_interval.filter(|p| !p.is_zero()) {
            o = o.ping_interval(ping);
        }
        if let Some(tls) = &self.tls {
            o = o.require_tls(true).tls_client_config(tls.clone());
            if c.tls_handshake_first {
                o = o.tls_first();
            }
        }
        Ok(o)
    }

    /// The connection, made now when there is none yet.
    async fn conn(&self) -> Result<Conn, TargetError> {
        let mut guard = self.conn.lock().await;
        if let Some(conn) = guard.as_ref() {
            return Ok(conn.clone());
        }
        let address = self.config.address.clone();
        let connect = self.options()?.connect(address.as_str());
        let limit = self.timeouts.connect;
        let client = match tokio::time::timeout(limit + MARGIN, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                let message = format!("connecting to {address}: {}", describe(&e));
                return Err(match e.kind() {
                    ConnectErrorKind::Authentication
                    | ConnectErrorKind::AuthorizationViolation
                    | ConnectErrorKind::ServerParse
                    | ConnectErrorKind::Tls => TargetError::permanent(&self.id, message),
                    _ => TargetError::transient(&self.id, message),
                });
            }
            Err(_) => {
                return Err(TargetError::transient(
                    &self.id,
                    format!("connecting to {address}: timed out after {limit:?}"),
                ))
            }
        };
        let js = self.config.jetstream.then(|| {
            let mut js = jetstream::new(client.clone());
            js.set_timeout(self.timeouts.request);
            js
        });
        let conn = Conn { client, js };
        *guard = Some(conn.clone());
        Ok(conn)
    }

    fn bodies(&self, events: &[EventRecord]) -> Result<Vec<Vec<u8>>, TargetError> {
        events
            .iter()
            .map(|r| {
                Notification::minio_envelope(vec![r.clone()])
                    .map(|n| n.to_vec())
                    .map_err(|e| TargetError::permanent(&self.id, e))
            })
            .collect()
    }

    async fn publish_core(&self, client: &Client, bodies: Vec<Vec<u8>>) -> Result<(), TargetError> {
        let subject = self.config.subject.as_str();
        for body in bodies {
            client
                .publish(subject.to_owned(), body.into())
                .await
                .map_err(|e| {
                    TargetError::transient(&self.id, format!("publish: {}", describe(&e)))
                })?;
        }
        round_trip(client, self.timeouts.request)
            .await
            .map_err(|e| TargetError::transient(&self.id, format!("after publishing: {e}")))
    }

    async fn publish_jetstream(
        &self,
        js: &jetstream::Context,
        bodies: Vec<Vec<u8>>,
    ) -> Result<(), TargetError> {
        use async_nats::jetstream::context::PublishErrorKind as K;
        let subject = self.config.subject.as_str();
        let classify = |e: async_nats::jetstream::context::PublishError| {
            let message = format!("JetStream publish: {}", describe(&e));
            match e.kind() {
                K::StreamNotFound
                | K::MaxPayloadExceeded
                | K::WrongLastMessageId
                | K::WrongLastSequence => TargetError::permanent(&self.id, message),
                _ => TargetError::transient(&self.id, message),
            }
        };
        // Send the whole batch first, then await the acknowledgements, so
        // the round trips overlap.
        let mut acks = Vec::with_capacity(bodies.len());
        for body in bodies {
            acks.push(
                js.publish(subject.to_owned(), body.into())
                    .await
                    .map_err(classify)?,
            );
        }
        for ack in acks {
            let limit = self.timeouts.request;
            match tokio::time::timeout(limit + MARGIN, ack).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(classify(e)),
                Err(_) => {
                    return Err(TargetError::transient(
                        &self.id,
                        format!("JetStream publish: no acknowledgement within {limit:?}"),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// One round trip to the server: a request to a fresh inbox subject, which
/// nobody serves, so the server itself answers "no responders". The server
/// handles a connection's messages in order, so the answer also means it
/// has read everything published before. (`Client::flush` only writes the
/// client's buffer to the socket.)
async fn round_trip(client: &Client, timeout: Duration) -> Result<(), String> {
    use async_nats::RequestErrorKind as K;
    let subject = client.new_inbox();
    match tokio::time::timeout(timeout, client.request(subject, Vec::new().into())).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == K::NoResponders => Ok(()),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(format!("no answer from the server within {timeout:?}")),
    }
}

#[async_trait]
impl Target for NatsTarget {
    fn id(&self) -> &TargetId {
        &self.id
    }

    /// Publishes every event in order on `subject`: core NATS then a round trip,
    /// or JetStream with every acknowledgement awaited. See the
    /// [module docs](self).
    async fn send_batch(&self, events: &[EventRecord]) -> Result<(), TargetError> {
        if events.is_empty() {
            return Ok(());
        }
        let bodies = self.bodies(events)?;
        let conn = self.conn().await?;
        if conn.client.connection_state() != State::Connected {
            // Publishing now would only fill the client's buffer.
            return Err(TargetError::transient(
                &self.id,
                format!("not connected to {} (reconnecting)", self.config.address),
            ));
        }
        // Check sizes first so a batch with a too large event sends nothing.
        let max = conn.client.server_info().max_payload;
        if max > 0 {
            if let Some(body) = bodies.iter().find(|b| b.len() > max) {
                return Err(TargetError::permanent(
                    &self.id,
                    format!(
                        "event of {} bytes exceeds the server's max_payload of {max} bytes",
                        body.len()
                    ),
                ));
            }
        }
        match &conn.js {
            Some(js) => self.publish_jetstream(js, bodies).await,
            None => self.publish_core(&conn.client, bodies).await,
        }
    }

    /// The client's connection state and one round trip (bounded by 2 s);
    /// before the first connection, one attempt to connect. An authentication
    /// failure is a permanent error.
    async fn is_active(&self) -> Result<bool, TargetError> {
        match self.conn().await {
            Ok(conn) => {
                if conn.client.connection_state() != State::Connected {
                    return Ok(false);
                }
                // The state lags a connection that just died: confirm with
                // one round trip.
                Ok(round_trip(&conn.client, PROBE_TIMEOUT).await.is_ok())
            }
            Err(e) if e.is_transient() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Flushes and drops the connection.
    async fn close(&self) -> Result<(), TargetError> {
        if let Some(conn) = self.conn.lock().await.take() {
            let _ = tokio::time::timeout(self.timeouts.request, conn.client.flush()).await;
        }
        Ok(())
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }
}

#[cfg(all(test, feature = "integration"))]
mod conformance_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_debug_redacts_secrets() {
        let c = NatsConfig {
            token: Some("tok-SECRET".into()),
            ..NatsConfig::new("127.0.0.1:4222", "s")
        };
        let t = NatsTarget::new("arn:minio:sqs::1:nats".parse().unwrap(), c).unwrap();
        let d = format!("{t:?}");
        assert!(!d.contains("tok-SECRET"), "{d}");
    }

    #[test]
    fn client_keys_reach_the_connection() {
        use crate::config::client::testing::{assert_client_keys, secs};
        let keys = serde_json::json!({"address": "127.0.0.1:4222", "subject": "s"});
        assert_client_keys(keys, secs(5, 5), |v| {
            NatsTarget::new("arn:minio:sqs::1:nats".parse().unwrap(), serde_json::from_value(v).unwrap())
                .unwrap()
                .timeouts()
        });
    }

    #[tokio::test]
    async fn refused_connection_is_transient() {
        // Port 1 on loopback: nothing listens there.
        let c = NatsConfig::new("127.0.0.1:1", "s");
        let t = NatsTarget::new("arn:minio:sqs::1:nats".parse().unwrap(), c).unwrap();
        let err = t.send(&crate::conformance::record("k")).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(!t.is_active().await.unwrap());
    }
}
