//! Running the `meshgate` CLI as users do: key pairs, push, sign, verify.

use std::path::Path;
use std::process::Command;

use crate::webhook::meshgate_binary;

/// The password test and demo keys are encrypted with.
pub const KEY_PASSWORD: &str = "meshgate-dev";

/// What a CLI run printed and how it ended.
#[derive(Debug)]
pub struct Output {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Test registries are plain HTTP on loopback: the CLI is told so, as users tell it about a
/// local registry (every registry is HTTPS otherwise).
pub const INSECURE_REGISTRIES: &str = "127.0.0.1:*";

/// Runs `meshgate ARGS` with `COSIGN_PASSWORD` set to [`KEY_PASSWORD`].
pub fn meshgate(args: &[&str]) -> Output {
    meshgate_with(args, &[("COSIGN_PASSWORD", Some(KEY_PASSWORD))])
}

/// Runs `meshgate ARGS` with `MESHGATE_INSECURE_REGISTRIES` set to [`INSECURE_REGISTRIES`]
/// and environment changes (`None` removes a variable).
pub fn meshgate_with(args: &[&str], env: &[(&str, Option<&str>)]) -> Output {
    let mut command = Command::new(meshgate_binary());
    command
        .args(args)
        .env("MESHGATE_INSECURE_REGISTRIES", INSECURE_REGISTRIES);
    for (name, value) in env {
        match value {
            Some(v) => command.env(name, v),
            None => command.env_remove(name),
        };
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", meshgate_binary().display()));
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the CLI and fails with its output unless it exits 0; returns stdout.
pub fn meshgate_ok(args: &[&str]) -> String {
    let out = meshgate(args);
    assert_eq!(out.code, 0, "meshgate {args:?} failed: {out:?}");
    out.stdout
}

/// Generates `PREFIX.key`/`PREFIX.pub` with `algorithm` (`ecdsa-p256`, `ed25519`, `rsa`)
/// unless they exist.
pub fn key_pair(prefix: &Path, algorithm: &str) {
    if prefix.with_extension("pub").is_file() {
        return;
    }
    let prefix = prefix.display().to_string();
    meshgate_ok(&[
        "generate-key-pair",
        "--output-prefix",
        &prefix,
        "--algorithm",
        algorithm,
    ]);
}

/// Pushes `wasm` to `reference` (CNCF layout) and returns its digest.
pub fn push(wasm: &Path, reference: &str) -> String {
    push_format(wasm, reference, "oci")
}

/// Pushes `wasm` to `reference` in `format` (`oci` or `istio`) and returns its digest.
pub fn push_format(wasm: &Path, reference: &str, format: &str) -> String {
    let wasm = wasm.display().to_string();
    meshgate_ok(&["push", &wasm, reference, "--format", format])
        .trim()
        .to_string()
}

/// Signs `reference` with `key` (a `.key` file); `bundle` selects the referrer form.
pub fn sign(key: &Path, reference: &str, bundle: bool) {
    let key = key.display().to_string();
    let mut args = vec!["sign", "--key", &key, reference];
    if bundle {
        args.insert(1, "--bundle");
    }
    meshgate_ok(&args);
}
