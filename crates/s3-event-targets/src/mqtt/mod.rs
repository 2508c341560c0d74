//! The MQTT 3.1.1 target (feature `mqtt`, rumqttc): publishes each event as
//! MinIO's `{"EventName", "Key", "Records": [record]}` envelope on one
//! topic.
//!
//! - QoS 1 and 2: every message of a batch is handed to the client at once
//!   and the broker's `PUBACK` (QoS 1) or `PUBCOMP` (QoS 2) of each awaited
//!   afterwards, so an event counts only once acknowledged. QoS 0: once
//!   written to the socket.
//! - One task per connection drives rumqttc's event loop and matches
//!   acknowledgements to the messages by packet id. When the connection
//!   fails, every message waiting for an acknowledgement fails (transient)
//!   and the connection is made anew on the next call, so nothing is
//!   replayed behind the notifier's back.
//!
//! Errors: a `CONNACK` refusing the credentials (`bad user name or
//! password`, `not authorized`) is permanent; connection failures, lost
//! connections and missing acknowledgements are transient. The first
//! connection is made on first use: building a target contacts nothing.
//!
//! ```no_run
//! use s3_event_targets::mqtt::{MqttConfig, MqttTarget};
//!
//! let config = MqttConfig::new("tcp://127.0.0.1:1883", "minio/events", 1);
//! let target = MqttTarget::new("arn:minio:sqs::1:mqtt".parse().unwrap(), config).unwrap();
//! ```

mod config;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Outgoing,
    Packet, QoS, TlsConfiguration, Transport,
};
use s3_event_core::{EventRecord, Notification, Target, TargetError, TargetId};
use tokio::sync::oneshot;

pub use config::{
    MqttConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEP_ALIVE, DEFAULT_REQUEST_TIMEOUT,
};

use crate::config::Timeouts;
use crate::error::describe;
use crate::{Error, Result};

/// Largest batch handed to [`MqttTarget::send_batch`].
const MAX_BATCH: usize = 256;

/// How long `is_active` waits for the broker's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Most QoS 1/2 messages unacknowledged at once. Observed with Mosquitto
/// 2.0 (default `max_inflight_messages` 20): with 256 QoS 2 messages in
/// flight, those past the first 20 were completed (`PUBCOMP`) but never
/// delivered to subscribers. 20 keeps within that default.
const INFLIGHT: u16 = 20;

/// The largest MQTT packet (the protocol's limit, 256 MiB).
const MAX_PACKET: usize = 268_435_455;

/// An MQTT [`Target`]. See the [module docs](self).
pub struct MqttTarget {
    id: TargetId,
    config: MqttConfig,
    broker: config::Broker,
    qos: QoS,
    tls: Option<Arc<rustls::ClientConfig>>,
    conn: tokio::sync::Mutex<Option<Conn>>,
    last_failure: Mutex<Option<Instant>>,
}

impl fmt::Debug for MqttTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttTarget")
            .field("id", &self.id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What a waiter waits for: a publish's or an unsubscribe's acknowledgement.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Publish,
    Unsubscribe,
}

type Waiter = oneshot::Sender<std::result::Result<(), String>>;

/// The state shared with the event-loop task.
#[derive(Default)]
struct Shared {
    /// Waiters in the order their requests were handed to the client; the
    /// event loop sends requests in that order.
    queued: VecDeque<(Kind, Waiter)>,
    /// Waiters of requests sent, by packet id.
    sent: HashMap<(Kind, u16), Waiter>,
    /// Why the connection ended, once it has.
    dead: Option<String>,
}

impl Shared {
    fn fail_all(&mut self, why: &str) {
        for (_, w) in self.queued.drain(..) {
            let _ = w.send(Err(why.to_owned()));
        }
        for (_, w) in self.sent.drain() {
            let _ = w.send(Err(why.to_owned()));
        }
        self.dead.get_or_insert_with(|| why.to_owned());
    }
}

struct Conn {
    client: AsyncClient,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Conn {
    fn is_dead(&self) -> bool {
        self.shared.lock().unwrap().dead.is_some()
    }

    /// Registers a waiter for the next request of `kind`.
    fn expect(&self, kind: Kind) -> oneshot::Receiver<std::result::Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        self.shared.lock().unwrap().queued.push_back((kind, tx));
        rx
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Drives the event loop: matches acknowledgements to waiters; on the
/// first error fails every waiter and stops.
async fn drive(
    mut eventloop: EventLoop,
    shared: Arc<Mutex<Shared>>,
    qos: QoS,
    mut ready: Option<oneshot::Sender<std::result::Result<(), ConnectionError>>>,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Ok(()));
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let mut s = shared.lock().unwrap();
                if let Some((Kind::Publish, w)) = s.queued.pop_front() {
                    if qos == QoS::AtMostOnce {
                        let _ = w.send(Ok(()));
                    } else {
                        s.sent.insert((Kind::Publish, pkid), w);
                    }
                }
            }
            Ok(Event::Outgoing(Outgoing::Unsubscribe(pkid))) => {
                let mut s = shared.lock().unwrap();
                if let Some((Kind::Unsubscribe, w)) = s.queued.pop_front() {
                    s.sent.insert((Kind::Unsubscribe, pkid), w);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(a))) if qos == QoS::AtLeastOnce => {
                if let Some(w) = shared.lock().unwrap().sent.remove(&(Kind::Publish, a.pkid)) {
                    let _ = w.send(Ok(()));
                }
            }
            Ok(Event::Incoming(Packet::PubComp(a))) if qos == QoS::ExactlyOnce => {
                if let Some(w) = shared.lock().unwrap().sent.remove(&(Kind::Publish, a.pkid)) {
                    let _ = w.send(Ok(()));
                }
            }
            Ok(Event::Incoming(Packet::UnsubAck(a))) => {
                if let Some(w) = shared
                    .lock()
                    .unwrap()
                    .sent
                    .remove(&(Kind::Unsubscribe, a.pkid))
                {
                    let _ = w.send(Ok(()));
                }
            }
            Ok(_) => {}
            Err(e) => {
                shared
                    .lock()
                    .unwrap()
                    .fail_all(&format!("connection lost: {}", describe(&e)));
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e));
                }
                return;
            }
        }
    }
}

