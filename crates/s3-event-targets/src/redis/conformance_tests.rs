//! The Redis target against real Redis servers (feature `integration`):
//! the conformance suite on a private `redis-server` this test spawns (so it
//! can stop and restart it), and the format semantics on the shared server
//! at `S3E_REDIS_ADDR` (default `127.0.0.1:6379`), read back through the
//! `redis` crate on a connection of its own.

use super::*;
use crate::conformance::{self, Harness};
use crate::db_common::{test_record, unique_name};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

fn shared_addr() -> String {
    std::env::var("S3E_REDIS_ADDR").unwrap_or_else(|_| "127.0.0.1:6379".into())
}

fn id() -> TargetId {
    "arn:minio:sqs::conformance:redis".parse().unwrap()
}

/// A connection of the test's own, not the target's.
async fn reader(addr: &str) -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to Redis at {addr}: {e}"))
}

/// The decoded object keys of the access-format entries of list `key`.
async fn list_keys(addr: &str, key: &str) -> Result<Vec<String>, RedisError> {
    let mut c = ::redis::Client::open(format!("redis://{addr}/"))?
        .get_multiplexed_async_connection()
        .await?;
    let entries: Vec<String> = ::redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await?;
    Ok(entries
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(e).expect("an entry is JSON");
            let raw = v[0]["Event"][0]["s3"]["object"]["key"]
                .as_str()
                .expect("an entry has Event[0].s3.object.key");
            s3_event_core::decode_key(raw).unwrap()
        })
        .collect())
}

/// A free loopback port (bound then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private `redis-server` on a free port, which the harness kills and
/// starts again on the same port. It keeps nothing on disk, so the harness
/// reads the list before killing it and remembers what it held: the events
/// the server accepted before its restart still count as received.
struct RedisHarness {
    port: u16,
    key: String,
    child: tokio::sync::Mutex<Option<Child>>,
    before_restarts: tokio::sync::Mutex<Vec<String>>,
}

impl RedisHarness {
    async fn new() -> RedisHarness {
        let h = RedisHarness {
            port: free_port(),
            key: unique_name("s3e_conformance"),
            child: tokio::sync::Mutex::new(None),
            before_restarts: tokio::sync::Mutex::new(Vec::new()),
        };
        h.start_server().await;
        h
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&self) -> Child {
        Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (see scripts/services.sh)")
    }
}

impl Drop for RedisHarness {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.get_mut().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[async_trait]
impl Harness for RedisHarness {
    fn target(&self) -> Arc<dyn Target> {
        let c = RedisConfig::new(self.addr(), self.key.clone(), Format::Access);
        Arc::new(RedisTarget::new(id(), c).unwrap())
    }

    async fn received(&self) -> Vec<String> {
        let mut all = self.before_restarts.lock().await.clone();
        if let Ok(now) = list_keys(&self.addr(), &self.key).await {
            all.extend(now);
        }
        all
    }

    async fn stop_server(&self) {
        let mut child = self.child.lock().await;
        let Some(mut c) = child.take() else { return };
        let held = list_keys(&self.addr(), &self.key)
            .await
            .expect("the private server answers before it is stopped");
        self.before_restarts.lock().await.extend(held);
        c.kill().unwrap();
        c.wait().unwrap();
    }

