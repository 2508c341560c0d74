//! The sink's behaviour, written once and run against every store of
//! [`crate::testing`]: memory, a local directory and (feature
//! `integration`) the real S3-compatible server from `scripts/services.sh`.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutOptions, PutPayload};
use s3_event_core::{Granularity, TimePartitioner, TimeSource};
use serde_json::{json, Value};

pub(crate) use crate::testing::*;
use crate::{decode, Compression, Encoding, Sink, SinkBuilder, SpoolFsync, SpoolOptions};

impl Env {
    fn builder(&self) -> SinkBuilder {
        Sink::builder()
            .with_store(Arc::clone(&self.store))
            .with_prefix(self.prefix.clone())
            .with_instance_id("inst")
            .with_background_compression(matches!(self.kind, Kind::MemoryBackground))
    }
}

/// The `n` of every record in the objects, in key order, and the records per object.
fn numbers(objs: &[(String, Vec<u8>)]) -> (Vec<u64>, Vec<usize>) {
    let mut ns = Vec::new();
    let mut per = Vec::new();
    for (k, b) in objs {
        let d = decode(k, b).unwrap_or_else(|e| panic!("{k}: {e}"));
        assert!(d.bad.is_empty(), "{k}: bad records {:?}", d.bad);
        per.push(d.records.len());
        ns.extend(d.records.iter().map(|r| r["n"].as_u64().unwrap()));
    }
    (ns, per)
}

async fn flush_by_count(kind: Kind) {
    let e = env(kind, "count");
    let sink = e.builder().with_flush_size(100).build().unwrap();
    let events: Vec<Value> = (0..250).map(|n| json!({ "n": n })).collect();
    sink.push_batch(&events).await.unwrap();
    sink.shutdown().await.unwrap();
    let objs = e.objects().await;
    let (ns, per) = numbers(&objs);
    assert_eq!(per, [100, 100, 50], "{kind:?}");
    assert_eq!(ns, (0..250).collect::<Vec<_>>(), "{kind:?}");
    for (k, _) in &objs {
        assert!(k.ends_with(".ndjson.gz"), "{k}");
    }
}

async fn flush_by_encoded_bytes(kind: Kind) {
    let e = env(kind, "bytes");
    let max = 8 * 1024;
    let sink = e
        .builder()
        .with_compression(Compression::None)
        .with_flush_size(1_000_000)
        .with_max_bytes(max)
        .build()
        .unwrap();
    let events: Vec<Value> = (0..1000)
        .map(|n| json!({ "n": n, "pad": "x".repeat(40) }))
        .collect();
    sink.push_batch(&events).await.unwrap();
    sink.shutdown().await.unwrap();
    let objs = e.objects().await;
    assert!(objs.len() >= 6, "{kind:?}: {} objects", objs.len());
    for (i, (k, b)) in objs.iter().enumerate() {
        assert!(b.len() <= max, "{k}: {} > {max}", b.len());
        if i + 1 < objs.len() {
            assert!(b.len() > max - 80, "{k}: {} is far below {max}", b.len());
        }
    }
    assert_eq!(numbers(&objs).0, (0..1000).collect::<Vec<_>>());
}

async fn flush_by_interval(kind: Kind) {
    let e = env(kind, "interval");
    let sink = e
        .builder()
        .with_flush_interval(Duration::from_millis(300))
        .build()
        .unwrap();
    let events: Vec<Value> = (0..3).map(|n| json!({ "n": n })).collect();
    sink.push_batch(&events).await.unwrap();
    assert!(e.objects().await.is_empty());
    // No further event: the timer alone must flush.
    let mut objs = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        objs = e.objects().await;
        if !objs.is_empty() {
            break;
        }
    }
    assert_eq!(numbers(&objs).0, [0, 1, 2], "{kind:?}");
    sink.shutdown().await.unwrap();
}