static CLIENT_SEQ: AtomicU64 = AtomicU64::new(0);


/// Registered in `lib.rs`'s `targets!` list.
impl crate::registry::TargetType for MqttTarget {
    type Config = MqttConfig;

    const SECRET_KEYS: &'static [&'static str] = &["password"];

    fn build(
        id: TargetId,
        config: MqttConfig,
    ) -> crate::Result<std::sync::Arc<dyn s3_event_core::Target>> {
        Ok(std::sync::Arc::new(MqttTarget::new(id, config)?))
    }
}

impl MqttTarget {
    /// Validates `config` (errors name the target and the key) and builds
    /// the target. Nothing is contacted.
    pub fn new(id: TargetId, config: MqttConfig) -> Result<MqttTarget> {
        config.validate(id.id())?;
        let err = |key: &'static str, message: String| Error::InvalidConfig {
            target: format!("mqtt {}", id.id()),
            key,
            message,
        };
        let broker = config
            .broker()
            .map_err(|e| err("broker", format!("`broker` is invalid: {e}")))?;
        let qos = match config.qos.unwrap_or(0) {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        let tls = if broker.tls {
            Some(Arc::new(
                crate::tls::client_config(&crate::tls::TlsOptions::default())
                    .map_err(|e| err("broker", e))?,
            ))
        } else {
            None
        };
        Ok(MqttTarget {
            id,
            config,
            broker,
            qos,
            tls,
            conn: tokio::sync::Mutex::new(None),
            last_failure: Mutex::new(None),
        })
    }

    /// The configuration the target was built with.
    pub fn config(&self) -> &MqttConfig {
        &self.config
    }

    /// How long connecting (up to the broker's `CONNACK`) and a batch's
    /// acknowledgements may take.
    pub fn timeouts(&self) -> Timeouts {
        self.config.timeouts()
    }

    fn connect_error(&self, e: &ConnectionError) -> TargetError {
        let message = format!(
            "connecting to {}:{}: {}",
            self.broker.host,
            self.broker.port,
            describe(e)
        );
        match e {
            ConnectionError::ConnectionRefused(
                ConnectReturnCode::BadUserNamePassword
                | ConnectReturnCode::NotAuthorized
                | ConnectReturnCode::BadClientId
                | ConnectReturnCode::RefusedProtocolVersion,
            ) => TargetError::permanent(&self.id, message),
            _ => TargetError::transient(&self.id, message),
        }
    }

