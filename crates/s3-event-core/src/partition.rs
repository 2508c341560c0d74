//! Partitioners: pure functions from an event and a clock value to the
//! object-key prefix the event is stored under.
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use s3_event_core::{
//!     EventRecord, Granularity, Layout, Partitioner, TemplatePartitioner, TimePartitioner,
//!     TimeSource,
//! };
//!
//! let record = EventRecord::from_slice(br#"{"eventTime":"2024-03-05T07:08:09.000Z",
//!     "s3":{"bucket":{"name":"photos"},"object":{"key":"a+b.jpg"}}}"#).unwrap();
//! let now = Utc.with_ymd_and_hms(2024, 3, 6, 12, 0, 0).unwrap();
//!
//! // The Vance S3 sink's HOURLY partitions: the clock, UTC, `YYYY/MM/DD/HH/`.
//! let hourly = TimePartitioner::new(Granularity::Hourly);
//! assert_eq!(hourly.partition(&record, now).unwrap().as_str(), "2024/03/06/12/");
//!
//! // Hive layout by the event's own time.
//! let hive = TimePartitioner::new("daily".parse().unwrap())
//!     .with_layout(Layout::Hive)
//!     .with_time_source(TimeSource::Event { fallback_to_processing: false });
//! assert_eq!(hive.partition(&record, now).unwrap().as_str(), "year=2024/month=03/day=05/");
//!
//! // strftime plus fields from the event.
//! let template = TemplatePartitioner::new("{bucket}/%Y/%m/").unwrap();
//! assert_eq!(template.partition(&record, now).unwrap().as_str(), "photos/2024/03/");
//!
//! // Amberflo's `ingest/<source>/<MM-DD-YYYY>/`.
//! let amberflo = TemplatePartitioner::new("ingest/amberdata/%m-%d-%Y/").unwrap();
//! assert_eq!(amberflo.partition(&record, now).unwrap().as_str(), "ingest/amberdata/03-06-2024/");
//! ```
//!
//! A [`Partitioner`] never does I/O and never reads the clock itself: the
//! caller passes `now`, so the same inputs always give the same key. Events
//! reach it as [`&dyn PartitionEvent`](PartitionEvent), which this module
//! implements for [`EventRecord`], [`serde_json::Value`] and
//! [`cloudevents::Event`]; implement it for your own types to partition them.

use std::borrow::{Borrow, Cow};
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::sync::Arc;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Datelike, FixedOffset, TimeZone, Timelike, Utc};

use crate::{Error, EventRecord, Result};

// ---------------------------------------------------------------------------
// PartitionEvent
// ---------------------------------------------------------------------------

/// What a [`Partitioner`] may ask of an event: its time and named fields.
///
/// Implemented for [`EventRecord`], [`serde_json::Value`] and
/// [`cloudevents::Event`]. For your own types, implement the two required
/// methods; both are cheap lookups, called once or a few times per event:
///
/// ```
/// use std::borrow::Cow;
/// use chrono::{DateTime, TimeZone, Utc};
/// use s3_event_core::{PartitionEvent, Partitioner, TemplatePartitioner};
///
/// struct Meter { customer: String, time_millis: i64 }
///
/// impl PartitionEvent for Meter {
///     fn event_time(&self) -> Option<DateTime<Utc>> {
///         Utc.timestamp_millis_opt(self.time_millis).single()
///     }
///     fn field(&self, name: &str) -> Option<Cow<'_, str>> {
///         match name {
///             "customerId" => Some(Cow::Borrowed(&self.customer)),
///             _ => None,
///         }
///     }
///     fn event_time_name(&self) -> &str {
///         "`meterTimeInMillis`"
///     }
/// }
///
/// let p = TemplatePartitioner::new("{customerId}/%Y/").unwrap();
/// let m = Meter { customer: "customer-123".into(), time_millis: 1619445706909 };
/// assert_eq!(p.partition(&m, Utc::now()).unwrap().as_str().split('/').next(), Some("customer-123"));
/// ```
pub trait PartitionEvent {
    /// The time the event happened, if it carries one that parses.
    fn event_time(&self) -> Option<DateTime<Utc>>;

    /// The value of a named field as text, or `None` when the event has no
    /// such field (or it has no text form, such as an object or `null`).
    ///
    /// Values are returned as they are; partitioners sanitize them.
    fn field(&self, name: &str) -> Option<Cow<'_, str>>;

    /// How error messages name the event time when it is missing, e.g.
    /// ``"`eventTime`"``. Defaults to `"event time"`.
    fn event_time_name(&self) -> &str {
        "event time"
    }
}

impl<T: PartitionEvent + ?Sized> PartitionEvent for &T {
    fn event_time(&self) -> Option<DateTime<Utc>> {
        (**self).event_time()
    }
    fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        (**self).field(name)
    }
    fn event_time_name(&self) -> &str {
        (**self).event_time_name()
    }
}

fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The text form of a JSON scalar: strings as they are, numbers and booleans
/// printed; `null`, arrays and objects have none.
fn json_text(v: &serde_json::Value) -> Option<Cow<'_, str>> {
    match v {
        serde_json::Value::String(s) => Some(Cow::Borrowed(s)),
        serde_json::Value::Number(n) => Some(Cow::Owned(n.to_string())),
        serde_json::Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

/// Looks `name` up in `v`: first as a key of `v` itself, then as a dotted
/// path (`a.b.0.c`, numbers index arrays).
fn json_lookup<'a>(v: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    if let Some(found) = v.get(name) {
        return Some(found);
    }
    if !name.contains('.') {
        return None;
    }
    name.split('.').try_fold(v, |v, part| match v {
        serde_json::Value::Object(m) => m.get(part),
        serde_json::Value::Array(a) => a.get(part.parse::<usize>().ok()?),
        _ => None,
    })
}

/// Event time: `eventTime` parsed as RFC 3339.
///
/// Fields:
///
/// | name | value |
/// |------|-------|
/// | `bucket` | `s3.bucket.name` |
/// | `key` | `s3.object.key` URL-decoded (as sent when it does not decode) |
/// | `eventName`, `eventSource`, `awsRegion`, `eventTime`, `eventVersion` | as sent |
/// | `size`, `eTag`, `versionId`, `contentType` | of `s3.object` |
/// | anything else | a dotted path into the record's JSON, e.g. `s3.object.userMetadata.X-Amz-Meta-Team` or `userIdentity.principalId` |
///
/// The names in the table are direct lookups; other paths serialize the record
/// first, so prefer the table's names in hot templates.
impl PartitionEvent for EventRecord {
    fn event_time(&self) -> Option<DateTime<Utc>> {
        parse_rfc3339(self.event_time.as_deref()?)
    }

    fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        fn borrowed(s: Option<&String>) -> Option<Cow<'_, str>> {
            s.map(|s| Cow::Borrowed(s.as_str()))
        }
        let object = self.s3.as_ref().and_then(|s3| s3.object.as_ref());
        match name {
            "bucket" => self.bucket_name().map(Cow::Borrowed),
            "key" => {
                let raw = self.key()?;
                Some(match crate::decode_key(raw) {
                    Ok(decoded) if decoded == raw => Cow::Borrowed(raw),
                    Ok(decoded) => Cow::Owned(decoded),
                    Err(_) => Cow::Borrowed(raw),
                })
            }
            "eventName" => borrowed(self.event_name.as_ref()),
            "eventSource" => borrowed(self.event_source.as_ref()),
            "awsRegion" => borrowed(self.aws_region.as_ref()),
            "eventTime" => borrowed(self.event_time.as_ref()),
            "eventVersion" => borrowed(self.event_version.as_ref()),
            "size" => self.size().map(|s| Cow::Owned(s.to_string())),
            "eTag" => borrowed(object?.e_tag.as_ref()),
            "versionId" => borrowed(object?.version_id.as_ref()),
            "contentType" => borrowed(object?.content_type.as_ref()),
            "s3.bucket.name" => self.bucket_name().map(Cow::Borrowed),
            "s3.object.key" => self.key().map(Cow::Borrowed),
            _ => {
                // Rare paths: look them up in the record's JSON form.
                let json = serde_json::to_value(self).ok()?;
                json_lookup(&json, name)
                    .and_then(json_text)
                    .map(|c| Cow::Owned(c.into_owned()))
            }
        }
    }

    fn event_time_name(&self) -> &str {
        "`eventTime`"
    }
}

/// Event time: the `time` member (CloudEvents) or else `eventTime` (S3
/// records), parsed as RFC 3339.
///
/// Fields: a member of the object by its exact name, else a dotted path
/// (`data.customerId`, `Records.0.s3.bucket.name`; numbers index arrays).
/// Strings give their text, numbers and booleans are printed; `null`, arrays
/// and objects count as missing.
impl PartitionEvent for serde_json::Value {
    fn event_time(&self) -> Option<DateTime<Utc>> {
        let text = |k| self.get(k).and_then(serde_json::Value::as_str);
        parse_rfc3339(text("time").or_else(|| text("eventTime"))?)
    }

    fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        json_lookup(self, name).and_then(json_text)
    }

    fn event_time_name(&self) -> &str {
        "`time` or `eventTime`"
    }
}

/// Pre-serialized JSON, such as a record the sink should store byte for
/// byte: the same time and fields as [`serde_json::Value`], found by parsing
/// the text on each call. Processing-time partitioners never ask, so pushing
/// raw records costs nothing there; event-time and field templates pay one
/// parse per lookup.
impl PartitionEvent for serde_json::value::RawValue {
    fn event_time(&self) -> Option<DateTime<Utc>> {
        serde_json::from_str::<serde_json::Value>(self.get())
            .ok()?
            .event_time()
    }

    fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        let v = serde_json::from_str::<serde_json::Value>(self.get()).ok()?;
        json_lookup(&v, name)
            .and_then(json_text)
            .map(|t| Cow::Owned(t.into_owned()))
    }

    fn event_time_name(&self) -> &str {
        "`time` or `eventTime`"
    }
}

/// Event time: the `time` attribute.
///
/// Fields: the attributes `id`, `source`, `type`, `specversion`, `subject`,
/// `datacontenttype`, `dataschema`, `time` (RFC 3339); any extension by name;
/// `data` when the data is a string; `data.<dotted path>` into JSON data.
impl PartitionEvent for cloudevents::Event {
    fn event_time(&self) -> Option<DateTime<Utc>> {
        use cloudevents::AttributesReader;
        self.time().copied()
    }

    fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        use cloudevents::event::ExtensionValue;
        use cloudevents::{AttributesReader, Data};
        match name {
            "id" => Some(Cow::Borrowed(self.id())),
            "source" => Some(Cow::Borrowed(self.source().as_str())),
            "type" => Some(Cow::Borrowed(self.ty())),
            "specversion" => Some(Cow::Owned(self.specversion().to_string())),
            "subject" => self.subject().map(Cow::Borrowed),
            "datacontenttype" => self.datacontenttype().map(Cow::Borrowed),
            "dataschema" => self.dataschema().map(|u| Cow::Borrowed(u.as_str())),
            "time" => self.time().map(|t| Cow::Owned(t.to_rfc3339())),
            "data" => match self.data()? {
                Data::String(s) => Some(Cow::Borrowed(s)),
                Data::Json(v) => json_text(v),
                Data::Binary(_) => None,
            },
            _ => {
                if let Some(path) = name.strip_prefix("data.") {
                    if let Some(Data::Json(v)) = self.data() {
                        if let Some(found) = json_lookup(v, path).and_then(json_text) {
                            return Some(found);
                        }
                    }
                }
                match self.extension(name)? {
                    ExtensionValue::String(s) => Some(Cow::Borrowed(s)),
                    other => Some(Cow::Owned(other.to_string())),
                }
            }
        }
    }

    fn event_time_name(&self) -> &str {
        "`time`"
    }
}

// ---------------------------------------------------------------------------
// PartitionKey and Partitioner
// ---------------------------------------------------------------------------

/// An object-key prefix chosen by a [`Partitioner`]: empty, or a relative
/// path ending in `/`.
///
/// Every `PartitionKey` is safe to put in front of an object name: it does
/// not start with `/`, has no empty, `.` or `..` segments and no control
/// characters, so it is also a valid `object_store` path prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey(String);

impl PartitionKey {
    /// A key from a prefix, adding the trailing `/` when it is missing.
    ///
    /// Fails (naming the prefix and the rule) when the prefix starts with
    /// `/`, has an empty, `.` or `..` segment, or contains a control
    /// character.
    pub fn new(prefix: impl Into<String>) -> Result<Self> {
        let mut s = prefix.into();
        if !s.is_empty() && !s.ends_with('/') {
            s.push('/');
        }
        check_prefix(&s).map_err(|rule| Error::Partition {
            message: format!("partition key `{}` {rule}", s.escape_debug()),
        })?;
        Ok(PartitionKey(s))
    }

    /// The empty key: no partitioning.
    pub fn empty() -> Self {
        PartitionKey(String::new())
    }

    /// The prefix as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }

