//! Meter ingest from a bucket (feature `ingest`), the way Amberflo's S3
//! ingest works (seed 004): meter files dropped under a prefix (a JSON array
//! or NDJSON, gzip when the key ends in `.gz`) are read, every record is
//! validated ([`MeterRecord`](crate::sink::ingest::MeterRecord)), the valid
//! ones are written out as gzip NDJSON objects through a spooled
//! [`Sink`], and for a bad file or bad records a report
//! `failed-requests/<YYYY-MM-DD>/<original key>.reason.txt` naming line and
//! reason goes back into the bucket. `s3-event ingest` is this module behind
//! a command line.
//!
//! Objects are found by a poller (a listing of the prefix every
//! `pollIntervalMillis`, diffed against a cursor file) and, when `listen` is
//! set, also by S3 notifications POSTed there (MinIO/AIStor webhooks, SNS,
//! SQS bodies, `{"Records": [...]}`); that address also answers
//! `GET /health` and `GET /metrics` (the one router of [`Routes`]).
//! With `sqs` (feature `sqs-source`; the keys of
//! [`SqsSourceConfig`]), the
//! notifications are also long-polled from an SQS queue; a message is
//! deleted once the valid records of the objects it announced are in the
//! sink's spool.
//!
//! Delivery is at least once: an object's valid records are fsynced to the
//! sink's spool before the poller records the object in its cursor, so a
//! crash loses no valid record, and an object is not read again once its
//! poll has finished; a crash inside a poll reads that poll's objects again.
//!
//! # Configuration
//!
//! JSON, every key optional, unknown keys refused:
//!
//! ```json
//! {
//!   "input": {"store": "local", "dir": "./bucket"},
//!   "prefix": "ingest/",
//!   "pollIntervalMillis": 1000,
//!   "cursorFile": "./ingest_meters.cursor",
//!   "output": {"store": "local", "dir": "./meters"},
//!   "outputPrefix": "",
//!   "spoolDir": "./ingest_meters.spool",
//!   "flushSize": 1000,
//!   "flushIntervalMillis": 10000,
//!   "listen": "127.0.0.1:8091",
//!   "authToken": "s3cr3t",
//!   "http": {"tls_cert_file": null, "max_concurrent_requests": 1024, "read_timeout_secs": 30}
//! }
//! ```
//!
//! A store is a [`StoreConfig`]: `{"store": "local", "dir": …}` or
//! `{"store": "s3", "bucket": …, "endpoint": …, "region": …, "accessKeyId":
//! …, "secretAccessKey": …, "allowHttp": …}` (credentials default to the
//! `AWS_*` environment).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use crate::core::EventRecord;
use crate::inputs::handler::{BoxFuture, HandlerError};
use crate::inputs::http::{serve, tls_config, HttpOptions, Routes};
use crate::inputs::poller::{Poller, PollerConfig};
use crate::inputs::receiver::{AuthToken, Receiver, ReceiverConfig};
#[cfg(feature = "sqs-source")]
use crate::inputs::sqs::{SqsSource, SqsSourceConfig};
use crate::sink::ingest::ingest_object;
use crate::sink::{Compression, Encoding, Sink, SinkStats, SpoolFsync, SpoolOptions, StoreConfig};

/// How many ingested keys are remembered to skip an object announced both
/// by a notification and by the poller.
const DONE_LIMIT: usize = 100_000;

/// The configuration; see the [module docs](self).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngestConfig {
    /// Where meter files are read (default the local directory `./bucket`).
    #[serde(default = "default_input")]
    pub input: StoreConfig,
    /// The prefix polled (default `ingest/`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Milliseconds between polls (default 1000).
    #[serde(default = "default_poll")]
    pub poll_interval_millis: u64,
    /// The poller's cursor (default `./ingest_meters.cursor`).
    #[serde(default = "default_cursor")]
    pub cursor_file: PathBuf,
    /// Where valid records go (default the local directory `./meters`).
    #[serde(default = "default_output")]
    pub output: StoreConfig,
    /// Put before every output key.
    #[serde(default)]
    pub output_prefix: String,
    /// The sink's spool (default `./ingest_meters.spool`).
    #[serde(default = "default_spool")]
    pub spool_dir: PathBuf,
    /// Records per output object (default 1000).
    #[serde(default = "default_flush_size")]
    pub flush_size: usize,
    /// Milliseconds from an object's first record to its upload (default
    /// 10000).
    #[serde(default = "default_flush_interval")]
    pub flush_interval_millis: u64,
    /// Receive S3 notifications on this address (default: poll only).
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The token notifications must carry (`Authorization: Bearer …`).
    #[serde(default)]
    pub auth_token: Option<AuthToken>,
    /// TLS and limits of the notification server.
    #[serde(default)]
    pub http: HttpOptions,
    /// Also take the notifications from an SQS queue (feature
    /// `sqs-source`; the keys of [`SqsSourceConfig`], in snake case).
    #[cfg(feature = "sqs-source")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqs-source")))]
    #[serde(default)]
    pub sqs: Option<SqsSourceConfig>,
}

