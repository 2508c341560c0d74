//! Helpers shared by the broker targets' integration tests (feature
//! `integration`): private server processes on free loopback ports, and the
//! decoding of MinIO envelopes read back from a broker.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The decoded object key of a MinIO envelope body with one record.
pub(crate) fn decoded_key(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let records = v["Records"].as_array()?;
    if records.len() != 1 {
        return None;
    }
    let raw = records[0]["s3"]["object"]["key"].as_str()?;
    s3_event_core::decode_key(raw).ok()
}

/// An environment variable, or `default`.
pub(crate) fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// A unique name for a test's subject, exchange or topic.
pub(crate) fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it next).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Whether something accepts connections on 127.0.0.1:`port`.
pub(crate) fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// A server process of this test, on loopback, that can be stopped (killed)
/// and started again with the same command line. Killed on drop.
pub(crate) struct PrivateServer {
    program: String,
    args: Vec<String>,
    port: u16,
    child: Mutex<Option<Child>>,
    /// Kept for the server's data directory; removed on drop.
    _dir: Option<tempfile::TempDir>,
}

impl PrivateServer {
    /// Starts `program args…` and waits until `port` accepts connections.
    pub(crate) fn start(
        program: String,
        args: Vec<String>,
        port: u16,
        dir: Option<tempfile::TempDir>,
    ) -> PrivateServer {
        let s = PrivateServer {
            program,
            args,
            port,
            child: Mutex::new(None),
            _dir: dir,
        };
        s.start_again();
        s
    }

    /// The port the server listens on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Starts the process (when it is not running) and waits for its port.
    pub(crate) fn start_again(&self) {
        let mut child = self.child.lock().unwrap();
        if child.is_some() {
            return;
        }
        let spawned = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", self.program));
        *child = Some(spawned);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !port_open(self.port) {
            assert!(
                Instant::now() < deadline,
                "`{}` did not open port {} within 30 s",
                self.program,
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process (by its own PID) and waits for it.
    pub(crate) fn stop(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A temporary directory for a private server's data.
pub(crate) fn temp_dir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().expect("a temporary directory");
    let p = d.path().to_path_buf();
    (d, p)
}

/// A TCP proxy on a fixed loopback port in front of a shared server, for
/// restart tests against servers this test must not restart (RabbitMQ):
/// `stop` closes the listener and every proxied connection (the client sees
/// the connection drop and new connections refused), `start` listens again
/// on the same port.
pub(crate) struct Proxy {
    port: u16,
    upstream: std::net::SocketAddr,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Proxy {
    /// A proxy to `upstream`, listening on a free port.
    pub(crate) async fn start(upstream: std::net::SocketAddr) -> Proxy {
        Self::start_on(free_port(), upstream).await
    }

    /// A proxy to `upstream`, listening on `port`.
    pub(crate) async fn start_on(port: u16, upstream: std::net::SocketAddr) -> Proxy {
        let p = Proxy {
            port,
            upstream,
            task: Mutex::new(None),
        };
        p.start_again().await;
        p
    }

    /// The port clients connect to.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Listens again (when stopped).
    pub(crate) async fn start_again(&self) {
        if self.task.lock().unwrap().is_some() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("proxy rebinding {}: {e}", self.port);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("proxy cannot rebind {}: {e}", self.port),
            }
        };
        let upstream = self.upstream;
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        conns.spawn(async move {
                            if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            }
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
            // Dropping the JoinSet (when this task is aborted) aborts every
            // connection task, closing both sockets.
        });
        *self.task.lock().unwrap() = Some(task);
    }

    /// Closes the listener and every proxied connection.
    pub(crate) async fn stop(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
    }
}
