//! The NSQ target's configuration, under MinIO's key names.


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

/// Configuration of one NSQ target, as one entry of MinIO's
/// `{"nsq": {"<id>": {…}}}` section.
///
/// Keys are MinIO's: `enable`, `nsqd_address`, `topic`, `tls`,
/// `tls_skip_verify`, `queue_dir`, `queue_limit`, `connect_timeout`,
/// `request_timeout`. TLS (negotiated through NSQ's `IDENTIFY`) is not
/// implemented: `tls` must be off. Empty strings mean "not set". Unknown keys
/// are rejected.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct NsqConfig {
    /// `enable`, `queue_dir`, `queue_limit`.
    #[serde(skip)]
    pub queue: QueueConfig,

    /// `connect_timeout`, `request_timeout`: default
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    #[serde(skip)]
    pub client: ClientConfig,

    /// The nsqd TCP address, `host:port` (nsqd's default port is 4150).
    /// Required.
    #[serde(default)]
    pub nsqd_address: String,

    /// The topic: 1 to 64 characters of `[.a-zA-Z0-9_-]`, optionally ending
    /// in `#ephemeral`. Required.
    #[serde(default)]
    pub topic: String,

    /// TLS; not implemented, must be off.
    #[serde(default, deserialize_with = "flag")]
    pub tls: bool,

    /// Accepted for compatibility; only meaningful with `tls`.
    #[serde(default, deserialize_with = "flag")]
    pub tls_skip_verify: bool,

}

target_config!(NsqConfig);

/// Whether `topic` is a valid NSQ topic name.
pub(crate) fn valid_topic(topic: &str) -> bool {
    let name = topic.strip_suffix("#ephemeral").unwrap_or(topic);
    !topic.is_empty()
        && topic.len() <= 64
        && !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl NsqConfig {
    /// The connect and request timeouts: the client block's keys, else
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    pub fn timeouts(&self) -> Timeouts {
        Timeouts::of(&self.client, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)
    }

    /// A configuration publishing on `topic` at `nsqd_address`, every
    /// other key at its default.
    pub fn new(nsqd_address: impl Into<String>, topic: impl Into<String>) -> Self {
        NsqConfig {
            nsqd_address: nsqd_address.into(),
            topic: topic.into(),
            ..NsqConfig::default()
        }
    }

    /// Checks every key; messages name the target (`nsq <id>`) and key.
    pub fn validate(&self, id: &str) -> Result<()> {
        self.client.validate(&format!("nsq {id}"))?;
        let err = |key: &'static str, message: &str| Error::InvalidConfig {
            target: format!("nsq {id}"),
            key,
            message: message.to_owned(),
        };
        if self.nsqd_address.trim().is_empty() {
            return Err(err("nsqd_address", "`nsqd_address` is required"));
        }
        if !valid_topic(&self.topic) {
            return Err(err(
                "topic",
                "`topic` must be 1 to 64 characters of [.a-zA-Z0-9_-], optionally ending in #ephemeral",
            ));
        }
        if self.tls {
            return Err(err("tls", "`tls` is not supported by this NSQ client"));
        }
        self.queue.validate(&format!("nsq {id}"))?;
        Ok(())
    }

}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NotifyConfig;

    #[test]
    fn topics() {
        assert!(valid_topic("bucketevents"));
        assert!(valid_topic("a.b_c-d#ephemeral"));
        assert!(!valid_topic(""));
        assert!(!valid_topic("#ephemeral"));
        assert!(!valid_topic("bad topic"));
        assert!(!valid_topic(&"x".repeat(65)));
    }

    #[test]
    fn json_and_env_build_nsq_targets() {
        let c = NotifyConfig::from_json(
            r#"{"nsq": {"1": {"enable": "on", "nsqd_address": "127.0.0.1:4150",
                "topic": "minio", "tls": "off", "tls_skip_verify": "off",
                "queue_dir": "", "queue_limit": "0"}}}"#,
            "r",
        )
        .unwrap();
        let t = c.build_targets().unwrap();
        assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:1:nsq");
        let vars = [
            ("MINIO_NOTIFY_NSQ_NSQD_ADDRESS", "127.0.0.1:4150"),
            ("MINIO_NOTIFY_NSQ_TOPIC", "minio"),
            ("MINIO_NOTIFY_NSQ_TLS_SKIP_VERIFY", "on"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let t = NotifyConfig::from_env_vars(vars, "r")
            .unwrap()
            .build_targets()
            .unwrap();
        assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:_:nsq");
    }

    #[test]
    fn tls_is_refused_naming_the_key() {
        let c = NsqConfig {
            tls: true,
            ..NsqConfig::new("127.0.0.1:4150", "t")
        };
        let err = c.validate("1").unwrap_err();
        assert!(
            matches!(err, Error::InvalidConfig { key: "tls", .. }),
            "{err}"
        );
    }
}
