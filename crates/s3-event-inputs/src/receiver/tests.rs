use std::sync::{Arc, Mutex};

use axum::http::{HeaderValue, Request};
use s3_event_core::EventRecord;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::testing::*;
use super::*;

/// The records handed over, and whether the handler should fail.
#[derive(Clone, Default)]
struct Sink {
    got: Arc<Mutex<Vec<EventRecord>>>,
    fail: Arc<std::sync::atomic::AtomicBool>,
}

impl Sink {
    fn handler(&self) -> impl RecordsHandler {
        let s = self.clone();
        move |records: Vec<EventRecord>| {
            let s = s.clone();
            async move {
                if s.fail.load(Ordering::SeqCst) {
                    return Err("downstream is down".to_owned());
                }
                s.got.lock().unwrap().extend(records);
                Ok(())
            }
        }
    }
    fn len(&self) -> usize {
        self.got.lock().unwrap().len()
    }
}

fn receiver(config: ReceiverConfig) -> (Receiver, Sink, FakeHttp) {
    let sink = Sink::default();
    let http = FakeHttp::default();
    let r = Receiver::with_http(config, sink.handler(), http.clone()).unwrap();
    (r, sink, http)
}

fn with_token(token: &str) -> ReceiverConfig {
    ReceiverConfig {
        auth_token: Some(AuthToken::new(token)),
        ..Default::default()
    }
}

fn headers(auth: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(a) = auth {
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
    }
    h
}

async fn post(r: &Receiver, body: &Value) -> Outcome {
    r.receive(&HeaderMap::new(), body.to_string().as_bytes())
        .await
}

#[tokio::test]
async fn sns_v1_and_v2_accepted_and_certificate_cached() {
    let (r, sink, http) = receiver(ReceiverConfig::default());
    let o = post(&r, &signed(notification("m-1"), "1")).await;
    assert_eq!(o, Outcome::Accepted { records: 1 }, "{o}");
    let o = post(&r, &signed(notification("m-2"), "2")).await;
    assert_eq!(o, Outcome::Accepted { records: 1 }, "{o}");
    assert_eq!(sink.len(), 2);
    assert_eq!(sink.got.lock().unwrap()[1].key(), Some("m-2.jpg"));
    assert_eq!(http.calls(), vec![CERT_URL.to_owned()], "fetched once");
    assert_eq!(r.stats().records, 2);
}

