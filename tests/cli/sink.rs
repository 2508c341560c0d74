//! Process tests of `s3-event sink`: the program started as a real
//! process with the seed's `config.json`/`secret.json` (plus `store: local`)
//! on a free loopback port, driven with `curl`, stopped with SIGTERM, and
//! checked through the objects it left in its local directory. The request
//! handling itself is tested in-process in
//! `src/sink_server/tests.rs`; these tests cover what only
//! the program does: its command line, its configuration files, its exit
//! codes, its logs and what is on disk after it stopped.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use flate2::read::GzDecoder;
use serde_json::{json, Value};

use crate::util::{free_port, wait_for_port, ChildGuard};

/// The seed's `curl` body, byte for byte.
const SEED_BODY: &str = r#"{"specversion":"0.3","id":"b25e2717-a470-45a0-8231-985a99aa9416","type":"com.github.pull.create","source":"https://github.com/cloudevents/spec/pull/123","time":"2019-07-04T17:31:00.000Z","datacontenttype":"application/json","data":{"much":"wow"}}"#;

/// Secrets used by these tests, plain and as the seed's base64 secret file
/// holds them; neither form may appear in the program's output.
const ACCESS_KEY: &str = "AKIDPROCTEST7731";
const SECRET_KEY: &str = "pr0c-t3st-s3cr3t-9944";

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Variables the server reads besides its configuration and secret keys
/// (`CONFIG_KEYS`, `SECRET_KEYS`): all removed so that the test's
/// environment cannot leak in.
const PATH_VARS: &[&str] = &["v_config_path", "v_secret_path"];

fn command(dir: &Path) -> Command {
    let mut cmd = crate::util::s3_event("sink");
    cmd.current_dir(dir).env("RUST_LOG", "info");
    use s3_event::sink_server::config::{CONFIG_KEYS, SECRET_KEYS};
    for k in CONFIG_KEYS.iter().chain(SECRET_KEYS).chain(PATH_VARS) {
        cmd.env_remove(k);
    }
    cmd
}

/// Writes `config.json` and the seed-style `secret.json` into `dir`.
fn write_files(dir: &Path, config: &Value) -> (PathBuf, PathBuf) {
    write_files_with(dir, config, ACCESS_KEY, SECRET_KEY)
}

/// [`write_files`] with the given credentials.
fn write_files_with(dir: &Path, config: &Value, key: &str, secret: &str) -> (PathBuf, PathBuf) {
    let cfg = dir.join("config.json");
    let secret_file = dir.join("secret.json");
    std::fs::write(&cfg, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    let s = json!({"awsAccessKeyID": b64(key), "awsSecretAccessKey": b64(secret)});
    std::fs::write(&secret_file, serde_json::to_vec_pretty(&s).unwrap()).unwrap();
    (cfg, secret_file)
}

struct Server {
    child: ChildGuard,
    port: u16,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Server {
    fn start(dir: &Path, config: &Value, extra: &[&str], port: u16) -> Server {
        Server::start_with(dir, write_files(dir, config), extra, port)
    }

    fn start_with(dir: &Path, files: (PathBuf, PathBuf), extra: &[&str], port: u16) -> Server {
        let (cfg, secret) = files;
        let stdout = dir.join("stdout.log");
        let stderr = dir.join("stderr.log");
        let child = ChildGuard::spawn(
            command(dir)
                .arg("--config")
                .arg(&cfg)
                .arg("--secret")
                .arg(&secret)
                .args(extra)
                .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
                .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap())),
        );
        wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(30));
        Server {
            child,
            port,
            stdout,
            stderr,
        }
    }

    /// POSTs `body` with `headers`; returns (status, response body).
    fn post(&self, headers: &[&str], body: &[u8]) -> (u16, String) {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), body).unwrap();
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-X", "POST", "-w", "\n%{http_code}"]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        cmd.arg("--data-binary")
            .arg(format!("@{}", tmp.path().display()))
            .arg(format!("http://127.0.0.1:{}/", self.port));
        let out = cmd.output().expect("curl");
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').expect("status line");
        (code.parse().expect("status"), body.to_owned())
    }

    /// SIGTERM; asserts exit 0 and returns (stdout, stderr).
    fn stop(mut self) -> (String, String) {
        let status = self.child.terminate();
        let out = std::fs::read_to_string(&self.stdout).unwrap();
        let err = std::fs::read_to_string(&self.stderr).unwrap();
        assert!(status.success(), "exit {status:?}\n{out}\n{err}");
        (out, err)
    }
}

