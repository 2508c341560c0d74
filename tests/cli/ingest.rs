//! Process tests of `s3-event ingest`: a mixed batch of meter files
//! (JSON array, NDJSON, gzip NDJSON, a file with two bad records, a file that
//! is not JSON) dropped into a local directory or the real S3-compatible
//! server yields exactly the valid records in the output objects and the
//! right reason files; a restart reads nothing again; a notification POSTed
//! to the receiver is ingested without waiting for the poller; bad
//! configurations exit 2 naming the key.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::{json, Value};

use crate::util::{free_port, wait_for_port, ChildGuard};

pub(crate) fn meter(customer: &str, value: f64) -> Value {
    json!({"customerId": customer, "meterApiName": "ComputeHours", "meterValue": value,
           "meterTimeInMillis": 1619445706909u64, "dimensions": {"region": "us-west-2"}})
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// The five files of the mixed batch (key suffix, body) and the customers of
/// the valid records among them.
fn mixed_batch() -> (Vec<(&'static str, Vec<u8>)>, Vec<&'static str>) {
    let array = serde_json::to_vec(&vec![meter("a", 5.0), meter("b", 1.5)]).unwrap();
    let ndjson = format!("{}\n{}\n", meter("c", 1.0), meter("d", 2.0)).into_bytes();
    let gz = gzip(format!("{}\n{}\n", meter("e", 3.0), meter("f", 4.0)).as_bytes());
    let two_bad = format!(
        "{}\n{}\n{{oops\n{}\n",
        meter("g", 1.0),
        json!({"customerId": "x", "meterApiName": "X", "meterValue": "5", "meterTimeInMillis": 1}),
        meter("h", 1.0)
    )
    .into_bytes();
    (
        vec![
            ("0001", array),
            ("0002", ndjson),
            ("0003.gz", gz),
            ("0004", two_bad),
            ("0005", b"hello, meters".to_vec()),
        ],
        vec!["a", "b", "c", "d", "e", "f", "g", "h"],
    )
}

/// Customers of the records in gzip NDJSON objects, sorted, with a check
/// that every record is a whole meter record.
pub(crate) fn customers(objects: &[Vec<u8>]) -> Vec<String> {
    let mut out = Vec::new();
    for gz in objects {
        let mut text = String::new();
        GzDecoder::new(&gz[..]).read_to_string(&mut text).unwrap();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["meterApiName"], "ComputeHours", "{line}");
            assert_eq!(v["meterTimeInMillis"], 1619445706909u64, "{line}");
            assert_eq!(v["dimensions"]["region"], "us-west-2", "{line}");
            out.push(v["customerId"].as_str().unwrap().to_owned());
        }
    }
    out.sort();
    out
}

pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().ends_with(crate::util::ATTRIBUTES) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A running `s3-event ingest` with its stderr in a file.
pub(crate) struct Running {
    child: ChildGuard,
    stderr: PathBuf,
    stdout: PathBuf,
}

