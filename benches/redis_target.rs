//! The Redis target on loopback (`S3E_REDIS_ADDR`, default
//! `127.0.0.1:6379`; `scripts/services.sh` starts one), events/s:
//!
//! - `redis_target_access`: `RedisTarget::send_batch` of 10 000 realistic
//!   MinIO records in batches of `max_batch()` (256), `access` format: each
//!   batch is serialized to MinIO's list entries and sent as one `RPUSH`.
//! - `redis_target_namespace`: the same in `namespace` format (one `HSET`
//!   of the batch's objects per round trip).
//! - `redis_target_access_4_lanes`: the access format with four batches in
//!   flight on the target's one multiplexed connection, as the Notifier's
//!   senders (`senders: 4`) drive it.
//! - `rpush_pipelined_baseline`: the same entries, serialized beforehand,
//!   pushed through the `redis` crate with one `RPUSH` of 256 values per
//!   round trip on a multiplexed connection.
//! - `redis_benchmark_rpush_p16`: the server's own ceiling, in the same run:
//!   `redis-benchmark -t rpush -P 16 -d <mean entry size>` (50 clients,
//!   16 commands pipelined per client), 10 000 requests per iteration, timed
//!   around the whole process. Skipped with a message when `redis-benchmark`
//!   is not installed.
//!
//! Every iteration writes to a fresh key, deleted outside the timing.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use s3_event::core::{EventRecord, Target, TargetId};
use s3_event::targets::redis::{Format, RedisConfig, RedisTarget};

#[path = "common/records.rs"]
mod records;
use records::records;

const RECORDS: usize = 10_000;
const BATCH: usize = 256;

fn addr() -> String {
    std::env::var("S3E_REDIS_ADDR").unwrap_or_else(|_| "127.0.0.1:6379".into())
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

    g.bench_function("redis_target_access_4_lanes", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let key = fresh_key("lanes");
                    let t = std::sync::Arc::new(
                        RedisTarget::new(
                            id.clone(),
                            RedisConfig::new(addr(), key.clone(), Format::Access),
                        )
                        .unwrap(),
                    );
                    assert!(t.is_active().await.unwrap());
                    let shares: Vec<Vec<EventRecord>> = (0..4)
                        .map(|lane| {
                            records
                                .chunks(BATCH)
                                .skip(lane)
                                .step_by(4)
                                .flatten()
                                .cloned()
                                .collect()
                        })
                        .collect();
                    let start = Instant::now();
                    let lanes: Vec<_> = shares
                        .into_iter()
                        .map(|mine| {
                            let t = t.clone();
                            tokio::spawn(async move {
                                for chunk in mine.chunks(BATCH) {
                                    t.send_batch(chunk).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for lane in lanes {
                        lane.await.unwrap();
                    }
                    total += start.elapsed();
                    let n: usize = redis::cmd("LLEN")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    assert_eq!(n, RECORDS, "every event pushed once");
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

    let mean_entry = entries.iter().map(String::len).sum::<usize>() / entries.len();
    let have_tool = std::process::Command::new("redis-benchmark")
        .arg("--version")
        .output()
        .is_ok();
    if have_tool {
        let (host, port) = addr()
            .rsplit_once(':')
            .map(|(h, p)| (h.to_owned(), p.to_owned()))
            .unwrap_or_else(|| (addr(), "6379".into()));
        eprintln!("redis_benchmark_rpush_p16: redis-benchmark -t rpush -P 16 -d {mean_entry}");
        g.bench_function("redis_benchmark_rpush_p16", |b| {
            b.iter_custom(|iters| {
                let n = (RECORDS as u64 * iters).to_string();
                let start = Instant::now();
                let out = std::process::Command::new("redis-benchmark")
                    .args(["-h", &host, "-p", &port, "-t", "rpush", "-P", "16", "-q"])
                    .args(["-n", &n, "-d", &mean_entry.to_string()])
                    .output()
                    .expect("redis-benchmark runs");
                let took = start.elapsed();
                assert!(out.status.success(), "redis-benchmark failed: {out:?}");
                rt.block_on(async {
                    // redis-benchmark pushes to `mylist`.
                    let _: () = redis::cmd("DEL")
                        .arg("mylist")
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                });
                took
            })
        });
    } else {
        eprintln!("redis_benchmark_rpush_p16: redis-benchmark not installed; ceiling skipped");
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