/// Every object under `root`: (key relative to `root`, its records).
fn stored(root: &Path) -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.to_string_lossy().ends_with(crate::util::ATTRIBUTES) {
                continue;
            }
            let key = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            assert!(key.ends_with(".ndjson.gz"), "{key}");
            let mut text = String::new();
            GzDecoder::new(std::fs::File::open(&p).unwrap())
                .read_to_string(&mut text)
                .unwrap();
            let records = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            out.push((key, records));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn no_secrets(text: &str) {
    for s in [ACCESS_KEY, SECRET_KEY, &b64(ACCESS_KEY), &b64(SECRET_KEY)] {
        assert!(!text.contains(s), "a secret in the output:\n{text}");
    }
}

fn ce(id: &str) -> Value {
    json!({"specversion":"1.0","id":id,"source":"/test","type":"com.example.test","data":{"id":id}})
}

const STRUCTURED: &str = "Content-Type: application/cloudevents+json";
const BATCH: &str = "Content-Type: application/cloudevents-batch+json";
const JSON: &str = "Content-Type: application/json";

#[test]
fn every_mode_lands_under_its_partition_and_bad_requests_leave_no_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    // The seed's config.json (string values), plus our keys.
    let config = json!({
        "v_port": port.to_string(),
        "region": "us-west-2",
        "flushSize": "1000",
        "scheduledInterval": "60",
        "timeInterval": "HOURLY",
        "store": "local",
        "localDir": dir.join("data"),
        "spoolDir": dir.join("spool"),
        "bindAddress": "127.0.0.1",
        "maxBodyBytes": 4096,
    });
    let hour = |t: chrono::DateTime<chrono::Utc>| t.format("%Y/%m/%d/%H/").to_string();
    let start = chrono::Utc::now();
    let server = Server::start(dir, &config, &[], port);

    // The seed's curl, exactly.
    let (s, b) = server.post(
        &["Content-Type:application/cloudevents+json"],
        SEED_BODY.as_bytes(),
    );
    assert_eq!((s, b.as_str()), (200, r#"{"accepted":1}"#));
    // Structured 1.0.
    assert_eq!(
        server
            .post(&[STRUCTURED], ce("s1").to_string().as_bytes())
            .0,
        200
    );
    // Binary 1.0 and 0.3.
    for (spec, id) in [("1.0", "b1"), ("0.3", "b03")] {
        let (s, b) = server.post(
            &[
                &format!("ce-specversion: {spec}"),
                &format!("ce-id: {id}"),
                "ce-source: /test",
                "ce-type: com.example.test",
                "ce-tenant: acme",
                JSON,
            ],
            json!({"id": id}).to_string().as_bytes(),
        );
        assert_eq!(s, 200, "{b}");
    }
    // Batch.
    let mut t2 = ce("t2");
    t2["specversion"] = json!("0.3");
    let (s, b) = server.post(&[BATCH], json!([ce("t1"), t2]).to_string().as_bytes());
    assert_eq!((s, b.as_str()), (200, r#"{"accepted":2}"#));
    // Raw S3 notification JSON and MinIO's envelope.
    let record = |req: &str| {
        json!({"eventVersion":"2.0","eventSource":"minio:s3","awsRegion":"",
            "eventTime":"2025-02-06T01:04:31.998Z","eventName":"s3:ObjectCreated:Put",
            "responseElements":{"x-amz-request-id":req,"x-amz-id-2":"dd90"},
            "s3":{"bucket":{"name":"photos"},"object":{"key":"a.jpg","size":1}}})
    };
    let (s, b) = server.post(
        &[JSON],
        json!({"Records": [record("R1")]}).to_string().as_bytes(),
    );
    assert_eq!((s, b.as_str()), (200, r#"{"accepted":1}"#));
    let minio =
        json!({"EventName":"s3:ObjectCreated:Put","Key":"photos/a.jpg","Records":[record("R2")]});
    assert_eq!(server.post(&[JSON], minio.to_string().as_bytes()).0, 200);

    // Bad requests: each gets its status, none leaves a trace.
    let missing_id = json!({"specversion":"1.0","source":"/s","type":"t","data":{"bad":1}});
    let (s, b) = server.post(&[STRUCTURED], missing_id.to_string().as_bytes());
    assert_eq!(s, 400, "{b}");
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["attribute"],
        "id"
    );
    let (s, b) = server.post(
        &[BATCH],
        json!([ce("bad-batch-ok"), missing_id])
            .to_string()
            .as_bytes(),
    );
    assert_eq!(s, 400, "{b}");
    let (s, b) = server.post(
        &["Content-Type: text/plain"],
        ce("bad-ct").to_string().as_bytes(),
    );
    assert_eq!(s, 415, "{b}");
    let mut big = ce("bad-big");
    big["data"] = json!("x".repeat(8192));
    let (s, b) = server.post(&[STRUCTURED], big.to_string().as_bytes());
    assert_eq!(s, 413, "{b}");

    let (out, err) = server.stop();
    let end = chrono::Utc::now();
    assert!(
        out.contains(&format!("listening on http://127.0.0.1:{port}")),
        "{out}"
    );
    no_secrets(&out);
    no_secrets(&err);
    assert!(err.contains("SIGTERM"), "{err}");

    let objects = stored(&dir.join("data"));
    assert!(!objects.is_empty());
    let mut ids = Vec::new();
    for (key, records) in &objects {
        assert!(
            key.starts_with(&hour(start)) || key.starts_with(&hour(end)),
            "{key} is not in the hour partition of {start} or {end}"
        );
        assert!(
            err.contains(&format!("upload file {key} completed")),
            "no upload line for {key}:\n{err}"
        );
        ids.extend(records.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
    }
    ids.sort();
    assert_eq!(
        ids,
        [
            "R1.dd90",
            "R2.dd90",
            "b03",
            "b1",
            "b25e2717-a470-45a0-8231-985a99aa9416",
            "s1",
            "t1",
            "t2"
        ]
    );
    let all: Vec<&Value> = objects.iter().flat_map(|(_, r)| r).collect();
    let by_id = |id: &str| *all.iter().find(|r| r["id"] == id).unwrap();
    // The seed's event is stored as it was sent.
    assert_eq!(
        by_id("b25e2717-a470-45a0-8231-985a99aa9416"),
        &serde_json::from_str::<Value>(SEED_BODY).unwrap()
    );
    assert_eq!(by_id("b1")["tenant"], "acme");
    assert_eq!(by_id("b03")["specversion"], "0.3");
    assert_eq!(
        by_id("R2.dd90")["type"],
        "com.amazonaws.s3.ObjectCreated:Put"
    );
}

#[test]
fn port_flag_daily_partitions_and_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let config = json!({
        "v_port": "1",
        "timeInterval": "DAILY",
        "store": "local",
        "localDir": dir.join("data"),
        "spoolDir": dir.join("spool"),
        "bindAddress": "127.0.0.1",
        "prefix": "events/",
    });
    let day = chrono::Utc::now().format("%Y/%m/%d/").to_string();
    let server = Server::start(dir, &config, &["--port", &port.to_string()], port);
    assert_eq!(
        server
            .post(&[STRUCTURED], ce("d1").to_string().as_bytes())
            .0,
        200
    );
    let (_, err) = server.stop();
    no_secrets(&err);
    let objects = stored(&dir.join("data"));
    assert_eq!(objects.len(), 1, "{objects:?}");
    let (key, records) = &objects[0];
    let rest = key
        .strip_prefix(&format!("events/{day}"))
        .unwrap_or_else(|| panic!("{key} not under events/{day}"));
    assert!(!rest.contains('/'), "{key}: a daily partition has no hour");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["id"], "d1");
}

/// With the `aws-sdk` feature, `acl`, `storageClass` and `tags` in the
/// configuration send every object through the AWS SDK with them: read back
/// from the real S3-compatible server.
#[cfg(feature = "aws-sdk")]
#[test]
fn upload_options_reach_the_s3_server() {
    use s3_event::sink::AwsSdkConfig;
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let bucket = var("S3E_S3_BUCKET", "s3e-test");
    let endpoint = var("S3E_S3_ENDPOINT", "http://127.0.0.1:18333");
    let key = var("S3E_S3_ACCESS_KEY", "testkey");
    let secret = var("S3E_S3_SECRET_KEY", "testsecret");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let prefix = format!(
        "sdk-options-{}-{}/",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    );
    let config = json!({
        "v_port": port,
        "bucketName": bucket,
        "endpoint": endpoint,
        "region": "us-east-1",
        "spoolDir": dir.join("spool"),
        "bindAddress": "127.0.0.1",
        "prefix": prefix,
        "acl": "bucket-owner-full-control",
        "storageClass": "STANDARD_IA",
        "tags": "team=billing%20ops&env=ci",
    });
    let files = write_files_with(dir, &config, &key, &secret);
    let server = Server::start_with(dir, files, &[], port);
    assert_eq!(
        server
            .post(&[STRUCTURED], ce("t1").to_string().as_bytes())
            .0,
        200
    );
    let (out, err) = server.stop();
    assert!(out.contains("(AWS SDK)"), "{out}");
    assert!(
        !out.contains(&secret) && !err.contains(&secret),
        "{out}\n{err}"
    );

    let store = AwsSdkConfig {
        bucket: bucket.clone(),
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint),
        access_key_id: Some(key),
        secret_access_key: Some(secret),
        allow_http: true,
        ..AwsSdkConfig::default()
    }
    .build()
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = store.client();
        let listed = client
            .list_objects_v2()
            .bucket(&bucket)
            .prefix(&prefix)
            .send()
            .await
            .unwrap();
        let keys: Vec<String> = listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        assert_eq!(keys.len(), 1, "{keys:?}");
        let head = client
            .head_object()
            .bucket(&bucket)
            .key(&keys[0])
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.storage_class().map(|c| c.as_str().to_owned()),
            Some("STANDARD_IA".to_owned())
        );
        let tagging = client
            .get_object_tagging()
            .bucket(&bucket)
            .key(&keys[0])
            .send()
            .await
            .unwrap();
        let mut tags: Vec<(String, String)> = tagging
            .tag_set()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect();
        tags.sort();
        assert_eq!(
            tags,
            [
                ("env".to_owned(), "ci".to_owned()),
                ("team".to_owned(), "billing ops".to_owned())
            ]
        );
        let body = client
            .get_object()
            .bucket(&bucket)
            .key(&keys[0])
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        let mut text = String::new();
        GzDecoder::new(&body[..]).read_to_string(&mut text).unwrap();
        let record: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(record["id"], "t1");
    });
}

