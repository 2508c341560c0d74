//! From a Kafka message to what the source stores: the record (the value,
//! or the value wrapped with the message's coordinates), or, for a message
//! that is not JSON, its failure report.
//!
//! Everything here is a function of the message alone (never of the clock
//! or of the batch), so a redo classifies and renders every message as the
//! first attempt did.

use std::borrow::Cow;

use base64::Engine as _;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::Encoding;

/// The parts of a Kafka message the source uses, borrowed from the client's
/// message (or built by tests).
#[derive(Clone, Debug)]
pub(crate) struct MessageRef<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch (create or log-append time), if any.
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

/// What one message becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body<'a> {
    /// One record of a data object: compact JSON, no raw newline; borrowed
    /// from the message when it is its value as it came.
    Record(Cow<'a, [u8]>),
    /// A message that cannot be stored as JSON: its failure report (one
    /// NDJSON line) and the reason.
    Poison { report: Vec<u8>, reason: String },
}

/// Bytes as JSON: a string when they are UTF-8, else `{"base64": …}`.
#[derive(Serialize)]
#[serde(untagged)]
enum Bin<'a> {
    Text(&'a str),
    Base64 { base64: String },
}

impl<'a> Bin<'a> {
    fn of(b: &'a [u8]) -> Bin<'a> {
        match std::str::from_utf8(b) {
            Ok(s) => Bin::Text(s),
            Err(_) => Bin::Base64 {
                base64: base64::engine::general_purpose::STANDARD.encode(b),
            },
        }
    }
}

#[derive(Serialize)]
struct Header<'a> {
    key: &'a str,
    value: Option<Bin<'a>>,
}

/// The wrapped record: the message's coordinates and its value.
#[derive(Serialize)]
struct Wrapped<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<Bin<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<Header<'a>>,
    value: &'a RawValue,
}

/// The failure report of a message that is not stored.
#[derive(Serialize)]
struct Report<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    reason: &'a str,
    key: Option<Bin<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<Header<'a>>,
    /// The value as text when it is UTF-8.
    value: Option<&'a str>,
    /// The value's bytes, always.
    #[serde(rename = "valueBase64")]
    value_base64: Option<String>,
}

fn headers<'a>(m: &MessageRef<'a>) -> Vec<Header<'a>> {
    m.headers
        .iter()
        .map(|(k, v)| Header {
            key: k,
            value: v.map(Bin::of),
        })
        .collect()
}

/// Why `payload` cannot be a record, or the record when it can: the bytes
/// as they are (trimmed) when they are one JSON value in UTF-8, with raw
/// line breaks as spaces (a pretty-printed value: outside strings they can
/// only be whitespace, inside one they are not JSON), so that nothing else
/// of the value changes (key order, duplicate keys, number spelling).
fn json_value(payload: Option<&[u8]>) -> Result<Cow<'_, [u8]>, String> {
    let Some(p) = payload else {
        return Err("the message has no value (a tombstone)".into());
    };
    if p.iter().all(u8::is_ascii_whitespace) {
        return Err("the message's value is empty".into());
    }
    // serde_json's slice reader skips strings without checking their
    // UTF-8; the str reader's input is checked here first.
    let text = std::str::from_utf8(p).map_err(|e| format!("the value is not UTF-8: {e}"))?;
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        return Err(format!("the value is not JSON: {e}"));
    }
    let p = trim(p);
    if memchr::memchr2(b'\n', b'\r', p).is_none() {
        return Ok(Cow::Borrowed(p));
    }
    Ok(Cow::Owned(
        p.iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
            .collect(),
    ))
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(0);
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// What `m` becomes: its value (or the wrapped value) as one record, or its
/// failure report.
pub(crate) fn body<'a>(m: &MessageRef<'a>, wrap: bool, encoding: Encoding) -> Body<'a> {
    let value = match json_value(m.payload) {
        Ok(v) => v,
        Err(reason) => return poison(m, reason),
    };
    let record = if wrap {
        // The value was checked above; as a RawValue it is copied as is.
        let raw: &RawValue = match serde_json::from_slice(&value) {
            Ok(r) => r,
            Err(e) => return poison(m, format!("the value: {e}")),
        };
        let w = Wrapped {
            topic: m.topic,
            partition: m.partition,
            offset: m.offset,
            timestamp: m.timestamp,
            key: m.key.map(Bin::of),
            headers: headers(m),
            value: raw,
        };
        match serde_json::to_vec(&w) {
            Ok(v) => Cow::Owned(v),
            Err(e) => return poison(m, format!("wrapping the value: {e}")),
        }
    } else {
        value
    };
    if let Some(reason) = crate::encode::invalid_record(encoding, &record) {
        return poison(m, reason.to_owned());
    }
    Body::Record(record)
}

