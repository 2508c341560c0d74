//! Parquet objects (feature `parquet`): [`Encoding::Parquet`](crate::Encoding::Parquet) with a fixed
//! schema for CloudEvents or S3 event records, or one inferred from the
//! records.
//!
//! ```
//! use s3_event_sink::{decode, BatchEncoder, Compression, Encoding, ParquetOptions, ParquetSchema};
//!
//! let encoding = Encoding::Parquet(ParquetOptions::default().with_schema(ParquetSchema::CloudEvents));
//! let mut enc = BatchEncoder::new(encoding, Compression::None);
//! let event = serde_json::json!({
//!     "specversion": "1.0", "id": "1", "source": "/s", "type": "t",
//!     "traceparent": "00-ab", "data": {"n": 1},
//! });
//! enc.push(&event)?;
//! assert_eq!(enc.extension(), ".parquet");
//! let bytes = enc.finish()?;
//! assert_eq!(decode("x.parquet", &bytes)?.records, vec![event]);
//! # Ok::<(), s3_event_sink::Error>(())
//! ```
//!
//! The schemas are documented on [`ParquetSchema`].

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, Int64Builder, MapBuilder, StringBuilder};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use base64::Engine as _;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as ParquetCodec, Encoding as ParquetEncoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::de::{Error as _, MapAccess};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// How a Parquet object's rows are laid out.
///
/// # The schemas
///
/// Chosen by configuration ([`ParquetSchema`]), never guessed per record.
/// Every file carries its options in its key-value metadata
/// (`s3-event.schema`, `s3-event.compression`, `s3-event.row_group_size`),
/// so [`decode`](crate::decode) gives back the records that were pushed.
///
/// **`cloudevents`** — one row per CloudEvent in JSON format:
///
/// | column | type | from |
/// |---|---|---|
/// | `specversion`, `id`, `source`, `type` | string, not null | the required attributes (a record without one of them, or with a non-string one, is refused) |
/// | `subject`, `time`, `datacontenttype`, `dataschema` | string, null when absent | the optional attributes, as written (`time` stays RFC 3339 text) |
/// | `extensions` | map<string, string> | every other top-level member; a non-string value as its JSON text (so `5` reads back as `"5"`, the attribute's canonical string form) |
/// | `data` | string (JSON text), null when absent | `data`, serialized: `{"n":1}`, `"text"`, `null` |
/// | `data_base64` | binary, null when absent | `data_base64`, base64-decoded (a value that is not base64 is refused) |
///
/// **`s3`** — one row per S3 event record (`{"eventName": …, "s3": …}`, as
/// in a notification's `Records`):
///
/// | column | type | from |
/// |---|---|---|
/// | `event_name` | string, not null | `eventName` (required) |
/// | `event_time` | string | `eventTime`, as written |
/// | `bucket` | string, not null | `s3.bucket.name` (required) |
/// | `key` | string, not null | `s3.object.key` (required), URL-decoded (as written when it does not decode) |
/// | `size` | int64 | `s3.object.size` |
/// | `etag` | string | `s3.object.eTag` |
/// | `version_id` | string | `s3.object.versionId` |
/// | `sequencer` | string | `s3.object.sequencer` |
/// | `region` | string | `awsRegion` |
/// | `principal_id` | string | `userIdentity.principalId` |
/// | `source_ip` | string | `requestParameters.sourceIPAddress` |
/// | `record` | string (JSON text), not null | the whole record, so nothing is lost |
///
/// **`s3-compact`** — the columns of `s3`, with `rest` in place of
/// `record`:
///
/// | column | type | from |
/// |---|---|---|
/// | `rest` | string (JSON text), not null | the record without the members the other columns hold exactly: every member of the record, in its order, but `eventName`, `eventTime`, `awsRegion`, `userIdentity.principalId`, `requestParameters.sourceIPAddress`, `s3.bucket.name`, `s3.object.eTag`, `s3.object.versionId` and `s3.object.sequencer` when they are strings, `s3.object.size` when it is an integer, and `s3.object.key` when it is a string without `%` or `+` (so its column, URL-decoded, is the key as written) |
///
/// No member is lost: [`decode`](crate::decode) gives back the same JSON
/// value, each column's value put back in its object (as its last member)
/// unless `rest` holds that member. Unlike `record`, the text is not kept
/// as written: member order and whitespace may differ. `rest` holds what
/// the columns do not (for AWS records: versions, request ids, ARNs, the
/// owner); members that repeat from record to record compress to next to
/// nothing, a request id that differs in each record does not. A query
/// that needs the whole record as one text wants `s3`.
///
/// **`inferred`** — any JSON objects: the schema is inferred (arrow-json:
/// numbers as int64 or float64, strings, booleans, lists, structs; a field
/// that is `null` in the records it is inferred from becomes a string
/// column) from the first record of a batch (the [`Sink`](crate::Sink)
/// infers it once, from the first record it is given, and checks every
/// record against it before spooling).
/// A record that does not fit — a field the schema lacks, a value of
/// another type — is refused at push with [`Error::RecordMismatch`] naming
/// the record and the field; a field the schema has and the record lacks is
/// null. Reading back, a null field is left out of its record. A batch
/// recovered from the spool after a crash is encoded with the schema
/// inferred from all of its records (every one of them fitted the schema of
/// the process that accepted it, which was not kept).
///
/// # Size and memory
///
/// Rows are gathered in arrow builders and written a chunk at a time (at
/// most 1024 rows) into the current row group; a row group is closed after
/// `row_group_size` rows, or, when the sink gives the encoder its
/// `max_bytes`, once its estimated size reaches an eighth of it.
/// [`encoded_len`](crate::BatchEncoder::encoded_len) is the bytes written,
/// plus the open row group's estimate and the rows not yet written, each
/// scaled by the ratio observed at the last row group (the writer counts
/// pages not yet compressed at their raw size), plus an allowance for the
/// footer. An open batch holds at most one row group and one chunk of
/// rows beside its output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ParquetSchema {
    /// The CloudEvents context attributes as columns, extensions as a map,
    /// `data` as JSON text and `data_base64` as binary.
    CloudEvents,
    /// S3 event records: the main fields as columns and the whole record
    /// as JSON text.
    S3Records,
    /// S3 event records: the columns of `S3Records`, and the rest of the
    /// record (what they do not hold) as JSON text.
    S3Compact,
    /// Inferred from the first record of each batch (or given).
    #[default]
    Inferred,
}

impl ParquetSchema {
    fn name(self) -> &'static str {
        match self {
            ParquetSchema::CloudEvents => "cloudevents",
            ParquetSchema::S3Records => "s3",
            ParquetSchema::S3Compact => "s3-compact",
            ParquetSchema::Inferred => "inferred",
        }
    }
}

impl FromStr for ParquetSchema {
    type Err = Error;

    /// Parses `cloudevents`, `s3`, `s3-compact` or `inferred` (ASCII
    /// case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        [
            ParquetSchema::CloudEvents,
            ParquetSchema::S3Records,
            ParquetSchema::S3Compact,
            ParquetSchema::Inferred,
        ]
        .into_iter()
        .find(|k| s.eq_ignore_ascii_case(k.name()))
        .ok_or_else(|| Error::InvalidConfig {
            what: "parquet schema",
            value: s.to_owned(),
            expected: "`cloudevents`, `s3`, `s3-compact`, `inferred`",
        })
    }
}

impl fmt::Display for ParquetSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a Parquet object's pages are compressed (the object itself is not
/// compressed again: [`Compression`](crate::Compression) must be `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageCompression {
    /// Pages stored as encoded.
    None,
    /// Snappy: fast, larger.
    Snappy,
    /// zstd (the default).
    Zstd {
        /// Level 1 (fastest) to 22; clamped to that range.
        level: u32,
    },
}

impl Default for PageCompression {
    fn default() -> Self {
        PageCompression::Zstd { level: 3 }
    }
}

impl PageCompression {
    fn codec(self) -> ParquetCodec {
        match self {
            PageCompression::None => ParquetCodec::UNCOMPRESSED,
            PageCompression::Snappy => ParquetCodec::SNAPPY,
            PageCompression::Zstd { level } => ParquetCodec::ZSTD(
                ZstdLevel::try_new(level.clamp(1, 22) as i32).unwrap_or_default(),
            ),
        }
    }
}

impl FromStr for PageCompression {
    type Err = Error;

    /// Parses `zstd`, `snappy` or `none` (ASCII case-insensitive; zstd at level 3).
    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("zstd") {
            Ok(PageCompression::default())
        } else if s.eq_ignore_ascii_case("snappy") {
            Ok(PageCompression::Snappy)
        } else if s.eq_ignore_ascii_case("none") {
            Ok(PageCompression::None)
        } else {
            Err(Error::InvalidConfig {
                what: "parquet compression",
                value: s.to_owned(),
                expected: "`zstd`, `snappy`, `none`",
            })
        }
    }
}

impl fmt::Display for PageCompression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PageCompression::None => f.write_str("none"),
            PageCompression::Snappy => f.write_str("snappy"),
            PageCompression::Zstd { level } => write!(f, "zstd({level})"),
        }
    }
}

/// The options of [`Encoding::Parquet`](crate::Encoding::Parquet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParquetOptions {
    /// The row layout.
    pub schema: ParquetSchema,
    /// The page compression.
    pub compression: PageCompression,
    /// Rows per row group (at least 1).
    pub row_group_size: usize,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions {
            schema: ParquetSchema::default(),
            compression: PageCompression::default(),
            row_group_size: Self::DEFAULT_ROW_GROUP_SIZE,
        }
    }
}

impl ParquetOptions {
    /// Rows per row group when none is configured.
    pub const DEFAULT_ROW_GROUP_SIZE: usize = 128 * 1024;

