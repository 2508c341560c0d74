//! The PostgreSQL and Kafka targets on loopback, events/s, each beside a
//! ceiling measured in the same run with the same client library:
//!
//! - `postgres/target_access`, `postgres/target_namespace`:
//!   `PostgresTarget::send_batch` of 10 000 realistic MinIO records in
//!   batches of 256 (`access`: one `INSERT … SELECT FROM unnest` per batch;
//!   `namespace`: one upsert transaction per batch).
//! - `postgres/multi_row_insert_baseline`: the same rows, serialized
//!   beforehand, as one 256-row `INSERT … VALUES (…), (…), …` per round trip
//!   through tokio-postgres into a table of the access schema.
//! - `kafka/target`: `KafkaTarget::send_batch` of the same records in
//!   batches of 256 to a 3-partition topic (MinIO envelope per event, key
//!   `bucket/object`, one produce per partition, acknowledged).
//! - `kafka/raw_produce_baseline`: the same envelopes, encoded beforehand,
//!   produced through rskafka to one partition in batches of 256.
//!
//! Servers: `S3E_PG_URL` (default `host=127.0.0.1 user=postgres
//! dbname=test`) and `S3E_KAFKA_BROKERS` (default `127.0.0.1:19092`), both
//! started by `scripts/services.sh`. Run with
//! `cargo bench --bench targets --features postgres,kafka`.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

#[path = "common/records.rs"]
mod records;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use rskafka::record::Record;
use s3_event::core::{EventRecord, Notification, Target, TargetId};
use s3_event::targets::kafka::{KafkaConfig, KafkaTarget};
use s3_event::targets::postgres::{Format, PostgresConfig, PostgresTarget};

const RECORDS: usize = 10_000;
const BATCH: usize = 256;

fn pg_url() -> String {
    std::env::var("S3E_PG_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=test".into())
}

fn kafka_brokers() -> String {
    std::env::var("S3E_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

fn unique(what: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "s3e_bench_{what}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn postgres(c: &mut Criterion, rt: &tokio::runtime::Runtime, records: &[EventRecord]) {
    let (client, conn) = rt
        .block_on(tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls))
        .expect("PostgreSQL is reachable at S3E_PG_URL (scripts/services.sh)");
    rt.spawn(conn);
    let rows: Vec<(String, serde_json::Value)> = records
        .iter()
        .map(|r| {
            let time = r.event_time.clone().unwrap_or_default();
            let doc = serde_json::json!({ "Records": [r] });
            (time, doc)
        })
        .collect();
    let id: TargetId = "arn:minio:sqs::bench:postgresql".parse().unwrap();

    let mut g = c.benchmark_group("postgres");
    g.throughput(Throughput::Elements(RECORDS as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    for (name, format) in [
        ("target_access", Format::Access),
        ("target_namespace", Format::Namespace),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let table = unique(name);
                        let t = PostgresTarget::new(
                            id.clone(),
                            PostgresConfig::new(pg_url(), table.clone(), format),
                        )
                        .unwrap();
                        // Connects and creates the table outside the timing.
                        assert!(t.is_active().await.unwrap());
                        t.send(&records[0]).await.unwrap();
                        let start = Instant::now();
                        for chunk in records.chunks(BATCH) {
                            t.send_batch(chunk).await.unwrap();
                        }
                        total += start.elapsed();
                        client
                            .batch_execute(&format!("DROP TABLE {table}"))
                            .await
                            .unwrap();
                    }
                    total
                })
            })
        });
    }
    g.bench_function("multi_row_insert_baseline", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let table = unique("baseline");
                    client
                        .batch_execute(&format!(
                            "CREATE TABLE {table} (event_time TIMESTAMP WITH TIME ZONE NOT NULL, event_data JSONB)"
                        ))
                        .await
                        .unwrap();
                    let full = {
                        let values: Vec<String> =
                            (0..BATCH).map(|i| format!("(${}::text::timestamptz, ${})", 2 * i + 1, 2 * i + 2)).collect();
                        client
                            .prepare(&format!("INSERT INTO {table} (event_time, event_data) VALUES {}", values.join(", ")))
                            .await
                            .unwrap()
                    };
                    let start = Instant::now();
                    for chunk in rows.chunks(BATCH) {
                        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::with_capacity(2 * chunk.len());
                        for (time, doc) in chunk {
                            params.push(time);
                            params.push(doc);
                        }
                        if chunk.len() == BATCH {
                            client.execute(&full, &params).await.unwrap();
                        } else {
                            let values: Vec<String> = (0..chunk.len())
                                .map(|i| format!("(${}::text::timestamptz, ${})", 2 * i + 1, 2 * i + 2))
                                .collect();
                            let sql = format!("INSERT INTO {table} (event_time, event_data) VALUES {}", values.join(", "));
                            client.execute(sql.as_str(), &params).await.unwrap();
                        }
                    }
                    total += start.elapsed();
                    client.batch_execute(&format!("DROP TABLE {table}")).await.unwrap();
                }
                total
            })
        })
    });
    g.finish();
}

fn kafka(c: &mut Criterion, rt: &tokio::runtime::Runtime, records: &[EventRecord]) {
    let brokers = kafka_brokers();
    let client = rt
        .block_on(ClientBuilder::new(vec![brokers.clone()]).build())
        .expect(
            "the Kafka-protocol broker is reachable at S3E_KAFKA_BROKERS (scripts/services.sh)",
        );
    let topic = unique("kafka").replace('_', "-");
    rt.block_on(async {
        client
            .controller_client()
            .unwrap()
            .create_topic(&topic, 3, 1, 5_000)
            .await
            .expect("the bench creates its topic");
        for _ in 0..100 {
            let listed = client.list_topics().await.unwrap_or_default();
            if listed
                .iter()
                .any(|t| t.name == topic && t.partitions.len() == 3)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let envelopes: Vec<Record> = records
        .iter()
        .map(|r| {
            let n = Notification::minio_envelope(vec![r.clone()]).unwrap();
            Record {
                key: n.key.clone().map(String::into_bytes),
                value: Some(n.to_vec()),
                headers: Default::default(),
                timestamp: rskafka::chrono::Utc::now(),
            }
        })
        .collect();
    let id: TargetId = "arn:minio:sqs::bench:kafka".parse().unwrap();
    let target = KafkaTarget::new(id, KafkaConfig::new(brokers.clone(), topic.clone())).unwrap();
    rt.block_on(target.send(&records[0]))
        .expect("the target produces");
    let pc = rt
        .block_on(client.partition_client(topic.clone(), 0, UnknownTopicHandling::Retry))
        .unwrap();

    let mut g = c.benchmark_group("kafka");
    g.throughput(Throughput::Elements(RECORDS as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("target", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    for chunk in records.chunks(BATCH) {
                        target.send_batch(chunk).await.unwrap();
                    }
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("raw_produce_baseline", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // Cloning the prepared records is not the client's work.
                    let chunks: Vec<Vec<Record>> =
                        envelopes.chunks(BATCH).map(<[Record]>::to_vec).collect();
                    let start = Instant::now();
                    for chunk in chunks {
                        pc.produce(chunk, Compression::NoCompression).await.unwrap();
                    }
                    total += start.elapsed();
                }
                total
            })
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let records = records::records(RECORDS);
    postgres(c, &rt, &records);
    kafka(c, &rt, &records);
}

criterion_group!(benches, bench);
criterion_main!(benches);
