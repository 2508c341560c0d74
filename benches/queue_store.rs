//! Queue store: durable enqueue + ack of 1 KiB entries.
//!
//! - `segment_log/N`: [`QueueStore`] with the default grouped fsync
//!   (`FsyncPolicy::Every(1 ms)`): N `append` calls, one `sync` (the
//!   durability point), then `peek(N)` and `ack` of the last one.
//! - `segment_log_batch/N`: the same with one `append_batch` of N entries.
//! - `file_per_event/N` (baseline, MinIO's `queue_dir` design): each event is
//!   written to a temp file, fsynced and renamed into the directory; the
//!   consumer lists the directory, reads each file and deletes it on ack.
//!
//! Both write to a directory under `CARGO_TARGET_TMPDIR`, on the same disk as
//! the build (not a tmpfs, where fsync would cost nothing).

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::fs::{self, File};
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use s3_event::targets::{QueueStore, QueueStoreOptions};

const ENTRY_BYTES: usize = 1024;

fn entry(i: usize) -> Vec<u8> {
    let mut e =
        format!("{{\"eventName\":\"s3:ObjectCreated:Put\",\"seq\":{i},\"pad\":\"").into_bytes();
    e.resize(ENTRY_BYTES - 2, b'x');
    e.extend_from_slice(b"\"}");
    e
}

fn bench_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("bench directory")
}

/// MinIO's queue store: one file per event, tmp + fsync + rename, listed by
/// the consumer, deleted on ack.
struct FilePerEvent {
    dir: PathBuf,
    next: u64,
}

impl FilePerEvent {
    fn put(&mut self, event: &[u8]) {
        let name = format!("{:020}.event", self.next);
        self.next += 1;
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut file = File::create(&tmp).unwrap();
        file.write_all(event).unwrap();
        file.sync_all().unwrap();
        fs::rename(&tmp, self.dir.join(name)).unwrap();
    }

    fn drain(&self) -> usize {
        let mut names: Vec<PathBuf> = fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "event"))
            .collect();
        names.sort();
        for path in &names {
            black_box(fs::read(path).unwrap());
            fs::remove_file(path).unwrap();
        }
        names.len()
    }
}

fn segment_log_round(store: &QueueStore, entries: &[Vec<u8>], batch: bool) {
    if batch {
        store.append_batch(entries).unwrap();
    } else {
        for e in entries {
            store.append(e).unwrap();
        }
    }
    store.sync().unwrap();
    let batch = store.peek(entries.len()).unwrap();
    assert_eq!(batch.len(), entries.len());
    store.ack(batch.last().unwrap().0).unwrap();
}

fn file_per_event_round(store: &mut FilePerEvent, entries: &[Vec<u8>]) {
    for e in entries {
        store.put(e);
    }
    assert_eq!(store.drain(), entries.len());
}

fn durable_enqueue_ack(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue_store_durable_enqueue_ack_1KiB");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));

    for (name, n, batch) in [
        ("segment_log", 256, false),
        ("segment_log_batch", 256, true),
        ("segment_log", 1024, false),
    ] {
        let entries: Vec<Vec<u8>> = (0..n).map(entry).collect();
        let dir = bench_dir();
        let store = QueueStore::open(dir.path(), QueueStoreOptions::default()).unwrap();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new(name, n), &entries, |b, e| {
            b.iter(|| segment_log_round(&store, e, batch))
        });
        check_empty(&store, dir.path());
    }

    // One fsync per event: a smaller round keeps the run short; the figure
    // is per event either way.
    let n = 32;
    let entries: Vec<Vec<u8>> = (0..n).map(entry).collect();
    let dir = bench_dir();
    let mut store = FilePerEvent {
        dir: dir.path().to_path_buf(),
        next: 0,
    };
    group.throughput(Throughput::Elements(n as u64));
    group.bench_with_input(BenchmarkId::new("file_per_event", n), &entries, |b, e| {
        b.iter(|| file_per_event_round(&mut store, e))
    });
    group.finish();
}

fn check_empty(store: &QueueStore, dir: &Path) {
    assert!(store.is_empty());
    let segments = fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count();
    assert!(
        segments <= 2,
        "acked segments are reclaimed ({segments} left)"
    );
}

criterion_group!(benches, durable_enqueue_ack);
criterion_main!(benches);
