//! The target conformance suite ([`crate::conformance`]) run against the
//! NATS target and a real `nats-server` (feature `integration`).
//!
//! - Shared server: `S3E_NATS_URL` (default `nats://127.0.0.1:4222`, with
//!   JetStream). Each harness uses its own subject (and stream), so the tests
//!   run in parallel. No restarts: the shared server is never stopped.
//! - Private server: `nats-server -a 127.0.0.1 -p <free port> -js -sd <tmp>`
//!   (`S3E_NATS_SERVER`, default `nats-server` on `PATH`), killed and started
//!   again by the restart tests.
//!
//! Events are read back through a separate connection: from a file- or
//! memory-backed JetStream stream capturing the subject (which also keeps
//! core NATS publishes, so nothing is lost while a reader reconnects), or,
//! for core NATS on the shared server, from a subscription.

use super::*;
use crate::broker_tests::{decoded_key, env_or, free_port, temp_dir, unique, PrivateServer};
use crate::conformance::{self, Harness};
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use futures_util::StreamExt;
use std::sync::{Arc, Mutex};

fn shared_url() -> String {
    env_or("S3E_NATS_URL", "nats://127.0.0.1:4222")
}

enum Reader {
    /// A subscription's messages, collected by a task.
    Sub(Arc<Mutex<Vec<String>>>),
    /// A stream read by sequence number: the keys read so far.
    Stream {
        js: Box<jetstream::Context>,
        name: String,
        seen: tokio::sync::Mutex<Vec<String>>,
    },
}

struct NatsHarness {
    url: String,
    subject: String,
    jetstream: bool,
    reader: Reader,
    server: Option<PrivateServer>,
}

async fn reader_client(url: &str) -> Client {
    ConnectOptions::new()
        .max_reconnects(None)
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(url)
        .await
        .expect("the test's reader connects to nats-server")
}

impl NatsHarness {
    /// On the shared server: core NATS read through a subscription, or
    /// JetStream read from a memory stream.
    async fn shared(jetstream: bool) -> NatsHarness {
        let url = shared_url();
        let subject = unique("s3e.test");
        let reader = if jetstream {
            Self::stream_reader(&url, &subject, StorageType::Memory).await
        } else {
            let client = reader_client(&url).await;
            let mut sub = client.subscribe(subject.clone()).await.unwrap();
            client.flush().await.unwrap();
            let got: Arc<Mutex<Vec<String>>> = Arc::default();
            let g = got.clone();
            tokio::spawn(async move {
                let _client = client;
                while let Some(m) = sub.next().await {
                    if let Some(k) = decoded_key(&m.payload) {
                        g.lock().unwrap().push(k);
                    }
                }
            });
            Reader::Sub(got)
        };
        NatsHarness {
            url,
            subject,
            jetstream,
            reader,
            server: None,
        }
    }

    /// On a private server, read back from a file stream that survives the
    /// server's restarts.
    async fn private(jetstream: bool) -> NatsHarness {
        let port = free_port();
        let (dir, path) = temp_dir();
        let server = PrivateServer::start(
            env_or("S3E_NATS_SERVER", "nats-server"),
            [
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-js",
                "-sd",
                &path.to_string_lossy(),
            ]
            .map(String::from)
            .to_vec(),
            port,
            Some(dir),
        );
        let url = format!("nats://127.0.0.1:{}", server.port());
        let subject = unique("s3e.test");
        let reader = Self::stream_reader(&url, &subject, StorageType::File).await;
        NatsHarness {
            url,
            subject,
            jetstream,
            reader,
            server: Some(server),
        }
    }

    async fn stream_reader(url: &str, subject: &str, storage: StorageType) -> Reader {
        let js = jetstream::new(reader_client(url).await);
        let name = subject.replace('.', "_");
        js.create_stream(StreamConfig {
            name: name.clone(),
            subjects: vec![subject.to_owned()],
            storage,
            max_age: Duration::from_secs(600),
            ..Default::default()
        })
        .await
        .expect("the test creates its stream");
        Reader::Stream {
            js: Box::new(js),
            name,
            seen: tokio::sync::Mutex::new(Vec::new()),
        }
    }

    fn config(&self) -> NatsConfig {
        NatsConfig {
            jetstream: self.jetstream,
            ..NatsConfig::new(self.url.clone(), self.subject.clone())
        }
    }
}

#[async_trait]
impl Harness for NatsHarness {
    fn target(&self) -> Arc<dyn Target> {
        let id: TargetId = "arn:minio:sqs::conformance:nats".parse().unwrap();
        Arc::new(NatsTarget::new(id, self.config()).unwrap())
    }

    async fn received(&self) -> Vec<String> {
        match &self.reader {
            Reader::Sub(got) => got.lock().unwrap().clone(),
            Reader::Stream { js, name, seen } => {
                let mut seen = seen.lock().await;
                // The reader may be reconnecting after a restart: report
                // what was read so far and try again on the next call.
                let Ok(Ok(mut stream)) =
                    tokio::time::timeout(Duration::from_secs(2), js.get_stream(name)).await
                else {
                    return seen.clone();
                };
                let Ok(info) = stream.info().await else {
                    return seen.clone();
                };
                let last = info.state.last_sequence;
                let mut next = seen.len() as u64 + 1;
                while next <= last {
                    let Ok(m) = stream.get_raw_message(next).await else {
                        break;
                    };
                    seen.push(decoded_key(&m.payload).unwrap_or_default());
                    next += 1;
                }
                seen.clone()
            }
        }
    }

