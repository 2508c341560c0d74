//! Encoders: NDJSON or a JSON array, optionally gzip-compressed.
//!
//! ```
//! use s3_event_sink::{BatchEncoder, Compression, Encoding};
//!
//! let mut enc = BatchEncoder::new(Encoding::JsonArray, Compression::None);
//! enc.push(&serde_json::json!({"a": 1}))?;
//! enc.push_raw(br#"{"b":2}"#)?;
//! assert_eq!(enc.extension(), ".json");
//! assert_eq!(enc.encoded_len(), 17);
//! assert_eq!(enc.finish()?, br#"[{"a":1},{"b":2}]"#);
//!
//! let mut enc: BatchEncoder = "ndjson".parse::<Encoding>()?.encoder("gzip".parse()?);
//! enc.push(&serde_json::json!({"a": 1}))?;
//! assert_eq!(enc.extension(), ".ndjson.gz");
//! assert_eq!(enc.content_encoding(), Some("gzip"));
//! let bytes = enc.finish()?;
//! let decoded = s3_event_sink::decode("x.ndjson.gz", &bytes)?;
//! assert_eq!(decoded.records, vec![serde_json::json!({"a": 1})]);
//! # Ok::<(), s3_event_sink::Error>(())
//! ```

use std::fmt;
use std::io::Write;
use std::str::FromStr;

use flate2::write::DeflateEncoder;
use serde::Serialize;

use crate::error::{Error, Result};

/// How records are laid out in an object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encoding {
    /// One JSON value per line (`\n`-terminated).
    #[default]
    Ndjson,
    /// One JSON array holding every record.
    JsonArray,
    /// A Parquet file (feature `parquet`); see [`crate::ParquetSchema`] for
    /// the schemas. Its pages are compressed by the options' compression;
    /// the object is never compressed again (a [`BatchEncoder`] ignores its
    /// [`Compression`], and the sink refuses any but `None`).
    #[cfg(feature = "parquet")]
    #[cfg_attr(docsrs, doc(cfg(feature = "parquet")))]
    Parquet(crate::ParquetOptions),
}

impl Encoding {
    /// The file extension, with its dot: `.ndjson`, `.json` or `.parquet`.
    pub fn extension(self) -> &'static str {
        match self {
            Encoding::Ndjson => ".ndjson",
            Encoding::JsonArray => ".json",
            #[cfg(feature = "parquet")]
            Encoding::Parquet(_) => ".parquet",
        }
    }

    /// The `Content-Type`: `application/x-ndjson`, `application/json` or
    /// `application/vnd.apache.parquet`.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Ndjson => "application/x-ndjson",
            Encoding::JsonArray => "application/json",
            #[cfg(feature = "parquet")]
            Encoding::Parquet(_) => "application/vnd.apache.parquet",
        }
    }

    /// Whether this is [`Encoding::Parquet`].
    pub fn is_parquet(self) -> bool {
        #[cfg(feature = "parquet")]
        if let Encoding::Parquet(_) = self {
            return true;
        }
        false
    }

    /// A new, empty [`BatchEncoder`] for this encoding and `compression`.
    pub fn encoder(self, compression: Compression) -> BatchEncoder {
        BatchEncoder::new(self, compression)
    }
}

impl FromStr for Encoding {
    type Err = Error;

    /// Parses `ndjson`, `json` or, with the `parquet` feature, `parquet`
    /// (with the default `ParquetOptions`) (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("ndjson") {
            Ok(Encoding::Ndjson)
        } else if s.eq_ignore_ascii_case("json") {
            Ok(Encoding::JsonArray)
        } else if s.eq_ignore_ascii_case("parquet") {
            #[cfg(feature = "parquet")]
            return Ok(Encoding::Parquet(crate::ParquetOptions::default()));
            #[cfg(not(feature = "parquet"))]
            return Err(Error::InvalidConfig {
                what: "encoding",
                value: s.to_owned(),
                expected: "`ndjson`, `json` (`parquet` needs the crate feature `parquet`)",
            });
        } else {
            Err(Error::InvalidConfig {
                what: "encoding",
                value: s.to_owned(),
                expected: "`ndjson`, `json`, `parquet`",
            })
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoding::Ndjson => "ndjson",
            Encoding::JsonArray => "json",
            #[cfg(feature = "parquet")]
            Encoding::Parquet(_) => "parquet",
        })
    }
}

