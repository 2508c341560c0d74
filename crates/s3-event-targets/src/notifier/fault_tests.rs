//! The notifier's part of the fault matrix (issue 20, cases 12–16): shared
//! `queue_dir`s, failed acks, a changed number of senders, failed
//! dead-letter appends, and sync-mode answers for dropped or dead-lettered
//! entries. Faults are real where the machine allows (a read-only remount
//! of a tmpfs, as root) and injected through [`Faults`] otherwise.

use super::tests::{durable, fast_retry, id, keys, record, rules, wait_for, TestTarget};
use super::*;
use std::io;
use std::path::Path;
use std::sync::atomic::AtomicUsize;

/// Every segment file under `dir`, recursively.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(segment_files(&p));
        } else if p.extension().is_some_and(|x| x == "log") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The keys of the records in a stored dead letter (either the record
/// itself, or `{"error","record"}`).
fn dead_letter_key(bytes: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    let r = if v.get("record").is_some() {
        &v["record"]
    } else {
        &v
    };
    r["s3"]["object"]["key"].as_str().unwrap().to_owned()
}

/// Keys of every durable dead letter under `dir` (the notifier must be
/// shut down: the stores are locked while it runs).
fn stored_dead_letters(dir: &Path) -> Vec<String> {
    fn find(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "dead-letter") {
                    out.push(p.clone());
                }
                find(&p, out);
            }
        }
    }
    let mut dirs = Vec::new();
    find(dir, &mut dirs);
    let mut keys = Vec::new();
    for d in dirs {
        let store = QueueStore::open(&d, QueueStoreOptions::default()).unwrap();
        for (_, bytes) in store.peek(usize::MAX).unwrap() {
            keys.push(dead_letter_key(&bytes));
        }
    }
    keys
}

/// Case 12: two targets given one `queue_dir` each get their own store
/// under it and deliver only their own events, none lost.
#[tokio::test]
async fn shared_queue_dir_keeps_targets_apart() {
    let dir = tempfile::tempdir().unwrap();
    let build = |a: Arc<TestTarget>, b: Arc<TestTarget>| {
        Notifier::builder()
            .rules(rules(&[("a", "a/"), ("b", "b/")]))
            .target(a, durable(dir.path()))
            .target(b, durable(dir.path()))
            .build()
            .unwrap()
    };
    let (a, b) = (TestTarget::new("a"), TestTarget::new("b"));
    a.down.store(true, Ordering::SeqCst);
    b.down.store(true, Ordering::SeqCst);
    let n = build(a.clone(), b.clone());
    for i in 0..150 {
        for t in ["a", "b"] {
            assert_eq!(
                n.send(record(&format!("{t}/{i:03}"))).await.unwrap().queued,
                1
            );
        }
    }
    n.shutdown(Duration::from_millis(20)).await;
    assert!(a.seen().is_empty() && b.seen().is_empty());

    let (a, b) = (TestTarget::new("a"), TestTarget::new("b"));
    let n = build(a.clone(), b.clone());
    wait_for(|| a.seen().len() >= 150 && b.seen().len() >= 150).await;
    n.shutdown(Duration::from_secs(5)).await;
    for (t, name) in [(&a, "a"), (&b, "b")] {
        let want: Vec<String> = (0..150).map(|i| format!("{name}/{i:03}")).collect();
        assert_eq!(t.seen(), want, "target {name}");
    }
    for name in ["webhook-a", "webhook-b"] {
        assert!(dir.path().join(name).is_dir(), "{name} under queue_dir");
    }
}

/// Case 12: a second notifier on the same target directory is refused
/// with an error naming the holder.
#[tokio::test]
async fn second_opener_of_a_target_queue_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let n = Notifier::builder()
        .target(TestTarget::new("a"), durable(dir.path()))
        .build()
        .unwrap();
    let err = Notifier::builder()
        .target(TestTarget::new("a"), durable(dir.path()))
        .build()
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("in use by"), "{msg}");
    assert!(msg.contains(&std::process::id().to_string()), "{msg}");
    n.shutdown(Duration::from_secs(1)).await;
}

