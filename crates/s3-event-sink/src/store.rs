//! Building the object store a [`Sink`](crate::Sink) uploads to: a local
//! directory (the default: nothing to install), memory, or S3 and
//! S3-compatible stores (feature `s3`, on by default), or S3 through the AWS
//! SDK (feature `aws-sdk`) when uploads need a canned ACL, server-side
//! encryption, a storage class or tags.
//!
//! ```
//! use s3_event_sink::StoreConfig;
//!
//! let dir = tempfile::tempdir()?;
//! let store = StoreConfig::Local { dir: dir.path().into() }.build()?;
//! assert!(store.to_string().contains("LocalFileSystem"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::ObjectStore;

use crate::{Error, Result};

/// Where objects go. Deserializes from `{"store": "local", "dir": …}`,
/// `{"store": "memory"}` or `{"store": "s3", "bucket": …, …}` (the keys of
/// [`S3Config`]); unknown keys are refused.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(tag = "store", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
// Built once per sink, so the AWS SDK variant's size does not matter (with
// the `s3` feature the S3 variant is as large and the lint stays quiet).
#[cfg_attr(not(feature = "s3"), allow(clippy::large_enum_variant))]
pub enum StoreConfig {
    /// A local directory, created if missing; objects are written atomically
    /// (a temporary file renamed into place) and fsynced with their
    /// directories before the upload counts as done ([`LocalDir`](crate::LocalDir)).
    Local {
        /// The root directory.
        dir: PathBuf,
    },
    /// In memory (tests and benches).
    Memory,
    /// S3 or an S3-compatible store (feature `s3`).
    #[cfg(feature = "s3")]
    S3(S3Config),
    /// S3 through the AWS SDK (feature `aws-sdk`), with a canned ACL,
    /// server-side encryption, storage class and tags on every upload.
    #[cfg(feature = "aws-sdk")]
    #[serde(skip)]
    AwsSdk(crate::AwsSdkConfig),
}

/// An S3 or S3-compatible bucket. Unset credentials and region are taken from
/// the standard AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, ...).
///
/// Deserializes from the field names or their camelCase spelling
/// (`access_key_id` or `accessKeyId`, ...); `bucket` is required.
#[cfg(feature = "s3")]
#[derive(Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The bucket name.
    pub bucket: String,
    /// The region (default from the environment, else `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// The endpoint of an S3-compatible store, e.g. `http://127.0.0.1:18333`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The access key id.
    #[serde(default, alias = "accessKeyId")]
    pub access_key_id: Option<String>,
    /// The secret access key; never printed.
    #[serde(default, alias = "secretAccessKey")]
    pub secret_access_key: Option<String>,
    /// A session token; never printed.
    #[serde(default, alias = "sessionToken")]
    pub session_token: Option<String>,
    /// Allow plain `http://` endpoints (loopback test servers).
    #[serde(default, alias = "allowHttp")]
    pub allow_http: bool,
    /// Use virtual-hosted-style requests (`bucket.host`) instead of path
    /// style (`host/bucket`), which S3-compatible stores usually need.
    #[serde(default, alias = "virtualHostedStyle")]
    pub virtual_hosted_style: bool,
}

#[cfg(feature = "s3")]
impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("session_token", &redact(&self.session_token))
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .finish()
    }
}

impl fmt::Display for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreConfig::Local { dir } => write!(f, "local directory {}", dir.display()),
            StoreConfig::Memory => f.write_str("memory"),
            #[cfg(feature = "s3")]
            StoreConfig::S3(c) => match &c.endpoint {
                Some(e) => write!(f, "s3://{} at {e}", c.bucket),
                None => write!(f, "s3://{}", c.bucket),
            },
            #[cfg(feature = "aws-sdk")]
            StoreConfig::AwsSdk(c) => match &c.endpoint {
                Some(e) => write!(f, "s3://{} at {e} (aws-sdk)", c.bucket),
                None => write!(f, "s3://{} (aws-sdk)", c.bucket),
            },
        }
    }
}

