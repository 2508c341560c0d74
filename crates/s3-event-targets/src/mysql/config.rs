//! The MySQL target's configuration, under MinIO's key names, and MinIO's
//! Go-driver DSN form.

use std::time::Duration;
use std::fmt;

use serde::Deserialize;

use crate::db_common::Format;
use crate::config::queue::target_config;
use crate::config::values::*;
use crate::config::{ClientConfig, QueueConfig, Timeouts};
use crate::{Error, Result};

/// Default `connect_timeout`: how long connecting may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default `request_timeout`: how long one delivery attempt may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Default `max_open_connections`, as MinIO.
pub const DEFAULT_MAX_OPEN_CONNECTIONS: usize = 2;

/// Configuration of one MySQL target, as one entry of MinIO's
/// `{"mysql": {"<id>": {…}}}` section (environment:
/// `MINIO_NOTIFY_MYSQL_<KEY>[_<ID>]`).
///
/// Keys are MinIO's: `enable`, `format`, `dsn_string`, `table`, `queue_dir`,
/// `queue_limit`, `connect_timeout`, `request_timeout`, `max_open_connections`,
/// and the older `host`, `port`, `username`, `password`, `database` used when
/// `dsn_string` is empty. `dsn_string` is the Go driver's form, as MinIO:
/// `user:password@tcp(host:port)/database?tls=skip-verify` (see [`Dsn`]).
/// Unknown keys are rejected.
///
/// `Debug` never prints `password` nor the password inside `dsn_string`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct MySqlConfig {
    /// `enable`, `queue_dir`, `queue_limit`.
    #[serde(skip)]
    pub queue: QueueConfig,

    /// `connect_timeout`, `request_timeout`: default
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    #[serde(skip)]
    pub client: ClientConfig,

    /// `namespace` (one row per object, default) or `access` (one row per
    /// event).
    #[serde(default)]
    pub format: Format,
    /// `user:password@tcp(host:port)/database[?params]`.
    #[serde(default, deserialize_with = "opt_string")]
    pub dsn_string: Option<String>,
    /// The table, created with MinIO's schema when missing. Required.
    #[serde(default)]
    pub table: String,
    /// Host, when `dsn_string` is empty.
    #[serde(default, deserialize_with = "opt_string")]
    pub host: Option<String>,
    /// Port, when `dsn_string` is empty.
    #[serde(default, deserialize_with = "u64_or_zero")]
    pub port: u64,
    /// User name, when `dsn_string` is empty.
    #[serde(default, deserialize_with = "opt_string")]
    pub username: Option<String>,
    /// Password, when `dsn_string` is empty.
    #[serde(default, deserialize_with = "opt_string")]
    pub password: Option<String>,
    /// Database, when `dsn_string` is empty.
    #[serde(default, deserialize_with = "opt_string")]
    pub database: Option<String>,
    /// Most connections open at once; `0` means 2 (as MinIO).
    #[serde(default, deserialize_with = "u64_or_zero")]
    pub max_open_connections: u64,
}

target_config!(MySqlConfig);

impl Default for MySqlConfig {
    fn default() -> Self {
        MySqlConfig {
            queue: QueueConfig::default(),
            client: ClientConfig::default(),
            format: Format::Namespace,
            dsn_string: None,
            table: String::new(),
            host: None,
            port: 0,
            username: None,
            password: None,
            database: None,
            max_open_connections: 0,
        }
    }
}

impl fmt::Debug for MySqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlConfig")
            .field("queue", &self.queue)
            .field("client", &self.client)
            .field("format", &self.format)
            .field("dsn_string", &self.dsn_string.as_deref().map(redact_dsn))
            .field("table", &self.table)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("database", &self.database)
            .field("max_open_connections", &self.max_open_connections)
            .finish()
    }
}

