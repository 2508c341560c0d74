//! The PostgreSQL target's configuration, under MinIO's key names.

use std::time::Duration;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::db_common::Format;
use crate::config::queue::target_config;
use crate::config::values::*;
use crate::config::{ClientConfig, QueueConfig};
use crate::{Error, Result};

/// Default `connect_timeout`: how long connecting, and waiting for a
/// pooled connection, may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default `max_open_connections`, as MinIO.
pub const DEFAULT_MAX_OPEN_CONNECTIONS: usize = 2;

/// Configuration of one PostgreSQL target, as one entry of MinIO's
/// `{"postgresql": {"<id>": {…}}}` section (environment:
/// `MINIO_NOTIFY_POSTGRES_<KEY>[_<ID>]`).
///
/// Keys are MinIO's: `enable`, `format`, `connection_string`, `table`,
/// `queue_dir`, `queue_limit`, `connect_timeout`, `request_timeout`,
/// `max_open_connections`, and the older `host`, `port`, `username`,
/// `password`, `database` used when `connection_string` is empty.
/// `connection_string` is libpq's form, `host=… port=… user=… password=…
/// dbname=… sslmode=…`, or a `postgresql://` URL. Unknown keys are rejected.
///
/// `Debug` never prints `password` nor a password inside
/// `connection_string`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct PostgresConfig {
    /// `enable`, `queue_dir`, `queue_limit`.
    #[serde(skip)]
    pub queue: QueueConfig,

    /// `connect_timeout` (default [`DEFAULT_CONNECT_TIMEOUT`]),
    /// `request_timeout` (default none: a batch is not cut short, as
    /// before the key existed).
    #[serde(skip)]
    pub client: ClientConfig,

    /// `namespace` (one row per object, default) or `access` (one row per
    /// event).
    #[serde(default)]
    pub format: Format,
    /// libpq key/value string or `postgresql://` URL.
    #[serde(default, deserialize_with = "opt_string")]
    pub connection_string: Option<String>,
    /// The table, created with MinIO's schema when missing. Required.
    #[serde(default)]
    pub table: String,
    /// Host, when `connection_string` is empty.
    #[serde(default, deserialize_with = "opt_string")]
    pub host: Option<String>,
    /// Port, when `connection_string` is empty.
    #[serde(default, deserialize_with = "u64_or_zero")]
    pub port: u64,
    /// User name, when `connection_string` is empty.
    #[serde(default, deserialize_with = "opt_string")]
    pub username: Option<String>,
    /// Password, when `connection_string` is empty.
    #[serde(default, deserialize_with = "opt_string")]
    pub password: Option<String>,
    /// Database, when `connection_string` is empty.
    #[serde(default, deserialize_with = "opt_string")]
    pub database: Option<String>,
    /// Most connections open at once; `0` means 2 (as MinIO).
    #[serde(default, deserialize_with = "u64_or_zero")]
    pub max_open_connections: u64,
}

target_config!(PostgresConfig);

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            queue: QueueConfig::default(),
            client: ClientConfig::default(),
            format: Format::Namespace,
            connection_string: None,
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

/// How the server's certificate is checked: libpq's `sslmode` values that
/// tokio-postgres does not know, with libpq's `sslrootcert`, `sslcert` and
/// `sslkey` file keys.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct PgTls {
    /// `verify-ca` or `verify-full`: the chain is checked against
    /// [`PgTls::root_cert`]; with `verify-full` the host name too.
    pub verify: Option<Verify>,
    /// `sslrootcert`: a PEM file of CA certificates, or `system` for the
    /// system's roots (as libpq 16).
    pub root_cert: Option<String>,
    /// `sslcert` and `sslkey`: a client certificate for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// libpq's two verifying `sslmode`s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Verify {
    /// The certificate chains to a trusted root; its name is not checked.
    Ca,
    /// The chain and the host name.
    Full,
}

