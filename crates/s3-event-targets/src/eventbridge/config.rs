//! The EventBridge target's configuration, in the key style of MinIO's targets.

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

/// Configuration of one EventBridge target, as one entry of an
/// `{"eventbridge": {"<id>": {…}}}` section (MinIO has no EventBridge
/// target; the keys follow its other targets).
///
/// Keys: `enable`, `event_bus_name`, `source`, `region`, `endpoint`, `access_key`,
/// `secret_key`, `session_token`, `queue_dir`, `queue_limit`, `connect_timeout`, `request_timeout`. Unset
/// `region`, `endpoint`, `access_key`, `secret_key` and `session_token`
/// come from the standard AWS environment variables (see
/// [`s3_event_core::aws`]). Empty strings mean "not set". Unknown keys are
/// rejected.
///
/// `Debug` never prints `secret_key` or `session_token`.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct EventBridgeConfig {
    /// `enable`, `queue_dir`, `queue_limit`.
    #[serde(skip)]
    pub queue: QueueConfig,

    /// `connect_timeout`, `request_timeout`: default
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    #[serde(skip)]
    pub client: ClientConfig,

    /// The event bus, by name or ARN (default `default`, the account's
    /// default bus).
    #[serde(default, deserialize_with = "opt_string")]
    pub event_bus_name: Option<String>,

    /// The events' `source` (default `aws.s3`, what S3 itself sends, so that
    /// rules written for S3's own events match). AWS reserves sources
    /// starting with `aws.` for its services and may refuse them from
    /// `PutEvents` (`NotAuthorizedForSourceException`, a permanent error):
    /// on AWS itself, set a source of your own and match on it.
    #[serde(default, deserialize_with = "opt_string")]
    pub source: Option<String>,

    /// The region (default `AWS_REGION`, `AWS_DEFAULT_REGION`, else
    /// `us-east-1`).
    #[serde(default, deserialize_with = "opt_string")]
    pub region: Option<String>,

    /// An endpoint override for an EventBridge-compatible service, e.g.
    /// `http://127.0.0.1:15000` (default `AWS_ENDPOINT_URL_EVENTBRIDGE`,
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

target_config!(EventBridgeConfig);

impl fmt::Debug for EventBridgeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventBridgeConfig")
            .field("queue", &self.queue)
            .field("client", &self.client)
            .field("event_bus_name", &self.event_bus_name)
            .field("source", &self.source)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key)
            .field("secret_key", &redact(&self.secret_key))
            .field("session_token", &redact(&self.session_token))
            .finish()
    }
}

impl EventBridgeConfig {
    /// The connect and request timeouts: the client block's keys, else
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    pub fn timeouts(&self) -> Timeouts {
        Timeouts::of(&self.client, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)
    }

    /// A configuration putting events on the bus `event_bus_name`, every
    /// other key at its default (credentials and region from the
    /// environment).
    pub fn new(event_bus_name: impl Into<String>) -> Self {
        EventBridgeConfig {
            event_bus_name: Some(event_bus_name.into()),
            ..EventBridgeConfig::default()
        }
    }

    /// The bus name or ARN (`default` when unset).
    pub fn bus(&self) -> &str {
        self.event_bus_name.as_deref().map(str::trim).unwrap_or("default")
    }

    /// The events' source (`aws.s3` when unset).
    pub fn source(&self) -> &str {
        self.source.as_deref().map(str::trim).unwrap_or("aws.s3")
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

    /// Checks every key; messages name the target (`eventbridge <id>`) and
    /// key. Credentials are checked when the target is built (they may
    /// come from the environment).
    pub fn validate(&self, id: &str) -> Result<()> {
        self.client.validate(&format!("eventbridge {id}"))?;
        let bus = self.bus();
        let name = bus.rsplit("event-bus/").next().unwrap_or(bus);
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.len() <= 256
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
        };
        if !valid_name(name) || bus.len() > 1600 {
            return Err(Error::InvalidConfig {
                target: format!("eventbridge {id}"),
                key: "event_bus_name",
                message: format!(
                    "`event_bus_name` must be a bus name ([A-Za-z0-9._-/]) or ARN, not `{bus}`"
                ),
            });
        }
        let source = self.source();
        if source.is_empty() || source.len() > 256 {
            return Err(Error::InvalidConfig {
                target: format!("eventbridge {id}"),
                key: "source",
                message: format!("`source` must have 1 to 256 characters, not `{source}`"),
            });
        }
        self.queue.validate(&format!("eventbridge {id}"))?;
        Ok(())
    }
}
