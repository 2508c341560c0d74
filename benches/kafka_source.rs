//! The Kafka source's throughput beside a raw consumer, messages/s, in the
//! same run on the same topic:
//!
//! - `kafka_source/raw_consumer`: an rdkafka `StreamConsumer` in a fresh
//!   group reads every message of the topic and sums the payload sizes:
//!   the ceiling.
//! - `kafka_source/source_to_memory`: the Kafka source in a fresh group
//!   reads the same messages into the in-memory store (NDJSON, no
//!   compression, 1000 records per object, offsets committed after each
//!   upload).
//!
//! Both are timed from the first message taken to the last (the group
//! join, a few seconds on tansu, is left out: `iter_custom`). Over the same
//! span each run also takes the CPU time of this process (its threads
//! alive at the end: librdkafka's, the runtime's, the bench's own), and
//! after each function the median of its runs is printed (`cpu per run`):
//! it varies less than the time, which also waits on the broker's fetches,
//! and the broker's own CPU time is not in it. The topic
//! (3 partitions, 100 000 JSON values of about 150 bytes) is produced
//! once. Broker: `S3E_KAFKA_BROKERS` (default `127.0.0.1:19092`, tansu from
//! `scripts/services.sh`). Run with
//! `cargo bench --bench kafka_source --features kafka-source`.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use s3_event::sink::kafka_source::KafkaSource;
use s3_event::sink::Compression;

const PARTITIONS: i32 = 3;

/// This process's CPU time so far, every thread's (Linux:
/// `/proc/self/task/*/schedstat`, nanoseconds); zero where there is none.
fn cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .sum()
}

/// Each thread's CPU time so far, by thread name, in the process `pid`
/// (`self` or a number); the total under the name `"all"`.
fn threads(pid: &str) -> std::collections::BTreeMap<String, Duration> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.filter_map(|t| t.ok()) {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let Some(ns) = std::fs::read_to_string(t.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        else {
            continue;
        };
        for name in [comm.trim().to_owned(), "all".to_owned()] {
            *out.entry(name).or_insert(Duration::ZERO) += Duration::from_nanos(ns);
        }
    }
    out
}

/// With `S3E_BENCH_THREADS` set: the processes whose CPU time each span
/// breaks down by thread, this one and those `S3E_BENCH_PEERS` names
/// (pids, comma-separated: the broker's).
fn watched() -> Vec<String> {
    if std::env::var_os("S3E_BENCH_THREADS").is_none() {
        return Vec::new();
    }
    let peers = std::env::var("S3E_BENCH_PEERS").unwrap_or_default();
    std::iter::once("self".to_owned())
        .chain(
            peers
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_owned),
        )
        .collect()
}

type Breakdown = Vec<std::collections::BTreeMap<String, Duration>>;

/// The breakdown at a span's start.
static THREADS: std::sync::Mutex<Breakdown> = std::sync::Mutex::new(Vec::new());

/// The CPU time of each run since the last [`print_cpu`].
static CPU: std::sync::Mutex<Vec<Duration>> = std::sync::Mutex::new(Vec::new());

/// A timed span's start: the time and the CPU time.
fn span_start() -> (Instant, Duration) {
    *THREADS.lock().unwrap() = watched().iter().map(|p| threads(p)).collect();
    (Instant::now(), cpu())
}

/// The time since `start`; the CPU time since goes to [`CPU`].
fn span_end((t0, cpu0): (Instant, Duration)) -> Duration {
    let took = t0.elapsed();
    CPU.lock().unwrap().push(cpu().saturating_sub(cpu0));
    let before = std::mem::take(&mut *THREADS.lock().unwrap());
    for (pid, before) in watched().iter().zip(before) {
        let line: Vec<String> = threads(pid)
            .into_iter()
            .map(|(name, t)| {
                let d = t.saturating_sub(before.get(&name).copied().unwrap_or_default());
                format!("{name} {:.1}", d.as_secs_f64() * 1e3)
            })
            .filter(|s| !s.ends_with(" 0.0"))
            .collect();
        // The span's ends on the monotonic clock (`perf record -k
        // CLOCK_MONOTONIC` then keeps only the spans: `perf report --time`).
        eprintln!(
            "span {took:.1?} from {t0:?} to {:?}: {pid} cpu ms: {}",
            Instant::now(),
            line.join(", ")
        );
    }
    took
}