    /// With `schema`.
    pub fn with_schema(mut self, schema: ParquetSchema) -> Self {
        self.schema = schema;
        self
    }

    /// With page compression `compression`.
    pub fn with_compression(mut self, compression: PageCompression) -> Self {
        self.compression = compression;
        self
    }

    /// With `rows` per row group (at least 1).
    pub fn with_row_group_size(mut self, rows: usize) -> Self {
        self.row_group_size = rows.max(1);
        self
    }
}

const META_SCHEMA: &str = "s3-event.schema";
const META_COMPRESSION: &str = "s3-event.compression";
const META_ROW_GROUP_SIZE: &str = "s3-event.row_group_size";

/// Longest min/max kept in statistics and the column index.
const STATS_TRUNCATE: usize = 64;

/// Footer bytes per column chunk (its metadata, statistics and page
/// indexes), for the estimate.
const FOOTER_PER_CHUNK: usize = 200;

/// Rows written to the writer at once.
const CHUNK_ROWS: usize = 1024;
/// Raw JSON bytes gathered before a chunk is written, without a target size.
const CHUNK_BYTES: usize = 4 << 20;

const CE_ATTRS: [&str; 8] = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
];

fn map_type() -> DataType {
    MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
        .finish()
        .data_type()
        .clone()
}

fn cloudevents_schema() -> SchemaRef {
    let mut fields: Vec<Field> = CE_ATTRS
        .iter()
        .enumerate()
        .map(|(i, a)| Field::new(*a, DataType::Utf8, i >= 4))
        .collect();
    fields.push(Field::new("extensions", map_type(), false));
    fields.push(Field::new("data", DataType::Utf8, true));
    fields.push(Field::new("data_base64", DataType::Binary, true));
    Arc::new(Schema::new(fields))
}

const S3_STRINGS: [&str; 9] = [
    "event_name",
    "event_time",
    "bucket",
    "key",
    "etag",
    "version_id",
    "sequencer",
    "region",
    "principal_id",
];

/// The S3 schemas: `text` is `record` (the whole record) or `rest`.
fn s3_schema(text: &str) -> SchemaRef {
    let mut fields: Vec<Field> = S3_STRINGS
        .iter()
        .map(|n| {
            Field::new(
                *n,
                DataType::Utf8,
                !matches!(*n, "event_name" | "bucket" | "key"),
            )
        })
        .collect();
    fields.push(Field::new("source_ip", DataType::Utf8, true));
    fields.push(Field::new("size", DataType::Int64, true));
    fields.push(Field::new(text, DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

fn parse_object(record: &[u8]) -> std::result::Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(record) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("not a JSON object".to_owned()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// Checks a record against a fixed schema or an inferred one, as the
/// encoder would; the sink calls it before the record is spooled.
pub(crate) fn check(
    schema: ParquetSchema,
    inferred: Option<&Schema>,
    record: &[u8],
) -> std::result::Result<(), String> {
    match schema {
        ParquetSchema::CloudEvents => CeRow::from(parse_object(record)?).map(drop),
        ParquetSchema::S3Records => S3Row::parse(record).map(drop),
        // What the encoder will run, so that a record spooled is one it
        // takes.
        ParquetSchema::S3Compact => {
            S3Row::parse_compact(record, &mut String::with_capacity(record.len())).map(drop)
        }
        ParquetSchema::Inferred => {
            let obj = parse_object(record)?;
            match inferred {
                Some(s) => fits_object(&obj, s.fields(), ""),
                None => infer(&obj).map(drop),
            }
        }
    }
}

/// A CloudEvent's columns.
struct CeRow {
    attrs: [Option<String>; 8],
    extensions: Vec<(String, String)>,
    data: Option<String>,
    data_base64: Option<Vec<u8>>,
}

impl CeRow {
    fn from(mut obj: Map<String, Value>) -> std::result::Result<Self, String> {
        let mut attrs: [Option<String>; 8] = Default::default();
        for (i, a) in CE_ATTRS.iter().enumerate() {
            match obj.remove(*a) {
                Some(Value::String(s)) => attrs[i] = Some(s),
                None if i >= 4 => {}
                None => return Err(format!("not a CloudEvent: no `{a}`")),
                Some(_) => return Err(format!("CloudEvent attribute `{a}` is not a string")),
            }
        }
        let data = obj.remove("data").map(|d| d.to_string());
        let data_base64 = match obj.remove("data_base64") {
            None => None,
            Some(Value::String(s)) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|e| format!("`data_base64` is not base64: {e}"))?,
            ),
            Some(_) => return Err("`data_base64` is not a string".to_owned()),
        };
        let extensions = obj
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k, s),
                v => (k, v.to_string()),
            })
            .collect();
        Ok(CeRow {
            attrs,
            extensions,
            data,
            data_base64,
        })
    }
}

/// An S3 event record's columns, borrowed from the record's text where
/// they need no unescaping.
struct S3Row<'a> {
    strings: [Option<Cow<'a, str>>; 10],
    size: Option<i64>,
    record: &'a str,
}

impl<'a> S3Row<'a> {
    /// The columns of `raw`, which the `record` column keeps as it came.
    ///
    /// Read in one pass into the few fields the columns take, skipping the
    /// rest, instead of into a JSON tree: the tree (a map and a string per
    /// member, then freed) was most of the encoder's time. A member of
    /// another type than its column reads as absent (null), as a tree
    /// lookup would; only the required strings and `size` are checked.
    fn parse(raw: &'a [u8]) -> std::result::Result<Self, String> {
        let text = std::str::from_utf8(raw).map_err(|e| format!("not JSON: {e}"))?;
        // A struct also reads from a JSON array (by position): refuse
        // anything but an object first.
        if text.trim_start().as_bytes().first() != Some(&b'{') {
            return match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => Err("not a JSON object".to_owned()),
                Err(e) => Err(format!("not JSON: {e}")),
            };
        }
        let f: S3Fields<'a> = serde_json::from_str(text).map_err(refusal)?;
        Self::from_fields(f, text)
    }

    /// The columns of `raw`, as [`parse`](Self::parse) reads them, and in
    /// `rest` the record without the members they hold exactly (the
    /// `s3-compact` schema's `rest` column), in the same pass.
    fn parse_compact(raw: &'a [u8], rest: &mut String) -> std::result::Result<Self, String> {
        let text = std::str::from_utf8(raw).map_err(|e| format!("not JSON: {e}"))?;
        if text.trim_start().as_bytes().first() != Some(&b'{') {
            return Self::parse(raw);
        }
        let f: S3Fields<'a> = strip(text, rest).map_err(refusal)?;
        Self::from_fields(f, "")
    }

    fn from_fields(f: S3Fields<'a>, text: &'a str) -> std::result::Result<Self, String> {
        let (bucket, object) = match f.s3.0 {
            Some(s3) => (
                s3.bucket.0.unwrap_or_default(),
                s3.object.0.unwrap_or_default(),
            ),
            None => Default::default(),
        };
        let required = |v: Text<'a>, name: &str| {
            v.0.ok_or_else(|| format!("not an S3 event record: no string `{name}`"))
        };
        let event_name = required(f.event_name, "eventName")?;
        let bucket = required(bucket.name, "s3.bucket.name")?;
        let raw_key = required(object.key, "s3.object.key")?;
        let key = if raw_key.contains(['%', '+']) {
            s3_event_core::decode_key(&raw_key).map_or(raw_key, Cow::Owned)
        } else {
            raw_key
        };
        let size = match object.size {
            Size::Absent => None,
            Size::Int(n) => Some(n),
            Size::Other => return Err("`s3.object.size` is not an integer".to_owned()),
        };
        let principal = f.user_identity.0.and_then(|u| u.principal_id.0);
        let source_ip = f.request_parameters.0.and_then(|r| r.source_ip.0);
        Ok(S3Row {
            strings: [
                Some(event_name),
                f.event_time.0,
                Some(bucket),
                Some(key),
                object.etag.0,
                object.version_id.0,
                object.sequencer.0,
                f.region.0,
                principal,
                source_ip,
            ],
            size,
            record: text,
        })
    }
}

/// Why a record is refused, from the error reading it.
fn refusal(e: serde_json::Error) -> String {
    if e.is_data() {
        format!("not an S3 event record: {e}")
    } else {
        format!("not JSON: {e}")
    }
}

/// One level of an S3 event record as the `s3-compact` schema reads it:
/// the members it has columns (or deeper levels) for, in `NAMES`; every
/// other member goes to `rest` as written.
trait Level<'de>: Default {
    const NAMES: &'static [&'static str];

    /// Reads member `NAMES[i]`, the next value of `map`, into `self`;
    /// writes it to `out` unless a column holds it exactly.
    fn take<A: MapAccess<'de>>(
        &mut self,
        i: usize,
        map: &mut A,
        out: &mut Members<'_>,
    ) -> std::result::Result<(), A::Error>;
}

/// The members written to `rest` at one level.
struct Members<'r> {
    rest: &'r mut String,
    first: bool,
}

