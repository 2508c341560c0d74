//! The AMQP target's configuration, under MinIO's key names.

use std::time::Duration;
use std::fmt;

use serde::Deserialize;

use crate::config::queue::target_config;
use crate::config::values::*;
use crate::config::{ClientConfig, QueueConfig, Timeouts};
use crate::{Error, Result};

/// Default `connect_timeout`: how long connecting may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default `request_timeout`: how long one delivery attempt may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Configuration of one AMQP 0-9-1 target, as one entry of MinIO's
/// `{"amqp": {"<id>": {…}}}` section.
///
/// Keys are MinIO's: `enable`, `url`, `exchange`, `exchange_type`,
/// `routing_key`, `mandatory`, `immediate`, `durable`, `internal`, `no_wait`,
/// `auto_deleted`, `delivery_mode`, `publisher_confirms`, `queue_dir`,
/// `queue_limit`, `connect_timeout`, `request_timeout`. (MinIO's environment
/// spells the confirms key `MINIO_NOTIFY_AMQP_PUBLISHING_CONFIRMS`; here every
/// variable is the key upper-cased: `…_PUBLISHER_CONFIRMS`.) MinIO's
/// `arguments` key is not supported. Empty strings mean "not set". Unknown keys
/// are rejected.
///
/// `Debug` never prints the password of `url`.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct AmqpConfig {
    /// `enable`, `queue_dir`, `queue_limit`.
    #[serde(skip)]
    pub queue: QueueConfig,

    /// `connect_timeout`, `request_timeout`: default
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    #[serde(skip)]
    pub client: ClientConfig,

    /// `amqp://user:password@host:port/vhost` (`amqps://` for TLS).
    /// Required. Secret (it holds the password).
    #[serde(default)]
    pub url: String,

    /// The exchange published to; empty is the default exchange (then
    /// `routing_key` names the queue, and nothing is declared).
    #[serde(default)]
    pub exchange: String,

    /// `direct`, `fanout`, `topic`, `headers` or a plugin's type; default
    /// `direct`. The exchange is declared with it on every connection.
    #[serde(default, deserialize_with = "opt_string")]
    pub exchange_type: Option<String>,

    /// The routing key of every message.
    #[serde(default)]
    pub routing_key: String,

    /// Ask the broker to return unroutable messages. With
    /// `publisher_confirms` a returned message fails permanently.
    #[serde(default, deserialize_with = "flag")]
    pub mandatory: bool,

    /// AMQP's `immediate` flag; RabbitMQ does not implement it, so only
    /// `off` is accepted.
    #[serde(default, deserialize_with = "flag")]
    pub immediate: bool,

    /// Declare the exchange durable.
    #[serde(default, deserialize_with = "flag")]
    pub durable: bool,

    /// Declare the exchange internal.
    #[serde(default, deserialize_with = "flag")]
    pub internal: bool,

    /// Declare the exchange without waiting for the broker's answer.
    #[serde(default, deserialize_with = "flag")]
    pub no_wait: bool,

    /// Declare the exchange auto-deleted.
    #[serde(default, deserialize_with = "flag")]
    pub auto_deleted: bool,

    /// `1` (transient) or `2` (persistent); `0`/unset leaves it unset.
    #[serde(default, deserialize_with = "opt_u64")]
    pub delivery_mode: Option<u64>,

    /// Use publisher confirms: an event counts as delivered once the broker
    /// confirmed it. Strongly recommended.
    #[serde(default, deserialize_with = "flag")]
    pub publisher_confirms: bool,

}

target_config!(AmqpConfig);

/// `url` with its password replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return if url.contains('@') {
            "***".into()
        } else {
            url.into()
        };
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => url.into(),
    }
}

impl fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("queue", &self.queue)
            .field("client", &self.client)
            .field("url", &redact_url(&self.url))
            .field("exchange", &self.exchange)
            .field("exchange_type", &self.exchange_type)
            .field("routing_key", &self.routing_key)
            .field("mandatory", &self.mandatory)
            .field("immediate", &self.immediate)
            .field("durable", &self.durable)
            .field("internal", &self.internal)
            .field("no_wait", &self.no_wait)
            .field("auto_deleted", &self.auto_deleted)
            .field("delivery_mode", &self.delivery_mode)
            .field("publisher_confirms", &self.publisher_confirms)
            .finish()
    }
}

