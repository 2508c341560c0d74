//! The AWS connection settings every AWS client of the workspace shares
//! (feature `aws`): region, endpoint override and static credentials, with
//! unset values read from the standard AWS environment variables, turned
//! into an [`SdkConfig`] that each service client is built from
//! (`aws_sdk_sqs::Client::new(&sdk_config)`, `aws_sdk_sns::...`).
//!
//! ```
//! use s3_event_core::aws::AwsConfig;
//!
//! let cfg = AwsConfig {
//!     region: Some("eu-west-1".into()),
//!     endpoint: Some("http://127.0.0.1:15000".into()),
//!     access_key_id: Some("AKIDEXAMPLE".into()),
//!     secret_access_key: Some("wJalrXUtnFEMI".into()),
//!     session_token: None,
//! };
//! let sdk = cfg.sdk_config("SQS").unwrap();
//! assert_eq!(sdk.region().unwrap().as_ref(), "eu-west-1");
//! assert_eq!(sdk.endpoint_url(), Some("http://127.0.0.1:15000"));
//! // Secrets never reach Debug output.
//! assert!(!format!("{cfg:?}").contains("wJalrXUtnFEMI"));
//! ```
//!
//! Unset values come from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION` (else `AWS_DEFAULT_REGION`, else
//! `us-east-1`) and `AWS_ENDPOINT_URL_<SERVICE>` (else `AWS_ENDPOINT_URL`).
//! Profile files, SSO and instance metadata are not read (no `aws-config`).
//!
//! The [`SdkConfig`] carries no HTTP client: a service client built from it
//! uses the SDK's default HTTPS client (rustls), which the service crate's
//! `default-https-client` feature provides, as `aws-sdk-s3` does in the sink.

use std::fmt;

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::behavior_version::BehaviorVersion;
use aws_types::region::Region;
pub use aws_types::SdkConfig;
use serde::Deserialize;

use crate::{Error, Result};

/// The region used when neither the configuration nor the environment
/// names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// The name credentials built here carry (shown by the SDK in its logs).
const PROVIDER_NAME: &str = "s3-event";

/// AWS connection settings; `None` means "from the environment".
///
/// Deserializes from `{"region", "endpoint", "access_key_id",
/// "secret_access_key", "session_token"}`, every key optional.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct AwsConfig {
    /// The region (`AWS_REGION`, else `AWS_DEFAULT_REGION`, else
    /// `us-east-1`).
    pub region: Option<String>,
    /// An endpoint override for an AWS-compatible service or emulator, e.g.
    /// `http://127.0.0.1:15000` (`AWS_ENDPOINT_URL_<SERVICE>`, else
    /// `AWS_ENDPOINT_URL`, else the service's AWS endpoint).
    pub endpoint: Option<String>,
    /// The access key id (`AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// The secret access key (`AWS_SECRET_ACCESS_KEY`); never printed.
    pub secret_access_key: Option<String>,
    /// A session token (`AWS_SESSION_TOKEN`); never printed.
    pub session_token: Option<String>,
}

fn redact(s: &Option<String>) -> Option<&'static str> {
    s.as_ref().map(|_| "<redacted>")
}

impl fmt::Debug for AwsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsConfig")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("session_token", &redact(&self.session_token))
            .finish()
    }
}

/// [`AwsConfig`] with the environment filled in and checked: what a client
/// is built from.
#[derive(Clone, PartialEq, Eq)]
pub struct ResolvedAws {
    /// The region.
    pub region: String,
    /// The endpoint override, if any: an `http://` or `https://` URL.
    pub endpoint: Option<String>,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key; never printed.
    pub secret_access_key: String,
    /// The session token, if any; never printed.
    pub session_token: Option<String>,
}

impl fmt::Debug for ResolvedAws {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedAws")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &redact(&self.session_token))
            .finish()
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> Error {
    Error::Aws {
        field,
        message: message.into(),
    }
}

impl AwsConfig {
    /// Fills unset values from the process environment and checks them, for
    /// `service` (its endpoint variable is `AWS_ENDPOINT_URL_<SERVICE>`, the
    /// service id upper-cased with spaces and dashes as `_`: `SQS`, `SNS`,
    /// `EventBridge`, `S3`).
    pub fn resolve(&self, service: &str) -> Result<ResolvedAws> {
        self.resolve_with(service, |key| std::env::var(key).ok())
    }

