//! The SQS target's configuration, in the key style of MinIO's targets.

use std::time::Duration;
use std::fmt;

use s3_event_core::aws::AwsConfig;
use serde::Deserialize;

use crate::config::queue::target_config;
use crate::config::values::*;
use crate::config::{ClientConfig, QueueConfig, Timeouts};
use crate::{Error, Result};

/// Default `connect_timeout`: how long connecting may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Default `request_timeout`: how long one delivery attempt may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Configuration of one SQS target, as one entry of a `{"sqs": {"<id>":
/// {…}}}` section (MinIO has no SQS target; the keys follow its other
/// targets).
///
/// Keys: `enable`, `queue_url`, `region`, `endpoint`, `access_key`,
/// `secret_key`, `session_token`, `queue_dir`, `queue_limit`, `connect_timeout`, `request_timeout`. Unset
/// `region`, `endpoint`, `access_key`, `secret_key` and `session_token`
/// come from the standard AWS environment variables (see
/// [`s3_event_core::aws`]). Empty strings mean "not set". Unknown keys are
/// rejected.
///
/// `Debug` never prints `secret_key` or `session_token`.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct SqsConfig {
    /// `enable`, `queue_dir`, `queue_limit`.
    #[serde(skip)]
    pub queue: QueueConfig,

    /// `connect_timeout`, `request_timeout`: default
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    #[serde(skip)]
    pub client: ClientConfig,

    /// The queue URL, e.g.
    /// `https://sqs.us-east-1.amazonaws.com/123456789012/events` (ending in
    /// `.fifo` for a FIFO queue). Required.
    #[serde(default)]
    pub queue_url: String,

    /// The region (default `AWS_REGION`, `AWS_DEFAULT_REGION`, else
    /// `us-east-1`).
    #[serde(default, deserialize_with = "opt_string")]
    pub region: Option<String>,

    /// An endpoint override for an SQS-compatible service, e.g.
    /// `http://127.0.0.1:15000` (default `AWS_ENDPOINT_URL_SQS`,
    /// `AWS_ENDPOINT_URL`, else AWS).
    #[serde(default, deserialize_with = "opt_string")]
    pub endpoint: Option<String>,

    /// The access key id (default `AWS_ACCESS_KEY_ID`).
    #[serde(default, deserialize_with = "opt_string")]
    pub access_key: Option<String>,

    /// The secret access key (default `AWS_SECRET_ACCESS_KEY`). Secret.
    #[serde(default, deserialize_with = "opt_string")]
    pub secret_key: Option<String>,

    /// A session token (default `AWS_SESSION_TOKEN`). Secret.
    #[serde(default, deserialize_with = "opt_string")]
    pub session_token: Option<String>,
}

target_config!(SqsConfig);

impl fmt::Debug for SqsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqsConfig")
            .field("queue", &self.queue)
            .field("client", &self.client)
            .field("queue_url", &self.queue_url)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key)
            .field("secret_key", &redact(&self.secret_key))
            .field("session_token", &redact(&self.session_token))
            .finish()
    }
}

impl SqsConfig {
    /// The connect and request timeouts: the client block's keys, else
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    pub fn timeouts(&self) -> Timeouts {
        Timeouts::of(&self.client, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)
    }

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

    /// The connection keys as an [`AwsConfig`].
    pub fn aws(&self) -> AwsConfig {
        crate::aws_common::aws_config(
            &self.region,
            &self.endpoint,
            &self.access_key,
            &self.secret_key,
            &self.session_token,
        )
    }

    /// Checks every key; messages name the target (`sqs <id>`) and key.
    /// Credentials are checked when the target is built (they may come
    /// from the environment).
    pub fn validate(&self, id: &str) -> Result<()> {
        self.client.validate(&format!("sqs {id}"))?;
        let url = self.queue_url.trim();
        if url.is_empty() {
            return Err(Error::InvalidConfig {
                target: format!("sqs {id}"),
                key: "queue_url",
                message: "`queue_url` is required".into(),
            });
        }
        if !url.starts_with("https://") && !url.starts_with("http://") {
            return Err(Error::InvalidConfig {
                target: format!("sqs {id}"),
                key: "queue_url",
                message: format!("`queue_url` must be an http(s):// queue URL, not `{url}`"),
            });
        }
        self.queue.validate(&format!("sqs {id}"))?;
        Ok(())
    }
}
