//! Debian's `redis-server` on a free loopback port, persisting nothing.

use std::process::Command;
use std::time::Duration;

use crate::{Process, ports};

/// A running Redis; killed on drop.
pub struct Redis {
    _process: Process,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Starts Redis (`MESHGATE_REDIS` or `redis-server` on the PATH) and waits until it accepts
    /// connections.
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().expect("temp dir for Redis");
        let port = ports::free_port();
        let binary = std::env::var("MESHGATE_REDIS")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "redis-server".into());
        let mut command = Command::new(binary);
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path());
        let mut process = Process::spawn("redis-server", command, &dir.path().join("redis.log"));
        process
            .wait_until(Duration::from_secs(20), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            })
            .unwrap_or_else(|e| panic!("{e}"));
        Redis {
            _process: process,
            port,
            _dir: dir,
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}
