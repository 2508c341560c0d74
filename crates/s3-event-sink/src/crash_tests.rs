//! kill -9: a child process pushes numbered events through a spooled sink
//! under load and is SIGKILLed at a random moment, 20 times over. After every
//! round no object in the bucket is corrupt, no event is in it twice and no
//! object seen before has changed; at the end (one more start that recovers
//! the spool) every event whose `push_batch` returned is in the bucket
//! exactly once. Run against a local directory and (feature `integration`)
//! the real S3-compatible server; the soak variant also injects random
//! short writes and failed fsyncs into the spool (`S3E_CRASH_FAULTS`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use s3_event_core::{Granularity, TimePartitioner, TimeSource};
use serde_json::{json, Value};

use crate::conformance_tests::objects;
use crate::{decode, Sink, SpoolFsync, SpoolOptions, StoreConfig};

const ROUNDS: u64 = 20;
const CHILD_TEST: &str = "crash_tests::child";

/// Proxy variables removed from the child's environment (loopback only).
const PROXY_VARS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

fn store(spec: &str) -> Arc<dyn ObjectStore> {
    match spec.strip_prefix("local:") {
        Some(dir) => StoreConfig::Local { dir: dir.into() }.build().unwrap(),
        #[cfg(feature = "integration")]
        None if spec == "s3" => StoreConfig::S3(crate::conformance_tests::s3_config())
            .build()
            .unwrap(),
        None => panic!("unknown store {spec}"),
    }
}

