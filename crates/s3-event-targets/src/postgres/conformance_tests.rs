//! The PostgreSQL target against the real server at `S3E_POSTGRES_URL`
//! (default `host=127.0.0.1 port=5432 user=postgres dbname=test
//! sslmode=disable`), read back with SQL on a connection of the test's own.
//!
//! Restarts: the shared server is never stopped. The conformance harness
//! puts a TCP proxy ([`crate::db_common::proxy`]) between the target and the
//! server; "stopping the server" closes the proxy's listener and every
//! connection through it, so the target sees its connections drop and new
//! ones refused, exactly as when the server goes down, and recovers without
//! being rebuilt.

use super::*;
use crate::conformance::{self, Harness};
use crate::db_common::proxy::Proxy;
use crate::db_common::{test_record, unique_name};
use std::sync::Arc;

fn env_config() -> tokio_postgres::Config {
    std::env::var("S3E_POSTGRES_URL")
        .unwrap_or_else(|_| {
            "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable".into()
        })
        .parse()
        .expect("S3E_POSTGRES_URL parses")
}

/// The env settings as a key/value string, with `port` (on 127.0.0.1)
/// instead of the server's own when given.
fn connection_string(port: Option<u16>) -> String {
    let c = env_config();
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let (host, port) = match port {
        Some(p) => ("127.0.0.1".to_string(), p),
        None => (host, c.get_ports().first().copied().unwrap_or(5432)),
    };
    let mut s = format!(
        "host={host} port={port} user={} dbname={} sslmode=disable",
        c.get_user().unwrap_or("postgres"),
        c.get_dbname().unwrap_or("test"),
    );
    if let Some(p) = c.get_password() {
        s.push_str(&format!(" password='{}'", String::from_utf8_lossy(p)));
    }
    s
}

fn upstream() -> String {
    let c = env_config();
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    format!("{host}:{}", c.get_ports().first().copied().unwrap_or(5432))
}