/// Appends `keys` as records to a queue store in `dir` (the layout of the
/// versions before per-target sub-directories).
fn write_legacy(dir: &Path, keys: &[String]) {
    let store = QueueStore::open(dir, QueueStoreOptions::default()).unwrap();
    for k in keys {
        store
            .append(&serde_json::to_vec(&record(k)).unwrap())
            .unwrap();
    }
    store.close().unwrap();
}

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i:03}")).collect()
}

/// Case 12, upgrade: the old layouts (segments in `queue_dir` itself with
/// one sender, `queue_dir/lane-<n>` with several) are delivered once by
/// the one target using that directory, then removed.
#[tokio::test]
async fn legacy_queue_dir_is_migrated_once() {
    let dir = tempfile::tempdir().unwrap();
    write_legacy(dir.path(), &numbered("root/", 0..20));
    write_legacy(&dir.path().join("lane-1"), &numbered("lane/", 0..10));
    let t = TestTarget::new("a");
    let n = Notifier::builder()
        .rules(rules(&[("a", "")]))
        .target(t.clone(), durable(dir.path()))
        .build()
        .unwrap();
    wait_for(|| t.seen().len() >= 30).await;
    wait_for(|| n.stats()[0].1.queued == 0).await;
    n.shutdown(Duration::from_secs(5)).await;
    let mut want = numbered("root/", 0..20);
    want.extend(numbered("lane/", 0..10));
    assert_eq!(t.seen(), want);
    assert!(!dir.path().join("lane-1").exists());
    assert!(!dir.path().join("acks").exists());
    let root_segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    assert!(root_segments.is_empty(), "{root_segments:?}");

    // A restart delivers nothing again.
    let t = TestTarget::new("a");
    let n = Notifier::builder()
        .rules(rules(&[("a", "")]))
        .target(t.clone(), durable(dir.path()))
        .build()
        .unwrap();
    n.shutdown(Duration::from_secs(5)).await;
    assert!(t.seen().is_empty(), "{:?}", t.seen());
}

/// Case 12, upgrade of a shared directory: which target an old entry was
/// queued for is not recorded, so each goes to the targets sharing the
/// directory whose rules match it.
#[tokio::test]
async fn legacy_queue_dir_shared_by_two_targets_is_routed_by_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = Vec::new();
    for i in 0..20 {
        old.push(format!("a/{i:03}"));
        old.push(format!("b/{i:03}"));
    }
    write_legacy(dir.path(), &old);
    let (a, b) = (TestTarget::new("a"), TestTarget::new("b"));
    let n = Notifier::builder()
        .rules(rules(&[("a", "a/"), ("b", "b/")]))
        .target(a.clone(), durable(dir.path()))
        .target(b.clone(), durable(dir.path()))
        .build()
        .unwrap();
    wait_for(|| a.seen().len() >= 20 && b.seen().len() >= 20).await;
    n.shutdown(Duration::from_secs(5)).await;
    assert_eq!(a.seen(), numbered("a/", 0..20));
    assert_eq!(b.seen(), numbered("b/", 0..20));
}

/// Case 13: an ack that fails is retried with backoff, counted and
/// surfaced; the batch is not sent again.
#[tokio::test]
async fn failed_ack_is_retried_without_resending() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let t = TestTarget::new("a");
    t.down.store(true, Ordering::SeqCst);
    let n = Notifier::builder()
        .rules(rules(&[("a", "")]))
        .target(
            t.clone(),
            TargetOptions {
                faults: Some(faults.clone()),
                ..durable(dir.path())
            },
        )
        .build()
        .unwrap();
    for i in 0..3 {
        n.send(record(&format!("k{i}"))).await.unwrap();
    }
    // The next five writes are the acks of the first batch: they fail.
    faults.fail_writes(5, 0, io::ErrorKind::Other);
    t.down.store(false, Ordering::SeqCst);
    wait_for(|| n.stats()[0].1.queued == 0).await;
    assert_eq!(t.seen(), ["k0", "k1", "k2"], "each event sent once");
    let s = n.stats()[0].1.clone();
    assert_eq!(s.sent, 3);
    assert_eq!(s.store_errors, 5, "each failed ack counted");
    assert_eq!(s.store_error, None, "cleared once an ack succeeded");
    n.shutdown(Duration::from_secs(5)).await;
}