/// Takes libpq's TLS keys tokio-postgres rejects out of a connection string
/// (key/value form or URL query): `sslmode=verify-ca|verify-full` becomes
/// `require` (TLS is mandatory in both), and `sslrootcert`, `sslcert`,
/// `sslkey` are removed and returned. Errors are messages for the
/// `connection_string` key.
pub(crate) fn split_tls(conn: &str) -> std::result::Result<(String, PgTls), String> {
    let mut tls = PgTls::default();
    let mut cert = None;
    let mut key = None;
    let mut take = |k: &str, v: &str| -> std::result::Result<Option<String>, String> {
        match k {
            "sslmode" => match v {
                "verify-ca" => tls.verify = Some(Verify::Ca),
                "verify-full" => tls.verify = Some(Verify::Full),
                _ => return Ok(None),
            },
            "sslrootcert" => tls.root_cert = Some(v.to_owned()),
            "sslcert" => cert = Some(PathBuf::from(v)),
            "sslkey" => key = Some(PathBuf::from(v)),
            _ => return Ok(None),
        }
        Ok(Some(if k == "sslmode" {
            "require".into()
        } else {
            String::new()
        }))
    };
    let out = if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        match conn.split_once('?') {
            None => conn.to_owned(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    let v = percent_decode(v)
                        .ok_or_else(|| format!("`{k}` in the URL is not valid percent-encoding"))?;
                    match take(k, &v)? {
                        None => kept.push(pair.to_owned()),
                        Some(r) if !r.is_empty() => kept.push(format!("{k}={r}")),
                        Some(_) => {}
                    }
                }
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for (k, v, raw) in key_values(conn)? {
            match take(&k, &v)? {
                None => kept.push(raw),
                Some(r) if !r.is_empty() => kept.push(format!("{k}={r}")),
                Some(_) => {}
            }
        }
        kept.join(" ")
    };
    tls.client = match (cert, key) {
        (None, None) => None,
        (Some(c), Some(k)) => Some((c, k)),
        _ => return Err("`sslcert` and `sslkey` go together".into()),
    };
    if tls.verify.is_some() && tls.root_cert.is_none() {
        return Err(
            "`sslmode=verify-ca`/`verify-full` need `sslrootcert` (a PEM file of CA certificates, or `system`)"
                .into(),
        );
    }
    Ok((out, tls))
}

/// The `key=value` pairs of a libpq key/value string, values unquoted, each
/// with its original text.
fn key_values(s: &str) -> std::result::Result<Vec<(String, String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut k = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            k.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(format!("`{k}` has no `=value`"));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut v = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(format!("the value of `{k}` has no closing quote")),
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c)) => v.push(c),
                        None => return Err(format!("the value of `{k}` has no closing quote")),
                    },
                    Some((_, c)) => v.push(c),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                v.push(c);
            }
        }
        let end = chars.peek().map_or(s.len(), |&(i, _)| i);
        out.push((k, v, s[start..end].trim_end().to_owned()));
    }
    Ok(out)
}

/// `%XX` decoding of a URL query value (`+` is kept: libpq does not treat
/// it as a space).
fn percent_decode(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `s` with the password of a libpq key/value string or of a URL replaced
/// by `***`.
pub(crate) fn redact_connection_string(s: &str) -> String {
    let mut out = s.to_owned();
    // URL user info: scheme://user:password@host
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                let (a, b) = (scheme_end + 3 + colon + 1, scheme_end + 3 + at);
                out.replace_range(a..b, "***");
            }
        }
    }
    // password=value (key/value form and URL query), value quoted or not.
    let mut from = 0;
    while let Some(pos) = out[from..].to_ascii_lowercase().find("password") {
        let start = from + pos + "password".len();
        let after = &out[start..];
        let trimmed = after.trim_start();
        if let Some(v) = trimmed.strip_prefix('=') {
            let v_trim = v.trim_start();
            let vstart = start + (after.len() - v_trim.len());
            let vlen = if let Some(q) = v_trim.strip_prefix('\'') {
                // quoted: up to the closing unescaped quote
                let mut end = q.len();
                let mut esc = false;
                for (i, c) in q.char_indices() {
                    if esc {
                        esc = false;
                    } else if c == '\\' {
                        esc = true;
                    } else if c == '\'' {
                        end = i;
                        break;
                    }
                }
                (end + 2).min(v_trim.len())
            } else {
                v_trim
                    .find(|c: char| c.is_whitespace() || c == '&')
                    .unwrap_or(v_trim.len())
            };
            out.replace_range(vstart..vstart + vlen, "***");
            from = vstart + 3;
        } else {
            from = start;
        }
    }
    out
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("queue", &self.queue)
            .field("client", &self.client)
            .field("format", &self.format)
            .field(
                "connection_string",
                &self
                    .connection_string
                    .as_deref()
                    .map(redact_connection_string),
            )
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

