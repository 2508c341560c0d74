use super::*;
use crate::decode;
use helpers::*;
use object_store::memory::InMemory;
use s3_event_core::TimeSource;
use serde_json::json;

mod helpers {
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{ObjectStore, ObjectStoreExt};

    /// Every key in the store, sorted, with its bytes.
    pub async fn objects(store: &InMemory) -> Vec<(String, Vec<u8>)> {
        let mut keys = Vec::new();
        let mut dirs: Vec<Option<Path>> = vec![None];
        while let Some(dir) = dirs.pop() {
            let l = store.list_with_delimiter(dir.as_ref()).await.unwrap();
            dirs.extend(l.common_prefixes.into_iter().map(Some));
            keys.extend(l.objects.into_iter().map(|o| o.location));
        }
        keys.sort();
        let mut out = Vec::new();
        for k in keys {
            let b = store.get(&k).await.unwrap().bytes().await.unwrap();
            out.push((k.to_string(), b.to_vec()));
        }
        out
    }
}

fn mem() -> Arc<InMemory> {
    Arc::new(InMemory::new())
}

#[tokio::test]
async fn flush_by_count() {
    let store = mem();
    let sink = SinkBuilder::default()
        .with_store(store.clone())
        .with_prefix("p/")
        .with_instance_id("inst")
        .with_flush_size(1000)
        .build()
        .unwrap();
    for i in 0..2500 {
        sink.push(&json!({ "n": i })).await.unwrap();
    }
    sink.shutdown().await.unwrap();
    let objs = objects(&store).await;
    assert_eq!(objs.len(), 3);
    let mut n = 0;
    for (i, (key, bytes)) in objs.iter().enumerate() {
        assert!(key.starts_with("p/"), "{key}");
        assert!(key.ends_with(&format!("inst-{i:020}.ndjson.gz")), "{key}");
        let d = decode(key, bytes).unwrap();
        assert!(d.bad.is_empty());
        for r in d.records {
            assert_eq!(r["n"], n);
            n += 1;
        }
    }
    assert_eq!(n, 2500);
    let st = sink.stats();
    assert_eq!(st.events_accepted, 2500);
    assert_eq!(st.objects_uploaded, 3);
    assert_eq!(st.open_batches, 0);
    assert_eq!(
        st.bytes_uploaded,
        objs.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
    );
    assert!(sink.push(&json!({})).await.is_err());
}

#[tokio::test]
async fn flush_by_encoded_bytes() {
    // gzip's size is an estimate until the compressor has produced output,
    // so its limit is large enough for several deflate blocks.
    for (compression, max, count, background) in [
        (Compression::None, 16 * 1024, 3000u64, false),
        (Compression::gzip(), 256 * 1024, 60_000, false),
        (Compression::gzip(), 256 * 1024, 60_000, true),
    ] {
        let store = mem();
        let sink = SinkBuilder::default()
            .with_store(store.clone())
            .with_compression(compression)
            .with_flush_size(1_000_000)
            .with_max_bytes(max)
            .with_background_compression(background)
            .build()
            .unwrap();
        let mut seed = 12345u64;
        let mut largest = 0;
        for i in 0..count {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let rec = json!({ "n": i, "r": format!("{seed:x}{:x}", seed >> 7) });
            largest = largest.max(serde_json::to_vec(&rec).unwrap().len() + 1);
            sink.push(&rec).await.unwrap();
        }
        sink.shutdown().await.unwrap();
        let objs = objects(&store).await;
        assert!(objs.len() >= 3, "{}", objs.len());
        let mut total = 0;
        for (i, (key, bytes)) in objs.iter().enumerate() {
            assert!(bytes.len() <= max + largest, "{} > {max}", bytes.len());
            if i + 1 < objs.len() {
                assert!(
                    bytes.len() >= max * 3 / 4,
                    "{key}: {} too small",
                    bytes.len()
                );
            }
            total += decode(key, bytes).unwrap().records.len();
        }
        assert_eq!(total as u64, count);
    }
}

#[tokio::test]
async fn flush_by_interval_without_more_events() {
    let store = mem();
    let sink = SinkBuilder::default()
        .with_store(store.clone())
        .with_flush_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    for i in 0..3 {
        sink.push(&json!({ "n": i })).await.unwrap();
    }
    assert!(objects(&store).await.is_empty());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let objs = objects(&store).await;
    assert_eq!(objs.len(), 1);
    assert_eq!(decode(&objs[0].0, &objs[0].1).unwrap().records.len(), 3);
    assert_eq!(sink.stats().open_batches, 0);
    sink.shutdown().await.unwrap();
}

