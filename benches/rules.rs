//! Routing: `RuleSet` against 100 rules, over a mix of keys and event names,
//! with a naive loop (string compare of event names, `starts_with`,
//! `ends_with`) as the baseline in the same group.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use s3_event::core::{
    Arn, EventMask, EventName, NotificationConfiguration, NotificationRule, RuleSet,
};

/// 100 rules that AWS would accept (no overlaps): 20 tenants with 5 rules
/// each, spread over 8 destinations.
fn rules() -> Vec<NotificationRule> {
    let targets: Vec<Arn> = (0..8)
        .map(|i| {
            if i % 2 == 0 {
                format!("arn:minio:sqs::{i}:webhook").parse().unwrap()
            } else {
                format!("arn:aws:sqs:us-east-1:123456789012:queue-{i}")
                    .parse()
                    .unwrap()
            }
        })
        .collect();
    let created = EventMask::from_pattern("s3:ObjectCreated:*").unwrap();
    let removed = EventMask::from_pattern("s3:ObjectRemoved:*").unwrap();
    let put = EventName::ObjectCreatedPut | EventName::ObjectCreatedCompleteMultipartUpload;
    let mut rules = Vec::new();
    for t in 0..20 {
        let target = |k: usize| targets[(t + k) % targets.len()].clone();
        let base = format!("tenant-{t:02}/");
        let id = |what: &str| format!("{what}-{t:02}");
        rules.push(
            NotificationRule::new(id("images"), created, target(0))
                .with_prefix(format!("{base}images/"))
                .with_suffix(".jpg"),
        );
        rules.push(
            NotificationRule::new(id("videos"), created, target(1))
                .with_prefix(format!("{base}videos/"))
                .with_suffix(".mp4"),
        );
        rules.push(
            NotificationRule::new(id("logs"), put, target(2))
                .with_prefix(format!("{base}logs/"))
                .with_suffix(".gz"),
        );
        rules.push(
            NotificationRule::new(id("deletes"), removed, target(3)).with_prefix(base.clone()),
        );
        rules.push(
            NotificationRule::new(
                id("restores"),
                EventMask::from_pattern("s3:ObjectRestore:*").unwrap(),
                target(4),
            )
            .with_prefix(base),
        );
    }
    rules
}

/// A realistic mix: most events are puts, keys hit and miss.
fn workload() -> Vec<(EventName, String)> {
    let events = [
        EventName::ObjectCreatedPut,
        EventName::ObjectCreatedPut,
        EventName::ObjectCreatedPut,
        EventName::ObjectCreatedPut,
        EventName::ObjectCreatedCompleteMultipartUpload,
        EventName::ObjectCreatedCopy,
        EventName::ObjectRemovedDelete,
        EventName::ObjectRemovedDeleteMarkerCreated,
        EventName::ObjectAccessedGet,
        EventName::ObjectRestoreCompleted,
    ];
    let dirs = ["images", "videos", "logs", "tmp", "images/thumbs"];
    let exts = [".jpg", ".mp4", ".gz", ".txt", ".png"];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as usize
    };
    (0..4096)
        .map(|_| {
            let e = events[next() % events.len()];
            let key = match next() % 8 {
                // Keys outside every tenant.
                0 => format!(
                    "shared/{}/file-{}{}",
                    dirs[next() % 5],
                    next() % 10_000,
                    exts[next() % 5]
                ),
                _ => format!(
                    "tenant-{:02}/{}/2025/06/{:02}/object-{}{}",
                    next() % 24,
                    dirs[next() % 5],
                    next() % 30,
                    next() % 100_000,
                    exts[next() % 5]
                ),
            };
            (e, key)
        })
        .collect()
}

/// The baseline: each rule's event names expanded to strings, compared with
/// the record's name as a string.
struct NaiveRule {
    names: Vec<String>,
    prefix: String,
    suffix: String,
    target: usize,
}

fn bench(c: &mut Criterion) {
    let rules = rules();
    NotificationConfiguration::new(rules.clone())
        .validate()
        .expect("the bench rules are valid");
    let set = RuleSet::new(rules.clone()).unwrap();
    let naive: Vec<NaiveRule> = rules
        .iter()
        .map(|r| NaiveRule {
            names: r.events.iter().map(|n| n.to_string()).collect(),
            prefix: r.prefix().to_owned(),
            suffix: r.suffix().to_owned(),
            target: set.targets().iter().position(|t| *t == r.target).unwrap(),
        })
        .collect();
    let work = workload();
    let work_named: Vec<(String, &str)> = work
        .iter()
        .map(|(e, k)| (e.to_string(), k.as_str()))
        .collect();

    // Both sides route the same way.
    let mut out = Vec::new();
    for ((event, key), (event_name, _)) in work.iter().zip(&work_named) {
        set.match_into(*event, key, &mut out);
        out.sort_unstable();
        let mut want: Vec<usize> = naive
            .iter()
            .filter(|r| {
                r.names.iter().any(|n| n == event_name)
                    && key.starts_with(&r.prefix)
                    && key.ends_with(&r.suffix)
            })
            .map(|r| r.target)
            .collect();
        want.sort_unstable();
        want.dedup();
        assert_eq!(out, want, "{event_name} {key}");
    }

    let mut group = c.benchmark_group("rules");
    group.throughput(Throughput::Elements(work.len() as u64));
    group.bench_function("rule_set_100_rules", |b| {
        let mut out = Vec::with_capacity(8);
        b.iter(|| {
            let mut hits = 0;
            for (event, key) in &work {
                set.match_into(*event, key, &mut out);
                hits += out.len();
            }
            black_box(hits)
        })
    });
    group.bench_function("rule_set_matches_iter_100_rules", |b| {
        b.iter(|| {
            let mut hits = 0;
            for (event, key) in &work {
                hits += set.matches(*event, key).count();
            }
            black_box(hits)
        })
    });
    group.bench_function("naive_string_loop_100_rules", |b| {
        let mut out: Vec<usize> = Vec::with_capacity(8);
        b.iter(|| {
            let mut hits = 0;
            for (event_name, key) in &work_named {
                out.clear();
                for r in &naive {
                    if r.names.iter().any(|n| n == event_name)
                        && key.starts_with(&r.prefix)
                        && key.ends_with(&r.suffix)
                        && !out.contains(&r.target)
                    {
                        out.push(r.target);
                    }
                }
                hits += out.len();
            }
            black_box(hits)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
