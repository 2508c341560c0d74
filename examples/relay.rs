//! Embedding the notification relay (`s3-event relay` is this plus a
//! command line): MinIO webhooks in on 127.0.0.1:8090, a Redis target
//! configured with MinIO's keys (here the seed's recipe block, pasted as
//! it is), `.jpg` objects only, and every event also written as gzip NDJSON
//! under `./relay-data/events/`.
//!
//! ```text
//! cargo run --example relay --features relay,redis
//! curl -X POST -d @examples/walkthrough/created.json http://127.0.0.1:8090/
//! ```

use s3_event::relay::{Relay, RelayConfig};

const CONFIG: &str = r#"{
  "listen": "127.0.0.1:8090",
  "targets": {
    "redis": {
      "1": {
        "enable": true,
        "address": "127.0.0.1:6379",
        "key": "bucketevents"
      }
    }
  },
  "rules": "<NotificationConfiguration><QueueConfiguration><Queue>arn:minio:sqs:us-east-1:1:redis</Queue><Event>s3:ObjectCreated:*</Event><Filter><S3Key><FilterRule><Name>suffix</Name><Value>.jpg</Value></FilterRule></S3Key></Filter></QueueConfiguration><QueueConfiguration><Queue>arn:minio:sqs:us-east-1:local:directory</Queue><Event>s3:ObjectCreated:*</Event></QueueConfiguration></NotificationConfiguration>",
  "directory": {"dir": "./relay-data", "queue_dir": "./relay-data/queue"}
}"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    // The same file `s3-event relay --config` reads; errors name the key.
    let config = RelayConfig::from_json(CONFIG)?;
    // Builds and probes the targets, binds the port.
    let relay = Relay::start(config).await?;
    for line in relay.describe() {
        println!("{line}");
    }
    if !relay.targets_down().is_empty() {
        println!(
            "down at start (their events wait in the queue): {:?}",
            relay.targets_down()
        );
    }
    // Ctrl-C or SIGTERM: stop accepting, drain the targets, return.
    relay.run(s3_event::inputs::http::shutdown_signal()).await?;
    Ok(())
}
