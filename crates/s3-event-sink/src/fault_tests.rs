//! The sink's fault matrix: one test per case of the durability review
//! (spool writes that fail part-way, failed fsyncs, a full disk, a second
//! process on the spool, reused instance ids, permanent store errors, ...).
//! Faults are real where the machine allows (a size-limited tmpfs for
//! ENOSPC, a second process for the lock) and injected through the log's
//! [`Faults`] layer for EIO and failed fsyncs. Tests that need root (to
//! mount a tmpfs) say so and return when not run as root.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use s3_event_core::log::{Faults, Op};
use serde_json::{json, Value};

use crate::conformance_tests::objects;
use crate::{decode, Encoding, Error, Sink, SinkBuilder, SpoolFsync, SpoolOptions};

/// What [`Watch`] does with puts.
const PASS: u8 = 0;
const DENY: u8 = 1;
/// Accept every put and keep nothing (only the sink's own memory counts).
const DISCARD: u8 = 2;

/// An in-memory store that records every object ever stored under a key
/// (so a test can tell whether one was overwritten with other content),
/// can refuse puts as a misconfigured bucket does, and can check each put
/// against the spool before it lands.
#[derive(Debug, Default)]
struct Watch {
    inner: InMemory,
    mode: AtomicU8,
    /// Every (key, bytes) stored, in order.
    stored: Mutex<Vec<(String, Bytes)>>,
    /// Keys whose object was replaced by different bytes.
    overwritten: Mutex<Vec<String>>,
    /// The spool directory: a put whose key is in no close frame there yet
    /// is recorded in `early`.
    spool: Mutex<Option<PathBuf>>,
    early: Mutex<Vec<String>>,
    /// When set, every stored put makes the next spool write fail.
    fail_after_put: Mutex<Option<Arc<Faults>>>,
}

impl std::fmt::Display for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watch")
    }
}

/// Whether some spool segment in `dir` holds the bytes of `key` (its close
/// frame).
fn spooled_key(dir: &FsPath, key: &str) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let p = e.unwrap().path();
        p.extension().is_some_and(|x| x == "spool")
            && std::fs::read(&p)
                .map(|b| b.windows(key.len()).any(|w| w == key.as_bytes()))
                .unwrap_or(false)
    })
}

#[async_trait]
impl ObjectStore for Watch {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        match self.mode.load(Ordering::SeqCst) {
            DENY => {
                return Err(object_store::Error::PermissionDenied {
                    path: location.to_string(),
                    source: "AccessDenied: the bucket policy refuses this principal".into(),
                })
            }
            DISCARD => {
                return Ok(PutResult {
                    e_tag: None,
                    version: None,
                    extensions: Default::default(),
                })
            }
            _ => {}
        }
        if let Some(dir) = self.spool.lock().unwrap().clone() {
            if !spooled_key(&dir, location.as_ref()) {
                self.early.lock().unwrap().push(location.to_string());
            }
        }
        let bytes: Bytes = payload.clone().into();
        let before = self.inner.get(location).await.ok();
        let before = match before {
            Some(g) => Some(g.bytes().await?),
            None => None,
        };
        let r = self.inner.put_opts(location, payload, opts).await?;
        if before.is_some_and(|b| b != bytes) {
            self.overwritten.lock().unwrap().push(location.to_string());
        }
        if let Some(f) = &*self.fail_after_put.lock().unwrap() {
            f.fail_writes(1, 3, ErrorKind::Other);
        }
        self.stored
            .lock()
            .unwrap()
            .push((location.to_string(), bytes));
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn event(n: u64) -> Value {
    json!({ "n": n, "pad": "x".repeat(40) })
}

/// Every `n` in the store with how often it occurs; panics on a bad object.
async fn census(store: &dyn ObjectStore) -> BTreeMap<u64, u32> {
    let mut seen = BTreeMap::new();
    for (k, b) in objects(store, "").await {
        let d = decode(&k, &b).unwrap_or_else(|e| panic!("object {k}: {e}"));
        assert!(d.bad.is_empty(), "{k}: {:?}", d.bad);
        for r in d.records {
            *seen.entry(r["n"].as_u64().unwrap()).or_insert(0) += 1;
        }
    }
    seen
}

/// Asserts that every acknowledged event is stored exactly once, no event
/// twice, and no object was ever overwritten with other bytes.
/// [`assert_stored_once`], and `verify` finds the bucket complete.
async fn assert_exactly_once(store: &Watch, acked: &[u64]) {
    assert_stored_once(store, acked).await;
    // The manifests agree: delivery numbers without a hole or an overlap
    // (refused pushes and crashes take none), every object as uploaded.
    let report = crate::verify(store, &crate::VerifyOptions::default())
        .await
        .unwrap();
    assert!(report.is_complete(), "verify: {:#?}", report.problems);
}

/// Every acknowledged event stored once, no object overwritten.
async fn assert_stored_once(store: &Watch, acked: &[u64]) {
    let seen = census(store).await;
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|n| !seen.contains_key(n))
        .collect();
    assert!(lost.is_empty(), "acknowledged events lost: {lost:?}");
    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "events stored twice: {twice:?}");
    let over = store.overwritten.lock().unwrap().clone();
    assert!(
        over.is_empty(),
        "objects overwritten with other content: {over:?}"
    );
}

