//! Routing: `RuleSet` against 100 rules, over a mix of keys and event names,
//! with a naive loop (string compare of event names, `starts_with`,
//! `ends_with`) as the baseline in the same group.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use s3_event::core::{Arn, EventMask, NotificationConfiguration, NotificationRule, RuleSet};

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
    common::tenant_rules(
        |i| targets[i % targets.len()].clone(),
        (
            "restores",
            EventMask::from_pattern("s3:ObjectRestore:*").unwrap(),
        ),
    )
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
    let work = common::workload(4096);
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
