//! The Redis target (feature `redis`): MinIO's `namespace` and `access`
//! formats, one pipelined round trip per batch.
//!
//! - `namespace` (default): the hash `key` holds one field per object,
//!   `bucket/object` (decoded key) → `{"Records": [event]}` (`HSET`);
//!   `s3:ObjectRemoved:*` removes the field (`HDEL`).
//! - `access`: the list `key` gets one entry per event, `RPUSH`ed in order:
//!   `[{"Event": [event], "EventTime": "<eventTime>"}]`, MinIO's shape.
//!
//! A batch is one command per kind: one `RPUSH` with every entry (access),
//! or one `HSET` of the last event of each object plus one `HDEL` (namespace),
//! pipelined. Connections go through the `redis` crate's
//! `ConnectionManager`, which reconnects by itself after the server went
//! away.
//!
//! Errors: refused or lost connections, timeouts, `LOADING`, `TRYAGAIN`,
//! `MASTERDOWN`, `READONLY`, `CLUSTERDOWN` and `OOM` are transient; bad
//! credentials, `NOPERM`, `WRONGTYPE` (the key holds another type) and any
//! other server error are permanent, with the server's message.

mod config;
#[cfg(all(test, feature = "integration"))]
mod conformance_tests;

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{ErrorKind, RedisError, ServerErrorKind};
use async_trait::async_trait;
use s3_event_core::{EventRecord, Target, TargetError, TargetId};

pub use crate::db_common::Format;
pub use config::{RedisConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_PORT, DEFAULT_REQUEST_TIMEOUT};

use crate::config::Timeouts;
use crate::db_common::{collapse, records_doc, NsOp, MAX_BATCH};
use crate::{Error, Result};

/// How long `is_active`'s `PING` may take.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// MinIO's access-format list entry: `{"Event": [event], "EventTime": …}`,
/// pushed inside a one-element JSON array.
#[derive(serde::Serialize)]
struct AccessEntry<'a> {
    #[serde(rename = "Event")]
    event: [&'a EventRecord; 1],
    #[serde(rename = "EventTime")]
    event_time: &'a str,
}

/// The access-format list entry of one event, as MinIO writes it.
pub(crate) fn access_entry(record: &EventRecord) -> String {
    let entry = [AccessEntry {
        event: [record],
        event_time: record.event_time.as_deref().unwrap_or_default(),
    }];
    // Serializing records cannot fail: every map key is a string.
    serde_json::to_string(&entry).expect("an event record serializes")
}

/// Delivers events to a Redis hash or list. See the [module docs](self).
pub struct RedisTarget {
    id: TargetId,
    format: Format,
    key: String,
    address: String,
    user: Option<String>,
    has_password: bool,
    /// Connecting, and one command or pipelined batch.
    timeouts: Timeouts,
    client: ::redis::Client,
    /// Created on first use (needs a runtime); clones share one connection.
    manager: Mutex<Option<ConnectionManager>>,
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTarget")
            .field("id", &self.id)
            .field("address", &self.address)
            .field("user", &self.user)
            .field("password", &self.has_password.then_some("***"))
            .field("key", &self.key)
            .field("format", &self.format)
            .field("timeouts", &self.timeouts)
            .finish()
    }
}


/// Registered in `lib.rs`'s `targets!` list.
impl crate::registry::TargetType for RedisTarget {
    type Config = RedisConfig;

    const SECRET_KEYS: &'static [&'static str] = &["password"];

    fn build(
        id: TargetId,
        config: RedisConfig,
    ) -> crate::Result<std::sync::Arc<dyn s3_event_core::Target>> {
        Ok(std::sync::Arc::new(RedisTarget::new(id, config)?))
    }
}

impl RedisTarget {
    /// Validates `config` (errors name the target id and the key) and
    /// builds the target. Nothing is contacted until the first send.
    pub fn new(id: TargetId, config: RedisConfig) -> Result<RedisTarget> {
        config.validate(id.id())?;
        let (host, port) = config.host_port(id.id())?;
        let mut settings = ::redis::RedisConnectionInfo::default();
        if let Some(user) = &config.user {
            settings = settings.set_username(user);
        }
        if let Some(password) = &config.password {
            settings = settings.set_password(password);
        }
        let info = ::redis::ConnectionAddr::Tcp(host, port);
        let info = ::redis::IntoConnectionInfo::into_connection_info(info)
            .map(|i| i.set_redis_settings(settings))
            .and_then(::redis::Client::open)
            .map_err(|e| Error::InvalidConfig {
                target: format!("redis {}", id.id()),
                key: "address",
                message: format!("invalid Redis connection settings: {e}"),
            })?;
        Ok(RedisTarget {
            timeouts: config.timeouts(),
            format: config.format,
            key: config.key,
            address: config.address,
            user: config.user,
            has_password: config.password.is_some(),
            client: info,
            manager: Mutex::new(None),
            id,
        })
    }

