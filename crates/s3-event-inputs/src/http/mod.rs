//! Serving HTTP inputs: one router for all of them ([`Routes`]: the inputs
//! mounted, `GET /health`, `GET /metrics` from the process-wide
//! [`prometheus`] recorder), and one way to expose it ([`serve`]): a bearer
//! token, TLS (rustls, certificate and key from PEM files), a bound on
//! concurrent requests and a read timeout. The three HTTP programs (the sink
//! server, the relay, the ingest notifications) are served this way, so
//! they all answer and refuse the same way:
//!
//! | Refusal | Status | Counter `s3_event_http_refused_total{server, reason}` |
//! |---|---|---|
//! | no or wrong `Authorization: Bearer <token>` (every route but `GET /health`) | `401` with `WWW-Authenticate: Bearer` | `unauthorized` |
//! | more than `max_concurrent_requests` requests in flight | `429` with `Retry-After: 1` | `overloaded` |
//! | the request body not received within `read_timeout` of the request's start | `408` | `read_timeout` |
//!
//! Headers not received within `read_timeout` (and a connection that sends
//! no request at all) get the connection closed; a TLS handshake has 10 s.
//!
//! ```no_run
//! use s3_event_inputs::http::{serve, shutdown_signal, HttpOptions, Routes};
//!
//! # async fn run(input: axum::Router) -> Result<(), Box<dyn std::error::Error>> {
//! let app = Routes::new().input(input).into_router();
//! let opts = HttpOptions { auth_token: Some("s3cr3t".into()), ..HttpOptions::default() };
//! let listener = std::net::TcpListener::bind("127.0.0.1:8080")?;
//! serve(listener, app, &opts, "mine", shutdown_signal()).await?;
//! # Ok(()) }
//! ```

mod routes;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use subtle::ConstantTimeEq;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::ServiceBuilder;

pub use routes::Routes;

/// Default [`HttpOptions::max_concurrent_requests`].
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;
/// Default [`HttpOptions::read_timeout`].
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A secret string (a token, a key): `Debug` and `Display` print
/// `<redacted>`. Deserializes from a non-empty string without surrounding
/// spaces.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        if s.is_empty() || s.trim() != s {
            return Err(serde::de::Error::custom(
                "a secret must be non-empty, without surrounding spaces",
            ));
        }
        Ok(Secret(s))
    }
}

/// How an HTTP input is exposed; see the [module docs](self).
/// Deserializes from the field names (`read_timeout` as
/// `read_timeout_secs`), every key optional, unknown keys refused.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpOptions {
    /// When set, every request but `GET /health` must carry
    /// `Authorization: Bearer <token>` (compared in constant time).
    pub auth_token: Option<Secret>,
    /// PEM certificate chain: with `tls_key_file`, serve HTTPS.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Requests handled at once; more are answered `429` at once.
    pub max_concurrent_requests: usize,
    /// Time a client has to send a whole request (key `read_timeout_secs`).
    #[serde(rename = "read_timeout_secs", deserialize_with = "positive_secs")]
    pub read_timeout: Duration,
}

fn positive_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match <u64 as serde::Deserialize>::deserialize(d)? {
        0 => Err(serde::de::Error::custom("must be > 0")),
        n => Ok(Duration::from_secs(n)),
    }
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            auth_token: None,
            tls_cert_file: None,
            tls_key_file: None,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            read_timeout: DEFAULT_READ_TIMEOUT,
        }
    }
}

impl HttpOptions {
    /// Whether TLS is configured.
    pub fn tls(&self) -> bool {
        self.tls_cert_file.is_some()
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls() {
            "https"
        } else {
            "http"
        }
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}

/// The counter of refused requests.
pub const REFUSED_METRIC: &str = "s3_event_http_refused_total";

fn refused(server: &'static str, reason: &'static str) {
    metrics::counter!(REFUSED_METRIC, "server" => server, "reason" => reason).increment(1);
}

/// `app` behind the token check, the concurrency bound and the body read
/// timeout of `opts` (the header read timeout and TLS are the listener's:
/// see [`serve`]). `server` labels the counters.
pub fn protect(app: Router, opts: &HttpOptions, server: &'static str) -> Router {
    // Each `layer` wraps what is there: the read timeout is innermost, the
    // concurrency bound outermost (a request holds its slot while its body
    // is read).
    let mut app = app.layer(middleware::from_fn_with_state(
        (opts.read_timeout, server),
        read_timeout,
    ));
    if let Some(token) = &opts.auth_token {
        let expected: Arc<[u8]> = format!("Bearer {}", token.expose()).into_bytes().into();
        app = app.layer(middleware::from_fn_with_state(
            (expected, server),
            require_token,
        ));
    }
    app.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(move |_: BoxError| async move {
                refused(server, "overloaded");
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, "1")],
                    "too many requests in flight; retry\n",
                )
            }))
            .layer(LoadShedLayer::new())
            .layer(GlobalConcurrencyLimitLayer::new(
                opts.max_concurrent_requests.max(1),
            )),
    )
}