/// Whether objects are compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Stored as is.
    #[default]
    None,
    /// gzip (flate2 with the `zlib-rs` backend).
    Gzip {
        /// Compression level, 0 (store) to 9 (best); larger values are clamped to 9.
        level: u32,
    },
    /// zstd (the reference library through the `zstd` crate): smaller and
    /// faster to read back than gzip.
    Zstd {
        /// Compression level, 1 (fastest) to 19 (best); clamped to that range.
        level: u32,
    },
}

impl Compression {
    /// The gzip level used when none is configured.
    pub const DEFAULT_GZIP_LEVEL: u32 = 6;

    /// The zstd level used when none is configured.
    pub const DEFAULT_ZSTD_LEVEL: u32 = 3;

    /// gzip at [`Compression::DEFAULT_GZIP_LEVEL`].
    pub const fn gzip() -> Self {
        Compression::Gzip {
            level: Self::DEFAULT_GZIP_LEVEL,
        }
    }

    /// zstd at [`Compression::DEFAULT_ZSTD_LEVEL`].
    pub const fn zstd() -> Self {
        Compression::Zstd {
            level: Self::DEFAULT_ZSTD_LEVEL,
        }
    }

    /// The extension appended after the encoding's: `.gz`, `.zst` or nothing.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip { .. } => ".gz",
            Compression::Zstd { .. } => ".zst",
        }
    }

    /// The `Content-Encoding` header value: `gzip`, `zstd` or `None`.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip { .. } => Some("gzip"),
            Compression::Zstd { .. } => Some("zstd"),
        }
    }
}

impl FromStr for Compression {
    type Err = Error;

    /// Parses `none`, `gzip` or `zstd` (ASCII case-insensitive; at the
    /// default level).
    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("none") {
            Ok(Compression::None)
        } else if s.eq_ignore_ascii_case("gzip") {
            Ok(Compression::gzip())
        } else if s.eq_ignore_ascii_case("zstd") {
            Ok(Compression::zstd())
        } else {
            Err(Error::InvalidConfig {
                what: "compression",
                value: s.to_owned(),
                expected: "`gzip`, `zstd`, `none`",
            })
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip { .. } => "gzip",
            Compression::Zstd { .. } => "zstd",
        })
    }
}

/// Why `record` cannot be one record of `encoding`, if it cannot: blank
/// records and, in NDJSON, raw newlines (they would read back as zero or
/// several records).
pub(crate) fn invalid_record(encoding: Encoding, record: &[u8]) -> Option<&'static str> {
    if record.iter().all(u8::is_ascii_whitespace) {
        Some("empty record")
    } else if encoding == Encoding::Ndjson && memchr::memchr(b'\n', record).is_some() {
        Some("raw newline in an NDJSON record")
    } else {
        None
    }
}

/// How many bytes the gzip encoder gathers before feeding deflate.
pub(crate) const GZIP_CHUNK: usize = 16 * 1024;

/// The gzip header's length.
pub(crate) const GZIP_HEADER_LEN: usize = 10;

/// gzip header (10) + trailer (8) + one final empty stored block (5):
/// what `finish` may still add on top of the data itself.
const GZIP_OVERHEAD: usize = 10 + 8 + 5;

/// The estimated final size of a gzip stream that has produced `produced`
/// bytes (header included) out of `total_in` bytes of input, its output
/// having last grown while the input from `in_at_growth` on was being
/// written: the input not yet accounted for is counted at the ratio
/// observed so far (1.0 before any output), plus the trailer's bytes.
pub(crate) fn gzip_estimate(produced: usize, in_at_growth: usize, total_in: usize) -> usize {
    let pending = total_in.saturating_sub(in_at_growth);
    let ratio = if in_at_growth > 0 && produced > GZIP_OVERHEAD {
        (produced as f64 / in_at_growth as f64).min(1.0)
    } else {
        1.0
    };
    produced + (pending as f64 * ratio).ceil() as usize + GZIP_OVERHEAD
}