fn builder(store: Arc<Watch>, spool: SpoolOptions) -> SinkBuilder {
    Sink::builder()
        .with_store(store)
        .with_instance_id("i")
        .with_flush_size(10)
        .with_flush_interval(Duration::from_millis(50))
        .with_spool(spool)
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A size-limited tmpfs mounted at a fresh directory, unmounted on drop;
/// `None` (with the reason printed) when mounting is not allowed here.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here (needs root); the full-disk case is not run"
            );
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &FsPath {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// Case 1 (real ENOSPC). The spool fills its disk: pushes are refused and
/// leave no partial frame; space comes back, pushes go on; then a crash and
/// a restart. Every acknowledged event is stored exactly once and no
/// uploaded object is overwritten (before the fix: 50 of 467 lost, and an
/// object overwritten with 17 events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_01_a_full_disk_loses_nothing_and_overwrites_nothing() {
    let Some(fs) = Tmpfs::mount("4m") else { return };
    let spool_dir = fs.path().join("spool");
    let store = Arc::new(Watch::default());
    let opts = SpoolOptions::new(&spool_dir).with_fsync(SpoolFsync::Always);
    let sink = builder(Arc::clone(&store), opts.clone())
        .with_flush_size(1000)
        .with_flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    // Most of the disk taken by something else.
    let filler = fs.path().join("filler");
    let free = 4 * 1024 * 1024 - 800 * 1024;
    std::fs::write(&filler, vec![0u8; free]).unwrap();
    let mut acked = Vec::new();
    let mut refused = 0;
    let mut refused_events = Vec::new();
    let mut n = 0;
    while refused < 20 && n < 100_000 {
        let batch: Vec<Value> = (n..n + 3).map(event).collect();
        match sink
            .push_batch_within(&batch, Duration::from_millis(10))
            .await
        {
            Ok(()) => acked.extend(n..n + 3),
            Err(Error::Spool { .. } | Error::Backpressure) => {
                refused += 1;
                refused_events.extend(n..n + 3);
            }
            Err(e) => panic!("{e}"),
        }
        n += 3;
    }
    assert!(
        refused > 0,
        "the disk never filled ({} events acked)",
        acked.len()
    );
    // Space comes back; pushes go on.
    std::fs::remove_file(&filler).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..50 {
        let batch: Vec<Value> = (n..n + 3).map(event).collect();
        sink.push_batch_within(&batch, Duration::from_secs(5))
            .await
            .unwrap();
        acked.extend(n..n + 3);
        n += 3;
    }
    sink.flush().await.unwrap();
    // More after the flush, then a crash.
    for _ in 0..20 {
        let batch: Vec<Value> = (n..n + 3).map(event).collect();
        sink.push_batch(&batch).await.unwrap();
        acked.extend(n..n + 3);
        n += 3;
    }
    sink.crash().await;
    let sink = builder(Arc::clone(&store), opts).build().unwrap();
    sink.shutdown().await.unwrap();
    assert_exactly_once(&store, &acked).await;
    // A refused push accepted none of its events: none may come back.
    let seen = census(&*store).await;
    let back: Vec<u64> = refused_events
        .iter()
        .copied()
        .filter(|n| seen.contains_key(n))
        .collect();
    assert!(back.is_empty(), "events of refused pushes stored: {back:?}");
    eprintln!(
        "case 1: {} acknowledged, {refused} pushes refused on a full 4 MiB tmpfs, all stored exactly once",
        acked.len()
    );
}

