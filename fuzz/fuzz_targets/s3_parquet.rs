//! Any bytes as an S3 event record into the two S3 Parquet schemas, `s3`
//! (the whole record as text) and `s3-compact` (the columns and the rest):
//! both take it or both refuse it, never a panic; a record taken reads
//! back from both files as the same records (and the same unreadable
//! ones), so `s3-compact` loses no member `s3` keeps.
#![no_main]
use libfuzzer_sys::fuzz_target;
use s3_event_sink::{decode, BatchEncoder, Compression, Encoding, ParquetOptions, ParquetSchema};

fn encode(schema: ParquetSchema, data: &[u8]) -> Option<Vec<u8>> {
    let opts = ParquetOptions::default().with_schema(schema);
    let mut e = BatchEncoder::new(Encoding::Parquet(opts), Compression::None);
    e.push_raw(data).ok()?;
    Some(e.finish().expect("a file of one record taken"))
}

fuzz_target!(|data: &[u8]| {
    let whole = encode(ParquetSchema::S3Records, data);
    let compact = encode(ParquetSchema::S3Compact, data);
    assert_eq!(whole.is_some(), compact.is_some(), "taken by one schema only");
    if let (Some(w), Some(c)) = (whole, compact) {
        let (w, c) = (decode("w.parquet", &w).unwrap(), decode("c.parquet", &c).unwrap());
        assert_eq!(w.records, c.records);
        assert_eq!(w.bad.len(), c.bad.len());
    }
});