    async fn stop_server(&self) {
        if let Some(s) = &self.server {
            s.stop();
        }
    }

    async fn start_server(&self) {
        if let Some(s) = &self.server {
            s.start_again();
        }
    }

    fn supports_restart(&self) -> bool {
        self.server.is_some()
    }

    /// Larger than the server's `max_payload` (1 MiB by default).
    fn poison(&self) -> Option<EventRecord> {
        let mut r = conformance::record("conformance-poison");
        r.extra.insert(
            "padding".into(),
            serde_json::Value::String("x".repeat(2 << 20)),
        );
        Some(r)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn core_publishes() {
    conformance::publishes(&NatsHarness::shared(false).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn core_preserves_order() {
    conformance::preserves_order(&NatsHarness::shared(false).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn core_dead_letters_poison() {
    conformance::dead_letters_poison(&NatsHarness::shared(false).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn jetstream_run_all_on_shared_server() {
    conformance::run_all(&NatsHarness::shared(true).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn core_restart_private_server() {
    let h = NatsHarness::private(false).await;
    conformance::is_active_is_honest(&h).await;
    conformance::survives_target_restart(&h).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn jetstream_run_all_private_server() {
    conformance::run_all(&NatsHarness::private(true).await).await;
}

/// A JetStream publish to a subject no stream captures is permanent, with
/// the server's reason.
#[tokio::test(flavor = "multi_thread")]
async fn jetstream_without_stream_is_permanent() {
    let c = NatsConfig {
        jetstream: true,
        ..NatsConfig::new(shared_url(), unique("s3e.nostream"))
    };
    let t = NatsTarget::new("arn:minio:sqs::1:nats".parse().unwrap(), c).unwrap();
    let err = t.send(&conformance::record("k")).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
}

/// A wrong token on a private server that requires one is a permanent
/// error naming the authorization violation.
#[tokio::test(flavor = "multi_thread")]
async fn bad_token_is_permanent() {
    let port = free_port();
    let _server = PrivateServer::start(
        env_or("S3E_NATS_SERVER", "nats-server"),
        [
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--auth",
            "right-token",
        ]
        .map(String::from)
        .to_vec(),
        port,
        None,
    );
    let c = NatsConfig {
        token: Some("wrong-token".into()),
        ..NatsConfig::new(format!("nats://127.0.0.1:{port}"), "s")
    };
    let t = NatsTarget::new("arn:minio:sqs::1:nats".parse().unwrap(), c).unwrap();
    let err = t.send(&conformance::record("k")).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("authorization"), "{err}");
    assert!(!err.to_string().contains("wrong-token"), "{err}");
    let ok = NatsConfig {
        token: Some("right-token".into()),
        ..NatsConfig::new(format!("nats://127.0.0.1:{port}"), "s")
    };
    let t = NatsTarget::new("arn:minio:sqs::1:nats".parse().unwrap(), ok).unwrap();
    t.send(&conformance::record("k")).await.unwrap();
}

/// Seed 002's NATS block (`username`, `password`, `secure`, `pingInterval`)
/// against a private `nats-server` that requires that user and password:
/// only `address` is changed, to the private server's port. The right
/// password publishes; a wrong one is a permanent error that does not show
/// the password.
#[tokio::test(flavor = "multi_thread")]
async fn the_seed_block_authenticates_with_user_and_password() {
    use crate::config::seed;
    let port = free_port();
    let _server = PrivateServer::start(
        env_or("S3E_NATS_SERVER", "nats-server"),
        [
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--user",
            "yourusername",
            "--pass",
            "yoursecret",
        ]
        .map(String::from)
        .to_vec(),
        port,
        None,
    );
    let block = seed::NATS.replace("0.0.0.0:4222", &format!("127.0.0.1:{port}"));
    let c = crate::NotifyConfig::from_json(&seed::doc(&[&block]), "us-east-1").unwrap();
    let (target, _) = c.build_targets().unwrap().remove(0);
    let reader = async_nats::ConnectOptions::with_user_and_password(
        "yourusername".into(),
        "yoursecret".into(),
    )
    .connect(format!("127.0.0.1:{port}"))
    .await
    .unwrap();
    let mut sub = reader.subscribe("bucketevents").await.unwrap();
    reader.flush().await.unwrap();
    target.send(&conformance::record("seed.jpg")).await.unwrap();
    let msg = tokio::time::timeout(std::time::Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(decoded_key(&msg.payload).as_deref(), Some("seed.jpg"));

    let wrong = block.replace("\"yoursecret\"", "\"not-the-secret\"");
    let c = crate::NotifyConfig::from_json(&seed::doc(&[&wrong]), "us-east-1").unwrap();
    let (target, _) = c.build_targets().unwrap().remove(0);
    let err = target.send(&conformance::record("k")).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(!err.to_string().contains("not-the-secret"), "{err}");
}
