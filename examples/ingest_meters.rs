//! Meter ingest from a bucket, the way Amberflo's S3 ingest works (seed 004):
//! meter files dropped under `ingest/` (a JSON array or NDJSON, gzip when the
//! key ends in `.gz`) are read, every record is validated (`customerId`,
//! `meterApiName`, numeric `meterValue`, `meterTimeInMillis`, optional string
//! `dimensions`), the valid ones are written out as gzip NDJSON objects, and
//! for a bad file or bad records a report
//! `failed-requests/<YYYY-MM-DD>/<original key>.reason.txt` naming line and
//! reason is written back into the bucket.
//!
//! ```text
//! cargo run --example ingest_meters --features ingest            # ./bucket/ingest/ -> ./meters/
//! cargo run --example ingest_meters --features ingest -- --config ingest.json
//! ```
//!
//! Objects are found by a poller (a listing of the prefix every
//! `pollIntervalMillis`, diffed against a cursor file) and, when `listen` is
//! set, also by S3 notifications POSTed to that address (MinIO/AIStor
//! webhooks, SNS, SQS bodies, `{"Records": [...]}`).
//!
//! Delivery: the valid records of an object are appended to the sink's spool
//! and fsynced *before* the object is acknowledged to the poller, and the
//! poller writes its cursor only after that. A restart therefore never loses
//! a valid record and does not read an object again once its poll has
//! finished; a crash inside a poll makes the objects of that poll be read
//! again (at least once). SIGINT/SIGTERM: the running poll finishes, every
//! batch is uploaded, exit 0.
//!
//! In a local directory, write a file under another name and rename it into
//! `ingest/` (S3 puts are atomic, local writes are not): a file listed while
//! half-written is read as it is then and read again once it changes.
//!
//! Configuration (`--config FILE`, JSON; every key optional, unknown keys
//! refused):
//!
//! ```json
//! {
//!   "input": { "store": "local", "dir": "./bucket" },
//!   "prefix": "ingest/",
//!   "pollIntervalMillis": 1000,
//!   "cursorFile": "./ingest_meters.cursor",
//!   "output": { "store": "local", "dir": "./meters" },
//!   "outputPrefix": "",
//!   "spoolDir": "./ingest_meters.spool",
//!   "flushSize": 1000,
//!   "flushIntervalMillis": 10000,
//!   "listen": "127.0.0.1:8091",
//!   "authToken": "s3cr3t"
//! }
//! ```
//!
//! A store is `{"store": "local", "dir": …}` or `{"store": "s3", "bucket": …,
//! "endpoint": …, "region": …, "accessKeyId": …, "secretAccessKey": …,
//! "allowHttp": …, "virtualHostedStyle": …}` (credentials default to the
//! `AWS_*` environment). Secrets are never printed.

use std::collections::{HashMap, VecDeque};

/// How many ingested keys the process remembers to skip duplicates
/// announced both by notification and by the poller.
const DONE_LIMIT: usize = 100_000;

/// Ingested keys with their ETags, and the keys in the order they came.
type Done = (HashMap<String, Option<String>>, VecDeque<String>);
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use s3_event::core::EventRecord;
use s3_event::sink::ingest::ingest_object;
use s3_event::sink::{
    Compression, Encoding, S3Config, Sink, SpoolFsync, SpoolOptions, StoreConfig,
};
use s3_event::targets::poller::{Poller, PollerConfig};
use s3_event::targets::receiver::{AuthToken, Receiver, ReceiverConfig};
use serde::Deserialize;

const USAGE: &str = "usage: ingest_meters [--config FILE]";

/// Where objects are read from or written to.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StoreSpec {
    /// `local` (default) or `s3`.
    #[serde(default)]
    store: Option<String>,
    /// The directory of a `local` store.
    dir: Option<PathBuf>,
    /// The bucket of an `s3` store.
    bucket: Option<String>,
    /// The endpoint of an S3-compatible store.
    endpoint: Option<String>,
    /// The region.
    region: Option<String>,
    /// The access key id (default: `AWS_ACCESS_KEY_ID`).
    access_key_id: Option<String>,
    /// The secret access key (default: `AWS_SECRET_ACCESS_KEY`).
    secret_access_key: Option<String>,
    /// Allow `http://` endpoints.
    #[serde(default)]
    allow_http: bool,
    /// Virtual-hosted-style requests instead of path style.
    #[serde(default)]
    virtual_hosted_style: bool,
}

/// The configuration file.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    input: Option<StoreSpec>,
    prefix: Option<String>,
    poll_interval_millis: Option<u64>,
    cursor_file: Option<PathBuf>,
    output: Option<StoreSpec>,
    output_prefix: Option<String>,
    spool_dir: Option<PathBuf>,
    flush_size: Option<usize>,
    flush_interval_millis: Option<u64>,
    listen: Option<SocketAddr>,
    auth_token: Option<String>,
}

