//! The notification relay (feature `relay`): receives S3 notifications
//! (MinIO/AIStor webhooks, AWS SNS, SQS bodies) and/or polls a bucket, and
//! routes every record through the [`Notifier`] to the configured targets.
//! `s3-event relay` is this module behind a command line; a service embeds
//! it with the same configuration file:
//!
//! ```no_run
//! use s3_event::relay::{Relay, RelayConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = RelayConfig::from_json(&std::fs::read_to_string("relay.json")?)?;
//! let relay = Relay::start(config).await?;
//! relay.run(s3_event::inputs::http::shutdown_signal()).await?;
//! # Ok(()) }
//! ```
//!
//! # Configuration
//!
//! JSON, every key optional; unknown keys and bad values are errors naming
//! the key.
//!
//! ```json
//! {
//!   "listen": "127.0.0.1:8090",
//!   "region": "us-east-1",
//!   "targets": {"redis": {"1": {"address": "127.0.0.1:6379", "key": "bucketevents",
//!                               "format": "access", "queue_dir": "/var/lib/relay/redis-1",
//!                               "senders": 4}}},
//!   "rules": "<NotificationConfiguration>…</NotificationConfiguration>",
//!   "delivery": "async",
//!   "receiver": {"enable": true, "auth_token": "s3cr3t", "max_body_bytes": 8388608,
//!                "sns": {"verify_signatures": true, "confirm_subscriptions": false,
//!                        "topic_arns": [], "certificate_file": null,
//!                        "max_age_secs": 3600, "verify_sqs_wrapped": true}},
//!   "http": {"tls_cert_file": "/etc/relay/cert.pem", "tls_key_file": "/etc/relay/key.pem",
//!            "max_concurrent_requests": 1024, "read_timeout_secs": 30},
//!   "poller": {"store": {"store": "local", "dir": "/srv/bucket"}, "bucket": "photos",
//!              "prefix": "uploads", "interval_secs": 30,
//!              "cursor_file": "/var/lib/relay/poller.cursor"},
//!   "directory": {"dir": "./relay-data", "queue_dir": "./relay-data/queue"},
//!   "shutdown_timeout_secs": 10
//! }
//! ```
//!
//! - `listen`: the HTTP address (`POST /` receives, `GET /health`,
//!   `GET /metrics`: the one router of [`Routes`]); default
//!   `127.0.0.1:8090`, `null` for no HTTP at all (a poller-only relay). Loopback by default: a notification endpoint
//!   reachable from elsewhere should have `receiver.auth_token` and TLS.
//! - `region`: the region of the targets' ARNs
//!   (`arn:minio:sqs:<region>:<id>:<type>`; default `us-east-1`).
//! - `targets`: MinIO's notification configuration, as
//!   [`NotifyConfig::from_json`](crate::targets::NotifyConfig::from_json)
//!   reads it: `{"<type>": {"<id>": {…}}}`, the same wrapped in
//!   `{"notify": …}`, a whole MinIO server `config.json`, or the text of
//!   `mc admin config get <alias> notify_<type>`. `MINIO_NOTIFY_*` /
//!   `S3E_NOTIFY_*` environment variables are overlaid, as in MinIO. Each
//!   target also takes `senders` (1 to 50000, default 1; at most 64
//!   durable lanes with `queue_dir`): concurrent sends, spread by object
//!   key so one object's events stay in order.
//! - `directory`: the built-in output, a
//!   [`SinkTargetConfig`] (gzip NDJSON
//!   objects; ARN `arn:minio:sqs:<region>:<id>:directory`).
//! - `rules`: a `NotificationConfiguration` as AWS XML or JSON, inline (a
//!   string starting with `<` or `{`, or a JSON object) or in a file (any
//!   other string: its path). Without `rules`, every event goes to every
//!   target.
//! - `delivery`: `async` (default) or `sync`. `MINIO_API_SYNC_EVENTS=on`
//!   in the environment (MinIO's `api.sync_events`) also selects `sync`.
//! - `receiver`: `enable` (default true) and the keys of
//!   [`ReceiverConfig`].
//! - `http`: TLS and limits of the HTTP server, the keys of
//!   [`HttpOptions`] (its `auth_token`
//!   guards every route but `/health`, SNS deliveries included, which cannot
//!   send one: for MinIO webhooks use `receiver.auth_token`).
//! - `poller`: `store` (a [`StoreConfig`]) and
//!   the keys of [`PollerConfig`].
//! - `sqs` (feature `sqs-source`): an SQS queue that S3 notifications
//!   reach (S3 → SQS, S3 → SNS → SQS, EventBridge → SQS), long-polled; the
//!   keys of [`SqsSourceConfig`]
//!   (`queue_url`, `aws`, `wait_time_secs`, `max_messages`, `receivers`,
//!   `visibility_timeout_secs`, `sns`). A message is deleted once every
//!   record it carried is queued (as a `200` answers a POST); one that is
//!   not a notification is left for the queue's redrive policy.
//!
//! # When the HTTP answer comes
//!
//! A POST is answered 200 only after every record it carried was handed to
//! `Notifier::send` and that call returned: in `async` mode once queued for
//! every matching target (with `queue_dir`, appended and fsynced, so it
//! survives `kill -9`), in `sync` mode once every matching target confirmed
//! it. A full queue (`queue_limit`) answers 503 so that the sender retries.
//! Records with an unparsable event name or key are counted and skipped.
//!
//! # Shutdown
//!
//! [`Relay::run`] stops accepting once its shutdown future completes, stops
//! the poller, lets the targets drain for `shutdown_timeout_secs` (what is
//! left stays in `queue_dir`) and closes them.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::core::{
    EventMask, EventRecord, NotificationConfiguration, NotificationRule, RuleSet, Target,
};
use crate::inputs::handler::{HandlerError, RecordsHandler};
use crate::inputs::http::{prometheus, serve, tls_config, HttpOptions, Routes};
use crate::inputs::poller::{Poller, PollerConfig};
use crate::inputs::receiver::{Receiver, ReceiverConfig};
#[cfg(feature = "sqs-source")]
use crate::inputs::sqs::{SqsSource, SqsSourceConfig};
use crate::sink::{SinkTarget, SinkTargetConfig, StoreConfig};
use crate::targets::notifier::{DeliveryMode, Notifier, TargetOptions};
use crate::targets::NotifyConfig;