impl Members<'_> {
    /// Starts member `name`; its value is written next.
    fn name(&mut self, name: &str) -> &mut String {
        self.named(name, false)
    }

    /// Starts member `name`, escaped if `escape` (a name that had escapes
    /// in the record; one the reader borrowed had none, so needs none).
    fn named(&mut self, name: &str, escape: bool) -> &mut String {
        if !std::mem::take(&mut self.first) {
            self.rest.push(',');
        }
        if escape && name.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
            self.rest
                .push_str(&serde_json::to_string(name).unwrap_or_default());
        } else {
            self.rest.push('"');
            self.rest.push_str(name);
            self.rest.push('"');
        }
        self.rest.push(':');
        self.rest
    }

    /// Writes member `name` with the JSON text `raw`.
    fn keep(&mut self, name: &str, raw: &str) {
        self.name(name).push_str(raw);
    }

    /// A string member, the next value of `map`: taken into `slot` when it
    /// is a string (and `exact` holds for it), else kept as written. (Read
    /// as raw text first, as `s3` skips a value of another type: without
    /// building it.)
    fn text<'de, A: MapAccess<'de>>(
        &mut self,
        map: &mut A,
        slot: &mut Text<'de>,
        name: &str,
        exact: fn(&str) -> bool,
    ) -> std::result::Result<(), A::Error> {
        let raw = map.next_value::<&'de RawValue>()?.get();
        if raw.starts_with('"') {
            *slot = match raw.get(1..raw.len() - 1) {
                // A JSON string without escapes: its text between the quotes.
                Some(s) if !s.contains('\\') => Text(Some(Cow::Borrowed(s))),
                _ => serde_json::from_str(raw).map_err(A::Error::custom)?,
            };
            if slot.0.as_deref().is_some_and(exact) {
                return Ok(());
            }
        }
        self.keep(name, raw);
        Ok(())
    }

    /// An object member, the next value of `map`: read as level `T` (its
    /// members written to `rest` the same way, in the same pass) when it
    /// is an object, else kept.
    fn level<'de, A: MapAccess<'de>, T: Level<'de>>(
        &mut self,
        map: &mut A,
        slot: &mut Obj<T>,
        name: &str,
    ) -> std::result::Result<(), A::Error> {
        *slot = map.next_value_seed(LevelSeed {
            out: self,
            name,
            level: std::marker::PhantomData,
        })?;
        Ok(())
    }
}

fn any(_: &str) -> bool {
    true
}

/// Reads the members of `map` as level `T`, writing the object without
/// what its columns hold to `rest`.
fn members<'de, A: MapAccess<'de>, T: Level<'de>>(
    mut map: A,
    rest: &mut String,
) -> std::result::Result<T, A::Error> {
    let mut t = T::default();
    let mut seen = 0u32;
    rest.push('{');
    let mut out = Members { rest, first: true };
    while let Some(Text(name)) = map.next_key::<Text<'de>>()? {
        let name = name.unwrap_or_default();
        match T::NAMES.iter().position(|n| *n == name) {
            // As a derived `Deserialize` (what `s3` reads with) refuses it.
            Some(i) if seen & (1 << i) != 0 => {
                return Err(A::Error::duplicate_field(T::NAMES[i]));
            }
            Some(i) => {
                seen |= 1 << i;
                t.take(i, &mut map, &mut out)?;
            }
            None => {
                let raw = map.next_value::<&'de RawValue>()?.get();
                let escape = matches!(name, Cow::Owned(_));
                out.named(&name, escape).push_str(raw);
            }
        }
    }
    out.rest.push('}');
    Ok(t)
}

/// Reads the object `text` as level `T`, writing what its columns do not
/// hold to `rest`, in one pass over `text`.
fn strip<'de, T: Level<'de>>(text: &'de str, rest: &mut String) -> serde_json::Result<T> {
    struct V<'r, T>(&'r mut String, std::marker::PhantomData<T>);
    impl<'de, T: Level<'de>> serde::de::Visitor<'de> for V<'_, T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<T, A::Error> {
            members(map, self.0)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let t = serde::Deserializer::deserialize_map(&mut de, V(rest, std::marker::PhantomData))?;
    de.end()?;
    Ok(t)
}

/// Member `name` of a level, read as level `T` if it is an object, kept
/// if it is anything else: a string, number, `true`, `false` or `null`
/// written again (the same JSON value), an array as its items' raw text
/// (skipped as `s3` skips it: without building them).
struct LevelSeed<'m, 'r, T> {
    out: &'m mut Members<'r>,
    name: &'m str,
    level: std::marker::PhantomData<T>,
}

impl<T> LevelSeed<'_, '_, T> {
    fn other<E: serde::de::Error>(
        self,
        v: impl serde::Serialize,
    ) -> std::result::Result<Obj<T>, E> {
        let text = serde_json::to_string(&v).map_err(E::custom)?;
        self.out.keep(self.name, &text);
        Ok(Obj(None))
    }
}

impl<'de, T: Level<'de>> serde::de::DeserializeSeed<'de> for LevelSeed<'_, '_, T> {
    type Value = Obj<T>;
    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Obj<T>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Level<'de>> serde::de::Visitor<'de> for LevelSeed<'_, '_, T> {
    type Value = Obj<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Obj<T>, A::Error> {
        members(map, self.out.name(self.name)).map(|t| Obj(Some(t)))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Obj<T>, A::Error> {
        let rest = self.out.name(self.name);
        rest.push('[');
        let mut first = true;
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            if !std::mem::take(&mut first) {
                rest.push(',');
            }
            rest.push_str(item.get());
        }
        rest.push(']');
        Ok(Obj(None))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Obj<T>, E> {
        self.other(v)
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> std::result::Result<Obj<T>, E> {
        self.other(v)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Obj<T>, E> {
        self.other(v)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Obj<T>, E> {
        self.other(v)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<Obj<T>, E> {
        self.other(v)
    }
    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Obj<T>, E> {
        self.other(())
    }
}

impl<'de> Level<'de> for S3Fields<'de> {
    const NAMES: &'static [&'static str] = &[
        "eventName",
        "eventTime",
        "awsRegion",
        "userIdentity",
        "requestParameters",
        "s3",
    ];
    fn take<A: MapAccess<'de>>(
        &mut self,
        i: usize,
        map: &mut A,
        out: &mut Members<'_>,
    ) -> std::result::Result<(), A::Error> {
        let name = Self::NAMES[i];
        match i {
            0 => out.text(map, &mut self.event_name, name, any),
            1 => out.text(map, &mut self.event_time, name, any),
            2 => out.text(map, &mut self.region, name, any),
            3 => out.level(map, &mut self.user_identity, name),
            4 => out.level(map, &mut self.request_parameters, name),
            _ => out.level(map, &mut self.s3, name),
        }
    }
}

/// A level with one member, a string column.
macro_rules! text_level {
    ($level:ident, $field:ident, $name:literal) => {
        impl<'de> Level<'de> for $level<'de> {
            const NAMES: &'static [&'static str] = &[$name];
            fn take<A: MapAccess<'de>>(
                &mut self,
                _: usize,
                map: &mut A,
                out: &mut Members<'_>,
            ) -> std::result::Result<(), A::Error> {
                out.text(map, &mut self.$field, $name, any)
            }
        }
    };
}

text_level!(PrincipalFields, principal_id, "principalId");
text_level!(RequestFields, source_ip, "sourceIPAddress");
text_level!(BucketFields, name, "name");

impl<'de> Level<'de> for S3EntityFields<'de> {
    const NAMES: &'static [&'static str] = &["bucket", "object"];
    fn take<A: MapAccess<'de>>(
        &mut self,
        i: usize,
        map: &mut A,
        out: &mut Members<'_>,
    ) -> std::result::Result<(), A::Error> {
        match i {
            0 => out.level(map, &mut self.bucket, Self::NAMES[0]),
            _ => out.level(map, &mut self.object, Self::NAMES[1]),
        }
    }
}

impl<'de> Level<'de> for ObjectFields<'de> {
    const NAMES: &'static [&'static str] = &["key", "size", "eTag", "versionId", "sequencer"];
    fn take<A: MapAccess<'de>>(
        &mut self,
        i: usize,
        map: &mut A,
        out: &mut Members<'_>,
    ) -> std::result::Result<(), A::Error> {
        let name = Self::NAMES[i];
        match i {
            // Its column is URL-decoded: exact only when there is nothing
            // to decode.
            0 => out.text(map, &mut self.key, name, |k| !k.contains(['%', '+'])),
            1 => {
                let v: Value = map.next_value()?;
                self.size = Size::of(&v);
                if !matches!(self.size, Size::Int(_)) {
                    out.keep(name, &v.to_string());
                }
                Ok(())
            }
            2 => out.text(map, &mut self.etag, name, any),
            3 => out.text(map, &mut self.version_id, name, any),
            _ => out.text(map, &mut self.sequencer, name, any),
        }
    }
}

