//! Argument parsing (clap), logging and exit codes shared by the
//! subcommands. Exit codes: 0 clean stop, 1 runtime failure, 2 bad
//! configuration or arguments.

mod ingest;
mod inspect;
mod relay;
mod sink;
mod subscribe;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// S3 eventing: bucket notifications out to brokers and databases, events
/// into buckets.
#[derive(Parser)]
#[command(name = "s3-event", version, propagate_version = true)]
struct Cli {
    /// How log lines on stderr are written (`RUST_LOG` filters them; default
    /// `info`).
    #[arg(
        long,
        value_enum,
        global = true,
        default_value = "text",
        env = "S3E_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// The CloudEvents HTTP sink: events over HTTP into gzip NDJSON objects
    /// in a bucket or a local directory (the Vance S3 sink's configuration
    /// works unchanged).
    Sink(sink::Args),
    /// The notification relay: S3 notifications (MinIO/AIStor webhooks, SNS,
    /// SQS bodies, a polled bucket) to AMQP, Kafka, MQTT, NATS, NSQ, Redis,
    /// PostgreSQL, MySQL, Elasticsearch, webhooks, Amazon SQS, SNS and
    /// EventBridge (MinIO's target configuration works unchanged).
    Relay(relay::Args),
    /// Meter ingest: Amberflo-style meter files from a bucket, validated,
    /// written out as gzip NDJSON, failure reports beside bad input.
    Ingest(ingest::Args),
    /// Prints what an S3 notification payload is: its records and their
    /// CloudEvents.
    Inspect(inspect::Args),
    /// Prints what arrives on a broker (AMQP, NATS, Kafka, MQTT), one message
    /// body per line.
    Subscribe(subscribe::Args),
    /// Checks that a time range of the sink's objects is complete: no
    /// missing or duplicated sequence numbers, every object as its delivery
    /// manifest says.
    Verify(verify::Args),
}

/// How a subcommand ended.
pub(crate) enum Exit {
    /// Clean stop (0).
    Ok,
    /// Runtime failure (1), with the message.
    Failed(String),
    /// Bad configuration or arguments (2), with the message.
    Config(String),
}

impl Exit {
    fn code(self, name: &str) -> ExitCode {
        match self {
            Exit::Ok => ExitCode::SUCCESS,
            Exit::Failed(m) => {
                eprintln!("s3-event {name}: {m}");
                ExitCode::FAILURE
            }
            Exit::Config(m) => {
                eprintln!("s3-event {name}: {m}");
                ExitCode::from(2)
            }
        }
    }
}

/// A multi-threaded tokio runtime.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Exit> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Exit::Failed(format!("cannot start the runtime: {e}")))
}

/// Prints `value` as pretty JSON on stdout (`--check-config`).
pub(crate) fn print_json(value: &serde_json::Value) -> Exit {
    match serde_json::to_string_pretty(value) {
        Ok(s) => {
            println!("{s}");
            Exit::Ok
        }
        Err(e) => Exit::Failed(e.to_string()),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Parses the command line and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors exit 2.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.log_format);
    match cli.command {
        Command::Sink(a) => sink::run(a).code("sink"),
        Command::Relay(a) => relay::run(a).code("relay"),
        Command::Ingest(a) => ingest::run(a).code("ingest"),
        Command::Inspect(a) => inspect::run(a).code("inspect"),
        Command::Subscribe(a) => subscribe::run(a).code("subscribe"),
        Command::Verify(a) => verify::run(a).code("verify"),
    }
}
