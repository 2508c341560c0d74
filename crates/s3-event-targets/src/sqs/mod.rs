//! The Amazon SQS target (feature `sqs`): sends each event as MinIO's
//! `{"EventName", "Key", "Records": [record]}` envelope, the body the
//! webhook and broker targets send, with the message attributes
//! `EventName` and `Key` (`bucket/key`), up to 10 per `SendMessageBatch`.
//!
//! - FIFO queues (URL ending in `.fifo`): `MessageGroupId` is
//!   `bucket/key` (the key as on the wire; its SHA-256 when longer than 128
//!   characters), so one object's events stay in order, and
//!   `MessageDeduplicationId` the SHA-256 of bucket, key, sequencer,
//!   version id and event name, so a resent event is dropped by SQS.
//! - Entries SQS refuses inside a batch are sent again on their own; the
//!   accepted ones are not resent (see the crate's `aws_common` batch
//!   loop). An entry refused with `SenderFault` is permanent, as is any
//!   refused request other than throttling and 5xx.
//! - Connection settings and credentials: the keys, else the standard AWS
//!   environment ([`s3_event_core::aws`]); the SDK's default HTTPS client
//!   (rustls), 3 s to connect and 10 s a request unless `connect_timeout`
//!   and `request_timeout` say otherwise. The SDK does not retry by
//!   itself: the notifier does.
//! - `is_active`: `GetQueueAttributes` (the queue ARN).
//!
//! ```no_run
//! use s3_event_targets::sqs::{SqsConfig, SqsTarget};
//!
//! let mut config = SqsConfig::new("http://127.0.0.1:15000/123456789012/events");
//! config.connection.endpoint = Some("http://127.0.0.1:15000".into());
//! let target = SqsTarget::new("arn:minio:sqs::1:sqs".parse().unwrap(), config).unwrap();
//! ```

mod config;

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use s3_event_core::{EventRecord, TargetError, TargetId};

pub use crate::aws_common::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};
pub use config::SqsConfig;

use crate::aws_common::{self, aws_target, Failed, Message, Service};

aws_target! {
    /// An SQS [`Target`](s3_event_core::Target). See the [module docs](self).
    SqsTarget(SqsConfig, Client)
}

#[async_trait]
impl Service for SqsConfig {
    const KIND: &'static str = "sqs";
    const SERVICE: &'static str = "SQS";
    type Client = Client;
    type Entry = Message;

    fn entry(&self, id: &TargetId, r: &EventRecord) -> Result<Message, TargetError> {
        aws_common::message(id, r, self.is_fifo())
    }

    /// One `SendMessageBatch`.
    async fn send(
        &self,
        id: &TargetId,
        client: &Client,
        messages: Vec<Message>,
    ) -> Result<Vec<Failed>, TargetError> {
        let mut req = client.send_message_batch().queue_url(self.queue_url.trim());
        for (i, m) in messages.into_iter().enumerate() {
            req = req.entries(entry(id, i, m)?);
        }
        let out = req
            .send()
            .await
            .map_err(|e| aws_common::classify(id, "SendMessageBatch", &e))?;
        Ok(out
            .failed()
            .iter()
            .map(|f| Failed::of_batch(f.id(), f.code(), f.message(), f.sender_fault()))
            .collect())
    }

    /// `GetQueueAttributes` (the queue ARN).
    async fn probe(&self, id: &TargetId, client: &Client) -> Result<(), TargetError> {
        client
            .get_queue_attributes()
            .queue_url(self.queue_url.trim())
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map(drop)
            .map_err(|e| aws_common::classify(id, "GetQueueAttributes", &e))
    }
}

