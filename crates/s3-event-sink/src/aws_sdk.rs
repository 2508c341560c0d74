//! An [`ObjectStore`] over the AWS SDK's S3 client (feature `aws-sdk`), for
//! what object_store's own S3 backend cannot send: a canned ACL (Amberflo's
//! buckets want `bucket-owner-full-control`), SSE-S3 / SSE-KMS, a storage
//! class and object tags on every upload.
//!
//! ```no_run
//! use s3_event_sink::{AwsSdkConfig, StoreConfig, UploadOptions};
//!
//! let store = StoreConfig::AwsSdk(AwsSdkConfig {
//!     bucket: "183-amberflo".into(),
//!     region: Some("us-west-2".into()),
//!     upload: UploadOptions {
//!         acl: Some("bucket-owner-full-control".into()),
//!         server_side_encryption: Some("AES256".into()),
//!         ..UploadOptions::default()
//!     },
//!     ..AwsSdkConfig::default()
//! })
//! .build()?;
//! # Ok::<(), s3_event_sink::Error>(())
//! ```
//!
//! Every `PutObject`, `CreateMultipartUpload` and `CopyObject` carries the
//! [`UploadOptions`]; `Content-Type` and `Content-Encoding` come from the
//! put's attributes, object tags from the [`UploadOptions`] plus the put's
//! own [`TagSet`](object_store::TagSet). Errors keep the S3 error code and
//! HTTP status and say whether a retry may help ([`AwsSdkError::is_transient`]).

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime as SdkDateTime};
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ObjectCannedAcl, ServerSideEncryption, StorageClass,
};
use aws_sdk_s3::Client;
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use futures_util::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, CopyMode, CopyOptions, GetOptions, GetRange, GetResult,
    GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, TagSet, UploadPart,
};
use s3_event_core::aws::{AwsConfig, ResolvedAws};
use tokio::sync::Mutex;

use crate::{Error, Result};

const STORE: &str = "AwsSdkS3";

/// The accepted canned ACLs, for error messages.
const ACLS: &str = "private, public-read, public-read-write, authenticated-read, \
                    aws-exec-read, bucket-owner-read, bucket-owner-full-control";
/// The accepted server-side encryptions, for error messages.
const SSES: &str = "AES256 (SSE-S3), aws:kms (SSE-KMS), aws:kms:dsse";
/// The accepted storage classes, for error messages.
const STORAGE_CLASSES: &str = "STANDARD, REDUCED_REDUNDANCY, STANDARD_IA, ONEZONE_IA, \
     INTELLIGENT_TIERING, GLACIER, GLACIER_IR, DEEP_ARCHIVE, EXPRESS_ONEZONE, OUTPOSTS, SNOW, \
     FSX_OPENZFS, FSX_ONTAP";

/// An S3 bucket reached through the AWS SDK, and the options every upload
/// carries. Unset credentials, region and endpoint are read from the standard
/// AWS environment variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION` (else `AWS_DEFAULT_REGION`, else
/// `us-east-1`), `AWS_ENDPOINT_URL_S3` (else `AWS_ENDPOINT_URL`). Profile
/// files, SSO and instance metadata are not read (no `aws-config`).
#[derive(Clone, Default)]
pub struct AwsSdkConfig {
    /// The bucket name.
    pub bucket: String,
    /// The region (default from the environment, else `us-east-1`).
    pub region: Option<String>,
    /// The endpoint of an S3-compatible store, e.g. `http://127.0.0.1:18333`.
    pub endpoint: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key; never printed.
    pub secret_access_key: Option<String>,
    /// A session token; never printed.
    pub session_token: Option<String>,
    /// Allow plain `http://` endpoints (loopback test servers).
    pub allow_http: bool,
    /// Use virtual-hosted-style requests (`bucket.host`) instead of path
    /// style (`host/bucket`), which S3-compatible stores usually need.
    pub virtual_hosted_style: bool,
    /// What every upload carries.
    pub upload: UploadOptions,
}

impl fmt::Debug for AwsSdkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("AwsSdkConfig")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("session_token", &redact(&self.session_token))
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("upload", &self.upload)
            .finish()
    }
}

/// Options applied to every `PutObject`, `CreateMultipartUpload` and
/// `CopyObject`. Values use S3's wire names; [`validate`](Self::validate)
/// rejects unknown ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UploadOptions {
    /// A canned ACL (`x-amz-acl`), e.g. `bucket-owner-full-control`.
    pub acl: Option<String>,
    /// Server-side encryption (`x-amz-server-side-encryption`): `AES256`
    /// (SSE-S3) or `aws:kms` (SSE-KMS).
    pub server_side_encryption: Option<String>,
    /// The KMS key for `aws:kms` (the bucket's default key when unset).
    pub sse_kms_key_id: Option<String>,
    /// The storage class (`x-amz-storage-class`), e.g. `STANDARD_IA`.
    pub storage_class: Option<String>,
    /// Object tags (`x-amz-tagging`, sent URL-encoded): at most 10, keys of
    /// 1 to 128 characters, values of at most 256.
    pub tags: Vec<(String, String)>,
}

/// [`UploadOptions`] parsed into the SDK's types.
#[derive(Clone, Debug, Default)]
struct Upload {
    acl: Option<ObjectCannedAcl>,
    sse: Option<ServerSideEncryption>,
    kms_key: Option<String>,
    storage_class: Option<StorageClass>,
    tags: TagSet,
}

fn invalid(what: &'static str, value: &str, expected: &'static str) -> Error {
    Error::InvalidConfig {
        what,
        value: value.to_owned(),
        expected,
    }
}

impl UploadOptions {
    /// Checks every value; the error names the option and the bad value.
    pub fn validate(&self) -> Result<()> {
        self.parse().map(|_| ())
    }

