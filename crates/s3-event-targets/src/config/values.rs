//! Serde adapters for MinIO's way of writing configuration values, over
//! the workspace's one set of value parsers, [`s3_event_core::config`]:
//! every value may be a string (`"on"`, `"10"`, `"5s"`, `""` for unset), as
//! the environment gives them, or the JSON bool or number it stands for.
//!
//! Every target configuration reads its values through these, with
//! `#[serde(deserialize_with = "…")]`.
// Each target uses a subset; with no target feature on, the queue block
// alone uses a few.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use s3_event_core::config::{parse_duration, parse_flag, Text};
use serde::{Deserialize, Deserializer};

/// `r`, its error prefixed with the key it is about (for values whose
/// messages have always named their key).
pub(crate) fn named<T, E: serde::de::Error>(key: &str, r: Result<T, E>) -> Result<T, E> {
    r.map_err(|e| E::custom(format!("`{key}` {e}")))
}

/// The text of a value given as a string, number or bool; `None` for
/// `null`, an empty or blank string.
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Text>::deserialize(d)?
        .map(|t| t.0)
        .filter(|s| !s.trim().is_empty()))
}

/// A flag: a bool or `"on"`/`"off"` (also `"true"`/`"false"`, `"yes"`/`"no"`,
/// `"1"`/`"0"`, any case); empty is `false` (as MinIO reads `enable`).
/// `null` is refused: it must not turn `enable` off without anyone writing
/// "off".
pub(crate) fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let Some(Text(s)) = Option::<Text>::deserialize(d)? else {
        return Err(serde::de::Error::custom(
            "must be a bool or \"on\"/\"off\", not null",
        ));
    };
    match Some(s).filter(|s| !s.trim().is_empty()) {
        None => Ok(false),
        Some(s) => parse_flag(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "must be a bool or \"on\"/\"off\", not {:?}",
                s.trim().to_ascii_lowercase()
            ))
        }),
    }
}

/// `true`, the default of `enable` and other flags that default on.
pub(crate) fn default_true() -> bool {
    true
}

/// An optional string; empty means unset.
pub(crate) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

/// An optional path; empty means unset.
pub(crate) fn opt_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(opt_string(d)?.map(PathBuf::from))
}

/// An optional unsigned number, given as a number or a numeric string;
/// empty means unset.
pub(crate) fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    text(d)?
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("must be a number, not {s:?}")))
        })
        .transpose()
}

/// An unsigned number, given as a number or a numeric string; empty is 0.
pub(crate) fn u64_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(opt_u64(d)?.unwrap_or(0))
}

/// An optional duration: seconds as a number, or a string such as `"10s"`,
/// `"500ms"`, `"2m"`, `"1h"` (see [`parse_duration`]); empty means unset.
pub(crate) fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    text(d)?
        .map(|s| {
            parse_duration(&s).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "must be seconds or a duration like \"10s\" or \"500ms\", not {s:?}"
                ))
            })
        })
        .transpose()
}

/// `"***"` for a set secret, so that `Debug` shows whether it is set.
pub(crate) fn redact(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "***")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    struct V {
        #[serde(default, deserialize_with = "flag")]
        f: bool,
        #[serde(default, deserialize_with = "opt_u64")]
        n: Option<u64>,
        #[serde(default, deserialize_with = "opt_duration")]
        d: Option<Duration>,
    }

    fn v(j: serde_json::Value) -> Result<V, serde_json::Error> {
        serde_json::from_value(j)
    }

    #[test]
    fn values_as_minio_writes_them() {
        let x = v(json!({"f": "ON", "n": "10", "d": "2m"})).unwrap();
        assert!(x.f);
        assert_eq!(x.n, Some(10));
        assert_eq!(x.d, Some(Duration::from_secs(120)));
        let x = v(json!({"f": "", "n": "", "d": ""})).unwrap();
        assert!(!x.f);
        assert_eq!((x.n, x.d), (None, None));
        let x = v(json!({"f": false, "n": 7, "d": 3})).unwrap();
        assert!(!x.f);
        assert_eq!((x.n, x.d), (Some(7), Some(Duration::from_secs(3))));
        assert!(v(json!({"f": "maybe"})).is_err());
        assert!(v(json!({"f": null})).is_err());
        assert!(v(json!({"n": "many"})).is_err());
        assert!(v(json!({"d": "often"})).is_err());
    }
}
