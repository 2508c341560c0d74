//! Meter files dropped into a bucket (seed 004, Amberflo's format): decode an
//! object (a JSON array or NDJSON, gzip by magic bytes or `.gz`), validate
//! every meter record, keep the valid ones and write a failure report
//! `failed-requests/<date>/<original key>.reason.txt` beside bad input naming
//! the line and reason of each bad record.
//!
//! ```
//! use s3_event_sink::ingest::MeterRecord;
//!
//! let ok = serde_json::json!({"customerId": "c-1", "meterApiName": "ComputeHours",
//!                             "meterValue": 5, "meterTimeInMillis": 1619445706909u64});
//! assert_eq!(MeterRecord::from_value(&ok).unwrap().meter_value, 5.0);
//! let bad = serde_json::json!({"customerId": "c-1", "meterApiName": "ComputeHours",
//!                              "meterValue": "five", "meterTimeInMillis": 1619445706909u64});
//! assert_eq!(MeterRecord::from_value(&bad).unwrap_err(), "`meterValue` must be a number");
//! ```

use std::collections::BTreeMap;

use chrono::NaiveDate;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::Serialize;
use serde_json::Value;

use crate::{decode, failure_report_key, failure_report_text, BadRecord, Error, Result};

/// One valid meter record.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeterRecord {
    /// `customerId`: a non-empty string.
    pub customer_id: String,
    /// `meterApiName`: a non-empty string.
    pub meter_api_name: String,
    /// `meterValue`: a finite number. Written back as an integer when it is
    /// one (`5`, not `5.0`), as meter files send counts.
    #[serde(serialize_with = "integral_as_integer")]
    pub meter_value: f64,
    /// `meterTimeInMillis`: milliseconds since the Unix epoch, a
    /// non-negative integer.
    pub meter_time_in_millis: u64,
    /// `dimensions`: optional, an object of string values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub dimensions: BTreeMap<String, String>,
}

