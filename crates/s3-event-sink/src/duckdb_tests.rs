//! DuckDB (PyPI `duckdb`, with the `duckdb-ext-httpfs` package for S3,
//! installed into `$S3E_VENV` by `scripts/services.sh`) reads the Parquet
//! and gzip NDJSON objects the sink wrote, in a local directory and in the
//! S3-compatible server, and returns the rows and counts that were pushed.

use std::process::Command;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::testing::{env, Env, Kind};
use crate::{Compression, Encoding, ParquetOptions, ParquetSchema, Sink};

/// Runs `sql` in DuckDB (argv[1]); prints the rows as a JSON array of
/// objects on the last line. The progress bar DuckDB draws on stdout for
/// queries over 2 s is turned off. With `S3E_DUCKDB_S3` set, loads httpfs from the pip package
/// (no download: the extension directory is the package's) and makes an S3
/// secret for the test server.
const SCRIPT: &str = r#"
import json, os, sys
import duckdb, duckdb_ext
ext = os.path.join(list(duckdb_ext.__path__)[0], "extensions")
con = duckdb.connect(config={"extension_directory": ext, "autoinstall_known_extensions": False})
con.execute("SET enable_progress_bar = false")
if os.environ.get("S3E_DUCKDB_S3"):
    con.execute("LOAD httpfs")
    endpoint = os.environ["S3E_S3_ENDPOINT"]
    host = endpoint.split("://", 1)[-1]
    ssl = "true" if endpoint.startswith("https") else "false"
    con.execute(f"""CREATE SECRET s3e (TYPE S3, KEY_ID '{os.environ["S3E_S3_ACCESS_KEY"]}',
        SECRET '{os.environ["S3E_S3_SECRET_KEY"]}', ENDPOINT '{host}', URL_STYLE 'path',
        USE_SSL {ssl}, REGION 'us-east-1')""")
cur = con.execute(sys.argv[1])
cols = [d[0] for d in cur.description]
print(json.dumps([dict(zip(cols, row)) for row in cur.fetchall()], default=str))
"#;

