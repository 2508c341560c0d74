//! The target conformance suite ([`crate::conformance`]) run against the
//! EventBridge target and moto (feature `integration`, with `sqs` for the
//! reader; `S3E_MOTO_ENDPOINT`, default `http://127.0.0.1:15000`).
//!
//! Each harness creates its own bus with a rule that matches S3's events
//! (`{"source": ["aws.s3"]}`) and targets an SQS queue, and reads the queue
//! back: each message is the event as EventBridge delivers it, parsed with
//! `s3_event_core::inbound`. Restarts are simulated by a TCP proxy between
//! the target and moto. moto refuses no well-formed `PutEvents` entry (it
//! has no size limit), so there is no poison event and
//! `dead_letters_poison` is skipped.

use std::sync::Arc;

use s3_event_core::{inbound, Target};

use super::*;
use crate::aws_common::moto::{self, rich_records, QueueReader, Received};
use crate::broker_tests::{unique, Proxy};
use crate::conformance::{self, record, Harness};

struct EventBridgeHarness {
    bus: String,
    reader: QueueReader,
    proxy: Proxy,
}

/// A rule on `bus` with `pattern`, delivering to a new queue; its reader.
async fn rule_to_queue(bus: &str, pattern: Value) -> QueueReader {
    let events = aws_sdk_eventbridge::Client::new(&moto::sdk("EventBridge"));
    let (queue_url, queue_arn) = moto::create_queue(&unique("s3e-eb-q"), &[]).await;
    let rule = unique("s3e-rule");
    events
        .put_rule()
        .name(&rule)
        .event_bus_name(bus)
        .event_pattern(pattern.to_string())
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule(&rule)
        .event_bus_name(bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(queue_arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    QueueReader::new(&queue_url)
}

impl EventBridgeHarness {
    async fn new() -> EventBridgeHarness {
        let events = aws_sdk_eventbridge::Client::new(&moto::sdk("EventBridge"));
        let bus = unique("s3e-bus");
        events.create_event_bus().name(&bus).send().await.unwrap();
        let reader = rule_to_queue(&bus, json!({"source": ["aws.s3"]})).await;
        EventBridgeHarness {
            bus,
            reader,
            proxy: Proxy::start(moto::address()).await,
        }
    }

    fn config(&self) -> EventBridgeConfig {
        EventBridgeConfig {
            connection: moto::connection_at(&format!("http://127.0.0.1:{}", self.proxy.port())),
            ..EventBridgeConfig::new(self.bus.clone())
        }
    }

    fn eb_target(&self) -> EventBridgeTarget {
        let id: TargetId = "arn:minio:sqs::conformance:eventbridge".parse().unwrap();
        EventBridgeTarget::new(id, self.config()).unwrap()
    }
}

/// The record S3's reader of an EventBridge event would get.
fn parse(m: &Received) -> EventRecord {
    let inbound = inbound::parse(m.body.as_bytes())
        .unwrap_or_else(|e| panic!("an S3 EventBridge event: {e}: {}", m.body));
    let mut records = inbound.into_records();
    assert_eq!(records.len(), 1, "{}", m.body);
    records.remove(0)
}

#[async_trait]
impl Harness for EventBridgeHarness {
    fn target(&self) -> Arc<dyn Target> {
        Arc::new(self.eb_target())
    }

    async fn received(&self) -> Vec<String> {
        self.reader
            .drain()
            .await
            .iter()
            .map(|m| parse(m).decoded_key().unwrap())
            .collect()
    }

    async fn stop_server(&self) {
        self.proxy.stop().await;
    }

    async fn start_server(&self) {
        self.proxy.start_again().await;
    }

    fn poison(&self) -> Option<EventRecord> {
        None
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn run_all() {
    conformance::run_all(&EventBridgeHarness::new().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn records_read_back_from_the_bus_equal_the_records_sent() {
    let h = EventBridgeHarness::new().await;
    // A rule as written for S3's own events: deletes in bucket `photos`.
    let deletes = rule_to_queue(
        &h.bus,
        json!({"source": ["aws.s3"], "detail-type": ["Object Deleted"],
               "detail": {"bucket": {"name": ["photos"]}}}),
    )
    .await;
    let t = h.eb_target();
    let sent = rich_records(25);
    for chunk in sent.chunks(t.max_batch()) {
        t.send_batch(chunk).await.unwrap();
    }
    let got = h.reader.drain().await;
    assert_eq!(got.len(), sent.len());
    for (m, r) in got.iter().zip(&sent) {
        let back = parse(m);
        // What an S3 event on EventBridge carries, field for field.
        assert_eq!(back.event_name, r.event_name);
        assert_eq!(back.event_source.as_deref(), Some("aws:s3"));
        let (b, s) = (back.s3.as_ref().unwrap(), r.s3.as_ref().unwrap());
        assert_eq!(b.object, s.object, "key, size, eTag, versionId, sequencer");
        let bucket = b.bucket.as_ref().unwrap();
        assert_eq!(bucket.name.as_deref(), Some("photos"));
        assert_eq!(bucket.arn.as_deref(), Some("arn:aws:s3:::photos"));
        assert_eq!(back.request_id(), r.request_id());
        assert_eq!(back.user_identity.as_ref().unwrap().principal_id, r.user_identity.as_ref().unwrap().principal_id);
        assert_eq!(back.request_parameters.as_ref().unwrap().source_ip_address, r.request_parameters.as_ref().unwrap().source_ip_address);
        // EventBridge keeps whole seconds.
        let time = r.event_time.as_deref().unwrap().replace(".000Z", "Z");
        assert_eq!(back.event_time.as_deref(), Some(time.as_str()));
    }
    let deleted: Vec<EventRecord> = deletes.drain().await.iter().map(parse).collect();
    let want: Vec<&EventRecord> = sent
        .iter()
        .filter(|r| r.event_name_str() == Some("ObjectRemoved:Delete"))
        .collect();
    assert_eq!(deleted.len(), want.len());
    for (d, w) in deleted.iter().zip(want) {
        assert_eq!(d.key(), w.key());
        assert_eq!(d.event_name, w.event_name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_bus_is_permanent() {
    let h = EventBridgeHarness::new().await;
    let config = EventBridgeConfig {
        event_bus_name: Some(format!("{}-missing", h.bus)),
        ..h.config()
    };
    let t = EventBridgeTarget::new("arn:minio:sqs::1:eventbridge".parse().unwrap(), config).unwrap();
    let e = t.send(&record("k")).await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    let e = t.is_active().await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
}