    /// Whether this is the empty key.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Checks the [`PartitionKey`] invariant; the error says which rule broke.
fn check_prefix(s: &str) -> std::result::Result<(), &'static str> {
    if s.is_empty() {
        return Ok(());
    }
    if s.starts_with('/') {
        return Err("starts with `/`");
    }
    if !s.ends_with('/') {
        return Err("does not end with `/`");
    }
    if s.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    for segment in s[..s.len() - 1].split('/') {
        match segment {
            "" => return Err("has an empty segment (`//`)"),
            "." | ".." => return Err("has a `.` or `..` segment"),
            _ => {}
        }
    }
    Ok(())
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for PartitionKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for PartitionKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<PartitionKey> for String {
    fn from(k: PartitionKey) -> String {
        k.0
    }
}

/// Maps an event and a clock value to the object-key prefix it is stored
/// under (vector's `Partitioner`, made object safe).
///
/// # Contract
///
/// - Pure and synchronous: no I/O, no clock reads (use `now`), no interior
///   state that changes the answer; the same event and `now` give the same
///   key, on any thread.
/// - Cheap: called once per event on the ingest path.
/// - The key is a [`PartitionKey`], so it is a safe relative prefix; values
///   taken from events are sanitized before they reach it.
/// - An `Err` means this event cannot be placed (e.g. it lacks a field the
///   partitioner needs); the caller rejects or dead-letters that event only.
pub trait Partitioner: Send + Sync + fmt::Debug {
    /// The prefix for `event`, given the current time `now`.
    fn partition(&self, event: &dyn PartitionEvent, now: DateTime<Utc>) -> Result<PartitionKey>;
}

impl<P: Partitioner + ?Sized> Partitioner for Box<P> {
    fn partition(&self, event: &dyn PartitionEvent, now: DateTime<Utc>) -> Result<PartitionKey> {
        (**self).partition(event, now)
    }
}

impl<P: Partitioner + ?Sized> Partitioner for Arc<P> {
    fn partition(&self, event: &dyn PartitionEvent, now: DateTime<Utc>) -> Result<PartitionKey> {
        (**self).partition(event, now)
    }
}

// ---------------------------------------------------------------------------
// Time partitioning options
// ---------------------------------------------------------------------------

/// How wide a time partition is: the seed's `timeInterval`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One partition per hour: `YYYY/MM/DD/HH/`.
    #[default]
    Hourly,
    /// One partition per day: `YYYY/MM/DD/`.
    Daily,
}

impl Granularity {
    /// `"HOURLY"` or `"DAILY"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hourly => "HOURLY",
            Granularity::Daily => "DAILY",
        }
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses `HOURLY` or `DAILY`, in any case; the error names the value.
impl FromStr for Granularity {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("HOURLY") {
            Ok(Granularity::Hourly)
        } else if s.eq_ignore_ascii_case("DAILY") {
            Ok(Granularity::Daily)
        } else {
            Err(Error::Partition {
                message: format!(
                    "unknown time granularity `{}`: expected `HOURLY` or `DAILY`",
                    s.escape_debug()
                ),
            })
        }
    }
}

impl serde::Serialize for Granularity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Deserializes from a string, as [`FromStr`] parses it.
impl<'de> serde::Deserialize<'de> for Granularity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Which time places an event in a partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TimeSource {
    /// The `now` passed to [`Partitioner::partition`] (what the Vance S3 sink
    /// does: "files uploaded between 3 pm and 4 pm will be partitioned to
    /// one path").
    #[default]
    Processing,
    /// The event's own time ([`PartitionEvent::event_time`]), so a late event
    /// goes to its own, past, partition.
    Event {
        /// When the event has no parsable time: `true` uses `now`, `false`
        /// fails with an error naming the missing time field.
        fallback_to_processing: bool,
    },
}

impl TimeSource {
    fn resolve(self, event: &dyn PartitionEvent, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
        match self {
            TimeSource::Processing => Ok(now),
            TimeSource::Event {
                fallback_to_processing,
            } => match event.event_time() {
                Some(t) => Ok(t),
                None if fallback_to_processing => Ok(now),
                None => Err(Error::Partition {
                    message: format!(
                        "the event has no parsable {} (RFC 3339) and the partitioner uses \
                         event time without fallback to processing time",
                        event.event_time_name()
                    ),
                }),
            },
        }
    }
}

/// How a [`TimePartitioner`] spells a partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `YYYY/MM/DD/HH/` (hourly) or `YYYY/MM/DD/` (daily), zero-padded: the
    /// layout the Vance S3 sink writes.
    #[default]
    Plain,
    /// Hive partitions: `year=YYYY/month=MM/day=DD/hour=HH/` (hourly) or
    /// `year=YYYY/month=MM/day=DD/` (daily), zero-padded, as Athena, Spark
    /// and Trino discover them.
    Hive,
}

fn utc_offset() -> FixedOffset {
    FixedOffset::east_opt(0).expect("zero is a valid offset")
}

// ---------------------------------------------------------------------------
// TimePartitioner
// ---------------------------------------------------------------------------

/// Partitions by time: HOURLY or DAILY, by processing or event time, in the
/// plain or the Hive layout, in UTC or at a fixed offset.
///
/// The default (hourly, processing time, plain layout, UTC) is what the Vance
/// S3 sink does with `"timeInterval": "HOURLY"`.
///
/// ```
/// use chrono::{FixedOffset, TimeZone, Utc};
/// use s3_event_core::{Granularity, Layout, Partitioner, TimePartitioner};
///
/// let p = TimePartitioner::new(Granularity::Hourly)
///     .with_layout(Layout::Hive)
///     .with_offset(FixedOffset::east_opt(2 * 3600).unwrap());
/// let now = Utc.with_ymd_and_hms(2024, 12, 31, 23, 30, 0).unwrap();
/// let key = p.partition(&serde_json::json!({}), now).unwrap();
/// assert_eq!(key.as_str(), "year=2025/month=01/day=01/hour=01/");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimePartitioner {
    granularity: Granularity,
    time_source: TimeSource,
    layout: Layout,
    offset: FixedOffset,
}

impl Default for TimePartitioner {
    fn default() -> Self {
        TimePartitioner::new(Granularity::Hourly)
    }
}

impl TimePartitioner {
    /// A partitioner of the given granularity, by processing time, in the
    /// plain layout, in UTC.
    pub fn new(granularity: Granularity) -> Self {
        TimePartitioner {
            granularity,
            time_source: TimeSource::Processing,
            layout: Layout::Plain,
            offset: utc_offset(),
        }
    }

    /// Which time places an event (default: processing time).
    pub fn with_time_source(mut self, time_source: TimeSource) -> Self {
        self.time_source = time_source;
        self
    }

    /// How partitions are spelled (default: [`Layout::Plain`]).
    pub fn with_layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// The offset at which days and hours begin (default: UTC).
    pub fn with_offset(mut self, offset: FixedOffset) -> Self {
        self.offset = offset;
        self
    }

