//! A conformance suite for [`Target`] implementations, written once and run
//! against every target (as `object_store`'s `integration.rs` is run against
//! every store).
//!
//! Compiled for this crate's tests and with the `conformance` feature (no
//! extra dependencies), so that other crates' integration tests can run it
//! too. A target's test module implements [`Harness`] over a real server and
//! calls the suite functions, each of which panics with a clear message when
//! the target breaks the [`Target`] contract:
//!
//! - [`publishes`]: `send_batch` of one event and of `max_batch()` events;
//!   all arrive, in order.
//! - [`preserves_order`]: 200 events through a [`Notifier`] arrive in order.
//! - [`is_active_is_honest`]: `is_active` is `Ok(true)` while the server is
//!   up and `Ok(false)` or an error while it is stopped.
//! - [`survives_target_restart`]: events sent through a [`Notifier`] while
//!   the server is down arrive, in order, once it is back, without
//!   rebuilding the target.
//! - [`dead_letters_poison`]: an event the server rejects permanently is
//!   dead-lettered and the events around it arrive.
//!
//! Every test uses its own key prefix, so one server may be shared by all.
//!
//! ```no_run
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use s3_event_targets::conformance::{self, Harness};
//! use s3_event_targets::core::{EventRecord, Target};
//!
//! struct MyHarness { /* a server and a target configured for it */ }
//!
//! #[async_trait]
//! impl Harness for MyHarness {
//!     fn target(&self) -> Arc<dyn Target> { todo!() }
//!     async fn received(&self) -> Vec<String> { todo!() }
//!     async fn stop_server(&self) {}
//!     async fn start_server(&self) {}
//!     fn supports_restart(&self) -> bool { false }
//!     fn poison(&self) -> Option<EventRecord> { None }
//! }
//!
//! # async fn run() {
//! conformance::run_all(&MyHarness {}).await;
//! # }
//! ```

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use s3_event_core::{encode_key, EventMask, EventRecord, NotificationRule, RuleSet, Target};

use crate::notifier::{Notifier, RetryPolicy, TargetOptions};

/// How long the suite waits for events to arrive before failing.
pub const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);

/// The server side of a target under test, driven by the suite functions.
#[async_trait]
pub trait Harness: Send + Sync {
    /// A target configured to deliver to the server. The suite may call this
    /// more than once; each call may build a new target.
    fn target(&self) -> Arc<dyn Target>;

    /// The decoded object keys of the events the server has accepted so far,
    /// in arrival order, read back through the server's own side (not
    /// through the target). Rejected events are not listed.
    async fn received(&self) -> Vec<String>;

    /// Stops the server so that the target cannot reach it. A no-op when
    /// [`Harness::supports_restart`] is false.
    async fn stop_server(&self);

    /// Starts the server again at the same address. A no-op when
    /// [`Harness::supports_restart`] is false.
    async fn start_server(&self);

    /// Whether [`Harness::stop_server`] and [`Harness::start_server`] work;
    /// the restart tests are skipped when false.
    fn supports_restart(&self) -> bool {
        true
    }

    /// An event the server rejects permanently, if it can produce one;
    /// [`dead_letters_poison`] is skipped when `None`. The suite's own keys
    /// never contain the word "poison", so a server may reject by that.
    fn poison(&self) -> Option<EventRecord>;
}

/// An `s3:ObjectCreated:Put` record for bucket `conformance` and object
/// `key` (URL-encoded on the wire with [`encode_key`]).
pub fn record(key: &str) -> EventRecord {
    let v = serde_json::json!({
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "eventName": "s3:ObjectCreated:Put",
        "s3": {
            "bucket": { "name": "conformance" },
            "object": { "key": encode_key(key), "size": 1 },
        },
    });
    serde_json::from_value(v).expect("a conformance record deserializes")
}

/// A key prefix unique to one test run (`conformance/<test>-<nonce>/`).
fn prefix(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("conformance/{test}-{nanos:x}-{n}/")
}

/// `n` keys under `prefix`, with a space and a non-ASCII character so that
/// key encoding is exercised.
fn keys(prefix: &str, from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| format!("{prefix}obj é {i:05}"))
        .collect()
}

/// The received keys under `prefix`, in arrival order.
async fn received_under(h: &dyn Harness, prefix: &str) -> Vec<String> {
    h.received()
        .await
        .into_iter()
        .filter(|k| k.starts_with(prefix))
        .collect()
}