fn sink(
    spool: &str,
    store: Arc<dyn ObjectStore>,
    prefix: &str,
    fsync: SpoolFsync,
    shards: usize,
    background: bool,
    faults: Option<Arc<s3_event_core::log::Faults>>,
) -> Sink {
    let mut opts = SpoolOptions::new(spool)
        .with_fsync(fsync)
        .with_segment_bytes(16 * 1024);
    if let Some(f) = faults {
        opts = opts.with_faults(f);
    }
    let p = TimePartitioner::new(Granularity::Hourly).with_time_source(TimeSource::Event {
        fallback_to_processing: false,
    });
    let p: Arc<dyn s3_event_core::Partitioner> = Arc::new(p);
    // With injected faults, the close frames a start writes for what the
    // last run left open can fail like any write: the start is refused
    // (nothing written) and tried again, as a supervisor would.
    let mut attempt = 0;
    loop {
        let built = Sink::builder()
            .with_store(Arc::clone(&store))
            .with_prefix(prefix)
            .with_partitioner(Arc::clone(&p))
            .with_flush_size(37)
            .with_shards(shards)
            .with_background_compression(background)
            .with_flush_interval(Duration::from_millis(50))
            .with_spool(opts.clone())
            .build();
        match built {
            Ok(sink) => return sink,
            Err(e @ crate::Error::Spool { .. }) if opts.faults.is_some() && attempt < 5 => {
                eprintln!("crash child: start refused ({e}); starting again");
                attempt += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn event(n: u64) -> Value {
    json!({ "n": n, "eventTime": format!("2024-03-05T1{}:00:00Z", n % 3), "pad": "x".repeat((n % 50) as usize) })
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// The child: two tasks push events numbered from `S3E_CRASH_START0` and
/// `S3E_CRASH_START1` in batches of 1 to 7 until killed, printing
/// `acked <task> <first> <last>` after each `push_batch` returned and
/// `failed <task> <first> <last>` when it failed (with injected faults; the
/// batch is not retried), and now and then `faults <writes> <fsyncs>`
/// injected so far (two pushers use both of the sink's shards). Runs only
/// when spawned by a crash test.
#[test]
#[ignore = "run as a child process by the crash tests"]
fn child() {
    if std::env::var_os("S3E_CRASH_CHILD").is_none() {
        return;
    }
    let starts: [u64; 2] = [0, 1].map(|t| var(&format!("S3E_CRASH_START{t}")).parse().unwrap());
    let fsync = match starts[0] % 3 {
        0 => SpoolFsync::Always,
        1 => SpoolFsync::Interval(Duration::from_millis(10)),
        _ => SpoolFsync::Never,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let faults = std::env::var("S3E_CRASH_FAULTS")
        .ok()
        .map(|spec| s3_event_core::log::Faults::from_spec(&spec).unwrap());
    rt.block_on(async move {
        let s = Arc::new(sink(
            &var("S3E_CRASH_SPOOL"),
            store(&var("S3E_CRASH_STORE")),
            &var("S3E_CRASH_PREFIX"),
            fsync,
            var("S3E_CRASH_SHARDS").parse().unwrap(),
            var("S3E_CRASH_BACKGROUND") == "1",
            faults.clone(),
        ));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut tasks = Vec::new();
        for (t, start) in starts.into_iter().enumerate() {
            let s = Arc::clone(&s);
            let faults = faults.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = start;
                let mut pushes = 0u64;
                while Instant::now() < deadline {
                    let n = 1 + i % 7;
                    let batch: Vec<Value> = (i..i + n).map(event).collect();
                    let word = match s.push_batch(&batch).await {
                        Ok(()) => "acked",
                        Err(crate::Error::Spool { .. }) if faults.is_some() => "failed",
                        Err(e) => panic!("{e}"),
                    };
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{word} {t} {i} {}", i + n - 1).unwrap();
                    pushes += 1;
                    if let (Some(f), 0) = (&faults, pushes % 50) {
                        let (w, f) = f.injected();
                        writeln!(out, "faults {w} {f}").unwrap();
                    }
                    out.flush().unwrap();
                    i += n;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
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

/// Every event number in the bucket with its count; panics on a corrupt
/// object, or on one whose bytes differ from those `known` has for its key
/// (an object overwritten), and adds the new ones to `known`.
async fn census(
    store: &dyn ObjectStore,
    prefix: &str,
    known: &mut BTreeMap<String, Vec<u8>>,
) -> (BTreeMap<u64, u32>, usize) {
    let objs = objects(store, prefix).await;
    let mut seen = BTreeMap::new();
    for (k, b) in &objs {
        match known.get(k) {
            Some(before) => assert!(before == b, "object {k} was overwritten with other content"),
            None => {
                known.insert(k.clone(), b.clone());
            }
        }
        let d = decode(k, b).unwrap_or_else(|e| panic!("object {k} is corrupt: {e}"));
        assert!(d.bad.is_empty(), "object {k} has bad records: {:?}", d.bad);
        for r in d.records {
            assert_eq!(r, event(r["n"].as_u64().unwrap()), "{k}: a record changed");
            *seen.entry(r["n"].as_u64().unwrap()).or_insert(0) += 1;
        }
    }
    (seen, objs.len())
}

fn run(store_spec: &str, shards: usize) {
    run_with(store_spec, shards, false, None);
}

/// Acknowledged and failed ranges `[a, b)` of one pusher's numbers, read
/// from the child's output, and the injected faults it last reported.
#[derive(Default)]
struct ChildLog {
    acked: Vec<(u64, u64)>,
    failed: Vec<(u64, u64)>,
    last: [Option<u64>; 2],
    faults: (u64, u64),
}

fn run_with(store_spec: &str, shards: usize, background: bool, faults: Option<(u32, u32)>) {
    if std::env::var_os("S3E_CRASH_CHILD").is_some() {
        return;
    }
    let spool = tempfile::tempdir().unwrap();
    let prefix = format!(
        "crash-{:x}/",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let seed = std::env::var("S3E_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash {store_spec}: seed {seed} (set S3E_CRASH_SEED to repeat)");
    let mut rng = seed;
    let exe = std::env::current_exe().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let check_store = store(store_spec);

    // Acknowledged ranges; each round starts 7 (the largest batch) past the
    // last, so the batch in flight at a kill never shares numbers with the
    // next round's.
    let mut acked_ranges: Vec<(u64, u64)> = Vec::new();
    let mut failed_ranges: Vec<(u64, u64)> = Vec::new();
    let mut known = BTreeMap::new();
    let (mut injected_writes, mut injected_fsyncs) = (0, 0);
    // The second pusher's numbers start far above the first's.
    let mut next_start = [0u64, 1 << 32];
    for round in 0..ROUNDS {
        let start = next_start;
        let mut cmd = Command::new(&exe);
        cmd.args([
            CHILD_TEST,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("S3E_CRASH_CHILD", "1")
        .env("S3E_CRASH_SPOOL", spool.path())
        .env("S3E_CRASH_STORE", store_spec)
        .env("S3E_CRASH_SHARDS", shards.to_string())
        .env("S3E_CRASH_BACKGROUND", if background { "1" } else { "0" })
        .env("S3E_CRASH_PREFIX", &prefix)
        .env("S3E_CRASH_START0", start[0].to_string())
        .env("S3E_CRASH_START1", start[1].to_string())
        .env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
        if let Some((write_ppm, fsync_ppm)) = faults {
            let seed = next(&mut rng);
            cmd.env(
                "S3E_CRASH_FAULTS",
                format!("seed={seed},write={write_ppm},fsync={fsync_ppm}"),
            );
        }
        for v in PROXY_VARS {
            cmd.env_remove(v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut log = ChildLog::default();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest prints `test <name> ... ` without a newline first.
                let words = ["acked ", "failed ", "faults "];
                let Some((i, w)) = words
                    .iter()
                    .filter_map(|w| line.rfind(w).map(|i| (i, *w)))
                    .max()
                else {
                    continue;
                };
                let f: Vec<u64> = line[i + w.len()..]
                    .split_whitespace()
                    .map(|x| x.parse().unwrap())
                    .collect();
                match w {
                    "faults " => log.faults = (f[0], f[1]),
                    _ => {
                        let (t, a, b) = (f[0] as usize, f[1], f[2] + 1);
                        log.last[t] = Some(b - 1);
                        if w == "acked " {
                            log.acked.push((a, b));
                        } else {
                            log.failed.push((a, b));
                        }
                    }
                }
            }
            log
        });
        let delay = 100 + next(&mut rng) % 400;
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let log = reader.join().unwrap();
        assert!(
            status.code().is_none(),
            "round {round}: the child exited by itself ({status})"
        );
        for t in 0..2 {
            match log.last[t] {
                Some(l) => {
                    assert!(l >= start[t], "round {round}: pushes went backwards");
                    next_start[t] = l + 1 + 7;
                }
                None => next_start[t] = start[t] + 7,
            }
        }
        let acked_now: u64 = log.acked.iter().map(|(a, b)| b - a).sum();
        acked_ranges.extend(&log.acked);
        failed_ranges.extend(&log.failed);
        injected_writes += log.faults.0;
        injected_fsyncs += log.faults.1;
        let (seen, objects) = rt.block_on(census(&*check_store, &prefix, &mut known));
        let dups: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
        assert!(dups.is_empty(), "round {round}: duplicated events {dups:?}");
        eprintln!(
            "crash {store_spec}: round {round}: killed after {delay} ms, {acked_now} acked, {} pushes failed, {} events in {objects} objects",
            log.failed.len(),
            seen.len()
        );
    }

    // One more start recovers the spool and uploads everything.
    rt.block_on(async {
        let s = sink(
            spool.path().to_str().unwrap(),
            store(store_spec),
            &prefix,
            SpoolFsync::Always,
            shards,
            background,
            None,
        );
        let recovered = s.stats().events_recovered;
        s.shutdown().await.unwrap();
        let (seen, objects) = census(&*check_store, &prefix, &mut known).await;
        let acked: u64 = acked_ranges.iter().map(|(a, b)| b - a).sum();
        let missing: Vec<u64> = acked_ranges
            .iter()
            .flat_map(|&(a, b)| a..b)
            .filter(|n| !seen.contains_key(n))
            .collect();
        assert!(missing.is_empty(), "acknowledged events lost: {missing:?}");
        let dups: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
        assert!(dups.is_empty(), "duplicated events {dups:?}");
        // Beyond the acks, at most the batch in flight at each kill, and
        // events of pushes that failed (not acknowledged: stored or not).
        let failed: u64 = failed_ranges.iter().map(|(a, b)| b - a).sum();
        let extra = seen
            .keys()
            .filter(|n| !acked_ranges.iter().any(|&(a, b)| (a..b).contains(*n)))
            .count();
        assert!(
            extra as u64 <= 7 * ROUNDS + failed,
            "{extra} unacknowledged events"
        );
        eprintln!(
            "crash {store_spec}: {ROUNDS} rounds, {acked} acknowledged events, all in {objects} objects exactly once, none overwritten ({extra} more from batches in flight or failed pushes; {recovered} recovered by the last start); injected: {injected_writes} failed writes, {injected_fsyncs} failed fsyncs, {} pushes refused",
            failed_ranges.len()
        );
        // The manifests agree: every delivery number once, none missing
        // (refused pushes take no numbers; events a kill left unclosed are
        // numbered when the next start closes them), every object as
        // uploaded.
        {
            let opts = crate::VerifyOptions {
                prefix: prefix.clone(),
                ..Default::default()
            };
            let report = crate::verify(&*check_store, &opts).await.unwrap();
            assert!(report.is_complete(), "verify: {:#?}", report.problems);
            let total: u32 = seen.values().sum();
            assert_eq!(report.records, u64::from(total));
            assert_eq!(report.objects as usize, objects);
            eprintln!(
                "crash {store_spec}: verify: complete, {} objects, {} records, sequences {:?}",
                report.objects, report.records, report.instances
            );
        }
        // Everything uploaded: the spool is down to its newest segments.
        let left = crate::spool::segment_files(spool.path());
        assert!(left <= 2, "{left} segment files left in the spool");
    });
}

#[test]
fn sigkill_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    run(&format!("local:{}", dir.path().display()), 1);
}

#[cfg(feature = "integration")]
#[test]
fn sigkill_s3() {
    run("s3", 1);
}

/// The same with two shards (`with_shards(2)`, both pushers encoding in
/// parallel, so more uploads finish together: this found segment files
/// deleted out of order, see `Inner::delete_segments`).
#[test]
fn sigkill_local_directory_two_shards() {
    let dir = tempfile::tempdir().unwrap();
    run(&format!("local:{}", dir.path().display()), 2);
}

/// The same with gzip compressed in the background
/// (`with_background_compression`): an upload waits for its object's
/// compression, and a kill may come while it runs.
#[test]
fn sigkill_local_directory_background_compression() {
    let dir = tempfile::tempdir().unwrap();
    run_with(&format!("local:{}", dir.path().display()), 2, true, None);
}

/// The soak: kill -9 as above, with random short writes (ENOSPC or EIO
/// after part of a write) and failed fsyncs injected into the spool, about
/// one write in 300 and one fsync in 30.
#[test]
fn sigkill_with_injected_faults_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    run_with(
        &format!("local:{}", dir.path().display()),
        2,
        false,
        Some((3_000, 30_000)),
    );
}

/// A private SeaweedFS (`weed mini`) on its own ports and directory, so the
/// outage test can stop and start it without disturbing other tests.
#[cfg(feature = "integration")]
struct PrivateS3 {
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

#[cfg(feature = "integration")]
impl PrivateS3 {
    const S3_PORT: u16 = 18433;

    fn weed() -> std::path::PathBuf {
        let venv =
            std::env::var("S3E_VENV").unwrap_or_else(|_| "/tmp/s3-event-services/venv".to_owned());
        std::path::Path::new(&venv).join("bin/weed")
    }

    fn start(&mut self) {
        let child = Command::new(Self::weed())
            .args([
                "mini",
                &format!("-dir={}", self.dir.path().display()) as &str,
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.port=19433",
                "-volume.port=19440",
                "-filer.port=18988",
                &format!("-s3.port={}", Self::S3_PORT),
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-webdav=false",
                "-admin.ui=false",
                "-master.telemetry=false",
            ])
            .env("AWS_ACCESS_KEY_ID", "testkey")
            .env("AWS_SECRET_ACCESS_KEY", "testsecret")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start weed mini (scripts/services.sh seaweedfs installs it)");
        self.child = Some(child);
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", Self::S3_PORT)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "private S3 did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server gracefully (SIGTERM) and waits for it.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    fn create_bucket(&self, name: &str) {
        let t0 = Instant::now();
        loop {
            let mut shell = Command::new(Self::weed())
                .args(["shell", "-master=127.0.0.1:19433"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut stdin = shell.stdin.take().unwrap();
            writeln!(stdin, "s3.bucket.create -name {name}").unwrap();
            writeln!(stdin, "s3.bucket.list").unwrap();
            drop(stdin);
            let out = shell.wait_with_output().unwrap();
            if String::from_utf8_lossy(&out.stdout).contains(name) {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "could not create bucket {name}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn config(&self, bucket: &str) -> StoreConfig {
        StoreConfig::S3(crate::S3Config {
            bucket: bucket.into(),
            endpoint: Some(format!("http://127.0.0.1:{}", Self::S3_PORT)),
            ..crate::conformance_tests::s3_config()
        })
    }
}

#[cfg(feature = "integration")]
impl Drop for PrivateS3 {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The S3 server is stopped while batches are being uploaded and started
/// again: every event arrives, once.
#[cfg(feature = "integration")]
#[test]
fn s3_outage_loses_and_duplicates_nothing() {
    if std::env::var_os("S3E_CRASH_CHILD").is_some() {
        return;
    }
    let mut s3 = PrivateS3 {
        dir: tempfile::tempdir().unwrap(),
        child: None,
    };
    s3.start();
    s3.create_bucket("outage");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let spool = tempfile::tempdir().unwrap();
    let store = s3.config("outage").build().unwrap();
    let sink = rt.block_on(async {
        sink(
            spool.path().to_str().unwrap(),
            Arc::clone(&store),
            "o/",
            SpoolFsync::Always,
            1,
            false,
            None,
        )
    });
    rt.block_on(async {
        for i in 0..300u64 {
            sink.push(&event(i)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    let before = sink.stats();
    assert!(before.objects_uploaded > 0, "{before:?}");
    s3.stop();
    rt.block_on(async {
        for i in 300..600u64 {
            sink.push(&event(i)).await.unwrap();
        }
        // Let uploads fail against the stopped server for a while.
        tokio::time::sleep(Duration::from_secs(2)).await;
    });
    let during = sink.stats();
    assert!(
        during.pending_uploads > 0,
        "nothing was waiting for the server: {during:?}"
    );
    s3.start();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(240), sink.shutdown())
            .await
            .expect("uploads finish once the server is back")
            .unwrap();
        let (seen, objects) = census(&*store, "o/", &mut BTreeMap::new()).await;
        let missing: Vec<u64> = (0..600).filter(|n| !seen.contains_key(n)).collect();
        assert!(missing.is_empty(), "lost in the outage: {missing:?}");
        assert_eq!(seen.len(), 600);
        assert!(seen.values().all(|c| *c == 1), "duplicated in the outage");
        eprintln!(
            "outage: 600 events in {objects} objects exactly once; {} upload retries",
            sink.stats().upload_retries
        );
    });
}
