//! The NATS target's configuration, under MinIO's key names.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::queue::target_config;
use crate::config::values::*;
use crate::config::{ClientConfig, QueueConfig, Timeouts};
use crate::{Error, Result};

/// Default `connect_timeout`: how long connecting may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default `request_timeout`: how long one delivery attempt may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Configuration of one NATS target, as one entry of MinIO's
/// `{"nats": {"<id>": {…}}}` section.
///
/// Keys are MinIO's: `enable`, `address`, `subject`, `username`, `password`,
/// `token`, `nkey_seed`, `user_credentials`, `tls`, `tls_skip_verify`,
/// `tls_handshake_first`, `cert_authority`, `client_cert`, `client_key`,
/// `ping_interval`, `jetstream`, `queue_dir`, `queue_limit`, `connect_timeout`,
/// `request_timeout`. MinIO's deprecated NATS Streaming keys (`streaming*`) are
/// not supported (NATS Streaming reached its end of life; use `jetstream`).
/// Empty strings mean "not set". Unknown keys are rejected.
///
/// `Debug` never prints `password`, `token` or `nkey_seed`.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct NatsConfig {
    /// `enable`, `queue_dir`, `queue_limit`.
    #[serde(skip)]
    pub queue: QueueConfig,

    /// `connect_timeout`, `request_timeout`: default
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    #[serde(skip)]
    pub client: ClientConfig,

    /// The server, `host:port` or `nats://host:port` (`tls://` for TLS);
    /// several may be given separated by commas. Required.
    #[serde(default)]
    pub address: String,

    /// The subject events are published on. Required.
    #[serde(default)]
    pub subject: String,

    /// User name, with `password`.
    #[serde(default, deserialize_with = "opt_string")]
    pub username: Option<String>,

    /// Password of `username`. Secret.
    #[serde(default, deserialize_with = "opt_string")]
    pub password: Option<String>,

    /// Authentication token. Secret.
    #[serde(default, deserialize_with = "opt_string")]
    pub token: Option<String>,

    /// NKey seed (`SU…`) to sign the server's nonce with. Secret.
    #[serde(default, deserialize_with = "opt_string")]
    pub nkey_seed: Option<String>,

    /// A `.creds` file (JWT and NKey seed).
    #[serde(default, deserialize_with = "opt_path")]
    pub user_credentials: Option<PathBuf>,

    /// Require TLS.
    #[serde(default, deserialize_with = "flag")]
    pub tls: bool,

    /// Accept any server certificate (testing only).
    #[serde(default, deserialize_with = "flag")]
    pub tls_skip_verify: bool,

    /// Start TLS before the server's `INFO` (servers with
    /// `handshake_first`).
    #[serde(default, deserialize_with = "flag")]
    pub tls_handshake_first: bool,

    /// PEM file of the CA certificates to trust instead of the system's.
    #[serde(default, deserialize_with = "opt_path")]
    pub cert_authority: Option<PathBuf>,

    /// PEM client certificate for mutual TLS; requires `client_key`.
    #[serde(default, deserialize_with = "opt_path")]
    pub client_cert: Option<PathBuf>,

    /// PEM private key of `client_cert`.
    #[serde(default, deserialize_with = "opt_path")]
    pub client_key: Option<PathBuf>,

    /// Interval of the client's pings: seconds, or a duration such as
    /// `"30s"`; unset or `0` keeps the client's default (1 minute).
    #[serde(default, deserialize_with = "opt_duration")]
    pub ping_interval: Option<Duration>,

    /// Publish through JetStream: an event counts as delivered once the
    /// stream acknowledged it. A stream must capture `subject`.
    #[serde(default, deserialize_with = "flag")]
    pub jetstream: bool,

}

target_config!(NatsConfig);

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("queue", &self.queue)
            .field("client", &self.client)
            .field("address", &self.address)
            .field("subject", &self.subject)
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("token", &redact(&self.token))
            .field("nkey_seed", &redact(&self.nkey_seed))
            .field("user_credentials", &self.user_credentials)
            .field("tls", &self.tls)
            .field("tls_skip_verify", &self.tls_skip_verify)
            .field("tls_handshake_first", &self.tls_handshake_first)
            .field("cert_authority", &self.cert_authority)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("ping_interval", &self.ping_interval)
            .field("jetstream", &self.jetstream)
            .finish()
    }
}

impl NatsConfig {
    /// The connect and request timeouts: the client block's keys, else
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    pub fn timeouts(&self) -> Timeouts {
        Timeouts::of(&self.client, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)
    }

    /// A configuration publishing on `subject` at `address`, every other
    /// key at its default.
    pub fn new(address: impl Into<String>, subject: impl Into<String>) -> Self {
        NatsConfig {
            address: address.into(),
            subject: subject.into(),
            ..NatsConfig::default()
        }
    }

