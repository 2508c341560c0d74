use std::sync::{Arc, Mutex, OnceLock};

use axum::http::{HeaderValue, Request};
use base64::Engine as _;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer as _};
use s3_event_core::EventRecord;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;

const CERT_URL: &str =
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem";
const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:uploads";

/// The MinIO/AIStor webhook payload of the seeds.
const MINIO_PAYLOAD: &str = r#"{
"EventName": "s3:ObjectCreated:Put",
"Key": "test-bucket/image.jpg",
"Records": [{
"eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "",
"eventTime": "2025-02-06T01:04:31.998Z", "eventName": "s3:ObjectCreated:Put",
"userIdentity": {"principalId": "access_key"},
"requestParameters": {"principalId": "access_key", "region": "", "sourceIPAddress": "192.168.1.10"},
"responseElements": {"x-amz-id-2": "dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8",
  "x-amz-request-id": "182178E8B36AC9DF", "x-minio-deployment-id": "2369dcb4-348b-4d30-8fc9-61ab089ba4bc",
  "x-minio-origin-endpoint": "https://aistor.test.svc.cluster.local"},
"s3": {"s3SchemaVersion": "1.0", "configurationId": "Config",
  "bucket": {"name": "test-bucket", "ownerIdentity": {"principalId": "access_key"}, "arn": "arn:aws:s3:::test-bucket"},
  "object": {"key": "image.jpg", "size": 84452, "eTag": "eb52f8e46f60a27a8a1a704e25757f30",
    "contentType": "image/jpeg", "userMetadata": {"content-type": "image/jpeg"}, "sequencer": "182178E8B3728CAC"}},
"source": {"host": "192.168.1.10", "port": "", "userAgent": "MinIO (linux; amd64) minio-go/v7.0.83"}
}]}"#;

/// A key pair and self-signed certificate, made once per test binary.
struct Signer {
    key: rsa::RsaPrivateKey,
    cert_pem: String,
}

fn signer() -> &'static Signer {
    static S: OnceLock<Signer> = OnceLock::new();
    S.get_or_init(|| {
        let key =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .unwrap();
        let params = rcgen::CertificateParams::new(vec!["sns.amazonaws.com".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        Signer {
            key: rsa::RsaPrivateKey::from_pkcs8_der(&key.serialize_der()).unwrap(),
            cert_pem: cert.pem(),
        }
    })
}

/// Signs `m` (SignatureVersion `version`) and returns it as JSON.
fn signed(mut m: SnsMessage, version: &str) -> Value {
    m.signature_version = Some(version.to_owned());
    m.signing_cert_url
        .get_or_insert_with(|| CERT_URL.to_owned());
    let canonical = canonical_string(&m).unwrap();
    let key = signer().key.clone();
    let sig = if version == "1" {
        rsa::pkcs1v15::SigningKey::<sha1::Sha1>::new(key)
            .sign(canonical.as_bytes())
            .to_vec()
    } else {
        rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(key)
            .sign(canonical.as_bytes())
            .to_vec()
    };
    m.signature = Some(base64::engine::general_purpose::STANDARD.encode(sig));
    serde_json::to_value(&m).unwrap()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn notification(id: &str) -> SnsMessage {
    let records = json!({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "photos"}, "object": {"key": format!("{id}.jpg"), "size": 3}}}]});
    SnsMessage {
        message_type: Some("Notification".into()),
        message_id: Some(id.into()),
        topic_arn: Some(TOPIC.into()),
        subject: Some("Amazon S3 Notification".into()),
        message: Some(records.to_string()),
        timestamp: Some(now()),
        unsubscribe_url: Some("https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe".into()),
        ..Default::default()
    }
}

fn confirmation(subscribe_url: &str) -> SnsMessage {
    SnsMessage {
        message_type: Some("SubscriptionConfirmation".into()),
        message_id: Some("c-1".into()),
        token: Some("tok".into()),
        topic_arn: Some(TOPIC.into()),
        message: Some("You have chosen to subscribe to the topic".into()),
        subscribe_url: Some(subscribe_url.into()),
        timestamp: Some(now()),
        ..Default::default()
    }
}

/// Serves the test certificate for `.pem` URLs and "ok" otherwise, and
/// remembers every URL asked for.
#[derive(Clone, Default)]
struct FakeHttp {
    calls: Arc<Mutex<Vec<String>>>,
}

impl FakeHttp {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl HttpGet for FakeHttp {
    fn get(&self, url: &url::Url) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        self.calls.lock().unwrap().push(url.to_string());
        let body = if url.path().ends_with(".pem") {
            signer().cert_pem.clone().into_bytes()
        } else {
            b"<ConfirmSubscriptionResponse/>".to_vec()
        };
        Box::pin(async move { Ok(body) })
    }
}

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

/// A target that keeps what it is sent.
#[derive(Debug)]
struct KeepTarget {
    id: s3_event_core::TargetId,
    seen: Mutex<Vec<EventRecord>>,
}

#[async_trait::async_trait]
impl s3_event_core::Target for KeepTarget {
    fn id(&self) -> &s3_event_core::TargetId {
        &self.id
    }
    async fn send_batch(&self, events: &[EventRecord]) -> Result<(), s3_event_core::TargetError> {
        self.seen.lock().unwrap().extend_from_slice(events);
        Ok(())
    }
    async fn is_active(&self) -> Result<bool, s3_event_core::TargetError> {
        Ok(true)
    }
}

/// Over real HTTP: a MinIO webhook POST and a signed SNS notification reach
/// a target through a Notifier; a tampered copy and a bad token do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_notifier_end_to_end() {
    use s3_event_core::{EventMask, NotificationRule, RuleSet};

    let id: s3_event_core::TargetId = "arn:minio:sqs::keep:webhook".parse().unwrap();
    let target = Arc::new(KeepTarget {
        id: id.clone(),
        seen: Mutex::new(Vec::new()),
    });
    let notifier = Arc::new(
        crate::Notifier::builder()
            .rules(RuleSet::new([NotificationRule::new("all", EventMask::ALL, id)]).unwrap())
            .target(target.clone(), crate::TargetOptions::default())
            .mode(crate::DeliveryMode::Sync)
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
                Ok::<(), crate::Error>(())
            }
        }
    };
    let r = Receiver::with_http(with_token("s3cr3t"), handler, FakeHttp::default()).unwrap();
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