    /// [`AwsConfig::resolve`] with the environment read through `env` (a
    /// variable that is unset or empty counts as unset).
    pub fn resolve_with(
        &self,
        service: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ResolvedAws> {
        let env = |key: &str| env(key).filter(|v| !v.is_empty());
        let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        let region = given(&self.region)
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| DEFAULT_REGION.to_owned());
        let service_var = format!(
            "AWS_ENDPOINT_URL_{}",
            service.to_ascii_uppercase().replace([' ', '-'], "_")
        );
        let endpoint = given(&self.endpoint)
            .or_else(|| env(&service_var))
            .or_else(|| env("AWS_ENDPOINT_URL"));
        if let Some(e) = &endpoint {
            if !e.starts_with("http://") && !e.starts_with("https://") {
                return Err(invalid(
                    "endpoint",
                    format!("`{e}` is not an http:// or https:// URL"),
                ));
            }
        }
        let key_id = given(&self.access_key_id).or_else(|| env("AWS_ACCESS_KEY_ID"));
        let secret = given(&self.secret_access_key).or_else(|| env("AWS_SECRET_ACCESS_KEY"));
        let session_token = given(&self.session_token).or_else(|| env("AWS_SESSION_TOKEN"));
        let (access_key_id, secret_access_key) = match (key_id, secret) {
            (Some(k), Some(s)) => (k, s),
            (None, None) => {
                return Err(invalid(
                    "credentials",
                    "an access key id and a secret access key are required, in the \
                     configuration or as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
                ))
            }
            (Some(_), None) => {
                return Err(invalid(
                    "secret_access_key",
                    "the access key id is set but the secret access key is not \
                     (configuration or AWS_SECRET_ACCESS_KEY)",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "access_key_id",
                    "the secret access key is set but the access key id is not \
                     (configuration or AWS_ACCESS_KEY_ID)",
                ))
            }
        };
        Ok(ResolvedAws {
            region,
            endpoint,
            access_key_id,
            secret_access_key,
            session_token,
        })
    }

    /// The [`SdkConfig`] for `service` (see [`AwsConfig::resolve`]), with
    /// the environment read now.
    pub fn sdk_config(&self, service: &str) -> Result<SdkConfig> {
        Ok(self.resolve(service)?.sdk_config())
    }
}

impl ResolvedAws {
    /// The static credentials.
    pub fn credentials(&self) -> Credentials {
        Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.clone(),
            self.session_token.clone(),
            None,
            PROVIDER_NAME,
        )
    }