    fn parse(&self) -> Result<Upload> {
        let acl = match &self.acl {
            Some(a) if ObjectCannedAcl::values().contains(&a.as_str()) => {
                Some(ObjectCannedAcl::from(a.as_str()))
            }
            Some(a) => return Err(invalid("acl", a, ACLS)),
            None => None,
        };
        let sse = match &self.server_side_encryption {
            // aws:fsx is only for FSx-backed access points, not for buckets.
            Some(s) if s != "aws:fsx" && ServerSideEncryption::values().contains(&s.as_str()) => {
                Some(ServerSideEncryption::from(s.as_str()))
            }
            Some(s) => return Err(invalid("server_side_encryption", s, SSES)),
            None => None,
        };
        if let Some(k) = &self.sse_kms_key_id {
            if !matches!(
                sse,
                Some(ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse)
            ) {
                return Err(invalid(
                    "sse_kms_key_id",
                    k,
                    "a KMS key id only with server_side_encryption `aws:kms` or `aws:kms:dsse`",
                ));
            }
            if k.is_empty() {
                return Err(invalid(
                    "sse_kms_key_id",
                    k,
                    "a non-empty KMS key id or ARN",
                ));
            }
        }
        let storage_class = match &self.storage_class {
            Some(c) if StorageClass::values().contains(&c.as_str()) => {
                Some(StorageClass::from(c.as_str()))
            }
            Some(c) => return Err(invalid("storage_class", c, STORAGE_CLASSES)),
            None => None,
        };
        if self.tags.len() > 10 {
            return Err(invalid(
                "tags",
                &format!("{} tags", self.tags.len()),
                "at most 10 tags",
            ));
        }
        let mut tags = TagSet::default();
        for (i, (k, v)) in self.tags.iter().enumerate() {
            if k.is_empty() || k.chars().count() > 128 {
                return Err(invalid("tag key", k, "1 to 128 characters"));
            }
            if v.chars().count() > 256 {
                return Err(invalid("tag value", v, "at most 256 characters"));
            }
            if self.tags[..i].iter().any(|(k2, _)| k2 == k) {
                return Err(invalid("tag key", k, "each key once"));
            }
            tags.push(k, v);
        }
        Ok(Upload {
            acl,
            sse,
            kms_key: self.sse_kms_key_id.clone(),
            storage_class,
            tags,
        })
    }
}

impl AwsSdkConfig {
    /// Builds the store; nothing is contacted yet.
    pub fn build(&self) -> Result<AwsSdkStore> {
        if self.bucket.is_empty() {
            return Err(invalid("bucket", "", "a bucket name"));
        }
        let upload = self.upload.parse()?;
        let aws = self.resolve()?;
        let endpoint = aws.endpoint.clone();
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(aws.region.clone()))
            .force_path_style(!self.virtual_hosted_style)
            // S3-compatible stores differ in their support for the
            // flexible-checksum trailers; send checksums only where S3
            // requires them.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .credentials_provider(aws.credentials());
        if let Some(e) = &endpoint {
            b = b.endpoint_url(e);
        }
        Ok(AwsSdkStore {
            inner: Arc::new(Inner {
                client: Client::from_conf(b.build()),
                bucket: self.bucket.clone(),
                endpoint,
                upload,
            }),
        })
    }

    /// Region, endpoint and credentials from the config or the environment,
    /// read as every AWS client of the workspace reads them
    /// ([`s3_event_core::aws`], service `S3`: `AWS_ENDPOINT_URL_S3` before
    /// `AWS_ENDPOINT_URL`); the endpoint an https:// URL, or http:// with
    /// `allow_http`; both the key id and the secret required.
    fn resolve(&self) -> Result<ResolvedAws> {
        let aws = AwsConfig {
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            session_token: self.session_token.clone(),
        };
        let resolved = aws.resolve("S3").map_err(|e| match e {
            s3_event_core::Error::Aws {
                field: "endpoint", ..
            } => {
                let given = self
                    .endpoint
                    .clone()
                    .filter(|e| !e.is_empty())
                    .or_else(|| env("AWS_ENDPOINT_URL_S3"))
                    .or_else(|| env("AWS_ENDPOINT_URL"))
                    .unwrap_or_default();
                invalid("endpoint", &given, "an http:// or https:// URL")
            }
            s3_event_core::Error::Aws {
                field: "secret_access_key",
                ..
            } => invalid(
                "secret_access_key",
                "",
                "a secret access key with the access key id",
            ),
            s3_event_core::Error::Aws {
                field: "access_key_id",
                ..
            } => invalid(
                "access_key_id",
                "",
                "an access key id with the secret access key",
            ),
            _ => invalid(
                "credentials",
                "",
                "access_key_id and secret_access_key, in the config or as \
                 AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
            ),
        })?;
        if let Some(e) = &resolved.endpoint {
            if e.starts_with("http://") && !self.allow_http {
                return Err(invalid(
                    "endpoint",
                    e,
                    "an https:// URL (set allow_http for plain http)",
                ));
            }
        }
        Ok(resolved)
    }
}

/// An environment variable's value, unless unset or empty.
fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

struct Inner {
    client: Client,
    bucket: String,
    endpoint: Option<String>,
    upload: Upload,
}

/// An [`ObjectStore`] over `aws_sdk_s3::Client`; build it with
/// [`AwsSdkConfig::build`] or [`StoreConfig::AwsSdk`](crate::StoreConfig).
///
/// Supported: puts (single and multipart, `PutMode::Create` as
/// `If-None-Match: *`, `PutMode::Update` as `If-Match`), gets (ranges,
/// conditions, versions, heads), deletes, listings (paginated, with offset,
/// with delimiter) and copies (`CopyMode::Overwrite`). Not supported
/// (`NotImplemented`): `CopyMode::Create`, and attributes other than
/// `Content-Type`, `Content-Encoding`, `Content-Disposition`,
/// `Content-Language`, `Cache-Control`, storage class and user metadata.
#[derive(Clone)]
pub struct AwsSdkStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for AwsSdkStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSdkStore")
            .field("bucket", &self.inner.bucket)
            .field("endpoint", &self.inner.endpoint)
            .field("upload", &self.inner.upload)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for AwsSdkStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.endpoint {
            Some(e) => write!(f, "AwsSdkS3(s3://{} at {e})", self.inner.bucket),
            None => write!(f, "AwsSdkS3(s3://{})", self.inner.bucket),
        }
    }
}

impl AwsSdkStore {
    /// The SDK client, for what the [`ObjectStore`] trait does not cover
    /// (reading tags or ACLs back, bucket settings).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }
}

/// An S3 request that failed: the operation, the key, the HTTP status and
/// S3 error code when there was a response, and whether a retry may help.
#[derive(Debug)]
pub struct AwsSdkError {
    operation: &'static str,
    key: String,
    status: Option<u16>,
    code: Option<String>,
    message: String,
    transient: bool,
}

