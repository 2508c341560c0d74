//! The MySQL target (feature `mysql`): MinIO's `namespace` and `access`
//! tables, one transaction per batch, over a small connection pool
//! (`mysql_async`). Tested on MariaDB.
//!
//! The table is created when missing, with MinIO's schema:
//!
//! - `namespace` (default): `key_name VARCHAR(3072)`, `key_hash CHAR(64)`
//!   generated as `SHA2(key_name, 256)`, `value JSON`; each event upserts the
//!   row `bucket/object` (decoded key) with `{"Records": [event]}`, and
//!   `s3:ObjectRemoved:*` deletes it. MinIO declares `key_hash` the primary
//!   key, which MariaDB refuses (no keys on generated columns' `NOT NULL`/
//!   `PRIMARY KEY`); there the table gets `UNIQUE KEY (key_hash)` instead,
//!   which upserts the same way. A batch is one transaction of at most two
//!   statements: one multi-row upsert of the last event of each object, one
//!   delete.
//! - `access`: `event_time DATETIME NOT NULL, event_data JSON`; each event
//!   inserts a row with its `eventTime` in UTC (the server's UTC time when it
//!   has none). A batch is one multi-row `INSERT`, in order. An `eventTime`
//!   that is not RFC 3339 is passed as is, and a strict server rejects it.
//!
//! Errors: I/O and driver errors (connection refused, lost, closed), server
//! errors 1040 (too many connections), 1053, 1205, 1213, 1317, 1927, 2006,
//! 2013 and SQLSTATE class 08 are transient; anything else the server
//! rejects (1045 bad credentials, 1292 a bad time, 4025/3140 invalid JSON,
//! 1142 no permission, …) is permanent, with the server's message. The pool
//! replaces lost connections. TLS: the DSN's `tls=true` / `tls=skip-verify`
//! (rustls).

mod config;
#[cfg(all(test, feature = "integration"))]
mod conformance_tests;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Pool, PoolConstraints, PoolOpts, SslOpts, TxOpts, Value};
use s3_event_core::{EventRecord, Target, TargetError, TargetId};

pub use crate::db_common::Format;
pub use config::{
    Dsn, DsnTls, MySqlConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_OPEN_CONNECTIONS,
    DEFAULT_REQUEST_TIMEOUT,
};

use crate::config::Timeouts;
use crate::db_common::{collapse, records_doc, NsOp, MAX_BATCH};
use crate::Result;

/// How long `is_active`'s ping may take.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// Delivers events to a MySQL or MariaDB table. See the
/// [module docs](self).
pub struct MySqlTarget {
    id: TargetId,
    format: Format,
    table: String,
    dsn: Dsn,
    connections: usize,
    /// Created on first use (the pool needs a runtime).
    pool: Mutex<Option<Pool>>,
    table_ready: AtomicBool,
    /// Getting a pooled connection, and one batch.
    timeouts: Timeouts,
}

impl fmt::Debug for MySqlTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlTarget")
            .field("id", &self.id)
            .field("dsn", &self.dsn)
            .field("table", &self.table)
            .field("format", &self.format)
            .field("max_open_connections", &self.connections)
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

/// Whether a server error may go away on retry.
fn transient_server_error(code: u16, state: &str) -> bool {
    state.starts_with("08") || matches!(code, 1040 | 1053 | 1205 | 1213 | 1317 | 1927 | 2006 | 2013)
}

/// `eventTime` as a UTC `DATETIME` literal, or as sent when it is not
/// RFC 3339 (a strict server rejects it); `None` when missing or empty.
fn event_time(record: &EventRecord) -> Option<String> {
    let t = record.event_time.as_deref().filter(|t| !t.is_empty())?;
    Some(match chrono::DateTime::parse_from_rfc3339(t) {
        Ok(dt) => dt.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        Err(_) => t.to_owned(),
    })
}


