//! The server's behaviour: router-level tests over every store (memory, a
//! local directory and, with feature `integration`, SeaweedFS), a real
//! process on a loopback port, and a process killed with SIGKILL mid-stream.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Utc;
use serde_json::{json, Value};
use tower::ServiceExt as _;

use axum::http::HeaderMap;
use axum::Router;
use s3_event_sink::testing::{crash, env, objects, Env, Flaky, Kind, DENIED, DOWN};

use super::*;
use crate::sink::{decode, SpoolFsync, SpoolOptions, StoreConfig};

/// The seed's `curl -d` body, byte for byte.
const SEED_BODY: &str = r#"{"specversion":"0.3","id":"b25e2717-a470-45a0-8231-985a99aa9416","type":"com.github.pull.create","source":"https://github.com/cloudevents/spec/pull/123","time":"2019-07-04T17:31:00.000Z","datacontenttype":"application/json","data":{"much":"wow"}}"#;

struct Harness {
    env: Env,
    sink: Arc<Sink>,
    app: Router,
    _spool: tempfile::TempDir,
}

fn harness(kind: Kind, test: &str, opts: RouterOptions) -> Harness {
    let env = env(kind, test);
    let spool = tempfile::tempdir().unwrap();
    let sink = Arc::new(
        Sink::builder()
            .with_store(Arc::clone(&env.store))
            .with_prefix(env.prefix.clone())
            .with_flush_size(1000)
            .with_spool(SpoolOptions::new(spool.path()).with_fsync(SpoolFsync::Always))
            .build()
            .unwrap(),
    );
    let app = router(Arc::clone(&sink), opts);
    Harness {
        env,
        sink,
        app,
        _spool: spool,
    }
}

impl Harness {
    async fn send(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, headers, body)
    }

    async fn post(&self, headers: &[(&str, &str)], body: impl Into<Body>) -> (StatusCode, Value) {
        let mut req = Request::post("/");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (status, _, body) = self.send(req.body(body.into()).unwrap()).await;
        (status, body)
    }

    /// Shuts the sink down and returns every record stored, with its key.
    async fn stored(&self) -> Vec<(String, Value)> {
        self.sink.shutdown().await.unwrap();
        let mut out = Vec::new();
        for (k, b) in objects(&*self.env.store, &self.env.prefix).await {
            let d = decode(&k, &b).unwrap();
            assert!(d.bad.is_empty(), "{k}: {:?}", d.bad);
            out.extend(d.records.into_iter().map(|r| (k.clone(), r)));
        }
        out
    }
}

/// The partition an event received now lands in (hourly, processing time).
fn partition_now(prefix: &str) -> String {
    format!("{prefix}{}", Utc::now().format("%Y/%m/%d/%H/"))
}

fn ce(id: &str) -> Value {
    json!({"specversion":"1.0","id":id,"source":"/test","type":"com.example.test","data":{"id":id}})
}

const STRUCTURED: (&str, &str) = ("content-type", "application/cloudevents+json");
const BATCH: (&str, &str) = ("content-type", "application/cloudevents-batch+json");

async fn seed_curl_body_is_stored(kind: Kind) {
    let h = harness(kind, "seed", RouterOptions::default());
    // The seed's `-H'Content-Type:application/cloudevents+json'`.
    let (status, body) = h
        .post(
            &[("Content-Type", "application/cloudevents+json")],
            SEED_BODY,
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"accepted": 1})));
    let stored = h.stored().await;
    assert_eq!(stored.len(), 1);
    let (key, record) = &stored[0];
    assert!(key.starts_with(&partition_now(&h.env.prefix)), "{key}");
    assert!(key.ends_with(".ndjson.gz"), "{key}");
    let sent: Value = serde_json::from_str(SEED_BODY).unwrap();
    assert_eq!(record, &sent);
}

