//! The MQTT target's configuration, under MinIO's key names.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::config::queue::target_config;
use crate::config::values::*;
use crate::config::{ClientConfig, QueueConfig, Timeouts};
use crate::{Error, Result};

/// Default `connect_timeout`: how long connecting may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default `request_timeout`: how long one delivery attempt may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Default `keep_alive_interval`.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Configuration of one MQTT 3.1.1 target, as one entry of MinIO's
/// `{"mqtt": {"<id>": {…}}}` section.
///
/// Keys are MinIO's: `enable`, `broker`, `topic`, `qos`, `username`,
/// `password`, `keep_alive_interval`, `reconnect_interval`, `queue_dir`,
/// `queue_limit`, `connect_timeout`, `request_timeout`. TLS is chosen by the
/// broker's scheme (`ssl://`, `tls://`, `mqtts://`) and verified against the
/// system's roots, as MinIO does. Empty strings mean "not set". Unknown keys
/// are rejected.
///
/// `Debug` never prints `password`.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct MqttConfig {
    /// `enable`, `queue_dir`, `queue_limit`.
    #[serde(skip)]
    pub queue: QueueConfig,

    /// `connect_timeout`, `request_timeout`: default
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    #[serde(skip)]
    pub client: ClientConfig,

    /// `tcp://host:port` (also `mqtt://`), or `ssl://`/`tls://`/`mqtts://`
    /// for TLS; the port defaults to 1883 (8883 with TLS). Required.
    #[serde(default)]
    pub broker: String,

    /// The topic events are published on. Required.
    #[serde(default)]
    pub topic: String,

    /// 0, 1 or 2. With 1 or 2 an event counts once the broker acknowledged
    /// it (`PUBACK`, or `PUBCOMP` for 2); with 0 once written. Default 0.
    #[serde(default, deserialize_with = "opt_u64")]
    pub qos: Option<u64>,

    /// User name.
    #[serde(default, deserialize_with = "opt_string")]
    pub username: Option<String>,

    /// Password. Secret.
    #[serde(default, deserialize_with = "opt_string")]
    pub password: Option<String>,

    /// MQTT keep-alive: seconds or a duration such as `"10s"`; default 10 s.
    #[serde(default, deserialize_with = "opt_duration")]
    pub keep_alive_interval: Option<Duration>,

    /// Least time between two connection attempts after a failure (the
    /// notifier's retry backoff paces them otherwise). Unset: none.
    #[serde(default, deserialize_with = "opt_duration")]
    pub reconnect_interval: Option<Duration>,

}

target_config!(MqttConfig);

impl fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConfig")
            .field("queue", &self.queue)
            .field("client", &self.client)
            .field("broker", &self.broker)
            .field("topic", &self.topic)
            .field("qos", &self.qos)
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("keep_alive_interval", &self.keep_alive_interval)
            .field("reconnect_interval", &self.reconnect_interval)
            .finish()
    }
}