/// Case 1 (injected EIO after a short write): the half-written frame is cut
/// back, later pushes are readable after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_01_a_short_write_leaves_no_half_frame() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let store = Arc::new(Watch::default());
    let opts = SpoolOptions::new(dir.path())
        .with_fsync(SpoolFsync::Never)
        .with_faults(Arc::clone(&faults));
    let sink = builder(Arc::clone(&store), opts.clone())
        .with_flush_size(1000)
        .with_flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let mut acked = Vec::new();
    for n in 0..30u64 {
        if n == 10 {
            faults.fail_writes(1, 17, ErrorKind::Other);
            assert!(matches!(
                sink.push(&event(n)).await,
                Err(Error::Spool { .. })
            ));
            continue;
        }
        sink.push(&event(n)).await.unwrap();
        acked.push(n);
    }
    sink.crash().await;
    let sink = builder(Arc::clone(&store), opts).build().unwrap();
    assert_eq!(sink.stats().events_recovered, 29);
    sink.shutdown().await.unwrap();
    assert_exactly_once(&store, &acked).await;
    assert!(
        !census(&*store).await.contains_key(&10),
        "the refused event was stored"
    );
}

/// Case 1 (a write that fails after whole frames reached the file, as a
/// full disk does mid-batch): the write is cut back, so no event of a
/// refused push comes back on restart, whether more pushes followed it or
/// a crash did. (With 17 bytes kept, as above, a stale tail holds no whole
/// frame and cannot show that the cut-back is missing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_01_a_refused_push_leaves_no_whole_frame_behind() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let store = Arc::new(Watch::default());
    let opts = SpoolOptions::new(dir.path())
        .with_fsync(SpoolFsync::Never)
        .with_faults(Arc::clone(&faults));
    let sink = builder(Arc::clone(&store), opts.clone())
        .with_flush_size(1000)
        .with_flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let mut acked = Vec::new();
    for n in 0..10u64 {
        sink.push(&event(n)).await.unwrap();
        acked.push(n);
    }
    // The length of one write of three events (frames of one size).
    faults.record();
    sink.push_batch(&(100..103).map(event).collect::<Vec<_>>())
        .await
        .unwrap();
    acked.extend(100..103);
    let ops = faults.ops();
    let [Op::Write { len, .. }] = ops.as_slice() else {
        panic!("{ops:#?}")
    };
    // Two whole frames and part of the third reach the file.
    let keep = len / 3 * 2 + 5;
    let refused = |from: u64| (from..from + 3).map(event).collect::<Vec<_>>();
    faults.fail_writes(1, keep, ErrorKind::Other);
    assert!(matches!(
        sink.push_batch(&refused(200)).await,
        Err(Error::Spool { .. })
    ));
    for n in 10..20u64 {
        sink.push(&event(n)).await.unwrap();
        acked.push(n);
    }
    // Once more, right before a crash.
    faults.fail_writes(1, keep, ErrorKind::Other);
    assert!(matches!(
        sink.push_batch(&refused(300)).await,
        Err(Error::Spool { .. })
    ));
    sink.crash().await;
    let sink = builder(Arc::clone(&store), opts).build().unwrap();
    let recovered = sink.stats().events_recovered;
    sink.shutdown().await.unwrap();
    assert_exactly_once(&store, &acked).await;
    let back: Vec<u64> = census(&*store)
        .await
        .into_keys()
        .filter(|n| *n >= 200)
        .collect();
    assert!(
        back.is_empty(),
        "events of refused pushes came back after a restart: {back:?}"
    );
    assert_eq!(recovered, acked.len() as u64);
}