async fn partitions_roll_over(kind: Kind) {
    for (granularity, times, want) in [
        (
            Granularity::Hourly,
            ["2024-03-05T10:59:59Z", "2024-03-05T11:00:00Z"],
            ["2024/03/05/10/", "2024/03/05/11/"],
        ),
        (
            Granularity::Daily,
            ["2024-12-31T23:59:59Z", "2025-01-01T00:00:00Z"],
            ["2024/12/31/", "2025/01/01/"],
        ),
    ] {
        let e = env(kind, "rollover");
        let p = TimePartitioner::new(granularity).with_time_source(TimeSource::Event {
            fallback_to_processing: false,
        });
        let sink = e.builder().with_partitioner(Arc::new(p)).build().unwrap();
        // Interleaved, and a late event back in the first partition.
        let events: Vec<Value> = (0..5)
            .map(|n| json!({ "n": n, "eventTime": times[n % 2] }))
            .collect();
        sink.push_batch(&events).await.unwrap();
        sink.shutdown().await.unwrap();
        let objs = e.objects().await;
        assert_eq!(objs.len(), 2, "{kind:?} {granularity:?}");
        for ((k, b), w) in objs.iter().zip(want) {
            let rest = k.strip_prefix(&e.prefix).unwrap();
            assert!(rest.starts_with(w), "{k} not under {w}");
            let d = decode(k, b).unwrap();
            let first = d.records[0]["n"].as_u64().unwrap() as usize;
            assert!(d.records.iter().all(|r| r["eventTime"] == times[first % 2]));
        }
        assert_eq!(numbers(&objs).1, [3, 2]);
    }
}

/// Every encoding x compression pair the sink writes, with its extension.
fn pairs() -> Vec<(Encoding, Compression, &'static str)> {
    #[allow(unused_mut)]
    let mut v = vec![
        (Encoding::Ndjson, Compression::gzip(), ".ndjson.gz"),
        (Encoding::Ndjson, Compression::None, ".ndjson"),
        (Encoding::JsonArray, Compression::gzip(), ".json.gz"),
        (Encoding::JsonArray, Compression::None, ".json"),
        (Encoding::Ndjson, Compression::zstd(), ".ndjson.zst"),
        (Encoding::JsonArray, Compression::zstd(), ".json.zst"),
    ];
    #[cfg(feature = "parquet")]
    for page in [
        crate::PageCompression::default(),
        crate::PageCompression::Snappy,
        crate::PageCompression::None,
    ] {
        let opts = crate::ParquetOptions::default().with_compression(page);
        v.push((Encoding::Parquet(opts), Compression::None, ".parquet"));
    }
    v
}

async fn encodings_round_trip(kind: Kind) {
    for (encoding, compression, ext) in pairs() {
        let e = env(kind, "enc");
        let sink = e
            .builder()
            .with_encoding(encoding)
            .with_compression(compression)
            .build()
            .unwrap();
        let events: Vec<Value> = (0..20)
            .map(|n| json!({ "n": n, "s": "line\nbreak \u{e9}" }))
            .collect();
        sink.push_batch(&events).await.unwrap();
        sink.shutdown().await.unwrap();
        let objs = e.objects().await;
        assert_eq!(objs.len(), 1);
        let (k, b) = &objs[0];
        assert!(k.ends_with(ext), "{k} should end with {ext}");
        let d = decode(k, b).unwrap();
        assert_eq!(d.records, events, "{kind:?} {ext}");
        if ext == ".json" {
            let v: Value = serde_json::from_slice(b).expect("a JSON array object is valid JSON");
            assert_eq!(v.as_array().unwrap().len(), 20);
        }
        // Content type and encoding (the local directory keeps them in a
        // sidecar).
        {
            let got = e.store.get(&Path::from(k.as_str())).await.unwrap();
            let ct = got.attributes.get(&object_store::Attribute::ContentType);
            assert_eq!(
                ct.map(|v| v.as_ref()),
                Some(encoding.content_type()),
                "{kind:?} {k}"
            );
            let ce = got
                .attributes
                .get(&object_store::Attribute::ContentEncoding);
            assert_eq!(
                ce.map(|v| v.as_ref()),
                compression.content_encoding(),
                "{k}"
            );
        }
    }
}

