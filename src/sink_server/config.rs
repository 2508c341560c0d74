//! The server's configuration: the seed's `config.json` and `secret.json`,
//! environment variables, and this program's own keys.
//!
//! | Key | Meaning | Default |
//! |---|---|---|
//! | `v_port` | port to listen on | `8080` |
//! | `region` | the bucket's region | from the AWS environment, else `us-east-1` |
//! | `bucketName` | the bucket (`store` becomes `s3` when set) | none |
//! | `flushSize` | events per object | `1000` |
//! | `scheduledInterval` | seconds from a batch's first event to its upload | `60` |
//! | `timeInterval` | `HOURLY` or `DAILY` partitions | `HOURLY` |
//! | `store` | `local`, `s3` or `memory` | `s3` with `bucketName`, else `local` |
//! | `localDir` | directory of the `local` store | `./data` |
//! | `endpoint` | URL of an S3-compatible store (path-style requests) | AWS |
//! | `prefix` | put before every object key | none |
//! | `encoding` | `ndjson`, `json` or `parquet` (crate feature `parquet`) | `ndjson` |
//! | `compression` | `gzip`, `zstd` or `none`; with `parquet` only `none` (the pages are compressed instead) | `gzip`; `none` with `parquet` |
//! | `parquetSchema` | `cloudevents` (what this server receives), `s3`, `s3-compact` or `inferred`; see `s3_event_sink::ParquetSchema` | `cloudevents` |
//! | `parquetCompression` | Parquet page compression: `zstd`, `snappy` or `none` | `zstd` |
//! | `parquetRowGroupSize` | rows per Parquet row group | `131072` |
//! | `fsync` | spool fsync: `always`, `never` or an interval (`10ms`) | `10ms` |
//! | `spoolDir` | the spool directory | `./spool` |
//! | `maxBodyBytes` | largest request body accepted | 10 MiB |
//! | `bindAddress` | address to listen on | `127.0.0.1` (see below) |
//! | `authToken` | a token every request but `GET /health` must carry as `Authorization: Bearer <token>`; secret | none |
//! | `tlsCertFile`, `tlsKeyFile` | PEM certificate chain and private key: serve HTTPS (rustls); read at start and again on SIGHUP | none (plain HTTP) |
//! | `maxConcurrentRequests` | requests handled at once; more get `429` | `1024` |
//! | `readTimeout` | seconds a client has to send a whole request; a slower body gets `408`, slower headers a closed connection | `30` |
//! | `partitionTemplate` | partitions from a template: strftime fields and `{field}` from the event (e.g. `{source}/%Y/%m/%d/`); replaces `timeInterval` | none |
//! | `partitionTime` | `processing` (the seed's: when the event arrived) or `event` (the event's `time`; a late event goes to its own partition) | `processing` |
//! | `objectNames` | `sequence` (`<instance>-<seq>`) or `uuid` | `sequence` |
//! | `shards` | batches built in parallel (one per worker thread) | the number of CPUs |
//! | `acl` | canned ACL on every object, e.g. `bucket-owner-full-control` | none |
//! | `serverSideEncryption` | `AES256` (SSE-S3) or `aws:kms` (SSE-KMS) | none |
//! | `sseKmsKeyId` | the KMS key for `aws:kms` | the bucket's default |
//! | `storageClass` | e.g. `STANDARD_IA` | the bucket's default |
//! | `tags` | object tags: a JSON object, or `k=v&k2=v2` (URL-encoded) | none |
//!
//! The last five need the `s3` store and the crate feature `aws-sdk`: with
//! any of them set, uploads go through the AWS SDK
//! ([`AwsSdkStore`](crate::sink::AwsSdkStore)) instead of `object_store`, which
//! cannot send them. Without the feature they are refused at start, naming
//! the key, rather than ignored.
//!
//! The default `bindAddress` is loopback: the seed's sink listened on every
//! interface with no authentication, so anyone who reached the port wrote
//! into the bucket. To expose it, set `bindAddress` (`0.0.0.0`) together
//! with `authToken`, and TLS unless a proxy in front terminates it.
//!
//! Values may be JSON strings (as the seed writes them, `"8080"`) or numbers.
//! Every key can be overridden by an environment variable of the same name
//! (`v_port=9090`). The configuration file is `--config FILE`, else
//! `$v_config_path`, else `/vance/config/config.json` when it exists; the
//! secret file `--secret FILE`, else `$v_secret_path`, else
//! `/vance/secret/secret.json` when it exists. Its keys `awsAccessKeyID` and
//! `awsSecretAccessKey` are base64, as in the seed, and can be overridden by
//! environment variables of the same names (also base64). Unknown keys and
//! bad values are errors naming the key; secrets never appear in messages,
//! logs or `Debug` output.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::core::config::Text;
use crate::core::{Granularity, TemplatePartitioner, TimePartitioner, TimeSource};
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::inputs::http::HttpOptions;
pub use crate::inputs::http::{Secret, DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_READ_TIMEOUT};
use crate::sink::{
    Compression, Encoding, KeyNaming, SinkBuilder, SpoolFsync, SpoolOptions, StoreConfig,
};

/// Default port (`v_port`).
pub const DEFAULT_PORT: u16 = 8080;
/// Default largest request body (`maxBodyBytes`), 10 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// Default spool directory (`spoolDir`).
pub const DEFAULT_SPOOL_DIR: &str = "./spool";
/// The seed's configuration file location.
pub const SEED_CONFIG_PATH: &str = "/vance/config/config.json";
/// The seed's secret file location.
pub const SEED_SECRET_PATH: &str = "/vance/secret/secret.json";

/// The keys `config.json` may hold.
pub const CONFIG_KEYS: &[&str] = &[
    "v_port",
    "region",
    "bucketName",
    "flushSize",
    "scheduledInterval",
    "timeInterval",
    "store",
    "localDir",
    "endpoint",
    "prefix",
    "encoding",
    "compression",
    "parquetSchema",
    "parquetCompression",
    "parquetRowGroupSize",
    "fsync",
    "spoolDir",
    "maxBodyBytes",
    "bindAddress",
    "authToken",
    "tlsCertFile",
    "tlsKeyFile",
    "maxConcurrentRequests",
    "readTimeout",
    "partitionTemplate",
    "partitionTime",
    "objectNames",
    "shards",
    "acl",
    "serverSideEncryption",
    "sseKmsKeyId",
    "storageClass",
    "tags",
];

/// A secret's text, for a store configuration.
fn expose(secret: &Option<Secret>) -> Option<String> {
    secret.as_ref().map(|s| s.expose().to_owned())
}

/// The keys that only the AWS SDK store can honour.
const SDK_KEYS: &[&str] = &[
    "acl",
    "serverSideEncryption",
    "sseKmsKeyId",
    "storageClass",
    "tags",
];

