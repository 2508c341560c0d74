//! The target conformance suite ([`crate::conformance`]) run against the
//! NSQ target and an in-process emulator of nsqd's TCP protocol frames.
//!
//! No nsqd can be installed on the machines this crate is tested on (there
//! is no package for it), so these tests check the target against NSQ's
//! protocol documentation as the emulator implements it, not against a real
//! nsqd: the magic `  V2`; `PUB`, `MPUB`, `NOP`, `IDENTIFY`; response frames
//! `OK` and `_heartbeat_` (sent before the first answer on every connection,
//! so the target must answer `NOP`); error frames `E_BAD_MESSAGE` (over a
//! 1 MiB message size, then the connection is closed, as nsqd does) and
//! `E_INVALID`. It runs in process, so it needs no `integration` feature.

use super::emulator::{decoded_key, Emulated, EmulatorServer};
use super::*;
use crate::conformance::{self, Harness};
use std::sync::Arc;

struct NsqHarness {
    server: EmulatorServer,
    topic: String,
}

impl NsqHarness {
    async fn new() -> NsqHarness {
        NsqHarness {
            server: EmulatorServer::start().await,
            topic: "s3e-test".into(),
        }
    }
}

#[async_trait]
impl Harness for NsqHarness {
    fn target(&self) -> Arc<dyn Target> {
        let c = NsqConfig::new(
            format!("127.0.0.1:{}", self.server.port()),
            self.topic.clone(),
        );
        Arc::new(NsqTarget::new("arn:minio:sqs::conformance:nsq".parse().unwrap(), c).unwrap())
    }

    async fn received(&self) -> Vec<String> {
        self.server
            .messages()
            .into_iter()
            .filter(|m| m.topic == self.topic)
            .filter_map(|m| decoded_key(&m.body))
            .collect()
    }

    async fn stop_server(&self) {
        self.server.stop().await;
    }

    async fn start_server(&self) {
        self.server.start_again().await;
    }

    /// Over the emulator's 1 MiB message size.
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
async fn run_all_against_emulator() {
    conformance::run_all(&NsqHarness::new().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_are_answered_and_batches_use_mpub() {
    let h = NsqHarness::new().await;
    let t = h.target();
    let events: Vec<EventRecord> = (0..3)
        .map(|i| conformance::record(&format!("k{i}")))
        .collect();
    t.send_batch(&events).await.unwrap();
    t.send(&conformance::record("single")).await.unwrap();
    let log = h.server.commands();
    assert!(log.iter().any(|c| c == "NOP"), "{log:?}");
    assert!(log.iter().any(|c| c == "MPUB s3e-test 3"), "{log:?}");
    assert!(log.iter().any(|c| c == "PUB s3e-test"), "{log:?}");
    let got: Vec<Emulated> = h.server.messages();
    assert_eq!(got.len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_connection_is_transient() {
    let c = NsqConfig::new("127.0.0.1:1", "t");
    let t = NsqTarget::new("arn:minio:sqs::1:nsq".parse().unwrap(), c).unwrap();
    let err = t.send(&conformance::record("k")).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(!t.is_active().await.unwrap());
}

#[test]
fn client_keys_reach_the_connection() {
    use crate::config::client::testing::{assert_client_keys, secs};
    let keys = serde_json::json!({"nsqd_address": "127.0.0.1:4150", "topic": "t"});
    assert_client_keys(keys, secs(5, 5), |v| {
        NsqTarget::new("arn:minio:sqs::1:nsq".parse().unwrap(), serde_json::from_value(v).unwrap())
            .unwrap()
            .timeouts()
    });
}

#[test]
fn mpub_body_layout() {
    let b = mpub_body(&[b"ab".to_vec(), b"c".to_vec()]);
    assert_eq!(b, [0, 0, 0, 2, 0, 0, 0, 2, b'a', b'b', 0, 0, 0, 1, b'c']);
}
