//! The Kafka target (feature `kafka`): produces each event as MinIO's
//! `{"EventName", "Key", "Records": [record]}` envelope, keyed
//! `bucket/object` as MinIO does.
//!
//! The client is [rskafka](https://docs.rs/rskafka), a pure-Rust Kafka
//! client: it builds in seconds with no C toolchain (librdkafka needs cmake
//! and a long C build, and Debian's librdkafka 2.0 cannot talk to the
//! tansu broker the tests use), speaks TLS through rustls and SASL
//! PLAIN/SCRAM, and gives per-partition produce calls that return only once
//! the broker acknowledged the records, which is the delivery guarantee a
//! target needs. It has no idempotent producer and no consumer groups;
//! neither is needed to produce.
//!
//! - Partitioning: the partition of an event is chosen from its key with
//!   the same hash as MinIO's client (sarama's FNV-1a partitioner), so one
//!   object's events always land in one partition, in order, and events of
//!   an object go to the same partition as from MinIO.
//! - A batch makes one produce request per partition, the partitions in
//!   parallel; an event counts once its partition leader acknowledged it.
//!
//! Errors: a broker rejecting records (too large, invalid), missing topic
//! or authorization, and refused SASL credentials are permanent, with the
//! broker's message; connection loss and timeouts are transient. The
//! client is built on first use (building a target contacts nothing) and
//! again after a failure.
//!
//! ```no_run
//! use s3_event_targets::kafka::{KafkaConfig, KafkaTarget};
//!
//! let config = KafkaConfig::new("127.0.0.1:9092", "bucketevents");
//! let target = KafkaTarget::new("arn:minio:sqs::1:kafka".parse().unwrap(), config).unwrap();
//! ```

mod config;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;
use rskafka::BackoffConfig;
use s3_event_core::{EventRecord, Notification, Target, TargetError, TargetId};

pub use config::{
    KafkaConfig, DEFAULT_BATCH_SIZE, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
};

use crate::config::Timeouts;
use crate::error::describe;
use crate::{Error, Result};

/// The partition sarama's hash partitioner (MinIO's Kafka client) picks for
/// `key` among `partitions`: FNV-1a (32 bit) of the key, as a signed
/// integer, modulo the count, negated when negative.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in key {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let p = (hash as i32) % partitions.max(1);
    p.abs()
}

/// A Kafka [`Target`]. See the [module docs](self).
pub struct KafkaTarget {
    id: TargetId,
    config: KafkaConfig,
    compression: Compression,
    tls: Option<Arc<rustls::ClientConfig>>,
    state: tokio::sync::Mutex<Option<State>>,
}

struct State {
    client: Client,
    partitions: i32,
    clients: HashMap<i32, Arc<PartitionClient>>,
}

impl fmt::Debug for KafkaTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaTarget")
            .field("id", &self.id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}


/// Registered in `lib.rs`'s `targets!` list.
impl crate::registry::TargetType for KafkaTarget {
    type Config = KafkaConfig;

