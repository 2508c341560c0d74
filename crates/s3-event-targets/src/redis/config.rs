//! The Redis target's configuration, under MinIO's key names.

use std::time::Duration;
use std::fmt;

use serde::Deserialize;

use crate::db_common::Format;
use crate::config::queue::target_config;
use crate::config::values::*;
use crate::config::{ClientConfig, QueueConfig, Timeouts};
use crate::{Error, Result};

/// Default `connect_timeout`: how long connecting may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Default `request_timeout`: how long one delivery attempt may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The port used when `address` has none.
pub const DEFAULT_PORT: u16 = 6379;

/// Configuration of one Redis target, as one entry of MinIO's
/// `{"redis": {"<id>": {…}}}` section (environment:
/// `MINIO_NOTIFY_REDIS_<KEY>[_<ID>]`).
///
/// Keys are MinIO's: `enable`, `format`, `address`, `password`, `user`, `key`,
/// `queue_dir`, `queue_limit`, `connect_timeout`, `request_timeout`. MinIO's
/// Redis target has no TLS option, and neither has this one. Unknown keys are
/// rejected.
///
/// `Debug` never prints `password`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct RedisConfig {
    /// `enable`, `queue_dir`, `queue_limit`.
    #[serde(skip)]
    pub queue: QueueConfig,

    /// `connect_timeout`, `request_timeout`: default
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    #[serde(skip)]
    pub client: ClientConfig,

    /// `namespace` (a hash `key` of `bucket/object` → event, default) or
    /// `access` (a list `key` of events, appended).
    #[serde(default)]
    pub format: Format,
    /// `host:port` of the server (port default 6379). Required.
    #[serde(default)]
    pub address: String,
    /// The password (`AUTH`), if any.
    #[serde(default, deserialize_with = "opt_string")]
    pub password: Option<String>,
    /// The ACL user name (`AUTH user password`), if any.
    #[serde(default, deserialize_with = "opt_string")]
    pub user: Option<String>,
    /// The hash (namespace) or list (access) events are written to.
    /// Required.
    #[serde(default)]
    pub key: String,
}

target_config!(RedisConfig);

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            queue: QueueConfig::default(),
            client: ClientConfig::default(),
            format: Format::Namespace,
            address: String::new(),
            password: None,
            user: None,
            key: String::new(),
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("queue", &self.queue)
            .field("client", &self.client)
            .field("format", &self.format)
            .field("address", &self.address)
            .field("password", &redact(&self.password))
            .field("user", &self.user)
            .field("key", &self.key)
            .finish()
    }
}

impl RedisConfig {
    /// The connect and request timeouts: the client block's keys, else
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    pub fn timeouts(&self) -> Timeouts {
        Timeouts::of(&self.client, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)
    }

    /// A configuration writing to `key` on the server at `address`
    /// (`host:port`), in `format`, every other key at its default.
    pub fn new(address: impl Into<String>, key: impl Into<String>, format: Format) -> Self {
        RedisConfig {
            address: address.into(),
            key: key.into(),
            format,
            ..RedisConfig::default()
        }
    }

    /// The host and port of `address`; errors name target `id` and the key.
    pub(crate) fn host_port(&self, id: &str) -> Result<(String, u16)> {
        let err = |message: String| Error::InvalidConfig {
            target: format!("redis {id}"),
            key: "address",
            message,
        };
        let a = self.address.trim();
        if a.is_empty() {
            return Err(err("`address` is required".into()));
        }
        let (host, port) = if let Some(rest) = a.strip_prefix('[') {
            // [v6]:port
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| err(format!("`address` {a:?} is not host:port")))?;
            (host, after.strip_prefix(':'))
        } else {
            match a.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, Some(p)),
                Some(_) => (a, None), // bare IPv6
                None => (a, None),
            }
        };
        if host.is_empty() {
            return Err(err(format!("`address` {a:?} has no host")));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| err(format!("`address` {a:?} has an invalid port")))?,
        };
        Ok((host.to_owned(), port))
    }

    /// Checks every key; messages name the target (`redis <id>`) and key.
    pub fn validate(&self, id: &str) -> Result<()> {
        self.client.validate(&format!("redis {id}"))?;
        self.host_port(id)?;
        let err = |key: &'static str, message: &str| Error::InvalidConfig {
            target: format!("redis {id}"),
            key,
            message: message.into(),
        };
        if self.key.is_empty() {
            return Err(err("key", "`key` is required"));
        }
        if self.user.is_some() && self.password.is_none() {
            return Err(err("password", "`password` is required when `user` is set"));
        }
        if self.queue.queue_dir.as_ref().is_some_and(|d| !d.is_absolute()) {
            return Err(err("queue_dir", "`queue_dir` must be an absolute path"));
        }
        Ok(())
    }

}
