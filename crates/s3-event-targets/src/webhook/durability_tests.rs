//! kill -9 durability: a child process sends events through a durable
//! (`queue_dir`) webhook pipeline whose receiver is down and is SIGKILLed at
//! a random moment, 20 times over; then a receiver comes up and every event
//! the children saw acknowledged must arrive, in order, at least once.

use super::*;
use crate::notifier::{DeliveryMode, Notifier, RetryPolicy, TargetOptions};
use axum::body::Bytes;
use axum::http::Method;
use axum::Router;
use s3_event_core::{EventName, NotificationRule, RuleSet};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const ROUNDS: usize = 20;
const CHILD_TEST: &str = "webhook::durability_tests::child";

/// Proxy variables removed from the child's environment so that its
/// requests to 127.0.0.1 go straight to loopback.
const PROXY_VARS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

fn id() -> TargetId {
    "arn:minio:sqs::1:webhook".parse().unwrap()
}

fn key(n: u64) -> String {
    format!("obj-{n:06}")
}

fn record(n: u64) -> EventRecord {
    let key = key(n);
    EventRecord::from_slice(
        format!(r#"{{"eventName":"s3:ObjectCreated:Put","s3":{{"bucket":{{"name":"photos"}},"object":{{"key":"{key}"}}}}}}"#)
            .as_bytes(),
    )
    .unwrap()
}

/// A notifier in async mode with one webhook target to
/// `http://127.0.0.1:{port}/` queued durably in `dir`.
fn notifier(dir: &Path, port: u16) -> Notifier {
    let mut c = WebhookConfig::new(format!("http://127.0.0.1:{port}/"));
    c.client.request_timeout = Some(Duration::from_secs(2));
    let t = Arc::new(WebhookTarget::new(id(), c).unwrap());
    let rules = RuleSet::new([NotificationRule::new(
        "r",
        EventName::ObjectCreatedPut.mask(),
        id(),
    )])
    .unwrap();
    let opts = TargetOptions {
        queue_dir: Some(dir.to_path_buf()),
        retry: RetryPolicy {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(50),
            ..RetryPolicy::default()
        },
        ..TargetOptions::default()
    };
    Notifier::builder()
        .rules(rules)
        .target(t, opts)
        .mode(DeliveryMode::Async)
        .build()
        .unwrap()
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set"))
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The child: sends records numbered from `S3E_DUR_START` until killed,
/// printing `acked <n>` after each `send` returned. Runs only when spawned
/// by [`durability_survives_sigkill`].
#[test]
#[ignore = "run as a child process by durability_survives_sigkill"]
fn child() {
    if std::env::var_os("S3E_DUR_CHILD").is_none() {
        return;
    }
    let dir = std::path::PathBuf::from(std::env::var("S3E_DUR_DIR").unwrap());
    let port = u16::try_from(env_u64("S3E_DUR_PORT")).unwrap();
    let start = env_u64("S3E_DUR_START");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let n = notifier(&dir, port);
        // A cap in case the parent never kills us.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut out = std::io::stdout();
        let mut i = start;
        while Instant::now() < deadline {
            let outcome = n.send(record(i)).await.unwrap();
            assert_eq!(outcome.queued, 1, "record {i} not queued: {outcome:?}");
            writeln!(out, "acked {i}").unwrap();
            out.flush().unwrap();
            i += 1;
        }
    });
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

#[derive(Default)]
struct Received {
    /// Decoded sequence numbers of POSTed bodies, in arrival order.
    numbers: Vec<u64>,
    /// Bodies that were not a valid MinIO envelope of one of our records.
    corrupt: Vec<String>,
}

/// The sequence number in a MinIO envelope body, if it is a valid one.
fn decode(body: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    if v["EventName"] != "s3:ObjectCreated:Put" {
        return None;
    }
    let records = v["Records"].as_array()?;
    if records.len() != 1 {
        return None;
    }
    let obj = records[0]["s3"]["object"]["key"].as_str()?;
    let n: u64 = obj.strip_prefix("obj-")?.parse().ok()?;
    if obj != key(n) || v["Key"].as_str()? != format!("photos/{obj}") {
        return None;
    }
    Some(n)
}

#[test]
fn durability_survives_sigkill() {
    if std::env::var_os("S3E_DUR_CHILD").is_some() {
        return;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let seed = std::env::var("S3E_DUR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("durability: seed {seed} (set S3E_DUR_SEED to repeat), port {port}");
    let mut rng = seed;
    let exe = std::env::current_exe().unwrap();

    let mut acked = BTreeSet::new();
    let mut start = 0u64;
    for round in 0..ROUNDS {
        let mut cmd = Command::new(&exe);
        cmd.args([
            CHILD_TEST,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("S3E_DUR_CHILD", "1")
        .env("S3E_DUR_DIR", dir.path())
        .env("S3E_DUR_PORT", port.to_string())
        .env("S3E_DUR_START", start.to_string())
        .env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
        for v in PROXY_VARS {
            cmd.env_remove(v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // With one test thread libtest prints `test <name> ... `
                // without a newline before the test's own output.
                if let Some(i) = line.rfind("acked ") {
                    got.push(line[i + 6..].trim().parse::<u64>().unwrap());
                }
            }
            got
        });
        let delay = 50 + next(&mut rng) % 251;
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let got = reader.join().unwrap();
        assert!(
            status.code().is_none(),
            "round {round}: the child exited by itself ({status}) instead of being killed"
        );
        // The child acks consecutive numbers from `start`.
        for (i, n) in got.iter().enumerate() {
            assert_eq!(*n, start + i as u64, "round {round}: acks out of sequence");
        }
        if let Some(&max) = got.last() {
            start = max + 1;
        }
        eprintln!(
            "durability: round {round}: killed after {delay} ms, {} acked",
            got.len()
        );
        acked.extend(got);
    }
    // A record appended but not acked can be at most `start` (the number
    // the next round would have used).
    let highest_possible = start;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let received: Arc<Mutex<Received>> = Arc::default();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let r = received.clone();
        let app = Router::new().fallback(move |method: Method, body: Bytes| {
            let r = r.clone();
            async move {
                if method == Method::POST {
                    let mut r = r.lock().unwrap();
                    match decode(&body) {
                        Some(n) => r.numbers.push(n),
                        None => r.corrupt.push(String::from_utf8_lossy(&body).into_owned()),
                    }
                }
                ""
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let n = notifier(dir.path(), port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let all = {
                let r = received.lock().unwrap();
                let seen: BTreeSet<u64> = r.numbers.iter().copied().collect();
                acked.is_subset(&seen)
            };
            if all || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n.shutdown(Duration::from_secs(5)).await;
    });
    drop(rt);

    let r = received.lock().unwrap();
    let seen: BTreeSet<u64> = r.numbers.iter().copied().collect();
    let missing: Vec<u64> = acked.difference(&seen).copied().collect();
    let mut deduped = r.numbers.clone();
    deduped.dedup();
    let duplicates = r.numbers.len() - deduped.len();
    eprintln!(
        "durability: {ROUNDS} rounds, {} acked, {} delivered, {duplicates} duplicates",
        acked.len(),
        r.numbers.len()
    );
    assert!(r.corrupt.is_empty(), "corrupt bodies: {:?}", r.corrupt);
    assert!(
        missing.is_empty(),
        "{} acked events never arrived, first {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    for w in deduped.windows(2) {
        assert!(
            w[0] < w[1],
            "out of order: {} arrived before {}",
            w[0],
            w[1]
        );
    }
    assert!(
        deduped.last().is_none_or(|&n| n <= highest_possible),
        "a number that was never sent arrived: {:?} > {highest_possible}",
        deduped.last()
    );
    assert!(!acked.is_empty(), "no round acked anything");
}