#[tokio::test]
async fn two_partitions_by_event_time() {
    let store = mem();
    let p = TimePartitioner::default().with_time_source(TimeSource::Event {
        fallback_to_processing: false,
    });
    let sink = SinkBuilder::default()
        .with_store(store.clone())
        .with_prefix("ev/")
        .with_partitioner(Arc::new(p))
        .build()
        .unwrap();
    let events: Vec<_> = (0..10)
        .map(|i| {
            let hour = if i % 2 == 0 { 10 } else { 11 };
            json!({ "eventTime": format!("2024-03-05T{hour}:15:00Z"), "n": i })
        })
        .collect();
    sink.push_batch(&events).await.unwrap();
    assert_eq!(sink.stats().open_batches, 2);
    sink.flush().await.unwrap();
    let objs = objects(&store).await;
    assert_eq!(objs.len(), 2);
    assert!(objs[0].0.starts_with("ev/2024/03/05/10/"), "{}", objs[0].0);
    assert!(objs[1].0.starts_with("ev/2024/03/05/11/"), "{}", objs[1].0);
    for (k, b) in &objs {
        assert_eq!(decode(k, b).unwrap().records.len(), 5);
    }
    sink.shutdown().await.unwrap();
}

#[tokio::test]
async fn max_open_batches_flushes_oldest() {
    let store = mem();
    let p = TimePartitioner::default().with_time_source(TimeSource::Event {
        fallback_to_processing: false,
    });
    let sink = SinkBuilder::default()
        .with_store(store.clone())
        .with_partitioner(Arc::new(p))
        .with_max_open_batches(2)
        .build()
        .unwrap();
    for hour in 10..13 {
        sink.push(&json!({ "eventTime": format!("2024-03-05T{hour}:00:00Z") }))
            .await
            .unwrap();
    }
    assert_eq!(sink.stats().open_batches, 2);
    sink.flush().await.unwrap();
    let objs = objects(&store).await;
    assert_eq!(objs.len(), 3);
    assert!(objs[0].0.starts_with("2024/03/05/10/"));
    assert!(objs[0].0.ends_with(&format!("-{:020}.ndjson.gz", 0)));
    sink.shutdown().await.unwrap();
}

#[tokio::test]
async fn raw_json_is_stored_byte_for_byte() {
    use serde_json::value::RawValue;
    let store = mem();
    let sink = SinkBuilder::default()
        .with_store(store.clone())
        .with_compression(Compression::None)
        .build()
        .unwrap();
    let texts = [r#"{"n": 1.50, "s":"caf\u00e9"}"#, r#"[1,  2]"#, r#""x""#];
    let raws: Vec<Box<RawValue>> = texts
        .iter()
        .map(|t| RawValue::from_string((*t).to_owned()).unwrap())
        .collect();
    let refs: Vec<&RawValue> = raws.iter().map(|r| &**r).collect();
    sink.push_batch(&refs).await.unwrap();
    // A raw newline inside a record would split it in NDJSON: refused,
    // naming the record, and nothing of that push is accepted.
    let bad = RawValue::from_string("{\"a\":\n1}".to_owned()).unwrap();
    let e = sink.push_batch(&[&*raws[0], &*bad]).await.unwrap_err();
    assert!(matches!(e, Error::InvalidRecord { index: 1, .. }), "{e:?}");
    sink.shutdown().await.unwrap();
    assert_eq!(sink.stats().events_accepted, 3);
    let objs = objects(&store).await;
    assert_eq!(objs.len(), 1);
    let expected: String = texts.iter().map(|t| format!("{t}\n")).collect();
    assert_eq!(String::from_utf8(objs[0].1.clone()).unwrap(), expected);
}

/// Compressing in the background changes where deflate runs, not what
/// it is fed: the objects are the same, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_compression_writes_the_same_objects() {
    let partitioner = Arc::new(s3_event_core::TemplatePartitioner::new("p/").unwrap());
    for encoding in [Encoding::Ndjson, Encoding::JsonArray] {
        let mut results = Vec::new();
        for background in [false, true] {
            let store = mem();
            let sink = SinkBuilder::default()
                .with_store(store.clone())
                .with_instance_id("same")
                .with_partitioner(partitioner.clone())
                .with_encoding(encoding)
                .with_background_compression(background)
                .build()
                .unwrap();
            let events: Vec<serde_json::Value> = (0..6500)
                .map(|n| json!({ "n": n, "text": format!("{}", n * 7919).repeat(n % 40 + 1) }))
                .collect();
            for chunk in events.chunks(50) {
                sink.push_batch(chunk).await.unwrap();
            }
            sink.shutdown().await.unwrap();
            let objs = objects(&store).await;
            let decoded: usize = objs
                .iter()
                .map(|(k, b)| decode(k, b).unwrap().records.len())
                .sum();
            assert_eq!(decoded, 6500, "{encoding} background {background}");
            results.push(objs);
        }
        assert_eq!(results[0].len(), 7, "{encoding}");
        assert!(results[0] == results[1], "{encoding}: the objects differ");
    }
}

#[tokio::test]
async fn json_array_without_compression_is_valid_json() {
    let store = mem();
    let sink = SinkBuilder::default()
        .with_store(store.clone())
        .with_encoding(Encoding::JsonArray)
        .with_compression(Compression::None)
        .build()
        .unwrap();
    for i in 0..5 {
        sink.push(&json!({ "n": i })).await.unwrap();
    }
    sink.shutdown().await.unwrap();
    let objs = objects(&store).await;
    assert_eq!(objs.len(), 1);
    assert!(objs[0].0.ends_with(".json"));
    let v: serde_json::Value = serde_json::from_slice(&objs[0].1).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 5);
    assert_eq!(v[4]["n"], 4);
}

