//! Inbound payloads: one entry point, [`parse`], for anything a receiver of S3
//! notifications can be handed, and an [`Inbound`] that says what it was.
//!
//! ```
//! use s3_event_core::inbound::{self, Inbound, Origin};
//!
//! // An S3 notification delivered by SNS over HTTP: the records travel as a
//! // JSON string in `Message`.
//! let body = br#"{"Type":"Notification","MessageId":"m-1",
//!   "TopicArn":"arn:aws:sns:us-east-1:123456789012:uploads",
//!   "Message":"{\"Records\":[{\"eventName\":\"ObjectCreated:Put\",\"s3\":{\"bucket\":{\"name\":\"photos\"},\"object\":{\"key\":\"red+flower.jpg\"}}}]}"}"#;
//!
//! match inbound::parse(body).unwrap() {
//!     Inbound::Records { notification, origin: Origin::Sns { message, .. } } => {
//!         assert_eq!(message.message_id.as_deref(), Some("m-1"));
//!         let r = &notification.records[0];
//!         assert_eq!(r.bucket_name(), Some("photos"));
//!         assert_eq!(r.decoded_key().unwrap(), "red flower.jpg");
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//!
//! // Anything else is an error that says what is wrong with it.
//! let err = inbound::parse(b"{\"hello\":1}").unwrap_err();
//! assert!(err.to_string().contains("without Records, Type or detail-type"));
//! ```
//!
//! # What is recognised
//!
//! | Payload | Result |
//! |---|---|
//! | `{"Records":[...]}` (AWS, MinIO Elasticsearch/PostgreSQL/Redis values) | [`Inbound::Records`], [`Origin::Plain`] |
//! | MinIO webhook/Kafka envelope `{"EventName"` or `"EventType", "Key", "Records"}` | [`Inbound::Records`], [`Origin::MinioEnvelope`] |
//! | `{"Service":"Amazon S3","Event":"s3:TestEvent",...}` | [`Inbound::TestEvent`] |
//! | SNS `Notification` (HTTP/HTTPS subscription, or an SQS body without raw delivery) | records or test event of `Message`, [`Origin::Sns`] |
//! | SNS `SubscriptionConfirmation` / `UnsubscribeConfirmation` | [`Inbound::SnsSubscriptionConfirmation`] / [`Inbound::SnsUnsubscribeConfirmation`] |
//! | Lambda SNS event `{"Records":[{"EventSource":"aws:sns","Sns":{...}}]}` | as the SNS message it holds |
//! | SQS `ReceiveMessage` output `{"Messages":[{"Body":...}]}` and Lambda SQS event `{"Records":[{"eventSource":"aws:sqs","body":...}]}` | every body parsed (records, SNS envelope, EventBridge event or test event), all records joined, [`Origin::Sqs`] |
//! | EventBridge `{"source":"aws.s3","detail-type":"Object Created",...}` | one record mapped from `detail` ([`EventBridgeEvent::to_record`]), [`Origin::EventBridge`] |
//!
//! A raw SQS body is just one of the other payloads (S3 sends the records
//! directly; SNS sends its envelope unless raw delivery is on), so it comes
//! back with the origin of what it holds.
//!
//! [`parse`] never panics: every input either parses or yields an
//! [`Error`] whose message names what is wrong (`not JSON: ...`,
//! `JSON object without Records, Type or detail-type ...`, `SNS Message is not
//! JSON: ...`, `EventBridge event from source `x` is not aws.s3`, ...).

use std::cell::Cell;
use std::fmt;
use std::ops::Range;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, Visitor};

use crate::wire::wire_struct;
use crate::{
    Bucket, EventRecord, GlacierEventData, IntelligentTieringEventData, LifecycleEventData,
    Notification, Object, RequestParameters, ResponseElements, RestoreEventData, S3Entity,
    TransitionEventData, UserIdentity,
};
use crate::{Error, Result};

/// What an inbound payload was, with the records it carried.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Inbound {
    /// S3 event records (possibly none, e.g. an empty SQS batch).
    Records {
        /// The records, in the order they arrived. For an SQS batch, the
        /// records of every message joined; [`SqsMessage`] says which came
        /// from which message.
        notification: Notification,
        /// How they were delivered.
        origin: Origin,
    },
    /// The `s3:TestEvent` that S3 sends when a notification configuration is
    /// saved. It carries no records; acknowledge it and move on.
    TestEvent {
        /// The test event.
        event: TestEvent,
        /// How it was delivered ([`Origin::Plain`] when sent directly).
        origin: Origin,
    },
    /// An SNS `SubscriptionConfirmation`: visit `SubscribeURL` (after
    /// verifying the signature) to confirm the subscription.
    SnsSubscriptionConfirmation {
        /// The SNS message; `Token` and `SubscribeURL` are present.
        message: SnsMessage,
    },
    /// An SNS `UnsubscribeConfirmation`: the endpoint was unsubscribed;
    /// `SubscribeURL` re-subscribes it.
    SnsUnsubscribeConfirmation {
        /// The SNS message; `Token` and `SubscribeURL` are present.
        message: SnsMessage,
    },
}

impl Inbound {
    /// The records carried, empty for test events and SNS confirmations.
    pub fn records(&self) -> &[EventRecord] {
        match self {
            Inbound::Records { notification, .. } => &notification.records,
            _ => &[],
        }
    }

