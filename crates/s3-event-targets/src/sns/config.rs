//! The SNS target's configuration, in the key style of MinIO's targets.

use serde::Deserialize;

use crate::aws_common::AwsConnection;
use crate::config::queue::target_config;
use crate::config::{ClientConfig, QueueConfig};
use crate::{Error, Result};

/// Configuration of one SNS target, as one entry of a `{"sns": {"<id>":
/// {…}}}` section (MinIO has no SNS target; the keys follow its other
/// targets).
///
/// Keys: `enable`, `topic_arn`, `region`, `endpoint`, `access_key`,
/// `secret_key`, `session_token`, `queue_dir`, `queue_limit`,
/// `connect_timeout`, `request_timeout`. Unset `region`, `endpoint`,
/// `access_key`, `secret_key` and `session_token` come from the standard
/// AWS environment variables (see [`s3_event_core::aws`]). Empty strings
/// mean "not set". Unknown keys are rejected.
///
/// `Debug` never prints `secret_key` or `session_token`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct SnsConfig {
    /// `enable`, `queue_dir`, `queue_limit`.
    #[serde(skip)]
    pub queue: QueueConfig,

    /// `connect_timeout`, `request_timeout`: default
    /// [`DEFAULT_CONNECT_TIMEOUT`](super::DEFAULT_CONNECT_TIMEOUT) and
    /// [`DEFAULT_REQUEST_TIMEOUT`](super::DEFAULT_REQUEST_TIMEOUT).
    #[serde(skip)]
    pub client: ClientConfig,

    /// `region`, `endpoint`, `access_key`, `secret_key`, `session_token`.
    #[serde(skip)]
    pub connection: AwsConnection,

    /// The topic ARN, e.g. `arn:aws:sns:us-east-1:123456789012:events`
    /// (ending in `.fifo` for a FIFO topic). Required.
    #[serde(default)]
    pub topic_arn: String,
}

target_config!(SnsConfig, connection: AwsConnection);

impl SnsConfig {
    /// A configuration publishing to `topic_arn`, every other key at its
    /// default (credentials and region from the environment).
    pub fn new(topic_arn: impl Into<String>) -> Self {
        SnsConfig {
            topic_arn: topic_arn.into(),
            ..SnsConfig::default()
        }
    }

    /// Whether the topic is a FIFO topic (its ARN ends in `.fifo`).
    pub fn is_fifo(&self) -> bool {
        self.topic_arn.trim().ends_with(".fifo")
    }

    /// Checks every key; messages name the target (`sns <id>`) and key.
    /// Credentials are checked when the target is built (they may come
    /// from the environment).
    pub fn validate(&self, id: &str) -> Result<()> {
        let arn = self.topic_arn.trim();
        let err = |message: String| Error::InvalidConfig {
            target: format!("sns {id}"),
            key: "topic_arn",
            message,
        };
        if arn.is_empty() {
            return Err(err("`topic_arn` is required".into()));
        }
        if !arn.starts_with("arn:") || arn.split(':').count() != 6 {
            return Err(err(format!(
                "`topic_arn` must be a topic ARN (arn:aws:sns:<region>:<account>:<name>), not `{arn}`"
            )));
        }
        self.client.validate(&format!("sns {id}"))?;
        self.queue.validate(&format!("sns {id}"))
    }
}
