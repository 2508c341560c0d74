//! Parquet beside gzip NDJSON, in one run: 100 000 S3 event records encoded
//! by `BatchEncoder` as
//!
//! - `ndjson_gzip/{per_object}`: NDJSON, gzip level 6 (the sink's default);
//! - `parquet_s3_zstd/{per_object}`: Parquet with the S3 schema
//!   (`ParquetSchema::S3Records`), zstd pages (the default, level 3);
//! - `parquet_s3_compact_zstd/{per_object}`: Parquet with the `s3-compact`
//!   schema (`ParquetSchema::S3Compact`: the same columns, and only what
//!   they do not hold of each record as JSON text), zstd pages;
//!
//! with 1 000 records per object (the sink's default flush size) and with
//! all 100 000 in one object. Throughput is records per second; the bytes
//! per record of each are printed before the timings (`bytes/record`),
//! and beside them those of NDJSON under zstd (`ndjson_zstd`, sizes only):
//! the whole records as text, which the S3 schema's `record` column holds.
//! The goal: Parquet within 2× of NDJSON+gzip's throughput and at least 3×
//! smaller.
//!
//! Records are the `aws-put.json` fixture's record with a distinct key,
//! sequencer, size and time each (about 1 KiB of JSON), serialized once
//! before timing (the sink hands the encoder serialized records).
//! `cargo test --bench parquet` runs each once on 5 000 records.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use s3_event::sink::{BatchEncoder, Compression, Encoding, ParquetOptions, ParquetSchema};
use serde_json::Value;

/// 100 000 under `cargo bench`, 5 000 in test mode (an unoptimized build).
fn count() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        100_000
    } else {
        5_000
    }
}

fn records(n: usize) -> Vec<Vec<u8>> {
    let fixture: Value = serde_json::from_str(include_str!(
        "../crates/s3-event-core/tests/fixtures/aws-put.json"
    ))
    .unwrap();
    let record = fixture["Records"][0].clone();
    (0..n)
        .map(|i| {
            let mut r = record.clone();
            let o = &mut r["s3"]["object"];
            o["key"] = Value::String(format!("logs/2024/03/05/object-{i:08}.json"));
            o["sequencer"] = Value::String(format!("{:016X}", i * 7919));
            o["size"] = Value::from(1024 + (i * 37) % 100_000);
            r["eventTime"] = Value::String(format!(
                "2024-03-05T{:02}:{:02}:{:02}.{:03}Z",
                i / 3_600_000 % 24,
                i / 60_000 % 60,
                i / 1000 % 60,
                i % 1000
            ));
            serde_json::to_vec(&r).unwrap()
        })
        .collect()
}

fn formats() -> [(&'static str, Encoding, Compression); 3] {
    let s3 = ParquetOptions::default().with_schema(ParquetSchema::S3Records);
    let compact = s3.with_schema(ParquetSchema::S3Compact);
    [
        ("ndjson_gzip", Encoding::Ndjson, Compression::gzip()),
        ("parquet_s3_zstd", Encoding::Parquet(s3), Compression::None),
        (
            "parquet_s3_compact_zstd",
            Encoding::Parquet(compact),
            Compression::None,
        ),
    ]
}

/// Encodes `records` into objects of `per_object`; returns the bytes.
fn encode(
    records: &[Vec<u8>],
    encoding: Encoding,
    compression: Compression,
    per_object: usize,
) -> usize {
    let mut total = 0;
    for chunk in records.chunks(per_object) {
        let mut enc = BatchEncoder::new(encoding, compression);
        for r in chunk {
            enc.push_raw(r).unwrap();
        }
        total += enc.finish().unwrap().len();
    }
    total
}

fn bench(c: &mut Criterion) {
    let n = count();
    let records = records(n);
    let json: usize = records.iter().map(|r| r.len() + 1).sum();
    println!(
        "{n} records, {:.1} bytes/record as JSON",
        json as f64 / n as f64
    );
    // Sizes only beside the timed formats: the same NDJSON under zstd, the
    // records as whole text compressed as Parquet compresses a text
    // column. The S3 schema keeps that column (`record`), so it sets how
    // small a file of that schema can be.
    let zstd = (
        "ndjson_zstd (sizes only)",
        Encoding::Ndjson,
        Compression::zstd(),
    );
    for per_object in [1000, n] {
        for (name, encoding, compression) in formats().into_iter().chain([zstd]) {
            let bytes = encode(&records, encoding, compression, per_object);
            println!(
                "{name}/{per_object}: {:.1} bytes/record",
                bytes as f64 / n as f64
            );
        }
    }
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(10);
    for per_object in [1000, n] {
        for (name, encoding, compression) in formats() {
            g.bench_with_input(BenchmarkId::new(name, per_object), &per_object, |b, &p| {
                b.iter(|| encode(&records, encoding, compression, p))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
