//! The webhook target's configuration, under MinIO's key names.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::config::queue::target_config;
use crate::config::values::{named, opt_duration, opt_path, opt_string, redact};
use crate::config::{ClientConfig, QueueConfig, Timeouts};
use crate::{Error, Result};

/// Default `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default `request_timeout` (and `timeout`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Configuration of one webhook target, as one entry of MinIO's
/// `{"webhook": {"<id>": {…}}}` section.
///
/// Keys are MinIO's (`enable`, `endpoint`, `auth_token`, `client_cert`,
/// `client_key`, `queue_dir`, `queue_limit`) plus this crate's `ca_cert`,
/// `signature_key`, `timeout` and the client block's `connect_timeout`
/// and `request_timeout` (default 10 s each). MinIO writes unset options as empty
/// strings; an empty string means "not set" for every optional key. Unknown
/// keys are rejected.
///
/// `Debug` never prints `auth_token` or `signature_key`, nor the parts of
/// `endpoint` that can carry a token (user info, path, query, fragment):
/// see [`redact_endpoint`].
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct WebhookConfig {
    /// `enable`, `queue_dir`, `queue_limit`.
    #[serde(skip)]
    pub queue: QueueConfig,

    /// `connect_timeout`, `request_timeout`: default
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    #[serde(skip)]
    pub client: ClientConfig,

    /// The URL events are POSTed to; `http` or `https`. Required.
    #[serde(rename = "endpoint", default)]
    pub endpoint: String,

    /// Sent as `Authorization: Bearer <token>` when it is a bare token, as
    /// is when it already holds a scheme (contains a space, e.g.
    /// `"Basic eHl6"`).
    #[serde(rename = "auth_token", default, deserialize_with = "opt_string")]
    pub auth_token: Option<String>,

    /// PEM client certificate for mutual TLS; requires `client_key`.
    #[serde(rename = "client_cert", default, deserialize_with = "opt_path")]
    pub client_cert: Option<PathBuf>,

    /// PEM private key of `client_cert`; requires `client_cert`.
    #[serde(rename = "client_key", default, deserialize_with = "opt_path")]
    pub client_key: Option<PathBuf>,

    /// PEM bundle of certificate authorities trusted for the endpoint, in
    /// addition to the built-in web roots (this crate's key; MinIO uses the
    /// system store). For endpoints with a private CA.
    #[serde(rename = "ca_cert", default, deserialize_with = "opt_path")]
    pub ca_cert: Option<PathBuf>,

    /// HMAC-SHA256 key: when set, every request carries
    /// `X-S3Event-Timestamp` and `X-S3Event-Signature` (see
    /// [`verify`](super::verify)).
    #[serde(rename = "signature_key", default, deserialize_with = "opt_string")]
    pub signature_key: Option<String>,

    /// The older key for the timeouts, kept so that configurations
    /// written before the client block still load: seconds as a number,
    /// or a string such as `"10s"`, `"500ms"`, `"2m"`, `"10"`. When set, it
    /// is the request timeout and, unless `connect_timeout` is set, the
    /// connect timeout (as it always was). Setting it and
    /// `request_timeout` together is refused.
    #[serde(rename = "timeout", default, deserialize_with = "de_timeout")]
    pub timeout: Option<Duration>,
}

/// `timeout`: a duration; empty is unset.
fn de_timeout<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Duration>, D::Error> {
    named("timeout", opt_duration(d))
}

target_config!(WebhookConfig);

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("queue", &self.queue)
            .field("client", &self.client)
            .field("endpoint", &redact_endpoint(&self.endpoint))
            .field("auth_token", &redact(&self.auth_token))
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("ca_cert", &self.ca_cert)
            .field("signature_key", &redact(&self.signature_key))
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
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(err("timeout", "`timeout` must be > 0".into()));
        }
        if self.timeout.is_some() && self.client.request_timeout.is_some() {
            return Err(err(
                "timeout",
                "`timeout` is the older name of `request_timeout`: set one of them".into(),
            ));
        }
        self.client.validate(&format!("webhook {id}"))?;
        self.queue.validate(&format!("webhook {id}"))
    }

    /// The connect and request timeouts the HTTP client uses: the client
    /// block's keys, else the older `timeout`, else 10 s each.
    pub fn timeouts(&self) -> Timeouts {
        let c = &self.client;
        Timeouts {
            connect: c
                .connect_timeout
                .or(self.timeout)
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            request: c
                .request_timeout
                .or(self.timeout)
                .unwrap_or(DEFAULT_REQUEST_TIMEOUT),
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_takes_what_the_shared_duration_parser_takes() {
        let timeout = |v: serde_json::Value| {
            serde_json::from_value::<WebhookConfig>(serde_json::json!({ "timeout": v }))
                .map(|c| c.timeouts().request)
        };
        for (v, d) in [
            (serde_json::json!("500ms"), Duration::from_millis(500)),
            (serde_json::json!("10s"), Duration::from_secs(10)),
            (serde_json::json!("2m"), Duration::from_secs(120)),
            (serde_json::json!("1h"), Duration::from_secs(3600)),
            (serde_json::json!("1.5s"), Duration::from_millis(1500)),
            (serde_json::json!("7"), Duration::from_secs(7)),
            (serde_json::json!(3), Duration::from_secs(3)),
            (serde_json::json!(""), DEFAULT_REQUEST_TIMEOUT),
        ] {
            assert_eq!(timeout(v.clone()).unwrap(), d, "{v}");
        }
        let e = timeout(serde_json::json!("soon")).unwrap_err().to_string();
        assert!(e.contains("\"soon\""), "{e}");
    }

    #[test]
    fn client_keys_and_the_older_timeout_key() {
        let read = |v: serde_json::Value| serde_json::from_value::<WebhookConfig>(v).unwrap();
        let t = |c: &WebhookConfig| (c.timeouts().connect, c.timeouts().request);
        let secs = Duration::from_secs;
        // No key: 10 s each, as before the client block.
        assert_eq!(t(&read(serde_json::json!({}))), (secs(10), secs(10)));
        // The older key sets both, as it always did.
        assert_eq!(t(&read(serde_json::json!({"timeout": "2s"}))), (secs(2), secs(2)));
        let c = read(serde_json::json!({"timeout": "2s", "connect_timeout": "1s"}));
        assert_eq!(t(&c), (secs(1), secs(2)));
        let c = read(serde_json::json!({"connect_timeout": "1s", "request_timeout": "3m",
                                        "endpoint": "http://h/"}));
        assert_eq!(t(&c), (secs(1), secs(180)));
        c.validate("1").unwrap();
        let both = WebhookConfig {
            endpoint: "http://h/".into(),
            ..read(serde_json::json!({"timeout": "2s", "request_timeout": "3s"}))
        };
        let e = both.validate("1").unwrap_err();
        assert!(
            matches!(e, Error::InvalidConfig { key: "timeout", .. })
                && e.to_string().contains("`request_timeout`"),
            "{e}"
        );
    }
}
