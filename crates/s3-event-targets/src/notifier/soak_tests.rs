//! The notifier soak (issue 20): a child process sends events through a
//! notifier with `queue_dir` to a target that appends what it receives to
//! a file, with random write and fsync failures injected into its queues
//! ([`Faults::random`], seeded per round, passed in `S3E_SOAK_FAULTS`), and
//! is SIGKILLed at a random moment, round after round, with the number of
//! senders changing between rounds (1, 2, 3: the lanes are moved on every
//! start). Then a clean start drains everything. Every event the children
//! saw acknowledged must have arrived, and per object key the first
//! arrivals must be in the order sent.
//!
//! `S3E_SOAK_SEED` repeats a run; the figures are printed with `soak:`.

use super::*;
use async_trait::async_trait;
use s3_event_core::{EventName, NotificationRule, TargetError};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const ROUNDS: usize = 21;
const CHILD_TEST: &str = "notifier::soak_tests::soak_child";
const KEYS: u64 = 16;
const TASKS: u64 = 8;
/// Injected failure rates, per million writes and fsyncs.
const WRITE_PPM: u32 = 3000;
const FSYNC_PPM: u32 = 3000;

fn id() -> TargetId {
    "arn:minio:sqs::soak:file".parse().unwrap()
}

fn record(key: u64, version: u64) -> EventRecord {
    EventRecord::from_slice(
        format!(
            r#"{{"eventName":"s3:ObjectCreated:Put","s3":{{"bucket":{{"name":"b"}},"object":{{"key":"k{key:02}","sequencer":"{version}"}}}}}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

/// Appends `<key> <version>` per received event to a file (one write per
/// batch, which survives the process being killed), failing transiently
/// now and then. Slower than the senders (5 ms per batch of at most 4), so
/// that a backlog is queued whenever a child is killed.
#[derive(Debug)]
struct FileTarget {
    id: TargetId,
    delay: Duration,
    file: Mutex<std::fs::File>,
    rng: Mutex<u64>,
}

impl FileTarget {
    fn new(path: &Path, seed: u64, delay: Duration) -> Arc<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        Arc::new(FileTarget {
            id: id(),
            delay,
            file: Mutex::new(file),
            rng: Mutex::new(seed | 1),
        })
    }
}

#[async_trait]
impl Target for FileTarget {
    fn id(&self) -> &TargetId {
        &self.id
    }
    async fn send_batch(&self, events: &[EventRecord]) -> Result<(), TargetError> {
        tokio::time::sleep(self.delay).await;
        if next(&mut lock(&self.rng)) % 100 < 3 {
            return Err(TargetError::transient(&self.id, "flaky"));
        }
        let mut out = String::new();
        for e in events {
            let v = serde_json::to_value(e).unwrap();
            let obj = &v["s3"]["object"];
            out.push_str(&format!(
                "{} {}\n",
                obj["key"].as_str().unwrap(),
                obj["sequencer"].as_str().unwrap()
            ));
        }
        lock(&self.file).write_all(out.as_bytes()).unwrap();
        Ok(())
    }
    async fn is_active(&self) -> Result<bool, TargetError> {
        Ok(true)
    }
    fn max_batch(&self) -> usize {
        4
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

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// A notifier with one [`FileTarget`] writing to `out`; in the children
/// (`faults` set) the target is slower than the senders.
fn notifier(
    dir: &Path,
    out: &Path,
    senders: usize,
    faults: Option<Arc<Faults>>,
) -> Result<Notifier> {
    let delay = Duration::from_millis(if faults.is_some() { 5 } else { 0 });
    let rules = RuleSet::new([NotificationRule::new(
        "r",
        EventName::ObjectCreatedPut.mask(),
        id(),
    )])
    .unwrap();
    let opts = TargetOptions {
        queue_dir: Some(dir.to_path_buf()),
        // Not what this test is about: a full queue refuses events.
        queue_limit: 1_000_000,
        senders,
        faults,
        retry: RetryPolicy {
            initial: Duration::from_millis(2),
            max: Duration::from_millis(20),
            ..RetryPolicy::default()
        },
        ..TargetOptions::default()
    };
    Notifier::builder()
        .rules(rules)
        .target(FileTarget::new(out, std::process::id().into(), delay), opts)
        .build()
}

/// The child: sends events from `TASKS` tasks (each owns the keys
/// `k % TASKS == task`, so per key the sends are sequential) until killed,
/// printing `acked <key> <version>` after each `send` returned `Ok` and
/// `faults <writes> <fsyncs>` (injected so far) every 20 ms.
#[test]
#[ignore = "run as a child process by notifier_soak_survives_kill9_with_faults"]
fn soak_child() {
    if std::env::var_os("S3E_SOAK_CHILD").is_none() {
        return;
    }
    let dir = PathBuf::from(env("S3E_SOAK_DIR"));
    let out = PathBuf::from(env("S3E_SOAK_OUT"));
    let start: u64 = env("S3E_SOAK_START").parse().unwrap();
    let senders: usize = env("S3E_SOAK_SENDERS").parse().unwrap();
    let faults = Faults::from_spec(&env("S3E_SOAK_FAULTS")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // Injected faults can fail the start (moving the lanes): try again.
        let n = loop {
            match notifier(&dir, &out, senders, Some(faults.clone())) {
                Ok(n) => {
                    println!("ready");
                    break Arc::new(n);
                }
                Err(e) => {
                    eprintln!("soak child: start failed, again: {e}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        let stdout = Arc::new(Mutex::new(std::io::stdout()));
        let report = {
            let (stdout, faults) = (stdout.clone(), faults.clone());
            tokio::spawn(async move {
                loop {
                    let (w, f) = faults.injected();
                    {
                        let mut o = lock(&stdout);
                        writeln!(o, "faults {w} {f}").unwrap();
                        o.flush().unwrap();
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let (n, stdout) = (n.clone(), stdout.clone());
                tokio::spawn(async move {
                    // A cap in case the parent never kills us.
                    let deadline = std::time::Instant::now() + Duration::from_secs(60);
                    let mut m = 0u64;
                    while std::time::Instant::now() < deadline {
                        let i = m * TASKS + task;
                        let (key, version) = (i % KEYS, start + i);
                        let line = match n.send(record(key, version)).await {
                            Ok(o) if o.queued == 1 => format!("acked {key} {version}"),
                            Ok(o) => format!("refused {key} {version} {o:?}"),
                            // Injected write or fsync failure: not acked.
                            Err(_) => format!("failed {key} {version}"),
                        };
                        {
                            let mut o = lock(&stdout);
                            writeln!(o, "{line}").unwrap();
                            o.flush().unwrap();
                        }
                        m += 1;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        report.abort();
    });
}

#[test]
fn notifier_soak_survives_kill9_with_faults() {
    if std::env::var_os("S3E_SOAK_CHILD").is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let queue_dir = dir.path().join("queue");
    let out = dir.path().join("delivered");
    let seed = std::env::var("S3E_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("soak: seed {seed} (set S3E_SOAK_SEED to repeat)");
    let mut rng = seed;
    let exe = std::env::current_exe().unwrap();

    let mut acked: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut failed = 0usize;
    let (mut injected_writes, mut injected_fsyncs) = (0u64, 0u64);
    let mut start = 0u64;
    for round in 0..ROUNDS {
        let senders = 1 + round % 3;
        let spec = format!(
            "seed={},write={WRITE_PPM},fsync={FSYNC_PPM}",
            seed.wrapping_add(round as u64)
        );
        let mut child = Command::new(&exe)
            .args([
                CHILD_TEST,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("S3E_SOAK_CHILD", "1")
            .env("S3E_SOAK_DIR", &queue_dir)
            .env("S3E_SOAK_OUT", &out)
            .env("S3E_SOAK_START", start.to_string())
            .env("S3E_SOAK_SENDERS", senders.to_string())
            .env("S3E_SOAK_FAULTS", &spec)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.ends_with("ready") {
                    let _ = ready_tx.send(());
                }
                lines.push(line);
            }
            lines
        });
        // Most rounds are killed while sending; every fourth at any moment
        // from its start on, often while it moves the lanes.
        let early = round % 4 == 3;
        if !early {
            ready
                .recv_timeout(Duration::from_secs(60))
                .expect("the child started");
        }
        let delay = if early {
            20 + next(&mut rng) % 281
        } else {
            100 + next(&mut rng) % 301
        };
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let lines = reader.join().unwrap();
        assert!(
            status.code().is_none(),
            "round {round}: the child exited by itself ({status})"
        );
        let (mut round_acked, mut round_failed, mut faults) = (0, 0, (0, 0));
        for line in &lines {
            // With one test thread libtest prints `test <name> ... `
            // without a newline before the test's own output.
            let line = ["acked ", "failed ", "refused ", "faults "]
                .iter()
                .filter_map(|p| line.rfind(p).map(|i| &line[i..]))
                .next()
                .unwrap_or("");
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["acked", k, v] => {
                    acked.insert((k.parse().unwrap(), v.parse().unwrap()));
                    round_acked += 1;
                }
                ["failed", ..] => round_failed += 1,
                ["refused", ..] => panic!("round {round}: {line}"),
                ["faults", w, f] => faults = (w.parse().unwrap(), f.parse().unwrap()),
                _ => {}
            }
        }
        failed += round_failed;
        injected_writes += faults.0;
        injected_fsyncs += faults.1;
        eprintln!(
            "soak: round {round}: {senders} sender(s), killed {delay} ms after {}, \
             {round_acked} acked, {round_failed} failed sends, \
             {} write and {} fsync failures injected",
            if early { "its start" } else { "it was ready" },
            faults.0,
            faults.1
        );
        // Versions are numbered from `start` by every child; the next
        // child starts above anything this one can have sent.
        start += 1 << 20;
    }

    // A clean start (two senders: the lanes move once more) drains it all.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let n = notifier(&queue_dir, &out, 2, None).unwrap();
        let started = std::time::Instant::now();
        while n.stats()[0].1.queued > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the clean start did not drain: {:?}",
                n.stats()[0].1
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        n.shutdown(Duration::from_secs(5)).await;
    });
    drop(rt);

    let text = std::fs::read_to_string(&out).unwrap();
    let mut arrivals: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut delivered = 0usize;
    for line in text.lines() {
        let (k, v) = line.split_once(' ').expect("a whole line");
        let k: u64 = k.strip_prefix('k').unwrap().parse().unwrap();
        arrivals.entry(k).or_default().push(v.parse().unwrap());
        delivered += 1;
    }
    let seen: BTreeSet<(u64, u64)> = arrivals
        .iter()
        .flat_map(|(k, vs)| vs.iter().map(move |v| (*k, *v)))
        .collect();
    let lost: Vec<_> = acked.difference(&seen).collect();
    let duplicates = delivered - seen.len();
    eprintln!(
        "soak: {ROUNDS} rounds, {} events acknowledged, {failed} sends failed by injected \
         faults, {delivered} deliveries ({duplicates} duplicates), {} lost; injected: \
         {injected_writes} write failures, {injected_fsyncs} fsync failures",
        acked.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost, first {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    for (k, versions) in &arrivals {
        let mut first = Vec::new();
        let mut had = BTreeSet::new();
        for v in versions {
            if had.insert(*v) {
                first.push(*v);
            }
        }
        for w in first.windows(2) {
            assert!(w[0] < w[1], "key k{k:02}: {} arrived after {}", w[1], w[0]);
        }
    }
    assert!(acked.len() > 1000, "too few events to mean anything");
    assert!(
        injected_writes > 0 && injected_fsyncs > 0,
        "no faults were injected"
    );
}
