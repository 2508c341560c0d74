//! Process tests of `s3-event relay`: the relay runs as a real process on
//! a free loopback port, is fed MinIO-shaped webhooks and signed SNS
//! messages over HTTP, and is checked through what reached a real Redis
//! (`S3E_REDIS_ADDR`, default `127.0.0.1:6379`) or its output directory.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use s3_event::core::inbound::SnsMessage;
use s3_event::inputs::receiver::testing::{now, signed, signer, TOPIC};
use serde_json::{json, Value};

use crate::util::{free_port, wait_for_port, ChildGuard};

/// The MinIO/AIStor webhook payload of the seeds (`s3:ObjectCreated:Put` of
/// `test-bucket/image.jpg`).
const MINIO_PAYLOAD: &str =
    include_str!("../../crates/s3-event-core/tests/fixtures/minio-aistor-put.json");

fn redis_addr() -> String {
    std::env::var("S3E_REDIS_ADDR").unwrap_or_else(|_| "127.0.0.1:6379".into())
}

pub(crate) fn redis() -> redis::Connection {
    redis::Client::open(format!("redis://{}/", redis_addr()))
        .and_then(|c| c.get_connection())
        .expect("Redis (scripts/services.sh) reachable")
}

/// A Redis key no other test or run uses.
pub(crate) fn unique_key(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("s3e-relay-test:{name}:{}:{nanos}", std::process::id())
}

/// The object keys of the access-format entries (`[{"Event": [record],
/// "EventTime": …}]`, as MinIO writes them) in list `key`, in order.
fn redis_object_keys(key: &str) -> Vec<String> {
    let entries: Vec<String> = redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query(&mut redis())
        .expect("LRANGE");
    entries
        .iter()
        .map(|e| {
            let v: Value = serde_json::from_str(e).expect("access entry is JSON");
            v[0]["Event"][0]["s3"]["object"]["key"]
                .as_str()
                .expect("entry has an object key")
                .to_owned()
        })
        .collect()
}

fn wait_for_redis(key: &str, n: usize, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let got = redis_object_keys(key);
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The seeds' MinIO payload for object `name` (in `test-bucket`).
fn minio_payload(name: &str) -> String {
    let mut v: Value = serde_json::from_str(MINIO_PAYLOAD).unwrap();
    v["Key"] = format!("test-bucket/{name}").into();
    v["Records"][0]["s3"]["object"]["key"] = name.into();
    v.to_string()
}

/// One HTTP/1.1 request; the status and body of the answer.
pub(crate) fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {out:?}")))?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_owned()))
}

pub(crate) fn post(addr: SocketAddr, auth: Option<&str>, body: &str) -> (u16, String) {
    let h: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    http(addr, "POST", "/", &h, body).expect("POST")
}

/// Starts the relay with `config` (written to `dir/relay.json`) or, when
/// `None`, the embedded default with `--listen`; working directory `dir`.
pub(crate) fn start(dir: &Path, config: Option<&Value>, port: u16) -> ChildGuard {
    let mut cmd = crate::util::s3_event("relay");
    cmd.current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    match config {
        Some(c) => {
            let path = dir.join("relay.json");
            std::fs::write(&path, serde_json::to_vec_pretty(c).unwrap()).unwrap();
            cmd.arg("--config").arg(&path);
        }
        None => {
            cmd.arg("--listen").arg(format!("127.0.0.1:{port}"));
        }
    }
    let child = ChildGuard::spawn(&mut cmd);
    wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(20),
    );
    child
}

pub(crate) fn redis_config(port: u16, key: &str, queue_dir: Option<&Path>) -> Value {
    let mut target = json!({"address": redis_addr(), "key": key, "format": "access"});
    if let Some(q) = queue_dir {
        target["queue_dir"] = q.to_str().unwrap().into();
    }
    json!({
        "listen": format!("127.0.0.1:{port}"),
        "targets": {"redis": {"1": target}},
    })
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                files_under(&p, out);
            } else if !p.to_string_lossy().ends_with(crate::util::ATTRIBUTES) {
                out.push(p);
            }
        }
    }
}