/// Case 15: a dead letter whose append fails is not acknowledged away: it
/// is appended again until it is stored, and only then leaves the queue.
#[tokio::test]
async fn failed_dead_letter_append_keeps_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let t = TestTarget::new("a");
    t.down.store(true, Ordering::SeqCst);
    let n = Notifier::builder()
        .rules(rules(&[("a", "")]))
        .target(
            t.clone(),
            TargetOptions {
                faults: Some(faults.clone()),
                ..durable(dir.path())
            },
        )
        .build()
        .unwrap();
    n.send(record("poison")).await.unwrap();
    // The next write is the dead letter's append.
    faults.fail_writes(1, 0, io::ErrorKind::StorageFull);
    t.down.store(false, Ordering::SeqCst);
    wait_for(|| n.stats()[0].1.dead_lettered == 1 && n.stats()[0].1.queued == 0).await;
    let s = n.stats()[0].1.clone();
    assert_eq!((s.store_errors, s.dead_letter_queued), (1, 1));
    n.shutdown(Duration::from_secs(5)).await;
    assert_eq!(stored_dead_letters(dir.path()), ["poison"]);
    let read = read_dead_letters(dir.path(), &id("a"), 10).unwrap();
    assert_eq!(keys(&[read[0].record.clone()]), ["poison"]);
    assert!(read[0].error.contains("poison"), "{}", read[0].error);
}

/// Case 15: the durable dead-letter store is bounded: beyond its limit
/// the oldest dead letters are discarded, counted and exported.
#[tokio::test]
async fn dead_letter_store_is_bounded_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestTarget::new("a");
    let n = Notifier::builder()
        .rules(rules(&[("a", "")]))
        .target(
            t.clone(),
            TargetOptions {
                dead_letter_queue_limit: 3,
                ..durable(dir.path())
            },
        )
        .mode(DeliveryMode::Sync)
        .build()
        .unwrap();
    for i in 0..5 {
        assert_eq!(
            n.send(record(&format!("poison{i}")))
                .await
                .unwrap()
                .dead_lettered,
            1
        );
    }
    wait_for(|| n.stats()[0].1.queued == 0).await;
    let s = n.stats()[0].1.clone();
    assert_eq!(
        (
            s.dead_lettered,
            s.dead_letter_queued,
            s.dead_letters_discarded
        ),
        (5, 3, 2)
    );
    let stored = n.stored_dead_letters(&id("a"), 10).unwrap();
    let stored: Vec<EventRecord> = stored.into_iter().map(|d| d.record).collect();
    assert_eq!(keys(&stored), ["poison2", "poison3", "poison4"]);
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || n.export_metrics());
    let names: Vec<(String, f64)> = snap
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(k, _, _, v)| {
            let v = match v {
                metrics_util::debugging::DebugValue::Counter(c) => c as f64,
                metrics_util::debugging::DebugValue::Gauge(g) => g.into_inner(),
                _ => return None,
            };
            Some((k.key().name().to_owned(), v))
        })
        .collect();
    for (name, want) in [
        ("s3_event_target_dead_letter_queued", 3.0),
        ("s3_event_target_dead_letters_discarded", 2.0),
        ("s3_event_target_store_ok", 1.0),
    ] {
        assert!(
            names.contains(&(name.to_owned(), want)),
            "{name}: {names:?}"
        );
    }
    n.shutdown(Duration::from_secs(5)).await;
}