    /// The granularity.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// The time source.
    pub fn time_source(&self) -> TimeSource {
        self.time_source
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The offset.
    pub fn offset(&self) -> FixedOffset {
        self.offset
    }
}

impl Partitioner for TimePartitioner {
    fn partition(&self, event: &dyn PartitionEvent, now: DateTime<Utc>) -> Result<PartitionKey> {
        let t = self
            .time_source
            .resolve(event, now)?
            .with_timezone(&self.offset);
        let (y, m, d, h) = (t.year(), t.month(), t.day(), t.hour());
        let mut s = String::with_capacity(40);
        // Writing to a String cannot fail.
        let _ = match (self.layout, self.granularity) {
            (Layout::Plain, Granularity::Hourly) => write!(s, "{y:04}/{m:02}/{d:02}/{h:02}/"),
            (Layout::Plain, Granularity::Daily) => write!(s, "{y:04}/{m:02}/{d:02}/"),
            (Layout::Hive, Granularity::Hourly) => {
                write!(s, "year={y:04}/month={m:02}/day={d:02}/hour={h:02}/")
            }
            (Layout::Hive, Granularity::Daily) => write!(s, "year={y:04}/month={m:02}/day={d:02}/"),
        };
        Ok(PartitionKey(s))
    }
}

// ---------------------------------------------------------------------------
// TemplatePartitioner
// ---------------------------------------------------------------------------

/// One pre-parsed piece of a template.
#[derive(Clone, Debug)]
enum Segment {
    /// Text copied as is.
    Literal(String),
    /// strftime items, formatted with the event's (or processing) time.
    Time(Vec<Item<'static>>),
    /// `{name}`: a field of the event, sanitized; `default` is pre-sanitized.
    Field {
        name: String,
        default: Option<String>,
    },
}

/// Partitions by a template of strftime specifiers and `{field}`
/// placeholders, e.g. `ingest/amberdata/%m-%d-%Y/` or `{bucket}/%Y/%m/`.
///
/// # Template syntax
///
/// - `%…`: a chrono strftime specifier (`%Y`, `%m`, `%d`, `%H`, `%j`, …;
///   `%%` is a literal `%`), formatted with the [`TimeSource`]'s time at the
///   configured offset.
/// - `{name}`: the event's field `name` ([`PartitionEvent::field`]; for
///   records e.g. `bucket`, `key`, `eventName`, or a dotted path). `{{` and
///   `}}` are literal braces.
/// - Anything else is copied. A `/` is added at the end when missing; the
///   empty template gives the empty key.
///
/// The template is parsed once, by [`build`](TemplatePartitionerBuilder::build):
/// an invalid strftime specifier, an unclosed `{`, a stray `}`, an empty `{}`,
/// a leading `/`, an empty segment (`//`) or a `.`/`..` segment is an error
/// naming the template and the byte offset. Rendering walks the pre-split
/// segments; the time is only looked up when the template has specifiers.
///
/// # Missing fields
///
/// A field the event does not have, or whose value is empty, takes the
/// default given with [`with_default`](TemplatePartitionerBuilder::with_default)
/// or else [`with_missing_default`](TemplatePartitionerBuilder::with_missing_default);
/// without one, partitioning that event fails with an error naming the field.
///
/// # Sanitizing
///
/// A field value (or default) becomes part of one path segment and can never
/// add segments or climb out of the prefix:
///
/// - `/`, `\` and control characters are each replaced with `_`;
/// - a value made only of dots (`.`, `..`, …) has each dot replaced with `_`.
///
/// So `../../etc` renders as `.._.._etc`, `/abs` as `_abs`, `..` as `__`.
/// Literal text of the template is trusted (checked once, as above).
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use s3_event_core::{Partitioner, TemplatePartitioner};
///
/// let p = TemplatePartitioner::builder("{tenant}/{region}/%Y%m%d")
///     .with_default("region", "global")
///     .build()
///     .unwrap();
/// let now = Utc.with_ymd_and_hms(2022, 6, 7, 0, 0, 0).unwrap();
/// let event = serde_json::json!({"tenant": "../acme"});
/// assert_eq!(p.partition(&event, now).unwrap().as_str(), ".._acme/global/20220607/");
/// ```
#[derive(Clone)]
pub struct TemplatePartitioner {
    template: String,
    segments: Vec<Segment>,
    needs_time: bool,
    time_source: TimeSource,
    offset: FixedOffset,
    missing_default: Option<String>,
    capacity: usize,
}

impl fmt::Debug for TemplatePartitioner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let defaults: BTreeMap<&str, &str> = self
            .segments
            .iter()
            .filter_map(|s| match s {
                Segment::Field {
                    name,
                    default: Some(d),
                } => Some((name.as_str(), d.as_str())),
                _ => None,
            })
            .collect();
        f.debug_struct("TemplatePartitioner")
            .field("template", &self.template)
            .field("time_source", &self.time_source)
            .field("offset", &self.offset)
            .field("defaults", &defaults)
            .field("missing_default", &self.missing_default)
            .finish()
    }
}

impl TemplatePartitioner {
    /// Parses `template` with the default options (processing time, UTC, no
    /// defaults for missing fields).
    pub fn new(template: impl Into<String>) -> Result<Self> {
        Self::builder(template).build()
    }

    /// A builder for a partitioner of `template`, to set options before the
    /// template is parsed.
    pub fn builder(template: impl Into<String>) -> TemplatePartitionerBuilder {
        TemplatePartitionerBuilder {
            template: template.into(),
            time_source: TimeSource::Processing,
            offset: utc_offset(),
            defaults: BTreeMap::new(),
            missing_default: None,
        }
    }

    /// The template as given.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The field names the template uses, in order of appearance (repeats
    /// included).
    pub fn fields(&self) -> impl Iterator<Item = &str> + '_ {
        self.segments.iter().filter_map(|s| match s {
            Segment::Field { name, .. } => Some(name.as_str()),
            _ => None,
        })
    }

    /// The time source.
    pub fn time_source(&self) -> TimeSource {
        self.time_source
    }

    fn render(&self, event: &dyn PartitionEvent, now: DateTime<Utc>) -> Result<String> {
        let time = if self.needs_time {
            Some(
                self.time_source
                    .resolve(event, now)?
                    .with_timezone(&self.offset),
            )
        } else {
            None
        };
        let mut out = String::with_capacity(self.capacity);
        for segment in &self.segments {
            match segment {
                Segment::Literal(s) => out.push_str(s),
                Segment::Time(items) => {
                    let Some(t) = &time else { continue };
                    write!(out, "{}", t.format_with_items(items.iter())).map_err(|_| {
                        Error::Partition {
                            message: format!(
                                "template `{}`: cannot format time {t}",
                                self.template
                            ),
                        }
                    })?;
                }
                Segment::Field { name, default } => match event.field(name) {
                    Some(v) if !v.is_empty() => push_sanitized(&mut out, &v),
                    _ => match default.as_ref().or(self.missing_default.as_ref()) {
                        Some(d) => out.push_str(d),
                        None => {
                            return Err(Error::Partition {
                                message: format!(
                                    "template `{}`: the event has no field `{name}` (or it is \
                                     empty) and no default is configured for it",
                                    self.template
                                ),
                            })
                        }
                    },
                },
            }
        }
        Ok(out)
    }
}

impl Partitioner for TemplatePartitioner {
    fn partition(&self, event: &dyn PartitionEvent, now: DateTime<Utc>) -> Result<PartitionKey> {
        self.render(event, now).map(PartitionKey)
    }
}

/// Builds a [`TemplatePartitioner`]; from [`TemplatePartitioner::builder`].
#[derive(Clone, Debug)]
pub struct TemplatePartitionerBuilder {
    template: String,
    time_source: TimeSource,
    offset: FixedOffset,
    defaults: BTreeMap<String, String>,
    missing_default: Option<String>,
}

impl TemplatePartitionerBuilder {
    /// Which time fills strftime specifiers (default: processing time).
    pub fn with_time_source(mut self, time_source: TimeSource) -> Self {
        self.time_source = time_source;
        self
    }