#[tokio::test]
async fn sns_tampered_message_rejected() {
    let (r, sink, _) = receiver(ReceiverConfig::default());
    let mut v = signed(notification("m-1"), "2");
    let tampered = v["Message"]
        .as_str()
        .unwrap()
        .replace("m-1.jpg", "evil.jpg");
    v["Message"] = tampered.into();
    let o = post(&r, &v).await;
    assert!(
        matches!(&o, Outcome::Rejected(Rejection::Forged(m)) if m.contains("signature does not match")),
        "{o:?}"
    );
    assert_eq!(o.status(), StatusCode::FORBIDDEN);
    // A v1 signature presented as v2 fails too, and so does garbage.
    let mut v = signed(notification("m-2"), "1");
    v["SignatureVersion"] = "2".into();
    assert_eq!(post(&r, &v).await.status(), StatusCode::FORBIDDEN);
    let mut v = signed(notification("m-3"), "1");
    v["Signature"] = "not base64!".into();
    assert_eq!(post(&r, &v).await.status(), StatusCode::FORBIDDEN);
    let mut v = signed(notification("m-4"), "1");
    v["SignatureVersion"] = "3".into();
    assert_eq!(post(&r, &v).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(sink.len(), 0);
    assert_eq!(r.stats().forged, 4);
    // The forged copies did not burn the real message's id.
    let o = post(&r, &signed(notification("m-1"), "2")).await;
    assert_eq!(o, Outcome::Accepted { records: 1 });
}

#[tokio::test]
async fn sns_replay_and_stale_rejected() {
    let (r, sink, _) = receiver(ReceiverConfig::default());
    let v = signed(notification("m-1"), "2");
    assert_eq!(post(&r, &v).await, Outcome::Accepted { records: 1 });
    let o = post(&r, &v).await;
    assert!(
        matches!(&o, Outcome::Rejected(Rejection::Replayed(_))),
        "{o:?}"
    );
    assert_eq!(o.status(), StatusCode::CONFLICT);
    let mut old = notification("m-2");
    old.timestamp = Some("2020-01-01T00:00:00.000Z".into());
    let o = post(&r, &signed(old, "2")).await;
    assert!(
        matches!(&o, Outcome::Rejected(Rejection::Replayed(m)) if m.contains("older than")),
        "{o:?}"
    );
    let mut future = notification("m-3");
    future.timestamp = Some("2999-01-01T00:00:00.000Z".into());
    assert_eq!(
        post(&r, &signed(future, "2")).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(sink.len(), 1);
    assert_eq!(r.stats().replayed, 2);
}

#[tokio::test]
async fn sns_wrong_cert_url_rejected_without_fetching() {
    let (r, sink, http) = receiver(ReceiverConfig::default());
    for url in [
        "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
        "http://sns.us-east-1.amazonaws.com/cert.pem",
        "https://evil.example/SimpleNotificationService.pem",
    ] {
        let mut m = notification("m-1");
        m.signing_cert_url = Some(url.to_owned());
        let o = post(&r, &signed(m, "1")).await;
        assert!(
            matches!(&o, Outcome::Rejected(Rejection::Forged(e)) if e.contains("SigningCertURL")),
            "{url}: {o:?}"
        );
    }
    assert!(http.calls().is_empty());
    assert_eq!(sink.len(), 0);
}

#[tokio::test]
async fn sns_topic_allow_list() {
    let mut config = ReceiverConfig::default();
    config.sns.topic_arns = vec!["arn:aws:sns:us-east-1:123456789012:other".into()];
    let (r, sink, _) = receiver(config);
    let o = post(&r, &signed(notification("m-1"), "2")).await;
    assert!(
        matches!(o, Outcome::Rejected(Rejection::TopicNotAllowed(_))),
        "{o:?}"
    );
    assert_eq!(sink.len(), 0);
}

#[tokio::test]
async fn sns_handler_failure_lets_the_retry_through() {
    let (r, sink, _) = receiver(ReceiverConfig::default());
    let v = signed(notification("m-1"), "2");
    sink.fail.store(true, Ordering::SeqCst);
    let o = post(&r, &v).await;
    assert_eq!(o.status(), StatusCode::SERVICE_UNAVAILABLE, "{o:?}");
    sink.fail.store(false, Ordering::SeqCst);
    assert_eq!(post(&r, &v).await, Outcome::Accepted { records: 1 });
    assert_eq!(r.stats().handler_failed, 1);
}

#[tokio::test]
async fn sns_certificate_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sns.pem");
    std::fs::write(&path, &signer().cert_pem).unwrap();
    let mut config = ReceiverConfig::default();
    config.sns.certificate_file = Some(path);
    let (r, sink, http) = receiver(config);
    assert_eq!(
        post(&r, &signed(notification("m-1"), "1")).await,
        Outcome::Accepted { records: 1 }
    );
    assert!(http.calls().is_empty());
    assert_eq!(sink.len(), 1);
    let mut config = ReceiverConfig::default();
    config.sns.certificate_file = Some(dir.path().join("missing.pem"));
    let e =
        Receiver::with_http(config, Sink::default().handler(), FakeHttp::default()).unwrap_err();
    assert!(e.to_string().contains("missing.pem"), "{e}");
}

#[tokio::test]
async fn sns_subscription_confirmation_decisions() {
    let good =
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=t&Token=tok";
    // Off: acknowledged, nothing fetched but the certificate.
    let (r, _, http) = receiver(ReceiverConfig::default());
    let o = post(&r, &signed(confirmation(good), "1")).await;
    assert_eq!(
        o,
        Outcome::SubscriptionConfirmation(Confirmation::NotConfigured)
    );
    assert_eq!(http.calls(), vec![CERT_URL.to_owned()]);

    let mut config = ReceiverConfig::default();
    config.sns.confirm_subscriptions = true;
    let (r, _, http) = receiver(config.clone());
    let o = post(&r, &signed(confirmation(good), "2")).await;
    assert_eq!(
        o,
        Outcome::SubscriptionConfirmation(Confirmation::Confirmed)
    );
    assert_eq!(http.calls(), vec![CERT_URL.to_owned(), good.to_owned()]);

    // A SubscribeURL on another host is not visited.
    let (r, _, http) = receiver(config.clone());
    let o = post(
        &r,
        &signed(
            confirmation("https://evil.example/?Action=ConfirmSubscription"),
            "2",
        ),
    )
    .await;
    assert!(
        matches!(
            &o,
            Outcome::SubscriptionConfirmation(Confirmation::UrlNotAllowed(_))
        ),
        "{o:?}"
    );
    assert_eq!(http.calls(), vec![CERT_URL.to_owned()]);

    // A forged confirmation is refused before anything is visited.
    let (r, _, http) = receiver(config);
    let mut v = signed(confirmation(good), "2");
    v["Token"] = "other".into();
    assert_eq!(post(&r, &v).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(http.calls(), vec![CERT_URL.to_owned()]);
}

#[tokio::test]
async fn minio_payload_with_good_and_bad_token() {
    let (r, sink, _) = receiver(with_token("s3cr3t"));
    let body = MINIO_PAYLOAD.as_bytes();
    let o = r.receive(&headers(Some("Bearer s3cr3t")), body).await;
    assert_eq!(o, Outcome::Accepted { records: 1 });
    assert_eq!(sink.got.lock().unwrap()[0].key(), Some("image.jpg"));
    for bad in [
        Some("Bearer wrong"),
        Some("s3cr3t"),
        Some("Bearer s3cr3t "),
        None,
    ] {
        let o = r.receive(&headers(bad), body).await;
        assert_eq!(o, Outcome::Rejected(Rejection::Unauthorized), "{bad:?}");
        assert_eq!(o.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(sink.len(), 1);
    assert_eq!(r.stats().unauthorized, 4);
    // A token with its own scheme is expected verbatim, as MinIO sends it.
    let (r, _, _) = receiver(with_token("Token abc"));
    assert_eq!(
        r.receive(&headers(Some("Token abc")), body).await,
        Outcome::Accepted { records: 1 }
    );
    // Without a configured token anything is accepted.
    let (r, _, _) = receiver(ReceiverConfig::default());
    assert_eq!(
        r.receive(&headers(None), body).await,
        Outcome::Accepted { records: 1 }
    );
}

#[tokio::test]
async fn signed_sns_needs_no_token_but_a_wrong_token_is_refused() {
    let (r, sink, _) = receiver(with_token("s3cr3t"));
    let body = signed(notification("m-1"), "2").to_string();
    assert_eq!(
        r.receive(&headers(None), body.as_bytes()).await,
        Outcome::Accepted { records: 1 }
    );
    let body = signed(notification("m-2"), "2").to_string();
    assert_eq!(
        r.receive(&headers(Some("Bearer nope")), body.as_bytes())
            .await,
        Outcome::Rejected(Rejection::Unauthorized)
    );
    // With verification off an SNS body is like any other: the token applies.
    let mut config = with_token("s3cr3t");
    config.sns.verify_signatures = false;
    let (r2, _, http) = receiver(config);
    let body = serde_json::to_string(&notification("m-3")).unwrap();
    assert_eq!(
        r2.receive(&headers(None), body.as_bytes()).await,
        Outcome::Rejected(Rejection::Unauthorized)
    );
    assert_eq!(
        r2.receive(&headers(Some("Bearer s3cr3t")), body.as_bytes())
            .await,
        Outcome::Accepted { records: 1 }
    );
    assert!(http.calls().is_empty());
    assert_eq!(sink.len(), 1);
}

#[tokio::test]
async fn sqs_bodies_test_events_and_garbage() {
    let (r, sink, _) = receiver(with_token("t"));
    let h = headers(Some("Bearer t"));
    let minio: Value = serde_json::from_str(MINIO_PAYLOAD).unwrap();
    let sqs = json!({"Messages": [
        {"MessageId": "1", "ReceiptHandle": "r1", "Body": minio.to_string()},
        {"MessageId": "2", "ReceiptHandle": "r2", "Body": minio.to_string()},
    ]});
    let o = r.receive(&h, sqs.to_string().as_bytes()).await;
    assert_eq!(o, Outcome::Accepted { records: 2 });
    let test = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"});
    assert_eq!(
        r.receive(&h, test.to_string().as_bytes()).await,
        Outcome::TestEvent
    );
    let o = r.receive(&h, b"{\"hello\":1}").await;
    assert!(
        matches!(&o, Outcome::Rejected(Rejection::BadPayload(_))),
        "{o:?}"
    );
    assert_eq!(o.status(), StatusCode::BAD_REQUEST);
    assert_eq!(sink.len(), 2);
    assert_eq!(r.stats().bad_payload, 1);
}

/// An SQS `ReceiveMessage` body whose messages hold SNS envelopes.
fn sqs_of(bodies: &[Value]) -> Value {
    let messages: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(n, b)| json!({"MessageId": format!("q-{n}"), "ReceiptHandle": "r", "Body": b.to_string()}))
        .collect();
    json!({ "Messages": messages })
}

#[tokio::test]
async fn sqs_wrapped_sns_signed_accepted_even_when_old_or_repeated() {
    let (r, sink, _) = receiver(with_token("t"));
    let h = headers(Some("Bearer t"));
    // A message older than max_age: SQS may hold it for days.
    let mut old = notification("w-1");
    old.timestamp = Some("2020-01-01T00:00:00.000Z".into());
    let body = sqs_of(&[signed(old, "1"), signed(notification("w-2"), "2")]);
    let o = r.receive(&h, body.to_string().as_bytes()).await;
    assert_eq!(o, Outcome::Accepted { records: 2 }, "{o}");
    // SQS redelivers: the same body again is accepted, not a replay.
    let o = r.receive(&h, body.to_string().as_bytes()).await;
    assert_eq!(o, Outcome::Accepted { records: 2 }, "{o}");
    assert_eq!(sink.len(), 4);
    assert_eq!(sink.got.lock().unwrap()[1].key(), Some("w-2.jpg"));
}

#[tokio::test]
async fn sqs_wrapped_sns_tampered_rejected() {
    let (r, sink, _) = receiver(with_token("t"));
    let h = headers(Some("Bearer t"));
    let mut bad = signed(notification("w-2"), "2");
    let tampered = bad["Message"]
        .as_str()
        .unwrap()
        .replace("w-2.jpg", "evil.jpg");
    bad["Message"] = tampered.into();
    let body = sqs_of(&[signed(notification("w-1"), "2"), bad]);
    let o = r.receive(&h, body.to_string().as_bytes()).await;
    assert!(
        matches!(&o, Outcome::Rejected(Rejection::Forged(m))
            if m.contains("SQS message `q-1`") && m.contains("signature does not match")),
        "{o:?}"
    );
    assert_eq!(o.status(), StatusCode::FORBIDDEN);
    assert_eq!(sink.len(), 0, "nothing of a refused body is handed over");
    assert_eq!(r.stats().forged, 1);
    // A topic not allowed is refused inside SQS as well.
    let mut config = with_token("t");
    config.sns.topic_arns = vec!["arn:aws:sns:us-east-1:123456789012:other".into()];
    let (r, sink, _) = receiver(config);
    let body = sqs_of(&[signed(notification("w-3"), "2")]);
    let o = r.receive(&h, body.to_string().as_bytes()).await;
    assert_eq!(o.status(), StatusCode::FORBIDDEN, "{o:?}");
    assert_eq!(sink.len(), 0);
}

#[tokio::test]
async fn sqs_wrapped_sns_unchecked_when_switched_off() {
    let mut config = with_token("t");
    config.sns.verify_sqs_wrapped = false;
    let (r, sink, _) = receiver(config);
    let h = headers(Some("Bearer t"));
    let mut bad = signed(notification("w-1"), "2");
    bad["Signature"] = "AAAA".into();
    let o = r
        .receive(&h, sqs_of(&[bad.clone()]).to_string().as_bytes())
        .await;
    assert_eq!(o, Outcome::Accepted { records: 1 }, "{o}");
    assert_eq!(sink.len(), 1);
    // The token is still required for an SQS body.
    let o = r
        .receive(&HeaderMap::new(), sqs_of(&[bad]).to_string().as_bytes())
        .await;
    assert_eq!(o.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn router_serves_post() {
    let (r, sink, _) = receiver(with_token("s3cr3t"));
    let app = r.router();
    let req = |auth: &str| {
        Request::post("/")
            .header(header::AUTHORIZATION, auth)
            .header(header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(MINIO_PAYLOAD))
            .unwrap()
    };
    let resp = app.clone().oneshot(req("Bearer s3cr3t")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = app.clone().oneshot(req("Bearer nope")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let mut config = with_token("s3cr3t");
    config.max_body_bytes = 16;
    let (small, _, _) = receiver(config);
    let resp = small.router().oneshot(req("Bearer s3cr3t")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(sink.len(), 1);
}

#[test]
fn secrets_stay_out_of_debug() {
    let config = with_token("s3cr3t");
    let text = format!("{config:?}");
    assert!(!text.contains("s3cr3t"), "{text}");
    let (r, _, _) = receiver(config);
    assert!(!format!("{r:?}").contains("s3cr3t"));
}

#[test]
fn replay_cache_is_bounded() {
    let mut c = ReplayCache {
        seen: HashMap::new(),
        order: VecDeque::new(),
        capacity: 3,
        ttl: Duration::from_secs(60),
    };
    for i in 0..10 {
        assert!(c.insert(&i.to_string()));
    }
    assert_eq!(c.seen.len(), 3);
    assert!(c.contains("9") && !c.contains("0"));
    assert!(!c.insert("9"));
    c.remove("9");
    assert!(c.insert("9"));
}

/// The refusals are counted through the metrics crate, by reason.
#[test]
fn refusals_are_counted_in_metrics() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                let (r, _, _) = receiver(with_token("t"));
                let good = signed(notification("m-1"), "2");
                assert_eq!(post(&r, &good).await, Outcome::Accepted { records: 1 });
                assert_eq!(post(&r, &good).await.status(), StatusCode::CONFLICT);
                let mut bad = signed(notification("m-2"), "2");
                bad["Subject"] = "changed".into();
                assert_eq!(post(&r, &bad).await.status(), StatusCode::FORBIDDEN);
                let o = r.receive(&headers(None), MINIO_PAYLOAD.as_bytes()).await;
                assert_eq!(o.status(), StatusCode::UNAUTHORIZED);
            });
    });
    let mut counters = std::collections::BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        if let DebugValue::Counter(v) = value {
            counters.insert(format!("{}{{{}}}", key.name(), labels.join(",")), v);
        }
    }
    let get = |k: &str| counters.get(k).copied().unwrap_or(0);
    assert_eq!(
        get("s3_event_receiver_rejected_total{reason=replayed}"),
        1,
        "{counters:?}"
    );
    assert_eq!(get("s3_event_receiver_rejected_total{reason=forged}"), 1);
    assert_eq!(
        get("s3_event_receiver_rejected_total{reason=unauthorized}"),
        1
    );
    assert_eq!(get("s3_event_receiver_requests_total{outcome=rejected}"), 3);
    assert_eq!(get("s3_event_receiver_requests_total{outcome=accepted}"), 1);
    assert_eq!(get("s3_event_receiver_records_total{}"), 1);
}
