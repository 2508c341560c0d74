//! Turning an HTTP request into CloudEvents (as structured-mode JSON
//! objects), or a rejection naming what is wrong.
//!
//! Accepted, for CloudEvents spec 1.0 and 0.3:
//!
//! - structured mode: `Content-Type: application/cloudevents+json`, one event;
//! - batch mode: `Content-Type: application/cloudevents-batch+json`, an array;
//! - binary mode: `ce-*` headers (`ce-specversion` marks it), the body is
//!   `data` and `Content-Type` its `datacontenttype`;
//! - raw S3 notification JSON (`{"Records": [...]}`, MinIO's webhook
//!   envelope, and what [`s3_event_core::inbound::parse`] recognises) with
//!   `Content-Type: application/json`, converted per record with
//!   [`EventRecord::to_cloudevent`](s3_event_core::EventRecord::to_cloudevent).
//!
//! Every event is checked before any is accepted, so a request is taken
//! whole or not at all.

use ::http::{header, HeaderMap, StatusCode};
use base64::Engine as _;
use serde_json::{Map, Value};

/// What kind of request it is, from the headers alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `application/cloudevents+json`.
    Structured,
    /// `application/cloudevents-batch+json`.
    Batch,
    /// `ce-*` headers.
    Binary,
    /// `application/json` without `ce-*` headers: S3 notification JSON.
    S3,
}

impl Mode {
    /// A label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Structured => "structured",
            Mode::Batch => "batch",
            Mode::Binary => "binary",
            Mode::S3 => "s3",
        }
    }
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The HTTP status.
    pub status: StatusCode,
    /// A short reason for metrics (`invalid`, `unsupported_media_type`, ...).
    pub reason: &'static str,
    /// What is wrong.
    pub message: String,
    /// The attribute that is missing or bad, if one is.
    pub attribute: Option<String>,
    /// The event's (or record's) index in a batch, if the request holds several.
    pub index: Option<usize>,
}

impl Rejection {
    fn invalid(attribute: Option<&str>, message: impl Into<String>) -> Rejection {
        Rejection {
            status: StatusCode::BAD_REQUEST,
            reason: "invalid",
            message: message.into(),
            attribute: attribute.map(str::to_owned),
            index: None,
        }
    }

    fn at(mut self, index: usize) -> Rejection {
        self.index = Some(index);
        self
    }

    fn unsupported(message: impl Into<String>) -> Rejection {
        Rejection {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            reason: "unsupported_media_type",
            message: message.into(),
            attribute: None,
            index: None,
        }
    }

    /// The JSON body of the response.
    pub fn body(&self) -> Value {
        let mut m = Map::new();
        m.insert("error".into(), Value::String(self.message.clone()));
        if let Some(a) = &self.attribute {
            m.insert("attribute".into(), Value::String(a.clone()));
        }
        if let Some(i) = self.index {
            m.insert("index".into(), Value::from(i));
        }
        Value::Object(m)
    }
}

/// The media type of `Content-Type`, lowercased, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = ct.split(';').next().unwrap_or_default().trim();
    Some(essence.to_ascii_lowercase())
}

fn is_json_media(mt: &str) -> bool {
    mt == "application/json" || mt == "text/json" || mt.ends_with("+json")
}

/// Decides the mode from the headers, or refuses the content type (415).
pub fn mode(headers: &HeaderMap) -> Result<Mode, Rejection> {
    let mt = media_type(headers);
    match mt.as_deref() {
        Some("application/cloudevents+json") => return Ok(Mode::Structured),
        Some("application/cloudevents-batch+json") => return Ok(Mode::Batch),
        Some(m) if m.starts_with("application/cloudevents") => {
            return Err(Rejection::unsupported(format!(
                "unsupported CloudEvents format `{m}`: this receiver accepts \
                 application/cloudevents+json and application/cloudevents-batch+json"
            )))
        }
        _ => {}
    }
    if headers.contains_key("ce-specversion") {
        return Ok(Mode::Binary);
    }
    match mt.as_deref() {
        Some(m) if m == "application/json" || m == "text/json" => Ok(Mode::S3),
        Some(m) => Err(Rejection::unsupported(format!(
            "unsupported Content-Type `{m}` without `ce-specversion`: send \
             application/cloudevents+json, application/cloudevents-batch+json, \
             binary mode (ce-* headers) or S3 notification JSON as application/json"
        ))),
        None => Err(Rejection::unsupported(
            "no Content-Type and no `ce-specversion` header",
        )),
    }
}

