use s3_event_core::{inbound, Target};

use super::*;
use crate::aws_common::AwsConnection;
use crate::NotifyConfig;

/// An EventBridge event as S3 sends it, with `detail-type`, `detail` and
/// `time` given.
fn s3_event(detail_type: &str, detail: Value) -> Value {
    json!({
        "version": "0", "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": detail_type, "source": "aws.s3", "account": "111122223333",
        "time": "2021-11-12T00:00:00Z", "region": "ca-central-1",
        "resources": ["arn:aws:s3:::amzn-s3-demo-bucket1"], "detail": detail
    })
}

fn object_detail(extra: Value) -> Value {
    let mut d = json!({
        "version": "0",
        "bucket": {"name": "amzn-s3-demo-bucket1"},
        "object": {"key": "example-key", "size": 5,
                   "etag": "b1946ac92492d2347c6235b4d2611184",
                   "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
                   "sequencer": "617f08299329d189"},
        "request-id": "N4N7GDK58NMKJ12R", "requester": "123456789012",
        "source-ip-address": "1.2.3.4"
    });
    d.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    d
}

/// S3's documented events, one per detail-type and reason (AWS's examples
/// in "EventBridge event message structure", field for field).
fn documented_events() -> Vec<Value> {
    let created = |reason: &str| s3_event("Object Created", object_detail(json!({"reason": reason})));
    let deleted = |reason: &str, kind: &str| {
        let mut d = object_detail(json!({"reason": reason, "deletion-type": kind}));
        d["object"].as_object_mut().unwrap().remove("size");
        d["object"].as_object_mut().unwrap().remove("etag");
        s3_event("Object Deleted", d)
    };
    vec![
        created("PutObject"),
        created("POST Object"),
        created("CopyObject"),
        created("CompleteMultipartUpload"),
        deleted("DeleteObject", "Permanently Deleted"),
        deleted("DeleteObject", "Delete Marker Created"),
        deleted("Lifecycle Expiration", "Permanently Deleted"),
        deleted("Lifecycle Expiration", "Delete Marker Created"),
        s3_event("Object Restore Initiated", object_detail(json!({}))),
        s3_event(
            "Object Restore Completed",
            object_detail(json!({"restore-expiry-time": "2021-11-13T00:00:00Z",
                                 "source-storage-class": "GLACIER"})),
        ),
        s3_event("Object Restore Expired", object_detail(json!({}))),
        s3_event(
            "Object Storage Class Changed",
            object_detail(json!({"destination-storage-class": "INTELLIGENT_TIERING"})),
        ),
        s3_event(
            "Object Access Tier Changed",
            object_detail(json!({"destination-access-tier": "ARCHIVE_ACCESS"})),
        ),
        s3_event("Object ACL Updated", object_detail(json!({}))),
        s3_event("Object Tags Added", object_detail(json!({}))),
        s3_event("Object Tags Deleted", object_detail(json!({}))),
    ]
}

