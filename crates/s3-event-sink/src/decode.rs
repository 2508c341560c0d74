//! Reading objects back: gunzip, detect NDJSON or a JSON array, collect bad records.
//!
//! ```
//! use s3_event_sink::decode;
//!
//! let decoded = decode("ingest/a.ndjson", b"{\"a\":1}\nnot json\n\n{\"b\":2}\n")?;
//! assert_eq!(decoded.records.len(), 2);
//! assert_eq!(decoded.bad.len(), 1);
//! assert_eq!(decoded.bad[0].line, Some(2));
//! assert_eq!(decoded.bad[0].offset, 8);
//! # Ok::<(), s3_event_sink::Error>(())
//! ```

use std::borrow::Cow;
use std::io::Read;

use flate2::read::MultiGzDecoder;
use serde_json::Value;

use crate::encode::Encoding;
use crate::error::{Error, Result};

/// The default limit on an object's decompressed size: 1 GiB.
pub const DEFAULT_MAX_DECODED_BYTES: u64 = 1 << 30;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// A record that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRecord {
    /// The 1-based line: the NDJSON line, or for a JSON array the line of the
    /// parse error. `None` when unknown.
    pub line: Option<usize>,
    /// The byte offset in the (decompressed) data: the start of the NDJSON
    /// line, or the position of the parse error in a JSON array.
    pub offset: usize,
    /// Why it could not be read.
    pub reason: String,
}

/// What [`decode`] read from an object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decoded {
    /// The records that parsed, in order.
    pub records: Vec<Value>,
    /// Where each of `records` starts: its 1-based line and byte offset in
    /// the (decompressed) data, for reports about records that parse but
    /// are not valid for the caller.
    pub positions: Vec<(usize, usize)>,
    /// The records that did not.
    pub bad: Vec<BadRecord>,
    /// The layout that was detected.
    pub encoding: Encoding,
    /// Whether the object was gzip-compressed.
    pub gzip: bool,
    /// Whether the object was zstd-compressed.
    pub zstd: bool,
}

/// Reads a decompressor to the end, at most `max_decoded` bytes.
fn inflate(key: &str, reader: impl Read, max_decoded: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    reader
        .take(max_decoded.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|source| Error::Decompress {
            key: key.to_owned(),
            source,
        })?;
    if out.len() as u64 > max_decoded {
        return Err(Error::TooLarge {
            key: key.to_owned(),
            limit: max_decoded,
        });
    }
    Ok(out)
}

/// Decodes an object with the default size limit ([`DEFAULT_MAX_DECODED_BYTES`]).
///
/// See [`decode_with_limit`].
pub fn decode(key: &str, bytes: &[u8]) -> Result<Decoded> {
    decode_with_limit(key, bytes, DEFAULT_MAX_DECODED_BYTES)
}

