//! S3 event records: the `{"Records": [...]}` document sent by AWS S3, MinIO,
//! AIStor and other S3-compatible stores.
//!
//! Every type is lossless: fields it does not know are kept in `extra`, text
//! stays text (`eventTime` keeps its precision, keys stay URL-encoded), so
//! parsing then serializing a payload gives back the same JSON value.
//!
//! ```
//! use s3_event_core::Notification;
//!
//! let body = br#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3",
//!   "eventTime":"1970-01-01T00:00:00.000Z","eventName":"ObjectCreated:Put",
//!   "s3":{"bucket":{"name":"photos"},"object":{"key":"red+flower%C3%A9.jpg","size":1024}}}]}"#;
//! let n: Notification = serde_json::from_slice(body).unwrap();
//! let r = &n.records[0];
//! assert_eq!(r.bucket_name(), Some("photos"));
//! assert_eq!(r.key(), Some("red+flower%C3%A9.jpg"));
//! assert_eq!(r.decoded_key().unwrap(), "red flowerÉ.jpg".replace('É', "é"));
//! assert_eq!(r.event_time.as_deref(), Some("1970-01-01T00:00:00.000Z"));
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::wire::wire_struct;
use crate::{Error, Result};

/// A notification document: `{"Records": [...]}`, or MinIO's webhook/Kafka
/// envelope `{"EventName": ..., "Key": "bucket/key", "Records": [...]}`.
///
/// Unknown top-level fields (MinIO's older `EventType`, `level`, `msg`,
/// `time`) are kept in `extra`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Notification {
    /// MinIO envelope: the event name of the (first) record.
    pub event_name: Option<String>,
    /// MinIO envelope: `bucket/key` of the (first) record, with the key
    /// URL-decoded as MinIO writes it.
    pub key: Option<String>,
    /// The records.
    pub records: Vec<EventRecord>,
    /// Top-level fields this type does not know, kept as received.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

// `Notification` keeps `Records` required; its other fields follow the
// wire_struct pattern by hand.
impl Serialize for Notification {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        if let Some(v) = &self.event_name {
            m.serialize_entry("EventName", v)?;
        }
        if let Some(v) = &self.key {
            m.serialize_entry("Key", v)?;
        }
        m.serialize_entry("Records", &self.records)?;
        for (k, v) in &self.extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Notification {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Notification;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an S3 event notification object with `Records`")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Notification, A::Error> {
                let mut out = Notification::default();
                let mut records = None;
                while let Some(key) = map.next_key::<crate::wire::Key<'de>>()? {
                    match key.0.as_ref() {
                        "Records" => {
                            if records.is_some() {
                                return Err(serde::de::Error::duplicate_field("Records"));
                            }
                            records = Some(map.next_value::<Vec<EventRecord>>()?);
                        }
                        "EventName" => {
                            if out.event_name.is_some() || out.extra.contains_key("EventName") {
                                return Err(serde::de::Error::duplicate_field("EventName"));
                            }
                            match map.next_value::<crate::wire::Nullable<String>>()?.0 {
                                Some(v) => out.event_name = Some(v),
                                None => {
                                    out.extra
                                        .insert("EventName".into(), serde_json::Value::Null);
                                }
                            }
                        }
                        "Key" => {
                            if out.key.is_some() || out.extra.contains_key("Key") {
                                return Err(serde::de::Error::duplicate_field("Key"));
                            }
                            match map.next_value::<crate::wire::Nullable<String>>()?.0 {
                                Some(v) => out.key = Some(v),
                                None => {
                                    out.extra.insert("Key".into(), serde_json::Value::Null);
                                }
                            }
                        }
                        _ => {
                            let v: serde_json::Value = map.next_value()?;
                            out.extra.insert(key.0.into_owned(), v);
                        }
                    }
                }
                out.records = records.ok_or_else(|| serde::de::Error::missing_field("Records"))?;
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

impl Notification {
    /// A plain `{"Records": [...]}` document.
    pub fn new(records: Vec<EventRecord>) -> Self {
        Notification {
            records,
            ..Default::default()
        }
    }

    /// MinIO's webhook/Kafka envelope around `records`: `EventName` is the
    /// first record's event name and `Key` is `bucket/key` with the key
    /// URL-decoded, as MinIO computes them.
    pub fn minio_envelope(records: Vec<EventRecord>) -> Result<Self> {
        let (event_name, key) = match records.first() {
            Some(r) => {
                let bucket = r.bucket_name().unwrap_or_default();
                let key = r.decoded_key()?;
                (r.event_name.clone(), Some(format!("{bucket}/{key}")))
            }
            None => (None, None),
        };
        Ok(Notification {
            event_name,
            key,
            records,
            extra: Default::default(),
        })
    }

