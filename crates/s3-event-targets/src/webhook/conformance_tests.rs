//! The target conformance suite ([`crate::conformance`]) run against the
//! webhook target and a real axum receiver on loopback.

use super::*;
use crate::conformance::{self, Harness};
use axum::body::Bytes;
use axum::http::{Method, StatusCode as AxStatus};
use axum::Router;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running receiver: the signal that stops it and its task.
struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// An axum receiver on a fixed ephemeral loopback port that can be stopped
/// and started again on the same port. It records the decoded key of every
/// POSTed MinIO envelope and answers 400 to keys containing "poison".
struct WebhookHarness {
    port: u16,
    received: Arc<Mutex<Vec<String>>>,
    server: tokio::sync::Mutex<Option<Server>>,
}

/// The decoded object key of a MinIO envelope body with one record.
fn decoded_key(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let records = v["Records"].as_array()?;
    if records.len() != 1 {
        return None;
    }
    let raw = records[0]["s3"]["object"]["key"].as_str()?;
    s3_event_core::decode_key(raw).ok()
}

impl WebhookHarness {
    async fn new() -> WebhookHarness {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let h = WebhookHarness {
            port,
            received: Arc::default(),
            server: tokio::sync::Mutex::new(None),
        };
        *h.server.lock().await = Some(h.serve(listener));
        h
    }

    fn serve(&self, listener: tokio::net::TcpListener) -> Server {
        let received = self.received.clone();
        let app = Router::new().fallback(move |method: Method, body: Bytes| {
            let received = received.clone();
            async move {
                if method != Method::POST {
                    return AxStatus::OK;
                }
                match decoded_key(&body) {
                    Some(k) if k.contains("poison") => AxStatus::BAD_REQUEST,
                    Some(k) => {
                        received.lock().unwrap().push(k);
                        AxStatus::OK
                    }
                    None => AxStatus::BAD_REQUEST,
                }
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Server { stop, task }
    }
}

#[async_trait]
impl Harness for WebhookHarness {
    fn target(&self) -> Arc<dyn Target> {
        let mut c = WebhookConfig::new(format!("http://127.0.0.1:{}/", self.port));
        c.client.request_timeout = Some(Duration::from_secs(2));
        let id: TargetId = "arn:minio:sqs::conformance:webhook".parse().unwrap();
        Arc::new(WebhookTarget::new(id, c).unwrap())
    }

    async fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    async fn stop_server(&self) {
        let Some(server) = self.server.lock().await.take() else {
            return;
        };
        let _ = server.stop.send(());
        // Graceful shutdown closes idle keep-alive connections, so the
        // target's pooled connections cannot reach a stopped server.
        tokio::time::timeout(Duration::from_secs(10), server.task)
            .await
            .expect("the receiver stops within 10 s")
            .expect("the receiver task does not panic");
    }

    async fn start_server(&self) {
        let mut server = self.server.lock().await;
        if server.is_some() {
            return;
        }
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    eprintln!("rebinding port {}: {e}", self.port);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot rebind port {}: {e}", self.port),
            }
        };
        *server = Some(self.serve(listener));
    }

    fn poison(&self) -> Option<EventRecord> {
        Some(conformance::record("conformance-poison"))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_publishes() {
    conformance::publishes(&WebhookHarness::new().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_preserves_order() {
    conformance::preserves_order(&WebhookHarness::new().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_is_active_is_honest() {
    conformance::is_active_is_honest(&WebhookHarness::new().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_survives_target_restart() {
    conformance::survives_target_restart(&WebhookHarness::new().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_dead_letters_poison() {
    conformance::dead_letters_poison(&WebhookHarness::new().await).await;
}

/// The whole suite on one shared receiver: the per-test key prefixes keep
/// the tests apart.
#[tokio::test(flavor = "multi_thread")]
async fn conformance_run_all_on_one_server() {
    conformance::run_all(&WebhookHarness::new().await).await;
}
