//! The PostgreSQL target (feature `postgres`; MinIO's type `postgresql`):
//! MinIO's `namespace` and `access` tables, one statement or one
//! transaction per batch, over a small connection pool.
//!
//! The table is created when missing, with MinIO's schema:
//!
//! - `namespace` (default): `(key VARCHAR PRIMARY KEY, value JSONB)`; each
//!   event upserts the row `bucket/object` (decoded key) with
//!   `{"Records": [event]}`, and `s3:ObjectRemoved:*` deletes it. A batch is
//!   one transaction of at most two statements: one upsert of the last event
//!   of each object, one delete.
//! - `access`: `(event_time TIMESTAMP WITH TIME ZONE NOT NULL, event_data
//!   JSONB)`; each event inserts a row (its `eventTime`, or the server's
//!   time when it has none). A batch is one `INSERT … SELECT … FROM unnest`
//!   statement, in order.
//!
//! Errors: connection failures, timeouts and SQLSTATE classes 08, 53, 57P,
//! 40001/40P01 (serialization, deadlock) and 55P03 are transient; anything
//! else the server rejects (bad credentials 28xxx, a rejected value 22xxx,
//! a missing permission 42501, …) is permanent, with the server's message
//! and SQLSTATE. The pool replaces lost connections, so the target works
//! again after a server restart.
//!
//! TLS (rustls) follows `sslmode` in the connection string, with libpq's
//! meaning: `disable` is plain text; `prefer` (the default) uses TLS when
//! the server offers it and plain text otherwise; `require` insists on TLS
//! without checking the server's certificate (encryption without
//! authentication, as libpq without a root certificate); `verify-ca`
//! checks that the certificate chains to `sslrootcert` (a PEM file of CA
//! certificates, or `system` for the system's roots), and `verify-full`
//! also that it names the host. `sslcert`/`sslkey` give a client
//! certificate.

mod config;
#[cfg(all(test, feature = "integration"))]
mod conformance_tests;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use s3_event_core::{EventRecord, Target, TargetError, TargetId};

pub use crate::db_common::Format;
pub use config::{PostgresConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_OPEN_CONNECTIONS};

use crate::db_common::{collapse, records_doc, NsOp, MAX_BATCH};
use crate::{Error, Result};

/// How long `is_active`'s `SELECT 1` may take.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// Delivers events to a PostgreSQL table. See the [module docs](self).
pub struct PostgresTarget {
    id: TargetId,
    format: Format,
    table: String,
    /// The connection string with its password redacted, for `Debug`.
    shown: String,
    pool: Pool,
    table_ready: AtomicBool,
    /// Connecting, and waiting for a pooled connection.
    connect_timeout: Duration,
    /// One batch (its statement or transaction); `None`: unbounded.
    request_timeout: Option<Duration>,
}

impl fmt::Debug for PostgresTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresTarget")
            .field("id", &self.id)
            .field("connection", &self.shown)
            .field("table", &self.table)
            .field("format", &self.format)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// Whether a server error with SQLSTATE `code` may go away on retry.
fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || matches!(code, "40001" | "40P01" | "55P03" | "55006")
}


/// Registered in `lib.rs`'s `targets!` list.
impl crate::registry::TargetType for PostgresTarget {
    type Config = PostgresConfig;

    const SECRET_KEYS: &'static [&'static str] = &["password"];
    const URL_KEYS: &'static [&'static str] = &["connection_string"];

    const LEGACY_KEYS: &'static [(&'static str, &'static str)] = &[("user", "username")];

    fn build(
        id: TargetId,
        config: PostgresConfig,
    ) -> crate::Result<std::sync::Arc<dyn s3_event_core::Target>> {
        Ok(std::sync::Arc::new(PostgresTarget::new(id, config)?))
    }
}