    const SECRET_KEYS: &'static [&'static str] = &["sasl_password"];

    const LEGACY_KEYS: &'static [(&'static str, &'static str)] = &[("tlsSkipVerify", "tls_skip_verify")];

    /// `"tls": {"enable", "skipVerify", "clientAuth"}`, `"sasl": {"enable",
    /// "username", "password", "mechanism"}` and `"brokers": [...]`.
    fn legacy_form(
        target: &str,
        written: &str,
        value: &serde_json::Value,
    ) -> crate::registry::LegacyForm {
        use serde_json::Value;
        match (written, value) {
            ("tls" | "sasl", Value::Object(inner)) => Some(
                inner
                    .iter()
                    .map(|(k, v)| {
                        let key = match (written, k.as_str()) {
                            (p, "enable") => p.to_owned(),
                            ("tls", "skipVerify" | "skip_verify") => "tls_skip_verify".into(),
                            ("tls", "clientAuth" | "client_auth") => "tls_client_auth".into(),
                            ("sasl", "username" | "password" | "mechanism") => format!("sasl_{k}"),
                            _ => {
                                return Err(Error::UnknownKey {
                                    target: target.to_owned(),
                                    key: format!("{written}.{k}"),
                                })
                            }
                        };
                        Ok((format!("{written}.{k}"), key, v.clone()))
                    })
                    .collect(),
            ),
            ("brokers", Value::Array(list)) => Some(
                list.iter()
                    .map(|b| match b {
                        Value::String(s) => Ok(s.as_str()),
                        other => Err(Error::InvalidNotifyConfig {
                            message: format!("{target}: `brokers` must hold strings, not {other}"),
                        }),
                    })
                    .collect::<crate::Result<Vec<&str>>>()
                    .map(|brokers| {
                        vec![(
                            "brokers".to_owned(),
                            "brokers".to_owned(),
                            Value::String(brokers.join(",")),
                        )]
                    }),
            ),
            _ => None,
        }
    }

    fn build(
        id: TargetId,
        config: KafkaConfig,
    ) -> crate::Result<std::sync::Arc<dyn s3_event_core::Target>> {
        Ok(std::sync::Arc::new(KafkaTarget::new(id, config)?))
    }
}