fn duckdb(sql: &str, s3: bool) -> Vec<Value> {
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let venv = var("S3E_VENV", "/tmp/s3-event-services/venv");
    let mut cmd = Command::new(format!("{venv}/bin/python"));
    cmd.arg("-c").arg(SCRIPT).arg(sql);
    if s3 {
        cmd.env("S3E_DUCKDB_S3", "1")
            .env(
                "S3E_S3_ENDPOINT",
                var("S3E_S3_ENDPOINT", "http://127.0.0.1:18333"),
            )
            .env("S3E_S3_ACCESS_KEY", var("S3E_S3_ACCESS_KEY", "testkey"))
            .env("S3E_S3_SECRET_KEY", var("S3E_S3_SECRET_KEY", "testsecret"));
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{venv}/bin/python: {e} (run scripts/services.sh all)"));
    assert!(
        out.status.success(),
        "duckdb failed on {sql}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The last line: should anything still draw on stdout before it.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.trim_end().rsplit('\n').next().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("duckdb printed no JSON rows for {sql} ({e}):\n{stdout}"))
}

/// An S3 event record; its key URL-encoded as in notifications.
fn s3_record(n: u64) -> Value {
    json!({
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "eu-west-1",
        "eventTime": format!("2024-03-05T10:{:02}:{:02}.000Z", n / 60 % 60, n % 60),
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "10.0.0.7"},
        "s3": {"s3SchemaVersion": "1.0",
            "bucket": {"name": "photos", "arn": "arn:aws:s3:::photos"},
            "object": {"key": format!("dir/a+b%C3%A9{n}.jpg"), "size": 1000 + n,
                "eTag": format!("{n:032x}"), "sequencer": format!("{n:016X}")}}
    })
}

fn cloudevent(n: u64) -> Value {
    json!({"specversion": "1.0", "id": n.to_string(), "source": "/meters", "type": "meter.reading",
        "subject": format!("m-{}", n % 7), "data": {"n": n, "kwh": n as f64 / 4.0}})
}

/// Pushes `records` into a sink writing `encoding` to a `kind` store, 30
/// records per object.
async fn write(kind: Kind, test: &str, encoding: Encoding, records: &[Value]) -> Env {
    let e = env(kind, test);
    let compression = match encoding {
        Encoding::Parquet(_) => Compression::None,
        _ => Compression::gzip(),
    };
    let sink = Sink::builder()
        .with_store(Arc::clone(&e.store))
        .with_prefix(e.prefix.clone())
        .with_encoding(encoding)
        .with_compression(compression)
        .with_flush_size(30)
        .build()
        .unwrap();
    sink.push_batch(records).await.unwrap();
    sink.shutdown().await.unwrap();
    assert_eq!(e.objects().await.len(), records.len().div_ceil(30));
    e
}

/// The glob of the objects ending in `ext`, as DuckDB reads it.
fn glob(e: &Env, ext: &str) -> String {
    match e.local_dir() {
        Some(d) => format!("{}/{}**/*{ext}", d.display(), e.prefix),
        None => {
            let bucket = crate::testing::s3_config().bucket;
            format!("s3://{bucket}/{}**/*{ext}", e.prefix)
        }
    }
}

const N: u64 = 100;

/// Parquet, the S3 schemas: the typed columns and the whole record
/// (`s3`), or what the columns do not hold of it (`s3-compact`).
async fn s3_schema(kind: Kind, records: &[Value], schema: ParquetSchema) {
    let (s3, n) = (matches!(kind, Kind::S3), N);
    let opts = ParquetOptions::default().with_schema(schema);
    let test = format!("duck-{schema}");
    let e = write(kind, &test, Encoding::Parquet(opts), records).await;
    let text = match schema {
        ParquetSchema::S3Compact => "rest",
        _ => "record",
    };
    let sql = format!(
        "SELECT event_name, event_time, bucket, key, size, etag, sequencer, region, principal_id, source_ip, \
         {text} AS text, json_extract_string({text}, '$.s3.bucket.arn') AS arn \
         FROM read_parquet('{}') ORDER BY size",
        glob(&e, ".parquet")
    );
    let rows = duckdb(&sql, s3);
    assert_eq!(rows.len() as u64, n, "{kind:?}");
    for (row, r) in rows.iter().zip(records) {
        let o = &r["s3"]["object"];
        let i = o["size"].as_u64().unwrap() - 1000;
        assert_eq!(row["event_name"], r["eventName"]);
        assert_eq!(row["event_time"], r["eventTime"]);
        assert_eq!(row["bucket"], "photos");
        assert_eq!(row["key"], format!("dir/a b\u{e9}{i}.jpg"), "URL-decoded");
        assert_eq!(row["size"], o["size"]);
        assert_eq!(row["etag"], o["eTag"]);
        assert_eq!(row["sequencer"], o["sequencer"]);
        assert_eq!(row["region"], "eu-west-1");
        assert_eq!(row["principal_id"], "AWS:AIDAEXAMPLE");
        assert_eq!(row["source_ip"], "10.0.0.7");
        assert_eq!(row["arn"], "arn:aws:s3:::photos");
        let text: Value = serde_json::from_str(row["text"].as_str().unwrap()).unwrap();
        if schema == ParquetSchema::S3Compact {
            // The members the columns hold exactly are left out; the key
            // is kept, as its column is URL-decoded.
            let mut rest = r.clone();
            let m = rest.as_object_mut().unwrap();
            for k in ["eventName", "eventTime", "awsRegion"] {
                m.remove(k);
            }
            rest["userIdentity"] = json!({});
            rest["requestParameters"] = json!({});
            rest["s3"]["bucket"] = json!({"arn": "arn:aws:s3:::photos"});
            rest["s3"]["object"] = json!({"key": o["key"]});
            assert_eq!(text, rest);
        } else {
            assert_eq!(&text, r);
        }
    }
    // And the reader of this crate gives back the records.
    let mut back: Vec<Value> = Vec::new();
    for (key, bytes) in e.objects().await {
        back.extend(crate::decode(&key, &bytes).unwrap().records);
    }
    back.sort_by_key(|r| r["s3"]["object"]["size"].as_u64());
    assert_eq!(back, records, "{kind:?} {schema}");
    let count = format!(
        "SELECT count(*) AS n, count(DISTINCT key) AS keys FROM read_parquet('{}')",
        glob(&e, ".parquet")
    );
    assert_eq!(duckdb(&count, s3), [json!({"n": n, "keys": n})], "{kind:?}");
}

/// gzip NDJSON of the same records: DuckDB's JSON reader.
async fn ndjson(kind: Kind, records: &[Value]) {
    let s3 = matches!(kind, Kind::S3);
    let e = write(kind, "duck-ndjson", Encoding::Ndjson, records).await;
    let sql = format!(
        "SELECT eventName, s3.object.key AS key, s3.object.size AS size, awsRegion \
         FROM read_json_auto('{}', format = 'newline_delimited') ORDER BY size",
        glob(&e, ".ndjson.gz")
    );
    let rows = duckdb(&sql, s3);
    let want: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({"eventName": r["eventName"], "key": r["s3"]["object"]["key"],
                "size": r["s3"]["object"]["size"], "awsRegion": r["awsRegion"]})
        })
        .collect();
    assert_eq!(rows, want, "{kind:?}");
}