    /// Parses a notification from JSON bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes)
            .map_err(|source| Error::json::<Self>("S3 event notification", bytes, source))
    }

    /// Serializes the notification to JSON bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        // Serializing these types cannot fail: every map key is a string.
        serde_json::to_vec(self).expect("notification serializes")
    }
}

wire_struct! {
    /// One S3 event record (AWS event message structure 2.x, plus the fields
    /// MinIO and AIStor add).
    pub struct EventRecord {
        /// `2.0` (MinIO), `2.1`, `2.2` (replication), `2.3` (lifecycle,
        /// tiering, ...). Compare the major version for equality and the
        /// minor version with `>=`.
        event_version: String => "eventVersion",
        /// `aws:s3`, `minio:s3`, ...
        event_source: String => "eventSource",
        /// The bucket's region (empty on MinIO without a region).
        aws_region: String => "awsRegion",
        /// ISO-8601 time as sent, text kept verbatim.
        event_time: String => "eventTime",
        /// The event name as sent: `ObjectCreated:Put` (AWS) or
        /// `s3:ObjectCreated:Put` (MinIO). See [`EventRecord::parsed_event_name`].
        event_name: String => "eventName",
        /// Who caused the event.
        user_identity: UserIdentity => "userIdentity",
        /// Request details.
        request_parameters: RequestParameters => "requestParameters",
        /// Response details (request ids).
        response_elements: ResponseElements => "responseElements",
        /// The bucket and object.
        s3: S3Entity => "s3",
        /// Restore details (`ObjectRestore:Completed`).
        ///
        /// This and the next three are boxed: rare, and inline they made
        /// every record 30 % larger (1 296 bytes), which is copied on
        /// every move and is past the system allocator's per-thread cache.
        glacier_event_data: Box<GlacierEventData> => "glacierEventData",
        /// Replication details (version 2.2).
        replication_event_data: Box<ReplicationEventData> => "replicationEventData",
        /// Lifecycle transition details (version 2.3).
        lifecycle_event_data: Box<LifecycleEventData> => "lifecycleEventData",
        /// Intelligent-Tiering details (version 2.3).
        intelligent_tiering_event_data: Box<IntelligentTieringEventData> => "intelligentTieringEventData",
        /// MinIO/AIStor: the client that made the request.
        source: Source => "source",
    }
}

wire_struct! {
    /// `userIdentity`.
    pub struct UserIdentity {
        /// Amazon customer id or MinIO access key of the requester.
        principal_id: String => "principalId",
    }
}

wire_struct! {
    /// `requestParameters`.
    pub struct RequestParameters {
        /// The requester's IP address (MinIO may add a port).
        source_ip_address: String => "sourceIPAddress",
        /// MinIO: the requester's access key.
        principal_id: String => "principalId",
        /// MinIO: the region.
        region: String => "region",
    }
}

wire_struct! {
    /// `responseElements`.
    pub struct ResponseElements {
        /// The request id.
        x_amz_request_id: String => "x-amz-request-id",
        /// The host that processed the request.
        x_amz_id_2: String => "x-amz-id-2",
        /// MinIO: deployment id.
        x_minio_deployment_id: String => "x-minio-deployment-id",
        /// MinIO: origin endpoint.
        x_minio_origin_endpoint: String => "x-minio-origin-endpoint",
    }
}

wire_struct! {
    /// `s3`: the bucket and object.
    pub struct S3Entity {
        /// `1.0`.
        s3_schema_version: String => "s3SchemaVersion",
        /// The notification configuration id that matched (`Config` on MinIO).
        configuration_id: String => "configurationId",
        /// The bucket.
        bucket: Bucket => "bucket",
        /// The object.
        object: Object => "object",
    }
}

wire_struct! {
    /// `s3.bucket`.
    pub struct Bucket {
        /// The bucket name.
        name: String => "name",
        /// The bucket owner.
        owner_identity: UserIdentity => "ownerIdentity",
        /// `arn:aws:s3:::<bucket>`.
        arn: String => "arn",
    }
}

wire_struct! {
    /// `s3.object`.
    pub struct Object {
        /// The object key, URL-encoded as on the wire (`+` for space). See
        /// [`EventRecord::decoded_key`].
        key: String => "key",
        /// Size in bytes (absent for deletes).
        size: u64 => "size",
        /// ETag (absent for deletes).
        e_tag: String => "eTag",
        /// Version id, when the bucket is versioned.
        version_id: String => "versionId",
        /// Orders events for the same key: compare as hex strings of equal
        /// length (left-pad the shorter).
        sequencer: String => "sequencer",
        /// MinIO/AIStor: the object's content type.
        content_type: String => "contentType",
        /// MinIO/AIStor: user metadata.
        user_metadata: BTreeMap<String, String> => "userMetadata",
    }
}