/// Runs the example to completion; asserts exit 2 and returns its stderr.
fn exits_2(dir: &Path, args: &[&str]) -> String {
    let out: Output = command(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    err
}

#[test]
fn bad_command_lines_exit_2_naming_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let err = exits_2(dir, &["--bogus"]);
    assert!(err.contains("'--bogus'"), "{err}");
    let err = exits_2(dir, &["--port", "eighty"]);
    assert!(err.contains("--port") && err.contains("'eighty'"), "{err}");
    let err = exits_2(dir, &["--port", "70000"]);
    assert!(err.contains("--port"), "{err}");
    let err = exits_2(dir, &["--config"]);
    assert!(err.contains("--config"), "{err}");

    let base =
        json!({"store": "local", "localDir": dir.join("data"), "spoolDir": dir.join("spool")});
    for (change, names) in [
        (json!({"bucketNmae": "b"}), vec!["bucketNmae"]),
        (json!({"timeInterval": "WEEKLY"}), vec!["timeInterval"]),
        (json!({"flushSize": "lots"}), vec!["flushSize"]),
        (json!({"v_port": "99999"}), vec!["v_port"]),
        (json!({"store": "ftp"}), vec!["store"]),
    ] {
        let mut config = base.clone();
        for (k, v) in change.as_object().unwrap() {
            config[k] = v.clone();
        }
        let (cfg, secret) = write_files(dir, &config);
        let err = exits_2(
            dir,
            &[
                "--config",
                cfg.to_str().unwrap(),
                "--secret",
                secret.to_str().unwrap(),
            ],
        );
        for n in names {
            assert!(err.contains(n), "{config}: {err}");
        }
        no_secrets(&err);
    }
    // A secret that is not base64: named by key, its value not echoed.
    let cfg = dir.join("config.json");
    std::fs::write(&cfg, base.to_string()).unwrap();
    let secret = dir.join("secret.json");
    std::fs::write(
        &secret,
        json!({"awsAccessKeyID": b64(ACCESS_KEY), "awsSecretAccessKey": SECRET_KEY}).to_string(),
    )
    .unwrap();
    let err = exits_2(
        dir,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--secret",
            secret.to_str().unwrap(),
        ],
    );
    assert!(err.contains("awsSecretAccessKey"), "{err}");
    no_secrets(&err);
    // Nothing was written by a start that failed.
    assert!(!dir.join("data").exists());
}