/// The keys `secret.json` may hold.
pub const SECRET_KEYS: &[&str] = &["awsAccessKeyID", "awsSecretAccessKey"];

/// A configuration error; the message names the key or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key is not known.
    #[error("{file}: unknown key `{key}` (known keys: {known})")]
    UnknownKey {
        /// `config.json` or `secret.json` (or the path given).
        file: String,
        /// The unknown key.
        key: String,
        /// The keys accepted there.
        known: String,
    },
    /// A value is malformed.
    #[error("`{key}`: {message}")]
    BadValue {
        /// The key.
        key: &'static str,
        /// What is wrong (never the value of a secret).
        message: String,
    },
    /// A file could not be read or is not a JSON object.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The store could not be built.
    #[error("store: {0}")]
    Store(#[from] crate::sink::Error),
}

fn bad(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::BadValue {
        key,
        message: message.into(),
    }
}

/// Which time places an event in a partition (`partitionTime`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PartitionTime {
    /// When the event arrived (the seed's behaviour).
    #[default]
    Processing,
    /// The event's own time (`time` of a CloudEvent, `eventTime` of an S3
    /// record); an event without one goes by processing time.
    Event,
}

/// The default `shards`: one per CPU the process may use.
pub fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Which store objects go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// A local directory (`localDir`).
    Local,
    /// S3 or an S3-compatible store (`bucketName`, `region`, `endpoint`).
    S3,
    /// Memory (tests; everything is lost on exit).
    Memory,
}

/// The server's configuration; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on (`bindAddress`).
    pub bind_address: IpAddr,
    /// Port (`v_port`); 0 picks a free one.
    pub port: u16,
    /// Region (`region`).
    pub region: Option<String>,
    /// Bucket (`bucketName`).
    pub bucket_name: Option<String>,
    /// Events per object (`flushSize`).
    pub flush_size: usize,
    /// Time from a batch's first event to its upload (`scheduledInterval`).
    pub scheduled_interval: Duration,
    /// Partition width (`timeInterval`).
    pub time_interval: Granularity,
    /// Store kind (`store`).
    pub store: StoreKind,
    /// Local store directory (`localDir`).
    pub local_dir: PathBuf,
    /// S3-compatible endpoint (`endpoint`).
    pub endpoint: Option<String>,
    /// Key prefix (`prefix`).
    pub prefix: String,
    /// Object layout (`encoding`).
    pub encoding: Encoding,
    /// Compression (`compression`).
    pub compression: Compression,
    /// Spool fsync policy (`fsync`).
    pub fsync: SpoolFsync,
    /// Spool directory (`spoolDir`).
    pub spool_dir: PathBuf,
    /// Largest request body (`maxBodyBytes`).
    pub max_body_bytes: usize,
    /// How the HTTP input is exposed (`authToken`, `tlsCertFile`,
    /// `tlsKeyFile`, `maxConcurrentRequests`, `readTimeout`).
    pub http: HttpOptions,
    /// A template partitioner (`partitionTemplate`) instead of the time
    /// partitions of `timeInterval`.
    pub partition_template: Option<String>,
    /// Which time places an event (`partitionTime`).
    pub partition_time: PartitionTime,
    /// How objects are named (`objectNames`).
    pub object_names: KeyNaming,
    /// Batches built in parallel (`shards`).
    pub shards: usize,
    /// Access key id (`awsAccessKeyID`, decoded).
    pub access_key_id: Option<Secret>,
    /// Secret access key (`awsSecretAccessKey`, decoded).
    pub secret_access_key: Option<Secret>,
    /// What every upload carries (`acl`, `serverSideEncryption`,
    /// `sseKmsKeyId`, `storageClass`, `tags`); set only with the `s3` store
    /// and the `aws-sdk` feature.
    pub upload: Upload,
}

/// Per-object options of the `s3` store that need the AWS SDK; the fields
/// mirror [`UploadOptions`](crate::sink::UploadOptions) (feature `aws-sdk`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Upload {
    /// `acl`.
    pub acl: Option<String>,
    /// `serverSideEncryption`.
    pub server_side_encryption: Option<String>,
    /// `sseKmsKeyId`.
    pub sse_kms_key_id: Option<String>,
    /// `storageClass`.
    pub storage_class: Option<String>,
    /// `tags`, in order.
    pub tags: Vec<(String, String)>,
}

impl Upload {
    /// Whether no option is set (plain `object_store` uploads).
    pub fn is_empty(&self) -> bool {
        *self == Upload::default()
    }

    #[cfg(feature = "aws-sdk")]
    fn options(&self) -> crate::sink::UploadOptions {
        crate::sink::UploadOptions {
            acl: self.acl.clone(),
            server_side_encryption: self.server_side_encryption.clone(),
            sse_kms_key_id: self.sse_kms_key_id.clone(),
            storage_class: self.storage_class.clone(),
            tags: self.tags.clone(),
        }
    }
}

/// `tags` as a JSON object of strings, or S3's `x-amz-tagging` form
/// (`k=v&k2=v2`, URL-encoded).
fn tags(v: &Value) -> Result<Vec<(String, String)>, ConfigError> {
    const KEY: &str = "tags";
    if let Value::Object(m) = v {
        return m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(bad(KEY, format!("tag `{k}`: expected a string value"))),
            })
            .collect();
    }
    let s = match v {
        Value::String(s) => s.clone(),
        _ => return Err(bad(KEY, "expected a JSON object or a string")),
    };
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(&part.replace('+', " "))
            .decode_utf8()
            .map(|d| d.into_owned())
            .map_err(|_| bad(KEY, format!("`{part}` is not URL-encoded UTF-8")))
    };
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind_address: IpAddr::from([127, 0, 0, 1]),
            port: DEFAULT_PORT,
            region: None,
            bucket_name: None,
            flush_size: crate::sink::DEFAULT_FLUSH_SIZE,
            scheduled_interval: crate::sink::DEFAULT_FLUSH_INTERVAL,
            time_interval: Granularity::Hourly,
            store: StoreKind::Local,
            local_dir: PathBuf::from(crate::sink::DEFAULT_DATA_DIR),
            endpoint: None,
            prefix: String::new(),
            encoding: Encoding::Ndjson,
            compression: Compression::gzip(),
            fsync: SpoolFsync::default(),
            spool_dir: PathBuf::from(DEFAULT_SPOOL_DIR),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            http: HttpOptions::default(),
            partition_template: None,
            partition_time: PartitionTime::Processing,
            object_names: KeyNaming::Sequence,
            shards: default_shards(),
            access_key_id: None,
            secret_access_key: None,
            upload: Upload::default(),
        }
    }
}