impl Running {
    pub(crate) fn start(dir: &Path, config: &Value, run: usize) -> Running {
        let cfg = dir.join("ingest.json");
        std::fs::write(&cfg, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        let stderr = dir.join(format!("stderr-{run}.log"));
        let stdout = dir.join(format!("stdout-{run}.log"));
        let child = ChildGuard::spawn(
            crate::util::s3_event("ingest")
                .arg("--config")
                .arg(&cfg)
                .current_dir(dir)
                .env("RUST_LOG", "info,s3_event_inputs::poller=debug")
                .stdout(Stdio::from(File::create(&stdout).unwrap()))
                .stderr(Stdio::from(File::create(&stderr).unwrap())),
        );
        Running {
            child,
            stderr,
            stdout,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until `n` objects were reported as read.
    pub(crate) fn wait_ingested(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            let got = log.matches("ingested").count();
            if got >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{got} of {n} objects ingested after 30 s:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `n` polls have completed.
    fn wait_polls(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.log().matches("poll done").count() < n {
            assert!(Instant::now() < deadline, "no {n} polls:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM; asserts exit 0 and returns (stdout, stderr).
    pub(crate) fn stop(mut self) -> (String, String) {
        let status = self.child.terminate();
        let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        let log = self.log();
        assert!(status.success(), "exit {status:?}\n{out}\n{log}");
        (out, log)
    }
}

fn check_reports(two_bad: &str, not_json: &str) {
    let lines: Vec<&str> = two_bad.lines().collect();
    assert_eq!(lines.len(), 2, "{two_bad}");
    assert!(
        lines[0].starts_with("line 2 ") && lines[0].contains("`meterValue` must be a number"),
        "{two_bad}"
    );
    assert!(lines[1].starts_with("line 3 "), "{two_bad}");
    assert_eq!(not_json.lines().count(), 1, "{not_json}");
    assert!(not_json.starts_with("line 1 "), "{not_json}");
}

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

#[test]
fn local_mixed_batch_then_restart_reads_nothing_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ingest = dir.join("bucket/ingest/acme/06-07-2022");
    std::fs::create_dir_all(&ingest).unwrap();
    let (files, want) = mixed_batch();
    for (name, body) in &files {
        std::fs::write(ingest.join(name), body).unwrap();
    }
    // A file outside the prefix is not meter input.
    std::fs::create_dir_all(dir.join("bucket/other")).unwrap();
    std::fs::write(dir.join("bucket/other/x"), b"not meters").unwrap();
    let config = json!({"pollIntervalMillis": 200, "flushIntervalMillis": 60000});

    let run = Running::start(dir, &config, 1);
    run.wait_ingested(5);
    let (out, log) = run.stop();
    assert!(
        out.contains("polling local directory ./bucket/ingest/"),
        "{out}"
    );
    assert!(out.contains("8 records forwarded"), "{out}");
    assert!(
        !log.contains("bucket/other") && !log.contains("other/x"),
        "{log}"
    );

    let objects: Vec<Vec<u8>> = files_under(&dir.join("meters"))
        .iter()
        .map(|p| {
            assert!(p.to_string_lossy().ends_with(".ndjson.gz"), "{p:?}");
            std::fs::read(p).unwrap()
        })
        .collect();
    assert_eq!(customers(&objects), want);

    let reports = dir.join("bucket/failed-requests").join(today());
    let got: Vec<PathBuf> = files_under(&dir.join("bucket/failed-requests"));
    assert_eq!(
        got,
        vec![
            reports.join("ingest/acme/06-07-2022/0004.reason.txt"),
            reports.join("ingest/acme/06-07-2022/0005.reason.txt"),
        ]
    );
    check_reports(
        &std::fs::read_to_string(&got[0]).unwrap(),
        &std::fs::read_to_string(&got[1]).unwrap(),
    );

    // Restart: nothing is read again; a new file is.
    let before = files_under(&dir.join("meters"));
    let run = Running::start(dir, &config, 2);
    run.wait_polls(2);
    std::fs::write(
        ingest.join("0006"),
        serde_json::to_vec(&vec![meter("i", 9.0)]).unwrap(),
    )
    .unwrap();
    run.wait_ingested(1);
    std::thread::sleep(Duration::from_millis(600));
    let (out, log) = run.stop();
    assert_eq!(log.matches("ingested").count(), 1, "{log}");
    assert!(log.contains("key=\"ingest/acme/06-07-2022/0006\""), "{log}");
    assert!(out.contains("1 records forwarded"), "{out}");
    let after = files_under(&dir.join("meters"));
    let new: Vec<Vec<u8>> = after
        .iter()
        .filter(|p| !before.contains(p))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert_eq!(customers(&new), ["i"]);
}

#[test]
fn notification_post_is_ingested_without_the_poller() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("bucket/ingest")).unwrap();
    let port = free_port();
    let config = json!({
        "pollIntervalMillis": 3_600_000,
        "listen": format!("127.0.0.1:{port}"),
        "authToken": "tok-123",
    });
    let run = Running::start(dir, &config, 1);
    wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(20));
    // The first poll (at start) has found nothing; only the POST can bring
    // this file in.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(
        dir.join("bucket/ingest/n 1.json"),
        format!("{}\n", meter("n", 1.0)),
    )
    .unwrap();
    let body = json!({
        "EventName": "s3:ObjectCreated:Put",
        "Key": "bucket/ingest/n 1.json",
        "Records": [{
            "eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "",
            "eventTime": "2026-01-01T00:00:00.000Z", "eventName": "s3:ObjectCreated:Put",
            "s3": {"s3SchemaVersion": "1.0", "configurationId": "Config",
                   "bucket": {"name": "bucket", "arn": "arn:aws:s3:::bucket"},
                   "object": {"key": "ingest%2Fn+1.json", "size": 10, "eTag": "abc"}}
        }]
    })
    .to_string();
    let post = |auth: &str| {
        Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["-H", "Content-Type: application/json"])
            .args(["-H", &format!("Authorization: Bearer {auth}")])
            .args(["--data-binary", &body])
            .arg(format!("http://127.0.0.1:{port}/"))
            .output()
            .unwrap()
    };
    assert_eq!(String::from_utf8_lossy(&post("wrong").stdout), "401");
    assert_eq!(String::from_utf8_lossy(&post("tok-123").stdout), "200");
    run.wait_ingested(1);
    let (out, log) = run.stop();
    assert!(out.contains("receiving S3 notifications"), "{out}");
    assert!(log.contains("ingest/n 1.json"), "{log}");
    assert!(!log.contains("tok-123"), "{log}");
    let objects: Vec<Vec<u8>> = files_under(&dir.join("meters"))
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert_eq!(customers(&objects), ["n"]);
}

fn s3_store() -> (Arc<dyn ObjectStore>, Value) {
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let bucket = var("S3E_S3_BUCKET", "s3e-test");
    let endpoint = var("S3E_S3_ENDPOINT", "http://127.0.0.1:18333");
    let key = var("S3E_S3_ACCESS_KEY", "testkey");
    let secret = var("S3E_S3_SECRET_KEY", "testsecret");
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(&bucket)
        .with_endpoint(&endpoint)
        .with_region("us-east-1")
        .with_access_key_id(&key)
        .with_secret_access_key(&secret)
        .with_allow_http(true)
        .build()
        .unwrap();
    let spec = json!({"store": "s3", "bucket": bucket, "endpoint": endpoint,
                      "region": "us-east-1", "accessKeyId": key,
                      "secretAccessKey": secret, "allowHttp": true});
    (Arc::new(store), spec)
}

async fn list(store: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let mut keys: Vec<String> = store
        .list(Some(&ObjPath::from(prefix)))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

async fn get(store: &dyn ObjectStore, key: &str) -> Vec<u8> {
    store
        .get(&ObjPath::from(key))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

#[test]
fn s3_mixed_batch_then_restart_reads_nothing_again() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (store, spec) = s3_store();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let unique = format!("ingest-meters-test-{}-{nanos}", std::process::id());
    let in_prefix = format!("{unique}/ingest");
    let (files, want) = mixed_batch();
    rt.block_on(async {
        for (name, body) in &files {
            let key = format!("{in_prefix}/amberdata/06-07-2022/{name}");
            store
                .put(&ObjPath::from(key), PutPayload::from(body.clone()))
                .await
                .unwrap();
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = json!({
        "input": spec,
        "prefix": format!("{in_prefix}/"),
        "output": spec,
        "outputPrefix": format!("{unique}/meters/"),
        "pollIntervalMillis": 200,
    });
    let run = Running::start(dir, &config, 1);
    run.wait_ingested(5);
    let (out, log) = run.stop();
    assert!(out.contains("8 records forwarded"), "{out}\n{log}");
    assert!(!log.contains("testsecret"), "{log}");
    assert!(!out.contains("testsecret"), "{out}");

    let reports_prefix = format!("failed-requests/{}/{in_prefix}", today());
    let (objects, reports) = rt.block_on(async {
        let keys = list(&*store, &format!("{unique}/meters")).await;
        let mut objects = Vec::new();
        for k in &keys {
            assert!(k.ends_with(".ndjson.gz"), "{k}");
            objects.push(get(&*store, k).await);
        }
        let reports = list(&*store, &reports_prefix).await;
        let mut texts = Vec::new();
        for k in &reports {
            texts.push(String::from_utf8(get(&*store, k).await).unwrap());
        }
        (objects, (reports, texts))
    });
    assert_eq!(customers(&objects), want);
    assert_eq!(
        reports.0,
        [
            format!("{reports_prefix}/amberdata/06-07-2022/0004.reason.txt"),
            format!("{reports_prefix}/amberdata/06-07-2022/0005.reason.txt"),
        ]
    );
    check_reports(&reports.1[0], &reports.1[1]);

    // Restart: nothing read again, nothing new written.
    let run = Running::start(dir, &config, 2);
    // Several complete polls of the prefix run (and find nothing new).
    run.wait_polls(3);
    let (out, log) = run.stop();
    assert_eq!(log.matches("ingested").count(), 0, "{log}");
    assert!(out.contains("0 records forwarded"), "{out}");
    let count = rt.block_on(async { list(&*store, &format!("{unique}/meters")).await.len() });
    assert_eq!(count, objects.len());
}

fn config_error(config: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.json");
    std::fs::write(&cfg, config).unwrap();
    let out = crate::util::s3_event("ingest")
        .arg("--config")
        .arg(&cfg)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{config}: {out:?}");
    // Nothing was started.
    assert!(!tmp.path().join("ingest_meters.cursor").exists());
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn bad_configuration_exits_2_naming_the_key() {
    for (config, names) in [
        (r#"{"pollInterval": 5}"#, vec!["`pollInterval`"]),
        (
            r#"{"input": {"store": "local", "dri": "x"}}"#,
            vec!["`input`", "unknown field `dri`"],
        ),
        (
            r#"{"pollIntervalMillis": 0}"#,
            vec!["`pollIntervalMillis`", "> 0"],
        ),
        (r#"{"flushSize": "many"}"#, vec!["`flushSize`"]),
        (
            r#"{"output": {"store": "ftp"}}"#,
            vec!["`output.store`", "ftp"],
        ),
        (r#"{"input": {"store": "s3"}}"#, vec!["`input`", "`bucket`"]),
        (r#"{"listen": "nowhere"}"#, vec!["`listen`"]),
        (r#"{"authToken": "t"}"#, vec!["`authToken`", "`listen`"]),
    ] {
        let err = config_error(config);
        for n in names {
            assert!(err.contains(n), "{config}: {err}");
        }
    }
    let out = crate::util::s3_event("ingest")
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bogus"));
}

#[test]
fn kill_9_before_the_upload_loses_no_valid_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ingest = dir.join("bucket/ingest/acme");
    std::fs::create_dir_all(&ingest).unwrap();
    let (files, want) = mixed_batch();
    for (name, body) in &files {
        std::fs::write(ingest.join(name), body).unwrap();
    }
    // Objects are uploaded only after a minute, so at the kill every valid
    // record is in the spool and nowhere else.
    let config = json!({"pollIntervalMillis": 200, "flushIntervalMillis": 60000});
    let mut run = Running::start(dir, &config, 1);
    run.wait_ingested(5);
    // The poll that read them has completed, so the cursor holds them.
    let polls = run.log().matches("poll done").count();
    run.wait_polls(polls + 1);
    run.child.kill9();
    assert!(files_under(&dir.join("meters")).is_empty());

    let run = Running::start(dir, &config, 2);
    run.wait_polls(3);
    let (_, log) = run.stop();
    assert_eq!(log.matches("ingested").count(), 0, "read again:\n{log}");
    let objects: Vec<Vec<u8>> = files_under(&dir.join("meters"))
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    // Every valid record, once.
    assert_eq!(customers(&objects), want);
}
