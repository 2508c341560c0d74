//! The target conformance suite ([`crate::conformance`]) run against the
//! SNS target and moto (feature `integration`, with `sqs` for the reader;
//! `S3E_MOTO_ENDPOINT`, default `http://127.0.0.1:15000`).
//!
//! Each harness creates its own topic and an SQS queue subscribed to it,
//! and reads the queue back: each message is SNS's `Notification`
//! envelope around what the target published. Restarts are simulated by a
//! TCP proxy between the target and moto. The poison event is a record
//! over SNS's 256 KiB limit, which moto refuses inside the batch
//! (`SenderFault`), so the batch loop's per-entry path is exercised.

use std::sync::Arc;

use aws_sdk_sqs::types::QueueAttributeName;
use s3_event_core::{Notification, Target};

use super::*;
use crate::aws_common::moto::{self, rich_records, QueueReader, Received};
use crate::broker_tests::{decoded_key, unique, Proxy};
use crate::conformance::{self, record, Harness};

struct SnsHarness {
    topic_arn: String,
    reader: QueueReader,
    proxy: Proxy,
}

impl SnsHarness {
    async fn new(fifo: bool) -> SnsHarness {
        let sns = aws_sdk_sns::Client::new(&moto::sdk("SNS"));
        let suffix = if fifo { ".fifo" } else { "" };
        let mut topic = sns
            .create_topic()
            .name(format!("{}{suffix}", unique("s3e-sns")));
        let mut queue_attrs = vec![];
        if fifo {
            topic = topic.attributes("FifoTopic", "true");
            queue_attrs.push((QueueAttributeName::FifoQueue, "true"));
        }
        let topic_arn = topic.send().await.unwrap().topic_arn.unwrap();
        let (queue_url, queue_arn) =
            moto::create_queue(&format!("{}{suffix}", unique("s3e-sns-q")), &queue_attrs).await;
        sns.subscribe()
            .topic_arn(&topic_arn)
            .protocol("sqs")
            .endpoint(queue_arn)
            .send()
            .await
            .unwrap();
        SnsHarness {
            topic_arn,
            reader: QueueReader::new(&queue_url),
            proxy: Proxy::start(moto::address()).await,
        }
    }

    fn sns_target(&self) -> SnsTarget {
        let config = SnsConfig {
            connection: moto::connection_at(&format!("http://127.0.0.1:{}", self.proxy.port())),
            ..SnsConfig::new(self.topic_arn.clone())
        };
        SnsTarget::new("arn:minio:sqs::conformance:sns".parse().unwrap(), config).unwrap()
    }
}

/// The SNS envelope of a message read from the subscribed queue: the
/// published message and its attributes.
fn unwrap_sns(m: &Received) -> (String, Vec<(String, String)>) {
    let v: serde_json::Value = serde_json::from_str(&m.body).expect("an SNS envelope");
    assert_eq!(v["Type"], "Notification", "{v}");
    let mut attrs: Vec<(String, String)> = v["MessageAttributes"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, a)| (k.clone(), a["Value"].as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    attrs.sort();
    (v["Message"].as_str().unwrap_or_default().to_owned(), attrs)
}

#[async_trait]
impl Harness for SnsHarness {
    fn target(&self) -> Arc<dyn Target> {
        Arc::new(self.sns_target())
    }

    async fn received(&self) -> Vec<String> {
        self.reader
            .drain()
            .await
            .iter()
            .filter_map(|m| decoded_key(unwrap_sns(m).0.as_bytes()))
            .collect()
    }

    async fn stop_server(&self) {
        self.proxy.stop().await;
    }

    async fn start_server(&self) {
        self.proxy.start_again().await;
    }

    fn poison(&self) -> Option<EventRecord> {
        Some(record(&format!("poison/{}", "x".repeat(270_000))))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn standard_topic_run_all() {
    conformance::run_all(&SnsHarness::new(false).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn records_read_back_through_a_subscription_equal_the_records_sent() {
    let h = SnsHarness::new(false).await;
    let t = h.sns_target();
    let sent = rich_records(25);
    for chunk in sent.chunks(t.max_batch()) {
        t.send_batch(chunk).await.unwrap();
    }
    let got = h.reader.drain().await;
    assert_eq!(got.len(), sent.len());
    for (m, r) in got.iter().zip(&sent) {
        let (message, attrs) = unwrap_sns(m);
        let n = Notification::from_slice(message.as_bytes()).unwrap();
        assert_eq!(n.records, vec![r.clone()], "the record read back");
        let key = format!("photos/{}", r.decoded_key().unwrap());
        assert_eq!(
            attrs,
            vec![
                ("EventName".to_owned(), r.event_name_str().unwrap().to_owned()),
                ("Key".to_owned(), key)
            ]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fifo_topic_delivers_in_order_with_the_object_as_group() {
    let h = SnsHarness::new(true).await;
    let t = h.sns_target();
    let sent = rich_records(10);
    t.send_batch(&sent).await.unwrap();
    let got = h.reader.drain().await;
    assert_eq!(got.len(), sent.len());
    for (m, r) in got.iter().zip(&sent) {
        let n = Notification::from_slice(unwrap_sns(m).0.as_bytes()).unwrap();
        assert_eq!(n.records, vec![r.clone()]);
        assert_eq!(
            m.group.as_deref(),
            Some(format!("photos/{}", r.key().unwrap()).as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_topic_is_permanent() {
    let h = SnsHarness::new(false).await;
    let config = SnsConfig {
        topic_arn: format!("{}-missing", h.topic_arn),
        ..h.sns_target().config().clone()
    };
    let t = SnsTarget::new("arn:minio:sqs::1:sns".parse().unwrap(), config).unwrap();
    let e = t.send(&record("k")).await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    let e = t.is_active().await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
}
