//! The SQS source against moto (`S3E_MOTO_ENDPOINT`, default
//! `http://127.0.0.1:15000`; `scripts/services.sh` starts it), records/s.
//! Each iteration fills a fresh queue with 100 messages of one realistic
//! S3 record each (`{"Records":[…]}`, outside the timing), then times
//! draining it:
//!
//! - `sqs_source_into_notifier`: an [`SqsSource`] with 4 receivers (10
//!   messages per `ReceiveMessage`) handing every record to a [`Notifier`]
//!   (async mode, one in-memory target that counts), each message deleted
//!   by `DeleteMessageBatch` once its record is queued; until all 100
//!   are deleted.
//! - `raw_receive_delete_baseline`: 4 loops of `ReceiveMessage` (10
//!   messages) and `DeleteMessageBatch` of what came back, nothing parsed:
//!   what moto allows at that concurrency.
//!
//! moto is the bottleneck; the ratio of the two is what counts. Without
//! moto the bench prints why and measures nothing.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use s3_event::core::aws::AwsConfig;
use s3_event::core::{EventMask, EventRecord, NotificationRule, RuleSet, Target};
use s3_event::inputs::sqs::{SqsSource, SqsSourceConfig};
use s3_event::targets::{DeliveryMode, Notifier, TargetOptions};

#[path = "common/records.rs"]
mod records;

const MESSAGES: usize = 100;
const LOOPS: usize = 4;

#[path = "common/counting.rs"]
mod counting;
use counting::Counting;

fn endpoint() -> String {
    std::env::var("S3E_MOTO_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:15000".into())
}

fn aws() -> AwsConfig {
    AwsConfig {
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint()),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        session_token: None,
    }
}

/// Whether moto answers on its port.
fn moto_up() -> bool {
    let e = endpoint();
    let hostport = e.split("://").nth(1).unwrap_or(&e).trim_end_matches('/');
    hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

/// A fresh queue holding `bodies`; its URL.
async fn filled_queue(client: &aws_sdk_sqs::Client, bodies: &[String]) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "s3e-bench-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let url = client
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    for chunk in bodies.chunks(10) {
        let entries = chunk.iter().enumerate().map(|(i, b)| {
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(b)
                .build()
                .unwrap()
        });
        client
            .send_message_batch()
            .queue_url(&url)
            .set_entries(Some(entries.collect()))
            .send()
            .await
            .unwrap();
    }
    url
}

/// The baseline: receive and delete until `MESSAGES` are gone.
async fn raw_drain(client: &aws_sdk_sqs::Client, url: &str) {
    let deleted = Arc::new(AtomicU64::new(0));
    let loops = (0..LOOPS).map(|_| {
        let (client, url, deleted) = (client.clone(), url.to_owned(), Arc::clone(&deleted));
        async move {
            while deleted.load(Ordering::Acquire) < MESSAGES as u64 {
                let r = client
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .unwrap();
                if r.messages().is_empty() {
                    continue;
                }
                let entries = r.messages().iter().enumerate().map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle().unwrap())
                        .build()
                        .unwrap()
                });
                client
                    .delete_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries.collect()))
                    .send()
                    .await
                    .unwrap();
                deleted.fetch_add(r.messages().len() as u64, Ordering::Release);
            }
        }
    });
    // Stopped as soon as all are deleted, as the source is: the long polls
    // still waiting are abandoned.
    let tasks: Vec<_> = loops.map(tokio::spawn).collect();
    while deleted.load(Ordering::Acquire) < MESSAGES as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for t in tasks {
        t.abort();
    }
}

/// The source into `notifier` until `MESSAGES` are deleted.
async fn source_drain(notifier: &Arc<Notifier>, url: &str) {
    let mut config = SqsSourceConfig::new(url);
    config.aws = aws();
    config.wait_time_secs = 1;
    config.receivers = LOOPS;
    let n = Arc::clone(notifier);
    let handler = move |records: Vec<EventRecord>| {
        let n = Arc::clone(&n);
        async move {
            for r in records {
                let o = n.send(r).await.map_err(|e| e.to_string())?;
                assert_eq!(o.dropped, 0);
            }
            Ok::<(), String>(())
        }
    };
    let source = SqsSource::new(config, handler).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(source.clone().run(async move {
        let _ = rx.await;
    }));
    while source.stats().deleted < MESSAGES as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if std::env::var_os("S3E_BENCH_VERBOSE").is_some() {
        eprintln!("{:?}", source.stats());
    }
    tx.send(()).unwrap();
    task.await.unwrap();
}

fn bench(c: &mut Criterion) {
    if !moto_up() {
        eprintln!(
            "sqs_source: moto is not reachable at {}; skipped",
            endpoint()
        );
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = aws_sdk_sqs::Client::new(&aws().sdk_config("SQS").unwrap());
    let bodies: Vec<String> = records::records(MESSAGES)
        .iter()
        .map(|r| serde_json::json!({ "Records": [r] }).to_string())
        .collect();
    let target = Arc::new(Counting::new(
        "arn:minio:sqs::bench:webhook".parse().unwrap(),
    ));
    let notifier = {
        let _guard = rt.enter();
        let rule = NotificationRule::new("all", EventMask::ALL, target.id.clone());
        Arc::new(
            Notifier::builder()
                .rules(RuleSet::new([rule]).unwrap())
                .mode(DeliveryMode::Async)
                .target(
                    Arc::clone(&target) as Arc<dyn Target>,
                    TargetOptions {
                        queue_limit: 4 * MESSAGES,
                        ..TargetOptions::default()
                    },
                )
                .build()
                .unwrap(),
        )
    };

    let mut g = c.benchmark_group("sqs_source");
    g.throughput(Throughput::Elements(MESSAGES as u64));
    // One drain per sample: each needs a freshly filled queue.
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("sqs_source_into_notifier", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let url = filled_queue(&client, &bodies).await;
                    let before = target.seen.load(Ordering::Acquire);
                    let start = Instant::now();
                    source_drain(&notifier, &url).await;
                    total += start.elapsed();
                    // Every record was queued; the target gets them soon.
                    while target.seen.load(Ordering::Acquire) < before + MESSAGES as u64 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                total
            })
        })
    });
    g.bench_function("raw_receive_delete_baseline", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let url = filled_queue(&client, &bodies).await;
                    let start = Instant::now();
                    raw_drain(&client, &url).await;
                    total += start.elapsed();
                }
                total
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
