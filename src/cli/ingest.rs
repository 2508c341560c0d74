//! `s3-event ingest`: meter files from a bucket into gzip NDJSON objects.

use std::path::PathBuf;

use s3_event::ingest::{Ingest, IngestConfig, IngestError};
use s3_event::inputs::http::shutdown_signal;

use super::{print_json, runtime, Exit};

/// The configuration file holds `input`, `prefix`, `pollIntervalMillis`,
/// `cursorFile`, `output`, `outputPrefix`, `spoolDir`, `flushSize`,
/// `flushIntervalMillis`, `listen`, `authToken`, `http`. With no
/// configuration it polls ./bucket/ingest/ every second and writes under
/// ./meters/.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The configuration file (JSON).
    #[arg(long, value_name = "FILE", env = "S3E_INGEST_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the configuration, print it (secrets redacted) and exit: 0
    /// when valid, 2 when not.
    #[arg(long)]
    check_config: bool,
}

fn exit(e: IngestError) -> Exit {
    match e {
        IngestError::Config(_) => Exit::Config(e.to_string()),
        IngestError::Runtime(m) => Exit::Failed(m),
    }
}

pub fn run(args: Args) -> Exit {
    let config = match &args.config {
        Some(path) => {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => return Exit::Config(format!("cannot read {}: {e}", path.display())),
            };
            match IngestConfig::from_json(&text) {
                Ok(c) => c,
                Err(IngestError::Config(m)) => {
                    return Exit::Config(format!("configuration error: {}: {m}", path.display()))
                }
                Err(e) => return exit(e),
            }
        }
        None => IngestConfig::default(),
    };
    if args.check_config {
        return print_json(&config.redacted());
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return e,
    };
    rt.block_on(async move {
        let ingest = match Ingest::start(config).await {
            Ok(i) => i,
            Err(e) => return exit(e),
        };
        for line in ingest.describe() {
            println!("s3-event ingest: {line}");
        }
        match ingest.run(shutdown_signal()).await {
            Ok(stats) => {
                println!(
                    "s3-event ingest: stopped; {} records forwarded in {} objects",
                    stats.events_accepted, stats.objects_uploaded
                );
                Exit::Ok
            }
            Err(e) => exit(e),
        }
    })
}