impl AmqpConfig {
    /// The connect and request timeouts: the client block's keys, else
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    pub fn timeouts(&self) -> Timeouts {
        Timeouts::of(&self.client, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)
    }

    /// A configuration publishing to `exchange` with `routing_key` at
    /// `url`, with publisher confirms on, every other key at its default.
    pub fn new(
        url: impl Into<String>,
        exchange: impl Into<String>,
        routing_key: impl Into<String>,
    ) -> Self {
        AmqpConfig {
            url: url.into(),
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            publisher_confirms: true,
            ..AmqpConfig::default()
        }
    }

    /// Checks every key; messages name the target (`amqp <id>`) and key.
    pub fn validate(&self, id: &str) -> Result<()> {
        self.client.validate(&format!("amqp {id}"))?;
        let err = |key: &'static str, message: String| Error::InvalidConfig {
            target: format!("amqp {id}"),
            key,
            message,
        };
        if self.url.trim().is_empty() {
            return Err(err("url", "`url` is required".into()));
        }
        if let Err(e) = self.url.parse::<lapin::uri::AMQPUri>() {
            return Err(err(
                "url",
                format!("`url` is not an AMQP URI ({}): {e}", redact_url(&self.url)),
            ));
        }
        if self.immediate {
            return Err(err(
                "immediate",
                "`immediate` is not supported by RabbitMQ; leave it off".into(),
            ));
        }
        if !matches!(self.delivery_mode, None | Some(0..=2)) {
            return Err(err(
                "delivery_mode",
                "`delivery_mode` must be 1 (transient) or 2 (persistent)".into(),
            ));
        }
        if self.exchange.is_empty() && self.routing_key.is_empty() {
            return Err(err(
                "routing_key",
                "`routing_key` is required with the default exchange (empty `exchange`)".into(),
            ));
        }
        self.queue.validate(&format!("amqp {id}"))?;
        Ok(())
    }

}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NotifyConfig;

    #[test]
    fn debug_redacts_password() {
        let c = AmqpConfig::new("amqp://guest:pa55word@127.0.0.1:5672/%2f", "ex", "rk");
        let d = format!("{c:?}");
        assert!(!d.contains("pa55word"), "{d}");
        assert!(d.contains("amqp://guest:***@127.0.0.1:5672/%2f"), "{d}");
        assert_eq!(redact_url("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }

    #[test]
    fn json_and_env_build_amqp_targets() {
        let c = NotifyConfig::from_json(
            r#"{"amqp": {"1": {"enable": "on", "url": "amqp://guest:guest@127.0.0.1:5672",
                "exchange": "bucketevents", "exchange_type": "fanout", "routing_key": "",
                "mandatory": "off", "durable": "on", "no_wait": "off", "internal": "off",
                "auto_deleted": "off", "delivery_mode": "2", "publisher_confirms": "on",
                "queue_dir": "", "queue_limit": "9"}}}"#,
            "r",
        )
        .unwrap();
        let t = c.build_targets().unwrap();
        assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:1:amqp");
        assert_eq!(t[0].1.queue_limit, 9);
        assert!(!format!("{:?}", t[0].0).contains("guest@"));

        let vars = [
            ("MINIO_NOTIFY_AMQP_URL", "amqp://u:SECRETPW@127.0.0.1:5672"),
            ("MINIO_NOTIFY_AMQP_EXCHANGE", "ex"),
            ("MINIO_NOTIFY_AMQP_PUBLISHER_CONFIRMS", "on"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let t = NotifyConfig::from_env_vars(vars, "r")
            .unwrap()
            .build_targets()
            .unwrap();
        assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:_:amqp");
        assert!(!format!("{:?}", t[0].0).contains("SECRETPW"));
    }

    #[test]
    fn validate_names_key() {
        let mut c = AmqpConfig::new("amqp://127.0.0.1", "ex", "");
        c.delivery_mode = Some(3);
        let err = c.validate("1").unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidConfig {
                    key: "delivery_mode",
                    ..
                }
            ),
            "{err}"
        );
        let err = AmqpConfig::new("", "ex", "").validate("1").unwrap_err();
        assert_eq!(err.to_string(), "amqp 1: `url` is required");
    }
}
