//! The CloudEvents HTTP sink server (feature `server`): the seed's S3 sink,
//! receiving CloudEvents over HTTP and batching them into object storage
//! through a [`Sink`] with a durable spool. `s3-event sink` is this module
//! behind a command line. It joins the CloudEvents HTTP input
//! ([`cloudevents`](crate::inputs::cloudevents)) to the sink, and serves
//! them with the one router and exposure layer of
//! [`inputs::http`](crate::inputs::http).
//!
//! - `POST /`: CloudEvents in structured, binary or batch mode (spec 1.0 and
//!   0.3), or raw S3 notification JSON (see
//!   [`cloudevents`](crate::inputs::cloudevents)). Answers `200` with
//!   `{"accepted": n}` only once the events are in the spool; `400` with a
//!   JSON body naming the bad attribute; `415` for other content types; `413`
//!   past `maxBodyBytes`; `503` with `Retry-After` when the spool stays full
//!   longer than [`RouterOptions::push_wait`] (then no event of the request
//!   was taken, so retrying makes no duplicate).
//! - `GET /health`: `{"status": "ok", ...}` with the sink's counters; `503`
//!   with `{"status": "degraded", "reason": ...}` while uploads fail in a way
//!   retrying will not fix (refused credentials, a missing bucket).
//! - `GET /metrics`: Prometheus text ([`prometheus`]), the sink's counters
//!   among them.
//!
//! [`Server::run`] stops accepting on the shutdown signal, lets requests in
//! flight finish, then [`Sink::shutdown`] flushes every batch and waits for
//! the uploads.
//!
//! ```no_run
//! use s3_event::sink_server::{shutdown_signal, Config, Server, Sources};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load(&Sources::default())?;
//! let server = Server::bind(config).await?;
//! println!("listening on {}", server.local_addr());
//! server.run(shutdown_signal()).await?;
//! # Ok(())
//! # }
//! ```

pub mod config;
mod receive;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Once};
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

pub use config::{Config, ConfigError, PartitionTime, Secret, Sources, StoreKind};
pub use receive::{RouterOptions, DEFAULT_PUSH_WAIT};

pub use crate::inputs::cloudevents::{Mode, Rejection};
use crate::inputs::http::Routes;
pub use crate::inputs::http::{prometheus, serve, shutdown_signal, HttpOptions};
use crate::sink::{Error, Sink};

/// The request latency histogram of `POST /`.
const LATENCY: &str = "s3_sink_request_duration_seconds";

/// The `# HELP` lines of the sink server's metrics, registered once with
/// the [`prometheus`] recorder.
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    static ONCE: Once = Once::new();
    prometheus();
    ONCE.call_once(|| {
        describe_counter!(
            "s3_sink_events_received_total",
            "Events parsed from requests"
        );
        describe_counter!(
            "s3_sink_events_accepted_total",
            "Events acknowledged (in the spool)"
        );
        describe_counter!(
            "s3_sink_events_rejected_total",
            "Events (or requests, when unparsable) refused, by reason"
        );
        describe_counter!(
            "s3_sink_objects_uploaded_total",
            "Objects uploaded to the store"
        );
        describe_counter!(
            "s3_sink_bytes_uploaded_total",
            Unit::Bytes,
            "Bytes uploaded"
        );
        describe_counter!(
            "s3_sink_upload_retries_total",
            "Failed upload attempts (each retried)"
        );
        describe_counter!(
            "s3_sink_events_recovered_total",
            "Events found in the spool at start"
        );
        describe_gauge!("s3_sink_spool_bytes", Unit::Bytes, "Size of the spool");
        describe_gauge!("s3_sink_open_batches", "Batches open");
        describe_gauge!("s3_sink_pending_uploads", "Closed batches not uploaded yet");
        describe_histogram!(LATENCY, Unit::Seconds, "POST / latency");
    });
}