/// The relay's configuration; see the [module docs](self).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// The HTTP address; `None` serves no HTTP.
    #[serde(default = "default_listen")]
    pub listen: Option<SocketAddr>,
    /// The region of the targets' ARNs.
    #[serde(default = "default_region")]
    pub region: String,
    /// MinIO's notification configuration (see the module docs).
    #[serde(default)]
    pub targets: Option<Value>,
    /// The built-in output.
    #[serde(default)]
    pub directory: Option<SinkTargetConfig>,
    /// The rules; `None` sends every event to every target.
    #[serde(default)]
    pub rules: Option<Value>,
    /// `async` or `sync`.
    #[serde(default)]
    pub delivery: Delivery,
    /// The receiver.
    #[serde(default)]
    pub receiver: ReceiverSection,
    /// TLS and limits of the HTTP server.
    #[serde(default)]
    pub http: HttpOptions,
    /// The bucket poller.
    #[serde(default)]
    pub poller: Option<PollerSection>,
    /// The SQS source (feature `sqs-source`).
    #[cfg(feature = "sqs-source")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqs-source")))]
    #[serde(default)]
    pub sqs: Option<SqsSourceConfig>,
    /// How long the targets may drain at shutdown.
    #[serde(default = "default_shutdown_secs")]
    pub shutdown_timeout_secs: u64,
}

fn default_listen() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 8090)))
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_shutdown_secs() -> u64 {
    10
}

/// `delivery`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// `send` returns once queued.
    #[default]
    Async,
    /// `send` returns once every matching target confirmed.
    Sync,
}

/// `receiver`: `enable` plus a [`ReceiverConfig`].
#[derive(Clone, Debug)]
pub struct ReceiverSection {
    /// Serve the receiver on `POST /` (default true).
    pub enable: bool,
    /// The receiver's settings.
    pub config: ReceiverConfig,
}

