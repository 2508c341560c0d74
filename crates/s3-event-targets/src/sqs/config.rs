//! The SQS target's configuration, in the key style of MinIO's targets.

use serde::Deserialize;

use crate::aws_common::AwsConnection;
use crate::config::queue::target_config;
use crate::config::{ClientConfig, QueueConfig};
use crate::{Error, Result};

/// Configuration of one SQS target, as one entry of a `{"sqs": {"<id>":
/// {…}}}` section (MinIO has no SQS target; the keys follow its other
/// targets).
///
/// Keys: `enable`, `queue_url`, `region`, `endpoint`, `access_key`,
/// `secret_key`, `session_token`, `queue_dir`, `queue_limit`,
/// `connect_timeout`, `request_timeout`. Unset `region`, `endpoint`,
/// `access_key`, `secret_key` and `session_token` come from the standard
/// AWS environment variables (see [`s3_event_core::aws`]). Empty strings
/// mean "not set". Unknown keys are rejected.
///
/// `Debug` never prints `secret_key` or `session_token`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct SqsConfig {
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

    /// The queue URL, e.g.
    /// `https://sqs.us-east-1.amazonaws.com/123456789012/events` (ending in
    /// `.fifo` for a FIFO queue). Required.
    #[serde(default)]
    pub queue_url: String,
}

target_config!(SqsConfig, connection: AwsConnection);

impl SqsConfig {
    /// A configuration sending to `queue_url`, every other key at its
    /// default (credentials and region from the environment).
    pub fn new(queue_url: impl Into<String>) -> Self {
        SqsConfig {
            queue_url: queue_url.into(),
            ..SqsConfig::default()
        }
    }

    /// Whether the queue is a FIFO queue (its URL ends in `.fifo`).
    pub fn is_fifo(&self) -> bool {
        self.queue_url.trim_end_matches('/').ends_with(".fifo")
    }

    /// Checks every key; messages name the target (`sqs <id>`) and key.
    /// Credentials are checked when the target is built (they may come
    /// from the environment).
    pub fn validate(&self, id: &str) -> Result<()> {
        let url = self.queue_url.trim();
        let err = |message: String| Error::InvalidConfig {
            target: format!("sqs {id}"),
            key: "queue_url",
            message,
        };
        if url.is_empty() {
            return Err(err("`queue_url` is required".into()));
        }
        if !url.starts_with("https://") && !url.starts_with("http://") {
            return Err(err(format!(
                "`queue_url` must be an http(s):// queue URL, not `{url}`"
            )));
        }
        self.client.validate(&format!("sqs {id}"))?;
        self.queue.validate(&format!("sqs {id}"))
    }
}
