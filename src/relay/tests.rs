//! The relay's joint: the receiver in front of a Notifier.

use std::sync::{Arc, Mutex};

use crate::core::EventRecord;
use crate::inputs::receiver::testing::{notification, signed, FakeHttp, MINIO_PAYLOAD};
use crate::inputs::receiver::{AuthToken, Receiver, ReceiverConfig};
use crate::targets::notifier::{DeliveryMode, Notifier, TargetOptions};

/// A target that keeps what it is sent.
#[derive(Debug)]
struct KeepTarget {
    id: crate::core::TargetId,
    seen: Mutex<Vec<EventRecord>>,
}

#[async_trait::async_trait]
impl crate::core::Target for KeepTarget {
    fn id(&self) -> &crate::core::TargetId {
        &self.id
    }
    async fn send_batch(&self, events: &[EventRecord]) -> Result<(), crate::core::TargetError> {
        self.seen.lock().unwrap().extend_from_slice(events);
        Ok(())
    }
    async fn is_active(&self) -> Result<bool, crate::core::TargetError> {
        Ok(true)
    }
}

/// Over real HTTP: a MinIO webhook POST and a signed SNS notification reach
/// a target through a Notifier; a tampered copy and a bad token do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_notifier_end_to_end() {
    use crate::core::{EventMask, NotificationRule, RuleSet};

    let id: crate::core::TargetId = "arn:minio:sqs::keep:webhook".parse().unwrap();
    let target = Arc::new(KeepTarget {
        id: id.clone(),
        seen: Mutex::new(Vec::new()),
    });
    let notifier = Arc::new(
        Notifier::builder()
            .rules(RuleSet::new([NotificationRule::new("all", EventMask::ALL, id)]).unwrap())
            .target(target.clone(), TargetOptions::default())
            .mode(DeliveryMode::Sync)
            .build()
            .unwrap(),
    );
    let handler = {
        let notifier = notifier.clone();
        move |records: Vec<EventRecord>| {
            let notifier = notifier.clone();
            async move {
                for r in records {
                    notifier.send(r).await?;
                }
                Ok::<(), crate::targets::Error>(())
            }
        }
    };
    let config = ReceiverConfig {
        auth_token: Some(AuthToken::new("s3cr3t")),
        ..ReceiverConfig::default()
    };
    let r = Receiver::with_http(config, handler, FakeHttp::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().nest("/minio", r.router());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/minio");
    let send = |auth: Option<&'static str>, body: String| {
        let mut req = client.post(&url).body(body);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(send(Some("Bearer s3cr3t"), MINIO_PAYLOAD.into()).await, 200);
    assert_eq!(send(Some("Bearer nope"), MINIO_PAYLOAD.into()).await, 401);
    let sns = signed(notification("e2e-1"), "2");
    assert_eq!(send(None, sns.to_string()).await, 200);
    let mut tampered = sns.clone();
    tampered["MessageId"] = "e2e-2".into();
    assert_eq!(send(None, tampered.to_string()).await, 403);
    assert_eq!(send(None, sns.to_string()).await, 409);
    let keys: Vec<_> = target
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.key().unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["image.jpg", "e2e-1.jpg"]);
    server.abort();
}
