//! MinIO-compatible notification target configuration: JSON and environment
//! variables to targets and a [`Notifier`].
//!
//! # JSON
//!
//! [`NotifyConfig::from_json`] reads MinIO's shape, one object per target
//! type, keyed by target id:
//!
//! ```json
//! {"webhook": {"1": {"enable": "on", "endpoint": "http://127.0.0.1:9000/events"},
//!              "2": {"enable": true, "endpoint": "https://example.com/hook",
//!                    "queue_dir": "/var/queue/2", "queue_limit": "10000"}}}
//! ```
//!
//! The document may also be wrapped as `{"notify": {…}}`. Keys are those of
//! the target's configuration struct (for `webhook`: `WebhookConfig`),
//! whose [`QueueConfig`] block (`enable`, `queue_dir`, `queue_limit`) and
//! [`ClientConfig`] block (`connect_timeout`, `request_timeout`) every
//! type shares; unknown keys are rejected with an error naming the
//! target and the key. Values are read as MinIO writes them (strings for
//! everything, `"on"`/`"off"`, `"5s"`, `""` for unset), by the parsers of
//! [`s3_event_core::config`]. The types, their keys and their
//! constructors come from the target registry (the `targets!` list in
//! `lib.rs`): adding a type changes nothing in this module but the key
//! table below.
//!
//! # Environment variables
//!
//! [`NotifyConfig::from_env_vars`] reads MinIO's names:
//!
//! - `MINIO_NOTIFY_<TYPE>_<KEY>_<ID>` sets `<key>` of target `<id>`;
//! - `MINIO_NOTIFY_<TYPE>_<KEY>` (no suffix) sets `<key>` of target `_`,
//!   MinIO's default target id (ARN `arn:minio:sqs:<region>:_:<type>`).
//!
//! `<TYPE>` and `<KEY>` are upper case (`WEBHOOK`, `ENABLE`, `ENDPOINT`,
//! `AUTH_TOKEN`, …, the JSON key upper-cased); `<ID>` is taken as written.
//! For `webhook` the variables read are, each with and without `_<ID>`:
//! `MINIO_NOTIFY_WEBHOOK_ENABLE`, `…_ENDPOINT`, `…_AUTH_TOKEN`,
//! `…_CLIENT_CERT`, `…_CLIENT_KEY`, `…_CA_CERT`, `…_QUEUE_DIR`,
//! `…_QUEUE_LIMIT`, `…_CONNECT_TIMEOUT`, `…_REQUEST_TIMEOUT`,
//! `…_SIGNATURE_KEY` and `…_TIMEOUT`. The prefix `S3E_NOTIFY_` is an alias
//! of `MINIO_NOTIFY_`; when both spell the same key, `S3E_NOTIFY_` wins.
//! Any other variable under `MINIO_NOTIFY_WEBHOOK_`/`S3E_NOTIFY_WEBHOOK_` is
//! an error naming it (a misspelt key is never silently ignored); variables
//! of other types (`MINIO_NOTIFY_KAFKA_…`) are errors naming the type.
//!
//! Unlike MinIO, which only discovers a target from the environment through
//! its `ENABLE` variable, any key names a target here, and `enable` defaults
//! to on as in JSON: a configured target is used unless switched off.
//!
//! # Keys, in both spellings
//!
//! Every key each target reads, with MinIO's legacy spelling (its
//! `config.json` before the key-value configuration, and the seed's
//! recipes) in brackets; any key may also be written in camelCase. Kafka's
//! legacy nested forms are read too: `"brokers": ["h:9092", …]`, `"tls":
//! {"enable", "skipVerify", "clientAuth"}`, `"sasl": {"enable", "username",
//! "password"}`; NATS's `"streaming": {"enable": false, …}` is accepted
//! and ignored (NATS Streaming enabled is refused: use `jetstream`).
//! `senders` is this crate's: concurrent sends (1 to 50000; at most 64
//! durable lanes with `queue_dir`), spread by object
//! key so that one object's events stay in order. `connect_timeout` and
//! `request_timeout` are the [`ClientConfig`] block; unset, each type
//! keeps its own defaults (its module's `DEFAULT_CONNECT_TIMEOUT` and
//! `DEFAULT_REQUEST_TIMEOUT`); the webhook's older `timeout` sets both.
//! The same key given in both spellings is an error, as is any key not
//! listed, naming it.
//!
//! | type | keys (legacy spellings) |
//! |---|---|
//! | `webhook` | `enable`, `endpoint`, `auth_token` (`authToken`), `client_cert` (`clientCert`), `client_key` (`clientKey`), `ca_cert` (`caCert`), `queue_dir` (`queueDir`), `queue_limit` (`queueLimit`), `connect_timeout`, `request_timeout`, `signature_key` (`signatureKey`), `timeout`, `senders` |
//! | `redis` | `enable`, `format`, `address`, `password`, `user`, `key`, `queue_dir` (`queueDir`), `queue_limit` (`queueLimit`), `connect_timeout`, `request_timeout`, `senders` |
//! | `postgresql` | `enable`, `format`, `connection_string` (`connectionString`), `table`, `host`, `port`, `username` (`user`), `password`, `database`, `queue_dir` (`queueDir`), `queue_limit` (`queueLimit`), `connect_timeout`, `request_timeout`, `max_open_connections` (`maxOpenConnections`), `senders` |
//! | `mysql` | `enable`, `format`, `dsn_string` (`dsnString`), `table`, `host`, `port`, `username` (`user`), `password`, `database`, `queue_dir` (`queueDir`), `queue_limit` (`queueLimit`), `connect_timeout`, `request_timeout`, `max_open_connections` (`maxOpenConnections`), `senders` |
//! | `elasticsearch` | `enable`, `format`, `url`, `index`, `username`, `password`, `queue_dir` (`queueDir`), `queue_limit` (`queueLimit`), `connect_timeout`, `request_timeout`, `senders` |
//! | `nats` | `enable`, `address`, `subject`, `username` (`user`), `password`, `token`, `nkey_seed` (`nkeySeed`), `user_credentials` (`userCredentials`), `tls` (`secure`), `tls_skip_verify` (`tlsSkipVerify`), `tls_handshake_first` (`tlsHandshakeFirst`), `cert_authority` (`certAuthority`), `client_cert` (`clientCert`), `client_key` (`clientKey`), `ping_interval` (`pingInterval`), `jetstream`, `queue_dir` (`queueDir`), `queue_limit` (`queueLimit`), `connect_timeout`, `request_timeout`, `senders` |
//! | `amqp` | `enable`, `url`, `exchange`, `exchange_type` (`exchangeType`), `routing_key` (`routingKey`), `mandatory`, `immediate`, `durable`, `internal`, `no_wait` (`noWait`), `auto_deleted` (`autoDeleted`), `delivery_mode` (`deliveryMode`), `publisher_confirms` (`publisherConfirms`), `queue_dir` (`queueDir`), `queue_limit` (`queueLimit`), `connect_timeout`, `request_timeout`, `senders` |
//! | `mqtt` | `enable`, `broker`, `topic`, `qos`, `username`, `password`, `keep_alive_interval` (`keepAliveInterval`), `reconnect_interval` (`reconnectInterval`), `queue_dir` (`queueDir`), `queue_limit` (`queueLimit`), `connect_timeout`, `request_timeout`, `senders` |
//! | `kafka` | `enable`, `brokers`, `topic`, `queue_dir` (`queueDir`), `queue_limit` (`queueLimit`), `connect_timeout`, `request_timeout`, `tls`, `tls_skip_verify` (`tlsSkipVerify`), `tls_client_auth` (`tlsClientAuth`), `client_tls_cert` (`clientTlsCert`), `client_tls_key` (`clientTlsKey`), `sasl`, `sasl_username` (`saslUsername`), `sasl_password` (`saslPassword`), `sasl_mechanism` (`saslMechanism`), `version`, `batch_size` (`batchSize`), `batch_commit_timeout` (`batchCommitTimeout`), `compression_codec` (`compressionCodec`), `compression_level` (`compressionLevel`), `senders` |
//! | `eventbridge` | `enable`, `event_bus_name`, `source`, `region`, `endpoint`, `access_key`, `secret_key`, `session_token`, `queue_dir` (`queueDir`), `queue_limit` (`queueLimit`), `connect_timeout`, `request_timeout`, `senders` |
//! | `sns` | `enable`, `topic_arn`, `region`, `endpoint`, `access_key`, `secret_key`, `session_token`, `queue_dir` (`queueDir`), `queue_limit` (`queueLimit`), `connect_timeout`, `request_timeout`, `senders` |
//! | `sqs` | `enable`, `queue_url`, `region`, `endpoint`, `access_key`, `secret_key`, `session_token`, `queue_dir` (`queueDir`), `queue_limit` (`queueLimit`), `connect_timeout`, `request_timeout`, `senders` |
//! | `nsq` | `enable`, `nsqd_address` (`nsqdAddress`), `topic`, `tls`, `tls_skip_verify` (`tlsSkipVerify`), `queue_dir` (`queueDir`), `queue_limit` (`queueLimit`), `connect_timeout`, `request_timeout`, `senders` |
//!
//! # Whole MinIO files
//!
//! [`NotifyConfig::from_json`] also takes a whole MinIO server
//! `config.json` (its `notify` section is read) and the text `mc admin
//! config get <alias> notify_<type>` prints
//! ([`NotifyConfig::from_mc_output`]); [`NotifyConfig::sync_events_in`]
//! finds `api.sync_events` in either.
//!
//! # Precedence
//!
//! [`NotifyConfig::merge`] overlays one configuration on another key by key;
//! [`NotifyConfig::load`] does it for JSON plus environment, the environment
//! winning, as in MinIO.

