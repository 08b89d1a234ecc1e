//! Containers for real, with podman: meshgate's images built once per test run from the binaries
//! `make build` made ([`images`]), single containers ([`Container`]) and compose projects
//! ([`Compose`]) that are removed on drop, even when the test fails.
//!
//! A run that is killed (Ctrl-C, SIGKILL, a CI timeout) runs no `Drop`, and its host-network
//! containers would hold Envoy's fixed ports for every later run. So every container, pod and
//! project is named [`owned`] (`meshgate-it-<pid>-...`), and the first use of podman in a run
//! removes whatever carries the prefix but belongs to no live process ([`remove_leftovers`]).
//!
//! podman runs with the repository's `envoy/containers.conf` (runc, lowered ulimits, host
//! networking) unless `CONTAINERS_CONF` names another; `podman-compose` is `.venv`'s
//! (`MESHGATE_PODMAN_COMPOSE` overrides it). Images are tagged [`TAG`], apart from what a user
//! builds with `make image` / `make compose`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::paths;

/// The tag of the images the tests build (`meshgate:it`, `meshgate-dev:it`, ...).
pub const TAG: &str = "it";

/// What every container, pod and compose project the tests create is named after.
pub const PREFIX: &str = "meshgate-it";

/// `meshgate-it-<pid>-<what>`: a name owned by this process, which the next run removes once the
/// process is gone.
pub fn owned(what: &str) -> String {
    format!("{PREFIX}-{}-{what}", std::process::id())
}

/// Removes the containers and pods named `meshgate-it*` (podman-compose's pods are
/// `pod_<project>`) that no live process owns: those of killed runs, or named without a pid.
/// Returns their names. Those of this process and of concurrent runs stay.
pub fn remove_leftovers() -> Vec<String> {
    let mut removed = Vec::new();
    // Pods first: removing a pod removes its containers, the infra container (which carries no
    // compose label) among them.
    for pod in podman_ok(&["pod", "ps", "--format", "{{.Name}}"]).lines() {
        if pod.strip_prefix("pod_").is_some_and(left_behind) {
            let _ = podman().args(["pod", "rm", "-f", "-t", "0", pod]).output();
            removed.push(pod.to_string());
        }
    }
    for name in podman_ok(&["ps", "-a", "--format", "{{.Names}}"]).lines() {
        if left_behind(name) {
            let _ = podman().args(["rm", "-f", "-t", "0", name]).output();
            removed.push(name.to_string());
        }
    }
    removed
}

/// Whether `name` is a test's (`meshgate-it`, then nothing or `-`/`_`) whose owning process,
/// the pid after the prefix, is gone (or never was named).
fn left_behind(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return false;
    };
    if !(rest.is_empty() || rest.starts_with(['-', '_'])) {
        return false;
    }
    let digits: String = rest
        .trim_start_matches('-')
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    match digits.parse::<u32>() {
        Ok(pid) => pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists(),
        Err(_) => true,
    }
}

/// [`remove_leftovers`], once per process, before the first container of the run.
fn remove_leftovers_once() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let removed = remove_leftovers();
        if !removed.is_empty() {
            eprintln!("podman: removed what a killed run left: {removed:?}");
        }
    });
}

/// `podman` with the repository's containers.conf.
pub fn podman() -> Command {
    let mut command = Command::new("podman");
    with_conf(&mut command);
    command
}

/// Runs a command and returns its output, failing the test with it unless it exits 0.
pub fn run_ok(mut command: Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e} (make setup installs podman)"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `podman ARGS`, failing the test unless it exits 0; returns stdout.
pub fn podman_ok(args: &[&str]) -> String {
    let mut command = podman();
    command.args(args);
    run_ok(command)
}

/// Builds the base image if missing and meshgate's images tagged [`TAG`] from `target/debug`
/// (envoy/images/build.sh), once per process; returns how long that took.
pub fn images() -> Duration {
    static BUILT: OnceLock<Duration> = OnceLock::new();
    *BUILT.get_or_init(|| {
        remove_leftovers_once();
        let start = Instant::now();
        let repo = paths::repo_root();
        let mut base = Command::new("bash");
        base.arg(repo.join("envoy/images/base.sh"));
        with_conf(&mut base);
        run_ok(base);
        let mut build = Command::new("bash");
        build
            .arg(repo.join("envoy/images/build.sh"))
            .args(["webhook", "envoy", "dev", "redis", "registry"])
            .env("TAG", TAG)
            .env("MESHGATE_BIN", crate::webhook::meshgate_binary());
        with_conf(&mut build);
        run_ok(build);
        start.elapsed()
    })
}

/// Points `CONTAINERS_CONF` at the repository's containers.conf unless the environment names one.
fn with_conf(command: &mut Command) {
    if std::env::var_os("CONTAINERS_CONF").is_none() {
        command.env(
            "CONTAINERS_CONF",
            paths::repo_root().join("envoy/containers.conf"),
        );
    }
}

/// A running container, removed (`podman rm -f`) on drop.
pub struct Container {
    name: String,
}

impl Container {
    /// `podman run -d --name NAME ARGS` (ARGS end with the image and its arguments); NAME is
    /// [`owned`]`(what)`.
    pub fn run(what: &str, args: &[String]) -> Container {
        remove_leftovers_once();
        let name = owned(what);
        let _ = podman().args(["rm", "-f", "-t", "0", &name]).output();
        // The guard exists before the container does: a `run` that creates it and then fails to
        // start it still has it removed.
        let container = Container { name };
        let mut command = podman();
        command
            .args(["run", "-d", "--name", &container.name])
            .args(args);
        run_ok(command);
        container
    }

