//! Golden fixtures: real-shaped payloads from AWS S3, MinIO and AIStor (and
//! the SNS, SQS and EventBridge envelopes around them), parsed, re-serialized
//! and compared; the inbound entry point and the CloudEvents mapping checked
//! against them.

use chrono::{TimeZone, Utc};
use cloudevents::event::SpecVersion;
use cloudevents::{AttributesReader, Data};
use s3_event_core::inbound::{self, Inbound, Origin, SqsContent};
use s3_event_core::{Error, EventRecord, Notification};
use serde_json::Value;

macro_rules! fixture {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!("../fixtures/", $name)).as_slice(),
        )
    };
}

/// Documents with `Records` that `Notification::from_slice` takes directly.
const RECORD_FIXTURES: &[(&str, &[u8])] = &[
    fixture!("aws-put.json"),
    fixture!("aws-doc-put.json"),
    fixture!("aws-unicode-keys.json"),
    fixture!("aws-delete-marker.json"),
    fixture!("aws-restore-completed.json"),
    fixture!("aws-replication-failed.json"),
    fixture!("aws-lifecycle-transition.json"),
    fixture!("aws-intelligent-tiering.json"),
    fixture!("minio-aistor-put.json"),
    fixture!("aistor-envelope.json"),
    fixture!("minio-kafka-envelope.json"),
    fixture!("minio-postgresql-value.json"),
    fixture!("minio-elasticsearch-source.json"),
    fixture!("minio-redis-value.json"),
];

fn value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("fixture is JSON")
}