use std::collections::BTreeMap;
use std::sync::Arc;

use s3_event_core::config::{parse_flag, Text};
use s3_event_core::{NotificationConfiguration, RuleSet, Target};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::notifier::{DeliveryMode, Notifier, TargetOptions};
use crate::registry::Imp;
use crate::{Error, Result, TARGET_TYPES};

pub(crate) mod client;
pub(crate) mod queue;
pub(crate) mod values;

#[cfg(feature = "aws-common")]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "sqs", feature = "sns", feature = "eventbridge")))
)]
pub use crate::aws_common::AwsConnection;
pub use client::{ClientConfig, Timeouts};
pub use queue::{QueueConfig, DEFAULT_QUEUE_LIMIT};

/// MinIO's other spellings of a type: its environment variables say
/// `POSTGRES` where its JSON and ARNs say `postgresql`.
fn canonical_kind(kind: String) -> String {
    match kind.as_str() {
        "postgres" => "postgresql".to_owned(),
        _ => kind,
    }
}

/// The environment variable prefixes read, in increasing precedence.
const ENV_PREFIXES: &[&str] = &["MINIO_NOTIFY_", "S3E_NOTIFY_"];

/// MinIO's default target id, used for environment variables without an
/// `_<ID>` suffix.
pub const DEFAULT_TARGET_ID: &str = "_";

/// Notification targets as configured in MinIO's JSON shape and/or
/// `MINIO_NOTIFY_*` environment variables. See the [module docs](self).
///
/// Holds the raw keys per `type → id`; every key is checked against its
/// target type when the configuration is read, values when targets are
/// built.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct NotifyConfig {
    region: String,
    targets: BTreeMap<String, BTreeMap<String, Map<String, Value>>>,
}

fn invalid(message: String) -> Error {
    Error::InvalidNotifyConfig { message }
}

/// The entry points of a known type, or the error for an unknown one or
/// one whose feature is not compiled in.
fn known_type(kind: &str) -> Result<&'static Imp> {
    let Some(d) = TARGET_TYPES.iter().find(|d| d.kind == kind) else {
        return Err(Error::UnknownTargetType {
            kind: kind.to_owned(),
        });
    };
    d.imp.as_ref().ok_or_else(|| Error::FeatureDisabled {
        kind: kind.to_owned(),
        feature: d.feature,
    })
}

impl NotifyConfig {
    /// An empty configuration (no targets) for `region`.
    pub fn new(region: impl Into<String>) -> Self {
        NotifyConfig {
            region: region.into(),
            targets: BTreeMap::new(),
        }
    }

    /// The region of the targets' ARNs.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Parses MinIO's notification configuration: the `{"<type>": {"<id>":
    /// {"<key>": …}}}` document, the same wrapped in `{"notify": …}`, a whole
    /// MinIO server `config.json` (its `notify` section is read, the other
    /// sections — `version`, `credential`, `region`, … — belong to MinIO and
    /// are ignored), or the text `mc admin config get <alias> notify_<type>`
    /// prints (see [`NotifyConfig::from_mc_output`]). Keys may use MinIO's
    /// current names or the legacy camelCase ones (see the [module
    /// docs](self)). Fails on malformed JSON, unknown target types, types
    /// whose cargo feature is off, and unknown keys (naming the key as
    /// written).
    pub fn from_json(json: &str, region: &str) -> Result<Self> {
        let trimmed = json.trim_start();
        if trimmed.starts_with("notify_") || trimmed.starts_with('#') {
            return Self::from_mc_output(json, region);
        }
        let mut root: Value = serde_json::from_str(json)
            .map_err(|e| invalid(format!("notification configuration is not valid JSON: {e}")))?;
        if let Some(inner) = root.as_object_mut().and_then(|o| o.remove("notify")) {
            root = inner;
        }
        let Value::Object(types) = root else {
            return Err(invalid(
                "notification configuration must be a JSON object of target types".into(),
            ));
        };
        let mut config = NotifyConfig::new(region);
        for (kind, ids) in types {
            let kind = canonical_kind(kind);
            let imp = known_type(&kind)?;
            let Value::Object(ids) = ids else {
                return Err(invalid(format!("`{kind}` must be an object of target ids")));
            };
            let section = config.targets.entry(kind.clone()).or_default();
            for (id, target) in ids {
                let Value::Object(target) = target else {
                    return Err(invalid(format!("{kind} {id}: must be a JSON object")));
                };
                let target = normalize_keys(&kind, &id, imp, target)?;
                section.insert(id, target);
            }
        }
        Ok(config)
    }

