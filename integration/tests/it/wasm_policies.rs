//! Policies compiled to WebAssembly components (`make policies`), run by the webhook's wasmtime
//! host: every bound against a purpose-built misbehaving component, the on-disk cache of
//! compiled code (and what it refuses to load), policy images fetched from a real registry only
//! when signed, and the real webhook over TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshgate_admission::config::Config;
use meshgate_admission::metrics::Metrics;
use meshgate_admission::review::{Pipeline, Verdict};
use meshgate_integration::cli;
use meshgate_integration::webhook::{meshgate_binary, sample_review_of};
use meshgate_integration::{Registry, Webhook, paths};
use serde_json::{Value as Json, json};

/// A built component: `dist/policies/<name>.wasm` or `dist/test/<name>.wasm`.
fn component(path: &str) -> PathBuf {
    let path = paths::dist_dir().join(path);
    assert!(path.is_file(), "{} (run `make policies`)", path.display());
    path
}

/// A pipeline from configuration text, its compiled code kept in `cache`; `{{misbehaving}}`
/// and `{{privileged}}` are replaced by the components' paths.
fn pipeline(config: &str, cache: &Path) -> Result<Pipeline, String> {
    let text = format!("wasm: {{cacheDir: \"{{{{cache}}}}\"}}\n{config}")
        .replace(
            "{{misbehaving}}",
            &component("test/misbehaving-policy.wasm")
                .display()
                .to_string(),
        )
        .replace(
            "{{privileged}}",
            &component("policies/privileged.wasm").display().to_string(),
        )
        .replace("{{cache}}", &cache.display().to_string());
    let config = Config::parse(&text, "test.yaml", Path::new("/")).map_err(|e| e.to_string())?;
    Pipeline::load(&config, Arc::new(Metrics::new())).map_err(|e| e.to_string())
}