/// TLS as the Go driver's `tls` parameter says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DsnTls {
    /// `tls=false` (default) or `tls=preferred`: plain text.
    #[default]
    Off,
    /// `tls=true`: TLS, certificate verified (web PKI roots).
    Verify,
    /// `tls=skip-verify`: TLS, certificate not verified.
    SkipVerify,
}

/// A parsed Go-driver DSN:
/// `[user[:password]@][net[(addr)]]/dbname[?param=value&…]` with `net`
/// `tcp` (default, address default `127.0.0.1:3306`) or `unix` (a socket
/// path). Of the parameters, `tls` is used (`true`, `skip-verify`,
/// `false`, `preferred`); the Go driver's others (`parseTime`, `loc`,
/// `charset`, `timeout`, …) are accepted and ignored.
#[derive(Clone, PartialEq, Eq)]
pub struct Dsn {
    /// User name.
    pub user: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Host, for `tcp`.
    pub host: String,
    /// Port, for `tcp`.
    pub port: u16,
    /// Socket path, for `unix`.
    pub socket: Option<String>,
    /// Database.
    pub db: Option<String>,
    /// TLS mode.
    pub tls: DsnTls,
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dsn")
            .field("user", &self.user)
            .field("password", &redact(&self.password))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("socket", &self.socket)
            .field("db", &self.db)
            .field("tls", &self.tls)
            .finish()
    }
}

/// `dsn` with the password (between the user's `:` and the last `@`
/// before the database) replaced by `***`.
pub(crate) fn redact_dsn(dsn: &str) -> String {
    let head_end = dsn.rfind('/').unwrap_or(dsn.len());
    let head = &dsn[..head_end];
    match head.rfind('@') {
        Some(at) => match head[..at].find(':') {
            Some(colon) => format!("{}***{}", &dsn[..colon + 1], &dsn[at..]),
            None => dsn.to_owned(),
        },
        None => dsn.to_owned(),
    }
}

impl Dsn {
    /// Parses the Go driver's DSN form; the error never quotes the DSN
    /// (it may hold a password).
    pub fn parse(dsn: &str) -> Result<Dsn, String> {
        let slash = dsn
            .rfind('/')
            .ok_or("missing the `/` before the database name")?;
        let (head, tail) = (&dsn[..slash], &dsn[slash + 1..]);
        let (db, params) = match tail.split_once('?') {
            Some((d, p)) => (d, Some(p)),
            None => (tail, None),
        };
        let (userinfo, net) = match head.rfind('@') {
            Some(at) => (Some(&head[..at]), &head[at + 1..]),
            None => (None, head),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((u, p)) => (Some(u), Some(p)),
                None => (Some(u), None),
            },
            None => (None, None),
        };
        let nonempty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_owned);
        let (proto, addr) = match net.split_once('(') {
            Some((p, rest)) => (
                p,
                Some(
                    rest.strip_suffix(')')
                        .ok_or("the address is missing its closing `)`")?,
                ),
            ),
            None => (net, None),
        };
        let mut out = Dsn {
            user: nonempty(user),
            password: nonempty(password),
            host: "127.0.0.1".into(),
            port: 3306,
            socket: None,
            db: nonempty(Some(db)),
            tls: DsnTls::Off,
        };
        match proto {
            "" | "tcp" | "tcp4" | "tcp6" => {
                if let Some(a) = addr.filter(|a| !a.is_empty()) {
                    let (h, p) = match a.rsplit_once(':') {
                        Some((h, p)) if !p.contains(']') => (h, Some(p)),
                        _ => (a, None),
                    };
                    out.host = h.trim_start_matches('[').trim_end_matches(']').to_owned();
                    if let Some(p) = p {
                        out.port = p
                            .parse()
                            .map_err(|_| "the port of the address is not a number".to_string())?;
                    }
                }
            }
            "unix" => {
                out.socket = Some(
                    addr.filter(|a| !a.is_empty())
                        .unwrap_or("/tmp/mysql.sock")
                        .to_owned(),
                );
            }
            other => return Err(format!("unsupported network {other:?} (tcp or unix)")),
        }
        out.tls = tls_param(params.unwrap_or_default())?;
        Ok(out)
    }
}

