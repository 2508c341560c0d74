//! The partition state against the in-memory store, without Kafka: redo
//! after lost commits, collisions with a second owner, interleaved time
//! partitions, failure reports; and a randomized run of owners that crash,
//! restart from the committed offset and overlap as zombies.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::*;
use crate::kafka_source::record::Body;
use crate::kafka_source::Counters;

const TOPIC: &str = "t";
const P: i32 = 3;

fn shared(store: &Arc<InMemory>, flush_size: usize) -> Shared {
    Shared {
        store: Arc::clone(store) as Arc<dyn ObjectStore>,
        prefix: "ev/".into(),
        failure_dir: "_failed".into(),
        encoding: Encoding::Ndjson,
        compression: Compression::None,
        flush_size,
        max_bytes: 1 << 20,
        flush_interval: Duration::from_secs(3600),
        retry: RetryPolicy::default(),
        counters: Arc::new(Counters::default()),
        chain_check: true,
        manifest_wait: Duration::from_millis(50),
    }
}

fn tpart(h: u32) -> String {
    format!("2024/03/05/{h:02}/")
}

/// Message `o` in hour `h`; a record holding its offset, or poison.
fn msg(o: i64, h: u32, poison: bool) -> Incoming<'static> {
    Incoming {
        offset: o,
        tpart: tpart(h).into(),
        body: if poison {
            Body::Poison {
                report: format!("{{\"offset\":{o}}}\n").into_bytes(),
                reason: "not JSON".into(),
            }
        } else {
            Body::Record(format!("{{\"o\":{o}}}").into_bytes().into())
        },
    }
}

/// What the store holds: per offset, the data objects and failure reports
/// holding it; panics when an object's records disagree with its manifest
/// or its key.
async fn census(store: &InMemory) -> (BTreeMap<i64, u32>, BTreeMap<i64, u32>, usize) {
    let objs = crate::testing::objects(store, "ev/").await;
    let (mut data, mut failed) = (BTreeMap::new(), BTreeMap::new());
    for (k, b) in &objs {
        let m = Manifest::read(store, &Path::from(k.as_str()))
            .await
            .unwrap()
            .unwrap()
            .unwrap_or_else(|| panic!("{k} has no manifest"));
        assert_eq!(m.instance, format!("{TOPIC}+{P}"));
        let offsets: Vec<i64> = m
            .runs
            .iter()
            .flat_map(|&(a, b)| a as i64..=b as i64)
            .collect();
        let d = crate::decode(k, b).unwrap();
        let got: Vec<i64> = d
            .records
            .iter()
            .map(|r| r.get("o").or(r.get("offset")).unwrap().as_i64().unwrap())
            .collect();
        assert_eq!(got, offsets, "{k}: records vs manifest");
        let first = format!("{TOPIC}+{P}+{:020}", offsets[0]);
        assert!(k.contains(&first), "{k} does not start at {}", offsets[0]);
        let into = if k.contains("/_failed/") {
            &mut failed
        } else {
            &mut data
        };
        for o in offsets {
            *into.entry(o).or_insert(0) += 1;
        }
    }
    (data, failed, objs.len())
}

fn once(counts: &BTreeMap<i64, u32>, expected: impl Iterator<Item = i64>) {
    let want: Vec<i64> = expected.collect();
    let dups: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(dups.is_empty(), "stored twice: {dups:?}");
    let got: Vec<i64> = counts.keys().copied().collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn batches_close_on_count_and_commit_after_upload() {
    let store = Arc::new(InMemory::new());
    let sh = shared(&store, 4);
    let mut p = PartitionState::new(TOPIC, P);
    assert_eq!(p.committable(), None);
    for o in 0..10 {
        p.offer(&sh, msg(o, 10, false)).await.unwrap();
    }
    // 0..=3 and 4..=7 stored; 8, 9 open.
    assert_eq!(p.committable(), Some(8));
    p.flush_due(&sh, None).await.unwrap();
    assert_eq!(p.committable(), Some(10));
    let (data, _, n) = census(&store).await;
    assert_eq!(n, 3);
    once(&data, 0..10);
    let keys: Vec<String> = crate::testing::objects(&*store, "ev/")
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys[0], "ev/2024/03/05/10/t+3+00000000000000000000.ndjson");
}

