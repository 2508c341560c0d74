//! The MySQL target against the real MariaDB server at `S3E_MYSQL_DSN`
//! (default `root:@tcp(127.0.0.1:3306)/test`), read back with SQL on a
//! connection of the test's own.
//!
//! Restarts: the shared server is never stopped. The conformance harness
//! puts a TCP proxy ([`crate::db_common::proxy`]) between the target and the
//! server; "stopping the server" closes the proxy's listener and every
//! connection through it, so the target sees its connections drop and new
//! ones refused, as when the server goes down, and recovers without being
//! rebuilt.

use super::*;
use crate::conformance::{self, Harness};
use crate::db_common::proxy::Proxy;
use crate::db_common::{test_record, unique_name};
use std::sync::Arc;

fn env_dsn() -> Dsn {
    let s =
        std::env::var("S3E_MYSQL_DSN").unwrap_or_else(|_| "root:@tcp(127.0.0.1:3306)/test".into());
    Dsn::parse(&s).expect("S3E_MYSQL_DSN parses")
}

/// The env DSN, through 127.0.0.1:`port` when given.
fn dsn_string(port: Option<u16>) -> String {
    let d = env_dsn();
    let (host, port) = match port {
        Some(p) => ("127.0.0.1".to_string(), p),
        None => (d.host.clone(), d.port),
    };
    format!(
        "{}:{}@tcp({host}:{port})/{}",
        d.user.as_deref().unwrap_or("root"),
        d.password.as_deref().unwrap_or_default(),
        d.db.as_deref().unwrap_or("test")
    )
}

/// A connection of the test's own.
async fn sql() -> Conn {
    let d = env_dsn();
    let opts = OptsBuilder::default()
        .ip_or_hostname(d.host)
        .tcp_port(d.port)
        .user(d.user)
        .pass(d.password)
        .db_name(d.db)
        .prefer_socket(false);
    Conn::new(opts)
        .await
        .expect("MariaDB is reachable at S3E_MYSQL_DSN (see scripts/services.sh)")
}

fn id() -> TargetId {
    "arn:minio:sqs::conformance:mysql".parse().unwrap()
}

/// The decoded object keys of an access table, in insertion order: the
/// table (MinIO's schema) has no primary key, so InnoDB clusters its rows
/// by an internal row id that grows with each insert, and a full scan
/// returns them in that order.
async fn access_keys(c: &mut Conn, table: &str) -> Vec<String> {
    let rows: Vec<String> = c
        .query(format!(
            "SELECT JSON_UNQUOTE(JSON_EXTRACT(event_data, '$.Records[0].s3.object.key')) FROM {table}"
        ))
        .await
        .unwrap_or_default();
    rows.iter()
        .map(|k| s3_event_core::decode_key(k).unwrap())
        .collect()
}

struct MySqlHarness {
    proxy: Proxy,
    table: String,
}

#[async_trait]
impl Harness for MySqlHarness {
    fn target(&self) -> Arc<dyn Target> {
        let c = MySqlConfig::new(
            dsn_string(Some(self.proxy.port)),
            self.table.clone(),
            Format::Access,
        );
        Arc::new(MySqlTarget::new(id(), c).unwrap())
    }

    async fn received(&self) -> Vec<String> {
        let mut c = sql().await;
        let keys = access_keys(&mut c, &self.table).await;
        let _ = c.disconnect().await;
        keys
    }

    async fn stop_server(&self) {
        self.proxy.stop().await;
    }

    async fn start_server(&self) {
        self.proxy.start().await;
    }

    /// An event whose `eventTime` is not a time: the strict server rejects
    /// it for the `DATETIME` column (error 1292).
    fn poison(&self) -> Option<EventRecord> {
        let mut r = conformance::record("conformance-poison");
        r.event_time = Some("not a time".into());
        Some(r)
    }
}

