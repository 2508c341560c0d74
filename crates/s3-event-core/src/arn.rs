//! Target ids and ARNs: MinIO's `arn:minio:sqs:<region>:<id>:<type>` and
//! AWS's `arn:aws:sqs|sns|lambda:<region>:<account>:<resource>`.
//!
//! ```
//! use s3_event_core::{Arn, AwsService, TargetId};
//!
//! let id: TargetId = "arn:minio:sqs:us-east-1:1:webhook".parse().unwrap();
//! assert_eq!(id.region(), "us-east-1");
//! assert_eq!(id.id(), "1");
//! assert_eq!(id.kind(), "webhook");
//! assert_eq!(id.to_string(), "arn:minio:sqs:us-east-1:1:webhook");
//!
//! // A notification destination is either form.
//! let queue: Arn = "arn:aws:sqs:us-east-1:123456789012:uploads".parse().unwrap();
//! let aws = queue.as_aws().unwrap();
//! assert_eq!((aws.service(), aws.account(), aws.resource()), (AwsService::Sqs, "123456789012", "uploads"));
//! let target: Arn = "arn:minio:sqs::1:webhook".parse().unwrap();
//! assert_eq!(target.as_target_id().unwrap().kind(), "webhook");
//! assert_eq!(target.to_string(), "arn:minio:sqs::1:webhook");
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
    pub fn new(
        region: impl Into<String>,
        id: impl Into<String>,
        kind: impl Into<String>,
    ) -> Result<Self> {
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
        if [&self.region, &self.id, &self.kind]
            .iter()
            .any(|p| p.contains(':'))
        {
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

/// The AWS services a bucket notification can be sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AwsService {
    /// Amazon SQS (`sqs`): a `QueueConfiguration`'s `Queue`.
    Sqs,
    /// Amazon SNS (`sns`): a `TopicConfiguration`'s `Topic`.
    Sns,
    /// AWS Lambda (`lambda`): a `CloudFunctionConfiguration`'s
    /// `CloudFunction`.
    Lambda,
}

impl AwsService {
    /// The service's name in an ARN (`sqs`, `sns`, `lambda`).
    pub fn as_str(self) -> &'static str {
        match self {
            AwsService::Sqs => "sqs",
            AwsService::Sns => "sns",
            AwsService::Lambda => "lambda",
        }
    }
}

/// An AWS ARN of a notification destination:
/// `arn:<partition>:<service>:<region>:<account>:<resource>`, where the
/// service is `sqs`, `sns` or `lambda` and a Lambda resource is
/// `function:<name>[:<qualifier>]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AwsArn {
    partition: String,
    service: AwsService,
    region: String,
    account: String,
    resource: String,
}

impl AwsArn {
    /// An ARN in the `aws` partition. `region`, `account` and `resource` must
    /// be non-empty; `region` and `account` may not contain `:`; a Lambda
    /// resource must start with `function:`.
    pub fn new(
        service: AwsService,
        region: impl Into<String>,
        account: impl Into<String>,
        resource: impl Into<String>,
    ) -> Result<Self> {
        let a = AwsArn {
            partition: "aws".to_owned(),
            service,
            region: region.into(),
            account: account.into(),
            resource: resource.into(),
        };
        a.check()?;
        Ok(a)
    }

    fn check(&self) -> Result<()> {
        let bad = |reason: &str| {
            Err(Error::InvalidArn {
                arn: self.to_string(),
                reason: reason.to_owned(),
            })
        };
        if !self.partition.starts_with("aws") || self.partition.contains(':') {
            return bad("the partition must be `aws` or another AWS partition (`aws-cn`, ...)");
        }
        if self.region.is_empty() || self.region.contains(':') {
            return bad("the region is empty or contains `:`");
        }
        if self.account.is_empty() || self.account.contains(':') {
            return bad("the account id is empty or contains `:`");
        }
        if self.resource.is_empty() {
            return bad("the resource name is empty");
        }
        if self.service == AwsService::Lambda
            && self
                .resource
                .strip_prefix("function:")
                .is_none_or(str::is_empty)
        {
            return bad("a Lambda ARN's resource must be `function:<name>`");
        }
        Ok(())
    }

    /// The partition (`aws`, `aws-cn`, `aws-us-gov`, ...).
    pub fn partition(&self) -> &str {
        &self.partition
    }

    /// The service.
    pub fn service(&self) -> AwsService {
        self.service
    }

    /// The region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The account id.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The resource: queue or topic name, `function:<name>[:<qualifier>]`.
    pub fn resource(&self) -> &str {
        &self.resource
    }
}

impl fmt::Display for AwsArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:{}:{}:{}:{}",
            self.partition,
            self.service.as_str(),
            self.region,
            self.account,
            self.resource
        )
    }
}