/// Message `i` of a batch: the body, its attributes, the FIFO ids.
fn entry(id: &TargetId, i: usize, m: Message) -> Result<SendMessageBatchRequestEntry, TargetError> {
    let built = |e: aws_sdk_sqs::error::BuildError| TargetError::permanent(id, e);
    let mut b = SendMessageBatchRequestEntry::builder()
        .id(i.to_string())
        .message_body(m.body);
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

#[cfg(all(test, feature = "integration"))]
mod conformance_tests;

#[cfg(test)]
mod tests {
    use s3_event_core::Target;

    use super::*;
    use crate::aws_common::AwsConnection;
    use crate::NotifyConfig;

    fn keyed(url: &str) -> SqsConfig {
        SqsConfig {
            connection: AwsConnection {
                access_key: Some("AKID".into()),
                secret_key: Some("SQS-SECRET".into()),
                session_token: Some("SQS-TOKEN".into()),
                region: Some("eu-west-1".into()),
                endpoint: Some("http://127.0.0.1:1".into()),
            },
            ..SqsConfig::new(url)
        }
    }

    #[test]
    fn debug_redacts_the_secret_and_the_token() {
        let c = keyed("http://127.0.0.1:1/1/q");
        let t = SqsTarget::new("arn:minio:sqs::1:sqs".parse().unwrap(), c.clone()).unwrap();
        for text in [format!("{c:?}"), format!("{t:?}")] {
            assert!(!text.contains("SQS-SECRET") && !text.contains("SQS-TOKEN"), "{text}");
            assert!(text.contains("AKID"), "{text}");
        }
    }

    #[test]
    fn fifo_queues_are_recognised_by_their_url() {
        assert!(SqsConfig::new("https://sqs.eu-west-1.amazonaws.com/1/q.fifo").is_fifo());
        assert!(!SqsConfig::new("https://sqs.eu-west-1.amazonaws.com/1/q").is_fifo());
    }

    #[test]
    fn json_and_env_build_sqs_targets() {
        let c = NotifyConfig::from_json(
            r#"{"sqs": {"1": {"enable": "on", "queue_url": "http://127.0.0.1:1/1/q",
                "region": "eu-west-1", "endpoint": "http://127.0.0.1:1",
                "access_key": "AKID", "secret_key": "JSON-SECRET", "session_token": "",
                "queue_dir": "", "queue_limit": "0"}}}"#,
            "r",
        )
        .unwrap();
        let t = c.build_targets().unwrap();
        assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:1:sqs");
        assert_eq!(t[0].0.max_batch(), 10);
        assert!(!format!("{:?}", t[0].0).contains("JSON-SECRET"));
        assert!(!c.redacted_json().to_string().contains("JSON-SECRET"));
        let vars = [
            ("MINIO_NOTIFY_SQS_QUEUE_URL_Q", "http://127.0.0.1:1/1/q.fifo"),
            ("MINIO_NOTIFY_SQS_ACCESS_KEY_Q", "AKID"),
            ("MINIO_NOTIFY_SQS_SECRET_KEY_Q", "ENV-SECRET"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let t = NotifyConfig::from_env_vars(vars, "r")
            .unwrap()
            .build_targets()
            .unwrap();
        assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:Q:sqs");
        assert!(!format!("{:?}", t[0].0).contains("ENV-SECRET"));
    }

    #[test]
    fn validate_names_the_key() {
        let e = SqsTarget::new("arn:minio:sqs::1:sqs".parse().unwrap(), keyed("")).unwrap_err();
        assert!(matches!(e, crate::Error::InvalidConfig { key: "queue_url", .. }), "{e}");
        let e = SqsTarget::new("arn:minio:sqs::1:sqs".parse().unwrap(), keyed("queue"))
            .unwrap_err();
        assert!(e.to_string().contains("`queue`"), "{e}");
        let mut half = keyed("http://127.0.0.1:1/1/q");
        half.connection.secret_key = None;
        // Only when the environment has no secret either.
        if std::env::var_os("AWS_SECRET_ACCESS_KEY").is_none() {
            let e = SqsTarget::new("arn:minio:sqs::1:sqs".parse().unwrap(), half).unwrap_err();
            assert!(matches!(e, crate::Error::InvalidConfig { key: "secret_key", .. }), "{e}");
        }
        let mut bad = keyed("http://127.0.0.1:1/1/q");
        bad.connection.endpoint = Some("127.0.0.1:1".into());
        let e = SqsTarget::new("arn:minio:sqs::1:sqs".parse().unwrap(), bad).unwrap_err();
        assert!(matches!(e, crate::Error::InvalidConfig { key: "endpoint", .. }), "{e}");
    }

    #[test]
    fn client_keys_reach_the_sdk_client() {
        use crate::config::client::testing::{assert_client_keys, secs};
        let keys = serde_json::json!({"queue_url": "http://127.0.0.1:1/1/q",
            "endpoint": "http://127.0.0.1:1", "access_key": "AKID", "secret_key": "S"});
        assert_client_keys(keys, secs(3, 10), |v| {
            let t = SqsTarget::new("arn:minio:sqs::1:sqs".parse().unwrap(), serde_json::from_value(v).unwrap())
                .unwrap();
            aws_common::sdk_timeouts(t.0.client.config().timeout_config())
        });
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_transient() {
        let t = SqsTarget::new(
            "arn:minio:sqs::1:sqs".parse().unwrap(),
            keyed("http://127.0.0.1:1/1/q"),
        )
        .unwrap();
        let e = t.send(&crate::conformance::record("k")).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(!t.is_active().await.unwrap());
    }
}