async fn every_mode_is_stored(kind: Kind) {
    let h = harness(kind, "modes", RouterOptions::default());
    // Structured, spec 1.0.
    let (s, _) = h.post(&[STRUCTURED], ce("s1").to_string()).await;
    assert_eq!(s, StatusCode::OK);
    // Binary, spec 1.0 and 0.3.
    for (spec, id) in [("1.0", "b1"), ("0.3", "b03")] {
        let (s, b) = h
            .post(
                &[
                    ("ce-specversion", spec),
                    ("ce-id", id),
                    ("ce-source", "/test"),
                    ("ce-type", "com.example.test"),
                    ("ce-tenant", "acme"),
                    ("content-type", "application/json"),
                ],
                json!({ "id": id }).to_string(),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    // Batch, mixing 1.0 and 0.3.
    let mut v03 = ce("t2");
    v03["specversion"] = json!("0.3");
    let batch = json!([ce("t1"), v03, ce("t3")]);
    let (s, b) = h.post(&[BATCH], batch.to_string()).await;
    assert_eq!((s, b), (StatusCode::OK, json!({"accepted": 3})));
    // An empty batch is fine and stores nothing.
    let (s, b) = h.post(&[BATCH], "[]").await;
    assert_eq!((s, b), (StatusCode::OK, json!({"accepted": 0})));
    // Raw S3 notification JSON, plain and in MinIO's envelope.
    let record = |req: &str| {
        json!({"eventVersion":"2.0","eventSource":"minio:s3","awsRegion":"",
            "eventTime":"2025-02-06T01:04:31.998Z","eventName":"s3:ObjectCreated:Put",
            "responseElements":{"x-amz-request-id":req,"x-amz-id-2":"dd90"},
            "s3":{"bucket":{"name":"photos"},"object":{"key":"a.jpg","size":1}}})
    };
    let plain = json!({"Records": [record("R1"), record("R2")]});
    let (s, b) = h
        .post(&[("content-type", "application/json")], plain.to_string())
        .await;
    assert_eq!((s, b), (StatusCode::OK, json!({"accepted": 2})));
    let minio =
        json!({"EventName":"s3:ObjectCreated:Put","Key":"photos/a.jpg","Records":[record("R3")]});
    let (s, _) = h
        .post(&[("content-type", "application/json")], minio.to_string())
        .await;
    assert_eq!(s, StatusCode::OK);

    let stored = h.stored().await;
    let part = partition_now(&h.env.prefix);
    let mut ids: Vec<&str> = stored
        .iter()
        .map(|(k, r)| {
            assert!(k.starts_with(&part), "{k}");
            r["id"].as_str().unwrap()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        ["R1.dd90", "R2.dd90", "R3.dd90", "b03", "b1", "s1", "t1", "t2", "t3"]
    );
    let by_id = |id: &str| &stored.iter().find(|(_, r)| r["id"] == id).unwrap().1;
    assert_eq!(by_id("b1")["tenant"], json!("acme"));
    assert_eq!(by_id("b1")["data"], json!({"id": "b1"}));
    assert_eq!(by_id("b03")["specversion"], json!("0.3"));
    assert_eq!(by_id("t2")["specversion"], json!("0.3"));
    let s3 = by_id("R3.dd90");
    assert_eq!(s3["type"], json!("com.amazonaws.s3.ObjectCreated:Put"));
    assert_eq!(s3["source"], json!("minio:s3..photos"));
    assert_eq!(s3["data"]["s3"]["object"]["key"], json!("a.jpg"));
}

async fn bad_requests_leave_no_trace(kind: Kind) {
    let h = harness(
        kind,
        "bad",
        RouterOptions {
            max_body_bytes: 4096,
            ..RouterOptions::default()
        },
    );
    let missing_id = json!({"specversion":"1.0","source":"/s","type":"t"});
    /// Headers, body, the status wanted and the attribute the error names.
    type Case = (
        Vec<(&'static str, &'static str)>,
        String,
        StatusCode,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            vec![STRUCTURED],
            missing_id.to_string(),
            StatusCode::BAD_REQUEST,
            Some("id"),
        ),
        (
            vec![STRUCTURED],
            json!({"specversion":"2.0","id":"1","source":"/s","type":"t"}).to_string(),
            StatusCode::BAD_REQUEST,
            Some("specversion"),
        ),
        (
            vec![STRUCTURED],
            json!({"specversion":"1.0","id":"1","source":"/s","type":"t","time":"noon"})
                .to_string(),
            StatusCode::BAD_REQUEST,
            Some("time"),
        ),
        (
            vec![STRUCTURED],
            "{not json".into(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        // One bad event spoils the whole batch: nothing of it is stored.
        (
            vec![BATCH],
            json!([ce("ok1"), missing_id, ce("ok2")]).to_string(),
            StatusCode::BAD_REQUEST,
            Some("id"),
        ),
        (
            vec![
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "/s"),
                ("content-type", "application/json"),
            ],
            "{}".into(),
            StatusCode::BAD_REQUEST,
            Some("type"),
        ),
        (
            vec![("content-type", "application/json")],
            json!({"hello": "world"}).to_string(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            vec![("content-type", "text/plain")],
            "hello".into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
        ),
        (
            vec![("content-type", "application/x-www-form-urlencoded")],
            SEED_BODY.into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
        ),
        (
            vec![],
            SEED_BODY.into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
        ),
        (
            vec![BATCH],
            json!((0..100).map(|i| ce(&i.to_string())).collect::<Vec<_>>()).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
        ),
    ];
    for (headers, body, want, attr) in cases {
        let (status, resp) = h.post(&headers, body.clone()).await;
        assert_eq!(status, want, "{headers:?} {body:.100}: {resp}");
        assert!(resp["error"].is_string(), "{resp}");
        assert_eq!(resp["attribute"].as_str(), attr, "{resp}");
    }
    assert_eq!(h.sink.stats().events_accepted, 0);
    assert!(h.stored().await.is_empty());
}

macro_rules! per_store {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Kind::Memory).await })*
        }
        mod local {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Kind::Local).await })*
        }
        #[cfg(feature = "integration")]
        mod s3 {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Kind::S3).await })*
        }
    };
}