/// Where [`Config::load`] reads from.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// `--config FILE`.
    pub config_path: Option<PathBuf>,
    /// `--secret FILE`.
    pub secret_path: Option<PathBuf>,
}

fn read_object(path: &Path, what: &str) -> Result<Map<String, Value>, ConfigError> {
    let file_err = |message: String| ConfigError::File {
        path: path.display().to_string(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| file_err(format!("cannot read {what}: {e}")))?;
    parse_object(&bytes).map_err(file_err)
}

fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("expected a JSON object".into()),
        // serde_json's message holds line and column, never the text.
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

impl Config {
    /// Loads the configuration from the files in `sources` (or the seed's
    /// locations) and the process environment.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let env = |k: &str| std::env::var(k).ok();
        let config_path = sources
            .config_path
            .clone()
            .or_else(|| env("v_config_path").map(PathBuf::from))
            .or_else(|| Some(PathBuf::from(SEED_CONFIG_PATH)).filter(|p| p.exists()));
        let secret_path = sources
            .secret_path
            .clone()
            .or_else(|| env("v_secret_path").map(PathBuf::from))
            .or_else(|| Some(PathBuf::from(SEED_SECRET_PATH)).filter(|p| p.exists()));
        let config = match &config_path {
            Some(p) => Some((
                p.display().to_string(),
                read_object(p, "the configuration")?,
            )),
            None => None,
        };
        let secret = match &secret_path {
            Some(p) => Some((p.display().to_string(), read_object(p, "the secrets")?)),
            None => None,
        };
        Config::from_parts(config, secret, &env)
    }

    /// Builds the configuration from parsed `config.json` and `secret.json`
    /// objects (each with the name used in messages) and an environment.
    pub fn from_parts(
        config: Option<(String, Map<String, Value>)>,
        secret: Option<(String, Map<String, Value>)>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let (config_name, mut values) =
            config.unwrap_or_else(|| ("config.json".into(), Map::new()));
        check_keys(&config_name, &values, CONFIG_KEYS)?;
        let (secret_name, mut secrets) =
            secret.unwrap_or_else(|| ("secret.json".into(), Map::new()));
        check_keys(&secret_name, &secrets, SECRET_KEYS)?;
        overlay(&mut values, CONFIG_KEYS, env);
        overlay(&mut secrets, SECRET_KEYS, env);
        let file: ConfigFile = typed(values, CONFIG_KEYS)?;
        let secrets: SecretFile = typed(secrets, SECRET_KEYS)?;
        let mut c = Config::default();
        file.apply(&mut c)?;
        secrets.apply(&mut c)?;
        if c.store == StoreKind::S3 && c.bucket_name.is_none() {
            return Err(bad("bucketName", "required with `store` `s3`"));
        }
        match (&c.http.tls_cert_file, &c.http.tls_key_file) {
            (Some(_), None) => return Err(bad("tlsKeyFile", "required with `tlsCertFile`")),
            (None, Some(_)) => return Err(bad("tlsCertFile", "required with `tlsKeyFile`")),
            _ => {}
        }
        check_upload(&c)?;
        Ok(c)
    }

    /// The store configuration.
    pub fn store_config(&self) -> StoreConfig {
        match self.store {
            StoreKind::Local => StoreConfig::Local {
                dir: self.local_dir.clone(),
            },
            StoreKind::Memory => StoreConfig::Memory,
            StoreKind::S3 => {
                #[cfg(feature = "aws-sdk")]
                if !self.upload.is_empty() {
                    return self.sdk_store_config();
                }
                self.s3_store_config()
            }
        }
    }

    /// Whether the endpoint is plain `http://` (loopback test servers).
    fn plain_http(&self) -> bool {
        self.endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
    }

    #[cfg(feature = "aws-sdk")]
    fn sdk_store_config(&self) -> StoreConfig {
        StoreConfig::AwsSdk(crate::sink::AwsSdkConfig {
            bucket: self.bucket_name.clone().unwrap_or_default(),
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            access_key_id: expose(&self.access_key_id),
            secret_access_key: expose(&self.secret_access_key),
            session_token: None,
            allow_http: self.plain_http(),
            virtual_hosted_style: false,
            upload: self.upload.options(),
        })
    }

    fn s3_store_config(&self) -> StoreConfig {
        StoreConfig::S3(crate::sink::S3Config {
            bucket: self.bucket_name.clone().unwrap_or_default(),
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            access_key_id: expose(&self.access_key_id),
            secret_access_key: expose(&self.secret_access_key),
            session_token: None,
            allow_http: self.plain_http(),
            virtual_hosted_style: false,
        })
    }

    /// A [`SinkBuilder`] configured from this: store, prefix, partitioner,
    /// encoding, compression, flush size and interval, spool.
    pub fn sink_builder(&self) -> Result<SinkBuilder, ConfigError> {
        let store = self.store_config().build()?;
        let time_source = match self.partition_time {
            PartitionTime::Processing => TimeSource::Processing,
            PartitionTime::Event => TimeSource::Event {
                fallback_to_processing: true,
            },
        };
        let partitioner: Arc<dyn crate::core::Partitioner> = match &self.partition_template {
            Some(t) => Arc::new(
                TemplatePartitioner::builder(t.clone())
                    .with_time_source(time_source)
                    .build()
                    .map_err(|e| bad("partitionTemplate", e.to_string()))?,
            ),
            None => {
                Arc::new(TimePartitioner::new(self.time_interval).with_time_source(time_source))
            }
        };
        Ok(SinkBuilder::default()
            .with_store(store)
            .with_prefix(self.prefix.clone())
            .with_partitioner(partitioner)
            .with_key_naming(self.object_names)
            .with_shards(self.shards)
            .with_encoding(self.encoding)
            .with_compression(self.compression)
            .with_flush_size(self.flush_size)
            .with_flush_interval(self.scheduled_interval)
            .with_spool(SpoolOptions::new(&self.spool_dir).with_fsync(self.fsync)))
    }

    /// Where objects go, for people: `./data/` or `s3://bucket/prefix at endpoint`.
    pub fn describe_store(&self) -> String {
        match self.store {
            StoreKind::Local => {
                let mut d = self.local_dir.display().to_string();
                if !d.ends_with('/') {
                    d.push('/');
                }
                format!("{d}{}", self.prefix)
            }
            StoreKind::Memory => format!("memory (lost on exit) {}", self.prefix),
            StoreKind::S3 => {
                let bucket = self.bucket_name.as_deref().unwrap_or_default();
                let via = if self.upload.is_empty() {
                    ""
                } else {
                    " (AWS SDK)"
                };
                match &self.endpoint {
                    Some(e) => format!("s3://{bucket}/{} at {e}{via}", self.prefix),
                    None => format!("s3://{bucket}/{}{via}", self.prefix),
                }
            }
        }
    }

    /// The effective configuration under the seed's key names, with every
    /// secret (`awsAccessKeyID`, `awsSecretAccessKey`, `authToken`) shown as
    /// `<redacted>` when set (for `--check-config`).
    pub fn redacted(&self) -> Value {
        let secret = |s: &Option<Secret>| match s {
            Some(_) => Value::String("<redacted>".into()),
            None => Value::Null,
        };
        let mut v = serde_json::json!({
            "bindAddress": self.bind_address.to_string(),
            "v_port": self.port,
            "region": self.region,
            "bucketName": self.bucket_name,
            "store": match self.store {
                StoreKind::Local => "local",
                StoreKind::S3 => "s3",
                StoreKind::Memory => "memory",
            },
            "localDir": self.local_dir,
            "endpoint": self.endpoint,
            "prefix": self.prefix,
            "flushSize": self.flush_size,
            "scheduledInterval": self.scheduled_interval.as_secs(),
            "timeInterval": self.time_interval.to_string(),
            "partitionTemplate": self.partition_template,
            "partitionTime": match self.partition_time {
                PartitionTime::Processing => "processing",
                PartitionTime::Event => "event",
            },
            "objectNames": match self.object_names {
                KeyNaming::Uuid => "uuid",
                _ => "sequence",
            },
            "shards": self.shards,
            "encoding": self.encoding.to_string(),
            "compression": self.compression.to_string(),
            "fsync": format!("{:?}", self.fsync),
            "spoolDir": self.spool_dir,
            "maxBodyBytes": self.max_body_bytes,
            "authToken": secret(&self.http.auth_token),
            "tlsCertFile": self.http.tls_cert_file,
            "tlsKeyFile": self.http.tls_key_file,
            "maxConcurrentRequests": self.http.max_concurrent_requests,
            "readTimeout": self.http.read_timeout.as_secs(),
            "awsAccessKeyID": secret(&self.access_key_id),
            "awsSecretAccessKey": secret(&self.secret_access_key),
        });
        if !self.upload.is_empty() {
            v["acl"] = serde_json::json!(self.upload.acl);
            v["serverSideEncryption"] = serde_json::json!(self.upload.server_side_encryption);
            v["sseKmsKeyId"] = serde_json::json!(self.upload.sse_kms_key_id);
            v["storageClass"] = serde_json::json!(self.upload.storage_class);
            v["tags"] = serde_json::json!(self.upload.tags);
        }
        v
    }

    /// `gzip NDJSON`, `JSON array`, ...
    pub fn describe_format(&self) -> String {
        let enc = match self.encoding {
            Encoding::Ndjson => "NDJSON",
            Encoding::JsonArray => "JSON array",
            #[cfg(feature = "parquet")]
            Encoding::Parquet(o) => {
                return format!("Parquet ({} schema, {} pages)", o.schema, o.compression)
            }
            _ => "objects",
        };
        match self.compression {
            Compression::None => enc.to_owned(),
            c => format!("{c} {enc}"),
        }
    }
}