/// Parses the body of a request of `mode` into structured-mode events.
pub fn parse(mode: Mode, headers: &HeaderMap, body: &[u8]) -> Result<Vec<Value>, Rejection> {
    match mode {
        Mode::Structured => {
            let v = json_body(body)?;
            Ok(vec![validate(v)?])
        }
        Mode::Batch => match json_body(body)? {
            Value::Array(events) => events
                .into_iter()
                .enumerate()
                .map(|(i, e)| validate(e).map_err(|r| r.at(i)))
                .collect(),
            _ => Err(Rejection::invalid(
                None,
                "a batch must be a JSON array of CloudEvents",
            )),
        },
        Mode::Binary => Ok(vec![binary(headers, body)?]),
        Mode::S3 => s3(body),
    }
}

fn json_body(body: &[u8]) -> Result<Value, Rejection> {
    serde_json::from_slice(body)
        .map_err(|e| Rejection::invalid(None, format!("the body is not JSON: {e}")))
}

fn is_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn required_string<'a>(m: &'a Map<String, Value>, name: &str) -> Result<&'a str, Rejection> {
    match m.get(name) {
        None | Some(Value::Null) => Err(Rejection::invalid(
            Some(name),
            format!("required attribute `{name}` is missing"),
        )),
        Some(Value::String(s)) if s.is_empty() => Err(Rejection::invalid(
            Some(name),
            format!("attribute `{name}` must not be empty"),
        )),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Rejection::invalid(
            Some(name),
            format!("attribute `{name}` must be a string"),
        )),
    }
}

fn optional_string<'a>(
    m: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, Rejection> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => required_string(m, name).map(Some),
    }
}

/// Checks one structured-mode event (spec 1.0 or 0.3) and returns it.
pub fn validate(event: Value) -> Result<Value, Rejection> {
    let Value::Object(m) = event else {
        return Err(Rejection::invalid(
            None,
            "a CloudEvent must be a JSON object",
        ));
    };
    let v03 = is_v03(&m)?;
    for name in ["id", "source", "type"] {
        required_string(&m, name)?;
    }
    for name in ["datacontenttype", "subject"] {
        optional_string(&m, name)?;
    }
    optional_string(&m, if v03 { "schemaurl" } else { "dataschema" })?;
    if let Some(t) = optional_string(&m, "time")? {
        if chrono::DateTime::parse_from_rfc3339(t).is_err() {
            return Err(Rejection::invalid(
                Some("time"),
                format!("attribute `time` is not an RFC 3339 timestamp: `{t}`"),
            ));
        }
    }
    if v03 {
        check_v03_encoding(&m)?;
    } else {
        check_data_base64(&m)?;
    }
    check_extensions(&m, v03)?;
    Ok(Value::Object(m))
}

/// `specversion`: `0.3` (true) or `1.0` (false).
fn is_v03(m: &Map<String, Value>) -> Result<bool, Rejection> {
    match required_string(m, "specversion")? {
        "1.0" => Ok(false),
        "0.3" => Ok(true),
        other => Err(Rejection::invalid(
            Some("specversion"),
            format!("unsupported specversion `{other}`: expected `1.0` or `0.3`"),
        )),
    }
}

