//! Helpers for tests of code that receives SNS messages (feature
//! `testing`): a key pair and self-signed certificate made once per
//! process, messages signed with it (signature versions 1 and 2), and an
//! [`HttpGet`] that serves the certificate instead of fetching it from AWS.
//! Not for production use: the key is generated in memory and the
//! certificate is trusted only through [`FakeHttp`] or
//! [`SnsConfig::certificate_file`](super::SnsConfig::certificate_file).

use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer as _};
use s3_event_core::inbound::SnsMessage;
use serde_json::{json, Value};

use super::{canonical_string, BoxFuture, HttpGet};

/// The `SigningCertURL` put in messages [`signed`] signs; [`FakeHttp`] serves
/// the test certificate for it.
pub const CERT_URL: &str =
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem";
/// The topic of [`notification`].
pub const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:uploads";

/// The MinIO/AIStor webhook payload of the seeds.
pub const MINIO_PAYLOAD: &str = r#"{
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
pub struct Signer {
    key: rsa::RsaPrivateKey,
    /// The certificate, PEM: what [`FakeHttp`] serves, or a
    /// [`SnsConfig::certificate_file`](super::SnsConfig::certificate_file).
    pub cert_pem: String,
}

/// The key pair and certificate of this process.
pub fn signer() -> &'static Signer {
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
pub fn signed(mut m: SnsMessage, version: &str) -> Value {
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

/// Now, as SNS writes a `Timestamp`.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An SNS `Notification` from [`TOPIC`] carrying one `ObjectCreated:Put`
/// record for `<id>.jpg`, unsigned.
pub fn notification(id: &str) -> SnsMessage {
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

/// A `SubscriptionConfirmation` from [`TOPIC`] naming `subscribe_url`,
/// unsigned.
pub fn confirmation(subscribe_url: &str) -> SnsMessage {
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
pub struct FakeHttp {
    calls: Arc<Mutex<Vec<String>>>,
}

impl FakeHttp {
    /// The URLs asked for, in order.
    pub fn calls(&self) -> Vec<String> {
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
