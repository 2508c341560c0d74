//! Unit tests of the notifier; helpers shared with the fault tests.

use super::*;
use async_trait::async_trait;
use s3_event_core::{EventName, NotificationRule, TargetError};
use std::sync::atomic::AtomicUsize;

pub(super) fn id(n: &str) -> TargetId {
    format!("arn:minio:sqs::{n}:webhook").parse().unwrap()
}

pub(super) fn record(key: &str) -> EventRecord {
    EventRecord::from_slice(
        format!(r#"{{"eventName":"s3:ObjectCreated:Put","s3":{{"bucket":{{"name":"b"}},"object":{{"key":"{key}"}}}}}}"#)
            .as_bytes(),
    )
    .unwrap()
}

pub(super) fn keys(v: &[EventRecord]) -> Vec<String> {
    v.iter().map(|r| r.key().unwrap().to_owned()).collect()
}

pub(super) fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(5),
        ..RetryPolicy::default()
    }
}

/// Collects events; fails transiently `fail` times first; rejects keys
/// containing "poison" permanently; down while `down` is set.
#[derive(Debug)]
pub(super) struct TestTarget {
    pub(super) id: TargetId,
    pub(super) seen: Mutex<Vec<EventRecord>>,
    pub(super) fail: AtomicUsize,
    pub(super) down: AtomicBool,
    pub(super) batch: usize,
    pub(super) delay: Duration,
    /// Whether keys containing "poison" are rejected (default true).
    pub(super) reject_poison: AtomicBool,
}

impl TestTarget {
    pub(super) fn new(n: &str) -> Arc<Self> {
        Arc::new(TestTarget {
            id: id(n),
            seen: Mutex::new(Vec::new()),
            fail: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            batch: 1,
            delay: Duration::ZERO,
            reject_poison: AtomicBool::new(true),
        })
    }
    pub(super) fn seen(&self) -> Vec<String> {
        keys(&lock(&self.seen))
    }
}

#[async_trait]
impl Target for TestTarget {
    fn id(&self) -> &TargetId {
        &self.id
    }
    async fn send_batch(&self, events: &[EventRecord]) -> Result<(), TargetError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(TargetError::transient(&self.id, "down"));
        }
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
            .is_ok()
        {
            return Err(TargetError::transient(&self.id, "flaky"));
        }
        if self.reject_poison.load(Ordering::SeqCst)
            && events.iter().any(|e| e.key().unwrap().contains("poison"))
        {
            return Err(TargetError::permanent(&self.id, "poison"));
        }
        lock(&self.seen).extend_from_slice(events);
        Ok(())
    }
    async fn is_active(&self) -> Result<bool, TargetError> {
        Ok(!self.down.load(Ordering::SeqCst))
    }
    fn max_batch(&self) -> usize {
        self.batch
    }
}

pub(super) fn rules(pairs: &[(&str, &str)]) -> RuleSet {
    RuleSet::new(pairs.iter().enumerate().map(|(i, (n, prefix))| {
        NotificationRule::new(format!("r{i}"), EventName::ObjectCreatedPut.mask(), id(n))
            .with_prefix(*prefix)
    }))
    .unwrap()
}

pub(super) fn opts() -> TargetOptions {
    TargetOptions {
        retry: fast_retry(),
        ..TargetOptions::default()
    }
}

pub(super) async fn wait_for(mut f: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition not reached");
}

#[tokio::test]
async fn routes_only_matching_events_in_order() {
    let a = TestTarget::new("a");
    let b = TestTarget::new("b");
    let n = Notifier::builder()
        .rules(rules(&[("a", "x/"), ("b", "y/"), ("b", "x/1")]))
        .target(a.clone(), opts())
        .target(b.clone(), opts())
        .build()
        .unwrap();
    for k in ["x/1", "y/1", "z/1", "x/2", "y/2", "x/10"] {
        n.send(record(k)).await.unwrap();
    }
    n.shutdown(Duration::from_secs(5)).await;
    assert_eq!(a.seen(), ["x/1", "x/2", "x/10"]);
    assert_eq!(b.seen(), ["x/1", "y/1", "y/2", "x/10"]);
}