#[test]
fn embedded_default_writes_gzip_ndjson_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut relay = start(dir.path(), None, port);
    assert_eq!(http(addr, "GET", "/health", &[], "").unwrap().0, 200);
    let (status, body) = post(addr, None, MINIO_PAYLOAD);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("accepted 1 records"), "{body}");
    assert_eq!(post(addr, None, "{\"hello\": 1}").0, 400);
    // A record with an unknown event name is skipped and counted (a retry
    // could not fix it); the request is not failed.
    let mut bogus: Value = serde_json::from_str(MINIO_PAYLOAD).unwrap();
    bogus["Records"][0]["eventName"] = "s3:NoSuchEvent".into();
    assert_eq!(post(addr, None, &bogus.to_string()).0, 200);
    let (status, metrics) = http(addr, "GET", "/metrics", &[], "").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("s3_event_receiver_records_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("s3_event_notifier_invalid_records 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"s3_event_target_total{target="arn:minio:sqs:us-east-1:local:directory"} 1"#
        ),
        "{metrics}"
    );
    // SIGTERM: the open batch is flushed to an object, exit 0.
    let status = relay.terminate();
    assert!(status.success(), "{status:?}");
    let mut files = Vec::new();
    files_under(&dir.path().join("relay-data/events"), &mut files);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].to_str().unwrap().ends_with(".ndjson.gz"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&files[0]).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let sent: Value = serde_json::from_str(MINIO_PAYLOAD).unwrap();
    assert_eq!(lines, vec![sent["Records"][0].clone()]);
}

#[test]
fn bad_configuration_exits_2_naming_the_key_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let run = |config: Value| {
        let path = dir.path().join("bad.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let out = crate::util::s3_event("relay")
            .current_dir(dir.path())
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(json!({"listn": "127.0.0.1:1", "directory": {}}));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown field `listn`"), "{err}");
    let (code, err) = run(json!({"directory": {},
        "receiver": {"auth_token": "TOKEN-never-logged", "sns": {"max_age": 5}}}));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("`receiver`: `sns.max_age`: unknown field `max_age`"),
        "{err}"
    );
    assert!(!err.contains("TOKEN-never-logged"), "{err}");
    let (code, err) = run(json!({"targets": {"redis": {"1": {"adress": "x"}}}}));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("adress"), "{err}");
    let (code, err) = run(json!({"directory": {"flush_size": 0}}));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("directory.flush_size"), "{err}");
    let (code, err) = run(json!({"directory": {},
        "rules": "<NotificationConfiguration><QueueConfiguration><Queue>arn:minio:sqs:us-east-1:9:redis</Queue><Event>s3:ObjectCreated:*</Event></QueueConfiguration></NotificationConfiguration>"}));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("arn:minio:sqs:us-east-1:9:redis"), "{err}");
}

#[test]
fn minio_webhook_reaches_redis_with_auth_token_checked() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let key = unique_key("webhook");
    let mut config = redis_config(port, &key, None);
    config["receiver"] = json!({"auth_token": "s3cr3t"});
    // Only .jpg creations under photos/ go to Redis.
    config["rules"] = json!(
        "<NotificationConfiguration><QueueConfiguration><Id>jpg</Id>\
        <Queue>arn:minio:sqs:us-east-1:1:redis</Queue><Event>s3:ObjectCreated:*</Event>\
        <Filter><S3Key><FilterRule><Name>prefix</Name><Value>photos/</Value></FilterRule>\
        <FilterRule><Name>suffix</Name><Value>.jpg</Value></FilterRule></S3Key></Filter>\
        </QueueConfiguration></NotificationConfiguration>"
    );
    let mut relay = start(dir.path(), Some(&config), port);
    let body = minio_payload("photos/a.jpg");
    assert_eq!(post(addr, None, &body).0, 401);
    assert_eq!(post(addr, Some("Bearer wrong"), &body).0, 401);
    let (status, answer) = post(addr, Some("Bearer s3cr3t"), &body);
    assert_eq!(status, 200, "{answer}");
    // Filtered out by the rules: accepted, not delivered.
    assert_eq!(
        post(addr, Some("Bearer s3cr3t"), &minio_payload("photos/a.png")).0,
        200
    );
    assert_eq!(
        post(addr, Some("Bearer s3cr3t"), &minio_payload("photos/b.jpg")).0,
        200
    );
    let got = wait_for_redis(&key, 2, Duration::from_secs(10));
    assert_eq!(got, vec!["photos/a.jpg", "photos/b.jpg"]);
    // The entry is MinIO's access format around the record sent.
    let entries: Vec<String> = redis::cmd("LRANGE")
        .arg(&key)
        .arg(0)
        .arg(0)
        .query(&mut redis())
        .unwrap();
    let entry: Value = serde_json::from_str(&entries[0]).unwrap();
    let sent: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(entry[0]["Event"][0], sent["Records"][0]);
    assert!(entry[0]["EventTime"].is_string(), "{entry}");
    assert!(relay.terminate().success());
    let _: () = redis::cmd("DEL").arg(&key).query(&mut redis()).unwrap();
}