/// One misbehaving policy entry.
fn misbehaving(name: &str, behavior: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    wasm: {{file: \"{{{{misbehaving}}}}\"{extra}}}\n    settings: {{behavior: {behavior}}}\n"
    )
}

fn wasm_pod_review(privileged: bool) -> Json {
    sample_review_of(
        "w",
        privileged,
        Some("wasmtime"),
        "ghcr.io/acme/app@sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
    )["request"]
        .clone()
}

fn review(pipeline: &Pipeline) -> Verdict {
    pipeline.review(wasm_pod_review(false))
}

#[test]
fn every_bound_stops_its_policy_and_names_it() {
    let cache = tempfile::tempdir().unwrap();
    let config = format!(
        "policies:\n{}{}{}{}{}{}{}",
        misbehaving("spins", "loop", "") + "    timeout: 150ms\n",
        misbehaving("spins-on-fuel", "loop", ", fuel: 5000000") + "    timeout: 20s\n",
        misbehaving("hoards", "memory-bomb", ", memoryLimit: 16Mi"),
        misbehaving("aborts", "trap", ""),
        misbehaving("mumbles", "invalid-verdict", ""),
        misbehaving("mutates", "patch", ""),
        misbehaving("spins-open", "loop", "") + "    timeout: 150ms\n    failurePolicy: Ignore\n",
    );
    let pipeline = pipeline(&config, cache.path()).unwrap();
    let started = Instant::now();
    let verdict = review(&pipeline);
    let elapsed = started.elapsed();
    assert!(!verdict.allowed);
    let message = verdict.message.unwrap();
    for expected in [
        "[spins] policy error: evaluation exceeded its time limit of 150ms",
        "[spins-on-fuel] policy error: ran out of fuel (5000000 units)",
        "[hoards] policy error: exceeded its memory limit of 16 MiB",
        "[aborts] policy error: evaluation failed: trapped: ",
        "[mumbles] policy error: invalid result: a denial without a message",
        "[mutates] policy error: invalid result: the verdict carries a patch",
    ] {
        assert!(message.contains(expected), "{expected} not in: {message}");
    }
    // Fail-open turns the same failure into a warning.
    assert_eq!(
        verdict.warnings,
        ["[spins-open] policy error: evaluation exceeded its time limit of 150ms (ignored)"]
    );
    // Every bound fired well before the 20 s timeout the fuel policy was given.
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[test]
fn each_evaluation_starts_from_a_fresh_instance() {
    let cache = tempfile::tempdir().unwrap();
    let config = format!("policies:\n{}", misbehaving("counter", "count", ""));
    let pipeline = pipeline(&config, cache.path()).unwrap();
    for _ in 0..3 {
        let verdict = review(&pipeline);
        assert!(verdict.allowed);
        assert_eq!(verdict.warnings, ["[counter] call 1"]);
    }
}

#[test]
fn settings_are_validated_at_load_within_bounds() {
    let cache = tempfile::tempdir().unwrap();
    let refused = format!("policies:\n{}", misbehaving("picky", "explode", ""));
    let err = pipeline(&refused, cache.path()).err().unwrap();
    assert!(
        err.starts_with(
            "policy picky: settings refused by the policy: unknown behavior \"explode\""
        ),
        "{err}"
    );
    let looping = format!(
        "policies:\n{}    timeout: 100ms\n",
        misbehaving("stuck", "settings-loop", "")
    );
    let err = pipeline(&looping, cache.path()).err().unwrap();
    assert!(
        err.contains("policy stuck: validate-settings failed: evaluation exceeded its time limit"),
        "{err}"
    );
    let missing = "policies:\n  - name: p\n    wasm: {file: \"{{misbehaving}}\"}\n";
    let err = pipeline(missing, cache.path()).err().unwrap();
    assert!(
        err.contains("invalid settings: missing field `behavior`"),
        "{err}"
    );
}

#[test]
fn what_is_not_a_policy_component_is_refused_at_load() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A proxy-wasm filter: a core module.
    let core = paths::wasm("test/passthrough");
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x0d\0\x01\0garbage").unwrap();
    for (file, expected) in [
        (core.as_path(), "a core Wasm module, not a component"),
        (garbage.as_path(), "not a valid WebAssembly component"),
        (
            Path::new("/nonexistent.wasm"),
            "/nonexistent.wasm: No such file",
        ),
    ] {
        let config = format!(
            "policies:\n  - name: odd\n    wasm: {{file: {}}}\n",
            file.display()
        );
        let err = pipeline(&config, cache.path()).err().unwrap();
        assert!(err.starts_with("policy odd: "), "{err}");
        assert!(err.contains(expected), "{expected} not in {err}");
    }
}

#[test]
fn the_rego_and_wasm_privileged_policies_agree_through_policy_test() {
    let out = cli::meshgate_ok(&[
        "policy",
        "test",
        &paths::repo_root()
            .join("policies/wasm")
            .display()
            .to_string(),
    ]);
    assert!(out.contains(" passed, 0 failed"), "{out}");
    // Every case of each Rego starter's file passed against its Wasm variant, by name, so a
    // case added on the Rego side is held to the Wasm one too.
    for policy in ["privileged", "allowed-registries"] {
        let file = paths::repo_root().join(format!("policies/rego/{policy}/cases.yaml"));
        let cases: Json = serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let names: Vec<&str> = cases["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert!(names.len() >= 10, "{policy}: {names:?}");
        for name in names {
            let line = format!("policies/wasm/{policy}/cases.yaml: {name} (");
            assert!(
                out.lines()
                    .any(|l| l.starts_with("PASS ") && l.contains(&line)),
                "{line} did not pass:\n{out}"
            );
        }
    }
}

/// `meshgate_admission_wasm_code_loads_total{policy=...,source=...}` from `/metrics`.
fn code_loads(webhook: &Webhook, policy: &str, source: &str) -> u64 {
    let (_, metrics) = webhook.get("/metrics");
    let line = format!(
        "meshgate_admission_wasm_code_loads_total{{policy=\"{policy}\",source=\"{source}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// A cache MAC key in a directory of its own (never the cache's), readable only by its owner.
fn cache_key() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cache.key");
    std::fs::write(&key, b"0123456789abcdef0123456789abcdef-test-key").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
    (dir, key)
}

/// The webhook's `wasm:` section: compiled code in `cache`, vouched for by `key`.
fn cache_section(cache: &Path, key: &Path) -> String {
    format!(
        "wasm: {{cacheDir: \"{}\", cacheKeyFile: \"{}\"}}\n",
        cache.display(),
        key.display()
    )
}

/// The `.cwasm` files in `dir`.
fn cached_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    files.sort();
    files
}

/// The cache file of `component` among `files`: its name starts with the component's sha256.
fn cache_file_of(files: &[PathBuf], component: &Path) -> PathBuf {
    use sha2::Digest;
    let digest: String = sha2::Sha256::digest(std::fs::read(component).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    files
        .iter()
        .find(|f| {
            f.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&digest)
        })
        .unwrap_or_else(|| panic!("no cache file for {} in {files:?}", component.display()))
        .clone()
}

const REFUSED: &str = "refusing a compiled policy from the cache";

#[test]
fn a_restart_loads_compiled_policies_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let (_key_dir, key) = cache_key();
    let config = format!(
        "{}policies:\n  - name: privileged\n    wasm: {{file: {}}}\n",
        cache_section(cache.path(), &key),
        component("policies/privileged.wasm").display()
    );
    let first = Webhook::start(&config);
    assert_eq!(code_loads(&first, "privileged", "compiled"), 1);
    assert_eq!(code_loads(&first, "privileged", "disk-cache"), 0);
    drop(first);
    let cached: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(cached[0].ends_with(".cwasm"), "{cached:?}");

    let second = Webhook::start(&config);
    assert_eq!(code_loads(&second, "privileged", "compiled"), 0);
    assert_eq!(code_loads(&second, "privileged", "disk-cache"), 1);
    let denied = second.review(&wasm_pod_review(true));
    assert_eq!(denied["allowed"], false);
    drop(second);

    // A damaged cache file is refused and replaced, never loaded.
    let file = cache.path().join(&cached[0]);
    std::fs::write(&file, b"not machine code").unwrap();
    let third = Webhook::start(&config);
    assert_eq!(code_loads(&third, "privileged", "compiled"), 1);
    assert!(third.log().contains(REFUSED), "{}", third.log());
    assert_ne!(std::fs::read(&file).unwrap(), b"not machine code");
}

/// The attack the MAC stops: another policy's compiled code copied over `privileged`'s file.
/// Both components take the settings given, so before the MAC the swapped code loaded and
/// admitted the privileged pod.
#[test]
fn a_compiled_policy_swapped_in_the_cache_is_refused() {
    let cache = tempfile::tempdir().unwrap();
    let (_key_dir, key) = cache_key();
    let privileged = component("policies/privileged.wasm");
    let accepting = component("test/misbehaving-policy.wasm");
    let config = format!(
        "{}policies:\n\
         \x20 - name: privileged\n    wasm: {{file: {}}}\n    settings: {{behavior: accept}}\n\
         \x20 - name: audit\n    wasm: {{file: {}}}\n    settings: {{behavior: accept}}\n",
        cache_section(cache.path(), &key),
        privileged.display(),
        accepting.display(),
    );
    let first = Webhook::start(&config);
    assert_eq!(first.review(&wasm_pod_review(true))["allowed"], false);
    drop(first);
    let files = cached_files(cache.path());
    assert_eq!(files.len(), 2, "{files:?}");
    std::fs::copy(
        cache_file_of(&files, &accepting),
        cache_file_of(&files, &privileged),
    )
    .unwrap();

    let second = Webhook::start(&config);
    let answer = second.review(&wasm_pod_review(true));
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(
        answer["status"]["message"]
            .as_str()
            .unwrap()
            .contains("[privileged] container \"app\""),
        "{answer}"
    );
    let log = second.log();
    assert!(
        log.contains(REFUSED) && log.contains("MAC does not match"),
        "{log}"
    );
    assert_eq!(code_loads(&second, "privileged", "compiled"), 1, "{log}");
    assert_eq!(code_loads(&second, "audit", "disk-cache"), 1, "{log}");
}

/// Starts the webhook with `privileged` cached in `cache` and returns its log and whether the
/// code came from the disk cache.
fn start_with_cache(cache: &Path, key: &Path) -> (String, bool) {
    let config = format!(
        "{}policies:\n  - name: privileged\n    wasm: {{file: {}}}\n",
        cache_section(cache, key),
        component("policies/privileged.wasm").display()
    );
    let webhook = Webhook::start(&config);
    assert_eq!(
        webhook.review(&wasm_pod_review(true))["allowed"],
        false,
        "{}",
        webhook.log()
    );
    let from_disk = code_loads(&webhook, "privileged", "disk-cache") == 1;
    (webhook.log(), from_disk)
}

#[test]
fn cache_directories_others_could_write_are_not_used() {
    use std::os::unix::fs::{PermissionsExt, chown, symlink};
    let (_key_dir, key) = cache_key();
    let root = tempfile::tempdir().unwrap();

    // Writable by the group.
    let shared = root.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o770)).unwrap();
    let (log, _) = start_with_cache(&shared, &key);
    assert!(log.contains("is writable by group or others"), "{log}");
    assert!(cached_files(&shared).is_empty());

    // A symbolic link to a private directory: whoever can change the link chooses the code.
    let private = root.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = root.path().join("link");
    symlink(&private, &link).unwrap();
    let (log, _) = start_with_cache(&link, &key);
    assert!(log.contains("is a symbolic link"), "{log}");
    assert!(cached_files(&private).is_empty());

    // Another user's directory (the tests may run as root, which can make one).
    let theirs = root.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
    if chown(&theirs, Some(65534), Some(65534)).is_ok() {
        let (log, _) = start_with_cache(&theirs, &key);
        assert!(log.contains("is owned by uid 65534"), "{log}");
        assert!(cached_files(&theirs).is_empty());
    }
}

