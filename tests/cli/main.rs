//! Process tests of the `s3-event` program: each subcommand is started as a
//! real process (the binary cargo builds for this test,
//! `CARGO_BIN_EXE_s3-event`) on a free loopback port, driven over HTTP, and
//! checked through what it wrote or delivered. Needs the servers of
//! `scripts/services.sh` (feature `integration`).

mod ingest;
mod kafka;
mod relay;
mod sink;
mod sqs;
mod util;