/// Case 2: after failed writes (an event's, and an uploaded frame's) the
/// segments still empty out and are deleted: the spool does not stay full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_02_segments_are_deleted_after_failed_writes() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let store = Arc::new(Watch::default());
    let opts = SpoolOptions::new(dir.path())
        .with_fsync(SpoolFsync::Never)
        .with_segment_bytes(4096)
        .with_faults(Arc::clone(&faults));
    let sink = builder(Arc::clone(&store), opts).build().unwrap();
    let mut acked = Vec::new();
    let mut refused = 0;
    for n in 0..200u64 {
        if n % 37 == 5 {
            // The next write (this event's) fails part-way.
            faults.fail_writes(1, 9, ErrorKind::Other);
        } else if n % 50 == 20 {
            // Two of the writes after this event's fail: close frames,
            // uploaded frames or the next events', whichever come first.
            faults.fail_writes_after(1, 2, 3, ErrorKind::Other);
        }
        match sink.push(&event(n)).await {
            Ok(()) => acked.push(n),
            Err(Error::Spool { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused >= 6, "{refused} pushes refused");
    sink.flush().await.unwrap();
    // Deletion follows the last upload.
    wait_for("the spool to shrink", || {
        crate::spool::segment_files(dir.path()) <= 2
    })
    .await;
    assert!(sink.stats().spool_bytes < 8192, "{:?}", sink.stats());
    sink.shutdown().await.unwrap();
    assert_exactly_once(&store, &acked).await;
    assert!(faults.injected().0 >= 8, "{:?}", faults.injected());
}

/// Case 2, the uploaded frame alone: every batch's uploaded frame write
/// fails once (nothing else is written while they upload); it is written
/// again, so the segments still empty out and are deleted. (The test above
/// reaches an uploaded frame only when its injected failures happen to land
/// on one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_02_a_failed_uploaded_frame_is_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let store = Arc::new(Watch::default());
    let opts = SpoolOptions::new(dir.path())
        .with_fsync(SpoolFsync::Never)
        .with_segment_bytes(4096)
        .with_faults(Arc::clone(&faults));
    let sink = builder(Arc::clone(&store), opts)
        .with_flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    // The store refuses puts while events are pushed, so that no upload
    // (and no uploaded frame) comes between the pushes' writes.
    store.mode.store(DENY, Ordering::SeqCst);
    let acked: Vec<u64> = (0..200).collect();
    for &n in &acked {
        sink.push(&event(n)).await.unwrap();
    }
    assert!(crate::spool::segment_files(dir.path()) > 3);
    *store.fail_after_put.lock().unwrap() = Some(Arc::clone(&faults));
    store.mode.store(PASS, Ordering::SeqCst);
    sink.flush().await.unwrap();
    assert!(faults.injected().0 >= 1, "{:?}", faults.injected());
    wait_for("the spool to shrink", || {
        crate::spool::segment_files(dir.path()) <= 2
    })
    .await;
    *store.fail_after_put.lock().unwrap() = None;
    sink.shutdown().await.unwrap();
    assert_exactly_once(&store, &acked).await;
}

/// Case 3: a close frame whose write fails holds its batch back: no object
/// is stored before its close frame is in the spool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_03_no_upload_before_its_close_frame_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let store = Arc::new(Watch::default());
    *store.spool.lock().unwrap() = Some(dir.path().to_owned());
    let opts = SpoolOptions::new(dir.path())
        .with_fsync(SpoolFsync::Always)
        .with_faults(Arc::clone(&faults));
    // Batches close by count only, so the faults land where intended.
    let sink = builder(Arc::clone(&store), opts.clone())
        .with_flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let mut acked = Vec::new();
    for round in 0..5u64 {
        // The 10th event closes the batch: its own write passes, the close
        // frame's (the next write) fails twice.
        for n in round * 10..round * 10 + 10 {
            if n % 10 == 9 {
                faults.fail_writes_after(1, 2, 5, ErrorKind::Other);
            }
            // The second failure hits the close frame's retry, or the next
            // push's events if that comes first (then refused).
            match sink.push(&event(n)).await {
                Ok(()) => acked.push(n),
                Err(Error::Spool { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
    // The last round's failures may still be pending (no push came after
    // its close frame): then the flush's own write of that frame takes
    // them, is refused, and a later flush writes it.
    // The close frame may first be written by a flush (the background
    // task had not got to it), which then takes both failures.
    for attempt in 0.. {
        match sink.flush().await {
            Ok(()) => break,
            Err(e @ Error::Spool { .. }) if attempt < 2 => eprintln!("flush: {e}"),
            Err(e) => panic!("flush {attempt}: {e}"),
        }
    }
    assert!(faults.injected().0 >= 5, "{:?}", faults.injected());
    let early = store.early.lock().unwrap().clone();
    assert!(
        early.is_empty(),
        "uploaded before their close frames: {early:?}"
    );
    assert_eq!(store.stored.lock().unwrap().len(), 5);
    sink.crash().await;
    let sink = builder(Arc::clone(&store), opts).build().unwrap();
    sink.shutdown().await.unwrap();
    assert_exactly_once(&store, &acked).await;
}

/// Case 4: a failed fsync is not retried into a success: the upload waits
/// for a round that covers a close frame written again after the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_04_a_close_frame_is_written_again_after_a_failed_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let store = Arc::new(Watch::default());
    let opts = SpoolOptions::new(dir.path())
        .with_fsync(SpoolFsync::Always)
        .with_faults(Arc::clone(&faults));
    // The batch closes by count only, at the tenth event.
    let sink = builder(Arc::clone(&store), opts)
        .with_flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    for n in 0..9u64 {
        sink.push(&event(n)).await.unwrap();
    }
    faults.record();
    faults.fail_fsyncs(1);
    // The tenth closes the batch; the round covering it and its close frame
    // fails, so it is not acknowledged (it may still be stored, once).
    let e = sink.push(&event(9)).await.unwrap_err();
    assert!(e.to_string().contains("fsync"), "{e}");
    sink.flush().await.unwrap();
    // The first fsync (the failed one) covered the close frame, the write
    // just before it; the same frame is written again to a new segment and
    // fsynced there before the upload.
    let ops = faults.ops();
    let failed = ops.iter().position(|o| matches!(o, Op::Sync(_))).unwrap();
    let Some(Op::Write {
        path: first,
        len: close_len,
        ..
    }) = ops.get(failed - 1).cloned()
    else {
        panic!("{ops:#?}")
    };
    let again = ops[failed..]
        .iter()
        .position(
            |o| matches!(o, Op::Write { path, len, .. } if *len == close_len && *path != first),
        )
        .map(|i| i + failed)
        .unwrap_or_else(|| panic!("the close frame was not written again: {ops:#?}"));
    let Op::Write { path: second, .. } = &ops[again] else {
        unreachable!()
    };
    assert!(
        ops[again..]
            .iter()
            .any(|o| matches!(o, Op::Sync(p) if p == second)),
        "{ops:#?}"
    );
    assert_eq!(store.stored.lock().unwrap().len(), 1);
    sink.shutdown().await.unwrap();
    assert_exactly_once(&store, &(0..9).collect::<Vec<_>>()).await;
}

/// Case 5: each segment deletion is followed by a directory fsync before
/// the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_05_segment_deletion_fsyncs_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    faults.record();
    let store = Arc::new(Watch::default());
    let opts = SpoolOptions::new(dir.path())
        .with_fsync(SpoolFsync::Interval(Duration::from_millis(5)))
        .with_segment_bytes(4096)
        .with_faults(Arc::clone(&faults));
    let sink = builder(Arc::clone(&store), opts).build().unwrap();
    for n in 0..300u64 {
        sink.push(&event(n)).await.unwrap();
    }
    sink.shutdown().await.unwrap();
    let ops = faults.ops();
    let removes = ops.iter().filter(|o| matches!(o, Op::Remove(_))).count();
    assert!(removes >= 3, "{removes} segments deleted");
    // A directory fsync follows every deletion before the next one (file
    // fsyncs of the log's own rounds may come in between).
    let mut unsynced = false;
    for op in &ops {
        match op {
            Op::Remove(p) => {
                assert!(!unsynced, "{} deleted before the directory was fsynced after the previous deletion: {ops:#?}", p.display());
                unsynced = true;
            }
            Op::SyncDir(_) => unsynced = false,
            _ => {}
        }
    }
    assert!(!unsynced, "no directory fsync after the last deletion");
}

/// Case 6: a second sink on the same spool directory is refused, from this
/// process and from another one, naming the holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_06_a_second_sink_on_one_spool_is_refused() {
    if std::env::var_os("S3E_FAULT_CHILD").is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Watch::default());
    let opts = SpoolOptions::new(dir.path()).with_fsync(SpoolFsync::Never);
    let sink = builder(Arc::clone(&store), opts.clone()).build().unwrap();
    let e = builder(Arc::clone(&store), opts.clone())
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("in use by") && e.contains(&std::process::id().to_string()),
        "{e}"
    );
    sink.push(&event(1)).await.unwrap();
    sink.shutdown().await.unwrap();
    assert_exactly_once(&store, &[1]).await;
}