#[tokio::test]
async fn local_store_writes_under_tempdir() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let sink = SinkBuilder::default()
        .with_store(store)
        .with_prefix("out/")
        .with_instance_id("i")
        .with_flush_size(2)
        .build()
        .unwrap();
    for i in 0..5 {
        sink.push(&json!({ "n": i })).await.unwrap();
    }
    sink.shutdown().await.unwrap();
    let mut files = Vec::new();
    let mut stack = vec![dir.path().join("out")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    assert_eq!(files.len(), 3);
    let mut n = 0;
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("i-") && name.ends_with(".ndjson.gz"),
            "{name}"
        );
        n += decode(name, &std::fs::read(f).unwrap())
            .unwrap()
            .records
            .len();
    }
    assert_eq!(n, 5);
}

#[tokio::test]
async fn bad_prefix_or_instance_id_fails_at_build() {
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    for (prefix, instance) in [("a//b/", "i"), ("ok/", "a/b"), ("ok/", "")] {
        let built = Sink::builder()
            .with_store(store.clone())
            .with_prefix(prefix)
            .with_instance_id(instance)
            .build();
        let Err(e) = built else {
            panic!("build must fail for prefix {prefix:?}, instance {instance:?}")
        };
        assert!(
            matches!(e, Error::InvalidKey { .. } | Error::InvalidConfig { .. }),
            "{prefix} {instance}: {e}"
        );
    }
}

/// Two uploads finish together and each frees spool segments: the older
/// segments' deletion is slow (held here, as by a long fsync) and the
/// process dies before it. The newer segment (holding the first batch's
/// close and uploaded frames) must not be gone while the older one (its
/// first events) is still there: a restart would take those events for
/// an unclosed batch and upload them under the first batch's key,
/// overwriting the object that held all of them.
#[tokio::test]
async fn a_crash_during_a_slow_segment_deletion_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = mem();
    let build = || {
        let p = TimePartitioner::default().with_time_source(TimeSource::Event {
            fallback_to_processing: false,
        });
        SinkBuilder::default()
            .with_store(store.clone())
            .with_instance_id("i")
            .with_partitioner(Arc::new(p))
            .with_flush_size(10)
            .with_spool(
                SpoolOptions::new(dir.path())
                    .with_fsync(SpoolFsync::Never)
                    .with_segment_bytes(4096),
            )
            .build()
            .unwrap()
    };
    let pad = "x".repeat(500);
    let event = |n: u64| {
        let hour = if n < 10 { 10 } else { 11 };
        json!({ "eventTime": format!("2024-03-05T{hour}:00:00Z"), "n": n, "pad": pad })
    };
    let sink = build();
    sink.inner.hold_deletes.store(true, Ordering::SeqCst);
    // The first batch (hour 10) fills the first 4 KiB segment (six
    // events of ~560 bytes) and starts the second; its upload frees the
    // first segment, whose deletion is then held.
    for n in 0..10 {
        sink.push(&event(n)).await.unwrap();
    }
    let t0 = std::time::Instant::now();
    while sink.inner.hold_deletes.load(Ordering::SeqCst) {
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", sink.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Three more batches (hour 11) free the second segment too.
    for n in 10..40 {
        sink.push(&event(n)).await.unwrap();
    }
    let t0 = std::time::Instant::now();
    while sink.stats().objects_uploaded < 3 {
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", sink.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sink.crash().await;

    let sink = build();
    sink.shutdown().await.unwrap();
    let mut seen = std::collections::BTreeMap::new();
    for (k, b) in objects(&store).await {
        for r in decode(&k, &b).unwrap().records {
            *seen.entry(r["n"].as_u64().unwrap()).or_insert(0) += 1;
        }
    }
    let missing: Vec<u64> = (0..40).filter(|n| !seen.contains_key(n)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert!(seen.values().all(|c| *c == 1), "duplicated: {seen:?}");
}

/// A flush or a shutdown waits for everything, so the spool's fsync
/// interval is only latency to it: with an hour's interval, flushing twice
/// (two close frames, two uploaded frames, each needing a round) and
/// shutting down finish without waiting for it.
#[tokio::test]
async fn flush_and_shutdown_do_not_wait_for_the_fsync_interval() {
    let dir = tempfile::tempdir().unwrap();
    let store = mem();
    let sink = SinkBuilder::default()
        .with_store(store.clone())
        .with_instance_id("i")
        .with_spool(
            SpoolOptions::new(dir.path())
                .with_fsync(SpoolFsync::Interval(Duration::from_secs(3600))),
        )
        .build()
        .unwrap();
    let run = async {
        for n in 0..2 {
            sink.push(&json!({ "n": n })).await.unwrap();
            sink.flush().await.unwrap();
        }
        sink.push(&json!({ "n": 2 })).await.unwrap();
        sink.shutdown().await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("flush or shutdown waited for the fsync interval");
    assert_eq!(objects(&store).await.len(), 3);
}
