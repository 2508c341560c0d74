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
