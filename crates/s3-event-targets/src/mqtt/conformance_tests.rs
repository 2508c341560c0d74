//! The target conformance suite ([`crate::conformance`]) run against the
//! MQTT target and a real Mosquitto (feature `integration`):
//! `S3E_MQTT_BROKER`, default `tcp://127.0.0.1:1883`.
//!
//! Each harness uses its own topic and reads it back through its own
//! connection (subscribed at QoS 1 before anything is sent). Restarts are
//! simulated by a TCP proxy between the target and the broker rather than
//! by killing a private Mosquitto: a non-persistent broker forgets its
//! subscriptions when killed, so a reader could miss events the target
//! published while the reader was resubscribing, which would test the
//! reader, not the target. The proxy drops the target's connection and
//! refuses new ones, which is what a restart looks like from the target.
//! A private Mosquitto that refuses every login checks that refused
//! credentials are permanent.
//!
//! MQTT has no per-message rejection a test can provoke (only packets over
//! 256 MiB), so `dead_letters_poison` is skipped.

use super::*;
use crate::broker_tests::{decoded_key, env_or, free_port, unique, PrivateServer, Proxy};
use crate::conformance::{self, Harness};
use std::net::ToSocketAddrs;

fn shared_broker() -> config::Broker {
    MqttConfig::new(env_or("S3E_MQTT_BROKER", "tcp://127.0.0.1:1883"), "t", 0)
        .broker()
        .expect("S3E_MQTT_BROKER is a valid broker")
}

struct MqttHarness {
    topic: String,
    qos: u8,
    received: Arc<Mutex<Vec<String>>>,
    proxy: Option<Proxy>,
    _reader: AsyncClient,
}

impl MqttHarness {
    async fn new(qos: u8, with_proxy: bool) -> MqttHarness {
        let b = shared_broker();
        let topic = unique("s3e/test");
        let mut o = MqttOptions::new(unique("s3e-reader"), b.host.clone(), b.port);
        o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        let (reader, mut eventloop) = AsyncClient::new(o, 64);
        reader
            .subscribe(topic.clone(), QoS::AtLeastOnce)
            .await
            .unwrap();
        let received: Arc<Mutex<Vec<String>>> = Arc::default();
        let r = received.clone();
        let (subscribed_tx, subscribed) = oneshot::channel();
        tokio::spawn(async move {
            let mut subscribed_tx = Some(subscribed_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Some(k) = decoded_key(&p.payload) {
                            r.lock().unwrap().push(k);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => panic!("the test's MQTT reader failed: {e}"),
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed)
            .await
            .expect("the reader subscribes within 10 s")
            .unwrap();
        let proxy = if with_proxy {
            let upstream = (b.host.as_str(), b.port)
                .to_socket_addrs()
                .unwrap()
                .next()
                .unwrap();
            Some(Proxy::start(upstream).await)
        } else {
            None
        };
        MqttHarness {
            topic,
            qos,
            received,
            proxy,
            _reader: reader,
        }
    }

    fn config(&self) -> MqttConfig {
        let broker = match &self.proxy {
            Some(p) => format!("tcp://127.0.0.1:{}", p.port()),
            None => env_or("S3E_MQTT_BROKER", "tcp://127.0.0.1:1883"),
        };
        MqttConfig::new(broker, self.topic.clone(), self.qos)
    }
}

#[async_trait]
impl Harness for MqttHarness {
    fn target(&self) -> Arc<dyn Target> {
        let id: TargetId = "arn:minio:sqs::conformance:mqtt".parse().unwrap();
        Arc::new(MqttTarget::new(id, self.config()).unwrap())
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

    fn poison(&self) -> Option<EventRecord> {
        None
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn qos1_run_all_direct() {
    conformance::run_all(&MqttHarness::new(1, false).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn qos1_run_all_through_restartable_proxy() {
    conformance::run_all(&MqttHarness::new(1, true).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn qos2_run_all_through_restartable_proxy() {
    conformance::run_all(&MqttHarness::new(2, true).await).await;
}

/// QoS 0 has no acknowledgement, so only order and arrival are checked.
#[tokio::test(flavor = "multi_thread")]
async fn qos0_publishes_in_order() {
    let h = MqttHarness::new(0, false).await;
    conformance::publishes(&h).await;
    conformance::preserves_order(&h).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_login_is_permanent() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous false\n"),
    )
    .unwrap();
    let _server = PrivateServer::start(
        env_or("S3E_MOSQUITTO", "mosquitto"),
        vec!["-c".into(), conf.to_string_lossy().into_owned()],
        port,
        Some(dir),
    );
    let c = MqttConfig {
        username: Some("nobody".into()),
        password: Some("WRONG-MQTT-PW".into()),
        ..MqttConfig::new(format!("tcp://127.0.0.1:{port}"), "t", 1)
    };
    let t = MqttTarget::new("arn:minio:sqs::1:mqtt".parse().unwrap(), c).unwrap();
    let err = t.send(&conformance::record("k")).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(!err.to_string().contains("WRONG-MQTT-PW"), "{err}");
}
