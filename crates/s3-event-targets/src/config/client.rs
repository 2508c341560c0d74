//! The `client` block every target takes besides its own keys:
//! `connect_timeout` and `request_timeout` ([`ClientConfig`]), read like
//! the `queue` block (see [`super::queue`]).
//!
//! An unset key means the target's own default, the value it used before
//! the block existed (each target documents it: its
//! `DEFAULT_CONNECT_TIMEOUT` and `DEFAULT_REQUEST_TIMEOUT`), so a
//! configuration without these keys behaves as before.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::values::{named, opt_duration};
use crate::{Error, Result};

/// The client keys of every target: how long connecting and one request
/// may take. Durations are read by the shared duration parser (seconds as
/// a number, or `"500ms"`, `"10s"`, `"2m"`, `"1h"`, `"1.5s"`; empty means
/// unset); `0` is refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// How long establishing a connection to the target may take (TCP,
    /// TLS and the protocol's handshake); unset: the target's default.
    #[serde(default, deserialize_with = "connect_timeout")]
    pub connect_timeout: Option<Duration>,

    /// How long one request or delivery attempt may take (an HTTP
    /// request, a batch and its acknowledgements); unset: the target's
    /// default. A request that takes longer fails as transient, and the
    /// notifier retries it.
    #[serde(default, deserialize_with = "request_timeout")]
    pub request_timeout: Option<Duration>,
}

/// A positive duration under `key`; empty is unset.
fn positive<'de, D: Deserializer<'de>>(
    key: &str,
    d: D,
) -> std::result::Result<Option<Duration>, D::Error> {
    match named(key, opt_duration(d))? {
        Some(t) if t.is_zero() => Err(serde::de::Error::custom(format!(
            "`{key}` must be > 0, not 0"
        ))),
        t => Ok(t),
    }
}

/// `connect_timeout`: a positive duration.
fn connect_timeout<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Duration>, D::Error> {
    positive("connect_timeout", d)
}

/// `request_timeout`: a positive duration.
fn request_timeout<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Duration>, D::Error> {
    positive("request_timeout", d)
}

impl ClientConfig {
    /// `connect_timeout`, else `default` (the target's).
    pub fn connect_timeout_or(&self, default: Duration) -> Duration {
        self.connect_timeout.unwrap_or(default)
    }

    /// `request_timeout`, else `default` (the target's).
    pub fn request_timeout_or(&self, default: Duration) -> Duration {
        self.request_timeout.unwrap_or(default)
    }

    /// Checks the block; `target` is `"<type> <id>"`. Messages name the key.
    #[allow(dead_code)] // Unused with no target feature on.
    pub(crate) fn validate(&self, target: &str) -> Result<()> {
        for (key, value) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if value.is_some_and(|t| t.is_zero()) {
                return Err(Error::InvalidConfig {
                    target: target.to_owned(),
                    key,
                    message: format!("`{key}` must be > 0"),
                });
            }
        }
        Ok(())
    }
}

/// A target's connect and request timeouts as its client uses them: the
/// [`ClientConfig`] keys over the target's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// How long connecting may take.
    pub connect: Duration,
    /// How long one request or delivery attempt may take.
    pub request: Duration,
}

impl Timeouts {
    /// The timeouts `client` sets, `connect` and `request` where it sets
    /// none.
    pub fn of(client: &ClientConfig, connect: Duration, request: Duration) -> Timeouts {
        Timeouts {
            connect: client.connect_timeout_or(connect),
            request: client.request_timeout_or(request),
        }
    }
}

/// For the targets' tests of the client block.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use serde_json::Value;

    /// `Timeouts` of `connect` and `request` seconds.
    pub(crate) fn secs(connect: u64, request: u64) -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(connect),
            request: Duration::from_secs(request),
        }
    }

    /// Checks that a target built from `keys` (a JSON object of its keys,
    /// read as its configuration by `built`, which returns the timeouts of
    /// the built target) has `defaults` without the client keys, and the
    /// values of the keys with them (written as the environment would:
    /// `"1500ms"`, `"2.5s"`).
    pub(crate) fn assert_client_keys(
        keys: Value,
        defaults: Timeouts,
        built: impl Fn(Value) -> Timeouts,
    ) {
        assert_eq!(built(keys.clone()), defaults, "without the client keys");
        let mut set = keys;
        set["connect_timeout"] = "1500ms".into();
        set["request_timeout"] = "2.5s".into();
        let want = Timeouts {
            connect: Duration::from_millis(1500),
            request: Duration::from_millis(2500),
        };
        assert_eq!(built(set), want, "with the client keys");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(v: serde_json::Value) -> std::result::Result<ClientConfig, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn both_keys_take_what_the_shared_duration_parser_takes() {
        for (v, d) in [
            (json!("500ms"), Duration::from_millis(500)),
            (json!("10s"), Duration::from_secs(10)),
            (json!("2m"), Duration::from_secs(120)),
            (json!("1h"), Duration::from_secs(3600)),
            (json!("1.5s"), Duration::from_millis(1500)),
            (json!("7"), Duration::from_secs(7)),
            (json!(3), Duration::from_secs(3)),
        ] {
            let c = read(json!({"connect_timeout": v, "request_timeout": v})).unwrap();
            assert_eq!(c.connect_timeout, Some(d), "{v}");
            assert_eq!(c.request_timeout, Some(d), "{v}");
        }
        let c = read(json!({"connect_timeout": "", "request_timeout": null})).unwrap();
        assert_eq!(c, ClientConfig::default());
    }

    #[test]
    fn unset_keys_take_the_targets_defaults() {
        let c = read(json!({"request_timeout": "250ms"})).unwrap();
        let t = Timeouts::of(&c, Duration::from_secs(3), Duration::from_secs(10));
        assert_eq!(t.connect, Duration::from_secs(3));
        assert_eq!(t.request, Duration::from_millis(250));
    }

    #[test]
    fn invalid_and_zero_values_are_refused_naming_key_and_value() {
        let e = read(json!({"connect_timeout": "soon"})).unwrap_err();
        assert!(
            e.contains("`connect_timeout`") && e.contains("\"soon\""),
            "{e}"
        );
        let e = read(json!({"request_timeout": "0s"})).unwrap_err();
        assert!(e.contains("`request_timeout` must be > 0, not 0"), "{e}");
        let zero = ClientConfig {
            connect_timeout: Some(Duration::ZERO),
            ..ClientConfig::default()
        };
        let e = zero.validate("webhook 1").unwrap_err();
        assert_eq!(e.to_string(), "webhook 1: `connect_timeout` must be > 0");
    }
}
