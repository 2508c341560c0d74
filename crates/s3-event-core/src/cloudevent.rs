//! The CloudEvents AWS S3 adapter (`cloudevents/spec`,
//! `adapters/aws-s3.md`), both directions, one CloudEvent per record, with
//! the `cloudevents-sdk` crate's [`cloudevents::Event`].
//!
//! See [`EventRecord::to_cloudevent`] for the mapping.

use chrono::{DateTime, Utc};
use cloudevents::event::EventBuilderError;
use cloudevents::{AttributesReader, Data, Event, EventBuilder, EventBuilderV10};

use crate::{Error, EventRecord, Notification, Result};

/// The prefix of every S3 CloudEvent `type`: `com.amazonaws.s3.`.
pub const CLOUDEVENT_TYPE_PREFIX: &str = "com.amazonaws.s3.";

fn attr_error(attribute: &'static str, message: impl Into<String>) -> Error {
    Error::CloudEvent {
        attribute,
        message: message.into(),
    }
}

fn non_empty(s: &&str) -> bool {
    !s.is_empty()
}

impl EventRecord {
    /// Maps the record to a CloudEvent as the CloudEvents AWS S3 adapter
    /// specifies:
    ///
    /// | CloudEvent attribute | From the S3 record |
    /// |---|---|
    /// | `id` | `responseElements.x-amz-request-id` + `.` + `responseElements.x-amz-id-2` |
    /// | `source` | `eventSource` + `.` + `awsRegion` + `.` + `s3.bucket.name` |
    /// | `specversion` | `1.0` |
    /// | `type` | `com.amazonaws.s3.` + `eventName` without MinIO's `s3:` prefix |
    /// | `datacontenttype` | `application/json` |
    /// | `dataschema` | omitted |
    /// | `subject` | `s3.object.key` (URL-encoded, as in the record) |
    /// | `time` | `eventTime` |
    /// | `data` | the record as JSON |
    ///
    /// ```
    /// use cloudevents::AttributesReader;
    /// use s3_event_core::EventRecord;
    ///
    /// let r = EventRecord::from_slice(br#"{"eventSource":"minio:s3","awsRegion":"",
    ///   "eventTime":"2025-02-06T01:04:31.998Z","eventName":"s3:ObjectCreated:Put",
    ///   "responseElements":{"x-amz-request-id":"182178E8B36AC9DF","x-amz-id-2":"dd90"},
    ///   "s3":{"bucket":{"name":"test-bucket"},"object":{"key":"image.jpg"}}}"#).unwrap();
    /// let ev = r.to_cloudevent().unwrap();
    /// assert_eq!(ev.id(), "182178E8B36AC9DF.dd90");
    /// assert_eq!(ev.source(), "minio:s3..test-bucket");
    /// assert_eq!(ev.ty(), "com.amazonaws.s3.ObjectCreated:Put");
    /// assert_eq!(EventRecord::from_cloudevent(&ev).unwrap(), r);
    /// ```
    ///
    /// A record without `x-amz-id-2` (MinIO sends none over Kafka and AMQP)
    /// gets the request id alone as `id`; a record without `awsRegion` an
    /// empty region in `source`; a record without a key no `subject`; a
    /// record without `eventTime` no `time`.
    ///
    /// Errors ([`Error::CloudEvent`], naming the attribute): no (or an empty)
    /// `x-amz-request-id` (`id`), `eventSource` or bucket name (`source`),
    /// `eventName` (`type`); an `eventTime` that is not RFC 3339 (`time`).
    pub fn to_cloudevent(&self) -> Result<Event> {
        let request_id = self.request_id().filter(non_empty).ok_or_else(|| {
            attr_error(
                "id",
                "the record has no `responseElements.x-amz-request-id`",
            )
        })?;
        let id = match self.id_2().filter(non_empty) {
            Some(id_2) => format!("{request_id}.{id_2}"),
            None => request_id.to_owned(),
        };
        let event_source = self
            .event_source
            .as_deref()
            .filter(non_empty)
            .ok_or_else(|| attr_error("source", "the record has no `eventSource`"))?;
        let bucket = self
            .bucket_name()
            .filter(non_empty)
            .ok_or_else(|| attr_error("source", "the record has no `s3.bucket.name`"))?;
        let region = self.aws_region.as_deref().unwrap_or_default();
        let name = self
            .event_name
            .as_deref()
            .filter(non_empty)
            .ok_or_else(|| attr_error("type", "the record has no `eventName`"))?;
        let name = name.strip_prefix("s3:").unwrap_or(name);

        let data = serde_json::to_value(self)
            .map_err(|e| attr_error("data", format!("the record does not serialize: {e}")))?;
        let mut builder = EventBuilderV10::new()
            .id(id)
            .source(format!("{event_source}.{region}.{bucket}"))
            .ty(format!("{CLOUDEVENT_TYPE_PREFIX}{name}"))
            .data("application/json", data);
        if let Some(key) = self.key() {
            builder = builder.subject(key);
        }
        if let Some(time) = self.event_time.as_deref() {
            let parsed = DateTime::parse_from_rfc3339(time).map_err(|e| {
                attr_error(
                    "time",
                    format!("eventTime `{time}` is not an RFC 3339 time: {e}"),
                )
            })?;
            builder = builder.time(parsed.with_timezone(&Utc));
        }
        builder.build().map_err(builder_error)
    }

