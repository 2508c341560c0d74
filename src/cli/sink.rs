//! `s3-event sink`: the CloudEvents HTTP sink server, or (`--source
//! kafka`) the Kafka source: a consumer group writing topics to the store.

use std::path::PathBuf;

use s3_event::sink_server::{shutdown_signal, Config, Server, ServerError, Sources};

use super::{print_json, runtime, Exit};

/// Configuration: the seed's `config.json` keys (`v_port`, `region`,
/// `bucketName`, `flushSize`, `scheduledInterval`, `timeInterval`), its
/// base64 `secret.json` (`awsAccessKeyID`, `awsSecretAccessKey`), and
/// `store`, `localDir`, `endpoint`, `prefix`, `encoding`, `compression`,
/// `fsync`, `spoolDir`, `maxBodyBytes`, `bindAddress`, `authToken`,
/// `tlsCertFile`, `tlsKeyFile`, `maxConcurrentRequests`, `readTimeout`,
/// `partitionTemplate`, `partitionTime`, `objectNames`, `shards`. An
/// environment variable of the same name overrides each key. With no
/// configuration: port 8080 on loopback, gzip NDJSON under ./data/, spool
/// ./spool/.
///
/// With `--source kafka` the events come from Kafka topics instead, read by
/// a consumer group (run several instances with the same `--group` to share
/// the partitions): the store, prefix, encoding, compression, flushSize,
/// scheduledInterval and timeInterval keys apply (time partitions follow
/// the messages' Kafka timestamps); there is no spool and no event port
/// (`--metrics-addr` serves `/health` and `/metrics`). Every message lands
/// exactly once, across crashes and rebalances.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The configuration file (else $v_config_path, else
    /// /vance/config/config.json when it exists).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The secret file (else $v_secret_path, else /vance/secret/secret.json
    /// when it exists).
    #[arg(long, value_name = "FILE")]
    secret: Option<PathBuf>,
    /// The port, over `v_port`.
    #[arg(long)]
    port: Option<u16>,
    /// Validate the configuration, print it (secrets redacted) and exit: 0
    /// when valid, 2 when not.
    #[arg(long)]
    check_config: bool,
    /// Start without first checking that the store takes a write.
    #[arg(long)]
    skip_check: bool,
    /// Where events come from: the CloudEvents HTTP server, or Kafka topics
    /// read by a consumer group.
    #[arg(long, value_enum, default_value = "http")]
    source: Source,
    /// Kafka: the bootstrap brokers, `host:port[,host:port…]`.
    #[arg(long, env = "S3E_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Kafka: the consumer group (required with `--source kafka`).
    #[arg(long, env = "S3E_KAFKA_GROUP")]
    group: Option<String>,
    /// Kafka: a topic to read (repeat, or separate with commas).
    #[arg(long = "topic", env = "S3E_KAFKA_TOPICS", value_delimiter = ',')]
    topics: Vec<String>,
    /// Kafka: store each message wrapped with its topic, partition,
    /// offset, timestamp, key and headers, not its value alone.
    #[arg(long)]
    wrap: bool,
    /// Kafka: the least time between two offset commits, in seconds (0:
    /// commit after every upload). Offsets are committed only once their
    /// objects are stored either way.
    #[arg(
        long,
        env = "S3E_KAFKA_COMMIT_INTERVAL",
        value_name = "SECONDS",
        default_value = "1"
    )]
    commit_interval: f64,
    /// Kafka: a librdkafka consumer property (`security.protocol=SASL_SSL`,
    /// `sasl.username=…`); repeat for more. Values are never printed.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE")]
    kafka_options: Vec<String>,
    /// Kafka: serve `GET /health` and `GET /metrics` (Prometheus: messages,
    /// objects, bytes, commits and their latency, lag per partition) on
    /// this address; port 0 takes a free one, printed at start. The
    /// configuration's `authToken` and TLS files apply, as on the event
    /// port.
    #[arg(long, env = "S3E_METRICS_ADDR", value_name = "HOST:PORT")]
    metrics_addr: Option<std::net::SocketAddr>,
}