/// Whether `name` is a table name MinIO accepts: `"quoted"` (no quote
/// inside) or a letter or `_` followed by letters, digits, `_` and `$`,
/// optionally schema-qualified the same way.
pub(crate) fn valid_table(name: &str) -> bool {
    let part = |p: &str| {
        if let Some(inner) = p.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
            return !inner.is_empty() && !inner.contains('"');
        }
        let mut chars = p.chars();
        matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_')
            && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$')
    };
    if name.starts_with('"') {
        return part(name);
    }
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|p| part(p))
}

impl PostgresConfig {
    /// A configuration writing to `table` through `connection_string`, in
    /// `format`, every other key at its default.
    pub fn new(
        connection_string: impl Into<String>,
        table: impl Into<String>,
        format: Format,
    ) -> Self {
        PostgresConfig {
            connection_string: Some(connection_string.into()),
            table: table.into(),
            format,
            ..PostgresConfig::default()
        }
    }

    /// The connection settings, and the TLS keys of `connection_string`
    /// tokio-postgres does not know; errors name target `id` and the key.
    pub(crate) fn pg_config(&self, id: &str) -> Result<(tokio_postgres::Config, PgTls)> {
        let err = |key: &'static str, message: String| Error::InvalidConfig {
            target: format!("postgresql {id}"),
            key,
            message,
        };
        if let Some(s) = &self.connection_string {
            let (s, tls) = split_tls(s).map_err(|m| err("connection_string", m))?;
            // tokio-postgres' parse errors never quote the string.
            let c = s.parse().map_err(|e| {
                err(
                    "connection_string",
                    format!("`connection_string` is invalid: {e}"),
                )
            })?;
            return Ok((c, tls));
        }
        let mut c = tokio_postgres::Config::new();
        c.host(self.host.as_deref().unwrap_or("localhost"));
        let port = if self.port == 0 { 5432 } else { self.port };
        c.port(u16::try_from(port).map_err(|_| err("port", format!("`port` {port} is invalid")))?);
        let Some(db) = &self.database else {
            return Err(err(
                "database",
                "`database` is required when `connection_string` is empty".into(),
            ));
        };
        c.dbname(db);
        if let Some(u) = &self.username {
            c.user(u);
        }
        if let Some(p) = &self.password {
            c.password(p);
        }
        Ok((c, PgTls::default()))
    }

    /// Checks every key; messages name the target (`postgresql <id>`) and
    /// the key.
    pub fn validate(&self, id: &str) -> Result<()> {
        self.client.validate(&format!("postgresql {id}"))?;
        let err = |key: &'static str, message: &str| Error::InvalidConfig {
            target: format!("postgresql {id}"),
            key,
            message: message.into(),
        };
        if self.table.is_empty() {
            return Err(err("table", "`table` is required"));
        }
        if !valid_table(&self.table) {
            return Err(err(
                "table",
                "`table` must be a name of letters, digits, `_` and `$` (or \"quoted\")",
            ));
        }
        self.pg_config(id)?;
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
