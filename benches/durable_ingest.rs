//! The relay's durable ingest: MinIO-shaped webhook POSTs of one record
//! each, from C concurrent connections, into a [`Receiver`] whose handler
//! calls [`Notifier::send`] in async mode with a `queue_dir` (answered once
//! the record is appended and fsynced), beside what the queue store alone
//! does with the same entries, all in one run, on the disk of the build
//! (`CARGO_TARGET_TMPDIR`, not a tmpfs where fsync costs nothing). The
//! target counts deliveries and answers at once; its worker reads and acks
//! the same store while the ingest runs, as in the relay.
//!
//! - `queue_store_grouped_fsync/256` (baseline, as `benches/queue_store.rs`
//!   `segment_log/256`): 256 appends from one thread, one `sync`, then
//!   `peek` and `ack`.
//! - `queue_store_synced/C`: C tasks each appending one entry at a time
//!   with `append_batch_synced` (what the notifier does per event), then
//!   `peek` and `ack`: the store alone under the ingest's load.
//! - `queue_store_blocking_pool/C`: the same with `append_durable` on
//!   tokio's blocking pool (what the notifier did before).
//! - `notifier_send/C`: C tasks each calling `Notifier::send`.
//! - `receiver/C`: C tasks each handing the receiver a webhook body.
//! - `receiver_memory/C`: the same with a notifier without `queue_dir`
//!   (in-memory queue): what the durable queue costs the relay.
//!
//! The bench uses the program's allocator (jemalloc, with the default
//! feature `cli`), as the relay does.
//!
//! C is 32 (the load of issue 20) and 256. Each waiter has one event in
//! each fsync round, so with C connections a round carries at most C
//! events, against 256 for the grouped-fsync baseline: the ratio to that
//! baseline is bounded by C/256 when fsyncs dominate, whatever the relay
//! does. `queue_store_synced/C` is the comparable baseline.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use s3_event::core::{EventName, EventRecord, NotificationRule, RuleSet, Target, TargetId};
use s3_event::inputs::receiver::{Outcome, Receiver, ReceiverConfig};
use s3_event::targets::{DeliveryMode, Notifier, QueueStore, QueueStoreOptions, TargetOptions};

#[cfg(feature = "cli")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Events per connection per iteration.
const PER_CONNECTION: usize = 8;

/// A MinIO webhook body carrying one record (as MinIO sends them).
#[path = "common/counting.rs"]
mod counting;
use counting::Counting;

fn body(i: usize) -> Vec<u8> {
    let key = format!("uploads/2026/12/06/photo-{i:08}.jpg");
    format!(
        r#"{{"EventName":"s3:ObjectCreated:Put","Key":"photos/{key}","Records":[{{"eventVersion":"2.0","eventSource":"minio:s3","awsRegion":"us-east-1","eventTime":"2026-12-06T10:00:00.000Z","eventName":"s3:ObjectCreated:Put","userIdentity":{{"principalId":"minioadmin"}},"requestParameters":{{"principalId":"minioadmin","region":"us-east-1","sourceIPAddress":"10.0.0.7"}},"responseElements":{{"x-amz-id-2":"dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8","x-amz-request-id":"187E5B1A2C3D4E5F","x-minio-deployment-id":"6d2f9c3e-6a51-4c1d-9d0e-2b7f4f0f5b1a","x-minio-origin-endpoint":"http://10.0.0.5:9000"}},"s3":{{"s3SchemaVersion":"1.0","configurationId":"Config","bucket":{{"name":"photos","ownerIdentity":{{"principalId":"minioadmin"}},"arn":"arn:aws:s3:::photos"}},"object":{{"key":"{key}","size":482113,"eTag":"6c8a6b6c1e0d8d1f0a4b2f1d5e9c3a7b","contentType":"image/jpeg","userMetadata":{{"content-type":"image/jpeg"}},"sequencer":"187E5B1A2C3D{i:04X}"}}}},"source":{{"host":"10.0.0.7","port":"","userAgent":"MinIO (linux; amd64) minio-go/v7.0.70"}}}}]}}"#
    )
    .into_bytes()
}