#[tokio::test]
async fn a_redo_with_other_batch_ends_skips_what_is_stored() {
    let store = Arc::new(InMemory::new());
    // First owner: batches of 3, the one at 9 left open (a crash before
    // any commit).
    let sh = shared(&store, 3);
    let mut a = PartitionState::new(TOPIC, P);
    for o in 0..11 {
        a.offer(&sh, msg(o, 10, false)).await.unwrap();
    }
    drop(a);
    // The next owner starts at the last commit (none: 0) with batches of
    // 5 and a time flush in the middle.
    let sh = shared(&store, 5);
    let mut b = PartitionState::new(TOPIC, P);
    for o in 0..7 {
        b.offer(&sh, msg(o, 10, false)).await.unwrap();
    }
    b.flush_due(&sh, None).await.unwrap();
    for o in 7..20 {
        b.offer(&sh, msg(o, 10, false)).await.unwrap();
    }
    b.flush_due(&sh, None).await.unwrap();
    assert_eq!(b.committable(), Some(20));
    let c = sh.counters.adopted.load(Ordering::Relaxed);
    assert_eq!(c, 3, "objects at 0, 3 and 6 adopted");
    let (data, _, _) = census(&store).await;
    once(&data, 0..20);
}

/// Uncompressed NDJSON re-encodes the rest of a batch from the object's
/// lines, every other layout from its own copy of the records: both ways.
#[tokio::test]
async fn without_the_chain_check_collisions_alone_keep_it_exactly_once() {
    for compression in [Compression::None, Compression::gzip()] {
        collisions_alone(compression).await;
    }
}

async fn collisions_alone(compression: Compression) {
    let store = Arc::new(InMemory::new());
    let mut sh = shared(&store, 4);
    sh.compression = compression;
    let mut a = PartitionState::new(TOPIC, P);
    for o in 0..8 {
        a.offer(&sh, msg(o, 10, false)).await.unwrap();
    }
    let mut sh = shared(&store, 6);
    sh.compression = compression;
    sh.chain_check = false;
    let mut b = PartitionState::new(TOPIC, P);
    for o in 0..14 {
        b.offer(&sh, msg(o, 10, false)).await.unwrap();
    }
    b.flush_due(&sh, None).await.unwrap();
    assert!(
        sh.counters.collisions.load(Ordering::Relaxed) >= 2,
        "{compression:?}"
    );
    let (data, _, _) = census(&store).await;
    once(&data, 0..14);
    assert_eq!(b.committable(), Some(14));
}

#[tokio::test]
async fn a_lost_reply_is_not_a_collision() {
    let store = Arc::new(InMemory::new());
    let sh = shared(&store, 3);
    let mut a = PartitionState::new(TOPIC, P);
    for o in 0..3 {
        a.offer(&sh, msg(o, 10, false)).await.unwrap();
    }
    // The same batch again, chain check off: the put finds its own bytes.
    let mut sh = shared(&store, 3);
    sh.chain_check = false;
    let mut b = PartitionState::new(TOPIC, P);
    for o in 0..3 {
        b.offer(&sh, msg(o, 10, false)).await.unwrap();
    }
    assert_eq!(sh.counters.collisions.load(Ordering::Relaxed), 0);
    assert_eq!(b.committable(), Some(3));
}

