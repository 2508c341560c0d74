//! Target ids and ARNs: `arn:minio:sqs:<region>:<id>:<type>`.
//!
//! ```
//! use s3_event_core::TargetId;
//!
//! let id: TargetId = "arn:minio:sqs:us-east-1:1:webhook".parse().unwrap();
//! assert_eq!(id.region(), "us-east-1");
//! assert_eq!(id.id(), "1");
//! assert_eq!(id.kind(), "webhook");
//! assert_eq!(id.to_string(), "arn:minio:sqs:us-east-1:1:webhook");
//! ```

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// A notification target's id, printed as `arn:minio:sqs:<region>:<id>:<type>`
/// (MinIO's form; the region may be empty).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId {
    region: String,
    id: String,
    kind: String,
}

impl TargetId {
    /// A target id from its parts. `id` and `kind` must be non-empty and none
    /// of the parts may contain `:`.
    pub fn new(region: impl Into<String>, id: impl Into<String>, kind: impl Into<String>) -> Result<Self> {
        let t = TargetId {
            region: region.into(),
            id: id.into(),
            kind: kind.into(),
        };
        t.check()?;
        Ok(t)
    }

    fn check(&self) -> Result<()> {
        let bad = |reason: &str| {
            Err(Error::InvalidArn {
                arn: self.to_string(),
                reason: reason.to_owned(),
            })
        };
        if self.id.is_empty() {
            return bad("the target id is empty");
        }
        if self.kind.is_empty() {
            return bad("the target type is empty");
        }
        if [&self.region, &self.id, &self.kind].iter().any(|p| p.contains(':')) {
            return bad("a part contains `:`");
        }
        Ok(())
    }

    /// The region (may be empty).
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The target's id within its type (`1`, `primary`, ...).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The target type (`webhook`, `kafka`, `redis`, ...).
    pub fn kind(&self) -> &str {
        &self.kind
    }
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "arn:minio:sqs:{}:{}:{}", self.region, self.id, self.kind)
    }
}

impl FromStr for TargetId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            ["arn", "minio", "sqs", region, id, kind] => TargetId::new(*region, *id, *kind),
            _ => Err(Error::InvalidArn {
                arn: s.to_owned(),
                reason: "expected arn:minio:sqs:<region>:<id>:<type>".to_owned(),
            }),
        }
    }
}

impl serde::Serialize for TargetId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TargetId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let t: TargetId = "arn:minio:sqs::primary:kafka".parse().unwrap();
        assert_eq!(t.region(), "");
        assert_eq!(t.to_string(), "arn:minio:sqs::primary:kafka");
    }

    #[test]
    fn rejects_bad_ids() {
        for bad in ["", "arn:minio:sqs:r:1", "arn:aws:sqs:r:1:x", "arn:minio:sqs:r::webhook", "arn:minio:sqs:r:1:"] {
            let e = bad.parse::<TargetId>().unwrap_err();
            assert!(e.to_string().contains("invalid ARN"), "{bad}: {e}");
        }
    }
}