    /// The container's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `podman inspect --format FORMAT`.
    pub fn inspect(&self, format: &str) -> String {
        podman_ok(&["inspect", "--format", format, &self.name])
            .trim()
            .to_string()
    }

    /// The container's log (stdout and stderr).
    pub fn logs(&self) -> String {
        logs(&self.name)
    }

    /// Fails the test with the container's log if it has stopped (a probe need not wait out
    /// its timeout for a process that is gone).
    pub fn assert_running(&self) {
        assert_eq!(
            self.inspect("{{.State.Running}}"),
            "true",
            "{} stopped:\n{}",
            self.name,
            self.logs()
        );
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "0", &self.name]).output();
    }
}

/// A container's log (stdout and stderr), or why it could not be read.
pub fn logs(name: &str) -> String {
    match podman().args(["logs", name]).output() {
        Ok(Output { stdout, stderr, .. }) => format!(
            "{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
        Err(e) => format!("podman logs {name}: {e}"),
    }
}

/// A compose project brought up with `podman-compose`; brought down on drop, and any container
/// left with its label removed, and its pod.
pub struct Compose {
    project: String,
    file: PathBuf,
    env: Vec<(String, String)>,
    profiles: Vec<String>,
    down: bool,
}

impl Compose {
    /// `podman-compose -p PROJECT -f FILE [--profile P]... up -d` with `env` set, PROJECT being
    /// [`owned`]`(what)`, waiting for nothing (the caller probes the services it needs).
    pub fn up(what: &str, file: &Path, profiles: &[&str], env: &[(&str, &str)]) -> Compose {
        remove_leftovers_once();
        let compose = Compose {
            project: owned(what),
            file: file.to_path_buf(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            profiles: profiles.iter().map(|p| p.to_string()).collect(),
            down: false,
        };
        let mut command = compose.command();
        command.args(["up", "-d"]);
        run_ok(command);
        compose
    }

    fn command(&self) -> Command {
        let binary = std::env::var_os("MESHGATE_PODMAN_COMPOSE")
            .map(PathBuf::from)
            .unwrap_or_else(|| paths::repo_root().join(".venv/bin/podman-compose"));
        let mut command = Command::new(binary);
        with_conf(&mut command);
        command.args(["-p", &self.project, "-f"]).arg(&self.file);
        for profile in &self.profiles {
            command.args(["--profile", profile]);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// The project's containers (running or not), by name.
    pub fn containers(&self) -> Vec<String> {
        let label = format!("label=io.podman.compose.project={}", self.project);
        podman_ok(&["ps", "-a", "--filter", &label, "--format", "{{.Names}}"])
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Fails the test with the project's logs if one of its containers has stopped.
    pub fn assert_running(&self) {
        let label = format!("label=io.podman.compose.project={}", self.project);
        let stopped = podman_ok(&[
            "ps",
            "-a",
            "--filter",
            &label,
            "--filter",
            "status=exited",
            "--format",
            "{{.Names}}",
        ]);
        assert!(
            stopped.trim().is_empty(),
            "stopped: {}\n{}",
            stopped.trim(),
            self.logs()
        );
    }

    /// The logs of every container of the project, for a failure message.
    pub fn logs(&self) -> String {
        self.containers()
            .iter()
            .map(|name| {
                let log = logs(name);
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {name}\n{}", tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `podman-compose down`; returns the containers, and the pod, still there afterwards (none
    /// expected).
    pub fn down(&mut self) -> Vec<String> {
        self.down = true;
        let mut command = self.command();
        command.args(["down", "-t", "2"]);
        let _ = command.output();
        let mut left = self.containers();
        let pod = format!("pod_{}", self.project);
        if podman()
            .args(["pod", "exists", &pod])
            .status()
            .is_ok_and(|s| s.success())
        {
            left.push(pod);
        }
        left
    }

    /// Removes the project's containers and its pod (`pod_PROJECT`), whatever `down` left.
    fn remove_all(&self) {
        for name in self.containers() {
            let _ = podman().args(["rm", "-f", "-t", "0", &name]).output();
        }
        let pod = format!("pod_{}", self.project);
        let _ = podman().args(["pod", "rm", "-f", "-t", "0", &pod]).output();
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if !self.down {
            let _ = self.down();
        }
        self.remove_all();
    }
}

/// Fails the test, naming the port, unless every port in `ports` is free on 127.0.0.1.
pub fn require_free(ports: &[u16], what: &str) {
    for &port in ports {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            panic!(
                "port {port} on 127.0.0.1 is in use: {what} needs ports {ports:?} free (stop \
                 `make run` or another stack)"
            );
        }
    }
}

/// Polls `probe` every 200 ms until it holds or `timeout` passes; the error says what was
/// awaited.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if probe() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("{what}: not ready after {timeout:?}"))
}

/// Posts an AdmissionReview wrapping `request` to `url`/validate and returns its `response`,
/// checking it is an admission.k8s.io/v1 AdmissionReview echoing the uid (as
/// [`crate::Webhook::review`] does for the process).
pub fn review(client: &reqwest::blocking::Client, url: &str, request: &Json) -> Json {
    let response = client
        .post(format!("{url}/validate"))
        .header("content-type", "application/json")
        .body(crate::webhook::review_of(request).to_string())
        .send()
        .unwrap_or_else(|e| panic!("POST {url}/validate: {e}"));
    let status = response.status().as_u16();
    let body = response.text().unwrap_or_default();
    crate::webhook::response_of(status, &body, request)
}