#[tokio::test]
async fn commits_never_cut_through_an_object() {
    let store = Arc::new(InMemory::new());
    let sh = shared(&store, 3);
    let mut p = PartitionState::new(TOPIC, P);
    // Hour 10 and a late hour 9 interleaved.
    for (o, h) in [(0, 10), (1, 9), (2, 10), (3, 10)] {
        p.offer(&sh, msg(o, h, false)).await.unwrap();
    }
    // {0,2,3} stored; {1} open: 1 is the lowest open, but the stored
    // object spans 0..=3, so only 0 is a clean cut.
    assert_eq!(p.committable(), Some(0));
    for (o, h) in [(4, 9), (5, 9)] {
        p.offer(&sh, msg(o, h, false)).await.unwrap();
    }
    assert_eq!(p.committable(), Some(6));
    p.set_committed(6);
    // A redo from 0 (had the commit of 6 been lost) with other batch ends.
    let sh2 = shared(&store, 2);
    let mut r = PartitionState::new(TOPIC, P);
    for (o, h) in [
        (0, 10),
        (1, 9),
        (2, 10),
        (3, 10),
        (4, 9),
        (5, 9),
        (6, 9),
        (7, 10),
    ] {
        r.offer(&sh2, msg(o, h, false)).await.unwrap();
    }
    r.flush_due(&sh2, None).await.unwrap();
    let (data, _, _) = census(&store).await;
    once(&data, 0..8);
}

/// A partition with objects stored since its last commit but no clean
/// cut past it has nothing to commit (the loop waits for none).
#[tokio::test]
async fn stored_objects_without_a_new_clean_cut_have_nothing_to_commit() {
    let store = Arc::new(InMemory::new());
    let sh = shared(&store, 3);
    let mut p = PartitionState::new(TOPIC, P);
    for (o, h) in [(0, 10), (1, 9), (2, 10), (3, 10)] {
        p.offer(&sh, msg(o, h, false)).await.unwrap();
    }
    assert_eq!(p.to_commit(), Some(0));
    p.set_committed(0);
    assert!(!p.dirty);
    assert_eq!(p.to_commit(), None);
    // Another hour-10 object: stored, but 1 (hour 9) is still open below it.
    for o in 4..7 {
        p.offer(&sh, msg(o, 10, false)).await.unwrap();
    }
    assert!(p.dirty);
    assert_eq!(p.committable(), Some(0));
    assert_eq!(p.to_commit(), None);
    // The hour-9 batch closes: everything below 9 is stored.
    for o in [7, 8] {
        p.offer(&sh, msg(o, 9, false)).await.unwrap();
    }
    assert_eq!(p.to_commit(), Some(9));
}

#[tokio::test]
async fn poison_is_reported_once_and_does_not_block() {
    let store = Arc::new(InMemory::new());
    let sh = shared(&store, 2);
    for _ in 0..2 {
        // Twice: the redo finds the report stored.
        let mut p = PartitionState::new(TOPIC, P);
        for o in 0..6 {
            p.offer(&sh, msg(o, 10, o == 2)).await.unwrap();
        }
        p.flush_due(&sh, None).await.unwrap();
        assert_eq!(p.committable(), Some(6));
    }
    let objs = crate::testing::objects(&*store, "ev/").await;
    let reports: Vec<_> = objs.iter().filter(|(k, _)| k.contains("_failed")).collect();
    assert_eq!(reports.len(), 1);
    assert_eq!(
        reports[0].0,
        "ev/2024/03/05/10/_failed/t+3+00000000000000000002.ndjson"
    );
    let (data, failed, _) = census(&store).await;
    once(&data, [0, 1, 3, 4, 5].into_iter());
    once(&failed, [2].into_iter());
    // verify finds no hole: the report's manifest holds offset 2.
    let report = verify_complete(&*store).await;
    assert_eq!(report.instances.get("t+3"), Some(&(0, 5)));
}

