//! A real Envoy process started from a bootstrap template.
//!
//! Templates are ordinary Envoy YAML with placeholders:
//! - `{{port:NAME}}` — a free loopback port, the same for every use of NAME; [`Envoy::url`]
//!   gives `http://127.0.0.1:<port>` for it;
//! - `{{admin_port}}` — the admin listener's port;
//! - `{{dist}}` — the absolute path of `dist/` (built filters);
//! - `{{repo}}` — the absolute path of the repository;
//! - `{{NAME}}` — any value set with [`EnvoyBuilder::var`].
//!
//! An unreplaced placeholder is an error before Envoy starts, so a typo cannot hide.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::{Process, paths, ports};

static BASE_IDS: AtomicU32 = AtomicU32::new(0);

/// Builds and starts an [`Envoy`].
pub struct EnvoyBuilder {
    template: String,
    vars: HashMap<String, String>,
    concurrency: u32,
    log_level: String,
    component_log_level: Option<String>,
    remapped: Vec<(u16, String)>,
    remapped_to: Vec<(u16, u16)>,
    fixed_admin_port: Option<u16>,
}

/// A running Envoy; killed on drop.
pub struct Envoy {
    process: Process,
    ports: HashMap<String, u16>,
    admin_port: u16,
    config: String,
    _dir: tempfile::TempDir,
}

impl Envoy {
    /// Starts building an Envoy from a bootstrap template (see the module docs).
    pub fn builder(template: impl Into<String>) -> EnvoyBuilder {
        EnvoyBuilder {
            template: template.into(),
            vars: HashMap::new(),
            concurrency: 1,
            log_level: "info".into(),
            component_log_level: Some("wasm:debug".into()),
            remapped: Vec::new(),
            remapped_to: Vec::new(),
            fixed_admin_port: None,
        }
    }