/// Case 6, across processes: a sink in another process (a rolling deploy
/// on a shared volume) is refused, naming this process as the holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_06_a_second_process_on_one_spool_is_refused() {
    if std::env::var_os("S3E_FAULT_CHILD").is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Watch::default());
    let opts = SpoolOptions::new(dir.path()).with_fsync(SpoolFsync::Never);
    let sink = builder(Arc::clone(&store), opts).build().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "fault_tests::second_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("S3E_FAULT_CHILD", "1")
        .env("S3E_FAULT_SPOOL", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("refused:") && stdout.contains(&format!("process {}", std::process::id())),
        "{stdout}"
    );
    sink.push(&event(1)).await.unwrap();
    sink.shutdown().await.unwrap();
    assert_exactly_once(&store, &[1]).await;
}

/// The other process of case 6: tries to open the spool, prints the error.
#[tokio::test]
#[ignore = "run as a child process by case_06"]
async fn second_process() {
    let Some(dir) = std::env::var_os("S3E_FAULT_SPOOL") else {
        return;
    };
    let store = Arc::new(Watch::default());
    match builder(
        store,
        SpoolOptions::new(PathBuf::from(dir)).with_fsync(SpoolFsync::Never),
    )
    .build()
    {
        Ok(_) => println!("opened: the lock did not hold"),
        Err(e) => println!("refused: {e}"),
    }
}