/// Decodes an object's bytes.
///
/// - gzip (all members) is undone when the bytes start with `1f 8b` or the key
///   ends with `.gz`; a `.gz` key whose bytes are not gzip is
///   [`Error::NotGzip`]. zstd likewise, by its magic `28 b5 2f fd` or a
///   `.zst` key. Decompressing more than `max_decoded` bytes is
///   [`Error::TooLarge`] (a decompression bomb is an error, not an
///   out-of-memory).
/// - A leading UTF-8 BOM is skipped. If the first non-whitespace byte is `[`
///   the data is one JSON array (a malformed array is one [`BadRecord`] at the
///   error's position), otherwise NDJSON: each non-blank line is one JSON value,
///   a bad line is reported and the rest still read. `\r\n` endings are accepted.
/// - Parquet (magic `PAR1` or a `.parquet` key, feature `parquet`) is read
///   back to JSON records: for this crate's schemas the records that were
///   pushed (see `ParquetSchema`), for other files
///   one object per row; `positions` and `bad` lines are 1-based rows.
/// - Records are any JSON values; validating their shape is the caller's job.
///   (Detection is by the first byte only, so NDJSON whose first record is a
///   top-level array is read as a JSON array; records are normally objects.)
pub fn decode_with_limit(key: &str, bytes: &[u8], max_decoded: u64) -> Result<Decoded> {
    if bytes.starts_with(b"PAR1") || key.ends_with(".parquet") {
        #[cfg(feature = "parquet")]
        {
            let mut decoded = Decoded::default();
            crate::columnar::read(key, bytes, max_decoded, &mut decoded)?;
            return Ok(decoded);
        }
        #[cfg(not(feature = "parquet"))]
        return Err(Error::InvalidParquet {
            key: key.to_owned(),
            reason: "reading Parquet needs the crate feature `parquet`".to_owned(),
        });
    }
    let gzip = bytes.starts_with(&GZIP_MAGIC);
    let zstd = bytes.starts_with(&ZSTD_MAGIC);
    if (!gzip && key.ends_with(".gz")) || (!zstd && key.ends_with(".zst")) {
        return Err(Error::NotGzip {
            key: key.to_owned(),
        });
    }
    let data: Cow<'_, [u8]> = if gzip {
        Cow::Owned(inflate(key, MultiGzDecoder::new(bytes), max_decoded)?)
    } else if zstd {
        let reader =
            zstd::stream::read::Decoder::new(bytes).map_err(|source| Error::Decompress {
                key: key.to_owned(),
                source,
            })?;
        Cow::Owned(inflate(key, reader, max_decoded)?)
    } else {
        Cow::Borrowed(bytes)
    };
    let mut data: &[u8] = &data;
    let mut base = 0;
    if let Some(rest) = data.strip_prefix(b"\xEF\xBB\xBF") {
        data = rest;
        base = 3;
    }
    let first = data.iter().find(|b| !b.is_ascii_whitespace());
    let mut decoded = Decoded {
        gzip,
        zstd,
        ..Decoded::default()
    };
    if first == Some(&b'[') {
        read_json_array(data, base, &mut decoded);
    } else {
        read_ndjson(data, base, &mut decoded);
    }
    Ok(decoded)
}

/// Reads `data` as one JSON array into `decoded`: its elements, or one
/// [`BadRecord`] at the error's position. `base` is `data`'s offset in the
/// object (after a BOM).
fn read_json_array(data: &[u8], base: usize, decoded: &mut Decoded) {
    decoded.encoding = Encoding::JsonArray;
    let parsed =
        serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(data).and_then(|raws| {
            raws.into_iter()
                .map(|raw| {
                    // The element's place in `data` (RawValue borrows from it).
                    let at = raw.get().as_ptr() as usize - data.as_ptr() as usize;
                    let line = 1 + data[..at].iter().filter(|&&b| b == b'\n').count();
                    serde_json::from_str::<Value>(raw.get()).map(|v| (v, (line, base + at)))
                })
                .collect::<serde_json::Result<Vec<_>>>()
        });
    match parsed {
        Ok(records) => {
            (decoded.records, decoded.positions) = records.into_iter().unzip();
        }
        Err(e) => decoded.bad.push(BadRecord {
            line: Some(e.line()),
            offset: base + offset_of(data, e.line(), e.column()),
            reason: e.to_string(),
        }),
    }
}

/// Reads `data` as NDJSON into `decoded`: each non-blank line one record,
/// a bad line one [`BadRecord`] (the rest still read).
fn read_ndjson(data: &[u8], base: usize, decoded: &mut Decoded) {
    decoded.encoding = Encoding::Ndjson;
    let mut start = 0;
    for (idx, line) in data.split(|&b| b == b'\n').enumerate() {
        let line_start = start;
        start += line.len() + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Value>(line) {
            Ok(v) => {
                decoded.records.push(v);
                decoded.positions.push((idx + 1, base + line_start));
            }
            Err(e) => decoded.bad.push(BadRecord {
                line: Some(idx + 1),
                offset: base + line_start,
                reason: e.to_string(),
            }),
        }
    }
}