async fn multipart_for_large_batch(kind: Kind) {
    let e = env(kind, "multipart");
    let sink = e
        .builder()
        .with_compression(Compression::None)
        .with_flush_size(1_000_000)
        .with_part_size(crate::MIN_PART_SIZE)
        .build()
        .unwrap();
    // ~12 MiB: three parts, the last one short.
    let pad = "p".repeat(1000);
    let events: Vec<Value> = (0..12_000).map(|n| json!({ "n": n, "pad": pad })).collect();
    sink.push_batch(&events).await.unwrap();
    sink.shutdown().await.unwrap();
    let objs = e.objects().await;
    assert_eq!(objs.len(), 1);
    assert!(
        objs[0].1.len() > 2 * crate::MIN_PART_SIZE,
        "{}",
        objs[0].1.len()
    );
    assert_eq!(
        numbers(&objs).0,
        (0..12_000).collect::<Vec<_>>(),
        "{kind:?}"
    );
}

async fn spool_uploads_exactly_once_after_a_crash(kind: Kind) {
    spool_crash(kind, crate::KeyNaming::Sequence, Encoding::Ndjson).await;
}

async fn uuid_names_are_stable_across_a_crash(kind: Kind) {
    spool_crash(kind, crate::KeyNaming::Uuid, Encoding::Ndjson).await;
}

/// The spool's batches are re-encoded as Parquet on recovery, to the same
/// bytes (a lost reply's retry finds its own object).
#[cfg(feature = "parquet")]
async fn parquet_spool_uploads_exactly_once_after_a_crash(kind: Kind) {
    let opts = crate::ParquetOptions::default();
    spool_crash(kind, crate::KeyNaming::Sequence, Encoding::Parquet(opts)).await;
}

async fn spool_crash(kind: Kind, naming: crate::KeyNaming, encoding: Encoding) {
    let ext = match encoding {
        Encoding::Ndjson => ".ndjson.gz",
        _ => ".parquet",
    };
    for mode in [DOWN, LOSE_REPLY] {
        let e = env(kind, "spool");
        let spool = tempfile::tempdir().unwrap();
        let opts = SpoolOptions::new(spool.path()).with_fsync(SpoolFsync::Always);
        let flaky = Flaky::new(Arc::clone(&e.store), mode);
        let sink = Sink::builder()
            .with_store(flaky.clone())
            .with_prefix(e.prefix.clone())
            .with_flush_size(10)
            .with_spool(opts.clone())
            .with_key_naming(naming)
            .with_encoding(encoding)
            .with_background_compression(matches!(kind, Kind::MemoryBackground))
            .build()
            .unwrap();
        let id = sink.instance_id().to_owned();
        let events: Vec<Value> = (0..25).map(|n| json!({ "n": n })).collect();
        sink.push_batch(&events).await.unwrap();
        // Two batches closed and tried (stored, with LOSE_REPLY), five open.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(sink.stats().upload_retries > 0);
        sink.crash().await;

        let sink = Sink::builder()
            .with_store(Arc::clone(&e.store))
            .with_prefix(e.prefix.clone())
            .with_flush_size(10)
            .with_spool(opts.clone())
            .with_key_naming(naming)
            .with_encoding(encoding)
            .with_background_compression(matches!(kind, Kind::MemoryBackground))
            .build()
            .unwrap();
        assert_eq!(
            sink.instance_id(),
            id,
            "the instance id is kept in the spool"
        );
        // Down: all 25 are left. A lost reply: the two closed batches were
        // stored, and their retries found their own objects (create-only
        // put refused, content read back identical), so only the open
        // batch's 5 are left.
        let left = if mode == DOWN { 25 } else { 5 };
        assert_eq!(sink.stats().events_recovered, left, "mode {mode}");
        sink.push(&json!({ "n": 25 })).await.unwrap();
        sink.shutdown().await.unwrap();
        let objs = e.objects().await;
        let (ns, per) = numbers(&objs);
        assert_eq!(ns.len(), 26, "{kind:?} mode {mode}: {per:?}");
        let mut sorted = ns.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..26).collect::<Vec<_>>(), "{kind:?} mode {mode}");
        // Keys from the spool: the first events' sequence numbers.
        let mut names: Vec<String> = objs
            .iter()
            .map(|(k, _)| k.rsplit('/').next().unwrap().to_owned())
            .collect();
        let mut want: Vec<String> = [0u64, 10, 20, 25]
            .iter()
            .map(|s| match naming {
                crate::KeyNaming::Sequence => format!("{id}-{s:020}{ext}"),
                crate::KeyNaming::Uuid => {
                    let u = uuid::Uuid::new_v5(
                        &uuid::Uuid::NAMESPACE_OID,
                        format!("{id}-{s}").as_bytes(),
                    );
                    format!("{u}{ext}")
                }
            })
            .collect();
        names.sort();
        want.sort();
        assert_eq!(names, want, "{kind:?} mode {mode}");
        // Everything uploaded: the spool shrinks to its newest segment.
        drop(sink);
        let files = crate::spool::segment_files(spool.path());
        assert!(files <= 2, "{files} segment files left in the spool");
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Kind::Memory).await })*
        }
        mod memory_background {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Kind::MemoryBackground).await })*
        }
        mod local {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Kind::Local).await })*
        }
        #[cfg(feature = "integration")]
        mod s3 {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Kind::S3).await })*
        }
        #[cfg(all(feature = "integration", feature = "aws-sdk"))]
        mod aws_sdk {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Kind::AwsSdk).await })*
        }
    };
}