/// Case 7: a fixed instance id reused without its spool (or with a wiped
/// one) starts its key counter again; the objects of the earlier run are
/// kept and the new batches go to alternate keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_07_a_reused_instance_id_never_overwrites() {
    let store = Arc::new(Watch::default());
    let run = |from: u64, spool: Option<PathBuf>| {
        let store = Arc::clone(&store);
        async move {
            let mut b = Sink::builder()
                .with_store(store)
                .with_instance_id("fixed")
                .with_flush_size(5);
            if let Some(s) = spool {
                b = b.with_spool(SpoolOptions::new(s).with_fsync(SpoolFsync::Never));
            }
            let sink = b.build().unwrap();
            for n in from..from + 10 {
                sink.push(&event(n)).await.unwrap();
            }
            sink.shutdown().await.unwrap();
            sink.stats()
        }
    };
    run(0, None).await;
    let second = run(100, None).await;
    assert_eq!(second.key_collisions, 2, "{second:?}");
    // A wiped spool is the same as none.
    let spool = tempfile::tempdir().unwrap();
    run(200, Some(spool.path().to_owned())).await;
    std::fs::remove_dir_all(spool.path()).unwrap();
    run(300, Some(spool.path().to_owned())).await;
    let acked: Vec<u64> = [0, 100, 200, 300]
        .iter()
        .flat_map(|s| *s..*s + 10)
        .collect();
    assert_stored_once(&store, &acked).await;
    // Nothing is lost, but the instance's numbers were given twice: verify
    // says so, object by object.
    let report = crate::verify(&*store, &crate::VerifyOptions::default())
        .await
        .unwrap();
    assert!(!report.problems.is_empty());
    for p in &report.problems {
        assert!(
            matches!(p, crate::Problem::Overlap { instance, .. } if instance == "fixed"),
            "{p:?}"
        );
    }
}

/// Case 8: with a local directory, every object and its directories are
/// fsynced by the time the upload counts as done (and the spool forgets it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_08_local_objects_are_fsynced() {
    let data = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let synced = Arc::new(Mutex::new(Vec::<PathBuf>::new()));
    let s2 = Arc::clone(&synced);
    let store = crate::LocalDir::new(data.path())
        .unwrap()
        .with_hook(Arc::new(move |p: &FsPath| {
            s2.lock().unwrap().push(p.to_owned())
        }));
    let sink = Sink::builder()
        .with_store(Arc::new(store))
        .with_instance_id("i")
        .with_flush_size(5)
        .with_spool(SpoolOptions::new(spool.path()).with_fsync(SpoolFsync::Always))
        .build()
        .unwrap();
    for n in 0..20 {
        sink.push(&event(n)).await.unwrap();
    }
    sink.shutdown().await.unwrap();
    let files = assert_fsynced(data.path(), &synced.lock().unwrap());
    let (objects, sidecars) = split_sidecars(files);
    assert_eq!(objects.len(), 4);
    assert_eq!(sidecars.len(), 4, "each object's attributes, fsynced too");
}

/// Objects and their attributes sidecars ([`crate::LocalDir`]).
fn split_sidecars(files: Vec<PathBuf>) -> (Vec<PathBuf>, Vec<PathBuf>) {
    files.into_iter().partition(|f| {
        !f.to_string_lossy()
            .ends_with(crate::local::ATTRIBUTES_SUFFIX)
    })
}

