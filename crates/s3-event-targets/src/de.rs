//! Deserializers shared by the broker targets' configuration structs, for
//! MinIO's way of writing values: every value may be a string (`"on"`,
//! `"10"`, `"5s"`, `""` for unset), as the environment gives them.
//!
//! Each target uses a subset, so some go unused when one feature is on.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Default `queue_limit`, as MinIO.
pub(crate) const DEFAULT_QUEUE_LIMIT: usize = 100_000;

#[derive(Deserialize)]
#[serde(untagged)]
enum BoolOrString {
    Bool(bool),
    String(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrString {
    Num(u64),
    String(String),
}

fn parse_bool<E: serde::de::Error>(v: BoolOrString, empty: bool) -> Result<bool, E> {
    match v {
        BoolOrString::Bool(b) => Ok(b),
        BoolOrString::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => Ok(true),
            "off" | "false" | "no" | "0" => Ok(false),
            "" => Ok(empty),
            other => Err(E::custom(format!(
                "must be a bool or \"on\"/\"off\", not {other:?}"
            ))),
        },
    }
}

/// `true`, for `enable`'s default.
pub(crate) fn default_true() -> bool {
    true
}

/// `enable`: a bool or `"on"`/`"off"`; an empty string is off (as MinIO).
pub(crate) fn de_enable<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    parse_bool(BoolOrString::deserialize(d)?, false)
}

/// A flag: a bool or `"on"`/`"off"`/`"true"`/`"false"`; empty is `false`.
pub(crate) fn de_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    parse_bool(BoolOrString::deserialize(d)?, false)
}

/// An optional string; empty means unset.
pub(crate) fn de_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

/// An optional path; empty means unset.
pub(crate) fn de_opt_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(de_opt_string(d)?.map(PathBuf::from))
}

/// An optional unsigned number, given as a number or a numeric string;
/// empty means unset.
pub(crate) fn de_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<NumOrString>::deserialize(d)? {
        None => Ok(None),
        Some(NumOrString::Num(n)) => Ok(Some(n)),
        Some(NumOrString::String(s)) if s.trim().is_empty() => Ok(None),
        Some(NumOrString::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("must be a number, not {s:?}"))),
    }
}

/// `queue_limit`: a number or numeric string; `0` or empty means the
/// default, 100000 (as MinIO).
pub(crate) fn de_queue_limit<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    Ok(match de_opt_u64(d)? {
        None | Some(0) => DEFAULT_QUEUE_LIMIT,
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    })
}

/// The default `queue_limit`.
pub(crate) fn default_queue_limit() -> usize {
    DEFAULT_QUEUE_LIMIT
}

/// Parses `"10s"`, `"500ms"`, `"2m"`, `"1h"` or bare seconds (`"10"`).
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let t = s.trim();
    let (num, unit_ms) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (t, 1000)
    };
    let n: u64 = num.trim().parse().ok()?;
    Some(Duration::from_millis(n.saturating_mul(unit_ms)))
}

/// An optional duration: seconds as a number, or a string such as `"10s"`,
/// `"500ms"`, `"2m"`; empty means unset.
pub(crate) fn de_opt_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    match Option::<NumOrString>::deserialize(d)? {
        None => Ok(None),
        Some(NumOrString::Num(n)) => Ok(Some(Duration::from_secs(n))),
        Some(NumOrString::String(s)) if s.trim().is_empty() => Ok(None),
        Some(NumOrString::String(s)) => parse_duration(&s).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "must be seconds or a duration like \"10s\" or \"500ms\", not {s:?}"
            ))
        }),
    }
}

/// `"***"` for a set secret, for `Debug` impls.
pub(crate) fn redact(s: &Option<String>) -> Option<&'static str> {
    s.as_ref().map(|_| "***")
}

/// An error's message with its causes, on one line.
pub(crate) fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !s.contains(&c_text) {
            s.push_str(": ");
            s.push_str(&c_text);
        }
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("x"), None);
    }
}
