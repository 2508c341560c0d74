//! The target conformance suite ([`crate::conformance`]) run against the
//! Kafka target and the tansu broker (feature `integration`).
//!
//! - Shared broker: `S3E_KAFKA_BROKERS`, default `127.0.0.1:19092` (started
//!   by `scripts/services.sh tansu`).
//! - Restarts: a private tansu on a free port (`S3E_TANSU`, default the
//!   binary named in `/tmp/s3-event-services/tansu.bin`) that advertises
//!   the port of a TCP proxy in front of it, so every connection (bootstrap
//!   and partition leaders alike) goes through the proxy. Stopping the proxy
//!   cuts the target off exactly as a broker restart would, while the
//!   broker keeps its in-memory log, so what was acknowledged before stays
//!   readable. (tansu's persistent storage engines need S3 or PostgreSQL
//!   set up for it.)
//!
//! Events are read back through a separate client that fetches each
//! partition directly from its last offset (no consumer group, whose first
//! assignment takes ~23 s on tansu). The suite compares arrival order across
//! all keys, which only one partition preserves, so its topics have one
//! partition; `partitions_by_key` checks the keyed partitioning on three.
//!
//! tansu accepts any record, so `dead_letters_poison` is skipped.

use super::*;
use crate::broker_tests::{decoded_key, env_or, free_port, unique, PrivateServer, Proxy};
use crate::conformance::{self, Harness};
use std::net::ToSocketAddrs;

fn shared_brokers() -> String {
    env_or("S3E_KAFKA_BROKERS", "127.0.0.1:19092")
}

fn tansu_bin() -> String {
    std::env::var("S3E_TANSU").unwrap_or_else(|_| {
        std::fs::read_to_string("/tmp/s3-event-services/tansu.bin")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "tansu".into())
    })
}

async fn client(brokers: &str) -> Client {
    ClientBuilder::new(vec![brokers.to_owned()])
        .backoff_config(BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            base: 2.0,
            deadline: Some(Duration::from_secs(2)),
        })
        .build()
        .await
        .expect("the test's client connects to the Kafka broker")
}