/// The failure report of `m`, for `reason`.
pub(crate) fn poison<'a>(m: &MessageRef<'_>, reason: String) -> Body<'a> {
    let r = Report {
        topic: m.topic,
        partition: m.partition,
        offset: m.offset,
        timestamp: m.timestamp,
        reason: &reason,
        key: m.key.map(Bin::of),
        headers: headers(m),
        value: m.payload.and_then(|p| std::str::from_utf8(p).ok()),
        value_base64: m
            .payload
            .map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
    };
    // Serializing strings and numbers into memory cannot fail.
    let mut report = serde_json::to_vec(&r).unwrap_or_default();
    report.push(b'\n');
    Body::Poison { report, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(payload: Option<&[u8]>) -> MessageRef<'_> {
        MessageRef {
            topic: "t",
            partition: 2,
            offset: 7,
            timestamp: Some(1_700_000_000_000),
            key: Some(b"k1"),
            payload,
            headers: vec![("h", Some(&b"v"[..])), ("bin", Some(&[0xff, 0x00][..]))],
        }
    }

    #[test]
    fn json_values_are_kept_and_pretty_ones_put_on_one_line() {
        let m = msg(Some(br#" {"a": 1} "#));
        assert_eq!(
            body(&m, false, Encoding::Ndjson),
            Body::Record(br#"{"a": 1}"#.into())
        );
        let m = msg(Some(b"{\n  \"a\": [1,\r\n 2]\n}\n"));
        assert_eq!(
            body(&m, false, Encoding::Ndjson),
            Body::Record(br#"{   "a": [1,   2] }"#.to_vec().into())
        );
        // Nothing else of the value changes: key order, duplicate keys,
        // numbers beyond 64 bits.
        let m = msg(Some(
            b"{\"b\":1,\n\"a\":2,\"a\":3,\"n\":123456789012345678901234567890}",
        ));
        assert_eq!(
            body(&m, false, Encoding::Ndjson),
            Body::Record(
                br#"{"b":1, "a":2,"a":3,"n":123456789012345678901234567890}"#
                    .to_vec()
                    .into()
            )
        );
        let m = msg(Some(b"42"));
        assert_eq!(
            body(&m, false, Encoding::Ndjson),
            Body::Record(b"42".into())
        );
    }

    #[test]
    fn wrapped_records_carry_the_coordinates() {
        let m = msg(Some(br#"{"a":1}"#));
        let Body::Record(r) = body(&m, true, Encoding::Ndjson) else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_slice(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"topic": "t", "partition": 2, "offset": 7,
                "timestamp": 1_700_000_000_000i64, "key": "k1",
                "headers": [{"key": "h", "value": "v"}, {"key": "bin", "value": {"base64": "/wA="}}],
                "value": {"a": 1}})
        );
    }

    #[test]
    fn non_json_messages_become_reports() {
        for (payload, why) in [
            (Some(&b"not json"[..]), "not JSON"),
            (Some(&b"{\"a\":"[..]), "not JSON"),
            (Some(&b"{} {}"[..]), "not JSON"),
            (Some(&b"  "[..]), "empty"),
            (None, "tombstone"),
            (Some(&[0xff, 0xfe][..]), "not UTF-8"),
            // Bad UTF-8 inside a JSON string (serde_json's slice reader
            // would skip it unchecked).
            (Some(&b"{\"a\":\"\xff\"}"[..]), "not UTF-8"),
        ] {
            let m = msg(payload);
            let Body::Poison { report, reason } = body(&m, false, Encoding::Ndjson) else {
                panic!("{payload:?} was accepted")
            };
            assert!(reason.contains(why), "{reason}");
            assert_eq!(report.last(), Some(&b'\n'));
            let v: serde_json::Value = serde_json::from_slice(&report).unwrap();
            assert_eq!(v["offset"], 7);
            assert_eq!(v["reason"], reason.as_str());
            if let Some(p) = payload {
                assert_eq!(
                    v["valueBase64"],
                    base64::engine::general_purpose::STANDARD.encode(p)
                );
            }
        }
    }
}
