//! The EventBridge target's configuration, in the key style of MinIO's targets.

use serde::Deserialize;

use crate::aws_common::AwsConnection;
use crate::config::queue::target_config;
use crate::config::values::*;
use crate::config::{ClientConfig, QueueConfig};
use crate::{Error, Result};

/// Configuration of one EventBridge target, as one entry of an
/// `{"eventbridge": {"<id>": {…}}}` section (MinIO has no EventBridge
/// target; the keys follow its other targets).
///
/// Keys: `enable`, `event_bus_name`, `source`, `region`, `endpoint`,
/// `access_key`, `secret_key`, `session_token`, `queue_dir`,
/// `queue_limit`, `connect_timeout`, `request_timeout`. Unset `region`,
/// `endpoint`, `access_key`, `secret_key` and `session_token` come from
/// the standard AWS environment variables (see [`s3_event_core::aws`]).
/// Empty strings mean "not set". Unknown keys are rejected.
///
/// `Debug` never prints `secret_key` or `session_token`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct EventBridgeConfig {
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
}

target_config!(EventBridgeConfig, connection: AwsConnection);

impl EventBridgeConfig {
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

    /// Checks every key; messages name the target (`eventbridge <id>`) and
    /// key. Credentials are checked when the target is built (they may
    /// come from the environment).
    pub fn validate(&self, id: &str) -> Result<()> {
        let err = |key: &'static str, message: String| Error::InvalidConfig {
            target: format!("eventbridge {id}"),
            key,
            message,
        };
        let bus = self.bus();
        let name = bus.rsplit("event-bus/").next().unwrap_or(bus);
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.len() <= 256
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
        };
        if !valid_name(name) || bus.len() > 1600 {
            return Err(err(
                "event_bus_name",
                format!("`event_bus_name` must be a bus name ([A-Za-z0-9._-/]) or ARN, not `{bus}`"),
            ));
        }
        let source = self.source();
        if source.is_empty() || source.len() > 256 {
            return Err(err(
                "source",
                format!("`source` must have 1 to 256 characters, not `{source}`"),
            ));
        }
        self.client.validate(&format!("eventbridge {id}"))?;
        self.queue.validate(&format!("eventbridge {id}"))
    }
}
