//! The notification relay: the service to run beside an object store. It
//! receives S3 notifications (MinIO/AIStor webhooks, AWS SNS, SQS bodies)
//! and/or polls a bucket, and routes every record through the
//! [`Notifier`](s3_event::targets::Notifier) to the configured targets.
//!
//! ```text
//! cargo run --release --example relay --features relay          # embedded default
//! cargo run --release --example relay --features relay,redis -- --config relay.json
//! ```
//!
//! # Embedded default (no `--config`)
//!
//! A webhook receiver on `127.0.0.1:8090` (`POST /`, no token) and every
//! event written as gzip NDJSON objects under `./relay-data/events/`
//! (hourly partitions by event time, an object per 1000 events or 10 s),
//! with a durable queue in `./relay-data/queue/` and the sink's spool in
//! `./relay-data/spool/`. `GET /health` and `GET /metrics` (Prometheus).
//!
//! # Configuration file
//!
//! JSON; unknown keys and bad values stop the relay at start with a message
//! naming the key, exit status 2.
//!
//! ```json
//! {
//!   "listen": "0.0.0.0:8090",
//!   "region": "us-east-1",
//!   "targets": {"redis": {"1": {"address": "127.0.0.1:6379", "key": "bucketevents",
//!                               "format": "access", "queue_dir": "/var/lib/relay/redis-1"}}},
//!   "rules": "<NotificationConfiguration>…</NotificationConfiguration>",
//!   "delivery": "async",
//!   "receiver": {"auth_token": "s3cr3t",
//!                "sns": {"verify_signatures": true, "confirm_subscriptions": false,
//!                        "topic_arns": [], "certificate_file": null,
//!                        "max_age_secs": 3600, "verify_sqs_wrapped": true}},
//!   "poller": {"store": {"local_dir": "/srv/bucket"}, "bucket": "photos",
//!              "prefix": "uploads", "interval_secs": 30,
//!              "cursor_file": "/var/lib/relay/poller.cursor"},
//!   "directory": {"dir": "./relay-data", "queue_dir": "./relay-data/queue"},
//!   "shutdown_timeout_secs": 10
//! }
//! ```
//!
//! - `listen` (default `127.0.0.1:8090`; `--listen` overrides it).
//! - `region`: the region of the targets' ARNs
//!   (`arn:minio:sqs:<region>:<id>:<type>`; default `us-east-1`).
//! - `targets`: MinIO's target configuration, exactly what
//!   `NotifyConfig::from_json` takes (`{"<type>": {"<id>": {…}}}`, MinIO key
//!   names, `queue_dir` per target, an absolute path as in MinIO).
//!   `MINIO_NOTIFY_*` / `S3E_NOTIFY_*`
//!   environment variables are overlaid, as in MinIO. Types need their
//!   cargo feature (`--features relay,redis`).
//! - `directory`: the built-in output writing gzip NDJSON objects to a local
//!   directory (`dir`, `id` (default `local`; ARN
//!   `arn:minio:sqs:<region>:<id>:directory`), `queue_dir`, `flush_size`,
//!   `flush_interval_secs`).
//! - `rules`: a `NotificationConfiguration`, as AWS XML or JSON, inline (a
//!   string starting with `<` or `{`, or a JSON object) or in a file (any
//!   other string: its path). Without `rules`, every event goes to every
//!   target.
//! - `delivery`: `async` (default) or `sync`; see below.
//! - `receiver`: `enable` (default true), `auth_token`, `max_body_bytes`,
//!   `sns` (`verify_signatures`, `confirm_subscriptions`, `topic_arns`,
//!   `certificate_file`, `max_age_secs`, `verify_sqs_wrapped`), as in
//!   `s3_event::targets::receiver`.
//! - `poller` (optional): `store` (`{"local_dir": …}` or `{"s3": {"bucket",
//!   "endpoint", "region", "access_key_id", "secret_access_key",
//!   "allow_http"}}`), `bucket` (the name put in records), `prefix`,
//!   `interval_secs` (default 30), `cursor_file`, `emit_existing` (default
//!   true).
//!
//! Secrets (`auth_token`, passwords, keys) are never logged.
//!
//! # When the HTTP answer comes
//!
//! A POST is answered 200 only after every record it carried was handed to
//! `Notifier::send` and that call returned. In `async` mode, `send` returns
//! once the record is appended to each matching target's queue: with
//! `queue_dir` set, appended **and fsynced** (the queue store's
//! `append_durable`), so an acknowledged event survives `kill -9` and is
//! delivered after a restart on the same `queue_dir` (at least once; a
//! record acknowledged by the target just before a crash may be sent
//! again). Without `queue_dir` the queue is in memory and a crash loses
//! what is queued. In `sync` mode the answer waits until every matching
//! target confirmed delivery (or dead-lettered the record). A target whose
//! queue is full (`queue_limit`) drops the record; the relay then answers
//! 503 so that the sender retries. Records with an unparsable event name or
//! key are counted and skipped (a retry could not fix them).
//!
//! # Shutdown
//!
//! SIGINT or SIGTERM: stop accepting connections, stop the poller, let the
//! targets drain for `shutdown_timeout_secs` (what is left stays in
//! `queue_dir`), flush the directory output, exit 0.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::routing::get;
use axum::Router;
use s3_event::core::{
    EventMask, EventRecord, NotificationConfiguration, NotificationRule, RuleSet, Target,
    TargetError, TargetId,
};
use s3_event::sink::{Sink, SpoolOptions, StoreConfig};
use s3_event::targets::notifier::{DeliveryMode, Notifier, TargetOptions};
use s3_event::targets::poller::{Poller, PollerConfig};
use s3_event::targets::receiver::{AuthToken, Receiver, ReceiverConfig, SnsConfig};
use s3_event::targets::NotifyConfig;
use serde::Deserialize;