/// Case 15: dead letters are listed and replayed through the API, and an
/// operator replays them with the notifier stopped by renaming
/// `dead-letter` to `replay`.
#[tokio::test]
async fn dead_letters_are_listed_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let build = |t: Arc<TestTarget>| {
        Notifier::builder()
            .rules(rules(&[("a", "")]))
            .target(t, durable(dir.path()))
            .mode(DeliveryMode::Sync)
            .build()
            .unwrap()
    };
    let t = TestTarget::new("a");
    let n = build(t.clone());
    for k in ["poison-1", "ok", "poison-2", "poison-3"] {
        n.send(record(k)).await.unwrap();
    }
    wait_for(|| n.stats()[0].1.dead_letter_queued == 3).await;
    // The target accepts them now: replay two through the API.
    t.reject_poison.store(false, Ordering::SeqCst);
    assert_eq!(n.replay_dead_letters(&id("a"), 2).await.unwrap(), 2);
    wait_for(|| t.seen().len() == 3).await;
    assert_eq!(t.seen(), ["ok", "poison-1", "poison-2"]);
    assert_eq!(n.stats()[0].1.dead_letter_queued, 1);
    let err = n.replay_dead_letters(&id("zzz"), 1).await.unwrap_err();
    assert!(matches!(err, Error::UnknownTarget { .. }), "{err}");
    n.shutdown(Duration::from_secs(5)).await;

    // Stopped: list from disk, then replay by renaming the directory.
    let left = read_dead_letters(dir.path(), &id("a"), 10).unwrap();
    assert_eq!(keys(&[left[0].record.clone()]), ["poison-3"]);
    let tdir = target_dir(dir.path(), &id("a"));
    std::fs::rename(tdir.join(DEAD_LETTER_DIR), tdir.join(REPLAY_DIR)).unwrap();
    let t = TestTarget::new("a");
    t.reject_poison.store(false, Ordering::SeqCst);
    let n = build(t.clone());
    wait_for(|| t.seen().len() == 1).await;
    assert_eq!(t.seen(), ["poison-3"]);
    assert!(!tdir.join(REPLAY_DIR).exists());
    n.shutdown(Duration::from_secs(5)).await;
}

/// Case 16: a sync-mode sender whose entry is found corrupt (and dropped)
/// is answered with an error. Entries are read from disk only when they
/// were not handed to the worker in memory: here the hand-over is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_entry_answers_its_sync_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestTarget::new("a");
    t.down.store(true, Ordering::SeqCst);
    let n = Arc::new(
        Notifier::builder()
            .rules(rules(&[("a", "")]))
            .target(t.clone(), durable(dir.path()))
            .mode(DeliveryMode::Sync)
            .build()
            .unwrap(),
    );
    let send = |key: String| {
        let n = n.clone();
        tokio::spawn(async move { n.send(record(&key)).await })
    };
    // The worker holds "first" (the target is down) while the hand-over
    // fills, so it reads "corrupt-me" from disk once the target is back.
    let first = send("first".into());
    wait_for(|| n.stats()[0].1.failed > 0).await;
    let fillers: Vec<_> = (0..HANDOFF_MAX).map(|i| send(format!("f{i}"))).collect();
    wait_for(|| n.stats()[0].1.queued == 1 + HANDOFF_MAX as u64).await;
    let second = send("corrupt-me".into());
    wait_for(|| n.stats()[0].1.queued == 2 + HANDOFF_MAX as u64).await;
    let needle = b"corrupt-me";
    let mut flipped = false;
    for path in segment_files(dir.path()) {
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            bytes[at] ^= 0x20;
            std::fs::write(&path, &bytes).unwrap();
            flipped = true;
        }
    }
    assert!(flipped, "the entry is on disk");
    t.down.store(false, Ordering::SeqCst);
    let out = first.await.unwrap().unwrap();
    assert_eq!(out.delivered, 1);
    for f in fillers {
        assert_eq!(f.await.unwrap().unwrap().delivered, 1);
    }
    let second = tokio::time::timeout(Duration::from_secs(20), second)
        .await
        .expect("the sender of the dropped entry is answered")
        .unwrap();
    let err = second.unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
    let seen = t.seen();
    assert_eq!(seen.len(), 1 + HANDOFF_MAX);
    assert!(!seen.iter().any(|k| k.starts_with("corrupt")));
}

/// Case 16: an entry that was dead-lettered is never reported as sent,
/// also when the worker finishes it before its sender registered (a busy
/// lane reads an entry as soon as it is written, before its fsync).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettered_is_never_reported_as_sent() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestTarget::new("a");
    let n = Arc::new(
        Notifier::builder()
            .rules(rules(&[("a", "")]))
            .target(t.clone(), durable(dir.path()))
            .mode(DeliveryMode::Sync)
            .build()
            .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..8)
        .map(|w| {
            let (n, stop) = (n.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    n.send(record(&format!("ok/{w}/{i}"))).await.unwrap();
                    i += 1;
                }
            })
        })
        .collect();
    let mut wrong = Vec::new();
    for i in 0..40 {
        let out = n.send(record(&format!("poison/{i}"))).await.unwrap();
        if (out.delivered, out.dead_lettered) != (0, 1) {
            wrong.push((i, out));
        }
    }
    stop.store(true, Ordering::SeqCst);
    for b in busy {
        b.await.unwrap();
    }
    assert!(wrong.is_empty(), "reported wrongly: {wrong:?}");
    assert_eq!(n.stats()[0].1.dead_lettered, 40);
}

