//! Embedding the CloudEvents HTTP sink server (`s3-event sink` is this
//! plus a command line): the configuration is the seed's `config.json`
//! keys, read here from a JSON text, and the server is checked, bound and
//! run until Ctrl-C.
//!
//! ```text
//! cargo run --example s3_sink                 # port 8080 on loopback, gzip NDJSON under ./data/
//! ```

use s3_event::sink_server::{shutdown_signal, Config, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    // The seed's keys, plus a local directory as the store and a token.
    let file = serde_json::json!({
        "v_port": "8080",
        "flushSize": "1000",
        "scheduledInterval": "60",
        "timeInterval": "HOURLY",
        "store": "local",
        "localDir": "./data",
        "authToken": "s3cr3t",
    });
    let file = file.as_object().cloned().unwrap_or_default();
    // No secret file; environment variables of the same names override.
    let config = Config::from_parts(Some(("config.json".into(), file)), None, &|k| {
        std::env::var(k).ok()
    })?;
    // Refuse to start when the store does not take a write.
    config.check_store().await?;
    let server = Server::bind(config).await?;
    println!(
        "listening on http://{} (POST / with `Authorization: Bearer s3cr3t`)",
        server.local_addr()
    );
    // Ctrl-C or SIGTERM: stop accepting, upload every batch, return.
    server.run(shutdown_signal()).await?;
    Ok(())
}