/// Registered in `lib.rs`'s `targets!` list.
impl crate::registry::TargetType for MySqlTarget {
    type Config = MySqlConfig;

    const SECRET_KEYS: &'static [&'static str] = &["password"];
    const URL_KEYS: &'static [&'static str] = &["dsn_string"];

    const LEGACY_KEYS: &'static [(&'static str, &'static str)] = &[("user", "username"), ("dsnString", "dsn_string")];

    fn build(
        id: TargetId,
        config: MySqlConfig,
    ) -> crate::Result<std::sync::Arc<dyn s3_event_core::Target>> {
        Ok(std::sync::Arc::new(MySqlTarget::new(id, config)?))
    }
}

impl MySqlTarget {
    /// Validates `config` (errors name the target id and the key) and
    /// builds the target. Nothing is contacted until the first send.
    pub fn new(id: TargetId, config: MySqlConfig) -> Result<MySqlTarget> {
        config.validate(id.id())?;
        let dsn = config.dsn(id.id())?;
        Ok(MySqlTarget {
            timeouts: config.timeouts(),
            format: config.format,
            connections: config.connections(),
            table: config.table,
            dsn,
            pool: Mutex::new(None),
            table_ready: AtomicBool::new(false),
            id,
        })
    }

    /// How long getting a pooled connection (connecting, when there is
    /// none) and one batch may take.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    fn pool(&self) -> Pool {
        let mut p = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pool) = p.as_ref() {
            return pool.clone();
        }
        let d = &self.dsn;
        let constraints = PoolConstraints::new(0, self.connections.max(1))
            .unwrap_or_else(|| PoolConstraints::new(0, 1).expect("0 <= 1"));
        let mut opts = OptsBuilder::default()
            .ip_or_hostname(d.host.clone())
            .tcp_port(d.port)
            .user(d.user.clone())
            .pass(d.password.clone())
            .db_name(d.db.clone())
            // Stay on the configured address (the driver would otherwise
            // switch to the server's local socket).
            .prefer_socket(false)
            .pool_opts(PoolOpts::new().with_constraints(constraints));
        if let Some(s) = &d.socket {
            opts = opts.socket(Some(s.clone()));
        }
        match d.tls {
            DsnTls::Off => {}
            DsnTls::Verify => opts = opts.ssl_opts(SslOpts::default()),
            DsnTls::SkipVerify => {
                opts = opts.ssl_opts(
                    SslOpts::default()
                        .with_danger_accept_invalid_certs(true)
                        .with_danger_skip_domain_validation(true),
                )
            }
        }
        let pool = Pool::new(opts);
        *p = Some(pool.clone());
        pool
    }

    fn error(&self, e: mysql_async::Error) -> TargetError {
        match &e {
            mysql_async::Error::Server(s) => {
                let message = format!("ERROR {} ({}): {}", s.code, s.state, s.message);
                if transient_server_error(s.code, &s.state) {
                    TargetError::transient(&self.id, message)
                } else {
                    TargetError::permanent(&self.id, message)
                }
            }
            mysql_async::Error::Url(_) => TargetError::permanent(&self.id, e),
            // I/O, driver (connection closed, pool disconnected) and others.
            _ => TargetError::transient(&self.id, e),
        }
    }

    async fn conn(&self) -> Result<Conn, TargetError> {
        let limit = self.timeouts.connect;
        match tokio::time::timeout(limit, self.pool().get_conn()).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(self.error(e)),
            Err(_) => Err(TargetError::transient(
                &self.id,
                format!("no connection within `connect_timeout` ({limit:?})"),
            )),
        }
    }

    /// Creates the table with MinIO's schema if it is missing (once).
    async fn ensure_table(&self, conn: &mut Conn) -> Result<(), mysql_async::Error> {
        if self.table_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let t = &self.table;
        // As MinIO: look first, so a user without CREATE permission can
        // write to an existing table (1146: no such table).
        match conn.query_drop(format!("SELECT 1 FROM {t} LIMIT 0")).await {
            Ok(()) => {
                self.table_ready.store(true, Ordering::Release);
                return Ok(());
            }
            Err(mysql_async::Error::Server(s)) if s.code == 1146 => {}
            Err(e) => return Err(e),
        }
        match self.format {
            Format::Namespace => {
                let minio = format!(
                    "CREATE TABLE IF NOT EXISTS {t} (key_name VARCHAR(3072) NOT NULL, \
                     key_hash CHAR(64) GENERATED ALWAYS AS (SHA2(key_name, 256)) STORED NOT NULL \
                     PRIMARY KEY, value JSON) CHARACTER SET = utf8mb4 COLLATE = utf8mb4_bin \
                     ROW_FORMAT = Dynamic"
                );
                match conn.query_drop(minio).await {
                    // MariaDB: no NOT NULL / PRIMARY KEY on generated columns.
                    Err(mysql_async::Error::Server(s)) if s.code == 1064 => {
                        conn.query_drop(format!(
                            "CREATE TABLE IF NOT EXISTS {t} (key_name VARCHAR(3072) NOT NULL, \
                             key_hash CHAR(64) GENERATED ALWAYS AS (SHA2(key_name, 256)) STORED, \
                             value JSON, UNIQUE KEY (key_hash)) CHARACTER SET = utf8mb4 \
                             COLLATE = utf8mb4_bin ROW_FORMAT = Dynamic"
                        ))
                        .await?
                    }
                    other => other?,
                }
            }
            Format::Access => {
                conn.query_drop(format!(
                    "CREATE TABLE IF NOT EXISTS {t} (event_time DATETIME NOT NULL, \
                     event_data JSON) ROW_FORMAT = Dynamic"
                ))
                .await?
            }
        }
        self.table_ready.store(true, Ordering::Release);
        Ok(())
    }

    async fn write(
        &self,
        conn: &mut Conn,
        events: &[EventRecord],
    ) -> Result<(), mysql_async::Error> {
        let t = &self.table;
        let mut tx = conn.start_transaction(TxOpts::default()).await?;
        match self.format {
            Format::Access => {
                let rows = vec!["(COALESCE(?, UTC_TIMESTAMP()), ?)"; events.len()].join(", ");
                let mut params: Vec<Value> = Vec::with_capacity(events.len() * 2);
                for e in events {
                    params.push(event_time(e).into());
                    params.push(records_doc(e).into());
                }
                tx.exec_drop(
                    format!("INSERT INTO {t} (event_time, event_data) VALUES {rows}"),
                    params,
                )
                .await?;
            }
            Format::Namespace => {
                // Keys decode (checked by `send_batch`), so this cannot fail.
                let ops = collapse(&self.id, events).unwrap_or_default();
                let mut puts: Vec<Value> = Vec::new();
                let mut dels: Vec<Value> = Vec::new();
                for (k, op) in ops {
                    match op {
                        NsOp::Put(r) => {
                            puts.push(k.into());
                            puts.push(records_doc(r).into());
                        }
                        NsOp::Delete => dels.push(k.into()),
                    }
                }
                if !puts.is_empty() {
                    let rows = vec!["(?, ?)"; puts.len() / 2].join(", ");
                    tx.exec_drop(
                        format!(
                            "INSERT INTO {t} (key_name, value) VALUES {rows} \
                             ON DUPLICATE KEY UPDATE value = VALUES(value)"
                        ),
                        puts,
                    )
                    .await?;
                }
                if !dels.is_empty() {
                    let list = vec!["SHA2(?, 256)"; dels.len()].join(", ");
                    tx.exec_drop(format!("DELETE FROM {t} WHERE key_hash IN ({list})"), dels)
                        .await?;
                }
            }
        }
        tx.commit().await
    }
}

