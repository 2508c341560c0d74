//! Embedding the meter ingest pipeline (`s3-event ingest` is this plus a
//! command line): Amberflo-style meter files dropped under
//! `./bucket/ingest/` are validated, the valid records written as gzip
//! NDJSON under `./meters/`, and a failure report
//! `failed-requests/<date>/<key>.reason.txt` is put beside bad input.
//!
//! ```text
//! cargo run --example ingest_meters --features ingest
//! mkdir -p bucket/ingest/acme && echo '[{"customerId":"c-1","meterApiName":"ComputeHours","meterValue":5,"meterTimeInMillis":1619445706909}]' > /tmp/m && mv /tmp/m bucket/ingest/acme/m1
//! ```

use s3_event::ingest::{Ingest, IngestConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    // The same keys `s3-event ingest --config` reads; unknown keys refused.
    let config = IngestConfig::from_json(
        r#"{
            "input":  {"store": "local", "dir": "./bucket"},
            "prefix": "ingest/",
            "pollIntervalMillis": 1000,
            "output": {"store": "local", "dir": "./meters"},
            "flushIntervalMillis": 5000
        }"#,
    )?;
    let ingest = Ingest::start(config).await?;
    for line in ingest.describe() {
        println!("{line}");
    }
    // Ctrl-C or SIGTERM: finish the running poll, upload, return.
    let stats = ingest
        .run(s3_event::inputs::http::shutdown_signal())
        .await?;
    println!(
        "{} records forwarded in {} objects",
        stats.events_accepted, stats.objects_uploaded
    );
    Ok(())
}