impl AwsSdkError {
    /// True for failures a retry may cure: 5xx, 429, `SlowDown` and other
    /// throttling codes, `RequestTimeout`, timeouts and connection failures.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// The HTTP status, if a response arrived.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The S3 error code (`AccessDenied`, `SlowDown`, ...), if any.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

impl fmt::Display for AwsSdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} `{}` failed", self.operation, self.key)?;
        if let Some(s) = self.status {
            write!(f, " with HTTP {s}")?;
        }
        if let Some(c) = &self.code {
            write!(f, " ({c})")?;
        }
        write!(f, ": {}", self.message)?;
        f.write_str(if self.transient {
            " [transient]"
        } else {
            " [permanent]"
        })
    }
}

impl std::error::Error for AwsSdkError {}

const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "RequestLimitExceeded",
];

/// Maps an SDK error to object_store's error kinds; everything else is
/// `Generic` with an [`AwsSdkError`] inside.
fn map_err<E>(operation: &'static str, key: &str, e: SdkError<E>) -> object_store::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().map(str::to_owned);
    let message = match &e {
        SdkError::ServiceError(s) => s
            .err()
            .message()
            .map(str::to_owned)
            .unwrap_or_else(|| s.err().to_string()),
        other => {
            // The source chain says what went wrong below the SDK.
            let mut m = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(s) = src {
                m.push_str(": ");
                m.push_str(&s.to_string());
                src = s.source();
            }
            m
        }
    };
    let transient = match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        _ => {
            status.is_some_and(|s| s >= 500 || s == 429 || s == 408)
                || code
                    .as_deref()
                    .is_some_and(|c| TRANSIENT_CODES.contains(&c))
        }
    };
    let err = AwsSdkError {
        operation,
        key: key.to_owned(),
        status,
        code: code.clone(),
        message,
        transient,
    };
    let path = key.to_owned();
    let source = Box::new(err);
    match (status, code.as_deref()) {
        (_, Some("NoSuchKey" | "NotFound" | "NoSuchUpload")) | (Some(404), _) => {
            object_store::Error::NotFound { path, source }
        }
        (Some(304), _) => object_store::Error::NotModified { path, source },
        (_, Some("PreconditionFailed")) | (Some(412), _) => {
            object_store::Error::Precondition { path, source }
        }
        (_, Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken")) => {
            object_store::Error::Unauthenticated { path, source }
        }
        (_, Some("AccessDenied")) | (Some(403), _) => {
            object_store::Error::PermissionDenied { path, source }
        }
        _ => object_store::Error::Generic {
            store: STORE,
            source,
        },
    }
}

fn not_implemented(operation: &str) -> object_store::Error {
    object_store::Error::NotImplemented {
        operation: operation.to_owned(),
        implementer: STORE.to_owned(),
    }
}

/// The object's user metadata (`x-amz-meta-*`, such as the sink's delivery
/// manifest) as attributes.
fn user_metadata(
    metadata: Option<&std::collections::HashMap<String, String>>,
    attributes: &mut Attributes,
) {
    for (k, v) in metadata.into_iter().flatten() {
        attributes.insert(Attribute::Metadata(k.clone().into()), v.clone().into());
    }
}

/// The object headers a put can carry, from its attributes.
#[derive(Default)]
struct Headers {
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    storage_class: Option<StorageClass>,
    metadata: Option<std::collections::HashMap<String, String>>,
}

fn headers(attributes: &Attributes) -> object_store::Result<Headers> {
    let mut h = Headers::default();
    for (k, v) in attributes {
        let v = v.to_string();
        match k {
            Attribute::ContentType => h.content_type = Some(v),
            Attribute::ContentEncoding => h.content_encoding = Some(v),
            Attribute::ContentDisposition => h.content_disposition = Some(v),
            Attribute::ContentLanguage => h.content_language = Some(v),
            Attribute::CacheControl => h.cache_control = Some(v),
            Attribute::StorageClass => h.storage_class = Some(StorageClass::from(v.as_str())),
            Attribute::Metadata(name) => {
                h.metadata
                    .get_or_insert_with(Default::default)
                    .insert(name.to_string(), v);
            }
            other => return Err(not_implemented(&format!("attribute {other:?}"))),
        }
    }
    Ok(h)
}

/// The tagging header: the configured tags, then the put's own.
fn tagging(upload: &Upload, tags: &TagSet) -> Option<String> {
    match (upload.tags.encoded(), tags.encoded()) {
        ("", "") => None,
        (a, "") => Some(a.to_owned()),
        ("", b) => Some(b.to_owned()),
        (a, b) => Some(format!("{a}&{b}")),
    }
}

/// Applies the upload options and headers to a PutObject or
/// CreateMultipartUpload builder (both have the same setters).
macro_rules! with_upload {
    ($req:expr, $upload:expr, $h:expr, $tagging:expr) => {{
        let u: &Upload = $upload;
        let h: Headers = $h;
        $req.set_acl(u.acl.clone())
            .set_server_side_encryption(u.sse.clone())
            .set_ssekms_key_id(u.kms_key.clone())
            .set_storage_class(h.storage_class.or_else(|| u.storage_class.clone()))
            .set_tagging($tagging)
            .set_content_type(h.content_type)
            .set_content_encoding(h.content_encoding)
            .set_content_disposition(h.content_disposition)
            .set_content_language(h.content_language)
            .set_cache_control(h.cache_control)
            .set_metadata(h.metadata)
    }};
}

fn payload_bytes(payload: PutPayload) -> Bytes {
    let parts: Vec<Bytes> = payload.into_iter().collect();
    match parts.len() {
        0 => Bytes::new(),
        1 => parts.into_iter().next().unwrap_or_default(),
        _ => {
            let mut v = Vec::with_capacity(parts.iter().map(Bytes::len).sum());
            for p in parts {
                v.extend_from_slice(&p);
            }
            Bytes::from(v)
        }
    }
}

fn to_chrono(t: Option<&SdkDateTime>) -> DateTime<Utc> {
    t.and_then(|t| Utc.timestamp_opt(t.secs(), t.subsec_nanos()).single())
        .unwrap_or_default()
}

fn to_sdk(t: DateTime<Utc>) -> SdkDateTime {
    SdkDateTime::from_secs_and_nanos(t.timestamp(), t.timestamp_subsec_nanos())
}

