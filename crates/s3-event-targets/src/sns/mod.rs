//! The Amazon SNS target (feature `sns`): publishes each event as MinIO's
//! `{"EventName", "Key", "Records": [record]}` envelope, with the message
//! attributes `EventName` and `Key` (`bucket/key`), up to 10 per
//! `PublishBatch`. Subscribers (SQS queues, Lambda, HTTP) get what S3 → SNS
//! would give them: the records inside SNS's `Notification` envelope.
//!
//! - FIFO topics (ARN ending in `.fifo`): `MessageGroupId` is `bucket/key`
//!   (its SHA-256 when it does not fit) and `MessageDeduplicationId` the
//!   SHA-256 of bucket, key, sequencer, version id and event name, as for
//!   the SQS target.
//! - Entries SNS refuses inside a batch are published again on their own;
//!   the accepted ones are not republished. An entry refused with
//!   `SenderFault` is permanent (a message over 256 KiB), as is any refused
//!   request other than throttling and 5xx.
//! - Connection settings and credentials: the keys, else the standard AWS
//!   environment ([`s3_event_core::aws`]); the SDK's default HTTPS client
//!   (rustls), 3 s to connect and 10 s a request unless `connect_timeout`
//!   and `request_timeout` say otherwise. The SDK does not retry by
//!   itself: the notifier does.
//! - `is_active`: `GetTopicAttributes`.
//!
//! ```no_run
//! use s3_event_targets::sns::{SnsConfig, SnsTarget};
//!
//! let config = SnsConfig::new("arn:aws:sns:us-east-1:123456789012:events");
//! let target = SnsTarget::new("arn:minio:sqs::1:sns".parse().unwrap(), config).unwrap();
//! ```

mod config;

use async_trait::async_trait;
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use aws_sdk_sns::Client;
use s3_event_core::{EventRecord, TargetError, TargetId};

pub use crate::aws_common::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};
pub use config::SnsConfig;

use crate::aws_common::{self, aws_target, Failed, Message, Service};

aws_target! {
    /// An SNS [`Target`](s3_event_core::Target). See the [module docs](self).
    SnsTarget(SnsConfig, Client)
}

#[async_trait]
impl Service for SnsConfig {
    const KIND: &'static str = "sns";
    const SERVICE: &'static str = "SNS";
    type Client = Client;
    type Entry = Message;

    fn entry(&self, id: &TargetId, r: &EventRecord) -> Result<Message, TargetError> {
        aws_common::message(id, r, self.is_fifo())
    }

    /// One `PublishBatch`.
    async fn send(
        &self,
        id: &TargetId,
        client: &Client,
        messages: Vec<Message>,
    ) -> Result<Vec<Failed>, TargetError> {
        let mut req = client.publish_batch().topic_arn(self.topic_arn.trim());
        for (i, m) in messages.into_iter().enumerate() {
            req = req.publish_batch_request_entries(entry(id, i, m)?);
        }
        let out = req
            .send()
            .await
            .map_err(|e| aws_common::classify(id, "PublishBatch", &e))?;
        Ok(out
            .failed()
            .iter()
            .map(|f| Failed::of_batch(f.id(), f.code(), f.message(), f.sender_fault()))
            .collect())
    }

    /// `GetTopicAttributes`.
    async fn probe(&self, id: &TargetId, client: &Client) -> Result<(), TargetError> {
        client
            .get_topic_attributes()
            .topic_arn(self.topic_arn.trim())
            .send()
            .await
            .map(drop)
            .map_err(|e| aws_common::classify(id, "GetTopicAttributes", &e))
    }
}

/// Message `i` of a batch: the body, its attributes, the FIFO ids.
fn entry(id: &TargetId, i: usize, m: Message) -> Result<PublishBatchRequestEntry, TargetError> {
    let built = |e: aws_sdk_sns::error::BuildError| TargetError::permanent(id, e);
    let mut b = PublishBatchRequestEntry::builder()
        .id(i.to_string())
        .message(m.body);
    for (name, value) in m.attributes {
        let v = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .map_err(built)?;
        b = b.message_attributes(name, v);
    }
    if let Some((group, dedup)) = m.fifo {
        b = b.message_group_id(group).message_deduplication_id(dedup);
    }
    b.build().map_err(built)
}