impl KafkaTarget {
    /// Validates `config` (errors name the target and the key) and builds
    /// the target; TLS files are read now. Nothing is contacted.
    pub fn new(id: TargetId, config: KafkaConfig) -> Result<KafkaTarget> {
        config.validate(id.id())?;
        let compression = match config
            .compression_codec
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("gzip") => Compression::Gzip,
            Some("snappy") => Compression::Snappy,
            Some("lz4") => Compression::Lz4,
            Some("zstd") => Compression::Zstd,
            _ => Compression::NoCompression,
        };
        let tls = if config.tls || config.tls_skip_verify || config.client_tls_cert.is_some() {
            let opts = crate::tls::TlsOptions {
                ca: None,
                client: config
                    .client_tls_cert
                    .as_deref()
                    .zip(config.client_tls_key.as_deref()),
                skip_verify: config.tls_skip_verify,
                skip_hostname: false,
            };
            Some(Arc::new(crate::tls::client_config(&opts).map_err(
                |message| Error::InvalidConfig {
                    target: format!("kafka {}", id.id()),
                    key: "client_tls_cert",
                    message,
                },
            )?))
        } else {
            None
        };
        Ok(KafkaTarget {
            id,
            config,
            compression,
            tls,
            state: tokio::sync::Mutex::new(None),
        })
    }

    /// The configuration the target was built with.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// How long connecting may take (the bootstrap connection, the
    /// metadata, a partition leader's connection), and one produce request
    /// or metadata probe; each retries inside that time.
    pub fn timeouts(&self) -> Timeouts {
        self.config.timeouts()
    }

    /// An rskafka error as a target error.
    fn error(&self, what: &str, e: &rskafka::client::error::Error) -> TargetError {
        use rskafka::client::error::{Error as E, ProtocolError as P};
        let message = format!("{what}: {}", describe(e));
        let permanent = match e {
            E::ServerError { protocol_error, .. } => matches!(
                protocol_error,
                P::MessageTooLarge
                    | P::RecordListTooLarge
                    | P::InvalidRecord
                    | P::CorruptMessage
                    | P::InvalidTopicException
                    | P::TopicAuthorizationFailed
                    | P::ClusterAuthorizationFailed
                    | P::SaslAuthenticationFailed
                    | P::UnsupportedCompressionType
                    | P::UnsupportedSaslMechanism
                    | P::PolicyViolation
                    | P::UnknownTopicOrPartition
            ),
            _ => {
                let lower = message.to_ascii_lowercase();
                lower.contains("sasl") || lower.contains("authentication")
            }
        };
        if permanent {
            TargetError::permanent(&self.id, message)
        } else {
            TargetError::transient(&self.id, message)
        }
    }

    async fn connect(&self) -> Result<State, TargetError> {
        let c = &self.config;
        let t = self.timeouts();
        let mut builder = ClientBuilder::new(c.broker_list())
            .client_id(format!("s3-event {}", self.id))
            .backoff_config(BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
                // Retries stop within the longer bound; the outer
                // bounds below apply each.
                deadline: Some(t.connect.max(t.request)),
            });
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(tls.clone());
        }
        if c.sasl {
            let creds = Credentials::new(
                c.sasl_username.clone().unwrap_or_default(),
                c.sasl_password.clone().unwrap_or_default(),
            );
            builder = builder.sasl_config(
                match c
                    .sasl_mechanism
                    .as_deref()
                    .map(str::to_ascii_lowercase)
                    .as_deref()
                {
                    Some("sha256") => SaslConfig::ScramSha256(creds),
                    Some("sha512") => SaslConfig::ScramSha512(creds),
                    _ => SaslConfig::Plain(creds),
                },
            );
        }
        let client = match tokio::time::timeout(t.connect, builder.build()).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(self.error("connecting", &e)),
            Err(_) => {
                return Err(TargetError::transient(
                    &self.id,
                    format!("connecting: timed out after {:?}", t.connect),
                ))
            }
        };
        let topics = tokio::time::timeout(t.connect, client.list_topics())
            .await
            .map_err(|_| TargetError::transient(&self.id, "reading metadata: timed out"))?
            .map_err(|e| self.error("reading metadata", &e))?;
        let Some(topic) = topics.into_iter().find(|t| t.name == c.topic) else {
            return Err(TargetError::permanent(
                &self.id,
                format!("topic `{}` does not exist", c.topic),
            ));
        };
        let partitions = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
        if partitions == 0 {
            return Err(TargetError::transient(
                &self.id,
                format!("topic `{}` has no partitions yet", c.topic),
            ));
        }
        Ok(State {
            client,
            partitions,
            clients: HashMap::new(),
        })
    }

    async fn partition_client(
        &self,
        state: &mut State,
        partition: i32,
    ) -> Result<Arc<PartitionClient>, TargetError> {
        if let Some(pc) = state.clients.get(&partition) {
            return Ok(pc.clone());
        }
        let pc = tokio::time::timeout(
            self.timeouts().connect,
            state.client.partition_client(
                self.config.topic.clone(),
                partition,
                UnknownTopicHandling::Error,
            ),
        )
        .await
        .map_err(|_| TargetError::transient(&self.id, "finding the partition leader: timed out"))?
        .map_err(|e| self.error("finding the partition leader", &e))?;
        let pc = Arc::new(pc);
        state.clients.insert(partition, pc.clone());
        Ok(pc)
    }

    async fn produce(&self, state: &mut State, events: &[EventRecord]) -> Result<(), TargetError> {
        let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        for r in events {
            let n = Notification::minio_envelope(vec![r.clone()])
                .map_err(|e| TargetError::permanent(&self.id, e))?;
            let key = n.key.clone().unwrap_or_default();
            let partition = partition_for_key(key.as_bytes(), state.partitions);
            by_partition.entry(partition).or_default().push(Record {
                key: Some(key.into_bytes()),
                value: Some(n.to_vec()),
                headers: BTreeMap::new(),
                timestamp: rskafka::chrono::Utc::now(),
            });
        }
        let limit = self.timeouts().request;
        let mut requests = tokio::task::JoinSet::new();
        for (partition, records) in by_partition {
            let pc = self.partition_client(state, partition).await?;
            let compression = self.compression;
            requests.spawn(async move {
                let r = tokio::time::timeout(limit, pc.produce(records, compression)).await;
                (partition, r)
            });
        }
        let mut first_error = None;
        while let Some(done) = requests.join_next().await {
            let err = match done {
                Ok((_, Ok(Ok(_offsets)))) => continue,
                Ok((p, Ok(Err(e)))) => self.error(&format!("producing to partition {p}"), &e),
                Ok((p, Err(_))) => TargetError::transient(
                    &self.id,
                    format!("producing to partition {p}: no acknowledgement within {limit:?}"),
                ),
                Err(e) => TargetError::transient(&self.id, format!("produce task: {e}")),
            };
            // A permanent error wins: retrying the batch cannot help.
            match &first_error {
                Some(TargetError::Permanent { .. }) => {}
                _ if !err.is_transient() => first_error = Some(err),
                None => first_error = Some(err),
                _ => {}
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Target for KafkaTarget {
    fn id(&self) -> &TargetId {
        &self.id
    }

    /// Produces every event, keyed `bucket/object`, one request per
    /// partition; returns once every partition acknowledged. See the
    /// [module docs](self).
    async fn send_batch(&self, events: &[EventRecord]) -> Result<(), TargetError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut guard = self.state.lock().await;
        if guard.is_none() {
            *guard = Some(self.connect().await?);
        }
        let state = guard.as_mut().expect("connected above");
        let result = self.produce(state, events).await;
        if result.is_err() {
            // Metadata (leaders, partition count) is read again next time.
            *guard = None;
        }
        result
    }

    /// One metadata request (bounded by `request_timeout`, default 5 s); builds
    /// the client first when there is none. Refused credentials or a missing
    /// topic are permanent errors.
    async fn is_active(&self) -> Result<bool, TargetError> {
        let mut guard = self.state.lock().await;
        if let Some(state) = guard.as_ref() {
            let ok = matches!(
                tokio::time::timeout(self.timeouts().request, state.client.list_topics()).await,
                Ok(Ok(_))
            );
            if ok {
                return Ok(true);
            }
            *guard = None;
            return Ok(false);
        }
        match self.connect().await {
            Ok(state) => {
                *guard = Some(state);
                Ok(true)
            }
            Err(e) if e.is_transient() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Drops the client and its connections.
    async fn close(&self) -> Result<(), TargetError> {
        self.state.lock().await.take();
        Ok(())
    }

    fn max_batch(&self) -> usize {
        self.config
            .batch_size
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .unwrap_or(DEFAULT_BATCH_SIZE)
    }
}

#[cfg(all(test, feature = "integration"))]
mod conformance_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitioner_matches_fnv1a() {
        // FNV-1a 32 of "" is the offset basis; of "a" is 0xe40c292c.
        assert_eq!(partition_for_key(b"", 1), 0);
        assert_eq!(
            partition_for_key(b"a", 7),
            ((0xe40c_292c_u32 as i32) % 7).abs()
        );
        for k in ["photos/a.jpg", "photos/b.jpg", "x/y"] {
            let p = partition_for_key(k.as_bytes(), 3);
            assert!((0..3).contains(&p));
            assert_eq!(p, partition_for_key(k.as_bytes(), 3));
        }
    }

    #[test]
    fn target_debug_redacts_sasl_password() {
        let c = KafkaConfig {
            sasl: true,
            sasl_username: Some("u".into()),
            sasl_password: Some("K-SECRET".into()),
            ..KafkaConfig::new("127.0.0.1:9092", "t")
        };
        let t = KafkaTarget::new("arn:minio:sqs::1:kafka".parse().unwrap(), c).unwrap();
        assert!(!format!("{t:?}").contains("K-SECRET"));
    }

    #[test]
    fn client_keys_reach_the_client() {
        use crate::config::client::testing::{assert_client_keys, secs};
        let keys = serde_json::json!({"brokers": "127.0.0.1:9092", "topic": "t"});
        assert_client_keys(keys, secs(5, 5), |v| {
            KafkaTarget::new("arn:minio:sqs::1:kafka".parse().unwrap(), serde_json::from_value(v).unwrap())
                .unwrap()
                .timeouts()
        });
    }

    #[tokio::test]
    async fn refused_connection_is_transient() {
        let c = KafkaConfig::new("127.0.0.1:1", "t");
        let t = KafkaTarget::new("arn:minio:sqs::1:kafka".parse().unwrap(), c).unwrap();
        let err = t.send(&crate::conformance::record("k")).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(!t.is_active().await.unwrap());
    }
}