    /// The [`SdkConfig`] a service client is built from: the latest
    /// behaviour version, the region, the static credentials and the
    /// endpoint override.
    pub fn sdk_config(&self) -> SdkConfig {
        let mut b = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .credentials_provider(SharedCredentialsProvider::new(self.credentials()));
        if let Some(e) = &self.endpoint {
            b = b.endpoint_url(e);
        }
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use aws_credential_types::provider::ProvideCredentials;

    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn keys() -> AwsConfig {
        AwsConfig {
            access_key_id: Some("AKID".into()),
            secret_access_key: Some("SECRET".into()),
            ..AwsConfig::default()
        }
    }

    #[test]
    fn unset_values_come_from_the_environment() {
        let env = env_of(&[
            ("AWS_ACCESS_KEY_ID", "env-key"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ("AWS_SESSION_TOKEN", "env-token"),
            ("AWS_REGION", "eu-central-1"),
            ("AWS_DEFAULT_REGION", "ap-south-1"),
            ("AWS_ENDPOINT_URL", "http://generic:1"),
        ]);
        let r = AwsConfig::default().resolve_with("SQS", &env).unwrap();
        assert_eq!(r.access_key_id, "env-key");
        assert_eq!(r.secret_access_key, "env-secret");
        assert_eq!(r.session_token.as_deref(), Some("env-token"));
        assert_eq!(
            r.region, "eu-central-1",
            "AWS_REGION before AWS_DEFAULT_REGION"
        );
        assert_eq!(r.endpoint.as_deref(), Some("http://generic:1"));
    }

    #[test]
    fn configuration_wins_over_the_environment() {
        let env = env_of(&[
            ("AWS_ACCESS_KEY_ID", "env-key"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ("AWS_REGION", "eu-central-1"),
            ("AWS_ENDPOINT_URL", "http://generic:1"),
        ]);
        let cfg = AwsConfig {
            region: Some("us-west-2".into()),
            endpoint: Some("https://emulator:2".into()),
            ..keys()
        };
        let r = cfg.resolve_with("SQS", &env).unwrap();
        assert_eq!(r.access_key_id, "AKID");
        assert_eq!(r.secret_access_key, "SECRET");
        assert_eq!(r.session_token, None);
        assert_eq!(r.region, "us-west-2");
        assert_eq!(r.endpoint.as_deref(), Some("https://emulator:2"));
    }

    #[test]
    fn region_falls_back_to_default_region_then_us_east_1() {
        let r = keys()
            .resolve_with("SQS", env_of(&[("AWS_DEFAULT_REGION", "ap-south-1")]))
            .unwrap();
        assert_eq!(r.region, "ap-south-1");
        // An empty variable counts as unset.
        let r = keys()
            .resolve_with("SQS", env_of(&[("AWS_REGION", "")]))
            .unwrap();
        assert_eq!(r.region, DEFAULT_REGION);
    }

    #[test]
    fn the_service_endpoint_variable_comes_before_the_generic_one() {
        let env = env_of(&[
            ("AWS_ENDPOINT_URL", "http://generic:1"),
            ("AWS_ENDPOINT_URL_EVENTBRIDGE", "http://events:2"),
        ]);
        let r = keys().resolve_with("EventBridge", &env).unwrap();
        assert_eq!(r.endpoint.as_deref(), Some("http://events:2"));
        let r = keys().resolve_with("SNS", &env).unwrap();
        assert_eq!(r.endpoint.as_deref(), Some("http://generic:1"));
        let r = keys().resolve_with("SNS", env_of(&[])).unwrap();
        assert_eq!(r.endpoint, None);
    }

    #[test]
    fn missing_or_half_credentials_and_bad_endpoints_are_named() {
        let none = env_of(&[]);
        let e = AwsConfig::default().resolve_with("SQS", &none).unwrap_err();
        assert!(e.to_string().contains("AWS_ACCESS_KEY_ID"), "{e}");
        let half = AwsConfig {
            access_key_id: Some("AKID".into()),
            ..AwsConfig::default()
        };
        let e = half.resolve_with("SQS", &none).unwrap_err();
        assert!(e.to_string().contains("secret_access_key"), "{e}");
        let half = AwsConfig {
            secret_access_key: Some("SECRET".into()),
            ..AwsConfig::default()
        };
        let e = half.resolve_with("SQS", &none).unwrap_err();
        assert!(e.to_string().contains("access_key_id"), "{e}");
        let bad = AwsConfig {
            endpoint: Some("127.0.0.1:15000".into()),
            ..keys()
        };
        let e = bad.resolve_with("SQS", &none).unwrap_err();
        assert!(e.to_string().contains("`127.0.0.1:15000`"), "{e}");
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let cfg = AwsConfig {
            session_token: Some("TOKEN-VALUE".into()),
            secret_access_key: Some("SECRET-VALUE".into()),
            access_key_id: Some("AKID".into()),
            ..AwsConfig::default()
        };
        let resolved = cfg.resolve_with("SQS", env_of(&[])).unwrap();
        for text in [format!("{cfg:?}"), format!("{resolved:?}")] {
            assert!(!text.contains("SECRET-VALUE"), "{text}");
            assert!(!text.contains("TOKEN-VALUE"), "{text}");
            assert!(
                text.contains("AKID") && text.contains("<redacted>"),
                "{text}"
            );
        }
        let sdk = resolved.sdk_config();
        assert!(!format!("{sdk:?}").contains("SECRET-VALUE"));
    }

    #[tokio::test]
    async fn the_sdk_config_carries_region_endpoint_and_credentials() {
        let cfg = AwsConfig {
            region: Some("eu-west-1".into()),
            endpoint: Some("http://127.0.0.1:15000".into()),
            session_token: Some("TOKEN".into()),
            ..keys()
        };
        let sdk = cfg.resolve_with("SQS", env_of(&[])).unwrap().sdk_config();
        assert_eq!(sdk.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert_eq!(sdk.endpoint_url(), Some("http://127.0.0.1:15000"));
        assert!(sdk.behavior_version().is_some());
        let creds = sdk
            .credentials_provider()
            .unwrap()
            .provide_credentials()
            .await
            .unwrap();
        assert_eq!(creds.access_key_id(), "AKID");
        assert_eq!(creds.secret_access_key(), "SECRET");
        assert_eq!(creds.session_token(), Some("TOKEN"));
    }

    #[test]
    fn deserializes_with_every_key_optional() {
        let cfg: AwsConfig =
            serde_json::from_str(r#"{"region":"eu-west-1","access_key_id":"AKID"}"#).unwrap();
        assert_eq!(cfg.region.as_deref(), Some("eu-west-1"));
        assert_eq!(cfg.access_key_id.as_deref(), Some("AKID"));
        assert_eq!(cfg.endpoint, None);
    }
}