/// The members of an S3 event record that [`S3Row`] takes.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct S3Fields<'a> {
    #[serde(rename = "eventName", borrow)]
    event_name: Text<'a>,
    #[serde(rename = "eventTime", borrow)]
    event_time: Text<'a>,
    #[serde(rename = "awsRegion", borrow)]
    region: Text<'a>,
    #[serde(rename = "userIdentity", borrow)]
    user_identity: Obj<PrincipalFields<'a>>,
    #[serde(rename = "requestParameters", borrow)]
    request_parameters: Obj<RequestFields<'a>>,
    #[serde(borrow)]
    s3: Obj<S3EntityFields<'a>>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct PrincipalFields<'a> {
    #[serde(rename = "principalId", borrow)]
    principal_id: Text<'a>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct RequestFields<'a> {
    #[serde(rename = "sourceIPAddress", borrow)]
    source_ip: Text<'a>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct S3EntityFields<'a> {
    #[serde(borrow)]
    bucket: Obj<BucketFields<'a>>,
    #[serde(borrow)]
    object: Obj<ObjectFields<'a>>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct BucketFields<'a> {
    #[serde(borrow)]
    name: Text<'a>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ObjectFields<'a> {
    #[serde(borrow)]
    key: Text<'a>,
    size: Size,
    #[serde(rename = "eTag", borrow)]
    etag: Text<'a>,
    #[serde(rename = "versionId", borrow)]
    version_id: Text<'a>,
    #[serde(borrow)]
    sequencer: Text<'a>,
}

/// Skips a JSON value serde handed to a visitor that has no use for it.
macro_rules! skip_other_values {
    ($out:expr) => {
        fn visit_bool<E>(self, _: bool) -> std::result::Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_i64<E>(self, _: i64) -> std::result::Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_u64<E>(self, _: u64) -> std::result::Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_f64<E>(self, _: f64) -> std::result::Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok($out)
        }
    };
}

/// A member read as text if it is a string, as absent if it is any other
/// JSON value.
#[derive(Default)]
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> std::result::Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Borrowed(s))))
            }
            fn visit_str<E>(self, s: &str) -> std::result::Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(s.to_owned()))))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Text<'a>, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Text(None))
            }
            skip_other_values!(Text(None));
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A member read as `T` if it is an object, as absent if it is any other
/// JSON value.
struct Obj<T>(Option<T>);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Obj(None)
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Obj<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, _: &str) -> std::result::Result<Obj<T>, E> {
                Ok(Obj(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<Obj<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|t| Obj(Some(t)))
            }
            skip_other_values!(Obj(None));
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// `s3.object.size`: absent or null, an integer, or anything else (which
/// the record is refused for).
#[derive(Default)]
enum Size {
    #[default]
    Absent,
    Int(i64),
    Other,
}

impl<'de> serde::Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // A number or null reads into a `Value` without allocating; what
        // else would allocate is refused anyway.
        Ok(Size::of(&<Value as serde::Deserialize>::deserialize(d)?))
    }
}

impl Size {
    fn of(v: &Value) -> Size {
        match v {
            Value::Null => Size::Absent,
            v => v.as_i64().map_or(Size::Other, Size::Int),
        }
    }
}

/// The schema arrow-json infers from one record, with `Null` columns (a
/// field that was `null`) as strings, since Parquet has no use for them.
pub(crate) fn infer(obj: &Map<String, Value>) -> std::result::Result<Schema, String> {
    let v = Value::Object(obj.clone());
    let schema = arrow_json::reader::infer_json_schema_from_iterator(std::iter::once(Ok(&v)))
        .map_err(|e| format!("no schema can be inferred: {e}"))?;
    Ok(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| Arc::new(denull(f)))
            .collect::<Fields>(),
    ))
}

fn denull(f: &Field) -> Field {
    let dt = match f.data_type() {
        DataType::Null => DataType::Utf8,
        DataType::List(item) => DataType::List(Arc::new(denull(item))),
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(|f| Arc::new(denull(f))).collect())
        }
        other => other.clone(),
    };
    Field::new(f.name(), dt, true)
}

fn fits_object(
    obj: &Map<String, Value>,
    fields: &Fields,
    path: &str,
) -> std::result::Result<(), String> {
    for (k, v) in obj {
        let name = format!("{path}{k}");
        let Some((_, f)) = fields.find(k) else {
            return Err(format!("field `{name}` is not in the schema"));
        };
        fits(v, f.data_type(), &name)?;
    }
    Ok(())
}

fn fits(v: &Value, dt: &DataType, name: &str) -> std::result::Result<(), String> {
    let ok = match (v, dt) {
        (Value::Null, _) => true,
        (Value::Bool(_), DataType::Boolean) => true,
        (Value::Number(n), DataType::Int64) => n.is_i64(),
        (Value::Number(_), DataType::Float64) => true,
        (Value::String(_), DataType::Utf8) => true,
        (Value::Array(items), DataType::List(item)) => {
            for (i, x) in items.iter().enumerate() {
                fits(x, item.data_type(), &format!("{name}[{i}]"))?;
            }
            true
        }
        (Value::Object(o), DataType::Struct(fields)) => {
            fits_object(o, fields, &format!("{name}."))?;
            true
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("field `{name}` is not of the schema's type {dt}"))
    }
}

/// Rows gathered before they go to the writer.
enum Rows {
    Ce {
        attrs: Vec<StringBuilder>,
        extensions: Box<MapBuilder<StringBuilder, StringBuilder>>,
        data: StringBuilder,
        data_base64: BinaryBuilder,
    },
    S3 {
        strings: Vec<StringBuilder>,
        size: Int64Builder,
        /// `record`, or `rest` for `s3-compact`.
        record: StringBuilder,
        /// `s3-compact`: the row's `rest`, reused.
        rest: Option<String>,
    },
    Json(Box<arrow_json::reader::Decoder>),
}

/// Finishes `b` into an array and leaves it with room for as many rows and
/// bytes as it held: a finished builder starts again from nothing, and
/// growing it back to a chunk's size copied each value about once more.
fn finish_sized(b: &mut StringBuilder) -> ArrayRef {
    let (rows, bytes) = (b.offsets_slice().len() - 1, b.values_slice().len());
    Arc::new(std::mem::replace(b, StringBuilder::with_capacity(rows, bytes)).finish())
}

/// One Parquet object being built; behind [`BatchEncoder`](crate::BatchEncoder).
pub(crate) struct ParquetBatch {
    opts: ParquetOptions,
    /// The sink's `max_bytes`, when it gave it.
    target: Option<usize>,
    schema: Option<SchemaRef>,
    /// Inferred schemas only: how many records to gather before the schema
    /// is inferred from them (1, or all for a recovered batch).
    infer_rows: usize,
    /// Records gathered for inference.
    staged: Vec<Value>,
    rows: Option<Rows>,
    pending_rows: usize,
    pending_raw: usize,
    writer: Option<ArrowWriter<Vec<u8>>>,
    /// Raw JSON bytes handed to the writer.
    raw_in_writer: usize,
    /// Final bytes / estimated bytes of the last row group closed.
    rg_ratio: f64,
    /// Encoded bytes / raw JSON bytes, so far.
    raw_ratio: f64,
    row_groups: usize,
}

impl fmt::Debug for ParquetBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParquetBatch")
            .field("opts", &self.opts)
            .field("target", &self.target)
            .field("pending_rows", &self.pending_rows)
            .field("row_groups", &self.row_groups)
            .finish_non_exhaustive()
    }
}

fn perr(e: impl fmt::Display) -> Error {
    Error::Compress {
        source: std::io::Error::other(format!("parquet: {e}")),
    }
}

impl ParquetBatch {
    pub(crate) fn new(opts: ParquetOptions) -> Self {
        let schema = match opts.schema {
            ParquetSchema::CloudEvents => Some(cloudevents_schema()),
            ParquetSchema::S3Records => Some(s3_schema("record")),
            ParquetSchema::S3Compact => Some(s3_schema("rest")),
            ParquetSchema::Inferred => None,
        };
        ParquetBatch {
            opts,
            target: None,
            schema,
            infer_rows: 1,
            staged: Vec::new(),
            rows: None,
            pending_rows: 0,
            pending_raw: 0,
            writer: None,
            raw_in_writer: 0,
            rg_ratio: 1.0,
            raw_ratio: 1.0,
            row_groups: 0,
        }
    }

    pub(crate) fn set_target(&mut self, max_bytes: usize) {
        self.target = Some(max_bytes.max(1));
    }

    /// Inferred schemas: use `schema` instead of inferring one.
    pub(crate) fn set_schema(&mut self, schema: SchemaRef) {
        if self.opts.schema == ParquetSchema::Inferred && self.writer.is_none() {
            self.schema = Some(schema);
        }
    }

    /// Inferred schemas: infer from every record of the batch (a recovered
    /// batch, whose records were checked against a schema not kept).
    pub(crate) fn infer_from_all(&mut self) {
        self.infer_rows = usize::MAX;
    }

    fn chunk_rows(&self) -> usize {
        let in_group = self
            .writer
            .as_ref()
            .map_or(0, ArrowWriter::in_progress_rows);
        CHUNK_ROWS
            .min(self.opts.row_group_size.saturating_sub(in_group))
            .max(1)
    }

    fn chunk_bytes(&self) -> usize {
        self.target.map_or(CHUNK_BYTES, |t| (t / 16).max(4096))
    }

    /// Appends one record; the error is the reason it does not fit.
    pub(crate) fn push(&mut self, record: &[u8]) -> std::result::Result<(), String> {
        if self.opts.schema == ParquetSchema::Inferred && self.schema.is_none() {
            // Gathered until the schema is inferred from what was gathered.
            self.staged.push(Value::Object(parse_object(record)?));
            self.pending_raw += record.len();
            if self.staged.len() >= self.infer_rows {
                if let Err(e) = self.fix_schema() {
                    // Only the first record can fail here (one at a time).
                    self.staged.clear();
                    self.pending_raw = 0;
                    self.schema = None;
                    self.rows = None;
                    return Err(e.to_string());
                }
            }
            return Ok(());
        }
        self.append(record)?;
        self.pending_raw += record.len();
        self.pending_rows += 1;
        if self.pending_rows >= self.chunk_rows() || self.pending_raw >= self.chunk_bytes() {
            self.write_chunk().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Infers the schema from the staged records and appends them.
    fn fix_schema(&mut self) -> Result<()> {
        let staged = std::mem::take(&mut self.staged);
        let raw = std::mem::take(&mut self.pending_raw);
        let schema = arrow_json::reader::infer_json_schema_from_iterator(staged.iter().map(Ok))
            .map_err(|e| Error::Compress {
                source: std::io::Error::other(format!("no schema can be inferred: {e}")),
            })?;
        let schema = Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| Arc::new(denull(f)))
                .collect::<Fields>(),
        );
        self.schema = Some(Arc::new(schema));
        self.rows = Some(self.new_rows()?);
        let n = staged.len().max(1);
        for chunk in staged.chunks(CHUNK_ROWS) {
            if let Some(Rows::Json(d)) = &mut self.rows {
                d.serialize(chunk).map_err(perr)?;
            }
            self.pending_rows = chunk.len();
            self.pending_raw = raw * chunk.len() / n;
            self.write_chunk()?;
        }
        Ok(())
    }