impl Default for ReceiverSection {
    fn default() -> Self {
        ReceiverSection {
            enable: true,
            config: ReceiverConfig::default(),
        }
    }
}

/// `poller`: `store` plus a [`PollerConfig`].
#[derive(Clone, Debug)]
pub struct PollerSection {
    /// Where the bucket is.
    pub store: StoreConfig,
    /// The poller's settings.
    pub config: PollerConfig,
}

/// Takes `key` out of a JSON object and deserializes the rest as `T`.
fn split<'de, D, K, T>(d: D, key: &str) -> Result<(Option<K>, T), D::Error>
where
    D: Deserializer<'de>,
    K: DeserializeOwned,
    T: DeserializeOwned,
{
    let mut map = Map::<String, Value>::deserialize(d)?;
    let k = match map.remove(key) {
        Some(v) => {
            Some(serde_json::from_value(v).map_err(|e| D::Error::custom(format!("`{key}`: {e}")))?)
        }
        None => None,
    };
    let rest = serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
        let at = e.path().to_string();
        if at == "." {
            D::Error::custom(e.into_inner())
        } else {
            D::Error::custom(format!("`{at}`: {}", e.into_inner()))
        }
    })?;
    Ok((k, rest))
}

impl<'de> Deserialize<'de> for ReceiverSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (enable, config) = split::<D, bool, ReceiverConfig>(d, "enable")?;
        Ok(ReceiverSection {
            enable: enable.unwrap_or(true),
            config,
        })
    }
}

impl<'de> Deserialize<'de> for PollerSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (store, config) = split::<D, StoreConfig, PollerConfig>(d, "store")?;
        let store = store.ok_or_else(|| D::Error::custom("`store` is required"))?;
        Ok(PollerSection { store, config })
    }
}

/// Why the relay did not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The configuration is invalid; the message names the key.
    #[error("configuration error: {0}")]
    Config(String),
    /// Binding, serving or a target failed at run time.
    #[error("{0}")]
    Runtime(String),
}

fn config_err(e: impl std::fmt::Display) -> RelayError {
    RelayError::Config(e.to_string())
}

impl Default for RelayConfig {
    /// The embedded default: a webhook receiver on `127.0.0.1:8090` and every
    /// event written as gzip NDJSON under `./relay-data/events/` (durable
    /// queue `./relay-data/queue`).
    fn default() -> Self {
        RelayConfig {
            listen: default_listen(),
            region: default_region(),
            targets: None,
            directory: Some(SinkTargetConfig {
                queue_dir: Some(PathBuf::from("./relay-data/queue")),
                ..SinkTargetConfig::default()
            }),
            rules: None,
            delivery: Delivery::Async,
            receiver: ReceiverSection::default(),
            http: HttpOptions::default(),
            poller: None,
            #[cfg(feature = "sqs-source")]
            sqs: None,
            shutdown_timeout_secs: default_shutdown_secs(),
        }
    }
}

impl RelayConfig {
    /// Parses and [validates](Self::validate) a configuration file's text;
    /// errors name the key (`poller.interval_secs: must be > 0`).
    pub fn from_json(text: &str) -> Result<Self, RelayError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let config: RelayConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            if at == "." {
                config_err(e.inner())
            } else {
                RelayError::Config(format!("`{at}`: {}", e.inner()))
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), RelayError> {
        if self.targets.is_none() && self.directory.is_none() {
            return Err(config_err("no output: set `targets` and/or `directory`"));
        }
        let receiving = self.receiver.enable && self.listen.is_some();
        if !receiving && self.poller.is_none() && !self.has_sqs()? {
            return Err(config_err(
                "no input: no receiver (`listen` is null or `receiver.enable` false), no `poller` \
                 and no `sqs`",
            ));
        }
        if let Some(d) = &self.directory {
            d.validate().map_err(|e| {
                config_err(match e.strip_prefix('`') {
                    Some(rest) => format!("`directory.{rest}"),
                    None => format!("`directory`: {e}"),
                })
            })?;
        }
        if let Some(p) = &self.poller {
            p.config
                .validate()
                .map_err(|e| config_err(format!("`poller`: {e}")))?;
        }
        match (&self.http.tls_cert_file, &self.http.tls_key_file) {
            (Some(_), None) => {
                return Err(config_err(
                    "`http.tls_key_file` is required with `http.tls_cert_file`",
                ))
            }
            (None, Some(_)) => {
                return Err(config_err(
                    "`http.tls_cert_file` is required with `http.tls_key_file`",
                ))
            }
            _ => {}
        }
        if self.http.max_concurrent_requests == 0 {
            return Err(config_err("`http.max_concurrent_requests` must be > 0"));
        }
        self.notify_config()?;
        self.rules()?;
        Ok(())
    }