fn range_header(r: &GetRange) -> String {
    match r {
        GetRange::Bounded(r) => format!("bytes={}-{}", r.start, r.end.saturating_sub(1)),
        GetRange::Offset(o) => format!("bytes={o}-"),
        GetRange::Suffix(n) => format!("bytes=-{n}"),
    }
}

/// `bytes a-b/size` → `a..b+1`.
fn parse_content_range(s: &str) -> Option<(Range<u64>, u64)> {
    let rest = s.strip_prefix("bytes ")?;
    let (range, size) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    Some((a..b + 1, size.parse().ok()?))
}

fn key_of(location: &Path) -> String {
    location.as_ref().to_owned()
}

fn list_prefix(prefix: Option<&Path>) -> Option<String> {
    prefix
        .map(|p| p.as_ref())
        .filter(|p| !p.is_empty())
        .map(|p| format!("{p}/"))
}

fn meta(
    key: Option<&str>,
    modified: Option<&SdkDateTime>,
    size: Option<i64>,
    e_tag: Option<&str>,
    version: Option<&str>,
) -> object_store::Result<ObjectMeta> {
    let key = key.unwrap_or_default();
    Ok(ObjectMeta {
        location: Path::parse(key)?,
        last_modified: to_chrono(modified),
        size: size.unwrap_or_default().max(0) as u64,
        e_tag: e_tag.map(str::to_owned),
        version: version.map(str::to_owned),
    })
}

impl AwsSdkStore {
    async fn head_object(
        &self,
        key: &str,
        options: &GetOptions,
    ) -> object_store::Result<(ObjectMeta, Attributes)> {
        let out = self
            .inner
            .client
            .head_object()
            .bucket(&self.inner.bucket)
            .key(key)
            .set_if_match(options.if_match.clone())
            .set_if_none_match(options.if_none_match.clone())
            .set_if_modified_since(options.if_modified_since.map(to_sdk))
            .set_if_unmodified_since(options.if_unmodified_since.map(to_sdk))
            .set_version_id(options.version.clone())
            .send()
            .await
            .map_err(|e| map_err("HeadObject", key, e))?;
        let m = meta(
            Some(key),
            out.last_modified(),
            out.content_length(),
            out.e_tag(),
            out.version_id(),
        )?;
        let mut a = Attributes::new();
        if let Some(t) = out.content_type() {
            a.insert(Attribute::ContentType, t.to_owned().into());
        }
        if let Some(t) = out.content_encoding() {
            a.insert(Attribute::ContentEncoding, t.to_owned().into());
        }
        if let Some(c) = out.storage_class() {
            a.insert(Attribute::StorageClass, c.as_str().to_owned().into());
        }
        user_metadata(out.metadata(), &mut a);
        Ok((m, a))
    }

    async fn list_page(
        &self,
        prefix: Option<String>,
        delimiter: bool,
        start_after: Option<String>,
        token: Option<String>,
    ) -> object_store::Result<aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output> {
        self.inner
            .client
            .list_objects_v2()
            .bucket(&self.inner.bucket)
            .set_prefix(prefix.clone())
            .set_delimiter(delimiter.then(|| "/".to_owned()))
            .set_start_after(start_after)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| map_err("ListObjectsV2", prefix.as_deref().unwrap_or(""), e))
    }

    fn list_from(
        &self,
        prefix: Option<&Path>,
        offset: Option<&Path>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        enum State {
            Start,
            Next(String),
            Done,
        }
        let store = self.clone();
        let prefix = list_prefix(prefix);
        let offset = offset.map(key_of);
        stream::unfold(State::Start, move |state| {
            let store = store.clone();
            let prefix = prefix.clone();
            let offset = offset.clone();
            async move {
                let token = match state {
                    State::Start => None,
                    State::Next(t) => Some(t),
                    State::Done => return None,
                };
                let page = match store.list_page(prefix, false, offset, token).await {
                    Ok(p) => p,
                    Err(e) => return Some((vec![Err(e)], State::Done)),
                };
                let items: Vec<_> = page
                    .contents()
                    .iter()
                    .map(|o| meta(o.key(), o.last_modified(), o.size(), o.e_tag(), None))
                    .collect();
                let next = match page.next_continuation_token() {
                    Some(t) if page.is_truncated() == Some(true) => State::Next(t.to_owned()),
                    _ => State::Done,
                };
                Some((items, next))
            }
        })
        .flat_map(stream::iter)
        .boxed()
    }
}