/// The SDK-only keys: refused unless the store is `s3` and the `aws-sdk`
/// feature is built in, and their values checked as the SDK store would.
fn check_upload(c: &Config) -> Result<(), ConfigError> {
    let Some(first) = SDK_KEYS.iter().copied().find(|k| match *k {
        "acl" => c.upload.acl.is_some(),
        "serverSideEncryption" => c.upload.server_side_encryption.is_some(),
        "sseKmsKeyId" => c.upload.sse_kms_key_id.is_some(),
        "storageClass" => c.upload.storage_class.is_some(),
        _ => !c.upload.tags.is_empty(),
    }) else {
        return Ok(());
    };
    if c.store != StoreKind::S3 {
        return Err(bad(first, "needs `store` `s3` (or `bucketName`)"));
    }
    check_upload_values(c, first)
}

#[cfg(not(feature = "aws-sdk"))]
fn check_upload_values(_: &Config, first: &'static str) -> Result<(), ConfigError> {
    Err(bad(
        first,
        "needs the crate feature `aws-sdk` (uploads through the AWS SDK)",
    ))
}

#[cfg(feature = "aws-sdk")]
fn check_upload_values(c: &Config, first: &'static str) -> Result<(), ConfigError> {
    c.upload.options().validate().map_err(|e| {
        let key = match &e {
            crate::sink::Error::InvalidConfig { what, .. } => match *what {
                "acl" => "acl",
                "server_side_encryption" => "serverSideEncryption",
                "sse_kms_key_id" => "sseKmsKeyId",
                "storage_class" => "storageClass",
                _ => "tags",
            },
            _ => first,
        };
        bad(key, e.to_string())
    })
}

/// `config.json` as written: every key the sink server reads, each value a
/// string or a number (as the seed writes them), parsed by
/// [`ConfigFile::apply`]. [`CONFIG_KEYS`] is this struct's key list.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConfigFile {
    #[serde(rename = "v_port")]
    v_port: Option<Text>,
    region: Option<Text>,
    bucket_name: Option<Text>,
    flush_size: Option<Text>,
    scheduled_interval: Option<Text>,
    time_interval: Option<Text>,
    store: Option<Text>,
    local_dir: Option<Text>,
    endpoint: Option<Text>,
    prefix: Option<Text>,
    encoding: Option<Text>,
    compression: Option<Text>,
    parquet_schema: Option<Text>,
    parquet_compression: Option<Text>,
    parquet_row_group_size: Option<Text>,
    fsync: Option<Text>,
    spool_dir: Option<Text>,
    max_body_bytes: Option<Text>,
    bind_address: Option<Text>,
    auth_token: Option<Text>,
    tls_cert_file: Option<Text>,
    tls_key_file: Option<Text>,
    max_concurrent_requests: Option<Text>,
    read_timeout: Option<Text>,
    partition_template: Option<Text>,
    partition_time: Option<Text>,
    object_names: Option<Text>,
    shards: Option<Text>,
    acl: Option<Text>,
    server_side_encryption: Option<Text>,
    sse_kms_key_id: Option<Text>,
    storage_class: Option<Text>,
    tags: Option<Value>,
}

/// `secret.json`: base64 text, as in the seed.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretFile {
    #[serde(rename = "awsAccessKeyID")]
    access_key_id: Option<Value>,
    #[serde(rename = "awsSecretAccessKey")]
    secret_access_key: Option<Value>,
}

/// Parses `key`'s value, if given, with `parse`; its error names the key.
fn field<T>(
    key: &'static str,
    v: Option<Text>,
    parse: impl FnOnce(String) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    v.map(|t| parse(t.0).map_err(|m| bad(key, m))).transpose()
}