#[test]
fn check_config_prints_the_effective_configuration_without_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = json!({"store": "local", "localDir": dir.join("data"), "flushSize": "7",
                        "authToken": "T0KEN-never-printed"});
    let (cfg, secret) = write_files(dir, &config);
    let out = command(dir)
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--secret",
            secret.to_str().unwrap(),
        ])
        .arg("--check-config")
        .env("v_port", "9191")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    // The file, the environment (`v_port`) and the defaults, merged.
    assert_eq!(v["flushSize"], json!(7));
    assert_eq!(v["v_port"], json!(9191));
    assert_eq!(v["bindAddress"], json!("127.0.0.1"));
    assert_eq!(v["authToken"], json!("<redacted>"));
    assert_eq!(v["awsSecretAccessKey"], json!("<redacted>"));
    no_secrets(&text);
    assert!(!text.contains("T0KEN-never-printed"), "{text}");
    // Nothing was started or written.
    assert!(!dir.join("data").exists() && !dir.join("spool").exists());
    let config = json!({"store": "local", "flushSize": "0"});
    let (cfg, secret) = write_files(dir, &config);
    let err = exits_2(
        dir,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--secret",
            secret.to_str().unwrap(),
            "--check-config",
        ],
    );
    assert!(err.contains("`flushSize`"), "{err}");
}