#[test]
fn every_documented_s3_event_is_rebuilt_from_its_record() {
    for event in documented_events() {
        let records = inbound::parse(event.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{event}: {e}"))
            .into_records();
        assert_eq!(records.len(), 1);
        let got = event_for(&records[0]);
        assert_eq!(got.detail_type, event["detail-type"], "{event}");
        assert_eq!(got.detail, event["detail"], "detail of {}", event["detail-type"]);
        assert_eq!(got.resources, ["arn:aws:s3:::amzn-s3-demo-bucket1"]);
        assert_eq!(got.time.as_deref(), Some("2021-11-12T00:00:00Z"));
    }
}

#[test]
fn a_minio_record_maps_to_s3s_shape() {
    let r = crate::conformance::record("photos/a b.jpg");
    let e = event_for(&r);
    assert_eq!(e.detail_type, "Object Created");
    assert_eq!(
        e.detail,
        json!({"version": "0", "bucket": {"name": "conformance"},
               "object": {"key": "photos/a+b.jpg", "size": 1}, "reason": "PutObject"})
    );
    // No bucket ARN in the record: S3's form of it.
    assert_eq!(e.resources, ["arn:aws:s3:::conformance"]);
}

#[test]
fn event_names_s3_does_not_send_keep_their_name() {
    let mut r = crate::conformance::record("k");
    r.event_name = Some("s3:ObjectAccessed:Get".into());
    let e = event_for(&r);
    assert_eq!(e.detail_type, "ObjectAccessed:Get");
    assert!(e.detail.get("reason").is_none());
}

fn keyed(bus: &str) -> EventBridgeConfig {
    EventBridgeConfig {
        connection: AwsConnection {
            access_key: Some("AKID".into()),
            secret_key: Some("EB-SECRET".into()),
            session_token: Some("EB-TOKEN".into()),
            endpoint: Some("http://127.0.0.1:1".into()),
            ..AwsConnection::default()
        },
        ..EventBridgeConfig::new(bus)
    }
}

#[test]
fn debug_redacts_the_secret_and_the_token() {
    let c = keyed("bus");
    let t = EventBridgeTarget::new("arn:minio:sqs::1:eventbridge".parse().unwrap(), c.clone())
        .unwrap();
    for text in [format!("{c:?}"), format!("{t:?}")] {
        assert!(!text.contains("EB-SECRET") && !text.contains("EB-TOKEN"), "{text}");
        assert!(text.contains("AKID"), "{text}");
    }
}

#[test]
fn defaults_are_the_default_bus_and_s3s_source() {
    let c = EventBridgeConfig::default();
    assert_eq!(c.bus(), "default");
    assert_eq!(c.source(), "aws.s3");
}

#[test]
fn json_and_env_build_eventbridge_targets() {
    let c = NotifyConfig::from_json(
        r#"{"eventbridge": {"1": {"enable": "on", "event_bus_name": "s3-events",
            "source": "", "region": "eu-west-1", "endpoint": "http://127.0.0.1:1",
            "access_key": "AKID", "secret_key": "JSON-SECRET", "session_token": "",
            "queue_dir": "", "queue_limit": "0"}}}"#,
        "r",
    )
    .unwrap();
    let t = c.build_targets().unwrap();
    assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:1:eventbridge");
    assert_eq!(t[0].0.max_batch(), 10);
    assert!(!format!("{:?}", t[0].0).contains("JSON-SECRET"));
    assert!(!c.redacted_json().to_string().contains("JSON-SECRET"));
    let vars = [
        ("MINIO_NOTIFY_EVENTBRIDGE_SOURCE_E", "com.example.s3"),
        ("MINIO_NOTIFY_EVENTBRIDGE_ACCESS_KEY_E", "AKID"),
        ("MINIO_NOTIFY_EVENTBRIDGE_SECRET_KEY_E", "ENV-SECRET"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let t = NotifyConfig::from_env_vars(vars, "r")
        .unwrap()
        .build_targets()
        .unwrap();
    assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:E:eventbridge");
    assert!(!format!("{:?}", t[0].0).contains("ENV-SECRET"));
}

#[test]
fn validate_names_the_key() {
    let id = || "arn:minio:sqs::1:eventbridge".parse().unwrap();
    let e = EventBridgeTarget::new(id(), keyed("no spaces")).unwrap_err();
    assert!(matches!(e, crate::Error::InvalidConfig { key: "event_bus_name", .. }), "{e}");
    let long = EventBridgeConfig {
        source: Some("s".repeat(300)),
        ..keyed("bus")
    };
    let e = EventBridgeTarget::new(id(), long).unwrap_err();
    assert!(matches!(e, crate::Error::InvalidConfig { key: "source", .. }), "{e}");
    let arn = keyed("arn:aws:events:us-east-1:123456789012:event-bus/s3-events");
    EventBridgeTarget::new(id(), arn).unwrap();
}

#[test]
fn client_keys_reach_the_sdk_client() {
    use crate::config::client::testing::{assert_client_keys, secs};
    let keys = json!({"event_bus_name": "b",
        "endpoint": "http://127.0.0.1:1", "access_key": "AKID", "secret_key": "S"});
    assert_client_keys(keys, secs(3, 10), |v| {
        let id = "arn:minio:sqs::1:eventbridge".parse().unwrap();
        let t = EventBridgeTarget::new(id, serde_json::from_value(v).unwrap()).unwrap();
        aws_common::sdk_timeouts(t.0.client.config().timeout_config())
    });
}

#[tokio::test]
async fn an_unreachable_endpoint_is_transient() {
    let t = EventBridgeTarget::new("arn:minio:sqs::1:eventbridge".parse().unwrap(), keyed("b"))
        .unwrap();
    let e = t.send(&crate::conformance::record("k")).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(!t.is_active().await.unwrap());
}