/// The 10-byte gzip header flate2's `GzEncoder` writes: no name, mtime 0,
/// XFL from the level (2: best, 4: fastest), OS unknown (255).
fn gzip_header(level: u32) -> Vec<u8> {
    let xfl = match level {
        9 => 2,
        1 => 4,
        _ => 0,
    };
    let mut v = Vec::with_capacity(8 * 1024);
    v.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]);
    v
}

/// A gzip stream into memory: a raw deflate stream after a gzip header; the
/// CRC-32 (crc32fast, much faster than the deflate backend's own) and the
/// trailer are ours. Fed in chunks by [`BatchEncoder`] and by the sink's
/// background compression.
#[derive(Debug)]
pub(crate) struct GzipStream {
    w: DeflateEncoder<Vec<u8>>,
    crc: crc32fast::Hasher,
    /// Uncompressed bytes fed in total.
    fed: usize,
    /// `fed` before the feed during which the output last grew (that feed's
    /// data is still partly in the compressor).
    in_at_growth: usize,
}

impl GzipStream {
    pub(crate) fn new(level: u32) -> Self {
        let level = level.min(9);
        GzipStream {
            w: DeflateEncoder::new(gzip_header(level), flate2::Compression::new(level)),
            crc: crc32fast::Hasher::new(),
            fed: 0,
            in_at_growth: 0,
        }
    }

    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<()> {
        self.crc.update(bytes);
        let before = self.w.total_out();
        self.w
            .write_all(bytes)
            .map_err(|source| Error::Compress { source })?;
        if self.w.total_out() != before {
            self.in_at_growth = self.fed;
        }
        self.fed += bytes.len();
        Ok(())
    }

    /// The header plus what deflate has produced, including what flate2
    /// still buffers (it reaches the Vec on the next write).
    pub(crate) fn produced(&self) -> usize {
        GZIP_HEADER_LEN + self.w.total_out() as usize
    }

    pub(crate) fn in_at_growth(&self) -> usize {
        self.in_at_growth
    }

    pub(crate) fn finish(self) -> Result<Vec<u8>> {
        let mut v = self
            .w
            .finish()
            .map_err(|source| Error::Compress { source })?;
        v.extend_from_slice(&self.crc.finalize().to_le_bytes());
        // ISIZE: the input size modulo 2^32 (RFC 1952).
        v.extend_from_slice(&(self.fed as u32).to_le_bytes());
        Ok(v)
    }
}

/// A zstd stream into memory, fed in chunks like [`GzipStream`].
struct ZstdStream {
    w: zstd::stream::write::Encoder<'static, Vec<u8>>,
    fed: usize,
    in_at_growth: usize,
}

impl std::fmt::Debug for ZstdStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZstdStream")
            .field("fed", &self.fed)
            .finish()
    }
}

impl ZstdStream {
    fn new(level: u32) -> Result<Self> {
        let level = level.clamp(1, 19) as i32;
        let w = zstd::stream::write::Encoder::new(Vec::with_capacity(8 * 1024), level)
            .map_err(|source| Error::Compress { source })?;
        Ok(ZstdStream {
            w,
            fed: 0,
            in_at_growth: 0,
        })
    }

    fn feed(&mut self, bytes: &[u8]) -> Result<()> {
        let before = self.w.get_ref().len();
        self.w
            .write_all(bytes)
            .map_err(|source| Error::Compress { source })?;
        if self.w.get_ref().len() != before {
            self.in_at_growth = self.fed;
        }
        self.fed += bytes.len();
        Ok(())
    }

    fn finish(self) -> Result<Vec<u8>> {
        self.w.finish().map_err(|source| Error::Compress { source })
    }
}