/// Must-show 3 of the binary's issue: a sink pointed at SeaweedFS with a
/// wrong secret, or at a bucket that does not exist, exits 2 within seconds
/// naming the bucket, the endpoint and what the store said; `--skip-check`
/// starts anyway.
#[test]
fn wrong_credentials_or_a_missing_bucket_exit_2_within_seconds() {
    let endpoint =
        std::env::var("S3E_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:18333".into());
    let bucket = std::env::var("S3E_S3_BUCKET").unwrap_or_else(|_| "s3e-test".into());
    let key = std::env::var("S3E_S3_ACCESS_KEY").unwrap_or_else(|_| "testkey".into());
    let secret = std::env::var("S3E_S3_SECRET_KEY").unwrap_or_else(|_| "testsecret".into());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A name no other test uses: SeaweedFS creates a bucket on a put, so a
    // fixed name may exist after some other test's upload.
    let missing = format!(
        "s3e-missing-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    for (bucket, secret, says) in [
        (bucket.as_str(), SECRET_KEY, "SignatureDoesNotMatch"),
        (missing.as_str(), secret.as_str(), "NoSuchBucket"),
    ] {
        let config = json!({"bucketName": bucket, "endpoint": endpoint, "region": "us-east-1",
                            "spoolDir": dir.join("spool"), "v_port": "0"});
        let files = write_files_with(dir, &config, &key, secret);
        let started = std::time::Instant::now();
        let out = command(dir)
            .args([
                "--config",
                files.0.to_str().unwrap(),
                "--secret",
                files.1.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(err.contains(&format!("s3://{bucket}/")), "{err}");
        assert!(err.contains(&endpoint), "{err}");
        assert!(err.contains(says), "{err}");
        assert!(err.contains("--skip-check"), "{err}");
        no_secrets(&err);
    }
    // With `--skip-check` the same wrong secret starts (uploads would fail
    // and be retried).
    let port = free_port();
    let config = json!({"bucketName": bucket, "endpoint": endpoint, "region": "us-east-1",
                        "spoolDir": dir.join("spool2"), "v_port": port.to_string()});
    let files = write_files_with(dir, &config, &key, SECRET_KEY);
    let server = Server::start_with(dir, files, &["--skip-check"], port);
    let (out, _) = server.stop();
    assert!(out.contains("listening on http://127.0.0.1:"), "{out}");
}

/// A CA and a server certificate for `127.0.0.1` and `localhost`, written
/// as `ca.pem`, `cert.pem` and `key.pem` under `dir`.
fn tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "s3-event test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// `curl` of `url` with `args`; returns (status, body).
fn curl(args: &[&str], url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    let code = code.parse().unwrap_or(0);
    if code == 0 {
        eprintln!(
            "curl {args:?} {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (code, body.to_owned())
}

/// Must-show 4 of the binary's issue: with `authToken`, a POST without it
/// gets 401 and stores nothing; with TLS files the sink answers
/// `curl --cacert`, and plain HTTP gets nothing.
#[test]
fn a_token_guards_the_sink_and_tls_answers_curl_with_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ca, cert, key) = tls_files(dir);
    let port = free_port();
    let config = json!({"store": "local", "localDir": dir.join("data"),
                        "spoolDir": dir.join("spool"), "v_port": port.to_string(),
                        "authToken": "s3cr3t-T0KEN", "tlsCertFile": cert, "tlsKeyFile": key});
    let server = Server::start(dir, &config, &[], port);
    let url = format!("https://127.0.0.1:{port}/");
    let ca = ca.to_str().unwrap();
    let post = |auth: Option<&str>| {
        let mut args = vec![
            "--cacert",
            ca,
            "-X",
            "POST",
            "--data-binary",
            SEED_BODY,
            "-H",
            "Content-Type: application/cloudevents+json",
        ];
        let header;
        if let Some(a) = auth {
            header = format!("Authorization: {a}");
            args.extend(["-H", header.as_str()]);
        }
        curl(&args, &url)
    };
    assert_eq!(post(None).0, 401);
    assert_eq!(post(Some("Bearer wrong")).0, 401);
    let (status, body) = curl(
        &["--cacert", ca],
        &format!("https://127.0.0.1:{port}/health"),
    );
    assert_eq!(status, 200, "{body}");
    // Without the CA the certificate is refused; plain HTTP gets no answer.
    assert_eq!(curl(&[], &format!("https://127.0.0.1:{port}/health")).0, 0);
    assert_eq!(curl(&[], &format!("http://127.0.0.1:{port}/health")).0, 0);
    let (_, metrics) = curl(
        &["--cacert", ca, "-H", "Authorization: Bearer s3cr3t-T0KEN"],
        &format!("https://127.0.0.1:{port}/metrics"),
    );
    assert!(
        metrics.contains(r#"s3_event_http_refused_total{server="sink",reason="unauthorized"} 2"#),
        "{metrics}"
    );
    let (out, log) = server.stop();
    assert!(
        out.contains(&format!("listening on https://127.0.0.1:{port}")),
        "{out}"
    );
    assert!(!log.contains("s3cr3t-T0KEN"), "{log}");
    // Nothing stored.
    assert!(stored(&dir.join("data")).is_empty());

    // The token accepted: stored once.
    let port = free_port();
    let mut config = config;
    config["v_port"] = json!(port.to_string());
    let server = Server::start(dir, &config, &[], port);
    let url = format!("https://127.0.0.1:{port}/");
    let (status, body) = curl(
        &[
            "--cacert",
            ca,
            "-X",
            "POST",
            "--data-binary",
            SEED_BODY,
            "-H",
            "Content-Type: application/cloudevents+json",
            "-H",
            "Authorization: Bearer s3cr3t-T0KEN",
        ],
        &url,
    );
    assert_eq!((status, body.as_str()), (200, r#"{"accepted":1}"#));
    server.stop();
    let records: usize = stored(&dir.join("data")).iter().map(|(_, r)| r.len()).sum();
    assert_eq!(records, 1);
}

/// Runs `s3-event verify` with `args`; returns (exit code, stdout, stderr).
fn verify(args: &[&str]) -> (i32, String, String) {
    let out = crate::util::s3_event("verify")
        .args(args)
        .env_remove("v_config_path")
        .env_remove("v_secret_path")
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (
        out.status.code().unwrap(),
        text(out.stdout),
        text(out.stderr),
    )
}

/// `s3-event verify` on what `s3-event sink` wrote as Parquet: exit 0 and
/// the count of records posted; after an object is deleted, exit 1 naming
/// it; bad arguments exit 2.
#[test]
fn verify_checks_what_the_sink_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let config = json!({
        "v_port": port.to_string(),
        "store": "local",
        "localDir": dir.join("data"),
        "spoolDir": dir.join("spool"),
        "bindAddress": "127.0.0.1",
        "prefix": "events/",
        "flushSize": "3",
        "encoding": "parquet",
    });
    let hour = chrono::Utc::now();
    let server = Server::start(dir, &config, &[], port);
    for i in 0..10 {
        let (code, _) = server.post(&[STRUCTURED], ce(&format!("v{i}")).to_string().as_bytes());
        assert_eq!(code, 200);
    }
    server.stop();
    let data = dir.join("data");
    let data = data.to_str().unwrap();
    let from = (hour - chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H")
        .to_string();
    let to = (hour + chrono::Duration::hours(2))
        .format("%Y-%m-%dT%H")
        .to_string();
    let range = [
        "--dir", data, "--prefix", "events/", "--from", &from, "--to", &to,
    ];
    let (code, out, err) = verify(&range);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("4 objects, 10 records"), "{out}");
    assert!(out.trim_end().ends_with("complete"), "{out}");
    // The second object (sequence numbers 3..=5) deleted.
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![dir.join("data")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                files.push(p);
            }
        }
    }
    files.sort();
    std::fs::remove_file(&files[1]).unwrap();
    let name = files[1].file_name().unwrap().to_str().unwrap();
    let (code, out, err) = verify(&range);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("missing: 3 sequence numbers 3..=5"), "{out}");
    assert!(out.contains(name), "{name} not named: {out}");
    assert!(err.contains("incomplete: 1 problem\n"), "{err}");
    // Usage and configuration errors.
    let (code, _, err) = verify(&["--dir", data, "--from", "yesterday"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("yesterday"), "{err}");
    let missing = dir.join("nowhere");
    let (code, _, err) = verify(&["--dir", missing.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not exist"), "{err}");
}
