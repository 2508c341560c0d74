//! The NSQ target (feature `nsq`): publishes each event as MinIO's
//! `{"EventName", "Key", "Records": [record]}` envelope to an nsqd topic
//! over NSQ's TCP protocol (`  V2`), written here from NSQ's protocol
//! documentation: `PUB` for one event, `MPUB` for a batch (one round trip),
//! each answered `OK` once nsqd has accepted the messages; heartbeats are
//! answered with `NOP`.
//!
//! Errors: nsqd's `E_BAD_MESSAGE`, `E_BAD_TOPIC`, `E_BAD_BODY` and
//! `E_INVALID` (a message over `--max-msg-size`, a bad topic) are permanent
//! with nsqd's message; `E_PUB_FAILED`/`E_MPUB_FAILED`, connection failures
//! and timeouts are transient. After any failure the connection is made
//! anew on the next call; building a target contacts nothing. TLS is not
//! implemented.
//!
//! No nsqd can be installed on the machines this crate is tested on, so
//! the tests run against an emulator of the frames above (in the test
//! module), not a real nsqd.
//!
//! ```no_run
//! use s3_event_targets::nsq::{NsqConfig, NsqTarget};
//!
//! let config = NsqConfig::new("127.0.0.1:4150", "bucketevents");
//! let target = NsqTarget::new("arn:minio:sqs::1:nsq".parse().unwrap(), config).unwrap();
//! ```

mod config;

use std::time::Duration;

use async_trait::async_trait;
use s3_event_core::{EventRecord, Notification, Target, TargetError, TargetId};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub use config::{NsqConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};

use crate::config::Timeouts;
use crate::Result;

/// Largest batch handed to [`NsqTarget::send_batch`] (one `MPUB`).
const MAX_BATCH: usize = 256;

/// The protocol magic sent first on every connection.
const MAGIC: &[u8; 4] = b"  V2";

/// Frame types.
const FRAME_RESPONSE: u32 = 0;
const FRAME_ERROR: u32 = 1;

/// Largest frame accepted from nsqd (its answers are short).
const MAX_FRAME: u32 = 1 << 20;

/// nsqd's error codes that retrying cannot fix.
const PERMANENT_ERRORS: &[&str] = &["E_BAD_MESSAGE", "E_BAD_TOPIC", "E_BAD_BODY", "E_INVALID"];

/// An NSQ [`Target`]. See the [module docs](self).
#[derive(Debug)]
pub struct NsqTarget {
    id: TargetId,
    config: NsqConfig,
    conn: tokio::sync::Mutex<Option<BufReader<TcpStream>>>,
}

/// The body of `MPUB`: message count, then each message's size and bytes.
pub(crate) fn mpub_body(messages: &[Vec<u8>]) -> Vec<u8> {
    let total: usize = 4 + messages.iter().map(|m| 4 + m.len()).sum::<usize>();
    let mut body = Vec::with_capacity(total);
    body.extend_from_slice(&(messages.len() as u32).to_be_bytes());
    for m in messages {
        body.extend_from_slice(&(m.len() as u32).to_be_bytes());
        body.extend_from_slice(m);
    }
    body
}

/// A command with a sized body: `<line>\n`, 4-byte size, body.
fn command(line: &str, body: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(line.len() + 5 + body.len());
    c.extend_from_slice(line.as_bytes());
    c.push(b'\n');
    c.extend_from_slice(&(body.len() as u32).to_be_bytes());
    c.extend_from_slice(body);
    c
}

enum Failure {
    Transient(String),
    Permanent(String),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Transient(e.to_string())
    }
}


/// Registered in `lib.rs`'s `targets!` list.
impl crate::registry::TargetType for NsqTarget {
    type Config = NsqConfig;

    fn build(
        id: TargetId,
        config: NsqConfig,
    ) -> crate::Result<std::sync::Arc<dyn s3_event_core::Target>> {
        Ok(std::sync::Arc::new(NsqTarget::new(id, config)?))
    }
}

