//! Sink throughput: push → gzip NDJSON → in-memory store, against the ceiling
//! of gzip alone on the same bytes, in one run (ratios, not absolute times).
//!
//! - `gzip_ceiling/N`: gzip (level 6, flate2 with zlib-rs) of N records
//!   already serialized as NDJSON: the most a gzip NDJSON sink could do.
//! - `serialize_values/N`: `serde_json` writing the N records from
//!   `serde_json::Value`s as NDJSON, nothing else: what `sink/N` pays
//!   before gzip.
//! - `sink_raw/N`: a `Sink` with no spool, `push_batch` of those same
//!   serialized bytes (each record a `&RawValue`, so the sink copies rather
//!   than serializes), then `shutdown` (every object uploaded to an
//!   `InMemory` store): the sink's own cost on top of gzip.
//! - `sink/N`: the same with the records as `serde_json::Value`s, which the
//!   sink serializes: what pushing a parsed value costs.
//! - `sink_background/N`: `sink/N` with gzip on tokio's blocking pool
//!   (`with_background_compression`), overlapping the pusher's serializing.
//! - `sink_spool_10ms/N`: the same with the spool on, fsync every 10 ms, in
//!   a directory under `CARGO_TARGET_TMPDIR` (a real disk).
//! - `sink_threads/{1,2}`: two pushers on two partitions, on a runtime with
//!   1 or 2 worker threads and a sink with as many shards.
//!
//! Records are the `aws-put.json` fixture's record with a distinct key each
//! (about 1 KiB of JSON), 1000 to an object.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use s3_event::core::{PartitionEvent, TemplatePartitioner, TimePartitioner};
use s3_event::sink::{Sink, SpoolFsync, SpoolOptions, StoreConfig};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

const N: usize = 20_000;

fn records() -> Vec<Value> {
    let fixture: Value = serde_json::from_str(include_str!(
        "../crates/s3-event-core/tests/fixtures/aws-put.json"
    ))
    .unwrap();
    let record = fixture["Records"][0].clone();
    (0..N)
        .map(|i| {
            let mut r = record.clone();
            r["s3"]["object"]["key"] = Value::String(format!("logs/2024/03/05/object-{i:08}.json"));
            r["s3"]["object"]["sequencer"] = Value::String(format!("{:016X}", i * 7919));
            r["tenant"] = Value::String(format!("t{}", i % 2));
            r
        })
        .collect()
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap()
}

fn sink(spool: Option<&std::path::Path>, by_tenant: bool, shards: usize) -> Sink {
    sink_with(spool, by_tenant, shards, false)
}

fn sink_with(
    spool: Option<&std::path::Path>,
    by_tenant: bool,
    shards: usize,
    background: bool,
) -> Sink {
    let mut b = Sink::builder()
        .with_background_compression(background)
        .with_shards(shards)
        .with_store(StoreConfig::Memory.build().unwrap())
        .with_instance_id("bench")
        .with_partitioner(if by_tenant {
            Arc::new(TemplatePartitioner::new("{tenant}/").unwrap())
        } else {
            Arc::new(TimePartitioner::default())
        });
    if let Some(dir) = spool {
        b = b.with_spool(
            SpoolOptions::new(dir).with_fsync(SpoolFsync::Interval(Duration::from_millis(10))),
        );
    }
    b.build().unwrap()
}

/// `iters` times: a sink from `make` (given a fresh spool directory on a
/// real disk when `spooled`), `events` pushed in batches of 100, then
/// `shutdown`; the time from the first push to the end of the shutdown.
fn timed<T: Serialize + PartitionEvent>(
    rt: &tokio::runtime::Runtime,
    iters: u64,
    events: &[T],
    make: impl Fn(Option<&std::path::Path>) -> Sink,
    spooled: bool,
) -> Duration {
    let mut spent = Duration::ZERO;
    for _ in 0..iters {
        let dir = spooled.then(|| tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap());
        spent += rt.block_on(async {
            let s = make(dir.as_ref().map(|d| d.path()));
            let t0 = Instant::now();
            for chunk in events.chunks(100) {
                s.push_batch(chunk).await.unwrap();
            }
            s.shutdown().await.unwrap();
            t0.elapsed()
        });
    }
    spent
}

fn throughput(c: &mut Criterion) {
    let records = records();
    let ndjson: Vec<u8> = records
        .iter()
        .flat_map(|r| {
            let mut v = serde_json::to_vec(r).unwrap();
            v.push(b'\n');
            v
        })
        .collect();
    let mut g = c.benchmark_group("sink");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(N as u64));

    g.bench_function(BenchmarkId::new("gzip_ceiling", N), |b| {
        b.iter(|| {
            // One gzip stream per 1000 records, as the sink makes objects.
            let mut total = 0;
            let per = ndjson.len() / (N / 1000);
            for chunk in ndjson.chunks(per) {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
                e.write_all(chunk).unwrap();
                total += e.finish().unwrap().len();
            }
            total
        })
    });

    g.bench_function(BenchmarkId::new("serialize_values", N), |b| {
        let mut out = Vec::with_capacity(ndjson.len());
        b.iter(|| {
            out.clear();
            for r in &records {
                serde_json::to_writer(&mut out, r).unwrap();
                out.push(b'\n');
            }
            out.len()
        })
    });

    let raw: Vec<Box<RawValue>> = records
        .iter()
        .map(|r| serde_json::value::to_raw_value(r).unwrap())
        .collect();
    let raw: Vec<&RawValue> = raw.iter().map(|r| &**r).collect();
    let rt = runtime(2);
    g.bench_function(BenchmarkId::new("sink_raw", N), |b| {
        b.iter_custom(|iters| timed(&rt, iters, &raw, |spool| sink(spool, false, 1), false))
    });
    g.bench_function(BenchmarkId::new("sink", N), |b| {
        b.iter_custom(|iters| timed(&rt, iters, &records, |spool| sink(spool, false, 1), false))
    });
    g.bench_function(BenchmarkId::new("sink_background", N), |b| {
        b.iter_custom(|iters| {
            timed(
                &rt,
                iters,
                &records,
                |spool| sink_with(spool, false, 1, true),
                false,
            )
        })
    });
    g.bench_function(BenchmarkId::new("sink_spool_10ms", N), |b| {
        b.iter_custom(|iters| timed(&rt, iters, &records, |spool| sink(spool, false, 1), true))
    });

    let halves: Vec<Arc<Vec<Value>>> = (0..2)
        .map(|part| {
            Arc::new(
                records
                    .iter()
                    .filter(|r| r["tenant"] == format!("t{part}"))
                    .cloned()
                    .collect(),
            )
        })
        .collect();
    for threads in [1, 2] {
        let rt = runtime(threads);
        g.bench_function(BenchmarkId::new("sink_threads", threads), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    spent += rt.block_on(async {
                        let s = Arc::new(sink(None, true, threads));
                        let t0 = Instant::now();
                        let mut tasks = Vec::new();
                        for half in &halves {
                            let s = Arc::clone(&s);
                            let mine = Arc::clone(half);
                            tasks.push(tokio::spawn(async move {
                                for chunk in mine.chunks(100) {
                                    s.push_batch(chunk).await.unwrap();
                                }
                            }));
                        }
                        for t in tasks {
                            t.await.unwrap();
                        }
                        s.shutdown().await.unwrap();
                        t0.elapsed()
                    });
                }
                spent
            })
        });
    }
    g.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
