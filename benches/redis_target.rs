//! The Redis target on loopback (`S3E_REDIS_ADDR`, default
//! `127.0.0.1:6379`; `scripts/services.sh` starts one), events/s:
//!
//! - `redis_target_access`: `RedisTarget::send_batch` of 10 000 realistic
//!   MinIO records in batches of `max_batch()` (256), `access` format: each
//!   batch is serialized to MinIO's list entries and sent as one `RPUSH`.
//! - `redis_target_namespace`: the same in `namespace` format (one `HSET`
//!   of the batch's objects per round trip).
//! - `rpush_pipelined_baseline`: the ceiling, in the same run: the same
//!   entries, serialized beforehand, pushed through the `redis` crate with
//!   one `RPUSH` of 256 values per round trip on a multiplexed connection.
//!
//! Every iteration writes to a fresh key, deleted outside the timing.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use s3_event::core::{EventRecord, Target, TargetId};
use s3_event::targets::redis::{client as redis, Format, RedisConfig, RedisTarget};

const RECORDS: usize = 10_000;
const BATCH: usize = 256;

fn addr() -> String {
    std::env::var("S3E_REDIS_ADDR").unwrap_or_else(|_| "127.0.0.1:6379".into())
}

/// `n` MinIO `s3:ObjectCreated:Put` records (about 900 bytes of JSON each).
fn records(n: usize) -> Vec<EventRecord> {
    (0..n)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "eventVersion": "2.0",
                "eventSource": "minio:s3",
                "awsRegion": "",
                "eventTime": "2025-06-01T12:00:00.000Z",
                "eventName": "s3:ObjectCreated:Put",
                "userIdentity": {"principalId": "minioadmin"},
                "requestParameters": {"principalId": "minioadmin", "region": "", "sourceIPAddress": "127.0.0.1"},
                "responseElements": {
                    "x-amz-id-2": "dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8",
                    "x-amz-request-id": format!("1842FA0B5E3A{i:08X}"),
                    "x-minio-deployment-id": "e7d1b1d2-3b4c-4d5e-8f90-a1b2c3d4e5f6",
                    "x-minio-origin-endpoint": "http://127.0.0.1:9000"
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "Config",
                    "bucket": {"name": "images", "ownerIdentity": {"principalId": "minioadmin"}, "arn": "arn:aws:s3:::images"},
                    "object": {
                        "key": format!("tenant-{:02}/2025/06/01/object-{i}.jpg", i % 20),
                        "size": 52_341,
                        "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                        "contentType": "image/jpeg",
                        "userMetadata": {"content-type": "image/jpeg"},
                        "sequencer": format!("1842FA0B5E{i:08X}")
                    }
                },
                "source": {"host": "127.0.0.1", "port": "", "userAgent": "MinIO (linux; amd64) minio-go/v7.0.70"}
            }))
            .expect("a bench record deserializes")
        })
        .collect()
}

fn fresh_key(what: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "s3e_bench_{what}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let records = records(RECORDS);
    let entries: Vec<String> = records
        .iter()
        .map(|r| {
            serde_json::to_string(&serde_json::json!([{"Event": [r], "EventTime": r.event_time}]))
                .unwrap()
        })
        .collect();
    let mut conn = rt.block_on(async {
        redis::Client::open(format!("redis://{}/", addr()))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("Redis is reachable at S3E_REDIS_ADDR (scripts/services.sh)")
    });
    let id: TargetId = "arn:minio:sqs::bench:redis".parse().unwrap();

    let mut g = c.benchmark_group("redis");
    g.throughput(Throughput::Elements(RECORDS as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));

    for (name, format) in [
        ("redis_target_access", Format::Access),
        ("redis_target_namespace", Format::Namespace),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let key = fresh_key(name);
                        let t = RedisTarget::new(
                            id.clone(),
                            RedisConfig::new(addr(), key.clone(), format),
                        )
                        .unwrap();
                        assert_eq!(t.max_batch(), BATCH);
                        // Connect outside the timing.
                        assert!(t.is_active().await.unwrap());
                        let start = Instant::now();
                        for chunk in records.chunks(BATCH) {
                            t.send_batch(chunk).await.unwrap();
                        }
                        total += start.elapsed();
                        let _: () = redis::cmd("DEL")
                            .arg(&key)
                            .query_async(&mut conn)
                            .await
                            .unwrap();
                    }
                    total
                })
            })
        });
    }

    g.bench_function("rpush_pipelined_baseline", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let key = fresh_key("baseline");
                    let start = Instant::now();
                    for chunk in entries.chunks(BATCH) {
                        let _: () = redis::pipe()
                            .rpush(&key, chunk)
                            .ignore()
                            .query_async(&mut conn)
                            .await
                            .unwrap();
                    }
                    total += start.elapsed();
                    let _: () = redis::cmd("DEL")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                }
                total
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
