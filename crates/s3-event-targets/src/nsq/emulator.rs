//! An in-process emulator of the nsqd TCP protocol frames the NSQ target
//! uses, for its tests (see `emulator_tests.rs`). Written from NSQ's
//! protocol documentation; not a real nsqd.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The emulator's `--max-msg-size`.
pub(crate) const MAX_MSG_SIZE: usize = 1 << 20;

/// A message the emulator accepted.
#[derive(Clone, Debug)]
pub(crate) struct Emulated {
    pub topic: String,
    pub body: Vec<u8>,
}

#[derive(Default)]
struct Log {
    messages: Vec<Emulated>,
    commands: Vec<String>,
}

/// The emulator, on a fixed loopback port; can be stopped (listener and
/// connections closed) and started again on the same port.
pub(crate) struct EmulatorServer {
    port: u16,
    log: Arc<Mutex<Log>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The decoded object key of a MinIO envelope body with one record.
pub(crate) fn decoded_key(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let raw = v["Records"][0]["s3"]["object"]["key"].as_str()?;
    s3_event_core::decode_key(raw).ok()
}

async fn frame(s: &mut BufReader<TcpStream>, kind: u32, data: &[u8]) -> std::io::Result<()> {
    let mut f = Vec::with_capacity(8 + data.len());
    f.extend_from_slice(&(4 + data.len() as u32).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.extend_from_slice(data);
    s.get_mut().write_all(&f).await
}

async fn read_sized(s: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let n = s.read_u32().await? as usize;
    let mut b = vec![0; n];
    s.read_exact(&mut b).await?;
    Ok(b)
}

/// Serves one connection; returns when it closes or breaks the protocol.
async fn serve(stream: TcpStream, log: Arc<Mutex<Log>>) -> std::io::Result<()> {
    let mut s = BufReader::new(stream);
    let mut magic = [0u8; 4];
    s.read_exact(&mut magic).await?;
    if &magic != b"  V2" {
        return Ok(());
    }
    let mut heartbeat_sent = false;
    loop {
        let mut line = String::new();
        if s.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let line = line.trim_end_matches('\n').to_owned();
        let mut parts = line.split(' ');
        let verb = parts.next().unwrap_or_default();
        let topic = parts.next().unwrap_or_default().to_owned();
        let mut messages = Vec::new();
        match verb {
            "NOP" => {
                log.lock().unwrap().commands.push(line);
                continue;
            }
            "IDENTIFY" => {
                read_sized(&mut s).await?;
            }
            "PUB" => messages.push(read_sized(&mut s).await?),
            "MPUB" => {
                let body = read_sized(&mut s).await?;
                let mut at = 4;
                let n = u32::from_be_bytes(body[0..4].try_into().unwrap_or_default());
                for _ in 0..n {
                    let len = u32::from_be_bytes(body[at..at + 4].try_into().unwrap_or_default())
                        as usize;
                    messages.push(body[at + 4..at + 4 + len].to_vec());
                    at += 4 + len;
                }
            }
            _ => {
                frame(&mut s, 1, b"E_INVALID invalid command").await?;
                return Ok(());
            }
        }
        log.lock().unwrap().commands.push(if verb == "MPUB" {
            format!("{line} {}", messages.len())
        } else {
            line.clone()
        });
        if !heartbeat_sent {
            // As nsqd's heartbeat: the client must answer NOP.
            frame(&mut s, 0, b"_heartbeat_").await?;
            heartbeat_sent = true;
        }
        if messages.iter().any(|m| m.len() > MAX_MSG_SIZE) {
            let text = format!("E_BAD_MESSAGE {verb} message too big > {MAX_MSG_SIZE}");
            frame(&mut s, 1, text.as_bytes()).await?;
            return Ok(());
        }
        {
            let mut l = log.lock().unwrap();
            for body in messages {
                l.messages.push(Emulated {
                    topic: topic.clone(),
                    body,
                });
            }
        }
        frame(&mut s, 0, b"OK").await?;
    }
}

impl EmulatorServer {
    pub(crate) async fn start() -> EmulatorServer {
        let s = EmulatorServer {
            port: std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free loopback port"),
            log: Arc::default(),
            task: Mutex::new(None),
        };
        s.start_again().await;
        s
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn messages(&self) -> Vec<Emulated> {
        self.log.lock().unwrap().messages.clone()
    }

    pub(crate) fn commands(&self) -> Vec<String> {
        self.log.lock().unwrap().commands.clone()
    }

    pub(crate) async fn start_again(&self) {
        if self.task.lock().unwrap().is_some() {
            return;
        }
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if tries < 200 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("emulator cannot rebind {}: {e}", self.port),
            }
        };
        let log = self.log.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        conns.spawn(serve(stream, log.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }

    pub(crate) async fn stop(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
    }
}