fn notification(name: &str, bytes: &[u8]) -> Notification {
    Notification::from_slice(bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn records(inbound: Inbound) -> (Notification, Origin) {
    match inbound {
        Inbound::Records {
            notification,
            origin,
        } => (notification, origin),
        other => panic!("expected records, got {other:?}"),
    }
}

#[test]
fn record_fixtures_round_trip_losslessly() {
    for (name, bytes) in RECORD_FIXTURES {
        let n = notification(name, bytes);
        assert!(!n.records.is_empty(), "{name}: no records");
        assert_eq!(
            serde_json::to_value(&n).unwrap(),
            value(bytes),
            "{name}: to_value"
        );
        // Through bytes as well: what a target would send.
        assert_eq!(value(&n.to_vec()), value(bytes), "{name}: to_vec");
        // Every eventTime comes back as the same text (precision kept).
        let out = String::from_utf8(n.to_vec()).unwrap();
        for r in &n.records {
            let t = r.event_time.as_deref().expect("eventTime");
            assert!(
                out.contains(&format!("\"eventTime\":\"{t}\"")),
                "{name}: {t}"
            );
        }
        // The same records through the inbound entry point.
        let (via_inbound, _) = records(inbound::parse(bytes).unwrap());
        assert_eq!(via_inbound, n, "{name}: inbound::parse");
    }
}

#[test]
fn record_fixture_fields() {
    /// (fixture, record, bucket, decoded key, event name, event version, size)
    type Row = (
        &'static str,
        usize,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        Option<u64>,
    );
    #[rustfmt::skip]
    let expected: &[Row] = &[
        ("aws-put.json", 0, "amzn-s3-demo-bucket", "HappyFace.jpg", "ObjectCreated:Put", "2.1", Some(1024)),
        ("aws-doc-put.json", 0, "mybucket", "HappyFace.jpg", "ObjectCreated:Put", "2.1", Some(1024)),
        ("aws-unicode-keys.json", 0, "photos-tokyo", "日本/red flower.jpg", "ObjectCreated:CompleteMultipartUpload", "2.1", Some(73214958)),
        ("aws-unicode-keys.json", 1, "photos-tokyo", "c++/café menu (1).pdf", "ObjectCreated:Copy", "2.1", Some(20480)),
        ("aws-delete-marker.json", 0, "ledger-eu", "reports/2024/q1.csv", "ObjectRemoved:DeleteMarkerCreated", "2.1", None),
        ("aws-restore-completed.json", 0, "archive-us", "cold/2019/ledger.parquet", "ObjectRestore:Completed", "2.1", Some(52428800)),
        ("aws-replication-failed.json", 0, "source-bucket", "data/file.txt", "Replication:OperationFailedReplication", "2.2", Some(520080)),
        ("aws-lifecycle-transition.json", 0, "logs-archive", "2023/12/31/app.log.gz", "LifecycleTransition", "2.3", Some(1048576)),
        ("aws-intelligent-tiering.json", 0, "mybucket", "myobject", "IntelligentTiering", "2.3", Some(252294)),
        ("minio-aistor-put.json", 0, "test-bucket", "image.jpg", "s3:ObjectCreated:Put", "2.0", Some(84452)),
        ("aistor-envelope.json", 0, "test-bucket", "image.jpg", "s3:ObjectCreated:Put", "2.0", Some(84452)),
        ("minio-kafka-envelope.json", 0, "images", "myphoto.jpg", "s3:ObjectCreated:Put", "2.0", Some(541596)),
        ("minio-postgresql-value.json", 0, "images", "myphoto.jpg", "s3:ObjectCreated:Put", "2.0", Some(56060)),
        ("minio-elasticsearch-source.json", 0, "images", "myphoto.jpg", "s3:ObjectCreated:Put", "2.0", Some(200436)),
        ("minio-redis-value.json", 0, "images", "myphoto.jpg", "s3:ObjectCreated:Put", "2.0", Some(23745)),
    ];
    for &(name, i, bucket, key, event, version, size) in expected {
        let bytes = RECORD_FIXTURES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| *b)
            .unwrap_or_else(|| panic!("{name} is not a record fixture"));
        let n = notification(name, bytes);
        let r = &n.records[i];
        assert_eq!(r.bucket_name(), Some(bucket), "{name}[{i}]");
        assert_eq!(r.decoded_key().unwrap(), key, "{name}[{i}]");
        assert_eq!(r.event_name_str(), Some(event), "{name}[{i}]");
        assert_eq!(r.event_version.as_deref(), Some(version), "{name}[{i}]");
        assert_eq!(r.size(), size, "{name}[{i}]");
    }
}

#[test]
fn version_specific_data_is_typed() {
    let (_, b) = fixture!("aws-delete-marker.json");
    let r = &notification("delete", b).records[0];
    let o = r.s3.as_ref().unwrap().object.as_ref().unwrap();
    assert_eq!((o.size, o.e_tag.as_deref()), (None, None));
    assert_eq!(
        o.version_id.as_deref(),
        Some("nF2hcdaXb.lVq1t6lRWzA7l9nh_nr1gH")
    );

    let (_, b) = fixture!("aws-restore-completed.json");
    let r = &notification("restore", b).records[0];
    let restore = r
        .glacier_event_data
        .as_ref()
        .unwrap()
        .restore_event_data
        .as_ref()
        .unwrap();
    assert_eq!(
        restore.lifecycle_restoration_expiry_time.as_deref(),
        Some("2024-01-16T00:00:00.000Z")
    );
    assert_eq!(
        restore.lifecycle_restore_storage_class.as_deref(),
        Some("DEEP_ARCHIVE")
    );

    let (_, b) = fixture!("aws-replication-failed.json");
    let r = &notification("replication", b).records[0];
    let rep = r.replication_event_data.as_ref().unwrap();
    assert_eq!(
        rep.failure_reason.as_deref(),
        Some("AssumeRoleNotPermitted")
    );
    assert_eq!(
        rep.destination_bucket.as_deref(),
        Some("arn:aws:s3:::target-bucket")
    );
    assert_eq!(r.event_version(), Some((2, 2)));

    let (_, b) = fixture!("aws-lifecycle-transition.json");
    let r = &notification("transition", b).records[0];
    let class = r
        .lifecycle_event_data
        .as_ref()
        .unwrap()
        .transition_event_data
        .as_ref()
        .unwrap();
    assert_eq!(
        class.destination_storage_class.as_deref(),
        Some("GLACIER_IR")
    );

    let (_, b) = fixture!("aws-intelligent-tiering.json");
    let r = &notification("tiering", b).records[0];
    let tier = r.intelligent_tiering_event_data.as_ref().unwrap();
    assert_eq!(
        tier.destination_access_tier.as_deref(),
        Some("ARCHIVE_ACCESS")
    );

    let (_, b) = fixture!("minio-aistor-put.json");
    let n = notification("aistor", b);
    let r = &n.records[0];
    let source = r.source.as_ref().unwrap();
    assert_eq!(
        source.user_agent.as_deref(),
        Some("MinIO (linux; amd64) minio-go/v7.0.83")
    );
    assert_eq!(source.port.as_deref(), Some(""));
    let o = r.s3.as_ref().unwrap().object.as_ref().unwrap();
    assert_eq!(o.content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(
        o.user_metadata.as_ref().unwrap()["content-type"],
        "image/jpeg"
    );
}

#[test]
fn minio_envelopes_are_recognised() {
    for (name, bytes) in [
        fixture!("minio-aistor-put.json"),
        fixture!("aistor-envelope.json"),
        fixture!("minio-kafka-envelope.json"),
    ] {
        let (n, origin) = records(inbound::parse(bytes).unwrap());
        assert_eq!(origin, Origin::MinioEnvelope, "{name}");
        assert_eq!(n.records.len(), 1, "{name}");
    }
    let (_, b) = fixture!("aistor-envelope.json");
    let (n, _) = records(inbound::parse(b).unwrap());
    assert_eq!(n.event_name.as_deref(), Some("s3:ObjectCreated:Put"));
    assert_eq!(n.key.as_deref(), Some("test-bucket/image.jpg"));

    // The older envelope: `EventType`, and MinIO's logger fields.
    let (_, b) = fixture!("minio-kafka-envelope.json");
    let (n, _) = records(inbound::parse(b).unwrap());
    assert_eq!(n.extra["EventType"], "s3:ObjectCreated:Put");
    assert_eq!(n.key.as_deref(), Some("images/myphoto.jpg"));
    assert_eq!(n.extra["level"], "info");
    assert_eq!(n.extra["time"], "2017-01-31T15:31:51+05:30");

    for (name, bytes) in [
        fixture!("minio-postgresql-value.json"),
        fixture!("minio-elasticsearch-source.json"),
        fixture!("minio-redis-value.json"),
        fixture!("aws-put.json"),
    ] {
        let (_, origin) = records(inbound::parse(bytes).unwrap());
        assert_eq!(origin, Origin::Plain, "{name}");
    }
}

#[test]
fn s3_test_event() {
    let (_, b) = fixture!("s3-test-event.json");
    let Inbound::TestEvent { event, origin } = inbound::parse(b).unwrap() else {
        panic!("not a test event")
    };
    assert_eq!(origin, Origin::Plain);
    assert_eq!(event.event.as_deref(), Some("s3:TestEvent"));
    assert_eq!(event.service.as_deref(), Some("Amazon S3"));
    assert_eq!(event.bucket.as_deref(), Some("bucketname"));
    assert_eq!(event.request_id.as_deref(), Some("5582815E1AEA5ADF"));
    assert_eq!(serde_json::to_value(&event).unwrap(), value(b));
    assert!(inbound::parse(b).unwrap().records().is_empty());
}

#[test]
fn sns_notification() {
    let (_, b) = fixture!("sns-notification.json");
    let (n, origin) = records(inbound::parse(b).unwrap());
    let Origin::Sns { message, inner } = origin else {
        panic!("not SNS")
    };
    assert_eq!(*inner, Origin::Plain);
    assert_eq!(message.message_type.as_deref(), Some("Notification"));
    assert_eq!(
        message.message_id.as_deref(),
        Some("22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324")
    );
    assert_eq!(
        message.topic_arn.as_deref(),
        Some("arn:aws:sns:us-west-2:123456789012:s3-uploads")
    );
    assert_eq!(message.subject.as_deref(), Some("Amazon S3 Notification"));
    assert_eq!(message.signature_version.as_deref(), Some("1"));
    assert!(message
        .signature
        .as_deref()
        .unwrap()
        .starts_with("EXAMPLEpH+"));
    assert!(message
        .signing_cert_url
        .as_deref()
        .unwrap()
        .ends_with(".pem"));
    assert!(message.unsubscribe_url.is_some());
    // The envelope is kept whole, and the records inside round-trip.
    assert_eq!(serde_json::to_value(&*message).unwrap(), value(b));
    let inner_json = value(message.message.as_deref().unwrap().as_bytes());
    assert_eq!(serde_json::to_value(&n).unwrap(), inner_json);

    let r = &n.records[0];
    assert_eq!(r.bucket_name(), Some("amzn-s3-demo-bucket"));
    assert_eq!(r.decoded_key().unwrap(), "HappyFace.jpg");
    assert_eq!(r.event_name_str(), Some("ObjectCreated:Put"));
}

#[test]
fn sns_test_event_and_minio_envelope_inside() {
    let (_, test) = fixture!("s3-test-event.json");
    let envelope = serde_json::json!({
        "Type": "Notification", "MessageId": "m", "TopicArn": "arn:aws:sns:us-east-1:1:t",
        "Message": std::str::from_utf8(test).unwrap(),
    });
    let Inbound::TestEvent { event, origin } =
        inbound::parse(envelope.to_string().as_bytes()).unwrap()
    else {
        panic!("not a test event")
    };
    assert_eq!(event.bucket.as_deref(), Some("bucketname"));
    assert!(matches!(origin, Origin::Sns { inner, .. } if *inner == Origin::Plain));

    let (_, minio) = fixture!("minio-kafka-envelope.json");
    let envelope = serde_json::json!({
        "Type": "Notification", "MessageId": "m", "TopicArn": "arn:aws:sns:us-east-1:1:t",
        "Message": std::str::from_utf8(minio).unwrap(),
    });
    let (n, origin) = records(inbound::parse(envelope.to_string().as_bytes()).unwrap());
    assert!(matches!(origin, Origin::Sns { inner, .. } if *inner == Origin::MinioEnvelope));
    assert_eq!(n.records[0].decoded_key().unwrap(), "myphoto.jpg");
}

#[test]
fn sns_subscription_confirmation() {
    let (_, b) = fixture!("sns-subscription-confirmation.json");
    let Inbound::SnsSubscriptionConfirmation { message } = inbound::parse(b).unwrap() else {
        panic!("not a subscription confirmation")
    };
    assert_eq!(
        message.message_type.as_deref(),
        Some("SubscriptionConfirmation")
    );
    assert_eq!(
        message.message_id.as_deref(),
        Some("165545c9-2a5c-472c-8df2-7ff2be2b3b1b")
    );
    assert!(message
        .token
        .as_deref()
        .unwrap()
        .starts_with("2336412f37fb687f"));
    assert!(message
        .subscribe_url
        .as_deref()
        .unwrap()
        .starts_with("https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&"));
    assert_eq!(
        message.timestamp.as_deref(),
        Some("2012-04-26T20:45:04.751Z")
    );
    assert!(message
        .message
        .as_deref()
        .unwrap()
        .contains("To confirm the subscription"));
    assert_eq!(serde_json::to_value(&message).unwrap(), value(b));

    let mut v = value(b);
    v["Type"] = "UnsubscribeConfirmation".into();
    assert!(matches!(
        inbound::parse(v.to_string().as_bytes()).unwrap(),
        Inbound::SnsUnsubscribeConfirmation { .. }
    ));
}

#[test]
fn sqs_lambda_event() {
    let (_, b) = fixture!("sqs-lambda-event.json");
    let (n, origin) = records(inbound::parse(b).unwrap());
    let Origin::Sqs { messages } = origin else {
        panic!("not SQS")
    };
    assert_eq!(messages.len(), 2);
    assert_eq!(n.records.len(), 3);

    // Message 0: S3 → SQS directly; its body's records come first.
    let m0 = &messages[0];
    assert_eq!(
        m0.message_id.as_deref(),
        Some("059f36b4-87a3-44ab-83d2-661975830a7d")
    );
    assert!(m0.receipt_handle.as_deref().unwrap().starts_with("AQEB"));
    let SqsContent::Records { origin, range } = &m0.content else {
        panic!("message 0 holds no records")
    };
    assert_eq!((origin, range.clone()), (&Origin::Plain, 0..2));
    let body: Value =
        serde_json::from_str(value(b)["Records"][0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        serde_json::to_value(&n.records[range.clone()]).unwrap(),
        body["Records"]
    );
    assert_eq!(n.records[0].decoded_key().unwrap(), "日本/red flower.jpg");
    assert_eq!(n.records[1].decoded_key().unwrap(), "c++/café menu (1).pdf");

    // Message 1: S3 → SNS → SQS; the SNS envelope is kept.
    let SqsContent::Records { origin, range } = &messages[1].content else {
        panic!("message 1 holds no records")
    };
    assert_eq!(range.clone(), 2..3);
    let Origin::Sns { message, inner } = origin else {
        panic!("message 1 is not SNS")
    };
    assert_eq!(**inner, Origin::Plain);
    assert_eq!(
        message.topic_arn.as_deref(),
        Some("arn:aws:sns:eu-west-1:123456789012:s3-deletes")
    );
    let inner_json = value(message.message.as_deref().unwrap().as_bytes());
    assert_eq!(
        serde_json::to_value(&n.records[2..]).unwrap(),
        inner_json["Records"]
    );
    let r = &n.records[2];
    assert_eq!(r.bucket_name(), Some("ledger-eu"));
    assert_eq!(r.decoded_key().unwrap(), "reports/2024/q1.csv");
    assert_eq!(
        r.event_name_str(),
        Some("ObjectRemoved:DeleteMarkerCreated")
    );
}

#[test]
fn sqs_receive_message_test_event() {
    let (_, b) = fixture!("sqs-receive-message-test-event.json");
    let Inbound::TestEvent { event, origin } = inbound::parse(b).unwrap() else {
        panic!("not a test event")
    };
    assert_eq!(event.bucket.as_deref(), Some("bucketname"));
    let Origin::Sqs { messages } = origin else {
        panic!("not SQS")
    };
    assert_eq!(
        messages[0].receipt_handle.as_deref(),
        Some("AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a+EXAMPLE==")
    );
    assert!(matches!(messages[0].content, SqsContent::TestEvent { .. }));
}

#[test]
fn eventbridge_object_created() {
    let (_, b) = fixture!("eventbridge-object-created.json");
    let (n, origin) = records(inbound::parse(b).unwrap());
    let Origin::EventBridge(event) = origin else {
        panic!("not EventBridge")
    };
    // The original event is kept whole.
    assert_eq!(serde_json::to_value(&*event).unwrap(), value(b));
    assert_eq!(
        event.id.as_deref(),
        Some("17793124-05d4-b198-2fde-7ededc63b103")
    );

    let r = &n.records[0];
    assert_eq!(r.event_name_str(), Some("ObjectCreated:Put"));
    assert_eq!(r.event_version.as_deref(), Some("2.1"));
    assert_eq!(r.event_source.as_deref(), Some("aws:s3"));
    assert_eq!(r.aws_region.as_deref(), Some("ca-central-1"));
    assert_eq!(r.event_time.as_deref(), Some("2021-11-12T00:00:00Z"));
    assert_eq!(r.bucket_name(), Some("amzn-s3-demo-bucket1"));
    assert_eq!(r.key(), Some("uploads/red+flower%E2%80%942021.jpg"));
    assert_eq!(r.decoded_key().unwrap(), "uploads/red flower—2021.jpg");
    assert_eq!(r.size(), Some(5));
    assert_eq!(r.request_id(), Some("N4N7GDK58NMKJ12R"));
    let s3 = r.s3.as_ref().unwrap();
    let o = s3.object.as_ref().unwrap();
    assert_eq!(o.e_tag.as_deref(), Some("b1946ac92492d2347c6235b4d2611184"));
    assert_eq!(
        o.version_id.as_deref(),
        Some("IYV3p45BT0ac8hjHg1houSdS1a.Mro8e")
    );
    assert_eq!(o.sequencer.as_deref(), Some("617f08299329d189"));
    assert_eq!(
        s3.bucket.as_ref().unwrap().arn.as_deref(),
        Some("arn:aws:s3:::amzn-s3-demo-bucket1")
    );
    let ip = r
        .request_parameters
        .as_ref()
        .unwrap()
        .source_ip_address
        .as_deref();
    assert_eq!(ip, Some("1.2.3.4"));
    // The mapped record is itself a lossless record.
    let again: EventRecord = serde_json::from_value(serde_json::to_value(r).unwrap()).unwrap();
    assert_eq!(&again, r);
    assert_eq!(event.to_record().unwrap(), *r);
}

#[test]
fn eventbridge_object_deleted() {
    let (_, b) = fixture!("eventbridge-object-deleted.json");
    let (n, origin) = records(inbound::parse(b).unwrap());
    assert!(matches!(origin, Origin::EventBridge(_)));
    let r = &n.records[0];
    assert_eq!(
        r.event_name_str(),
        Some("ObjectRemoved:DeleteMarkerCreated")
    );
    assert_eq!(r.bucket_name(), Some("amzn-s3-demo-bucket1"));
    assert_eq!(r.decoded_key().unwrap(), "example-key");
    assert_eq!(r.size(), None);

    // The other deletion type and the lifecycle reason.
    let mut v = value(b);
    v["detail"]["deletion-type"] = "Permanently Deleted".into();
    let (n, _) = records(inbound::parse(v.to_string().as_bytes()).unwrap());
    assert_eq!(n.records[0].event_name_str(), Some("ObjectRemoved:Delete"));
    v["detail"]["reason"] = "Lifecycle Expiration".into();
    let (n, _) = records(inbound::parse(v.to_string().as_bytes()).unwrap());
    assert_eq!(
        n.records[0].event_name_str(),
        Some("LifecycleExpiration:Delete")
    );
    assert_eq!(n.records[0].event_version.as_deref(), Some("2.3"));

    // Restore completed carries its restore data over.
    let mut v = value(b);
    v["detail-type"] = "Object Restore Completed".into();
    v["detail"]["restore-expiry-time"] = "2021-11-13T00:00:00Z".into();
    v["detail"]["source-storage-class"] = "GLACIER".into();
    let (n, _) = records(inbound::parse(v.to_string().as_bytes()).unwrap());
    let r = &n.records[0];
    assert_eq!(r.event_name_str(), Some("ObjectRestore:Completed"));
    let restore = r
        .glacier_event_data
        .as_ref()
        .unwrap()
        .restore_event_data
        .as_ref()
        .unwrap();
    assert_eq!(
        restore.lifecycle_restore_storage_class.as_deref(),
        Some("GLACIER")
    );
    assert_eq!(
        restore.lifecycle_restoration_expiry_time.as_deref(),
        Some("2021-11-13T00:00:00Z")
    );
}

#[test]
fn bad_inputs_say_what_is_wrong() {
    let reason = |bytes: &[u8]| match inbound::parse(bytes) {
        Err(e @ Error::Inbound { .. }) => e.to_string(),
        Err(e) => panic!("expected Error::Inbound, got {e:?}"),
        Ok(v) => panic!("expected an error, got {v:?}"),
    };
    assert!(reason(b"<xml/>").contains("not JSON: "));
    assert!(reason(b"\"Records\"").contains("not a JSON object"));
    assert!(reason(br#"{"hello":"world"}"#)
        .contains("JSON object without Records, Type or detail-type"));
    let sns =
        br#"{"Type":"Notification","MessageId":"m","TopicArn":"t","Message":"Hello from SNS"}"#;
    assert!(reason(sns).contains("SNS Message is not JSON: "));
    let e = reason(br#"{"version":"0","detail-type":"EC2 Instance State-change Notification","source":"aws.ec2","detail":{}}"#);
    assert!(
        e.contains("EventBridge event from source `aws.ec2` is not aws.s3"),
        "{e}"
    );
    let e = reason(br#"{"Records":[{"eventSource":"aws:sqs","messageId":"1"}]}"#);
    assert!(e.contains("record 0 has no `body` string"), "{e}");
    let e = reason(br#"{"Records":[{"eventSource":"aws:sqs","body":"{\"Records\": 5}"}]}"#);
    assert!(
        e.contains("SQS record 0 body: invalid JSON in S3 event notification"),
        "{e}"
    );
    let e = reason(
        br#"{"Type":"SubscriptionConfirmation","MessageId":"m","TopicArn":"t","Message":"x"}"#,
    );
    assert!(e.contains("`Token`"), "{e}");

    // A recognised document with a field of the wrong type: a JSON error
    // that names the document and the problem.
    let e = inbound::parse(br#"{"Records":[{"s3":{"object":{"size":"big"}}}]}"#).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Json {
                what: "S3 event notification",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("invalid type"), "{e}");
}

#[test]
fn cloudevent_of_the_aws_fixture_has_the_adapter_attributes() {
    let (_, b) = fixture!("aws-put.json");
    let n = notification("aws-put", b);
    let r = &n.records[0];
    let ev = r.to_cloudevent().unwrap();
    assert_eq!(
        ev.id(),
        "C3D13FE58DE4C810.FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"
    );
    assert_eq!(ev.source(), "aws:s3.us-west-2.amzn-s3-demo-bucket");
    assert_eq!(ev.specversion(), SpecVersion::V10);
    assert_eq!(ev.ty(), "com.amazonaws.s3.ObjectCreated:Put");
    assert_eq!(ev.datacontenttype(), Some("application/json"));
    assert_eq!(ev.dataschema(), None);
    assert_eq!(ev.subject(), Some("HappyFace.jpg"));
    assert_eq!(ev.time(), Some(&Utc.timestamp_opt(0, 0).unwrap()));
    assert_eq!(
        ev.data(),
        Some(&Data::Json(serde_json::to_value(r).unwrap()))
    );
    assert_eq!(ev.iter_extensions().count(), 0);
    // id, source, specversion, type, datacontenttype, subject, time.
    assert_eq!(ev.iter_attributes().count(), 7);

    // Structured mode JSON carries the same.
    let structured = serde_json::to_value(&ev).unwrap();
    assert_eq!(structured["specversion"], "1.0");
    assert_eq!(structured["type"], "com.amazonaws.s3.ObjectCreated:Put");
    assert_eq!(structured["data"], value(b)["Records"][0]);

    assert_eq!(n.to_cloudevents().unwrap(), vec![ev]);
}

#[test]
fn cloudevent_of_minio_strips_the_s3_prefix() {
    let (_, b) = fixture!("minio-aistor-put.json");
    let r = &notification("aistor", b).records[0];
    let ev = r.to_cloudevent().unwrap();
    assert_eq!(ev.ty(), "com.amazonaws.s3.ObjectCreated:Put");
    assert_eq!(
        ev.id(),
        "182178E8B36AC9DF.dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8"
    );
    // MinIO's empty region stays empty.
    assert_eq!(ev.source(), "minio:s3..test-bucket");
    assert_eq!(ev.subject(), Some("image.jpg"));
    assert_eq!(
        ev.time(),
        Some(
            &(Utc.with_ymd_and_hms(2025, 2, 6, 1, 4, 31).unwrap()
                + chrono::Duration::milliseconds(998))
        )
    );
}

#[test]
fn cloudevents_round_trip_every_record_fixture() {
    let mut mapped = 0;
    for (name, bytes) in RECORD_FIXTURES {
        for (i, r) in notification(name, bytes).records.iter().enumerate() {
            match r.to_cloudevent() {
                Ok(ev) => {
                    assert_eq!(
                        EventRecord::from_cloudevent(&ev).unwrap(),
                        *r,
                        "{name}[{i}]"
                    );
                    mapped += 1;
                }
                // MinIO's Elasticsearch/PostgreSQL/Redis examples have an
                // empty `responseElements`: no request id, so no `id`.
                Err(Error::CloudEvent { attribute, .. }) => {
                    assert_eq!(attribute, "id", "{name}[{i}]");
                    assert!(r.request_id().is_none(), "{name}[{i}]");
                }
                Err(e) => panic!("{name}[{i}]: {e}"),
            }
        }
    }
    assert!(mapped >= 12, "only {mapped} records mapped");

    // EventBridge records (no x-amz-id-2) map too, with the request id as id.
    let (_, b) = fixture!("eventbridge-object-created.json");
    let (n, _) = records(inbound::parse(b).unwrap());
    let ev = n.records[0].to_cloudevent().unwrap();
    assert_eq!(ev.id(), "N4N7GDK58NMKJ12R");
    assert_eq!(ev.source(), "aws:s3.ca-central-1.amzn-s3-demo-bucket1");
    assert_eq!(EventRecord::from_cloudevent(&ev).unwrap(), n.records[0]);
}