#[test]
fn symbolic_links_in_the_cache_are_not_followed() {
    use std::os::unix::fs::symlink;
    let (_key_dir, key) = cache_key();
    let cache = tempfile::tempdir().unwrap();
    let (_, from_disk) = start_with_cache(cache.path(), &key);
    assert!(!from_disk);
    let files = cached_files(cache.path());
    assert_eq!(files.len(), 1, "{files:?}");
    // The file moved away and linked back: the link is refused, then replaced by a file of
    // its own; its target is left alone.
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("code.cwasm");
    std::fs::rename(&files[0], &target).unwrap();
    symlink(&target, &files[0]).unwrap();
    let before = std::fs::read(&target).unwrap();
    let (log, from_disk) = start_with_cache(cache.path(), &key);
    assert!(!from_disk, "{log}");
    assert!(
        log.contains(REFUSED) && log.contains("symbolic link"),
        "{log}"
    );
    let metadata = std::fs::symlink_metadata(&files[0]).unwrap();
    assert!(metadata.file_type().is_file());
    assert_eq!(std::fs::read(&target).unwrap(), before);
    // Then it loads as usual.
    let (log, from_disk) = start_with_cache(cache.path(), &key);
    assert!(from_disk, "{log}");
}

#[test]
fn without_a_key_nothing_is_kept_on_disk() {
    let cache = tempfile::tempdir().unwrap();
    let config = format!(
        "wasm: {{cacheDir: {}}}\npolicies:\n  - name: privileged\n    wasm: {{file: {}}}\n",
        cache.path().display(),
        component("policies/privileged.wasm").display()
    );
    for _ in 0..2 {
        let webhook = Webhook::start(&config);
        assert_eq!(code_loads(&webhook, "privileged", "compiled"), 1);
        assert!(
            webhook.log().contains("wasm.cacheKeyFile is not"),
            "{}",
            webhook.log()
        );
    }
    assert!(cached_files(cache.path()).is_empty());
}