/// The HTTP routes over `sink`; see the [module docs](self): the
/// CloudEvents input on `POST /`, mounted on [`Routes`] with the sink's
/// health and counters.
pub fn router(sink: Arc<Sink>, opts: RouterOptions) -> Router {
    describe_metrics();
    let input = receive::router(Arc::clone(&sink), &opts);
    let health_sink = Arc::clone(&sink);
    Routes::new()
        .input(input)
        .health(move || health(&health_sink))
        .export(move || export_metrics(&sink))
        .into_router()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

/// `GET /health`: the sink's counters; `503 degraded` with the reason while
/// uploads fail in a way retrying will not fix.
fn health(sink: &Sink) -> Response {
    let s = sink.stats();
    let degraded = sink.degraded();
    let (code, status) = match &degraded {
        // Uploads fail in a way retrying will not fix: events are still
        // accepted and kept, but an operator must act.
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "degraded"),
        None => (StatusCode::OK, "ok"),
    };
    json_response(
        code,
        &json!({
            "status": status,
            "reason": degraded,
            "upload_permanent_errors": s.upload_permanent_errors,
            "events_accepted": s.events_accepted,
            "events_recovered": s.events_recovered,
            "objects_uploaded": s.objects_uploaded,
            "pending_uploads": s.pending_uploads,
            "open_batches": s.open_batches,
            "spool_bytes": s.spool_bytes,
        }),
    )
}

/// Before a `/metrics` render: the sink's own counters and gauges.
fn export_metrics(sink: &Sink) {
    let s = sink.stats();
    metrics::counter!("s3_sink_objects_uploaded_total").absolute(s.objects_uploaded);
    metrics::counter!("s3_sink_bytes_uploaded_total").absolute(s.bytes_uploaded);
    metrics::counter!("s3_sink_upload_retries_total").absolute(s.upload_retries);
    metrics::counter!("s3_sink_events_recovered_total").absolute(s.events_recovered);
    metrics::counter!("s3_sink_upload_permanent_errors_total").absolute(s.upload_permanent_errors);
    metrics::counter!("s3_sink_key_collisions_total").absolute(s.key_collisions);
    let degraded = if sink.degraded().is_some() { 1.0 } else { 0.0 };
    metrics::gauge!("s3_sink_degraded").set(degraded);
    metrics::gauge!("s3_sink_spool_bytes").set(s.spool_bytes as f64);
    metrics::gauge!("s3_sink_open_batches").set(s.open_batches as f64);
    metrics::gauge!("s3_sink_pending_uploads").set(s.pending_uploads as f64);
}

/// Starting or running the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The sink could not be built or shut down.
    #[error(transparent)]
    Sink(#[from] Error),
    /// The start-up check could not write to the store ([`check_store`]).
    #[error("cannot write to {store}: {message}")]
    Check {
        /// The store: bucket and endpoint, or directory.
        store: String,
        /// What went wrong.
        message: String,
    },
    /// Binding or serving failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A bound server: the sink is built (and has recovered its spool) and the
/// port is open; [`Server::run`] serves.
pub struct Server {
    listener: std::net::TcpListener,
    sink: Arc<Sink>,
    config: Config,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Builds the sink from `config` and binds its address.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        log_config(&config);
        let sink = Arc::new(config.sink_builder()?.build()?);
        let addr = SocketAddr::new(config.bind_address, config.port);
        let listener = std::net::TcpListener::bind(addr).map_err(|source| ServerError::Io {
            what: format!("cannot listen on {addr}"),
            source,
        })?;
        Ok(Server {
            listener,
            sink,
            config,
        })
    }

    /// The address listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::new(self.config.bind_address, self.config.port))
    }

    /// The sink.
    pub fn sink(&self) -> &Arc<Sink> {
        &self.sink
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serves until `shutdown` completes, then stops accepting, lets
    /// requests in flight finish, flushes every batch and waits for the
    /// uploads.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let addr = self.local_addr();
        let app = router(
            Arc::clone(&self.sink),
            RouterOptions {
                max_body_bytes: self.config.max_body_bytes,
                ..RouterOptions::default()
            },
        );
        tracing::info!("HttpServer is listening on {addr}");
        serve(self.listener, app, &self.config.http, "sink", shutdown)
            .await
            .map_err(|source| ServerError::Io {
                what: "serving".into(),
                source,
            })?;
        tracing::info!("shutting down: flushing open batches and waiting for uploads");
        self.sink.shutdown().await?;
        let s = self.sink.stats();
        tracing::info!(
            events_accepted = s.events_accepted,
            objects_uploaded = s.objects_uploaded,
            "shut down cleanly"
        );
        Ok(())
    }
}