#[cfg(all(test, feature = "integration", feature = "sqs"))]
mod conformance_tests;

#[cfg(test)]
mod tests {
    use s3_event_core::Target;

    use super::*;
    use crate::aws_common::AwsConnection;
    use crate::NotifyConfig;

    const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:events";

    fn keyed(arn: &str) -> SnsConfig {
        SnsConfig {
            connection: AwsConnection {
                access_key: Some("AKID".into()),
                secret_key: Some("SNS-SECRET".into()),
                session_token: Some("SNS-TOKEN".into()),
                endpoint: Some("http://127.0.0.1:1".into()),
                ..AwsConnection::default()
            },
            ..SnsConfig::new(arn)
        }
    }

    #[test]
    fn debug_redacts_the_secret_and_the_token() {
        let c = keyed(TOPIC);
        let t = SnsTarget::new("arn:minio:sqs::1:sns".parse().unwrap(), c.clone()).unwrap();
        for text in [format!("{c:?}"), format!("{t:?}")] {
            assert!(!text.contains("SNS-SECRET") && !text.contains("SNS-TOKEN"), "{text}");
            assert!(text.contains("AKID"), "{text}");
        }
    }

    #[test]
    fn fifo_topics_are_recognised_by_their_arn() {
        assert!(SnsConfig::new(format!("{TOPIC}.fifo")).is_fifo());
        assert!(!SnsConfig::new(TOPIC).is_fifo());
    }

    #[test]
    fn json_and_env_build_sns_targets() {
        let c = NotifyConfig::from_json(
            r#"{"sns": {"1": {"enable": "on", "topic_arn": "arn:aws:sns:us-east-1:1:t",
                "region": "", "endpoint": "http://127.0.0.1:1",
                "access_key": "AKID", "secret_key": "JSON-SECRET", "session_token": "",
                "queue_dir": "", "queue_limit": "0"}}}"#,
            "r",
        )
        .unwrap();
        let t = c.build_targets().unwrap();
        assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:1:sns");
        assert_eq!(t[0].0.max_batch(), 10);
        assert!(!format!("{:?}", t[0].0).contains("JSON-SECRET"));
        assert!(!c.redacted_json().to_string().contains("JSON-SECRET"));
        let vars = [
            ("MINIO_NOTIFY_SNS_TOPIC_ARN_T", "arn:aws:sns:us-east-1:1:t.fifo"),
            ("MINIO_NOTIFY_SNS_ACCESS_KEY_T", "AKID"),
            ("MINIO_NOTIFY_SNS_SECRET_KEY_T", "ENV-SECRET"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let t = NotifyConfig::from_env_vars(vars, "r")
            .unwrap()
            .build_targets()
            .unwrap();
        assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:T:sns");
        assert!(!format!("{:?}", t[0].0).contains("ENV-SECRET"));
    }

    #[test]
    fn validate_names_the_key() {
        let id = || "arn:minio:sqs::1:sns".parse().unwrap();
        let e = SnsTarget::new(id(), keyed("")).unwrap_err();
        assert!(matches!(e, crate::Error::InvalidConfig { key: "topic_arn", .. }), "{e}");
        let e = SnsTarget::new(id(), keyed("events")).unwrap_err();
        assert!(e.to_string().contains("`events`"), "{e}");
    }

    #[test]
    fn client_keys_reach_the_sdk_client() {
        use crate::config::client::testing::{assert_client_keys, secs};
        let keys = serde_json::json!({"topic_arn": TOPIC,
            "endpoint": "http://127.0.0.1:1", "access_key": "AKID", "secret_key": "S"});
        assert_client_keys(keys, secs(3, 10), |v| {
            let t = SnsTarget::new("arn:minio:sqs::1:sns".parse().unwrap(), serde_json::from_value(v).unwrap())
                .unwrap();
            aws_common::sdk_timeouts(t.0.client.config().timeout_config())
        });
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_transient() {
        let t = SnsTarget::new("arn:minio:sqs::1:sns".parse().unwrap(), keyed(TOPIC)).unwrap();
        let e = t.send(&crate::conformance::record("k")).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(!t.is_active().await.unwrap());
    }
}