/// The store refuses a create-only put on a taken key and keeps the first
/// content (`If-None-Match: *` on S3); the sink relies on it to never
/// overwrite an object.
async fn create_only_puts_are_honoured(kind: Kind) {
    let e = env(kind, "create-only");
    let key = Path::from(format!("{}k.ndjson", e.prefix));
    let create = || PutOptions {
        mode: object_store::PutMode::Create,
        ..PutOptions::default()
    };
    e.store
        .put_opts(&key, PutPayload::from_static(b"first\n"), create())
        .await
        .unwrap();
    let second = e
        .store
        .put_opts(&key, PutPayload::from_static(b"second\n"), create())
        .await;
    assert!(
        matches!(second, Err(object_store::Error::AlreadyExists { .. })),
        "{kind:?}: {second:?}"
    );
    let kept = e.store.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(&kept[..], b"first\n", "{kind:?}");
}

/// A fixed instance id reused without its spool starts the key counter
/// again: the second run's batches land on alternate keys, the first run's
/// objects are untouched, every event is there once.
async fn a_reused_instance_id_never_overwrites(kind: Kind) {
    let e = env(kind, "reused-id");
    for (run, from) in [(0, 0u64), (1, 100)] {
        let sink = Sink::builder()
            .with_store(Arc::clone(&e.store))
            .with_prefix(e.prefix.clone())
            .with_instance_id("fixed")
            .with_flush_size(5)
            .with_background_compression(matches!(kind, Kind::MemoryBackground))
            .build()
            .unwrap();
        for n in from..from + 10 {
            sink.push(&json!({ "n": n })).await.unwrap();
        }
        sink.shutdown().await.unwrap();
        assert_eq!(sink.stats().key_collisions, run * 2, "{kind:?}");
        if run == 0 {
            let first = e.objects().await;
            assert_eq!(first.len(), 2);
        }
    }
    let objs = e.objects().await;
    assert_eq!(objs.len(), 4, "{kind:?}");
    let (mut ns, _) = numbers(&objs);
    ns.sort();
    let want: Vec<u64> = (0..10).chain(100..110).collect();
    assert_eq!(ns, want, "{kind:?}");
}