/// Where `s3-event sink` takes events from.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Source {
    /// The CloudEvents HTTP server.
    Http,
    /// Kafka topics, read by a consumer group.
    Kafka,
}

pub fn run(args: Args) -> Exit {
    let sources = Sources {
        config_path: args.config.clone(),
        secret_path: args.secret.clone(),
    };
    let mut config = match Config::load(&sources) {
        Ok(c) => c,
        Err(e) => return Exit::Config(format!("configuration error: {e}")),
    };
    if let Some(p) = args.port {
        config.port = p;
    }
    if args.check_config {
        return print_json(&config.redacted());
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return e,
    };
    if args.source == Source::Kafka {
        return rt.block_on(kafka(args, config));
    }
    rt.block_on(async move {
        if !args.skip_check {
            if let Err(e) = config.check_store().await {
                return Exit::Config(format!("{e} (start with --skip-check to skip this check)"));
            }
        }
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e @ (ServerError::Config(_) | ServerError::Check { .. })) => {
                return Exit::Config(e.to_string())
            }
            Err(e) => return Exit::Failed(e.to_string()),
        };
        let c = server.config();
        let partitions = match &c.partition_template {
            Some(t) => format!("partitions `{t}`"),
            None => format!("{} partitions", c.time_interval),
        };
        println!(
            "s3-event sink: listening on {}://{}; writing {} objects under {} ({partitions}, \
             {} events or {} s per object; spool {})",
            c.http.scheme(),
            server.local_addr(),
            c.describe_format(),
            c.describe_store(),
            c.flush_size,
            c.scheduled_interval.as_secs(),
            c.spool_dir.display(),
        );
        match server.run(shutdown_signal()).await {
            Ok(()) => Exit::Ok,
            Err(ServerError::Config(e)) => Exit::Config(e.to_string()),
            Err(ServerError::Io { what, source })
                if source.kind() == std::io::ErrorKind::Other && what == "serving" =>
            {
                // TLS files that cannot be read are a configuration error.
                Exit::Config(format!("{what}: {source}"))
            }
            Err(e) => Exit::Failed(e.to_string()),
        }
    })
}

