//! Shared helpers of the process tests.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The suffix of the local directory store's attributes sidecars (they sit
/// beside the objects and are not objects themselves).
pub const ATTRIBUTES: &str = ".s3e-attributes.json";

/// A command running `s3-event <subcommand>`: the binary cargo built for
/// this test.
pub fn s3_event(subcommand: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_s3-event"));
    cmd.arg(subcommand);
    cmd
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, within: Duration) {
    let deadline = Instant::now() + within;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listening on {addr} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process that is killed (SIGKILL) when dropped, so a failing test
/// leaves no server behind.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    /// Spawns `cmd`.
    pub fn spawn(cmd: &mut Command) -> Self {
        ChildGuard(Some(cmd.spawn().expect("spawn example")))
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.0.as_ref().expect("child").id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.0.take().expect("child");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().expect("wait")
    }

    /// SIGKILL, then reaps the process.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill9();
    }
}