/// The byte offset of serde_json's 1-based `line` and `column` (column 0 means
/// the error is at the line's start, e.g. at end of input).
fn offset_of(data: &[u8], line: usize, column: usize) -> usize {
    let line_start = data
        .split_inclusive(|&b| b == b'\n')
        .take(line.saturating_sub(1))
        .map(<[u8]>::len)
        .sum::<usize>();
    (line_start + column.saturating_sub(1)).min(data.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use serde_json::json;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut w = GzEncoder::new(Vec::new(), flate2::Compression::default());
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn ndjson_bad_lines_reported_good_ones_kept() {
        let data = b"{\"a\":1}\n{oops\r\n\n   \n{\"b\":2}\r\n[1,\n{\"c\":3}";
        let d = decode("x.ndjson", data).unwrap();
        assert_eq!(d.encoding, Encoding::Ndjson);
        assert!(!d.gzip);
        assert_eq!(
            d.records,
            vec![json!({"a":1}), json!({"b":2}), json!({"c":3})]
        );
        let lines: Vec<_> = d.bad.iter().map(|b| (b.line, b.offset)).collect();
        assert_eq!(lines, vec![(Some(2), 8), (Some(6), 29)]);
        assert!(d.bad.iter().all(|b| !b.reason.is_empty()));
    }

    #[test]
    fn json_array_detected_and_malformed_array_is_one_error() {
        let d = decode("x.json", b"  \n[{\"a\":1}, 2, \"s\"]\n").unwrap();
        assert_eq!(d.encoding, Encoding::JsonArray);
        assert_eq!(d.records, vec![json!({"a":1}), json!(2), json!("s")]);
        assert!(d.bad.is_empty());

        let data = b"[{\"a\":1},\n{\"b\":}]";
        let d = decode("x.json", data).unwrap();
        assert!(d.records.is_empty());
        assert_eq!(d.bad.len(), 1);
        assert_eq!(d.bad[0].line, Some(2));
        assert_eq!(data[d.bad[0].offset], b'}');

        // Truncated array: error at the end.
        let d = decode("x.json", b"[1,2").unwrap();
        assert_eq!(d.bad.len(), 1);
        assert!(d.bad[0].offset <= 4);
    }

    #[test]
    fn bom_and_empty_input() {
        let d = decode("x", b"\xEF\xBB\xBF[1]").unwrap();
        assert_eq!(d.records, vec![json!(1)]);
        let d = decode("x", b"").unwrap();
        assert_eq!(d, Decoded::default());
    }

    #[test]
    fn gzip_detected_by_magic_and_by_key() {
        let data = gz(b"{\"a\":1}\n");
        // Magic without a .gz key.
        let d = decode("ingest/x", &data).unwrap();
        assert!(d.gzip);
        assert_eq!(d.records, vec![json!({"a":1})]);
        // .gz key with gzip bytes.
        assert_eq!(decode("ingest/x.gz", &data).unwrap(), d);
        // .gz key without gzip bytes.
        let err = decode("ingest/x.gz", b"{\"a\":1}\n").unwrap_err();
        assert!(matches!(&err, Error::NotGzip { key } if key == "ingest/x.gz"));
        assert!(err.to_string().contains("ingest/x.gz"));
        // Corrupt gzip.
        let mut bad = data.clone();
        bad.truncate(bad.len() - 6);
        assert!(matches!(
            decode("y.gz", &bad),
            Err(Error::Decompress { key, .. }) if key == "y.gz"
        ));
        // Concatenated members are all read.
        let mut two = gz(b"{\"a\":1}\n");
        two.extend(gz(b"{\"b\":2}\n"));
        assert_eq!(decode("z.gz", &two).unwrap().records.len(), 2);
    }

    #[test]
    fn gzip_bomb_is_an_error() {
        let bomb = gz(&vec![b' '; 4 << 20]);
        assert!(bomb.len() < 64 * 1024);
        let err = decode_with_limit("bomb.gz", &bomb, 1 << 20).unwrap_err();
        assert!(matches!(err, Error::TooLarge { limit, .. } if limit == 1 << 20));
        // Exactly at the limit is fine.
        let d = decode_with_limit("bomb.gz", &bomb, 4 << 20).unwrap();
        assert!(d.records.is_empty() && d.bad.is_empty());
    }
}