/// Spec 0.3: a `datacontentencoding` must be `base64`, and `data` then a
/// base64 string.
fn check_v03_encoding(m: &Map<String, Value>) -> Result<(), Rejection> {
    let Some(enc) = optional_string(m, "datacontentencoding")? else {
        return Ok(());
    };
    if !enc.eq_ignore_ascii_case("base64") {
        return Err(Rejection::invalid(
            Some("datacontentencoding"),
            format!("unsupported datacontentencoding `{enc}`: expected `base64`"),
        ));
    }
    match m.get("data") {
        Some(Value::String(s)) if base64_ok(s) => Ok(()),
        _ => Err(Rejection::invalid(
            Some("data"),
            "with datacontentencoding `base64`, `data` must be a base64 string",
        )),
    }
}

/// Spec 1.0: a `data_base64` must be a base64 string, and not beside `data`.
fn check_data_base64(m: &Map<String, Value>) -> Result<(), Rejection> {
    let Some(b64) = m.get("data_base64") else {
        return Ok(());
    };
    match b64 {
        Value::String(s) if base64_ok(s) => {}
        _ => {
            return Err(Rejection::invalid(
                Some("data_base64"),
                "attribute `data_base64` must be a base64 string",
            ))
        }
    }
    if m.contains_key("data") {
        return Err(Rejection::invalid(
            Some("data_base64"),
            "an event must not have both `data` and `data_base64`",
        ));
    }
    Ok(())
}

/// Every attribute the spec does not name is an extension: a valid name
/// and a string, number or boolean.
fn check_extensions(m: &Map<String, Value>, v03: bool) -> Result<(), Rejection> {
    for (name, value) in m {
        let known = matches!(
            name.as_str(),
            "specversion"
                | "id"
                | "source"
                | "type"
                | "datacontenttype"
                | "subject"
                | "time"
                | "data"
        ) || (v03 && matches!(name.as_str(), "schemaurl" | "datacontentencoding"))
            || (!v03 && matches!(name.as_str(), "dataschema" | "data_base64"));
        if known {
            continue;
        }
        if !is_attribute_name(name) {
            return Err(Rejection::invalid(
                Some(name),
                format!(
                    "`{}` is not a valid attribute name: lowercase letters and digits only",
                    name.escape_debug()
                ),
            ));
        }
        if matches!(value, Value::Array(_) | Value::Object(_)) {
            return Err(Rejection::invalid(
                Some(name),
                format!("extension attribute `{name}` must be a string, number or boolean"),
            ));
        }
    }
    Ok(())
}

fn base64_ok(s: &str) -> bool {
    base64::engine::general_purpose::STANDARD.decode(s).is_ok()
}

/// Builds a structured event from a binary-mode request.
fn binary(headers: &HeaderMap, body: &[u8]) -> Result<Value, Rejection> {
    let mut m = Map::new();
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        if !is_attribute_name(attr) {
            return Err(Rejection::invalid(
                Some(attr),
                format!("header `{name}`: `{attr}` is not a valid attribute name"),
            ));
        }
        let decoded = percent_encoding::percent_decode(value.as_bytes())
            .decode_utf8()
            .map_err(|_| {
                Rejection::invalid(
                    Some(attr),
                    format!("header `{name}` is not UTF-8 after percent-decoding"),
                )
            })?;
        if m.insert(attr.to_owned(), Value::String(decoded.into_owned()))
            .is_some()
        {
            return Err(Rejection::invalid(
                Some(attr),
                format!("header `{name}` is repeated"),
            ));
        }
    }
    let v03 = m.get("specversion").and_then(Value::as_str) == Some("0.3");
    let content_type = match headers.get(header::CONTENT_TYPE) {
        Some(ct) => Some(
            ct.to_str()
                .map_err(|_| {
                    Rejection::invalid(Some("datacontenttype"), "Content-Type is not ASCII")
                })?
                .to_owned(),
        ),
        None => None,
    };
    if let Some(ct) = &content_type {
        m.insert("datacontenttype".into(), Value::String(ct.clone()));
    }
    if !body.is_empty() {
        let mt = media_type(headers);
        let json = mt.as_deref().is_none_or(is_json_media);
        if json {
            let data: Value = serde_json::from_slice(body).map_err(|e| {
                Rejection::invalid(Some("data"), format!("the body is not JSON: {e}"))
            })?;
            m.insert("data".into(), data);
        } else if let (Some(true), Ok(text)) = (
            mt.as_deref().map(|m| m.starts_with("text/")),
            std::str::from_utf8(body),
        ) {
            m.insert("data".into(), Value::String(text.to_owned()));
        } else {
            let b64 = base64::engine::general_purpose::STANDARD.encode(body);
            if v03 {
                m.insert("datacontentencoding".into(), Value::String("base64".into()));
                m.insert("data".into(), Value::String(b64));
            } else {
                m.insert("data_base64".into(), Value::String(b64));
            }
        }
    }
    validate(Value::Object(m))
}