per_store!(
    seed_curl_body_is_stored,
    every_mode_is_stored,
    bad_requests_leave_no_trace,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_answers_503_with_retry_after() {
    let e = env(Kind::Memory, "backpressure");
    let spool = tempfile::tempdir().unwrap();
    let sink = Arc::new(
        Sink::builder()
            .with_store(Flaky::new(Arc::clone(&e.store), DOWN))
            .with_prefix(e.prefix.clone())
            .with_spool(
                SpoolOptions::new(spool.path())
                    .with_segment_bytes(4096)
                    .with_max_bytes(8192),
            )
            .build()
            .unwrap(),
    );
    let app = router(
        Arc::clone(&sink),
        RouterOptions {
            push_wait: Duration::from_millis(200),
            ..RouterOptions::default()
        },
    );
    let mut accepted = 0;
    let mut refused = None;
    for i in 0..200 {
        let req = Request::post("/")
            .header("content-type", "application/cloudevents+json")
            .body(Body::from(ce(&format!("{i:0>200}")).to_string()))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        match resp.status() {
            StatusCode::OK => accepted += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                refused = Some(resp);
                break;
            }
            s => panic!("unexpected {s}"),
        }
    }
    let resp = refused.expect("the spool never filled up");
    assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    // Only the acknowledged events were taken.
    assert_eq!(sink.stats().events_accepted, accepted);
    assert!(accepted > 0);
    drop(app);
    crash(Arc::into_inner(sink).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics() {
    let h = harness(Kind::Memory, "metrics", RouterOptions::default());
    let (s, _) = h.post(&[STRUCTURED], ce("m1").to_string()).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h.post(&[("content-type", "text/plain")], "x").await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (s, _, body) = h
        .send(Request::get("/health").body(Body::empty()).unwrap())
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["status"], json!("ok"));
    assert_eq!(body["events_accepted"], json!(1));
    h.sink.flush().await.unwrap();
    let (s, headers, body) = h
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = body.as_str().unwrap();
    for needle in [
        "s3_sink_events_accepted_total",
        "s3_sink_events_received_total{mode=\"structured\"}",
        "s3_sink_events_rejected_total{reason=\"unsupported_media_type\"}",
        "s3_sink_objects_uploaded_total",
        "s3_sink_bytes_uploaded_total",
        "s3_sink_upload_retries_total",
        "s3_sink_spool_bytes",
        "s3_sink_request_duration_seconds_bucket{mode=\"structured\",status=\"200\",le=\"0.005\"}",
    ] {
        assert!(text.contains(needle), "no {needle} in\n{text}");
    }
    h.sink.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------
// Real processes on loopback
// ---------------------------------------------------------------------------

/// A minimal HTTP/1.1 exchange over a fresh connection: (status, body).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn local_config(data: &std::path::Path, spool: &std::path::Path) -> Config {
    let mut c = Config::from_parts(
        Some((
            "config.json".into(),
            json!({
                "v_port": "0",
                "bindAddress": "127.0.0.1",
                "store": "local",
                "localDir": data.display().to_string(),
                "spoolDir": spool.display().to_string(),
                "flushSize": "7",
                "scheduledInterval": "1",
            })
            .as_object()
            .unwrap()
            .clone(),
        )),
        None,
        &|_| None,
    )
    .unwrap();
    c.fsync = SpoolFsync::Never;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_on_a_port_shuts_down_gracefully() {
    let data = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let server = Server::bind(local_config(data.path(), spool.path()))
        .await
        .unwrap();
    let addr = server.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stop_rx.await;
    }));
    let (s, body) = http(addr, "POST", "/", "application/cloudevents+json", SEED_BODY)
        .await
        .unwrap();
    assert_eq!((s, body.as_str()), (200, r#"{"accepted":1}"#));
    let (s, _) = http(addr, "GET", "/health", "text/plain", "")
        .await
        .unwrap();
    assert_eq!(s, 200);
    stop_tx.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(http(addr, "GET", "/health", "text/plain", "")
        .await
        .is_err());
    // The open batch was flushed on shutdown.
    let store = StoreConfig::Local {
        dir: data.path().into(),
    }
    .build()
    .unwrap();
    let objs = objects(&*store, "").await;
    assert_eq!(objs.len(), 1);
    let d = decode(&objs[0].0, &objs[0].1).unwrap();
    assert_eq!(
        d.records[0]["id"],
        json!("b25e2717-a470-45a0-8231-985a99aa9416")
    );
}

// ---------------------------------------------------------------------------
// Exposed safely: token, concurrency bound, read timeout
// ---------------------------------------------------------------------------

/// A server on a loopback port with `extra` configuration keys; returns its
/// address, the stop sender, the task and the data directory.
async fn exposed(
    extra: Value,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), ServerError>>,
    tempfile::TempDir,
    tempfile::TempDir,
) {
    let data = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let mut values = json!({
        "v_port": "0",
        "store": "local",
        "localDir": data.path().display().to_string(),
        "spoolDir": spool.path().display().to_string(),
    });
    for (k, v) in extra.as_object().unwrap() {
        values[k] = v.clone();
    }
    let config = Config::from_parts(
        Some(("config.json".into(), values.as_object().unwrap().clone())),
        None,
        &|_| None,
    )
    .unwrap();
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stop_rx.await;
    }));
    (addr, stop_tx, task, data, spool)
}