    /// Checks every key; messages name the target (`nats <id>`) and key.
    pub fn validate(&self, id: &str) -> Result<()> {
        self.client.validate(&format!("nats {id}"))?;
        let err = |key: &'static str, message: &str| Error::InvalidConfig {
            target: format!("nats {id}"),
            key,
            message: message.to_owned(),
        };
        if self.address.trim().is_empty() {
            return Err(err("address", "`address` is required"));
        }
        if self.subject.trim().is_empty() {
            return Err(err("subject", "`subject` is required"));
        }
        if self.subject.contains(char::is_whitespace) {
            return Err(err("subject", "`subject` must not contain whitespace"));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(err(
                "username",
                "`username` and `password` must be set together",
            ));
        }
        let methods = [
            self.username.is_some(),
            self.token.is_some(),
            self.nkey_seed.is_some(),
            self.user_credentials.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err(err(
                "token",
                "set only one of `username`/`password`, `token`, `nkey_seed` and `user_credentials`",
            ));
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(err(
                "client_cert",
                "`client_cert` and `client_key` must be set together",
            ));
        }
        self.queue.validate(&format!("nats {id}"))?;
        Ok(())
    }


    /// Whether any TLS key asks for TLS.
    pub(crate) fn wants_tls(&self) -> bool {
        self.tls
            || self.tls_skip_verify
            || self.tls_handshake_first
            || self.cert_authority.is_some()
            || self.client_cert.is_some()
            || self.address.contains("tls://")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let c = NatsConfig {
            username: Some("user".into()),
            password: Some("hunter2-password".into()),
            token: Some("s3cr3t-token".into()),
            nkey_seed: Some("SUAKEYSEEDSECRET".into()),
            ..NatsConfig::new("127.0.0.1:4222", "events")
        };
        let d = format!("{c:?}");
        for secret in ["hunter2-password", "s3cr3t-token", "SUAKEYSEEDSECRET"] {
            assert!(!d.contains(secret), "{d}");
        }
        assert!(d.contains("user") && d.contains("***"), "{d}");
    }

    #[test]
    fn minio_strings() {
        let c: NatsConfig = serde_json::from_value(serde_json::json!({
            "enable": "on", "address": "127.0.0.1:4222", "subject": "bucketevents",
            "username": "", "password": "", "token": "", "tls": "off",
            "ping_interval": "0", "jetstream": "on", "queue_dir": "", "queue_limit": "0"
        }))
        .unwrap();
        assert!(c.queue.enable && c.jetstream && !c.tls);
        assert_eq!(c.username, None);
        assert_eq!(c.queue.queue_limit, crate::config::DEFAULT_QUEUE_LIMIT);
        c.validate("1").unwrap();
    }

    #[test]
    fn validate_names_key() {
        let err = NatsConfig::new("127.0.0.1:4222", "")
            .validate("1")
            .unwrap_err();
        assert_eq!(err.to_string(), "nats 1: `subject` is required");
    }
}

#[cfg(test)]
mod notify_config_tests {
    use crate::NotifyConfig;

    #[test]
    fn json_and_env_build_nats_targets() {
        let c = NotifyConfig::from_json(
            r#"{"nats": {"1": {"enable": "on", "address": "127.0.0.1:4222",
                "subject": "bucketevents", "jetstream": "on", "queue_limit": "7"}}}"#,
            "r",
        )
        .unwrap();
        let t = c.build_targets().unwrap();
        assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:1:nats");
        assert_eq!(t[0].1.queue_limit, 7);

        let vars = [
            ("MINIO_NOTIFY_NATS_ADDRESS_X", "127.0.0.1:4222"),
            ("MINIO_NOTIFY_NATS_SUBJECT_X", "ev"),
            ("MINIO_NOTIFY_NATS_TLS_SKIP_VERIFY_X", "on"),
            ("MINIO_NOTIFY_NATS_NKEY_SEED_X", "SUSECRETSEED"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let c = NotifyConfig::from_env_vars(vars, "r").unwrap();
        assert_eq!(c.target_names(), [("nats", "X")]);
        let t = c.build_targets().unwrap();
        assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:X:nats");
        assert!(!format!("{:?}", t[0].0).contains("SUSECRETSEED"));
    }

    #[test]
    fn invalid_nats_value_names_key() {
        let c = NotifyConfig::from_json(
            r#"{"nats": {"1": {"address": "a:1", "subject": "s", "ping_interval": "often"}}}"#,
            "",
        )
        .unwrap();
        let err = c.build_targets().unwrap_err();
        assert!(
            matches!(
                err,
                crate::Error::InvalidConfig {
                    key: "ping_interval",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