/// The `tls` parameter of a DSN's query (`Off` when absent).
fn tls_param(params: &str) -> Result<DsnTls, String> {
    let mut tls = DsnTls::Off;
    for kv in params.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        if k == "tls" {
            tls = match v.to_ascii_lowercase().as_str() {
                "true" => DsnTls::Verify,
                "skip-verify" => DsnTls::SkipVerify,
                "false" | "preferred" | "" => DsnTls::Off,
                other => {
                    return Err(format!(
                        "tls={other:?} is not supported (true, skip-verify, false, preferred)"
                    ))
                }
            };
        }
    }
    Ok(tls)
}

/// Whether `name` is a plain table name (letters, digits, `_`, `$`, not
/// starting with a digit; optionally `db.table`) or a `` `quoted` `` one.
pub(crate) fn valid_table(name: &str) -> bool {
    let part = |p: &str| {
        if let Some(inner) = p.strip_prefix('`').and_then(|p| p.strip_suffix('`')) {
            return !inner.is_empty() && !inner.contains('`');
        }
        let mut chars = p.chars();
        matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_')
            && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$')
    };
    if name.starts_with('`') {
        return part(name);
    }
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|p| part(p))
}

impl MySqlConfig {
    /// The connect and request timeouts: the client block's keys, else
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    pub fn timeouts(&self) -> Timeouts {
        Timeouts::of(&self.client, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)
    }

    /// A configuration writing to `table` through `dsn_string`, in
    /// `format`, every other key at its default.
    pub fn new(dsn_string: impl Into<String>, table: impl Into<String>, format: Format) -> Self {
        MySqlConfig {
            dsn_string: Some(dsn_string.into()),
            table: table.into(),
            format,
            ..MySqlConfig::default()
        }
    }

    /// The connection settings; errors name target `id` and the key.
    pub fn dsn(&self, id: &str) -> Result<Dsn> {
        let err = |key: &'static str, message: String| Error::InvalidConfig {
            target: format!("mysql {id}"),
            key,
            message,
        };
        if let Some(s) = &self.dsn_string {
            return Dsn::parse(s).map_err(|m| err("dsn_string", format!("`dsn_string`: {m}")));
        }
        let Some(db) = &self.database else {
            return Err(err(
                "database",
                "`database` is required when `dsn_string` is empty".into(),
            ));
        };
        let port = if self.port == 0 { 3306 } else { self.port };
        Ok(Dsn {
            user: self.username.clone(),
            password: self.password.clone(),
            host: self.host.clone().unwrap_or_else(|| "127.0.0.1".into()),
            port: u16::try_from(port)
                .map_err(|_| err("port", format!("`port` {port} is invalid")))?,
            socket: None,
            db: Some(db.clone()),
            tls: DsnTls::Off,
        })
    }

    /// Checks every key; messages name the target (`mysql <id>`) and key.
    pub fn validate(&self, id: &str) -> Result<()> {
        self.client.validate(&format!("mysql {id}"))?;
        let err = |key: &'static str, message: &str| Error::InvalidConfig {
            target: format!("mysql {id}"),
            key,
            message: message.into(),
        };
        if self.table.is_empty() {
            return Err(err("table", "`table` is required"));
        }
        if !valid_table(&self.table) {
            return Err(err(
                "table",
                "`table` must be a name of letters, digits, `_` and `$` (or `quoted`)",
            ));
        }
        self.dsn(id)?;
        if self.queue.queue_dir.as_ref().is_some_and(|d| !d.is_absolute()) {
            return Err(err("queue_dir", "`queue_dir` must be an absolute path"));
        }
        Ok(())
    }

    /// `max_open_connections`, `0` meaning the default.
    pub fn connections(&self) -> usize {
        match self.max_open_connections {
            0 => DEFAULT_MAX_OPEN_CONNECTIONS,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        }
    }

}