    /// Parses what `mc admin config get <alias> notify_<type>` prints, one
    /// target per line: `notify_<type>[:<id>] key=value key="quoted value"
    /// …` (no `:<id>` is MinIO's default target `_`). Lines starting with `#`
    /// (the environment overrides mc shows) and blank lines are skipped.
    pub fn from_mc_output(text: &str, region: &str) -> Result<Self> {
        let mut config = NotifyConfig::new(region);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |m: String| invalid(format!("line {}: {m}", n + 1));
            let (head, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let Some(sub) = head.strip_prefix("notify_") else {
                return Err(at(format!(
                    "`{head}` is not a `notify_<type>[:<id>]` subsystem"
                )));
            };
            let (kind, id) = sub.split_once(':').unwrap_or((sub, DEFAULT_TARGET_ID));
            let kind = canonical_kind(kind.to_owned());
            let imp = known_type(&kind)?;
            let mut map = Map::new();
            for (k, v) in mc_pairs(rest).map_err(at)? {
                map.insert(k, Value::String(v));
            }
            let map = normalize_keys(&kind, id, imp, map)?;
            config
                .targets
                .entry(kind)
                .or_default()
                .insert(id.to_owned(), map);
        }
        Ok(config)
    }

    /// Whether a MinIO document holds `api.sync_events` on (MinIO's switch
    /// for synchronous notifications, in a `config.json` or the output of
    /// `mc admin config get <alias> api`).
    pub fn sync_events_in(doc: &Value) -> bool {
        let on = |v: &Value| match v {
            Value::Bool(b) => *b,
            Value::String(s) => parse_flag(s) == Some(true),
            _ => false,
        };
        match doc {
            Value::Object(o) => o
                .get("api")
                .and_then(|api| api.get("sync_events").or_else(|| api.get("syncEvents")))
                .is_some_and(on),
            Value::String(text) => text.lines().any(|l| {
                let l = l.trim();
                l.starts_with("api ")
                    && mc_pairs(&l[4..]).is_ok_and(|p| {
                        p.iter()
                            .any(|(k, v)| k == "sync_events" && on(&Value::String(v.clone())))
                    })
            }),
            _ => false,
        }
    }

    /// Every target's keys as JSON (`{"<type>": {"<id>": {…}}}`, current key
    /// names), with secrets — passwords, tokens, keys, and the password in a
    /// URL or connection string — replaced by `***`.
    pub fn redacted_json(&self) -> Value {
        let mut out = Map::new();
        for (kind, ids) in &self.targets {
            // Every type held was known and compiled in when it was read.
            let Ok(imp) = known_type(kind) else { continue };
            let mut section = Map::new();
            for (id, keys) in ids {
                let mut target = Map::new();
                for (k, v) in keys {
                    target.insert(k.clone(), redact_value(imp, k, v));
                }
                section.insert(id.clone(), Value::Object(target));
            }
            out.insert(kind.clone(), Value::Object(section));
        }
        Value::Object(out)
    }