/// Every object carries its delivery manifest, read back from the store:
/// the record count, the spool sequence numbers of its records (with a
/// spool), the instance id and the SHA-256 of its bytes.
async fn objects_carry_their_manifest(kind: Kind) {
    let e = env(kind, "manifest");
    let spool = tempfile::tempdir().unwrap();
    let sink = e
        .builder()
        .with_flush_size(4)
        .with_spool(SpoolOptions::new(spool.path()).with_fsync(SpoolFsync::Never))
        .build()
        .unwrap();
    let events: Vec<Value> = (0..10).map(|n| json!({ "n": n })).collect();
    sink.push_batch(&events).await.unwrap();
    sink.shutdown().await.unwrap();
    let objs = e.objects().await;
    assert_eq!(objs.len(), 3, "{kind:?}");
    let mut next = 0;
    for (k, b) in &objs {
        let m = crate::Manifest::read(&*e.store, &Path::from(k.as_str()))
            .await
            .unwrap()
            .unwrap()
            .unwrap_or_else(|| panic!("{kind:?}: {k} has no manifest"));
        let n = decode(k, b).unwrap().records.len() as u64;
        assert_eq!(m.records, n, "{kind:?} {k}");
        assert_eq!(m.sha256, crate::manifest::sha256_hex(b), "{kind:?} {k}");
        assert_eq!(m.instance, "inst");
        assert_eq!(m.runs, [(next, next + n - 1)], "{kind:?} {k}");
        assert!(k.ends_with(&format!("inst-{next:020}.ndjson.gz")), "{k}");
        next += n;
    }
    // Without a spool: no sequence numbers, the count and checksum still.
    let e = env(kind, "manifest-nospool");
    let sink = e.builder().build().unwrap();
    sink.push_batch(&events).await.unwrap();
    sink.shutdown().await.unwrap();
    let objs = e.objects().await;
    let key = Path::from(objs[0].0.as_str());
    let m = crate::Manifest::read(&*e.store, &key)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((m.records, m.runs.len()), (10, 0), "{kind:?}");
    assert_eq!(m.sha256, crate::manifest::sha256_hex(&objs[0].1));
}

conformance!(
    objects_carry_their_manifest,
    verify_finds_each_damage_by_name,
    create_only_puts_are_honoured,
    a_reused_instance_id_never_overwrites,
    flush_by_count,
    flush_by_encoded_bytes,
    flush_by_interval,
    partitions_roll_over,
    encodings_round_trip,
    multipart_for_large_batch,
    spool_uploads_exactly_once_after_a_crash,
    uuid_names_are_stable_across_a_crash,
);

#[cfg(feature = "parquet")]
mod parquet {
    use super::*;
    conformance!(
        parquet_spool_uploads_exactly_once_after_a_crash,
        parquet_flush_by_encoded_bytes,
        parquet_refuses_what_does_not_fit,
    );
}