const USAGE: &str = "usage: relay [--config FILE] [--listen ADDR]";

// ---------------------------------------------------------------------------
// Configuration

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RelayConfig {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_region")]
    region: String,
    #[serde(default)]
    targets: Option<serde_json::Value>,
    #[serde(default)]
    directory: Option<DirectoryConfig>,
    #[serde(default)]
    rules: Option<serde_json::Value>,
    #[serde(default)]
    delivery: Delivery,
    #[serde(default)]
    receiver: ReceiverSection,
    #[serde(default)]
    poller: Option<PollerSection>,
    #[serde(default = "default_shutdown_secs")]
    shutdown_timeout_secs: u64,
}

fn default_listen() -> String {
    "127.0.0.1:8090".into()
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_shutdown_secs() -> u64 {
    10
}
fn yes() -> bool {
    true
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Delivery {
    #[default]
    Async,
    Sync,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryConfig {
    #[serde(default = "default_dir")]
    dir: PathBuf,
    #[serde(default = "default_dir_id")]
    id: String,
    #[serde(default)]
    queue_dir: Option<PathBuf>,
    #[serde(default = "default_flush_size")]
    flush_size: usize,
    #[serde(default = "default_flush_interval")]
    flush_interval_secs: u64,
}

fn default_dir() -> PathBuf {
    "./relay-data".into()
}
fn default_dir_id() -> String {
    "local".into()
}
fn default_flush_size() -> usize {
    1000
}
fn default_flush_interval() -> u64 {
    10
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiverSection {
    #[serde(default = "yes")]
    enable: bool,
    #[serde(default)]
    auth_token: Option<String>,
    #[serde(default)]
    max_body_bytes: Option<usize>,
    #[serde(default)]
    sns: SnsSection,
}

impl Default for ReceiverSection {
    fn default() -> Self {
        ReceiverSection {
            enable: true,
            auth_token: None,
            max_body_bytes: None,
            sns: SnsSection::default(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnsSection {
    #[serde(default = "yes")]
    verify_signatures: bool,
    #[serde(default)]
    confirm_subscriptions: bool,
    #[serde(default)]
    topic_arns: Vec<String>,
    #[serde(default)]
    certificate_file: Option<PathBuf>,
    #[serde(default = "default_max_age")]
    max_age_secs: u64,
    #[serde(default = "yes")]
    verify_sqs_wrapped: bool,
}

fn default_max_age() -> u64 {
    3600
}

impl Default for SnsSection {
    fn default() -> Self {
        SnsSection {
            verify_signatures: true,
            confirm_subscriptions: false,
            topic_arns: Vec::new(),
            certificate_file: None,
            max_age_secs: default_max_age(),
            verify_sqs_wrapped: true,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PollerSection {
    store: StoreSection,
    bucket: String,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default = "default_interval")]
    interval_secs: u64,
    cursor_file: PathBuf,
    #[serde(default = "yes")]
    emit_existing: bool,
}

fn default_interval() -> u64 {
    30
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum StoreSection {
    LocalDir(PathBuf),
    S3(S3Section),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct S3Section {
    bucket: String,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    access_key_id: Option<String>,
    #[serde(default)]
    secret_access_key: Option<String>,
    #[serde(default)]
    allow_http: bool,
}

/// The embedded default: webhook in, local directory out.
fn embedded_default() -> RelayConfig {
    RelayConfig {
        listen: default_listen(),
        region: default_region(),
        targets: None,
        directory: Some(DirectoryConfig {
            dir: default_dir(),
            id: default_dir_id(),
            queue_dir: Some(default_dir().join("queue")),
            flush_size: default_flush_size(),
            flush_interval_secs: default_flush_interval(),
        }),
        rules: None,
        delivery: Delivery::Async,
        receiver: ReceiverSection::default(),
        poller: None,
        shutdown_timeout_secs: default_shutdown_secs(),
    }
}

fn load_config(path: &Path) -> Result<RelayConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    let config: RelayConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        if at == "." {
            format!("{}: {}", path.display(), e.inner())
        } else {
            format!("{}: `{at}`: {}", path.display(), e.inner())
        }
    })?;
    config.validate()?;
    Ok(config)
}

impl RelayConfig {
    fn validate(&self) -> Result<(), String> {
        self.listen
            .parse::<SocketAddr>()
            .map_err(|_| format!("`listen`: `{}` is not an address:port", self.listen))?;
        if self.targets.is_none() && self.directory.is_none() {
            return Err("no output: set `targets` and/or `directory`".into());
        }
        if !self.receiver.enable && self.poller.is_none() {
            return Err("no input: `receiver.enable` is false and there is no `poller`".into());
        }
        if let Some(d) = &self.directory {
            if d.flush_size == 0 {
                return Err("`directory.flush_size` must be > 0".into());
            }
            if d.flush_interval_secs == 0 {
                return Err("`directory.flush_interval_secs` must be > 0".into());
            }
        }
        if let Some(p) = &self.poller {
            if p.interval_secs == 0 {
                return Err("`poller.interval_secs` must be > 0".into());
            }
            if p.bucket.is_empty() {
                return Err("`poller.bucket` must not be empty".into());
            }
        }
        if matches!(&self.receiver.auth_token, Some(t) if t.is_empty()) {
            return Err("`receiver.auth_token` must not be empty".into());
        }
        Ok(())
    }

    /// The rules, when configured.
    fn rules(&self) -> Result<Option<NotificationConfiguration>, String> {
        let parse = |text: &str, what: &str| {
            let t = text.trim_start();
            if t.starts_with('<') {
                NotificationConfiguration::from_xml(t).map_err(|e| format!("`rules` ({what}): {e}"))
            } else {
                NotificationConfiguration::from_json(t)
                    .map_err(|e| format!("`rules` ({what}): {e}"))
            }
        };
        match &self.rules {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => {
                let t = s.trim_start();
                if t.starts_with('<') || t.starts_with('{') {
                    parse(t, "inline").map(Some)
                } else {
                    let text = std::fs::read_to_string(s)
                        .map_err(|e| format!("`rules`: cannot read `{s}`: {e}"))?;
                    parse(&text, s).map(Some)
                }
            }
            Some(v @ serde_json::Value::Object(_)) => parse(&v.to_string(), "inline").map(Some),
            Some(_) => {
                Err("`rules` must be a string (XML, JSON or a file path) or a JSON object".into())
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The directory output

/// A target writing records as gzip NDJSON objects under a local directory,
/// through the object-storage [`Sink`] (spooled, so `send_batch` returns
/// once the records are on disk).
struct DirectoryTarget {
    id: TargetId,
    sink: Sink,
}

impl std::fmt::Debug for DirectoryTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectoryTarget")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Target for DirectoryTarget {
    fn id(&self) -> &TargetId {
        &self.id
    }

    async fn send_batch(&self, events: &[EventRecord]) -> Result<(), TargetError> {
        self.sink
            .push_batch(events)
            .await
            .map_err(|e| TargetError::transient(&self.id, e))
    }

    async fn is_active(&self) -> Result<bool, TargetError> {
        Ok(true)
    }

    async fn close(&self) -> Result<(), TargetError> {
        self.sink
            .shutdown()
            .await
            .map_err(|e| TargetError::transient(&self.id, e))
    }

    fn max_batch(&self) -> usize {
        500
    }
}

fn directory_target(
    d: &DirectoryConfig,
    region: &str,
) -> Result<(Arc<dyn Target>, TargetOptions), String> {
    let id = TargetId::new(region, d.id.as_str(), "directory")
        .map_err(|e| format!("`directory.id`: {e}"))?;
    let store = StoreConfig::Local { dir: d.dir.clone() }
        .build()
        .map_err(|e| format!("`directory.dir`: {e}"))?;
    let sink = Sink::builder()
        .with_store(store)
        .with_prefix("events/")
        .with_flush_size(d.flush_size)
        .with_flush_interval(Duration::from_secs(d.flush_interval_secs))
        .with_spool(SpoolOptions::new(d.dir.join("spool")))
        .build()
        .map_err(|e| format!("`directory`: {e}"))?;
    let options = TargetOptions {
        queue_dir: d.queue_dir.clone(),
        ..TargetOptions::default()
    };
    Ok((Arc::new(DirectoryTarget { id, sink }), options))
}

// ---------------------------------------------------------------------------
// Wiring

/// Hands records to the notifier; `Ok` once every one is queued (see the
/// module docs for what that means).
async fn deliver(notifier: &Notifier, records: Vec<EventRecord>) -> Result<(), String> {
    for record in records {
        match notifier.send(record).await {
            Ok(o) if o.dropped > 0 => {
                return Err(format!("queue full for {} target(s)", o.dropped));
            }
            Ok(_) => {}
            Err(s3_event::targets::Error::InvalidRecord { event_name, source }) => {
                tracing::warn!(event_name, error = %source, "record skipped");
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// A target's id and `queue_dir`, for the start-up lines.
type TargetSummary = (String, Option<PathBuf>);

fn build_notifier(config: &RelayConfig) -> Result<(Notifier, Vec<TargetSummary>), String> {
    let targets_json = config.targets.as_ref().map(|v| v.to_string());
    let notify = NotifyConfig::load(targets_json.as_deref(), &config.region)
        .map_err(|e| format!("`targets`: {e}"))?;
    let mut targets = notify
        .build_targets()
        .map_err(|e| format!("`targets`: {e}"))?;
    if let Some(d) = &config.directory {
        targets.push(directory_target(d, &config.region)?);
    }
    if targets.is_empty() {
        return Err("no enabled target".into());
    }
    let rules = match config.rules()? {
        Some(r) => RuleSet::from_config(&r).map_err(|e| format!("`rules`: {e}"))?,
        // Every event to every target.
        None => RuleSet::new(targets.iter().enumerate().map(|(n, (t, _))| {
            NotificationRule::new(format!("all-{n}"), EventMask::ALL, t.id().clone())
        }))
        .map_err(|e| format!("rules: {e}"))?,
    };
    let described = targets
        .iter()
        .map(|(t, o)| (t.id().to_string(), o.queue_dir.clone()))
        .collect();
    let mut builder = Notifier::builder()
        .rules(rules)
        .mode(match config.delivery {
            Delivery::Async => DeliveryMode::Async,
            Delivery::Sync => DeliveryMode::Sync,
        });
    for (t, o) in targets {
        builder = builder.target(t, o);
    }
    let notifier = builder.build().map_err(|e| e.to_string())?;
    Ok((notifier, described))
}

fn receiver_config(r: &ReceiverSection) -> ReceiverConfig {
    let mut c = ReceiverConfig {
        auth_token: r.auth_token.as_ref().map(AuthToken::new),
        sns: SnsConfig {
            verify_signatures: r.sns.verify_signatures,
            confirm_subscriptions: r.sns.confirm_subscriptions,
            topic_arns: r.sns.topic_arns.clone(),
            certificate_file: r.sns.certificate_file.clone(),
            max_age: Duration::from_secs(r.sns.max_age_secs),
            verify_sqs_wrapped: r.sns.verify_sqs_wrapped,
            ..SnsConfig::default()
        },
        ..ReceiverConfig::default()
    };
    if let Some(n) = r.max_body_bytes {
        c.max_body_bytes = n;
    }
    c
}

fn poller_parts(p: &PollerSection, region: &str) -> Result<(Poller, String), String> {
    let store_config = match &p.store {
        StoreSection::LocalDir(dir) => StoreConfig::Local { dir: dir.clone() },
        StoreSection::S3(s) => StoreConfig::S3(s3_event::sink::S3Config {
            bucket: s.bucket.clone(),
            region: s.region.clone(),
            endpoint: s.endpoint.clone(),
            access_key_id: s.access_key_id.clone(),
            secret_access_key: s.secret_access_key.clone(),
            allow_http: s.allow_http,
            ..Default::default()
        }),
    };
    let described = store_config.to_string();
    let store = store_config
        .build()
        .map_err(|e| format!("`poller.store`: {e}"))?;
    let mut pc = PollerConfig::new(p.bucket.clone(), p.cursor_file.clone());
    pc.prefix = p.prefix.clone();
    pc.interval = Duration::from_secs(p.interval_secs);
    pc.region = region.to_owned();
    pc.emit_existing = p.emit_existing;
    let poller = Poller::open(store, pc).map_err(|e| format!("`poller`: {e}"))?;
    Ok((poller, described))
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let mut config_path: Option<PathBuf> = None;
    let mut listen: Option<String> = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy().into_owned();
        let mut value = |name: &str| match args.next() {
            Some(v) => Ok(v),
            None => Err(format!("{name} needs a value\n{USAGE}")),
        };
        let parsed = match arg.as_str() {
            "--config" => value("--config").map(|v| config_path = Some(PathBuf::from(v))),
            "--listen" => value("--listen").map(|v| listen = Some(v.to_string_lossy().into())),
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument `{other}`\n{USAGE}")),
        };
        if let Err(e) = parsed {
            eprintln!("relay: {e}");
            return ExitCode::from(2);
        }
    }
    let mut config = match &config_path {
        Some(p) => match load_config(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("relay: configuration error: {e}");
                return ExitCode::from(2);
            }
        },
        None => embedded_default(),
    };
    if let Some(l) = listen {
        config.listen = l;
        if let Err(e) = config.validate() {
            eprintln!("relay: configuration error: {e}");
            return ExitCode::from(2);
        }
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("relay: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config, config_path.is_none()))
}

async fn run(config: RelayConfig, embedded: bool) -> ExitCode {
    let metrics = s3_event::sink::server::prometheus();
    let (notifier, described) = match build_notifier(&config) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("relay: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let notifier = Arc::new(notifier);
    let handler = {
        let n = Arc::clone(&notifier);
        move |records: Vec<EventRecord>| {
            let n = Arc::clone(&n);
            async move { deliver(&n, records).await }
        }
    };
    let poller = match &config.poller {
        Some(p) => match poller_parts(p, &config.region) {
            Ok(x) => Some(x),
            Err(e) => {
                eprintln!("relay: configuration error: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let receiver = if config.receiver.enable {
        match Receiver::new(receiver_config(&config.receiver), handler.clone()) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("relay: configuration error: `receiver`: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };

    let addr: SocketAddr = config.listen.parse().expect("validated");
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("relay: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    let mut app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get({
                let n = Arc::clone(&notifier);
                move || {
                    let n = Arc::clone(&n);
                    let m = metrics.clone();
                    async move {
                        n.export_metrics();
                        m.render()
                    }
                }
            }),
        );
    if let Some(r) = &receiver {
        app = app.merge(r.router());
    }
    println!(
        "relay: listening on http://{local}{}; GET /health, GET /metrics{}",
        if receiver.is_some() {
            " (POST / : MinIO/AIStor webhooks, SNS, SQS bodies)"
        } else {
            ""
        },
        if embedded {
            " (embedded default; --config FILE to configure)"
        } else {
            ""
        },
    );
    for (id, queue) in &described {
        match queue {
            Some(q) => println!("relay: target {id} (queue_dir {})", q.display()),
            None => println!("relay: target {id} (in-memory queue)"),
        }
    }
    if let Some(d) = &config.directory {
        println!(
            "relay: writing gzip NDJSON objects under {}/events/ (spool {}/spool)",
            d.dir.display(),
            d.dir.display()
        );
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let poller_task = poller.map(|(poller, store)| {
        println!(
            "relay: polling {store} every {} s",
            config.poller.as_ref().map_or(0, |p| p.interval_secs)
        );
        let mut rx = stop_rx.clone();
        let h = handler.clone();
        tokio::spawn(async move {
            poller
                .run(h, async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
        })
    });
    drop(handler);

    let mut rx = stop_rx.clone();
    let signal = async move {
        tokio::select! {
            _ = s3_event::sink::server::shutdown_signal() => {}
            _ = rx.wait_for(|s| *s) => {}
        }
        let _ = stop_tx.send(true);
    };
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .await;
    if let Some(t) = poller_task {
        let _ = t.await;
    }
    drop(receiver);
    // Every clone of the notifier lived in the router and the poller; give
    // connection tasks a moment to drop theirs.
    let mut notifier = notifier;
    let mut tries = 0;
    let notifier = loop {
        match Arc::try_unwrap(notifier) {
            Ok(n) => break Some(n),
            Err(_) if tries >= 100 => break None,
            Err(n) => {
                notifier = n;
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    match notifier {
        Some(n) => {
            n.shutdown(Duration::from_secs(config.shutdown_timeout_secs))
                .await
        }
        None => tracing::warn!("notifier still in use; leaving its queues on disk"),
    }
    match served {
        Ok(()) => {
            eprintln!("relay: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("relay: {e}");
            ExitCode::FAILURE
        }
    }
}