/// `--source kafka`: the Kafka source into the configured store.
async fn kafka(args: Args, config: Config) -> Exit {
    use s3_event::sink::kafka_source::KafkaSource;

    let Some(group) = args.group else {
        return Exit::Config("--source kafka needs --group (or S3E_KAFKA_GROUP)".into());
    };
    if args.topics.is_empty() {
        return Exit::Config(
            "--source kafka needs at least one --topic (or S3E_KAFKA_TOPICS)".into(),
        );
    }
    if config.partition_template.is_some() {
        return Exit::Config(
            "partitionTemplate does not apply to --source kafka: its time partitions follow the messages' Kafka timestamps (timeInterval sets hourly or daily)".into(),
        );
    }
    let Ok(commit_interval) = std::time::Duration::try_from_secs_f64(args.commit_interval) else {
        return Exit::Config(format!(
            "--commit-interval {}: expected seconds, 0 or more",
            args.commit_interval
        ));
    };
    let store = match config.store_config().build() {
        Ok(s) => s,
        Err(e) => return Exit::Config(format!("the store: {e}")),
    };
    let mut b = KafkaSource::builder()
        .with_brokers(&args.brokers)
        .with_group_id(&group)
        .with_topics(args.topics.iter().cloned())
        .with_store(store)
        .with_prefix(config.prefix.clone())
        .with_granularity(config.time_interval)
        .with_encoding(config.encoding)
        .with_compression(config.compression)
        .with_flush_size(config.flush_size)
        .with_flush_interval(config.scheduled_interval)
        .with_commit_interval(commit_interval)
        .with_wrap(args.wrap);
    for kv in &args.kafka_options {
        let Some((k, v)) = kv.split_once('=') else {
            // Not echoed: it may be a password missing its `=`.
            return Exit::Config(
                "a --kafka-option without `=`: expected KEY=VALUE (the argument is not shown: it may hold a secret)".to_owned(),
            );
        };
        b = b.with_kafka_option(k.trim(), v);
    }
    let source = match b.build() {
        Ok(s) => s,
        Err(e) => return Exit::Config(e.to_string()),
    };
    if !args.skip_check {
        if let Err(e) = config.check_store().await {
            return Exit::Config(format!("{e} (start with --skip-check to skip this check)"));
        }
    }
    let stats = source.stats_handle();
    let mut metrics = None;
    if let Some(addr) = args.metrics_addr {
        // TLS files that cannot be read stop the start, as on the event
        // port, not a server task that ends unseen.
        if let Err(e) = s3_event::inputs::http::tls_config(&config.http) {
            return Exit::Config(format!("--metrics-addr {addr}: {e}"));
        }
        let listener = match std::net::TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => return Exit::Config(format!("--metrics-addr {addr}: cannot listen: {e}")),
        };
        let at = listener.local_addr().unwrap_or(addr);
        println!(
            "s3-event sink: metrics on {}://{at}/metrics, health on /health",
            config.http.scheme()
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = kafka_routes(stats.clone()).into_router();
        let http = config.http.clone();
        let task = tokio::spawn(async move {
            s3_event::sink_server::serve(listener, app, &http, "sink", async {
                stopped.await.ok();
            })
            .await
        });
        metrics = Some((stop, task));
    }
    println!(
        "s3-event sink: reading {} from {} as group `{group}`; writing {} objects under {} ({} partitions by Kafka timestamp, {} records or {} s per object)",
        args.topics.join(", "),
        args.brokers,
        config.describe_format(),
        config.describe_store(),
        config.time_interval,
        config.flush_size,
        config.scheduled_interval.as_secs(),
    );
    let result = source.run(shutdown_signal()).await;
    if let Some((stop, task)) = metrics {
        drop(stop);
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the metrics server failed"),
            Err(e) => tracing::warn!(error = %e, "the metrics server panicked"),
        }
    }
    match result {
        Ok(s) => {
            println!(
                "s3-event sink: stopped: {} messages, {} objects ({} bytes), {} failure reports, {} objects found already stored, {} commits",
                s.messages, s.objects, s.bytes, s.poison, s.adopted, s.commits
            );
            Exit::Ok
        }
        Err(e) => Exit::Failed(e.to_string()),
    }
}

/// `/health` and `/metrics` of `--source kafka`.
fn kafka_routes(
    stats: s3_event::sink::kafka_source::KafkaStatsHandle,
) -> s3_event::inputs::http::Routes {
    describe_kafka_metrics();
    let health = stats.clone();
    // The partitions exported last: one no longer assigned here is set to
    // 0 (`assigned` 0, lag 0), so that lag summed over the group's
    // instances counts each partition once.
    let exported = std::sync::Mutex::new(std::collections::BTreeSet::new());
    s3_event::inputs::http::Routes::new()
        .health(move || {
            use axum::response::IntoResponse;
            let s = health.snapshot();
            let body = serde_json::json!({
                "status": "ok",
                "messages": s.messages,
                "objects": s.objects,
                "commits": s.commits,
                "partitions": s.partitions.keys().collect::<Vec<_>>(),
            });
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        })
        .export(move || export_kafka_metrics(&stats.snapshot(), &exported))
}