    /// Takes the records out, empty for test events and SNS confirmations.
    pub fn into_records(self) -> Vec<EventRecord> {
        match self {
            Inbound::Records { notification, .. } => notification.records,
            _ => Vec::new(),
        }
    }
}

/// How records or a test event were delivered.
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    /// A plain `{"Records": [...]}` document (or a bare test event).
    Plain,
    /// MinIO's webhook/Kafka envelope: `EventName` (or the older `EventType`)
    /// and `Key` next to `Records`. They stay available in
    /// [`Notification::event_name`], [`Notification::key`] and
    /// [`Notification::extra`].
    MinioEnvelope,
    /// An SNS `Notification` whose `Message` held the payload.
    Sns {
        /// The full SNS envelope, kept for signature verification.
        message: Box<SnsMessage>,
        /// What `Message` held: [`Origin::Plain`], [`Origin::MinioEnvelope`]
        /// or [`Origin::EventBridge`].
        inner: Box<Origin>,
    },
    /// An SQS `ReceiveMessage` output or a Lambda SQS event.
    Sqs {
        /// One entry per SQS message, in order.
        messages: Vec<SqsMessage>,
    },
    /// An EventBridge event, mapped to one record by
    /// [`EventBridgeEvent::to_record`].
    EventBridge(Box<EventBridgeEvent>),
}

impl Origin {
    /// A short human-readable description: `plain`, `MinIO envelope`,
    /// `SNS(plain)`, `SQS(2 messages)`, `EventBridge`.
    pub fn describe(&self) -> String {
        match self {
            Origin::Plain => "plain".to_owned(),
            Origin::MinioEnvelope => "MinIO envelope".to_owned(),
            Origin::Sns { inner, .. } => format!("SNS({})", inner.describe()),
            Origin::Sqs { messages } => format!("SQS({} messages)", messages.len()),
            Origin::EventBridge(_) => "EventBridge".to_owned(),
        }
    }
}

/// One message of an SQS batch.
#[derive(Clone, Debug, PartialEq)]
pub struct SqsMessage {
    /// `MessageId` (`ReceiveMessage`) or `messageId` (Lambda).
    pub message_id: Option<String>,
    /// `ReceiptHandle` or `receiptHandle`: what `DeleteMessage` needs.
    pub receipt_handle: Option<String>,
    /// What the body held.
    pub content: SqsContent,
}

/// What the body of one SQS message held.
#[derive(Clone, Debug, PartialEq)]
pub enum SqsContent {
    /// S3 event records, now part of the joined notification.
    Records {
        /// How the body carried them (plain, MinIO envelope, SNS, EventBridge).
        origin: Origin,
        /// Their positions in the joined [`Notification::records`].
        range: Range<usize>,
    },
    /// An `s3:TestEvent`.
    TestEvent {
        /// The test event.
        event: TestEvent,
        /// How the body carried it (plain or SNS).
        origin: Origin,
    },
    /// An SNS `SubscriptionConfirmation` or `UnsubscribeConfirmation`
    /// (a cross-account SNS subscription of the queue); see
    /// [`SnsMessage::message_type`].
    SnsConfirmation(SnsMessage),
}

wire_struct! {
    /// The `s3:TestEvent` document:
    /// `{"Service":"Amazon S3","Event":"s3:TestEvent","Time":...,"Bucket":...,"RequestId":...,"HostId":...}`.
    pub struct TestEvent {
        /// `Amazon S3`.
        service: String => "Service",
        /// `s3:TestEvent`.
        event: String => "Event",
        /// When the test event was sent (ISO-8601, as sent).
        time: String => "Time",
        /// The bucket whose configuration was saved.
        bucket: String => "Bucket",
        /// The request id.
        request_id: String => "RequestId",
        /// The host id.
        host_id: String => "HostId",
    }
}

wire_struct! {
    /// An SNS message as delivered to HTTP/HTTPS endpoints and (without raw
    /// delivery) to SQS queues, every field kept as sent so that its
    /// signature can be verified.
    ///
    /// [`parse`] checks that `Type`, `MessageId`, `TopicArn` and `Message`
    /// are present, and for confirmations also `Token` and `SubscribeURL`.
    /// Lambda SNS events spell two names differently (`SigningCertUrl`,
    /// `UnsubscribeUrl`); those stay in `extra` under their own names.
    pub struct SnsMessage {
        /// `Notification`, `SubscriptionConfirmation` or
        /// `UnsubscribeConfirmation`.
        message_type: String => "Type",
        /// Unique per published message.
        message_id: String => "MessageId",
        /// Confirmations: the token to pass to `ConfirmSubscription`.
        token: String => "Token",
        /// The topic.
        topic_arn: String => "TopicArn",
        /// Notifications: the subject given when publishing, if any.
        subject: String => "Subject",
        /// The payload: for S3 notifications, the records (or the test
        /// event) as a JSON string.
        message: String => "Message",
        /// When SNS published the message (ISO-8601).
        timestamp: String => "Timestamp",
        /// `1` (SHA1withRSA) or `2` (SHA256withRSA).
        signature_version: String => "SignatureVersion",
        /// Base64 signature over the canonical string of the message.
        signature: String => "Signature",
        /// Where to fetch the certificate that signed the message.
        signing_cert_url: String => "SigningCertURL",
        /// Confirmations: the URL that confirms the subscription.
        subscribe_url: String => "SubscribeURL",
        /// Notifications: the URL that unsubscribes the endpoint.
        unsubscribe_url: String => "UnsubscribeURL",
    }
}