async fn require_token(
    State((expected, server)): State<(Arc<[u8]>, &'static str)>,
    req: Request,
    next: Next,
) -> Response {
    let open = req.method() == Method::GET && req.uri().path() == "/health";
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .map_or(&[][..], |v| v.as_bytes());
    if open || bool::from(given.ct_eq(&expected)) {
        return next.run(req).await;
    }
    refused(server, "unauthorized");
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "missing or wrong `Authorization: Bearer <token>`\n",
    )
        .into_response()
}

async fn read_timeout(
    State((after, server)): State<(Duration, &'static str)>,
    req: Request,
    next: Next,
) -> Response {
    let expired = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let body = Body::new(DeadlineBody {
        inner: body,
        deadline: Box::pin(tokio::time::sleep(after)),
        expired: Arc::clone(&expired),
    });
    let resp = next.run(Request::from_parts(parts, body)).await;
    if !expired.load(Ordering::Acquire) {
        return resp;
    }
    refused(server, "read_timeout");
    (
        StatusCode::REQUEST_TIMEOUT,
        [(header::CONNECTION, "close")],
        "the request was not received within the read timeout\n",
    )
        .into_response()
}

/// A request body that fails once its deadline passes, and says so.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.expired.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(axum::Error::new("read timeout"))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A TLS error: the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct TlsError {
    /// The certificate or key file.
    pub path: PathBuf,
    /// What is wrong (never the key itself).
    pub message: String,
}

/// Reads the PEM certificate chain and private key of `opts` into a rustls
/// server configuration (ring, TLS 1.2 and 1.3, HTTP/1.1 by ALPN).
/// `Ok(None)` without TLS.
pub fn tls_config(opts: &HttpOptions) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (&opts.tls_cert_file, &opts.tls_key_file) else {
        return Ok(None);
    };
    let err = |path: &PathBuf, message: String| TlsError {
        path: path.clone(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| err(cert, format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(err(cert, "holds no certificate".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| err(key, format!("not a PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| err(key, format!("does not go with the certificate: {e}")))?;
    // HTTP/1.1 only: a request refused before its body is read (401, 408,
    // 429) ends an HTTP/2 stream with RST_STREAM, which some clients (curl
    // 7.88) report as a framing error instead of the status.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// Serves `app` on `listener` with `opts` (see [`protect`]; TLS when
/// configured, certificate and key read again on SIGHUP) until `shutdown`
/// completes, then stops accepting and gives requests in flight
/// `read_timeout` + 10 s to finish. `server` labels the counters (`sink`,
/// `relay`, ...).
pub async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    opts: &HttpOptions,
    server: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = tls_config(opts).map_err(std::io::Error::other)?;
    let app = protect(app, opts, server).into_make_service();
    let handle = axum_server::Handle::new();
    let grace = opts.read_timeout + Duration::from_secs(10);
    let stopper = handle.clone();
    let stop = tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(grace));
    });
    let log_accept_error = move |_: Option<&std::net::SocketAddr>, e: &std::io::Error| {
        tracing::warn!(server, error = %e, "accepting a connection failed");
    };
    let served = match tls {
        None => {
            let mut s = axum_server::from_tcp(listener)?
                .handle(handle)
                .first_request_timeout(opts.read_timeout)
                .accept_error_handler(log_accept_error);
            s.http_builder()
                .http1()
                .header_read_timeout(opts.read_timeout);
            s.serve(app).await
        }
        Some(config) => {
            let rustls = axum_server::tls_rustls::RustlsConfig::from_config(config);
            let reload = tokio::spawn(reload_on_sighup(rustls.clone(), opts.clone(), server));
            let mut s = axum_server::tls_rustls::from_tcp_rustls(listener, rustls)?
                .handle(handle)
                .first_request_timeout(opts.read_timeout)
                .accept_error_handler(log_accept_error);
            s.http_builder()
                .http1()
                .header_read_timeout(opts.read_timeout);
            let served = s.serve(app).await;
            reload.abort();
            served
        }
    };
    stop.abort();
    served
}

/// Reads the certificate and key again on every SIGHUP; a bad pair is
/// logged and the one in use kept.
async fn reload_on_sighup(
    rustls: axum_server::tls_rustls::RustlsConfig,
    opts: HttpOptions,
    server: &'static str,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            match tls_config(&opts) {
                Ok(Some(c)) => {
                    rustls.reload_from_config(c);
                    tracing::info!(server, "SIGHUP: TLS certificate and key reloaded");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(server, error = %e, "SIGHUP: TLS reload failed; keeping the certificate in use")
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (rustls, opts, server);
}

/// The buckets (seconds) of every `*_request_duration_seconds` histogram.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus recorder, installed on first use; what
/// `GET /metrics` renders. Histograms named `*_request_duration_seconds`
/// get latency buckets from 0.5 ms to 10 s. If another global recorder is
/// installed already, `/metrics` shows nothing.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_request_duration_seconds".to_owned()),
                    LATENCY_BUCKETS,
                )
                .expect("the bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM: the shutdown signal
/// of the `s3-event` programs.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