    /// The offset at which strftime specifiers are formatted (default: UTC).
    pub fn with_offset(mut self, offset: FixedOffset) -> Self {
        self.offset = offset;
        self
    }

    /// The value used for `{field}` when an event lacks it (or it is empty).
    /// Sanitized like event values; it must not be empty and `field` must
    /// appear in the template.
    pub fn with_default(mut self, field: impl Into<String>, value: impl Into<String>) -> Self {
        self.defaults.insert(field.into(), value.into());
        self
    }

    /// The value used for any field that an event lacks and that has no
    /// [`with_default`](Self::with_default). Sanitized; must not be empty.
    pub fn with_missing_default(mut self, value: impl Into<String>) -> Self {
        self.missing_default = Some(value.into());
        self
    }

    /// Parses the template; the error names the template, and the byte offset
    /// for syntax errors.
    pub fn build(self) -> Result<TemplatePartitioner> {
        let TemplatePartitionerBuilder {
            template,
            time_source,
            offset,
            defaults,
            missing_default,
        } = self;
        let shown = template.escape_debug().to_string();
        let err = |message: String| Error::Partition {
            message: format!("template `{shown}`: {message}"),
        };

        let mut segments = parse_template(&template).map_err(err)?;
        if !template.is_empty() && !template.ends_with('/') {
            push_literal(&mut segments, "/");
        }

        let sanitize_default = |what: String, value: &str| {
            if value.is_empty() {
                return Err(err(format!("{what} must not be empty")));
            }
            let mut s = String::with_capacity(value.len());
            push_sanitized(&mut s, value);
            Ok(s)
        };
        for (field, value) in &defaults {
            let value = sanitize_default(format!("the default for `{field}`"), value)?;
            let mut used = false;
            for segment in &mut segments {
                if let Segment::Field { name, default } = segment {
                    if name == field {
                        *default = Some(value.clone());
                        used = true;
                    }
                }
            }
            if !used {
                return Err(err(format!(
                    "a default is given for field `{field}`, which the template does not use"
                )));
            }
        }
        let missing_default = missing_default
            .map(|v| sanitize_default("the default for missing fields".into(), &v))
            .transpose()?;

        let needs_time = segments.iter().any(|s| matches!(s, Segment::Time(_)));
        let mut p = TemplatePartitioner {
            template,
            segments,
            needs_time,
            time_source,
            offset,
            missing_default,
            capacity: 0,
        };

        // Catch-all: render once with stand-in values (specifiers such as
        // `%n` or `%t` would put control characters in keys).
        let sample_time = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
        let sample = SampleEvent(sample_time);
        let rendered = p.render(&sample, sample_time)?;
        check_prefix(&rendered).map_err(|rule| {
            err(format!(
                "renders keys such as `{}`, which {rule}",
                rendered.escape_debug()
            ))
        })?;
        p.capacity = rendered.len() + 16;
        Ok(p)
    }
}

/// Stands in for events when a template is checked at construction.
struct SampleEvent(DateTime<Utc>);

impl PartitionEvent for SampleEvent {
    fn event_time(&self) -> Option<DateTime<Utc>> {
        Some(self.0)
    }
    fn field(&self, _: &str) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed("x"))
    }
}

/// Appends `value` so that it stays inside one path segment (see
/// [`TemplatePartitioner`], "Sanitizing").
fn push_sanitized(out: &mut String, value: &str) {
    if value.bytes().all(|b| b == b'.') {
        out.extend(std::iter::repeat_n('_', value.len()));
        return;
    }
    let bad = |c: char| c == '/' || c == '\\' || c.is_control();
    if !value.contains(bad) {
        out.push_str(value);
        return;
    }
    out.extend(value.chars().map(|c| if bad(c) { '_' } else { c }));
}

fn push_literal(segments: &mut Vec<Segment>, text: &str) {
    if let Some(Segment::Literal(last)) = segments.last_mut() {
        last.push_str(text);
    } else {
        segments.push(Segment::Literal(text.to_owned()));
    }
}

/// Splits a template into segments; errors name the byte offset.
fn parse_template(template: &str) -> std::result::Result<Vec<Segment>, String> {
    let bytes = template.as_bytes();
    let mut segments = Vec::new();
    // Byte copy of the template with placeholders blanked out, for the
    // path-segment checks.
    let mut shape = bytes.to_vec();
    let mut chunk_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => {
                push_chunk(&mut segments, template, chunk_start, i)?;
                push_literal(&mut segments, "{");
                i += 2;
                chunk_start = i;
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => {
                push_chunk(&mut segments, template, chunk_start, i)?;
                push_literal(&mut segments, "}");
                i += 2;
                chunk_start = i;
            }
            b'{' => {
                let close = match bytes[i + 1..].iter().position(|&b| b == b'{' || b == b'}') {
                    Some(n) if bytes[i + 1 + n] == b'}' => i + 1 + n,
                    _ => {
                        return Err(format!(
                            "unclosed `{{` at offset {i} (write `{{{{` for a literal brace)"
                        ))
                    }
                };
                let name = &template[i + 1..close];
                if name.is_empty() {
                    return Err(format!("empty field name `{{}}` at offset {i}"));
                }
                push_chunk(&mut segments, template, chunk_start, i)?;
                segments.push(Segment::Field {
                    name: name.to_owned(),
                    default: None,
                });
                shape[i..=close].fill(b'x');
                i = close + 1;
                chunk_start = i;
            }
            b'}' => {
                return Err(format!(
                    "unmatched `}}` at offset {i} (write `}}}}` for a literal brace)"
                ))
            }
            _ => i += 1,
        }
    }
    push_chunk(&mut segments, template, chunk_start, bytes.len())?;

    // Path-segment checks on the template's own text.
    if shape.first() == Some(&b'/') {
        return Err("starts with `/` at offset 0 (keys are relative)".into());
    }
    let mut start = 0;
    for (n, part) in shape.split(|&b| b == b'/').enumerate() {
        let is_last = start + part.len() == shape.len();
        match part {
            b"" if !is_last && n > 0 => {
                return Err(format!("empty path segment (`//`) at offset {}", start - 1))
            }
            b"." | b".." => {
                return Err(format!(
                    "`{}` path segment at offset {start}",
                    std::str::from_utf8(part).unwrap_or("..")
                ))
            }
            _ => {}
        }
        start += part.len() + 1;
    }
    Ok(segments)
}

/// Adds the text `template[start..end]`: a literal, or strftime items when it
/// has a `%`.
fn push_chunk(
    segments: &mut Vec<Segment>,
    template: &str,
    start: usize,
    end: usize,
) -> std::result::Result<(), String> {
    let chunk = &template[start..end];
    if chunk.is_empty() {
        return Ok(());
    }
    if !chunk.contains('%') {
        push_literal(segments, chunk);
        return Ok(());
    }
    match StrftimeItems::new(chunk).parse_to_owned() {
        Ok(items) => {
            segments.push(Segment::Time(items));
            Ok(())
        }
        Err(_) => Err(bad_specifier(chunk, start)),
    }
}