wire_struct! {
    /// An EventBridge event, kept whole (unknown fields included).
    pub struct EventBridgeEvent {
        /// `0`.
        version: String => "version",
        /// A UUID per event.
        id: String => "id",
        /// `Object Created`, `Object Deleted`, `Object Restore Completed`, ...
        detail_type: String => "detail-type",
        /// `aws.s3` for S3 events.
        source: String => "source",
        /// The bucket owner's account id.
        account: String => "account",
        /// When the event occurred (ISO-8601, as sent).
        time: String => "time",
        /// The bucket's region.
        region: String => "region",
        /// The bucket ARN.
        resources: Vec<String> => "resources",
        /// The S3 details.
        detail: EventBridgeDetail => "detail",
    }
}

wire_struct! {
    /// `detail` of an S3 EventBridge event.
    pub struct EventBridgeDetail {
        /// `0`.
        version: String => "version",
        /// The bucket.
        bucket: EventBridgeBucket => "bucket",
        /// The object.
        object: EventBridgeObject => "object",
        /// The request id.
        request_id: String => "request-id",
        /// Account id or service principal of the requester.
        requester: String => "requester",
        /// Source IP of the request (absent for lifecycle events).
        source_ip_address: String => "source-ip-address",
        /// `Object Created`: `PutObject`, `POST Object`, `CopyObject`,
        /// `CompleteMultipartUpload`. `Object Deleted`: `DeleteObject` or
        /// `Lifecycle Expiration`.
        reason: String => "reason",
        /// `Object Deleted`: `Permanently Deleted` or `Delete Marker Created`.
        deletion_type: String => "deletion-type",
        /// `Object Restore Completed`: when the restored copy expires.
        restore_expiry_time: String => "restore-expiry-time",
        /// `Object Restore Initiated/Completed`: the object's storage class.
        source_storage_class: String => "source-storage-class",
        /// `Object Storage Class Changed`: the new storage class.
        destination_storage_class: String => "destination-storage-class",
        /// `Object Access Tier Changed`: the new access tier.
        destination_access_tier: String => "destination-access-tier",
    }
}

wire_struct! {
    /// `detail.bucket` of an S3 EventBridge event.
    pub struct EventBridgeBucket {
        /// The bucket name.
        name: String => "name",
    }
}

wire_struct! {
    /// `detail.object` of an S3 EventBridge event.
    pub struct EventBridgeObject {
        /// The object key, URL-encoded as in S3 event records.
        key: String => "key",
        /// Size in bytes (absent for deletes).
        size: u64 => "size",
        /// ETag.
        etag: String => "etag",
        /// Version id, when the bucket is versioned.
        version_id: String => "version-id",
        /// Orders events for the same key.
        sequencer: String => "sequencer",
    }
}

impl EventBridgeEvent {
    /// Maps an S3 EventBridge event to the S3 event record that the same
    /// event would have produced as a bucket notification.
    ///
    /// - `eventName` from `detail-type`, `reason` and `deletion-type`:
    ///   `Object Created` + `PutObject`/`POST Object`/`CopyObject`/
    ///   `CompleteMultipartUpload` → `ObjectCreated:Put/Post/Copy/
    ///   CompleteMultipartUpload`; `Object Deleted` + `DeleteObject` →
    ///   `ObjectRemoved:Delete` or `ObjectRemoved:DeleteMarkerCreated` (by
    ///   `deletion-type`), + `Lifecycle Expiration` →
    ///   `LifecycleExpiration:Delete` or `...:DeleteMarkerCreated`;
    ///   `Object Restore Initiated/Completed/Expired` →
    ///   `ObjectRestore:Post/Completed/Delete`; `Object Storage Class
    ///   Changed` → `LifecycleTransition`; `Object Access Tier Changed` →
    ///   `IntelligentTiering`; `Object ACL Updated` → `ObjectAcl:Put`;
    ///   `Object Tags Added/Deleted` → `ObjectTagging:Put/Delete` (AWS's
    ///   own mapping table). Any other detail-type or reason is an error:
    ///   guessing would mislabel the event.
    /// - `eventVersion` is what AWS uses for that event name: `2.3` for
    ///   lifecycle, Intelligent-Tiering, ACL, tagging and restore-expiry
    ///   events, `2.1` otherwise.
    /// - `eventSource` `aws:s3`; `awsRegion` = `region`; `eventTime` = `time`
    ///   verbatim (EventBridge sends whole seconds, `...00Z`).
    /// - `userIdentity.principalId` = `requester`,
    ///   `requestParameters.sourceIPAddress` = `source-ip-address`,
    ///   `responseElements.x-amz-request-id` = `request-id` (EventBridge has
    ///   no `x-amz-id-2`).
    /// - `s3.bucket` = name and the first of `resources` as its ARN;
    ///   `s3.object` = key (copied as is: EventBridge keys are URL-encoded
    ///   like record keys), size, eTag, versionId, sequencer. No
    ///   `configurationId`: EventBridge has no notification configuration.
    /// - `restore-expiry-time`/`source-storage-class` →
    ///   `glacierEventData.restoreEventData` (restore completed);
    ///   `destination-storage-class` →
    ///   `lifecycleEventData.transitionEventData`; `destination-access-tier`
    ///   → `intelligentTieringEventData`.
    pub fn to_record(&self) -> Result<EventRecord> {
        self.record().map_err(|reason| Error::Inbound { reason })
    }