/// `send`'s future is moved whole into tasks, boxes and its callers'
/// futures: it must hold no record of its own. It held four (9.5 KB, with
/// records of 1.3 KB then), and copying them was a quarter of the relay's
/// CPU time.
#[tokio::test]
async fn the_send_future_holds_no_record() {
    let a = TestTarget::new("a");
    let n = Notifier::builder()
        .rules(rules(&[("a", "")]))
        .target(a.clone(), opts())
        .build()
        .unwrap();
    let record_size = std::mem::size_of::<EventRecord>();
    let send = n.send(record("x/1"));
    let size = std::mem::size_of_val(&send);
    assert!(size < record_size, "send's future is {size} bytes");
    send.await.unwrap();
    n.shutdown(Duration::from_secs(5)).await;
    assert_eq!(a.seen(), ["x/1"]);
}

#[tokio::test]
async fn invalid_event_name_is_an_error_and_counted() {
    let a = TestTarget::new("a");
    let n = Notifier::builder()
        .rules(rules(&[("a", "")]))
        .target(a, opts())
        .build()
        .unwrap();
    let bad = EventRecord::from_slice(br#"{"eventName":"s3:Nope"}"#).unwrap();
    let err = n.send(bad).await.unwrap_err();
    assert!(err.to_string().contains("s3:Nope"), "{err}");
    assert_eq!(n.invalid_records(), 1);
}

#[tokio::test]
async fn transient_failures_are_retried_in_order() {
    let t = TestTarget::new("a");
    t.fail.store(3, Ordering::SeqCst);
    let n = Notifier::builder()
        .rules(rules(&[("a", "")]))
        .target(t.clone(), opts())
        .build()
        .unwrap();
    for i in 0..20 {
        n.send(record(&format!("k{i:02}"))).await.unwrap();
    }
    wait_for(|| t.seen().len() == 20).await;
    let want: Vec<String> = (0..20).map(|i| format!("k{i:02}")).collect();
    assert_eq!(t.seen(), want);
    let stats = &n.stats()[0].1;
    assert_eq!(stats.sent, 20);
    assert_eq!(stats.failed, 3);
    assert!(stats.online);
    n.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn poison_is_dead_lettered_and_the_rest_flow() {
    let t = Arc::new(TestTarget {
        batch: 10,
        ..Arc::try_unwrap(TestTarget::new("a")).unwrap()
    });
    let n = Notifier::builder()
        .rules(rules(&[("a", "")]))
        .target(t.clone(), opts())
        .build()
        .unwrap();
    for k in ["a", "b", "poison", "c", "d"] {
        n.send(record(k)).await.unwrap();
    }
    n.shutdown(Duration::from_secs(5)).await;
    assert_eq!(t.seen(), ["a", "b", "c", "d"]);
}

#[tokio::test]
async fn poison_dead_letters_are_listed() {
    let t = TestTarget::new("a");
    let n = Notifier::builder()
        .rules(rules(&[("a", "")]))
        .target(t.clone(), opts())
        .mode(DeliveryMode::Sync)
        .build()
        .unwrap();
    let out = n.send(record("poison1")).await.unwrap();
    assert_eq!(out.dead_lettered, 1);
    let out = n.send(record("ok")).await.unwrap();
    assert_eq!(out.delivered, 1);
    let dead = n.dead_letters(&id("a"));
    assert_eq!(
        keys(&dead.iter().map(|d| d.record.clone()).collect::<Vec<_>>()),
        ["poison1"]
    );
    assert_eq!(n.stats()[0].1.dead_lettered, 1);
}

#[tokio::test]
async fn queue_full_with_drop_counts_drops() {
    let t = TestTarget::new("a");
    t.down.store(true, Ordering::SeqCst);
    let n = Notifier::builder()
        .rules(rules(&[("a", "")]))
        .target(
            t.clone(),
            TargetOptions {
                queue_limit: 3,
                ..opts()
            },
        )
        .build()
        .unwrap();
    let mut dropped = 0;
    for i in 0..10 {
        dropped += n.send(record(&format!("k{i}"))).await.unwrap().dropped;
    }
    // The worker holds at most one event in flight, the queue 3.
    let s = n.stats()[0].1.clone();
    assert!(dropped >= 6, "dropped {dropped}");
    assert_eq!(s.dropped, dropped as u64);
    assert_eq!(s.total, 10);
    wait_for(|| !n.stats()[0].1.online).await;
    t.down.store(false, Ordering::SeqCst);
    wait_for(|| n.stats()[0].1.online).await;
    n.shutdown(Duration::from_secs(5)).await;
    assert_eq!(t.seen().len(), 10 - dropped);
}

#[tokio::test]
async fn sync_mode_returns_after_delivery() {
    let t = Arc::new(TestTarget {
        delay: Duration::from_millis(30),
        ..Arc::try_unwrap(TestTarget::new("a")).unwrap()
    });
    let n = Notifier::builder()
        .rules(rules(&[("a", "")]))
        .target(t.clone(), opts())
        .mode(DeliveryMode::Sync)
        .build()
        .unwrap();
    let out = n.send(record("k")).await.unwrap();
    assert_eq!(out.delivered, 1);
    assert_eq!(t.seen(), ["k"]);
}

/// A target that records (key, sequencer) and the most sends running at once.
#[derive(Debug)]
struct ParallelTarget {
    id: TargetId,
    seen: Mutex<Vec<(String, u64)>>,
    running: AtomicUsize,
    most: AtomicUsize,
    /// How long each send takes.
    pause: Duration,
}

#[async_trait]
impl Target for ParallelTarget {
    fn id(&self) -> &TargetId {
        &self.id
    }
    async fn send_batch(&self, events: &[EventRecord]) -> Result<(), TargetError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.pause).await;
        let mut seen = lock(&self.seen);
        for e in events {
            let v = serde_json::to_value(e).unwrap();
            let seq = v["s3"]["object"]["sequencer"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            seen.push((e.key().unwrap().to_owned(), seq));
        }
        drop(seen);
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
    async fn is_active(&self) -> Result<bool, TargetError> {
        Ok(true)
    }
    fn max_batch(&self) -> usize {
        2
    }
}

/// Sends `seqs` rounds of one record for each of `keys` objects `k0..`,
/// the round number as the record's sequencer.
async fn send_keyed(n: &Notifier, keys: usize, seqs: u64) {
    for seq in 0..seqs {
        for k in 0..keys {
            let r = EventRecord::from_slice(
                format!(r#"{{"eventName":"s3:ObjectCreated:Put","s3":{{"bucket":{{"name":"b"}},"object":{{"key":"k{k}","sequencer":"{seq}"}}}}}}"#)
                    .as_bytes(),
            )
            .unwrap();
            assert_eq!(n.send(r).await.unwrap().queued, 1);
        }
    }
}

/// Every object of [`send_keyed`] arrived with its sequencers in order.
fn assert_per_key_order(seen: &[(String, u64)], keys: usize, seqs: u64) {
    for k in 0..keys {
        let got: Vec<u64> = seen
            .iter()
            .filter(|(key, _)| *key == format!("k{k}"))
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(got, (0..seqs).collect::<Vec<_>>(), "order of k{k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_senders_run_in_parallel_and_keep_per_key_order() {
    for queue_dir in [None, Some(tempfile::tempdir().unwrap())] {
        let t = Arc::new(ParallelTarget {
            id: id("1"),
            seen: Mutex::new(Vec::new()),
            running: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            pause: Duration::from_millis(5),
        });
        let n = Notifier::builder()
            .rules(rules(&[("1", "")]))
            .target(
                t.clone(),
                TargetOptions {
                    senders: 4,
                    queue_dir: queue_dir.as_ref().map(|d| d.path().to_path_buf()),
                    ..opts()
                },
            )
            .build()
            .unwrap();
        send_keyed(&n, 8, 10).await;
        wait_for(|| lock(&t.seen).len() == 80).await;
        assert_per_key_order(&lock(&t.seen), 8, 10);
        let most = t.most.load(Ordering::SeqCst);
        assert!(
            (2..=4).contains(&most),
            "{most} sends at once with 4 senders"
        );
        n.shutdown(Duration::from_secs(5)).await;
    }
}

/// `senders` up to AIStor's 50000: in memory every sender is a lane of its
/// own; with `queue_dir` there are at most 64 durable lanes. Either way the
/// events of one object stay in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_over_64_send_concurrently_and_durable_lanes_are_capped() {
    for queue_dir in [None, Some(tempfile::tempdir().unwrap())] {
        let t = Arc::new(ParallelTarget {
            id: id("1"),
            seen: Mutex::new(Vec::new()),
            running: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            pause: Duration::from_millis(200),
        });
        let n = Notifier::builder()
            .rules(rules(&[("1", "")]))
            .target(
                t.clone(),
                TargetOptions {
                    senders: 500,
                    queue_dir: queue_dir.as_ref().map(|d| d.path().to_path_buf()),
                    ..opts()
                },
            )
            .build()
            .unwrap();
        let keys = 400;
        send_keyed(&n, keys, 2).await;
        wait_for(|| lock(&t.seen).len() == 2 * keys).await;
        assert_per_key_order(&lock(&t.seen), keys, 2);
        let most = t.most.load(Ordering::SeqCst);
        match &queue_dir {
            None => assert!(most > 64, "{most} sends at once with 500 senders"),
            Some(d) => {
                assert!(most <= 64, "{most} sends at once with 64 durable lanes");
                let lanes = std::fs::read_dir(target_dir(d.path(), &id("1")))
                    .unwrap()
                    .filter(|e| {
                        let name = e.as_ref().unwrap().file_name();
                        name.to_string_lossy().starts_with("lane-")
                    })
                    .count();
                assert_eq!(lanes, 64);
            }
        }
        n.shutdown(Duration::from_secs(5)).await;
    }
}

/// A metric's name, labels and value.
type Metric = (String, Vec<(String, String)>, f64);

fn metric(snapshot: &[Metric], name: &str) -> Option<f64> {
    snapshot
        .iter()
        .find(|(n, labels, _)| {
            n == name
                && labels
                    .iter()
                    .any(|(k, v)| k == "target" && v.ends_with(":1:webhook"))
        })
        .map(|(_, _, v)| *v)
}

fn snapshot(r: &metrics_util::debugging::Snapshotter) -> Vec<Metric> {
    use metrics_util::debugging::DebugValue;
    r.snapshot()
        .into_vec()
        .into_iter()
        .map(|(k, _, _, v)| {
            let key = k.key();
            let labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            let v = match v {
                DebugValue::Counter(c) => c as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(_) => f64::NAN,
            };
            (key.name().to_owned(), labels, v)
        })
        .collect()
}

#[tokio::test]
async fn export_metrics_publishes_the_counters() {
    let t = TestTarget::new("1");
    let n = Notifier::builder()
        .rules(rules(&[("1", "")]))
        .target(t.clone(), opts())
        .mode(DeliveryMode::Sync)
        .build()
        .unwrap();
    for k in ["a", "b", "c"] {
        n.send(record(k)).await.unwrap();
    }
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || n.export_metrics());
    let s = snapshot(&snap);
    assert_eq!(metric(&s, "s3_event_target_total"), Some(3.0), "{s:?}");
    assert_eq!(metric(&s, "s3_event_target_sent"), Some(3.0));
    assert_eq!(metric(&s, "s3_event_target_queued"), Some(0.0));
    assert_eq!(metric(&s, "s3_event_target_online"), Some(1.0));
    n.shutdown(Duration::from_secs(1)).await;
}

/// The only test in this binary that installs a global recorder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exported_periodically() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    recorder
        .install()
        .expect("no other global recorder in this test binary");
    let t = TestTarget::new("1");
    let n = Notifier::builder()
        .rules(rules(&[("1", "")]))
        .target(t.clone(), opts())
        .mode(DeliveryMode::Sync)
        .export_metrics_every(Duration::from_millis(20))
        .build()
        .unwrap();
    for k in ["a", "b"] {
        n.send(record(k)).await.unwrap();
    }
    // No call to export_metrics: the background task publishes.
    let mut sent = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        sent = metric(&snapshot(&snap), "s3_event_target_sent");
        if sent == Some(2.0) {
            break;
        }
    }
    assert_eq!(sent, Some(2.0));
    n.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn zero_dead_letter_queue_limit_fails_at_build() {
    let e = Notifier::builder()
        .target(
            TestTarget::new("1"),
            TargetOptions {
                dead_letter_queue_limit: 0,
                ..opts()
            },
        )
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("dead_letter_queue_limit"), "{e}");
}

#[tokio::test]
async fn senders_out_of_range_fail_at_build() {
    for senders in [0, 50_001] {
        let e = Notifier::builder()
            .target(TestTarget::new("1"), TargetOptions { senders, ..opts() })
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("senders"), "{e}");
    }
}

