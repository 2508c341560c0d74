//! `s3-event inspect`: what an S3 notification payload is.

use std::io::Read;
use std::path::PathBuf;

use s3_event::core::inbound::{self, Inbound};

use super::Exit;

/// Reads a payload a receiver can get (S3 records, MinIO envelope, SNS,
/// SQS, EventBridge, s3:TestEvent) and prints what it is, its records and
/// each record as a CloudEvent (structured JSON). Exits 2 when the payload
/// is not one.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The payload file; `-` or nothing reads stdin.
    file: Option<PathBuf>,
}

pub fn run(args: Args) -> Exit {
    let mut bytes = Vec::new();
    let read = match args.file.as_deref() {
        Some(p) if p.as_os_str() != "-" => std::fs::read(p)
            .map(|b| bytes = b)
            .map_err(|e| format!("{}: {e}", p.display())),
        _ => std::io::stdin()
            .read_to_end(&mut bytes)
            .map(drop)
            .map_err(|e| format!("stdin: {e}")),
    };
    if let Err(e) = read {
        return Exit::Config(e);
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
                    Ok(ce) => match serde_json::to_string(&ce) {
                        Ok(s) => println!("  cloudevent: {s}"),
                        Err(e) => println!("  cloudevent: not serializable: {e}"),
                    },
                    Err(e) => println!("  cloudevent: not mappable: {e}"),
                }
            }
            Exit::Ok
        }
        Ok(other) => {
            println!("{other:#?}");
            Exit::Ok
        }
        Err(e) => Exit::Config(format!("not an S3 notification: {e}")),
    }
}