wire_struct! {
    /// `glacierEventData`.
    pub struct GlacierEventData {
        /// Restore details.
        restore_event_data: RestoreEventData => "restoreEventData",
    }
}

wire_struct! {
    /// `glacierEventData.restoreEventData`.
    pub struct RestoreEventData {
        /// When the restored copy expires.
        lifecycle_restoration_expiry_time: String => "lifecycleRestorationExpiryTime",
        /// The source storage class.
        lifecycle_restore_storage_class: String => "lifecycleRestoreStorageClass",
    }
}

wire_struct! {
    /// `replicationEventData` (event version 2.2).
    pub struct ReplicationEventData {
        /// The replication rule id.
        replication_rule_id: String => "replicationRuleId",
        /// The destination bucket ARN.
        destination_bucket: String => "destinationBucket",
        /// The operation replicated.
        s3_operation: String => "s3Operation",
        /// When the request was made.
        request_time: String => "requestTime",
        /// Why replication failed.
        failure_reason: String => "failureReason",
        /// The replication time threshold.
        threshold: String => "threshold",
        /// The replication time.
        replication_time: String => "replicationTime",
    }
}

wire_struct! {
    /// `lifecycleEventData` (event version 2.3).
    pub struct LifecycleEventData {
        /// Transition details.
        transition_event_data: TransitionEventData => "transitionEventData",
    }
}

wire_struct! {
    /// `lifecycleEventData.transitionEventData`.
    pub struct TransitionEventData {
        /// The storage class the object moved to.
        destination_storage_class: String => "destinationStorageClass",
    }
}

wire_struct! {
    /// `intelligentTieringEventData` (event version 2.3).
    pub struct IntelligentTieringEventData {
        /// The access tier the object moved to.
        destination_access_tier: String => "destinationAccessTier",
    }
}

wire_struct! {
    /// MinIO/AIStor `source`: the client that made the request.
    pub struct Source {
        /// Client host.
        host: String => "host",
        /// Client port (a string on the wire, often empty).
        port: String => "port",
        /// Client user agent.
        user_agent: String => "userAgent",
    }
}

impl EventRecord {
    /// Parses one record from JSON bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes)
            .map_err(|source| Error::json::<Self>("S3 event record", bytes, source))
    }

    /// The bucket name, if present.
    pub fn bucket_name(&self) -> Option<&str> {
        self.s3.as_ref()?.bucket.as_ref()?.name.as_deref()
    }

    /// The object key as on the wire (URL-encoded, `+` for space).
    pub fn key(&self) -> Option<&str> {
        self.s3.as_ref()?.object.as_ref()?.key.as_deref()
    }

    /// The object key URL-decoded (`+` → space, `%XX` → byte), or an error
    /// naming the key when it does not decode to UTF-8. A record without a
    /// key decodes to the empty string.
    pub fn decoded_key(&self) -> Result<String> {
        let raw = self.key().unwrap_or_default();
        decode_key(raw)
    }

    /// The object size, if present.
    pub fn size(&self) -> Option<u64> {
        self.s3.as_ref()?.object.as_ref()?.size
    }

    /// The event name as sent (`ObjectCreated:Put` or `s3:ObjectCreated:Put`).
    pub fn event_name_str(&self) -> Option<&str> {
        self.event_name.as_deref()
    }

    /// `responseElements.x-amz-request-id`.
    pub fn request_id(&self) -> Option<&str> {
        self.response_elements.as_ref()?.x_amz_request_id.as_deref()
    }

    /// `responseElements.x-amz-id-2`.
    pub fn id_2(&self) -> Option<&str> {
        self.response_elements.as_ref()?.x_amz_id_2.as_deref()
    }

    /// The major and minor of `eventVersion` (`"2.1"` → `(2, 1)`).
    pub fn event_version(&self) -> Option<(u32, u32)> {
        let v = self.event_version.as_deref()?;
        let (major, minor) = v.split_once('.').unwrap_or((v, "0"));
        Some((major.parse().ok()?, minor.parse().ok()?))
    }
}

/// URL-decodes an object key as S3 event records encode it: `+` is a space,
/// `%XX` a byte; the bytes must form UTF-8.
pub fn decode_key(raw: &str) -> Result<String> {
    let plus_decoded;
    let s = if raw.contains('+') {
        plus_decoded = raw.replace('+', " ");
        plus_decoded.as_str()
    } else {
        raw
    };
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|e| Error::Inbound {
            reason: format!("object key `{raw}` is not URL-encoded UTF-8: {e}"),
        })
}

