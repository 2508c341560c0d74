//! The CloudEvents HTTP sink: the seed's S3 sink as a runnable program.
//!
//! ```text
//! cargo run --release --example s3_sink                      # port 8080, gzip NDJSON under ./data/
//! cargo run --release --example s3_sink -- --config config.json --secret secret.json
//! cargo run --release --example s3_sink -- --port 9090
//! ```
//!
//! Configuration: the seed's `config.json` keys (`v_port`, `region`,
//! `bucketName`, `flushSize`, `scheduledInterval`, `timeInterval`) and its
//! base64 `secret.json`, environment variables of the same names, plus
//! `store`, `localDir`, `endpoint`, `prefix`, `encoding`, `compression`,
//! `fsync`, `spoolDir`, `maxBodyBytes`, `bindAddress`, and with the
//! `aws-sdk` feature `acl`, `serverSideEncryption`, `sseKmsKeyId`,
//! `storageClass`, `tags`; see `s3_event::sink::server::config`. Logs go to stderr (`RUST_LOG` filters,
//! default `info`). SIGINT or SIGTERM: stop accepting, upload everything,
//! exit 0.

use std::path::PathBuf;
use std::process::ExitCode;

use s3_event::sink::server::{shutdown_signal, Config, Server, Sources};

const USAGE: &str = "usage: s3_sink [--config FILE] [--secret FILE] [--port PORT]";

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let mut sources = Sources::default();
    let mut port: Option<u16> = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy().into_owned();
        let mut value = |name: &str| match args.next() {
            Some(v) => Ok(v),
            None => Err(format!("{name} needs a value\n{USAGE}")),
        };
        let parsed = match arg.as_str() {
            "--config" => value("--config").map(|v| sources.config_path = Some(PathBuf::from(v))),
            "--secret" => value("--secret").map(|v| sources.secret_path = Some(PathBuf::from(v))),
            "--port" => value("--port").and_then(|v| {
                let v = v.to_string_lossy().into_owned();
                v.parse()
                    .map(|p| port = Some(p))
                    .map_err(|_| format!("--port: `{v}` is not a port number"))
            }),
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument `{other}`\n{USAGE}")),
        };
        if let Err(e) = parsed {
            eprintln!("s3_sink: {e}");
            return ExitCode::from(2);
        }
    }

    let mut config = match Config::load(&sources) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("s3_sink: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(p) = port {
        config.port = p;
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("s3_sink: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("s3_sink: {e}");
                return ExitCode::FAILURE;
            }
        };
        let c = server.config();
        println!(
            "s3_sink: listening on http://{}; writing {} objects under {} ({} partitions, \
             {} events or {} s per object; spool {})",
            server.local_addr(),
            c.describe_format(),
            c.describe_store(),
            c.time_interval,
            c.flush_size,
            c.scheduled_interval.as_secs(),
            c.spool_dir.display(),
        );
        match server.run(shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("s3_sink: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
