//! The target conformance suite ([`crate::conformance`]) run against the
//! SQS target and moto (feature `integration`; `S3E_MOTO_ENDPOINT`,
//! default `http://127.0.0.1:15000`).
//!
//! Each harness creates its own queue and reads it back through its own
//! client, deleting what it read. Restarts are simulated by a TCP proxy
//! between the target and moto (moto is shared and keeps its queues in
//! memory: killing it would lose them). The queues are created with
//! `MaximumMessageSize` 1024, so the poison event (a key of 1100
//! characters) is refused permanently while the suite's events fit.

use std::sync::Arc;

use aws_sdk_sqs::types::QueueAttributeName;
use s3_event_core::{Notification, Target};

use super::*;
use crate::aws_common::moto::{self, rich_records, QueueReader};
use crate::broker_tests::{decoded_key, unique, Proxy};
use crate::conformance::{self, record, Harness};

struct SqsHarness {
    queue_url: String,
    reader: QueueReader,
    proxy: Proxy,
}

impl SqsHarness {
    async fn new(fifo: bool) -> SqsHarness {
        let mut attrs = vec![(QueueAttributeName::MaximumMessageSize, "1024")];
        let name = if fifo {
            attrs.push((QueueAttributeName::FifoQueue, "true"));
            format!("{}.fifo", unique("s3e-sqs"))
        } else {
            unique("s3e-sqs")
        };
        let (queue_url, _) = moto::create_queue(&name, &attrs).await;
        SqsHarness {
            reader: QueueReader::new(&queue_url),
            queue_url,
            proxy: Proxy::start(moto::address()).await,
        }
    }

    fn config(&self) -> SqsConfig {
        SqsConfig {
            connection: moto::connection_at(&format!("http://127.0.0.1:{}", self.proxy.port())),
            ..SqsConfig::new(self.queue_url.clone())
        }
    }

    fn sqs_target(&self) -> SqsTarget {
        let id: TargetId = "arn:minio:sqs::conformance:sqs".parse().unwrap();
        SqsTarget::new(id, self.config()).unwrap()
    }
}

#[async_trait]
impl Harness for SqsHarness {
    fn target(&self) -> Arc<dyn Target> {
        Arc::new(self.sqs_target())
    }

    async fn received(&self) -> Vec<String> {
        self.reader
            .drain()
            .await
            .iter()
            .filter_map(|m| decoded_key(m.body.as_bytes()))
            .collect()
    }

    async fn stop_server(&self) {
        self.proxy.stop().await;
    }

    async fn start_server(&self) {
        self.proxy.start_again().await;
    }

    fn poison(&self) -> Option<EventRecord> {
        Some(record(&format!("poison/{}", "x".repeat(1100))))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn standard_queue_run_all() {
    conformance::run_all(&SqsHarness::new(false).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifo_queue_run_all() {
    conformance::run_all(&SqsHarness::new(true).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn records_read_back_equal_the_records_sent_with_attributes() {
    let h = SqsHarness::new(false).await;
    let t = h.sqs_target();
    let sent = rich_records(25);
    for chunk in sent.chunks(t.max_batch()) {
        t.send_batch(chunk).await.unwrap();
    }
    let got = h.reader.drain().await;
    assert_eq!(got.len(), sent.len());
    for (m, r) in got.iter().zip(&sent) {
        let n = Notification::from_slice(m.body.as_bytes()).unwrap();
        assert_eq!(n.records, vec![r.clone()], "the record read back");
        assert_eq!(n.event_name.as_deref(), r.event_name_str());
        let mut attrs = m.attributes.clone();
        attrs.sort();
        let key = format!("photos/{}", r.decoded_key().unwrap());
        assert_eq!(
            attrs,
            vec![
                ("EventName".to_owned(), r.event_name_str().unwrap().to_owned()),
                ("Key".to_owned(), key)
            ]
        );
        assert_eq!(m.group, None);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fifo_groups_by_object_and_drops_resent_events() {
    let h = SqsHarness::new(true).await;
    let t = h.sqs_target();
    let sent = rich_records(10);
    t.send_batch(&sent).await.unwrap();
    // The same events again (a retried batch): SQS deduplicates them.
    t.send_batch(&sent).await.unwrap();
    let got = h.reader.drain().await;
    assert_eq!(got.len(), sent.len(), "each event once");
    for (m, r) in got.iter().zip(&sent) {
        let n = Notification::from_slice(m.body.as_bytes()).unwrap();
        assert_eq!(n.records, vec![r.clone()]);
        assert_eq!(
            m.group.as_deref(),
            Some(format!("photos/{}", r.key().unwrap()).as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_queue_is_permanent() {
    let h = SqsHarness::new(false).await;
    let config = SqsConfig {
        queue_url: format!("{}-missing", h.queue_url),
        ..h.config()
    };
    let t = SqsTarget::new("arn:minio:sqs::1:sqs".parse().unwrap(), config).unwrap();
    let e = t.send(&record("k")).await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    let e = t.is_active().await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
}