/// URL-encodes an object key the way S3 event records carry it: unreserved
/// characters and `/` kept, space as `+`, everything else `%XX`.
pub fn encode_key(key: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/')
        .remove(b' ');
    utf8_percent_encode(key, KEEP).to_string().replace(' ', "+")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn roundtrip(v: Value) {
        let n: Notification = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&n).unwrap(), v);
    }

    /// Records are moved by value through every queue and boxed by the
    /// notifier: past 1 KiB, glibc's per-thread cache no longer serves the
    /// box (the bench `notifier` uses the system allocator). The four rare
    /// sections are boxed to stay under it.
    #[test]
    fn a_record_stays_under_a_kibibyte() {
        let size = std::mem::size_of::<EventRecord>();
        assert!(size <= 1024, "EventRecord is {size} bytes");
    }

    #[test]
    fn keeps_unknown_fields_and_nulls_at_every_level() {
        roundtrip(json!({
            "Records": [{
                "eventVersion": "2.1",
                "eventTime": "1970-01-01T00:00:00.000Z",
                "future": {"a": [1, 2]},
                "s3": {"object": {"key": "a", "versionId": null, "new": 1},
                       "bucket": {"name": "b", "x": true}},
                "userIdentity": {"principalId": "p", "type": "IAMUser"}
            }],
            "level": "info",
            "EventType": "s3:ObjectCreated:Put"
        }));
    }

    #[test]
    fn event_time_precision_kept() {
        let n =
            Notification::from_slice(br#"{"Records":[{"eventTime":"1970-01-01T00:00:00.000Z"}]}"#)
                .unwrap();
        assert!(String::from_utf8(n.to_vec())
            .unwrap()
            .contains("1970-01-01T00:00:00.000Z"));
    }

    #[test]
    fn missing_records_is_an_error_naming_it() {
        let e = Notification::from_slice(br#"{"EventName":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("Records"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = Notification::from_slice(br#"{"Records":[{"s3":{"object":{"size":"big"}}}]}"#)
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("invalid type"), "{msg}");
        assert!(msg.contains("at `Records[0].s3.object.size`"), "{msg}");
        let e = Notification::from_slice(b"{\"Records\": [").unwrap_err();
        assert!(!e.to_string().contains(" at `"), "{e}");
    }

    #[test]
    fn decodes_and_encodes_keys() {
        assert_eq!(decode_key("red+flower.jpg").unwrap(), "red flower.jpg");
        assert_eq!(decode_key("a%2Bb%20c").unwrap(), "a+b c");
        assert_eq!(decode_key("%E6%97%A5%E6%9C%AC.txt").unwrap(), "日本.txt");
        assert!(decode_key("%FF").is_err());
        assert_eq!(
            encode_key("red flower+日.jpg"),
            "red+flower%2B%E6%97%A5.jpg"
        );
        assert_eq!(decode_key(&encode_key("a b/c+d%e")).unwrap(), "a b/c+d%e");
    }

    #[test]
    fn minio_envelope_key_is_bucket_slash_decoded_key() {
        let r: EventRecord = serde_json::from_value(json!({
            "eventName": "s3:ObjectCreated:Put",
            "s3": {"bucket": {"name": "photos"}, "object": {"key": "summer/red+flower%21.jpg"}}
        }))
        .unwrap();
        let n = Notification::minio_envelope(vec![r]).unwrap();
        assert_eq!(n.key.as_deref(), Some("photos/summer/red flower!.jpg"));
        assert_eq!(n.event_name.as_deref(), Some("s3:ObjectCreated:Put"));
        let v = serde_json::to_value(&n).unwrap();
        assert_eq!(v["Key"], "photos/summer/red flower!.jpg");
    }

    #[test]
    fn event_version_parts() {
        let r: EventRecord = serde_json::from_value(json!({"eventVersion": "2.3"})).unwrap();
        assert_eq!(r.event_version(), Some((2, 3)));
    }

    #[test]
    fn duplicate_field_rejected() {
        for body in [
            &br#"{"eventName":"a","eventName":"b"}"#[..],
            br#"{"eventName":null,"eventName":"a"}"#,
            br#"{"eventName":"a","eventName":null}"#,
        ] {
            let e = EventRecord::from_slice(body).unwrap_err();
            assert!(e.to_string().contains("duplicate field"), "{e}");
        }
        for body in [
            &br#"{"Records":[],"EventName":null,"EventName":"a"}"#[..],
            br#"{"Records":[],"Key":"a","Key":"b"}"#,
        ] {
            let e = Notification::from_slice(body).unwrap_err();
            assert!(e.to_string().contains("duplicate field"), "{e}");
        }
    }
}