/// The encoded-size trigger cuts Parquet objects within 10 % of `max_bytes`.
#[cfg(feature = "parquet")]
async fn parquet_flush_by_encoded_bytes(kind: Kind) {
    let e = env(kind, "pqbytes");
    let max = 256 * 1024;
    let sink = e
        .builder()
        .with_encoding(Encoding::Parquet(crate::ParquetOptions::default()))
        .with_flush_size(1_000_000)
        .with_max_bytes(max)
        .build()
        .unwrap();
    let events: Vec<Value> = (0..60_000u64)
        .map(|n| json!({ "n": n, "id": format!("{:016x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15)), "k": n % 7 }))
        .collect();
    sink.push_batch(&events).await.unwrap();
    sink.shutdown().await.unwrap();
    let objs = e.objects().await;
    assert!(objs.len() >= 3, "{kind:?}: {} objects", objs.len());
    for (k, b) in &objs[..objs.len() - 1] {
        let len = b.len();
        assert!(
            len <= max + max / 10 && len >= max - max / 10,
            "{k}: {len} bytes, not within 10 % of {max}"
        );
    }
    let (ns, _) = numbers(&objs);
    assert_eq!(ns, (0..60_000).collect::<Vec<_>>());
}

/// A record the Parquet schema cannot hold is refused at push, by index,
/// and counted; nothing of the push is kept, the rest goes through.
#[cfg(feature = "parquet")]
async fn parquet_refuses_what_does_not_fit(kind: Kind) {
    let e = env(kind, "pqrefuse");
    let opts = crate::ParquetOptions::default().with_schema(crate::ParquetSchema::CloudEvents);
    let sink = e
        .builder()
        .with_encoding(Encoding::Parquet(opts))
        .build()
        .unwrap();
    let ce = |n: u64| json!({"specversion": "1.0", "id": n.to_string(), "source": "/s", "type": "t", "n": n.to_string()});
    let mut bad = ce(1);
    bad.as_object_mut().unwrap().remove("id");
    let err = sink.push_batch(&[ce(0), bad]).await.unwrap_err();
    assert!(
        matches!(&err, crate::Error::RecordMismatch { index: 1, reason } if reason.contains("`id`")),
        "{err}"
    );
    assert_eq!(sink.stats().records_refused, 1);
    assert_eq!(sink.stats().events_accepted, 0);
    sink.push_batch(&[ce(0), ce(1)]).await.unwrap();
    sink.shutdown().await.unwrap();
    let objs = e.objects().await;
    assert_eq!(objs.len(), 1);
    let d = decode(&objs[0].0, &objs[0].1).unwrap();
    assert_eq!(d.records, vec![ce(0), ce(1)]);

    // An inferred schema: from the sink's first record; a record with a
    // field it lacks, or a value of another type, is refused by index.
    let e2 = env(kind, "pqinfer");
    let sink = e2
        .builder()
        .with_encoding(Encoding::Parquet(crate::ParquetOptions::default()))
        .build()
        .unwrap();
    sink.push(&json!({"n": 0, "s": "a"})).await.unwrap();
    let err = sink
        .push_batch(&[json!({"n": 1}), json!({"n": 2, "extra": true})])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, crate::Error::RecordMismatch { index: 1, reason } if reason.contains("`extra`")),
        "{err}"
    );
    let err = sink.push(&json!({"n": "three"})).await.unwrap_err();
    assert!(err.to_string().contains("`n`"), "{err}");
    assert_eq!(sink.stats().records_refused, 2);
    sink.push(&json!({"n": 4})).await.unwrap();
    sink.shutdown().await.unwrap();
    let objs = e2.objects().await;
    let d = decode(&objs[0].0, &objs[0].1).unwrap();
    assert_eq!(d.records, vec![json!({"n": 0, "s": "a"}), json!({"n": 4})]);

    // gzip on top of Parquet is refused at build, naming the key.
    let err = e
        .builder()
        .with_encoding(Encoding::Parquet(opts))
        .with_compression(Compression::gzip())
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("compression"), "{err}");
}

/// Events of two partitions interleaved: each partition's batch is one
/// object (interleaving does not cut batches short), and the objects'
/// delivery numbers are one run each, together every number from 0 to the
/// last, so `verify` finds the range complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_partitions_make_one_object_each_with_consecutive_numbers() {
    let e = env(Kind::Memory, "runs");
    let spool = tempfile::tempdir().unwrap();
    let p = TimePartitioner::new(Granularity::Hourly).with_time_source(TimeSource::Event {
        fallback_to_processing: false,
    });
    let sink = e
        .builder()
        .with_partitioner(Arc::new(p))
        .with_spool(SpoolOptions::new(spool.path()).with_fsync(SpoolFsync::Never))
        .build()
        .unwrap();
    let times = ["2024-03-05T10:00:00Z", "2024-03-05T11:00:00Z"];
    let events: Vec<Value> = (0..300)
        .map(|n| json!({ "n": n, "eventTime": times[n % 2] }))
        .collect();
    sink.push_batch(&events).await.unwrap();
    sink.shutdown().await.unwrap();
    let objs = e.objects().await;
    assert_eq!(objs.len(), 2, "one object per partition");
    let mut runs = Vec::new();
    for (k, b) in objs {
        let m = crate::Manifest::read(&*e.store, &Path::from(k.as_str()))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let ns: Vec<u64> = decode(&k, &b)
            .unwrap()
            .records
            .iter()
            .map(|r| r["n"].as_u64().unwrap())
            .collect();
        assert_eq!(ns.len(), 150, "{k}");
        assert!(ns.iter().all(|n| n % 2 == ns[0] % 2), "{k}: one partition");
        assert_eq!(m.records, 150);
        assert_eq!(m.runs.len(), 1, "{k}: {:?}", m.runs);
        runs.push(m.runs[0]);
    }
    runs.sort_unstable();
    assert_eq!(runs, [(0, 149), (150, 299)]);
    let opts = crate::VerifyOptions {
        prefix: e.prefix.clone(),
        ..Default::default()
    };
    let report = crate::verify(&*e.store, &opts).await.unwrap();
    assert!(report.is_complete(), "{report:?}");
}