    /// Reads `MINIO_NOTIFY_*` / `S3E_NOTIFY_*` variables from `vars`; other
    /// variables are ignored. See the [module docs](self) for the names.
    pub fn from_env_vars<I>(vars: I, region: &str) -> Result<Self>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let mut config = NotifyConfig::new(region);
        for prefix in ENV_PREFIXES {
            for (name, value) in &vars {
                let Some(rest) = name.strip_prefix(prefix) else {
                    continue;
                };
                let kind_upper = rest.split('_').next().unwrap_or_default();
                let kind = canonical_kind(kind_upper.to_ascii_lowercase());
                let keys = (known_type(&kind)?.keys)();
                let rest = rest[kind_upper.len()..].strip_prefix('_').unwrap_or("");
                // Longest key first: `TLS_SKIP_VERIFY_1` is key
                // `tls_skip_verify` of target `1`, not `tls` of `SKIP_VERIFY_1`.
                let mut longest_first = keys.clone();
                longest_first.extend(COMMON_KEYS);
                longest_first.sort_by_key(|k| std::cmp::Reverse(k.len()));
                let found = longest_first.iter().find_map(|key| {
                    let upper = key.to_ascii_uppercase();
                    if rest == upper {
                        Some((*key, DEFAULT_TARGET_ID))
                    } else {
                        rest.strip_prefix(upper.as_str())
                            .and_then(|r| r.strip_prefix('_'))
                            .filter(|id| !id.is_empty())
                            .map(|id| (*key, id))
                    }
                });
                let Some((key, id)) = found else {
                    return Err(invalid(format!(
                        "environment variable `{name}` names no `{kind}` key (expected \
                         {prefix}{kind_upper}_<KEY>[_<ID>] with <KEY> one of {})",
                        keys.iter()
                            .map(|k| k.to_ascii_uppercase())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                };
                config
                    .targets
                    .entry(kind)
                    .or_default()
                    .entry(id.to_owned())
                    .or_default()
                    .insert(key.to_owned(), Value::String(value.clone()));
            }
        }
        Ok(config)
    }

    /// [`from_env_vars`](Self::from_env_vars) over the process environment
    /// (variables whose name or value is not UTF-8 are skipped).
    pub fn from_env(region: &str) -> Result<Self> {
        Self::from_env_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
            region,
        )
    }

    /// JSON (when given) overlaid with the process environment, as MinIO
    /// does: an environment variable overrides the same key in the JSON.
    pub fn load(json: Option<&str>, region: &str) -> Result<Self> {
        let base = match json {
            Some(j) => Self::from_json(j, region)?,
            None => Self::new(region),
        };
        Ok(base.merge(Self::from_env(region)?))
    }

    /// Overlays `other` on `self` key by key: a key set in `other` replaces
    /// the same key of the same target in `self`; targets and keys only in
    /// one of them are kept. The region stays `self`'s.
    pub fn merge(mut self, other: NotifyConfig) -> Self {
        for (kind, ids) in other.targets {
            let section = self.targets.entry(kind).or_default();
            for (id, keys) in ids {
                section.entry(id).or_default().extend(keys);
            }
        }
        self
    }

    /// The configured `(type, id)` pairs, enabled or not, sorted.
    pub fn target_names(&self) -> Vec<(&str, &str)> {
        self.targets
            .iter()
            .flat_map(|(k, ids)| ids.keys().map(move |id| (k.as_str(), id.as_str())))
            .collect()
    }

    /// Builds every enabled target (targets with `enable` off are skipped),
    /// with ids `arn:minio:sqs:<region>:<id>:<type>` and the pipeline
    /// options their keys imply (`queue_dir`, `queue_limit`). Fails with an
    /// error naming the target and key when a value is invalid. Nothing is
    /// contacted: endpoints need not be reachable.
    pub fn build_targets(&self) -> Result<Vec<(Arc<dyn Target>, TargetOptions)>> {
        let mut out: Vec<(Arc<dyn Target>, TargetOptions)> = Vec::new();
        for (kind, ids) in &self.targets {
            let imp = known_type(kind)?;
            for (id, map) in ids {
                let target_id =
                    s3_event_core::TargetId::new(self.region.as_str(), id.as_str(), kind.as_str())
                        .map_err(|e| Error::InvalidConfig {
                            target: format!("{kind} {id}"),
                            key: "id",
                            message: format!("the target id or region is invalid: {e}"),
                        })?;
                let mut map = map.clone();
                let senders = map
                    .remove("senders")
                    .map(|v| senders(kind, id, &v))
                    .transpose()?;
                if let Some((target, mut options)) = (imp.build)(kind, target_id, &map)? {
                    if let Some(n) = senders {
                        options.senders = n;
                    }
                    out.push((target, options));
                }
            }
        }
        Ok(out)
    }

    /// Builds the targets and a [`Notifier`] routing by `rules` in `mode`.
    /// Must be called inside a tokio runtime (see
    /// [`NotifierBuilder::build`](crate::NotifierBuilder::build)).
    ///
    /// A rule whose ARN names no enabled configured target is an
    /// [`Error::UnknownTarget`] naming the ARN, as in MinIO.
    pub fn notifier(
        &self,
        rules: &NotificationConfiguration,
        mode: DeliveryMode,
    ) -> Result<Notifier> {
        let rules = RuleSet::from_config(rules).map_err(|source| Error::InvalidRules { source })?;
        let mut builder = Notifier::builder().rules(rules).mode(mode);
        for (target, options) in self.build_targets()? {
            builder = builder.target(target, options);
        }
        builder.build()
    }
}

/// Keys every target type takes besides its own: `senders`, the concurrent
/// sends of its pipeline (1 to 50000, as AIStor allows; spread by object
/// key, so one object's events stay in order; with `queue_dir`, at most 64
/// durable lanes).
const COMMON_KEYS: &[&str] = &["senders"];

/// `senders`: a number or numeric string, 1 to
/// [`MAX_SENDERS`](crate::notifier::MAX_SENDERS).
fn senders(kind: &str, id: &str, v: &Value) -> Result<usize> {
    let n = Option::<Text>::deserialize(v)
        .ok()
        .flatten()
        .and_then(|t| t.0.trim().parse::<usize>().ok());
    match n {
        Some(n) if (1..=crate::notifier::MAX_SENDERS).contains(&n) => Ok(n),
        _ => Err(Error::InvalidConfig {
            target: format!("{kind} {id}"),
            key: "senders",
            message: format!("`senders` must be a number from 1 to 50000, not {v}"),
        }),
    }
}

/// `camelCase` → `camel_case`.
fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The current name of `key` for a target of type `imp`, or `None` when
/// it names no key of that type. Besides the current names: MinIO's legacy
/// spellings (its `config.json` before the key-value configuration, and
/// the seed's recipes) the type lists, and any key in camelCase
/// (`queueDir` → `queue_dir`).
fn current_key(imp: &Imp, keys: &[&str], key: &str) -> Option<String> {
    if keys.contains(&key) || COMMON_KEYS.contains(&key) {
        return Some(key.to_owned());
    }
    if let Some((_, to)) = imp.legacy_keys.iter().find(|(from, _)| *from == key) {
        return Some((*to).to_owned());
    }
    let snake = snake_case(key);
    (keys.contains(&snake.as_str()) || COMMON_KEYS.contains(&snake.as_str())).then_some(snake)
}

/// Renames legacy keys to the current ones, flattens the type's nested
/// legacy forms ([`TargetType::legacy_form`]: Kafka's `tls: {enable,
/// skipVerify, clientAuth}` and `sasl: {enable, username, password}`, an
/// array of Kafka `brokers`, NATS's disabled `streaming` block) and refuses
/// unknown keys, naming the key as written.
fn normalize_keys(
    kind: &str,
    id: &str,
    imp: &Imp,
    target: Map<String, Value>,
) -> Result<Map<String, Value>> {
    let name = format!("{kind} {id}");
    let keys = (imp.keys)();
    let mut out = Map::new();
    let mut put = |written: &str, key: String, v: Value| -> Result<()> {
        if out.insert(key.clone(), v).is_some() {
            return Err(invalid(format!(
                "{name}: `{written}` sets `{key}`, which is given twice"
            )));
        }
        Ok(())
    };
    for (written, v) in target {
        if let Some(flat) = (imp.legacy_form)(&name, &written, &v) {
            for (written, key, v) in flat? {
                put(&written, key, v)?;
            }
            continue;
        }
        let key = current_key(imp, &keys, &written).ok_or_else(|| Error::UnknownKey {
            target: name.clone(),
            key: written.clone(),
        })?;
        put(&written, key, v)?;
    }
    Ok(out)
}

/// The `key=value` pairs of one line of `mc admin config get` output;
/// values may be double-quoted (with `\"` and `\\` escapes).
fn mc_pairs(text: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        if chars.next_if(|c| *c == '=').is_none() {
            return Err(format!("`{key}` has no `=value`"));
        }
        let mut value = String::new();
        if chars.next_if(|c| *c == '"').is_some() {
            loop {
                match chars.next() {
                    None => return Err(format!("the value of `{key}` has no closing quote")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(format!("the value of `{key}` has no closing quote")),
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        out.push((key, value));
    }
}

/// `v` as it may be shown: secrets ([`TargetType::SECRET_KEYS`]) as `***`,
/// passwords inside URLs and connection strings
/// ([`TargetType::URL_KEYS`]) as `***`, a webhook endpoint without its
/// path.
///
/// [`TargetType::SECRET_KEYS`]: crate::registry::TargetType::SECRET_KEYS
/// [`TargetType::URL_KEYS`]: crate::registry::TargetType::URL_KEYS
fn redact_value(imp: &Imp, key: &str, v: &Value) -> Value {
    let Value::String(s) = v else {
        return v.clone();
    };
    if s.is_empty() {
        return v.clone();
    }
    if imp.secret_keys.contains(&key) {
        return Value::String("***".into());
    }
    if !imp.url_keys.contains(&key) {
        return v.clone();
    }
    if key == "endpoint" {
        return Value::String(redact_endpoint(s));
    }
    // `scheme://user:password@host…` and libpq's `password=…`.
    let mut text = s.clone();
    if let Some((scheme, rest)) = s.split_once("://") {
        let end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            let user = rest[..at].split(':').next().unwrap_or_default();
            text = format!("{scheme}://{user}:***{}", &rest[at..]);
        }
    } else if let Some(at) = s.rfind('@') {
        // MySQL's DSN: `user:password@tcp(host:port)/db`.
        let user = s[..at].split(':').next().unwrap_or_default();
        text = format!("{user}:***{}", &s[at..]);
    }
    let mut words: Vec<String> = text.split(' ').map(str::to_owned).collect();
    for w in &mut words {
        if let Some(rest) = w.strip_prefix("password=") {
            if !rest.is_empty() {
                *w = "password=***".into();
            }
        }
    }
    Value::String(words.join(" "))
}

/// Scheme, host and port of a URL; the rest (where a token may hide) as
/// `/***`.
fn redact_endpoint(endpoint: &str) -> String {
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return "***".into();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    let tail = &rest[authority.len()..];
    if authority.contains('@') || !(tail.is_empty() || tail == "/") {
        format!("{scheme}://{host}/***")
    } else {
        format!("{scheme}://{host}/")
    }
}

#[cfg(all(test, feature = "webhook"))]
mod tests {
    use super::*;
    use s3_event_core::{EventMask, NotificationRule, TargetId};

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ids(targets: &[(Arc<dyn Target>, TargetOptions)]) -> Vec<String> {
        targets.iter().map(|(t, _)| t.id().to_string()).collect()
    }

    const TWO: &str = r#"{"webhook": {
        "1": {"enable": "on", "endpoint": "http://127.0.0.1:1/a", "queue_limit": "10"},
        "2": {"enable": true, "endpoint": "http://127.0.0.1:1/b", "auth_token": ""}
    }}"#;

    #[test]
    fn json_two_webhooks() {
        let c = NotifyConfig::from_json(TWO, "us-east-1").unwrap();
        let t = c.build_targets().unwrap();
        assert_eq!(
            ids(&t),
            [
                "arn:minio:sqs:us-east-1:1:webhook",
                "arn:minio:sqs:us-east-1:2:webhook"
            ]
        );
        assert_eq!(t[0].1.queue_limit, 10);
        assert_eq!(t[1].1.queue_limit, DEFAULT_QUEUE_LIMIT);
    }

    #[test]
    fn json_wrapped_in_notify() {
        let c = NotifyConfig::from_json(&format!(r#"{{"notify": {TWO}}}"#), "").unwrap();
        assert_eq!(c.target_names(), [("webhook", "1"), ("webhook", "2")]);
    }

    #[test]
    fn env_with_and_without_id() {
        let c = NotifyConfig::from_env_vars(
            env(&[
                ("MINIO_NOTIFY_WEBHOOK_ENABLE", "on"),
                (
                    "MINIO_NOTIFY_WEBHOOK_ENDPOINT",
                    "http://127.0.0.1:1/default",
                ),
                ("MINIO_NOTIFY_WEBHOOK_ENABLE_PRIMARY", "on"),
                (
                    "MINIO_NOTIFY_WEBHOOK_ENDPOINT_PRIMARY",
                    "http://127.0.0.1:1/p",
                ),
                ("MINIO_NOTIFY_WEBHOOK_QUEUE_LIMIT_PRIMARY", "5"),
                ("S3E_NOTIFY_WEBHOOK_AUTH_TOKEN_PRIMARY", "tok"),
                ("PATH", "/bin"),
            ]),
            "r",
        )
        .unwrap();
        let t = c.build_targets().unwrap();
        assert_eq!(
            ids(&t),
            [
                "arn:minio:sqs:r:PRIMARY:webhook",
                "arn:minio:sqs:r:_:webhook"
            ]
        );
        assert_eq!(t[0].1.queue_limit, 5);
    }

    #[test]
    fn s3e_prefix_wins_over_minio() {
        let c = NotifyConfig::from_env_vars(
            env(&[
                ("S3E_NOTIFY_WEBHOOK_ENABLE_1", "off"),
                ("MINIO_NOTIFY_WEBHOOK_ENABLE_1", "on"),
                ("MINIO_NOTIFY_WEBHOOK_ENDPOINT_1", "http://127.0.0.1:1/"),
            ]),
            "",
        )
        .unwrap();
        assert!(c.build_targets().unwrap().is_empty());
    }

    #[test]
    fn env_overrides_json() {
        let json = NotifyConfig::from_json(TWO, "r").unwrap();
        let envc = NotifyConfig::from_env_vars(
            env(&[
                ("MINIO_NOTIFY_WEBHOOK_QUEUE_LIMIT_1", "7"),
                ("MINIO_NOTIFY_WEBHOOK_ENABLE_2", "off"),
            ]),
            "r",
        )
        .unwrap();
        let t = json.merge(envc).build_targets().unwrap();
        assert_eq!(ids(&t), ["arn:minio:sqs:r:1:webhook"]);
        assert_eq!(t[0].1.queue_limit, 7);
    }

    #[test]
    fn unknown_key_names_target_and_key() {
        let err = NotifyConfig::from_json(
            r#"{"webhook": {"1": {"enable": "on", "endpoit": "http://x/"}}}"#,
            "",
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "webhook 1: unknown key `endpoit`");
        assert!(matches!(err, Error::UnknownKey { ref key, .. } if key == "endpoit"));

        let err = NotifyConfig::from_env_vars(env(&[("MINIO_NOTIFY_WEBHOOK_ENDPOIT_1", "x")]), "")
            .unwrap_err();
        assert!(
            err.to_string().contains("MINIO_NOTIFY_WEBHOOK_ENDPOIT_1"),
            "{err}"
        );
    }

    #[test]
    fn invalid_value_names_target_and_key() {
        let c = NotifyConfig::from_json(
            r#"{"webhook": {"3": {"endpoint": "http://x/", "queue_limit": "many"}}}"#,
            "",
        )
        .unwrap();
        let err = c.build_targets().unwrap_err();
        assert!(
            matches!(err, Error::InvalidConfig { ref target, key: "queue_limit", .. } if target == "webhook 3"),
            "{err:?}"
        );
        let c = NotifyConfig::from_json(r#"{"webhook": {"4": {"enable": "on"}}}"#, "").unwrap();
        let err = c.build_targets().unwrap_err();
        assert_eq!(err.to_string(), "webhook 4: `endpoint` is required");
    }

    #[test]
    fn unknown_type_is_an_error() {
        let err =
            NotifyConfig::from_json(r#"{"zeromq": {"1": {"enable": "on"}}}"#, "").unwrap_err();
        assert!(matches!(err, Error::UnknownTargetType { ref kind } if kind == "zeromq"));
        assert!(err.to_string().contains("`zeromq`"), "{err}");
        let err = NotifyConfig::from_env_vars(env(&[("MINIO_NOTIFY_ZEROMQ_ENABLE", "on")]), "")
            .unwrap_err();
        assert!(err.to_string().contains("`zeromq`"), "{err}");
    }

    #[test]
    fn disabled_target_skipped() {
        let c = NotifyConfig::from_json(
            r#"{"webhook": {"1": {"enable": "off", "endpoint": ""},
                            "2": {"enable": "on", "endpoint": "http://127.0.0.1:1/"}}}"#,
            "",
        )
        .unwrap();
        assert_eq!(
            ids(&c.build_targets().unwrap()),
            ["arn:minio:sqs::2:webhook"]
        );
    }

    #[tokio::test]
    async fn notifier_routes_to_configured_targets() {
        let c = NotifyConfig::from_json(TWO, "r").unwrap();
        let id = TargetId::new("r", "2", "webhook").unwrap();
        let rules =
            NotificationConfiguration::new(vec![NotificationRule::new("a", EventMask::ALL, id)]);
        let n = c.notifier(&rules, DeliveryMode::default()).unwrap();
        assert_eq!(n.stats().len(), 2);
    }

    #[tokio::test]
    async fn rule_with_unconfigured_arn_fails_naming_it() {
        let c = NotifyConfig::from_json(TWO, "r").unwrap();
        let id = TargetId::new("r", "9", "webhook").unwrap();
        let rules =
            NotificationConfiguration::new(vec![NotificationRule::new("a", EventMask::ALL, id)]);
        let err = c.notifier(&rules, DeliveryMode::default()).unwrap_err();
        assert!(matches!(err, Error::UnknownTarget { .. }));
        assert!(
            err.to_string().contains("arn:minio:sqs:r:9:webhook"),
            "{err}"
        );
    }
}

#[cfg(all(test, not(feature = "webhook")))]
mod tests_no_webhook {
    use super::*;

    #[test]
    fn webhook_needs_its_feature() {
        let err = NotifyConfig::from_json(r#"{"webhook": {"1": {}}}"#, "").unwrap_err();
        assert!(err.to_string().contains("feature `webhook`"), "{err}");
    }
}

/// The six target blocks of seed 002 (MinIO's bucket notification guide),
/// byte for byte as the guide prints them (tabs included): each is a
/// `"<type>": {…}` member of MinIO's `config.json`.
#[cfg(test)]
pub(crate) mod seed {
    /// `"amqp": {"1": {…}}`, with the legacy `routingKey`, `exchangeType`,
    /// `noWait`, `autoDeleted`.
    pub const AMQP: &str = r#""amqp": {
    "1": {
	"enable": true,
	"url": "amqp://myuser:mypassword@localhost:5672",
	"exchange": "bucketevents",
	"routingKey": "bucketlogs",
	"exchangeType": "fanout",
	"mandatory": false,
	"immediate": false,
	"durable": false,
	"internal": false,
	"noWait": false,
	"autoDeleted": false
    }
}"#;
    /// `"elasticsearch": {"1": {…}}`.
    pub const ELASTICSEARCH: &str = r#""elasticsearch": {
    "1": {
        "enable": true,
        "url": "http://127.0.0.1:9200",
        "index": "bucketevents"
    }
}"#;
    /// `"redis": {"1": {…}}`.
    pub const REDIS: &str = r#""redis": {
    "1": {
	"enable": true,
	"address": "127.0.0.1:6379",
	"password": "yoursecret",
	"key": "bucketevents"
    }
}"#;
    /// `"nats": {"1": {…}}`, with the legacy `secure` and `pingInterval`.
    pub const NATS: &str = r#""nats": {
    "1": {
        "enable": true,
        "address": "0.0.0.0:4222",
        "subject": "bucketevents",
        "username": "yourusername",
        "password": "yoursecret",
        "token": "",
        "secure": false,
        "pingInterval": 0
    }
}"#;
    /// `"postgresql": {"1": {…}}`, with `connectionString` and the discrete
    /// `host`/`port`/`user`/`password`/`database` keys.
    pub const POSTGRESQL: &str = r#""postgresql": {
    "1": {
        "enable": true,
        "connectionString": "",
        "table": "bucketevents",
        "host": "127.0.0.1",
        "port": "5432",
        "user": "postgres",
        "password": "mypassword",
        "database": "bucketevents_db"
    }
}"#;
    /// `"kafka": {"1": {…}}`, with `brokers` as a JSON array.
    pub const KAFKA: &str = r#""kafka": {
    "1": {
        "enable": true,
        "brokers": ["localhost:9092"],
        "topic": "bucketevents"
    }
}"#;

    /// A block as a whole document: `{<block>}`.
    pub fn doc(blocks: &[&str]) -> String {
        format!("{{{}}}", blocks.join(","))
    }
}

