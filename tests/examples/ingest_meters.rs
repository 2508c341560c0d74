//! Process tests of `examples/ingest_meters.rs`.
