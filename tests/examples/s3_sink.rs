//! Process tests of `examples/s3_sink.rs`.
