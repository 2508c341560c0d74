//! Three instances of the source in one consumer group, each a child
//! process of this test binary, on a six-partition topic fed while they
//! run; at random moments one is killed with SIGKILL and restarted, which
//! forces rebalances (a killed member is dropped when its session times
//! out, the restarted one joins). Batches close at 400 records or 1.5 s,
//! so the wall-clock flush fires mid-batch; 2 % of the messages are an hour
//! late (two time partitions open at once) and 0.1 % are not JSON.
//!
//! After every kill: no offset is in two objects and no object seen before
//! has changed. At the end (the group's committed offsets at the topic's
//! ends, the instances stopped): every message is in the bucket exactly
//! once, each object's records match its key's partition and first offset
//! and its manifest, and `verify` finds the bucket complete.
//!
//! `S3E_KS_MESSAGES` (default 100000), `S3E_KS_KILLS` (default 20) and
//! `S3E_KS_SEED` change the run; with `S3E_KS_NOTE` set, the closing note
//! (kills, messages, rebalances, adoptions) is also written to that file.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

use super::tests::{
    assert_once, brokers, builder, counts, create_topic, producer, read_back, send_all, unique, Out,
};
use crate::StoreConfig;

const CHILD_TEST: &str = "kafka_source::kill_tests::kill_child";
const PARTITIONS: i32 = 6;
const INSTANCES: usize = 3;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The child: runs the source until its stdin closes (then shuts down
/// cleanly) or it is killed, printing its counters twice a second.
#[test]
#[ignore = "run as a child process by three_instances_survive_sigkill_and_rebalances"]
fn kill_child() {
    if std::env::var_os("S3E_KS_CHILD").is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = StoreConfig::Local {
            dir: var("S3E_KS_DIR").into(),
        }
        .build()
        .unwrap();
        let source = builder(&var("S3E_KS_TOPIC"), &var("S3E_KS_GROUP"), store)
            .with_flush_size(400)
            .with_flush_interval(Duration::from_millis(1500))
            .build()
            .unwrap();
        let stats = source.stats_handle();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok(n) = std::io::stdin().read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
            let _ = tx.send(());
        });
        let printer = {
            let stats = stats.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    print_stats(&stats.snapshot());
                }
            })
        };
        let totals = source
            .run(async {
                rx.await.ok();
            })
            .await
            .unwrap();
        printer.abort();
        print_stats(&totals);
        println!("kdone");
        std::io::stdout().flush().unwrap();
    });
}

fn print_stats(s: &super::KafkaSourceStats) {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "kstats {} {} {} {} {} {} {} {} {} {} {}",
        s.assignments,
        s.revocations,
        s.objects,
        s.adopted,
        s.collisions,
        s.skipped,
        s.messages,
        s.poison,
        s.commits,
        s.commit_failures,
        s.manifests_written
    )
    .unwrap();
    out.flush().unwrap();
}

/// The last counters a child printed.
type Last = Arc<Mutex<Option<[u64; 11]>>>;

struct Instance {
    child: Child,
    last: Last,
    reader: std::thread::JoinHandle<bool>,
}

fn spawn(topic: &str, group: &str, dir: &std::path::Path) -> Instance {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        CHILD_TEST,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("S3E_KS_CHILD", "1")
    .env("S3E_KS_TOPIC", topic)
    .env("S3E_KS_GROUP", group)
    .env("S3E_KS_DIR", dir)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let last: Last = Arc::default();
    let reader = {
        let last = Arc::clone(&last);
        std::thread::spawn(move || {
            let mut done = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("kdone") {
                    done = true;
                }
                // libtest prints `test <name> ... ` first, without a newline.
                let Some(i) = line.rfind("kstats ") else {
                    continue;
                };
                let v: Vec<u64> = line[i + 7..]
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                if let Ok(a) = <[u64; 11]>::try_from(v) {
                    *last.lock().unwrap() = Some(a);
                }
            }
            done
        })
    };
    Instance {
        child,
        last,
        reader,
    }
}