fn record(i: usize) -> EventRecord {
    let v: serde_json::Value = serde_json::from_slice(&body(i)).unwrap();
    EventRecord::from_slice(v["Records"][0].to_string().as_bytes()).unwrap()
}

fn bench_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("bench directory")
}

/// Runs `C` tasks, each calling `f(i)` for its `PER_CONNECTION` events.
async fn fan_out<F, Fut>(connections: usize, f: Arc<F>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let f = Arc::clone(&f);
            tokio::spawn(async move {
                for k in 0..PER_CONNECTION {
                    f(c * PER_CONNECTION + k).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// A notifier in async mode with one counting target, durable with
/// `queue_dir`.
fn make_notifier(
    rt: &tokio::runtime::Runtime,
    queue_dir: Option<std::path::PathBuf>,
) -> (Arc<Notifier>, Arc<Counting>) {
    let id: TargetId = "arn:minio:sqs::1:redis".parse().unwrap();
    let target = Arc::new(Counting::new(id.clone()));
    let _guard = rt.enter();
    let rules = RuleSet::new([NotificationRule::new(
        "all",
        EventName::ObjectCreatedPut.mask(),
        id,
    )])
    .unwrap();
    let notifier = Notifier::builder()
        .rules(rules)
        .target(
            Arc::clone(&target) as Arc<dyn Target>,
            TargetOptions {
                queue_dir,
                ..TargetOptions::default()
            },
        )
        .mode(DeliveryMode::Async)
        .build()
        .unwrap();
    (Arc::new(notifier), target)
}

/// A receiver whose handler sends each record to `notifier`.
fn make_receiver(notifier: &Arc<Notifier>) -> Receiver {
    let n = Arc::clone(notifier);
    Receiver::new(
        ReceiverConfig::default(),
        move |records: Vec<EventRecord>| {
            let n = Arc::clone(&n);
            async move {
                for r in records {
                    n.send(r).await?;
                }
                Ok::<(), s3_event::targets::Error>(())
            }
        },
    )
    .unwrap()
}

/// Hands the receiver body `i`, expecting it accepted.
#[allow(clippy::type_complexity)]
fn poster(
    receiver: Receiver,
    bodies: &Arc<Vec<Vec<u8>>>,
) -> Arc<impl Fn(usize) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static>
{
    let bodies = Arc::clone(bodies);
    Arc::new(move |i: usize| {
        let (receiver, bodies) = (receiver.clone(), Arc::clone(&bodies));
        Box::pin(async move {
            let out = receiver.receive(&HeaderMap::new(), &bodies[i]).await;
            assert!(matches!(out, Outcome::Accepted { records: 1 }), "{out:?}");
        }) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
    })
}

/// Waits until everything sent was delivered, and checks the counts.
fn all_delivered(rt: &tokio::runtime::Runtime, notifier: &Notifier, target: &Counting) {
    rt.block_on(async {
        while notifier.stats()[0].1.queued > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let stats = notifier.stats()[0].1.clone();
    assert_eq!(stats.sent, target.seen.load(Ordering::Relaxed));
    assert_eq!((stats.dropped, stats.failed, stats.store_errors), (0, 0, 0));
}

fn durable_ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let entry = serde_json::to_vec(&record(0)).unwrap();

    let mut group = c.benchmark_group("durable_ingest_1_record_per_request");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));

    // The queue store's grouped-fsync bench, with the records as entries.
    {
        let n = 256;
        let dir = bench_dir();
        let store = QueueStore::open(dir.path(), QueueStoreOptions::default()).unwrap();
        let entries: Vec<Vec<u8>> = (0..n)
            .map(|i| serde_json::to_vec(&record(i)).unwrap())
            .collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("queue_store_grouped_fsync", n), |b| {
            b.iter(|| {
                for e in &entries {
                    store.append(e).unwrap();
                }
                store.sync().unwrap();
                let batch = store.peek(n).unwrap();
                store.ack(batch.last().unwrap().0).unwrap();
            })
        });
    }

    for connections in [32, 256] {
        let events = (connections * PER_CONNECTION) as u64;
        group.throughput(Throughput::Elements(events));

        // The store alone, one synced append per event from each task.
        let dir = bench_dir();
        let store = Arc::new(QueueStore::open(dir.path(), QueueStoreOptions::default()).unwrap());
        let append = {
            let (store, entry) = (Arc::clone(&store), entry.clone());
            Arc::new(move |_i: usize| {
                let (store, entry) = (Arc::clone(&store), entry.clone());
                async move {
                    store
                        .append_batch_synced(&[entry.as_slice()])
                        .await
                        .unwrap();
                }
            })
        };
        group.bench_function(BenchmarkId::new("queue_store_synced", connections), |b| {
            b.iter(|| {
                rt.block_on(fan_out(connections, Arc::clone(&append)));
                let batch = store.peek(usize::MAX).unwrap();
                store.ack(batch.last().unwrap().0).unwrap();
            })
        });

        // The same with the notifier's former way: a blocking append and
        // fsync wait on tokio's blocking pool per event.
        let blocking = {
            let (store, entry) = (Arc::clone(&store), Arc::new(entry.clone()));
            Arc::new(move |_i: usize| {
                let (store, entry) = (Arc::clone(&store), Arc::clone(&entry));
                async move {
                    tokio::task::spawn_blocking(move || store.append_durable(&entry))
                        .await
                        .unwrap()
                        .unwrap();
                }
            })
        };
        group.bench_function(
            BenchmarkId::new("queue_store_blocking_pool", connections),
            |b| {
                b.iter(|| {
                    rt.block_on(fan_out(connections, Arc::clone(&blocking)));
                    let batch = store.peek(usize::MAX).unwrap();
                    store.ack(batch.last().unwrap().0).unwrap();
                })
            },
        );
        drop(store);

        // Notifier::send, durable, async mode.
        let dir = bench_dir();
        let (notifier, target) = make_notifier(&rt, Some(dir.path().to_path_buf()));
        let records: Arc<Vec<EventRecord>> = Arc::new((0..events as usize).map(record).collect());
        let send = {
            let (n, records) = (Arc::clone(&notifier), Arc::clone(&records));
            Arc::new(move |i: usize| {
                let (n, r) = (Arc::clone(&n), records[i].clone());
                async move {
                    assert_eq!(n.send(r).await.unwrap().queued, 1);
                }
            })
        };
        group.bench_function(BenchmarkId::new("notifier_send", connections), |b| {
            b.iter(|| rt.block_on(fan_out(connections, Arc::clone(&send))))
        });

        // The receiver in front of it: parse the webhook body, send.
        let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..events as usize).map(body).collect());
        let post = poster(make_receiver(&notifier), &bodies);
        group.bench_function(BenchmarkId::new("receiver", connections), |b| {
            b.iter(|| rt.block_on(fan_out(connections, Arc::clone(&post))))
        });
        all_delivered(&rt, &notifier, &target);
        drop(notifier);

        // The same receiver in front of a notifier without queue_dir: what
        // the durable queue costs, in the same run.
        let (memory, target) = make_notifier(&rt, None);
        let post = poster(make_receiver(&memory), &bodies);
        group.bench_function(BenchmarkId::new("receiver_memory", connections), |b| {
            b.iter(|| rt.block_on(fan_out(connections, Arc::clone(&post))))
        });
        all_delivered(&rt, &memory, &target);
    }
    group.finish();
}

criterion_group!(benches, durable_ingest);
criterion_main!(benches);