    fn schema(&self) -> SchemaRef {
        self.schema
            .clone()
            .unwrap_or_else(|| Arc::new(Schema::empty()))
    }

    fn new_rows(&self) -> Result<Rows> {
        Ok(match self.opts.schema {
            ParquetSchema::CloudEvents => Rows::Ce {
                attrs: (0..8).map(|_| StringBuilder::new()).collect(),
                extensions: Box::new(MapBuilder::new(
                    None,
                    StringBuilder::new(),
                    StringBuilder::new(),
                )),
                data: StringBuilder::new(),
                data_base64: BinaryBuilder::new(),
            },
            ParquetSchema::S3Records | ParquetSchema::S3Compact => Rows::S3 {
                strings: (0..10).map(|_| StringBuilder::new()).collect(),
                size: Int64Builder::new(),
                record: StringBuilder::new(),
                rest: (self.opts.schema == ParquetSchema::S3Compact).then(String::new),
            },
            ParquetSchema::Inferred => Rows::Json(Box::new(
                arrow_json::ReaderBuilder::new(self.schema())
                    .with_strict_mode(true)
                    .with_batch_size(CHUNK_ROWS)
                    .build_decoder()
                    .map_err(perr)?,
            )),
        })
    }

    fn append(&mut self, record: &[u8]) -> std::result::Result<(), String> {
        if self.rows.is_none() {
            self.rows = Some(self.new_rows().map_err(|e| e.to_string())?);
        }
        let inferred = self.schema.clone();
        match self.rows.as_mut().expect("rows were just made") {
            Rows::Ce {
                attrs,
                extensions,
                data,
                data_base64,
            } => {
                let row = CeRow::from(parse_object(record)?)?;
                for (b, a) in attrs.iter_mut().zip(row.attrs) {
                    b.append_option(a);
                }
                for (k, v) in row.extensions {
                    extensions.keys().append_value(k);
                    extensions.values().append_value(v);
                }
                extensions.append(true).map_err(|e| e.to_string())?;
                data.append_option(row.data);
                data_base64.append_option(row.data_base64);
            }
            Rows::S3 {
                strings,
                size,
                record: text,
                rest,
            } => {
                let row = match rest {
                    Some(rest) => {
                        rest.clear();
                        S3Row::parse_compact(record, rest)?
                    }
                    None => S3Row::parse(record)?,
                };
                for (b, s) in strings.iter_mut().zip(row.strings) {
                    b.append_option(s.as_deref());
                }
                size.append_option(row.size);
                text.append_value(rest.as_deref().unwrap_or(row.record));
            }
            Rows::Json(decoder) => {
                if let Some(s) = &inferred {
                    fits_object(&parse_object(record)?, s.fields(), "")?;
                }
                decoder.decode(record).map_err(|e| e.to_string())?;
                decoder.decode(b"\n").map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    fn take_batch(&mut self) -> Result<Option<RecordBatch>> {
        let schema = self.schema();
        let columns: Vec<ArrayRef> = match &mut self.rows {
            None => return Ok(None),
            Some(Rows::Json(d)) => return d.flush().map_err(perr),
            Some(Rows::Ce {
                attrs,
                extensions,
                data,
                data_base64,
            }) => {
                let mut c: Vec<ArrayRef> = attrs.iter_mut().map(finish_sized).collect();
                c.push(Arc::new(extensions.finish()));
                c.push(finish_sized(data));
                c.push(Arc::new(data_base64.finish()));
                c
            }
            Some(Rows::S3 {
                strings,
                size,
                record,
                ..
            }) => {
                let mut c: Vec<ArrayRef> = strings.iter_mut().map(finish_sized).collect();
                c.push(Arc::new(size.finish()));
                c.push(finish_sized(record));
                c
            }
        };
        if columns.first().is_none_or(|c| c.is_empty()) {
            return Ok(None);
        }
        RecordBatch::try_new(schema, columns)
            .map(Some)
            .map_err(perr)
    }

    fn writer(&mut self) -> Result<&mut ArrowWriter<Vec<u8>>> {
        if self.writer.is_none() {
            let kv = |k: &str, v: String| KeyValue::new(k.to_owned(), v);
            let mut props = WriterProperties::builder()
                .set_compression(self.opts.compression.codec())
                // Min/max per column chunk, not per page: a column index
                // per page costs footer bytes on every object and helps
                // only objects of many pages per column.
                .set_statistics_enabled(EnabledStatistics::Chunk)
                // Min/max of long strings would fill the footer.
                .set_statistics_truncate_length(Some(STATS_TRUNCATE))
                .set_column_index_truncate_length(Some(STATS_TRUNCATE))
                // Row groups are closed here, by rows and by size.
                .set_max_row_group_row_count(None)
                .set_max_row_group_bytes(None)
                .set_created_by("s3-event-sink".to_owned())
                .set_key_value_metadata(Some(vec![
                    kv(META_SCHEMA, self.opts.schema.name().to_owned()),
                    kv(META_COMPRESSION, self.opts.compression.to_string()),
                    kv(META_ROW_GROUP_SIZE, self.opts.row_group_size.to_string()),
                ]));
            // Nobody filters on the min/max of JSON text or binary data.
            // Nor do their values repeat: no dictionary either. But `rest`
            // of `s3-compact` repeats when records differ only in what the
            // columns hold.
            for c in ["data", "data_base64", "record", "rest"] {
                props = props.set_column_statistics_enabled(c.into(), EnabledStatistics::None);
                if c != "rest" {
                    props = props.set_column_dictionary_enabled(c.into(), false);
                }
            }
            // S3 records: keys, times and sequencers are (nearly) all
            // distinct and share long prefixes; sizes are distinct. A
            // dictionary only adds its indices: delta encodings instead.
            for c in ["key", "event_time", "sequencer"] {
                props = props
                    .set_column_dictionary_enabled(c.into(), false)
                    .set_column_encoding(c.into(), ParquetEncoding::DELTA_BYTE_ARRAY);
            }
            props = props
                .set_column_dictionary_enabled("size".into(), false)
                .set_column_encoding("size".into(), ParquetEncoding::DELTA_BINARY_PACKED);
            let props = props.build();
            let w = ArrowWriter::try_new(Vec::with_capacity(64 * 1024), self.schema(), Some(props))
                .map_err(perr)?;
            self.writer = Some(w);
        }
        Ok(self.writer.as_mut().expect("writer was just made"))
    }

    /// Writes the gathered rows into the row group, closing it when full.
    fn write_chunk(&mut self) -> Result<()> {
        let batch = self.take_batch()?;
        let raw = std::mem::take(&mut self.pending_raw);
        self.pending_rows = 0;
        let (rows, target, rg_ratio) = (self.opts.row_group_size, self.target, self.rg_ratio);
        let w = self.writer()?;
        if let Some(b) = batch {
            w.write(&b).map_err(perr)?;
        }
        let full = w.in_progress_rows() >= rows
            || target.is_some_and(|t| {
                w.in_progress_size() as f64 * rg_ratio >= (t / 8).max(16 * 1024) as f64
            });
        if full {
            let (est, before) = (w.in_progress_size(), w.bytes_written());
            w.flush().map_err(perr)?;
            let actual = w.bytes_written() - before;
            if est > 0 {
                self.rg_ratio = (actual as f64 / est as f64).clamp(0.01, 4.0);
            }
            self.row_groups += 1;
        }
        self.raw_in_writer += raw;
        let w = self.writer.as_ref().expect("writer exists");
        let encoded = w.bytes_written() as f64 + w.in_progress_size() as f64 * self.rg_ratio;
        if self.raw_in_writer > 0 {
            self.raw_ratio = (encoded / self.raw_in_writer as f64).clamp(0.001, 4.0);
        }
        Ok(())
    }

    fn footer_estimate(&self) -> usize {
        let cols = self.schema.as_ref().map_or(1, |s| s.fields().len().max(1));
        4096 + cols * (self.row_groups + 1) * FOOTER_PER_CHUNK
    }

    pub(crate) fn encoded_len(&self) -> usize {
        let pending = (self.pending_raw as f64 * self.raw_ratio).ceil() as usize;
        let body = match &self.writer {
            None => 4 + pending,
            Some(w) => {
                w.bytes_written()
                    + (w.in_progress_size() as f64 * self.rg_ratio).ceil() as usize
                    + pending
            }
        };
        body + self.footer_estimate()
    }

    pub(crate) fn finish(mut self) -> Result<Vec<u8>> {
        if !self.staged.is_empty() || (self.schema.is_none() && self.writer.is_none()) {
            if self.staged.is_empty() {
                self.schema = Some(Arc::new(Schema::empty()));
            } else {
                self.fix_schema()?;
            }
        }
        self.write_chunk()?;
        let w = self.writer.take().expect("write_chunk makes the writer");
        w.into_inner().map_err(perr)
    }
}

/// Reads a Parquet object back to JSON records: the records pushed, for
/// this crate's schemas (by the file's `s3-event.schema`); one object per
/// row, through arrow-json, for other files.
pub(crate) fn read(
    key: &str,
    bytes: &[u8],
    max_decoded: u64,
    decoded: &mut crate::Decoded,
) -> Result<()> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let bad = |reason: String| Error::InvalidParquet {
        key: key.to_owned(),
        reason,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(bytes))
        .map_err(|e| bad(e.to_string()))?;
    let meta = builder.metadata().file_metadata().key_value_metadata();
    let get = |k: &str| {
        meta.and_then(|m| m.iter().find(|kv| kv.key == k))
            .and_then(|kv| kv.value.clone())
    };
    let schema = get(META_SCHEMA).and_then(|s| s.parse::<ParquetSchema>().ok());
    let mut opts = ParquetOptions::default().with_schema(schema.unwrap_or_default());
    if let Some(c) = get(META_COMPRESSION) {
        opts.compression = match c.as_str() {
            "none" => PageCompression::None,
            "snappy" => PageCompression::Snappy,
            z => z
                .strip_prefix("zstd(")
                .and_then(|l| l.strip_suffix(')'))
                .and_then(|l| l.parse().ok())
                .map_or(PageCompression::default(), |level| PageCompression::Zstd {
                    level,
                }),
        };
    }
    if let Some(n) = get(META_ROW_GROUP_SIZE).and_then(|n| n.parse().ok()) {
        opts.row_group_size = n;
    }
    decoded.encoding = crate::Encoding::Parquet(opts);
    let reader = builder.build().map_err(|e| bad(e.to_string()))?;
    let mut total = 0u64;
    let mut row = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        let records: Vec<std::result::Result<Value, String>> = match schema {
            Some(ParquetSchema::CloudEvents) => ce_records(&batch),
            Some(ParquetSchema::S3Records) => s3_records(&batch),
            Some(ParquetSchema::S3Compact) => s3_compact_records(&batch),
            _ => json_records(&batch).map_err(|e| bad(e.to_string()))?,
        };
        for r in records {
            row += 1;
            match r {
                Ok(v) => {
                    total += v.to_string().len() as u64;
                    if total > max_decoded {
                        return Err(Error::TooLarge {
                            key: key.to_owned(),
                            limit: max_decoded,
                        });
                    }
                    decoded.records.push(v);
                    decoded.positions.push((row, 0));
                }
                Err(reason) => decoded.bad.push(crate::BadRecord {
                    line: Some(row),
                    offset: 0,
                    reason,
                }),
            }
        }
    }
    Ok(())
}

fn json_records(
    batch: &RecordBatch,
) -> std::result::Result<Vec<std::result::Result<Value, String>>, arrow_schema::ArrowError> {
    let mut out = Vec::new();
    {
        let mut w = arrow_json::LineDelimitedWriter::new(&mut out);
        w.write(batch)?;
        w.finish()?;
    }
    Ok(out
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).map_err(|e| e.to_string()))
        .collect())
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Option<&'a T> {
    batch.column_by_name(name)?.as_any().downcast_ref::<T>()
}

