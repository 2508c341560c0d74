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

use super::*;
use crate::conformance_tests::{env, objects, Env, Flaky, Kind, DOWN};
use crate::{decode, SpoolFsync, SpoolOptions};

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
    Arc::into_inner(sink).unwrap().crash();
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

use crate::StoreConfig;