fn default_input() -> StoreConfig {
    StoreConfig::Local {
        dir: "./bucket".into(),
    }
}
fn default_output() -> StoreConfig {
    StoreConfig::Local {
        dir: "./meters".into(),
    }
}
fn default_prefix() -> String {
    "ingest/".into()
}
fn default_poll() -> u64 {
    1000
}
fn default_cursor() -> PathBuf {
    "./ingest_meters.cursor".into()
}
fn default_spool() -> PathBuf {
    "./ingest_meters.spool".into()
}
fn default_flush_size() -> usize {
    crate::sink::DEFAULT_FLUSH_SIZE
}
fn default_flush_interval() -> u64 {
    10_000
}

impl Default for IngestConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every key has a default")
    }
}

/// Why ingest did not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The configuration is invalid; the message names the key.
    #[error("configuration error: {0}")]
    Config(String),
    /// Reading, writing or serving failed.
    #[error("{0}")]
    Runtime(String),
}

impl IngestConfig {
    /// Parses and validates a configuration file's text.
    pub fn from_json(text: &str) -> Result<Self, IngestError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let c: IngestConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            IngestError::Config(if at == "." {
                e.inner().to_string()
            } else {
                format!("`{at}`: {}", e.inner())
            })
        })?;
        c.validate()?;
        Ok(c)
    }

    /// Checks what serde cannot; messages name the key.
    pub fn validate(&self) -> Result<(), IngestError> {
        let bad = |m: &str| Err(IngestError::Config(m.into()));
        if self.poll_interval_millis == 0 {
            return bad("`pollIntervalMillis` must be > 0");
        }
        if self.flush_size == 0 {
            return bad("`flushSize` must be > 0");
        }
        if self.flush_interval_millis == 0 {
            return bad("`flushIntervalMillis` must be > 0");
        }
        if self.auth_token.is_some() && self.listen.is_none() {
            return bad("`authToken` needs `listen`");
        }
        #[cfg(feature = "sqs-source")]
        if let Some(s) = &self.sqs {
            s.validate().map_err(|e| {
                IngestError::Config(format!("`sqs.{}", e.to_string().trim_start_matches('`')))
            })?;
        }
        for (key, store) in [("input", &self.input), ("output", &self.output)] {
            if let StoreConfig::Local { dir } = store {
                if dir.as_os_str().is_empty() {
                    return Err(IngestError::Config(format!(
                        "`{key}.dir` must not be empty"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The bucket name put in the poller's records.
    fn input_bucket(&self) -> String {
        match &self.input {
            StoreConfig::S3(c) => c.bucket.clone(),
            _ => "bucket".into(),
        }
    }

    /// The effective configuration for people, secrets left out.
    pub fn redacted(&self) -> serde_json::Value {
        serde_json::json!({
            "input": self.input.to_string(),
            "prefix": self.prefix,
            "pollIntervalMillis": self.poll_interval_millis,
            "cursorFile": self.cursor_file,
            "output": self.output.to_string(),
            "outputPrefix": self.output_prefix,
            "spoolDir": self.spool_dir,
            "flushSize": self.flush_size,
            "flushIntervalMillis": self.flush_interval_millis,
            "listen": self.listen.map(|a| a.to_string()),
            "authToken": self.auth_token.as_ref().map(|_| "***"),
            "http": {
                "tls_cert_file": self.http.tls_cert_file,
                "tls_key_file": self.http.tls_key_file,
                "max_concurrent_requests": self.http.max_concurrent_requests,
                "read_timeout_secs": self.http.read_timeout.as_secs(),
            },
            "sqs": self.sqs_redacted(),
        })
    }

    #[cfg(feature = "sqs-source")]
    fn sqs_redacted(&self) -> serde_json::Value {
        self.sqs
            .as_ref()
            .map_or(serde_json::Value::Null, crate::sqs_source::redacted)
    }

    #[cfg(not(feature = "sqs-source"))]
    fn sqs_redacted(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// Ingested keys with their ETags, and the keys in the order they came.
type Done = (HashMap<String, Option<String>>, VecDeque<String>);

/// Reads objects and forwards their valid records; shared by the poller and
/// the receiver.
struct Pipeline {
    input: Arc<dyn object_store::ObjectStore>,
    prefix: String,
    sink: Arc<Sink>,
    /// Objects read in this process (key → ETag), oldest forgotten past
    /// [`DONE_LIMIT`].
    done: Mutex<Done>,
}

impl Pipeline {
    /// Every `ObjectCreated` under the prefix is read and its valid records
    /// pushed (durable when this returns `Ok`).
    async fn handle(&self, records: Vec<EventRecord>) -> Result<(), HandlerError> {
        for r in records {
            let created = r
                .event_name_str()
                .is_some_and(|n| n.contains("ObjectCreated"));
            if !created {
                continue;
            }
            let key = match r.decoded_key() {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(error = %e, "record skipped");
                    continue;
                }
            };
            let under = self.prefix.is_empty()
                || key
                    .strip_prefix(&self.prefix)
                    .is_some_and(|rest| rest.starts_with('/'));
            if !under || key.starts_with("failed-requests/") {
                tracing::debug!(key, "not under the ingest prefix; skipped");
                continue;
            }
            let etag =
                r.s3.as_ref()
                    .and_then(|s| s.object.as_ref())
                    .and_then(|o| o.e_tag.clone())
                    .map(|e| e.trim_matches('"').to_owned());
            let seen = |done: &Done| etag.is_some() && done.0.get(&key) == Some(&etag);
            if seen(&self.done.lock().unwrap_or_else(|e| e.into_inner())) {
                tracing::debug!(key, "already ingested; skipped");
                continue;
            }
            self.ingest(&key).await?;
            let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
            let (seen, order) = &mut *done;
            if seen.insert(key.clone(), etag).is_none() {
                order.push_back(key);
                while order.len() > DONE_LIMIT {
                    if let Some(old) = order.pop_front() {
                        seen.remove(&old);
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads `key` and pushes its valid records. Reading and pushing fail
    /// transiently (a store or spool that is down, backpressure); a record
    /// that cannot be serialized fails permanently.
    async fn ingest(&self, key: &str) -> Result<(), HandlerError> {
        let today = chrono::Utc::now().date_naive();
        let outcome = match ingest_object(&*self.input, key, today).await {
            Ok(o) => o,
            Err(crate::sink::Error::Store {
                source: object_store::Error::NotFound { .. },
            }) => {
                tracing::warn!(key, "object gone before it could be read; skipped");
                return Ok(());
            }
            Err(e) => return Err(HandlerError::transient(format!("reading `{key}`: {e}"))),
        };
        let values: Vec<serde_json::Value> = outcome
            .valid
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()
            .map_err(HandlerError::permanent)?;
        if !values.is_empty() {
            self.sink.push_batch(&values).await.map_err(|e| {
                HandlerError::transient(format!("forwarding the records of `{key}`: {e}"))
            })?;
        }
        match &outcome.report_key {
            Some(report) => tracing::warn!(
                key,
                valid = outcome.valid.len(),
                bad = outcome.bad.len(),
                report,
                "ingested with failures"
            ),
            None => tracing::info!(key, valid = outcome.valid.len(), "ingested"),
        }
        Ok(())
    }
}

/// A started ingest pipeline: stores built, spool recovered, listener
/// bound. [`Ingest::run`] polls and serves.
pub struct Ingest {
    config: IngestConfig,
    pipeline: Arc<Pipeline>,
    poller: Poller,
    listener: Option<std::net::TcpListener>,
    #[cfg(feature = "sqs-source")]
    sqs: Option<SqsSource>,
}

/// The records handler of every input: [`Pipeline::handle`].
fn pipeline_handler(
    pipeline: &Arc<Pipeline>,
) -> impl Fn(Vec<EventRecord>) -> BoxFuture<'static, Result<(), HandlerError>>
       + Clone
       + Send
       + Sync
       + 'static {
    let p = Arc::clone(pipeline);
    move |records: Vec<EventRecord>| {
        let p = Arc::clone(&p);
        Box::pin(async move { p.handle(records).await })
    }
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn runtime(e: impl std::fmt::Display) -> IngestError {
    IngestError::Runtime(e.to_string())
}

impl Ingest {
    /// Builds the stores, the sink (recovering its spool) and the poller,
    /// and binds `listen`.
    pub async fn start(config: IngestConfig) -> Result<Ingest, IngestError> {
        config.validate()?;
        let cfg =
            |what: &str, e: &dyn std::fmt::Display| IngestError::Config(format!("`{what}`: {e}"));
        let input = config.input.build().map_err(|e| cfg("input", &e))?;
        let output = config.output.build().map_err(|e| cfg("output", &e))?;
        let sink = Sink::builder()
            .with_store(output)
            .with_prefix(config.output_prefix.clone())
            .with_encoding(Encoding::Ndjson)
            .with_compression(Compression::gzip())
            .with_flush_size(config.flush_size)
            .with_flush_interval(Duration::from_millis(config.flush_interval_millis))
            // fsync before a push returns: the poller's cursor may then move on.
            .with_spool(SpoolOptions::new(&config.spool_dir).with_fsync(SpoolFsync::Always))
            .build()
            .map_err(|e| runtime(format!("sink: {e}")))?;
        let prefix = config.prefix.trim_matches('/').to_owned();
        let mut pc = PollerConfig::new(config.input_bucket(), &config.cursor_file);
        pc.prefix = (!prefix.is_empty()).then(|| prefix.clone());
        pc.interval = Duration::from_millis(config.poll_interval_millis);
        // One object per handler call: a failure holds back only that object.
        pc.batch_size = 1;
        let poller = Poller::open(Arc::clone(&input), pc).map_err(runtime)?;
        tls_config(&config.http).map_err(|e| cfg("http", &e))?;
        let listener = match config.listen {
            Some(addr) => Some(
                std::net::TcpListener::bind(addr)
                    .map_err(|e| runtime(format!("cannot listen on {addr}: {e}")))?,
            ),
            None => None,
        };
        let pipeline = Arc::new(Pipeline {
            input,
            prefix,
            sink: Arc::new(sink),
            done: Mutex::new((HashMap::new(), VecDeque::new())),
        });
        #[cfg(feature = "sqs-source")]
        let sqs = match &config.sqs {
            Some(c) => Some(
                SqsSource::new(c.clone(), pipeline_handler(&pipeline)).map_err(|e| {
                    IngestError::Config(format!("`sqs.{}", e.to_string().trim_start_matches('`')))
                })?,
            ),
            None => None,
        };
        Ok(Ingest {
            config,
            pipeline,
            poller,
            listener,
            #[cfg(feature = "sqs-source")]
            sqs,
        })
    }

    /// The notification address, when listening.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// What it does, for people.
    pub fn describe(&self) -> Vec<String> {
        let c = &self.config;
        let mut out = vec![format!(
            "polling {}/{}/ every {} ms (cursor {}); valid records as gzip NDJSON to {}{}; \
             failure reports to {}/failed-requests/<date>/",
            c.input,
            self.pipeline.prefix,
            c.poll_interval_millis,
            c.cursor_file.display(),
            c.output,
            if c.output_prefix.is_empty() {
                String::new()
            } else {
                format!(" prefix {}", c.output_prefix)
            },
            c.input,
        )];
        if let Some(a) = self.local_addr() {
            out.push(format!(
                "receiving S3 notifications on {}://{a}/",
                c.http.scheme()
            ));
        }
        #[cfg(feature = "sqs-source")]
        if let Some(s) = &self.sqs {
            out.push(crate::sqs_source::describe(s.config()));
        }
        out
    }

    /// Polls (and serves notifications) until `shutdown` completes, then
    /// finishes the running poll, uploads every batch and returns the
    /// sink's counters.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<SinkStats, IngestError> {
        let Ingest {
            config,
            pipeline,
            poller,
            listener,
            #[cfg(feature = "sqs-source")]
            sqs,
        } = self;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        let handler = pipeline_handler(&pipeline);
        let mut tasks = vec![tokio::spawn(
            poller.run(handler.clone(), stopped(stop_rx.clone())),
        )];
        #[cfg(feature = "sqs-source")]
        if let Some(s) = sqs {
            tasks.push(tokio::spawn(s.run(stopped(stop_rx.clone()))));
        }
        if let Some(listener) = listener {
            let receiver = Receiver::new(
                ReceiverConfig {
                    auth_token: config.auth_token.clone(),
                    ..ReceiverConfig::default()
                },
                handler,
            )
            .map_err(runtime)?;
            let rx = stop_rx.clone();
            let http = config.http.clone();
            let app = Routes::new().input(receiver.router()).into_router();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = serve(listener, app, &http, "ingest", stopped(rx)).await {
                    tracing::error!(error = %e, "the notification server failed");
                }
            }));
        }
        shutdown.await;
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = t.await;
        }
        pipeline
            .sink
            .shutdown()
            .await
            .map_err(|e| runtime(format!("flushing: {e}")))?;
        Ok(pipeline.sink.stats())
    }
}