#[test]
fn the_webhook_runs_wasm_policies_and_keeps_serving_while_one_runs_away() {
    let cache = tempfile::tempdir().unwrap();
    let config = format!(
        "wasm: {{cacheDir: {cache}}}\nlimits: {{maxConcurrentReviews: 4}}\npolicies:\n\
         \x20 - name: privileged\n    wasm: {{file: {privileged}}}\n\
         \x20 - name: registries\n    wasm: {{file: {registries}}}\n    settings: {{registries: [ghcr.io/acme/]}}\n\
         \x20 - name: runaway\n    wasm: {{file: {misbehaving}}}\n    settings: {{behavior: loop}}\n    timeout: 2s\n    namespaces: {{include: [slow]}}\n",
        cache = cache.path().display(),
        privileged = component("policies/privileged.wasm").display(),
        registries = component("policies/allowed-registries.wasm").display(),
        misbehaving = component("test/misbehaving-policy.wasm").display(),
    );
    let webhook = Arc::new(Webhook::start(&config));
    let denied = webhook.review(&wasm_pod_review(true));
    assert_eq!(denied["allowed"], false, "{denied}");
    assert_eq!(denied["status"]["code"], 403, "{denied}");
    let message = denied["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("[privileged] container \"app\" (image ghcr.io/acme/app@sha256:"),
        "{message}"
    );
    assert!(message.contains("is privileged"), "{message}");
    let allowed = webhook.review(&wasm_pod_review(false));
    assert_eq!(allowed["allowed"], true, "{allowed}");
    let foreign = sample_review_of("f", false, Some("spin"), "quay.io/x/y:1")["request"].clone();
    let answer = webhook.review(&foreign);
    assert_eq!(answer["allowed"], false);
    assert!(
        answer["status"]["message"]
            .as_str()
            .unwrap()
            .contains("[registries] container \"app\" (image quay.io/x/y:1) is not from an allowed registry (ghcr.io/acme/)"),
        "{answer}"
    );

    // A review in namespace `slow` runs the runaway policy until its 2 s deadline; reviews
    // elsewhere are answered meanwhile.
    let mut slow = wasm_pod_review(false);
    slow["namespace"] = json!("slow");
    slow["object"]["metadata"]["namespace"] = json!("slow");
    let slow_webhook = webhook.clone();
    let slow_review = std::thread::spawn(move || {
        let answer = slow_webhook.review(&slow);
        (answer, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(300));
    let (health, _) = webhook.get("/healthz");
    assert_eq!(health, 200);
    let meanwhile = webhook.review(&wasm_pod_review(false));
    let answered_meanwhile = Instant::now();
    assert_eq!(meanwhile["allowed"], true, "{meanwhile}");
    let (slow_answer, slow_done) = slow_review.join().unwrap();
    assert!(
        answered_meanwhile < slow_done,
        "the other review waited for the runaway one"
    );
    assert_eq!(slow_answer["allowed"], false, "{slow_answer}");
    assert!(
        slow_answer["status"]["message"]
            .as_str()
            .unwrap()
            .contains("[runaway] policy error: evaluation exceeded its time limit of 2s"),
        "{slow_answer}"
    );
    let (_, metrics) = webhook.get("/metrics");
    assert!(
        metrics.contains(
            "meshgate_admission_wasm_instantiation_duration_seconds_count{policy=\"privileged\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "meshgate_admission_policy_evaluations_total{policy=\"runaway\",outcome=\"error\"} 1"
        ),
        "{metrics}"
    );
}

#[test]
fn bad_settings_fail_the_webhooks_startup_with_the_policys_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "wasm: {{cacheDir: {}/cache}}\npolicies:\n  - name: registries\n    wasm: {{file: {}}}\n    settings: {{registries: []}}\n",
            dir.path().display(),
            component("policies/allowed-registries.wasm").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(meshgate_binary())
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "policy registries: settings refused by the policy: registries must list at least one prefix"
        ),
        "{stderr}"
    );
}

