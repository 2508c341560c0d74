//! Process tests of the examples: each example is started as a real process
//! (the binary `cargo test` builds under `target/<profile>/examples/`) on a
//! free loopback port, driven over HTTP, and checked through what it wrote or
//! delivered. Needs the servers of `scripts/services.sh` (feature
//! `integration`).

mod ingest_meters;
mod relay;
mod s3_sink;
mod util;
