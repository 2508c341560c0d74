//! `s3-event verify`: checks that a time range of the sink's objects is
//! complete, against their delivery manifests.

use std::path::PathBuf;

use clap::ValueEnum;
use s3_event::core::Layout;
use s3_event::sink::verify::{parse_time, verify, VerifyOptions};
use s3_event::sink_server::{Config, Sources, StoreKind};

use super::{runtime, Exit};

/// The store is the sink's: its configuration file (`--config`, as for
/// `s3-event sink`), or the flags below, which override it. Credentials
/// come from the secret file or the AWS environment (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`). Prints each problem (missing sequence
/// numbers, overlapping objects, content that does not match its manifest,
/// unreadable objects) and a summary. Exit status: 0 when the range is
/// complete, 1 when it is not (or the store cannot be listed), 2 on bad
/// arguments or configuration.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The sink's configuration file (the keys of `s3-event sink`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The sink's secret file.
    #[arg(long, value_name = "FILE")]
    secret: Option<PathBuf>,
    /// The bucket (an S3 or S3-compatible store).
    #[arg(long, conflicts_with = "dir")]
    bucket: Option<String>,
    /// A local directory store instead of a bucket.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The endpoint of an S3-compatible store (`http://127.0.0.1:18333`).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// The region.
    #[arg(long)]
    region: Option<String>,
    /// The sink's prefix (`events/`).
    #[arg(long)]
    prefix: Option<String>,
    /// The first partition checked: `YYYY-MM-DD`, `YYYY-MM-DDTHH` or RFC
    /// 3339 (default: the oldest).
    #[arg(long, value_parser = parse_time)]
    from: Option<chrono::DateTime<chrono::Utc>>,
    /// Where checking stops, exclusive (default: the newest).
    #[arg(long, value_parser = parse_time)]
    to: Option<chrono::DateTime<chrono::Utc>>,
    /// The time partitions' layout.
    #[arg(long, value_enum, default_value = "plain")]
    layout: LayoutArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum LayoutArg {
    /// `YYYY/MM/DD/HH/`.
    Plain,
    /// `year=YYYY/month=MM/day=DD/hour=HH/`.
    Hive,
}

/// The sink's configuration with the flags applied.
fn config(args: &Args) -> Result<Config, Exit> {
    let sources = Sources {
        config_path: args.config.clone(),
        secret_path: args.secret.clone(),
    };
    let mut c =
        Config::load(&sources).map_err(|e| Exit::Config(format!("configuration error: {e}")))?;
    if let Some(b) = &args.bucket {
        c.store = StoreKind::S3;
        c.bucket_name = Some(b.clone());
    }
    if let Some(d) = &args.dir {
        c.store = StoreKind::Local;
        c.local_dir = d.clone();
    }
    if args.endpoint.is_some() {
        c.endpoint = args.endpoint.clone();
    }
    if args.region.is_some() {
        c.region = args.region.clone();
    }
    if let Some(p) = &args.prefix {
        c.prefix = p.clone();
    }
    match c.store {
        StoreKind::Local if !c.local_dir.is_dir() => Err(Exit::Config(format!(
            "the local directory {} does not exist",
            c.local_dir.display()
        ))),
        StoreKind::S3 if c.bucket_name.as_deref().unwrap_or_default().is_empty() => {
            Err(Exit::Config("no bucket: give --bucket or --dir".to_owned()))
        }
        StoreKind::Memory => Err(Exit::Config(
            "the memory store keeps nothing to verify".to_owned(),
        )),
        _ => Ok(c),
    }
}

pub fn run(args: Args) -> Exit {
    if let (Some(f), Some(t)) = (args.from, args.to) {
        if f >= t {
            return Exit::Config(format!("--from {f} is not before --to {t}"));
        }
    }
    let c = match config(&args) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let store = match c.store_config().build() {
        Ok(s) => s,
        Err(e) => return Exit::Config(e.to_string()),
    };
    let opts = VerifyOptions {
        prefix: c.prefix.clone(),
        from: args.from,
        to: args.to,
        layout: match args.layout {
            LayoutArg::Plain => Layout::Plain,
            LayoutArg::Hive => Layout::Hive,
        },
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return e,
    };
    let report = match rt.block_on(verify(&*store, &opts)) {
        Ok(r) => r,
        Err(e) => return Exit::Failed(format!("cannot list {}: {e}", c.describe_store())),
    };
    for p in &report.problems {
        println!("{p}");
    }
    let range = match (args.from, args.to) {
        (None, None) => String::new(),
        (f, t) => format!(
            " from {} to {}",
            f.map_or("the start".to_owned(), |t| t.to_rfc3339()),
            t.map_or("the end".to_owned(), |t| t.to_rfc3339())
        ),
    };
    let seqs: Vec<String> = report
        .instances
        .iter()
        .map(|(i, (a, b))| format!("instance {i}: sequences {a}..={b}"))
        .collect();
    println!(
        "{} objects, {} records under {}{range}{}{}",
        report.objects,
        report.records,
        c.describe_store(),
        if seqs.is_empty() { "" } else { "; " },
        seqs.join("; ")
    );
    if report.is_complete() {
        println!("complete");
        Exit::Ok
    } else {
        let n = report.problems.len();
        let s = if n == 1 { "" } else { "s" };
        Exit::Failed(format!("incomplete: {n} problem{s}"))
    }
}
