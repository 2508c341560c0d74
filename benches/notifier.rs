//! Delivery: a [`Notifier`] in async mode with 100 rules over 10 in-memory
//! targets (each counts events and returns `Ok`, `max_batch` 256).
//!
//! - `notifier_async_10_targets`: each iteration sends 10 000 pre-built
//!   records (event name parsed, key decoded, routed, cloned per extra
//!   target, queued) and waits until the targets received every queued
//!   delivery.
//! - `rule_set_match_into` (baseline): `RuleSet::match_into` alone over the
//!   same (event name, decoded key) pairs: routing without queues.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod common;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use s3_event::core::{
    EventMask, EventName, EventRecord, NotificationRule, RuleSet, Target, TargetError, TargetId,
};
use s3_event::targets::{DeliveryMode, Notifier, TargetOptions};

const TARGETS: usize = 10;
const RECORDS: usize = 10_000;

/// Counts the events it receives.
#[derive(Debug)]
struct Counting {
    id: TargetId,
    seen: AtomicU64,
}

// `Target` is an `#[async_trait]` trait; implemented by hand (boxed future)
// so the bench needs no extra dependency.
impl Target for Counting {
    fn id(&self) -> &TargetId {
        &self.id
    }

    fn send_batch<'a, 'b, 'f>(
        &'a self,
        events: &'b [EventRecord],
    ) -> Pin<Box<dyn Future<Output = Result<(), TargetError>> + Send + 'f>>
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            self.seen.fetch_add(events.len() as u64, Ordering::Release);
            Ok(())
        })
    }

    fn is_active<'a, 'f>(
        &'a self,
    ) -> Pin<Box<dyn Future<Output = Result<bool, TargetError>> + Send + 'f>>
    where
        'a: 'f,
        Self: 'f,
    {
        Box::pin(async { Ok(true) })
    }

    fn max_batch(&self) -> usize {
        256
    }
}

fn target_id(i: usize) -> TargetId {
    format!("arn:minio:sqs::{i}:webhook").parse().unwrap()
}

/// 100 rules, 20 tenants with 5 rules each (as in `benches/rules.rs`), spread
/// over 10 destinations. The fifth rule of each tenant ("audit") overlaps
/// the others, so many records reach two targets.
fn rules() -> Vec<NotificationRule> {
    let audit = EventMask::from_pattern("s3:ObjectCreated:Put").unwrap()
        | EventName::ObjectCreatedCompleteMultipartUpload.mask()
        | EventMask::from_pattern("s3:ObjectRemoved:*").unwrap()
        | EventMask::from_pattern("s3:ObjectRestore:*").unwrap();
    common::tenant_rules(|i| target_id(i % TARGETS).into(), ("audit", audit))
}

/// The shared workload as records.
fn workload() -> Vec<EventRecord> {
    common::workload(RECORDS)
        .into_iter()
        .map(|(e, key)| {
            let json = format!(
                r#"{{"eventName":"{e}","s3":{{"bucket":{{"name":"b"}},"object":{{"key":"{key}"}}}}}}"#
            );
            EventRecord::from_slice(json.as_bytes()).unwrap()
        })
        .collect()
}

fn delivered(targets: &[Arc<Counting>]) -> u64 {
    targets.iter().map(|t| t.seen.load(Ordering::Acquire)).sum()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let set = RuleSet::new(rules()).unwrap();
    let records = workload();
    let routed: Vec<(EventName, String)> = records
        .iter()
        .map(|r| (r.parsed_event_name().unwrap(), r.decoded_key().unwrap()))
        .collect();

    let targets: Vec<Arc<Counting>> = (0..TARGETS)
        .map(|i| {
            Arc::new(Counting {
                id: target_id(i),
                seen: AtomicU64::new(0),
            })
        })
        .collect();
    let notifier = {
        let _guard = rt.enter();
        let mut builder = Notifier::builder()
            .rules(set.clone())
            .mode(DeliveryMode::Async);
        for t in &targets {
            builder = builder.target(
                Arc::clone(t) as Arc<dyn Target>,
                TargetOptions {
                    queue_limit: 4 * RECORDS,
                    ..TargetOptions::default()
                },
            );
        }
        builder.build().unwrap()
    };

    // The workload really fans out: some records reach several targets.
    let mut out = Vec::new();
    let (mut hits, mut multi) = (0, 0);
    for (event, key) in &routed {
        set.match_into(*event, key, &mut out);
        hits += out.len();
        multi += usize::from(out.len() > 1);
    }
    assert!(
        multi > 0 && hits > RECORDS / 2,
        "{hits} hits, {multi} multi"
    );

    let mut group = c.benchmark_group("notifier");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("notifier_async_10_targets", |b| {
        b.iter_batched(
            || records.clone(),
            |batch| {
                rt.block_on(async {
                    let before = delivered(&targets);
                    let mut queued = 0u64;
                    for record in batch {
                        let outcome = notifier.send(record).await.unwrap();
                        assert_eq!(outcome.dropped, 0);
                        queued += outcome.queued as u64;
                    }
                    let want = before + queued;
                    while delivered(&targets) < want {
                        tokio::task::yield_now().await;
                    }
                    black_box(queued)
                })
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("rule_set_match_into", |b| {
        let mut out = Vec::with_capacity(8);
        b.iter(|| {
            let mut hits = 0;
            for (event, key) in &routed {
                set.match_into(*event, key, &mut out);
                hits += out.len();
            }
            black_box(hits)
        })
    });
    group.finish();

    let stats = notifier.stats();
    assert!(stats.iter().all(|(_, s)| s.dropped == 0 && s.failed == 0));
    rt.block_on(notifier.shutdown(Duration::from_secs(5)));
}

criterion_group!(benches, bench);
criterion_main!(benches);
