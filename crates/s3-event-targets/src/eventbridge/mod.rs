//! The Amazon EventBridge target (feature `eventbridge`): puts each event
//! on a bus in the shape S3 itself sends to EventBridge, so that rules
//! written for S3's own events match, up to 10 per `PutEvents`.
//!
//! Each record becomes one event ([`event_for`]): `source` `aws.s3` (the
//! `source` key), `detail-type` and `detail.reason` from the event name
//! (`ObjectCreated:Put` → `Object Created` / `PutObject`,
//! `ObjectRemoved:Delete` → `Object Deleted` / `DeleteObject` with
//! `deletion-type` `Permanently Deleted`, ... the inverse of
//! [`EventBridgeEvent::to_record`](s3_event_core::inbound::EventBridgeEvent::to_record)),
//! `resources` the bucket ARN, `time` the event time, and `detail` =
//! `{version, bucket{name}, object{key, size, etag, version-id,
//! sequencer}, request-id, requester, source-ip-address, reason}` from the
//! record. An event name S3 does not send to EventBridge (MinIO's
//! `s3:ObjectAccessed:Get`, replication events, ...) keeps its name as
//! `detail-type` (`ObjectAccessed:Get`), without `reason`, rather than
//! being dropped. EventBridge sets `id`, `account` and `region` itself.
//!
//! - Entries EventBridge refuses inside a batch are put again on their
//!   own (`ThrottlingException` and `InternalFailure` are transient, every
//!   other code permanent); the accepted ones are not put again.
//! - Connection settings and credentials: the keys, else the standard AWS
//!   environment ([`s3_event_core::aws`]); the SDK's default HTTPS client
//!   (rustls), 3 s to connect and 10 s a request unless `connect_timeout`
//!   and `request_timeout` say otherwise. The SDK does not retry by
//!   itself: the notifier does.
//! - `is_active`: `DescribeEventBus`.
//!
//! ```no_run
//! use s3_event_targets::eventbridge::{EventBridgeConfig, EventBridgeTarget};
//!
//! let config = EventBridgeConfig::new("s3-events");
//! let target =
//!     EventBridgeTarget::new("arn:minio:sqs::1:eventbridge".parse().unwrap(), config).unwrap();
//! ```

mod config;

use async_trait::async_trait;
use aws_sdk_eventbridge::primitives::{DateTime, DateTimeFormat};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;
use s3_event_core::{EventRecord, TargetError, TargetId};
use serde_json::{json, Map, Value};

pub use crate::aws_common::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};
pub use config::EventBridgeConfig;

use crate::aws_common::{self, aws_target, Failed, Service};

/// One record as an EventBridge event: what `PutEvents` takes.
#[derive(Clone, Debug, PartialEq)]
pub struct S3Event {
    /// `detail-type`: `Object Created`, `Object Deleted`, ...
    pub detail_type: String,
    /// `detail`, S3's shape.
    pub detail: Value,
    /// `resources`: the bucket ARN.
    pub resources: Vec<String>,
    /// `time`: the record's `eventTime`, as written.
    pub time: Option<String>,
}

/// `detail-type`, `reason` and `deletion-type` for an event name (with or
/// without the `s3:` prefix); `None` for names S3 does not send to
/// EventBridge.
fn kind_of(name: &str) -> Option<(&'static str, Option<&'static str>, Option<&'static str>)> {
    const PERMANENT: Option<&str> = Some("Permanently Deleted");
    const MARKER: Option<&str> = Some("Delete Marker Created");
    Some(match name.strip_prefix("s3:").unwrap_or(name) {
        "ObjectCreated:Put" => ("Object Created", Some("PutObject"), None),
        "ObjectCreated:Post" => ("Object Created", Some("POST Object"), None),
        "ObjectCreated:Copy" => ("Object Created", Some("CopyObject"), None),
        "ObjectCreated:CompleteMultipartUpload" => {
            ("Object Created", Some("CompleteMultipartUpload"), None)
        }
        "ObjectRemoved:Delete" => ("Object Deleted", Some("DeleteObject"), PERMANENT),
        "ObjectRemoved:DeleteMarkerCreated" => ("Object Deleted", Some("DeleteObject"), MARKER),
        "LifecycleExpiration:Delete" => ("Object Deleted", Some("Lifecycle Expiration"), PERMANENT),
        "LifecycleExpiration:DeleteMarkerCreated" => {
            ("Object Deleted", Some("Lifecycle Expiration"), MARKER)
        }
        "ObjectRestore:Post" => ("Object Restore Initiated", None, None),
        "ObjectRestore:Completed" => ("Object Restore Completed", None, None),
        "ObjectRestore:Delete" => ("Object Restore Expired", None, None),
        "LifecycleTransition" => ("Object Storage Class Changed", None, None),
        "IntelligentTiering" => ("Object Access Tier Changed", None, None),
        "ObjectAcl:Put" => ("Object ACL Updated", None, None),
        "ObjectTagging:Put" => ("Object Tags Added", None, None),
        "ObjectTagging:Delete" => ("Object Tags Deleted", None, None),
        _ => return None,
    })
}

/// Inserts `value` under `key` when it is present.
fn put(m: &mut Map<String, Value>, key: &str, value: Option<impl Into<Value>>) {
    if let Some(v) = value {
        m.insert(key.to_owned(), v.into());
    }
}