#[cfg(all(
    test,
    feature = "amqp",
    feature = "elasticsearch",
    feature = "redis",
    feature = "nats",
    feature = "postgres",
    feature = "kafka",
    feature = "webhook"
))]
mod seed_tests {
    use super::seed::*;
    use super::*;

    /// Reads `blocks` unchanged and builds their targets; returns the
    /// configuration and the target ids.
    fn read(blocks: &[&str]) -> (NotifyConfig, Vec<String>) {
        let c = NotifyConfig::from_json(&doc(blocks), "us-east-1").unwrap();
        let ids = c
            .build_targets()
            .unwrap()
            .iter()
            .map(|(t, _)| t.id().to_string())
            .collect();
        (c, ids)
    }

    fn key<'a>(c: &'a NotifyConfig, kind: &str, key: &str) -> &'a Value {
        &c.targets[kind]["1"][key]
    }

    #[test]
    fn seed_amqp_block_reads_unchanged() {
        let (c, ids) = read(&[AMQP]);
        assert_eq!(ids, ["arn:minio:sqs:us-east-1:1:amqp"]);
        assert_eq!(key(&c, "amqp", "routing_key"), "bucketlogs");
        assert_eq!(key(&c, "amqp", "exchange_type"), "fanout");
        assert_eq!(key(&c, "amqp", "no_wait"), false);
        assert_eq!(key(&c, "amqp", "auto_deleted"), false);
        assert_eq!(key(&c, "amqp", "internal"), false);
        let shown = c.redacted_json().to_string();
        assert!(!shown.contains("mypassword"), "{shown}");
        assert!(
            shown.contains("amqp://myuser:***@localhost:5672"),
            "{shown}"
        );
    }

    #[test]
    fn seed_elasticsearch_block_reads_unchanged() {
        let (c, ids) = read(&[ELASTICSEARCH]);
        assert_eq!(ids, ["arn:minio:sqs:us-east-1:1:elasticsearch"]);
        assert_eq!(key(&c, "elasticsearch", "index"), "bucketevents");
    }

    #[test]
    fn seed_redis_block_reads_unchanged() {
        let (c, ids) = read(&[REDIS]);
        assert_eq!(ids, ["arn:minio:sqs:us-east-1:1:redis"]);
        assert_eq!(key(&c, "redis", "key"), "bucketevents");
        assert!(!c.redacted_json().to_string().contains("yoursecret"));
    }

    #[test]
    fn seed_nats_block_reads_unchanged() {
        let (c, ids) = read(&[NATS]);
        assert_eq!(ids, ["arn:minio:sqs:us-east-1:1:nats"]);
        // `secure` is `tls`, `pingInterval` is `ping_interval`.
        assert_eq!(key(&c, "nats", "tls"), false);
        assert_eq!(key(&c, "nats", "ping_interval"), 0);
        assert_eq!(key(&c, "nats", "username"), "yourusername");
        let shown = c.redacted_json().to_string();
        assert!(!shown.contains("yoursecret"), "{shown}");
    }

    #[test]
    fn seed_postgresql_block_reads_unchanged() {
        let (c, ids) = read(&[POSTGRESQL]);
        assert_eq!(ids, ["arn:minio:sqs:us-east-1:1:postgresql"]);
        // `connectionString` is empty: the discrete keys are used.
        assert_eq!(key(&c, "postgresql", "connection_string"), "");
        assert_eq!(key(&c, "postgresql", "username"), "postgres");
        assert_eq!(key(&c, "postgresql", "port"), "5432");
        assert_eq!(key(&c, "postgresql", "database"), "bucketevents_db");
        assert!(!c.redacted_json().to_string().contains("mypassword"));
    }

    #[test]
    fn seed_kafka_block_reads_unchanged() {
        let (c, ids) = read(&[KAFKA]);
        assert_eq!(ids, ["arn:minio:sqs:us-east-1:1:kafka"]);
        assert_eq!(key(&c, "kafka", "brokers"), "localhost:9092");
    }

    #[test]
    fn a_whole_minio_config_json_with_all_six_blocks_reads_unchanged() {
        let notify = doc(&[AMQP, ELASTICSEARCH, REDIS, NATS, POSTGRESQL, KAFKA]);
        let whole = format!(
            r#"{{"version": "20", "credential": {{"accessKey": "minio", "secretKey": "minio123"}},
                "region": "us-east-1", "browser": "on", "logger": {{"console": {{"enable": true}}}},
                "notify": {notify}}}"#
        );
        let c = NotifyConfig::from_json(&whole, "us-east-1").unwrap();
        assert_eq!(c.build_targets().unwrap().len(), 6);
        assert!(!NotifyConfig::sync_events_in(
            &serde_json::from_str(&whole).unwrap()
        ));
        let with_api = whole.replacen('{', r#"{"api": {"sync_events": "on"}, "#, 1);
        assert!(NotifyConfig::sync_events_in(
            &serde_json::from_str(&with_api).unwrap()
        ));
    }

    #[test]
    fn mc_admin_config_get_output_reads_unchanged() {
        let text = r#"notify_webhook:1 endpoint="http://127.0.0.1:9000/hook" auth_token="" queue_limit="0" queue_dir="" client_cert="" client_key=""
# MINIO_NOTIFY_WEBHOOK_ENABLE_PRIMARY=on
notify_kafka:primary enable=on brokers="localhost:9092,localhost:9093" topic="bucketevents" sasl_username="" sasl_password="" sasl_mechanism="plain" tls_client_auth="0" tls=off tls_skip_verify=off client_tls_cert="" client_tls_key="" version="" queue_dir="" queue_limit="0"
notify_redis enable=off address="" format="namespace" key="" password="" queue_dir="" queue_limit="0"
"#;
        let c = NotifyConfig::from_json(text, "us-east-1").unwrap();
        assert_eq!(
            c.target_names(),
            [("kafka", "primary"), ("redis", "_"), ("webhook", "1")]
        );
        let ids: Vec<String> = c
            .build_targets()
            .unwrap()
            .iter()
            .map(|(t, _)| t.id().to_string())
            .collect();
        // `notify_redis` is off.
        assert_eq!(
            ids,
            [
                "arn:minio:sqs:us-east-1:primary:kafka",
                "arn:minio:sqs:us-east-1:1:webhook"
            ]
        );
        assert!(NotifyConfig::sync_events_in(&Value::String(
            "api requests_max=0 sync_events=on\n".into()
        )));
        let e = NotifyConfig::from_json("notify_webhook:1 endpoit=\"x\"", "").unwrap_err();
        assert!(e.to_string().contains("`endpoit`"), "{e}");
    }

    #[test]
    fn unknown_legacy_looking_keys_are_still_refused_naming_them() {
        for (block, bad) in [
            (
                r#""amqp": {"1": {"url": "amqp://h", "routingKye": "x"}}"#,
                "routingKye",
            ),
            (
                r#""nats": {"1": {"address": "h:4222", "subject": "s", "secure": false, "pingIntrval": 1}}"#,
                "pingIntrval",
            ),
            (
                r#""kafka": {"1": {"brokers": ["h:9092"], "topic": "t", "tls": {"enable": false, "skipVerfy": true}}}"#,
                "tls.skipVerfy",
            ),
        ] {
            let e = NotifyConfig::from_json(&doc(&[block]), "").unwrap_err();
            assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
        }
        // The same key twice, in both spellings.
        let e = NotifyConfig::from_json(
            &doc(&[r#""amqp": {"1": {"url": "amqp://h", "routingKey": "a", "routing_key": "b"}}"#]),
            "",
        )
        .unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn senders_come_from_the_configuration() {
        let c = NotifyConfig::from_json(
            r#"{"webhook": {"1": {"endpoint": "http://127.0.0.1:1/", "senders": "8"}}}"#,
            "",
        )
        .unwrap();
        assert_eq!(c.build_targets().unwrap()[0].1.senders, 8);
        // AIStor's range: up to 50000.
        let c = NotifyConfig::from_json(
            r#"{"webhook": {"1": {"endpoint": "http://127.0.0.1:1/", "senders": 50000}}}"#,
            "",
        )
        .unwrap();
        assert_eq!(c.build_targets().unwrap()[0].1.senders, 50000);
        for bad in ["50001", "0", "\"many\""] {
            let c = NotifyConfig::from_json(
                &format!(
                    r#"{{"webhook": {{"1": {{"endpoint": "http://127.0.0.1:1/", "senders": {bad}}}}}}}"#
                ),
                "",
            )
            .unwrap();
            let e = c.build_targets().unwrap_err().to_string();
            assert!(e.contains("`senders`") && e.contains("1 to 50000"), "{e}");
        }
        let c = NotifyConfig::from_env_vars(
            [
                (
                    "MINIO_NOTIFY_WEBHOOK_ENDPOINT_A".to_owned(),
                    "http://127.0.0.1:1/".to_owned(),
                ),
                ("MINIO_NOTIFY_WEBHOOK_SENDERS_A".to_owned(), "4".to_owned()),
            ],
            "",
        )
        .unwrap();
        assert_eq!(c.build_targets().unwrap()[0].1.senders, 4);
    }
}

/// Every registered type's accepted keys against its configuration struct
/// and the key table of the module docs, in both spellings.
#[cfg(test)]
mod key_tests {
    use super::*;

    /// The key table of the module docs: type → `(key, legacy spelling)`.
    fn documented() -> BTreeMap<String, Vec<(String, Option<String>)>> {
        let mut out = BTreeMap::new();
        for row in include_str!("mod.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! | `"))
        {
            let (kind, keys) = row.split_once("` | ").expect("a `| type | keys |` row");
            let keys = keys.trim_end_matches(" |").split(", ").map(|item| {
                let names: Vec<&str> = item.split('`').skip(1).step_by(2).collect();
                (names[0].to_owned(), names.get(1).map(|s| (*s).to_owned()))
            });
            out.insert(kind.to_owned(), keys.collect());
        }
        out
    }

    fn one(key: &str) -> Map<String, Value> {
        [(key.to_owned(), Value::String(String::new()))]
            .into_iter()
            .collect()
    }

    fn camel_case(key: &str) -> String {
        let mut out = String::new();
        let mut up = false;
        for c in key.chars() {
            match c {
                '_' => up = true,
                c if up => {
                    out.push(c.to_ascii_uppercase());
                    up = false;
                }
                c => out.push(c),
            }
        }
        out
    }

    #[test]
    fn every_type_refuses_bad_client_values_naming_the_key_and_the_value() {
        let mut checked = 0;
        for d in TARGET_TYPES {
            let Some(imp) = &d.imp else { continue };
            let kind = d.kind;
            for (key, value, said) in [
                ("connect_timeout", "soon", "not \"soon\""),
                ("request_timeout", "10 parsecs", "not \"10 parsecs\""),
                ("request_timeout", "0s", "must be > 0, not 0"),
                ("connect_timeout", "-1s", "not \"-1s\""),
            ] {
                let map = [(key.to_owned(), Value::String(value.into()))]
                    .into_iter()
                    .collect();
                let id = s3_event_core::TargetId::new("r", "1", kind).unwrap();
                let e = (imp.build)(kind, id, &map).unwrap_err();
                assert!(
                    matches!(e, Error::InvalidConfig { key: k, .. } if k == key),
                    "{kind}: {e:?}"
                );
                let m = e.to_string();
                assert!(
                    m.starts_with(&format!("{kind} 1: ")) && m.contains(&format!("`{key}`")),
                    "{kind}: {m}"
                );
                assert!(m.contains(said), "{kind}: {m}");
            }
            checked += 1;
        }
        assert_eq!(
            checked,
            TARGET_TYPES.iter().filter(|d| d.imp.is_some()).count()
        );
    }

    #[test]
    fn accepted_keys_match_the_structs_and_the_docs() {
        let docs = documented();
        let mut checked = 0;
        for d in TARGET_TYPES {
            let Some(imp) = &d.imp else { continue };
            let kind = d.kind;
            let keys = (imp.keys)();
            let mut doc_keys: Vec<&str> = docs[kind]
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| !COMMON_KEYS.contains(k))
                .collect();
            let mut struct_keys = keys.clone();
            doc_keys.sort_unstable();
            struct_keys.sort_unstable();
            assert_eq!(doc_keys, struct_keys, "{kind}: documented keys");
            for key in &keys {
                // The struct reads the key: an empty value is never an
                // unknown key (an empty `enable` is off, so nothing is built).
                let id = s3_event_core::TargetId::new("r", "1", kind).unwrap();
                if let Err(e) = (imp.build)(kind, id, &one(key)) {
                    assert!(
                        !matches!(e, Error::UnknownKey { .. })
                            && !e.to_string().contains("unknown field"),
                        "{kind}: the struct refuses its key `{key}`: {e}"
                    );
                }
                // The loader reads it, in both spellings and from the
                // environment.
                for written in [key.to_string(), camel_case(key)] {
                    let read = normalize_keys(kind, "1", imp, one(&written))
                        .unwrap_or_else(|e| panic!("{kind}: `{written}`: {e}"));
                    assert_eq!(read, one(key), "{kind}: `{written}`");
                }
                let var = format!(
                    "MINIO_NOTIFY_{}_{}_X",
                    kind.to_uppercase(),
                    key.to_uppercase()
                );
                let c = NotifyConfig::from_env_vars([(var.clone(), String::new())], "").unwrap();
                assert_eq!(c.targets[kind]["X"], one(key), "{var}");
            }
            // Secrets are declared on real keys, and a key named like a
            // secret is declared one.
            for key in imp.secret_keys.iter().chain(imp.url_keys) {
                assert!(keys.contains(key), "{kind}: `{key}` is no key");
            }
            for key in &keys {
                let secret_like = ["password", "token", "seed", "secret", "signature_key"]
                    .iter()
                    .any(|s| key.contains(s));
                assert!(
                    !secret_like || imp.secret_keys.contains(key),
                    "{kind}: `{key}` looks like a secret: list it in SECRET_KEYS"
                );
            }
            for (key, legacy) in &docs[kind] {
                if let Some(legacy) = legacy {
                    let read = normalize_keys(kind, "1", imp, one(legacy))
                        .unwrap_or_else(|e| panic!("{kind}: legacy `{legacy}`: {e}"));
                    assert_eq!(read, one(key), "{kind}: legacy `{legacy}`");
                }
            }
            // Any other key is refused, by the loader and by the struct,
            // naming it.
            let e = normalize_keys(kind, "1", imp, one("no_such_key")).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("{kind} 1: unknown key `no_such_key`")
            );
            let id = s3_event_core::TargetId::new("r", "1", kind).unwrap();
            let e = (imp.build)(kind, id, &one("no_such_key")).unwrap_err();
            assert!(e.to_string().contains("no_such_key"), "{kind}: {e}");
            checked += 1;
        }
        assert_eq!(
            checked,
            TARGET_TYPES.iter().filter(|d| d.imp.is_some()).count()
        );
    }
}