/// Waits until every key of `want` was received under `prefix`, and returns
/// what was received there; panics after [`ARRIVAL_TIMEOUT`].
async fn wait_for(h: &dyn Harness, test: &str, prefix: &str, want: &[String]) -> Vec<String> {
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    loop {
        let got = received_under(h, prefix).await;
        let seen: HashSet<&String> = got.iter().collect();
        if want.iter().all(|k| seen.contains(k)) {
            return got;
        }
        if Instant::now() >= deadline {
            let missing: Vec<&String> = want.iter().filter(|k| !seen.contains(k)).collect();
            panic!(
                "{test}: {} of {} events did not arrive within {ARRIVAL_TIMEOUT:?}; \
                 first missing: {:?}; received {} under {prefix:?}",
                missing.len(),
                want.len(),
                missing.first(),
                got.len(),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Exactly `want`, in order, no duplicates.
fn assert_exactly(test: &str, got: &[String], want: &[String]) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(g, w)| g != w)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{test}: received {} events, expected {} in order; first difference at index {at}: \
             got {:?}, expected {:?}",
            got.len(),
            want.len(),
            got.get(at),
            want.get(at),
        );
    }
}

/// `want` in order at least once: duplicates from retried batches are
/// allowed (delivery is at least once), but the first arrival of each key
/// follows `want`'s order and nothing else arrives.
fn assert_in_order_at_least_once(test: &str, got: &[String], want: &[String]) {
    let mut seen = HashSet::new();
    let firsts: Vec<String> = got
        .iter()
        .filter(|k| seen.insert(k.as_str()))
        .cloned()
        .collect();
    assert_exactly(test, &firsts, want);
}

/// A notifier routing every event to `target`, retrying fast.
fn notifier(target: Arc<dyn Target>) -> Notifier {
    let rules = RuleSet::new([NotificationRule::new(
        "conformance",
        EventMask::ALL,
        target.id().clone(),
    )])
    .expect("one rule is a valid rule set");
    let options = TargetOptions {
        retry: RetryPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(200),
            ..RetryPolicy::default()
        },
        ..TargetOptions::default()
    };
    Notifier::builder()
        .rules(rules)
        .target(target, options)
        .build()
        .expect("a notifier with one target builds")
}

async fn send_all(test: &str, n: &Notifier, keys: &[String]) {
    for k in keys {
        let out = n
            .send(record(k))
            .await
            .unwrap_or_else(|e| panic!("{test}: Notifier::send({k:?}) failed: {e}"));
        assert_eq!(out.queued, 1, "{test}: {k:?} was not queued: {out:?}");
    }
}

/// `send_batch` of one event and of `max_batch()` events: `Ok`, and every
/// event arrives exactly once, in order.
pub async fn publishes(h: &dyn Harness) {
    const TEST: &str = "publishes";
    let t = h.target();
    let p = prefix(TEST);
    let one = keys(&p, 0, 1);
    t.send_batch(&[record(&one[0])])
        .await
        .unwrap_or_else(|e| panic!("{TEST}: send_batch of 1 event failed: {e}"));
    let got = wait_for(h, TEST, &p, &one).await;
    assert_exactly(TEST, &got, &one);

    let max = t.max_batch();
    assert!(max >= 1, "{TEST}: max_batch() must be >= 1, is {max}");
    let batch = keys(&p, 1, max);
    let records: Vec<EventRecord> = batch.iter().map(|k| record(k)).collect();
    t.send_batch(&records)
        .await
        .unwrap_or_else(|e| panic!("{TEST}: send_batch of max_batch() = {max} events failed: {e}"));
    let want: Vec<String> = one.iter().chain(&batch).cloned().collect();
    let got = wait_for(h, TEST, &p, &want).await;
    assert_exactly(TEST, &got, &want);
}

/// 200 events sent through a [`Notifier`] with this target arrive exactly
/// once, in order.
pub async fn preserves_order(h: &dyn Harness) {
    const TEST: &str = "preserves_order";
    let n = notifier(h.target());
    let p = prefix(TEST);
    let want = keys(&p, 0, 200);
    send_all(TEST, &n, &want).await;
    let got = wait_for(h, TEST, &p, &want).await;
    n.shutdown(Duration::from_secs(5)).await;
    assert_exactly(TEST, &got, &want);
}