async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let c = client(brokers).await;
    c.controller_client()
        .unwrap()
        .create_topic(topic, partitions, 1, 5_000)
        .await
        .expect("the test creates its topic");
    // Wait until the metadata lists every partition.
    for _ in 0..100 {
        if let Ok(topics) = c.list_topics().await {
            if topics
                .iter()
                .any(|t| t.name == topic && t.partitions.len() == partitions as usize)
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("topic {topic} did not appear");
}

/// A record read back: partition, message key, decoded object key, and
/// the record's `eventTime`.
type Seen = (i32, String, String, String);

/// The reader's client (rebuilt after a failure), next offset per
/// partition, and what it read so far.
type ReaderState = (Option<Client>, HashMap<i32, i64>, Vec<Seen>);

/// Records read back from one topic.
struct Reader {
    brokers: String,
    topic: String,
    partitions: i32,
    state: tokio::sync::Mutex<ReaderState>,
}

impl Reader {
    async fn read(&self) -> Vec<Seen> {
        let mut guard = self.state.lock().await;
        let (client_slot, offsets, seen) = &mut *guard;
        if client_slot.is_none() {
            let built = ClientBuilder::new(vec![self.brokers.clone()])
                .backoff_config(BackoffConfig {
                    init_backoff: Duration::from_millis(50),
                    max_backoff: Duration::from_millis(200),
                    base: 2.0,
                    deadline: Some(Duration::from_millis(500)),
                })
                .build()
                .await;
            match built {
                Ok(c) => *client_slot = Some(c),
                Err(_) => return seen.clone(),
            }
        }
        let c = client_slot.as_ref().unwrap();
        for p in 0..self.partitions {
            let Ok(pc) = c
                .partition_client(self.topic.clone(), p, UnknownTopicHandling::Retry)
                .await
            else {
                *client_slot = None;
                return seen.clone();
            };
            loop {
                let from = *offsets.get(&p).unwrap_or(&0);
                match pc.fetch_records(from, 1..1_000_000, 10).await {
                    Ok((records, _high)) if !records.is_empty() => {
                        for r in records {
                            let key = String::from_utf8(r.record.key.unwrap_or_default())
                                .unwrap_or_default();
                            let value = r.record.value.unwrap_or_default();
                            let object = decoded_key(&value).unwrap_or_default();
                            let time = serde_json::from_slice::<serde_json::Value>(&value)
                                .ok()
                                .and_then(|v| {
                                    v["Records"][0]["eventTime"].as_str().map(String::from)
                                })
                                .unwrap_or_default();
                            seen.push((p, key, object, time));
                            offsets.insert(p, r.offset + 1);
                        }
                    }
                    Ok(_) => break,
                    Err(_) => {
                        *client_slot = None;
                        return seen.clone();
                    }
                }
            }
        }
        seen.clone()
    }
}

struct KafkaHarness {
    brokers: String,
    topic: String,
    reader: Reader,
    proxy: Option<Proxy>,
    _server: Option<PrivateServer>,
}

impl KafkaHarness {
    async fn shared(partitions: i32) -> KafkaHarness {
        let brokers = shared_brokers();
        let topic = unique("s3e-test");
        create_topic(&brokers, &topic, partitions).await;
        KafkaHarness {
            reader: Reader {
                brokers: brokers.clone(),
                topic: topic.clone(),
                partitions,
                state: tokio::sync::Mutex::new((None, HashMap::new(), Vec::new())),
            },
            brokers,
            topic,
            proxy: None,
            _server: None,
        }
    }

    async fn private() -> KafkaHarness {
        let port = free_port();
        let proxy_port = free_port();
        let server = PrivateServer::start(
            tansu_bin(),
            vec![
                "broker".into(),
                "--listener-url".into(),
                format!("tcp://127.0.0.1:{port}"),
                "--advertised-listener-url".into(),
                format!("tcp://127.0.0.1:{proxy_port}"),
                "--storage-engine".into(),
                "memory://tansu/".into(),
            ],
            port,
            None,
        );
        let upstream = ("127.0.0.1", port)
            .to_socket_addrs()
            .unwrap()
            .next()
            .unwrap();
        let proxy = Proxy::start_on(proxy_port, upstream).await;
        let brokers = format!("127.0.0.1:{proxy_port}");
        let topic = unique("s3e-test");
        create_topic(&brokers, &topic, 1).await;
        KafkaHarness {
            reader: Reader {
                brokers: brokers.clone(),
                topic: topic.clone(),
                partitions: 1,
                state: tokio::sync::Mutex::new((None, HashMap::new(), Vec::new())),
            },
            brokers,
            topic,
            proxy: Some(proxy),
            _server: Some(server),
        }
    }
}

#[async_trait]
impl Harness for KafkaHarness {
    fn target(&self) -> Arc<dyn Target> {
        let id: TargetId = "arn:minio:sqs::conformance:kafka".parse().unwrap();
        let c = KafkaConfig {
            compression_codec: Some("snappy".into()),
            ..KafkaConfig::new(self.brokers.clone(), self.topic.clone())
        };
        Arc::new(KafkaTarget::new(id, c).unwrap())
    }

    async fn received(&self) -> Vec<String> {
        self.reader
            .read()
            .await
            .into_iter()
            .map(|(_, _, o, _)| o)
            .collect()
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

    fn poison(&self) -> Option<EventRecord> {
        None
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn run_all_shared_broker() {
    conformance::run_all(&KafkaHarness::shared(1).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn run_all_private_broker_behind_restartable_proxy() {
    conformance::run_all(&KafkaHarness::private().await).await;
}

/// On three partitions: every record is keyed `bucket/object`, lands in
/// the partition [`partition_for_key`] names, and one object's events (five
/// rounds, told apart by `eventTime`) keep their order.
#[tokio::test(flavor = "multi_thread")]
async fn partitions_by_key() {
    let h = KafkaHarness::shared(3).await;
    let t = h.target();
    let mut events = Vec::new();
    for round in 0..5 {
        for object in 0..12 {
            let mut r = conformance::record(&format!("obj{object}"));
            r.event_time = Some(format!("round-{round}"));
            events.push(r);
        }
    }
    t.send_batch(&events).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let got = loop {
        let got = h.reader.read().await;
        if got.len() >= events.len() || std::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(got.len(), events.len(), "{got:?}");
    let mut used = std::collections::HashSet::new();
    for (p, key, object, _) in &got {
        assert_eq!(key, &format!("conformance/{object}"));
        assert_eq!(*p, partition_for_key(key.as_bytes(), 3), "{key}");
        used.insert(*p);
    }
    assert!(used.len() > 1, "12 objects all hashed to one partition");
    for object in 0..12 {
        let rounds: Vec<&str> = got
            .iter()
            .filter(|(_, _, o, _)| *o == format!("obj{object}"))
            .map(|(_, _, _, t)| t.as_str())
            .collect();
        assert_eq!(
            rounds,
            ["round-0", "round-1", "round-2", "round-3", "round-4"],
            "obj{object}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_topic_is_permanent() {
    let c = KafkaConfig::new(shared_brokers(), unique("s3e-missing"));
    let t = KafkaTarget::new("arn:minio:sqs::1:kafka".parse().unwrap(), c).unwrap();
    let err = t.send(&conformance::record("k")).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
}