    async fn start_server(&self) {
        let mut child = self.child.lock().await;
        if child.is_some() {
            return;
        }
        *child = Some(self.spawn());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ok = async {
                let mut c = ::redis::Client::open(format!("redis://{}/", self.addr()))?
                    .get_multiplexed_async_connection()
                    .await?;
                ::redis::cmd("PING").query_async::<String>(&mut c).await
            };
            if ok.await.is_ok() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not answer on {} within 10 s",
                self.addr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Redis stores any value it is given, so no event is rejected by the
    /// server itself; the dead-letter path of permanent Redis errors is
    /// covered by `wrongtype_is_permanent_with_the_servers_message`.
    fn poison(&self) -> Option<EventRecord> {
        None
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_run_all_private_server() {
    conformance::run_all(&RedisHarness::new().await).await;
}

fn target(key: &str, format: Format) -> RedisTarget {
    RedisTarget::new(id(), RedisConfig::new(shared_addr(), key, format)).unwrap()
}

async fn del(key: &str) {
    let mut c = reader(&shared_addr()).await;
    let _: () = ::redis::cmd("DEL")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_creates_overwrites_and_deletes() {
    let key = unique_name("s3e_ns");
    let t = target(&key, Format::Namespace);
    let put = |k: &str, time: &str| test_record("s3:ObjectCreated:Put", "photos", k, time);
    t.send_batch(&[put("a b.jpg", "t1"), put("c.jpg", "t1")])
        .await
        .unwrap();
    t.send(&put("a b.jpg", "t2")).await.unwrap();
    let mut c = reader(&shared_addr()).await;
    let hash: std::collections::HashMap<String, String> = ::redis::cmd("HGETALL")
        .arg(&key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(hash.len(), 2, "{hash:?}");
    let v: serde_json::Value = serde_json::from_str(&hash["photos/a b.jpg"]).unwrap();
    assert_eq!(v["Records"][0]["eventTime"], "t2", "overwritten: {v}");
    assert_eq!(v["Records"].as_array().unwrap().len(), 1);

    // Removal (in one batch with a put of another key, and a put then
    // delete of the same key).
    t.send_batch(&[
        put("d.jpg", "t3"),
        test_record("s3:ObjectRemoved:Delete", "photos", "a b.jpg", "t3"),
        put("c.jpg", "t3"),
        test_record("s3:ObjectRemoved:Delete", "photos", "c.jpg", "t4"),
    ])
    .await
    .unwrap();
    let mut fields: Vec<String> = ::redis::cmd("HKEYS")
        .arg(&key)
        .query_async(&mut c)
        .await
        .unwrap();
    fields.sort();
    assert_eq!(fields, ["photos/d.jpg"]);
    t.send(&test_record(
        "s3:ObjectRemoved:Delete",
        "photos",
        "d.jpg",
        "t5",
    ))
    .await
    .unwrap();
    let exists: bool = ::redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!exists, "the last delete leaves no field (and so no hash)");
}

#[tokio::test(flavor = "multi_thread")]
async fn access_appends_in_order() {
    let key = unique_name("s3e_access");
    let t = target(&key, Format::Access);
    let ev: Vec<EventRecord> = (0..300)
        .map(|i| {
            test_record(
                "s3:ObjectCreated:Put",
                "b",
                &format!("k{i:03}"),
                "2024-01-01T00:00:00.000Z",
            )
        })
        .collect();
    t.send_batch(&ev[..256]).await.unwrap();
    t.send_batch(&ev[256..]).await.unwrap();
    t.send(&test_record("s3:ObjectRemoved:Delete", "b", "k000", "t"))
        .await
        .unwrap();
    let got = list_keys(&shared_addr(), &key).await.unwrap();
    let want: Vec<String> = (0..300)
        .map(|i| format!("k{i:03}"))
        .chain(["k000".into()])
        .collect();
    assert_eq!(got, want);
    let mut c = reader(&shared_addr()).await;
    let first: String = ::redis::cmd("LINDEX")
        .arg(&key)
        .arg(0)
        .query_async(&mut c)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v[0]["EventTime"], "2024-01-01T00:00:00.000Z");
    del(&key).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrongtype_is_permanent_with_the_servers_message() {
    let key = unique_name("s3e_wrongtype");
    let mut c = reader(&shared_addr()).await;
    let _: () = ::redis::cmd("SET")
        .arg(&key)
        .arg("a string")
        .query_async(&mut c)
        .await
        .unwrap();
    let t = target(&key, Format::Access);
    let e = t
        .send(&test_record("s3:ObjectCreated:Put", "b", "k", "t"))
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("WRONGTYPE"), "{e}");
    assert!(matches!(t.is_active().await, Ok(true)));
    del(&key).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_credentials_are_permanent_and_not_logged() {
    let mut cfg = RedisConfig::new(shared_addr(), unique_name("s3e_auth"), Format::Access);
    cfg.user = Some("nobody".into());
    cfg.password = Some("wrong-pw-123".into());
    let t = RedisTarget::new(id(), cfg).unwrap();
    let e = t
        .send(&test_record("s3:ObjectCreated:Put", "b", "k", "t"))
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(!e.to_string().contains("wrong-pw-123"), "{e}");
    assert!(t.is_active().await.is_err());
}