    fn record(&self) -> std::result::Result<EventRecord, String> {
        match self.source.as_deref() {
            Some("aws.s3") => {}
            Some(other) => {
                return Err(format!(
                    "EventBridge event from source `{other}` is not aws.s3"
                ))
            }
            None => return Err("EventBridge event has no `source`".into()),
        }
        let detail_type = self
            .detail_type
            .as_deref()
            .ok_or("EventBridge event has no `detail-type`")?;
        let detail = self
            .detail
            .as_ref()
            .ok_or("EventBridge event has no `detail`")?;
        let (event_name, event_version) = eventbridge_event_name(detail_type, detail)?;
        let s3 = self.s3_entity(detail)?;
        let restore = (detail.restore_expiry_time.is_some()
            || detail.source_storage_class.is_some())
            && event_name == "ObjectRestore:Completed";
        Ok(EventRecord {
            event_version: Some(event_version.into()),
            event_source: Some("aws:s3".into()),
            aws_region: self.region.clone(),
            event_time: self.time.clone(),
            event_name: Some(event_name.into()),
            user_identity: detail.requester.clone().map(|p| UserIdentity {
                principal_id: Some(p),
                ..Default::default()
            }),
            request_parameters: detail
                .source_ip_address
                .clone()
                .map(|ip| RequestParameters {
                    source_ip_address: Some(ip),
                    ..Default::default()
                }),
            response_elements: detail.request_id.clone().map(|id| ResponseElements {
                x_amz_request_id: Some(id),
                ..Default::default()
            }),
            s3: Some(s3),
            glacier_event_data: restore.then(|| {
                Box::new(GlacierEventData {
                    restore_event_data: Some(RestoreEventData {
                        lifecycle_restoration_expiry_time: detail.restore_expiry_time.clone(),
                        lifecycle_restore_storage_class: detail.source_storage_class.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            }),
            lifecycle_event_data: detail.destination_storage_class.clone().map(|c| {
                Box::new(LifecycleEventData {
                    transition_event_data: Some(TransitionEventData {
                        destination_storage_class: Some(c),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            }),
            intelligent_tiering_event_data: detail.destination_access_tier.clone().map(|t| {
                Box::new(IntelligentTieringEventData {
                    destination_access_tier: Some(t),
                    ..Default::default()
                })
            }),
            ..Default::default()
        })
    }

    /// The record's `s3` section: bucket (its ARN from `resources`) and
    /// object, which must have a bucket name and a key.
    fn s3_entity(&self, detail: &EventBridgeDetail) -> std::result::Result<S3Entity, String> {
        let bucket_name = detail
            .bucket
            .as_ref()
            .and_then(|b| b.name.clone())
            .ok_or("EventBridge event has no `detail.bucket.name`")?;
        let object = detail
            .object
            .as_ref()
            .ok_or("EventBridge event has no `detail.object`")?;
        let key = object
            .key
            .clone()
            .ok_or("EventBridge event has no `detail.object.key`")?;
        Ok(S3Entity {
            s3_schema_version: Some("1.0".into()),
            bucket: Some(Bucket {
                name: Some(bucket_name),
                arn: self.resources.as_ref().and_then(|r| r.first().cloned()),
                ..Default::default()
            }),
            object: Some(Object {
                key: Some(key),
                size: object.size,
                e_tag: object.etag.clone(),
                version_id: object.version_id.clone(),
                sequencer: object.sequencer.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }
}

/// The S3 event name and event version for an EventBridge detail-type.
fn eventbridge_event_name(
    detail_type: &str,
    detail: &EventBridgeDetail,
) -> std::result::Result<(&'static str, &'static str), String> {
    let reason = detail.reason.as_deref();
    let no_reason = || format!("EventBridge `{detail_type}` event has no `detail.reason`");
    let bad_reason =
        |r: &str| format!("EventBridge `{detail_type}` event with unknown reason `{r}`");
    Ok(match detail_type {
        "Object Created" => {
            let name = match reason.ok_or_else(no_reason)? {
                "PutObject" => "ObjectCreated:Put",
                "POST Object" | "PostObject" => "ObjectCreated:Post",
                "CopyObject" => "ObjectCreated:Copy",
                "CompleteMultipartUpload" => "ObjectCreated:CompleteMultipartUpload",
                other => return Err(bad_reason(other)),
            };
            (name, "2.1")
        }
        "Object Deleted" => {
            let lifecycle = match reason.ok_or_else(no_reason)? {
                "DeleteObject" => false,
                "Lifecycle Expiration" => true,
                other => return Err(bad_reason(other)),
            };
            let marker = match detail.deletion_type.as_deref() {
                Some("Permanently Deleted") => false,
                Some("Delete Marker Created") => true,
                Some(other) => {
                    return Err(format!(
                        "EventBridge `Object Deleted` event with unknown deletion-type `{other}`"
                    ))
                }
                None => {
                    return Err(
                        "EventBridge `Object Deleted` event has no `detail.deletion-type`".into(),
                    )
                }
            };
            match (lifecycle, marker) {
                (false, false) => ("ObjectRemoved:Delete", "2.1"),
                (false, true) => ("ObjectRemoved:DeleteMarkerCreated", "2.1"),
                (true, false) => ("LifecycleExpiration:Delete", "2.3"),
                (true, true) => ("LifecycleExpiration:DeleteMarkerCreated", "2.3"),
            }
        }
        "Object Restore Initiated" => ("ObjectRestore:Post", "2.1"),
        "Object Restore Completed" => ("ObjectRestore:Completed", "2.1"),
        "Object Restore Expired" => ("ObjectRestore:Delete", "2.3"),
        "Object Storage Class Changed" => ("LifecycleTransition", "2.3"),
        "Object Access Tier Changed" => ("IntelligentTiering", "2.3"),
        "Object ACL Updated" => ("ObjectAcl:Put", "2.3"),
        "Object Tags Added" => ("ObjectTagging:Put", "2.3"),
        "Object Tags Deleted" => ("ObjectTagging:Delete", "2.3"),
        other => {
            return Err(format!(
                "EventBridge detail-type `{other}` is not an S3 object event"
            ))
        }
    })
}

/// Parses any payload a receiver of S3 notifications can get; see the
/// [module documentation](self) for what is recognised.
///
/// Errors: [`Error::Inbound`] when the payload is not JSON or not one of the
/// recognised shapes (the reason says which, and where inside an envelope);
/// [`Error::Json`] when a recognised document has a field of the wrong type.
pub fn parse(bytes: &[u8]) -> Result<Inbound> {
    parse_at(
        bytes,
        &Ctx {
            layer: Layer::Top,
            path: String::new(),
        },
    )
}

/// Where a payload sits, which decides what it may contain.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Layer {
    /// The payload as received.
    Top,
    /// The body of one SQS message.
    SqsBody,
    /// The `Message` of an SNS notification.
    SnsMessage,
}

struct Ctx {
    layer: Layer,
    /// Where we are, for error messages ("" at the top).
    path: String,
}

impl Ctx {
    fn nested(&self, layer: Layer, what: &str) -> Ctx {
        let path = if self.path.is_empty() {
            what.to_owned()
        } else {
            format!("{}: {what}", self.path)
        };
        Ctx { layer, path }
    }

    fn fail(&self, reason: impl fmt::Display) -> Error {
        let reason = if self.path.is_empty() {
            reason.to_string()
        } else {
            format!("{}: {reason}", self.path)
        };
        Error::Inbound { reason }
    }

    fn json(&self, what: &'static str, source: serde_json::Error) -> Error {
        if self.path.is_empty() {
            Error::Json {
                what,
                path: String::new(),
                source,
            }
        } else {
            self.fail(format_args!("invalid JSON in {what}: {source}"))
        }
    }

    fn location(&self) -> &str {
        match self.layer {
            Layer::Top => "at the top level",
            Layer::SqsBody => "inside an SQS message body",
            Layer::SnsMessage => "inside an SNS Message",
        }
    }
}

/// A payload's top level, read in one pass: `Records` typed (the hot path:
/// no intermediate tree), every other field kept as a JSON value for the
/// envelope types to pick from.
struct Top {
    records: Option<Vec<EventRecord>>,
    rest: serde_json::Map<String, serde_json::Value>,
}

/// Reads a [`Top`], noting in `in_records` whether it failed inside
/// `Records` (a record of the wrong shape) rather than elsewhere.
struct TopSeed<'a> {
    in_records: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_> {
    type Value = Top;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Top, D::Error> {
        struct V<'a>(&'a Cell<bool>);
        impl<'de> Visitor<'de> for V<'_> {
            type Value = Top;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Top, A::Error> {
                let mut top = Top {
                    records: None,
                    rest: serde_json::Map::new(),
                };
                while let Some(key) = map.next_key::<crate::wire::Key<'de>>()? {
                    if key.0 == "Records" {
                        self.0.set(true);
                        if top.records.is_some() {
                            return Err(serde::de::Error::duplicate_field("Records"));
                        }
                        top.records = Some(map.next_value()?);
                        self.0.set(false);
                    } else {
                        let v: serde_json::Value = map.next_value()?;
                        top.rest.insert(key.0.into_owned(), v);
                    }
                }
                Ok(top)
            }
        }
        d.deserialize_map(V(self.in_records))
    }
}

fn read_top(bytes: &[u8], ctx: &Ctx) -> Result<Top> {
    use serde_json::error::Category;
    let in_records = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let top = TopSeed {
        in_records: &in_records,
    }
    .deserialize(&mut de)
    .and_then(|top| de.end().map(|()| top));
    top.map_err(|e| match e.classify() {
        Category::Data if in_records.get() => {
            match Error::json::<Notification>("S3 event notification", bytes, e) {
                Error::Json { path, source, .. } if !ctx.path.is_empty() => {
                    let at = if path.is_empty() {
                        String::new()
                    } else {
                        format!(" at `{path}`")
                    };
                    ctx.fail(format_args!(
                        "invalid JSON in S3 event notification{at}: {source}"
                    ))
                }
                err => err,
            }
        }
        Category::Data if ctx.path.is_empty() => Error::Inbound {
            reason: format!("payload is not a JSON object: {e}"),
        },
        Category::Data => Error::Inbound {
            reason: format!("{} is not a JSON object: {e}", ctx.path),
        },
        _ if ctx.path.is_empty() => Error::Inbound {
            reason: format!("not JSON: {e}"),
        },
        _ => Error::Inbound {
            reason: format!("{} is not JSON: {e}", ctx.path),
        },
    })
}

fn parse_at(bytes: &[u8], ctx: &Ctx) -> Result<Inbound> {
    let Top { records, rest } = read_top(bytes, ctx)?;
    if let Some(records) = records {
        return parse_records(records, rest, ctx);
    }
    let has = |key: &str| rest.contains_key(key);
    if has("Type") {
        if ctx.layer == Layer::SnsMessage {
            return Err(ctx.fail("an SNS message inside an SNS Message"));
        }
        let message = SnsMessage::deserialize(serde_json::Value::Object(rest))
            .map_err(|e| ctx.json("SNS message", e))?;
        sns(message, ctx)
    } else if has("detail-type") {
        let event = EventBridgeEvent::deserialize(serde_json::Value::Object(rest))
            .map_err(|e| ctx.json("EventBridge event", e))?;
        let record = event.record().map_err(|r| ctx.fail(r))?;
        Ok(Inbound::Records {
            notification: Notification::new(vec![record]),
            origin: Origin::EventBridge(Box::new(event)),
        })
    } else if has("Messages") {
        if ctx.layer != Layer::Top {
            return Err(ctx.fail(format_args!("an SQS message list {}", ctx.location())));
        }
        sqs_receive_message(rest, ctx)
    } else if has("Event") {
        let event = TestEvent::deserialize(serde_json::Value::Object(rest))
            .map_err(|e| ctx.json("s3:TestEvent", e))?;
        match event.event.as_deref() {
            Some("s3:TestEvent") => Ok(Inbound::TestEvent {
                event,
                origin: Origin::Plain,
            }),
            Some(other) => Err(ctx.fail(format_args!("`Event` is `{other}`, not s3:TestEvent"))),
            None => Err(ctx.fail("`Event` is not a string (expected s3:TestEvent)")),
        }
    } else {
        Err(ctx.fail(
            "JSON object without Records, Type or detail-type (not an S3 notification, \
             SNS message, EventBridge event, SQS message list or s3:TestEvent)",
        ))
    }
}

fn str_field<'a>(
    extra: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'a str> {
    extra.get(name).and_then(|v| v.as_str())
}

fn parse_records(
    records: Vec<EventRecord>,
    mut rest: serde_json::Map<String, serde_json::Value>,
    ctx: &Ctx,
) -> Result<Inbound> {
    // The top-level fields other than `Records` (MinIO's `EventName`, `Key`,
    // ...) go through `Notification`'s own rules; then the records join.
    rest.insert("Records".into(), serde_json::Value::Array(Vec::new()));
    let mut notification = Notification::deserialize(serde_json::Value::Object(rest))
        .map_err(|e| ctx.json("S3 event notification", e))?;
    notification.records = records;
    let Some(first) = notification.records.first() else {
        return Ok(Inbound::Records {
            origin: minio_or_plain(&notification),
            notification,
        });
    };
    if first.event_source.as_deref() == Some("aws:sqs") {
        if ctx.layer != Layer::Top {
            return Err(ctx.fail(format_args!("a Lambda SQS event {}", ctx.location())));
        }
        return lambda_sqs(notification, ctx);
    }
    if str_field(&first.extra, "EventSource") == Some("aws:sns") {
        if ctx.layer != Layer::Top {
            return Err(ctx.fail(format_args!("a Lambda SNS event {}", ctx.location())));
        }
        return lambda_sns(notification, ctx);
    }
    Ok(Inbound::Records {
        origin: minio_or_plain(&notification),
        notification,
    })
}

fn minio_or_plain(n: &Notification) -> Origin {
    if n.event_name.is_some() || n.key.is_some() || n.extra.contains_key("EventType") {
        Origin::MinioEnvelope
    } else {
        Origin::Plain
    }
}

fn sns(message: SnsMessage, ctx: &Ctx) -> Result<Inbound> {
    fn require<'a>(ctx: &Ctx, v: &'a Option<String>, field: &str) -> Result<&'a str> {
        v.as_deref()
            .ok_or_else(|| ctx.fail(format_args!("SNS message has no `{field}` string")))
    }
    let ty = require(ctx, &message.message_type, "Type")?;
    require(ctx, &message.message_id, "MessageId")?;
    require(ctx, &message.topic_arn, "TopicArn")?;
    let body = require(ctx, &message.message, "Message")?;
    match ty {
        "Notification" => {
            let inner = parse_at(
                body.as_bytes(),
                &ctx.nested(Layer::SnsMessage, "SNS Message"),
            )?;
            match inner {
                Inbound::Records {
                    notification,
                    origin,
                } => Ok(Inbound::Records {
                    notification,
                    origin: Origin::Sns {
                        message: Box::new(message),
                        inner: Box::new(origin),
                    },
                }),
                Inbound::TestEvent { event, origin } => Ok(Inbound::TestEvent {
                    event,
                    origin: Origin::Sns {
                        message: Box::new(message),
                        inner: Box::new(origin),
                    },
                }),
                // parse_at refuses SNS messages inside SNS Messages.
                Inbound::SnsSubscriptionConfirmation { .. }
                | Inbound::SnsUnsubscribeConfirmation { .. } => {
                    Err(ctx.fail("an SNS confirmation inside an SNS Message"))
                }
            }
        }
        "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
            require(ctx, &message.token, "Token")?;
            require(ctx, &message.subscribe_url, "SubscribeURL")?;
            Ok(if ty == "SubscriptionConfirmation" {
                Inbound::SnsSubscriptionConfirmation { message }
            } else {
                Inbound::SnsUnsubscribeConfirmation { message }
            })
        }
        other => Err(ctx.fail(format_args!(
            "SNS message Type `{other}` is not Notification, SubscriptionConfirmation or \
             UnsubscribeConfirmation"
        ))),
    }
}

/// `{"Records":[{"EventSource":"aws:sns","Sns":{...}}]}`: Lambda delivers
/// one SNS message per invocation.
fn lambda_sns(notification: Notification, ctx: &Ctx) -> Result<Inbound> {
    let n = notification.records.len();
    let [record] = <[EventRecord; 1]>::try_from(notification.records).map_err(|_| {
        ctx.fail(format_args!(
            "Lambda SNS event with {n} records (expected exactly 1)"
        ))
    })?;
    let sns_value = record
        .extra
        .get("Sns")
        .ok_or_else(|| ctx.fail("Lambda SNS record has no `Sns` object"))?;
    let message = SnsMessage::deserialize(sns_value)
        .map_err(|e| ctx.fail(format_args!("Lambda SNS record `Sns`: {e}")))?;
    sns(message, ctx)
}

/// `{"Records":[{"eventSource":"aws:sqs","body":"...",...}]}`.
fn lambda_sqs(notification: Notification, ctx: &Ctx) -> Result<Inbound> {
    let mut bodies = Vec::with_capacity(notification.records.len());
    for (i, r) in notification.records.iter().enumerate() {
        if r.event_source.as_deref() != Some("aws:sqs") {
            return Err(ctx.fail(format_args!(
                "Lambda SQS event record {i} has eventSource `{}`, not aws:sqs",
                r.event_source.as_deref().unwrap_or("(none)")
            )));
        }
        let body = str_field(&r.extra, "body").ok_or_else(|| {
            ctx.fail(format_args!(
                "Lambda SQS event record {i} has no `body` string"
            ))
        })?;
        bodies.push((
            str_field(&r.extra, "messageId").map(str::to_owned),
            str_field(&r.extra, "receiptHandle").map(str::to_owned),
            body,
        ));
    }
    join_sqs(bodies, ctx, "SQS record")
}

/// `{"Messages":[{"MessageId","ReceiptHandle","Body",...}]}`, as printed by
/// `aws sqs receive-message` and returned by the JSON protocol.
fn sqs_receive_message(
    rest: serde_json::Map<String, serde_json::Value>,
    ctx: &Ctx,
) -> Result<Inbound> {
    #[derive(serde::Deserialize)]
    struct Response {
        #[serde(rename = "Messages")]
        messages: Vec<Received>,
    }
    #[derive(serde::Deserialize)]
    struct Received {
        #[serde(rename = "MessageId", default)]
        message_id: Option<String>,
        #[serde(rename = "ReceiptHandle", default)]
        receipt_handle: Option<String>,
        #[serde(rename = "Body", default)]
        body: Option<String>,
    }
    let response = Response::deserialize(serde_json::Value::Object(rest))
        .map_err(|e| ctx.json("SQS ReceiveMessage output", e))?;
    let mut bodies = Vec::with_capacity(response.messages.len());
    for (i, m) in response.messages.iter().enumerate() {
        let body = m
            .body
            .as_deref()
            .ok_or_else(|| ctx.fail(format_args!("SQS message {i} has no `Body` string")))?;
        bodies.push((m.message_id.clone(), m.receipt_handle.clone(), body));
    }
    join_sqs(bodies, ctx, "SQS message")
}

/// Parses every SQS body and joins their records.
fn join_sqs(
    bodies: Vec<(Option<String>, Option<String>, &str)>,
    ctx: &Ctx,
    label: &str,
) -> Result<Inbound> {
    let mut records = Vec::new();
    let mut messages = Vec::with_capacity(bodies.len());
    let mut first_test = None;
    for (i, (message_id, receipt_handle, body)) in bodies.into_iter().enumerate() {
        let inner = parse_at(
            body.as_bytes(),
            &ctx.nested(Layer::SqsBody, &format!("{label} {i} body")),
        )?;
        let content = match inner {
            Inbound::Records {
                notification,
                origin,
            } => {
                let start = records.len();
                records.extend(notification.records);
                SqsContent::Records {
                    origin,
                    range: start..records.len(),
                }
            }
            Inbound::TestEvent { event, origin } => {
                if first_test.is_none() {
                    first_test = Some(event.clone());
                }
                SqsContent::TestEvent { event, origin }
            }
            Inbound::SnsSubscriptionConfirmation { message }
            | Inbound::SnsUnsubscribeConfirmation { message } => {
                SqsContent::SnsConfirmation(message)
            }
        };
        messages.push(SqsMessage {
            message_id,
            receipt_handle,
            content,
        });
    }
    let has_records = messages
        .iter()
        .any(|m| matches!(m.content, SqsContent::Records { .. }));
    let origin = Origin::Sqs { messages };
    match first_test {
        Some(event) if !has_records => Ok(Inbound::TestEvent { event, origin }),
        _ => Ok(Inbound::Records {
            notification: Notification::new(records),
            origin,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn records_of(v: serde_json::Value) -> (Notification, Origin) {
        match parse(v.to_string().as_bytes()).unwrap() {
            Inbound::Records {
                notification,
                origin,
            } => (notification, origin),
            other => panic!("{other:?}"),
        }
    }

    fn reason(bytes: &[u8]) -> String {
        parse(bytes).unwrap_err().to_string()
    }

    #[test]
    fn plain_and_minio() {
        let (n, o) = records_of(json!({"Records": []}));
        assert!(n.records.is_empty());
        assert_eq!(o, Origin::Plain);
        let (_, o) = records_of(json!({"EventType": "s3:ObjectCreated:Put", "Records": []}));
        assert_eq!(o, Origin::MinioEnvelope);
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(reason(b"").contains("not JSON"));
        assert!(reason(b"{").contains("not JSON"));
        assert!(reason(b"[1]").contains("not a JSON object"));
        assert!(reason(b"{} x").contains("not JSON"));
        assert!(reason(b"{}").contains("without Records, Type or detail-type"));
        let e = reason(br#"{"Records":[],"Records":[]}"#);
        assert!(
            e.contains("S3 event notification") && e.contains("duplicate field"),
            "{e}"
        );
        let e = reason(br#"{"Records":[{"s3":{"object":{"size":"big"}}}]}"#);
        assert!(e.contains("at `Records[0].s3.object.size`"), "{e}");
        let body = br#"{"Records":[{"eventSource":"aws:sqs","body":"{\"Records\":[{\"s3\":{\"bucket\":{\"name\":5}}}]}"}]}"#;
        let e = reason(body);
        assert!(
            e.contains("SQS record 0 body: ") && e.contains("at `Records[0].s3.bucket.name`"),
            "{e}"
        );
        let e = reason(br#"{"Type":"Notification","MessageId":"m","TopicArn":"t","Message":"hi"}"#);
        assert!(e.contains("SNS Message is not JSON"), "{e}");
        let e = reason(br#"{"detail-type":"Object Created","source":"aws.ec2"}"#);
        assert!(
            e.contains("EventBridge event from source `aws.ec2` is not aws.s3"),
            "{e}"
        );
        let e = reason(br#"{"Type":"Notification","MessageId":"m","TopicArn":"t"}"#);
        assert!(e.contains("`Message`"), "{e}");
        let e = reason(br#"{"Type":"Weird","MessageId":"m","TopicArn":"t","Message":"{}"}"#);
        assert!(e.contains("Type `Weird`"), "{e}");
        let e = reason(br#"{"Event":"s3:Other"}"#);
        assert!(e.contains("not s3:TestEvent"), "{e}");
    }

    #[test]
    fn nesting_is_bounded() {
        let inner = json!({"Type":"Notification","MessageId":"m","TopicArn":"t","Message":"{}"});
        let outer = json!({"Type":"Notification","MessageId":"m","TopicArn":"t","Message": inner.to_string()});
        let e = reason(outer.to_string().as_bytes());
        assert!(
            e.contains("SNS Message: an SNS message inside an SNS Message"),
            "{e}"
        );
        let sqs = json!({"Messages": [{"Body": json!({"Messages": []}).to_string()}]});
        let e = reason(sqs.to_string().as_bytes());
        assert!(
            e.contains("SQS message 0 body: an SQS message list inside an SQS message body"),
            "{e}"
        );
    }

    #[test]
    fn sqs_batch_joins_records_and_keeps_ranges() {
        let body = |k: &str| json!({"Records": [{"s3": {"object": {"key": k}}}]}).to_string();
        let test = json!({"Service":"Amazon S3","Event":"s3:TestEvent"}).to_string();
        let v = json!({"Messages": [
            {"MessageId": "1", "ReceiptHandle": "r1", "Body": body("a")},
            {"MessageId": "2", "Body": test},
            {"MessageId": "3", "Body": body("b")},
        ]});
        let (n, o) = records_of(v);
        assert_eq!(n.records.len(), 2);
        let Origin::Sqs { messages } = o else {
            panic!()
        };
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[0].receipt_handle.as_deref(), Some("r1"));
        assert!(
            matches!(&messages[0].content, SqsContent::Records { range, .. } if *range == (0..1))
        );
        assert!(matches!(&messages[1].content, SqsContent::TestEvent { .. }));
        assert!(
            matches!(&messages[2].content, SqsContent::Records { range, .. } if *range == (1..2))
        );
        assert_eq!(n.records[1].key(), Some("b"));
    }

    #[test]
    fn eventbridge_names() {
        let ev = |dt: &str, detail: serde_json::Value| {
            let mut d = json!({"bucket": {"name": "b"}, "object": {"key": "k"}});
            d.as_object_mut()
                .unwrap()
                .extend(detail.as_object().unwrap().clone());
            json!({"detail-type": dt, "source": "aws.s3", "detail": d})
        };
        let name = |v: serde_json::Value| records_of(v).0.records[0].event_name.clone().unwrap();
        assert_eq!(
            name(ev("Object Created", json!({"reason": "CopyObject"}))),
            "ObjectCreated:Copy"
        );
        assert_eq!(
            name(ev(
                "Object Deleted",
                json!({"reason": "Lifecycle Expiration", "deletion-type": "Permanently Deleted"})
            )),
            "LifecycleExpiration:Delete"
        );
        assert_eq!(
            name(ev("Object Access Tier Changed", json!({}))),
            "IntelligentTiering"
        );
        let e = reason(
            ev("Object Created", json!({"reason": "Teleport"}))
                .to_string()
                .as_bytes(),
        );
        assert!(e.contains("unknown reason `Teleport`"), "{e}");
        let e = reason(
            ev("AWS API Call via CloudTrail", json!({}))
                .to_string()
                .as_bytes(),
        );
        assert!(e.contains("is not an S3 object event"), "{e}");
    }
}