/// Converts S3 notification JSON into CloudEvents, one per record.
fn s3(body: &[u8]) -> Result<Vec<Value>, Rejection> {
    use s3_event_core::inbound::{self, Inbound};
    let parsed = inbound::parse(body).map_err(|e| {
        Rejection::invalid(
            None,
            format!("not CloudEvents and not an S3 notification: {e}"),
        )
    })?;
    let records = match parsed {
        Inbound::Records { notification, .. } => notification.records,
        Inbound::TestEvent { .. } => Vec::new(),
        Inbound::SnsSubscriptionConfirmation { .. }
        | Inbound::SnsUnsubscribeConfirmation { .. } => {
            return Err(Rejection::invalid(
                None,
                "SNS subscription messages are not events; confirm the subscription elsewhere",
            ))
        }
    };
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let ev = r.to_cloudevent().map_err(|e| {
                let attr = match &e {
                    s3_event_core::Error::CloudEvent { attribute, .. } => Some(*attribute),
                    _ => None,
                };
                Rejection::invalid(attr, format!("record #{i}: {e}")).at(i)
            })?;
            serde_json::to_value(&ev).map_err(|e| {
                Rejection::invalid(None, format!("record #{i}: cannot serialize: {e}")).at(i)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::http::HeaderValue;
    use serde_json::json;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn modes_come_from_headers() {
        let ct = |v: &str| headers(&[("content-type", v)]);
        assert_eq!(
            mode(&ct("application/cloudevents+json; charset=utf-8")),
            Ok(Mode::Structured)
        );
        assert_eq!(
            mode(&ct("Application/CloudEvents-Batch+JSON")),
            Ok(Mode::Batch)
        );
        assert_eq!(mode(&ct("application/json")), Ok(Mode::S3));
        assert_eq!(
            mode(&headers(&[
                ("content-type", "text/plain"),
                ("ce-specversion", "1.0")
            ])),
            Ok(Mode::Binary)
        );
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/cloudevents+xml",
        ] {
            assert_eq!(
                mode(&ct(bad)).unwrap_err().status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            );
        }
        assert_eq!(
            mode(&HeaderMap::new()).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }

    #[test]
    fn structured_events_name_the_bad_attribute() {
        let ok = json!({"specversion":"1.0","id":"1","source":"s","type":"t"});
        assert!(validate(ok.clone()).is_ok());
        let cases = [
            ("id", json!(null)),
            ("id", json!("")),
            ("source", json!(7)),
            ("type", json!(null)),
            ("specversion", json!("2.0")),
            ("time", json!("yesterday")),
            ("dataschema", json!(5)),
            ("Bad_Name", json!("x")),
            ("nested", json!({"a": 1})),
            ("data_base64", json!("***")),
        ];
        for (attr, value) in cases {
            let mut ev = ok.clone();
            if value.is_null() {
                ev.as_object_mut().unwrap().remove(attr);
            } else {
                ev[attr] = value;
            }
            let r = validate(ev).unwrap_err();
            assert_eq!(r.status, StatusCode::BAD_REQUEST);
            assert_eq!(r.attribute.as_deref(), Some(attr), "{r:?}");
        }
    }

    #[test]
    fn spec_0_3_attributes() {
        let ev = json!({"specversion":"0.3","id":"1","source":"s","type":"t",
            "schemaurl":"http://x","datacontentencoding":"base64","data":"aGk="});
        assert!(validate(ev).is_ok());
        let ev = json!({"specversion":"0.3","id":"1","source":"s","type":"t",
            "datacontentencoding":"gzip","data":"x"});
        assert_eq!(
            validate(ev).unwrap_err().attribute.as_deref(),
            Some("datacontentencoding")
        );
    }

    #[test]
    fn binary_mode_builds_a_structured_event() {
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "42"),
            ("ce-source", "/my%20source"),
            ("ce-type", "com.example"),
            ("ce-time", "2024-01-01T00:00:00Z"),
            ("ce-tenant", "acme"),
            ("content-type", "application/json"),
        ]);
        let ev = &parse(Mode::Binary, &h, br#"{"a":1}"#).unwrap()[0];
        assert_eq!(
            ev,
            &json!({"specversion":"1.0","id":"42","source":"/my source","type":"com.example",
                "time":"2024-01-01T00:00:00Z","tenant":"acme",
                "datacontenttype":"application/json","data":{"a":1}})
        );
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "42"),
            ("ce-source", "s"),
            ("ce-type", "t"),
            ("content-type", "application/octet-stream"),
        ]);
        let ev = &parse(Mode::Binary, &h, &[0, 159, 146, 150]).unwrap()[0];
        assert_eq!(ev["data_base64"], json!("AJ+Slg=="));
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-source", "s"),
            ("ce-type", "t"),
        ]);
        let r = parse(Mode::Binary, &h, b"").unwrap_err();
        assert_eq!(r.attribute.as_deref(), Some("id"));
    }

    #[test]
    fn batch_errors_carry_the_index() {
        let body = json!([
            {"specversion":"1.0","id":"1","source":"s","type":"t"},
            {"specversion":"1.0","id":"2","source":"s"}
        ]);
        let r = parse(Mode::Batch, &HeaderMap::new(), body.to_string().as_bytes()).unwrap_err();
        assert_eq!((r.attribute.as_deref(), r.index), (Some("type"), Some(1)));
        assert_eq!(r.body()["index"], json!(1));
        let r = parse(Mode::Batch, &HeaderMap::new(), b"{}").unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn s3_records_become_cloudevents() {
        let body = json!({"EventName":"s3:ObjectCreated:Put","Key":"b/k","Records":[{
            "eventVersion":"2.0","eventSource":"minio:s3","awsRegion":"",
            "eventTime":"2025-02-06T01:04:31.998Z","eventName":"s3:ObjectCreated:Put",
            "responseElements":{"x-amz-request-id":"REQ","x-amz-id-2":"ID2"},
            "s3":{"bucket":{"name":"b"},"object":{"key":"k","size":3}}}]});
        let evs = parse(Mode::S3, &HeaderMap::new(), body.to_string().as_bytes()).unwrap();
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0]["id"], json!("REQ.ID2"));
        assert_eq!(evs[0]["type"], json!("com.amazonaws.s3.ObjectCreated:Put"));
        assert_eq!(evs[0]["specversion"], json!("1.0"));
        assert!(validate(evs[0].clone()).is_ok());
        let body = json!({"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put",
            "s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]});
        let r = parse(Mode::S3, &HeaderMap::new(), body.to_string().as_bytes()).unwrap_err();
        assert_eq!((r.attribute.as_deref(), r.index), (Some("id"), Some(0)));
        let r = parse(Mode::S3, &HeaderMap::new(), b"{\"hello\":1}").unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
    }
}
