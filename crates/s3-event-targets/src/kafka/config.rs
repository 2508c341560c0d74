//! The Kafka target's configuration, under MinIO's key names.

use std::fmt;
use std::path::PathBuf;
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

/// Default `batch_size`: events produced in one request per partition.
pub const DEFAULT_BATCH_SIZE: usize = 100;

/// Configuration of one Kafka target, as one entry of MinIO's
/// `{"kafka": {"<id>": {…}}}` section.
///
/// Keys are MinIO's: `enable`, `brokers`, `topic`, `queue_dir`, `queue_limit`,
/// `connect_timeout`, `request_timeout`, `tls`, `tls_skip_verify`,
/// `tls_client_auth`, `client_tls_cert`, `client_tls_key`, `sasl`,
/// `sasl_username`, `sasl_password`, `sasl_mechanism`, `version`, `batch_size`,
/// `batch_commit_timeout`, `compression_codec`, `compression_level`. Accepted
/// for compatibility but without effect: `version` (the client negotiates API
/// versions with the broker), `tls_client_auth` (a server setting in MinIO's Go
/// library), `compression_level` (the client uses each codec's default level)
/// and `batch_commit_timeout` (the notifier hands over whatever is queued at
/// once, so a batch never waits to fill). Empty strings mean "not set". Unknown
/// keys are rejected.
///
/// `Debug` never prints `sasl_password`.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct KafkaConfig {
    /// `enable`, `queue_dir`, `queue_limit`.
    #[serde(skip)]
    pub queue: QueueConfig,

    /// `connect_timeout`, `request_timeout`: default
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    #[serde(skip)]
    pub client: ClientConfig,

    /// Bootstrap brokers, `host:port` separated by commas. Required.
    #[serde(default)]
    pub brokers: String,

    /// The topic; it must exist. Required.
    #[serde(default)]
    pub topic: String,

    /// Connect with TLS.
    #[serde(default, deserialize_with = "flag")]
    pub tls: bool,

    /// Accept any broker certificate (testing only).
    #[serde(default, deserialize_with = "flag")]
    pub tls_skip_verify: bool,

    /// Accepted, without effect (see the type's docs).
    #[serde(default, deserialize_with = "opt_u64")]
    pub tls_client_auth: Option<u64>,

    /// PEM client certificate for mutual TLS; requires `client_tls_key`.
    #[serde(default, deserialize_with = "opt_path")]
    pub client_tls_cert: Option<PathBuf>,

    /// PEM private key of `client_tls_cert`.
    #[serde(default, deserialize_with = "opt_path")]
    pub client_tls_key: Option<PathBuf>,

    /// Authenticate with SASL.
    #[serde(default, deserialize_with = "flag")]
    pub sasl: bool,

    /// SASL user name.
    #[serde(default, deserialize_with = "opt_string")]
    pub sasl_username: Option<String>,

    /// SASL password. Secret.
    #[serde(default, deserialize_with = "opt_string")]
    pub sasl_password: Option<String>,

    /// `plain` (default), `sha256` or `sha512` (SCRAM), as MinIO.
    #[serde(default, deserialize_with = "opt_string")]
    pub sasl_mechanism: Option<String>,

    /// Accepted, without effect (see the type's docs).
    #[serde(default, deserialize_with = "opt_string")]
    pub version: Option<String>,

    /// Most events in one `send_batch` (one produce request per
    /// partition); default 100.
    #[serde(default, deserialize_with = "opt_u64")]
    pub batch_size: Option<u64>,

    /// Accepted, without effect (see the type's docs).
    #[serde(default, deserialize_with = "opt_duration")]
    pub batch_commit_timeout: Option<Duration>,

    /// `none` (default), `gzip`, `snappy`, `lz4` or `zstd`.
    #[serde(default, deserialize_with = "opt_string")]
    pub compression_codec: Option<String>,

    /// Accepted, without effect (see the type's docs).
    #[serde(default, deserialize_with = "opt_u64")]
    pub compression_level: Option<u64>,
}

target_config!(KafkaConfig);

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("queue", &self.queue)
            .field("client", &self.client)
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("tls", &self.tls)
            .field("tls_skip_verify", &self.tls_skip_verify)
            .field("tls_client_auth", &self.tls_client_auth)
            .field("client_tls_cert", &self.client_tls_cert)
            .field("client_tls_key", &self.client_tls_key)
            .field("sasl", &self.sasl)
            .field("sasl_username", &self.sasl_username)
            .field("sasl_password", &redact(&self.sasl_password))
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("version", &self.version)
            .field("batch_size", &self.batch_size)
            .field("batch_commit_timeout", &self.batch_commit_timeout)
            .field("compression_codec", &self.compression_codec)
            .field("compression_level", &self.compression_level)
            .finish()
    }
}

