//! Record parsing and the CloudEvents mapping.
//!
//! Group `parse` (bytes/s): the typed parse `serde_json::from_slice::<Notification>`
//! against the baseline `serde_json::from_slice::<serde_json::Value>` on the
//! same bytes, plus `inbound::parse` (envelope detection, then the typed
//! parse), for a MinIO/AIStor payload, an AWS payload and a 100-record
//! document. The typed parse must beat the `Value` baseline.
//!
//! Group `cloudevent` (records/s): `EventRecord::to_cloudevent` against the
//! baseline `serde_json::to_value(record)` (building the `data` alone).

use std::hint::black_box;

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use s3_event::core::{encode_key, inbound, EventRecord, Notification};

const AISTOR: &[u8] =
    include_bytes!("../crates/s3-event-core/tests/fixtures/minio-aistor-put.json");
const AWS: &[u8] = include_bytes!("../crates/s3-event-core/tests/fixtures/aws-put.json");

/// A 100-record document: AWS and AIStor records alternating, each with its
/// own key, size, sequencer and request id.
fn hundred_records() -> Vec<u8> {
    let aws = Notification::from_slice(AWS).unwrap().records.remove(0);
    let aistor = Notification::from_slice(AISTOR).unwrap().records.remove(0);
    let records = (0..100)
        .map(|i| {
            let mut r = if i % 2 == 0 {
                aws.clone()
            } else {
                aistor.clone()
            };
            let s3 = r.s3.as_mut().unwrap();
            let o = s3.object.as_mut().unwrap();
            o.key = Some(encode_key(&format!(
                "tenant-{:02}/photos/2025/img {i:04}.jpg",
                i % 7
            )));
            o.size = Some(1024 * (i + 1));
            o.sequencer = Some(format!("0055AED6DCD9{i:06X}"));
            r.response_elements.as_mut().unwrap().x_amz_request_id =
                Some(format!("C3D13FE58DE4{i:04X}"));
            r
        })
        .collect();
    Notification::new(records).to_vec()
}

fn parse(c: &mut Criterion) {
    let hundred = hundred_records();
    let payloads: [(&str, &[u8]); 3] =
        [("aistor", AISTOR), ("aws", AWS), ("100-records", &hundred)];
    let mut group = c.benchmark_group("parse");
    for (name, bytes) in payloads {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new("typed", name), bytes, |b, bytes| {
            b.iter(|| serde_json::from_slice::<Notification>(black_box(bytes)).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("value", name), bytes, |b, bytes| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(bytes)).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("inbound", name), bytes, |b, bytes| {
            b.iter(|| inbound::parse(black_box(bytes)).unwrap())
        });
    }
    group.finish();
}

fn cloudevent(c: &mut Criterion) {
    let aws = Notification::from_slice(AWS).unwrap().records.remove(0);
    let aistor = Notification::from_slice(AISTOR).unwrap().records.remove(0);
    let records: [(&str, &EventRecord); 2] = [("aws", &aws), ("aistor", &aistor)];
    let mut group = c.benchmark_group("cloudevent");
    group.throughput(Throughput::Elements(1));
    for (name, record) in records {
        group.bench_with_input(BenchmarkId::new("to_cloudevent", name), record, |b, r| {
            b.iter(|| black_box(r).to_cloudevent().unwrap())
        });
        group.bench_with_input(BenchmarkId::new("to_value", name), record, |b, r| {
            b.iter(|| serde_json::to_value(black_box(r)).unwrap())
        });
        let ev = record.to_cloudevent().unwrap();
        group.bench_with_input(BenchmarkId::new("from_cloudevent", name), &ev, |b, ev| {
            b.iter(|| EventRecord::from_cloudevent(black_box(ev)).unwrap())
        });
    }
    group.finish();
}

// `criterion_group!` makes an undocumented `pub fn`; keep the lint quiet
// for it alone.
#[allow(missing_docs)]
mod harness {
    criterion::criterion_group!(benches, super::parse, super::cloudevent);
}
criterion_main!(harness::benches);
