//! The SNS target's configuration, in the key style of MinIO's targets.

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

/// Configuration of one SNS target, as one entry of a `{"sns": {"<id>":
/// {…}}}` section (MinIO has no SNS target; the keys follow its other
/// targets).
///
/// Keys: `enable`, `topic_arn`, `region`, `endpoint`, `access_key`,
/// `secret_key`, `session_token`, `queue_dir`, `queue_limit`, `connect_timeout`, `request_timeout`. Unset
/// `region`, `endpoint`, `access_key`, `secret_key` and `session_token`
/// come from the standard AWS environment variables (see
/// [`s3_event_core::aws`]). Empty strings mean "not set". Unknown keys are
/// rejected.
///
/// `Debug` never prints `secret_key` or `session_token`.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct SnsConfig {
    /// `enable`, `queue_dir`, `queue_limit`.
    #[serde(skip)]
    pub queue: QueueConfig,

    /// `connect_timeout`, `request_timeout`: default
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    #[serde(skip)]
    pub client: ClientConfig,

    /// The topic ARN, e.g. `arn:aws:sns:us-east-1:123456789012:events`
    /// (ending in `.fifo` for a FIFO topic). Required.
    #[serde(default)]
    pub topic_arn: String,

    /// The region (default `AWS_REGION`, `AWS_DEFAULT_REGION`, else
    /// `us-east-1`).
    #[serde(default, deserialize_with = "opt_string")]
    pub region: Option<String>,

    /// An endpoint override for an SNS-compatible service, e.g.
    /// `http://127.0.0.1:15000` (default `AWS_ENDPOINT_URL_SNS`,
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

target_config!(SnsConfig);

impl fmt::Debug for SnsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnsConfig")
            .field("queue", &self.queue)
            .field("client", &self.client)
            .field("topic_arn", &self.topic_arn)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key)
            .field("secret_key", &redact(&self.secret_key))
            .field("session_token", &redact(&self.session_token))
            .finish()
    }
}

impl SnsConfig {
    /// The connect and request timeouts: the client block's keys, else
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    pub fn timeouts(&self) -> Timeouts {
        Timeouts::of(&self.client, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)
    }

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

    /// Checks every key; messages name the target (`sns <id>`) and key.
    /// Credentials are checked when the target is built (they may come
    /// from the environment).
    pub fn validate(&self, id: &str) -> Result<()> {
        self.client.validate(&format!("sns {id}"))?;
        let arn = self.topic_arn.trim();
        if arn.is_empty() {
            return Err(Error::InvalidConfig {
                target: format!("sns {id}"),
                key: "topic_arn",
                message: "`topic_arn` is required".into(),
            });
        }
        if !arn.starts_with("arn:") || arn.split(':').count() != 6 {
            return Err(Error::InvalidConfig {
                target: format!("sns {id}"),
                key: "topic_arn",
                message: format!(
                    "`topic_arn` must be a topic ARN (arn:aws:sns:<region>:<account>:<name>), not `{arn}`"
                ),
            });
        }
        self.queue.validate(&format!("sns {id}"))?;
        Ok(())
    }
}
