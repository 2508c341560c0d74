//! The webhook target's configuration, under MinIO's key names.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::notifier::TargetOptions;
use crate::{Error, Result};

/// Default `queue_limit`, as MinIO.
pub const DEFAULT_QUEUE_LIMIT: usize = 100_000;

/// Default request `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Configuration of one webhook target, as one entry of MinIO's
/// `{"webhook": {"<id>": {…}}}` section.
///
/// Keys are MinIO's (`enable`, `endpoint`, `auth_token`, `client_cert`,
/// `client_key`, `queue_dir`, `queue_limit`) plus this crate's
/// `signature_key` and `timeout`. MinIO writes unset options as empty
/// strings; an empty string means "not set" for every optional key. Unknown
/// keys are rejected.
///
/// `Debug` never prints `auth_token` or `signature_key`, nor the parts of
/// `endpoint` that can carry a token (user info, path, query, fragment):
/// see [`redact_endpoint`].
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Whether the target is enabled: a JSON bool or MinIO's `"on"`/`"off"`
    /// (also `"true"`/`"false"`). Default `true`: a configured target is
    /// used unless switched off, so notifications never go silent because
    /// of a default.
    #[serde(
        rename = "enable",
        default = "default_enable",
        deserialize_with = "de_enable"
    )]
    pub enable: bool,

    /// The URL events are POSTed to; `http` or `https`. Required.
    #[serde(rename = "endpoint", default)]
    pub endpoint: String,

    /// Sent as `Authorization: Bearer <token>` when it is a bare token, as
    /// is when it already holds a scheme (contains a space, e.g.
    /// `"Basic eHl6"`).
    #[serde(rename = "auth_token", default, deserialize_with = "de_opt_string")]
    pub auth_token: Option<String>,

    /// PEM client certificate for mutual TLS; requires `client_key`.
    #[serde(rename = "client_cert", default, deserialize_with = "de_opt_path")]
    pub client_cert: Option<PathBuf>,

    /// PEM private key of `client_cert`; requires `client_cert`.
    #[serde(rename = "client_key", default, deserialize_with = "de_opt_path")]
    pub client_key: Option<PathBuf>,

    /// PEM bundle of certificate authorities trusted for the endpoint, in
    /// addition to the built-in web roots (this crate's key; MinIO uses the
    /// system store). For endpoints with a private CA.
    #[serde(rename = "ca_cert", default, deserialize_with = "de_opt_path")]
    pub ca_cert: Option<PathBuf>,

    /// Directory of the durable queue; unset keeps the queue in memory.
    #[serde(rename = "queue_dir", default, deserialize_with = "de_opt_path")]
    pub queue_dir: Option<PathBuf>,

    /// Most events queued for the target: a number or a numeric string;
    /// `0` means the default, 100000 (as MinIO).
    #[serde(
        rename = "queue_limit",
        default = "default_queue_limit",
        deserialize_with = "de_queue_limit"
    )]
    pub queue_limit: usize,

    /// HMAC-SHA256 key: when set, every request carries
    /// `X-S3Event-Timestamp` and `X-S3Event-Signature` (see
    /// [`verify`](super::verify)).
    #[serde(rename = "signature_key", default, deserialize_with = "de_opt_string")]
    pub signature_key: Option<String>,

    /// Per-request timeout: seconds as a number, or a string such as
    /// `"10s"`, `"500ms"`, `"10"`. Default 10 s.
    #[serde(
        rename = "timeout",
        default = "default_timeout",
        deserialize_with = "de_timeout"
    )]
    pub timeout: Duration,
}

fn default_enable() -> bool {
    true
}

fn default_queue_limit() -> usize {
    DEFAULT_QUEUE_LIMIT
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            enable: default_enable(),
            endpoint: String::new(),
            auth_token: None,
            client_cert: None,
            client_key: None,
            ca_cert: None,
            queue_dir: None,
            queue_limit: DEFAULT_QUEUE_LIMIT,
            signature_key: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "***");
        f.debug_struct("WebhookConfig")
            .field("enable", &self.enable)
            .field("endpoint", &redact_endpoint(&self.endpoint))
            .field("auth_token", &secret(&self.auth_token))
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("ca_cert", &self.ca_cert)
            .field("queue_dir", &self.queue_dir)
            .field("queue_limit", &self.queue_limit)
            .field("signature_key", &secret(&self.signature_key))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `endpoint` as it may be logged: scheme, host and port only, the rest