/// How long [`check_store`] waits for the store before giving up.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks that `store` takes writes under `prefix`, within `within`: lists
/// the prefix (a missing bucket fails here: some S3-compatible stores, such
/// as SeaweedFS, create a bucket on the first put instead of refusing it),
/// then puts a small probe object (`<prefix>.s3-event-probe-<pid>-<nanos>`)
/// and deletes it again. The error says what the store answered (wrong
/// credentials, a missing bucket, a refused connection).
pub async fn check_store(
    store: &dyn object_store::ObjectStore,
    prefix: &str,
    within: Duration,
) -> Result<(), String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let key = format!("{prefix}.s3-event-probe-{}-{nanos}", std::process::id());
    use object_store::ObjectStoreExt as _;
    let path = object_store::path::Path::from(key.as_str());
    let probe = async {
        let listed = store.list(Some(&object_store::path::Path::from(prefix)));
        futures::pin_mut!(listed);
        if let Some(Err(e)) = futures::StreamExt::next(&mut listed).await {
            return Err(if prefix.is_empty() {
                format!("listing the bucket failed: {e}")
            } else {
                format!("listing `{prefix}` failed: {e}")
            });
        }
        store
            .put(&path, object_store::PutPayload::from_static(b"probe\n"))
            .await
            .map_err(|e| format!("writing the probe object `{key}` failed: {e}"))?;
        if let Err(e) = store.delete(&path).await {
            tracing::warn!(key, error = %e, "the probe object could not be deleted");
        }
        Ok(())
    };
    match tokio::time::timeout(within, probe).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within {} s writing the probe object `{key}`",
            within.as_secs()
        )),
    }
}

impl Config {
    /// [`check_store`] on this configuration's store and prefix, within
    /// [`CHECK_TIMEOUT`].
    pub async fn check_store(&self) -> Result<(), ServerError> {
        let store = self.store_config().build()?;
        check_store(&*store, &self.prefix, CHECK_TIMEOUT)
            .await
            .map_err(|message| ServerError::Check {
                store: self.describe_store(),
                message,
            })
    }
}

fn log_config(c: &Config) {
    let credentials = match (&c.access_key_id, &c.secret_access_key) {
        (Some(_), Some(_)) => "from the secret file",
        (None, None) => "from the environment",
        _ => "partly from the secret file",
    };
    tracing::info!(
        v_port = c.port,
        store = %c.describe_store(),
        format = %c.describe_format(),
        flushSize = c.flush_size,
        scheduledInterval = c.scheduled_interval.as_secs(),
        timeInterval = %c.time_interval,
        spoolDir = %c.spool_dir.display(),
        fsync = ?c.fsync,
        maxBodyBytes = c.max_body_bytes,
        region = c.region.as_deref().unwrap_or("(default)"),
        credentials,
        authToken = if c.http.auth_token.is_some() { "set" } else { "none" },
        tls = c.http.tls(),
        maxConcurrentRequests = c.http.max_concurrent_requests,
        readTimeout = c.http.read_timeout.as_secs(),
        shards = c.shards,
        "configuration"
    );
    if !c.bind_address.is_loopback() && c.http.auth_token.is_none() {
        tracing::warn!(
            bindAddress = %c.bind_address,
            "listening beyond loopback without `authToken`: anyone who reaches the port writes into the store"
        );
    }
}

#[cfg(test)]
mod tests;