/// Every record stored under `dir`.
async fn stored_in(dir: &std::path::Path) -> Vec<Value> {
    let store = StoreConfig::Local { dir: dir.into() }.build().unwrap();
    let mut out = Vec::new();
    for (k, b) in objects(&*store, "").await {
        out.extend(decode(&k, &b).unwrap().records);
    }
    out
}

/// Sends the head of a POST of `body` and its first `sent` bytes, and keeps
/// the connection open.
async fn partial_post(addr: SocketAddr, body: &str, sent: usize) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/cloudevents+json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body.as_bytes()[..sent]).await.unwrap();
    s
}

/// Reads the whole answer on `s` (within `within`) and returns its status.
async fn status_of(s: &mut tokio::net::TcpStream, within: Duration) -> Option<u16> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    tokio::time::timeout(within, s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    String::from_utf8_lossy(&out)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_gets_408_within_the_read_timeout() {
    let (addr, stop, task, data, _spool) = exposed(json!({"readTimeout": "1"})).await;
    let started = std::time::Instant::now();
    let mut slow = partial_post(addr, SEED_BODY, 10).await;
    let status = status_of(&mut slow, Duration::from_secs(5)).await;
    assert_eq!(status, Some(408), "after {:?}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_millis(900));
    // The server still answers others, and counted the refusal.
    let (s, body) = http(addr, "GET", "/metrics", "text/plain", "")
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert!(
        body.contains(r#"s3_event_http_refused_total{server="sink",reason="read_timeout"}"#),
        "{body}"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(stored_in(data.path()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_concurrency_limit_get_429() {
    use tokio::io::AsyncWriteExt;
    let (addr, stop, task, data, _spool) =
        exposed(json!({"maxConcurrentRequests": "1", "readTimeout": "10"})).await;
    // One request in flight: its body is not complete yet.
    let mut first = partial_post(addr, SEED_BODY, 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _) = http(addr, "POST", "/", "application/cloudevents+json", SEED_BODY)
        .await
        .unwrap();
    assert_eq!(s, 429, "a second request while one is in flight");
    // The first completes normally; then there is room again.
    first.write_all(&SEED_BODY.as_bytes()[10..]).await.unwrap();
    assert_eq!(
        status_of(&mut first, Duration::from_secs(5)).await,
        Some(200)
    );
    let (s, _) = http(addr, "POST", "/", "application/cloudevents+json", SEED_BODY)
        .await
        .unwrap();
    assert_eq!(s, 200);
    let (_, body) = http(addr, "GET", "/metrics", "text/plain", "")
        .await
        .unwrap();
    assert!(
        body.contains(r#"s3_event_http_refused_total{server="sink",reason="overloaded"}"#),
        "{body}"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(stored_in(data.path()).await.len(), 2);
}

/// `http` with an `Authorization` header.
async fn http_auth(addr: SocketAddr, path: &str, auth: Option<&str>, body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let method = if body.is_empty() { "GET" } else { "POST" };
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/cloudevents+json\r\n\
         {auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_without_the_token_gets_401_and_stores_nothing() {
    let (addr, stop, task, data, _spool) = exposed(json!({"authToken": "s3cr3t"})).await;
    assert_eq!(http_auth(addr, "/", None, SEED_BODY).await, 401);
    assert_eq!(
        http_auth(addr, "/", Some("Bearer wrong"), SEED_BODY).await,
        401
    );
    assert_eq!(http_auth(addr, "/", Some("s3cr3t"), SEED_BODY).await, 401);
    assert_eq!(http_auth(addr, "/metrics", None, "").await, 401);
    // Health checks need no token.
    assert_eq!(http_auth(addr, "/health", None, "").await, 200);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(stored_in(data.path()).await.is_empty());

    // With the token, the same POST is stored.
    let (addr, stop, task, data, _spool) = exposed(json!({"authToken": "s3cr3t"})).await;
    assert_eq!(
        http_auth(addr, "/", Some("Bearer s3cr3t"), SEED_BODY).await,
        200
    );
    assert_eq!(
        http_auth(addr, "/metrics", Some("Bearer s3cr3t"), "").await,
        200
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(stored_in(data.path()).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_template_event_time_and_uuid_names_from_the_configuration() {
    let (addr, stop, task, data, _spool) = exposed(json!({
        "partitionTemplate": "{type}/%Y/%m/",
        "partitionTime": "event",
        "objectNames": "uuid",
        "shards": "2",
    }))
    .await;
    let (s, _) = http(addr, "POST", "/", "application/cloudevents+json", SEED_BODY)
        .await
        .unwrap();
    assert_eq!(s, 200);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let store = StoreConfig::Local {
        dir: data.path().into(),
    }
    .build()
    .unwrap();
    let keys: Vec<String> = objects(&*store, "")
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    // `time` of the event (2019-07), not today; a UUID as the name.
    let name = keys[0]
        .strip_prefix("com.github.pull.create/2019/07/")
        .unwrap_or_else(|| panic!("{keys:?}"));
    let uuid = name.strip_suffix(".ndjson.gz").unwrap();
    assert_eq!(uuid.len(), 36, "{name}");
    assert_eq!(uuid.matches('-').count(), 4, "{name}");
}

/// The start-up check against SeaweedFS: good credentials pass; wrong
/// credentials and a missing bucket fail within seconds, naming the bucket,
/// the endpoint and what the store said.
#[cfg(feature = "integration")]
#[tokio::test]
async fn check_store_names_bad_credentials_and_missing_buckets() {
    let good = s3_event_sink::testing::s3_config();
    let endpoint = good.endpoint.clone().unwrap();
    use base64::Engine as _;
    let config = |bucket: &str, secret: &str| {
        let secret_b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        let key_b64 = base64::engine::general_purpose::STANDARD
            .encode(good.access_key_id.as_deref().unwrap());
        Config::from_parts(
            Some((
                "config.json".into(),
                json!({"bucketName": bucket, "endpoint": endpoint, "region": "us-east-1"})
                    .as_object()
                    .unwrap()
                    .clone(),
            )),
            Some((
                "secret.json".into(),
                json!({"awsAccessKeyID": key_b64, "awsSecretAccessKey": secret_b64})
                    .as_object()
                    .unwrap()
                    .clone(),
            )),
            &|_| None,
        )
        .unwrap()
    };
    let secret = good.secret_access_key.clone().unwrap();
    config(&good.bucket, &secret).check_store().await.unwrap();
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
        (good.bucket.as_str(), "not-the-secret", "403"),
        (missing.as_str(), secret.as_str(), "NoSuchBucket"),
    ] {
        let started = std::time::Instant::now();
        let e = match config(bucket, secret).check_store().await {
            Ok(()) => panic!("{bucket}: the check passed"),
            Err(e) => e.to_string(),
        };
        assert!(started.elapsed() < Duration::from_secs(5), "{e}");
        assert!(e.contains(&format!("s3://{bucket}/")), "{e}");
        assert!(e.contains(&endpoint), "{e}");
        assert!(e.contains(says), "{e}");
        assert!(!e.contains("not-the-secret"), "{e}");
    }
}

// ---------------------------------------------------------------------------
// kill -9 mid-stream
// ---------------------------------------------------------------------------

const CHILD_CONFIG: &str = "S3E_CHILD_CONFIG";
const CHILD_SECRET: &str = "S3E_CHILD_SECRET";
const CHILD_ADDR_FILE: &str = "S3E_CHILD_ADDR_FILE";

/// Not a test of its own: the body of the server process that
/// `kill_9_mid_stream` starts (this test binary, filtered to this function)
/// and kills. Serves the configuration in `$S3E_CHILD_CONFIG` until SIGTERM
/// and writes its address to `$S3E_CHILD_ADDR_FILE`; without them, does
/// nothing.
#[test]
#[ignore = "run as a child process by kill_9_mid_stream"]
fn child_server() {
    let Ok(config) = std::env::var(CHILD_CONFIG) else {
        return;
    };
    let addr_file = std::env::var(CHILD_ADDR_FILE).unwrap();
    let object = |s: &str| serde_json::from_str::<serde_json::Map<String, Value>>(s).unwrap();
    let secret = std::env::var(CHILD_SECRET)
        .ok()
        .map(|s| ("secret.json".to_owned(), object(&s)));
    let config = Config::from_parts(
        Some(("config.json".into(), object(&config))),
        secret,
        &|_| None,
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = Server::bind(config).await.unwrap();
        let tmp = format!("{addr_file}.tmp");
        std::fs::write(&tmp, server.local_addr().to_string()).unwrap();
        std::fs::rename(&tmp, &addr_file).unwrap();
        server.run(shutdown_signal()).await.unwrap();
    });
}

struct Child {
    process: std::process::Child,
    addr: SocketAddr,
}

async fn start_child(config: &Value, secret: Option<&Value>, dir: &std::path::Path) -> Child {
    let addr_file = dir.join("addr");
    let _ = std::fs::remove_file(&addr_file);
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "sink_server::tests::child_server",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_CONFIG, config.to_string())
    .env(CHILD_ADDR_FILE, &addr_file)
    .env_remove(CHILD_SECRET)
    .stdout(std::process::Stdio::null());
    if let Some(s) = secret {
        cmd.env(CHILD_SECRET, s.to_string());
    }
    let mut process = cmd.spawn().unwrap();
    for _ in 0..600 {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            return Child {
                process,
                addr: a.parse().unwrap(),
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = process.kill();
    let _ = process.wait();
    panic!("the child server did not start");
}

/// Posts events from `clients` concurrent clients (single events and
/// batches of 10) until the server goes away; returns (acknowledged, sent) ids.
async fn stream(addr: SocketAddr, clients: usize) -> (Vec<String>, Vec<String>) {
    let mut tasks = Vec::new();
    for c in 0..clients {
        tasks.push(tokio::spawn(async move {
            let (mut acked, mut sent) = (Vec::new(), Vec::new());
            for n in 0.. {
                let ids: Vec<String> = if n % 2 == 0 {
                    vec![format!("c{c}-{n}")]
                } else {
                    (0..10).map(|i| format!("c{c}-{n}-{i}")).collect()
                };
                let (ct, body) = if ids.len() == 1 {
                    ("application/cloudevents+json", ce(&ids[0]).to_string())
                } else {
                    let evs: Vec<Value> = ids.iter().map(|i| ce(i)).collect();
                    ("application/cloudevents-batch+json", json!(evs).to_string())
                };
                sent.extend(ids.iter().cloned());
                let r = tokio::time::timeout(
                    Duration::from_secs(10),
                    http(addr, "POST", "/", ct, &body),
                )
                .await;
                match r {
                    Ok(Ok((200, _))) => acked.extend(ids),
                    Ok(Ok((s, b))) => panic!("unexpected {s}: {b}"),
                    _ => break,
                }
            }
            (acked, sent)
        }));
    }
    let (mut acked, mut sent) = (Vec::new(), Vec::new());
    for t in tasks {
        let (a, s) = t.await.unwrap();
        acked.extend(a);
        sent.extend(s);
    }
    (acked, sent)
}

async fn kill_9_mid_stream(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let spool = dir.path().join("spool");
    let e = env(kind, "kill9");
    let mut config = json!({
        "v_port": "0",
        "bindAddress": "127.0.0.1",
        "spoolDir": spool.display().to_string(),
        "prefix": e.prefix,
        "flushSize": "25",
        "scheduledInterval": "1",
        "fsync": "10ms",
    });
    // Only the S3 case (feature `integration`) sets it.
    #[cfg_attr(not(feature = "integration"), allow(unused_mut))]
    let mut secret = None;
    let store = match kind {
        #[cfg(feature = "integration")]
        Kind::S3 => {
            use base64::Engine as _;
            let c = s3_event_sink::testing::s3_config();
            let b64 = |s: &Option<String>| {
                base64::engine::general_purpose::STANDARD.encode(s.as_deref().unwrap())
            };
            config["store"] = json!("s3");
            config["bucketName"] = json!(c.bucket);
            config["endpoint"] = json!(c.endpoint);
            config["region"] = json!(c.region);
            secret = Some(json!({
                "awsAccessKeyID": b64(&c.access_key_id),
                "awsSecretAccessKey": b64(&c.secret_access_key),
            }));
            Arc::clone(&e.store)
        }
        _ => {
            config["store"] = json!("local");
            config["localDir"] = json!(data.display().to_string());
            StoreConfig::Local { dir: data.clone() }.build().unwrap()
        }
    };

    let mut child = start_child(&config, secret.as_ref(), dir.path()).await;
    let addr = child.addr;
    let streaming = tokio::spawn(stream(addr, 4));
    // Let some batches upload and others sit open or in flight, then SIGKILL.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.process.kill().unwrap();
    child.process.wait().unwrap();
    let (acked, sent) = streaming.await.unwrap();
    assert!(
        acked.len() > 100,
        "only {} events acknowledged",
        acked.len()
    );

    // Restart on the same spool; it uploads what the killed process left.
    let mut child = start_child(&config, secret.as_ref(), dir.path()).await;
    let (s, _) = http(
        child.addr,
        "POST",
        "/",
        "application/cloudevents+json",
        &ce("after-restart").to_string(),
    )
    .await
    .unwrap();
    assert_eq!(s, 200);
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.process.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.process.wait().unwrap();
    assert!(status.success(), "SIGTERM: {status}");

    let mut count = std::collections::HashMap::<String, usize>::new();
    for (k, b) in objects(&*store, &e.prefix).await {
        for r in decode(&k, &b).unwrap().records {
            *count
                .entry(r["id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    for id in acked
        .iter()
        .chain(std::iter::once(&"after-restart".to_owned()))
    {
        assert_eq!(count.get(id), Some(&1), "acknowledged event {id}");
    }
    let sent: std::collections::HashSet<&String> = sent.iter().collect();
    for (id, n) in &count {
        assert_eq!(*n, 1, "{id} stored {n} times");
        assert!(
            id == "after-restart" || sent.contains(id),
            "{id} never sent"
        );
    }
    eprintln!(
        "kill -9 ({kind:?}): {} acknowledged, {} sent, {} stored, each once",
        acked.len(),
        sent.len(),
        count.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_local() {
    kill_9_mid_stream(Kind::Local).await
}

#[cfg(feature = "integration")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_s3() {
    kill_9_mid_stream(Kind::S3).await
}

/// Uploads refused for a reason retrying will not fix (here: access
/// denied) turn `/health` into 503 `degraded` naming the reason, and set the
/// `s3_sink_degraded` gauge; the events stay accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_a_degraded_sink() {
    let flaky = Flaky::new(Arc::new(object_store::memory::InMemory::new()), DENIED);
    let spool = tempfile::tempdir().unwrap();
    let sink = Arc::new(
        Sink::builder()
            .with_store(flaky)
            .with_flush_size(1)
            .with_spool(SpoolOptions::new(spool.path()).with_fsync(SpoolFsync::Never))
            .build()
            .unwrap(),
    );
    let app = router(Arc::clone(&sink), RouterOptions::default());
    let resp = app
        .clone()
        .oneshot(
            Request::post("/")
                .header("content-type", "application/cloudevents+json")
                .body(Body::from(ce("d1").to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let t0 = std::time::Instant::now();
    let body = loop {
        let resp = app
            .clone()
            .oneshot(Request::get("/health").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break body;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(30), "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(body["status"], json!("degraded"));
    assert!(
        body["reason"].as_str().unwrap().contains("access denied"),
        "{body}"
    );
    let resp = app
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("s3_sink_degraded 1"), "{text}");
    assert!(
        text.contains("s3_sink_upload_permanent_errors_total"),
        "{text}"
    );
}

/// `encoding: parquet`: CloudEvents posted in any mode are stored as
/// Parquet rows and read back as sent; a sink whose schema cannot hold
/// them answers 400 and stores nothing.
#[cfg(feature = "parquet")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_objects_hold_the_events_posted() {
    use crate::sink::{Encoding, ParquetOptions, ParquetSchema};
    let with_schema = |schema: ParquetSchema, test: &str| {
        let env = env(Kind::Memory, test);
        let spool = tempfile::tempdir().unwrap();
        let sink = Arc::new(
            Sink::builder()
                .with_store(Arc::clone(&env.store))
                .with_prefix(env.prefix.clone())
                .with_encoding(Encoding::Parquet(
                    ParquetOptions::default().with_schema(schema),
                ))
                .with_spool(SpoolOptions::new(spool.path()).with_fsync(SpoolFsync::Always))
                .build()
                .unwrap(),
        );
        let app = router(Arc::clone(&sink), RouterOptions::default());
        Harness {
            env,
            sink,
            app,
            _spool: spool,
        }
    };
    let h = with_schema(ParquetSchema::CloudEvents, "parquet-ce");
    let batch = json!([ce("a"), ce("b")]);
    let (status, _) = h.post(&[BATCH], batch.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h.post(&[STRUCTURED], ce("c").to_string()).await;
    assert_eq!(status, StatusCode::OK);
    let stored = h.stored().await;
    assert!(
        stored.iter().all(|(k, _)| k.ends_with(".parquet")),
        "{stored:?}"
    );
    let records: Vec<Value> = stored.into_iter().map(|(_, r)| r).collect();
    assert_eq!(records, vec![ce("a"), ce("b"), ce("c")]);

    let h = with_schema(ParquetSchema::S3Records, "parquet-s3");
    let (status, body) = h.post(&[STRUCTURED], ce("d").to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("eventName"), "{body}");
    assert_eq!(h.sink.stats().records_refused, 1);
    assert!(h.stored().await.is_empty());
}