    /// `http://127.0.0.1:<port>` of the port named `name` in the template.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}", self.port(name))
    }

    /// The port named `name` in the template.
    pub fn port(&self, name: &str) -> u16 {
        *self
            .ports
            .get(name)
            .unwrap_or_else(|| panic!("no {{{{port:{name}}}}} in the Envoy template"))
    }

    /// The admin listener's base URL.
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// All counters and gauges from `/stats`.
    pub fn stats(&self) -> BTreeMap<String, i64> {
        let text = crate::http_client()
            .get(format!("{}/stats", self.admin_url()))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("reading Envoy stats: {e}"));
        text.lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(": ")?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// One counter or gauge, 0 when Envoy has not created it (as Envoy reports unused counters).
    pub fn stat(&self, name: &str) -> i64 {
        self.stats().get(name).copied().unwrap_or(0)
    }

    /// Polls a counter or gauge until `condition` holds (Wasm filters may hand their counts to
    /// Envoy on a timer), returning its last value; panics with the log tail after 10 s.
    pub fn wait_for_stat(&self, name: &str, condition: impl Fn(i64) -> bool) -> i64 {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let value = self.stat(name);
            if condition(value) {
                return value;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "stat {name} stuck at {value}; log tail:\n{}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The last lines of Envoy's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// The bootstrap it was started with, placeholders replaced.
    pub fn config(&self) -> &str {
        &self.config
    }
}

impl EnvoyBuilder {
    /// Sets the value of a `{{name}}` placeholder.
    pub fn var(mut self, name: &str, value: impl ToString) -> Self {
        self.vars.insert(name.to_string(), value.to_string());
        self
    }

    /// Worker threads (`--concurrency`); 1 by default.
    pub fn concurrency(mut self, workers: u32) -> Self {
        self.concurrency = workers;
        self
    }

    /// Envoy's log level (`-l`); `info` by default.
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.into();
        self
    }

    /// `--component-log-level`; `wasm:debug` by default, `None` to leave Envoy's default.
    pub fn component_log_level(mut self, levels: Option<&str>) -> Self {
        self.component_log_level = levels.map(str::to_string);
        self
    }

    /// Treats the fixed port `port` of a ready-made config (e.g. one under `envoy/`) as
    /// `{{port:NAME}}`: every `port_value: PORT` and `127.0.0.1:PORT` becomes a free port, so a
    /// shipped config runs in a test beside others.
    pub fn remap_port(mut self, port: u16, name: &str) -> Self {
        self.remapped.push((port, name.to_string()));
        self
    }

    /// Points the fixed port `port` of a ready-made config at `actual`, where a test has already
    /// started the service that port stands for (an upstream, a JWKS endpoint).
    pub fn remap_port_to(mut self, port: u16, actual: u16) -> Self {
        self.remapped_to.push((port, actual));
        self
    }

    /// For a config whose admin listener has a fixed port (no `{{admin_port}}`): that port, so
    /// readiness and stats can be read.
    pub fn admin_port(mut self, port: u16) -> Self {
        self.fixed_admin_port = Some(port);
        self
    }

    /// Replaces the placeholders, allocating a free port for each `{{port:NAME}}`.
    fn render(&self) -> (String, HashMap<String, u16>, u16) {
        let mut template = self.template.clone();
        for (port, actual) in &self.remapped_to {
            template = template
                .replace(
                    &format!("port_value: {port} "),
                    &format!("port_value: {actual} "),
                )
                .replace(
                    &format!("127.0.0.1:{port}/"),
                    &format!("127.0.0.1:{actual}/"),
                );
        }
        for (port, name) in &self.remapped {
            let placeholder = if Some(*port) == self.fixed_admin_port {
                "{{admin_port}}".to_string()
            } else {
                format!("{{{{port:{name}}}}}")
            };
            template = template
                .replace(
                    &format!("port_value: {port}"),
                    &format!("port_value: {placeholder}"),
                )
                .replace(
                    &format!("127.0.0.1:{port}"),
                    &format!("127.0.0.1:{placeholder}"),
                );
        }
        let admin_port = if template.contains("{{admin_port}}") {
            ports::free_port()
        } else {
            self.fixed_admin_port.unwrap_or(0)
        };
        let mut ports: HashMap<String, u16> = HashMap::new();
        let mut out = String::with_capacity(template.len());
        let mut rest = template.as_str();
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .unwrap_or_else(|| panic!("unclosed '{{{{' in Envoy template"));
            let key = after[..end].trim();
            let value = if let Some(name) = key.strip_prefix("port:") {
                ports
                    .entry(name.to_string())
                    .or_insert_with(ports::free_port)
                    .to_string()
            } else {
                match key {
                    "admin_port" => admin_port.to_string(),
                    "dist" => paths::dist_dir().display().to_string(),
                    "repo" => paths::repo_root().display().to_string(),
                    other => self.vars.get(other).cloned().unwrap_or_else(|| {
                        panic!("Envoy template placeholder {{{{{other}}}}} has no value")
                    }),
                }
            };
            out.push_str(&value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        (out, ports, admin_port)
    }

    /// Starts Envoy and waits until its admin `/ready` answers; panics with the log tail if it
    /// does not.
    pub fn start(self) -> Envoy {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts Envoy; `Err` carries the reason and Envoy's log tail (for tests of bad config).
    pub fn try_start(self) -> Result<Envoy, String> {
        let (config, ports, admin_port) = self.render();
        let dir = tempfile::tempdir().expect("temp dir for Envoy");
        let config_path = dir.path().join("envoy.yaml");
        std::fs::write(&config_path, &config).expect("writing Envoy bootstrap");
        // Each Envoy needs its own shared-memory base id to run beside others.
        let base_id = std::process::id() % 10_000 * 100 + BASE_IDS.fetch_add(1, Ordering::Relaxed);
        let mut command = self.command(&config_path);
        command
            .arg("--base-id")
            .arg(base_id.to_string())
            .arg("--concurrency")
            .arg(self.concurrency.to_string())
            .arg("--disable-hot-restart");
        let mut process = Process::spawn("envoy", command, &dir.path().join("envoy.log"));
        let ready = format!("http://127.0.0.1:{admin_port}/ready");
        process.wait_http_ok(&ready, Duration::from_secs(60))?;
        Ok(Envoy {
            process,
            ports,
            admin_port,
            config,
            _dir: dir,
        })
    }

    /// Runs `envoy --mode validate` on the rendered bootstrap: `Ok(log)` when Envoy accepts it,
    /// `Err(log)` when it refuses.
    pub fn validate(self) -> Result<String, String> {
        let (config, _, _) = self.render();
        let dir = tempfile::tempdir().expect("temp dir for Envoy");
        let config_path = dir.path().join("envoy.yaml");
        std::fs::write(&config_path, &config).expect("writing Envoy bootstrap");
        let output = self
            .command(&config_path)
            .arg("--mode")
            .arg("validate")
            .output()
            .expect("running envoy --mode validate");
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if output.status.success() {
            Ok(log)
        } else {
            Err(log)
        }
    }

    fn command(&self, config_path: &std::path::Path) -> Command {
        let mut command = Command::new(paths::envoy_binary());
        command
            .arg("-c")
            .arg(config_path)
            .arg("-l")
            .arg(&self.log_level)
            .current_dir(paths::repo_root());
        if let Some(levels) = &self.component_log_level {
            command.arg("--component-log-level").arg(levels);
        }
        command
    }
}

/// Reads a file of the repository (e.g. a config under `envoy/`) as a template.
pub fn template_file(relative: &str) -> String {
    let path: PathBuf = paths::repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
