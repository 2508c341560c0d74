//! Failure reports for ingest pipelines: `failed-requests/<date>/<original key>.reason.txt`.
//!
//! ```
//! use chrono::NaiveDate;
//! use s3_event_sink::{decode, failure_report_key, failure_report_text};
//!
//! let key = "ingest/acme/06-07-2022/0000a2e4";
//! let decoded = decode(key, b"{\"a\":1}\n{oops\n")?;
//! let date = NaiveDate::from_ymd_opt(2022, 6, 7).unwrap();
//! assert_eq!(
//!     failure_report_key(key, date),
//!     "failed-requests/2022-06-07/ingest/acme/06-07-2022/0000a2e4.reason.txt"
//! );
//! assert!(failure_report_text(&decoded.bad).starts_with("line 2 (byte 8): "));
//! # Ok::<(), s3_event_sink::Error>(())
//! ```

use std::fmt::Write;

use chrono::NaiveDate;

use crate::decode::BadRecord;

/// The key of the failure report for `original_key`:
/// `failed-requests/<YYYY-MM-DD>/<original key>.reason.txt`.
///
/// Amberflo's documentation (seed 004) says only `<date>`; ISO 8601
/// (`2022-06-07`) is used because it sorts. Leading `/`s of the original key
/// are dropped so the report key has no empty segment.
pub fn failure_report_key(original_key: &str, date: NaiveDate) -> String {
    format!(
        "failed-requests/{}/{}.reason.txt",
        date.format("%Y-%m-%d"),
        original_key.trim_start_matches('/')
    )
}

/// The report's text: one line per bad record,
/// `line <n> (byte <offset>): <reason>` (or `byte <offset>: <reason>` when the
/// line is unknown). Newlines inside a reason are replaced by spaces.
pub fn failure_report_text(bad: &[BadRecord]) -> String {
    let mut out = String::new();
    for b in bad {
        let reason = b.reason.replace(['\r', '\n'], " ");
        let _ = match b.line {
            Some(line) => writeln!(out, "line {line} (byte {}): {reason}", b.offset),
            None => writeln!(out, "byte {}: {reason}", b.offset),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_uses_iso_date_and_original_key() {
        let date = NaiveDate::from_ymd_opt(2022, 6, 7).unwrap();
        assert_eq!(
            failure_report_key("/ingest/amberdata/06-07-2022/0000a2e4.gz", date),
            "failed-requests/2022-06-07/ingest/amberdata/06-07-2022/0000a2e4.gz.reason.txt"
        );
        assert_eq!(
            failure_report_key("a.json", date),
            "failed-requests/2022-06-07/a.json.reason.txt"
        );
    }

    #[test]
    fn text_names_line_offset_and_reason() {
        let bad = [
            BadRecord {
                line: Some(3),
                offset: 42,
                reason: "expected value\nat column 1".into(),
            },
            BadRecord {
                line: None,
                offset: 7,
                reason: "bad".into(),
            },
        ];
        assert_eq!(
            failure_report_text(&bad),
            "line 3 (byte 42): expected value at column 1\nbyte 7: bad\n"
        );
        assert_eq!(failure_report_text(&[]), "");
    }
}