    /// The targets' configuration with the environment overlaid.
    pub fn notify_config(&self) -> Result<NotifyConfig, RelayError> {
        let json = self.targets.as_ref().map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        NotifyConfig::load(json.as_deref(), &self.region)
            .map_err(|e| config_err(format!("`targets`: {e}")))
    }

    /// The delivery mode: `delivery`, or `sync` when MinIO's
    /// `MINIO_API_SYNC_EVENTS` (or `api.sync_events` in a MinIO
    /// `config.json` given as `targets`) is on.
    pub fn mode(&self) -> DeliveryMode {
        let env_sync = std::env::var("MINIO_API_SYNC_EVENTS").is_ok_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "on" | "true" | "1" | "yes"
            )
        });
        let file_sync = self
            .targets
            .as_ref()
            .is_some_and(NotifyConfig::sync_events_in);
        if self.delivery == Delivery::Sync || env_sync || file_sync {
            DeliveryMode::Sync
        } else {
            DeliveryMode::Async
        }
    }

    /// The rules, when configured.
    pub fn rules(&self) -> Result<Option<NotificationConfiguration>, RelayError> {
        let parse = |text: &str, what: &str| {
            let t = text.trim_start();
            let parsed = if t.starts_with('<') {
                NotificationConfiguration::from_xml(t)
            } else {
                NotificationConfiguration::from_json(t)
            };
            parsed.map_err(|e| config_err(format!("`rules` ({what}): {e}")))
        };
        match &self.rules {
            None => Ok(None),
            Some(Value::String(s)) => {
                let t = s.trim_start();
                if t.starts_with('<') || t.starts_with('{') {
                    parse(t, "inline").map(Some)
                } else {
                    let text = std::fs::read_to_string(s)
                        .map_err(|e| config_err(format!("`rules`: cannot read `{s}`: {e}")))?;
                    parse(&text, s).map(Some)
                }
            }
            Some(v @ Value::Object(_)) => parse(&v.to_string(), "inline").map(Some),
            Some(_) => Err(config_err(
                "`rules` must be a string (XML, JSON or a file path) or a JSON object",
            )),
        }
    }

    /// Whether the SQS source is configured (its keys valid).
    fn has_sqs(&self) -> Result<bool, RelayError> {
        #[cfg(feature = "sqs-source")]
        if let Some(s) = &self.sqs {
            s.validate().map_err(|e| {
                RelayError::Config(format!("`sqs.{}", e.to_string().trim_start_matches('`')))
            })?;
            return Ok(true);
        }
        Ok(false)
    }

    /// The effective configuration as JSON, secrets replaced by `***`
    /// (for `--check-config`).
    pub fn redacted(&self) -> Result<Value, RelayError> {
        let notify = self.notify_config()?;
        Ok(serde_json::json!({
            "listen": self.listen.map(|a| a.to_string()),
            "region": self.region,
            "targets": notify.redacted_json(),
            "directory": self.directory.as_ref().map(|d| serde_json::json!({
                "id": d.id, "dir": d.dir, "store": d.store_config().to_string(), "prefix": d.prefix,
                "spool_dir": d.spool_dir(), "queue_dir": d.queue_dir,
                "flush_size": d.flush_size, "flush_interval_secs": d.flush_interval_secs,
            })),
            "rules": self.rules()?.map(|r| serde_json::from_str::<Value>(&r.to_json()).unwrap_or(Value::Null)),
            "delivery": match self.mode() { DeliveryMode::Sync => "sync", _ => "async" },
            "receiver": {
                "enable": self.receiver.enable,
                "auth_token": self.receiver.config.auth_token.as_ref().map(|_| "***"),
                "max_body_bytes": self.receiver.config.max_body_bytes,
                "sns": {
                    "verify_signatures": self.receiver.config.sns.verify_signatures,
                    "confirm_subscriptions": self.receiver.config.sns.confirm_subscriptions,
                    "topic_arns": self.receiver.config.sns.topic_arns,
                    "certificate_file": self.receiver.config.sns.certificate_file,
                    "max_age_secs": self.receiver.config.sns.max_age.as_secs(),
                    "verify_sqs_wrapped": self.receiver.config.sns.verify_sqs_wrapped,
                },
            },
            "http": {
                "auth_token": self.http.auth_token.as_ref().map(|_| "***"),
                "tls_cert_file": self.http.tls_cert_file,
                "tls_key_file": self.http.tls_key_file,
                "max_concurrent_requests": self.http.max_concurrent_requests,
                "read_timeout_secs": self.http.read_timeout.as_secs(),
            },
            "poller": self.poller.as_ref().map(|p| serde_json::json!({
                "store": p.store.to_string(), "bucket": p.config.bucket, "prefix": p.config.prefix,
                "interval_secs": p.config.interval.as_secs(), "cursor_file": p.config.cursor_file,
                "emit_existing": p.config.emit_existing,
            })),
            "sqs": self.sqs_redacted(),
            "shutdown_timeout_secs": self.shutdown_timeout_secs,
        }))
    }
}