/// A parsed `broker`: TLS or not, host, port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Broker {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl MqttConfig {
    /// The connect and request timeouts: the client block's keys, else
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    pub fn timeouts(&self) -> Timeouts {
        Timeouts::of(&self.client, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)
    }

    /// A configuration publishing on `topic` at `broker` with `qos`, every
    /// other key at its default.
    pub fn new(broker: impl Into<String>, topic: impl Into<String>, qos: u8) -> Self {
        MqttConfig {
            broker: broker.into(),
            topic: topic.into(),
            qos: Some(qos.into()),
            ..MqttConfig::default()
        }
    }

    pub(crate) fn broker(&self) -> std::result::Result<Broker, String> {
        let b = self.broker.trim();
        let (tls, rest) = match b.split_once("://") {
            Some(("tcp" | "mqtt", r)) => (false, r),
            Some(("ssl" | "tls" | "mqtts", r)) => (true, r),
            Some((s, _)) => {
                return Err(format!(
                    "scheme `{s}://` is not supported (use tcp:// or ssl://)"
                ))
            }
            None => (false, b),
        };
        let rest = rest.trim_end_matches('/');
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => {
                let port = p.parse().map_err(|_| format!("bad port {p:?}"))?;
                (h, port)
            }
            _ => (rest, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("no host".into());
        }
        Ok(Broker {
            tls,
            host: host.to_owned(),
            port,
        })
    }

    /// Checks every key; messages name the target (`mqtt <id>`) and key.
    pub fn validate(&self, id: &str) -> Result<()> {
        self.client.validate(&format!("mqtt {id}"))?;
        let err = |key: &'static str, message: String| Error::InvalidConfig {
            target: format!("mqtt {id}"),
            key,
            message,
        };
        if self.broker.trim().is_empty() {
            return Err(err("broker", "`broker` is required".into()));
        }
        self.broker()
            .map_err(|e| err("broker", format!("`broker` is invalid: {e}")))?;
        if self.topic.is_empty() {
            return Err(err("topic", "`topic` is required".into()));
        }
        if self.topic.contains(['+', '#']) {
            return Err(err(
                "topic",
                "`topic` must not contain the wildcards `+` or `#`".into(),
            ));
        }
        if !matches!(self.qos, None | Some(0..=2)) {
            return Err(err("qos", "`qos` must be 0, 1 or 2".into()));
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(err(
                "username",
                "`username` is required when `password` is set".into(),
            ));
        }
        if self
            .keep_alive_interval
            .is_some_and(|k| !k.is_zero() && k < Duration::from_secs(1))
        {
            return Err(err(
                "keep_alive_interval",
                "`keep_alive_interval` must be at least 1s".into(),
            ));
        }
        self.queue.validate(&format!("mqtt {id}"))?;
        Ok(())
    }

}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NotifyConfig;

    #[test]
    fn debug_redacts_password() {
        let c = MqttConfig {
            username: Some("u".into()),
            password: Some("MQTT-SECRET".into()),
            ..MqttConfig::new("tcp://127.0.0.1:1883", "t", 1)
        };
        assert!(!format!("{c:?}").contains("MQTT-SECRET"));
    }

    #[test]
    fn brokers() {
        let b = |s: &str| MqttConfig::new(s, "t", 0).broker();
        assert_eq!(
            b("tcp://127.0.0.1:1883").unwrap(),
            Broker {
                tls: false,
                host: "127.0.0.1".into(),
                port: 1883
            }
        );
        assert_eq!(
            b("ssl://mq.example.com").unwrap(),
            Broker {
                tls: true,
                host: "mq.example.com".into(),
                port: 8883
            }
        );
        assert_eq!(b("localhost:1884").unwrap().port, 1884);
        assert!(b("ws://x:1").is_err());
    }

    #[test]
    fn json_and_env_build_mqtt_targets() {
        let c = NotifyConfig::from_json(
            r#"{"mqtt": {"1": {"enable": "on", "broker": "tcp://127.0.0.1:1883",
                "topic": "minio", "qos": "1", "username": "", "password": "",
                "reconnect_interval": "0s", "keep_alive_interval": "10s",
                "queue_dir": "", "queue_limit": "0"}}}"#,
            "r",
        )
        .unwrap();
        let t = c.build_targets().unwrap();
        assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:1:mqtt");
        let vars = [
            ("MINIO_NOTIFY_MQTT_BROKER_A", "tcp://127.0.0.1:1883"),
            ("MINIO_NOTIFY_MQTT_TOPIC_A", "minio"),
            ("MINIO_NOTIFY_MQTT_KEEP_ALIVE_INTERVAL_A", "30s"),
            ("MINIO_NOTIFY_MQTT_USERNAME_A", "u"),
            ("MINIO_NOTIFY_MQTT_PASSWORD_A", "PW-SECRET"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let t = NotifyConfig::from_env_vars(vars, "r")
            .unwrap()
            .build_targets()
            .unwrap();
        assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:A:mqtt");
        assert!(!format!("{:?}", t[0].0).contains("PW-SECRET"));
    }

    #[test]
    fn validate_names_key() {
        let err = MqttConfig::new("tcp://h:1", "t", 3)
            .validate("1")
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidConfig { key: "qos", .. }),
            "{err}"
        );
    }
}