fn sns_notification(id: &str, object: &str) -> SnsMessage {
    let mut records: Value = serde_json::from_str(MINIO_PAYLOAD).unwrap();
    records["Records"][0]["s3"]["object"]["key"] = object.into();
    SnsMessage {
        message_type: Some("Notification".into()),
        message_id: Some(id.into()),
        topic_arn: Some(TOPIC.into()),
        subject: Some("Amazon S3 Notification".into()),
        message: Some(json!({"Records": records["Records"]}).to_string()),
        timestamp: Some(now()),
        unsubscribe_url: Some("https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe".into()),
        ..Default::default()
    }
}

#[test]
fn sns_signed_accepted_tampered_refused_confirmation_not_followed_to_local_host() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("sns.pem");
    std::fs::write(&cert, &signer().cert_pem).unwrap();
    // A local HTTP server standing in for a SubscribeURL: the relay must
    // not visit it (not an sns.<region>.amazonaws.com host).
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let trap_url = format!("https://{}/confirm?Token=t", trap.local_addr().unwrap());

    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let key = unique_key("sns");
    let mut config = redis_config(port, &key, None);
    config["receiver"] = json!({"auth_token": "s3cr3t", "sns": {
        "certificate_file": cert, "confirm_subscriptions": true, "topic_arns": [TOPIC]}});
    let mut relay = start(dir.path(), Some(&config), port);

    // Signed (v1 and v2): accepted without the token (the signature is the
    // proof), delivered.
    let (status, body) = post(
        addr,
        None,
        &signed(sns_notification("m-1", "sns/one.jpg"), "1").to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        addr,
        None,
        &signed(sns_notification("m-2", "sns/two.jpg"), "2").to_string(),
    );
    assert_eq!(status, 200, "{body}");
    // The same message again is a replay.
    let (status, body) = post(
        addr,
        None,
        &signed(sns_notification("m-2", "sns/two.jpg"), "2").to_string(),
    );
    assert_eq!(status, 409, "{body}");
    // Tampered: the Message changed after signing.
    let mut v = signed(sns_notification("m-3", "sns/three.jpg"), "2");
    v["Message"] = v["Message"]
        .as_str()
        .unwrap()
        .replace("sns/three.jpg", "sns/evil.jpg")
        .into();
    let (status, body) = post(addr, None, &v.to_string());
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("signature"), "{body}");
    // A signed SNS envelope inside an SQS body is checked too.
    let sqs = json!({"Messages": [{"MessageId": "q-1", "ReceiptHandle": "r",
        "Body": v.to_string()}]});
    assert_eq!(post(addr, Some("Bearer s3cr3t"), &sqs.to_string()).0, 403);
    let sqs = json!({"Messages": [{"MessageId": "q-2", "ReceiptHandle": "r",
        "Body": signed(sns_notification("m-4", "sns/four.jpg"), "2").to_string()}]});
    let (status, body) = post(addr, Some("Bearer s3cr3t"), &sqs.to_string());
    assert_eq!(status, 200, "{body}");

    // SubscriptionConfirmation: verified, but SubscribeURL is not an SNS
    // host, so it is not visited; the answer is 200 and says so.
    let confirmation = SnsMessage {
        message_type: Some("SubscriptionConfirmation".into()),
        message_id: Some("c-1".into()),
        token: Some("t".into()),
        topic_arn: Some(TOPIC.into()),
        message: Some("You have chosen to subscribe to the topic".into()),
        subscribe_url: Some(trap_url.clone()),
        timestamp: Some(now()),
        ..Default::default()
    };
    let (status, body) = post(addr, None, &signed(confirmation.clone(), "2").to_string());
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("subscription confirmation not followed"),
        "{body}"
    );
    // A tampered confirmation is refused before anything else.
    let mut forged = signed(confirmation, "2");
    forged["SubscribeURL"] =
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&x=1".into();
    assert_eq!(post(addr, None, &forged.to_string()).0, 403);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        matches!(trap.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the relay must not visit a SubscribeURL on a non-SNS host"
    );

    let got = wait_for_redis(&key, 3, Duration::from_secs(10));
    assert_eq!(got, vec!["sns/one.jpg", "sns/two.jpg", "sns/four.jpg"]);
    let (_, metrics) = http(addr, "GET", "/metrics", &[], "").unwrap();
    assert!(
        metrics.contains(r#"s3_event_receiver_rejected_total{reason="forged"} 3"#),
        "{metrics}"
    );
    assert!(relay.terminate().success());
    let _: () = redis::cmd("DEL").arg(&key).query(&mut redis()).unwrap();
}