/// Finds the first invalid specifier of a chunk that failed to parse.
fn bad_specifier(chunk: &str, base: usize) -> String {
    let bytes = chunk.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        if bytes.get(i + 1) == Some(&b'%') {
            i += 2;
            continue;
        }
        // The specifier and the text up to the next `%`.
        let end = bytes[i + 1..]
            .iter()
            .position(|&b| b == b'%')
            .map_or(bytes.len(), |n| i + 1 + n);
        if StrftimeItems::new(&chunk[i..end]).parse().is_err() {
            let spec: String = chunk[i..end].chars().take(4).collect();
            return format!(
                "invalid strftime specifier at offset {} (`{}…`)",
                base + i,
                spec.escape_debug()
            );
        }
        i = end;
    }
    format!("invalid strftime text at offset {base}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn record(v: serde_json::Value) -> EventRecord {
        serde_json::from_value(v).unwrap()
    }

    fn photo(event_time: &str) -> EventRecord {
        record(json!({
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-west-2",
            "eventTime": event_time,
            "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "AIDAJDPLRKLG7UEXAMPLE"},
            "s3": {
                "bucket": {"name": "photos"},
                "object": {"key": "summer/red+flower.jpg", "size": 1024,
                           "userMetadata": {"X-Amz-Meta-Team": "blue"}}
            }
        }))
    }

    fn msg(e: Error) -> String {
        e.to_string()
    }

    const EVENT: TimeSource = TimeSource::Event {
        fallback_to_processing: false,
    };
    const EVENT_OR_NOW: TimeSource = TimeSource::Event {
        fallback_to_processing: true,
    };

    #[test]
    fn raw_json_partitions_like_its_value() {
        let text = r#"{"time":"2024-03-05T07:59:59Z","tenant":"acme","n":{"id":7},"x":null}"#;
        let raw = serde_json::value::RawValue::from_string(text.to_owned()).unwrap();
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        let now = at(2030, 1, 1, 0, 0);
        let p = TemplatePartitioner::builder("{tenant}/{n.id}/%Y/%m/%d/%H/")
            .with_time_source(EVENT)
            .build()
            .unwrap();
        let from_raw = p.partition(&&*raw, now).unwrap();
        assert_eq!(from_raw.as_str(), "acme/7/2024/03/05/07/");
        assert_eq!(from_raw, p.partition(&value, now).unwrap());
        assert_eq!(raw.field("x"), None);
        assert_eq!(raw.field("missing"), None);
        // Without a time, the error names the fields it looked for.
        let bare = serde_json::value::RawValue::from_string("{}".to_owned()).unwrap();
        let e = msg(p.partition(&&*bare, now).unwrap_err());
        assert!(e.contains("`time` or `eventTime`"), "{e}");
    }

    #[test]
    fn hourly_and_daily_by_processing_time() {
        let r = photo("2020-01-01T00:00:00.000Z");
        let now = at(2024, 3, 5, 7, 8);
        let hourly = TimePartitioner::new(Granularity::Hourly);
        assert_eq!(
            hourly.partition(&r, now).unwrap().as_str(),
            "2024/03/05/07/"
        );
        let daily = TimePartitioner::new(Granularity::Daily);
        assert_eq!(daily.partition(&r, now).unwrap().as_str(), "2024/03/05/");
        assert_eq!(TimePartitioner::default(), hourly);
    }

    #[test]
    fn hourly_and_daily_by_event_time() {
        let r = photo("2024-03-05T07:59:59.999Z");
        let now = at(2024, 3, 5, 8, 0);
        let hourly = TimePartitioner::new(Granularity::Hourly).with_time_source(EVENT);
        assert_eq!(
            hourly.partition(&r, now).unwrap().as_str(),
            "2024/03/05/07/"
        );
        let daily = TimePartitioner::new(Granularity::Daily).with_time_source(EVENT);
        assert_eq!(daily.partition(&r, now).unwrap().as_str(), "2024/03/05/");
        // An offset in the event time is honoured.
        let r = photo("2024-03-05T23:30:00-02:00");
        assert_eq!(
            hourly.partition(&r, now).unwrap().as_str(),
            "2024/03/06/01/"
        );
    }

    #[test]
    fn late_event_goes_to_its_own_past_partition() {
        let late = photo("2024-03-03T22:15:00.000Z");
        let now = at(2024, 3, 5, 9, 0);
        let p = TimePartitioner::new(Granularity::Hourly).with_time_source(EVENT_OR_NOW);
        assert_eq!(p.partition(&late, now).unwrap().as_str(), "2024/03/03/22/");
        // The same event by processing time lands in the current hour.
        let p = p.with_time_source(TimeSource::Processing);
        assert_eq!(p.partition(&late, now).unwrap().as_str(), "2024/03/05/09/");
    }

    #[test]
    fn missing_event_time_falls_back_or_errors_naming_it() {
        let now = at(2024, 3, 5, 9, 0);
        let no_time = record(json!({"s3": {"bucket": {"name": "b"}}}));
        let bad_time = photo("yesterday");
        let strict = TimePartitioner::new(Granularity::Hourly).with_time_source(EVENT);
        for r in [&no_time, &bad_time] {
            let e = msg(strict.partition(r, now).unwrap_err());
            assert!(e.contains("`eventTime`") && e.contains("fallback"), "{e}");
        }
        let e = msg(strict.partition(&json!({"x": 1}), now).unwrap_err());
        assert!(e.contains("`time` or `eventTime`"), "{e}");
        let lenient = strict.with_time_source(EVENT_OR_NOW);
        assert_eq!(
            lenient.partition(&no_time, now).unwrap().as_str(),
            "2024/03/05/09/"
        );
    }

    #[test]
    fn hive_layout() {
        let now = at(2024, 3, 5, 7, 8);
        let e = json!({});
        let hourly = TimePartitioner::new(Granularity::Hourly).with_layout(Layout::Hive);
        assert_eq!(
            hourly.partition(&e, now).unwrap().as_str(),
            "year=2024/month=03/day=05/hour=07/"
        );
        let daily = TimePartitioner::new(Granularity::Daily).with_layout(Layout::Hive);
        assert_eq!(
            daily.partition(&e, now).unwrap().as_str(),
            "year=2024/month=03/day=05/"
        );
    }

    #[test]
    fn fixed_offset_crosses_midnight() {
        let e = json!({});
        let plus2 = FixedOffset::east_opt(2 * 3600).unwrap();
        let minus5 = FixedOffset::west_opt(5 * 3600).unwrap();
        let hourly = TimePartitioner::new(Granularity::Hourly).with_offset(plus2);
        // 23:30 UTC on New Year's Eve is 01:30 the next year at +02:00.
        assert_eq!(
            hourly
                .partition(&e, at(2024, 12, 31, 23, 30))
                .unwrap()
                .as_str(),
            "2025/01/01/01/"
        );
        let daily = TimePartitioner::new(Granularity::Daily).with_offset(minus5);
        // 02:00 UTC on 1 March is still 28 February (leap year) at -05:00.
        assert_eq!(
            daily.partition(&e, at(2024, 3, 1, 2, 0)).unwrap().as_str(),
            "2024/02/29/"
        );
        // Templates use the offset too.
        let t = TemplatePartitioner::builder("%Y-%m-%d/%H")
            .with_offset(plus2)
            .build()
            .unwrap();
        assert_eq!(
            t.partition(&e, at(2024, 12, 31, 23, 30)).unwrap().as_str(),
            "2025-01-01/01/"
        );
    }

    #[test]
    fn template_with_strftime_and_fields() {
        let r = photo("2024-03-05T07:08:09.000Z");
        let now = at(2025, 1, 2, 3, 4);
        let p = TemplatePartitioner::new("{bucket}/%Y/%m/").unwrap();
        assert_eq!(p.partition(&r, now).unwrap().as_str(), "photos/2025/01/");
        let p = TemplatePartitioner::builder("{awsRegion}/{eventName}/dt=%Y-%m-%d/h=%H")
            .with_time_source(EVENT)
            .build()
            .unwrap();
        assert_eq!(
            p.partition(&r, now).unwrap().as_str(),
            "us-west-2/ObjectCreated:Put/dt=2024-03-05/h=07/"
        );
        assert_eq!(
            p.fields().collect::<Vec<_>>(),
            ["awsRegion", "eventName"].to_vec()
        );
        let p = TemplatePartitioner::new(
            "{{literal}}/100%%/{s3.object.size}/{userIdentity.principalId}/\
             {s3.object.userMetadata.X-Amz-Meta-Team}",
        )
        .unwrap();
        assert_eq!(
            p.partition(&r, now).unwrap().as_str(),
            "{literal}/100%/1024/AIDAJDPLRKLG7UEXAMPLE/blue/"
        );
    }

    #[test]
    fn template_without_specifiers_needs_no_time() {
        let p = TemplatePartitioner::builder("{bucket}")
            .with_time_source(EVENT)
            .build()
            .unwrap();
        let r = record(json!({"s3": {"bucket": {"name": "b"}}}));
        assert_eq!(p.partition(&r, Utc::now()).unwrap().as_str(), "b/");
        let empty = TemplatePartitioner::new("").unwrap();
        assert!(empty.partition(&r, Utc::now()).unwrap().is_empty());
    }

    #[test]
    fn amberflo_template() {
        let meter = json!({"customerId": "customer-123", "meterApiName": "ComputeHours",
                           "meterValue": 5, "meterTimeInMillis": 1619445706909_u64});
        let now = at(2022, 6, 7, 15, 0);
        for t in ["ingest/amberdata/%m-%d-%Y/", "ingest/amberdata/%m-%d-%Y"] {
            let p = TemplatePartitioner::new(t).unwrap();
            assert_eq!(
                p.partition(&meter, now).unwrap().as_str(),
                "ingest/amberdata/06-07-2022/"
            );
        }
        let p = TemplatePartitioner::new("ingest/{meterApiName}/%m-%d-%Y/").unwrap();
        assert_eq!(
            p.partition(&meter, now).unwrap().as_str(),
            "ingest/ComputeHours/06-07-2022/"
        );
    }

    #[test]
    fn bad_templates_name_template_and_offset() {
        let cases = [
            ("ab/{bucket", "unclosed `{` at offset 3"),
            ("a{b{c}", "unclosed `{` at offset 1"),
            ("ab}", "unmatched `}` at offset 2"),
            ("x/{}/", "empty field name `{}` at offset 2"),
            ("logs/%Y/%J/", "invalid strftime specifier at offset 8"),
            ("{a}/%Y%", "invalid strftime specifier at offset 6"),
            ("/logs/%Y", "starts with `/`"),
            ("logs//%Y", "empty path segment (`//`) at offset 4"),
            ("logs/../%Y", "`..` path segment at offset 5"),
            ("./logs", "`.` path segment at offset 0"),
            ("%Y%n", "control character"),
        ];
        for (t, want) in cases {
            let e = msg(TemplatePartitioner::new(t).unwrap_err());
            assert!(e.contains(want), "{t}: {e}");
            assert!(e.contains(&format!("template `{t}`")), "{t}: {e}");
        }
        // Placeholders and dots mixed with text are fine.
        TemplatePartitioner::new("a/.{x}/..{y}./v1.2/%Y.%m").unwrap();
    }

    #[test]
    fn missing_field_errors_or_takes_a_default() {
        let now = at(2024, 3, 5, 7, 8);
        let minio = record(json!({"awsRegion": "", "s3": {"bucket": {"name": "b"}}}));
        let p = TemplatePartitioner::new("{bucket}/{awsRegion}/%Y").unwrap();
        let e = msg(p.partition(&minio, now).unwrap_err());
        assert!(e.contains("no field `awsRegion`"), "{e}");
        assert!(e.contains("{bucket}/{awsRegion}/%Y"), "{e}");

        let p = TemplatePartitioner::builder("{bucket}/{awsRegion}/%Y")
            .with_default("awsRegion", "none")
            .build()
            .unwrap();
        assert_eq!(p.partition(&minio, now).unwrap().as_str(), "b/none/2024/");
        let p = TemplatePartitioner::builder("{tenant}/{awsRegion}")
            .with_missing_default("../unknown")
            .build()
            .unwrap();
        assert_eq!(
            p.partition(&minio, now).unwrap().as_str(),
            ".._unknown/.._unknown/"
        );

        let e = msg(TemplatePartitioner::builder("{bucket}")
            .with_default("region", "x")
            .build()
            .unwrap_err());
        assert!(e.contains("field `region`"), "{e}");
        let e = msg(TemplatePartitioner::builder("{bucket}")
            .with_default("bucket", "")
            .build()
            .unwrap_err());
        assert!(e.contains("default for `bucket` must not be empty"), "{e}");
    }

    #[test]
    fn field_values_are_sanitized() {
        let now = at(2024, 3, 5, 7, 8);
        let p = TemplatePartitioner::new("in/{v}/%Y").unwrap();
        let cases = [
            ("../../etc", "in/.._.._etc/2024/"),
            ("/abs", "in/_abs/2024/"),
            ("..", "in/__/2024/"),
            (".", "in/_/2024/"),
            ("a\\b", "in/a_b/2024/"),
            ("x\ny\u{7f}", "in/x_y_/2024/"),
            ("ok.v1", "in/ok.v1/2024/"),
            ("日本", "in/日本/2024/"),
        ];
        for (v, want) in cases {
            let key = p.partition(&json!({ "v": v }), now).unwrap();
            assert_eq!(key.as_str(), want, "{v:?}");
        }
        // Two dot values side by side cannot form `..`.
        let p = TemplatePartitioner::new("{a}{b}").unwrap();
        let key = p.partition(&json!({"a": ".", "b": "."}), now).unwrap();
        assert_eq!(key.as_str(), "__/");
        // A decoded S3 key with slashes stays one segment.
        let r = photo("2024-03-05T07:08:09Z");
        let p = TemplatePartitioner::new("{key}").unwrap();
        assert_eq!(
            p.partition(&r, now).unwrap().as_str(),
            "summer_red flower.jpg/"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_field_value_gives_a_valid_key(a in ".*", b in "[./\\\\a]{0,6}") {
            let p = TemplatePartitioner::builder("x/{a}/{a}{b}.%Y/{b}")
                .with_missing_default("m")
                .build()
                .unwrap();
            let key = p.partition(&json!({"a": a, "b": b}), Utc::now()).unwrap();
            proptest::prop_assert!(check_prefix(key.as_str()).is_ok(), "{:?}", key);
            proptest::prop_assert_eq!(key.as_str().matches('/').count(), 4);
        }
    }

    #[test]
    fn granularity_parsing() {
        for (s, g) in [
            ("HOURLY", Granularity::Hourly),
            ("hourly", Granularity::Hourly),
            ("Daily", Granularity::Daily),
            ("DAILY", Granularity::Daily),
        ] {
            assert_eq!(s.parse::<Granularity>().unwrap(), g);
            assert_eq!(g.to_string().parse::<Granularity>().unwrap(), g);
        }
        for bad in ["WEEKLY", "", " hourly", "hour"] {
            let e = msg(bad.parse::<Granularity>().unwrap_err());
            assert!(e.contains(&format!("`{bad}`")), "{e}");
            assert!(e.contains("HOURLY") && e.contains("DAILY"), "{e}");
        }
        let g: Granularity = serde_json::from_str(r#""daily""#).unwrap();
        assert_eq!(g, Granularity::Daily);
        assert_eq!(serde_json::to_string(&g).unwrap(), r#""DAILY""#);
        let e = serde_json::from_str::<Granularity>(r#""MONTHLY""#).unwrap_err();
        assert!(e.to_string().contains("`MONTHLY`"), "{e}");
    }

    #[test]
    fn record_fields() {
        let r = photo("2024-03-05T07:08:09.000Z");
        let f = |n: &str| r.field(n).map(Cow::into_owned);
        assert_eq!(f("bucket").as_deref(), Some("photos"));
        assert_eq!(f("key").as_deref(), Some("summer/red flower.jpg"));
        assert_eq!(f("s3.object.key").as_deref(), Some("summer/red+flower.jpg"));
        assert_eq!(f("eventName").as_deref(), Some("ObjectCreated:Put"));
        assert_eq!(f("eventSource").as_deref(), Some("aws:s3"));
        assert_eq!(f("awsRegion").as_deref(), Some("us-west-2"));
        assert_eq!(f("size").as_deref(), Some("1024"));
        assert_eq!(f("s3.object").as_deref(), None);
        assert_eq!(f("nope").as_deref(), None);
        assert_eq!(
            r.event_time(),
            Some(at(2024, 3, 5, 7, 8) + chrono::Duration::seconds(9))
        );
        // A key that does not decode is given as sent.
        let odd = record(json!({"s3": {"object": {"key": "%FF"}}}));
        assert_eq!(odd.field("key").as_deref(), Some("%FF"));
    }

    #[test]
    fn json_fields_and_time() {
        let v = json!({
            "time": "2019-07-04T17:31:00.000Z",
            "a.b": "flat",
            "data": {"n": 3, "ok": true, "list": ["x", "y"], "nil": null}
        });
        assert_eq!(v.event_time(), Some(at(2019, 7, 4, 17, 31)));
        assert_eq!(v.field("a.b").as_deref(), Some("flat"));
        assert_eq!(v.field("data.n").as_deref(), Some("3"));
        assert_eq!(v.field("data.ok").as_deref(), Some("true"));
        assert_eq!(v.field("data.list.1").as_deref(), Some("y"));
        assert_eq!(v.field("data.nil"), None);
        assert_eq!(v.field("data"), None);
        let s3 = json!({"eventTime": "2019-07-04T17:31:00Z"});
        assert_eq!(s3.event_time(), Some(at(2019, 7, 4, 17, 31)));
    }

    #[test]
    fn cloudevent_fields_and_time() {
        use cloudevents::{EventBuilder, EventBuilderV10};
        let e = EventBuilderV10::new()
            .id("b25e2717")
            .source("https://github.com/cloudevents/spec/pull/123")
            .ty("com.github.pull.create")
            .time("2019-07-04T17:31:00Z")
            .extension("tenant", "acme")
            .data("application/json", json!({"much": "wow", "n": 1}))
            .build()
            .unwrap();
        assert_eq!(e.event_time(), Some(at(2019, 7, 4, 17, 31)));
        assert_eq!(e.field("type").as_deref(), Some("com.github.pull.create"));
        assert_eq!(e.field("tenant").as_deref(), Some("acme"));
        assert_eq!(e.field("data.much").as_deref(), Some("wow"));
        assert_eq!(e.field("subject"), None);
        let p = TemplatePartitioner::builder("{tenant}/{type}/%Y/%m/%d/")
            .with_time_source(EVENT)
            .build()
            .unwrap();
        assert_eq!(
            p.partition(&e, Utc::now()).unwrap().as_str(),
            "acme/com.github.pull.create/2019/07/04/"
        );
    }

    #[test]
    fn partition_key_rules() {
        assert_eq!(PartitionKey::new("a/b").unwrap().as_str(), "a/b/");
        assert_eq!(PartitionKey::new("a/b/").unwrap().to_string(), "a/b/");
        assert!(PartitionKey::new("").unwrap().is_empty());
        assert_eq!(PartitionKey::empty(), PartitionKey::default());
        for bad in ["/a", "a//b", "a/../b", "./a", "a\nb"] {
            let e = msg(PartitionKey::new(bad).unwrap_err());
            assert!(e.contains("partition key"), "{e}");
        }
        let mut keys = [
            PartitionKey::new("b").unwrap(),
            PartitionKey::new("a").unwrap(),
        ];
        keys.sort();
        assert_eq!(keys[0].as_str(), "a/");
        let set: std::collections::HashSet<PartitionKey> = keys.iter().cloned().collect();
        assert!(set.contains("a/"));
        assert_eq!(String::from(keys[1].clone()), "b/");
    }

    #[test]
    fn partitioners_are_object_safe_and_shareable() {
        let ps: Vec<Arc<dyn Partitioner>> = vec![
            Arc::new(TimePartitioner::new(Granularity::Daily)),
            Arc::new(TemplatePartitioner::new("t/%Y").unwrap()),
        ];
        let boxed: Box<dyn Partitioner> = Box::new(ps[0].clone());
        let now = at(2024, 3, 5, 7, 8);
        let e = json!({});
        assert_eq!(boxed.partition(&e, now).unwrap().as_str(), "2024/03/05/");
        assert_eq!(ps[1].partition(&e, now).unwrap().as_str(), "t/2024/");
        let dbg = format!("{:?}", ps[1]);
        assert!(dbg.contains("t/%Y"), "{dbg}");
        std::thread::scope(|s| {
            s.spawn(|| ps[0].partition(&e, now).unwrap());
        });
    }
}