#[tokio::test]
async fn a_chain_point_without_a_manifest_is_counted() {
    let store = Arc::new(InMemory::new());
    // An object at 0 holding 3 records and no metadata (a writer killed
    // between the object and its metadata).
    let key = Path::from(format!("ev/{}t+3+{:020}.ndjson", tpart(10), 0));
    store
        .put(
            &key,
            PutPayload::from_static(b"{\"o\":0}\n{\"o\":1}\n{\"o\":2}\n"),
        )
        .await
        .unwrap();
    let sh = shared(&store, 10);
    let mut p = PartitionState::new(TOPIC, P);
    for o in 0..2 {
        p.offer(&sh, msg(o, 10, false)).await.unwrap();
    }
    // 0 and 1 skipped by count; 2 still to come, so no commit past 0.
    assert_eq!(p.committable(), Some(0));
    for o in 2..5 {
        p.offer(&sh, msg(o, 10, false)).await.unwrap();
    }
    p.flush_due(&sh, None).await.unwrap();
    assert_eq!(p.committable(), Some(5));
    assert_eq!(sh.counters.skipped.load(Ordering::Relaxed), 3);
    let objs = crate::testing::objects(&*store, "ev/").await;
    assert_eq!(objs.len(), 2);
    assert!(objs[1].0.ends_with("t+3+00000000000000000003.ndjson"));
}

#[tokio::test]
async fn an_object_of_another_partition_at_our_key_is_an_error() {
    let store = Arc::new(InMemory::new());
    let sh = shared(&store, 2);
    let mut other = PartitionState::new(TOPIC, P);
    other.instance = "t+4".into();
    other.offer(&sh, msg(0, 10, false)).await.unwrap();
    other.offer(&sh, msg(1, 10, false)).await.unwrap();
    let mut p = PartitionState::new(TOPIC, P);
    let e = p.offer(&sh, msg(0, 10, false)).await.unwrap_err();
    assert!(e.to_string().contains("t+4"), "{e}");
    assert!(e.to_string().contains("not overwriting"), "{e}");
}