impl RelayConfig {
    #[cfg(feature = "sqs-source")]
    fn sqs_redacted(&self) -> Value {
        self.sqs
            .as_ref()
            .map_or(Value::Null, crate::sqs_source::redacted)
    }

    #[cfg(not(feature = "sqs-source"))]
    fn sqs_redacted(&self) -> Value {
        Value::Null
    }
}

/// A started relay: targets built, listener bound. [`Relay::run`] serves.
pub struct Relay {
    config: RelayConfig,
    notifier: Arc<Notifier>,
    receiver: Option<Receiver>,
    poller: Option<(Poller, String)>,
    #[cfg(feature = "sqs-source")]
    sqs: Option<SqsSource>,
    listener: Option<std::net::TcpListener>,
    targets: Vec<(String, Option<PathBuf>, Result<bool, String>)>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("local_addr", &self.local_addr())
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

/// Hands records to the notifier; `Ok` once every one is queued. A full
/// queue is transient; a record too large for a queue entry is permanent.
async fn deliver(notifier: &Notifier, records: Vec<EventRecord>) -> Result<(), HandlerError> {
    for record in records {
        match notifier.send(record).await {
            Ok(o) if o.dropped > 0 => {
                return Err(HandlerError::transient(format!(
                    "queue full for {} target(s)",
                    o.dropped
                )));
            }
            Ok(_) => {}
            Err(crate::targets::Error::InvalidRecord { event_name, source }) => {
                tracing::warn!(event_name, error = %source, "record skipped");
            }
            Err(e @ crate::targets::Error::EntryTooLarge { .. }) => {
                return Err(HandlerError::permanent(e))
            }
            Err(e) => return Err(HandlerError::transient(e)),
        }
    }
    Ok(())
}

/// Probes `target` once, within 5 s.
async fn probe(target: &Arc<dyn Target>) -> Result<bool, String> {
    match tokio::time::timeout(Duration::from_secs(5), target.is_active()).await {
        Ok(Ok(up)) => Ok(up),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

/// Completes once `rx` says stop.
async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The records handler of the receiver and the poller: [`deliver`] to
/// `notifier`.
fn handler(notifier: &Arc<Notifier>) -> impl RecordsHandler {
    let n = Arc::clone(notifier);
    move |records: Vec<EventRecord>| {
        let n = Arc::clone(&n);
        async move { deliver(&n, records).await }
    }
}

/// A target and its options.
type Configured = (Arc<dyn Target>, TargetOptions);

/// The configured targets and the built-in `directory` output, with their
/// options; at least one.
fn build_targets(config: &RelayConfig) -> Result<Vec<Configured>, RelayError> {
    let mut targets = config
        .notify_config()?
        .build_targets()
        .map_err(|e| config_err(format!("`targets`: {e}")))?;
    if let Some(d) = &config.directory {
        let t = SinkTarget::from_config(d, &config.region)
            .map_err(|e| config_err(format!("`directory`: {e}")))?;
        let options = TargetOptions {
            queue_dir: d.queue_dir.clone(),
            ..TargetOptions::default()
        };
        targets.push((Arc::new(t) as Arc<dyn Target>, options));
    }
    if targets.is_empty() {
        return Err(config_err("`targets`: no enabled target"));
    }
    Ok(targets)
}

/// The notifier over `targets`, with the configured rules (or every event
/// to every target) and delivery mode.
fn build_notifier(
    config: &RelayConfig,
    targets: Vec<Configured>,
) -> Result<Arc<Notifier>, RelayError> {
    let rules = match config.rules()? {
        Some(r) => RuleSet::from_config(&r).map_err(|e| config_err(format!("`rules`: {e}")))?,
        None => RuleSet::new(targets.iter().enumerate().map(|(n, (t, _))| {
            NotificationRule::new(format!("all-{n}"), EventMask::ALL, t.id().clone())
        }))
        .map_err(|e| config_err(format!("rules: {e}")))?,
    };
    let mut builder = Notifier::builder().rules(rules).mode(config.mode());
    for (t, o) in targets {
        builder = builder.target(t, o);
    }
    Ok(Arc::new(builder.build().map_err(config_err)?))
}

/// The poller, when configured, and its store for people.
fn open_poller(config: &RelayConfig) -> Result<Option<(Poller, String)>, RelayError> {
    let Some(p) = &config.poller else {
        return Ok(None);
    };
    let store = p
        .store
        .build()
        .map_err(|e| config_err(format!("`poller.store`: {e}")))?;
    let mut pc = p.config.clone();
    if pc.region.is_empty() {
        pc.region = config.region.clone();
    }
    let poller = Poller::open(store, pc).map_err(|e| config_err(format!("`poller`: {e}")))?;
    Ok(Some((poller, p.store.to_string())))
}

impl Relay {
    /// Builds the targets (each probed once: one that is down is logged,
    /// and the relay still starts, its queue holding the events), the
    /// notifier, the receiver and the poller, and binds `listen`.
    pub async fn start(config: RelayConfig) -> Result<Relay, RelayError> {
        config.validate()?;
        prometheus();
        let targets = build_targets(&config)?;
        let probes = futures::future::join_all(targets.iter().map(|(t, _)| probe(t))).await;
        let described = targets
            .iter()
            .zip(probes)
            .map(|((t, o), up)| (t.id().to_string(), o.queue_dir.clone(), up))
            .collect();
        let notifier = build_notifier(&config, targets)?;
        let poller = open_poller(&config)?;
        let receiver = if config.receiver.enable && config.listen.is_some() {
            Some(
                Receiver::new(config.receiver.config.clone(), handler(&notifier))
                    .map_err(|e| config_err(format!("`receiver`: {e}")))?,
            )
        } else {
            None
        };
        tls_config(&config.http).map_err(|e| config_err(format!("`http`: {e}")))?;
        let listener = match config.listen {
            Some(addr) => Some(
                std::net::TcpListener::bind(addr)
                    .map_err(|e| RelayError::Runtime(format!("cannot listen on {addr}: {e}")))?,
            ),
            None => None,
        };
        #[cfg(feature = "sqs-source")]
        let sqs = match &config.sqs {
            Some(c) => Some(SqsSource::new(c.clone(), handler(&notifier)).map_err(|e| {
                RelayError::Config(format!("`sqs.{}", e.to_string().trim_start_matches('`')))
            })?),
            None => None,
        };
        Ok(Relay {
            config,
            notifier,
            receiver,
            poller,
            #[cfg(feature = "sqs-source")]
            sqs,
            listener,
            targets: described,
        })
    }

    /// The address listened on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The notifier (counters, dead letters).
    pub fn notifier(&self) -> &Arc<Notifier> {
        &self.notifier
    }

    /// What the relay does, one line each: where it listens, each target
    /// (queue, and whether its probe at start found it up), the poller.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(addr) = self.local_addr() {
            out.push(format!(
                "listening on {}://{addr}{}; GET /health, GET /metrics",
                self.config.http.scheme(),
                if self.receiver.is_some() {
                    " (POST / : MinIO/AIStor webhooks, SNS, SQS bodies)"
                } else {
                    ""
                }
            ));
        }
        for (id, queue, up) in &self.targets {
            let queue = match queue {
                Some(q) => format!("queue_dir {}", q.display()),
                None => "in-memory queue".into(),
            };
            let state = match up {
                Ok(true) => String::new(),
                Ok(false) => "; DOWN at start, events are queued until it is back".into(),
                Err(e) => format!("; DOWN at start ({e}), events are queued until it is back"),
            };
            out.push(format!("target {id} ({queue}{state})"));
        }
        if let Some(d) = &self.config.directory {
            out.push(format!(
                "writing gzip NDJSON objects to {} under {} (spool {})",
                d.store_config(),
                d.prefix,
                d.spool_dir().display()
            ));
        }
        #[cfg(feature = "sqs-source")]
        if let Some(s) = &self.sqs {
            out.push(crate::sqs_source::describe(s.config()));
        }
        if let Some((_, store)) = &self.poller {
            out.push(format!(
                "polling {store} every {} s",
                self.config
                    .poller
                    .as_ref()
                    .map_or(0, |p| p.config.interval.as_secs())
            ));
        }
        out
    }

    /// The targets that were down at start.
    pub fn targets_down(&self) -> Vec<&str> {
        self.targets
            .iter()
            .filter(|(_, _, up)| !matches!(up, Ok(true)))
            .map(|(id, _, _)| id.as_str())
            .collect()
    }

    fn warn_targets_down(&self) {
        for (id, _, up) in &self.targets {
            if !matches!(up, Ok(true)) {
                let error = match up {
                    Err(e) => e.as_str(),
                    _ => "not active",
                };
                tracing::warn!(target_id = %id, error, "target down at start; its events are queued");
            }
        }
    }

    /// Serves until `shutdown` completes; see the [module docs](self).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), RelayError> {
        self.warn_targets_down();
        let Relay {
            config,
            notifier,
            receiver,
            poller,
            #[cfg(feature = "sqs-source")]
            sqs,
            listener,
            ..
        } = self;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let poller_task = poller.map(|(poller, _)| {
            tokio::spawn(poller.run(handler(&notifier), stopped(stop_rx.clone())))
        });
        #[cfg(feature = "sqs-source")]
        let sqs_task = sqs.map(|s| tokio::spawn(s.run(stopped(stop_rx.clone()))));
        let stop_tx = Arc::new(stop_tx);
        let stopper = {
            let stop_tx = Arc::clone(&stop_tx);
            tokio::spawn(async move {
                shutdown.await;
                let _ = stop_tx.send(true);
            })
        };
        let served = match listener {
            Some(listener) => {
                let n = Arc::clone(&notifier);
                let mut routes = Routes::new().export(move || n.export_metrics());
                if let Some(r) = &receiver {
                    routes = routes.input(r.router());
                }
                let app = routes.into_router();
                serve(
                    listener,
                    app,
                    &config.http,
                    "relay",
                    stopped(stop_rx.clone()),
                )
                .await
                .map_err(|e| RelayError::Runtime(format!("serving: {e}")))
            }
            None => {
                stopped(stop_rx.clone()).await;
                Ok(())
            }
        };
        stopper.abort();
        let _ = stop_tx.send(true);
        if let Some(t) = poller_task {
            let _ = t.await;
        }
        #[cfg(feature = "sqs-source")]
        if let Some(t) = sqs_task {
            let _ = t.await;
        }
        drop(receiver);
        notifier
            .shutdown(Duration::from_secs(config.shutdown_timeout_secs))
            .await;
        served
    }
}

#[cfg(test)]
mod tests;