#[test]
fn kill9_with_queue_dir_loses_no_acknowledged_event() {
    kill9_run(false);
}

/// The same with Redis unreachable until the restart: every acknowledged
/// event is only in `queue_dir` when the relay is killed.
#[test]
fn kill9_while_the_target_is_down_replays_the_queue_after_restart() {
    kill9_run(true);
}

fn kill9_run(target_down_first: bool) {
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("queue");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let key = unique_key("kill9");
    let config = redis_config(port, &key, Some(&queue));
    let mut first = config.clone();
    if target_down_first {
        // A loopback port nothing listens on.
        first["targets"]["redis"]["1"]["address"] = format!("127.0.0.1:{}", free_port()).into();
    }
    let mut relay = start(dir.path(), Some(&first), port);

    // Four clients POST distinct events until the relay dies.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (acked, failed, stop) = (acked.clone(), failed.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("c{c}/obj-{n:06}.bin");
                    match http(addr, "POST", "/", &[], &minio_payload(&name)) {
                        Ok((200, _)) => {
                            acked.lock().unwrap().insert(name);
                        }
                        Ok(_) | Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    n += 1;
                }
            })
        })
        .collect();
    // A random moment between 300 and 1300 ms in.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let at = Duration::from_millis(300 + u64::from(nanos % 1000));
    std::thread::sleep(at);
    relay.kill9();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let before_restart = redis_object_keys(&key).len();
    assert!(acked.len() > 10, "only {} events acknowledged", acked.len());
    if target_down_first {
        assert_eq!(before_restart, 0, "Redis was unreachable");
    }

    // Restart on the same queue_dir: what was queued is delivered.
    let mut relay = start(dir.path(), Some(&config), port);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut counts = BTreeMap::new();
    loop {
        counts.clear();
        for k in redis_object_keys(&key) {
            *counts.entry(k).or_insert(0usize) += 1;
        }
        if acked.iter().all(|k| counts.contains_key(k)) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let missing: Vec<_> = acked.iter().filter(|k| !counts.contains_key(*k)).collect();
    let duplicates: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    println!(
        "relay kill -9 after {at:?} (target down first: {target_down_first}): {} acknowledged, {} failed or cut off, {} in Redis \
         before restart, {} distinct after, {} missing, {} duplicated: {duplicates:?}",
        acked.len(),
        failed.load(Ordering::Relaxed),
        before_restart,
        counts.len(),
        missing.len(),
        duplicates.len(),
    );
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    assert!(relay.terminate().success());
    let _: () = redis::cmd("DEL").arg(&key).query(&mut redis()).unwrap();
}