#[tokio::test]
async fn many_interleaved_runs_close_a_batch_early() {
    let store = Arc::new(InMemory::new());
    let sh = shared(&store, 100_000);
    let mut p = PartitionState::new(TOPIC, P);
    // Every other message is late: hour 10's batch gets one run per
    // message, so its runs text outgrows the manifest's limit.
    for o in 0..2000 {
        p.offer(&sh, msg(o, 10 - (o % 2) as u32, false))
            .await
            .unwrap();
    }
    p.flush_due(&sh, None).await.unwrap();
    let (data, _, n) = census(&store).await;
    assert!(n > 2, "{n} objects");
    once(&data, 0..2000);
    // Every manifest lists its offsets exactly (checked by census).
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

/// Owners of one partition come and go: each starts at the offset last
/// committed, takes messages with its own batch sizes and time flushes,
/// and is killed (nothing flushed) or left running as a zombie (its
/// commits refused) at random. Every message ends in the bucket once.
/// Odd rounds write gzip NDJSON (a batch keeps its own copy of the
/// records), even rounds uncompressed NDJSON (the object's lines serve).
#[tokio::test]
async fn randomized_owners_zombies_and_crashes() {
    let seed = std::env::var("S3E_KAFKA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15u64);
    for round in 0..40u64 {
        let mut rng = seed ^ (round.wrapping_mul(0x2545_f491_4f6c_dd1d)) | 1;
        let store = Arc::new(InMemory::new());
        let total: i64 = 300;
        // Mostly hour 10, some late hour 9, a little 11; some poison.
        let log: Vec<(u32, bool)> = (0..total)
            .map(|_| {
                let r = next(&mut rng) % 100;
                let h = if r < 15 {
                    9
                } else if r < 20 {
                    11
                } else {
                    10
                };
                (h, next(&mut rng).is_multiple_of(40))
            })
            .collect();
        let mut committed: i64 = 0;
        // (state, shared, next offset to take, is current owner)
        let mut owners: Vec<(PartitionState, Shared, i64, bool)> = Vec::new();
        let mut events = 0;
        loop {
            if owners.iter().all(|o| !o.3) {
                let mut sh = shared(&store, 1 + (next(&mut rng) % 12) as usize);
                if round % 2 == 1 {
                    sh.compression = Compression::gzip();
                }
                sh.chain_check = !next(&mut rng).is_multiple_of(4);
                let mut st = PartitionState::new(TOPIC, P);
                st.resume_at(committed);
                owners.push((st, sh, committed, true));
            }
            events += 1;
            let i = (next(&mut rng) % owners.len() as u64) as usize;
            let action = next(&mut rng) % 100;
            let (st, sh, pos, current) = &mut owners[i];
            if action < 80 {
                if *pos < total {
                    let (h, poison) = log[*pos as usize];
                    st.offer(sh, msg(*pos, h, poison)).await.unwrap();
                    *pos += 1;
                }
            } else if action < 90 {
                // A time flush.
                st.flush_due(sh, None).await.unwrap();
            } else if action < 95 {
                if *current {
                    if let Some(c) = st.committable() {
                        assert!(c >= committed, "a commit went backwards");
                        committed = c;
                        st.set_committed(c);
                    }
                }
            } else if action < 98 {
                // Rebalance: the owner becomes a zombie (or a zombie dies).
                if *current {
                    *current = false;
                } else {
                    owners.remove(i);
                }
            } else {
                owners.remove(i);
            }
            let done = owners.iter().any(|o| o.3 && o.2 >= total);
            if done || events > 20_000 {
                break;
            }
        }
        // The last owner finishes: shutdown uploads what is open.
        let (st, sh, _, _) = owners.iter_mut().find(|o| o.3).expect("an owner");
        st.flush_due(sh, None).await.unwrap();
        assert_eq!(st.committable(), Some(total));
        let (data, failed, _) = census(&store).await;
        let poison: Vec<i64> = (0..total).filter(|&o| log[o as usize].1).collect();
        once(&failed, poison.iter().copied());
        once(&data, (0..total).filter(|o| !poison.contains(o)));
    }
}

/// A steady trickle of late messages keeps a batch of the previous hour
/// open beside the current hour's: the batches overlap, so without forced
/// cuts no offset could ever be committed.
#[tokio::test]
async fn overlapping_hours_still_get_commits() {
    let store = Arc::new(InMemory::new());
    // Batches close on count (the late hour's fills 7 times slower), and
    // on time only after 30 ms.
    let mut sh = shared(&store, 20);
    sh.flush_interval = Duration::from_millis(30);
    let mut p = PartitionState::new(TOPIC, P);
    let mut lowest_gap = i64::MAX;
    for o in 0..600 {
        p.offer(&sh, msg(o, if o % 7 == 3 { 9 } else { 10 }, false))
            .await
            .unwrap();
        if o % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(2)).await;
            p.flush_due(&sh, Some(Instant::now())).await.unwrap();
            if o > 300 {
                lowest_gap = lowest_gap.min(o + 1 - p.committable().unwrap());
            }
        }
    }
    assert!(sh.counters.forced_cuts.load(Ordering::Relaxed) > 0);
    // The commit point comes back to the head now and then.
    assert!(
        lowest_gap < 20,
        "the commit point lags by {lowest_gap} at best"
    );
    p.flush_due(&sh, None).await.unwrap();
    let (data, _, _) = census(&store).await;
    once(&data, 0..600);
}