fn print_cpu(name: &str) {
    let mut runs = std::mem::take(&mut *CPU.lock().unwrap());
    runs.sort();
    if let Some(median) = runs.get(runs.len() / 2) {
        println!(
            "{name}: cpu per run {median:.1?} (median of {}), {:.2} us per message",
            runs.len(),
            median.as_secs_f64() * 1e6 / messages() as f64
        );
    }
}

/// Messages in the topic: 100 000 under `cargo bench`; 5 000 when the
/// bench runs once in test mode (`cargo test --benches`), which only
/// checks that it works.
fn messages() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        100_000
    } else {
        5_000
    }
}

fn brokers() -> String {
    std::env::var("S3E_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

fn unique(what: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "s3e-bench-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn produce(topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let t = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1));
    for r in admin
        .create_topics([&t], &AdminOptions::new())
        .await
        .expect("the broker at S3E_KAFKA_BROKERS creates the bench topic")
    {
        r.unwrap();
    }
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .unwrap();
    let mut pending = Vec::with_capacity(messages());
    for n in 0..messages() {
        let v = format!(
            r#"{{"n":{n},"eventName":"s3:ObjectCreated:Put","bucket":"photos","key":"2024/03/05/img-{n:08}.jpg","size":{},"etag":"d41d8cd98f00b204e9800998ecf8427e"}}"#,
            n * 37 % 100_000
        );
        let rec = FutureRecord::<(), String>::to(topic)
            .partition((n % PARTITIONS as usize) as i32)
            .payload(&v);
        pending.push(
            p.send_result(rec)
                .expect("the producer queue takes the message"),
        );
    }
    for f in pending {
        f.await.unwrap().unwrap();
    }
}

/// Reads the whole topic with a raw consumer; the time from the first
/// message to the last.
async fn raw(topic: &str) -> Duration {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("raw"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut bytes = 0usize;
    let mut first = None;
    for _ in 0..messages() {
        let m = c.recv().await.unwrap();
        first.get_or_insert_with(span_start);
        bytes += m.payload().map_or(0, <[u8]>::len);
    }
    std::hint::black_box(bytes);
    span_end(first.unwrap())
}

/// Runs the source into memory until it has taken every message; the
/// time from the first message to the last.
async fn source(topic: &str) -> Duration {
    let store = Arc::new(object_store::memory::InMemory::new());
    let s = KafkaSource::builder()
        .with_brokers(brokers())
        .with_group_id(unique("source"))
        .with_topics([topic])
        .with_store(store)
        .with_compression(Compression::None)
        .with_flush_size(1000)
        .build()
        .unwrap();
    let stats = s.stats_handle();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(s.run(async {
        rx.await.ok();
    }));
    let mut first = None;
    loop {
        let n = stats.snapshot().messages;
        if n > 0 {
            first.get_or_insert_with(span_start);
        }
        if n as usize >= messages() {
            break;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let took = span_end(first.unwrap());
    tx.send(()).unwrap();
    let totals = run.await.unwrap().unwrap();
    assert_eq!(totals.records as usize, messages());
    if std::env::var_os("S3E_BENCH_VERBOSE").is_some() {
        eprintln!(
            "source: {} objects, {} commits (mean {:?}, max {:?}), took {took:?}",
            totals.objects, totals.commits, totals.commit_latency_mean, totals.commit_latency_max
        );
    }
    took
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let topic = unique("topic");
    rt.block_on(produce(&topic));
    let mut g = c.benchmark_group("kafka_source");
    g.throughput(Throughput::Elements(messages() as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(1));
    g.measurement_time(Duration::from_secs(1));
    g.bench_function("raw_consumer", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| rt.block_on(raw(&topic)))
                .sum::<Duration>()
        })
    });
    print_cpu("kafka_source/raw_consumer");
    g.bench_function("source_to_memory", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| rt.block_on(source(&topic)))
                .sum::<Duration>()
        })
    });
    print_cpu("kafka_source/source_to_memory");
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