/// `(eventName, object key)` of the access-format entries in list `key`.
pub(crate) fn redis_events(key: &str) -> Vec<(String, String)> {
    let entries: Vec<String> = redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query(&mut redis())
        .expect("LRANGE");
    entries
        .iter()
        .map(|e| {
            let v: Value = serde_json::from_str(e).expect("access entry is JSON");
            let r = &v[0]["Event"][0];
            (
                r["eventName"].as_str().unwrap_or_default().to_owned(),
                r["s3"]["object"]["key"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

#[test]
fn poller_through_the_relay_emits_once_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(bucket.join("in")).unwrap();
    std::fs::write(bucket.join("in/a.json"), b"{}").unwrap();
    std::fs::write(bucket.join("in/b c.json"), b"[]").unwrap();
    std::fs::write(bucket.join("elsewhere.json"), b"{}").unwrap();
    let port = free_port();
    let key = unique_key("poller");
    let mut config = redis_config(port, &key, Some(&dir.path().join("queue")));
    config["receiver"] = json!({"enable": false});
    config["poller"] = json!({
        "store": {"store": "local", "dir": bucket},
        "bucket": "photos",
        "prefix": "in",
        "interval_secs": 1,
        "cursor_file": dir.path().join("poller.cursor"),
    });
    let mut relay = start(dir.path(), Some(&config), port);
    let created = |k: &str| ("ObjectCreated:Put".to_owned(), k.to_owned());
    let removed = |k: &str| ("ObjectRemoved:Delete".to_owned(), k.to_owned());
    let deadline = Instant::now() + Duration::from_secs(15);
    while redis_events(&key).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Keys travel URL-encoded, as S3 sends them.
    let mut got = redis_events(&key);
    got.sort();
    assert_eq!(got, vec![created("in/a.json"), created("in/b+c.json")]);
    assert!(relay.terminate().success());

    // Restarted: nothing already emitted comes again; a new object and a
    // removal come once each.
    let mut relay = start(dir.path(), Some(&config), port);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(redis_events(&key).len(), 2, "{:?}", redis_events(&key));
    std::fs::write(bucket.join("in/d.json"), b"{}").unwrap();
    std::fs::remove_file(bucket.join("in/a.json")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while redis_events(&key).len() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(2500));
    let got = redis_events(&key);
    let mut last_two = got[2..].to_vec();
    last_two.sort();
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(last_two, vec![created("in/d.json"), removed("in/a.json")]);
    assert!(relay.terminate().success());
    let _: () = redis::cmd("DEL").arg(&key).query(&mut redis()).unwrap();
}

/// Must-show 2 of the binary's issue: the six target blocks of MinIO's
/// guide (seed 002), pasted as they are
/// (`examples/walkthrough/minio-seed-targets.json`), start the relay. Their
/// addresses are the guide's (`localhost:9092`, a Redis password this Redis
/// does not have, ...), so some targets are down: the relay says which and
/// starts anyway, queueing their events.
#[test]
fn the_six_seed_target_blocks_start_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let targets: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples/walkthrough/minio-seed-targets.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let config = json!({"listen": format!("127.0.0.1:{port}"), "targets": targets});
    let path = dir.path().join("relay.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let check = crate::util::s3_event("relay")
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .output()
        .unwrap();
    let shown = String::from_utf8(check.stdout).unwrap();
    assert_eq!(check.status.code(), Some(0), "{shown}");
    for secret in ["mypassword", "yoursecret"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    let stdout = dir.path().join("stdout");
    let stderr = dir.path().join("stderr");
    let mut relay = ChildGuard::spawn(
        crate::util::s3_event("relay")
            .arg("--config")
            .arg(&path)
            .current_dir(dir.path())
            .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap())),
    );
    wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(30),
    );
    let status = relay.terminate();
    let out = std::fs::read_to_string(&stdout).unwrap();
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert!(status.success(), "{out}\n{err}");
    for kind in [
        "amqp",
        "elasticsearch",
        "redis",
        "nats",
        "postgresql",
        "kafka",
    ] {
        assert!(
            out.contains(&format!("target arn:minio:sqs:us-east-1:1:{kind} ")),
            "{kind}: {out}"
        );
    }
    // Kafka on localhost:9092 and the Elasticsearch of the guide do not run
    // here.
    assert!(
        out.contains("kafka (in-memory queue; DOWN at start"),
        "{out}"
    );
    for secret in ["mypassword", "yoursecret"] {
        assert!(!out.contains(secret) && !err.contains(secret), "{secret}");
    }
}