fn positive(s: String) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{s}` is not a positive integer"))
}

fn path(s: String) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("empty path".into());
    }
    Ok(PathBuf::from(s))
}

fn one_of<T: Copy>(s: String, choices: &[(&str, T)], expected: &str) -> Result<T, String> {
    choices
        .iter()
        .find(|(name, _)| s.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("`{s}` is not {expected}"))
}

impl ConfigFile {
    fn apply(mut self, c: &mut Config) -> Result<(), ConfigError> {
        self.apply_http(c)?;
        if let Some(p) = field("v_port", self.v_port.take(), |s| {
            s.trim()
                .parse()
                .map_err(|_| format!("`{s}` is not a port number (0-65535)"))
        })? {
            c.port = p;
        }
        let nonempty = |s: String| Ok(Some(s).filter(|s| !s.is_empty()));
        c.region = field("region", self.region.take(), nonempty)?.flatten();
        c.bucket_name = field("bucketName", self.bucket_name.take(), nonempty)?.flatten();
        if let Some(n) = field("flushSize", self.flush_size.take(), positive)? {
            c.flush_size = n as usize;
        }
        if let Some(n) = field(
            "scheduledInterval",
            self.scheduled_interval.take(),
            positive,
        )? {
            c.scheduled_interval = Duration::from_secs(n);
        }
        if let Some(g) = field("timeInterval", self.time_interval.take(), |s| {
            s.parse()
                .map_err(|_| format!("`{s}` is not `HOURLY` or `DAILY`"))
        })? {
            c.time_interval = g;
        }
        let stores = [
            ("local", StoreKind::Local),
            ("s3", StoreKind::S3),
            ("memory", StoreKind::Memory),
        ];
        match field("store", self.store.take(), |s| {
            one_of(s, &stores, "`local`, `s3` or `memory`")
        })? {
            Some(k) => c.store = k,
            None if c.bucket_name.is_some() => c.store = StoreKind::S3,
            None => {}
        }
        if let Some(d) = field("localDir", self.local_dir.take(), path)? {
            c.local_dir = d;
        }
        c.endpoint = field("endpoint", self.endpoint.take(), |s| {
            if s.starts_with("http://") || s.starts_with("https://") {
                Ok(s)
            } else {
                Err(format!("`{s}` is not an http:// or https:// URL"))
            }
        })?;
        if let Some(p) = field("prefix", self.prefix.take(), |s| {
            if s.starts_with('/') || s.split('/').any(|seg| seg == "." || seg == "..") {
                Err(format!("`{s}` must be relative, without `.` or `..`"))
            } else {
                Ok(s)
            }
        })? {
            c.prefix = p;
        }
        self.apply_encoding(c)?;
        if let Some(d) = field("spoolDir", self.spool_dir.take(), path)? {
            c.spool_dir = d;
        }
        if let Some(n) = field("maxBodyBytes", self.max_body_bytes.take(), positive)? {
            c.max_body_bytes = n as usize;
        }
        if let Some(a) = field("bindAddress", self.bind_address.take(), |s| {
            s.trim()
                .parse()
                .map_err(|_| format!("`{s}` is not an IP address"))
        })? {
            c.bind_address = a;
        }
        self.apply_layout(c)
    }

    /// `encoding`, `compression`, the Parquet keys, `fsync`.
    fn apply_encoding(&mut self, c: &mut Config) -> Result<(), ConfigError> {
        let parsed = |s: String| s.parse().map_err(|e: crate::sink::Error| e.to_string());
        if let Some(e) = field("encoding", self.encoding.take(), parsed)? {
            c.encoding = e;
        }
        let compression = field("compression", self.compression.take(), |s| {
            s.parse().map_err(|e: crate::sink::Error| e.to_string())
        })?;
        if let Some(v) = compression {
            c.compression = v;
        }
        self.apply_parquet(c, compression.is_some())?;
        if let Some(f) = field("fsync", self.fsync.take(), |s| {
            s.parse().map_err(|e: crate::sink::Error| e.to_string())
        })? {
            c.fsync = f;
        }
        Ok(())
    }

    /// `parquetSchema`, `parquetCompression`, `parquetRowGroupSize`; with
    /// `encoding: parquet`, `compression` must be `none` (`compression_set`:
    /// whether the file set it).
    #[cfg(feature = "parquet")]
    fn apply_parquet(&mut self, c: &mut Config, compression_set: bool) -> Result<(), ConfigError> {
        use crate::sink::{ParquetOptions, ParquetSchema};
        let keys = [
            ("parquetSchema", self.parquet_schema.take()),
            ("parquetCompression", self.parquet_compression.take()),
            ("parquetRowGroupSize", self.parquet_row_group_size.take()),
        ];
        let Encoding::Parquet(mut opts) = c.encoding else {
            if let Some((key, _)) = keys.iter().find(|(_, v)| v.is_some()) {
                return Err(bad(key, "only with `encoding: parquet`".to_owned()));
            }
            return Ok(());
        };
        if opts == ParquetOptions::default() {
            // This server receives CloudEvents.
            opts.schema = ParquetSchema::CloudEvents;
        }
        let [(_, schema), (_, page), (_, rows)] = keys;
        let parsed = |s: String| s.parse().map_err(|e: crate::sink::Error| e.to_string());
        if let Some(v) = field("parquetSchema", schema, parsed)? {
            opts.schema = v;
        }
        let parsed = |s: String| s.parse().map_err(|e: crate::sink::Error| e.to_string());
        if let Some(v) = field("parquetCompression", page, parsed)? {
            opts.compression = v;
        }
        if let Some(n) = field("parquetRowGroupSize", rows, positive)? {
            opts.row_group_size = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if compression_set && c.compression != Compression::None {
            return Err(bad(
                "compression",
                format!(
                    "`{}` cannot compress Parquet objects: their pages are compressed (`parquetCompression`); use `none` or leave it out",
                    c.compression
                ),
            ));
        }
        c.compression = Compression::None;
        c.encoding = Encoding::Parquet(opts);
        Ok(())
    }

    #[cfg(not(feature = "parquet"))]
    fn apply_parquet(
        &mut self,
        _c: &mut Config,
        _compression_set: bool,
    ) -> Result<(), ConfigError> {
        for (key, v) in [
            ("parquetSchema", self.parquet_schema.take()),
            ("parquetCompression", self.parquet_compression.take()),
            ("parquetRowGroupSize", self.parquet_row_group_size.take()),
        ] {
            if v.is_some() {
                return Err(bad(key, "needs the crate feature `parquet`".to_owned()));
            }
        }
        Ok(())
    }

    /// `authToken`, TLS files, `maxConcurrentRequests`, `readTimeout`.
    fn apply_http(&mut self, c: &mut Config) -> Result<(), ConfigError> {
        c.http.auth_token = field("authToken", self.auth_token.take(), |s| {
            if s.is_empty() || s.trim() != s || s.chars().any(|c| c.is_control()) {
                Err("must be non-empty printable text without surrounding spaces".into())
            } else {
                Ok(Secret::new(s))
            }
        })?;
        let file = |s: String| Ok(Some(PathBuf::from(s)).filter(|p| !p.as_os_str().is_empty()));
        c.http.tls_cert_file = field("tlsCertFile", self.tls_cert_file.take(), file)?.flatten();
        c.http.tls_key_file = field("tlsKeyFile", self.tls_key_file.take(), file)?.flatten();
        if let Some(n) = field(
            "maxConcurrentRequests",
            self.max_concurrent_requests.take(),
            positive,
        )? {
            c.http.max_concurrent_requests = n as usize;
        }
        if let Some(n) = field("readTimeout", self.read_timeout.take(), positive)? {
            c.http.read_timeout = Duration::from_secs(n);
        }
        Ok(())
    }

    /// Partitions, object names, shards and the AWS SDK upload options.
    fn apply_layout(&mut self, c: &mut Config) -> Result<(), ConfigError> {
        c.partition_template = field("partitionTemplate", self.partition_template.take(), |s| {
            crate::core::TemplatePartitioner::new(s.clone())
                .map(|_| s)
                .map_err(|e| e.to_string())
        })?;
        let times = [
            ("processing", PartitionTime::Processing),
            ("event", PartitionTime::Event),
        ];
        if let Some(t) = field("partitionTime", self.partition_time.take(), |s| {
            one_of(s, &times, "`processing` or `event`")
        })? {
            c.partition_time = t;
        }
        let names = [("sequence", KeyNaming::Sequence), ("uuid", KeyNaming::Uuid)];
        if let Some(n) = field("objectNames", self.object_names.take(), |s| {
            one_of(s, &names, "`sequence` or `uuid`")
        })? {
            c.object_names = n;
        }
        if let Some(n) = field("shards", self.shards.take(), |s| {
            let n = positive(s.clone())?;
            if n > 256 {
                return Err(format!("`{s}` is more than 256"));
            }
            Ok(n as usize)
        })? {
            c.shards = n;
        }
        let text = |s: String| Ok(s);
        c.upload.acl = field("acl", self.acl.take(), text)?;
        c.upload.server_side_encryption = field(
            "serverSideEncryption",
            self.server_side_encryption.take(),
            text,
        )?;
        c.upload.sse_kms_key_id = field("sseKmsKeyId", self.sse_kms_key_id.take(), text)?;
        c.upload.storage_class = field("storageClass", self.storage_class.take(), text)?;
        if let Some(v) = &self.tags.take() {
            c.upload.tags = tags(v)?;
        }
        Ok(())
    }
}

impl SecretFile {
    fn apply(self, c: &mut Config) -> Result<(), ConfigError> {
        c.access_key_id = decode_secret("awsAccessKeyID", self.access_key_id)?;
        c.secret_access_key = decode_secret("awsSecretAccessKey", self.secret_access_key)?;
        Ok(())
    }
}

fn decode_secret(key: &'static str, v: Option<Value>) -> Result<Option<Secret>, ConfigError> {
    let Some(v) = v else { return Ok(None) };
    let Value::String(b64) = v else {
        return Err(bad(key, "expected a base64 string"));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| bad(key, "not valid base64"))?;
    let decoded =
        String::from_utf8(decoded).map_err(|_| bad(key, "the decoded value is not UTF-8"))?;
    Ok(Some(Secret::new(decoded)))
}

/// Sets every key in `keys` that the environment has to its value there.
fn overlay(values: &mut Map<String, Value>, keys: &[&str], env: &dyn Fn(&str) -> Option<String>) {
    for key in keys {
        if let Some(v) = env(key) {
            values.insert((*key).to_owned(), Value::String(v));
        }
    }
}

/// `values` as `T`; a value of the wrong type is an error naming its key.
fn typed<T: serde::de::DeserializeOwned>(
    values: Map<String, Value>,
    keys: &'static [&'static str],
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(Value::Object(values)).map_err(|e| {
        let path = e.path().to_string();
        let key = keys
            .iter()
            .copied()
            .find(|k| *k == path)
            .unwrap_or("config");
        // Never the value itself (it may be a secret): serde's message says
        // what was expected.
        bad(key, e.into_inner().to_string())
    })
}

fn check_keys(file: &str, m: &Map<String, Value>, known: &[&str]) -> Result<(), ConfigError> {
    for key in m.keys() {
        if !known.contains(&key.as_str()) {
            return Err(ConfigError::UnknownKey {
                file: file.to_owned(),
                key: key.clone(),
                known: known.join(", "),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The key lists are the configuration structs' own fields.
    #[test]
    fn key_lists_are_the_structs_fields() {
        fn sorted<'a>(k: &[&'a str]) -> Vec<&'a str> {
            let mut v = k.to_vec();
            v.sort_unstable();
            v
        }
        let fields = crate::core::config::field_names::<ConfigFile>();
        assert_eq!(sorted(fields), sorted(CONFIG_KEYS));
        let fields = crate::core::config::field_names::<SecretFile>();
        assert_eq!(sorted(fields), sorted(SECRET_KEYS));
    }

    fn obj(v: Value) -> Option<(String, Map<String, Value>)> {
        match v {
            Value::Object(m) => Some(("config.json".into(), m)),
            _ => None,
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_without_configuration() {
        let c = Config::from_parts(None, None, &no_env).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.store, StoreKind::Local);
        assert_eq!(c.local_dir, PathBuf::from("./data"));
        assert_eq!(c.flush_size, 1000);
        assert_eq!(c.scheduled_interval, Duration::from_secs(60));
        assert_eq!(c.time_interval, Granularity::Hourly);
        assert_eq!(c.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(c.describe_store(), "./data/");
        assert_eq!(c.describe_format(), "gzip NDJSON");
    }

    #[test]
    fn the_seed_config_and_secret_are_accepted() {
        let config = obj(json!({
            "v_port": "8080",
            "region": "us-west-2",
            "bucketName": "aws-s3-notify",
            "flushSize": "1000",
            "scheduledInterval": "60",
            "timeInterval": "HOURLY"
        }));
        let secret = Some((
            "secret.json".to_owned(),
            json!({"awsAccessKeyID": "TVlfU0VDUkVU", "awsSecretAccessKey": "U2VjcmV0QWNjZXNzS2V5"})
                .as_object()
                .unwrap()
                .clone(),
        ));
        let c = Config::from_parts(config, secret, &no_env).unwrap();
        assert_eq!(c.store, StoreKind::S3);
        assert_eq!(c.bucket_name.as_deref(), Some("aws-s3-notify"));
        assert_eq!(c.region.as_deref(), Some("us-west-2"));
        assert_eq!(c.access_key_id.as_ref().unwrap().expose(), "MY_SECRET");
        assert_eq!(
            c.secret_access_key.as_ref().unwrap().expose(),
            "SecretAccessKey"
        );
        let debug = format!("{c:?} {:?}", c.store_config());
        assert!(!debug.contains("SecretAccessKey"), "{debug}");
        assert!(!debug.contains("U2VjcmV0QWNjZXNzS2V5"), "{debug}");
        assert_eq!(c.describe_store(), "s3://aws-s3-notify/");
    }

    #[test]
    fn exposure_and_layout_keys_are_read() {
        let c = Config::from_parts(
            obj(json!({
                "authToken": "s3cr3t-token",
                "tlsCertFile": "/etc/s3e/cert.pem",
                "tlsKeyFile": "/etc/s3e/key.pem",
                "maxConcurrentRequests": "8",
                "readTimeout": 5,
                "partitionTemplate": "{source}/%Y/%m/%d/",
                "partitionTime": "event",
                "objectNames": "uuid",
                "shards": "3",
            })),
            None,
            &no_env,
        )
        .unwrap();
        assert_eq!(c.http.auth_token.as_ref().unwrap().expose(), "s3cr3t-token");
        assert_eq!(c.http.max_concurrent_requests, 8);
        assert_eq!(c.http.read_timeout, Duration::from_secs(5));
        assert!(c.http.tls());
        assert_eq!(c.partition_template.as_deref(), Some("{source}/%Y/%m/%d/"));
        assert_eq!(c.partition_time, PartitionTime::Event);
        assert_eq!(c.object_names, KeyNaming::Uuid);
        assert_eq!(c.shards, 3);
        assert!(!format!("{c:?}").contains("s3cr3t-token"));
        let d = Config::from_parts(None, None, &no_env).unwrap();
        assert_eq!(d.shards, default_shards());
        assert_eq!(d.bind_address, IpAddr::from([127, 0, 0, 1]));
        assert!(d.http.auth_token.is_none() && !d.http.tls());
    }

    #[test]
    fn numbers_are_accepted_as_well_as_strings() {
        let c = Config::from_parts(
            obj(json!({"v_port": 9000, "flushSize": 5, "timeInterval": "daily"})),
            None,
            &no_env,
        )
        .unwrap();
        assert_eq!((c.port, c.flush_size), (9000, 5));
        assert_eq!(c.time_interval, Granularity::Daily);
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = |k: &str| match k {
            "v_port" => Some("9191".to_owned()),
            "store" => Some("memory".to_owned()),
            "awsSecretAccessKey" => Some("c2VjcmV0".to_owned()),
            _ => None,
        };
        let c = Config::from_parts(obj(json!({"v_port": "8080"})), None, &env).unwrap();
        assert_eq!(c.port, 9191);
        assert_eq!(c.store, StoreKind::Memory);
        assert_eq!(c.secret_access_key.unwrap().expose(), "secret");
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (json!({"vport": "8080"}), "vport"),
            (json!({"v_port": "eighty"}), "v_port"),
            (json!({"v_port": "70000"}), "v_port"),
            (json!({"flushSize": "0"}), "flushSize"),
            (json!({"flushSize": "-3"}), "flushSize"),
            (json!({"scheduledInterval": "soon"}), "scheduledInterval"),
            (json!({"timeInterval": "WEEKLY"}), "timeInterval"),
            (json!({"store": "ftp"}), "store"),
            (json!({"store": "s3"}), "bucketName"),
            (json!({"endpoint": "127.0.0.1:9000"}), "endpoint"),
            (json!({"prefix": "/abs"}), "prefix"),
            (json!({"encoding": "xml"}), "encoding"),
            (json!({"compression": "brotli"}), "compression"),
            (json!({"fsync": "sometimes"}), "fsync"),
            (json!({"maxBodyBytes": "lots"}), "maxBodyBytes"),
            (json!({"region": ["a"]}), "region"),
            (json!({"bindAddress": "localhost"}), "bindAddress"),
            (json!({"authToken": ""}), "authToken"),
            (json!({"authToken": " padded "}), "authToken"),
            (json!({"tlsCertFile": "/c.pem"}), "tlsKeyFile"),
            (json!({"tlsKeyFile": "/k.pem"}), "tlsCertFile"),
            (
                json!({"maxConcurrentRequests": "0"}),
                "maxConcurrentRequests",
            ),
            (json!({"readTimeout": "soon"}), "readTimeout"),
            (
                json!({"partitionTemplate": "{unclosed/%Y"}),
                "partitionTemplate",
            ),
            (json!({"partitionTime": "later"}), "partitionTime"),
            (json!({"objectNames": "random"}), "objectNames"),
            (json!({"shards": "0"}), "shards"),
            (json!({"shards": "1000"}), "shards"),
        ];
        for (config, key) in cases {
            let e = Config::from_parts(obj(config.clone()), None, &no_env)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("`{key}`")), "{config}: {e}");
        }
    }

    #[cfg(feature = "parquet")]
    #[test]
    fn parquet_encoding_and_its_keys() {
        use crate::sink::{PageCompression, ParquetOptions, ParquetSchema};
        let c = Config::from_parts(obj(json!({"encoding": "parquet"})), None, &no_env).unwrap();
        // CloudEvents by default (what the server receives), never gzip on top.
        let want = ParquetOptions::default().with_schema(ParquetSchema::CloudEvents);
        assert_eq!(c.encoding, Encoding::Parquet(want));
        assert_eq!(c.compression, Compression::None);
        assert_eq!(
            c.describe_format(),
            "Parquet (cloudevents schema, zstd(3) pages)"
        );
        let c = Config::from_parts(
            obj(
                json!({"encoding": "parquet", "compression": "none", "parquetSchema": "s3",
                       "parquetCompression": "snappy", "parquetRowGroupSize": 5000}),
            ),
            None,
            &no_env,
        )
        .unwrap();
        let want = ParquetOptions::default()
            .with_schema(ParquetSchema::S3Records)
            .with_compression(PageCompression::Snappy)
            .with_row_group_size(5000);
        assert_eq!(c.encoding, Encoding::Parquet(want));
        c.sink_builder().unwrap();
        let c = Config::from_parts(
            obj(json!({"encoding": "parquet", "parquetSchema": "s3-compact"})),
            None,
            &no_env,
        )
        .unwrap();
        let want = ParquetOptions::default().with_schema(ParquetSchema::S3Compact);
        assert_eq!(c.encoding, Encoding::Parquet(want));
        assert_eq!(
            c.describe_format(),
            "Parquet (s3-compact schema, zstd(3) pages)"
        );
        for (config, key) in [
            (
                json!({"encoding": "parquet", "compression": "gzip"}),
                "compression",
            ),
            (
                json!({"encoding": "parquet", "parquetSchema": "avro"}),
                "parquetSchema",
            ),
            (
                json!({"encoding": "parquet", "parquetCompression": "lz4"}),
                "parquetCompression",
            ),
            (
                json!({"encoding": "parquet", "parquetRowGroupSize": "0"}),
                "parquetRowGroupSize",
            ),
            (json!({"parquetSchema": "s3"}), "parquetSchema"),
        ] {
            let e = Config::from_parts(obj(config.clone()), None, &no_env)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("`{key}`")), "{config}: {e}");
        }
    }

    #[test]
    fn upload_options_are_read_in_both_tag_forms() {
        let base = json!({
            "bucketName": "b",
            "acl": "bucket-owner-full-control",
            "serverSideEncryption": "aws:kms",
            "sseKmsKeyId": "alias/meters",
            "storageClass": "STANDARD_IA",
        });
        let with = |tags: Value| {
            let mut v = base.clone();
            v["tags"] = tags;
            Config::from_parts(obj(v), None, &no_env)
        };
        let expected = vec![
            ("team".to_owned(), "billing ops".to_owned()),
            ("env".to_owned(), "prod".to_owned()),
        ];
        let query = with(json!("team=billing%20ops&env=prod"));
        let object = with(json!({"team": "billing ops", "env": "prod"}));
        #[cfg(feature = "aws-sdk")]
        {
            let c = query.unwrap();
            assert_eq!(c.upload.tags, expected);
            assert_eq!(c.upload.acl.as_deref(), Some("bucket-owner-full-control"));
            assert_eq!(c.upload.storage_class.as_deref(), Some("STANDARD_IA"));
            // A JSON object's keys come in sorted order.
            let mut sorted = c.upload.clone();
            sorted.tags.sort();
            assert_eq!(object.unwrap().upload, sorted);
            assert_eq!(c.describe_store(), "s3://b/ (AWS SDK)");
        }
        #[cfg(not(feature = "aws-sdk"))]
        for r in [query, object] {
            let e = r.unwrap_err().to_string();
            assert!(e.contains("`acl`") && e.contains("aws-sdk"), "{e}");
            let _ = &expected;
        }
    }

    #[cfg(feature = "aws-sdk")]
    #[test]
    fn upload_options_select_the_sdk_store_with_the_credentials() {
        let config = obj(json!({
            "bucketName": "meters",
            "endpoint": "http://127.0.0.1:18333",
            "region": "eu-west-1",
            "acl": "bucket-owner-full-control",
        }));
        let secret = Some((
            "secret.json".to_owned(),
            json!({"awsAccessKeyID": "TVlfU0VDUkVU", "awsSecretAccessKey": "U2VjcmV0QWNjZXNzS2V5"})
                .as_object()
                .unwrap()
                .clone(),
        ));
        let c = Config::from_parts(config, secret, &no_env).unwrap();
        let StoreConfig::AwsSdk(sdk) = c.store_config() else {
            panic!("expected the AWS SDK store: {:?}", c.store_config());
        };
        assert_eq!(sdk.bucket, "meters");
        assert_eq!(sdk.region.as_deref(), Some("eu-west-1"));
        assert!(sdk.allow_http);
        assert_eq!(sdk.access_key_id.as_deref(), Some("MY_SECRET"));
        assert_eq!(sdk.secret_access_key.as_deref(), Some("SecretAccessKey"));
        assert_eq!(sdk.upload.acl.as_deref(), Some("bucket-owner-full-control"));
        let debug = format!("{c:?} {sdk:?}");
        assert!(!debug.contains("SecretAccessKey"), "{debug}");
        // The store is built without contacting anything.
        c.sink_builder().unwrap();
        // Without the options, the plain S3 store stays in use.
        let plain =
            Config::from_parts(obj(json!({"bucketName": "meters"})), None, &no_env).unwrap();
        assert!(matches!(plain.store_config(), StoreConfig::S3(_)));
    }

    #[test]
    fn upload_option_errors_name_the_key() {
        let mut cases = vec![
            (json!({"acl": "private"}), "acl"),
            (json!({"store": "local", "tags": "a=1"}), "tags"),
            (json!({"bucketName": "b", "tags": {"a": 1}}), "tags"),
            (json!({"bucketName": "b", "tags": "a=%ff"}), "tags"),
        ];
        if cfg!(feature = "aws-sdk") {
            cases.extend([
                (json!({"bucketName": "b", "acl": "everyone"}), "acl"),
                (
                    json!({"bucketName": "b", "serverSideEncryption": "rot13"}),
                    "serverSideEncryption",
                ),
                (
                    json!({"bucketName": "b", "sseKmsKeyId": "k"}),
                    "sseKmsKeyId",
                ),
                (
                    json!({"bucketName": "b", "storageClass": "COLD"}),
                    "storageClass",
                ),
                (json!({"bucketName": "b", "tags": "=v"}), "tags"),
            ]);
        }
        for (config, key) in cases {
            let e = Config::from_parts(obj(config.clone()), None, &no_env)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("`{key}`")), "{config}: {e}");
        }
    }

    #[test]
    fn secret_errors_name_the_key_and_hide_the_value() {
        let secret = |v: Value| Some(("secret.json".to_owned(), v.as_object().unwrap().clone()));
        let e = Config::from_parts(
            None,
            secret(json!({"awsSecretAccessKey": "not base64 hunter2!"})),
            &no_env,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("awsSecretAccessKey") && !e.contains("hunter2"),
            "{e}"
        );
        let e = Config::from_parts(None, secret(json!({"password": "x"})), &no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("secret.json") && e.contains("`password`"), "{e}");
    }

    #[test]
    fn load_reads_the_files_given() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(&config, r#"{"v_port": "8181", "store": "memory"}"#).unwrap();
        let secret = dir.path().join("secret.json");
        std::fs::write(&secret, r#"{"awsAccessKeyID": "TVlfU0VDUkVU"}"#).unwrap();
        let c = Config::load(&Sources {
            config_path: Some(config.clone()),
            secret_path: Some(secret),
        })
        .unwrap();
        assert_eq!(c.port, 8181);
        assert_eq!(c.access_key_id.unwrap().expose(), "MY_SECRET");
        std::fs::write(&config, "{not json").unwrap();
        let e = Config::load(&Sources {
            config_path: Some(config.clone()),
            secret_path: None,
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("config.json") && e.contains("not JSON"), "{e}");
    }
}
