//! The AMQP 0-9-1 target (feature `amqp`, RabbitMQ): publishes each event
//! as MinIO's `{"EventName", "Key", "Records": [record]}` envelope to an
//! exchange, with MinIO's `minio-bucket` and `minio-event` headers and
//! content type `application/json`.
//!
//! - On every (re)connection the exchange is declared with the configured
//!   `exchange_type`, `durable`, `auto_deleted`, `internal` and `no_wait`
//!   (nothing is declared for the default exchange).
//! - With `publisher_confirms` (recommended) every message of a batch is
//!   published at once and the broker's confirms awaited afterwards, so a
//!   batch costs about one round trip; an event counts only once
//!   confirmed. With `mandatory` too, an unroutable message returned by the
//!   broker is a permanent error carrying the broker's reply (`NO_ROUTE`).
//!   Without confirms, `send_batch` returns once the messages are written
//!   to the socket, as MinIO does.
//!
//! Errors: refused credentials (`ACCESS_REFUSED`), a missing vhost or an
//! exchange declared with other properties (`PRECONDITION_FAILED`) are
//! permanent, with the broker's message; a lost connection, a timeout or a
//! negative confirm are transient. After any failure the connection is
//! dropped and made again on the next call (the first connection is made on
//! first use: building a target contacts nothing).
//!
//! ```no_run
//! use s3_event_targets::amqp::{AmqpConfig, AmqpTarget};
//!
//! let config = AmqpConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f", "bucketevents", "");
//! let target = AmqpTarget::new("arn:minio:sqs::1:amqp".parse().unwrap(), config).unwrap();
//! ```

mod config;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use s3_event_core::{EventRecord, Notification, Target, TargetError, TargetId};

pub use config::{AmqpConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};

use crate::config::Timeouts;
use crate::error::describe;
use crate::Result;

/// Largest batch handed to [`AmqpTarget::send_batch`].
const MAX_BATCH: usize = 256;

/// What a batch may take besides `request_timeout`, per event.
const PER_EVENT: Duration = Duration::from_millis(10);

/// How long `is_active` waits for the broker's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// An AMQP [`Target`]. See the [module docs](self).
pub struct AmqpTarget {
    id: TargetId,
    config: AmqpConfig,
    conn: tokio::sync::Mutex<Option<Conn>>,
}

struct Conn {
    connection: Connection,
    channel: Channel,
}

impl fmt::Debug for AmqpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpTarget")
            .field("id", &self.id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// AMQP reply codes that retrying cannot fix: `ACCESS_REFUSED`,
/// `NOT_FOUND`, `PRECONDITION_FAILED`, `NOT_ALLOWED`, `CONTENT_TOO_LARGE`,
/// `NOT_IMPLEMENTED`, `COMMAND_INVALID`.
const PERMANENT_CODES: &[u16] = &[403, 404, 406, 530, 311, 540, 503];


/// Registered in `lib.rs`'s `targets!` list.
impl crate::registry::TargetType for AmqpTarget {
    type Config = AmqpConfig;

    const URL_KEYS: &'static [&'static str] = &["url"];

    fn build(
        id: TargetId,
        config: AmqpConfig,
    ) -> crate::Result<std::sync::Arc<dyn s3_event_core::Target>> {
        Ok(std::sync::Arc::new(AmqpTarget::new(id, config)?))
    }
}

