//! The target conformance suite ([`crate::conformance`]) run against the
//! AMQP target and a real RabbitMQ (feature `integration`): `S3E_AMQP_URL`,
//! default `amqp://guest:guest@127.0.0.1:5672/%2f`.
//!
//! Each harness declares its own `headers` exchange and an exclusive queue
//! bound to it on `minio-bucket = conformance`, and reads the queue through
//! its own connection. The target publishes with `mandatory` and publisher
//! confirms, so an event of another bucket is unroutable: that is the
//! poison event, returned by the broker and dead-lettered.
//!
//! RabbitMQ is a shared system service that tests must not restart, and a
//! private RabbitMQ takes ~10 s to boot and its own `epmd`, so restarts are
//! simulated by a TCP proxy in front of it: stopping the proxy drops the
//! target's connection and refuses new ones, exactly what a restart looks
//! like from the client.

use super::*;
use crate::broker_tests::{decoded_key, env_or, unique, Proxy};
use crate::conformance::{self, Harness};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use std::net::ToSocketAddrs;
use std::sync::{Arc, Mutex};

fn shared_url() -> String {
    env_or("S3E_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
}

struct AmqpHarness {
    exchange: String,
    received: Arc<Mutex<Vec<String>>>,
    proxy: Option<Proxy>,
    _reader: Connection,
}

impl AmqpHarness {
    async fn new(with_proxy: bool) -> AmqpHarness {
        let url = shared_url();
        let reader = Connection::connect(&url, ConnectionProperties::default())
            .await
            .expect("the test's reader connects to RabbitMQ");
        let ch = reader.create_channel().await.unwrap();
        let exchange = unique("s3e-test");
        ch.exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Headers,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        let q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut bind = FieldTable::default();
        bind.insert("x-match".into(), AMQPValue::LongString("all".into()));
        bind.insert(
            "minio-bucket".into(),
            AMQPValue::LongString("conformance".into()),
        );
        ch.queue_bind(
            q.name().clone(),
            exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            bind,
        )
        .await
        .unwrap();
        let mut consumer = ch
            .basic_consume(
                q.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let received: Arc<Mutex<Vec<String>>> = Arc::default();
        let r = received.clone();
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                if let Some(k) = decoded_key(&d.data) {
                    r.lock().unwrap().push(k);
                }
            }
        });
        let proxy = if with_proxy {
            let upstream = url
                .parse::<lapin::uri::AMQPUri>()
                .map(|u| format!("{}:{}", u.authority.host, u.authority.port))
                .unwrap()
                .to_socket_addrs()
                .unwrap()
                .next()
                .unwrap();
            Some(Proxy::start(upstream).await)
        } else {
            None
        };
        AmqpHarness {
            exchange,
            received,
            proxy,
            _reader: reader,
        }
    }

    fn config(&self) -> AmqpConfig {
        let url = match &self.proxy {
            Some(p) => {
                let mut u: lapin::uri::AMQPUri = shared_url().parse().unwrap();
                u.authority.host = "127.0.0.1".into();
                u.authority.port = p.port();
                format!(
                    "amqp://{}:{}@127.0.0.1:{}/{}",
                    u.authority.userinfo.username,
                    u.authority.userinfo.password,
                    p.port(),
                    if u.vhost == "/" {
                        "%2f".to_owned()
                    } else {
                        u.vhost.clone()
                    }
                )
            }
            None => shared_url(),
        };
        AmqpConfig {
            exchange_type: Some("headers".into()),
            auto_deleted: true,
            mandatory: true,
            delivery_mode: Some(2),
            ..AmqpConfig::new(url, self.exchange.clone(), "")
        }
    }
}

#[async_trait]
impl Harness for AmqpHarness {
    fn target(&self) -> Arc<dyn Target> {
        let id: TargetId = "arn:minio:sqs::conformance:amqp".parse().unwrap();
        Arc::new(AmqpTarget::new(id, self.config()).unwrap())
    }

    async fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    async fn stop_server(&self) {
        if let Some(p) = &self.proxy {
            p.stop().await;
        }
    }

    async fn start_server(&self) {
        if let Some(p) = &self.proxy {
            p.start_again().await;
        }
    }

    fn supports_restart(&self) -> bool {
        self.proxy.is_some()
    }

    /// An event of another bucket: no binding routes it, so the broker
    /// returns it (mandatory).
    fn poison(&self) -> Option<EventRecord> {
        let mut r = conformance::record("conformance-poison");
        r.s3.as_mut().unwrap().bucket.as_mut().unwrap().name = Some("poison".into());
        Some(r)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn run_all_direct() {
    conformance::run_all(&AmqpHarness::new(false).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn run_all_through_restartable_proxy() {
    conformance::run_all(&AmqpHarness::new(true).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_is_permanent() {
    let mut u: lapin::uri::AMQPUri = shared_url().parse().unwrap();
    let c = AmqpConfig::new(
        format!(
            "amqp://{}:WRONG-PASSWORD@{}:{}/%2f",
            u.authority.userinfo.username, u.authority.host, u.authority.port
        ),
        unique("s3e-test"),
        "",
    );
    u.authority.userinfo.password.clear();
    let t = AmqpTarget::new("arn:minio:sqs::1:amqp".parse().unwrap(), c).unwrap();
    let err = t.send(&conformance::record("k")).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(!err.to_string().contains("WRONG-PASSWORD"), "{err}");
}

/// Redeclaring an existing exchange with another type is refused by the
/// broker (`PRECONDITION_FAILED`): permanent.
#[tokio::test(flavor = "multi_thread")]
async fn exchange_type_mismatch_is_permanent() {
    let h = AmqpHarness::new(false).await;
    let c = AmqpConfig {
        exchange_type: Some("fanout".into()),
        auto_deleted: true,
        ..AmqpConfig::new(shared_url(), h.exchange.clone(), "")
    };
    let t = AmqpTarget::new("arn:minio:sqs::1:amqp".parse().unwrap(), c).unwrap();
    let err = t.send(&conformance::record("k")).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("PRECONDITION_FAILED"), "{err}");
}
