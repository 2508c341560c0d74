//! The `s3-event` program: the sink server, the notification relay, the
//! meter ingest pipeline, and two tools (`inspect`, `subscribe`). See
//! `s3-event --help` and the README.

mod cli;

/// jemalloc, not the system's malloc: with glibc's, records parsed on one
/// runtime thread and freed on another cost the relay's durable path about
/// a third of its rate on two cores (bench `durable_ingest`).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
