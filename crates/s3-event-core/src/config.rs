//! The configuration vocabulary shared by every configuration file of the
//! workspace: values as MinIO and the seeds write them (strings for
//! everything, `"on"`/`"off"` flags, `"5s"` durations, `""` for unset), and
//! the list of keys a configuration struct accepts, read from the struct
//! itself so no hand-kept list can drift from it.
//!
//! ```
//! use std::time::Duration;
//! use s3_event_core::config::{field_names, parse_duration, parse_flag};
//!
//! #[derive(serde::Deserialize)]
//! #[serde(rename_all = "camelCase")]
//! #[allow(dead_code)]
//! struct Example { flush_size: Option<u64>, queue_dir: Option<String> }
//!
//! assert_eq!(field_names::<Example>(), ["flushSize", "queueDir"]);
//! assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
//! assert_eq!(parse_flag("on"), Some(true));
//! ```

use std::time::Duration;

use serde::de::{self, DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer};

/// `on`/`true`/`yes`/`1` or `off`/`false`/`no`/`0`, any case.
pub fn parse_flag(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// A duration: a number with a unit (`ms`, `s`, `m`, `h`), or a bare
/// number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

/// A value given as a string, or as a number or bool taken as its text (the
/// seeds write `"8080"`, users write `8080`).
#[derive(Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Could be a secret: callers that print values print them on purpose.
        f.write_str("Text(..)")
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The keys a configuration struct accepts, as spelled on the wire (after
/// `rename`/`rename_all`), read from its `Deserialize` implementation, so
/// key lists, environment overrides and "known keys" messages come from the
/// struct itself. Aliases are not listed; a flattened struct lists nothing.
pub fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Names(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field names read")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> Deserializer<'de> for &mut Names {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut names = Names(None);
    let _ = T::deserialize(&mut names);
    names.0.unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_minio_writes_them() {
        assert_eq!(parse_flag(" Off "), Some(false));
        assert_eq!(parse_flag("maybe"), None);
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("5 parsecs"), None);
        // Too long for a Duration: refused, not a panic.
        assert_eq!(parse_duration("1e300h"), None);
        assert_eq!(parse_duration(&format!("{}h", u64::MAX)), None);
        let t: Vec<Text> = serde_json::from_str(r#"["a", 8080, true]"#).unwrap();
        assert_eq!(
            t.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
            ["a", "8080", "true"]
        );
        assert!(serde_json::from_str::<Text>("[1]").is_err());
    }
}