#[tokio::test]
async fn queue_dir_replays_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let o = TargetOptions {
        queue_dir: Some(dir.path().to_path_buf()),
        ..opts()
    };
    let down = TestTarget::new("a");
    down.down.store(true, Ordering::SeqCst);
    let n = Notifier::builder()
        .rules(rules(&[("a", "")]))
        .target(down.clone(), o.clone())
        .build()
        .unwrap();
    for i in 0..10 {
        n.send(record(&format!("k{i}"))).await.unwrap();
    }
    assert_eq!(n.stats()[0].1.queued, 10);
    n.shutdown(Duration::from_millis(50)).await;
    // The queue directory is locked until the notifier is dropped.
    drop(n);
    assert!(down.seen().is_empty());

    let up = TestTarget::new("a");
    let n = Notifier::builder()
        .rules(rules(&[("a", "")]))
        .target(up.clone(), o.clone())
        .build()
        .unwrap();
    wait_for(|| up.seen().len() == 10).await;
    let want: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    assert_eq!(up.seen(), want);
    wait_for(|| n.stats()[0].1.queued == 0).await;
    n.shutdown(Duration::from_secs(1)).await;
}

/// [`opts`] with a queue directory.
pub(super) fn durable(dir: &Path) -> TargetOptions {
    TargetOptions {
        queue_dir: Some(dir.to_path_buf()),
        ..opts()
    }
}