impl KafkaConfig {
    /// The connect and request timeouts: the client block's keys, else
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    pub fn timeouts(&self) -> Timeouts {
        Timeouts::of(&self.client, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)
    }

    /// A configuration producing to `topic` on `brokers`, every other key
    /// at its default.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            ..KafkaConfig::default()
        }
    }

    /// The bootstrap brokers, trimmed, empty entries dropped.
    pub(crate) fn broker_list(&self) -> Vec<String> {
        self.brokers
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(String::from)
            .collect()
    }

    /// Checks every key; messages name the target (`kafka <id>`) and key.
    pub fn validate(&self, id: &str) -> Result<()> {
        self.client.validate(&format!("kafka {id}"))?;
        let err = |key: &'static str, message: &str| Error::InvalidConfig {
            target: format!("kafka {id}"),
            key,
            message: message.to_owned(),
        };
        if self.broker_list().is_empty() {
            return Err(err("brokers", "`brokers` is required"));
        }
        if self.topic.trim().is_empty() {
            return Err(err("topic", "`topic` is required"));
        }
        if self.sasl && (self.sasl_username.is_none() || self.sasl_password.is_none()) {
            return Err(err(
                "sasl_username",
                "`sasl_username` and `sasl_password` are required with `sasl`",
            ));
        }
        if !matches!(
            self.sasl_mechanism
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref(),
            None | Some("plain" | "sha256" | "sha512")
        ) {
            return Err(err(
                "sasl_mechanism",
                "`sasl_mechanism` must be plain, sha256 or sha512",
            ));
        }
        if !matches!(
            self.compression_codec
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref(),
            None | Some("none" | "gzip" | "snappy" | "lz4" | "zstd")
        ) {
            return Err(err(
                "compression_codec",
                "`compression_codec` must be none, gzip, snappy, lz4 or zstd",
            ));
        }
        if self.client_tls_cert.is_some() != self.client_tls_key.is_some() {
            return Err(err(
                "client_tls_cert",
                "`client_tls_cert` and `client_tls_key` must be set together",
            ));
        }
        if self.batch_size == Some(0) {
            return Err(err("batch_size", "`batch_size` must be > 0"));
        }
        self.queue.validate(&format!("kafka {id}"))?;
        Ok(())
    }

}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NotifyConfig;

    #[test]
    fn debug_redacts_sasl_password() {
        let c = KafkaConfig {
            sasl: true,
            sasl_username: Some("u".into()),
            sasl_password: Some("KAFKA-SECRET".into()),
            ..KafkaConfig::new("127.0.0.1:9092", "t")
        };
        assert!(!format!("{c:?}").contains("KAFKA-SECRET"));
    }

    #[test]
    fn json_and_env_build_kafka_targets() {
        let c = NotifyConfig::from_json(
            r#"{"kafka": {"1": {"enable": "on", "brokers": "127.0.0.1:9092,127.0.0.1:9093",
                "topic": "bucketevents", "tls": "off", "tls_skip_verify": "off",
                "tls_client_auth": "0", "sasl": "off", "sasl_username": "",
                "sasl_password": "", "sasl_mechanism": "plain", "client_tls_cert": "",
                "client_tls_key": "", "version": "", "batch_size": "10",
                "batch_commit_timeout": "1s", "compression_codec": "snappy",
                "compression_level": "", "queue_dir": "", "queue_limit": "0"}}}"#,
            "r",
        )
        .unwrap();
        let t = c.build_targets().unwrap();
        assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:1:kafka");
        assert_eq!(t[0].0.max_batch(), 10);
        let vars = [
            ("MINIO_NOTIFY_KAFKA_BROKERS_K", "127.0.0.1:9092"),
            ("MINIO_NOTIFY_KAFKA_TOPIC_K", "t"),
            ("MINIO_NOTIFY_KAFKA_SASL_K", "on"),
            ("MINIO_NOTIFY_KAFKA_SASL_USERNAME_K", "u"),
            ("MINIO_NOTIFY_KAFKA_SASL_PASSWORD_K", "SASL-SECRET"),
            ("MINIO_NOTIFY_KAFKA_TLS_SKIP_VERIFY_K", "off"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let t = NotifyConfig::from_env_vars(vars, "r")
            .unwrap()
            .build_targets()
            .unwrap();
        assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:K:kafka");
        assert!(!format!("{:?}", t[0].0).contains("SASL-SECRET"));
    }

    #[test]
    fn validate_names_key() {
        let c = KafkaConfig {
            compression_codec: Some("brotli".into()),
            ..KafkaConfig::new("h:1", "t")
        };
        let err = c.validate("1").unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidConfig {
                    key: "compression_codec",
                    ..
                }
            ),
            "{err}"
        );
    }
}
