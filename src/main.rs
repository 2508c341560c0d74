//! The `s3-event` program: the sink server, the notification relay, the
//! meter ingest pipeline, and two tools (`inspect`, `subscribe`). See
//! `s3-event --help` and the README.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