impl NsqTarget {
    /// Validates `config` (errors name the target and the key) and builds
    /// the target. Nothing is contacted.
    pub fn new(id: TargetId, config: NsqConfig) -> Result<NsqTarget> {
        config.validate(id.id())?;
        Ok(NsqTarget {
            id,
            config,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// The configuration the target was built with.
    pub fn config(&self) -> &NsqConfig {
        &self.config
    }

    /// How long connecting may take, and one delivery attempt in all (a
    /// connection when one is needed, the command, nsqd's answer).
    pub fn timeouts(&self) -> Timeouts {
        self.config.timeouts()
    }

    /// A connection, within `connect_timeout`.
    async fn connect(&self) -> Result<BufReader<TcpStream>, Failure> {
        let limit = self.timeouts().connect;
        let connect = async {
            let mut s = TcpStream::connect(self.config.nsqd_address.as_str()).await?;
            s.set_nodelay(true)?;
            s.write_all(MAGIC).await?;
            Ok::<_, Failure>(BufReader::new(s))
        };
        tokio::time::timeout(limit, connect)
            .await
            .unwrap_or_else(|_| {
                Err(Failure::Transient(format!(
                    "connecting: timed out after {limit:?}"
                )))
            })
    }

    /// Sends `cmd` and reads frames up to its answer, answering heartbeats.
    async fn exchange(conn: &mut BufReader<TcpStream>, cmd: &[u8]) -> Result<(), Failure> {
        conn.get_mut().write_all(cmd).await?;
        loop {
            let size = conn.read_u32().await?;
            if !(4..=MAX_FRAME).contains(&size) {
                return Err(Failure::Transient(format!(
                    "bad frame size {size} from nsqd"
                )));
            }
            let kind = conn.read_u32().await?;
            let mut data = vec![0; (size - 4) as usize];
            conn.read_exact(&mut data).await?;
            let text = String::from_utf8_lossy(&data);
            match kind {
                FRAME_RESPONSE if text == "_heartbeat_" => {
                    conn.get_mut().write_all(b"NOP\n").await?;
                }
                FRAME_RESPONSE if text == "OK" => return Ok(()),
                FRAME_RESPONSE => {
                    return Err(Failure::Transient(format!(
                        "unexpected answer from nsqd: {text}"
                    )))
                }
                FRAME_ERROR => {
                    let code = text.split_whitespace().next().unwrap_or_default();
                    let message = format!("nsqd: {text}");
                    return Err(if PERMANENT_ERRORS.contains(&code) {
                        Failure::Permanent(message)
                    } else {
                        Failure::Transient(message)
                    });
                }
                // A message frame on a producer connection: ignore it.
                _ => {}
            }
        }
    }
}

#[async_trait]
impl Target for NsqTarget {
    fn id(&self) -> &TargetId {
        &self.id
    }

    /// `PUB` (one event) or `MPUB` (several), answered `OK` once nsqd has
    /// accepted every message. See the [module docs](self).
    async fn send_batch(&self, events: &[EventRecord]) -> Result<(), TargetError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut bodies = Vec::with_capacity(events.len());
        for r in events {
            bodies.push(
                Notification::minio_envelope(vec![r.clone()])
                    .map_err(|e| TargetError::permanent(&self.id, e))?
                    .to_vec(),
            );
        }
        let cmd = if bodies.len() == 1 {
            command(&format!("PUB {}", self.config.topic), &bodies[0])
        } else {
            command(&format!("MPUB {}", self.config.topic), &mpub_body(&bodies))
        };
        let mut guard = self.conn.lock().await;
        let attempt = async {
            if guard.is_none() {
                *guard = Some(self.connect().await?);
            }
            Self::exchange(guard.as_mut().expect("connected above"), &cmd).await
        };
        let limit = self.timeouts().request;
        let result = match tokio::time::timeout(limit, attempt).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Transient(format!(
                "no answer from nsqd within {limit:?}"
            ))),
        };
        match result {
            Ok(()) => Ok(()),
            Err(f) => {
                // nsqd closes the connection after a fatal error; start over.
                *guard = None;
                Err(match f {
                    Failure::Permanent(m) => TargetError::permanent(&self.id, m),
                    Failure::Transient(m) => TargetError::transient(
                        &self.id,
                        format!("{} ({})", m, self.config.nsqd_address),
                    ),
                })
            }
        }
    }

    /// Opens a connection and sends the protocol magic (as MinIO's check),
    /// bounded by 2 s. Never publishes.
    async fn is_active(&self) -> Result<bool, TargetError> {
        let probe = tokio::time::timeout(Duration::from_secs(2), self.connect()).await;
        Ok(matches!(probe, Ok(Ok(_))))
    }

    /// Closes the connection.
    async fn close(&self) -> Result<(), TargetError> {
        if let Some(mut c) = self.conn.lock().await.take() {
            let _ = c.get_mut().write_all(b"CLS\n").await;
        }
        Ok(())
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }
}

#[cfg(test)]
mod emulator;
#[cfg(test)]
mod emulator_tests;
