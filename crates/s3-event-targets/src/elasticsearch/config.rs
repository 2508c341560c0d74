//! The Elasticsearch target's configuration, under MinIO's key names.

use std::time::Duration;
use std::fmt;

use serde::Deserialize;

use crate::db_common::Format;
use crate::config::queue::target_config;
use crate::config::values::*;
use crate::config::{ClientConfig, QueueConfig, Timeouts};
use crate::{Error, Result};

/// Default `connect_timeout`: how long connecting may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default `request_timeout`: how long one delivery attempt may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Configuration of one Elasticsearch (or OpenSearch) target, as one entry
/// of MinIO's `{"elasticsearch": {"<id>": {…}}}` section (environment:
/// `MINIO_NOTIFY_ELASTICSEARCH_<KEY>[_<ID>]`).
///
/// Keys are MinIO's: `enable`, `format`, `url`, `index`, `username`,
/// `password`, `queue_dir`, `queue_limit`, `connect_timeout`,
/// `request_timeout`. `https` URLs use rustls with the web PKI roots. Unknown
/// keys are rejected.
///
/// `Debug` never prints `password` nor a password inside `url`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// `enable`, `queue_dir`, `queue_limit`.
    #[serde(skip)]
    pub queue: QueueConfig,

    /// `connect_timeout`, `request_timeout`: default
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    #[serde(skip)]
    pub client: ClientConfig,

    /// `namespace` (one document per object, default) or `access` (one
    /// document per event).
    #[serde(default)]
    pub format: Format,
    /// The cluster's URL, `http(s)://host:port`. Required.
    #[serde(default)]
    pub url: String,
    /// The index, created when missing. Required.
    #[serde(default)]
    pub index: String,
    /// Basic-auth user; requires `password`.
    #[serde(default, deserialize_with = "opt_string")]
    pub username: Option<String>,
    /// Basic-auth password; requires `username`.
    #[serde(default, deserialize_with = "opt_string")]
    pub password: Option<String>,
}

target_config!(ElasticsearchConfig);

impl Default for ElasticsearchConfig {
    fn default() -> Self {
        ElasticsearchConfig {
            queue: QueueConfig::default(),
            client: ClientConfig::default(),
            format: Format::Namespace,
            url: String::new(),
            index: String::new(),
            username: None,
            password: None,
        }
    }
}

/// `url` with the password of its user info replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) if url.contains('@') => "<unparsable URL with user info>".into(),
        Err(_) => url.to_owned(),
    }
}

impl fmt::Debug for ElasticsearchConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElasticsearchConfig")
            .field("queue", &self.queue)
            .field("client", &self.client)
            .field("format", &self.format)
            .field("url", &redact_url(&self.url))
            .field("index", &self.index)
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .finish()
    }
}

/// Whether `name` is a valid index name: lower case, not starting with
/// `-`, `_` or `+`, none of `\ / * ? " < > | , #` or spaces, not `.`/`..`,
/// at most 255 bytes.
pub(crate) fn valid_index(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.starts_with(['-', '_', '+'])
        && !name
            .chars()
            .any(|c| c.is_uppercase() || c.is_whitespace() || "\\/*?\"<>|,#:".contains(c))
}

impl ElasticsearchConfig {
    /// The connect and request timeouts: the client block's keys, else
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    pub fn timeouts(&self) -> Timeouts {
        Timeouts::of(&self.client, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)
    }

    /// A configuration writing to `index` at `url`, in `format`, every other
    /// key at its default.
    pub fn new(url: impl Into<String>, index: impl Into<String>, format: Format) -> Self {
        ElasticsearchConfig {
            url: url.into(),
            index: index.into(),
            format,
            ..ElasticsearchConfig::default()
        }
    }

    /// Checks every key; messages name the target (`elasticsearch <id>`)
    /// and the key.
    pub fn validate(&self, id: &str) -> Result<()> {
        self.client.validate(&format!("elasticsearch {id}"))?;
        let err = |key: &'static str, message: String| Error::InvalidConfig {
            target: format!("elasticsearch {id}"),
            key,
            message,
        };
        if self.url.trim().is_empty() {
            return Err(err("url", "`url` is required".into()));
        }
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| err("url", format!("`url` is not a valid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(err(
                "url",
                "`url` must be an http or https URL with a host".into(),
            ));
        }
        if self.index.is_empty() {
            return Err(err("index", "`index` is required".into()));
        }
        if !valid_index(&self.index) {
            return Err(err(
                "index",
                "`index` must be lower case without spaces or any of \\ / * ? \" < > | , # :"
                    .into(),
            ));
        }
        match (&self.username, &self.password) {
            (Some(_), None) => {
                return Err(err(
                    "password",
                    "`password` is required when `username` is set".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(err(
                    "username",
                    "`username` is required when `password` is set".into(),
                ))
            }
            _ => {}
        }
        if self.queue.queue_dir.as_ref().is_some_and(|d| !d.is_absolute()) {
            return Err(err(
                "queue_dir",
                "`queue_dir` must be an absolute path".into(),
            ));
        }
        Ok(())
    }

}