/// Case 14: events queued under one number of senders are delivered, in
/// order per key, after the number changes (1 → 4 → 2).
#[tokio::test]
async fn changing_senders_drains_old_lanes() {
    let dir = tempfile::tempdir().unwrap();
    let versioned = |k: usize, v: usize| {
        EventRecord::from_slice(
            format!(r#"{{"eventName":"s3:ObjectCreated:Put","s3":{{"bucket":{{"name":"b"}},"object":{{"key":"k{k}","sequencer":"{v}"}}}}}}"#)
                .as_bytes(),
        )
        .unwrap()
    };
    let seen = Arc::new(AtomicUsize::new(0));
    let mut t = TestTarget::new("a");
    for (senders, versions, up) in [(1, 0..4, false), (4, 4..8, false), (2, 8..10, true)] {
        t = TestTarget::new("a");
        t.down.store(!up, Ordering::SeqCst);
        let n = Notifier::builder()
            .rules(rules(&[("a", "")]))
            .target(
                t.clone(),
                TargetOptions {
                    senders,
                    ..durable(dir.path())
                },
            )
            .build()
            .unwrap();
        for v in versions {
            for k in 0..8 {
                assert_eq!(n.send(versioned(k, v)).await.unwrap().queued, 1);
            }
        }
        if up {
            wait_for(|| t.seen().len() >= 80).await;
        }
        n.shutdown(Duration::from_millis(20)).await;
        seen.fetch_add(t.seen().len(), Ordering::SeqCst);
    }
    let got = lock(&t.seen).clone();
    assert_eq!(got.len(), 80, "{:?}", keys(&got));
    for k in 0..8 {
        let order: Vec<u64> = got
            .iter()
            .filter(|r| r.key().unwrap() == format!("k{k}"))
            .map(|r| {
                serde_json::to_value(r).unwrap()["s3"]["object"]["sequencer"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(order, (0..10).collect::<Vec<_>>(), "order of k{k}");
    }
    let _ = fast_retry();
}

/// A tmpfs mounted for one test, unmounted (lazily) when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (with the reason printed) when not root or mounting fails.
    fn mount(size: &str) -> Option<Tmpfs> {
        if !is_root() {
            eprintln!("skipped: needs root to mount a tmpfs");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: mount -t tmpfs failed");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Writes a file in `dir` until the file system is full; returns it.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    for chunk in [64 << 10, 4096, 1] {
        let buf = vec![0u8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
    path
}

/// Case 13 for real: the queue's file system is full when delivered
/// events are acknowledged (the ack log needs a new page); the ack fails,
/// is retried with backoff, and nothing is sent again. (A read-only remount is refused while the
/// queue's files are open for writing, so a full tmpfs stands in for it.)
#[tokio::test]
async fn full_disk_ack_does_not_resend() {
    let Some(fs) = Tmpfs::mount("4m") else { return };
    let t = TestTarget::new("a");
    t.down.store(true, Ordering::SeqCst);
    let n = Notifier::builder()
        .rules(rules(&[("a", "")]))
        .target(
            t.clone(),
            TargetOptions {
                // Backoff long enough that a tight loop would show.
                retry: RetryPolicy {
                    initial: Duration::from_millis(20),
                    max: Duration::from_millis(50),
                    ..RetryPolicy::default()
                },
                ..durable(&fs.path().join("q"))
            },
        )
        .build()
        .unwrap();
    for i in 0..3 {
        n.send(record(&format!("k{i}"))).await.unwrap();
    }
    let filler = fill(fs.path());
    t.down.store(false, Ordering::SeqCst);
    // Three failed acks, backed off; nothing is sent again meanwhile.
    wait_for(|| n.stats()[0].1.store_errors >= 3 && t.seen().len() >= 3).await;
    assert_eq!(
        t.seen(),
        ["k0", "k1", "k2"],
        "sent once, not again while acks fail"
    );
    assert_eq!(n.stats()[0].1.queued, 3, "not acknowledged");
    let error = n.stats()[0]
        .1
        .store_error
        .clone()
        .expect("the failure is shown");
    assert!(
        error.contains("acknowledge") && error.contains("space"),
        "{error}"
    );
    std::fs::remove_file(filler).unwrap();
    wait_for(|| n.stats()[0].1.queued == 0).await;
    assert_eq!(t.seen(), ["k0", "k1", "k2"]);
    assert_eq!(n.stats()[0].1.store_error, None);
    n.shutdown(Duration::from_secs(5)).await;
}

/// A record for two durable targets is queued for both at once (their
/// fsyncs overlap); when one append fails, the sender gets that error and
/// the other target still has the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_for_two_durable_targets_reaches_both() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let (a, b) = (TestTarget::new("a"), TestTarget::new("b"));
    let n = Notifier::builder()
        .rules(rules(&[("a", ""), ("b", "")]))
        .target(a.clone(), durable(dir.path()))
        .target(
            b.clone(),
            TargetOptions {
                faults: Some(faults.clone()),
                ..durable(dir.path())
            },
        )
        .build()
        .unwrap();
    for i in 0..20 {
        assert_eq!(n.send(record(&format!("k{i:02}"))).await.unwrap().queued, 2);
    }
    wait_for(|| a.seen().len() == 20 && b.seen().len() == 20).await;
    let want: Vec<String> = (0..20).map(|i| format!("k{i:02}")).collect();
    assert_eq!((a.seen(), b.seen()), (want.clone(), want));
    // Acknowledged: the next write to b's queue is the append.
    wait_for(|| n.stats()[1].1.queued == 0).await;
    faults.fail_writes(1, 0, io::ErrorKind::StorageFull);
    let err = n.send(record("k20")).await.unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    wait_for(|| a.seen().len() == 21).await;
    assert_eq!(b.seen().len(), 20);
    let s = n.stats();
    assert_eq!((s[0].1.store_errors, s[1].1.store_errors), (0, 1));
    assert!(s[1].1.store_error.as_deref().unwrap().contains("append"));
    n.shutdown(Duration::from_secs(1)).await;
}

/// Case 14, a move interrupted by a crash: `lane-0-of-1` was being moved
/// into two lanes, its first `k` entries are there and the marker says so.
/// The next start resumes after `k` (each event arrives once, in order),
/// with the same number of senders as the interrupted start or another.
#[tokio::test]
async fn interrupted_lane_move_resumes() {
    for senders in [2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let tdir = target_dir(dir.path(), &id("a"));
        let all = numbered("k", 0..40);
        write_legacy(&super::layout::lane_dir(&tdir, 0, 1), &all);
        let k = 25;
        for lane in 0..2 {
            let mine: Vec<String> = all[..k]
                .iter()
                .filter(|key| super::lane_of(key, 2) == lane)
                .cloned()
                .collect();
            write_legacy(&super::layout::lane_dir(&tdir, lane, 2), &mine);
        }
        std::fs::write(
            tdir.join("MOVING"),
            format!("source lane-0-of-1\nlanes 2\nupto {k}\n"),
        )
        .unwrap();
        let t = TestTarget::new("a");
        let n = Notifier::builder()
            .rules(rules(&[("a", "")]))
            .target(
                t.clone(),
                TargetOptions {
                    senders,
                    ..durable(dir.path())
                },
            )
            .build()
            .unwrap();
        wait_for(|| t.seen().len() >= 40).await;
        wait_for(|| n.stats()[0].1.queued == 0).await;
        n.shutdown(Duration::from_secs(5)).await;
        let mut seen = t.seen();
        assert_eq!(seen.len(), 40, "each once with {senders} senders: {seen:?}");
        seen.sort();
        assert_eq!(seen, all);
        assert!(!tdir.join("MOVING").exists());
        assert!(!super::layout::lane_dir(&tdir, 0, 1).exists());
    }
}