    /// The connect timeout and the response timeout (of one command or
    /// pipelined batch) its connection uses.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The shared connection, created (lazily connecting) on first use.
    fn connection(&self) -> Result<ConnectionManager, TargetError> {
        let mut m = self.manager.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = m.as_ref() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeouts.connect))
            .set_response_timeout(Some(self.timeouts.request))
            // Fail fast while the server is down: the notifier retries with
            // its own backoff and probes `is_active`.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let c = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| self.error(e))?;
        *m = Some(c.clone());
        Ok(c)
    }

    /// A `TargetError` for a Redis error: transient when retrying later can
    /// help, permanent otherwise.
    fn error(&self, e: RedisError) -> TargetError {
        if is_transient(&e) {
            TargetError::transient(&self.id, e)
        } else {
            TargetError::permanent(&self.id, e)
        }
    }

    /// The commands of one batch, pipelined.
    fn pipeline(&self, events: &[EventRecord]) -> Result<::redis::Pipeline, TargetError> {
        let mut pipe = ::redis::pipe();
        match self.format {
            Format::Access => {
                let entries: Vec<String> = events.iter().map(access_entry).collect();
                pipe.rpush(&self.key, entries).ignore();
            }
            Format::Namespace => {
                let ops = collapse(&self.id, events)?;
                let mut puts: Vec<(String, String)> = Vec::new();
                let mut dels: Vec<String> = Vec::new();
                for (k, op) in ops {
                    match op {
                        NsOp::Put(r) => puts.push((k, records_doc(r))),
                        NsOp::Delete => dels.push(k),
                    }
                }
                if !puts.is_empty() {
                    pipe.hset_multiple(&self.key, &puts).ignore();
                }
                if !dels.is_empty() {
                    pipe.hdel(&self.key, dels).ignore();
                }
            }
        }
        Ok(pipe)
    }
}

/// Whether retrying later may succeed.
fn is_transient(e: &RedisError) -> bool {
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        return true;
    }
    match e.kind() {
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::ClusterDown,
        ) => true,
        ErrorKind::Extension => matches!(e.code(), Some("OOM" | "BUSY")),
        ErrorKind::Io => true,
        _ => false,
    }
}

#[async_trait]
impl Target for RedisTarget {
    fn id(&self) -> &TargetId {
        &self.id
    }