    /// Takes the record back out of a CloudEvent made by
    /// [`EventRecord::to_cloudevent`] (or by any producer following the
    /// adapter): the record is `data`, as JSON, or as a string or bytes
    /// holding JSON. A `data` of `{"Records": [one record]}` is accepted too.
    ///
    /// Errors ([`Error::CloudEvent`], naming the attribute): a `type` that
    /// does not start with `com.amazonaws.s3.`; a `datacontenttype` that is
    /// not JSON; no `data`, or `data` that is not a JSON object holding one
    /// record.
    pub fn from_cloudevent(ev: &Event) -> Result<EventRecord> {
        let ty = ev.ty();
        if !ty.starts_with(CLOUDEVENT_TYPE_PREFIX) {
            return Err(attr_error(
                "type",
                format!("`{ty}` does not start with `{CLOUDEVENT_TYPE_PREFIX}`"),
            ));
        }
        if let Some(ct) = ev.datacontenttype() {
            if !is_json_content_type(ct) {
                return Err(attr_error(
                    "datacontenttype",
                    format!("`{ct}` is not JSON; the S3 adapter sends application/json"),
                ));
            }
        }
        let not_json = |e: serde_json::Error| attr_error("data", format!("not JSON: {e}"));
        let parsed;
        let value = match ev.data() {
            None => return Err(attr_error("data", "the event has no data")),
            Some(Data::Json(v)) => v,
            Some(Data::String(s)) => {
                parsed = serde_json::from_str::<serde_json::Value>(s).map_err(not_json)?;
                &parsed
            }
            Some(Data::Binary(b)) => {
                parsed = serde_json::from_slice::<serde_json::Value>(b).map_err(not_json)?;
                &parsed
            }
        };
        record_from_value(value)
    }
}

