//! `s3-event relay`: the notification relay.

use std::net::SocketAddr;
use std::path::PathBuf;

use s3_event::inputs::http::shutdown_signal;
use s3_event::relay::{Relay, RelayConfig, RelayError};

use super::{print_json, runtime, Exit};

/// The configuration file holds `listen`, `region`, `targets` (MinIO's
/// notification configuration: `{"<type>": {"<id>": {...}}}`, a whole MinIO
/// config.json, or `mc admin config get ALIAS notify_<type>` output),
/// `rules`, `delivery`, `receiver`, `http`, `poller`, `directory`,
/// `shutdown_timeout_secs`; MINIO_NOTIFY_* / S3E_NOTIFY_* variables are
/// overlaid on `targets`, and MINIO_API_SYNC_EVENTS=on selects sync
/// delivery. With no configuration: a webhook receiver on 127.0.0.1:8090
/// writing every event as gzip NDJSON under ./relay-data/events/.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The configuration file (JSON).
    #[arg(long, value_name = "FILE", env = "S3E_RELAY_CONFIG")]
    config: Option<PathBuf>,
    /// The HTTP address, over `listen`.
    #[arg(long, value_name = "ADDR", env = "S3E_RELAY_LISTEN")]
    listen: Option<SocketAddr>,
    /// Validate the configuration, print it (secrets redacted) and exit: 0
    /// when valid, 2 when not.
    #[arg(long)]
    check_config: bool,
}

fn exit(e: RelayError) -> Exit {
    match e {
        RelayError::Config(_) => Exit::Config(e.to_string()),
        RelayError::Runtime(m) => Exit::Failed(m),
    }
}

pub fn run(args: Args) -> Exit {
    let mut config = match &args.config {
        Some(path) => {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => return Exit::Config(format!("cannot read {}: {e}", path.display())),
            };
            match RelayConfig::from_json(&text) {
                Ok(c) => c,
                Err(RelayError::Config(m)) => {
                    return Exit::Config(format!("configuration error: {}: {m}", path.display()))
                }
                Err(e) => return exit(e),
            }
        }
        None => RelayConfig::default(),
    };
    if let Some(l) = args.listen {
        config.listen = Some(l);
    }
    if let Err(e) = config.validate() {
        return exit(e);
    }
    if args.check_config {
        return match config.redacted() {
            Ok(v) => print_json(&v),
            Err(e) => exit(e),
        };
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return e,
    };
    let embedded = args.config.is_none();
    rt.block_on(async move {
        let relay = match Relay::start(config).await {
            Ok(r) => r,
            Err(e) => return exit(e),
        };
        for (n, line) in relay.describe().into_iter().enumerate() {
            if n == 0 && embedded {
                println!("s3-event relay: {line} (embedded default; --config FILE to configure)");
            } else {
                println!("s3-event relay: {line}");
            }
        }
        match relay.run(shutdown_signal()).await {
            Ok(()) => {
                eprintln!("s3-event relay: stopped");
                Exit::Ok
            }
            Err(e) => exit(e),
        }
    })
}