#[test]
fn policy_images_load_from_a_registry_only_when_signed() {
    let registry = Registry::start();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("policies");
    cli::key_pair(&key, "ecdsa-p256");
    let signed = format!("{}/policies/privileged:0.1.0", registry.host());
    let unsigned = format!("{}/policies/unsigned:0.1.0", registry.host());
    let wasm = component("policies/privileged.wasm");
    cli::push(&wasm, &signed);
    cli::sign(&key.with_extension("key"), &signed, false);
    cli::push(&wasm, &unsigned);
    let cache = tempfile::tempdir().unwrap();
    let config = |image: &str| {
        format!(
            "imageVerification:\n  keys: [{{name: policies, file: {key}}}]\n  trust:\n\
             \x20   - {{name: policies, images: [\"{host}/policies/**\"], keys: [policies]}}\n\
             \x20 registries: [{{host: \"{host}\", insecure: true}}]\n\
             policies:\n  - name: privileged\n    wasm: {{image: \"{image}\"}}\n",
            key = key.with_extension("pub").display(),
            host = registry.host(),
        )
    };
    let loaded = pipeline(&config(&signed), cache.path()).unwrap();
    assert!(!loaded.review(wasm_pod_review(true)).allowed);
    assert!(review(&loaded).allowed);
    let err = pipeline(&config(&unsigned), cache.path()).err().unwrap();
    assert!(
        err.starts_with(&format!("policy privileged: {unsigned}: ")),
        "{err}"
    );
    assert!(err.contains("not signed"), "{err}");
}