fn record_from_value(value: &serde_json::Value) -> Result<EventRecord> {
    let bad = |e: serde_json::Error| attr_error("data", format!("not an S3 event record: {e}"));
    let Some(object) = value.as_object() else {
        return Err(attr_error(
            "data",
            format!(
                "expected a JSON object (an S3 event record), got {}",
                kind(value)
            ),
        ));
    };
    if object.contains_key("Records") {
        let n: Notification = serde::Deserialize::deserialize(value).map_err(bad)?;
        let count = n.records.len();
        return match <[EventRecord; 1]>::try_from(n.records) {
            Ok([record]) => Ok(record),
            Err(_) => Err(attr_error(
                "data",
                format!("a notification with {count} records; one CloudEvent carries one record"),
            )),
        };
    }
    serde::Deserialize::deserialize(value).map_err(bad)
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// `application/json`, `text/json` or `*+json`, parameters ignored.
fn is_json_content_type(ct: &str) -> bool {
    let media = ct.split(';').next().unwrap_or_default().trim();
    media.eq_ignore_ascii_case("application/json")
        || media.eq_ignore_ascii_case("text/json")
        || media.to_ascii_lowercase().ends_with("+json")
}

fn builder_error(e: EventBuilderError) -> Error {
    let attribute = match &e {
        EventBuilderError::MissingRequiredAttribute { attribute_name }
        | EventBuilderError::ParseTimeError { attribute_name, .. }
        | EventBuilderError::ParseUrlError { attribute_name, .. }
        | EventBuilderError::InvalidUriRefError { attribute_name } => *attribute_name,
    };
    attr_error(attribute, e.to_string())
}

impl Notification {
    /// One CloudEvent per record ([`EventRecord::to_cloudevent`]), in order;
    /// the first record that cannot be mapped fails the whole batch.
    pub fn to_cloudevents(&self) -> Result<Vec<Event>> {
        self.records
            .iter()
            .map(EventRecord::to_cloudevent)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(v: serde_json::Value) -> EventRecord {
        serde_json::from_value(v).unwrap()
    }

    fn full() -> serde_json::Value {
        json!({
            "eventSource": "aws:s3", "awsRegion": "us-west-2",
            "eventTime": "1970-01-01T00:00:00.000Z", "eventName": "ObjectCreated:Put",
            "responseElements": {"x-amz-request-id": "R", "x-amz-id-2": "H"},
            "s3": {"bucket": {"name": "b"}, "object": {"key": "a+b"}}
        })
    }

    #[test]
    fn missing_attributes_are_named() {
        let mut v = full();
        v["responseElements"] = json!({});
        let e = record(v).to_cloudevent().unwrap_err();
        assert!(
            matches!(
                e,
                Error::CloudEvent {
                    attribute: "id",
                    ..
                }
            ),
            "{e}"
        );

        let mut v = full();
        v["s3"]["bucket"] = json!({});
        let e = record(v).to_cloudevent().unwrap_err();
        assert!(
            matches!(
                e,
                Error::CloudEvent {
                    attribute: "source",
                    ..
                }
            ),
            "{e}"
        );

        let mut v = full();
        v["eventTime"] = json!("yesterday");
        let e = record(v).to_cloudevent().unwrap_err();
        assert!(
            matches!(
                e,
                Error::CloudEvent {
                    attribute: "time",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("yesterday"), "{e}");
    }

    #[test]
    fn id_without_id_2_is_the_request_id() {
        let mut v = full();
        v["responseElements"] = json!({"x-amz-request-id": "R"});
        assert_eq!(record(v).to_cloudevent().unwrap().id(), "R");
    }

    #[test]
    fn from_cloudevent_checks_type_and_data() {
        let ev = record(full()).to_cloudevent().unwrap();
        let mut other = ev.clone();
        cloudevents::AttributesWriter::set_type(&mut other, "com.example.thing");
        let e = EventRecord::from_cloudevent(&other).unwrap_err();
        assert!(
            matches!(
                e,
                Error::CloudEvent {
                    attribute: "type",
                    ..
                }
            ),
            "{e}"
        );

        for data in [Data::String("nope".into()), Data::Json(json!([1]))] {
            let mut bad = ev.clone();
            bad.set_data("application/json", data);
            let e = EventRecord::from_cloudevent(&bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::CloudEvent {
                        attribute: "data",
                        ..
                    }
                ),
                "{e}"
            );
        }

        let mut as_bytes = ev.clone();
        as_bytes.set_data("application/json", serde_json::to_vec(&full()).unwrap());
        assert_eq!(
            EventRecord::from_cloudevent(&as_bytes).unwrap(),
            record(full())
        );

        let mut wrapped = ev.clone();
        wrapped.set_data("application/json", json!({"Records": [full()]}));
        assert_eq!(
            EventRecord::from_cloudevent(&wrapped).unwrap(),
            record(full())
        );

        let mut xml = ev;
        xml.set_data("application/xml", json!({}));
        let e = EventRecord::from_cloudevent(&xml).unwrap_err();
        assert!(
            matches!(
                e,
                Error::CloudEvent {
                    attribute: "datacontenttype",
                    ..
                }
            ),
            "{e}"
        );
    }
}