impl AmqpTarget {
    /// Validates `config` (errors name the target and the key) and builds
    /// the target. Nothing is contacted.
    pub fn new(id: TargetId, config: AmqpConfig) -> Result<AmqpTarget> {
        config.validate(id.id())?;
        Ok(AmqpTarget {
            id,
            config,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// The configuration the target was built with.
    pub fn config(&self) -> &AmqpConfig {
        &self.config
    }

    /// How long connecting may take, and publishing a batch with its
    /// confirms (plus 10 ms per event).
    pub fn timeouts(&self) -> Timeouts {
        self.config.timeouts()
    }

    /// A lapin error as a target error: permanent for the reply codes of
    /// [`PERMANENT_CODES`], transient otherwise. Never contains the URL.
    fn error(&self, what: &str, e: &lapin::Error) -> TargetError {
        let message = format!("{what}: {}", describe(e));
        match e.kind() {
            lapin::ErrorKind::ProtocolError(p) if PERMANENT_CODES.contains(&p.get_id()) => {
                TargetError::permanent(&self.id, message)
            }
            lapin::ErrorKind::InvalidConnectionState(_)
            | lapin::ErrorKind::InvalidChannelState(..)
                if message.contains("ACCESS_REFUSED") =>
            {
                TargetError::permanent(&self.id, message)
            }
            lapin::ErrorKind::AuthProviderError(_) => TargetError::permanent(&self.id, message),
            _ => TargetError::transient(&self.id, message),
        }
    }

    async fn connect(&self) -> Result<Conn, TargetError> {
        let c = &self.config;
        let connection = Connection::connect(
            &c.url,
            ConnectionProperties::default()
                .with_connection_name(format!("s3-event {}", self.id).into()),
        )
        .await
        .map_err(|e| self.error("connecting", &e))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| self.error("opening a channel", &e))?;
        if c.publisher_confirms {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| self.error("enabling publisher confirms", &e))?;
        }
        if !c.exchange.is_empty() {
            let kind = match c.exchange_type.as_deref().unwrap_or("direct") {
                "direct" => ExchangeKind::Direct,
                "fanout" => ExchangeKind::Fanout,
                "topic" => ExchangeKind::Topic,
                "headers" => ExchangeKind::Headers,
                other => ExchangeKind::Custom(other.to_owned()),
            };
            channel
                .exchange_declare(
                    c.exchange.as_str().into(),
                    kind,
                    ExchangeDeclareOptions {
                        passive: false,
                        durable: c.durable,
                        auto_delete: c.auto_deleted,
                        internal: c.internal,
                        nowait: c.no_wait,
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| self.error(&format!("declaring exchange `{}`", c.exchange), &e))?;
        }
        Ok(Conn {
            connection,
            channel,
        })
    }

    fn properties(&self, record: &EventRecord) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(
            "minio-bucket".into(),
            AMQPValue::LongString(record.bucket_name().unwrap_or_default().into()),
        );
        headers.insert(
            "minio-event".into(),
            AMQPValue::LongString(record.event_name.clone().unwrap_or_default().into()),
        );
        let mut p = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_headers(headers);
        if let Some(mode @ 1..=2) = self.config.delivery_mode {
            p = p.with_delivery_mode(mode as u8);
        }
        p
    }

    async fn publish(&self, conn: &Conn, events: &[EventRecord]) -> Result<(), TargetError> {
        let c = &self.config;
        let mut confirms = Vec::with_capacity(events.len());
        for record in events {
            let body = Notification::minio_envelope(vec![record.clone()])
                .map_err(|e| TargetError::permanent(&self.id, e))?
                .to_vec();
            let confirm = conn
                .channel
                .basic_publish(
                    c.exchange.as_str().into(),
                    c.routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: c.mandatory,
                        immediate: false,
                    },
                    &body,
                    self.properties(record),
                )
                .await
                .map_err(|e| self.error("publishing", &e))?;
            confirms.push(confirm);
        }
        if !c.publisher_confirms {
            return Ok(());
        }
        let mut returned = None;
        for confirm in confirms {
            match confirm
                .await
                .map_err(|e| self.error("awaiting a confirm", &e))?
            {
                Confirmation::Ack(None) | Confirmation::NotRequested => {}
                Confirmation::Ack(Some(r)) => {
                    returned.get_or_insert(format!(
                        "the broker returned an unroutable message ({} {}) from exchange `{}` \
                         with routing key `{}`",
                        r.reply_code, r.reply_text, c.exchange, c.routing_key
                    ));
                }
                Confirmation::Nack(_) => {
                    return Err(TargetError::transient(
                        &self.id,
                        "the broker did not confirm a message (nack)",
                    ))
                }
            }
        }
        match returned {
            Some(message) => Err(TargetError::permanent(&self.id, message)),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Target for AmqpTarget {
    fn id(&self) -> &TargetId {
        &self.id
    }

    /// Publishes every event in order (one message each); with publisher
    /// confirms, returns once every one is confirmed. See the
    /// [module docs](self).
    async fn send_batch(&self, events: &[EventRecord]) -> Result<(), TargetError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut guard = self.conn.lock().await;
        if guard
            .as_ref()
            .is_some_and(|c| !c.connection.status().connected() || !c.channel.status().connected())
        {
            *guard = None;
        }
        if guard.is_none() {
            let limit = self.timeouts().connect;
            let conn = tokio::time::timeout(limit, self.connect())
                .await
                .map_err(|_| {
                    TargetError::transient(
                        &self.id,
                        format!("connecting: timed out after {limit:?}"),
                    )
                })??;
            *guard = Some(conn);
        }
        let conn = guard.as_ref().expect("connected above");
        let budget = self.timeouts().request + PER_EVENT * events.len() as u32;
        let result = match tokio::time::timeout(budget, self.publish(conn, events)).await {
            Ok(r) => r,
            Err(_) => Err(TargetError::transient(
                &self.id,
                format!("publishing: no confirms within {budget:?}"),
            )),
        };
        if result.as_ref().is_err_and(|e| e.is_transient()) {
            // A fresh connection next time; the old one may be half dead.
            if let Some(old) = guard.take() {
                let _ = tokio::time::timeout(
                    Duration::from_millis(200),
                    old.connection.close(320, "s3-event reconnecting".into()),
                )
                .await;
            }
        }
        result
    }

    /// Whether the connection is open, checked with one `basic.qos` round
    /// trip (bounded by 2 s); with none, one attempt to connect (kept for
    /// the next send). Refused credentials are a permanent error.
    async fn is_active(&self) -> Result<bool, TargetError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            if c.connection.status().connected() && c.channel.status().connected() {
                // The status lags a connection that just died: confirm with
                // one harmless round trip (`basic.qos` with no limit).
                let probe = tokio::time::timeout(
                    PROBE_TIMEOUT,
                    c.channel
                        .basic_qos(0, lapin::options::BasicQosOptions::default()),
                )
                .await;
                if matches!(probe, Ok(Ok(()))) {
                    return Ok(true);
                }
            }
            *guard = None;
        }
        match tokio::time::timeout(self.timeouts().connect, self.connect()).await {
            Ok(Ok(conn)) => {
                *guard = Some(conn);
                Ok(true)
            }
            Ok(Err(e)) if !e.is_transient() => Err(e),
            _ => Ok(false),
        }
    }

