//! Debian's `docker-registry` (the CNCF distribution registry) on a free loopback port.

use std::process::Command;
use std::time::Duration;

use crate::{Process, ports};

/// A running OCI registry with its storage in a temporary directory; killed on drop.
pub struct Registry {
    process: Process,
    port: u16,
    _dir: tempfile::TempDir,
}

/// Where Debian installs the registry binary; `MESHGATE_REGISTRY` overrides it.
fn registry_binary() -> String {
    std::env::var("MESHGATE_REGISTRY").unwrap_or_else(|_| "/usr/bin/docker-registry".into())
}

impl Registry {
    /// Starts the registry and waits until `GET /v2/` answers.
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().expect("temp dir for the registry");
        let port = ports::free_port();
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            root = dir.path().join("storage").display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("writing registry config");
        let mut command = Command::new(registry_binary());
        command.arg("serve").arg(&config_path);
        let mut process =
            Process::spawn("docker-registry", command, &dir.path().join("registry.log"));
        process
            .wait_http_ok(
                &format!("http://127.0.0.1:{port}/v2/"),
                Duration::from_secs(30),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        Registry {
            process,
            port,
            _dir: dir,
        }
    }

    /// `127.0.0.1:<port>`, the registry part of an image reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's log (its access log counts the requests it served).
    pub fn log(&self) -> String {
        self.process.log()
    }
}