fn ce_records(batch: &RecordBatch) -> Vec<std::result::Result<Value, String>> {
    use arrow_array::{BinaryArray, MapArray, StringArray};
    let attrs: Vec<Option<&StringArray>> = CE_ATTRS.iter().map(|a| column(batch, a)).collect();
    let ext: Option<&MapArray> = column(batch, "extensions");
    let data: Option<&StringArray> = column(batch, "data");
    let b64: Option<&BinaryArray> = column(batch, "data_base64");
    (0..batch.num_rows())
        .map(|i| {
            let mut m = Map::new();
            for (a, c) in CE_ATTRS.iter().zip(&attrs) {
                if let Some(c) = c.filter(|c| c.is_valid(i)) {
                    m.insert((*a).to_owned(), Value::String(c.value(i).to_owned()));
                }
            }
            if let Some(e) = ext.filter(|e| e.is_valid(i)) {
                let entries = e.value(i);
                let keys = entries.column(0).as_any().downcast_ref::<StringArray>();
                let vals = entries.column(1).as_any().downcast_ref::<StringArray>();
                if let (Some(k), Some(v)) = (keys, vals) {
                    for j in 0..k.len() {
                        let val = if v.is_valid(j) {
                            Value::String(v.value(j).to_owned())
                        } else {
                            Value::Null
                        };
                        m.insert(k.value(j).to_owned(), val);
                    }
                }
            }
            if let Some(d) = data.filter(|d| d.is_valid(i)) {
                let v = serde_json::from_str(d.value(i))
                    .map_err(|e| format!("`data` is not JSON: {e}"))?;
                m.insert("data".to_owned(), v);
            }
            if let Some(b) = b64.filter(|b| b.is_valid(i)) {
                let s = base64::engine::general_purpose::STANDARD.encode(b.value(i));
                m.insert("data_base64".to_owned(), Value::String(s));
            }
            Ok(Value::Object(m))
        })
        .collect()
}

fn s3_records(batch: &RecordBatch) -> Vec<std::result::Result<Value, String>> {
    use arrow_array::StringArray;
    let Some(record) = column::<StringArray>(batch, "record") else {
        return vec![Err("no `record` column".to_owned()); batch.num_rows()];
    };
    (0..batch.num_rows())
        .map(|i| {
            serde_json::from_str(record.value(i)).map_err(|e| format!("`record` is not JSON: {e}"))
        })
        .collect()
}

/// `s3-compact` rows back to records: `rest`, with each column's value
/// put back at its member's place where `rest` does not hold it.
fn s3_compact_records(batch: &RecordBatch) -> Vec<std::result::Result<Value, String>> {
    use arrow_array::{Int64Array, StringArray};
    const PATHS: [&[&str]; 10] = [
        &["eventName"],
        &["eventTime"],
        &["s3", "bucket", "name"],
        &["s3", "object", "key"],
        &["s3", "object", "eTag"],
        &["s3", "object", "versionId"],
        &["s3", "object", "sequencer"],
        &["awsRegion"],
        &["userIdentity", "principalId"],
        &["requestParameters", "sourceIPAddress"],
    ];
    let Some(rest) = column::<StringArray>(batch, "rest") else {
        return vec![Err("no `rest` column".to_owned()); batch.num_rows()];
    };
    let strings: Vec<Option<&StringArray>> = S3_STRINGS
        .iter()
        .chain(["source_ip"].iter())
        .map(|c| column(batch, c))
        .collect();
    let size: Option<&Int64Array> = column(batch, "size");
    (0..batch.num_rows())
        .map(|i| {
            let mut r: Value = serde_json::from_str(rest.value(i))
                .map_err(|e| format!("`rest` is not JSON: {e}"))?;
            for (path, c) in PATHS.iter().zip(&strings) {
                if let Some(c) = c.filter(|c| c.is_valid(i)) {
                    put_back(&mut r, path, || Value::String(c.value(i).to_owned()));
                }
            }
            if let Some(c) = size.filter(|c| c.is_valid(i)) {
                put_back(&mut r, &["s3", "object", "size"], || {
                    Value::from(c.value(i))
                });
            }
            Ok(r)
        })
        .collect()
}

