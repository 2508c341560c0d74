//! Delivery of S3 event notifications to targets (webhooks, brokers, databases). Built on [`s3_event_core`].
//!
//! - [`QueueStore`]: the durable on-disk queue behind a target's `queue_dir`.
//! - [`Notifier`]: routes records to targets through per-target queues.
//! - [`NotifyConfig`]: MinIO-compatible target configuration (JSON and
//!   `MINIO_NOTIFY_*` environment variables) to targets and a notifier.
//! - `webhook` (feature `webhook`): the webhook target, MinIO-compatible,
//!   with HMAC-SHA256 signatures.
//! - `redis` (feature `redis`): MinIO's Redis target (`namespace` hash or
//!   `access` list), pipelined batches.
//! - `postgres` (feature `postgres`): MinIO's PostgreSQL target (type
//!   `postgresql`; `namespace` or `access` table), a statement or a
//!   transaction per batch.
//! - `mysql` (feature `mysql`): MinIO's MySQL target (Go-driver DSN;
//!   `namespace` or `access` table), a transaction per batch; tested on
//!   MariaDB.
//! - `elasticsearch` (feature `elasticsearch`): MinIO's Elasticsearch
//!   target (also OpenSearch; `namespace` or `access` documents), one
//!   `_bulk` request per batch; tested against an OpenSearch-API emulator.
//! - `amqp` (feature `amqp`): the AMQP 0-9-1 (RabbitMQ) target, with
//!   publisher confirms.
//! - `kafka` (feature `kafka`): the Kafka target (rskafka), keyed
//!   `bucket/object`.
//! - `mqtt` (feature `mqtt`): the MQTT 3.1.1 target, QoS 0, 1 or 2.
//! - `nats` (feature `nats`): the NATS target, core NATS or JetStream.
//! - `nsq` (feature `nsq`): the NSQ target (`PUB`/`MPUB` over nsqd's TCP
//!   protocol), tested against an emulator of the protocol only.
//! - `conformance` (feature `conformance`, and in this crate's tests): the
//!   shared suite every target's tests run (`publishes`, `preserves_order`,
//!   `survives_target_restart`, `dead_letters_poison`, ...).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub use s3_event_core as core;

#[cfg(feature = "amqp")]
#[cfg_attr(docsrs, doc(cfg(feature = "amqp")))]
pub mod amqp;
#[cfg(all(test, feature = "integration"))]
mod broker_tests;
pub mod config;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(any(
    feature = "redis",
    feature = "postgres",
    feature = "mysql",
    feature = "elasticsearch"
))]
mod db_common;
#[cfg(any(
    feature = "nats",
    feature = "amqp",
    feature = "mqtt",
    feature = "kafka",
    feature = "nsq"
))]
mod de;
#[cfg(feature = "elasticsearch")]
#[cfg_attr(docsrs, doc(cfg(feature = "elasticsearch")))]
pub mod elasticsearch;
mod error;
#[cfg(feature = "kafka")]
#[cfg_attr(docsrs, doc(cfg(feature = "kafka")))]
pub mod kafka;
#[cfg(feature = "mqtt")]
#[cfg_attr(docsrs, doc(cfg(feature = "mqtt")))]
pub mod mqtt;
#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub mod mysql;
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub mod nats;
pub mod notifier;
#[cfg(feature = "nsq")]
#[cfg_attr(docsrs, doc(cfg(feature = "nsq")))]
pub mod nsq;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
pub mod queue_store;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
#[cfg(any(
    feature = "nats",
    feature = "mqtt",
    feature = "kafka",
    feature = "postgres"
))]
mod tls;
#[cfg(feature = "webhook")]
#[cfg_attr(docsrs, doc(cfg(feature = "webhook")))]
pub mod webhook;

#[cfg(feature = "amqp")]
#[cfg_attr(docsrs, doc(cfg(feature = "amqp")))]
pub use amqp::{AmqpConfig, AmqpTarget};
pub use config::NotifyConfig;
pub use error::{Error, Result};
#[cfg(feature = "kafka")]
#[cfg_attr(docsrs, doc(cfg(feature = "kafka")))]
pub use kafka::{KafkaConfig, KafkaTarget};
#[cfg(feature = "mqtt")]
#[cfg_attr(docsrs, doc(cfg(feature = "mqtt")))]
pub use mqtt::{MqttConfig, MqttTarget};
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub use nats::{NatsConfig, NatsTarget};
pub use notifier::{
    DeadLetter, DeliveryMode, FullPolicy, Notifier, NotifierBuilder, RetryPolicy, SendOutcome,
    TargetOptions, TargetStats,
};
#[cfg(feature = "nsq")]
#[cfg_attr(docsrs, doc(cfg(feature = "nsq")))]
pub use nsq::{NsqConfig, NsqTarget};
pub use queue_store::{FsyncPolicy, QueueStore, QueueStoreOptions};
#[cfg(feature = "webhook")]
#[cfg_attr(docsrs, doc(cfg(feature = "webhook")))]
pub use webhook::{verify, VerifyError, WebhookConfig, WebhookTarget};