fn describe_kafka_metrics() {
    use metrics::{describe_counter, describe_gauge, Unit};
    static ONCE: std::sync::Once = std::sync::Once::new();
    s3_event::sink_server::prometheus();
    ONCE.call_once(|| {
        describe_counter!(
            "s3_kafka_source_messages_total",
            "Messages taken (each offset once per owner)"
        );
        describe_counter!("s3_kafka_source_objects_total", "Objects uploaded");
        describe_counter!("s3_kafka_source_bytes_total", Unit::Bytes, "Bytes uploaded");
        describe_counter!(
            "s3_kafka_source_failure_reports_total",
            "Messages that are not JSON, stored as failure reports"
        );
        describe_counter!(
            "s3_kafka_source_adopted_total",
            "Objects found already stored at a batch's key (an upload whose commit was lost)"
        );
        describe_counter!(
            "s3_kafka_source_commits_total",
            "Offset commits that succeeded"
        );
        describe_counter!(
            "s3_kafka_source_commit_failures_total",
            "Offset commits refused"
        );
        describe_gauge!(
            "s3_kafka_source_commit_latency_max_seconds",
            Unit::Seconds,
            "Longest commit, from its start to the broker's answer"
        );
        describe_gauge!(
            "s3_kafka_source_partition_lag",
            "Messages not yet taken: high watermark minus position (from librdkafka's statistics)"
        );
        describe_gauge!(
            "s3_kafka_source_partition_assigned",
            "1 while this instance holds the partition"
        );
    });
}

/// Before a `/metrics` render: the source's counters, and per partition it
/// holds its lag, position, committed offset and open records.
fn export_kafka_metrics(
    s: &s3_event::sink::kafka_source::KafkaSourceStats,
    exported: &std::sync::Mutex<std::collections::BTreeSet<(String, String)>>,
) {
    use metrics::{counter, gauge};
    for (name, v) in [
        ("s3_kafka_source_messages_total", s.messages),
        ("s3_kafka_source_records_total", s.records),
        ("s3_kafka_source_skipped_total", s.skipped),
        ("s3_kafka_source_failure_reports_total", s.poison),
        ("s3_kafka_source_objects_total", s.objects),
        ("s3_kafka_source_bytes_total", s.bytes),
        ("s3_kafka_source_adopted_total", s.adopted),
        ("s3_kafka_source_collisions_total", s.collisions),
        ("s3_kafka_source_forced_cuts_total", s.forced_cuts),
        (
            "s3_kafka_source_manifests_written_total",
            s.manifests_written,
        ),
        ("s3_kafka_source_store_retries_total", s.store_retries),
        ("s3_kafka_source_commits_total", s.commits),
        ("s3_kafka_source_commit_failures_total", s.commit_failures),
        ("s3_kafka_source_assignments_total", s.assignments),
        ("s3_kafka_source_revocations_total", s.revocations),
        ("s3_kafka_source_consumer_errors_total", s.consumer_errors),
    ] {
        counter!(name).absolute(v);
    }
    gauge!("s3_kafka_source_commit_latency_mean_seconds").set(s.commit_latency_mean.as_secs_f64());
    gauge!("s3_kafka_source_commit_latency_max_seconds").set(s.commit_latency_max.as_secs_f64());
    let mut exported = exported.lock().expect("exported lock");
    let mut now = std::collections::BTreeSet::new();
    for (key, p) in &s.partitions {
        // `{topic}+{partition}`: topic names may hold `+`, partitions not.
        let Some((topic, partition)) = key.rsplit_once('+') else {
            continue;
        };
        let labels = [
            ("topic", topic.to_owned()),
            ("partition", partition.to_owned()),
        ];
        gauge!("s3_kafka_source_partition_assigned", &labels).set(1.0);
        if let Some(lag) = p.lag {
            gauge!("s3_kafka_source_partition_lag", &labels).set(lag as f64);
        }
        if let Some(pos) = p.position {
            gauge!("s3_kafka_source_partition_position", &labels).set(pos as f64);
        }
        if let Some(c) = p.committed {
            gauge!("s3_kafka_source_partition_committed", &labels).set(c as f64);
        }
        gauge!("s3_kafka_source_partition_open_records", &labels).set(p.open_records as f64);
        now.insert((topic.to_owned(), partition.to_owned()));
    }
    for (topic, partition) in exported.difference(&now) {
        let labels = [("topic", topic.clone()), ("partition", partition.clone())];
        gauge!("s3_kafka_source_partition_assigned", &labels).set(0.0);
        gauge!("s3_kafka_source_partition_lag", &labels).set(0.0);
        gauge!("s3_kafka_source_partition_open_records", &labels).set(0.0);
    }
    *exported = now;
}