#[tokio::test]
async fn queue_dir_hands_records_to_the_worker_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let t = Arc::new(TestTarget {
        batch: 16,
        ..Arc::into_inner(TestTarget::new("a")).unwrap()
    });
    let n = Arc::new(
        Notifier::builder()
            .rules(rules(&[("a", "")]))
            .target(t.clone(), durable(dir.path()))
            .build()
            .unwrap(),
    );
    let tasks: Vec<_> = (0..20)
        .map(|c| {
            let n = Arc::clone(&n);
            tokio::spawn(async move {
                for i in 0..25 {
                    n.send(record(&format!("c{c}/{i}"))).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    wait_for(|| n.stats()[0].1.queued == 0).await;
    let mut seen = t.seen();
    seen.sort();
    let mut want: Vec<String> = (0..20)
        .flat_map(|c| (0..25).map(move |i| format!("c{c}/{i}")))
        .collect();
    want.sort();
    assert_eq!(seen, want);
    // Each was written to the queue and delivered from memory, none read
    // back and decoded again.
    assert_eq!(n.stats()[0].1.read_back, 0);
}

/// Sends one record per key from its own task, all at once; the outcomes
/// in key order.
async fn send_at_once(n: &Arc<Notifier>, keys: &[String]) -> Vec<Result<SendOutcome>> {
    let tasks: Vec<_> = keys
        .iter()
        .map(|k| {
            let (n, r) = (Arc::clone(n), record(k));
            tokio::spawn(async move { n.send(r).await })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

/// Keys `k0`, `k1`, ... `k{n-1}`, sorted.
fn sorted_keys(n: usize) -> Vec<String> {
    let mut keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn concurrent_senders_share_one_write() {
    // 64 senders at once on one lane: the first to join leads, lets the
    // others join, and appends them all with one write (not one each).
    let dir = tempfile::tempdir().unwrap();
    let t = TestTarget::new("a");
    let n = Arc::new(
        Notifier::builder()
            .rules(rules(&[("a", "")]))
            .target(t.clone(), durable(dir.path()))
            .build()
            .unwrap(),
    );
    let store = |n: &Notifier| n.pipelines[0].lanes[0].store.clone().unwrap();
    let before = store(&n).stats().writes;
    let keys = sorted_keys(64);
    for outcome in send_at_once(&n, &keys).await {
        assert_eq!(outcome.unwrap().queued, 1);
    }
    let writes = store(&n).stats().writes - before;
    assert!(writes <= 4, "64 concurrent sends took {writes} writes");
    wait_for(|| n.stats()[0].1.queued == 0).await;
    let mut seen = t.seen();
    seen.sort();
    assert_eq!(seen, keys);
    assert_eq!(n.stats()[0].1.read_back, 0);
}

#[tokio::test]
async fn a_failed_shared_write_is_retried_by_each_sender_alone() {
    // The group's write fails (injected); each sender then appends its own
    // entry and gets its own answer: here they all succeed, in a new
    // segment, and nothing is lost or delivered twice.
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let t = TestTarget::new("a");
    let n = Arc::new(
        Notifier::builder()
            .rules(rules(&[("a", "")]))
            .target(
                t.clone(),
                TargetOptions {
                    faults: Some(faults.clone()),
                    ..durable(dir.path())
                },
            )
            .build()
            .unwrap(),
    );
    faults.fail_writes(1, 0, std::io::ErrorKind::Other);
    let keys = sorted_keys(16);
    for outcome in send_at_once(&n, &keys).await {
        assert_eq!(outcome.unwrap().queued, 1);
    }
    let s = n.stats()[0].1.clone();
    assert_eq!(s.store_errors, 1, "the group's failed write counted once");
    wait_for(|| n.stats()[0].1.queued == 0).await;
    let mut seen = t.seen();
    seen.sort();
    assert_eq!(seen, keys);
}

#[tokio::test]
async fn queue_dir_reads_back_what_it_was_not_handed_in_order() {
    // Queued by an earlier run: read back, before what this run sends.
    let dir = tempfile::tempdir().unwrap();
    let down = TestTarget::new("a");
    down.down.store(true, Ordering::SeqCst);
    let n = Notifier::builder()
        .rules(rules(&[("a", "")]))
        .target(down.clone(), durable(dir.path()))
        .build()
        .unwrap();
    for i in 0..10 {
        n.send(record(&format!("old{i}"))).await.unwrap();
    }
    n.shutdown(Duration::from_millis(50)).await;
    drop(n);

    // More than the hand-over holds while the target is down: the rest
    // is read back, in order.
    let t = TestTarget::new("a");
    t.down.store(true, Ordering::SeqCst);
    let n = Notifier::builder()
        .rules(rules(&[("a", "")]))
        .target(t.clone(), durable(dir.path()))
        .build()
        .unwrap();
    let new = HANDOFF_MAX + 100;
    for i in 0..new {
        n.send(record(&format!("new{i}"))).await.unwrap();
    }
    t.down.store(false, Ordering::SeqCst);
    wait_for(|| n.stats()[0].1.queued == 0).await;
    let want: Vec<String> = (0..10)
        .map(|i| format!("old{i}"))
        .chain((0..new).map(|i| format!("new{i}")))
        .collect();
    assert_eq!(t.seen(), want);
    let read_back = n.stats()[0].1.read_back;
    assert!(
        (110..=10 + new as u64).contains(&read_back),
        "read back {read_back}"
    );
    n.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_over_is_bounded_per_target_across_its_lanes() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestTarget::new("a");
    t.down.store(true, Ordering::SeqCst);
    let n = Arc::new(
        Notifier::builder()
            .rules(rules(&[("a", "")]))
            .target(
                t.clone(),
                TargetOptions {
                    senders: 4,
                    ..durable(dir.path())
                },
            )
            .build()
            .unwrap(),
    );
    let total = HANDOFF_MAX + 400;
    let tasks: Vec<_> = (0..8)
        .map(|c| {
            let n = Arc::clone(&n);
            tokio::spawn(async move {
                for i in (c..total).step_by(8) {
                    n.send(record(&format!("k{i}"))).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    t.down.store(false, Ordering::SeqCst);
    wait_for(|| n.stats()[0].1.queued == 0).await;
    assert_eq!(t.seen().len(), total);
    // The four lanes share HANDOFF_MAX; each worker held one record out of
    // its share while the target was down.
    let read_back = n.stats()[0].1.read_back;
    assert!(read_back >= 400 - 4, "read back {read_back}");
}

#[tokio::test]
async fn queue_dir_sync_mode() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestTarget::new("a");
    let n = Notifier::builder()
        .rules(rules(&[("a", "")]))
        .target(
            t.clone(),
            TargetOptions {
                queue_dir: Some(dir.path().to_path_buf()),
                ..opts()
            },
        )
        .mode(DeliveryMode::Sync)
        .build()
        .unwrap();
    for i in 0..5 {
        let out = n.send(record(&format!("k{i}"))).await.unwrap();
        assert_eq!(out.delivered, 1);
    }
    assert_eq!(t.seen().len(), 5);
}

#[tokio::test]
async fn unknown_target_is_a_build_error() {
    let err = Notifier::builder()
        .rules(rules(&[("a", ""), ("zzz", "")]))
        .target(TestTarget::new("a"), opts())
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::UnknownTarget { .. }));
    assert!(
        err.to_string().contains("arn:minio:sqs::zzz:webhook"),
        "{err}"
    );
}

#[tokio::test]
async fn send_after_shutdown_started_is_refused() {
    let n = Notifier::builder().build().unwrap();
    n.accepting.store(false, Ordering::Release);
    assert!(matches!(n.send(record("k")).await, Err(Error::Shutdown)));
}

#[tokio::test]
async fn queue_full_with_wait_loses_nothing() {
    let t = Arc::new(TestTarget {
        delay: Duration::from_millis(2),
        ..Arc::try_unwrap(TestTarget::new("a")).unwrap()
    });
    let n = Notifier::builder()
        .rules(rules(&[("a", "")]))
        .target(
            t.clone(),
            TargetOptions {
                queue_limit: 1,
                full_policy: FullPolicy::Wait,
                ..opts()
            },
        )
        .build()
        .unwrap();
    for i in 0..10 {
        assert_eq!(n.send(record(&format!("k{i}"))).await.unwrap().dropped, 0);
    }
    n.export_metrics(); // No recorder installed: a no-op, must not panic.
    n.shutdown(Duration::from_secs(5)).await;
    let want: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    assert_eq!(t.seen(), want);
}

#[test]
fn backoff_grows_and_is_capped() {
    let p = RetryPolicy {
        jitter: 0.0,
        ..RetryPolicy::default()
    };
    assert_eq!(p.delay(1), Duration::from_millis(100));
    assert_eq!(p.delay(2), Duration::from_millis(200));
    assert_eq!(p.delay(100), Duration::from_secs(30));
}

#[tokio::test]
async fn shutdown_through_a_shared_reference_drains_and_refuses() {
    let t = TestTarget::new("a");
    let n = Arc::new(
        Notifier::builder()
            .rules(rules(&[("a", "")]))
            .target(t.clone(), opts())
            .build()
            .unwrap(),
    );
    let other = Arc::clone(&n);
    for i in 0..3 {
        n.send(record(&format!("k{i}"))).await.unwrap();
    }
    // Two callers at once: both return once the queues are drained.
    tokio::join!(
        n.shutdown(Duration::from_secs(5)),
        other.shutdown(Duration::from_secs(5))
    );
    assert_eq!(t.seen(), ["k0", "k1", "k2"]);
    assert!(matches!(
        other.send(record("k")).await,
        Err(Error::Shutdown)
    ));
}