/// The event S3 would have sent to EventBridge for `r`. See the [module
/// docs](self).
pub fn event_for(r: &EventRecord) -> S3Event {
    let name = r.event_name_str().unwrap_or_default();
    let (detail_type, reason, deletion) = match kind_of(name) {
        Some((t, reason, deletion)) => (t.to_owned(), reason, deletion),
        None => (name.strip_prefix("s3:").unwrap_or(name).to_owned(), None, None),
    };
    let s3 = r.s3.as_ref();
    let bucket = s3.and_then(|s| s.bucket.as_ref());
    let bucket_name = r.bucket_name().unwrap_or_default();
    let mut object = Map::new();
    if let Some(o) = s3.and_then(|s| s.object.as_ref()) {
        put(&mut object, "key", o.key.clone());
        put(&mut object, "size", o.size);
        put(&mut object, "etag", o.e_tag.clone());
        put(&mut object, "version-id", o.version_id.clone());
        put(&mut object, "sequencer", o.sequencer.clone());
    }
    let mut detail = Map::new();
    detail.insert("version".into(), json!("0"));
    detail.insert("bucket".into(), json!({ "name": bucket_name }));
    detail.insert("object".into(), Value::Object(object));
    put(&mut detail, "request-id", r.request_id().map(str::to_owned));
    let requester = r.user_identity.as_ref().and_then(|u| u.principal_id.clone());
    put(&mut detail, "requester", requester);
    let ip = r
        .request_parameters
        .as_ref()
        .and_then(|p| p.source_ip_address.clone());
    put(&mut detail, "source-ip-address", ip);
    put(&mut detail, "reason", reason);
    put(&mut detail, "deletion-type", deletion);
    extra_detail(r, &mut detail);
    let arn = bucket
        .and_then(|b| b.arn.clone())
        .unwrap_or_else(|| format!("arn:aws:s3:::{bucket_name}"));
    S3Event {
        detail_type,
        detail: Value::Object(detail),
        resources: vec![arn],
        time: r.event_time.clone(),
    }
}

/// The restore, transition and tiering fields of `detail`.
fn extra_detail(r: &EventRecord, detail: &mut Map<String, Value>) {
    let restore = r
        .glacier_event_data
        .as_ref()
        .and_then(|g| g.restore_event_data.as_ref());
    if let Some(d) = restore {
        put(detail, "restore-expiry-time", d.lifecycle_restoration_expiry_time.clone());
        put(detail, "source-storage-class", d.lifecycle_restore_storage_class.clone());
    }
    let transition = r
        .lifecycle_event_data
        .as_ref()
        .and_then(|l| l.transition_event_data.as_ref())
        .and_then(|t| t.destination_storage_class.clone());
    put(detail, "destination-storage-class", transition);
    let tier = r
        .intelligent_tiering_event_data
        .as_ref()
        .and_then(|t| t.destination_access_tier.clone());
    put(detail, "destination-access-tier", tier);
}

aws_target! {
    /// An EventBridge [`Target`](s3_event_core::Target). See the [module
    /// docs](self).
    EventBridgeTarget(EventBridgeConfig, Client)
}

impl EventBridgeConfig {
    /// The `PutEvents` entry of an event: on the bus, from the source.
    fn put_entry(&self, e: S3Event) -> PutEventsRequestEntry {
        let time = e
            .time
            .as_deref()
            .and_then(|t| DateTime::from_str(t, DateTimeFormat::DateTime).ok());
        PutEventsRequestEntry::builder()
            .event_bus_name(self.bus())
            .source(self.source())
            .detail_type(e.detail_type)
            .detail(e.detail.to_string())
            .set_resources(Some(e.resources))
            .set_time(time)
            .build()
    }
}

#[async_trait]
impl Service for EventBridgeConfig {
    const KIND: &'static str = "eventbridge";
    const SERVICE: &'static str = "EventBridge";
    type Client = Client;
    type Entry = S3Event;

    fn entry(&self, _id: &TargetId, r: &EventRecord) -> Result<S3Event, TargetError> {
        Ok(event_for(r))
    }

    /// One `PutEvents`: a refused entry is transient when its code says
    /// "throttled" or "try again", permanent otherwise.
    async fn send(
        &self,
        id: &TargetId,
        client: &Client,
        events: Vec<S3Event>,
    ) -> Result<Vec<Failed>, TargetError> {
        let entries = events.into_iter().map(|e| self.put_entry(e)).collect();
        let out = client
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| aws_common::classify(id, "PutEvents", &e))?;
        Ok(out
            .entries()
            .iter()
            .enumerate()
            .filter_map(|(index, e)| {
                let code = e.error_code()?;
                Some(Failed {
                    index,
                    code: code.to_owned(),
                    message: e.error_message().unwrap_or_default().to_owned(),
                    transient: aws_common::transient_code(code),
                })
            })
            .collect())
    }

    /// `DescribeEventBus`.
    async fn probe(&self, id: &TargetId, client: &Client) -> Result<(), TargetError> {
        client
            .describe_event_bus()
            .name(self.bus())
            .send()
            .await
            .map(drop)
            .map_err(|e| aws_common::classify(id, "DescribeEventBus", &e))
    }
}

#[cfg(all(test, feature = "integration", feature = "sqs"))]
mod conformance_tests;

#[cfg(test)]
mod tests;