/// Case 8, objects above the part size: a multipart upload to a local
/// directory is fsynced too (file and directories) before it counts as done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_08_local_multipart_objects_are_fsynced() {
    let data = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let synced = Arc::new(Mutex::new(Vec::<PathBuf>::new()));
    let s2 = Arc::clone(&synced);
    let store = crate::LocalDir::new(data.path())
        .unwrap()
        .with_hook(Arc::new(move |p: &FsPath| {
            s2.lock().unwrap().push(p.to_owned())
        }));
    let sink = Sink::builder()
        .with_store(Arc::new(store))
        .with_instance_id("i")
        .with_compression(crate::Compression::None)
        .with_part_size(crate::MIN_PART_SIZE)
        .with_flush_size(2)
        .with_spool(SpoolOptions::new(spool.path()).with_fsync(SpoolFsync::Always))
        .build()
        .unwrap();
    let pad = "z".repeat(3 << 20);
    for n in 0..2u64 {
        sink.push(&json!({ "n": n, "pad": pad })).await.unwrap();
    }
    sink.shutdown().await.unwrap();
    let files = assert_fsynced(data.path(), &synced.lock().unwrap());
    let (files, sidecars) = split_sidecars(files);
    assert_eq!((files.len(), sidecars.len()), (1, 1));
    let len = std::fs::metadata(&files[0]).unwrap().len();
    assert!(
        len > crate::MIN_PART_SIZE as u64,
        "{len} bytes: not a multipart upload"
    );
}

/// Asserts that every file under `root`, and every directory from it up to
/// `root`, is in `synced`; returns the files.
fn assert_fsynced(root: &FsPath, synced: &[PathBuf]) -> Vec<PathBuf> {
    let root = std::fs::canonicalize(root).unwrap();
    let mut files = Vec::new();
    for e in walk(&root) {
        if e.is_file() {
            assert!(synced.contains(&e), "{} was not fsynced", e.display());
            let mut d = e.parent();
            while let Some(dir) = d {
                assert!(
                    synced.contains(&dir.to_owned()),
                    "{} was not fsynced",
                    dir.display()
                );
                if dir == root {
                    break;
                }
                d = dir.parent();
            }
            files.push(e);
        }
    }
    files
}

fn walk(dir: &FsPath) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// Case 9: events spooled as JSON array records (one with raw newlines)
/// are recovered after the sink was switched to NDJSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_09_recovery_after_switching_the_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Watch::default());
    let opts = SpoolOptions::new(dir.path()).with_fsync(SpoolFsync::Never);
    let sink = builder(Arc::clone(&store), opts.clone())
        .with_encoding(Encoding::JsonArray)
        .with_flush_size(1000)
        .with_flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let pretty =
        serde_json::value::RawValue::from_string(serde_json::to_string_pretty(&event(1)).unwrap())
            .unwrap();
    assert!(pretty.get().contains('\n'));
    let raw: &serde_json::value::RawValue = &pretty;
    sink.push(&raw).await.unwrap();
    sink.push(&event(2)).await.unwrap();
    sink.crash().await;
    let sink = builder(Arc::clone(&store), opts)
        .with_encoding(Encoding::Ndjson)
        .build()
        .expect("the spool is recovered with the new encoding");
    sink.shutdown().await.unwrap();
    assert_exactly_once(&store, &[1, 2]).await;
}

/// Case 10: recovery streams the spool: a start over a spool of tens of
/// megabytes of unuploaded events does not hold them all in memory. Measured
/// in a child process (its peak resident size), so other tests do not count.
#[test]
fn case_10_recovery_memory_is_bounded() {
    if std::env::var_os("S3E_FAULT_CHILD").is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // 96 MiB of events spooled while the store refuses every put.
    let spooled = rt.block_on(async {
        let store = Arc::new(Watch::default());
        store.mode.store(DENY, Ordering::SeqCst);
        let sink = builder(
            store,
            SpoolOptions::new(dir.path())
                .with_fsync(SpoolFsync::Never)
                .with_segment_bytes(4 << 20)
                .with_max_bytes(1 << 30),
        )
        // Uncompressed: gzip in a debug build would make this test slow,
        // and the memory measured is the records', not deflate's.
        .with_compression(crate::Compression::None)
        .with_flush_size(100)
        .build()
        .unwrap();
        let pad = "y".repeat(4000);
        let mut n = 0u64;
        while sink.stats().spool_bytes < 96 << 20 {
            // Pre-serialized, so filling the spool costs little.
            let raws: Vec<Box<serde_json::value::RawValue>> = (n..n + 100)
                .map(|i| {
                    serde_json::value::RawValue::from_string(format!(
                        r#"{{"n":{i},"pad":"{pad}"}}"#
                    ))
                    .unwrap()
                })
                .collect();
            let batch: Vec<&serde_json::value::RawValue> = raws.iter().map(|r| &**r).collect();
            sink.push_batch(&batch).await.unwrap();
            n += 100;
        }
        sink.crash().await;
        n
    });
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "fault_tests::recover_in_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("S3E_FAULT_CHILD", "1")
        .env("S3E_FAULT_SPOOL", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split("recovered ").nth(1))
        .unwrap_or_else(|| panic!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    let mut f = line.split_whitespace();
    let events: u64 = f.next().unwrap().parse().unwrap();
    let peak_kib: u64 = f.nth(1).unwrap().parse().unwrap();
    assert_eq!(events, spooled);
    eprintln!(
        "case 10: {events} events (96 MiB spooled) recovered with a peak resident size of {} MiB",
        peak_kib / 1024
    );
    assert!(
        peak_kib < 64 * 1024,
        "recovering 96 MiB of spool took {peak_kib} KiB of memory"
    );
}

/// The child of case 10: recovers the spool into memory-less storage and
/// prints the events and its peak resident size.
#[test]
#[ignore = "run as a child process by case_10"]
fn recover_in_child() {
    let Some(dir) = std::env::var_os("S3E_FAULT_SPOOL") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Arc::new(Watch::default());
        store.mode.store(DISCARD, Ordering::SeqCst);
        let sink = Sink::builder()
            .with_store(store.clone())
            .with_instance_id("i")
            .with_compression(crate::Compression::None)
            .with_flush_size(100)
            .with_spool(SpoolOptions::new(PathBuf::from(dir)).with_fsync(SpoolFsync::Never))
            .build()
            .unwrap();
        let recovered = sink.stats().events_recovered;
        sink.shutdown().await.unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .unwrap()
            .trim()
            .trim_end_matches(" kB")
            .to_owned();
        println!("recovered {recovered} peak {hwm}");
    });
}