#[derive(Debug)]
enum Out {
    Plain(Vec<u8>),
    #[cfg(feature = "parquet")]
    Parquet(Box<crate::columnar::ParquetBatch>),
    Zstd {
        stream: Box<ZstdStream>,
        staged: Vec<u8>,
        total_in: usize,
    },
    Gzip {
        stream: Box<GzipStream>,
        /// Bytes not yet fed: deflate gets [`GZIP_CHUNK`] pieces, since a
        /// call per record costs more than the copy.
        staged: Vec<u8>,
        /// Uncompressed bytes written in total, staged or fed.
        total_in: usize,
    },
}

/// A streaming encoder for one batch (one object).
///
/// Records go in already serialized ([`push_raw`](Self::push_raw)) or as any
/// `Serialize` value ([`push`](Self::push)); they are laid out as NDJSON lines
/// or a JSON array (`[` first, `,` between, `]` on [`finish`](Self::finish)),
/// optionally through gzip or zstd, into memory (zstd's size is estimated as
/// gzip's, below).
///
/// # `encoded_len`
/// [`encoded_len`](Self::encoded_len) is the size the object would have if
/// finished now, so a flush policy can cut files at a configured size:
///
/// - without compression it is exact (including the closing `]` of an array);
/// - with gzip it is the compressed bytes already produced, plus the
///   uncompressed bytes written since the output last grew times the
///   compression ratio observed so far (1.0 until the compressor has emitted
///   its first block, so small batches are over-estimated, never cut late),
///   plus the gzip header/trailer. Deflate holds back at most about one block,
///   so the estimate stays within a block's compressed size (tens of KiB) of
///   the final length.
#[derive(Debug)]
pub struct BatchEncoder {
    encoding: Encoding,
    compression: Compression,
    out: Out,
    records: usize,
    scratch: Vec<u8>,
}

impl BatchEncoder {
    /// A new, empty encoder. For [`Encoding::Parquet`] `compression` is
    /// ignored (taken as `None`): the pages are compressed inside the file.
    pub fn new(encoding: Encoding, compression: Compression) -> Self {
        #[cfg(feature = "parquet")]
        if let Encoding::Parquet(opts) = encoding {
            return BatchEncoder {
                encoding,
                compression: Compression::None,
                out: Out::Parquet(Box::new(crate::columnar::ParquetBatch::new(opts))),
                records: 0,
                scratch: Vec::new(),
            };
        }
        let mut enc = BatchEncoder {
            encoding,
            compression,
            out: match compression {
                Compression::None => Out::Plain(Vec::new()),
                Compression::Gzip { level } => Out::Gzip {
                    stream: Box::new(GzipStream::new(level)),
                    staged: Vec::new(),
                    total_in: 0,
                },
                // Creating a zstd context fails only without memory; then
                // the batch is stored uncompressed rather than lost.
                Compression::Zstd { level } => match ZstdStream::new(level) {
                    Ok(stream) => Out::Zstd {
                        stream: Box::new(stream),
                        staged: Vec::new(),
                        total_in: 0,
                    },
                    Err(_) => Out::Plain(Vec::new()),
                },
            },
            records: 0,
            scratch: Vec::new(),
        };
        if encoding == Encoding::JsonArray {
            // Writing into memory cannot fail for the plain case; for gzip the
            // one byte just sits in the compressor.
            let _ = enc.write(b"[");
        }
        enc
    }

    /// The encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The compression.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The full file extension, e.g. `.ndjson.gz` or `.json`.
    pub fn extension(&self) -> String {
        format!(
            "{}{}",
            self.encoding.extension(),
            self.compression.extension()
        )
    }