#[async_trait]
impl Target for MySqlTarget {
    fn id(&self) -> &TargetId {
        &self.id
    }

    /// One transaction for the whole batch; see the [module docs](self).
    async fn send_batch(&self, events: &[EventRecord]) -> Result<(), TargetError> {
        if events.is_empty() {
            return Ok(());
        }
        if self.format == Format::Namespace {
            // A key that does not decode is a permanent error, before any I/O.
            collapse(&self.id, events)?;
        }
        let mut conn = self.conn().await?;
        let work = async {
            self.ensure_table(&mut conn).await?;
            self.write(&mut conn, events).await
        };
        let limit = self.timeouts.request;
        match tokio::time::timeout(limit, work).await {
            Ok(r) => r.map_err(|e| self.error(e)),
            Err(_) => Err(TargetError::transient(
                &self.id,
                format!("the batch did not complete within `request_timeout` ({limit:?})"),
            )),
        }
    }

    /// A ping on a pooled connection: `Ok(true)` on an answer, `Ok(false)`
    /// when the server cannot be reached, an error when it refuses us (bad
    /// credentials, unknown database).
    async fn is_active(&self) -> Result<bool, TargetError> {
        let probe = async {
            let mut conn = self.conn().await?;
            conn.ping().await.map_err(|e| self.error(e))
        };
        match tokio::time::timeout(PING_TIMEOUT, probe).await {
            Err(_) => Ok(false),
            Ok(Ok(())) => Ok(true),
            Ok(Err(e)) if e.is_transient() => Ok(false),
            Ok(Err(e)) => Err(e),
        }
    }