#[async_trait]
impl ObjectStore for AwsSdkStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let key = key_of(location);
        let h = headers(&opts.attributes)?;
        let tags = tagging(&self.inner.upload, &opts.tags);
        let req = self
            .inner
            .client
            .put_object()
            .bucket(&self.inner.bucket)
            .key(&key)
            .body(ByteStream::from(payload_bytes(payload)));
        let req = with_upload!(req, &self.inner.upload, h, tags);
        let create = matches!(opts.mode, PutMode::Create);
        let req = match opts.mode {
            PutMode::Overwrite => req,
            PutMode::Create => req.if_none_match("*"),
            PutMode::Update(v) => match v.e_tag {
                Some(t) => req.if_match(t),
                None => return Err(not_implemented("PutMode::Update without an ETag")),
            },
        };
        let out = req
            .send()
            .await
            .map_err(|e| match map_err("PutObject", &key, e) {
                object_store::Error::Precondition { path, source } if create => {
                    object_store::Error::AlreadyExists { path, source }
                }
                e => e,
            })?;
        Ok(PutResult {
            e_tag: out.e_tag().map(str::to_owned),
            version: out.version_id().map(str::to_owned),
            extensions: Default::default(),
        })
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let key = key_of(location);
        let h = headers(&opts.attributes)?;
        let tags = tagging(&self.inner.upload, &opts.tags);
        let req = self
            .inner
            .client
            .create_multipart_upload()
            .bucket(&self.inner.bucket)
            .key(&key);
        let req = with_upload!(req, &self.inner.upload, h, tags);
        let out = req
            .send()
            .await
            .map_err(|e| map_err("CreateMultipartUpload", &key, e))?;
        let upload_id =
            out.upload_id()
                .map(str::to_owned)
                .ok_or_else(|| object_store::Error::Generic {
                    store: STORE,
                    source: format!("CreateMultipartUpload `{key}`: no upload id in the answer")
                        .into(),
                })?;
        Ok(Box::new(AwsSdkUpload {
            store: self.clone(),
            key,
            upload_id,
            next_part: 0,
            parts: Arc::new(Mutex::new(Vec::new())),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let key = key_of(location);
        if options.head {
            let (meta, attributes) = self.head_object(&key, &options).await?;
            return Ok(GetResult {
                payload: GetResultPayload::Stream(stream::empty().boxed()),
                range: 0..meta.size,
                meta,
                attributes,
                extensions: Default::default(),
            });
        }
        let out = self
            .inner
            .client
            .get_object()
            .bucket(&self.inner.bucket)
            .key(&key)
            .set_range(options.range.as_ref().map(range_header))
            .set_if_match(options.if_match.clone())
            .set_if_none_match(options.if_none_match.clone())
            .set_if_modified_since(options.if_modified_since.map(to_sdk))
            .set_if_unmodified_since(options.if_unmodified_since.map(to_sdk))
            .set_version_id(options.version.clone())
            .send()
            .await
            .map_err(|e| map_err("GetObject", &key, e))?;
        let len = out.content_length().unwrap_or_default().max(0) as u64;
        let (range, size) = match out.content_range().and_then(parse_content_range) {
            Some((r, size)) => (r, size),
            None => (0..len, len),
        };
        let mut meta = meta(
            Some(&key),
            out.last_modified(),
            Some(size as i64),
            out.e_tag(),
            out.version_id(),
        )?;
        meta.size = size;
        let mut attributes = Attributes::new();
        if let Some(t) = out.content_type() {
            attributes.insert(Attribute::ContentType, t.to_owned().into());
        }
        if let Some(t) = out.content_encoding() {
            attributes.insert(Attribute::ContentEncoding, t.to_owned().into());
        }
        user_metadata(out.metadata(), &mut attributes);
        let body = body_stream(key, out.body);
        Ok(GetResult {
            payload: GetResultPayload::Stream(body),
            meta,
            range,
            attributes,
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let store = self.clone();
        locations
            .map(move |p| {
                let store = store.clone();
                async move {
                    let p = p?;
                    let key = key_of(&p);
                    store
                        .inner
                        .client
                        .delete_object()
                        .bucket(&store.inner.bucket)
                        .key(&key)
                        .send()
                        .await
                        .map_err(|e| map_err("DeleteObject", &key, e))?;
                    Ok(p)
                }
            })
            .buffered(8)
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.list_from(prefix, None)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.list_from(prefix, Some(offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let p = list_prefix(prefix);
        let mut out = ListResult {
            common_prefixes: Vec::new(),
            objects: Vec::new(),
            extensions: Default::default(),
        };
        let mut token = None;
        loop {
            let page = self.list_page(p.clone(), true, None, token).await?;
            for cp in page.common_prefixes() {
                if let Some(s) = cp.prefix() {
                    out.common_prefixes
                        .push(Path::parse(s.trim_end_matches('/'))?);
                }
            }
            for o in page.contents() {
                out.objects
                    .push(meta(o.key(), o.last_modified(), o.size(), o.e_tag(), None)?);
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        if matches!(options.mode, CopyMode::Create) {
            return Err(not_implemented("copy with CopyMode::Create"));
        }
        let (src, dst) = (key_of(from), key_of(to));
        let source = format!(
            "{}/{}",
            self.inner.bucket,
            percent_encoding::utf8_percent_encode(&src, COPY_SOURCE)
        );
        let u = &self.inner.upload;
        self.inner
            .client
            .copy_object()
            .bucket(&self.inner.bucket)
            .key(&dst)
            .copy_source(source)
            .set_acl(u.acl.clone())
            .set_server_side_encryption(u.sse.clone())
            .set_ssekms_key_id(u.kms_key.clone())
            .set_storage_class(u.storage_class.clone())
            .send()
            .await
            .map_err(|e| map_err("CopyObject", &src, e))?;
        Ok(())
    }
}

/// A GetObject body as object_store's stream of chunks; a failed read ends
/// the stream with a transient error naming the key.
fn body_stream(key: String, body: ByteStream) -> BoxStream<'static, object_store::Result<Bytes>> {
    stream::unfold(Some(body), move |body| {
        let key = key.clone();
        async move {
            let mut body = body?;
            match body.next().await {
                None => None,
                Some(Ok(b)) => Some((Ok(b), Some(body))),
                Some(Err(e)) => Some((
                    Err(object_store::Error::Generic {
                        store: STORE,
                        source: Box::new(AwsSdkError {
                            operation: "GetObject",
                            key,
                            status: None,
                            code: None,
                            message: e.to_string(),
                            transient: true,
                        }),
                    }),
                    None,
                )),
            }
        }
    })
    .boxed()
}

/// Characters escaped in `x-amz-copy-source`: everything but unreserved
/// characters and `/`.
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// A multipart upload in progress; parts may be sent concurrently.
struct AwsSdkUpload {
    store: AwsSdkStore,
    key: String,
    upload_id: String,
    next_part: i32,
    parts: Arc<Mutex<Vec<CompletedPart>>>,
}

impl fmt::Debug for AwsSdkUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSdkUpload")
            .field("key", &self.key)
            .field("upload_id", &self.upload_id)
            .field("next_part", &self.next_part)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl MultipartUpload for AwsSdkUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.next_part += 1;
        let number = self.next_part;
        let store = self.store.clone();
        let key = self.key.clone();
        let upload_id = self.upload_id.clone();
        let parts = Arc::clone(&self.parts);
        Box::pin(async move {
            let out = store
                .inner
                .client
                .upload_part()
                .bucket(&store.inner.bucket)
                .key(&key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(payload_bytes(data)))
                .send()
                .await
                .map_err(|e| map_err("UploadPart", &key, e))?;
            parts.lock().await.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .build(),
            );
            Ok(())
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let mut parts = self.parts.lock().await.clone();
        parts.sort_by_key(|p| p.part_number());
        if parts.len() != self.next_part as usize {
            return Err(object_store::Error::Generic {
                store: STORE,
                source: format!(
                    "CompleteMultipartUpload `{}`: {} of {} parts uploaded",
                    self.key,
                    parts.len(),
                    self.next_part
                )
                .into(),
            });
        }
        let out = self
            .store
            .inner
            .client
            .complete_multipart_upload()
            .bucket(&self.store.inner.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| map_err("CompleteMultipartUpload", &self.key, e))?;
        Ok(PutResult {
            e_tag: out.e_tag().map(str::to_owned),
            version: out.version_id().map(str::to_owned),
            extensions: Default::default(),
        })
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.store
            .inner
            .client
            .abort_multipart_upload()
            .bucket(&self.store.inner.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await
            .map_err(|e| map_err("AbortMultipartUpload", &self.key, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> UploadOptions {
        UploadOptions::default()
    }

    fn err(o: UploadOptions) -> String {
        o.validate().unwrap_err().to_string()
    }

    #[test]
    fn known_values_are_accepted() {
        let o = UploadOptions {
            acl: Some("bucket-owner-full-control".into()),
            server_side_encryption: Some("aws:kms".into()),
            sse_kms_key_id: Some("alias/sink".into()),
            storage_class: Some("STANDARD_IA".into()),
            tags: vec![("team".into(), "a b&c=d".into())],
        };
        let u = o.parse().unwrap();
        assert_eq!(u.acl, Some(ObjectCannedAcl::BucketOwnerFullControl));
        assert_eq!(u.sse, Some(ServerSideEncryption::AwsKms));
        assert_eq!(u.storage_class, Some(StorageClass::StandardIa));
        assert_eq!(tagging(&u, &TagSet::default()).unwrap(), "team=a+b%26c%3Dd");
    }

    #[test]
    fn bad_acl_is_named() {
        let e = err(UploadOptions {
            acl: Some("bucket-owner-full".into()),
            ..opts()
        });
        assert!(e.contains("invalid acl `bucket-owner-full`"), "{e}");
        assert!(e.contains("bucket-owner-full-control"), "{e}");
    }

    #[test]
    fn bad_sse_is_named() {
        for bad in ["aes256", "kms", "aws:fsx"] {
            let e = err(UploadOptions {
                server_side_encryption: Some(bad.into()),
                ..opts()
            });
            assert!(
                e.contains(&format!("invalid server_side_encryption `{bad}`")),
                "{e}"
            );
            assert!(e.contains("AES256") && e.contains("aws:kms"), "{e}");
        }
    }

    #[test]
    fn kms_key_needs_kms() {
        let e = err(UploadOptions {
            server_side_encryption: Some("AES256".into()),
            sse_kms_key_id: Some("alias/k".into()),
            ..opts()
        });
        assert!(e.contains("sse_kms_key_id `alias/k`"), "{e}");
        assert!(e.contains("aws:kms"), "{e}");
        let e = err(UploadOptions {
            sse_kms_key_id: Some("alias/k".into()),
            ..opts()
        });
        assert!(e.contains("sse_kms_key_id"), "{e}");
    }

    #[test]
    fn bad_storage_class_is_named() {
        let e = err(UploadOptions {
            storage_class: Some("standard".into()),
            ..opts()
        });
        assert!(e.contains("invalid storage_class `standard`"), "{e}");
        assert!(e.contains("STANDARD_IA"), "{e}");
    }

    #[test]
    fn bad_tags_are_named() {
        let many = (0..11).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        let e = err(UploadOptions {
            tags: many,
            ..opts()
        });
        assert!(e.contains("11 tags") && e.contains("at most 10"), "{e}");
        let e = err(UploadOptions {
            tags: vec![(String::new(), "v".into())],
            ..opts()
        });
        assert!(e.contains("tag key"), "{e}");
        let e = err(UploadOptions {
            tags: vec![("k".into(), "x".repeat(257))],
            ..opts()
        });
        assert!(e.contains("tag value") && e.contains("256"), "{e}");
        let e = err(UploadOptions {
            tags: vec![("k".into(), "1".into()), ("k".into(), "2".into())],
            ..opts()
        });
        assert!(e.contains("tag key `k`") && e.contains("once"), "{e}");
    }

    fn config() -> AwsSdkConfig {
        AwsSdkConfig {
            bucket: "b".into(),
            region: Some("us-east-1".into()),
            endpoint: Some("http://127.0.0.1:1".into()),
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("wJalrXUtnFEMI-secret".into()),
            session_token: Some("token-secret".into()),
            allow_http: true,
            ..AwsSdkConfig::default()
        }
    }

    #[test]
    fn secrets_are_not_in_debug() {
        let c = config();
        let store = c.build().unwrap();
        let d = format!("{c:?} {store:?} {store}");
        assert!(
            !d.contains("wJalrXUtnFEMI") && !d.contains("token-secret"),
            "{d}"
        );
        assert!(d.contains("AKIDEXAMPLE") && d.contains("<redacted>"), "{d}");
    }

    #[test]
    fn bad_config_is_rejected() {
        let e = AwsSdkConfig {
            bucket: String::new(),
            ..config()
        }
        .build()
        .unwrap_err();
        assert!(e.to_string().contains("bucket"), "{e}");
        let e = AwsSdkConfig {
            allow_http: false,
            ..config()
        }
        .build()
        .unwrap_err();
        assert!(
            e.to_string().contains("endpoint `http://127.0.0.1:1`"),
            "{e}"
        );
        let e = AwsSdkConfig {
            upload: UploadOptions {
                acl: Some("nope".into()),
                ..opts()
            },
            ..config()
        }
        .build()
        .unwrap_err();
        assert!(e.to_string().contains("acl `nope`"), "{e}");
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(parse_content_range("bytes 0-99/1000"), Some((0..100, 1000)));
        assert_eq!(parse_content_range("bytes */1000"), None);
        assert_eq!(range_header(&GetRange::Bounded(5..10)), "bytes=5-9");
        assert_eq!(range_header(&GetRange::Suffix(3)), "bytes=-3");
    }

    /// A connection refused is a transient `Generic` error that names the
    /// operation and key.
    #[tokio::test]
    async fn unreachable_store_is_transient() {
        let store = config().build().unwrap();
        let e = store
            .put_opts(
                &Path::from("k"),
                PutPayload::from_static(b"x"),
                PutOptions::default(),
            )
            .await
            .unwrap_err();
        let object_store::Error::Generic { source, .. } = &e else {
            panic!("{e:?}");
        };
        let s = source.downcast_ref::<AwsSdkError>().unwrap();
        assert!(s.is_transient(), "{s}");
        assert!(s.to_string().contains("PutObject `k`"), "{s}");
    }
}

/// What the S3-compatible server from `scripts/services.sh` does with each
/// upload option, read back with the SDK.
#[cfg(all(test, feature = "integration"))]
mod server_tests {
    use super::*;
    use crate::conformance_tests::aws_sdk_config;
    use object_store::ObjectStoreExt;

    fn unique(test: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("aws-sdk-{test}-{nanos:x}/obj.ndjson")
    }

    async fn put(
        upload: UploadOptions,
        test: &str,
    ) -> (AwsSdkStore, String, object_store::Result<PutResult>) {
        let store = aws_sdk_config(upload).build().unwrap();
        let key = unique(test);
        let r = store
            .put_opts(
                &Path::from(key.as_str()),
                PutPayload::from_static(b"{}\n"),
                PutOptions::default(),
            )
            .await;
        (store, key, r)
    }

    async fn tags(store: &AwsSdkStore, key: &str) -> Vec<(String, String)> {
        let t = store
            .client()
            .get_object_tagging()
            .bucket(store.bucket())
            .key(key)
            .send()
            .await
            .unwrap();
        let mut v: Vec<_> = t
            .tag_set()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect();
        v.sort();
        v
    }

    async fn head(
        store: &AwsSdkStore,
        key: &str,
    ) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
        store
            .client()
            .head_object()
            .bucket(store.bucket())
            .key(key)
            .send()
            .await
            .unwrap()
    }

    /// The grants GetObjectAcl reports, as (grantee type, id or URI, permission).
    async fn grants(store: &AwsSdkStore, key: &str) -> Vec<(String, String, String)> {
        let a = store
            .client()
            .get_object_acl()
            .bucket(store.bucket())
            .key(key)
            .send()
            .await
            .unwrap();
        a.grants()
            .iter()
            .map(|g| {
                let who = g.grantee().unwrap();
                (
                    who.r#type().as_str().to_owned(),
                    who.id().or(who.uri()).unwrap_or_default().to_owned(),
                    g.permission().unwrap().as_str().to_owned(),
                )
            })
            .collect()
    }

    /// Tags from the config and from the put's own `TagSet` are both
    /// stored, URL-encoding and all.
    #[tokio::test]
    async fn tags_are_stored() {
        let store = aws_sdk_config(UploadOptions {
            tags: vec![("team".into(), "a b&c=d/é".into())],
            ..UploadOptions::default()
        })
        .build()
        .unwrap();
        let key = unique("tags");
        let mut own = TagSet::default();
        own.push("env", "test");
        let opts = PutOptions {
            tags: own,
            ..PutOptions::default()
        };
        store
            .put_opts(
                &Path::from(key.as_str()),
                PutPayload::from_static(b"{}\n"),
                opts,
            )
            .await
            .unwrap();
        assert_eq!(
            tags(&store, &key).await,
            [
                ("env".to_owned(), "test".to_owned()),
                ("team".to_owned(), "a b&c=d/é".to_owned())
            ]
        );
    }

    /// The storage class is stored and shows in HeadObject and listings.
    #[tokio::test]
    async fn storage_class_is_stored() {
        for class in ["STANDARD_IA", "GLACIER"] {
            let (store, key, r) = put(
                UploadOptions {
                    storage_class: Some(class.into()),
                    ..UploadOptions::default()
                },
                "class",
            )
            .await;
            r.unwrap();
            let h = head(&store, &key).await;
            assert_eq!(h.storage_class().map(|c| c.as_str()), Some(class));
            let l = store
                .client()
                .list_objects_v2()
                .bucket(store.bucket())
                .prefix(&key)
                .send()
                .await
                .unwrap();
            assert_eq!(
                l.contents()[0].storage_class().map(|c| c.as_str()),
                Some(class)
            );
        }
    }

    /// SSE-S3 (`AES256`) is accepted and reported by HeadObject.
    #[tokio::test]
    async fn sse_s3_is_stored() {
        let (store, key, r) = put(
            UploadOptions {
                server_side_encryption: Some("AES256".into()),
                ..UploadOptions::default()
            },
            "sse-s3",
        )
        .await;
        r.unwrap();
        let h = head(&store, &key).await;
        assert_eq!(
            h.server_side_encryption(),
            Some(&ServerSideEncryption::Aes256)
        );
        // And the bytes read back decrypted.
        let got = store.get(&Path::from(key.as_str())).await.unwrap();
        assert_eq!(&got.bytes().await.unwrap()[..], b"{}\n");
    }

    /// SeaweedFS without a KMS answers SSE-KMS with HTTP 500 InternalError,
    /// which is retried as transient: do not configure `aws:kms` against it.
    #[tokio::test]
    async fn sse_kms_without_a_kms_is_a_server_error() {
        let (_, _, r) = put(
            UploadOptions {
                server_side_encryption: Some("aws:kms".into()),
                sse_kms_key_id: Some("alias/s3e".into()),
                ..UploadOptions::default()
            },
            "sse-kms",
        )
        .await;
        let e = r.unwrap_err();
        let object_store::Error::Generic { source, .. } = &e else {
            panic!("{e:?}");
        };
        let s = source.downcast_ref::<AwsSdkError>().unwrap();
        assert_eq!(s.status(), Some(500), "{s}");
        assert!(s.is_transient(), "{s}");
    }

    /// `bucket-owner-full-control` is accepted; GetObjectAcl shows the
    /// owner with FULL_CONTROL (the writer owns the bucket here, so that is
    /// what the canned ACL means).
    #[tokio::test]
    async fn bucket_owner_full_control_is_accepted() {
        let (store, key, r) = put(
            UploadOptions {
                acl: Some("bucket-owner-full-control".into()),
                ..UploadOptions::default()
            },
            "acl",
        )
        .await;
        r.unwrap();
        let g = grants(&store, &key).await;
        assert!(
            g.iter()
                .any(|(t, _, p)| t == "CanonicalUser" && p == "FULL_CONTROL"),
            "{g:?}"
        );
    }

    /// SeaweedFS accepts `public-read` but does not apply it: no grant to
    /// the AllUsers group appears. On AWS the grant would be there.
    #[tokio::test]
    async fn public_read_is_accepted_but_not_applied() {
        let (store, key, r) = put(
            UploadOptions {
                acl: Some("public-read".into()),
                ..UploadOptions::default()
            },
            "acl-public",
        )
        .await;
        r.unwrap();
        let g = grants(&store, &key).await;
        assert!(
            !g.iter().any(|(_, who, _)| who.contains("AllUsers")),
            "{g:?}"
        );
        assert_eq!(g.len(), 1, "{g:?}");
    }

    /// A multipart upload carries every option, like a single put.
    #[tokio::test]
    async fn multipart_carries_the_options() {
        let store = aws_sdk_config(UploadOptions {
            acl: Some("bucket-owner-full-control".into()),
            server_side_encryption: Some("AES256".into()),
            storage_class: Some("STANDARD_IA".into()),
            tags: vec![("source".into(), "multipart".into())],
            ..UploadOptions::default()
        })
        .build()
        .unwrap();
        let key = unique("multipart");
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, "application/x-ndjson".into());
        attributes.insert(Attribute::ContentEncoding, "gzip".into());
        let mut up = store
            .put_multipart_opts(
                &Path::from(key.as_str()),
                PutMultipartOptions {
                    attributes,
                    ..PutMultipartOptions::default()
                },
            )
            .await
            .unwrap();
        let part = vec![b'x'; 5 * 1024 * 1024];
        let (a, b) = (
            up.put_part(PutPayload::from(part.clone())),
            up.put_part(PutPayload::from_static(b"tail")),
        );
        a.await.unwrap();
        b.await.unwrap();
        up.complete().await.unwrap();
        let h = head(&store, &key).await;
        assert_eq!(h.content_length(), Some(5 * 1024 * 1024 + 4));
        assert_eq!(h.content_type(), Some("application/x-ndjson"));
        assert_eq!(h.content_encoding(), Some("gzip"));
        assert_eq!(h.storage_class(), Some(&StorageClass::StandardIa));
        assert_eq!(
            h.server_side_encryption(),
            Some(&ServerSideEncryption::Aes256)
        );
        assert_eq!(
            tags(&store, &key).await,
            [("source".to_owned(), "multipart".to_owned())]
        );
        // A range read through the store.
        let p = Path::from(key.as_str());
        let r = store
            .get_range(&p, 5 * 1024 * 1024..5 * 1024 * 1024 + 4)
            .await
            .unwrap();
        assert_eq!(&r[..], b"tail");
        store.delete(&p).await.unwrap();
        let e = store.head(&p).await.unwrap_err();
        assert!(matches!(e, object_store::Error::NotFound { .. }), "{e}");
    }

    /// Put-if-absent, copy, list with a delimiter, and wrong credentials.
    #[tokio::test]
    async fn object_store_operations() {
        let store = aws_sdk_config(UploadOptions::default()).build().unwrap();
        let dir = unique("ops");
        let dir = dir.trim_end_matches("/obj.ndjson");
        let a = Path::from(format!("{dir}/a/1"));
        let b = Path::from(format!("{dir}/b"));
        store
            .put(&a, PutPayload::from_static(b"one"))
            .await
            .unwrap();
        let create = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let e = store
            .put_opts(&a, PutPayload::from_static(b"two"), create)
            .await
            .unwrap_err();
        assert!(
            matches!(e, object_store::Error::AlreadyExists { .. }),
            "{e}"
        );
        store.copy(&a, &b).await.unwrap();
        assert_eq!(
            &store.get(&b).await.unwrap().bytes().await.unwrap()[..],
            b"one"
        );
        let l = store
            .list_with_delimiter(Some(&Path::from(dir)))
            .await
            .unwrap();
        assert_eq!(l.common_prefixes, [Path::from(format!("{dir}/a"))]);
        assert_eq!(l.objects.len(), 1);
        assert_eq!(l.objects[0].location, b);
        assert_eq!(l.objects[0].size, 3);
        let all: Vec<ObjectMeta> =
            futures_util::TryStreamExt::try_collect(store.list(Some(&Path::from(dir))))
                .await
                .unwrap();
        assert_eq!(all.len(), 2);

        let bad = AwsSdkConfig {
            secret_access_key: Some("wrong".into()),
            ..aws_sdk_config(UploadOptions::default())
        }
        .build()
        .unwrap();
        let e = bad.head(&a).await.unwrap_err();
        assert!(
            !matches!(e, object_store::Error::Generic { .. }),
            "a signature failure is not a transient error: {e}"
        );
    }

    /// The Sink, unchanged, writes Amberflo-style objects through this
    /// store: UUID keys under a date, gzip NDJSON, and every object carries
    /// the ACL, the tags and the content headers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sink_uploads_carry_the_options() {
        let store = aws_sdk_config(UploadOptions {
            acl: Some("bucket-owner-full-control".into()),
            server_side_encryption: Some("AES256".into()),
            tags: vec![("source".into(), "sink".into())],
            ..UploadOptions::default()
        })
        .build()
        .unwrap();
        let prefix = unique("sink").replace("/obj.ndjson", "/");
        let sink = crate::Sink::builder()
            .with_store(Arc::new(store.clone()))
            .with_prefix(prefix.clone())
            .with_key_naming(crate::KeyNaming::Uuid)
            .with_flush_size(10)
            .build()
            .unwrap();
        let events: Vec<serde_json::Value> = (0..25)
            .map(|n| serde_json::json!({ "customerId": "c", "meterValue": n }))
            .collect();
        sink.push_batch(&events).await.unwrap();
        sink.shutdown().await.unwrap();
        let objs = crate::conformance_tests::objects(&store, &prefix).await;
        assert_eq!(objs.len(), 3);
        let mut n = 0;
        for (k, b) in &objs {
            assert!(k.ends_with(".ndjson.gz"), "{k}");
            n += crate::decode(k, b).unwrap().records.len();
            let h = head(&store, k).await;
            assert_eq!(h.content_type(), Some("application/x-ndjson"), "{k}");
            assert_eq!(h.content_encoding(), Some("gzip"), "{k}");
            assert_eq!(
                h.server_side_encryption(),
                Some(&ServerSideEncryption::Aes256)
            );
            assert_eq!(
                tags(&store, k).await,
                [("source".to_owned(), "sink".to_owned())]
            );
            let g = grants(&store, k).await;
            assert!(g.iter().any(|(_, _, p)| p == "FULL_CONTROL"), "{g:?}");
        }
        assert_eq!(n, 25);
    }
}