/// (user info, path, query, fragment, where webhook URLs often carry a
/// token) replaced by `/***`. A URL that does not parse is `***`.
///
/// ```
/// use s3_event_targets::webhook::redact_endpoint;
/// assert_eq!(redact_endpoint("https://h.example:8443/hooks/T0KEN?x=1"), "https://h.example:8443/***");
/// assert_eq!(redact_endpoint("http://h.example/"), "http://h.example/");
/// ```
pub fn redact_endpoint(endpoint: &str) -> String {
    let Ok(url) = reqwest::Url::parse(endpoint) else {
        return if endpoint.is_empty() {
            String::new()
        } else {
            "***".into()
        };
    };
    let mut out = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    let bare = url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    out.push_str(if bare { "/" } else { "/***" });
    out
}

impl WebhookConfig {
    /// A configuration posting to `endpoint`, every other key at its default.
    pub fn new(endpoint: impl Into<String>) -> Self {
        WebhookConfig {
            endpoint: endpoint.into(),
            ..WebhookConfig::default()
        }
    }

    /// Checks every key. `id` is the target's id in the configuration (the
    /// `"1"` of `{"webhook": {"1": …}}`); messages read e.g.
    /// "webhook 1: `endpoint` is required".
    pub fn validate(&self, id: &str) -> Result<()> {
        let err = |key: &'static str, message: String| Error::InvalidConfig {
            target: format!("webhook {id}"),
            key,
            message,
        };
        if self.endpoint.trim().is_empty() {
            return Err(err("endpoint", "`endpoint` is required".into()));
        }
        let url = reqwest::Url::parse(&self.endpoint)
            .map_err(|e| err("endpoint", format!("`endpoint` is not a valid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(err(
                "endpoint",
                "`endpoint` must be an http or https URL with a host".into(),
            ));
        }
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => {
                return Err(err(
                    "client_key",
                    "`client_key` is required when `client_cert` is set".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(err(
                    "client_cert",
                    "`client_cert` is required when `client_key` is set".into(),
                ))
            }
            _ => {}
        }
        if self
            .auth_token
            .as_deref()
            .is_some_and(|t| t.trim() != t || reqwest::header::HeaderValue::from_str(t).is_err())
        {
            return Err(err(
                "auth_token",
                "`auth_token` must be printable ASCII without surrounding spaces".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(err("timeout", "`timeout` must be > 0".into()));
        }
        if self.queue_limit == 0 {
            return Err(err("queue_limit", "`queue_limit` must be > 0".into()));
        }
        Ok(())
    }

    /// The `Authorization` header value: `Bearer <token>` for a bare token,
    /// the token itself when it already has a scheme.
    pub(crate) fn authorization(&self) -> Option<String> {
        self.auth_token.as_ref().map(|t| {
            if t.contains(' ') {
                t.clone()
            } else {
                format!("Bearer {t}")
            }
        })
    }

    /// The pipeline options this configuration implies (`queue_dir`,
    /// `queue_limit`), other options at their defaults.
    pub fn target_options(&self) -> TargetOptions {
        TargetOptions {
            queue_limit: self.queue_limit,
            queue_dir: self.queue_dir.clone(),
            ..TargetOptions::default()
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum BoolOrString {
    Bool(bool),
    String(String),
}

fn de_enable<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match BoolOrString::deserialize(d)? {
        BoolOrString::Bool(b) => Ok(b),
        BoolOrString::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => Ok(true),
            "off" | "false" | "no" | "0" | "" => Ok(false),
            other => Err(serde::de::Error::custom(format!(
                "`enable` must be a bool or \"on\"/\"off\", not {other:?}"
            ))),
        },
    }
}

fn de_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

fn de_opt_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(de_opt_string(d)?.map(PathBuf::from))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrString {
    Num(u64),
    String(String),
}

fn de_queue_limit<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = match NumOrString::deserialize(d)? {
        NumOrString::Num(n) => n,
        NumOrString::String(s) if s.trim().is_empty() => 0,
        NumOrString::String(s) => s.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!("`queue_limit` must be a number, not {s:?}"))
        })?,
    };
    Ok(if n == 0 {
        DEFAULT_QUEUE_LIMIT
    } else {
        usize::try_from(n).unwrap_or(usize::MAX)
    })
}

fn de_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let bad = |s: &str| {
        serde::de::Error::custom(format!(
            "`timeout` must be seconds or a duration like \"10s\" or \"500ms\", not {s:?}"
        ))
    };
    match NumOrString::deserialize(d)? {
        NumOrString::Num(n) => Ok(Duration::from_secs(n)),
        NumOrString::String(s) => {
            let t = s.trim();
            if t.is_empty() {
                return Ok(DEFAULT_TIMEOUT);
            }
            let (num, unit) = if let Some(n) = t.strip_suffix("ms") {
                (n, 1)
            } else if let Some(n) = t.strip_suffix('s') {
                (n, 1000)
            } else {
                (t, 1000)
            };
            let n: u64 = num.trim().parse().map_err(|_| bad(&s))?;
            Ok(Duration::from_millis(n.saturating_mul(unit)))
        }
    }
}