/// The configuration after defaults and checks.
struct Settings {
    input: StoreConfig,
    input_bucket: String,
    prefix: String,
    poll_interval: Duration,
    cursor_file: PathBuf,
    output: StoreConfig,
    output_prefix: String,
    spool_dir: PathBuf,
    flush_size: usize,
    flush_interval: Duration,
    listen: Option<SocketAddr>,
    auth_token: Option<AuthToken>,
}

fn store_config(
    spec: Option<StoreSpec>,
    key: &str,
    default_dir: &str,
) -> Result<(StoreConfig, String), String> {
    let spec = spec.unwrap_or_default();
    match spec.store.as_deref().unwrap_or("local") {
        "local" => {
            for (set, name) in [
                (spec.bucket.is_some(), "bucket"),
                (spec.endpoint.is_some(), "endpoint"),
                (spec.region.is_some(), "region"),
                (spec.access_key_id.is_some(), "accessKeyId"),
                (spec.secret_access_key.is_some(), "secretAccessKey"),
            ] {
                if set {
                    return Err(format!("`{key}.{name}` is only for `\"store\": \"s3\"`"));
                }
            }
            let dir = spec.dir.unwrap_or_else(|| PathBuf::from(default_dir));
            if dir.as_os_str().is_empty() {
                return Err(format!("`{key}.dir` must not be empty"));
            }
            Ok((StoreConfig::Local { dir }, "bucket".into()))
        }
        "s3" => {
            if spec.dir.is_some() {
                return Err(format!("`{key}.dir` is only for `\"store\": \"local\"`"));
            }
            let bucket = match spec.bucket {
                Some(b) if !b.trim().is_empty() => b,
                _ => {
                    return Err(format!(
                        "`{key}.bucket` is required for `\"store\": \"s3\"`"
                    ))
                }
            };
            let c = S3Config {
                bucket: bucket.clone(),
                region: spec.region,
                endpoint: spec.endpoint,
                access_key_id: spec.access_key_id,
                secret_access_key: spec.secret_access_key,
                allow_http: spec.allow_http,
                virtual_hosted_style: spec.virtual_hosted_style,
                ..S3Config::default()
            };
            Ok((StoreConfig::S3(c), bucket))
        }
        other => Err(format!(
            "`{key}.store`: `{other}` is not a store kind (expected `local` or `s3`)"
        )),
    }
}