/// `is_active` is `Ok(true)` while the server is up; when restart is
/// supported, `Ok(false)` or an error while it is stopped and `Ok(true)`
/// again (on the same target) once it is back.
pub async fn is_active_is_honest(h: &dyn Harness) {
    const TEST: &str = "is_active_is_honest";
    let t = h.target();
    match t.is_active().await {
        Ok(true) => {}
        other => panic!("{TEST}: is_active while the server is up: {other:?}, expected Ok(true)"),
    }
    if !h.supports_restart() {
        return;
    }
    h.stop_server().await;
    let down = t.is_active().await;
    h.start_server().await;
    if let Ok(true) = down {
        panic!("{TEST}: is_active while the server is stopped returned Ok(true)");
    }
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    loop {
        match t.is_active().await {
            Ok(true) => break,
            other if Instant::now() >= deadline => panic!(
                "{TEST}: is_active after the server restarted: {other:?} for {ARRIVAL_TIMEOUT:?}"
            ),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Through a [`Notifier`]: events sent while the server is down arrive,
/// in order, after it starts again, on the same target (no rebuild). Skipped
/// when restart is not supported.
pub async fn survives_target_restart(h: &dyn Harness) {
    const TEST: &str = "survives_target_restart";
    if !h.supports_restart() {
        eprintln!("{TEST}: skipped, the harness does not support restarts");
        return;
    }
    let n = notifier(h.target());
    let p = prefix(TEST);
    // Up: the target connects.
    let before = keys(&p, 0, 5);
    send_all(TEST, &n, &before).await;
    wait_for(h, TEST, &p, &before).await;

    h.stop_server().await;
    let during = keys(&p, 5, 50);
    send_all(TEST, &n, &during).await;
    // Let the pipeline fail and back off while the server is down.
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.start_server().await;

    let after = keys(&p, 55, 5);
    send_all(TEST, &n, &after).await;
    let want: Vec<String> = before
        .iter()
        .chain(&during)
        .chain(&after)
        .cloned()
        .collect();
    let got = wait_for(h, TEST, &p, &want).await;
    n.shutdown(Duration::from_secs(5)).await;
    assert_in_order_at_least_once(TEST, &got, &want);
}

/// Through a [`Notifier`]: the harness's poison event is dead-lettered and
/// the events sent before and after it arrive, in order. Skipped when the
/// harness has no poison event.
pub async fn dead_letters_poison(h: &dyn Harness) {
    const TEST: &str = "dead_letters_poison";
    let Some(poison) = h.poison() else {
        eprintln!("{TEST}: skipped, the harness has no poison event");
        return;
    };
    let t = h.target();
    let id = t.id().clone();
    let n = notifier(t);
    // Not `TEST`: a harness may reject every key containing "poison".
    let p = prefix("dead_letters");
    let before = keys(&p, 0, 10);
    let after = keys(&p, 10, 10);
    send_all(TEST, &n, &before).await;
    let out = n
        .send(poison.clone())
        .await
        .unwrap_or_else(|e| panic!("{TEST}: Notifier::send(poison) failed: {e}"));
    assert_eq!(
        out.queued, 1,
        "{TEST}: the poison event was not queued: {out:?}"
    );
    send_all(TEST, &n, &after).await;
    let want: Vec<String> = before.iter().chain(&after).cloned().collect();
    let got = wait_for(h, TEST, &p, &want).await;

    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    let dead = loop {
        let dead = n.dead_letters(&id);
        if !dead.is_empty() || Instant::now() >= deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stats = n
        .stats()
        .into_iter()
        .find(|(t, _)| *t == id)
        .map(|(_, s)| s)
        .expect("the notifier has stats for its target");
    n.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        dead.len(),
        1,
        "{TEST}: expected the poison event dead-lettered once, dead letters: {dead:?}"
    );
    assert_eq!(
        dead[0].record, poison,
        "{TEST}: the dead letter is not the poison event"
    );
    assert_eq!(stats.dead_lettered, 1, "{TEST}: stats {stats:?}");
    assert_in_order_at_least_once(TEST, &got, &want);
}

/// Runs every suite function, in order, against `h`.
pub async fn run_all(h: &dyn Harness) {
    publishes(h).await;
    preserves_order(h).await;
    is_active_is_honest(h).await;
    survives_target_restart(h).await;
    dead_letters_poison(h).await;
}