/// A full spool makes `push` wait instead of growing; with a bound on the
/// wait, the push fails as backpressure and accepts nothing. Once the store
/// is back, everything accepted is uploaded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_is_backpressure() {
    let e = env(Kind::Memory, "backpressure");
    let spool = tempfile::tempdir().unwrap();
    let flaky = Flaky::new(Arc::clone(&e.store), DOWN);
    let sink = Sink::builder()
        .with_store(flaky.clone())
        .with_prefix(e.prefix.clone())
        .with_flush_size(10)
        .with_spool(
            SpoolOptions::new(spool.path())
                .with_fsync(SpoolFsync::Never)
                .with_max_bytes(64 * 1024),
        )
        .build()
        .unwrap();
    let pad = "x".repeat(1000);
    let mut accepted = 0u64;
    let err = loop {
        let ev = json!({ "n": accepted, "pad": pad });
        match sink
            .push_batch_within(std::slice::from_ref(&ev), Duration::from_millis(300))
            .await
        {
            Ok(()) => accepted += 1,
            Err(err) => break err,
        }
        assert!(accepted < 1000, "the spool never filled");
    };
    assert!(matches!(err, crate::Error::Backpressure), "{err}");
    let st = sink.stats();
    assert_eq!(
        st.events_accepted, accepted,
        "a refused push accepted nothing"
    );
    assert!(st.spool_bytes >= 64 * 1024, "{st:?}");
    flaky.set_mode(OK);
    sink.shutdown().await.unwrap();
    let (ns, _) = numbers(&e.objects().await);
    assert_eq!(ns.len() as u64, accepted);
    let mut sorted = ns;
    sorted.sort_unstable();
    assert_eq!(sorted, (0..accepted).collect::<Vec<_>>());
}

/// Rewrites the object at `key` with `bytes`, keeping its attributes (its
/// manifest among them), as a bit flip or a truncation in the store would.
async fn rewrite(store: &dyn ObjectStore, key: &str, bytes: Vec<u8>) {
    let path = Path::from(key);
    let attributes = store.get(&path).await.unwrap().attributes;
    let opts = PutOptions {
        attributes,
        ..PutOptions::default()
    };
    store
        .put_opts(&path, PutPayload::from(bytes), opts)
        .await
        .unwrap();
}