/// Writes `v` as an integer when it is a whole number an `i64` holds
/// exactly (below 2^53), else as a float.
fn integral_as_integer<S: serde::Serializer>(
    v: &f64,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if v.fract() == 0.0 && v.abs() < EXACT {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

impl MeterRecord {
    /// Validates one record; the error names the field and what is wrong.
    pub fn from_value(v: &Value) -> std::result::Result<MeterRecord, String> {
        let obj = v
            .as_object()
            .ok_or("a meter record must be a JSON object")?;
        let text = |k: &str| -> std::result::Result<String, String> {
            match obj.get(k) {
                None | Some(Value::Null) => Err(format!("`{k}` is missing")),
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
                Some(Value::String(_)) => Err(format!("`{k}` is empty")),
                Some(_) => Err(format!("`{k}` must be a string")),
            }
        };
        let customer_id = text("customerId")?;
        let meter_api_name = text("meterApiName")?;
        let meter_value = match obj.get("meterValue") {
            None | Some(Value::Null) => return Err("`meterValue` is missing".into()),
            Some(Value::Number(n)) => n
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or("`meterValue` must be a finite number")?,
            Some(_) => return Err("`meterValue` must be a number".into()),
        };
        let meter_time_in_millis = match obj.get("meterTimeInMillis") {
            None | Some(Value::Null) => return Err("`meterTimeInMillis` is missing".into()),
            Some(Value::Number(n)) => n
                .as_u64()
                .ok_or("`meterTimeInMillis` must be a non-negative integer")?,
            Some(_) => return Err("`meterTimeInMillis` must be a number".into()),
        };
        let mut dimensions = BTreeMap::new();
        match obj.get("dimensions") {
            None | Some(Value::Null) => {}
            Some(Value::Object(d)) => {
                for (k, v) in d {
                    match v {
                        Value::String(s) => {
                            dimensions.insert(k.clone(), s.clone());
                        }
                        _ => return Err(format!("dimension `{k}` must be a string")),
                    }
                }
            }
            Some(_) => return Err("`dimensions` must be an object".into()),
        }
        Ok(MeterRecord {
            customer_id,
            meter_api_name,
            meter_value,
            meter_time_in_millis,
            dimensions,
        })
    }
}

/// What [`ingest_object`] found in one object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IngestOutcome {
    /// The valid records, in order.
    pub valid: Vec<MeterRecord>,
    /// Records (or the whole file) that were not valid, with line and reason.
    pub bad: Vec<BadRecord>,
    /// The failure report written, when anything was bad.
    pub report_key: Option<String>,
}

/// Reads `key` from `store`, validates its meter records and, when any is
/// bad (or the whole file cannot be read as JSON), writes the failure report
/// for `today` beside it. A file that cannot be decoded at all (not gzip
/// despite `.gz`, corrupt gzip, too large) is reported as one bad entry at
/// byte 0.
pub async fn ingest_object(
    store: &dyn ObjectStore,
    key: &str,
    today: NaiveDate,
) -> Result<IngestOutcome> {
    let path = Path::parse(key).map_err(|source| Error::InvalidKey {
        key: key.to_owned(),
        source,
    })?;
    let bytes = store
        .get(&path)
        .await
        .map_err(|source| Error::Store { source })?
        .bytes()
        .await
        .map_err(|source| Error::Store { source })?;
    let mut out = IngestOutcome::default();
    match decode(key, &bytes) {
        Ok(d) => {
            out.bad = d.bad;
            for (v, (line, offset)) in d.records.iter().zip(d.positions) {
                match MeterRecord::from_value(v) {
                    Ok(r) => out.valid.push(r),
                    Err(reason) => out.bad.push(BadRecord {
                        line: Some(line),
                        offset,
                        reason,
                    }),
                }
            }
            out.bad.sort_by_key(|b| b.offset);
            if out.valid.is_empty() && out.bad.is_empty() {
                out.bad.push(BadRecord {
                    line: None,
                    offset: 0,
                    reason: "the file holds no meter record".into(),
                });
            }
        }
        Err(e) => out.bad.push(BadRecord {
            line: None,
            offset: 0,
            reason: e.to_string(),
        }),
    }
    if !out.bad.is_empty() {
        let report = failure_report_key(key, today);
        let rpath = Path::parse(&report).map_err(|source| Error::InvalidKey {
            key: report.clone(),
            source,
        })?;
        store
            .put(&rpath, PutPayload::from(failure_report_text(&out.bad)))
            .await
            .map_err(|source| Error::Store { source })?;
        out.report_key = Some(report);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchEncoder, Compression, Encoding, StoreConfig};
    use object_store::ObjectStoreExt;
    use serde_json::json;

    fn meter(c: &str, v: f64) -> Value {
        json!({"customerId": c, "meterApiName": "ComputeHours", "meterValue": v,
               "meterTimeInMillis": 1619445706909u64, "dimensions": {"region": "us-west-2"}})
    }

    async fn put(store: &dyn ObjectStore, key: &str, bytes: Vec<u8>) {
        store
            .put(&Path::from(key), PutPayload::from(bytes))
            .await
            .unwrap();
    }

    async fn text(store: &dyn ObjectStore, key: &str) -> Option<String> {
        let got = store.get(&Path::from(key)).await.ok()?;
        Some(String::from_utf8(got.bytes().await.unwrap().to_vec()).unwrap())
    }

    #[test]
    fn meter_values_keep_their_integer_form() {
        for (input, output) in [
            (json!(5), "5"),
            (json!(5.0), "5"),
            (json!(-3), "-3"),
            (json!(1.5), "1.5"),
            (json!(1e300), "1e+300"),
        ] {
            let mut m = meter("a", 0.0);
            m["meterValue"] = input.clone();
            let r = MeterRecord::from_value(&m).unwrap();
            let text = serde_json::to_string(&r).unwrap();
            assert!(
                text.contains(&format!(r#""meterValue":{output},"#)),
                "{input} → {text}"
            );
            let back: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back["meterValue"].as_f64(), input.as_f64());
        }
    }

    #[tokio::test]
    async fn mixed_batch_yields_valid_records_and_reason_files() {
        let store = StoreConfig::Memory.build().unwrap();
        let store = &*store;
        let day = NaiveDate::from_ymd_opt(2022, 6, 7).unwrap();
        // A valid JSON array, as the seed's boto3 example writes it.
        let arr = serde_json::to_vec(&vec![meter("a", 5.0), meter("b", 1.5)]).unwrap();
        put(store, "ingest/acme/06-07-2022/0001", arr).await;
        // Valid NDJSON.
        let nd = format!("{}\n{}\n", meter("c", 1.0), meter("d", 2.0));
        put(store, "ingest/acme/06-07-2022/0002", nd.into_bytes()).await;
        // gzip NDJSON with a .gz key.
        let mut enc = BatchEncoder::new(Encoding::Ndjson, Compression::gzip());
        enc.push(&meter("e", 3.0)).unwrap();
        put(
            store,
            "ingest/acme/06-07-2022/0003.gz",
            enc.finish().unwrap(),
        )
        .await;
        // NDJSON with two bad records: a string value and a broken line.
        let two_bad = format!(
            "{}\n{}\n{{oops\n{}\n",
            meter("f", 1.0),
            json!({"customerId": "g", "meterApiName": "X", "meterValue": "5", "meterTimeInMillis": 1}),
            meter("h", 1.0)
        );
        put(store, "ingest/acme/06-07-2022/0004", two_bad.into_bytes()).await;
        // Not JSON at all.
        put(
            store,
            "ingest/acme/06-07-2022/0005",
            b"hello, meters".to_vec(),
        )
        .await;

        let mut valid = Vec::new();
        let mut reports = Vec::new();
        for k in ["0001", "0002", "0003.gz", "0004", "0005"] {
            let key = format!("ingest/acme/06-07-2022/{k}");
            let o = ingest_object(store, &key, day).await.unwrap();
            valid.extend(o.valid.iter().map(|r| r.customer_id.clone()));
            if let Some(r) = o.report_key {
                reports.push(r);
            }
        }
        assert_eq!(valid, ["a", "b", "c", "d", "e", "f", "h"]);
        assert_eq!(
            reports,
            [
                "failed-requests/2022-06-07/ingest/acme/06-07-2022/0004.reason.txt",
                "failed-requests/2022-06-07/ingest/acme/06-07-2022/0005.reason.txt"
            ]
        );
        let r4 = text(store, &reports[0]).await.unwrap();
        let lines: Vec<&str> = r4.lines().collect();
        assert_eq!(lines.len(), 2, "{r4}");
        assert!(
            lines[0].starts_with("line 2 ") && lines[0].contains("`meterValue` must be a number"),
            "{r4}"
        );
        assert!(lines[1].starts_with("line 3 "), "{r4}");
        let r5 = text(store, &reports[1]).await.unwrap();
        assert!(r5.starts_with("line 1 "), "{r5}");
        // No report for the good files.
        assert!(text(
            store,
            "failed-requests/2022-06-07/ingest/acme/06-07-2022/0001.reason.txt"
        )
        .await
        .is_none());
    }

    #[tokio::test]
    async fn bad_array_element_is_reported_with_its_line() {
        let store = StoreConfig::Memory.build().unwrap();
        let day = NaiveDate::from_ymd_opt(2022, 6, 7).unwrap();
        let body = format!("[\n{},\n{{\"customerId\": \"x\"}}\n]", meter("a", 1.0));
        put(&*store, "ingest/x/1", body.into_bytes()).await;
        let o = ingest_object(&*store, "ingest/x/1", day).await.unwrap();
        assert_eq!(o.valid.len(), 1);
        assert_eq!(o.bad.len(), 1);
        assert_eq!(o.bad[0].line, Some(3));
        assert_eq!(o.bad[0].reason, "`meterApiName` is missing");
    }

    #[test]
    fn field_errors_name_the_field() {
        for (v, want) in [
            (json!([]), "a meter record must be a JSON object"),
            (
                json!({"meterApiName": "m", "meterValue": 1, "meterTimeInMillis": 1}),
                "`customerId` is missing",
            ),
            (
                json!({"customerId": "", "meterApiName": "m", "meterValue": 1, "meterTimeInMillis": 1}),
                "`customerId` is empty",
            ),
            (
                json!({"customerId": "c", "meterApiName": "m", "meterValue": 1, "meterTimeInMillis": -1}),
                "`meterTimeInMillis` must be a non-negative integer",
            ),
            (
                json!({"customerId": "c", "meterApiName": "m", "meterValue": 1, "meterTimeInMillis": 1, "dimensions": {"a": 1}}),
                "dimension `a` must be a string",
            ),
        ] {
            assert_eq!(MeterRecord::from_value(&v).unwrap_err(), want);
        }
    }
}