async fn drop_table(table: &str) {
    let mut c = sql().await;
    c.query_drop(format!("DROP TABLE IF EXISTS {table}"))
        .await
        .unwrap();
    let _ = c.disconnect().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_run_all_through_a_proxy() {
    let h = MySqlHarness {
        proxy: Proxy::new(&format!("{}:{}", env_dsn().host, env_dsn().port)).await,
        table: unique_name("s3e_my_conf"),
    };
    conformance::run_all(&h).await;
    drop_table(&h.table).await;
}

fn target(table: &str, format: Format) -> MySqlTarget {
    MySqlTarget::new(id(), MySqlConfig::new(dsn_string(None), table, format)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_creates_overwrites_and_deletes() {
    let table = unique_name("s3e_my_ns");
    let t = target(&table, Format::Namespace);
    let put = |k: &str, time: &str| test_record("s3:ObjectCreated:Put", "photos", k, time);
    t.send_batch(&[put("a b.jpg", "t1"), put("c.jpg", "t1")])
        .await
        .unwrap();
    t.send(&put("a b.jpg", "t2")).await.unwrap();
    let mut c = sql().await;
    let got: Vec<(String, String, u32)> = c
        .query(format!(
            "SELECT key_name, JSON_UNQUOTE(JSON_EXTRACT(value, '$.Records[0].eventTime')), \
             JSON_LENGTH(value, '$.Records') FROM {table} ORDER BY key_name"
        ))
        .await
        .unwrap();
    assert_eq!(
        got,
        [
            ("photos/a b.jpg".to_string(), "t2".to_string(), 1),
            ("photos/c.jpg".to_string(), "t1".to_string(), 1)
        ]
    );
    t.send_batch(&[
        put("d.jpg", "t3"),
        test_record("s3:ObjectRemoved:Delete", "photos", "a b.jpg", "t3"),
        put("c.jpg", "t3"),
        test_record("s3:ObjectRemoved:Delete", "photos", "c.jpg", "t4"),
    ])
    .await
    .unwrap();
    let keys: Vec<String> = c
        .query(format!("SELECT key_name FROM {table} ORDER BY key_name"))
        .await
        .unwrap();
    assert_eq!(keys, ["photos/d.jpg"]);
    t.send(&test_record(
        "s3:ObjectRemoved:Delete",
        "photos",
        "d.jpg",
        "t5",
    ))
    .await
    .unwrap();
    let n: Option<u64> = c
        .query_first(format!("SELECT COUNT(*) FROM {table}"))
        .await
        .unwrap();
    assert_eq!(n, Some(0), "the delete leaves no row");
    let _ = c.disconnect().await;
    drop_table(&table).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn access_appends_in_order_with_event_time() {
    let table = unique_name("s3e_my_access");
    let t = target(&table, Format::Access);
    let ev: Vec<EventRecord> = (0..300)
        .map(|i| {
            test_record(
                "s3:ObjectCreated:Put",
                "b",
                &format!("k{i:03}"),
                "2024-05-06T07:08:09.123Z",
            )
        })
        .collect();
    t.send_batch(&ev[..256]).await.unwrap();
    t.send_batch(&ev[256..]).await.unwrap();
    t.send(&test_record("s3:ObjectRemoved:Delete", "b", "k000", ""))
        .await
        .unwrap();
    let mut c = sql().await;
    let want: Vec<String> = (0..300)
        .map(|i| format!("k{i:03}"))
        .chain(["k000".into()])
        .collect();
    assert_eq!(access_keys(&mut c, &table).await, want);
    let first: Option<String> = c
        .query_first(format!(
            "SELECT DATE_FORMAT(event_time, '%Y-%m-%dT%H:%i:%s') FROM {table} LIMIT 1"
        ))
        .await
        .unwrap();
    // MinIO's column is DATETIME (whole seconds).
    assert_eq!(first.as_deref(), Some("2024-05-06T07:08:09"));
    let _ = c.disconnect().await;
    drop_table(&table).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_value_is_permanent_with_the_servers_message() {
    let table = unique_name("s3e_my_reject");
    let t = target(&table, Format::Access);
    let e = t
        .send(&test_record(
            "s3:ObjectCreated:Put",
            "b",
            "k",
            "yesterday-ish",
        ))
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("1292"), "{e}");
    assert!(matches!(t.is_active().await, Ok(true)));
    drop_table(&table).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_credentials_are_permanent_and_password_not_shown() {
    let d = env_dsn();
    let dsn = format!("s3e_no_such_user:s3cr3t-pw@tcp({}:{})/test", d.host, d.port);
    let t = MySqlTarget::new(id(), MySqlConfig::new(dsn, "t", Format::Access)).unwrap();
    let e = t
        .send(&test_record("s3:ObjectCreated:Put", "b", "k", ""))
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("1045"), "{e}");
    assert!(!e.to_string().contains("s3cr3t-pw"), "{e}");
    assert!(t.is_active().await.is_err());
}