impl FromStr for AwsArn {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidArn {
            arn: s.to_owned(),
            reason: reason.to_owned(),
        };
        let parts: Vec<&str> = s.splitn(6, ':').collect();
        let ["arn", partition, service, region, account, resource] = parts.as_slice() else {
            return Err(bad(
                "expected arn:<partition>:<service>:<region>:<account>:<resource>",
            ));
        };
        let service = match *service {
            "sqs" => AwsService::Sqs,
            "sns" => AwsService::Sns,
            "lambda" => AwsService::Lambda,
            _ => return Err(bad("the service must be `sqs`, `sns` or `lambda`")),
        };
        let a = AwsArn {
            partition: (*partition).to_owned(),
            service,
            region: (*region).to_owned(),
            account: (*account).to_owned(),
            resource: (*resource).to_owned(),
        };
        a.check().map_err(|e| match e {
            Error::InvalidArn { reason, .. } => bad(&reason),
            e => e,
        })?;
        Ok(a)
    }
}

/// A notification destination: an AWS SQS/SNS/Lambda ARN or a MinIO target
/// id (`arn:minio:sqs:<region>:<id>:<type>`).
///
/// Parses either form (`arn:minio:...` is a [`TargetId`], anything else must
/// be an [`AwsArn`]); prints as it was given. Serialized as its string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arn {
    /// An AWS ARN.
    Aws(AwsArn),
    /// A MinIO/AIStor target id.
    Target(TargetId),
}

impl Arn {
    /// The AWS ARN, if this is one.
    pub fn as_aws(&self) -> Option<&AwsArn> {
        match self {
            Arn::Aws(a) => Some(a),
            Arn::Target(_) => None,
        }
    }

    /// The MinIO target id, if this is one.
    pub fn as_target_id(&self) -> Option<&TargetId> {
        match self {
            Arn::Target(t) => Some(t),
            Arn::Aws(_) => None,
        }
    }

    /// The region (may be empty for a MinIO target id).
    pub fn region(&self) -> &str {
        match self {
            Arn::Aws(a) => a.region(),
            Arn::Target(t) => t.region(),
        }
    }
}

impl From<AwsArn> for Arn {
    fn from(a: AwsArn) -> Self {
        Arn::Aws(a)
    }
}

impl From<TargetId> for Arn {
    fn from(t: TargetId) -> Self {
        Arn::Target(t)
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arn::Aws(a) => a.fmt(f),
            Arn::Target(t) => t.fmt(f),
        }
    }
}

impl FromStr for Arn {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s.starts_with("arn:minio:") {
            s.parse().map(Arn::Target)
        } else {
            s.parse().map(Arn::Aws)
        }
    }
}

macro_rules! serde_as_string {
    ($($t:ty),*) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

serde_as_string!(AwsArn, Arn);

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
        for bad in [
            "",
            "arn:minio:sqs:r:1",
            "arn:aws:sqs:r:1:x",
            "arn:minio:sqs:r::webhook",
            "arn:minio:sqs:r:1:",
        ] {
            let e = bad.parse::<TargetId>().unwrap_err();
            assert!(e.to_string().contains("invalid ARN"), "{bad}: {e}");
        }
    }

    #[test]
    fn aws_arns_parse_and_print() {
        for s in [
            "arn:aws:sqs:us-east-1:356671443308:s3notificationqueue",
            "arn:aws:sns:us-east-1:356671443308:s3notificationtopic2",
            "arn:aws:lambda:us-west-2:123456789012:function:my-function",
            "arn:aws:lambda:us-west-2:123456789012:function:my-function:prod",
            "arn:aws-cn:sqs:cn-north-1:123456789012:q",
        ] {
            let a: Arn = s.parse().unwrap();
            assert!(a.as_aws().is_some() && a.as_target_id().is_none(), "{s}");
            assert_eq!(a.to_string(), s);
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(serde_json::from_str::<Arn>(&json).unwrap(), a);
        }
        let l: AwsArn = "arn:aws:lambda:us-west-2:123456789012:function:f:1"
            .parse()
            .unwrap();
        assert_eq!(l.service(), AwsService::Lambda);
        assert_eq!(l.resource(), "function:f:1");
        assert_eq!(l.partition(), "aws");
        let q = AwsArn::new(AwsService::Sqs, "eu-west-1", "1", "q").unwrap();
        assert_eq!(q.to_string(), "arn:aws:sqs:eu-west-1:1:q");
    }

    #[test]
    fn arn_accepts_minio_target_ids() {
        let a: Arn = "arn:minio:sqs:us-east-1:1:webhook".parse().unwrap();
        let t = a.as_target_id().unwrap();
        assert_eq!(
            (t.region(), t.id(), t.kind()),
            ("us-east-1", "1", "webhook")
        );
        assert_eq!(a, Arn::from(t.clone()));
        assert_eq!(a.region(), "us-east-1");
    }

    #[test]
    fn rejects_bad_arns() {
        for bad in [
            "",
            "arn:aws:sqs:us-east-1:1",
            "arn:aws:s3:::bucket",
            "arn:aws:sqs::1:q",
            "arn:aws:sqs:us-east-1::q",
            "arn:aws:sqs:us-east-1:1:",
            "arn:aws:lambda:us-east-1:1:my-function",
            "arn:aws:lambda:us-east-1:1:function:",
            "arn:gcp:sqs:us-east-1:1:q",
            "arn:minio:sqs:r:1",
            "urn:aws:sqs:us-east-1:1:q",
        ] {
            let e = bad.parse::<Arn>().unwrap_err();
            assert!(
                matches!(e, Error::InvalidArn { ref arn, .. } if arn == bad),
                "{bad}: {e}"
            );
        }
    }
}