fn positive(key: &str, v: Option<u64>, default: u64) -> Result<u64, String> {
    match v {
        Some(0) => Err(format!("`{key}` must be > 0")),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

fn load(path: Option<&PathBuf>) -> Result<Settings, String> {
    let file = match path {
        Some(p) => {
            let text = std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            let de = &mut serde_json::Deserializer::from_slice(&text);
            serde_path_to_error::deserialize::<_, FileConfig>(de).map_err(|e| {
                let at = e.path().to_string();
                if at == "." {
                    format!("{}: {}", p.display(), e.inner())
                } else {
                    format!("{}: `{at}`: {}", p.display(), e.inner())
                }
            })?
        }
        None => FileConfig::default(),
    };
    let (input, input_bucket) = store_config(file.input, "input", "./bucket")?;
    let (output, _) = store_config(file.output, "output", "./meters")?;
    let prefix = file.prefix.unwrap_or_else(|| "ingest/".into());
    let prefix = prefix.trim_matches('/').to_owned();
    let flush_size = positive(
        "flushSize",
        file.flush_size.map(|v| v as u64),
        s3_event::sink::DEFAULT_FLUSH_SIZE as u64,
    )? as usize;
    let auth_token = match file.auth_token {
        Some(t) if t.is_empty() => return Err("`authToken` must not be empty".into()),
        Some(t) => {
            if file.listen.is_none() {
                return Err("`authToken` needs `listen`".into());
            }
            Some(AuthToken::new(t))
        }
        None => None,
    };
    Ok(Settings {
        input,
        input_bucket,
        prefix,
        poll_interval: Duration::from_millis(positive(
            "pollIntervalMillis",
            file.poll_interval_millis,
            1000,
        )?),
        cursor_file: file
            .cursor_file
            .unwrap_or_else(|| "./ingest_meters.cursor".into()),
        output,
        output_prefix: file.output_prefix.unwrap_or_default(),
        spool_dir: file
            .spool_dir
            .unwrap_or_else(|| "./ingest_meters.spool".into()),
        flush_size,
        flush_interval: Duration::from_millis(positive(
            "flushIntervalMillis",
            file.flush_interval_millis,
            10_000,
        )?),
        listen: file.listen,
        auth_token,
    })
}

/// Reads objects and forwards their valid records; shared by the poller and
/// the receiver.
struct Ingest {
    input: Arc<dyn object_store::ObjectStore>,
    prefix: String,
    sink: Arc<Sink>,
    /// Objects read in this process (key → ETag), so that an object
    /// announced by a notification is not read again when the poller lists
    /// it (and the other way round); the oldest are forgotten past
    /// [`DONE_LIMIT`], so memory stays bounded.
    done: Mutex<Done>,
}

impl Ingest {
    /// Handles a batch of records: every `ObjectCreated` under the prefix is
    /// read, its valid records pushed (durable when this returns `Ok`).
    async fn handle(&self, records: Vec<EventRecord>) -> Result<(), String> {
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
                    // Retrying cannot help: skip it, say so.
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
            if etag.is_some()
                && self
                    .done
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .0
                    .get(&key)
                    == Some(&etag)
            {
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

    async fn ingest(&self, key: &str) -> Result<(), String> {
        let today = chrono::Utc::now().date_naive();
        let outcome = match ingest_object(&*self.input, key, today).await {
            Ok(o) => o,
            Err(s3_event::sink::Error::Store {
                source: object_store::Error::NotFound { .. },
            }) => {
                tracing::warn!(key, "object gone before it could be read; skipped");
                return Ok(());
            }
            Err(e) => return Err(format!("reading `{key}`: {e}")),
        };
        let values: Vec<serde_json::Value> = outcome
            .valid
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        if !values.is_empty() {
            self.sink
                .push_batch(&values)
                .await
                .map_err(|e| format!("forwarding the records of `{key}`: {e}"))?;
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

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let mut config_path = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_string_lossy().as_ref() {
            "--config" => match args.next() {
                Some(v) => config_path = Some(PathBuf::from(v)),
                None => {
                    eprintln!("ingest_meters: --config needs a value\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("ingest_meters: unknown argument `{other}`\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let settings = match load(config_path.as_ref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ingest_meters: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ingest_meters: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ingest_meters: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(s: Settings) -> Result<(), String> {
    let input = s.input.build().map_err(|e| format!("input store: {e}"))?;
    let output = s.output.build().map_err(|e| format!("output store: {e}"))?;
    let sink = Sink::builder()
        .with_store(output)
        .with_prefix(s.output_prefix.clone())
        .with_encoding(Encoding::Ndjson)
        .with_compression(Compression::gzip())
        .with_flush_size(s.flush_size)
        .with_flush_interval(s.flush_interval)
        // fsync before a push returns: the poller's cursor may then move on.
        .with_spool(SpoolOptions::new(&s.spool_dir).with_fsync(SpoolFsync::Always))
        .build()
        .map_err(|e| format!("sink: {e}"))?;
    let sink = Arc::new(sink);
    let ingest = Arc::new(Ingest {
        input: input.clone(),
        prefix: s.prefix.clone(),
        sink: sink.clone(),
        done: Mutex::new((HashMap::new(), VecDeque::new())),
    });

    let mut pc = PollerConfig::new(s.input_bucket.clone(), &s.cursor_file);
    pc.prefix = (!s.prefix.is_empty()).then(|| s.prefix.clone());
    pc.interval = s.poll_interval;
    // One object per handler call: a failure holds back only that object.
    pc.batch_size = 1;
    let poller = Poller::open(input, pc).map_err(|e| e.to_string())?;

    println!(
        "ingest_meters: polling {}/{}/ every {} ms (cursor {}); valid records as gzip NDJSON \
         under {}{}; failure reports under {}/failed-requests/<date>/",
        s.input,
        s.prefix,
        s.poll_interval.as_millis(),
        s.cursor_file.display(),
        s.output,
        if s.output_prefix.is_empty() {
            String::new()
        } else {
            format!(" prefix {}", s.output_prefix)
        },
        s.input,
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };

    let mut tasks = Vec::new();
    let handler = {
        let ingest = ingest.clone();
        move |records: Vec<EventRecord>| {
            let ingest = ingest.clone();
            async move { ingest.handle(records).await }
        }
    };
    tasks.push(tokio::spawn(poller.run(handler, stopped(stop_rx.clone()))));

    if let Some(addr) = s.listen {
        let config = ReceiverConfig {
            auth_token: s.auth_token.clone(),
            ..Default::default()
        };
        let handler = {
            let ingest = ingest.clone();
            move |records: Vec<EventRecord>| {
                let ingest = ingest.clone();
                async move { ingest.handle(records).await }
            }
        };
        let receiver = Receiver::new(config, handler).map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        println!("ingest_meters: receiving S3 notifications on http://{local}/");
        let rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, receiver.router())
                .with_graceful_shutdown(stopped(rx))
                .await
            {
                tracing::error!(error = %e, "receiver failed");
            }
        }));
    }

    shutdown_signal().await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    sink.shutdown()
        .await
        .map_err(|e| format!("flushing: {e}"))?;
    let st = sink.stats();
    println!(
        "ingest_meters: stopped; {} records forwarded in {} objects",
        st.events_accepted, st.objects_uploaded
    );
    Ok(())
}