    async fn connect(&self) -> Result<Conn, TargetError> {
        if let (Some(min), Some(at)) = (
            self.config.reconnect_interval,
            *self.last_failure.lock().unwrap(),
        ) {
            if at.elapsed() < min {
                return Err(TargetError::transient(
                    &self.id,
                    format!("waiting `reconnect_interval` ({min:?}) before reconnecting"),
                ));
            }
        }
        let client_id = format!(
            "s3e-{}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default(),
            CLIENT_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut o = MqttOptions::new(client_id, self.broker.host.clone(), self.broker.port);
        o.set_keep_alive(
            self.config
                .keep_alive_interval
                .filter(|k| !k.is_zero())
                .unwrap_or(DEFAULT_KEEP_ALIVE),
        );
        o.set_clean_session(true);
        o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        o.set_inflight(INFLIGHT);
        if let Some(u) = &self.config.username {
            o.set_credentials(u.clone(), self.config.password.clone().unwrap_or_default());
        }
        if let Some(tls) = &self.tls {
            o.set_transport(Transport::Tls(TlsConfiguration::Rustls(tls.clone())));
        }
        let (client, eventloop) = AsyncClient::new(o, 2 * MAX_BATCH + 8);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(drive(eventloop, shared.clone(), self.qos, Some(ready_tx)));
        let conn = Conn {
            client,
            shared,
            task,
        };
        let limit = self.timeouts().connect;
        let result = match tokio::time::timeout(limit, ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(conn),
            Ok(Ok(Err(e))) => Err(self.connect_error(&e)),
            Ok(Err(_)) => Err(TargetError::transient(
                &self.id,
                "the MQTT event loop stopped",
            )),
            Err(_) => Err(TargetError::transient(
                &self.id,
                format!("connecting: no CONNACK within {limit:?}"),
            )),
        };
        if result.is_err() {
            *self.last_failure.lock().unwrap() = Some(Instant::now());
        }
        result
    }

    async fn publish(&self, conn: &Conn, bodies: Vec<Vec<u8>>) -> Result<(), TargetError> {
        let mut acks = Vec::with_capacity(bodies.len());
        for body in bodies {
            acks.push(conn.expect(Kind::Publish));
            conn.client
                .publish(self.config.topic.clone(), self.qos, false, body)
                .await
                .map_err(|e| TargetError::transient(&self.id, format!("publish: {e}")))?;
        }
        let limit = self.timeouts().request;
        for ack in acks {
            match tokio::time::timeout(limit, ack).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(why))) => return Err(TargetError::transient(&self.id, why)),
                Ok(Err(_)) => {
                    return Err(TargetError::transient(
                        &self.id,
                        "the MQTT event loop stopped",
                    ))
                }
                Err(_) => {
                    return Err(TargetError::transient(
                        &self.id,
                        format!("no acknowledgement from the broker within {limit:?}"),
                    ))
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Target for MqttTarget {
    fn id(&self) -> &TargetId {
        &self.id
    }

    /// Publishes every event in order on `topic` at `qos`; returns once the
    /// broker acknowledged each (QoS 1/2). See the [module docs](self).
    async fn send_batch(&self, events: &[EventRecord]) -> Result<(), TargetError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut bodies = Vec::with_capacity(events.len());
        for r in events {
            let body = Notification::minio_envelope(vec![r.clone()])
                .map_err(|e| TargetError::permanent(&self.id, e))?
                .to_vec();
            if body.len() + self.config.topic.len() + 16 > MAX_PACKET {
                return Err(TargetError::permanent(
                    &self.id,
                    format!(
                        "event of {} bytes exceeds MQTT's packet size limit",
                        body.len()
                    ),
                ));
            }
            bodies.push(body);
        }
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_some_and(Conn::is_dead) {
            *guard = None;
        }
        if guard.is_none() {
            *guard = Some(self.connect().await?);
        }
        let conn = guard.as_ref().expect("connected above");
        let result = self.publish(conn, bodies).await;
        if result.is_err() {
            // A fresh connection next time: nothing half-sent is replayed.
            *guard = None;
        }
        result
    }

    /// One broker round trip (an `UNSUBSCRIBE` of a topic nobody uses,
    /// bounded by 2 s) on the open connection; with none, one attempt to
    /// connect (kept for the next send). Refused credentials are a
    /// permanent error.
    async fn is_active(&self) -> Result<bool, TargetError> {
        let mut guard = self.conn.lock().await;
        if let Some(conn) = guard.as_ref().filter(|c| !c.is_dead()) {
            let ack = conn.expect(Kind::Unsubscribe);
            let sent = conn
                .client
                .unsubscribe(format!("s3e-probe/{}", self.id.id()))
                .await;
            if sent.is_ok() {
                if let Ok(Ok(Ok(()))) = tokio::time::timeout(PROBE_TIMEOUT, ack).await {
                    return Ok(true);
                }
            }
            *guard = None;
            return Ok(false);
        }
        *guard = None;
        match self.connect().await {
            Ok(conn) => {
                *guard = Some(conn);
                Ok(true)
            }
            Err(e) if e.is_transient() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Disconnects.
    async fn close(&self) -> Result<(), TargetError> {
        if let Some(conn) = self.conn.lock().await.take() {
            let _ = conn.client.try_disconnect();
        }
        Ok(())
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }
}

#[cfg(all(test, feature = "integration"))]
mod conformance_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_keys_reach_the_connection() {
        use crate::config::client::testing::{assert_client_keys, secs};
        let keys = serde_json::json!({"broker": "tcp://127.0.0.1:1883", "topic": "t"});
        assert_client_keys(keys, secs(5, 5), |v| {
            MqttTarget::new("arn:minio:sqs::1:mqtt".parse().unwrap(), serde_json::from_value(v).unwrap())
                .unwrap()
                .timeouts()
        });
    }

    #[tokio::test]
    async fn refused_connection_is_transient() {
        let c = MqttConfig::new("tcp://127.0.0.1:1", "t", 1);
        let t = MqttTarget::new("arn:minio:sqs::1:mqtt".parse().unwrap(), c).unwrap();
        let err = t.send(&crate::conformance::record("k")).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(!t.is_active().await.unwrap());
    }

    #[test]
    fn target_debug_redacts_password() {
        let c = MqttConfig {
            username: Some("u".into()),
            password: Some("MQTT-PW".into()),
            ..MqttConfig::new("tcp://127.0.0.1:1883", "t", 1)
        };
        let t = MqttTarget::new("arn:minio:sqs::1:mqtt".parse().unwrap(), c).unwrap();
        assert!(!format!("{t:?}").contains("MQTT-PW"));
    }
}