/// A connection of the test's own.
async fn sql() -> tokio_postgres::Client {
    let (client, conn) = env_config()
        .connect(tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL is reachable at S3E_POSTGRES_URL (see scripts/services.sh)");
    tokio::spawn(conn);
    client
}

fn id() -> TargetId {
    "arn:minio:sqs::conformance:postgresql".parse().unwrap()
}

/// The decoded object keys of an access table, in insertion order. The
/// table (MinIO's schema) has no sequence column; rows of an insert-only
/// heap come back in insertion order by `ctid`.
async fn access_keys(c: &tokio_postgres::Client, table: &str) -> Vec<String> {
    let rows = c
        .query(
            &format!(
                "SELECT event_data->'Records'->0->'s3'->'object'->>'key' FROM {table} ORDER BY ctid"
            ),
            &[],
        )
        .await
        .unwrap_or_default();
    rows.iter()
        .map(|r| s3_event_core::decode_key(r.get::<_, &str>(0)).unwrap())
        .collect()
}

/// The keys (`bucket/object`) of a namespace table, sorted.
async fn namespace_keys(c: &tokio_postgres::Client, table: &str) -> Vec<String> {
    c.query(&format!("SELECT key FROM {table} ORDER BY key"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

struct PgHarness {
    proxy: Proxy,
    table: String,
}

impl PgHarness {
    async fn new() -> PgHarness {
        PgHarness {
            proxy: Proxy::new(&upstream()).await,
            table: unique_name("s3e_pg_conf"),
        }
    }
}

#[async_trait]
impl Harness for PgHarness {
    fn target(&self) -> Arc<dyn Target> {
        let c = PostgresConfig::new(
            connection_string(Some(self.proxy.port)),
            self.table.clone(),
            Format::Access,
        );
        Arc::new(PostgresTarget::new(id(), c).unwrap())
    }

    async fn received(&self) -> Vec<String> {
        access_keys(&sql().await, &self.table).await
    }

    async fn stop_server(&self) {
        self.proxy.stop().await;
    }

    async fn start_server(&self) {
        self.proxy.start().await;
    }

    /// An event whose `eventTime` is not a time: the server rejects the
    /// cast to `timestamptz` (SQLSTATE 22007).
    fn poison(&self) -> Option<EventRecord> {
        let mut r = conformance::record("conformance-poison");
        r.event_time = Some("not a time".into());
        Some(r)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_run_all_through_a_proxy() {
    let h = PgHarness::new().await;
    conformance::run_all(&h).await;
    sql()
        .await
        .batch_execute(&format!("DROP TABLE {}", h.table))
        .await
        .unwrap();
}

fn target(table: &str, format: Format) -> PostgresTarget {
    PostgresTarget::new(
        id(),
        PostgresConfig::new(connection_string(None), table, format),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_creates_overwrites_and_deletes() {
    let table = unique_name("s3e_pg_ns");
    let t = target(&table, Format::Namespace);
    let put = |k: &str, time: &str| test_record("s3:ObjectCreated:Put", "photos", k, time);
    t.send_batch(&[put("a b.jpg", "t1"), put("c.jpg", "t1")])
        .await
        .unwrap();
    t.send(&put("a b.jpg", "t2")).await.unwrap();
    let c = sql().await;
    let rows = c
        .query(
            &format!("SELECT key, value->'Records'->0->>'eventTime', jsonb_array_length(value->'Records') FROM {table} ORDER BY key"),
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, i32)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
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
    let keys = namespace_keys(&c, &table).await;
    assert_eq!(keys, ["photos/d.jpg"]);
    t.send(&test_record(
        "s3:ObjectRemoved:Delete",
        "photos",
        "d.jpg",
        "t5",
    ))
    .await
    .unwrap();
    let n: i64 = c
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the delete leaves no row");
    // MinIO's schema.
    let cols: Vec<(String, String)> = c
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_name = $1 ORDER BY ordinal_position",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        cols,
        [
            ("key".to_string(), "character varying".to_string()),
            ("value".to_string(), "jsonb".to_string())
        ]
    );
    c.batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn request_timeout_cuts_short_a_batch_that_waits_on_a_lock() {
    let table = unique_name("s3e_pg_timeout");
    let mut config = PostgresConfig::new(connection_string(None), &table, Format::Namespace);
    config.client.request_timeout = Some(Duration::from_millis(300));
    let t = PostgresTarget::new(id(), config).unwrap();
    let put = |k: &str| test_record("s3:ObjectCreated:Put", "b", k, "");
    // A first batch creates the table; then a session of our own locks it.
    t.send(&put("k0")).await.unwrap();
    let mut locker = sql().await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        .await
        .unwrap();
    let e = t.send(&put("k1")).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(
        e.to_string()
            .contains("the batch did not complete within `request_timeout` (300ms)"),
        "not the request timeout: {e}"
    );
    lock.rollback().await.unwrap();
    // With the lock gone the same target delivers again.
    t.send(&put("k2")).await.unwrap();
    let c = sql().await;
    let keys = namespace_keys(&c, &table).await;
    // k1's transaction was rolled back when the timeout dropped it.
    assert_eq!(keys, ["b/k0", "b/k2"]);
    c.batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn access_appends_in_order_with_event_time() {
    let table = unique_name("s3e_pg_access");
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
    let c = sql().await;
    let want: Vec<String> = (0..300)
        .map(|i| format!("k{i:03}"))
        .chain(["k000".into()])
        .collect();
    assert_eq!(access_keys(&c, &table).await, want);
    let first: String = c
        .query_one(
            &format!(
                "SELECT to_char(event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS') \
                 FROM {table} ORDER BY ctid LIMIT 1"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(first, "2024-05-06T07:08:09.123");
    c.batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_value_is_permanent_with_the_servers_message() {
    let table = unique_name("s3e_pg_reject");
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
    assert!(e.to_string().contains("22007"), "{e}");
    assert!(matches!(t.is_active().await, Ok(true)));
    sql()
        .await
        .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_role_is_permanent_and_password_not_shown() {
    let c = env_config();
    let cs = format!(
        "host=127.0.0.1 port={} user=s3e_no_such_role password=s3cr3t-pw dbname={} sslmode=disable",
        c.get_ports().first().copied().unwrap_or(5432),
        c.get_dbname().unwrap_or("test")
    );
    let t = PostgresTarget::new(id(), PostgresConfig::new(cs, "t", Format::Access)).unwrap();
    let e = t
        .send(&test_record("s3:ObjectCreated:Put", "b", "k", ""))
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("28"), "{e}");
    assert!(!e.to_string().contains("s3cr3t-pw"), "{e}");
    assert!(t.is_active().await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn existing_table_is_used_without_create_permission() {
    let table = unique_name("s3e_pg_existing");
    let role = unique_name("s3e_pg_writer");
    let c = sql().await;
    c.batch_execute(&format!(
        "CREATE TABLE {table} (event_time TIMESTAMP WITH TIME ZONE NOT NULL, event_data JSONB);
         CREATE ROLE {role} LOGIN;
         GRANT INSERT, SELECT ON {table} TO {role};
         REVOKE CREATE ON SCHEMA public FROM {role};"
    ))
    .await
    .unwrap();
    let e = env_config();
    let cs = format!(
        "host=127.0.0.1 port={} user={role} dbname={} sslmode=disable",
        e.get_ports().first().copied().unwrap_or(5432),
        e.get_dbname().unwrap_or("test")
    );
    let t = PostgresTarget::new(id(), PostgresConfig::new(cs, &table, Format::Access)).unwrap();
    t.send(&test_record(
        "s3:ObjectCreated:Put",
        "b",
        "k",
        "2024-01-01T00:00:00Z",
    ))
    .await
    .unwrap();
    assert_eq!(access_keys(&c, &table).await, ["k"]);
    t.close().await.unwrap();
    c.batch_execute(&format!("DROP TABLE {table}; DROP ROLE {role};"))
        .await
        .unwrap();
}

/// `sslmode=require` over rustls against the real server: works when the
/// server has TLS on (Debian's default, with its snakeoil certificate, so
/// unverified as in libpq), and fails with an
/// error when it has TLS off.
#[tokio::test(flavor = "multi_thread")]
async fn sslmode_require_uses_tls() {
    let c = sql().await;
    let ssl_on: String = c.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    let e = env_config();
    let table = unique_name("s3e_pg_tls");
    let cs = format!(
        "host=127.0.0.1 port={} user={} dbname={} sslmode=require application_name={table}",
        e.get_ports().first().copied().unwrap_or(5432),
        e.get_user().unwrap_or("postgres"),
        e.get_dbname().unwrap_or("test")
    );
    let t = PostgresTarget::new(id(), PostgresConfig::new(cs, &table, Format::Access)).unwrap();
    let sent = t
        .send(&test_record(
            "s3:ObjectCreated:Put",
            "b",
            "k",
            "2024-01-01T00:00:00Z",
        ))
        .await;
    if ssl_on == "on" {
        sent.unwrap();
        // The target's connection is encrypted, as the server sees it.
        let encrypted: bool = c
            .query_one(
                "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = $1",
                &[&table],
            )
            .await
            .unwrap()
            .get(0);
        assert!(encrypted, "the target's connection is not encrypted");
        assert_eq!(access_keys(&c, &table).await, ["k"]);
        c.batch_execute(&format!("DROP TABLE {table}"))
            .await
            .unwrap();
    } else {
        assert!(sent.is_err(), "TLS required but the server has it off");
    }
}

/// The server's own certificate file (`ssl_cert_file`), when TLS is on.
async fn server_cert(c: &tokio_postgres::Client) -> Option<String> {
    let ssl: String = c.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    if ssl != "on" {
        return None;
    }
    let f: String = c.query_one("SHOW ssl_cert_file", &[]).await.unwrap().get(0);
    Some(f)
}

fn verify_string(host: &str, mode: &str, root: &str, table: &str) -> String {
    let e = env_config();
    format!(
        "host={host} port={} user={} dbname={} sslmode={mode} sslrootcert='{root}' application_name={table}",
        e.get_ports().first().copied().unwrap_or(5432),
        e.get_user().unwrap_or("postgres"),
        e.get_dbname().unwrap_or("test")
    )
}

/// `verify-full` and `verify-ca` against the real server, whose certificate
/// (Debian's self-signed one, issued for `localhost`) is its own root:
/// `verify-full` works for `localhost` and refuses `127.0.0.1` (the name
/// does not match); `verify-ca` accepts `127.0.0.1`; both refuse a server
/// whose certificate does not chain to the given root.
#[tokio::test(flavor = "multi_thread")]
async fn sslmode_verify_full_and_verify_ca_check_the_certificate() {
    let c = sql().await;
    let cert = server_cert(&c)
        .await
        .expect("the test server has TLS on (Debian's default)");
    let pem = std::fs::read_to_string(&cert).expect("the server's certificate is readable");
    assert!(
        pem.contains("BEGIN CERTIFICATE"),
        "{cert} is not a PEM certificate"
    );
    // Debian's snakeoil certificate is issued for `localhost`.
    let names = "localhost";
    async fn send(cs: String, table: String) -> Result<(), TargetError> {
        let record = test_record("s3:ObjectCreated:Put", "b", "k", "2024-01-01T00:00:00Z");
        let t = PostgresTarget::new(id(), PostgresConfig::new(cs, &table, Format::Access)).unwrap();
        t.send(&record).await
    }

    let table = unique_name("s3e_pg_vfull");
    send(
        verify_string(names, "verify-full", &cert, &table),
        table.clone(),
    )
    .await
    .expect("verify-full for the certificate's own name");
    assert_eq!(access_keys(&c, &table).await, ["k"]);
    c.batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();

    let table = unique_name("s3e_pg_vfull_ip");
    let e = send(
        verify_string("127.0.0.1", "verify-full", &cert, &table),
        table,
    )
    .await
    .expect_err("verify-full must refuse a certificate for another name");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");

    let table = unique_name("s3e_pg_vca");
    send(
        verify_string("127.0.0.1", "verify-ca", &cert, &table),
        table.clone(),
    )
    .await
    .expect("verify-ca does not check the name");
    assert_eq!(access_keys(&c, &table).await, ["k"]);
    c.batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();

    // A root the server's certificate does not chain to.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let other_pem = dir.path().join("other-ca.pem");
    std::fs::write(&other_pem, other.cert.pem()).unwrap();
    for mode in ["verify-ca", "verify-full"] {
        let table = unique_name("s3e_pg_vbad");
        let e = send(
            verify_string("localhost", mode, other_pem.to_str().unwrap(), &table),
            table,
        )
        .await
        .expect_err("a certificate from another CA must be refused");
        assert!(
            e.to_string().to_lowercase().contains("certificate"),
            "{mode}: {e}"
        );
    }
}

/// Seed 002's PostgreSQL block, pasted unchanged (empty `connectionString`,
/// then the discrete `host`, `port`, `user`, `password`, `database` keys),
/// writes MinIO's `namespace` rows into `bucketevents_db.bucketevents` on
/// the real server. (The server here uses trust authentication, so the
/// block's `password` is sent but not checked.)
#[tokio::test]
async fn the_seed_block_with_discrete_keys_writes_to_the_real_server() {
    use crate::config::seed;
    let admin = sql().await;
    if let Err(e) = admin.execute("CREATE DATABASE bucketevents_db", &[]).await {
        // Created by an earlier run.
        let code = e.as_db_error().map(|d| d.code().clone());
        assert_eq!(
            code,
            Some(tokio_postgres::error::SqlState::DUPLICATE_DATABASE),
            "{e:?}"
        );
    }
    let c = crate::NotifyConfig::from_json(&seed::doc(&[seed::POSTGRESQL]), "us-east-1").unwrap();
    let (target, _) = c.build_targets().unwrap().remove(0);
    assert!(target.is_active().await.unwrap());
    let key = format!("{}.jpg", unique_name("seed"));
    let r = test_record(
        "s3:ObjectCreated:Put",
        "images",
        &key,
        "2026-11-23T22:34:38.226Z",
    );
    target.send_batch(&[r]).await.unwrap();
    let mut cfg = env_config();
    cfg.dbname("bucketevents_db");
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT value->'Records'->0->>'eventName' FROM bucketevents WHERE key = $1",
            &[&format!("images/{key}")],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "s3:ObjectCreated:Put");
    target.close().await.unwrap();
}