/// Parquet, the CloudEvents schema.
async fn cloudevents_schema(kind: Kind) {
    let (s3, n) = (matches!(kind, Kind::S3), N);
    let events: Vec<Value> = (0..n).map(cloudevent).collect();
    let opts = ParquetOptions::default().with_schema(ParquetSchema::CloudEvents);
    let e = write(kind, "duck-ce", Encoding::Parquet(opts), &events).await;
    let sql = format!(
        "SELECT specversion, id, source, type, subject, data FROM read_parquet('{}') \
         ORDER BY CAST(id AS INTEGER)",
        glob(&e, ".parquet")
    );
    let rows = duckdb(&sql, s3);
    assert_eq!(rows.len() as u64, n, "{kind:?}");
    for (row, ev) in rows.iter().zip(&events) {
        for k in ["specversion", "id", "source", "type", "subject"] {
            assert_eq!(row[k], ev[k], "{kind:?} {k}");
        }
        let data: Value = serde_json::from_str(row["data"].as_str().unwrap()).unwrap();
        assert_eq!(data, ev["data"]);
    }
    let count = format!(
        "SELECT subject, count(*) AS n FROM read_parquet('{}') GROUP BY subject ORDER BY subject",
        glob(&e, ".parquet")
    );
    let per_subject: Vec<Value> = (0..7)
        .map(|m| json!({"subject": format!("m-{m}"), "n": (0..n).filter(|i| i % 7 == m).count()}))
        .collect();
    assert_eq!(duckdb(&count, s3), per_subject, "{kind:?}");
}

async fn duckdb_reads_what_the_sink_wrote(kind: Kind) {
    let records: Vec<Value> = (0..N).map(s3_record).collect();
    s3_schema(kind, &records, ParquetSchema::S3Records).await;
    s3_schema(kind, &records, ParquetSchema::S3Compact).await;
    ndjson(kind, &records).await;
    cloudevents_schema(kind).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_reads_a_local_directory() {
    duckdb_reads_what_the_sink_wrote(Kind::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_reads_the_s3_server() {
    duckdb_reads_what_the_sink_wrote(Kind::S3).await;
}

/// DuckDB draws a progress bar on stdout once a query runs longer than
/// `progress_bar_time` (2 s by default: a cold read over S3 on a busy
/// machine); the rows must still be read. The script turns the bar off;
/// here it is turned on again and drawn on a query of any length, so the
/// reading of the last line is what is tested.
#[test]
fn a_query_slow_enough_for_a_progress_bar_still_gives_its_rows() {
    let sql = "SET enable_progress_bar=true; SET progress_bar_time=0; \
               SELECT count(*) AS n FROM range(1000000) t(x) WHERE x % 7 = 3";
    assert_eq!(duckdb(sql, false), [json!({"n": 142857})]);
}
