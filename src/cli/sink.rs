//! `s3-event sink`: the CloudEvents HTTP sink server.

use std::path::PathBuf;

use s3_event::sink_server::{shutdown_signal, Config, Server, ServerError, Sources};

use super::{print_json, runtime, Exit};

/// Configuration: the seed's `config.json` keys (`v_port`, `region`,
/// `bucketName`, `flushSize`, `scheduledInterval`, `timeInterval`), its
/// base64 `secret.json` (`awsAccessKeyID`, `awsSecretAccessKey`), and
/// `store`, `localDir`, `endpoint`, `prefix`, `encoding`, `compression`,
/// `fsync`, `spoolDir`, `maxBodyBytes`, `bindAddress`, `authToken`,
/// `tlsCertFile`, `tlsKeyFile`, `maxConcurrentRequests`, `readTimeout`,
/// `partitionTemplate`, `partitionTime`, `objectNames`, `shards`. An
/// environment variable of the same name overrides each key. With no
/// configuration: port 8080 on loopback, gzip NDJSON under ./data/, spool
/// ./spool/.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The configuration file (else $v_config_path, else
    /// /vance/config/config.json when it exists).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The secret file (else $v_secret_path, else /vance/secret/secret.json
    /// when it exists).
    #[arg(long, value_name = "FILE")]
    secret: Option<PathBuf>,
    /// The port, over `v_port`.
    #[arg(long)]
    port: Option<u16>,
    /// Validate the configuration, print it (secrets redacted) and exit: 0
    /// when valid, 2 when not.
    #[arg(long)]
    check_config: bool,
    /// Start without first checking that the store takes a write.
    #[arg(long)]
    skip_check: bool,
}

pub fn run(args: Args) -> Exit {
    let sources = Sources {
        config_path: args.config,
        secret_path: args.secret,
    };
    let mut config = match Config::load(&sources) {
        Ok(c) => c,
        Err(e) => return Exit::Config(format!("configuration error: {e}")),
    };
    if let Some(p) = args.port {
        config.port = p;
    }
    if args.check_config {
        return print_json(&config.redacted());
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return e,
    };
    rt.block_on(async move {
        if !args.skip_check {
            if let Err(e) = config.check_store().await {
                return Exit::Config(format!("{e} (start with --skip-check to skip this check)"));
            }
        }
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e @ (ServerError::Config(_) | ServerError::Check { .. })) => {
                return Exit::Config(e.to_string())
            }
            Err(e) => return Exit::Failed(e.to_string()),
        };
        let c = server.config();
        let partitions = match &c.partition_template {
            Some(t) => format!("partitions `{t}`"),
            None => format!("{} partitions", c.time_interval),
        };
        println!(
            "s3-event sink: listening on {}://{}; writing {} objects under {} ({partitions}, \
             {} events or {} s per object; spool {})",
            c.http.scheme(),
            server.local_addr(),
            c.describe_format(),
            c.describe_store(),
            c.flush_size,
            c.scheduled_interval.as_secs(),
            c.spool_dir.display(),
        );
        match server.run(shutdown_signal()).await {
            Ok(()) => Exit::Ok,
            Err(ServerError::Config(e)) => Exit::Config(e.to_string()),
            Err(ServerError::Io { what, source })
                if source.kind() == std::io::ErrorKind::Other && what == "serving" =>
            {
                // TLS files that cannot be read are a configuration error.
                Exit::Config(format!("{what}: {source}"))
            }
            Err(e) => Exit::Failed(e.to_string()),
        }
    })
}