/// Puts `value` at `path` in `record` unless a member is there; makes the
/// objects on the way that are missing.
fn put_back(record: &mut Value, path: &[&str], value: impl FnOnce() -> Value) {
    let mut at = record;
    for (n, name) in path.iter().enumerate() {
        let Value::Object(m) = at else { return };
        if n + 1 == path.len() {
            m.entry(*name).or_insert_with(value);
            return;
        }
        at = m.entry(*name).or_insert_with(|| Value::Object(Map::new()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, BatchEncoder, Compression, Encoding};
    use arrow_array::{Int64Array, MapArray, StringArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use serde_json::json;

    fn encode(opts: ParquetOptions, records: &[Value]) -> Vec<u8> {
        let mut e = BatchEncoder::new(Encoding::Parquet(opts), Compression::gzip());
        assert_eq!(e.compression(), Compression::None, "never compressed twice");
        for r in records {
            e.push(r).unwrap();
        }
        e.finish().unwrap()
    }

    fn batches(bytes: &[u8]) -> Vec<RecordBatch> {
        ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(bytes))
            .unwrap()
            .build()
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn s3_record(i: usize) -> Value {
        json!({
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-west-2",
            "eventTime": format!("2024-05-01T10:{:02}:00.000Z", i % 60),
            "eventName": if i.is_multiple_of(3) { "ObjectRemoved:Delete" } else { "ObjectCreated:Put" },
            "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
            "requestParameters": {"sourceIPAddress": format!("10.0.{}.{}", i % 7, i % 251)},
            "responseElements": {"x-amz-request-id": format!("{:016X}", i * 7919)},
            "s3": {
                "s3SchemaVersion": "1.0", "configurationId": "cfg",
                "bucket": {"name": "photos", "arn": "arn:aws:s3:::photos"},
                "object": {
                    "key": format!("red+flower%2B{i}.jpg"), "size": i * 1024,
                    "eTag": format!("{:032x}", (i as u128).wrapping_mul(0x9e3779b97f4a7c15_u128)),
                    "versionId": format!("v{i}"),
                    "sequencer": format!("{:016X}", 0x0055_0000_0000_0000u64 + i as u64),
                },
            },
        })
    }

    #[test]
    fn cloudevents_columns_and_round_trip() {
        let events = vec![
            json!({"specversion": "1.0", "id": "a", "source": "/s", "type": "t.a",
                   "subject": "k", "time": "2024-01-01T00:00:00Z", "datacontenttype": "application/json",
                   "traceparent": "00-ab", "partitionkey": "p1", "data": {"n": 1, "l": [1, 2]}}),
            json!({"specversion": "1.0", "id": "b", "source": "/s", "type": "t.b",
                   "data_base64": "AAEC/w=="}),
            json!({"specversion": "1.0", "id": "c", "source": "/s", "type": "t.c", "data": "text"}),
        ];
        let bytes = encode(
            ParquetOptions::default().with_schema(ParquetSchema::CloudEvents),
            &events,
        );
        let d = decode("x.parquet", &bytes).unwrap();
        assert!(d.bad.is_empty(), "{:?}", d.bad);
        assert_eq!(d.records, events);
        // The columns hold the values, not only the round trip.
        let b = &batches(&bytes)[0];
        let col = |n: &str| {
            b.column_by_name(n)
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone()
        };
        assert_eq!(
            col("id").iter().collect::<Vec<_>>(),
            [Some("a"), Some("b"), Some("c")]
        );
        assert_eq!(
            col("subject").iter().collect::<Vec<_>>(),
            [Some("k"), None, None]
        );
        assert_eq!(col("data").value(0), r#"{"l":[1,2],"n":1}"#);
        assert!(col("data").is_null(1));
        let ext = b
            .column_by_name("extensions")
            .unwrap()
            .as_any()
            .downcast_ref::<MapArray>()
            .unwrap();
        let e0 = ext.value(0);
        let keys = e0.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        let vals = e0.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(
            keys.iter().collect::<Vec<_>>(),
            [Some("partitionkey"), Some("traceparent")]
        );
        assert_eq!(vals.iter().collect::<Vec<_>>(), [Some("p1"), Some("00-ab")]);
        assert_eq!(ext.value(1).len(), 0);
        let bin = b
            .column_by_name("data_base64")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::BinaryArray>()
            .unwrap();
        assert_eq!(bin.value(1), [0, 1, 2, 255]);
    }

    #[test]
    fn cloudevents_refuses_non_events_by_index() {
        let mut e = BatchEncoder::new(
            Encoding::Parquet(ParquetOptions::default().with_schema(ParquetSchema::CloudEvents)),
            Compression::None,
        );
        e.push(&json!({"specversion": "1.0", "id": "a", "source": "/s", "type": "t"}))
            .unwrap();
        let err = e
            .push(&json!({"specversion": "1.0", "source": "/s", "type": "t"}))
            .unwrap_err();
        assert!(
            matches!(&err, Error::RecordMismatch { index: 1, reason } if reason.contains("`id`")),
            "{err}"
        );
        let err = e.push(&json!({"specversion": "1.0", "id": "b", "source": "/s", "type": "t", "data_base64": "!!"})).unwrap_err();
        assert!(err.to_string().contains("data_base64"), "{err}");
        assert_eq!(e.len(), 1);
        let d = decode("x.parquet", &e.finish().unwrap()).unwrap();
        assert_eq!(d.records.len(), 1);
    }

    #[test]
    fn s3_records_columns_and_round_trip() {
        let records: Vec<Value> = (0..3000).map(s3_record).collect();
        let opts = ParquetOptions::default()
            .with_schema(ParquetSchema::S3Records)
            .with_row_group_size(1000);
        let bytes = encode(opts, &records);
        let d = decode("x", &bytes).unwrap();
        assert_eq!(d.encoding, Encoding::Parquet(opts));
        assert_eq!(d.records, records);
        let bs = batches(&bytes);
        let meta =
            ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes.clone())).unwrap();
        assert_eq!(meta.metadata().num_row_groups(), 3);
        let b = &bs[0];
        let col = |n: &str| {
            b.column_by_name(n)
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone()
        };
        assert_eq!(col("key").value(5), "red flower+5.jpg");
        assert_eq!(col("bucket").value(5), "photos");
        assert_eq!(col("event_name").value(3), "ObjectRemoved:Delete");
        assert_eq!(col("source_ip").value(5), "10.0.5.5");
        assert_eq!(col("principal_id").value(5), "AWS:AIDAEXAMPLE");
        assert_eq!(col("version_id").value(5), "v5");
        assert_eq!(col("region").value(5), "us-west-2");
        let size = b
            .column_by_name("size")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(size.value(5), 5 * 1024);
        let whole: Value = serde_json::from_str(col("record").value(7)).unwrap();
        assert_eq!(whole, records[7]);
    }

    /// The S3 columns are read without a JSON tree; each must be what a
    /// lookup in the tree gives (a string, or null for any other value),
    /// including escaped strings, members of other types and odd spacing.
    #[test]
    fn s3_columns_are_what_a_json_tree_lookup_gives() {
        let mut odd = s3_record(4);
        odd["eventTime"] = json!(17);
        odd["userIdentity"] = json!("not an object");
        odd["requestParameters"] = json!({"sourceIPAddress": ["10.0.0.1"], "x": {"y": [1, {}]}});
        odd["s3"]["object"]["eTag"] = json!(null);
        odd["s3"]["object"]["sequencer"] = json!("tab\there \"q\" \u{e9}");
        odd["s3"]["object"]["size"] = json!(null);
        odd["extra"] = json!([{"eventName": "nested, not taken"}]);
        let mut big = s3_record(5);
        big["s3"]["object"]["size"] = json!(u64::MAX / 2);
        // Member names that need escaping, a key that is escaped but has
        // nothing to decode, members of the levels that are empty.
        let mut names = s3_record(6);
        names["we\"ird\n"] = json!({"x\u{e9}": [1, "two"]});
        names["s3"]["object"]["key"] = json!("tab\tkey \u{e9}");
        names["s3"]["bucket"] = json!({"name": "b"});
        names["userIdentity"] = json!({});
        for v in [s3_record(1), s3_record(3), odd, big, names] {
            for text in [v.to_string(), serde_json::to_string_pretty(&v).unwrap()] {
                let row = S3Row::parse(text.as_bytes()).unwrap();
                let at = |p: &str| v.pointer(p).and_then(Value::as_str);
                let raw_key = at("/s3/object/key").unwrap();
                let key = s3_event_core::decode_key(raw_key).unwrap();
                let want = [
                    at("/eventName"),
                    at("/eventTime"),
                    at("/s3/bucket/name"),
                    Some(key.as_str()),
                    at("/s3/object/eTag"),
                    at("/s3/object/versionId"),
                    at("/s3/object/sequencer"),
                    at("/awsRegion"),
                    at("/userIdentity/principalId"),
                    at("/requestParameters/sourceIPAddress"),
                ];
                let got: Vec<Option<&str>> = row.strings.iter().map(|s| s.as_deref()).collect();
                assert_eq!(got, want, "{text}");
                assert_eq!(
                    row.size,
                    v.pointer("/s3/object/size").and_then(Value::as_i64)
                );
                assert_eq!(row.record, text);
                // `s3-compact` reads the same columns, and gives the
                // record back.
                let mut rest = String::new();
                let compact = S3Row::parse_compact(text.as_bytes(), &mut rest).unwrap();
                assert_eq!(compact.strings, row.strings, "{text}");
                assert_eq!(compact.size, row.size, "{text}");
                let opts = ParquetOptions::default().with_schema(ParquetSchema::S3Compact);
                let mut e = BatchEncoder::new(Encoding::Parquet(opts), Compression::None);
                e.push_raw(text.as_bytes()).unwrap();
                let d = decode("x", &e.finish().unwrap()).unwrap();
                assert_eq!(d.records, std::slice::from_ref(&v), "{rest}");
            }
        }
        let refused = |text: &str| {
            let err = S3Row::parse(text.as_bytes()).err().unwrap();
            let compact = S3Row::parse_compact(text.as_bytes(), &mut String::new());
            assert_eq!(
                compact.err().map(|e| e[..10].to_owned()),
                Some(err[..10].to_owned())
            );
            err
        };
        let dup = r#"{"eventName": "a", "s3": {"object": {"key": "k", "key": "k2"}}}"#;
        assert!(refused(dup).contains("duplicate field `key`"));
        assert_eq!(refused("[1, 2]"), "not a JSON object");
        assert!(refused("{\"eventName\": ").starts_with("not JSON: "));
        let mut no_bucket = s3_record(1);
        no_bucket["s3"]["bucket"]["name"] = json!(5);
        assert_eq!(
            refused(&no_bucket.to_string()),
            "not an S3 event record: no string `s3.bucket.name`"
        );
        for size in [json!(1.5), json!("12"), json!(u64::MAX), json!({"n": 1})] {
            let mut r = s3_record(1);
            r["s3"]["object"]["size"] = size;
            assert_eq!(
                refused(&r.to_string()),
                "`s3.object.size` is not an integer"
            );
        }
    }

    /// `s3-compact` writes the same columns as `s3`, and `rest` in place
    /// of `record`; the records read back are the records pushed.
    #[test]
    fn s3_compact_columns_rest_and_round_trip() {
        let mut records: Vec<Value> = (0..3000).map(s3_record).collect();
        // A key with nothing to decode is held by its column alone.
        records[1]["s3"]["object"]["key"] = json!("plain/key-1.jpg");
        let opts = ParquetOptions::default().with_row_group_size(1000);
        let full = encode(opts.with_schema(ParquetSchema::S3Records), &records);
        let compact_opts = opts.with_schema(ParquetSchema::S3Compact);
        let compact = encode(compact_opts, &records);
        let d = decode("x", &compact).unwrap();
        assert_eq!(d.encoding, Encoding::Parquet(compact_opts));
        assert_eq!(d.records, records);
        let (f, c) = (batches(&full), batches(&compact));
        assert_eq!(f.len(), c.len());
        for (f, c) in f.iter().zip(&c) {
            let n = f.num_columns();
            assert_eq!(f.columns()[..n - 1], c.columns()[..n - 1]);
            assert_eq!(c.schema().field(n - 1).name(), "rest");
        }
        let rest = |row: usize| -> Value {
            let col = c[0].column_by_name("rest").unwrap();
            let col = col.as_any().downcast_ref::<StringArray>().unwrap();
            serde_json::from_str(col.value(row)).unwrap()
        };
        // What the columns hold is not in `rest`; the rest is, as pushed.
        let want = json!({
            "eventVersion": "2.1", "eventSource": "aws:s3",
            "userIdentity": {},
            "requestParameters": {},
            "responseElements": {"x-amz-request-id": format!("{:016X}", 5 * 7919)},
            "s3": {
                "s3SchemaVersion": "1.0", "configurationId": "cfg",
                "bucket": {"arn": "arn:aws:s3:::photos"},
                "object": {"key": "red+flower%2B5.jpg"},
            },
        });
        assert_eq!(rest(5), want);
        let mut want1 = want.clone();
        want1["responseElements"]["x-amz-request-id"] = json!(format!("{:016X}", 7919));
        want1["s3"]["object"] = json!({});
        assert_eq!(
            rest(1),
            want1,
            "a key without `%` or `+` is left to its column"
        );
        assert!(
            compact.len() * 2 < full.len(),
            "{} bytes compact, {} whole",
            compact.len(),
            full.len()
        );
    }

    /// Records as text that a `Value` cannot hold (a number out of range,
    /// a lone surrogate, nesting deeper than 128) or would spell otherwise:
    /// `s3-compact` takes what `s3` takes, with the same columns, `check`
    /// agrees with its encoder, and the two files read back alike.
    #[test]
    fn s3_compact_takes_raw_text_as_s3_does() {
        let deep = format!("{}1{}", "[".repeat(130), "]".repeat(130));
        let members = [
            r#""eventTime":[1e400]"#.to_owned(),
            r#""awsRegion":["\ud800"]"#.to_owned(),
            r#""userIdentity":{"\ud800":1}"#.to_owned(),
            r#""userIdentity":[1e400,{"a":"\ud800"}]"#.to_owned(),
            r#""requestParameters":"\u00e9 \"q\"""#.to_owned(),
            r#""requestParameters":-0"#.to_owned(),
            r#""x\u00e9":{"\u00e9":[-0,1E2]}"#.to_owned(),
            "\"eventTime\":\"a\tb\"".to_owned(),
            "\"x\":\"a\tb\"".to_owned(),
            format!(r#""eventTime":{deep}"#),
            format!(r#""userIdentity":{deep}"#),
        ];
        let read = |schema: ParquetSchema, text: &str| {
            let opts = ParquetOptions::default().with_schema(schema);
            let mut e = BatchEncoder::new(Encoding::Parquet(opts), Compression::None);
            e.push_raw(text.as_bytes()).unwrap();
            let d = decode("x", &e.finish().unwrap()).unwrap();
            (d.records, d.bad.len())
        };
        for member in members {
            let text = format!(
                r#"{{"eventName":"a",{member},"s3":{{"bucket":{{"name":"b"}},"object":{{"key":"k"}}}}}}"#
            );
            let s3 = S3Row::parse(text.as_bytes()).map(|r| (r.strings, r.size));
            let mut rest = String::new();
            let compact =
                S3Row::parse_compact(text.as_bytes(), &mut rest).map(|r| (r.strings, r.size));
            assert_eq!(compact.is_ok(), s3.is_ok(), "{text}: {compact:?}");
            let checked = check(ParquetSchema::S3Compact, None, text.as_bytes());
            assert_eq!(checked.is_ok(), compact.is_ok(), "{text}");
            if let (Ok(a), Ok(b)) = (&s3, &compact) {
                assert_eq!(a, b, "{text}");
                let whole = read(ParquetSchema::S3Records, &text);
                assert_eq!(
                    read(ParquetSchema::S3Compact, &text),
                    whole,
                    "{text}: {rest}"
                );
            }
        }
    }

    /// What a test does to a member of an S3 record: keeps it (`None`),
    /// removes it (`Some(None)`) or sets it to a value of any JSON type,
    /// strings with what needs escaping or URL-decoding. Objects
    /// (`level`) are mostly kept, so that most records are accepted.
    fn s3_member(level: bool) -> impl proptest::strategy::Strategy<Value = Option<Option<Value>>> {
        use proptest::prelude::*;
        let keep = if level { 24 } else { 4 };
        prop_oneof![
            keep => Just(None),
            1 => Just(Some(None)),
            4 => "[a-z%+ \"\\\\\t\u{e9}/2B]{0,8}".prop_map(|s| Some(Some(Value::String(s)))),
            1 => any::<i64>().prop_map(|n| Some(Some(json!(n)))),
            1 => Just(Some(Some(Value::Null))),
            1 => Just(Some(Some(json!({"x": [1, "y"], "name": "n"})))),
            1 => Just(Some(Some(json!(1.5)))),
            1 => Just(Some(Some(json!(["a"])))),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Whatever the members the columns read are (absent, another type,
        /// escaped, URL-encoded), and whether their objects are there:
        /// `s3-compact` refuses what `s3` refuses, reads the same columns,
        /// and gives back the record.
        #[test]
        fn s3_compact_gives_back_what_s3_accepts(
            levels in proptest::collection::vec(s3_member(true), 5),
            members in proptest::collection::vec(s3_member(false), 11),
            seed in 0usize..1000,
        ) {
            const PATHS: [&str; 16] = [
                "/userIdentity", "/requestParameters", "/s3", "/s3/bucket", "/s3/object",
                "/eventName", "/eventTime", "/awsRegion", "/userIdentity/principalId",
                "/requestParameters/sourceIPAddress", "/s3/bucket/name", "/s3/object/key",
                "/s3/object/size", "/s3/object/eTag", "/s3/object/versionId",
                "/s3/object/sequencer",
            ];
            let mut v = s3_record(seed);
            for (path, m) in PATHS.iter().zip(levels.iter().chain(&members)) {
                let (parent, name) = path.rsplit_once('/').unwrap();
                let Some(Value::Object(o)) = v.pointer_mut(parent) else {
                    continue;
                };
                match m {
                    None => None,
                    Some(Some(x)) => o.insert(name.to_owned(), x.clone()),
                    Some(None) => o.remove(name),
                };
            }
            let text = v.to_string();
            let mut rest = String::new();
            match S3Row::parse(text.as_bytes()) {
                Ok(row) => {
                    let compact = S3Row::parse_compact(text.as_bytes(), &mut rest).unwrap();
                    proptest::prop_assert_eq!(&compact.strings, &row.strings);
                    proptest::prop_assert_eq!(compact.size, row.size);
                    let opts = ParquetOptions::default().with_schema(ParquetSchema::S3Compact);
                    let mut e = BatchEncoder::new(Encoding::Parquet(opts), Compression::None);
                    e.push_raw(text.as_bytes()).unwrap();
                    let d = decode("x", &e.finish().unwrap()).unwrap();
                    proptest::prop_assert_eq!(&d.records, &[v]);
                }
                Err(_) => {
                    proptest::prop_assert!(S3Row::parse_compact(text.as_bytes(), &mut rest).is_err());
                }
            }
        }
    }

    #[test]
    fn inferred_schema_refuses_what_does_not_fit() {
        let mut e = BatchEncoder::new(
            Encoding::Parquet(ParquetOptions::default()),
            Compression::None,
        );
        let first = json!({"a": 1, "b": "x", "c": {"d": [1.5, 2.0]}, "e": null});
        e.push(&first).unwrap();
        let err = e.push(&json!({"a": "one"})).unwrap_err();
        assert!(
            matches!(&err, Error::RecordMismatch { index: 1, reason } if reason.contains("`a`")),
            "{err}"
        );
        let err = e.push(&json!({"zz": 1})).unwrap_err();
        assert!(err.to_string().contains("`zz`"), "{err}");
        let err = e.push(&json!({"c": {"d": ["s"]}})).unwrap_err();
        assert!(err.to_string().contains("`c.d[0]`"), "{err}");
        let second = json!({"a": 2, "e": "now a string"});
        e.push(&second).unwrap();
        let d = decode("x.parquet", &e.finish().unwrap()).unwrap();
        // Null fields are left out when read back.
        let mut want = first.clone();
        want.as_object_mut().unwrap().remove("e");
        assert_eq!(d.records, vec![want, second]);
    }

    #[test]
    fn encoded_len_within_ten_percent_of_the_target() {
        for (max, schema) in [
            (256 * 1024, ParquetSchema::S3Records),
            (2 << 20, ParquetSchema::S3Records),
            (1 << 20, ParquetSchema::Inferred),
        ] {
            let opts = ParquetOptions::default().with_schema(schema);
            let mut e =
                BatchEncoder::new(Encoding::Parquet(opts), Compression::None).with_target_size(max);
            let mut i = 0;
            // As the sink does: close once the estimate reaches the limit.
            while e.encoded_len() < max - 2048 {
                let r = serde_json::to_vec(&s3_record(i)).unwrap();
                e.push_raw(&r).unwrap();
                i += 1;
            }
            let fin = e.finish().unwrap().len();
            assert!(
                fin.abs_diff(max) * 10 <= max,
                "{schema}: {fin} bytes for a {max} target ({i} records)"
            );
        }
    }

    /// Bytes per record, Parquet beside gzip NDJSON (run with --ignored --nocapture).
    #[test]
    #[ignore]
    fn bytes_per_record_against_gzip_ndjson() {
        let n = 100_000;
        let records: Vec<Value> = (0..n).map(s3_record).collect();
        let mut gz = BatchEncoder::new(Encoding::Ndjson, Compression::gzip());
        let t = std::time::Instant::now();
        for r in &records {
            gz.push(r).unwrap();
        }
        let gz = gz.finish().unwrap().len();
        let t_gz = t.elapsed();
        for schema in [ParquetSchema::S3Records, ParquetSchema::Inferred] {
            let t = std::time::Instant::now();
            let pq = encode(ParquetOptions::default().with_schema(schema), &records).len();
            eprintln!(
                "{n} records: gzip ndjson {:.1} B/rec in {t_gz:?}; parquet {schema} zstd {:.1} B/rec in {:?}",
                gz as f64 / n as f64,
                pq as f64 / n as f64,
                t.elapsed()
            );
        }
    }
}