/// Case 11: a store that refuses every put (access denied) makes the sink
/// report itself degraded, naming the problem, and count it, while keeping
/// the batches; once the store accepts again, they are stored and the sink
/// is healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_11_permanent_errors_degrade_the_sink_and_keep_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Watch::default());
    store.mode.store(DENY, Ordering::SeqCst);
    let sink = builder(
        Arc::clone(&store),
        SpoolOptions::new(dir.path()).with_fsync(SpoolFsync::Never),
    )
    .build()
    .unwrap();
    for n in 0..20 {
        sink.push(&event(n)).await.unwrap();
    }
    wait_for("the sink to report itself degraded", || {
        sink.degraded().is_some()
    })
    .await;
    let reason = sink.degraded().unwrap();
    assert!(reason.contains("access denied"), "{reason}");
    assert!(sink.stats().upload_permanent_errors > 0);
    store.mode.store(PASS, Ordering::SeqCst);
    sink.flush().await.unwrap();
    assert_eq!(sink.degraded(), None);
    sink.shutdown().await.unwrap();
    assert_exactly_once(&store, &(0..20).collect::<Vec<_>>()).await;
}

/// Case 11, bad input: an event whose object key would exceed S3's 1024
/// bytes is refused at push, naming the limit.
#[tokio::test]
async fn case_11_a_key_over_1024_bytes_is_refused_at_push() {
    let sink = Sink::builder()
        .with_store(Arc::new(InMemory::new()))
        .with_prefix(format!("{}/", "p".repeat(1010)))
        .build()
        .unwrap();
    let e = sink.push(&event(1)).await.unwrap_err();
    assert!(matches!(e, Error::KeyTooLong { max: 1024, .. }), "{e}");
    assert!(e.to_string().contains("1024"), "{e}");
    sink.shutdown().await.unwrap();
}

/// Case 11 against the real S3-compatible server: refused credentials are
/// reported as the reason the sink is degraded. (SeaweedFS creates a missing
/// bucket on the first put when the credentials may, so a missing bucket is
/// not an error there.)
#[cfg(feature = "integration")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_11_refused_credentials_on_s3_degrade_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = crate::conformance_tests::s3_config();
    c.secret_access_key = Some("not-the-secret".into());
    let store = crate::StoreConfig::S3(c).build().unwrap();
    let sink = Sink::builder()
        .with_store(store)
        .with_instance_id("i")
        .with_flush_size(5)
        .with_spool(SpoolOptions::new(dir.path()).with_fsync(SpoolFsync::Never))
        .build()
        .unwrap();
    for n in 0..5 {
        sink.push(&event(n)).await.unwrap();
    }
    wait_for("the sink to report itself degraded", || {
        sink.degraded().is_some()
    })
    .await;
    let reason = sink.degraded().unwrap();
    assert!(reason.contains("access denied"), "{reason}");
    assert!(!reason.contains("not-the-secret"), "{reason}");
    assert!(sink.stats().upload_permanent_errors > 0);
    assert_eq!(sink.stats().pending_uploads, 1, "the batch is kept");
}
