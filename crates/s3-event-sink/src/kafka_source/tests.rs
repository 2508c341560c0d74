//! The Kafka source against the real broker (`S3E_KAFKA_BROKERS`, default
//! `127.0.0.1:19092`, tansu started by `scripts/services.sh`): one
//! instance, a restart after uploads whose commits were lost, poison
//! messages, and three instances in one group killed with SIGKILL and
//! restarted at random.
//!
//! Every test makes its own topic and group. Records are wrapped, so each
//! carries its partition and offset, and each message's value holds its
//! partition and sequence number too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use super::{KafkaSource, KafkaSourceBuilder, KafkaStatsHandle};
use crate::{decode, Manifest};

pub(super) fn brokers() -> String {
    std::env::var("S3E_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

pub(super) fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("s3e-ks-{name}-{nanos:x}")
}

pub(super) async fn create_topic(topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client");
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let r = admin
        .create_topics(
            [&t],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create_topics");
    for x in r {
        x.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

pub(super) fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer")
}

/// One message to produce: partition, value (`None`: a tombstone),
/// timestamp.
pub(super) type Out = (i32, Option<Vec<u8>>, i64);

/// Sends `msgs` (up to a few thousand in flight); returns their offsets.
pub(super) async fn send_all(p: &FutureProducer, topic: &str, msgs: &[Out]) -> Vec<i64> {
    let mut out = Vec::with_capacity(msgs.len());
    for chunk in msgs.chunks(2000) {
        let mut pending = Vec::with_capacity(chunk.len());
        for (partition, payload, ts) in chunk {
            let key = format!("k{partition}");
            let mut rec = FutureRecord::<String, Vec<u8>>::to(topic)
                .partition(*partition)
                .key(&key)
                .timestamp(*ts);
            if let Some(v) = payload {
                rec = rec.payload(v);
            }
            let f = loop {
                match p.send_result(rec) {
                    Ok(f) => break f,
                    Err((e, r)) => {
                        // The local queue is full: let it drain.
                        assert!(
                            matches!(
                                e,
                                rdkafka::error::KafkaError::MessageProduction(
                                    rdkafka::types::RDKafkaErrorCode::QueueFull
                                )
                            ),
                            "producing to {topic}: {e}"
                        );
                        rec = r;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            };
            pending.push((*partition, f));
        }
        for (partition, f) in pending {
            let d = f
                .await
                .expect("delivery future")
                .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
            assert_eq!(d.partition, partition);
            out.push(d.offset);
        }
    }
    out
}

/// Test settings: short sessions so a dead member is noticed quickly.
pub(super) fn builder(topic: &str, group: &str, store: Arc<dyn ObjectStore>) -> KafkaSourceBuilder {
    KafkaSource::builder()
        .with_brokers(brokers())
        .with_group_id(group)
        .with_topics([topic])
        .with_store(store)
        .with_prefix("ev/")
        .with_wrap(true)
        .with_compression(crate::Compression::None)
        .with_statistics_interval(Duration::from_secs(1))
        .with_kafka_option("session.timeout.ms", "6000")
        .with_kafka_option("heartbeat.interval.ms", "500")
        .with_kafka_option("max.poll.interval.ms", "30000")
        .with_kafka_option("topic.metadata.refresh.interval.ms", "1000")
}

/// Waits until the source's positions reach `ends` (next offset per
/// partition), at most `limit`.
pub(super) async fn wait_for(
    stats: &KafkaStatsHandle,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
    limit: Duration,
) {
    let started = Instant::now();
    loop {
        let s = stats.snapshot();
        let done = ends.iter().all(|(p, end)| {
            s.partitions
                .get(&format!("{topic}+{p}"))
                .is_some_and(|x| x.position.is_some_and(|pos| pos >= *end))
        });
        if done {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "the source did not reach {ends:?} in {limit:?}: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A running source: its stats, what stops it, and its task.
type Running = (
    KafkaStatsHandle,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<crate::Result<super::KafkaSourceStats>>,
);

/// Starts `source` on the runtime; sending on the sender stops it.
fn spawn(source: KafkaSource) -> Running {
    let stats = source.stats_handle();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(source.run(async {
        rx.await.ok();
    }));
    (stats, tx, run)
}

/// Runs `source` until its positions reach `ends` (at most `limit`), then
/// shuts it down; its totals.
pub(super) async fn run_until(
    source: KafkaSource,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
    limit: Duration,
) -> super::KafkaSourceStats {
    let (stats, tx, run) = spawn(source);
    wait_for(&stats, topic, ends, limit).await;
    tx.send(()).unwrap();
    run.await.unwrap().unwrap()
}

/// One object as read back.
#[derive(Debug)]
pub(super) struct Obj {
    pub key: String,
    pub offsets: Vec<i64>,
}

/// Every object under `ev/`, checked: its manifest's instance and offsets
/// match its key and its wrapped records (partition and offset); failure
/// reports are returned apart.
pub(super) async fn read_back(store: &dyn ObjectStore, topic: &str) -> (Vec<Obj>, Vec<Obj>) {
    let objs = crate::testing::objects(store, "ev/").await;
    let (mut data, mut failed) = (Vec::new(), Vec::new());
    for (k, b) in objs {
        let m = Manifest::read(store, &Path::from(k.as_str()))
            .await
            .unwrap()
            .unwrap()
            .unwrap_or_else(|| panic!("{k} has no manifest"));
        let name = k.rsplit('/').next().unwrap();
        let mut parts = name.splitn(3, '+');
        let (t, p, rest) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        assert_eq!(t, topic, "{k}");
        let p: i32 = p.parse().unwrap();
        let first: i64 = rest[..20].parse().unwrap();
        assert_eq!(m.instance, format!("{topic}+{p}"), "{k}");
        let offsets: Vec<i64> = m
            .runs
            .iter()
            .flat_map(|&(a, b)| a as i64..=b as i64)
            .collect();
        assert_eq!(offsets.first(), Some(&first), "{k}: first offset");
        let d = decode(&k, &b).unwrap_or_else(|e| panic!("{k}: {e}"));
        assert!(d.bad.is_empty(), "{k}: {:?}", d.bad);
        let got: Vec<i64> = d
            .records
            .iter()
            .map(|r| {
                assert_eq!(r["partition"], p, "{k}: a record of another partition");
                r["offset"].as_i64().unwrap()
            })
            .collect();
        assert_eq!(got, offsets, "{k}: records vs manifest");
        if k.contains("/_failed/") {
            failed.push(Obj { key: k, offsets });
        } else {
            for r in &d.records {
                assert_eq!(r["value"]["p"], p, "{k}: value of another partition");
            }
            data.push(Obj { key: k, offsets });
        }
    }
    (data, failed)
}

/// The (partition, offset) of every message, and the end offset of each
/// partition.
pub(super) fn expect(msgs: &[Out], offsets: &[i64]) -> (Vec<(i32, i64)>, BTreeMap<i32, i64>) {
    let mut ends = BTreeMap::new();
    let all = msgs
        .iter()
        .zip(offsets)
        .map(|((p, _, _), o)| {
            let e = ends.entry(*p).or_insert(0);
            *e = (*e).max(o + 1);
            (*p, *o)
        })
        .collect();
    (all, ends)
}

/// Per (partition, offset), how many objects hold it.
pub(super) fn counts(objs: &[Obj]) -> BTreeMap<(i32, i64), u32> {
    let mut out = BTreeMap::new();
    for o in objs {
        let name = o.key.rsplit('/').next().unwrap();
        let p: i32 = name.split('+').nth(1).unwrap().parse().unwrap();
        for &off in &o.offsets {
            *out.entry((p, off)).or_insert(0) += 1;
        }
    }
    out
}

pub(super) fn assert_once(counts: &BTreeMap<(i32, i64), u32>, expected: &[(i32, i64)]) {
    let dups: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(dups.is_empty(), "stored more than once: {dups:?}");
    let missing: Vec<_> = expected
        .iter()
        .filter(|k| !counts.contains_key(k))
        .collect();
    assert!(
        missing.is_empty(),
        "never stored: {} of {}, first {:?}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(
        counts.len(),
        expected.len(),
        "stored offsets that were not produced"
    );
}

async fn verify_complete(store: &dyn ObjectStore) -> crate::VerifyReport {
    let report = crate::verify(
        store,
        &crate::VerifyOptions {
            prefix: "ev/".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(report.is_complete(), "verify: {:#?}", report.problems);
    report
}

/// An hour boundary in the past, so the messages' timestamps cross it.
fn base_ts() -> i64 {
    1_709_640_000_000 - 30 * 60 * 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_instance_stores_every_message_once() {
    let topic = unique("single");
    create_topic(&topic, 3).await;
    let prod = producer();
    let n = 3000;
    // One message a second: the batch crosses the hour at i = 1800.
    let msgs: Vec<Out> = (0..n)
        .map(|i| {
            let p = (i % 3) as i32;
            (
                p,
                Some(json!({"n": i, "p": p}).to_string().into_bytes()),
                base_ts() + i * 1000,
            )
        })
        .collect();
    let offsets = send_all(&prod, &topic, &msgs).await;
    let (expected, ends) = expect(&msgs, &offsets);
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let source = builder(&topic, &unique("g"), Arc::clone(&store))
        .with_flush_size(150)
        .with_flush_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    let stats = source.stats_handle();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let run = tokio::spawn(source.run(async {
        rx.await.ok();
    }));
    wait_for(&stats, &topic, &ends, Duration::from_secs(90)).await;
    let took = started.elapsed();
    tx.send(()).unwrap();
    let totals = run.await.unwrap().unwrap();
    let (data, failed) = read_back(&*store, &topic).await;
    assert!(failed.is_empty());
    assert_once(&counts(&data), &expected);
    // Objects in both hours.
    assert!(data.iter().any(|o| o.key.contains("/2024/03/05/11/")));
    assert!(data.iter().any(|o| o.key.contains("/2024/03/05/12/")));
    let report = verify_complete(&*store).await;
    assert_eq!(report.records, n as u64);
    assert_eq!(report.instances.len(), 3);
    // Everything committed: the last commit reached the ends.
    for (p, end) in &ends {
        let s = &totals.partitions[&format!("{topic}+{p}")];
        assert_eq!(s.committed, Some(*end), "{s:?}");
    }
    assert_eq!(totals.messages, n as u64);
    assert!(totals.commits > 0);
    eprintln!(
        "kafka single: {n} messages in {} objects, {took:?} (from start, group join included), commits {} (mean {:?}, max {:?})",
        data.len(),
        totals.commits,
        totals.commit_latency_mean,
        totals.commit_latency_max
    );
}

/// Restart after lost commits: the first instance uploads batches cut by
/// time mid-stream, commits nothing and dies with batches open; the second
/// (other batch sizes) must store the rest and nothing twice. With the
/// chain check off, the create-only collisions alone must do it.
async fn restart_after_lost_commits(chain_check: bool) {
    let topic = unique(if chain_check { "restart" } else { "collide" });
    create_topic(&topic, 2).await;
    let prod = producer();
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let group = unique("g");
    let a = builder(&topic, &group, Arc::clone(&store))
        .with_flush_size(10_000)
        .with_flush_interval(Duration::from_millis(300))
        .with_commits(false)
        .with_flush_on_shutdown(false)
        .build()
        .unwrap();
    let a_stats = a.stats_handle();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run_a = tokio::spawn(a.run(async {
        rx.await.ok();
    }));
    let mut msgs: Vec<Out> = Vec::new();
    let mut offsets = Vec::new();
    let mut i = 0i64;
    // A trickle while the first instance runs: its batches close on time.
    let started = Instant::now();
    while a_stats.snapshot().objects < 6 || a_stats.snapshot().records == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{:#?}",
            a_stats.snapshot()
        );
        let round: Vec<Out> = (i..i + 10)
            .map(|n| {
                (
                    (n % 2) as i32,
                    Some(json!({"n": n, "p": n % 2}).to_string().into_bytes()),
                    base_ts() + n * 1000,
                )
            })
            .collect();
        offsets.extend(send_all(&prod, &topic, &round).await);
        msgs.extend(round);
        i += 10;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    // Some more arrive before it dies: they are in open batches.
    let round: Vec<Out> = (i..i + 30)
        .map(|n| {
            (
                (n % 2) as i32,
                Some(json!({"n": n, "p": n % 2}).to_string().into_bytes()),
                base_ts() + n * 1000,
            )
        })
        .collect();
    offsets.extend(send_all(&prod, &topic, &round).await);
    msgs.extend(round);
    i += 30;
    tokio::time::sleep(Duration::from_millis(100)).await;
    tx.send(()).unwrap();
    let a_totals = run_a.await.unwrap().unwrap();
    assert_eq!(a_totals.commits, 0);
    let before = crate::testing::objects(&*store, "ev/").await;
    assert_eq!(before.len() as u64, a_totals.objects);
    // The rest, at once.
    let round: Vec<Out> = (i..i + 500)
        .map(|n| {
            (
                (n % 2) as i32,
                Some(json!({"n": n, "p": n % 2}).to_string().into_bytes()),
                base_ts() + n * 1000,
            )
        })
        .collect();
    offsets.extend(send_all(&prod, &topic, &round).await);
    msgs.extend(round);
    let (expected, ends) = expect(&msgs, &offsets);

    let b = builder(&topic, &group, Arc::clone(&store))
        .with_flush_size(97)
        .with_flush_interval(Duration::from_secs(30))
        .with_chain_check(chain_check)
        .build()
        .unwrap();
    let b_totals = run_until(b, &topic, &ends, Duration::from_secs(90)).await;
    // Nothing the first instance stored changed.
    let after: BTreeMap<String, Vec<u8>> = crate::testing::objects(&*store, "ev/")
        .await
        .into_iter()
        .collect();
    for (k, bytes) in &before {
        assert_eq!(after.get(k), Some(bytes), "{k} changed");
    }
    let (data, _) = read_back(&*store, &topic).await;
    assert_once(&counts(&data), &expected);
    verify_complete(&*store).await;
    if chain_check {
        assert_eq!(b_totals.adopted, a_totals.objects, "{b_totals:#?}");
        assert_eq!(b_totals.collisions, 0);
    } else {
        assert_eq!(b_totals.adopted, 0);
        assert!(b_totals.collisions > 0, "{b_totals:#?}");
    }
    eprintln!(
        "kafka restart (chain check {chain_check}): {} messages; first instance {} objects ({} records) uncommitted; second {} objects, {} adopted, {} collisions, {} messages skipped",
        expected.len(), a_totals.objects, a_totals.records, b_totals.objects, b_totals.adopted, b_totals.collisions, b_totals.skipped
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_lost_commits_stores_nothing_twice() {
    restart_after_lost_commits(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_chain_check_collisions_keep_it_exactly_once() {
    restart_after_lost_commits(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_neither_blocks_nor_disappears() {
    let topic = unique("poison");
    create_topic(&topic, 1).await;
    let prod = producer();
    let msgs: Vec<Out> = (0..40i64)
        .map(|n| {
            let v = match n % 10 {
                3 => Some(format!("not json {n}").into_bytes()),
                7 => None,
                8 => Some(vec![0xff, 0xfe, n as u8]),
                _ => Some(json!({"n": n, "p": 0}).to_string().into_bytes()),
            };
            (0, v, base_ts() + n * 1000)
        })
        .collect();
    let offsets = send_all(&prod, &topic, &msgs).await;
    let (expected, ends) = expect(&msgs, &offsets);
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let source = builder(&topic, &unique("g"), Arc::clone(&store))
        .with_flush_size(7)
        .build()
        .unwrap();
    let totals = run_until(source, &topic, &ends, Duration::from_secs(60)).await;
    assert_eq!(totals.poison, 12);
    let (data, failed) = read_back(&*store, &topic).await;
    let bad: Vec<(i32, i64)> = expected
        .iter()
        .zip(&msgs)
        .filter(|(_, m)| {
            m.1.as_ref()
                .is_none_or(|v| serde_json::from_slice::<serde_json::Value>(v).is_err())
        })
        .map(|(k, _)| *k)
        .collect();
    let good: Vec<(i32, i64)> = expected
        .iter()
        .filter(|k| !bad.contains(k))
        .copied()
        .collect();
    assert_once(&counts(&data), &good);
    assert_once(&counts(&failed), &bad);
    // Each report holds the reason and the value.
    for o in &failed {
        let b = store
            .get(&Path::from(o.key.as_str()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let r: serde_json::Value = serde_json::from_slice(&b).unwrap();
        let n = o.offsets[0] - offsets[0];
        match n % 10 {
            3 => {
                assert!(r["reason"].as_str().unwrap().contains("not JSON"), "{r}");
                assert_eq!(r["value"], format!("not json {n}"));
            }
            7 => assert!(r["reason"].as_str().unwrap().contains("tombstone"), "{r}"),
            _ => assert!(r["value"].is_null() && r["valueBase64"].is_string(), "{r}"),
        }
    }
    let report = verify_complete(&*store).await;
    assert_eq!(report.records, 40);
    assert_eq!(
        totals.partitions[&format!("{topic}+0")].committed,
        Some(ends[&0])
    );
}

/// A message's headers are in its wrapped record and, records unwrapped,
/// in its failure report (the loop reads them only for those two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_reach_wrapped_records_and_failure_reports() {
    use rdkafka::message::{Header, OwnedHeaders};
    let topic = unique("headers");
    create_topic(&topic, 1).await;
    let prod = producer();
    for (n, value) in [&b"{\"n\":0}"[..], b"not json", b"{\"n\":2}"]
        .into_iter()
        .enumerate()
    {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "trace",
                value: Some(format!("t{n}").as_str()),
            })
            .insert(Header {
                key: "empty",
                value: None::<&[u8]>,
            });
        let rec = FutureRecord::<(), [u8]>::to(&topic)
            .partition(0)
            .payload(value)
            .timestamp(base_ts())
            .headers(headers);
        prod.send(rec, Duration::from_secs(10)).await.unwrap();
    }
    let ends = BTreeMap::from([(0, 3)]);
    let expected = json!([{"key": "trace", "value": "t1"}, {"key": "empty", "value": null}]);
    for wrap in [false, true] {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let source = builder(&topic, &unique("g"), Arc::clone(&store))
            .with_wrap(wrap)
            .build()
            .unwrap();
        let totals = run_until(source, &topic, &ends, Duration::from_secs(60)).await;
        assert_eq!(totals.poison, 1);
        let mut reports = 0;
        for (key, body) in crate::testing::objects(&*store, "ev/").await {
            let lines: Vec<serde_json::Value> = body
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).unwrap())
                .collect();
            if key.contains("_failed") {
                reports += 1;
                assert_eq!(lines[0]["headers"], expected, "wrap {wrap}: {key}");
                continue;
            }
            assert_eq!(lines.len(), 2, "wrap {wrap}: {key}");
            for (line, n) in lines.iter().zip([0, 2]) {
                if wrap {
                    assert_eq!(line["value"], json!({ "n": n }));
                    assert_eq!(line["headers"][0]["value"], format!("t{n}"));
                } else {
                    assert_eq!(*line, json!({ "n": n }));
                }
            }
        }
        assert_eq!(reports, 1, "wrap {wrap}");
    }
}

/// The commit interval: two instances in their own groups read the same
/// topic, produced in rounds of one object each. The one without an
/// interval commits after every round's upload; the one with a long
/// interval commits once (its first upload), stays behind with its
/// objects stored, and commits the rest on shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_wait_for_the_commit_interval() {
    let topic = unique("interval");
    create_topic(&topic, 1).await;
    let prod = producer();
    let rounds = 5;
    let per_round = 20;
    let start = |interval: Duration| {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let source = builder(&topic, &unique("g"), Arc::clone(&store))
            .with_flush_size(per_round)
            .with_commit_interval(interval)
            .build()
            .unwrap();
        spawn(source)
    };
    let (every, every_stop, every_run) = start(Duration::ZERO);
    let (long, long_stop, long_run) = start(Duration::from_secs(3600));
    let committed = |s: &KafkaStatsHandle| {
        s.snapshot()
            .partitions
            .get(&format!("{topic}+0"))
            .and_then(|p| p.committed)
    };
    let mut end = 0;
    for round in 0..rounds {
        let msgs: Vec<Out> = (0..per_round)
            .map(|i| {
                let n = round * per_round + i;
                (
                    0,
                    Some(json!({"n": n, "p": 0}).to_string().into_bytes()),
                    base_ts() + n as i64,
                )
            })
            .collect();
        end = *send_all(&prod, &topic, &msgs).await.last().unwrap() + 1;
        let ends = BTreeMap::from([(0, end)]);
        wait_for(&every, &topic, &ends, Duration::from_secs(60)).await;
        wait_for(&long, &topic, &ends, Duration::from_secs(60)).await;
        // The round's object is committed by the instance without an
        // interval before the next round starts.
        let started = Instant::now();
        while committed(&every) != Some(end) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "round {round}: not committed to {end}: {:?}",
                every.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (e, l) = (every.snapshot(), long.snapshot());
    assert_eq!(e.objects, rounds as u64);
    assert_eq!(l.objects, rounds as u64);
    assert!(e.commits >= rounds as u64, "{e:?}");
    // One commit, for the first round's object; every later object is
    // stored and waits for the interval.
    assert_eq!(l.commits, 1, "{l:?}");
    assert_eq!(committed(&long), Some(per_round as i64), "{l:?}");
    every_stop.send(()).unwrap();
    long_stop.send(()).unwrap();
    every_run.await.unwrap().unwrap();
    let totals = long_run.await.unwrap().unwrap();
    // Shutdown commits what is stored, whatever the interval.
    assert_eq!(totals.commits, 2, "{totals:?}");
    assert_eq!(
        totals.partitions[&format!("{topic}+0")].committed,
        Some(end)
    );
}

/// A revocation commits what is stored: the first instance, its commits
/// held back by an hour's interval, stores three objects per partition;
/// a second instance joins the group, the first is asked to give
/// partitions up, and the second starts where the first stored up to, with
/// no stored object to find again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_commits_what_is_stored() {
    let topic = unique("revoke");
    create_topic(&topic, 2).await;
    let group = unique("g");
    let prod = producer();
    let per = 20;
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let start = || {
        let source = builder(&topic, &group, Arc::clone(&store))
            .with_flush_size(per)
            .with_commit_interval(Duration::from_secs(3600))
            .build()
            .unwrap();
        spawn(source)
    };
    let (a, a_stop, a_run) = start();
    let mut ends = BTreeMap::new();
    for round in 0..3 {
        let msgs: Vec<Out> = (0..2 * per)
            .map(|i| {
                let p = (i % 2) as i32;
                let n = round * 2 * per + i;
                (
                    p,
                    Some(json!({"n": n, "p": p}).to_string().into_bytes()),
                    base_ts() + n as i64,
                )
            })
            .collect();
        let offsets = send_all(&prod, &topic, &msgs).await;
        ends = expect(&msgs, &offsets).1;
        wait_for(&a, &topic, &ends, Duration::from_secs(60)).await;
    }
    let s = a.snapshot();
    assert_eq!(s.objects, 6, "{s:?}");
    // The interval let one commit through, for the first object.
    assert_eq!(s.commits, 1, "{s:?}");
    let (b, b_stop, b_run) = start();
    // The group settles with a partition each.
    let started = Instant::now();
    let taken = loop {
        let (sa, sb) = (a.snapshot(), b.snapshot());
        if sa.partitions.len() == 1 && sb.partitions.len() == 1 {
            break sb;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no rebalance to one partition each: {sa:?} {sb:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The second instance starts at the end: it found everything stored
    // committed, and has nothing to read, find again or commit.
    let key = taken.partitions.keys().next().unwrap();
    let p: i32 = key.rsplit('+').next().unwrap().parse().unwrap();
    let end = BTreeMap::from([(p, ends[&p])]);
    wait_for(&b, &topic, &end, Duration::from_secs(60)).await;
    let sb = b.snapshot();
    assert_eq!(sb.partitions[key].committed, Some(ends[&p]), "{sb:?}");
    assert_eq!((sb.messages, sb.adopted, sb.commits), (0, 0, 0), "{sb:?}");
    let sa = a.snapshot();
    assert!(sa.revocations >= 1, "{sa:?}");
    assert!(sa.commits >= 2, "the revocation made no commit: {sa:?}");
    a_stop.send(()).unwrap();
    b_stop.send(()).unwrap();
    a_run.await.unwrap().unwrap();
    let b_totals = b_run.await.unwrap().unwrap();
    assert_eq!(b_totals.adopted, 0, "{b_totals:?}");
    assert_eq!(b_totals.skipped, 0, "{b_totals:?}");
    let (data, _) = read_back(&*store, &topic).await;
    assert_eq!(data.len(), 6);
}
