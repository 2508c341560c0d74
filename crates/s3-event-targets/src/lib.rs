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
//! - `sqs` (feature `sqs`): the Amazon SQS target, `SendMessageBatch` of
//!   MinIO's envelope with `EventName`/`Key` attributes, FIFO queues.
//! - `sns` (feature `sns`): the Amazon SNS target, `PublishBatch` of the
//!   same envelope and attributes, FIFO topics.
//! - `eventbridge` (feature `eventbridge`): the Amazon EventBridge target,
//!   `PutEvents` in the shape S3 itself sends, so S3 rules match.
//! - `conformance` (feature `conformance`, and in this crate's tests): the
//!   shared suite every target's tests run (`publishes`, `preserves_order`,
//!   `survives_target_restart`, `dead_letters_poison`, ...).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub use s3_event_core as core;

#[macro_use]
mod registry;

#[cfg(feature = "aws-common")]
mod aws_common;
#[cfg(all(test, feature = "integration"))]
mod broker_tests;
pub mod config;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(feature = "db-formats")]
mod db_common;
mod error;
pub mod notifier;
pub mod queue_store;
#[cfg(feature = "tls-client")]
mod tls;

// The targets: one line each (module: target, type name, cargo feature).
// See `CONTRIBUTING.md` for adding one.
targets! {
    amqp: AmqpTarget, type "amqp", feature "amqp";
    elasticsearch: ElasticsearchTarget, type "elasticsearch", feature "elasticsearch";
    eventbridge: EventBridgeTarget, type "eventbridge", feature "eventbridge";
    kafka: KafkaTarget, type "kafka", feature "kafka";
    mqtt: MqttTarget, type "mqtt", feature "mqtt";
    mysql: MySqlTarget, type "mysql", feature "mysql";
    nats: NatsTarget, type "nats", feature "nats";
    nsq: NsqTarget, type "nsq", feature "nsq";
    postgres: PostgresTarget, type "postgresql", feature "postgres";
    redis: RedisTarget, type "redis", feature "redis";
    sns: SnsTarget, type "sns", feature "sns";
    sqs: SqsTarget, type "sqs", feature "sqs";
    webhook: WebhookTarget, type "webhook", feature "webhook";
}

pub use config::NotifyConfig;
pub use error::{Error, Result};
pub use notifier::{
    DeadLetter, DeliveryMode, FullPolicy, Notifier, NotifierBuilder, RetryPolicy, SendOutcome,
    TargetOptions, TargetStats,
};
pub use queue_store::{FsyncPolicy, QueueStore, QueueStoreOptions};