    /// Closes the connection.
    async fn close(&self) -> Result<(), TargetError> {
        if let Some(c) = self.conn.lock().await.take() {
            let limit = self.timeouts().request;
            let _ = tokio::time::timeout(limit, c.connection.close(200, "bye".into())).await;
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
    fn target_debug_redacts_password() {
        let c = AmqpConfig::new("amqp://guest:TOPSECRET@127.0.0.1:5672", "ex", "");
        let t = AmqpTarget::new("arn:minio:sqs::1:amqp".parse().unwrap(), c).unwrap();
        assert!(!format!("{t:?}").contains("TOPSECRET"));
    }

    #[test]
    fn client_keys_reach_the_connection() {
        use crate::config::client::testing::{assert_client_keys, secs};
        let keys = serde_json::json!({"url": "amqp://127.0.0.1:5672", "exchange": "ex"});
        assert_client_keys(keys, secs(5, 5), |v| {
            AmqpTarget::new("arn:minio:sqs::1:amqp".parse().unwrap(), serde_json::from_value(v).unwrap())
                .unwrap()
                .timeouts()
        });
    }

    #[tokio::test]
    async fn refused_connection_is_transient() {
        let c = AmqpConfig::new("amqp://guest:guest@127.0.0.1:1", "ex", "");
        let t = AmqpTarget::new("arn:minio:sqs::1:amqp".parse().unwrap(), c).unwrap();
        let err = t.send(&crate::conformance::record("k")).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(!t.is_active().await.unwrap());
    }
}