    /// The object's `Content-Type`.
    pub fn content_type(&self) -> &'static str {
        self.encoding.content_type()
    }

    /// The object's `Content-Encoding`, if any.
    pub fn content_encoding(&self) -> Option<&'static str> {
        self.compression.content_encoding()
    }

    /// Number of records pushed.
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether no record has been pushed.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Appends one record given as serialized JSON.
    ///
    /// The bytes are not validated: they must be one JSON value. In NDJSON
    /// mode a record that is empty or contains a raw `\n` is rejected, since it
    /// would be read back as zero or several records (compact `serde_json`
    /// output never contains one; a JSON string's newlines are escaped).
    pub fn push_raw(&mut self, record: &[u8]) -> Result<()> {
        if let Some(reason) = invalid_record(self.encoding, record) {
            return Err(Error::InvalidRecord {
                index: self.records,
                reason,
            });
        }
        self.push_checked(record)
    }

    /// Parquet: the sink's `max_bytes`, so row groups are closed early
    /// enough for [`encoded_len`](Self::encoded_len) to be calibrated.
    #[cfg_attr(not(feature = "parquet"), allow(unused_variables, unused_mut))]
    pub(crate) fn with_target_size(mut self, max_bytes: usize) -> Self {
        #[cfg(feature = "parquet")]
        if let Out::Parquet(p) = &mut self.out {
            p.set_target(max_bytes);
        }
        self
    }

    /// Parquet with an inferred schema: this schema instead of one inferred
    /// from the first record.
    #[cfg(feature = "parquet")]
    pub(crate) fn with_parquet_schema(mut self, schema: Option<arrow_schema::SchemaRef>) -> Self {
        if let (Out::Parquet(p), Some(s)) = (&mut self.out, schema) {
            p.set_schema(s);
        }
        self
    }

    /// Parquet with an inferred schema: infer it from every record pushed
    /// (a recovered batch).
    #[cfg_attr(not(feature = "parquet"), allow(unused_mut))]
    pub(crate) fn infer_from_all(mut self) -> Self {
        #[cfg(feature = "parquet")]
        if let Out::Parquet(p) = &mut self.out {
            p.infer_from_all();
        }
        self
    }

    /// [`push_raw`](Self::push_raw) for a record [`invalid_record`] has
    /// already passed (the sink checks before spooling).
    pub(crate) fn push_checked(&mut self, record: &[u8]) -> Result<()> {
        #[cfg(feature = "parquet")]
        if let Out::Parquet(p) = &mut self.out {
            p.push(record).map_err(|reason| Error::RecordMismatch {
                index: self.records,
                reason,
            })?;
            self.records += 1;
            return Ok(());
        }
        match self.encoding {
            Encoding::Ndjson => {
                self.write(record)?;
                self.write(b"\n")?;
            }
            _ => {
                if self.records > 0 {
                    self.write(b",")?;
                }
                self.write(record)?;
            }
        }
        self.records += 1;
        Ok(())
    }

    /// Serializes `record` with `serde_json` (compact) and appends it.
    pub fn push<T: Serialize + ?Sized>(&mut self, record: &T) -> Result<()> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let res = serde_json::to_writer(&mut scratch, record)
            .map_err(|source| Error::Serialize {
                index: self.records,
                source,
            })
            .and_then(|()| self.push_raw(&scratch));
        self.scratch = scratch;
        res
    }

    /// The size of the object if finished now; see the type's docs.
    pub fn encoded_len(&self) -> usize {
        let closing = usize::from(self.encoding == Encoding::JsonArray);
        match &self.out {
            Out::Plain(v) => v.len() + closing,
            #[cfg(feature = "parquet")]
            Out::Parquet(p) => p.encoded_len(),
            Out::Gzip {
                stream, total_in, ..
            } => gzip_estimate(stream.produced(), stream.in_at_growth(), total_in + closing),
            Out::Zstd {
                stream, total_in, ..
            } => gzip_estimate(
                stream.w.get_ref().len(),
                stream.in_at_growth,
                total_in + closing,
            ),
        }
    }

    /// Closes the array (if any), finishes compression and returns the bytes.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        if self.encoding == Encoding::JsonArray {
            self.write(b"]")?;
        }
        match self.out {
            Out::Plain(v) => Ok(v),
            #[cfg(feature = "parquet")]
            Out::Parquet(p) => p.finish(),
            Out::Gzip {
                mut stream, staged, ..
            } => {
                stream.feed(&staged)?;
                stream.finish()
            }
            Out::Zstd {
                mut stream, staged, ..
            } => {
                stream.feed(&staged)?;
                stream.finish()
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        match &mut self.out {
            Out::Plain(v) => v.extend_from_slice(bytes),
            #[cfg(feature = "parquet")]
            Out::Parquet(_) => unreachable!("Parquet rows are not written as bytes"),
            Out::Gzip {
                stream,
                staged,
                total_in,
            } => {
                staged.extend_from_slice(bytes);
                *total_in += bytes.len();
                if staged.len() >= GZIP_CHUNK {
                    stream.feed(staged)?;
                    staged.clear();
                }
            }
            Out::Zstd {
                stream,
                staged,
                total_in,
            } => {
                staged.extend_from_slice(bytes);
                *total_in += bytes.len();
                if staged.len() >= GZIP_CHUNK {
                    stream.feed(staged)?;
                    staged.clear();
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    const ALL: [(Encoding, Compression); 6] = [
        (Encoding::Ndjson, Compression::None),
        (Encoding::Ndjson, Compression::gzip()),
        (Encoding::Ndjson, Compression::zstd()),
        (Encoding::JsonArray, Compression::None),
        (Encoding::JsonArray, Compression::gzip()),
        (Encoding::JsonArray, Compression::zstd()),
    ];

    fn record(i: usize) -> Value {
        json!({
            "customerId": format!("customer-{}", i % 97),
            "meterApiName": "ComputeHours",
            "meterValue": i * 7 % 1000,
            "meterTimeInMillis": 1_619_445_706_909u64 + (i as u64 * 7919) % 100_000,
            "dimensions": { "region": "us-west-2", "az": format!("az{}", i % 3) },
        })
    }

    #[test]
    fn parses_config_strings() {
        assert_eq!("ndjson".parse::<Encoding>().unwrap(), Encoding::Ndjson);
        assert_eq!("JSON".parse::<Encoding>().unwrap(), Encoding::JsonArray);
        assert_eq!("none".parse::<Compression>().unwrap(), Compression::None);
        assert_eq!(
            "gzip".parse::<Compression>().unwrap(),
            Compression::Gzip { level: 6 }
        );
        let e = "xml".parse::<Encoding>().unwrap_err().to_string();
        assert!(e.contains("`xml`") && e.contains("encoding"), "{e}");
        assert_eq!("ZSTD".parse::<Compression>().unwrap(), Compression::zstd());
        let e = "brotli".parse::<Compression>().unwrap_err().to_string();
        assert!(e.contains("`brotli`") && e.contains("compression"), "{e}");
        for (enc, comp) in ALL {
            assert_eq!(enc.to_string().parse::<Encoding>().unwrap(), enc);
            assert_eq!(comp.to_string().parse::<Compression>().unwrap(), comp);
        }
    }

    #[test]
    fn extension_content_type_and_encoding_per_combination() {
        let expect = [
            (".ndjson", "application/x-ndjson", None),
            (".ndjson.gz", "application/x-ndjson", Some("gzip")),
            (".ndjson.zst", "application/x-ndjson", Some("zstd")),
            (".json", "application/json", None),
            (".json.gz", "application/json", Some("gzip")),
            (".json.zst", "application/json", Some("zstd")),
        ];
        for ((enc, comp), (ext, ct, ce)) in ALL.into_iter().zip(expect) {
            let e = BatchEncoder::new(enc, comp);
            assert_eq!(e.extension(), ext);
            assert_eq!(e.content_type(), ct);
            assert_eq!(e.content_encoding(), ce);
            assert_eq!((e.encoding(), e.compression()), (enc, comp));
        }
    }

    #[test]
    fn json_array_is_one_valid_document() {
        for comp in [Compression::None, Compression::gzip(), Compression::zstd()] {
            for n in [0, 1, 5] {
                let mut e = BatchEncoder::new(Encoding::JsonArray, comp);
                for i in 0..n {
                    e.push(&record(i)).unwrap();
                }
                let bytes = e.finish().unwrap();
                let plain = match comp {
                    Compression::None => bytes,
                    Compression::Gzip { .. } => {
                        let mut out = Vec::new();
                        std::io::Read::read_to_end(
                            &mut flate2::read::GzDecoder::new(&bytes[..]),
                            &mut out,
                        )
                        .unwrap();
                        out
                    }
                    Compression::Zstd { .. } => zstd::decode_all(&bytes[..]).unwrap(),
                };
                let v: Value = serde_json::from_slice(&plain).unwrap();
                assert_eq!(v, Value::Array((0..n).map(record).collect()));
            }
        }
    }

    #[test]
    fn ndjson_rejects_raw_newline_and_empty_records() {
        let mut e = BatchEncoder::new(Encoding::Ndjson, Compression::None);
        assert!(matches!(
            e.push_raw(b"{\"a\":\n1}"),
            Err(Error::InvalidRecord { index: 0, .. })
        ));
        assert!(matches!(
            e.push_raw(b"  "),
            Err(Error::InvalidRecord { .. })
        ));
        e.push(&json!({"s": "multi\nline"})).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e.finish().unwrap(), b"{\"s\":\"multi\\nline\"}\n");
        // A JSON array may hold pretty-printed records.
        let mut e = BatchEncoder::new(Encoding::JsonArray, Compression::None);
        e.push_raw(b"{\"a\":\n1}").unwrap();
        assert_eq!(e.finish().unwrap(), b"[{\"a\":\n1}]");
    }

    #[test]
    fn plain_encoded_len_is_exact_and_grows() {
        for enc in [Encoding::Ndjson, Encoding::JsonArray] {
            let mut e = BatchEncoder::new(enc, Compression::None);
            let mut last = e.encoded_len();
            for i in 0..20_000 {
                e.push(&record(i)).unwrap();
                let now = e.encoded_len();
                assert!(now > last);
                last = now;
            }
            assert_eq!(e.finish().unwrap().len(), last);
        }
    }

    #[test]
    fn compressed_encoded_len_tracks_final_size() {
        // Bound: one block's worth of compressed data (a deflate block, or
        // the up to 128 KiB of input zstd holds) plus the header.
        const BOUND: usize = 64 * 1024;
        for (enc, comp) in [Encoding::Ndjson, Encoding::JsonArray]
            .into_iter()
            .flat_map(|e| [(e, Compression::gzip()), (e, Compression::zstd())])
        {
            let mut e = BatchEncoder::new(enc, comp);
            let mut plain = 0;
            for i in 0..20_000 {
                let r = serde_json::to_vec(&record(i)).unwrap();
                e.push_raw(&r).unwrap();
                plain += r.len() + 1;
                assert!(e.encoded_len() <= plain + GZIP_OVERHEAD + 64);
            }
            let estimate = e.encoded_len();
            let fin = e.finish().unwrap().len();
            assert!(fin * 5 < plain, "compresses: {fin} vs {plain}");
            assert!(estimate <= fin + BOUND, "estimate {estimate} final {fin}");
            assert!(estimate + BOUND >= fin, "estimate {estimate} final {fin}");
            assert!(
                estimate.abs_diff(fin) * 20 <= fin,
                "{comp}: within 5%: {estimate} vs {fin}"
            );
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn round_trips_through_decode(
            records in proptest::collection::vec(
                proptest::collection::btree_map(any::<String>(), json_value(), 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                0..20,
            )
        ) {
            for (enc, comp) in ALL {
                let mut e = BatchEncoder::new(enc, comp);
                for r in &records {
                    e.push(r).unwrap();
                }
                let key = format!("k{}", e.extension());
                let bytes = e.finish().unwrap();
                let d = decode(&key, &bytes).unwrap();
                prop_assert!(d.bad.is_empty(), "{:?}", d.bad);
                prop_assert_eq!(d.encoding, enc);
                prop_assert_eq!(d.gzip, matches!(comp, Compression::Gzip { .. }));
                prop_assert_eq!(d.zstd, matches!(comp, Compression::Zstd { .. }));
                prop_assert_eq!(&d.records, &records);
            }
        }
    }
}