fn store_err(store: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Store {
        source: object_store::Error::Generic {
            store,
            source: Box::new(e),
        },
    }
}

impl StoreConfig {
    /// Builds the store. For S3 nothing is contacted yet: a wrong bucket or
    /// bad credentials show as upload failures (retried, counted).
    pub fn build(&self) -> Result<Arc<dyn ObjectStore>> {
        match self {
            StoreConfig::Local { dir } => {
                std::fs::create_dir_all(dir).map_err(|e| store_err("LocalFileSystem", e))?;
                let fs = crate::LocalDir::new(dir).map_err(|source| Error::Store { source })?;
                Ok(Arc::new(fs))
            }
            StoreConfig::Memory => Ok(Arc::new(InMemory::new())),
            #[cfg(feature = "s3")]
            StoreConfig::S3(c) => {
                use object_store::aws::AmazonS3Builder;
                if c.bucket.is_empty() {
                    return Err(Error::InvalidConfig {
                        what: "bucket",
                        value: String::new(),
                        expected: "a bucket name",
                    });
                }
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(&c.bucket)
                    .with_allow_http(c.allow_http)
                    .with_virtual_hosted_style_request(c.virtual_hosted_style);
                if let Some(r) = &c.region {
                    b = b.with_region(r);
                }
                if let Some(e) = &c.endpoint {
                    b = b.with_endpoint(e);
                }
                if let Some(k) = &c.access_key_id {
                    b = b.with_access_key_id(k);
                }
                if let Some(k) = &c.secret_access_key {
                    b = b.with_secret_access_key(k);
                }
                if let Some(t) = &c.session_token {
                    b = b.with_token(t);
                }
                let s3 = b.build().map_err(|source| Error::Store { source })?;
                Ok(Arc::new(s3))
            }
            #[cfg(feature = "aws-sdk")]
            StoreConfig::AwsSdk(c) => Ok(Arc::new(c.build()?)),
        }
    }
}

#[cfg(all(test, feature = "s3"))]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_not_in_debug() {
        let c = StoreConfig::S3(S3Config {
            bucket: "b".into(),
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("wJalrXUtnFEMI-secret".into()),
            session_token: Some("token-secret".into()),
            ..S3Config::default()
        });
        let d = format!("{c:?} {c}");
        assert!(
            !d.contains("wJalrXUtnFEMI") && !d.contains("token-secret"),
            "{d}"
        );
        assert!(d.contains("AKIDEXAMPLE") && d.contains("<redacted>"), "{d}");
    }

    #[test]
    fn deserializes_in_both_spellings_and_refuses_unknown_keys() {
        let c: StoreConfig = serde_json::from_str(
            r#"{"store": "s3", "bucket": "b", "endpoint": "http://127.0.0.1:18333",
                "accessKeyId": "k", "secret_access_key": "s", "allowHttp": true}"#,
        )
        .unwrap();
        let StoreConfig::S3(s3) = &c else {
            panic!("{c:?}")
        };
        assert_eq!(s3.access_key_id.as_deref(), Some("k"));
        assert!(s3.allow_http);
        let c: StoreConfig = serde_json::from_str(r#"{"store": "local", "dir": "/srv"}"#).unwrap();
        assert!(matches!(c, StoreConfig::Local { ref dir } if dir.as_os_str() == "/srv"));
        for bad in [
            r#"{"store": "local", "dir": "/srv", "bucket": "b"}"#,
            r#"{"store": "s3", "bucket": "b", "acessKeyId": "k"}"#,
            r#"{"store": "ftp"}"#,
        ] {
            assert!(serde_json::from_str::<StoreConfig>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_bucket_is_rejected() {
        let e = StoreConfig::S3(S3Config::default()).build().unwrap_err();
        assert!(e.to_string().contains("bucket"), "{e}");
    }
}