/// `verify` passes on what the sink wrote, and then names each object that
/// was deleted, truncated, copied under another key, or had one record
/// changed; a range's edges are filled by the neighbouring partitions.
async fn verify_finds_each_damage_by_name(kind: Kind) {
    let e = env(kind, "verify");
    let spool = tempfile::tempdir().unwrap();
    let p = TimePartitioner::new(Granularity::Hourly).with_time_source(TimeSource::Event {
        fallback_to_processing: false,
    });
    let sink = e
        .builder()
        .with_partitioner(Arc::new(p))
        .with_flush_size(5)
        .with_spool(SpoolOptions::new(spool.path()).with_fsync(SpoolFsync::Never))
        .build()
        .unwrap();
    // Hour 10 then hour 11, two events each on the other side of the edge.
    let hour = |n: u64| {
        if (n < 40 && n != 38) || n == 41 {
            10
        } else {
            11
        }
    };
    let events: Vec<Value> = (0..60u64)
        .map(|n| json!({ "n": n, "eventTime": format!("2024-03-05T{}:30:00Z", hour(n)) }))
        .collect();
    sink.push_batch(&events).await.unwrap();
    sink.shutdown().await.unwrap();
    let t = |s: &str| crate::verify::parse_time(s).unwrap();
    let opts = |from: Option<&str>, to: Option<&str>| crate::VerifyOptions {
        prefix: e.prefix.clone(),
        from: from.map(t),
        to: to.map(t),
        ..Default::default()
    };
    let ten = opts(Some("2024-03-05T10"), Some("2024-03-05T11"));
    for o in [
        &ten,
        &opts(Some("2024-03-05T11"), Some("2024-03-05T12")),
        &opts(None, None),
    ] {
        let r = crate::verify(&*e.store, o).await.unwrap();
        assert!(r.is_complete(), "{kind:?} {o:?}: {:#?}", r.problems);
    }
    let r = crate::verify(&*e.store, &ten).await.unwrap();
    assert_eq!(r.records, 40, "{kind:?}");
    assert!(
        r.neighbours > 0,
        "{kind:?}: the next hour's objects were read"
    );

    let objs = e.objects().await;
    let hour10: Vec<&(String, Vec<u8>)> = objs.iter().filter(|(k, _)| k.contains("/10/")).collect();
    assert!(hour10.len() >= 6, "{kind:?}: {} objects", hour10.len());
    let key = |i: usize| hour10[i].0.clone();
    // Deleted: the hole names the missing key.
    e.store.delete(&Path::from(key(1).as_str())).await.unwrap();
    // Truncated.
    let b = &hour10[2].1;
    rewrite(&*e.store, &key(2), b[..b.len() / 2].to_vec()).await;
    // One record changed.
    let mut d = decode(&key(3), &hour10[3].1).unwrap().records;
    d[0]["n"] = json!(1000);
    let mut enc = crate::BatchEncoder::new(Encoding::Ndjson, Compression::gzip());
    for r in &d {
        enc.push(r).unwrap();
    }
    rewrite(&*e.store, &key(3), enc.finish().unwrap()).await;
    // Duplicated range: the same object under a second name.
    let dup = key(4).replace(".ndjson.gz", "-copy.ndjson.gz");
    e.store
        .copy(&Path::from(key(4).as_str()), &Path::from(dup.as_str()))
        .await
        .unwrap();

    let r = crate::verify(&*e.store, &ten).await.unwrap();
    assert!(!r.is_complete());
    let named = |what: &str, k: &str| {
        r.problems
            .iter()
            .any(|p| p.to_string().starts_with(what) && p.keys().contains(&k))
    };
    let all = format!("{kind:?}: {:#?}", r.problems);
    assert!(named("missing", &key(1)), "deleted {}: {all}", key(1));
    assert!(named("mismatch", &key(2)), "truncated {}: {all}", key(2));
    assert!(named("mismatch", &key(3)), "changed {}: {all}", key(3));
    assert!(
        named("overlap", &key(4)) && named("overlap", &dup),
        "copied {}: {all}",
        key(4)
    );
    let changed = r
        .problems
        .iter()
        .filter(|p| p.keys().contains(&key(3).as_str()));
    assert_eq!(
        changed.count(),
        1,
        "one record changed: the checksum only; {all}"
    );
    // Exactly these four objects, nothing else.
    for p in &r.problems {
        let ks = p.keys();
        assert!(
            [key(1), key(2), key(3), key(4), dup.clone()]
                .iter()
                .any(|k| ks.contains(&k.as_str())),
            "{kind:?}: unexpected {p}"
        );
    }
}

/// The field names of a Parquet object's schema.
#[cfg(feature = "parquet")]
fn parquet_fields(bytes: &[u8]) -> Vec<String> {
    let b = ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::copy_from_slice(bytes),
    )
    .unwrap();
    b.schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

/// An inferred Parquet schema is kept in the spool: a restarted sink
/// refuses what does not fit the schema the first process inferred, and
/// uploads what a crash left in the spool under that schema (not one
/// inferred from the left-over records alone).
#[cfg(feature = "parquet")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inferred_parquet_schema_survives_a_restart() {
    let e = env(Kind::Memory, "schema");
    let spool = tempfile::tempdir().unwrap();
    let sink = || {
        e.builder()
            .with_encoding(Encoding::Parquet(crate::ParquetOptions::default()))
            .with_spool(SpoolOptions::new(spool.path()).with_fsync(SpoolFsync::Never))
            .build()
            .unwrap()
    };
    let first = sink();
    first.push(&json!({"a": 1, "b": "x"})).await.unwrap();
    first.shutdown().await.unwrap();
    drop(first);
    let second = sink();
    let err = second.push(&json!({"a": 2, "c": true})).await.unwrap_err();
    assert!(
        matches!(&err, crate::Error::RecordMismatch { reason, .. } if reason.contains("`c`")),
        "{err}"
    );
    second.push(&json!({"a": 3})).await.unwrap();
    second.crash().await;
    let third = sink();
    third.shutdown().await.unwrap();
    let objs = e.objects().await;
    assert_eq!(
        objs.len(),
        2,
        "{:?}",
        objs.iter().map(|o| &o.0).collect::<Vec<_>>()
    );
    for (k, b) in &objs {
        assert_eq!(parquet_fields(b), ["a", "b"], "{k}");
    }
}