impl PostgresTarget {
    /// Validates `config` (errors name the target id and the key) and
    /// builds the target. Nothing is contacted until the first send.
    pub fn new(id: TargetId, config: PostgresConfig) -> Result<PostgresTarget> {
        config.validate(id.id())?;
        let (mut pg, pg_tls) = config.pg_config(id.id())?;
        let connect_timeout = config.client.connect_timeout_or(DEFAULT_CONNECT_TIMEOUT);
        pg.connect_timeout(connect_timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("s3-event");
        }
        let shown = match &config.connection_string {
            Some(s) => config::redact_connection_string(s),
            None => format!(
                "host={} port={} user={} dbname={}",
                config.host.as_deref().unwrap_or("localhost"),
                config.port,
                config.username.as_deref().unwrap_or_default(),
                config.database.as_deref().unwrap_or_default()
            ),
        };
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = if pg.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
            Manager::from_config(pg, tokio_postgres::NoTls, manager_config)
        } else {
            // `require`/`prefer`: encrypted, the certificate not checked (as
            // libpq without a root certificate); `verify-*`: checked against
            // `sslrootcert` (`system`: the system's roots).
            let root = pg_tls.root_cert.as_deref().filter(|r| *r != "system");
            let client_config = crate::tls::client_config(&crate::tls::TlsOptions {
                ca: root.map(std::path::Path::new),
                client: pg_tls
                    .client
                    .as_ref()
                    .map(|(c, k)| (c.as_path(), k.as_path())),
                skip_verify: pg_tls.verify.is_none(),
                skip_hostname: pg_tls.verify == Some(config::Verify::Ca),
            })
            .map_err(|message| Error::InvalidConfig {
                target: format!("postgresql {}", id.id()),
                key: "connection_string",
                message,
            })?;
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_config);
            Manager::from_config(pg, tls, manager_config)
        };
        let pool = Pool::builder(manager)
            .max_size(config.connections())
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(connect_timeout))
            .create_timeout(Some(connect_timeout))
            .recycle_timeout(Some(connect_timeout))
            .build()
            .map_err(|e| Error::InvalidConfig {
                target: format!("postgresql {}", id.id()),
                key: "max_open_connections",
                message: format!("cannot build the connection pool: {e}"),
            })?;
        Ok(PostgresTarget {
            id,
            format: config.format,
            table: config.table,
            shown,
            pool,
            table_ready: AtomicBool::new(false),
            connect_timeout,
            request_timeout: config.client.request_timeout,
        })
    }

    /// How long connecting, and waiting for a pooled connection, may take
    /// (`connect_timeout`).
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// How long one batch may take (`request_timeout`); `None`: as long as
    /// the server takes.
    pub fn request_timeout(&self) -> Option<Duration> {
        self.request_timeout
    }

    fn db_error(&self, e: &tokio_postgres::Error) -> TargetError {
        match e.as_db_error() {
            Some(db) => {
                let code = db.code().code();
                let message = format!("{}: {} (SQLSTATE {code})", db.severity(), db.message());
                if transient_sqlstate(code) {
                    TargetError::transient(&self.id, message)
                } else {
                    TargetError::permanent(&self.id, message)
                }
            }
            // Connection refused, reset, closed, timeouts: the pool
            // reconnects on a later attempt.
            None => TargetError::transient(&self.id, describe(e)),
        }
    }

    fn pool_error(&self, e: PoolError) -> TargetError {
        match e {
            PoolError::Backend(e) => self.db_error(&e),
            PoolError::Timeout(t) => {
                TargetError::transient(&self.id, format!("connection pool timeout ({t:?})"))
            }
            other => TargetError::permanent(&self.id, format!("connection pool: {other}")),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, TargetError> {
        self.pool.get().await.map_err(|e| self.pool_error(e))
    }

    /// Creates the table with MinIO's schema if it is missing (once).
    async fn ensure_table(&self, client: &deadpool_postgres::Object) -> Result<(), TargetError> {
        if self.table_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let t = &self.table;
        // As MinIO: look first, so a user without CREATE permission can
        // write to an existing table.
        let exists = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[t])
            .await
            .map_err(|e| self.db_error(&e))?
            .get::<_, bool>(0);
        if exists {
            self.table_ready.store(true, Ordering::Release);
            return Ok(());
        }
        let sql = match self.format {
            Format::Namespace => {
                format!("CREATE TABLE IF NOT EXISTS {t} (key VARCHAR PRIMARY KEY, value JSONB)")
            }
            Format::Access => format!(
                "CREATE TABLE IF NOT EXISTS {t} (event_time TIMESTAMP WITH TIME ZONE NOT NULL, \
                 event_data JSONB)"
            ),
        };
        match client.batch_execute(&sql).await {
            Ok(()) => {}
            // Two creators raced: the table exists.
            Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "23505") => {}
            Err(e) => return Err(self.db_error(&e)),
        }
        self.table_ready.store(true, Ordering::Release);
        Ok(())
    }

    async fn write(
        &self,
        client: &mut deadpool_postgres::Object,
        events: &[EventRecord],
    ) -> Result<(), tokio_postgres::Error> {
        let t = &self.table;
        match self.format {
            Format::Access => {
                let times: Vec<Option<&str>> =
                    events.iter().map(|e| e.event_time.as_deref()).collect();
                let docs: Vec<String> = events.iter().map(records_doc).collect();
                let stmt = client
                    .prepare_cached(&format!(
                        "INSERT INTO {t} (event_time, event_data) \
                         SELECT COALESCE(NULLIF(u.t, '')::timestamptz, now()), u.d::jsonb \
                         FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(t, d, n) \
                         ORDER BY u.n"
                    ))
                    .await?;
                client.execute(&stmt, &[&times, &docs]).await?;
            }
            Format::Namespace => {
                // Keys decode (checked by `send_batch`), so this cannot fail.
                let ops = collapse(&self.id, events).unwrap_or_default();
                let mut put_keys = Vec::new();
                let mut put_docs = Vec::new();
                let mut del_keys = Vec::new();
                for (k, op) in ops {
                    match op {
                        NsOp::Put(r) => {
                            put_keys.push(k);
                            put_docs.push(records_doc(r));
                        }
                        NsOp::Delete => del_keys.push(k),
                    }
                }
                let tx = client.transaction().await?;
                if !put_keys.is_empty() {
                    let stmt = tx
                        .prepare_cached(&format!(
                            "INSERT INTO {t} (key, value) \
                             SELECT u.k, u.v::jsonb FROM unnest($1::text[], $2::text[]) AS u(k, v) \
                             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                        ))
                        .await?;
                    tx.execute(&stmt, &[&put_keys, &put_docs]).await?;
                }
                if !del_keys.is_empty() {
                    let stmt = tx
                        .prepare_cached(&format!("DELETE FROM {t} WHERE key = ANY($1::text[])"))
                        .await?;
                    tx.execute(&stmt, &[&del_keys]).await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }
}

/// A tokio-postgres error with its causes, on one line.
fn describe(e: &tokio_postgres::Error) -> String {
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let c_s = c.to_string();
        if !s.contains(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        cause = c.source();
    }
    s
}

#[async_trait]
impl Target for PostgresTarget {
    fn id(&self) -> &TargetId {
        &self.id
    }

    /// One statement (`access`) or one transaction (`namespace`) for the
    /// whole batch; see the [module docs](self).
    async fn send_batch(&self, events: &[EventRecord]) -> Result<(), TargetError> {
        if events.is_empty() {
            return Ok(());
        }
        if self.format == Format::Namespace {
            // A key that does not decode is a permanent error, before any I/O.
            collapse(&self.id, events)?;
        }
        let mut client = self.client().await?;
        let work = async {
            self.ensure_table(&client).await?;
            self.write(&mut client, events)
                .await
                .map_err(|e| self.db_error(&e))
        };
        let Some(limit) = self.request_timeout else {
            return work.await;
        };
        match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => Err(TargetError::transient(
                &self.id,
                format!("the batch did not complete within `request_timeout` ({limit:?})"),
            )),
        }
    }

    /// `SELECT 1` on a pooled connection: `Ok(true)` on an answer,
    /// `Ok(false)` when the server cannot be reached, an error when it
    /// refuses us (bad credentials, unknown database).
    async fn is_active(&self) -> Result<bool, TargetError> {
        let probe = async {
            let client = self.client().await?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| self.db_error(&e))
        };
        match tokio::time::timeout(PING_TIMEOUT, probe).await {
            Err(_) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) if e.is_transient() => Ok(false),
            Ok(Err(e)) => Err(e),
        }
    }

    async fn close(&self) -> Result<(), TargetError> {
        self.pool.close();
        Ok(())
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }
}

#[cfg(test)]
mod tests {
    use super::config::{redact_connection_string, split_tls, valid_table, PgTls, Verify};
    use super::*;

    #[test]
    fn libpq_tls_keys_are_taken_out_of_key_value_strings() {
        let (rest, tls) = split_tls(
            "host=db.example port=5432 sslmode=verify-full sslrootcert='/etc/my ca.pem' user=u",
        )
        .unwrap();
        assert_eq!(rest, "host=db.example port=5432 sslmode=require user=u");
        assert_eq!(
            tls,
            PgTls {
                verify: Some(Verify::Full),
                root_cert: Some("/etc/my ca.pem".into()),
                client: None,
            }
        );
        // What tokio-postgres gets parses, with TLS required.
        let c: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(c.get_ssl_mode(), tokio_postgres::config::SslMode::Require);

        let (rest, tls) =
            split_tls("host=h sslmode=verify-ca sslrootcert=system sslcert=c.pem sslkey=k.pem")
                .unwrap();
        assert_eq!(rest, "host=h sslmode=require");
        assert_eq!(tls.verify, Some(Verify::Ca));
        assert_eq!(tls.root_cert.as_deref(), Some("system"));
        assert_eq!(tls.client, Some(("c.pem".into(), "k.pem".into())));

        // Other modes pass through untouched.
        let s = "host=h sslmode=require password='a b'";
        assert_eq!(split_tls(s).unwrap(), (s.to_owned(), PgTls::default()));
    }

    #[test]
    fn libpq_tls_keys_are_taken_out_of_urls() {
        let (rest, tls) = split_tls(
            "postgresql://u:pw@h:5432/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgresql://u:pw@h:5432/db?sslmode=require&application_name=x"
        );
        assert_eq!(tls.verify, Some(Verify::Full));
        assert_eq!(tls.root_cert.as_deref(), Some("/etc/ca.pem"));
        let (rest, _) = split_tls("postgres://h/db?sslrootcert=a.pem").unwrap();
        assert_eq!(rest, "postgres://h/db");
    }

    #[test]
    fn verifying_modes_need_a_root_certificate_and_say_so() {
        let e = split_tls("host=h sslmode=verify-full").unwrap_err();
        assert!(e.contains("sslrootcert"), "{e}");
        let e = split_tls("host=h sslcert=c.pem").unwrap_err();
        assert!(e.contains("sslkey"), "{e}");
        let e = split_tls("host=h sslrootcert='unterminated").unwrap_err();
        assert!(e.contains("closing quote"), "{e}");
        let err = PostgresTarget::new(
            id(),
            PostgresConfig::new("host=h sslmode=verify-ca", "t", Format::Access),
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig { key: "connection_string", message, .. } if message.contains("sslrootcert")),
            "{err:?}"
        );
        // A root certificate file that does not exist is named at build time.
        let err = PostgresTarget::new(
            id(),
            PostgresConfig::new(
                "host=h sslmode=verify-full sslrootcert=/nonexistent/ca.pem",
                "t",
                Format::Access,
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    fn id() -> TargetId {
        "arn:minio:sqs::1:postgresql".parse().unwrap()
    }

    #[test]
    fn debug_hides_passwords() {
        for cs in [
            "host=127.0.0.1 port=5432 user=postgres password=s3cr3t-pw dbname=test",
            "host=127.0.0.1 password = 's3cr3t-pw' dbname=test",
            "postgresql://postgres:s3cr3t-pw@127.0.0.1:5432/test?sslmode=disable",
            "postgres://u@h/db?password=s3cr3t-pw&sslmode=disable",
        ] {
            let c = PostgresConfig::new(cs, "events", Format::Access);
            let shown = format!("{c:?}");
            assert!(
                !shown.contains("s3cr3t-pw") && shown.contains("***"),
                "{shown}"
            );
            let t = PostgresTarget::new(id(), c).unwrap();
            let shown = format!("{t:?}");
            assert!(
                !shown.contains("s3cr3t-pw") && shown.contains("***"),
                "{shown}"
            );
        }
        let c = PostgresConfig {
            table: "t".into(),
            database: Some("test".into()),
            password: Some("s3cr3t-pw".into()),
            ..PostgresConfig::default()
        };
        assert!(!format!("{c:?}").contains("s3cr3t-pw"));
        let t = PostgresTarget::new(id(), c).unwrap();
        assert!(!format!("{t:?}").contains("s3cr3t-pw"));
        assert_eq!(
            redact_connection_string("host=h dbname=d"),
            "host=h dbname=d",
            "nothing to hide"
        );
    }

    #[test]
    fn table_names_as_minio() {
        for ok in [
            "events",
            "_e$1",
            "\"My Table\"",
            "public.events",
            "événements",
        ] {
            assert!(valid_table(ok), "{ok}");
        }
        for bad in ["", "1events", "e; DROP TABLE x", "a.b.c", "\"a\"b\"", "e-v"] {
            assert!(!valid_table(bad), "{bad}");
        }
    }

    #[test]
    fn parses_minio_keys_and_validates() {
        let c: PostgresConfig = serde_json::from_value(serde_json::json!({
            "enable": "on", "format": "namespace",
            "connection_string": "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable",
            "table": "bucketevents", "host": "", "port": "", "username": "", "password": "",
            "database": "", "queue_dir": "", "queue_limit": "0", "max_open_connections": "4"
        }))
        .unwrap();
        assert_eq!(c.connections(), 4);
        c.validate("1").unwrap();
        let e = PostgresTarget::new(
            id(),
            PostgresConfig::new("host=h", "bad table", Format::Namespace),
        )
        .unwrap_err();
        assert!(
            matches!(e, Error::InvalidConfig { key: "table", .. }),
            "{e}"
        );
        let e = PostgresTarget::new(id(), PostgresConfig::new("port=x", "t", Format::Namespace))
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidConfig {
                    key: "connection_string",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn built_from_notify_config_json_and_env() {
        let c = crate::NotifyConfig::from_json(
            r#"{"postgresql": {"1": {"connection_string": "host=127.0.0.1 dbname=test",
                                    "table": "t", "format": "access"}}}"#,
            "r",
        )
        .unwrap();
        let t = c.build_targets().unwrap();
        assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:1:postgresql");
        // MinIO's environment variables say POSTGRES; the ARN says postgresql.
        let env = [
            (
                "MINIO_NOTIFY_POSTGRES_CONNECTION_STRING_1",
                "host=127.0.0.1 dbname=test",
            ),
            ("MINIO_NOTIFY_POSTGRES_TABLE_1", "t"),
            ("MINIO_NOTIFY_POSTGRES_MAX_OPEN_CONNECTIONS_1", "3"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let t = crate::NotifyConfig::from_env_vars(env, "r")
            .unwrap()
            .build_targets()
            .unwrap();
        assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:1:postgresql");
    }

    #[test]
    fn client_keys_reach_the_pool_and_the_batches() {
        let built = |v: serde_json::Value| {
            let t = PostgresTarget::new(id(), serde_json::from_value(v).unwrap()).unwrap();
            (t.connect_timeout(), t.request_timeout())
        };
        let mut keys = serde_json::json!({"connection_string": "host=127.0.0.1 dbname=test",
                                          "table": "t"});
        // Without the keys: 5 s to connect, batches unbounded, as before.
        assert_eq!(built(keys.clone()), (Duration::from_secs(5), None));
        keys["connect_timeout"] = "1500ms".into();
        keys["request_timeout"] = "2.5s".into();
        assert_eq!(
            built(keys),
            (Duration::from_millis(1500), Some(Duration::from_millis(2500)))
        );
    }

    #[tokio::test]
    async fn unreachable_server_is_transient_and_inactive() {
        let t = PostgresTarget::new(
            id(),
            PostgresConfig::new("host=127.0.0.1 port=1 dbname=x", "t", Format::Access),
        )
        .unwrap();
        assert!(matches!(t.is_active().await, Ok(false)));
        let e = t
            .send(&crate::db_common::test_record(
                "s3:ObjectCreated:Put",
                "b",
                "k",
                "",
            ))
            .await
            .unwrap_err();
        assert!(e.is_transient(), "{e}");
    }

    #[test]
    fn sqlstates() {
        for c in ["08006", "57P01", "53300", "40001", "40P01"] {
            assert!(transient_sqlstate(c), "{c}");
        }
        for c in ["28P01", "22007", "42501", "42P01", "23505"] {
            assert!(!transient_sqlstate(c), "{c}");
        }
    }
}