/// xorshift64.
fn next(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

/// Per (partition, offset, is a failure report), the objects holding it;
/// panics when an object seen before changed. Objects are read while
/// instances write, so manifests (written just after a local object) are
/// not read here: the wrapped records carry partition and offset.
async fn census(
    store: &dyn ObjectStore,
    known: &mut BTreeMap<String, Vec<u8>>,
) -> BTreeMap<(i64, i64, bool), u32> {
    let mut seen = BTreeMap::new();
    for (k, b) in crate::testing::objects(store, "ev/").await {
        match known.get(&k) {
            Some(before) => assert!(*before == b, "object {k} was overwritten"),
            None => {
                known.insert(k.clone(), b.clone());
            }
        }
        let d = crate::decode(&k, &b).unwrap_or_else(|e| panic!("{k}: {e}"));
        assert!(d.bad.is_empty(), "{k}: {:?}", d.bad);
        let failed = k.contains("/_failed/");
        for r in d.records {
            let key = (
                r["partition"].as_i64().unwrap(),
                r["offset"].as_i64().unwrap(),
                failed,
            );
            *seen.entry(key).or_insert(0) += 1;
        }
    }
    seen
}

/// The group's committed offsets.
fn committed(group: &str, topic: &str) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let mut out = BTreeMap::new();
    if let Ok(got) = c.committed_offsets(tpl, Duration::from_secs(10)) {
        for e in got.elements() {
            if let Offset::Offset(o) = e.offset() {
                out.insert(e.partition(), o);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_survive_sigkill_and_rebalances() {
    if std::env::var_os("S3E_KS_CHILD").is_some() {
        return;
    }
    let total = env_num("S3E_KS_MESSAGES", 100_000) as i64;
    let min_kills = env_num("S3E_KS_KILLS", 20);
    let seed = env_num(
        "S3E_KS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    );
    eprintln!("kafka kill: seed {seed} (set S3E_KS_SEED to repeat), {total} messages");
    let mut rng = seed;
    let started = Instant::now();
    let topic = unique("kill");
    let group = unique("g");
    create_topic(&topic, PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();
    let store = StoreConfig::Local {
        dir: dir.path().into(),
    }
    .build()
    .unwrap();

    // The messages: partition round robin, 50 ms apart in Kafka time
    // (crossing hours), 2 % an hour late, 0.1 % not JSON.
    let base = 1_709_640_000_000i64 - 20 * 60 * 1000;
    let msgs: Vec<Out> = (0..total)
        .map(|n| {
            let p = (n % i64::from(PARTITIONS)) as i32;
            let r = next(&mut rng) % 1000;
            let ts = base + n * 50 - if r < 20 { 3_600_000 } else { 0 };
            let v = if r == 999 {
                format!("not json {n}").into_bytes()
            } else {
                json!({"n": n, "p": p}).to_string().into_bytes()
            };
            (p, Some(v), ts)
        })
        .collect();
    let msgs = Arc::new(msgs);
    // Produced in rounds of 500 while the instances run: about 80 s for
    // 100 000.
    let producing = {
        let msgs = Arc::clone(&msgs);
        let topic = topic.clone();
        tokio::spawn(async move {
            let prod = producer();
            let mut offsets = Vec::with_capacity(msgs.len());
            for chunk in msgs.chunks(500) {
                let t = Instant::now();
                offsets.extend(send_all(&prod, &topic, chunk).await);
                let pace = Duration::from_millis(400);
                if let Some(rest) = pace.checked_sub(t.elapsed()) {
                    tokio::time::sleep(rest).await;
                }
            }
            offsets
        })
    };

    let mut instances: Vec<Instance> = (0..INSTANCES)
        .map(|_| spawn(&topic, &group, dir.path()))
        .collect();
    // Counters of the incarnations that ended.
    let mut ended = [0u64; 11];
    let mut known = BTreeMap::new();
    let mut kills = 0;
    while kills < min_kills || !producing.is_finished() {
        let wait = 2000 + next(&mut rng) % 2500;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let i = (next(&mut rng) % INSTANCES as u64) as usize;
        // Only an instance that has been given partitions (and said so:
        // its counters come every 500 ms) is killed, so that every kill
        // hits a member of the group mid-work; a join can take longer
        // than the wait above on a busy machine.
        let joined = Instant::now();
        while instances[i].last.lock().unwrap().is_none_or(|l| l[0] == 0) {
            assert!(
                joined.elapsed() < Duration::from_secs(60),
                "instance {i} was given no partition in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let join_wait = joined.elapsed();
        let mut inst = instances.remove(i);
        inst.child.kill().unwrap();
        let status = inst.child.wait().unwrap();
        assert!(
            status.code().is_none(),
            "instance {i} exited by itself: {status}"
        );
        inst.reader.join().unwrap();
        if let Some(l) = *inst.last.lock().unwrap() {
            for (e, v) in ended.iter_mut().zip(l) {
                *e += v;
            }
        }
        kills += 1;
        let seen = census(&*store, &mut known).await;
        let dups: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
        assert!(
            dups.is_empty(),
            "after kill {kills}: stored twice: {dups:?}"
        );
        eprintln!(
            "kafka kill: kill {kills} (instance {i}, after {wait} ms and {:?} more for its first assignment) at {:?}: {} messages stored, {} objects",
            join_wait,
            started.elapsed(),
            seen.len(),
            known.len()
        );
        let pause = next(&mut rng) % 1500;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        instances.insert(i, spawn(&topic, &group, dir.path()));
    }
    let offsets = producing.await.unwrap();
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for ((p, _, _), o) in msgs.iter().zip(&offsets) {
        let e = ends.entry(*p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    eprintln!("kafka kill: all produced at {:?}", started.elapsed());
    // Wait until the group has committed everything.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let c = tokio::task::spawn_blocking({
            let (g, t) = (group.clone(), topic.clone());
            move || committed(&g, &t)
        })
        .await
        .unwrap();
        if c == ends {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group committed {c:?}, the ends are {ends:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("kafka kill: all committed at {:?}", started.elapsed());
    // Stop the instances cleanly.
    for mut inst in instances {
        drop(inst.child.stdin.take());
        let status = inst.child.wait().unwrap();
        assert!(status.success(), "an instance failed: {status}");
        assert!(inst.reader.join().unwrap(), "an instance did not finish");
        if let Some(l) = *inst.last.lock().unwrap() {
            for (e, v) in ended.iter_mut().zip(l) {
                *e += v;
            }
        }
    }
    let seen = census(&*store, &mut known).await;
    assert!(seen.values().all(|c| *c == 1));
    let (data, failed) = read_back(&*store, &topic).await;
    let poison: Vec<bool> = msgs
        .iter()
        .map(|(_, v, _)| serde_json::from_slice::<Value>(v.as_deref().unwrap()).is_err())
        .collect();
    let keys: Vec<(i32, i64)> = msgs
        .iter()
        .zip(&offsets)
        .map(|((p, _, _), o)| (*p, *o))
        .collect();
    let good: Vec<(i32, i64)> = keys
        .iter()
        .zip(&poison)
        .filter(|(_, b)| !**b)
        .map(|(k, _)| *k)
        .collect();
    let bad: Vec<(i32, i64)> = keys
        .iter()
        .zip(&poison)
        .filter(|(_, b)| **b)
        .map(|(k, _)| *k)
        .collect();
    assert_once(&counts(&data), &good);
    assert_once(&counts(&failed), &bad);
    let report = crate::verify(
        &*store,
        &crate::VerifyOptions {
            prefix: "ev/".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(report.is_complete(), "verify: {:#?}", report.problems);
    assert_eq!(report.records, total as u64);
    let [assign, revoke, objects, adopted, collisions, skipped, messages, poisoned, commits, commit_failures, manifests_written] =
        ended;
    let note = format!(
        "kafka kill: {kills} kills, {total} messages ({} not JSON) from {} instances' runs: every one stored exactly once in {} objects, none overwritten; {assign} assignments and {revoke} revocations (rebalances seen by the instances), {objects} objects uploaded by the instances that reported it, {adopted} adopted by the chain check, {collisions} collisions, {skipped} messages skipped as already stored, {messages} messages taken in all (redone included), {poisoned} failure reports written (redone included), {commits} commits ({commit_failures} refused, mostly during rebalances), {manifests_written} manifests written for objects found without one (a kill between a local object and its sidecar); {:?} in all",
        bad.len(),
        kills as usize + INSTANCES,
        data.len() + failed.len(),
        started.elapsed()
    );
    eprintln!("{note}");
    // scripts/test.sh prints this note in its summary.
    if let Some(path) = std::env::var_os("S3E_KS_NOTE") {
        let _ = std::fs::write(path, format!("{note}\n"));
    }
    // Every killed instance had said it was given partitions.
    assert!(assign >= kills, "fewer assignments than kills: {assign}");
}
