//! The NATS target's throughput against a real nats-server
//! (`S3E_NATS_URL`, default `nats://127.0.0.1:4222`), batched, beside raw
//! async-nats in the same run.
//!
//! For each batch size (1, 64, 256 events):
//! - `target_core`: `NatsTarget::send_batch` of pre-built records: MinIO
//!   envelope encoding, publish of every event, one server round trip.
//! - `raw_publish_flush` (baseline): async-nats `publish` of the same
//!   envelope bodies (encoded once, outside the loop) and `flush`, which
//!   only writes the client's buffer to the socket (no round trip).
//! - `raw_publish_round_trip` (baseline): the same plus the round trip the
//!   target makes (a request the server answers "no responders"), so the
//!   difference to `target_core` is the target's own cost.
//!
//! Run with `cargo bench --bench nats_target --features nats`
//! while a nats-server runs (`scripts/services.sh`).

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use s3_event::core::{encode_key, EventRecord, Notification, Target, TargetId};
use s3_event::targets::nats::{NatsConfig, NatsTarget};

const SIZES: &[usize] = &[1, 64, 256];

fn record(i: usize) -> EventRecord {
    let v = serde_json::json!({
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "eventName": "s3:ObjectCreated:Put",
        "s3": {
            "bucket": { "name": "bench" },
            "object": { "key": encode_key(&format!("photos/2024/{i:06}.jpg")), "size": 1024 },
        },
    });
    serde_json::from_value(v).expect("a bench record deserializes")
}

fn bench(c: &mut Criterion) {
    let url = std::env::var("S3E_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let subject = format!("s3e.bench.{}", std::process::id());
    let id: TargetId = "arn:minio:sqs::bench:nats".parse().expect("a valid id");
    let target = NatsTarget::new(id, NatsConfig::new(url.clone(), subject.clone()))
        .expect("a valid configuration");
    let client = rt
        .block_on(async_nats::connect(url.as_str()))
        .expect("nats-server is running (scripts/services.sh)");
    // Connect the target before measuring.
    rt.block_on(target.send(&record(0)))
        .expect("the target publishes");

    let mut group = c.benchmark_group("nats_target");
    for &n in SIZES {
        let records: Vec<EventRecord> = (0..n).map(record).collect();
        let bodies: Vec<Vec<u8>> = records
            .iter()
            .map(|r| {
                Notification::minio_envelope(vec![r.clone()])
                    .expect("an envelope")
                    .to_vec()
            })
            .collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(
            BenchmarkId::new("target_core", n),
            &records,
            |b, records| {
                b.iter(|| rt.block_on(target.send_batch(records)).expect("delivered"));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("raw_publish_flush", n),
            &bodies,
            |b, bodies| {
                b.iter(|| {
                    rt.block_on(async {
                        for body in bodies {
                            client
                                .publish(subject.clone(), body.clone().into())
                                .await
                                .expect("published");
                        }
                        client.flush().await.expect("flushed");
                    })
                });
            },
        );
        group.bench_with_input(
            BenchmarkId::new("raw_publish_round_trip", n),
            &bodies,
            |b, bodies| {
                b.iter(|| {
                    rt.block_on(async {
                        for body in bodies {
                            client
                                .publish(subject.clone(), body.clone().into())
                                .await
                                .expect("published");
                        }
                        match client.request(client.new_inbox(), Vec::new().into()).await {
                            Ok(_) => {}
                            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
                            Err(e) => panic!("round trip failed: {e}"),
                        }
                    })
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