    /// One pipelined round trip for the whole batch (see the
    /// [module docs](self)). Retrying a batch is safe for `namespace`
    /// (upserts); for `access` a retried batch may append twice.
    async fn send_batch(&self, events: &[EventRecord]) -> Result<(), TargetError> {
        if events.is_empty() {
            return Ok(());
        }
        let pipe = self.pipeline(events)?;
        let mut conn = self.connection()?;
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.error(e))
    }

    /// A `PING` on the shared connection: `Ok(true)` on an answer,
    /// `Ok(false)` when the server cannot be reached, an error for anything
    /// else (bad credentials).
    async fn is_active(&self) -> Result<bool, TargetError> {
        let mut conn = self.connection()?;
        let ping = ::redis::cmd("PING");
        match tokio::time::timeout(PING_TIMEOUT, ping.query_async::<String>(&mut conn)).await {
            Err(_) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) if is_transient(&e) => Ok(false),
            Ok(Err(e)) => Err(self.error(e)),
        }
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db_common::test_record;

    fn id() -> TargetId {
        "arn:minio:sqs::1:redis".parse().unwrap()
    }

    #[test]
    fn debug_hides_the_password() {
        let mut c = RedisConfig::new("127.0.0.1:6379", "events", Format::Access);
        c.password = Some("s3cr3t-pw".into());
        c.user = Some("alice".into());
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cr3t-pw") && shown.contains("***"),
            "{shown}"
        );
        let t = RedisTarget::new(id(), c).unwrap();
        let shown = format!("{t:?}");
        assert!(
            !shown.contains("s3cr3t-pw") && shown.contains("***"),
            "{shown}"
        );
        assert!(shown.contains("alice"), "{shown}");
    }

    #[test]
    fn parses_minio_keys() {
        let c: RedisConfig = serde_json::from_value(serde_json::json!({
            "enable": "on", "format": "access", "address": "127.0.0.1:6380",
            "password": "", "user": "", "key": "bucketevents",
            "queue_dir": "", "queue_limit": "0"
        }))
        .unwrap();
        assert_eq!(c.format, Format::Access);
        assert_eq!(c.password, None);
        assert_eq!(c.queue.queue_limit, crate::config::DEFAULT_QUEUE_LIMIT);
        assert_eq!(c.host_port("1").unwrap(), ("127.0.0.1".into(), 6380));
    }

    #[test]
    fn addresses() {
        let hp = |a: &str| RedisConfig::new(a, "k", Format::Namespace).host_port("1");
        assert_eq!(hp("localhost").unwrap(), ("localhost".into(), 6379));
        assert_eq!(hp("[::1]:7000").unwrap(), ("::1".into(), 7000));
        assert_eq!(hp("::1").unwrap(), ("::1".into(), 6379));
        assert!(hp("h:0").is_err());
        assert!(hp("h:port").is_err());
        assert!(hp("").is_err());
    }

    #[test]
    fn validation_names_target_and_key() {
        let e = RedisTarget::new(id(), RedisConfig::new("h:1", "", Format::Namespace))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "redis 1: `key` is required");
        let mut c = RedisConfig::new("h:1", "k", Format::Namespace);
        c.user = Some("u".into());
        assert!(matches!(
            RedisTarget::new(id(), c),
            Err(Error::InvalidConfig {
                key: "password",
                ..
            })
        ));
    }

    #[test]
    fn access_entry_is_minios_shape() {
        let r = test_record("s3:ObjectCreated:Put", "b", "k", "2024-01-01T00:00:00.000Z");
        let v: serde_json::Value = serde_json::from_str(&access_entry(&r)).unwrap();
        assert_eq!(v[0]["EventTime"], "2024-01-01T00:00:00.000Z");
        assert_eq!(v[0]["Event"][0]["s3"]["bucket"]["name"], "b");
        assert_eq!(v.as_array().unwrap().len(), 1);
    }

    #[test]
    fn built_from_notify_config_json_and_env() {
        let c = crate::NotifyConfig::from_json(
            r#"{"redis": {"1": {"enable": "on", "address": "127.0.0.1:6379", "key": "k",
                               "format": "access", "queue_limit": "5", "password": "pw"},
                         "2": {"enable": "off", "address": "", "key": ""}}}"#,
            "r",
        )
        .unwrap();
        let t = c.build_targets().unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:1:redis");
        assert_eq!(t[0].1.queue_limit, 5);
        assert!(!format!("{:?}", t[0].0).contains("pw\""));

        let env = [
            ("MINIO_NOTIFY_REDIS_ADDRESS_PRIMARY", "127.0.0.1:6379"),
            ("MINIO_NOTIFY_REDIS_KEY_PRIMARY", "bucketevents"),
            ("MINIO_NOTIFY_REDIS_FORMAT_PRIMARY", "namespace"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let c = crate::NotifyConfig::from_env_vars(env, "r").unwrap();
        let t = c.build_targets().unwrap();
        assert_eq!(t[0].0.id().to_string(), "arn:minio:sqs:r:PRIMARY:redis");

        let err =
            crate::NotifyConfig::from_json(r#"{"redis": {"1": {"adress": "h"}}}"#, "").unwrap_err();
        assert_eq!(err.to_string(), "redis 1: unknown key `adress`");
        let err = crate::NotifyConfig::from_json(
            r#"{"redis": {"1": {"address": "h:1", "key": "k", "format": "log"}}}"#,
            "",
        )
        .unwrap()
        .build_targets()
        .unwrap_err();
        assert!(
            matches!(err, Error::InvalidConfig { key: "format", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn client_keys_reach_the_connection() {
        use crate::config::client::testing::{assert_client_keys, secs};
        let keys = serde_json::json!({"address": "127.0.0.1:6379", "key": "k"});
        assert_client_keys(keys, secs(3, 10), |v| {
            RedisTarget::new(id(), serde_json::from_value(v).unwrap())
                .unwrap()
                .timeouts()
        });
    }

    #[tokio::test]
    async fn unreachable_server_is_transient_and_inactive() {
        // Port 1 on loopback: nothing listens there.
        let t =
            RedisTarget::new(id(), RedisConfig::new("127.0.0.1:1", "k", Format::Access)).unwrap();
        assert!(matches!(t.is_active().await, Ok(false)));
        let e = t
            .send_batch(&[test_record("s3:ObjectCreated:Put", "b", "k", "")])
            .await
            .unwrap_err();
        assert!(e.is_transient(), "{e}");
    }
}
