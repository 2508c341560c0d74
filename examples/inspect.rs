//! Reads a payload a receiver can get (S3 records, MinIO envelope, SNS,
//! SQS, EventBridge, `s3:TestEvent`) from a file or stdin and prints what it
//! is, its records, and each record as a CloudEvent (structured JSON).
//!
//! ```text
//! cargo run --example inspect -- payload.json
//! cat payload.json | cargo run --example inspect
//! ```
use std::io::Read;
use std::process::ExitCode;

use s3_event::core::inbound::{self, Inbound};

fn main() -> ExitCode {
    let mut bytes = Vec::new();
    let read = match std::env::args_os().nth(1) {
        Some(path) => std::fs::read(&path)
            .map(|b| bytes = b)
            .map_err(|e| format!("{}: {e}", path.to_string_lossy())),
        None => std::io::stdin()
            .read_to_end(&mut bytes)
            .map(drop)
            .map_err(|e| format!("stdin: {e}")),
    };
    if let Err(e) = read {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    match inbound::parse(&bytes) {
        Ok(Inbound::Records {
            notification,
            origin,
        }) => {
            println!(
                "{}: {} record(s)",
                origin.describe(),
                notification.records.len()
            );
            for r in &notification.records {
                let key = r
                    .decoded_key()
                    .unwrap_or_else(|e| format!("<undecodable: {e}>"));
                println!(
                    "  {} s3://{}/{} ({} bytes) at {}",
                    r.event_name.as_deref().unwrap_or("?"),
                    r.bucket_name().unwrap_or("?"),
                    key,
                    r.size().map_or("?".to_string(), |s| s.to_string()),
                    r.event_time.as_deref().unwrap_or("?"),
                );
                match r.to_cloudevent() {
                    Ok(ce) => println!(
                        "  cloudevent: {}",
                        serde_json::to_string(&ce).expect("CloudEvents serialize")
                    ),
                    Err(e) => println!("  cloudevent: not mappable: {e}"),
                }
            }
            ExitCode::SUCCESS
        }
        Ok(other) => {
            println!("{other:#?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