    async fn close(&self) -> Result<(), TargetError> {
        let pool = self.pool.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(p) = pool {
            p.disconnect().await.map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }
}

#[cfg(test)]
mod tests {
    use super::config::{redact_dsn, valid_table};
    use super::*;
    use crate::db_common::test_record;
    use crate::Error;

    fn id() -> TargetId {
        "arn:minio:sqs::1:mysql".parse().unwrap()
    }

    #[test]
    fn go_dsns() {
        let d =
            Dsn::parse("root:p@ss:w@rd@tcp(db.local:3307)/minio?tls=skip-verify&parseTime=true")
                .unwrap();
        assert_eq!(d.user.as_deref(), Some("root"));
        assert_eq!(d.password.as_deref(), Some("p@ss:w@rd"));
        assert_eq!((d.host.as_str(), d.port), ("db.local", 3307));
        assert_eq!(d.db.as_deref(), Some("minio"));
        assert_eq!(d.tls, DsnTls::SkipVerify);
        let d = Dsn::parse("root:@tcp(127.0.0.1:3306)/test").unwrap();
        assert_eq!(
            (d.user.as_deref(), d.password.as_deref()),
            (Some("root"), None)
        );
        let d = Dsn::parse("/test").unwrap();
        assert_eq!((d.host.as_str(), d.port), ("127.0.0.1", 3306));
        let d = Dsn::parse("u@unix(/run/mysqld/mysqld.sock)/db").unwrap();
        assert_eq!(d.socket.as_deref(), Some("/run/mysqld/mysqld.sock"));
        let d = Dsn::parse("u:p@tcp([::1]:3306)/db").unwrap();
        assert_eq!((d.host.as_str(), d.port), ("::1", 3306));
        for bad in [
            "u:p@tcp(h:1)",
            "u@tcp(h:x)/d",
            "u@udp(h)/d",
            "u@tcp(h/d",
            "/d?tls=custom",
        ] {
            assert!(Dsn::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn client_keys_reach_the_pool_and_the_batches() {
        use crate::config::client::testing::{assert_client_keys, secs};
        let keys = serde_json::json!({"dsn_string": "root:@tcp(127.0.0.1:3306)/test",
                                      "table": "t"});
        assert_client_keys(keys, secs(10, 10), |v| {
            MySqlTarget::new(id(), serde_json::from_value(v).unwrap())
                .unwrap()
                .timeouts()
        });
    }

    #[test]
    fn debug_hides_passwords() {
        let dsn = "root:s3cr3t-pw@tcp(127.0.0.1:3306)/test";
        assert_eq!(redact_dsn(dsn), "root:***@tcp(127.0.0.1:3306)/test");
        let c = MySqlConfig::new(dsn, "events", Format::Access);
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cr3t-pw") && shown.contains("***"),
            "{shown}"
        );
        let t = MySqlTarget::new(id(), c).unwrap();
        let shown = format!("{t:?}");
        assert!(
            !shown.contains("s3cr3t-pw") && shown.contains("***"),
            "{shown}"
        );
        let c = MySqlConfig {
            table: "t".into(),
            database: Some("test".into()),
            password: Some("s3cr3t-pw".into()),
            ..MySqlConfig::default()
        };
        assert!(!format!("{c:?}").contains("s3cr3t-pw"));
        assert!(!format!("{:?}", MySqlTarget::new(id(), c).unwrap()).contains("s3cr3t-pw"));
        // A DSN error never quotes the DSN.
        let e = MySqlTarget::new(
            id(),
            MySqlConfig::new("u:s3cr3t-pw@tcp(h:x)/d", "t", Format::Access),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("s3cr3t-pw"), "{e}");
        assert!(matches!(
            e,
            Error::InvalidConfig {
                key: "dsn_string",
                ..
            }
        ));
    }

    #[test]
    fn table_names() {
        for ok in ["events", "db.events", "`my table`", "_x$1"] {
            assert!(valid_table(ok), "{ok}");
        }
        for bad in ["", "1x", "a b", "x;drop", "a.b.c", "`a`b`"] {
            assert!(!valid_table(bad), "{bad}");
        }
    }

    #[test]
    fn event_times_in_utc() {
        let t = |s: &str| event_time(&test_record("s3:ObjectCreated:Put", "b", "k", s));
        assert_eq!(
            t("2024-05-06T07:08:09.123Z").as_deref(),
            Some("2024-05-06 07:08:09.123000")
        );
        assert_eq!(
            t("2024-05-06T09:08:09+02:00").as_deref(),
            Some("2024-05-06 07:08:09.000000")
        );
        assert_eq!(t(""), None);
        assert_eq!(t("garbage").as_deref(), Some("garbage"));
    }

    #[test]
    fn built_from_notify_config_json_and_env() {
        let c = crate::NotifyConfig::from_json(
            r#"{"mysql": {"1": {"dsn_string": "root:@tcp(127.0.0.1:3306)/test",
                               "table": "t", "format": "access", "max_open_connections": "3"}}}"#,
            "r",
        )
        .unwrap();
        let t = c.build_targets().unwrap();
        assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:1:mysql");
        let env = [
            (
                "MINIO_NOTIFY_MYSQL_DSN_STRING_X",
                "root:pw@tcp(127.0.0.1:3306)/test",
            ),
            ("MINIO_NOTIFY_MYSQL_TABLE_X", "t"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let t = crate::NotifyConfig::from_env_vars(env, "r")
            .unwrap()
            .build_targets()
            .unwrap();
        assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:X:mysql");
    }

    #[test]
    fn server_errors() {
        assert!(transient_server_error(2013, "HY000"));
        assert!(transient_server_error(1927, "70100"));
        assert!(transient_server_error(9999, "08S01"));
        assert!(!transient_server_error(1045, "28000"));
        assert!(!transient_server_error(1292, "22007"));
    }

    #[tokio::test]
    async fn unreachable_server_is_transient_and_inactive() {
        let t = MySqlTarget::new(
            id(),
            MySqlConfig::new("root:@tcp(127.0.0.1:1)/test", "t", Format::Access),
        )
        .unwrap();
        assert!(matches!(t.is_active().await, Ok(false)));
        let e = t
            .send(&test_record("s3:ObjectCreated:Put", "b", "k", ""))
            .await
            .unwrap_err();
        assert!(e.is_transient(), "{e}");
    }
}