/// In the local directory, where an object's metadata is a sidecar written
/// after it, a writer killed between the two leaves an object without a
/// manifest. Its records are counted off (0, 2 and 4: the hour's messages,
/// interleaved with another hour's), then its manifest is written for it,
/// so `verify` finds every offset and the next owner's chain check reads
/// offsets, not a count.
#[tokio::test]
async fn a_chain_point_without_a_manifest_gets_one_once_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (local, key) = unlisted(dir.path(), b"{\"o\":0}\n{\"o\":2}\n{\"o\":4}\n").await;
    let mut sh = shared(&Arc::new(InMemory::new()), 10);
    sh.store = Arc::clone(&local) as Arc<dyn ObjectStore>;
    let mut p = PartitionState::new(TOPIC, P);
    for o in 0..4 {
        p.offer(&sh, msg(o, 10 + (o % 2) as u32, false))
            .await
            .unwrap();
    }
    // 4 is still to be counted: no manifest yet.
    assert!(Manifest::read(&*local, &key)
        .await
        .unwrap()
        .unwrap()
        .is_none());
    for o in 4..6 {
        p.offer(&sh, msg(o, 10 + (o % 2) as u32, false))
            .await
            .unwrap();
    }
    let m = Manifest::read(&*local, &key)
        .await
        .unwrap()
        .unwrap()
        .expect("the manifest written once 0, 2 and 4 were counted");
    assert_eq!(m.instance, "t+3");
    assert_eq!(m.runs, vec![(0, 0), (2, 2), (4, 4)]);
    assert_eq!(m.records, 3);
    assert_eq!(sh.counters.manifests_written.load(Ordering::Relaxed), 1);
    p.flush_due(&sh, None).await.unwrap();
    assert_eq!(sh.counters.skipped.load(Ordering::Relaxed), 3);
    let report = verify_complete(&*local).await;
    assert_eq!(report.records, 6);
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A local directory holding `body` at partition 3's key from offset 0
/// (hour 10) without its sidecar: a writer killed between the two.
async fn unlisted(dir: &std::path::Path, body: &'static [u8]) -> (Arc<crate::LocalDir>, Path) {
    let local = Arc::new(crate::LocalDir::new(dir).unwrap());
    let key = Path::from(format!("ev/{}t+3+{:020}.ndjson", tpart(10), 0));
    local
        .put(&key, PutPayload::from_static(body))
        .await
        .unwrap();
    for f in walk(dir) {
        if f.to_string_lossy()
            .ends_with(crate::local::ATTRIBUTES_SUFFIX)
        {
            std::fs::remove_file(f).unwrap();
        }
    }
    assert!(Manifest::read(&*local, &key)
        .await
        .unwrap()
        .unwrap()
        .is_none());
    (local, key)
}

/// The object without a manifest holds one record: its manifest is
/// written as soon as the chain check finds it.
#[tokio::test]
async fn a_one_record_object_without_a_manifest_gets_one_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (local, key) = unlisted(dir.path(), b"{\"o\":0}\n").await;
    let mut sh = shared(&Arc::new(InMemory::new()), 10);
    sh.store = Arc::clone(&local) as Arc<dyn ObjectStore>;
    let mut p = PartitionState::new(TOPIC, P);
    p.offer(&sh, msg(0, 10, false)).await.unwrap();
    let m = Manifest::read(&*local, &key)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m.runs, vec![(0, 0)]);
    assert_eq!(p.committable(), Some(1));
}

/// Without the chain check the object is found by the collision of our
/// own batch (0, 1, 2) at its key: it holds 0 and 1 and no manifest. Its
/// manifest lists those two; 2 goes into the next object.
#[tokio::test]
async fn a_collision_with_an_object_without_a_manifest_writes_its_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (local, key) = unlisted(dir.path(), b"{\"o\":0}\n{\"o\":1}\n").await;
    let mut sh = shared(&Arc::new(InMemory::new()), 3);
    sh.store = Arc::clone(&local) as Arc<dyn ObjectStore>;
    sh.chain_check = false;
    let mut p = PartitionState::new(TOPIC, P);
    for o in 0..3 {
        p.offer(&sh, msg(o, 10, false)).await.unwrap();
    }
    assert_eq!(sh.counters.collisions.load(Ordering::Relaxed), 1);
    let m = Manifest::read(&*local, &key)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m.runs, vec![(0, 1)]);
    assert_eq!(sh.counters.manifests_written.load(Ordering::Relaxed), 1);
    p.flush_due(&sh, None).await.unwrap();
    let report = verify_complete(&*local).await;
    assert_eq!(report.records, 3);
}

/// `verify` of `ev/`, which must find the store complete.
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
    assert!(report.is_complete(), "{:#?}", report.problems);
    report
}
